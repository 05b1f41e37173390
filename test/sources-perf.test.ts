// The perf source's sysfs parsing and error paths, against fake PMU directories. A fake PMU has
// no kernel behind it, so perf_event_open itself must fail there — and must say why. Reading
// runs against a software-PMU stand-in whose events really count (fixtures/perf-events.ts).
import { afterEach, describe, expect, it } from 'vitest';
import { openSource } from '../src/sources';
import { createEmulatedPerfPmu, writeSysfsCpu } from './fixtures/emulated-devices';
import { openSourceAsNobody } from './fixtures/unprivileged';
import { CPU_CLOCK, createSoftwarePerfPmu, itPerf } from './fixtures/perf-events';
import { Sampler } from '../src/sampler';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const cleanup: Array<{ close(): void }> = [];
afterEach(() => {
  while (cleanup.length) cleanup.pop()!.close();
});

const RAPL_EVENTS = {
  'energy-pkg': { config: 'event=0x02', scale: '2.3283064365386962890625e-10', unit: 'Joules' },
  'energy-cores': { config: 'event=0x01', scale: '2.3283064365386962890625e-10', unit: 'Joules' },
};

function pmu(opts: Parameters<typeof createEmulatedPerfPmu>[0]) {
  const p = createEmulatedPerfPmu(opts);
  cleanup.push(p);
  return p;
}

function sysfs() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-cpu-'));
  cleanup.push({ close: () => fs.rmSync(dir, { recursive: true, force: true }) });
  return writeSysfsCpu(dir, { cpus: 4, packages: 2 }).sysfsCpuRoot;
}

const openPerf = (perfPmuRoot: string) => openSource({ source: 'perf', perfPmuRoot, sysfsCpuRoot: sysfs() });

