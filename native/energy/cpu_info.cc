// CPUID identity and sysfs topology.
#include "energy/cpu_info.h"

// CPUID is x86's: <cpuid.h> is an error on any other target (arm64: Graviton, Ampere), where
// the vendor stays unknown, msr refuses with the reason, and powercap and model work.
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <errno.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "energy/sources_internal.h"
#include "errno_name.h"
#include "sys_file.h"

namespace jouletrace {

const char* vendorName(Vendor v) {
  switch (v) {
    case Vendor::Intel: return "intel";
    case Vendor::Amd: return "amd";
    case Vendor::Hygon: return "hygon";
    default: return "unknown";
  }
}

bool parseCpuList(const std::string& text, std::vector<int>* cpus) {
  cpus->clear();
  size_t i = 0, n = text.size();
  while (i < n) {
    while (i < n && (text[i] == ' ' || text[i] == '\n' || text[i] == ',')) i++;
    if (i >= n) break;
    if (text[i] < '0' || text[i] > '9') return false;
    long a = 0;
    while (i < n && text[i] >= '0' && text[i] <= '9') {
      a = a * 10 + (text[i++] - '0');
      if (a > 1 << 20) return false;
    }
    long b = a;
    if (i < n && text[i] == '-') {
      i++;
      if (i >= n || text[i] < '0' || text[i] > '9') return false;
      b = 0;
      while (i < n && text[i] >= '0' && text[i] <= '9') {
        b = b * 10 + (text[i++] - '0');
        if (b > 1 << 20) return false;
      }
      if (b < a) return false;
    }
    for (long c = a; c <= b; c++) cpus->push_back(int(c));
    if (i < n && text[i] != ',' && text[i] != '\n' && text[i] != ' ') return false;
  }
  std::sort(cpus->begin(), cpus->end());
  cpus->erase(std::unique(cpus->begin(), cpus->end()), cpus->end());
  return true;
}

bool readTopology(const std::string& root, std::vector<CpuTopo>* out, SourceError* err) {
  out->clear();
  std::string online;
  int rc = readSmallFile(root + "/online", &online);
  std::vector<int> cpus;
  if (rc < 0 || !parseCpuList(online, &cpus) || cpus.empty()) {
    err->code = rc < 0 ? errnoName(-rc) : "EINVAL";
    err->message = root + "/online: " + (rc < 0 ? std::strerror(-rc) : "not a CPU list") +
                   " — cannot tell which CPUs are online" +
                   (root == SourceOptions().sysfsCpuRoot ? " (is sysfs mounted?)"
                                                         : "; " + checkOptionRemedy("sysfsCpuRoot", SourceOptions().sysfsCpuRoot));
    return false;
  }
  for (int c : cpus) {
    CpuTopo t;
    t.cpu = c;
    std::string base = root + "/cpu" + std::to_string(c) + "/topology/";
    long long v;
    t.package = readIntegerFile(base + "physical_package_id", &v) == 0 && v >= 0 ? int(v) : 0;
    t.die = readIntegerFile(base + "die_id", &v) == 0 && v >= 0 ? int(v) : 0;
    if (readIntegerFile(base + "core_id", &v) == 0 && v >= 0) {
      t.core = int(v);
    } else {
      // SMT siblings share a core: its first CPU names it (offset past any core_id). Not the
      // CPU's own number, which would take each sibling for a core of its own.
      std::string siblings;
      std::vector<int> list;
      t.core = readSmallFile(base + "thread_siblings_list", &siblings) == 0 && parseCpuList(siblings, &list) && !list.empty()
                   ? (1 << 21) + list.front()
                   : -1;
    }
    out->push_back(t);
  }
  return true;
}

std::string expandCpuPath(const std::string& tmpl, int n) {
  size_t at = tmpl.find("%d");
  if (at == std::string::npos) return tmpl;
  return tmpl.substr(0, at) + std::to_string(n) + tmpl.substr(at + 2);
}

CpuIdentity detectCpu(const SourceOptions& opts) {
  if (opts.hasCpuOverride) return opts.cpuOverride;
  CpuIdentity id;
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return id;
  char vendor[13];
  std::memcpy(vendor, &b, 4);
  std::memcpy(vendor + 4, &d, 4);
  std::memcpy(vendor + 8, &c, 4);
  vendor[12] = '\0';
  if (std::strcmp(vendor, "GenuineIntel") == 0) id.vendor = Vendor::Intel;
  else if (std::strcmp(vendor, "AuthenticAMD") == 0) id.vendor = Vendor::Amd;
  else if (std::strcmp(vendor, "HygonGenuine") == 0) id.vendor = Vendor::Hygon;
  if (__get_cpuid(1, &a, &b, &c, &d)) {
    uint32_t base = (a >> 8) & 0xF, ext = (a >> 20) & 0xFF;
    uint32_t model = (a >> 4) & 0xF, extModel = (a >> 16) & 0xF;
    // The SDM's display rules: extended family only adds for family 0xF, extended model only
    // applies to families 6 and 0xF.
    id.family = base == 0xF ? base + ext : base;
    id.model = (base == 0x6 || base == 0xF) ? (extModel << 4) | model : model;
  }
  unsigned maxExt = __get_cpuid_max(0x80000000, nullptr);
  if (maxExt >= 0x80000004) {
    char brand[49] = {0};
    for (unsigned leaf = 0; leaf < 3; leaf++) {
      unsigned r[4];
      __get_cpuid(0x80000002 + leaf, &r[0], &r[1], &r[2], &r[3]);
      std::memcpy(brand + leaf * 16, r, 16);
    }
    std::string s(brand);
    size_t first = s.find_first_not_of(' ');
    size_t last = s.find_last_not_of(' ');
    id.brand = first == std::string::npos ? "" : s.substr(first, last - first + 1);
  }
#endif
  return id;
}

}  // namespace jouletrace
