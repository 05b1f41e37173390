// Requests whose accounting ends before their response: endRequestAccounting(), and event streams
// (Content-Type: text/event-stream) at their first write(). Held in flight until their response
// ended, server-sent-event streams, long polls and slow downloads each took an equal share of the
// thread's energy from the requests beside them in shared mode: with 20 idle streams open, 100
// sequential 5 ms requests were charged 0.26 ms of CPU each, and the streams 634 ms.
import { execFile } from 'node:child_process';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import * as path from 'node:path';
import { promisify } from 'node:util';
import express from 'express';
import Fastify from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { energyMiddleware } from '../src/express';
import { fastifyEnergy } from '../src/fastify';
import { endRequestAccounting, RequestTracker, Sampler, trackRequest, type RequestRecord } from '../src/index';
import { describeBpf } from './fixtures/bpf-required';
import { busyCpu } from './fixtures/cpu-busy';
import { connect, trackerWithRecords, until } from './fixtures/request-endings';

const run = promisify(execFile);
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function listen(server: http.Server): Promise<string> {
  cleanups.push(() => new Promise((r) => server.close(r)));
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`));
  });
}

// Sequential requests from another process, so that the serving thread serves only.
async function load(base: string, route: string, count: number): Promise<void> {
  const spec = { targets: [{ url: base + route, count }], concurrency: 1 };
  await run(process.execPath, [path.join(__dirname, 'fixtures/load.cjs'), JSON.stringify(spec)]);
}

// Opens GETs of `paths` that the server holds open, each on its own connection; destroyed by the
// test's cleanups.
function openHeld(base: string, paths: string[]): void {
  const agent = new http.Agent({ keepAlive: true, maxSockets: paths.length });
  cleanups.push(() => agent.destroy());
  for (const p of paths) http.get(base + p, { agent }, (res) => res.resume()).on('error', () => {});
}

function eBpfSetup(mode: 'shared' | 'exact') {
  const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'bpf', repairSwitchIns: 'always' });
  const tracker = new RequestTracker(sampler, { mode });
  const records: RequestRecord[] = [];
  tracker.onRequest((rs) => records.push(...rs));
  cleanups.push(() => sampler.close());
  cleanups.push(() => tracker.close());
  return { sampler, tracker, records };
}

describeBpf('ending accounting early: what held requests take from the others', () => {
  it('shared mode: long polls ended with endRequestAccounting() and event streams at their first write take no share of the requests beside them', async () => {
    const { sampler, tracker, records } = eBpfSetup('shared');
    const held: http.ServerResponse[] = [];
    const calls: boolean[] = [];
    const server = http.createServer((req, res) => {
      const url = req.url!;
      trackRequest(tracker, req, res, url.replace(/\d+$/, ''));
      if (url.startsWith('/poll')) {
        res.writeHead(200, { 'content-type': 'application/json' });
        calls.push(endRequestAccounting(req), endRequestAccounting(res)); // the second finds it ended
        held.push(res);
      } else if (url.startsWith('/events')) {
        // Both ways of sending an event stream's headers.
        if (url.endsWith('0') || url.endsWith('2') || url.endsWith('4')) res.writeHead(200, { 'Content-Type': 'text/event-stream' });
        else {
          res.setHeader('content-type', 'text/event-stream; charset=utf-8');
          res.flushHeaders();
        }
        res.write('retry: 1000\n\n');
        held.push(res);
      } else if (url === '/stream') {
        // A plain streamed response: accounted to its end.
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('a');
        setTimeout(() => res.end('b'), 20);
      } else {
        busyCpu(5);
        res.end('ok');
      }
    });
    const base = await listen(server);
    cleanups.push(() => held.forEach((r) => r.destroy()));
    sampler.start();
    await until(() => sampler.stats().timing.samples >= 20);
    openHeld(base, [0, 1, 2, 3, 4].flatMap((i) => [`/poll${i}`, `/events${i}`]));
    await until(() => held.length === 10 && records.length === 10);
    // Their accounting over, their records came, and none is in flight.
    expect(records).toHaveLength(10);
    expect(tracker.inFlight).toBe(0);
    expect(calls).toEqual([true, false, true, false, true, false, true, false, true, false]);
    await load(base, '/work', 30);
    await load(base, '/stream', 1);
    await until(() => records.length === 41);
    const work = records.filter((r) => r.route === '/work');
    expect(work).toHaveLength(30);
    // Each spent 5 ms of CPU: with the 10 held in flight, each got 1/11 of that.
    const meanOnCpuMs = work.reduce((a, r) => a + r.onCpuNs, 0) / work.length / 1e6;
    expect(meanOnCpuMs).toBeGreaterThan(3.5);
    expect(work.every((r) => !r.endedEarly)).toBe(true);
    const heldRecords = records.filter((r) => r.route === '/poll' || r.route === '/events');
    expect(heldRecords).toHaveLength(10);
    expect(heldRecords.every((r) => r.endedEarly && r.statusCode === 200 && !r.incomplete)).toBe(true);
    const stream = records.find((r) => r.route === '/stream')!;
    expect([stream.endedEarly, stream.durationNs > 10e6]).toEqual([false, true]);
    // The responses' real ends change nothing.
    for (const r of held.splice(0)) r.end('bye');
    await new Promise((r) => setTimeout(r, 100));
    expect(records).toHaveLength(41);
    expect(tracker.inFlight).toBe(0);
  });

  it("exact mode: a request's callbacks after endRequestAccounting() are no request's", async () => {
    const { sampler, tracker, records } = eBpfSetup('exact');
    const server = http.createServer((req, res) => {
      trackRequest(tracker, req, res, '/sse', () => {
        busyCpu(8);
        res.writeHead(200, { 'content-type': 'text/plain' });
        endRequestAccounting(req);
        setTimeout(() => {
          busyCpu(20); // in the request's context, after its accounting ended
          res.end('x');
        }, 5);
      });
    });
    const base = await listen(server);
    sampler.start();
    await until(() => sampler.stats().timing.samples >= 20);
    await new Promise<void>((resolve) => http.get(base + '/sse', (res) => res.resume().on('end', resolve)));
    await until(() => records.length >= 1);
    await new Promise((r) => setTimeout(r, 50));
    expect(records).toHaveLength(1);
    const [r] = records;
    expect([r.route, r.endedEarly, r.statusCode, r.incomplete]).toEqual(['/sse', true, 200, false]);
    // Its 8 ms before the end, not the 20 after.
    expect(r.onCpuNs).toBeGreaterThan(6e6);
    expect(r.onCpuNs).toBeLessThan(16e6);
  });
});

describe('endRequestAccounting() wherever a request is tracked', () => {
  it('ends it in every tracker watching it (node:http and the Express middleware), once; its response\'s end adds nothing', async () => {
    const outer = trackerWithRecords(cleanups);
    const inner = trackerWithRecords(cleanups, outer.sampler);
    const held: http.ServerResponse[] = [];
    const calls: boolean[] = [];
    const app = express();
    app.use(energyMiddleware(inner.tracker));
    app.get('/sse/:id', (req, res) => {
      res.writeHead(202);
      calls.push(endRequestAccounting(req), endRequestAccounting(req));
      held.push(res);
    });
    app.get('/plain', (_req, res) => {
      res.send('ok');
    });
    const base = await listen(
      http.createServer((req, res) => {
        trackRequest(outer.tracker, req, res, '/outer');
        app(req, res);
      }),
    );
    // Untracked: nothing to end.
    expect(endRequestAccounting(new http.IncomingMessage(null as unknown as Socket))).toBe(false);
    outer.sampler.start();
    openHeld(base, ['/sse/1']);
    await until(() => held.length === 1 && outer.records.length === 1 && inner.records.length === 1);
    expect(calls).toEqual([true, false]);
    expect([outer.tracker.inFlight, inner.tracker.inFlight]).toEqual([0, 0]);
    const at = (rs: RequestRecord[]) => rs.map((r) => [r.route, r.statusCode, r.endedEarly]);
    expect(at(outer.records)).toEqual([['/outer', 202, true]]);
    expect(at(inner.records)).toEqual([['/sse/:id', 202, true]]);
    held[0].end('bye');
    await new Promise<void>((resolve) => http.get(base + '/plain', (res) => res.resume().on('end', resolve)));
    await until(() => outer.records.length === 2 && inner.records.length === 2);
    await new Promise((r) => setTimeout(r, 30));
    expect(at(outer.records)).toEqual([
      ['/outer', 202, true],
      ['/outer', 200, false],
    ]);
    expect(at(inner.records)).toEqual([
      ['/sse/:id', 202, true],
      ['/plain', 200, false],
    ]);
  });

  it("Fastify: the plugin's request ends early given Fastify's request or reply, on a server or through inject()", async () => {
    const { sampler, tracker, records } = trackerWithRecords(cleanups);
    const app = Fastify();
    cleanups.push(() => app.close());
    await app.register(fastifyEnergy, { tracker });
    const held: http.ServerResponse[] = [];
    const calls: boolean[] = [];
    app.get('/hijacked', (request, reply) => {
      reply.hijack();
      reply.raw.writeHead(200, { 'content-type': 'text/plain' });
      calls.push(endRequestAccounting(request));
      held.push(reply.raw);
    });
    app.get('/reply', async (_request, reply) => {
      calls.push(endRequestAccounting(reply));
      await new Promise((r) => setTimeout(r, 10));
      return 'x';
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    sampler.start();
    openHeld(base, ['/hijacked']);
    await until(() => records.length === 1);
    // A fake socket (no HTTP server): watched through its response's events.
    await app.inject({ url: '/reply' });
    await until(() => records.length === 2);
    held[0].end('bye');
    await new Promise((r) => setTimeout(r, 30));
    expect(calls).toEqual([true, true]);
    expect(records.map((r) => [r.route, r.statusCode, r.endedEarly])).toEqual([
      ['/hijacked', 200, true],
      ['/reply', 200, true],
    ]);
    expect(tracker.inFlight).toBe(0);
  });

  it('HTTP/2 (compatibility API): ends early given the request or the response; its end, or its stream\'s reset, adds nothing', async () => {
    const { sampler, tracker, records } = trackerWithRecords(cleanups);
    const calls: boolean[] = [];
    const server = http2.createServer((req, res) => {
      trackRequest(tracker, req as never, res as never, req.url);
      res.writeHead(req.url === '/req' ? 200 : 203);
      // No cast: the HTTP/2 compatibility request and response are in its type.
      calls.push(endRequestAccounting(req.url === '/req' ? req : res), endRequestAccounting(res));
      if (req.url === '/req') setTimeout(() => res.end('x'), 5);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => server.close(r)));
    sampler.start();
    const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    cleanups.push(() => void client.destroy());
    const ended = new Promise<void>((resolve) => client.request({ ':path': '/req' }).on('error', () => {}).resume().on('end', resolve));
    const reset = client.request({ ':path': '/res' }).on('error', () => {});
    await ended;
    await until(() => records.length === 2);
    reset.close(http2.constants.NGHTTP2_CANCEL);
    await new Promise((r) => setTimeout(r, 30));
    expect(calls).toEqual([true, false, true, false]);
    expect(records.map((r) => [r.route, r.statusCode, r.endedEarly]).sort()).toEqual([
      ['/req', 200, true],
      ['/res', 203, true],
    ]);
    expect(tracker.inFlight).toBe(0);
  });

  it("an upgrade request (a WebSocket handshake) ends early too; the handshake's write adds nothing", async () => {
    const { sampler, tracker, records } = trackerWithRecords(cleanups);
    const calls: boolean[] = [];
    const server = http.createServer((_req, res) => res.end());
    server.on('upgrade', (req: http.IncomingMessage, socket: Socket) => {
      cleanups.push(() => socket.destroy());
      const res = new http.ServerResponse(req);
      res.assignSocket(socket);
      trackRequest(tracker, req, res, '/ws');
      res.statusCode = 101;
      calls.push(endRequestAccounting(req), endRequestAccounting(res));
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    });
    const base = await listen(server);
    sampler.start();
    const c = await connect(base);
    cleanups.push(() => c.destroy());
    c.write('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
    await until(() => records.length === 1);
    c.destroy();
    await new Promise((r) => setTimeout(r, 30));
    expect(calls).toEqual([true, false]);
    expect(records.map((r) => [r.route, r.statusCode, r.endedEarly])).toEqual([['/ws', 101, true]]);
  });

  it('a pipelined request, queued behind one in flight, ends early alone; exact mode too', async () => {
    for (const mode of ['shared', 'exact'] as const) {
      const { sampler, tracker, records } = trackerWithRecords(cleanups, undefined, mode);
      const base = await listen(
        http.createServer((req, res) => {
          trackRequest(tracker, req, res, req.url!);
          if (req.url === '/hold') setTimeout(() => res.writeHead(201).end('a'), 30);
          else {
            expect(endRequestAccounting(res)).toBe(true);
            setTimeout(() => res.writeHead(202).end('b'), 5);
          }
        }),
      );
      sampler.start();
      const c = await connect(base);
      cleanups.push(() => c.destroy());
      let got = '';
      c.on('data', (d: Buffer) => (got += String(d)));
      c.write('GET /hold HTTP/1.1\r\nHost: x\r\n\r\nGET /early HTTP/1.1\r\nHost: x\r\n\r\n');
      await until(() => (got.match(/HTTP\/1.1 /g) ?? []).length === 2 && records.length === 2);
      await new Promise((r) => setTimeout(r, 20));
      // Ended early with the status its response held then (200), before /hold's end.
      expect(records.map((r) => [r.route, r.statusCode, r.endedEarly, r.mode])).toEqual([
        ['/early', 200, true, mode],
        ['/hold', 201, false, mode],
      ]);
      sampler.stop();
    }
  });

  it('refuses what is no request or response; the write() wrapper comes off with the last tracker', () => {
    // Koa's ctx and hapi's request (whose raw is { req, res }), or any other object, ended nothing
    // and returned false, the request left in flight.
    for (const x of [undefined, null, 42, 'req', {}, [], { req: {}, res: {} }, { raw: { req: {}, res: {} } }]) {
      expect(() => endRequestAccounting(x as never)).toThrow(
        /^Expected a request \(an http\.IncomingMessage, Express's req, Fastify's request\) or its response for reqOrRes but received/,
      );
    }
    const proto = http.ServerResponse.prototype;
    const own = () => Object.prototype.hasOwnProperty.call(proto, 'write');
    expect(own()).toBe(false);
    const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs' });
    cleanups.push(() => sampler.close());
    const tracker = new RequestTracker(sampler);
    expect(own()).toBe(true);
    tracker.close();
    expect(own()).toBe(false);
  });

  // A tool that wrapped write() before jouletrace and later put Node's back took ours off too: no
  // tracker made after it put ours back, and event streams stayed in flight for good.
  it('puts its write() wrapper back for a new tracker where another tool took it off', async () => {
    const proto = http.ServerResponse.prototype;
    const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs' });
    cleanups.push(() => sampler.close());
    proto.write = function (this: http.ServerResponse, ...a: unknown[]) {
      return (http.OutgoingMessage.prototype.write as (...x: unknown[]) => boolean).apply(this, a);
    } as typeof proto.write;
    cleanups.push(() => void delete (proto as Partial<typeof proto>).write);
    const first = new RequestTracker(sampler);
    delete (proto as Partial<typeof proto>).write; // the tool unwraps: Node's write() again
    first.close();
    const tracker = new RequestTracker(sampler);
    cleanups.push(() => tracker.close());
    const records: RequestRecord[] = [];
    tracker.onRequest((rs) => records.push(...rs));
    sampler.start();
    let held: http.ServerResponse | undefined;
    const server = http.createServer((req, res) => {
      trackRequest(tracker, req, res, '/sse');
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: 1\n\n');
      held = res;
    });
    cleanups.push(() => held?.end());
    const base = await listen(server);
    openHeld(base, ['/sse']);
    await until(() => records.length === 1);
    expect(records.map((r) => [r.route, r.endedEarly])).toEqual([['/sse', true]]);
    expect(tracker.inFlight).toBe(0);
  });
});
