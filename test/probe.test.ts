import * as fs from 'node:fs';
import * as os from 'node:os';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { probeCommand } from '../src/cli/probe';
import { native } from '../src/native';
import { formatProbe, probe, type ProbeBpfReadiness } from '../src/probe';
import { openSource } from '../src/sources';
import { bpfReadiness } from '../src/threads';
import { createEmulatedMsr, createEmulatedPowercap, MSR } from './fixtures/emulated-devices';

const cleanup: Array<{ close(): void }> = [];
afterEach(() => {
  while (cleanup.length) cleanup.pop()!.close();
  vi.restoreAllMocks();
});

// What /proc/cpuinfo says of this machine's CPU, independently of the code under test.
function cpuinfoIdentity(): { vendor: string; family: number } {
  const text = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const field = (name: string) => new RegExp(`^${name}\\s*: (.*)$`, 'm').exec(text)?.[1] ?? '';
  const vendor = { GenuineIntel: 'intel', AuthenticAMD: 'amd', HygonGenuine: 'hygon' }[field('vendor_id')] ?? 'unknown';
  return { vendor, family: Number(field('cpu family')) };
}

// The msr source's advice here: this VM's kernel has no msr driver and loads no modules (no
// /proc/modules); one that loads modules is told to load msr.
const MSR_REMEDY = fs.existsSync('/proc/modules')
  ? 'load the msr module: modprobe msr'
  : "this kernel has no msr driver, built in or as a module, as is common in VMs (no /sys/class/msr, and no /proc/modules: the kernel loads no modules); try source 'perf', 'powercap' or 'model'";

// The same of perf and powercap: a kernel that loads no modules has their drivers built in or
// not at all; one that loads them is told which to load.
const PERF_REMEDY = fs.existsSync('/proc/modules')
  ? "load its driver: modprobe rapl (Intel, or AMD on Linux ≥ 5.8; modprobe intel_rapl_tpmi where RAPL is TPMI's: Granite Rapids, Sierra Forest), or use source 'powercap' or 'model'"
  : "this kernel has none built in and no module to load (no /proc/modules: the kernel loads no modules), as is common in VMs; try source 'msr', 'powercap' or 'model'";
const PERF_REASON = fs.existsSync('/proc/modules')
  ? '/sys/bus/event_source/devices/power: no perf power PMU (kernel without CONFIG_PERF_EVENTS_INTEL_RAPL / AMD RAPL PMU, or a VM)'
  : '/sys/bus/event_source/devices/power: no perf power PMU';
const POWERCAP_REMEDY = fs.existsSync('/proc/modules')
  ? /^load the RAPL powercap driver: modprobe intel_rapl_msr \(Intel, and AMD Zen\), or modprobe intel_rapl_tpmi /
  : /^this kernel has no RAPL powercap driver built in and no module to load \(no \/proc\/modules: the kernel loads no modules\)/;

