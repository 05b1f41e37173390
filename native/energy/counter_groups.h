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

#include <cstddef>
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
    auto it = index_.find({name, package});
    if (it != index_.end()) {
      members_[it->second].push_back(counter);
      return false;
    }
    index_.emplace(std::make_pair(name, package), members_.size());
    members_.push_back({counter});
    return true;
  }

  bool has(const std::string& name, int package) const { return index_.count({name, package}) != 0; }

  // Counters of each domain, in domain order.
  const std::vector<std::vector<size_t>>& members() const { return members_; }

  // Each domain's reading from its counters (each with a WrapCounter `wrap`, and `failed` and
  // `restarted` flags for its last read): their last raw values and their extended totals,
  // added; failed if any of them failed, restarted if any of them started again.
  template <typename Counter>
  void sum(const std::vector<Counter>& counters, DomainReading* out) const {
    for (size_t d = 0; d < members_.size(); d++) {
      out[d].raw = 0;
      out[d].ticks = 0;
      out[d].failed = false;
      out[d].restarted = false;
      for (size_t i : members_[d]) {
        out[d].raw += counters[i].wrap.last();
        out[d].ticks += counters[i].wrap.total();
        out[d].failed = out[d].failed || counters[i].failed;
        out[d].restarted = out[d].restarted || counters[i].restarted;
      }
    }
  }

 private:
  std::map<std::pair<std::string, int>, size_t> index_;
  std::vector<std::vector<size_t>> members_;
};

}  // namespace jouletrace
