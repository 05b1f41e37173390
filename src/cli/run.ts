// `jouletrace run [options] -- <command> [args...]`: runs a command, attributes energy to its whole
// process tree, and prints a summary on exit like `perf stat`.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { constants } from 'node:os';
import { finished, type Writable } from 'node:stream';
import { native } from '../native';
import { ReportCollector } from '../report/collector';
import { renderReport } from '../report/render';
import { Sampler, type SamplerOptions, type SamplerStats, type ThreadEnergy } from '../sampler';
import type { SourceName } from '../source-options';
import {
  baselineFlag,
  baselineOptions,
  choiceOption,
  COUNTERS_STILL_NOTE_S,
  countersStillNote,
  readErrorsNote,
  filePathOption,
  flagsOf,
  inFlagWords,
  DEFAULT_MAX_THREADS,
  droppedThreadsNote,
  maxThreadsOption,
  noBaselineNote,
  numberOption,
  parseArgs,
  parseIntervalUs,
  reportUsageError,
  setBaselineOption,
  SOURCE_PATH_HELP,
  SOURCE_PATH_SPECS,
  sourceOption,
  sourcePathOptions,
  UsageError,
  type BaselineOptions,
  type OptionSpec,
  type SourcePaths,
} from './args';
import { colorEnabled, counted, fmtInterval, fmtJitter, fmtJoules, fmtKnown, fmtSeconds, fmtWatts, paint, printable, unmeasuredMark } from './format';
import { ignoredAtStart, notIgnored } from './ignored-signals';
import { FATAL_SIGNALS, OutputFiles, TERMINAL_SIGNALS } from './output-files';
import { isGone } from './proc-stat';

const HELP = `Usage: jouletrace run [options] [--] <command> [args...]

Runs <command>, tracks its whole process tree (every process it forks, from its first
instruction on) and samples energy; when it exits, prints the duration, energy and average
power per domain, the tree's attributed energy beside the baseline and everything else, the
top threads and processes by joules, and the sampler's health. The summary goes to stderr
(like perf stat), so the command's own output stays on stdout; names there show control
characters as '?'. Nothing is drawn while the command runs, unless --live.
On measured counters, give the machine's idle power (--baseline, --calibrate): without it,
idle power is shared out by CPU time and the tree is charged part of it (a note says so).

Options:
  --interval T      sampling period: microseconds, or with a unit (500us, 1ms, 10ms);
                    50us to 1s (default 1ms)
  --source S        energy source: auto, msr, perf, powercap, model (default auto)
  --threads B       thread tracking: bpf, procfs, off (default: bpf, else procfs).
                    Only bpf follows child processes; procfs tracks the command's own
                    process, off attributes nothing
  --max-threads N   threads tracked at once (1 to 1048576, default 4096): past it, threads of
                    the tree go untracked and their energy counts as "other" (a note says
                    how many). Needs thread tracking
  --top N           threads and processes listed in the summary (default 5)
  --baseline W      idle power in watts of each package (of its package domain, else psys):
                    charged to the baseline, not to the tree (0 to 1000000; the model
                    source has its own). Needs thread tracking
  --calibrate S     measure that idle power for S seconds (0.2 to 600) before the command
                    starts, while the machine is quiet, instead of --baseline
  --json            print the results as JSON on stdout (every process of the tree;
                    stdout is the command's too: add -o F to keep them apart)
  -o, --output F    write the summary (or the JSON) to file F instead
  --csv F           write every sample to F (CSV with a header line)
  --html F          write an HTML report to F
  --live            on a terminal, a line on stderr with elapsed time and watts, redrawn
                    four times a second: it draws over the command's own output on that
                    terminal (prompts, progress bars, full-screen programs)
  -q, --quiet       no live line: the default, accepted for scripts that still pass it
  -h, --help        show this help

${SOURCE_PATH_HELP}
Exit status: the command's own; 128 + N when a signal N killed it (real-time ones included);
2 for a bad command line; 125 when jouletrace itself failed (no energy source, an output file or
the summary it could not write, the command's status it could not read; a reader gone from a
pipe is no failure); 126/127 when the command could not be run.
SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR2, SIGALRM, SIGVTALRM and SIGPWR sent to jouletrace are
passed on to the command, except those the terminal sent to its foreground process group (Ctrl-C, Ctrl-\\, hang-up), which
reached the command already (while the run is the terminal's foreground job, those three from
kill count as the terminal's: send SIGTERM). Without a controlling terminal (systemd, cron, CI,
setsid) the command runs in a process group of its own, so that a signal sent to jouletrace's
group reaches it once, passed on; what is left of its group gets the signal too when the
command dies of it (killed by it, or exit status 128 + N).
From a terminal (a background job included) it stays in jouletrace's group, under the shell's
job control; there a signal sent to the group reaches it twice (timeout(1) from a shell: use
timeout --foreground). One that arrives while the command is being started (--calibrate
included) ends the run as well (status 128 + N), the command not run, nothing left behind.
A signal ignored when jouletrace started (nohup's SIGHUP; SIGINT and SIGQUIT for a script's
background job) stays ignored, by jouletrace and by the command, and is not passed on
(only when started as the program \`jouletrace\`; \`node bin/jouletrace.js\`, npx and npm exec cannot tell).
Output files are written beside their place and moved there at the end: an existing file is
left as it was when the run fails (/dev/stdout, /dev/stderr and /proc/self/fd/N are written
through that descriptor). A FIFO with no reader yet is waited for before the command starts
(a signal ends the wait: 128 + N, the command not run). A signal not listed above that kills
(SIGKILL, SIGPROF, SIGXCPU, a crash's SIGSEGV or SIGABRT) leaves the temporary files
(.jouletrace-PID-*) behind, and a command in a group of its own running.
`;

const SPECS: OptionSpec[] = [
  { name: 'interval', type: 'string' },
  { name: 'source', type: 'string' },
  { name: 'threads', type: 'string' },
  { name: 'top', type: 'number' },
  { name: 'max-threads', type: 'number' },
  { name: 'baseline', type: 'number' },
  { name: 'calibrate', type: 'number' },
  { name: 'json', type: 'flag' },
  { name: 'output', short: 'o', type: 'string' },
  { name: 'csv', type: 'string' },
  { name: 'html', type: 'string' },
  { name: 'live', type: 'flag' },
  { name: 'quiet', short: 'q', type: 'flag' },
  { name: 'help', short: 'h', type: 'flag' },
  ...SOURCE_PATH_SPECS,
];
const FLAGS = flagsOf(SPECS);

/** Exit status for jouletrace's own failures (as timeout(1) and env(1) use it). */
export const EXIT_INTERNAL = 125;

/**
 * A signal's name; Node has none for the real-time ones, which are named as bash's `kill -l` names
 * them (SIGRTMIN is 34, as glibc has it), others SIG<N>.
 */
