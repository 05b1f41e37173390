#include "sampler/attribution.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "napi_util.h"

namespace jouletrace {

namespace {
using u128 = unsigned __int128;
// Exited threads kept individually before they are folded into one "(exited)" entry, so a
// server that churns threads for days keeps bounded memory.
constexpr size_t kMaxExitedKept = 4096;
// Where the CPU figures are stepped (/proc/stat's 10 ms ticks), the time over which other tasks'
// busy time is averaged (eight ticks, as the model source averages its time per jiffy), and how
// far, in ticks × √CPUs, what is given out may run ahead of what was read (see otherBusy()).
constexpr double kOtherSmoothNs = 80e6;
constexpr double kOtherBandQuanta = 2;
// Tracked time that the CPU figures may owe, per CPU of the domain, beyond that band: far more
// than read skew (ns) or a tick's lag. Beyond, tracked time runs ahead of busy time for good (a
// hypervisor's steal counted in one and not the other, a thread's time charged to the package it
// last ran on): carried on, it would keep other tasks' later work from them.
constexpr uint64_t kBusyDebtPerCpuNs = 100'000'000;

// One tick in the fixed point of what rounding leaves (processCarry_, rowOwed_).
constexpr uint64_t kTick = uint64_t(1) << 32;
// rest / busy (rest < busy), a fraction of a tick, in 2^-32 ticks rounded down: 64-bit division
// where it fits (busy time of an interval under 4.3 s), 128-bit beyond.
inline uint64_t fractionOfTick(uint64_t rest, uint64_t busy) {
  return busy < kTick ? (rest << 32) / busy : uint64_t((u128(rest) << 32) / busy);
}
}  // namespace

AttributionEngine::AttributionEngine(const std::vector<Domain>& domains, const std::vector<int>& cpuPackage,
                                     const std::vector<bool>& counted)
    : domains_(domains), cpuPackage_(cpuPackage) {
  platformWide_.resize(domains_.size());
  for (size_t d = 0; d < domains_.size(); d++) platformWide_[d] = domains_[d].name == "psys";
  baselineWatts_.assign(domains_.size(), -1.0);
  for (size_t d = 0; d < domains_.size(); d++) {
    if (domains_[d].estimated && domains_[d].idleWatts >= 0) baselineWatts_[d] = domains_[d].idleWatts;
  }
  baselineCarry_.assign(domains_.size(), 0.0);
  processCarry_.assign(domains_.size(), 0);
  held_.assign(domains_.size(), Held{});
  otherRate_.assign(domains_.size(), 0.0);
  otherGap_.assign(domains_.size(), 0.0);
  // Counted as step() folds the CPUs into packages. Only CPUs that exist: the table covers every
  // possible id, a VM's hot-plug slots too, and 128 counted for 2 vCPUs widened the bands and
  // clamps that otherBusy() scales by the number of CPUs some sixtyfold.
  uint64_t cpusOf[kMaxPackages] = {0};
  uint64_t cpusInAll = 0;
  for (size_t c = 0; c < cpuPackage_.size(); c++) {
    if (c < counted.size() && !counted[c]) continue;
    const int p = cpuPackage_[c];
    cpusOf[p < 0 || p >= kMaxPackages ? 0 : p]++;
    cpusInAll++;
  }
  domainCpus_.assign(domains_.size(), 1);
  for (size_t d = 0; d < domains_.size(); d++) {
    const int pkg = std::min(std::max(domains_[d].package, 0), kMaxPackages - 1);
    domainCpus_[d] = std::max<uint64_t>(platformWide_[d] ? cpusInAll : cpusOf[pkg], 1);
  }
  parts_.assign(domains_.size(), DomainParts{});
  busyByPkg_.assign(kMaxPackages, 0);
}

void AttributionEngine::setBaselineWatts(const std::vector<double>& watts) {
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t d = 0; d < baselineWatts_.size() && d < watts.size(); d++) baselineWatts_[d] = watts[d];
}

std::vector<double> AttributionEngine::baselineWatts() const {
  std::lock_guard<std::mutex> lock(mu_);
  return baselineWatts_;
}

double AttributionEngine::baselineWattsSum(const std::vector<size_t>& domains) const {
  std::lock_guard<std::mutex> lock(mu_);
  double sum = 0;
  for (size_t d : domains) {
    if (d < baselineWatts_.size() && baselineWatts_[d] > 0) sum += baselineWatts_[d];
  }
  return sum;
}

