// Joules, watts and seconds as people read them, for the CLI and the HTML report. The unit is
// chosen on the figure as it will be printed, so that a value just under a unit's boundary does
// not print as 1000 of the smaller unit ("1000.00 mJ" for 0.9999996 J), and a figure that is not
// one prints as "n/a", never "NaN kJ".

const NOT_A_FIGURE = 'n/a';

// Whether `v`, printed with `digits` decimals, is below `limit`.
function printsBelow(v: number, digits: number, limit: number): boolean {
  return Number(v.toFixed(digits)) < limit;
}

/** Joules with a unit that keeps three significant-ish digits: µJ, mJ, J, kJ. */
export function fmtJoules(j: number): string {
  if (!Number.isFinite(j)) return NOT_A_FIGURE;
  if (j === 0) return '0 J';
  const a = Math.abs(j);
  if (printsBelow(a * 1e6, 1, 1000)) return `${(j * 1e6).toFixed(1)} µJ`;
  if (printsBelow(a * 1e3, 2, 1000)) return `${(j * 1e3).toFixed(2)} mJ`;
  if (printsBelow(a, 3, 1e4)) return `${j.toFixed(3)} J`;
  return `${(j / 1e3).toFixed(2)} kJ`;
}

/** Watts; milliwatts below 0.1 W. */
export function fmtWatts(w: number): string {
  if (!Number.isFinite(w)) return NOT_A_FIGURE;
  if (w !== 0 && printsBelow(Math.abs(w) * 1e3, 1, 100)) return `${(w * 1e3).toFixed(1)} mW`;
  return `${w.toFixed(2)} W`;
}

/**
 * Elapsed time: "850 µs", "412.3 ms", "9.87 s", "42.3 s", "2m05s", "1h02m05s". Below a second
 * in ms (µs below one): "0.00 s" beside a run's joules and watts said nothing.
 */
export function fmtSeconds(s: number): string {
  if (!Number.isFinite(s)) return NOT_A_FIGURE;
  if (s === 0) return '0 s';
  const a = Math.abs(s);
  if (printsBelow(a * 1e6, 0, 1000)) return `${(s * 1e6).toFixed(0)} µs`;
  if (printsBelow(a * 1e3, 1, 1000)) return `${(s * 1e3).toFixed(1)} ms`;
  if (printsBelow(a, 2, 10)) return `${s.toFixed(2)} s`;
  if (printsBelow(a, 1, 60)) return `${s.toFixed(1)} s`;
  const total = Math.round(s);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const sec = String(total % 60).padStart(2, '0');
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m${sec}s` : `${m}m${sec}s`;
}

/** "1 thread", "2 threads". */
export function counted(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}
