#include "sys_file.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <cstdlib>

namespace jouletrace {

namespace {

const char* kindOf(mode_t mode) {
  if (S_ISREG(mode) || S_ISCHR(mode)) return nullptr;
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISBLK(mode)) return "a block device";
  return "a special file";
}

}  // namespace

int openForReading(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd.valid()) return -errno;
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return -errno;
  if (kindOf(st.st_mode) != nullptr) return S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
  return fd.release();
}

const char* notAFile(const std::string& path, int err) {
  struct stat st;
  if (err != EINVAL && err != EISDIR) return nullptr;
  return ::stat(path.c_str(), &st) == 0 ? kindOf(st.st_mode) : nullptr;
}

int readSmallFile(const std::string& path, std::string* out) {
  int rc = openForReading(path);
  if (rc < 0) return rc;
  UniqueFd fd(rc);
  out->clear();
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) break;
    out->append(buf, size_t(n));
    // sysfs attributes are one page at most; bound the loop for anything pointed at by mistake.
    if (out->size() > (1u << 20)) break;
  }
  return 0;
}

int readIntegerFile(const std::string& path, long long* out) {
  std::string s;
  int rc = readSmallFile(path, &s);
  if (rc < 0) return rc;
  const char* p = s.c_str();
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(p, &end, 0);
  if (end == p || errno != 0) return -EINVAL;
  while (*end == ' ' || *end == '\n' || *end == '\t') end++;
  if (*end != '\0') return -EINVAL;
  *out = v;
  return 0;
}

std::string runningBinary() {
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  return n > 0 ? std::string(exe, size_t(n)) : "\"$(readlink -f \"$(command -v node)\")\"";
}

}  // namespace jouletrace
