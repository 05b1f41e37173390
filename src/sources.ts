// The public face of one energy source: cumulative joules per RAPL domain since open.
import { asJouletraceError, JouletraceError } from './errors';
import { native } from './native';
import { validateSourceOptions, type SourceName, type SourceOptions } from './source-options';

export type DomainName = 'package' | 'core' | 'uncore' | 'dram' | 'psys';

export interface DomainInfo {
  domain: DomainName;
  /** Physical package id (0 for psys, which is platform-wide). */
  package: number;
  /** Joules per counter tick. */
  unitJoules: number;
  /** True for the model source: an estimate, not a measurement. */
  estimated: boolean;
  /**
   * Energy after which the hardware counter wraps (0: the model, which has no counter). Reads
   * must come at least twice per wrap: a counter more than half a wrap below its last value is
   * taken for one that started again (ERANGE), and the energy of that gap is lost; past a whole
   * wrap, whole wraps are lost without an error.
   */
  wrapJoules: number;
  /** Estimated sources: the idle part of the estimate in watts, used as the default attribution baseline. */
  idleWatts?: number;
}

// Attribution and the CLI's watts read one domain, summed over packages: package, which every
// RAPL part but a few client ones lists, else psys (the platform, package included), else the
// first listed. Never two of them: core and dram are inside package, package inside psys.
const PRIMARY_DOMAINS: readonly string[] = ['package', 'psys'];

/** The domain that attribution divides, and that stands for the machine's power (undefined for none). */
export function primaryDomain(domains: ReadonlyArray<{ domain: string }>): string | undefined {
  return PRIMARY_DOMAINS.find((n) => domains.some((d) => d.domain === n)) ?? domains[0]?.domain;
}

export interface DomainReading {
  domain: DomainName;
  package: number;
  /** Cumulative joules since the source was opened. */
  joules: number;
  estimated: boolean;
}

export interface SourceReading {
  /** CLOCK_MONOTONIC nanoseconds when the counters were read. */
  timeNs: bigint;
  readings: DomainReading[];
  /**
   * Set ('EIO', ...) when a counter could not be read this time: its reading stays at the previous
   * value and the energy it missed appears, exactly, in the next successful read. 'ERANGE' is a
   * counter that started again (a driver reloaded, a resume): the energy from its last good read
   * to the restart is lost, and the next reads count from the new value.
   */
  error?: string;
}

/** Why `auto` passed over a source before the one it opened. */
export interface SkippedSource {
  source: Exclude<SourceName, 'auto'>;
  code: string;
  message: string;
}

interface NativeReading {
  timeNs: bigint;
  raw: BigUint64Array;
  ticks: BigUint64Array;
  status: number;
  error?: string;
}

interface NativeSource {
  readonly name: string;
  readonly domains: DomainInfo[];
  readonly skipped: Array<SkippedSource & { available: boolean; domains: DomainInfo[] }>;
  readonly notCounting: DomainInfo[];
  read(): NativeReading;
  close(): void;
}

const closedError = () => new JouletraceError('ERR_JOULETRACE_CLOSED', 'the energy source is closed');

export class EnergySource {
  #native: NativeSource | undefined;
  /** The source actually opened ('msr', 'perf', 'powercap' or 'model'). */
  readonly name: Exclude<SourceName, 'auto'>;
  readonly domains: readonly DomainInfo[];
  readonly skipped: readonly SkippedSource[];
  /**
   * Domains the source lists but left out: a package, dram or psys counter that did not advance
   * when it was opened while others did (see the `liveCheckMs` option). Usually empty.
   */
  readonly notCounting: readonly DomainInfo[];

  /** @internal use openSource() */
  constructor(nativeSource: NativeSource) {
    // Exported for instanceof and types: one made by hand failed on its missing fields.
    const n = nativeSource as Partial<NativeSource> | null;
    if (n === null || typeof n !== 'object' || !Array.isArray(n.domains) || !Array.isArray(n.skipped) || !Array.isArray(n.notCounting)) {
      throw new TypeError('new EnergySource() takes the addon\'s handle; open a source with openSource(options)');
    }
    this.#native = nativeSource;
    this.name = nativeSource.name as Exclude<SourceName, 'auto'>;
    this.domains = Object.freeze(nativeSource.domains.map((d) => Object.freeze({ ...d })));
    this.skipped = Object.freeze(
      nativeSource.skipped.map((s) => Object.freeze({ source: s.source, code: s.code, message: s.message })),
    );
    this.notCounting = Object.freeze(nativeSource.notCounting.map((d) => Object.freeze({ ...d })));
  }

  get closed(): boolean {
    return this.#native === undefined;
  }

  /** Reads every domain: cumulative joules since open, wrap-extended natively. */
  read(): SourceReading {
    if (!this.#native) throw closedError();
    const r = this.#native.read();
    const readings = this.domains.map((d, i) => ({
      domain: d.domain,
      package: d.package,
      joules: Number(r.ticks[i]) * d.unitJoules,
      estimated: d.estimated,
    }));
    const out: SourceReading = { timeNs: r.timeNs, readings };
    if (r.error) out.error = r.error;
    return out;
  }

  /** Releases the device descriptors. Safe to call twice. */
  close(): void {
    this.#native?.close();
    this.#native = undefined;
  }

  /** @internal the native handle, for the Sampler. */
  static nativeHandle(s: EnergySource): NativeSource | undefined {
    return s.#native;
  }
}

/**
 * Opens an energy source. Throws TypeError/RangeError for bad options, and a JouletraceError
 * whose `.code` and message name what is missing (module, capability, sysctl) when the source
 * cannot be opened.
 */
export function openSource(options?: SourceOptions): EnergySource {
  const opts = validateSourceOptions(options);
  let handle: NativeSource;
  try {
    handle = native().openSource(opts) as NativeSource;
  } catch (e) {
    throw asJouletraceError(e);
  }
  return new EnergySource(handle);
}
