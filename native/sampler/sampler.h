// The sampler: a native thread that reads an energy source at a fixed cadence (absolute
// deadlines on CLOCK_MONOTONIC), keeps exact 64-bit totals, runs attribution, and publishes
// fixed-size records into a ring that JavaScript reads without copying. It never touches V8.
#pragma once

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "energy/source.h"
#include "sampler/attribution.h"
#include "sampler/latency_histogram.h"
#include "sampler/ring.h"
#include "spans/span_engine.h"
#include "threads/target_process.h"
#include "threads/tracker.h"

namespace jouletrace {

// Record layout (little-endian, documented in the README):
//   header, 16 bytes: u32 timeLo, u32 timeHi (CLOCK_MONOTONIC ns), u32 seq, u32 flags
//   per domain, kDomainBytes (or kDomainBytesAttributed when threads are tracked):
//     f64 joules since start, u64 ticks since start, u64 raw counter
//     [u64 process ticks, u64 baseline ticks, u64 other ticks — cumulative, attributed records only]
constexpr uint32_t kHeaderBytes = 16;
constexpr uint32_t kDomainBytes = 24;
constexpr uint32_t kDomainBytesAttributed = 48;

enum RecordFlags : uint32_t {
  kFlagChanged = 1u << 0,     // some counter changed since the previous sample
  kFlagReadError = 1u << 1,   // a domain could not be read; its figures are carried over
  kFlagEstimated = 1u << 2,   // the source is an estimate (model)
  kFlagLate = 1u << 3,        // deadlines were missed just before this sample
  kFlagAttributed = 1u << 4,  // attribution ran at this sample: process+baseline+other == ticks
  kFlagFinal = 1u << 5,       // the sample taken by stop()
};

struct SamplerConfig {
  std::string source = "auto";
  SourceOptions sourceOptions;
  uint64_t intervalNs = 1000000;
  uint32_t ringCapacity = 65536;  // 0: no ring
  // The largest ring in bytes, 0 for no limit: JavaScript's largest buffer, which the ring is one of.
  uint64_t maxRingBytes = 0;
  int cpu = -1;               // pin the sampler thread; -1 = no pinning
  int realtimePriority = 0;   // SCHED_FIFO priority; 0 = normal scheduling
  OverflowPolicy overflow = OverflowPolicy::DropNewest;
  std::string threads = "off";  // "auto", "bpf", "procfs", "off"
  int pid = 0;
  bool followChildren = false;  // also track processes the tracked one forks (bpf only)
  std::string repairSwitchIns = "auto";  // bpf: see TrackerOptions
  uint32_t maxThreads = 4096;  // tracker slots
  bool targetWatchProc = false;  // tests: watch the tracked process's exit through /proc, not a pidfd
  uint32_t spanHistorySteps = 0;  // tests: the span history's steps (0: 10 s of intervals, SpanEngine)
};

struct SamplerError {
  std::string code;
  std::string message;
};

struct SamplerTimingStats {
  uint64_t samples = 0;
  uint64_t missedDeadlines = 0;
  uint64_t readErrors = 0;
  uint64_t counterRestarts = 0;  // of readErrors, those where a counter started again
  // Per domain (in domains() order): the samples whose read failed for it, and whether no read of
  // it has succeeded in this run (it counts from its first good read: 0 J until then).
  std::vector<uint64_t> readErrorsByDomain;
  std::vector<uint8_t> unreadByDomain;
  uint64_t runningNs = 0;
  uint64_t jitterCount = 0;
  uint64_t jitterP50 = 0, jitterP99 = 0, jitterP999 = 0, jitterMax = 0;
  double jitterMean = 0;
  uint64_t hwUpdatePeriodNs = 0;  // median time between counter changes; 0 until observed
  uint64_t hwUpdateObservations = 0;
  // Since any counter of the source last changed (to the last sample of a stopped run), and the
  // longest such stretch of the run: real RAPL counters move about every millisecond, so a long
  // one is energy that reads as 0 J (a hypervisor that stopped updating them, say).
  uint64_t stillNs = 0, longestStillNs = 0;
  uint64_t threadCpuNs = 0;       // CPU time the sampler thread has used (since start)
  int tid = 0;
  uint64_t attributionSteps = 0;
  uint64_t lastAttributionNs = 0;
};

class Sampler {
 public:
  static std::unique_ptr<Sampler> create(const SamplerConfig& cfg, SamplerError* err);
  ~Sampler();
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  bool start(SamplerError* err);
  void stop();  // joins; takes one final sample
  bool running() const { return running_.load(std::memory_order_acquire); }
  // The run ended because the tracked process exited (see TargetExitWatch): the thread took its
  // final sample and ended by itself. stop() still joins it; start() is refused from then on.
  bool targetExited() const { return targetExited_.load(std::memory_order_acquire); }
  // "pidfd" or "proc" while the tracked process's exit is watched; "" when not (this process
  // tracked, followChildren, or neither way available).
  const char* targetWatch() const { return targetWatch_ ? targetWatch_->method() : ""; }

