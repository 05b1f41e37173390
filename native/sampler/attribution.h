// Splits each measured energy delta between the tracked threads, a baseline and everything
// else, in integer ticks so that the parts always sum to the delta exactly (invariant 2).
// Runs on the sampler thread; JavaScript reads the results through copies taken under a lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "energy/source.h"
#include "threads/tracker.h"

namespace jouletrace {

struct DomainParts {
  uint64_t total = 0;     // measured ticks attributed so far
  uint64_t process = 0;   // to tracked threads
  uint64_t baseline = 0;  // idle power × time, when a baseline is set
  uint64_t other = 0;     // other processes, and idle energy when no baseline is set
};

struct ThreadEnergy {
  // This row's number, never given to another (0 for the folded "(exited threads)"): a
  // tid that a later thread reuses gets a row of its own, and readers that turn the cumulative
  // figures into increases must tell the two apart.
  uint64_t id = 0;
  uint32_t tid = 0;
  uint32_t tgid = 0;
  std::string name;
  uint64_t onCpuNs = 0;         // since attribution started
  std::vector<uint64_t> ticks;  // per domain
  // Per domain: of the row's time on the domain's CPUs, what no energy was measured for, which
  // `ticks` therefore leave out: held by failed reads and let go of, at a counter's restart or
  // at the run's last step (see step()). Only ever grows, as the other figures.
  std::vector<uint64_t> unmeasuredNs;
  bool exited = false;
};

class AttributionEngine {
 public:
  // counted: the CPUs of cpuPackage that exist (presentCpus()), which alone count towards a
  // domain's number of CPUs; empty: all of them.
  AttributionEngine(const std::vector<Domain>& domains, const std::vector<int>& cpuPackage, const std::vector<bool>& counted = {});

  // Watts per domain (< 0: no baseline for that domain). Takes effect at the next step.
  void setBaselineWatts(const std::vector<double>& watts);
  std::vector<double> baselineWatts() const;
  // Sum of the baseline watts of `domains` (those with one), without copying the vector: the
  // span engine asks at every step on the sampler thread.
  double baselineWattsSum(const std::vector<size_t>& domains) const;

  // Starts afresh: the next step() only records `snap` as the reference point.
  void reset();

  // One interval: deltaTicks[d] is the energy measured in domain d since the previous step,
  // dtNs the interval's length, snap the tracker's cumulative figures at the interval's end.
  // readings (optional): the reads at the interval's end; a domain whose read failed and that
  // measured nothing is not split, and its interval goes into the next one's (see step()).
  // lost (optional, with readings): lost[d] nonzero where domain d lost what it held since the
  // previous step, at any read (the caller's to keep between its reads): a counter of it started
  // again and none carried on (a domain of one counter, or every one of a summed domain's; not
  // DomainReading::partialRestart). Its held intervals are let go of, and an interval that
  // measured nothing is not split at all.
  // last: the run's final step; what failed reads still hold is let go of, as no good read comes.
  // Time let go of is the rows' unmeasuredNs.
  // nowNs: the CLOCK_MONOTONIC time of the interval's end, which parts() and threads() give with
  // the figures (0 where the caller keeps no clock: a benchmark).
  void step(const uint64_t* deltaTicks, uint64_t dtNs, const TrackerSnapshot& snap, const DomainReading* readings = nullptr,
            const uint8_t* lost = nullptr, bool last = false, uint64_t nowNs = 0);

  // Cumulative parts per domain (consistent with each other: taken under the lock). timeNs
  // (optional): the time of the step they are as of. The parts and the rows move at steps only
  // (every attributionEvery samples, or later on a starved sampler), so a rate taken from two
  // reads divides by the steps' times, not by the samples'. held (optional): per domain, 1 where
  // its read failed at that step and its intervals since its last good read are held, not split
  // yet (their energy comes with its next good read): figures that stand still meanwhile.
  std::vector<DomainParts> parts(uint64_t* timeNs = nullptr, std::vector<uint8_t>* held = nullptr) const;
  // Lock-free variant for the sampler thread itself, which is the only writer.
  const std::vector<DomainParts>& partsUnlocked() const { return parts_; }
  std::vector<ThreadEnergy> threads(uint64_t* timeNs = nullptr, std::vector<uint8_t>* held = nullptr) const;
  uint64_t steps() const;
  // Sampler thread only (the engine's writer): the live thread with this tid, or the most recent
  // one that had it; nullptr when never seen.
  const ThreadEnergy* findThreadUnlocked(uint32_t tid) const;
  // Sampler thread only: the id the next row made will get. A row whose id is at least what
  // this said at some step was made after it, for a thread first seen since.
  uint64_t nextRowIdUnlocked() const { return nextRowId_; }
  // Nanoseconds the last step took (for stats and benchmarks).
  uint64_t lastStepNs() const { return lastStepNs_.load(std::memory_order_relaxed); }

