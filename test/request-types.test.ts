// The request API as a strict TypeScript user writes it (tsconfig.test.json type-checks this file:
// `npm run typecheck` fails where a call the README shows is refused, or a `@ts-expect-error`
// below finds nothing to refuse), and what those calls record.
import type { IncomingMessage, ServerResponse } from 'node:http';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { RequestTracker, trackRequest } from '../src/index';
import { trackerWithRecords, until } from './fixtures/request-endings';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function listen(server: http.Server | http2.Http2Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise((r) => server.close(r)));
  return (server.address() as AddressInfo).port;
}

describe('request types', () => {
  // Typed `() => string`, a route function that gave undefined for no match was refused
  // (TS2345), as was such a routeOf (TS2322), though either counts as (unmatched) at run time.
  it('a route function and routeOf may return undefined (no match), which counts as (unmatched)', async () => {
    const { sampler, tracker, records } = trackerWithRecords(cleanups);
    const server = http.createServer((req, res) => {
      trackRequest(tracker, req, res, () => (req.url === '/a' ? '/a' : undefined));
      res.end();
    });
    const port = await listen(server);
    const routed = new RequestTracker(sampler, { routeOf: (req) => (req.url?.startsWith('/u/') ? '/u/:id' : undefined) });
    cleanups.push(() => routed.close());
    routed.onRequest((rs) => records.push(...rs));
    const server2 = http.createServer((req, res) => {
      routed.track(req, res);
      res.end();
    });
    const port2 = await listen(server2);
    sampler.start();
    for (const url of [`http://127.0.0.1:${port}/a`, `http://127.0.0.1:${port}/b`, `http://127.0.0.1:${port2}/u/7`, `http://127.0.0.1:${port2}/x`]) {
      await fetch(url).then((r) => r.arrayBuffer());
      await until(() => tracker.inFlight === 0 && routed.inFlight === 0);
    }
    await until(() => records.length === 4);
    sampler.stop();
    expect(records.map((r) => r.route)).toEqual(['/a', '(unmatched)', '/u/:id', '(unmatched)']);

    // A routeOf written for node:http's requests alone (annotated) is taken too.
    const annotated = new RequestTracker(sampler, { routeOf: (req: IncomingMessage) => req.url ?? '' });
    annotated.close();
    // What stays refused: a route of another type.
    // @ts-expect-error a route is a string or a function
    expect(() => trackRequest(tracker, {} as IncomingMessage, {} as ServerResponse, 5)).toThrow(TypeError);
    // @ts-expect-error routeOf returns a string or undefined
    new RequestTracker(sampler, { routeOf: () => 5 }).close();
    // @ts-expect-error a route function returns a string or undefined
    void (() => tracker.start('GET', () => 5));
  });

  // trackRequest() and track() took IncomingMessage and ServerResponse alone: an HTTP/2
  // compatibility request, tracked at run time, was refused by the types.
  it("takes HTTP/2 compatibility API's requests and responses, and records them", async () => {
    const { sampler, tracker, records } = trackerWithRecords(cleanups);
    const server = http2.createServer((req, res) => {
      if (req.url === '/track') tracker.track(req, res, '/track');
      else trackRequest(tracker, req, res, () => (req.url === '/fn' ? '/fn' : undefined));
      res.statusCode = 201;
      res.end();
    });
    const port = await listen(server);
    const routed = new RequestTracker(sampler, { routeOf: (req) => (req.httpVersion === '2.0' ? '/h2' : undefined) });
    cleanups.push(() => routed.close());
    routed.onRequest((rs) => records.push(...rs));
    const server2 = http2.createServer((req, res) => {
      trackRequest(routed, req, res);
      res.end();
    });
    const port2 = await listen(server2);
    sampler.start();
    for (const [p, path] of [
      [port, '/track'],
      [port, '/fn'],
      [port, '/other'],
      [port2, '/any'],
    ] as const) {
      const client = http2.connect(`http://127.0.0.1:${p}`);
      cleanups.push(() => void client.destroy());
      const stream = client.request({ ':path': path });
      stream.resume();
      await new Promise((r) => stream.on('close', r));
      await until(() => tracker.inFlight === 0 && routed.inFlight === 0);
    }
    await until(() => records.length === 4);
    sampler.stop();
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([
      ['/track', 201],
      ['/fn', 201],
      ['(unmatched)', 201],
      ['/h2', 200],
    ]);
    // Still refused: what is neither kind of request or response.
    // @ts-expect-error not a request
    void (() => trackRequest(tracker, {}, {} as http2.Http2ServerResponse));
    // @ts-expect-error not a response
    void (() => tracker.track({} as http2.Http2ServerRequest, {}));
  });
});
