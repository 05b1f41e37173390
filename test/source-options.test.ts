import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SOURCE_OPTION_KEYS, validateSourceOptions } from '../src/source-options';
import { EnergySource, openSource } from '../src/sources';

const known =
  'source, msrPath, msrOffsetShift, powercapRoot, sysfsCpuRoot, perfPmuRoot, procStatPath, cpuIdentity, modelIdleWatts, modelMaxWatts, liveCheckMs, msrAmdCores';

describe('validateSourceOptions', () => {
  it('defaults to auto and returns only the keys given', () => {
    expect(validateSourceOptions(undefined)).toEqual({ source: 'auto' });
    expect(validateSourceOptions({})).toEqual({ source: 'auto' });
    const full = {
      source: 'msr',
      msrPath: '/tmp/x/cpu%d/msr',
      msrOffsetShift: 3,
      powercapRoot: '/p',
      sysfsCpuRoot: '/s',
      perfPmuRoot: '/perf',
      procStatPath: '/stat',
      cpuIdentity: { vendor: 'amd', family: 0x19, model: 1 },
      modelIdleWatts: 0,
      modelMaxWatts: 0,
      liveCheckMs: 0,
      msrAmdCores: true,
    } as const;
    expect(validateSourceOptions(full)).toEqual(full);
    expect(() => validateSourceOptions({ msrAmdCores: 1 })).toThrow('Expected a boolean for options.msrAmdCores but received 1 of type number');
    expect(SOURCE_OPTION_KEYS.join(', ')).toBe(known);
  });

  // So that the addon knows a default path however it is written ('/sys/class/powercap/').
  it('takes paths without repeated slashes, . segments or a trailing slash; keeps .. and relative paths', () => {
    const given = {
      msrPath: './cpu%d//msr',
      powercapRoot: '//sys/class/./powercap/.',
      sysfsCpuRoot: '/sys/devices/system/cpu/',
      perfPmuRoot: '/a/link/../b/',
      procStatPath: 'proc/stat',
    };
    expect(validateSourceOptions(given)).toEqual({
      source: 'auto',
      msrPath: 'cpu%d/msr',
      powercapRoot: '/sys/class/powercap',
      sysfsCpuRoot: '/sys/devices/system/cpu',
      perfPmuRoot: '/a/link/../b',
      procStatPath: 'proc/stat',
    });
    expect(validateSourceOptions({ powercapRoot: '/', sysfsCpuRoot: '/.', perfPmuRoot: './' })).toEqual({
      source: 'auto',
      powercapRoot: '/',
      sysfsCpuRoot: '/',
      perfPmuRoot: '.',
    });
  });

  // Past PATH_MAX no file is reached: an overlong powercapRoot was reported as ENOENT, and a
  // megabyte-long procStatPath came back as a megabyte-long message.
  it('refuses a path of PATH_MAX bytes or more, showing its start', () => {
    const cases: Array<[string, string, number]> = [
      ['powercapRoot', '/' + 'a'.repeat(4095), 4096],
      ['procStatPath', '/x'.repeat(500_000), 1_000_000],
      ['msrPath', '/' + 'é'.repeat(2048), 4097], // bytes, as the kernel counts them
    ];
    for (const [option, value, bytes] of cases) {
      expect(() => validateSourceOptions({ [option]: value })).toThrow(
        new RangeError(
          `Expected a path of at most 4095 bytes (Linux's PATH_MAX) for options.${option} but received one of ${bytes} bytes starting ${JSON.stringify(value.slice(0, 60))}`,
        ),
      );
    }
    const longest = '/' + 'a'.repeat(4094);
    expect(validateSourceOptions({ powercapRoot: longest })).toEqual({ source: 'auto', powercapRoot: longest });
  });

  it('allows the caller’s extra keys and leaves them out of the result', () => {
    expect(validateSourceOptions({ source: 'model', rateHz: 1000 }, 'sampler options', ['rateHz'])).toEqual({ source: 'model' });
  });

  it.each<[unknown, ErrorConstructor, string]>([
    ['msr', TypeError, 'Expected an object for options but received "msr" of type string'],
    [null, TypeError, 'Expected an object for options but received null of type null'],
    [{ sauce: 'msr' }, TypeError, `Unknown option options.sauce; known options are: ${known}`],
    [{ source: 'rapl' }, RangeError, "Expected one of 'auto', 'msr', 'perf', 'powercap', 'model' for options.source but received \"rapl\" of type string"],
    [{ source: 1 }, TypeError, "Expected one of 'auto', 'msr', 'perf', 'powercap', 'model' for options.source but received 1 of type number"],
    [{ msrPath: '/dev/cpu/msr' }, RangeError, 'Expected a path template with exactly one %d for options.msrPath but received "/dev/cpu/msr" of type string'],
    [{ msrPath: '/dev/%d/cpu%d' }, RangeError, 'Expected a path template with exactly one %d for options.msrPath but received "/dev/%d/cpu%d" of type string'],
    [{ msrPath: 5 }, TypeError, 'Expected a non-empty path string for options.msrPath but received 5 of type number'],
    [{ msrOffsetShift: 8 }, RangeError, 'Expected an integer between 0 and 3 for options.msrOffsetShift but received 8 of type number'],
    [{ powercapRoot: '' }, RangeError, 'Expected a non-empty path string for options.powercapRoot but received "" of type string'],
    [{ procStatPath: ['/proc/stat'] }, TypeError, 'Expected a non-empty path string for options.procStatPath but received ["/proc/stat"] of type array'],
    [{ cpuIdentity: 'intel' }, TypeError, 'Expected an object for options.cpuIdentity but received "intel" of type string'],
    [{ cpuIdentity: { vendor: 'via', family: 6, model: 1 } }, RangeError, "Expected one of 'intel', 'amd', 'hygon' for options.cpuIdentity.vendor but received \"via\" of type string"],
    [{ cpuIdentity: { vendor: 'intel', family: 6.5, model: 1 } }, RangeError, 'Expected an integer between 0 and 4351 for options.cpuIdentity.family but received 6.5 of type number'],
    [{ cpuIdentity: { vendor: 'intel', family: 6, model: 1, stepping: 2 } }, TypeError, 'Unknown option options.cpuIdentity.stepping; known options are: vendor, family, model'],
    [{ modelIdleWatts: -1 }, RangeError, 'Expected a number of watts between 0 and 100000 for options.modelIdleWatts but received -1 of type number'],
    [{ modelMaxWatts: '50' }, TypeError, 'Expected a number of watts between 0 and 100000 for options.modelMaxWatts but received "50" of type string'],
    [{ modelMaxWatts: Infinity }, RangeError, 'Expected a number of watts between 0 and 100000 for options.modelMaxWatts but received Infinity of type number'],
    [{ modelIdleWatts: 40, modelMaxWatts: 30 }, RangeError, 'Expected a number of watts >= options.modelIdleWatts (40) for options.modelMaxWatts but received 30 of type number'],
    [{ liveCheckMs: -1 }, RangeError, 'Expected an integer between 0 and 10000 for options.liveCheckMs but received -1 of type number'],
    [{ liveCheckMs: 2.5 }, RangeError, 'Expected an integer between 0 and 10000 for options.liveCheckMs but received 2.5 of type number'],
    [{ liveCheckMs: '50' }, TypeError, 'Expected an integer between 0 and 10000 for options.liveCheckMs but received "50" of type string'],
  ])('rejects %j', (value, type, message) => {
    expect(() => validateSourceOptions(value)).toThrow(type);
    expect(() => validateSourceOptions(value)).toThrow(message);
  });

  it('names the option object as the caller calls it', () => {
    expect(() => validateSourceOptions({ source: 'x' }, 'sampler')).toThrow(
      "Expected one of 'auto', 'msr', 'perf', 'powercap', 'model' for sampler.source but received \"x\" of type string",
    );
  });
});

