#include "sampler/sampler.h"

#include <errno.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "errno_name.h"
#include "napi_util.h"

namespace jouletrace {

namespace {

constexpr uint64_t kNsPerSec = 1000000000ull;
// Long intervals sleep in slices this long so stop() returns promptly.
constexpr uint64_t kMaxSleepSliceNs = 10000000ull;
// The procfs backend costs a file read per thread; it runs at most this often.
constexpr uint64_t kProcfsPeriodNs = 10000000ull;
// How long an attribution step waits, at most, for the primary counters to move (see sample()):
// a counter that stands still longer (a VM's, one of coarse units) is split as it is.
constexpr uint64_t kAttributionWaitNs = 20000000ull;
// How often the sampler thread asks whether the tracked process has exited: one poll() (or a
// stat file read) each time, and the run ends within this much of the exit.
constexpr uint64_t kTargetCheckNs = 10000000ull;

timespec toTimespec(uint64_t ns) {
  timespec ts;
  ts.tv_sec = time_t(ns / kNsPerSec);
  ts.tv_nsec = long(ns % kNsPerSec);
  return ts;
}

void sleepUntil(uint64_t deadlineNs) {
  timespec ts = toTimespec(deadlineNs);
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

inline void put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
inline void put64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
inline void putF64(uint8_t* p, double v) { std::memcpy(p, &v, 8); }

uint64_t threadCpuNs(pthread_t t) {
  clockid_t cid;
  if (pthread_getcpuclockid(t, &cid) != 0) return 0;
  timespec ts;
  if (clock_gettime(cid, &ts) != 0) return 0;
  return uint64_t(ts.tv_sec) * kNsPerSec + uint64_t(ts.tv_nsec);
}

}  // namespace

std::unique_ptr<Sampler> Sampler::create(const SamplerConfig& cfg, SamplerError* err) {
  std::unique_ptr<Sampler> s(new Sampler());
  s->cfg_ = cfg;
  SourceError se;
  s->source_ = openEnergySource(cfg.source, cfg.sourceOptions, &se, &s->skipped_);
  if (!s->source_) {
    err->code = se.code;
    err->message = se.message;
    return nullptr;
  }
  const size_t nd = s->source_->domains().size();
  // Every CPU number the tracker may see, offline ones too (one that comes online later runs
  // threads): possibleCpuIds(), or the CPUs sysconf counts where sysfs has no list.
  const int cpuIds = possibleCpuIds(cfg.sourceOptions.sysfsCpuRoot);
  s->cpuPackage_ = cpuPackageMap({}, cfg.sourceOptions.sysfsCpuRoot, cpuIds > 0 ? cpuIds : int(std::max(1L, sysconf(_SC_NPROCESSORS_CONF))),
                                 &s->unknownPackageCpus_);
  // A tracker is opened, or create() fails, wherever threads are not "off" (openTracker()). The
  // ring's size is known here, so one too large is refused before the ring is mapped or a BPF
  // program loaded (an impossible one failed as ENOMEM, a JouletraceError naming no largest value).
  s->recordSize_ = kHeaderBytes + uint32_t(nd) * (cfg.threads != "off" ? kDomainBytesAttributed : kDomainBytes);
  if (cfg.maxRingBytes > 0 && uint64_t(cfg.ringCapacity) * s->recordSize_ > cfg.maxRingBytes) {
    uint64_t most = 1;
    while (most * 2 * s->recordSize_ <= cfg.maxRingBytes) most *= 2;
    err->code = "ERR_OUT_OF_RANGE";
    err->message = "Expected at most " + std::to_string(most) + " here (records of " + std::to_string(s->recordSize_) +
                   " bytes for these domains, and buffers of at most " + std::to_string(cfg.maxRingBytes) +
                   " bytes in this Node) for options.ringCapacity but received " + std::to_string(cfg.ringCapacity) +
                   " of type number";
    return nullptr;
  }
  if (!s->openTracker(err)) return nullptr;

  // ringCapacity 0: no ring at all, for samplers whose figures are only exported (totals,
  // attribution, spans); one nothing reads would count every sample past its size as dropped.
  if (cfg.ringCapacity > 0) {
    s->ring_ = std::make_shared<RingBuffer>(cfg.ringCapacity, s->recordSize_, cfg.overflow);
    if (!s->ring_->ok()) {
      err->code = "ENOMEM";
      err->message = "ringCapacity: could not allocate " + std::to_string(s->ring_->bytes()) + " bytes for the ring";
      return nullptr;
    }
  }
  s->readings_.assign(nd, DomainReading{});
  s->baseTicks_.assign(nd, 0);
  s->prevTicks_.assign(nd, 0);
  s->prevRaw_.assign(nd, 0);
  s->pendingDelta_.assign(nd, 0);
  s->restartedSinceStep_.assign(nd, 0);
  s->lostSinceStep_.assign(nd, 0);
  s->primaryDomains_ = primaryDomainIndices(s->source_->domains());
  s->totals_.reset(new std::atomic<uint64_t>[nd]);
  s->domainReadErrors_.reset(new std::atomic<uint64_t>[nd]);
  s->domainRead_.reset(new std::atomic<bool>[nd]);
  s->held_.reset(new std::atomic<bool>[nd]);
  for (size_t d = 0; d < nd; d++) {
    s->totals_[d].store(0);
    s->domainReadErrors_[d].store(0);
    s->domainRead_[d].store(false);
    s->held_[d].store(false);
  }
  s->changePeriods_.reset(new std::atomic<uint64_t>[kPeriodWindow]);
  for (size_t i = 0; i < kPeriodWindow; i++) s->changePeriods_[i].store(0);
  return s;
}

bool Sampler::openTracker(SamplerError* err) {
  if (cfg_.threads == "off") return true;
  TrackerOptions to;
  to.pid = cfg_.pid;
  to.followChildren = cfg_.followChildren;
  to.repairSwitchIns = cfg_.repairSwitchIns;
  to.maxThreads = cfg_.maxThreads;
  to.cpuPackage = cpuPackage_;
  to.procfsOption = "threads 'procfs'";
  TrackerError te;
  // The process asked for is wrong, whichever backend looked: under the default (auto), the
  // message names no backend (the caller chose none), and procfs is not tried after eBPF.
  auto aboutPid = [&te] { return te.code == "ESRCH" || te.code == "ERR_JOULETRACE_NOT_A_PROCESS"; };
  auto fail = [&](const char* backend) {
    err->code = te.code;
    err->message = (cfg_.threads == "auto" && aboutPid() ? std::string() : std::string("threads: '") + backend + "': ") + te.message;
    return false;
  };
  if (cfg_.threads == "bpf" || cfg_.threads == "auto") {
    to.backend = "bpf";
    tracker_ = openBpfTracker(to, &te);
    if (!tracker_ && (cfg_.threads == "bpf" || aboutPid())) return fail("bpf");
    if (!tracker_) {
      threadsFallback_ = "eBPF unavailable (" + te.message + "); using procfs";
      if (cfg_.followChildren) threadsFallback_ += ", which does not follow child processes";
    }
  }
  if (!tracker_) {
    to.backend = "procfs";
    tracker_ = openProcfsTracker(to, &te);
    if (!tracker_) return fail("procfs");
  }
  threadsBackend_ = tracker_->backend();
  if (threadsBackend_ == "procfs") {
    attributionEvery_ = uint32_t(std::max<uint64_t>(1, (kProcfsPeriodNs + cfg_.intervalNs - 1) / cfg_.intervalNs));
  }
  attribution_.reset(
      new AttributionEngine(source_->domains(), cpuPackage_, presentCpus(cfg_.sourceOptions.sysfsCpuRoot, cpuPackage_.size())));
  // Another process: the run ends when it exits. Not where children are followed (eBPF's
  // followChildren), whose processes may outlive the first (a shell that starts a daemon), nor
  // for this process, which cannot.
  if (cfg_.pid != 0 && cfg_.pid != getpid() && !(cfg_.followChildren && threadsBackend_ == "bpf")) {
    TrackerError we;
    targetWatch_ = TargetExitWatch::open("/proc", cfg_.pid, cfg_.targetWatchProc, &we);
    if (!targetWatch_ && !we.code.empty()) {
      err->code = we.code;
      err->message = we.message;
      return false;
    }
  }
  if (cfg_.pid == 0 || cfg_.pid == getpid()) {
    // Span history: 10 s of attribution intervals (see SpanEngine). Per-CPU baseline shares divide
    // by the CPUs online (cpuPackage_ also spans offline ones: SMT switched off, a VM's hot-plug
    // slots), as the model's idle watts count them.
    spans_ = std::make_shared<SpanEngine>(source_->domains(), int(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN))), 10000000000ull,
                                          cfg_.intervalNs * attributionEvery_, cfg_.spanHistorySteps);
    spanEngineId_ = registerSpanEngine(spans_);
  }
  return true;
}

