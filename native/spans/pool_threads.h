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
// kPoolQuiet after the last new thread), so that each lands on a thread of its own, and then,
// while a span engine watches the pool, until one has taken the found threads up (see
// poolTakenUp(); still within kPoolWait). Returns at once; does nothing while a round runs, once
// every thread of the pool is known, or after a round that found no new thread.
void findPoolThreads(uv_loop_t* loop);

// The pool threads found so far; any thread may call.
std::vector<uint32_t> foundPoolThreads();

// Changes whenever foundPoolThreads() grows: one atomic load, so that the sampler thread can look
// every step and take up a thread as soon as a round finds it, not at its next /proc rescan.
uint64_t foundPoolGeneration();

// A span engine that takes found threads up at its steps (running, with a channel) says so with
// watchPool(+1), and watchPool(-1) when it stops. Held by a round: the job queued behind it,
// often the very request's work, would otherwise run before the sampler's next step took the
// thread's figures as its starting point, and go uncounted (the step is 1 ms off, but a sampler
// thread waiting for a CPU was seen 15-20 ms late at every run on a 2-CPU guest).
void watchPool(int delta);
// Sampler thread: every thread found up to `generation` (foundPoolGeneration()) has its starting
// point in the engine. Lets a round's jobs go.
void poolTakenUp(uint64_t generation);

}  // namespace jouletrace
