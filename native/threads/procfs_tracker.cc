// procfs backend: the fallback when eBPF is unavailable. Per-thread on-CPU time from
// task/<tid>/schedstat, per-CPU busy/idle from /proc/stat. Costs two preads per thread per snapshot
// (two reads by path beyond its descriptor budget, fdBudget()) and only sees which CPU a thread
// last ran on, so package attribution is approximate.
#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
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
// every thread). Except where a rescan costs more than a fifth of that: the listing costs about
// 1 µs a thread, so past a few thousand threads it alone would take a core's fifth, and rescans
// are spaced to kRescanCostShare of their measured cost (threads then need to live that long).
// The cost is the calling thread's CPU time, not wall time: a listing stalled by a frozen cgroup,
// CPU quota throttling or SIGSTOP cost no CPU, and spacing by its wall time hid new threads for
// five times the stall. kRescanMaxNs bounds what CPU time still overstates (stolen time, on a
// kernel without steal accounting): a listing reaches it only past ~200,000 threads.
constexpr uint64_t kRescanNs = 9'000'000;
constexpr uint64_t kRescanCostShare = 5;
constexpr uint64_t kRescanMaxNs = 1'000'000'000;

// Linux's largest configurable NR_CPUS (CONFIG_NR_CPUS on x86-64 and arm64).
constexpr long kMaxCpus = 8192;

uint64_t callingThreadCpuNs() {
  timespec ts;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0;
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// pread at offset 0: procfs regenerates the text on each read of a kept-open fd.
ssize_t readAt0(const UniqueFd& fd, char* buf, size_t cap) {
  if (fd.get() < 0) return -EBADF;
  ssize_t n = pread(fd.get(), buf, cap - 1, 0);
  if (n < 0) return -errno;
  buf[n] = 0;
  return n;
}

// The kernel's clock for a task's start time (stat field 22): CLOCK_BOOTTIME in clock ticks,
// rounded down as the kernel rounds it. (Both are shifted alike in a time namespace.)
uint64_t bootTicks(uint64_t nsPerTick) {
  timespec ts;
  if (clock_gettime(CLOCK_BOOTTIME, &ts) != 0) return 0;
  return (uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec)) / nsPerTick;
}

// Descriptors all procfs trackers of this process keep open for threads' files, held against each
// one's fdBudget(): with a budget each, a `jouletrace serve` of ten --pids took a quarter of what
// the one before had left, over nine tenths of the process's in all.
std::atomic<size_t> gKeptFds{0};

// Descriptors this process has open, or 0 where /proc/self/fd cannot be listed.
size_t openFdCount() {
  DIR* d = opendir("/proc/self/fd");
  if (!d) return 0;
  size_t n = 0;
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n > 0 ? n - 1 : 0;  // the listing's own
}

struct Thread {
  uint32_t tid = 0;  // as /proc numbers it (times.tid: as the process itself does)
  uint32_t slot = 0;
  uint64_t generation = 0;
  // Subtracted from the kernel's figure: its run time at first sight for a thread that predates
  // the tracker; moved when another task takes the leader's tid (a non-leader exec).
  int64_t base = 0;
  uint64_t startTime = 0;  // stat field 22: tells a reused tid apart where it is read by path
  uint64_t lastTotal = 0;  // the kernel's figure at the last read, and when it began (leader only)
  uint64_t lastReadNs = 0;
  // Counted from the first good read, not from its birth: a thread that predates the tracker, or
  // one a slot took after it was left out. A first read that failed (EMFILE) must not count it
  // all from birth at the next.
  bool basePending = false;
  int64_t ticksBase = 0;  // utime + stime at that first read (0 when counted from birth)
  bool read = false;            // read once at least, and from which figure
  bool fromSchedstat = false;
  bool unread = false;          // a read failed other than for its exit: counted in unreadThreads
  UniqueFd schedstat;
  UniqueFd stat;
  ThreadTimes times;
  bool listed = true;
  bool gone = false;
  bool ownTidPending = false;  // /proc is another pid namespace's, and times.tid is not known yet
};

// What a read of a thread found. Only the kernel saying so ends a thread: ESRCH from its own
// descriptor, ENOENT by path, or another task under its tid. EMFILE, ENOMEM and the like leave
// it as it was; taking those for exits reported every thread exited when the process ran out
// of descriptors, and each came back as new, its whole history counted a second time.
enum class ReadResult { kOk, kGone, kUnknown };

bool saysGone(long rc) { return rc == -ESRCH || rc == -ENOENT; }

