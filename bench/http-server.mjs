// Server process for bench/http.mjs and bench/request-cost.mjs:
//   node bench/http-server.mjs <express|fastify|node:http> <variant>
// Variants: bare, sampler, middleware, exact; instrumented (Express): instrumentExpress(app)
// instead of the middleware; hooked (Fastify): jouletrace's plugin on an app that already has an
// onRequest hook, which makes Fastify run its hook runner for every request anyway; work1us: no jouletrace, one middleware (Express)
// or onRequest hook (Fastify) that busy-waits 1 µs, as a ruler for what 1 µs of added work per
// request costs on the machine at hand; hook: the sampler and an empty middleware / onRequest
// hook, what any hook costs in that framework; floor (node:http, Fastify): no jouletrace, the
// sampler and the least any accounting of this shape does (see floorAccounting below), a ruler
// for how far jouletrace's request path is from it; straight: no jouletrace, the sampler, and a
// hook (a middleware; node:http: in the handler) that runs about 5.7 KB of straight-line machine code once a request, as much
// as jouletrace's own functions run (see makeStraight below), a ruler for what code run once a
// request costs beyond its instructions; control: the sampler alone again, in a
// process of its own (an A/A control: what the benchmark reads as a loss where there is none).
// Prints "listening <port>" once ready. SIGUSR2 marks the start of a measured load; SIGTERM prints
// "cpu {user, system, served, total, recorded}": CPU and requests served since the mark (µs,
// requests), requests served in all, and, with a tracker, how many of them it recorded; and exits.
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { root, jouletrace } from './common.mjs';