Sampler::~Sampler() {
  stop();
  if (spans_) spans_->close();
  if (spanEngineId_) unregisterSpanEngine(spanEngineId_);
}

bool Sampler::start(SamplerError* err) {
  if (running()) {
    err->code = "ERR_JOULETRACE_ALREADY_STARTED";
    err->message = "start(): the sampler is already running; call stop() first";
    return false;
  }
  // The sampler thread looks only while a run is on: a process that exited while this sampler
  // stood stopped would otherwise be sampled for its first check's 10 ms.
  if (!targetExited() && targetWatch_ && targetWatch_->exited()) targetExited_.store(true, std::memory_order_release);
  if (targetExited()) {
    err->code = "ERR_JOULETRACE_TARGET_EXITED";
    err->message = "start(): process " + std::to_string(cfg_.pid) +
                   ", which this sampler tracks, has exited; its last run's figures stay readable. Create a new Sampler for another process";
    return false;
  }
  // What can fail comes before anything of the last run is reset, so that a start() that fails
  // leaves that run's totals, records and threads readable: the first read, then the thread,
  // which waits at a gate until the run is set up.
  // The first read says whether the run can have a reference, which it needs for the primary
  // domains, which spans and requests are charged from (the reference itself is read once the run
  // is set up, below). Another domain's counter whose read fails (a dram zone, an AMD core's) does
  // not keep the run from starting, as its failures mid-run do not stop one: rebase() left it
  // without a reference, so its first good read is its reference, adding nothing.
  source_->rebase();
  int rc = source_->read(readings_.data());
  for (size_t d : primaryDomains_) {
    if (!readings_[d].failed) continue;
    const Domain& dom = source_->domains()[d];
    SourceError why;
    if (!source_->readFailure(d, &why)) {
      why.code = errnoName(-rc);
      why.message = strerror(-rc);
    }
    err->code = why.code;
    err->message = std::string("start(): the first read of the '") + source_->name() + "' source failed for " + dom.name + "-" +
                   std::to_string(dom.package) + " (" + why.message + "), which spans and requests are charged from — try again once it reads";
    return false;
  }
  if (!createThread(err)) return false;

  // Fresh totals, ring and statistics for this run (the ring may only be reset while the
  // producer is stopped: the thread waits at the gate).
  if (ring_) ring_->reset();
  jitter_.reset();
  samples_.store(0);
  missed_.store(0);
  readErrors_.store(rc != 0 ? 1 : 0);  // the first read's, of another domain
  counterRestarts_.store(0);
  changeCount_.store(0);
  for (size_t i = 0; i < kPeriodWindow; i++) changePeriods_[i].store(0, std::memory_order_relaxed);
  for (size_t d = 0; d < readings_.size(); d++) {
    totals_[d].store(0);
    domainReadErrors_[d].store(readings_[d].failed ? 1 : 0);
    domainRead_[d].store(!readings_[d].failed);
    held_[d].store(false);
  }
  if (attribution_) attribution_->reset();
  if (spans_) spans_->reset();
  seq_ = 0;

  // The run's reference: read again, next to the clock reading that starts the run. The first
  // read came before the thread and the resets above (~120 µs), and the first record charged that
  // time's energy to its own interval (11.9-20.2 W from a model fixed at 10 W, at 100 µs). It
  // carries on from the first (no rebase between), so a domain whose read fails here holds the
  // first's value, and the next good read brings the energy since, as in any interval.
  rc = source_->read(readings_.data());
  const uint64_t now = monotonicNs();
  bool referenceFailed = false;
  if (rc != 0) readErrors_.fetch_add(1);
  for (size_t d = 0; d < readings_.size(); d++) {
    if (readings_[d].failed) {
      domainReadErrors_[d].fetch_add(1);
    } else {
      domainRead_[d].store(true);
    }
  }
  for (size_t d : primaryDomains_) referenceFailed = referenceFailed || readings_[d].failed;

  // Reference readings, so totals() is defined from the moment start() returns.
  for (size_t d = 0; d < readings_.size(); d++) {
    baseTicks_[d] = prevTicks_[d] = readings_[d].ticks;
    prevRaw_[d] = readings_[d].raw;
    pendingDelta_[d] = 0;
    restartedSinceStep_[d] = 0;
    lostSinceStep_[d] = 0;
  }
  if (tracker_) {
    std::lock_guard<std::mutex> lock(trackerMu_);
    tracker_->referenceSnapshot(snap_);
    attribution_->step(pendingDelta_.data(), 0, snap_, nullptr, nullptr, false, now);  // reference point
    if (spans_) spans_->step(now, *attribution_, false, false);  // spans begun from here on are complete
  }
  // A failed reference read leaves the first interval's energy unknown to spans, as a failed read
  // at either end of any interval does.
  readFailedAtStep_ = referenceFailed;
  lastAttributionTime_ = now;
  sinceAttribution_ = 0;
  lastChangeNs_ = now;
  lastAnyChangeNs_.store(now, std::memory_order_relaxed);
  longestStillNs_.store(0, std::memory_order_relaxed);
  startNs_.store(now);
  lastSampleNs_.store(now);
  stopNs_.store(0);

  {
    // The thread's tid, for stats() from the moment start() returns (it read 0, or after a
    // restart the previous thread's).
    std::unique_lock<std::mutex> lock(gateMu_);
    gateCv_.wait(lock, [this] { return tid_.load() != 0; });
    gateOpen_ = true;
  }
  gateCv_.notify_all();
  if (spans_) spans_->setRunning(true);
  return true;
}

