// JS face of the thread trackers, for tests and debugging. The sampler uses the C++ interface
// directly from its own thread; this wrapper only ever runs on the JS thread that owns it.
#include <napi.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "errno_name.h"
#include "napi_util.h"
#include "sys_file.h"
#include "target_process.h"
#include "tracker.h"
#include "tracker_js.h"

namespace jouletrace {

Napi::Object trackerStatsToJs(Napi::Env env, const TrackerStats& s) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("backend", s.backend);
  if (s.backend == "bpf") {
    o.Set("program", s.program);
    o.Set("programReason", s.programReason);
    o.Set("hashRefs", Napi::Number::New(env, double(s.hashRefs)));
    o.Set("busyReads", Napi::Number::New(env, double(s.busyReads)));
    o.Set("lostSlots", Napi::Number::New(env, double(s.lostSlots)));
    o.Set("repairHook", s.repairHook);
    o.Set("renameHook", s.renameHook);
    o.Set("missedSwitchIns", Napi::Number::New(env, double(s.missedSwitchIns)));
    o.Set("repairedSwitchIns", Napi::Number::New(env, double(s.repairedSwitchIns)));
    o.Set("repairRunTimeNs", Napi::Number::New(env, double(s.repairRunTimeNs)));
    o.Set("repairRunCount", Napi::Number::New(env, double(s.repairRunCount)));
  }
  o.Set("attached", s.attached);
  o.Set("events", Napi::Number::New(env, double(s.events)));
  o.Set("runTimeNs", Napi::Number::New(env, double(s.runTimeNs)));
  o.Set("runCount", Napi::Number::New(env, double(s.runCount)));
  o.Set("slotsUsed", Napi::Number::New(env, double(s.slotsUsed)));
  o.Set("slotsMax", Napi::Number::New(env, double(s.slotsMax)));
  o.Set("droppedThreads", Napi::Number::New(env, double(s.droppedThreads)));
  if (s.backend == "procfs") o.Set("unreadThreads", Napi::Number::New(env, double(s.unreadThreads)));
  o.Set("recursionMisses", Napi::Number::New(env, double(s.recursionMisses)));
  o.Set("note", s.note);
  return o;
}

namespace {

constexpr const char* kClosed = "ThreadTracker is closed: open another with openThreadTracker()";

class TrackerWrap : public Napi::ObjectWrap<TrackerWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "ThreadTracker",
                       {
                           InstanceMethod("snapshot", &TrackerWrap::Snapshot),
                           InstanceMethod("stats", &TrackerWrap::Stats),
                           InstanceMethod("close", &TrackerWrap::Close),
                           InstanceMethod("_forgetSwitchIn", &TrackerWrap::ForgetSwitchIn),
                           InstanceMethod("_closeAsEnded", &TrackerWrap::CloseAsEnded),
                           InstanceMethod("_dropRenameHook", &TrackerWrap::DropRenameHook),
                           InstanceMethod("_referenceSnapshot", &TrackerWrap::ReferenceSnapshot),
                       });
  }

  explicit TrackerWrap(const Napi::CallbackInfo& info);
  ~TrackerWrap() override { release(); }

 private:
  Napi::Value Snapshot(const Napi::CallbackInfo& info) { return snapshotToJs(info, false); }
  // Test hook (see ThreadTracker::referenceSnapshot); not part of the TypeScript API.
  Napi::Value ReferenceSnapshot(const Napi::CallbackInfo& info) { return snapshotToJs(info, true); }
  Napi::Value snapshotToJs(const Napi::CallbackInfo& info, bool reference);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value ForgetSwitchIn(const Napi::CallbackInfo& info);
  Napi::Value CloseAsEnded(const Napi::CallbackInfo& info);
  Napi::Value DropRenameHook(const Napi::CallbackInfo& info);
  // The test hooks' common part: checks, then f(tid) → 0 or -errno, thrown as name's error.
  template <typename F>
  Napi::Value slotHook(const Napi::CallbackInfo& info, const char* name, F f);

  // Env teardown (process exit, or a worker ending) may come before this object's finalizer:
  // the hook detaches the BPF programs and unmaps the slots then.
  static void CleanupHook(void* arg) {
    auto* self = static_cast<TrackerWrap*>(arg);
    self->hookEnv_ = nullptr;
    self->tracker_.reset();
  }

  void release() {
    if (hookEnv_) {
      napi_remove_env_cleanup_hook(hookEnv_, CleanupHook, this);
      hookEnv_ = nullptr;
    }
    tracker_.reset();
  }

  std::unique_ptr<ThreadTracker> tracker_;
  napi_env hookEnv_ = nullptr;
  TrackerSnapshot snap_;
};

