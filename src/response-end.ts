// When a tracked HTTP request ends, without a listener on every response.
//
// A 'close' listener per response (and Fastify's onResponse hook, which adds 'finish' and 'error'
// listeners per response) cost a Fastify hello-world about 1 µs of CPU per request on our test
// VM, 5% of the whole request. A request ends when its response's end() has handed the
// response to the connection: jouletrace wraps ServerResponse.prototype.end once per process
// (from a tracker's construction, until trackers are closed and their requests done), and the
// wrapper finds the request through its connection. Node's 'http.server.response.finish' diagnostics channel, used before,
// cost Node's own finish path about 250 instructions a request once anything subscribed (it
// builds and publishes a message, and V8 stops inlining the rest), against about 30 for the
// wrapper's call. A response that end() leaves partly buffered (a large body the socket has not
// taken yet, or a pipelined response queued behind an earlier one) ends at its 'finish' event
// instead, from a listener added then, so that the writing still counts. A response that never
// finishes because its connection closed first is caught by one 'close' listener per connection
// (kept-alive connections carry many requests). A request of Node's 'upgrade' event ends at the
// first write on its socket instead (see watchUpgrade).
//
// A request's accounting may also end before its response does: endEarly() (the public
// endRequestAccounting()), and a response whose headers say `Content-Type: text/event-stream`
// at its first write() (see noteWrite). A server-sent-event stream, like a long poll or a slow
// download, is a request in flight for as long as it is open: in shared mode each takes an
// equal share of the thread's energy from the requests beside it (20 idle streams left 100
// sequential 5 ms requests charged 0.26 ms of CPU each), energy it never spent.
//
// Only requests on real sockets of Node's own HTTP/1 server (and HTTPS's) are found so. Anything
// else (HTTP/2's compatibility API, light-my-request as used by Fastify's inject(), serverless
// adapters with a fake socket) gets 'finish' and 'close' listeners on its response, as before.
import * as http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import * as net from 'node:net';
import { invalidType } from './errors';

// Held in constants: compiled to CommonJS, a named import is read from the module's exports at
// every use, and `instanceof` on such a read cost 70 instructions a request (callgrind).
const IncomingMessageClass = http.IncomingMessage;
const SocketClass = net.Socket;

// Status recorded for a request whose client closed the connection before any response (nginx's).
const CLIENT_CLOSED = 499;
// Status recorded for a request whose connection the server closed before any response: it did
// not answer (a destroy(), with an error or none; a timeout that destroyed the connection).
const SERVER_CLOSED = 500;

type End = (token: unknown, statusCode: number) => void;

/**
 * Added to the status an end callback is given for a request whose accounting ended before its
 * response did (endEarly(), an event stream's first write): the tracker's records say so. Above
 * any HTTP status, so that the common end passes one number, as before.
 */
export const ENDED_EARLY = 1 << 16;

// The status of a request whose accounting ends before its response: the one the response
// holds now (a number: one set as a string by hand is not yet made one by writeHead()).
function earlyStatus(res: ServerResponse): number {
  return ENDED_EARLY + ((Number(res.statusCode) | 0) & (ENDED_EARLY - 1));
}

interface Entry {
  req: IncomingMessage;
  res: ServerResponse;
  token: unknown;
  end: End;
}

// What one connection has in flight, for every watcher in the process: nearly always one request
// (kept in fields, so the common case allocates nothing per request); HTTP/1.1 pipelining, or one
// request tracked by two trackers, queue more. A request is held by its response (its request is
// `res.req`): each young object stored into this long-lived one costs the garbage collector's
// write barrier its slow path (callgrind: about 35 instructions each), so one a request. The
// response stays in `res` after it ended, `open` false, until the next request on the connection
// is tracked: that is how a request tracked again after its response ended (after an await)
// counts once, with no second store.
class ConnectionRequests {
  // The request in flight while open; else the last one that ended, and the end callback it
  // ended for. Not a mark on the request: a property added to every IncomingMessage costs a map
  // transition, and more ends of it (pipelining, a second tracker) are rare enough for that. The
  // price: an idle kept-alive connection holds its last request (and what the app hung on it)
  // until the next one is tracked or the connection closes, and a request tracked again after
  // that counts twice.
  res: ServerResponse | null = null;
  token: unknown = undefined;
  end: End | null = null;
  open = false;
  more: Entry[] | null = null;
  // Whether a request was marked on itself (noteWatched) while this connection was live: only
  // then does watchedFor() look for the mark, a lookup of a property that is nearly always absent.
  marked = false;
  // The response whose end() the wrapper saw and left waiting for its 'finish' (see responseEnded).
  awaiting: ServerResponse | null = null;
  // The response whose first write() the write wrapper looked at, in flight then (see noteWrite).
  // Not cleared at its end, which every request passes through: a kept-alive connection may
  // hold a streamed response, beside its last one, until its next streamed one or its close.
  written: ServerResponse | null = null;
}

