// renderReport(data): one self-contained HTML file (inline CSS and hand-written SVG, no script, no
// network) with power over time, energy per thread over time, joules per request or span label,
// the energy proportionality curve and a summary table.
import type { ReportData } from './types';
import { checkBoolean, checkString, invalidType } from '../errors';
import { fmtJoules, fmtSeconds } from '../units';

const PALETTE = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];

// The colour of series k of n: the palette's first, then hues evenly spaced round the wheel for
// the rest, at two lightnesses in turn so that neighbours differ. The collector draws up to 100
// threads (maxThreads) and the rest as one: the palette alone repeated from the 11th, which was
// drawn as the first.
function seriesColor(k: number, n: number): string {
  if (k < PALETTE.length) return PALETTE[k];
  const i = k - PALETTE.length;
  const extra = Math.max(1, n - PALETTE.length);
  return hslHex((20 + (360 * i) / extra) % 360, 0.6, i % 2 === 0 ? 0.42 : 0.62);
}

function hslHex(h: number, s: number, l: number): string {
  const a = s * Math.min(l, 1 - l);
  const f = (n: number) => {
    const k = (n + h / 30) % 12;
    const v = l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1));
    return Math.round(v * 255)
      .toString(16)
      .padStart(2, '0');
  };
  return `#${f(0)}${f(8)}${f(4)}`;
}

const W = 1040;
const H = 280;
const M = { l: 70, r: 20, t: 16, b: 44 };

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** Round numbers for axis ticks, the first at or below lo, the last at or above hi. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks: number[] = [];
  // From the step at or below lo to the step at or above hi, so the axis covers the data.
  const first = Math.floor(lo / step + 1e-9);
  const last = Math.ceil(hi / step - 1e-9);
  for (let k = first; k <= last; k++) ticks.push(Number((k * step).toPrecision(12)));
  return ticks;
}

/** An axis tick's text: three significant digits at most, with an SI suffix. */
function tickLabel(v: number): string {
  const a = Math.abs(v);
  if (a === 0) return '0';
  // toPrecision(3) of 1000 and more reads "1.00e+3": each suffix stops below 1000 of itself.
  if (a >= 1e9) return `${Number((v / 1e9).toPrecision(3))}G`;
  if (a >= 1e6) return `${Number((v / 1e6).toPrecision(3))}M`;
  if (a >= 1000) return `${Number((v / 1000).toPrecision(3))}k`;
  if (a >= 1) return String(Number(v.toPrecision(4)));
  if (a >= 1e-3) return `${Number((v * 1e3).toPrecision(3))}m`;
  return `${Number((v * 1e6).toPrecision(3))}µ`;
}


// A time axis: its ticks in one unit chosen by the span drawn, counted from `origin` (the
// report's first point). tickLabel()'s SI suffixes read "200m" as minutes and a day as "20k".
interface TimeAxis {
  origin: number;
  unit: number;
  title: string;
}

function timeAxis(d: ReportData, end: number): TimeAxis {
  const origin = firstStart(d);
  const span = end - origin;
  const [unit, name] = span < 2 ? [1e-3, 'ms'] : span < 600 ? [1, 's'] : span < 36_000 ? [60, 'min'] : [3600, 'h'];
  // A collector started well into the sampler's run: its ticks count from its own first point.
  const from = origin >= 1 ? `, from t = ${fmtSeconds(origin)} of the sampler's run` : '';
  return { origin, unit, title: `time (${name})${from}` };
}

interface Frame {
  x: (v: number) => number;
  y: (v: number) => number;
  svg: string[];
}

/** An SVG chart frame with gridlines, ticks and axis titles; returns scales and the parts list. */
function frame(xLo: number, xHi: number, yLo: number, yHi: number, xTitle: string, yTitle: string, time?: TimeAxis): Frame {
  // The x axis ends where the data ends (time runs to the last sample); y rounds up to a tick.
  const [origin, unit] = time ? [time.origin, time.unit] : [0, 1];
  const xt = niceTicks((xLo - origin) / unit, (xHi - origin) / unit, 8)
    .filter((v) => v <= (xHi - origin) / unit + 1e-9)
    .map((v) => origin + v * unit);
  const xLabel = (v: number) => (time ? String(Number(((v - origin) / unit).toPrecision(6))) : tickLabel(v));
  const yt = niceTicks(yLo, yHi, 5);
  const x0 = Math.min(xLo, xt[0]);
  const x1 = xHi;
  const y0 = Math.min(yLo, yt[0]);
  const y1 = Math.max(yHi, yt[yt.length - 1]);
  const x = (v: number) => M.l + ((v - x0) / (x1 - x0 || 1)) * (W - M.l - M.r);
  const y = (v: number) => H - M.b - ((v - y0) / (y1 - y0 || 1)) * (H - M.t - M.b);
  const svg: string[] = [];
  for (const v of yt) {
    svg.push(`<line class="grid" x1="${M.l}" x2="${W - M.r}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}"/>`);
    svg.push(`<text class="tick" x="${M.l - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${tickLabel(v)}</text>`);
  }
  for (const v of xt) {
    svg.push(`<line class="tickmark" x1="${x(v).toFixed(1)}" x2="${x(v).toFixed(1)}" y1="${H - M.b}" y2="${H - M.b + 4}"/>`);
    svg.push(`<text class="tick" x="${x(v).toFixed(1)}" y="${H - M.b + 17}" text-anchor="middle">${xLabel(v)}</text>`);
  }
  svg.push(`<line class="axis" x1="${M.l}" x2="${W - M.r}" y1="${H - M.b}" y2="${H - M.b}"/>`);
  svg.push(`<line class="axis" x1="${M.l}" x2="${M.l}" y1="${M.t}" y2="${H - M.b}"/>`);
  svg.push(`<text class="axis-title" x="${(M.l + W - M.r) / 2}" y="${H - 6}" text-anchor="middle">${esc(time ? time.title : xTitle)}</text>`);
  svg.push(
    `<text class="axis-title" transform="translate(16 ${(M.t + H - M.b) / 2}) rotate(-90)" text-anchor="middle">${esc(yTitle)}</text>`,
  );
  return { x, y, svg };
}

