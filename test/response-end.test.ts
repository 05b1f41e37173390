// The wrapper of ServerResponse's end() that ends tracked requests (src/response-finish.ts), with
// other tools' wrappers of it around. In a file of its own: the wrapper is the process's, and a
// test here leaves it beneath another tool's.
import * as http from 'node:http';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { RequestTracker, Sampler, trackRequest, type RequestRecord } from '../src/index';
import { endWrapped } from '../src/response-finish';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function until(cond: () => boolean, ms = 2000): Promise<void> {
  for (const end = Date.now() + ms; !cond() && Date.now() < end; ) await new Promise((r) => setTimeout(r, 5));
}

async function serve(handler: http.RequestListener): Promise<string> {
  const server = http.createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise((r) => server.close(r)));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function connect(base: string): Promise<net.Socket> {
  const { port } = new URL(base);
  return new Promise((resolve, reject) => {
    const c = net.connect(Number(port), '127.0.0.1', () => resolve(c));
    c.once('error', reject);
  });
}

// procfs and the model source: these tests are about when requests end, not their joules.
function setup() {
  const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs' });
  const tracker = new RequestTracker(sampler);
  const records: RequestRecord[] = [];
  tracker.onRequest((rs) => records.push(...rs));
  cleanups.push(() => sampler.close());
  cleanups.push(() => tracker.close());
  return { sampler, tracker, records };
}

describe("ServerResponse's end(), wrapped", () => {
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
    const second = new RequestTracker(first.sampler);
    const records: RequestRecord[] = [];
    second.onRequest((rs) => records.push(...rs));
    cleanups.push(() => second.close());
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
    const third = new RequestTracker(first.sampler);
    const more: RequestRecord[] = [];
    third.onRequest((rs) => more.push(...rs));
    cleanups.push(() => third.close());
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

});
