// `jouletrace top [--pid N]`: a live view, refreshed every second, of where power goes: the
// threads of one process (eBPF or procfs attribution), or the busiest processes system-wide.
import * as fs from 'node:fs';
import { constants } from 'node:os';
import { Sampler, type SamplerOptions, type ThreadEnergy } from '../sampler';
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
import { colorEnabled, counted, fit, fmtJoules, fmtKnown, fmtWatts, paint, printable } from './format';
import { notIgnored } from './ignored-signals';
import { FATAL_SIGNALS } from './output-files';
import { processGone, readCpuTicks, readProcStat, watchedProcessStart } from './proc-stat';
import { ProcessShares, type ProcessTicks } from './process-shares';

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
more (its watts then miss the power drawn meanwhile). The clock is local time. Names are shown
with control characters as '?'.

Keys: q quits, s changes the sort (watts, joules, cpu, name). Ctrl-C quits too. SIGTERM,
SIGINT, SIGHUP, SIGQUIT, SIGUSR2, SIGALRM, SIGVTALRM and SIGPWR end it with the terminal
restored (status 128 + N).
Off a terminal (or with --json) it prints a plain block (or a JSON line) per refresh.

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
  /** Percent of one CPU over the last refresh. */
  cpu: number;
  watts: number;
  joules: number;
}

/** One of the rows that hold the power no row listed drew: system-wide, the idle time's and the rest; with --pid, the exited threads'. */
export interface TopRest {
  /** Percent of one CPU over the last refresh. */
  cpu: number;
  watts: number;
  /** Since top started. */
  joules: number;
}

export interface TopFrame {
  time: string;
  mode: 'threads' | 'processes';
  pid: number | null;
  source: string;
  estimated: boolean;
  sort: SortKey;
  domains: Array<{ name: string; watts: number }>;
  /**
   * --pid: the process's power, the baseline's and everything else's. `droppedThreads`: its
   * threads left untracked, every thread slot in use (their power is in `otherWatts`).
   */
  tracked: { watts: number; baselineWatts: number; otherWatts: number; droppedThreads: number } | null;
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

function sortRows(rows: TopRow[], key: SortKey): TopRow[] {
  const by: Record<SortKey, (a: TopRow, b: TopRow) => number> = {
    watts: (a, b) => b.watts - a.watts || b.joules - a.joules,
    joules: (a, b) => b.joules - a.joules || b.watts - a.watts,
    cpu: (a, b) => b.cpu - a.cpu || b.watts - a.watts,
    name: (a, b) => a.name.localeCompare(b.name) || a.id - b.id,
  };
  return rows.sort((a, b) => by[key](a, b) || a.id - b.id);
}

const REST_NAMES = { idle: '(idle)', other: '(other: exited, irq)', exited: '(exited threads)' };

/**
 * @internal Exported for its test.
 * --pid's rows, one per live thread, from the sampler's list at each refresh, and one for the
 * threads that exited: a thread that exits within a refresh has its last joules there, and one
 * that starts and ends within it its whole energy.
 */
export class ThreadRows {
  // By row id: a tid the kernel gives again to a new thread would be measured from the exited
  // thread's figures (its first frame a negative power).
  readonly #prev = new Map<number, { joules: number; onCpuNs: number }>();
  #exitedJoules = 0;

