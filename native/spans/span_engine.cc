#include "spans/span_engine.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>

#include "napi_util.h"
#include "spans/pool_threads.h"
#include "spans/span_log.h"
#include "sys_file.h"
#include "threads/target_process.h"

namespace jouletrace {

// The bit above a request's route id in its end event is kSpanEndSilent.
static_assert(RouteTable::kMaxRoutes == kSpanEndSilent, "route ids must fit below the silent bit");

namespace {

inline int32_t loadAcquire(const uint8_t* base, uint32_t off) {
  return __atomic_load_n(reinterpret_cast<const int32_t*>(base + off), __ATOMIC_ACQUIRE);
}
inline void storeRelease(uint8_t* base, uint32_t off, int32_t v) {
  __atomic_store_n(reinterpret_cast<int32_t*>(base + off), v, __ATOMIC_RELEASE);
}
inline double* f64(uint8_t* p) { return reinterpret_cast<double*>(p); }

constexpr uint64_t kPoolRescanNs = 250000000ull;

}  // namespace

SpanEngine::SpanEngine(const std::vector<Domain>& domains, int cpuCount, uint64_t historyNs, uint64_t intervalNs,
                       uint32_t historySteps)
    : domains_(domains), cpuCount_(cpuCount > 0 ? cpuCount : 1) {
  primary_ = primaryDomainIndices(domains_);
  for (const auto& d : domains_) estimated_ = estimated_ || d.estimated;
  // Two intervals, and at least 10 ms: covers a JavaScript thread preempted between reading the
  // clock and publishing an event on a loaded machine.
  lagNs_ = std::max<uint64_t>(2 * intervalNs, 10000000ull);
  uint64_t n = intervalNs ? historyNs / intervalNs + 2 : 1024;
  historyCapacity_ = size_t(std::min<uint64_t>(std::max<uint64_t>(n, 1024), 1u << 17));
  // Never fewer than the settlement's lag holds four times over: intervals are measured lagNs_
  // behind the last step, and a tail settles from points that old.
  if (historySteps) historyCapacity_ = std::max<size_t>(historySteps, size_t(4 * lagNs_ / std::max<uint64_t>(intervalNs, 1) + 8));
}

SpanEngine::~SpanEngine() {
  if (watchingPool_) watchPool(-1);
}

void SpanEngine::updatePoolWatch() {
  const bool watching = running_ && !closed_ && !logs_.empty();
  if (watching == watchingPool_) return;
  watchingPool_ = watching;
  watchPool(watching ? 1 : -1);
}

uint64_t SpanEngine::addLog(uint8_t* base, uint32_t evCap, uint32_t resCap, uint32_t tid, double offsetNs,
                            std::shared_ptr<RouteTable> routes, std::shared_ptr<SpanLateEnds> lateEnds) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t id = nextId_++;
  Log& log = logs_[id];
  log.base = base;
  log.routes = std::move(routes);
  log.lateEnds = std::move(lateEnds);
  log.evCap = evCap;
  log.resCap = resCap;
  log.tid = tid;
  log.offsetNs = std::isfinite(offsetNs) && std::fabs(offsetNs) < 1e18 ? std::llround(offsetNs) : 0;
  log.history.resize(historyCapacity_);
  storeRelease(base, kSpanRunning, runningWord());
  updatePoolWatch();
  return id;
}

void SpanEngine::removeLog(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  logs_.erase(id);
  updatePoolWatch();
}

void SpanEngine::setRunning(bool running) {
  std::lock_guard<std::mutex> lock(mu_);
  running_ = running;
  publishRunningWord();
  updatePoolWatch();
}

void SpanEngine::close() {
  std::lock_guard<std::mutex> lock(mu_);
  closed_ = true;
  publishRunningWord();
  updatePoolWatch();
}

void SpanEngine::publishRunningWord() {
  for (auto& [id, log] : logs_) storeRelease(log.base, kSpanRunning, runningWord());
}

int32_t SpanEngine::runningWord() const { return closed_ ? kSpanClosed : running_ ? 1 : 0; }

void SpanEngine::reset() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [id, log] : logs_) {
    log.histStart = log.histSize = 0;
    log.sharedUpTo = 0;
    log.exclusiveUpTo = 0;
    log.primed = false;
    log.rowsFrom = 0;
    lastStepNs_ = 0;
    // Requests open at the last run's end stay in flight (Shared::carried): they gave their
    // result then, and their share of this run is nobody's. (The run's final step settled the
    // rest: no other request is left.)
  }
  poolScannedAt_ = 0;
  // stats() start afresh with each run
  settled_.store(0, std::memory_order_relaxed);
  callbacks_.store(0, std::memory_order_relaxed);
}

double SpanEngine::threadJoules(const ThreadEnergy& t) const {
  double j = 0;
  for (size_t d : primary_) j += double(t.ticks[d]) * domains_[d].unitJoules;
  return j;
}

void SpanEngine::refreshPool(uint64_t now) {
  // A round of jobs (pool_threads.h) finds Node 20's pool threads when a tracker is made, often
  // while the sampler runs: they join at the next step, not at the next rescan up to
  // kPoolRescanNs later, in which the requests would miss the pool's work unmarked.
  const uint64_t generation = foundPoolGeneration();
  const bool found = generation != poolGeneration_;
  if (poolScannedAt_ && now - poolScannedAt_ < kPoolRescanNs) {
    if (found) mergeFoundPool(generation);
    return;
  }
  poolScannedAt_ = now;
  poolTids_.clear();
  // /proc of another pid namespace's (the host's, under `unshare -p -f`) lists the threads by its
  // numbers; the tracker's rows, like gettid(), have the process's own. Asked once: a process's
  // namespace does not change.
  static const bool foreignProc = procPidView().foreign;
  DIR* dir = opendir("/proc/self/task");
  if (dir) {
    while (dirent* e = readdir(dir)) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      char path[300];
      snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
      std::string comm;
      // libuv ≥ 1.50 names its thread-pool threads.
      if (readSmallFile(path, &comm) != 0 || comm.compare(0, 12, "libuv-worker") != 0) continue;
      const long tid = foreignProc ? ownNamespaceId(std::string("/proc/self/task/") + e->d_name) : atol(e->d_name);
      if (tid > 0) poolTids_.push_back(uint32_t(tid));
    }
    closedir(dir);
  }
  mergeFoundPool(generation);
}

