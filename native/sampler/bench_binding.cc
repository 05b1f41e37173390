// Native pieces of bench/: baselines that must be measured in the same process as the thing
// they are compared with. Not part of the public API (exported under `bench`).
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <napi.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "napi_util.h"
#include "sampler/attribution.h"
#include "sampler/latency_histogram.h"
#include "switch_baseline.skel.h"

namespace jouletrace {

namespace {

struct TimerLoop {
  uint64_t intervalNs;
  uint64_t count;
  int cpu;
  uint64_t cpuNs = 0;
  LatencyHistogram* jitter;
};

void* timerLoopMain(void* arg) {
  auto* t = static_cast<TimerLoop*>(arg);
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  uint64_t next = monotonicNs() + t->intervalNs;
  for (uint64_t i = 0; i < t->count; i++) {
    timespec ts{time_t(next / 1000000000ull), long(next % 1000000000ull)};
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr);
    uint64_t now = monotonicNs();
    t->jitter->record(now > next ? now - next : 0);
    next += t->intervalNs;
    if (now >= next) next += ((now - next) / t->intervalNs + 1) * t->intervalNs;
  }
  timespec cpu;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu);
  t->cpuNs = uint64_t(cpu.tv_sec) * 1000000000ull + uint64_t(cpu.tv_nsec);
  return nullptr;
}

