// `jouletrace/express`: joules per request as Express middleware.
//
//   import { energyMiddleware } from 'jouletrace/express';
//   app.use(energyMiddleware(tracker));
import type { IncomingMessage, ServerResponse } from 'node:http';
import { RequestTracker, type RequestTrackerOptions } from './requests';
import type { Sampler } from './sampler';
import { routePattern } from './express-route-patterns';

interface ExpressLikeRequest extends IncomingMessage {
  app?: unknown;
  baseUrl?: string;
  route?: { path?: unknown };
}

// The mount path as it was when Express matched the route. A router puts req.baseUrl back as
// the request leaves it, and a handler in a mounted router that throws or falls through to a 404
// leaves it that way: read at the response's finish, GET /api/boom would count as /boom.
//
// Kept beside the request, not on it: Express gives every request a new prototype, and a
// property added to such an object afterwards costs V8 a map migration, about 1.4 µs a property
// on our test VM, more than the whole accounting. Express's own `req.route = route` is one such
// property, so with the route kept here a tracked Express request costs less than with an empty
// middleware (bench/RESULTS.md, "Express's route, kept beside the request").
const routes = new WeakMap<object, unknown>();
const basesAtRoute = new WeakMap<object, unknown>();
const HOOKED = Symbol('jouletrace.routeHooked');

/**
 * Makes `req.route` (Express 4 and 5 assign it as a route dispatches) an accessor on the app's
 * request prototype (app.request, which carries `app`) that also notes the mount path: once per
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
      return routes.get(this);
    },
    set(this: ExpressLikeRequest, route: unknown) {
      routes.set(this, route);
      basesAtRoute.set(this, this.baseUrl);
    },
  });
  proto[HOOKED] = true;
}

/**
 * The matched route's pattern (mount paths + route path), read when the response finishes: from
 * the app's routers where they tell it (see express-route-patterns.ts), else the mount path as
 * it was when the route matched.
 */
export function expressRoute(req: ExpressLikeRequest): string {
  const route = req.route;
  const path = route?.path;
  if (typeof path !== 'string') return '(unmatched)';
  const pattern = routePattern(route!, req.app);
  if (pattern !== null) return pattern;
  const base = basesAtRoute.get(req);
  return `${typeof base === 'string' ? base : (req.baseUrl ?? '')}${path}` || '/';
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
