// CPU that request accounting adds per request, without the network: what the HTTP benchmark's
// throughput loss is made of, measured where a small VM's noise does not drown it (on our 2-vCPU
// guests, two 1 s loopback runs of the same bare server differ by up to 35%: see the README).
//
// The requests, variants and apps are bench/synthetic-requests.mjs's (bare, hook, tracked). The
// requests settle on the sampler thread, which adds them to the tracker's per-route aggregates,
// as on a server (with BENCH_REQUEST_EXPORTER, their results come back to this thread too).
// A sampler runs through every variant (its own cost is bench/sampler.mjs's), so the difference
// is request accounting alone.
//
// Main thread: this thread's CPU over a chunk of requests and the pause after it, in which the
// results arrive. Sampler thread: its CPU over the same window, less its idle rate (measured in
// the bare chunks) for the window's length. Chunks of the variants alternate.
import { createRequire } from 'node:module';
import { jouletrace, median, root, sleep, table, threadCpuNs } from './common.mjs';
import { load, serve } from './http-load.mjs';
import { appHandlers, connections, CONNECTIONS, requestBatch } from './synthetic-requests.mjs';

const require = createRequire(import.meta.url);
const { Sampler, RequestTracker } = jouletrace;
const REPS = Number(process.env.BENCH_REPS ?? 5);
const CHUNKS = Number(process.env.BENCH_REQUEST_CHUNKS ?? 8);
const CHUNK = 5000;
const PAUSE_MS = 40;
const LOOPBACK_REPS = Number(process.env.BENCH_LOOPBACK_REPS ?? 3);
// express: instrumentExpress(app); express-middleware: app.use(energyMiddleware()) first.
const FRAMEWORKS = (process.env.BENCH_HTTP_FRAMEWORKS ?? 'node:http,express,express-middleware,fastify').split(',');

// BENCH_REQUEST_EXPORTER=prometheus|opentelemetry: the tracker also feeds that exporter, as in a
// service that exports its figures; 'jouletrace adds' then includes what the exporter costs.
const EXPORTER = process.env.BENCH_REQUEST_EXPORTER ?? 'none';
const s = new Sampler({ source: 'model', intervalUs: 1000 });
s.start();
const tracker = new RequestTracker(s);
let exporterClose = () => {};
if (EXPORTER === 'prometheus') {
  const { registerMetrics } = require(`${root}/dist/cjs/prometheus.js`);
  const m = registerMetrics(s, { requests: tracker });
  exporterClose = () => m.close();
} else if (EXPORTER === 'opentelemetry') {
  const { registerOpenTelemetry } = require(`${root}/dist/cjs/opentelemetry.js`);
  const { MeterProvider, MetricReader } = require('@opentelemetry/sdk-metrics');
  class Reader extends MetricReader {
    async onForceFlush() {}
    async onShutdown() {}
  }
  const meterProvider = new MeterProvider({ readers: [new Reader()] });
  const h = registerOpenTelemetry(s, { meterProvider, requests: tracker, traces: false });
  exporterClose = () => (h.close(), meterProvider.shutdown());
} else if (EXPORTER !== 'none') {
  throw new Error(`BENCH_REQUEST_EXPORTER: expected prometheus or opentelemetry, got ${EXPORTER}`);
}
// The sampler thread reports its tid once it runs.
while (s.stats().timing.samplerTid === 0) await sleep(1);
const samplerTid = s.stats().timing.samplerTid;
const sockets = { bare: connections(), hook: connections(), tracked: connections() };

async function chunk(handler, variant) {
  const conns = sockets[variant];
  const m0 = threadCpuNs(process.pid);
  const s0 = threadCpuNs(samplerTid);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < CHUNK; i += CONNECTIONS) await requestBatch(handler, conns);
  await sleep(PAUSE_MS);
  return {
    main: threadCpuNs(process.pid) - m0,
    sampler: threadCpuNs(samplerTid) - s0,
    wall: Number(process.hrtime.bigint() - t0),
  };
}