void SpanEngine::mergeFoundPool(uint64_t generation) {
  // (The generation read before the list: a thread found in between is merged again next step.)
  poolGeneration_ = generation;
  // Older releases do not name them: those a round of jobs found.
  for (uint32_t tid : foundPoolThreads()) {
    if (std::find(poolTids_.begin(), poolTids_.end(), tid) == poolTids_.end()) poolTids_.push_back(tid);
  }
}

void SpanEngine::accumulatePool(const AttributionEngine& attr) {
  for (uint32_t tid : poolTids_) {
    const ThreadEnergy* t = attr.findThreadUnlocked(tid);
    if (!t) continue;
    const double onCpu = double(t->onCpuNs), joules = threadJoules(*t);
    auto it = std::find_if(pool_.begin(), pool_.end(), [tid](const PoolThread& w) { return w.tid == tid; });
    if (it == pool_.end()) {
      pool_.push_back(PoolThread{tid, onCpu, joules});  // counted from now on
      continue;
    }
    poolOnCpu_ += std::max(0.0, onCpu - it->onCpu);
    poolJ_ += std::max(0.0, joules - it->joules);
    it->onCpu = onCpu;
    it->joules = joules;
  }
}

void SpanEngine::primeNewLogs(const AttributionEngine& attr) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!lastStepNs_) return;
  bool fresh = false;
  for (auto& [id, log] : logs_) fresh = fresh || !log.primed;
  if (!fresh) return;
  // The pool's threads as of the last step (attr holds its figures still), so that the first
  // interval of a channel added while there were none counts the pool's increments in it.
  accumulatePool(attr);
  for (auto& [id, log] : logs_) {
    if (!log.primed) record(log, lastStepNs_, attr);
  }
}

void SpanEngine::step(uint64_t now, const AttributionEngine& attr, bool final, bool readFailed) {
  std::lock_guard<std::mutex> lock(mu_);
  lastStepNs_ = now;
  finalStepDone_ = final;
  if (logs_.empty()) {
    pool_.clear();  // unwatched meanwhile: a channel added later counts the pool from then on
    return;
  }
  refreshPool(now);
  accumulatePool(attr);
  // The threads merged have their starting point now (a thread the tracker has no row for yet is
  // taken up at its first: nothing better is known): the round holding them may let them go.
  if (poolGeneration_ != poolTakenUp_) {
    poolTakenUp_ = poolGeneration_;
    poolTakenUp(poolGeneration_);
  }
  baselinePerCpuW_ = attr.baselineWattsSum(primary_) / double(cpuCount_);
  double charged = 0;
  const std::vector<DomainParts>& parts = attr.partsUnlocked();
  for (size_t d : primary_)
    if (d < parts.size()) charged += double(parts[d].baseline) * domains_[d].unitJoules;
  basePerCpu_ = charged / double(cpuCount_);
  for (auto& [id, log] : logs_) {
    retryBacklog(log);
    drain(log);
    record(log, now, attr, readFailed);
    measureDensity(log, final);
    settleExclusive(log, final, now);
  }
  // The pool's clock needs every channel's requests in flight before any channel's clock runs.
  poolShare(final);
  for (auto& [id, log] : logs_) accountShared(log, final, now);
  // Only this step's intervals are in it: a later settlement outside step() (flushLog) finds none.
  poolMarks_.clear();
}

size_t SpanEngine::drain(Log& log) {
  // Ends that found the ring full, taken before the ring is read: JavaScript handed each over
  // after writing its span's begin into the ring, and the lock carries those writes here, so
  // the ring read next holds every begin they end (it holds at most evCap events, all read).
  lateTaken_.clear();
  if (log.lateEnds) log.lateEnds->take(&lateTaken_);
  uint8_t* b = log.base;
  const uint32_t cap = log.evCap;
  const uint32_t start = uint32_t(loadAcquire(b, kSpanEvTail));
  uint32_t tail = start;
  for (uint32_t n = 0; n < cap; n++) {
    // Word by word, atomically (JavaScript may be writing this slot), seq first: see span_log.h.
    const uint32_t* ev = reinterpret_cast<const uint32_t*>(b + kSpanEventsOffset + size_t(tail & (cap - 1)) * kSpanEventBytes);
    const uint32_t seq = __atomic_load_n(&ev[1], __ATOMIC_ACQUIRE);
    if (seq != tail) break;
    const uint32_t check = __atomic_load_n(&ev[0], __ATOMIC_RELAXED);
    const uint32_t handle = __atomic_load_n(&ev[2], __ATOMIC_RELAXED);
    const uint32_t typeLabel = __atomic_load_n(&ev[3], __ATOMIC_RELAXED);
    const uint32_t sec = __atomic_load_n(&ev[4], __ATOMIC_RELAXED);
    const uint32_t nsec = __atomic_load_n(&ev[5], __ATOMIC_RELAXED);
    if (spanEventCheck(seq, handle, typeLabel, sec, nsec) != check) break;
    applyEvent(log, handle, typeLabel, sec, nsec);
    tail++;
  }
  const uint32_t fromRing = tail - start;
  storeRelease(b, kSpanEvTail, int32_t(tail));
  for (const SpanLateEnds::End& e : lateTaken_) applyEvent(log, e.handle, kSpanEnd | (e.label << 2), e.sec, e.nsec);
  return fromRing + lateTaken_.size();
}

