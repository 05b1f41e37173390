// The sampler's health as the exporters (Prometheus, OpenTelemetry) report it: the counts the
// native sampler keeps for its run in progress, which start afresh at every start(), accumulated
// into counters that never go down, across runs and (a registration going on from a closed one's)
// across registrations.
import { Monotonic } from './energy-tracker';
import type { Sampler } from './sampler';

// The sampler's counts that the health counters carry across runs and registrations.
const HEALTH_COUNTS = ['samples', 'dropped', 'missed', 'readErrors', 'counterRestarts'] as const;
export type HealthCounts = Record<(typeof HEALTH_COUNTS)[number], number>;

/** Sampler statistics accumulated across restarts (samples and drops restart at each start()). */
export class EnergyHealth {
  readonly #sampler: Sampler;
  // By count name, and each domain's read errors by `domain:<index>`.
  readonly #acc: Monotonic;
  #cache: { at: number; value: ReturnType<EnergyHealth['read']> } | null = null;
  // As last read (first at construction: both are fixed by then): a closed sampler's info series
  // keeps its labels rather than start another, also when it closed before the first scrape.
  #threads = 'unknown';
  #intervalUs = 0;
  // stats().threads.droppedThreads counts over the sampler's life, not per run (the tracker is
  // the sampler's): taken as it is, and kept as last read once the sampler is closed.
  #droppedThreads = 0;
  readonly #unsubscribe: () => void;

  /** `continues`: a closed one whose totals this one goes on from (see EnergyTracker's). */
  constructor(sampler: Sampler, continues?: EnergyHealth) {
    this.#sampler = sampler;
    this.#acc = continues ? continues.#acc : new Monotonic();
    this.#droppedThreads = continues ? continues.#droppedThreads : 0;
    if (continues) {
      this.#threads = continues.#threads;
      this.#intervalUs = continues.#intervalUs;
    }
    try {
      const s = sampler.stats();
      this.#threads = s.threads.backend;
      this.#intervalUs = s.timing.intervalUs;
    } catch {
      /* closed: as the registration it goes on from last read them */
    }
    // A run's counts start afresh at the next start(): read at its end (not from the cache), what
    // was taken since the last scrape counts too.
    this.#unsubscribe = sampler.onRunEnd(() => {
      this.#cache = null;
      this.read();
    });
  }

  /** Stops reading at the ends of the sampler's runs (the exporter closed). */
  close(): void {
    this.#unsubscribe();
  }

  read(): HealthCounts & {
    readErrorsByDomain: number[];
    jitterUs: { p50: number; p99: number; p999: number; max: number } | null;
    stillUs: number | null;
    threads: string;
    intervalUs: number;
    /** Threads left untracked for want of a slot, over the sampler's life. */
    droppedThreads: number;
  } {
    const now = performance.now();
    // Only while it runs: stopped, the figures stand still, and closed (within the window of a
    // read at the run's end, or of a scrape of the stopped sampler) they are unknown, no series.
    if (this.#cache && now - this.#cache.at < 50 && this.#sampler.running) return this.#cache.value;
    const a = this.#acc;
    const totals = () => ({
      ...(Object.fromEntries(HEALTH_COUNTS.map((k) => [k, a.total(k)])) as HealthCounts),
      readErrorsByDomain: this.#sampler.domains.map((_, i) => a.total(`domain:${i}`)),
    });
    let value;
    try {
      const s = this.#sampler.stats();
      a.beginRun(this.#sampler.totals().startNs);
      // One policy's losses or the other's: a ring's overwritten samples are as lost as dropped ones.
      const dropped = s.ring.dropped + s.ring.overwritten;
      const cur: HealthCounts = { samples: s.timing.samples, dropped, missed: s.timing.missedDeadlines, readErrors: s.timing.readErrors, counterRestarts: s.timing.counterRestarts };
      for (const k of HEALTH_COUNTS) a.update(k, cur[k]);
      s.timing.byDomain.forEach((d, i) => a.update(`domain:${i}`, d.readErrors));
      this.#threads = s.threads.backend;
      this.#intervalUs = s.timing.intervalUs;
      this.#droppedThreads = Math.max(this.#droppedThreads, s.threads.droppedThreads);
      value = {
        ...totals(),
        // Both null before the run's first sample (stats() says unknown): no series then.
        jitterUs: s.timing.jitterUs,
        stillUs: s.timing.countersStillUs?.now ?? null,
        threads: s.threads.backend,
        intervalUs: s.timing.intervalUs,
        droppedThreads: this.#droppedThreads,
      };
    } catch {
      value = { ...totals(), jitterUs: null, stillUs: null, threads: this.#threads, intervalUs: this.#intervalUs, droppedThreads: this.#droppedThreads };
    }
    this.#cache = { at: now, value };
    return value;
  }
}
