// Small helpers for the N-API layer: errors carrying a `code`, and option reading. Options are
// validated in TypeScript; these only guard against misuse of the private native API.
#pragma once

#include <napi.h>

#include <string>

namespace jouletrace {

// Throws a JS Error with .code set. With C++ exceptions disabled this sets a pending exception;
// callers return immediately afterwards.
inline void throwCoded(Napi::Env env, const std::string& code, const std::string& message) {
  // Node's own ERR_OUT_OF_RANGE is a RangeError, and bad options are TypeError or RangeError.
  Napi::Error e = code == "ERR_OUT_OF_RANGE" ? Napi::RangeError::New(env, message) : Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  e.ThrowAsJavaScriptException();
}

inline std::string getString(const Napi::Object& o, const char* key, const std::string& def) {
  Napi::Value v = o.Get(key);
  return v.IsString() ? v.As<Napi::String>().Utf8Value() : def;
}

inline double getNumber(const Napi::Object& o, const char* key, double def) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : def;
}

inline bool getBool(const Napi::Object& o, const char* key, bool def) {
  Napi::Value v = o.Get(key);
  return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : def;
}

uint64_t monotonicNs();

}  // namespace jouletrace
