// Layout of a span channel: one SharedArrayBuffer per (sampler, JavaScript thread), written by
// JavaScript (events) and by the sampler thread (results). Mirrored in src/span-channel.ts.
//
//   byte   0  unused              (was the event head: events are now found by their check word)
//   byte  64  i32 event tail      (native, release)
//   byte 128  i32 result head     (native, release, after writing a result)
//   byte 192  i32 result tail     (JS: Atomics.store)
//   byte 256  i32 event capacity  (power of two, set by JS)
//   byte 260  i32 result capacity (power of two, set by JS)
//   byte 264  i32 events dropped  (JS: the ring was full)
//   byte 268  i32 results dropped (native: the ring was full)
//   byte 272  i32 running         (native: 1 while the sampler samples, 0 stopped, 2 closed)
//   byte 512  events:  capacity × 32 bytes, u32 [check, seq, handle, type | label << 2,
//                                               CLOCK_MONOTONIC s, ns, unused × 2]
//                      (a request's events carry its route's id, or 0, where a span's begin has
//                      its label; an end's kSpanEndSilent bit: JavaScript wants no result)
//   then      results: capacity × 64 bytes, f64 [handle, label id, startNs, endNs, onCpuNs,
//                                               joules, dynamicJoules (NaN: none), flags]
// Counters are free-running 32-bit integers; capacity < 2^30 keeps their differences exact.
//
// JavaScript writes an event with plain stores (an Atomics.store is a locked instruction, twice
// per span) and no head index, seq last. The sampler reads seq first (acquire) and takes the
// event at its tail when seq is the tail and the check word matches spanEventCheck() of the other
// fields; anything else is an event not yet (fully) visible, read again at the next step.
// JavaScript starts every slot's seq one lap behind.
#pragma once

#include <cstdint>

namespace jouletrace {

constexpr uint32_t kSpanEvHead = 0, kSpanEvTail = 64, kSpanResHead = 128, kSpanResTail = 192;
constexpr uint32_t kSpanEvCap = 256, kSpanResCap = 260, kSpanEvDropped = 264;
constexpr uint32_t kSpanRunning = 272;
constexpr int32_t kSpanClosed = 2;  // the running word of a closed sampler's channels
constexpr uint32_t kSpanEventsOffset = 512;
constexpr uint32_t kSpanEventBytes = 32, kSpanResultBytes = 64;

// The same sum as eventCheck() in src/span-channel.ts (Math.imul is the low 32 bits of the
// product; JavaScript's |0 wraps the sum as uint32 arithmetic does).
inline uint32_t spanEventCheck(uint32_t seq, uint32_t handle, uint32_t typeLabel, uint32_t sec, uint32_t nsec) {
  return seq * 0x9e3779b1u + handle * 0x85ebca77u + typeLabel * 0xc2b2ae3du + sec * 0x27d4eb2fu + nsec * 0x165667b1u +
         0x6a09e667u;
}

// A span handle's low 16 bits are its slot in the channel (src/span-channel.ts): at most one span
// holds a slot from begin() until its result has been collected.
constexpr uint32_t kSpanSlots = 1u << 16;

enum SpanEventType : uint32_t {
  // An exclusive span of request tracking's own (an exact-mode request's callback): charged as
  // kSpanBegin's, but with the thread's density inside such spans alone (see SpanEngine).
  kSpanBeginInternal = 0,
  kSpanBegin = 1,        // an exclusive span: the thread's own energy
  kSpanEnd = 2,
  kSpanBeginShared = 3,  // a request: fair share of its thread's and the pool's energy among those in flight
};

// In a request's end event, beside its route id (< 2^22): aggregate it, write no result.
constexpr uint32_t kSpanEndSilent = 1u << 22;
constexpr uint32_t kSpanRouteMask = kSpanEndSilent - 1;

enum SpanResultFlags : uint32_t {
  kSpanIncomplete = 1u << 0,
  kSpanEstimated = 1u << 1,
  kSpanShared = 1u << 2,
  kSpanAggregated = 1u << 3,  // a request the engine added to its route (RouteTable)
};

}  // namespace jouletrace
