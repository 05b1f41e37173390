// `jouletrace top [--pid N]`: a live view, refreshed every second, of where power goes: the
// threads of one process (eBPF or procfs attribution), or the busiest processes system-wide.
import * as fs from 'node:fs';
import { constants } from 'node:os';
import { Sampler, type SamplerOptions, type SamplerStats, type ThreadEnergy, type Totals } from '../sampler';
import { primaryDomain } from '../sources';
import {
  baselineFlag,
  baselineOptions,
  choiceOption,
  COUNTERS_STILL_NOTE_S,
  flagsOf,
  inFlagWords,
  maxThreadsOption,
  noBaselineNote,
  numberOption,
  parseArgs,
  reportUsageError,
  setBaselineOption,
  SOURCE_PATH_HELP,
  SOURCE_PATH_SPECS,
  sourceOption,
  sourcePathOptions,
  UsageError,
  type BaselineOptions,
  type OptionSpec,
} from './args';
import { colorEnabled, counted, fit, fmtJoules, fmtKnown, fmtWatts, padCols, paint, printable } from './format';
import { notIgnored } from './ignored-signals';
import { FATAL_SIGNALS } from './output-files';
import { processGone, readCpuTicks, readProcStat, watchedProcessStart } from './proc-stat';
import { ProcessShares, type ProcessTicks, type SharesEnergy } from './process-shares';

const HELP = `Usage: jouletrace top [--pid N] [options]

A live view refreshed every second. With --pid: the threads of process N, each with its CPU
share, watts and joules attributed since top started, and a row "(exited threads)" for those
that exited (in the refresh, or before: joules since top started), so that the rows add up
to the process line. Without it: the busiest processes system-wide, each given its share of
the package power by CPU time: the CPU time it used over that of all CPUs, idle time
included (read from /proc; an estimate of share even where the package power is measured).
Two rows hold the rest, so that all rows add up to the package power: "(idle)", the idle CPU
time's share, and "(other: exited, irq)", busy time no process listed accounts for
(processes that ended during the refresh, interrupts). Above the table: power per domain and
the sampler's health, and a line when a measured source's counters stood still for a second or
more (its watts then miss the power drawn meanwhile). A refresh in which a domain's reads
failed shows n/a for it (and for the rows, where it is the primary domain: package, else
psys), with a line naming the domains and their failed reads; the next good read's energy is then shown as the average over the
stretch, marked "avg". With --pid, rates are over the time between the attribution steps the
figures are as of. The clock is local time. Names are shown with control characters as '?'.

Keys: q quits, s changes the sort (watts, joules, cpu, name). Ctrl-C quits too; Ctrl-Z
suspends it, the terminal restored. SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR2, SIGALRM,
SIGVTALRM and SIGPWR end it with the terminal restored (status 128 + N).
Off a terminal or with TERM=dumb (or with --json) it prints a plain block with every row (or
a JSON line) per refresh.

Options:
  --pid N           show the threads of process N; top ends when it exits (a zombie
                    its parent has not reaped counts as exited)
  --delay S         seconds between refreshes (default 1, 0.2 to 60)
  --iterations N    stop after N refreshes (default: until q)
  --sort K          initial sort: watts, joules, cpu, name (default watts)
  --source S        energy source: auto, msr, perf, powercap, model (default auto)
  --threads B       with --pid: bpf or procfs (default: bpf, else procfs)
  --max-threads N   with --pid: threads tracked at once (1 to 1048576, default 4096). Past
                    it, threads go untracked and their power counts as "other": the process
                    line says how many
  --baseline W      with --pid: idle power in watts of each package (of its package
                    domain, else psys), charged to the baseline, not to the process (0 to
                    1000000). On measured counters without it, idle power is shared out by
                    CPU time and the process is charged part of it (a note on stderr says so)
  --calibrate S     with --pid: measure that idle power for S seconds (0.2 to 600) before
                    the first frame, instead of --baseline; keep the machine quiet meanwhile
  --json            one JSON object per refresh, one per line
  -h, --help        show this help

${SOURCE_PATH_HELP}`;

const SPECS: OptionSpec[] = [
  { name: 'pid', type: 'number' },
  { name: 'delay', type: 'number' },
  { name: 'iterations', type: 'number' },
  { name: 'sort', type: 'string' },
  { name: 'source', type: 'string' },
  { name: 'threads', type: 'string' },
  { name: 'max-threads', type: 'number' },
  { name: 'baseline', type: 'number' },
  { name: 'calibrate', type: 'number' },
  { name: 'json', type: 'flag' },
  { name: 'help', short: 'h', type: 'flag' },
  ...SOURCE_PATH_SPECS,
];

const SORTS = ['watts', 'joules', 'cpu', 'name'] as const;
type SortKey = (typeof SORTS)[number];

export interface TopRow {
  /** Thread id (--pid) or process id (system-wide). */
  id: number;
  name: string;
  /** Percent of one CPU over the last refresh; null with --pid where no attribution step came in it (see TopFrame's noAttributionStep). */
  cpu: number | null;
  /** Null: no figure (see TopFrame's domains and noAttributionStep). */
  watts: number | null;
  joules: number;
}

