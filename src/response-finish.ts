// When a tracked HTTP request ends, without a listener on every response.
//
// A 'close' listener per response (and Fastify's onResponse hook, which adds 'finish' and 'error'
// listeners per response) cost a Fastify hello-world about 1 µs of CPU per request on our test
// VM, 5% of the whole request. Node's HTTP server already publishes every finished response on the
// 'http.server.response.finish' diagnostics channel (Node ≥ 16.18): one subscriber per tracker
// sees them all. A response that never finishes because its connection closed first is caught by
// one 'close' listener per connection (kept-alive connections carry many requests), which ends
// whatever that connection still had open as 499 (client closed request).
//
// Only requests from Node's own HTTP/1 server are published there. Anything else (HTTP/2's
// compatibility API, light-my-request as used by Fastify's inject()) gets a 'close' listener on
// its response, as before.
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

const FINISH_CHANNEL = 'http.server.response.finish';
/** Status recorded for a request whose connection closed before its response finished. */
export const CLIENT_CLOSED = 499;

// What one connection has in flight: nearly always one request; HTTP/1.1 pipelining can queue more.
class ConnectionRequests<T> {
  req: IncomingMessage | null = null;
  token: T | undefined = undefined;
  more: Array<{ req: IncomingMessage; token: T }> | null = null;
}

type TaggedSocket<T> = Socket & Record<symbol, ConnectionRequests<T> | undefined>;

interface FinishMessage {
  request: IncomingMessage;
  response: ServerResponse;
  socket: Socket | null;
}

export class ResponseFinish<T> {
  readonly #key = Symbol('jouletrace.requestsInFlight');
  readonly #end: (token: T, statusCode: number) => void;
  readonly #onFinish: (message: unknown) => void;
  readonly #onConnectionClose: (this: Socket) => void;
  #subscribed = false;
  #closed = false;

  /** end(token, statusCode) is called once per watched request: at its finish, or its connection's close. */
  constructor(end: (token: T, statusCode: number) => void) {
    this.#end = end;
    this.#onFinish = (message) => this.#finished(message as FinishMessage);
    const watch = this; // eslint-disable-line @typescript-eslint/no-this-alias
    this.#onConnectionClose = function (this: Socket) {
      watch.#connectionClosed(this as TaggedSocket<T>);
    };
  }

  /** Calls end(token, status) when the response to req finishes, or its connection closes first. */
  watch(req: IncomingMessage, res: ServerResponse, token: T): void {
    const socket = req.socket as TaggedSocket<T> | null;
    if (!(req instanceof IncomingMessage) || !socket) {
      this.#watchResponse(res, token);
      return;
    }
    if (socket.destroyed) {
      // The client left before the request was even handled: its close has been and gone.
      this.#end(token, CLIENT_CLOSED);
      return;
    }
    if (!this.#subscribed) {
      subscribe(FINISH_CHANNEL, this.#onFinish);
      this.#subscribed = true;
    }
    let c = socket[this.#key];
    if (c === undefined) {
      c = new ConnectionRequests<T>();
      socket[this.#key] = c;
      socket.on('close', this.#onConnectionClose);
    }
    if (c.req === null) {
      c.req = req;
      c.token = token;
    } else {
      (c.more ??= []).push({ req, token });
    }
  }

  #watchResponse(res: ServerResponse, token: T): void {
    if (res.writableFinished) {
      this.#end(token, res.statusCode);
      return;
    }
    // 'finish' when the response was sent ('close' alone does not say: light-my-request's
    // responses are never writableFinished), 'close' without it when the client left.
    let ended = false;
    const end = (status: number) => {
      if (ended || this.#closed) return;
      ended = true;
      this.#end(token, status);
    };
    res.once('finish', () => end(res.statusCode));
    res.once('close', () => end(CLIENT_CLOSED));
  }

  // A subscriber's exception would be rethrown by diagnostics_channel as an uncaught exception in
  // the server: nothing here may throw.
  #finished(m: FinishMessage): void {
    try {
      const c = (m.socket as TaggedSocket<T> | null)?.[this.#key];
      if (c === undefined) return; // a connection none of our requests used
      let token: T;
      if (c.req === m.request) {
        token = c.token as T;
        const next = c.more?.shift();
        c.req = next ? next.req : null;
        c.token = next ? next.token : undefined;
      } else {
        const i = c.more ? c.more.findIndex((e) => e.req === m.request) : -1;
        if (i < 0) return; // a request we do not track on a connection we do
        token = c.more![i].token;
        c.more!.splice(i, 1);
      }
      this.#end(token, m.response.statusCode);
    } catch {
      /* the request stays open; its connection's close ends it */
    }
  }

  #connectionClosed(socket: TaggedSocket<T>): void {
    const c = socket[this.#key];
    if (c === undefined || this.#closed) return;
    socket[this.#key] = undefined;
    const open: T[] = [];
    if (c.req !== null) open.push(c.token as T);
    if (c.more) for (const e of c.more) open.push(e.token);
    for (const token of open) {
      try {
        this.#end(token, CLIENT_CLOSED);
      } catch {
        /* keep ending the others */
      }
    }
  }

  /** Stops watching: no end() is called after this. Safe twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#subscribed) unsubscribe(FINISH_CHANNEL, this.#onFinish);
    this.#subscribed = false;
  }
}