class ProcfsTracker final : public ThreadTracker {
 public:
  ~ProcfsTracker() override { gKeptFds -= fdsHeld_; }
  const char* backend() const override { return "procfs"; }
  int open(const TrackerOptions& opts, TrackerError* err);
  int snapshot(TrackerSnapshot& snap) override { return take(snap, false); }
  // The run counts from here: a thread alive now but not yet found (born since the last listing,
  // or one a listing skipped) is counted from its first read, not from its birth, whose time
  // before the run would be the run's. The listing here finds all but those a listing skips.
  int referenceSnapshot(TrackerSnapshot& snap) override {
    countFromTick_ = bootTicks(nsPerTick_);
    return take(snap, true);
  }
  void stats(TrackerStats& out) override;
  bool namesFresh() const override { return true; }  // readThread() takes it from stat

 private:
  int take(TrackerSnapshot& snap, bool rescanNow);
  void rescan(bool initial);
  void addThread(uint32_t tid, bool fromNow);
  void findOwnTid(Thread& t);
  void openFiles(Thread& t);
  void closeFiles(Thread& t);
  size_t fdBudget() const;
  ReadResult readThread(Thread& t);
  void noteRead(Thread& t, ReadResult r);
  ssize_t readByPath(uint32_t tid, const char* name, char* buf, size_t cap) const;
  void readCpus(std::vector<CpuTimes>& cpus);
  std::string taskDir() const { return root_ + "/" + std::to_string(pid_) + "/task"; }
  std::string threadFile(uint32_t tid, const char* name) const {
    return taskDir() + "/" + std::to_string(tid) + "/" + name;
  }

  std::string root_;
  int pid_ = 0;  // as /proc numbers it
  // /proc is another pid namespace's than this process's (ProcPidView): threads are read by the
  // numbers /proc gives them, and reported by the process's own, which spans and gettid() use.
  bool foreignProc_ = false;
  int ownPid_ = 0;
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
  uint64_t rescanEveryNs_ = kRescanNs;
  uint64_t scans_ = 0;
  // Threads whose stat start time (clock ticks since boot) is before this tick lived before the
  // tracker opened, or before the run's reference snapshot: counted from their first read,
  // whichever listing finds them. Only the first listing counted so, and the listing of task/
  // skips live threads while others exit: one skipped was counted from its birth when found
  // (2.5 s of CPU in a 200 ms run on 2 CPUs, all of it idle threads' history). A start time in
  // the same tick cannot be told apart: the listing decides, as before.
  uint64_t countFromTick_ = 0;
  // Descriptors kept open for threads' files: each thread's two would take the process's own
  // (4096 threads, 8,192 descriptors, against a limit of 1024 in many containers: the host's
  // open(), spawn() and sockets failed with EMFILE, and so did reads by path). fdBudget() bounds
  // them; threads beyond are read by path, which costs a path walk and an open and close per
  // file. fdsHeld_: this tracker's part of gKeptFds, counted again at each rescan (files closed
  // since, of exited threads, stay counted until then).
  size_t hostFdsAtOpen_ = 0;
  size_t fdBudget_ = 0;
  size_t fdsHeld_ = 0;
  // The kernel leaves schedstat at "0 0 0" without schedstats on some older kernels: then
  // utime + stime from stat, as where schedstat is missing.
  bool ticksOnly_ = false;
  // Threads left out for want of a slot, with the scan that last listed them: counted once, and
  // counted from the moment a slot takes them (what they ran before went to "other").
  std::unordered_map<uint32_t, uint64_t> droppedTids_;
  // Read by stats() on the JS thread.
  std::atomic<uint64_t> snapshots_{0};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> unread_{0};
  std::atomic<uint64_t> threadCount_{0};
  std::vector<CpuTimes> lastCpu_;
  std::vector<uint32_t> doneTids_;
};