/** One of the rows that hold the power no row listed drew: system-wide, the idle time's and the rest; with --pid, the exited threads'. */
export interface TopRest {
  /** Percent of one CPU over the last refresh. */
  cpu: number | null;
  watts: number | null;
  /** Since top started. */
  joules: number;
}

export interface TopDomain {
  name: string;
  /**
   * Over this refresh, or over `averagedS`. Null: no figure, where its reads failed in this
   * refresh (its counter held its last value, and the energy comes with its next good read), or
   * where a stretch of them that ended here lost energy (`lost`).
   */
  watts: number | null;
  /** Reads of this domain that failed in this refresh. */
  readErrors: number;
  /**
   * Seconds `watts` is the average over, where longer than this refresh: its reads failed in
   * the refreshes before, and its first good read brought their energy, spread evenly over them
   * and this one (as the HTML report draws such a stretch). Null otherwise.
   */
  averagedS: number | null;
  /**
   * A stretch of its failed reads ended in this refresh having lost energy: a counter started
   * again among them, or it had no good read yet in the run (it counts from its first). No
   * figure: any would undercount.
   */
  lost: boolean;
}

export interface TopFrame {
  time: string;
  mode: 'threads' | 'processes';
  pid: number | null;
  source: string;
  estimated: boolean;
  sort: SortKey;
  domains: TopDomain[];
  /** Samples taken in this refresh, and those of them in which a read of the source failed (each domain's in `domains`). */
  samples: number;
  readErrors: number;
  /**
   * --pid: the process's power, the baseline's and everything else's. `droppedThreads`: its
   * threads left untracked, every thread slot in use (their power is in `otherWatts`). Null
   * figures: none (see `domains` and `noAttributionStep`).
   */
  tracked: { watts: number | null; baselineWatts: number | null; otherWatts: number | null; droppedThreads: number } | null;
  /**
   * Seconds the rows' (and `tracked`'s) watts are the average over, where a primary domain's
   * reads failed before and this refresh brought their energy; null otherwise.
   */
  rowsAveragedS: number | null;
  /**
   * --pid: no attribution step came in this refresh (a sampler starved of CPU): the process's
   * and the threads' figures stood still, and have none here; the next refresh's cover both.
   */
  noAttributionStep: boolean;
  /** rateHz, jitterP99Us and cpuPercent: null before the sampler's first (timed) sample. */
  sampler: { rateHz: number | null; jitterP99Us: number | null; dropped: number; late: number; cpuPercent: number | null; backend: string };
  /**
   * Seconds that no counter of a measured source changed, at a stretch, seen in this refresh
   * (still going on, or longer than any before it) where 1 s or more: power over it reads 0 W
   * though the machine drew it. Null otherwise.
   */
  countersStillS: number | null;
  rows: TopRow[];
  /** System-wide: the idle CPU time's share, and busy time no row accounts for; null with --pid. */
  rest: { idle: TopRest; other: TopRest } | null;
  /**
   * --pid: the threads that exited, which have no row: with it, the rows add up to the process's
   * power. Its joules: of every thread that exited since top started. Null system-wide.
   */
  exited: TopRest | null;
}

// /proc reports CPU time in USER_HZ ticks, 100 per second on every Linux architecture we run on.
const CLK_TCK = 100;

/**
 * @internal Exported for its test.
 * utime + stime (ticks), comm and start time of every process in /proc. One whose stat could not
 * be read (out of file descriptors or memory) keeps its figures of `prev`: left out, it would
 * come back at the next refresh as a new process, its whole life's CPU time in that refresh.
 */
export function readAllProcesses(prev?: Map<number, ProcessTicks>, proc = '/proc'): Map<number, ProcessTicks> {
  const out = new Map<number, ProcessTicks>();
  for (const ent of fs.readdirSync(proc)) {
    if (!/^\d+$/.test(ent)) continue;
    let st;
    try {
      st = readProcStat(ent, proc); // null: gone between readdir and read
    } catch {
      const p = prev?.get(Number(ent));
      if (p) out.set(Number(ent), p);
      continue;
    }
    if (st) out.set(Number(ent), { name: st.name, ticks: st.ticks, start: st.start });
  }
  return out;
}

// No figure sorts last: n/a is no reading, not a low one.
const orNone = (x: number | null) => x ?? -Infinity;

function sortRows(rows: TopRow[], key: SortKey): TopRow[] {
  const by: Record<SortKey, (a: TopRow, b: TopRow) => number> = {
    watts: (a, b) => orNone(b.watts) - orNone(a.watts) || b.joules - a.joules,
    joules: (a, b) => b.joules - a.joules || orNone(b.watts) - orNone(a.watts),
    cpu: (a, b) => orNone(b.cpu) - orNone(a.cpu) || orNone(b.watts) - orNone(a.watts),
    name: (a, b) => a.name.localeCompare(b.name) || a.id - b.id,
  };
  // Both without a figure: -Infinity - -Infinity is NaN, falsy, and the next key decides.
  return rows.sort((a, b) => by[key](a, b) || a.id - b.id);
}

const REST_NAMES = { idle: '(idle)', other: '(other: exited, irq)', exited: '(exited threads)' };

/** How a refresh's energy stands, where reads fail (see DomainRates). */
export type ReadState = 'measured' | 'held' | 'lost';

