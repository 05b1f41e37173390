// OpenTelemetry metrics (and span attributes) for a Sampler, through @opentelemetry/api.
//
// Device totals follow the hardware semantic conventions (development status):
//   hw.energy  Counter (asynchronous here), unit J   — per RAPL domain and package
//   hw.power   Gauge (asynchronous here),   unit W
//   hw.host.energy / hw.host.power for the psys domain (the whole platform), so that summing
//   hw.energy never double counts it; core and uncore name their package in hw.parent.
// Attributes: hw.id (unique on the host, "rapl-<domain>-<package>"), hw.type ("cpu", "memory",
// "gpu"), hw.name (the RAPL domain), hw.parent; plus jouletrace.estimated = true from a model.
import './otel-api-peer'; // first: a missing @opentelemetry/api is its error
import {
  context as otelContext,
  createNoopMeter,
  diag,
  metrics,
  trace,
  type Attributes,
  type Meter,
  type MeterProvider,
  type ObservableCounter,
  type Span,
  type Tracer,
} from '@opentelemetry/api';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChainedContext, exporterContext } from './chained-context';
import { checkBoolean, checkKnownKeys, checkMethods, checkObject, checkSampler, JouletraceError } from './errors';
import { packageRoot } from './native';
import { EnergyTracker, PowerWindow } from './energy-tracker';
import { EnergyHealth, type HealthCounts } from './sampler-health';
import { checkMaxSpanLabels, checkRequestSource, SpanLabels, subscribe, type RequestSource } from './settled-feed';
import type { Sampler } from './sampler';
import { OTHER_ROUTE, UNMATCHED_ROUTE, UNROUTED, type RequestRecord, type SpanResult } from './span-types';

// The `requests` option's type, for callers who declare theirs.
export type { RequestSource };

/**
 * CLOCK_MONOTONIC ns (process.hrtime on Linux) → ms since the epoch, for timestamps. Anchored to
 * the wall clock now, as the OTel SDK anchors each span to Date.now() at its start (its end being
 * that plus monotonic time): anchored once at process start (performance.timeOrigin), a wall-clock
 * step since (an NTP step, a VM resumed) put the child spans that far from their parents.
 */
function monotonicNsToEpochMs(ns: number): number {
  return ns / 1e6 + (Date.now() - Number(process.hrtime.bigint()) / 1e6);
}

/**
 * The hook jouletrace's span and request producers offer (see docs/observability.md): a function
 * called at begin() / request start whose return value is carried, untouched, on the settled
 * SpanResult / RequestRecord as `context`. registerOpenTelemetry() installs one returning the
 * active OTel span, calling the application's hook too where one is in force.
 */
export interface ContextCaptureHost {
  setContextCapture?(capture: (() => unknown) | null): void;
  /** @internal The hook in force, which registerOpenTelemetry() chains and puts back. */
  contextCapture?(): (() => unknown) | null;
}

export interface OpenTelemetryOptions {
  /** Meter provider to get the meter from. Default: the global one (metrics.getMeterProvider()). */
  meterProvider?: MeterProvider;
  /** Or a meter to use directly. */
  meter?: Meter;
  /** A RequestTracker: its requests feed http.server.request.energy. */
  requests?: RequestSource & ContextCaptureHost;
  /**
   * Put settled energy on the OTel traces. A request's goes on the span active at its start
   * (the server span) as attribute `energy.joules` while that span is open. A jouletrace span's
   * goes on a child span "jouletrace.energy" over its own interval, under the span active at
   * begin(): several jouletrace spans under one OTel span each keep their figure. A request
   * whose span has ended also gets such a child (an ended span takes no more attributes). A
   * partial figure (the span or request flagged incomplete) has `jouletrace.incomplete: true`
   * beside it. Default true.
   */
  traces?: boolean;
  /** Tracer for those child spans. Default: trace.getTracer('jouletrace'). */
  tracer?: Tracer;
  /**
   * Span labels with attribute sets of their own in jouletrace.span.energy and
   * jouletrace.span.incomplete, in the order they are first seen; spans of any later label are
   * recorded under jouletrace.span.label "(other)". 1 to 1000000, default 200. The
   * "jouletrace.energy" child spans keep the span's own label.
   */
  maxSpanLabels?: number;
}

