// The mount pattern of an Express route ('/users/:uid/posts' for a route '/:pid' in a router
// mounted there), read from the app's routers.
//
// req.baseUrl holds the URL a mount path matched, not the mount path: under
// app.use('/users/:uid/posts', posts), it reads '/users/42/posts', and a route label built from it
// would carry the raw URL and one label per user. The routers know the patterns: router 2.3
// (Express 5) keeps each layer's path as given in layer.rawPath, which its own listRoutes()
// reads. An app's routers are walked once, and again when a route turns up that the last walk
// did not see (one added later), though not so often that walks take over 1% of the thread.
//
// A sub-application's routers sit behind a closure (Express mounts it as a plain function), out
// of its parent's walk: its routes are placed by walking the sub-application itself, under its
// mountpath and its parents'. Where the walk can still place a route wrongly (a router reused in
// a second app, or mounted again after the walk; a sub-application mounted through a router does
// not learn its parent), a mount pattern is used only where it fits the mount path the request
// actually came by (req.baseUrl as the route matched); elsewhere the caller falls back to that
// URL. So do Express 4 and router < 2.3 (no rawPath), regular-expression and array mount paths,
// and a router mounted at two paths.

interface ExpressLayer {
  route?: unknown;
  rawPath?: unknown;
  handle?: { stack?: unknown };
}
interface ExpressAppLike {
  parent?: unknown;
  mountpath?: unknown;
  _router?: { stack?: unknown };
  router?: { stack?: unknown };
}

interface AppRoutes {
  // route object → the pattern of the mounts above it within the app, or null where it has none
  // or several
  readonly mounts: WeakMap<object, string | null>;
  nextWalkAt: number; // performance.now() ms
}
const apps = new WeakMap<object, AppRoutes>();
const MAX_DEPTH = 32;
const MAX_LAYERS = 100_000; // a walk's bound, whatever the tree (a router mounted in itself)
// A route the last walk did not see sends the app's routers to be walked again, but not within
// a hundred times the last walk's duration of it, nor within REWALK_MIN_MS: a router built per
// request, or a hand-made req.route, would otherwise walk them on every request (about 80 µs for
// 500 mounted routers here). Walks then take at most about 1% of the thread.
const REWALK_FACTOR = 100;
export const REWALK_MIN_MS = 1;

/**
 * The pattern of the mounts above `route` within `app` and above `app` ('' at the root app's
 * root), if it fits `base`, the mount path the request came by; else null (the caller uses
 * `base`).
 */
export function mountPattern(route: object, app: unknown, base: string): string | null {
  if (!isObject(app)) return null;
  const prefix = appPrefix(app as ExpressAppLike);
  if (prefix === null) return null;
  let known = apps.get(app);
  if (known === undefined) apps.set(app, (known = { mounts: new WeakMap(), nextWalkAt: -Infinity }));
  let mount = known.mounts.get(route);
  if (mount === undefined) {
    const t0 = performance.now();
    if (t0 < known.nextWalkAt) return null;
    walkApp(app as ExpressAppLike, known.mounts);
    const t1 = performance.now();
    known.nextWalkAt = t1 + Math.max(REWALK_MIN_MS, REWALK_FACTOR * (t1 - t0));
    mount = known.mounts.get(route);
    if (mount === undefined) return null;
  }
  if (mount === null) return null;
  const pattern = prefix + mount;
  return patternMatches(pattern, base) ? pattern : null;
}

function isObject(x: unknown): x is object {
  return (typeof x === 'object' && x !== null) || typeof x === 'function';
}

// Where a sub-application sits: app.use(path, subApp) mounts it on the parent app's own router and
// gives it `parent` and `mountpath` (an app is a function). null: a mount path that is not a string.
function appPrefix(app: ExpressAppLike): string | null {
  let prefix = '';
  let a = app;
  for (let i = 0; i < MAX_DEPTH && isObject(a.parent); i++) {
    if (typeof a.mountpath !== 'string') return null;
    prefix = joinMount('', a.mountpath) + prefix;
    a = a.parent as ExpressAppLike;
  }
  return prefix;
}

function walkApp(app: ExpressAppLike, mounts: WeakMap<object, string | null>): void {
  let stack: unknown;
  try {
    // Express 4 keeps its router in _router, and its `router` getter throws; Express 5's
    // `router` getter makes one on first use.
    stack = (app._router ?? app.router)?.stack;
  } catch {
    return;
  }
  const found = new Map<object, string | null>();
  walk(stack, '', found, new Set(), { layers: 0 });
  for (const [route, mount] of found) mounts.set(route, mount);
}

function walk(stack: unknown, prefix: string | null, found: Map<object, string | null>, ancestors: Set<unknown>, seen: { layers: number }): void {
  // A stack among its own ancestors: a router mounted inside itself.
  if (!Array.isArray(stack) || ancestors.has(stack) || ancestors.size >= MAX_DEPTH) return;
  ancestors.add(stack);
  for (const layer of stack as ExpressLayer[]) {
    if (++seen.layers > MAX_LAYERS) break;
    if (layer === null || typeof layer !== 'object') continue;
    const route = layer.route;
    if (isObject(route)) {
      // Seen twice (a router mounted at two paths): under which one a request came is not known.
      found.set(route, found.has(route) && found.get(route) !== prefix ? null : prefix);
      continue;
    }
    const child = layer.handle?.stack;
    if (Array.isArray(child)) {
      const mount = typeof layer.rawPath === 'string' && prefix !== null ? joinMount(prefix, layer.rawPath) : null;
      walk(child, mount, found, ancestors, seen);
    }
  }
  ancestors.delete(stack);
}

// A mount path as Express adds it to req.baseUrl: without its trailing slash ('/' adds nothing).
function joinMount(prefix: string, path: string): string {
  return prefix + (path.endsWith('/') ? path.slice(0, -1) : path);
}

/**
 * Whether the URL path `url` fits `pattern` as a whole. Express matches paths case-insensitively
 * unless told otherwise, and so does this. Parameters (':id') and wildcards ('*rest') are
 * checked; optional groups and other syntax are not, and such a pattern never fits.
 */
const patternRegExps = new Map<string, RegExp | null>();
export function patternMatches(pattern: string, url: string): boolean {
  if (pattern === url) return true;
  let re = patternRegExps.get(pattern);
  if (re === undefined) {
    re = /[{}()[\]?+*\\]/.test(pattern.replace(/\*[A-Za-z_]\w*/g, ''))
      ? null
      : new RegExp(
          '^' +
            pattern
              .replace(/[.^$|]/g, '\\$&')
              .replace(/:[A-Za-z_]\w*/g, '[^/]+')
              .replace(/\*[A-Za-z_]\w*/g, '.+') +
            '$',
          'i',
        );
    if (patternRegExps.size < 1000) patternRegExps.set(pattern, re);
  }
  return re !== null && re.test(url);
}