const KEY = Symbol('jouletrace.requestsInFlight');
export type { ConnectionRequests };
type TaggedSocket = net.Socket & { [KEY]?: ConnectionRequests };

// On a request: the end callbacks it was watched for, once no live connection's entry holds it
// (on a fake socket or a closed connection, or ended where the connection's entry has no room),
// so that a request tracked again by the same tracker still counts once. One callback is kept
// as it is: no allocation per request.
const WATCHED = Symbol('jouletrace.watchedFor');
type TaggedRequest = IncomingMessage & { [WATCHED]?: End | End[] };
// Node's server sets `upgrade` on every request it parses (true for one it emits as 'upgrade');
// Node's types leave it out.
type UpgradeRequest = IncomingMessage & { upgrade?: boolean | null };

// As noteWatched(), for a request on connection c, which is live: its watchedFor() looks for marks now.
function noteWatchedOn(c: ConnectionRequests, req: IncomingMessage, end: End): void {
  c.marked = true;
  noteWatched(req, end);
}

function noteWatched(req: IncomingMessage, end: End): void {
  const r = req as TaggedRequest;
  const w = r[WATCHED];
  if (w === undefined) r[WATCHED] = end;
  else if (typeof w === 'function') r[WATCHED] = [w, end];
  else w.push(end);
}

function noted(req: IncomingMessage, end: End): boolean {
  const w = (req as TaggedRequest)[WATCHED];
  return w !== undefined && (w === end || (typeof w !== 'function' && w.includes(end)));
}

// The wrapper is in place while a tracker is open (from its construction), or requests it
// watched are in flight (a tracker closed with requests in flight still sees them end, and frees
// their span slots). Not per request: the same with Node's finish channel, subscribed and
// unsubscribed each time the server drained, doubled the CPU per request of a Fastify hello-world.
let users = 0;
let watched = 0;

function ended(): void {
  if (--watched === 0 && users === 0) unwrapIdle();
}

type EndMethod = (this: ServerResponse, chunk?: unknown, encoding?: unknown, callback?: unknown) => ServerResponse;
type ResponseProto = { end: EndMethod };
const responseProto = http.ServerResponse.prototype as unknown as ResponseProto;
const outgoingProto = http.OutgoingMessage.prototype as unknown as ResponseProto;
// The wrapper jouletrace put on the prototype last: what end() was when it went in (Node's, or
// another tool's wrapper of it), and whether that was the prototype's own property (to put
// back) or OutgoingMessage's, inherited (to delete). Each wrapper calls its own inner end(), so
// that one left beneath another tool's and one put on top later never call each other in a loop.
interface Wrapper {
  readonly fn: EndMethod;
  readonly inner: EndMethod;
  readonly own: boolean;
}
let top: Wrapper | null = null;

// inner: the prototype's own end() it replaced; null where end() was OutgoingMessage's,
// inherited, which is looked up at each call: a tool that patches it later is not skipped.
function makeWrapper(inner: EndMethod | null): EndMethod {
  // The arguments passed on as they came: Node's end() tells end(cb) from end(data, cb) by type,
  // and an undefined in place of an absent argument reads the same.
  return function endAndNote(this: ServerResponse, chunk?: unknown, encoding?: unknown, callback?: unknown): ServerResponse {
    try {
      return (inner ?? outgoingProto.end).call(this, chunk, encoding, callback);
    } finally {
      // Also where end() threw (a 'prefinish' listener's error): what it left is looked at.
      // A response of a connection none of our requests used, nearly always, costs three loads.
      const c = (this.req?.socket as TaggedSocket | null | undefined)?.[KEY];
      if (c !== undefined) {
        try {
          responseEnded(c, this);
        } catch {
          /* nothing may throw out of a response's end() */
        }
      }
    }
  };
}

function wrapEnd(): void {
  const inner = responseProto.end;
  const own = Object.prototype.hasOwnProperty.call(responseProto, 'end');
  top = { fn: makeWrapper(own ? inner : null), inner, own };
  responseProto.end = top.fn;
}

