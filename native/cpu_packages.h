// Which package each CPU belongs to, as energy attribution indexes it: the sampler, both thread
// trackers and the energy sources' domains all number packages by sysfs physical_package_id (the
// sources read it themselves, with the rest of the topology: energy/cpu_info.h).
#pragma once

#include <string>
#include <vector>

namespace jouletrace {

// Packages told apart (bpf/thread_tracker.h's JT_MAX_PACKAGES must match).
constexpr int kMaxPackages = 8;

// cpu → package for CPUs 0..ncpu-1: `given` where not empty (a caller's table, validated in
// TypeScript), else each CPU's topology/physical_package_id under sysfsCpuRoot, 0 where it
// cannot be read (some containers). Ids past kMaxPackages - 1 fold into the last index rather
// than into package 0's figures; attribution folds energy domains' package ids the same way.
std::vector<int> cpuPackageMap(const std::vector<int>& given, const std::string& sysfsCpuRoot, int ncpu);

}  // namespace jouletrace
