// Which package each CPU belongs to, as energy attribution indexes it: the sampler, both thread
// trackers and the energy sources' domains all number packages by sysfs physical_package_id (the
// sources read it themselves, with the rest of the topology: energy/cpu_info.h).
#pragma once

#include <string>
#include <vector>

namespace jouletrace {

// Packages told apart (bpf/thread_tracker.h's JT_MAX_PACKAGES must match).
constexpr int kMaxPackages = 8;

// The highest CPU number in <sysfsCpuRoot>/possible plus one: every number the kernel may give a
// CPU that comes online later. A count of CPUs (_SC_NPROCESSORS_CONF, libbpf's possible CPUs)
// falls short of it where the list has gaps. 0 where the file cannot be read.
int possibleCpuIds(const std::string& sysfsCpuRoot);

// Which of CPUs 0..n-1 exist: those in <sysfsCpuRoot>/present (online or not), every one where
// the file cannot be read. The possible ids cpuPackageMap() covers include a VM's hot-plug slots
// (possible 0-127 for 2 vCPUs), which a count of a package's CPUs must leave out.
std::vector<bool> presentCpus(const std::string& sysfsCpuRoot, size_t n);

// cpu → package for CPUs 0..n-1. With `given` (a caller's table, validated in TypeScript): n is
// ncpu, and CPUs past the table are package 0. Without: n is ncpu or possibleCpuIds(), the
// larger, and each CPU's package is its topology/physical_package_id under sysfsCpuRoot; for a
// CPU without one (offline: the kernel removes topology/ with the CPU; some containers), that of
// the CPUs of its NUMA node, where they are all of one package; else package 0, and the CPU is
// listed in *unknown. Ids past kMaxPackages - 1 fold into the last index rather than into
// package 0's figures; attribution folds energy domains' package ids the same way.
std::vector<int> cpuPackageMap(const std::vector<int>& given, const std::string& sysfsCpuRoot, int ncpu,
                               std::vector<int>* unknown = nullptr);

}  // namespace jouletrace