TrackerWrap::TrackerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TrackerWrap>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) {
    throwCoded(env, "ERR_INVALID_ARG_TYPE", "ThreadTracker expects an options object");
    return;
  }
  Napi::Object o = info[0].As<Napi::Object>();
  TrackerOptions opts;
  opts.backend = getString(o, "backend", "bpf");
  // Cheap guards only: the TypeScript layer validates ranges with proper messages.
  double pid = getNumber(o, "pid", 0);
  opts.pid = std::isfinite(pid) && pid > 0 && pid < 4194305 ? int(pid) : 0;
  opts.followChildren = getBool(o, "followChildren", false);
  double maxThreads = getNumber(o, "maxThreads", 4096);
  opts.maxThreads = std::isfinite(maxThreads) && maxThreads >= 1 && maxThreads <= 1048576
                        ? uint32_t(maxThreads)
                        : 4096;
  opts.procRoot = getString(o, "procRoot", "/proc");
  opts.bpfProgram = getString(o, "bpfProgram", "auto");
  opts.repairSwitchIns = getString(o, "repairSwitchIns", "auto");
  Napi::Value pkg = o.Get("cpuPackage");
  if (pkg.IsArray()) {
    Napi::Array a = pkg.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length() && i < 4096; i++) {
      Napi::Value v = a.Get(i);
      double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : 0;
      // Past the last package index: folded there by cpuPackageMap(), as read ids are.
      opts.cpuPackage.push_back(std::isfinite(d) && d >= 0 ? int(std::min(d, double(kMaxPackages))) : 0);
    }
  }

  TrackerError err;
  if (opts.backend == "bpf") {
    tracker_ = openBpfTracker(opts, &err);
  } else if (opts.backend == "procfs") {
    tracker_ = openProcfsTracker(opts, &err);
  } else {
    throwCoded(env, "ERR_INVALID_ARG_VALUE", "backend must be 'bpf' or 'procfs'");
    return;
  }
  if (!tracker_) {
    throwCoded(env, err.code.empty() ? "ERR_JOULETRACE_TRACKER" : err.code, err.message);
    return;
  }
  if (napi_add_env_cleanup_hook(env, CleanupHook, this) == napi_ok) hookEnv_ = env;
}

// Test hooks (see ThreadTracker::forgetSwitchIn, closeAsEnded); not part of the TypeScript API.
template <typename F>
Napi::Value TrackerWrap::slotHook(const Napi::CallbackInfo& info, const char* name, F f) {
  Napi::Env env = info.Env();
  if (!tracker_) {
    throwCoded(env, "ERR_JOULETRACE_CLOSED", kClosed);
    return env.Undefined();
  }
  if (info.Length() < 1 || !info[0].IsNumber()) {
    throwCoded(env, "ERR_INVALID_ARG_TYPE", std::string(name) + " expects a thread id");
    return env.Undefined();
  }
  const uint32_t tid = info[0].As<Napi::Number>().Uint32Value();
  int rc = f(tid);
  if (rc == -ESRCH) {
    throwCoded(env, "ESRCH", std::string(name) + ": thread " + std::to_string(tid) + " has no live slot in this tracker (not tracked, or exited)");
  } else if (rc == -ENOTSUP) {
    throwCoded(env, "ENOTSUP", std::string(name) + ": only the bpf backend has thread slots");
  } else if (rc != 0) {
    throwCoded(env, errnoName(-rc), std::string(name) + ": reading or writing the thread's slot failed: " + std::string(strerror(-rc)));
  }
  return env.Undefined();
}

Napi::Value TrackerWrap::ForgetSwitchIn(const Napi::CallbackInfo& info) {
  const bool asSeeded = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
  bool lossless = true;
  const uint64_t cpuSinceNs = info.Length() > 2 && info[2].IsBigInt() ? info[2].As<Napi::BigInt>().Uint64Value(&lossless) : 0;
  if (!lossless) {
    throwCoded(info.Env(), "ERR_OUT_OF_RANGE", "_forgetSwitchIn expects cpuSinceNs as a CLOCK_MONOTONIC bigint in [0, 2^64)");
    return info.Env().Undefined();
  }
  return slotHook(info, "_forgetSwitchIn", [&](uint32_t tid) { return tracker_->forgetSwitchIn(tid, asSeeded, cpuSinceNs); });
}