  step(threads: ReadonlyArray<Pick<ThreadEnergy, 'id' | 'tid' | 'name' | 'onCpuNs' | 'joules' | 'exited'>>, dt: number): { rows: TopRow[]; exited: TopRest } {
    const listed = new Set(threads.map((t) => t.id));
    // Rows gone from the list since the last refresh were folded into the "(exited threads)" row
    // (id 0; past 4096 exited threads): their figures, counted under their own rows, are in its
    // increase too, and come off it.
    let folded = { joules: 0, onCpuNs: 0 };
    for (const [id, p] of this.#prev) {
      if (listed.has(id)) continue;
      folded = { joules: folded.joules + p.joules, onCpuNs: folded.onCpuNs + p.onCpuNs };
      this.#prev.delete(id);
    }
    const rows: TopRow[] = [];
    let joules = 0;
    let onCpuNs = 0;
    for (const t of threads) {
      const p = this.#prev.get(t.id) ?? { joules: 0, onCpuNs: 0 };
      this.#prev.set(t.id, { joules: t.joules, onCpuNs: t.onCpuNs });
      if (!t.exited) {
        rows.push({ id: t.tid, name: t.name, cpu: (100 * (t.onCpuNs - p.onCpuNs)) / 1e9 / dt, watts: (t.joules - p.joules) / dt, joules: t.joules });
      } else if (t.id === 0) {
        joules += Math.max(0, t.joules - p.joules - folded.joules);
        onCpuNs += Math.max(0, t.onCpuNs - p.onCpuNs - folded.onCpuNs);
      } else {
        joules += t.joules - p.joules;
        onCpuNs += t.onCpuNs - p.onCpuNs;
      }
    }
    this.#exitedJoules += joules;
    return { rows, exited: { cpu: (100 * onCpuNs) / 1e9 / dt, watts: joules / dt, joules: this.#exitedJoules } };
  }
}

/** The screen as lines no wider than `width`, at most `height` of them. */
export function renderFrame(f: TopFrame, width: number, height: number, color: boolean): string[] {
  const c = paint(color);
  const lines: string[] = [];
  const title = `jouletrace top — ${f.mode === 'threads' ? `threads of pid ${f.pid}` : 'processes'} — ${f.source}${f.estimated ? ' (ESTIMATED)' : ''}`;
  // Local time, as top(1) shows it; the JSON's `time` stays ISO (UTC).
  const clock = new Date(f.time).toTimeString().slice(0, 8);
  lines.push(c.bold(fit(title, width - 9).padEnd(width - 9)) + clock.padStart(9).slice(0, 9));
  lines.push(fit(f.domains.map((d) => `${d.name} ${fmtWatts(d.watts)}`).join('   '), width));
  if (f.countersStillS !== null) lines.push(c.yellow(fit(`${f.source}'s counters stood still for ${f.countersStillS.toFixed(1)} s: these watts miss the power drawn`, width)));
  if (f.tracked) {
    lines.push(fit(`process ${fmtWatts(f.tracked.watts)}   baseline ${fmtWatts(f.tracked.baselineWatts)}   other ${fmtWatts(f.tracked.otherWatts)}`, width));
    const n = f.tracked.droppedThreads;
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
  const row = (id: string, name: string, r: { cpu: number; watts: number; joules: number }) =>
    fit(`${id.padStart(8)}  ${fit(printable(name), nameW).padEnd(nameW)} ${r.cpu.toFixed(1).padStart(7)} ${fmtWatts(r.watts).padStart(10)} ${fmtJoules(r.joules).padStart(12)}`, width);
  // First, whatever the sort: with them the rows add up to the package power.
  if (f.rest) lines.push(c.dim(row('-', REST_NAMES.idle, f.rest.idle)), c.dim(row('-', REST_NAMES.other, f.rest.other)));
  if (f.exited) lines.push(c.dim(row('-', REST_NAMES.exited, f.exited)));
  const room = Math.max(1, height - lines.length - 1);
  for (const r of f.rows.slice(0, room)) lines.push(row(String(r.id), r.name, r));
  while (lines.length < height - 1) lines.push('');
  lines.push(c.dim(fit(`q quit   s sort: ${f.sort}   ${f.rows.length} ${f.mode}`, width)));
  return lines.slice(0, height);
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
    return failed(e, sampler);
  }
  if (pid !== undefined && baseline.calibrateS === undefined && !((baseline.watts ?? 0) > 0) && !sampler.stats().estimated) {
    process.stderr.write(`jouletrace top: note: ${noBaselineNote('the process')}\n`);
  }
  const out = process.stdout;
  const tty = out.isTTY === true && process.stdin.isTTY === true && !json;
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
  let prevTotals = sampler.totals();
  let prevAttr = pid !== undefined ? sampler.attribution() : null;
  const threadRows = new ThreadRows();
  let procs = pid === undefined ? readAllProcesses() : undefined;
  const shares = procs ? new ProcessShares(procs, readCpuTicks()) : undefined;
  let lastFrame: TopFrame | undefined;
  let longestStillUs = 0;

  const primary = primaryDomain(sampler.domains);
  const measure = (): TopFrame => {
    const cur = sampler.totals();
    const dt = Math.max(1e-6, Number(cur.timeNs - prevTotals.timeNs) / 1e9);
    const domains = cur.readings.map((r, i) => ({ name: `${r.domain}-${r.package}`, watts: (r.joules - prevTotals.readings[i].joules) / dt }));
    // The domain attribution divides, over every package (without package, psys: the first
    // domain listed was one package's dram, and the rows added up to it).
    const pkgWatts = cur.readings.reduce((a, r, i) => a + (r.domain === primary ? domains[i].watts : 0), 0);
    prevTotals = cur;
    let rows: TopRow[] = [];
    let tracked: TopFrame['tracked'] = null;
    let rest: TopFrame['rest'] = null;
    let exited: TopFrame['exited'] = null;
    if (pid !== undefined) {
      const a = sampler.attribution();
      if (prevAttr) {
        tracked = {
          watts: (a.process - prevAttr.process) / dt,
          baselineWatts: (a.baseline - prevAttr.baseline) / dt,
          otherWatts: (a.other - prevAttr.other) / dt,
          droppedThreads: sampler.stats().threads.droppedThreads,
        };
      }
      prevAttr = a;
      ({ rows, exited } = threadRows.step(sampler.threads(), dt));
    } else {
      procs = readAllProcesses(procs);
      const step = shares!.step(procs, readCpuTicks(), pkgWatts, dt);
      const cpu = (ticks: number) => (100 * ticks) / CLK_TCK / dt;
      rows = step.processes.map((x) => ({ id: x.pid, name: x.name, cpu: cpu(x.ticks), watts: x.watts, joules: x.joules }));
      rest = {
        idle: { cpu: cpu(step.idle.ticks), watts: step.idle.watts, joules: step.idle.joules },
        other: { cpu: cpu(step.other.ticks), watts: step.other.watts, joules: step.other.joules },
      };
    }
    const st = sampler.stats();
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
      domains,
      tracked,
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
      // Plain blocks separated by one blank line: no padding, no key help.
      const above =
        (lastFrame.rest ? 2 : 0) + (lastFrame.exited ? 1 : 0) + ((lastFrame.tracked?.droppedThreads ?? 0) > 0 ? 1 : 0) + (lastFrame.countersStillS !== null ? 1 : 0);
      const lines = renderFrame(lastFrame, 80, Math.min(lastFrame.rows.length, 15) + 8 + above, false).slice(0, -1);
      out.write(lines.filter((l) => l.trim() !== '').join('\n') + '\n\n');
    }
  };

  let restored = false;
  const restore = () => {
    if (restored) return;
    restored = true;
    if (tty) {
      out.write('\x1b[?25h\x1b[?1049l');
      try {
        process.stdin.setRawMode(false);
      } catch {
        // stdin already closed
      }
      process.stdin.pause();
    }
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
      restore();
      sampler.close();
      resolve(code);
    };
    // Left to their default action, they killed top with the terminal in raw mode, on the
    // alternate screen, the cursor hidden: 'exit' does not run then.
    const onSignal = (sig: NodeJS.Signals) => finish(128 + constants.signals[sig]);
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
      for (const ch of buf.toString('utf8')) {
        if (ch === 'q' || ch === 'Q' || ch === '\x03') return finish(0);
        if (ch === 's' || ch === 'S') {
          sort = SORTS[(SORTS.indexOf(sort) + 1) % SORTS.length];
          draw();
        }
      }
    };
    for (const sig of signals) process.on(sig, onSignal);
    out.on('error', onOutError);
    if (tty) {
      out.write('\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J');
      process.stdin.setRawMode(true);
      process.stdin.resume();
      process.stdin.on('data', onKey);
      process.on('SIGWINCH', draw);
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
