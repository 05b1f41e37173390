// How the procfs backend's split of energy between the process and other tasks compares with the
// truth, on simulated loads: /proc/stat's busy time comes in 10 ms ticks, the threads' time in
// ns, and a share is a ratio, so where the ticks land skews it. Each load runs through the
// attribution engine (native, one CPU, 10 ms intervals: AttributionEngine::otherBusy()) and,
// beside it, through the per-interval clamp it replaced (busy = max(busy, tracked)). Energy
// follows the true busy time; the figure is the process's energy over its true share (1: right).
//
// Two models of /proc/stat: 'rounded' (busy time exact, rounded down to 10 ms, as with precise
// cputime accounting) and 'sampled' (each 4 ms kernel tick charges a whole tick to what runs at
// that moment, HZ=250 as Debian's kernels: tick-based accounting, most kernels' default).
import { native, table } from './common.mjs';

const DT = 10e6;
const TICK = 10e6;
const SECONDS = Number(process.env.BENCH_SPLIT_SECONDS ?? 30);
const RUNS = Number(process.env.BENCH_REPS ?? 5);
const replay = native.bench.attributionReplay;

let seed = 1;
const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;

// p(ms), o(ms): the process's and other tasks' share of the CPU at each millisecond.
function simulate(p, o, model) {
  const steps = [];
  let busy = 0;
  const phase = random() * TICK; // where the first tick boundary falls
  let charged = phase;
  let reported = 0;
  let truth = 0;
  for (let i = 0; i < (SECONDS * 1e9) / DT; i++) {
    let busyNs = 0;
    let threadNs = 0;
    for (let ms = 0; ms < DT / 1e6; ms++) {
      const t = (i * DT) / 1e6 + ms;
      const pp = Math.min(1, p(t));
      const oo = Math.min(1 - pp, o(t));
      threadNs += pp * 1e6;
      busyNs += (pp + oo) * 1e6;
      if (model === 'sampled' && t % 4 === 0 && random() < pp + oo) charged += 4e6;
    }
    busy += busyNs;
    if (model === 'rounded') charged = busy + phase;
    const now = Math.floor(charged / TICK) * TICK;
    const energy = Math.round(busyNs / 1e4); // 1 tick of energy per 10 µs busy
    truth += threadNs / 1e4;
    steps.push([now - reported, Math.round(threadNs), energy]);
    reported = now;
  }
  return { steps, truth };
}

function clamped(steps) {
  let process = 0;
  for (const [busy, thread, energy] of steps) {
    const b = Math.max(busy, thread);
    if (b > 0) process += Math.floor((energy * thread) / b);
  }
  return process;
}

const loads = [
  ['alone, 50%', () => 0.5, () => 0],
  ['alone, 10%', () => 0.1, () => 0],
  ['20% beside others\' 50%', () => 0.2, () => 0.5],
  ['5% beside others\' 45%', () => 0.05, () => 0.45],
  ['50%, others 50% 100 ms a second', () => 0.5, (t) => (t % 1000 < 100 ? 0.5 : 0)],
  ['turns of 50 ms, 100% each', (t) => (t % 100 < 50 ? 1 : 0), (t) => (t % 100 >= 50 ? 1 : 0)],
  ['100 ms after others\' 100 ms, 60%', (t) => (t % 500 >= 100 && t % 500 < 200 ? 0.6 : 0), (t) => (t % 500 < 100 ? 0.6 : 0)],
  ['bursts of 30 ms a 300 ms, others 50%', (t) => (t % 300 < 30 ? 1 : 0), () => 0.5],
];

const rows = [];
for (const [name, p, o] of loads) {
  const row = [name];
  for (const model of ['rounded', 'sampled']) {
    let before = 0;
    let after = 0;
    for (let run = 0; run < RUNS; run++) {
      seed = 1 + run * 7919;
      const { steps, truth } = simulate(p, o, model);
      before += clamped(steps) / truth / RUNS;
      after += replay(TICK, DT, steps).reduce((a, [process]) => a + process, 0) / truth / RUNS;
    }
    row.push(before.toFixed(2), after.toFixed(2));
  }
  rows.push(row);
}
table(
  `procfs split, the process's energy over its true share (mean of ${RUNS} runs × ${SECONDS} s, one CPU, 10 ms intervals)`,
  ['load', 'rounded: clamp', 'rounded: engine', 'sampled: clamp', 'sampled: engine'],
  rows,
);