describe('perf source', () => {
  // The kernel options it needs, at the default root, are probe.test.ts's (this machine has none).
  it('names options.perfPmuRoot when there is no power PMU at the root given', () => {
    expect(() => openPerf('/nonexistent/power')).toThrow(
      expect.objectContaining({
        code: 'ENOENT',
        message:
          "/nonexistent/power: no perf power PMU — check options.perfPmuRoot: it should name where this process sees the host's /sys/bus/event_source/devices/power",
      }),
    );
  });

  it('rejects a PMU directory without a type', () => {
    const p = pmu({ cpumask: '0', events: RAPL_EVENTS });
    expect(() => openPerf(p.perfPmuRoot)).toThrow(
      expect.objectContaining({ code: 'ENOENT', message: `${p.perfPmuRoot}/type: unreadable or not a PMU type number — not a perf PMU directory` }),
    );
  });

  it('rejects a malformed cpumask', () => {
    const p = pmu({ type: '17', cpumask: 'zero', events: RAPL_EVENTS });
    expect(() => openPerf(p.perfPmuRoot)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringContaining('/cpumask: unreadable or not a CPU list') }));
  });

  it('rejects an event encoding it cannot parse, a missing scale and a unit other than Joules', () => {
    const bad = pmu({ type: '17', cpumask: '0', events: { 'energy-pkg': { config: 'umask=0x3', scale: '1e-6' } } });
    expect(() => openPerf(bad.perfPmuRoot)).toThrow(
      expect.objectContaining({ code: 'EINVAL', message: `${bad.perfPmuRoot}/events/energy-pkg: "umask=0x3" is not an event=N encoding` }),
    );
    const noScale = pmu({ type: '17', cpumask: '0', events: { 'energy-pkg': { config: 'event=0x02' } } });
    expect(() => openPerf(noScale.perfPmuRoot)).toThrow(/energy-pkg\.scale: missing or not a positive number/);
    const watts = pmu({ type: '17', cpumask: '0', events: { 'energy-pkg': { config: 'event=0x02', scale: '1', unit: 'Watts' } } });
    expect(() => openPerf(watts.perfPmuRoot)).toThrow(/energy-pkg\.unit: "Watts" — expected Joules/);
  });

  it('says when the PMU lists no energy events', () => {
    const p = pmu({ type: '17', cpumask: '0,2', events: {} });
    expect(() => openPerf(p.perfPmuRoot)).toThrow(
      expect.objectContaining({ code: 'ENOENT', message: `${p.perfPmuRoot}/events: no energy-* events — the power PMU exposes no RAPL domain` }),
    );
  });

  it('maps perf_event_open failing on a PMU type the kernel does not have to a clear error', () => {
    // 0x7ffffff0 is no registered PMU: the kernel answers ENOENT.
    const p = pmu({ type: String(0x7ffffff0), cpumask: '0', events: RAPL_EVENTS });
    let err: (Error & { code?: string }) | undefined;
    try {
      openPerf(p.perfPmuRoot);
    } catch (e) {
      err = e as Error & { code?: string };
    }
    expect(err?.code).toMatch(/^(ENOENT|EINVAL|ENODEV|EOPNOTSUPP)$/);
    expect(err?.message).toMatch(
      new RegExp(
        `^perf_event_open\\(type=${0x7ffffff0}, config=0x2, cpu=0\\) for energy-pkg: .* — the kernel has no such PMU event \\(${p.perfPmuRoot} does not describe a live RAPL PMU\\)$`,
      ),
    );
  });

  // "modprobe rapl" was the advice on a kernel that loads no modules too (no /proc/modules),
  // where modprobe fails: such a kernel has the PMU built in or not at all, as the msr source
  // says of its driver. Said at the default root only, which this machine has no PMU at.
  const DEFAULT_PMU = '/sys/bus/event_source/devices/power';
  it.skipIf(fs.existsSync(DEFAULT_PMU))('says the kernel has no power PMU to load, not to load one, where it loads no modules', () => {
    const proc = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-proc-'));
    cleanup.push({ close: () => fs.rmSync(proc, { recursive: true, force: true }) });
    for (const f of ['version', 'stat']) fs.writeFileSync(path.join(proc, f), '');
    const openIt = () => openSource({ source: 'perf', procStatPath: path.join(proc, 'stat') });
    expect(openIt).toThrow(
      expect.objectContaining({
        code: 'ENOENT',
        message:
          `${DEFAULT_PMU}: no perf power PMU — this kernel has none built in and no module to load (no ${proc}/modules: the ` +
          "kernel loads no modules), as is common in VMs; try source 'msr', 'powercap' or 'model'",
      }),
    );
    // One that loads modules is told which: TPMI parts' PMU comes with intel_rapl_tpmi.
    fs.writeFileSync(path.join(proc, 'modules'), '');
    expect(openIt).toThrow(
      expect.objectContaining({
        code: 'ENOENT',
        message:
          `${DEFAULT_PMU}: no perf power PMU (kernel without CONFIG_PERF_EVENTS_INTEL_RAPL / AMD RAPL PMU, or a VM) — load its ` +
          "driver: modprobe rapl (Intel, or AMD on Linux ≥ 5.8; modprobe intel_rapl_tpmi where RAPL is TPMI's: Granite Rapids, " +
          "Sierra Forest), or use source 'powercap' or 'model'",
      }),
    );
  });

  // With paranoid <= 0 an unprivileged process may open CPU-wide events: nothing to show then.
  const paranoid = Number(fs.readFileSync('/proc/sys/kernel/perf_event_paranoid', 'utf8'));
  it.skipIf(paranoid <= 0)(`names CAP_PERFMON and perf_event_paranoid when not privileged${paranoid <= 0 ? ' (skipped: kernel.perf_event_paranoid <= 0 lets anyone open them)' : ''}`, () => {
    const p = pmu({ type: '17', cpumask: '0', events: RAPL_EVENTS });
    const err = openSourceAsNobody({ source: 'perf', perfPmuRoot: p.perfPmuRoot });
    expect(err?.code).toMatch(/^(EACCES|EPERM)$/);
    expect(err?.message).toBe(
      'perf_event_open(type=17, config=0x2, cpu=0) for energy-pkg: permission denied — needs CAP_PERFMON (CAP_SYS_ADMIN before Linux 5.8) or ' +
        'kernel.perf_event_paranoid <= 0 (sysctl -w kernel.perf_event_paranoid=0)',
    );
  });
});

