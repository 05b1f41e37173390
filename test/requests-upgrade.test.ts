// Requests that come by Node's 'upgrade' event: WebSocket handshakes, which @fastify/websocket
// routes through Fastify's hooks and express-ws through Express's app. Their responses never end
// (the WebSocket library answers on the socket itself) and their connections live as long as
// the WebSocket: each must end as the handshake it is, not stay in flight until the close.
// Dispatched here as those libraries do it (not installed here): @fastify/websocket calls
// fastify.routing(req, res) with a response on the upgrade's socket before ws answers;
// express-ws calls app.handle(req, res) with a response on no socket once ws has answered, the
// request's URL rewritten to <path>/.websocket, the GET route it adds for app.ws(path).
import * as http from 'node:http';
import { type AddressInfo, Socket } from 'node:net';
import express from 'express';
import Fastify from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { instrumentExpress } from '../src/express';
import { fastifyEnergy } from '../src/fastify';
import { type RequestTracker, trackRequest } from '../src/index';
import { connect, trackerWithRecords, until } from './fixtures/request-endings';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

// What ws writes when it accepts a handshake.
const SWITCHING = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n';
const upgradeRequest = (path: string) => `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`;

// The server's side of an upgraded connection, which Node's server no longer closes: closed by
// the test's cleanups (before the server's close, which waits for it).
function serverSide(socket: Socket): void {
  cleanups.push(() => socket.destroy());
}

// A client connection and what it has received, as text.
async function client(base: string) {
  const c = await connect(base);
  cleanups.push(() => c.destroy());
  const got = { text: '', closed: false };
  c.on('data', (d: Buffer) => (got.text += String(d)));
  c.on('close', () => (got.closed = true));
  return { c, got };
}

// A Fastify app with the plugin and WebSocket routes whose handlers answer the handshake on the
// socket, as @fastify/websocket's does through ws.
async function fastifyWithWebSockets(tracker: RequestTracker): Promise<string> {
  const app = Fastify();
  cleanups.push(() => app.close());
  await app.register(fastifyEnergy, { tracker });
  app.server.on('upgrade', (req: http.IncomingMessage, socket: Socket) => {
    serverSide(socket);
    const res = new http.ServerResponse(req);
    res.assignSocket(socket);
    app.routing(req, res);
  });
  app.get('/ws', (request, reply) => {
    reply.hijack();
    request.raw.socket.write(SWITCHING);
  });
  // ws refusing a handshake: socket.end() with its status line, not through write().
  app.get('/ws-bad', (request, reply) => {
    reply.hijack();
    request.raw.socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
  });
  // Refused by the app through Fastify's reply, after an asynchronous check.
  app.get('/ws-denied', async (_request, reply) => {
    await new Promise((r) => setTimeout(r, 5));
    return reply.code(403).send('no');
  });
  app.get('/plain', async () => 'ok');
  await app.listen({ port: 0, host: '127.0.0.1' });
  return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
}

