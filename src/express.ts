// `jouletrace/express`: joules per request, as Express middleware or around an app's handler.
//
//   import { energyMiddleware, instrumentExpress } from 'jouletrace/express';
//   app.use(energyMiddleware(tracker));
//   instrumentExpress(app, tracker);   // the same, without a middleware layer
import type { IncomingMessage, ServerResponse } from 'node:http';
import { foreignTracker, isSamplerLike, refuseOptionsBeside, refuseRouteOf, RequestTracker, type IntegrationTrackerOptions, type RequestTrackerOptions } from './requests';
import { UNMATCHED_ROUTE } from './span-types';
import type { Sampler } from './sampler';
import { mountPattern, patternMatches } from './express-route-patterns';
import { checkObject, describe, JouletraceError } from './errors';

export interface ExpressLikeRequest extends IncomingMessage {
  app?: unknown;
  baseUrl?: string;
  originalUrl?: string;
  route?: { path?: unknown };
  /** Set by Node's server on every request it parses: true for one of its 'upgrade' event. */
  upgrade?: boolean | null;
}

// express-ws routes a WebSocket handshake (a request of Node's 'upgrade' event) as a GET of
// <path>/.websocket, a route it adds for app.ws(path), with the request's URL rewritten so: the
// handshake's route is <path>.
const EXPRESS_WS_SUFFIX = '/.websocket';

function handshakeRoute(route: string): string {
  return route.endsWith(EXPRESS_WS_SUFFIX) ? route.slice(0, -EXPRESS_WS_SUFFIX.length) || '/' : route;
}

// The mount path as it was when Express matched the route. A router puts req.baseUrl back as
// the request leaves it, and a handler in a mounted router that throws or falls through to a 404
// leaves it that way: read at the response's end, GET /api/boom would count as /boom.
//
// Kept beside the request, not on it: Express sets the prototype of every request to its app's
// `app.request`, and a property added to such an object afterwards costs V8 a map migration,
// about 1.4 µs a property on our test VM, more than the whole accounting. Express's own
// `req.route = route` is one such property, so with the route kept here a tracked Express request
// costs about what an empty middleware does (bench/RESULTS.md, "Express's route, kept beside the
// request").
const routes = new WeakMap<object, unknown>();
const basesAtRoute = new WeakMap<object, unknown>();
// Route → req.app as it last matched: where a sub-application's route is to be found once an
// error has taken the request back out to the parent app (req.app is the parent's then).
const appsOfRoutes = new WeakMap<object, unknown>();
const HOOKED = Symbol('jouletrace.routeHooked');
// On the request prototype (`app.request`) of each instrumented app. A sub-application's request
// prototype inherits from its parent's once mounted, and its requests arrive already carrying
// the parent's: seen there, the request is the parent's to count, and a middleware's too. (A
// tracker also ignores a request it already tracks; this covers other trackers, and a request
// whose tracking threw, which must not be tracked again from a middleware and answered 500.)
const INSTRUMENTED = Symbol('jouletrace.instrumentedApp');

/**
 * Makes `req.route` (Express 4 and 5 assign it as a route dispatches) an accessor on an app's
 * request prototype (`app.request`, which carries `app`) that also notes the mount path: once per
 * app, never on Node's IncomingMessage.prototype.
 */
function hookRoute(req: IncomingMessage): void {
  hookRouteOn(Object.getPrototypeOf(req) as Record<PropertyKey, unknown> | null);
}

function hookRouteOn(proto: Record<PropertyKey, unknown> | null): void {
  if (proto === null || proto[HOOKED] === true) return;
  if (!Object.prototype.hasOwnProperty.call(proto, 'app') || Object.getOwnPropertyDescriptor(proto, 'route') !== undefined) {
    return;
  }
  Object.defineProperty(proto, 'route', {
    configurable: true,
    get(this: object) {
      // Read through Object.create(req) too, as an own property would be.
      for (let o: object | null = this; o !== null; o = Object.getPrototypeOf(o) as object | null) {
        const route = routes.get(o);
        if (route !== undefined || o === proto) return route;
      }
      return undefined;
    },
    set(this: ExpressLikeRequest, route: unknown) {
      routes.set(this, route);
      basesAtRoute.set(this, this.baseUrl);
      // this.app, not this prototype's: a sub-application's request prototype inherits from its
      // parent's (Express sets that up at mount), so this setter serves its requests too.
      const app = this.app;
      if (route !== null && typeof route === 'object' && appsOfRoutes.get(route) !== app) appsOfRoutes.set(route, app);
    },
  });
  proto[HOOKED] = true;
}

