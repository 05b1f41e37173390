// Collects what an HTML report shows: power per domain and energy per thread over time (by
// polling a running Sampler), and per-request or per-span records with their joules.
import type { Sampler } from '../sampler';
import type { ReportData, ReportRecord, ReportThreadSeries } from './types';

export interface ReportCollectorOptions {
  /** Polling period in ms, 50 to 5000. Default 200. */
  periodMs?: number;
  /** Report title. Default "jouletrace report". */
  title?: string;
  /** A line under the title (the command that ran, say). */
  subtitle?: string;
  /** Threads drawn individually; the rest are summed as "other threads". Default 8. */
  maxThreads?: number;
}

interface ThreadPoint {
  name: string;
  pid: number;
  tid: number;
  joules: number;
  onCpuNs: number;
}

// sampler.threads() at one poll, and the run it belongs to: its figures start afresh with each run.
interface ThreadPoll {
  run: bigint;
  threads: Map<string, ThreadPoint>;
}

interface PendingRecord {
  label: string;
  joules: number;
  endNs: bigint;
  durationMs: number;
}

/**
 * Polls `sampler.totals()` and, with thread tracking, `sampler.threads()` every `periodMs` while
 * the sampler runs, and once more at the end of each run (the sampler's stop(), so that a run's
 * last figures count although the next start() resets them); `addRecord()` takes finished
 * requests or spans. `data()` builds the object `renderReport()` draws.
 */
export class ReportCollector {
  readonly #sampler: Sampler;
  readonly #periodMs: number;
  readonly #title: string;
  readonly #subtitle: string | undefined;
  readonly #maxThreads: number;
  readonly #hasThreads: boolean;
  #timer: NodeJS.Timeout | undefined;
  #unsubscribe: (() => void) | undefined;
  // The time axis's zero: the start of the first run seen.
  #startNs: bigint | undefined;
  #lastTimeNs = -1n;
  // The sampler's totals start afresh at each start(): the run read last, its last readings, and
  // what earlier runs add, so that the energy series stays cumulative across stop()/start().
  #run: bigint | undefined;
  #runJoules: number[] = [];
  #before: number[] = [];
  readonly #time: number[] = [];
  readonly #joules: number[][] = [];
  readonly #threadPolls: ThreadPoll[] = [];
  readonly #records: PendingRecord[] = [];
  #recordKind: 'request' | 'span' = 'request';
  readonly #threadLabels = new Map<number, string>();

  constructor(sampler: Sampler, options: ReportCollectorOptions = {}) {
    const periodMs = options.periodMs ?? 200;
    if (typeof periodMs !== 'number' || !(periodMs >= 50 && periodMs <= 5000)) {
      throw new RangeError(`Expected a number from 50 to 5000 for options.periodMs but received ${String(periodMs)}`);
    }
    this.#sampler = sampler;
    this.#periodMs = periodMs;
    this.#title = options.title ?? 'jouletrace report';
    this.#subtitle = options.subtitle;
    this.#maxThreads = options.maxThreads ?? 8;
    this.#hasThreads = sampler.stats().threads.backend !== 'off';
  }