type Timing = Pick<SamplerStats['timing'], 'samples' | 'readErrors' | 'counterRestarts' | 'byDomain'>;

/**
 * @internal Exported for its test.
 * Each domain's watts per refresh, and the primary domains' energy the rows share, where reads
 * may fail. While a domain's reads fail its counter holds its last value and the next good read
 * brings the whole stretch's energy: taken refresh by refresh, that read 0 W over the stretch
 * and a spike after it, with nothing said. So a refresh in which a domain's reads failed
 * (stats().timing.byDomain's readErrors rose) has no figure for it, and the first refresh after
 * (its first read good) gives the average over the stretch and itself: the energy is exact, how
 * it varied within is unknown, as the HTML report draws it (report/collector.ts). Where energy
 * was lost (a counter started again among the failed reads, or the domain had no good read yet
 * in the run), any figure would undercount: the refresh that ends the stretch has none either,
 * and the next starts afresh. (The report draws that interval as read; a refresh is long enough
 * that what the restarted counter counted through the stretch, all in it, would pass for its own.)
 */
export class DomainRates {
  readonly #primary: boolean[];
  #ref: Array<{ joules: number; timeNs: bigint }>;
  // Per domain, the stretch of refreshes with failed reads going on, and whether it lost energy.
  #stretch: Array<{ lost: boolean } | null>;
  #rowsRef: { joules: number; timeNs: bigint };
  #rowsStretch: { lost: boolean } | null = null;
  // stats() counts per run: from 0, so that start()'s first read, failed, counts in the first refresh.
  #errors: number[];
  #readErrors = 0;
  #restarts = 0;
  #samples = 0;

