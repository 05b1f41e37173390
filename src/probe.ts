// What this machine can measure: every energy source with the reason it is or is not usable,
// each domain's wrap period at the present power, and whether eBPF attribution can run.
import * as os from 'node:os';
import { asJouletraceError, checkIntegerInRange, invalidType } from './errors';
import { native } from './native';
import { validateSourceOptions, type SourceName, type SourceOptions } from './source-options';
import type { DomainInfo, DomainName } from './sources';

export interface ProbeDomain extends DomainInfo {
  /** Average watts over the probe interval (undefined when not measured: see `notMeasured`). */
  watts?: number;
  /** Why `watts` is undefined: the source could not be opened again, the domain did not count then, or a read failed. */
  notMeasured?: string;
  /** The error of a read during the probe interval ('EIO', ...), when one failed. */
  readError?: string;
  /**
   * Seconds until the hardware counter wraps at `watts`, or at a nominal power where the counter
   * did not move or was not measured (see wrapBasis). Undefined only when `wrapJoules` is 0.
   */
  wrapPeriodSeconds?: number;
  wrapBasis?: 'measured' | 'nominal';
}

export interface ProbeSource {
  source: Exclude<SourceName, 'auto'>;
  available: boolean;
  code?: string;
  reason?: string;
  remedy?: string;
  domains: ProbeDomain[];
  /** Available sources: domains listed but left out, because they did not count (see `liveCheckMs`). */
  notCounting?: DomainInfo[];
  /** The shortest wrap period among the domains. */
  wrapPeriodSeconds?: number;
  /**
   * The longest gap allowed between two reads: half the shortest wrap period. A counter found
   * more than half a wrap below its last value is taken for one that started again (ERANGE),
   * and the energy of that gap is lost.
   */
  maxReadGapSeconds?: number;
}

/** What probe() reports of eBPF: `bpfReadiness()`'s answer, or `ready: null` from a build that cannot tell. */
export interface ProbeBpfReadiness {
  /** null when this build cannot tell. */
  ready: boolean | null;
  btf?: boolean;
  capBpf?: boolean;
  capPerfmon?: boolean;
  kernel?: string;
  reason: string;
}

export interface ProbeReport {
  cpu: { vendor: string; family: number; model: number; brand: string };
  sources: ProbeSource[];
  bpf: ProbeBpfReadiness;
  kernel: string;
}

/** The source options without `source`: probe() reports every source. */
export interface ProbeOptions extends Omit<SourceOptions, 'source'> {
  /** How long to watch each available source to measure its power. @default 100 */
  intervalMs?: number;
}

// Used only when a counter did not move during the probe (idle emulated device) or could not be
// measured: the order of magnitude of a server socket, which gives that of the wrap period.
const NOMINAL_WATTS: Record<DomainName, number> = { package: 100, core: 80, uncore: 15, dram: 15, psys: 150 };