Napi::Value TrackerWrap::CloseAsEnded(const Napi::CallbackInfo& info) {
  return slotHook(info, "_closeAsEnded", [&](uint32_t tid) { return tracker_->closeAsEnded(tid); });
}

// Test hook (see ThreadTracker::dropRenameHook); not part of the TypeScript API.
Napi::Value TrackerWrap::DropRenameHook(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!tracker_) {
    throwCoded(env, "ERR_JOULETRACE_CLOSED", kClosed);
  } else if (int rc = tracker_->dropRenameHook()) {
    throwCoded(env, errnoName(-rc), "_dropRenameHook: " + std::string(strerror(-rc)));
  }
  return env.Undefined();
}

Napi::Value TrackerWrap::snapshotToJs(const Napi::CallbackInfo& info, bool reference) {
  Napi::Env env = info.Env();
  if (!tracker_) {
    throwCoded(env, "ERR_JOULETRACE_CLOSED", kClosed);
    return env.Undefined();
  }
  int rc = reference ? tracker_->referenceSnapshot(snap_) : tracker_->snapshot(snap_);
  if (rc != 0) {
    throwCoded(env, "ERR_JOULETRACE_SNAPSHOT", "snapshot failed: " + std::string(strerror(-rc)));
    return env.Undefined();
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("timeNs", Napi::BigInt::New(env, snap_.timeNs));
  Napi::Array cpus = Napi::Array::New(env, snap_.cpus.size());
  for (size_t i = 0; i < snap_.cpus.size(); i++) {
    Napi::Object c = Napi::Object::New(env);
    c.Set("busyNs", Napi::Number::New(env, double(snap_.cpus[i].busyNs)));
    c.Set("idleNs", Napi::Number::New(env, double(snap_.cpus[i].idleNs)));
    cpus.Set(uint32_t(i), c);
  }
  out.Set("cpus", cpus);
  Napi::Array threads = Napi::Array::New(env, snap_.threads.size());
  const bool namesFresh = tracker_->namesFresh();
  for (size_t i = 0; i < snap_.threads.size(); i++) {
    const ThreadTimes& t = snap_.threads[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("tid", Napi::Number::New(env, t.tid));
    o.Set("tgid", Napi::Number::New(env, t.tgid));
    o.Set("slot", Napi::Number::New(env, t.slot));
    o.Set("generation", Napi::Number::New(env, double(t.generation)));
    o.Set("onCpuNs", Napi::Number::New(env, double(t.onCpuNs)));
    Napi::Array pkgs = Napi::Array::New(env, kMaxPackages);
    for (int p = 0; p < kMaxPackages; p++) pkgs.Set(uint32_t(p), Napi::Number::New(env, double(t.pkgNs[p])));
    o.Set("pkgNs", pkgs);
    std::string name(t.comm, strnlen(t.comm, kCommLen));
    // Where the tracker may hold the name a live thread had when first seen, /proc has its own.
    if ((!namesFresh || name.empty()) && !t.exited && t.tid != 0) {
      std::string current = procThreadComm(t.tgid, t.tid);
      if (!current.empty()) name = current;
    }
    o.Set("name", name);
    o.Set("exited", Napi::Boolean::New(env, t.exited));
    threads.Set(uint32_t(i), o);
  }
  out.Set("threads", threads);
  return out;
}

Napi::Value TrackerWrap::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!tracker_) {
    throwCoded(env, "ERR_JOULETRACE_CLOSED", kClosed);
    return env.Undefined();
  }
  TrackerStats s;
  tracker_->stats(s);
  return trackerStatsToJs(env, s);
}

Napi::Value TrackerWrap::Close(const Napi::CallbackInfo& info) {
  release();
  return info.Env().Undefined();
}

Napi::Value BpfReadinessJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  BpfReadiness r = bpfReadiness();
  Napi::Object o = Napi::Object::New(env);
  o.Set("ready", r.ready);
  o.Set("btf", r.btf);
  o.Set("capBpf", r.capBpf);
  o.Set("capPerfmon", r.capPerfmon);
  o.Set("kernel", r.kernel);
  o.Set("reason", r.reason);
  return o;
}

}  // namespace

void InitTrackerBinding(Napi::Env env, Napi::Object exports) {
  exports.Set("ThreadTracker", TrackerWrap::Define(env));
  exports.Set("bpfReadiness", Napi::Function::New(env, BpfReadinessJs, "bpfReadiness"));
}

}  // namespace jouletrace
