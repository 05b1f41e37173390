// OpenTelemetry: hardware semantic-convention instruments read through an SDK MetricReader,
// span and request energy histograms, and energy put on the OTel span active at begin.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { context, diag, DiagLogLevel, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { AggregationTemporality, DataPointType, MeterProvider, MetricReader, type MetricData } from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { Worker } from 'node:worker_threads';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { RequestTracker, Sampler } from '../src/index';
import { registerOpenTelemetry } from '../src/opentelemetry';
import type { RequestRecord, SpanResult } from '../src/span-types';
import { createEmulatedPowercap } from './fixtures/emulated-devices';
import { liveRunEndListeners } from './fixtures/run-end-listeners';

class ManualReader extends MetricReader {
  protected async onShutdown(): Promise<void> {}
  protected async onForceFlush(): Promise<void> {}
}

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const contextManager = new AsyncLocalStorageContextManager();
beforeAll(() => {
  context.setGlobalContextManager(contextManager.enable());
});
afterAll(() => {
  context.disable();
});

function setup(opts: { threads?: 'off'; maxThreads?: number } = {}) {
  const sampler = new Sampler({ source: 'model', intervalUs: 1000, ...opts }).start();
  const reader = new ManualReader();
  const meterProvider = new MeterProvider({ readers: [reader] });
  const exporter = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  cleanups.push(() => sampler.close(), () => meterProvider.shutdown(), () => tracerProvider.shutdown());
  const collect = async (): Promise<Map<string, MetricData>> => {
    const { resourceMetrics, errors } = await reader.collect();
    expect(errors).toEqual([]);
    const out = new Map<string, MetricData>();
    for (const sm of resourceMetrics.scopeMetrics) {
      expect(sm.scope.name).toBe('jouletrace');
      for (const m of sm.metrics) out.set(m.descriptor.name, m);
    }
    return out;
  };
  return { sampler, meterProvider, tracer: tracerProvider.getTracer('test'), exporter, collect };
}

const busy = (ms: number) => {
  const end = performance.now() + ms;
  while (performance.now() < end);
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How long the sampler's run has gone, to its last sample. */
function runAgeNs(s: Sampler): bigint {
  const t = s.totals();
  return t.timeNs - t.startNs;
}

function requestRecord(joules: number, context: unknown, now = Number(process.hrtime.bigint())): RequestRecord {
  return {
    method: 'GET',
    route: '/orders/:id',
    statusCode: 200,
    startNs: now - 3e6,
    endNs: now,
    durationNs: 3e6,
    joules,
    dynamicJoules: null,
    onCpuNs: 1e6,
    estimated: true,
    mode: 'shared',
    incomplete: false,
    context,
  } as RequestRecord;
}

function spanResult(label: string, joules: number, extra: Partial<SpanResult> & { context?: unknown } = {}): SpanResult {
  const now = Number(process.hrtime.bigint());
  return { label, tid: process.pid, startNs: now - 2e6, endNs: now, onCpuNs: 1e6, joules, dynamicJoules: null, estimated: true, incomplete: false, ...extra };
}

/** A model sampler without threads, a meter provider of that temporality, and its one hw.energy point. */
function energyStream(temporality: AggregationTemporality) {
  const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'off' }).start();
  const reader = new ManualReader({ aggregationTemporalitySelector: () => temporality });
  const meterProvider = new MeterProvider({ readers: [reader] });
  cleanups.push(() => sampler.close(), () => meterProvider.shutdown());
  const energy = async (): Promise<number> => {
    const { resourceMetrics } = await reader.collect();
    const points = resourceMetrics.scopeMetrics.flatMap((sm) => sm.metrics).filter((m) => m.descriptor.name === 'hw.energy').flatMap((m) => m.dataPoints as Array<{ value: unknown }>);
    expect(points).toHaveLength(1);
    return points[0].value as number;
  };
  return { sampler, meterProvider, energy };
}