void AttributionEngine::reset() {
  std::lock_guard<std::mutex> lock(mu_);
  parts_.assign(domains_.size(), DomainParts{});
  baselineCarry_.assign(domains_.size(), 0.0);
  processCarry_.assign(domains_.size(), 0);
  held_.assign(domains_.size(), Held{});
  otherRate_.assign(domains_.size(), 0.0);
  otherGap_.assign(domains_.size(), 0.0);
  results_.clear();
  rowOwed_.clear();
  exitedCount_ = 0;
  byTid_.clear();
  for (auto& s : slots_) s = ThreadState{};
  prevCpuBusy_.clear();
  primed_ = false;
  steps_ = 0;
  stepTimeNs_ = 0;
}

void AttributionEngine::step(const uint64_t* deltaTicks, uint64_t dtNs, const TrackerSnapshot& snap, const DomainReading* readings,
                             const uint8_t* lost, bool last, uint64_t nowNs) {
  uint64_t t0 = monotonicNs();
  std::lock_guard<std::mutex> lock(mu_);
  stepTimeNs_ = nowNs;
  const size_t nThreads = snap.threads.size();
  busyQuantumNs_ = snap.busyQuantumNs;

  // Per-package busy time of this interval.
  std::fill(busyByPkg_.begin(), busyByPkg_.end(), 0);
  if (prevCpuBusy_.size() < snap.cpus.size()) prevCpuBusy_.resize(snap.cpus.size(), 0);
  for (size_t c = 0; c < snap.cpus.size(); c++) {
    uint64_t busy = snap.cpus[c].busyNs;
    uint64_t prev = prevCpuBusy_[c];
    if (primed_ && busy > prev) {
      int p = c < cpuPackage_.size() ? cpuPackage_[c] : 0;
      if (p < 0 || p >= kMaxPackages) p = 0;
      busyByPkg_[size_t(p)] += busy - prev;
    }
    if (busy > prev || !primed_) prevCpuBusy_[c] = busy;
  }

  // Per-thread on-CPU time of this interval, by package; new threads get a result entry.
  threadPkgDelta_.assign(nThreads * kMaxPackages, 0);
  threadResult_.assign(nThreads, SIZE_MAX);
  for (size_t i = 0; i < nThreads; i++) {
    const ThreadTimes& t = snap.threads[i];
    if (t.slot >= slots_.size()) slots_.resize(size_t(t.slot) + 1);
    ThreadState& s = slots_[t.slot];
    if (s.used && s.generation == t.generation && s.tid != t.tid) {
      // The same thread under its leader's tid: a thread that calls exec() takes it (Linux's
      // de_thread), and the eBPF side keeps its slot and generation. Counted on, not from zero
      // (its whole history was counted twice, and its old row stayed, live, for good).
      auto old = byTid_.find(s.tid);
      if (old != byTid_.end() && old->second == s.resultIndex) byTid_.erase(old);
      s.tid = t.tid;
      results_[s.resultIndex].tid = t.tid;
      byTid_[t.tid] = s.resultIndex;
    }
    if (!primed_ && t.exited) {
      // Lived and ended while no run measured it (between a stop() and this start()): nothing
      // of it is this run's, and a row for it would say it ran in it.
      s = ThreadState{};
      threadResult_[i] = SIZE_MAX;
      continue;
    }
    if (!s.used || s.generation != t.generation) {
      // A slot seen for the first time, or reused by a new thread: it starts from zero, except
      // at the very first step, whose figures are the reference point (time before tracking).
      s = ThreadState{};
      s.used = true;
      s.generation = t.generation;
      s.tid = t.tid;
      if (!primed_) {
        s.prevOnCpu = t.onCpuNs;
        std::memcpy(s.prevPkgNs, t.pkgNs, sizeof s.prevPkgNs);
      }
      ThreadEnergy r;
      r.id = nextRowId_++;
      r.tid = t.tid;
      r.tgid = t.tgid;
      r.name.assign(t.comm, strnlen(t.comm, kCommLen));
      r.ticks.assign(domains_.size(), 0);
      r.unmeasuredNs.assign(domains_.size(), 0);
      s.resultIndex = results_.size();
      byTid_[t.tid] = s.resultIndex;
      results_.push_back(std::move(r));
      rowOwed_.resize(results_.size() * domains_.size(), 0);
    }
    ThreadEnergy& r = results_[s.resultIndex];
    if (t.comm[0]) {
      size_t n = strnlen(t.comm, kCommLen);
      if (r.name.size() != n || r.name.compare(0, n, t.comm, n) != 0) r.name.assign(t.comm, n);
    }
    if (t.onCpuNs > s.prevOnCpu) {
      r.onCpuNs += t.onCpuNs - s.prevOnCpu;
      s.prevOnCpu = t.onCpuNs;
    }
    for (int p = 0; p < kMaxPackages; p++) {
      if (t.pkgNs[p] > s.prevPkgNs[p]) {
        threadPkgDelta_[i * kMaxPackages + size_t(p)] = t.pkgNs[p] - s.prevPkgNs[p];
        s.prevPkgNs[p] = t.pkgNs[p];
      }
    }
    threadResult_[i] = s.resultIndex;
    if (t.exited) {
      if (!r.exited) exitedCount_++;
      r.exited = true;
      s.used = false;  // the slot may be reused; the result entry stays
    }
  }

  if (primed_) {
    for (size_t d = 0; d < domains_.size(); d++) {
      uint64_t busy = domainTimes(d);
      uint64_t dt = dtNs;
      // A read that failed holds the counter at its last value, and the next good one brings the
      // whole gap's energy. Split interval by interval, the gap's time went against 0 J and its
      // energy to whoever ran in the interval that read it (a thread that ran through 500 ms of
      // failed reads got nothing, one that started 50 ms before the recovery all of it). So a
      // domain whose read failed is not split; its interval's times wait for the next good read.
      // One whose read failed after a good one between two steps did measure (up to that read):
      // split as usual.
      Held& h = held_[d];
      bool hold = readings && readings[d].failed && deltaTicks[d] == 0;
      if (readings && lost && lost[d]) {
        // A counter of the domain started again since the last step: the energy from its last
        // good read to the restart is lost, and no read brings it. The held gap's time (its
        // energy was that) is let go of rather than split against the energy after the restart,
        // which is not its; and an interval that measured nothing, its energy unknown, is split
        // over nothing: the threads' and CPUs' time in it is charged nothing, as its energy is in
        // no total (the rows' time in both goes to their unmeasuredNs). Not where another counter
        // of a summed domain carried on (a die that answered through another's failure and
        // restart): its energy over the held time is in the delta, and split over one step's time
        // it went to whoever ran in that step, and the baseline's share of the gap to no one.
        letGoOfHeld(d);
        if (hold) {
          for (const RowTime& x : times_) results_[x.result].unmeasuredNs[d] += x.ns;
          continue;
        }
      }
      if (hold || h.on) {
        if (h.rowNs.size() < results_.size()) h.rowNs.resize(results_.size(), 0);
        for (const RowTime& x : times_) h.rowNs[x.result] += x.ns;
        h.busyNs += busy;
        h.dtNs += dt;
        h.on = true;
      }
      if (hold) {
        // The run ends with the domain's reads failing: no good read comes to bring the energy.
        if (last) letGoOfHeld(d);
        continue;
      }
      if (h.on) {
        times_.clear();
        for (size_t r = 0; r < h.rowNs.size(); r++) {
          if (h.rowNs[r]) times_.push_back(RowTime{r, h.rowNs[r]});
        }
        busy = h.busyNs;
        dt = h.dtNs;
        h.on = false;
        h.busyNs = h.dtNs = 0;
        std::fill(h.rowNs.begin(), h.rowNs.end(), 0);
      }
      splitDomain(d, deltaTicks[d], dt, busy);
    }
  }
  primed_ = true;
  steps_++;

  // Bound memory: fold the oldest exited threads into one aggregate entry.
  if (exitedCount_ > kMaxExitedKept) {
    const size_t exitedCount = exitedCount_;
    ThreadEnergy folded;
    folded.name = "(exited threads)";
    folded.exited = true;
    folded.ticks.assign(domains_.size(), 0);
    folded.unmeasuredNs.assign(domains_.size(), 0);
    std::vector<ThreadEnergy> kept;
    std::vector<int64_t> keptOwed;  // the folded row is owed nothing: it never runs again
    std::vector<size_t> remap(results_.size(), SIZE_MAX);
    size_t toFold = exitedCount - kMaxExitedKept / 2;
    for (size_t i = 0; i < results_.size(); i++) {
      ThreadEnergy& r = results_[i];
      // The oldest exited threads, up to toFold, and the folded row of an earlier fold.
      const bool earlierFold = r.name == "(exited threads)" && r.exited && r.tid == 0;
      const bool oldExited = r.exited && toFold > 0 && r.name != "(exited threads)";
      if (earlierFold || oldExited) {
        if (oldExited) toFold--;
        folded.onCpuNs += r.onCpuNs;
        for (size_t d = 0; d < domains_.size(); d++) {
          folded.ticks[d] += r.ticks[d];
          folded.unmeasuredNs[d] += r.unmeasuredNs[d];
        }
        continue;
      }
      remap[i] = kept.size();
      kept.push_back(std::move(r));
      keptOwed.insert(keptOwed.end(), rowOwed_.begin() + long(i * domains_.size()), rowOwed_.begin() + long((i + 1) * domains_.size()));
    }
    kept.push_back(std::move(folded));
    keptOwed.resize(kept.size() * domains_.size(), 0);
    for (auto& s : slots_) {
      if (s.used) s.resultIndex = remap[s.resultIndex];
    }
    for (Held& h : held_) {
      if (h.rowNs.empty()) continue;
      std::vector<uint64_t> rowNs(kept.size(), 0);
      for (size_t i = 0; i < h.rowNs.size(); i++) rowNs[remap[i] != SIZE_MAX ? remap[i] : kept.size() - 1] += h.rowNs[i];
      h.rowNs = std::move(rowNs);
    }
    results_ = std::move(kept);
    rowOwed_ = std::move(keptOwed);
    exitedCount_ = 0;
    for (const auto& r : results_) exitedCount_ += r.exited;
    byTid_.clear();
    for (size_t i = 0; i < results_.size(); i++) {
      if (results_[i].tid != 0) byTid_[results_[i].tid] = i;
    }
  }
  lastStepNs_.store(monotonicNs() - t0, std::memory_order_relaxed);
}