export function signalName(n: number): string {
  const known = Object.entries(constants.signals).find(([, v]) => v === n);
  if (known) return known[0];
  if (n >= 34 && n <= 49) return n === 34 ? 'SIGRTMIN' : `SIGRTMIN+${n - 34}`;
  if (n >= 50 && n <= 64) return n === 64 ? 'SIGRTMAX' : `SIGRTMAX-${64 - n}`;
  return `SIG${n}`;
}

function signalNumber(name: string): number | undefined {
  const known = (constants.signals as Record<string, number>)[name];
  if (known !== undefined) return known;
  const rt = /^SIGRT(MIN|MAX)(?:([+-])(\d+))?$/.exec(name);
  if (rt) return (rt[1] === 'MIN' ? 34 : 64) + (rt[2] === '-' ? -1 : 1) * Number(rt[3] ?? 0);
  const n = /^SIG(\d+)$/.exec(name);
  return n ? Number(n[1]) : undefined;
}

/** Exit status a shell would give: the code, or 128 + the signal's number. */
export function exitStatus(code: number | null, signal: string | null): number {
  if (code !== null) return code;
  if (signal !== null) return 128 + (signalNumber(signal) ?? 0);
  return 1;
}

/** How the command ended: `status` is what a shell would give, undefined where it could not be read (`error` says why). */
interface Ended {
  code: number | null;
  signal: string | null;
  status: number | undefined;
  error?: string;
}

/**
 * Takes the command's exit from the kernel, not from Node's 'exit' event, which names a signal
 * only where Node has a name for it: a command killed by a real-time signal (34 to 64) read as
 * exit 0. libuv's handle of the child is closed first, so that libuv no longer reaps it (it waits
 * for the pids it has handles of, one by one); the addon's thread waits for it, leaving the zombie
 * until its status is here, so that a signal sent by pid until then cannot reach another process
 * that took the pid. Where Node has no such handle (another version), its 'exit' event.
 */
function watchExit(child: ChildProcess, pid: number): { exited: Promise<Ended>; done: () => boolean; kill: (sig: NodeJS.Signals) => void } {
  let done = false;
  let reaping = true; // the addon reaps the child, not libuv
  const handle = (child as unknown as { _handle?: { close?: () => void } | null })._handle;
  const exited = new Promise<Ended>((resolve) => {
    const end = (e: Ended) => {
      done = true;
      resolve(e);
    };
    if (typeof handle?.close !== 'function') {
      reaping = false;
      child.once('exit', (code, signal) => end({ code, signal, status: exitStatus(code, signal) }));
      return;
    }
    handle.close();
    const binding = native();
    binding.waitChild(pid, (error: string | null, how: string, n: number) => {
      binding.reapChild(pid);
      if (error !== null) end({ code: null, signal: null, status: undefined, error: `waitid(): ${error}` });
      else if (how === 'exited') end({ code: n, signal: null, status: n });
      else if (how === 'killed' || how === 'dumped') end({ code: null, signal: signalName(n), status: 128 + n });
      else end({ code: null, signal: null, status: undefined, error: `waitid() told ${how}` });
    });
  });
  const kill = (sig: NodeJS.Signals) => {
    if (!reaping) {
      child.kill(sig);
      return;
    }
    if (done) return;
    try {
      process.kill(pid, sig);
    } catch {
      // exited, not yet told
    }
  };
  return { exited, done: () => done, kill };
}

export interface ProcessInfo {
  pid: number;
  /** null when the process came and went between two looks at /proc. */
  ppid: number | null;
  command: string;
  /**
   * null for a process whose exited threads were all folded into the pid 0 row (past 4096
   * exited threads): its figures are in that row's.
   */
  onCpuNs: number | null;
  joules: number | null;
  /** Of onCpuNs, the time whose energy no read measured (its threads' unmeasuredNs): not in joules. */
  unmeasuredNs: number | null;
  threads: number | null;
}

interface ProcStat {
  comm: string;
  state: string;
  ppid: number;
  pgrp: number;
  ttyNr: number;
  tpgid: number;
  /** Start time after boot, in clock ticks: with the pid, it names one process (pids are reused). */
  start: number;
}

/**
 * Reads /proc/PID/stat (the comm field may hold spaces and parentheses); null when the process
 * is gone or, without `strict`, when the file could not be read at all. `strict`: any other error
 * is thrown (out of file descriptors or memory: it says nothing of the process).
 */
function readStat(pid: number | 'self', proc = '/proc', strict = false): ProcStat | null {
  let s: string;
  try {
    s = fs.readFileSync(`${proc}/${pid}/stat`, 'utf8');
  } catch (e) {
    if (strict && !isGone(e)) throw e;
    return null;
  }
  const open = s.indexOf('(');
  const close = s.lastIndexOf(')');
  // After the comm: state(0) ppid(1) pgrp(2) session(3) tty_nr(4) tpgid(5) ... starttime(19)
  const f = s.slice(close + 2).split(' ');
  return {
    comm: s.slice(open + 1, close),
    state: f[0],
    ppid: Number(f[1]),
    pgrp: Number(f[2]),
    ttyNr: Number(f[4]),
    tpgid: Number(f[5]),
    start: Number(f[19]),
  };
}

// A process's argv, from the NUL-separated /proc/PID/cmdline; empty for a kernel thread, a
// zombie, or one gone.
function readArgv(pid: number, proc: string): string[] {
  try {
    const s = fs.readFileSync(`${proc}/${pid}/cmdline`, 'utf8').replace(/\0+$/, '');
    return s === '' ? [] : s.split('\0');
  } catch {
    return [];
  }
}

// The processes /proc lists (threads other than a leader are not listed); undefined when it
// cannot be read (out of file descriptors), which says nothing of the tree.
function listProcesses(proc: string): number[] | undefined {
  try {
    return fs.readdirSync(proc).filter((e) => /^\d+$/.test(e)).map(Number);
  } catch {
    return undefined;
  }
}

/** A thread as the sampler lists it (sampler.threads()). */
type TrackedThread = Pick<ThreadEnergy, 'tid' | 'pid' | 'name' | 'exited'>;

interface KnownProcess {
  ppid: number | null;
  /** undefined for a process never seen in /proc, nor named by the sampler. */
  command: string | undefined;
  /** argv[0] as the process has it (a path may hold spaces, which `command` cannot tell apart); undefined where not read. */
  program: string | undefined;
  alive: boolean;
  /** ProcStat.start where it was seen in /proc: with the pid, this process and no other. */
  start: number | undefined;
}

/**
 * Watches a process tree through /proc while it lives: parent and command line of each
 * process, refreshed on every poll (exec changes the command line). A process is known by its
 * pid and start time: once it has exited, its pid is not looked at again, as another process
 * may have it by then.
 */
