// Settles spans and requests on the sampler thread. JavaScript threads write begin/end events
// into span channels (span_log.h); after every attribution step the engine drains them, keeps
// a short history of each span thread's cumulative on-CPU time and attributed energy, and turns
// ended spans into results once the energy intervals covering them are complete.
//
// Exclusive span (begin/end): in each interval it overlaps, it is charged the thread's energy
// in that interval × (the on-CPU time placed inside it) / (the thread's on-CPU time c). The
// thread is assumed busy inside spans first, and inside the innermost ones first: c is spread
// at a uniform density ρ0 = min(1, c / L) over L, the wall time covered by the spans that
// enclose no other span in the interval (clipped to it; a span encloses another when it begins
// no later and ends no earlier, they are not the same stretch, and the other is not zero-length),
// and what is left at ρ1 = min(1, (c − ρ0 L) / (U − L)) over the rest of U, the wall time all
// of its spans covered.
// So a lone 20 µs span on an otherwise idle thread gets all of the thread's energy; back-to-back
// spans on a thread that was preempted 10% of the time share 100% of it between them, never
// more; and spans inside a parent left open over idle time (an awaited measure(), a background
// job) get what they would without it. Every span is charged from one density over the
// interval: a nested span never gets more than its encloser, and spans that do not overlap
// never more than the thread between them (except where an event was published after its
// interval was measured: that span is charged there at min(1, c / U), see Point::density).
// Internal spans (an exact-mode request's callbacks: kSpanBeginInternal) have a density of their
// own, ρ over their union alone, and do not count in the users' spans' union: a user's span
// around idle time (a background job, an awaited measure()) raised U for every callback in it,
// which were then charged overlap × c / U instead of their overlap (requests 35% low at 1 ms
// steps), and callbacks outside users' spans lowered those spans' ρ likewise. One tracker's
// callbacks never overlap one another (it has one open at a time), so what they are charged in
// an interval sums to at most the thread's: one tracker's requests never share more than their
// thread spent. Per tracker only: two exact-mode trackers each open a span for the same callback,
// and each is charged it in full.
// Shared span (a request): each interval's energy of the channel's thread is split over the
// interval at uniform rate and, at each moment, equally among the channel's shared spans in
// flight. libuv's thread pool serves the whole process (the main thread and every worker): its
// energy is split the same way, but among the shared spans in flight on every channel, so that
// it is charged once however many threads have requests in flight. Intervals are processed
// max(2 intervals, 10 ms) late so that an event timestamped before an interval's end but
// published after it is still seen.
// Computed as a fair-share clock, as in processor-sharing schedulers: S(t) = ∫ power / (spans in
// flight) dt, advanced over the channel's events in time order; a request's joules are
// S(end) − S(begin). The pool's part is one clock for all channels, P(t) = ∫ pool power / (spans
// in flight on every channel) dt, built each step before the channels' clocks run (poolShare()),
// which add its increments while they have spans in flight. Cost per interval is O(events in
// it), not O(requests in flight): a server holding 10,000 long-lived requests costs the sampler
// thread no more than one holding ten.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "energy/source.h"
#include "sampler/attribution.h"
#include "spans/route_table.h"

namespace jouletrace {

// Ends JavaScript could not write into its channel's event ring (the ring was full): handed over
// here instead, under a lock of their own, and taken by the sampler thread at its next step,
// before it reads the ring. Kept in JavaScript for its thread to write again at its next poll,
// such an end was late by as long as the thread ran without one, and lost to a stop() meanwhile,
// which then settled its span open up to the stop (a 30 ms span reported as 145 ms, 3× its CPU);
// and a worker's channel is polled by that worker alone.
class SpanLateEnds {
 public:
  struct End {
    uint32_t handle, label, sec, nsec;  // label: an end event's (a request's route id and silent bit)
  };
  void push(const End& e) {
    std::lock_guard<std::mutex> lock(mu_);
    ends_.push_back(e);
    any_.store(true, std::memory_order_release);
  }
  // Appends them to *out, in the order they came, and lets them go. Without a lock while there
  // are none (every channel, every step): one missed as it is pushed is taken at the next step.
  void take(std::vector<End>* out) {
    if (!any_.load(std::memory_order_acquire)) return;
    std::lock_guard<std::mutex> lock(mu_);
    out->insert(out->end(), ends_.begin(), ends_.end());
    ends_.clear();
    any_.store(false, std::memory_order_relaxed);
  }