// write(), wrapped beside end() for event streams (noteWrite). A response that answers with one
// end(), nearly every one, never calls it; a streamed one pays three loads a write, and the
// first write of a tracked one a look at its headers.
type WriteMethod = EndMethod;
type WriteProto = { write: WriteMethod };
let topWrite: { readonly fn: WriteMethod; readonly inner: WriteMethod; readonly own: boolean } | null = null;

function makeWriteWrapper(inner: WriteMethod | null): WriteMethod {
  return function writeAndNote(this: ServerResponse, chunk?: unknown, encoding?: unknown, callback?: unknown): ServerResponse {
    try {
      return (inner ?? (outgoingProto as unknown as WriteProto).write).call(this, chunk, encoding, callback);
    } finally {
      const c = (this.req?.socket as TaggedSocket | null | undefined)?.[KEY];
      if (c !== undefined && c.written !== this && (c.open || c.more !== null)) {
        try {
          noteWrite(c, this);
        } catch {
          /* nothing may throw out of a response's write() */
        }
      }
    }
  } as unknown as WriteMethod;
}

function wrapWrite(): void {
  const proto = responseProto as unknown as WriteProto;
  const inner = proto.write;
  const own = Object.prototype.hasOwnProperty.call(proto, 'write');
  topWrite = { fn: makeWriteWrapper(own ? inner : null), inner, own };
  proto.write = topWrite.fn;
}

// Put back only while ours is the prototype's end(): a tool that wrapped it after us holds ours,
// and keeps it (it stays in place, passing through, until a tracker needs it again). The same
// for write().
function unwrapIdle(): void {
  const proto = responseProto as unknown as WriteProto;
  if (topWrite !== null && proto.write === topWrite.fn) {
    if (topWrite.own) proto.write = topWrite.inner;
    else delete (proto as Partial<WriteProto>).write;
    topWrite = null;
  }
  if (top === null || responseProto.end !== top.fn) return;
  if (top.own) responseProto.end = top.inner;
  else delete (responseProto as Partial<ResponseProto>).end;
  top = null;
}

// The header block of a response that says it is a server-sent-event stream.
const EVENT_STREAM = /\r\ncontent-type:[ \t]*text\/event-stream\b/i;

// The first write() of a response in flight on connection c (its headers stored by then): an
// event stream's accounting ends here, as a WebSocket handshake's does at its first write. Its
// status is the one sent; the stream's life after it is no request's. The response is noted,
// so that its later writes cost three loads and a comparison.
function noteWrite(c: ConnectionRequests, res: ServerResponse): void {
  if (!(c.open && c.res === res) && !queued(c, res)) return; // not tracked, or ended already
  c.written = res;
  const header = (res as ServerResponse & { _header?: unknown })._header;
  if (typeof header === 'string' && EVENT_STREAM.test(header)) finished(c, res, ENDED_EARLY);
}

/** @internal Whether ServerResponse.prototype.end is jouletrace's wrapper now (tests). */
export function endWrapped(): boolean {
  return top !== null && responseProto.end === top.fn;
}

/** A tracker that will watch requests; pair with releaseResponseWatch() when it closes. */
export function retainResponseWatch(): void {
  users++;
  // At once, not at the first request: code that keeps a response's end() for later (OpenTelemetry's
  // http instrumentation, compression, express-session) must keep the wrapper.
  if (top === null) wrapEnd();
  // Also where another tool's wrapper is on top: one that wrapped write() under ours and later
  // put Node's back took ours off with it, and event streams stayed in flight for good (end()
  // has its missed-end repair; write() has no such sign). Ours twice in one chain costs a load:
  // the second finds the response noted.
  if (topWrite === null || (responseProto as unknown as WriteProto).write !== topWrite.fn) wrapWrite();
}

export function releaseResponseWatch(): void {
  if (--users === 0 && watched === 0) unwrapIdle();
}

function callEnd(end: End, token: unknown, status: number): void {
  try {
    end(token, status);
  } catch {
    /* nothing may throw into Node's HTTP server */
  }
}