/** Splits "what failed — how to fix it" messages into reason and remedy. */
function splitMessage(message: string): { reason: string; remedy?: string } {
  const at = message.indexOf(' — ');
  if (at < 0) return { reason: message };
  return { reason: message.slice(0, at), remedy: message.slice(at + 3) };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

interface NativeStatus {
  source: Exclude<SourceName, 'auto'>;
  available: boolean;
  code?: string;
  message?: string;
  domains: DomainInfo[];
  notCounting: DomainInfo[];
}

function setWrapPeriod(d: ProbeDomain, watts: number | undefined): void {
  if (d.wrapJoules <= 0) return;
  if (watts !== undefined && watts > 0) {
    d.wrapPeriodSeconds = d.wrapJoules / watts;
    d.wrapBasis = 'measured';
  } else {
    d.wrapPeriodSeconds = d.wrapJoules / NOMINAL_WATTS[d.domain];
    d.wrapBasis = 'nominal';
  }
}

// Fills in watts where both reads succeeded. Whatever stops the measurement leaves watts undefined
// with the reason (never a 0 W that was not measured), and the wrap period at nominal power: the
// counter's wrap energy is known from the first open, whether or not its power is.
async function measure(source: ProbeSource, opts: object, intervalMs: number): Promise<void> {
  const watts = new Map<ProbeDomain, number>();
  const notMeasured = (reason: string, readError?: string) =>
    source.domains.forEach((d) => {
      if (watts.has(d)) return;
      d.notMeasured ??= reason;
      if (readError !== undefined) d.readError = readError;
    });
  let handle;
  try {
    handle = native().openSource({ ...opts, source: source.source });
  } catch (e) {
    const err = asJouletraceError(e) as Error & { code?: string };
    const { reason } = splitMessage(err.message);
    notMeasured(`could not be opened again to measure: ${err.code ? `${err.code}: ` : ''}${reason}`);
  }
  if (handle) {
    try {
      // By name: this open's counting check may leave out a domain the first one kept.
      const index = new Map((handle.domains as DomainInfo[]).map((d, i) => [`${d.domain}-${d.package}`, i]));
      const a = handle.read();
      await sleep(intervalMs);
      const b = handle.read();
      // A failed read leaves its counter at the previous value: the delta would understate the power.
      const failed = [a, b].find((r) => r.status < 0);
      if (failed) {
        const readError: string = failed.error ?? `errno ${-failed.status}`;
        notMeasured(`a read failed: ${readError}`, readError);
      } else {
        const seconds = Number(b.timeNs - a.timeNs) / 1e9; // > 0: monotonic clock, and we slept
        source.domains.forEach((d) => {
          const i = index.get(`${d.domain}-${d.package}`);
          if (i !== undefined) watts.set(d, (Number(b.ticks[i] - a.ticks[i]) * d.unitJoules) / seconds);
        });
        notMeasured('did not count when opened again to measure');
      }
    } finally {
      handle.close();
    }
  }
  source.domains.forEach((d) => {
    const w = watts.get(d);
    if (w !== undefined) d.watts = w;
    setWrapPeriod(d, w);
  });
  const periods = source.domains.map((d) => d.wrapPeriodSeconds).filter((p): p is number => p !== undefined);
  if (periods.length > 0) {
    source.wrapPeriodSeconds = Math.min(...periods);
    source.maxReadGapSeconds = source.wrapPeriodSeconds / 2;
  }
}

function bpfReadiness(): ProbeBpfReadiness {
  const fn = native().bpfReadiness as undefined | (() => ProbeBpfReadiness);
  if (typeof fn !== 'function') return { ready: null, reason: 'unknown: this build does not report BPF readiness' };
  try {
    return fn();
  } catch (e) {
    return { ready: null, reason: `unknown: ${e instanceof Error ? e.message : String(e)}` };
  }
}

/** Reports which energy sources work here, with reasons and remedies for those that do not. */
export async function probe(options?: ProbeOptions): Promise<ProbeReport> {
  // Taken and ignored, `source` read as a filter that was not applied: refused instead.
  if (options !== null && typeof options === 'object' && (options as { source?: unknown }).source !== undefined) {
    throw new TypeError(
      'Unknown option options.source: probe() reports every source, in the order auto tries them (to open one source, use openSource({ source }))',
    );
  }
  // Without `source` among the options known that an unknown one's message lists.
  const opts = validateSourceOptions(options, 'options', ['intervalMs'], ['source']);
  const intervalMs =
    options?.intervalMs === undefined ? 100 : checkIntegerInRange('options.intervalMs', options.intervalMs, 1, 10_000);
  let raw: { cpu: ProbeReport['cpu']; sources: NativeStatus[] };
  try {
    raw = native().probeSources(opts);
  } catch (e) {
    throw asJouletraceError(e);
  }
  const sources: ProbeSource[] = raw.sources.map((s) => {
    const out: ProbeSource = { source: s.source, available: s.available, domains: s.domains.map((d) => ({ ...d })) };
    if (!s.available) {
      out.code = s.code;
      Object.assign(out, splitMessage(s.message ?? ''));
    } else if (s.notCounting.length > 0) {
      out.notCounting = s.notCounting.map((d) => ({ ...d }));
    }
    return out;
  });
  await Promise.all(sources.filter((s) => s.available).map((s) => measure(s, opts, intervalMs)));
  return { cpu: raw.cpu, sources, bpf: bpfReadiness(), kernel: os.release() };
}

function formatSeconds(s: number): string {
  if (s >= 86400) return `${(s / 86400).toFixed(1)} d`;
  if (s >= 3600) return `${(s / 3600).toFixed(1)} h`;
  if (s >= 60) return `${(s / 60).toFixed(1)} min`;
  return `${s.toFixed(1)} s`;
}

// A counter's unit to four figures, in the largest unit it is at least one of as printed: a 1 J
// unit (Sapphire Rapids' psys) read "1000 mJ", and one just under 1 J would have too.
function formatUnit(j: number): string {
  for (const [scale, name] of [[1, 'J'], [1e3, 'mJ'], [1e6, 'µJ'], [1e9, 'nJ']] as const) {
    const figure = (j * scale).toPrecision(4);
    if (Number(figure) >= 1) return `${figure} ${name}`;
  }
  return `${j.toExponential(3)} J`;
}

/** Renders a probe report as a readable table for terminals. */
export function formatProbe(report: ProbeReport): string {
  const r = report as Partial<ProbeReport> | null;
  const isObject = (x: unknown) => typeof x === 'object' && x !== null;
  if (!isObject(r) || !isObject(r!.cpu) || !Array.isArray(r!.sources) || !isObject(r!.bpf)) {
    throw invalidType('report', 'a ProbeReport (what await probe() resolves to)', report);
  }
  const lines: string[] = [];
  const c = report.cpu;
  const hex = (n: number) => `0x${n.toString(16).toUpperCase()}`;
  lines.push(`CPU     ${c.brand || '(no brand string)'} — ${c.vendor} family ${hex(c.family)} model ${hex(c.model)}`);
  lines.push(`Kernel  ${report.kernel}`);
  lines.push('');
  lines.push('Energy sources (auto picks the first available, top to bottom)');
  for (const s of report.sources) {
    if (s.available) {
      const wrap =
        s.wrapPeriodSeconds !== undefined
          ? `wraps after ${formatSeconds(s.wrapPeriodSeconds)}, read at least every ${formatSeconds(s.maxReadGapSeconds!)}`
          : s.domains.every((d) => d.wrapJoules === 0)
            ? 'never wraps'
            : 'wrap period not measured';
      lines.push(`  ✓ ${s.source.padEnd(9)} available, ${wrap}`);
      for (const d of s.domains) {
        const cols = [
          `${d.domain}-${d.package}`.padEnd(11),
          `unit ${formatUnit(d.unitJoules)}`.padEnd(17),
          d.watts === undefined ? `not measured${d.notMeasured ? ` (${d.notMeasured})` : ''},` : `${d.watts.toFixed(2)} W`.padEnd(11),
          d.wrapPeriodSeconds !== undefined
            ? `wrap ${formatSeconds(d.wrapPeriodSeconds)}${d.wrapBasis === 'nominal' ? ` (at nominal ${NOMINAL_WATTS[d.domain]} W)` : ''}`
            : d.wrapJoules === 0
              ? 'no wrap'
              : 'wrap not measured',
          d.estimated ? 'ESTIMATED' : '',
        ];
        lines.push(`      ${cols.join(' ').trimEnd()}`);
      }
      for (const d of s.notCounting ?? []) {
        lines.push(`      ${`${d.domain}-${d.package}`.padEnd(11)} left out: listed, but did not advance when the others did (not counted here)`);
      }
    } else {
      lines.push(`  ✗ ${s.source.padEnd(9)} ${s.code ?? ''}: ${s.reason ?? ''}`);
      if (s.remedy) lines.push(`      fix: ${s.remedy}`);
    }
  }
  lines.push('');
  const b = report.bpf;
  const state = b.ready === null ? '? unknown' : b.ready ? '✓ ready' : '✗ not ready';
  lines.push(`eBPF thread attribution  ${state}`);
  const flags: string[] = [];
  if (b.btf !== undefined) flags.push(`BTF ${b.btf ? 'yes' : 'no'}`);
  if (b.capBpf !== undefined) flags.push(`CAP_BPF ${b.capBpf ? 'yes' : 'no'}`);
  if (b.capPerfmon !== undefined) flags.push(`CAP_PERFMON ${b.capPerfmon ? 'yes' : 'no'}`);
  if (flags.length) lines.push(`      ${flags.join(', ')}`);
  if (b.reason) lines.push(`      ${b.reason}`);
  return lines.join('\n') + '\n';
}
