// Command-line parsing shared by the commands. Not node:util's parseArgs: `jouletrace run` must
// stop at the command it runs (`run node app.js --port 3000` passes --port to node), which
// needs to know, while scanning, which options take a value.
import * as fs from 'node:fs';
import type { ProbeReport } from '../probe';
import type { Sampler, SamplerStats } from '../sampler';
import { counted } from './format';
import { SOURCE_NAMES, type SourceName, type SourceOptions } from '../source-options';

export interface OptionSpec {
  /** Long name without dashes ("interval"). */
  name: string;
  short?: string;
  /** 'flag' takes no value; the others take the next argument (or --name=value). */
  type: 'flag' | 'string' | 'number';
  /** May be given more than once: every value lands in ParsedArgs.lists, in order. */
  repeatable?: boolean;
}

export interface ParsedArgs {
  options: Record<string, string | number | boolean>;
  /** Values of repeatable options. */
  lists: Record<string, Array<string | number>>;
  /** With `stopAtPositional`: the arguments after `--`, or from the first positional on (else none: they are refused). */
  rest: string[];
}

/** Thrown for bad command lines: the command prints it with its usage and exits 2. */
export class UsageError extends Error {}

const DECIMAL = /^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$/;

export function parseArgs(argv: string[], specs: OptionSpec[], stopAtPositional = false): ParsedArgs {
  const options: ParsedArgs['options'] = {};
  const lists: ParsedArgs['lists'] = {};
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      // Only a command that runs one (stopAtPositional) takes what follows; to the others it
      // was ignored, and `top -- --pid 1` watched the whole system with exit 0.
      if (!stopAtPositional && i + 1 < argv.length) throw new UsageError(`unexpected argument ${JSON.stringify(argv[i + 1])}`);
      rest.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      if (stopAtPositional) {
        rest.push(...argv.slice(i));
        break;
      }
      throw new UsageError(`unexpected argument ${JSON.stringify(arg)}`);
    }
    let name: string;
    let inline: string | undefined;
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      inline = eq < 0 ? undefined : arg.slice(eq + 1);
    } else {
      name = arg.slice(1);
    }
    const spec = specs.find((s) => s.name === name || (s.short !== undefined && s.short === name && !arg.startsWith('--')));
    if (!spec) throw new UsageError(`unknown option ${arg}`);
    if (spec.type === 'flag') {
      if (inline !== undefined) throw new UsageError(`--${spec.name} takes no value`);
      options[spec.name] = true;
      continue;
    }
    const text = inline ?? argv[++i];
    // `run --html -- cmd` forgot the value: '--' is never one (it would name a file '--').
    if (text === undefined || (inline === undefined && text === '--')) throw new UsageError(`--${spec.name} needs a value`);
    // Nor is the next option (`run --html --json -- cmd` wrote the report to a file named
    // --json); a negative number is a value, and so is '-' (no option takes it for stdout: it
    // is a file of that name). --name=VALUE takes any value.
    if (inline === undefined && text.length > 1 && text.startsWith('-') && !DECIMAL.test(text)) {
      throw new UsageError(`--${spec.name} needs a value, not the option ${text} (for a value that begins with "-", write --${spec.name}=${text})`);
    }
    let value: string | number = text;
    if (spec.type === 'number') {
      // Decimal only: Number() would also take 0x10, 0b1 and '' (as 16, 1 and 0).
      value = DECIMAL.test(text) ? Number(text) : NaN;
      if (!Number.isFinite(value)) throw new UsageError(`--${spec.name} expects a number but received ${JSON.stringify(text)}`);
    }
    if (spec.repeatable) (lists[spec.name] ??= []).push(value);
    else options[spec.name] = value;
  }
  return { options, lists, rest };
}

/** Checks a number's range (an option's value, or one of a repeatable option's). */
export function checkNumber(name: string, n: number, min: number, max: number, integer = false): number {
  if (n < min || n > max || (integer && !Number.isInteger(n))) {
    throw new UsageError(`--${name} must be ${integer ? 'an integer' : 'a number'} from ${min} to ${max}, not ${n}`);
  }
  return n;
}

/** A numeric option, range-checked; the default when absent. */
export function numberOption(options: ParsedArgs['options'], name: string, def: number, min: number, max: number, integer = false): number {
  const v = options[name];
  return v === undefined ? def : checkNumber(name, v as number, min, max, integer);
}

/** A string option that must be one of `allowed`; the default when absent. */
export function choiceOption<T extends string, D extends T | undefined>(options: ParsedArgs['options'], name: string, allowed: readonly T[], def: D): T | D {
  const v = options[name];
  if (v === undefined) return def;
  if (!(allowed as readonly unknown[]).includes(v)) {
    throw new UsageError(`--${name} must be one of ${allowed.join(', ')}, not ${JSON.stringify(v)}`);
  }
  return v as T;
}