describe('openSource option handling', () => {
  it('throws before reaching the addon', () => {
    expect(() => openSource({ source: 'rapl' as never })).toThrow(RangeError);
    expect(() => openSource({ msrPath: '%s' })).toThrow(RangeError);
  });

  // This VM has neither; a machine with them has nothing to show here.
  const hasRapl = fs.existsSync('/sys/bus/event_source/devices/power') || fs.existsSync('/sys/class/powercap');
  it.skipIf(hasRapl)('gives the default path’s advice for the default path written with a trailing slash', () => {
    // A procfs of a kernel that loads modules, whatever this one does: the advice is to load one.
    const proc = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-proc-'));
    try {
      for (const f of ['version', 'stat', 'modules']) fs.writeFileSync(path.join(proc, f), '');
      const procStatPath = path.join(proc, 'stat');
      expect(() => openSource({ source: 'perf', perfPmuRoot: '/sys/bus/event_source/devices/power/', procStatPath })).toThrow(
        expect.objectContaining({
          code: 'ENOENT',
          message: expect.stringMatching(/^\/sys\/bus\/event_source\/devices\/power: no perf power PMU \(.*\) — load its driver: modprobe rapl /),
        }),
      );
      expect(() => openSource({ source: 'powercap', powercapRoot: '/sys/class/powercap/', procStatPath })).toThrow(
        expect.objectContaining({ code: 'ENOENT', message: expect.stringMatching(/^no RAPL zones under \/sys\/class\/powercap — load the RAPL powercap driver: /) }),
      );
    } finally {
      fs.rmSync(proc, { recursive: true, force: true });
    }
  });

  it('new EnergySource() made by hand says to use openSource()', () => {
    for (const bad of [{}, null]) {
      expect(() => new EnergySource(bad as never)).toThrow(new TypeError("new EnergySource() takes the addon's handle; open a source with openSource(options)"));
    }
  });

  it('throws a coded error, never a silent zero, when a chosen source cannot open', () => {
    expect(() => openSource({ source: 'powercap', powercapRoot: '/nonexistent' })).toThrow(
      expect.objectContaining({ name: 'JouletraceError', code: 'ENOENT' }),
    );
  });
});
