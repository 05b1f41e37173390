// JS face of span channels: new SpanChannel(samplerId, Uint8Array over a SharedArrayBuffer,
// offsetNs) registers the calling thread's channel with the sampler's span engine. The handle
// keeps the buffer alive and unregisters when closed, collected, or when its thread ends. It
// holds the channel's route table (route_table.h) for as long as it lives, closed or not.
#include <napi.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "napi_util.h"
#include "spans/pool_threads.h"
#include "spans/route_table.h"
#include "spans/span_engine.h"
#include "spans/span_log.h"

namespace jouletrace {

namespace {
std::mutex gMu;
std::unordered_map<uint64_t, std::weak_ptr<SpanEngine>>& registry() {
  static auto* r = new std::unordered_map<uint64_t, std::weak_ptr<SpanEngine>>();
  return *r;
}
uint64_t gNextId = 1;
// Span handles carry their channel's tag so that a handle from another thread's channel is
// refused; counted process-wide because every worker loads its own copy of the JS module.
std::atomic<uint32_t> gNextTag{0};
}  // namespace

uint64_t registerSpanEngine(const std::shared_ptr<SpanEngine>& engine) {
  std::lock_guard<std::mutex> lock(gMu);
  uint64_t id = gNextId++;
  registry()[id] = engine;
  return id;
}

void unregisterSpanEngine(uint64_t id) {
  std::lock_guard<std::mutex> lock(gMu);
  registry().erase(id);
}

std::shared_ptr<SpanEngine> findSpanEngine(uint64_t id) {
  std::lock_guard<std::mutex> lock(gMu);
  auto it = registry().find(id);
  return it == registry().end() ? nullptr : it->second.lock();
}

bool spanEngineIssued(uint64_t id) {
  std::lock_guard<std::mutex> lock(gMu);
  return id >= 1 && id < gNextId;
}

namespace {

// Numbers per route in routeSummaries()' output: ROUTE_SUMMARY_WORDS in src/span-channel.ts.
constexpr size_t kRouteSummaryWords = 9;

class SpanChannelHandle : public Napi::ObjectWrap<SpanChannelHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "SpanChannel",
                       {InstanceMethod<&SpanChannelHandle::Close>("close"), InstanceMethod<&SpanChannelHandle::Flush>("flush"),
                        InstanceMethod<&SpanChannelHandle::LateEnd>("lateEnd"),
                        InstanceMethod<&SpanChannelHandle::AddToRoute>("addToRoute"),
                        InstanceMethod<&SpanChannelHandle::RouteSummaries>("routeSummaries"),
                        InstanceMethod<&SpanChannelHandle::ReleaseRoutes>("releaseRoutes"),
                        InstanceAccessor<&SpanChannelHandle::Tag>("tag"),
                        InstanceAccessor<&SpanChannelHandle::Tid>("tid")});
  }

  SpanChannelHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SpanChannelHandle>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsTypedArray() || !info[2].IsNumber()) {
      Napi::TypeError::New(env, "SpanChannel: expected (samplerId, Uint8Array, offsetNs)").ThrowAsJavaScriptException();
      return;
    }
    // TypeScript checked it; converting anything else to uint64_t is undefined, or names another.
    const double id = info[0].As<Napi::Number>().DoubleValue();
    if (!(id >= 1 && id <= 9007199254740991.0 && id == std::floor(id))) {
      Napi::RangeError::New(env, "SpanChannel: samplerId must be an integer from 1 to 2^53 - 1").ThrowAsJavaScriptException();
      return;
    }
    const uint64_t samplerId = uint64_t(id);
    engine_ = findSpanEngine(samplerId);
    if (!engine_) {
      // Only a sampler that tracks this process's threads issues an id (spanContext() throws
      // for the others), so one issued and gone was closed.
      if (spanEngineIssued(samplerId)) {
        throwCoded(env, "ERR_JOULETRACE_CLOSED", "spans: sampler " + std::to_string(samplerId) +
                   " was closed; pass spanContext() of a Sampler not yet closed");
      } else {
        throwCoded(env, "ERR_JOULETRACE_UNKNOWN_SAMPLER", "spans: no sampler " + std::to_string(samplerId) +
                   " was ever created in this process; pass spanContext() of a Sampler of this process (spans are in-process: "
                   "hand it to worker_threads only)");
      }
      return;
    }
    Napi::TypedArray ta = info[1].As<Napi::TypedArray>();
    // Over a SharedArrayBuffer only (napi_is_arraybuffer is false for one): the sampler thread
    // keeps using this memory, which an ArrayBuffer's transfer or resize would free under it.
    // 8-byte aligned: the engine does 32-bit atomics and 64-bit stores there.
    if (ta.TypedArrayType() != napi_uint8_array || ta.ByteLength() < kSpanEventsOffset || ta.ArrayBuffer().IsArrayBuffer() ||
        ta.ByteOffset() % 8 != 0) {
      Napi::TypeError::New(env, "SpanChannel: expected an 8-byte aligned Uint8Array over the channel's SharedArrayBuffer").ThrowAsJavaScriptException();
      return;
    }
    uint8_t* base = static_cast<uint8_t*>(ta.As<Napi::Uint8Array>().Data());
    // The capacities JavaScript wrote, checked once against the buffer's size and kept natively:
    // the sampler thread indexes by them, and must not follow later writes to these words.
    const auto word = [base](uint32_t off) { return __atomic_load_n(reinterpret_cast<const uint32_t*>(base + off), __ATOMIC_ACQUIRE); };
    const uint32_t evCap = word(kSpanEvCap), resCap = word(kSpanResCap);
    const auto pow2 = [](uint32_t v) { return v != 0 && (v & (v - 1)) == 0; };
    if (!pow2(evCap) || !pow2(resCap) ||
        uint64_t(kSpanEventsOffset) + uint64_t(evCap) * kSpanEventBytes + uint64_t(resCap) * kSpanResultBytes > ta.ByteLength()) {
      Napi::RangeError::New(env, "SpanChannel: ring capacities do not fit the channel buffer").ThrowAsJavaScriptException();
      return;
    }
    buffer_ = Napi::Persistent(ta.As<Napi::Object>());
    tid_ = uint32_t(syscall(SYS_gettid));
    id_ = engine_->addLog(base, evCap, resCap, tid_, info[2].As<Napi::Number>().DoubleValue(), routes_, lateEnds_);
    env_ = env;
    napi_add_env_cleanup_hook(env, &SpanChannelHandle::OnEnvCleanup, this);
    hooked_ = true;
  }

  ~SpanChannelHandle() override { release(); }

 private:
  static void OnEnvCleanup(void* arg) {
    auto* self = static_cast<SpanChannelHandle*>(arg);
    self->hooked_ = false;
    self->release();
  }

  void release() {
    if (hooked_) {
      napi_remove_env_cleanup_hook(env_, &SpanChannelHandle::OnEnvCleanup, this);
      hooked_ = false;
    }
    // Unregister before the buffer may be collected: the sampler thread stops touching it here.
    if (engine_) engine_->removeLog(id_);
    engine_.reset();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    release();
    if (!buffer_.IsEmpty()) buffer_.Reset();
    return info.Env().Undefined();
  }

  // After the sampler stopped: writes this channel's results that waited for room in its ring.
  // Returns how many still wait.
  Napi::Value Flush(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), engine_ ? double(engine_->flushLog(id_)) : 0.0);
  }

  // lateEnd(handle, label, sec, nsec): an end event that found the ring full (SpanLateEnds). The
  // sampler thread takes it at its next step, running or final, whichever thread polls. Only
  // after release() is there nobody to take it. Called only where the ring was full: a lock and
  // a vector's push.
  Napi::Value LateEnd(const Napi::CallbackInfo& info) {
    if (engine_ && info.Length() >= 4 && info[0].IsNumber() && info[1].IsNumber() && info[2].IsNumber() && info[3].IsNumber()) {
      const auto u32 = [&](size_t i) { return info[i].As<Napi::Number>().Uint32Value(); };
      lateEnds_->push(SpanLateEnds::End{u32(0), u32(1) & ((1u << 30) - 1), u32(2), u32(3)});
    }
    return info.Env().Undefined();
  }

  // addToRoute(id, joules, durationNs, estimated, incomplete): a request the engine did not
  // aggregate (its result came before its end named the route, or exact mode). Non-numbers are
  // ignored here, and non-finite figures by the table.
  Napi::Value AddToRoute(const Napi::CallbackInfo& info) {
    if (info.Length() >= 5 && info[0].IsNumber() && info[1].IsNumber() && info[2].IsNumber()) {
      const double id = info[0].As<Napi::Number>().DoubleValue();
      if (id >= 1 && id < RouteTable::kMaxRoutes) {
        routes_->add(uint32_t(id), info[1].As<Napi::Number>().DoubleValue(), info[2].As<Napi::Number>().DoubleValue(),
                     info[3].ToBoolean().Value(), info[4].ToBoolean().Value());
      }
    }
    return info.Env().Undefined();
  }

  // routeSummaries(ids: Int32Array, out: Float64Array): kRouteSummaryWords numbers per id into
  // out, [count, sum, max, p50, p99, duration sum ns, duration p99 ns, estimated, incomplete];
  // count 0 for an id with no request.
  Napi::Value RouteSummaries(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsTypedArray() || !info[1].IsTypedArray() ||
        info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
        info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
      Napi::TypeError::New(env, "routeSummaries: expected (Int32Array, Float64Array)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Int32Array ids = info[0].As<Napi::Int32Array>();
    Napi::Float64Array out = info[1].As<Napi::Float64Array>();
    const size_t n = std::min(ids.ElementLength(), out.ElementLength() / kRouteSummaryWords);
    for (size_t i = 0; i < n; i++) {
      RouteTable::Summary s{};
      double* o = out.Data() + i * kRouteSummaryWords;
      if (ids[i] <= 0 || !routes_->summary(uint32_t(ids[i]), &s)) {
        std::fill(o, o + kRouteSummaryWords, 0.0);
        continue;
      }
      o[0] = s.count;
      o[1] = s.sum;
      o[2] = s.max;
      o[3] = s.p50;
      o[4] = s.p99;
      o[5] = s.durationSumNs;
      o[6] = s.durationP99Ns;
      o[7] = s.estimated ? 1 : 0;
      o[8] = s.incomplete;
    }
    return env.Undefined();
  }

  // releaseRoutes(ids: Int32Array): a garbage-collected tracker's routes.
  Napi::Value ReleaseRoutes(const Napi::CallbackInfo& info) {
    if (info.Length() >= 1 && info[0].IsTypedArray() && info[0].As<Napi::TypedArray>().TypedArrayType() == napi_int32_array) {
      Napi::Int32Array ids = info[0].As<Napi::Int32Array>();
      routes_->release(ids.Data(), ids.ElementLength());
    }
    return info.Env().Undefined();
  }

  // 1..63: six bits of a handle (src/span-channel.ts); 0 is never a tag, so 0 is never a handle.
  Napi::Value Tag(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), tag_); }
  // gettid(): the thread's id in this process's own pid namespace, as its rows and results number it.
  Napi::Value Tid(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), tid_); }

  std::shared_ptr<SpanEngine> engine_;
  std::shared_ptr<RouteTable> routes_ = std::make_shared<RouteTable>();
  std::shared_ptr<SpanLateEnds> lateEnds_ = std::make_shared<SpanLateEnds>();
  uint32_t tag_ = 1 + gNextTag.fetch_add(1, std::memory_order_relaxed) % 63;
  Napi::ObjectReference buffer_;
  uint64_t id_ = 0;
  uint32_t tid_ = 0;
  napi_env env_ = nullptr;
  bool hooked_ = false;
};

// findPoolThreads(): a round of jobs on libuv's pool from the calling thread's loop (pool_threads.h).
Napi::Value FindPoolThreads(const Napi::CallbackInfo& info) {
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(info.Env(), &loop) == napi_ok && loop != nullptr) findPoolThreads(loop);
  return info.Env().Undefined();
}

// poolThreads(): the tids found so far, for tests.
Napi::Value PoolThreads(const Napi::CallbackInfo& info) {
  const std::vector<uint32_t> tids = foundPoolThreads();
  Napi::Array out = Napi::Array::New(info.Env(), tids.size());
  for (size_t i = 0; i < tids.size(); i++) out.Set(uint32_t(i), Napi::Number::New(info.Env(), tids[i]));
  return out;
}

}  // namespace

void InitSpanBinding(Napi::Env env, Napi::Object exports) {
  exports.Set("SpanChannel", SpanChannelHandle::Define(env));
  exports.Set("findPoolThreads", Napi::Function::New(env, FindPoolThreads, "findPoolThreads"));
  exports.Set("poolThreads", Napi::Function::New(env, PoolThreads, "poolThreads"));
}

}  // namespace jouletrace
