// ReportCollector against a sampler whose figures the test sets: what it stores per poll, how it
// bounds that over a long run, and how it reads the sampler's folding of exited threads.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { RECORD_SAMPLE, ReportCollector } from '../src/report/collector';
import { renderReport } from '../src/report/render';
import { Sampler } from '../src/sampler';
import { createEmulatedPowercap } from './fixtures/emulated-devices';
import type { ReportData } from '../src/report/types';

interface FakeThread {
  /** The row's id in threads(); the tid where not given (0 is the folded row's). */
  id?: number;
  tid: number;
  pid: number;
  name: string;
  joules: number;
  onCpuNs: number;
  /** Of onCpuNs, the time no read measured; 0 where not given. */
  unmeasuredNs?: number;
}

interface FakeState {
  joules: number;
  threads: FakeThread[];
  /** The run's start and the last sample's time: set both to begin a new run. */
  startNs?: bigint;
  timeNs?: bigint;
  estimated?: boolean;
  /** The thread backend the sampler reports; 'bpf' where not given. */
  backend?: 'bpf' | 'procfs' | 'off';
}

// A sampler as the collector reads it: totals() moves on 200 ms at each call, threads() as the
// native side lists them (the oldest exited threads folded into '(exited threads)', tid 0).
function fakeSampler(state: FakeState) {
  state.startNs ??= 1_000_000_000n;
  state.timeNs ??= state.startNs;
  return {
    domains: [{ domain: 'package', package: 0, estimated: state.estimated ?? false }],
    source: 'fake',
    stats: () => ({ threads: { backend: state.backend ?? 'bpf' } }),
    totals: () => ({ startNs: state.startNs, timeNs: (state.timeNs! += 200_000_000n), readings: [{ domain: 'package', package: 0, joules: state.joules }] }),
    threads: () => state.threads.map((t) => ({ unmeasuredNs: 0, ...t, id: t.id ?? t.tid })),
    onRunEnd: () => () => {},
  } as unknown as Sampler;
}

// A new run `gapNs` after the last sample: the totals and threads() start again from zero.
function restart(state: FakeState, gapNs: bigint): void {
  state.startNs = state.timeNs! + gapNs;
  state.timeNs = state.startNs;
  state.joules = 0;
  for (const t of state.threads) [t.joules, t.onCpuNs] = [0, 0];
}

