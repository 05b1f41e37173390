// Ring decode throughput in JavaScript: read() (plain objects) and reader() (allocation-free
// cursor) over the same number of real records, and a baseline loop that only sums a
// Float64Array of the same size (the memory-bandwidth ceiling for this record layout).
import { jouletrace, median, nativeHandles, table } from './common.mjs';

const { Sampler } = jouletrace;
const N = Number(process.env.BENCH_RING_RECORDS ?? 1 << 20);
const REPS = Number(process.env.BENCH_REPS ?? 5);

const s = new Sampler({ source: 'model', threads: 'off', ringCapacity: N });
const handle = nativeHandles.nativeHandleOf(s);
const domains = s.domains.length;

function fill() {
  s.read(); // empty the ring
  handle.fillForBenchmark(N);
}

function timeIt(fn) {
  fill();
  const t0 = process.hrtime.bigint();
  const n = fn();
  const ns = Number(process.hrtime.bigint() - t0);
  if (n !== N) throw new Error(`decoded ${n} records, expected ${N}`);
  return (n / ns) * 1e9;
}

const results = { read: [], reader: [], baseline: [] };
let sink = 0;
// The baseline's array is allocated and written once: a fresh one read untouched costs a page
// fault every ~100 records, which on a VM made the "ceiling" slower than the reader.
const stride = (16 + 24 * domains) / 8;
const f64 = new Float64Array(N * stride).fill(1);
function baseline() {
  let acc = 0;
  for (let k = 0; k < N; k++) acc += f64[k * stride + 2];
  return acc;
}
// Each consumer sums into a local and adds it to the module-level sink once: a number stored
// into a module-level `let` is boxed on Node 20, a heap allocation a record, which made the
// reader read 3.5 times slower than it is (bench/RESULTS.md, ninth session).
function viaRead() {
  let n = 0;
  let acc = 0;
  for (;;) {
    const batch = s.read(65536);
    if (batch.length === 0) break;
    for (const r of batch) acc += r.readings[0].joules;
    n += batch.length;
  }
  sink += acc;
  return n;
}
function viaReader() {
  const r = s.reader();
  let n = 0;
  let acc = 0;
  while (r.next()) {
    acc += r.joules(0);
    n++;
  }
  sink += acc;
  return n;
}
function timeBaseline() {
  const t0 = process.hrtime.bigint();
  sink += baseline();
  return (N / Number(process.hrtime.bigint() - t0)) * 1e9;
}
// One untimed round first, so that every timed one runs optimised code (the first two of five
// ran at half speed or less).
timeIt(viaRead);
timeIt(viaReader);
timeBaseline();
for (let i = 0; i < REPS; i++) {
  results.read.push(timeIt(viaRead));
  results.reader.push(timeIt(viaReader));
  results.baseline.push(timeBaseline());
}
s.close();
const b = median(results.baseline);
table(
  `Ring decode throughput, records/s (median of ${REPS} × ${N} records, ${domains} domain(s))`,
  ['consumer', 'records/s', 'ratio to plain Float64Array loop'],
  [
    ['read() → objects', median(results.read), (median(results.read) / b).toFixed(3)],
    ['reader() cursor', median(results.reader), (median(results.reader) / b).toFixed(3)],
    ['plain Float64Array loop', b, '1.000'],
  ],
);
if (sink === 42) console.log('');
