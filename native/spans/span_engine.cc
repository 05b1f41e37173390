#include "spans/span_engine.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "spans/span_log.h"

namespace jouletrace {

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

SpanEngine::SpanEngine(const std::vector<Domain>& domains, int cpuCount, uint64_t historyNs, uint64_t intervalNs)
    : domains_(domains), cpuCount_(cpuCount > 0 ? cpuCount : 1), intervalNs_(intervalNs) {
  // The same primary domains as the JavaScript side: package, else psys, else the first name.
  std::string primary;
  for (const char* name : {"package", "psys"}) {
    for (const auto& d : domains_) {
      if (primary.empty() && d.name == name) primary = name;
    }
  }
  if (primary.empty() && !domains_.empty()) primary = domains_[0].name;
  for (size_t i = 0; i < domains_.size(); i++) {
    if (domains_[i].name == primary) primary_.push_back(i);
    estimated_ = estimated_ || domains_[i].estimated;
  }
  // Two intervals, and at least 10 ms: covers a JavaScript thread preempted between reading the
  // clock and publishing an event on a loaded machine.
  lagNs_ = std::max<uint64_t>(2 * intervalNs, 10000000ull);
  uint64_t n = intervalNs ? historyNs / intervalNs + 2 : 1024;
  historyCapacity_ = size_t(std::min<uint64_t>(std::max<uint64_t>(n, 1024), 1u << 17));
}

uint64_t SpanEngine::addLog(uint8_t* base, uint32_t tid, double offsetNs) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t id = nextId_++;
  Log& log = logs_[id];
  log.base = base;
  log.tid = tid;
  log.offsetNs = offsetNs;
  log.history.resize(historyCapacity_);
  storeRelease(base, kSpanRunning, running_ ? 1 : 0);
  return id;
}

void SpanEngine::removeLog(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  logs_.erase(id);
}

void SpanEngine::setRunning(bool running) {
  std::lock_guard<std::mutex> lock(mu_);
  running_ = running;
  for (auto& [id, log] : logs_) storeRelease(log.base, kSpanRunning, running ? 1 : 0);
}

void SpanEngine::reset() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [id, log] : logs_) {
    log.histStart = log.histSize = 0;
    log.sharedUpTo = 0;
    log.exclusiveUpTo = 0;
    log.primed = false;
    lastStepNs_ = 0;
    for (auto& [h, o] : log.open) o.onCpu = o.joules = 0;
  }
  poolScannedAt_ = 0;
}

double SpanEngine::threadJoules(const ThreadEnergy& t) const {
  double j = 0;
  for (size_t d : primary_) j += double(t.ticks[d]) * domains_[d].unitJoules;
  return j;
}

void SpanEngine::refreshPool(uint64_t now) {
  if (poolScannedAt_ && now - poolScannedAt_ < kPoolRescanNs) return;
  poolScannedAt_ = now;
  poolTids_.clear();
  DIR* dir = opendir("/proc/self/task");
  if (!dir) return;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    char path[300];
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    char comm[32] = {0};
    ssize_t n = read(fd, comm, sizeof comm - 1);
    close(fd);
    // libuv ≥ 1.45 names its thread-pool threads; older releases leave them unnamed.
    if (n > 0 && strncmp(comm, "libuv-worker", 12) == 0) poolTids_.push_back(uint32_t(atoi(e->d_name)));
  }
  closedir(dir);
}

void SpanEngine::primeNewLogs(const AttributionEngine& attr) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!lastStepNs_) return;
  for (auto& [id, log] : logs_) {
    if (!log.primed) record(log, lastStepNs_, attr);
  }
}

void SpanEngine::step(uint64_t now, const AttributionEngine& attr, bool final) {
  std::lock_guard<std::mutex> lock(mu_);
  lastStepNs_ = now;
  if (logs_.empty()) return;
  refreshPool(now);
  baselinePerCpuW_ = attr.baselineWattsSum(primary_) / double(cpuCount_);
  for (auto& [id, log] : logs_) {
    retryBacklog(log);
    drain(log);
    record(log, now, attr);
    measureDensity(log, final);
    settleExclusive(log, final, now);
    accountShared(log, final, now);
  }
}

