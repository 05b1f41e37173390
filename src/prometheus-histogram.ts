// A prom-client Histogram whose observations cost a lookup of a cached series and a bucket search.
//
// prom-client's own observe() checks the labels, hashes them into a string and finds the bucket
// through an object keyed by the bound's decimal text: about 0.8 µs an observation on our test
// VM, more than jouletrace's whole accounting of a request. The exporter observes every settled
// request and span, so its histograms keep their series themselves and hand prom-client's
// registry the values a stock Histogram would give for the same observations (checked against
// one in test/prometheus-histogram.test.ts). Still a Histogram: registries, `instanceof`, cluster
// aggregation and users' own observe(), labels(), zero(), remove() and reset() work as with any.
import { Histogram, type HistogramConfiguration, type LabelValues } from 'prom-client';

type Labels = Record<string, string | number>;

/** One label set's counts. Non-cumulative per bucket; the registry sees them cumulated. */
export class HistogramSeries {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(
    readonly labels: Labels,
    private readonly bounds: Float64Array,
  ) {
    this.counts = new Float64Array(bounds.length);
  }

  observe(value: number): void {
    // The first bound not below the value (prom-client's `value <= bound`); none: +Inf only.
    const b = this.bounds;
    let lo = 0;
    let hi = b.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (b[mid] < value) lo = mid + 1;
      else hi = mid;
    }
    if (lo < b.length) this.counts[lo]++;
    this.sum += value;
    this.count++;
  }
}

interface ValuePair {
  labels: Labels;
  sharedLabels?: Labels;
  value: number;
  metricName: string;
  exemplar?: null;
}

export class FastHistogram<T extends string = string> extends Histogram<T> {
  readonly #series = new Map<string, HistogramSeries>();
  readonly #bounds: Float64Array;
  readonly #names: readonly string[];
  readonly #sortedNames: readonly string[];
  readonly #caches: Array<Map<unknown, unknown>> = [];

  constructor(config: HistogramConfiguration<T>) {
    if (config.enableExemplars) throw new TypeError('FastHistogram: exemplars are not supported');
    super(config);
    // The bounds prom-client settled on (its default buckets when none are given).
    const bounds = config.buckets ?? (this as unknown as { upperBounds?: number[] }).upperBounds;
    if (!Array.isArray(bounds)) throw new TypeError('FastHistogram: give `buckets` (this prom-client keeps its default bounds elsewhere)');
    // The bucket search is a binary search (prom-client scans in the order given).
    for (let i = 1; i < bounds.length; i++) {
      if (!(bounds[i] > bounds[i - 1])) throw new RangeError('FastHistogram: buckets must be strictly increasing');
    }
    this.#bounds = Float64Array.from(bounds);
    this.#names = [...(config.labelNames ?? [])];
    this.#sortedNames = [...this.#names].sort();
    // As prom-client: without labels, the one series exists (at zero) from the start.
    if (this.#names.length === 0) this.series({});
    // prom-client's constructor assigns observe() on the instance, over any method of ours.
    const observe = (labelsOrValue: LabelValues<T> | number, value?: number): void =>
      this.#observe((labelsOrValue === 0 ? 0 : labelsOrValue || {}) as Labels, value as number);
    (this as unknown as { observe: typeof observe }).observe = observe;
  }

  /** The series of a label set, created empty if new. Callers on a hot path keep it in a cache(). */
  series(labels: Labels): HistogramSeries {
    const key = this.#key(labels);
    let s = this.#series.get(key);
    if (s === undefined) this.#series.set(key, (s = new HistogramSeries(labels, this.#bounds)));
    return s;
  }

  /**
   * A map for a caller to keep series in, by keys of its own: emptied whenever a series is
   * dropped or replaced (reset, remove, zero), so nothing is counted into one the registry no
   * longer shows.
   */
  cache<K, V>(): Map<K, V> {
    const m = new Map<K, V>();
    this.#caches.push(m as Map<unknown, unknown>);
    return m;
  }

  #dropped(): void {
    for (const m of this.#caches) m.clear();
  }

  #observe(labels: Labels | null, value: number): void {
    // prom-client's reading of its arguments: labels that are not an object are the value.
    if (labels === null || typeof labels !== 'object') {
      value = labels as unknown as number;
      labels = {};
    }
    this.#check(labels);
    if (!Number.isFinite(value)) throw new TypeError(`Value is not a valid number: ${String(value)}`);
    this.series(labels).observe(value);
  }

