// What request accounting adds per request when the CPU caches are cold, as they are on a real
// server: between two turns of its event loop the kernel's network stack, the load generator and
// whatever else shares the machine run on its CPU and evict what the last request left there.
// bench/request-cost.mjs runs requests back to back, where jouletrace's code and data stay in
// cache from one request to the next; a real server at a fixed rate spent several times as much
// on the same code (bench/RESULTS.md, "Cold caches").
//
// Batches of one request on each of ten connections (bench/synthetic-requests.mjs: bare, hook,
// tracked), timed one by one with the wall clock; the median batch is taken, so a batch
// preempted or caught by the result timer does not count. "cold": before each batch, untimed,
// BENCH_COLD_MB (default 8, more than a core's L2 and a share of L3) of memory is read and
// written a cache line at a time. Variants alternate batch by batch. What is measured is each
// request's own path (its start and its end); the results' settlement, which runs in batches on
// the result timer, is not (bench/request-cost.mjs counts it).
import { performance } from 'node:perf_hooks';
import { jouletrace, median, table } from './common.mjs';
import { appHandlers, connections, CONNECTIONS, requestBatch } from './synthetic-requests.mjs';

const { Sampler, RequestTracker } = jouletrace;
const REPS = Number(process.env.BENCH_REPS ?? 3);
const ROUNDS = Number(process.env.BENCH_COLD_ROUNDS ?? 3000);
const EVICT_MB = Number(process.env.BENCH_COLD_MB ?? 8);
const FRAMEWORKS = (process.env.BENCH_HTTP_FRAMEWORKS ?? 'node:http,fastify').split(',');
const RATIO_FLOOR_NS = 150;

const s = new Sampler({ source: 'model', intervalUs: 1000 });
s.start();
const tracker = new RequestTracker(s);

// Read and written a cache line at a time; the sum kept in an int and stored, so that the loop
// is neither optimised away nor allocates (a module-level number summed into grows past a small
// integer and is boxed at every step).
const evictWords = new Int32Array((EVICT_MB * 1024 * 1024) / 4);
const evictSum = new Int32Array(1);
function evict() {
  let sum = 0;
  for (let i = 0; i < evictWords.length; i += 16) {
    sum = (sum + evictWords[i]) | 0;
    evictWords[i] = sum;
  }
  evictSum[0] = sum;
}

// ns per request: the median batch of each variant over `rounds` alternated batches.
async function measure(h, variants, sockets, cold) {
  const times = Object.fromEntries(variants.map((v) => [v, new Float64Array(ROUNDS)]));
  for (let r = 0; r < ROUNDS; r++) {
    for (let k = 0; k < variants.length; k++) {
      const v = variants[(k + r) % variants.length];
      if (cold) evict();
      const t0 = performance.now();
      await requestBatch(h[v], sockets[v]);
      times[v][r] = performance.now() - t0;
    }
  }
  return Object.fromEntries(variants.map((v) => [v, (median(Array.from(times[v])) * 1e6) / CONNECTIONS]));
}

const rows = [];
for (const framework of FRAMEWORKS) {
  const h = await appHandlers(framework, tracker);
  const variants = ['bare', 'tracked', ...(h.hook ? ['hook'] : [])];
  const sockets = Object.fromEntries(variants.map((v) => [v, connections()]));
  await measure(h, variants, sockets, false); // optimised code, the tracker's arrays in use
  const runs = { warm: [], cold: [] };
  for (let rep = 0; rep < REPS; rep++) {
    for (const state of rep % 2 ? ['cold', 'warm'] : ['warm', 'cold']) runs[state].push(await measure(h, variants, sockets, state === 'cold'));
  }
  const at = (state, v) => median(runs[state].map((x) => x[v]));
  const added = (state, v) => median(runs[state].map((x) => x[v] - x.bare));
  for (const v of variants.filter((x) => x !== 'bare')) {
    rows.push([
      framework,
      v === 'tracked' ? 'jouletrace' : 'empty hook',
      at('warm', 'bare'),
      added('warm', v),
      at('cold', 'bare'),
      added('cold', v),
      // A ratio of two figures within the batches' spread says nothing (an empty hook's warm
      // cost is 10-120 ns from run to run): not printed.
      added('warm', v) < RATIO_FLOOR_NS ? '—' : (added('cold', v) / added('warm', v)).toFixed(2),
      (at('cold', 'bare') / at('warm', 'bare')).toFixed(2),
    ]);
  }
}
table(
  `Request path with warm and cold caches, ns per request (median batch of ${CONNECTIONS} requests over ${ROUNDS} alternated batches, median of ${REPS} runs; cold: ${EVICT_MB} MiB evicted before each batch)`,
  ['framework', 'added', 'bare app, warm', 'adds, warm', 'bare app, cold', 'adds, cold', 'added: cold / warm', 'bare app: cold / warm'],
  rows,
);
console.log('  The request path only (start and end); the results settle on the sampler thread and on the result timer, counted by request-cost.');
console.log(`  "—": the warm figure is under ${RATIO_FLOOR_NS} ns, within the batches' spread, and a ratio to it would be noise.`);
tracker.close();
s.stop();
s.close();
process.exit(0);
