// The hot path: a span begin + end pair, against the timing primitives a user would otherwise
// reach for, in the same process: a performance.now() pair, a process.hrtime.bigint() pair and
// a process.cpuUsage() pair. Pairs run in timed chunks of 16,384 with untimed pauses between
// them, so the sampler settles spans as a real application's would (a slot is held until its
// result arrives, about 10 ms later).
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
    for (let i = 0; i < n; i++) sink += performance.now() - performance.now();
  },
  // Through a held reference to the performance object (the global is an accessor of globalThis,
  // read on every call).
  'performance.now() pair, object held': (n) => {
    for (let i = 0; i < n; i++) sink += heldPerformance.now() - heldPerformance.now();
  },
  // The clock jouletrace reads: process.hrtime(), held, as a number of nanoseconds.
  'process.hrtime() pair, function held': (n) => {
    for (let i = 0; i < n; i++) {
      const a = heldHrtime();
      const b = heldHrtime();
      sink += b[0] * 1e9 + b[1] - (a[0] * 1e9 + a[1]);
    }
  },
  'process.hrtime.bigint() pair': (n) => {
    for (let i = 0; i < n; i++) sink += Number(process.hrtime.bigint() - process.hrtime.bigint());
  },
  'process.cpuUsage() pair': (n) => {
    for (let i = 0; i < n; i++) sink += process.cpuUsage(process.cpuUsage()).user;
  },
  'sampler.begin() + end()': (n) => {
    for (let i = 0; i < n; i++) s.end(s.begin('hot'));
  },
};

// Per pair: wall time in the timed chunks, and this thread's CPU over the whole run, pauses
// included, which is where the results of the spans are collected (a timer, off the hot path).
async function measure(fn, chunks) {
  fn(CHUNK); // warm up: measure optimised code
  await sleep(15);
  let ns = 0;
  const cpu0 = threadCpuNs(process.pid);
  for (let c = 0; c < chunks; c++) {
    const t0 = process.hrtime.bigint();
    fn(CHUNK);
    ns += Number(process.hrtime.bigint() - t0);
    await sleep(15);
  }
  return { ns: ns / (chunks * CHUNK), cpu: (threadCpuNs(process.pid) - cpu0) / (chunks * CHUNK) };
}

const results = {};
for (const [name, fn] of Object.entries(variants)) {
  const xs = [];
  const cpus = [];
  const chunks = name.startsWith('process.cpuUsage') ? Math.max(2, CHUNKS >> 3) : CHUNKS;
  for (let r = 0; r < REPS; r++) {
    const m = await measure(fn, chunks);
    xs.push(m.ns);
    cpus.push(m.cpu);
  }
  results[name] = { ns: median(xs), cpu: median(cpus) };
}
const base = results['performance.now() pair'].ns;
table(
  `Span begin+end pair cost, ns (median of ${REPS} runs × ${CHUNKS} × ${CHUNK} pairs, ${Math.max(2, CHUNKS >> 3)} chunks for the cpuUsage() pair; every pair reads the clock twice)`,
  ['operation', 'ns per pair', 'ratio to performance.now() pair', 'thread CPU per pair, results included'],
  Object.entries(results).map(([k, v]) => [k, v.ns, (v.ns / base).toFixed(2), v.cpu]),
);
await sleep(50);
s.stop();
const st = s.stats().spans;
console.log(`  spans settled ${st.settled}, not measured: ${st.droppedSpans} (slots), ${st.droppedEvents} (event ring)`);
s.close();
if (sink === 42) console.log(sink);
