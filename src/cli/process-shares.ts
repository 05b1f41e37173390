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
  /** Null where the package's reads failed: no figure (see SharesEnergy). */
  watts: number | null;
  /** Since the first refresh, of this process (pid and start time) only. */
  joules: number;
}

export interface RestShare {
  ticks: number;
  watts: number | null;
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
 * The package's energy for a refresh. `watts` over `dt` seconds, since the last refresh that
 * had a figure (longer than this refresh where its reads failed before: the energy their first
 * good read brought, which is shared by the CPU time over that whole stretch). 'held': its reads
 * failed in this refresh, and its energy comes later: no figure, and the CPU time is kept to
 * share it then. 'lost': the energy of a stretch of failed reads was lost (a counter started
 * again): no figure, and the next refresh starts afresh.
 */
export type SharesEnergy = { watts: number; dt: number } | 'held' | 'lost';

/**
 * Splits each refresh's package power by CPU time. Each process gets watts × its ticks / the
 * machine's ticks; the idle time's share and the busy time left over go to `idle` and `other`,
 * so that all of them add up to the watts given.
 */
export class ProcessShares {
  // As of the last refresh (each row's CPU time in this one), and as of the last refresh whose
  // energy was known (the CPU time the next energy is shared by): the same, but where reads failed.
  #procs: Map<number, ProcessTicks>;
  #cpu: CpuTicks;
  #energyProcs: Map<number, ProcessTicks>;
  #energyCpu: CpuTicks;
  // Keyed by pid and start time: a pid taken by a new process starts from nothing.
  #joules = new Map<string, number>();
  #idleJoules = 0;
  #otherJoules = 0;

  constructor(procs: Map<number, ProcessTicks>, cpu: CpuTicks) {
    this.#procs = this.#energyProcs = procs;
    this.#cpu = this.#energyCpu = cpu;
  }

  /** One refresh: the processes and CPU time read now, and the package's energy (see SharesEnergy). */
  step(procs: Map<number, ProcessTicks>, cpu: CpuTicks, energy: SharesEnergy): SharesStep {
    const now = ticksSince(this.#procs, this.#cpu, procs, cpu);
    const measured = typeof energy === 'object';
    // The CPU time the energy is shared by: since the last refresh with a figure.
    const window = measured && this.#energyProcs !== this.#procs ? ticksSince(this.#energyProcs, this.#energyCpu, procs, cpu) : now;
    this.#procs = procs;
    this.#cpu = cpu;
    if (energy !== 'held') {
      this.#energyProcs = procs;
      this.#energyCpu = cpu;
    }
    const live = new Set<string>();
    for (const [pid, v] of procs) live.add(`${pid}:${v.start}`);
    for (const key of this.#joules.keys()) if (!live.has(key)) this.#joules.delete(key);

    // Per-process and machine figures are read apart and rounded apart: the processes may
    // claim a little more than the machine's busy time, never a share above the whole.
    const busyAll = Math.max(window.busy, window.seen);
    const all = busyAll + window.idle;
    // No tick in the refresh (a machine whose /proc/stat stood still): no share can be told.
    const share = (ticks: number): number | null => (!measured ? null : all > 0 ? (energy.watts * ticks) / all : 0);
    const add = (joules: number, w: number | null) => joules + (w ?? 0) * (measured ? energy.dt : 0);
    const processes: ProcessShare[] = [];
    for (const [pid, v] of procs) {
      const key = `${pid}:${v.start}`;
      const d = now.ticks.get(key) ?? 0;
      const e = window.ticks.get(key) ?? 0;
      if (!(d > 0 || e > 0 || this.#joules.has(key))) continue;
      const w = share(e);
      const joules = add(this.#joules.get(key) ?? 0, w);
      this.#joules.set(key, joules);
      processes.push({ pid, name: v.name, ticks: d, watts: w, joules });
    }
    const idleWatts = share(window.idle);
    const otherWatts = !measured ? null : all > 0 ? share(busyAll - window.seen) : energy.watts;
    this.#idleJoules = add(this.#idleJoules, idleWatts);
    this.#otherJoules = add(this.#otherJoules, otherWatts);
    const nowBusy = Math.max(now.busy, now.seen);
    return {
      processes,
      idle: { ticks: now.idle, watts: idleWatts, joules: this.#idleJoules },
      other: { ticks: nowBusy - now.seen, watts: otherWatts, joules: this.#otherJoules },
    };
  }
}

// Each process's CPU ticks between two reads, by pid and start time, their sum, and the
// machine's busy and idle ticks.
function ticksSince(
  beforeProcs: Map<number, ProcessTicks>,
  beforeCpu: CpuTicks,
  procs: Map<number, ProcessTicks>,
  cpu: CpuTicks,
): { ticks: Map<string, number>; seen: number; busy: number; idle: number } {
  const ticks = new Map<string, number>();
  let seen = 0;
  for (const [pid, v] of procs) {
    const before = beforeProcs.get(pid);
    // Not by name: kernel workers rename themselves as they take work (kworker/u8:2-writeback
    // → …-ext4-rsv-conversion), and their lifetime CPU would count as this refresh's. A new
    // process (or pid) started within the refresh: its whole life is in it.
    const d = before && before.start === v.start ? Math.max(0, v.ticks - before.ticks) : v.ticks;
    ticks.set(`${pid}:${v.start}`, d);
    seen += d;
  }
  return { ticks, seen, busy: Math.max(0, cpu.busy - beforeCpu.busy), idle: Math.max(0, cpu.idle - beforeCpu.idle) };
}
