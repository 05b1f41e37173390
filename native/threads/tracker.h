// Per-thread on-CPU time and per-CPU busy time, the inputs of energy attribution. Two
// backends: "bpf" (tp_btf/sched_switch, read from mmapped maps without a system call) and
// "procfs" (/proc/<pid>/task/*/schedstat and /proc/stat, coarser and costlier). Opened on the JS
// thread; snapshot() then runs on the sampler thread only.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cpu_packages.h"

namespace jouletrace {

constexpr size_t kCommLen = 16;

// Field n (1-based, as proc(5) numbers them; n >= 3) of a /proc/<pid>/task/<tid>/stat line, or
// nullptr. Field 2, the name, may hold spaces and parentheses: fields resume after the last ')'.
inline const char* procStatField(const char* stat, int n) {
  const char* p = strrchr(stat, ')');
  for (int field = 2; p && field < n; field++) p = strchr(p + 1, ' ');
  return p ? p + 1 : nullptr;
}

// A thread name of n bytes, cut to fit and NUL-padded.
inline void copyComm(char (&dst)[kCommLen], const char* src, size_t n) {
  if (n >= kCommLen) n = kCommLen - 1;
  memcpy(dst, src, n);
  memset(dst + n, 0, kCommLen - n);
}

struct TrackerOptions {
  std::string backend;  // "bpf" or "procfs"
  int pid = 0;          // process to track (0 = this process)
  bool followChildren = false;  // also track processes forked by tracked ones (bpf only)
  uint32_t maxThreads = 4096;   // thread slots (bpf map size)
  std::vector<int> cpuPackage;  // cpu number → package index (0..kMaxPackages-1); sized to possible CPUs
  std::string procRoot = "/proc";  // procfs backend, for tests
  std::string bpfProgram = "auto";  // "auto", "task-storage" (Linux >= 5.12) or "compat"
  // bpf: the sched_stat_runtime repair of unreported switch-ins. "auto": attached once one has
  // been seen (in this process); "always": from the start; "off": not loaded.
  std::string repairSwitchIns = "auto";
  // The caller's words for choosing procfs, which the eBPF tracker's refusals advise: a Sampler
  // chooses it with its threads option, openThreadTracker() with its backend option.
  std::string procfsOption = "backend 'procfs'";
};

struct CpuTimes {
  uint64_t busyNs = 0;  // cumulative time a non-idle task ran on this CPU
  uint64_t idleNs = 0;  // cumulative time the idle task ran
};

struct ThreadTimes {
  uint32_t tid = 0;
  uint32_t tgid = 0;
  uint32_t slot = 0;  // stable identity while the thread lives (a tid can be reused later)
  uint64_t generation = 0;  // distinguishes reuses of a slot
  uint64_t onCpuNs = 0;     // cumulative on-CPU ns since tracking began, including a running stint
  uint64_t pkgNs[kMaxPackages] = {0};  // onCpuNs split by the package it ran on
  char comm[kCommLen] = {0};
  bool exited = false;  // final figures; this thread will not be reported again
};

struct TrackerSnapshot {
  uint64_t timeNs = 0;  // CLOCK_MONOTONIC when taken
  // The step in which cpus[].busyNs advance: procfs, a clock tick of /proc/stat; 0 where they are
  // exact (eBPF). Attribution smooths a stepped figure (attribution.cc, otherBusy()).
  uint64_t busyQuantumNs = 0;
  std::vector<CpuTimes> cpus;       // indexed by CPU number; capacity reused
  std::vector<ThreadTimes> threads; // tracked threads alive or exited since the last snapshot
};

struct TrackerStats {
  std::string backend;
  std::string program;        // bpf: which build of the program runs ("task-storage", "compat")
  std::string programReason;  // bpf: why that build
  bool attached = false;
  uint64_t events = 0;       // sched_switch events handled (bpf), or snapshots taken (procfs)
  uint64_t runTimeNs = 0;    // from bpf_prog_info when kernel.bpf_stats_enabled=1, else 0
  uint64_t runCount = 0;
  uint64_t slotsUsed = 0;
  uint64_t slotsMax = 0;
  uint64_t droppedThreads = 0;  // threads not tracked because every slot was in use
  uint64_t unreadThreads = 0;   // procfs: threads a read failed for other than their exit (EMFILE)
  uint64_t hashRefs = 0;         // bpf: tracked threads found through the tid hash, not task storage
  uint64_t busyReads = 0;        // bpf: snapshot slot reads that gave up on a writer mid-update
  uint64_t lostSlots = 0;        // bpf: exited threads' slots that bpf() refused to hand back
  uint64_t recursionMisses = 0;  // program runs the kernel skipped (bpf_prog_info.recursion_misses)
  std::string repairHook;        // bpf: "tp_btf/sched_stat_runtime", "standby: ...", or "off: <why>"
  std::string renameHook;        // bpf: "tp_btf/task_rename", or "off: <why>" (names then read from /proc)
  uint64_t missedSwitchIns = 0;  // bpf: switch-ins the kernel did not report (found either way)
  uint64_t repairedSwitchIns = 0;  // bpf: those the repair found while the thread ran
  uint64_t repairRunTimeNs = 0;  // bpf: the repair program's bpf_prog_info, as runTimeNs/runCount
  uint64_t repairRunCount = 0;
  std::string note;             // e.g. why statistics are unavailable
};

struct TrackerError {
  std::string code;     // "EPERM", "ENOENT", "ERR_JOULETRACE_NO_BTF", ...
  std::string message;  // names the missing capability / kernel feature and the remedy
};

class ThreadTracker {
 public:
  virtual ~ThreadTracker() = default;
  virtual const char* backend() const = 0;
  // Fills snap with cumulative figures as of now, reusing its vectors' capacity. A thread that
  // exited since the previous snapshot is reported one last time with exited = true.
  // Returns 0 or -errno.
  virtual int snapshot(TrackerSnapshot& snap) = 0;
  // snapshot() for a run's reference point, which the run's figures are counted from. eBPF: a
  // slot that its writer keeps busy is waited for, within a bound, rather than reported with the
  // last snapshot's figures, which are from before the stop (the time since would count as the
  // run's first interval's), or, for a thread no snapshot has seen yet, left out (its time since
  // tracking began would).
  virtual int referenceSnapshot(TrackerSnapshot& snap) { return snapshot(snap); }
  // May make system calls (bpf_obj_get_info_by_fd, a hash walk). Runs on the JS thread, possibly
  // while the sampler thread is inside snapshot(), so it reads only what is safe beside it: a
  // lock shared with snapshot() would let a stats() call cost the sampler its deadlines.
  virtual void stats(TrackerStats& out) = 0;
  // Test hook: clears a tracked thread's running stint, as if the kernel had not reported its
  // switch-in, so that the repair can be exercised on any machine; asSeeded instead gives it the
  // stint a thread seen runnable while seeding gets (one that then blocked before attach).
  // cpuSinceNs (CLOCK_MONOTONIC; 0: none) moves its CPU's last timed switch back to then, as if
  // only untracked tasks had switched there since: where an unreported switch-in leaves it.
  // Returns 0 or -errno.
  virtual int forgetSwitchIn(uint32_t /*tid*/, bool /*asSeeded*/, uint64_t /*cpuSinceNs*/) { return -ENOTSUP; }
  // Test hook: closes a live thread's slot as the eBPF loader closes a seeded thread it judged
  // ended. Returns 0 or -errno.
  virtual int closeAsEnded(uint32_t /*tid*/) { return -ENOTSUP; }
  // Whether ThreadTimes::comm follows a live thread's renames, as of the snapshot: procfs reads it
  // at each one; the eBPF program where its task_rename hook is attached. Otherwise it may be the
  // name the thread had when first seen, and callers read /proc for a current one. Safe to ask
  // from any thread.
  virtual bool namesFresh() const { return false; }
  // Test hook: detaches the eBPF task_rename hook, as on a kernel without it. Returns 0 or -errno.
  virtual int dropRenameHook() { return -ENOTSUP; }
};

std::unique_ptr<ThreadTracker> openBpfTracker(const TrackerOptions& opts, TrackerError* err);
std::unique_ptr<ThreadTracker> openProcfsTracker(const TrackerOptions& opts, TrackerError* err);

// Readiness of the eBPF backend on this machine, without loading anything that stays loaded.
struct BpfReadiness {
  bool ready = false;
  bool btf = false;            // /sys/kernel/btf/vmlinux present
  bool capBpf = false;         // effective CAP_BPF (or CAP_SYS_ADMIN)
  bool capPerfmon = false;     // effective CAP_PERFMON (or CAP_SYS_ADMIN)
  std::string kernel;          // uname release
  std::string userNs;          // set when the capabilities are held only in this user namespace
  std::string reason;          // why not ready, with the remedy
  // Where all else is ready: the errno with which bpf() refused to create a one-entry array map
  // (a seccomp filter, an LSM), else 0.
  int bpfErrno = 0;
};
BpfReadiness bpfReadiness();

}  // namespace jouletrace
