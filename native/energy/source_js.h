// Conversions between JS values and the energy-source structs, shared by the source binding
// and the sampler binding. Options arrive already validated by src/source-options.ts.
#pragma once

#include <napi.h>

#include "energy/source.h"
#include "napi_util.h"

namespace jouletrace {

inline SourceOptions sourceOptionsFromJs(const Napi::Object& o) {
  SourceOptions s;
  s.msrPath = getString(o, "msrPath", s.msrPath);
  double shift = getNumber(o, "msrOffsetShift", 0);
  s.msrOffsetShift = shift >= 0 && shift <= 3 ? unsigned(shift) : 0;
  s.powercapRoot = getString(o, "powercapRoot", s.powercapRoot);
  s.sysfsCpuRoot = getString(o, "sysfsCpuRoot", s.sysfsCpuRoot);
  s.perfPmuRoot = getString(o, "perfPmuRoot", s.perfPmuRoot);
  s.procStatPath = getString(o, "procStatPath", s.procStatPath);
  s.modelIdleWatts = getNumber(o, "modelIdleWatts", -1);
  s.modelMaxWatts = getNumber(o, "modelMaxWatts", -1);
  double live = getNumber(o, "liveCheckMs", s.liveCheckMs);
  if (live >= 0 && live <= 10000) s.liveCheckMs = int(live);
  s.msrAmdCores = getBool(o, "msrAmdCores", false);
  Napi::Value id = o.Get("cpuIdentity");
  if (id.IsObject()) {
    Napi::Object c = id.As<Napi::Object>();
    std::string v = getString(c, "vendor", "");
    s.hasCpuOverride = true;
    s.cpuOverride.vendor = v == "intel" ? Vendor::Intel : v == "amd" ? Vendor::Amd : v == "hygon" ? Vendor::Hygon : Vendor::Unknown;
    s.cpuOverride.family = uint32_t(getNumber(c, "family", 0));
    s.cpuOverride.model = uint32_t(getNumber(c, "model", 0));
  }
  return s;
}

inline Napi::Object domainToJs(Napi::Env env, const Domain& d) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("domain", d.name);
  o.Set("package", d.package);
  o.Set("unitJoules", d.unitJoules);
  o.Set("estimated", d.estimated);
  o.Set("wrapJoules", d.wrapJoules);
  if (d.idleWatts >= 0) o.Set("idleWatts", d.idleWatts);
  return o;
}

inline Napi::Array domainsToJs(Napi::Env env, const std::vector<Domain>& ds) {
  Napi::Array a = Napi::Array::New(env, ds.size());
  for (size_t i = 0; i < ds.size(); i++) a.Set(uint32_t(i), domainToJs(env, ds[i]));
  return a;
}

inline Napi::Array sourceStatusesToJs(Napi::Env env, const std::vector<SourceStatus>& st) {
  Napi::Array a = Napi::Array::New(env, st.size());
  for (size_t i = 0; i < st.size(); i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("source", st[i].name);
    o.Set("available", st[i].available);
    if (!st[i].available) {
      o.Set("code", st[i].error.code);
      o.Set("message", st[i].error.message);
    }
    o.Set("domains", domainsToJs(env, st[i].domains));
    o.Set("notCounting", domainsToJs(env, st[i].notCounting));
    a.Set(uint32_t(i), o);
  }
  return a;
}

// Throws the source error as a JS Error with .code; a failed `auto` lists why each source was skipped.
inline void throwSourceError(Napi::Env env, const SourceError& e) { throwCoded(env, e.code, e.message); }

}  // namespace jouletrace
