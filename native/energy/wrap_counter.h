// Extends a hardware counter that wraps at `modulus` into a 64-bit cumulative count. Exact as
// long as it is updated at least twice per wrap period (probe() reports the period, and half of
// it as the longest gap between reads): a value below the last that would mean more than half a
// wrap is a counter that started again (a driver reloaded, a resume), not a wrap. So is a delta
// no domain could draw in the time since the counter last moved: a restart that lands less than
// half a wrap below the last value looks like a wrap of up to half the range.
#pragma once

#include <cstdint>
#include <ctime>

namespace jouletrace {

class WrapCounter {
 public:
  // The most power one counter can show, in watts. Far above any RAPL domain (the largest
  // packages, EPYC 9005 and Xeon 6, are rated 500 W; psys, a whole platform, a few kW), and
  // compared with the time since the counter last moved, so a real delta never reaches it however
  // long the reads stalled or the counter lagged: a wrap in that time is that time's energy,
  // whose average power is the domain's. (A stall past a whole wrap period loses wraps, at any bound; past half of one the
  // value reads as a restart already.) At this power the shortest wrap, 2^32 units of 15.3 µJ,
  // takes 3.3 s. A restart read as a wrap instead holds up to half the range in one interval:
  // 131 kJ for 2^32 units of 61 µJ, 32.8 kJ for 15.3 µJ, 13 MW and 3.3 MW over 10 ms.
  static constexpr double kMaxWatts = 20000;
  // Time allowed on top of the elapsed time: a counter updates about once a millisecond, so the
  // energy it shows at a change may have built up a little before the read that first showed the
  // last value. A restart of more than 200 J (3.3 M units of 61 µJ) is still caught at 10 kHz.
  static constexpr uint64_t kSlackNs = 10'000'000;

  // The clock update() takes: CLOCK_BOOTTIME counts a suspend, during which s2idle counters go
  // on counting (CLOCK_MONOTONIC would make a night's idle energy look like an instant's).
  static uint64_t clockNs() {
    timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
  }

  // modulus: 2^32 for RAPL MSRs, max_energy_range_uj + 1 for powercap, 0 for 2^64 (perf's
  // 64-bit count, in the kernel's 2^-32 J units, passes 2^64 after 2^32 J: 248 days at 200 W).
  // shift: total() counts 2^shift raw units a tick, the remainder carried, so that a total of a
  // counter that fine does not overflow 64 bits where the counter itself wraps.
  // unitJoules: joules per raw unit, for the bound on power (0: no bound).
  explicit WrapCounter(uint64_t modulus = 0, unsigned shift = 0, double unitJoules = 0)
      : modulus_(modulus),
        shift_(shift),
        mask_(shift == 0 ? 0 : (uint64_t(1) << shift) - 1),
        maxUnitsPerNs_(unitJoules > 0 ? kMaxWatts / unitJoules * 1e-9 : 0) {}

  // readFromNs: a time no later than the read of raw (clockNs() taken before it).
  void reset(uint64_t raw, uint64_t readFromNs) {
    last_ = raw;
    lastNs_ = readFromNs;
    total_ = 0;
    carry_ = 0;
    primed_ = true;
  }

  // The next value becomes the reference and adds nothing; the total so far stays. For a
  // counter that sat unread for longer than the half wrap update() can tell from a restart
  // (between a sampler's stop() and its next start()), whose energy meanwhile nobody asked for.
  void rebase() { primed_ = false; }

  // Feeds a new raw value, read between readFromNs and readByNs (clockNs() before and after the
  // read). false: the counter started again (it went backwards by more than a wrap allows, or
  // moved more than kMaxWatts allows since the last value); nothing is added, the next values
  // count from this one, and the caller reports the read as failed rather than a jump of up to a
  // whole wrap (262 kJ for a 2^32 counter of 61 µJ units) or zero without a word. perf's kernel
  // takes the 32-bit hardware counter's change as signed (rapl_event_update sign-extends it): a
  // restart to near 0 from the upper half of its range moves the 64-bit count forward by up to
  // half a wrap, caught by the bound alone; one from the lower half moves it back, below the last
  // value, or, where the count was still smaller than that step, past 0 to just under 2^64, a
  // jump the bound refuses.
  // The bound's time runs from readFromNs of the read that first showed the last value to this
  // read's readByNs, so it is never shorter than the time whose energy the delta holds: with one
  // time taken before a read, a reader stopped between the clock and the read (a cgroup freezer,
  // SIGSTOP, CFS throttling) read the pause's energy over one interval's time, and at 500 W a
  // pause of half a second was refused whole. The last value's time is the early one, as a
  // pause after a read and before its clock holds energy the next read shows. Longer by a pause
  // outside the read, the time only loosens the bound.
  bool update(uint64_t raw, uint64_t readFromNs, uint64_t readByNs) {
    if (!primed_) {
      last_ = raw;
      lastNs_ = readFromNs;
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
    const uint64_t elapsed = readByNs > lastNs_ ? readByNs - lastNs_ : 0;
    if (moved && maxUnitsPerNs_ > 0 && double(delta) > maxUnitsPerNs_ * double(elapsed + kSlackNs)) {
      moved = false;
      delta = 0;
    }
    // The bound runs from the read that first showed the last value, not from the last read:
    // a counter that stood still for a while (countersStillUs) and then caught up in one step
    // holds the energy of all that time, which a bound from the last read took for a restart
    // (600 ms still at 500 W, then 300 J at once: dropped). A live counter moves about once a
    // millisecond, so a restart still meets a bound of a few milliseconds.
    if (raw != last_) lastNs_ = readFromNs;
    last_ = raw;
    carry_ += delta & mask_;
    total_ += (delta >> shift_) + (carry_ >> shift_);
    carry_ &= mask_;
    return moved;
  }
  // A read whose time is known exactly (tests).
  bool update(uint64_t raw, uint64_t nowNs) { return update(raw, nowNs, nowNs); }

  uint64_t total() const { return total_; }
  uint64_t last() const { return last_; }
  uint64_t modulus() const { return modulus_; }

 private:
  uint64_t modulus_;
  unsigned shift_;
  uint64_t mask_;
  double maxUnitsPerNs_;  // kMaxWatts in raw units per nanosecond; 0: unbounded
  uint64_t last_ = 0;
  uint64_t lastNs_ = 0;  // when last_ was first read (a time no later than that read)
  uint64_t total_ = 0;
  uint64_t carry_ = 0;  // raw units short of a tick
  bool primed_ = false;
};

}  // namespace jouletrace
