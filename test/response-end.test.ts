// The wrapper of ServerResponse's end() that ends tracked requests (src/response-end.ts), with
// other tools' wrappers of it around. In a file of its own: the wrapper is the process's, and a
// test here leaves it beneath another tool's, then drops that tool's (the last test finds the
// wrapper gone from the chain, whatever ran before it).
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { trackRequest } from '../src/index';
import { connect, trackerWithRecords, until } from './fixtures/request-endings';
import { endWrapped } from '../src/response-end';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});


async function serve(handler: http.RequestListener): Promise<string> {
  const server = http.createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise((r) => server.close(r)));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}


const setup = () => trackerWithRecords(cleanups);

describe("ServerResponse's end(), wrapped", () => {
  it("a response's end() kept while a tracker was open still works after the last tracker closed; a tool's patch of OutgoingMessage's end() made later is not skipped", async () => {
    const outgoing = http.OutgoingMessage.prototype as unknown as { end: (...a: unknown[]) => unknown };
    const nodeEnd = outgoing.end;
    const first = setup();
    let kept: ((d: string) => void) | undefined;
    const base = await serve((req, res) => {
      if (req.url === '/keep') {
        kept = res.end.bind(res) as (d: string) => void; // as compression or a session store does
        return;
      }
      trackRequest(first.tracker, req, res, '/patched');
      res.end('ok');
    });
    first.sampler.start();
    // A tool patches OutgoingMessage's end() after jouletrace's wrapper went in.
    let seen = 0;
    outgoing.end = function (this: unknown, ...a: unknown[]) {
      seen++;
      return nodeEnd.apply(this, a);
    };
    cleanups.push(() => {
      outgoing.end = nodeEnd;
    });
    const c = await connect(base);
    let got = '';
    c.on('data', (d: Buffer) => (got += String(d)));
    c.write('GET /patched HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => first.records.length === 1);
    expect(seen).toBe(1);
    expect(first.records.map((r) => [r.route, r.statusCode])).toEqual([['/patched', 200]]);
    c.write('GET /keep HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => kept !== undefined);
    first.tracker.close();
    expect(endWrapped()).toBe(false);
    kept!('late'); // the wrapper it kept, off the prototype now, passes the call on
    await until(() => got.includes('late'));
    expect(got).toContain('late');
    first.sampler.stop();
    c.destroy();
  });

  it("takes its wrapper of end() off only while it is on top: another tool's wrapper, under or over it, stays and keeps working", async () => {
    const proto = http.ServerResponse.prototype as unknown as { end: (...a: unknown[]) => unknown };
    const nodeEnd = proto.end;
    const calls: string[] = [];
    // A tool that wrapped end() before any tracker: an own property of the prototype.
    const under = function (this: unknown, ...a: unknown[]) {
      calls.push('under');
      return nodeEnd.apply(this, a);
    };
    proto.end = under;
    cleanups.push(() => {
      delete (proto as Partial<typeof proto>).end;
    });
    const first = setup();
    const base = await serve((req, res) => {
      trackRequest(first.tracker, req, res, '/w');
      res.end('ok');
    });
    first.sampler.start();
    const c = await connect(base);
    c.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => first.records.length === 1);
    expect(calls).toEqual(['under']);
    first.tracker.close();
    expect(proto.end).toBe(under); // put back as it was
    // A tool that wraps end() over jouletrace's: jouletrace's stays beneath it, passing through.
    const { tracker: second, records } = trackerWithRecords(cleanups, first.sampler);
    const again = await serve((req, res) => {
      trackRequest(second, req, res, '/v');
      res.end('ok');
    });
    const d = await connect(again);
    d.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => records.length === 1);
    const ours = proto.end;
    expect(endWrapped()).toBe(true);
    const over = function (this: unknown, ...a: unknown[]) {
      calls.push('over');
      return ours.apply(this, a);
    };
    proto.end = over;
    second.close();
    expect(proto.end).toBe(over);
    // A third tracker finds its wrapper still beneath and counts through it.
    const { tracker: third, records: more } = trackerWithRecords(cleanups, first.sampler);
    const last = await serve((req, res) => {
      trackRequest(third, req, res, '/u');
      res.end('ok');
    });
    const e = await connect(last);
    e.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => more.length === 1);
    expect(more.map((r) => [r.route, r.statusCode])).toEqual([['/u', 200]]);
    expect(calls).toEqual(['under', 'under', 'over', 'under']);
    first.sampler.stop();
    for (const s of [c, d, e]) s.destroy();
  });

  it("a response ended through Node's own end(), bypassing the wrapper, ends when the next request on its connection is tracked", async () => {
    // What a library that captured end() before any tracker ran would call.
    const nodeEnd = Object.getPrototypeOf(http.ServerResponse.prototype).end as (this: http.ServerResponse, d: string) => void;
    const { sampler, tracker, records } = setup();
    const base = await serve((req, res) => {
      trackRequest(tracker, req, res, req.url!);
      if (req.url === '/bypass') nodeEnd.call(res.writeHead(203), 'ok');
      else res.end('ok');
    });
    sampler.start();
    const c = await connect(base);
    let got = '';
    c.on('data', (d: Buffer) => (got += String(d)));
    c.write('GET /bypass HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => got.includes('203'));
    await new Promise((r) => setTimeout(r, 50));
    expect(tracker.inFlight).toBe(1); // unseen so far
    c.write('GET /next HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => records.length === 2);
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([
      ['/bypass', 203],
      ['/next', 200],
    ]);
    expect(tracker.inFlight).toBe(0);
    // The last request on a connection, ended so: at the connection's close, with the status it
    // was sent with (it finished), not as a client that left.
    c.write('GET /bypass HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => (got.match(/203/g) ?? []).length === 2);
    c.destroy();
    await until(() => records.length === 3);
    expect(records[2]).toMatchObject({ route: '/bypass', statusCode: 203 });
    // The test before left the prototype's end() without any wrapper of ours in its chain (its
    // cleanup deleted the tool's): the miss put one on top again.
    expect(endWrapped()).toBe(true);
    sampler.stop();
  });

  it("a request whose client left counts as 499 though the app's listener of the close ends its response, on a connection's first request or a later one", async () => {
    const { sampler, tracker, records } = setup();
    const arrived: string[] = [];
    const base = await serve((req, res) => {
      trackRequest(tracker, req, res, req.url!);
      arrived.push(req.url!);
      // Listeners that Node's server calls from its own 'close' listener of the socket; the
      // bytes are dropped on the closed socket.
      if (req.url === '/ok') res.end('ok');
      else if (req.url === '/response-close') res.on('close', () => res.writableEnded || res.end('late'));
      else req.on('aborted', () => res.writableEnded || res.end('late'));
    });
    sampler.start();
    for (const first of [true, false]) {
      for (const p of ['/response-close', '/request-aborted']) {
        const c = await connect(base);
        const before = records.length;
        if (!first) {
          c.write('GET /ok HTTP/1.1\r\nHost: x\r\n\r\n');
          await until(() => records.length === before + 1);
        }
        c.write(`GET ${p} HTTP/1.1\r\nHost: x\r\n\r\n`);
        await until(() => arrived.at(-1) === p);
        c.destroy();
        await until(() => tracker.inFlight === 0);
      }
    }
    sampler.stop();
    expect(records.filter((r) => r.route !== '/ok').map((r) => [r.route, r.statusCode])).toEqual([
      ['/response-close', 499],
      ['/request-aborted', 499],
      ['/response-close', 499],
      ['/request-aborted', 499],
    ]);
  });
});