function svgOpen(label: string): string {
  return `<svg viewBox="0 0 ${W} ${H}" width="100%" role="img" aria-label="${esc(label)}" xmlns="http://www.w3.org/2000/svg">`;
}

function legend(items: Array<{ label: string; color: string }>): string {
  return `<div class="legend">${items
    .map((i) => `<span><i style="background:${i.color}"></i>${esc(i.label)}</span>`)
    .join('')}</div>`;
}

// The largest of `values` and `floor`, by a loop: spread into Math.max, a long run's samples
// (about 150,000 and more) overflow the call stack.
function maxOf(values: readonly number[], floor: number): number {
  let m = floor;
  for (const v of values) if (v > m) m = v;
  return m;
}

function empty(message: string): string {
  return `<p class="empty">${esc(message)}</p>`;
}

// Each interval's start and the seconds measured in it. Where nothing was (the sampler stopped
// between two runs), the charts break: drawn across, the stretch read as a silent 0 W.
interface Intervals {
  start: number[];
  measured: number[];
  gap: boolean[];
}

function intervals(d: ReportData): Intervals {
  const first = firstStart(d);
  const start = d.time.map((_, i) => (i > 0 ? d.time[i - 1] : first));
  const measured = d.time.map((t, i) => Math.max(0, t - start[i] - (d.unmeasuredS?.[i] ?? 0)));
  return { start, measured, gap: measured.map((m) => !(m > 0)) };
}

// The runs of intervals with a figure, [first, last] index of each. `none`: the intervals
// without one (nothing measured; a domain's reads failed with no good read after them).
function stretches(none: readonly boolean[], n: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let i = 0; i < n; i++) {
    if (none[i]) continue;
    if (i > 0 && !none[i - 1] && out.length > 0) out[out.length - 1][1] = i;
    else out.push([i, i]);
  }
  return out;
}

// A number to draw: NaN is null once saved as JSON.
const isFigure = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

// The points of one stretch of `values` between breaks, [a, b], from the start of its first
// interval (where measuring began, after a break): from its end, a stretch of one interval (a
// first run one polling interval long) was a bare move, drawn as nothing.
function stretchPoints(f: Frame, d: ReportData, iv: Intervals, values: number[], a: number, b: number): string[] {
  const pts = [`${f.x(iv.start[a]).toFixed(1)},${f.y(values[a]).toFixed(1)}`];
  for (let i = a; i <= b; i++) pts.push(`${f.x(d.time[i]).toFixed(1)},${f.y(values[i]).toFixed(1)}`);
  return pts;
}

function powerChart(d: ReportData): string {
  if (d.time.length < 2) return empty("This run was too short to draw power over time: it spans one of the collector's polling intervals (periodMs) or less.");
  const iv = intervals(d);
  // Per domain: where it has no figure, a break of its own line.
  const none = d.watts.map((series) => series.map((w, i) => iv.gap[i] || !isFigure(w)));
  const max = d.watts.reduce((m, series, k) => maxOf(series.filter((_, i) => !none[k][i]), m), 0.001);
  const end = d.time[d.time.length - 1];
  const f = frame(firstStart(d), end, 0, max * 1.05, '', `power (W)${d.estimated ? ', estimated' : ''}`, timeAxis(d, end));
  const parts = [...f.svg];
  const n = d.watts.length;
  d.watts.forEach((series, k) => {
    const path = stretches(none[k], d.time.length).map(([a, b]) => `M${stretchPoints(f, d, iv, series, a, b).join('L')}`);
    parts.push(`<path class="data line" stroke="${seriesColor(k, n)}" d="${path.join('')}"/>`);
  });
  return (
    svgOpen('power over time per domain') +
    parts.join('') +
    '</svg>' +
    legend(d.domains.map((name, k) => ({ label: name, color: seriesColor(k, n) })))
  );
}