/** --source: an energy source's name, or undefined (the sampler's default, auto). */
export function sourceOption(options: ParsedArgs['options']): SourceName | undefined {
  return choiceOption(options, 'source', SOURCE_NAMES, undefined);
}

/**
 * A sampling period in whole microseconds, from "500us", "1ms", "0.5s" or a plain number in
 * `plainUnit`, and from 50 µs to 1 s (the sampler's range).
 */
export function parseIntervalUs(text: string, plainUnit: 'us' | 'ms' = 'us'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(us|µs|ms|s)?\s*$/.exec(text);
  if (!m) {
    const example = plainUnit === 'us' ? '500us, 1ms or 1000' : '500us, 10ms or 10';
    throw new UsageError(`--interval expects a duration like ${example} but received ${JSON.stringify(text)}`);
  }
  const unit = m[2] ?? plainUnit;
  const v = Math.round(Number(m[1]) * (unit === 'ms' ? 1e3 : unit === 's' ? 1e6 : 1));
  if (v < 50 || v > 1_000_000) throw new UsageError(`--interval must be from 50us to 1s, not ${text}`);
  return v;
}

/** An output file's path (--output, --csv, --html): undefined when not given, never empty. */
export function filePathOption(options: ParsedArgs['options'], name: string): string | undefined {
  const v = options[name];
  if (v === undefined) return undefined;
  if (v === '') throw new UsageError(`--${name} expects a file path`);
  return String(v);
}

/** --baseline W and --calibrate S (run, top --pid): idle power given, or measured for S seconds. */
export interface BaselineOptions {
  watts?: number;
  calibrateS?: number;
}

export function baselineOptions(options: ParsedArgs['options']): BaselineOptions {
  const out: BaselineOptions = {};
  if (options.baseline !== undefined) out.watts = numberOption(options, 'baseline', 0, 0, 1e6);
  // calibrateBaseline()'s range: 200 ms to 10 min.
  if (options.calibrate !== undefined) out.calibrateS = numberOption(options, 'calibrate', 0, 0.2, 600);
  if (out.watts !== undefined && out.calibrateS !== undefined) throw new UsageError('--baseline and --calibrate contradict each other: give one');
  return out;
}

/** The Sampler's thread slots when maxThreads is not given. */
export const DEFAULT_MAX_THREADS = 4096;

/** --max-threads N (run, top --pid): the Sampler's maxThreads; undefined when not given. */
export function maxThreadsOption(options: ParsedArgs['options']): number | undefined {
  return options['max-threads'] === undefined ? undefined : numberOption(options, 'max-threads', DEFAULT_MAX_THREADS, 1, 1_048_576, true);
}

/**
 * Said where the tracker left threads untracked (stats().threads.droppedThreads): `whose` own
 * work is then partly in "other".
 */
export function droppedThreadsNote(dropped: number, max: number, whose: string): string {
  return `${counted(dropped, 'thread')} of ${whose} went untracked: all ${max} thread slots were in use, so their energy is counted in "other", not in ${whose}'s; --max-threads N (above the threads alive at once) tracks them all`;
}

// Real RAPL counters move about every millisecond, idle or not: a second without a change is
// energy the source did not count (stats().timing.countersStillUs).
export const COUNTERS_STILL_NOTE_S = 1;

/** Said where a measured source's counters stood still for `seconds` (COUNTERS_STILL_NOTE_S or more) at a stretch. */
export function countersStillNote(source: string, seconds: number): string {
  return `${source}'s counters stood still for ${seconds.toFixed(1)} s at a stretch: energy over such a stretch reads 0 J though the machine drew power (a hypervisor that stopped updating them, a live migration); these figures miss it`;
}

/**
 * Said where reads of the energy source failed (`marked`: where the rows with unmeasured time are
 * marked). Failed reads delay energy to the next good read; a counter that started again loses
 * what it counted since its last good read, and so do reads that failed to the run's end (no good
 * read came: the threads' unmeasuredNs). Either way the figures are short or late, and say so.
 */
