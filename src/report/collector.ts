// Collects what an HTML report shows: power per domain and energy per thread over time (by
// polling a running Sampler), and per-request or per-span records with their joules.
import { checkBoolean, checkIntegerInRange, checkKnownKeys, checkNumberInRange, checkObject, checkOneOf, checkSampler, checkString, invalidRange, invalidType } from '../errors';
import type { Sampler } from '../sampler';
import { primaryDomain } from '../sources';
import { counted, fmtSeconds } from '../units';
import type { ReportData, ReportRecord, ReportRecordLabel, ReportThreadSeries } from './types';

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
// without bound. `gapS`: the seconds of the interval ending here when the sampler was stopped
// (all of it for the point a later run starts with); `records`: the records that ended in it.
// `reads`: per domain, how its reads went in the interval (READ_*), absent where all succeeded.
interface Point {
  time: number;
  joules: number[];
  cpuNs: number;
  threads: number[];
  threadJoules: number[];
  gapS: number;
  records: number;
  reads?: number[];
}

// A domain's reads in an interval, as flags: some failed (stats().timing.byDomain's readErrors);
// the latest read at the interval's end failed (totals().readings[].held), so that its total there
// is its last good read's and the energy since comes with its next good read; or some failed where
// energy may be lost, not delayed (a counter started again, or the domain has had no good read in
// its run, and counts from its first one). Only READ_HELD and READ_LOST make an interval's figure
// wrong: a read that failed and was followed by a good one before the interval ended delayed its
// energy within the interval alone (one failed read a poll, 1 in 200 at 1 ms, blanked the chart).
const READ_FAILED = 1;
const READ_HELD = 2;
const READ_LOST = 4;
const WRONG = READ_HELD | READ_LOST;

// The reads of `b`'s interval after `a`'s, as one: held as at the later end, the rest of either.
const mergeReads = (a: number, b: number): number => ((a | b) & ~READ_HELD) | (b & READ_HELD);

/** The parts of the attribution bar, as `data({ attribution })` takes them. */
type AttributionParts = { total: number; process: number; baseline: number; other: number; domains: string[] };

// Past this many points they are folded again to a stride sized from the time elapsed: polls are
// folded into the last point until it spans the stride, so that every interval has about the
// same width (merging alone halved the old ones while new ones came at full resolution), in
// bounded memory however long the run.
const MAX_POINTS = 2048;

// Records waiting for the next point, at most: the last resort that bounds memory where no poll
// comes (poll() called by hand and then no more); past it a record is counted into the next
// point whatever its end. A poll's worth at 5,000 ms and 200,000 records a second.
const MAX_PENDING = 1 << 20;

// How far past process.hrtime.bigint() a record's end may lie: the clocks are one
// (CLOCK_MONOTONIC), so any later end is another clock's (Date.now() * 1e6, wall-clock ns),
// which lay after every point forever and kept every such record waiting for one.
const FUTURE_SLACK_NS = 1_000_000_000n;

/** The records kept per label for the dots and percentiles; past it, a uniform sample of them. */
export const RECORD_SAMPLE = 2048;

// A thread's key: its pid and tid in one number (pid_max is at most 2^22).
const threadKey = (pid: number, tid: number): number => pid * 4_194_304 + tid;

// One label's exact figures, and a sample of its measured records (algorithm R), in step:
// joules, end (ns after the first record's end: exact for 104 days) and duration. `zero`: the
// measured records of 0 J exactly, which the chart's log axis cannot place.
interface LabelRecords {
  count: number;
  measured: number;
  zero: number;
  incomplete: number;
  joules: number;
  sampleJoules: number[];
  sampleEnd: number[];
  sampleDurationMs: number[];
}

