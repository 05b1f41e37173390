// Lets other bindings (the sampler) take the C++ source out of a JS NativeEnergySource.
#pragma once

#include <napi.h>

#include <memory>

#include "energy/source.h"

namespace jouletrace {

// The source behind a NativeEnergySource object, or nullptr (no exception set) if `v` is not
// one or was closed. The JS object keeps ownership.
EnergySource* peekEnergySource(Napi::Value v);

// Moves the source out; the JS object behaves as closed afterwards (ERR_JOULETRACE_CLOSED).
std::unique_ptr<EnergySource> releaseEnergySource(Napi::Value v);

}  // namespace jouletrace