 private:
  struct ThreadState {
    bool used = false;
    uint64_t generation = 0;
    uint32_t tid = 0;
    uint64_t prevOnCpu = 0;
    uint64_t prevPkgNs[kMaxPackages] = {0};
    size_t resultIndex = 0;  // into results_
  };
  struct RowTime {
    size_t result;  // results_ index
    uint64_t ns;    // on the domain's CPUs
  };
  // A domain's intervals not split yet, because its read failed at their end (see step()).
  struct Held {
    bool on = false;
    uint64_t dtNs = 0;
    uint64_t busyNs = 0;         // on the domain's CPUs
    std::vector<uint64_t> rowNs;  // per results_ index, as RowTime::ns
  };
  struct Share {
    size_t result;
    uint64_t fraction;  // of a tick, in 2^-32 ticks: what rounding down left of this interval's share
    int64_t priority;   // that, plus what the row was owed before (rowOwed_)
  };

  uint64_t domainTimes(size_t d);
  void stepStateLocked(uint64_t* timeNs, std::vector<uint8_t>* held) const;
  void letGoOfHeld(size_t d);
  void splitDomain(size_t d, uint64_t delta, uint64_t dtNs, uint64_t busy);
  uint64_t otherBusy(size_t d, uint64_t busy, uint64_t tracked, uint64_t dtNs);

  std::vector<Domain> domains_;
  std::vector<int> cpuPackage_;
  std::vector<bool> platformWide_;  // psys: all packages

  mutable std::mutex mu_;
  std::vector<double> baselineWatts_;
  std::vector<double> baselineCarry_;
  // Per domain: the process's share not given yet, under a tick, in 2^-32 ticks (splitDomain()).
  std::vector<uint64_t> processCarry_;
  // Per row × domain (rows as results_): the row's exact share so far less the ticks given to it,
  // in 2^-32 ticks, so that a thread whose share is a small fraction of a tick is not passed
  // over for good when the process's whole ticks are handed out.
  std::vector<int64_t> rowOwed_;
  std::vector<Held> held_;  // per domain
  // Per domain (see otherBusy()): other tasks' busy time, averaged (ns per ns) where the CPU
  // figures are stepped; other time given out less other time read, since the start.
  std::vector<double> otherRate_;
  std::vector<double> otherGap_;
  std::vector<uint64_t> domainCpus_;
  uint64_t busyQuantumNs_ = 0;  // of the last snapshot
  std::vector<DomainParts> parts_;
  std::vector<ThreadEnergy> results_;
  std::vector<ThreadState> slots_;
  std::unordered_map<uint32_t, size_t> byTid_;  // tid → results_ index
  std::vector<uint64_t> prevCpuBusy_;
  bool primed_ = false;
  size_t exitedCount_ = 0;  // results_ entries with exited set
  uint64_t nextRowId_ = 1;  // never reset: ids stay unique across runs
  uint64_t steps_ = 0;
  uint64_t stepTimeNs_ = 0;  // the nowNs of the last step (see parts())
  std::atomic<uint64_t> lastStepNs_{0};  // written by the sampler thread, read by stats()

  // Scratch, reused every step (no allocation in steady state).
  std::vector<uint64_t> busyByPkg_;         // per package, this interval
  std::vector<uint64_t> threadPkgDelta_;    // [thread index in snap][package]
  std::vector<size_t> threadResult_;        // snap thread index → results_ index
  std::vector<RowTime> times_;              // of the domain being split, rows with time only
  std::vector<Share> shares_;
};

}  // namespace jouletrace
