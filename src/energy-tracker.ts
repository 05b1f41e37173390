// What the Prometheus and OpenTelemetry exporters and `jouletrace serve` read of a sampler:
// its cumulative figures (which start afresh at every start()) accumulated into counters that
// never go down, per domain, per attribution part and per thread.
import type { Sampler } from './sampler';
import { primaryDomain } from './sources';

/**
 * @internal Exported for its test and for EnergyHealth (sampler-health.ts).
 * Turns a series of cumulative readings that restart from zero on every run into a counter that
 * never goes down: each reading adds its increase since the previous reading of the same run.
 */
export class Monotonic {
  readonly #last = new Map<string, number>();
  readonly #total = new Map<string, number>();
  #run: unknown = undefined;
  readonly #keepTotals: boolean;

  /** keepTotals false: only increases are wanted (per-thread keys, which come and go for good). */
  constructor(keepTotals = true) {
    this.#keepTotals = keepTotals;
  }

  /** Call before the updates of one reading: a different run id forgets the previous readings. */
  beginRun(run: unknown): void {
    if (run !== this.#run) {
      this.#run = run;
      this.#last.clear();
    }
  }

  /** Records the cumulative `value` of `key` in the current run; returns the increase it added. */
  update(key: string, value: number): number {
    const last = this.#last.get(key) ?? 0;
    // A value below the last one can only mean a restart the run id missed: count it from zero.
    const delta = value >= last ? value - last : value;
    this.#last.set(key, value);
    if (this.#keepTotals && (delta > 0 || !this.#total.has(key))) this.#total.set(key, (this.#total.get(key) ?? 0) + delta);
    return delta;
  }

  /** The sum of the last readings of keys not in `keep`: what those keys had reached. */
  lastOutside(keep: Set<string>): number {
    let sum = 0;
    for (const [k, v] of this.#last) if (!keep.has(k)) sum += v;
    return sum;
  }

  /** Forgets the last reading of keys not in `keep` (exited threads), keeping their totals. */
  retain(keep: Set<string>): void {
    for (const k of this.#last.keys()) if (!keep.has(k)) this.#last.delete(k);
  }

  total(key: string): number {
    return this.#total.get(key) ?? 0;
  }
}

function hasThreads(sampler: Sampler): boolean {
  try {
    return sampler.stats().threads.backend !== 'off';
  } catch {
    return false;
  }
}

export interface EnergyReading {
  run: bigint;
  timeNs: bigint;
  /**
   * Per domain and package: cumulative joules over the runs this tracker (and the closed one it
   * continues) saw, the one in progress at the first one's creation from that run's start
   * (monotonic), and the joules of the current run alone.
   */
  domains: Array<{
    domain: string;
    package: number;
    joules: number;
    runJoules: number;
    estimated: boolean;
    key: string;
    /** The run's failed reads of this domain's counters (stats().timing.byDomain) as of this reading. */
    readErrors: number;
  }>;
  /** Cumulative joules of the primary domains, all packages. */
  machine: number;
  /** Cumulative attributed joules (primary domains), when thread tracking is on. */
  parts: { process: number; baseline: number; other: number } | null;
  estimated: boolean;
  /** Whether the sampler was running at this reading. */
  running: boolean;
  /** The run's failed reads of its source (stats().timing.readErrors) as of this reading. */
  readErrors: number;
}

/**
 * Average power per domain between an exporter's collections, over windows of at least
 * minWindowNs, 0.5 s unless given (a scrape right after another would divide a counter step by
 * microseconds; a second scraper right after the first reuses the last figure). The first window
 * runs from the sampler's start, and no figure comes before it is minWindowNs long. A domain
 * whose energy did not move in a window where its own reads failed has no figure for it (not
 * 0 W): its window stays open, and the next figure covers it (not the whole catch-up over the
 * last window alone). Each domain is judged by its own failures: a failing dram counter says
 * nothing about a package that stood still.
 */
export class PowerWindow {
  readonly #minWindowNs: bigint;
  // Where each domain's window starts: the end of the last one it had a figure for.
  #from = new Map<string, { timeNs: bigint; joules: number }>();
  // When the last window ended (null: none since the run's start), and each domain's read errors
  // in the run then.
  #endNs: bigint | null = null;
  #readErrors = new Map<string, number>();
  #last = new Map<string, number>();
  #run: bigint | undefined;

  constructor(minWindowNs = 500_000_000n) {
    this.#minWindowNs = minWindowNs;
  }

  /**
   * Watts per domain key as of this reading; none until the sampler has run for a while, and
   * none while it is stopped (a figure from before would stand for a time nothing was measured).
   */
  update(r: EnergyReading): ReadonlyMap<string, number> {
    // Never started: its times are 0, and a window from 0 would span the machine's uptime.
    if (r.run === 0n) return this.#last;
    // A new run (stop() and start() since), or the first: its window starts at its start, from
    // the energy counted before it (the run's own joules taken off), not across the time it
    // stood stopped.
    const newRun = r.run !== this.#run;
    this.#run = r.run;
    // Nothing from an earlier run stands for this one, nor while stopped.
    if (!r.running || newRun) this.#last = new Map();
    if (!r.running) {
      this.#endNs = null;
      return this.#last;
    }
    if (newRun || this.#endNs === null) {
      this.#endNs = r.run;
      this.#readErrors = new Map();
      this.#from = new Map(r.domains.map((d) => [d.key, { timeNs: r.run, joules: d.joules - d.runJoules }]));
    }
    const dtNs = r.timeNs - this.#endNs;
    // The first window too: one of a few ms after a start divided a counter step by them.
    if (dtNs >= this.#minWindowNs) {
      this.#last = new Map();
      for (const d of r.domains) {
        const from = this.#from.get(d.key) ?? { timeNs: this.#endNs, joules: 0 };
        const failed = d.readErrors > (this.#readErrors.get(d.key) ?? 0);
        this.#readErrors.set(d.key, d.readErrors);
        // Reads that failed keep the domain's last value: standing still, it is unknown, not 0 W.
        if (failed && d.joules === from.joules) continue;
        this.#last.set(d.key, (d.joules - from.joules) / (Number(r.timeNs - from.timeNs) / 1e9));
        this.#from.set(d.key, { timeNs: r.timeNs, joules: d.joules });
      }
      this.#endNs = r.timeNs;
    }
    return this.#last;
  }
}

/**
 * Reads a sampler's totals and attribution into monotonic accumulations. Reading is cheap (one
 * native call each), so every scrape or export calls `read()`.
 */
export class EnergyTracker {
  readonly sampler: Sampler;
  readonly #acc = new Monotonic();
  // By tid: a total per thread ever seen would grow without bound under thread churn; the
  // per-name sums below hold the figures.
  readonly #threadAcc = new Monotonic(false);
  readonly #threads: boolean;
  readonly #primary: string;
  readonly estimated: boolean;
  #lastReading: EnergyReading | null = null;
  // What readThreadsAtRunEnds() asked for: read at the end of each run.
  #threadsAsked: { top: number; named: Set<string> } | undefined;
  readonly #unsubscribe: () => void;

  /**
   * `continues`: a closed tracker of the same sampler whose accumulations this one takes over,
   * for a new registration in the registry or meter of a closed one. Afresh, the series counted
   * the run in progress from its start again: down from what the closed one had exported (a
   * restart before), and its energy counted twice by rate() and delta temporality. Taken over,
   * they go on from the closed one's last read: the run it read last counts on from there, and a
   * run that ended after its close() counts only up to that read.
   */
  constructor(sampler: Sampler, continues?: EnergyTracker) {
    this.sampler = sampler;
    if (continues) {
      this.#acc = continues.#acc;
      this.#threadAcc = continues.#threadAcc;
      this.#threadNames = continues.#threadNames;
      this.#lastReading = continues.#lastReading;
    }
    this.#threads = hasThreads(sampler);
    this.#primary = primaryDomain(sampler.domains) ?? 'package';
    this.estimated = sampler.domains.some((d) => d.estimated);
    // A run's figures start afresh at the next start(): read at its end, the energy since the
    // last collection counts too (a scrape every 15 s would otherwise lose up to 15 s of it at
    // each restart).
    this.#unsubscribe = sampler.onRunEnd(() => {
      this.read();
      if (this.#threadsAsked) this.readThreads(this.#threadsAsked.top, this.#threadsAsked.named);
    });
  }

  /** Stops reading at the ends of the sampler's runs (the exporter closed). */
  close(): void {
    this.#unsubscribe();
  }

  /**
   * Calls readThreads(top, named) at the end of every run from now on, for an exporter with a
   * per-thread metric. Declared at its registration, not learnt from its first collection: a
   * run that ended (stop(), close()) before that lost its threads' energy.
   */
  readThreadsAtRunEnds(top: number, named: Set<string>): void {
    this.#threadsAsked = { top, named };
  }

  get attributed(): boolean {
    return this.#threads;
  }

  /** The latest accumulated figures; on a closed sampler, the last ones read. */
  read(): EnergyReading {
    let totals;
    try {
      totals = this.sampler.totals();
    } catch {
      // Closed: the last figures read, or, closed before any read, none (a scrape of a shared
      // registry must not fail for it, nor an OpenTelemetry collection).
      if (this.#lastReading) return { ...this.#lastReading, running: false };
      return { run: 0n, timeNs: 0n, domains: [], machine: 0, parts: null, estimated: this.estimated, running: false, readErrors: 0 };
    }
    this.#acc.beginRun(totals.startNs);
    let machine = 0;
    const domains = totals.readings.map((r) => {
      const key = `${r.domain}:${r.package}`;
      this.#acc.update(key, r.joules);
      const joules = this.#acc.total(key);
      if (r.domain === this.#primary) machine += joules;
      return { domain: r.domain, package: r.package, joules, runJoules: r.joules, estimated: r.estimated, key, readErrors: 0 };
    });
    let parts: EnergyReading['parts'] = null;
    if (this.#threads) {
      try {
        const a = this.sampler.attribution();
        this.#acc.update('part:process', a.process);
        this.#acc.update('part:baseline', a.baseline);
        this.#acc.update('part:other', a.other);
        parts = {
          process: this.#acc.total('part:process'),
          baseline: this.#acc.total('part:baseline'),
          other: this.#acc.total('part:other'),
        };
      } catch {
        parts = this.#lastReading?.parts ?? null;
      }
    }
    // After totals(): a read that failed before them is counted with them.
    const timing = this.sampler.stats().timing;
    const readErrors = timing.readErrors;
    for (const d of domains) {
      // A domain stats() does not list (a sampler reopened with other domains) is judged by the
      // source's failures, as all were before per-domain counts.
      d.readErrors = timing.byDomain?.find((b) => b.domain === d.domain && b.package === d.package)?.readErrors ?? readErrors;
    }
    this.#lastReading = { run: totals.startNs, timeNs: totals.timeNs, domains, machine, parts, estimated: this.estimated, running: this.sampler.running, readErrors };
    return this.#lastReading;
  }

  /**
   * Per-thread energy accumulated per thread (per row of `threads()`), reported under names: the first `top` distinct
   * names (by energy when first seen) keep their own series for good, every other name is
   * counted as "other" — so series never move between names and never go down.
   */
  readThreads(top: number, named: Set<string>): Map<string, number> {
    const out = new Map<string, number>();
    if (!this.#threads) return out;
    let threads: ReturnType<Sampler['threads']>;
    let run: bigint | undefined;
    try {
      threads = this.sampler.threads();
      run = this.sampler.totals().startNs;
    } catch {
      threads = [];
    }
    if (run !== undefined) this.#threadAcc.beginRun(run);
    // Candidates for a named series, highest energy first (threads() is sorted that way). Not
    // the "(exited threads)" row (id 0): it names no thread, and what it adds past the rows it
    // folded is little (the fold's increase less their energy, counted under their own rows),
    // so it took a slot for good to read about 0 while real threads went to "other".
    for (const t of threads) {
      if (named.size >= top) break;
      if (t.joules > 0 && t.id !== 0) named.add(t.name);
    }
    // By row, not tid: an exited thread's row stays listed beside the row of a later thread
    // that the kernel gave its tid, and by tid the two readings took turns as the "last" one,
    // each read counting the larger one's whole energy again.
    const seen = new Set<string>(threads.map((t) => String(t.id)));
    // Threads gone from the list since the last read were folded into the "(exited threads)"
    // entry (id 0; the sampler keeps 4096 exited threads): their energy, counted already under
    // their own rows, is in that entry's increase too, and comes off it.
    const folded = this.#threadAcc.lastOutside(seen);
    for (const t of threads) {
      const raw = this.#threadAcc.update(String(t.id), t.joules);
      const delta = t.id === 0 ? Math.max(0, raw - folded) : raw;
      const series = t.id !== 0 && named.has(t.name) ? t.name : 'other';
      this.#threadNames.set(series, (this.#threadNames.get(series) ?? 0) + delta);
    }
    this.#threadAcc.retain(seen);
    for (const [k, v] of this.#threadNames) out.set(k, v);
    return out;
  }

  readonly #threadNames = new Map<string, number>();
}