/**
 * The matched route's pattern (mount paths + route path), read when the response ends: the
 * mounts' pattern from the app's routers where it fits the URL the request came by (see
 * express-route-patterns.ts), else that URL as it was when the route matched.
 */
export function expressRoute(req: ExpressLikeRequest): string {
  const kept = routes.get(req);
  // undefined where the request has left, by an error or a fall-through, a sub-application whose
  // request prototype carries the accessor for a parent's that does not: Express puts the
  // parent's prototype back first. An own property (a route of such a parent's, matched later)
  // is newer than the one kept.
  const route = req.route ?? (kept as ExpressLikeRequest['route']);
  if (route === null || typeof route !== 'object') return UNMATCHED_ROUTE;
  const path = route.path;
  const noted = route === kept ? basesAtRoute.get(req) : undefined;
  const base = typeof noted === 'string' ? noted : (req.baseUrl ?? '');
  const app = req.app;
  let pattern = mountPattern(route, app, base);
  if (pattern === null) {
    const matchedIn = appsOfRoutes.get(route);
    if (matchedIn !== undefined && matchedIn !== app) pattern = mountPattern(route, matchedIn, base);
  }
  const mount = pattern ?? base;
  if (typeof path === 'string') {
    const route = `${mount}${path}` || '/';
    return req.upgrade === true ? handshakeRoute(route) : route;
  }
  // app.get(['/a', '/b/:id']): the one pattern that fits the URL, else all of them.
  if (Array.isArray(path)) {
    const url = (req.originalUrl ?? '').split('?', 1)[0];
    const rest = url.slice(base.length).replace(/(.)\/$/, '$1') || '/';
    const fits = path.filter((p) => typeof p === 'string' && patternMatches(p, rest));
    const shown = fits.length === 1 ? fits : path;
    return shown.map((p) => `${mount}${String(p)}`).join(',') || UNMATCHED_ROUTE;
  }
  // A regular expression, as written: a pattern too.
  return path instanceof RegExp ? `${mount}${String(path)}` : UNMATCHED_ROUTE;
}

/** energyMiddleware()'s middleware, with the tracker it feeds. */
export interface EnergyMiddleware {
  (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void): void;
  /** The RequestTracker it feeds: the one passed in, or the one it made from a Sampler (close it with the app). */
  readonly tracker: RequestTracker;
}

/**
 * Express middleware charging each request its energy. Pass a RequestTracker (to share it with
 * metrics and reports) or a Sampler (a tracker is created with `options`, and is the
 * middleware's `tracker`).
 */
export function energyMiddleware(trackerOrSampler: RequestTracker | Sampler, options?: IntegrationTrackerOptions): EnergyMiddleware {
  const tracker = trackerOf(trackerOrSampler, options, 'energyMiddleware()');
  const middleware = function jouletraceEnergy(req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void): void {
    // Already counted from around app.handle (instrumentExpress), here or in a parent app.
    if ((req as unknown as Record<PropertyKey, unknown>)[INSTRUMENTED] === true) {
      next();
      return;
    }
    const r = req as ExpressLikeRequest;
    hookRoute(req);
    if (tracker.mode === 'exact') tracker.track(req, res, () => expressRoute(r), () => next());
    else {
      tracker.track(req, res, () => expressRoute(r));
      next();
    }
  };
  return Object.defineProperty(middleware, 'tracker', { value: tracker, enumerable: true }) as EnergyMiddleware;
}

/** What instrumentExpress() needs of an app: what express() returns (Express 4 and 5). */
export interface ExpressAppLike {
  (req: IncomingMessage, res: ServerResponse): unknown;
  request: object;
}
type Handle = (this: unknown, req: IncomingMessage, res: ServerResponse, callback?: (err?: unknown) => void) => void;

