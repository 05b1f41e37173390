// Module entry: each part of the addon registers its own exports.
#include <napi.h>

#include <ctime>

#include "napi_util.h"

namespace jouletrace {

uint64_t monotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

void InitSourceBinding(Napi::Env env, Napi::Object exports);
void InitTrackerBinding(Napi::Env env, Napi::Object exports);
void InitSamplerBinding(Napi::Env env, Napi::Object exports);
void InitBenchBinding(Napi::Env env, Napi::Object exports);
void InitSpanBinding(Napi::Env env, Napi::Object exports);

static Napi::Value MonotonicNow(const Napi::CallbackInfo& info) {
  return Napi::BigInt::New(info.Env(), monotonicNs());
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("monotonicNs", Napi::Function::New(env, MonotonicNow, "monotonicNs"));
  InitSourceBinding(env, exports);
  InitTrackerBinding(env, exports);
  InitSamplerBinding(env, exports);
  InitBenchBinding(env, exports);
  InitSpanBinding(env, exports);
  return exports;
}

}  // namespace jouletrace

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return jouletrace::Init(env, exports);
}

NODE_API_MODULE(jouletrace, InitModule)