// timerLoop(intervalUs, count, cpu) → { cpuNs, wallNs, jitterP50Ns, jitterP99Ns, jitterP999Ns }
// The cost of waking up at a fixed cadence and doing nothing: the floor under any sampler.
Napi::Value TimerLoopBaseline(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  // Checked whole: an interval that converts to 0 ns would divide by zero on the loop's thread.
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber() ||
      !(info[0].As<Napi::Number>().DoubleValue() >= 1 && info[0].As<Napi::Number>().DoubleValue() <= 1e9) ||
      !(info[1].As<Napi::Number>().DoubleValue() >= 0 && info[1].As<Napi::Number>().DoubleValue() <= 1e9)) {
    Napi::TypeError::New(env, "timerLoop: expected (intervalUs from 1 to 1e9, count from 0 to 1e9, cpu)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto hist = std::make_unique<LatencyHistogram>();
  TimerLoop t{uint64_t(info[0].As<Napi::Number>().DoubleValue() * 1000), uint64_t(info[1].As<Napi::Number>().DoubleValue()),
              info[2].As<Napi::Number>().Int32Value(), 0, hist.get()};
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  if (t.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(t.cpu, &set);
    pthread_attr_setaffinity_np(&attr, sizeof set, &set);
  }
  pthread_t th;
  uint64_t t0 = monotonicNs();
  if (pthread_create(&th, &attr, timerLoopMain, &t) != 0) {
    pthread_attr_destroy(&attr);
    Napi::Error::New(env, "timerLoop: pthread_create failed").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  pthread_attr_destroy(&attr);
  pthread_join(th, nullptr);
  Napi::Object o = Napi::Object::New(env);
  o.Set("cpuNs", double(t.cpuNs));
  o.Set("wallNs", double(monotonicNs() - t0));
  o.Set("jitterP50Ns", double(hist->quantile(0.5)));
  o.Set("jitterP99Ns", double(hist->quantile(0.99)));
  o.Set("jitterP999Ns", double(hist->quantile(0.999)));
  return o;
}

// attributionStep(threads, steps) → ns per step, over a synthetic tracker snapshot in which
// every thread runs a little in every interval on one of 2 packages × 8 CPUs.
Napi::Value AttributionStepCost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  // Sizes from JavaScript, bounded: an allocation that fails terminates (no exceptions here).
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber() || !(info[0].As<Napi::Number>().DoubleValue() >= 0) ||
      !(info[0].As<Napi::Number>().DoubleValue() <= 1 << 20) || !(info[1].As<Napi::Number>().DoubleValue() >= 1) ||
      !(info[1].As<Napi::Number>().DoubleValue() <= 1e7)) {
    Napi::TypeError::New(env, "attributionStep: expected (threads from 0 to 1048576, steps from 1 to 1e7)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const uint32_t nThreads = info[0].As<Napi::Number>().Uint32Value();
  const uint32_t steps = info[1].As<Napi::Number>().Uint32Value();
  std::vector<Domain> domains(4);
  const char* names[] = {"package", "dram"};
  for (int i = 0; i < 4; i++) {
    domains[size_t(i)].name = names[i % 2];
    domains[size_t(i)].package = i / 2;
    domains[size_t(i)].unitJoules = 1.0 / 16384;
  }
  std::vector<int> cpuPackage(16);
  for (int c = 0; c < 16; c++) cpuPackage[size_t(c)] = c / 8;
  AttributionEngine engine(domains, cpuPackage);
  TrackerSnapshot snap;
  snap.cpus.resize(16);
  snap.threads.resize(nThreads);
  for (uint32_t i = 0; i < nThreads; i++) {
    snap.threads[i].tid = 1000 + i;
    snap.threads[i].slot = i;
    snap.threads[i].generation = 1;
    snprintf(snap.threads[i].comm, kCommLen, "w%u", i % 100000u);
  }
  uint64_t delta[4] = {0, 0, 0, 0};
  engine.step(delta, 0, snap);
  uint64_t total = 0;
  for (uint32_t s = 1; s <= steps; s++) {
    for (auto& c : snap.cpus) c.busyNs += 90000;
    for (uint32_t i = 0; i < nThreads; i++) {
      uint64_t ran = 1 + (i * 7919u + s) % 997;
      snap.threads[i].onCpuNs += ran;
      snap.threads[i].pkgNs[i % 2] += ran;
    }
    for (auto& d : delta) d = 1000 + s % 17;
    uint64_t t0 = monotonicNs();
    engine.step(delta, 100000, snap);
    total += monotonicNs() - t0;
  }
  return Napi::Number::New(env, double(total) / double(steps));
}

// attributionReplay(busyQuantumNs, dtNs, steps[, unitJoules, baselineWatts]) → per step
// [process, other, baseline, thread 0's ticks, thread 1's, ...], for tests: one domain (unit
// 1e-6 J unless given; a baseline where baselineWatts is given) over one CPU; steps holds
// [cpuBusyNs, threadNs, energyTicks, more threads' ns...] of each interval, each added to the
// snapshot's cumulative figures as a tracker would report them.
Napi::Value AttributionReplay(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto count = [](const Napi::Value& v) {
    const double x = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    return x >= 0 && x <= 9007199254740991.0 && x == double(uint64_t(x));
  };
  const auto positive = [](const Napi::Value& v) { return v.IsNumber() && v.As<Napi::Number>().DoubleValue() > 0; };
  constexpr uint32_t kMaxReplayThreads = 64;
  bool ok = info.Length() >= 3 && count(info[0]) && count(info[1]) && info[2].IsArray() &&
            info[2].As<Napi::Array>().Length() <= 1000000 && (info.Length() < 4 || positive(info[3])) &&
            (info.Length() < 5 || positive(info[4]));
  uint32_t nThreads = 1;
  for (uint32_t i = 0; ok && i < info[2].As<Napi::Array>().Length(); i++) {
    Napi::Value row = info[2].As<Napi::Array>().Get(i);
    const uint32_t len = row.IsArray() ? row.As<Napi::Array>().Length() : 0;
    ok = len >= 3 && len <= 2 + kMaxReplayThreads;
    nThreads = std::max(nThreads, len - 2);
    for (uint32_t k = 0; ok && k < len; k++) ok = count(row.As<Napi::Array>().Get(k));
  }
  if (!ok) {
    Napi::TypeError::New(env,
                         "attributionReplay: expected (busyQuantumNs, dtNs, [[cpuBusyNs, threadNs, energyTicks, ...up to 63 more "
                         "threads' ns], ...]) in whole numbers, then optionally unitJoules and baselineWatts above 0")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::vector<Domain> domains(1);
  domains[0].name = "package";
  domains[0].unitJoules = info.Length() >= 4 ? info[3].As<Napi::Number>().DoubleValue() : 1e-6;
  AttributionEngine engine(domains, std::vector<int>{0});
  if (info.Length() >= 5) engine.setBaselineWatts({info[4].As<Napi::Number>().DoubleValue()});
  TrackerSnapshot snap;
  snap.busyQuantumNs = uint64_t(info[0].As<Napi::Number>().DoubleValue());
  const uint64_t dtNs = uint64_t(info[1].As<Napi::Number>().DoubleValue());
  snap.cpus.resize(1);
  snap.threads.resize(nThreads);
  for (uint32_t k = 0; k < nThreads; k++) {
    snap.threads[k].tid = 1000 + k;
    snap.threads[k].slot = k;
    snap.threads[k].generation = 1;
  }
  uint64_t delta = 0;
  engine.step(&delta, 0, snap);
  Napi::Array steps = info[2].As<Napi::Array>();
  Napi::Array out = Napi::Array::New(env, steps.Length());
  DomainParts before;
  std::vector<uint64_t> threadsBefore(nThreads, 0);
  for (uint32_t i = 0; i < steps.Length(); i++) {
    Napi::Array row = steps.Get(i).As<Napi::Array>();
    snap.cpus[0].busyNs += uint64_t(row.Get(0u).As<Napi::Number>().DoubleValue());
    for (uint32_t k = 0; k < nThreads; k++) {
      const uint32_t at = k == 0 ? 1 : k + 2;
      const uint64_t ran = at < row.Length() ? uint64_t(row.Get(at).As<Napi::Number>().DoubleValue()) : 0;
      snap.threads[k].onCpuNs += ran;
      snap.threads[k].pkgNs[0] += ran;
    }
    delta = uint64_t(row.Get(2u).As<Napi::Number>().DoubleValue());
    engine.step(&delta, dtNs, snap);
    const DomainParts& now = engine.partsUnlocked()[0];
    Napi::Array parts = Napi::Array::New(env, 3 + nThreads);
    parts.Set(0u, double(now.process - before.process));
    parts.Set(1u, double(now.other - before.other));
    parts.Set(2u, double(now.baseline - before.baseline));
    for (uint32_t k = 0; k < nThreads; k++) {
      const ThreadEnergy* t = engine.findThreadUnlocked(1000 + k);
      const uint64_t ticks = t ? t->ticks[0] : 0;
      parts.Set(3 + k, double(ticks - threadsBefore[k]));
      threadsBefore[k] = ticks;
    }
    out.Set(i, parts);
    before = now;
  }
  return out;
}

// new EmptySwitchProgram(): attaches bpf/switch_baseline.bpf.c until close(); stats() →
// { runTimeNs, runCount } (counting only while kernel.bpf_stats_enabled=1).
class EmptySwitchProgram : public Napi::ObjectWrap<EmptySwitchProgram> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "EmptySwitchProgram",
                       {InstanceMethod("stats", &EmptySwitchProgram::Stats),
                        InstanceMethod("close", &EmptySwitchProgram::Close)});
  }

  explicit EmptySwitchProgram(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EmptySwitchProgram>(info) {
    skel_ = switch_baseline__open_and_load();
    int e = skel_ ? switch_baseline__attach(skel_) : -errno;
    if (e) {
      Close(info);
      throwCoded(info.Env(), "ERR_JOULETRACE_BPF",
                 "loading the empty sched_switch program for the baseline failed: " + std::string(strerror(-e)) +
                     " (needs root, or CAP_BPF and CAP_PERFMON, and a kernel with BTF)");
    }
  }
  ~EmptySwitchProgram() override { switch_baseline__destroy(skel_); }

 private:
  Napi::Value Stats(const Napi::CallbackInfo& info) {
    bpf_prog_info p;
    memset(&p, 0, sizeof p);
    uint32_t len = sizeof p;
    if (skel_) bpf_obj_get_info_by_fd(bpf_program__fd(skel_->progs.handle_switch), &p, &len);
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("runTimeNs", double(p.run_time_ns));
    o.Set("runCount", double(p.run_cnt));
    return o;
  }
  Napi::Value Close(const Napi::CallbackInfo& info) {
    switch_baseline__destroy(skel_);
    skel_ = nullptr;
    return info.Env().Undefined();
  }

  switch_baseline* skel_ = nullptr;
};

}  // namespace

// threadCpuNs() → the calling thread's CPU time in ns (CLOCK_THREAD_CPUTIME_ID), exact to the
// nanosecond: tests spin on it. Node 20 has no per-thread CPU clock, and /proc/thread-self's
// schedstat moves only at scheduler ticks for a running thread (4 ms steps here).
Napi::Value ThreadCpuNs(const Napi::CallbackInfo& info) {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return Napi::Number::New(info.Env(), double(ts.tv_sec) * 1e9 + double(ts.tv_nsec));
}

void InitBenchBinding(Napi::Env env, Napi::Object exports) {
  Napi::Object b = Napi::Object::New(env);
  b.Set("EmptySwitchProgram", EmptySwitchProgram::Define(env));
  b.Set("timerLoop", Napi::Function::New(env, TimerLoopBaseline, "timerLoop"));
  b.Set("attributionStep", Napi::Function::New(env, AttributionStepCost, "attributionStep"));
  b.Set("threadCpuNs", Napi::Function::New(env, ThreadCpuNs, "threadCpuNs"));
  b.Set("attributionReplay", Napi::Function::New(env, AttributionReplay, "attributionReplay"));
  exports.Set("bench", b);
}

}  // namespace jouletrace