int ProcfsTracker::open(const TrackerOptions& opts, TrackerError* err) {
  root_ = opts.procRoot.empty() ? "/proc" : opts.procRoot;
  pid_ = opts.pid > 0 ? opts.pid : int(getpid());
  ownPid_ = pid_;
  if (root_ == "/proc") {
    // Read by getpid()'s number, a /proc of another pid namespace's (the host's, under `unshare
    // -p -f`) gave kthreadd's threads for this process's: 0 J, silently.
    const ProcPidView view = procPidView();
    if (const std::string why = foreignProcRefusal(view, opts.pid); !why.empty()) {
      if (err) {
        err->code = "ERR_JOULETRACE_PROC_NAMESPACE";
        err->message = "jouletrace: the procfs thread tracker cannot follow " +
                       (opts.pid > 0 ? "pid " + std::to_string(opts.pid) : std::string("this process")) + ": " + why + ".";
      }
      return -EINVAL;
    }
    if (view.foreign) {
      foreignProc_ = true;
      pid_ = view.self;
    }
  }
  maxThreads_ = opts.maxThreads ? opts.maxThreads : 1;
  long hz = sysconf(_SC_CLK_TCK);
  if (hz > 0) nsPerTick_ = 1'000'000'000ull / uint64_t(hz);

  if (int rc = checkTaskDirReadable(root_, pid_, " (the procfs backend keeps two per thread, up to a quarter of them)", err)) return rc;
  if (int rc = checkTargetIsProcess(root_, pid_, err)) return rc;

  std::string statPath = root_ + "/stat";
  // openForReading: a FIFO at options.procRoot would otherwise hold open() until a writer came.
  procStat_ = UniqueFd(openForReading(statPath));
  std::string text;
  int rc = procStat_.valid() ? readSmallFile(statPath, &text) : procStat_.get();
  if (rc != 0) {
    int e = rc < 0 ? -rc : EIO;
    if (err) {
      const char* what = notAFile(statPath, e);
      err->code = errnoName(e);
      err->message = "jouletrace: cannot read " + statPath + " (" + (what ? std::string(what) + ", not a file: check options.procRoot" : std::string(strerror(e))) + ")";
    }
    return -e;
  }
  // One "cpuN" line per online CPU; N indexes the snapshot's cpus array.
  for (size_t pos = 0; pos < text.size();) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    if (text.compare(pos, 3, "cpu") == 0 && pos + 3 < text.size() && isdigit(uint8_t(text[pos + 3]))) {
      // Bounded by the kernel's own largest NR_CPUS: an emulated procRoot's "cpu20000000" would
      // have this read a sysfs file per CPU up to it.
      const long n = strtol(text.c_str() + pos + 3, nullptr, 10);
      if (n >= 0 && n < kMaxCpus) ncpu_ = std::max(ncpu_, int(n) + 1);
    }
    pos = eol + 1;
  }
  // /proc/stat lists online CPUs only: one that comes online later must have its place too
  // (an emulated procRoot has only the CPUs it lists), by its number (possibleCpuIds()).
  if (root_ == "/proc") {
    const long conf = std::max(sysconf(_SC_NPROCESSORS_CONF), long(possibleCpuIds("/sys/devices/system/cpu")));
    if (conf > ncpu_) ncpu_ = int(conf);
  }
  cpuPkg_ = cpuPackageMap(opts.cpuPackage, "/sys/devices/system/cpu", ncpu_);
  lastCpu_.assign(size_t(ncpu_), CpuTimes());
  countFromTick_ = bootTicks(nsPerTick_);
  const size_t inUse = openFdCount(), kept = gKeptFds;
  hostFdsAtOpen_ = inUse > kept ? inUse - kept : 0;
  rescan(true);
  lastScanNs_ = monotonicNs();
  return 0;
}

// fromNow: count from this moment, not from the thread's birth (a thread that predates the
// tracker, or one left out earlier for want of a slot).
void ProcfsTracker::addThread(uint32_t tid, bool fromNow) {
  uint32_t slot;
  if (!freeSlots_.empty()) {
    slot = freeSlots_.back();
    freeSlots_.pop_back();
  } else if (nextSlot_ < maxThreads_) {
    slot = nextSlot_++;
  } else {
    if (droppedTids_.emplace(tid, scans_).second) dropped_++;
    return;
  }
  Thread t;
  t.tid = tid;
  t.slot = slot;
  t.generation = nextGeneration_++;
  t.basePending = fromNow;
  openFiles(t);
  t.times.tid = tid;
  t.times.tgid = uint32_t(ownPid_);
  t.times.slot = slot;
  t.times.generation = t.generation;
  Thread& in = threads_.emplace(tid, std::move(t)).first->second;
  if (foreignProc_) findOwnTid(in);
  threadCount_.store(threads_.size(), std::memory_order_relaxed);
  // The first read also takes the thread's start time, and its base when counted from now.
  noteRead(in, readThread(in));
}