export class ProcessTreeWatcher {
  readonly root: number;
  readonly #known = new Map<number, KnownProcess>();
  readonly #rootArgv: readonly string[] | undefined;
  readonly #proc: string;
  #wrapperCmdline: string | undefined;
  // Every process in /proc not known to be the tree's, with its parent when first read: a tree
  // process's children are found here by their parent pid. Each poll reads the stat of the
  // processes new to /proc only. Each thread's task/TID/children file, read every poll, cost a
  // read per thread: 3000 idle threads took half a core. A pid reused between two polls keeps
  // its first process's parent here; the sampler's list finds such a child (with eBPF).
  readonly #outside = new Map<number, number>();
  // The tids the sampler listed at the last poll: one gone from its list since was folded.
  #listed = new Set<number>();
  #folded = 0;

  /**
   * `rootArgv`: what the root execs once started (`jouletrace run` starts it behind a wrapper
   * shell that waits for the tracker). Shown for the root while its command line is still the
   * wrapper's, so that a command that exits before the first poll after its exec is not named
   * after the wrapper.
   * `proc`: where procfs is (tests give a tree of their own).
   */
  constructor(root: number, rootArgv?: readonly string[], proc = '/proc') {
    this.root = root;
    this.#rootArgv = rootArgv;
    this.#proc = proc;
    this.poll();
  }

