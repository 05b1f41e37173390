// Checks on the process a thread tracker is asked to follow, before anything is loaded.
#pragma once

#include <string>

#include "tracker.h"

namespace jouletrace {

// options.pid must name a process (a thread group leader), not one of its threads: the trackers
// list a process's threads, and the eBPF program matches thread group ids. Reads
// <procRoot>/<pid>/status; 0 when it is a process or cannot tell, else -EINVAL with err set.
int checkTargetIsProcess(const std::string& procRoot, int pid, TrackerError* err);

// The eBPF program sees the kernel's pids, those of the initial pid namespace; a process in a
// namespace of its own (a container without the host's pid namespace) knows itself and others by
// other numbers. 0 in the initial namespace (or when it cannot tell), else -EINVAL with err set.
int checkInitialPidNamespace(TrackerError* err);

}  // namespace jouletrace