bool Sampler::createThread(SamplerError* err) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  if (cfg_.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cfg_.cpu, &set);
    pthread_attr_setaffinity_np(&attr, sizeof set, &set);
  }
  if (cfg_.realtimePriority > 0) {
    sched_param sp{};
    sp.sched_priority = cfg_.realtimePriority;
    pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED);
    pthread_attr_setschedpolicy(&attr, SCHED_FIFO);
    pthread_attr_setschedparam(&attr, &sp);
  }
  gateOpen_ = false;
  // 0 until the new thread stores its own (start() waits for that); the last run's thread keeps
  // its tid if none is made, for stats() and threads() to name.
  const int lastTid = tid_.exchange(0);
  stopRequested_.store(false);
  running_.store(true, std::memory_order_release);
  int e = pthread_create(&thread_, &attr, &Sampler::threadMain, this);
  pthread_attr_destroy(&attr);
  if (e != 0) {
    running_.store(false);
    tid_.store(lastTid);
    err->code = errnoName(e);
    if (e == EPERM && cfg_.realtimePriority > 0) {
      err->message = "realtime: SCHED_FIFO priority " + std::to_string(cfg_.realtimePriority) +
                     " is not permitted for this process — needs CAP_SYS_NICE, or an RLIMIT_RTPRIO of at least that "
                     "priority (ulimit -r), and, under cgroup v1 with CONFIG_RT_GROUP_SCHED, a cpu.rt_runtime_us budget";
    } else if (e == EINVAL && cfg_.cpu >= 0) {
      err->message = "cpu: CPU " + std::to_string(cfg_.cpu) + " is not online or not in this process's cpuset";
    } else {
      err->message = std::string("start(): could not create the sampler thread: ") + strerror(e);
    }
    return false;
  }
  joinable_ = true;
  return true;
}

