#include "sys_file.h"

#include <errno.h>
#include <fcntl.h>

#include <cstdlib>

namespace jouletrace {

int readSmallFile(const std::string& path, std::string* out) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return -errno;
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

}  // namespace jouletrace
