// `jouletrace/fastify`: joules per request as a Fastify plugin (one onRequest hook).
//
//   import { fastifyEnergy } from 'jouletrace/fastify';
//   await app.register(fastifyEnergy, { tracker });
import { AsyncResource } from 'node:async_hooks';
import { invalidType, JouletraceError } from './errors';
import { foreignTracker, isSamplerLike, refuseOptionsBeside, refuseRouteOf, RequestTracker, type IntegrationTrackerOptions } from './requests';
import type { Sampler } from './sampler';
import { UNMATCHED_ROUTE } from './span-types';
import type { IncomingMessage, ServerResponse } from 'node:http';

// `app.jouletrace`, typed for TypeScript users as Fastify plugins type their decorations.
import type {} from 'fastify';
declare module 'fastify' {
  interface FastifyInstance {
    /** The RequestTracker that fastifyEnergy feeds (decorated at registration). */
    jouletrace: RequestTracker;
  }
}

/**
 * The tracker to feed (share it with metrics), or a `sampler` and the options of a tracker made
 * from it: one or the other, never neither (register(fastifyEnergy, {}) type-checked and failed
 * at registration).
 */
export type FastifyEnergyOptions = FastifyEnergyTrackerOptions | FastifyEnergySamplerOptions;

export interface FastifyEnergyTrackerOptions {
  /** The tracker to feed; its options are its own (set them where it is made). */
  tracker: RequestTracker;
  sampler?: undefined;
}

/** routeOf is refused: each request is named by the route Fastify matched. */
export type FastifyEnergySamplerOptions = IntegrationTrackerOptions & {
  /** A tracker is made from it, with these options, and closed with the app. */
  sampler: Sampler;
  tracker?: undefined;
};

export interface FastifyRequestLike {
  raw: IncomingMessage;
  // `| undefined`: Fastify's own types declare them so, which a consumer compiling with
  // exactOptionalPropertyTypes holds against these.
  routeOptions?: { url?: string | undefined };
  routerPath?: string | undefined;
}
export interface FastifyReplyLike {
  raw: ServerResponse;
}
export type FastifyHook = (req: FastifyRequestLike, reply: FastifyReplyLike, done: () => void) => void;
export interface FastifyLike {
  addHook(name: 'onRequest', fn: FastifyHook): unknown;
  addHook(name: 'onClose', fn: (instance: unknown, done: () => void) => void): unknown;
  decorate?(name: string, value: unknown): unknown;
  hasDecorator?(name: string): boolean;
}

// Fastify keeps the matched route's context on each request under a private symbol
// ('fastify.context', Fastify 4 and 5). Its config.url is the route pattern. The public
// `routeOptions` getter builds a dozen-field object per call, about 0.1 µs per request here, so
// the symbol is looked up once and routeOptions is the fallback where it is absent.
let contextKey: symbol | null | undefined;

/** The route pattern Fastify matched ("/users/:id"). */
export function fastifyRoute(req: FastifyRequestLike): string {
  if (contextKey === undefined) {
    contextKey = Object.getOwnPropertySymbols(req).find((s) => s.description === 'fastify.context') ?? null;
  }
  if (contextKey !== null) {
    const context = (req as unknown as Record<symbol, { config?: { url?: unknown } } | undefined>)[contextKey];
    if (context !== undefined && typeof context === 'object') {
      const url = context.config?.url;
      return typeof url === 'string' ? url : UNMATCHED_ROUTE;
    }
  }
  return req.routeOptions?.url ?? req.routerPath ?? UNMATCHED_ROUTE;
}

/**
 * Fastify plugin. Registered at the root, it sees every route (it opts out of encapsulation,
 * as fastify-plugin does). The tracker is exposed as `app.jouletrace`.
 */
