// Fixed-memory histogram of non-negative nanosecond values with bounded relative error, for
// scheduling jitter: 100 ns resolution below 1 ms, 10 µs resolution up to 100 ms, an overflow
// bucket, and the exact maximum. Written by the sampler thread, read (approximately
// consistently) by JavaScript; relaxed atomics keep that well defined.
#pragma once

#include <atomic>
#include <cmath>
#include <cstdint>

namespace jouletrace {

class LatencyHistogram {
 public:
  static constexpr uint64_t kFineStep = 100;         // ns
  static constexpr uint64_t kFineLimit = 1000000;    // 1 ms
  static constexpr uint64_t kCoarseStep = 10000;     // 10 µs
  static constexpr uint64_t kCoarseLimit = 100000000;  // 100 ms
  static constexpr uint32_t kFine = kFineLimit / kFineStep;                        // 10,000
  static constexpr uint32_t kCoarse = (kCoarseLimit - kFineLimit) / kCoarseStep;   // 9,900
  static constexpr uint32_t kBuckets = kFine + kCoarse + 1;

  void record(uint64_t ns) {
    buckets_[bucketOf(ns)].fetch_add(1, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(ns, std::memory_order_relaxed);
    uint64_t m = max_.load(std::memory_order_relaxed);
    if (ns > m) max_.store(ns, std::memory_order_relaxed);
  }

  void reset() {
    for (auto& b : buckets_) b.store(0, std::memory_order_relaxed);
    count_.store(0, std::memory_order_relaxed);
    sum_.store(0, std::memory_order_relaxed);
    max_.store(0, std::memory_order_relaxed);
  }

  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  uint64_t max() const { return max_.load(std::memory_order_relaxed); }
  double mean() const {
    uint64_t c = count();
    return c ? double(sum_.load(std::memory_order_relaxed)) / double(c) : 0;
  }

  // Upper edge of the bucket holding quantile q (0..1), capped at the exact maximum.
  uint64_t quantile(double q) const {
    uint64_t total = 0;
    for (const auto& b : buckets_) total += b.load(std::memory_order_relaxed);
    if (total == 0) return 0;
    // Nearest rank, 0-based: the ceil(q·N)-th smallest (p99 of 100 samples is the 99th, not the
    // largest).
    uint64_t rank = uint64_t(std::ceil(q * double(total)));
    rank = rank == 0 ? 0 : rank - 1;
    if (rank >= total) rank = total - 1;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < kBuckets; i++) {
      seen += buckets_[i].load(std::memory_order_relaxed);
      if (seen > rank) {
        uint64_t edge = upperEdge(i);
        uint64_t m = max();
        return edge < m ? edge : m;
      }
    }
    return max();
  }

 private:
  static uint32_t bucketOf(uint64_t ns) {
    if (ns < kFineLimit) return uint32_t(ns / kFineStep);
    if (ns < kCoarseLimit) return kFine + uint32_t((ns - kFineLimit) / kCoarseStep);
    return kBuckets - 1;
  }
  static uint64_t upperEdge(uint32_t i) {
    if (i < kFine) return (uint64_t(i) + 1) * kFineStep;
    if (i < kBuckets - 1) return kFineLimit + (uint64_t(i - kFine) + 1) * kCoarseStep;
    return UINT64_MAX;
  }

  // 64-bit: the busiest bucket of a 10 kHz sampler passes 2^32 in five days, and the quantiles
  // of wrapped counts are nonsense.
  std::atomic<uint64_t> buckets_[kBuckets] = {};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_{0};
  std::atomic<uint64_t> max_{0};
};

}  // namespace jouletrace