void SpanEngine::drain(Log& log) {
  uint8_t* b = log.base;
  const uint32_t cap = uint32_t(loadAcquire(b, kSpanEvCap));
  const uint32_t head = uint32_t(loadAcquire(b, kSpanEvHead));
  uint32_t tail = uint32_t(loadAcquire(b, kSpanEvTail));
  if (cap == 0 || (cap & (cap - 1)) != 0) return;
  while (tail != head) {
    const double* ev = f64(b + kSpanEventsOffset + size_t(tail & (cap - 1)) * kSpanEventBytes);
    uint32_t type = uint32_t(ev[0]);
    uint32_t handle = uint32_t(ev[1]);
    uint32_t label = uint32_t(ev[2]);
    double tns = ev[3] * 1e6 + log.offsetNs;
    uint64_t t = tns > 0 ? uint64_t(tns) : 0;
    if (type == kSpanBegin || type == kSpanBeginShared) {
      Open o;
      o.label = label;
      o.t0 = t;
      o.shared = type == kSpanBeginShared;
      o.late = o.shared && log.primed && t < log.sharedUpTo;
      log.open[handle] = o;
    } else if (type == kSpanEnd) {
      auto it = log.open.find(handle);
      if (it == log.open.end()) {
        // Begun while no sampler saw it (before this channel existed): nothing to measure.
        emit(log, handle, label, t, t, 0, 0, kSpanIncomplete);
      } else if (it->second.shared) {
        it->second.ended = true;
        it->second.t1 = t < it->second.t0 ? it->second.t0 : t;
      } else {
        log.ended.push_back(Ended{handle, it->second.label, it->second.t0, t < it->second.t0 ? it->second.t0 : t});
        log.open.erase(it);
      }
    }
    tail++;
  }
  storeRelease(b, kSpanEvTail, int32_t(tail));
}

