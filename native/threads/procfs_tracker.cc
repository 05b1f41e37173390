// procfs backend: the fallback when eBPF is unavailable. Per-thread on-CPU time from
// task/<tid>/schedstat, per-CPU busy/idle from /proc/stat. Costs a pread per thread per snapshot
// and only sees which CPU a thread last ran on, so package attribution is approximate.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <unordered_map>

#include "errno_name.h"
#include "napi_util.h"
#include "target_process.h"
#include "tracker.h"
#include "sys_file.h"

namespace jouletrace {

namespace {

// Thread discovery reads a directory. The sampler already limits procfs snapshots to one per
// 10 ms, so every snapshot rescans: a thread that lives longer than ~10 ms is never missed
// (a shorter-lived one can be, and its energy then counts as "other" — the eBPF backend sees
// every thread).
constexpr uint64_t kRescanNs = 9'000'000;

// pread at offset 0: procfs regenerates the text on each read of a kept-open fd.
ssize_t readAt0(const UniqueFd& fd, char* buf, size_t cap) {
  if (fd.get() < 0) return -EBADF;
  ssize_t n = pread(fd.get(), buf, cap - 1, 0);
  if (n < 0) return -errno;
  buf[n] = 0;
  return n;
}

struct Thread {
  uint32_t tid = 0;
  uint32_t slot = 0;
  uint64_t generation = 0;
  uint64_t base = 0;  // schedstat at first sight, for threads that predate the tracker
  UniqueFd schedstat;
  UniqueFd stat;
  ThreadTimes times;
  bool seenInScan = true;
  bool gone = false;
};

class ProcfsTracker final : public ThreadTracker {
 public:
  const char* backend() const override { return "procfs"; }
  int open(const TrackerOptions& opts, TrackerError* err);
  int snapshot(TrackerSnapshot& snap) override;
  void stats(TrackerStats& out) override;

 private:
  void rescan(bool initial);
  void addThread(uint32_t tid, bool initial);
  bool readThread(Thread& t);
  void readCpus(std::vector<CpuTimes>& cpus);
  std::string taskDir() const { return root_ + "/" + std::to_string(pid_) + "/task"; }