  #check(labels: Labels): void {
    for (const name in labels) {
      if (!this.#names.includes(name)) {
        throw new Error(`Added label "${name}" is not included in initial labelset: ${JSON.stringify(this.#names)}`);
      }
    }
  }

  #key(labels: Labels): string {
    let key = '';
    for (const name of this.#sortedNames) {
      const v = labels[name];
      if (v !== undefined) key += `${name}:${v},`;
    }
    return key;
  }

  #labelsOf(args: unknown[]): Labels {
    if (typeof args[0] === 'object') return args[0] as Labels; // null too, refused on use as prom-client does
    if (args.length !== this.#names.length) {
      throw new Error(`Invalid number of arguments (${args.length}) for label names (${this.#names.length}): ${this.#names.join(', ')}`);
    }
    const labels: Labels = {};
    this.#names.forEach((n, i) => (labels[n] = args[i] as string | number));
    return labels;
  }

  override labels(...args: unknown[]): { observe(value: number): void; startTimer(): (labels?: LabelValues<T>) => number } {
    const labels = this.#labelsOf(args);
    this.#check(labels);
    return {
      observe: (value: number) => this.#observe(labels, value),
      startTimer: () => this.startTimer(labels as LabelValues<T>),
    };
  }

  override remove(...args: unknown[]): void {
    const labels = this.#labelsOf(args);
    this.#check(labels);
    if (this.#series.delete(this.#key(labels))) this.#dropped();
  }

  override zero(labels: LabelValues<T>): void {
    const l = labels as Labels;
    this.#series.set(this.#key(l), new HistogramSeries(l, this.#bounds));
    this.#dropped();
  }

  override reset(): void {
    // Also called by prom-client's constructor, before this class's fields exist.
    if (!(#series in this)) return;
    this.#series.clear();
    this.#dropped();
  }

  // What prom-client's registry reads for the text format: each series' labels apart.
  async getForPromString(): Promise<{ name: string; help: string; type: string; values: ValuePair[]; aggregator: string }> {
    const self = this as unknown as { collect?: () => unknown; name: string; help: string; aggregator: string };
    if (self.collect) {
      const v = self.collect();
      if (v instanceof Promise) await v;
    }
    const bucket = `${self.name}_bucket`;
    const values: ValuePair[] = [];
    // A histogram whose construction failed stays in its registry (prom-client registers first).
    const series = #series in this ? this.#series.values() : [];
    for (const s of series) {
      let acc = 0;
      for (let i = 0; i < this.#bounds.length; i++) {
        acc += s.counts[i];
        values.push({ labels: { le: this.#bounds[i] }, sharedLabels: s.labels, value: acc, metricName: bucket, exemplar: null });
      }
      values.push({ labels: { le: '+Inf' }, sharedLabels: s.labels, value: s.count, metricName: bucket, exemplar: null });
      values.push({ labels: {}, sharedLabels: s.labels, value: s.sum, metricName: `${self.name}_sum`, exemplar: undefined });
      values.push({ labels: {}, sharedLabels: s.labels, value: s.count, metricName: `${self.name}_count`, exemplar: undefined });
    }
    return { name: self.name, help: self.help, type: 'histogram', values, aggregator: self.aggregator };
  }

  // The public form: each value's labels with its series' labels after them.
  override async get(): Promise<Awaited<ReturnType<Histogram<T>['get']>>> {
    const data = await this.getForPromString();
    const values = data.values.map(({ labels, sharedLabels, ...rest }) => ({ ...rest, labels: { ...labels, ...sharedLabels } }));
    return { ...data, values } as unknown as Awaited<ReturnType<Histogram<T>['get']>>;
  }
}
