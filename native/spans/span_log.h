// Layout of a span channel: one SharedArrayBuffer per (sampler, JavaScript thread), written by
// JavaScript (events) and by the sampler thread (results). Mirrored in src/span-channel.ts.
//
//   byte   0  i32 event head      (JS: Atomics.store after writing an event)
//   byte  64  i32 event tail      (native, release)
//   byte 128  i32 result head     (native, release, after writing a result)
//   byte 192  i32 result tail     (JS: Atomics.store)
//   byte 256  i32 event capacity  (power of two, set by JS)
//   byte 260  i32 result capacity (power of two, set by JS)
//   byte 264  i32 events dropped  (JS: the ring was full)
//   byte 268  i32 results dropped (native: the ring was full)
//   byte 272  i32 running         (native: 1 while the sampler samples)
//   byte 512  events:  capacity × 32 bytes, f64 [type, handle, label id, time ns]
//   then      results: capacity × 64 bytes, f64 [handle, label id, startNs, endNs, onCpuNs,
//                                               joules, dynamicJoules (NaN: none), flags]
// Counters are free-running 32-bit integers; capacity < 2^30 keeps their differences exact.
#pragma once

#include <cstdint>

namespace jouletrace {

constexpr uint32_t kSpanEvHead = 0, kSpanEvTail = 64, kSpanResHead = 128, kSpanResTail = 192;
constexpr uint32_t kSpanEvCap = 256, kSpanResCap = 260, kSpanEvDropped = 264, kSpanResDropped = 268;
constexpr uint32_t kSpanRunning = 272;
constexpr uint32_t kSpanEventsOffset = 512;
constexpr uint32_t kSpanEventBytes = 32, kSpanResultBytes = 64;

// A span handle's low 16 bits are its slot in the channel (src/span-channel.ts): at most one span
// holds a slot from begin() until its result has been collected.
constexpr uint32_t kSpanSlots = 1u << 16;

enum SpanEventType : uint32_t {
  kSpanBegin = 1,        // an exclusive span: the thread's own energy
  kSpanEnd = 2,
  kSpanBeginShared = 3,  // a request: fair share of the thread group's energy among those in flight
};

enum SpanResultFlags : uint32_t {
  kSpanIncomplete = 1u << 0,
  kSpanEstimated = 1u << 1,
  kSpanShared = 1u << 2,
};

}  // namespace jouletrace