  std::string root_;
  int pid_ = 0;
  uint32_t maxThreads_ = 0;
  int ncpu_ = 0;
  uint64_t nsPerTick_ = 10'000'000;
  std::vector<int> cpuPkg_;
  UniqueFd procStat_;
  std::vector<char> statBuf_;
  std::unordered_map<uint32_t, Thread> threads_;
  std::vector<uint32_t> freeSlots_;
  uint32_t nextSlot_ = 0;
  uint64_t nextGeneration_ = 1;
  uint64_t lastScanNs_ = 0;
  // Read by stats() on the JS thread.
  std::atomic<uint64_t> snapshots_{0};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> threadCount_{0};
  std::vector<CpuTimes> lastCpu_;
  std::vector<uint32_t> doneTids_;
};

int ProcfsTracker::open(const TrackerOptions& opts, TrackerError* err) {
  root_ = opts.procRoot.empty() ? "/proc" : opts.procRoot;
  pid_ = opts.pid > 0 ? opts.pid : int(getpid());
  maxThreads_ = opts.maxThreads ? opts.maxThreads : 1;
  long hz = sysconf(_SC_CLK_TCK);
  if (hz > 0) nsPerTick_ = 1'000'000'000ull / uint64_t(hz);

  DIR* d = opendir(taskDir().c_str());
  if (!d) {
    int e = errno;
    if (err) {
      err->code = e == ENOENT ? "ESRCH" : errnoName(e);
      err->message = "jouletrace: cannot read " + taskDir() + " (" + strerror(e) +
                     "): no such process, or procfs is not mounted there";
    }
    return -e;
  }
  closedir(d);
  if (int rc = checkTargetIsProcess(root_, pid_, err)) return rc;

  std::string statPath = root_ + "/stat";
  procStat_ = UniqueFd(::open(statPath.c_str(), O_RDONLY | O_CLOEXEC));
  std::string text;
  if (procStat_.get() < 0 || readSmallFile(statPath, &text) != 0) {
    int e = errno ? errno : EIO;
    if (err) {
      err->code = errnoName(e);
      err->message = "jouletrace: cannot read " + statPath + " (" + strerror(e) + ")";
    }
    return -e;
  }
  // One "cpuN" line per online CPU; N indexes the snapshot's cpus array.
  for (size_t pos = 0; pos < text.size();) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    if (text.compare(pos, 3, "cpu") == 0 && pos + 3 < text.size() && isdigit(uint8_t(text[pos + 3]))) {
      ncpu_ = std::max(ncpu_, int(strtol(text.c_str() + pos + 3, nullptr, 10)) + 1);
    }
    pos = eol + 1;
  }
  cpuPkg_ = cpuPackageMap(opts.cpuPackage, "/sys/devices/system/cpu", ncpu_);
  lastCpu_.assign(size_t(ncpu_), CpuTimes());
  rescan(true);
  lastScanNs_ = monotonicNs();
  return 0;
}

void ProcfsTracker::addThread(uint32_t tid, bool initial) {
  uint32_t slot;
  if (!freeSlots_.empty()) {
    slot = freeSlots_.back();
    freeSlots_.pop_back();
  } else if (nextSlot_ < maxThreads_) {
    slot = nextSlot_++;
  } else {
    dropped_++;
    return;
  }
  std::string dir = taskDir() + "/" + std::to_string(tid) + "/";
  Thread t;
  t.tid = tid;
  t.slot = slot;
  t.generation = nextGeneration_++;
  t.schedstat = UniqueFd(::open((dir + "schedstat").c_str(), O_RDONLY | O_CLOEXEC));
  t.stat = UniqueFd(::open((dir + "stat").c_str(), O_RDONLY | O_CLOEXEC));
  t.times.tid = tid;
  t.times.tgid = uint32_t(pid_);
  t.times.slot = slot;
  t.times.generation = t.generation;
  Thread& in = threads_.emplace(tid, std::move(t)).first->second;
  threadCount_.store(threads_.size(), std::memory_order_relaxed);
  // Threads that already existed have run before tracking began; those born later have not.
  if (initial && readThread(in)) {
    in.base = in.times.onCpuNs;
    in.times.onCpuNs = 0;
    std::fill(std::begin(in.times.pkgNs), std::end(in.times.pkgNs), 0);
  }
}

void ProcfsTracker::rescan(bool initial) {
  DIR* d = opendir(taskDir().c_str());
  if (!d) {
    // The whole process is gone: every thread has exited.
    for (auto& kv : threads_) kv.second.gone = true;
    return;
  }
  for (auto& kv : threads_) kv.second.seenInScan = false;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    uint32_t tid = uint32_t(strtoul(e->d_name, nullptr, 10));
    auto it = threads_.find(tid);
    if (it != threads_.end()) {
      it->second.seenInScan = true;
      continue;
    }
    addThread(tid, initial);
  }
  closedir(d);
  for (auto& kv : threads_) {
    if (!kv.second.seenInScan) kv.second.gone = true;
    std::string comm;
    if (!kv.second.gone &&
        readSmallFile(taskDir() + "/" + std::to_string(kv.first) + "/comm", &comm) == 0) {
      while (!comm.empty() && comm.back() == '\n') comm.pop_back();
      copyComm(kv.second.times.comm, comm.data(), comm.size());
    }
  }
}

// Updates t.times from schedstat and stat; false once the thread is gone (ESRCH). Without
// schedstat (a kernel built without CONFIG_SCHED_INFO), on-CPU time is stat's utime + stime, in
// clock ticks; without descriptors for either (the process ran out of them), stat is read by
// path at each call. A thread is gone only when its stat cannot be read at all.
bool ProcfsTracker::readThread(Thread& t) {
  char buf[1024];
  ssize_t statLen = readAt0(t.stat, buf, sizeof buf);
  std::string byPath;
  if (statLen <= 0 && !t.stat.valid()) {
    if (readSmallFile(taskDir() + "/" + std::to_string(t.tid) + "/stat", &byPath) != 0) return false;
    statLen = ssize_t(std::min(byPath.size(), sizeof buf - 1));
    memcpy(buf, byPath.data(), size_t(statLen));
    buf[statLen] = '\0';
  }
  if (statLen <= 0 && !t.schedstat.valid()) return false;
  int cpu = -1;
  uint64_t ticksNs = 0;
  if (statLen > 0) {
    if (const char* processor = procStatField(buf, 39)) cpu = int(strtol(processor, nullptr, 10));
    if (!t.schedstat.valid()) {
      const char* utime = procStatField(buf, 14);
      const char* stime = procStatField(buf, 15);
      if (utime && stime) ticksNs = (strtoull(utime, nullptr, 10) + strtoull(stime, nullptr, 10)) * nsPerTick_;
    }
  }
  uint64_t total;
  if (t.schedstat.valid()) {
    if (readAt0(t.schedstat, buf, sizeof buf) <= 0) return false;
    total = strtoull(buf, nullptr, 10);
  } else {
    total = ticksNs;
  }
  uint64_t onCpu = total > t.base ? total - t.base : 0;

  if (onCpu > t.times.onCpuNs) {
    // Only the CPU it last ran on is known: the whole delta goes to that CPU's package.
    int pkg = cpu >= 0 && cpu < ncpu_ ? cpuPkg_[size_t(cpu)] : 0;
    t.times.pkgNs[pkg] += onCpu - t.times.onCpuNs;
    t.times.onCpuNs = onCpu;
  }
  return true;
}

