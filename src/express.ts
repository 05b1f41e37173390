// `jouletrace/express`: joules per request as Express middleware.
//
//   import { energyMiddleware } from 'jouletrace/express';
//   app.use(energyMiddleware(tracker));
import type { IncomingMessage, ServerResponse } from 'node:http';
import { RequestTracker, type RequestTrackerOptions } from './requests';
import type { Sampler } from './sampler';

interface ExpressLikeRequest extends IncomingMessage {
  baseUrl?: string;
  route?: { path?: unknown };
  [BASE_AT_ROUTE]?: string;
}

// The mount path as it was when Express matched the route. A router puts req.baseUrl back as
// the request leaves it, and a handler in a mounted router that throws or falls through to a 404
// leaves it that way: read at the response's finish, GET /api/boom would count as /boom.
const BASE_AT_ROUTE = Symbol('jouletrace.baseUrlAtRoute');
const ROUTE = Symbol('jouletrace.route');
const HOOKED = Symbol('jouletrace.routeHooked');

/**
 * Makes `req.route = route` (Express 4 and 5 assign it as a route dispatches) also note the
 * mount path, by an accessor on the app's request prototype (app.request, which carries `app`):
 * once per app, never on Node's IncomingMessage.prototype.
 */
function hookRoute(req: IncomingMessage): void {
  const proto = Object.getPrototypeOf(req) as Record<PropertyKey, unknown> | null;
  if (proto === null || proto[HOOKED] === true) return;
  if (!Object.prototype.hasOwnProperty.call(proto, 'app') || Object.getOwnPropertyDescriptor(proto, 'route') !== undefined) {
    return;
  }
  Object.defineProperty(proto, 'route', {
    configurable: true,
    get(this: Record<PropertyKey, unknown>) {
      return this[ROUTE];
    },
    set(this: Record<PropertyKey, unknown>, route: unknown) {
      this[ROUTE] = route;
      this[BASE_AT_ROUTE] = this.baseUrl;
    },
  });
  proto[HOOKED] = true;
}

/** The matched route pattern (mount path + route path), read when the response finishes. */
export function expressRoute(req: ExpressLikeRequest): string {
  const path = req.route?.path;
  if (typeof path !== 'string') return '(unmatched)';
  return `${req[BASE_AT_ROUTE] ?? req.baseUrl ?? ''}${path}` || '/';
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
