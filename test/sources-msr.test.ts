import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Sampler } from '../src/sampler';
import { openSource, type EnergySource } from '../src/sources';
import { createEmulatedMsr, MSR, writeSysfsCpu, type EmulatedMsr } from './fixtures/emulated-devices';
import { openSourceAsNobody, openSourceInChild } from './fixtures/unprivileged';

const cleanup: Array<{ close(): void }> = [];
afterEach(() => {
  while (cleanup.length) cleanup.pop()!.close();
});

function emu(opts: Parameters<typeof createEmulatedMsr>[0]): EmulatedMsr {
  const e = createEmulatedMsr(opts);
  cleanup.push(e);
  return e;
}

// extra: more source options (msrAmdCores: AMD's per-core sum, off unless asked for).
function open(e: EmulatedMsr, cpuIdentity: { vendor: 'intel' | 'amd' | 'hygon'; family: number; model: number }, extra: { msrAmdCores?: boolean } = {}): EnergySource {
  const s = openSource({ source: 'msr', ...e.options, cpuIdentity, ...extra });
  cleanup.push(s);
  return s;
}

const SKYLAKE = { vendor: 'intel', family: 6, model: 0x5e } as const;
const ZEN3 = { vendor: 'amd', family: 0x19, model: 0x01 } as const;
const CORES = { msrAmdCores: true };

// Unit register with the given energy-status-unit and typical power/time units around it.
const unitReg = (esu: number) => (0xa << 16) | (esu << 8) | 0x3;

function joules(s: EnergySource, domain: string, pkg = 0): number {
  const r = s.read().readings.find((x) => x.domain === domain && x.package === pkg);
  if (!r) throw new Error(`no ${domain}-${pkg}`);
  return r.joules;
}