describe('WebSocket handshakes routed through a framework', () => {
  it('Fastify (as @fastify/websocket routes them): a handshake ends with the status it was answered with, while its WebSocket stays open, on a new or a kept-alive connection', async () => {
    const { sampler, tracker, records } = trackerWithRecords(cleanups);
    const base = await fastifyWithWebSockets(tracker);
    sampler.start();
    const ws = await client(base);
    ws.c.write(upgradeRequest('/ws'));
    await until(() => records.length === 1);
    // A plain request, then a handshake, on one kept-alive connection.
    const kept = await client(base);
    kept.c.write('GET /plain HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => records.length === 2);
    kept.c.write(upgradeRequest('/ws'));
    await until(() => records.length === 3);
    const bad = await client(base);
    bad.c.write(upgradeRequest('/ws-bad'));
    const denied = await client(base);
    denied.c.write(upgradeRequest('/ws-denied'));
    await until(() => records.length === 5);
    expect(ws.got.text).toBe(SWITCHING);
    expect(kept.got.text.endsWith(SWITCHING)).toBe(true);
    expect(bad.got.text.startsWith('HTTP/1.1 400')).toBe(true);
    expect(denied.got.text.startsWith('HTTP/1.1 403')).toBe(true);
    // Both WebSockets still open, and no request in flight.
    expect([ws.got.closed, kept.got.closed]).toEqual([false, false]);
    expect(tracker.inFlight).toBe(0);
    expect(records.map((r) => [r.route, r.statusCode]).sort()).toEqual([
      ['/plain', 200],
      ['/ws', 101],
      ['/ws', 101],
      ['/ws-bad', 400],
      ['/ws-denied', 403],
    ]);
  });

  it('Fastify, exact mode: a closed tracker turns its async hook off while a WebSocket is open', async () => {
    const { sampler, tracker, records } = trackerWithRecords(cleanups, undefined, 'exact');
    const base = await fastifyWithWebSockets(tracker);
    sampler.start();
    const ws = await client(base);
    ws.c.write(upgradeRequest('/ws'));
    await until(() => records.length === 1);
    tracker.close();
    expect(ws.got.closed).toBe(false);
    expect(tracker.inFlight).toBe(0);
    expect(tracker.hookEnabled).toBe(false);
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([['/ws', 101]]);
  });

  // express-ws adds app.ws(path) as a GET route of <path>/.websocket and rewrites a handshake's
  // URL so before dispatching it: the route was recorded as /ws/.websocket.
  it('Express (as express-ws routes them, once the handshake is answered): the handshake ends as 101, with the route app.ws() was given, while its WebSocket stays open', async () => {
    const { sampler, tracker, records } = trackerWithRecords(cleanups);
    const app = express();
    instrumentExpress(app, tracker);
    const handled: string[] = [];
    // The WebSockets' handlers: they answer nothing through the response.
    app.get('/ws/.websocket', (req) => handled.push(req.url));
    app.get('/room/:id/.websocket', (req) => handled.push(req.url));
    app.get('/.websocket', (req) => handled.push(req.url));
    const server = http.createServer(app);
    server.on('upgrade', (req: http.IncomingMessage, socket: Socket) => {
      serverSide(socket);
      socket.write(SWITCHING);
      const [path, query] = req.url!.split('?');
      req.url = `${path.endsWith('/') ? path : `${path}/`}.websocket${query === undefined ? '' : `?${query}`}`;
      (app as unknown as { handle(req: unknown, res: unknown, next: () => void): void }).handle(req, new http.ServerResponse(req), () => socket.destroy());
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => {
      server.closeAllConnections();
      return new Promise((r) => server.close(r));
    });
    sampler.start();
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const sockets = [];
    for (const path of ['/ws', '/room/7?token=x', '/']) {
      const ws = await client(base);
      ws.c.write(upgradeRequest(path));
      await until(() => records.length === sockets.length + 1);
      sockets.push(ws);
    }
    expect(handled).toEqual(['/ws/.websocket', '/room/7/.websocket?token=x', '/.websocket']);
    expect(sockets.map((ws) => ws.got.closed)).toEqual([false, false, false]);
    expect(tracker.inFlight).toBe(0);
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([
      ['/ws', 101],
      ['/room/:id', 101],
      ['/', 101],
    ]);
  });

  // The second tracker's hook went on top of the first's; undone first, it put the first's back,
  // which then stayed on the socket for the WebSocket's life, parsing every frame written and
  // holding the request.
  it('one handshake tracked by two trackers: both record 101, and neither leaves a hook on the socket', async () => {
    const one = trackerWithRecords(cleanups);
    const two = trackerWithRecords(cleanups, one.sampler);
    let upgraded: Socket | undefined;
    const server = http.createServer();
    server.on('upgrade', (req: http.IncomingMessage, socket: Socket) => {
      serverSide(socket);
      upgraded = socket;
      const res = new http.ServerResponse(req);
      res.assignSocket(socket);
      trackRequest(one.tracker, req, res, '/ws');
      trackRequest(two.tracker, req, res, '/ws');
      socket.write(SWITCHING);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => server.close(r)));
    one.sampler.start();
    const ws = await client(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    ws.c.write(upgradeRequest('/ws'));
    await until(() => one.records.length + two.records.length === 2);
    expect([...one.records, ...two.records].map((r) => [r.route, r.statusCode])).toEqual([
      ['/ws', 101],
      ['/ws', 101],
    ]);
    expect(Object.prototype.hasOwnProperty.call(upgraded, 'write')).toBe(false);
    expect(Object.prototype.hasOwnProperty.call(upgraded, 'end')).toBe(false);
    expect(upgraded!.write).toBe(Socket.prototype.write);
    expect(ws.got.closed).toBe(false);
    expect(one.tracker.inFlight + two.tracker.inFlight).toBe(0);
  });
});