 private:
  std::mutex mu_;
  std::vector<End> ends_;
  std::atomic<bool> any_{false};
};

class SpanEngine {
 public:
  // The history: historyNs of intervals (steps, one per attribution step, come no more often),
  // 1,024 to 2^17 of them; historySteps, where not 0 (tests), sets their number instead.
  SpanEngine(const std::vector<Domain>& domains, int cpuCount, uint64_t historyNs, uint64_t intervalNs, uint32_t historySteps = 0);
  ~SpanEngine();
  SpanEngine(const SpanEngine&) = delete;
  SpanEngine& operator=(const SpanEngine&) = delete;

  // JavaScript threads. base points at the channel's SharedArrayBuffer, which the caller keeps
  // alive until removeLog() returns.
  // evCap, resCap: the rings' capacities, powers of two the caller checked against the buffer's
  // size. Kept here: the sampler thread never trusts the copies in JS-writable memory.
  // routes: where requests whose begin or end event names a route (an id ≥ 1) are aggregated
  // as they settle.
  // lateEnds: where the channel hands over the ends that found its ring full (drained with it).
  uint64_t addLog(uint8_t* base, uint32_t evCap, uint32_t resCap, uint32_t tid, double offsetNs,
                  std::shared_ptr<RouteTable> routes, std::shared_ptr<SpanLateEnds> lateEnds);
  void removeLog(uint64_t id);
  // Writes the running flag into every channel (and into channels added later).
  void setRunning(bool running);
  // The sampler is closed: the flag reads 2 (kSpanClosed) in every channel, so that threads
  // still holding one (workers keep the engine alive) learn that nothing will settle any more.
  void close();
  // Drops histories and accumulations; open spans stay open (they will settle incomplete).
  void reset();

  // Sampler thread, before each attribution step: a channel added since the last step gets its
  // first history point at that step (the thread's figures as of then; a thread born since has
  // none yet, and counts from 0 there once its row comes: see record()), so its first spans
  // settle complete.
  void primeNewLogs(const AttributionEngine& attr);
  // Sampler thread, after each attribution step. final: the run ends, settle everything.
  // readFailed: the source's energy for the interval ending now is not known (a read at either
  // end of it failed): spans over it settle unmeasured there, as over an untracked thread.
  void step(uint64_t nowNs, const AttributionEngine& attr, bool final, bool readFailed);

  // Users' spans and requests settled this run; exact-mode requests' callback spans apart (their
  // trackers sum them into the requests).
  uint64_t settledCount() const { return settled_.load(std::memory_order_relaxed); }
  uint64_t callbacksSettled() const { return callbacks_.load(std::memory_order_relaxed); }
  // The thread that owns a channel, after stop(): writes its results still waiting for room in
  // its result ring. Returns how many still wait (the caller collects, then calls again).
  size_t flushLog(uint64_t id);