describe('msr source, Intel layout', () => {
  it.each([
    [14, 2 ** -14],
    [16, 2 ** -16],
    [0x0a, 2 ** -10],
  ])('decodes ESU %d as 1/2^ESU J', (esu, unit) => {
    const e = emu({ vendor: 'intel', cpus: 2 });
    e.write(0, MSR.INTEL_UNIT, unitReg(esu));
    e.write(0, MSR.INTEL_PKG, 5000);
    const s = open(e, SKYLAKE);
    expect(s.domains).toEqual([{ domain: 'package', package: 0, unitJoules: unit, estimated: false, wrapJoules: 2 ** 32 * unit }]);
    e.write(0, MSR.INTEL_PKG, 5000 + 3 * 2 ** esu);
    expect(joules(s, 'package')).toBe(3);
  });

  it('reads 61.035 µJ units for ESU 14 and reports every implemented domain', () => {
    const e = emu({ vendor: 'intel', cpus: 4 });
    e.write(0, MSR.INTEL_UNIT, unitReg(14));
    for (const m of [MSR.INTEL_PKG, MSR.INTEL_PP0, MSR.INTEL_PP1, MSR.INTEL_DRAM, MSR.INTEL_PSYS]) e.write(0, m, 100);
    const s = open(e, SKYLAKE);
    expect(s.name).toBe('msr');
    expect(s.domains.map((d) => d.domain)).toEqual(['package', 'core', 'uncore', 'dram', 'psys']);
    expect(s.domains[0].unitJoules * 1e6).toBeCloseTo(61.035, 3);
    e.write(0, MSR.INTEL_PP0, 100 + 16384 * 2);
    e.write(0, MSR.INTEL_DRAM, 100 + 16384);
    const r = s.read();
    expect(r.readings.map((x) => x.joules)).toEqual([0, 2, 0, 1, 0]);
    expect(r.error).toBeUndefined();
  });

  it('ignores the reserved upper 32 bits of energy status registers', () => {
    const e = emu({ vendor: 'intel' });
    e.write(0, MSR.INTEL_UNIT, unitReg(16));
    e.write(0, MSR.INTEL_PKG, (0xdeadn << 32n) | 10n);
    const s = open(e, SKYLAKE);
    e.write(0, MSR.INTEL_PKG, (0xbeefn << 32n) | (10n + 65536n));
    expect(joules(s, 'package')).toBe(1);
  });

  it('extends a counter across a 32-bit wrap exactly', () => {
    const e = emu({ vendor: 'intel' });
    e.write(0, MSR.INTEL_UNIT, unitReg(16));
    e.write(0, MSR.INTEL_PKG, 0xfffff000);
    const s = open(e, SKYLAKE);
    e.write(0, MSR.INTEL_PKG, 0xffffff00);
    expect(joules(s, 'package')).toBe(0xf00 / 65536);
    e.write(0, MSR.INTEL_PKG, 0x100);
    expect(joules(s, 'package')).toBe((0x1000 + 0x100) / 65536);
    const r = s.read();
    expect(r.readings[0].joules).toBe(4352 / 65536);
  });

  it('takes a counter that goes back by less than half a wrap for one that started again: a read error, not a wrap', () => {
    const e = emu({ vendor: 'intel' });
    e.write(0, MSR.INTEL_UNIT, unitReg(14));
    e.write(0, MSR.INTEL_PKG, 5 * 16384);
    const s = open(e, SKYLAKE);
    e.write(0, MSR.INTEL_PKG, 3 * 16384); // back by 2 J: as a wrap, 2^32 units less 2 J (262 kJ)
    const back = s.read();
    expect(back.error).toBe('ERANGE');
    expect(back.readings[0].joules).toBe(0);
    e.write(0, MSR.INTEL_PKG, 4 * 16384); // and on from there
    const on = s.read();
    expect(on.error).toBeUndefined();
    expect(on.readings[0].joules).toBe(1);
    // A real wrap, under half the counter's range, still counts (opened just below 2^32: a jump
    // there of 262 kJ in a millisecond would read as a restart).
    e.write(0, MSR.INTEL_PKG, 0xffffc000);
    const w = open(e, SKYLAKE);
    e.write(0, MSR.INTEL_PKG, 0x4000);
    const wrapped = w.read();
    expect(wrapped.error).toBeUndefined();
    expect(wrapped.readings[0].joules).toBe(2);
  });

  // A counter that started again from a value in the upper half of its range lands less than
  // half a wrap below it: that read as a wrap, 131 kJ in one interval (2^31 units of 61 µJ),
  // charged to the threads that ran then and flagged nowhere.
  it('takes a counter that restarts from the upper half of its range for one that started again, by the power its wrap would mean', () => {
    const e = emu({ vendor: 'intel' });
    e.write(0, MSR.INTEL_UNIT, unitReg(14));
    e.write(0, MSR.INTEL_PKG, 2 ** 31 + 51_000);
    const s = open(e, SKYLAKE);
    e.write(0, MSR.INTEL_PKG, 5000);
    const back = s.read();
    expect(back.error).toBe('ERANGE');
    expect(back.readings[0].joules).toBe(0);
    e.write(0, MSR.INTEL_PKG, 5000 + 16384); // and on from there
    const on = s.read();
    expect(on.error).toBeUndefined();
    expect(on.readings[0].joules).toBe(1);
    // A wrap just below 2^32 to a small value is a few joules: still counted, exactly.
    e.write(0, MSR.INTEL_PKG, 2 ** 32 - 3 * 16384);
    const w = open(e, SKYLAKE);
    e.write(0, MSR.INTEL_PKG, 16384);
    const wrapped = w.read();
    expect(wrapped.error).toBeUndefined();
    expect(wrapped.readings[0].joules).toBe(4);
  });

  it('omits domains whose MSR is beyond the device (EIO) or reads zero', () => {
    const e = emu({ vendor: 'intel' });
    e.write(0, MSR.INTEL_UNIT, unitReg(14));
    e.write(0, MSR.INTEL_PKG, 1);
    // 0x639, 0x641 and 0x64D lie past end-of-file: short reads, the driver's EIO.
    expect(open(e, SKYLAKE).domains.map((d) => d.domain)).toEqual(['package']);
    e.write(0, MSR.INTEL_PP0, 7);
    e.write(0, MSR.INTEL_PSYS, 9);
    // Now 0x641 and 0x619 are below end-of-file but zero: implemented-but-unused, also absent.
    expect(open(e, SKYLAKE).domains.map((d) => d.domain)).toEqual(['package', 'core', 'psys']);
  });

  it('reads one CPU per package and psys once, from package 0', () => {
    const e = emu({ vendor: 'intel', cpus: 4, packages: 2 });
    for (const cpu of [0, 2]) {
      e.write(cpu, MSR.INTEL_UNIT, unitReg(16));
      e.write(cpu, MSR.INTEL_PKG, 1000);
      e.write(cpu, MSR.INTEL_PSYS, 1000);
    }
    const s = open(e, SKYLAKE);
    expect(s.domains.map((d) => `${d.domain}-${d.package}`)).toEqual(['package-0', 'psys-0', 'package-1']);
    e.write(0, MSR.INTEL_PKG, 1000 + 65536);
    e.write(2, MSR.INTEL_PKG, 1000 + 3 * 65536);
    e.write(2, MSR.INTEL_PSYS, 1000 + 5 * 65536); // package 1's psys copy is never read
    e.write(1, MSR.INTEL_PKG, 77); // nor are the second CPUs of each package
    e.write(3, MSR.INTEL_PKG, 77);
    expect(s.read().readings.map((r) => r.joules)).toEqual([1, 0, 3]);
  });

  it("takes psys from the package where it counts, which need not be package 0's", () => {
    const e = emu({ vendor: 'intel', cpus: 4, packages: 2 });
    for (const cpu of [0, 2]) {
      e.write(cpu, MSR.INTEL_UNIT, unitReg(16));
      e.write(cpu, MSR.INTEL_PKG, 1000);
    }
    e.write(0, MSR.INTEL_PSYS, 0); // multi-socket Sapphire Rapids: zero but on one package
    e.write(2, MSR.INTEL_PSYS, 1000);
    const s = open(e, SKYLAKE);
    expect(s.domains.map((d) => `${d.domain}-${d.package}`)).toEqual(['package-0', 'package-1', 'psys-0']);
    e.write(2, MSR.INTEL_PSYS, 1000 + 7 * 65536);
    expect(s.read().readings.map((r) => r.joules)).toEqual([0, 0, 7]);
  });

  it('uses the fixed 2^-16 J DRAM unit on Haswell-EP and the register unit elsewhere', () => {
    const e = emu({ vendor: 'intel' });
    e.write(0, MSR.INTEL_UNIT, unitReg(14));
    e.write(0, MSR.INTEL_PKG, 1);
    e.write(0, MSR.INTEL_DRAM, 1);
    const hsx = open(e, { vendor: 'intel', family: 6, model: 0x3f });
    const unit = (s: EnergySource, d: string) => s.domains.find((x) => x.domain === d)!.unitJoules;
    expect(unit(hsx, 'dram')).toBe(2 ** -16);
    expect(unit(hsx, 'package')).toBe(2 ** -14);
    for (const model of [0x4f, 0x56, 0x55, 0x6a, 0x6c, 0x57, 0x85]) {
      expect(unit(open(e, { vendor: 'intel', family: 6, model }), 'dram')).toBe(2 ** -16);
    }
    expect(unit(open(e, SKYLAKE), 'dram')).toBe(2 ** -14);
    e.write(0, MSR.INTEL_DRAM, 1 + 65536 * 2);
    expect(joules(hsx, 'dram')).toBe(2);
  });

  it('counts psys in whole joules on Sapphire and Emerald Rapids, as the kernel does', () => {
    const e = emu({ vendor: 'intel' });
    e.write(0, MSR.INTEL_UNIT, unitReg(14));
    e.write(0, MSR.INTEL_PKG, 1);
    e.write(0, MSR.INTEL_PSYS, 1);
    const unit = (s: EnergySource, d: string) => s.domains.find((x) => x.domain === d)!.unitJoules;
    for (const model of [0x8f, 0xcf]) {
      const spr = open(e, { vendor: 'intel', family: 6, model });
      expect(unit(spr, 'psys')).toBe(1);
      expect(unit(spr, 'package')).toBe(2 ** -14);
    }
    expect(unit(open(e, SKYLAKE), 'psys')).toBe(2 ** -14);
    const spr = open(e, { vendor: 'intel', family: 6, model: 0x8f });
    e.write(0, MSR.INTEL_PSYS, 1 + 150); // within the 200 J a read may show at once (WrapCounter::kSlackNs)
    expect(joules(spr, 'psys')).toBe(150);
  });

  it('uses 2^ESU µJ on Silvermont', () => {
    const e = emu({ vendor: 'intel' });
    e.write(0, MSR.INTEL_UNIT, unitReg(5));
    e.write(0, MSR.INTEL_PKG, 10);
    const s = open(e, { vendor: 'intel', family: 6, model: 0x37 });
    expect(s.domains[0].unitJoules).toBeCloseTo(32e-6, 15);
    e.write(0, MSR.INTEL_PKG, 10 + 1000);
    expect(joules(s, 'package')).toBeCloseTo(0.032, 12);
  });

  it('returns EIO mid-run, keeps the last reading and recovers the missed energy exactly', () => {
    const e = emu({ vendor: 'intel' });
    e.write(0, MSR.INTEL_UNIT, unitReg(16));
    e.write(0, MSR.INTEL_PKG, 100);
    const s = open(e, SKYLAKE);
    e.write(0, MSR.INTEL_PKG, 100 + 65536);
    expect(joules(s, 'package')).toBe(1);
    e.truncate(0);
    const bad = s.read();
    expect(bad.error).toBe('EIO');
    expect(bad.readings[0].joules).toBe(1);
    e.write(0, MSR.INTEL_UNIT, unitReg(16));
    e.write(0, MSR.INTEL_PKG, 100 + 4 * 65536);
    const good = s.read();
    expect(good.error).toBeUndefined();
    expect(good.readings[0].joules).toBe(4);
  });
});