const require = createRequire(import.meta.url);
const [framework, variant] = process.argv.slice(2);
// bench/request-instructions.mjs runs this server under valgrind, about 50 times slower, and has
// it stretch its setInterval timers as much (jouletrace's result timer runs every 20 ms), so that
// each timer run handles as many requests as at full speed.
const intervalScale = Number(process.env.BENCH_INTERVAL_SCALE ?? 1);
// BENCH_HTTP_SAMPLER_CPU=N pins the sampler thread to CPU N (the Sampler's `cpu` option), as the
// README advises for a latency-sensitive service: on a housekeeping CPU, away from the server's.
const samplerCpu = process.env.BENCH_HTTP_SAMPLER_CPU === undefined ? undefined : Number(process.env.BENCH_HTTP_SAMPLER_CPU);
if (intervalScale !== 1) {
  const setIntervalAsIs = globalThis.setInterval;
  globalThis.setInterval = (fn, ms, ...args) => setIntervalAsIs(fn, (ms ?? 1) * intervalScale, ...args);
}
if (variant === 'hooked' && framework !== 'fastify') throw new Error(`variant hooked is for fastify, not ${framework}`);
if (variant === 'instrumented' && framework !== 'express') throw new Error(`variant instrumented is Express's instrumentExpress(); not for ${framework}`);
const { Sampler, RequestTracker } = jouletrace;
let sampler;
let tracker;
function work1us() {
  const until = performance.now() + 0.001;
  while (performance.now() < until);
}
// What any accounting that marks a request's start in a hook and its end when the response's
// end() returns must do, and nothing more: one clock read and one 24-byte event written into a
// shared ring at each end, the request found again through a tag on its connection, end()
// wrapped on ServerResponse's prototype as jouletrace wraps it. No slots, no settlement, no
// aggregation, no protection against a request tracked twice, no partly buffered responses: not
// usable, only a measure of the floor under jouletrace's request path (the hook or handler that
// calls track() is the same in both).
function floorAccounting() {
  const http = require('node:http');
  const ring = new Int32Array(new SharedArrayBuffer(1 << 20));
  const hrtime = process.hrtime;
  const OPEN = Symbol('floor.open');
  let head = 0;
  const event = (a, b) => {
    const t = hrtime();
    const o = (head & 0x7fff) * 8;
    ring[o + 2] = a;
    ring[o + 3] = b;
    ring[o + 4] = t[0];
    ring[o + 5] = t[1];
    ring[o] = (a ^ b ^ t[0] ^ t[1]) | 0;
    ring[o + 1] = head;
    head = (head + 1) | 0;
  };
  const proto = http.ServerResponse.prototype;
  const end = proto.end;
  proto.end = function (chunk, encoding, callback) {
    const r = end.call(this, chunk, encoding, callback);
    const s = this.socket;
    const id = s === null ? undefined : s[OPEN];
    if (id !== undefined && id !== 0) {
      s[OPEN] = 0;
      event(id, this.statusCode);
    }
    return r;
  };
  const routes = new Map();
  return (req, route) => {
    let id = routes.get(route);
    if (id === undefined) routes.set(route, (id = routes.size + 1));
    event(id, 0);
    req.socket[OPEN] = id;
  };
}
// n statements of int32 arithmetic, each with constants of its own, so that V8 compiles them to
// straight-line code that a request runs once: at n = 370, about 5.7 KB of machine code (90 cache
// lines) and 1,500 instructions (V8 11.3, x86-64), the size of what jouletrace's own functions run
// a request. Code run once a request is fetched from beyond the L1i each time (a hello-world's
// path is several times the L1i's size), which instructions counted do not show.
function makeStraight(n) {
  let body = 'let a = x | 0, b = (x >>> 3) | 0, c = (x * 7) | 0;\n';
  let k = 0x9e3779b1;
  for (let i = 0; i < n; i++) {
    k = (Math.imul(k, 1103515245) + 12345) >>> 0;
    const v = 'abc'[i % 3];
    const w = 'bca'[i % 3];
    body += `${v} = ((${v} + ${k & 0x7fffffff}) ^ (${w} >>> ${1 + (i % 13)})) | 0;\n`;
  }
  return new Function('x', `${body}return (a ^ b ^ c) | 0;`);
}
const straight = variant === 'straight' ? makeStraight(370) : null;
let straightSink = 0;
const floor = variant === 'floor' ? floorAccounting() : null;
if (variant !== 'bare' && variant !== 'work1us') {
  sampler = new Sampler({ intervalUs: 1000, ...(samplerCpu !== undefined && { cpu: samplerCpu }) });
  sampler.start();
  if (!['sampler', 'control', 'hook', 'floor', 'straight'].includes(variant)) tracker = new RequestTracker(sampler, { mode: variant === 'exact' ? 'exact' : 'shared' });
}
let close;
if (framework === 'node:http') {
  const http = require('node:http');
  const server = http.createServer((req, res) => {
    if (tracker) tracker.track(req, res, '/hello/:name');
    if (floor) floor(req, '/hello/:name');
    if (straight) straightSink ^= straight(served);
    if (variant === 'work1us') work1us();
    served++;
    res.end(`hello ${req.url.slice(7)}`);
  });
  server.listen(0, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
  close = () => server.close();
} else if (framework === 'express') {
  const express = require('express');
  const { energyMiddleware, instrumentExpress } = require(`${root}/dist/cjs/express.js`);
  const app = express();
  if (tracker && variant === 'instrumented') instrumentExpress(app, tracker);
  else if (tracker) app.use(energyMiddleware(tracker));
  if (variant === 'work1us') app.use((req, res, next) => (work1us(), next()));
  if (variant === 'hook') app.use((req, res, next) => next());
  if (straight) app.use((req, res, next) => ((straightSink ^= straight(served)), next()));
  app.get('/hello/:name', (req, res) => (served++, res.send(`hello ${req.params.name}`)));
  const server = app.listen(0, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
  close = () => server.close();
} else {
  const Fastify = require('fastify');
  const { fastifyEnergy, fastifyRoute } = require(`${root}/dist/cjs/fastify.js`);
  const app = Fastify();
  if (tracker) await app.register(fastifyEnergy, { tracker });
  if (variant === 'work1us') app.addHook('onRequest', (req, reply, done) => (work1us(), done()));
  if (variant === 'hook' || variant === 'hooked') app.addHook('onRequest', (req, reply, done) => done());
  if (floor) app.addHook('onRequest', (req, reply, done) => (floor(req.raw, fastifyRoute(req)), done()));
  if (straight) app.addHook('onRequest', (req, reply, done) => ((straightSink ^= straight(served)), done()));
  app.get('/hello/:name', async (req) => (served++, `hello ${req.params.name}`));
  const address = await app.listen({ port: 0, host: '127.0.0.1' });
  console.log(`listening ${new URL(address).port}`);
  close = () => app.close();
}
let served = 0;
// SIGUSR2 marks the start of a measured load; SIGTERM reports the server's CPU since then.
let mark = { cpu: process.cpuUsage(), served: 0 };
process.on('SIGUSR2', () => (mark = { cpu: process.cpuUsage(), served }));
process.on('SIGTERM', () => {
  const c = process.cpuUsage(mark.cpu);
  // With a tracker, also how many requests it recorded, all told, once stop() has settled the last
  // of them: the caller compares it with `total`, every request served (a tracked variant whose
  // hook tracked nothing would otherwise read as costing nothing).
  let recorded;
  if (tracker) {
    sampler.stop();
    recorded = tracker.routes().reduce((n, r) => n + r.count, 0);
  }
  console.log(`cpu ${JSON.stringify({ user: c.user, system: c.system, served: served - mark.served, total: served, recorded })}`);
  if (process.env.BENCH_VERBOSE) {
    const u = process.cpuUsage();
    console.error(`[${framework}/${variant}] ${served} requests, server process CPU ${((u.user + u.system) / served).toFixed(1)} µs per request (user ${(u.user / served).toFixed(1)}, system ${(u.system / served).toFixed(1)})`);
  }
  if (sampler && process.env.BENCH_VERBOSE) {
    const st = sampler.stats();
    console.error(`[${framework}/${variant}] sampler thread ${st.timing.cpuPercent.toFixed(1)} % of a core, ${st.bpf?.events ?? 0} context switches seen, attribution step ${st.timing.samples} samples`);
  }
  close();
  tracker?.close();
  sampler?.close();
  process.exit(0);
});