export interface OpenTelemetryHandle {
  observeSpans(spans: readonly SpanResult[]): void;
  observeRequests(records: readonly RequestRecord[]): void;
  /**
   * Stops observing and, once no other registration uses it, puts back the capture hook in force
   * before (the application's, or none); the meter takes a new registration. An SDK
   * reader with cumulative temporality goes on exporting the last values it was given.
   */
  close(): void;
}

// The routes that requests count under where no route was matched or kept.
const NOT_ROUTES: ReadonlySet<string> = new Set([UNMATCHED_ROUTE, UNROUTED, OTHER_ROUTE]);
// The semantic conventions' known methods (RFC 9110's and PATCH), matched case-sensitively; any
// other is _OTHER (Node's WebDAV and cache methods, a lower-case start('get', ...), (other) past
// maxRoutes). Without http.request.method_original, which they leave out of metrics.
const KNOWN_METHODS: ReadonlySet<string> = new Set(['CONNECT', 'DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST', 'PUT', 'TRACE']);

const HW_TYPE: Record<string, string> = {
  package: 'cpu',
  core: 'cpu',
  pp0: 'cpu',
  uncore: 'gpu', // PP1: the integrated graphics on client parts
  pp1: 'gpu',
  dram: 'memory',
};

function hwAttributes(domain: string, pkg: number, estimated: boolean): { host: boolean; attrs: Attributes } {
  const host = domain === 'psys';
  const attrs: Attributes = {
    'hw.id': `rapl-${domain}-${pkg}`,
    'hw.name': domain,
  };
  if (!host) attrs['hw.type'] = HW_TYPE[domain] ?? 'cpu';
  if (domain === 'core' || domain === 'uncore' || domain === 'pp0' || domain === 'pp1') attrs['hw.parent'] = `rapl-package-${pkg}`;
  if (estimated) attrs['jouletrace.estimated'] = true;
  return { host, attrs };
}

function isOtelSpan(x: unknown): x is Span {
  return (
    x !== null &&
    typeof x === 'object' &&
    typeof (x as Span).spanContext === 'function' &&
    typeof (x as Span).setAttribute === 'function' &&
    typeof (x as Span).isRecording === 'function'
  );
}

/**
 * Reports a sampler's energy through OpenTelemetry metrics, and settled span and request energy
 * as histograms (and on the OTel spans active when they began).
 */
