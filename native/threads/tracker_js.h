// TrackerStats as the JS object both the ThreadTracker wrapper and Sampler.stats() report.
#pragma once

#include <napi.h>

#include "tracker.h"

namespace jouletrace {

Napi::Object trackerStatsToJs(Napi::Env env, const TrackerStats& s);

}  // namespace jouletrace
