// libuv's thread-pool threads, by tid, for the pool's part of shared-mode requests. libuv names
// them "libuv-worker" from 1.50 on; before that (Node 20 ships 1.46) they carry the process's
// name, as V8's own threads do, so they are found by running one job on each.
#pragma once

#include <uv.h>

#include <cstdint>
#include <vector>

namespace jouletrace {

// Queues one job per pool thread on `loop` (the calling JavaScript thread's). Each notes the
// thread it runs on and holds it until all have started (at most kPoolWait, and no more than
// kPoolQuiet after the last new thread), so that each lands on a thread of its own. Returns at
// once; does nothing while a round runs, once every thread of the pool is known, or after a round
// that found no new thread.
void findPoolThreads(uv_loop_t* loop);

// The pool threads found so far; any thread may call.
std::vector<uint32_t> foundPoolThreads();

// Changes whenever foundPoolThreads() grows: one atomic load, so that the sampler thread can look
// every step and take up a thread as soon as a round finds it, not at its next /proc rescan.
uint64_t foundPoolGeneration();

}  // namespace jouletrace