// The bare server's CPU per request on loopback at full load, where each request is cheapest
// (responses batch per event-loop turn): the whole cost a request accounting's added ns is a
// share of, system calls included.
const loopbackByServer = new Map();
async function loopbackCpuUs(framework) {
  const server = framework === 'express-middleware' ? 'express' : framework;
  if (!loopbackByServer.has(server)) loopbackByServer.set(server, await loopbackOf(server));
  return loopbackByServer.get(server);
}

async function loopbackOf(framework) {
  const xs = [];
  for (let r = 0; r < LOOPBACK_REPS; r++) {
    const srv = await serve(framework, 'bare');
    await sleep(200);
    await load(srv.port, { seconds: 1 });
    srv.mark();
    await load(srv.port, { seconds: 3 });
    xs.push(await srv.stop());
  }
  return median(xs);
}

const rows = [];
for (const framework of FRAMEWORKS) {
  const h = await appHandlers(framework, tracker);
  const before = tracker.routes().reduce((n, r) => n + r.count, 0);
  let trackedChunks = 0;
  const variants = ['bare', 'tracked', ...(h.hook ? ['hook'] : [])];
  // Warm up every path (optimised code, the tracker's arrays).
  for (let i = 0; i < 4; i++) {
    for (const v of variants) await chunk(h[v], v);
    trackedChunks++;
  }
  const main = [];
  const samp = [];
  const bare = [];
  const hook = [];
  for (let r = 0; r < REPS; r++) {
    const sum = Object.fromEntries(variants.map((v) => [v, { main: 0, sampler: 0, wall: 0 }]));
    for (let c = 0; c < CHUNKS; c++) {
      // Each variant first, middle and last in turn.
      const order = variants.map((_, i) => variants[(i + c) % variants.length]);
      for (const v of c % 2 ? order.reverse() : order) {
        const x = await chunk(h[v], v);
        for (const k of ['main', 'sampler', 'wall']) sum[v][k] += x[k];
      }
      trackedChunks++;
    }
    const n = CHUNKS * CHUNK;
    const idleRate = sum.bare.sampler / sum.bare.wall;
    main.push((sum.tracked.main - sum.bare.main) / n);
    samp.push((sum.tracked.sampler - idleRate * sum.tracked.wall) / n);
    bare.push(sum.bare.main / n);
    if (h.hook) hook.push((sum.hook.main - sum.bare.main) / n);
  }
  await sleep(50);
  const settled = tracker.routes().reduce((n, r) => n + r.count, 0) - before;
  // Requests that never ended would make every figure here wrong, and fast: say so.
  if (settled < trackedChunks * CHUNK * 0.99) {
    throw new Error(`${framework}: ${settled} of ${trackedChunks * CHUNK} tracked requests settled; the figures would not be of requests that end`);
  }
  // The median of each run's total, not the sum of the two medians (which need not be one run's).
  const added = median(main.map((m, i) => m + samp[i]));
  const loopback = LOOPBACK_REPS > 0 ? await loopbackCpuUs(framework) : NaN;
  rows.push([
    framework,
    median(bare) / 1000,
    h.hook ? median(hook) : '—',
    median(main),
    median(samp),
    added,
    LOOPBACK_REPS > 0 ? loopback : '—',
    LOOPBACK_REPS > 0 ? `${((100 * added) / (loopback * 1000)).toFixed(1)} %` : '—',
    `${settled}/${trackedChunks * CHUNK}`,
  ]);
}
table(
  `CPU per request without the network (median of ${REPS} runs × ${CHUNKS} alternated chunks of ${CHUNK} per variant): the bare app, and what request accounting (shared mode${EXPORTER === 'none' ? '' : `, feeding the ${EXPORTER} exporter`}) adds`,
  ['framework', 'bare app, µs', 'an empty hook adds, ns', 'jouletrace adds: main thread, ns', 'sampler thread, ns', 'in all, ns', 'bare server on loopback, µs', 'share of it', 'settled'],
  rows,
);
console.log(`  bare server on loopback: its CPU per request (all threads, system calls included) at full load from autocannon, median of ${LOOPBACK_REPS} × 3 s; the share is what the added ns are of it,`);
console.log('  which is the throughput a CPU-bound server would lose');
exporterClose();
s.stop();
tracker.close();
s.close();
for (const sock of Object.values(sockets).flat()) sock.destroy();
