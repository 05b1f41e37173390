// One JavaScript thread's span channel to a sampler: the hot path of jouletrace. begin() and
// end() write a 32-byte event into a SharedArrayBuffer ring that the sampler thread drains:
// one process.hrtime() (vDSO clock_gettime, no system call) and six Int32Array stores per call,
// no atomic instruction (see eventCheck), no allocation but hrtime()'s array. Results come back
// through a second ring in the same buffer and are polled off the hot path. Layout:
// native/spans/span_log.h.
import { asJouletraceError, checkIntegerInRange, checkKnownKeys, checkObject, checkString, describe, JouletraceError } from './errors';
import { setResultContext } from './chained-context';
import { ListenerList } from './listeners';
import { registerHandle } from './native-handles';
import { native } from './native';
import { JoulesSummary } from './summaries';
import { EXACT_REQUEST_TOKEN, type SpanLabelStats, type SpanResult } from './span-types';

const EV_TAIL = 16;
const RES_HEAD = 32;
const RES_TAIL = 48;
const EV_CAP = 64;
const RES_CAP = 65;
const EV_DROPPED = 66;
const RUNNING = 68; // 1 running, 0 stopped, SAMPLER_CLOSED
const SAMPLER_CLOSED = 2;
const EVENTS_OFFSET = 512;
const EVENTS_WORD = EVENTS_OFFSET / 4;

// The clock: process.hrtime(), held here: [seconds, nanoseconds] of CLOCK_MONOTONIC (libuv's
// uv_hrtime), written into an event as they are. Node 20's performance.now() is hrtime() plus a
// brand check, and the global `performance` is an accessor of globalThis: a pair of hrtime()
// reads cost 72–77 ns on our test VM in a tight loop, held performance.now() 88–90, the global's
// 95–98. The array it returns costs 32 bytes of heap per call: V8 11.3 does not optimise it
// away, even inlined (test/fixtures/span-allocation.cjs measures it). performance.now()
// allocates 16 bytes a call itself, and a clock through the addon would be an N-API call (the
// addon's monotonicNs(), which also makes a BigInt, costs 95 ns here against 52 for hrtime()).
const hrtime = process.hrtime;
/** hrtime() as a double of nanoseconds (exact for 104 days of uptime), off the hot path. */
function nowNs(): number {
  const t = hrtime();
  return t[0] * 1e9 + t[1];
}

// #lastLabel before the first begin(): equal to no label, so that one is checked too.
const NO_LABEL = Symbol('no label yet');

// Result collection. Every 20 ms (a server with some requests in flight, onSpan listeners):
// each run has a fixed cost of about 15 µs of CPU here (Node's timers and the poll), whatever it
// collects, which an Express server at 3,900 requests/s paid as 0.6 µs per request at 5 ms (by
// `perf`). Every 5 ms while a settle() is pending, so that it resolves soon after its result, and
// while over BUSY_SLOTS spans hold slots: at millions of spans per second, slots would otherwise
// run out between runs and begin() collect thousands of results itself (a span pair measured
// 20–30 ns more in bench/spans.mjs). The timer stops 200 ms after the last span awaiting a result.
const POLL_MS = 20;
const POLL_FAST_MS = 5;
const IDLE_STOP_MS = 200;

/**
 * @internal Calls fn(...args) in no async context: no AsyncLocalStorage's store, whichever
 * context this module was loaded in, and no async hook fired (see the addon's
 * callOutsideContexts). A timer or microtask takes the context it is made in: the result timer,
 * armed by whichever span's begin() found it off (in exact mode, a request's callback), had every
 * tick charged to that request while it was open, and kept the request reachable after it ended.
 * An AsyncResource's scope instead kept the context this module was loaded in (a request's, for
 * a package loaded lazily in a handler), and its before and after hooks ran an exact-mode
 * tracker's hooks re-entrantly, inside the begin() or collection that called it.
 */
export function outsideRequests<A extends unknown[], R>(fn: (...args: A) => R, ...args: A): R {
  return native().callOutsideContexts(fn, ...args) as R;
}

// An exact-mode request's callback: an exclusive span whose density the sampler thread takes
// over such spans alone (span_log.h's kSpanBeginInternal).
const BEGIN_INTERNAL = 0;
const BEGIN = 1;
const END = 2;
const BEGIN_SHARED = 3;
const NUM_SHARED = 1;
const NUM_INTERNAL = 2;
/** Result flags, as NumericResultListener receives them. */
export const FLAG_INCOMPLETE = 1;
export const FLAG_ESTIMATED = 2;
/** A request the sampler thread added to its route's aggregate (its begin or end named a route id). */
export const FLAG_AGGREGATED = 8;
// Route ids of a channel's route table (native/spans/route_table.h): 1 up to this, exclusive.
const MAX_ROUTE_IDS = 1 << 22;
// A request's end event: the bit above its route id, "aggregate it, write no result" (span_log.h).
const END_SILENT = MAX_ROUTE_IDS;
/**
 * Per route id, as SpanChannel.routeSummaries() fills them: count, sum, max, p50, p99, duration
 * sum ns, duration p99 ns, estimated, incomplete (kRouteSummaryWords in span_binding.cc).
 */
export const ROUTE_SUMMARY_WORDS = 9;

// Handles are small integers (V8 Smis, so no allocation): 16 bits of slot, 8 bits of slot
// generation (a reused slot gets a new handle), 6 bits of channel tag, counted process-wide by
// the addon (a handle from another channel, on this thread or another, is recognised as
// foreign; tags repeat after 63 channels). A slot stays reserved from begin() until its result has
// arrived, so a handle names one span until settle() can no longer be waiting for it.
const SLOT_BITS = 16;
const MAX_OPEN = 1 << SLOT_BITS;
const BUSY_SLOTS = MAX_OPEN >> 3; // see POLL_FAST_MS
const GEN_MASK = 0xff;
// A slot's word: generation (bits 0-7), state (8-10), delivery (12-13) and how its result is kept
// (16-17). Delivery, 0: a user's span (SpanResult to settle(), spanStats(), onSpan); NUM_SHARED, a
// request (beginShared), and NUM_INTERNAL, an exact-mode request's callback (beginInternal):
// plain numbers to sharedListeners or internalListeners only. These are not kept for settle()
// (nobody settles them by handle; an object per result would promote every request's result to
// the old generation) and are not the user's spans.
const STATE_SHIFT = 8;
const STATE_BITS = 7 << STATE_SHIFT;
const NUMERIC_SHIFT = 12;
const NUMERIC_BITS = 3 << NUMERIC_SHIFT;
const HOW_SHIFT = 16;
const HOW_BITS = 3 << HOW_SHIFT;
// Slot states.
const FREE = 0;
const OPEN = 1;
const OPEN_DROPPED = 2; // its begin event did not fit in the ring
const ENDED = 3; // waiting for its result
const SETTLED_OPEN = 4; // settled incomplete by stop() while still open

// Tag 0 is never given to a channel: handle 0 stands for a span that could not be measured.
const DROPPED_HANDLE = 0;

// Off the hot path, so that end() stays small enough for V8 to inline.
function notAHandle(h: unknown, method: string): Error {
  if (typeof h === 'object' && h !== null && EXACT_REQUEST_TOKEN in h) {
    return new JouletraceError(
      'ERR_JOULETRACE_FOREIGN_SPAN',
      `${method}: this is a request's token (RequestTracker, exact mode); it ends with its response or tracker.end(), and its energy arrives through tracker.onRequest()`,
    );
  }
  return new TypeError(`${method}: expected a span handle returned by begin() but received ${describe(h)}`);
}