describe('msr source, topology', () => {
  // Each read of another CPU's MSR is a cross-CPU call: pinned, the sampler reads its own package there.
  it.skipIf(os.availableParallelism() < 2)('reads the package on the CPU the sampler is pinned to', async () => {
    const e = emu({ vendor: 'intel', cpus: 2 });
    for (const cpu of [0, 1]) {
      e.write(cpu, MSR.INTEL_UNIT, unitReg(16));
      e.write(cpu, MSR.INTEL_PKG, 1000);
    }
    const s = new Sampler({ source: 'msr', ...e.options, cpuIdentity: SKYLAKE, threads: 'off', cpu: 1, intervalUs: 1000 });
    cleanup.push(s);
    s.start();
    e.write(1, MSR.INTEL_PKG, 1000 + 3 * 65536); // only CPU 1's device moves
    await new Promise((r) => setTimeout(r, 30));
    s.stop();
    expect(s.totals().readings[0].joules).toBe(3);
  });

  // The sampler's CPU is a preference: the README's own setup (a container given /dev/cpu/0/msr
  // alone, the sampler pinned to a housekeeping CPU) failed with ENOENT for cpu1/msr, and 'auto'
  // fell to the model without a word of it, though CPU 0 reads the same package counter.
  it.skipIf(os.availableParallelism() < 2)(
    "reads the package on another of its CPUs where the sampler's CPU's device is missing or does not read",
    async () => {
      for (const fail of ['missing', 'EIO'] as const) {
        const e = emu({ vendor: 'intel', cpus: 2 });
        e.write(0, MSR.INTEL_UNIT, unitReg(16));
        e.write(0, MSR.INTEL_PKG, 1000);
        if (fail === 'missing') fs.rmSync(e.msrPath.replace('%d', '1'));
        const s = new Sampler({ source: 'auto', ...e.options, cpuIdentity: SKYLAKE, threads: 'off', cpu: 1, intervalUs: 1000, perfPmuRoot: '/nonexistent', powercapRoot: '/nonexistent' });
        cleanup.push(s);
        expect(s.source).toBe('msr');
        s.start();
        e.write(0, MSR.INTEL_PKG, 1000 + 3 * 65536);
        await new Promise((r) => setTimeout(r, 30));
        s.stop();
        expect(s.totals().readings[0].joules).toBe(3);
      }
    },
  );

  const writeTopo = (e: EmulatedMsr, cpu: number, file: string, value: string | undefined) => {
    const p = `${e.sysfsCpuRoot}/cpu${cpu}/topology/${file}`;
    if (value === undefined) fs.rmSync(p, { force: true });
    else fs.writeFileSync(p, `${value}\n`);
  };

  // Cascade Lake-AP: two dies a package, each with its own RAPL counters (Linux reads each die).
  // Reading one CPU a package left the second die's energy out.
  it("sums a multi-die Intel package's dies into its domains", () => {
    const e = emu({ vendor: 'intel', cpus: 4, packages: 1 });
    [0, 0, 1, 1].forEach((die, cpu) => writeTopo(e, cpu, 'die_id', String(die)));
    for (const cpu of [0, 2]) {
      e.write(cpu, MSR.INTEL_UNIT, unitReg(16));
      e.write(cpu, MSR.INTEL_PKG, 1000);
      e.write(cpu, MSR.INTEL_DRAM, 500);
    }
    const s = open(e, SKYLAKE);
    expect(s.domains.map((d) => `${d.domain}-${d.package}`)).toEqual(['package-0', 'dram-0']);
    e.write(0, MSR.INTEL_PKG, 1000 + 10 * 65536);
    e.write(2, MSR.INTEL_PKG, 1000 + 6 * 65536);
    e.write(2, MSR.INTEL_DRAM, 500 + 2 * 65536);
    expect(s.read().readings.map((r) => r.joules)).toEqual([16, 2]);
  });

  // A domain of one counter holds its last value while its read fails, and attribution holds its
  // time until the gap's energy comes. A package of two dies read as the other die's sum
  // meanwhile: it moved, attribution split each interval of the gap with one die's energy, and
  // the failed die's came whole at its recovery, to whoever ran then.
  it("holds a multi-die package at its last sum while a die's read fails, for a second at most", async () => {
    const e = emu({ vendor: 'intel', cpus: 2, packages: 1, dies: 2 });
    for (const cpu of [0, 1]) {
      e.write(cpu, MSR.INTEL_UNIT, unitReg(16));
      e.write(cpu, MSR.INTEL_PKG, 1000);
    }
    const s = open(e, SKYLAKE);
    e.write(0, MSR.INTEL_PKG, 1000 + 2 * 65536);
    e.write(1, MSR.INTEL_PKG, 1000 + 65536);
    expect(joules(s, 'package')).toBe(3);
    e.truncate(1); // die 1's only CPU answers EIO
    e.write(0, MSR.INTEL_PKG, 1000 + 5 * 65536);
    const gap = s.read();
    expect(gap.error).toBe('EIO');
    expect(gap.readings[0].joules).toBe(3);
    // Die 1 back, with its gap's energy: the package's whole.
    e.write(1, MSR.INTEL_UNIT, unitReg(16));
    e.write(1, MSR.INTEL_PKG, 1000 + 4 * 65536);
    const back = s.read();
    expect(back.error).toBeUndefined();
    expect(back.readings[0].joules).toBe(9);
    // Die 1 fails for good (its CPUs offline): past a second, die 0's energy is read without it.
    e.truncate(1);
    e.write(0, MSR.INTEL_PKG, 1000 + 6 * 65536);
    const failedAt = process.hrtime.bigint();
    expect(joules(s, 'package')).toBe(9);
    while (process.hrtime.bigint() - failedAt <= 1_050_000_000n) await new Promise((r) => setTimeout(r, 50));
    expect(joules(s, 'package')).toBe(10);
  });

  // As Linux's RAPL driver moves its lead CPU: the package's energy goes on, read elsewhere,
  // where it was frozen at a read error for as long as the CPU stayed offline.
  it("reads a package's counter on another of its CPUs once its CPU goes offline, without a break, and on it again once it is back", () => {
    const e = emu({ vendor: 'intel', cpus: 4, packages: 2 });
    for (const cpu of [0, 1, 2, 3]) {
      e.write(cpu, MSR.INTEL_UNIT, unitReg(16));
      e.write(cpu, MSR.INTEL_PKG, 1000);
    }
    const s = open(e, SKYLAKE);
    e.truncate(2); // package 1's CPU goes offline: its device answers EIO
    for (const cpu of [0, 1, 3]) e.write(cpu, MSR.INTEL_PKG, 1000 + 5 * 65536);
    const r = s.read();
    expect(r.error).toBeUndefined();
    expect(r.readings.map((x) => `${x.domain}-${x.package} ${x.joules}`)).toEqual(['package-0 5', 'package-1 5']);
    e.write(3, MSR.INTEL_PKG, 1000 + 7 * 65536);
    expect(joules(s, 'package', 1)).toBe(7);
    // CPU 2 comes back, then CPU 3 goes: the counter goes back to CPU 2. Each spare was dropped
    // once used, so from here every read was an EIO though CPU 2 could read it.
    e.write(2, MSR.INTEL_UNIT, unitReg(16));
    e.write(2, MSR.INTEL_PKG, 1000 + 7 * 65536);
    e.truncate(3);
    e.write(2, MSR.INTEL_PKG, 1000 + 9 * 65536);
    const back = s.read();
    expect(back.error).toBeUndefined();
    expect(back.readings[1].joules).toBe(9);
  });

  // A container given /dev/cpu/0/msr alone: once CPU 0's reads fail, its spare's missing device
  // was opened again at every read (a path built and a failed openat a sample on the sampler
  // thread), then at most every 100 ms. Devices are opened at open only now (after privileges
  // are dropped, an open on the sampler thread could not work): one that did not open then is no
  // spare, and is not read once it appears, even past 100 ms.
  it("takes a CPU whose device did not open at open for no spare, and opens nothing once running", async () => {
    const e = emu({ vendor: 'intel', cpus: 2, packages: 1 });
    e.write(0, MSR.INTEL_UNIT, unitReg(16));
    e.write(0, MSR.INTEL_PKG, 1000);
    const spare = e.msrPath.replace('%d', '1');
    fs.rmSync(spare);
    const s = open(e, SKYLAKE);
    e.truncate(0); // CPU 0 goes offline; CPU 1's device is not there
    expect(s.read().error).toBe('EIO');
    const triedBy = process.hrtime.bigint();
    fs.writeFileSync(spare, '');
    e.write(1, MSR.INTEL_UNIT, unitReg(16));
    e.write(1, MSR.INTEL_PKG, 1000 + 4 * 65536);
    while (process.hrtime.bigint() - triedBy <= 150_000_000n) await new Promise((r) => setTimeout(r, 20));
    expect(s.read().error).toBe('EIO');
  });

  // The devices of the open's own CPUs and of a few spares: on a package of 8 CPUs, the reading
  // CPU's and two others', not one per CPU.
  const openMsrFds = (e: EmulatedMsr) =>
    fs.readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith(e.dir);
      } catch {
        return false;
      }
    }).length;
  it('opens two spare CPUs\' devices a package at open, not one per CPU', () => {
    const e = emu({ vendor: 'intel', cpus: 8, packages: 1 });
    for (let cpu = 0; cpu < 8; cpu++) {
      e.write(cpu, MSR.INTEL_UNIT, unitReg(16));
      e.write(cpu, MSR.INTEL_PKG, 1000);
      e.write(cpu, MSR.INTEL_DRAM, 1000);
    }
    open(e, SKYLAKE);
    expect(openMsrFds(e)).toBe(3);
  });

  // Devices are root's (0600): a spare opened lazily, on the sampler thread, failed once the
  // process had dropped its privileges after opening everything (DESIGN invariant 6), and the
  // package read EIO for as long as its CPU stayed offline.
  it("reads a package's counter on a spare CPU after privileges are dropped", () => {
    const e = emu({ vendor: 'intel', cpus: 2, packages: 1 });
    for (const cpu of [0, 1]) {
      e.write(cpu, MSR.INTEL_UNIT, unitReg(16));
      e.write(cpu, MSR.INTEL_PKG, 1000);
      fs.chmodSync(e.msrPath.replace('%d', String(cpu)), 0o600);
    }
    const addon = path.resolve(__dirname, '../build/Release/jouletrace.node');
    const file = (cpu: number) => JSON.stringify(e.msrPath.replace('%d', String(cpu)));
    const script = `
      const fs = require('fs');
      const s = require(${JSON.stringify(addon)}).openSource(${JSON.stringify({ source: 'msr', ...e.options, cpuIdentity: SKYLAKE })});
      // The test's own handles on the devices, to play the kernel once this process is nobody.
      const cpu0 = fs.openSync(${file(0)}, 'r+'), cpu1 = fs.openSync(${file(1)}, 'r+');
      process.setgid(65534);
      process.setuid(65534);
      fs.ftruncateSync(cpu0, 0); // CPU 0 goes offline
      const v = Buffer.alloc(8);
      v.writeBigUInt64LE(BigInt(1000 + 5 * 65536));
      fs.writeSync(cpu1, v, 0, 8, ${MSR.INTEL_PKG}); // the package moved 5 J, read on CPU 1
      const r = s.read();
      process.stdout.write(JSON.stringify({ error: r.error ?? null, ticks: String(r.ticks[0]) }));`;
    const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(JSON.parse(out)).toEqual({ error: null, ticks: String(5 * 65536) });
  });

  // The message said "as on every other CPU that shares the counter" where the spare's device
  // was not there at all (a container given /dev/cpu/0/msr alone), so it was never read.
  it("says no other CPU read a counter whose spare's device is not there, not that the read failed there too", () => {
    const e = emu({ vendor: 'intel', cpus: 2, packages: 1 });
    e.write(0, MSR.INTEL_UNIT, unitReg(16));
    e.write(0, MSR.INTEL_PKG, 1000);
    fs.rmSync(e.msrPath.replace('%d', '1'));
    const s = new Sampler({ source: 'msr', ...e.options, cpuIdentity: SKYLAKE, threads: 'off', intervalUs: 1000 });
    cleanup.push(s);
    e.truncate(0); // CPU 0 goes offline
    expect(() => s.start()).toThrow(
      expect.objectContaining({
        code: 'EIO',
        message:
          `start(): the first read of the 'msr' source failed for package-0 (${e.dir}/cpu0/msr: reading the energy register 0x611 failed ` +
          '(Input/output error), and no other CPU that shares the counter read it in its place (a read failed there, or its device is not ' +
          'open)), which spans and requests are charged from — try again once it reads',
      }),
    );
  });

  // A die whose first CPU cannot read a counter the package's first die has: its energy was left
  // out of the package without a word (or, all of die 1's reads failing, the source was refused
  // as ENODEV "all read EIO or zero" though die 0 read every counter).
  it("reads a die's counter on another CPU of that die, and names the die's CPU where none can", () => {
    const e = emu({ vendor: 'intel', cpus: 4, packages: 1 });
    [0, 0, 1, 1].forEach((die, cpu) => writeTopo(e, cpu, 'die_id', String(die)));
    for (const cpu of [0, 1, 3]) {
      e.write(cpu, MSR.INTEL_UNIT, unitReg(16));
      e.write(cpu, MSR.INTEL_PKG, 1000);
      e.write(cpu, MSR.INTEL_DRAM, 500);
    }
    e.truncate(2); // die 1's first CPU answers EIO
    const s = open(e, SKYLAKE);
    expect(s.domains.map((d) => `${d.domain}-${d.package}`)).toEqual(['package-0', 'dram-0']);
    e.write(0, MSR.INTEL_PKG, 1000 + 10 * 65536);
    e.write(3, MSR.INTEL_PKG, 1000 + 6 * 65536);
    e.write(3, MSR.INTEL_DRAM, 500 + 2 * 65536);
    expect(s.read().readings.map((r) => r.joules)).toEqual([16, 2]);
    e.truncate(3); // and the die's other CPU too
    e.write(3, MSR.INTEL_UNIT, unitReg(16));
    e.write(3, MSR.INTEL_PKG, 1000); // 0x611 reads there, 0x619 (dram) lies past the end: EIO
    expect(() => open(e, SKYLAKE)).toThrow(
      expect.objectContaining({
        code: 'EIO',
        message:
          `${e.dir}/cpu2/msr: reading the dram energy register 0x619 failed (Input/output error), and no other CPU that shares ` +
          "the counter read it in its place (a read failed there, or its device is not open), though package 0's first CPU has it " +
          "— is CPU 2 going offline? Try again, or use source 'powercap' or 'perf'",
      }),
    );
  });

  // A die was read on its first CPU or not at all: a missing device there refused the source
  // (ENOENT), though the die's other CPUs read the same counters.
  it("reads a die on another of its CPUs where its first CPU's device is missing", () => {
    const e = emu({ vendor: 'intel', cpus: 4, packages: 1 });
    [0, 0, 1, 1].forEach((die, cpu) => writeTopo(e, cpu, 'die_id', String(die)));
    for (const cpu of [0, 3]) {
      e.write(cpu, MSR.INTEL_UNIT, unitReg(16));
      e.write(cpu, MSR.INTEL_PKG, 1000);
    }
    fs.rmSync(e.msrPath.replace('%d', '2'));
    const s = open(e, SKYLAKE);
    e.write(0, MSR.INTEL_PKG, 1000 + 10 * 65536);
    e.write(3, MSR.INTEL_PKG, 1000 + 6 * 65536);
    expect(joules(s, 'package')).toBe(16);
    fs.rmSync(e.msrPath.replace('%d', '3')); // none of die 1's devices: the die's first is named
    expect(() => open(e, SKYLAKE)).toThrow(expect.objectContaining({ code: 'ENOENT', message: expect.stringMatching(/^\S+\/cpu2\/msr: no such file/) }));
  });

  it("tells an AMD core's SMT siblings apart without core_id, and leaves the core sum out where nothing can", () => {
    const e = emu({ vendor: 'amd', cpus: 4, packages: 1, threadsPerCore: 2 });
    for (const t of e.topology) {
      e.write(t.cpu, MSR.AMD_UNIT, unitReg(16));
      e.write(t.cpu, MSR.AMD_PKG, 1000);
      e.write(t.cpu, MSR.AMD_CORE, 1000);
    }
    for (const cpu of [0, 1, 2, 3]) {
      writeTopo(e, cpu, 'core_id', undefined);
      writeTopo(e, cpu, 'thread_siblings_list', cpu < 2 ? '0-1' : '2-3');
    }
    const s = open(e, ZEN3, CORES);
    expect(s.domains.map((d) => `${d.domain}-${d.package}`)).toEqual(['package-0', 'core-0']);
    // Each core's counter read once: siblings read the same one (a core counted per thread read 4 J).
    for (const cpu of [0, 1, 2, 3]) e.write(cpu, MSR.AMD_CORE, 1000 + 65536);
    expect(joules(s, 'core')).toBe(2);
    for (const cpu of [0, 1, 2, 3]) writeTopo(e, cpu, 'thread_siblings_list', undefined);
    expect(open(e, ZEN3, CORES).domains.map((d) => `${d.domain}-${d.package}`)).toEqual(['package-0']);
  });
});