export function readErrorsNote(stats: SamplerStats, unmeasuredNs: number, marked: string): string | null {
  const t = stats.timing;
  if (t.readErrors === 0) return null;
  const failing = t.byDomain.filter((d) => d.readErrors > 0).map((d) => `${d.domain}-${d.package} ${d.readErrors}`);
  const reads = `${t.readErrors} of ${t.samples} reads of the energy source failed${failing.length > 0 ? ` (${failing.join(', ')})` : ''}`;
  if (t.counterRestarts === 0 && unmeasuredNs > 0) {
    return `${reads}: each domain kept its last value, and reads that failed to the end of the run got no good read after them: ${(unmeasuredNs / 1e6).toFixed(1)} ms of thread time (${marked}) has no energy in these figures`;
  }
  if (t.counterRestarts === 0) return `${reads}: each domain kept its last value, and its energy came with its next good read`;
  return `${reads}; in ${t.counterRestarts} of them a counter started again (a driver reloaded, a resume): the energy from its last good read to the restart is lost, and these figures miss it`;
}

/** The flag of the two given, to name in a refusal where neither applies. */
export function baselineFlag(b: BaselineOptions): '--baseline' | '--calibrate' | undefined {
  return b.watts !== undefined ? '--baseline' : b.calibrateS !== undefined ? '--calibrate' : undefined;
}

/** Sets --baseline W on each package of the sampler's primary domains (package, else psys). */
export function setBaselineOption(sampler: Sampler, watts: number): void {
  sampler.setBaseline(Object.fromEntries(sampler.attribution().domains.map((d) => [d, watts])));
}

/**
 * Said where measured counters run with no baseline: attribution then shares the idle power out
 * by busy time, and `whose` (the tree, the process) gets its part.
 */
export function noBaselineNote(whose: string): string {
  return `no baseline: idle power is shared out by CPU time, so ${whose} is charged part of it; --calibrate S measures the idle power first (keep the machine quiet), --baseline W sets it`;
}

/** Why `auto` passed over each source before the one it took (Sampler.skipped): what is missing and how to get it, one note each, in the words of a command with `flags`. */
export function skippedSourceNotes(skipped: Sampler['skipped'], flags: readonly string[]): string[] {
  return skipped.map((s) => `${s.source} unavailable here: ${s.message === undefined ? (s.code ?? 'no reason given') : inFlagWords(s.message, flags)}`);
}

// Messages of the library name its options (options.pid, threads 'procfs', source 'model',
// liveCheckMs); told on the command line, the flag that sets each where the command has one, and
// without that advice where it has none. The source path options are SOURCE_PATHS's, below.
interface Wording {
  /** The command-line option that sets it. */
  flag: string;
  library: RegExp;
  cli: string | ((match: string) => string);
  /** What replaces the library's words where the command has no such flag. */
  without: string;
}

const FLAG_WORDING: Wording[] = [
  { flag: 'pid', library: /; options\.pid takes a process id: pass /g, cli: '; --pid takes a process id: pass --pid ', without: '; pass the process id, ' },
  // The eBPF tracker's refusals end on the fallback, in one of three ways, in a Sampler's words
  // (threads 'procfs') or openThreadTracker()'s and bpfReadiness()'s (backend 'procfs').
  { flag: 'threads', library: /([,;]) or use (?:threads|backend) 'procfs'\./g, cli: '$1 or use --threads procfs.', without: '.' },
  { flag: 'threads', library: / (Use|Otherwise use) (?:threads|backend) 'procfs'( instead)?\./g, cli: ' $1 --threads procfs$2.', without: '' },
  { flag: 'threads', library: /Use (?:threads|backend) 'procfs', or run/g, cli: 'Use --threads procfs, or run', without: 'Run' },
  { flag: 'baseline', library: /set one with setBaseline\(\), or /g, cli: 'set one with --baseline W, or ', without: '' },
  // "use source 'model'", "try source 'powercap', 'perf' or 'model'", with what leads to it.
  {
    flag: 'source',
    library: /(?: — |; |, or |, )?(?:use|try) source '[a-z]+'(?:(?:, | or )'[a-z]+')*(?: \(an estimate\))?/g,
    cli: (m) => m.replace(/source ((?:'[a-z]+'|, | or )+)/, (_, names: string) => `--source ${names.replace(/'/g, '')}`),
    without: '',
  },
  // No command sets the wait of the counting check.
  { flag: 'live-check-ms', library: /; liveCheckMs sets the wait/g, cli: '; --live-check-ms sets the wait', without: '' },
];

/** The names of a command's options, for inFlagWords(). */
export function flagsOf(specs: readonly OptionSpec[]): string[] {
  return specs.map((s) => s.name);
}

/**
 * A library message as a command says it: `flags` are the options the command has (flagsOf()),
 * less any whose advice does not apply here (run's note of its fallback to procfs names no
 * --threads procfs: it already uses it).
 */
