// `jouletrace/fastify`: joules per request as a Fastify plugin (onRequest/onResponse hooks).
//
//   import { fastifyEnergy } from 'jouletrace/fastify';
//   await app.register(fastifyEnergy, { tracker });
import { RequestTracker, type RequestTrackerOptions } from './requests';
import type { Sampler } from './sampler';
import type { IncomingMessage, ServerResponse } from 'node:http';

export interface FastifyEnergyOptions extends RequestTrackerOptions {
  /** The tracker to feed (share it with metrics); or give `sampler` and one is created. */
  tracker?: RequestTracker;
  sampler?: Sampler;
}

interface FastifyRequestLike {
  raw: IncomingMessage;
  routeOptions?: { url?: string };
  routerPath?: string;
}
interface FastifyReplyLike {
  raw: ServerResponse;
}
interface FastifyLike {
  addHook(name: 'onRequest', fn: (req: FastifyRequestLike, reply: FastifyReplyLike, done: () => void) => void): unknown;
  decorate?(name: string, value: unknown): unknown;
}

/** The route pattern Fastify matched ("/users/:id"). */
export function fastifyRoute(req: FastifyRequestLike): string {
  return req.routeOptions?.url ?? req.routerPath ?? '(unmatched)';
}

/**
 * Fastify plugin. Registered at the root, it sees every route (it opts out of encapsulation,
 * as fastify-plugin does). The tracker is exposed as `app.jouletrace`.
 */
export function fastifyEnergy(app: FastifyLike, options: FastifyEnergyOptions, done: (err?: Error) => void): void {
  let tracker: RequestTracker;
  try {
    if (options?.tracker instanceof RequestTracker) tracker = options.tracker;
    else if (options?.sampler) {
      const { tracker: _t, sampler, ...rest } = options;
      void _t;
      tracker = new RequestTracker(sampler, rest);
    } else {
      throw new TypeError('Expected a RequestTracker for options.tracker or a Sampler for options.sampler');
    }
  } catch (e) {
    done(e as Error);
    return;
  }
  app.decorate?.('jouletrace', tracker);
  app.addHook('onRequest', (req, reply, next) => {
    if (tracker.mode === 'exact') tracker.track(req.raw, reply.raw, () => fastifyRoute(req), next);
    else {
      tracker.track(req.raw, reply.raw, () => fastifyRoute(req));
      next();
    }
  });
  done();
}

// What fastify-plugin sets: apply to the parent scope, with a readable name.
(fastifyEnergy as unknown as Record<symbol, unknown>)[Symbol.for('skip-override')] = true;
(fastifyEnergy as unknown as Record<symbol, unknown>)[Symbol.for('fastify.display-name')] = 'jouletrace';

export { RequestTracker };
