// Single-producer single-consumer ring of fixed-size records in native memory. The producer
// is the sampler thread; the consumer is JavaScript, which sees the records through an external
// ArrayBuffer (zero copy) and moves the tail through the addon. The memory is reference counted
// so an ArrayBuffer that outlives its sampler still points at valid memory.
#pragma once

#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <memory>

namespace jouletrace {

enum class OverflowPolicy { DropNewest, OverwriteOldest };

class RingBuffer {
 public:
  RingBuffer(uint32_t capacity, uint32_t recordSize, OverflowPolicy policy)
      : capacity_(capacity), mask_(capacity - 1), recordSize_(recordSize), policy_(policy) {
    // A mapping of its own rather than malloc: page-aligned (Float64Array views need 8),
    // zero-filled lazily, and returned to the kernel at once on close — glibc's dynamic mmap
    // threshold would otherwise keep freed multi-megabyte rings in the heap.
    void* p = mmap(nullptr, bytes(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    data_ = p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
  }
  ~RingBuffer() {
    if (data_) munmap(data_, bytes());
  }
  RingBuffer(const RingBuffer&) = delete;
  RingBuffer& operator=(const RingBuffer&) = delete;

  bool ok() const { return data_ != nullptr; }
  uint8_t* data() const { return data_; }
  size_t bytes() const { return size_t(capacity_) * recordSize_; }
  uint32_t capacity() const { return capacity_; }
  uint32_t recordSize() const { return recordSize_; }
  OverflowPolicy policy() const { return policy_; }

  // Producer: returns the slot to fill, or nullptr when the ring is full under DropNewest
  // (the drop is counted). Call publish() after filling.
  uint8_t* beginWrite() {
    uint64_t head = head_.load(std::memory_order_relaxed);
    if (policy_ == OverflowPolicy::DropNewest) {
      uint64_t tail = tail_.load(std::memory_order_acquire);
      if (head - tail >= capacity_) {
        dropped_.fetch_add(1, std::memory_order_relaxed);
        return nullptr;
      }
    } else {
      // Announced before the slot changes (the fence orders this store before the record's), so
      // a reader that finds begun <= n + capacity after reading record n knows it read it whole.
      begun_.store(double(head + 1), std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_release);
    }
    return data_ + size_t(head & mask_) * recordSize_;
  }
  void publish() {
    written_.fetch_add(1, std::memory_order_relaxed);
    head_.store(head_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  }

  // Consumer: the readable range [start, end). Under OverwriteOldest, records the producer has
  // overwritten are skipped (and counted), and while it runs (`producing`) the range keeps a
  // safety margin of half the ring behind the head, so the producer needs capacity/2 more
  // samples before it could touch a record being read. A stopped producer touches none: then
  // every record still in the ring is handed out.
  void acquire(uint64_t* start, uint64_t* end, bool producing) {
    uint64_t head = head_.load(std::memory_order_acquire);
    uint64_t tail = tail_.load(std::memory_order_relaxed);
    if (policy_ == OverflowPolicy::OverwriteOldest) {
      uint64_t margin = producing ? capacity_ / 2 : 0;
      uint64_t oldestSafe = head > capacity_ - margin ? head - (capacity_ - margin) : 0;
      if (tail < oldestSafe) {
        overwritten_.fetch_add(oldestSafe - tail, std::memory_order_relaxed);
        tail = oldestSafe;
        tail_.store(tail, std::memory_order_release);
      }
    }
    *start = tail;
    *end = head;
    acquiredEnd_ = head;
  }

  // Consumer that copied the records of [start, end) out of the ring after acquire(): the oldest
  // record the copy holds whole. The copy may lag acquire() (a JS thread stalled for capacity/2
  // samples between them) and meet the producer. Record n's slot is rewritten only once begun
  // passes n + capacity, and begun is stored before the slot (release fence): the acquire fence
  // after the copy makes any byte it caught of a newer record show as begun past n + capacity.
  uint64_t oldestCopiedIntact() const {
    if (policy_ != OverflowPolicy::OverwriteOldest) return 0;
    std::atomic_thread_fence(std::memory_order_acquire);
    uint64_t begun = uint64_t(begun_.load(std::memory_order_relaxed));
    return begun > capacity_ ? begun - capacity_ : 0;
  }

  // Consumer that decoded all of [from, newTail) before this call (Sampler.read()): marks those
  // records as read. Returns how many of them the producer may have overwritten meanwhile (only possible
  // under OverwriteOldest when the reader stalled for capacity/2 samples). `producing`: whether
  // the producer may still write (a stopped one has joined its thread). `copied`: the reader
  // read a copy taken after acquire(), whose records oldestCopiedIntact() judged; nothing
  // overwrites a copy.
  uint64_t release(uint64_t from, uint64_t newTail, bool producing, bool copied = false) {
    uint64_t torn = 0;
    if (policy_ == OverflowPolicy::OverwriteOldest && !copied) {
      uint64_t head = head_.load(std::memory_order_acquire);
      // A running producer may be filling record `head` already, in the slot of head - capacity;
      // a stopped one left that record intact.
      uint64_t reach = head + (producing ? 1 : 0);
      uint64_t oldestIntact = reach > capacity_ ? reach - capacity_ : 0;
      if (oldestIntact > from) torn = (oldestIntact < newTail ? oldestIntact : newTail) - from;
    }
    releaseJudged(from, newTail, torn);
    return torn;
  }

  // Consumer: as release(), for a consumer that judged each record itself as it left it (with
  // begun()): `torn` of [from, newTail) count as overwritten, the rest as read.
  void releaseJudged(uint64_t from, uint64_t newTail, uint64_t torn) {
    if (torn) overwritten_.fetch_add(torn, std::memory_order_relaxed);
    read_.fetch_add(newTail - from - torn, std::memory_order_relaxed);
    tail_.store(newTail, std::memory_order_release);
  }

  // Only while the producer is stopped.
  void reset() {
    head_.store(0, std::memory_order_relaxed);
    tail_.store(0, std::memory_order_relaxed);
    written_.store(0, std::memory_order_relaxed);
    read_.store(0, std::memory_order_relaxed);
    dropped_.store(0, std::memory_order_relaxed);
    overwritten_.store(0, std::memory_order_relaxed);
    begun_.store(0, std::memory_order_relaxed);
    acquiredEnd_ = 0;
  }

  uint64_t head() const { return head_.load(std::memory_order_acquire); }
  uint64_t tail() const { return tail_.load(std::memory_order_acquire); }
  uint64_t written() const { return written_.load(std::memory_order_relaxed); }
  uint64_t readCount() const { return read_.load(std::memory_order_relaxed); }
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  uint64_t overwritten() const { return overwritten_.load(std::memory_order_relaxed); }

  // Consumer: records the producer has overwritten that nothing has counted yet,
  // [tail, head - capacity), so that stats tell of them before anyone reads. acquire() counts
  // them in overwritten() as it moves the tail past them, release() those a reader held and may
  // have read torn: the sum never counts one twice. It never goes back so long as the consumer
  // has released every record it left (one left whole and lapped afterwards is read, not
  // overwritten): Sampler.stats() has its RingReader release first. `copied`: the consumer reads
  // a copy of what it acquired, which nothing overwrites, so only records past the last
  // acquire() count here.
  uint64_t lapped(bool copied) const {
    if (policy_ != OverflowPolicy::OverwriteOldest) return 0;
    uint64_t head = head_.load(std::memory_order_acquire);
    uint64_t from = tail_.load(std::memory_order_relaxed);
    if (copied && acquiredEnd_ > from) from = acquiredEnd_;
    return head - from > capacity_ ? head - from - capacity_ : 0;
  }

  // Records the producer has begun writing (the one in progress included), as a double so that
  // JavaScript reads it whole in one aligned 8-byte load (two 32-bit halves could straddle a
  // carry). Maintained under OverwriteOldest only; DropNewest never writes a slot being read.
  std::atomic<double>* begun() { return &begun_; }

 private:
  const uint32_t capacity_;
  const uint32_t mask_;
  const uint32_t recordSize_;
  const OverflowPolicy policy_;
  uint8_t* data_ = nullptr;
  // Producer and consumer indices on separate cache lines: no false sharing between the threads.
  alignas(64) std::atomic<uint64_t> head_{0};
  alignas(64) std::atomic<uint64_t> tail_{0};
  alignas(64) std::atomic<uint64_t> written_{0};
  std::atomic<uint64_t> read_{0};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> overwritten_{0};
  // The end of the last acquire(); the consumer's alone.
  uint64_t acquiredEnd_ = 0;
  static_assert(std::atomic<double>::is_always_lock_free && sizeof(std::atomic<double>) == sizeof(double),
                "JavaScript reads begun_ as a plain Float64Array element");
  alignas(64) std::atomic<double> begun_{0};
};

}  // namespace jouletrace