describe('perf source reading live events', () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  // The first domain's power over 50 ms.
  const firstDomainWatts = async (s: ReturnType<typeof openSource>) => {
    const a = s.read();
    await sleep(50);
    const b = s.read();
    return (b.readings[0].joules - a.readings[0].joules) / (Number(b.timeNs - a.timeNs) / 1e9);
  };

  itPerf('opens one event per package on the CPU the cpumask names for it, psys once', async () => {
    // cpumask 0,1 with one CPU per package, as the kernel lists a two-socket machine's readers.
    const pmu = createSoftwarePerfPmu({ 'energy-pkg': CPU_CLOCK, 'energy-psys': CPU_CLOCK }, { cpus: 2, packages: 2, cpumask: '0,1' });
    cleanup.push(pmu);
    const s = openSource({ source: 'perf', ...pmu.options });
    cleanup.push(s);
    // Ticks of 2^10 counts (tickShift: a 64-bit total holds 2^44 J); the count wraps at 2^64.
    const unit = 1e-9 * 2 ** 10;
    const wrap = 1e-9 * 2 ** 64;
    expect(s.domains.map((d) => `${d.domain}-${d.package} ${d.unitJoules} ${d.estimated} ${d.wrapJoules}`)).toEqual([
      `package-0 ${unit} false ${wrap}`,
      `package-1 ${unit} false ${wrap}`,
      `psys-0 ${unit} false ${wrap}`,
    ]);
    const a = s.read();
    await sleep(50);
    const b = s.read();
    const seconds = Number(b.timeNs - a.timeNs) / 1e9;
    // cpu-clock at 1e-9 J a nanosecond is a 1 W counter on each CPU.
    for (let i = 0; i < 3; i++) {
      const watts = (b.readings[i].joules - a.readings[i].joules) / seconds;
      expect(watts).toBeGreaterThan(0.9);
      expect(watts).toBeLessThan(1.1);
    }
  }, { cpus: 2 });

  // psys counts on one package only, not always package 0 (multi-socket Sapphire Rapids: the
  // others read 0), and rapl.c lists energy-psys on every package regardless. Opened on the first
  // package's CPU alone, it never moved there, was left out as not counting (refused, where it is
  // the PMU's only event), and the package where it counts was never tried. A tracepoint stands
  // in for it: sys_enter_getpriority, which a child pinned to CPU 1 (package 1) calls in a loop,
  // counts on CPU 1 alone.
  itPerf('reads psys where it counts, on any package, as package 0 as the msr source reports it', async (ctx) => {
    const GETPRIORITY = '/sys/kernel/tracing/events/syscalls/sys_enter_getpriority/id';
    let id: string;
    try {
      id = fs.readFileSync(GETPRIORITY, 'utf8').trim();
    } catch (e) {
      return ctx.skip(`${GETPRIORITY} unreadable (${(e as NodeJS.ErrnoException).code}): no tracefs or syscall tracepoints here`);
    }
    if (spawnSync('taskset', ['-V']).error) return ctx.skip('no taskset to pin the child calling getpriority');
    const child = spawn('taskset', ['-c', '1', process.execPath, '-e', 'const os = require("os"); console.log("ready"); for (;;) os.getPriority();'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    cleanup.push({ close: () => child.kill('SIGKILL') });
    await new Promise((resolve, reject) => {
      child.stdout!.once('data', resolve);
      child.once('exit', (code) => reject(new Error(`the getpriority child exited (${code})`)));
    });
    const p = pmu({ type: '2', cpumask: '0-1', events: { 'energy-psys': { config: `event=${id}`, scale: '1e-6', unit: 'Joules' } } });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-cpu-'));
    cleanup.push({ close: () => fs.rmSync(dir, { recursive: true, force: true }) });
    const sysfsCpuRoot = writeSysfsCpu(dir, { cpus: 2, packages: 2 }).sysfsCpuRoot;
    const perfFds = () => fs.readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:[perf_event]';
      } catch {
        return false;
      }
    }).length;
    const before = perfFds();
    // The wait is the most the check takes: it ends once psys has moved.
    const s = openSource({ source: 'perf', perfPmuRoot: p.perfPmuRoot, sysfsCpuRoot, liveCheckMs: 2000 });
    cleanup.push(s);
    expect(s.domains.map((d) => `${d.domain}-${d.package}`)).toEqual(['psys-0']);
    expect(s.notCounting).toEqual([]);
    // One event left open, package 1's: the sampler reads no other.
    expect(perfFds() - before).toBe(1);
    const a = s.read();
    await sleep(20);
    const b = s.read();
    expect(b.readings[0].joules).toBeGreaterThan(a.readings[0].joules);
  }, { cpus: 2 });

  // A multi-die package: the cpumask names a CPU of each die, both in package 0. On Intel each
  // die counts its own, and two domains named package-0 made the exporters' running totals take
  // each for the other's restart. On AMD, Linux 6.10 and 6.11 make each CCD of a Zen 4/5 package
  // a die and list a CPU of each, but every one of those events reads the same package counter:
  // added as Intel's dies are, the package read twice its power here.
  itPerf("adds the events of an Intel package's dies into one domain, and opens one per AMD package", async () => {
    const pmu = createSoftwarePerfPmu({ 'energy-pkg': CPU_CLOCK }, { cpus: 2, packages: 1, dies: 2, cpumask: '0,1' });
    cleanup.push(pmu);
    const cases = [
      { cpuIdentity: { vendor: 'intel', family: 6, model: 0x55 }, watts: 2 }, // two CPUs' cpu-clock at 1e-9 J a ns
      { cpuIdentity: { vendor: 'amd', family: 0x19, model: 0x11 }, watts: 1 }, // one CPU's
    ] as const;
    for (const { cpuIdentity, watts } of cases) {
      const s = openSource({ source: 'perf', ...pmu.options, cpuIdentity });
      cleanup.push(s);
      expect(s.domains.map((d) => `${d.domain}-${d.package}`)).toEqual(['package-0']);
      const got = await firstDomainWatts(s);
      expect(got).toBeGreaterThan(watts * 0.9);
      expect(got).toBeLessThan(watts * 1.1);
    }
  }, { cpus: 2 });

  // intel_rapl_common's PMU (TPMI: Granite Rapids, Sierra Forest) lists every online CPU of each
  // package since "powercap: intel_rapl: Expose all package CPUs in PMU cpumask" (2026), each of
  // them reading the one package counter: taken for dies and added, the package read twice its
  // power here (N times on a package of N CPUs).
  itPerf('opens one event per package where the cpumask names every CPU of it', async () => {
    const pmu = createSoftwarePerfPmu({ 'energy-pkg': CPU_CLOCK }, { cpus: 2, packages: 1, dies: 1, cpumask: '0-1' });
    cleanup.push(pmu);
    const s = openSource({ source: 'perf', ...pmu.options, cpuIdentity: { vendor: 'intel', family: 6, model: 0xad } });
    cleanup.push(s);
    expect(s.domains.map((d) => `${d.domain}-${d.package}`)).toEqual(['package-0']);
    const watts = await firstDomainWatts(s);
    expect(watts).toBeGreaterThan(0.9);
    expect(watts).toBeLessThan(1.1);
  }, { cpus: 2 });

  // The kernel counts RAPL in 2^-32 J (rapl_scale): a total in that unit overflowed 64 bits
  // after 2^32 J, 248 days at 200 W, and the count itself passes 2^64 there (wrap-counter.test.ts).
  itPerf("keeps the kernel's 2^-32 J counts in 2^-20 J ticks, a 64-bit total of which holds 2^44 J", async () => {
    const p = pmu({ type: '1', cpumask: '0', events: { 'energy-pkg': { config: CPU_CLOCK, scale: '2.3283064365386962890625e-10', unit: 'Joules' } } });
    const s = openSource({ source: 'perf', perfPmuRoot: p.perfPmuRoot, sysfsCpuRoot: sysfs(), liveCheckMs: 0 });
    cleanup.push(s);
    expect(s.domains[0]).toMatchObject({ unitJoules: 2 ** -20, wrapJoules: 2 ** 32 });
    const a = s.read();
    await sleep(50);
    const b = s.read();
    // cpu-clock at 2^-32 J a nanosecond, counted in whole ticks of 2^-20 J.
    const expected = Number(b.timeNs - a.timeNs) * 2 ** -32;
    const got = b.readings[0].joules - a.readings[0].joules;
    expect(got).toBeGreaterThan(expected * 0.9 - 2 ** -20);
    expect(got).toBeLessThan(expected * 1.1 + 2 ** -20);
  });

  itPerf('feeds the sampler thread: its total matches the counter over the run', async () => {
    const pmu = createSoftwarePerfPmu({ 'energy-pkg': CPU_CLOCK });
    cleanup.push(pmu);
    const sampler = new Sampler({ source: 'perf', ...pmu.options, intervalUs: 500, threads: 'off' });
    cleanup.push(sampler);
    expect(sampler.source).toBe('perf');
    sampler.start();
    await sleep(300);
    sampler.stop();
    const t = sampler.totals();
    const seconds = Number(t.timeNs - t.startNs) / 1e9;
    const pkg = t.readings[0];
    // From start() to the last sample: the same clock, read on the same thread as the counter.
    expect(pkg.joules / seconds).toBeGreaterThan(0.98);
    expect(pkg.joules / seconds).toBeLessThan(1.02);
    expect(sampler.stats().timing.readErrors).toBe(0);
    const samples = sampler.read();
    expect(samples.length).toBeGreaterThan(100);
    expect(samples.every((x) => !x.estimated && !x.readError)).toBe(true);
  });
});
