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

/** The process's stat line, parsed; null when it is gone. */
export function readProcStat(pid: number | string): ProcStat | null {
  let s: string;
  try {
    s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The name is in parentheses and may hold spaces and parentheses itself.
  const open = s.indexOf('(');
  const close = s.lastIndexOf(')');
  const f = s.slice(close + 2).split(' ');
  // After the name: state(0) ppid(1) ... utime(11) stime(12) ... starttime(19)
  return { name: s.slice(open + 1, close), state: f[0], ticks: Number(f[11]) + Number(f[12]), start: Number(f[19]) };
}

/**
 * Whether the process started at `start` (ProcStat.start) is gone: no longer there, exited and
 * not yet reaped, or its pid reused. A leader thread that exited while others run reads as a
 * zombie too; the process lives on in those threads.
 */
export function processGone(pid: number, start: number | undefined): boolean {
  const st = readProcStat(pid);
  if (st === null || st.start !== start) return true;
  if (st.state !== 'Z' && st.state !== 'X') return false;
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return true;
  }
  return !tids.some((tid) => {
    const state = tid === String(pid) ? 'Z' : readProcStat(`${pid}/task/${tid}`)?.state;
    return state !== undefined && state !== 'Z' && state !== 'X';
  });
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