describe('msr source, AMD layout', () => {
  // 2 packages x 4 cores x 2 threads: CPUs 0-7 on package 0, 8-15 on package 1.
  function amd(vendor: 'amd' | 'hygon' = 'amd') {
    const e = emu({ vendor, cpus: 16, packages: 2, threadsPerCore: 2 });
    for (const t of e.topology) {
      e.write(t.cpu, MSR.AMD_UNIT, unitReg(16));
      e.write(t.cpu, MSR.AMD_PKG, 1000);
      // Siblings hold a decoy: only the first CPU of each core may be read.
      e.write(t.cpu, MSR.AMD_CORE, t.cpu % 2 === 0 ? 1000 : 0xabcdef);
    }
    return e;
  }

  // Each core's counter is read on its own core: an interrupt per core per sample, not for everyone.
  it('leaves the per-core sum out unless msrAmdCores asks for it', () => {
    expect(open(amd(), ZEN3).domains.map((d) => `${d.domain}-${d.package}`)).toEqual(['package-0', 'package-1']);
  });

  it('reports package and per-package core sums', () => {
    const e = amd();
    const s = open(e, ZEN3, CORES);
    expect(s.domains.map((d) => `${d.domain}-${d.package}`)).toEqual(['package-0', 'core-0', 'package-1', 'core-1']);
    expect(s.domains[1].unitJoules).toBe(2 ** -16);
    // One busy core can take the whole domain's power: the sum is safe for one counter's range.
    expect(s.domains[1].wrapJoules).toBe(2 ** 32 * 2 ** -16);
    // Cores 0..3 of package 0 are CPUs 0,2,4,6; package 1's are 8,10,12,14.
    [0, 2, 4, 6].forEach((cpu, i) => e.write(cpu, MSR.AMD_CORE, 1000 + (i + 1) * 65536));
    [8, 10, 12, 14].forEach((cpu) => e.write(cpu, MSR.AMD_CORE, 1000 + 65536 / 2));
    [1, 3, 9].forEach((cpu) => e.write(cpu, MSR.AMD_CORE, 0xffffff)); // decoys move too
    e.write(0, MSR.AMD_PKG, 1000 + 20 * 65536);
    e.write(8, MSR.AMD_PKG, 1000 + 3 * 65536);
    expect(s.read().readings.map((r) => r.joules)).toEqual([20, 1 + 2 + 3 + 4, 3, 2]);
  });

  it("names a core whose counter cannot be read rather than drop the package's core domain", () => {
    const e = amd();
    e.truncate(4); // CPU 4, package 0's third core, and its SMT sibling: every read is short (EIO)
    e.truncate(5);
    expect(() => open(e, ZEN3, CORES)).toThrow(
      expect.objectContaining({ code: 'EIO', message: expect.stringMatching(/cpu\/?4\b.*reading the core energy register 0xC001029A failed .*is CPU 4 going offline/) }),
    );
  });

  // As the package's counter moves to another CPU when its own goes offline: a core whose first
  // thread is offline at open is read on its sibling (the open was refused, "is CPU 2 going offline?").
  it("reads a core's counter on its SMT sibling where the core's first CPU cannot read it", () => {
    const e = amd();
    e.truncate(2); // package 0's second core's first thread: EIO
    e.write(3, MSR.AMD_CORE, 1000);
    const s = open(e, ZEN3, CORES);
    [0, 4, 6].forEach((cpu) => e.write(cpu, MSR.AMD_CORE, 1000 + 65536));
    e.write(3, MSR.AMD_CORE, 1000 + 10 * 65536);
    const r = s.read();
    expect(r.error).toBeUndefined();
    expect(r.readings[1]).toMatchObject({ domain: 'core', package: 0, joules: 13 });
  });

  it('wrap-extends each per-core counter separately before summing', () => {
    const e = amd();
    e.write(0, MSR.AMD_CORE, 0xffffffff - 99);
    e.write(2, MSR.AMD_CORE, 5);
    const s = open(e, ZEN3, CORES);
    e.write(0, MSR.AMD_CORE, 400); // wrapped: +500 ticks
    e.write(2, MSR.AMD_CORE, 505); // +500 ticks, no wrap
    const core0 = s.read().readings[1];
    expect(core0.joules).toBe(1000 / 65536);
  });

  it('accepts Hygon family 18h and rejects AMD before family 17h', () => {
    const e = amd('hygon');
    expect(open(e, { vendor: 'hygon', family: 0x18, model: 0 }, CORES).domains).toHaveLength(4);
    expect(() => open(e, { vendor: 'amd', family: 0x16, model: 0 })).toThrow(
      expect.objectContaining({
        code: 'ERR_JOULETRACE_UNSUPPORTED_CPU',
        message: "amd family 0x16 has no RAPL MSRs (AMD RAPL starts with family 17h / Zen, Hygon with 18h) — use source 'model'",
      }),
    );
  });
});