  /** Starts polling (call after sampler.start()). */
  start(): this {
    if (this.#timer) return this;
    this.poll();
    this.#timer = setInterval(() => {
      try {
        this.poll();
      } catch {
        // The sampler was closed first: nothing more to collect (an error thrown from a timer
        // would end the process).
        clearInterval(this.#timer);
        this.#timer = undefined;
        this.#unsubscribe?.();
        this.#unsubscribe = undefined;
      }
    }, this.#periodMs);
    this.#timer.unref();
    return this;
  }

  /** Takes one point now; `start()` calls it on a timer. Safe to call any time while sampling. */
  poll(): void {
    // From the first poll until stop(): one more at the end of each run.
    this.#unsubscribe ??= this.#sampler.onRunEnd(() => this.poll());
    const totals = this.#sampler.totals();
    if (totals.timeNs === this.#lastTimeNs) return;
    // Never started: nothing to draw, and no start to measure time from.
    if (totals.startNs === 0n) return;
    this.#lastTimeNs = totals.timeNs;
    this.#startNs ??= totals.startNs;
    if (this.#run !== undefined && totals.startNs !== this.#run) this.#before = this.#runJoules.map((j, i) => j + (this.#before[i] ?? 0));
    this.#run = totals.startNs;
    this.#runJoules = totals.readings.map((r) => r.joules);
    this.#time.push(Number(totals.timeNs - this.#startNs) / 1e9);
    this.#joules.push(this.#runJoules.map((j, i) => j + (this.#before[i] ?? 0)));
    if (this.#hasThreads) {
      const m = new Map<string, ThreadPoint>();
      for (const t of this.#sampler.threads()) {
        m.set(`${t.pid}:${t.tid}`, { name: t.name, pid: t.pid, tid: t.tid, joules: t.joules, onCpuNs: t.onCpuNs });
      }
      this.#threadPolls.push({ run: totals.startNs, threads: m });
    }
  }

  /** Stops polling after one last point (call before sampler.stop() or right after it), and at the ends of runs. */
  stop(): this {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    try {
      this.poll();
    } catch {
      // The sampler was closed first: what was collected stands.
    }
    // After the last poll, which would subscribe again.
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    return this;
  }

  /**
   * Adds a finished request or span. `endNs` is CLOCK_MONOTONIC ns (process.hrtime.bigint(),
   * RequestRecord.endNs, SpanResult.endNs).
   */
  addRecord(record: { label: string; joules: number; endNs: number | bigint; durationMs: number }, kind: 'request' | 'span' = 'request'): void {
    this.#recordKind = kind;
    const endNs = typeof record.endNs === 'bigint' ? record.endNs : BigInt(Math.round(record.endNs));
    this.#records.push({ label: record.label, joules: record.joules, endNs, durationMs: record.durationMs });
  }

  // Records with their times on the report's axis. Resolved late: a record may be added before
  // the sampler's first start, when there is no start to measure from yet.
  #reportRecords(): ReportRecord[] {
    let zero = this.#startNs;
    if (zero === undefined) {
      try {
        const run = this.#sampler.totals().startNs;
        if (run !== 0n) zero = run;
      } catch {
        /* closed */
      }
    }
    zero ??= this.#records.reduce((m, r) => (r.endNs < m ? r.endNs : m), this.#records[0]?.endNs ?? 0n);
    return this.#records.map((r) => ({ label: r.label, joules: r.joules, t: Number(r.endNs - zero) / 1e9, durationMs: r.durationMs }));
  }

  /** Names a thread in the report (worker threads all share the OS name "node"). */
  labelThread(tid: number, label: string): void {
    this.#threadLabels.set(tid, label);
  }

  get records(): readonly ReportRecord[] {
    return this.#reportRecords();
  }

  /** The report's data; `extra` fills the summary table, notes and attribution. */
  data(extra: Partial<Pick<ReportData, 'summary' | 'notes' | 'attribution' | 'subtitle'>> = {}): ReportData {
    const domains = this.#sampler.domains.map((d) => `${d.domain}-${d.package}`);
    const n = this.#time.length;
    // Points at least half a period apart: a short last interval (the final poll at stop()) is
    // merged into the one before it rather than drawn as a spike of quantisation noise.
    const keep: number[] = n > 0 ? [0] : [];
    const minDt = (0.5 * this.#periodMs) / 1000;
    for (let i = 1; i < n; i++) {
      if (this.#time[i] - this.#time[keep[keep.length - 1]] >= minDt) keep.push(i);
      else if (i === n - 1) {
        if (keep.length > 1) keep[keep.length - 1] = i;
        else keep.push(i);
      }
    }
    const time: number[] = [];
    const watts: number[][] = domains.map(() => []);
    for (let k = 1; k < keep.length; k++) {
      const [a, b] = [keep[k - 1], keep[k]];
      const dt = this.#time[b] - this.#time[a];
      time.push(this.#time[b]);
      domains.forEach((_, d) => watts[d].push((this.#joules[b][d] - this.#joules[a][d]) / dt));
    }
    const threads: ReportThreadSeries[] = [];
    const cpuCores: number[] = [];
    const polls = this.#threadPolls;
    if (this.#hasThreads && polls.length > 1 && keep.length > 1) {
      // Each thread's energy and CPU time between consecutive polls, summed over the polls that
      // each drawn interval merges. A poll of a new run counts from zero: threads() starts afresh.
      const sum = new Map<string, { joules: number; point: ThreadPoint }>();
      const intervals: Array<{ joules: Map<string, number>; cpuNs: number }> = [];
      for (let k = 1; k < keep.length; k++) {
        const joules = new Map<string, number>();
        let cpuNs = 0;
        for (let i = keep[k - 1] + 1; i <= keep[k]; i++) {
          const prev = polls[i - 1].run === polls[i].run ? polls[i - 1].threads : undefined;
          for (const [key, p] of polls[i].threads) {
            const before = prev?.get(key);
            const dj = Math.max(0, p.joules - (before?.joules ?? 0));
            cpuNs += Math.max(0, p.onCpuNs - (before?.onCpuNs ?? 0));
            joules.set(key, (joules.get(key) ?? 0) + dj);
            const total = sum.get(key);
            if (total === undefined) sum.set(key, { joules: dj, point: p });
            else {
              total.joules += dj;
              total.point = p;
            }
          }
        }
        intervals.push({ joules, cpuNs });
      }
      const top = [...sum.entries()].sort((a, b) => b[1].joules - a[1].joules).slice(0, this.#maxThreads);
      const topKeys = new Set(top.map(([key]) => key));
      const others: number[] = [];
      for (let k = 1; k < keep.length; k++) {
        const { joules, cpuNs } = intervals[k - 1];
        let rest = 0;
        for (const [key, dj] of joules) if (!topKeys.has(key)) rest += dj;
        others.push(rest);
        cpuCores.push(cpuNs / 1e9 / (this.#time[keep[k]] - this.#time[keep[k - 1]]));
      }
      for (const [key, { point: p }] of top) {
        threads.push({
          label: `${this.#threadLabels.get(p.tid) ?? p.name} (${p.tid})`,
          pid: p.pid,
          tid: p.tid,
          joules: intervals.map((iv) => iv.joules.get(key) ?? 0),
        });
      }
      if (others.some((x) => x > 0)) threads.push({ label: 'other threads', pid: 0, tid: 0, joules: others });
    }
    const estimated = this.#sampler.domains.some((d) => d.estimated);
    return {
      version: 1,
      title: this.#title,
      subtitle: extra.subtitle ?? this.#subtitle,
      createdAt: new Date().toISOString(),
      source: this.#sampler.source,
      estimated,
      durationS: n > 0 ? this.#time[n - 1] : 0,
      domains,
      startS: keep.length > 0 ? this.#time[keep[0]] : 0,
      time,
      watts,
      threads,
      cpuCores,
      records: this.#reportRecords(),
      recordKind: this.#recordKind,
      attribution: extra.attribution,
      summary: extra.summary ?? [],
      notes: extra.notes ?? [],
    };
  }
}
