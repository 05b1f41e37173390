#include "spans/pool_threads.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
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

struct Round {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<uint32_t> found;  // every pool thread seen, all rounds
  std::vector<uint32_t> seen;   // this round's
  unsigned want = 0, left = 0;
  bool running = false;
  std::chrono::steady_clock::time_point deadline;
  uv_work_t jobs[kMaxPoolThreads];
};

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
  if (!has(r.found, tid)) r.found.push_back(tid);
  // A second job on one thread: the round's deadline has passed (its first job returned).
  if (has(r.seen, tid)) return;
  r.seen.push_back(tid);
  if (r.seen.size() >= r.want) {
    r.cv.notify_all();
    return;
  }
  r.cv.wait_until(lock, r.deadline, [&r] { return r.seen.size() >= r.want; });
}

void leave(uv_work_t*, int) {
  Round& r = theRound();
  std::lock_guard<std::mutex> lock(r.mu);
  if (--r.left == 0) r.running = false;  // its jobs' slots may be queued again
}

}  // namespace

void findPoolThreads(uv_loop_t* loop) {
  Round& r = theRound();
  std::lock_guard<std::mutex> lock(r.mu);
  const unsigned want = poolSize();
  if (r.running || r.found.size() >= want) return;
  r.running = true;
  r.want = r.left = want;
  r.seen.clear();
  r.deadline = std::chrono::steady_clock::now() + kPoolWait;
  // (uv_queue_work fails only without a work callback.)
  for (unsigned i = 0; i < want; i++) uv_queue_work(loop, &r.jobs[i], arrive, leave);
}

std::vector<uint32_t> foundPoolThreads() {
  Round& r = theRound();
  std::lock_guard<std::mutex> lock(r.mu);
  return r.found;
}

}  // namespace jouletrace
