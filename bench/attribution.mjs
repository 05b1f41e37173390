// The cost of one attribution step (splitting every domain's delta among tracked threads) as a
// function of the number of threads, on a synthetic 2-package × 8-CPU snapshot, against the cost
// of reading the clock twice (the step's own timing overhead).
import { median, native, table } from './common.mjs';

const REPS = Number(process.env.BENCH_REPS ?? 5);
// Thread counts go in as strings: table() prints every number with two decimals (1.00 threads).
const rows = [];
const clock = [];
for (let i = 0; i < REPS; i++) clock.push(native.bench.attributionStep(0, 20000));
const empty = median(clock);
for (const threads of [1, 10, 100, 1000]) {
  const xs = [];
  for (let i = 0; i < REPS; i++) xs.push(native.bench.attributionStep(threads, threads >= 1000 ? 2000 : 20000));
  const m = median(xs);
  rows.push([String(threads), m, m / 1000, (m / empty).toFixed(1), ((m / 1e9) * 10000 * 100).toFixed(3)]);
}
table(
  `Attribution step cost (median of ${REPS}; 4 domains, every thread active every interval)`,
  ['threads', 'ns/step', 'µs/step', 'ratio to 0 threads', '% of a core at 10 kHz'],
  [['0', empty, empty / 1000, '1.0', ((empty / 1e9) * 10000 * 100).toFixed(3)], ...rows],
);
