// Joules per request. Two models:
//
// 'shared' (default): a request is a shared span on the thread that handles it. Each sampling
//   interval's energy of that thread plus libuv's thread pool is spread evenly over the interval
//   and, at each moment, divided equally among the requests in flight (the pool's, which serves
//   every thread, among those on all of the sampler's threads: charged once). Overlapping
//   requests therefore split the energy spent while they overlapped, and the sum over requests
//   equals the threads' and the pool's energy while any request was in flight. Cheap: two span events per request;
//   the sampler thread adds each to its route's aggregate, and writes its result back only when
//   onRequest listeners want records.
// 'exact': every callback that runs in a request's async context (AsyncLocalStorage) is an
//   exclusive span charged to that request, so interleaved requests are charged exactly for the
//   CPU their own callbacks used; thread-pool work is not included. Costs an async_hooks hook
//   on every callback of the process (see the README for the measured overhead).
import { AsyncLocalStorage, createHook, type AsyncHook } from 'node:async_hooks';
import { METHODS, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { Readable } from 'node:stream';
import { isMainThread } from 'node:worker_threads';
import { setResultContext } from './chained-context';
import { checkIntegerInRange, checkKnownKeys, checkObject, checkOneOf, describe, invalidRange, invalidType, JouletraceError } from './errors';
import type { Sampler } from './sampler';
import { ListenerList } from './listeners';
import { native } from './native';
import { checkTracked, connectionOf, endEarly, ENDED_EARLY, releaseResponseWatch, retainResponseWatch, watchedFor, watchResponse } from './response-end';
import { CALLBACK_LABEL, FLAG_AGGREGATED, FLAG_ESTIMATED, FLAG_INCOMPLETE, outsideRequests, ROUTE_SUMMARY_WORDS, slotOfHandle, SPAN_SLOTS, type NumericResultListener, type SpanChannel } from './span-channel';
import { EXACT_REQUEST_TOKEN, OTHER_ROUTE, UNMATCHED_ROUTE, UNROUTED, type RequestRecord, type RouteStats } from './span-types';

export type RequestMode = 'shared' | 'exact';

export interface RequestTrackerOptions {
  /** 'shared' (default) or 'exact' (async_hooks; see README). */
  mode?: RequestMode;
  /**
   * Route of a request when the framework does not say (node:http, or HTTP/2's compatibility
   * API): undefined (no match) counts as '(unmatched)'. Default: '(unrouted)' for every request.
   * A method, so that one written for either kind of request alone is taken too.
   */
  routeOf?(req: IncomingMessage | Http2ServerRequest): string | undefined;
  /** At most this many distinct method+route pairs are aggregated; the rest count as '(other)'. Default 1000. */
  maxRoutes?: number;
}

// An exact-mode request. Shared-mode requests keep no object: their state lives in the
// tracker's per-slot arrays, and their token is the span handle itself.
interface Pending {
  // The tracker that started it: end() takes only its own tracker's (see notOurToken()).
  readonly [EXACT_REQUEST_TOKEN]: RequestTracker;
  method: string;
  route: string | RouteFunction;
  statusCode: number;
  startNs: number;
  endNs: number;
  done: boolean;
  joules: number;
  dynamic: number | null;
  onCpuNs: number;
  estimated: boolean;
  incomplete: boolean;
  endedEarly: boolean;
  openCallbacks: number;
  current: number; // the callback span now running, or -1
  context: unknown;
}

// A route given as a function, called at the request's end: no string (undefined for no match) counts as (unmatched).
type RouteFunction = () => string | undefined;

declare const requestTokenBrand: unique symbol;
/**
 * An in-flight request, from RequestTracker.start() to end(). Opaque: a number in shared mode,
 * an object in exact mode (so not usable as a WeakMap key).
 */
export type RequestToken = (number | object) & { readonly [requestTokenBrand]: true };

// Shared-mode requests in flight, by span slot of the tracker's channel. Arrays rather than an
// object per request: at tens of thousands of requests per second, objects that live until
// settlement (10 ms and more) outlive the young generation and cost the garbage collector more
// than the accounting itself. About 1.6 MiB per shared-mode tracker.
const REQ_NAMING = 0; // its end runs its route function: a result meanwhile is held as if open, an end() is a second
const REQ_OPEN = 1;
const REQ_ENDED = 2; // awaiting its result
const REQ_SETTLED = 3; // its result came before end() (stop() settled it): end() frees the span slot
const REQ_STATE_BITS = 3;
// ids[2 * slot + 1]: state | status << STATUS_SHIFT, where the status is the code, plus
// ENDED_EARLY for a request whose accounting ended before its response (endRequestAccounting()).
const STATUS_SHIFT = 2;
const STATUS_CODE_BITS = ENDED_EARLY - 1;
// Two arrays, each slot's fields side by side, rather than one array per field: a server's caches
// are cold at each request, and every array touched costs a miss or two (see SpanChannel#slots).
class SharedRequests {
  // ids[2 * slot]: the request's span handle (0: none of ours); ids[2 * slot + 1]: state and status.
  readonly ids = new Int32Array(SPAN_SLOTS * 2);
  // names[2 * slot]: its method; names[2 * slot + 1]: its route, or a function that gives it.
  readonly names: Array<string | RouteFunction> = new Array<string | RouteFunction>(SPAN_SLOTS * 2).fill('');
  context: unknown[] | undefined;
  // Results of requests settled before they ended (REQ_SETTLED), by slot: res[2 ... 7] of
  // NumericResultListener. Rare (stop() with requests in flight), so a Map.
  readonly held = new Map<number, Float64Array>();
}

// A (method, route) pair of the tracker: its id in the channel's route table, where the sampler
// thread aggregates its requests as they settle (native/spans/route_table.h), so that the thread
// serving them does not. `route` is the name it counts under: '(other)' past maxRoutes.
interface RouteEntry {
  readonly id: number;
  readonly method: string;
  readonly route: string;
}

/**
 * Energy per HTTP request, from a running Sampler on the thread that serves the requests.
 *
 * ```ts
 * const tracker = new RequestTracker(sampler);
 * http.createServer((req, res) => { trackRequest(tracker, req, res, '/hello'); res.end('hi'); });
 * tracker.onRequest((records) => console.log(records));
 * ```
 */
export class RequestTracker {
  // What track() and a request's end touch, first and together (see SpanChannel's fields).
  readonly mode: RequestMode;
  readonly #channel: SpanChannel;
  readonly #requests: SharedRequests | undefined; // shared mode only
  #closed = false;
  #capture: (() => unknown) | null = null;
  // The entry #routeEntry() gave last, and the method and route it was asked for; its id, kept
  // here so that the common request does not read the entry.
  #lastMethod: string | undefined;
  #lastRoute: string | undefined;
  #lastEntry: RouteEntry | undefined;
  #lastId = 0;
  // #listeners.size, kept here: the common request reads one field rather than the list.
  #listening = 0;
  // Shared-mode requests whose record is still to come (see the inFlight getter).
  #sharedInFlight = 0;
  readonly #listeners = new ListenerList<RequestRecord[]>();
  readonly #routeOf: RequestTrackerOptions['routeOf'];
  // A response's end, for requests that track() watches: a shared-mode request's token is its
  // span handle, a number; negated for a request begun without a record to come (see track()).
  readonly #endAtResponseEnd = (token: unknown, statusCode: number) =>
    typeof token !== 'number'
      ? this.#endExact(token as Pending, statusCode)
      : token < 0
        ? this.#endUnrecorded(-token)
        : this.#endShared(token, statusCode);

  // The rest.
  readonly #sampler: Sampler;
  readonly #maxRoutes: number;
  readonly #routes = new Map<string, Map<string, RouteEntry>>(); // method → route asked → entry
  readonly #routeList: RouteEntry[] = [];
  #routeCount = 0;
  readonly #shared: NumericResultListener;
  readonly #callback: NumericResultListener;
  #als: AsyncLocalStorage<Pending> | undefined;
  #hook: AsyncHook | undefined;
  // Exact mode: the request each callback span (by span slot) is charged to, and that span's
  // handle. Arrays, as for shared-mode requests: a server runs a dozen callbacks per request.
  #owner: Array<Pending | undefined> | undefined;
  #ownerHandle: Int32Array | undefined;

  /** Calls fn() when each request begins and carries the result as the record's `context`. */
  setContextCapture(fn: (() => unknown) | null): void {
    if (fn !== null && typeof fn !== 'function') {
      throw new TypeError(`Expected a function or null for setContextCapture(fn) but received ${String(fn)} of type ${typeof fn}`);
    }
    this.#capture = fn;
  }

  /** @internal The capture in force (an exporter chains it: see chained-context.ts). */
  contextCapture(): (() => unknown) | null {
    return this.#capture;
  }

  constructor(sampler: Sampler, options: RequestTrackerOptions = {}) {
    if (!isSamplerLike(sampler)) {
      // A worker's channel, by shape (another copy's too: each worker loads its own), or what
      // makes one: the natural thing to try in a worker, and its figures said nothing of why.
      const x = sampler as Record<string, unknown> | null;
      const given =
        x !== null && typeof x === 'object' && typeof x.poll === 'function' && 'sharedListeners' in x
          ? 'a span channel'
          : x !== null && typeof x === 'object' && 'samplerId' in x && 'pid' in x
            ? 'a span context'
            : undefined;
      if (given) {
        throw new TypeError(
          `Expected a Sampler for sampler but received ${given}: a worker's span channel (attachSpans()) carries spans only, ` +
            "and requests in a worker are tracked with a Sampler made in that worker (a run of its own, which counts libuv's thread pool in full)",
        );
      }
      throw new TypeError(`Expected a Sampler for sampler but received ${describe(sampler)}`);
    }
    const opts = checkObject('options', options);
    checkKnownKeys('options', opts, TRACKER_OPTION_KEYS);
    this.#sampler = sampler;
    this.mode = opts.mode === undefined ? 'shared' : checkOneOf('options.mode', opts.mode, ['shared', 'exact'] as const);
    if (opts.routeOf !== undefined && typeof opts.routeOf !== 'function') {
      throw new TypeError(`Expected a function for options.routeOf but received ${String(opts.routeOf)} of type ${typeof opts.routeOf}`);
    }
    this.#routeOf = opts.routeOf as RequestTrackerOptions['routeOf'];
    this.#maxRoutes = opts.maxRoutes === undefined ? 1000 : checkIntegerInRange('options.maxRoutes', opts.maxRoutes, 1, 1_000_000);
    this.#channel = sampler.spanChannel();
    this.#callback = (h, res, o) => this.#onCallback(h, res, o);
    this.#channel.internalListeners.add(this.#callback);
    this.#shared = (h, res, o) => this.#onShared(h, res, o);
    this.#channel.sharedListeners.add(this.#shared);
    this.#channel.startPolling();
    routesOfCollected.register(this, { channel: this.#channel, routes: this.#routeList });
    if (this.mode === 'exact') {
      this.#enableExact();
      // Optional: another copy's Sampler (accepted by its shape) may have a channel from before it.
      this.#channel.closeListeners?.add(this.#onChannelClosed);
    } else {
      this.#requests = new SharedRequests();
      // libuv before 1.50 (Node 20's) does not name its pool's threads: they are found by a job
      // on each (native/spans/pool_threads.h). From the main thread only: Node aborts a worker
      // whose loop still holds such jobs when it exits.
      if (isMainThread) native().findPoolThreads();
    }
    // The process's wrapper of ServerResponse's end(), in place before any request is tracked
    // (last: a constructor that threw would never release it).
    retainResponseWatch();
  }

  #enableExact(): void {
    const als = new AsyncLocalStorage<Pending>();
    this.#als = als;
    this.#owner = new Array<Pending | undefined>(SPAN_SLOTS);
    this.#ownerHandle = new Int32Array(SPAN_SLOTS);
    // Every callback that runs in a request's context becomes a span charged to it. A thread
    // runs one callback at a time, so one span is open at most: it closes at the callback's
    // `after`, or at the next boundary we see (another callback's `before`, another track()).
    // Callbacks nest (runInAsyncScope, AsyncResource.bind, Fastify's body parser): at an inner
    // one's `after`, the request of the callback it ran in goes on being charged.
    const outer: Array<Pending | undefined> = [];
    this.#hook = createHook({
      before: () => {
        outer.push(this.#active);
        this.#closeActive();
        const p = als.getStore();
        if (p && !p.done) this.#openFor(p);
      },
      after: () => {
        this.#closeActive();
        const p = outer.pop();
        if (p && !p.done) this.#openFor(p);
      },
    });
    this.#hook.enable();
    this.#hookOn = true;
  }

  #active: Pending | undefined;

  // The sampler is closed: no request can begin here any more, and the async hook, which costs
  // every callback of the process (an await cost 182 ns with it on, 77 without a tracker, on the
  // 2-vCPU VM), goes once the requests in flight have ended (#maybeEmitExact), as at close().
  readonly #onChannelClosed = (): void => {
    if (this.#exactInFlight === 0) this.#detach();
  };

  /** @internal Whether the exact-mode async hook is enabled (for tests). */
  get hookEnabled(): boolean {
    return this.#hookOn;
  }
  #hookOn = false;

  #openFor(p: Pending): void {
    // Stopped or closed (a closed channel reads not running too): this callback is not measured.
    // Checked here, not left to beginInternal()'s error: an await of a request in flight while
    // the sampler was stopped built and threw one each (25.9 µs per await against 3.7).
    if (!this.#channel.running) {
      p.incomplete = true;
      return;
    }
    try {
      const h = this.#channel.beginInternal(CALLBACK_LABEL);
      if (h === 0) {
        p.incomplete = true; // every span slot taken: this callback is not measured (and counted)
        return;
      }
      p.current = h;
      p.openCallbacks++;
      const slot = slotOfHandle(h);
      this.#owner![slot] = p;
      this.#ownerHandle![slot] = h;
      this.#active = p;
    } catch {
      p.incomplete = true; // stopped from another thread since the check: settles with what it has
    }
  }

  #closeActive(): void {
    const p = this.#active;
    if (!p) return;
    this.#active = undefined;
    const h = p.current;
    p.current = -1;
    if (h === -1) return;
    try {
      this.#channel.endOwn(h);
    } catch {
      /* already settled by stop() */
    }
  }

  /**
   * Starts accounting for a request. It ends when its response has ended (its end() handed it
   * whole to the connection, else at its finish) with its status code, or when the connection
   * closes first (499 where the client closed it, 500 where the server did, or the status already
   * sent); on Node's HTTP/1 server no listener is added to the response in the common case (see
   * response-end.ts). A request of Node's 'upgrade' event (a WebSocket handshake) ends at the
   * first write on its socket, with the status written. `route` is the route pattern, or a
   * function called at the end (frameworks know the route only after routing). In exact mode,
   * `run` is called inside the request's context.
   */
  track(request: IncomingMessage | Http2ServerRequest, response: ServerResponse | Http2ServerResponse, route?: string | (() => string | undefined), run?: () => void): void {
    // HTTP/2's are watched as any request not of Node's HTTP/1 server is (response-end.ts): by
    // their response's events. Typed as HTTP/1's from here on; a cast, nothing at run time.
    const req = request as IncomingMessage;
    const res = response as ServerResponse;
    checkRouteArgument(route);
    const given = route ?? (this.#routeOf !== undefined ? () => this.#routeOf!(req) : UNROUTED);
    // Every request of a server goes through here: the common case (shared mode, nothing to run,
    // no context to capture, an open tracker) is written out, as #start() would do it.
    const r = this.#requests;
    if (r !== undefined && run === undefined && this.#capture === null && !this.#closed) {
      // The request's span once begun. Only a req or res that is none makes what follows throw
      // (reading its properties, or watchResponse() refusing it): no check on the common path.
      let h = 0;
      try {
        const c = connectionOf(req);
        if (watchedFor(c, req, this.#endAtResponseEnd)) return;
        const method = req.method ?? 'GET';
        // A route known now (a framework's pattern) is named by the request's begin event, one
        // known at its end by its end event.
        const id = typeof given === 'string' ? this.#routeId(method, given) : 0;
        h = this.#channel.beginRequest(id);
        if (h <= 0) return; // not running (-1), or every span slot busy (0, counted as dropped)
        if (id !== 0 && this.#listening === 0) {
          // Nearly every request of a server without an exporter: its route is named, and nobody
          // wants its record, now or at its end (a listener added meanwhile gets records of the
          // requests that begin after it). Nothing of it is kept here: its token, the handle
          // negated, ends it silently (#endUnrecorded).
          this.#sharedInFlight++;
          watchResponse(c, req, res, -h, this.#endAtResponseEnd);
          return;
        }
        // The names it counts under: the route asked, or '(other)' past maxRoutes (and its method).
        const entry = typeof given === 'string' ? this.#routeEntry(method, given, true) : undefined;
        this.#opened(r, h, entry === undefined ? method : entry.method, entry === undefined ? given : entry.route, undefined);
        watchResponse(c, req, res, h, this.#endAtResponseEnd);
        return;
      } catch (e) {
        if (h > 0) this.#unwatched(h);
        throw refusal(e, req, res);
      }
    }
    checkRun(run);
    // Watched before run() (exact mode): a response can finish inside it (Fastify's inject()).
    let method: string;
    try {
      method = req.method ?? 'GET';
    } catch (e) {
      throw refusal(e, req, res);
    }
    this.#start(method, given, run, req, res);
  }

  /**
   * For framework hooks: starts a request and returns its token for end(), or undefined when
   * the sampler is not running (nothing is accounted). Prefer track() for node:http.
   */
  start(method: string, route?: string | (() => string | undefined), run?: () => void): RequestToken | undefined {
    if (typeof method !== 'string' || method.length === 0) throw invalidType('method', 'an HTTP method (a non-empty string)', method);
    checkRouteArgument(route);
    checkRun(run);
    return this.#start(method, route, run, undefined, undefined);
  }

  #start(
    method: string,
    route: string | RouteFunction | undefined,
    run: (() => void) | undefined,
    req: IncomingMessage | undefined,
    res: ServerResponse | undefined,
  ): RequestToken | undefined {
    // track() (middleware, plugin, trackRequest) serves the request whatever happened to the
    // tracker or sampler: a server must not answer 500 because its accounting was closed.
    const serving = req !== undefined;
    // Tracked by this tracker already (a middleware mounted twice, or beside instrumentExpress
    // in another app): one request, one record. The run goes on in its context.
    if (this.#closed || (serving && watchedFor(connectionOf(req), req, this.#endAtResponseEnd))) {
      if (!serving) throw new JouletraceError('ERR_JOULETRACE_CLOSED', 'start(): the request tracker is closed; create a new RequestTracker');
      if (run) run();
      return undefined;
    }
    if (this.mode === 'shared') {
      // Before a slot is taken: a capture that throws leaves no span open.
      const context = this.#capture ? this.#capture() : undefined;
      // Without a route, its end may name one (hooks often know it only then): unrouted unless so.
      const named = route ?? unroutedUnlessNamed;
      const entry = typeof named === 'string' ? this.#routeEntry(method, named, true) : undefined;
      let h: number;
      try {
        h = this.#channel.beginShared(entry === undefined ? 0 : entry.id);
      } catch (e) {
        // A direct caller learns of a closed sampler before its run runs, as of a closed tracker:
        // a hook's `catch { next() }` would otherwise run it twice.
        const code = (e as { code?: string }).code;
        if (code !== 'ERR_JOULETRACE_NOT_STARTED' && !(serving && code === 'ERR_JOULETRACE_CLOSED')) throw e;
        if (run) run();
        return undefined;
      }
      // 0: every span slot busy; the channel counts it as a dropped span.
      if (h !== 0) {
        this.#opened(this.#requests!, h, entry === undefined ? method : entry.method, entry === undefined ? named : entry.route, context);
        if (req) {
          try {
            watchResponse(connectionOf(req), req, res!, h, this.#endAtResponseEnd);
          } catch (e) {
            this.#unwatched(h);
            throw refusal(e, req, res);
          }
        }
      }
      if (run) {
        if (serving || h === 0) run();
        else {
          try {
            run();
          } catch (e) {
            // No token reaches the caller: ended here, or it stayed in flight for good.
            this.#endShared(h, 500);
            throw e;
          }
        }
      }
      return h !== 0 ? (h as unknown as RequestToken) : undefined;
    }
    if (!this.#channel.running) {
      // As in shared mode: nothing is accounted while the sampler is stopped, and a direct
      // caller learns that it is closed (before its run runs).
      if (this.#channel.closed) {
        // Closed from another thread (a worker's tracker), unseen by its channel until now.
        if (this.#exactInFlight === 0) this.#detach();
        if (!serving) throw new JouletraceError('ERR_JOULETRACE_CLOSED', 'start(): the sampler is closed; create a new Sampler and RequestTracker');
      }
      if (run) run();
      return undefined;
    }
    const p: Pending = {
      [EXACT_REQUEST_TOKEN]: this,
      method,
      route: route ?? UNROUTED,
      statusCode: 0,
      startNs: 0,
      endNs: 0,
      done: false,
      joules: NaN, // until a callback span is measured: as in shared mode, NaN for none
      dynamic: null,
      onCpuNs: NaN,
      estimated: false,
      incomplete: false,
      endedEarly: false,
      openCallbacks: 0,
      current: -1,
      context: this.#capture ? this.#capture() : undefined,
    };
    p.startNs = Number(process.hrtime.bigint());
    this.#exactInFlight++;
    if (req) {
      try {
        watchResponse(connectionOf(req), req, res!, p, this.#endAtResponseEnd);
      } catch (e) {
        // Nothing of it begun yet: no longer in flight.
        if (--this.#exactInFlight === 0 && this.#closed) this.#detach();
        throw refusal(e, req, res);
      }
    }
    // The synchronous part now running belongs to the request too: run, or without it the rest
    // of the current callback. The request whose callback this is (if any) stops being charged.
    const outer = this.#active;
    this.#closeActive();
    const als = this.#als!;
    // Not for a request that ended as it was watched (tracked once its response had ended).
    if (run) {
      try {
        als.run(p, () => {
          if (!p.done) this.#openFor(p);
          try {
            run();
          } finally {
            if (this.#active === p) this.#closeActive();
          }
        });
      } catch (e) {
        // start()'s caller gets no token to end it with: it ends here, as a failed request. A
        // tracked request ends with its response, which the framework still sends.
        if (!serving) this.#endExact(p, 500);
        throw e;
      } finally {
        // Back in the caller's context (als.run() restores it, firing no async hook): what the
        // callback does next is its request's again, as at a nested callback's `after`.
        this.#closeActive();
        if (outer && !outer.done) this.#openFor(outer);
      }
    } else {
      als.enterWith(p);
      if (!p.done) this.#openFor(p);
    }
    return p as unknown as RequestToken;
  }

  /**
   * Ends a request begun with start(); a second call is ignored. `route`, when given, replaces
   * the one passed to start() (hooks often know the matched route only by now).
   */
  end(token: RequestToken | undefined, statusCode: number, route?: string): void {
    // Checked before the token: a hook's mistake shows on its first request, sampler running or not.
    if (typeof statusCode !== 'number' || !Number.isInteger(statusCode) || statusCode < 100 || statusCode > 999) {
      // As checkIntegerInRange() refuses: a number out of range is a RangeError.
      const refuse = typeof statusCode === 'number' && !Number.isNaN(statusCode) ? invalidRange : invalidType;
      throw refuse('statusCode', 'an HTTP status code (an integer from 100 to 999)', statusCode);
    }
    if (route !== undefined && typeof route !== 'string') throw invalidType('route', 'a route pattern (a string)', route);
    // start() gives undefined while nothing is accounted: hooks may pass it straight back.
    if (token === undefined || token === null) return;
    // A positive integer is a shared-mode tracker's token (a span handle): one not in flight here
    // (ended already, or another shared tracker's, the two indistinguishable) is ignored. Other
    // numbers never were one.
    if (typeof token === 'number' && this.#requests !== undefined && Number.isInteger(token) && token > 0) {
      this.#endShared(token, statusCode, route);
      return;
    }
    if (typeof token === 'object' && (token as Partial<Pending>)[EXACT_REQUEST_TOKEN] === this) {
      this.#endExact(token as unknown as Pending, statusCode, route);
      return;
    }
    throw notOurToken(token, this.mode);
  }

  // An exact-mode request's end. From a response's end, the status is whatever the response held:
  // one that is no HTTP status (an adapter's fake response) is recorded as 0, as in shared mode,
  // where end()'s check would have left the request in flight for good.
  #endExact(p: Pending, statusCode: number, route?: string): void {
    if (p.done) return;
    p.done = true;
    if (statusCode >= ENDED_EARLY) {
      // Its accounting ends before its response: its callbacks from now on are no request's.
      p.endedEarly = true;
      statusCode -= ENDED_EARLY;
    }
    p.statusCode = Number.isInteger(statusCode) && statusCode >= 100 && statusCode <= 999 ? statusCode : 0;
    p.route = routeAtEnd(route, p.route);
    // endNs first: closing the active callback can settle its span on the spot (its begin never
    // reached the sampler), and the record, queued then, must carry the request's end.
    p.endNs = Number(process.hrtime.bigint());
    if (this.#active === p) this.#closeActive();
    this.#maybeEmitExact(p);
  }

  // A shared-mode request's span h has begun: its slot's fields.
  // route: the name it counts under (RouteEntry.route), or a function that gives its route at the end.
  #opened(r: SharedRequests, h: number, method: string, route: string | RouteFunction, context: unknown): void {
    const slot = slotOfHandle(h);
    const i = slot * 2;
    r.ids[i] = h;
    r.ids[i + 1] = REQ_OPEN;
    r.names[i] = method;
    r.names[i + 1] = route;
    if (this.#capture !== null) (r.context ??= new Array<unknown>(SPAN_SLOTS))[slot] = context;
    else if (r.context !== undefined) r.context[slot] = undefined;
    this.#sharedInFlight++;
  }

  // end() of a shared-mode request (its token is its span handle), from end() or, without a route,
  // its response's end. The common case, an open request, first.
  #endShared(h: number, statusCode: number, route?: string): void {
    const r = this.#requests;
    const i = slotOfHandle(h) * 2;
    if (r === undefined || h === 0 || r.ids[i] !== h) return;
    // Nearly every request of a server without an exporter: open, its route named by its begin,
    // and nobody wanting its record. The sampler thread adds it to its route, and no result
    // comes back to this thread (nor is one needed after the sampler stopped: its final step
    // added the requests still open to the routes their begins named). Kept small, for V8 to
    // inline into the finish handler.
    if ((r.ids[i + 1] & REQ_STATE_BITS) === REQ_OPEN && route === undefined && this.#listening === 0 && typeof r.names[i + 1] === 'string') {
      r.ids[i + 1] = REQ_ENDED | (statusCode << STATUS_SHIFT);
      this.#endSilently(r, h, 0);
      return;
    }
    this.#endSharedOther(r, h, statusCode, route);
  }

  // The rest of #endShared(): a route known only now, a listener, a request stop() settled, or a
  // second end.
  #endSharedOther(r: SharedRequests, h: number, statusCode: number, route: string | undefined): void {
    const slot = slotOfHandle(h);
    const i = slot * 2;
    let state = r.ids[i + 1] & REQ_STATE_BITS;
    // The route's id for its end event: 0 where its begin named it already.
    let id = 0;
    if (state === REQ_OPEN && (route !== undefined || typeof r.names[i + 1] === 'function')) {
      // Named before the request counts as ended: a route function that stops or closes the
      // sampler has its final step deliver this request's result, which must not find it ended
      // under the function (its record's route).
      r.ids[i + 1] = REQ_NAMING;
      id = this.#routeAtEnd(r, i, route);
      state = r.ids[i + 1] & REQ_STATE_BITS;
      if (state === REQ_NAMING) state = REQ_OPEN;
      else id = 0; // settled meanwhile: as below, its route is added to here
    }
    if (state === REQ_OPEN) {
      r.ids[i + 1] = REQ_ENDED | (statusCode << STATUS_SHIFT);
      // Silently only while the sampler runs. Its final step settles the requests still open
      // under the route their begin named; one whose route comes only now would be lost if its
      // result, already written, were not read (the tracker adds it to its route then).
      if (this.#listening === 0 && (id === 0 || this.#channel.running)) {
        this.#endSilently(r, h, id);
        return;
      }
    } else if (state === REQ_SETTLED) {
      // stop() settled it (incomplete) while it was open: its record now, with its status and
      // route, and the channel frees its slot.
      r.ids[i + 1] = REQ_ENDED | (statusCode << STATUS_SHIFT);
      const routeId = this.#routeAtEnd(r, i, route);
      const held = r.held.get(slot)!;
      r.held.delete(slot);
      // Its energy was measured up to the stop (incomplete). In routes() its duration runs to the
      // stop too, as for those whose begin named their route (the final step added them then):
      // a route's figures cover what was measured. Its record's runs to its end, as in exact
      // mode. Its start is in the sampler's clock, which hrtime() reads with the offset.
      const flags = held[7];
      if ((flags & FLAG_AGGREGATED) === 0) {
        this.#channel.addToRoute(routeId, held[5], held[3] - held[2], (flags & FLAG_ESTIMATED) !== 0, (flags & FLAG_INCOMPLETE) !== 0);
        held[7] = flags | FLAG_AGGREGATED;
      }
      held[3] = this.#channel.nowNs();
      this.#onShared(h, held, 0);
    } else {
      return; // a second end()
    }
    try {
      this.#channel.endRequest(h, id);
    } catch {
      /* already gone with the channel */
    }
  }

  // An ended request (REQ_ENDED) whose record nobody wants: the sampler thread adds it to its
  // route (id, or the one its begin named: 0), and its slot is free here at once. Where the
  // channel could not end it so (its end event waits for room in the ring, or it was never
  // measured), its result comes as for any other request.
  #endSilently(r: SharedRequests, h: number, id: number): void {
    let silent = false;
    try {
      silent = this.#channel.endRequestSilently(h, id);
    } catch {
      /* already gone with the channel */
    }
    if (!silent) return;
    const slot = slotOfHandle(h);
    r.ids[slot * 2] = 0;
    r.ids[slot * 2 + 1] = 0;
    if (r.context !== undefined) r.context[slot] = undefined;
    if (--this.#sharedInFlight === 0 && this.#closed) this.#detach();
  }

  // A shared-mode request whose response watchResponse() refused (track() throws): it ends at
  // once, no record to come, and is in flight no longer.
  #unwatched(h: number): void {
    const r = this.#requests!;
    const i = slotOfHandle(h) * 2;
    if (r.ids[i] === h) {
      r.ids[i] = 0;
      r.ids[i + 1] = 0;
      if (r.context !== undefined) r.context[slotOfHandle(h)] = undefined;
    }
    this.#endUnrecorded(h);
  }

  // The end of a request that track() began with no record to come, and kept nothing of: the
  // sampler thread adds it to the route its begin named. Where the channel cannot end it
  // silently (its end waits for room in the event ring, stop() settled it while open, or it
  // was never measured), its result comes, finds no request of this tracker in its slot, and
  // frees the slot; aggregated by the sampler thread all the same (not when never measured).
  #endUnrecorded(h: number): void {
    try {
      this.#channel.endRequestSilently(h, 0);
    } catch {
      /* already gone with the channel */
    }
    if (--this.#sharedInFlight === 0 && this.#closed) this.#detach();
  }

  // A request whose route is known only now (given to end(), or a function's): the entry's id,
  // and the name it counts under, for its record.
  #routeAtEnd(r: SharedRequests, i: number, route: string | undefined): number {
    const current = r.names[i + 1];
    const entry = this.#routeEntry(r.names[i] as string, routeAtEnd(route, current));
    // Stored only when they change: a string stored into the array pays V8's write barrier.
    if (entry.route !== current) r.names[i + 1] = entry.route;
    if (entry.method !== r.names[i]) r.names[i] = entry.method;
    return entry.id;
  }

  #batch: RequestRecord[] = [];
  #batchQueued = false;

  // res[o + 2 ... o + 7]: see NumericResultListener.
  #onShared(h: number, res: Float64Array, o: number): void {
    const r = this.#requests;
    const slot = slotOfHandle(h);
    const i = slot * 2;
    if (!r || r.ids[i] !== h) return;
    const word = r.ids[i + 1];
    if ((word & REQ_STATE_BITS) !== REQ_ENDED) {
      // Settled while open (stop() settles what is open): end() is still to come, frees the span
      // slot and, knowing the status and route by then, makes the record from these numbers. Its
      // record is still to come: in flight until then.
      r.ids[i + 1] = REQ_SETTLED;
      r.held.set(slot, res.slice(o, o + 8));
      return;
    }
    this.#sharedInFlight--;
    r.ids[i] = 0;
    r.ids[i + 1] = 0;
    if (this.#closed && this.#sharedInFlight === 0) this.#detach();
    const flags = res[o + 7];
    const context = r.context?.[slot];
    if (context !== undefined) r.context![slot] = undefined;
    // Nearly every request: the sampler thread has added it to its route, and nobody wants its
    // record.
    if ((flags & FLAG_AGGREGATED) !== 0 && this.#listening === 0) return;
    // Read here, not passed on: doubles passed to a call that V8 does not inline are boxed.
    const startNs = res[o + 2];
    const endNs = res[o + 3];
    const onCpuNs = res[o + 4];
    const joules = res[o + 5];
    const dynamic = res[o + 6];
    const method = r.names[i] as string;
    // The route it counts under: its end made it a name (#routeAtEnd), if it was a function.
    const route = r.names[i + 1] as string;
    const status = word >> STATUS_SHIFT;
    const estimated = (flags & FLAG_ESTIMATED) !== 0;
    // Settled before its end named its route (stop() with it open), or never seen by the
    // sampler: aggregated here.
    if ((flags & FLAG_AGGREGATED) === 0) {
      this.#channel.addToRoute(this.#routeEntry(method, route).id, joules, endNs - startNs, estimated, (flags & FLAG_INCOMPLETE) !== 0);
    }
    if (this.#listening === 0) return;
    const rec: RequestRecord = {
      method,
      route,
      statusCode: status & STATUS_CODE_BITS,
      startNs,
      endNs,
      durationNs: endNs - startNs,
      joules,
      dynamicJoules: Number.isNaN(dynamic) ? null : dynamic,
      onCpuNs,
      estimated,
      incomplete: (flags & FLAG_INCOMPLETE) !== 0,
      endedEarly: status >= ENDED_EARLY,
      mode: 'shared',
    };
    if (context !== undefined) setResultContext(rec, context);
    this.#queue(rec);
  }

  // Results arrive one by one within a poll; they are delivered as one batch.
  #queue(rec: RequestRecord): void {
    this.#batch.push(rec);
    if (!this.#batchQueued) {
      this.#batchQueued = true;
      // Outside the context it is queued in (an exact-mode request's end, or a poll in a
      // request's callback): the listeners' work is no request's.
      outsideRequests(queueMicrotask, () => {
        this.#batchQueued = false;
        const b = this.#batch;
        this.#batch = [];
        this.#notify(b);
      });
    }
  }

  #onCallback(h: number, res: Float64Array, o: number): void {
    const slot = slotOfHandle(h);
    if (this.#ownerHandle === undefined || this.#ownerHandle[slot] !== h) return;
    const onCpuNs = res[o + 4];
    const joules = res[o + 5];
    const dynamic = res[o + 6];
    const flags = res[o + 7];
    const owner = this.#owner![slot]!;
    this.#owner![slot] = undefined;
    this.#ownerHandle[slot] = 0;
    owner.openCallbacks--;
    if (!Number.isNaN(joules)) {
      owner.joules = Number.isNaN(owner.joules) ? joules : owner.joules + joules;
      owner.onCpuNs = Number.isNaN(owner.onCpuNs) ? onCpuNs : owner.onCpuNs + onCpuNs;
      if (!Number.isNaN(dynamic)) owner.dynamic = (owner.dynamic ?? 0) + dynamic;
    }
    owner.estimated ||= (flags & FLAG_ESTIMATED) !== 0;
    owner.incomplete ||= (flags & FLAG_INCOMPLETE) !== 0;
    // At once, as end() does: aggregated in completion order, and queued before stop() returns
    // for the requests its final poll settles.
    this.#maybeEmitExact(owner);
  }

  // Emits an exact-mode request once it has ended and its last callback span has settled. The
  // record object is built only for listeners: the aggregate needs none.
  #maybeEmitExact(p: Pending): void {
    if (!p.done || p.openCallbacks !== 0 || p.current !== -1) return;
    p.openCallbacks = -1; // emitted
    // No callback of it ran measured (tracked once its response had ended, or every span slot
    // taken): NaN joules, and said to be incomplete, as in shared mode.
    if (Number.isNaN(p.joules)) p.incomplete = true;
    this.#exactInFlight--;
    if (this.#exactInFlight === 0 && (this.#closed || this.#channel.closed)) this.#detach();
    const durationNs = p.endNs - p.startNs;
    const entry = this.#routeEntry(p.method, typeof p.route === 'function' ? safeRoute(p.route) : p.route);
    this.#channel.addToRoute(entry.id, p.joules, durationNs, p.estimated, p.incomplete);
    const route = entry.route;
    if (this.#listening === 0) return;
    // Queued like shared mode's: a listener runs outside the channel's collection loop, so
    // one that throws cannot cut a poll short (and lose the results after it).
    const rec: RequestRecord = {
      method: entry.method,
      route,
      statusCode: p.statusCode,
      startNs: p.startNs,
      endNs: p.endNs,
      durationNs,
      joules: p.joules,
      dynamicJoules: p.dynamic,
      onCpuNs: p.onCpuNs,
      estimated: p.estimated,
      incomplete: p.incomplete,
      endedEarly: p.endedEarly,
      mode: 'exact',
    };
    if (p.context !== undefined) setResultContext(rec, p.context);
    this.#queue(rec);
  }

  #notify(records: RequestRecord[]): void {
    this.#listeners.deliver(records);
  }

  // The entry of a request's method and route: past maxRoutes, the method's '(other)', so that
  // exporters' route labels stay as bounded as the aggregates. (A request that was never measured
  // has NaN joules: it is in the records, flagged incomplete, but not in the aggregates.)
  // atBegin: for a request about to begin, which does not while the sampler is stopped: a new
  // route is not taken in then (it would count towards maxRoutes with no request).
  #routeEntry(method: string, route: string, atBegin = false): RouteEntry {
    // Requests of one route often come in runs: the last entry is compared first, beside the two
    // map lookups (about 100 instructions a request). Small, so that V8 inlines it into track().
    return route === this.#lastRoute && method === this.#lastMethod ? this.#lastEntry! : this.#findRouteEntry(method, route, atBegin);
  }

  // #routeEntry(method, route, true).id, without reading the entry where it was the last one.
  #routeId(method: string, route: string): number {
    return route === this.#lastRoute && method === this.#lastMethod ? this.#lastId : this.#findRouteEntry(method, route, true).id;
  }

  #findRouteEntry(method: string, asked: string, atBegin: boolean): RouteEntry {
    // An empty route counts where an empty one given at the end does.
    const route = checkedRoute(asked);
    let entry = this.#routes.get(method)?.get(route);
    if (entry === undefined && atBegin && !this.#channel.running) return { id: 0, method, route };
    if (entry === undefined) {
      const id = this.#routeCount < this.#maxRoutes ? this.#channel.newRouteId() : 0;
      if (id !== 0) {
        entry = this.#newEntry(id, method, route);
        this.#routeCount++;
      } else {
        // Not kept under the route asked for: past the limit, routes are unbounded (raw URLs). Nor
        // under a method that has no entry yet, unless it is one of Node's HTTP/1 methods: HTTP/2
        // takes any token as a method, and each would be an entry, a route id and a series more.
        const m = STANDARD_METHODS.has(method) || this.#routes.has(method) ? method : OTHER_ROUTE;
        entry = this.#routes.get(m)?.get(OTHER_ROUTE) ?? this.#newEntry(this.#channel.newRouteId(), m, OTHER_ROUTE);
      }
    }
    this.#lastMethod = method;
    this.#lastRoute = asked;
    this.#lastEntry = entry;
    this.#lastId = entry.id;
    return entry;
  }

  #newEntry(id: number, method: string, route: string): RouteEntry {
    const entry: RouteEntry = { id, method, route };
    let byRoute = this.#routes.get(method);
    if (!byRoute) this.#routes.set(method, (byRoute = new Map()));
    byRoute.set(route, entry);
    this.#routeList.push(entry);
    return entry;
  }

  /** Request records as they settle, in batches. Returns an unsubscribe function. */
  onRequest(cb: (records: RequestRecord[]) => void): () => void {
    if (typeof cb !== 'function') throw new TypeError(`Expected a function for onRequest(callback) but received ${String(cb)} of type ${typeof cb}`);
    const off = this.#listeners.add(cb);
    this.#listening = this.#listeners.size;
    return () => {
      off();
      this.#listening = this.#listeners.size;
    };
  }

  /**
   * Calls fn() outside this tracker's requests and returns its result. In exact mode, the async
   * resources fn creates (a connection pool's sockets, timers, an EventEmitterAsyncResource)
   * then carry no request's context: their callbacks are charged to no request, rather than to
   * whichever request happened to create them, which they also kept reachable. fn itself runs
   * in the current callback, charged to its request. In shared mode it just calls fn.
   */
  outside<T>(fn: () => T): T {
    if (typeof fn !== 'function') throw invalidType('fn', 'a function', fn);
    // Detached, no request can begin: nothing to leave, and run() would turn the store back on.
    if (this.#als === undefined || !this.#hookOn) return fn();
    return this.#als.run(undefined as unknown as Pending, fn);
  }

  /** Per-route aggregates since the tracker was created, most energy first. */
  routes(): RouteStats[] {
    this.#channel.poll();
    const list = this.#routeList;
    const s = this.#channel.routeSummaries(routeIds(list));
    // The words per route of the copy of jouletrace whose channel filled them: a tracker of one
    // copy on another's sampler (as ERR_JOULETRACE_FOREIGN_TRACKER advises) read 9 with a stride
    // of 8. The incomplete count, the last word, is there from 9 words on.
    const INCOMPLETE_WORD = 8;
    const words = list.length > 0 ? s.length / list.length : ROUTE_SUMMARY_WORDS;
    const all: RouteStats[] = [];
    for (let k = 0; k < list.length; k++) {
      const b = k * words;
      const n = s[b];
      if (n === 0) continue; // no measured request yet
      all.push({
        method: list[k].method,
        route: list[k].route,
        count: n,
        joules: { sum: s[b + 1], mean: s[b + 1] / n, p50: s[b + 3], p99: s[b + 4], max: s[b + 2] },
        durationMs: { mean: s[b + 5] / n / 1e6, p99: s[b + 6] / 1e6 },
        estimated: s[b + 7] !== 0,
        incomplete: words > INCOMPLETE_WORD ? s[b + INCOMPLETE_WORD] : 0,
      });
    }
    return all.sort((a, b) => b.joules.sum - a.joules.sum);
  }

  #exactInFlight = 0;

  /**
   * Requests begun whose record is still to come: open, or ended and not yet settled. In shared
   * mode without onRequest listeners a request leaves at its end (no record comes; the sampler
   * thread adds it to routes() as it settles).
   */
  get inFlight(): number {
    return this.mode === 'exact' ? this.#exactInFlight : this.#sharedInFlight;
  }

  get sampler(): Sampler {
    return this.#sampler;
  }

  /**
   * Stops tracking new requests. Requests in flight are still measured (in exact mode, the async
   * hook stays enabled for them) and reach onRequest listeners and routes() as they end; then the
   * tracker lets go of the sampler. Safe twice.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    releaseResponseWatch();
    if (this.inFlight === 0) this.#detach();
  }

  // Off the channel (and the async hook off): a closed tracker with nothing left in flight.
  #detach(): void {
    this.#hook?.disable();
    // Its own async hook too (Node 20's AsyncLocalStorage propagates stores through one): about
    // half of what exact mode adds to an await stayed with the tracker closed. Nothing reads its
    // stores again: no request begins here once detached.
    this.#als?.disable();
    this.#hookOn = false;
    this.#channel.closeListeners?.delete(this.#onChannelClosed);
    this.#channel.internalListeners.delete(this.#callback);
    this.#channel.sharedListeners.delete(this.#shared);
    this.#channel.stopPollingIfIdle();
  }
}

// A request's route once it ends: the one given to end(), else the one from start(), a route
// function called now, while the framework's request still says it, and so that nothing holds on
// to that request until settlement.
function routeAtEnd(given: string | undefined, current: string | RouteFunction): string {
  if (given !== undefined) return checkedRoute(given);
  return typeof current === 'function' ? safeRoute(current) : current;
}

const STANDARD_METHODS = new Set(METHODS);
// start() without a route: named at its end, or unrouted (a function's route is taken at the end).
const unroutedUnlessNamed = (): string => UNROUTED;

// A tracker garbage-collected (closed, so its channel no longer holds it) lets go of its routes in
// the channel's table, which lives as long as the sampler.
const routesOfCollected = new FinalizationRegistry<{ channel: SpanChannel; routes: RouteEntry[] }>(({ channel, routes }) =>
  channel.releaseRoutes(routeIds(routes)),
);

function routeIds(entries: readonly RouteEntry[]): Int32Array {
  return Int32Array.from(entries, (e) => e.id);
}

/** @internal The options a RequestTracker takes (the integrations pass them on). */
export const TRACKER_OPTION_KEYS = ['mode', 'routeOf', 'maxRoutes'] as const;

/**
 * A Sampler of this copy of jouletrace or of another (a dependency that pins another version):
 * by shape. A tracker made here from another copy's sampler uses it through its public methods.
 */
export function isSamplerLike(x: unknown): x is Sampler {
  return x !== null && typeof x === 'object' && typeof (x as { spanChannel?: unknown }).spanChannel === 'function';
}

/**
 * @internal The error for a RequestTracker of another copy of jouletrace (by shape), given to
 * this copy's Express or Fastify integration; undefined for anything else. Refused, not driven:
 * the integration's calls into a tracker (track() with a route callback, and in exact mode the
 * continuation that runs the rest of the request in its context) are this version's, untested
 * against another's, where one that does not run the continuation would leave every request
 * waiting; and the other copy's end() wrapper, request table and contexts cannot be checked from
 * here. Its Sampler is taken instead, by shape: the tracker is then made here.
 */
export function foreignTracker(option: string, x: unknown): JouletraceError | undefined {
  if (x instanceof RequestTracker || x === null || typeof x !== 'object') return undefined;
  const t = x as Partial<Record<'track' | 'onRequest' | 'routes', unknown>>;
  if (typeof t.track !== 'function' || typeof t.onRequest !== 'function' || typeof t.routes !== 'function') return undefined;
  return new JouletraceError(
    'ERR_JOULETRACE_FOREIGN_TRACKER',
    `${option} is a RequestTracker of another copy of jouletrace than this integration's (two versions in node_modules: npm ls jouletrace lists them), and each copy's integrations drive only its own trackers. ` +
      'Use the integration of the copy that made the tracker, or pass its Sampler here (a tracker is then made from it), or install one version of jouletrace.',
  );
}

/**
 * @internal A tracker passed in comes with its own options: any given beside it would be dropped
 * without a word, so they are refused, as is any other key unless `othersAllowed` (Fastify's
 * register options ride along with the plugin's).
 */
export function refuseOptionsBeside(options: Record<string, unknown>, othersAllowed = false): void {
  if (!othersAllowed) checkKnownKeys('options', options, TRACKER_OPTION_KEYS);
  const given = TRACKER_OPTION_KEYS.find((k) => options[k] !== undefined);
  if (given !== undefined) {
    throw new TypeError(`options.${given} is for a tracker made from a Sampler; a RequestTracker passed in keeps its own (set it where the tracker is made)`);
  }
}

/**
 * The options of a tracker that the Express or Fastify integration makes from a Sampler: those of
 * RequestTracker but routeOf, which they refuse (each request is named by the framework's route).
 */
export type IntegrationTrackerOptions = Omit<RequestTrackerOptions, 'routeOf'> & { routeOf?: undefined };

/**
 * @internal routeOf given to an integration, which names each request by the route its framework
 * matched: routeOf names a request that track() is given no route for, and would never be called.
 * Refused rather than dropped, with or without a tracker beside it.
 */
export function refuseRouteOf(options: unknown, integration: string, framework: string): void {
  if (options !== null && typeof options === 'object' && (options as { routeOf?: unknown }).routeOf !== undefined) {
    throw new TypeError(
      `options.routeOf is not taken by ${integration}: each request is named by the route ${framework} matched, and routeOf (the route of a node:http request given none) would never be called; leave it out`,
    );
  }
}

// What end() throws for a token that is not one of the tracker's. Another tracker's exact-mode
// request, ended here, was emitted by the wrong tracker and stayed in flight in its own for good.
function notOurToken(token: unknown, mode: RequestMode): Error {
  if (typeof token === 'object' && token !== null && EXACT_REQUEST_TOKEN in token) {
    return new JouletraceError('ERR_JOULETRACE_FOREIGN_SPAN', "end(): this token is another RequestTracker's request; end it with the tracker whose start() returned it");
  }
  return invalidType('token', `a token from this tracker's start() (${mode === 'exact' ? 'an object' : 'a number'} in ${mode} mode) or undefined`, token);
}

// What track() throws when something it called threw: a TypeError naming req or res where either
// is none (they throw where their properties are read), else what was thrown.
function refusal(e: unknown, req: unknown, res: unknown): unknown {
  checkTracked(req, res);
  return e;
}

function checkRun(run: unknown): void {
  if (run !== undefined && typeof run !== 'function') throw invalidType('run', 'a function (the work to run in the request\'s context) or undefined', run);
}

function checkRouteArgument(route: unknown): void {
  if (route !== undefined && typeof route !== 'string' && typeof route !== 'function') {
    throw invalidType('route', 'a route pattern (a string) or a function that returns one', route);
  }
}

function checkedRoute(route: unknown): string {
  return typeof route === 'string' && route.length > 0 ? route : UNMATCHED_ROUTE;
}

function safeRoute(f: RouteFunction): string {
  try {
    return checkedRoute(f());
  } catch (e) {
    warnRouteThrew(e);
    return UNMATCHED_ROUTE;
  }
}

// Once: a route function or routeOf that throws (a bug in it) put every request it named under
// (unmatched) without a word. Only where it threw: one that returns no string may mean no match.
let warnedRouteThrew = false;
function warnRouteThrew(e: unknown): void {
  if (warnedRouteThrew) return;
  warnedRouteThrew = true;
  process.emitWarning(
    `a request's route function (or the tracker's routeOf) threw: ${e instanceof Error ? e.message : describe(e)}; its requests count as (unmatched) (warned once)`,
    { code: 'JOULETRACE_ROUTE_THREW' },
  );
}

/**
 * Accounts one node:http request, or one of HTTP/2's compatibility API (framework-free). Call it
 * first thing in the handler.
 * `route` is the route pattern ("/users/:id"); never pass the raw URL (unbounded label values).
 * In exact mode, pass the rest of the handler as `run`: it then runs in the request's context,
 * and only it. Without `run` the context is entered for the rest of the server's callback, where
 * Node may go on to dispatch the next request pipelined on the connection, which would then be
 * charged to this one if it is not tracked itself.
 */
export function trackRequest(
  tracker: RequestTracker,
  req: IncomingMessage | Http2ServerRequest,
  res: ServerResponse | Http2ServerResponse,
  route?: string | (() => string | undefined),
  run?: () => void,
): void {
  // Checked only once the call failed: a try costs nothing here while nothing throws.
  try {
    tracker.track(req, res, route, run);
  } catch (e) {
    throw notATracker(tracker) ?? e;
  }
}

/**
 * Ends the accounting of a request now, before its response ends, in every tracker watching it
 * (trackRequest(), the Express middleware or instrumentExpress(), the Fastify plugin). In shared
 * mode a request in flight takes an equal share of its thread's energy from the requests beside
 * it for as long as its response is open: call this in a server-sent-event handler right after
 * writing its headers, and in a long poll or a streamed download once the work worth charging
 * is done. Its record comes then, with its energy and time so far, the status its response holds
 * now and `endedEarly: true`; the response's real end changes nothing. In exact mode its
 * callbacks from then on are no request's. Takes the request (node:http's or Express's `req`,
 * Fastify's `request`) or its response (`res`, Fastify's `reply`). Returns whether any tracker
 * was accounting it (false where none tracks it, or its accounting has already ended). A request
 * begun with tracker.start() ends with tracker.end().
 */
export function endRequestAccounting(
  reqOrRes: IncomingMessage | ServerResponse | Http2ServerRequest | Http2ServerResponse | { readonly raw: IncomingMessage | ServerResponse },
): boolean {
  const neither = () => invalidType('reqOrRes', "a request (an http.IncomingMessage, Express's req, Fastify's request) or its response", reqOrRes);
  let x: unknown = reqOrRes;
  if (x === null || typeof x !== 'object') throw neither();
  // Fastify's request and reply hold Node's as `raw`.
  const raw = (x as { raw?: unknown }).raw;
  if (raw !== null && typeof raw === 'object') x = raw;
  // A response writes (node:http's, HTTP/2's compatibility one, an adapter's); a request does not.
  if (typeof (x as { writeHead?: unknown }).writeHead === 'function') {
    const res = x as ServerResponse;
    return endEarly(res.req ?? undefined, res);
  }
  // A request is a readable stream (node:http's, HTTP/2's compatibility one, Express's). Anything
  // else (Koa's ctx, hapi's request, whose raw is { req, res }) ended nothing and said nothing.
  if (!(x instanceof Readable)) throw neither();
  return endEarly(x as IncomingMessage, undefined);
}

// What trackRequest() throws for a first argument without track(): V8 said 'tracker.track is not
// a function' for a Sampler passed where its tracker goes.
function notATracker(x: unknown): TypeError | undefined {
  if (x !== null && typeof x === 'object' && typeof (x as { track?: unknown }).track === 'function') return undefined;
  if (isSamplerLike(x)) {
    return new TypeError(
      'Expected a RequestTracker for tracker but received a Sampler: make one tracker from it at startup, new RequestTracker(sampler), and pass that to every trackRequest()',
    );
  }
  return invalidType('tracker', 'a RequestTracker (new RequestTracker(sampler))', x);
}
