// JS face of the sampler: a thin ObjectWrap. Options arrive validated by src/sampler.ts; this
// layer copies them into SamplerConfig, owns the Sampler, and stops it when the environment
// (main thread or worker) ends.
#include <napi.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "energy/source_js.h"
#include "errno_name.h"
#include "napi_util.h"
#include "sampler/sampler.h"
#include "threads/target_process.h"
#include "threads/tracker_js.h"

namespace jouletrace {

namespace {

// Keeps the ring alive for as long as an external ArrayBuffer points into it.
void releaseRing(napi_env, void*, void* hint) { delete static_cast<std::shared_ptr<RingBuffer>*>(hint); }

class SamplerHandle : public Napi::ObjectWrap<SamplerHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeSampler",
                       {
                           InstanceMethod<&SamplerHandle::Start>("start"),
                           InstanceMethod<&SamplerHandle::Stop>("stop"),
                           InstanceMethod<&SamplerHandle::Close>("close"),
                           InstanceMethod<&SamplerHandle::Running>("running"),
                           InstanceMethod<&SamplerHandle::Info>("info"),
                           InstanceMethod<&SamplerHandle::Totals>("totals"),
                           InstanceMethod<&SamplerHandle::Stats>("stats"),
                           InstanceMethod<&SamplerHandle::Ring>("ring"),
                           InstanceMethod<&SamplerHandle::RingAcquire>("ringAcquire"),
                           InstanceMethod<&SamplerHandle::RingRelease>("ringRelease"),
                           InstanceMethod<&SamplerHandle::Threads>("threads"),
                           InstanceMethod<&SamplerHandle::Attribution>("attribution"),
                           InstanceMethod<&SamplerHandle::SetBaselineWatts>("setBaselineWatts"),
                           InstanceMethod<&SamplerHandle::FillForBenchmark>("fillForBenchmark"),
                           InstanceMethod<&SamplerHandle::DropRenameHook>("_dropRenameHook"),
                           InstanceMethod<&SamplerHandle::LapNextAcquire>("_lapNextAcquire"),
                       });
  }

  explicit SamplerHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SamplerHandle>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) {
      Napi::TypeError::New(env, "NativeSampler: expected an options object").ThrowAsJavaScriptException();
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    SamplerConfig cfg;
    cfg.source = getString(o, "source", "auto");
    cfg.sourceOptions = sourceOptionsFromJs(o);
    cfg.intervalNs = uint64_t(getNumber(o, "intervalUs", 1000) * 1000.0);
    cfg.ringCapacity = uint32_t(getNumber(o, "ringCapacity", 65536));
    cfg.maxRingBytes = uint64_t(getNumber(o, "maxRingBytes", 0));
    cfg.cpu = int(getNumber(o, "cpu", -1));
    cfg.sourceOptions.readerCpu = cfg.cpu;
    cfg.realtimePriority = int(getNumber(o, "realtimePriority", 0));
    cfg.overflow = getString(o, "onOverflow", "drop-newest") == "overwrite-oldest" ? OverflowPolicy::OverwriteOldest
                                                                                    : OverflowPolicy::DropNewest;
    cfg.threads = getString(o, "threads", "off");
    cfg.pid = int(getNumber(o, "pid", 0));
    cfg.followChildren = getBool(o, "followChildren", false);
    cfg.repairSwitchIns = getString(o, "repairSwitchIns", "auto");
    cfg.targetWatchProc = getBool(o, "targetWatchProc", false);  // tests only; Sampler never sets it
    cfg.spanHistorySteps = uint32_t(std::min(std::max(getNumber(o, "spanHistorySteps", 0), 0.0), double(1u << 17)));  // tests only, as above
    cfg.maxThreads = uint32_t(getNumber(o, "maxThreads", 4096));
    // Cheap guards only: the TypeScript layer has already produced precise messages.
    if (cfg.intervalNs < 10000 || cfg.ringCapacity == 1 || (cfg.ringCapacity & (cfg.ringCapacity - 1)) != 0 || cfg.maxThreads < 1 ||
        cfg.maxThreads > (1u << 20)) {
      Napi::RangeError::New(env, "NativeSampler: invalid intervalUs, ringCapacity or maxThreads").ThrowAsJavaScriptException();
      return;
    }
    SamplerError err;
    sampler_ = Sampler::create(cfg, &err);
    if (!sampler_) {
      throwCoded(env, err.code, err.message);
      return;
    }
    env_ = env;
    napi_add_env_cleanup_hook(env, &SamplerHandle::OnEnvCleanup, this);
    hookRegistered_ = true;
  }

  ~SamplerHandle() override {
    if (hookRegistered_) napi_remove_env_cleanup_hook(env_, &SamplerHandle::OnEnvCleanup, this);
    sampler_.reset();
  }

 private:
  static void OnEnvCleanup(void* arg) {
    auto* self = static_cast<SamplerHandle*>(arg);
    self->hookRegistered_ = false;
    self->sampler_.reset();  // joins the thread and frees the tracker; the ring lives on if referenced
  }

  bool check(Napi::Env env) {
    if (sampler_) return true;
    throwCoded(env, "ERR_JOULETRACE_CLOSED", "the sampler is closed; create a new Sampler");
    return false;
  }

  // The ring's methods: src/sampler.ts refuses them first for a sampler without a ring, with the
  // method's name; this guard keeps a call that reaches here off a null ring.
  RingBuffer* ringOf(Napi::Env env) {
    if (!check(env)) return nullptr;
    if (RingBuffer* r = sampler_->ring().get()) return r;
    throwCoded(env, "ERR_JOULETRACE_NO_RING", "the sampler was created with ringCapacity: 0 and keeps no samples to read");
    return nullptr;
  }

  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!check(env)) return env.Undefined();
    SamplerError err;
    if (!sampler_->start(&err)) throwCoded(env, err.code, err.message);
    return env.Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!check(env)) return env.Undefined();
    // A run the tracked process's exit ended is stopped already; stop() joins its thread.
    if (!sampler_->running() && !sampler_->targetExited()) {
      throwCoded(env, "ERR_JOULETRACE_NOT_STARTED", "stop(): the sampler is not running; call start() first");
      return env.Undefined();
    }
    sampler_->stop();
    return env.Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (hookRegistered_) {
      napi_remove_env_cleanup_hook(env_, &SamplerHandle::OnEnvCleanup, this);
      hookRegistered_ = false;
    }
    sampler_.reset();
    return info.Env().Undefined();
  }

  Napi::Value Running(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), sampler_ && sampler_->running());
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!check(env)) return env.Undefined();
    Napi::Object o = Napi::Object::New(env);
    o.Set("source", sampler_->source().name());
    o.Set("domains", domainsToJs(env, sampler_->source().domains()));
    o.Set("skipped", sourceStatusesToJs(env, sampler_->skippedSources()));
    o.Set("notCounting", domainsToJs(env, sampler_->source().notCounting()));
    o.Set("threadsBackend", sampler_->threadsBackend());
    o.Set("threadsFallbackReason", sampler_->threadsFallbackReason());
    const std::vector<int>& unknown = sampler_->unknownPackageCpus();
    Napi::Array u = Napi::Array::New(env, unknown.size());
    for (size_t i = 0; i < unknown.size(); i++) u.Set(uint32_t(i), unknown[i]);
    o.Set("unknownPackageCpus", u);
    o.Set("attributionEvery", sampler_->attributionEvery());
    o.Set("targetWatch", sampler_->targetWatch());
    o.Set("spanEngineId", double(sampler_->spanEngineId()));
    o.Set("ringRecordBytes", double(sampler_->recordSize()));
    return o;
  }

  Napi::Value Totals(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!check(env)) return env.Undefined();
    std::vector<uint64_t> ticks;
    std::vector<uint8_t> held;
    uint64_t timeNs = 0, startNs = 0;
    sampler_->totals(&ticks, &timeNs, &startNs, &held);
    Napi::Object o = Napi::Object::New(env);
    Napi::Array t = Napi::Array::New(env, ticks.size());
    for (size_t i = 0; i < ticks.size(); i++) t.Set(uint32_t(i), Napi::BigInt::New(env, ticks[i]));
    o.Set("ticks", t);
    o.Set("held", heldArray(env, held));
    o.Set("timeNs", Napi::BigInt::New(env, timeNs));
    o.Set("startNs", Napi::BigInt::New(env, startNs));
    return o;
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!check(env)) return env.Undefined();
    const RingBuffer* r = sampler_->ring().get();
    Napi::Object o = Napi::Object::New(env);
    Napi::Object ring = Napi::Object::New(env);
    // Without a ring nothing is written, read, dropped or overwritten.
    uint64_t head = r ? r->head() : 0, tail = r ? r->tail() : 0, capacity = r ? r->capacity() : 0;
    ring.Set("capacity", double(capacity));
    ring.Set("used", double(head - tail > capacity ? capacity : head - tail));
    ring.Set("written", double(r ? r->written() : 0));
    ring.Set("read", double(r ? r->readCount() : 0));
    ring.Set("dropped", double(r ? r->dropped() : 0));
    ring.Set("overwritten", double(r ? r->overwritten() + r->lapped(copyMode_) : 0));
    ring.Set("recordBytes", double(sampler_->recordSize()));
    ring.Set("zeroCopy", !copyMode_);
    o.Set("ring", ring);
    o.Set("targetExited", sampler_->targetExited());

    SamplerTimingStats ts;
    sampler_->timing(&ts);
    Napi::Object t = Napi::Object::New(env);
    t.Set("samples", double(ts.samples));
    t.Set("missedDeadlines", double(ts.missedDeadlines));
    t.Set("readErrors", double(ts.readErrors));
    t.Set("counterRestarts", double(ts.counterRestarts));
    Napi::Array errs = Napi::Array::New(env, ts.readErrorsByDomain.size());
    Napi::Array unread = Napi::Array::New(env, ts.unreadByDomain.size());
    for (size_t d = 0; d < ts.readErrorsByDomain.size(); d++) {
      errs.Set(uint32_t(d), double(ts.readErrorsByDomain[d]));
      unread.Set(uint32_t(d), ts.unreadByDomain[d] != 0);
    }
    o.Set("readErrorsByDomain", errs);
    o.Set("unreadByDomain", unread);
    t.Set("runningNs", double(ts.runningNs));
    t.Set("jitterCount", double(ts.jitterCount));
    t.Set("jitterP50Ns", double(ts.jitterP50));
    t.Set("jitterP99Ns", double(ts.jitterP99));
    t.Set("jitterP999Ns", double(ts.jitterP999));
    t.Set("jitterMaxNs", double(ts.jitterMax));
    t.Set("jitterMeanNs", ts.jitterMean);
    t.Set("hwUpdatePeriodNs", double(ts.hwUpdatePeriodNs));
    t.Set("hwUpdateObservations", double(ts.hwUpdateObservations));
    t.Set("stillNs", double(ts.stillNs));
    t.Set("longestStillNs", double(ts.longestStillNs));
    t.Set("threadCpuNs", double(ts.threadCpuNs));
    t.Set("tid", ts.tid);
    t.Set("attributionSteps", double(ts.attributionSteps));
    t.Set("lastAttributionNs", double(ts.lastAttributionNs));
    t.Set("spansSettled", double(sampler_->spansSettled()));
    t.Set("callbacksSettled", double(sampler_->callbacksSettled()));
    o.Set("timing", t);

    if (sampler_->attributed()) {
      TrackerStats tr;
      sampler_->trackerStats(&tr);
      Napi::Object b = trackerStatsToJs(env, tr);
      o.Set("tracker", b);
    }
    return o;
  }

  // { buffer, zeroCopy, recordBytes, capacity, begun? }, the same object on every call. The
  // buffer is external (zero copy) unless the runtime refuses external buffers (or
  // JOULETRACE_NO_EXTERNAL_BUFFERS=1), in which case it is a JS-owned buffer that ringAcquire()
  // copies new records into, counting as overwritten those the producer reached during the copy.
  Napi::Value Ring(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!ringOf(env)) return env.Undefined();
    if (!ringGeometry_.IsEmpty()) return ringGeometry_.Value();
    const std::shared_ptr<RingBuffer>& ring = sampler_->ring();
    // An external buffer over `bytes` of the ring's memory, or nullptr where the runtime refuses.
    auto external = [&](void* data, size_t bytes) -> napi_value {
      napi_value ab = nullptr;
      auto* keep = new std::shared_ptr<RingBuffer>(ring);
      napi_status st = napi_create_external_arraybuffer(env, data, bytes, releaseRing, keep, &ab);
      if (st == napi_ok) return ab;
      // Refused before Node took the hint; on any other failure (a buffer over its largest
      // size) Node has run the finalizer already, which deleted it: a second delete crashed.
      if (st == napi_no_external_buffers_allowed) delete keep;
      // A refused external buffer may leave an exception pending; clear it and fall back.
      napi_value ignored;
      bool pending = false;
      napi_is_exception_pending(env, &pending);
      if (pending) napi_get_and_clear_last_exception(env, &ignored);
      return nullptr;
    };
    napi_value ab = nullptr, begun = nullptr;
    const char* force = getenv("JOULETRACE_NO_EXTERNAL_BUFFERS");
    bool tryExternal = !(force && strcmp(force, "1") == 0);