void SpanEngine::record(Log& log, uint64_t now, const AttributionEngine& attr) {
  Point p{now, 0, 0, 0, 0, 1.0};
  if (const ThreadEnergy* t = attr.findThreadUnlocked(log.tid)) {
    p.thrOnCpu = double(t->onCpuNs);
    p.thrJ = threadJoules(*t);
  }
  p.grpOnCpu = p.thrOnCpu;
  p.grpJ = p.thrJ;
  for (uint32_t tid : poolTids_) {
    if (const ThreadEnergy* t = attr.findThreadUnlocked(tid)) {
      p.grpOnCpu += double(t->onCpuNs);
      p.grpJ += threadJoules(*t);
    }
  }
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

void SpanEngine::measureDensity(Log& log, bool final) {
  if (log.histSize < 2) return;
  // Late by lagNs_: an event stamped before an interval's end may be published after it, when
  // the JavaScript thread is preempted between reading the clock and publishing the event.
  const uint64_t horizon = final ? UINT64_MAX : hist(log, log.histSize - 1).t - std::min(lagNs_, hist(log, log.histSize - 1).t);
  size_t k = 1;
  while (k < log.histSize && hist(log, k).t <= log.exclusiveUpTo) k++;
  for (; k < log.histSize && hist(log, k).t <= horizon; k++) {
    const Point& pa = hist(log, k - 1);
    Point& pb = log.history[(log.histStart + k) % log.history.size()];
    const uint64_t a = pa.t, b = pb.t;
    cover_.clear();
    for (const auto& [h, o] : log.open) {
      if (!o.shared && o.t0 < b) cover_.emplace_back(std::max(o.t0, a), b);
    }
    for (const Ended& e : log.ended) {
      if (e.t0 < b && e.t1 > a) cover_.emplace_back(std::max(e.t0, a), std::min(e.t1, b));
    }
    // Union of the spans' wall time in [a, b].
    std::sort(cover_.begin(), cover_.end());
    uint64_t union_ = 0, curFrom = 0, curTo = 0;
    bool have = false;
    for (const auto& [from, to] : cover_) {
      if (to <= from) continue;
      if (!have || from > curTo) {
        if (have) union_ += curTo - curFrom;
        curFrom = from;
        curTo = to;
        have = true;
      } else if (to > curTo) {
        curTo = to;
      }
    }
    if (have) union_ += curTo - curFrom;
    const double c = pb.thrOnCpu - pa.thrOnCpu;
    pb.density = union_ > 0 ? std::min(1.0, std::max(0.0, c) / double(union_)) : 1.0;
    log.exclusiveUpTo = b;
  }
}

void SpanEngine::settleExclusive(Log& log, bool final, uint64_t now) {
  if (log.histSize == 0) return;
  const uint64_t last = log.exclusiveUpTo;
  auto charge = [&](uint64_t t0, uint64_t t1, double* onCpu, double* joules) -> bool {
    bool complete = log.histSize >= 2 && t0 >= hist(log, 0).t;
    // First history point after t0.
    size_t lo = 1, hi = log.histSize;
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      if (hist(log, mid).t > t0) hi = mid;
      else lo = mid + 1;
    }
    for (size_t i = lo; i < log.histSize; i++) {
      const Point& a = hist(log, i - 1);
      const Point& b = hist(log, i);
      if (a.t >= t1) break;
      uint64_t from = std::max(t0, a.t), to = std::min(t1, b.t);
      if (to <= from) continue;
      double c = b.thrOnCpu - a.thrOnCpu;
      double e = b.thrJ - a.thrJ;
      if (c <= 0) continue;
      double x = std::min(double(to - from) * b.density, c);
      *onCpu += x;
      *joules += e * x / c;
    }
    return complete;
  };
  size_t keep = 0;
  for (size_t k = 0; k < log.ended.size(); k++) {
    Ended s = log.ended[k];
    if (!final && s.t1 > last) {
      log.ended[keep++] = s;
      continue;
    }
    double onCpu = 0, joules = 0;
    bool complete = charge(s.t0, s.t1, &onCpu, &joules);
    emit(log, s.handle, s.label, s.t0, s.t1, onCpu, joules, complete ? 0u : uint32_t(kSpanIncomplete));
  }
  log.ended.resize(keep);
  if (final) {
    // Spans still open when the sampler stops settle now, incomplete, up to the stop.
    for (auto it = log.open.begin(); it != log.open.end();) {
      if (it->second.shared) {
        ++it;
        continue;
      }
      double onCpu = 0, joules = 0;
      charge(it->second.t0, now, &onCpu, &joules);
      emit(log, it->first, it->second.label, it->second.t0, now, onCpu, joules, kSpanIncomplete);
      it = log.open.erase(it);
    }
  }
}