describe('msr source errors', () => {
  // The default devices' first, for the advice given where they are missing (a sysfs tree of one CPU).
  const DEFAULT_MSR0 = '/dev/cpu/0/msr';
  const MODPROBE = `${DEFAULT_MSR0}: no such file — load the msr module: modprobe msr`;
  // The msr module is named at the default path (probe.test.ts, on this machine without it); at
  // a path the user gave, loading it fixes nothing when the path is wrong.
  it('names options.msrPath, not the msr module, when the device at a given path is missing', () => {
    const e = emu({ vendor: 'intel' });
    const msrPath = `${e.dir}/nope/cpu%d/msr`;
    expect(() => openSource({ source: 'msr', msrPath, sysfsCpuRoot: e.sysfsCpuRoot, cpuIdentity: SKYLAKE })).toThrow(
      expect.objectContaining({
        code: 'ENOENT',
        message: `${e.dir}/nope/cpu0/msr: no such file — check options.msrPath: it should name where this process sees the host's /dev/cpu/%d/msr`,
      }),
    );
  });

  // open() of a FIFO waits for a writer, forever: a path given by mistake hung openSource().
  it('refuses a FIFO at options.msrPath, naming the option, without waiting on it', () => {
    const e = emu({ vendor: 'intel' });
    const device = `${e.dir}/cpu0/msr`;
    fs.rmSync(device);
    execFileSync('mkfifo', [device]);
    expect(openSourceInChild({ source: 'msr', ...e.options, cpuIdentity: SKYLAKE })).toEqual({
      code: 'EINVAL',
      message: `${device}: a FIFO, not a file or character device — check options.msrPath: it should name where this process sees the host's /dev/cpu/%d/msr`,
    });
  });

  it('names options.sysfsCpuRoot, not a sysfs mount, when a CPU topology root given holds none', () => {
    const e = emu({ vendor: 'intel' });
    const sysfsCpuRoot = `${e.dir}/nope`;
    expect(() => openSource({ source: 'msr', msrPath: e.msrPath, sysfsCpuRoot, cpuIdentity: SKYLAKE })).toThrow(
      expect.objectContaining({
        code: 'ENOENT',
        message:
          `${sysfsCpuRoot}/online: No such file or directory — cannot tell which CPUs are online; ` +
          "check options.sysfsCpuRoot: it should name where this process sees the host's /sys/devices/system/cpu",
      }),
    );
  });

  // In a container the module is the host's (sysfs shows it) and /dev/cpu is not passed in:
  // modprobe msr there fixes nothing. Said of the default devices only (the next test), which
  // this machine has none of.
  it.skipIf(fs.existsSync(DEFAULT_MSR0))('says the devices are missing, not the module, where the msr driver is loaded', () => {
    const e = emu({ vendor: 'intel' });
    const sysfsCpuRoot = writeSysfsCpu(path.join(e.dir, 'sys', 'devices', 'system', 'cpu'), { cpus: 1, packages: 1 }).sysfsCpuRoot;
    const missing = (driver: string) =>
      `${DEFAULT_MSR0}: no such file — the msr driver is loaded (${driver}) but its devices are not here, as in a ` +
      'container: pass them in (docker run --device /dev/cpu/N/msr for each CPU N) with CAP_SYS_RAWIO (--cap-add SYS_RAWIO)';
    // A kernel that loads modules (its procfs has a modules file), whose module tree is not shown.
    const proc = path.join(e.dir, 'proc');
    fs.mkdirSync(proc);
    for (const f of ['version', 'stat', 'modules']) fs.writeFileSync(path.join(proc, f), '');
    const openIt = () => openSource({ source: 'msr', sysfsCpuRoot, procStatPath: path.join(proc, 'stat'), cpuIdentity: SKYLAKE });
    // A module shows in /sys/module; a driver built into the kernel only in /sys/class/msr.
    for (const dir of [path.join(e.dir, 'sys', 'module', 'msr'), path.join(e.dir, 'sys', 'class', 'msr')]) {
      fs.mkdirSync(dir, { recursive: true });
      expect(openIt).toThrow(expect.objectContaining({ code: 'ENOENT', message: missing(dir) }));
      fs.rmdirSync(dir);
    }
    expect(openIt).toThrow(MODPROBE);
  });

  // What sysfs shows of the driver was the advice at a path the user gave too ("pass them in",
  // "this kernel has no msr driver"), where the path is the likelier mistake, as for powercapRoot.
  it('names options.msrPath, not the driver, at a given path, whether sysfs shows the driver or its absence', () => {
    const e = emu({ vendor: 'intel' });
    const sysfsCpuRoot = writeSysfsCpu(path.join(e.dir, 'sys', 'devices', 'system', 'cpu'), { cpus: 1, packages: 1 }).sysfsCpuRoot;
    const proc = path.join(e.dir, 'proc');
    fs.mkdirSync(proc);
    for (const f of ['version', 'stat']) fs.writeFileSync(path.join(proc, f), '');
    const msrPath = `${e.dir}/nope/cpu%d/msr`;
    const openIt = () => openSource({ source: 'msr', msrPath, sysfsCpuRoot, procStatPath: path.join(proc, 'stat'), cpuIdentity: SKYLAKE });
    const checkOption = expect.objectContaining({
      code: 'ENOENT',
      message: `${e.dir}/nope/cpu0/msr: no such file — check options.msrPath: it should name where this process sees the host's /dev/cpu/%d/msr`,
    });
    expect(openIt).toThrow(checkOption); // no /proc/modules: a kernel without the driver
    fs.mkdirSync(path.join(e.dir, 'sys', 'module', 'msr'), { recursive: true });
    expect(openIt).toThrow(checkOption); // the driver loaded
  });

  // "modprobe msr" was the advice on a kernel without the msr driver at all (a VM kernel built
  // without CONFIG_X86_MSR), where modprobe fails and no msr device can ever be.
  it.skipIf(fs.existsSync(DEFAULT_MSR0))('says the kernel has no msr driver, not to load it, where it can be shown to have none', () => {
    const e = emu({ vendor: 'intel' });
    const sysfsCpuRoot = writeSysfsCpu(path.join(e.dir, 'sys', 'devices', 'system', 'cpu'), { cpus: 1, packages: 1 }).sysfsCpuRoot;
    const proc = path.join(e.dir, 'proc');
    fs.mkdirSync(proc);
    for (const f of ['version', 'stat']) fs.writeFileSync(path.join(proc, f), '');
    const openIt = () => openSource({ source: 'msr', sysfsCpuRoot, procStatPath: path.join(proc, 'stat'), cpuIdentity: SKYLAKE });
    const none = (why: string) =>
      expect.objectContaining({
        code: 'ENOENT',
        message:
          `${DEFAULT_MSR0}: no such file — this kernel has no msr driver, built in or as a module, as is common in VMs ` +
          `(no ${e.dir}/sys/class/msr, and ${why}); try source 'perf', 'powercap' or 'model'`,
      });
    // A kernel that loads no modules (no /proc/modules), and no driver built in.
    expect(openIt).toThrow(none(`no ${proc}/modules: the kernel loads no modules`));
    // One that loads modules, none of them msr.
    fs.writeFileSync(path.join(proc, 'modules'), '');
    expect(openIt).toThrow(MODPROBE); // its module tree not shown: it may have one
    const modules = path.join(e.dir, 'lib', 'modules', os.release());
    fs.mkdirSync(modules, { recursive: true });
    const dep = 'kernel/arch/x86/kernel/cpuid.ko.zst:\nkernel/drivers/hwmon/msr-thing.ko: kernel/x/msr.ko.d/y.ko\n';
    fs.writeFileSync(path.join(modules, 'modules.dep'), dep);
    fs.writeFileSync(path.join(modules, 'modules.builtin'), 'kernel/drivers/char/mem.ko\n');
    expect(openIt).toThrow(none(`no msr module in ${modules}/modules.dep`));
    // With a module to load, or one built in (listed, though sysfs shows none), the advice stays.
    for (const [file, text] of [
      ['modules.dep', `${dep}kernel/arch/x86/kernel/msr.ko.zst:\n`],
      ['modules.dep', `${dep}kernel/arch/x86/kernel/msr.ko:\n`],
      ['modules.builtin', 'kernel/arch/x86/kernel/msr.ko\n'],
    ]) {
      const saved = fs.readFileSync(path.join(modules, file), 'utf8');
      fs.writeFileSync(path.join(modules, file), text);
      expect(openIt, text).toThrow(MODPROBE);
      fs.writeFileSync(path.join(modules, file), saved);
    }
    // A driver loaded is said to be, as before.
    fs.mkdirSync(path.join(e.dir, 'sys', 'class', 'msr'), { recursive: true });
    expect(openIt).toThrow(/the msr driver is loaded/);
  });

  // EACCES is the file's mode (root's, 0600), checked before the driver's CAP_SYS_RAWIO (EPERM,
  // which a regular file cannot show): with the capability alone a non-root process still gets it.
  it('names read access to the device and CAP_SYS_RAWIO when the device is not readable', () => {
    const e = emu({ vendor: 'intel' });
    e.write(0, MSR.INTEL_UNIT, unitReg(14));
    fs.chmodSync(`${e.dir}/cpu0/msr`, 0o600);
    const err = openSourceAsNobody({ source: 'msr', msrPath: e.msrPath, sysfsCpuRoot: e.sysfsCpuRoot, cpuIdentity: SKYLAKE });
    expect(err).toEqual({
      code: 'EACCES',
      message:
        `${e.dir}/cpu0/msr: permission denied — the device is root's alone by default, and reading it needs read access to it ` +
        'as well as CAP_SYS_RAWIO: run as root, or give this user read access to /dev/cpu/*/msr (a udev rule or group, or ' +
        'CAP_DAC_READ_SEARCH) and grant CAP_SYS_RAWIO: to this service alone, in its systemd unit ' +
        '(AmbientCapabilities=CAP_SYS_RAWIO beside its User=), or to the binary this process runs, ' +
        `\`sudo setcap cap_sys_rawio+ep ${fs.realpathSync(process.execPath)}\``,
    });
  });

  it('fails clearly when the unit register is not implemented (a VM)', () => {
    const e = emu({ vendor: 'amd' });
    expect(() => open(e, ZEN3)).toThrow(expect.objectContaining({ code: 'EIO' }));
    expect(() => open(e, ZEN3)).toThrow(/RAPL unit register 0xC0010299 failed/);
  });

  it('is closed safely twice and refuses reads afterwards', () => {
    const e = emu({ vendor: 'intel' });
    e.write(0, MSR.INTEL_UNIT, unitReg(14));
    e.write(0, MSR.INTEL_PKG, 1);
    const s = open(e, SKYLAKE);
    s.close();
    s.close();
    expect(s.closed).toBe(true);
    expect(() => s.read()).toThrow(expect.objectContaining({ code: 'ERR_JOULETRACE_CLOSED' }));
  });
});
