// N-API face of the energy sources: openSource(opts) -> NativeEnergySource, probeSources(opts).
// Options arrive validated by src/source-options.ts; only cheap guards remain here.
#include "energy/source_binding.h"

#include <cstring>

#include "energy/cpu_info.h"
#include "energy/source_js.h"
#include "errno_name.h"
#include "napi_util.h"

namespace jouletrace {
namespace {

// Tags our wrapped objects so an object wrapped by another class (a tracker, a sampler) is never
// unwrapped as an energy source.
const napi_type_tag kSourceTag = {0x6a6f756c65747261ull, 0x6365736f75726365ull};

class NativeEnergySource : public Napi::ObjectWrap<NativeEnergySource> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeEnergySource",
                       {InstanceAccessor<&NativeEnergySource::Name>("name"),
                        InstanceAccessor<&NativeEnergySource::Domains>("domains"),
                        InstanceAccessor<&NativeEnergySource::Skipped>("skipped"),
                        InstanceAccessor<&NativeEnergySource::NotCounting>("notCounting"),
                        InstanceAccessor<&NativeEnergySource::Closed>("closed"),
                        InstanceMethod<&NativeEnergySource::Read>("read"),
                        InstanceMethod<&NativeEnergySource::Close>("close")});
  }

  explicit NativeEnergySource(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeEnergySource>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) {
      throwCoded(env, "ERR_INVALID_ARG_TYPE", "NativeEnergySource expects an options object");
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    SourceOptions opts = sourceOptionsFromJs(o);
    std::string which = getString(o, "source", "auto");
    SourceError err;
    source_ = openEnergySource(which, opts, &err, &skipped_);
    if (!source_) {
      throwSourceError(env, err);
      return;
    }
    name_ = source_->name();
    domains_ = source_->domains();
    notCounting_ = source_->notCounting();
    readings_.resize(domains_.size());
    napi_type_tag_object(env, info.This(), &kSourceTag);
  }

  std::unique_ptr<EnergySource> release() { return std::move(source_); }
  EnergySource* get() { return source_.get(); }

 private:
  bool checkOpen(Napi::Env env) {
    if (source_) return true;
    throwCoded(env, "ERR_JOULETRACE_CLOSED", "the energy source is closed");
    return false;
  }

  Napi::Value Name(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), name_); }
  Napi::Value Domains(const Napi::CallbackInfo& info) { return domainsToJs(info.Env(), domains_); }
  Napi::Value Skipped(const Napi::CallbackInfo& info) { return sourceStatusesToJs(info.Env(), skipped_); }
  Napi::Value NotCounting(const Napi::CallbackInfo& info) { return domainsToJs(info.Env(), notCounting_); }
  Napi::Value Closed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !source_); }

  // -> { timeNs: bigint, raw: BigUint64Array, ticks: BigUint64Array, status: 0 | -errno, error?: "EIO" }
  Napi::Value Read(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!checkOpen(env)) return env.Undefined();
    int rc = source_->read(readings_.data());
    uint64_t t = monotonicNs();
    size_t n = readings_.size();
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, 2 * n * sizeof(uint64_t));
    uint64_t* p = static_cast<uint64_t*>(ab.Data());
    for (size_t i = 0; i < n; i++) {
      p[i] = readings_[i].raw;
      p[n + i] = readings_[i].ticks;
    }
    Napi::Object r = Napi::Object::New(env);
    r.Set("timeNs", Napi::BigInt::New(env, t));
    napi_value raw, ticks;
    napi_create_typedarray(env, napi_biguint64_array, n, ab, 0, &raw);
    napi_create_typedarray(env, napi_biguint64_array, n, ab, n * sizeof(uint64_t), &ticks);
    r.Set("raw", Napi::Value(env, raw));
    r.Set("ticks", Napi::Value(env, ticks));
    r.Set("status", rc);
    if (rc < 0) r.Set("error", errnoName(-rc));
    return r;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    source_.reset();  // closes every fd; a second close finds nothing to do
    return info.Env().Undefined();
  }

  std::unique_ptr<EnergySource> source_;
  std::string name_;
  std::vector<Domain> domains_;
  std::vector<Domain> notCounting_;
  std::vector<SourceStatus> skipped_;
  std::vector<DomainReading> readings_;
};

NativeEnergySource* unwrapTagged(Napi::Value v) {
  if (!v.IsObject()) return nullptr;
  bool tagged = false;
  if (napi_check_object_type_tag(v.Env(), v, &kSourceTag, &tagged) != napi_ok || !tagged) return nullptr;
  void* p = nullptr;
  if (napi_unwrap(v.Env(), v, &p) != napi_ok) return nullptr;
  return static_cast<NativeEnergySource*>(p);
}

Napi::Value OpenSource(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* ctor = static_cast<Napi::FunctionReference*>(info.Data());
  Napi::Value opts = info.Length() > 0 && info[0].IsObject() ? info[0] : Napi::Object::New(env);
  Napi::Object obj = ctor->New({opts});
  if (env.IsExceptionPending()) return env.Undefined();
  return obj;
}

Napi::Object cpuToJs(Napi::Env env, const CpuIdentity& id) {
  Napi::Object c = Napi::Object::New(env);
  c.Set("vendor", vendorName(id.vendor));
  c.Set("family", id.family);
  c.Set("model", id.model);
  c.Set("brand", id.brand);
  return c;
}

// -> { cpu: {vendor, family, model, brand}, sources: [{source, available, code?, message?, domains}] }
Napi::Value ProbeSources(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SourceOptions opts = info.Length() > 0 && info[0].IsObject() ? sourceOptionsFromJs(info[0].As<Napi::Object>()) : SourceOptions();
  Napi::Object r = Napi::Object::New(env);
  r.Set("cpu", cpuToJs(env, detectCpu(opts)));
  r.Set("sources", sourceStatusesToJs(env, probeEnergySources(opts)));
  return r;
}

Napi::Value CpuIdentityJs(const Napi::CallbackInfo& info) {
  SourceOptions opts = info.Length() > 0 && info[0].IsObject() ? sourceOptionsFromJs(info[0].As<Napi::Object>()) : SourceOptions();
  return cpuToJs(info.Env(), detectCpu(opts));
}

}  // namespace

EnergySource* peekEnergySource(Napi::Value v) {
  NativeEnergySource* s = unwrapTagged(v);
  return s ? s->get() : nullptr;
}

std::unique_ptr<EnergySource> releaseEnergySource(Napi::Value v) {
  NativeEnergySource* s = unwrapTagged(v);
  return s ? s->release() : nullptr;
}

void InitSourceBinding(Napi::Env env, Napi::Object exports) {
  Napi::Function cls = NativeEnergySource::Define(env);
  // One constructor reference per environment (main thread or worker), freed with it.
  auto* ctor = new Napi::FunctionReference(Napi::Persistent(cls));
  env.AddCleanupHook([ctor]() { delete ctor; });
  exports.Set("NativeEnergySource", cls);
  exports.Set("openSource", Napi::Function::New(env, OpenSource, "openSource", ctor));
  exports.Set("probeSources", Napi::Function::New(env, ProbeSources, "probeSources"));
  exports.Set("cpuIdentity", Napi::Function::New(env, CpuIdentityJs, "cpuIdentity"));
}

}  // namespace jouletrace