/**
 * Charges each request an Express app receives its energy, as energyMiddleware() does, but from
 * around the app's own handler (`app.handle`) rather than from a middleware layer: Express's
 * router costs more for one empty middleware than jouletrace's accounting does in all
 * (bench/RESULTS.md). Call it on the app that Node's server calls, before it serves; an
 * energyMiddleware() in it, or in its sub-applications, then passes its requests on. A
 * sub-application instrumented as well as its parent leaves the requests it gets from that parent
 * to the parent. Returns the tracker.
 */
export function instrumentExpress(app: ExpressAppLike, trackerOrSampler: RequestTracker | Sampler, options?: IntegrationTrackerOptions): RequestTracker {
  const handled = app as ExpressAppLike & { handle?: Handle };
  if (typeof app !== 'function' || typeof handled.handle !== 'function' || app.request === null || typeof app.request !== 'object') {
    throw new TypeError(`Expected an Express application (from express()) for app but received ${describe(app)}`);
  }
  const request = app.request as Record<PropertyKey, unknown>;
  if (Object.prototype.hasOwnProperty.call(request, INSTRUMENTED)) {
    throw new JouletraceError('ERR_JOULETRACE_ALREADY_INSTRUMENTED', 'instrumentExpress(app): this app is instrumented already; each of its requests would count twice');
  }
  const tracker = trackerOf(trackerOrSampler, options, 'instrumentExpress()');
  hookRouteOn(request);
  Object.defineProperty(request, INSTRUMENTED, { value: true });
  const handle = handled.handle;
  // Express's app function calls `app.handle(req, res, next)` by property on each request.
  handled.handle = function jouletraceHandle(this: unknown, req, res, callback) {
    if ((req as unknown as Record<PropertyKey, unknown>)[INSTRUMENTED] === true) {
      handle.call(this, req, res, callback);
      return;
    }
    const r = req as ExpressLikeRequest;
    // Nothing thrown by the accounting (a context capture of the user's) may leave here: this is
    // Node's request listener, and the app would never see the request. Served unaccounted.
    if (tracker.mode === 'exact') {
      let served = false;
      try {
        tracker.track(req, res, () => expressRoute(r), () => {
          served = true;
          handle.call(this, req, res, callback);
        });
      } catch (e) {
        if (served) throw e;
        warnUnaccounted(e);
        handle.call(this, req, res, callback);
      }
      return;
    }
    try {
      tracker.track(req, res, () => expressRoute(r));
    } catch (e) {
      warnUnaccounted(e);
    }
    handle.call(this, req, res, callback);
  };
  return tracker;
}

let warnedUnaccounted = false;
function warnUnaccounted(e: unknown): void {
  if (warnedUnaccounted) return;
  warnedUnaccounted = true;
  process.emitWarning(`instrumentExpress(): a request was served without accounting, because tracking it threw: ${String((e as Error)?.message ?? e)} (warned once)`, {
    code: 'JOULETRACE_UNACCOUNTED',
  });
}

// integration: the caller's name, for its refusal of routeOf.
function trackerOf(trackerOrSampler: RequestTracker | Sampler, options: IntegrationTrackerOptions | undefined, integration: string): RequestTracker {
  const foreign = foreignTracker('trackerOrSampler', trackerOrSampler);
  if (foreign) throw foreign;
  refuseRouteOf(options, integration, 'Express');
  if (!(trackerOrSampler instanceof RequestTracker)) {
    // RequestTracker's own refusal would name its argument, `sampler`, not this one.
    if (!isSamplerLike(trackerOrSampler)) {
      throw new TypeError(`Expected a RequestTracker or a Sampler for trackerOrSampler but received ${describe(trackerOrSampler)}`);
    }
    return new RequestTracker(trackerOrSampler, options);
  }
  if (options !== undefined) refuseOptionsBeside(checkObject('options', options));
  return trackerOrSampler;
}

export { RequestTracker };
export type { IntegrationTrackerOptions, RequestTrackerOptions };