// The thread's id as the process knows it (NSpid's last), for its row: spans and the sampler's
// own thread go by gettid()'s. The leader's is the process's pid. Until a read succeeds (out of
// descriptors) the row has tid 0, which names no thread; each rescan tries again. A kernel
// without NSpid (before Linux 4.1) cannot tell: /proc's number stands.
void ProcfsTracker::findOwnTid(Thread& t) {
  long id = t.tid == uint32_t(pid_) ? long(ownPid_) : ownNamespaceId(taskDir() + "/" + std::to_string(t.tid));
  if (id == -ENODATA) id = long(t.tid);
  t.ownTidPending = id <= 0;
  t.times.tid = id > 0 ? uint32_t(id) : 0;
}

// A read that failed other than for the thread's exit leaves its row where it stood: counted,
// not a silent 0 (a process out of descriptors read 0 ns for 200 busy threads, none counted).
void ProcfsTracker::noteRead(Thread& t, ReadResult r) {
  if (r == ReadResult::kGone) t.gone = true;
  if (r == ReadResult::kUnknown && !t.unread) {
    t.unread = true;
    unread_++;
  }
}

// For the threads' files of all procfs trackers together (gKeptFds): a quarter of the descriptors
// the process had free, its trackers' aside, when this one opened, under its soft limit as it is
// now (asked at each rescan: the host may lower or raise it), less the two the tracker holds
// besides (/proc/stat, and the listing's while it runs). The host keeps three quarters of what it
// had free whatever the trackers track. Descriptors it opens later are not counted: that would
// cost a listing of /proc/self/fd per rescan.
size_t ProcfsTracker::fdBudget() const {
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  const uint64_t limit = rl.rlim_cur == RLIM_INFINITY ? uint64_t(1) << 40 : uint64_t(rl.rlim_cur);
  const uint64_t share = limit > hostFdsAtOpen_ ? (limit - hostFdsAtOpen_) / 4 : 0;
  return share > 2 ? size_t(share - 2) : 0;
}

// Kept open, read with pread: a read costs no path walk. Within fdBudget() only, and either may
// fail (EMFILE): the thread is then read by path, and each rescan tries again.
void ProcfsTracker::openFiles(Thread& t) {
  const size_t need = size_t(!t.stat.valid()) + size_t(!ticksOnly_ && !t.schedstat.valid());
  // Taken before the opens: other samplers' trackers open theirs on their own threads.
  if (need == 0 || gKeptFds.fetch_add(need) + need > fdBudget_) {
    gKeptFds -= need;
    return;
  }
  size_t opened = 0;
  if (!t.stat.valid()) {
    t.stat = UniqueFd(openForReading(threadFile(t.tid, "stat")));
    opened += t.stat.valid();
  }
  if (!ticksOnly_ && !t.schedstat.valid()) {
    const int fd = openForReading(threadFile(t.tid, "schedstat"));
    t.schedstat = UniqueFd(fd);
    opened += t.schedstat.valid();
    // The thread is there and has no schedstat: a kernel built without CONFIG_SCHED_INFO. Unless
    // it exited between the two opens: its stat then answers ESRCH. (The returned code, not
    // errno: a file refused for its kind leaves errno as an earlier call set it.)
    char probe[64];
    if (fd == -ENOENT && t.stat.valid() && readAt0(t.stat, probe, sizeof probe) > 0) ticksOnly_ = true;
  }
  fdsHeld_ += opened;
  gKeptFds -= need - opened;
}

void ProcfsTracker::closeFiles(Thread& t) {
  const size_t held = size_t(t.stat.valid()) + size_t(t.schedstat.valid());
  t.stat.reset();
  t.schedstat.reset();
  fdsHeld_ -= held;
  gKeptFds -= held;
}

// A thread's file read without a kept descriptor: its length, or -errno.
ssize_t ProcfsTracker::readByPath(uint32_t tid, const char* name, char* buf, size_t cap) const {
  const int fd = openForReading(threadFile(tid, name));
  if (fd < 0) return fd;
  return readAt0(UniqueFd(fd), buf, cap);
}