void SpanEngine::applyEvent(Log& log, uint32_t handle, uint32_t typeLabel, uint32_t sec, uint32_t nsec) {
  const uint32_t type = typeLabel & 3;
  const uint32_t label = typeLabel >> 2;
  const int64_t tns = int64_t(sec) * 1000000000 + int64_t(nsec) + log.offsetNs;
  uint64_t t = tns > 0 ? uint64_t(tns) : 0;
  if (type == kSpanBeginShared) {
    if (log.shared.empty()) log.shared.resize(kSpanSlots);
    Shared& r = log.shared[handle & (kSpanSlots - 1)];
    // Its slot's last request ended silently and has not settled yet (see Shared).
    if (r.state != kSharedFree && r.handle != handle) log.sharedMoved.emplace(r.handle, r);
    r = Shared{};
    r.handle = handle;
    r.route = label;  // a request's begin carries its route's id where known, else 0
    r.t0 = t;
    r.state = kSharedQueued;
    log.sharedEvents.push_back(SharedEvent{t, handle, true});
  } else if (type == kSpanBegin || type == kSpanBeginInternal) {
    const bool internal = type == kSpanBeginInternal;
    auto [it, fresh] = log.open.try_emplace(handle, Open{label, t, internal, {}});
    if (!fresh) {
      forgetOpen(log, handle, it->second);
      it->second = Open{label, t, internal, {}};
    }
    if (internal) log.internalOpenT0.emplace(t, handle);
    else log.openT0.emplace(t, handle);
    if (t < log.exclusiveUpTo) keepLateOrigin(log, it->second);
  } else if (type == kSpanEnd) {
    Shared* r = findShared(log, handle);
    if (r) {
      if ((label & kSpanRouteMask) != 0) r->route = label & kSpanRouteMask;  // known only at its end
      r->silent = (label & kSpanEndSilent) != 0;
      // In time order: an end handed over late (JavaScript found the event ring full) may follow
      // newer events. Nearly always the back.
      auto at = log.sharedEvents.end();
      while (at != log.sharedEvents.begin() && std::prev(at)->t > t) --at;
      log.sharedEvents.insert(at, SharedEvent{t, handle, false});
    } else if (auto it = log.open.find(handle); it != log.open.end()) {
      const Open& o = it->second;
      log.ended.push_back(Ended{handle, o.label, o.t0, t < o.t0 ? o.t0 : t, o.internal, o.parts});
      forgetOpen(log, handle, o);
      log.open.erase(it);
    }
    // (A request that a run's final step settled open is found above: Shared::carried.)
    // Else its span has its result already: a run's final step settled it open, and its end
    // came after (a worker ending spans as the main thread stops). No second result, written
    // or counted: JavaScript would drop it, and stats() counted it in the next run. (JavaScript
    // sends no end for a span whose begin found the ring full: it makes that span's result.)
  }
}

void SpanEngine::keepLateOrigin(Log& log, Open& o) {
  // Its head interval was measured before its begin came (its thread preempted between stamping
  // and publishing it for longer than the lag): charged there at the interval's uniform density,
  // as settleExclusive() charges such a head from the history.
  if (log.histSize < 2 || o.t0 < hist(log, 0).t) return;
  const size_t first = firstPointAfter(log, o.t0);
  if (first >= log.histSize) return;
  const Point& h0 = hist(log, first - 1);
  const Point& h1 = hist(log, first);
  Charge head;
  if (o.t0 > h0.t) chargeInterval(h0, h1, o.t0, h1.t, &head, o.internal);
  o.parts.origin = originOf(o.t0 > h0.t ? h1 : h0, head, h1.t);
}

void SpanEngine::forgetOpen(Log& log, uint32_t handle, const Open& o) {
  if (o.internal) log.internalOpenT0.erase({o.t0, handle});
  else log.openT0.erase({o.t0, handle});
}

void SpanEngine::record(Log& log, uint64_t now, const AttributionEngine& attr, bool readFailed) {
  Point p{};
  p.t = now;
  p.readFailed = readFailed;
  p.density = 1.0;
  p.internalDensity = 1.0;
  p.basePerCpu = basePerCpu_;
  const ThreadEnergy* t = attr.findThreadUnlocked(log.tid);
  // A channel's thread removes it as it ends (its environment's cleanup), before it exits: an
  // exited thread's row is another's that had the tid before, found until the tracker has the
  // channel's thread. Taken for the channel's, its standing figures made the spans 0 J, complete.
  if (t && t->exited) t = nullptr;
  if (!log.primed) {
    log.rowsFrom = attr.nextRowIdUnlocked();
  } else if (log.rowsFrom && t) {
    // A channel added during a run gets its first point at the step before (primeNewLogs()),
    // where a worker started and attached within one interval had no row yet, or its tid was
    // still another thread's: that interval was unmeasured (or charged the other's figures), and
    // the worker's spans in it settled incomplete with NaN joules, though the tracker followed it
    // from birth. A row made since that point counts from a birth after it, where the thread
    // had spent nothing. Only at the second point: a row found later is a thread's that had no
    // tracker slot (or that no procfs rescan had found) over the intervals between.
    if (t->id >= log.rowsFrom && log.histSize == 1) {
      Point& first = log.history[log.histStart];
      first.thrOnCpu = first.thrJ = 0;
      first.unknown = false;
    }
    log.rowsFrom = 0;
  }
  if (t) {
    p.thrOnCpu = double(t->onCpuNs);
    p.thrJ = threadJoules(*t);
  } else if (log.histSize > 0) {
    // Untracked (no tracker slot): its figures stand still, and the interval is unmeasured.
    const Point& prev = hist(log, log.histSize - 1);
    p.thrOnCpu = prev.thrOnCpu;
    p.thrJ = prev.thrJ;
    p.unknown = true;
  } else {
    p.unknown = true;
  }
  p.poolOnCpu = poolOnCpu_;
  p.poolJ = poolJ_;
  const size_t cap = log.history.size();
  if (log.histSize == cap) {
    log.histStart = (log.histStart + 1) % cap;
    log.histSize--;
  }
  log.history[(log.histStart + log.histSize) % cap] = p;
  log.histSize++;
  if (!log.primed) {
    log.primed = true;
    log.sharedUpTo = now;
    log.exclusiveUpTo = now;
  }
}

