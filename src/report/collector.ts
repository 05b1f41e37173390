// Collects what an HTML report shows: power per domain and energy per thread over time (by
// polling a running Sampler), and per-request or per-span records with their joules.
import { checkIntegerInRange, checkKnownKeys, checkNumberInRange, checkObject, checkOneOf, checkString, invalidRange, invalidType } from '../errors';
import type { Sampler } from '../sampler';
import type { ReportData, ReportRecord, ReportThreadSeries } from './types';

export interface ReportCollectorOptions {
  /** Polling period in ms, 50 to 5000. Default 200. */
  periodMs?: number;
  /** Report title. Default "jouletrace report". */
  title?: string;
  /** A line under the title (the command that ran, say). */
  subtitle?: string;
  /** Threads drawn individually, 1 to 100; the rest are summed as "other threads". Default 8. */
  maxThreads?: number;
}

const OPTION_KEYS: readonly string[] = ['periodMs', 'title', 'subtitle', 'maxThreads'];

// One poll: its time on the report's axis, the cumulative energy per domain, and what the
// threads did since the poll before: their CPU time together, and the energy of each thread
// whose figure changed (or that was new), by index in the thread table. Threads that did nothing
// take no room: a run keeps every exited thread listed, and storing each at every poll grew
// without bound.
interface Point {
  time: number;
  joules: number[];
  cpuNs: number;
  threads: number[];
  threadJoules: number[];
}

// Past this many points, neighbouring ones are merged pairwise: the report keeps its shape at a
// coarser resolution, in bounded memory however long the run.
const MAX_POINTS = 2048;

// A thread's key: its pid and tid in one number (pid_max is at most 2^22).
const threadKey = (pid: number, tid: number): number => pid * 4_194_304 + tid;

// A finite figure of 0 or more (joules, milliseconds).
function checkAmount(option: string, value: unknown, unit: string): number {
  const what = `a finite number of ${unit}, 0 or more`;
  if (typeof value !== 'number') throw invalidType(option, what, value);
  if (!(value >= 0 && value < Infinity)) throw invalidRange(option, what, value);
  return value;
}

function checkStrings(option: string, value: unknown): string[] {
  if (!Array.isArray(value)) throw invalidType(option, 'an array of strings', value);
  return value.map((v, i) => checkString(`${option}[${i}]`, v));
}

type Extra = Partial<Pick<ReportData, 'summary' | 'notes' | 'attribution' | 'subtitle'>>;
const EXTRA_KEYS: readonly string[] = ['summary', 'notes', 'attribution', 'subtitle'];

