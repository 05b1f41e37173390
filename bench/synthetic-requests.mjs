// Requests without the network, for bench/request-cost.mjs and bench/request-cold.mjs: what Node's
// HTTP server hands a framework (an IncomingMessage on a connection's socket and its
// ServerResponse), here on sockets never connected, so each response is serialised into its
// ServerResponse's buffer instead of written. The same hello-world as bench/http-server.mjs
// handles them, in up to three variants:
//   bare     the app alone;
//   hook     Express and Fastify: the app with one middleware / onRequest hook that does nothing,
//            what any middleware costs in that framework;
//   tracked  the app with jouletrace's plugin / middleware / RequestTracker.track(); its
//            requests end in jouletrace's wrapper of ServerResponse's end().
import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { createRequire } from 'node:module';
import { root } from './common.mjs';

const require = createRequire(import.meta.url);
const { energyMiddleware, instrumentExpress } = require(`${root}/dist/cjs/express.js`);
const { fastifyEnergy } = require(`${root}/dist/cjs/fastify.js`);

// On a server, a small response's end() hands it whole to its connection's socket: nothing stays
// in the response's own buffer (outputSize 0), which is how jouletrace's wrapper of end() knows
// it can end the request then. Here there is no socket: the response takes its bytes as a socket
// with room would, and drops them. Without this every response stayed buffered, and each request
// ended a batch late, through the path for responses whose 'finish' jouletrace waits for. Every
// variant's responses are of this class: the comparison stays like for like.
//
// A Buffer body (Express's res.send() sends one) makes Node's _send() queue the headers in the
// response's outputData, for the socket to flush before the body (_flushOutput), instead of
// prepending them: those are taken too. Before they were, every Express response here stayed
// partly buffered and ended through a 'finish' listener, which an Express response on a real
// server does not (bench/RESULTS.md, "Twelfth session").
export class SyntheticResponse extends ServerResponse {
  _writeRaw(data, encoding, callback) {
    if (this.outputData.length > 0) {
      for (const queued of this.outputData) if (typeof queued.callback === 'function') process.nextTick(queued.callback);
      this.outputData = [];
      this.outputSize = 0;
    }
    if (typeof encoding === 'function') callback = encoding;
    if (typeof callback === 'function') process.nextTick(callback);
    return true;
  }
}

/**
 * The app's request handler per variant (hook: null for node:http). Frameworks: node:http,
 * fastify, express (instrumentExpress), express-middleware (app.use(energyMiddleware()) first).
 */
export async function appHandlers(framework, tracker) {
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
      // Express gives each response its app's prototype, which inherits from Node's
      // ServerResponse, not from SyntheticResponse: its responses take their bytes the same way.
      app.response._writeRaw = SyntheticResponse.prototype._writeRaw;
      if (variant === 'tracked' && framework === 'express') instrumentExpress(app, tracker);
      if (variant === 'tracked' && framework === 'express-middleware') app.use(energyMiddleware(tracker));
      if (variant === 'hook') app.use((req, res, next) => next());
      app.get('/hello/:name', (req, res) => res.send(`hello ${req.params.name}`));
      return app;
    };
    return { bare: make('bare'), hook: make('hook'), tracked: make('tracked') };
  }
  if (framework !== 'fastify') throw new Error(`unknown framework ${framework}: expected node:http, express, express-middleware or fastify`);
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

/** Ten connections, as the HTTP benchmark's load has: one request in flight on each at a time. */
export const CONNECTIONS = 10;
/** A variant's connections; never connected, never destroyed until the benchmark ends. */
export const connections = () => Array.from({ length: CONNECTIONS }, () => new Socket());

const ress = new Array(CONNECTIONS);
const nextTurn = () => new Promise((r) => setImmediate(r));

/**
 * One request on each connection, handled by `handler`; resolves once every response has ended
 * (Fastify answers from an async handler, in the microtasks after the call).
 */
export async function requestBatch(handler, conns) {
  for (let c = 0; c < CONNECTIONS; c++) {
    const req = new IncomingMessage(conns[c]);
    req.method = 'GET';
    req.url = '/hello/world';
    req.headers = { host: '127.0.0.1' };
    const res = new SyntheticResponse(req);
    ress[c] = res;
    handler(req, res);
  }
  await nextTurn();
  for (let c = 0; c < CONNECTIONS; c++) {
    if (!ress[c].writableEnded) throw new Error(`${handler.name || 'a handler'}: a response did not end within the event-loop turn it was handled in`);
    // A 404 or 500 costs something else than the hello-world: its figures would not be of it.
    // A response left partly buffered ends through a 'finish' listener: not how a small
    // response on a real server ends, so not what the figures are to be of.
    if (ress[c].outputSize !== 0) throw new Error(`${handler.name || 'a handler'}: a response kept ${ress[c].outputSize} bytes buffered after end()`);
    if (ress[c].statusCode !== 200) throw new Error(`${handler.name || 'a handler'}: a response had status ${ress[c].statusCode}, not 200`);
  }
}