 private:
  // Under mu_: the value of a channel's running word (closed wins over running), and writing it
  // into every channel.
  int32_t runningWord() const;
  void publishRunningWord();
  // A sum carried with its rounding error (Knuth's two-sum): the difference of two, taken far
  // into a run, keeps the precision of a short sum, where plain doubles grown to a day's joules
  // would lose six digits of a millisecond's.
  struct RunningSum {
    double hi = 0, lo = 0;
    void add(double v) {
      const double s = hi + v, vPart = s - hi;
      lo += (hi - (s - vPart)) + (v - vPart);
      hi = s;
    }
    double since(const RunningSum& earlier) const { return (hi - earlier.hi) + (lo - earlier.lo); }
  };
  // What a span is charged over intervals: see settleExclusive().
  struct Charge {
    double onCpu = 0, joules = 0, base = 0;
    uint32_t measured = 0, unmeasured = 0;  // intervals it overlapped with its thread known, unknown
  };
  // The on-CPU time placed inside a span in the intervals holding its begin (head) and its end
  // (tail), worked out as each interval is measured (measureDensity()): it depends on the other
  // spans there, which have settled and gone by the time this one does. headB, tailB: that
  // interval's end (0: none); headTo: the end of the part placed (the interval's end for a span
  // open then). A part placed for what turned out another stretch (an event published after its
  // interval was measured) is not used: see settleExclusive().
  //
  // origin: the running sums (Point::sumOnCpu, ...) less what the span was charged from its begin
  // to the end of its head interval (origin.b), kept as that interval is measured, or as its begin
  // is drained where that came after (charged there at the interval's uniform density, as
  // settleExclusive() would). A span running past origin.b is charged the difference between the
  // sums where it ends and these, plus its tail interval: its begin need not be in the history,
  // which holds about 10 s of steps. Read off the history instead, a span open longer than that
  // was charged only from its oldest point, less than its own children (job of 20 s: 14.3 J, its
  // 40 children 20.6 J), and flagged incomplete.
  struct Origin {
    RunningSum onCpu, joules, base;
    uint32_t measured = 0, unmeasured = 0;
    uint64_t b = 0;  // 0: none kept
  };
  struct Parts {
    double headX = 0, tailX = 0;
    uint64_t headB = 0, headTo = 0, tailB = 0;
    Origin origin;
  };
  struct Point {
    uint64_t t;
    double thrOnCpu, thrJ;   // the channel's thread
    double poolOnCpu, poolJ; // libuv's pool, the engine's running sums (poolOnCpu_, poolJ_)
    // min(1, c / U) of the interval ending here (valid up to Log::exclusiveUpTo): a span that
    // was not among the interval's when it was measured (its event published late) is charged
    // its overlap × this there.
    double density;
    double internalDensity;  // the same for internal spans, over their own union
    // The baseline energy attribution has charged so far (primary domains) per online CPU: a
    // span's share of the baseline is what was charged in its intervals, per CPU, for the time
    // it held one (never the configured watts, which can exceed what was measured).
    double basePerCpu;
    // The channel's thread was not among attribution's (its tracker had no slot for it): its
    // figures here are the last known ones, and the interval ending here is unmeasured. A span
    // over it settles incomplete, not as 0 J spent.
    bool unknown = false;
    // The source's energy over the interval ending here is unknown (a read at either end of it
    // failed: the counter held its last value, and the next good read holds the gap's energy; or
    // a counter started again in it, losing the energy before the restart).
    // For every channel alike; unmeasured, as for unknown.
    bool readFailed = false;
    // What a span covering every interval up to here would have been charged since the history
    // began (valid up to Log::exclusiveUpTo, like density). A span is charged its two end
    // intervals and the difference of these between them: a span open for 2 s at 100 µs was
    // charged interval by interval, 20,000 of them, and stop() with 65,536 such spans open took
    // 5 s on the sampler thread.
    RunningSum sumOnCpu, sumJ, sumBase;
    uint32_t sumMeasured = 0, sumUnmeasured = 0;  // modulo 2^32: only differences are read
  };
  struct Open {  // an exclusive span
    uint32_t label;
    uint64_t t0;
    bool internal;
    Parts parts;  // its head, once the interval holding its begin is measured
  };
  // A shared span, by slot (the handle's low 16 bits; JavaScript gives a slot to one span at a
  // time, so slots index a flat table instead of a hash map). A request ended silently (its end
  // event says so: nobody waits for its result) frees its slot in JavaScript at once, so a new
  // request may take the slot before this one has settled: this one then moves to
  // Log::sharedMoved. (A handle, slot and generation, comes round at its slot's 256th reuse:
  // after about 2^24 begins while few slots are held, sooner while many are.)
  enum SharedState : uint8_t { kSharedFree = 0, kSharedQueued, kSharedOpen };
  // (A request has no label: its result's label is 0, and its events' label field carries its
  // route instead.)
  struct Shared {
    uint32_t handle = 0;
    uint32_t route = 0;  // its route's id in the channel's RouteTable (begin or end event); 0: none
    bool silent = false; // aggregated only: no result is written
    uint64_t t0 = 0;
    double s0J = 0, s0C = 0, s0B = 0;  // the fair-share clock at its begin
    SharedState state = kSharedFree;
    bool late = false;  // begun before time already accounted: incomplete
    uint64_t unknown0 = 0;  // Log::unknownIntervals at its begin
    uint64_t known0 = 0;    // Log::knownIntervals at its begin
    bool beganKnown = false;  // begun in an interval with its thread known
    // poolShare()'s replay of the events ahead: its begin counted (1), its end seen (2). On the
    // request, not in a map: the replay must reach the same requests in flight as applyShared().
    uint8_t replayed = 0;
    // Open at a run's end, which gave its result (incomplete, up to the stop): still open in
    // JavaScript, it stays in flight, so that the next run's requests beside it get their fair
    // share, until its end, which settles nothing more.
    bool carried = false;
  };
  struct SharedEvent {
    uint64_t t;
    uint32_t handle;
    bool begin;
  };
  struct Ended {
    uint32_t handle, label;
    uint64_t t0, t1;
    bool internal;
    Parts parts;
  };
  struct Log {
    uint8_t* base;
    uint32_t evCap, resCap;
    uint32_t tid;
    int64_t offsetNs = 0;  // from JavaScript's clock to CLOCK_MONOTONIC, usually 0
    std::unordered_map<uint32_t, Open> open;  // exclusive spans, by handle
    // The open users' spans' start times, with their handles. Those begun before an interval
    // all cover the whole of it, alike: an interval needs each begun inside it and one for the
    // rest, whatever the number open (30,000 spans held open, each covered and sorted every
    // interval, took the sampler thread from 3% to 44% of a core).
    std::set<std::pair<uint64_t, uint32_t>> openT0;
    std::set<std::pair<uint64_t, uint32_t>> internalOpenT0;  // the same for internal spans
    std::vector<Shared> shared;               // kSpanSlots entries once the first request begins
    std::unordered_map<uint32_t, Shared> sharedMoved;  // by handle: see Shared
    std::deque<SharedEvent> sharedEvents;     // drained, not yet reached by the fair-share clock
    double sJ = 0, sC = 0, sB = 0;            // fair-share clock: joules, on-CPU ns, baseline joules per request
    uint32_t inFlight = 0;                    // shared spans open at sharedUpTo
    // Intervals the fair-share clock ran over with the thread unknown (Point::unknown), and
    // whether the one it is running over now is: a request across one settles incomplete.
    uint64_t unknownIntervals = 0, knownIntervals = 0;
    bool inUnknown = false;
    std::vector<Ended> ended;                 // exclusive spans awaiting their intervals
    std::vector<Point> history;               // ring
    size_t histStart = 0, histSize = 0;
    std::vector<std::array<double, 8>> backlog;  // results waiting for room in the result ring
    uint64_t sharedUpTo = 0;                  // shared accounting is complete up to this time
    uint64_t exclusiveUpTo = 0;               // densities are known up to this time
    bool primed = false;
    // Until a later point has found the thread's row (see record()): the attribution engine's
    // next row id at the first point. A row with an id at least this was made since, for a
    // thread first seen after that point.
    uint64_t rowsFrom = 0;
    std::shared_ptr<RouteTable> routes;
    std::shared_ptr<SpanLateEnds> lateEnds;
    // This step's requests for routes, added under the table's lock once accountShared() is
    // done: a JavaScript thread adding or reading waits for that, not for the whole pass.
    std::vector<RouteTable::Add> routeAdds;
  };

