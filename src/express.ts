// `jouletrace/express`: joules per request as Express middleware.
//
//   import { energyMiddleware } from 'jouletrace/express';
//   app.use(energyMiddleware(tracker));
import type { IncomingMessage, ServerResponse } from 'node:http';
import { RequestTracker, type RequestTrackerOptions } from './requests';
import type { Sampler } from './sampler';
import { mountPattern, patternMatches } from './express-route-patterns';

interface ExpressLikeRequest extends IncomingMessage {
  app?: unknown;
  baseUrl?: string;
  originalUrl?: string;
  route?: { path?: unknown };
}

// The mount path as it was when Express matched the route. A router puts req.baseUrl back as
// the request leaves it, and a handler in a mounted router that throws or falls through to a 404
// leaves it that way: read at the response's finish, GET /api/boom would count as /boom.
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

/**
 * Makes `req.route` (Express 4 and 5 assign it as a route dispatches) an accessor on an app's
 * request prototype (`app.request`, which carries `app`) that also notes the mount path: once per
 * app, never on Node's IncomingMessage.prototype.
 */
function hookRoute(req: IncomingMessage): void {
  const proto = Object.getPrototypeOf(req) as Record<PropertyKey, unknown> | null;
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
 * The matched route's pattern (mount paths + route path), read when the response finishes: the
 * mounts' pattern from the app's routers where it fits the URL the request came by (see
 * express-route-patterns.ts), else that URL as it was when the route matched.
 */
export function expressRoute(req: ExpressLikeRequest): string {
  const route = req.route;
  if (route === null || typeof route !== 'object') return '(unmatched)';
  const path = route.path;
  const noted = basesAtRoute.get(req);
  const base = typeof noted === 'string' ? noted : (req.baseUrl ?? '');
  const app = req.app;
  let pattern = mountPattern(route, app, base);
  if (pattern === null) {
    const matchedIn = appsOfRoutes.get(route);
    if (matchedIn !== undefined && matchedIn !== app) pattern = mountPattern(route, matchedIn, base);
  }
  const mount = pattern ?? base;
  if (typeof path === 'string') return `${mount}${path}` || '/';
  // app.get(['/a', '/b/:id']): the one pattern that fits the URL, else all of them.
  if (Array.isArray(path)) {
    const url = (req.originalUrl ?? '').split('?', 1)[0];
    const rest = url.slice(base.length).replace(/(.)\/$/, '$1') || '/';
    const fits = path.filter((p) => typeof p === 'string' && patternMatches(p, rest));
    const shown = fits.length === 1 ? fits : path;
    return shown.map((p) => `${mount}${String(p)}`).join(',') || '(unmatched)';
  }
  // A regular expression, as written: a pattern too.
  return path instanceof RegExp ? `${mount}${String(path)}` : '(unmatched)';
}

/**
 * Express middleware charging each request its energy. Pass a RequestTracker (to share it with
 * metrics and reports) or a Sampler (a tracker is created with `options`).
 */
export function energyMiddleware(
  trackerOrSampler: RequestTracker | Sampler,
  options?: RequestTrackerOptions,
): (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => void {
  const tracker = trackerOrSampler instanceof RequestTracker ? trackerOrSampler : new RequestTracker(trackerOrSampler, options);
  return function jouletraceEnergy(req, res, next) {
    const r = req as ExpressLikeRequest;
    hookRoute(req);
    if (tracker.mode === 'exact') tracker.track(req, res, () => expressRoute(r), () => next());
    else {
      tracker.track(req, res, () => expressRoute(r));
      next();
    }
  };
}

export { RequestTracker };
export type { RequestTrackerOptions };
