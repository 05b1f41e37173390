// Extends a hardware counter that wraps at `modulus` into a 64-bit cumulative count. Exact as
// long as it is updated at least once per wrap period (the period probe() reports).
#pragma once

#include <cstdint>

namespace jouletrace {

class WrapCounter {
 public:
  // modulus: 2^32 for RAPL MSRs, max_energy_range_uj + 1 for powercap, 0 for counters that
  // never wrap (64-bit perf counts, the model).
  explicit WrapCounter(uint64_t modulus = 0) : modulus_(modulus) {}

  void reset(uint64_t raw) {
    last_ = raw;
    total_ = 0;
    primed_ = true;
  }

  // Feeds a new raw value; returns the ticks added since the previous one.
  uint64_t update(uint64_t raw) {
    if (!primed_) {
      reset(raw);
      return 0;
    }
    uint64_t delta;
    if (raw >= last_) {
      delta = raw - last_;
    } else if (modulus_ != 0) {
      delta = (modulus_ - last_) + raw;
    } else {
      // A counter that should never wrap went backwards (driver reset): take no energy rather
      // than an absurd 2^64 jump; the next reads continue from the new value.
      delta = 0;
    }
    last_ = raw;
    total_ += delta;
    return delta;
  }

  uint64_t total() const { return total_; }
  uint64_t last() const { return last_; }
  uint64_t modulus() const { return modulus_; }

 private:
  uint64_t modulus_;
  uint64_t last_ = 0;
  uint64_t total_ = 0;
  bool primed_ = false;
};

}  // namespace jouletrace
