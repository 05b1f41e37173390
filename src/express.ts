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
}

/** The matched route pattern (mount path + route path), read when the response finishes. */
export function expressRoute(req: ExpressLikeRequest): string {
  const path = req.route?.path;
  if (typeof path !== 'string') return '(unmatched)';
  return `${req.baseUrl ?? ''}${path}` || '/';
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
    if (tracker.mode === 'exact') tracker.track(req, res, () => expressRoute(r), () => next());
    else {
      tracker.track(req, res, () => expressRoute(r));
      next();
    }
  };
}

export { RequestTracker };
export type { RequestTrackerOptions };
