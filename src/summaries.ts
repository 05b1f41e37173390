// Bounded-memory summaries of streams of settled energy figures, shared by per-label span
// statistics and per-route request statistics.

/** The most recent values of a stream: quantiles exact over the last `capacity` values. */
export class RecentValues {
  // Grown by doubling up to `capacity`: a label or route seen a few times costs bytes, not the
  // 32 KiB of a full window (20,000 labels of a few spans each took 625 MB).
  #values: Float64Array;
  readonly #capacity: number;
  #count = 0;

  constructor(capacity: number) {
    this.#capacity = capacity;
    this.#values = new Float64Array(Math.min(16, capacity));
  }

  add(v: number): void {
    this.#grow();
    this.#values[this.#count % this.#values.length] = v;
    this.#count++;
  }

  /** add(from[i]): the double is copied array to array, never passed as an argument (see JoulesSummary.addFrom). */
  addFrom(from: Float64Array, i: number): void {
    this.#grow();
    this.#values[this.#count % this.#values.length] = from[i];
    this.#count++;
  }

  #grow(): void {
    // Only while the window has never wrapped (count === length): the values stay in order.
    if (this.#count === this.#values.length && this.#values.length < this.#capacity) {
      const grown = new Float64Array(Math.min(this.#capacity, this.#values.length * 2));
      grown.set(this.#values);
      this.#values = grown;
    }
  }

  /**
   * Quantiles (0..1) of the values held, in the order asked, by nearest rank: the smallest value
   * with at least q of the values at or below it (the median of [1, 2] is 1; p99 of 100 values
   * is the 99th, not the maximum).
   */
  quantiles(...qs: number[]): number[] {
    const n = Math.min(this.#count, this.#values.length);
    const sorted = this.#values.slice(0, n).sort();
    return qs.map((q) => (n === 0 ? 0 : sorted[Math.min(n - 1, Math.max(0, Math.ceil(q * n - 1e-9) - 1))]));
  }
}

/** Count, sum, max and recent quantiles of joules, and whether any figure was estimated. */
export class JoulesSummary {
  count = 0;
  sum = 0;
  max = 0;
  estimated = false;
  readonly #recent: RecentValues;

  constructor(recentCapacity: number) {
    this.#recent = new RecentValues(recentCapacity);
  }

  add(joules: number, estimated: boolean): void {
    this.#recent.add(joules);
    this.count++;
    this.sum += joules;
    if (joules > this.max) this.max = joules;
    this.estimated ||= estimated;
  }

  /**
   * add(from[i], estimated), for the collection loop: a double passed to a function that V8 does
   * not inline is boxed, 16 bytes of heap each, and whether V8 inlines this far down depends on
   * when it optimised the loop (the allocation test caught a span result costing 16 bytes in one
   * run out of seven, and one out of two after an unrelated change).
   */
  addFrom(from: Float64Array, i: number, estimated: boolean): void {
    this.#recent.addFrom(from, i);
    const joules = from[i];
    this.count++;
    this.sum += joules;
    if (joules > this.max) this.max = joules;
    this.estimated ||= estimated;
  }

  summary(): { sum: number; mean: number; p50: number; p99: number; max: number } {
    const [p50, p99] = this.#recent.quantiles(0.5, 0.99);
    return { sum: this.sum, mean: this.count ? this.sum / this.count : 0, p50, p99, max: this.max };
  }
}
