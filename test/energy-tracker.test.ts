// The accumulation behind the exporters' counters: cumulative readings that restart at every
// sampler start() become totals that never go down.
import { describe, expect, it } from 'vitest';
import { EnergyTracker, Monotonic, PowerWindow, type EnergyReading } from '../src/energy-tracker';
import { Sampler } from '../src/sampler';

describe('Monotonic', () => {
  it('adds each increase within a run and starts afresh from zero at a new run id', () => {
    const m = new Monotonic();
    m.beginRun(1n);
    expect(m.update('pkg', 2)).toBe(2);
    expect(m.update('pkg', 5)).toBe(3);
    m.beginRun(1n); // the same run: nothing forgotten
    expect(m.update('pkg', 6)).toBe(1);
    m.beginRun(2n); // restarted: its readings count from zero again, past the last run's too
    expect(m.update('pkg', 9)).toBe(9);
    m.beginRun(3n);
    expect(m.update('pkg', 4)).toBe(4);
    expect(m.total('pkg')).toBe(19);
  });

  it('counts a reading below the last one as a restart the run id missed', () => {
    const m = new Monotonic();
    m.beginRun(1n);
    m.update('pkg', 8);
    expect(m.update('pkg', 3)).toBe(3);
    expect(m.total('pkg')).toBe(11);
  });

  it('knows a key read at zero (so that exporters show it) and an unknown key as 0', () => {
    const m = new Monotonic();
    m.beginRun(1n);
    m.update('idle', 0);
    expect(m.total('idle')).toBe(0);
    expect(m.total('never')).toBe(0);
  });

  it('forgets the last readings of keys it is not told to keep, and keeps their totals', () => {
    const m = new Monotonic();
    m.beginRun(1n);
    m.update('t1', 5);
    m.update('t2', 7);
    m.retain(new Set(['t2']));
    // t1 came back (a reused tid): its reading is counted whole, not against 5.
    expect(m.update('t1', 2)).toBe(2);
    expect(m.update('t2', 9)).toBe(2);
    expect(m.total('t1')).toBe(7);
    expect(m.total('t2')).toBe(9);
  });

  it('without totals, returns the increases and holds nothing per key beyond the last reading', () => {
    const m = new Monotonic(false);
    m.beginRun(1n);
    expect(m.update('t1', 5)).toBe(5);
    expect(m.update('t1', 8)).toBe(3);
    expect(m.total('t1')).toBe(0);
    m.beginRun(2n);
    expect(m.update('t1', 1)).toBe(1);
    expect(m.total('t1')).toBe(0);
  });
});

