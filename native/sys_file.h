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

 private:
  int fd_ = -1;
};

// Reads a whole small (sysfs/procfs) file. Returns 0 or -errno.
int readSmallFile(const std::string& path, std::string* out);

// Reads a file holding one integer (decimal, or hex with 0x). Returns 0 or -errno (-EINVAL if
// the content is not a number).
int readIntegerFile(const std::string& path, long long* out);

}  // namespace jouletrace