  const EnergySource& source() const { return *source_; }
  const std::vector<SourceStatus>& skippedSources() const { return skipped_; }
  // Null when the sampler was made with ringCapacity 0.
  const std::shared_ptr<RingBuffer>& ring() const { return ring_; }
  uint32_t recordSize() const { return recordSize_; }
  bool attributed() const { return tracker_ != nullptr; }
  // Whether the attribution's thread names follow renames (ThreadTracker::namesFresh()).
  bool threadNamesFresh() const { return tracker_ && tracker_->namesFresh(); }
  // Test hook: ThreadTracker::dropRenameHook().
  int dropRenameHook() { return tracker_ ? tracker_->dropRenameHook() : -ENOTSUP; }
  const std::string& threadsBackend() const { return threadsBackend_; }
  const std::string& threadsFallbackReason() const { return threadsFallback_; }
  // CPUs whose package could not be found when the sampler was made: attributed as package 0's.
  const std::vector<int>& unknownPackageCpus() const { return unknownPackageCpus_; }
  uint32_t attributionEvery() const { return attributionEvery_; }
  // 0 when spans are unavailable (no thread tracking, or another process is tracked).
  uint64_t spanEngineId() const { return spanEngineId_; }
  uint64_t spansSettled() const { return spans_ ? spans_->settledCount() : 0; }
  uint64_t callbacksSettled() const { return spans_ ? spans_->callbacksSettled() : 0; }

  // Ticks since start() per domain, and the time of the sample they belong to.
  // held (optional): per domain, whether the latest read failed, so that its total stands at its
  // last good read's (taken with the totals, under the same seqcount).
  void totals(std::vector<uint64_t>* ticks, uint64_t* timeNs, uint64_t* startNs, std::vector<uint8_t>* held = nullptr) const;
  void timing(SamplerTimingStats* out) const;
  void trackerStats(TrackerStats* out) const;
  // Benchmarks only: takes n real samples on the calling thread while stopped, as fast as it can.
  bool fillForBenchmark(uint64_t n);
  AttributionEngine* attribution() { return attribution_.get(); }
  // The sampler thread of the current or last run (0 before the first).
  uint32_t threadTid() const { return uint32_t(tid_.load()); }

  static constexpr const char* kThreadName = "jouletrace";

 private:
  Sampler() = default;
  static void* threadMain(void* self);
  void run();
  bool createThread(SamplerError* err);
  void sample(uint64_t now, uint32_t extraFlags, bool forceAttribution);
  bool openTracker(SamplerError* err);
  bool targetGone(uint64_t now);

