// Validation and normalisation of the options that pick and configure an energy source. Runs
// before anything reaches C++, which trusts the result (see native/energy/source_js.h).
import {
  checkBoolean,
  checkIntegerInRange,
  checkKnownKeys,
  checkPath,
  checkObject,
  checkOneOf,
  invalidRange,
  invalidType,
} from './errors';

/** The energy sources; `auto` tries msr, perf, powercap, model in that order. */
export const SOURCE_NAMES = ['auto', 'msr', 'perf', 'powercap', 'model'] as const;
export type SourceName = (typeof SOURCE_NAMES)[number];

export const CPU_VENDORS = ['intel', 'amd', 'hygon'] as const;
export type CpuVendor = (typeof CPU_VENDORS)[number];

/** Every key validateSourceOptions() understands; callers with more options pass theirs as extraKeys. */
export const SOURCE_OPTION_KEYS = [
  'source',
  'msrPath',
  'msrOffsetShift',
  'powercapRoot',
  'sysfsCpuRoot',
  'perfPmuRoot',
  'procStatPath',
  'cpuIdentity',
  'modelIdleWatts',
  'modelMaxWatts',
  'liveCheckMs',
  'msrAmdCores',
] as const;

// Watts beyond this are a typo (a mW figure), not a machine.
const MAX_WATTS = 100_000;

export interface SourceOptions {
  /** Which source to open. @default 'auto' */
  source?: SourceName;
  /** Path template of the msr device, with exactly one `%d` for the CPU number. @default '/dev/cpu/%d/msr' */
  msrPath?: string;
  /**
   * File offset of MSR x is x << msrOffsetShift: 0 for the msr driver; 3 for emulated devices
   * (regular files), where AMD's consecutive MSRs would otherwise overlap. @default 0
   */
  msrOffsetShift?: number;
  /** Root of the powercap class. @default '/sys/class/powercap' */
  powercapRoot?: string;
  /** CPU topology root (online, cpuN/topology). @default '/sys/devices/system/cpu' */
  sysfsCpuRoot?: string;
  /** The perf power PMU directory. @default '/sys/bus/event_source/devices/power' */
  perfPmuRoot?: string;
  /** CPU time statistics used by the model source. @default '/proc/stat' */
  procStatPath?: string;
  /** Overrides CPUID (for tests, or a VM hiding the vendor). @default undefined (CPUID) */
  cpuIdentity?: { vendor: CpuVendor; family: number; model: number };
  /** model source: whole-machine watts at 0% utilisation. @default 10 + 1 × online CPUs */
  modelIdleWatts?: number;
  /** model source: whole-machine watts at 100% utilisation. @default 10 + 8 × online CPUs */
  modelMaxWatts?: number;
  /**
   * msr, perf and powercap: how long opening waits, at most, for the source's package, dram and
   * psys counters to advance (a VM can list RAPL and never count it). None moved: the source is
   * refused with ERR_JOULETRACE_NOT_COUNTING. Some moved: those still are left out and listed in
   * `notCounting`. Real counters move about every millisecond, so the wait is usually a few ms,
   * spent synchronously in openSource() or new Sampler(). 0 skips the check: emulated devices
   * in tests, whose files change only when written.
   * @default 50
   */
  liveCheckMs?: number;
  /**
   * msr on AMD and Hygon: also read each physical core's energy counter (0xC001029A) and report
   * their sum as the `core` domain. Each is read on its own core: one cross-CPU interrupt per core
   * per sample (64,000 a second on a 64-core part at 1 kHz), landing on whatever runs there.
   * @default false
   */
  msrAmdCores?: boolean;
}

/** What the native side receives: every key checked, `source` always set. */
export interface NormalizedSourceOptions extends SourceOptions {
  source: SourceName;
}

function checkWatts(option: string, value: unknown): number {
  const what = `a number of watts between 0 and ${MAX_WATTS}`;
  if (typeof value !== 'number' || Number.isNaN(value)) throw invalidType(option, what, value);
  if (!(value >= 0 && value <= MAX_WATTS)) throw invalidRange(option, what, value);
  return value;
}

/**
 * Checks source options and returns a plain object the native addon accepts.
 * @param value the user's options (undefined means all defaults)
 * @param optionName how the object is named in messages, e.g. 'options' or 'sampler options'
 * @param extraKeys keys the caller validates itself; they are allowed here and left out of the result
 */
export function validateSourceOptions(
  value: unknown,
  optionName = 'options',
  extraKeys: readonly string[] = [],
  omitKeys: readonly string[] = [],
): NormalizedSourceOptions {
  const o = checkObject(optionName, value);
  checkKnownKeys(optionName, o, [...SOURCE_OPTION_KEYS.filter((k) => !omitKeys.includes(k)), ...extraKeys]);
  const out: NormalizedSourceOptions = { source: 'auto' };
  if (o.source !== undefined) out.source = checkOneOf(`${optionName}.source`, o.source, SOURCE_NAMES);
  if (o.msrPath !== undefined) {
    const p = checkPath(`${optionName}.msrPath`, o.msrPath);
    if (p.split('%d').length !== 2) throw invalidRange(`${optionName}.msrPath`, 'a path template with exactly one %d', p);
    out.msrPath = p;
  }
  if (o.msrOffsetShift !== undefined) out.msrOffsetShift = checkIntegerInRange(`${optionName}.msrOffsetShift`, o.msrOffsetShift, 0, 3);
  for (const key of ['powercapRoot', 'sysfsCpuRoot', 'perfPmuRoot', 'procStatPath'] as const) {
    if (o[key] !== undefined) out[key] = checkPath(`${optionName}.${key}`, o[key]);
  }
  if (o.cpuIdentity !== undefined) {
    const name = `${optionName}.cpuIdentity`;
    if (o.cpuIdentity === null || typeof o.cpuIdentity !== 'object' || Array.isArray(o.cpuIdentity)) {
      throw invalidType(name, 'an object', o.cpuIdentity);
    }
    const c = o.cpuIdentity as Record<string, unknown>;
    checkKnownKeys(name, c, ['vendor', 'family', 'model']);
    out.cpuIdentity = {
      vendor: checkOneOf(`${name}.vendor`, c.vendor, CPU_VENDORS),
      family: checkIntegerInRange(`${name}.family`, c.family, 0, 0x10ff),
      model: checkIntegerInRange(`${name}.model`, c.model, 0, 0xff),
    };
  }
  if (o.modelIdleWatts !== undefined) out.modelIdleWatts = checkWatts(`${optionName}.modelIdleWatts`, o.modelIdleWatts);
  if (o.modelMaxWatts !== undefined) out.modelMaxWatts = checkWatts(`${optionName}.modelMaxWatts`, o.modelMaxWatts);
  if (o.liveCheckMs !== undefined) out.liveCheckMs = checkIntegerInRange(`${optionName}.liveCheckMs`, o.liveCheckMs, 0, 10_000);
  if (o.msrAmdCores !== undefined) out.msrAmdCores = checkBoolean(`${optionName}.msrAmdCores`, o.msrAmdCores);
  if (out.modelIdleWatts !== undefined && out.modelMaxWatts !== undefined && out.modelMaxWatts < out.modelIdleWatts) {
    throw invalidRange(
      `${optionName}.modelMaxWatts`,
      `a number of watts >= ${optionName}.modelIdleWatts (${out.modelIdleWatts})`,
      out.modelMaxWatts,
    );
  }
  return out;
}
