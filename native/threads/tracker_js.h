// What the ThreadTracker wrapper and the Sampler's binding share.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>

#include "tracker.h"

namespace jouletrace {

// TrackerStats as the JS object both the ThreadTracker wrapper and Sampler.stats() report.
Napi::Object trackerStatsToJs(Napi::Env env, const TrackerStats& s);

// A live thread's name as /proc has it now (tgid 0: this process), for a tracker whose names may
// be the ones threads had when first seen (ThreadTracker::namesFresh()). Empty when it cannot be
// read: the thread is gone. Three system calls on the calling thread, the JS one.
std::string procThreadComm(uint32_t tgid, uint32_t tid);

}  // namespace jouletrace
