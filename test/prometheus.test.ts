// Prometheus metrics: exposition, counters that survive sampler restarts, bounded thread
// cardinality, span and request histograms — and a real Prometheus scraping a real app.
import * as fs from 'node:fs';
import * as http from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { AggregatorRegistry, Registry } from 'prom-client';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Sampler } from '../src/index';
import { Worker } from 'node:worker_threads';
import { energyMiddleware } from '../src/express';
import { RequestTracker, trackRequest } from '../src/requests';
import { registerMetrics, REQUEST_BUCKETS, SPAN_BUCKETS, type PrometheusOptions } from '../src/prometheus';
import { PREFIXED_NAMES } from '../src/prometheus-names';
import type { RequestRecord, SpanResult } from '../src/span-types';
import { createEmulatedPowercap } from './fixtures/emulated-devices';
import { prometheusMissing, startPrometheus, type PrometheusServer } from './fixtures/prometheus-server';
import { describeGated, toolsRequired } from './fixtures/gated';
import { liveRunEndListeners } from './fixtures/run-end-listeners';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function sampler(opts: ConstructorParameters<typeof Sampler>[0] = {}): Sampler {
  const s = new Sampler({ source: 'model', intervalUs: 1000, ...opts });
  cleanups.push(() => s.close());
  return s;
}

/** An emulated powercap package at 1 J, a running sampler on it, and its metrics. */
function powercapMetrics() {
  const e = createEmulatedPowercap([{ name: 'package-0', energyUj: 1_000_000 }]);
  cleanups.push(() => e.close());
  const s = sampler({ source: 'powercap', powercapRoot: e.powercapRoot, liveCheckMs: 0, cpuIdentity: { vendor: 'intel', family: 6, model: 0x55 }, threads: 'off' }).start();
  const m = registerMetrics(s);
  cleanups.push(() => m.close());
  return { e, s, m };
}