function foreignHandle(h: number, method: string): Error {
  // Channels' tags run from 1 to 63: a number below 2^24 (but 0), or of 2^30 or more, was never
  // a handle.
  const tag = h >>> 24;
  if (tag === 0 || tag > 63) return notAHandle(h, method);
  return new JouletraceError('ERR_JOULETRACE_FOREIGN_SPAN', `${method}: span handle ${h} belongs to another sampler or thread`);
}

/** Number of span slots per channel; a handle's low SLOT_BITS bits are its slot. */
export const SPAN_SLOTS = MAX_OPEN;
/** The slot a span handle occupies, for callers keeping per-span state in arrays. */
export function slotOfHandle(h: number): number {
  return h & (MAX_OPEN - 1);
}

// Events are published without an atomic store. Atomics.store is sequentially consistent, a
// locked instruction on x86 (10 ns here in a tight loop, up to 50 under a server's load, twice
// per span); JavaScript has no cheaper release store. Instead, each event carries its sequence
// number and a check word over all its fields. The sequence number is written last and read
// first: where stores become visible in program order (x86, with V8 emitting them in order), an
// event whose sequence number the sampler sees is complete. The memory model promises neither,
// so the sampler also takes the event only if its check matches: a half-written or stale event
// is read again at the next step. A field left stale changes the check unless the odd
// multipliers below cancel over two or more fields, about 2^-32 per such read.
// Mirrored in native/spans/span_log.h, and written out in #write and beginRequest (keep the four
// alike; every span test fails if #write's differs, most request tests if beginRequest's does).
// Exported for the test that forges an event.
// Math.imul held: each use loads one variable, not a global and its property, which keeps #write's
// bytecode small for V8's inlining budget (see bench/RESULTS.md, "The request's end inlined whole").
const imul = Math.imul;
/** @internal */
export function eventCheck(seq: number, handle: number, typeLabel: number, sec: number, nsec: number): number {
  return (
    (imul(seq, 0x9e3779b1) +
      imul(handle, 0x85ebca77) +
      imul(typeLabel, 0xc2b2ae3d) +
      imul(sec, 0x27d4eb2f) +
      imul(nsec, 0x165667b1) +
      0x6a09e667) |
    0
  );
}
const EVENT_WORDS = 8; // check, seq, handle, type | label << 2, sec, nsec, 2 unused
const EVENT_BYTES = EVENT_WORDS * 4;
const RESULT_WORDS = 8; // f64: handle, label, start, end, on-CPU, joules, dynamic, flags
// The result of a span whose begin never reached the sampler, in the result ring's layout: its
// label and times filled in (see #unmeasured), energy NaN.
const UNMEASURED = Float64Array.of(0, 0, NaN, NaN, NaN, NaN, NaN, FLAG_INCOMPLETE);
// Distinct labels per channel. Each costs about 510 bytes of heap with one span settled (its
// name, map entries and statistics) and up to 33 KB once busy: 2^24 could not be reached, the
// heap ran out at about 8 million. 65,536 of them take 33 MB, within any heap Node sets.
const MAX_LABELS = 1 << 16;
// What a request's span is called where a label is shown (an unmeasured result's), and an
// exact-mode request's callback span (RequestTracker).
const REQUEST_LABEL = '(request)';
export const CALLBACK_LABEL = '(request callback)';
// Interned as each channel is made, beyond the MAX_LABELS of users' spans: request tracking
// never finds the labels used up (every request's begin threw once users' labels reached it).
const OWN_LABELS = [REQUEST_LABEL, CALLBACK_LABEL];

/**
 * Offset from nowNs() to the sampler's CLOCK_MONOTONIC ns: 0 where libuv reads that clock (every
 * Linux libuv so far, seen as the native read falling between two of ours each time), else
 * estimated from the tightest of 7 bracketed reads.
 */
function monotonicOffsetNs(): number {
  const monotonicNs = native().monotonicNs as () => bigint;
  let best = Infinity;
  let offset = 0;
  let sameClock = true;
  for (let i = 0; i < 7; i++) {
    const a = nowNs();
    const n = Number(monotonicNs());
    const b = nowNs();
    if (n < a || n > b) sameClock = false;
    if (b - a < best) {
      best = b - a;
      offset = n - (a + b) / 2;
    }
  }
  return sameClock ? 0 : offset;
}

export interface SpanChannelOptions {
  /**
   * Span events the ring holds (power of two). Default 65536: about 5 ms of begin/end pairs at
   * full speed on one thread, if the sampler thread were starved that long. Never blocking: a
   * begin that finds it full makes an unmeasured span, counted in droppedEvents; an end that
   * does goes to the sampler thread beside the ring at once, counted in lateEnds, and its span
   * settles at its real end (the sampler's stats().spans on its own thread; in a worker, this
   * channel's properties).
   */
  eventCapacity?: number;
  /** Settled results awaiting collection (power of two). Default 16384. */
  resultCapacity?: number;
}

const SPAN_CHANNEL_OPTION_KEYS = ['eventCapacity', 'resultCapacity'] as const;

/**
 * A result as numbers, read in place: r[o + 2] to r[o + 7] are startNs, endNs, onCpuNs, joules,
 * dynamic joules (NaN when unknown) and flags (FLAG_INCOMPLETE | FLAG_ESTIMATED | FLAG_AGGREGATED). Valid only
 * during the call: r is the result ring. (Six doubles passed as arguments to a listener V8 does
 * not inline would be boxed: about 70 bytes of heap per request.)
 */
export type NumericResultListener = (handle: number, r: Float64Array, o: number) => void;

/**
 * @internal Listeners of numeric results: an array, replaced whole when one is added or removed
 * (rarely), walked by index for every request's result: a delivery goes to the list of when it
 * began. Only jouletrace's own (a RequestTracker's two callbacks, each added once: a function is
 * kept once). Records reach onRequest listeners from a microtask; the one user's function called
 * during a delivery is an exact-mode route function, and a tracker it closes lets go of its
 * callbacks only with nothing in flight, when they ignore any result (not one of their handles).
 * So no check for a removal during delivery here, on the request path.
 */
export class NumericListeners {
  list: readonly NumericResultListener[] = [];
  add(l: NumericResultListener): void {
    if (!this.list.includes(l)) this.list = [...this.list, l];
  }
  delete(l: NumericResultListener): void {
    this.list = this.list.filter((x) => x !== l);
  }
}

interface Waiter {
  resolve: (r: SpanResult) => void;
  reject: (e: Error) => void;
  /** Handed to every settle() of this span while it waits. */
  promise: Promise<SpanResult>;
}

class LabelAggregate {
  readonly joules = new JoulesSummary(4096);
  onCpuNs = 0;
  wallNs = 0;
  add(joules: number, estimated: boolean, onCpuNs: number, wallNs: number): void {
    this.joules.add(joules, estimated);
    this.onCpuNs += onCpuNs;
    this.wallNs += wallNs;
  }
  /** The result at kept[b], laid out as KEPT_WORDS. */
  addKept(kept: Float64Array, b: number): void {
    this.joules.addFrom(kept, b + 3, (kept[b + 5] & FLAG_ESTIMATED) !== 0);
    this.onCpuNs += kept[b + 2];
    this.wallNs += kept[b + 1] - kept[b];
  }
}