  // Takes the channel's events: the ends handed over late, then the ring's, applied in that order.
  // Returns how many it took.
  size_t drain(Log& log);
  void applyEvent(Log& log, uint32_t handle, uint32_t typeLabel, uint32_t sec, uint32_t nsec);
  // A span whose begin came after its head interval was measured: its origin off the history.
  void keepLateOrigin(Log& log, Open& o);
  // The running sums at p less a span's charge up to b (the end of its head interval).
  static Origin originOf(const Point& p, const Charge& head, uint64_t b);
  // Takes an open span's start out of the log's ordered starts.
  static void forgetOpen(Log& log, uint32_t handle, const Open& o);
  void record(Log& log, uint64_t now, const AttributionEngine& attr, bool readFailed = false);
  void measureDensity(Log& log, bool final);
  void settleExclusive(Log& log, bool final, uint64_t now);
  void accountShared(Log& log, bool final, uint64_t now);
  void settleShared(Log& log, bool final, uint64_t now);
  void applyShared(Log& log, const SharedEvent& ev, bool late);
  // The request with this handle, in its slot or moved out of it; nullptr if none.
  static Shared* findShared(Log& log, uint32_t handle);
  // A settled request's entry: its slot is free again, or its moved entry goes.
  static void releaseShared(Log& log, Shared& r);
  // The thread's rates (per ns, shared among the channel's requests in flight) and the pool's
  // clock (per request in flight, see poolShare()) over [from, to].
  void advanceShared(Log& log, uint64_t from, uint64_t to, double rateJ, double rateC, double rateB, bool known) const;
  // Sampler thread, once a step before the channels' clocks run: the pool's clock over the
  // intervals they will run over (poolMarks_), from every channel's requests in flight.
  void poolShare(bool final);
  void replayShared(Log& log, uint64_t horizon);
  void accumulatePool(const AttributionEngine& attr);
  // route ≠ 0: a request, to be added to its route in log.routes (log.routeAdds); silent: no
  // result is written for it once aggregated.
  // base: its share of the baseline (added to joules; joules alone are its dynamic energy).
  // callback: an exact-mode request's callback span (counted in callbacksSettled(), not settledCount()).
  void emit(Log& log, uint32_t handle, uint32_t label, uint64_t t0, uint64_t t1, double onCpu, double joules, double base,
            uint32_t flags, uint32_t route = 0, bool silent = false, bool callback = false);
  bool write(Log& log, const std::array<double, 8>& r);
  void retryBacklog(Log& log);
  // Adds what a span over [t0, t1] is charged in the interval from a to b at the interval's
  // uniform density (at the internal spans' density for one of those).
  static void chargeInterval(const Point& a, const Point& b, uint64_t t0, uint64_t t1, Charge* out, bool internal = false);
  // Adds a charge of x on-CPU ns in the interval from a to b (an overlap with it).
  static void chargeOnCpu(const Point& a, const Point& b, double x, Charge* out);
  // The union of the [from, to) intervals in cover (sorted here).
  static uint64_t unionOf(std::vector<std::pair<uint64_t, uint64_t>>& cover);
  // The users' spans in one interval, clipped to it (measureDensity()). parts: where its charge
  // there goes (head or tail), if it is one of its end intervals; leaf: it encloses no other.
  struct Piece {
    uint64_t from, to;
    Parts* parts;
    bool head, leaf;
  };
  // Places the thread's on-CPU time c of the interval ending at b over its spans (pieces_), as
  // the header says, and keeps what the pieces that are a span's head or tail get. Returns U.
  uint64_t placeOnCpu(uint64_t b, double c);
  // Index (≥ 1) of the first history point later than t; histSize if none.
  size_t firstPointAfter(const Log& log, uint64_t t) const;
  const Point& hist(const Log& log, size_t i) const { return log.history[(log.histStart + i) % log.history.size()]; }
  void refreshPool(uint64_t now);
  void mergeFoundPool(uint64_t generation);
  // Under mu_: tells the pool's rounds whether this engine takes found threads up at its steps
  // (running, not closed, with a channel: step() reaches refreshPool()).
  void updatePoolWatch();
  double threadJoules(const ThreadEnergy& t) const;

