// The mount pattern of an Express route ('/users/:uid/posts' for a route '/:pid' in a router
// mounted there), read from the app's routers.
//
// req.baseUrl holds the URL a mount path matched, not the mount path: under
// app.use('/users/:uid/posts', posts), it reads '/users/42/posts', and a route label built from it
// would carry the raw URL and one label per user. The routers know the patterns: router 2.3
// (Express 5) keeps each layer's path as given in layer.rawPath, which its own listRoutes()
// reads. An app's routers are walked once, and again when a route turns up that the last walk
// did not see (one added later).
//
// A walk can place a route wrongly: a router reused behind a sub-application (its routers sit
// behind a closure, out of the walk's sight), one mounted again after the walk, a sub-application
// mounted through a router (it does not learn its parent). So a mount pattern is used only where
// it matches the mount path the request actually came by (req.baseUrl as the route matched);
// elsewhere the caller falls back to that URL. So do Express 4 and router < 2.3 (no rawPath),
// regular-expression and array mount paths, and a router mounted at two paths.

interface ExpressLayer {
  route?: unknown;
  rawPath?: unknown;
  handle?: { stack?: unknown };
}
interface ExpressAppLike {
  parent?: unknown;
  _router?: { stack?: unknown };
  router?: { stack?: unknown };
}

// Per root app: route object → the pattern of the mounts above it, or null where it has none
// or several.
const appMounts = new WeakMap<object, WeakMap<object, string | null>>();
const MAX_DEPTH = 32;
const MAX_LAYERS = 100_000; // a walk's bound, whatever the tree (a router mounted in itself)

/**
 * The pattern of the mounts above `route` ('' at the app's root) if it matches `base`, the mount
 * path the request came by; else null (the caller uses `base`).
 */
export function mountPattern(route: object, app: unknown, base: string): string | null {
  const root = rootApp(app);
  if (root === null) return null;
  let mounts = appMounts.get(root);
  if (mounts === undefined) appMounts.set(root, (mounts = new WeakMap()));
  let mount = mounts.get(route);
  if (mount === undefined) {
    walkApp(root, mounts);
    mount = mounts.get(route);
    // Not reachable through the app's routers: not walked for again.
    if (mount === undefined) mounts.set(route, (mount = null));
  }
  return mount !== null && patternMatches(mount, base) ? mount : null;
}

function isObject(x: unknown): x is object {
  return (typeof x === 'object' && x !== null) || typeof x === 'function';
}

// A sub-application mounted with app.use() knows its parent app (an app is a function).
function rootApp(app: unknown): object | null {
  if (!isObject(app)) return null;
  let root = app as ExpressAppLike;
  for (let i = 0; i < MAX_DEPTH && isObject(root.parent); i++) root = root.parent as ExpressAppLike;
  return root;
}

function walkApp(root: ExpressAppLike, mounts: WeakMap<object, string | null>): void {
  let stack: unknown;
  try {
    // Express 4 keeps its router in _router, and its `router` getter throws; Express 5's
    // `router` getter makes one on first use.
    stack = (root._router ?? root.router)?.stack;
  } catch {
    return;
  }
  const found = new Map<object, string | null>();
  walk(stack, '', found, new Set(), { layers: 0 });
  for (const [route, mount] of found) mounts.set(route, mount);
}

function walk(stack: unknown, prefix: string | null, found: Map<object, string | null>, path: Set<unknown>, seen: { layers: number }): void {
  if (!Array.isArray(stack) || path.has(stack) || path.size >= MAX_DEPTH) return;
  path.add(stack);
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
      walk(child, mount, found, path, seen);
    }
  }
  path.delete(stack);
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