// Domain d's held intervals, whose energy no read will bring: their rows' time there is unmeasured.
void AttributionEngine::letGoOfHeld(size_t d) {
  Held& h = held_[d];
  for (size_t r = 0; r < h.rowNs.size(); r++) {
    results_[r].unmeasuredNs[d] += h.rowNs[r];
    h.rowNs[r] = 0;
  }
  h.on = false;
  h.busyNs = h.dtNs = 0;
}

// How long a baseline shortfall is carried (see splitDomain): counters update every ~1 ms.
constexpr uint64_t kBaselineCarryNs = 20'000'000;

// Fills times_ with the rows that ran on domain d's CPUs in this interval, and their time there;
// returns the CPUs' busy time.
uint64_t AttributionEngine::domainTimes(size_t d) {
  const bool all = platformWide_[d];
  // Folded as cpuPackageMap() folds the CPUs' ids, so a domain of package 9 meets its CPUs.
  const int pkg = std::min(std::max(domains_[d].package, 0), kMaxPackages - 1);
  times_.clear();
  for (size_t i = 0; i < threadResult_.size(); i++) {
    const uint64_t* row = &threadPkgDelta_[i * kMaxPackages];
    uint64_t t = row[pkg];
    if (all) {
      t = 0;
      for (int p = 0; p < kMaxPackages; p++) t += row[p];
    }
    if (t > 0 && threadResult_[i] != SIZE_MAX) times_.push_back(RowTime{threadResult_[i], t});
  }
  uint64_t busy = 0;
  if (all) {
    for (uint64_t b : busyByPkg_) busy += b;
  } else {
    busy = busyByPkg_[size_t(pkg)];
  }
  return busy;
}

