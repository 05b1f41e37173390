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
// Time over which the busy time of untracked tasks is averaged where the CPU figures are stepped
// (/proc/stat's 10 ms ticks): eight ticks, as the model source averages its time per jiffy.
constexpr double kOtherSmoothNs = 80e6;
// Tracked time that the CPU figures may owe, per CPU of the domain: those eight ticks (what the
// average holds back) and two more (/proc/stat's busy time runs up to a kernel tick behind and
// is rounded down to a USER_HZ tick). Beyond, tracked time runs ahead of busy time for good (a
// hypervisor's steal counted in one and not the other, a thread's time charged to the package it
// last ran on): carried on, it would keep other tasks' later work from them.
constexpr uint64_t kBusyDebtPerCpuNs = 100'000'000;
}  // namespace

AttributionEngine::AttributionEngine(const std::vector<Domain>& domains, const std::vector<int>& cpuPackage)
    : domains_(domains), cpuPackage_(cpuPackage) {
  platformWide_.resize(domains_.size());
  for (size_t d = 0; d < domains_.size(); d++) platformWide_[d] = domains_[d].name == "psys";
  baselineWatts_.assign(domains_.size(), -1.0);
  for (size_t d = 0; d < domains_.size(); d++) {
    if (domains_[d].estimated && domains_[d].idleWatts >= 0) baselineWatts_[d] = domains_[d].idleWatts;
  }
  baselineCarry_.assign(domains_.size(), 0.0);
  otherRate_.assign(domains_.size(), std::numeric_limits<double>::quiet_NaN());
  busyDebt_.assign(domains_.size(), 0);
  // Counted as step() folds the CPUs into packages.
  uint64_t cpusOf[kMaxPackages] = {0};
  for (int p : cpuPackage_) cpusOf[p < 0 || p >= kMaxPackages ? 0 : p]++;
  domainCpus_.assign(domains_.size(), 1);
  for (size_t d = 0; d < domains_.size(); d++) {
    const int pkg = std::min(std::max(domains_[d].package, 0), kMaxPackages - 1);
    domainCpus_[d] = std::max<uint64_t>(platformWide_[d] ? cpuPackage_.size() : cpusOf[pkg], 1);
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
  otherRate_.assign(domains_.size(), std::numeric_limits<double>::quiet_NaN());
  busyDebt_.assign(domains_.size(), 0);
  results_.clear();
  exitedCount_ = 0;
  byTid_.clear();
  for (auto& s : slots_) s = ThreadState{};
  prevCpuBusy_.clear();
  primed_ = false;
  steps_ = 0;
}

void AttributionEngine::step(const uint64_t* deltaTicks, uint64_t dtNs, const TrackerSnapshot& snap) {
  uint64_t t0 = monotonicNs();
  std::lock_guard<std::mutex> lock(mu_);
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
      s.resultIndex = results_.size();
      byTid_[t.tid] = s.resultIndex;
      results_.push_back(std::move(r));
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
    for (size_t d = 0; d < domains_.size(); d++) splitDomain(d, deltaTicks[d], dtNs);
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
    std::vector<ThreadEnergy> kept;
    std::vector<size_t> remap(results_.size(), SIZE_MAX);
    size_t toFold = exitedCount - kMaxExitedKept / 2;
    for (size_t i = 0; i < results_.size(); i++) {
      ThreadEnergy& r = results_[i];
      if (r.exited && toFold > 0 && r.name != "(exited threads)") {
        toFold--;
        folded.onCpuNs += r.onCpuNs;
        for (size_t d = 0; d < domains_.size(); d++) folded.ticks[d] += r.ticks[d];
        continue;
      }
      if (r.name == "(exited threads)" && r.exited && r.tid == 0) {
        folded.onCpuNs += r.onCpuNs;
        for (size_t d = 0; d < domains_.size(); d++) folded.ticks[d] += r.ticks[d];
        continue;
      }
      remap[i] = kept.size();
      kept.push_back(std::move(r));
    }
    kept.push_back(std::move(folded));
    for (auto& s : slots_) {
      if (s.used) s.resultIndex = remap[s.resultIndex];
    }
    results_ = std::move(kept);
    exitedCount_ = 0;
    for (const auto& r : results_) exitedCount_ += r.exited;
    byTid_.clear();
    for (size_t i = 0; i < results_.size(); i++) {
      if (results_[i].tid != 0) byTid_[results_[i].tid] = i;
    }
  }
  lastStepNs_.store(monotonicNs() - t0, std::memory_order_relaxed);
}

// How long a baseline shortfall is carried (see splitDomain): counters update every ~1 ms.
constexpr uint64_t kBaselineCarryNs = 20'000'000;

