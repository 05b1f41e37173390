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