void SpanEngine::accountShared(Log& log, bool final, uint64_t now) {
  if (log.histSize < 2) return;
  // Late by lagNs_ (see measureDensity), except at the end of the run.
  const uint64_t horizon = final ? UINT64_MAX : hist(log, log.histSize - 1).t - std::min(lagNs_, hist(log, log.histSize - 1).t);
  // First interval not yet accounted.
  size_t k = 1;
  while (k < log.histSize && hist(log, k).t <= log.sharedUpTo) k++;
  for (; k < log.histSize && hist(log, k).t <= horizon; k++) {
    const Point& pa = hist(log, k - 1);
    const Point& pb = hist(log, k);
    const uint64_t a = pa.t, b = pb.t;
    if (b <= a) continue;
    const double E = pb.grpJ - pa.grpJ, C = pb.grpOnCpu - pa.grpOnCpu;
    cuts_.clear();
    cuts_.push_back(a);
    cuts_.push_back(b);
    size_t active = 0;
    for (auto& [h, o] : log.open) {
      if (!o.shared || o.t0 >= b || (o.ended && o.t1 <= a)) continue;
      active++;
      if (o.t0 > a) cuts_.push_back(o.t0);
      if (o.ended && o.t1 < b) cuts_.push_back(o.t1);
    }
    if (active > 0 && (E > 0 || C > 0)) {
      std::sort(cuts_.begin(), cuts_.end());
      cuts_.erase(std::unique(cuts_.begin(), cuts_.end()), cuts_.end());
      const size_t segs = cuts_.size() - 1;
      // How many shared spans are in flight in each segment (difference array), then the
      // per-span share of each segment's energy as prefix sums: O(n log n) per interval.
      std::vector<int>& count = count_;
      count.assign(segs + 1, 0);
      auto index = [&](uint64_t t) { return size_t(std::lower_bound(cuts_.begin(), cuts_.end(), t) - cuts_.begin()); };
      for (auto& [h, o] : log.open) {
        if (!o.shared || o.t0 >= b || (o.ended && o.t1 <= a)) continue;
        size_t lo = index(std::max(o.t0, a)), hi = index(o.ended ? std::min(o.t1, b) : b);
        count[lo]++;
        count[hi]--;
      }
      prefixJ_.assign(segs + 1, 0);
      prefixC_.assign(segs + 1, 0);
      int n = 0;
      const double len = double(b - a);
      for (size_t j = 0; j < segs; j++) {
        n += count[j];
        double frac = double(cuts_[j + 1] - cuts_[j]) / len;
        prefixJ_[j + 1] = prefixJ_[j] + (n > 0 ? E * frac / n : 0);
        prefixC_[j + 1] = prefixC_[j] + (n > 0 ? C * frac / n : 0);
      }
      for (auto& [h, o] : log.open) {
        if (!o.shared || o.t0 >= b || (o.ended && o.t1 <= a)) continue;
        size_t lo = index(std::max(o.t0, a)), hi = index(o.ended ? std::min(o.t1, b) : b);
        o.joules += prefixJ_[hi] - prefixJ_[lo];
        o.onCpu += prefixC_[hi] - prefixC_[lo];
      }
    }
    log.sharedUpTo = b;
  }
  for (auto it = log.open.begin(); it != log.open.end();) {
    Open& o = it->second;
    bool done = o.shared && o.ended && o.t1 <= log.sharedUpTo;
    bool cut = o.shared && final && !done;
    if (done || cut) {
      uint32_t flags = uint32_t(kSpanShared) | (cut || o.late || o.t0 < hist(log, 0).t ? uint32_t(kSpanIncomplete) : 0u);
      emit(log, it->first, o.label, o.t0, cut ? now : o.t1, o.onCpu, o.joules, flags);
      it = log.open.erase(it);
    } else {
      ++it;
    }
  }
}

void SpanEngine::emit(Log& log, uint32_t handle, uint32_t label, uint64_t t0, uint64_t t1, double onCpu,
                      double joules, uint32_t flags) {
  // A span's share of the baseline: idle power per CPU for the time it held a CPU.
  const double base = baselinePerCpuW_ * onCpu * 1e-9;
  std::array<double, 8> r = {double(handle),
                             double(label),
                             double(t0),
                             double(t1),
                             onCpu,
                             joules + base,
                             baselinePerCpuW_ > 0 ? joules : NAN,
                             double(flags | (estimated_ ? uint32_t(kSpanEstimated) : 0u))};
  settled_++;
  // Results are never dropped: JavaScript holds the span's slot until its result arrives.
  if (!log.backlog.empty() || !write(log, r)) log.backlog.push_back(r);
}

bool SpanEngine::write(Log& log, const std::array<double, 8>& r) {
  uint8_t* b = log.base;
  const uint32_t cap = uint32_t(loadAcquire(b, kSpanResCap));
  const uint32_t evCap = uint32_t(loadAcquire(b, kSpanEvCap));
  const uint32_t head = uint32_t(loadAcquire(b, kSpanResHead));
  const uint32_t tail = uint32_t(loadAcquire(b, kSpanResTail));
  if (cap == 0 || head - tail >= cap) return false;
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

size_t SpanEngine::flush() {
  std::lock_guard<std::mutex> lock(mu_);
  size_t waiting = 0;
  for (auto& [id, log] : logs_) {
    retryBacklog(log);
    waiting += log.backlog.size();
  }
  return waiting;
}

}  // namespace jouletrace
