#include "cpu_packages.h"

#include <dirent.h>

#include <algorithm>
#include <cstdlib>
#include <map>

#include "energy/cpu_info.h"
#include "sys_file.h"

namespace jouletrace {
namespace {

// The kernel's largest NR_CPUS: an emulated root's "0-20000000" would have the sampler read a
// directory per CPU up to it.
constexpr int kMaxCpuIds = 8192;

// The NUMA node of a present CPU, online or not, from its cpuN/nodeX link (made when the CPU is
// registered, removed only when it is hot-removed; its topology/ goes when it goes offline); -1
// where there is none (not present, or a kernel without NUMA).
int nodeOf(const std::string& sysfsCpuRoot, int cpu) {
  DIR* d = ::opendir((sysfsCpuRoot + "/cpu" + std::to_string(cpu)).c_str());
  if (!d) return -1;
  int node = -1;
  while (dirent* e = ::readdir(d)) {
    const char* n = e->d_name;
    if (n[0] != 'n' || n[1] != 'o' || n[2] != 'd' || n[3] != 'e' || n[4] < '0' || n[4] > '9') continue;
    char* end = nullptr;
    long v = std::strtol(n + 4, &end, 10);
    if (*end == '\0' && v >= 0 && v < 1 << 20) {
      node = int(v);
      break;
    }
  }
  ::closedir(d);
  return node;
}

int foldPackage(long long id) { return id < 0 ? 0 : id >= kMaxPackages ? kMaxPackages - 1 : int(id); }

// The CPU numbers of a sysfs CPU list file (possible, present); false where it cannot be read or
// lists none.
bool readCpuListFile(const std::string& path, std::vector<int>* cpus) {
  std::string text;
  return readSmallFile(path, &text) == 0 && parseCpuList(text, cpus) && !cpus->empty();
}

}  // namespace

int possibleCpuIds(const std::string& sysfsCpuRoot) {
  std::vector<int> cpus;
  if (!readCpuListFile(sysfsCpuRoot + "/possible", &cpus)) return 0;
  return std::min(cpus.back() + 1, kMaxCpuIds);
}

std::vector<bool> presentCpus(const std::string& sysfsCpuRoot, size_t n) {
  std::vector<int> cpus;
  if (!readCpuListFile(sysfsCpuRoot + "/present", &cpus)) return std::vector<bool>(n, true);
  std::vector<bool> out(n, false);
  for (int c : cpus) {
    if (c >= 0 && size_t(c) < n) out[size_t(c)] = true;
  }
  return out;
}

std::vector<int> cpuPackageMap(const std::vector<int>& given, const std::string& sysfsCpuRoot, int ncpu,
                               std::vector<int>* unknown) {
  if (unknown) unknown->clear();
  if (!given.empty()) {
    std::vector<int> out(size_t(ncpu > 0 ? ncpu : 0), 0);
    for (size_t c = 0; c < out.size() && c < given.size(); c++) out[c] = foldPackage(given[c]);
    return out;
  }
  const int n = std::max(ncpu, possibleCpuIds(sysfsCpuRoot));
  std::vector<int> out(size_t(n > 0 ? n : 0), 0);
  std::vector<bool> known(out.size(), false);
  bool anyUnknown = false;
  for (int c = 0; c < n; c++) {
    long long id = 0;
    if (readIntegerFile(sysfsCpuRoot + "/cpu" + std::to_string(c) + "/topology/physical_package_id", &id) == 0) {
      out[size_t(c)] = foldPackage(id);
      known[size_t(c)] = true;
    } else {
      anyUnknown = true;
    }
  }
  if (!anyUnknown) return out;
  // A node lies within one package on every machine we know (sub-NUMA clustering splits a
  // package into several); one that spans packages (AMD's NPS0, numa=off) tells nothing.
  constexpr int kMixed = -1;
  std::map<int, int> packageOfNode;
  for (int c = 0; c < n; c++) {
    if (!known[size_t(c)]) continue;
    const int node = nodeOf(sysfsCpuRoot, c);
    if (node < 0) continue;
    auto it = packageOfNode.emplace(node, out[size_t(c)]).first;
    if (it->second != out[size_t(c)]) it->second = kMixed;
  }
  for (int c = 0; c < n; c++) {
    if (known[size_t(c)]) continue;
    auto it = packageOfNode.find(nodeOf(sysfsCpuRoot, c));
    if (it != packageOfNode.end() && it->second != kMixed) {
      out[size_t(c)] = it->second;
    } else if (unknown) {
      unknown->push_back(c);
    }
  }
  return out;
}

}  // namespace jouletrace