describe('probe on this VM (no RAPL)', () => {
  it('reports msr, perf and powercap unavailable with reasons and remedies, model available', async () => {
    const r = await probe({ intervalMs: 50 });
    expect(r.kernel).toBe(os.release());
    const cpu = cpuinfoIdentity();
    expect(r.cpu.vendor).toBe(cpu.vendor);
    expect(r.cpu.family).toBe(cpu.family);
    expect(r.sources.map((s) => [s.source, s.available])).toEqual([
      ['msr', false],
      ['perf', false],
      ['powercap', false],
      ['model', true],
    ]);
    const [msr, perf, powercap, model] = r.sources;
    expect(msr).toMatchObject({ code: 'ENOENT', reason: '/dev/cpu/0/msr: no such file', remedy: MSR_REMEDY });
    expect(perf.code).toBe('ENOENT');
    expect(perf.reason).toBe(PERF_REASON);
    // `jouletrace probe` prints a fix: line only for a message with a remedy part.
    expect(perf.remedy).toBe(PERF_REMEDY);
    expect(powercap).toMatchObject({ code: 'ENOENT', reason: 'no RAPL zones under /sys/class/powercap' });
    expect(powercap.remedy).toMatch(POWERCAP_REMEDY);
    expect(model.domains[0]).toMatchObject({ domain: 'package', estimated: true, unitJoules: 1e-6 });
    expect(model.domains[0].watts).toBeGreaterThan(0);
    expect(model.wrapPeriodSeconds).toBeUndefined(); // the model's 64-bit total never wraps
  });

  it('reports BPF readiness, or unknown when this build has no bpfReadiness()', async () => {
    const r = await probe({ intervalMs: 10 });
    if (typeof native().bpfReadiness === 'function') {
      // The addon's own answer, every field of it, whichever it is on this machine.
      const own = bpfReadiness();
      expect(r.bpf).toEqual(own);
      expect(formatProbe(r)).toContain(`\neBPF thread attribution  ${own.ready ? '✓ ready' : '✗ not ready'}\n`);
    } else {
      expect(r.bpf).toEqual({ ready: null, reason: 'unknown: this build does not report BPF readiness' });
    }
  });

  it('auto opens the model source and says why each earlier source was skipped', () => {
    const s = openSource();
    cleanup.push(s);
    expect(s.name).toBe('model');
    expect(s.skipped.map((x) => [x.source, x.code])).toEqual([
      ['msr', 'ENOENT'],
      ['perf', 'ENOENT'],
      ['powercap', 'ENOENT'],
    ]);
    expect(s.skipped[0].message).toBe(`/dev/cpu/0/msr: no such file — ${MSR_REMEDY}`);
  });

  it('validates its options before probing', async () => {
    await expect(probe({ intervalMs: 0 })).rejects.toThrow('Expected an integer between 1 and 10000 for options.intervalMs but received 0 of type number');
    await expect(probe({ msrPath: '/dev/cpu/msr' })).rejects.toThrow(RangeError);
    // The options it knows, without `source`, which it refuses (listed, before).
    await expect(probe({ bogus: 1 } as never)).rejects.toThrow(
      new TypeError(
        'Unknown option options.bogus; known options are: msrPath, msrOffsetShift, powercapRoot, sysfsCpuRoot, perfPmuRoot, procStatPath, cpuIdentity, modelIdleWatts, modelMaxWatts, liveCheckMs, msrAmdCores, intervalMs',
      ),
    );
  });

  it('formatProbe() refuses what is not a report, naming it', () => {
    const expected = 'Expected a ProbeReport (what await probe() resolves to) for report but received';
    expect(() => formatProbe(null as never)).toThrow(new TypeError(`${expected} null of type null`));
    expect(() => formatProbe({ cpu: {} } as never)).toThrow(new TypeError(`${expected} {"cpu":{}} of type object`));
  });

  it('refuses options.source, naming it, rather than probing every source regardless', async () => {
    // @ts-expect-error source is not a ProbeOptions key
    const p = probe({ source: 'model', intervalMs: 10 });
    await expect(p).rejects.toThrow(TypeError);
    await expect(p).rejects.toThrow(
      'Unknown option options.source: probe() reports every source, in the order auto tries them (to open one source, use openSource({ source }))',
    );
  });
});

describe('probe wrap periods', () => {
  it('measures power over the interval and divides the wrap energy by it', async () => {
    const pc = createEmulatedPowercap([{ name: 'package-0', energyUj: 0, maxEnergyRangeUj: 999_999_999 }]);
    cleanup.push(pc);
    const intervalMs = 200;
    // 20 J appear during the probe interval: 100 W, and a 1000 J counter wraps in ~10 s.
    const timer = setTimeout(() => pc.set('intel-rapl:0', 20_000_000), intervalMs / 2);
    const r = await probe({ powercapRoot: pc.powercapRoot, intervalMs, liveCheckMs: 0 });
    clearTimeout(timer);
    const s = r.sources.find((x) => x.source === 'powercap')!;
    expect(s.available).toBe(true);
    expect(s.domains[0].wrapBasis).toBe('measured');
    expect(s.domains[0].watts).toBeGreaterThan(20 / (intervalMs / 1000) / 1.5);
    expect(s.domains[0].watts).toBeLessThan(20 / (intervalMs / 1000) * 1.01);
    expect(s.wrapPeriodSeconds).toBeCloseTo(1000 / s.domains[0].watts!, 6);
    // A counter more than half a wrap below its last value reads as one that started again.
    expect(s.maxReadGapSeconds).toBe(s.wrapPeriodSeconds! / 2);
  });

  it('falls back to a nominal power when a counter does not move', async () => {
    const e = createEmulatedMsr({ vendor: 'intel' });
    cleanup.push(e);
    e.write(0, MSR.INTEL_UNIT, 14 << 8);
    e.write(0, MSR.INTEL_PKG, 1);
    const r = await probe({ ...e.options, cpuIdentity: { vendor: 'intel', family: 6, model: 0x55 }, intervalMs: 20 });
    const msr = r.sources[0];
    expect(msr.available).toBe(true);
    expect(msr.domains[0]).toMatchObject({ domain: 'package', wrapBasis: 'nominal', watts: 0 });
    expect(msr.domains[0].wrapPeriodSeconds).toBeCloseTo((2 ** 32 * 2 ** -14) / 100, 6);
    expect(formatProbe(r)).toContain('wrap 43.7 min (at nominal 100 W)');
    expect(formatProbe(r)).toContain('✓ msr       available, wraps after 43.7 min, read at least every 21.8 min\n');
  });

  // Sapphire Rapids counts psys in whole joules: its unit printed as "1000 mJ".
  it('prints a unit of a joule or more in J', async () => {
    const e = createEmulatedMsr({ vendor: 'intel' });
    cleanup.push(e);
    e.write(0, MSR.INTEL_UNIT, 14 << 8);
    e.write(0, MSR.INTEL_PKG, 1);
    e.write(0, MSR.INTEL_PSYS, 1);
    const r = await probe({ ...e.options, cpuIdentity: { vendor: 'intel', family: 6, model: 0x8f }, intervalMs: 20 });
    expect(r.sources[0].domains.map((d) => [d.domain, d.unitJoules])).toEqual([
      ['package', 2 ** -14],
      ['psys', 1],
    ]);
    const text = formatProbe(r);
    expect(text).toMatch(/\n {6}psys-0 +unit 1\.000 J +0\.00 W/);
    expect(text).toMatch(/\n {6}package-0 +unit 61\.04 µJ +0\.00 W/);
  });
});