void Sampler::stop() {
  if (!joinable_) return;
  // Channels see the stop before the last step drains their events, so that begin() refuses
  // from then on rather than write what only a later start() would read (what slips in still
  // settles: SpanEngine::flushLog).
  if (spans_) spans_->setRunning(false);
  stopRequested_.store(true, std::memory_order_release);
  pthread_join(thread_, nullptr);
  joinable_ = false;
  running_.store(false, std::memory_order_release);
}

void* Sampler::threadMain(void* self) {
  static_cast<Sampler*>(self)->run();
  return nullptr;
}

void Sampler::run() {
  pthread_setname_np(pthread_self(), kThreadName);
  // The default 50 µs timer slack would dominate the jitter of a 100 µs cadence.
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  {
    std::unique_lock<std::mutex> lock(gateMu_);
    tid_.store(int(syscall(SYS_gettid)));
    gateCv_.notify_all();
    gateCv_.wait(lock, [this] { return gateOpen_; });
  }
  const uint64_t interval = cfg_.intervalNs;
  uint64_t next = startNs_.load() + interval;
  lastTargetCheckNs_ = startNs_.load();
  while (!stopRequested_.load(std::memory_order_acquire)) {
    // Sleep to the absolute deadline; long intervals in slices so stop() (and the tracked
    // process's exit) is not kept waiting.
    uint64_t now = monotonicNs();
    bool gone = false;
    while (next > now && next - now > kMaxSleepSliceNs) {
      sleepUntil(now + kMaxSleepSliceNs);
      if (stopRequested_.load(std::memory_order_acquire)) break;
      now = monotonicNs();
      if ((gone = targetGone(now))) break;
    }
    if (gone || stopRequested_.load(std::memory_order_acquire)) break;
    sleepUntil(next);
    now = monotonicNs();
    jitter_.record(now > next ? now - next : 0);
    uint32_t flags = 0;
    next += interval;
    if (now >= next) {
      // Missed deadlines are counted and skipped, never replayed in a burst.
      uint64_t k = (now - next) / interval + 1;
      missed_.fetch_add(k, std::memory_order_relaxed);
      next += k * interval;
      flags |= kFlagLate;
    }
    sample(now, flags, false);
    if (targetGone(now)) break;
  }
  uint64_t end = monotonicNs();
  // The next start() rebases: a sum held for a failing counter would lose what the others counted
  // since the hold began, in neither run.
  source_->releaseHolds();
  sample(end, kFlagFinal, true);
  stopNs_.store(end);
  cpuNsAtStop_.store(threadCpuNs(pthread_self()));
  // Ended by the process's exit, not by stop(): seen as stopped from here (stop() joins).
  if (targetExited_.load(std::memory_order_relaxed)) running_.store(false, std::memory_order_release);
}