void ProcfsTracker::readCpus(std::vector<CpuTimes>& cpus) {
  // The cpuN lines come first, under 256 bytes each (eleven 20-digit counters at most): a buffer
  // sized by the CPU count holds all of them (a fixed 16 KiB cut them off past ~250 CPUs).
  statBuf_.resize(size_t(ncpu_ + 2) * 256);
  char* buf = statBuf_.data();
  ssize_t n = readAt0(procStat_, buf, statBuf_.size());
  if (n > 0) {
    for (char* line = buf; line && *line;) {
      char* eol = strchr(line, '\n');
      if (eol) *eol = 0;
      if (strncmp(line, "cpu", 3) == 0 && isdigit(uint8_t(line[3]))) {
        char* p = line + 3;
        long cpu = strtol(p, &p, 10);
        uint64_t f[8] = {0};  // user nice system idle iowait irq softirq steal
        for (int i = 0; i < 8; i++) f[i] = strtoull(p, &p, 10);
        if (cpu >= 0 && cpu < ncpu_) {
          CpuTimes& last = lastCpu_[size_t(cpu)];
          // Steal (the hypervisor running another guest) is not busy time: the kernel keeps it
          // out of thread times, so as busy it sent that share of each interval to "other", and
          // the model source's estimate, which counts it as idle, did not cover it either.
          uint64_t busy = (f[0] + f[1] + f[2] + f[5] + f[6]) * nsPerTick_;
          uint64_t idle = (f[3] + f[4] + f[7]) * nsPerTick_;
          // iowait is known to go backwards on some kernels: never report less than before.
          last.busyNs = std::max(last.busyNs, busy);
          last.idleNs = std::max(last.idleNs, idle);
        }
      }
      line = eol ? eol + 1 : nullptr;
    }
  }
  cpus.assign(lastCpu_.begin(), lastCpu_.end());
}

int ProcfsTracker::snapshot(TrackerSnapshot& snap) {
  const uint64_t now = monotonicNs();
  snap.timeNs = now;
  snap.threads.clear();
  snapshots_++;
  readCpus(snap.cpus);
  if (now - lastScanNs_ >= kRescanNs) {
    rescan(false);
    lastScanNs_ = now;
  }
  doneTids_.clear();
  for (auto& kv : threads_) {
    Thread& t = kv.second;
    if (!t.gone && !readThread(t)) t.gone = true;
    t.times.exited = t.gone;
    snap.threads.push_back(t.times);
    if (t.gone) doneTids_.push_back(kv.first);
  }
  for (uint32_t tid : doneTids_) {
    auto it = threads_.find(tid);
    freeSlots_.push_back(it->second.slot);
    threads_.erase(it);
    threadCount_.store(threads_.size(), std::memory_order_relaxed);
  }
  return 0;
}

void ProcfsTracker::stats(TrackerStats& out) {
  out = TrackerStats();
  out.backend = "procfs";
  out.attached = procStat_.get() >= 0;
  out.events = snapshots_;
  out.slotsUsed = threadCount_.load(std::memory_order_relaxed);
  out.slotsMax = maxThreads_;
  out.droppedThreads = dropped_;
  out.note = "procfs backend: events counts snapshots; per-thread package split follows the last CPU seen";
}

}  // namespace

std::unique_ptr<ThreadTracker> openProcfsTracker(const TrackerOptions& opts, TrackerError* err) {
  std::unique_ptr<ProcfsTracker> t(new ProcfsTracker());
  if (t->open(opts, err) != 0) return nullptr;
  return t;
}

}  // namespace jouletrace
