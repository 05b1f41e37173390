// /proc/<pid>/stat, as the CLI reads it: name, state, CPU ticks and start time.
import * as fs from 'node:fs';

export interface ProcStat {
  name: string;
  /** R, S, D, Z (exited, not yet reaped), ... */
  state: string;
  /** utime + stime, in clock ticks. */
  ticks: number;
  /** Start time after boot, in clock ticks: with the pid, it names one process (pids are reused). */
  start: number;
}

/**
 * The process's stat line, parsed; null when it is gone (ENOENT, ESRCH). Any other error
 * (EMFILE, ENFILE, ENOMEM, EACCES) is thrown: it says nothing of the process. `proc`: where
 * procfs is (tests give a tree of their own).
 */
export function readProcStat(pid: number | string, proc = '/proc'): ProcStat | null {
  let s: string;
  try {
    s = fs.readFileSync(`${proc}/${pid}/stat`, 'utf8');
  } catch (e) {
    if (isGone(e)) return null;
    throw e;
  }
  // The name is in parentheses and may hold spaces and parentheses itself.
  const open = s.indexOf('(');
  const close = s.lastIndexOf(')');
  const f = s.slice(close + 2).split(' ');
  // After the name: state(0) ppid(1) ... utime(11) stime(12) ... starttime(19)
  return { name: s.slice(open + 1, close), state: f[0], ticks: Number(f[11]) + Number(f[12]), start: Number(f[19]) };
}

/** Whether a read of /proc/PID/... failed because the process is gone: ENOENT, no such pid (or tid); ESRCH, it went between the open and the read. */
export function isGone(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ESRCH';
}

/**
 * What /proc says of the process started at `start` (ProcStat.start): `running`; `exited` (no
 * longer there); `zombie` (exited, not yet reaped); `reused` (its pid another process's); or
 * `unknown` where its files could not be read for another reason (out of file descriptors, of
 * memory, not allowed): the process may well run on, as the native exit watch takes it. A
 * leader thread that exited while others run reads as a zombie too; the process lives on in
 * those threads.
 */
export function processState(pid: number, start: number, proc = '/proc'): 'running' | 'exited' | 'zombie' | 'reused' | 'unknown' {
  let st: ProcStat | null;
  try {
    st = readProcStat(pid, proc);
  } catch {
    return 'unknown';
  }
  if (st === null) return 'exited';
  if (st.start !== start) return 'reused';
  if (st.state !== 'Z' && st.state !== 'X') return 'running';
  let tids: string[];
  try {
    tids = fs.readdirSync(`${proc}/${pid}/task`);
  } catch (e) {
    return isGone(e) ? 'zombie' : 'unknown';
  }
  let unread = false;
  for (const tid of tids) {
    if (tid === String(pid)) continue; // the zombie leader
    let state: string | undefined;
    try {
      state = readProcStat(`${pid}/task/${tid}`, proc)?.state;
    } catch {
      unread = true;
      continue;
    }
    if (state !== undefined && state !== 'Z' && state !== 'X') return 'running';
  }
  return unread ? 'unknown' : 'zombie';
}

/** Whether /proc says the process started at `start` is gone: exited, a zombie, or its pid reused. Not when it cannot tell. */
export function processGone(pid: number, start: number, proc = '/proc'): boolean {
  const state = processState(pid, start, proc);
  return state === 'exited' || state === 'zombie' || state === 'reused';
}

/**
 * For a command's --pid: the process's start time, which with the pid names it from then on (its
 * pid may be another's by the time it is looked at again); undefined, after a line on stderr,
 * when it is not there, has exited and not been reaped (its series would only ever hold the rest),
 * or its stat cannot be read.
 */
export function watchedProcessStart(command: string, pid: number): number | undefined {
  let st: ProcStat | null;
  try {
    st = readProcStat(pid);
  } catch (e) {
    process.stderr.write(`jouletrace ${command}: cannot read /proc/${pid}/stat: ${(e as Error).message}\n`);
    return undefined;
  }
  if (st === null) {
    process.stderr.write(`jouletrace ${command}: no process ${pid}\n`);
    return undefined;
  }
  if (processGone(pid, st.start)) {
    process.stderr.write(`jouletrace ${command}: process ${pid} has exited (its parent has not reaped it yet)\n`);
    return undefined;
  }
  return st.start;
}

export interface CpuTicks {
  /** user + nice + system + irq + softirq, over all CPUs, in clock ticks. */
  busy: number;
  /** idle + iowait + steal: time no work of this machine ran (steal is another guest's). */
  idle: number;
}

/** The machine's CPU time from /proc/stat's first line, split as the model source splits it. */
export function readCpuTicks(file = '/proc/stat'): CpuTicks {
  const line = fs.readFileSync(file, 'utf8').split('\n', 1)[0];
  // cpu user nice system idle iowait irq softirq steal [guest guest_nice: inside user and nice]
  const f = line.trim().split(/\s+/).slice(1, 9).map(Number);
  if (!line.startsWith('cpu ') || f.length < 8 || f.some((x) => !Number.isFinite(x))) {
    throw new Error(`${file}: no "cpu" line first, not a /proc/stat file`);
  }
  return { busy: f[0] + f[1] + f[2] + f[5] + f[6], idle: f[3] + f[4] + f[7] };
}
