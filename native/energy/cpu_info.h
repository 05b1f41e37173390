// CPU identity and topology. Everything here runs at open time on the JS thread; nothing is
// used from read().
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "energy/source.h"

namespace jouletrace {

struct CpuTopo {
  int cpu = 0;
  int package = 0;  // physical_package_id
  int die = 0;      // die_id (within the package; 0 where the kernel has none)
  // Which physical core within the package: core_id, else the first CPU of its SMT siblings
  // (thread_siblings_list); -1 where neither can be read.
  int core = 0;
};

// Parses the kernel's CPU list format ("0-3,8,10-11"). Returns false on malformed input.
bool parseCpuList(const std::string& text, std::vector<int>* cpus);

// Online CPUs with their package, die and core ids, sorted by CPU number. A CPU without topology
// files (some containers) is put in package 0, die 0, core -1. Without <sysfsCpuRoot>/online,
// false with *err naming sysfs at the default root, options.sysfsCpuRoot at another.
bool readTopology(const std::string& sysfsCpuRoot, std::vector<CpuTopo>* out, SourceError* err);

// Replaces the single %d in a path template (validated in TypeScript) with n; never handed to
// printf, so a stray conversion in user input cannot read the stack.
std::string expandCpuPath(const std::string& tmpl, int n);

}  // namespace jouletrace
