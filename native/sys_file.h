// File descriptors and the small sysfs/procfs files every part of the addon reads.
#pragma once

#include <unistd.h>

#include <string>

namespace jouletrace {

// Owns one file descriptor, so that no early return leaks it.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.fd_;
      o.fd_ = -1;
    }
    return *this;
  }
  ~UniqueFd() { reset(); }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Hands the descriptor over to the caller, who closes it.
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

// Opens a file to read counters or text from. O_NONBLOCK, since a FIFO named by mistake would
// otherwise block open() until a writer came, forever; procfs, sysfs and the msr driver ignore
// the flag. Only a regular file (procfs, sysfs, an emulated device) or a character device
// (/dev/cpu/N/msr) is taken: anything else is refused, a directory with -EISDIR as read() would,
// the others with -EINVAL (notAFile() says what it is). Returns the descriptor or -errno.
int openForReading(const std::string& path);

// For an error message: what path is ("a FIFO", "a directory", ...) where err is openForReading's
// refusal of it as neither a regular file nor a character device, else nullptr.
const char* notAFile(const std::string& path, int err);

// Reads a whole small (sysfs/procfs) file, opened with openForReading. Returns 0 or -errno.
int readSmallFile(const std::string& path, std::string* out);

// Reads a file holding one integer (decimal, or hex with 0x). Returns 0 or -errno (-EINVAL if
// the content is not a number).
int readIntegerFile(const std::string& path, long long* out);

// The file this process runs, for a `setcap` remedy: file capabilities go on the binary itself,
// and setcap refuses a symlink (`command -v node` often names one), while a version manager's
// shim is a script, whose file capabilities exec ignores. A shell expression that finds it where
// /proc/self/exe cannot be read.
std::string runningBinary();

}  // namespace jouletrace