// Status of a request whose connection closed before its response finished: what the server had
// already sent (a server that failed mid-response, or a client that left mid-body), else who
// closed it (closedBy). A pipelined response waiting behind an earlier one never had the socket:
// its headers were built, not sent, and Node's own answer below is not for it either. Node's
// server answers for the handler when a request took longer than `requestTimeout` to arrive,
// or its connection carried what the HTTP parser refused: unless a 'clientError' listener takes
// over, it writes the status below on the socket and closes it.
function closedStatus(res: ServerResponse, socket?: net.Socket | null): number {
  if (res.socket === null) return closedBy(socket, res.req);
  // Written to the socket, as Node's server tests it. headersSent is true as soon as writeHead()
  // has built them, and then Node still answers with its own status.
  if ((res as ServerResponse & { _headerSent?: boolean })._headerSent ?? res.headersSent) return res.statusCode;
  // Otherwise Node's answer, else (headers built, not written, and the connection gone: the
  // server destroyed it, or the client left) the status the handler chose.
  return nodesAnswer(socket) ?? (res.headersSent ? res.statusCode : closedBy(socket, res.req));
}

type Closed = { errored?: unknown; readableEnded?: boolean; writableFinished?: boolean };

// Who closed a connection that cut off a request's response before it started, told by the
// socket at its close: 499 where the client did (its FIN, read to the end; an error of the
// connection itself), 500 where the server did (destroy() with no error, or with one of its
// own). A connection the server closed while the request was still arriving (a 'clientError'
// listener's destroy() of a client too slow) cut off the client's request, not an answer: 499.
// A socket that is no stream (an adapter's fake) does not say: 499. Nor does one the server
// ended with end() before answering: its FIN has the client end too, and at the close the socket
// is in the same state as where the client ended first (Node's server ends its side then): 499.
// Which side ended first shows only at the socket's 'end' event, and a listener there would cost
// every new connection about 100 ns.
function closedBy(socket: Closed | null | undefined, req: IncomingMessage | undefined): number {
  if (socket === null || socket === undefined || typeof socket.readableEnded !== 'boolean') return CLIENT_CLOSED;
  return erroredBy(socket) ?? (socket.readableEnded || req?.complete === false ? CLIENT_CLOSED : SERVER_CLOSED);
}

// HTTP/2: a stream reset by either side (the client's cancel or dropped connection, the server's
// stream.close()) had its writable side ended by Node before it closed; one the server destroyed
// (destroy() or res.destroy(), its session destroyed, its timeout) did not. An RST_STREAM does not
// say who sent it: a server's stream.close() counts as the client's.
function streamClosedBy(stream: Closed): number {
  return erroredBy(stream) ?? (stream.writableFinished === true ? CLIENT_CLOSED : SERVER_CLOSED);
}

// Who closed a socket or stream that was destroyed with an error, undefined where none: the
// client for an error of the connection, not of the server's making (clientsError), else the
// server.
function erroredBy(closed: Closed): number | undefined {
  const err = closed.errored;
  if (err === null || err === undefined) return undefined;
  return clientsError(err) ? CLIENT_CLOSED : SERVER_CLOSED;
}

// An error of the connection, not of the server's making: the system's (a reset, a broken pipe,
// a dead peer: libuv's errors name the call that failed), what the HTTP parser refused or a
// request too slow to arrive (where a 'clientError' listener took Node's answer over), TLS
// records that failed, an HTTP/2 stream reset with an error code (by either side).
function clientsError(err: unknown): boolean {
  const e = err as { code?: unknown; syscall?: unknown };
  if (typeof e.syscall === 'string') return true;
  const code = e.code;
  return typeof code === 'string' && (code.startsWith('HPE_') || code.startsWith('ERR_SSL_') || code === 'ERR_HTTP_REQUEST_TIMEOUT' || code === 'ERR_HTTP2_STREAM_ERROR');
}

// What Node's server writes for the error it closed a connection on (socketOnError); any other
// HPE_ code of the parser gets 400. HPE_INVALID_EOF_STATE is not there: the client closed its
// side mid-request (an upload abandoned), and Node's 400 goes to a connection nobody reads.
const NODE_ANSWERS: Readonly<Record<string, number>> = { ERR_HTTP_REQUEST_TIMEOUT: 408, HPE_HEADER_OVERFLOW: 431, HPE_CHUNK_EXTENSIONS_OVERFLOW: 413 };

// The status Node's server wrote on a socket it closed for an error, unless a 'clientError'
// listener took over.
function nodesAnswer(socket: net.Socket | null | undefined): number | undefined {
  const code = (socket?.errored as { code?: unknown } | null | undefined)?.code;
  if (typeof code !== 'string' || code === 'HPE_INVALID_EOF_STATE') return undefined;
  const status = NODE_ANSWERS[code] ?? (code.startsWith('HPE_') ? 400 : undefined);
  const server = (socket as net.Socket & { server?: { listenerCount(event: string): number } }).server;
  return status !== undefined && server !== undefined && server.listenerCount('clientError') === 0 ? status : undefined;
}

