// CPU that request accounting adds per request, without the network: what the HTTP benchmark's
// throughput loss is made of, measured where a small VM's noise does not drown it (on our 2-vCPU
// guests, two 1 s loopback runs of the same bare server differ by up to 35%: see the README).
//
// Each request is what Node's HTTP server hands a framework: an IncomingMessage on a
// connection's socket and its ServerResponse, here on a socket never connected, so the response
// is serialised into the ServerResponse's buffer instead of written. The same hello-world as
// bench/http-server.mjs handles it, through Fastify's router (app.routing), Express's app, or a
// plain node:http handler, in up to three variants:
//   bare     the app alone;
//   hook     Express and Fastify: the app with one middleware / onRequest hook that does nothing,
//            what any middleware costs in that framework;
//   tracked  the app with jouletrace's plugin / middleware / RequestTracker.track(), and, once
//            each response has ended, the 'http.server.response.finish' message that Node's
//            server publishes for every response once jouletrace subscribes (a bare server
//            publishes nothing). The results settle on the sampler thread and reach the
//            tracker's per-route aggregates on this thread, as on a server.
// A sampler runs through every variant (its own cost is bench/sampler.mjs's), so the difference
// is request accounting alone.
//
// Main thread: this thread's CPU over a chunk of requests and the pause after it, in which the
// results arrive. Sampler thread: its CPU over the same window, less its idle rate (measured in
// the bare chunks) for the window's length. Chunks of the variants alternate.
import { IncomingMessage, ServerResponse, Server } from 'node:http';
import { Socket } from 'node:net';
import { channel } from 'node:diagnostics_channel';
import { createRequire } from 'node:module';
import { jouletrace, median, root, sleep, table, threadCpuNs } from './common.mjs';
import { load, serve } from './http-load.mjs';

const require = createRequire(import.meta.url);
const { Sampler, RequestTracker } = jouletrace;
const { energyMiddleware, instrumentExpress } = require(`${root}/dist/cjs/express.js`);
const { fastifyEnergy } = require(`${root}/dist/cjs/fastify.js`);
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
const finish = channel('http.server.response.finish');
const server = new Server();

async function handlers(framework) {
  if (framework === 'node:http') {
    const hello = (req, res) => res.end(`hello ${req.url.slice(7)}`);
    return {
      bare: hello,
      hook: null,
      tracked: (req, res) => {
        tracker.track(req, res, '/hello/:name');
        hello(req, res);
      },
    };
  }
  if (framework === 'express' || framework === 'express-middleware') {
    const express = require('express');
    const make = (variant) => {
      const app = express();
      if (variant === 'tracked' && framework === 'express') instrumentExpress(app, tracker);
      if (variant === 'tracked' && framework === 'express-middleware') app.use(energyMiddleware(tracker));
      if (variant === 'hook') app.use((req, res, next) => next());
      app.get('/hello/:name', (req, res) => res.send(`hello ${req.params.name}`));
      return app;
    };
    return { bare: make('bare'), hook: make('hook'), tracked: make('tracked') };
  }
  const Fastify = require('fastify');
  const make = async (variant) => {
    const app = Fastify();
    if (variant === 'tracked') await app.register(fastifyEnergy, { tracker });
    if (variant === 'hook') app.addHook('onRequest', (req, reply, done) => done());
    app.get('/hello/:name', async (req) => `hello ${req.params.name}`);
    await app.ready();
    return app.routing;
  };
  return { bare: await make('bare'), hook: await make('hook'), tracked: await make('tracked') };
}

// Ten connections per variant, as the HTTP benchmark's load has, each with one request in flight
// at a time; never connected, never destroyed.
const CONNECTIONS = 10;
const sockets = Object.fromEntries(['bare', 'hook', 'tracked'].map((v) => [v, Array.from({ length: CONNECTIONS }, () => new Socket())]));
const reqs = new Array(CONNECTIONS);
const ress = new Array(CONNECTIONS);
const nextTurn = () => new Promise((r) => setImmediate(r));

async function chunk(handler, variant) {
  const conns = sockets[variant];
  const publish = variant === 'tracked';
  const m0 = threadCpuNs(process.pid);
  const s0 = threadCpuNs(samplerTid);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < CHUNK; i += CONNECTIONS) {
    for (let c = 0; c < CONNECTIONS; c++) {
      const req = new IncomingMessage(conns[c]);
      req.method = 'GET';
      req.url = '/hello/world';
      req.headers = { host: '127.0.0.1' };
      const res = new ServerResponse(req);
      reqs[c] = req;
      ress[c] = res;
      handler(req, res);
    }
    // Fastify answers from an async handler: its responses end in the microtasks after this.
    await nextTurn();
    for (let c = 0; c < CONNECTIONS; c++) {
      if (!ress[c].writableEnded) throw new Error(`${variant}: a response did not end`);
      if (publish) finish.publish({ request: reqs[c], response: ress[c], socket: conns[c], server });
    }
  }
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
  const h = await handlers(framework);
  const before = tracker.routes().reduce((n, r) => n + r.count, 0);
  let trackedChunks = 0;
  const variants = ['bare', 'tracked', ...(h.hook ? ['hook'] : [])];
  // Warm up every path (optimised code, the tracker's subscription and arrays).
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
  const added = median(main) + median(samp);
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