void AttributionEngine::splitDomain(size_t d, uint64_t delta, uint64_t dtNs, uint64_t busy) {
  DomainParts& parts = parts_[d];
  parts.total += delta;

  uint64_t baseline = 0;
  if (baselineWatts_[d] > 0 && domains_[d].unitJoules > 0) {
    double want = baselineWatts_[d] * double(dtNs) * 1e-9 / domains_[d].unitJoules + baselineCarry_[d];
    uint64_t whole = want > 0 ? uint64_t(want) : 0;
    if (whole >= delta) {
      // Measured less than the baseline predicts: the baseline takes it all, and the shortfall
      // is owed by the next intervals. Mostly a counter that did not update in this interval
      // (RAPL every ~1 ms: at 10 kHz, nine intervals in ten): dropped, the baseline got a tenth
      // of its energy. Owed for at most kBaselineCarryNs of baseline power and two ticks: past
      // that, the machine really draws less than its baseline, and later intervals must not pay
      // for it. The two ticks are the counter's rounding (it shows whole ticks: what the baseline
      // was owed when last paid in full, under one, and what the counter has not shown yet, under
      // one): capped at 20 ms alone, a counter of 1 J units gave a baseline under 50 W nothing.
      baseline = delta;
      const double cap = baselineWatts_[d] * double(kBaselineCarryNs) * 1e-9 / domains_[d].unitJoules + 2;
      baselineCarry_[d] = std::min(want - double(delta), cap);
    } else {
      baseline = whole;
      baselineCarry_[d] = want - double(whole);
    }
  }
  parts.baseline += baseline;
  uint64_t dynamic = delta - baseline;

  // Busy time and tracked-thread time (times_, from domainTimes()) on the CPUs this domain covers.
  uint64_t tracked = 0;
  for (const RowTime& x : times_) tracked += x.ns;
  busy = tracked + otherBusy(d, busy, tracked, dtNs);
  if (busy == 0 || dynamic == 0) {
    parts.other += dynamic;
    return;
  }

  // The process's exact share is dynamic × tracked / busy. Rounded down at every interval, with
  // the rest sent to other, it lost half a tick an interval: 5-20% of its energy at a 1-2% share
  // on a 61 µJ counter, all of it on a 1 J one (psys of Sapphire Rapids). What rounding leaves is
  // carried instead, and makes a whole tick with the next intervals' (never beyond dynamic: the
  // exact share is under it whenever something is left), so the process's ticks stay within one
  // of its exact share over the run.
  const u128 exactShare = u128(dynamic) * tracked;
  uint64_t processShare = uint64_t(exactShare / busy);
  if (const uint64_t rest = uint64_t(exactShare % busy)) {
    uint64_t& carry = processCarry_[d];
    carry += fractionOfTick(rest, busy);
    if (carry >= kTick) {
      carry -= kTick;
      processShare++;
    }
  }
  // 64-bit arithmetic whenever dynamic × t cannot overflow (the usual case: an interval's ticks
  // fit in 32 bits and a thread's ns in an interval too); 128-bit division costs 3-4× more.
  const bool narrow = tracked == 0 || dynamic <= UINT64_MAX / tracked;
  const size_t nd = domains_.size();
  // The threads' remainders as fractions of a tick by one multiplication each, not a second
  // division: (rem × ⌊2^64 / busy⌋) >> 32 is rem / busy in 2^-32 ticks, short by under one of them
  // (they only rank the threads for the ticks left; busy > 1 here, or nothing is left).
  const uint64_t reciprocal = busy > 1 ? uint64_t((u128(1) << 64) / busy) : 0;
  uint64_t given = 0;
  shares_.clear();
  for (const RowTime& x : times_) {
    const uint64_t t = x.ns;
    uint64_t whole, rem;
    if (narrow) {
      uint64_t q = dynamic * t;
      whole = q / busy;
      rem = q % busy;
    } else {
      u128 q = u128(dynamic) * t;
      whole = uint64_t(q / busy);
      rem = uint64_t(q % busy);
    }
    const size_t r = x.result;
    results_[r].ticks[d] += whole;
    given += whole;
    const uint64_t fraction = uint64_t((u128(rem) * reciprocal) >> 32);
    shares_.push_back(Share{r, fraction, rowOwed_[r * nd + d] + int64_t(fraction)});
  }
  // The ticks left by rounding down (at most one per thread with a remainder) go one each to the
  // threads owed most: what rounding left of their share now and in earlier intervals, less the
  // ticks they got beyond it. By this interval's remainder alone, the thread with the larger
  // time took every tick of a coarse counter (1 J), and one with a steady small share got none.
  // Ties to the earlier-created thread, so the split is deterministic. A selection, not a sort: O(n).
  uint64_t leftover = processShare - given;
  if (leftover > 0 && leftover < shares_.size()) {
    std::nth_element(shares_.begin(), shares_.begin() + long(leftover), shares_.end(), [](const Share& a, const Share& b) {
      return a.priority != b.priority ? a.priority > b.priority : a.result < b.result;
    });
  }
  for (size_t k = 0; k < shares_.size(); k++) {
    int64_t& owed = rowOwed_[shares_[k].result * nd + d];
    owed += int64_t(shares_[k].fraction);
    if (k < leftover) {
      results_[shares_[k].result].ticks[d] += 1;
      owed -= int64_t(kTick);
    }
  }
  parts.process += processShare;
  parts.other += dynamic - processShare;
}

