// Module entry: each part of the addon registers its own exports.
#include <dlfcn.h>
#include <napi.h>

#include <ctime>
#include <mutex>

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
void InitChildWait(Napi::Env env, Napi::Object exports);

static Napi::Value MonotonicNow(const Napi::CallbackInfo& info) {
  return Napi::BigInt::New(info.Env(), monotonicNs());
}

// Calls fn(...args) in no async context: napi_make_callback given no async context runs fn as
// async id 0, for which no async hook fires, with a fresh object as its resource, which holds no
// AsyncLocalStorage store (Node 20 and 22 keep stores on the resource; with Node 24's context
// frames, node::MakeCallback passes an empty frame). Timers and microtasks made in it inherit
// that. The alternatives all keep some context: an AsyncResource, AsyncLocalStorage.snapshot()
// and AsyncResource.bind() hold the stores of the context they were made in and fire every hook's
// before and after; exit() leaves one store. Node's docs warn that no async context loses
// AsyncLocalStorage's context: here that is the point. Called from JS, the scope it opens is
// nested, so it runs no microtasks or nextTick callbacks of its own.
static Napi::Value CallOutsideContexts(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  constexpr size_t kMaxArgs = 3;
  if (info.Length() < 1 || info.Length() > kMaxArgs + 1 || !info[0].IsFunction()) {
    Napi::TypeError::New(env, "callOutsideContexts(fn, ...args): a function and at most 3 arguments").ThrowAsJavaScriptException();
    return Napi::Value();
  }
  napi_value args[kMaxArgs];
  const size_t argc = info.Length() - 1;
  for (size_t i = 0; i < argc; i++) args[i] = info[i + 1];
  napi_value result = nullptr;
  if (napi_make_callback(env, nullptr, Napi::Object::New(env), info[0], argc, args, &result) != napi_ok) {
    if (!env.IsExceptionPending()) Napi::Error::New(env, "callOutsideContexts(): napi_make_callback failed").ThrowAsJavaScriptException();
    return Napi::Value();
  }
  return Napi::Value(env, result);
}

// Node unloads an addon when the last environment that loaded it ends: where only worker threads
// load this one, each worker's exit unmapped it and the next worker mapped a fresh copy. The
// process-wide state here outlives any one environment on purpose (the span engines' registry and
// the sampler ids it issues, the pool-thread rounds libuv may still run at exit, the procfs
// trackers' descriptor count, libbpf's globals): each reload leaked the old copy's and began
// again at nothing, so sampler ids repeated and a context kept from a closed sampler named a new
// one. Once loaded, the library stays until the process ends, as it does when the main thread
// loads it. RTLD_NOLOAD: only the copy already mapped is marked, none is loaded. Were it refused,
// the addon works as before, leaking per reload.
static void keepLoaded() {
  static std::once_flag once;
  std::call_once(once, [] {
    Dl_info self;
    if (dladdr(reinterpret_cast<void*>(&keepLoaded), &self) != 0 && self.dli_fname != nullptr)
      dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
  });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  keepLoaded();
  exports.Set("monotonicNs", Napi::Function::New(env, MonotonicNow, "monotonicNs"));
  exports.Set("callOutsideContexts", Napi::Function::New(env, CallOutsideContexts, "callOutsideContexts"));
  InitSourceBinding(env, exports);
  InitTrackerBinding(env, exports);
  InitSamplerBinding(env, exports);
  InitBenchBinding(env, exports);
  InitSpanBinding(env, exports);
  InitChildWait(env, exports);
  return exports;
}

}  // namespace jouletrace

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return jouletrace::Init(env, exports);
}

NODE_API_MODULE(jouletrace, InitModule)
