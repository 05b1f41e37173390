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

// Columns a terminal gives a character: East Asian wide and fullwidth ones (CJK, Hangul, kana,
// fullwidth forms) and emoji shown as such take two; combining marks and format characters
// (a zero-width joiner) none, drawn on the character before. The wide ranges are Unicode's
// East_Asian_Width W and F, as wcwidth() and the terminals have them; JavaScript's regular
// expressions have no property for it.
const ZERO_WIDTH = /^[\p{Mn}\p{Me}\p{Cf}]$/u;
const EMOJI_WIDE = /^\p{Emoji_Presentation}$/u;
function charWidth(ch: string): number {
  const c = ch.codePointAt(0)!;
  if (c < 0x300) return 1;
  if (ZERO_WIDTH.test(ch)) return 0;
  if (
    (c >= 0x1100 && c <= 0x115f) ||
    c === 0x2329 ||
    c === 0x232a ||
    (c >= 0x2e80 && c <= 0x303e) ||
    (c >= 0x3041 && c <= 0x3247) ||
    (c >= 0x3250 && c <= 0x4dbf) ||
    (c >= 0x4e00 && c <= 0xa4c6) ||
    (c >= 0xa960 && c <= 0xa97c) ||
    (c >= 0xac00 && c <= 0xd7a3) ||
    (c >= 0xf900 && c <= 0xfaff) ||
    (c >= 0xfe10 && c <= 0xfe19) ||
    (c >= 0xfe30 && c <= 0xfe6b) ||
    (c >= 0xff01 && c <= 0xff60) ||
    (c >= 0xffe0 && c <= 0xffe6) ||
    (c >= 0x16fe0 && c <= 0x18cff) ||
    (c >= 0x1b000 && c <= 0x1b2ff) ||
    (c >= 0x1f200 && c <= 0x1f251) ||
    (c >= 0x20000 && c <= 0x3fffd)
  ) {
    return 2;
  }
  return EMOJI_WIDE.test(ch) ? 2 : 1;
}

/** Columns `s` takes on a terminal (see charWidth: wide characters two, combining marks none). */
export function displayWidth(s: string): number {
  let w = 0;
  for (const ch of s) w += charWidth(ch);
  return w;
}

/**
 * Cuts a string to `width` columns, with '…' where it cut, by the columns its characters take:
 * by its length, a name in CJK characters took twice the room and broke the row. Never splits
 * a character (nor a surrogate pair); a wide one that would straddle the edge is left out.
 */
export function fit(s: string, width: number): string {
  if (displayWidth(s) <= width) return s;
  let out = '';
  let w = 0;
  for (const ch of s) {
    const cw = charWidth(ch);
    if (w + cw > width - 1) break;
    out += ch;
    w += cw;
  }
  return width > 0 ? out + '…' : '';
}

/** `s` padded with spaces to `width` columns (padEnd counts UTF-16 units, not columns). */
export function padCols(s: string, width: number): string {
  return s + ' '.repeat(Math.max(0, width - displayWidth(s)));
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