export function inFlagWords(message: string, flags: readonly string[]): string {
  // The library's own prefix, where the line already names the command: "jouletrace top:
  // jouletrace: pid 12 is a thread of process 10", "threads: 'bpf': jouletrace: the eBPF ...".
  let out = message.replace(/(^|: |\()jouletrace: /g, '$1');
  for (const w of [...FLAG_WORDING, ...PATH_WORDING]) {
    if (!flags.includes(w.flag)) out = out.replace(w.library, w.without);
    // Two calls: replace() takes a string or a function, not either.
    else if (typeof w.cli === 'string') out = out.replace(w.library, w.cli);
    else out = out.replace(w.library, w.cli);
  }
  return out;
}

/** A probe() report's reasons and remedies as a command with `flags` says them (its text output; --json stays probe()'s). */
export function probeInFlagWords(report: ProbeReport, flags: readonly string[]): ProbeReport {
  const sources = report.sources.map((s) => {
    const out = { ...s };
    if (s.reason !== undefined) out.reason = inFlagWords(s.reason, flags);
    if (s.remedy !== undefined) {
      const remedy = inFlagWords(s.remedy, flags);
      if (remedy === '') delete out.remedy;
      else out.remedy = remedy;
    }
    return out;
  });
  return { ...report, sources, bpf: { ...report.bpf, reason: inFlagWords(report.bpf.reason, flags) } };
}

/** Prints a UsageError with the command's usage (exit status 2); anything else is rethrown. */
export function reportUsageError(command: string, help: string, e: unknown): number {
  if (!(e instanceof UsageError)) throw e;
  process.stderr.write(`jouletrace ${command}: ${e.message}\n\n${help}`);
  return 2;
}

export type SourcePaths = Pick<SourceOptions, 'powercapRoot' | 'msrPath' | 'perfPmuRoot' | 'sysfsCpuRoot' | 'procStatPath'>;

// Where the energy sources read, for a container that mounts the host's /sys, /dev or /proc
// elsewhere: option, its value's name, Sampler option, default (the host's path), what it is.
const SOURCE_PATHS: ReadonlyArray<[string, string, keyof SourcePaths, string, string]> = [
  ['powercap-root', 'D', 'powercapRoot', '/sys/class/powercap', 'the powercap class'],
  ['msr-path', 'T', 'msrPath', '/dev/cpu/%d/msr', 'the msr devices, %d for the CPU number'],
  ['perf-pmu-root', 'D', 'perfPmuRoot', '/sys/bus/event_source/devices/power', 'the perf power PMU'],
  ['sysfs-cpu-root', 'D', 'sysfsCpuRoot', '/sys/devices/system/cpu', 'CPU topology'],
  ['proc-stat', 'F', 'procStatPath', '/proc/stat', 'CPU time, for the model source'],
];

export const SOURCE_PATH_SPECS: OptionSpec[] = SOURCE_PATHS.map(([name]) => ({ name, type: 'string' }));

// "check options.msrPath" (a source found nothing at a path given): --msr-path.
const PATH_WORDING: Wording[] = SOURCE_PATHS.map(([name, , key]) => ({
  flag: name,
  library: new RegExp(`options\\.${key}\\b`, 'g'),
  cli: `--${name}`,
  without: `the ${key} path`,
}));

/** The help section of SOURCE_PATH_SPECS. */
export const SOURCE_PATH_HELP =
  "Where the energy sources read (for a container that mounts the host's /sys, /dev or /proc\nelsewhere, as /host/sys):\n" +
  SOURCE_PATHS.map(([name, value, , def, what]) => `  ${`--${name} ${value}`.padEnd(20)}${what} (default ${def})\n`).join('');

const whereHostSees = (host: string) => `give where this process sees the host's ${host}, as /host${host} where the host's root is mounted at /host`;

/**
 * The source path options given, as Sampler and probe() options. Checked here, so that a typo
 * is told as the option it came from, not as a source that is missing.
 */
export function sourcePathOptions(options: ParsedArgs['options']): SourcePaths {
  const out: SourcePaths = {};
  for (const [name, , key, host] of SOURCE_PATHS) {
    const v = options[name];
    if (v === undefined) continue;
    const p = String(v);
    if (p === '') throw new UsageError(`--${name} expects a path`);
    if (name === 'msr-path') {
      if (p.split('%d').length !== 2) throw new UsageError(`--msr-path needs exactly one %d for the CPU number (like /host/dev/cpu/%d/msr), not ${JSON.stringify(p)}`);
      const first = p.replace('%d', '0');
      // A path given, not the default's: the option is the likelier mistake than the module.
      if (!fs.existsSync(first)) throw new UsageError(`--msr-path: ${first} does not exist (${whereHostSees(host)})`);
    } else if (!fs.existsSync(p)) {
      throw new UsageError(`--${name}: ${p} does not exist (${whereHostSees(host)})`);
    }
    out[key] = p;
  }
  return out;
}
