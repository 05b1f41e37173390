// Domains read as the sum of several hardware counters: the dies of a multi-die Intel package,
// whose RAPL counters are die-scoped (Cascade Lake-AP; Linux's powercap makes a
// "package-N-die-M" zone and its perf PMU an event per die), and an AMD package's cores (msr).
// AMD's and Hygon's "dies" are never summed: their RAPL is package-scoped, and where Linux makes
// each CCD a die (6.10's CPUID 0x80000026 topology, until rapl_msrs_are_pkg_scope() in 6.12)
// its zones and events per CCD each read the same package counter.
// Each counter keeps its own wrap extension and the domain adds the extended totals, so one
// counter wrapping never loses a wrap. Every source files its counters here, one or several a
// domain.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "energy/source.h"

namespace jouletrace {

class CounterGroups {
 public:
  // Files counter `counter` under the domain (name, package). Returns true when that domain is
  // new: the caller adds its Domain then, so domains keep the order of their first counters.
  bool add(const std::string& name, int package, size_t counter) {
    if (restartedSinceWhole_.size() <= counter) restartedSinceWhole_.resize(counter + 1, 0);
    auto it = index_.find({name, package});
    if (it != index_.end()) {
      members_[it->second].push_back(counter);
      return false;
    }
    index_.emplace(std::make_pair(name, package), members_.size());
    members_.push_back({counter});
    lastGood_.push_back(LastGood{});
    return true;
  }

  bool has(const std::string& name, int package) const { return index_.count({name, package}) != 0; }

  // Counters of each domain, in domain order.
  const std::vector<std::vector<size_t>>& members() const { return members_; }

  // Each domain's reading from its counters (each with a WrapCounter `wrap`, and `failed` and
  // `restarted` flags for its last read): their last raw values and their extended totals,
  // added; failed if any of them failed, restarted if any of them started again, and a partial
  // restart where some did not since the domain's last read in which none failed. nowNs: the
  // read's time (WrapCounter::clockNs()).
  //
  // While a counter's read fails (not a restart, whose energy is lost rather than delayed), the
  // domain reads as the sum at its last read in which none failed: as a domain of one counter
  // holds its last value, so attribution holds its time until the failed counter's energy comes
  // (AttributionEngine::step()). Summed as read, the dies that answered moved the domain, each
  // interval of the gap was split with their energy alone, and the failed die's came whole at
  // its recovery, to whoever ran then. Totals are cumulative, so nothing is lost. For at most
  // kHoldNs: a counter that stays failed (its die's or core's CPUs offline) would hold the domain
  // for good; past that, the domain reads as its counters' sum again, and the failed one's energy
  // comes whole whenever it is back. Nor at a run's final read (releaseHolds()), which no later
  // read of the run follows to bring what the held sum leaves out.
  template <typename Counter>
  void sum(const std::vector<Counter>& counters, uint64_t nowNs, DomainReading* out) {
    for (size_t d = 0; d < members_.size(); d++) {
      DomainReading& r = out[d];
      r.raw = 0;
      r.ticks = 0;
      r.failed = false;
      r.restarted = false;
      bool missing = false;  // a counter whose read failed other than by a restart
      bool allRestarted = true;  // every counter, since the last read in which none failed
      for (size_t i : members_[d]) {
        r.raw += counters[i].wrap.last();
        r.ticks += counters[i].wrap.total();
        r.failed = r.failed || counters[i].failed;
        r.restarted = r.restarted || counters[i].restarted;
        missing = missing || (counters[i].failed && !counters[i].restarted);
        if (counters[i].restarted) restartedSinceWhole_[i] = 1;
        allRestarted = allRestarted && restartedSinceWhole_[i];
      }
      r.partialRestart = r.restarted && !allRestarted;
      if (!r.failed) {
        for (size_t i : members_[d]) restartedSinceWhole_[i] = 0;
      }
      LastGood& g = lastGood_[d];
      if (!missing || !g.known) {
        g.known = true;
        g.raw = r.raw;
        g.ticks = r.ticks;
      }
      if (!missing) {
        g.missingSinceNs = kNotMissing;
        continue;
      }
      if (g.missingSinceNs == kNotMissing) g.missingSinceNs = nowNs;
      if (holding_ && nowNs - g.missingSinceNs < kHoldNs) {
        r.raw = g.raw;
        r.ticks = g.ticks;
      }
    }
  }

  // Domain d's first counter whose last read failed, or nullptr (for EnergySource::readFailure()).
  template <typename Counter>
  const Counter* firstFailed(const std::vector<Counter>& counters, size_t d) const {
    if (d >= members_.size()) return nullptr;
    for (size_t i : members_[d]) {
      if (counters[i].failed) return &counters[i];
    }
    return nullptr;
  }

  // After WrapCounter::rebase(): each counter's next value is its reference, and the sum at the
  // next read the domain's (a sum held from before would bring the time between, its energy
  // nobody asked for, into the next run).
  void rebase() {
    for (LastGood& g : lastGood_) g = LastGood{};
    std::fill(restartedSinceWhole_.begin(), restartedSinceWhole_.end(), 0);
    holding_ = true;
  }

  // Until the next rebase(), sum() reports each domain as its counters' sum, held or not
  // (EnergySource::releaseHolds()): a run's final read.
  void releaseHolds() { holding_ = false; }

 private:
  static constexpr uint64_t kHoldNs = 1'000'000'000;
  static constexpr uint64_t kNotMissing = UINT64_MAX;
  // Per domain: its sum at its last read in which no counter failed (see sum()).
  struct LastGood {
    bool known = false;
    uint64_t raw = 0;
    uint64_t ticks = 0;
    uint64_t missingSinceNs = kNotMissing;  // the first failed read since, or kNotMissing
  };

  std::map<std::pair<std::string, int>, size_t> index_;
  std::vector<std::vector<size_t>> members_;
  std::vector<LastGood> lastGood_;
  // Per counter: it started again since its domain's last read in which none failed (see sum()).
  std::vector<uint8_t> restartedSinceWhole_;
  bool holding_ = true;
};

}  // namespace jouletrace
