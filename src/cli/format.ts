// How the commands print: colour on terminals only, and figures with their units.
import { fmtSeconds } from '../units';

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

export { counted, fmtJoules, fmtWatts, fmtSeconds } from '../units';

/**
 * After a thread's or process's row: its on-CPU time whose energy no read measured (reads that
 * failed until the run's end, a counter's restart), which its joules leave out; nothing when
 * none, so that a healthy run's rows are unchanged and a short one does not pass for a light one.
 */
export function unmeasuredMark(ns: number): string {
  return ns > 0 ? `  (${fmtSeconds(ns / 1e9)} unmeasured, not in joules)` : '';
}

/** A sampling period (50 µs to 1 s, whole µs) as given on the command line: "50 µs", "1.5 ms", "1 s". */
export function fmtInterval(us: number): string {
  if (us >= 1e6) return `${us / 1e6} s`;
  return us >= 1000 ? `${us / 1000} ms` : `${us} µs`;
}

/**
 * The sampler's wake-up jitter for a summary line: none before its first timed wake (a run
 * shorter than its interval), rather than 0 µs, which would read as a perfect sampler.
 */
export function fmtJitter(j: { p50: number; p99: number } | null, digits = 1): string {
  return j ? `jitter p50 ${j.p50.toFixed(digits)} µs / p99 ${j.p99.toFixed(digits)} µs` : 'no jitter yet (no timed wake)';
}

/** A sampler figure that is null before its first sample: '-' then. */
export function fmtKnown(x: number | null, digits: number, unit: string): string {
  return `${x === null ? '-' : x.toFixed(digits)}${unit}`;
}

/** Cuts a string to `width` columns (our strings are single-width characters). */
export function fit(s: string, width: number): string {
  return s.length > width ? s.slice(0, Math.max(0, width - 1)) + '…' : s;
}

/**
 * A process's or thread's name as a terminal may be shown it. Names and command lines are the
 * process's own to set, and a control character among them would be a command to the terminal
 * of whoever reads jouletrace's output (root's, often): each C0, DEL and C1 character reads '?',
 * as in ps. JSON needs none of this: it escapes them.
 */
export function printable(s: string): string {
  return s.replace(/[\x00-\x1f\x7f-\x9f]/g, '?');
}