  std::vector<Domain> domains_;
  std::vector<size_t> primary_;
  bool estimated_ = false;
  int cpuCount_;
  size_t historyCapacity_;
  uint64_t lagNs_ = 0;

  std::mutex mu_;
  std::unordered_map<uint64_t, Log> logs_;
  uint64_t nextId_ = 1;
  bool running_ = false;
  bool finalStepDone_ = false;  // the last step was a run's final one (start()'s first step clears it)
  bool closed_ = false;
  // settledCount(), callbacksSettled(): written by the sampler thread, read by stats()
  std::atomic<uint64_t> settled_{0}, callbacks_{0};
  uint64_t lastStepNs_ = 0;

  std::vector<uint32_t> poolTids_;  // libuv-worker threads of this process
  // The pool's figures, summed from each thread's increments since it joined the pool set: the
  // set is rescanned, and summing cumulative figures over it would jump by a thread's whole
  // history when it joins and drop when it leaves. One sum for the engine: the pool is the
  // process's, not a channel's.
  struct PoolThread {
    uint32_t tid;
    double onCpu, joules;  // as of the previous accumulatePool()
  };
  std::vector<PoolThread> pool_;
  double poolOnCpu_ = 0, poolJ_ = 0;
  // The pool's clock this step: per request in flight on any channel, its joules, on-CPU ns and
  // baseline joules since the first mark, at each time the number in flight changes and at each
  // interval's ends (linear between marks).
  struct PoolMark {
    uint64_t t;
    double j, c, b;
  };
  std::vector<PoolMark> poolMarks_;
  PoolMark poolAt(uint64_t t) const;
  // Scratch for poolShare(): when the requests in flight change (time, by how many), and the
  // intervals the clocks will run over, with the pool's rates (per ns) in each.
  std::vector<std::pair<uint64_t, int64_t>> poolDeltas_;
  struct PoolInterval {
    uint64_t a, b;
    double j, c, base;
  };
  std::vector<PoolInterval> poolIntervals_;
  uint64_t poolScannedAt_ = 0;
  uint64_t poolGeneration_ = 0;  // foundPoolGeneration() as last merged into poolTids_
  uint64_t poolTakenUp_ = 0;     // as last told to poolTakenUp()
  bool watchingPool_ = false;    // counted in watchPool()
  double baselinePerCpuW_ = 0;  // configured: whether a baseline is known at all
  double basePerCpu_ = 0;       // charged so far (see Point::basePerCpu)

  // Scratch for measureDensity: the internal spans' stretches; the users' spans, and the union
  // of those that enclose no other with the length of it before each stretch.
  std::vector<std::pair<uint64_t, uint64_t>> internalCover_;
  std::vector<Piece> pieces_;
  struct InternalHead {
    uint64_t t0;
    Parts* parts;
  };
  std::vector<InternalHead> internalHeads_;  // internal spans begun in the interval, open past it
  std::vector<SpanLateEnds::End> lateTaken_;  // scratch for drain()
  struct Stretch {
    uint64_t from, to;
    uint64_t before;
  };
  std::vector<Stretch> leaves_;
};

}  // namespace jouletrace

namespace jouletrace {

// Process-wide registry, so a worker thread can open a span channel to a sampler created on
// another thread (the addon is loaded once per process).
uint64_t registerSpanEngine(const std::shared_ptr<SpanEngine>& engine);
void unregisterSpanEngine(uint64_t id);
std::shared_ptr<SpanEngine> findSpanEngine(uint64_t id);
// Whether registerSpanEngine() ever returned `id` in this process (closed since or not).
bool spanEngineIssued(uint64_t id);

}  // namespace jouletrace