export function fastifyEnergy(app: FastifyLike, options: FastifyEnergyOptions, done: (err?: Error) => void): void {
  let tracker: RequestTracker;
  // Registered here or above already: its hook runs for these requests, and Fastify's decorate()
  // would throw out of this function rather than fail the registration.
  if (app.hasDecorator?.('jouletrace') === true) {
    done(
      new JouletraceError(
        'ERR_JOULETRACE_ALREADY_INSTRUMENTED',
        'fastifyEnergy: this Fastify instance, or one it is registered in, has the plugin already (app.jouletrace); register it once, at the root',
      ),
    );
    return;
  }
  try {
    const foreign = foreignTracker('options.tracker', options?.tracker);
    if (foreign) throw foreign;
    refuseRouteOf(options, 'fastifyEnergy', 'Fastify');
    if (options?.tracker instanceof RequestTracker) {
      refuseOptionsBeside(options as unknown as Record<string, unknown>, true);
      tracker = options.tracker;
    } else if (options?.sampler) {
      // RequestTracker's own refusal would name its argument, `sampler`, not this one.
      if (!isSamplerLike(options.sampler)) throw invalidType('options.sampler', 'a Sampler', options.sampler);
      // Only the tracker's own options: Fastify's register options (prefix, ...) ride along here.
      const { mode, maxRoutes } = options;
      tracker = new RequestTracker(options.sampler, {
        ...(mode !== undefined && { mode }),
        ...(maxRoutes !== undefined && { maxRoutes }),
      });
    } else {
      throw new TypeError('Expected a RequestTracker for options.tracker or a Sampler for options.sampler');
    }
  } catch (e) {
    done(e as Error);
    return;
  }
  app.decorate?.('jouletrace', tracker);
  // A tracker made here is this app's: it goes with the app (its hold on the end() wrapper and
  // its span arrays would otherwise outlive it). One passed in belongs to the caller.
  if (!(options?.tracker instanceof RequestTracker)) app.addHook('onClose', (_instance: unknown, next: () => void) => {
    tracker.close();
    next();
  });
  // One hook. Fastify routes a request before its onRequest hooks, so the route pattern is known
  // here. The end is the response's end (or its connection's close), seen the way
  // RequestTracker.track() sees it for node:http: Fastify's onResponse hook would add two
  // listeners to every response and cost about 1 µs per request here ("Request ends without
  // listeners" in bench/RESULTS.md).
  app.addHook('onRequest', (req, reply, next) => {
    if (tracker.mode === 'exact') {
      const raw = req.raw;
      tracker.track(raw, reply.raw, fastifyRoute(req), hasBody(raw) ? () => bodyInContext(raw, next) : next);
    } else {
      tracker.track(req.raw, reply.raw, fastifyRoute(req));
      next();
    }
  });
  done();
}

// Whether Fastify will read a body: it parses none without a content-length (other than 0) or
// a transfer-encoding (handle-request.js, Fastify 4 and 5).
function hasBody(raw: IncomingMessage): boolean {
  const h = raw.headers;
  return h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0');
}

// Exact mode: the raw request's events run in the request's context (called there). Fastify
// (4 and 5) reads the body with 'data' and 'end' listeners it adds unbound, and runs the body
// parser (JSON.parse) in its 'end' listener. Node emits those from the connection's HTTP parser,
// in no request's context, so the parsing was charged to no request: 20 JSON bodies of 1.3 MB
// cost the thread 350 ms, of which the requests were charged 18. Bound once per request with a
// body, here rather than in a preParsing hook, which Fastify would run for every request.
function bodyInContext(raw: IncomingMessage, next: () => void): void {
  raw.emit = AsyncResource.bind(raw.emit, 'jouletrace:request-body', raw);
  next();
}

// What fastify-plugin sets: apply to the parent scope, with a readable name, and a name that
// other plugins' `dependencies` and app.hasPlugin() find.
(fastifyEnergy as unknown as Record<symbol, unknown>)[Symbol.for('skip-override')] = true;
(fastifyEnergy as unknown as Record<symbol, unknown>)[Symbol.for('fastify.display-name')] = 'jouletrace';
(fastifyEnergy as unknown as Record<symbol, unknown>)[Symbol.for('plugin-meta')] = { name: 'jouletrace', fastify: '>=4' };

export { RequestTracker };