// A response whose end() returned. Handed whole to its connection (the common case) its request
// ends now; else at its 'finish', which a listener waits for (rare: see the top of this file).
function responseEnded(c: ConnectionRequests, res: ServerResponse): void {
  if (!res.writableEnded || c.awaiting === res) return; // end() threw early, or seen already
  if (!(c.open && c.res === res) && !queued(c, res)) return; // not tracked, or ended already
  if (handedOver(res)) finished(c, res, 0);
  else {
    c.awaiting = res;
    res.once('finish', () => finished(c, res, 0));
  }
}

// Whether an ended response is with its connection: nothing left in its own buffer (a pipelined
// response waiting for the socket keeps its output there), and no more in the socket's than its
// high-water mark. A TLS socket holds a small response's bytes until it has encrypted them, so
// writableFinished, false there, would send every HTTPS response the 'finish' way; a large
// body under backpressure is over the mark.
function handedOver(res: ServerResponse): boolean {
  if ((res as ServerResponse & { outputSize: number }).outputSize !== 0) return false;
  const s = res.socket;
  return s === null || s.writableLength <= s.writableHighWaterMark;
}

function queued(c: ConnectionRequests, res: ServerResponse): boolean {
  if (c.more === null) return false;
  for (const e of c.more) if (e.res === res) return true;
  return false;
}

// res has finished: its requests on connection c end (none if the connection's close ended them).
// early: ENDED_EARLY where their accounting ends before res does (endEarly(), noteWrite()), else 0.
function finished(c: ConnectionRequests, res: ServerResponse, early: number): void {
  if (c.awaiting === res) c.awaiting = null;
  const status = early === 0 ? res.statusCode : earlyStatus(res);
  // A loop: the same request may be watched by several trackers, or tracked twice.
  while (c.open && c.res === res) {
    const end = c.end!;
    const token = c.token;
    const next = c.more === null ? undefined : c.more.shift();
    if (next === undefined) {
      // res and end stay, as the connection's last request that ended.
      c.open = false;
      c.token = undefined;
    } else {
      // Replaced in the fields by the next: found again by a mark on its request (rare).
      noteWatchedOn(c, res.req, end);
      c.res = next.res;
      c.token = next.token;
      c.end = next.end;
    }
    ended();
    callEnd(end, token, status);
  }
  if (c.more === null || c.more.length === 0) return;
  const rest: Entry[] = [];
  for (const e of c.more) {
    if (e.res !== res) rest.push(e);
    else {
      ended();
      noteWatchedOn(c, e.req, e.end);
      callEnd(e.end, e.token, status);
    }
  }
  c.more = rest;
}

// A request that ended without passing through the fields (tracked once its response had
// ended): kept as the connection's last, where nothing is in flight there and the last is not
// this response already (a second tracker's end, marked on its request instead).
function noteDone(c: ConnectionRequests, res: ServerResponse, end: End): void {
  if (c.open || c.res === res) {
    noteWatchedOn(c, res.req, end);
    return;
  }
  c.res = res;
  c.token = undefined;
  c.end = end;
}

function onConnectionClose(this: TaggedSocket): void {
  const c = this[KEY];
  if (c === undefined) return;
  this[KEY] = undefined;
  const open: Entry[] = c.more ?? [];
  if (c.open) open.unshift({ req: c.res!.req, res: c.res!, token: c.token, end: c.end! });
  else if (c.res !== null) noteWatched(c.res.req, c.end!);
  // Emptied: a response waiting for its 'finish' (see responseEnded) finds nothing left to end.
  c.res = null;
  c.token = undefined;
  c.end = null;
  c.open = false;
  c.more = null;
  c.awaiting = null;
  c.written = null;
  for (const e of open) {
    ended();
    noteWatched(e.req, e.end);
    // Sent whole, its end() unseen (called through an end() kept from before the wrapper): the
    // status it was sent with.
    callEnd(e.end, e.token, e.res.writableFinished ? e.res.statusCode : closedStatus(e.res, this));
  }
}

/**
 * The entry of req's connection, for watchedFor() and watchResponse(): undefined where its socket
 * is not a real one, or none of its requests was tracked yet. Looked up once by a caller of both
 * (a property of a property, with map checks, each time).
 */
export function connectionOf(req: IncomingMessage): ConnectionRequests | undefined {
  return (req.socket as TaggedSocket | null)?.[KEY];
}

