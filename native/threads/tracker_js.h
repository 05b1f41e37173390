// What the ThreadTracker wrapper and the Sampler's binding share.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>

#include "tracker.h"

namespace jouletrace {

// TrackerStats as the JS object both the ThreadTracker wrapper and Sampler.stats() report.
Napi::Object trackerStatsToJs(Napi::Env env, const TrackerStats& s);

}  // namespace jouletrace
