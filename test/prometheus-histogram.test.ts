// FastHistogram must be indistinguishable from prom-client's Histogram to everything that reads
// it: each test drives one of each with the same calls and compares what the registries give.
import { AggregatorRegistry, Histogram, Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { Sampler } from '../src/index';
import { registerMetrics } from '../src/prometheus';
import { FastHistogram } from '../src/prometheus-histogram';
import type { RequestRecord } from '../src/span-types';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

type Labels = Record<string, string | number>;
interface Pair {
  stock: Histogram<string>;
  fast: FastHistogram<string>;
  registries: [Registry, Registry];
}

function pair(labelNames: string[], buckets = [0.001, 0.01, 0.1, 0.15, 1]): Pair {
  const registries: [Registry, Registry] = [new Registry(), new Registry()];
  const config = { name: 'energy_joules', help: 'Energy.', labelNames, buckets };
  return {
    stock: new Histogram({ ...config, registers: [registries[0]] }),
    fast: new FastHistogram({ ...config, registers: [registries[1]] }),
    registries,
  };
}

async function expectSame(p: Pair): Promise<void> {
  const [a, b] = p.registries;
  expect(await b.metrics()).toBe(await a.metrics());
  expect(await b.getMetricsAsJSON()).toEqual(await a.getMetricsAsJSON());
}

// Deterministic values across the buckets, on their bounds, above the last and below zero.
function values(n: number): number[] {
  const out = [0.001, 0.01, 0.15, 1, 1.5, 0, -0.2, 1e-9];
  let x = 12345;
  for (let i = 0; out.length < n; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    out.push((x / 2 ** 31) ** 3 * 2);
  }
  return out;
}

describe('FastHistogram against prom-client Histogram', () => {
  it('gives the same text and JSON for the same observations, whatever the label order', async () => {
    const p = pair(['method', 'route', 'status_code', 'estimated']);
    const sets: Labels[] = [
      { method: 'GET', route: '/a', status_code: '200', estimated: 'true' },
      { route: '/b/:id', method: 'POST', status_code: 201 },
      { method: 'GET', route: '/a', status_code: '500' },
    ];
    const vs = values(300);
    vs.forEach((v, i) => {
      const l = sets[i % sets.length];
      // The same label set written in another key order is the same series.
      const shuffled = i % 2 ? Object.fromEntries(Object.entries(l).reverse()) : l;
      p.stock.observe(shuffled, v);
      p.fast.observe(shuffled, v);
    });
    await expectSame(p);
    // Buckets are cumulative and end at the count; the sum is the values' sum in order.
    const json = (await p.registries[1].getMetricsAsJSON())[0] as unknown as { values: Array<{ labels: Labels; value: number; metricName: string }> };
    const mine = json.values.filter((x) => x.labels.route === '/a' && x.labels.status_code === '200');
    const counts = mine.filter((x) => x.metricName === 'energy_joules_bucket').map((x) => x.value);
    for (let i = 1; i < counts.length; i++) expect(counts[i]).toBeGreaterThanOrEqual(counts[i - 1]);
    expect(counts[counts.length - 1]).toBe(100);
  });

  it('matches labels(), zero(), remove(), reset(), startTimer() and observations without labels', async () => {
    const p = pair(['route']);
    for (const h of [p.stock, p.fast]) {
      h.labels('/x').observe(0.005);
      h.labels({ route: '/y' }).observe(0.2);
      h.zero({ route: '/z' });
      h.observe({ route: '/x' }, 0.01);
      h.observe(0.3); // no labels: its own series
    }
    await expectSame(p);
    for (const h of [p.stock, p.fast]) h.remove('/x');
    await expectSame(p);
    for (const h of [p.stock, p.fast]) h.zero({ route: '/y' }); // back to zero, in place
    await expectSame(p);
    for (const h of [p.stock, p.fast]) {
      h.reset();
      h.observe({ route: '/after' }, 0.05);
    }
    await expectSame(p);
    const end = p.fast.startTimer({ route: '/timed' });
    expect(end()).toBeGreaterThanOrEqual(0);
    expect(await p.registries[1].metrics()).toContain('energy_joules_count{route="/timed"} 1');
  });

  it('refuses what prom-client refuses', () => {
    const p = pair(['route']);
    for (const h of [p.stock, p.fast]) {
      expect(() => h.observe({ nope: 'x' } as never, 1)).toThrow(/Added label "nope" is not included/);
      expect(() => h.observe({ route: '/a' }, NaN)).toThrow(TypeError);
      expect(() => h.labels('/a', '/b')).toThrow(/Invalid number of arguments/);
    }
    for (const h of [p.stock, p.fast]) {
      expect(() => h.observe('x' as never, 1)).toThrow(/Value is not a valid number: x/);
      expect(() => h.labels(null as never).observe(1)).toThrow(TypeError);
      expect(() => h.observe(Object.create({ nope: 'x' }), 1)).toThrow(/Added label "nope"/);
    }
    expect(() => new FastHistogram({ name: 'x', help: 'x', enableExemplars: true, registers: [] })).toThrow(/exemplars/);
    expect(() => new FastHistogram({ name: 'x', help: 'x', buckets: [1, 0.5], registers: [] })).toThrow(/strictly increasing/);
  });

  it('shows a histogram without labels at zero from the start, and survives a failed construction in its registry', async () => {
    const registries: [Registry, Registry] = [new Registry(), new Registry()];
    const config = { name: 'plain_joules', help: 'Plain.', buckets: [0.1, 1] };
    await expectSame({ stock: new Histogram({ ...config, registers: [registries[0]] }), fast: new FastHistogram({ ...config, registers: [registries[1]] }), registries });
    // prom-client registers before its own checks: the half-built metric stays in the registry.
    expect(() => new Histogram({ name: 'bad', help: 'Bad.', labelNames: ['le'], registers: [registries[0]] })).toThrow(/reserved/);
    expect(() => new FastHistogram({ name: 'bad', help: 'Bad.', labelNames: ['le'], registers: [registries[1]] })).toThrow(/reserved/);
    expect(await registries[1].metrics()).toBe(await registries[0].metrics());
  });

  it('aggregates across cluster workers as prom-client does', async () => {
    const p = pair(['route']);
    for (const [i, v] of values(50).entries()) {
      p.stock.observe({ route: `/r${i % 4}` }, v);
      p.fast.observe({ route: `/r${i % 4}` }, v);
    }
    const [a, b] = p.registries;
    const stock = AggregatorRegistry.aggregate([await a.getMetricsAsJSON(), await a.getMetricsAsJSON()]);
    const fast = AggregatorRegistry.aggregate([await b.getMetricsAsJSON(), await b.getMetricsAsJSON()]);
    expect(await fast.metrics()).toBe(await stock.metrics());
  });
});

describe('the request histogram of registerMetrics', () => {
  it('counts into the series the registry shows, also after the registry resets them', async () => {
    const s = new Sampler({ source: 'model', threads: 'off' });
    cleanups.push(() => s.close());
    const m = registerMetrics(s, { appMetrics: false });
    cleanups.push(() => m.close());
    const record = (route: string, joules: number): RequestRecord => ({
      method: 'GET',
      route,
      statusCode: 200,
      startNs: 0,
      endNs: 1,
      durationNs: 1,
      joules,
      dynamicJoules: null,
      onCpuNs: 1,
      estimated: true,
      incomplete: false,
      endedEarly: false,
      mode: 'shared',
    });
    const count = async (route: string) => {
      const line = (await m.registry.metrics()).split('\n').find((l) => l.startsWith(`http_server_request_energy_joules_count{method="GET",route="${route}"`));
      return line === undefined ? undefined : Number(line.split(' ').pop());
    };
    m.observeRequests([record('/a', 0.01), record('/a', 0.02), record('/b', 0.2)]);
    expect(await count('/a')).toBe(2);
    expect(await count('/b')).toBe(1);
    m.registry.resetMetrics();
    expect(await count('/a')).toBeUndefined();
    m.observeRequests([record('/a', 0.01)]);
    expect(await count('/a')).toBe(1);
  });
});