size_t SpanEngine::firstPointAfter(const Log& log, uint64_t t) const {
  // Binary search: the history holds up to historyNs of points (thousands), and this runs for
  // every channel at every step.
  size_t lo = 1, hi = log.histSize;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (hist(log, mid).t > t) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

void SpanEngine::measureDensity(Log& log, bool final) {
  if (log.histSize < 2) return;
  // Late by lagNs_: an event stamped before an interval's end may be published after it, when
  // the JavaScript thread is preempted between reading the clock and publishing the event.
  const uint64_t horizon = final ? UINT64_MAX : hist(log, log.histSize - 1).t - std::min(lagNs_, hist(log, log.histSize - 1).t);
  size_t k = firstPointAfter(log, log.exclusiveUpTo);
  for (; k < log.histSize && hist(log, k).t <= horizon; k++) {
    const Point& pa = hist(log, k - 1);
    Point& pb = log.history[(log.histStart + k) % log.history.size()];
    const uint64_t a = pa.t, b = pb.t;
    pieces_.clear();
    internalCover_.clear();
    internalHeads_.clear();
    if (b > a) {
      // Users' spans open: one piece for all those begun before the interval (each covers the
      // whole of it), and one for each begun inside it, whose head this interval is.
      auto open = log.openT0.lower_bound({a, 0});
      if (open != log.openT0.begin()) pieces_.push_back(Piece{a, b, nullptr, false, false});
      for (; open != log.openT0.end() && open->first < b; ++open) {
        pieces_.push_back(Piece{open->first, b, &log.open.find(open->second)->second.parts, true, false});
      }
      if (!log.internalOpenT0.empty() && log.internalOpenT0.begin()->first < b) {
        internalCover_.emplace_back(std::max(log.internalOpenT0.begin()->first, a), b);
      }
      // Internal spans begun inside it and open past it: their origin is kept below.
      for (auto in = log.internalOpenT0.lower_bound({a, 0}); in != log.internalOpenT0.end() && in->first < b; ++in) {
        internalHeads_.push_back(InternalHead{in->first, &log.open.find(in->second)->second.parts});
      }
      for (Ended& e : log.ended) {
        if (e.t0 >= b || e.t1 <= a) continue;
        if (e.internal) {
          internalCover_.emplace_back(std::max(e.t0, a), std::min(e.t1, b));
          if (e.t0 >= a && e.t1 >= b) internalHeads_.push_back(InternalHead{e.t0, &e.parts});
          continue;
        }
        // Its head, its tail, or an interval it covers whole (charged from the running sums).
        const bool head = e.t0 >= a, tail = e.t1 <= b;
        pieces_.push_back(Piece{std::max(e.t0, a), std::min(e.t1, b), head || tail ? &e.parts : nullptr, head, false});
      }
    }
    const double c = std::max(0.0, pb.thrOnCpu - pa.thrOnCpu);
    const uint64_t users = placeOnCpu(b, c), internal = unionOf(internalCover_);
    pb.density = users > 0 ? std::min(1.0, c / double(users)) : 1.0;
    pb.internalDensity = internal > 0 ? std::min(1.0, c / double(internal)) : 1.0;
    // A span covering the whole interval: all of U, which holds all of the thread's on-CPU time
    // placed (min(c, b - a)), whatever the other spans in it.
    Charge whole;
    if (b > a) chargeOnCpu(pa, pb, std::min(double(b - a), c), &whole);
    pb.sumOnCpu = pa.sumOnCpu;
    pb.sumOnCpu.add(whole.onCpu);
    pb.sumJ = pa.sumJ;
    pb.sumJ.add(whole.joules);
    pb.sumBase = pa.sumBase;
    pb.sumBase.add(whole.base);
    pb.sumMeasured = pa.sumMeasured + whole.measured;
    pb.sumUnmeasured = pa.sumUnmeasured + whole.unmeasured;
    // The origins of the spans whose head this is and that run on past it: what each was placed
    // here (a users' span's share of U, an internal span's at their own density); a span begun
    // at the interval's start covers it whole, as the running sums do.
    for (const Piece& p : pieces_) {
      if (!p.head || !p.parts || p.to != b) continue;
      Charge head;
      if (p.from > a) chargeOnCpu(pa, pb, p.parts->headX, &head);
      p.parts->origin = originOf(p.from > a ? pb : pa, head, b);
    }
    for (const InternalHead& h : internalHeads_) {
      Charge head;
      if (h.t0 > a) chargeInterval(pa, pb, h.t0, b, &head, true);
      h.parts->origin = originOf(h.t0 > a ? pb : pa, head, b);
    }
    log.exclusiveUpTo = b;
  }
}

SpanEngine::Origin SpanEngine::originOf(const Point& p, const Charge& head, uint64_t b) {
  Origin o;
  o.b = b;
  o.onCpu = p.sumOnCpu;
  o.onCpu.add(-head.onCpu);
  o.joules = p.sumJ;
  o.joules.add(-head.joules);
  o.base = p.sumBase;
  o.base.add(-head.base);
  o.measured = p.sumMeasured - head.measured;
  o.unmeasured = p.sumUnmeasured - head.unmeasured;
  return o;
}

uint64_t SpanEngine::placeOnCpu(uint64_t b, double c) {
  if (pieces_.empty()) return 0;
  // By begin, the longest first among equal begins: a piece's enclosed ones come after it.
  std::sort(pieces_.begin(), pieces_.end(), [](const Piece& x, const Piece& y) { return x.from != y.from ? x.from < y.from : x.to > y.to; });
  // From the latest begin back (ties: the shortest first), a group of equal stretches at a time
  // (the same stretch twice encloses neither): a piece encloses another iff one seen before
  // its group ends no later than it. A zero-length piece (a span begun and ended at one
  // instant) encloses nothing and, having no time to take, leaves its enclosers innermost: else
  // a span around it was charged after its idle siblings, and both spans at a boundary it sits on.
  uint64_t minTo = UINT64_MAX;
  for (size_t i = pieces_.size(); i > 0;) {
    const uint64_t from = pieces_[i - 1].from, to = pieces_[i - 1].to;
    size_t g = i - 1;
    while (g > 0 && pieces_[g - 1].from == from && pieces_[g - 1].to == to) g--;
    const bool leaf = minTo > to;
    if (to > from) minTo = std::min(minTo, to);
    for (; i > g; i--) pieces_[i - 1].leaf = leaf;
  }
  // U, and the innermost pieces' union as stretches with the length before each (in begin
  // order, so each stretch is final once a piece begins past it).
  leaves_.clear();
  uint64_t all = 0, allFrom = pieces_.front().from, allTo = pieces_.front().to;
  for (const Piece& p : pieces_) {
    if (p.from > allTo) {
      all += allTo - allFrom;
      allFrom = p.from;
      allTo = p.to;
    } else if (p.to > allTo) {
      allTo = p.to;
    }
    if (!p.leaf) continue;
    if (leaves_.empty()) {
      leaves_.push_back(Stretch{p.from, p.to, 0});
    } else if (p.from > leaves_.back().to) {
      const Stretch& s = leaves_.back();
      leaves_.push_back(Stretch{p.from, p.to, s.before + (s.to - s.from)});
    } else if (p.to > leaves_.back().to) {
      leaves_.back().to = p.to;
    }
  }
  all += allTo - allFrom;
  const uint64_t inner = leaves_.back().before + (leaves_.back().to - leaves_.back().from);
  // The innermost pieces' time inside [from, to].
  const auto innerUpTo = [&](uint64_t t) -> uint64_t {
    auto s = std::upper_bound(leaves_.begin(), leaves_.end(), t, [](uint64_t x, const Stretch& y) { return x < y.from; });
    if (s == leaves_.begin()) return 0;
    --s;
    return s->before + (std::min(t, s->to) - s->from);
  };
  const double rho0 = std::min(1.0, c / double(inner));
  const double rest = double(all - inner);
  const double rho1 = rest > 0 ? std::min(1.0, std::max(0.0, c - rho0 * double(inner)) / rest) : 1.0;
  for (const Piece& p : pieces_) {
    if (!p.parts) continue;
    const double len = double(p.to - p.from);
    const double in = p.leaf ? len : double(innerUpTo(p.to) - innerUpTo(p.from));
    const double x = std::min(c, rho0 * in + rho1 * (len - in));
    if (p.head) {
      p.parts->headX = x;
      p.parts->headB = b;
      p.parts->headTo = p.to;
    } else {
      p.parts->tailX = x;
      p.parts->tailB = b;
    }
  }
  return all;
}

uint64_t SpanEngine::unionOf(std::vector<std::pair<uint64_t, uint64_t>>& cover) {
  std::sort(cover.begin(), cover.end());
  uint64_t sum = 0, curFrom = 0, curTo = 0;
  bool have = false;
  for (const auto& [from, to] : cover) {
    if (to <= from) continue;
    if (!have || from > curTo) {
      if (have) sum += curTo - curFrom;
      curFrom = from;
      curTo = to;
      have = true;
    } else if (to > curTo) {
      curTo = to;
    }
  }
  if (have) sum += curTo - curFrom;
  return sum;
}

void SpanEngine::chargeInterval(const Point& a, const Point& b, uint64_t t0, uint64_t t1, Charge* out, bool internal) {
  const uint64_t from = std::max(t0, a.t), to = std::min(t1, b.t);
  if (to <= from) return;
  const double c = std::max(0.0, b.thrOnCpu - a.thrOnCpu);
  chargeOnCpu(a, b, std::min(double(to - from) * (internal ? b.internalDensity : b.density), c), out);
}

void SpanEngine::chargeOnCpu(const Point& a, const Point& b, double x, Charge* out) {
  if (b.unknown || a.unknown || b.readFailed) {
    out->unmeasured++;
    return;
  }
  out->measured++;
  const double c = b.thrOnCpu - a.thrOnCpu;
  const double e = b.thrJ - a.thrJ;
  if (c <= 0) return;
  out->onCpu += x;
  out->joules += e * x / c;
  out->base += x * (b.basePerCpu - a.basePerCpu) / double(b.t - a.t);
}

void SpanEngine::settleExclusive(Log& log, bool final, uint64_t now) {
  if (log.histSize == 0) return;
  const uint64_t last = log.exclusiveUpTo;
  auto charge = [&](uint64_t t0, uint64_t t1, bool internal, const Parts& parts, double* onCpu, double* joules, double* base) -> bool {
    // Within the history at both ends (a span begun after the run's last step has none of it).
    bool complete = log.histSize >= 2 && t0 >= hist(log, 0).t && t1 <= hist(log, log.histSize - 1).t;
    Charge sum;
    // The running sums at p less those at `from`: every interval whole between the two.
    const auto addSince = [&](const Point& p, const Origin& from) {
      sum.onCpu += p.sumOnCpu.since(from.onCpu);
      sum.joules += p.sumJ.since(from.joules);
      sum.base += p.sumBase.since(from.base);
      sum.measured += p.sumMeasured - from.measured;
      sum.unmeasured += p.sumUnmeasured - from.unmeasured;
    };
    // Nothing of it measured: its thread untracked over all of it, or no interval of the run in
    // it (begun after the run's last step, or ended before its first). Nothing is known, which
    // is not 0 J. (A span of no length inside the run spent nothing.)
    const auto result = [&]() {
      *onCpu = sum.onCpu;
      *joules = sum.joules;
      *base = sum.base;
      if (!sum.measured && (sum.unmeasured || !complete)) *onCpu = *joules = *base = NAN;
      return complete && !sum.unmeasured;
    };
    const Origin& origin = parts.origin;
    if (origin.b != 0 && t1 >= origin.b && log.histSize >= 2 && t1 >= hist(log, 0).t) {
      // Past its head interval: the running sums where it ends less its origin, and its tail
      // interval in part, however long ago it began. (An internal span covering an interval
      // whole is charged what the running sums hold: its density's union is the interval.)
      complete = t1 <= hist(log, log.histSize - 1).t;
      const size_t last = std::min(firstPointAfter(log, t1 - 1), log.histSize - 1);
      const Point& e0 = hist(log, last - 1);
      const Point& e1 = hist(log, last);
      size_t i1 = last;
      if (t1 < e1.t) {
        i1 = last - 1;
        if (internal) chargeInterval(e0, e1, t0, t1, &sum, true);
        else if (parts.tailB == e1.t) chargeOnCpu(e0, e1, parts.tailX, &sum);
        else chargeInterval(e0, e1, t0, t1, &sum);
      }
      addSince(hist(log, i1), origin);
      return result();
    }
    // Else (a span within one interval, or begun before the history: its begin reached the
    // sampler before its channel's first step, or after the history had let go of its interval)
    // the intervals it overlaps run from the one holding t0 to the one holding t1: those two
    // in part, every one between them whole, read off the running sums. An internal span is
    // charged interval by interval, at its own density.
    const size_t first = firstPointAfter(log, t0);
    if (t1 > t0 && first < log.histSize) {
      const size_t last = std::min(firstPointAfter(log, t1 - 1), log.histSize - 1);
      if (internal) {
        for (size_t k = first; k <= last; k++) chargeInterval(hist(log, k - 1), hist(log, k), t0, t1, &sum, true);
      } else {
        // Its partial end intervals with what measureDensity() placed in it there, where it knew
        // this span as it is (else at their uniform density: an event published after its
        // interval was measured); the whole ones, (i0, i1], off the running sums.
        const Point& h0 = hist(log, first - 1);
        const Point& h1 = hist(log, first);
        const Point& e0 = hist(log, last - 1);
        const Point& e1 = hist(log, last);
        const auto partial = [&](const Point& a, const Point& b, bool placed, double x) {
          if (placed) chargeOnCpu(a, b, x, &sum);
          else chargeInterval(a, b, t0, t1, &sum);
        };
        const bool headPart = t0 > h0.t, tailPart = t1 < e1.t;
        size_t i0 = first - 1, i1 = last;
        if (first == last && (headPart || tailPart)) {
          i1 = i0;
          if (parts.tailB == h1.t) partial(h0, h1, true, parts.tailX);
          else partial(h0, h1, parts.headB == h1.t && parts.headTo == std::min(t1, h1.t), parts.headX);
        } else if (first < last) {
          if (headPart) {
            i0 = first;
            partial(h0, h1, parts.headB == h1.t && parts.headTo == h1.t, parts.headX);
          }
          if (tailPart) {
            i1 = last - 1;
            partial(e0, e1, parts.tailB == e1.t, parts.tailX);
          }
        }
        if (i1 > i0) addSince(hist(log, i1), originOf(hist(log, i0), Charge{}, 0));
      }
    }
    return result();
  };
  size_t keep = 0;
  for (size_t k = 0; k < log.ended.size(); k++) {
    const Ended& s = log.ended[k];
    if (!final && s.t1 > last) {
      if (keep != k) log.ended[keep] = s;
      keep++;
      continue;
    }
    double onCpu = 0, joules = 0, base = 0;
    bool complete = charge(s.t0, s.t1, s.internal, s.parts, &onCpu, &joules, &base);
    emit(log, s.handle, s.label, s.t0, s.t1, onCpu, joules, base, complete ? 0u : uint32_t(kSpanIncomplete), 0, false, s.internal);
  }
  log.ended.resize(keep);
  if (final) {
    // Spans still open when the sampler stops settle now, incomplete, up to the stop.
    for (auto it = log.open.begin(); it != log.open.end();) {
      double onCpu = 0, joules = 0, base = 0;
      charge(it->second.t0, now, it->second.internal, it->second.parts, &onCpu, &joules, &base);
      emit(log, it->first, it->second.label, it->second.t0, now, onCpu, joules, base, kSpanIncomplete, 0, false, it->second.internal);
      it = log.open.erase(it);
    }
    log.openT0.clear();
    log.internalOpenT0.clear();
  }
}

void SpanEngine::advanceShared(Log& log, uint64_t from, uint64_t to, double rateJ, double rateC, double rateB, bool known) const {
  // Nobody in flight: the energy is no request's, and the clock stands still.
  if (to <= from || log.inFlight == 0) return;
  const double dt = double(to - from) / double(log.inFlight);
  log.sJ += rateJ * dt;
  log.sC += rateC * dt;
  log.sB += rateB * dt;
  if (!known || poolMarks_.empty()) return;
  // The pool's clock is per request in flight already (on this channel and every other).
  const PoolMark p0 = poolAt(from), p1 = poolAt(to);
  log.sJ += p1.j - p0.j;
  log.sC += p1.c - p0.c;
  log.sB += p1.b - p0.b;
}

SpanEngine::PoolMark SpanEngine::poolAt(uint64_t t) const {
  auto next = std::upper_bound(poolMarks_.begin(), poolMarks_.end(), t, [](uint64_t x, const PoolMark& m) { return x < m.t; });
  if (next == poolMarks_.begin()) return poolMarks_.front();
  const PoolMark& m = *std::prev(next);
  if (next == poolMarks_.end() || next->t <= m.t) return m;
  // Linear between marks: the number in flight and the interval's rate hold between them.
  const double f = double(t - m.t) / double(next->t - m.t);
  return PoolMark{t, m.j + (next->j - m.j) * f, m.c + (next->c - m.c) * f, m.b + (next->b - m.b) * f};
}

void SpanEngine::poolShare(bool final) {
  poolMarks_.clear();
  poolDeltas_.clear();
  poolIntervals_.clear();
  if (pool_.empty()) return;
  // A pool that spent nothing over the intervals the channels settle now (a server whose
  // requests never touch it) has nothing to share: the replay below, which costs about what
  // the settlement does per event, is skipped. Its marks only keep a step's replay in line with
  // that step's settlement; a later replay starts from the settled state (inFlight, each
  // request's state), as it does after any step.
  const auto horizonOf = [&](const Log& log) {
    const uint64_t last = hist(log, log.histSize - 1).t;
    return final ? UINT64_MAX : last - std::min(lagNs_, last);
  };
  bool spent = false;
  for (auto& [id, log] : logs_) {
    if (log.histSize == 0 || log.shared.empty()) continue;  // as accountShared()
    // The points replayShared() would walk: after sharedUpTo, up to the horizon.
    const size_t k = firstPointAfter(log, log.sharedUpTo);
    const size_t end = firstPointAfter(log, horizonOf(log)) - 1;
    if (k >= log.histSize || end < k) continue;  // nothing to settle
    // The pool's figures are cumulative and never fall: equal at both ends, nothing between.
    const Point& a = hist(log, k - 1);
    const Point& b = hist(log, end);
    if (b.poolJ != a.poolJ || b.poolOnCpu != a.poolOnCpu) {
      spent = true;
      break;
    }
  }
  if (!spent) return;
  for (auto& [id, log] : logs_) {
    if (log.histSize == 0 || log.shared.empty()) continue;  // as accountShared()
    replayShared(log, horizonOf(log));
  }
  if (poolIntervals_.empty()) return;
  // Every channel records a point at every step: their intervals are the same ones, from the
  // earliest channel's start.
  std::sort(poolIntervals_.begin(), poolIntervals_.end(), [](const PoolInterval& x, const PoolInterval& y) { return x.b < y.b; });
  poolIntervals_.erase(
      std::unique(poolIntervals_.begin(), poolIntervals_.end(), [](const PoolInterval& x, const PoolInterval& y) { return x.b == y.b; }),
      poolIntervals_.end());
  PoolMark g{poolIntervals_.front().a, 0, 0, 0};
  poolMarks_.push_back(g);
  int64_t n = 0;
  size_t d = 0;
  for (const PoolInterval& iv : poolIntervals_) {
    if (g.t < iv.a) {
      g.t = iv.a;
      poolMarks_.push_back(g);
    }
    auto advance = [&](uint64_t t) {
      if (t <= g.t) return;
      if (n > 0) {
        const double dt = double(t - g.t) / double(n);
        g.j += iv.j * dt;
        g.c += iv.c * dt;
        g.b += iv.base * dt;
      }
      g.t = t;
      poolMarks_.push_back(g);
    };
    for (; d < poolDeltas_.size() && poolDeltas_[d].first <= iv.b; d++) {
      advance(poolDeltas_[d].first);
      n += poolDeltas_[d].second;
    }
    advance(iv.b);
  }
}

void SpanEngine::replayShared(Log& log, uint64_t horizon) {
  // settleShared()'s walk over the events, without applying them: the times at which the
  // channel's requests in flight will change, as applyShared() will change them.
  const size_t mid = poolDeltas_.size();
  uint64_t upTo = log.sharedUpTo;
  if (log.inFlight) poolDeltas_.emplace_back(upTo, int64_t(log.inFlight));
  auto replay = [&](const SharedEvent& ev, uint64_t t) {
    Shared* r = findShared(log, ev.handle);
    if (!r) return;
    int64_t change = 0;
    if (ev.begin) {
      if (r->state == kSharedQueued && r->replayed == 0) {
        r->replayed = 1;
        change = 1;
      }
    } else if (r->replayed != 2) {
      if (r->state == kSharedOpen || r->replayed == 1) change = -1;  // else ended before its begin
      r->replayed = 2;
    }
    if (change) poolDeltas_.emplace_back(t, change);
  };
  size_t e = 0;
  const size_t events = log.sharedEvents.size();
  for (; e < events && log.sharedEvents[e].t <= upTo; e++) replay(log.sharedEvents[e], upTo);
  for (size_t k = firstPointAfter(log, upTo); k < log.histSize && hist(log, k).t <= horizon; k++) {
    const Point& pa = hist(log, k - 1);
    const Point& pb = hist(log, k);
    const uint64_t a = pa.t, b = pb.t;
    if (b <= a) continue;
    const double span = double(b - a);
    const double rateC = std::max(0.0, pb.poolOnCpu - pa.poolOnCpu) / span;
    poolIntervals_.push_back(PoolInterval{a, b, std::max(0.0, pb.poolJ - pa.poolJ) / span, rateC,
                                          rateC * std::max(0.0, pb.basePerCpu - pa.basePerCpu) / span});
    uint64_t at = std::max(a, upTo);
    for (; e < events && log.sharedEvents[e].t <= b; e++) {
      at = std::max(log.sharedEvents[e].t, at);
      replay(log.sharedEvents[e], at);
    }
    upTo = b;
  }
  std::inplace_merge(poolDeltas_.begin(), poolDeltas_.begin() + long(mid), poolDeltas_.end(),
                     [](const auto& x, const auto& y) { return x.first < y.first; });
}

SpanEngine::Shared* SpanEngine::findShared(Log& log, uint32_t handle) {
  if (log.shared.empty()) return nullptr;
  Shared& r = log.shared[handle & (kSpanSlots - 1)];
  if (r.state != kSharedFree && r.handle == handle) return &r;
  if (log.sharedMoved.empty()) return nullptr;
  auto it = log.sharedMoved.find(handle);
  return it == log.sharedMoved.end() ? nullptr : &it->second;
}

void SpanEngine::releaseShared(Log& log, Shared& r) {
  const uint32_t handle = r.handle;  // r may be the map's node that erase() destroys
  if (&r == &log.shared[handle & (kSpanSlots - 1)]) {
    r.state = kSharedFree;
    r.handle = 0;
  } else {
    log.sharedMoved.erase(handle);
  }
}

void SpanEngine::applyShared(Log& log, const SharedEvent& ev, bool late) {
  Shared* found = findShared(log, ev.handle);
  if (!found) return;
  Shared& r = *found;
  if (ev.begin) {
    if (r.state != kSharedQueued) return;
    r.state = kSharedOpen;
    r.s0J = log.sJ;
    r.s0C = log.sC;
    r.s0B = log.sB;
    // Stamped before time already accounted (or before the history began): it missed some of
    // the energy it overlapped.
    r.late = r.late || late || log.inUnknown;
    r.unknown0 = log.unknownIntervals;
    r.known0 = log.knownIntervals;
    r.beganKnown = !log.inUnknown;
    log.inFlight++;
    return;
  }
  if (r.carried) {
    // Its result came at the run's end that found it open; JavaScript ends it after that result.
    log.inFlight--;
    releaseShared(log, r);
    return;
  }
  if (r.state == kSharedQueued) {
    // Ended before its begin was applied: cannot happen while one thread stamps a channel's
    // events in order, but never leave a slot without a result.
    emit(log, r.handle, 0, r.t0, std::max(ev.t, r.t0), 0, 0, 0, uint32_t(kSpanShared) | uint32_t(kSpanIncomplete), r.route,
         r.silent);
  } else {
    log.inFlight--;
    const bool unmeasured = log.unknownIntervals != r.unknown0;
    // Its thread unknown over all of it: nothing is known, which is not 0 J.
    const double none = r.beganKnown || log.knownIntervals != r.known0 ? 1.0 : NAN;
    emit(log, r.handle, 0, r.t0, std::max(ev.t, r.t0), none * (log.sC - r.s0C), none * (log.sJ - r.s0J), none * (log.sB - r.s0B),
         uint32_t(kSpanShared) | (r.late || late || unmeasured ? uint32_t(kSpanIncomplete) : 0u), r.route, r.silent);
  }
  releaseShared(log, r);
}

void SpanEngine::accountShared(Log& log, bool final, uint64_t now) {
  if (log.histSize == 0 || log.shared.empty()) return;
  settleShared(log, final, now);
  if (!log.routeAdds.empty()) {
    log.routes->addAll(log.routeAdds);
    log.routeAdds.clear();
  }
}

void SpanEngine::settleShared(Log& log, bool final, uint64_t now) {
  // Late by lagNs_ (see measureDensity), except at the end of the run.
  const uint64_t last = hist(log, log.histSize - 1).t;
  const uint64_t horizon = final ? UINT64_MAX : last - std::min(lagNs_, last);
  // Events stamped before the first unaccounted interval apply at its start. A begin among them
  // missed energy it overlapped; an end was charged a little past its time (its thread was
  // preempted for longer than the lag between stamping and publishing it).
  while (!log.sharedEvents.empty() && log.sharedEvents.front().t <= log.sharedUpTo) {
    const SharedEvent ev = log.sharedEvents.front();
    log.sharedEvents.pop_front();
    applyShared(log, ev, ev.begin && ev.t < log.sharedUpTo);
  }
  size_t k = firstPointAfter(log, log.sharedUpTo);
  for (; k < log.histSize && hist(log, k).t <= horizon; k++) {
    const Point& pa = hist(log, k - 1);
    const Point& pb = hist(log, k);
    const uint64_t a = pa.t, b = pb.t;
    if (b <= a) continue;
    log.inUnknown = pb.unknown || pa.unknown || pb.readFailed;
    if (log.inUnknown) log.unknownIntervals++;
    else log.knownIntervals++;
    // The thread's energy and on-CPU time in the interval, spread evenly over it (the pool's:
    // poolShare()). None over an interval with the thread unknown at either end: the one where
    // it is found again holds the whole stretch's. (Its requests still count among those the
    // pool's energy is split over: they are incomplete, and their share is nobody's.)
    const bool known = !log.inUnknown;
    const double rateJ = known ? std::max(0.0, pb.thrJ - pa.thrJ) / double(b - a) : 0.0;
    const double rateC = known ? std::max(0.0, pb.thrOnCpu - pa.thrOnCpu) / double(b - a) : 0.0;
    // The baseline charged in the interval per CPU, for the thread's on-CPU time.
    const double rateB = rateC * std::max(0.0, pb.basePerCpu - pa.basePerCpu) / double(b - a);
    uint64_t at = std::max(a, log.sharedUpTo);
    while (!log.sharedEvents.empty() && log.sharedEvents.front().t <= b) {
      const SharedEvent ev = log.sharedEvents.front();
      log.sharedEvents.pop_front();
      // A JavaScript thread stamps its events in order; never run the clock backwards.
      const uint64_t t = std::max(ev.t, at);
      advanceShared(log, at, t, rateJ, rateC, rateB, known);
      at = t;
      applyShared(log, ev, ev.begin && ev.t < a);
    }
    advanceShared(log, at, b, rateJ, rateC, rateB, known);
    log.sharedUpTo = b;
  }
  if (!final) return;
  // The run ends: events after the last sample apply at it, incomplete (the energy after the
  // last sample is unknown), and requests still open settle incomplete, with what they had. They
  // stay in flight (Shared::carried): open in JavaScript, they share the next run's energy with
  // the requests beside them.
  while (!log.sharedEvents.empty()) {
    const SharedEvent ev = log.sharedEvents.front();
    log.sharedEvents.pop_front();
    applyShared(log, ev, true);
  }
  // (Moved requests had ended: the loop above settled them.)
  for (Shared& r : log.shared) {
    if (r.state == kSharedFree || r.carried) continue;
    const bool open = r.state == kSharedOpen;
    // Under the route its begin named, if any (else JavaScript adds it at its end, which names
    // it): its tracker may end it silently before it reads this result.
    emit(log, r.handle, 0, r.t0, std::max(now, r.t0), open ? log.sC - r.s0C : 0, open ? log.sJ - r.s0J : 0, open ? log.sB - r.s0B : 0,
         uint32_t(kSpanShared) | uint32_t(kSpanIncomplete), r.route);
    if (open) {
      r.carried = true;
    } else {
      r.state = kSharedFree;
      r.handle = 0;
    }
  }
}

void SpanEngine::emit(Log& log, uint32_t handle, uint32_t label, uint64_t t0, uint64_t t1, double onCpu,
                      double joules, double base, uint32_t flags, uint32_t route, bool silent, bool callback) {
  (callback ? callbacks_ : settled_).fetch_add(1, std::memory_order_relaxed);
  // A request measured not at all (NaN) is no route's figure: routes() counts measured ones.
  if (route != 0 && log.routes && route < RouteTable::kMaxRoutes && !std::isnan(joules)) {
    log.routeAdds.push_back(RouteTable::Add{route, joules + base, double(t1 - t0), estimated_, (flags & kSpanIncomplete) != 0});
    flags |= kSpanAggregated;
  }
  // JavaScript let go of its slot at its end. Not aggregated (no route id left in JavaScript's
  // numbering), it is lost to routes(): nobody listens for its record either.
  if (silent) return;
  std::array<double, 8> r = {double(handle),
                             double(label),
                             double(t0),
                             double(t1),
                             onCpu,
                             joules + base,
                             baselinePerCpuW_ > 0 ? joules : NAN,
                             double(flags | (estimated_ ? uint32_t(kSpanEstimated) : 0u))};
  // Results are never dropped: JavaScript holds the span's slot until its result arrives.
  if (!log.backlog.empty() || !write(log, r)) log.backlog.push_back(r);
}

bool SpanEngine::write(Log& log, const std::array<double, 8>& r) {
  uint8_t* b = log.base;
  const uint32_t cap = log.resCap, evCap = log.evCap;
  const uint32_t head = uint32_t(loadAcquire(b, kSpanResHead));
  const uint32_t tail = uint32_t(loadAcquire(b, kSpanResTail));
  if (head - tail >= cap) return false;
  double* out = f64(b + kSpanEventsOffset + size_t(evCap) * kSpanEventBytes + size_t(head & (cap - 1)) * kSpanResultBytes);
  for (size_t i = 0; i < 8; i++) out[i] = r[i];
  storeRelease(b, kSpanResHead, int32_t(head + 1));
  return true;
}

void SpanEngine::retryBacklog(Log& log) {
  size_t n = 0;
  while (n < log.backlog.size() && write(log, log.backlog[n])) n++;
  if (n) log.backlog.erase(log.backlog.begin(), log.backlog.begin() + long(n));
}

size_t SpanEngine::flushLog(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = logs_.find(id);
  if (it == logs_.end()) return 0;
  Log& log = it->second;
  retryBacklog(log);
  // Stopped: a begin() that read the running word just before stop() cleared it wrote its event
  // after the run's last step. No step would read it before the next start(), and a settle() of
  // that span would keep its thread waiting (and alive) till then. Such events settle here, as
  // the last step settled what was open at the stop: incomplete, with the energy the run saw.
  if (finalStepDone_ && !closed_ && log.histSize > 0) {
    if (drain(log) != 0) {
      const uint64_t now = std::max(monotonicNs(), hist(log, log.histSize - 1).t);
      settleExclusive(log, true, now);
      accountShared(log, true, now);
    }
  }
  return log.backlog.size();
}

}  // namespace jouletrace
