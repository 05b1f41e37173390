// Requests served over TLS. A TLS socket holds a response's bytes until it has encrypted them,
// so a small response is not writableFinished when its end() returns, as it is on plain TCP:
// src/response-end.ts must still end it there (no 'finish' listener per response), and a
// large body waiting for a slow client at its finish.
//
// The certificate in fixtures/tls is self-signed for 127.0.0.1 and valid until 2126; made with
//   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 36500 \
//     -keyout key.pem -out cert.pem -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { trackRequest } from '../src/index';
import { trackerWithRecords, until } from './fixtures/request-endings';

const TLS_DIR = path.join(__dirname, 'fixtures/tls');
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});


async function serveTls(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<number> {
  const server = https.createServer({ key: readFileSync(path.join(TLS_DIR, 'key.pem')), cert: readFileSync(path.join(TLS_DIR, 'cert.pem')) }, handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => {
    server.closeAllConnections();
    return new Promise((r) => server.close(r));
  });
  return (server.address() as AddressInfo).port;
}

function connectTls(port: number): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const c = tls.connect({ port, host: '127.0.0.1', ca: readFileSync(path.join(TLS_DIR, 'cert.pem')) }, () => resolve(c));
    c.once('error', reject);
    cleanups.push(() => c.destroy());
  });
}

const setup = () => trackerWithRecords(cleanups);

describe('requests over HTTPS', () => {
  it("end small responses at their end(), adding no 'finish' listener, on a kept-alive connection", async () => {
    const { sampler, tracker, records } = setup();
    const handedOver: boolean[] = [];
    const finishListenersAdded: number[] = [];
    const port = await serveTls((req, res) => {
      trackRequest(tracker, req, res, '/small');
      const before = res.listenerCount('finish');
      res.end('ok');
      // What made every HTTPS response wait for its 'finish' before: not finished yet here.
      handedOver.push(res.writableFinished);
      finishListenersAdded.push(res.listenerCount('finish') - before);
    });
    sampler.start();
    const c = await connectTls(port);
    let got = '';
    c.on('data', (d: Buffer) => (got += String(d)));
    for (let i = 0; i < 5; i++) {
      c.write('GET /small HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
      await until(() => records.length === i + 1);
    }
    sampler.stop();
    expect(got.match(/HTTP\/1\.1 200 OK/g)).toHaveLength(5);
    expect(handedOver).toEqual([false, false, false, false, false]);
    expect(finishListenersAdded).toEqual([0, 0, 0, 0, 0]);
    expect(records.map((r) => [r.route, r.statusCode])).toEqual(Array(5).fill(['/small', 200]));
    expect(tracker.inFlight).toBe(0);
  });

  it('a large body that waits for a slow client ends at its finish, its duration running to it', async () => {
    const { sampler, tracker, records } = setup();
    // More than TLS and loopback's buffers take at once: end() leaves most of it queued.
    const body = Buffer.alloc(8 << 20, 'x');
    const finishListenersAdded: number[] = [];
    const port = await serveTls((req, res) => {
      trackRequest(tracker, req, res, '/large');
      const before = res.listenerCount('finish');
      res.end(body);
      finishListenersAdded.push(res.listenerCount('finish') - before);
    });
    sampler.start();
    const c = await connectTls(port);
    c.pause();
    c.write('GET /large HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    await until(() => finishListenersAdded.length === 1);
    await new Promise((r) => setTimeout(r, 300));
    expect(tracker.inFlight).toBe(1);
    expect(records).toHaveLength(0);
    let got = 0;
    c.on('data', (d: Buffer) => (got += d.length));
    c.resume();
    await until(() => records.length === 1, 5000);
    sampler.stop();
    expect(got).toBeGreaterThan(body.length);
    expect(finishListenersAdded).toEqual([1]);
    expect(records[0]).toMatchObject({ route: '/large', statusCode: 200 });
    expect(records[0].durationNs).toBeGreaterThan(300e6);
    expect(tracker.inFlight).toBe(0);
  });
});