export function registerOpenTelemetry(sampler: Sampler, options: OpenTelemetryOptions = {}): OpenTelemetryHandle {
  const opts = checkObject('options', options) as OpenTelemetryOptions;
  checkKnownKeys('options', opts as Record<string, unknown>, ['meterProvider', 'meter', 'requests', 'traces', 'tracer', 'maxSpanLabels']);
  if (opts.traces !== undefined) checkBoolean('options.traces', opts.traces);
  const spanLabels = new SpanLabels(checkMaxSpanLabels('options.maxSpanLabels', opts.maxSpanLabels));
  checkSampler('sampler', sampler, ['onSpan']); // settled spans feed the histograms
  const requests = checkRequestSource<RequestSource & ContextCaptureHost>('options.requests', opts.requests, sampler);
  // Checked before anything subscribes: a bad one failed later, a tracer inside an onSpan
  // listener (an uncaught exception there ends the process).
  let meter: Meter;
  if (opts.meter !== undefined) meter = checkMethods('options.meter', opts.meter, 'an OpenTelemetry Meter', METER_METHODS);
  else if (opts.meterProvider !== undefined) {
    const provider = checkMethods<MeterProvider>('options.meterProvider', opts.meterProvider, 'an OpenTelemetry MeterProvider', ['getMeter']);
    meter = checkMethods('options.meterProvider.getMeter()', provider.getMeter('jouletrace', readVersion()), 'an OpenTelemetry Meter', METER_METHODS);
  } else meter = metrics.getMeterProvider().getMeter('jouletrace', readVersion());
  const tracer =
    opts.tracer !== undefined ? checkMethods<Tracer>('options.tracer', opts.tracer, 'an OpenTelemetry Tracer', ['startSpan']) : trace.getTracer('jouletrace');
  // The API's global meter provider is not a proxy: a meter taken before the SDK registers
  // its provider stays the no-op one for good.
  const noop = meter === createNoopMeter();
  if (noop && !opts.meter && !opts.meterProvider) warnNoMeterProvider();
  // Two registrations on one meter report hw.energy twice under one hw.id (the later
  // observation wins) and every span and request twice in the histograms.
  if (!noop && openMeters.has(meter)) {
    throw new JouletraceError(
      'ERR_JOULETRACE_METRIC_EXISTS',
      'registerOpenTelemetry(): this meter has a jouletrace registration open already; close() the earlier one, or pass another options.meterProvider',
    );
  }
  const traces = opts.traces !== false;

  const hwEnergy = meter.createObservableCounter('hw.energy', { unit: 'J', description: 'Energy consumed by the component' });
  const hwPower = meter.createObservableGauge('hw.power', { unit: 'W', description: 'Average power consumed by the component since the previous collection' });
  const hostEnergy = meter.createObservableCounter('hw.host.energy', {
    unit: 'J',
    description: 'Total energy consumed by the entire physical host (RAPL psys), in joules',
  });
  const hostPower = meter.createObservableGauge('hw.host.power', { unit: 'W', description: 'Power of the entire physical host (RAPL psys)' });
  const processEnergy = meter.createObservableCounter('jouletrace.process.energy', {
    unit: 'J',
    description: 'Measured energy split into this process, the idle baseline and other processes',
  });
  const spanEnergy = meter.createHistogram('jouletrace.span.energy', {
    unit: 'J',
    description: 'Energy of settled jouletrace spans',
    advice: { explicitBucketBoundaries: [1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 1, 10] },
  });
  const requestEnergy = meter.createHistogram('http.server.request.energy', {
    unit: 'J',
    description: 'Energy charged to each HTTP server request',
    advice: { explicitBucketBoundaries: [1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.15, 0.5, 1, 10] },
  });
  // The histograms leave out what has no figure (NaN joules): counted here, with those that have a
  // partial one, so that an export short of spans or requests under overload says so.
  const spanIncomplete = meter.createCounter('jouletrace.span.incomplete', {
    unit: '{span}',
    description: 'Settled jouletrace spans flagged incomplete (part of their interval unmeasured), with or without a figure',
  });
  const requestIncomplete = meter.createCounter('jouletrace.request.incomplete', {
    unit: '{request}',
    description: 'Finished HTTP server requests flagged incomplete (part of their lifetime unmeasured), with or without a figure',
  });

  // Sampler health, as Prometheus's jouletrace_samples_total and the sampler_* counters: the
  // sampler's counts, which start afresh at each start(), accumulated (EnergyHealth).
  const healthCounters: Array<[ObservableCounter, keyof HealthCounts]> = [
    [meter.createObservableCounter('jouletrace.sampler.samples', { unit: '{sample}', description: 'Energy samples taken by the sampler thread' }), 'samples'],
    [
      meter.createObservableCounter('jouletrace.sampler.dropped_samples', {
        unit: '{sample}',
        description: 'Samples a full ring could not keep (refused or overwritten before they were read): detail lost, totals stay exact',
      }),
      'dropped',
    ],
    [meter.createObservableCounter('jouletrace.sampler.missed_deadlines', { unit: '{period}', description: 'Sampling periods the sampler thread woke up too late for' }), 'missed'],
    [
      meter.createObservableCounter('jouletrace.sampler.read_errors', {
        unit: '{read}',
        description: 'Reads of the energy source that failed (the domains kept their last values until a good read)',
      }),
      'readErrors',
    ],
    [
      meter.createObservableCounter('jouletrace.sampler.energy_restarts', {
        unit: '{restart}',
        description: 'Of jouletrace.sampler.read_errors, the reads in which an energy counter started again: the energy from its last good read to the restart is lost',
      }),
      'counterRestarts',
    ],
  ];
  // As Prometheus's jouletrace_process_dropped_threads_total: threads left untracked move their
  // energy from jouletrace.part=process to other, and this says so.
  const droppedThreads = meter.createObservableCounter('jouletrace.process.dropped_threads', {
    unit: '{thread}',
    description: 'Threads the sampler left untracked because every thread slot (maxThreads) was in use; their energy went to jouletrace.process.energy part other',
  });
  const domainReadErrors = meter.createObservableCounter('jouletrace.sampler.domain_read_errors', {
    unit: '{read}',
    description: 'Of jouletrace.sampler.read_errors, the reads that failed for each RAPL domain and package (a read that failed for two counts for both)',
  });

  // Power over the time between two collections (at least PowerWindow's 0.5 s).
  const power = new PowerWindow();
  const callback = (result: import('@opentelemetry/api').BatchObservableResult) => {
    const r = energy.read();
    const powerLast = power.update(r);
    for (const d of r.domains) {
      const { host, attrs } = hwAttributes(d.domain, d.package, d.estimated);
      result.observe(host ? hostEnergy : hwEnergy, d.joules, attrs);
      const w = powerLast.get(d.key);
      if (w !== undefined) result.observe(host ? hostPower : hwPower, w, attrs);
    }
    if (r.parts) {
      for (const part of ['process', 'baseline', 'other'] as const) {
        const attrs: Attributes = { 'jouletrace.part': part };
        if (r.estimated) attrs['jouletrace.estimated'] = true;
        result.observe(processEnergy, r.parts[part], attrs);
      }
    }
    const h = health.read();
    for (const [counter, key] of healthCounters) result.observe(counter, h[key]);
    if (energy.attributed) result.observe(droppedThreads, h.droppedThreads);
    // With the attributes of the domain's hw.energy stream.
    sampler.domains.forEach((d, i) => result.observe(domainReadErrors, h.readErrorsByDomain[i], hwAttributes(d.domain, d.package, energy.estimated).attrs));
  };
  const observables = [hwEnergy, hwPower, hostEnergy, hostPower, processEnergy, droppedThreads, ...healthCounters.map(([c]) => c), domainReadErrors];

  // `onOpenSpan`: a request's figure goes on its own span while that is open. A jouletrace
  // span's never does: one OTel span holds many of them, and each would overwrite the last.
  const annotate = (record: SpanResult | RequestRecord, name: string, extra: Attributes, onOpenSpan: boolean) => {
    if (!traces) return;
    const ctx = exporterContext(record);
    // Two registrations of one sampler (each its own meter provider) are both given the record:
    // the first annotates it, once.
    if (!isOtelSpan(ctx) || annotated.has(record)) return;
    annotated.add(record);
    const { joules, estimated, startNs, endNs } = record;
    const attrs: Attributes = { 'energy.joules': joules, ...extra };
    if (estimated) attrs['energy.estimated'] = true;
    // Part of its interval went unmeasured: the figure is short of the whole, as the metrics say.
    if (record.incomplete) attrs['jouletrace.incomplete'] = true;
    if (onOpenSpan && ctx.isRecording()) {
      ctx.setAttributes(attrs);
      return;
    }
    // A child span over the same interval carries the figure.
    const endMs = monotonicNsToEpochMs(endNs);
    const child = tracer.startSpan(
      'jouletrace.energy',
      { startTime: endMs - (endNs - startNs) / 1e6, attributes: { 'jouletrace.subject': name, ...attrs } },
      trace.setSpan(otelContext.active(), ctx),
    );
    child.end(endMs);
  };

  let closed = false;
  const observeSpans = (spans: readonly SpanResult[]): void => {
    if (closed) return;
    for (const s of spans) {
      const measured = Number.isFinite(s.joules) && s.joules >= 0;
      if (!measured && !s.incomplete) continue;
      let attrs: Attributes = { 'jouletrace.span.label': spanLabels.of(s.label) };
      if (s.estimated) attrs['jouletrace.estimated'] = true;
      if (s.incomplete) {
        spanIncomplete.add(1, attrs);
        attrs = { ...attrs, 'jouletrace.incomplete': true };
      }
      if (!measured) continue;
      spanEnergy.record(s.joules, attrs);
      annotate(s, s.label, { 'jouletrace.span.label': s.label }, false);
    }
  };
  const observeRequests = (records: readonly RequestRecord[]): void => {
    if (closed) return;
    for (const r of records) {
      const measured = Number.isFinite(r.joules) && r.joules >= 0;
      if (!measured && !r.incomplete) continue;
      // The semantic conventions' http.request.method is a known method or _OTHER, and its
      // http.route the route matched, left out where there is none: jouletrace's placeholders
      // ((unmatched), (unrouted), and (other) past maxRoutes) name no route.
      let attrs: Attributes = { 'http.request.method': KNOWN_METHODS.has(r.method) ? r.method : '_OTHER' };
      if (!NOT_ROUTES.has(r.route)) attrs['http.route'] = r.route;
      attrs['http.response.status_code'] = r.statusCode;
      if (r.estimated) attrs['jouletrace.estimated'] = true;
      if (r.incomplete) {
        requestIncomplete.add(1, attrs);
        attrs = { ...attrs, 'jouletrace.incomplete': true };
      }
      if (!measured) continue;
      requestEnergy.record(r.joules, attrs);
      annotate(r, `${r.method} ${r.route}`, {}, true);
    }
  };

  // Taken once the instruments are built (a meter's create*() may throw), and given back if the
  // rest throws: a closed sampler refuses the subscription, a meter may refuse the callback, and
  // a refusal must leave nothing behind (the meter's callback went on reading the closed sampler,
  // the capture hooks stayed installed, the listeners stayed on a live sampler).
  const carried = closedRegistrations.get(meter)?.get(sampler);
  const energy = new EnergyTracker(sampler, carried?.energy);
  const health = new EnergyHealth(sampler, carried?.health);
  let unsubscribe: () => void = () => {};
  try {
    unsubscribe = subscribe(sampler, requests, observeSpans, observeRequests);
    meter.addBatchObservableCallback(callback, observables);
  } catch (err) {
    unsubscribe();
    energy.close();
    health.close();
    throw err;
  }

  // Capture the active OTel span at begin / request start, where the producers allow it.
  const hosts = [sampler as unknown as ContextCaptureHost, requests].filter(
    (h): h is ContextCaptureHost => !!h && typeof h.setContextCapture === 'function',
  );
  const captures = traces ? hosts.map((h) => [h, installCapture(h)] as const) : [];
  if (!noop) openMeters.add(meter);
  closedRegistrations.delete(meter);

  return {
    observeSpans,
    observeRequests,
    close() {
      if (closed) return;
      closed = true;
      openMeters.delete(meter);
      unsubscribe();
      energy.close();
      health.close();
      closedRegistrations.set(meter, new WeakMap([[sampler, { energy, health }]]));
      meter.removeBatchObservableCallback(callback, observables);
      for (const [h, installed] of captures) releaseCapture(h, installed);
    },
  };
}