/** Whether watchResponse() already watches req for this end callback (req tracked again); c: connectionOf(req). */
export function watchedFor(c: ConnectionRequests | undefined, req: IncomingMessage, end: End): boolean {
  // A kept-alive connection's next request, nearly always: nothing in flight on it, and the last
  // request that ended there another. Small, for V8 to inline into track() beside the rest.
  if (c !== undefined && !c.open && c.more === null && !c.marked && (c.res === null || c.res.req !== req)) return false;
  return watchedForOther(req, end, c);
}

function watchedForOther(req: IncomingMessage, end: End, c: ConnectionRequests | undefined): boolean {
  // An entry is a live connection's (a closed one's is cleared), holding its requests in flight
  // and the last one that ended.
  if (c === undefined) return noted(req, end);
  if (c.res !== null && c.end === end && c.res.req === req) return true; // in flight, or the last ended
  if (c.more !== null) for (const e of c.more) if (e.req === req && e.end === end) return true;
  return c.marked && noted(req, end);
}

// A connection's entry, made at its first tracked request; undefined for a socket destroyed
// before: tagged, a connection's 'close' is still to come (the tag goes then), even where the
// socket is destroyed already; untagged and destroyed, the client left before the request was
// handled, and its close may have been and gone.
function tagConnection(socket: TaggedSocket): ConnectionRequests | undefined {
  if (socket.destroyed) return undefined;
  const c = new ConnectionRequests();
  socket[KEY] = c;
  // First among the socket's 'close' listeners: Node's server, whose own run before a listener
  // added now, emits the request's 'aborted' and the response's 'close' from them, and a response
  // that an app's listener of those ends then (its bytes dropped on the closed socket) was
  // recorded with its status, 200, rather than as a client that left (499), as on the
  // connection's later requests.
  socket.prependListener('close', onConnectionClose);
  return c;
}

/**
 * Calls end(token, statusCode) once when the response to req has ended (its end() handed it to
 * the connection whole, else at its 'finish'), or when its connection closes first (499 or 500 as
 * the client or the server closed it, or the status already sent). c: connectionOf(req), looked
 * up any time before: an entry stays its connection's until the connection's 'close' event
 * (never synchronous), and undefined is looked up again.
 */
export function watchResponse(c: ConnectionRequests | undefined, req: IncomingMessage, res: ServerResponse, token: unknown, end: End): void {
  // The common case, small for V8 to inline into track(): a connection of ours (tagged only
  // where it is a real socket) with nothing in flight, and the response Node made for req, still
  // to end, not an upgrade (see watchUpgrade). (The wrapper of end() is in place: the open tracker
  // calling this holds it.) The last request that ended there, in the fields, is forgotten now.
  if (c !== undefined && !c.open && res.req === req && !res.writableEnded && (req as UpgradeRequest).upgrade !== true) {
    watched++;
    c.res = res;
    c.token = token;
    c.end = end;
    c.open = true;
    return;
  }
  watchResponseOther(req, res, token, end);
}

function watchResponseOther(req: IncomingMessage, res: ServerResponse, token: unknown, end: End): void {
  const socket = req.socket as TaggedSocket | null;
  // A connection's entry finds a request again by its response (res.req): a response that does
  // not name this request (a wrapper's) is watched with listeners too.
  if (!(req instanceof IncomingMessageClass) || !(socket instanceof SocketClass) || res.req !== req) {
    // Checked here, before the request is marked: what is none of the two leads nowhere else.
    checkTracked(req, res);
    const c = socket?.[KEY];
    if (c !== undefined) noteWatchedOn(c, req, end);
    else noteWatched(req, end);
    watchWithListeners(req, res, token, end);
    return;
  }
  if ((req as UpgradeRequest).upgrade === true) {
    watchUpgrade(req, res, socket, token, end);
    return;
  }
  const c = socket[KEY] ?? tagConnection(socket);
  if (res.writableEnded) {
    // Tracked once its response had ended (after an await): its end() has been and gone;
    // waiting for the connection's close would record it as 499, whenever that comes.
    if (c !== undefined) noteDone(c, res, end);
    else noteWatched(req, end);
    callEnd(end, token, res.statusCode);
    return;
  }
  if (c === undefined) {
    noteWatched(req, end);
    callEnd(end, token, closedStatus(res, socket));
    return;
  }
  // A response before this one on the connection that finished without the wrapper seeing its
  // end() (a library that kept Node's own end() from before the wrapper, and calls it): it ends
  // now, rather than every later request of a kept-alive connection queueing until it closes.
  // Where our wrapper is no longer the prototype's end() (another tool's replaced it, perhaps
  // dropping ours), one goes on top again: two of ours in a chain end a request once.
  let missed = false;
  while (c.open && c.res!.writableFinished) {
    if (c.res !== c.awaiting) missed = true; // one seen, its 'finish' not yet emitted, is not
    finished(c, c.res!, 0);
  }
  if (missed && responseProto.end !== top?.fn) wrapEnd();
  watched++;
  if (!c.open) {
    c.res = res;
    c.token = token;
    c.end = end;
    c.open = true;
  } else {
    (c.more ??= []).push({ req, res, token, end });
  }
}

