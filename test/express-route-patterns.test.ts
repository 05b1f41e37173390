// Express route patterns read from an app's routers (src/express-route-patterns.ts), without a
// server: the router tree is what Express builds, or a plain object shaped like it.
import express from 'express';
import { describe, expect, it } from 'vitest';
import { mountPattern, patternMatches, REWALK_MIN_MS } from '../src/express-route-patterns';

const routeOf = (router: { stack: Array<{ route?: object }> }, i = 0) => router.stack.filter((l) => l.route)[i].route!;

describe('Express route patterns', () => {
  it('places a route under its mounts, and only where they fit the URL the request came by', () => {
    const app = express();
    const posts = express.Router();
    posts.get('/:pid', () => {});
    app.use('/users/:uid/posts/', posts); // a trailing slash adds nothing, as in req.baseUrl
    const route = routeOf(posts as never);
    expect(mountPattern(route, app, '/users/42/posts')).toBe('/users/:uid/posts');
    expect(mountPattern(route, app, '/USERS/42/posts')).toBe('/users/:uid/posts'); // case-insensitive, as Express
    expect(mountPattern(route, app, '/elsewhere')).toBeNull();
    expect(mountPattern(route, {}, '/users/42/posts')).toBeNull(); // no routers: the caller uses the URL
  });

  it('walks the routers again for a route added later, but not for every unknown route', async () => {
    let walks = 0;
    const layers: unknown[] = [];
    const app = {
      get router() {
        walks++;
        return { stack: layers };
      },
    };
    const t0 = performance.now();
    for (let i = 0; i < 2000; i++) expect(mountPattern({ path: '/made-per-request' }, app, '')).toBeNull();
    const elapsedMs = performance.now() - t0;
    // One walk, then at most one per REWALK_MIN_MS (or a hundred times a walk's duration).
    expect(walks).toBeGreaterThan(0);
    expect(walks).toBeLessThanOrEqual(1 + Math.floor(elapsedMs / REWALK_MIN_MS));
    const late = { path: '/late' };
    layers.push({ route: late });
    // Found once the next walk is due (a hundred times the last walk's duration, 1 ms at least).
    let found: string | null = null;
    for (let i = 0; i < 200 && found === null; i++) {
      await new Promise((r) => setTimeout(r, 10));
      found = mountPattern(late, app, '');
    }
    expect(found).toBe('');
  });

  it('matches parameters and wildcards, and trusts no other pattern syntax', () => {
    expect(patternMatches('/a/:id/b', '/a/7/b')).toBe(true);
    expect(patternMatches('/a/:id/b', '/a/7/8/b')).toBe(false);
    expect(patternMatches('/files/*rest', '/files/x/y.txt')).toBe(true);
    expect(patternMatches('/v1.0', '/v1x0')).toBe(false); // a dot is not a wildcard
    expect(patternMatches('/a{/:opt}', '/a')).toBe(false);
    expect(patternMatches('/a{/:opt}', '/a{/:opt}')).toBe(true); // the same string always fits
  });
});
