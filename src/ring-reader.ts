// Decodes the sampler's ring records straight out of native memory. Layout (little-endian):
//   header (16 bytes):   u32 timeLo, u32 timeHi (CLOCK_MONOTONIC ns), u32 seq, u32 flags
//   per domain (24 bytes, or 48 when threads are tracked):
//     f64 joules since start, u64 ticks since start, u64 raw counter,
//     [u64 process ticks, u64 baseline ticks, u64 other ticks] (cumulative attribution)

import { asJouletraceError, invalidRange, invalidType, JouletraceError } from './errors';

export const RECORD_HEADER_BYTES = 16;

/** Bits of a sample's `flags`. */
export const SampleFlags = {
  /** Some counter changed since the previous sample. */
  CHANGED: 1 << 0,
  /** A domain could not be read; its figures are carried over from the previous sample. */
  READ_ERROR: 1 << 1,
  /** The source is an estimate (the model source). */
  ESTIMATED: 1 << 2,
  /** Deadlines were missed just before this sample. */
  LATE: 1 << 3,
  /** Attribution ran at this sample: process + baseline + other ticks equal the measured ticks. */
  ATTRIBUTED: 1 << 4,
  /** The last sample of a run, taken by stop(). */
  FINAL: 1 << 5,
} as const;

export interface RingNative {
  ringAcquire(ctl: Float64Array): void;
  ringRelease(from: number, to: number, torn?: number): number;
}

export interface RingGeometry {
  buffer: ArrayBuffer;
  recordBytes: number;
  capacity: number;
  domainCount: number;
  attributed: boolean;
  /** The sampler's onOverflow is 'overwrite-oldest': each record's seq is its position in the ring. */
  overwriteOldest?: boolean;
  /**
   * Zero copy under 'overwrite-oldest': how many records the sampler has begun writing, the one
   * in progress included (record n's slot is rewritten from begun n + capacity + 1 on).
   */
  begun?: Float64Array;
}

const TWO32 = 4294967296;

// Off the accessors' path, so that they stay small enough for V8 to inline.
function noSample(): JouletraceError {
  return new JouletraceError(
    'ERR_JOULETRACE_NO_SAMPLE',
    "RingReader: there is no current sample: next() returned false, or the reader was closed (by its close(), or the sampler's read(), start() or close()). " +
      'The accessors describe the sample of the last next() that returned true, and only until the next call of next() or close(): read them inside the while (r.next()) loop',
  );
}
function notADomain(d: unknown, count: number, current: boolean): Error {
  if (!current) return noSample();
  const expected = `an integer from 0 to ${count - 1} (the reader's domainCount is ${count})`;
  return typeof d === 'number' ? invalidRange('d', expected, d) : invalidType('d', expected, d);
}

/**
 * An allocation-free cursor over samples not yet read. Call `next()` until it returns false;
 * between calls, the accessors describe the current sample. Once next() has returned false, or
 * the reader is closed, there is none: they throw ERR_JOULETRACE_NO_SAMPLE rather than read a
 * slot handed back to the sampler, which may be rewriting it. Consumed samples are released
 * to the producer every quarter of the ring, when a batch is exhausted, and by `close()`.
 *
 * ```ts
 * const r = sampler.reader();
 * while (r.next()) total += r.joules(0);
 * ```
 */
export class RingReader implements Iterable<RingReader> {
  readonly #native: RingNative;
  readonly #u32: Uint32Array;
  readonly #f64: Float64Array;
  readonly #ctl = new Float64Array(2);
  readonly #mask: number;
  readonly #recordWords32: number;
  readonly #stride32: number;
  readonly #domainCount: number;
  // domainCount while a sample is current, else 0: #domainWord()'s bounds check then refuses
  // every index, and the per-domain accessors pay nothing more for knowing there is no sample.
  #current = 0;
  readonly #attributed: boolean;
  readonly #overwriteOldest: boolean;
  readonly #begun: Float64Array;
  readonly #capacity: number;
  readonly #releaseEvery: number;
  #batchStart = 0;
  #batchEnd = 0;
  // Where next() leaves its fast path: the batch's end, or the next release within it.
  #stopAt = 0;
  #pos = 0;
  #base32 = 0;
  #active = false;
  #torn = 0;
  // Of [#batchStart, #pos): records the sampler reached while each was the current one.
  #batchTorn = 0;

  constructor(native: RingNative, geometry: RingGeometry) {
    this.#native = native;
    this.#u32 = new Uint32Array(geometry.buffer);
    this.#f64 = new Float64Array(geometry.buffer);
    this.#mask = geometry.capacity - 1;
    this.#recordWords32 = geometry.recordBytes / 4;
    this.#domainCount = geometry.domainCount;
    this.#attributed = geometry.attributed;
    this.#stride32 = geometry.attributed ? 12 : 6;
    this.#overwriteOldest = geometry.overwriteOldest === true;
    // Without it nothing the reader reads is ever rewritten (drop-newest, or records copied at
    // acquire): a begun of 0 says so to the same check.
    this.#begun = geometry.begun ?? new Float64Array(1);
    this.#capacity = geometry.capacity;
    // Released as the reader goes, not only at a batch's end: a slow consumer's long batch would
    // hold the whole of it from a drop-newest producer.
    this.#releaseEvery = Math.max(1, geometry.capacity / 4);
  }