void ProcfsTracker::rescan(bool initial) {
  scans_++;
  fdBudget_ = fdBudget();
  size_t held = 0;
  for (auto& kv : threads_) {
    kv.second.listed = false;
    held += size_t(kv.second.stat.valid()) + size_t(kv.second.schedstat.valid());
  }
  gKeptFds -= fdsHeld_ - held;  // closed since the last count (never more are held than counted)
  fdsHeld_ = held;
  // A process that is gone lists nothing (ENOENT); one out of descriptors cannot be listed
  // (EMFILE). Either way each thread's own read below says whether it is gone.
  DIR* d = opendir(taskDir().c_str());
  if (d) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      uint32_t tid = uint32_t(strtoul(e->d_name, nullptr, 10));
      auto it = threads_.find(tid);
      if (it != threads_.end()) {
        it->second.listed = true;
        continue;
      }
      auto dropped = droppedTids_.find(tid);
      if (dropped != droppedTids_.end()) {
        dropped->second = scans_;
        if (freeSlots_.empty() && nextSlot_ >= maxThreads_) continue;
        droppedTids_.erase(dropped);
        addThread(tid, true);
        continue;
      }
      addThread(tid, initial);
    }
  }
  // A thread left out is forgotten once its directory is gone, not for missing from one listing
  // (or none): listed again, it would be counted as dropped again, or from its birth.
  std::string text;
  for (auto it = droppedTids_.begin(); it != droppedTids_.end();) {
    bool gone = it->second != scans_ && saysGone(readSmallFile(threadFile(it->first, "stat"), &text));
    it = gone ? droppedTids_.erase(it) : std::next(it);
  }
  if (d) closedir(d);
  for (auto& kv : threads_) {
    Thread& t = kv.second;
    // Over a budget lowered since (the soft limit was): read by path from here on.
    if (gKeptFds > fdBudget_) closeFiles(t);
    if (!t.gone) openFiles(t);
    if (t.ownTidPending && !t.gone) findOwnTid(t);
    // Unlisted: the listing can also miss a live thread (it resumes by position when threads
    // exit under it), so the thread's own directory decides.
    if (!t.listed && !t.gone) {
      long rc = readSmallFile(threadFile(t.tid, "stat"), &text);
      if (saysGone(rc)) t.gone = true;
    }
  }
}

