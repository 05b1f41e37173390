// A request's route function (or routeOf) that throws or gives no string: the request counts as
// (unmatched), and one that throws is told of once.
import { afterEach, describe, expect, it } from 'vitest';
import { RequestTracker, Sampler, type RequestRecord } from '../src/index';

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

async function until(done: () => boolean, ms = 3000): Promise<void> {
  for (const end = Date.now() + ms; !done() && Date.now() < end; ) await new Promise((r) => setTimeout(r, 10));
}

describe('route functions', () => {
  // A routeOf with a bug put every request under (unmatched) without a word.
  it('counts a request whose route function throws as (unmatched), and warns once that it threw', async () => {
    const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs' }).start();
    cleanups.push(() => sampler.close());
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    cleanups.push(() => process.off('warning', onWarning));
    for (const mode of ['shared', 'exact'] as const) {
      const tracker = new RequestTracker(sampler, { mode });
      cleanups.push(() => tracker.close());
      const records: RequestRecord[] = [];
      tracker.onRequest((rs) => records.push(...rs));
      const routes = [
        () => {
          throw new Error('bug in routeOf');
        },
        () => {
          throw new Error('again');
        },
        () => undefined as unknown as string, // no match: no warning
      ];
      for (const route of routes) tracker.end(tracker.start('GET', route), 200);
      await until(() => records.length === routes.length);
      expect(records.map((r) => r.route), mode).toEqual(['(unmatched)', '(unmatched)', '(unmatched)']);
    }
    await new Promise((r) => setImmediate(r));
    expect(warnings.map((w) => [(w as Error & { code?: string }).code, w.message])).toEqual([
      [
        'JOULETRACE_ROUTE_THREW',
        "a request's route function (or the tracker's routeOf) threw: bug in routeOf; its requests count as (unmatched) (warned once)",
      ],
    ]);
  });
});