// Busy time of untracked tasks ("other") in this interval on domain d's CPUs, never below 0: the
// threads' share never exceeds 1. What is given out follows what is read, cumulatively: `gap` is
// other time given so far less other time read so far.
//
// Exact figures (eBPF): each interval gets what it read, less what is owed. Tracked time beyond
// an interval's busy time (a few hundred ns of read skew) gives the threads the whole interval
// and is owed by later intervals' other time, up to kBusyDebtPerCpuNs per CPU.
//
// Stepped figures (procfs: /proc/stat's busy time in ticks, the threads' time in ns): an interval
// read 0, 10 or 20 ms of busy time per CPU, and split interval by interval that moved a share
// (a ratio) by whole ticks: a process alone at 50% got 75% of the CPU's energy, one at 5% beside
// others' 45% five times its part. So other time is given out at its average rate (80 ms), kept
// within a band of what was read: never less than read (a task that starts is given its time
// within a tick or two), and at most kOtherBandQuanta ticks × √CPUs more (the read figures' own
// error: a tick's rounding per CPU, and the kernel's sampling of busy time at each tick), nor
// more than the CPUs the threads left idle. An average alone, tried first, went on giving other
// tasks' time to intervals after they stopped: a process whose work followed theirs lost 20–30%.
// bench/attribution-split.mjs simulates both against the truth.
uint64_t AttributionEngine::otherBusy(size_t d, uint64_t busy, uint64_t tracked, uint64_t dtNs) {
  const double seen = double(busy) - double(tracked);
  const double cpus = double(domainCpus_[d]);
  double& gap = otherGap_[d];
  double want = seen - gap;
  double most = std::numeric_limits<double>::infinity();
  double band = 0;
  if (busyQuantumNs_ > 0 && dtNs > 0) {
    band = kOtherBandQuanta * double(busyQuantumNs_) * std::sqrt(cpus);
    // A CPU that comes online brings its lifetime's busy time in one interval: at most all the
    // domain's CPUs busy, in the average.
    double& rate = otherRate_[d];
    rate += (1 - std::exp(-double(dtNs) / kOtherSmoothNs)) * (std::clamp(seen / double(dtNs), -cpus, cpus) - rate);
    want = std::clamp(rate * double(dtNs), want, want + band);
    most = std::max(0.0, cpus * double(dtNs) - double(tracked));
  }
  const double given = std::round(std::clamp(want, 0.0, most));
  // Beyond the band, the two figures disagree for good (a hypervisor's steal counted in one and
  // not the other, a CPU online): carried on, the difference would keep other tasks' later work
  // from them, or give them the threads'.
  gap = std::clamp(gap + given - seen, -band, band + cpus * double(kBusyDebtPerCpuNs));
  return uint64_t(given);
}

void AttributionEngine::stepStateLocked(uint64_t* timeNs, std::vector<uint8_t>* held) const {
  if (timeNs) *timeNs = stepTimeNs_;
  if (held) {
    held->resize(held_.size());
    for (size_t d = 0; d < held_.size(); d++) (*held)[d] = held_[d].on ? 1 : 0;
  }
}

std::vector<DomainParts> AttributionEngine::parts(uint64_t* timeNs, std::vector<uint8_t>* held) const {
  std::lock_guard<std::mutex> lock(mu_);
  stepStateLocked(timeNs, held);
  return parts_;
}

std::vector<ThreadEnergy> AttributionEngine::threads(uint64_t* timeNs, std::vector<uint8_t>* held) const {
  std::lock_guard<std::mutex> lock(mu_);
  stepStateLocked(timeNs, held);
  return results_;
}

const ThreadEnergy* AttributionEngine::findThreadUnlocked(uint32_t tid) const {
  auto it = byTid_.find(tid);
  return it == byTid_.end() ? nullptr : &results_[it->second];
}

uint64_t AttributionEngine::steps() const {
  std::lock_guard<std::mutex> lock(mu_);
  return steps_;
}

}  // namespace jouletrace
