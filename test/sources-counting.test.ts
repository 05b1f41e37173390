// A source that opens but whose counters never move is refused, not read as 0 W. Seen on a real
// machine: a Firecracker guest of an Emerald Rapids host lists the perf power PMU with
// energy-psys, and the count stays 0 however busy the CPU. Emulated here three ways: MSR and
// powercap files nobody writes, and a software-PMU stand-in for the power PMU (perf-events.ts)
// whose events really open, one that never counts and one that always does.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openSource, type EnergySource, type SkippedSource } from '../src/sources';
import type { SourceName } from '../src/source-options';
import { Sampler } from '../src/sampler';
import { formatProbe, probe } from '../src/probe';
import { asHardware, createEmulatedMsr, createEmulatedPowercap, MSR, type EmulatedMsr } from './fixtures/emulated-devices';
import { CPU_CLOCK, createSoftwarePerfPmu, itPerf, NEVER_COUNTS } from './fixtures/perf-events';

const cleanup: Array<{ close(): void }> = [];
afterEach(() => {
  while (cleanup.length) cleanup.pop()!.close();
});
const keep = <T extends { close(): void }>(x: T): T => (cleanup.push(x), x);

const SKYLAKE = { vendor: 'intel', family: 6, model: 0x5e } as const;
const NOT_COUNTING = (ms: number, which: string) =>
  `no energy counter advanced in ${ms} ms (${which}; RAPL counters move about every millisecond) — ` +
  'the machine lists RAPL but does not count it, as hypervisors commonly do: measure on bare metal or in a VM ' +
  "given RAPL, or use source 'model' (an estimate); liveCheckMs sets the wait";

// The longest liveCheckMs: a check that waits it out where it should not is unmistakable. The
// tests that open with it take it as their timeout: a check that waited it out fails them.
const WINDOW_MS = 10_000;

function stillMsr() {
  const e = keep(createEmulatedMsr({ vendor: 'intel', cpus: 2 }));
  e.write(0, MSR.INTEL_UNIT, 0xa0e03);
  e.write(0, MSR.INTEL_PKG, 123456);
  e.write(0, MSR.INTEL_DRAM, 777);
  return e;
}

function softwarePmu(events: Record<string, string>) {
  return keep(createSoftwarePerfPmu(events)).options;
}