// Each drawn interval's start and measured seconds.
function widths(d: ReportData): { start: number[]; measured: number[] } {
  const start = d.time.map((_, i) => (i > 0 ? d.time[i - 1] : d.startS!));
  return { start, measured: d.time.map((t, i) => t - start[i] - (d.unmeasuredS?.[i] ?? 0)) };
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

// A report that draws every chart (threads, records, attribution, over 4 s), with markup in each text.
const X = '<b>x</b>&"\'';
const report = (over: Partial<ReportData> = {}): ReportData => ({
  version: 1,
  title: `title ${X}`,
  subtitle: `subtitle ${X}`,
  createdAt: `created ${X}`,
  source: `source ${X}`,
  estimated: false,
  durationS: 4,
  domains: [`package-0 ${X}`],
  startS: 0,
  time: [1, 2, 3, 4],
  watts: [[10, 20, 15, 12]],
  threads: [
    { label: `thread ${X} (11)`, pid: 10, tid: 11, joules: [0.5, 0.25, 1, 0.125] },
    { label: `other threads ${X}`, pid: 0, tid: 0, joules: [0.1, 0.2, 0.3, 0.4] },
  ],
  threadsTracked: true,
  cpuCores: [0.5, 1, 0.7, 0.2],
  records: [1, 2, 3].map((k) => ({ label: `GET /route ${X}`, joules: k * 1e-3, t: k, durationMs: 1 })),
  recordKind: 'request',
  attribution: { total: 10, process: 2.5, baseline: 1, other: 6.5, domains: [`package ${X}`] },
  summary: [[`row ${X}`, `value ${X}`]],
  notes: [`note ${X}`],
  ...over,
});

describe('ReportCollector storage', () => {
  it('refuses what is not a Sampler, naming the argument', () => {
    for (const [bad, shown] of [
      [null, 'null of type null'],
      [{ totals() {} }, '{} of type object'],
      [{ totals() {}, domains: [] }, '{"domains":[]} of type object'],
    ] as const) {
      expect(() => new ReportCollector(bad as unknown as Sampler)).toThrow(new TypeError(`Expected a Sampler for sampler but received ${shown}`));
    }
  });

  it('stores only the threads whose figures changed, and merges points past a few thousand', () => {
    // 300 exited threads stay listed, unchanged, for the whole run; two threads work.
    const threads: FakeThread[] = Array.from({ length: 300 }, (_, i) => ({ tid: 2000 + i, pid: 2000, name: 'cc1', joules: 0.01, onCpuNs: 1e6 }));
    const main = { tid: 100, pid: 100, name: 'main', joules: 0, onCpuNs: 0 };
    const worker = { tid: 101, pid: 100, name: 'worker', joules: 0, onCpuNs: 0 };
    threads.push(main, worker);
    const state = { joules: 0, threads };
    const c = new ReportCollector(fakeSampler(state), { periodMs: 200 });
    const polls = 10_000;
    for (let i = 0; i < polls; i++) {
      state.joules += 2;
      main.joules += 1;
      main.onCpuNs += 1e8;
      if (i % 2 === 0) worker.joules += 0.5;
      c.poll();
    }
    const d = c.data();
    expect(d.time.length).toBeLessThanOrEqual(2048);
    // The first poll stores every thread (all new); then two at most per point.
    expect(c.storedThreadFigures).toBeLessThanOrEqual(threads.length + 2 * 2048);
    expect(d.time.length).toBeGreaterThan(1000);
    expect(d.time[d.time.length - 1]).toBeCloseTo(polls * 0.2, 6);
    // The coarser points still add up: energy over the run, and each thread's.
    let drawn = 0;
    d.time.forEach((t, i) => (drawn += d.watts[0][i] * (t - (i > 0 ? d.time[i - 1] : d.startS!))));
    expect(drawn).toBeCloseTo(2 * (polls - 1), 6);
    expect(sum(d.threads.find((t) => t.tid === 100)!.joules)).toBeCloseTo(polls - 1, 6);
    expect(sum(d.threads.find((t) => t.tid === 101)!.joules)).toBeCloseTo(0.5 * (polls / 2 - 1), 6);
    expect(d.cpuCores[d.cpuCores.length - 1]).toBeCloseTo(0.5, 6);
  });

  it('counts energy once when exited threads are folded into "(exited threads)"', () => {
    const a = { tid: 11, pid: 10, name: 'worker', joules: 3, onCpuNs: 3e6 };
    const b = { tid: 12, pid: 10, name: 'worker', joules: 4, onCpuNs: 4e6 };
    const main = { tid: 10, pid: 10, name: 'main', joules: 0, onCpuNs: 0 };
    const state = { joules: 0, threads: [main, a, b] };
    const c = new ReportCollector(fakeSampler(state), { periodMs: 200 });
    c.poll(); // the reference point
    main.joules = 1;
    a.joules = 5; // 2 J since the last poll
    c.poll();
    // b and a exit and are folded, a after 1 J and 1 ms more: the entry holds 5 + 1 + 4 J and
    // 3 + 1 + 4 ms, of which 1 J and 1 ms are new since the last poll.
    main.joules = 2;
    state.threads = [main, { tid: 0, pid: 0, name: '(exited threads)', joules: 10, onCpuNs: 8e6 }];
    c.poll();
    const d = c.data();
    const total = sum(d.threads.map((t) => sum(t.joules)));
    // main 2 J, a 2 J, then 1 J under the folded entry: 5 J since the reference point, not 14.
    expect(total).toBeCloseTo(5, 9);
    expect(d.threads.find((t) => t.label.startsWith('(exited threads)'))!.joules).toEqual([0, 1]);
    // Their CPU time once too: 1 ms over the 0.2 s of the last interval.
    expect(d.cpuCores[1]).toBeCloseTo(1e6 / 1e9 / 0.2, 9);
  });
  // The kernel gives a tid again once its thread has exited (pid_max is 32,768 by default), and
  // the exited thread's row stays listed beside the new one's until it is folded.
  it('counts a reused tid once per thread, before and after the exited row is folded', () => {
    const main = { id: 1, tid: 10, pid: 10, name: 'main', joules: 0, onCpuNs: 0 };
    const first = { id: 2, tid: 11, pid: 10, name: 'worker', joules: 3, onCpuNs: 3e6 };
    const state = { joules: 0, threads: [main, first] };
    const c = new ReportCollector(fakeSampler(state), { periodMs: 200 });
    c.poll(); // the reference point
    // The first worker exits after 1 J more; a second one gets tid 11 and spends 0.5 J.
    const second = { id: 3, tid: 11, pid: 10, name: 'worker', joules: 0.5, onCpuNs: 5e5 };
    first.joules = 4;
    first.onCpuNs = 4e6;
    state.threads = [main, first, second];
    c.poll();
    // The first worker's row is folded; the second spends 1 J more.
    second.joules = 1.5;
    second.onCpuNs = 1.5e6;
    state.threads = [main, second, { id: 0, tid: 0, pid: 0, name: '(exited threads)', joules: 4, onCpuNs: 4e6 }];
    c.poll();
    const d = c.data();
    expect(d.threads.find((t) => t.tid === 11)!.joules).toEqual([1.5, 1]);
    expect(sum(d.threads.map((t) => sum(t.joules)))).toBeCloseTo(2.5, 9);
    expect(d.cpuCores[1]).toBeCloseTo(1e6 / 1e9 / 0.2, 9);
  });
});

// Thread time that no read measured is in no thread's joules: the report drew those rows with
// less energy than their CPU time had cost and said nothing, where `run` and `demo` mark them.
describe('ReportCollector, thread time no read measured', () => {
  it("says how much of the threads' time has no energy, counted once across a fold and a new run", () => {
    const main = { id: 1, tid: 10, pid: 10, name: 'main', joules: 0, onCpuNs: 0, unmeasuredNs: 0 };
    const worker = { id: 2, tid: 11, pid: 10, name: 'worker', joules: 1, onCpuNs: 1e6, unmeasuredNs: 0 };
    const state: FakeState = { joules: 0, threads: [main, worker] };
    const c = new ReportCollector(fakeSampler(state), { periodMs: 200 });
    c.poll();
    expect(c.data().threadsUnmeasuredS).toBeUndefined();
    expect(c.data().notes.join('\n')).not.toMatch(/no energy/);
    // Reads fail: 20 ms of main's time and 10 ms of the worker's are not measured.
    Object.assign(main, { joules: 1, onCpuNs: 40e6, unmeasuredNs: 20e6 });
    Object.assign(worker, { onCpuNs: 11e6, unmeasuredNs: 10e6 });
    c.poll();
    // The worker exits and is folded, with its 10 ms; main's grows by 5 ms.
    main.unmeasuredNs = 25e6;
    state.threads = [main, { id: 0, tid: 0, pid: 0, name: '(exited threads)', joules: 1, onCpuNs: 11e6, unmeasuredNs: 10e6 }];
    c.poll();
    // A new run starts from zero: 7 ms more of main's.
    restart(state, 1_000_000_000n);
    Object.assign(main, { unmeasuredNs: 7e6 });
    state.threads = [main];
    c.poll();
    const d = c.data();
    expect(d.threadsUnmeasuredS).toBeCloseTo(0.042, 12);
    expect(d.notes).toContain(
      "42.0 ms of the tracked threads' on-CPU time has no energy in these figures: no read measured it (reads failed to the end of a run, or a counter started again), so the threads' joules leave it out.",
    );
    const html = renderReport(d);
    expect(html).toContain('42.0 ms of the tracked threads&#39; on-CPU time has no energy');
    expect(() => renderReport({ ...d, threadsUnmeasuredS: '42' as unknown as number })).toThrow(/report\.threadsUnmeasuredS/);
  });
});

describe('ReportCollector over a long run', () => {
  // Merging pairs alone halved the old intervals while new polls came at full resolution: after
  // 24 h, the first 23.4 h were one interval and the last minutes 0.2 s each.
  it('keeps every interval about as wide as the others, and the sums', () => {
    const main = { tid: 100, pid: 100, name: 'main', joules: 0, onCpuNs: 0 };
    const state: FakeState = { joules: 0, threads: [main] };
    const c = new ReportCollector(fakeSampler(state), { periodMs: 200 });
    const polls = 40_000;
    for (let i = 0; i < polls; i++) {
      // 50 W for the first half of every 1000 polls, 10 W for the second.
      const w = i % 1000 < 500 ? 50 : 10;
      state.joules += w * 0.2;
      main.joules += w * 0.1;
      main.onCpuNs += 1e8;
      c.poll();
    }
    const d = c.data();
    const { measured } = widths(d);
    expect(d.time.length).toBeGreaterThan(500);
    expect(d.time.length).toBeLessThanOrEqual(2048);
    expect(Math.max(...measured) / Math.min(...measured)).toBeLessThanOrEqual(2);
    // Each half of a 200 s cycle still shows: ten intervals or more.
    expect(measured[0]).toBeLessThanOrEqual(10);
    expect(d.watts[0][0]).toBeCloseTo(50, 9);
    let drawn = 0;
    d.watts[0].forEach((w, i) => (drawn += w * measured[i]));
    expect(drawn).toBeCloseTo(state.joules - 50 * 0.2, 6);
    expect(sum(d.threads[0].joules)).toBeCloseTo(main.joules - 50 * 0.1, 6);
    for (const cores of d.cpuCores) expect(cores).toBeCloseTo(0.5, 9);
  });

  // Each run added a break and a first point that were never folded, and each merge doubled the
  // stride: after 24 h of 10 s runs 5 s apart, the first half was 5 intervals of about 2 h and
  // the last ones 5 to 10 s.
  it('keeps intervals about as wide as the others when the sampler is restarted every few seconds', () => {
    const state: FakeState = { joules: 0, threads: [], backend: 'off' };
    const c = new ReportCollector(fakeSampler(state), { periodMs: 200 });
    c.poll();
    const runs = (24 * 3600) / 15;
    for (let r = 0; r < runs; r++) {
      if (r > 0) restart(state, 5_000_000_000n);
      for (let p = 0; p < 50; p++) {
        state.joules += 10 * 0.2;
        c.poll();
      }
    }
    const d = c.data();
    const { start, measured } = widths(d);
    const width = d.time.map((t, i) => t - start[i]);
    expect(d.time.length).toBeLessThanOrEqual(2048);
    expect(d.time.length).toBeGreaterThan(1000);
    // 51.2 s (256 polls) and the breaks folded in with them: partly unmeasured, never a figure of 0 W.
    expect(Math.min(...width.slice(0, -1))).toBeGreaterThanOrEqual(51.2 - 1e-6);
    expect(Math.max(...width)).toBeLessThanOrEqual(2 * 51.2);
    expect(d.unmeasuredS!.filter((u, i) => u > 0 && measured[i] > 0).length).toBeGreaterThan(1000);
    for (const w of d.watts[0]) expect(w).toBeCloseTo(10, 6);
    let drawn = 0;
    d.watts[0].forEach((w, i) => (drawn += w * measured[i]));
    expect(drawn).toBeCloseTo(runs * 50 * 10 * 0.2, 3);
    // The first run is 10.2 s: from its start, and the reference poll before its 50.
    expect(d.durationS).toBeCloseTo(runs * 10 + 0.2, 6);
  });
});

describe('ReportCollector across a stop() and start() with time between', () => {
  // The first point of a later run was measured from the last of the one before: the time
  // between was drawn as 0 W, the threads as idle, and counted as measured.
  function twoRuns() {
    const main = { tid: 10, pid: 10, name: 'main', joules: 0, onCpuNs: 0 };
    const state: FakeState = { joules: 0, threads: [main] };
    const c = new ReportCollector(fakeSampler(state), { periodMs: 200 });
    // Run 1: 15 W, half a core; run 2, 3 s later: 20 W, a whole core.
    const run = (watts: number, cores: number) => {
      for (let i = 0; i < 5; i++) {
        state.joules += watts * 0.2;
        main.joules += watts * 0.1;
        main.onCpuNs += cores * 2e8;
        c.poll();
      }
    };
    run(15, 0.5);
    restart(state, 3_000_000_000n);
    run(20, 1);
    return c.data();
  }

  it('draws the time between as a break, measured from zero again at the new start', () => {
    const d = twoRuns();
    // 0.2 s is the first poll; the run-1 intervals end at 0.4 to 1.0; the gap; run 2 from 4.0.
    expect(d.time.map((t) => Number(t.toFixed(6)))).toEqual([0.4, 0.6, 0.8, 1, 4, 4.2, 4.4, 4.6, 4.8, 5]);
    expect(d.unmeasuredS).toEqual([0, 0, 0, 0, 3, 0, 0, 0, 0, 0]);
    expect(d.watts[0].map((w) => (Number.isNaN(w) ? 'gap' : Number(w.toFixed(6))))).toEqual([15, 15, 15, 15, 'gap', 20, 20, 20, 20, 20]);
    expect(d.threads[0].joules.map((j) => Number(j.toFixed(6)))).toEqual([1.5, 1.5, 1.5, 1.5, 0, 2, 2, 2, 2, 2]);
    expect(d.cpuCores.map((x) => (Number.isNaN(x) ? 'gap' : Number(x.toFixed(6))))).toEqual([0.5, 0.5, 0.5, 0.5, 'gap', 1, 1, 1, 1, 1]);
    // Measured: 1 s of run 1 (from its start), 1 s of run 2.
    expect(d.durationS).toBeCloseTo(2, 9);
    expect(d.elapsedS).toBeCloseTo(5, 9);
    // JSON keeps the gap as null, and a saved copy draws the same.
    const saved = JSON.parse(JSON.stringify(d)) as ReportData;
    expect(saved.watts[0][4]).toBeNull();
    expect(renderReport(saved)).toBe(renderReport(d));
  });

  // A record that ended while the sampler was stopped was counted in the next run's first
  // interval (a throughput spike) when added before the new run's first poll, and in the gap
  // when added after it.
  it('counts a record that ended between the runs in the gap, whenever it is added', () => {
    for (const when of ['during the stop', 'after the restart'] as const) {
      const state: FakeState = { joules: 0, threads: [] };
      const c = new ReportCollector(fakeSampler(state), { periodMs: 200 });
      for (let i = 0; i < 5; i++) c.poll();
      const stopNs = state.timeNs!;
      const add = () => {
        for (let i = 0; i < 100; i++) c.addRecord({ label: 'GET /x', joules: 0.1, endNs: stopNs + 1_000_000_000n, durationMs: 1 });
        // One in the new run's first interval (it starts 3 s after the stop; totals() moves 0.2 s).
        c.addRecord({ label: 'GET /x', joules: 0.1, endNs: stopNs + 3_100_000_000n, durationMs: 1 });
      };
      if (when === 'during the stop') add();
      restart(state, 3_000_000_000n);
      for (let i = 0; i < 5; i++) c.poll();
      if (when === 'after the restart') add();
      const d = c.data();
      const gap = d.unmeasuredS!.findIndex((u) => u > 0);
      expect(d.recordCounts![gap], when).toBe(100);
      expect(d.recordCounts![gap + 1], when).toBe(1);
      expect(sum(d.recordCounts!), when).toBe(101);
    }
  });

  it('draws the break in the paths, leaves it out of the proportionality bins, and says what was measured', () => {
    const html = renderReport(twoRuns());
    expect(html).toContain('<td>duration</td><td>measured 2.00 s of 5.00 s (the sampler was stopped in between)</td>');
    const section = (id: string) => new RegExp(`<section id="${id}">(.*?)</section>`, 's').exec(html)![1];
    const paths = (id: string, cls: string) => [...section(id).matchAll(new RegExp(`<path class="data ${cls}"[^>]* d="([^"]*)"`, 'g'))].map((m) => m[1]);
    // One power line in two pieces, and one thread area in two.
    expect(paths('power', 'line').map((p) => p.split('M').length - 1)).toEqual([2]);
    expect(paths('threads', 'area').map((p) => p.split('M').length - 1)).toEqual([2]);
    // No point at 0 W for the gap: the two runs' bins alone, 15 W at half a core and 20 W at one.
    expect(paths('proportionality', 'dots').map((p) => p.split('M').length - 1)).toEqual([2]);
    expect(section('proportionality')).toContain('no fit: too few one-second bins for a line');
  });
});

describe('ReportCollector records', () => {
  // A request or span the sampler stopped in was drawn as measured, its undercount unsaid.
  it('counts per label the records flagged incomplete, in its row and in the saved JSON', () => {
    const c = new ReportCollector(fakeSampler({ joules: 0, threads: [] }));
    c.poll();
    const rec = { label: 'work', joules: 0.25, endNs: 1_100_000_000n, durationMs: 20 };
    for (let i = 0; i < 5; i++) c.addRecord({ ...rec, incomplete: false }, 'span');
    c.addRecord({ ...rec, incomplete: true }, 'span');
    // Unmeasured, and so flagged incomplete too: counted once, as unmeasured.
    c.addRecord({ ...rec, joules: NaN, incomplete: true }, 'span');
    c.addRecord({ ...rec, label: 'other' }, 'span');
    const d = c.data();
    expect(d.recordLabels).toEqual([
      { label: 'work', count: 7, measured: 6, joules: 1.5, incomplete: 1 },
      { label: 'other', count: 1, measured: 1, joules: 0.25 },
    ]);
    const html = renderReport(JSON.parse(JSON.stringify(d)) as ReportData);
    expect(html).toContain('>n=6, mean 250.00 mJ, 1 incomplete, 1 unmeasured</text>');
    expect(html).toContain('>n=1, mean 250.00 mJ</text>');
    expect(() => c.addRecord({ ...rec, incomplete: 1 as never })).toThrow(new TypeError('Expected a boolean for record.incomplete but received 1 of type number'));
    const labels = [{ label: 'work', count: 1, measured: 1, joules: 1, incomplete: '1' }];
    expect(() => renderReport({ ...d, recordLabels: labels } as never)).toThrow(
      new TypeError('Expected a number for report.recordLabels[0].incomplete but received "1" of type string'),
    );
  });

  // Every record was kept (108 bytes each): past about 28 million, the report's string overflowed.
  it('keeps exact figures per label and a bounded, reproducible sample of its records', () => {
    const collect = () => {
      const c = new ReportCollector(fakeSampler({ joules: 0, threads: [] }));
      c.poll();
      for (let i = 0; i < 100_000; i++) {
        c.addRecord({ label: 'GET /many', joules: (1 + (i % 100)) * 1e-3, endNs: 1_100_000_000n + BigInt(i), durationMs: 1 });
        if (i % 10 === 0) c.addRecord({ label: 'GET /few', joules: i % 20 === 0 ? 0.5 : NaN, endNs: 1_100_000_000n, durationMs: 2 });
      }
      return c.data();
    };
    const d = collect();
    expect(d.recordLabels).toEqual([
      { label: 'GET /many', count: 100_000, measured: 100_000, joules: expect.closeTo(5050, 6) as number },
      { label: 'GET /few', count: 10_000, measured: 5000, joules: 2500 },
    ]);
    const many = d.records.filter((r) => r.label === 'GET /many');
    expect(many).toHaveLength(RECORD_SAMPLE);
    expect(d.records.filter((r) => r.label === 'GET /few')).toHaveLength(RECORD_SAMPLE);
    // A uniform sample: its mean near the true 50.5 mJ, every record's time on the axis.
    expect(sum(many.map((r) => r.joules)) / many.length).toBeGreaterThan(0.047);
    expect(sum(many.map((r) => r.joules)) / many.length).toBeLessThan(0.054);
    for (const r of many) expect(r.t).toBeGreaterThanOrEqual(0.1);
    // The same records give the same sample.
    expect(collect().records).toEqual(d.records);
    const html = renderReport(d);
    // The sample's note on a line of its own, under the row's figures.
    expect(html).toMatch(/>n=100000, mean 50\.50 mJ<\/text><text class="row-sub"[^>]*>percentiles from a sample of 2048</);
    expect(html).toMatch(/>n=5000, mean 500\.00 mJ, 5000 unmeasured<\/text><text class="row-sub"[^>]*>percentiles from a sample of 2048</);
  });

  it('counts every record, not the sample, in the throughput', () => {
    const state: FakeState = { joules: 0, threads: [] };
    const c = new ReportCollector(fakeSampler(state), { periodMs: 200 });
    c.poll(); // at 0.2 s
    // Four one-second bins at 1000 to 4000 requests a second, each costing 1 mJ over 5 W idle.
    for (let bin = 0; bin < 4; bin++) {
      const rate = 1000 * (bin + 1);
      for (let p = 0; p < 5; p++) {
        const end = state.timeNs! + 200_000_000n; // the next poll's time
        for (let i = 0; i < rate / 5; i++) c.addRecord({ label: 'GET /r', joules: 1e-3, endNs: end - BigInt(i), durationMs: 1 });
        state.joules += (5 + rate * 1e-3) * 0.2;
        c.poll();
      }
    }
    const d = c.data();
    expect(sum(d.recordCounts!)).toBe(10_000);
    expect(renderReport(d)).toContain('fit: 5.00 W at zero throughput + 1.00 mJ per extra request');
  });

  it('writes a fit whose power falls with throughput with a minus sign', () => {
    const state: FakeState = { joules: 0, threads: [] };
    const c = new ReportCollector(fakeSampler(state), { periodMs: 200 });
    c.poll();
    // 20 W less 1 mJ a request: 19, 18, 17, 16 W at 1000 to 4000 requests a second.
    for (let bin = 0; bin < 4; bin++) {
      const rate = 1000 * (bin + 1);
      for (let p = 0; p < 5; p++) {
        const end = state.timeNs! + 200_000_000n;
        for (let i = 0; i < rate / 5; i++) c.addRecord({ label: 'GET /r', joules: 1e-3, endNs: end - BigInt(i), durationMs: 1 });
        state.joules += (20 - rate * 1e-3) * 0.2;
        c.poll();
      }
    }
    expect(renderReport(c.data())).toContain('fit: 20.00 W at zero throughput − 1.00 mJ per extra request');
  });
});

describe('renderReport of many records', () => {
  // 100,000 labels drew a 45 MB page; a few million records overflowed the string.
  it('draws the top labels and one row for the rest, with a bounded number of dots', () => {
    const records = Array.from({ length: 100_000 }, (_, i) => ({ label: `GET /u/${i}`, joules: 1e-3 * (1 + (i % 97)), t: 1.5, durationMs: 1 }));
    const html = renderReport(report({ records }));
    expect(html.length).toBeLessThan(1_000_000);
    const labels = [...html.matchAll(/<text class="row-label"[^>]*>([^<]*)</g)].map((m) => m[1]);
    expect(labels).toHaveLength(20);
    // The 19 labels with the most joules (97 mJ each), then the rest.
    expect(labels[19]).toBe('other (99981 labels)');
    expect(labels.slice(0, 19).every((l) => Number(l.slice(7)) % 97 === 96)).toBe(true);
    expect(html).toContain('n=99981, mean ');
    const one = renderReport(report({ records: Array.from({ length: 1_000_000 }, (_, i) => ({ label: 'GET /a', joules: 1e-3 * (1 + (i % 97)), t: 1.5, durationMs: 1 })) }));
    expect(one.length).toBeLessThan(200_000);
    // Every record given counts; the dots are picked from them.
    expect(one).toContain('n=1000000, mean 49.00 mJ<');
  });

  // The rest's dots were shared out per label, rounded: a label of one record in 100,000 got
  // none, so the rest drew no median, and beside one large label its percentiles were that
  // label's alone.
  it("draws the rest's percentiles from every label in it, in proportion to its records", () => {
    const top = Array.from({ length: 19 }, (_, i) => ({ label: `GET /top/${i}`, joules: 1000, t: 1.5, durationMs: 1 }));
    // The distribution chart's own lines (the charts before it have grids too).
    const chart = (html: string) => html.slice(html.indexOf('aria-label="joules per request"'));
    const rowLines = (html: string, cls: string) => [...chart(html).matchAll(new RegExp(`<line class="${cls}" x1="([^"]*)"`, 'g'))].map((m) => Number(m[1]));
    const grid = (html: string) => rowLines(html, 'grid');
    // Many labels of one record each: a median for the rest too.
    const small = Array.from({ length: 100_000 }, (_, i) => ({ label: `GET /u/${i}`, joules: 1e-3, t: 1.5, durationMs: 1 }));
    const a = renderReport(report({ records: [...top, ...small] }));
    expect(rowLines(a, 'median')).toHaveLength(20);
    // 10^-3 J is the first decade drawn.
    expect(rowLines(a, 'median')[19]).toBeCloseTo(grid(a)[0], 1);
    // Half the rest's records at 1 mJ in one label, half at 100 mJ in 10,000 labels of 10.
    const big = Array.from({ length: 100_000 }, () => ({ label: 'GET /big', joules: 1e-3, t: 1.5, durationMs: 1 }));
    const many = Array.from({ length: 100_000 }, (_, i) => ({ label: `GET /m/${i % 10_000}`, joules: 0.1, t: 1.5, durationMs: 1 }));
    const b = renderReport(report({ records: [...top, ...big, ...many] }));
    const [decade3, , decade1] = grid(b);
    expect(rowLines(b, 'p99')[19]).toBeCloseTo(decade1, 1);
    const box = chart(b).match(/<rect class="box" x="([^"]*)" y="[^"]*" width="([^"]*)"/g)!.at(-1)!.match(/x="([^"]*)" y="[^"]*" width="([^"]*)"/)!;
    expect(Number(box[1])).toBeCloseTo(decade3, 1); // p25 at 1 mJ
    expect(Number(box[1]) + Number(box[2])).toBeCloseTo(decade1, 1); // p75 at 100 mJ
  });
});

describe('ReportCollector thread labels', () => {
  // Labels were kept by tid alone: a tid given again to a thread of a later process took the
  // first one's label.
  it('names a thread by its pid and tid, and by tid alone where no label has both', () => {
    const first = { tid: 11, pid: 10, name: 'node', joules: 1, onCpuNs: 1e6 };
    const later = { tid: 11, pid: 20, name: 'node', joules: 2, onCpuNs: 1e6 };
    const other = { tid: 12, pid: 20, name: 'node', joules: 3, onCpuNs: 1e6 };
    const state: FakeState = { joules: 0, threads: [] };
    const c = new ReportCollector(fakeSampler(state));
    c.poll();
    state.threads = [first, later, other];
    c.poll();
    [first.joules, later.joules, other.joules] = [2, 4, 6];
    c.poll();
    c.labelThread(10, 11, 'loader');
    c.labelThread(20, 11, 'server');
    c.labelThread(12, 'sampler');
    expect(c.data().threads.map((t) => [t.pid, t.label])).toEqual([
      [20, 'sampler (12)'],
      [20, 'server (11)'],
      [10, 'loader (11)'],
    ]);
  });
});

describe('ReportCollector, a short run', () => {
  it('says a run with thread tracking was too short for a per-thread chart, not that threads were off', () => {
    const main = { tid: 10, pid: 10, name: 'main', joules: 0, onCpuNs: 0 };
    const state = { joules: 0, threads: [main] };
    const c = new ReportCollector(fakeSampler(state), { periodMs: 200 });
    c.poll();
    state.joules = 1;
    main.joules = 0.5;
    c.poll(); // the poll at stop(): one interval in all
    const d = c.data();
    expect(d.time).toHaveLength(1);
    const html = renderReport(d);
    expect(html).toContain('This run was too short for a per-thread chart.');
    expect(html).not.toContain('No thread tracking');
    expect(d.threadsTracked).toBe(true);
    // A report saved before threadsTracked existed: threads off where it lists none.
    const { threadsTracked: _, ...saved } = d;
    expect(renderReport({ ...saved, threads: [] })).toContain('No thread tracking in this run (threads: off)');
  });
});

describe('ReportCollector without thread tracking', () => {
  // The proportionality chart fell back to "CPU cores kept busy", which nothing measured: every
  // bin at 0 cores and a fit "per busy core" (jouletrace run --threads off --html).
  it('draws no proportionality curve without records, rather than one against 0 busy cores', () => {
    const state: FakeState = { joules: 0, threads: [], backend: 'off' };
    const c = new ReportCollector(fakeSampler(state), { periodMs: 200 });
    for (let i = 0; i < 30; i++) {
      state.joules += 1 + (i % 7);
      c.poll();
    }
    const d = c.data();
    expect(d.threadsTracked).toBe(false);
    const section = (html: string) => /<section id="proportionality">(.*?)<\/section>/s.exec(html)![1];
    const prop = section(renderReport(d));
    expect(prop).toContain('No throughput to plot against: no records and no thread tracking in this run.');
    expect(prop).not.toContain('busy core');
    // With records, the same run draws requests per second.
    for (let i = 1; i <= 20; i++) c.addRecord({ label: 'GET /a', joules: 1e-3, endNs: 1_000_000_000n + BigInt(i) * 250_000_000n, durationMs: 1 });
    expect(section(renderReport(c.data()))).toContain('throughput (requests per second)');
  });
});

describe('ReportCollector options', () => {
  const sampler = fakeSampler({ joules: 0, threads: [] });
  const make = (options: unknown) => () => new ReportCollector(sampler, options as never);

  it('names the option and what it takes, before any poll', () => {
    expect(make(null)).toThrow(new TypeError('Expected an object for options but received null of type null'));
    expect(make({ title: 5 })).toThrow(new TypeError('Expected a string for options.title but received 5 of type number'));
    expect(make({ subtitle: ['a'] })).toThrow(new TypeError('Expected a string for options.subtitle but received ["a"] of type array'));
    expect(make({ periodMs: '100' })).toThrow(new TypeError('Expected a number between 50 and 5000 for options.periodMs but received "100" of type string'));
    expect(make({ periodMs: 10 })).toThrow(new RangeError('Expected a number between 50 and 5000 for options.periodMs but received 10 of type number'));
    for (const [value, kind] of [[-1, RangeError], [0, RangeError], [1.5, RangeError], [101, RangeError], ['x', TypeError]] as const) {
      expect(make({ maxThreads: value })).toThrow(kind);
      expect(make({ maxThreads: value })).toThrow(/^Expected an integer between 1 and 100 for options\.maxThreads but received /);
    }
    expect(make({ maxThread: 3 })).toThrow(new TypeError('Unknown option options.maxThread; known options are: periodMs, title, subtitle, maxThreads'));
  });

  // Bad input was taken, and renderReport() failed with a TypeError of its own at the end of
  // the run (or a BigInt RangeError, or a silent 'request' kind).
  it('checks records, thread labels and the extra data where they are given, naming the field', () => {
    const c = new ReportCollector(sampler);
    const rec = { label: 'GET /a', joules: 1e-3, endNs: 5_000_000_000n, durationMs: 1 };
    const add = (r: unknown, kind?: unknown) => () => c.addRecord(r as never, kind as never);
    expect(add(null)).toThrow(new TypeError('Expected an object for record but received null of type null'));
    expect(add({ ...rec, label: 42 })).toThrow(new TypeError('Expected a string for record.label but received 42 of type number'));
    expect(add({ ...rec, label: undefined })).toThrow(new TypeError('Expected a string for record.label but received undefined of type undefined'));
    const joules = 'a finite number of joules, 0 or more (NaN for one not measured) for record.joules';
    expect(add({ ...rec, joules: '0.5' })).toThrow(new TypeError(`Expected ${joules} but received "0.5" of type string`));
    const endNs = 'a bigint or a finite number (CLOCK_MONOTONIC ns, as process.hrtime.bigint() gives) for record.endNs';
    expect(add({ ...rec, endNs: undefined })).toThrow(new TypeError(`Expected ${endNs} but received undefined of type undefined`));
    expect(add({ ...rec, endNs: Infinity })).toThrow(new RangeError(`Expected ${endNs} but received Infinity of type number`));
    expect(add({ ...rec, durationMs: -1 })).toThrow(new RangeError('Expected a finite number of milliseconds, 0 or more for record.durationMs but received -1 of type number'));
    expect(add(rec, 'bogus')).toThrow(new RangeError(`Expected one of 'request', 'span' for kind but received "bogus" of type string`));
    expect(() => c.labelThread(1, 7 as never)).toThrow(new TypeError('Expected a string for label but received 7 of type number'));
    expect(() => c.labelThread(1, 1.5, 'x')).toThrow(new RangeError('Expected an integer between 0 and 4194304 for tid but received 1.5 of type number'));
    const data = (extra: unknown) => () => c.data(extra as never);
    expect(data({ summary: [['a', null]] })).toThrow(new TypeError('Expected a string for extra.summary[0][1] but received null of type null'));
    expect(data({ summary: [['a']] })).toThrow(new TypeError('Expected a [label, value] pair for extra.summary[0] but received ["a"] of type array'));
    expect(data({ notes: 'oops' })).toThrow(new TypeError('Expected an array of strings for extra.notes but received "oops" of type string'));
    expect(data({ notes: ['a', 2] })).toThrow(new TypeError('Expected a string for extra.notes[1] but received 2 of type number'));
    expect(data({ attribution: { total: 1, process: 1, baseline: 0, other: 0 } })).toThrow(
      new TypeError('Expected an array of strings for extra.attribution.domains but received undefined of type undefined'),
    );
    expect(data({ attribution: { total: 1, process: NaN, baseline: 0, other: 0, domains: [] } })).toThrow(
      new RangeError('Expected a finite number of joules, 0 or more for extra.attribution.process but received NaN of type number'),
    );
    expect(data({ sumary: [] })).toThrow(new TypeError('Unknown option extra.sumary; known options are: summary, notes, attribution, subtitle'));
    // Nothing refused was kept; a number as a summary value is written out; what is good draws.
    c.addRecord(rec, 'span');
    const d = c.data({ summary: [['requests', 1234]] as never, attribution: { total: 2, process: 1, baseline: 0.5, other: 0.5, domains: ['package'], extra: 1 } as never });
    expect(d.records.map((r) => r.label)).toEqual(['GET /a']);
    expect(d.recordKind).toBe('span');
    expect(d.summary).toEqual([['requests', '1234']]);
    expect(d.attribution).toEqual({ total: 2, process: 1, baseline: 0.5, other: 0.5, domains: ['package'] });
    expect(() => renderReport(d)).not.toThrow();
  });

  // A negative record made its label's total go down; an infinite one was counted unmeasured.
  it('takes joules that are NaN (not measured) or finite and 0 or more, and refuses the rest', () => {
    const c = new ReportCollector(sampler);
    const rec = { label: 'GET /a', joules: 1e-3, endNs: 5_000_000_000n, durationMs: 1 };
    const joules = 'a finite number of joules, 0 or more (NaN for one not measured) for record.joules';
    expect(() => c.addRecord({ ...rec, joules: -1e-3 })).toThrow(new RangeError(`Expected ${joules} but received -0.001 of type number`));
    expect(() => c.addRecord({ ...rec, joules: Infinity })).toThrow(new RangeError(`Expected ${joules} but received Infinity of type number`));
    expect(() => c.addRecord({ ...rec, joules: -Infinity })).toThrow(new RangeError(`Expected ${joules} but received -Infinity of type number`));
    for (const j of [NaN, 0, 1e-3]) c.addRecord({ ...rec, joules: j });
    expect(c.data().recordLabels).toEqual([{ label: 'GET /a', count: 3, measured: 2, joules: 1e-3, zero: 1 }]);
  });

  it('takes every option, and none', () => {
    expect(make(undefined)).not.toThrow();
    expect(make({ periodMs: 50, title: 't', subtitle: 's', maxThreads: 1 })).not.toThrow();
  });
});

describe('renderReport, what it writes', () => {
  it('escapes every text it is given', () => {
    const html = renderReport(report());
    expect(html).not.toContain('<b>');
    expect(html).not.toMatch(/x<\/b>/);
    const escaped = '&lt;b&gt;x&lt;/b&gt;&amp;&quot;&#39;';
    for (const text of ['title ', 'subtitle ', 'created ', 'source ', 'package-0 ', 'thread ', 'other threads ', 'GET /route ', 'package ', 'row ', 'value ', 'note ']) {
      expect(html).toContain(text + escaped);
    }
    // An "other" row of records, made of many labels, too.
    const many = Array.from({ length: 30 }, (_, i) => ({ label: `GET /${i} ${X}`, joules: 1e-3, t: 1, durationMs: 1 }));
    const more = renderReport(report({ records: many }));
    expect(more).not.toContain('<b>');
    expect(more).toContain(`GET /0 ${escaped}`);
  });

  // A saved copy is plain JSON: a number field holding markup was written into the page as it
  // was (and the rest's row summed such fields as strings); a string where a number belongs
  // failed with a bare TypeError (durationS.toFixed is not a function).
  it('refuses a saved report whose fields have the wrong type, naming the field', () => {
    const saved = JSON.parse(JSON.stringify(report())) as ReportData;
    const evil = '</text></svg><script>alert(1)</script>';
    const labels = [{ label: 'GET /a', count: 1, measured: evil, joules: 1e-3 }];
    expect(() => renderReport({ ...saved, recordLabels: labels } as never)).toThrow(
      new TypeError(`Expected a number for report.recordLabels[0].measured but received ${JSON.stringify(evil)} of type string`),
    );
    expect(() => renderReport({ ...saved, durationS: '4' } as never)).toThrow(new TypeError('Expected a number for report.durationS but received "4" of type string'));
    expect(() => renderReport({ ...saved, watts: [[1, '2']] } as never)).toThrow(new TypeError('Expected a number or null for report.watts[0][1] but received "2" of type string'));
    expect(() => renderReport({ ...saved, records: [{ label: 'a', joules: 1, t: '1' }] } as never)).toThrow(
      new TypeError('Expected a number for report.records[0].t but received "1" of type string'),
    );
    expect(() => renderReport({ ...saved, summary: [['a', 5]] } as never)).toThrow(new TypeError('Expected a string for report.summary[0][1] but received 5 of type number'));
    expect(() => renderReport({ ...saved, notes: undefined } as never)).toThrow(new TypeError('Expected an array for report.notes but received undefined of type undefined'));
    expect(() => renderReport(null as never)).toThrow(new TypeError('Expected an object for report but received null of type null'));
    // What JSON makes of NaN (null) draws, and the rest's row sums its labels as numbers.
    const many = Array.from({ length: 30 }, (_, i) => ({ label: `GET /${i}`, count: 2, measured: 1, joules: 1e-3 }));
    const records = many.map((l) => ({ label: l.label, joules: 1e-3, t: 1, durationMs: 1 }));
    const html = renderReport({ ...saved, cpuCores: [null, 1, 0.7, 0.2] as never, recordLabels: many, records });
    expect(html).toContain('n=11, mean 1.00 mJ, 11 unmeasured');
  });

  // A domain without its series failed with "Cannot read properties of undefined"; a series short
  // of the time axis wrote NaN into the power line.
  it('refuses a saved report whose series do not line up with its domains and time axis, naming the field', () => {
    const saved = JSON.parse(JSON.stringify(report())) as ReportData;
    const refused = (over: Partial<ReportData>, message: string) => expect(() => renderReport({ ...saved, ...over })).toThrow(new TypeError(message));
    refused({ watts: [] }, 'Expected 1 series, one per entry of report.domains, for report.watts but received 0');
    refused({ domains: ['package-0', 'dram-0'] }, 'Expected 2 series, one per entry of report.domains, for report.watts but received 1');
    refused({ watts: [[10, 20, 15]] }, 'Expected 4 values, one per entry of report.time, for report.watts[0] but received 3');
    refused({ unmeasuredS: [0, 0, 0, 0, 0] }, 'Expected 4 values, one per entry of report.time, for report.unmeasuredS but received 5');
    refused({ cpuCores: [0.5, 1, 0.7] }, 'Expected 4 values, one per entry of report.time, for report.cpuCores but received 3');
    // None without thread tracking, and none at all without a point.
    expect(renderReport({ ...saved, cpuCores: [], threads: [], threadsTracked: false })).toContain('<section id="power">');
    expect(renderReport({ ...saved, time: [], watts: [[]], cpuCores: [], threads: [] })).toContain('This run was too short to draw power over time');
  });

  // Labels and their figures were drawn right-aligned at x = 180 whatever their width: a route
  // name past about 28 characters lost its start, and a sampled row (every demo's GET /cheap)
  // lost "n=..., mean ..." off the chart's left, its figures and "; percentiles from a sample of
  // 2048" being one line.
  it('makes the label column as wide as its texts, and shortens a label past its cap, with a title', () => {
    const long = 'POST /api/v1/customers/:customerId/orders/:orderId/items';
    const huge = `GET /${Array.from({ length: 12 }, (_, i) => `segment${i}/:param${i}`).join('/')}`;
    const rec = (label: string, joules: number) => ({ label, joules, t: 1, durationMs: 1 });
    const records = [...Array.from({ length: 2048 }, (_, i) => rec('GET /cheap', 1e-4 * (1 + (i % 7)))), rec(long, 0.01)];
    const recordLabels = [
      { label: 'GET /cheap', count: 12620, measured: 12000, joules: 12000 * 2.44e-4 },
      { label: long, count: 1, measured: 1, joules: 0.01 },
    ];
    const texts = (html: string) =>
      [...html.matchAll(/<text class="row-(?:label|sub)" x="([^"]*)"[^>]*>([^<]*)</g)].map((m) => ({ x: Number(m[1]), text: m[2] }));
    const shown = texts(renderReport(report({ records, recordLabels })));
    // Each text's width in headless Chromium's DejaVu Sans (Debian's default, the widest of the
    // common UI fonts), at the chart's 13 and 11 units: each is drawn whole, ending at x.
    const dejaVu: Record<string, number> = {
      'GET /cheap': 74.3,
      'n=12000, mean 244.0 µJ, 620 unmeasured': 238.5,
      'percentiles from a sample of 2048': 189.2,
      [long]: 379.2,
      'n=1, mean 10.00 mJ': 113.8,
    };
    expect(shown.map((t) => t.text)).toEqual(Object.keys(dejaVu));
    for (const t of shown) expect(t.x, t.text).toBeGreaterThanOrEqual(dejaVu[t.text]);
    // Past the cap, the label keeps its start and end around an ellipsis, its full text in a
    // title; the plot keeps most of the width.
    const html = renderReport(report({ records: [rec(huge, 0.01), rec('GET /a', 0.001)] }));
    const label = texts(html).find((t) => t.text.startsWith('GET /segment0/'))!;
    expect(label.text).toMatch(/^GET \/segment0\/:param0\/.*….*\/:param11$/);
    expect(label.text.length).toBeLessThan(huge.length);
    expect(html).toContain(`<g><title>${huge}</title><text class="row-label"`);
    const axis = /<section id="records">.*?<line class="axis" x1="([^"]*)"/s.exec(html)!;
    expect(Number(axis[1])).toBeLessThanOrEqual(460);
    expect(Number(axis[1])).toBeGreaterThan(label.x);
  });

  it("totals each thread's series in its legend, and the attribution bar's parts", () => {
    const html = renderReport(report());
    const threads = /<section id="threads">(.*?)<\/section>/s.exec(html)![1];
    expect(threads).toContain('(11): 1.875 J</span>');
    expect(threads).toContain('other threads &lt;b&gt;x&lt;/b&gt;&amp;&quot;&#39;: 1.000 J</span>');
    const widths = [...html.matchAll(/<span style="width:([\d.]+)%/g)].map((m) => m[1]);
    expect(widths).toEqual(['25.00', '10.00', '65.00']);
    expect(html).toContain('tracked: 2.500 J (25.0 %)');
    expect(html).toContain('baseline: 1.000 J (10.0 %)');
    expect(html).toContain('other processes / idle: 6.500 J (65.0 %)');
  });

  it('labels every chart estimated when the figures are', () => {
    const html = renderReport(report({ estimated: true }));
    for (const id of ['power', 'threads', 'records', 'proportionality']) {
      const section = new RegExp(`<section id="${id}">(.*?)</section>`, 's').exec(html)![1];
      const titles = [...section.matchAll(/<text class="axis-title"[^>]*>([^<]*)</g)].map((m) => m[1]);
      expect(titles.some((t) => t.includes(', estimated')), id).toBe(true);
    }
    expect(renderReport(report())).not.toContain(', estimated');
  });

  // The badge, source and axis titles said so; the figures written out beside them did not.
  it('labels every figure written out estimated when the figures are: legends, headings and rows', () => {
    const html = renderReport(report({ estimated: true }));
    expect(html).toMatch(/<h2>Where the [^<]* energy went \(estimated\)<\/h2>/);
    expect(html).toContain('tracked: 2.500 J (estimated, 25.0 %)');
    expect(html).toContain('other processes / idle: 6.500 J (estimated, 65.0 %)');
    const threads = /<section id="threads">(.*?)<\/section>/s.exec(html)![1];
    expect(threads).toContain('(11): 1.875 J (estimated)</span>');
    expect(html).toContain('>n=3, mean 2.00 mJ (estimated)</text>');
    expect(renderReport(report())).not.toContain('(estimated');
  });

  // toPrecision(3) of 1000 reads "1.00e+3": a two-week run's axis read 800k, 1.00e+3k, 1.20e+3k.
  it('writes ticks of a million and more with M and G', () => {
    const n = 2048;
    const T = 14 * 86_400;
    const time = Array.from({ length: n }, (_, i) => ((i + 1) * T) / n);
    const html = renderReport(report({ durationS: T, time, watts: [time.map(() => 40)], threads: [], cpuCores: [], records: [] }));
    const power = /<section id="power">(.*?)<\/section>/s.exec(html)![1];
    const ticks = [...power.matchAll(/<text class="tick"[^>]*text-anchor="middle">([^<]*)</g)].map((m) => m[1]);
    // In hours: SI suffixes on seconds read "200m" as minutes.
    expect(ticks).toEqual(['0', '50', '100', '150', '200', '250', '300']);
    expect(power).toContain('>time (h)<');
    const big = renderReport(report({ time: [1e9, 2e9, 3e9, 4e9] }));
    expect(big).toMatch(/>1000000</);
    expect(big).not.toMatch(/e\+/);
  });
});

describe('ReportCollector bounds and time axis', () => {
  // A record in another clock (wall-clock ns) lay after every point forever: each one stored,
  // and filtered at every poll (2 million: 78 ms a poll, 23.5 MB).
  it('refuses an end in the future, naming the clock it takes', () => {
    const c = new ReportCollector(fakeSampler({ joules: 0, threads: [] }));
    c.poll();
    for (const endNs of [BigInt(Date.now()) * 1_000_000n, Date.now() * 1e6]) {
      expect(() => c.addRecord({ label: 'GET /x', joules: 1e-3, endNs, durationMs: 1 })).toThrow(RangeError);
      expect(() => c.addRecord({ label: 'GET /x', joules: 1e-3, endNs, durationMs: 1 })).toThrow(/CLOCK_MONOTONIC ns, as process\.hrtime\.bigint\(\)/);
    }
    expect(c.storedPendingEnds).toBe(0);
    c.addRecord({ label: 'GET /x', joules: 1e-3, endNs: process.hrtime.bigint(), durationMs: 1 });
    expect(c.data().recordLabels![0].count).toBe(1);
  });

  // After stop() nothing takes the records that end after the last point: 5 million stored, 53 MB.
  it('counts records added after stop() without storing them, into a later point or a note', () => {
    const state: FakeState = { joules: 0, threads: [] };
    const c = new ReportCollector(fakeSampler(state), { periodMs: 200 });
    for (let i = 0; i < 10; i++) c.poll();
    c.stop();
    for (let i = 1; i <= 1000; i++) c.addRecord({ label: 'GET /x', joules: 0.01, endNs: state.timeNs! + BigInt(i), durationMs: 1 });
    expect(c.storedPendingEnds).toBe(0);
    expect(c.data().notes).toEqual([
      "1000 requests ended after the collector's last point (added after its stop()): in the per-label figures, not in the throughput of any interval.",
    ]);
    expect(c.data().recordLabels![0].count).toBe(1000);
    // A later start() counts them in its first point.
    c.start();
    c.stop();
    const d = c.data();
    expect(sum(d.recordCounts!)).toBe(1000);
    expect(d.notes).toEqual([]);
  });

  // A collector started an hour into the sampler's run drew its minute in the last 1.6% of the
  // axis and said 3660.00 s.
  it('starts the time axis and the duration at the first point, not at the sampler\'s start', () => {
    const worker = { tid: 11, pid: 10, name: 'worker', joules: 0, onCpuNs: 0 };
    const state: FakeState = { joules: 36_000, threads: [worker], startNs: 1_000_000_000n, timeNs: 3_601_000_000_000n };
    const c = new ReportCollector(fakeSampler(state), { periodMs: 200 });
    for (let i = 0; i < 301; i++) {
      state.joules += 2;
      worker.joules += 1;
      worker.onCpuNs += 1e8;
      c.poll();
    }
    const d = c.data();
    expect(d.startS).toBeCloseTo(3600.2, 6);
    expect(d.durationS).toBeCloseTo(60, 6);
    const html = renderReport(d);
    expect(html).toContain('<td>duration</td><td>1m00s</td>');
    for (const id of ['power', 'threads']) {
      const section = new RegExp(`<section id="${id}">(.*?)</section>`, 's').exec(html)![1];
      expect(section, id).toContain(`>time (s), from t = 1h00m00s of the sampler&#39;s run<`);
      const ticks = [...section.matchAll(/<text class="tick" x="([^"]*)"[^>]*text-anchor="middle">([^<]*)</g)].map((m) => [Number(m[1]), m[2]]);
      expect(ticks[0], id).toEqual([70, '0']);
      expect(ticks[ticks.length - 1][1], id).toBe('60');
      // The data begin at the left of the plot (an interval in), not at 98% of its width.
      const path = /<path class="data (?:line|area)"[^>]* d="M([\d.]+),/.exec(section)!;
      expect(Number(path[1]), id).toBeLessThan(80);
    }
  });

  // Throughput varying by 1% printed "56.72 W at zero throughput − 35.99 W per busy core"; by
  // nothing, ±2e13 W; and a steep line ran off the plot.
  it('fits a line only where throughput varies over a fifth of its range, clipped to the plot', () => {
    const proportionality = (cores: (s: number) => number) => {
      const worker = { tid: 11, pid: 10, name: 'worker', joules: 0, onCpuNs: 0 };
      const state: FakeState = { joules: 0, threads: [worker] };
      const c = new ReportCollector(fakeSampler(state), { periodMs: 200 });
      for (let i = 0; i < 50; i++) {
        const s = Math.floor(i / 5);
        state.joules += (20 + ((s * 7) % 5)) * 0.2;
        worker.joules += 0.1;
        worker.onCpuNs += cores(s) * 2e8;
        c.poll();
      }
      return /<section id="proportionality">(.*?)<\/section>/s.exec(renderReport(c.data()))![1];
    };
    for (const cores of [(s: number) => 1 + (s % 2) * 0.01, () => 1]) {
      const section = proportionality(cores);
      expect(section).not.toContain('class="data fit"');
      expect(section).not.toContain('at zero throughput');
      expect(section).toMatch(/no fit: throughput did not vary enough to fit a line \(the bins span [01]% of the largest, under 20%\)/);
    }
    const varied = proportionality((s) => 0.5 + (s % 3) * 0.5);
    expect(varied).toMatch(/<path class="data fit" clip-path="url\(#proportionality-plot\)"/);
    expect(varied).toContain('<clipPath id="proportionality-plot">');
    expect(varied).toMatch(/fit: -?[\d.]+ W at zero throughput/);
  });

  // Every bin at 0 busy cores fitted 0/0: "fit: NaN W at zero throughput + NaN W per busy core";
  // a tree asleep, its bins microseconds of CPU apart, got -59.60 W per busy core, then +137.98.
  it('fits no line to throughput that varies by next to nothing, in busy cores or records', () => {
    const time = [2, 4, 6, 8, 10, 12]; // one bin each
    const section = (over: Partial<ReportData>) =>
      /<section id="proportionality">(.*?)<\/section>/s.exec(renderReport(report({ durationS: 12, time, watts: [[10, 14, 11, 15, 12, 16]], records: [], ...over })))![1];
    const records = (counts: number[]) => ({ recordCounts: counts, records: [{ label: 'GET /', joules: 1e-3, t: 2, durationMs: 1 }], cpuCores: time.map(() => 0.5) });
    const none = section({ cpuCores: time.map(() => 0) });
    expect(none).not.toContain('NaN');
    expect(none).toContain('no fit: throughput did not vary enough to fit a line (the bins span 0% of the largest, under 20%)');
    const idle = section({ cpuCores: [1e-4, 6e-4, 1e-4, 6e-4, 1e-4, 6e-4] });
    expect(idle).toContain('no fit: throughput did not vary enough to fit a line (the bins span 0.0005 busy cores, under 0.05)');
    const few = section(records([0, 1, 0, 1, 0, 1])); // 0 and 0.5 requests a second
    expect(few).toContain('no fit: throughput did not vary enough to fit a line (the bins span 0.5 requests per second, under 1)');
    for (const s of [none, idle, few]) {
      expect(s).not.toContain('class="data fit"');
      expect(s).not.toContain('at zero throughput');
    }
    // A spread of 0.1 busy cores, or 2 requests a second, is fitted.
    expect(section({ cpuCores: [0, 0.1, 0, 0.1, 0, 0.1] })).toContain('fit: 11.00 W at zero throughput + 40.00 W per busy core');
    expect(section(records([0, 4, 0, 4, 0, 4]))).toContain('fit: 11.00 W at zero throughput + 2.000 J per extra request');
  });

  // SI suffixes on seconds: "200m" read as minutes, a day as "20k".
  it('labels time in ms, s, min or h by the span drawn', () => {
    const axis = (T: number) => {
      const time = Array.from({ length: 100 }, (_, i) => ((i + 1) * T) / 100);
      const html = renderReport(report({ durationS: T, time, watts: [time.map(() => 40)], threads: [], cpuCores: [], records: [] }));
      const power = /<section id="power">(.*?)<\/section>/s.exec(html)![1];
      const ticks = [...power.matchAll(/<text class="tick"[^>]*text-anchor="middle">([^<]*)</g)].map((m) => m[1]);
      return { ticks, title: /class="axis-title"[^>]*text-anchor="middle">([^<]*)</.exec(power)![1], html };
    };
    expect(axis(1)).toMatchObject({ ticks: ['0', '200', '400', '600', '800', '1000'], title: 'time (ms)' });
    expect(axis(1).html).toContain('<td>duration</td><td>1.00 s</td>');
    expect(axis(60)).toMatchObject({ ticks: ['0', '10', '20', '30', '40', '50', '60'], title: 'time (s)' });
    expect(axis(1800)).toMatchObject({ ticks: ['0', '5', '10', '15', '20', '25', '30'], title: 'time (min)' });
    expect(axis(1800).html).toContain('<td>duration</td><td>30m00s</td>');
    expect(axis(86_400)).toMatchObject({ ticks: ['0', '5', '10', '15', '20'], title: 'time (h)' });
    expect(axis(86_400).html).toContain('<td>duration</td><td>24h00m00s</td>');
  });
});

// A sampler of two domains (package, dram) whose figures, failed reads and attribution the test
// sets, with run ends told to the listeners as the Sampler tells them.
interface ReadsState {
  joules: [number, number];
  readErrors: [number, number];
  unread: [boolean, boolean];
  // Whether each domain's latest read failed (totals().readings[].held); absent, as a Sampler of
  // an older copy gives it.
  held?: [boolean, boolean];
  counterRestarts: number;
  threads: FakeThread[];
  startNs: bigint;
  timeNs: bigint;
  running: boolean;
  attribution: { total: number; process: number; baseline: number; other: number };
}

function readsSampler(backend: 'bpf' | 'off' = 'bpf') {
  const state: ReadsState = {
    joules: [0, 0],
    readErrors: [0, 0],
    unread: [false, false],
    counterRestarts: 0,
    threads: [],
    startNs: 1_000_000_000n,
    timeNs: 1_000_000_000n,
    running: true,
    attribution: { total: 0, process: 0, baseline: 0, other: 0 },
  };
  const listeners = new Set<() => void>();
  const names = ['package', 'dram'];
  const sampler = {
    domains: names.map((domain) => ({ domain, package: 0, estimated: false })),
    source: 'fake',
    get running() {
      return state.running;
    },
    stats: () => ({
      threads: { backend },
      timing: {
        counterRestarts: state.counterRestarts,
        byDomain: names.map((domain, i) => ({ domain, package: 0, readErrors: state.readErrors[i], unread: state.unread[i] })),
      },
    }),
    totals: () => ({ startNs: state.startNs, timeNs: state.timeNs, readings: names.map((domain, i) => ({ domain, package: 0, joules: state.joules[i], ...(state.held ? { held: state.held[i] } : {}) })) }),
    threads: () => state.threads.map((t) => ({ unmeasuredNs: 0, ...t, id: t.id ?? t.tid })),
    attribution: () => ({ ...state.attribution, domains: ['package'], estimated: false, byDomain: [] }),
    onRunEnd: (fn: () => void) => {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
  } as unknown as Sampler;
  return {
    state,
    sampler,
    // 200 ms on: each domain's joules and failed reads added.
    step(joules: [number, number], errors: [number, number] = [0, 0]) {
      state.timeNs += 200_000_000n;
      state.joules = [state.joules[0] + joules[0], state.joules[1] + joules[1]];
      state.readErrors = [state.readErrors[0] + errors[0], state.readErrors[1] + errors[1]];
    },
    endRun() {
      state.running = false;
      for (const fn of [...listeners]) fn();
    },
    // A new run 1 s after the last sample, from zero.
    restart() {
      state.startNs = state.timeNs + 1_000_000_000n;
      state.timeNs = state.startNs;
      state.joules = [0, 0];
      state.readErrors = [0, 0];
      state.counterRestarts = 0;
      state.running = true;
      for (const t of state.threads) [t.joules, t.onCpuNs] = [0, 0];
    },
  };
}

const rounded = (xs: number[]) => xs.map((x) => (Number.isFinite(x) ? Number(x.toFixed(6)) : 'none'));
const section = (html: string, id: string) => new RegExp(`<section id="${id}">(.*?)</section>`, 's').exec(html)![1];
const paths = (html: string, id: string, cls: string) => [...section(html, id).matchAll(new RegExp(`<path class="data ${cls}"[^>]* d="([^"]*)"`, 'g'))].map((m) => m[1]);

describe('ReportCollector, a domain whose reads fail', () => {
  // While a domain's reads fail its counter holds its last value, and the next good read brings
  // the whole stretch's energy: it was drawn at 0 W, then as a spike, with no word of why.
  it('draws the failing stretch and the interval that brought its energy at their average power, and says so', () => {
    const f = readsSampler();
    const main = { tid: 10, pid: 10, name: 'main', joules: 0, onCpuNs: 0 };
    f.state.threads = [main];
    const c = new ReportCollector(f.sampler, { periodMs: 200 });
    c.poll();
    // package 10 W, dram 2 W; dram's reads fail through two intervals and the start of a third,
    // whose later reads are good: the third brings the stretch's energy.
    const dram = [0.4, 0, 0, 1.2, 0.4, 0.4];
    const errors = [0, 5, 5, 1, 0, 0];
    for (let i = 0; i < 6; i++) {
      f.step([2, dram[i]], [0, errors[i]]);
      main.joules += 1;
      main.onCpuNs += 1e8;
      c.poll();
    }
    const d = c.data();
    expect(rounded(d.watts[1])).toEqual([2, 2, 2, 2, 2, 2]);
    expect(rounded(d.watts[0])).toEqual([10, 10, 10, 10, 10, 10]);
    // The energy drawn is the totals'.
    expect(sum(d.watts[1].map((w) => w * 0.2))).toBeCloseTo(2.4, 9);
    const note = d.notes.find((n) => n.startsWith('Reads of dram-0 failed'));
    expect(note).toBe(
      "Reads of dram-0 failed in 600.0 ms of this report (stats().timing.byDomain's readErrors): its counter held its last value while they did, and its energy came with its next good read. The power chart draws each such stretch, with the interval that brought its energy (600.0 ms in all), at their average power: the energy spread evenly over them, since how it varied within is unknown.",
    );
    expect(d.notes.filter((n) => n.startsWith('Reads of'))).toHaveLength(1);
    expect(renderReport(d)).toContain('Reads of dram-0 failed in 600.0 ms');
  });

  it('draws an interval exactly where a failed read was followed by good ones before its end', () => {
    // One failed read in every 200 ms poll (1 in 200 at 1 ms), each followed by good reads: every
    // interval was marked failed and drawn with no figure, blanking the power and thread charts.
    const f = readsSampler();
    const main = { tid: 10, pid: 10, name: 'main', joules: 0, onCpuNs: 0 };
    f.state.threads = [main];
    f.state.held = [false, false];
    let c = new ReportCollector(f.sampler, { periodMs: 200 });
    c.poll();
    for (let i = 0; i < 10; i++) {
      f.step([2, 0.4], [1, 0]);
      main.joules += 1;
      main.onCpuNs += 1e8;
      c.poll();
    }
    let d = c.data();
    expect(rounded(d.watts[0])).toEqual(new Array(10).fill(10));
    expect(rounded(d.threads[0].joules)).toEqual(new Array(10).fill(1));
    const html = renderReport(d);
    expect(paths(html, 'power', 'line').map((p) => p.split('M').length - 1)).toEqual([1, 1]);
    expect(paths(html, 'threads', 'area').map((p) => p.split('M').length - 1)).toEqual([1]);
    expect(d.notes.join(' ')).not.toContain('has no figure');
    // Held at a point (its latest read failed), then brought by the next: spread over both.
    f.state.held = [true, false];
    f.step([1, 0.4], [3, 0]);
    c.poll();
    f.state.held = [false, false];
    f.step([3, 0.4], [1, 0]);
    c.poll();
    d = c.data();
    expect(rounded(d.watts[0].slice(10))).toEqual([10, 10]);

    // A sampler that does not say whether the latest read failed: one that failed and recovered
    // in the run's last interval (the total moved) leaves its figure, and no false note.
    f.state.held = undefined;
    const g = readsSampler('off');
    c = new ReportCollector(g.sampler, { periodMs: 200 });
    c.poll();
    for (let i = 0; i < 5; i++) {
      g.step([2, 0.4], [i === 4 ? 1 : 0, 0]);
      c.poll();
    }
    c.stop();
    d = c.data();
    expect(rounded(d.watts[0])).toEqual([10, 10, 10, 10, 10]);
    expect(d.notes.join(' ')).not.toContain('has no figure');
  });

  it("spreads the threads' energy of a failing primary domain over the stretch as its power", () => {
    const f = readsSampler();
    const main = { tid: 10, pid: 10, name: 'main', joules: 0, onCpuNs: 0 };
    f.state.threads = [main];
    const c = new ReportCollector(f.sampler, { periodMs: 200 });
    c.poll();
    // The package's reads fail through two intervals; the third's first read brings 6 J, and the
    // thread's 3 J.
    const pkg = [2, 0, 0, 6, 2];
    const thread = [1, 0, 0, 3, 1];
    const errors = [0, 5, 5, 0, 0];
    for (let i = 0; i < 5; i++) {
      f.step([pkg[i], 0.4], [errors[i], 0]);
      main.joules += thread[i];
      main.onCpuNs += 1e8;
      c.poll();
    }
    const d = c.data();
    expect(rounded(d.watts[0])).toEqual([10, 10, 10, 10, 10]);
    expect(rounded(d.threads[0].joules)).toEqual([1, 1, 1, 1, 1]);
    expect(d.notes.find((n) => n.startsWith('Reads of package-0'))).toContain("(the per-thread chart spreads the threads' share alike)");
  });

  it('has no figure where no good read came after them, or energy was lost, and breaks the lines there', () => {
    // The run ends with dram's reads failing: its energy since the last good read never came.
    let f = readsSampler();
    let c = new ReportCollector(f.sampler, { periodMs: 200 });
    c.poll();
    f.step([2, 0.4]);
    c.poll();
    f.step([2, 0], [0, 7]);
    c.poll();
    f.endRun();
    let d = c.data();
    expect(rounded(d.watts[1])).toEqual([2, 'none']);
    expect(d.notes.find((n) => n.startsWith('Reads of dram-0'))).toContain(
      'Over 200.0 ms its power has no figure (a break in the chart): no good read came before the run or the report ended, a counter started again and lost energy, or it had not been read yet in its run.',
    );
    // A later run: the failing stretch does not run on into it.
    f.restart();
    c.poll();
    f.step([2, 0.4]);
    c.poll();
    f.step([2, 0.4]);
    c.poll();
    d = c.data();
    expect(rounded(d.watts[1])).toEqual([2, 'none', 'none', 2, 2]);

    // A counter started again among the failed reads: the good read after them brings only part
    // of the stretch's energy. The package's, with threads: their chart breaks with it.
    f = readsSampler();
    const main = { tid: 10, pid: 10, name: 'main', joules: 0, onCpuNs: 0 };
    f.state.threads = [main];
    c = new ReportCollector(f.sampler, { periodMs: 200 });
    c.poll();
    const pkg = [2, 0, 0.5, 2, 2];
    for (let i = 0; i < 5; i++) {
      f.step([pkg[i], 0.4], [i === 1 ? 3 : 0, 0]);
      if (i === 1) f.state.counterRestarts = 1;
      main.joules += pkg[i] / 2;
      main.onCpuNs += 1e8;
      c.poll();
    }
    d = c.data();
    expect(rounded(d.watts[0])).toEqual([10, 'none', 2.5, 10, 10]);
    expect(rounded(d.watts[1])).toEqual([2, 2, 2, 2, 2]);
    let html = renderReport(d);
    expect(html).not.toContain('NaN');
    // package-0 in two pieces, dram-0 in one; the threads' stack in two.
    expect(paths(html, 'power', 'line').map((p) => p.split('M').length - 1)).toEqual([2, 1]);
    expect(paths(html, 'threads', 'area').map((p) => p.split('M').length - 1)).toEqual([2]);
    // A saved copy (NaN is null in JSON) draws the same.
    expect(renderReport(JSON.parse(JSON.stringify(d)) as ReportData)).toBe(html);

    // Never read yet in the run: the domain counts from its first good read, so what came before
    // it is in no total.
    f = readsSampler('off');
    c = new ReportCollector(f.sampler, { periodMs: 200 });
    f.state.unread = [false, true];
    f.state.readErrors = [0, 1];
    c.poll();
    f.step([2, 0], [0, 5]);
    c.poll();
    f.state.unread = [false, false];
    f.step([2, 0.2], [0, 2]);
    c.poll();
    f.step([2, 0.4]);
    c.poll();
    d = c.data();
    expect(rounded(d.watts[1])).toEqual(['none', 'none', 2]);
    html = renderReport(d);
    expect(html).not.toContain('NaN');
    expect(paths(html, 'power', 'line').map((p) => p.split('M').length - 1)).toEqual([1, 1]);
  });

  it('draws a domain whose reads failed, as a real Sampler counts them, at its average power', async () => {
    // An emulated powercap tree, written in place at a fixed width (no truncation: a read of an
    // empty file would fail where the test does not mean it to).
    const e = createEmulatedPowercap([{ name: 'package-0', energyUj: 1_000_000_000, children: [{ name: 'dram', energyUj: 1_000_000_000 }] }]);
    const fds = ['intel-rapl:0', 'intel-rapl:0:0'].map((id) => fs.openSync(path.join(e.zonePath(id), 'energy_uj'), 'r+'));
    const write = (zone: number, text: string) => fs.writeSync(fds[zone], `${text}\n`, 0);
    const s = new Sampler({ source: 'powercap', powercapRoot: e.powercapRoot, liveCheckMs: 0, threads: 'off', ringCapacity: 0 });
    const until = async (what: () => boolean) => {
      while (!what()) await new Promise((r) => setTimeout(r, 2));
    };
    const joules = () => s.totals().readings.map((r) => r.joules);
    const dramErrors = () => s.stats().timing.byDomain[1].readErrors;
    try {
      expect(s.domains.map((d) => d.domain)).toEqual(['package', 'dram']);
      s.start();
      const c = new ReportCollector(s, { periodMs: 50 });
      let uj = 1_000_000_000;
      // Each interval, 60 ms of the sampler's time or more (the report merges one under half a
      // period into the next): the package +1 J; dram +1 J, or its file unreadable. One digit
      // changes at each write, so that a read torn by one is still one value or the other.
      const interval = async (dram: 'count' | 'fail' | 'recover') => {
        const from = s.totals().timeNs;
        uj += 1_000_000;
        write(0, String(uj));
        const errors = dramErrors();
        write(1, dram === 'fail' ? 'x'.repeat(10) : String(uj));
        const target = (uj - 1e9) / 1e6 - 1e-9;
        await until(() => s.totals().timeNs - from >= 60_000_000n && joules()[0] >= target && (dram === 'fail' ? dramErrors() > errors : joules()[1] >= target));
        c.poll();
      };
      c.poll();
      await interval('count');
      await interval('fail');
      await interval('fail');
      await interval('recover');
      await interval('count');
      s.stop();
      c.stop();
      const d = c.data();
      // The two failing intervals and the one whose first read was good again have one figure,
      // their 3 J over their time, where dram was drawn at 0 W twice then at three times its
      // power. (A read may fall between a poll and the write that mends the file: the next
      // interval then failed too, and the stretch runs one further, with 4 J.)
      const { measured } = widths(d);
      expect(d.time).toHaveLength(5);
      const end = d.watts[1][4] === d.watts[1][1] ? 5 : 4;
      const stretch = d.watts[1].slice(1, end);
      expect(stretch.every((w) => w === stretch[0])).toBe(true);
      expect(stretch[0]).toBeCloseTo((end - 1) / sum(measured.slice(1, end)), 6);
      // The intervals either side: dram as the package, 1 J each.
      for (const i of end === 4 ? [0, 4] : [0]) expect(d.watts[1][i]).toBeCloseTo(d.watts[0][i], 6);
      expect(d.notes.some((note) => note.startsWith('Reads of dram-0 failed in'))).toBe(true);
    } finally {
      s.close();
      for (const fd of fds) fs.closeSync(fd);
      fs.rmSync(e.powercapRoot, { recursive: true, force: true });
    }
  });
});

describe('ReportCollector attribution over several runs', () => {
  // sampler.attribution() starts afresh at each start(): the bar, from the documented
  // data({ attribution: sampler.attribution() }), covered the last run while the charts covered all.
  it('sums the attribution of every run it saw where data() is given none', () => {
    const f = readsSampler();
    const c = new ReportCollector(f.sampler, { periodMs: 200 }).start();
    f.step([2, 0.4]);
    c.poll();
    f.state.attribution = { total: 10, process: 4, baseline: 1, other: 5 };
    f.endRun();
    f.restart();
    f.state.attribution = { total: 0, process: 0, baseline: 0, other: 0 };
    c.poll();
    f.step([2, 0.4]);
    f.state.attribution = { total: 20, process: 6, baseline: 2, other: 12 };
    c.stop(); // before the sampler's stop(), as docs/cli.md does it
    f.endRun();
    const d = c.data();
    expect(d.attribution).toEqual({ total: 30, process: 10, baseline: 3, other: 17, domains: ['package'] });
    const html = renderReport(d);
    expect(html).toContain('<h2>Where the package energy went</h2>');
    expect(html).toContain('tracked: 10.000 J (33.3 %)');
    // Given, after two runs: drawn, and marked as the last run's.
    const given = c.data({ attribution: f.sampler.attribution() });
    expect(given.attribution).toEqual({ total: 20, process: 6, baseline: 2, other: 12, domains: ['package'], lastRunOf: 2 });
    const marked = renderReport(given);
    expect(marked).toContain('<h2>Where the package energy went in the last of 2 runs</h2>');
    expect(marked).toContain("The last of the report's 2 runs only");
  });

  it("leaves out of the bar what attribution() counted before the collector's first point", () => {
    // attribution() counts from the run's start(); the charts from the collector's first point.
    // Started 1.5 s into a run, a collector drew 0.5 s and 9.9 J under a bar of 48.9 J.
    const f = readsSampler();
    f.step([2, 0.4]);
    f.state.attribution = { total: 30, process: 10, baseline: 5, other: 15 };
    const c = new ReportCollector(f.sampler, { periodMs: 200 }).start();
    f.step([2, 0.4]);
    f.state.attribution = { total: 32, process: 11, baseline: 5.5, other: 15.5 };
    c.stop();
    f.endRun();
    expect(c.data().attribution).toEqual({ total: 2, process: 1, baseline: 0.5, other: 0.5, domains: ['package'] });
    // A later run is charted from its start, as attribution() counts it: all of it.
    f.restart();
    f.state.attribution = { total: 0, process: 0, baseline: 0, other: 0 };
    c.start();
    f.step([2, 0.4]);
    f.state.attribution = { total: 4, process: 2, baseline: 1, other: 1 };
    c.stop();
    expect(c.data().attribution).toEqual({ total: 6, process: 3, baseline: 1.5, other: 1.5, domains: ['package'] });
  });

  it('counts a run the collector was stopped in before the sampler, started again for the next', () => {
    const f = readsSampler();
    const c = new ReportCollector(f.sampler, { periodMs: 200 }).start();
    f.step([2, 0.4]);
    f.state.attribution = { total: 10, process: 4, baseline: 1, other: 5 };
    c.stop();
    f.endRun();
    f.restart();
    f.state.attribution = { total: 0, process: 0, baseline: 0, other: 0 };
    c.start();
    f.step([2, 0.4]);
    f.state.attribution = { total: 20, process: 6, baseline: 2, other: 12 };
    c.stop();
    expect(c.data().attribution).toEqual({ total: 30, process: 10, baseline: 3, other: 17, domains: ['package'] });
    // One run, given: drawn as given.
    const one = readsSampler();
    const c1 = new ReportCollector(one.sampler, { periodMs: 200 }).start();
    one.step([2, 0.4]);
    one.state.attribution = { total: 5, process: 1, baseline: 1, other: 3 };
    c1.stop();
    expect(c1.data({ attribution: one.sampler.attribution() }).attribution).toEqual({ total: 5, process: 1, baseline: 1, other: 3, domains: ['package'] });
    expect(c1.data().attribution).toEqual({ total: 5, process: 1, baseline: 1, other: 3, domains: ['package'] });
    // Without thread tracking there is none to sum.
    const off = readsSampler('off');
    const c2 = new ReportCollector(off.sampler, { periodMs: 200 }).start();
    off.step([2, 0.4]);
    c2.stop();
    expect(c2.data().attribution).toBeUndefined();
  });

  it("sums a real Sampler's attribution over two runs", () => {
    const s = new Sampler({ source: 'model', threads: 'procfs', ringCapacity: 0 });
    try {
      s.start();
      const c = new ReportCollector(s, { periodMs: 50 }).start();
      const spin = (until: () => boolean) => {
        while (!until()) Math.sqrt(Math.random());
      };
      spin(() => s.totals().readings[0].joules > 0.05);
      s.stop();
      const first = s.attribution();
      s.start();
      spin(() => s.totals().readings[0].joules > 0.05);
      s.stop();
      const second = s.attribution();
      c.stop();
      expect(first.total).toBeGreaterThan(0);
      expect(second.total).toBeGreaterThan(0);
      const a = c.data().attribution!;
      expect(a.total).toBe(first.total + second.total);
      expect(a.process).toBe(first.process + second.process);
    } finally {
      s.close();
    }
  });
});

describe('renderReport, series and records it drew wrong', () => {
  // The axis bottoms at 1e-9 J: a positive record below it was drawn left of the axis, over the
  // labels (M-285.8 for 1e-13 J), once the clamp went with the 0 J change.
  it('draws a positive record below the axis at its floor', () => {
    const records = [
      { label: 'GET /a', joules: 1e-13, t: 1, durationMs: 1 },
      { label: 'GET /a', joules: 2e-3, t: 1.5, durationMs: 1 },
      { label: 'GET /a', joules: 3e-3, t: 1.6, durationMs: 1 },
    ];
    const sec = section(renderReport(report({ records })), 'records');
    const axisX = Number(/<line class="grid" x1="([\d.]+)"/.exec(sec)![1]);
    const xs = [...sec.matchAll(/<path class="data dots"[^>]*d="([^"]*)"/g)].flatMap((m) => [...m[1].matchAll(/M(-?[\d.]+),/g)].map((x) => Number(x[1]) + 1.5));
    expect(xs).toHaveLength(3);
    expect(Math.min(...xs)).toBeCloseTo(axisX, 1);
  });

  // A first run one polling interval long was a bare "M x,y" in the paths: drawn as nothing.
  it('draws a stretch of one interval as a step, the first run included', () => {
    const main = { tid: 10, pid: 10, name: 'main', joules: 0, onCpuNs: 0 };
    const state: FakeState = { joules: 0, threads: [main] };
    const c = new ReportCollector(fakeSampler(state), { periodMs: 200 });
    c.poll();
    state.joules += 10;
    main.joules += 5;
    c.poll();
    restart(state, 2_000_000_000n);
    for (let i = 0; i < 5; i++) {
      state.joules += 2;
      main.joules += 1;
      c.poll();
    }
    const d = c.data();
    expect(rounded(d.watts[0])).toEqual([50, 'none', 10, 10, 10, 10, 10]);
    const html = renderReport(d);
    for (const [id, cls] of [
      ['power', 'line'],
      ['threads', 'area'],
    ]) {
      const [p] = paths(html, id, cls);
      // Every piece is a move then a line: none a bare move.
      const pieces = p.split('M').slice(1);
      expect(pieces).toHaveLength(2);
      for (const piece of pieces) expect(piece).toMatch(/^[\d.]+,[\d.]+L/);
    }
    // The first run's step runs from the first point to its end, at 50 W.
    const [first] = paths(html, 'power', 'line')[0].split('M').slice(1);
    const ys = first.split('L').map((xy) => xy.split(',')[1]);
    expect(ys).toEqual([ys[0], ys[0]]);
  });

  // A 10-colour palette: maxThreads allows 100, and the 11th thread was drawn as the first.
  it('gives every series a colour of its own, the palette first', () => {
    const threads = Array.from({ length: 101 }, (_, i) => ({ label: `t${i} (${i})`, pid: 1, tid: i, joules: [1, 1, 1, 1] }));
    const html = renderReport(report({ threads }));
    const colors = [...section(html, 'threads').matchAll(/<span><i style="background:([^"]+)"><\/i>/g)].map((m) => m[1]);
    expect(colors).toHaveLength(101);
    expect(new Set(colors).size).toBe(101);
    expect(colors.slice(0, 10)).toEqual(['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac']);
    for (const color of colors) expect(color).toMatch(/^#[0-9a-f]{6}$/);
    // The areas are drawn in the legend's colours.
    expect([...section(html, 'threads').matchAll(/<path class="data area" fill="([^"]+)"/g)].map((m) => m[1])).toEqual(colors);
    // And the records chart's rows: 20 at most.
    const records = Array.from({ length: 20 }, (_, i) => ({ label: `GET /r${String(i).padStart(2, '0')}`, joules: 1e-3, t: 1, durationMs: 1 }));
    const fills = [...section(renderReport(report({ records })), 'records').matchAll(/<path class="data dots" fill="([^"]+)"/g)].map((m) => m[1]);
    expect(new Set(fills).size).toBe(20);
  });

  // 0 J has no place on a log axis: such records were drawn at its lowest tick, as if that much.
  it('leaves records of 0 J off the log axis and counts them in their row', () => {
    const state: FakeState = { joules: 0, threads: [], backend: 'off' };
    const c = new ReportCollector(fakeSampler(state));
    for (let i = 0; i < 50; i++) c.addRecord({ label: 'GET /zero', joules: 0, endNs: 1n, durationMs: 1 });
    for (let i = 0; i < 50; i++) c.addRecord({ label: 'GET /real', joules: 0.002 + i * 1e-4, endNs: 1n, durationMs: 1 });
    for (let i = 0; i < 30; i++) c.addRecord({ label: 'GET /some', joules: i < 20 ? 0 : 0.01, endNs: 1n, durationMs: 1 });
    const d = c.data();
    expect(d.recordLabels!.map((l) => [l.label, l.zero])).toEqual([
      ['GET /zero', 50],
      ['GET /real', undefined],
      ['GET /some', 20],
    ]);
    const html = renderReport(d);
    const records = section(html, 'records');
    expect(records).toContain('n=50, mean 0 J, 50 at 0 J<');
    expect(records).toContain('n=30, mean 3.33 mJ, 20 at 0 J<');
    expect(records).toContain('n=50, mean 4.45 mJ<');
    // Dots: GET /real's 50, GET /some's 10; none for 0 J, at the lowest tick or anywhere.
    const dots = [...records.matchAll(/<path class="data dots"[^>]* d="([^"]*)"/g)].map((m) => m[1].split('M').length - 1);
    expect(dots.sort((a, b) => a - b)).toEqual([10, 50]);
    // GET /some's median is 0 J: not drawn; its box, from 0 J, is open at the axis's left.
    expect([...records.matchAll(/<line class="median"/g)]).toHaveLength(1);
    expect(records).toMatch(/<path class="box" d="M\d+,[\d.]+H[\d.]+V[\d.]+H\d+"\/>/);
    // A report saved before `zero`: counted from its records.
    const { recordLabels: _, ...saved } = d;
    expect(section(renderReport({ ...saved, records: [0, 0, 0.001].map((joules) => ({ label: 'GET /old', joules, t: 1, durationMs: 1 })) }), 'records')).toContain(
      'n=3, mean 333.3 µJ, 2 at 0 J<',
    );
  });

  it("says a run too short for the charts was too short for the collector's polling interval", () => {
    const html = renderReport(report({ time: [1], watts: [[10]], cpuCores: [0.5], threads: [] }));
    expect(section(html, 'power')).toContain("This run was too short to draw power over time: it spans one of the collector&#39;s polling intervals (periodMs) or less.");
    expect(section(renderReport(report({ time: [1, 2], watts: [[10, 12]], cpuCores: [0.5, 1] })), 'proportionality')).toContain(
      "This run was too short for the proportionality curve: it spans two of the collector&#39;s polling intervals (periodMs) or less.",
    );
  });
});