#if !(defined(__x86_64__) || defined(__i386__))
    // A zero-copy reader under overwrite-oldest tells a record read whole from one the sampler
    // rewrote meanwhile by the order of its own plain loads (the record's seq, its fields, then
    // begun), which x86 keeps and arm64 does not; JavaScript has no load fence to restore it.
    // Copies, taken by acquire() behind the producer, need no such order.
    if (ring->policy() == OverflowPolicy::OverwriteOldest) tryExternal = false;
#endif
    // The reader of zero-copy records needs the producer's progress (RingBuffer::begun()) to
    // tell which it read whole; a copy is whole by construction and needs none.
    if (tryExternal) begun = external(ring->begun(), sizeof(double));
    if (begun) ab = external(ring->data(), ring->bytes());
    copyMode_ = ab == nullptr;
    Napi::ArrayBuffer buffer = copyMode_ ? Napi::ArrayBuffer::New(env, ring->bytes())
                                         : Napi::ArrayBuffer(env, ab);
    ringBuffer_ = Napi::Persistent(buffer);
    Napi::Object o = Napi::Object::New(env);
    o.Set("buffer", buffer);
    o.Set("zeroCopy", !copyMode_);
    o.Set("recordBytes", double(ring->recordSize()));
    o.Set("capacity", double(ring->capacity()));
    if (!copyMode_) o.Set("begun", Napi::Float64Array::New(env, 1, Napi::ArrayBuffer(env, begun), 0));
    ringGeometry_ = Napi::Persistent(o);
    return o;
  }

  // Writes [start, end) of the readable records into ctl[0..1] (a Float64Array).
  Napi::Value RingAcquire(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    RingBuffer* r = ringOf(env);
    if (!r) return env.Undefined();
    if (info.Length() < 1 || !info[0].IsTypedArray()) {
      Napi::TypeError::New(env, "ringAcquire: expected a Float64Array").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
    if (ta.TypedArrayType() != napi_float64_array || ta.ElementLength() < 2) {
      Napi::TypeError::New(env, "ringAcquire: expected a Float64Array of length >= 2").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    double* ctl = ta.As<Napi::Float64Array>().Data();
    RingBuffer& ring = *r;
    uint64_t start = 0, end = 0;
    ring.acquire(&start, &end, sampler_->running());
    if (lapNextAcquire_) {
      sampler_->fillForBenchmark(lapNextAcquire_);
      lapNextAcquire_ = 0;
    }
    if (copyMode_ && !ringBuffer_.IsEmpty() && end > start) {
      // The copy is an ordinary ArrayBuffer: detached (transferred), it has no memory to copy into.
      Napi::ArrayBuffer copy = ringBuffer_.Value();
      if (copy.Data() == nullptr || copy.ByteLength() < ring.bytes()) {
        Napi::TypeError::New(env, "ringAcquire: the ring's buffer was detached").ThrowAsJavaScriptException();
        return env.Undefined();
      }
      uint8_t* dst = static_cast<uint8_t*>(copy.Data());
      const uint32_t cap = ring.capacity(), rs = ring.recordSize();
      uint64_t n = end - start;
      if (n > cap) n = cap;
      for (uint64_t i = end - n; i < end; i++) {
        size_t off = size_t(i & (cap - 1)) * rs;
        std::memcpy(dst + off, ring.data() + off, rs);
      }
      // Records the producer reached while they were copied are not handed out: counted as
      // overwritten, as acquire() counts those it skips.
      uint64_t intact = ring.oldestCopiedIntact();
      if (intact > start) {
        uint64_t lost = std::min(intact, end) - start;
        ring.releaseJudged(start, start + lost, lost);
        start += lost;
      }
    }
    ctl[0] = double(start);
    ctl[1] = double(end);
    return env.Undefined();
  }

  // (from, to): the caller decoded the whole range, and the ring judges which records may be
  // torn. (from, to, torn): a RingReader judged each record as it left it, `torn` of them.
  Napi::Value RingRelease(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    RingBuffer* r = ringOf(env);
    if (!r) return env.Undefined();
    bool judged = info.Length() >= 3;
    if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber() || (judged && !info[2].IsNumber())) {
      Napi::TypeError::New(env, "ringRelease: expected (from, to) or (from, to, torn)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    uint64_t from = uint64_t(info[0].As<Napi::Number>().DoubleValue());
    uint64_t to = uint64_t(info[1].As<Napi::Number>().DoubleValue());
    RingBuffer& ring = *r;
    if (to < from || to > ring.head() || from != ring.tail()) {
      Napi::RangeError::New(env, "ringRelease: range outside the acquired records").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (!judged) return Napi::Number::New(env, double(ring.release(from, to, sampler_->running(), copyMode_)));
    double torn = info[2].As<Napi::Number>().DoubleValue();
    if (!(torn >= 0 && torn <= double(to - from))) {
      Napi::RangeError::New(env, "ringRelease: torn outside 0..(to - from)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    ring.releaseJudged(from, to, uint64_t(torn));
    return Napi::Number::New(env, torn);
  }

  Napi::Value Threads(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!check(env)) return env.Undefined();
    AttributionEngine* a = sampler_->attribution();
    Napi::Object result = Napi::Object::New(env);
    if (!a) {
      result.Set("timeNs", Napi::BigInt::New(env, uint64_t(0)));
      result.Set("held", Napi::Array::New(env, 0));
      result.Set("rows", Napi::Array::New(env, 0));
      return result;
    }
    uint64_t timeNs = 0;
    std::vector<uint8_t> held;
    std::vector<ThreadEnergy> ts = a->threads(&timeNs, &held);
    // Threads usually name themselves after the tracker first saw them (pthread_setname_np).
    // Where the tracker follows renames (the eBPF program's task_rename hook, procfs's stat at
    // each snapshot) the rows hold each thread's name as of the last attribution step, and
    // nothing is read here: a /proc read per row cost tens of ms at 3,000 threads, on the JS
    // thread. Otherwise a live thread's row may hold the name it had when first seen, and /proc
    // has its current one.
    const bool namesFresh = sampler_->threadNamesFresh();
    Napi::Array out = Napi::Array::New(env, ts.size());
    for (size_t i = 0; i < ts.size(); i++) {
      // The sampler's own thread exits after its last snapshot, so once it is stopped its row is
      // named here; its tid alone is not enough (another process may hold that number since).
      if (!sampler_->running() && ts[i].tid != 0 && ts[i].tid == sampler_->threadTid() &&
          (ts[i].tgid == 0 || ts[i].tgid == uint32_t(getpid()))) {
        ts[i].name = Sampler::kThreadName;
      } else if ((!namesFresh || ts[i].name.empty()) && !ts[i].exited && ts[i].tid != 0) {
        std::string name = procThreadComm(ts[i].tgid, ts[i].tid);
        if (!name.empty()) ts[i].name = name;
      }
      Napi::Object o = Napi::Object::New(env);
      o.Set("id", double(ts[i].id));
      o.Set("tid", ts[i].tid);
      o.Set("tgid", ts[i].tgid);
      o.Set("name", ts[i].name);
      o.Set("onCpuNs", double(ts[i].onCpuNs));
      o.Set("exited", ts[i].exited);
      Napi::Array ticks = Napi::Array::New(env, ts[i].ticks.size());
      for (size_t d = 0; d < ts[i].ticks.size(); d++) ticks.Set(uint32_t(d), double(ts[i].ticks[d]));
      o.Set("ticks", ticks);
      Napi::Array unmeasured = Napi::Array::New(env, ts[i].unmeasuredNs.size());
      for (size_t d = 0; d < ts[i].unmeasuredNs.size(); d++) unmeasured.Set(uint32_t(d), double(ts[i].unmeasuredNs[d]));
      o.Set("unmeasuredNs", unmeasured);
      out.Set(uint32_t(i), o);
    }
    result.Set("timeNs", Napi::BigInt::New(env, timeNs));
    result.Set("held", heldArray(env, held));
    result.Set("rows", out);
    return result;
  }

  static Napi::Array heldArray(Napi::Env env, const std::vector<uint8_t>& held) {
    Napi::Array a = Napi::Array::New(env, held.size());
    for (size_t d = 0; d < held.size(); d++) a.Set(uint32_t(d), Napi::Boolean::New(env, held[d] != 0));
    return a;
  }

  Napi::Value Attribution(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!check(env)) return env.Undefined();
    AttributionEngine* a = sampler_->attribution();
    if (!a) return env.Null();
    uint64_t timeNs = 0;
    std::vector<uint8_t> held;
    std::vector<DomainParts> parts = a->parts(&timeNs, &held);
    std::vector<double> baseline = a->baselineWatts();
    Napi::Array out = Napi::Array::New(env, parts.size());
    for (size_t d = 0; d < parts.size(); d++) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("total", Napi::BigInt::New(env, parts[d].total));
      o.Set("process", Napi::BigInt::New(env, parts[d].process));
      o.Set("baseline", Napi::BigInt::New(env, parts[d].baseline));
      o.Set("other", Napi::BigInt::New(env, parts[d].other));
      o.Set("baselineWatts", baseline[d]);
      out.Set(uint32_t(d), o);
    }
    Napi::Object result = Napi::Object::New(env);
    result.Set("timeNs", Napi::BigInt::New(env, timeNs));
    result.Set("held", heldArray(env, held));
    result.Set("domains", out);
    return result;
  }

  Napi::Value SetBaselineWatts(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!check(env)) return env.Undefined();
    AttributionEngine* a = sampler_->attribution();
    if (!a || info.Length() < 1 || !info[0].IsArray()) return env.Undefined();
    Napi::Array arr = info[0].As<Napi::Array>();
    // One figure per domain at most: the length is JavaScript's, and may be 2^32 - 1.
    const uint32_t n = uint32_t(std::min<size_t>(arr.Length(), sampler_->source().domains().size()));
    std::vector<double> w(n, -1);
    for (uint32_t i = 0; i < n; i++) {
      Napi::Value v = arr.Get(i);
      const double x = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
      // TypeScript checked it; anything else is "none" here: an infinite baseline made the carry
      // infinite, and uint64_t(infinity) is undefined.
      w[i] = std::isfinite(x) && x >= 0 ? x : -1;
    }
    a->setBaselineWatts(w);
    return env.Undefined();
  }

  Napi::Value FillForBenchmark(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!check(env)) return env.Undefined();
    if (info.Length() < 1 || !info[0].IsNumber() || !(info[0].As<Napi::Number>().DoubleValue() >= 0) ||
        !(info[0].As<Napi::Number>().DoubleValue() <= 1e9)) {
      Napi::TypeError::New(env, "fillForBenchmark: expected a count from 0 to 1e9").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (!sampler_->fillForBenchmark(uint64_t(info[0].As<Napi::Number>().DoubleValue()))) {
      throwCoded(env, "ERR_JOULETRACE_ALREADY_STARTED", "fillForBenchmark: stop the sampler first");
    }
    return env.Undefined();
  }

  // Test hook (see ThreadTracker::dropRenameHook); not part of the TypeScript API.
  Napi::Value DropRenameHook(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!check(env)) return env.Undefined();
    if (int rc = sampler_->dropRenameHook()) throwCoded(env, errnoName(-rc), "_dropRenameHook: " + std::string(strerror(-rc)));
    return env.Undefined();
  }

  // Test hook: the next ringAcquire(), between acquire() and its copy, has the stopped sampler
  // write n samples, as a sampler thread would while the JS thread stalled there.
  Napi::Value LapNextAcquire(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!check(env)) return env.Undefined();
    if (info.Length() < 1 || !info[0].IsNumber() || !(info[0].As<Napi::Number>().DoubleValue() >= 0) ||
        !(info[0].As<Napi::Number>().DoubleValue() <= 1e9) || sampler_->running()) {
      Napi::TypeError::New(env, "_lapNextAcquire: expected a count from 0 to 1e9, the sampler stopped").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    lapNextAcquire_ = uint64_t(info[0].As<Napi::Number>().DoubleValue());
    return env.Undefined();
  }

  std::unique_ptr<Sampler> sampler_;
  napi_env env_ = nullptr;
  uint64_t lapNextAcquire_ = 0;
  bool hookRegistered_ = false;
  bool copyMode_ = false;
  Napi::Reference<Napi::ArrayBuffer> ringBuffer_;
  Napi::ObjectReference ringGeometry_;
};

}  // namespace

void InitSamplerBinding(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeSampler", SamplerHandle::Define(env));
}

}  // namespace jouletrace