describe('PowerWindow', () => {
  // joules: accumulated since the exporter began; runJoules: since the run's start (all of it, unless given).
  const reading = (run: bigint, timeNs: bigint, joules: number, running = true, runJoules = joules, readErrors = 0): EnergyReading => ({
    run,
    timeNs,
    domains: [{ domain: 'package', package: 0, joules, runJoules, estimated: false, key: 'package:0', readErrors }],
    machine: joules,
    parts: null,
    estimated: false,
    running,
    readErrors,
  });
  const S = 1_000_000_000n;

  it('measures nothing before the sampler starts, then from its start, over windows of at least the minimum', () => {
    const w = new PowerWindow(S / 2n);
    // A collection before start() reads times of 0: no window may start there.
    expect(w.update(reading(0n, 0n, 0)).size).toBe(0);
    const t0 = 5000n * S; // the machine has been up for 5,000 s
    // The first window as well: 6 ms after the start, one counter step over them read 12.46 W.
    expect(w.update(reading(t0, t0 + S / 10n, 2.5)).size).toBe(0);
    // 0.5 s after the start: 6 J / 0.5 s, the energy before the last update included.
    expect(w.update(reading(t0, t0 + S / 2n, 6)).get('package:0')).toBeCloseTo(12);
    // 0.1 s later: too short a window; the previous figure stands.
    expect(w.update(reading(t0, t0 + (6n * S) / 10n, 7)).get('package:0')).toBeCloseTo(12);
    // 0.5 s after the last window: (11 − 6) J / 0.5 s.
    expect(w.update(reading(t0, t0 + S, 11)).get('package:0')).toBeCloseTo(10);
  });

  it('shows no power while the sampler is stopped, and measures a new run from its start', () => {
    const w = new PowerWindow(S / 2n);
    const t0 = 100n * S;
    expect(w.update(reading(t0, t0 + S, 12)).get('package:0')).toBeCloseTo(12);
    // Stopped at t0 + 1 s: the accumulated joules stand still, and so would 12 W.
    // Read once more while stopped, with the run's last stretch counted (13 J): not the new run's.
    expect(w.update(reading(t0, t0 + S, 13, false)).size).toBe(0);
    // Started again at t0 + 10 s; 1 s later 12 J more: 12 W, not 12 J over the 10 s since the last window.
    const t1 = t0 + 10n * S;
    expect(w.update(reading(t1, t1 + S, 25, true, 12)).get('package:0')).toBeCloseTo(12);
  });

  // Reads that fail keep the domain's last value: the window read exactly 0 W, and the next one
  // the whole catch-up over its own half second (4.64 W, 0, 0, 13.75 W on an emulated powercap).
  it('shows no power for a window whose reads failed and whose energy did not move, and averages the next over both', () => {
    const w = new PowerWindow(S / 2n);
    const t0 = 100n * S;
    expect(w.update(reading(t0, t0 + S, 5)).get('package:0')).toBeCloseTo(5);
    // Reads fail from here: 1 s without a joule, 40 failed reads.
    expect(w.update(reading(t0, t0 + 2n * S, 5, true, 5, 40)).size).toBe(0);
    // Still failing, 10 ms later (a second scraper): still nothing.
    expect(w.update(reading(t0, t0 + 2n * S + S / 100n, 5, true, 5, 41)).size).toBe(0);
    // Back: 10 J caught up at once, over the 2 s since the last figure.
    expect(w.update(reading(t0, t0 + 3n * S, 15, true, 15, 45)).get('package:0')).toBeCloseTo(5);
    // Failed reads in a window whose energy moved (some reads went through): a figure.
    expect(w.update(reading(t0, t0 + 4n * S, 18, true, 18, 50)).get('package:0')).toBeCloseTo(3);
    // A counter that stands still without a failed read reads 0 W, as it is.
    expect(w.update(reading(t0, t0 + 5n * S, 18, true, 18, 50)).get('package:0')).toBe(0);
  });

  // A failing dram counter hid the package's figure: the window was judged by the source's
  // failed reads in all, so a package that stood still (an idle, deep-sleeping socket) beside it
  // showed nothing instead of 0 W, and a dram that stood still while its reads failed had a
  // figure once the package's reads failed instead.
  it("judges each domain's window by that domain's own failed reads", () => {
    const w = new PowerWindow(S / 2n);
    const t0 = 100n * S;
    const two = (timeNs: bigint, pkg: number, pkgErrors: number, dram: number, dramErrors: number): EnergyReading => ({
      run: t0,
      timeNs,
      domains: [
        { domain: 'package', package: 0, joules: pkg, runJoules: pkg, estimated: false, key: 'package:0', readErrors: pkgErrors },
        { domain: 'dram', package: 0, joules: dram, runJoules: dram, estimated: false, key: 'dram:0', readErrors: dramErrors },
      ],
      machine: pkg,
      parts: null,
      estimated: false,
      running: true,
      readErrors: pkgErrors + dramErrors,
    });
    expect([...w.update(two(t0 + S, 5, 0, 2, 0))]).toEqual([
      ['package:0', 5],
      ['dram:0', 2],
    ]);
    // The dram's reads fail and it stands still; the package stands still too, read without a
    // failure: 0 W for the package, nothing for the dram.
    expect([...w.update(two(t0 + 2n * S, 5, 0, 2, 30))]).toEqual([['package:0', 0]]);
    // Now the package's reads fail while it stands still, and the dram's no longer: the dram
    // catches up over both seconds, the package has no figure.
    expect([...w.update(two(t0 + 3n * S, 5, 10, 4, 30))]).toEqual([['dram:0', 1]]);
    // Both read again: the package's figure covers the two seconds since its last one.
    expect([...w.update(two(t0 + 4n * S, 9, 10, 5, 30))]).toEqual([
      ['package:0', 2],
      ['dram:0', 1],
    ]);
  });

  // The exporter reads a run's last stretch at its end, not through this window: a new run's
  // window starts from the energy before it, and no earlier run's figure stands for it.
  it.each([
    ['measures a new run from the energy before it', 12, 10n, S, 26, 6, 6],
    ["never shows the last run's power for a new one", 18, 5n, (6n * S) / 10n, 25.2, 7.2, 12],
  ])("%s, though the run's end was never seen here", (_what, first, gapS, into, joules, runJoules, watts) => {
    const w = new PowerWindow(S / 2n);
    const t0 = 100n * S;
    expect(w.update(reading(t0, t0 + S, first)).get('package:0')).toBeCloseTo(first);
    const t1 = t0 + gapS * S;
    // 0.2 s into the new run: no figure yet, and none of the last run's either.
    expect(w.update(reading(t1, t1 + S / 5n, joules - runJoules + runJoules / 3, true, runJoules / 3)).size).toBe(0);
    expect(w.update(reading(t1, t1 + into, joules, true, runJoules)).get('package:0')).toBeCloseTo(watts);
  });
});

