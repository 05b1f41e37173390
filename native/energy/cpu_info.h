// CPU identity and topology, plus the small file helpers every source shares. Everything here
// runs at open time on the JS thread; nothing is used from read().
#pragma once

#include <unistd.h>

#include <cstdint>
#include <string>

#include "errno_name.h"
#include <vector>

#include "energy/source.h"

namespace jouletrace {

// Owns one file descriptor; sources hold these so an early return during open never leaks.
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

struct CpuTopo {
  int cpu = 0;
  int package = 0;  // physical_package_id
  int core = 0;     // core_id (unique within a package only)
};

// Reads a whole small (sysfs/procfs) file. Returns 0 or -errno.
int readSmallFile(const std::string& path, std::string* out);

// Reads a file holding one integer (decimal, or hex with 0x). Returns 0 or -errno (-EINVAL if
// the content is not a number).
int readIntegerFile(const std::string& path, long long* out);

// Parses the kernel's CPU list format ("0-3,8,10-11"). Returns false on malformed input.
bool parseCpuList(const std::string& text, std::vector<int>* cpus);

// Online CPUs with their package and core ids, sorted by CPU number. A CPU without topology
// files (some containers) is put in package 0 with core id = its CPU number.
bool readTopology(const std::string& sysfsCpuRoot, std::vector<CpuTopo>* out, SourceError* err);

// Replaces the single %d in a path template (validated in TypeScript) with n; never handed to
// printf, so a stray conversion in user input cannot read the stack.
std::string expandCpuPath(const std::string& tmpl, int n);

}  // namespace jouletrace
