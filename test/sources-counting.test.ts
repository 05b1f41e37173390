// A source that opens but whose counters never move is refused, not read as 0 W. Seen on a real
// machine: a Firecracker guest of an Emerald Rapids host lists the perf power PMU with
// energy-psys, and the count stays 0 however busy the CPU. Emulated here three ways: MSR and
// powercap files nobody writes, and a software-PMU stand-in for the power PMU (perf-events.ts)
// whose events really open, one that never counts and one that always does.
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { openSource, type EnergySource } from '../src/sources';
import { Sampler } from '../src/sampler';
import { probe } from '../src/probe';
import { createEmulatedMsr, createEmulatedPowercap, MSR } from './fixtures/emulated-devices';
import { CPU_CLOCK, createSoftwarePerfPmu, itPerf, NEVER_COUNTS } from './fixtures/perf-events';

const run = promisify(execFile);
const cleanup: Array<{ close(): void }> = [];
afterEach(() => {
  while (cleanup.length) cleanup.pop()!.close();
});
const keep = <T extends { close(): void }>(x: T): T => (cleanup.push(x), x);

const SKYLAKE = { vendor: 'intel', family: 6, model: 0x5e } as const;
const NOT_COUNTING = (source: string, ms: number, which: string) =>
  `${source}: no energy counter advanced in ${ms} ms (${which}; RAPL counters move about every millisecond) — ` +
  'the machine lists RAPL but does not count it, as hypervisors commonly do: measure on bare metal or in a VM ' +
  "given RAPL, or use source 'model' (an estimate)";

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

describe('a source whose counters do not advance', () => {
  it('is refused by name, with its domains and raw values, when chosen (msr)', () => {
    const e = stillMsr();
    const t0 = process.hrtime.bigint();
    expect(() => openSource({ source: 'msr', ...e.options, liveCheckMs: 30, cpuIdentity: SKYLAKE })).toThrow(
      expect.objectContaining({
        name: 'JouletraceError',
        code: 'ERR_JOULETRACE_NOT_COUNTING',
        message: NOT_COUNTING('msr', 30, 'package-0 at 123456, dram-0 at 777'),
      }),
    );
    // It waited the window out, and not much longer.
    const waitedMs = Number(process.hrtime.bigint() - t0) / 1e6;
    expect(waitedMs).toBeGreaterThanOrEqual(30);
    expect(waitedMs).toBeLessThan(1000);
  });

  it('is passed over by auto, which says why, and the model opens instead', () => {
    const e = stillMsr();
    const opts = { ...e.options, liveCheckMs: 20, cpuIdentity: SKYLAKE, perfPmuRoot: '/nonexistent/power', powercapRoot: '/nonexistent/powercap' };
    const s = keep(openSource({ source: 'auto', ...opts }));
    expect(s.name).toBe('model');
    expect(s.skipped[0]).toEqual({ source: 'msr', code: 'ERR_JOULETRACE_NOT_COUNTING', message: NOT_COUNTING('msr', 20, 'package-0 at 123456, dram-0 at 777') });
    const sampler = keep(new Sampler({ ...opts, threads: 'off' }));
    expect(sampler.source).toBe('model');
    expect(sampler.skipped[0]).toMatchObject({ source: 'msr', code: 'ERR_JOULETRACE_NOT_COUNTING' });
  });

  it('is refused for powercap zones that never change, and probe() names the cause and the remedy', async () => {
    const pc = keep(createEmulatedPowercap([{ name: 'package-0', energyUj: 5_000_000, children: [{ name: 'core', energyUj: 42 }] }]));
    expect(() => openSource({ source: 'powercap', powercapRoot: pc.powercapRoot, liveCheckMs: 10 })).toThrow(
      expect.objectContaining({ code: 'ERR_JOULETRACE_NOT_COUNTING', message: NOT_COUNTING('powercap', 10, 'package-0 at 5000000, core-0 at 42') }),
    );
    const r = await probe({ powercapRoot: pc.powercapRoot, liveCheckMs: 10, intervalMs: 20 });
    const p = r.sources.find((x) => x.source === 'powercap')!;
    expect(p.available).toBe(false);
    expect(p.code).toBe('ERR_JOULETRACE_NOT_COUNTING');
    expect(p.remedy).toMatch(/^the machine lists RAPL but does not count it.*use source 'model' \(an estimate\)$/);
  });

  it('opens as soon as one counter moves, the others still', async () => {
    const e = stillMsr();
    // A separate process advances the package counter every 2 ms, as the hardware does every 1.
    const writer = run(process.execPath, [
      path.join(__dirname, 'fixtures/msr-writer.cjs'),
      path.join(e.dir, 'cpu0', 'msr'),
      String(MSR.INTEL_PKG),
      '123456',
      '1000',
      '150',
      '2',
    ]);
    // The writer's first step comes 2 ms after it starts; wait for it before the synchronous open.
    const deadline = Date.now() + 10_000;
    while (e.read(0, MSR.INTEL_PKG) === 123456n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    const t0 = process.hrtime.bigint();
    const s = keep(openSource({ source: 'msr', ...e.options, liveCheckMs: 5000, cpuIdentity: SKYLAKE }));
    expect(Number(process.hrtime.bigint() - t0) / 1e6).toBeLessThan(2500);
    expect(s.domains.map((d) => d.domain)).toEqual(['package', 'dram']);
    await writer;
  });

  it('is not checked with liveCheckMs: 0 (emulated devices that move only when written)', () => {
    const e = stillMsr();
    const s: EnergySource = keep(openSource({ source: 'msr', ...e.options, liveCheckMs: 0, cpuIdentity: SKYLAKE }));
    expect(s.read().readings.map((r) => r.joules)).toEqual([0, 0]);
  });

  itPerf('is refused for a perf event that opens and reads but stays at 0 (the Firecracker psys case)', () => {
    const pmu = softwarePmu({ 'energy-psys': NEVER_COUNTS });
    expect(() => openSource({ source: 'perf', ...pmu, liveCheckMs: 20 })).toThrow(
      expect.objectContaining({ code: 'ERR_JOULETRACE_NOT_COUNTING', message: NOT_COUNTING('perf', 20, 'psys-0 at 0') }),
    );
    const s = keep(openSource({ source: 'auto', ...pmu, liveCheckMs: 20, msrPath: '/nonexistent/cpu%d/msr', powercapRoot: '/nonexistent' }));
    expect(s.name).toBe('model');
    expect(s.skipped.map((k) => `${k.source} ${k.code}`)).toEqual(['msr ENOENT', 'perf ERR_JOULETRACE_NOT_COUNTING', 'powercap ENOENT']);
  });

  itPerf('keeps a perf source where one event counts and another does not, and reads it', async () => {
    const pmu = softwarePmu({ 'energy-pkg': CPU_CLOCK, 'energy-psys': NEVER_COUNTS });
    const s = keep(openSource({ source: 'perf', ...pmu, liveCheckMs: 1000 }));
    expect(s.domains.map((d) => `${d.domain}-${d.package}`)).toEqual(['package-0', 'psys-0']);
    const a = s.read();
    await new Promise((r) => setTimeout(r, 20));
    const b = s.read();
    // cpu-clock counts nanoseconds, at the emulated scale of 1e-9 J each: about 1 J a second.
    const seconds = Number(b.timeNs - a.timeNs) / 1e9;
    const pkg = b.readings[0].joules - a.readings[0].joules;
    expect(pkg).toBeGreaterThan(seconds * 0.5);
    expect(pkg).toBeLessThan(seconds * 1.5 + 0.01);
    expect(b.readings[1].joules).toBe(0);
  });
});
