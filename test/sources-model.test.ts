import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openSource, type EnergySource, type SourceReading } from '../src/sources';
import { createEmulatedProcStat, writeSysfsCpu } from './fixtures/emulated-devices';
import { openSourceInChild } from './fixtures/unprivileged';

const cleanup: Array<{ close(): void }> = [];
afterEach(() => {
  while (cleanup.length) cleanup.pop()!.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const spin = (ms: number, s?: EnergySource) => {
  const end = performance.now() + ms;
  while (performance.now() < end) s?.read();
};

function watts(a: SourceReading, b: SourceReading, i = 0): number {
  return (b.readings[i].joules - a.readings[i].joules) / (Number(b.timeNs - a.timeNs) / 1e9);
}

/** The machine's busy and total ticks from /proc/stat, counted as the model counts them. */
function machineBusyTotal(): { busy: number; total: number } {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const busy = f[0] + f[1] + f[2] + f[5] + f[6];
  return { busy, total: busy + f[3] + f[4] + f[7] };
}

function track<T extends { close(): void }>(x: T): T {
  cleanup.push(x);
  return x;
}

/** 4 CPUs on 2 packages, with a /proc/stat the test drives. */
function emulated(idle = 10, max = 110) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-model-'));
  track({ close: () => fs.rmSync(dir, { recursive: true, force: true }) });
  const { sysfsCpuRoot } = writeSysfsCpu(dir, { cpus: 4, packages: 2 });
  const stat = track(createEmulatedProcStat(4));
  const s = track(
    openSource({ source: 'model', procStatPath: stat.procStatPath, sysfsCpuRoot, modelIdleWatts: idle, modelMaxWatts: max }),
  );
  return { stat, s };
}

describe('model source on this machine', () => {
  it('produces estimated, monotonic, growing energy for each package', async () => {
    const s = track(openSource({ source: 'model' }));
    expect(s.name).toBe('model');
    expect(s.domains.length).toBeGreaterThan(0);
    // µJ: a 64-bit count of nJ overflowed after 18.4 GJ (213 days at 1 kW); one of µJ holds 2^44 J.
    for (const d of s.domains) expect(d).toMatchObject({ domain: 'package', unitJoules: 1e-6, estimated: true, wrapJoules: 0 });
    let prev = s.read();
    for (let i = 0; i < 2000; i++) {
      const r = s.read();
      r.readings.forEach((x, j) => expect(x.joules).toBeGreaterThanOrEqual(prev.readings[j].joules));
      prev = r;
    }
    await sleep(50);
    const later = s.read();
    expect(later.readings.every((r) => r.estimated)).toBe(true);
    expect(later.readings[0].joules).toBeGreaterThan(prev.readings[0].joules);
  });

  it('estimates more power while this thread spins than while it sleeps', async (ctx) => {
    const idleW = 10;
    const maxW = 110;
    const cpus = os.cpus().length;
    const total = (a: SourceReading, b: SourceReading) => a.readings.reduce((w, _, i) => w + watts(a, b, i), 0);
    const utilisation = (x: { busy: number; total: number }, y: { busy: number; total: number }) => (y.busy - x.busy) / (y.total - x.total);
    // The model's watts over a window, against what /proc/stat reported for it. The model
    // refreshes every 10 ms and /proc/stat counts in 10 ms ticks: over 300 ms its rate can trail
    // the test's own reading by a few percent of the idle-to-max range. The test reads /proc/stat
    // just inside the model's window; were it descheduled between the two reads, the model's
    // window holds time the test's does not (a full-suite run once saw 12.5 W of disagreement on
    // an idle window), so that share of the range is allowed too.
    const expectFollows = (w: number, util: number, outsideNs: bigint, windowNs: bigint) =>
      expect(Math.abs(w - (idleW + (maxW - idleW) * util))).toBeLessThanOrEqual((maxW - idleW) * (0.1 + Number(outsideNs) / Number(windowNs)));
    const now = () => process.hrtime.bigint();
    let best: { idle: number; busy: number } | undefined;
    // Whether one spinning thread shows depends on what else the machine runs meanwhile (other
    // test files, a loaded CI host): a few attempts ride that out. That the model follows the
    // utilisation /proc/stat reported is asserted on every one; that the spin shows, only where
    // the machine had a CPU to spare before it (on a saturated machine a spin changes nothing).
    for (let attempt = 0; attempt < 8; attempt++) {
      const s = track(openSource({ source: 'model', modelIdleWatts: idleW, modelMaxWatts: maxW }));
      await sleep(30);
      let t = now();
      const a = s.read();
      const stat0 = machineBusyTotal();
      let outside = now() - t;
      await sleep(300);
      t = now();
      const stat1 = machineBusyTotal();
      const b = s.read();
      expectFollows(total(a, b), utilisation(stat0, stat1), outside + now() - t, b.timeNs - a.timeNs);
      spin(30, s);
      t = now();
      const c = s.read();
      const stat2 = machineBusyTotal();
      outside = now() - t;
      spin(300, s);
      t = now();
      const stat3 = machineBusyTotal();
      const d = s.read();
      expectFollows(total(c, d), utilisation(stat2, stat3), outside + now() - t, d.timeNs - c.timeNs);
      const w = { idle: total(a, b), busy: total(c, d) };
      expect(w.idle).toBeGreaterThanOrEqual(idleW * 0.99);
      // Never above the maximum, but for what came due in the window from before it: the model
      // values a 10 ms period at its end (the one running at c, begun before c, is paid at the
      // busy rate after it), and carries busy time a period could not hold for one more period.
      // 111.25 W was seen under load; an overcount such as the 65% one it once had stays far above.
      expect(w.busy).toBeLessThanOrEqual(maxW + ((maxW - idleW) * 20e6) / Number(d.timeNs - c.timeNs));
      if (utilisation(stat0, stat1) > 1 - 1 / cpus) continue;
      if (best === undefined || w.busy - w.idle > best.busy - best.idle) best = w;
      // One busy thread of `cpus` is 1/cpus of the machine.
      if (best.busy >= idleW + ((maxW - idleW) / cpus) * 0.8 && best.busy > best.idle + (maxW - idleW) / cpus / 2) break;
    }
    // Not a pass: what the test is named for went unchecked. Load, not configuration, so no
    // REQUIRE variable turns it into a failure; a machine of one CPU always lands here.
    if (best === undefined) {
      return ctx.skip(
        `every one of 8 attempts found the machine's CPUs busy before the spin (${cpus} CPU${cpus === 1 ? '' : 's'}): a spinning thread could not show; only the model's agreement with /proc/stat was checked`,
      );
    }
    expect(best.busy).toBeGreaterThanOrEqual(idleW + ((maxW - idleW) / cpus) * 0.8);
    expect(best.busy).toBeGreaterThan(best.idle + (maxW - idleW) / cpus / 2);
  });

  it('defaults to 10 W + 1 W per CPU when idle-ish and never exceeds 10 W + 8 W per CPU', async () => {
    const s = track(openSource({ source: 'model' }));
    const n = os.cpus().length;
    await sleep(20);
    const a = s.read();
    await sleep(200);
    const w = watts(a, s.read());
    expect(w).toBeGreaterThanOrEqual((10 + n) * 0.99);
    expect(w).toBeLessThanOrEqual((10 + 8 * n) * 1.01);
  });
});

describe('model source against an emulated /proc/stat', () => {
  // Without topology the model takes every CPU for package 0: right for a container without
  // sysfs at the default root, a silent merge of packages at a root given by mistake.
  it('refuses a CPU topology root given that holds none, naming options.sysfsCpuRoot, as auto does', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-model-'));
    track({ close: () => fs.rmSync(dir, { recursive: true, force: true }) });
    const stat = track(createEmulatedProcStat(4));
    const message =
      `${dir}/online: No such file or directory — cannot tell which CPUs are online; ` +
      "check options.sysfsCpuRoot: it should name where this process sees the host's /sys/devices/system/cpu";
    for (const source of ['model', 'auto'] as const) {
      expect(() => openSource({ source, procStatPath: stat.procStatPath, sysfsCpuRoot: dir })).toThrow(
        expect.objectContaining({ code: 'ENOENT', message }),
      );
    }
  });

  // open() of a FIFO waits for a writer, forever: a path given by mistake hung openSource().
  it('refuses a FIFO at options.procStatPath, naming the option, without waiting on it', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-model-'));
    track({ close: () => fs.rmSync(dir, { recursive: true, force: true }) });
    const fifo = path.join(dir, 'stat');
    execFileSync('mkfifo', [fifo]);
    expect(openSourceInChild({ source: 'model', procStatPath: fifo })).toEqual({
      code: 'EINVAL',
      message: `${fifo}: a FIFO, not a file or character device — check options.procStatPath: it should name where this process sees the host's /proc/stat`,
    });
  });

  // A container without sysfs CPU topology, made with a tmpfs over it in a mount namespace of
  // its own (root only): the default root written otherwise is the default, done without.
  it.skipIf(process.getuid?.() !== 0)('does without topology at the default root written with a trailing slash or /.', () => {
    const script = `const { openSource } = require(${JSON.stringify(path.join(__dirname, '..', 'dist/cjs/index.js'))});
      for (const sysfsCpuRoot of [undefined, '/sys/devices/system/cpu/', '/sys/devices/system/cpu/.']) {
        try { openSource({ source: 'model', sysfsCpuRoot }).close(); console.log('opened'); }
        catch (e) { console.log(e.code, e.message); }
      }`;
    const r = spawnSync('unshare', ['-m', 'sh', '-c', 'mount -t tmpfs none /sys/devices/system/cpu && exec "$0" -e "$1"', process.execPath, script], {
      encoding: 'utf8',
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual(['opened', 'opened', 'opened']);
  });

  it('splits power per package by each package’s utilisation and CPU share', async () => {
    const { stat, s } = emulated();
    expect(s.domains.map((d) => d.package)).toEqual([0, 1]);
    for (const cpu of [0, 1]) stat.advance(cpu, 100, 0);
    for (const cpu of [2, 3]) stat.advance(cpu, 0, 100);
    await sleep(15);
    const a = s.read(); // refresh: package 0 at 100%, package 1 at 0%
    await sleep(150);
    const b = s.read();
    // Half the CPUs each: 0.5 x 110 W and 0.5 x 10 W.
    expect(watts(a, b, 0)).toBeCloseTo(55, 0);
    expect(watts(a, b, 1)).toBeCloseTo(5, 0);
    const d0 = b.readings[0].joules - a.readings[0].joules;
    const d1 = b.readings[1].joules - a.readings[1].joules;
    expect(d0 / d1).toBeCloseTo(11, 4);
  });

  it("counts steal time (the hypervisor's, for other guests) as idle, not busy", async () => {
    const { stat, s } = emulated();
    const a = s.read();
    // Package 0: 90% stolen, 10% idle; package 1: 50% busy, 50% stolen.
    for (const cpu of [0, 1]) stat.advance(cpu, 0, 10, 90);
    for (const cpu of [2, 3]) stat.advance(cpu, 50, 0, 50);
    await sleep(250);
    const b = s.read();
    // Idle: half of 10 W. Half busy: half of 10 W + 100 W × 50% (it read 5 W + 45 W × 2 with steal busy).
    expect(watts(a, b, 0)).toBeCloseTo(5, 0);
    expect(watts(a, b, 1)).toBeGreaterThan(30 * 0.95);
    expect(watts(a, b, 1)).toBeLessThan(30 * 1.05);
  });

  it('credits a long gap between reads at the utilisation measured over that gap', async () => {
    const { stat, s } = emulated();
    const a = s.read();
    for (let cpu = 0; cpu < 4; cpu++) stat.advance(cpu, 100, 0);
    await sleep(250);
    const b = s.read();
    expect(watts(a, b, 0) + watts(a, b, 1)).toBeGreaterThan(110 * 0.95);
    expect(watts(a, b, 0) + watts(a, b, 1)).toBeLessThan(110 * 1.05);
  });

  // A CPU that spins while its neighbour idles, as /proc/stat shows it in 10 ms periods: a
  // period holds zero to three of the package's jiffies, and the spinning CPU's busy ones land
  // 0, 2, 1 at a time. Over the run it was busy half of the package's jiffies: 0.5 × 60 W
  // (package 0's half of 10 W + 100 W × 50%). Valued period by period (0%, 67%, 50%), the model
  // read 39% busy: 24.4 W; with a period of no jiffy at all valued empty, 47.5% of 60 W.
  it.each([
    ['one to three jiffies a period', [[0, 1], [2, 1], [1, 1]]],
    ['some periods without any', [[0, 0], [2, 0], [0, 1], [0, 1]]],
  ] as Array<[string, Array<[number, number]>]>)('values busy jiffies at the average time per jiffy, not period by period: %s', async (_what, periods) => {
    // The emulated jiffies stand for 11 ms periods, whatever the timer did. A sleep that a loaded
    // machine stretches brings the same jiffies over more time, which real /proc/stat never
    // does. Stretched alike, the periods would leave the figure as it is (the time per jiffy
    // stretches with them); one stretched among the others is what moves it: the run is tried
    // again while its periods from the eighth before the measurement on (the average forgets an
    // eighth a period) spread by more than a quarter, and the run whose spread was the least
    // counts. (The longest period alone, up to 16 ms allowed, once let a run read 10.6% low
    // beside another session's eBPF tests; before that, a run with periods of up to 22 ms read
    // 7.06% low in a fresh-clone CI run, and one taken last of twelve stretched ones 14% low.)
    let measured = NaN;
    let best = Infinity;
    for (let attempt = 0; attempt < 20 && best > 1.25; attempt++) {
      const { stat, s } = emulated();
      const lengths: number[] = [];
      const step = async (i: number) => {
        const [busy, idle] = periods[i % periods.length];
        stat.advance(0, busy, 0);
        stat.advance(1, 0, idle);
        const t0 = performance.now();
        await sleep(11);
        lengths[i] = performance.now() - t0;
        return s.read(); // a refresh: more than 10 ms since the last
      };
      // The average time per jiffy starts from the first period with jiffies and forgets an
      // eighth a period: after 30 periods that start weighs under 2%.
      for (let i = 0; i < 30; i++) await step(i);
      const a = await step(30);
      let b = a;
      for (let i = 31; i < 31 + 24; i++) b = await step(i);
      const window = lengths.slice(22);
      const spread = Math.max(...window) / Math.min(...window);
      if (spread < best) {
        best = spread;
        measured = watts(a, b, 0);
      }
    }
    expect(measured).toBeGreaterThan(30 * 0.93);
    expect(measured).toBeLessThan(30 * 1.07);
  });

  it('re-reads /proc/stat at most every 10 ms and integrates at the last rate in between', async () => {
    const total = (x: SourceReading) => x.readings[0].joules + x.readings[1].joules;
    // Within 10 ms of a refresh the source must not re-read, so it integrates at the last rate
    // even though the machine went idle meanwhile. A try where this process was descheduled
    // past those 10 ms proves nothing either way, and is made again on a new machine: on the
    // same one, the idle ticks a given-up try left unread, or the debt its over-credit left
    // (see the next test), would lower the next try's rate.
    let w = NaN;
    let s: EnergySource | undefined;
    for (let attempt = 0; attempt < 10 && Number.isNaN(w); attempt++) {
      const m = emulated();
      s = m.s;
      for (let cpu = 0; cpu < 4; cpu++) m.stat.advance(cpu, 100, 0);
      await sleep(15);
      // The source credits by a clock read of its own (CLOCK_MONOTONIC, as hrtime) taken before
      // it scans /proc/stat; a reading's timeNs is taken after. Preempted between the two, a
      // read's timeNs is late: measured from refresh.timeNs a try could pass the source's next
      // refresh, and measured between timeNs the credited time looks short (a CI run read 89 W).
      // So the source's clock reads are bracketed by hrtime reads, and a try whose brackets are
      // loose (preempted at an edge) is made again.
      const now = () => process.hrtime.bigint();
      const beforeRefresh = now();
      s.read(); // refresh at 110 W
      const beforeFirst = now();
      const first = s.read();
      const afterFirst = now();
      for (let cpu = 0; cpu < 4; cpu++) m.stat.advance(cpu, 0, 100);
      let last = first;
      let beforeLast = afterFirst;
      do {
        beforeLast = now();
        last = s.read();
      } while (Number(last.timeNs - beforeRefresh) < 6e6);
      // The source's credited time lies between these two.
      const atMost = Number(last.timeNs - beforeFirst);
      const atLeast = Number(beforeLast - afterFirst);
      if (Number(last.timeNs - beforeRefresh) < 9e6 && atMost - atLeast < 3e5) {
        w = (total(last) - total(first)) / (atMost / 1e9); // within 5% below the source's rate
      }
    }
    expect(w).toBeGreaterThan(100);
    await sleep(15);
    const c = s!.read(); // refresh: now idle
    await sleep(100);
    const d = s!.read();
    expect((total(d) - total(c)) / (Number(d.timeNs - c.timeNs) / 1e9)).toBeCloseTo(10, 0);
  });

  it('pays back what it credited at a rate that a refresh found too high, instead of keeping it', async () => {
    // 0 W idle, 100 W busy. A refresh period credited at 100 W then measured idle is worth 0 J:
    // the total cannot go down, so the excess is a debt the next busy period pays.
    const total = (x: SourceReading) => x.readings[0].joules + x.readings[1].joules;
    let checked = false;
    // Each try on a new machine, as in the test above: a try given up leaves credit behind.
    for (let attempt = 0; attempt < 20 && !checked; attempt++) {
      const { stat, s } = emulated(0, 100);
      // Jiffies as a kernel counts them, in proportion to the time gone by (here 10 µs each),
      // all busy or all idle: the source values a jiffy at its recent average time per jiffy.
      let mark = process.hrtime.bigint();
      const all = (busy: boolean) => {
        const t = process.hrtime.bigint();
        const n = Math.max(1, Math.round(Number(t - mark) / 1e4));
        mark = t;
        stat.advanceAll(busy ? n : 0, busy ? 0 : n);
      };
      await sleep(15);
      all(true);
      const before = process.hrtime.bigint(); // as in the test above
      const r1 = s.read(); // refresh: busy, 100 W from here
      let last = r1;
      do last = s.read();
      while (Number(last.timeNs - r1.timeNs) < 5e6);
      // Descheduled past the next refresh: that period would be valued otherwise; try again.
      if (Number(last.timeNs - before) >= 9e6) continue;
      const credited = total(last) - total(r1);
      expect(credited).toBeGreaterThan(0.4); // 5 ms at 100 W, credited before the refresh says idle
      await sleep(15);
      all(false);
      const r2 = s.read(); // refresh: that period was idle, worth 0 J
      const idleCounted = mark;
      await sleep(15);
      all(true);
      const r3 = s.read(); // refresh: busy since r2
      // The jiffies are counted before each refresh reads them, 0.55-0.85 ms before here (the
      // read's own work). Descheduled in between (under load), the refresh's period holds time
      // the jiffies missed, and the busy period is valued short by it (180 mJ seen in CI).
      // Such a try says nothing: again.
      if (Number(r2.timeNs - idleCounted) > 1.2e6 || Number(r3.timeNs - mark) > 1.2e6) continue;
      // Worth, by the model: 0 J from r1 to r2, then 100 W from r2 to r3.
      const expected = (100 * Number(r3.timeNs - r2.timeNs)) / 1e9;
      // Kept instead of paid back, the credit would add over 400 mJ to that. Below it by up to
      // 150 mJ: the busy jiffies are valued at the recent average time per jiffy, which the
      // gaps between counting and reading (each up to 1.2 ms here) put off a little.
      expect(total(r3) - total(r1)).toBeLessThan(expected + 0.05);
      expect(total(r3) - total(r1)).toBeGreaterThan(expected - 0.15);
      checked = true;
    }
    expect(checked).toBe(true);
  });

  it('refuses one power figure that contradicts the default of the other, naming both', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-model-'));
    track({ close: () => fs.rmSync(dir, { recursive: true, force: true }) });
    const { sysfsCpuRoot } = writeSysfsCpu(dir, { cpus: 4, packages: 2 });
    const stat = track(createEmulatedProcStat(4));
    const open = (o: Record<string, number>) => openSource({ source: 'model', procStatPath: stat.procStatPath, sysfsCpuRoot, ...o });
    expect(() => open({ modelMaxWatts: 12 })).toThrow(
      expect.objectContaining({
        code: 'ERR_OUT_OF_RANGE',
        message: expect.stringContaining('options.modelMaxWatts (12 W) is below the default idle power, 10 W + 1 W per CPU = 14 W for 4 CPUs; give options.modelIdleWatts too'),
      }),
    );
    // A RangeError, as every other bad option is a TypeError or RangeError.
    expect(() => open({ modelMaxWatts: 12 })).toThrow(RangeError);
    expect(() => open({ modelIdleWatts: 50 })).toThrow('options.modelIdleWatts (50 W) is above the default maximum power, 10 W + 8 W per CPU = 42 W for 4 CPUs');
    track(open({ modelMaxWatts: 14 })); // equal to idle: a flat model, allowed
  });

  it('rejects a file that is not /proc/stat', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-model-'));
    track({ close: () => fs.rmSync(dir, { recursive: true, force: true }) });
    fs.writeFileSync(path.join(dir, 'stat'), 'hello\n');
    expect(() => openSource({ source: 'model', procStatPath: path.join(dir, 'stat') })).toThrow(
      expect.objectContaining({ code: 'EINVAL', message: `${dir}/stat: no cpuN lines for the online CPUs — not a /proc/stat file` }),
    );
    // The path is the user's, so the remedy is the option, not procfs at /proc.
    expect(() => openSource({ source: 'model', procStatPath: path.join(dir, 'missing') })).toThrow(
      expect.objectContaining({
        code: 'ENOENT',
        message: `${dir}/missing: No such file or directory — check options.procStatPath: it should name where this process sees the host's /proc/stat`,
      }),
    );
  });
});
