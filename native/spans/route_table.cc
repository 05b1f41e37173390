#include "spans/route_table.h"

#include <algorithm>
#include <cmath>

namespace jouletrace {

void RouteTable::Recent::add(double v) {
  // Grown only while the window has never wrapped, so its values stay in arrival order.
  if (count == values.size() && values.size() < kRecent) values.resize(std::min(kRecent, std::max<size_t>(16, values.size() * 2)));
  values[count % values.size()] = v;
  count++;
}

void RouteTable::Recent::quantiles(const double* qs, double* out, size_t n, std::vector<double>& sorted) const {
  const size_t held = size_t(std::min<uint64_t>(count, values.size()));
  sorted.assign(values.begin(), values.begin() + long(held));
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < n; i++) {
    if (held == 0) {
      out[i] = 0;
      continue;
    }
    // The smallest value with at least q of the values at or below it.
    const double rank = std::ceil(qs[i] * double(held) - 1e-9) - 1;
    out[i] = sorted[size_t(std::min(double(held - 1), std::max(0.0, rank)))];
  }
}

void RouteTable::addLocked(const Add& a) {
  if (a.id == 0 || a.id >= kMaxRoutes || !std::isfinite(a.joules)) return;
  // A NaN would break the quantiles' sort (no strict weak order).
  const double durationNs = std::isfinite(a.durationNs) && a.durationNs > 0 ? a.durationNs : 0;
  Route& r = routes_[a.id];
  r.count++;
  if (a.incomplete) r.incomplete++;
  r.sum += a.joules;
  if (a.joules > r.max) r.max = a.joules;
  r.durationSumNs += durationNs;
  r.estimated = r.estimated || a.estimated;
  r.joules.add(a.joules);
  r.durations.add(durationNs);
}

void RouteTable::addAll(const std::vector<Add>& adds) {
  std::lock_guard<std::mutex> guard(mu_);
  for (const Add& a : adds) addLocked(a);
}

void RouteTable::add(uint32_t id, double joules, double durationNs, bool estimated, bool incomplete) {
  std::lock_guard<std::mutex> guard(mu_);
  addLocked(Add{id, joules, durationNs, estimated, incomplete});
}

void RouteTable::release(const int32_t* ids, size_t n) {
  std::lock_guard<std::mutex> guard(mu_);
  for (size_t i = 0; i < n; i++) {
    if (ids[i] > 0) routes_.erase(uint32_t(ids[i]));
  }
}

bool RouteTable::summary(uint32_t id, Summary* out) const {
  // The values are copied under the lock and sorted outside it: the sampler thread waits at most
  // for one route's copy (16 KiB each way), not for a scrape's sorting.
  Route copy;
  {
    std::lock_guard<std::mutex> guard(mu_);
    auto it = routes_.find(id);
    if (it == routes_.end() || it->second.count == 0) return false;
    copy = it->second;
  }
  std::vector<double> sorted;
  static constexpr double kJ[2] = {0.5, 0.99};
  static constexpr double kD[1] = {0.99};
  double jq[2], dq[1];
  copy.joules.quantiles(kJ, jq, 2, sorted);
  copy.durations.quantiles(kD, dq, 1, sorted);
  *out = Summary{double(copy.count), copy.sum, copy.max, jq[0], jq[1], copy.durationSumNs, dq[0], copy.estimated, double(copy.incomplete)};
  return true;
}

}  // namespace jouletrace