// diag.warn() alone printed nothing unless the application had set a diag logger: a registration
// made before the SDK (NodeSDK.start() after the imports, as many apps do) exported nothing, for
// good, without a word. Not looked up again later: the API says nowhere when a global provider
// is set, and a meter found at the first span or request would leave hw.energy and the sampler
// counters unregistered in an app that has neither.
let warnedNoMeterProvider = false;
const NO_METER_PROVIDER =
  'registerOpenTelemetry() found no global MeterProvider, so it took the no-op meter and no metric of this registration will ever be exported ' +
  "(the API's global provider is no proxy: one set later does not reach a meter taken before). Start the OpenTelemetry SDK " +
  '(sdk.start(), or metrics.setGlobalMeterProvider()) before calling registerOpenTelemetry(), or pass options.meterProvider or options.meter';
function warnNoMeterProvider(): void {
  diag.warn(`jouletrace: ${NO_METER_PROVIDER}`);
  if (warnedNoMeterProvider) return;
  warnedNoMeterProvider = true;
  process.emitWarning(`${NO_METER_PROVIDER} (warned once)`, { code: 'JOULETRACE_NO_METER_PROVIDER' });
}

// What registerOpenTelemetry() calls on a meter.
const METER_METHODS = ['createObservableCounter', 'createObservableGauge', 'createHistogram', 'createCounter', 'addBatchObservableCallback', 'removeBatchObservableCallback'];