// A user's span result, kept as numbers in its slot until the slot is reused (for a late
// settle()): start, end, on-CPU, joules, dynamic joules (NaN: none), flags.
const KEPT_WORDS = 6;
// How a slot's result is kept.
const NO_RESULT = 0;
const KEPT_NUMBERS = 1; // in #kept
const KEPT_OBJECT = 2; // in #results (a span whose begin never reached the sampler)

// The addon's side of a channel (native/spans/span_binding.cc).
interface NativeChannel {
  close(): void;
  flush(): number;
  /** An end event that found the ring full, handed to the sampler thread (SpanLateEnds). */
  lateEnd(handle: number, label: number, sec: number, nsec: number): void;
  addToRoute(id: number, joules: number, durationNs: number, estimated: boolean, incomplete: boolean): void;
  routeSummaries(ids: Int32Array, out: Float64Array): void;
  releaseRoutes(ids: Int32Array): void;
  readonly tag: number;
  /** gettid() of the thread that made it: in this process's own pid namespace. */
  readonly tid: number;
}

/** The result of a span the sampler never saw: what it was and when, no energy. */
function unmeasuredResult(label: string, startNs: number, endNs: number): SpanResult {
  return { label, tid: 0, startNs, endNs, onCpuNs: NaN, joules: NaN, dynamicJoules: null, estimated: false, incomplete: true };
}

/** @internal Throws for what begin() refuses as a label (before a span could be measured). */
export function checkLabel(label: unknown): void {
  checkString('label', label);
  const l = label as string;
  if (l.length === 0 || l.length > 200) {
    throw new RangeError(`Expected a label of 1 to 200 characters but received ${JSON.stringify(l.slice(0, 40))} of type string`);
  }
}

function closedBeforeSettled(): JouletraceError {
  return new JouletraceError('ERR_JOULETRACE_CLOSED', 'settle(): the sampler was closed before the span settled; settle spans (or listen with onSpan) before sampler.close()');
}

/**
 * A thread's span channel: what attachSpans() returns in a worker (the sampler's own thread has
 * the sampler's). Its begin() and end() are the hot path.
 */