  /**
   * Advances to the next unread sample; false when there is none right now. Under
   * 'overwrite-oldest', a reader that stalled while the sampler lapped it skips the samples
   * overwritten meanwhile (counted in stats().ring.overwritten) rather than returning them.
   */
  next(): boolean {
    this.#current = 0;
    if (this.#active) {
      this.#leaveCurrent();
      this.#pos++;
    }
    for (;;) {
      if (!this.#active || this.#pos >= this.#stopAt) {
        if (this.#active && this.#pos < this.#batchEnd) {
          this.flush();
        } else {
          if (this.#active) this.#release();
          this.#acquire();
          this.#batchStart = this.#ctl[0];
          this.#batchEnd = this.#ctl[1];
          this.#pos = this.#batchStart;
          this.#active = this.#batchEnd > this.#batchStart;
          if (!this.#active) return false;
        }
        this.#stopAt = Math.min(this.#pos + this.#releaseEvery, this.#batchEnd);
      }
      this.#base32 = (this.#pos & this.#mask) * this.#recordWords32;
      // Sample n sits at ring position n under this policy (seq wraps at 2^32 as positions do):
      // another seq means the sampler has written this slot again since the batch was acquired.
      // What was read up to here is released, and acquiring again skips to the oldest samples
      // still safe to read.
      if (!this.#overwriteOldest || this.#u32[this.#base32 + 2] === this.#pos >>> 0) {
        this.#current = this.#domainCount;
        return true;
      }
      this.#batchEnd = this.#pos;
      this.#release();
    }
  }

  // The native handle's coded Error (the sampler closed) as the JouletraceError every other call
  // throws. Apart from next(), which V8 inlines into the consumer's loop: its bytecode stays small.
  #acquire(): void {
    try {
      this.#native.ringAcquire(this.#ctl);
    } catch (e) {
      throw asJouletraceError(e);
    }
  }

  /**
   * Releases what has been consumed so far (also done automatically at the end of each batch).
   * Nothing to do once the sampler is closed: its close() released the reader's batch.
   */
  close(): void {
    if (!this.#active) return;
    this.#active = false;
    this.#current = 0;
    // The current sample has been seen: release it too, judged as next() would leave it.
    this.#leaveCurrent();
    this.#batchEnd = this.#pos + 1;
    this.#release();
  }

  // The accessors reach only the current record: it is the one whose fields may have been read
  // torn, and only if the sampler began rewriting its slot before the reader left it.
  #leaveCurrent(): void {
    if (this.#overwriteOldest && this.#begun[0] - this.#capacity > this.#pos) this.#batchTorn++;
  }

  /** @internal Releases the samples left so far, keeping the current one (the sampler's stats() does, first). */
  flush(): void {
    if (this.#active && this.#pos > this.#batchStart) this.#handBack(this.#pos);
  }

  #release(): void {
    this.#handBack(this.#batchEnd);
    this.#active = false;
  }

  #handBack(to: number): void {
    this.#native.ringRelease(this.#batchStart, to, this.#batchTorn);
    this.#torn += this.#batchTorn;
    this.#batchTorn = 0;
    this.#batchStart = to;
  }

  /**
   * Samples the sampler began to overwrite while each was this reader's current one, from
   * next() returning it to the next call of next() or close() (overwrite-oldest only): their
   * fields may be torn. They count in stats().ring.overwritten, not read.
   */
  get possiblyTorn(): number {
    return this.#torn;
  }

  get domainCount(): number {
    return this.#domainCount;
  }
  /** CLOCK_MONOTONIC nanoseconds (exact below 2^53 ns, about 104 days of uptime; ±2 ns beyond). */
  get timeNs(): number {
    const i = this.#header();
    return this.#u32[i] + this.#u32[i + 1] * TWO32;
  }
  /** The sample's index in its run, from 0. */
  get seq(): number {
    return this.#u32[this.#header() + 2];
  }
  /** The sample's SampleFlags bits. */
  get flags(): number {
    return this.#u32[this.#header() + 3];
  }
  /** Joules of domain d since start. */
  joules(d: number): number {
    return this.#f64[this.#domainWord(d) >> 1];
  }
  /** Ticks of domain d since start (exact below 2^53). */
  ticks(d: number): number {
    return this.#word64(d, 2);
  }
  /** The hardware counter's raw value for domain d. */
  raw(d: number): number {
    return this.#word64(d, 4);
  }
  /** Cumulative ticks of domain d given to the tracked process (0 without thread tracking). */
  processTicks(d: number): number {
    return this.#attributed ? this.#word64(d, 6) : (this.#domainWord(d), 0);
  }
  /** Cumulative ticks of domain d given to the baseline (idle power; 0 without thread tracking). */
  baselineTicks(d: number): number {
    return this.#attributed ? this.#word64(d, 8) : (this.#domainWord(d), 0);
  }
  /** Cumulative ticks of domain d given to "other" (the rest of the machine; 0 without thread tracking). */
  otherTicks(d: number): number {
    return this.#attributed ? this.#word64(d, 10) : (this.#domainWord(d), 0);
  }
  #word64(d: number, off: number): number {
    const i = this.#domainWord(d) + off;
    return this.#u32[i] + this.#u32[i + 1] * TWO32;
  }
  // Where the current record starts (32-bit words). With none current, #base32 is the slot last
  // read, handed back and perhaps being rewritten: a newer sample, or half of one.
  #header(): number {
    if (this.#current === 0) throw noSample();
    return this.#base32;
  }
  // Where domain d's fields start in the current record (32-bit words). Past domainCount they
  // are other fields, or the next record's: plausible numbers, wrong. With no current record,
  // #current is 0 and every index fails the one check.
  #domainWord(d: number): number {
    if (d >>> 0 !== d || d >= this.#current) throw notADomain(d, this.#domainCount, this.#current !== 0);
    return this.#base32 + 4 + d * this.#stride32;
  }

  /** Iterates with next(), yielding the reader itself at each sample (read its fields in the loop). */
  *[Symbol.iterator](): Iterator<RingReader> {
    while (this.next()) yield this;
  }
}
