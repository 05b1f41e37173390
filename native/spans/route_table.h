// Per-route request aggregates, kept by the sampler thread as it settles requests, so that the
// JavaScript thread serving them does no per-request work for routes() (at tens of thousands of
// requests a second, one request's numbers into its route's summary on that thread cost about a
// fifth of what request accounting added to it: bench/RESULTS.md).
//
// One table per span channel. JavaScript numbers each (method, route) pair of its trackers (ids
// from 1) and writes the id into a request's begin event, or its end event where the route is
// known only then; the span engine adds the request here when it settles. The JavaScript handle
// of the channel holds the table too, so routes() still reads it once the channel or its sampler
// is closed. A tracker garbage-collected lets go of its routes (release()).
#pragma once

#include <cstdint>
#include <mutex>
#include <unordered_map>
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
    double incomplete;  // of count, those measured in part (RequestRecord.incomplete)
  };

  struct Add {
    uint32_t id;
    double joules, durationNs;
    bool estimated;
    bool incomplete;
  };
  // Sampler thread: a step's requests, under one lock.
  void addAll(const std::vector<Add>& adds);
  // JavaScript thread, for a request the engine could not aggregate (settled before its end, or
  // exact mode).
  void add(uint32_t id, double joules, double durationNs, bool estimated, bool incomplete);
  // false: no request of this id was added.
  bool summary(uint32_t id, Summary* out) const;
  // A collected tracker's routes: their memory goes (ids are not given out again).
  void release(const int32_t* ids, size_t n);

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
    uint64_t count = 0, incomplete = 0;
    double sum = 0, max = 0, durationSumNs = 0;
    bool estimated = false;
    Recent joules, durations;
  };

  void addLocked(const Add& a);

  mutable std::mutex mu_;
  // By id. A map, not a vector indexed by id: released routes give their memory back, and an id
  // read from JavaScript-writable memory costs one entry whatever its value.
  std::unordered_map<uint32_t, Route> routes_;
};

}  // namespace jouletrace