/** Parses the text exposition format into name{labels} → value. */
function parse(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparseable exposition line: ${line}`);
    out.set(m[1] + (m[2] ?? ''), Number(m[3]));
  }
  return out;
}

function sumOf(values: Map<string, number>, name: string, filter: (key: string) => boolean = () => true): number {
  let sum = 0;
  for (const [k, v] of values) if ((k === name || k.startsWith(name + '{')) && filter(k)) sum += v;
  return sum;
}

function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How long the sampler's run has gone, to its last sample. */
function runAgeNs(s: Sampler): bigint {
  const t = s.totals();
  return t.timeNs - t.startNs;
}

function span(label: string, joules: number, estimated = true): SpanResult {
  return { label, tid: process.pid, startNs: 1, endNs: 2, onCpuNs: 1, joules, dynamicJoules: null, estimated, incomplete: false };
}

function request(route: string, joules: number, statusCode = 200, method = 'GET'): RequestRecord {
  return {
    method,
    route,
    statusCode,
    startNs: 0,
    endNs: 1000,
    durationNs: 1000,
    joules,
    dynamicJoules: null,
    onCpuNs: 500,
    estimated: true,
    mode: 'shared',
    incomplete: false,
    endedEarly: false,
  };
}

describe('registerMetrics', () => {
  it('exposes energy, power, attribution and sampler health, labelled estimated for the model source', async () => {
    const s = sampler().start();
    const m = registerMetrics(s, { labels: { service: 'test' } });
    cleanups.push(() => m.close());
    busy(150);
    // Power waits for a window of 0.5 s, the first one too (one of 6 ms read 12.46 W).
    const early = await m.registry.metrics();
    if (runAgeNs(s) < 500_000_000n) expect(early).not.toMatch(/^jouletrace_power_watts\{/m);
    while (runAgeNs(s) < 500_000_000n) await sleep(20);
    await sleep(60); // past the 50 ms a scrape reuses its reading for
    const text = await m.registry.metrics();
    const v = parse(text);
    const total = s.totals().readings.find((r) => r.domain === 'package')!.joules;
    const exported = v.get('jouletrace_energy_joules_total{service="test",domain="package",package="0",source="model",estimated="true"}');
    expect(exported).toBeGreaterThan(0);
    // Read at scrape time from the same sampler: at most a few samples (ms) apart.
    expect(Math.abs(exported! - total) / total).toBeLessThan(0.2);
    expect(text).toMatch(/# TYPE jouletrace_energy_joules_total counter/);
    expect(text).toMatch(/# TYPE jouletrace_power_watts gauge/);
    const watts = v.get('jouletrace_power_watts{service="test",domain="package",package="0",estimated="true"}')!;
    // The model's idle power is 12 W: average power can be no lower.
    expect(watts).toBeGreaterThanOrEqual(11.5);
    const parts = ['process', 'baseline', 'other'].map(
      (part) => v.get(`jouletrace_process_energy_joules_total{service="test",part="${part}",estimated="true"}`)!,
    );
    for (const p of parts) expect(p).toBeGreaterThanOrEqual(0);
    expect(parts[0]).toBeGreaterThan(0);
    expect(v.get('jouletrace_samples_total{service="test"}')).toBeGreaterThan(100);
    expect(v.get('jouletrace_samples_dropped_total{service="test"}')).toBe(0);
    expect(v.get('jouletrace_sampler_jitter_seconds{service="test",stat="p99"}')).toBeGreaterThan(0);
    expect(v.get('jouletrace_sampler_jitter_seconds{service="test",stat="p99"}')).toBeLessThan(1);
    // The model source's figures move every 10 ms or so.
    expect(v.get('jouletrace_sampler_counters_still_seconds{service="test"}')).toBeGreaterThanOrEqual(0);
    expect(v.get('jouletrace_sampler_counters_still_seconds{service="test"}')).toBeLessThan(0.5);
    expect(v.get('app_energy_joules_total{service="test",estimated="true"}')).toBeCloseTo(parts[0], 1);
    expect(v.get('app_requests_total{service="test",estimated="true"}')).toBe(0);
    expect(Number.isNaN(v.get('app_joules_per_request{service="test",estimated="true"}'))).toBe(true);
    // Every jouletrace energy series from the model source says it is estimated.
    for (const line of text.split('\n')) {
      if (/^(jouletrace_(energy|power|process_energy|thread)|app_energy)/.test(line)) expect(line).toContain('estimated="true"');
    }
  });

  it('keeps counters monotonic across stop()/start(), which restart the sampler totals', async () => {
    const s = sampler().start();
    const m = registerMetrics(s);
    cleanups.push(() => m.close());
    busy(100);
    await sleep(30);
    const key = 'jouletrace_energy_joules_total{domain="package",package="0",source="model",estimated="true"}';
    const first = parse(await m.registry.metrics()).get(key)!;
    const firstSamples = parse(await m.registry.metrics()).get('jouletrace_samples_total')!;
    s.stop();
    const beforeRestart = parse(await m.registry.metrics()).get(key)!;
    expect(beforeRestart).toBeGreaterThanOrEqual(first);
    s.start();
    // Past the first run's total: below it, a reading taken for the first run's would still
    // count whole, as a restart the run id missed.
    for (let i = 0; i < 300 && s.totals().readings[0].joules <= beforeRestart * 1.5; i++) await sleep(10);
    const fresh = s.totals().readings[0].joules;
    expect(fresh).toBeGreaterThan(beforeRestart);
    const after = parse(await m.registry.metrics()).get(key)!;
    // The new run's energy is added on top of the old run's, not instead of it.
    expect(after).toBeGreaterThan(beforeRestart);
    expect(after).toBeGreaterThan(fresh);
    expect(after - beforeRestart).toBeCloseTo(fresh, 0);
    expect(parse(await m.registry.metrics()).get('jouletrace_samples_total')!).toBeGreaterThan(firstSamples);
  });

  // The health counts restart at each start() too: those taken since the last scrape were lost at
  // every restart (4 runs took 1065 samples, jouletrace_samples_total said 162). Under
  // overwrite-oldest, the samples a full ring lost are overwritten, not dropped, and
  // jouletrace_samples_dropped_total stayed 0 however many.
  it.each([
    ['drop-newest', 'dropped'],
    ['overwrite-oldest', 'overwritten'],
  ] as const)('counts every sample, drop and missed deadline of each run, though no scrape came at its end (%s)', async (onOverflow, lost) => {
    // A ring of 4 that nothing reads: nearly every sample is lost.
    const s = sampler({ ringCapacity: 4, onOverflow });
    const m = registerMetrics(s);
    cleanups.push(() => m.close());
    const taken = { samples: 0, dropped: 0, overwritten: 0, missed: 0 };
    for (let run = 0; run < 3; run++) {
      s.start();
      await sleep(60);
      if (run === 0) await m.registry.metrics();
      await sleep(60);
      s.stop();
      const st = s.stats();
      taken.samples += st.timing.samples;
      taken.dropped += st.ring.dropped;
      taken.overwritten += st.ring.overwritten;
      taken.missed += st.timing.missedDeadlines;
    }
    const v = parse(await m.registry.metrics());
    expect(taken[lost]).toBeGreaterThan(0);
    expect(taken.dropped + taken.overwritten).toBe(taken[lost]); // the other policy's count is 0
    expect(v.get('jouletrace_samples_total')).toBe(taken.samples);
    expect(v.get('jouletrace_samples_dropped_total')).toBe(taken[lost]);
    expect(v.get('jouletrace_sampler_missed_deadlines_total')).toBe(taken.missed);
  });

  // A sampler made for export kept a ring nothing read: once full, every sample counted here.
  it('counts no sample dropped for a sampler without a ring (ringCapacity: 0), however many it takes', async () => {
    const s = sampler({ ringCapacity: 0, intervalUs: 50, threads: 'off' });
    const m = registerMetrics(s);
    cleanups.push(() => m.close());
    s.start();
    // Past what the rings of the test above (4) and far larger ones would have held.
    for (let i = 0; i < 1000 && s.stats().timing.samples < 4096; i++) await sleep(10);
    s.stop();
    const st = s.stats();
    expect(st.timing.samples).toBeGreaterThanOrEqual(4096);
    const v = parse(await m.registry.metrics());
    expect(v.get('jouletrace_samples_total')).toBe(st.timing.samples);
    expect(v.get('jouletrace_samples_dropped_total')).toBe(0);
  });

  // While the source's reads failed, the domain kept its last value and the power read exactly
  // 0 W, then the whole catch-up over the next window alone; nothing said reads had failed.
  it('leaves jouletrace_power_watts out while reads fail and the energy stands still, and counts the failed reads', async () => {
    const { e, s, m } = powercapMetrics();
    const power = 'jouletrace_power_watts{domain="package",package="0"}';
    const errors = 'jouletrace_sampler_read_errors_total';
    // Each scrape past PowerWindow's 0.5 s and the 50 ms a scrape reuses its reading for;
    // bracketed by the sampler's times, as the window's ends lie between them.
    const scrape = async () => {
      await sleep(560);
      const before = s.totals().timeNs;
      const v = parse(await m.registry.metrics());
      return { v, before, after: s.totals().timeNs };
    };
    const first = await scrape();
    expect(first.v.get(power)).toBe(0); // a counter that stands still, read fine
    expect(first.v.get(errors)).toBe(0);

    fs.writeFileSync(path.join(e.zonePath('intel-rapl:0'), 'energy_uj'), 'not a number\n');
    while (s.stats().timing.readErrors === 0) await sleep(5);
    const failing = await scrape();
    expect([...failing.v.keys()].filter((k) => k.startsWith('jouletrace_power_watts'))).toEqual([]);
    expect(failing.v.get(errors)).toBeGreaterThan(0);
    expect(failing.v.get('jouletrace_energy_joules_total{domain="package",package="0",source="powercap"}')).toBe(0);

    // Back, 5 J on: averaged since the last figure, over both windows.
    e.set('intel-rapl:0', 6_000_000);
    while (s.totals().readings[0].joules < 5) await sleep(5);
    const back = await scrape();
    const watts = back.v.get(power)!;
    expect(watts).toBeGreaterThanOrEqual(5 / (Number(back.after - first.before) / 1e9));
    expect(watts).toBeLessThanOrEqual(5 / (Number(back.before - first.after) / 1e9));
    expect(back.v.get(errors)).toBeGreaterThanOrEqual(failing.v.get(errors)!);
    s.stop();
    expect(parse(await m.registry.metrics()).get(errors)).toBe(s.stats().timing.readErrors);
  });

  // A counter that started again loses the energy before the restart; another failed read's
  // comes with the next good one. Both were one count, read_errors_total.
  it('counts the reads in which a counter started again apart, among the read errors', async () => {
    const { e, s, m } = powercapMetrics();
    e.set('intel-rapl:0', 400_000); // started again
    while (s.stats().timing.counterRestarts === 0) await sleep(2);
    fs.writeFileSync(path.join(e.zonePath('intel-rapl:0'), 'energy_uj'), 'not a number\n'); // EIO
    const errors = s.stats().timing.readErrors;
    while (s.stats().timing.readErrors === errors) await sleep(2);
    e.set('intel-rapl:0', 900_000);
    while (s.totals().readings[0].joules < 0.5) await sleep(2);
    s.stop();
    const st = s.stats().timing;
    expect(st.counterRestarts).toBe(1);
    expect(st.readErrors).toBeGreaterThan(1);
    expect(s.totals().readings[0].joules).toBe(0.5); // the restart's energy lost, the EIO gap's not
    const v = parse(await m.registry.metrics());
    expect(v.get('jouletrace_sampler_energy_restarts_total')).toBe(1);
    expect(v.get('jouletrace_sampler_read_errors_total')).toBe(st.readErrors);
  });

  // One count for the source: a dram zone failing all along read as the package's failures too.
  it('counts the read errors of each domain, over runs', async () => {
    const e = createEmulatedPowercap([{ name: 'package-0', energyUj: 1_000_000, children: [{ name: 'dram', energyUj: 5000 }] }]);
    cleanups.push(() => e.close());
    const s = sampler({ source: 'powercap', powercapRoot: e.powercapRoot, liveCheckMs: 0, cpuIdentity: { vendor: 'intel', family: 6, model: 0x55 }, threads: 'off' });
    const m = registerMetrics(s);
    cleanups.push(() => m.close());
    fs.writeFileSync(path.join(e.zonePath('intel-rapl:0:0'), 'energy_uj'), 'not a number\n');
    let failed = 0;
    for (let run = 0; run < 2; run++) {
      s.start();
      while (s.stats().timing.byDomain[1].readErrors < 3) await sleep(2);
      s.stop();
      failed += s.stats().timing.byDomain[1].readErrors;
    }
    const v = parse(await m.registry.metrics());
    expect(v.get('jouletrace_sampler_domain_read_errors_total{domain="package",package="0"}')).toBe(0);
    expect(v.get('jouletrace_sampler_domain_read_errors_total{domain="dram",package="0"}')).toBe(failed);
    expect(v.get('jouletrace_sampler_read_errors_total')).toBe(failed);
  });

  it("shows a run's final figures right after it ends, and keeps the sampler's info series after close()", async () => {
    const s = sampler().start();
    const m = registerMetrics(s);
    cleanups.push(() => m.close());
    const key = 'jouletrace_energy_joules_total{domain="package",package="0",source="model",estimated="true"}';
    busy(60);
    const info = [...parse(await m.registry.metrics()).keys()].filter((k) => k.startsWith('jouletrace_sampler_info'));
    expect(info).toHaveLength(1);
    expect(info[0]).toContain('interval_seconds="0.001"');
    // Right after the scrape above: its reading, from before the stop, was reused.
    s.stop();
    const v = parse(await m.registry.metrics());
    expect([...v.keys()].filter((k) => k.startsWith('jouletrace_power_watts'))).toEqual([]);
    expect(v.get(key)).toBeCloseTo(s.totals().readings.find((r) => r.domain === 'package')!.joules, 9);
    s.close();
    const closed = [...parse(await m.registry.metrics()).keys()].filter((k) => k.startsWith('jouletrace_sampler_info'));
    expect(closed).toEqual(info);
  });

  // Both are known once the sampler is made: they read interval_seconds="0" and threads="unknown".
  it("gives the sampler's info series its interval and threads backend when the sampler closed before the first scrape", async () => {
    const s = sampler({ intervalUs: 2000, threads: 'procfs' });
    const m = registerMetrics(s);
    cleanups.push(() => m.close());
    s.close();
    const info = [...parse(await m.registry.metrics()).keys()].filter((k) => k.startsWith('jouletrace_sampler_info'));
    expect(info).toEqual(['jouletrace_sampler_info{source="model",threads="procfs",interval_seconds="0.002",estimated="true"}']);
  });

  // Without constant labels it read 0 (counters moving fine) before the first sample and after
  // close(); with them it had no series.
  it('leaves jouletrace_sampler_counters_still_seconds out while unknown, with and without constant labels', async () => {
    const s = sampler();
    const plain = registerMetrics(s);
    const labelled = registerMetrics(s, { labels: { service: 'x' } });
    cleanups.push(() => plain.close(), () => labelled.close());
    const still = async (m: { registry: Registry }) =>
      [...parse(await m.registry.metrics()).keys()].filter((k) => k.startsWith('jouletrace_sampler_counters_still_seconds'));
    expect(await still(plain)).toEqual([]);
    expect(await still(labelled)).toEqual([]);
    s.start();
    while (s.stats().timing.samples === 0) await sleep(5);
    // Past the 50 ms for which a scrape of a running sampler reuses the statistics last read.
    await sleep(60);
    expect(await still(plain)).toEqual(['jouletrace_sampler_counters_still_seconds']);
    expect(await still(labelled)).toEqual(['jouletrace_sampler_counters_still_seconds{service="x"}']);
    // Right after close(): the statistics read at the run's end were reused for 50 ms.
    s.close();
    expect(await still(plain)).toEqual([]);
    expect(await still(labelled)).toEqual([]);
  });

  it('has no jouletrace_sampler_counters_still_seconds right after close() of a stopped sampler scraped just before', async () => {
    const s = sampler().start();
    const m = registerMetrics(s);
    cleanups.push(() => m.close());
    const still = async () => [...parse(await m.registry.metrics()).keys()].filter((k) => k.startsWith('jouletrace_sampler_counters_still_seconds'));
    while (s.stats().timing.samples === 0) await sleep(5);
    s.stop();
    expect(await still()).toEqual(['jouletrace_sampler_counters_still_seconds']);
    s.close();
    expect(await still()).toEqual([]);
  });

  it('bounds thread cardinality: topThreads names, the rest "other", and never decreases', async () => {
    const s = sampler().start();
    const m = registerMetrics(s, { topThreads: 1 });
    cleanups.push(() => m.close());
    busy(100);
    await sleep(30);
    const v1 = parse(await m.registry.metrics());
    const threadKeys = [...v1.keys()].filter((k) => k.startsWith('jouletrace_thread_energy_joules_total'));
    const names = threadKeys.map((k) => /thread="([^"]*)"/.exec(k)![1]);
    expect(names.filter((n) => n !== 'other')).toHaveLength(1);
    expect(names).toContain('other');
    const sumThreads = sumOf(v1, 'jouletrace_thread_energy_joules_total');
    const process = v1.get('jouletrace_process_energy_joules_total{part="process",estimated="true"}')!;
    // The threads' shares add up to the process's (read a moment apart).
    expect(Math.abs(sumThreads - process) / process).toBeLessThan(0.2);
    busy(80);
    await sleep(30);
    const v2 = parse(await m.registry.metrics());
    for (const k of threadKeys) expect(v2.get(k)!).toBeGreaterThanOrEqual(v1.get(k)!);
  });

  // The end-of-run read of the threads waited for a first scrape: a run that ended before it (a
  // restart, close()) lost its threads' energy (2.5 J of the process's, 0.3 J in thread series).
  it("counts a run's thread energy though no scrape came before its end (restart, close())", async () => {
    const threadSum = async (m: { registry: Registry }) => sumOf(parse(await m.registry.metrics()), 'jouletrace_thread_energy_joules_total');
    const processPart = async (m: { registry: Registry }) =>
      parse(await m.registry.metrics()).get('jouletrace_process_energy_joules_total{part="process",estimated="true"}')!;
    const restarted = sampler().start();
    const m1 = registerMetrics(restarted);
    cleanups.push(() => m1.close());
    busy(150);
    restarted.stop();
    restarted.start();
    busy(30);
    restarted.stop();
    const p1 = await processPart(m1);
    expect(p1).toBeGreaterThan(0);
    expect(await threadSum(m1)).toBeCloseTo(p1, 6);

    const closed = sampler().start();
    const m2 = registerMetrics(closed);
    cleanups.push(() => m2.close());
    busy(100);
    closed.close();
    const p2 = await processPart(m2);
    expect(p2).toBeGreaterThan(0);
    expect(await threadSum(m2)).toBeCloseTo(p2, 6);
  });

  // A new registration counted the run in progress from its start again: after a restart, the
  // energy series went down (7.48 → 3.76 J), and rate() counted the new run's energy twice.
  it("goes on from a closed registration's counters in the same registry: never down, nothing counted twice", async () => {
    const s = sampler().start();
    const registry = new Registry();
    const carbon = { gramsPerKwh: 400 };
    let m = registerMetrics(s, { registry, carbon });
    cleanups.push(() => m.close());
    const energyKey = 'jouletrace_energy_joules_total{domain="package",package="0",source="model",estimated="true"}';
    const counters = (v: Map<string, number>) =>
      new Map([...v].filter(([k]) => /^(jouletrace_(energy|process_energy|thread_energy|carbon_grams|samples)|app_energy)_/.test(k)));
    busy(100);
    s.stop();
    const run1 = s.totals().readings[0].joules;
    s.start();
    busy(50);
    const before = counters(parse(await registry.metrics()));
    expect(before.get(energyKey)).toBeGreaterThan(run1);
    m.close();
    m = registerMetrics(s, { registry, carbon });
    busy(20);
    const after = counters(parse(await registry.metrics()));
    const measured = run1 + s.totals().readings[0].joules;
    expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
    for (const [k, v] of before) expect({ k, v: after.get(k)! >= v }).toEqual({ k, v: true });
    expect(after.get(energyKey)).toBeLessThanOrEqual(measured + 1e-9);
    // Another registry has series of its own: they count the run in progress from its start.
    const other = registerMetrics(s, { registry: new Registry(), appMetrics: false });
    cleanups.push(() => other.close());
    const fresh = parse(await other.registry.metrics()).get(energyKey)!;
    expect(fresh).toBeGreaterThan(0);
    expect(fresh).toBeLessThanOrEqual(s.totals().readings[0].joules);
  });

  /**
   * s1's registration in `registry`, s2's (with `s2Options`), then s1's again: `series` must show
   * s1's run in progress from its start, as a first registration shows it, not s1's older total.
   */
  async function afterAnotherSampler(registry: Registry, series: () => Promise<number>, s2Options: PrometheusOptions) {
    const s1 = sampler({ threads: 'off' }).start();
    let m = registerMetrics(s1, { registry });
    cleanups.push(() => m.close());
    busy(50);
    s1.stop();
    s1.start(); // s1's series now carry more than its run in progress
    busy(50);
    expect(await series()).toBeGreaterThan(s1.totals().readings[0].joules);
    m.close();
    const s2 = sampler({ threads: 'off' }).start(); // its figures, the series' last, well below s1's
    busy(5);
    m = registerMetrics(s2, { registry, ...s2Options });
    expect(await series()).toBeLessThanOrEqual(s2.totals().readings[0].joules);
    m.close();
    m = registerMetrics(s1, { registry });
    busy(20);
    const again = await series();
    expect(again).toBeGreaterThan(0);
    expect(again).toBeLessThanOrEqual(s1.totals().readings[0].joules);
    m.close();
    return { s1, s2 };
  }

  // The carried counts were kept by registry and sampler: s1, then s2, then s1 again in one
  // registry went on from s1's own older total, not from what the series last showed (s2's): a
  // reset, then a jump, and increase() counted s1's earlier energy again (23.7 J for 15.7 J measured).
  it('goes on only from the registration closed last in the registry with the prefix, and only when it was the same sampler\'s', async () => {
    const registry = new Registry();
    const energyKey = (prefix = 'jouletrace_') => `${prefix}energy_joules_total{domain="package",package="0",source="model",estimated="true"}`;
    const energy = async (r = registry, prefix?: string) => parse(await r.metrics()).get(energyKey(prefix))!;
    const { s1, s2 } = await afterAnotherSampler(registry, () => energy(), {});

    // Registrations under other prefixes, closed since, leave a sampler's own series to go on.
    const shared = new Registry();
    const a = registerMetrics(s1, { registry: shared });
    const b = registerMetrics(s2, { registry: shared, prefix: 'other_', appMetrics: false, spanMetrics: false });
    cleanups.push(() => b.close());
    busy(20);
    const before = await energy(shared);
    expect(before).toBeGreaterThan(0);
    expect(await energy(shared, 'other_')).toBeGreaterThan(0);
    a.close();
    b.close();
    const m = registerMetrics(s1, { registry: shared });
    cleanups.push(() => m.close());
    expect(await energy(shared)).toBeGreaterThanOrEqual(before);
  });

  // The app_* series have their names whatever the prefix, and the carried counts were kept by
  // prefix: s1's registration, s2's under another prefix (showing s2's figures on app_*), then
  // s1's again went on from s1's older total there, a jump (3.30 J after 0.255, s1's run 0.98).
  it('goes on with the app_* series only from the last registration with app metrics in the registry, whatever its prefix', async () => {
    const registry = new Registry();
    const app = async () => parse(await registry.metrics()).get('app_energy_joules_total{estimated="true"}')!;
    // s1's jouletrace_* series start afresh too: one count feeds both.
    const { s1, s2 } = await afterAnotherSampler(registry, app, { prefix: 'other_' });

    // With no registration with app metrics in between, they go on.
    let m = registerMetrics(s1, { registry });
    cleanups.push(() => m.close());
    busy(20);
    const before = await app();
    m.close();
    m = registerMetrics(s2, { registry, prefix: 'other_', appMetrics: false });
    m.close();
    m = registerMetrics(s1, { registry });
    expect(await app()).toBeGreaterThanOrEqual(before);
  });

  it('turns spans and requests into histograms and the app_* metrics', async () => {
    const s = sampler().start();
    const m = registerMetrics(s, { joulesPerRequestWindowMs: 60_000 });
    cleanups.push(() => m.close());
    m.observeSpans([span('match', 3e-6), span('match', 0.004), span('price', 0.3)]);
    m.observeRequests([request('/orders/:id', 0.1), request('/orders/:id', 0.2), request('/health', 0.01, 204)]);
    const text = await m.registry.metrics();
    const v = parse(text);
    expect(v.get('jouletrace_span_energy_joules_count{label="match",estimated="true"}')).toBe(2);
    expect(v.get('jouletrace_span_energy_joules_sum{label="match",estimated="true"}')).toBeCloseTo(0.004003, 9);
    expect(v.get('jouletrace_span_energy_joules_bucket{le="0.000005",label="match",estimated="true"}')).toBe(1);
    expect(v.get('jouletrace_span_energy_joules_bucket{le="0.005",label="match",estimated="true"}')).toBe(2);
    const route = 'method="GET",route="/orders/:id",status_code="200",estimated="true"';
    expect(v.get(`http_server_request_energy_joules_count{${route}}`)).toBe(2);
    expect(v.get(`http_server_request_energy_joules_sum{${route}}`)).toBeCloseTo(0.3, 12);
    // 0.15 J (the alert threshold) is a bucket boundary.
    expect(v.get(`http_server_request_energy_joules_bucket{le="0.15",${route}}`)).toBe(1);
    expect(v.get('http_server_request_energy_joules_count{method="GET",route="/health",status_code="204",estimated="true"}')).toBe(1);
    expect(v.get('app_requests_total{estimated="true"}')).toBe(3);
    expect(v.get('app_joules_per_request{estimated="true"}')).toBeCloseTo(0.31 / 3, 12);
    // Non-estimated records carry no estimated label.
    m.observeSpans([span('exact', 0.01, false)]);
    expect(parse(await m.registry.metrics()).get('jouletrace_span_energy_joules_count{label="exact"}')).toBe(1);
  });

  // Requests left unmeasured (NaN joules, under overload) were not counted as finished, and
  // incomplete ones went into the histograms with nothing to tell them apart.
  it('counts every finished request in app_requests_total, and incomplete spans and requests in counters of their own', async () => {
    const s = sampler();
    const m = registerMetrics(s, { labels: { service: 'x' }, joulesPerRequestWindowMs: 60_000 });
    cleanups.push(() => m.close());
    let v = parse(await m.registry.metrics());
    // With app_requests_total's labels (estimated too), so that one divides by the other.
    expect(v.get('jouletrace_incomplete_spans_total{service="x",estimated="true"}')).toBe(0);
    expect(v.get('jouletrace_incomplete_requests_total{service="x",estimated="true"}')).toBe(0);
    const incomplete = <T>(r: T): T => ({ ...r, incomplete: true });
    m.observeRequests([request('/a', 0.1), incomplete(request('/a', NaN)), incomplete(request('/a', 0.05))]);
    m.observeRequests([incomplete(request('/a', NaN))]);
    m.observeSpans([span('s', 0.01), incomplete(span('s', NaN)), incomplete(span('s', 0.002))]);
    v = parse(await m.registry.metrics());
    expect(v.get('app_requests_total{service="x",estimated="true"}')).toBe(4);
    // The histograms and the window's mean hold those with a figure.
    expect(v.get('http_server_request_energy_joules_count{service="x",method="GET",route="/a",status_code="200",estimated="true"}')).toBe(2);
    expect(v.get('app_joules_per_request{service="x",estimated="true"}')).toBeCloseTo(0.075, 12);
    expect(v.get('jouletrace_incomplete_requests_total{service="x",estimated="true"}')).toBe(3);
    expect(v.get('jouletrace_span_energy_joules_count{service="x",label="s",estimated="true"}')).toBe(2);
    expect(v.get('jouletrace_incomplete_spans_total{service="x",estimated="true"}')).toBe(2);
  });

  // Under Node cluster, prom-client's AggregatorRegistry merges the workers' series of one name
  // and labels with the metric's `aggregator`, 'sum' unless set: every worker's sampler reads the
  // same machine, and its energy, power, info and intensity read once per worker.
  it("aggregates cluster workers' series by what each is: the machine's once, each worker's own added up", async () => {
    const workers = [0, 1].map(() => {
      const s = sampler({ ringCapacity: 0 }).start();
      const m = registerMetrics(s, { carbon: { country: 'FRA' }, joulesPerRequestWindowMs: 60_000 });
      cleanups.push(() => m.close());
      m.observeRequests([request('/a', 0.1)]);
      m.observeSpans([span('s', 0.01)]);
      return { s, m };
    });
    // Power once the runs are 0.5 s old.
    while (workers.some(({ s }) => runAgeNs(s) < 550_000_000n)) await sleep(20);
    // What each worker answers the primary: getMetricsAsJSON(), as prom-client's cluster sends it.
    const jsons = (await Promise.all(workers.map(({ m }) => m.registry.getMetricsAsJSON()))) as unknown as Array<Array<{ name: string; aggregator: string }>>;
    const aggregators = Object.fromEntries(jsons[0].map((x) => [x.name, x.aggregator]));
    const machine = ['jouletrace_energy_joules_total', 'jouletrace_power_watts', 'jouletrace_sampler_jitter_seconds', 'jouletrace_sampler_counters_still_seconds', 'jouletrace_grid_intensity_grams_per_kwh'];
    expect(aggregators).toEqual({
      ...Object.fromEntries(Object.keys(aggregators).map((name) => [name, 'sum'])),
      ...Object.fromEntries(machine.map((name) => [name, 'max'])),
      jouletrace_sampler_info: 'first',
      app_joules_per_request: 'omit',
    });
    // Each worker's figures as it sent them (a sum of one is the one).
    const each = await Promise.all(jsons.map(async (j) => parse(await AggregatorRegistry.aggregate([j.map((x) => ({ ...x, aggregator: 'sum' }))]).metrics())));
    const all = parse(await AggregatorRegistry.aggregate(jsons).metrics());
    const max = (key: string) => Math.max(...each.map((v) => v.get(key)!));
    const sum = (key: string) => each[0].get(key)! + each[1].get(key)!;
    const energy = 'jouletrace_energy_joules_total{domain="package",package="0",source="model",estimated="true"}';
    const power = 'jouletrace_power_watts{domain="package",package="0",estimated="true"}';
    for (const key of [energy, power, 'jouletrace_sampler_jitter_seconds{stat="max"}', 'jouletrace_grid_intensity_grams_per_kwh{intensity_source="country:FRA"}']) {
      expect(each[0].get(key)).toBeGreaterThan(0);
      expect({ key, value: all.get(key) }).toEqual({ key, value: max(key) });
    }
    expect(all.get('jouletrace_sampler_info{source="model",threads="' + workers[0].s.stats().threads.backend + '",interval_seconds="0.001",estimated="true"}')).toBe(1);
    // A mean per worker has no cluster figure: left out (the ratio of rates is one).
    expect(each[0].get('app_joules_per_request{estimated="true"}')).toBeCloseTo(0.1, 12);
    expect([...all.keys()].filter((k) => k.startsWith('app_joules_per_request'))).toEqual([]);
    // Each worker's own: its energy, requests, spans and samples, added up.
    for (const key of [
      'app_energy_joules_total{estimated="true"}',
      'jouletrace_process_energy_joules_total{part="process",estimated="true"}',
      'app_requests_total{estimated="true"}',
      'http_server_request_energy_joules_count{method="GET",route="/a",status_code="200",estimated="true"}',
      'jouletrace_span_energy_joules_count{label="s",estimated="true"}',
      'jouletrace_samples_total',
    ]) {
      expect(each[0].get(key)).toBeGreaterThan(0);
      expect({ key, value: all.get(key) }).toEqual({ key, value: sum(key) });
    }
  });

  // Labels built from data (an id, a path) made a series each: 20,000 labels gave a 42.5 MB
  // exposition that took ~3.9 s of the event loop to build at every scrape.
  it('folds span labels past maxSpanLabels into "(other)", as routes fold past maxRoutes', async () => {
    const s = sampler();
    const m = registerMetrics(s, { maxSpanLabels: 2 });
    cleanups.push(() => m.close());
    m.observeSpans([span('a', 0.001), span('b', 0.002), span('c', 0.004), span('a', 0.001), span('d', 0.008), span('c', 0.004, false)]);
    const v = parse(await m.registry.metrics());
    const counts = [...v].filter(([k]) => k.startsWith('jouletrace_span_energy_joules_count'));
    expect(Object.fromEntries(counts)).toEqual({
      'jouletrace_span_energy_joules_count{label="a",estimated="true"}': 2,
      'jouletrace_span_energy_joules_count{label="b",estimated="true"}': 1,
      'jouletrace_span_energy_joules_count{label="(other)",estimated="true"}': 2,
      'jouletrace_span_energy_joules_count{label="(other)"}': 1,
    });
    expect(v.get('jouletrace_span_energy_joules_sum{label="(other)",estimated="true"}')).toBeCloseTo(0.012, 12);
    // A reset leaves the labels kept as they were: "c" does not take a freed place.
    (m.registry.getSingleMetric('jouletrace_span_energy_joules') as unknown as { reset(): void }).reset();
    m.observeSpans([span('c', 0.001), span('b', 0.001)]);
    const after = [...parse(await m.registry.metrics()).keys()].filter((k) => k.startsWith('jouletrace_span_energy_joules_count'));
    expect(after.sort()).toEqual(['jouletrace_span_energy_joules_count{label="(other)",estimated="true"}', 'jouletrace_span_energy_joules_count{label="b",estimated="true"}']);

    // The default: 200 labels of their own, then "(other)".
    const d = registerMetrics(s, { registry: new Registry() });
    cleanups.push(() => d.close());
    d.observeSpans(Array.from({ length: 5000 }, (_, i) => span(`job-${i}`, 0.001)));
    const series = [...parse(await d.registry.metrics())].filter(([k]) => k.startsWith('jouletrace_span_energy_joules_count'));
    expect(series).toHaveLength(201);
    expect(Object.fromEntries(series)['jouletrace_span_energy_joules_count{label="(other)",estimated="true"}']).toBe(4800);
    expect(Object.fromEntries(series)['jouletrace_span_energy_joules_count{label="job-199",estimated="true"}']).toBe(1);

    expect(() => registerMetrics(s, { maxSpanLabels: 0 })).toThrow(new RangeError('Expected an integer between 1 and 1000000 for options.maxSpanLabels but received 0 of type number'));
    expect(() => registerMetrics(s, { maxSpanLabels: 2.5 })).toThrow(/for options\.maxSpanLabels/);
    expect(() => registerMetrics(s, { maxSpanLabels: '10' as never })).toThrow(TypeError);
  });

  // The dropped threads' energy moved from part="process" to part="other" with nothing to say so
  // (only `jouletrace serve` exported the count).
  it('counts the threads left untracked for want of a slot, over the sampler\'s life', async () => {
    // Every slot taken by the threads there now: workers started after them are untracked.
    const s = sampler({ ringCapacity: 0, maxThreads: fs.readdirSync('/proc/self/task').length }).start();
    const m = registerMetrics(s, { spanMetrics: false });
    cleanups.push(() => m.close());
    const name = 'jouletrace_process_dropped_threads_total';
    // Threads made since the count above (the sampler's own) may be some already.
    const before = s.stats().threads.droppedThreads;
    expect(parse(await m.registry.metrics()).get(name)).toBe(before);
    const spin = () =>
      new Promise((resolve, reject) => {
        const w = new Worker('const t = performance.now(); while (performance.now() - t < 50);', { eval: true });
        w.once('exit', resolve);
        w.once('error', reject);
      });
    await Promise.all([spin(), spin()]);
    await sleep(50);
    const dropped = s.stats().threads.droppedThreads;
    expect(dropped).toBeGreaterThanOrEqual(before + 2);
    expect(parse(await m.registry.metrics()).get(name)).toBe(dropped);
    expect(await m.registry.metrics()).toMatch(/^# TYPE jouletrace_process_dropped_threads_total counter$/m);
    // The sampler's count is over its life: a restart neither starts it again nor counts it twice.
    s.stop();
    s.start();
    await sleep(60);
    expect(parse(await m.registry.metrics()).get(name)).toBe(s.stats().threads.droppedThreads);
    s.close();
    expect(parse(await m.registry.metrics()).get(name)).toBeGreaterThanOrEqual(dropped);
  });

  // app_energy_joules_total is the registered sampler's energy, app_requests_total the tracker's
  // requests: a tracker of another sampler divided one by the other without a word.
  it("refuses a RequestTracker of another sampler as options.requests, naming the option", async () => {
    const s1 = sampler().start();
    const s2 = sampler();
    const t2 = new RequestTracker(s2);
    cleanups.push(() => t2.close());
    const registry = new Registry();
    expect(() => registerMetrics(s1, { registry, requests: t2 })).toThrow(
      new TypeError(
        "options.requests is a RequestTracker of another Sampler than the one given: its requests are measured by that sampler, not this one; pass a tracker made with new RequestTracker(sampler) of the sampler you register, or register the tracker's own (options.requests.sampler)",
      ),
    );
    expect(await registry.metrics()).toBe('\n');
    const m = registerMetrics(s2, { registry, requests: t2 });
    cleanups.push(() => m.close());
    expect(m.registry.getSingleMetric('app_requests_total')).toBeDefined();
  });

  // The example served no Content-Type, which Prometheus 3 refuses.
  it("serves the registry's Content-Type in registerMetrics()'s JSDoc example", async () => {
    const source = fs.readFileSync(path.join(__dirname, '..', 'src', 'prometheus.ts'), 'utf8');
    const doc = /\/\*\*((?:(?!\*\/)[\s\S])*)\*\/\nexport function registerMetrics\(/.exec(source)![1];
    const code = /```ts\n([\s\S]*?)\n\s*\* ```/.exec(doc)![1].replace(/^\s*\* ?/gm, '');
    expect(code).toMatch(/\.listen\(9464\);$/);
    const made: Sampler[] = [];
    class ModelSampler extends Sampler {
      constructor(o: ConstructorParameters<typeof Sampler>[0]) {
        super({ ...o, source: 'model' });
        made.push(this);
      }
    }
    const run = new Function('Sampler', 'registerMetrics', 'http', 'tracker', code.replace('http.createServer(', 'return http.createServer(').replace('.listen(9464)', ".listen(0, '127.0.0.1')"));
    const server = run(ModelSampler, registerMetrics, http, undefined) as http.Server;
    cleanups.push(() => {
      for (const x of made) x.close();
    });
    cleanups.push(() => new Promise((r) => server.close(r)));
    await new Promise((r) => server.once('listening', r));
    const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`);
    expect(res.headers.get('content-type')).toBe(new Registry().contentType);
    expect(await res.text()).toContain('jouletrace_energy_joules_total');
  });

  it('has bucket layouts covering µJ to J', () => {
    expect(SPAN_BUCKETS[0]).toBe(1e-6);
    expect(SPAN_BUCKETS[SPAN_BUCKETS.length - 1]).toBe(10);
    expect(SPAN_BUCKETS).toHaveLength(22);
    expect(REQUEST_BUCKETS).toContain(0.15);
    for (const b of [SPAN_BUCKETS, REQUEST_BUCKETS]) for (let i = 1; i < b.length; i++) expect(b[i]).toBeGreaterThan(b[i - 1]);
  });

  it('uses the registry and prefix given, validates options, and close() unregisters', async () => {
    const registry = new Registry();
    const s = sampler({ threads: 'off' }).start();
    const m = registerMetrics(s, { registry, prefix: 'node_energy_', appMetrics: false });
    expect(m.registry).toBe(registry);
    const text = await registry.metrics();
    expect(text).toContain('node_energy_energy_joules_total');
    expect(text).not.toContain('jouletrace_');
    // Without thread tracking there is no attribution to report.
    expect(text).not.toContain('node_energy_process_energy_joules_total');
    expect(text).not.toContain('app_energy_joules_total');
    // A second registration on the same registry conflicts: refused, naming the metrics, and it
    // leaves nothing of its own behind (the first one's metrics stay as they were).
    const names = () => (registry.getMetricsAsArray() as unknown as Array<{ name: string }>).map((x) => x.name).sort();
    const before = names();
    // With the app metrics on, it would also add app_* names the first one did not register.
    expect(() => registerMetrics(s, { registry, prefix: 'node_energy_' })).toThrow(
      expect.objectContaining({ code: 'ERR_JOULETRACE_METRIC_EXISTS', message: expect.stringContaining('node_energy_energy_joules_total') }),
    );
    expect(names()).toEqual(before);
    // Another prefix does not help: the request histogram keeps its conventional name.
    expect(() => registerMetrics(s, { registry, prefix: 'other_', appMetrics: false })).toThrow(/http_server_request_energy_joules already registered/);
    expect(names()).toEqual(before);
    m.close();
    m.close();
    expect(await registry.metrics()).toBe('\n');
    expect(() => registerMetrics(s, { topThreads: -1 })).toThrow(RangeError);
    // +Inf is always a bucket: given too, it was a second le="+Inf"-like series (le="Infinity").
    expect(() => registerMetrics(s, { spanBuckets: [0.001, Infinity] })).toThrow(
      'Expected an increasing array of positive finite numbers (the +Inf bucket is always added) for options.spanBuckets but received [0.001,Infinity] of type array',
    );
    // JSON's null for each, before.
    expect(() => registerMetrics(s, { requestBuckets: [NaN, -Infinity] })).toThrow(/ but received \[NaN,-Infinity\] of type array$/);
    // And a bigint threw in JSON.stringify: "[object Array]".
    expect(() => registerMetrics(s, { spanBuckets: [1n] as unknown as number[] })).toThrow(/ but received \[1n\] of type array$/);
    expect(() => registerMetrics(s, { requestBuckets: [0.5, 0.1] })).toThrow(/options\.requestBuckets/);
    expect(() => registerMetrics(s, { prefix: 'bad-prefix' })).toThrow(/not a valid metric name prefix/);
    // A constant label named like one of the metrics' own would be overwritten on some series.
    expect(() => registerMetrics(s, { labels: { label: 'svc-a' } })).toThrow(/options\.labels: "label" is a label jouletrace's metrics set themselves/);
    expect(() => registerMetrics(s, { labels: { part: 'blue' } })).toThrow(RangeError);
    expect(() => registerMetrics(s, { labels: { stat: 'mine' } })).toThrow(/options\.labels: "stat" is a label/);
    expect(() => registerMetrics(s, { nope: 1 } as never)).toThrow(/Unknown option options\.nope/);
    expect(() => registerMetrics({} as never)).toThrow(TypeError);
  });

  // An application's own prom-client (14, or 15 not deduplicated) got a TypeError with no code,
  // no version and no remedy.
  it("refuses a Registry of another prom-client copy with a code, the version jouletrace needs and how to get it", () => {
    // A second instance of prom-client's modules: what a copy elsewhere in node_modules is.
    const req = createRequire(__filename);
    const dir = path.dirname(req.resolve('prom-client/package.json')) + path.sep;
    const ours = Object.keys(req.cache).filter((k) => k.startsWith(dir));
    const saved = new Map(ours.map((k) => [k, req.cache[k]]));
    for (const k of ours) delete req.cache[k];
    let Foreign: typeof Registry;
    try {
      Foreign = (req('prom-client') as { Registry: typeof Registry }).Registry;
    } finally {
      for (const k of Object.keys(req.cache)) if (k.startsWith(dir)) delete req.cache[k];
      for (const [k, m] of saved) req.cache[k] = m;
    }
    expect(Foreign).not.toBe(Registry);
    const s = sampler({ threads: 'off' });
    const { version } = req('prom-client/package.json') as { version: string };
    const range = JSON.parse(fs.readFileSync(path.join(__dirname, '../package.json'), 'utf8')).peerDependencies['prom-client'];
    expect(() => registerMetrics(s, { registry: new Foreign() })).toThrow(
      expect.objectContaining({
        code: 'ERR_JOULETRACE_PROM_CLIENT',
        message:
          `options.registry is a Registry of another copy of prom-client than the one jouletrace uses (prom-client ${version} in ${dir.slice(0, -1)}); jouletrace's metrics can be registered only in a Registry of that copy. ` +
          `jouletrace needs prom-client ${range}, one copy for the whole application: install it at the top level (npm install prom-client@${range}) and run npm dedupe; npm ls prom-client lists the copies.`,
      }),
    );
    // Anything else is still a TypeError naming what was expected.
    expect(() => registerMetrics(s, { registry: {} as never })).toThrow(
      new TypeError("Expected a prom-client Registry (from the same prom-client as jouletrace's) for options.registry but received {} of type object"),
    );
  });

  // prefix 'app_' made jouletrace_energy_joules_total an app_energy_joules_total, which the
  // source article's metric has whatever the prefix: prom-client refused the second with a bare
  // Error halfway through the build, and the listeners taken on the sampler stayed (3 a call).
  it('refuses a prefix that gives a metric the name of one that keeps its own, with a RangeError naming both, leaving nothing behind', async () => {
    const s = sampler().start();
    const live = liveRunEndListeners(s);
    const registry = new Registry();
    for (const options of [{ prefix: 'app_' }, { prefix: 'app_', registry }]) {
      expect(() => registerMetrics(s, options)).toThrow(
        expect.objectContaining({
          name: 'RangeError',
          code: 'ERR_INVALID_ARG_VALUE',
          message:
            'options.prefix: "app_" names jouletrace\'s energy_joules_total metric app_energy_joules_total, the name another of its metrics keeps whatever the prefix; use another prefix, or appMetrics: false',
        }),
      );
    }
    expect(live()).toBe(0);
    expect(registry.getMetricsAsArray()).toEqual([]);
    // Without the app metrics there is no clash.
    const m = registerMetrics(s, { prefix: 'app_', appMetrics: false, registry });
    cleanups.push(() => m.close());
    expect(parse(await registry.metrics()).has('app_energy_joules_total{domain="package",package="0",source="model",estimated="true"}')).toBe(true);
  });

  // The prefix check works from a list of the names the prefixed metrics take: one missing from
  // it would be refused by prom-client halfway through the build again.
  it('checks the prefix against every name a prefixed metric takes', () => {
    const s = sampler().start();
    // A provider: the provider errors counter comes with one only.
    const m = registerMetrics(s, { prefix: 'x_', carbon: { provider: () => 100 } });
    cleanups.push(() => m.close());
    const built = m.registry.getMetricsAsArray().map((x) => x.name).filter((n) => n.startsWith('x_'));
    expect(built.sort()).toEqual(PREFIXED_NAMES.map((n) => `x_${n}`).sort());
  });

  it('gives back every run-end listener when a metric cannot be built', () => {
    const s = sampler().start();
    const live = liveRunEndListeners(s);
    const registerMetric = Registry.prototype.registerMetric;
    const refused = new Error('refused by the test');
    vi.spyOn(Registry.prototype, 'registerMetric').mockImplementation(function (this: Registry, metric) {
      if ((metric as unknown as { name: string }).name === 'app_energy_joules_total') throw refused;
      registerMetric.call(this, metric);
    });
    try {
      for (const options of [{}, { registry: new Registry() }]) expect(() => registerMetrics(s, options)).toThrow(refused);
    } finally {
      vi.restoreAllMocks();
    }
    expect(live()).toBe(0);
  });

  // 13 metrics stayed in options.registry (jouletrace_samples_total 0, ...), and a retry there
  // was refused as a conflict.
  it('refuses a closed sampler leaving nothing in options.registry, so that a retry there goes through', async () => {
    const closed = sampler();
    closed.close();
    const live = liveRunEndListeners(closed);
    const registry = new Registry();
    for (const options of [{ registry }, {}]) {
      expect(() => registerMetrics(closed, options)).toThrow(expect.objectContaining({ code: 'ERR_JOULETRACE_CLOSED' }));
    }
    expect(registry.getMetricsAsArray()).toEqual([]);
    expect(live()).toBe(0);
    const s = sampler().start();
    const m = registerMetrics(s, { registry });
    cleanups.push(() => m.close());
    expect(parse(await registry.metrics()).has('jouletrace_samples_total')).toBe(true);
  });

  // The middleware given for its tracker fed no request metric, and appMetrics: 'true' turned
  // the app metrics off, both without a word.
  it('refuses what is not a Sampler, naming the argument', () => {
    // A shape with totals() alone passed, and failed reading its domains; one with totals() and
    // domains passed, and failed with "sampler.onRunEnd is not a function".
    for (const [bad, shown] of [
      [{ totals() {} }, '{} of type object'],
      [{ totals() {}, domains: [] }, '{"domains":[]} of type object'],
      [{ totals() {}, stats() {}, onSpan() {}, domains: [] }, '{"domains":[]} of type object'],
      [null, 'null of type null'],
    ] as const) {
      expect(() => registerMetrics(bad as unknown as Sampler)).toThrow(new TypeError(`Expected a Sampler for sampler but received ${shown}`));
    }
  });

  it('refuses as options.requests anything but a RequestTracker, and a non-boolean options.appMetrics', async () => {
    const s = sampler().start();
    const mw = energyMiddleware(s);
    cleanups.push(() => mw.tracker.close());
    expect(() => registerMetrics(s, { requests: mw as never })).toThrow(
      new TypeError(
        "Expected a RequestTracker (an object with onRequest()) for options.requests but received [function jouletraceEnergy] of type function; pass the tracker itself (energyMiddleware()'s is middleware.tracker)",
      ),
    );
    for (const requests of ['tracker', {}, s, 42, null]) {
      expect(() => registerMetrics(s, { requests } as never)).toThrow(/^Expected a RequestTracker \(an object with onRequest\(\)\) for options\.requests but received /);
    }
    for (const appMetrics of ['true', 1, null]) {
      expect(() => registerMetrics(s, { appMetrics } as never)).toThrow(
        new TypeError(`Expected a boolean for options.appMetrics but received ${JSON.stringify(appMetrics)} of type ${appMetrics === null ? 'null' : typeof appMetrics}`),
      );
    }
    const m = registerMetrics(s, { requests: mw.tracker, appMetrics: true });
    cleanups.push(() => m.close());
    expect(m.registry.getSingleMetric('app_requests_total')).toBeDefined();
  });

  // A host agent's sampler measures no span or request of the process it runs in: these series
  // only ever read 0, under HELP texts about "this process's" requests.
  it('leaves the span and request metrics out with spanMetrics: false, and listens for no span', async () => {
    const inProcess = [
      'jouletrace_span_energy_joules',
      'http_server_request_energy_joules',
      'jouletrace_incomplete_spans_total',
      'jouletrace_incomplete_requests_total',
      'app_requests_total',
      'app_joules_per_request',
    ];
    const s = sampler().start();
    const names = async (m: { registry: Registry }) => (await m.registry.getMetricsAsJSON()).map((x) => x.name);
    const plain = registerMetrics(s);
    cleanups.push(() => plain.close());
    expect(await names(plain)).toEqual(expect.arrayContaining(inProcess));
    const spans = (s as unknown as { onSpan: typeof s.onSpan }).onSpan;
    let listened = 0;
    (s as unknown as { onSpan: typeof s.onSpan }).onSpan = (cb) => (listened++, spans.call(s, cb));
    const registry = new Registry();
    const agent = registerMetrics(s, { registry, spanMetrics: false });
    cleanups.push(() => agent.close());
    expect(listened).toBe(0);
    expect((await names(agent)).filter((n) => inProcess.includes(n))).toEqual([]);
    expect(await names(agent)).toEqual(expect.arrayContaining(['jouletrace_energy_joules_total', 'app_energy_joules_total']));
    agent.close();
    expect(await names(agent)).toEqual([]);
    for (const spanMetrics of ['false', 0, null]) {
      expect(() => registerMetrics(s, { spanMetrics } as never)).toThrow(
        new TypeError(`Expected a boolean for options.spanMetrics but received ${JSON.stringify(spanMetrics)} of type ${spanMetrics === null ? 'null' : typeof spanMetrics}`),
      );
    }
    const tracker = new RequestTracker(s);
    cleanups.push(() => tracker.close());
    expect(() => registerMetrics(s, { registry: new Registry(), requests: tracker, spanMetrics: false })).toThrow(
      new TypeError('options.requests needs spanMetrics: the request metrics it feeds (http_server_request_energy_joules, app_requests_total, app_joules_per_request) are left out with options.spanMetrics false'),
    );
    s.close();
    expect(() => registerMetrics(s, { registry, spanMetrics: false })).toThrow(expect.objectContaining({ code: 'ERR_JOULETRACE_CLOSED' }));
    expect(await names({ registry })).toEqual([]);
  });

  it('refuses as a constant label every label name its series use', async () => {
    // Every family with a series: thread tracking on, a span and a request observed, carbon on.
    const s = sampler().start();
    const m = registerMetrics(s, { carbon: { gramsPerKwh: 100 } });
    cleanups.push(() => m.close());
    m.observeSpans([span('x', 0.001)]);
    m.observeRequests([request('/x', 0.001)]);
    busy(30);
    const used = new Set<string>();
    for (const key of parse(await m.registry.metrics()).keys()) {
      for (const [, name] of key.matchAll(/[{,]([a-zA-Z_][a-zA-Z0-9_]*)="/g)) used.add(name);
    }
    expect(used).toContain('stat');
    for (const name of used) {
      expect(() => registerMetrics(s, { labels: { [name]: 'mine' } }), name).toThrow(RangeError);
    }
  });

  // They named options, options.gramsPerKwh or country: no option of registerMetrics().
  it("names options.carbon and its keys in the carbon option's errors", () => {
    const s = sampler();
    const refused: Array<[unknown, string]> = [
      [{ country: 'XXX' }, `for options.carbon.country but received "XXX" of type string`],
      [{ country: 'CAF' }, `(it has none for 'CAF': give options.carbon.gramsPerKwh instead) for options.carbon.country but received "CAF" of type string`],
      [{ country: 5 }, 'for options.carbon.country but received 5 of type number'],
      [{ gramsPerKwh: -1 }, 'for options.carbon.gramsPerKwh but received -1 of type number'],
      // Finite, but absurd: grams went to Infinity, and prom-client refused every scrape after.
      [{ gramsPerKwh: Number.MAX_VALUE }, 'Expected a number of gCO2e/kWh from 0 to 100000 for options.carbon.gramsPerKwh but received 1.7976931348623157e+308 of type number'],
      [{ provider: () => 1, fallbackGramsPerKwh: 1e6 }, 'Expected a number of gCO2e/kWh from 0 to 100000 for options.carbon.fallbackGramsPerKwh but received 1000000 of type number'],
      [{ provider: 3 }, 'Expected a function for options.carbon.provider but received 3 of type number'],
      [{ provider: () => 1, ttlMs: 0 }, 'for options.carbon.ttlMs but received 0 of type number'],
      [{ provider: () => 1, fallbackGramsPerKwh: NaN }, 'for options.carbon.fallbackGramsPerKwh but received NaN of type number'],
      [{}, 'for options.carbon but received {} of type object'],
      ['FRA', 'for options.carbon but received "FRA" of type string'],
      [{ country: 'FRA', ttl: 3 }, 'Unknown option options.carbon.ttl; known options are: country'],
      [{ country: 'FRA', gramsPerKwh: 300 }, 'options.carbon: give one of country, gramsPerKwh and provider, not country and gramsPerKwh'],
    ];
    for (const [carbon, message] of refused) {
      expect(() => registerMetrics(s, { carbon } as never), JSON.stringify(carbon)).toThrow(message);
    }
  });

  it('adds carbon at the configured intensity', async () => {
    const s = sampler().start();
    const m = registerMetrics(s, { carbon: { gramsPerKwh: 360 } });
    cleanups.push(() => m.close());
    busy(50);
    await sleep(20);
    const v = parse(await m.registry.metrics());
    const machine = v.get('jouletrace_energy_joules_total{domain="package",package="0",source="model",estimated="true"}')!;
    // 360 g/kWh = 360 g per 3.6e6 J = 1e-4 g/J.
    expect(v.get('jouletrace_carbon_grams_total{scope="machine",estimated="true"}')).toBeCloseTo(machine * 1e-4, 9);
    expect(v.get('jouletrace_grid_intensity_grams_per_kwh{intensity_source="fixed"}')).toBe(360);
    // No provider, nothing to fail.
    expect(m.registry.getSingleMetric('jouletrace_carbon_provider_errors_total')).toBeUndefined();
  });

  // A provider that never answered (a bad API key) had its fallback exported as its own figure,
  // or no carbon series at all, without a word; one that stopped answering kept its last figure
  // as 'provider' for good.
  it("labels the intensity by where it came from, counts the provider's failures and warns once", async () => {
    const seen: string[] = [];
    const onWarning = (w: Error & { code?: string }) => void seen.push(`${w.code}: ${w.message}`);
    process.on('warning', onWarning);
    cleanups.push(() => process.off('warning', onWarning));
    const s = sampler({ ringCapacity: 0 }).start();
    const failing = () => Promise.reject(new Error('401 invalid API key'));
    const registry = new Registry();
    const bare = registerMetrics(s, { registry, carbon: { provider: failing }, labels: { service: 'a' } });
    cleanups.push(() => bare.close());
    const fallback = registerMetrics(s, { carbon: { provider: failing, fallbackGramsPerKwh: 300 } });
    cleanups.push(() => fallback.close());
    let answer: number | Error = 200;
    const stale = registerMetrics(s, {
      carbon: {
        ttlMs: 1,
        provider: async () => {
          if (answer instanceof Error) throw answer;
          return answer;
        },
      },
    });
    cleanups.push(() => stale.close());
    busy(20);
    const scrape = async (m: { registry: Registry }) => parse(await m.registry.metrics());
    const carbonSeries = (v: Map<string, number>) => [...v].filter(([k]) => /^jouletrace_(carbon|grid)/.test(k));

    // Scraped twice: the provider's call that a first scrape starts has failed by the second.
    for (let i = 0; i < 2; i++) {
      await scrape(bare);
      await scrape(fallback);
      await sleep(5);
    }
    // Without a fallback: no intensity, no grams, and the counter says why.
    expect(carbonSeries(await scrape(bare))).toEqual([['jouletrace_carbon_provider_errors_total{service="a"}', 1]]);
    const f = await scrape(fallback);
    expect(f.get('jouletrace_grid_intensity_grams_per_kwh{intensity_source="fallback"}')).toBe(300);
    expect(f.has('jouletrace_grid_intensity_grams_per_kwh{intensity_source="provider"}')).toBe(false);
    expect(f.get('jouletrace_carbon_provider_errors_total')).toBe(1);
    expect(f.get('jouletrace_carbon_grams_total{scope="machine",estimated="true"}')).toBeGreaterThan(0);

    // A provider that answered, then failed: its last answer, marked stale.
    let v = await scrape(stale);
    expect(v.get('jouletrace_grid_intensity_grams_per_kwh{intensity_source="provider"}')).toBe(200);
    expect(v.get('jouletrace_carbon_provider_errors_total')).toBe(0);
    answer = new Error('503 Service Unavailable');
    await sleep(5);
    await scrape(stale); // past ttlMs: the refresh it starts fails
    await sleep(5);
    v = await scrape(stale);
    expect(carbonSeries(v).filter(([k]) => k.startsWith('jouletrace_grid'))).toEqual([['jouletrace_grid_intensity_grams_per_kwh{intensity_source="provider:stale"}', 200]]);
    expect(v.get('jouletrace_carbon_provider_errors_total')).toBeGreaterThanOrEqual(1);
    answer = 250;
    await sleep(5);
    await scrape(stale);
    await sleep(5);
    v = await scrape(stale);
    expect(carbonSeries(v).filter(([k]) => k.startsWith('jouletrace_grid'))).toEqual([['jouletrace_grid_intensity_grams_per_kwh{intensity_source="provider"}', 250]]);

    // One warning per provider, naming the option and its error.
    await new Promise((r) => setImmediate(r));
    expect(seen.filter((w) => w.startsWith('JOULETRACE_CARBON_PROVIDER: options.carbon.provider failed: 401 invalid API key.'))).toHaveLength(2);
    expect(seen.filter((w) => w.startsWith('JOULETRACE_CARBON_PROVIDER: options.carbon.provider failed: 503 Service Unavailable. Until it answers, its last answer is used;'))).toHaveLength(1);
    expect(seen).toHaveLength(3);
  });

  // Each registration built a CarbonIntensity of its own from the options: after a close() and a
  // registration that goes on from it, jouletrace_carbon_provider_errors_total went from 3 to 0,
  // the warning came again, and the intensity went back to none until the provider answered.
  it("goes on from a closed registration's carbon provider: its errors, its warning, its last answer", async () => {
    const seen: string[] = [];
    const onWarning = (w: Error & { code?: string }) => void seen.push(`${w.code}: ${w.message}`);
    process.on('warning', onWarning);
    cleanups.push(() => process.off('warning', onWarning));
    const s = sampler({ ringCapacity: 0, threads: 'off' }).start();
    const registry = new Registry();
    let answer: number | Error = 200;
    const provider = async () => {
      if (answer instanceof Error) throw answer;
      return answer;
    };
    let m = registerMetrics(s, { registry, carbon: { provider, ttlMs: 1 } });
    cleanups.push(() => m.close());
    const scrape = async () => parse(await registry.metrics());
    const errors = (v: Map<string, number>) => v.get('jouletrace_carbon_provider_errors_total')!;
    const intensity = (v: Map<string, number>) => [...v].filter(([k]) => k.startsWith('jouletrace_grid'));
    expect(intensity(await scrape())).toEqual([['jouletrace_grid_intensity_grams_per_kwh{intensity_source="provider"}', 200]]);
    answer = new Error('503 Service Unavailable');
    let v = await scrape();
    for (let i = 0; i < 200 && errors(v) < 2; i++) {
      await sleep(5);
      v = await scrape();
    }
    const before = errors(v);
    expect(before).toBeGreaterThanOrEqual(2);
    m.close();

    // The same provider options (another object): the same CarbonIntensity goes on.
    m = registerMetrics(s, { registry, carbon: { provider, ttlMs: 1 } });
    v = await scrape();
    expect(errors(v)).toBeGreaterThanOrEqual(before);
    expect(intensity(v)).toEqual([['jouletrace_grid_intensity_grams_per_kwh{intensity_source="provider:stale"}', 200]]);
    await new Promise((r) => setImmediate(r));
    expect(seen.filter((w) => w.startsWith('JOULETRACE_CARBON_PROVIDER:'))).toHaveLength(1);
    const shown = errors(await scrape());
    m.close();

    // Another provider: a CarbonIntensity of its own, its count going on from the closed one's.
    m = registerMetrics(s, { registry, carbon: { provider: () => 300 } });
    v = await scrape();
    expect(errors(v)).toBeGreaterThanOrEqual(shown);
    expect(intensity(v)).toEqual([['jouletrace_grid_intensity_grams_per_kwh{intensity_source="provider"}', 300]]);
  });
});

// --- A real Prometheus scraping a real app ------------------------------------------------------

const missing = prometheusMissing();

describeGated('with a real Prometheus server', missing ?? undefined, toolsRequired(), 'JOULETRACE_REQUIRE_TOOLS=1', () => {
  it('scrapes the app; the article PromQL and the histogram ratio agree with what the app served', async () => {
    const s = sampler().start();
    const tracker = new RequestTracker(s);
    cleanups.push(() => tracker.close());
    const m = registerMetrics(s, { requests: tracker });
    cleanups.push(() => m.close());

    // The app: one route doing ~0.5 ms of CPU work, each request accounted by the
    // RequestTracker (shared mode) and exported through registerMetrics.
    const served: Array<{ t: number; values: Map<string, number> }> = [];
    const server = http.createServer(async (req, res) => {
      if (req.url === '/metrics') {
        const text = await m.registry.metrics();
        served.push({ t: Date.now(), values: parse(text) });
        res.writeHead(200, { 'content-type': m.registry.contentType });
        res.end(text);
        return;
      }
      trackRequest(tracker, req, res, '/work');
      busy(0.5);
      res.end('ok');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => server.close(r)));
    const port = (server.address() as AddressInfo).port;

    const prom: PrometheusServer = await startPrometheus({ targets: [`127.0.0.1:${port}`], scrapeIntervalS: 1 });
    cleanups.push(() => prom.stop());

    // Prometheus hands new targets to its scrape loop up to 5 s after it starts: wait for the first scrape.
    const waitUntil = Date.now() + 15_000;
    while (served.length === 0 && Date.now() < waitUntil) await sleep(50);
    expect(served.length).toBeGreaterThan(0);

    // Bounded load: sequential keep-alive requests for 5 s, 2 ms apart.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    cleanups.push(() => agent.destroy());
    const get = () =>
      new Promise<void>((resolve, reject) => {
        http
          .get({ host: '127.0.0.1', port, path: '/work', agent }, (res) => {
            res.resume();
            res.on('end', resolve);
          })
          .on('error', reject);
      });
    const loadEnd = Date.now() + 5000;
    let sent = 0;
    while (Date.now() < loadEnd) {
      await get();
      sent++;
      await sleep(2);
    }
    expect(sent).toBeGreaterThan(200);
    // One more scrape after the load, so the window below has only load-time samples.
    const scrapesBefore = served.length;
    while (served.length < scrapesBefore + 1) await sleep(50);

    const up = await prom.query('up');
    expect(up.map((r) => r.value[1])).toEqual(['1']);

    // Pick an evaluation time halfway between two scrapes during the load and a 3 s window: its
    // edges fall ~0.5 s from any scrape (Prometheus scrapes every 1 s on a fixed phase), so the
    // samples Prometheus uses are exactly the ones the app served in (T - 3 s, T].
    const during = served.filter((x) => x.t < loadEnd);
    expect(during.length).toBeGreaterThanOrEqual(5);
    const T = (during[during.length - 2].t + during[during.length - 1].t) / 2;
    const W = 3000;
    const inWindow = served.filter((x) => x.t > T - W && x.t <= T);
    const margin = Math.min(...served.map((x) => Math.min(Math.abs(x.t - T), Math.abs(x.t - (T - W)))));
    expect(margin).toBeGreaterThan(150);
    expect(inWindow.length).toBe(3);
    const first = inWindow[0].values;
    const last = inWindow[inWindow.length - 1].values;
    const d = (name: string) => sumOf(last, name) - sumOf(first, name);

    // The source article's query, unchanged (but for the window).
    const article = await prom.query('rate(app_energy_joules_total[3s]) / rate(app_requests_total[3s])', T / 1000);
    expect(article).toHaveLength(1);
    const perRequest = Number(article[0].value[1]);
    expect(Number.isFinite(perRequest)).toBe(true);
    expect(perRequest).toBeGreaterThan(0);
    // rate() extrapolates numerator and denominator by the same factor (same target, same
    // sample times), so the ratio is exactly Δenergy / Δrequests over the served samples.
    const expected = d('app_energy_joules_total') / d('app_requests_total');
    expect(Math.abs(perRequest - expected) / expected).toBeLessThan(1e-9);

    const hist = await prom.query(
      'sum(rate(http_server_request_energy_joules_sum[3s])) / sum(rate(http_server_request_energy_joules_count[3s]))',
      T / 1000,
    );
    const histPerRequest = Number(hist[0].value[1]);
    expect(histPerRequest).toBeGreaterThan(0);
    const expectedHist = d('http_server_request_energy_joules_sum') / d('http_server_request_energy_joules_count');
    expect(Math.abs(histPerRequest - expectedHist) / expectedHist).toBeLessThan(1e-9);

    // Requests are charged the process's energy while they run; the article's ratio also counts
    // what the process spends between requests (the client loop, the metrics endpoint, the
    // sampler thread), so it is larger — but the same order of magnitude.
    expect(histPerRequest).toBeLessThan(perRequest);
    expect(histPerRequest).toBeGreaterThan(perRequest / 20);

    // The sliding-window gauge as the app reported it: the mean of what the histogram holds.
    const gauge = await prom.query('app_joules_per_request', T / 1000);
    const all = sumOf(last, 'http_server_request_energy_joules_sum') / sumOf(last, 'http_server_request_energy_joules_count');
    expect(Number(gauge[0].value[1])).toBeCloseTo(all, 9);
  }, 30_000);
});
