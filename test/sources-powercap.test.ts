import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Sampler } from '../src/sampler';
import { openSource, type EnergySource } from '../src/sources';
import { createEmulatedPowercap, type EmulatedPowercap, type PowercapZone } from './fixtures/emulated-devices';
import { itGated, toolsRequired } from './fixtures/gated';
import { openSourceAsNobody, openSourceInChild } from './fixtures/unprivileged';

const cleanup: Array<{ close(): void }> = [];
afterEach(() => {
  while (cleanup.length) cleanup.pop()!.close();
});

function emu(tree: PowercapZone[], opts?: { classLinks?: boolean }): EmulatedPowercap {
  const e = createEmulatedPowercap(tree, opts);
  cleanup.push(e);
  return e;
}

// An Intel machine's trees, whatever CPU runs the tests: on AMD the 'core' subzone is left out.
function open(e: EmulatedPowercap): EnergySource {
  const s = openSource({ source: 'powercap', powercapRoot: e.powercapRoot, liveCheckMs: 0, cpuIdentity: { vendor: 'intel', family: 6, model: 0x55 } });
  cleanup.push(s);
  return s;
}

const twoSockets: PowercapZone[] = [
  {
    name: 'package-0',
    energyUj: 1_000_000,
    children: [
      { name: 'core', energyUj: 500_000 },
      { name: 'uncore', energyUj: 10 },
      { name: 'dram', energyUj: 70_000 },
    ],
  },
  { name: 'psys', energyUj: 42 },
  { name: 'package-1', energyUj: 2_000_000, children: [{ name: 'dram', energyUj: 9 }] },
];

const key = (r: { domain: string; package: number }) => `${r.domain}-${r.package}`;

// A cgroup2 directory this process may make cgroups in (root's, usually), else undefined.
const kernfsDir = (() => {
  const mounts = fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' '));
  for (const [, dir, type] of mounts) {
    if (type !== 'cgroup2') continue;
    const probe = path.join(dir, `jouletrace-probe-${process.pid}`);
    try {
      fs.mkdirSync(probe);
      fs.rmdirSync(probe);
      return dir;
    } catch {
      // read-only, or not ours to write
    }
  }
  return undefined;
})();
const kernfsSkip = kernfsDir
  ? undefined
  : 'no cgroup2 hierarchy this process may make cgroups in (kernfs, as sysfs): run as root on a machine with cgroup2 mounted';

describe('powercap source, dies and vendors', () => {
  // Linux names die-scoped zones package-N-die-M: two zones both read as package-N made two
  // domains of one name, which the exporters' running totals took for restarts (5.7x the energy).
  it("sums a package's die zones, and their subzones, into the package's domains", () => {
    const e = emu([
      { name: 'package-0-die-0', energyUj: 1_000_000, children: [{ name: 'dram', energyUj: 100 }] },
      { name: 'package-0-die-1', energyUj: 2_000_000, children: [{ name: 'dram', energyUj: 200 }] },
      { name: 'package-1-die-0', energyUj: 0 },
    ]);
    const s = open(e);
    expect(s.domains.map(key)).toEqual(['package-0', 'dram-0', 'package-1']);
    e.set('intel-rapl:0', 1_000_000 + 50_000_000);
    e.set('intel-rapl:1', 2_000_000 + 25_000_000);
    e.set('intel-rapl:1:0', 200 + 3_000_000);
    e.set('intel-rapl:2', 4_000_000);
    expect(s.read().readings.map((r) => r.joules)).toEqual([75, 3, 4]);
  });

  // Linux 6.10 and 6.11 make each CCD of a Zen 4/5 package a die (CPUID 0x80000026), and powercap
  // a package-N-die-M zone per CCD, each reading the same package counter 0xC001029B: summed as
  // Intel's dies are, an 8-CCD package read 8 times its energy.
  it("reads an AMD package's per-CCD die zones as the one package counter they all read", () => {
    const ccds = (pkg: number) => [0, 1, 2, 3].map((die) => ({ name: `package-${pkg}-die-${die}`, energyUj: 1_000_000 * (pkg + 1) }));
    const e = emu([...ccds(0), ...ccds(1)]);
    for (const vendor of ['amd', 'hygon'] as const) {
      const s = openSource({ source: 'powercap', powercapRoot: e.powercapRoot, liveCheckMs: 0, cpuIdentity: { vendor, family: vendor === 'amd' ? 0x19 : 0x18, model: 0x11 } });
      cleanup.push(s);
      expect(s.domains.map(key)).toEqual(['package-0', 'package-1']);
      // Package 0 used 10 J and package 1 used 4 J: each of a package's zones shows it whole.
      for (let z = 0; z < 8; z++) e.set(`intel-rapl:${z}`, 1_000_000 * (z < 4 ? 11 : 6));
      expect(s.read().readings.map((r) => r.joules)).toEqual([10, 4]);
      for (let z = 0; z < 8; z++) e.set(`intel-rapl:${z}`, 1_000_000 * (z < 4 ? 1 : 2));
    }
  });

  // AMD's "core" zone is one core's counter (0xC001029A on the package's lead CPU), not the
  // package's cores that the msr source's core domain sums.
  it("leaves AMD's one-core 'core' subzone out, and keeps Intel's", () => {
    const tree: PowercapZone[] = [{ name: 'package-0', energyUj: 1_000_000, children: [{ name: 'core', energyUj: 10 }] }];
    const e = emu(tree);
    const at = (vendor: 'intel' | 'amd') =>
      openSource({ source: 'powercap', powercapRoot: e.powercapRoot, liveCheckMs: 0, cpuIdentity: { vendor, family: vendor === 'amd' ? 0x19 : 6, model: 1 } });
    const amd = at('amd');
    const intel = at('intel');
    cleanup.push(amd, intel);
    expect(amd.domains.map(key)).toEqual(['package-0']);
    expect(intel.domains.map(key)).toEqual(['package-0', 'core-0']);
  });
});