void AttributionEngine::splitDomain(size_t d, uint64_t delta, uint64_t dtNs) {
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
      // of its energy. Owed for at most kBaselineCarryNs of baseline power: past that, the
      // machine really draws less than its baseline, and later intervals must not pay for it.
      baseline = delta;
      const double cap = baselineWatts_[d] * double(kBaselineCarryNs) * 1e-9 / domains_[d].unitJoules;
      baselineCarry_[d] = std::min(want - double(delta), cap);
    } else {
      baseline = whole;
      baselineCarry_[d] = want - double(whole);
    }
  }
  parts.baseline += baseline;
  uint64_t dynamic = delta - baseline;

  // Busy time and tracked-thread time on the CPUs this domain covers.
  const bool all = platformWide_[d];
  // Folded as cpuPackageMap() folds the CPUs' ids, so a domain of package 9 meets its CPUs.
  const int pkg = std::min(std::max(domains_[d].package, 0), kMaxPackages - 1);
  auto threadTime = [&](size_t i) -> uint64_t {
    const uint64_t* row = &threadPkgDelta_[i * kMaxPackages];
    if (!all) return row[pkg];
    uint64_t s = 0;
    for (int p = 0; p < kMaxPackages; p++) s += row[p];
    return s;
  };
  uint64_t busy = 0;
  if (all) {
    for (uint64_t b : busyByPkg_) busy += b;
  } else {
    busy = busyByPkg_[size_t(pkg)];
  }
  const size_t n = threadResult_.size();
  uint64_t tracked = 0;
  for (size_t i = 0; i < n; i++) tracked += threadTime(i);
  busy = tracked + otherBusy(d, busy, tracked, dtNs);
  if (busy == 0 || dynamic == 0) {
    parts.other += dynamic;
    return;
  }

  const uint64_t processShare = uint64_t(u128(dynamic) * tracked / busy);
  // 64-bit arithmetic whenever dynamic × t cannot overflow (the usual case: an interval's ticks
  // fit in 32 bits and a thread's ns in an interval too); 128-bit division costs 3-4× more.
  const bool narrow = tracked == 0 || dynamic <= UINT64_MAX / tracked;
  uint64_t given = 0;
  shares_.clear();
  for (size_t i = 0; i < n; i++) {
    uint64_t t = threadTime(i);
    if (t == 0) continue;
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
    results_[threadResult_[i]].ticks[d] += whole;
    given += whole;
    shares_.push_back(Share{threadResult_[i], rem});
  }
  // The ticks left by rounding down go one each to the largest remainders; ties to the
  // earlier-created thread, so the split is deterministic. A selection, not a sort: O(n).
  uint64_t leftover = processShare - given;
  if (leftover > 0) {
    auto byRemainder = [](const Share& a, const Share& b) {
      return a.remainder != b.remainder ? a.remainder > b.remainder : a.result < b.result;
    };
    if (leftover < shares_.size()) {
      std::nth_element(shares_.begin(), shares_.begin() + long(leftover), shares_.end(), byRemainder);
    }
    for (size_t k = 0; k < shares_.size() && leftover > 0; k++, leftover--) results_[shares_[k].result].ticks[d] += 1;
  }
  parts.process += processShare;
  parts.other += dynamic - processShare;
}

// Busy time of untracked tasks in this interval on domain d's CPUs: what the CPUs' busy time
// leaves beyond the tracked threads' time, never below 0 (the threads' share never exceeds 1).
// Tracked time beyond the busy time is owed, and paid from the next intervals' other time;
// thrown away, it went to other for good. With eBPF it is a few hundred ns of read skew. With
// procfs, busy time comes in 10 ms ticks and thread time in ns: a process alone on a CPU at 50%
// read 0 or 10 ms busy per 10 ms interval against its 5 ms, and got 75% of the CPU's energy
// (model source: 50%). Stepped busy time is also averaged, its untracked part only, so that the
// process's own bursts stay its own: a share is a ratio, one tick more or less moved another
// task's 2 or 3 ms by all of it, and an interval read too low weighs more than one read too high.
// Simulated, 10 ms ticks against 10 ms intervals, process share / truth, before → after: alone at
// 50% 0.75 → 0.98; 10% beside others' 20%: 2.2 → 1.2; 5% beside 45%: 5.2 → 1.1 (energy following
// true busy time; following the ticks, as the model source's does: 0.5, 0.3, 0.5 → 0.98, 0.87,
// 0.93).
uint64_t AttributionEngine::otherBusy(size_t d, uint64_t busy, uint64_t tracked, uint64_t dtNs) {
  int64_t other;
  if (busyQuantumNs_ > 0 && dtNs > 0) {
    // At most the domain's CPUs all busy: a CPU that comes online brings its lifetime's busy time
    // in one interval, which averaged in would leave the process nothing for a second.
    const double cpus = double(domainCpus_[d]);
    const double rate = std::min(std::max((double(busy) - double(tracked)) / double(dtNs), -cpus), cpus);
    double& avg = otherRate_[d];
    avg = std::isnan(avg) ? rate : avg + (1 - std::exp(-double(dtNs) / kOtherSmoothNs)) * (rate - avg);
    other = int64_t(std::llround(avg * double(dtNs)));
  } else {
    other = int64_t(busy) - int64_t(tracked);
  }
  uint64_t& debt = busyDebt_[d];
  if (other < 0) {
    debt = std::min(debt + uint64_t(-other), domainCpus_[d] * kBusyDebtPerCpuNs);
    return 0;
  }
  const uint64_t pay = std::min(debt, uint64_t(other));
  debt -= pay;
  return uint64_t(other) - pay;
}

std::vector<DomainParts> AttributionEngine::parts() const {
  std::lock_guard<std::mutex> lock(mu_);
  return parts_;
}

std::vector<ThreadEnergy> AttributionEngine::threads() const {
  std::lock_guard<std::mutex> lock(mu_);
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