// Status of an upgrade whose socket was taken over without an HTTP status line written first.
const SWITCHED = 101;
const STATUS_LINE = /^HTTP\/\d(?:\.\d)? (\d{3})/;

// A request that came by Node's 'upgrade' event (req.upgrade): a WebSocket handshake, which
// @fastify/websocket routes through Fastify's hooks (a response made for it, on its socket) and
// express-ws through Express's app (a response on no socket, once the handshake is answered).
// Its response never ends: the WebSocket library answers on the socket itself, which is then
// the WebSocket's, and its close may come hours later: held in flight until then, each open
// WebSocket would take a share of every request's energy. It is the handshake: it ends at the first
// write on its socket (after that write), with the status of the status line written (101 for
// a handshake accepted, a refusal's own, whether the library or the response wrote it; 101 for
// anything else written, the socket taken over); with a response on no socket, at the latest
// once the current turn of the event loop is done, as 101; or at the socket's close before
// either. Its socket's write() and end() are wrapped until then, on that socket alone: not on
// the common path, where one property of the request tells an upgrade (see watchResponse).
function watchUpgrade(req: IncomingMessage, res: ServerResponse, socket: TaggedSocket, token: unknown, end: End): void {
  const c = socket[KEY];
  if (c !== undefined) noteWatchedOn(c, req, end);
  else noteWatched(req, end);
  if (res.writableEnded || socket.destroyed) {
    callEnd(end, token, res.writableEnded ? res.statusCode : closedStatus(res, socket));
    return;
  }
  let done = false;
  const finish = (status: number) => {
    if (done) return;
    done = true;
    unhook();
    socket.removeListener('close', onClose);
    callEnd(end, token, status);
  };
  const onClose = () => finish(closedStatus(res, socket));
  const unhook = afterFirstWrite(socket, (chunk) => {
    const status = statusWritten(chunk);
    if (status !== undefined) finish(status);
  });
  socket.once('close', onClose);
  endableEarly(req, res, () => !done && (finish(earlyStatus(res)), true));
  if (res.socket === null) setImmediate(() => finish(SWITCHED));
}

// The status of the status line a socket's first write carries, SWITCHED for other bytes, and
// undefined for no bytes (end() without data, or with a callback alone).
function statusWritten(chunk: unknown): number | undefined {
  let head: string;
  if (typeof chunk === 'string') head = chunk.slice(0, 16);
  else if (ArrayBuffer.isView(chunk)) head = Buffer.from(chunk.buffer, chunk.byteOffset, Math.min(chunk.byteLength, 16)).toString('latin1');
  else return undefined;
  if (head.length === 0) return undefined;
  const m = STATUS_LINE.exec(head);
  return m === null ? SWITCHED : Number(m[1]);
}

type SocketWrite = (this: net.Socket, chunk?: unknown, ...rest: unknown[]) => unknown;

// One of afterFirstWrite's hooks on a socket: what it replaced, whether that was the socket's own
// property, and whom it tells of writes, null once undone (then it only passes through).
interface SocketHook {
  readonly inner: SocketWrite;
  readonly own: boolean;
  seen: ((chunk: unknown) => void) | null;
}
const socketHooks = new WeakMap<SocketWrite, SocketHook>();