// data()'s `extra`, checked where it is given: renderReport() failed on it with a TypeError of
// its own at the end of a long run. A summary row's value may be a finite number, written as
// String(n): JavaScript callers write ['requests', 1234].
function checkExtra(value: unknown): Extra {
  const extra = checkObject('extra', value);
  checkKnownKeys('extra', extra, EXTRA_KEYS);
  const out: Extra = {};
  if (extra.subtitle !== undefined) out.subtitle = checkString('extra.subtitle', extra.subtitle);
  if (extra.notes !== undefined) out.notes = checkStrings('extra.notes', extra.notes);
  if (extra.summary !== undefined) {
    if (!Array.isArray(extra.summary)) throw invalidType('extra.summary', 'an array of [label, value] pairs', extra.summary);
    out.summary = extra.summary.map((row: unknown, i): [string, string] => {
      const name = `extra.summary[${i}]`;
      if (!Array.isArray(row) || row.length !== 2) throw invalidType(name, 'a [label, value] pair', row);
      const v: unknown = typeof row[1] === 'number' && Number.isFinite(row[1]) ? String(row[1]) : row[1];
      return [checkString(`${name}[0]`, row[0]), checkString(`${name}[1]`, v)];
    });
  }
  if (extra.attribution !== undefined) {
    const a = checkObject('extra.attribution', extra.attribution);
    const part = (key: string) => checkAmount(`extra.attribution.${key}`, a[key], 'joules');
    // Copied field by field: sampler.attribution() has more than the report keeps.
    out.attribution = {
      total: part('total'),
      process: part('process'),
      baseline: part('baseline'),
      other: part('other'),
      domains: checkStrings('extra.attribution.domains', a.domains),
    };
  }
  return out;
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
  #points: Point[] = [];
  // Every thread seen, once: index by key, and the latest name, pid and tid of each.
  readonly #threadIndex = new Map<number, number>();
  readonly #threadNames: string[] = [];
  readonly #threadPids: number[] = [];
  readonly #threadTids: number[] = [];
  // The cumulative figures of the threads listed at the last poll, by row id ([joules, onCpuNs]);
  // empty before a run's first poll, since threads() starts afresh with each run.
  #threadsBefore = new Map<number, [number, number]>();
  readonly #records: PendingRecord[] = [];
  #recordKind: 'request' | 'span' = 'request';
  // Labels by pid and tid (a tid is given again once its thread exits), and by tid alone.
  readonly #threadLabels = new Map<number, string>();
  readonly #tidLabels = new Map<number, string>();

  constructor(sampler: Sampler, options?: ReportCollectorOptions) {
    const opts = checkObject('options', options);
    checkKnownKeys('options', opts, OPTION_KEYS);
    this.#sampler = sampler;
    this.#periodMs = opts.periodMs === undefined ? 200 : checkNumberInRange('options.periodMs', opts.periodMs, 50, 5000);
    this.#title = opts.title === undefined ? 'jouletrace report' : checkString('options.title', opts.title);
    this.#subtitle = opts.subtitle === undefined ? undefined : checkString('options.subtitle', opts.subtitle);
    this.#maxThreads = opts.maxThreads === undefined ? 8 : checkIntegerInRange('options.maxThreads', opts.maxThreads, 1, 100);
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
    const newRun = totals.startNs !== this.#run;
    if (this.#run !== undefined && newRun) this.#before = this.#runJoules.map((j, i) => j + (this.#before[i] ?? 0));
    this.#run = totals.startNs;
    this.#runJoules = totals.readings.map((r) => r.joules);
    const point: Point = {
      time: Number(totals.timeNs - this.#startNs) / 1e9,
      joules: this.#runJoules.map((j, i) => j + (this.#before[i] ?? 0)),
      cpuNs: 0,
      threads: [],
      threadJoules: [],
    };
    if (this.#hasThreads) this.#threadDeltas(point, newRun);
    this.#points.push(point);
    if (this.#points.length > MAX_POINTS) this.#points = mergePairs(this.#points);
  }

  // Fills in what each thread did since the last poll (since zero in a new run).
  #threadDeltas(point: Point, newRun: boolean): void {
    const before = newRun ? new Map<number, [number, number]>() : this.#threadsBefore;
    const now = new Map<number, [number, number]>();
    // Increases are taken per row of threads() (a thread), and drawn per pid and tid: the row of
    // an exited thread stays listed beside the row of a later thread given its tid, and taken
    // together their sum fell when the exited row was folded away.
    const increases = new Map<number, { joules: number; onCpuNs: number; seen: boolean }>();
    let foldedRow: number | undefined;
    for (const t of this.#sampler.threads()) {
      const key = threadKey(t.pid, t.tid);
      let i = this.#threadIndex.get(key);
      if (i === undefined) {
        i = this.#threadNames.length;
        this.#threadIndex.set(key, i);
        this.#threadPids.push(t.pid);
        this.#threadTids.push(t.tid);
        this.#threadNames.push(t.name);
      } else this.#threadNames[i] = t.name;
      now.set(t.id, [t.joules, t.onCpuNs]);
      const was = before.get(t.id);
      const sum = increases.get(i) ?? { joules: 0, onCpuNs: 0, seen: false };
      sum.joules += t.joules - (was?.[0] ?? 0);
      sum.onCpuNs += t.onCpuNs - (was?.[1] ?? 0);
      sum.seen ||= was !== undefined;
      increases.set(i, sum);
      if (t.id === 0) foldedRow = i;
    }
    // Threads gone from the list since the last poll were folded into the "(exited threads)"
    // row (id 0; the sampler keeps 4096 exited threads): their figures, counted already under
    // their own rows, are in that row's increase too, and come off it.
    const fold = foldedRow === undefined ? undefined : increases.get(foldedRow);
    if (fold !== undefined) {
      for (const [id, [joules, onCpuNs]] of before) {
        if (now.has(id)) continue;
        fold.joules -= joules;
        fold.onCpuNs -= onCpuNs;
      }
    }
    for (const [i, { joules, onCpuNs, seen }] of increases) {
      point.cpuNs += Math.max(0, onCpuNs);
      // A new thread is stored even at 0 J: it is drawn among the top threads if too few did work.
      if (joules > 0 || !seen) {
        point.threads.push(i);
        point.threadJoules.push(Math.max(0, joules));
      }
    }
    this.#threadsBefore = now;
  }

  /** @internal For tests: the per-thread figures stored, all points together. */
  get storedThreadFigures(): number {
    return this.#points.reduce((n, p) => n + p.threads.length, 0);
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
   * RequestRecord.endNs, SpanResult.endNs); `joules` NaN for one not measured.
   */
  addRecord(record: { label: string; joules: number; endNs: number | bigint; durationMs: number }, kind: 'request' | 'span' = 'request'): void {
    // Checked here: renderReport() failed on a bad record at the end of a long run.
    const r = checkObject('record', record);
    const label = checkString('record.label', r.label);
    if (typeof r.joules !== 'number') throw invalidType('record.joules', 'a number of joules (NaN for one not measured)', r.joules);
    const joules = r.joules;
    let endNs: bigint;
    const what = 'a bigint or a finite number (CLOCK_MONOTONIC ns, as process.hrtime.bigint() gives)';
    if (typeof r.endNs === 'bigint') endNs = r.endNs;
    else if (typeof r.endNs !== 'number') throw invalidType('record.endNs', what, r.endNs);
    else if (!Number.isFinite(r.endNs)) throw invalidRange('record.endNs', what, r.endNs);
    else endNs = BigInt(Math.round(r.endNs));
    const durationMs = checkAmount('record.durationMs', r.durationMs, 'milliseconds');
    this.#recordKind = checkOneOf('kind', kind, ['request', 'span'] as const);
    this.#records.push({ label, joules, endNs, durationMs });
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

  /**
   * Names a thread in the report (worker threads all share the OS name "node"): with a pid, that
   * process's thread; with a tid alone, any thread with that tid not named by its pid and tid.
   */
  labelThread(tid: number, label: string): void;
  labelThread(pid: number, tid: number, label: string): void;
  labelThread(...args: [number, string] | [number, number, string]): void {
    if (args.length <= 2) {
      const [tid, label] = args as unknown[];
      this.#tidLabels.set(checkIntegerInRange('tid', tid, 0, 4_194_304), checkString('label', label));
      return;
    }
    const [pid, tid, label] = args as unknown[];
    const key = threadKey(checkIntegerInRange('pid', pid, 0, 4_194_304), checkIntegerInRange('tid', tid, 0, 4_194_304));
    this.#threadLabels.set(key, checkString('label', label));
  }


  get records(): readonly ReportRecord[] {
    return this.#reportRecords();
  }

  /** The report's data; `extra` fills the summary table, notes and attribution. */
  data(extra: Partial<Pick<ReportData, 'summary' | 'notes' | 'attribution' | 'subtitle'>> = {}): ReportData {
    const x = checkExtra(extra);
    const domains = this.#sampler.domains.map((d) => `${d.domain}-${d.package}`);
    const points = this.#points;
    const n = points.length;
    // Points at least half a period apart: a short last interval (the final poll at stop()) is
    // merged into the one before it rather than drawn as a spike of quantisation noise.
    const keep: number[] = n > 0 ? [0] : [];
    const minDt = (0.5 * this.#periodMs) / 1000;
    for (let i = 1; i < n; i++) {
      if (points[i].time - points[keep[keep.length - 1]].time >= minDt) keep.push(i);
      else if (i === n - 1) {
        if (keep.length > 1) keep[keep.length - 1] = i;
        else keep.push(i);
      }
    }
    const time: number[] = [];
    const watts: number[][] = domains.map(() => []);
    for (let k = 1; k < keep.length; k++) {
      const [a, b] = [points[keep[k - 1]], points[keep[k]]];
      const dt = b.time - a.time;
      time.push(b.time);
      domains.forEach((_, d) => watts[d].push((b.joules[d] - a.joules[d]) / dt));
    }
    const threads: ReportThreadSeries[] = [];
    const cpuCores: number[] = [];
    if (this.#hasThreads && keep.length > 1) {
      // Each thread's energy and CPU time summed over the points that each drawn interval merges.
      const sum = new Map<number, number>();
      const intervals: Array<Map<number, number>> = [];
      for (let k = 1; k < keep.length; k++) {
        const joules = new Map<number, number>();
        let cpuNs = 0;
        for (let i = keep[k - 1] + 1; i <= keep[k]; i++) {
          const p = points[i];
          cpuNs += p.cpuNs;
          p.threads.forEach((t, j) => {
            joules.set(t, (joules.get(t) ?? 0) + p.threadJoules[j]);
            sum.set(t, (sum.get(t) ?? 0) + p.threadJoules[j]);
          });
        }
        intervals.push(joules);
        cpuCores.push(cpuNs / 1e9 / (points[keep[k]].time - points[keep[k - 1]].time));
      }
      const top = [...sum.entries()].sort((a, b) => b[1] - a[1]).slice(0, this.#maxThreads);
      const topThreads = new Set(top.map(([t]) => t));
      const others = intervals.map((joules) => {
        let rest = 0;
        for (const [t, dj] of joules) if (!topThreads.has(t)) rest += dj;
        return rest;
      });
      for (const [t] of top) {
        const [pid, tid] = [this.#threadPids[t], this.#threadTids[t]];
        threads.push({
          label: `${this.#threadLabels.get(threadKey(pid, tid)) ?? this.#tidLabels.get(tid) ?? this.#threadNames[t]} (${tid})`,
          pid,
          tid,
          joules: intervals.map((joules) => joules.get(t) ?? 0),
        });
      }
      if (others.some((x) => x > 0)) threads.push({ label: 'other threads', pid: 0, tid: 0, joules: others });
    }
    const estimated = this.#sampler.domains.some((d) => d.estimated);
    return {
      version: 1,
      title: this.#title,
      subtitle: x.subtitle ?? this.#subtitle,
      createdAt: new Date().toISOString(),
      source: this.#sampler.source,
      estimated,
      durationS: n > 0 ? points[n - 1].time : 0,
      domains,
      startS: keep.length > 0 ? points[keep[0]].time : 0,
      time,
      watts,
      threads,
      threadsTracked: this.#hasThreads,
      cpuCores,
      records: this.#reportRecords(),
      recordKind: this.#recordKind,
      attribution: x.attribution,
      summary: x.summary ?? [],
      notes: x.notes ?? [],
    };
  }
}

// Merges neighbouring points pairwise, the first kept as it is (the start of the first interval),
// and the last alone when left over: each merged point ends where the later of its two did,
// with the thread figures of both.
function mergePairs(points: Point[]): Point[] {
  const out = [points[0]];
  for (let i = 1; i < points.length; i += 2) {
    const [a, b] = [points[i], points[i + 1]];
    if (b === undefined) {
      out.push(a);
      break;
    }
    const joules = new Map<number, number>();
    a.threads.forEach((t, j) => joules.set(t, a.threadJoules[j]));
    b.threads.forEach((t, j) => joules.set(t, (joules.get(t) ?? 0) + b.threadJoules[j]));
    out.push({ time: b.time, joules: b.joules, cpuNs: a.cpuNs + b.cpuNs, threads: [...joules.keys()], threadJoules: [...joules.values()] });
  }
  return out;
}
