// Helpers shared by the two tracker backends.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "tracker.h"

namespace jouletrace {

// Reads a small file whole; false when it cannot be opened or read.
inline bool readSmallFile(const std::string& path, std::string* out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[4096];
  out->clear();
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      ::close(fd);
      return false;
    }
    if (n == 0) break;
    out->append(buf, size_t(n));
  }
  ::close(fd);
  return true;
}

// cpu → package index for ncpu CPUs: the caller's table when given, else sysfs topology with
// package ids renumbered densely in order of appearance (ids need not start at 0 or be dense).
// Indexes past kMaxPackages - 1 fold into the last one rather than being dropped.
inline std::vector<int> resolveCpuPackages(const std::vector<int>& given, int ncpu) {
  std::vector<int> out(size_t(ncpu > 0 ? ncpu : 0), 0);
  if (!given.empty()) {
    for (int i = 0; i < ncpu && size_t(i) < given.size(); i++) {
      int p = given[size_t(i)];
      out[size_t(i)] = p < 0 ? 0 : (p >= kMaxPackages ? kMaxPackages - 1 : p);
    }
    return out;
  }
  std::vector<long> seen;
  for (int i = 0; i < ncpu; i++) {
    std::string s;
    char path[96];
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", i);
    if (!readSmallFile(path, &s)) continue;
    long id = strtol(s.c_str(), nullptr, 10);
    size_t k = 0;
    while (k < seen.size() && seen[k] != id) k++;
    if (k == seen.size()) seen.push_back(id);
    out[size_t(i)] = int(k) >= kMaxPackages ? kMaxPackages - 1 : int(k);
  }
  return out;
}

inline void copyComm(char (&dst)[kCommLen], const char* src, size_t n) {
  if (n >= kCommLen) n = kCommLen - 1;
  memcpy(dst, src, n);
  memset(dst + n, 0, kCommLen - n);
}

}  // namespace jouletrace
