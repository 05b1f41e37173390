// The hot path: a span begin + end pair, against the timing primitives a user would otherwise
// reach for, in the same process: a performance.now() pair, a process.hrtime.bigint() pair and
// a process.cpuUsage() pair. Pairs run in timed chunks of 16,384 with untimed pauses between
// them, so the sampler settles spans as a real application's would (a slot is held until its
// result arrives, about 10 ms later).
//
// Every variant does the same around its pair: it folds one number a pair into a local
// accumulator (a clock pair: the difference of its two reads; the span pair: the handle begin()
// returned) and returns it, and the caller adds that to a module-level sink once a chunk, so that
// none of it can be optimised away. A store into a module-level `let` at every pair boxes the
// number on Node 20 (a heap allocation), which before the ninth session put 13–19 ns on every
// clock pair and nothing on the span pair, whose loop stored nothing (bench/RESULTS.md). The
// variants are interleaved: each repetition runs every variant once, in an order rotated by one
// each repetition, so that the host's drift falls on all of them alike.
import { performance as heldPerformance } from 'node:perf_hooks';
import { jouletrace, median, sleep, table, threadCpuNs } from './common.mjs';

const { Sampler } = jouletrace;
const heldHrtime = process.hrtime;
const CHUNKS = Number(process.env.BENCH_SPAN_CHUNKS ?? 60);
const CHUNK = 16384;
const REPS = Number(process.env.BENCH_REPS ?? 5);

const s = new Sampler({ source: 'model', intervalUs: 1000 });
s.start();
await sleep(20);
let sink = 0;
const variants = {
  'performance.now() pair': (n) => {
    let acc = 0;
    for (let i = 0; i < n; i++) acc += performance.now() - performance.now();
    return acc;
  },
  // Through a held reference to the performance object (the global is an accessor of globalThis,
  // read on every call).
  'performance.now() pair, object held': (n) => {
    let acc = 0;
    for (let i = 0; i < n; i++) acc += heldPerformance.now() - heldPerformance.now();
    return acc;
  },
  // The clock jouletrace reads: process.hrtime(), held, as a number of nanoseconds.
  'process.hrtime() pair, function held': (n) => {
    let acc = 0;
    for (let i = 0; i < n; i++) {
      const a = heldHrtime();
      const b = heldHrtime();
      acc += b[0] * 1e9 + b[1] - (a[0] * 1e9 + a[1]);
    }
    return acc;
  },
  'process.hrtime.bigint() pair': (n) => {
    let acc = 0;
    for (let i = 0; i < n; i++) acc += Number(process.hrtime.bigint() - process.hrtime.bigint());
    return acc;
  },
  'process.cpuUsage() pair': (n) => {
    let acc = 0;
    for (let i = 0; i < n; i++) acc += process.cpuUsage(process.cpuUsage()).user;
    return acc;
  },
  'sampler.begin() + end()': (n) => {
    let acc = 0;
    for (let i = 0; i < n; i++) {
      const h = s.begin('hot');
      s.end(h);
      acc += h;
    }
    return acc;
  },
};

// Per pair: wall time in the timed chunks, and this thread's CPU over the whole run, pauses
// included, which is where the results of the spans are collected (a timer, off the hot path).
async function measure(fn, chunks) {
  sink += fn(CHUNK); // warm up: measure optimised code
  await sleep(15);
  let ns = 0;
  const cpu0 = threadCpuNs(process.pid);
  for (let c = 0; c < chunks; c++) {
    const t0 = process.hrtime.bigint();
    const r = fn(CHUNK);
    ns += Number(process.hrtime.bigint() - t0);
    sink += r;
    await sleep(15);
  }
  return { ns: ns / (chunks * CHUNK), cpu: (threadCpuNs(process.pid) - cpu0) / (chunks * CHUNK) };
}

const names = Object.keys(variants);
const runs = Object.fromEntries(names.map((name) => [name, { ns: [], cpu: [] }]));
const chunksOf = (name) => (name.startsWith('process.cpuUsage') ? Math.max(2, CHUNKS >> 3) : CHUNKS);
for (let r = 0; r < REPS; r++) {
  for (let k = 0; k < names.length; k++) {
    const name = names[(r + k) % names.length];
    const m = await measure(variants[name], chunksOf(name));
    runs[name].ns.push(m.ns);
    runs[name].cpu.push(m.cpu);
  }
}
const results = Object.fromEntries(names.map((name) => [name, { ns: median(runs[name].ns), cpu: median(runs[name].cpu) }]));
const base = results['performance.now() pair'].ns;
table(
  `Span begin+end pair cost, ns (median of ${REPS} interleaved runs × ${CHUNKS} × ${CHUNK} pairs, ${Math.max(2, CHUNKS >> 3)} chunks for the cpuUsage() pair; every pair reads the clock twice and adds one number to a local)`,
  ['operation', 'ns per pair', 'ratio to performance.now() pair', 'thread CPU per pair, results included'],
  Object.entries(results).map(([k, v]) => [k, v.ns, (v.ns / base).toFixed(2), v.cpu]),
);
await sleep(50);
s.stop();
const st = s.stats().spans;
console.log(`  spans settled ${st.settled}, not measured: ${st.droppedSpans} (slots), ${st.droppedEvents} (event ring)`);
s.close();
if (sink === 42) console.log(sink);
