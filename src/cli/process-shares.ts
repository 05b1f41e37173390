// `jouletrace top` without --pid: package power shared among processes by CPU time. The shares
// are of the machine's whole CPU time, so idle time and time that no process listed accounts
// for (processes that ended during the refresh, interrupts) keep theirs in rows of their own:
// shared among the processes seen, an idle machine's power went to whichever of them ran at all
// (top itself, with the whole 12 W).
import type { CpuTicks } from './proc-stat';

/** A process as /proc shows it: its name, utime + stime and start time, in clock ticks. */
export interface ProcessTicks {
  name: string;
  ticks: number;
  /** Start time after boot: with the pid, it names one process (a reused pid has another). */
  start: number;
}

export interface ProcessShare {
  pid: number;
  name: string;
  /** Clock ticks of CPU time in this refresh. */
  ticks: number;
  watts: number;
  /** Since the first refresh, of this process (pid and start time) only. */
  joules: number;
}

export interface RestShare {
  ticks: number;
  watts: number;
  joules: number;
}

export interface SharesStep {
  processes: ProcessShare[];
  /** Idle CPU time's share (idle, iowait, steal). */
  idle: RestShare;
  /** Busy time no process listed accounts for: processes gone before the read, interrupts. */
  other: RestShare;
}

/**
 * Splits each refresh's package power by CPU time. Each process gets watts × its ticks / the
 * machine's ticks; the idle time's share and the busy time left over go to `idle` and `other`,
 * so that all of them add up to the watts given.
 */
export class ProcessShares {
  #procs: Map<number, ProcessTicks>;
  #cpu: CpuTicks;
  // Keyed by pid and start time: a pid taken by a new process starts from nothing.
  #joules = new Map<string, number>();
  #idleJoules = 0;
  #otherJoules = 0;

  constructor(procs: Map<number, ProcessTicks>, cpu: CpuTicks) {
    this.#procs = procs;
    this.#cpu = cpu;
  }

  /** One refresh: the processes and CPU time read now, and the package's watts over `dt` seconds. */
  step(procs: Map<number, ProcessTicks>, cpu: CpuTicks, watts: number, dt: number): SharesStep {
    const busy = Math.max(0, cpu.busy - this.#cpu.busy);
    const idle = Math.max(0, cpu.idle - this.#cpu.idle);
    this.#cpu = cpu;
    const listed: Array<{ pid: number; key: string; name: string; d: number }> = [];
    const live = new Set<string>();
    let seen = 0;
    for (const [pid, v] of procs) {
      const before = this.#procs.get(pid);
      const key = `${pid}:${v.start}`;
      live.add(key);
      // Not by name: kernel workers rename themselves as they take work (kworker/u8:2-writeback
      // → …-ext4-rsv-conversion), and their lifetime CPU would count as this refresh's. A new
      // process (or pid) started within the refresh: its whole life is in it.
      const d = before && before.start === v.start ? Math.max(0, v.ticks - before.ticks) : v.ticks;
      if (d > 0 || this.#joules.has(key)) listed.push({ pid, key, name: v.name, d });
      seen += d;
    }
    this.#procs = procs;
    for (const key of this.#joules.keys()) if (!live.has(key)) this.#joules.delete(key);

    // Per-process and machine figures are read apart and rounded apart: the processes may
    // claim a little more than the machine's busy time, never a share above the whole.
    const busyAll = Math.max(busy, seen);
    const all = busyAll + idle;
    // No tick in the refresh (a machine whose /proc/stat stood still): no share can be told.
    const share = (ticks: number) => (all > 0 ? (watts * ticks) / all : 0);
    const processes = listed.map((x): ProcessShare => {
      const w = share(x.d);
      const joules = (this.#joules.get(x.key) ?? 0) + w * dt;
      this.#joules.set(x.key, joules);
      return { pid: x.pid, name: x.name, ticks: x.d, watts: w, joules };
    });
    const idleWatts = share(idle);
    const otherWatts = all > 0 ? share(busyAll - seen) : watts;
    this.#idleJoules += idleWatts * dt;
    this.#otherJoules += otherWatts * dt;
    return {
      processes,
      idle: { ticks: idle, watts: idleWatts, joules: this.#idleJoules },
      other: { ticks: busyAll - seen, watts: otherWatts, joules: this.#otherJoules },
    };
  }
}
