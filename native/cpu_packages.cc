#include "cpu_packages.h"

#include "sys_file.h"

namespace jouletrace {

std::vector<int> cpuPackageMap(const std::vector<int>& given, const std::string& sysfsCpuRoot, int ncpu) {
  std::vector<int> out(size_t(ncpu > 0 ? ncpu : 0), 0);
  for (int c = 0; c < ncpu; c++) {
    long long id = 0;
    if (!given.empty()) {
      if (size_t(c) >= given.size()) break;
      id = given[size_t(c)];
    } else if (readIntegerFile(sysfsCpuRoot + "/cpu" + std::to_string(c) + "/topology/physical_package_id", &id) != 0) {
      continue;
    }
    out[size_t(c)] = id < 0 ? 0 : id >= kMaxPackages ? kMaxPackages - 1 : int(id);
  }
  return out;
}

}  // namespace jouletrace
