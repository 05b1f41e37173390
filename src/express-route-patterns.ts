// The full pattern of an Express route ('/users/:uid/posts/:pid'), read from the app's routers.
//
// req.baseUrl holds the URL a mount path matched, not the mount path: under
// app.use('/users/:uid/posts', posts), it reads '/users/42/posts', and a route label built from it
// would carry the raw URL and one label per user. The routers know the patterns: router 2.3
// (Express 5) keeps each layer's path as given in layer.rawPath, which its own listRoutes()
// reads. The tree is walked once, and again only when a route turns up that the last walk did
// not see (one added later); routes it cannot place get null, and the caller falls back to
// req.baseUrl. That covers Express 4 and router < 2.3 (no rawPath), sub-applications (their
// routers sit behind a closure), regular-expression or array mount paths, and a router mounted
// at several paths.

interface ExpressLayer {
  route?: { path?: unknown };
  rawPath?: unknown;
  handle?: { stack?: unknown };
}
interface ExpressAppLike {
  parent?: unknown;
  _router?: { stack?: unknown };
  router?: { stack?: unknown };
}

// Route object → its pattern from the root app, or null where it has none or several.
const patterns = new WeakMap<object, string | null>();
const MAX_DEPTH = 32; // a router mounted inside itself

/** The route's full pattern, or null when it cannot be known (the caller uses req.baseUrl). */
export function routePattern(route: object, app: unknown): string | null {
  const known = patterns.get(route);
  if (known !== undefined) return known;
  indexApp(app);
  const found = patterns.get(route);
  if (found !== undefined) return found;
  patterns.set(route, null); // not reachable from the root app's routers: not walked for again
  return null;
}

function indexApp(app: unknown): void {
  if (!isObject(app)) return;
  // A sub-application's parent: an app, which is a function.
  let root = app as ExpressAppLike;
  for (let i = 0; i < MAX_DEPTH && isObject(root.parent); i++) root = root.parent as ExpressAppLike;
  let stack: unknown;
  try {
    // Express 4 keeps its router in _router, and its `router` getter throws; Express 5's
    // `router` getter makes one on first use.
    stack = (root._router ?? root.router)?.stack;
  } catch {
    return;
  }
  const found = new Map<object, string | null>();
  walk(stack, '', found, 0);
  for (const [route, pattern] of found) patterns.set(route, pattern);
}

function walk(stack: unknown, prefix: string | null, found: Map<object, string | null>, depth: number): void {
  if (!Array.isArray(stack) || depth > MAX_DEPTH) return;
  for (const layer of stack as ExpressLayer[]) {
    if (layer === null || typeof layer !== 'object') continue;
    const route = layer.route;
    if (route !== null && typeof route === 'object') {
      const pattern = prefix !== null && typeof route.path === 'string' ? `${prefix}${route.path}` || '/' : null;
      // Seen twice (a router mounted at two paths): under which one a request came is not known.
      found.set(route, found.has(route) && found.get(route) !== pattern ? null : pattern);
      continue;
    }
    const child = layer.handle?.stack;
    if (Array.isArray(child)) {
      const mount = typeof layer.rawPath === 'string' && prefix !== null ? joinPattern(prefix, layer.rawPath) : null;
      walk(child, mount, found, depth + 1);
    }
  }
}

// A mount path as Express adds it to req.baseUrl: without its trailing slash ('/' adds nothing).
function joinPattern(prefix: string, path: string): string {
  return prefix + (path.endsWith('/') ? path.slice(0, -1) : path);
}

function isObject(x: unknown): x is object {
  return (typeof x === 'object' && x !== null) || typeof x === 'function';
}
