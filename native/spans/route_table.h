// Per-route request aggregates, kept by the sampler thread as it settles requests, so that the
// JavaScript thread serving them does no per-request work for routes() (at tens of thousands of
// requests a second, one request's numbers into its route's summary on that thread cost about a
// fifth of what request accounting added to it: bench/RESULTS.md).
//
// One table per span channel. JavaScript numbers each (method, route) pair of its trackers (ids
// from 1) and writes the id into a request's end event; the span engine adds the request here
// when it settles. The JavaScript handle of the channel holds the table too, so routes() still
// reads it once the channel or its sampler is closed.
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

namespace jouletrace {

class RouteTable {
 public:
  // Ids are numbered by JavaScript; anything larger is not a route of ours and is ignored.
  static constexpr uint32_t kMaxRoutes = 1u << 22;
  // Quantiles are exact (nearest rank) over each route's most recent values, as for span labels
  // (src/summaries.ts).
  static constexpr size_t kRecent = 2048;

  struct Summary {
    double count, sum, max, p50, p99, durationSumNs, durationP99Ns;
    bool estimated;
  };

  // Sampler thread: add() under a lock held for a whole step's requests.
  std::unique_lock<std::mutex> lock() { return std::unique_lock<std::mutex>(mu_); }
  void addLocked(uint32_t id, double joules, double durationNs, bool estimated);
  // JavaScript thread, for a request the engine could not aggregate (settled before its end).
  void add(uint32_t id, double joules, double durationNs, bool estimated);
  // false: no request of this id was added.
  bool summary(uint32_t id, Summary* out) const;

 private:
  // The latest kRecent values, grown by doubling: a route seen a few times costs bytes, not
  // 16 KiB.
  struct Recent {
    std::vector<double> values;
    uint64_t count = 0;
    void add(double v);
    // Nearest rank, as RecentValues.quantiles(); sorted is scratch.
    void quantiles(const double* qs, double* out, size_t n, std::vector<double>& sorted) const;
  };
  struct Route {
    uint64_t count = 0;
    double sum = 0, max = 0, durationSumNs = 0;
    bool estimated = false;
    Recent joules, durations;
  };

  mutable std::mutex mu_;
  std::vector<Route> routes_;  // by id
};

}  // namespace jouletrace