// Meters with an open registration (the SDK's getMeter() gives one meter per name and version).
const openMeters = new WeakSet<Meter>();

// What the last registration closed on a meter had counted (by meter, then its sampler, the one
// entry): a new registration of that sampler on that meter reports the same streams (the SDK
// keeps an instrument per name), and goes on from it, so that hw.energy and the sampler counters
// never go down and delta temporality counts nothing twice. Only the last: after another
// sampler's registration, the streams show that one's figures, and going on from the earlier
// one's counted its energy again; a new registration then starts as a first one does.
const closedRegistrations = new WeakMap<Meter, WeakMap<Sampler, { energy: EnergyTracker; health: EnergyHealth }>>();

// The records whose energy went on the trace already (see annotate).
const annotated = new WeakSet<object>();

/**
 * The hook registrations here installed on a sampler or tracker: one, shared by every open
 * registration (each finds the OTel span through it), the hook in force before it (the
 * application's, which it calls: see chained-context.ts), put back when the last closes.
 */
interface InstalledCapture {
  capture: () => unknown;
  previous: (() => unknown) | null;
  open: number;
}
const installedCaptures = new WeakMap<ContextCaptureHost, InstalledCapture>();

// A host without contextCapture() (a tracker of the application's own) is taken to keep ours.
function captureInForce(h: ContextCaptureHost): (() => unknown) | null {
  return typeof h.contextCapture === 'function' ? h.contextCapture() : (installedCaptures.get(h)?.capture ?? null);
}

function installCapture(h: ContextCaptureHost): InstalledCapture {
  const inForce = captureInForce(h);
  let installed = installedCaptures.get(h);
  // A hook set since ours (the application's) is chained by a new one.
  if (!installed || installed.capture !== inForce) {
    const previous = inForce;
    const capture = previous ? () => new ChainedContext(previous(), trace.getActiveSpan()) : () => trace.getActiveSpan();
    h.setContextCapture!(capture);
    installedCaptures.set(h, (installed = { capture, previous, open: 0 }));
  }
  installed.open++;
  return installed;
}

function releaseCapture(h: ContextCaptureHost, installed: InstalledCapture): void {
  if (--installed.open > 0) return;
  // Replaced since (the application set its own): left as it is.
  if (captureInForce(h) === installed.capture) h.setContextCapture!(installed.previous);
  if (installedCaptures.get(h) === installed) installedCaptures.delete(h);
}

function readVersion(): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '0.0.0';
  }
}