function threadChart(d: ReportData): string {
  if (!(d.threadsTracked ?? d.threads.length > 0)) return empty('No thread tracking in this run (threads: off), so no per-thread energy.');
  // A run of one polling period or less has one interval: nothing to draw over time.
  if (d.time.length < 2) return empty('This run was too short for a per-thread chart.');
  if (d.threads.length === 0) return empty('No thread of this run was given any energy.');
  const n = d.threads.reduce((m, t) => Math.min(m, t.joules.length), d.time.length);
  const iv = intervals(d);
  // The threads' joules are the primary domain's: where it has no figure (its reads failed with no
  // good read after them), neither have they, and the stack breaks.
  const primary = primaryWatts(d);
  const none = iv.gap.map((g, i) => g || !isFigure(primary[i]) || d.threads.some((t) => !isFigure(t.joules[i])));
  // Watts per thread per interval, stacked.
  const stacks: number[][] = [];
  let acc = new Array<number>(n).fill(0);
  for (const t of d.threads) {
    const next = acc.map((a, i) => a + (none[i] ? 0 : t.joules[i] / iv.measured[i]));
    stacks.push(next);
    acc = next;
  }
  const max = maxOf(acc, 0.001);
  const f = frame(firstStart(d), d.time[n - 1], 0, max * 1.05, '', `attributed power (W)${d.estimated ? ', estimated' : ''}`, timeAxis(d, d.time[n - 1]));
  const parts = [...f.svg];
  const runs = stretches(none, n);
  // One outline per stretch between breaks.
  const line = (values: number[], a: number, b: number) => stretchPoints(f, d, iv, values, a, b);
  let below = new Array<number>(n).fill(0);
  const count = d.threads.length;
  stacks.forEach((top, k) => {
    const path = runs.map(([a, b]) => `M${line(top, a, b).join('L')}L${line(below, a, b).reverse().join('L')}Z`);
    parts.push(`<path class="data area" fill="${seriesColor(k, count)}" d="${path.join('')}"/>`);
    below = top;
  });
  const totals = d.threads.map((t) => t.joules.reduce((a: number, b) => a + (isFigure(b) ? b : 0), 0));
  return (
    svgOpen('energy per thread over time, stacked') +
    parts.join('') +
    '</svg>' +
    legend(d.threads.map((t, k) => ({ label: `${t.label}: ${fmtJoules(totals[k])}${d.estimated ? ' (estimated)' : ''}`, color: seriesColor(k, count) })))
  );
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

// Rows of the records chart at most: the labels with the most joules (then the most records),
// and one for the rest. 100,000 labels drew a 45 MB page.
const MAX_ROWS = 20;
// Dots per row at most; the collector keeps as many records per label.
const MAX_DOTS = 2048;

interface RecordRow {
  label: string;
  /** Records, measured or not. */
  count: number;
  measured: number;
  /** The measured joules, summed. */
  joules: number;
  /** Of the measured, those flagged incomplete (their joules undercount). */
  incomplete: number;
  /**
   * Of the measured, those of 0 J, off the log axis: exact from recordLabels' `zero`, else (a
   * report saved before it) counted in the sample, `zeroInSample`.
   */
  zero: number;
  zeroInSample: boolean;
  /** The measured joules drawn from, sorted: all of them, or a sample. */
  sample: number[];
}

// Evenly spaced picks from a sorted list: its shape in `k` values.
function decimate(sorted: number[], k: number): number[] {
  if (sorted.length <= k) return sorted;
  return Array.from({ length: k }, (_, i) => sorted[Math.floor(((i + 0.5) * sorted.length) / k)]);
}

// The rows' samples as one, each value standing for its row's measured records / its sample's
// size, as k values at evenly spaced points of their weighted distribution (decimate() with
// weights). A share of k picks per row, rounded, gave a row of one record in 100,000 none: a
// rest of many small labels drew no dots and no percentiles, and beside one large label, the
// large label's alone.
function weightedDecimate(rows: RecordRow[], k: number): number[] {
  const weighted: Array<[number, number]> = [];
  for (const r of rows) for (const j of r.sample) weighted.push([j, r.measured / r.sample.length]);
  if (weighted.length <= k) return weighted.map(([j]) => j).sort((a, b) => a - b);
  weighted.sort((a, b) => a[0] - b[0]);
  let total = 0;
  for (const [, w] of weighted) total += w;
  const out: number[] = [];
  let below = 0;
  let i = 0;
  for (const [j, w] of weighted) {
    below += w;
    while (i < k && (i + 0.5) * (total / k) < below) {
      out.push(j);
      i++;
    }
  }
  // Rounding may leave the last points short of the total.
  while (out.length < k) out.push(weighted[weighted.length - 1][0]);
  return out;
}

// Every label's figures: exact from recordLabels, or (a report saved before it) from the records.
function recordRows(d: ReportData): RecordRow[] {
  const rows = new Map<string, RecordRow>();
  // Number(): a row's figures are written into the markup and summed for the rest's row.
  for (const l of d.recordLabels ?? []) {
    const zero = l.zero === undefined ? undefined : Number(l.zero);
    rows.set(l.label, { label: l.label, count: Number(l.count), measured: Number(l.measured), joules: Number(l.joules), incomplete: Number(l.incomplete ?? 0), zero: zero ?? 0, zeroInSample: zero === undefined, sample: [] });
  }
  for (const r of d.records) {
    let row = rows.get(r.label);
    if (row === undefined) {
      if (d.recordLabels) continue;
      row = { label: r.label, count: 0, measured: 0, joules: 0, incomplete: 0, zero: 0, zeroInSample: true, sample: [] };
      rows.set(r.label, row);
    }
    // Unmeasured records (NaN joules, null once saved as JSON) are counted per row, not plotted.
    const measured = typeof r.joules === 'number' && Number.isFinite(r.joules);
    if (measured) row.sample.push(r.joules);
    if (d.recordLabels) continue;
    row.count++;
    if (measured) {
      row.measured++;
      row.joules += r.joules;
    }
  }
  for (const row of rows.values()) {
    row.sample.sort((a, b) => a - b);
    if (row.zeroInSample) row.zero = row.sample.filter((j) => j === 0).length;
    // Every record is in the sample: the count is exact.
    row.zeroInSample &&= row.sample.length < row.measured;
  }
  return [...rows.values()];
}

// The rows drawn, by label: the top MAX_ROWS - 1 and the rest as one, whose sample takes from
// each label in proportion to its measured records.
function drawnRows(all: RecordRow[]): RecordRow[] {
  const byLabel = (a: RecordRow, b: RecordRow) => (a.label < b.label ? -1 : a.label > b.label ? 1 : 0);
  if (all.length <= MAX_ROWS) return all.sort(byLabel);
  const ranked = all.sort((a, b) => b.joules - a.joules || b.count - a.count || byLabel(a, b));
  const rest = ranked.slice(MAX_ROWS - 1);
  const measured = rest.reduce((a, r) => a + r.measured, 0);
  const sample = weightedDecimate(rest, MAX_DOTS);
  const other: RecordRow = {
    label: `other (${rest.length} labels)`,
    count: rest.reduce((a, r) => a + r.count, 0),
    measured,
    joules: rest.reduce((a, r) => a + r.joules, 0),
    incomplete: rest.reduce((a, r) => a + r.incomplete, 0),
    zero: rest.reduce((a, r) => a + r.zero, 0),
    zeroInSample: rest.some((r) => r.zeroInSample),
    sample,
  };
  return [...ranked.slice(0, MAX_ROWS - 1).sort(byLabel), other];
}

// A text's width in viewBox units, estimated per character from DejaVu Sans, Linux's default
// and the widest of the common UI fonts: the page draws in the reader's font, and no script
// measures it. Labels were drawn right-aligned in a fixed 180 units and ran off the chart's left.
const NARROW = " ijlI.,:;'|!";
const SLIM = 'frt()[]/\\-"`';
const BROAD = '=+~<>#&^';
const WIDE = 'mwMW@%';
function textWidth(s: string, px: number): number {
  let em = 0;
  for (const ch of s) {
    if (ch.charCodeAt(0) > 0x7e) em += 1;
    else if (NARROW.includes(ch)) em += 0.35;
    else if (SLIM.includes(ch)) em += 0.45;
    else if (WIDE.includes(ch)) em += 1;
    else if (BROAD.includes(ch)) em += 0.84;
    else if (ch >= 'A' && ch <= 'Z') em += 0.8;
    else em += 0.64;
  }
  return em * px;
}

// `s` in at most `max` units: its start and its end around an ellipsis, which keep a route's
// method and its last segments, what tells routes apart.
function fitText(s: string, px: number, max: number): string {
  if (textWidth(s, px) <= max) return s;
  const chars = [...s];
  const room = max - textWidth('…', px);
  let head = 0;
  let used = 0;
  while (used + textWidth(chars[head], px) <= room / 2) used += textWidth(chars[head++], px);
  let tail = chars.length;
  while (tail > head && used + textWidth(chars[tail - 1], px) <= room) used += textWidth(chars[--tail], px);
  return `${chars.slice(0, head).join('')}…${chars.slice(tail).join('')}`;
}

// The records chart's label column: as wide as its texts, a label shortened past LABEL_MAX.
const LABEL_PX = 13;
const SUB_PX = 11;
const LABEL_MAX = 440;

function distributionChart(d: ReportData): string {
  const all = recordRows(d);
  if (all.every((r) => r.count === 0)) return empty(`No ${d.recordKind}s were recorded in this run.`);
  const rows = drawnRows(all);
  // Per-request energies span decades (a cheap route beside an expensive one): log scale, over
  // the positive ones (a loop: spread into Math.min, hundreds of thousands overflow the stack).
  let min = Infinity;
  let max = 0;
  for (const row of rows) for (const j of row.sample) if (j > 0) (min = Math.min(min, j)), (max = Math.max(max, j));
  if (max === 0) return empty(`No ${d.recordKind} in this run has a measured energy above 0 J.`);
  const lo = Math.log10(Math.max(min, 1e-9));
  const hi = Math.log10(Math.max(max, 1e-9));
  const dLo = Math.floor(lo);
  const dHi = Math.max(Math.ceil(hi), dLo + 1);
  // Each row's texts: its label, its figures and, for a row drawn from a sample, a line saying so
  // (in the figures' line, it pushed them off the chart's left).
  const texts = rows.map((row) => {
    const missing = row.count - row.measured;
    const sampled = row.sample.length > 0 && row.sample.length < row.measured;
    // 0 J has no place on a log axis: those records are counted here, not drawn.
    const zero = row.zero > 0 ? `, ${row.zero}${row.zeroInSample ? ' of the sample' : ''} at 0 J` : '';
    return {
      label: fitText(row.label, LABEL_PX, LABEL_MAX),
      sub: `n=${row.measured}, ${row.measured > 0 ? `mean ${fmtJoules(row.joules / row.measured)}${d.estimated ? ' (estimated)' : ''}` : 'none measured'}${zero}${row.incomplete > 0 ? `, ${row.incomplete} incomplete` : ''}${missing > 0 ? `, ${missing} unmeasured` : ''}`,
      note: sampled ? `percentiles from a sample of ${row.sample.length}` : '',
    };
  });
  const threeLines = texts.some((t) => t.note !== '');
  const rowH = Math.max(threeLines ? 48 : 36, Math.min(70, (H - M.t - M.b) / rows.length));
  const height = M.t + M.b + rowH * rows.length;
  let textW = 0;
  for (const t of texts) textW = Math.max(textW, textWidth(t.label, LABEL_PX), textWidth(t.sub, SUB_PX), textWidth(t.note, SUB_PX));
  // 10 units either side of the texts.
  const left = Math.max(190, Math.ceil(textW) + 20);
  // Of positive joules only: 0 J, clamped, was drawn at the lowest tick as if it were that (it is
  // counted in the row's text). A positive figure below the axis's floor is drawn at the floor:
  // unclamped, 1e-13 J lay left of the axis, over the labels.
  const x = (j: number) => left + ((Math.log10(Math.max(j, 10 ** dLo)) - dLo) / (dHi - dLo)) * (W - left - M.r);
  const parts: string[] = [];
  for (let p = dLo; p <= dHi; p++) {
    parts.push(`<line class="grid" x1="${x(10 ** p).toFixed(1)}" x2="${x(10 ** p).toFixed(1)}" y1="${M.t}" y2="${height - M.b}"/>`);
    parts.push(`<text class="tick" x="${x(10 ** p).toFixed(1)}" y="${height - M.b + 17}" text-anchor="middle">${tickLabel(10 ** p)}J</text>`);
  }
  rows.forEach((row, k) => {
    const js = row.sample;
    const cy = M.t + rowH * k + rowH / 2;
    const color = seriesColor(k, rows.length);
    if (js.length > 0) {
      // Each record above 0 J as a short tick (MAX_DOTS at most), jittered deterministically so
      // dense rows stay readable.
      const dots = decimate(js, MAX_DOTS).flatMap((j, i) => {
        if (!(j > 0)) return [];
        const jitter = (((i * 2654435761) >>> 0) % 1000) / 1000 - 0.5;
        const cx = x(j);
        const yy = cy + jitter * rowH * 0.5;
        return [`M${(cx - 1.5).toFixed(1)},${(yy - 1.5).toFixed(1)}h3v3h-3Z`];
      });
      if (dots.length > 0) parts.push(`<path class="data dots" fill="${color}" d="${dots.join('')}"/>`);
      // The percentiles of every measured record, 0 J included; one at 0 J is off the axis and not
      // drawn, and a box from 0 J is drawn open at the axis's left.
      const p50 = quantile(js, 0.5);
      const p25 = quantile(js, 0.25);
      const p75 = quantile(js, 0.75);
      const p99 = quantile(js, 0.99);
      const [top, height] = [cy - rowH * 0.3, rowH * 0.6];
      if (p25 > 0) {
        parts.push(`<rect class="box" x="${x(p25).toFixed(1)}" y="${top.toFixed(1)}" width="${Math.max(1, x(p75) - x(p25)).toFixed(1)}" height="${height.toFixed(1)}"/>`);
      } else if (p75 > 0) {
        parts.push(`<path class="box" d="M${left},${top.toFixed(1)}H${x(p75).toFixed(1)}V${(top + height).toFixed(1)}H${left}"/>`);
      }
      if (p50 > 0) parts.push(`<line class="median" x1="${x(p50).toFixed(1)}" x2="${x(p50).toFixed(1)}" y1="${(cy - rowH * 0.35).toFixed(1)}" y2="${(cy + rowH * 0.35).toFixed(1)}"/>`);
      if (p99 > 0) parts.push(`<line class="p99" x1="${x(p99).toFixed(1)}" x2="${x(p99).toFixed(1)}" y1="${(cy - rowH * 0.25).toFixed(1)}" y2="${(cy + rowH * 0.25).toFixed(1)}"/>`);
    }
    const t = texts[k];
    const y0 = cy + (threeLines ? -9 : -3);
    const label = `<text class="row-label" x="${left - 10}" y="${y0.toFixed(1)}" text-anchor="end">${esc(t.label)}</text>`;
    // A shortened label's full text shows on hover.
    parts.push(t.label === row.label ? label : `<g><title>${esc(row.label)}</title>${label}</g>`);
    parts.push(`<text class="row-sub" x="${left - 10}" y="${(y0 + 15).toFixed(1)}" text-anchor="end">${esc(t.sub)}</text>`);
    if (t.note !== '') parts.push(`<text class="row-sub" x="${left - 10}" y="${(y0 + 28).toFixed(1)}" text-anchor="end">${esc(t.note)}</text>`);
  });
  parts.push(`<line class="axis" x1="${left}" x2="${W - M.r}" y1="${height - M.b}" y2="${height - M.b}"/>`);
  parts.push(
    `<text class="axis-title" x="${(left + W - M.r) / 2}" y="${height - 6}" text-anchor="middle">joules per ${d.recordKind} (log scale)${d.estimated ? ', estimated' : ''}; box: p25–p75, thick line: median, thin line: p99</text>`,
  );
  return `<svg viewBox="0 0 ${W} ${height}" width="100%" role="img" aria-label="joules per ${d.recordKind}" xmlns="http://www.w3.org/2000/svg">${parts.join('')}</svg>`;
}

// Where the first interval starts: the collector's first poll, which may come well after the
// sampler's start (reports saved before startS existed began at 0).
function firstStart(d: ReportData): number {
  return typeof d.startS === 'number' && d.startS >= 0 && (d.time.length === 0 || d.startS < d.time[0]) ? d.startS : 0;
}

// The primary domains' power per interval: NaN where any of them has no figure.
function primaryWatts(d: ReportData): number[] {
  const pick = d.domains.some((n) => n.startsWith('package-')) ? 'package-' : d.domains.some((n) => n.startsWith('psys-')) ? 'psys-' : d.domains[0]?.replace(/\d+$/, '');
  const idx = d.domains.flatMap((n, i) => (pick !== undefined && n.startsWith(pick) ? [i] : []));
  return d.time.map((_, i) => idx.reduce((a, k) => a + (isFigure(d.watts[k][i]) ? d.watts[k][i] : NaN), 0));
}

// The least spread of the bins' throughput, as a share of the largest, that a line is fitted to.
const MIN_FIT_SPREAD = 0.2;
// And the least in absolute terms, records per second or busy cores: a share of next to nothing
// is noise (a tree asleep, microseconds of CPU a second, got -59.60 W per busy core, then +137.98
// in the next run; one with none, a NaN line).
const MIN_FIT_RANGE = { records: 1, cores: 0.05 };

function proportionalityChart(d: ReportData): string {
  if (d.time.length < 3) return empty("This run was too short for the proportionality curve: it spans two of the collector's polling intervals (periodMs) or less.");
  const watts = primaryWatts(d);
  const iv = intervals(d);
  const useRecords = d.recordLabels ? d.recordLabels.some((l) => l.count > 0) : d.records.length > 0;
  // Without threads tracked there are no busy cores either: the proxy would plot every bin at 0.
  if (!useRecords && !(d.threadsTracked ?? d.threads.length > 0)) return empty('No throughput to plot against: no records and no thread tracking in this run.');
  // Records per interval, from the collector; in a report saved before it, counted from the
  // records' ends, in time order, by one sweep (a filter per bin took seconds for a long run).
  const counts = d.recordCounts?.length === d.time.length ? d.recordCounts : undefined;
  const ends = useRecords && !counts ? d.records.map((r) => r.t).sort((a, b) => a - b) : [];
  let next = 0;
  const countTo = (t: number) => {
    let c = 0;
    for (; next < ends.length && ends[next] <= t; next++) c++;
    return c;
  };
  // Bins of about one second of measured time: per-interval request counts are too small to be
  // a rate. A stretch with nothing measured ends a bin and is in none.
  const points: Array<{ x: number; y: number }> = [];
  let start = firstStart(d);
  countTo(start);
  let [joules, cores, count, span] = [0, 0, 0, 0];
  const close = () => {
    if (span > 0.3) points.push({ x: useRecords ? count / span : cores / span, y: joules / span });
    [joules, cores, count, span] = [0, 0, 0, 0];
  };
  for (let i = 0; i < d.time.length; i++) {
    const c = counts ? counts[i] : countTo(d.time[i]);
    if (iv.gap[i] || !isFigure(watts[i])) {
      close();
      start = d.time[i];
      continue;
    }
    const dt = iv.measured[i];
    joules += watts[i] * dt;
    cores += (d.cpuCores[i] ?? 0) * dt;
    count += c;
    span += dt;
    if (d.time[i] - start >= 1 || i === d.time.length - 1) {
      close();
      start = d.time[i];
    }
  }
  if (points.length < 2) return empty('Too few one-second bins for the proportionality curve.');
  const xMax = points.reduce((m, p) => Math.max(m, p.x), 1e-3);
  const yMax = points.reduce((m, p) => Math.max(m, p.y), 1e-3);
  const xTitle = useRecords ? `throughput (${d.recordKind}s per second)` : 'throughput proxy: CPU cores kept busy by the tracked threads';
  const f = frame(0, xMax * 1.05, 0, yMax * 1.1, xTitle, `power (W)${d.estimated ? ', estimated' : ''}`);
  const parts = [...f.svg];
  // Least-squares line: its intercept is the power spent at zero throughput. Only where there
  // are 3 bins or more (two always fit exactly) and they spread over a fifth of the axis or more:
  // the intercept is extrapolated from the lowest bin to 0, and with the bins within 20% of the
  // top that is 4 times the spread seen or more, which multiplies the noise of the bins as much
  // (throughput varying by 1% printed 56.72 W at zero throughput and a falling line; by nothing,
  // ±2e13 W).
  const n = points.length;
  const xLo = points.reduce((m, p) => Math.min(m, p.x), Infinity);
  const range = points.reduce((m, p) => Math.max(m, p.x), -Infinity) - xLo;
  const minRange = useRecords ? MIN_FIT_RANGE.records : MIN_FIT_RANGE.cores;
  const mx = points.reduce((a, p) => a + p.x, 0) / n;
  const my = points.reduce((a, p) => a + p.y, 0) / n;
  const sxx = points.reduce((a, p) => a + (p.x - mx) ** 2, 0);
  const fits = n >= 3 && sxx > 0 && range >= minRange && range >= MIN_FIT_SPREAD * xMax;
  const slope = fits ? points.reduce((a, p) => a + (p.x - mx) * (p.y - my), 0) / sxx : 0;
  const icpt = my - slope * mx;
  const xEnd = xMax * 1.05;
  // Clipped to the plot: a steep line ran over the axes and the page.
  parts.push(`<clipPath id="proportionality-plot"><rect x="${M.l}" y="${M.t}" width="${W - M.l - M.r}" height="${H - M.t - M.b}"/></clipPath>`);
  if (fits) {
    parts.push(
      `<path class="data fit" clip-path="url(#proportionality-plot)" d="M${f.x(0).toFixed(1)},${f.y(icpt).toFixed(1)}L${f.x(xEnd).toFixed(1)},${f.y(icpt + slope * xEnd).toFixed(1)}"/>`,
    );
  }
  parts.push(
    `<path class="data dots" fill="${PALETTE[0]}" d="${points
      .map((p) => `M${(f.x(p.x) - 4).toFixed(1)},${f.y(p.y).toFixed(1)}a4,4 0 1,0 8,0a4,4 0 1,0 -8,0Z`)
      .join('')}"/>`,
  );
  // A falling fit (more throughput, less power: a phase change, a cooling CPU) is written as such.
  const perUnit = useRecords ? `${fmtJoules(Math.abs(slope))} per extra ${d.recordKind}` : `${Math.abs(slope).toFixed(2)} W per busy core`;
  const note = fits
    ? `fit: ${icpt.toFixed(2)} W at zero throughput ${slope < 0 ? '−' : '+'} ${perUnit}`
    : n < 3
      ? 'no fit: too few one-second bins for a line'
      : range < MIN_FIT_SPREAD * xMax
        ? `no fit: throughput did not vary enough to fit a line (the bins span ${((100 * range) / xMax).toFixed(0)}% of the largest, under ${100 * MIN_FIT_SPREAD}%)`
        : `no fit: throughput did not vary enough to fit a line (the bins span ${Number(range.toPrecision(2))} ${useRecords ? `${d.recordKind}s per second` : 'busy cores'}, under ${minRange})`;
  parts.push(`<text class="note" x="${M.l + 10}" y="${M.t + 14}">${esc(note)}</text>`);
  return svgOpen('energy proportionality: power against throughput') + parts.join('') + '</svg>';
}

function attributionBar(d: ReportData): string {
  const a = d.attribution;
  if (!a || !(a.total > 0)) return '';
  const parts = [
    { label: 'tracked', v: a.process, color: PALETTE[0] },
    { label: 'baseline', v: a.baseline, color: PALETTE[9] },
    { label: 'other processes / idle', v: a.other, color: PALETTE[3] },
  ];
  // Given to data() after several runs: sampler.attribution(), which starts afresh at each
  // start(), covers the last only, while the charts cover them all.
  const scope =
    typeof a.lastRunOf === 'number' && a.lastRunOf > 1
      ? `<p class="notes">The last of the report's ${a.lastRunOf} runs only: these figures were given to data() (sampler.attribution() covers the sampler's last run), while the charts cover every run. Left out, the collector sums the attribution over every run.</p>`
      : '';
  return `<div class="bar">${parts
    .map((p) => `<span style="width:${((100 * p.v) / a.total).toFixed(2)}%;background:${p.color}" title="${esc(p.label)}"></span>`)
    .join('')}</div>${legend(parts.map((p) => ({ label: `${p.label}: ${fmtJoules(p.v)} (${d.estimated ? 'estimated, ' : ''}${((100 * p.v) / a.total).toFixed(1)} %)`, color: p.color })))}${scope}`;
}

const CSS = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;background:#fff;margin:0}
main{max-width:1100px;margin:0 auto;padding:20px 24px 40px}
h1{font-size:22px;margin:0 0 2px}h2{font-size:16px;margin:26px 0 6px}
.sub{color:#555;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px}
.badge{display:inline-block;background:#fdecc8;color:#7a4b00;border:1px solid #e8c17a;border-radius:4px;padding:1px 7px;font-size:12px;margin-left:8px;vertical-align:3px}
table{border-collapse:collapse;margin-top:10px}td{padding:3px 14px 3px 0;vertical-align:top}td:first-child{color:#555}
td:last-child{font-variant-numeric:tabular-nums}
svg{display:block;max-width:100%;height:auto}
.grid{stroke:#e6e6e6}.axis{stroke:#888}.tickmark{stroke:#888}
.tick{font-size:11px;fill:#555}.axis-title{font-size:12px;fill:#333}.note{font-size:12px;fill:#333}
.line{fill:none;stroke-width:1.6}.area{stroke:#fff;stroke-width:.3;opacity:.92}
.fit{stroke:#e15759;stroke-width:1.5;stroke-dasharray:5 4;fill:none}
.box{fill:rgba(0,0,0,.06);stroke:#666}.median{stroke:#111;stroke-width:2.5}.p99{stroke:#111;stroke-width:1}
.row-label{font-size:13px;fill:#222}.row-sub{font-size:11px;fill:#666}
.legend{display:flex;flex-wrap:wrap;gap:4px 16px;font-size:12px;margin:4px 0 0 70px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:-1px}
.bar{display:flex;height:16px;border-radius:3px;overflow:hidden;margin:8px 0 0 70px;max-width:900px}
.empty{color:#777;font-style:italic;margin-left:70px}.notes{color:#555;font-size:13px}
`;

// A saved report is plain JSON that anyone may edit. Every field drawn is checked for its type
// first: a number that holds markup was written into the page as it was, and a string where a
// number belongs failed with a bare TypeError deep in a chart.
function checkReport(report: unknown): void {
  // Not checkObject(), which takes undefined as an options object left out.
  const obj = (name: string, v: unknown): Record<string, unknown> => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw invalidType(name, 'an object', v);
    return v as Record<string, unknown>;
  };
  const arr = (name: string, v: unknown, each: (name: string, x: unknown) => void): void => {
    if (!Array.isArray(v)) throw invalidType(name, 'an array', v);
    v.forEach((x, i) => each(`${name}[${i}]`, x));
  };
  const num = (name: string, v: unknown): void => {
    if (typeof v !== 'number') throw invalidType(name, 'a number', v);
  };
  // NaN, for nothing measured, is null once saved as JSON.
  const numOrNull = (name: string, v: unknown): void => {
    if (typeof v !== 'number' && v !== null) throw invalidType(name, 'a number or null', v);
  };
  const opt = (name: string, v: unknown, check: (name: string, v: unknown) => void): void => {
    if (v !== undefined) check(name, v);
  };
  const str = checkString;
  const bool = checkBoolean;
  const r = obj('report', report);
  for (const key of ['title', 'createdAt', 'source']) str(`report.${key}`, r[key]);
  opt('report.subtitle', r.subtitle, str);
  bool('report.estimated', r.estimated);
  opt('report.threadsTracked', r.threadsTracked, bool);
  opt('report.threadsUnmeasuredS', r.threadsUnmeasuredS, num);
  num('report.durationS', r.durationS);
  opt('report.elapsedS', r.elapsedS, num);
  opt('report.startS', r.startS, num);
  arr('report.domains', r.domains, str);
  arr('report.time', r.time, num);
  arr('report.watts', r.watts, (name, series) => arr(name, series, numOrNull));
  opt('report.unmeasuredS', r.unmeasuredS, (name, v) => arr(name, v, numOrNull));
  arr('report.cpuCores', r.cpuCores, numOrNull);
  // What is drawn together lines up: a domain without its series failed with a bare TypeError
  // deep in a chart, a series short of the time axis wrote NaN into the paths.
  const lines = (name: string, v: unknown[], n: number, what: string, per: string): void => {
    if (v.length !== n) throw new TypeError(`Expected ${n} ${what}, one per entry of ${per}, for ${name} but received ${v.length}`);
  };
  const points = (r.time as unknown[]).length;
  lines('report.watts', r.watts as unknown[], (r.domains as unknown[]).length, 'series', 'report.domains');
  (r.watts as unknown[][]).forEach((series, k) => lines(`report.watts[${k}]`, series, points, 'values', 'report.time'));
  if (r.unmeasuredS !== undefined) lines('report.unmeasuredS', r.unmeasuredS as unknown[], points, 'values', 'report.time');
  // None without thread tracking.
  if ((r.cpuCores as unknown[]).length > 0) lines('report.cpuCores', r.cpuCores as unknown[], points, 'values', 'report.time');
  arr('report.threads', r.threads, (name, v) => {
    const t = obj(name, v);
    str(`${name}.label`, t.label);
    arr(`${name}.joules`, t.joules, numOrNull);
  });
  arr('report.records', r.records, (name, v) => {
    const rec = obj(name, v);
    str(`${name}.label`, rec.label);
    numOrNull(`${name}.joules`, rec.joules);
    num(`${name}.t`, rec.t);
  });
  opt('report.recordLabels', r.recordLabels, (name, v) =>
    arr(name, v, (name, v) => {
      const l = obj(name, v);
      str(`${name}.label`, l.label);
      for (const key of ['count', 'measured', 'joules']) num(`${name}.${key}`, l[key]);
      opt(`${name}.zero`, l.zero, num);
      opt(`${name}.incomplete`, l.incomplete, num);
    }),
  );
  opt('report.recordCounts', r.recordCounts, (name, v) => arr(name, v, num));
  opt('report.attribution', r.attribution, (name, v) => {
    const a = obj(name, v);
    for (const key of ['total', 'process', 'baseline', 'other']) num(`${name}.${key}`, a[key]);
    opt(`${name}.lastRunOf`, a.lastRunOf, num);
    arr(`${name}.domains`, a.domains, str);
  });
  arr('report.summary', r.summary, (name, v) => {
    if (!Array.isArray(v) || v.length !== 2) throw invalidType(name, 'a [label, value] pair of strings', v);
    v.forEach((x, i) => str(`${name}[${i}]`, x));
  });
  arr('report.notes', r.notes, str);
}

/**
 * The whole report as one HTML document: no script, no external resource. A report of the wrong
 * shape (a saved copy edited by hand) is refused with a TypeError naming the field.
 */
export function renderReport(report: ReportData): string {
  checkReport(report);
  // A report may be drawn from a saved copy: its record kind goes into the markup, so only the
  // two known kinds do.
  const data: ReportData = { ...report, recordKind: report.recordKind === 'span' ? 'span' : 'request' };
  const est = data.estimated ? '<span class="badge">estimated: no energy counters, modelled from CPU time</span>' : '';
  const rows = [
    ['source', `${data.source}${data.estimated ? ' (estimated)' : ''}`],
    // Time between runs, when the sampler was stopped, is not counted as measured.
    ['duration', data.elapsedS !== undefined && data.elapsedS > data.durationS ? `measured ${fmtSeconds(data.durationS)} of ${fmtSeconds(data.elapsedS)} (the sampler was stopped in between)` : fmtSeconds(data.durationS)],
    ...data.summary,
  ];
  const recordTitle = data.recordKind === 'span' ? 'Joules per span label' : 'Joules per request, by route';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${esc(data.title)}</title><style>${CSS}</style></head>
<body><main>
<h1>${esc(data.title)}${est}</h1>
${data.subtitle ? `<div class="sub">${esc(data.subtitle)}</div>` : ''}
<div class="sub">${esc(data.createdAt)}</div>
<h2>Summary</h2>
<table>${rows.map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`).join('')}</table>
${data.attribution && data.attribution.total > 0 ? `<h2>Where the ${esc(data.attribution.domains.join('+'))} energy went${typeof data.attribution.lastRunOf === 'number' && data.attribution.lastRunOf > 1 ? ` in the last of ${data.attribution.lastRunOf} runs` : ''}${data.estimated ? ' (estimated)' : ''}</h2>${attributionBar(data)}` : ''}
<section id="power"><h2>Power over time, per domain</h2>${powerChart(data)}</section>
<section id="threads"><h2>Energy per thread over time (stacked)</h2>${threadChart(data)}</section>
<section id="records"><h2>${recordTitle}</h2>${distributionChart(data)}</section>
<section id="proportionality"><h2>Energy proportionality: power against throughput</h2>${proportionalityChart(data)}</section>
${data.notes.length ? `<h2>Notes</h2><ul class="notes">${data.notes.map((n) => `<li>${esc(n)}</li>`).join('')}</ul>` : ''}
</main></body></html>
`;
}