export class SpanChannel {
  // What begin() and end() touch, first and together: V8 lays an object's fields out in the
  // order they are defined, and on a server each request finds this object out of the L1 cache
  // (the request's own path does not fit it), so each 64-byte line of it touched is a miss
  // (bench/RESULTS.md, "Cache misses counted").
  readonly #i32: Int32Array;
  // Each slot's generation, state, delivery and kept result, in one word (see STATE_SHIFT above):
  // a span's begin and end read and write one array, not four. On a server the caches are cold at
  // each request (the kernel, the load, other work ran since the last one), where a request's
  // accounting takes about twice its warm-cache time, and every typed array touched costs a miss
  // for its header and one for its data (bench/RESULTS.md, "Cold caches").
  readonly #slots = new Int32Array(MAX_OPEN);
  // Free slots in FIFO order, so a settled span's result stays in its slot for as long as
  // possible (about MAX_OPEN later spans) for a late settle().
  readonly #free = new Int32Array(MAX_OPEN);
  #freeHead = 0;
  #freeCount = MAX_OPEN;
  #head = 0;
  #tailSeen = 0;
  readonly #evMask: number;
  readonly #evCap: number;
  readonly #tag: number;
  #timer: NodeJS.Timeout | undefined;
  #contexts: unknown[] | undefined;
  #capture: (() => unknown) | null = null;
  // Never equal to a label passed in, so the first begin() validates its label, whatever it is.
  #lastLabel: unknown = NO_LABEL;
  #lastLabelId = 0;
  // The rest.
  readonly #handle: NativeChannel;
  #routeIds = 0;
  readonly #res: Float64Array;
  readonly #resMask: number;
  readonly #offsetNs: number; // hrtime() to the sampler's CLOCK_MONOTONIC (see monotonicOffsetNs)
  #resTail = 0;
  // Results of users' spans. A SpanResult object is built only for settle() and onSpan
  // listeners: spans ended by the million and never settled one by one (the hot path's usual
  // case) would otherwise leave an object each, held in its slot for a late settle() until
  // about MAX_OPEN spans later, so that every one outlived the young generation (the main thread
  // spent about as long collecting results as on begin() and end(): bench/spans.mjs).
  readonly #kept = new Float64Array(MAX_OPEN * KEPT_WORDS);
  readonly #keptLabel = new Int32Array(MAX_OPEN);
  readonly #results: Array<SpanResult | undefined> = new Array(MAX_OPEN);
  readonly #labels = new Map<string, number>();
  readonly #labelNames: string[] = [];
  readonly #waiters = new Map<number, Waiter>();
  readonly #listeners = new ListenerList<SpanResult[]>();
  readonly #aggregates = new Map<string, LabelAggregate>(); // by label
  readonly #aggregateOf: Array<LabelAggregate | undefined> = []; // the same, by label id
  #period = 0; // the timer's, ms
  #closed = false;
  #closedWithSampler = false; // closeWithSampler(): its errors name the sampler, not the channel
  // Slots in use that wait for no result from the engine: SETTLED_OPEN (it came) and
  // OPEN_DROPPED (none will; end() makes it locally).
  #noResult = 0;
  #idleTicks = 0;
  #lateEndCount = 0;
  /** This channel, or the sampler it reports to (from any thread), is closed. */
  get closed(): boolean {
    return this.#closed || this.#samplerClosed;
  }
  /** Closed from another thread: its channels' running word reads SAMPLER_CLOSED. */
  get #samplerClosed(): boolean {
    return this.#i32[RUNNING] === SAMPLER_CLOSED;
  }
  /** Whether the sampler is running (a shared-memory read: no call into the addon). */
  get running(): boolean {
    return this.#i32[RUNNING] === 1;
  }
  /**
   * @internal Receives shared spans' (requests') results as plain numbers, without a SpanResult
   * object per request: request tracking builds its own record.
   */
  readonly sharedListeners = new NumericListeners();
  /** @internal The same for internal spans (beginInternal: exact-mode request callbacks). */
  readonly internalListeners = new NumericListeners();
  /**
   * @internal Called once, when the channel finds it or its sampler closed (its close(), or a
   * poll that reads the sampler closed from another thread): an exact-mode tracker lets go of
   * its async hook, which costs every callback of the process, once nothing can begin here.
   */
  readonly closeListeners = new Set<() => void>();
  #toldClosed = false;

  /** attachSpans() without its check of the process the context came from: use attachSpans(). */
  constructor(samplerId: number, options: SpanChannelOptions = {}) {
    checkIntegerInRange('samplerId', samplerId, 1, Number.MAX_SAFE_INTEGER);
    const opts = checkObject('options', options);
    checkKnownKeys('options', opts, SPAN_CHANNEL_OPTION_KEYS);
    const evCap = opts.eventCapacity === undefined ? 65536 : checkIntegerInRange('options.eventCapacity', opts.eventCapacity, 16, 1 << 24);
    const resCap = opts.resultCapacity === undefined ? 16384 : checkIntegerInRange('options.resultCapacity', opts.resultCapacity, 16, 1 << 22);
    if ((evCap & (evCap - 1)) !== 0) throw new RangeError(`Expected a power of two for options.eventCapacity but received ${evCap} of type number`);
    if ((resCap & (resCap - 1)) !== 0) throw new RangeError(`Expected a power of two for options.resultCapacity but received ${resCap} of type number`);
    const bytes = EVENTS_OFFSET + evCap * EVENT_BYTES + resCap * RESULT_WORDS * 8;
    const sab = new SharedArrayBuffer(bytes);
    this.#i32 = new Int32Array(sab);
    // Every slot starts with the sequence number of the lap before, so an unwritten slot is
    // never taken for the event the sampler expects there.
    for (let i = 0; i < evCap; i++) this.#i32[EVENTS_WORD + i * EVENT_WORDS + 1] = (i - evCap) | 0;
    this.#res = new Float64Array(sab, EVENTS_OFFSET + evCap * EVENT_BYTES, resCap * RESULT_WORDS);
    this.#i32[EV_CAP] = evCap;
    this.#i32[RES_CAP] = resCap;
    this.#evMask = evCap - 1;
    this.#evCap = evCap;
    this.#resMask = resCap - 1;
    for (let i = 0; i < MAX_OPEN; i++) this.#free[i] = i;
    for (const l of OWN_LABELS) this.#intern(l);
    const Channel = native().SpanChannel as new (id: number, buf: Uint8Array, offsetNs: number) => NativeChannel;
    this.#offsetNs = monotonicOffsetNs();
    let handle: NativeChannel;
    try {
      handle = new Channel(samplerId, new Uint8Array(sab), this.#offsetNs);
    } catch (e) {
      throw asJouletraceError(e);
    }
    this.#handle = handle;
    this.tid = handle.tid;
    this.#tag = handle.tag;
    registerHandle(this, sab); // tests read the ring's words
  }

  #intern(label: unknown): number {
    checkLabel(label);
    const l = label as string;
    const id = this.#labelNames.length;
    if (id >= MAX_LABELS + OWN_LABELS.length) {
      throw new RangeError(`Too many distinct span labels on this thread (${MAX_LABELS}): labels name code paths, not values (an id or a URL in a label is a leak)`);
    }
    this.#labelNames.push(l);
    this.#labels.set(l, id);
    return id;
  }

  /** false: the event ring is full (the sampler thread has not drained it for a while). */
  #write(type: number, handle: number, label: number, sec: number, nsec: number): boolean {
    const head = this.#head;
    if (((head - this.#tailSeen) | 0) >= this.#evCap) {
      this.#tailSeen = Atomics.load(this.#i32, EV_TAIL);
      if (((head - this.#tailSeen) | 0) >= this.#evCap) return false;
    }
    // Through the header's array, not one of its own: one typed array fewer per event (see #slots).
    const o = EVENTS_WORD + (head & this.#evMask) * EVENT_WORDS;
    const ev = this.#i32;
    const typeLabel = type | (label << 2);
    ev[o + 2] = handle;
    ev[o + 3] = typeLabel;
    ev[o + 4] = sec;
    ev[o + 5] = nsec;
    // eventCheck(), written out: as a call it counts twice against V8's inlining budget in a
    // caller inlining this (once within this function's own optimised code), and the request's
    // end then kept it out of line. (beginRequest() writes its event out too.)
    ev[o] =
      (imul(head, 0x9e3779b1) +
        imul(handle, 0x85ebca77) +
        imul(typeLabel, 0xc2b2ae3d) +
        imul(sec, 0x27d4eb2f) +
        imul(nsec, 0x165667b1) +
        0x6a09e667) |
      0;
    ev[o + 1] = head; // last: the sampler reads it first
    this.#head = (head + 1) | 0;
    return true;
  }

  // route: a request's (BEGIN_SHARED) route id, which its event carries instead of a label.
  #begin(label: string, type: number, numeric: number, route = 0): number {
    if (this.#i32[RUNNING] !== 1) throw this.#notRunning(type);
    // Most begin() calls repeat the label before them (a request's, a loop's): compared first,
    // beside a map lookup of about 50 instructions.
    let id: number | undefined;
    if (label === this.#lastLabel) id = this.#lastLabelId;
    else {
      id = this.#labels.get(label);
      if (id === undefined) id = this.#intern(label);
      this.#lastLabel = label;
      this.#lastLabelId = id;
    }
    // For a user's span only (requests and callback spans carry their tracker's context), and
    // before a slot is taken: a capture that throws leaves nothing open.
    let context: unknown;
    if (numeric === 0 && this.#capture !== null) {
      context = this.#capture();
      // The capture may have stopped or closed the sampler: nothing could end or settle the span.
      if (this.#i32[RUNNING] !== 1) throw this.#notRunning(type);
    }
    if (this.#freeCount === 0 && (this.poll(), this.#freeCount === 0)) {
      // Every slot is open or awaiting its result (more than ~4 million spans per second on one
      // thread, or spans never ended): this span is not measured, and counted, rather than
      // throwing on the hot path.
      this.#droppedSpans++;
      return DROPPED_HANDLE;
    }
    const slot = this.#free[this.#freeHead];
    this.#freeHead = (this.#freeHead + 1) & (MAX_OPEN - 1);
    this.#freeCount--;
    if (this.#timer === undefined) this.#ensurePolling();
    const slots = this.#slots;
    const word = slots[slot];
    const gen = (word + 1) & GEN_MASK;
    // A result object is held only for a span whose begin never reached the sampler (KEPT_OBJECT).
    if ((word & HOW_BITS) === KEPT_OBJECT << HOW_SHIFT) this.#results[slot] = undefined;
    const h = (this.#tag << 24) | (gen << SLOT_BITS) | slot;
    const t = hrtime();
    if (this.#write(type, h, type === BEGIN_SHARED ? route : id, t[0], t[1])) {
      slots[slot] = gen | (OPEN << STATE_SHIFT) | (numeric << NUMERIC_SHIFT) | (NO_RESULT << HOW_SHIFT);
    } else {
      slots[slot] = gen | (OPEN_DROPPED << STATE_SHIFT) | (numeric << NUMERIC_SHIFT) | (NO_RESULT << HOW_SHIFT);
      this.#noResult++;
      Atomics.add(this.#i32, EV_DROPPED, 1);
      // Kept for its unmeasured result: what it was and when, if not its energy.
      this.#keptLabel[slot] = id;
      this.#kept[slot * KEPT_WORDS] = t[0] * 1e9 + t[1] + this.#offsetNs;
    }
    if (this.#contexts !== undefined) this.#contexts[slot] = context;
    return h;
  }

  // Named as its caller knows it: a shared span is a request tracker's start().
  #notRunning(type: number): JouletraceError {
    const method = type === BEGIN_SHARED ? 'start()' : 'begin()';
    if (this.#samplerClosed || this.#closedWithSampler) {
      const remedy = type === BEGIN_SHARED ? 'create a new Sampler and RequestTracker' : 'create a new Sampler';
      return new JouletraceError('ERR_JOULETRACE_CLOSED', `${method}: the sampler is closed; ${remedy}`);
    }
    if (this.#closed) {
      return new JouletraceError('ERR_JOULETRACE_CLOSED', `${method}: this span channel is closed; attach a new one: attachSpans(sampler.spanContext())`);
    }
    return new JouletraceError('ERR_JOULETRACE_NOT_STARTED', `${method}: the sampler is not running; call start() first`);
  }

  begin(label: string): number {
    return this.#begin(label, BEGIN, 0);
  }

  /** @internal An exclusive span of jouletrace's own: its result reaches internalListeners only, as numbers. */
  beginInternal(label: string): number {
    return this.#begin(label, BEGIN_INTERNAL, NUM_INTERNAL);
  }

  /**
   * @internal A request: energy shared fairly among the shared spans in flight (see
   * RequestTracker). `route`: its route's id (newRouteId()) where known now, else 0 (its end
   * names it); the sampler thread adds the request to that route as it settles.
   */
  beginShared(route: number): number {
    return this.#begin(REQUEST_LABEL, BEGIN_SHARED, NUM_SHARED, route);
  }

  /**
   * @internal beginShared() for the request tracker, which begins one per request of a server:
   * -1 rather than an error while the sampler is not running (a server goes on serving).
   * Anything but the common case goes through #begin().
   */
  beginRequest(route: number): number {
    if (this.#freeCount === 0 || this.#i32[RUNNING] !== 1 || this.#timer === undefined || this.#contexts !== undefined) {
      if (this.#i32[RUNNING] !== 1) return -1;
      return this.beginShared(route);
    }
    const slot = this.#free[this.#freeHead];
    const slots = this.#slots;
    const word = slots[slot];
    // A slot that held a result object (KEPT_OBJECT) or whose event would not fit: #begin().
    if ((word & HOW_BITS) === KEPT_OBJECT << HOW_SHIFT || ((this.#head - this.#tailSeen) | 0) >= this.#evCap) {
      return this.beginShared(route);
    }
    this.#freeHead = (this.#freeHead + 1) & (MAX_OPEN - 1);
    this.#freeCount--;
    const gen = (word + 1) & GEN_MASK;
    const h = (this.#tag << 24) | (gen << SLOT_BITS) | slot;
    const t = hrtime();
    // #write() written out (room was checked above). Through the call, this function was small
    // enough for V8 to inline into RequestTracker.track() whenever track() was compiled while
    // this one had no optimised code (after a deoptimisation: an event ring found full under a
    // burst), and track() then had no inlining budget left for #write() and hrtime(): about 100
    // instructions a request more (callgrind), for as long as that code lived. Written out, it is
    // over the size V8 inlines (460 bytes of bytecode), and hrtime() always inlines into it.
    const head = this.#head;
    const o = EVENTS_WORD + (head & this.#evMask) * EVENT_WORDS;
    const ev = this.#i32;
    const typeLabel = BEGIN_SHARED | (route << 2);
    const sec = t[0];
    const nsec = t[1];
    ev[o + 2] = h;
    ev[o + 3] = typeLabel;
    ev[o + 4] = sec;
    ev[o + 5] = nsec;
    ev[o] =
      (imul(head, 0x9e3779b1) +
        imul(h, 0x85ebca77) +
        imul(typeLabel, 0xc2b2ae3d) +
        imul(sec, 0x27d4eb2f) +
        imul(nsec, 0x165667b1) +
        0x6a09e667) |
      0;
    ev[o + 1] = head; // last: the sampler reads it first
    this.#head = (head + 1) | 0;
    slots[slot] = gen | (OPEN << STATE_SHIFT) | (NUM_SHARED << NUMERIC_SHIFT) | (NO_RESULT << HOW_SHIFT);
    return h;
  }

  /** Whether handle h is the span its slot holds now (not an earlier one in that slot). */
  #current(h: number, slot: number): boolean {
    return (this.#slots[slot] & GEN_MASK) === ((h >>> SLOT_BITS) & GEN_MASK);
  }

  #stateOf(slot: number): number {
    return (this.#slots[slot] & STATE_BITS) >> STATE_SHIFT;
  }

  #setState(slot: number, state: number): void {
    this.#slots[slot] = (this.#slots[slot] & ~STATE_BITS) | (state << STATE_SHIFT);
  }

  /** 0 (a user's span), NUM_SHARED or NUM_INTERNAL. */
  #numericOf(slot: number): number {
    return (this.#slots[slot] & NUMERIC_BITS) >> NUMERIC_SHIFT;
  }

  #keptHowOf(slot: number): number {
    return (this.#slots[slot] & HOW_BITS) >> HOW_SHIFT;
  }

  #setKeptHow(slot: number, how: number): void {
    this.#slots[slot] = (this.#slots[slot] & ~HOW_BITS) | (how << HOW_SHIFT);
  }

  #slotOf(h: number, method: string): number {
    if (typeof h !== 'number' || (h | 0) !== h || h < 0) throw notAHandle(h, method);
    if (h >>> 24 !== this.#tag) throw foreignHandle(h, method);
    const slot = h & (MAX_OPEN - 1);
    if (!this.#current(h, slot)) {
      throw new JouletraceError('ERR_JOULETRACE_STALE_SPAN', `${method}: span handle ${h} is stale (its span already ended)`);
    }
    return slot;
  }

  end(h: number): void {
    if (h === DROPPED_HANDLE) return;
    const slot = this.#slotOf(h, 'end()');
    // The slot's word read once and its bits tested here, not through #stateOf() and the like:
    // end() stays small enough for V8 to inline into a caller's loop.
    const word = this.#slots[slot];
    if ((word & NUMERIC_BITS) !== 0 && !this.#endingOwn) {
      // A request's span (RequestTracker) ended by hand would cut its accounting short.
      throw new JouletraceError('ERR_JOULETRACE_FOREIGN_SPAN', `end(): span handle ${h} is a request's (RequestTracker); it ends with its response`);
    }
    const state = (word & STATE_BITS) >> STATE_SHIFT;
    if (state === OPEN) {
      const t = hrtime();
      if (!this.#write(END, h, 0, t[0], t[1])) this.#endLate(h, 0, t);
      this.#slots[slot] = (word & ~STATE_BITS) | (ENDED << STATE_SHIFT);
    } else if (state === SETTLED_OPEN) {
      // stop() already settled it (incomplete); the slot can go.
      this.#setState(slot, FREE);
      this.#noResult--;
      this.#release(slot);
    } else if (state === OPEN_DROPPED) {
      this.#noResult--;
      // Its begin never reached the sampler: it settles now, unmeasured (NaN, incomplete).
      this.#setState(slot, ENDED);
      const r = this.#unmeasured(slot);
      if (this.#numericOf(slot) !== 0) this.#deliverNumeric(h, slot, r, 0);
      else this.#dispatch([unmeasuredResult(this.#labelNames[r[1]] ?? '(unknown)', r[2], r[3])], [h]);
    } else {
      throw new JouletraceError('ERR_JOULETRACE_STALE_SPAN', `end(): span handle ${h} already ended`);
    }
  }

  // end() for request tracking's own spans (beginShared, beginInternal), which users may not end.
  // A flag rather than a second entry point: end() stays one function, which V8 inlines into a
  // caller's loop (split into two, the span pair measured 17 ns more, 8 alternated runs).
  #endingOwn = false;
  /** @internal */
  endOwn(h: number): void {
    this.#endingOwn = true;
    try {
      this.end(h);
    } finally {
      this.#endingOwn = false;
    }
  }

  /**
   * @internal endOwn() for a request's span (beginShared) that its tracker holds as open, its
   * result to come. The common case, written out: through endOwn() and end()'s checks, a
   * request's end took about 50 instructions more (callgrind, bench/request-instructions.mjs).
   * `route`: its route's id (newRouteId()) where its begin did not name it, else 0.
   */
  endRequest(h: number, route: number): void {
    const slot = h & (MAX_OPEN - 1);
    const word = this.#slots[slot];
    // OPEN, and the span h names (its generation): one read of the slot's word.
    if ((word & (STATE_BITS | GEN_MASK)) === ((OPEN << STATE_SHIFT) | ((h >>> SLOT_BITS) & GEN_MASK))) {
      const t = hrtime();
      if (this.#write(END, h, route, t[0], t[1])) {
        this.#slots[slot] = (word & ~STATE_BITS) | (ENDED << STATE_SHIFT);
        return;
      }
    }
    this.#endRequestLater(h, route);
  }

  /**
   * @internal endRequest() for a request whose tracker wants no result: the sampler thread adds
   * it to its route, and its slot is free at once. Returns whether it ended so (otherwise its
   * result will come). Apart from endRequest(), not a flag of it: a server's every request ends
   * here, and one function fewer branches keeps it, the clock read, the event write and its check
   * within V8's inlining budget (920 bytes of bytecode) in the caller.
   */
  endRequestSilently(h: number, route: number): boolean {
    const slot = h & (MAX_OPEN - 1);
    const word = this.#slots[slot];
    // OPEN, and the span h names (its generation): one read of the slot's word.
    if ((word & (STATE_BITS | GEN_MASK)) === ((OPEN << STATE_SHIFT) | ((h >>> SLOT_BITS) & GEN_MASK))) {
      const t = hrtime();
      if (this.#write(END, h, route | END_SILENT, t[0], t[1])) {
        // FREE (0), no delivery: a new span may take the slot before this one settles (the
        // sampler thread keeps this one apart then).
        this.#slots[slot] = word & ~(STATE_BITS | NUMERIC_BITS);
        this.#release(slot);
        return true;
      }
    }
    this.#endRequestLater(h, route);
    return false;
  }

  // The rest of endRequest() and endRequestSilently(), apart so that they stay as small as V8
  // inlines: an end that found the event ring full goes to the sampler thread beside it
  // (#endLate), with its route, and its result comes; a request settled by stop() while open, or
  // never measured, ends through end() (not where users' spans end, which must stay small too).
  #endRequestLater(h: number, route: number): void {
    const slot = h & (MAX_OPEN - 1);
    if (this.#stateOf(slot) !== OPEN || !this.#current(h, slot)) {
      if (this.#stateOf(slot) === SETTLED_OPEN && this.#current(h, slot)) {
        // A run's end settled it open: the sampler thread keeps it among the requests in flight,
        // sharing the next run's energy, until its end event comes (its Shared::carried).
        const t = hrtime();
        if (!this.#write(END, h, route, t[0], t[1])) this.#endLate(h, route, t);
      }
      this.endOwn(h);
      return;
    }
    this.#endLate(h, route, hrtime());
    this.#setState(slot, ENDED);
  }

  /**
   * An end that found the event ring full, at its own time `t` (hrtime()), handed to the sampler
   * thread beside the ring: it takes it at its next step, final or not, before the ring's events,
   * whichever thread polls (a worker's channel is polled by that worker alone). Kept here for
   * poll() to write again, such an end waited for this thread's next poll, and one that stop()
   * came before settled its span open, up to the stop. A request's end goes too when a run's end
   * settled it open: the sampler thread keeps it in flight until its end comes (Shared::carried).
   */
  #endLate(h: number, route: number, t: number[]): void {
    this.#handle.lateEnd(h, route, t[0], t[1]);
    this.#lateEndCount++;
  }

  /**
   * @internal A new id in this channel's route table, or 0 once 4,194,303 are taken (its
   * requests are then not aggregated). Request trackers number their (method, route) pairs.
   */
  newRouteId(): number {
    return this.#routeIds + 1 < MAX_ROUTE_IDS ? ++this.#routeIds : 0;
  }

  /** @internal Adds a request to route `id` (one the sampler thread could not aggregate). */
  addToRoute(id: number, joules: number, durationNs: number, estimated: boolean, incomplete: boolean): void {
    if (id > 0 && !Number.isNaN(joules)) this.#handle.addToRoute(id, joules, durationNs, estimated, incomplete);
  }

  /**
   * @internal The aggregates of route ids `ids`, ROUTE_SUMMARY_WORDS numbers each (count 0: no
   * request). Readable after the channel closed.
   */
  routeSummaries(ids: Int32Array): Float64Array {
    const out = new Float64Array(ids.length * ROUTE_SUMMARY_WORDS);
    this.#handle.routeSummaries(ids, out);
    return out;
  }

  /** @internal The routes of a tracker gone: their aggregates' memory goes (the ids are not reused). */
  releaseRoutes(ids: Int32Array): void {
    this.#handle.releaseRoutes(ids);
  }

  /** The result for the span in `slot` has arrived: the slot may go, or stay until end(). */
  #settleSlot(slot: number): void {
    const state = this.#stateOf(slot);
    if (state === ENDED) {
      this.#setState(slot, FREE);
      this.#release(slot);
    } else if (state === OPEN) {
      this.#setState(slot, SETTLED_OPEN);
      this.#noResult++;
    }
  }

  #deliverNumeric(h: number, slot: number, r: Float64Array, o: number): void {
    const listeners = this.#numericOf(slot) === NUM_SHARED ? this.sharedListeners : this.internalListeners;
    this.#slots[slot] &= ~NUMERIC_BITS;
    this.#settleSlot(slot);
    const list = listeners.list;
    for (let i = 0; i < list.length; i++) list[i](h, r, o);
  }

  #release(slot: number): void {
    this.#free[(this.#freeHead + this.#freeCount) & (MAX_OPEN - 1)] = slot;
    this.#freeCount++;
  }

  #resultOf(h: number): SpanResult | undefined {
    const slot = h & (MAX_OPEN - 1);
    if (h >>> 24 !== this.#tag || !this.#current(h, slot)) return undefined;
    const how = this.#keptHowOf(slot);
    return how === KEPT_NUMBERS ? this.#resultObject(slot) : how === KEPT_OBJECT ? this.#results[slot] : undefined;
  }

  /** @internal Now, in the sampler's clock (CLOCK_MONOTONIC ns), as span results give times. */
  nowNs(): number {
    return nowNs() + this.#offsetNs;
  }

  // The result of an OPEN_DROPPED span ending now, in the result ring's layout. A copy each (rare:
  // the ring was full), since a listener may end another such span while the next one reads it.
  #unmeasured(slot: number): Float64Array {
    const r = UNMEASURED.slice();
    r[1] = this.#keptLabel[slot];
    r[2] = this.#kept[slot * KEPT_WORDS];
    r[3] = this.nowNs();
    return r;
  }

  /** Resolves with the span's result once the sampler has settled it. */
  settle(h: number): Promise<SpanResult> {
    if (h === DROPPED_HANDLE) return Promise.resolve(unmeasuredResult('(dropped)', NaN, NaN));
    // Before any arithmetic on it: a Symbol threw there, synchronously, and an object's valueOf ran.
    if (typeof h !== 'number') return Promise.reject(notAHandle(h, 'settle()'));
    this.poll();
    const done = this.#resultOf(h);
    if (done) return Promise.resolve(done);
    if (this.#closed) {
      // Nothing collects results any more: waiting would never end.
      return Promise.reject(
        this.#closedWithSampler
          ? closedBeforeSettled()
          : new JouletraceError('ERR_JOULETRACE_CLOSED', 'settle(): this span channel was closed before the span settled; settle spans (or listen with onSpan) before its close()'),
      );
    }
    if (this.#samplerClosed) return Promise.reject(closedBeforeSettled());
    let slot: number;
    try {
      slot = this.#slotOf(h, 'settle()');
    } catch (e) {
      return Promise.reject(e);
    }
    if (this.#numericOf(slot) !== 0) {
      // Its result goes to a RequestTracker as numbers, never to a waiter: it would wait forever.
      return Promise.reject(
        new JouletraceError(
          'ERR_JOULETRACE_FOREIGN_SPAN',
          `settle(): span handle ${h} is a request's (RequestTracker); its energy arrives through tracker.onRequest()`,
        ),
      );
    }
    const state = this.#stateOf(slot);
    if (state === OPEN || state === OPEN_DROPPED) {
      return Promise.reject(new JouletraceError('ERR_JOULETRACE_SPAN_OPEN', `settle(): span handle ${h} has not ended; call end(h) first`));
    }
    if (state !== ENDED) {
      return Promise.reject(new JouletraceError('ERR_JOULETRACE_STALE_SPAN', `settle(): span handle ${h} is unknown or too old`));
    }
    const waiting = this.#waiters.get(h);
    if (waiting !== undefined) return waiting.promise;
    let resolve!: (r: SpanResult) => void;
    let reject!: (e: Error) => void;
    const promise = new Promise<SpanResult>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.#waiters.set(h, { resolve, reject, promise });
    this.#ensurePolling(); // at the fast period
    // A pending settle() keeps the process alive, as pending I/O does; idle polling does not.
    this.#timer?.ref();
    return promise;
  }

  /**
   * Calls fn() at every begin() and carries its result, untouched, as the span's `context`
   * (e.g. the active OpenTelemetry span). null removes it; unset, begin() pays nothing.
   */
  setContextCapture(fn: (() => unknown) | null): void {
    if (fn !== null && typeof fn !== 'function') {
      throw new TypeError(`Expected a function or null for setContextCapture(fn) but received ${String(fn)} of type ${typeof fn}`);
    }
    this.#capture = fn;
    if (fn) this.#contexts ??= new Array(MAX_OPEN);
  }

  /** @internal The capture in force (an exporter chains it: see chained-context.ts). */
  contextCapture(): (() => unknown) | null {
    return this.#capture;
  }

  onSpan(cb: (spans: SpanResult[]) => void): () => void {
    if (typeof cb !== 'function') throw new TypeError(`Expected a function for onSpan(callback) but received ${String(cb)} of type ${typeof cb}`);
    const off = this.#listeners.add(cb);
    this.#ensurePolling();
    return off;
  }

  // Results are collected on an unref'd timer (see POLL_MS), but only while some span awaits one:
  // begin() arms the timer when it is off, and the timer stops itself once every span in use has
  // its result. An idle thread's event loop is not woken 50 times a second.
  #awaitingResults(): boolean {
    return MAX_OPEN - this.#freeCount - this.#noResult > 0;
  }

  #wantedPeriod(): number {
    return this.#waiters.size !== 0 || MAX_OPEN - this.#freeCount > BUSY_SLOTS ? POLL_FAST_MS : POLL_MS;
  }

  #ensurePolling(): void {
    if (this.closed) return;
    const period = this.#wantedPeriod();
    if (this.#timer !== undefined) {
      if (this.#period !== period) this.#arm(period);
    } else if (this.#awaitingResults()) {
      this.#arm(period);
    }
  }

  #arm(period: number): void {
    // Made before the timer it replaces is cleared: whatever runs while it is made, a timer armed
    // meanwhile is the one cleared, not left running for good.
    const timer = outsideRequests(setInterval, this.#onTick, period);
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = timer;
    this.#period = period;
    this.#idleTicks = 0;
    if (this.#waiters.size === 0) timer.unref();
  }

  readonly #onTick = (): void => this.#tick();

  #tick(): void {
    this.poll();
    // The period follows the load here, at most once per run, rather than in begin() or when the
    // last waiter is answered: a loop of `await settle()` does not re-arm the timer twice a span.
    const period = this.#wantedPeriod();
    if (period !== this.#period) {
      this.#arm(period);
      return;
    }
    // Stopped after IDLE_STOP_MS without a span awaiting a result, so that spans a few ms apart
    // do not set up a new timer at every begin().
    if (this.#awaitingResults()) this.#idleTicks = 0;
    else if (++this.#idleTicks * this.#period >= IDLE_STOP_MS) this.stopPollingIfIdle();
  }

  /** @internal Starts collecting results if some span awaits one (the sampler calls it at start()). */
  startPolling(): void {
    this.#ensurePolling();
  }

  /** @internal */
  stopPollingIfIdle(): void {
    if (this.#timer && this.#waiters.size === 0 && !this.#awaitingResults()) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }

  /** @internal Whether the result timer runs (for tests). */
  get polling(): boolean {
    return this.#timer !== undefined;
  }

  /** @internal The result timer's period in ms, 0 when it is off (for tests). */
  get pollPeriodMs(): number {
    return this.#timer !== undefined ? this.#period : 0;
  }

  /** Collects settled results now (also done by a timer); returns how many arrived. */
  poll(): number {
    if (this.#closed) return 0;
    let n = this.#collect();
    const running = Atomics.load(this.#i32, RUNNING);
    if (running !== 1 && this.#awaitingResults()) {
      // Stopped: the final step's results that found the result ring full wait in the engine,
      // and no step will write them. Each thread fetches its own (a worker's are not the main
      // thread's stop() to wait for).
      for (;;) {
        const left = this.#handle.flush();
        const tail = this.#resTail;
        n += this.#collect();
        // Progress is results taken, requests' included: #collect() counts users' spans only,
        // and a ring of requests alone read as none, which left the rest in the engine (close()
        // with 60,000 requests in flight recorded 49,152).
        if (left === 0 || this.#resTail === tail) break;
      }
      if (running === SAMPLER_CLOSED) this.#abandonWaiters();
    }
    // Whatever awaits results: a worker's exact-mode tracker with none awaiting still holds its
    // async hook, which every callback of that thread pays for, until it is told.
    if (running === SAMPLER_CLOSED) this.#tellClosed();
    return n;
  }

  // The sampler (or this channel) is closed: the results that arrived are delivered, and a span
  // that has none will never get one. Nothing is left to poll for.
  #abandonWaiters(): void {
    for (const [, w] of this.#waiters) w.reject(closedBeforeSettled());
    this.#waiters.clear();
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #collect(): number {
    const head = Atomics.load(this.#i32, RES_HEAD);
    let tail = this.#resTail;
    if (head === tail) return 0;
    const res = this.#res;
    this.#batch = null;
    let n = 0;
    while (tail !== head) {
      const o = (tail & this.#resMask) * RESULT_WORDS;
      // An int32 (handles are under 2^30): passed on as a small integer, never boxed as a double
      // would be where V8 does not inline the callee (#keep()).
      const h = res[o] | 0;
      tail = (tail + 1) | 0;
      const slot = h & (MAX_OPEN - 1);
      if (this.#numericOf(slot) !== 0 && this.#current(h, slot)) {
        // A request or an exact-mode callback: its tracker builds its own record from the numbers.
        this.#deliverNumeric(h, slot, res, o);
        continue;
      }
      // A second result for a span already settled: its end reached the engine only after
      // stop()'s final step had settled it, and the next run read that end alone.
      const state = this.#stateOf(slot);
      if (!this.#current(h, slot) || (state !== OPEN && state !== ENDED)) continue;
      // Copied here rather than passed: a double passed to a call V8 does not inline is boxed.
      const b = slot * KEPT_WORDS;
      const kept = this.#kept;
      kept[b] = res[o + 2];
      kept[b + 1] = res[o + 3];
      kept[b + 2] = res[o + 4];
      kept[b + 3] = res[o + 5];
      kept[b + 4] = res[o + 6];
      kept[b + 5] = res[o + 7];
      this.#keptLabel[slot] = res[o + 1];
      this.#keep(h, slot);
      n++;
    }
    this.#resTail = tail;
    Atomics.store(this.#i32, RES_TAIL, tail);
    const batch = this.#batch;
    if (batch !== null) {
      this.#batch = null;
      this.#listeners.deliver(batch);
    }
    return n;
  }

  // onSpan listeners' batch of the current #collect, created at its first result.
  #batch: SpanResult[] | null = null;

  /** A user's span has its result in #kept: an object only for a waiter or listeners. */
  #keep(h: number, slot: number): void {
    this.#setKeptHow(slot, KEPT_NUMBERS);
    this.#settleSlot(slot);
    const b = slot * KEPT_WORDS;
    if (!Number.isNaN(this.#kept[b + 3])) {
      const labelId = this.#keptLabel[slot];
      let agg = this.#aggregateOf[labelId];
      if (agg === undefined) agg = this.#aggregateFor(this.#labelNames[labelId] ?? '(unknown)', labelId);
      agg.addKept(this.#kept, b);
    }
    if (this.#listeners.size === 0 && (this.#waiters.size === 0 || !this.#waiters.has(h))) return;
    const r = this.#resultObject(slot);
    this.#resolveWaiter(h, r);
    if (this.#listeners.size !== 0) {
      (this.#batch ??= []).push(r);
      // Delivered with its context: the slot lets go of it (with OpenTelemetry, an OTel span
      // per slot, 65,536 of them, stayed reachable until the slot's reuse). A settle() of this
      // span later still gets its figures, without the context.
      if (this.#contexts !== undefined) this.#contexts[slot] = undefined;
    }
  }

  #resolveWaiter(h: number, r: SpanResult): void {
    const w = this.#waiters.get(h);
    if (w === undefined) return;
    this.#waiters.delete(h);
    if (this.#waiters.size === 0) this.#timer?.unref(); // #tick slows it down
    w.resolve(r);
  }

  #aggregateFor(label: string, labelId: number): LabelAggregate {
    let agg = this.#aggregates.get(label);
    if (!agg) this.#aggregates.set(label, (agg = new LabelAggregate()));
    // Only a label this channel interned: anything else would make the array sparse.
    if (labelId >= 0 && labelId < this.#labelNames.length) this.#aggregateOf[labelId] = agg;
    return agg;
  }

  #resultObject(slot: number): SpanResult {
    const b = slot * KEPT_WORDS;
    const kept = this.#kept;
    const dyn = kept[b + 4];
    const flags = kept[b + 5];
    const r: SpanResult = {
      label: this.#labelNames[this.#keptLabel[slot]] ?? '(unknown)',
      tid: this.tid,
      startNs: kept[b],
      endNs: kept[b + 1],
      onCpuNs: kept[b + 2],
      joules: kept[b + 3],
      dynamicJoules: Number.isNaN(dyn) ? null : dyn,
      estimated: (flags & FLAG_ESTIMATED) !== 0,
      incomplete: (flags & FLAG_INCOMPLETE) !== 0,
    };
    const context = this.#contexts?.[slot];
    if (context !== undefined) setResultContext(r, context);
    return r;
  }

  /** Kernel thread id of the thread this channel belongs to, in this process's own pid namespace. */
  readonly tid: number;

  // The object path, for the rare result made here rather than by the sampler (a span whose
  // begin never reached it).
  #dispatch(out: SpanResult[], handles: number[]): void {
    for (let i = 0; i < out.length; i++) {
      const r = out[i];
      r.tid = this.tid;
      const h = handles[i];
      const slot = h & (MAX_OPEN - 1);
      if (this.#current(h, slot)) {
        if (this.#contexts !== undefined && this.#contexts[slot] !== undefined) setResultContext(r, this.#contexts[slot]);
        this.#results[slot] = r;
        this.#setKeptHow(slot, KEPT_OBJECT);
        this.#settleSlot(slot);
      }
      this.#resolveWaiter(h, r);
      const agg = this.#aggregateFor(r.label, -1);
      if (!Number.isNaN(r.joules)) agg.add(r.joules, r.estimated, r.onCpuNs, r.endNs - r.startNs);
    }
    if (out.length) this.#listeners.deliver(out);
  }

  spanStats(): SpanLabelStats[] {
    this.poll();
    const out: SpanLabelStats[] = [];
    for (const [label, a] of this.#aggregates) {
      const n = a.joules.count;
      // Only unmeasured spans (NaN joules) so far: no figures, rather than a row of zeros.
      if (n === 0) continue;
      out.push({
        label,
        count: n,
        joules: a.joules.summary(),
        onCpuNs: { sum: a.onCpuNs, mean: n ? a.onCpuNs / n : 0 },
        watts: a.wallNs > 0 ? a.joules.sum / (a.wallNs / 1e9) : 0,
        estimated: a.joules.estimated,
      });
    }
    return out.sort((x, y) => y.joules.sum - x.joules.sum);
  }

  #droppedSpans = 0;
  /** Spans not measured because every slot was in use (see begin()). */
  get droppedSpans(): number {
    return this.#droppedSpans;
  }
  /** Span events not recorded because the event ring was full. */
  get droppedEvents(): number {
    return this.#i32[EV_DROPPED];
  }
  /** Ends that found the event ring full and went to the sampler thread beside it (cumulative). */
  get lateEnds(): number {
    return this.#lateEndCount;
  }
  /** settle() calls still waiting for their span's result. */
  get pendingSettles(): number {
    return this.#waiters.size;
  }

  /** Rejects pending settle() calls and unregisters the channel. Safe twice. */
  close(): void {
    if (this.#closed) return;
    try {
      this.poll(); // the last results, to their listeners: one that throws still closes the channel
    } finally {
      this.#closed = true;
      this.#handle.close();
      // Unregistered, the sampler no longer clears this flag when it stops: begin() must see it
      // down and throw CLOSED (a tracker holds the channel itself, past the sampler's checks).
      Atomics.store(this.#i32, RUNNING, 0);
      this.#abandonWaiters();
      this.#tellClosed();
    }
  }

  /** @internal close() by the sampler that made the channel, whose closing users see. */
  closeWithSampler(): void {
    this.#closedWithSampler = true;
    this.close();
  }

  #tellClosed(): void {
    if (this.#toldClosed) return;
    this.#toldClosed = true;
    for (const l of [...this.closeListeners]) if (this.closeListeners.has(l)) l();
  }
}