// mulberry32, seeded: the same records give the same sample in every run.
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

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
  // Polls folded into one point: a power of two, sized from the time elapsed when the points
  // overflow (doubled at each overflow, a stop() and start() often, left the first half of a day
  // in a handful of intervals).
  #stride = 1;
  // Every thread seen, once: index by key, and the latest name, pid and tid of each.
  readonly #threadIndex = new Map<number, number>();
  readonly #threadNames: string[] = [];
  readonly #threadPids: number[] = [];
  readonly #threadTids: number[] = [];
  // The cumulative figures of the threads listed at the last poll, by row id ([joules, onCpuNs,
  // unmeasuredNs]); empty before a run's first poll, since threads() starts afresh with each run.
  #threadsBefore = new Map<number, [number, number, number]>();
  // Thread time whose energy no read measured (the rows' unmeasuredNs), over every run: not in
  // any thread's joules, so the report says how much.
  #unmeasuredNs = 0;
  // Records by label: exact figures, and a bounded sample (108 bytes a record, kept without
  // bound, overflowed the report's string past 28 million).
  readonly #labels = new Map<string, LabelRecords>();
  #recordOrigin: bigint | undefined;
  readonly #random = seededRandom(0x6a6f756c);
  // Records that ended after the last point, by end time on the report's axis: each is counted
  // into the first point at or after it (a gap's, where it ended while the sampler was stopped).
  #pendingEnds: number[] = [];
  // Of those, the ones known to have ended between runs (counted once the sampler was seen
  // stopped, which also bounds #pendingEnds to a poll's worth).
  #pendingGap = 0;
  // Between stop() (or the timer's giving up on a closed sampler) and a later start(): records
  // that ended after the last point are only counted, into the next point if there is one, else
  // named in data()'s notes. Stored, they grew without bound with nothing left to take them.
  #stopped = false;
  #pendingStopped = 0;
  #recordKind: 'request' | 'span' = 'request';
  // Labels by pid and tid (a tid is given again once its thread exits), and by tid alone.
  readonly #threadLabels = new Map<number, string>();
  readonly #tidLabels = new Map<number, string>();
  // Each domain's failed reads, and the counter restarts, of the run read last, as of its last
  // point: stats() counts them per run, and each point stores what rose since.
  #readErrorsBefore: number[] = [];
  // Each domain unread at the last point: its first good read since counts from there, so the
  // interval it came in lost the energy before it.
  #unreadBefore: boolean[] = [];
  #restartsBefore = 0;
  // The runs seen, and sampler.attribution() (which starts afresh at each start()) summed over
  // those that ended, plus the latest figures of the run read last: the bar covers every run, as
  // the charts do. Taken at each run's end and at stop(); a run the collector stopped before the
  // sampler counts up to the collector's stop(), where its charts end.
  #runs = 0;
  // sampler.attribution() at the collector's first point, where that came after its run began:
  // the charts start at that point, and attribution() counts from the run's start() (a collector
  // started 1.5 s into a run drew 0.5 s and 9.9 J, under a bar of 48.9 J). Later runs are charted
  // from their start, as attribution() counts them.
  #attributionBase: { run: bigint; parts: AttributionParts } | undefined;
  #attributionSum: AttributionParts | undefined;
  #runAttribution: AttributionParts | undefined;

  constructor(sampler: Sampler, options?: ReportCollectorOptions) {
    const opts = checkObject('options', options);
    checkKnownKeys('options', opts, OPTION_KEYS);
    this.#sampler = checkSampler('sampler', sampler);
    this.#periodMs = opts.periodMs === undefined ? 200 : checkNumberInRange('options.periodMs', opts.periodMs, 50, 5000);
    this.#title = opts.title === undefined ? 'jouletrace report' : checkString('options.title', opts.title);
    this.#subtitle = opts.subtitle === undefined ? undefined : checkString('options.subtitle', opts.subtitle);
    this.#maxThreads = opts.maxThreads === undefined ? 8 : checkIntegerInRange('options.maxThreads', opts.maxThreads, 1, 100);
    this.#hasThreads = sampler.stats().threads.backend !== 'off';
  }

  /** Starts polling (call after sampler.start()). */
  start(): this {
    if (this.#timer) return this;
    this.#stopped = false;
    this.poll();
    this.#timer = setInterval(() => {
      try {
        this.poll();
      } catch {
        // The sampler was closed first: nothing more to collect (an error thrown from a timer
        // would end the process).
        clearInterval(this.#timer);
        this.#timer = undefined;
        this.#stopped = true;
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
    this.#unsubscribe ??= this.#sampler.onRunEnd(() => {
      this.poll();
      this.#takeAttribution();
    });
    const totals = this.#sampler.totals();
    if (totals.timeNs === this.#lastTimeNs) {
      // Stopped, after the run's last point (taken at its end): what ended since is between runs.
      if (!this.#sampler.running) {
        this.#pendingGap += this.#pendingEnds.length;
        this.#pendingEnds = [];
      }
      return;
    }
    // Never started: nothing to draw, and no start to measure time from.
    if (totals.startNs === 0n) return;
    this.#lastTimeNs = totals.timeNs;
    this.#startNs ??= totals.startNs;
    const newRun = totals.startNs !== this.#run;
    if (newRun) {
      if (this.#run === undefined && this.#hasThreads) {
        try {
          const a = this.#sampler.attribution();
          if (a.startNs === undefined || a.startNs === totals.startNs) this.#attributionBase = { run: totals.startNs, parts: partsOf(a) };
        } catch {
          // Closed: nothing more to take from it.
        }
      }
      this.#runs++;
      // The last run's figures are final: its attribution joins the sum.
      if (this.#runAttribution !== undefined) this.#attributionSum = addAttribution(this.#attributionSum, this.#runAttribution);
      this.#runAttribution = undefined;
    }
    if (this.#run !== undefined && newRun) {
      this.#before = this.#runJoules.map((j, i) => j + (this.#before[i] ?? 0));
      // Nothing was measured between the runs: the new one begins at its start, from zero (its
      // totals and threads() start afresh), and the stretch before is a gap. Measured from the
      // last run's last point, it was drawn as a silent 0 W.
      const last = this.#points[this.#points.length - 1];
      const time = Number(totals.startNs - this.#startNs) / 1e9;
      this.#add({ time, joules: [...this.#before], cpuNs: 0, threads: [], threadJoules: [], gapS: Math.max(0, time - last.time), records: 0 });
    }
    this.#run = totals.startNs;
    this.#runJoules = totals.readings.map((r) => r.joules);
    const point: Point = {
      time: Number(totals.timeNs - this.#startNs) / 1e9,
      joules: this.#runJoules.map((j, i) => j + (this.#before[i] ?? 0)),
      cpuNs: 0,
      threads: [],
      threadJoules: [],
      gapS: 0,
      records: 0,
    };
    if (this.#hasThreads) this.#threadDeltas(point, newRun);
    const last = this.#points[this.#points.length - 1];
    this.#readStates(point, newRun, totals.readings, newRun || last === undefined ? this.#before : last.joules);
    this.#add(point);
  }

  // Marks the domains whose reads failed since the last point (the point starting a run: since
  // its start), and those whose latest read failed (held at this point). One stats() a poll, some
  // 70 µs every periodMs: off the sampler's loop.
  #readStates(point: Point, newRun: boolean, readings: ReadonlyArray<{ joules: number; held?: boolean }>, before: number[]): void {
    // A Sampler of another copy of jouletrace may not count failed reads per domain.
    const timing = this.#sampler.stats().timing as Partial<ReturnType<Sampler['stats']>['timing']> | undefined;
    const byDomain = timing?.byDomain;
    if (!Array.isArray(byDomain)) return;
    const restarts = timing?.counterRestarts ?? 0;
    const errorsBefore = newRun ? [] : this.#readErrorsBefore;
    const unreadBefore = newRun ? [] : this.#unreadBefore;
    const restarted = restarts > (newRun ? 0 : this.#restartsBefore);
    byDomain.forEach((b, d) => {
      const failed = b.readErrors > (errorsBefore[d] ?? 0);
      if (!failed && !b.unread && unreadBefore[d] !== true) return;
      // A Sampler of another copy of jouletrace may not say whether the latest read failed: held
      // where reads failed and the total did not move since the last point.
      const r = readings[d];
      const held = typeof r?.held === 'boolean' ? r.held : failed && point.joules[d] === (before[d] ?? 0);
      point.reads ??= new Array<number>(point.joules.length).fill(0);
      point.reads[d] = b.unread || unreadBefore[d] === true || restarted ? READ_LOST : READ_FAILED | (held ? READ_HELD : 0);
    });
    this.#unreadBefore = byDomain.map((b) => b.unread);
    this.#readErrorsBefore = byDomain.map((b) => b.readErrors);
    this.#restartsBefore = restarts;
  }

  // The attribution of the run read last, as of now (its end, or the collector's stop()).
  #takeAttribution(): void {
    if (!this.#hasThreads || this.#run === undefined) return;
    try {
      // Only the run the collector read: the sampler may have started another since.
      if (this.#sampler.totals().startNs !== this.#run) return;
      const a = partsOf(this.#sampler.attribution());
      const base = this.#attributionBase?.run === this.#run ? this.#attributionBase.parts : undefined;
      this.#runAttribution = base === undefined ? a : subtractAttribution(a, base);
    } catch {
      // Closed: the figures taken last stand.
    }
  }

  // Stores a point: folded into the last one while that spans less than the stride, else added,
  // folded again at a wider stride past MAX_POINTS.
  #add(point: Point): void {
    // Records that ended since the last point, up to this one's time: a gap's are those that
    // ended between the runs, whenever they were added.
    if (point.gapS > 0) {
      point.records += this.#pendingGap;
      this.#pendingGap = 0;
    }
    // Those that ended while the collector was stopped, and those past MAX_PENDING.
    point.records += this.#pendingStopped;
    this.#pendingStopped = 0;
    if (this.#pendingEnds.length > 0) {
      const later = this.#pendingEnds.filter((t) => t > point.time);
      point.records += this.#pendingEnds.length - later.length;
      this.#pendingEnds = later;
    }
    const points = this.#points;
    const n = points.length;
    const widthS = (this.#stride - 0.5) * (this.#periodMs / 1000);
    if (this.#stride > 1 && n >= 2 && folds(points[n - 2], points[n - 1], point, widthS)) {
      points[n - 1] = combine(points[n - 1], point);
      return;
    }
    points.push(point);
    if (points.length > MAX_POINTS) {
      // The stride the time elapsed needs for MAX_POINTS intervals; doubled while folding at it
      // leaves over 3/4 of them (runs parted by breaks wider than an interval: two points each),
      // so that the next overflow is a while off.
      const elapsedS = point.time - points[0].time;
      while (this.#stride < 2 ** 30 && elapsedS > this.#stride * (this.#periodMs / 1000) * MAX_POINTS) this.#stride *= 2;
      for (;;) {
        this.#points = refold(points, (this.#stride - 0.5) * (this.#periodMs / 1000));
        if (this.#points.length <= (MAX_POINTS * 3) / 4) break;
        this.#stride *= 2;
      }
    }
  }

  // Fills in what each thread did since the last poll (since zero in a new run).
  #threadDeltas(point: Point, newRun: boolean): void {
    const before = newRun ? new Map<number, [number, number, number]>() : this.#threadsBefore;
    const now = new Map<number, [number, number, number]>();
    let unmeasuredNs = 0;
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
      now.set(t.id, [t.joules, t.onCpuNs, t.unmeasuredNs]);
      const was = before.get(t.id);
      unmeasuredNs += t.unmeasuredNs - (was?.[2] ?? 0);
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
      for (const [id, [joules, onCpuNs, unmeasured]] of before) {
        if (now.has(id)) continue;
        fold.joules -= joules;
        fold.onCpuNs -= onCpuNs;
        unmeasuredNs -= unmeasured;
      }
    }
    this.#unmeasuredNs += Math.max(0, unmeasuredNs);
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

  /** @internal For tests: the record ends stored while they wait for the next point. */
  get storedPendingEnds(): number {
    return this.#pendingEnds.length;
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
    this.#takeAttribution();
    this.#stopped = true;
    // After the last poll, which would subscribe again.
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    return this;
  }

  /**
   * Adds a finished request or span. `endNs` is CLOCK_MONOTONIC ns (process.hrtime.bigint(),
   * RequestRecord.endNs, SpanResult.endNs); `joules` finite and 0 or more, NaN for one not
   * measured. An end more than a second past process.hrtime.bigint() is another clock's and is
   * refused with a RangeError. `incomplete` (RequestRecord.incomplete, SpanResult.incomplete):
   * the sampler stopped while it was open, or its start was seen too late, so that its joules
   * undercount; the report counts those per label. Each label keeps its count and sum exactly,
   * and up to RECORD_SAMPLE records, a uniform sample past that.
   */
  addRecord(record: { label: string; joules: number; endNs: number | bigint; durationMs: number; incomplete?: boolean }, kind: 'request' | 'span' = 'request'): void {
    // Checked here: renderReport() failed on a bad record at the end of a long run.
    const r = checkObject('record', record);
    const label = checkString('record.label', r.label);
    // Not negative (a label's total went down) nor infinite (it was taken as not measured).
    const joulesWhat = 'a finite number of joules, 0 or more (NaN for one not measured)';
    if (typeof r.joules !== 'number') throw invalidType('record.joules', joulesWhat, r.joules);
    if (!Number.isNaN(r.joules) && !(r.joules >= 0 && r.joules < Infinity)) throw invalidRange('record.joules', joulesWhat, r.joules);
    const joules = r.joules;
    let endNs: bigint;
    const what = 'a bigint or a finite number (CLOCK_MONOTONIC ns, as process.hrtime.bigint() gives)';
    if (typeof r.endNs === 'bigint') endNs = r.endNs;
    else if (typeof r.endNs !== 'number') throw invalidType('record.endNs', what, r.endNs);
    else if (!Number.isFinite(r.endNs)) throw invalidRange('record.endNs', what, r.endNs);
    else endNs = BigInt(Math.round(r.endNs));
    if (endNs > process.hrtime.bigint() + FUTURE_SLACK_NS) {
      throw new RangeError(
        `record.endNs ${endNs} is in the future: it must be CLOCK_MONOTONIC ns, as process.hrtime.bigint(), RequestRecord.endNs and SpanResult.endNs give (Date.now() * 1e6 is wall-clock time, another clock)`,
      );
    }
    const durationMs = checkAmount('record.durationMs', r.durationMs, 'milliseconds');
    const incomplete = r.incomplete === undefined ? false : checkBoolean('record.incomplete', r.incomplete);
    this.#recordKind = checkOneOf('kind', kind, ['request', 'span'] as const);
    let l = this.#labels.get(label);
    if (l === undefined) {
      l = { count: 0, measured: 0, zero: 0, incomplete: 0, joules: 0, sampleJoules: [], sampleEnd: [], sampleDurationMs: [] };
      this.#labels.set(label, l);
    }
    l.count++;
    if (Number.isFinite(joules)) {
      this.#recordOrigin ??= endNs;
      const seen = l.measured++;
      l.joules += joules;
      if (joules === 0) l.zero++;
      // An unmeasured one (NaN) is counted as such, not again as incomplete.
      if (incomplete) l.incomplete++;
      // Algorithm R: the n-th record replaces one of the sample with probability RECORD_SAMPLE / n.
      const slot = seen < RECORD_SAMPLE ? seen : Math.floor(this.#random() * (seen + 1));
      if (slot < RECORD_SAMPLE) {
        l.sampleJoules[slot] = joules;
        l.sampleEnd[slot] = Number(endNs - this.#recordOrigin);
        l.sampleDurationMs[slot] = durationMs;
      }
    }
    this.#countRecord(endNs);
  }

  // Counts a record, for the throughput, in the interval it ended in; one that ended before the
  // first point is in none, one after the last in the next.
  #countRecord(endNs: bigint): void {
    const points = this.#points;
    if (this.#startNs === undefined || points.length === 0) return;
    const t = Number(endNs - this.#startNs) / 1e9;
    if (t > points[points.length - 1].time) {
      if (this.#stopped || this.#pendingEnds.length >= MAX_PENDING) this.#pendingStopped++;
      else this.#pendingEnds.push(t);
      return;
    }
    if (t <= points[0].time) return;
    let lo = 1;
    let hi = points.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (points[mid].time >= t) hi = mid;
      else lo = mid + 1;
    }
    points[lo].records++;
  }

  // The records kept, with their times on the report's axis. Resolved late: a record may be
  // added before the sampler's first start, when there is no start to measure from yet.
  #reportRecords(): ReportRecord[] {
    const origin = this.#recordOrigin;
    if (origin === undefined) return [];
    let zero = this.#startNs;
    if (zero === undefined) {
      try {
        const run = this.#sampler.totals().startNs;
        if (run !== 0n) zero = run;
      } catch {
        /* closed */
      }
    }
    // Never started: from the earliest record's end.
    let shift = Infinity;
    if (zero !== undefined) shift = Number(origin - zero);
    else for (const l of this.#labels.values()) for (const e of l.sampleEnd) shift = Math.min(shift, e);
    if (zero === undefined) shift = -shift;
    const out: ReportRecord[] = [];
    for (const [label, l] of this.#labels) {
      l.sampleJoules.forEach((joules, i) => out.push({ label, joules, t: (shift + l.sampleEnd[i]) / 1e9, durationMs: l.sampleDurationMs[i] }));
    }
    return out;
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

  /**
   * The measured records kept, label by label: all of a label's, or a sample of them where it has
   * more than RECORD_SAMPLE (2,048). Unmeasured records are counted per label, not kept.
   */
  get records(): readonly ReportRecord[] {
    return this.#reportRecords();
  }

  // Draws each stretch of intervals in which a domain's reads failed. While they fail its counter
  // holds its last value and the next good read brings the whole stretch's energy: drawn as read,
  // that was 0 W over the stretch and a spike after it. The energy over the stretch and the
  // interval that brought it is exact; only how it varied within is unknown. So they are drawn
  // at their average power, the energy spread evenly over their measured time (as every interval
  // is its average already), which keeps the chart's energy the totals' and says nothing it does
  // not know. A break instead would drop measured energy from the chart. Where no good read
  // brought it (the run or the report ended first), or some of it is lost (a counter started
  // again; no good read yet in the run, whose energy before the first is not counted), any figure
  // would undercount: the stretch has none (NaN), a break in the chart. Both are named in notes.
  #failedReads(
    reads: number[][],
    keep: number[],
    measuredS: number[],
    unmeasuredS: number[],
    watts: number[][],
  ): { notes: string[]; threadSpread: Array<[number, number]> } {
    const n = measuredS.length;
    const names = this.#sampler.domains.map((d) => `${d.domain}-${d.package}`);
    const primary = primaryDomain(this.#sampler.domains);
    const notes: string[] = [];
    const spread: Array<[number, number]> = [];
    reads.forEach((state, d) => {
      let failedS = 0;
      let spreadS = 0;
      let noneS = 0;
      for (let k = 0; k < n; ) {
        if (state[k] > 0) failedS += measuredS[k];
        if (!(state[k] & WRONG)) {
          k++;
          continue;
        }
        const a = k;
        let lost = (state[k] & READ_LOST) !== 0;
        // A stretch ends at a run's end: an interval with time unmeasured holds one.
        while (k + 1 < n && state[k + 1] & WRONG && !(unmeasuredS[k + 1] > 0)) {
          k++;
          lost ||= (state[k] & READ_LOST) !== 0;
          failedS += measuredS[k];
        }
        // A good read by the next interval's end: it brought what the stretch held.
        const brought = !lost && k + 1 < n && !(state[k + 1] & WRONG) && !(unmeasuredS[k + 1] > 0);
        const b = brought ? k + 1 : k;
        if (brought && state[b] > 0) failedS += measuredS[b];
        let s = 0;
        for (let i = a; i <= b; i++) s += measuredS[i];
        const w = brought && s > 0 ? (this.#points[keep[b + 1]].joules[d] - this.#points[keep[a]].joules[d]) / s : NaN;
        for (let i = a; i <= b; i++) watts[d][i] = measuredS[i] > 0 ? w : NaN;
        if (brought) {
          spreadS += s;
          if (this.#sampler.domains[d]?.domain === primary) spread.push([a, b]);
        } else noneS += s;
        k = b + 1;
      }
      if (failedS === 0 && noneS === 0) return;
      let note = `Reads of ${names[d]} failed in ${fmtSeconds(failedS)} of this report (stats().timing.byDomain's readErrors): its counter held its last value while they did, and its energy came with its next good read.`;
      if (spreadS > 0) {
        note += ` The power chart draws each such stretch, with the interval that brought its energy (${fmtSeconds(spreadS)} in all), at their average power: the energy spread evenly over them, since how it varied within is unknown${this.#hasThreads && this.#sampler.domains[d]?.domain === primary ? " (the per-thread chart spreads the threads' share alike)" : ''}.`;
      }
      if (noneS > 0) {
        note += ` Over ${fmtSeconds(noneS)} its power has no figure (a break in the chart): no good read came before the run or the report ended, a counter started again and lost energy, or it had not been read yet in its run.`;
      }
      notes.push(note);
    });
    // Overlapping stretches (of several packages) as one.
    spread.sort((p, q) => p[0] - q[0]);
    const threadSpread: Array<[number, number]> = [];
    for (const [a, b] of spread) {
      const last = threadSpread[threadSpread.length - 1];
      if (last !== undefined && a <= last[1]) last[1] = Math.max(last[1], b);
      else threadSpread.push([a, b]);
    }
    return { notes, threadSpread };
  }

  // The attribution bar: the one given, marked as the last run's where the collector saw more
  // than one (sampler.attribution() starts afresh at each start(), and that is what callers pass);
  // else the sampler's, summed over the runs seen.
  #attribution(given: AttributionParts | undefined): ReportData['attribution'] {
    if (given !== undefined) return this.#runs > 1 ? { ...given, lastRunOf: this.#runs } : given;
    if (!this.#stopped) this.#takeAttribution();
    const a = this.#runAttribution === undefined ? this.#attributionSum : addAttribution(this.#attributionSum, this.#runAttribution);
    return a !== undefined && a.total > 0 ? a : undefined;
  }

  /**
   * The report's data; `extra` fills the summary table, notes and attribution. Without
   * `extra.attribution`, the bar is sampler.attribution() summed over every run the collector
   * saw (with thread tracking); one given after more than one run is marked as the last run's.
   */
  data(extra: Partial<Pick<ReportData, 'summary' | 'notes' | 'attribution' | 'subtitle'>> = {}): ReportData {
    const x = checkExtra(extra);
    const domains = this.#sampler.domains.map((d) => `${d.domain}-${d.package}`);
    const points = this.#points;
    const n = points.length;
    // Points at least half a stride apart: a short last interval (the final poll at stop()) is
    // merged into the one before it rather than drawn as a spike of quantisation noise, or as a
    // sliver beside intervals folded from many polls. A stretch between runs of half a period or
    // more stays an interval of its own, drawn as a break.
    const minDt = (0.5 * this.#stride * this.#periodMs) / 1000;
    const minGap = (0.5 * this.#periodMs) / 1000;
    const isGap = (i: number) => points[i].gapS >= minGap && points[i].gapS >= points[i].time - points[i - 1].time;
    const keep: number[] = n > 0 ? [0] : [];
    for (let i = 1; i < n; i++) {
      const last = keep[keep.length - 1];
      if (isGap(i) || points[i].time - points[last].time >= minDt) keep.push(i);
      else if (i === n - 1 || isGap(i + 1)) {
        if (keep.length > 1 && !isGap(last)) keep[keep.length - 1] = i;
        else keep.push(i);
      }
    }
    const time: number[] = [];
    const watts: number[][] = domains.map(() => []);
    // Per drawn interval: the seconds measured in it, unmeasured, and the records that ended in it.
    const measuredS: number[] = [];
    const unmeasuredS: number[] = [];
    const recordCounts: number[] = [];
    // Per domain and drawn interval, how its reads went (READ_*).
    const reads: number[][] = domains.map(() => []);
    for (let k = 1; k < keep.length; k++) {
      const [a, b] = [points[keep[k - 1]], points[keep[k]]];
      let gapS = 0;
      let records = 0;
      domains.forEach((_, d) => reads[d].push(0));
      for (let i = keep[k - 1] + 1; i <= keep[k]; i++) {
        gapS += points[i].gapS;
        records += points[i].records;
        // Every point, those whose reads all went well too: a later good read ends a hold.
        for (let d = 0; d < domains.length; d++) reads[d][k - 1] = mergeReads(reads[d][k - 1], points[i].reads?.[d] ?? 0);
      }
      const dt = b.time - a.time;
      const measured = Math.max(0, dt - gapS);
      time.push(b.time);
      measuredS.push(measured);
      unmeasuredS.push(dt - measured);
      recordCounts.push(records);
      // Nothing measured: no figure (NaN, null in JSON), never 0 W.
      domains.forEach((_, d) => watts[d].push(measured > 0 ? (b.joules[d] - a.joules[d]) / measured : NaN));
    }
    const failing = this.#failedReads(reads, keep, measuredS, unmeasuredS, watts);
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
        cpuCores.push(measuredS[k - 1] > 0 ? cpuNs / 1e9 / measuredS[k - 1] : NaN);
      }
      // The threads' energy of a primary domain whose reads failed was held and given out at its
      // next good read: spread over the stretch as the domain's power is.
      for (const [a, b] of failing.threadSpread) {
        let s = 0;
        for (let k = a; k <= b; k++) s += measuredS[k];
        const total = new Map<number, number>();
        for (let k = a; k <= b; k++) for (const [t, j] of intervals[k]) total.set(t, (total.get(t) ?? 0) + j);
        for (let k = a; k <= b; k++) {
          const joules = new Map<number, number>();
          for (const [t, j] of total) joules.set(t, (j * measuredS[k]) / s);
          intervals[k] = joules;
        }
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
      if (others.some((v) => v > 0)) threads.push({ label: 'other threads', pid: 0, tid: 0, joules: others });
    }
    const estimated = this.#sampler.domains.some((d) => d.estimated);
    // Measured time: from the first run's start to the end, less the stretches between runs; from
    // the first point where that came over a period after the start (a collector started an hour
    // into the sampler's run said 3660 s for 60). One started with the sampler counts from the
    // start, as the sampler's totals and `jouletrace run`'s duration do.
    const gapS = points.reduce((a, p) => a + p.gapS, 0);
    const first = n > 0 && points[0].time > this.#periodMs / 1000 ? points[0].time : 0;
    const elapsedS = n > 0 ? points[n - 1].time - first : 0;
    // Records that ended after the last point, with no later point to count them in.
    const uncounted = this.#stopped ? this.#pendingStopped + this.#pendingEnds.length + this.#pendingGap : 0;
    const notes = [...(x.notes ?? [])];
    notes.push(...failing.notes);
    if (this.#unmeasuredNs > 0) {
      notes.push(
        `${fmtSeconds(this.#unmeasuredNs / 1e9)} of the tracked threads' on-CPU time has no energy in these figures: no read measured it (reads failed to the end of a run, or a counter started again), so the threads' joules leave it out.`,
      );
    }
    if (uncounted > 0) {
      notes.push(
        `${counted(uncounted, this.#recordKind)} ended after the collector's last point (added after its stop()): in the per-label figures, not in the throughput of any interval.`,
      );
    }
    const attribution = this.#attribution(x.attribution);
    const recordLabels: ReportRecordLabel[] = [...this.#labels].map(([label, l]) => ({
      label,
      count: l.count,
      measured: l.measured,
      joules: l.joules,
      ...(l.zero > 0 ? { zero: l.zero } : {}),
      ...(l.incomplete > 0 ? { incomplete: l.incomplete } : {}),
    }));
    return {
      version: 1,
      title: this.#title,
      subtitle: x.subtitle ?? this.#subtitle,
      createdAt: new Date().toISOString(),
      source: this.#sampler.source,
      estimated,
      durationS: elapsedS - gapS,
      ...(gapS > 0 ? { elapsedS } : {}),
      domains,
      startS: keep.length > 0 ? points[keep[0]].time : 0,
      time,
      watts,
      ...(unmeasuredS.some((u) => u > 0) ? { unmeasuredS } : {}),
      threads,
      threadsTracked: this.#hasThreads,
      ...(this.#unmeasuredNs > 0 ? { threadsUnmeasuredS: this.#unmeasuredNs / 1e9 } : {}),
      cpuCores,
      records: this.#reportRecords(),
      recordLabels,
      recordCounts,
      recordKind: this.#recordKind,
      attribution,
      summary: x.summary ?? [],
      notes,
    };
  }
}

// `b` after `a` as one point: it ends where `b` does, with what both did.
function combine(a: Point, b: Point): Point {
  const joules = new Map<number, number>();
  a.threads.forEach((t, j) => joules.set(t, a.threadJoules[j]));
  b.threads.forEach((t, j) => joules.set(t, (joules.get(t) ?? 0) + b.threadJoules[j]));
  return {
    time: b.time,
    joules: b.joules,
    cpuNs: a.cpuNs + b.cpuNs,
    threads: [...joules.keys()],
    threadJoules: [...joules.values()],
    gapS: a.gapS + b.gapS,
    records: a.records + b.records,
    ...(a.reads || b.reads ? { reads: b.joules.map((_, d) => mergeReads(a.reads?.[d] ?? 0, b.reads?.[d] ?? 0)) } : {}),
  };
}

function partsOf(a: AttributionParts): AttributionParts {
  return { total: a.total, process: a.process, baseline: a.baseline, other: a.other, domains: [...a.domains] };
}

// What `a` counts past `base`, as of a later step of the same run (each part only grows).
function subtractAttribution(a: AttributionParts, base: AttributionParts): AttributionParts {
  const part = (k: 'total' | 'process' | 'baseline' | 'other') => Math.max(0, a[k] - base[k]);
  return { total: part('total'), process: part('process'), baseline: part('baseline'), other: part('other'), domains: a.domains };
}

function addAttribution(sum: AttributionParts | undefined, a: AttributionParts): AttributionParts {
  if (sum === undefined) return { ...a, domains: [...a.domains] };
  return {
    total: sum.total + a.total,
    process: sum.process + a.process,
    baseline: sum.baseline + a.baseline,
    other: sum.other + a.other,
    domains: [...new Set([...sum.domains, ...a.domains])],
  };
}

// Whether `point` is folded into `last` (which follows `prev`): while `last` spans less than an
// interval, `widthS`. A stretch between runs (a point with gapS) as wide as an interval stays a
// point of its own, drawn as a break; a narrower one is folded like a poll, its gapS kept, so
// that its interval is drawn as partly unmeasured. Left apart, a restart every few seconds added
// two points a run that were never folded.
function folds(prev: Point, last: Point, point: Point, widthS: number): boolean {
  return last.time - prev.time < widthS && point.gapS < widthS;
}

// The points folded again at `widthS`, the first kept as it is (the start of the first interval).
function refold(points: Point[], widthS: number): Point[] {
  const out = [points[0]];
  for (let i = 1; i < points.length; i++) {
    const n = out.length;
    if (n >= 2 && folds(out[n - 2], out[n - 1], points[i], widthS)) out[n - 1] = combine(out[n - 1], points[i]);
    else out.push(points[i]);
  }
  return out;
}
