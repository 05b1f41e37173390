#include "spans/pool_threads.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>

namespace jouletrace {

namespace {

// libuv's MAX_THREADPOOL_SIZE.
constexpr unsigned kMaxPoolThreads = 1024;
// How long a job holds its thread for the others: an idle pool starts them all within
// microseconds; only a thread busy with other work keeps the rest waiting, and is missed.
constexpr auto kPoolWait = std::chrono::milliseconds(100);
// A round also ends once no new thread has come for this long: where the pool is smaller than
// the environment now says (UV_THREADPOOL_SIZE raised after libuv read it at its first job, as an
// ES module's top-level code does), its threads would otherwise wait out kPoolWait each time.
constexpr auto kPoolQuiet = std::chrono::milliseconds(20);

struct Round {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<uint32_t> found;  // every pool thread seen, all rounds
  std::vector<uint32_t> seen;   // this round's
  unsigned want = 0, left = 0;
  size_t foundBefore = 0;  // found.size() when this round began
  bool running = false;
  bool exhausted = false;  // a round found no new thread: no more rounds
  uint64_t takenUp = 0;    // poolTakenUp()'s generation
  int watchers = 0;        // span engines watching the pool (watchPool())
  std::chrono::steady_clock::time_point deadline, lastArrival;
  uv_work_t jobs[kMaxPoolThreads];
};

// Bumped (under Round::mu) each time Round::found grows.
std::atomic<uint64_t> foundGeneration{0};

// Never destroyed: at exit, libuv may run a job of a round after static destructors.
Round& theRound() {
  static Round* r = new Round();
  return *r;
}

// The pool's size as libuv's init_threads() reads it from the environment at its first job.
unsigned poolSize() {
  unsigned n = 4;
  if (const char* v = getenv("UV_THREADPOOL_SIZE")) n = unsigned(atoi(v));
  if (n == 0) n = 1;
  return std::min(n, kMaxPoolThreads);
}

bool has(const std::vector<uint32_t>& v, uint32_t tid) { return std::find(v.begin(), v.end(), tid) != v.end(); }

void arrive(uv_work_t*) {
  Round& r = theRound();
  const uint32_t tid = uint32_t(syscall(SYS_gettid));
  std::unique_lock<std::mutex> lock(r.mu);
  if (!has(r.found, tid)) {
    r.found.push_back(tid);
    foundGeneration.fetch_add(1, std::memory_order_release);
  }
  // A second job on one thread: the round's deadline has passed (its first job returned).
  if (has(r.seen, tid)) return;
  r.seen.push_back(tid);
  r.lastArrival = std::chrono::steady_clock::now();
  r.cv.notify_all();  // the others' quiet window starts again
  while (r.seen.size() < r.want) {
    const auto until = std::min(r.deadline, r.lastArrival + kPoolQuiet);
    if (std::chrono::steady_clock::now() >= until) break;
    r.cv.wait_until(lock, until);
  }
  // Until a watching engine has this round's threads (pool_threads.h, watchPool()).
  while (r.watchers > 0 && r.takenUp < foundGeneration.load(std::memory_order_relaxed) &&
         std::chrono::steady_clock::now() < r.deadline) {
    r.cv.wait_until(lock, r.deadline);
  }
}

void leave(uv_work_t*, int) {
  Round& r = theRound();
  std::lock_guard<std::mutex> lock(r.mu);
  if (--r.left > 0) return;
  r.running = false;  // its jobs' slots may be queued again
  // Nothing new: the pool is smaller than the environment says, or its other threads stay busy.
  // Later trackers would only hold the pool again for nothing.
  if (r.found.size() == r.foundBefore) r.exhausted = true;
}

}  // namespace

void findPoolThreads(uv_loop_t* loop) {
  Round& r = theRound();
  std::lock_guard<std::mutex> lock(r.mu);
  const unsigned want = poolSize();
  if (r.running || r.exhausted || r.found.size() >= want) return;
  r.running = true;
  r.want = r.left = want;
  r.foundBefore = r.found.size();
  r.seen.clear();
  r.lastArrival = std::chrono::steady_clock::now();
  r.deadline = r.lastArrival + kPoolWait;
  // (uv_queue_work fails only without a work callback.)
  for (unsigned i = 0; i < want; i++) uv_queue_work(loop, &r.jobs[i], arrive, leave);
}

std::vector<uint32_t> foundPoolThreads() {
  Round& r = theRound();
  std::lock_guard<std::mutex> lock(r.mu);
  return r.found;
}

uint64_t foundPoolGeneration() { return foundGeneration.load(std::memory_order_acquire); }

void watchPool(int delta) {
  Round& r = theRound();
  std::lock_guard<std::mutex> lock(r.mu);
  r.watchers += delta;
  r.cv.notify_all();  // the last one gone: nothing will take the threads up
}

void poolTakenUp(uint64_t generation) {
  Round& r = theRound();
  std::lock_guard<std::mutex> lock(r.mu);
  if (generation <= r.takenUp) return;
  r.takenUp = generation;
  r.cv.notify_all();
}

}  // namespace jouletrace
