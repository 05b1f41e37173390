// Recent request energy for the Prometheus gauge of joules per request: a sliding window of
// (count, sum) that forgets whole seconds, so a scrape costs a few buckets whatever the rate.
// A bucket is kept until its end is older than the window, so a scrape sees the last W to W + 1
// seconds: dropped once its start was, it saw W - 1 to W, and a 1 s window read NaN under steady
// traffic whenever a scrape came just after a second began.
// Its time is the monotonic clock's: by the wall clock, buckets from before a step back (NTP, a
// manual change) lay "in the future" and stayed in the window for as long as the step.

/** A sliding window of (count, sum) in one-second buckets: it covers the last W to W + 1 s. */
export class SlidingWindow {
  readonly #windowMs: number;
  readonly #buckets: Array<{ t: number; count: number; sum: number }> = [];

  constructor(windowMs: number) {
    this.#windowMs = windowMs;
  }

  add(sum: number, count: number, now = performance.now()): void {
    const t = Math.floor(now / 1000);
    const last = this.#buckets[this.#buckets.length - 1];
    if (last && last.t === t) {
      last.count += count;
      last.sum += sum;
    } else this.#buckets.push({ t, count, sum });
    this.#prune(now);
  }

  #prune(now: number): void {
    // Bucket t ends at (t + 1) s: gone once that is at or before now - window.
    const oldest = Math.floor((now - this.#windowMs) / 1000) - 1;
    while (this.#buckets.length > 0 && this.#buckets[0].t <= oldest) this.#buckets.shift();
  }

  totals(now = performance.now()): { count: number; sum: number } {
    this.#prune(now);
    let count = 0;
    let sum = 0;
    for (const b of this.#buckets) {
      count += b.count;
      sum += b.sum;
    }
    return { count, sum };
  }
}