// probe() opens each available source a second time to measure its power. What the device does in
// between, the spy does just before that second open reaches the addon.
function beforeSecondOpen(change: () => void, wrapRead?: (read: () => unknown) => () => unknown) {
  const real = native().openSource;
  vi.spyOn(native(), 'openSource').mockImplementation((o: unknown) => {
    change();
    const h = real.call(native(), o);
    return wrapRead ? { domains: h.domains, read: wrapRead(() => h.read()), close: () => h.close() } : h;
  });
}

describe('probe when the measurement fails', () => {
  const intel = { vendor: 'intel', family: 6, model: 0x5e } as const;
  const msrWrapSeconds = (2 ** 32 * 2 ** -14) / 100; // 2^32 ticks of 61 µJ at the nominal 100 W

  it('keeps the nominal wrap period of a source it cannot open again, and says why power is not measured', async () => {
    const e = createEmulatedMsr({ vendor: 'intel' });
    cleanup.push(e);
    e.write(0, MSR.INTEL_UNIT, 14 << 8);
    e.write(0, MSR.INTEL_PKG, 5000);
    beforeSecondOpen(() => e.truncate(0));
    const r = await probe({ ...e.options, cpuIdentity: intel, intervalMs: 10 });
    const msr = r.sources[0];
    expect(msr.available).toBe(true);
    expect(msr.domains[0].wrapBasis).toBe('nominal');
    expect(msr.domains[0].wrapPeriodSeconds).toBeCloseTo(msrWrapSeconds, 6);
    expect(msr.maxReadGapSeconds).toBeCloseTo(msrWrapSeconds / 2, 6);
    expect(msr.domains[0].watts).toBeUndefined();
    expect(msr.domains[0].notMeasured).toMatch(/^could not be opened again to measure: EIO: .*reading the RAPL unit register 0x606 failed/);
    const text = formatProbe(r);
    expect(text).toContain('✓ msr       available, wraps after 43.7 min, read at least every 21.8 min\n');
    expect(text).toMatch(/ {6}package-0 +unit 61\.04 µJ +not measured \(could not be opened again to measure: EIO: .*\), wrap 43\.7 min \(at nominal 100 W\)\n/);
  });

  it('keeps a domain the second open left out in the shortest wrap period', async () => {
    // dram's counter wraps after 150 J: at the nominal 15 W, 10 s, well before the package's.
    const pc = createEmulatedPowercap([
      { name: 'package-0', energyUj: 0, maxEnergyRangeUj: 999_999_999, children: [{ name: 'dram', energyUj: 0, maxEnergyRangeUj: 149_999_999 }] },
    ]);
    cleanup.push(pc);
    beforeSecondOpen(() => {
      fs.rmSync(pc.zonePath('intel-rapl:0:0'), { recursive: true });
      fs.unlinkSync(`${pc.powercapRoot}/intel-rapl:0:0`);
    });
    const r = await probe({ powercapRoot: pc.powercapRoot, liveCheckMs: 0, intervalMs: 10 });
    const s = r.sources.find((x) => x.source === 'powercap')!;
    const dram = s.domains.find((d) => d.domain === 'dram')!;
    expect(dram.wrapBasis).toBe('nominal');
    expect(dram.wrapPeriodSeconds).toBeCloseTo(150 / 15, 6);
    expect(s.wrapPeriodSeconds).toBeCloseTo(10, 6);
    expect(s.maxReadGapSeconds).toBeCloseTo(5, 6);
    expect(dram.watts).toBeUndefined();
    expect(dram.notMeasured).toBe('did not count when opened again to measure');
    expect(formatProbe(r)).toContain(
      '      dram-0      unit 1.000 µJ     not measured (did not count when opened again to measure), wrap 10.0 s (at nominal 15 W)\n',
    );
  });

  it('reports a read that failed during the interval instead of 0 W', async () => {
    const e = createEmulatedMsr({ vendor: 'intel' });
    cleanup.push(e);
    e.write(0, MSR.INTEL_UNIT, 14 << 8);
    e.write(0, MSR.INTEL_PKG, 5000);
    let reads = 0;
    // The device goes away after the first of the two reads: the second reads EIO.
    beforeSecondOpen(
      () => {},
      (read) => () => {
        const r = read();
        if (++reads === 1) e.truncate(0);
        return r;
      },
    );
    const r = await probe({ ...e.options, cpuIdentity: intel, intervalMs: 10 });
    const d = r.sources[0].domains[0];
    expect(d.watts).toBeUndefined();
    expect(d).toMatchObject({ readError: 'EIO', notMeasured: 'a read failed: EIO', wrapBasis: 'nominal' });
    expect(d.wrapPeriodSeconds).toBeCloseTo(msrWrapSeconds, 6);
    const text = formatProbe(r);
    expect(text).toContain('      package-0   unit 61.04 µJ     not measured (a read failed: EIO), wrap 43.7 min (at nominal 100 W)\n');
    expect(text).not.toContain('0.00 W');
  });

  it('prints "no wrap" only for a domain without a counter', async () => {
    const report = await probe({ intervalMs: 10 });
    const domain = { domain: 'package' as const, package: 0, unitJoules: 2 ** -14, estimated: false, wrapJoules: 2 ** 18 };
    const text = formatProbe({ ...report, sources: [{ source: 'msr', available: true, domains: [domain] }] });
    expect(text).toContain('✓ msr       available, wrap period not measured\n');
    expect(text).toContain('      package-0   unit 61.04 µJ     not measured, wrap not measured\n');
  });
});