  /** At start(): its totals, its stats' timing, and which domains are primary (package, else psys). */
  constructor(totals: Totals, timing: Timing, primary: boolean[]) {
    this.#primary = primary;
    this.#ref = totals.readings.map((r) => ({ joules: r.joules, timeNs: totals.timeNs }));
    this.#rowsRef = { joules: this.#primaryJoules(totals), timeNs: totals.timeNs };
    this.#errors = totals.readings.map(() => 0);
    // A domain unread at start() counts from its first good read: what came before is lost.
    this.#stretch = totals.readings.map((_, d) => (timing.byDomain[d]?.unread ? { lost: true } : null));
    if (this.#stretch.some((x, d) => x !== null && primary[d])) this.#rowsStretch = { lost: true };
  }

  #primaryJoules(t: Totals): number {
    return t.readings.reduce((a, r, i) => a + (this.#primary[i] ? r.joules : 0), 0);
  }

  /**
   * One refresh: totals() read now, then stats().timing (in that order: a read failing between
   * them counts here, at worst a refresh too early). `rows`: the primary domains' energy over the
   * rows' window (see SharesEnergy), `rowsAveragedS` where that follows failed reads.
   */
  step(totals: Totals, timing: Timing): { domains: TopDomain[]; samples: number; readErrors: number; rows: SharesEnergy; rowsAveragedS: number | null } {
    const restarted = timing.counterRestarts > this.#restarts;
    const states: ReadState[] = [];
    const domains = totals.readings.map((r, d): TopDomain => {
      const b = timing.byDomain[d] ?? { readErrors: 0, unread: false };
      const readErrors = Math.max(0, b.readErrors - this.#errors[d]);
      this.#errors[d] = b.readErrors;
      const name = `${r.domain}-${r.package}`;
      const ref = this.#ref[d];
      const dt = Number(totals.timeNs - ref.timeNs) / 1e9;
      if (readErrors > 0 || b.unread || !(dt > 0)) {
        // No sample since the last refresh (dt 0) says nothing either: held, with no stretch.
        if (readErrors > 0 || b.unread) {
          const st = (this.#stretch[d] ??= { lost: false });
          st.lost ||= b.unread || restarted;
        }
        states.push('held');
        return { name, watts: null, readErrors, averagedS: null, lost: false };
      }
      const st = this.#stretch[d];
      this.#stretch[d] = null;
      this.#ref[d] = { joules: r.joules, timeNs: totals.timeNs };
      if (st?.lost) {
        states.push('lost');
        return { name, watts: null, readErrors, averagedS: null, lost: true };
      }
      states.push('measured');
      return { name, watts: (r.joules - ref.joules) / dt, readErrors, averagedS: st ? dt : null, lost: false };
    });
    const samples = Math.max(0, timing.samples - this.#samples);
    const readErrors = Math.max(0, timing.readErrors - this.#readErrors);
    this.#samples = timing.samples;
    this.#readErrors = timing.readErrors;
    this.#restarts = timing.counterRestarts;

    const primary = states.filter((_, d) => this.#primary[d]);
    let rows: SharesEnergy;
    let rowsAveragedS: number | null = null;
    if (primary.includes('held')) {
      const failing = domains.some((x, d) => this.#primary[d] && (x.readErrors > 0 || this.#stretch[d] !== null));
      if (failing) {
        this.#rowsStretch ??= { lost: false };
        this.#rowsStretch.lost ||= primary.includes('lost') || this.#stretch.some((x, d) => this.#primary[d] && x?.lost === true);
      }
      rows = 'held';
    } else {
      const lost = primary.includes('lost') || this.#rowsStretch?.lost === true;
      const dt = Number(totals.timeNs - this.#rowsRef.timeNs) / 1e9;
      const joules = this.#primaryJoules(totals);
      if (lost) rows = 'lost';
      else {
        rows = { watts: (joules - this.#rowsRef.joules) / dt, dt };
        if (this.#rowsStretch) rowsAveragedS = dt;
      }
      this.#rowsRef = { joules, timeNs: totals.timeNs };
      this.#rowsStretch = null;
    }
    return { domains, samples, readErrors, rows, rowsAveragedS };
  }
}

type RowsAt = { timeNs: bigint; threads: ReadonlyArray<Pick<ThreadEnergy, 'id' | 'tid' | 'name' | 'onCpuNs' | 'joules' | 'exited'>> };

/**
 * @internal Exported for its test.
 * --pid's rows, one per live thread, from the sampler's list at each refresh, and one for the
 * threads that exited: a thread that exits within a refresh has its last joules there, and one
 * that starts and ends within it its whole energy. The figures move at attribution steps only
 * (procfs: every 5 samples or later), so each rate is over the time between the steps its
 * figures are as of (threadsAt()), not between the refreshes: a thread spinning alone read up
 * to 103.6 % CPU. Energy goes on from the last refresh that had it where reads failed since
 * (see DomainRates).
 */
export class ThreadRows {
  // By row id: a tid the kernel gives again to a new thread would be measured from the exited
  // thread's figures (its first frame a negative power).
  readonly #cpu: RowField;
  readonly #energy: RowField;
  #exitedJoules = 0;

  /** `start`: the rows as of start() (none; its time the first step's). */
  constructor(start: { timeNs: bigint; threads?: RowsAt['threads'] }) {
    this.#cpu = new RowField('onCpuNs', start.timeNs, start.threads ?? []);
    this.#energy = new RowField('joules', start.timeNs, start.threads ?? []);
  }

  /**
   * One refresh: the rows and their step's time, and how the primary domains' energy stands
   * (see ReadState: 'held' leaves the energy to a later refresh, 'lost' starts it afresh).
   */
  step(at: RowsAt, energy: ReadState): { rows: TopRow[]; exited: TopRest } {
    const threads = at.threads;
    // No step since the last refresh: nothing moved, and no time to divide by.
    const noStep = !(at.timeNs > this.#cpu.timeNs);
    const cpu = noStep ? null : this.#cpu.step(at);
    const measured = !noStep && energy === 'measured' && at.timeNs > this.#energy.timeNs;
    const energyS = measured ? Number(at.timeNs - this.#energy.timeNs) / 1e9 : null;
    // Lost: the next refresh's energy starts from here.
    const joules = measured || energy === 'lost' ? this.#energy.step(at) : null;
    const rows: TopRow[] = [];
    for (const t of threads) {
      if (t.exited) continue;
      const c = cpu?.byId.get(t.id);
      const j = measured ? joules!.byId.get(t.id) : undefined;
      rows.push({ id: t.tid, name: t.name, cpu: c === undefined ? null : (100 * c) / 1e9 / cpu!.dtS, watts: j === undefined ? null : j / energyS!, joules: t.joules });
    }
    if (measured) this.#exitedJoules += joules!.exited;
    return {
      rows,
      exited: {
        cpu: cpu ? (100 * cpu.exited) / 1e9 / cpu.dtS : null,
        watts: measured ? joules!.exited / energyS! : null,
        joules: this.#exitedJoules,
      },
    };
  }
}

// One figure of the rows (on-CPU ns or joules): its increase per row since the last step() of it.
class RowField {
  readonly #key: 'onCpuNs' | 'joules';
  readonly #prev = new Map<number, number>();
  timeNs: bigint;

  constructor(key: 'onCpuNs' | 'joules', timeNs: bigint, threads: RowsAt['threads']) {
    this.#key = key;
    this.timeNs = timeNs;
    for (const t of threads) this.#prev.set(t.id, t[key]);
  }

  step(at: RowsAt): { byId: Map<number, number>; exited: number; dtS: number } {
    const dtS = Number(at.timeNs - this.timeNs) / 1e9;
    this.timeNs = at.timeNs;
    const listed = new Set(at.threads.map((t) => t.id));
    // Rows gone from the list since the last step were folded into the "(exited threads)" row
    // (id 0; past 4096 exited threads): their figures, counted under their own rows, are in its
    // increase too, and come off it.
    let folded = 0;
    for (const [id, p] of this.#prev) {
      if (listed.has(id)) continue;
      folded += p;
      this.#prev.delete(id);
    }
    const byId = new Map<number, number>();
    let exited = 0;
    for (const t of at.threads) {
      const v = t[this.#key];
      const p = this.#prev.get(t.id) ?? 0;
      this.#prev.set(t.id, v);
      if (!t.exited) byId.set(t.id, v - p);
      else if (t.id === 0) exited += Math.max(0, v - p - folded);
      else exited += v - p;
    }
    return { byId, exited, dtS };
  }
}

/** One line of the screen's notes per kind: reads that failed, figures averaged over them, energy lost. */
function readNotes(f: TopFrame): string[] {
  const notes: string[] = [];
  const failed = f.domains.filter((d) => d.readErrors > 0);
  if (failed.length > 0) {
    notes.push(`reads failed: ${failed.map((d) => `${d.name} ${d.readErrors} of ${f.samples}`).join(', ')} (n/a: the energy comes with a good read)`);
  }
  const averaged = [
    ...f.domains.filter((d) => d.averagedS !== null).map((d) => `${d.name} ${d.averagedS!.toFixed(1)} s`),
    ...(f.rowsAveragedS !== null ? [`rows ${f.rowsAveragedS.toFixed(1)} s`] : []),
  ];
  if (averaged.length > 0) notes.push(`avg: energy held by failed reads, averaged over ${averaged.join(', ')}`);
  const lost = f.domains.filter((d) => d.lost);
  if (lost.length > 0) notes.push(`${lost.map((d) => d.name).join(', ')}: n/a, energy lost in failed reads (a counter restarted, or never read)`);
  if (f.noAttributionStep) notes.push('no attribution step this refresh (sampler starved): rows n/a, the next covers both');
  return notes;
}

const watts = (w: number | null) => fmtWatts(w ?? NaN);

// The frame's lines down to its rows: all of them, or `room` at most.
function frameLines(f: TopFrame, width: number, color: boolean, room: (above: number) => number): string[] {
  const c = paint(color);
  const lines: string[] = [];
  const title = `jouletrace top — ${f.mode === 'threads' ? `threads of pid ${f.pid}` : 'processes'} — ${f.source}${f.estimated ? ' (ESTIMATED)' : ''}`;
  // Local time, as top(1) shows it; the JSON's `time` stays ISO (UTC).
  const clock = new Date(f.time).toTimeString().slice(0, 8);
  lines.push(c.bold(padCols(fit(title, width - 9), width - 9)) + clock.padStart(9).slice(0, 9));
  lines.push(fit(f.domains.map((d) => `${d.name} ${watts(d.watts)}${d.averagedS !== null ? ' avg' : ''}`).join('   '), width));
  for (const note of readNotes(f)) lines.push(c.yellow(fit(note, width)));
  if (f.countersStillS !== null) lines.push(c.yellow(fit(`${f.source}'s counters stood still for ${f.countersStillS.toFixed(1)} s: these watts miss the power drawn`, width)));
  const avg = f.rowsAveragedS !== null ? ' avg' : '';
  if (f.tracked) {
    const t = f.tracked;
    lines.push(fit(`process ${watts(t.watts)}${avg}   baseline ${watts(t.baselineWatts)}${avg}   other ${watts(t.otherWatts)}${avg}`, width));
    const n = t.droppedThreads;
    if (n > 0) lines.push(c.yellow(fit(`${counted(n, 'thread')} untracked, slots full: their power is in "other" (--max-threads N)`, width)));
  } else {
    lines.push(fit('package power shared by CPU time, idle time included (from /proc)', width));
  }
  const s = f.sampler;
  lines.push(
    c.dim(fit(`sampler ${fmtKnown(s.rateHz, 0, ' Hz')}, jitter p99 ${fmtKnown(s.jitterP99Us, 0, ' µs')}, ${s.dropped} dropped, ${counted(s.late, 'period')} skipped, ${fmtKnown(s.cpuPercent, 1, ' %')} CPU, ${s.backend}`, width)),
  );
  lines.push('');
  const idTitle = f.mode === 'threads' ? 'TID' : 'PID';
  const nameW = Math.max(8, Math.min(32, width - 44));
  const header = `${idTitle.padStart(8)}  ${'NAME'.padEnd(nameW)} ${'CPU%'.padStart(7)} ${'WATTS'.padStart(10)} ${'JOULES'.padStart(12)}`;
  lines.push(c.inverse(fit(header, width).padEnd(Math.min(width, header.length))));
  const row = (id: string, name: string, r: { cpu: number | null; watts: number | null; joules: number }) =>
    fit(
      `${id.padStart(8)}  ${padCols(fit(printable(name), nameW), nameW)} ${(r.cpu === null ? 'n/a' : r.cpu.toFixed(1)).padStart(7)} ${watts(r.watts).padStart(10)} ${fmtJoules(r.joules).padStart(12)}`,
      width,
    );
  // First, whatever the sort: with them the rows add up to the package power.
  if (f.rest) lines.push(c.dim(row('-', REST_NAMES.idle, f.rest.idle)), c.dim(row('-', REST_NAMES.other, f.rest.other)));
  if (f.exited) lines.push(c.dim(row('-', REST_NAMES.exited, f.exited)));
  for (const r of f.rows.slice(0, room(lines.length))) lines.push(row(String(r.id), r.name, r));
  return lines;
}

/** The screen as lines no wider than `width`, at most `height` of them. */
export function renderFrame(f: TopFrame, width: number, height: number, color: boolean): string[] {
  const c = paint(color);
  const lines = frameLines(f, width, color, (above) => Math.max(1, height - above - 1));
  while (lines.length < height - 1) lines.push('');
  lines.push(c.dim(fit(`q quit   s sort: ${f.sort}   ${f.rows.length} ${f.mode}`, width)));
  return lines.slice(0, height);
}

/**
 * Off a terminal: one block per refresh, every row in it (as `top -b` prints every process: a
 * reader of a pipe or a file has no screen to fill and no key to page with), no key help and no
 * blank line within; blocks are separated by one.
 */
export function renderBlock(f: TopFrame, width = 80): string[] {
  return frameLines(f, width, false, () => f.rows.length).filter((l) => l.trim() !== '');
}

// Before the handler the frames are written under (main leaves stdout to top): written to
// /dev/full or to a reader gone (`| true`), the help ended in an uncaught 'error' event.
function writeHelp(): Promise<number> {
  return new Promise((resolve) => {
    process.stdout.once('error', () => {}); // told to the callback below
    process.stdout.write(HELP, (e?: NodeJS.ErrnoException | null) => {
      if (e && e.code !== 'EPIPE') process.stderr.write(`jouletrace top: cannot write to stdout: ${e.message}\n`);
      resolve(e && e.code !== 'EPIPE' ? 1 : 0);
    });
  });
}

export async function topCommand(argv: string[]): Promise<number> {
  let pid: number | undefined;
  let delay: number;
  let iterations: number;
  let sort: SortKey = 'watts';
  // Nothing here reads samples: a ring would only hold memory, and once full count every sample
  // past its size (65536, about two minutes) as lost.
  const samplerOptions: SamplerOptions = { intervalUs: 2000, ringCapacity: 0 };
  let json: boolean;
  let baseline: BaselineOptions;
  try {
    const { options } = parseArgs(argv, SPECS);
    if (options.help) return await writeHelp();
    if (options.pid !== undefined) pid = numberOption(options, 'pid', 0, 1, 2 ** 22, true);
    delay = numberOption(options, 'delay', 1, 0.2, 60);
    iterations = numberOption(options, 'iterations', Infinity, 1, 1e9, true);
    sort = choiceOption(options, 'sort', SORTS, sort);
    const source = sourceOption(options);
    if (source !== undefined) samplerOptions.source = source;
    Object.assign(samplerOptions, sourcePathOptions(options));
    const threads = choiceOption(options, 'threads', ['bpf', 'procfs'] as const, undefined);
    if (threads !== undefined) {
      if (pid === undefined) throw new UsageError('--threads needs --pid (system-wide view reads /proc)');
      samplerOptions.threads = threads;
    }
    const maxThreads = maxThreadsOption(options);
    if (maxThreads !== undefined) {
      if (pid === undefined) throw new UsageError('--max-threads needs --pid (system-wide view reads /proc)');
      samplerOptions.maxThreads = maxThreads;
    }
    baseline = baselineOptions(options);
    const flag = baselineFlag(baseline);
    if (pid === undefined && flag) throw new UsageError(`${flag} needs --pid (the system-wide view shares the package power by CPU time)`);
    json = options.json === true;
  } catch (e) {
    return reportUsageError('top', HELP, e);
  }
  // The process, by pid and start time.
  let pidStart: number | undefined;
  if (pid !== undefined) {
    pidStart = watchedProcessStart('top', pid);
    if (pidStart === undefined) return 1;
  }
  if (pid !== undefined) samplerOptions.pid = pid;
  else samplerOptions.threads = 'off';

  // A sampler that failed to open, calibrate or start: closed, and told in top's words.
  const failed = (e: unknown, opened: Sampler | undefined): number => {
    opened?.close();
    process.stderr.write(`jouletrace top: ${inFlagWords((e as Error).message, flagsOf(SPECS))}\n`);
    return 1;
  };
  let sampler: Sampler | undefined;
  try {
    sampler = new Sampler(samplerOptions);
    if (baseline.watts !== undefined) setBaselineOption(sampler, baseline.watts);
    if (baseline.calibrateS !== undefined) {
      process.stderr.write(`jouletrace top: measuring idle power for ${baseline.calibrateS} s: keep the machine quiet\n`);
      await sampler.calibrateBaseline({ durationMs: Math.round(baseline.calibrateS * 1000) });
    }
  } catch (e) {
    // The process exited while the baseline was measured, which ended the sampler's run: said
    // as its exit is said at any other time, not as a sampler stopped under the calibration.
    if (pid !== undefined && pidStart !== undefined && processGone(pid, pidStart)) {
      sampler?.close();
      process.stderr.write(`jouletrace top: process ${pid} exited\n`);
      return 0;
    }
    return failed(e, sampler);
  }
  if (pid !== undefined && baseline.calibrateS === undefined && !((baseline.watts ?? 0) > 0) && !sampler.stats().estimated) {
    process.stderr.write(`jouletrace top: note: ${noBaselineNote('the process')}\n`);
  }
  const out = process.stdout;
  // TERM=dumb: a terminal that cannot move the cursor or clear the screen (Emacs' shell, an
  // editor's output pane): plain blocks, as off a terminal.
  const tty = out.isTTY === true && process.stdin.isTTY === true && !json && process.env.TERM !== 'dumb';
  const color = tty && colorEnabled(out);
  const mode: TopFrame['mode'] = pid !== undefined ? 'threads' : 'processes';
  const backend = sampler.stats().threads.backend;

  try {
    sampler.start();
  } catch (e) {
    // A first read that failed (a device gone since it was opened) escaped to
    // bin/jouletrace.js, in the library's words, the sampler left open.
    return failed(e, sampler);
  }
  const primaryDomains = sampler.domains.map((d) => d.domain === primaryDomain(sampler!.domains));
  const rates = new DomainRates(sampler.totals(), sampler.stats().timing, primaryDomains);
  // --pid: the attribution as of the last refresh whose energy was known, and whether a stretch
  // of failed reads (or refreshes without a step) came since.
  let attrRef = pid !== undefined ? sampler.attribution() : null;
  let attrHeld = false;
  const threadRows = pid !== undefined ? new ThreadRows({ timeNs: sampler.threadsAt().timeNs }) : undefined;
  let procs = pid === undefined ? readAllProcesses() : undefined;
  const shares = procs ? new ProcessShares(procs, readCpuTicks()) : undefined;
  // System-wide CPU % is over the time between the /proc reads, not the sampler's samples.
  let procsAt = process.hrtime.bigint();
  let lastFrame: TopFrame | undefined;
  let longestStillUs = 0;

  const measure = (): TopFrame => {
    // totals() before stats(): a read that failed between them counts in this refresh.
    const cur = sampler.totals();
    const st = sampler.stats();
    const r = rates.step(cur, st.timing);
    let rows: TopRow[] = [];
    let tracked: TopFrame['tracked'] = null;
    let rest: TopFrame['rest'] = null;
    let exited: TopFrame['exited'] = null;
    let rowsAveragedS = r.rowsAveragedS;
    let noAttributionStep = false;
    if (pid !== undefined) {
      // Over the time between the attribution steps the figures are as of: they move at steps
      // only (procfs: every 5 samples, or later on a starved sampler), and over the samples'
      // time a constant 12 W baseline read 11.36-12.60 W, and a frame with no step 0 W.
      const a = sampler.attribution();
      const at = sampler.threadsAt();
      // The attribution holds a domain's intervals from the step its read failed at to the
      // next good read's: a read that failed after the refresh's last step is in the stats, one
      // that mended after it only in the attribution.
      const heldAt = (held: boolean) => (r.rows === 'lost' ? 'lost' : r.rows === 'held' || held ? 'held' : 'measured');
      const aState = heldAt(a.byDomain.some((d, i) => primaryDomains[i] && d.held));
      const windowS = Number(a.timeNs - attrRef!.timeNs) / 1e9;
      noAttributionStep = !(windowS > 0);
      if (aState === 'measured' && !noAttributionStep) {
        tracked = {
          watts: (a.process - attrRef!.process) / windowS,
          baselineWatts: (a.baseline - attrRef!.baseline) / windowS,
          otherWatts: (a.other - attrRef!.other) / windowS,
          droppedThreads: st.threads.droppedThreads,
        };
        rowsAveragedS = attrHeld ? windowS : null;
        attrRef = a;
        attrHeld = false;
      } else {
        tracked = { watts: null, baselineWatts: null, otherWatts: null, droppedThreads: st.threads.droppedThreads };
        rowsAveragedS = null;
        if (aState === 'lost') {
          attrRef = a;
          attrHeld = false;
        } else if (aState === 'held') attrHeld = true;
      }
      ({ rows, exited } = threadRows!.step(at, heldAt(at.held)));
    } else {
      procs = readAllProcesses(procs);
      const cpuTicks = readCpuTicks();
      const now = process.hrtime.bigint();
      const cpuS = Math.max(1e-6, Number(now - procsAt) / 1e9);
      procsAt = now;
      const step = shares!.step(procs, cpuTicks, r.rows);
      const cpu = (ticks: number) => (100 * ticks) / CLK_TCK / cpuS;
      rows = step.processes.map((x) => ({ id: x.pid, name: x.name, cpu: cpu(x.ticks), watts: x.watts, joules: x.joules }));
      rest = {
        idle: { cpu: cpu(step.idle.ticks), watts: step.idle.watts, joules: step.idle.joules },
        other: { cpu: cpu(step.other.ticks), watts: step.other.watts, joules: step.other.joules },
      };
    }
    // `longest` grown since the last refresh: a stretch that ended within this one (or goes on).
    const still = st.timing.countersStillUs ?? { now: 0, longest: 0 };
    const stillS = Math.max(still.now, still.longest > longestStillUs ? still.longest : 0) / 1e6;
    longestStillUs = still.longest;
    return {
      time: new Date().toISOString(),
      mode,
      pid: pid ?? null,
      source: sampler.source,
      estimated: st.estimated,
      sort,
      domains: r.domains,
      samples: r.samples,
      readErrors: r.readErrors,
      tracked,
      rowsAveragedS,
      noAttributionStep,
      sampler: {
        rateHz: st.timing.achievedRateHz,
        jitterP99Us: st.timing.jitterUs?.p99 ?? null,
        dropped: st.ring.dropped,
        late: st.timing.missedDeadlines,
        cpuPercent: st.timing.cpuPercent,
        backend,
      },
      countersStillS: !st.estimated && stillS >= COUNTERS_STILL_NOTE_S ? stillS : null,
      rows: sortRows(rows, sort),
      rest,
      exited,
    };
  };

  const draw = () => {
    if (!lastFrame) return;
    lastFrame.sort = sort;
    sortRows(lastFrame.rows, sort);
    if (json) {
      out.write(JSON.stringify(lastFrame) + '\n');
    } else if (tty) {
      const lines = renderFrame(lastFrame, out.columns || 80, out.rows || 24, color); // 0 x 0: a terminal that does not say
      out.write('\x1b[H' + lines.map((l) => l + '\x1b[K').join('\r\n') + '\x1b[J');
    } else {
      out.write(renderBlock(lastFrame).join('\n') + '\n\n');
    }
  };

  // The terminal as top runs in it (raw, the alternate screen, no cursor), and back as it was:
  // at the end, and around a suspension (Ctrl-Z).
  const enterScreen = () => {
    out.write('\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J');
    process.stdin.setRawMode(true);
    process.stdin.resume();
  };
  const leaveScreen = () => {
    out.write('\x1b[?25h\x1b[?1049l');
    try {
      process.stdin.setRawMode(false);
    } catch {
      // stdin already closed
    }
    process.stdin.pause();
  };
  let restored = false;
  const restore = () => {
    if (restored) return;
    restored = true;
    if (tty) leaveScreen();
  };
  process.on('exit', restore);

  return new Promise<number>((resolve) => {
    // Those ignored at start-up (nohup's SIGHUP) stay ignored.
    const signals = notIgnored(FATAL_SIGNALS);
    let timer: NodeJS.Timeout | undefined;
    let count = 0;
    let done = false;
    const finish = (code: number) => {
      if (done) return;
      done = true;
      if (timer) clearTimeout(timer);
      process.stdin.off('data', onKey);
      for (const sig of signals) process.off(sig, onSignal);
      process.off('SIGWINCH', draw);
      process.off('SIGTSTP', onTstp);
      process.off('SIGCONT', onCont);
      restore();
      sampler.close();
      resolve(code);
    };
    // Left to their default action, they killed top with the terminal in raw mode, on the
    // alternate screen, the cursor hidden: 'exit' does not run then.
    const onSignal = (sig: NodeJS.Signals) => finish(128 + constants.signals[sig]);
    // Ctrl-Z (a byte in raw mode, which sends no signal) or SIGTSTP: the terminal as it was,
    // then SIGTSTP again with the handler off, whose default action stops top before kill()
    // returns; past it top runs again (continued, or the signal discarded: a process group no
    // shell waits on is not stopped by it) and takes the screen back. Ctrl-Z sends it to top's
    // process group, as the terminal does outside raw mode (a subshell running top stops too, and
    // its shell sees the job stop); a SIGTSTP sent to top goes back to top alone. A SIGCONT after
    // any other stop (SIGSTOP) sets the terminal up again and redraws.
    const suspend = (group: boolean) => {
      if (done) return;
      leaveScreen();
      process.off('SIGTSTP', onTstp);
      try {
        process.kill(group ? 0 : process.pid, 'SIGTSTP');
      } finally {
        process.on('SIGTSTP', onTstp);
        enterScreen();
        draw();
      }
    };
    const onTstp = () => suspend(false);
    const onCont = () => {
      if (done) return;
      enterScreen();
      draw();
    };
    // `top --json | head -1`: the reader is gone, which ends top as it ends any filter.
    // Kept after finish(): the last frame's write fails only once top has finished.
    const onOutError = (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE') process.stderr.write(`jouletrace top: cannot write: ${e.message}\n`);
      const code = e.code === 'EPIPE' ? 0 : 1;
      if (done) {
        if (code !== 0) process.exitCode = code;
        return;
      }
      finish(code);
    };
    const onKey = (buf: Buffer) => {
      // Whole escape sequences go first: a function key's (F2 is ESC O Q, F4 ESC O S) or an
      // arrow's last letter, matched alone, quit or changed the sort.
      for (const ch of stripEscapes(buf.toString('utf8'))) {
        if (ch === 'q' || ch === 'Q' || ch === '\x03') return finish(0);
        if (ch === '\x1a') return suspend(true);
        if (ch === 's' || ch === 'S') {
          sort = SORTS[(SORTS.indexOf(sort) + 1) % SORTS.length];
          draw();
        }
      }
    };
    for (const sig of signals) process.on(sig, onSignal);
    out.on('error', onOutError);
    if (tty) {
      enterScreen();
      process.stdin.on('data', onKey);
      process.on('SIGWINCH', draw);
      process.on('SIGTSTP', onTstp);
      process.on('SIGCONT', onCont);
      out.write('jouletrace top: measuring…');
    }
    const tick = () => {
      if (done) return;
      // A zombie (exited, its parent not waiting) or a reused pid is gone too: /proc/N stays.
      if (pid !== undefined && pidStart !== undefined && processGone(pid, pidStart)) {
        restore();
        process.stderr.write(`jouletrace top: process ${pid} exited\n`);
        return finish(0);
      }
      lastFrame = measure();
      draw();
      if (++count >= iterations) return finish(0);
      timer = setTimeout(tick, delay * 1000);
    };
    timer = setTimeout(tick, delay * 1000);
  });
}

/**
 * @internal Exported for its test.
 * Keyboard input without its escape sequences: CSI (ESC [ ... final byte), SS3 (ESC O x, the
 * function keys F1-F4), and ESC with one character (Alt+key); a sequence cut off at the end of
 * the read is dropped whole.
 */
export function stripEscapes(s: string): string {
  return s.replace(/\x1b(?:\[[0-?]*[ -/]*(?:[@-~]|$)|O(?:[\s\S]|$)|[\s\S]|$)/g, '');
}