  SamplerConfig cfg_;
  std::unique_ptr<EnergySource> source_;
  std::vector<SourceStatus> skipped_;
  std::unique_ptr<ThreadTracker> tracker_;
  std::unique_ptr<TargetExitWatch> targetWatch_;
  uint64_t lastTargetCheckNs_ = 0;  // sampler thread
  std::atomic<bool> targetExited_{false};
  std::string threadsBackend_ = "off";
  std::string threadsFallback_;
  std::unique_ptr<AttributionEngine> attribution_;
  std::shared_ptr<SpanEngine> spans_;
  uint64_t spanEngineId_ = 0;
  std::vector<int> cpuPackage_;
  std::vector<int> unknownPackageCpus_;
  std::shared_ptr<RingBuffer> ring_;
  uint32_t recordSize_ = 0;
  uint32_t attributionEvery_ = 1;

  pthread_t thread_{};
  bool joinable_ = false;
  std::atomic<bool> running_{false};
  std::atomic<bool> stopRequested_{false};
  // The thread is created before the run is set up (so a failure leaves the last run intact)
  // and waits here until start() has set it up.
  std::mutex gateMu_;
  std::condition_variable gateCv_;
  bool gateOpen_ = false;
  std::atomic<int> tid_{0};

  // Sampler-thread state.
  std::vector<DomainReading> readings_;
  std::vector<uint64_t> baseTicks_;
  std::vector<uint64_t> prevTicks_;
  std::vector<uint64_t> prevRaw_;
  std::vector<uint64_t> pendingDelta_;
  // Per domain: a counter of it started again since the last attribution step (its energy from
  // its last good read to the restart is lost); and, of those, one in which no counter of the
  // domain carried on (not DomainReading::partialRestart), so that its held time's energy is
  // lost (see AttributionEngine::step()).
  std::vector<uint8_t> restartedSinceStep_;
  std::vector<uint8_t> lostSinceStep_;
  // The primary domains (every package, else psys, else the first): an attribution step waits
  // until each has moved (see sample()).
  std::vector<size_t> primaryDomains_;
  TrackerSnapshot snap_;
  uint64_t lastAttributionTime_ = 0;
  // The last attribution step's sample could not be read: the next interval starts from a held
  // value (see sample()).
  bool readFailedAtStep_ = false;
  uint32_t sinceAttribution_ = 0;
  uint64_t lastChangeNs_ = 0;  // of domain 0, for hwUpdatePeriodNs; lastAnyChangeNs_ is any domain's
  uint32_t seq_ = 0;

  // Shared with JavaScript readers.
  std::unique_ptr<std::atomic<uint64_t>[]> totals_;
  std::atomic<uint64_t> lastSampleNs_{0};
  std::atomic<uint32_t> totalsSeq_{0};  // odd while totals_, held_ and lastSampleNs_ are being written
  // Per domain: its latest read failed (its total is its last good read's).
  std::unique_ptr<std::atomic<bool>[]> held_;
  std::atomic<uint64_t> startNs_{0};
  std::atomic<uint64_t> stopNs_{0};
  std::atomic<uint64_t> samples_{0};
  std::atomic<uint64_t> missed_{0};
  std::atomic<uint64_t> readErrors_{0};
  std::atomic<uint64_t> counterRestarts_{0};
  // Per domain: samples whose read failed for it, and whether one has succeeded in this run.
  std::unique_ptr<std::atomic<uint64_t>[]> domainReadErrors_;
  std::unique_ptr<std::atomic<bool>[]> domainRead_;
  std::atomic<uint64_t> cpuNsAtStop_{0};
  LatencyHistogram jitter_;
  static constexpr size_t kPeriodWindow = 1024;
  std::unique_ptr<std::atomic<uint64_t>[]> changePeriods_;
  std::atomic<uint64_t> changeCount_{0};
  std::atomic<uint64_t> lastAnyChangeNs_{0};  // written by the sampler thread only
  std::atomic<uint64_t> longestStillNs_{0};
  mutable std::mutex trackerMu_;  // snapshots: start()'s reference one and the sampler thread's
};

}  // namespace jouletrace