describe('EnergyTracker', () => {
  // A sampler as the tracker reads it: threads() as the native side lists them, where the oldest
  // exited threads are folded into one '(exited threads)' entry with tid 0.
  function fakeSampler(threads: () => Array<{ id?: number; tid: number; name: string; joules: number }>, closed = () => false) {
    const live = () => {
      if (closed()) throw new Error('closed');
    };
    return {
      domains: [{ domain: 'package', package: 0, estimated: false }],
      stats: () => ({ threads: { backend: 'bpf' }, timing: { readErrors: 0 } }),
      totals: () => (live(), { startNs: 1n, timeNs: 2n, readings: [{ domain: 'package', package: 0, joules: 100, estimated: false }] }),
      attribution: () => (live(), { process: 10, baseline: 20, other: 70 }),
      threads: () => (live(), threads().map((t) => ({ ...t, id: t.id ?? t.tid }))),
      onRunEnd: () => () => {},
    } as unknown as Sampler;
  }

  it("gives each domain's reading its own failed reads from stats().timing.byDomain", () => {
    const sampler = {
      domains: [
        { domain: 'package', package: 0, estimated: false },
        { domain: 'dram', package: 0, estimated: false },
      ],
      running: true,
      stats: () => ({
        threads: { backend: 'off' },
        timing: {
          readErrors: 7,
          byDomain: [
            { domain: 'package', package: 0, readErrors: 0, unread: false },
            { domain: 'dram', package: 0, readErrors: 7, unread: false },
          ],
        },
      }),
      totals: () => ({
        startNs: 1n,
        timeNs: 2n,
        readings: [
          { domain: 'package', package: 0, joules: 10, estimated: false },
          { domain: 'dram', package: 0, joules: 3, estimated: false },
        ],
      }),
      onRunEnd: () => () => {},
    } as unknown as Sampler;
    const r = new EnergyTracker(sampler).read();
    expect(r.readErrors).toBe(7);
    expect(r.domains.map((d) => [d.key, d.readErrors])).toEqual([
      ['package:0', 0],
      ['dram:0', 7],
    ]);
  });

  it('counts energy once when exited threads are folded into "(exited threads)"', () => {
    let list = [
      { tid: 11, name: 'worker', joules: 3 },
      { tid: 12, name: 'worker', joules: 4 },
      { tid: 13, name: 'main', joules: 5 },
    ];
    const t = new EnergyTracker(fakeSampler(() => list));
    const named = new Set<string>();
    expect(Object.fromEntries(t.readThreads(10, named))).toEqual({ worker: 7, main: 5 });
    // 11 and 12 exited and were folded (7 J, plus 1 J that 12 spent before it exited).
    list = [
      { tid: 13, name: 'main', joules: 6 },
      { tid: 0, name: '(exited threads)', joules: 8 },
    ];
    const r = Object.fromEntries(t.readThreads(10, named));
    // The 1 J the fold added names no thread: "other".
    expect(r).toEqual({ worker: 7, main: 6, other: 1 });
    expect(Object.values(r).reduce((a, b) => a + b, 0)).toBe(14); // 8 J of exited threads and 6 J of main, once
  });

  // A process that starts and ends thousands of threads: the fold row, listed first by its
  // energy, took a topThreads slot for good and read about 0 (its threads' energy is under their
  // own rows), while the threads that run went to "other".
  it('gives the "(exited threads)" row no series of its own, leaving the slots to threads', () => {
    let list = [
      { id: 0, tid: 0, name: '(exited threads)', joules: 50 },
      { id: 5, tid: 21, name: 'worker', joules: 4 },
      { id: 6, tid: 22, name: 'io', joules: 1 },
    ];
    const t = new EnergyTracker(fakeSampler(() => list));
    const named = new Set<string>();
    expect(Object.fromEntries(t.readThreads(1, named))).toEqual({ other: 51, worker: 4 });
    expect([...named]).toEqual(['worker']);
    // io exited and was folded with 1 J more: 1 J to "other", and the sum stays the rows' energy.
    list = [
      { id: 0, tid: 0, name: '(exited threads)', joules: 52 },
      { id: 5, tid: 21, name: 'worker', joules: 6 },
    ];
    const r = Object.fromEntries(t.readThreads(1, named));
    expect(r).toEqual({ other: 52, worker: 6 });
    expect(Object.values(r).reduce((a, b) => a + b, 0)).toBe(58);
  });

  // The kernel gives a tid again once its thread has exited, and the exited thread's row stays
  // listed beside the new one's. By tid, the two rows' readings took turns as the last one.
  it('counts a reused tid once per thread', () => {
    let list = [{ id: 2, tid: 11, name: 'worker', joules: 3 }];
    const t = new EnergyTracker(fakeSampler(() => list));
    const named = new Set<string>();
    expect(Object.fromEntries(t.readThreads(10, named))).toEqual({ worker: 3 });
    list = [
      { id: 2, tid: 11, name: 'worker', joules: 4 },
      { id: 3, tid: 11, name: 'worker', joules: 0.5 },
    ];
    expect(Object.fromEntries(t.readThreads(10, named))).toEqual({ worker: 4.5 });
    list = [
      { id: 3, tid: 11, name: 'worker', joules: 2 },
      { id: 2, tid: 11, name: 'worker', joules: 4 },
    ];
    expect(Object.fromEntries(t.readThreads(10, named))).toEqual({ worker: 6 });
    expect(Object.fromEntries(t.readThreads(10, named))).toEqual({ worker: 6 });
  });

  // The sampler's totals start afresh at each start(): what a run measured after the exporter's
  // last read was lost with a restart (a scrape every 15 s: up to 15 s of energy each time).
  it("counts a run's energy after the last read, read at the run's end", () => {
    const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'off' });
    const spin = (ms: number) => {
      const end = performance.now() + ms;
      while (performance.now() < end);
    };
    try {
      const t = new EnergyTracker(sampler);
      sampler.start();
      spin(50);
      const early = t.read().domains[0].joules;
      spin(150);
      sampler.stop();
      const run1 = sampler.totals().readings[0].joules;
      expect(run1).toBeGreaterThan(early);
      // Past the first run's total: below it, a reading the tracker took for run 1's would
      // still count whole, as a restart the run id missed.
      sampler.start();
      for (let i = 0; i < 100 && sampler.totals().readings[0].joules <= run1 * 1.5; i++) spin(20);
      sampler.stop();
      const run2 = sampler.totals().readings[0].joules;
      expect(run2).toBeGreaterThan(run1);
      expect(t.read().domains[0].joules).toBeCloseTo(run1 + run2, 9);
      // Closed, it reads no more at the ends of runs: a third run counts only from its reading on.
      t.close();
      sampler.start();
      spin(50);
      sampler.stop();
      sampler.start();
      // The run goes on between the reads: the tracker's figure is bracketed by the sampler's.
      const lo = sampler.totals().readings[0].joules;
      const before = t.read().domains[0].joules;
      const hi = sampler.totals().readings[0].joules;
      expect(before).toBeGreaterThanOrEqual(run1 + run2 + lo - 1e-9);
      expect(before).toBeLessThanOrEqual(run1 + run2 + hi + 1e-9);
      sampler.stop();
    } finally {
      sampler.close();
    }
  });

  it('reads as empty, not an error, when its sampler was closed before any read', () => {
    let closed = false;
    const t = new EnergyTracker(fakeSampler(() => [], () => closed));
    closed = true;
    expect(t.read()).toMatchObject({ domains: [], machine: 0, parts: null });
  });
});