describe('powercap source', () => {
  it('finds nested zones once each, whether listed at the top level or only nested', () => {
    for (const classLinks of [true, false]) {
      const s = open(emu(twoSockets, { classLinks }));
      expect(s.name).toBe('powercap');
      expect(s.domains.map(key)).toEqual(['package-0', 'core-0', 'uncore-0', 'dram-0', 'psys-0', 'package-1', 'dram-1']);
      for (const d of s.domains) {
        expect(d.unitJoules).toBe(1e-6);
        expect(d.estimated).toBe(false);
        expect(d.wrapJoules).toBeCloseTo(262143.32885, 5);
      }
    }
  });

  // The kernel names zones in hex ("%s:%x"): intel-rapl:a and later were passed over, and
  // their packages' energy with them.
  it('finds zones by their hex ids, in the order of their numbers', () => {
    const packages = Array.from({ length: 17 }, (_, p) => ({ name: `package-${p}`, energyUj: 1000, children: [{ name: 'dram', energyUj: 10 }] }));
    const e = emu(packages);
    const s = open(e);
    expect(s.domains.map(key)).toEqual(packages.flatMap((_, p) => [`package-${p}`, `dram-${p}`]));
    e.set('intel-rapl:10', 1000 + 2_000_000);
    e.set('intel-rapl:a:0', 10 + 3_000_000);
    const got = s.read().readings;
    expect(got.find((r) => key(r) === 'package-16')!.joules).toBe(2);
    expect(got.find((r) => key(r) === 'dram-10')!.joules).toBe(3);
  });

  // psys is the platform's: a kernel that registers a psys zone for each package where it reads
  // non-zero lists it twice on two sockets, and the sum read twice the msr source's psys.
  it('reads the first psys zone only, as the one platform-wide counter', () => {
    const e = emu([
      { name: 'package-0', energyUj: 1000, children: [{ name: 'dram', energyUj: 1000 }] },
      { name: 'psys', energyUj: 5000 },
      { name: 'package-1', energyUj: 1000 },
      { name: 'psys', energyUj: 7000 },
    ]);
    const s = open(e);
    expect(s.domains.map(key)).toEqual(['package-0', 'dram-0', 'psys-0', 'package-1']);
    e.set('intel-rapl:1', 5000 + 1_000_000);
    e.set('intel-rapl:3', 7000 + 3_000_000);
    expect(s.read().readings.find((r) => r.domain === 'psys')!.joules).toBe(1);
  });

  it('reads each zone separately: a subzone is never added to its parent', () => {
    const e = emu(twoSockets);
    const s = open(e);
    e.set('intel-rapl:0', 1_000_000 + 3_000_000);
    e.set('intel-rapl:0:0', 500_000 + 1_250_000);
    e.set('intel-rapl:0:2', 70_000 + 500);
    e.set('intel-rapl:2:0', 9 + 7);
    const got = Object.fromEntries(s.read().readings.map((r) => [key(r), r.joules]));
    expect(got).toEqual({
      'package-0': 3,
      'core-0': 1.25,
      'uncore-0': 0,
      'dram-0': 0.0005,
      'psys-0': 0,
      'package-1': 0,
      'dram-1': 7e-6,
    });
  });

  it('wraps at max_energy_range_uj + 1', () => {
    const e = emu([{ name: 'package-0', energyUj: 999_900, maxEnergyRangeUj: 999_999 }]);
    const s = open(e);
    expect(s.domains[0].wrapJoules).toBe(1);
    e.set('intel-rapl:0', 999_999);
    expect(s.read().readings[0].joules).toBeCloseTo(99e-6, 12);
    e.set('intel-rapl:0', 250);
    expect(s.read().readings[0].joules).toBeCloseTo(350e-6, 12);
  });

  it('reports a counter that started again (driver reloaded, resume) as ERANGE, not as a wrap', () => {
    const e = emu([{ name: 'package-0', energyUj: 50_000_000, maxEnergyRangeUj: 262_143_328_850 }]);
    const s = open(e);
    e.set('intel-rapl:0', 1_000_000);
    const restarted = s.read();
    expect(restarted.error).toBe('ERANGE');
    expect(restarted.readings[0].joules).toBe(0); // not 262,094 J
    e.set('intel-rapl:0', 3_000_000);
    expect(s.read().readings[0].joules).toBe(2);
  });

  // A restart from the upper half of the range lands less than half a wrap below the last value:
  // it read as a wrap, 62 kJ in one interval here.
  it('reports a counter that restarts from the upper half of its range as ERANGE, by the power its wrap would mean', () => {
    const range = 262_143_328_850;
    const e = emu([{ name: 'package-0', energyUj: 200_000_000_000, maxEnergyRangeUj: range }]);
    const s = open(e);
    e.set('intel-rapl:0', 1_000_000);
    const restarted = s.read();
    expect(restarted.error).toBe('ERANGE');
    expect(restarted.readings[0].joules).toBe(0);
    e.set('intel-rapl:0', 3_000_000);
    expect(s.read().readings[0].joules).toBe(2);
    // A wrap from just below the range to a small value still counts, exactly.
    e.set('intel-rapl:0', range - 1_000_000);
    const w = open(e);
    e.set('intel-rapl:0', 500_000);
    const wrapped = w.read();
    expect(wrapped.error).toBeUndefined();
    expect(wrapped.readings[0].joules).toBeCloseTo(1.500001, 12);
  });

  it('reports EIO mid-run and recovers the missed energy', () => {
    const e = emu([{ name: 'package-0', energyUj: 100 }]);
    const s = open(e);
    fs.truncateSync(path.join(e.zonePath('intel-rapl:0'), 'energy_uj'), 0);
    const bad = s.read();
    expect(bad.error).toBe('EIO');
    expect(bad.readings[0].joules).toBe(0);
    e.set('intel-rapl:0', 100 + 2_000_000);
    const good = s.read();
    expect(good.error).toBeUndefined();
    expect(good.readings[0].joules).toBe(2);
  });

  // start() refused with "the first read of the 'powercap' source failed: Input/output error",
  // naming neither the domain nor the file.
  it('names the domain and the file whose first read fails at start()', () => {
    const e = emu([{ name: 'package-0', energyUj: 100 }]);
    const s = new Sampler({
      source: 'powercap',
      powercapRoot: e.powercapRoot,
      liveCheckMs: 0,
      cpuIdentity: { vendor: 'intel', family: 6, model: 0x55 },
      threads: 'off',
    });
    cleanup.push(s);
    const file = path.join(e.zonePath('intel-rapl:0'), 'energy_uj');
    fs.truncateSync(file, 0);
    expect(() => s.start()).toThrow(
      expect.objectContaining({
        code: 'EIO',
        message: `start(): the first read of the 'powercap' source failed for package-0 (${file}: read failed (Input/output error)), which spans and requests are charged from — try again once it reads`,
      }),
    );
  });

  // A zone the kernel removes and registers again (intel_rapl_msr reloaded, a package's CPUs all
  // offline and back) answers ENODEV on the old descriptor forever. sysfs and cgroup2 are both
  // kernfs, which answers that for a removed file: a cgroup's cgroup.max.descendants, removed
  // with its cgroup and made again, stands in for the zone's energy_uj.
  itGated('opens energy_uj again after its zone was removed and registered again, counting on', kernfsSkip, toolsRequired(), 'JOULETRACE_REQUIRE_TOOLS=1', async () => {
    const cg = path.join(kernfsDir!, `jouletrace-zone-${process.pid}`);
    const counter = path.join(cg, 'cgroup.max.descendants');
    const make = (uj: number) => {
      fs.mkdirSync(cg);
      fs.writeFileSync(counter, `${uj}\n`);
    };
    make(1000);
    cleanup.push({ close: () => fs.existsSync(cg) && fs.rmdirSync(cg) });
    const e = emu([{ name: 'package-0', energyUj: 0 }]);
    const file = path.join(e.zonePath('intel-rapl:0'), 'energy_uj');
    fs.rmSync(file);
    fs.symlinkSync(counter, file);
    const s = open(e);
    fs.writeFileSync(counter, '3000\n');
    const before = s.read();
    expect(before.error).toBeUndefined();
    expect(before.readings[0].joules).toBe(0.002);
    fs.rmdirSync(cg);
    expect(s.read()).toMatchObject({ error: 'ENODEV', readings: [{ joules: 0.002 }] });
    make(7000);
    // Past the 100 ms between two tries at opening it again: the first was when it failed.
    await new Promise((resolve) => setTimeout(resolve, 150));
    const after = s.read();
    expect(after.error).toBeUndefined();
    expect(after.readings[0].joules).toBe(0.006);
  });

  it('ignores intel-rapl-mmio zones and zones with unknown names', () => {
    const e = emu([{ name: 'package-0', energyUj: 5, children: [{ name: 'mystery', energyUj: 5 }] }]);
    expect(open(e).domains.map(key)).toEqual(['package-0']);
  });

  // How to load RAPL, at the default root, is probe.test.ts's (this machine has none).
  it('names options.powercapRoot when there are no zones under the root given', () => {
    const e = emu([]);
    expect(() => open(e)).toThrow(
      expect.objectContaining({
        code: 'ENOENT',
        message: `no RAPL zones under ${e.powercapRoot} — check options.powercapRoot: it should name where this process sees the host's /sys/class/powercap`,
      }),
    );
  });

  it('says the zones have no domain name, not an unreadable one, when every name read is unknown', () => {
    const e = emu([{ name: 'mystery', energyUj: 5 }]);
    expect(() => open(e)).toThrow(
      expect.objectContaining({
        code: 'ENOENT',
        message: `RAPL zones under ${e.powercapRoot} have no domain's name (package-N, core, uncore, dram, psys)`,
      }),
    );
  });

  it('refuses a zone whose name it cannot read, rather than lose its package', () => {
    const e = emu([{ name: 'package-0', energyUj: 5 }, { name: 'package-1', energyUj: 7 }]);
    const file = path.join(e.zonePath('intel-rapl:1'), 'name');
    fs.rmSync(file);
    fs.mkdirSync(file); // read() of a directory: EISDIR
    expect(() => open(e)).toThrow(
      expect.objectContaining({ code: 'EISDIR', message: `${file}: Is a directory — cannot tell which RAPL domain this zone is` }),
    );
  });

  it('refuses a zone whose wrap range it cannot read, rather than lose each wrap', () => {
    const e = emu([{ name: 'package-0', energyUj: 5 }]);
    const file = path.join(e.zonePath('intel-rapl:0'), 'max_energy_range_uj');
    fs.rmSync(file);
    expect(() => open(e)).toThrow(
      expect.objectContaining({ code: 'ENOENT', message: `${file}: No such file or directory — without the counter's range its wraps cannot be told from resets` }),
    );
    fs.writeFileSync(file, '0\n');
    expect(() => open(e)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringContaining('not a positive number') }));
  });

  // open() of a FIFO waits for a writer, forever: a path given by mistake hung openSource().
  it('refuses a FIFO in the tree at options.powercapRoot, naming the option, without waiting on it', () => {
    const e = emu([{ name: 'package-0', energyUj: 5 }]);
    const file = path.join(e.zonePath('intel-rapl:0'), 'energy_uj');
    fs.rmSync(file);
    execFileSync('mkfifo', [file]);
    const options = { source: 'powercap', powercapRoot: e.powercapRoot, liveCheckMs: 0 };
    expect(openSourceInChild(options)).toEqual({
      code: 'EINVAL',
      message: `${file}: a FIFO, not a file or character device — check options.powercapRoot: it should name where this process sees the host's /sys/class/powercap`,
    });
    // The zone's name, read whole, is not waited on either.
    const name = path.join(e.zonePath('intel-rapl:0'), 'name');
    fs.rmSync(name);
    execFileSync('mkfifo', [name]);
    expect(openSourceInChild(options)).toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/^\S+\/name: Invalid argument — /) });
  });

  // The advice was "chmod a+r .../energy_uj": readable by all, it undoes the CVE-2020-8694
  // (Platypus) fix for every local user. Access for this service alone, narrowest first.
  it('names CVE-2020-8694 when energy_uj is root-only, and grants read access to the service alone', () => {
    const e = emu([{ name: 'package-0', energyUj: 5 }]);
    const file = path.join(e.zonePath('intel-rapl:0'), 'energy_uj');
    fs.chmodSync(file, 0o400);
    expect(openSourceAsNobody({ source: 'powercap', powercapRoot: e.powercapRoot })).toEqual({
      code: 'EACCES',
      message:
        `${file}: permission denied — energy_uj is root's alone (mode 0400) since the fix for CVE-2020-8694 (Platypus), as its ` +
        'readings leak what other processes compute: run as root, or give this service alone read access: a group of its own ' +
        "(a udev rule that runs chgrp <group> and chmod g+r on each RAPL zone's energy_uj as the zone is added, see README, " +
        'Least privilege; the service in that group, SupplementaryGroups= in its systemd unit) or CAP_DAC_READ_SEARCH ' +
        '(AmbientCapabilities=CAP_DAC_READ_SEARCH beside its User=), not read access for all, which reopens the leak to every ' +
        'local user',
    });
  });

  // "modprobe intel_rapl_msr" was the advice on a kernel that loads no modules too (no
  // /proc/modules), where modprobe fails: as the msr source says of its driver, such a kernel has
  // the driver built in or not at all. Said at the default root only, where this machine has no zones.
  const DEFAULT_ROOT = '/sys/class/powercap';
  const defaultZones = fs.existsSync(DEFAULT_ROOT) && fs.readdirSync(DEFAULT_ROOT).some((n) => n.startsWith('intel-rapl:'));
  it.skipIf(defaultZones)('says the kernel has no RAPL driver to load, not to load one, where it loads no modules', () => {
    const proc = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-proc-'));
    cleanup.push({ close: () => fs.rmSync(proc, { recursive: true, force: true }) });
    for (const f of ['version', 'stat']) fs.writeFileSync(path.join(proc, f), '');
    const openIt = () => openSource({ source: 'powercap', procStatPath: path.join(proc, 'stat') });
    expect(openIt).toThrow(
      expect.objectContaining({
        code: 'ENOENT',
        message:
          `no RAPL zones under ${DEFAULT_ROOT} — this kernel has no RAPL powercap driver built in and no module to load (no ` +
          `${proc}/modules: the kernel loads no modules), as is common in VMs, which usually expose no RAPL at all; try source ` +
          "'msr', 'perf' or 'model'",
      }),
    );
    // One that loads modules is told which, intel_rapl_tpmi for TPMI parts.
    fs.writeFileSync(path.join(proc, 'modules'), '');
    expect(openIt).toThrow(
      expect.objectContaining({
        code: 'ENOENT',
        message:
          `no RAPL zones under ${DEFAULT_ROOT} — load the RAPL powercap driver: modprobe intel_rapl_msr (Intel, and AMD Zen), ` +
          "or modprobe intel_rapl_tpmi where RAPL is TPMI's (Granite Rapids, Sierra Forest); VMs usually expose no RAPL at all",
      }),
    );
  });
});