  /**
   * Reads the root, every process known alive and their children from /proc. `tracked`: the
   * sampler's threads; each process first heard of there is looked at once. One whose threads
   * have all exited is taken only as a zombie (its pid is its own until reaped): a live process
   * under its pid is another's, the pid reused.
   */
  poll(tracked?: Iterable<TrackedThread>): void {
    const heard = new Map<number, { name: string; live: boolean }>();
    if (tracked !== undefined) {
      const listed = new Set<number>();
      for (const t of tracked) {
        if (t.tid === 0) continue; // the folded row
        listed.add(t.tid);
        if (this.#known.has(t.pid)) continue;
        const h = heard.get(t.pid);
        if (!h) heard.set(t.pid, { name: t.name, live: !t.exited });
        else {
          if (t.tid === t.pid) h.name = t.name;
          if (!t.exited) h.live = true;
        }
      }
      for (const tid of this.#listed) if (!listed.has(tid)) this.#folded++;
      this.#listed = listed;
    }
    const children = this.#readOutside();
    // A stack: the tree (from the root, and from each process known alive) is walked before
    // the processes heard of, so that one found in it is taken as the tree's.
    // A child found by its parent pid as it was when first read carries that parent: checked
    // before it is taken (see #stillChildOf).
    const queue: Array<[number, boolean, number?]> = [...heard].map(([pid, h]) => [pid, h.live]);
    for (const [pid, p] of this.#known) if (p.alive) queue.push([pid, true]);
    if (!this.#known.has(this.root)) queue.push([this.root, true]);
    const seen = new Set<number>();
    const fresh: number[] = [];
    while (queue.length > 0) {
      const [pid, adopt, parent] = queue.pop()!;
      if (seen.has(pid)) continue;
      seen.add(pid);
      const known = this.#known.has(pid);
      if (parent !== undefined && !known && !this.#stillChildOf(pid, parent)) continue;
      if (this.#look(pid, adopt, heard.get(pid)?.name)) for (const c of children.get(pid) ?? []) queue.push([c, true, pid]);
      if (!known && this.#known.has(pid)) fresh.push(pid);
      if (this.#known.has(pid)) this.#outside.delete(pid);
    }
    // A parent that is not the tree's is not the real one: an orphan heard of from the sampler
    // was re-parented to init or a subreaper before it was first read. Told once all of this
    // poll's processes are known, its own parent among them whatever the order they were read in.
    for (const pid of fresh) {
      const p = this.#known.get(pid)!;
      if (pid !== this.root && p.ppid !== null && !this.#known.has(p.ppid)) p.ppid = null;
    }
  }

  // Reads the stat of each process new to /proc, forgets those gone from it; returns the
  // processes outside the tree by parent pid.
  #readOutside(): Map<number, number[]> {
    const listed = listProcesses(this.#proc);
    if (listed !== undefined) {
      const now = new Set(listed);
      for (const pid of this.#outside.keys()) if (!now.has(pid)) this.#outside.delete(pid);
      for (const pid of listed) {
        if (this.#outside.has(pid) || this.#known.has(pid)) continue;
        let st: ProcStat | null;
        try {
          st = readStat(pid, this.#proc, true);
        } catch (e) {
          // Not allowed (hidepid=1): never to be read, nor taken as the tree's (#look could not
          // read it either). Anything else (out of file descriptors): read again next poll.
          const code = (e as NodeJS.ErrnoException).code;
          if (code === 'EACCES' || code === 'EPERM') this.#outside.set(pid, -1);
          continue;
        }
        if (st !== null) this.#outside.set(pid, st.ppid);
      }
    }
    const byParent = new Map<number, number[]>();
    for (const [pid, ppid] of this.#outside) {
      const list = byParent.get(ppid);
      if (list) list.push(pid);
      else byParent.set(ppid, [pid]);
    }
    return byParent;
  }

  // Whether pid's parent is still `parent`. #outside keeps the parent a process had when first
  // read: once that parent exits (the child goes to init) and one of the tree's takes its pid,
  // the child would be taken for the tree's, with its descendants. Corrected here when not.
  #stillChildOf(pid: number, parent: number): boolean {
    let st: ProcStat | null;
    try {
      st = readStat(pid, this.#proc, true);
    } catch {
      return false;
    }
    if (st === null) return false;
    if (st.ppid === parent) return true;
    this.#outside.set(pid, st.ppid);
    return false;
  }

  // Reads one process; returns whether it is alive in the tree. `adopt`: a live process under
  // this pid is the tree's. `name`: the sampler's name for it.
  #look(pid: number, adopt: boolean, name: string | undefined): boolean {
    const prev = this.#known.get(pid);
    if (prev && !prev.alive) return false;
    let read: ProcStat | null;
    try {
      read = readStat(pid, this.#proc, true);
    } catch {
      // Not read (out of file descriptors, say): it says nothing of the process, which was taken
      // as exited and never looked at again. As it was, until the next poll.
      return prev !== undefined;
    }
    const st = read;
    const zombie = st !== null && (st.state === 'Z' || st.state === 'X');
    if (prev && (!st || zombie || st.start !== prev.start)) {
      prev.alive = false; // exited, or exited and its pid taken since the last look
      return false;
    }
    if (!prev && (!st || zombie || !adopt)) {
      this.#known.set(
        pid,
        zombie
          ? { ppid: st.ppid, command: `[${st.comm}]`, program: undefined, alive: false, start: st.start }
          : { ppid: null, command: name === undefined ? undefined : `[${name}]`, program: undefined, alive: false, start: undefined },
      );
      return false;
    }
    let argv = readArgv(pid, this.#proc);
    // A process tearing down its memory as it exits still runs (state R) with its cmdline
    // already empty: it keeps the command line read before, the root the one it was given.
    if (argv.length === 0 && prev?.program !== undefined) return true;
    let cmd = argv.join(' ') || `[${st!.comm}]`;
    if (pid === this.root && this.#rootArgv !== undefined) {
      this.#wrapperCmdline ??= cmd; // the first read: the wrapper, waiting before its exec
      if (cmd === this.#wrapperCmdline) {
        argv = [...this.#rootArgv];
        cmd = argv.join(' ');
      }
    }
    // The first parent seen is the real one: an orphan is later re-parented to a subreaper or
    // init (one first read after that is told apart in poll()).
    this.#known.set(pid, { ppid: prev ? prev.ppid : st!.ppid, command: cmd, program: argv[0], alive: true, start: st!.start });
    return true;
  }

  get(pid: number): { ppid: number | null; command: string | undefined } | undefined {
    const p = this.#known.get(pid);
    return p && { ppid: p.ppid, command: p.command };
  }

  /** The argv[0] a process was last seen with in /proc; undefined for one never read there, or a kernel thread. */
  program(pid: number): string | undefined {
    return this.#known.get(pid)?.program;
  }

  /** Every process of the tree seen, in /proc or in the sampler's list. */
  pids(): number[] {
    return [...this.#known.keys()];
  }

  /** Threads listed at one poll and gone from the sampler's list at a later one: folded into its pid 0 row. */
  get folded(): number {
    return this.#folded;
  }
}

/**
 * Sums the sampler's threads per process, with ppid and command from the watcher. `listFolded`:
 * the sampler follows the whole tree, whose processes the watcher knows; those left with no
 * thread listed (folded into the pid 0 row) are listed too, with null figures.
 */
export function processTable(threads: ThreadEnergy[], watcher: ProcessTreeWatcher, listFolded: boolean): ProcessInfo[] {
  const by = new Map<number, ProcessInfo & { onCpuNs: number; joules: number; unmeasuredNs: number; threads: number }>();
  for (const t of threads) {
    let p = by.get(t.pid);
    if (!p) {
      const w = t.pid === 0 ? undefined : watcher.get(t.pid);
      const folded = watcher.folded > 0 ? `(${watcher.folded} exited threads, folded)` : '(exited threads, folded)';
      p = { pid: t.pid, ppid: w?.ppid ?? null, command: w?.command ?? (t.pid === 0 ? folded : `[${t.name}]`), onCpuNs: 0, joules: 0, unmeasuredNs: 0, threads: 0 };
      by.set(t.pid, p);
    }
    p.onCpuNs += t.onCpuNs;
    p.joules += t.joules;
    p.unmeasuredNs += t.unmeasuredNs;
    p.threads += 1;
  }
  const out: ProcessInfo[] = [...by.values()];
  if (listFolded && by.has(0)) {
    for (const pid of watcher.pids()) {
      if (by.has(pid)) continue;
      const w = watcher.get(pid)!;
      out.push({ pid, ppid: w.ppid, command: w.command ?? '[?]', onCpuNs: null, joules: null, unmeasuredNs: null, threads: null });
    }
  }
  return out.sort((a, b) => (b.joules ?? -1) - (a.joules ?? -1) || a.pid - b.pid);
}

interface RunResult {
  command: string[];
  /** null where the status could not be read (statusError says why): the run exits 125. */
  exitCode: number | null;
  statusError?: string;
  signal: string | null;
  durationS: number;
  source: string;
  estimated: boolean;
  intervalUs: number;
  domains: Array<{ domain: string; package: number; joules: number; watts: number }>;
  tree: null | {
    backend: string;
    followsChildren: boolean;
    domains: string[];
    joules: number;
    baseline: number;
    other: number;
    total: number;
    /** Thread slots (--max-threads). */
    maxThreads: number;
    /** Threads of the tree left untracked, every slot in use: their energy is in `other`. */
    droppedThreads: number;
  };
  processes: ProcessInfo[];
  threads: Array<Pick<ThreadEnergy, 'tid' | 'pid' | 'name' | 'onCpuNs' | 'joules' | 'unmeasuredNs' | 'exited'>>;
  sampler: {
    samples: number;
    /** Null without a sample (every run has stop()'s last one). */
    achievedRateHz: number | null;
    dropped: number;
    missedDeadlines: number;
    /** Samples whose read of the source failed: the domains kept their last values meanwhile. */
    readErrors: number;
    /** Of readErrors, those in which a counter started again: the energy before each is lost. */
    counterRestarts: number;
    /** Per domain, in `domains` order: the samples whose read failed for it. */
    readErrorsByDomain: Array<{ domain: string; package: number; readErrors: number }>;
    /** Null where the run ended before the sampler's first timed wake (a run shorter than its interval). */
    jitterUs: { p50: number; p99: number; max: number } | null;
    /** CPU time of the sampler thread, as a percentage of one core over its run; null without a sample. */
    cpuPercent: number | null;
    /**
     * CPU time of jouletrace's whole process (the sampler thread, the /proc walk, the --csv and
     * --live writers) while the command ran, as a percentage of one core.
     */
    jouletraceCpuPercent: number;
  };
  notes: string[];
}

/** The tree's processes, not counting the row of folded exited threads (pid 0). */
function processCount(processes: ProcessInfo[]): number {
  return processes.filter((p) => p.pid !== 0).length;
}

function formatSummary(r: RunResult, top: number, color: boolean): string {
  const c = paint(color);
  const est = r.estimated ? c.yellow(' (estimated)') : '';
  const lines: string[] = [];
  lines.push('', ` Energy stats for '${printable(r.command.join(' '))}'${est}:`, '');
  lines.push(`   ${fmtSeconds(r.durationS).padStart(12)}   elapsed`);
  for (const d of r.domains) {
    lines.push(`   ${fmtJoules(d.joules).padStart(12)}   ${`${d.domain}-${d.package}`.padEnd(12)} ${fmtWatts(d.watts).padStart(10)} average`);
  }
  if (r.tree) {
    const pct = (x: number) => (r.tree!.total > 0 ? `${((100 * x) / r.tree!.total).toFixed(1)} %` : '-');
    lines.push('', ` Where the ${r.tree.domains.join('+')} energy went (${r.tree.backend}${r.tree.followsChildren ? ', children followed' : ', this process only'}):`);
    lines.push(`   ${fmtJoules(r.tree.joules).padStart(12)}   ${c.bold('process tree')}  ${pct(r.tree.joules).padStart(8)}   ${processCount(r.processes)} process(es)`);
    lines.push(`   ${fmtJoules(r.tree.baseline).padStart(12)}   baseline      ${pct(r.tree.baseline).padStart(8)}`);
    const otherIs = r.tree.droppedThreads > 0 ? `other processes, idle, and ${counted(r.tree.droppedThreads, 'untracked thread')} of the tree` : 'other processes, and idle';
    lines.push(`   ${fmtJoules(r.tree.other).padStart(12)}   other         ${pct(r.tree.other).padStart(8)}   ${otherIs}`);
    if (r.threads.length > 0) {
      lines.push('', ` Top threads by joules:`);
      lines.push(c.dim(`   ${'tid'.padStart(8)} ${'pid'.padStart(8)}  ${'name'.padEnd(16)} ${'on-CPU'.padStart(10)} ${'joules'.padStart(12)}`));
      for (const t of r.threads.slice(0, top)) {
        lines.push(
          `   ${String(t.tid).padStart(8)} ${String(t.pid).padStart(8)}  ${printable(t.name).slice(0, 16).padEnd(16)} ${`${(t.onCpuNs / 1e6).toFixed(1)} ms`.padStart(10)} ${fmtJoules(t.joules).padStart(12)}${t.exited ? c.dim('  exited') : ''}${c.yellow(unmeasuredMark(t.unmeasuredNs))}`,
        );
      }
      lines.push('', ` Processes by joules:`);
      lines.push(c.dim(`   ${'pid'.padStart(8)} ${'ppid'.padStart(8)} ${'on-CPU'.padStart(10)} ${'joules'.padStart(12)}  command`));
      for (const p of r.processes.slice(0, top)) {
        const onCpu = p.onCpuNs === null ? 'folded' : `${(p.onCpuNs / 1e6).toFixed(1)} ms`;
        const joules = p.joules === null ? 'folded' : fmtJoules(p.joules);
        lines.push(`   ${String(p.pid).padStart(8)} ${String(p.ppid ?? '?').padStart(8)} ${onCpu.padStart(10)} ${joules.padStart(12)}  ${printable(p.command).slice(0, 60)}${c.yellow(unmeasuredMark(p.unmeasuredNs ?? 0))}`);
      }
      if (r.processes.length > top) lines.push(c.dim(`   … ${r.processes.length - top} more (--json lists all)`));
    }
  }
  const s = r.sampler;
  // A rate over a run shorter than the period is the run's length, not the sampler's pace
  // ("1 samples at 98 Hz (every 1000000 µs)" for `--interval 1s -- true`).
  const paced = r.durationS * 1e6 >= r.intervalUs;
  const pace = paced && s.achievedRateHz !== null ? ` at ${s.achievedRateHz.toFixed(0)} Hz (every ${fmtInterval(r.intervalUs)})` : ` (every ${fmtInterval(r.intervalUs)}: longer than the run)`;
  // Skipped: the sampling periods whose deadline passed while the sampler thread waited for a CPU
  // (a late sample skips one or more, none replayed): as many as the samples, or more, on a busy
  // machine. The CSV's late column marks the samples.
  lines.push(
    '',
    ` ${counted(s.samples, 'sample')}${pace}, ${s.dropped} dropped, ` +
      `${counted(s.missedDeadlines, 'period')} skipped, ${fmtJitter(s.jitterUs)}; ` +
      `sampler thread used ${fmtKnown(s.cpuPercent, 2, ' %')} of a core, jouletrace in all ${s.jouletraceCpuPercent.toFixed(2)} %`,
  );
  lines.push(` source: ${r.source}${r.estimated ? c.yellow(' — ESTIMATED from CPU time, no energy counters on this machine') : ' (measured)'}`);
  for (const n of r.notes) lines.push(c.dim(` note: ${n}`));
  lines.push(` exit status: ${r.exitCode ?? `unknown (${r.statusError})`}${r.signal ? ` (killed by ${r.signal})` : ''}`, '');
  return lines.join('\n');
}

/** Whether this process is in its controlling terminal's foreground process group. */
function inTerminalForeground(): boolean {
  const st = readStat('self');
  if (st === null) return process.stdin.isTTY === true;
  return st.ttyNr !== 0 && st.tpgid === st.pgrp;
}

/** Whether this process has a controlling terminal at all. */
function hasControllingTerminal(): boolean {
  const st = readStat('self');
  return st === null ? process.stdin.isTTY === true : st.ttyNr !== 0;
}

export async function runCommand(argv: string[]): Promise<number> {
  let parsed;
  let intervalUs = 1000;
  let top = 5;
  let threadsOpt: 'bpf' | 'procfs' | 'off' | undefined;
  let maxThreads: number | undefined;
  let source: SourceName | undefined;
  let paths: SourcePaths;
  let baseline: BaselineOptions;
  try {
    parsed = parseArgs(argv, SPECS, true);
    if (parsed.options.help) {
      process.stdout.write(HELP);
      return 0;
    }
    if (parsed.options.interval !== undefined) intervalUs = parseIntervalUs(parsed.options.interval as string);
    top = numberOption(parsed.options, 'top', 5, 0, 10000, true);
    threadsOpt = choiceOption(parsed.options, 'threads', ['bpf', 'procfs', 'off'] as const, undefined);
    baseline = baselineOptions(parsed.options);
    const flag = baselineFlag(baseline);
    if (threadsOpt === 'off' && flag) throw new UsageError(`${flag} needs thread tracking, which --threads off turns off`);
    maxThreads = maxThreadsOption(parsed.options);
    if (threadsOpt === 'off' && maxThreads !== undefined) throw new UsageError('--max-threads needs thread tracking, which --threads off turns off');
    source = sourceOption(parsed.options);
    paths = sourcePathOptions(parsed.options);
    for (const name of ['output', 'csv', 'html']) filePathOption(parsed.options, name);
    if (parsed.options.live && parsed.options.quiet) throw new UsageError('--live and -q/--quiet contradict each other: give one');
    if (parsed.rest.length === 0) throw new UsageError('no command given: jouletrace run [options] -- <command> [args...]');
  } catch (e) {
    return reportUsageError('run', HELP, e);
  }
  const opts = parsed.options;
  const command = parsed.rest;
  const json = opts.json === true;
  const err = process.stderr;
  // Opt-in: the line is drawn on the terminal the command writes to, over whatever it wrote.
  const live = err.isTTY === true && opts.live === true;

  // Output files are opened before the command runs: a path that cannot be written fails now,
  // not once the command's work is done (or, for --csv, as an unhandled stream error). They are
  // written beside their place and moved there at the end, so a failed run leaves old ones as
  // they were.
  let files: OutputFiles<'output' | 'csv' | 'html'>;
  try {
    files = OutputFiles.open({ output: opts.output as string | undefined, csv: opts.csv as string | undefined, html: opts.html as string | undefined });
  } catch (e) {
    if (e instanceof UsageError) return reportUsageError('run', HELP, e);
    err.write(`jouletrace run: ${(e as Error).message}\n`);
    return EXIT_INTERNAL;
  }

  // The addon takes the command's exit status (watchExit): where it cannot be loaded, the run
  // fails here, as the sampler would, before the command starts.
  try {
    native();
  } catch (e) {
    files.discard();
    err.write(`jouletrace run: ${inFlagWords((e as Error).message, FLAGS)}\n`);
    return EXIT_INTERNAL;
  }

  // A FIFO with no reader yet is waited for, as a blocking open did (a writer started before
  // its reader: `run --csv f -- job & cat f`), once every other path is known to be writable,
  // with these handlers on: blocking, the open let no signal end the run.
  if (files.awaitingReaders().length > 0) {
    let signal: NodeJS.Signals | undefined;
    const stop = new AbortController();
    const onSignal = (sig: NodeJS.Signals) => {
      signal ??= sig;
      stop.abort();
    };
    const waitSignals = notIgnored(FATAL_SIGNALS);
    for (const sig of waitSignals) process.on(sig, onSignal);
    try {
      await files.waitForReaders(stop.signal);
    } catch (e) {
      files.discard();
      err.write(`jouletrace run: ${(e as Error).message}\n`);
      return EXIT_INTERNAL;
    } finally {
      for (const sig of waitSignals) process.off(sig, onSignal);
    }
    if (signal !== undefined) {
      const fifos = files.awaitingReaders().join(', ');
      files.discard();
      err.write(`jouletrace run: ${signal} arrived ${fifos ? `while waiting for a reader of ${fifos}` : 'before the command started'}; the command did not run\n`);
      return exitStatus(null, signal);
    }
  }

  // The command starts behind a tiny shell that waits for a line on a pipe from jouletrace, then
  // execs it, so the tracker is attached before the command runs its first instruction or forks
  // anything. Held stopped (SIGSTOP) instead, it was let go by the SIGCONT that the shell's `fg`
  // and `bg` send to the whole job after Ctrl-Z: the command ran during start-up or --calibrate.
  // A pipe that closes unwritten (jouletrace gone) lets the shell end without running it.
  // Signals ignored at start-up are ignored again there: libuv sets every one back to its default
  // in a child, and nohup's SIGHUP ended the command.
  // Without a controlling terminal (systemd, cron, CI), a signal sent to jouletrace's process
  // group reached the command as well, and again when passed on: a program that takes a second
  // SIGTERM as "quit now" skipped its clean-up. The command gets a process group (and session)
  // of its own then, and each signal from jouletrace alone. With one, even in the background, it
  // stays in jouletrace's group: in a session of its own, a background job's command read the
  // keys typed to the shell (no SIGTTIN off its controlling terminal) and ran on past Ctrl-Z.
  const ownGroup = !hasControllingTerminal();
  const ignored = ignoredAtStart();
  const wrapper = `${ignored.length > 0 ? `trap '' ${ignored.join(' ')}; ` : ''}read go <&3 && exec 3<&- "$@"`;
  const child = spawn('/bin/sh', ['-c', wrapper, 'jouletrace-run', ...command], { stdio: ['inherit', 'inherit', 'inherit', 'pipe'], detached: ownGroup });
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  // Signals for jouletrace: not those ignored at start-up, which stay ignored (main.ts).
  const signals = notIgnored(FATAL_SIGNALS);
  // Until the forwarders below are on, a signal for jouletrace ends the run before the command
  // starts. Left to its default action (or to the output files' handler, which raises it again),
  // it killed jouletrace and left the wrapper behind.
  let startupSignal: NodeJS.Signals | undefined;
  let killChild: ((sig: NodeJS.Signals) => void) | undefined;
  const onStartupSignal = (sig: NodeJS.Signals) => {
    startupSignal ??= sig;
    killChild?.('SIGKILL');
  };
  for (const sig of signals) process.on(sig, onStartupSignal);
  const endStartup = () => {
    for (const sig of signals) process.off(sig, onStartupSignal);
  };
  if (child.pid === undefined) {
    const e = await spawnError;
    endStartup();
    err.write(`jouletrace run: cannot start /bin/sh: ${e.message}\n`);
    files.discard();
    return EXIT_INTERNAL;
  }
  const pid = child.pid;
  const watch = watchExit(child, pid);
  const exited = watch.exited;
  killChild = watch.kill;
  const gate = child.stdio[3] as Writable;
  gate.on('error', () => {}); // EPIPE: the wrapper is gone, which `exited` tells
  // In a group of its own, no signal for jouletrace's group reaches the command: if jouletrace
  // ends first (an error), the command's group ends with it rather than run on unwatched.
  const endGroup = () => {
    if (watch.done()) return;
    try {
      process.kill(-pid, 'SIGTERM');
      process.kill(-pid, 'SIGCONT'); // a stopped process gets it once continued
    } catch {
      // gone already
    }
  };
  if (ownGroup) process.on('exit', endGroup);
  // Ends the run before the command started: the waiting wrapper is killed, no file is written.
  const abandon = async (message: string, opened?: { sampler?: Sampler; csv?: Writable; collector?: ReportCollector }, status = EXIT_INTERNAL): Promise<number> => {
    watch.kill('SIGKILL');
    gate.destroy();
    await exited;
    endStartup();
    opened?.collector?.stop();
    opened?.sampler?.close();
    opened?.csv?.destroy();
    files.discard();
    err.write(`jouletrace run: ${message}\n`);
    return status;
  };
  const startupAbandoned = () => `${startupSignal} arrived before the command started; it did not run`;

  const samplerOptions: SamplerOptions = { intervalUs, ...paths };
  // Only --csv reads samples (the report reads totals and threads). Without it a ring would only
  // hold memory, and once full count every sample past its size as lost (totals are exact).
  if (opts.csv === undefined) samplerOptions.ringCapacity = 0;
  if (source !== undefined) samplerOptions.source = source;
  if (threadsOpt !== undefined) samplerOptions.threads = threadsOpt;
  if (threadsOpt !== 'off') {
    samplerOptions.pid = pid;
    if (threadsOpt !== 'procfs') samplerOptions.followChildren = true;
    if (maxThreads !== undefined) samplerOptions.maxThreads = maxThreads;
  }
  let sampler: Sampler | undefined;
  try {
    sampler = new Sampler(samplerOptions);
    if (baseline.watts !== undefined) setBaselineOption(sampler, baseline.watts);
  } catch (e) {
    return abandon(inFlagWords((e as Error).message, FLAGS), { sampler });
  }
  const stats0 = sampler.stats();
  const backend = stats0.threads.backend;
  const notes: string[] = [];
  // Already on procfs: its advice to use --threads procfs is left out.
  if (stats0.threads.fallbackReason) notes.push(inFlagWords(stats0.threads.fallbackReason, FLAGS.filter((f) => f !== 'threads')));
  if (backend === 'procfs') notes.push('procfs tracks the command\'s own process only; its children count as "other"');
  if (sampler.notCounting.length > 0) {
    const names = sampler.notCounting.map((d) => `${d.domain}-${d.package}`).join(', ');
    notes.push(`${names} left out: listed by ${sampler.source} but not counting here (\`jouletrace probe\` shows it)`);
  }
  if (sampler.skipped.length > 0) {
    notes.push(`${sampler.skipped.map((s) => s.source).join(', ')} unavailable here (\`jouletrace probe\` says why and how to fix it)`);
  }
  if (baseline.calibrateS !== undefined) {
    // The command waits, blocked on its pipe, using no CPU: the machine's idle power is measured
    // without it.
    err.write(`jouletrace run: measuring idle power for ${baseline.calibrateS} s before the command starts: keep the machine quiet\n`);
    const calibration = sampler.calibrateBaseline({ durationMs: Math.round(baseline.calibrateS * 1000) }).catch((e: Error) => e);
    // A signal meanwhile kills the waiting wrapper (onStartupSignal): the run ends at once.
    const b = await Promise.race([calibration, exited.then(() => undefined)]);
    if (b === undefined || b instanceof Error) {
      if (startupSignal !== undefined) return abandon(startupAbandoned(), { sampler }, exitStatus(null, startupSignal));
      return abandon(b instanceof Error ? inFlagWords(b.message, FLAGS) : 'the command ended before it started', { sampler });
    }
    notes.push(`baseline (idle) power measured over ${baseline.calibrateS} s before the command started: ${b.watts.map((w) => `${w.domain}-${w.package} ${fmtWatts(w.watts)}${w.estimated ? ' (estimated)' : ''}`).join(', ')}`);
  } else if (backend !== 'off' && !stats0.estimated && !((baseline.watts ?? 0) > 0)) {
    notes.push(noBaselineNote('the tree'));
  }

  const csv = files.stream('csv');
  if (csv) {
    csv.on('error', (e) => {
      if (files.readerGone('csv', e)) return; // `--csv /dev/stdout | head`: the rest goes nowhere
      err.write(`jouletrace run: cannot write ${opts.csv}: ${e.message}\n`);
      files.fail('csv');
    });
    const cols = sampler.domains.map((d) => `${d.domain}-${d.package}`);
    csv.write(
      ['time_s', 'seq', 'late', 'estimated', ...cols.map((c) => `${c}_joules`), ...(backend !== 'off' ? cols.map((c) => `${c}_tree_joules`) : [])].join(',') + '\n',
    );
  }
  const units = sampler.domains.map((d) => d.unitJoules);
  let startNs: bigint | undefined;
  const drainCsv = () => {
    if (!csv) return;
    const rows: string[] = [];
    for (const s of sampler.read()) {
      startNs ??= sampler.totals().startNs;
      const cells = [
        (Number(s.timeNs - startNs) / 1e9).toFixed(6),
        String(s.seq),
        s.late ? '1' : '0',
        s.estimated ? '1' : '0',
        ...s.readings.map((r) => String(r.joules)),
      ];
      if (backend !== 'off') cells.push(...s.readings.map((r, i) => (r.parts ? String(r.parts.process * units[i]) : '')));
      rows.push(cells.join(','));
    }
    if (rows.length) csv.write(rows.join('\n') + '\n');
  };

  const collector = typeof opts.html === 'string' ? new ReportCollector(sampler, { title: 'jouletrace run', subtitle: command.join(' ') }) : undefined;
  const watcher = new ProcessTreeWatcher(pid, command);
  try {
    sampler.start();
  } catch (e) {
    return abandon(inFlagWords((e as Error).message, FLAGS), { sampler, csv });
  }
  collector?.start();
  // A signal that arrived while the tracker was being attached (the sampler made and started,
  // synchronously: 85 ms here) waits for the event loop to read it: without a turn of the loop
  // here, it reached the forwarders below, and the command, just let go. Two turns: between two
  // check phases the loop polls, which reads it, wherever this runs now.
  for (let i = 0; i < 2; i++) await new Promise((resolve) => setImmediate(resolve));
  if (startupSignal !== undefined) return abandon(startupAbandoned(), { sampler, csv, collector }, exitStatus(null, startupSignal));
  if (watch.done()) return abandon('the command ended before it started', { sampler, csv, collector });

  // Signals for jouletrace go to the command, which ends the run. The terminal sends SIGINT,
  // SIGQUIT and SIGHUP to its whole foreground process group, the command included: passed on
  // again, a program that takes a second Ctrl-C as "quit now" would skip its clean-up. A command
  // in a group of its own gets none of those but from jouletrace.
  let passedOn: NodeJS.Signals | undefined;
  const forward = (sig: NodeJS.Signals) => () => {
    if (!ownGroup && TERMINAL_SIGNALS.includes(sig) && inTerminalForeground()) return;
    passedOn = sig;
    watch.kill(sig);
  };
  const forwarded = signals.map((sig) => [sig, forward(sig)] as const);
  for (const [sig, fn] of forwarded) process.on(sig, fn);
  endStartup(); // after the forwarders are on: a signal between the two would find no handler

  gate.end('\n'); // the wrapper execs the command
  const t0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  // The tree is walked in /proc every 100 ms, to read each process's command line while it
  // lives; the sampler's list is read for the processes the walk cannot find (an orphan
  // re-parented before it was seen): every 500 ms, or less often where it costs more than 2 % of
  // that time. It reads each live thread's name in /proc: 40 ms for 3000 threads.
  let listDue = 0n;
  const poller = setInterval(() => {
    let tracked: ThreadEnergy[] | undefined;
    if (backend !== 'off' && process.hrtime.bigint() >= listDue) {
      const before = process.hrtime.bigint();
      tracked = sampler.threads();
      const took = process.hrtime.bigint() - before;
      listDue = before + (took * 50n > 500_000_000n ? took * 50n : 500_000_000n);
    }
    watcher.poll(tracked);
    drainCsv();
  }, 100);
  let prevTotals = sampler.totals();
  const liveTimer = live
    ? setInterval(() => {
        const cur = sampler.totals();
        const dt = Number(cur.timeNs - prevTotals.timeNs) / 1e9;
        if (dt <= 0) return;
        const watts = cur.readings.map((r, i) => `${r.domain}-${r.package} ${fmtWatts((r.joules - prevTotals.readings[i].joules) / dt)}`);
        prevTotals = cur;
        const el = Number(process.hrtime.bigint() - t0) / 1e9;
        const line = ` jouletrace: ${fmtSeconds(el)}  ${watts.join('  ')}${sampler.domains.some((d) => d.estimated) ? ' (estimated)' : ''}`;
        err.write(`\r\x1b[2K${line.slice(0, Math.max(20, (err.columns || 80) - 1))}`);
      }, 250)
    : undefined;

  const result = await exited;
  if (ownGroup) {
    process.off('exit', endGroup);
    // A signal for jouletrace's group would have reached the whole tree, not the command alone: a
    // shell killed by it leaves the child it waited for running. What is left of the command's
    // group gets it once the command has gone, where the command died of it (or exited 128 + N,
    // as a shell that ends on it says so): one it handled and lived through (SIGUSR2, SIGHUP to
    // reload) killed its background children when it exited, however much later.
    if (passedOn !== undefined && (result.signal === passedOn || result.code === exitStatus(null, passedOn))) {
      try {
        process.kill(-pid, passedOn);
      } catch {
        // nothing left
      }
    }
  }
  const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
  clearInterval(poller);
  if (liveTimer) {
    clearInterval(liveTimer);
    err.write('\r\x1b[2K');
  }
  // No wait for a sample after the exit: stop() takes a final one, and the tracker counts a
  // thread's running stint up to each sample, its last switch seen or not. Waiting a sampling
  // interval or two added idle time and energy to the run (2 s of it at --interval 1s).
  // The sampler first: its final sample, taken at stop(), is the collector's last point (it
  // polls at the end of each run, until its own stop()).
  sampler.stop();
  const cpu = process.cpuUsage(cpu0);
  const cpuWallUs = Number(process.hrtime.bigint() - t0) / 1e3;
  collector?.stop();
  for (const [sig, fn] of forwarded) process.off(sig, fn);
  drainCsv();
  // Settled when the stream has closed (or, on this process's own descriptor, which it leaves
  // open, finished): a write that fails late (the header's, with a command that exits at once)
  // is reported by 'error' before that; end()'s callback can come first.
  const csvDone = csv
    ? new Promise<void>((resolve) => {
        finished(csv, () => resolve());
        csv.end();
      })
    : Promise.resolve();

  const totals = sampler.totals();
  const durationS = Number(totals.timeNs - totals.startNs) / 1e9 || wallS;
  const stats = sampler.stats();
  const still = (stats.timing.countersStillUs?.longest ?? 0) / 1e6;
  if (!stats.estimated && still >= COUNTERS_STILL_NOTE_S) notes.push(countersStillNote(sampler.source, still));
  const threads = backend !== 'off' ? sampler.threads() : [];
  const readErrors = readErrorsNote(stats, threads.reduce((a, t) => a + t.unmeasuredNs, 0), 'marked below');
  if (readErrors !== null) notes.push(readErrors);
  if (stats.threads.droppedThreads > 0) notes.push(droppedThreadsNote(stats.threads.droppedThreads, maxThreads ?? DEFAULT_MAX_THREADS, 'the tree'));
  watcher.poll(backend !== 'off' ? threads : undefined);
  const attribution = backend !== 'off' ? sampler.attribution() : null;
  const exitCode = result.status ?? null;
  const res: RunResult = {
    command,
    exitCode,
    ...(result.error !== undefined ? { statusError: result.error } : {}),
    signal: result.signal,
    durationS,
    source: sampler.source,
    estimated: stats.estimated,
    intervalUs,
    domains: totals.readings.map((r) => ({ domain: r.domain, package: r.package, joules: r.joules, watts: durationS > 0 ? r.joules / durationS : 0 })),
    tree: attribution
      ? {
          backend,
          followsChildren: backend === 'bpf',
          domains: attribution.domains,
          joules: attribution.process,
          baseline: attribution.baseline,
          other: attribution.other,
          total: attribution.total,
          maxThreads: maxThreads ?? DEFAULT_MAX_THREADS,
          droppedThreads: stats.threads.droppedThreads,
        }
      : null,
    processes: processTable(threads, watcher, backend === 'bpf'),
    threads: threads.map((t) => ({ tid: t.tid, pid: t.pid, name: t.name, onCpuNs: t.onCpuNs, joules: t.joules, unmeasuredNs: t.unmeasuredNs, exited: t.exited })),
    sampler: {
      samples: stats.timing.samples,
      achievedRateHz: stats.timing.achievedRateHz,
      dropped: stats.ring.dropped,
      missedDeadlines: stats.timing.missedDeadlines,
      readErrors: stats.timing.readErrors,
      counterRestarts: stats.timing.counterRestarts,
      readErrorsByDomain: stats.timing.byDomain.map((d) => ({ domain: d.domain, package: d.package, readErrors: d.readErrors })),
      jitterUs: stats.timing.jitterUs && { p50: stats.timing.jitterUs.p50, p99: stats.timing.jitterUs.p99, max: stats.timing.jitterUs.max },
      cpuPercent: stats.timing.cpuPercent,
      jouletraceCpuPercent: cpuWallUs > 0 ? (100 * (cpu.user + cpu.system)) / cpuWallUs : 0,
    },
    notes,
  };

  if (collector) {
    // A thread's name is its comm when first seen, often the shell's before an exec: the
    // report names main threads after their process's command instead.
    // By argv[0], not the command line's first word: a program's path may hold spaces.
    for (const t of threads) {
      const program = t.tid === t.pid ? watcher.program(t.pid) : undefined;
      if (program) collector.labelThread(t.pid, t.tid, program.split('/').pop() || program);
    }
    const est = res.estimated ? ' (estimated)' : '';
    const data = collector.data({
      attribution: attribution ?? undefined,
      summary: [
        ['command', command.join(' ')],
        ['exit status', exitCode === null ? 'unknown' : String(exitCode)],
        ...res.domains.map((d): [string, string] => [`${d.domain}-${d.package}`, `${fmtJoules(d.joules)}, ${fmtWatts(d.watts)} average${est}`]),
        ...(res.tree ? [['process tree', `${fmtJoules(res.tree.joules)} in ${processCount(res.processes)} process(es)${est}`] as [string, string]] : []),
        ['samples', `${res.sampler.samples} (${res.sampler.dropped} dropped), ${res.sampler.jitterUs ? `jitter p99 ${res.sampler.jitterUs.p99.toFixed(1)} µs` : 'no jitter yet'}`],
      ],
      notes,
    });
    const e = await files.write('html', renderReport(data));
    if (e) err.write(`jouletrace run: cannot write ${opts.html}: ${e.message}\n`);
  }
  sampler.close();
  await csvDone;

  const text = json ? JSON.stringify(res, null, 2) + '\n' : formatSummary(res, top, typeof opts.output === 'string' ? false : colorEnabled(err));
  let written = true;
  let summaryLost = false;
  if (files.fd('output') !== undefined) {
    const e = await files.write('output', text);
    if (e) err.write(`jouletrace run: cannot write ${opts.output}: ${e.message}\n`);
    written = e === undefined;
  } else if (json) process.stdout.write(text);
  else {
    // Failed for another reason than a reader gone (`2>&1 | head`), a full disk (2>/dev/full)
    // say, the summary is lost: the run fails, as with a report that stdout cannot take. Where
    // stderr cannot be written, nothing can say so.
    const e = await new Promise<NodeJS.ErrnoException | null | undefined>((resolve) => err.write(text, resolve));
    summaryLost = e != null && e.code !== 'EPIPE';
  }
  const failed = files.failed();
  files.commit();
  failed.push(...files.unplaced);
  if (failed.length > 0) {
    // The command's status would say all went well: this one says that jouletrace failed.
    err.write(`jouletrace run: not written: ${failed.join(', ')}; the command exited with ${exitCode ?? 'an unknown status'}\n`);
    if (!written || files.isUnplaced('output')) err.write(text);
    return EXIT_INTERNAL;
  }
  if (exitCode === null) {
    // Never a success that no one saw: the status is not the command's, and says jouletrace failed.
    err.write(`jouletrace run: the command's exit status could not be read (${result.error}); exiting ${EXIT_INTERNAL}\n`);
    return EXIT_INTERNAL;
  }
  return summaryLost ? EXIT_INTERNAL : exitCode;
}