// A separate process advances one emulated MSR every 2 ms (the hardware: about every 1), from
// before the call until stop(); the open that follows is synchronous and blocks this process.
async function advancing(e: EmulatedMsr, msr: number): Promise<{ stop(): void }> {
  const start = e.read(0, msr);
  const child = spawn(
    ...asHardware([process.execPath, path.join(__dirname, 'fixtures/msr-writer.cjs'), path.join(e.dir, 'cpu0', 'msr'), String(msr), String(start), '1000', '1000000', '2']),
  );
  const stop = { close: () => child.kill() };
  keep(stop);
  const deadline = Date.now() + 10_000;
  while (e.read(0, msr) === start && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  return { stop: stop.close };
}

describe('a source whose counters do not advance', () => {
  it('is refused by name, with its domains and raw values, when chosen (msr)', () => {
    const e = stillMsr();
    const t0 = process.hrtime.bigint();
    expect(() => openSource({ source: 'msr', ...e.options, liveCheckMs: 30, cpuIdentity: SKYLAKE })).toThrow(
      expect.objectContaining({
        name: 'JouletraceError',
        code: 'ERR_JOULETRACE_NOT_COUNTING',
        message: NOT_COUNTING(30, 'package-0 stayed at 123456, dram-0 stayed at 777'),
      }),
    );
    // It waited the window out (a check that never ended would outlast the test's timeout).
    expect(Number(process.hrtime.bigint() - t0) / 1e6).toBeGreaterThanOrEqual(30);
  });

  it('is passed over by auto, which says why, and the model opens instead', () => {
    const e = stillMsr();
    const opts = { ...e.options, liveCheckMs: 20, cpuIdentity: SKYLAKE, perfPmuRoot: '/nonexistent/power', powercapRoot: '/nonexistent/powercap' };
    const s = keep(openSource({ source: 'auto', ...opts }));
    expect(s.name).toBe('model');
    expect(s.skipped[0]).toEqual({
      source: 'msr',
      code: 'ERR_JOULETRACE_NOT_COUNTING',
      message: NOT_COUNTING(20, 'package-0 stayed at 123456, dram-0 stayed at 777'),
    });
    const sampler = keep(new Sampler({ ...opts, threads: 'off' }));
    expect(sampler.source).toBe('model');
    // The same entries, of the same type (typed { source: string; code?; message? } on the
    // sampler, which gave `available`, `domains` and `notCounting` besides, and a stats().source
    // of type string): tsconfig.test.json type-checks the two assignments.
    const skipped: readonly SkippedSource[] = sampler.skipped;
    expect(skipped).toEqual(s.skipped);
    const source: SourceName = sampler.stats().source;
    expect(source).toBe(sampler.source);
  });

  it('is refused for powercap zones that never change, and probe() names the cause and the remedy', async () => {
    const pc = keep(createEmulatedPowercap([{ name: 'package-0', energyUj: 5_000_000, children: [{ name: 'dram', energyUj: 42 }] }]));
    expect(() => openSource({ source: 'powercap', powercapRoot: pc.powercapRoot, liveCheckMs: 10 })).toThrow(
      expect.objectContaining({ code: 'ERR_JOULETRACE_NOT_COUNTING', message: NOT_COUNTING(10, 'package-0 stayed at 5000000, dram-0 stayed at 42') }),
    );
    const r = await probe({ powercapRoot: pc.powercapRoot, liveCheckMs: 10, intervalMs: 20 });
    const p = r.sources.find((x) => x.source === 'powercap')!;
    expect(p.available).toBe(false);
    expect(p.code).toBe('ERR_JOULETRACE_NOT_COUNTING');
    expect(p.reason).toBe('no energy counter advanced in 10 ms (package-0 stayed at 5000000, dram-0 stayed at 42; RAPL counters move about every millisecond)');
    expect(p.remedy).toMatch(/^the machine lists RAPL but does not count it.*use source 'model' \(an estimate\); liveCheckMs sets the wait$/);
  });

  describe('with the package and dram counters moving, the core plane still', () => {
    // Set up in a hook, outside the test's timeout: the writers' start may take a while under load.
    let e: EmulatedMsr;
    let writers: Array<{ stop(): void }>;
    beforeEach(async () => {
      e = stillMsr();
      e.write(0, MSR.INTEL_PP0, 99); // a core plane: may idle, so never waited for
      writers = [await advancing(e, MSR.INTEL_DRAM), await advancing(e, MSR.INTEL_PKG)];
    });

    // Opened before its window ran out (the test's timeout): not a time budget (it takes
    // milliseconds), the check that it did not wait the window out once the counters it waits
    // for had moved.
    it('opens once the counters that always draw power have moved, whichever domain moves', () => {
      const s = keep(openSource({ source: 'msr', ...e.options, liveCheckMs: WINDOW_MS, cpuIdentity: SKYLAKE }));
      writers.forEach((w) => w.stop());
      expect(s.domains.map((d) => d.domain)).toEqual(['package', 'core', 'dram']);
      expect(s.notCounting).toEqual([]);
    }, WINDOW_MS);
  });

  it('leaves out a package counter that stays still while dram moves, and says so', async () => {
    const e = stillMsr();
    const w = await advancing(e, MSR.INTEL_DRAM); // the second domain: any domain counts
    const s = keep(openSource({ source: 'msr', ...e.options, liveCheckMs: 100, cpuIdentity: SKYLAKE }));
    const sampler = keep(new Sampler({ source: 'msr', ...e.options, liveCheckMs: 100, cpuIdentity: SKYLAKE, threads: 'off' }));
    w.stop();
    expect(s.domains.map((d) => `${d.domain}-${d.package}`)).toEqual(['dram-0']);
    expect(s.notCounting.map((d) => `${d.domain}-${d.package}`)).toEqual(['package-0']);
    expect(sampler.domains.map((d) => d.domain)).toEqual(['dram']);
    expect(sampler.notCounting.map((d) => d.domain)).toEqual(['package']);
    // Reads go through to the kept domain's own counter.
    const before = e.read(0, MSR.INTEL_DRAM);
    e.write(0, MSR.INTEL_DRAM, before + 16384n);
    const r = s.read();
    expect(r.readings).toHaveLength(1);
    expect(r.readings[0].domain).toBe('dram');
    expect(r.readings[0].joules).toBeGreaterThanOrEqual(1);
  });

  // A left-out domain's failed read still counted as the sampler's: its readErrors climbed every
  // sample, every record carried readError, start() began at 1, and calibrateBaseline() found no
  // clean stretch ever.
  it('counts no read error of a domain it left out', async () => {
    const e = stillMsr();
    const w = await advancing(e, MSR.INTEL_PKG);
    const s = keep(new Sampler({ source: 'msr', ...e.options, liveCheckMs: 100, cpuIdentity: SKYLAKE, intervalUs: 1000, threads: 'off' }));
    expect(s.domains.map((d) => `${d.domain}-${d.package}`)).toEqual(['package-0']);
    expect(s.notCounting.map((d) => `${d.domain}-${d.package}`)).toEqual(['dram-0']);
    // dram's register now lies past the end of the file (EIO); the package's, before it, reads.
    fs.truncateSync(path.join(e.dir, 'cpu0', 'msr'), MSR.INTEL_DRAM);
    s.start();
    for (const end = Date.now() + 5000; s.stats().timing.samples < 20 && Date.now() < end; ) await new Promise((r) => setTimeout(r, 5));
    s.stop();
    w.stop();
    expect(s.stats().timing.samples).toBeGreaterThanOrEqual(20);
    expect(s.stats().timing.readErrors).toBe(0);
    expect(s.read().filter((r) => r.readError)).toEqual([]);
  });

  it('is not checked with liveCheckMs: 0 (emulated devices that move only when written)', () => {
    const e = stillMsr();
    const s: EnergySource = keep(openSource({ source: 'msr', ...e.options, liveCheckMs: 0, cpuIdentity: SKYLAKE }));
    expect(s.read().readings.map((r) => r.joules)).toEqual([0, 0]);
  });

  itPerf('is refused for a perf event that opens and reads but stays at 0 (the Firecracker psys case)', () => {
    const pmu = softwarePmu({ 'energy-psys': NEVER_COUNTS });
    expect(() => openSource({ source: 'perf', ...pmu, liveCheckMs: 20 })).toThrow(
      expect.objectContaining({ code: 'ERR_JOULETRACE_NOT_COUNTING', message: NOT_COUNTING(20, 'psys-0 stayed at 0') }),
    );
    const opts = { ...pmu, liveCheckMs: 20, msrPath: '/nonexistent/cpu%d/msr', powercapRoot: '/nonexistent', cpuIdentity: SKYLAKE };
    const s = keep(openSource({ source: 'auto', ...opts }));
    expect(s.name).toBe('model');
    expect(s.skipped.map((k) => `${k.source} ${k.code}`)).toEqual(['msr ENOENT', 'perf ERR_JOULETRACE_NOT_COUNTING', 'powercap ENOENT']);
  });

  itPerf('leaves out a still perf package event beside a counting psys, and probe() lists it', async () => {
    const pmu = softwarePmu({ 'energy-pkg': NEVER_COUNTS, 'energy-psys': CPU_CLOCK });
    const s = keep(openSource({ source: 'perf', ...pmu, liveCheckMs: 100 }));
    expect(s.domains.map((d) => `${d.domain}-${d.package}`)).toEqual(['psys-0']);
    expect(s.notCounting.map((d) => `${d.domain}-${d.package}`)).toEqual(['package-0']);
    const a = s.read();
    await new Promise((r) => setTimeout(r, 20));
    const b = s.read();
    // cpu-clock counts nanoseconds, at the emulated scale of 1e-9 J each: about 1 J a second.
    const seconds = Number(b.timeNs - a.timeNs) / 1e9;
    const psys = b.readings[0].joules - a.readings[0].joules;
    expect(psys).toBeGreaterThan(seconds * 0.5);
    expect(psys).toBeLessThan(seconds * 1.5 + 0.01);
    const r = await probe({ ...pmu, liveCheckMs: 100, intervalMs: 20 });
    const p = r.sources.find((x) => x.source === 'perf')!;
    expect(p.available).toBe(true);
    expect(p.domains.map((d) => d.domain)).toEqual(['psys']);
    expect(p.domains[0].watts).toBeGreaterThan(0.5);
    expect(p.notCounting?.map((d) => `${d.domain}-${d.package}`)).toEqual(['package-0']);
    expect(formatProbe(r)).toContain('      package-0   left out: listed, but did not advance when the others did (not counted here)');
  });

  // Nothing waited for the core plane: it opened at the package's first move, before its window
  // ran out (the test's timeout, as above: the check is against the window, not a time budget).
  itPerf('keeps a still core event (a plane that may idle) beside a counting package', () => {
    const pmu = softwarePmu({ 'energy-pkg': CPU_CLOCK, 'energy-cores': NEVER_COUNTS });
    const s = keep(openSource({ source: 'perf', ...pmu, liveCheckMs: WINDOW_MS }));
    expect(s.domains.map((d) => d.domain)).toEqual(['package', 'core']);
    expect(s.notCounting).toEqual([]);
  }, { timeout: WINDOW_MS });
});
