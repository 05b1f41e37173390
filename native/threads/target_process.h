// Checks on the process a thread tracker is asked to follow, before anything is loaded, and what
// /proc says of its threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "sys_file.h"
#include "tracker.h"

namespace jouletrace {

// How /proc numbers processes, against this process's own pid namespace. /proc is a mount, not
// a view of the reader's namespace: under `unshare -p -f` without --mount-proc, or in a sandbox
// that bind-mounts the host's, it is another namespace's, and getpid()'s number there names
// another process (1 or 2: init, kthreadd), whose threads a tracker would read as this one's.
struct ProcPidView {
  // /proc numbers processes in another pid namespace than this process's.
  bool foreign = false;
  // This process in /proc's numbering (what /proc/self names): getpid() where not foreign; 0 where
  // /proc is another namespace's that gives this process no number (a sibling's or a child's).
  int self = 0;
};
// Asks /proc/self/status (its NSpid, Linux 4.1, lists the process's ids from /proc's namespace
// down to its own) or, without NSpid, compares /proc/self with getpid(). Not foreign where /proc
// cannot be read: whatever reads it next reports that.
ProcPidView procPidView();

// A task's id in its own pid namespace (what gettid() returns to it), from NSpid in <taskDir>/status,
// taskDir being the directory /proc names it by; -errno, or -ENODATA without NSpid.
long ownNamespaceId(const std::string& taskDir);

// Why the procfs tracker cannot follow `pid` (0: this process) where /proc is another pid
// namespace's (view.foreign), with the remedy: a pid is this namespace's number, which /proc does
// not use, and this process may have none there. Empty where it can: this process, by the number
// /proc gives it.
std::string foreignProcRefusal(const ProcPidView& view, int pid);

// A live thread's name as /proc has it now (tgid 0: this process), for a tracker whose names may
// be the ones threads had when first seen (ThreadTracker::namesFresh()). Empty when it cannot be
// read: the thread is gone, or /proc is another pid namespace's (procPidView()), which does not
// number threads as tgid and tid do. Three system calls on the calling thread, the JS one where
// called from threads().
std::string procThreadComm(uint32_t tgid, uint32_t tid);

// options.pid must name a process (a thread group leader), not one of its threads: the trackers
// list a process's threads, and the eBPF program matches thread group ids. Reads
// <procRoot>/<pid>/status; 0 when it is a process or cannot tell, else -EINVAL with err set.
int checkTargetIsProcess(const std::string& procRoot, int pid, TrackerError* err);

// Whether <procRoot>/<pid>/task can be listed: the procfs tracker reads it at every scan, and the
// eBPF tracker seeds the process's threads from it. 0, or -errno with err set, naming procfs's
// hidepid where it hides the process (EACCES/EPERM, or ENOENT for one that kill() finds: hidepid=2
// hides its directory too) rather than a missing process. fdNote follows the advice for EMFILE.
int checkTaskDirReadable(const std::string& procRoot, int pid, const std::string& fdNote, TrackerError* err);

// The eBPF program sees the kernel's pids, those of the initial pid namespace; a process in a
// namespace of its own (a container without the host's pid namespace) knows itself and others by
// other numbers. 0 in the initial namespace (or when it cannot tell), else -EINVAL with err set,
// advising procfsOption (TrackerOptions::procfsOption) where procfs can follow `pid` (0: this
// process), and how to mount a /proc of the namespace's own where it cannot.
int checkInitialPidNamespace(const std::string& procfsOption, int pid, TrackerError* err);

// What /proc/self/ns/user names ("user:[4026532175]") when this process runs in a user namespace
// other than the initial one (a rootless container, `unshare -U`); empty in the initial one, or
// when it cannot tell. Capabilities held there count for nothing where the kernel checks them
// against the initial namespace, as bpf() and perf_event_open() do.
std::string userNamespaceOfItsOwn();

// Whether a tracked process has exited, asked by the sampler thread. A sampler that goes on after
// its process is gone would charge the machine's energy to the baseline and `other` of a process
// that is not there, and, once the pid is reused, the new process's threads to it. A pidfd
// (Linux 5.3) names the process itself, not its pid: it polls readable once every thread of the
// process has exited, zombie or reaped. Without one (older kernels, seccomp filters), the
// process's start time and state in <procRoot>/<pid>/stat say it: gone, a zombie whose threads
// have all exited, or another process under the same pid. Not where /proc is another pid
// namespace's (procPidView()), whose <pid> is another process: there the pidfd alone tells.
class TargetExitWatch {
 public:
  // nullptr with err set when the process is already gone; nullptr with err untouched when the
  // exit cannot be watched (no pidfd, and a stat file that cannot be read: hidepid).
  static std::unique_ptr<TargetExitWatch> open(const std::string& procRoot, int pid, bool forceProc, TrackerError* err);
  bool exited();
  // "pidfd" or "proc": how exited() tells.
  const char* method() const { return pidfd_.valid() ? "pidfd" : "proc"; }

 private:
  TargetExitWatch() = default;
  UniqueFd pidfd_;
  std::string statPath_;
  std::string taskDir_;
  uint64_t startTime_ = 0;
};

}  // namespace jouletrace