describe('formatProbe and the probe command', () => {
  it('renders a table with ✓/✗, reasons, remedies, units and BPF state', async () => {
    const text = formatProbe(await probe({ intervalMs: 20 }));
    const cpu = cpuinfoIdentity();
    expect(text).toMatch(new RegExp(`^CPU {5}.* — ${cpu.vendor} family 0x${cpu.family.toString(16).toUpperCase()} model 0x`));
    expect(text).toContain(`  ✗ msr       ENOENT: /dev/cpu/0/msr: no such file\n      fix: ${MSR_REMEDY}\n`);
    expect(text).toMatch(/ {2}✓ model {5}available, never wraps\n {6}package-0 +unit 1\.000 µJ +[\d.]+ W +no wrap ESTIMATED\n/);
    expect(text).toContain('eBPF thread attribution');
  });

  it('renders each BPF state, its flags and its reason', async () => {
    const report = await probe({ intervalMs: 10 });
    const section = (bpf: ProbeBpfReadiness) => formatProbe({ ...report, bpf }).split('\n\n').at(-1);
    const flags = { btf: true, capBpf: true, capPerfmon: false, kernel: '6.8.0' };
    expect(section({ ready: true, ...flags, reason: '' })).toBe('eBPF thread attribution  ✓ ready\n      BTF yes, CAP_BPF yes, CAP_PERFMON no\n');
    expect(section({ ready: false, ...flags, btf: false, reason: 'no BTF: /sys/kernel/btf/vmlinux is missing' })).toBe(
      'eBPF thread attribution  ✗ not ready\n      BTF no, CAP_BPF yes, CAP_PERFMON no\n      no BTF: /sys/kernel/btf/vmlinux is missing\n',
    );
    expect(section({ ready: null, reason: 'unknown: this build does not report BPF readiness' })).toBe(
      'eBPF thread attribution  ? unknown\n      unknown: this build does not report BPF readiness\n',
    );
  });

  it('prints JSON with --json and exits 0', async () => {
    let out = '';
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      out += String(chunk);
      return true;
    });
    expect(await probeCommand(['--json'])).toBe(0);
    const report = JSON.parse(out);
    expect(report.sources.map((s: { source: string }) => s.source)).toEqual(['msr', 'perf', 'powercap', 'model']);
    expect(report.kernel).toBe(os.release());
  });

  it('prints the table by default, help with --help, and rejects unknown arguments', async () => {
    let out = '';
    let err = '';
    vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => ((out += String(c)), true));
    vi.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => ((err += String(c)), true));
    expect(await probeCommand([])).toBe(0);
    expect(out).toContain('Energy sources (auto picks the first available, top to bottom)');
    out = '';
    expect(await probeCommand(['--help'])).toBe(0);
    expect(out).toMatch(/^Usage: jouletrace probe \[--json\]/);
    expect(await probeCommand(['--jsn'])).toBe(2);
    expect(err).toMatch(/^jouletrace probe: unknown option --jsn\n\nUsage: jouletrace probe/);
  });
});