describe('registerOpenTelemetry', () => {
  it('reports hw.energy (J) and hw.power (W) per RAPL domain with hardware semantic-convention attributes', async () => {
    const { sampler, meterProvider, collect } = setup();
    const h = registerOpenTelemetry(sampler, { meterProvider });
    cleanups.push(() => h.close());
    busy(100);
    // hw.power waits for a window of 0.5 s, the first one too.
    while (runAgeNs(sampler) < 500_000_000n) await sleep(20);
    const m1 = await collect();
    const energy = m1.get('hw.energy')!;
    expect(energy.descriptor.unit).toBe('J');
    expect(energy.dataPointType).toBe(DataPointType.SUM);
    expect((energy as { isMonotonic?: boolean }).isMonotonic).toBe(true);
    expect(energy.dataPoints).toHaveLength(1);
    const dp = energy.dataPoints[0];
    expect(dp.attributes).toEqual({ 'hw.id': 'rapl-package-0', 'hw.name': 'package', 'hw.type': 'cpu', 'jouletrace.estimated': true });
    const total = sampler.totals().readings[0].joules;
    expect(dp.value as number).toBeGreaterThan(0);
    expect(Math.abs((dp.value as number) - total) / total).toBeLessThan(0.2);

    const power = m1.get('hw.power')!;
    expect(power.descriptor.unit).toBe('W');
    expect(power.dataPointType).toBe(DataPointType.GAUGE);
    // The model never reports below its 12 W idle power.
    expect(power.dataPoints[0].value as number).toBeGreaterThanOrEqual(11.5);

    const parts = m1.get('jouletrace.process.energy')!;
    expect(parts.dataPoints.map((p) => p.attributes['jouletrace.part']).sort()).toEqual(['baseline', 'other', 'process']);

    // Each part is the sampler's own figure for it. Stopped first, so that the collection and
    // attribution() read the same cumulative parts (the tracker counts this run from zero).
    sampler.stop();
    const a = sampler.attribution();
    // The busy loop above ran on this thread, and the model has 12 W idle: process and baseline
    // hold figures of their own, so a part observed under another's name shows.
    expect(a.process).toBeGreaterThan(0);
    expect(a.baseline).toBeGreaterThan(0);
    const stopped = (await collect()).get('jouletrace.process.energy')!;
    const byPart = Object.fromEntries(stopped.dataPoints.map((p) => [p.attributes['jouletrace.part'], p]));
    for (const part of ['process', 'baseline', 'other'] as const) {
      expect(byPart[part].attributes).toEqual({ 'jouletrace.part': part, 'jouletrace.estimated': true });
      expect(byPart[part].value as number).toBeCloseTo(a[part], 9);
    }

    // Monotonic across a sampler restart.
    sampler.start();
    await sleep(50);
    const m2 = await collect();
    expect(m2.get('hw.energy')!.dataPoints[0].value as number).toBeGreaterThan(dp.value as number);
  });

  // Hardware counters in every domain the conventions map: dram is memory, uncore (the client
  // parts' graphics) gpu, core and uncore name their own package in hw.parent, and psys, the
  // whole platform, is the host's (hw.host.*) so that a sum over hw.energy never counts it twice.
  it('maps powercap domains to hw.type and hw.parent, and psys to hw.host.energy / hw.host.power', async () => {
    const e = createEmulatedPowercap([
      {
        name: 'package-0',
        energyUj: 1_000_000,
        children: [
          { name: 'core', energyUj: 1_000_000 },
          { name: 'uncore', energyUj: 1_000_000 },
          { name: 'dram', energyUj: 1_000_000 },
        ],
      },
      { name: 'psys', energyUj: 1_000_000 },
      { name: 'package-1', energyUj: 1_000_000, children: [{ name: 'core', energyUj: 1_000_000 }] },
    ]);
    cleanups.push(() => e.close());
    const sampler = new Sampler({
      source: 'powercap',
      powercapRoot: e.powercapRoot,
      liveCheckMs: 0,
      cpuIdentity: { vendor: 'intel', family: 6, model: 0x55 },
      threads: 'off',
      intervalUs: 1000,
    }).start();
    const reader = new ManualReader();
    const meterProvider = new MeterProvider({ readers: [reader] });
    cleanups.push(() => sampler.close(), () => meterProvider.shutdown());
    const h = registerOpenTelemetry(sampler, { meterProvider, traces: false });
    cleanups.push(() => h.close());

    // Distinct joules per zone, so that a figure put under another zone's attributes shows.
    const used: Record<string, [string, number]> = {
      'rapl-package-0': ['intel-rapl:0', 7],
      'rapl-core-0': ['intel-rapl:0:0', 3],
      'rapl-uncore-0': ['intel-rapl:0:1', 2],
      'rapl-dram-0': ['intel-rapl:0:2', 5],
      'rapl-psys-0': ['intel-rapl:1', 19],
      'rapl-package-1': ['intel-rapl:2', 11],
      'rapl-core-1': ['intel-rapl:2:0', 6],
    };
    for (const [zone, joules] of Object.values(used)) e.set(zone, 1_000_000 + joules * 1_000_000);
    // The counters stand still from here: wait until the sampler has read every new value.
    const deadline = Date.now() + 10_000;
    while (sampler.totals().readings.reduce((a, r) => a + r.joules, 0) < 53 && Date.now() < deadline) await sleep(5);
    // And for the first power window's 0.5 s.
    while (runAgeNs(sampler) < 500_000_000n) await sleep(20);
    const before = sampler.totals();

    const { resourceMetrics, errors } = await reader.collect();
    expect(errors).toEqual([]);
    const after = sampler.totals();
    const m = new Map(resourceMetrics.scopeMetrics.flatMap((sm) => sm.metrics.map((x) => [x.descriptor.name, x] as const)));
    const points = (name: string) => Object.fromEntries(m.get(name)!.dataPoints.map((p) => [p.attributes['hw.id'] as string, p]));

    const energy = points('hw.energy');
    const hostEnergy = points('hw.host.energy');
    expect(Object.keys(energy).sort()).toEqual(['rapl-core-0', 'rapl-core-1', 'rapl-dram-0', 'rapl-package-0', 'rapl-package-1', 'rapl-uncore-0']);
    expect(Object.keys(hostEnergy)).toEqual(['rapl-psys-0']);
    const attrs = (id: string) => ({ ...(id === 'rapl-psys-0' ? hostEnergy : energy)[id].attributes });
    expect(attrs('rapl-package-0')).toEqual({ 'hw.id': 'rapl-package-0', 'hw.name': 'package', 'hw.type': 'cpu' });
    expect(attrs('rapl-core-0')).toEqual({ 'hw.id': 'rapl-core-0', 'hw.name': 'core', 'hw.type': 'cpu', 'hw.parent': 'rapl-package-0' });
    expect(attrs('rapl-uncore-0')).toEqual({ 'hw.id': 'rapl-uncore-0', 'hw.name': 'uncore', 'hw.type': 'gpu', 'hw.parent': 'rapl-package-0' });
    expect(attrs('rapl-dram-0')).toEqual({ 'hw.id': 'rapl-dram-0', 'hw.name': 'dram', 'hw.type': 'memory' });
    expect(attrs('rapl-psys-0')).toEqual({ 'hw.id': 'rapl-psys-0', 'hw.name': 'psys' });
    expect(attrs('rapl-package-1')).toEqual({ 'hw.id': 'rapl-package-1', 'hw.name': 'package', 'hw.type': 'cpu' });
    expect(attrs('rapl-core-1')).toEqual({ 'hw.id': 'rapl-core-1', 'hw.name': 'core', 'hw.type': 'cpu', 'hw.parent': 'rapl-package-1' });
    for (const [id, [, joules]] of Object.entries(used)) {
      expect((id === 'rapl-psys-0' ? hostEnergy : energy)[id].value as number, id).toBeCloseTo(joules, 9);
    }

    // Power over the first window, the run's start to the sample the collection read, which lies
    // between the two totals() around it; the same attributes, psys again the host's.
    const power = points('hw.power');
    const hostPower = points('hw.host.power');
    expect(Object.keys(power).sort()).toEqual(Object.keys(energy).sort());
    expect(Object.keys(hostPower)).toEqual(['rapl-psys-0']);
    const seconds = (t: { startNs: bigint; timeNs: bigint }) => Number(t.timeNs - t.startNs) / 1e9;
    for (const [id, [, joules]] of Object.entries(used)) {
      const p = (id === 'rapl-psys-0' ? hostPower : power)[id];
      expect(p.attributes).toEqual(attrs(id));
      expect(p.value as number, id).toBeGreaterThanOrEqual(joules / seconds(after) - 1e-9);
      expect(p.value as number, id).toBeLessThanOrEqual(joules / seconds(before) + 1e-9);
    }
  });

  // While the source's reads failed, the domain kept its last value and hw.power read 0 W.
  it('leaves hw.power out for a domain whose reads failed and whose energy stood still', async () => {
    const e = createEmulatedPowercap([{ name: 'package-0', energyUj: 1_000_000 }]);
    cleanups.push(() => e.close());
    const sampler = new Sampler({ source: 'powercap', powercapRoot: e.powercapRoot, liveCheckMs: 0, cpuIdentity: { vendor: 'intel', family: 6, model: 0x55 }, threads: 'off', intervalUs: 1000 }).start();
    // Delta temporality: a cumulative reader goes on exporting the last value it was given.
    const reader = new ManualReader({ aggregationTemporalitySelector: () => AggregationTemporality.DELTA });
    const meterProvider = new MeterProvider({ readers: [reader] });
    cleanups.push(() => sampler.close(), () => meterProvider.shutdown());
    const h = registerOpenTelemetry(sampler, { meterProvider, traces: false });
    cleanups.push(() => h.close());
    const powerPoints = async () => {
      await sleep(560); // past PowerWindow's 0.5 s
      const { resourceMetrics, errors } = await reader.collect();
      expect(errors).toEqual([]);
      const m = resourceMetrics.scopeMetrics.flatMap((sm) => sm.metrics).find((x) => x.descriptor.name === 'hw.power');
      return (m?.dataPoints ?? []).map((p) => [p.attributes['hw.id'], p.value]);
    };
    expect(await powerPoints()).toEqual([['rapl-package-0', 0]]); // standing still, read fine
    fs.writeFileSync(path.join(e.zonePath('intel-rapl:0'), 'energy_uj'), 'not a number\n');
    while (sampler.stats().timing.readErrors === 0) await sleep(5);
    expect(await powerPoints()).toEqual([]);
  });

  // OpenTelemetry exported no sampler health: a source whose reads failed, a counter that started
  // again (energy lost) or samples dropped showed nowhere, where Prometheus counts them all.
  it('counts samples, read errors (per domain too) and energy restarts, across runs and registrations, never going down', async () => {
    const e = createEmulatedPowercap([{ name: 'package-0', energyUj: 1_000_000, children: [{ name: 'dram', energyUj: 5000 }] }]);
    cleanups.push(() => e.close());
    const sampler = new Sampler({ source: 'powercap', powercapRoot: e.powercapRoot, liveCheckMs: 0, cpuIdentity: { vendor: 'intel', family: 6, model: 0x55 }, threads: 'off', intervalUs: 1000 });
    const reader = new ManualReader();
    const meterProvider = new MeterProvider({ readers: [reader] });
    cleanups.push(() => sampler.close(), () => meterProvider.shutdown());
    let h = registerOpenTelemetry(sampler, { meterProvider, traces: false });
    cleanups.push(() => h.close());
    const health = async () => {
      const { resourceMetrics, errors } = await reader.collect();
      expect(errors).toEqual([]);
      const out: Record<string, number> = {};
      for (const m of resourceMetrics.scopeMetrics.flatMap((sm) => sm.metrics)) {
        if (!m.descriptor.name.startsWith('jouletrace.sampler.')) continue;
        for (const p of m.dataPoints) out[m.descriptor.name + (p.attributes['hw.id'] ? `:${p.attributes['hw.id']}` : '')] = p.value as number;
      }
      return out;
    };
    const runs: Array<ReturnType<Sampler['stats']>['timing']> = [];
    const run = async (restart: boolean) => {
      sampler.start();
      if (restart) {
        e.set('intel-rapl:0', 400_000); // started again: the energy since its last read is lost
        while (sampler.stats().timing.counterRestarts === 0) await sleep(2);
      }
      while (sampler.stats().timing.byDomain[1].readErrors < 3) await sleep(2);
      sampler.stop();
      runs.push(sampler.stats().timing);
    };
    const sum = (f: (t: (typeof runs)[number]) => number) => runs.reduce((a, t) => a + f(t), 0);
    const expected = () => ({
      'jouletrace.sampler.samples': sum((t) => t.samples),
      'jouletrace.sampler.dropped_samples': 0,
      'jouletrace.sampler.missed_deadlines': sum((t) => t.missedDeadlines),
      'jouletrace.sampler.read_errors': sum((t) => t.readErrors),
      'jouletrace.sampler.energy_restarts': sum((t) => t.counterRestarts),
      'jouletrace.sampler.domain_read_errors:rapl-package-0': sum((t) => t.byDomain[0].readErrors),
      'jouletrace.sampler.domain_read_errors:rapl-dram-0': sum((t) => t.byDomain[1].readErrors),
    });

    fs.writeFileSync(path.join(e.zonePath('intel-rapl:0:0'), 'energy_uj'), 'not a number\n'); // dram fails all along
    await run(true);
    const first = await health();
    expect(first).toEqual(expected());
    expect(first['jouletrace.sampler.energy_restarts']).toBe(1);
    expect(first['jouletrace.sampler.domain_read_errors:rapl-dram-0']).toBeGreaterThanOrEqual(3);
    // A new run starts the sampler's counts afresh: the counters go on from the first run's.
    await run(false);
    const second = await health();
    expect(second).toEqual(expected());
    // A registration closed and made again on the meter goes on from the closed one's.
    h.close();
    h = registerOpenTelemetry(sampler, { meterProvider, traces: false });
    await run(false);
    const third = await health();
    expect(third).toEqual(expected());
    for (const [k, v] of Object.entries(first)) expect(second[k] >= v && third[k] >= second[k], k).toBe(true);
    expect(third['jouletrace.sampler.samples']).toBeGreaterThan(second['jouletrace.sampler.samples']);
    // Units and attributes: the per-domain counter's are its domain's hw.energy attributes.
    const { resourceMetrics } = await reader.collect();
    const metrics = new Map(resourceMetrics.scopeMetrics.flatMap((sm) => sm.metrics.map((m) => [m.descriptor.name, m] as const)));
    expect(Object.fromEntries(Object.keys(expected()).map((k) => k.split(':')[0]).map((n) => [n, metrics.get(n)!.descriptor.unit]))).toEqual({
      'jouletrace.sampler.samples': '{sample}',
      'jouletrace.sampler.dropped_samples': '{sample}',
      'jouletrace.sampler.missed_deadlines': '{period}',
      'jouletrace.sampler.read_errors': '{read}',
      'jouletrace.sampler.energy_restarts': '{restart}',
      'jouletrace.sampler.domain_read_errors': '{read}',
    });
    expect(metrics.get('jouletrace.sampler.domain_read_errors')!.dataPoints.map((p) => p.attributes)).toEqual([
      { 'hw.id': 'rapl-package-0', 'hw.name': 'package', 'hw.type': 'cpu' },
      { 'hw.id': 'rapl-dram-0', 'hw.name': 'dram', 'hw.type': 'memory' },
    ]);
  });

  it('records span and request energy histograms in joules', async () => {
    const { sampler, meterProvider, collect } = setup();
    const h = registerOpenTelemetry(sampler, { meterProvider, traces: false });
    cleanups.push(() => h.close());
    h.observeSpans([spanResult('match', 0.002), spanResult('match', 0.004), spanResult('price', 1.5)]);
    const record: RequestRecord = {
      method: 'POST',
      route: '/orders',
      statusCode: 201,
      startNs: 0,
      endNs: 1,
      durationNs: 1,
      joules: 0.12,
      dynamicJoules: null,
      onCpuNs: 1,
      estimated: true,
      mode: 'shared',
      incomplete: false,
      endedEarly: false,
    };
    h.observeRequests([
      record,
      { ...record, joules: 0.2 },
      { ...record, route: '(unmatched)', statusCode: 404, joules: 0.01 },
      { ...record, incomplete: true },
      // node:http given no route, and past maxRoutes (with a method that had no entry yet).
      { ...record, method: 'GET', route: '(unrouted)', statusCode: 200 },
      { ...record, method: 'GET', route: '(other)', statusCode: 202 },
      { ...record, method: '(other)', route: '(other)', statusCode: 202 },
      // Methods the conventions do not know, as Node's HTTP/1 parser or start() pass them: _OTHER.
      { ...record, method: 'PURGE', statusCode: 204 },
      { ...record, method: 'MKCOL', statusCode: 204 },
      { ...record, method: 'get', statusCode: 204 },
    ]);
    const m = await collect();
    const spans = m.get('jouletrace.span.energy')!;
    expect(spans.descriptor.unit).toBe('J');
    expect(spans.dataPointType).toBe(DataPointType.HISTOGRAM);
    const match = spans.dataPoints.find((p) => p.attributes['jouletrace.span.label'] === 'match')!;
    const v = match.value as { count: number; sum: number };
    expect(v.count).toBe(2);
    expect(v.sum).toBeCloseTo(0.006, 12);
    const req = m.get('http.server.request.energy')!;
    expect(req.descriptor.unit).toBe('J');
    expect(req.dataPoints.map((p) => p.attributes)).toEqual([
      { 'http.request.method': 'POST', 'http.route': '/orders', 'http.response.status_code': 201, 'jouletrace.estimated': true },
      // No route matched: http.route left out, as the semantic conventions say.
      { 'http.request.method': 'POST', 'http.response.status_code': 404, 'jouletrace.estimated': true },
      { 'http.request.method': 'POST', 'http.route': '/orders', 'http.response.status_code': 201, 'jouletrace.estimated': true, 'jouletrace.incomplete': true },
      // jouletrace's other placeholders name no route either; an unknown method is _OTHER.
      { 'http.request.method': 'GET', 'http.response.status_code': 200, 'jouletrace.estimated': true },
      { 'http.request.method': 'GET', 'http.response.status_code': 202, 'jouletrace.estimated': true },
      { 'http.request.method': '_OTHER', 'http.response.status_code': 202, 'jouletrace.estimated': true },
      { 'http.request.method': '_OTHER', 'http.route': '/orders', 'http.response.status_code': 204, 'jouletrace.estimated': true },
    ]);
    expect((req.dataPoints[6].value as { count: number }).count).toBe(3);
    const rv = req.dataPoints[0].value as { count: number; sum: number; buckets: { boundaries: number[] } };
    expect(rv.count).toBe(2);
    expect(rv.sum).toBeCloseTo(0.32, 12);
    expect(rv.buckets.boundaries).toContain(0.15);
  });

  // Each label was an attribute set of its own: labels built from data grew the export without bound.
  it('records span labels past maxSpanLabels under "(other)"; the trace keeps the label', async () => {
    const { sampler, meterProvider, tracer, exporter, collect } = setup();
    const h = registerOpenTelemetry(sampler, { meterProvider, tracer, maxSpanLabels: 2 });
    cleanups.push(() => h.close());
    const parent = tracer.startSpan('parent');
    h.observeSpans([
      spanResult('a', 0.001),
      spanResult('b', 0.002),
      spanResult('c', 0.004, { context: parent }),
      spanResult('a', 0.001),
      spanResult('d', NaN, { incomplete: true }),
    ]);
    parent.end();
    const m = await collect();
    const points = m.get('jouletrace.span.energy')!.dataPoints.map((p) => [p.attributes['jouletrace.span.label'], (p.value as { count: number }).count]);
    expect(points).toEqual([
      ['a', 2],
      ['b', 1],
      ['(other)', 1],
    ]);
    expect(m.get('jouletrace.span.incomplete')!.dataPoints.map((p) => p.attributes)).toEqual([{ 'jouletrace.span.label': '(other)', 'jouletrace.estimated': true }]);
    // A child span is one trace's, not a series: it names the span's own label.
    expect(exporter.getFinishedSpans().find((x) => x.name === 'jouletrace.energy')!.attributes['jouletrace.span.label']).toBe('c');

    expect(() => registerOpenTelemetry(sampler, { meterProvider, maxSpanLabels: 0 })).toThrow(
      new RangeError('Expected an integer between 1 and 1000000 for options.maxSpanLabels but received 0 of type number'),
    );
    expect(() => registerOpenTelemetry(sampler, { meterProvider, maxSpanLabels: '5' as never })).toThrow(TypeError);
  });

  it('defaults maxSpanLabels to 200', async () => {
    const { sampler, meterProvider, collect } = setup();
    const h = registerOpenTelemetry(sampler, { meterProvider, traces: false });
    cleanups.push(() => h.close());
    h.observeSpans(Array.from({ length: 1000 }, (_, i) => spanResult(`job-${i}`, 0.001)));
    const points = (await collect()).get('jouletrace.span.energy')!.dataPoints;
    expect(points).toHaveLength(201);
    expect((points.find((p) => p.attributes['jouletrace.span.label'] === '(other)')!.value as { count: number }).count).toBe(800);
  });

  // Prometheus's registerMetrics() and serve had no such count either; threads left untracked
  // moved their energy from part process to other with no sign.
  it("counts the threads left untracked for want of a slot in jouletrace.process.dropped_threads", async () => {
    // Every slot taken by the threads there now: workers started after them are untracked.
    const { sampler, meterProvider, collect } = setup({ maxThreads: fs.readdirSync('/proc/self/task').length });
    const h = registerOpenTelemetry(sampler, { meterProvider, traces: false });
    cleanups.push(() => h.close());
    const spin = () =>
      new Promise((resolve, reject) => {
        const w = new Worker('const t = performance.now(); while (performance.now() - t < 50);', { eval: true });
        w.once('exit', resolve);
        w.once('error', reject);
      });
    const before = sampler.stats().threads.droppedThreads;
    await Promise.all([spin(), spin()]);
    await sleep(50);
    const dropped = sampler.stats().threads.droppedThreads;
    expect(dropped).toBeGreaterThanOrEqual(before + 2);
    const c = (await collect()).get('jouletrace.process.dropped_threads')!;
    expect(c.descriptor.unit).toBe('{thread}');
    expect(c.dataPointType).toBe(DataPointType.SUM);
    expect(c.dataPoints.map((p) => [p.attributes, p.value])).toEqual([[{}, dropped]]);
    // Without thread tracking there is nothing to drop: no point.
    const off = setup({ threads: 'off' });
    const o = registerOpenTelemetry(off.sampler, { meterProvider: off.meterProvider, traces: false });
    cleanups.push(() => o.close());
    expect((await off.collect()).get('jouletrace.process.dropped_threads')?.dataPoints ?? []).toEqual([]);
  });

  // hw.energy would be this sampler's, http.server.request.energy the other's requests.
  it('refuses a RequestTracker of another sampler as options.requests, naming the option', () => {
    const { sampler, meterProvider } = setup();
    const other = new Sampler({ source: 'model', intervalUs: 1000 });
    const tracker = new RequestTracker(other);
    cleanups.push(() => other.close(), () => tracker.close());
    expect(() => registerOpenTelemetry(sampler, { meterProvider, requests: tracker })).toThrow(
      new TypeError(
        "options.requests is a RequestTracker of another Sampler than the one given: its requests are measured by that sampler, not this one; pass a tracker made with new RequestTracker(sampler) of the sampler you register, or register the tracker's own (options.requests.sampler)",
      ),
    );
    // Nothing was registered: the meter takes the right one.
    const own = new RequestTracker(sampler);
    cleanups.push(() => own.close());
    const h = registerOpenTelemetry(sampler, { meterProvider, requests: own });
    h.close();
  });

  // Records with NaN joules (unmeasured: the sampler saw a request's start too late under
  // overload, or stopped) were left out of the histograms and counted nowhere: the export was
  // short under overload without a word, where Prometheus counts them.
  it('counts incomplete spans and requests, those with NaN joules too, with the histograms\' attributes', async () => {
    const { sampler, meterProvider, collect } = setup();
    const h = registerOpenTelemetry(sampler, { meterProvider, traces: false });
    cleanups.push(() => h.close());
    h.observeSpans([
      spanResult('match', 0.002),
      spanResult('match', NaN, { incomplete: true }),
      spanResult('match', 0.001, { incomplete: true }),
      spanResult('price', NaN, { incomplete: true, estimated: false }),
    ]);
    const record = requestRecord(0.01, undefined);
    h.observeRequests([
      record,
      { ...record, joules: NaN, incomplete: true },
      { ...record, joules: NaN, incomplete: true },
      { ...record, joules: 0.003, incomplete: true },
      { ...record, route: '(unmatched)', statusCode: 404, joules: NaN, incomplete: true },
    ]);
    const m = await collect();
    const points = (name: string) => m.get(name)!.dataPoints.map((p) => [p.attributes, p.value]);
    expect(m.get('jouletrace.span.incomplete')!.descriptor.unit).toBe('{span}');
    expect(m.get('jouletrace.request.incomplete')!.descriptor.unit).toBe('{request}');
    expect(points('jouletrace.span.incomplete')).toEqual([
      [{ 'jouletrace.span.label': 'match', 'jouletrace.estimated': true }, 2],
      [{ 'jouletrace.span.label': 'price' }, 1],
    ]);
    expect(points('jouletrace.request.incomplete')).toEqual([
      [{ 'http.request.method': 'GET', 'http.route': '/orders/:id', 'http.response.status_code': 200, 'jouletrace.estimated': true }, 3],
      [{ 'http.request.method': 'GET', 'http.response.status_code': 404, 'jouletrace.estimated': true }, 1],
    ]);
    // The histograms hold those with a figure, as before.
    const counts = (name: string) => m.get(name)!.dataPoints.map((p) => [p.attributes['jouletrace.incomplete'] ?? false, (p.value as { count: number }).count]);
    expect(counts('jouletrace.span.energy')).toEqual([
      [false, 1],
      [true, 1],
    ]);
    expect(counts('http.server.request.energy')).toEqual([
      [false, 1],
      [true, 1],
    ]);
  });

  it("puts a request's energy.joules on its open span, a jouletrace span's on a child span", async () => {
    const { sampler, meterProvider, tracer, exporter } = setup();
    // A request tracker implementing the capture hook: it calls the installed function at
    // request start and hands back what it returned on the settled record.
    let captureFn: (() => unknown) | null = null;
    let deliver: ((r: RequestRecord[]) => void) | null = null;
    const tracker = {
      setContextCapture(fn: (() => unknown) | null) {
        captureFn = fn;
      },
      onRequest(cb: (r: RequestRecord[]) => void) {
        deliver = cb;
        return () => {
          deliver = null;
        };
      },
    };
    const h = registerOpenTelemetry(sampler, { meterProvider, requests: tracker, tracer });
    expect(captureFn).toBeTypeOf('function');

    // Two jouletrace spans under one open OTel span: a child each, so neither figure overwrites
    // the other; the request's own figure goes on the span itself.
    let computeCtx: unknown;
    await tracer.startActiveSpan('compute', async (otelSpan) => {
      computeCtx = captureFn!();
      expect(computeCtx).toBe(otelSpan);
      h.observeSpans([spanResult('parse', 0.001, { context: computeCtx } as never), spanResult('match', 0.002, { context: computeCtx } as never)]);
      deliver!([requestRecord(0.0425, computeCtx)]);
      otelSpan.end();
    });
    const compute = exporter.getFinishedSpans().find((s) => s.name === 'compute')!;
    expect(compute.attributes['energy.joules']).toBe(0.0425);
    expect(compute.attributes['energy.estimated']).toBe(true);
    expect(compute.attributes['jouletrace.span.label']).toBeUndefined();
    const children = exporter
      .getFinishedSpans()
      .filter((s) => s.name === 'jouletrace.energy' && s.parentSpanContext?.spanId === compute.spanContext().spanId);
    expect(children.map((c) => [c.attributes['jouletrace.span.label'], c.attributes['energy.joules']])).toEqual([
      ['parse', 0.001],
      ['match', 0.002],
    ]);

    // Request whose server span has ended before the energy settled: a child span carries it.
    let ctx: unknown;
    const now = Number(process.hrtime.bigint());
    tracer.startActiveSpan('GET /orders/:id', (serverSpan) => {
      ctx = captureFn!();
      serverSpan.end();
    });
    deliver!([requestRecord(0.09, ctx, now)]);
    const server = exporter.getFinishedSpans().find((s) => s.name === 'GET /orders/:id')!;
    expect(server.attributes['energy.joules']).toBeUndefined();
    const child = exporter.getFinishedSpans().find((s) => s.name === 'jouletrace.energy' && s.attributes['jouletrace.subject'] === 'GET /orders/:id')!;
    expect(child).toBeDefined();
    expect(child.parentSpanContext?.spanId).toBe(server.spanContext().spanId);
    expect(child.spanContext().traceId).toBe(server.spanContext().traceId);
    expect(child.attributes['energy.joules']).toBe(0.09);
    expect(child.attributes['jouletrace.subject']).toBe('GET /orders/:id');
    // Over the request's own interval (3 ms), placed in wall-clock time.
    const durMs = child.duration[0] * 1e3 + child.duration[1] / 1e6;
    expect(durMs).toBeCloseTo(3, 1);
    const startMs = child.startTime[0] * 1e3 + child.startTime[1] / 1e6;
    expect(Math.abs(startMs - (Date.now() - 3))).toBeLessThan(1000);

    // Without a context nothing is traced; close() removes the hook and stops delivery.
    const before = exporter.getFinishedSpans().length;
    h.observeSpans([spanResult('bare', 0.01)]);
    expect(exporter.getFinishedSpans()).toHaveLength(before);
    h.close();
    expect(captureFn).toBeNull();
    expect(deliver).toBeNull();

    // Two registrations, on two meter providers, share one capture: it stays until both have
    // closed, in either order.
    const other = new MeterProvider({ readers: [new ManualReader()] });
    cleanups.push(() => other.shutdown());
    for (const order of [[0, 1], [1, 0]]) {
      const both = [meterProvider, other].map((mp) => registerOpenTelemetry(sampler, { meterProvider: mp, requests: tracker, tracer }));
      const shared = captureFn;
      expect(shared).toBeTypeOf('function');
      both[order[0]].close();
      expect(captureFn).toBe(shared);
      both[order[1]].close();
      expect(captureFn).toBeNull();
    }
  });

  // A span or request flagged incomplete that still had a figure got energy.joules on the trace
  // with nothing saying it was partial, where its metrics carry jouletrace.incomplete.
  it('marks the energy of an incomplete span or request on the trace with jouletrace.incomplete', async () => {
    const { sampler, meterProvider, tracer, exporter } = setup();
    const h = registerOpenTelemetry(sampler, { meterProvider, tracer });
    cleanups.push(() => h.close());
    for (const incomplete of [false, true]) {
      tracer.startActiveSpan(`GET ${incomplete}`, (span) => {
        h.observeRequests([{ ...requestRecord(0.0001, span), incomplete }]);
        h.observeSpans([spanResult('work', 0.00002, { context: span, incomplete } as never)]);
        span.end();
      });
      // A request whose span has ended: its child span carries the figure.
      let ended: unknown;
      tracer.startActiveSpan(`POST ${incomplete}`, (span) => {
        ended = span;
        span.end();
      });
      h.observeRequests([{ ...requestRecord(0.0003, ended), method: 'POST', incomplete }]);
    }
    const attrs = exporter.getFinishedSpans().map((s) => [s.name, s.attributes['energy.joules'], s.attributes['jouletrace.incomplete']]);
    expect(attrs).toEqual([
      ['jouletrace.energy', 0.00002, undefined],
      ['GET false', 0.0001, undefined],
      ['POST false', undefined, undefined],
      ['jouletrace.energy', 0.0003, undefined],
      ['jouletrace.energy', 0.00002, true],
      ['GET true', 0.0001, true],
      ['POST true', undefined, undefined],
      ['jouletrace.energy', 0.0003, true],
    ]);
  });

  // The child spans were placed by the wall clock as it was at process start
  // (performance.timeOrigin), their parents by the SDK at Date.now(): a step of the wall clock
  // since (NTP, a VM resumed) put every child that far from its parent, here 5 s before it.
  it('places the jouletrace.energy child spans inside their parent after a wall-clock step', async () => {
    const { sampler, meterProvider, tracer, exporter } = setup();
    const h = registerOpenTelemetry(sampler, { meterProvider, tracer });
    cleanups.push(() => h.close());
    const realNow = Date.now;
    const stepped = vi.spyOn(Date, 'now').mockImplementation(() => realNow() + 5000);
    try {
      tracer.startActiveSpan('handler', (span) => {
        busy(5);
        h.observeSpans([spanResult('work', 0.001, { context: span } as never)]); // its last 2 ms
        busy(2);
        span.end();
      });
    } finally {
      stepped.mockRestore();
    }
    const ms = (t: [number, number]) => t[0] * 1e3 + t[1] / 1e6;
    const spans = exporter.getFinishedSpans();
    const parent = spans.find((s) => s.name === 'handler')!;
    const child = spans.find((s) => s.name === 'jouletrace.energy')!;
    expect(child.parentSpanContext?.spanId).toBe(parent.spanContext().spanId);
    // Each side is anchored to Date.now(), whole milliseconds: the child starts about 3 ms into
    // its parent and ends about 2 ms before it does, give or take 1 ms.
    expect(ms(child.startTime)).toBeGreaterThan(ms(parent.startTime));
    expect(ms(child.endTime)).toBeLessThan(ms(parent.endTime));
    expect(ms(child.endTime) - ms(child.startTime)).toBeCloseTo(2, 2);
  });

  // registerOpenTelemetry() replaced the hook the application had set with setContextCapture():
  // its spans' and requests' context was undefined while registered, and close() set the hook to
  // null rather than putting the application's back.
  it("keeps the application's context-capture hook: its value stays the context, the OTel span is taken beside it, and close() puts the hook back", async () => {
    const { sampler, meterProvider, tracer, exporter } = setup();
    const own = () => ({ requestId: 'r-42' });
    sampler.setContextCapture(own);
    const spans: SpanResult[] = [];
    sampler.onSpan((r) => spans.push(...r));
    const work = async () => {
      const h = sampler.begin('work');
      busy(1);
      sampler.end(h);
      return (await sampler.settle(h)).context;
    };
    for (const mode of ['shared', 'exact'] as const) {
      const tracker = new RequestTracker(sampler, { mode });
      cleanups.push(() => tracker.close());
      tracker.setContextCapture(own);
      const records: RequestRecord[] = [];
      tracker.onRequest((r) => records.push(...r));
      spans.length = 0;
      exporter.reset();
      const h = registerOpenTelemetry(sampler, { meterProvider, requests: tracker, tracer });
      let outerId = '';
      await tracer.startActiveSpan('outer', async (outer) => {
        outerId = outer.spanContext().spanId;
        expect(await work()).toEqual({ requestId: 'r-42' });
        tracker.end(tracker.start('GET', '/orders', () => busy(1)), 200);
        outer.end();
      });
      while (spans.length < 1 || records.length < 1) await sleep(5);
      expect({ mode, span: spans[0].context, request: records[0].context }).toEqual({ mode, span: { requestId: 'r-42' }, request: { requestId: 'r-42' } });
      // The exporter had the OTel span all the same: each figure is on a child of the outer span.
      const children = exporter.getFinishedSpans().filter((c) => c.name === 'jouletrace.energy');
      expect(children.map((c) => [c.parentSpanContext?.spanId === outerId, c.attributes['jouletrace.subject']])).toEqual([
        [true, 'work'],
        [true, 'GET /orders'],
      ]);
      h.close();
      // The application's hook is back.
      expect(await work()).toEqual({ requestId: 'r-42' });
      records.length = 0;
      tracker.end(tracker.start('GET', '/orders', () => busy(1)), 200);
      while (records.length < 1) await sleep(5);
      expect(records[0].context).toEqual({ requestId: 'r-42' });
    }
  });

  // Two registrations of one sampler, each on its own meter provider as the README advises (one
  // exporting to Prometheus, one through OTLP), put every figure on the trace twice.
  it('puts each span and request on the trace once, however many registrations see it', async () => {
    const { sampler, meterProvider, tracer, exporter } = setup();
    const other = new MeterProvider({ readers: [new ManualReader()] });
    const tracker = new RequestTracker(sampler);
    cleanups.push(() => other.shutdown(), () => tracker.close());
    const records: RequestRecord[] = [];
    tracker.onRequest((r) => records.push(...r));
    const handles = [meterProvider, other].map((mp) => registerOpenTelemetry(sampler, { meterProvider: mp, requests: tracker, tracer }));
    cleanups.push(() => handles.forEach((h) => h.close()));
    await tracer.startActiveSpan('outer', async (outer) => {
      const h = sampler.begin('work');
      sampler.end(h);
      await sampler.settle(h);
      tracker.end(tracker.start('GET', '/orders', () => busy(1)), 200);
      outer.end();
    });
    while (records.length < 1) await sleep(5);
    expect(exporter.getFinishedSpans().map((c) => `${c.name}:${c.attributes['jouletrace.subject'] ?? ''}`)).toEqual([
      'jouletrace.energy:work',
      'outer:',
      'jouletrace.energy:GET /orders',
    ]);
  });

  it('refuses a second open registration on one meter, and warns of a meter taken before the SDK', async () => {
    const { sampler, meterProvider, collect } = setup();
    const h = registerOpenTelemetry(sampler, { meterProvider });
    // A second sampler (or the same one again) would report hw.energy under the same hw.id.
    const other = new Sampler({ source: 'model', intervalUs: 1000, threads: 'off' }).start();
    cleanups.push(() => other.close());
    for (const s of [sampler, other]) {
      expect(() => registerOpenTelemetry(s, { meterProvider })).toThrow(
        expect.objectContaining({ code: 'ERR_JOULETRACE_METRIC_EXISTS', message: expect.stringContaining('close() the earlier one') }),
      );
    }
    // The refused ones registered nothing: one series per domain, the first sampler's.
    await sleep(20);
    expect((await collect()).get('hw.energy')!.dataPoints.filter((p) => p.attributes['hw.id'] === 'rapl-package-0')).toHaveLength(1);
    h.close();
    registerOpenTelemetry(other, { meterProvider }).close();
    // A registration that fails on the way (a closed sampler) leaves the meter free.
    const closed = new Sampler({ source: 'model', threads: 'off' });
    closed.close();
    expect(() => registerOpenTelemetry(closed, { meterProvider })).toThrow(expect.objectContaining({ code: 'ERR_JOULETRACE_CLOSED' }));
    registerOpenTelemetry(other, { meterProvider }).close();

    // No global provider: the no-op meter, with a warning (the API's global is no proxy); two
    // registrations on it export nothing either way and are not refused. diag.warn() alone said
    // nothing to an application without a diag logger: a process warning says it too, once.
    const warnings: string[] = [];
    const logger = { error() {}, warn: (m: string) => warnings.push(m), info() {}, debug() {}, verbose() {} };
    const emitWarning = vi.spyOn(process, 'emitWarning').mockImplementation(() => {});
    let emitted: unknown[][];
    diag.setLogger(logger, DiagLogLevel.WARN);
    try {
      const a = registerOpenTelemetry(other);
      const b = registerOpenTelemetry(other);
      a.close();
      b.close();
    } finally {
      diag.disable();
      emitted = [...emitWarning.mock.calls];
      emitWarning.mockRestore();
    }
    const message =
      'registerOpenTelemetry() found no global MeterProvider, so it took the no-op meter and no metric of this registration will ever be exported ' +
      "(the API's global provider is no proxy: one set later does not reach a meter taken before). Start the OpenTelemetry SDK " +
      '(sdk.start(), or metrics.setGlobalMeterProvider()) before calling registerOpenTelemetry(), or pass options.meterProvider or options.meter';
    expect(warnings).toEqual([`jouletrace: ${message}`, `jouletrace: ${message}`]);
    expect(emitted).toEqual([[`${message} (warned once)`, { code: 'JOULETRACE_NO_METER_PROVIDER' }]]);
  });

  // A new registration counted the run in progress from its start again: after a restart,
  // hw.energy went down on its stream (9.77 → 3.79 J), and delta temporality counted 4.32 J where
  // 0.95 J was new.
  it("goes on from a closed registration's figures on the same meter: hw.energy never goes down, nothing counted twice", async () => {
    for (const temporality of [AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA]) {
      const { sampler, meterProvider, energy } = energyStream(temporality);
      let h = registerOpenTelemetry(sampler, { meterProvider, traces: false });
      cleanups.push(() => h.close());
      busy(100);
      const first = await energy();
      sampler.stop();
      const run1 = sampler.totals().readings[0].joules;
      sampler.start();
      busy(50);
      const second = await energy();
      h.close();
      h = registerOpenTelemetry(sampler, { meterProvider, traces: false });
      busy(20);
      const third = await energy();
      const measured = run1 + sampler.totals().readings[0].joules;
      if (temporality === AggregationTemporality.CUMULATIVE) {
        expect(second).toBeGreaterThan(first);
        expect(third).toBeGreaterThanOrEqual(second);
        expect(third).toBeLessThanOrEqual(measured + 1e-9);
      } else {
        for (const d of [first, second, third]) expect(d).toBeGreaterThanOrEqual(0);
        expect(first + second + third).toBeGreaterThan(run1);
        expect(first + second + third).toBeLessThanOrEqual(measured + 1e-9);
      }
    }
  });

  // The carried figures were kept by meter and sampler: s1, then s2, then s1 again on one meter
  // went on from s1's own older total, not from what the stream last showed (s2's): cumulative
  // jumped, and delta temporality gave 5.0 J where about 1 J was new.
  it("goes on only from the registration closed last on the meter, and only when it was the same sampler's", async () => {
    const within: Record<string, boolean> = {};
    for (const temporality of [AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA]) {
      const { sampler: s1, meterProvider, energy } = energyStream(temporality);
      let h = registerOpenTelemetry(s1, { meterProvider, traces: false });
      cleanups.push(() => h.close());
      busy(50);
      await energy();
      s1.stop();
      s1.start(); // s1's figures now carry more than its run in progress
      busy(50);
      await energy();
      h.close();
      // Started now: its figures, the stream's last, are well below s1's.
      const s2 = new Sampler({ source: 'model', intervalUs: 1000, threads: 'off' }).start();
      cleanups.push(() => s2.close());
      busy(5);
      h = registerOpenTelemetry(s2, { meterProvider, traces: false });
      await energy();
      h.close();
      h = registerOpenTelemetry(s1, { meterProvider, traces: false });
      busy(20);
      // Cumulative: s1's run in progress from its start, as a first registration shows it; delta:
      // no more than that. The SDK's cumulative sum is s2's last value plus the increase from it,
      // which can round a micro-joule tick count (×1e-6) one ulp above the value observed, and
      // totals() may show that same reading: the bound allows the rounding, not another run.
      const again = await energy();
      within[AggregationTemporality[temporality]] = again > 0 && again <= s1.totals().readings[0].joules * (1 + 1e-12);
      h.close();
    }
    expect(within).toEqual({ CUMULATIVE: true, DELTA: true });
  });

  // A tracer that was no tracer failed inside an onSpan listener, which ended the process; a
  // meter that was no meter failed after a listener was taken on the sampler, and left there.
  it('refuses a meter, meter provider or tracer without the methods it calls, naming the option, before subscribing', async () => {
    const { sampler, meterProvider } = setup();
    const live = liveRunEndListeners(sampler);
    const onSpan = vi.spyOn(sampler, 'onSpan');
    const meterMethods = 'createObservableCounter(), createObservableGauge(), createHistogram(), createCounter(), addBatchObservableCallback(), removeBatchObservableCallback()';
    const refused: Array<[Record<string, unknown>, string]> = [
      [{ meterProvider, tracer: 'not a tracer' }, 'Expected an OpenTelemetry Tracer (an object with startSpan()) for options.tracer but received "not a tracer" of type string'],
      [{ meterProvider, tracer: {} }, 'Expected an OpenTelemetry Tracer (an object with startSpan()) for options.tracer but received {} of type object'],
      [{ meterProvider: {} }, 'Expected an OpenTelemetry MeterProvider (an object with getMeter()) for options.meterProvider but received {} of type object'],
      [{ meterProvider: { getMeter: () => 5 } }, `Expected an OpenTelemetry Meter (an object with ${meterMethods}) for options.meterProvider.getMeter() but received 5 of type number`],
      [{ meter: 5 }, `Expected an OpenTelemetry Meter (an object with ${meterMethods}) for options.meter but received 5 of type number`],
    ];
    for (const [options, message] of refused) {
      expect(() => registerOpenTelemetry(sampler, options as never)).toThrow(new TypeError(message));
    }
    expect(live()).toBe(0);
    expect(onSpan).not.toHaveBeenCalled();
    // The meter is left free for a registration that goes through.
    registerOpenTelemetry(sampler, { meterProvider, tracer: trace.getTracer('test') }).close();
    expect(live()).toBe(0);
  });

  // A meter whose callback or instrument could not be made (a throw from the SDK, or a meter of
  // the application's own) left the span subscription and the run-end listener on the sampler.
  it('gives back every listener it took on the sampler when the meter refuses an instrument or the callback', () => {
    const { sampler, meterProvider } = setup();
    const live = liveRunEndListeners(sampler);
    let spanListeners = 0;
    const onSpan = sampler.onSpan.bind(sampler);
    vi.spyOn(sampler, 'onSpan').mockImplementation((fn) => {
      const off = onSpan(fn);
      spanListeners++;
      return () => {
        spanListeners--;
        off();
      };
    });
    const meter = meterProvider.getMeter('jouletrace');
    for (const method of ['addBatchObservableCallback', 'createHistogram', 'createObservableCounter'] as const) {
      const refused = new Error(`${method} refused by the test`);
      const spy = vi.spyOn(meter, method).mockImplementation(() => {
        throw refused;
      });
      expect(() => registerOpenTelemetry(sampler, { meter })).toThrow(refused);
      spy.mockRestore();
      expect({ method, runEnd: live(), spans: spanListeners }).toEqual({ method, runEnd: 0, spans: 0 });
    }
    // The meter is left free for a registration that goes through (its energy and its sampler
    // health each read at the run's end).
    const h = registerOpenTelemetry(sampler, { meter });
    expect({ runEnd: live(), spans: spanListeners }).toEqual({ runEnd: 2, spans: 1 });
    h.close();
    expect({ runEnd: live(), spans: spanListeners }).toEqual({ runEnd: 0, spans: 0 });
  });

  // The batch callback stayed registered on the meter, reading the closed sampler.
  it('refuses a closed sampler leaving nothing registered: no meter callback, capture hook or run-end listener', async () => {
    const { sampler, meterProvider, collect } = setup({ threads: 'off' });
    const meter = meterProvider.getMeter('jouletrace');
    const added = vi.spyOn(meter, 'addBatchObservableCallback');
    const removed = vi.spyOn(meter, 'removeBatchObservableCallback');
    let captureFn: (() => unknown) | null = null;
    const tracker = {
      setContextCapture: (fn: (() => unknown) | null) => void (captureFn = fn),
      onRequest: () => () => {},
    };
    const closed = new Sampler({ source: 'model', threads: 'off' });
    closed.close();
    const live = liveRunEndListeners(closed);
    expect(() => registerOpenTelemetry(closed, { meter, requests: tracker })).toThrow(expect.objectContaining({ code: 'ERR_JOULETRACE_CLOSED' }));
    expect(added.mock.calls.length - removed.mock.calls.length).toBe(0);
    expect(captureFn).toBeNull();
    expect(live()).toBe(0);
    // The meter is free, and reports the live sampler alone.
    const h = registerOpenTelemetry(sampler, { meter, requests: tracker });
    cleanups.push(() => h.close());
    expect(added).toHaveBeenCalledTimes(1);
    await sleep(20);
    expect((await collect()).get('hw.energy')!.dataPoints).toHaveLength(1);
  });

  // The middleware given for its tracker fed no request metric, without a word.
  it('refuses as options.requests anything but a RequestTracker', () => {
    const { sampler, meterProvider } = setup();
    for (const requests of ['tracker', 42, {}, () => {}, null]) {
      expect(() => registerOpenTelemetry(sampler, { meterProvider, requests } as never)).toThrow(
        /^Expected a RequestTracker \(an object with onRequest\(\)\) for options\.requests but received .*; pass the tracker itself \(energyMiddleware\(\)'s is middleware\.tracker\)$/,
      );
    }
  });

  it('omits attribution without thread tracking and validates its input', async () => {
    const { sampler, meterProvider, collect } = setup({ threads: 'off' });
    const h = registerOpenTelemetry(sampler, { meterProvider });
    cleanups.push(() => h.close());
    await sleep(20);
    const m = await collect();
    expect(m.has('hw.energy')).toBe(true);
    expect(m.get('jouletrace.process.energy')?.dataPoints ?? []).toHaveLength(0);
    expect(() => registerOpenTelemetry({} as never)).toThrow(TypeError);
    // A shape with totals() alone passed, and failed reading its domains.
    expect(() => registerOpenTelemetry({ totals() {} } as never)).toThrow(new TypeError('Expected a Sampler for sampler but received {} of type object'));
    // One with totals() and domains passed, and failed with "sampler.onRunEnd is not a function".
    for (const bad of [{ totals() {}, domains: [] }, { totals() {}, stats() {}, onRunEnd() {}, domains: [] }]) {
      expect(() => registerOpenTelemetry(bad as never)).toThrow(new TypeError('Expected a Sampler for sampler but received {"domains":[]} of type object'));
    }
    expect(() => registerOpenTelemetry({ totals() {} } as never, { meterprovider: {} } as never)).toThrow('Unknown option options.meterprovider');
    expect(() => registerOpenTelemetry({ totals() {} } as never, { traces: 'false' } as never)).toThrow(/options\.traces/);
  });
});
