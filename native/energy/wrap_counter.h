// Extends a hardware counter that wraps at `modulus` into a 64-bit cumulative count. Exact as
// long as it is updated at least twice per wrap period (probe() reports the period, and half of
// it as the longest gap between reads): a value below the last that would mean more than half a
// wrap is a counter that started again (a driver reloaded, a resume), not a wrap.
#pragma once

#include <cstdint>

namespace jouletrace {

class WrapCounter {
 public:
  // modulus: 2^32 for RAPL MSRs, max_energy_range_uj + 1 for powercap, 0 for 2^64 (perf's
  // 64-bit count, in the kernel's 2^-32 J units, passes 2^64 after 2^32 J: 248 days at 200 W).
  // shift: total() counts 2^shift raw units a tick, the remainder carried, so that a total of a
  // counter that fine does not overflow 64 bits where the counter itself wraps.
  explicit WrapCounter(uint64_t modulus = 0, unsigned shift = 0)
      : modulus_(modulus), shift_(shift), mask_(shift == 0 ? 0 : (uint64_t(1) << shift) - 1) {}

  void reset(uint64_t raw) {
    last_ = raw;
    total_ = 0;
    carry_ = 0;
    primed_ = true;
  }

  // The next value becomes the reference and adds nothing; the total so far stays. For a
  // counter that sat unread for longer than the half wrap update() can tell from a restart
  // (between a sampler's stop() and its next start()), whose energy meanwhile nobody asked for.
  void rebase() { primed_ = false; }

  // Feeds a new raw value. false: the counter started again (it went backwards by more than a
  // wrap allows); nothing is added, the next values count from this one, and the caller reports
  // the read as failed rather than a jump of up to a whole wrap (262 kJ for a 2^32 counter of
  // 61 µJ units) or zero without a word.
  bool update(uint64_t raw) {
    if (!primed_) {
      last_ = raw;
      primed_ = true;
      return true;
    }
    bool moved = true;
    uint64_t delta = 0;
    if (raw >= last_) {
      delta = raw - last_;
    } else if (modulus_ == 0 && last_ - raw >= (uint64_t(1) << 63)) {
      delta = raw - last_;  // modulo 2^64
    } else if (modulus_ != 0 && last_ < modulus_ && (modulus_ - last_) + raw <= modulus_ / 2) {
      delta = (modulus_ - last_) + raw;
    } else {
      moved = false;
    }
    last_ = raw;
    carry_ += delta & mask_;
    total_ += (delta >> shift_) + (carry_ >> shift_);
    carry_ &= mask_;
    return moved;
  }

  uint64_t total() const { return total_; }
  uint64_t last() const { return last_; }
  uint64_t modulus() const { return modulus_; }

 private:
  uint64_t modulus_;
  unsigned shift_;
  uint64_t mask_;
  uint64_t last_ = 0;
  uint64_t total_ = 0;
  uint64_t carry_ = 0;  // raw units short of a tick
  bool primed_ = false;
};

}  // namespace jouletrace