// Updates t.times from schedstat and stat. Without schedstat (a kernel built without
// CONFIG_SCHED_INFO), on-CPU time is stat's utime + stime, in clock ticks; without descriptors for
// either (the process ran out of them), stat is read by path at each call.
ReadResult ProcfsTracker::readThread(Thread& t) {
  const bool leader = t.tid == uint32_t(pid_);
  const uint64_t readStartNs = leader ? monotonicNs() : 0;
  char buf[1024];
  ssize_t statLen;
  bool byPath = !t.stat.valid();
  statLen = byPath ? readByPath(t.tid, "stat", buf, sizeof buf) : readAt0(t.stat, buf, sizeof buf);
  if (saysGone(statLen)) return ReadResult::kGone;
  if (statLen <= 0) return ReadResult::kUnknown;
  // The name is field 2, between the first '(' and the last ')' (it may hold either): read here,
  // it costs nothing; read from comm by path at each rescan, it cost three system calls a thread.
  const char* nameStart = strchr(buf, '(');
  const char* nameEnd = strrchr(buf, ')');
  if (nameStart && nameEnd > nameStart) copyComm(t.times.comm, nameStart + 1, size_t(nameEnd - nameStart - 1));
  const char* field = procStatField(buf, 22);
  uint64_t start = field ? strtoull(field, nullptr, 10) : 0;
  if (t.startTime == 0) {
    t.startTime = start;
    if (!t.read && start != 0 && start < countFromTick_) t.basePending = true;
  } else if (byPath && start != t.startTime && !leader) {
    return ReadResult::kGone;  // the tid now names another thread
  }
  int cpu = -1;
  if (const char* processor = procStatField(buf, 39)) cpu = int(strtol(processor, nullptr, 10));
  const char* utime = procStatField(buf, 14);
  const char* stime = procStatField(buf, 15);
  if (!utime || !stime) return ReadResult::kUnknown;
  const uint64_t ticksNs = (strtoull(utime, nullptr, 10) + strtoull(stime, nullptr, 10)) * nsPerTick_;
  uint64_t total = ticksNs;
  if (!ticksOnly_) {
    // By path where the thread has no descriptor for it (beyond fdBudget(), or EMFILE), rather than
    // stat's clock ticks in its place: a thread that runs microseconds at a wake-up read 0 in those.
    ssize_t n = t.schedstat.valid() ? readAt0(t.schedstat, buf, sizeof buf) : readByPath(t.tid, "schedstat", buf, sizeof buf);
    if (n == -ENOENT) {
      // No schedstat where stat was just read: a kernel built without CONFIG_SCHED_INFO (as
      // openFiles() tells it), unless the thread exited between the two reads.
      char probe[64];
      const ssize_t again = byPath ? readByPath(t.tid, "stat", probe, sizeof probe) : readAt0(t.stat, probe, sizeof probe);
      if (again <= 0) return saysGone(again) ? ReadResult::kGone : ReadResult::kUnknown;
      ticksOnly_ = true;
    } else {
      if (saysGone(n)) return ReadResult::kGone;
      if (n <= 0) return ReadResult::kUnknown;
      total = strtoull(buf, nullptr, 10);
      // Older kernels without schedstats print "0 0 0" for every task: once a thread has clock
      // ticks against a 0 there, every thread goes by utime + stime.
      if (total == 0 && ticksNs > 0) {
        ticksOnly_ = true;
        total = ticksNs;
      }
    }
  }
  if (ticksOnly_) t.schedstat.reset();
  const bool fromSchedstat = !ticksOnly_;
  // The row goes on from the figure it has, in whatever the kernel's figure now measures.
  const auto continueRow = [&] { t.base = int64_t(total) - int64_t(t.times.onCpuNs); };
  if (t.basePending) {
    t.base = int64_t(total);
    t.ticksBase = int64_t(ticksNs);
    t.basePending = false;
  } else if (t.read && fromSchedstat != t.fromSchedstat) {
    // The figure changed measure. To utime + stime: schedstat was found empty, its 0s counted
    // nothing, so they count from where they stood at the first read. To schedstat (not expected:
    // it is read by path where it has no descriptor): the row goes on from what it had.
    if (fromSchedstat) continueRow();
    else t.base = t.ticksBase;
  }
  t.read = true;
  t.fromSchedstat = fromSchedstat;
  if (leader) {
    // A thread other than the leader that calls exec takes the leader's tid, and the kernel
    // gives it the leader's start time too: the leader's descriptors now read that thread's run
    // time, its whole life. Its old row ends there (reported exited, its time counted); this
    // row counts on from here. Seen as a figure that went back, or moved by more than the time
    // from the start of the last read to the end of this one could hold. With slack: the
    // scheduler's clock is not CLOCK_MONOTONIC (on a VM it ran 2.5% fast against it over 50 ms
    // here), and utime + stime are charged a tick at a time. A jump within the slack is counted
    // as the leader's; a false alarm would lose it a read's worth of its time.
    const uint64_t now = monotonicNs();
    const uint64_t elapsed = now - t.lastReadNs;
    const uint64_t slack = (fromSchedstat ? 2'000'000 : 2 * nsPerTick_) + elapsed / 8;
    if (t.lastReadNs != 0 && (total + 1'000'000 < t.lastTotal || total > t.lastTotal + elapsed + slack)) continueRow();
    t.lastTotal = total;
    t.lastReadNs = readStartNs;
  }
  int64_t run = int64_t(total) - t.base;
  uint64_t onCpu = run > 0 ? uint64_t(run) : 0;
  if (onCpu > t.times.onCpuNs) {
    // Only the CPU it last ran on is known: the whole delta goes to that CPU's package.
    int pkg = cpu >= 0 && cpu < ncpu_ ? cpuPkg_[size_t(cpu)] : 0;
    t.times.pkgNs[pkg] += onCpu - t.times.onCpuNs;
    t.times.onCpuNs = onCpu;
  }
  return ReadResult::kOk;
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

int ProcfsTracker::take(TrackerSnapshot& snap, bool rescanNow) {
  const uint64_t now = monotonicNs();
  snap.timeNs = now;
  snap.busyQuantumNs = nsPerTick_;
  snap.threads.clear();
  snapshots_++;
  readCpus(snap.cpus);
  if (rescanNow || now - lastScanNs_ >= rescanEveryNs_) {
    const uint64_t scanCpuStart = callingThreadCpuNs();
    rescan(false);
    lastScanNs_ = now;
    const uint64_t cost = callingThreadCpuNs() - scanCpuStart;
    rescanEveryNs_ = std::clamp(kRescanCostShare * cost, kRescanNs, kRescanMaxNs);
  }
  doneTids_.clear();
  for (auto& kv : threads_) {
    Thread& t = kv.second;
    if (!t.gone) noteRead(t, readThread(t));
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
  out.unreadThreads = unread_;
  out.note = "procfs backend: events counts snapshots; per-thread package split follows the last CPU seen";
}

}  // namespace

std::unique_ptr<ThreadTracker> openProcfsTracker(const TrackerOptions& opts, TrackerError* err) {
  std::unique_ptr<ProcfsTracker> t(new ProcfsTracker());
  if (t->open(opts, err) != 0) return nullptr;
  return t;
}

}  // namespace jouletrace
