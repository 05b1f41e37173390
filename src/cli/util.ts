// Small helpers the commands share: option parsing, colour on terminals only, number formatting.
import { constants } from 'node:os';

export interface OptionSpec {
  /** Long name without dashes ("interval"). */
  name: string;
  short?: string;
  /** 'flag' takes no value; the others take the next argument (or --name=value). */
  type: 'flag' | 'string' | 'number';
}

export interface ParsedArgs {
  options: Record<string, string | number | boolean>;
  /** Arguments after `--`, or from the first positional on when `stopAtPositional`. */
  rest: string[];
}

/** Thrown for bad command lines: the command prints it with its usage and exits 2. */
export class UsageError extends Error {}

export function parseArgs(argv: string[], specs: OptionSpec[], stopAtPositional = false): ParsedArgs {
  const options: Record<string, string | number | boolean> = {};
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
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
    const value = inline ?? argv[++i];
    if (value === undefined) throw new UsageError(`--${spec.name} needs a value`);
    if (spec.type === 'number') {
      const n = Number(value);
      if (value.trim() === '' || !Number.isFinite(n)) throw new UsageError(`--${spec.name} expects a number but received ${JSON.stringify(value)}`);
      options[spec.name] = n;
    } else {
      options[spec.name] = value;
    }
  }
  return { options, rest };
}

/** Checks a numeric option's range; returns the default when absent. */
export function numberOption(options: ParsedArgs['options'], name: string, def: number, min: number, max: number, integer = false): number {
  const v = options[name];
  if (v === undefined) return def;
  const n = v as number;
  if (n < min || n > max || (integer && !Number.isInteger(n))) {
    throw new UsageError(`--${name} must be ${integer ? 'an integer' : 'a number'} from ${min} to ${max}, not ${n}`);
  }
  return n;
}

/** Colour only on a terminal, never with NO_COLOR set (https://no-color.org) or TERM=dumb. */
export function colorEnabled(stream: NodeJS.WriteStream): boolean {
  if (process.env.NO_COLOR !== undefined && process.env.NO_COLOR !== '') return false;
  if (process.env.TERM === 'dumb') return false;
  return stream.isTTY === true;
}

export interface Paint {
  bold(s: string): string;
  dim(s: string): string;
  yellow(s: string): string;
  cyan(s: string): string;
  green(s: string): string;
  red(s: string): string;
  inverse(s: string): string;
}

export function paint(enabled: boolean): Paint {
  const wrap = (open: number, close: number) => (s: string) => (enabled ? `\x1b[${open}m${s}\x1b[${close}m` : s);
  return {
    bold: wrap(1, 22),
    dim: wrap(2, 22),
    yellow: wrap(33, 39),
    cyan: wrap(36, 39),
    green: wrap(32, 39),
    red: wrap(31, 39),
    inverse: wrap(7, 27),
  };
}

/** Joules with a unit that keeps three significant-ish digits. */
export function fmtJoules(j: number): string {
  const a = Math.abs(j);
  if (a === 0) return '0 J';
  if (a < 1e-3) return `${(j * 1e6).toFixed(1)} µJ`;
  if (a < 1) return `${(j * 1e3).toFixed(2)} mJ`;
  if (a < 1e4) return `${j.toFixed(3)} J`;
  return `${(j / 1e3).toFixed(2)} kJ`;
}

export function fmtWatts(w: number): string {
  const a = Math.abs(w);
  if (a > 0 && a < 0.1) return `${(w * 1e3).toFixed(1)} mW`;
  return `${w.toFixed(2)} W`;
}

export function fmtSeconds(s: number): string {
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  return `${m}m${(s - m * 60).toFixed(0).padStart(2, '0')}s`;
}

/** Exit status a shell would give: the code, or 128 + the signal's number. */
export function exitStatus(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  if (signal !== null) return 128 + ((constants.signals as Record<string, number>)[signal] ?? 0);
  return 1;
}

/** Cuts a string to `width` columns (our strings are single-width characters). */
export function fit(s: string, width: number): string {
  return s.length > width ? s.slice(0, Math.max(0, width - 1)) + '…' : s;
}