bool Sampler::targetGone(uint64_t now) {
  if (!targetWatch_ || now - lastTargetCheckNs_ < kTargetCheckNs) return false;
  lastTargetCheckNs_ = now;
  if (!targetWatch_->exited()) return false;
  targetExited_.store(true, std::memory_order_release);
  return true;
}

void Sampler::sample(uint64_t now, uint32_t flags, bool forceAttribution) {
  const size_t nd = readings_.size();
  int rc = source_->read(readings_.data());
  if (rc != 0) {
    flags |= kFlagReadError;
    readErrors_.fetch_add(1, std::memory_order_relaxed);
    // A counter that started again lost energy for good, where other failures only delay it:
    // counted apart, once a read however many of its counters restarted.
    bool restarted = false;
    for (size_t d = 0; d < nd; d++) {
      if (!readings_[d].restarted) continue;
      restarted = true;
      restartedSinceStep_[d] = 1;
      if (!readings_[d].partialRestart) lostSinceStep_[d] = 1;
    }
    if (restarted) counterRestarts_.fetch_add(1, std::memory_order_relaxed);
  }
  // Spans and requests are charged from the primary domains alone: a dram zone or an AMD core
  // counter that fails leaves their energy known.
  bool readFailed = false;
  for (size_t d : primaryDomains_) readFailed = readFailed || readings_[d].failed;
  bool changed = false;
  bool anyRead = false;  // see the still stretch below
  for (size_t d = 0; d < nd; d++) {
    // Per domain, for stats() and calibrateBaseline(): a dram zone that fails must not stand for
    // the package's reads, nor one that never read pass for a 0 J measurement.
    if (readings_[d].failed) {
      domainReadErrors_[d].fetch_add(1, std::memory_order_relaxed);
    } else {
      anyRead = true;
      if (!domainRead_[d].load(std::memory_order_relaxed)) domainRead_[d].store(true, std::memory_order_relaxed);
    }
    uint64_t ticks = readings_[d].ticks;
    uint64_t delta = ticks >= prevTicks_[d] ? ticks - prevTicks_[d] : 0;
    prevTicks_[d] = ticks > prevTicks_[d] ? ticks : prevTicks_[d];
    pendingDelta_[d] += delta;
    if (readings_[d].raw != prevRaw_[d]) {
      changed = true;
      if (d == 0) {
        uint64_t n = changeCount_.load(std::memory_order_relaxed);
        changePeriods_[n % kPeriodWindow].store(now - lastChangeNs_, std::memory_order_relaxed);
        changeCount_.store(n + 1, std::memory_order_relaxed);
        lastChangeNs_ = now;
      }
      prevRaw_[d] = readings_[d].raw;
    }
  }
  if (changed) flags |= kFlagChanged;
  // A sample whose every read failed tells nothing of whether the counters moved: a stretch of
  // them is the read errors' to report, not a stillness (the CLI named a hypervisor that stopped
  // the counters where the reads had failed), and the stretch of good reads before it ends
  // there. Where some domains still read, they say whether the counters moved: one domain that
  // kept failing (a dram zone, another package) hid a package that stood still for good.
  if (changed || !anyRead) {
    const uint64_t still = now - lastAnyChangeNs_.load(std::memory_order_relaxed);
    if (still > longestStillNs_.load(std::memory_order_relaxed)) longestStillNs_.store(still, std::memory_order_relaxed);
    lastAnyChangeNs_.store(now, std::memory_order_relaxed);
  }
  if (nd > 0 && source_->domains()[0].estimated) flags |= kFlagEstimated;

  // An attribution step splits the energy measured since the last one by what ran meanwhile.
  // RAPL counters move about once a millisecond: a step in an interval where they did not move
  // splits nothing, and the next would split the whole millisecond by its own interval alone (at
  // 10 kHz, a thread that ran 900 µs of it got nothing, one that ran the last 100 µs all of it,
  // and nine spans in ten read 0 J). So a step waits until each primary counter has moved, for
  // at most kAttributionWaitNs; the intervals in between add into it.
  bool due = tracker_ && ++sinceAttribution_ >= attributionEvery_;
  if (due && !forceAttribution && now - lastAttributionTime_ < kAttributionWaitNs) {
    for (size_t d : primaryDomains_) {
      if (pendingDelta_[d] == 0) {
        due = false;
        break;
      }
    }
  }
  if (tracker_ && (due || forceAttribution)) {
    {
      std::lock_guard<std::mutex> lock(trackerMu_);
      tracker_->snapshot(snap_);
    }
    if (spans_) spans_->primeNewLogs(*attribution_);
    // A domain whose read failed here is not split: attribution keeps its interval for the next
    // good read, which brings the gap's energy (AttributionEngine::step()). One whose counter
    // started again since the last step, at this sample or an earlier one, lost energy that no
    // read brings: where none of its counters carried on, all it held (lostSinceStep_). At the
    // run's last step, what a domain still holds is let go of too: no good read comes for it.
    attribution_->step(pendingDelta_.data(), now - lastAttributionTime_, snap_, readings_.data(), lostSinceStep_.data(),
                       (flags & kFlagFinal) != 0, now);
    bool restartedInStep = false;
    for (size_t d : primaryDomains_) restartedInStep = restartedInStep || restartedSinceStep_[d];
    std::fill(restartedSinceStep_.begin(), restartedSinceStep_.end(), 0);
    std::fill(lostSinceStep_.begin(), lostSinceStep_.end(), 0);
    // A failed read leaves the counter at its last value and the next good read holds the gap's
    // energy, so an interval's energy is its own only where the reads at both of its ends
    // succeeded (one failing between them loses nothing: the counters are cumulative), and no
    // counter started again in it (that loses the energy before the restart). Spans over the
    // others settle unmeasured, not as the 0 J, or the whole gap's joules, read there.
    if (spans_) spans_->step(now, *attribution_, (flags & kFlagFinal) != 0, readFailedAtStep_ || readFailed || restartedInStep);
    readFailedAtStep_ = readFailed;
    std::fill(pendingDelta_.begin(), pendingDelta_.end(), 0);
    lastAttributionTime_ = now;
    sinceAttribution_ = 0;
    flags |= kFlagAttributed;
  }

  uint8_t* rec = ring_ ? ring_->beginWrite() : nullptr;
  if (rec) {
    put32(rec, uint32_t(now));
    put32(rec + 4, uint32_t(now >> 32));
    put32(rec + 8, seq_);
    put32(rec + 12, flags);
    const uint32_t stride = tracker_ ? kDomainBytesAttributed : kDomainBytes;
    const auto& domains = source_->domains();
    const std::vector<DomainParts>* parts = tracker_ ? &attribution_->partsUnlocked() : nullptr;
    for (size_t d = 0; d < nd; d++) {
      uint8_t* p = rec + kHeaderBytes + d * stride;
      uint64_t ticks = prevTicks_[d] - baseTicks_[d];
      putF64(p, double(ticks) * domains[d].unitJoules);
      put64(p + 8, ticks);
      put64(p + 16, readings_[d].raw);
      if (parts) {
        put64(p + 24, (*parts)[d].process);
        put64(p + 32, (*parts)[d].baseline);
        put64(p + 40, (*parts)[d].other);
      }
    }
    ring_->publish();
  }
  seq_++;
  samples_.fetch_add(1, std::memory_order_relaxed);
  // Totals and their time change together under a seqcount, so that totals() never pairs one
  // sample's energy with another's time (a power computed from them would spike).
  const uint32_t ts = totalsSeq_.load(std::memory_order_relaxed);
  totalsSeq_.store(ts + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  for (size_t d = 0; d < nd; d++) {
    totals_[d].store(prevTicks_[d] - baseTicks_[d], std::memory_order_relaxed);
    held_[d].store(readings_[d].failed, std::memory_order_relaxed);
  }
  lastSampleNs_.store(now, std::memory_order_relaxed);
  totalsSeq_.store(ts + 2, std::memory_order_release);
}

void Sampler::totals(std::vector<uint64_t>* ticks, uint64_t* timeNs, uint64_t* startNs, std::vector<uint8_t>* held) const {
  ticks->resize(readings_.size());
  if (held) held->resize(readings_.size());
  for (int attempt = 0;; attempt++) {
    const uint32_t before = totalsSeq_.load(std::memory_order_acquire);
    if (!(before & 1)) {
      *timeNs = lastSampleNs_.load(std::memory_order_relaxed);
      for (size_t d = 0; d < readings_.size(); d++) (*ticks)[d] = totals_[d].load(std::memory_order_relaxed);
      if (held) {
        for (size_t d = 0; d < readings_.size(); d++) (*held)[d] = held_[d].load(std::memory_order_relaxed);
      }
      std::atomic_thread_fence(std::memory_order_acquire);
      if (totalsSeq_.load(std::memory_order_relaxed) == before) break;
    }
    // The window is a few stores long; a writer preempted inside it is waited for.
    if (attempt >= 64) sched_yield();
  }
  *startNs = startNs_.load();
}

void Sampler::timing(SamplerTimingStats* out) const {
  out->samples = samples_.load(std::memory_order_relaxed);
  out->missedDeadlines = missed_.load(std::memory_order_relaxed);
  out->readErrors = readErrors_.load(std::memory_order_relaxed);
  out->counterRestarts = counterRestarts_.load(std::memory_order_relaxed);
  out->readErrorsByDomain.resize(readings_.size());
  out->unreadByDomain.resize(readings_.size());
  for (size_t d = 0; d < readings_.size(); d++) {
    out->readErrorsByDomain[d] = domainReadErrors_[d].load(std::memory_order_relaxed);
    out->unreadByDomain[d] = !domainRead_[d].load(std::memory_order_relaxed);
  }
  uint64_t start = startNs_.load();
  uint64_t end = running() ? monotonicNs() : stopNs_.load();
  out->runningNs = start && end > start ? end - start : 0;
  out->jitterCount = jitter_.count();
  out->jitterP50 = jitter_.quantile(0.50);
  out->jitterP99 = jitter_.quantile(0.99);
  out->jitterP999 = jitter_.quantile(0.999);
  out->jitterMax = jitter_.max();
  out->jitterMean = jitter_.mean();
  uint64_t n = std::min<uint64_t>(changeCount_.load(std::memory_order_relaxed), kPeriodWindow);
  out->hwUpdateObservations = changeCount_.load(std::memory_order_relaxed);
  if (n > 0) {
    std::vector<uint64_t> v(n);
    for (size_t i = 0; i < n; i++) v[i] = changePeriods_[i].load(std::memory_order_relaxed);
    std::nth_element(v.begin(), v.begin() + long(n / 2), v.end());
    out->hwUpdatePeriodNs = v[n / 2];
  }
  const uint64_t lastChange = lastAnyChangeNs_.load(std::memory_order_relaxed);
  const uint64_t lastSample = running() ? lastSampleNs_.load() : stopNs_.load();
  out->stillNs = start && lastSample > lastChange ? lastSample - lastChange : 0;
  out->longestStillNs = std::max(longestStillNs_.load(std::memory_order_relaxed), out->stillNs);
  out->threadCpuNs = running() ? threadCpuNs(thread_) : cpuNsAtStop_.load();
  out->tid = tid_.load();
  if (attribution_) {
    out->attributionSteps = attribution_->steps();
    out->lastAttributionNs = attribution_->lastStepNs();
  }
}

void Sampler::trackerStats(TrackerStats* out) const {
  // Not under trackerMu_: stats() is safe beside snapshot() (tracker.h), and the sampler thread
  // must not wait on it.
  if (tracker_) tracker_->stats(*out);
  out->backend = threadsBackend_;
}

bool Sampler::fillForBenchmark(uint64_t n) {
  if (running()) return false;
  for (uint64_t i = 0; i < n; i++) sample(monotonicNs(), 0, false);
  return true;
}

}  // namespace jouletrace
