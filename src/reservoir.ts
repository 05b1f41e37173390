// The most recent values of a stream, for quantiles over bounded memory: exact over the last
// `capacity` values, which is what per-label and per-route p50/p99 report.
export class RecentValues {
  readonly #values: Float64Array;
  #count = 0;

  constructor(capacity: number) {
    this.#values = new Float64Array(capacity);
  }

  add(v: number): void {
    this.#values[this.#count % this.#values.length] = v;
    this.#count++;
  }

  /** Quantiles (0..1) of the values held, in the order asked. */
  quantiles(...qs: number[]): number[] {
    const n = Math.min(this.#count, this.#values.length);
    const sorted = this.#values.slice(0, n).sort();
    return qs.map((q) => (n === 0 ? 0 : sorted[Math.min(n - 1, Math.floor(q * n))]));
  }
}