// Calls seen(chunk) after each write() or end() on socket until the function returned is
// called. end() too: ws refuses a handshake with socket.end(status line), which does not go
// through write(). Undone, a hook forgets seen (and what it holds: the request, its response)
// and comes off the socket with every undone hook of ours beneath it, in whatever order they
// were undone (one request tracked by two trackers hooks the socket twice, the second on top of
// the first, and the first finishes first); one that another tool's wrapper put on top of later
// stays, passing straight through.
function afterFirstWrite(socket: net.Socket, seen: (chunk: unknown) => void): () => void {
  const s = socket as unknown as Record<'write' | 'end', SocketWrite>;
  const hooks = (['write', 'end'] as const).map((name) => {
    const h: SocketHook = { inner: s[name], own: Object.prototype.hasOwnProperty.call(s, name), seen };
    const hook: SocketWrite = function (this: net.Socket, chunk?: unknown, ...rest: unknown[]) {
      if (h.seen === null) return h.inner.call(this, chunk, ...rest);
      try {
        return h.inner.call(this, chunk, ...rest);
      } finally {
        h.seen?.(chunk);
      }
    };
    socketHooks.set(hook, h);
    s[name] = hook;
    return { name, h };
  });
  return () => {
    for (const { name, h } of hooks) {
      h.seen = null;
      for (let top = socketHooks.get(s[name]); top !== undefined && top.seen === null; top = socketHooks.get(s[name])) {
        if (top.own) s[name] = top.inner;
        else delete (s as Partial<typeof s>)[name];
      }
    }
  };
}

/**
 * Throws a TypeError naming req or res where either is none: a request is any object (an
 * adapter's fake included), a response one that emits events. Not on the common path: a request of
 * a real connection reads req.socket and res.req, which throw for what is not an object.
 */
export function checkTracked(req: unknown, res: unknown): void {
  if (req === null || typeof req !== 'object') throw invalidType('req', 'a request (an http.IncomingMessage)', req);
  if (res === null || typeof res !== 'object' || typeof (res as { once?: unknown }).once !== 'function') {
    throw invalidType('res', 'a response (an http.ServerResponse, or an object with once())', res);
  }
}

function watchWithListeners(req: IncomingMessage, res: ServerResponse, token: unknown, end: End): void {
  // writableEnded: light-my-request emits 'finish' inside end(), possibly before we were called,
  // and never sets writableFinished. HTTP/2's compatibility API emits 'finish' for a stream the
  // client reset too, with writableFinished true and writableEnded false.
  if (res.writableFinished || res.writableEnded) {
    callEnd(end, token, finishedStatus(res));
    return;
  }
  let done = false;
  const once = (status: number) => {
    if (done) return;
    done = true;
    callEnd(end, token, status);
  };
  res.once('finish', () => once(finishedStatus(res)));
  res.once('close', () => once(cutOffStatus(res)));
  endableEarly(req, res, () => !done && (once(earlyStatus(res)), true));
}

// The early ends of requests watched otherwise than through their connection's entry (listeners,
// upgrades), by request and by response: each returns whether it ended the request now.
const earlyEnds = new WeakMap<object, Array<() => boolean>>();

function endableEarly(req: IncomingMessage, res: ServerResponse, endNow: () => boolean): void {
  for (const key of [req, res]) {
    const list = earlyEnds.get(key);
    if (list === undefined) earlyEnds.set(key, [endNow]);
    else list.push(endNow);
  }
}

/**
 * Ends now the accounting of a request (given as itself, or as its response) for every tracker
 * watching it, as its response's end would, with the status the response holds now plus
 * ENDED_EARLY; the response's real end then ends nothing more. Returns whether any tracker was
 * still accounting it.
 */
export function endEarly(req: IncomingMessage | undefined, res: ServerResponse | undefined): boolean {
  let ended = false;
  const r = req ?? res?.req;
  const c = r === undefined || r === null ? undefined : connectionOf(r);
  if (c !== undefined) {
    let found: ServerResponse | undefined;
    if (c.open && (c.res === res || c.res!.req === r)) found = c.res!;
    else if (c.more !== null) found = c.more.find((e) => e.res === res || e.req === r)?.res;
    if (found !== undefined) {
      finished(c, found, ENDED_EARLY);
      ended = true;
    }
  }
  for (const key of [req, res]) {
    if (key === undefined || key === null) continue;
    const list = earlyEnds.get(key);
    if (list === undefined) continue;
    earlyEnds.delete(key);
    for (const endNow of list) if (endNow()) ended = true;
  }
  return ended;
}

// An HTTP/2 response that finished without end() is a stream reset or destroyed: cut off.
// (Adapters' responses may emit 'finish' by hand, and keep their status.)
function finishedStatus(res: ServerResponse): number {
  return res.writableEnded || (res as ServerResponse & { stream?: unknown }).stream === undefined ? res.statusCode : cutOffStatus(res);
}

// Status of a response watched with listeners that closed before it finished.
function cutOffStatus(res: ServerResponse): number {
  const stream = (res as ServerResponse & { stream?: Closed }).stream;
  if (stream === undefined) return closedStatus(res, res.socket);
  return res.headersSent ? res.statusCode : streamClosedBy(stream);
}
