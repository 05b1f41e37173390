// Prometheus metrics for a Sampler (and optionally a RequestTracker), with prom-client.
//
// Conventions (prom-client, Prometheus naming): base units (joules, watts, seconds, grams),
// `_total` on counters, every label declared up front, figures read from the sampler at scrape
// time in collect() (never pushed from timers), counters that never go down — the sampler's
// totals restart at each start(), so this module accumulates increases itself.
import { PROM_CLIENT_RANGE } from './prom-client-peer'; // first: a missing prom-client is its error
import { Counter, Gauge, Registry, type Metric } from 'prom-client';
import * as path from 'node:path';
import { carbonIntensity, joulesToGrams, MAX_GRAMS_PER_KWH, type CarbonIntensity, type CarbonIntensityOptions } from './carbon';
import { checkBoolean, checkIntegerInRange, checkObject, checkSampler, checkString, invalidType, JouletraceError } from './errors';
import { EnergyTracker, PowerWindow, type EnergyReading } from './energy-tracker';
import { FastHistogram, type HistogramSeries } from './prometheus-histogram';
import { PREFIXED_NAMES } from './prometheus-names';
import { EnergyHealth, type HealthCounts } from './sampler-health';
import { checkMaxSpanLabels, checkRequestSource, SpanLabels, subscribe, type RequestSource } from './settled-feed';
import { SlidingWindow } from './sliding-window';
import type { Sampler } from './sampler';
import type { RequestRecord, SpanResult } from './span-types';

// The `requests` option's type, for callers who declare theirs.
export type { RequestSource };

/**
 * Span energy buckets, joules: 1-2-5 steps from 1 µJ to 10 J. A span runs from microseconds
 * (a few µJ at a few watts per core) to seconds (joules), six decades; three buckets per decade
 * keep histogram_quantile() within a factor of ~2 everywhere for 22 series per label.
 */
export const SPAN_BUCKETS: readonly number[] = decades(1e-6, 10);
/**
 * Request energy buckets, joules: 1-2-5 steps from 10 µJ to 10 J, plus 0.15 J — the source
 * article's alert threshold — so the share of requests above it is exact, not interpolated.
 */
export const REQUEST_BUCKETS: readonly number[] = [...decades(1e-5, 10), 0.15].sort((a, b) => a - b);

function decades(from: number, to: number): number[] {
  const out: number[] = [];
  for (let d = Math.round(Math.log10(from)); d <= Math.round(Math.log10(to)); d++) {
    for (const m of [1, 2, 5]) {
      const v = Number((m * 10 ** d).toPrecision(3));
      if (v >= from && v <= to) out.push(v);
    }
  }
  return out;
}

export interface PrometheusOptions {
  /** Registry to register in. Default: a new Registry (never the global one). */
  registry?: Registry;
  /**
   * Prefix of the jouletrace_* metric names. Default 'jouletrace_'. One that gives a metric the
   * name of one that keeps its own whatever the prefix ('app_': app_energy_joules_total) is a
   * RangeError (code ERR_INVALID_ARG_VALUE).
   */
  prefix?: string;
  /**
   * Constant labels added to every metric (e.g. { service: 'matching' }); not the names the
   * metrics' own labels use (RangeError).
   */
  labels?: Record<string, string>;
  /** A RequestTracker: its requests feed http_server_request_energy_joules and the app_* metrics. */
  requests?: RequestSource;
  /** Thread names with a series of their own in jouletrace_thread_energy_joules_total; the rest are "other". Default 10. */
  topThreads?: number;
  /**
   * Span labels with a series of their own in jouletrace_span_energy_joules, in the order they
   * are first seen; spans of any later label are counted under "(other)". 1 to 1000000, default
   * 200: each label is 22 bucket series (44 from an estimated source), and a label built from
   * data (an id, a path) would otherwise grow the exposition without bound.
   */
  maxSpanLabels?: number;
  /** Window of app_joules_per_request, in ms, in whole seconds (a scrape covers W to W + 1 s). Default 300000 (5 minutes). */
  joulesPerRequestWindowMs?: number;
  /**
   * Grid carbon intensity: enables jouletrace_carbon_grams_total and
   * jouletrace_grid_intensity_grams_per_kwh, and with a provider
   * jouletrace_carbon_provider_errors_total.
   */
  carbon?: CarbonIntensityOptions | CarbonIntensity;
  /** Register the source article's app_* metrics. Default true. */
  appMetrics?: boolean;
  /**
   * Register the metrics of this process's settled spans and requests (jouletrace_span_energy_joules,
   * http_server_request_energy_joules, jouletrace_incomplete_spans_total,
   * jouletrace_incomplete_requests_total, and with appMetrics app_requests_total and
   * app_joules_per_request) and listen for them. Default true; false for a sampler that measures
   * none of them, as a host agent's (`jouletrace serve`), where they would only ever read 0 (or
   * NaN). `requests` then has nothing to feed (TypeError).
   */
  spanMetrics?: boolean;
  /** Histogram buckets, joules. Defaults: SPAN_BUCKETS, REQUEST_BUCKETS. */
  spanBuckets?: number[];
  requestBuckets?: number[];
}

export interface PrometheusMetrics {
  registry: Registry;
  /** Records settled spans (called automatically: the metrics subscribe to sampler.onSpan()). */
  observeSpans(spans: readonly SpanResult[]): void;
  /** Records finished requests (called automatically when the tracker offers onRequest()). */
  observeRequests(records: readonly RequestRecord[]): void;
  /** Unsubscribes and removes the metrics from the registry. The sampler is left alone. */
  close(): void;
}

// How long a scrape waits for a carbon intensity provider before it goes on with the last
// answer (its call goes on, for the next scrape).
const SCRAPE_WAIT_MS = 1000;

// Label names of jouletrace's own metrics (and prom-client's `le`): a constant label of the
// same name would be overwritten on some series and not others.
const RESERVED_LABELS = ['domain', 'package', 'source', 'part', 'thread', 'label', 'method', 'route', 'status_code', 'quantile', 'stat', 'threads', 'interval_seconds', 'scope', 'intensity_source', 'estimated', 'le'];
const OPTION_KEYS = [
  'registry',
  'prefix',
  'labels',
  'requests',
  'topThreads',
  'maxSpanLabels',
  'joulesPerRequestWindowMs',
  'carbon',
  'appMetrics',
  'spanMetrics',
  'spanBuckets',
  'requestBuckets',
];

// The metrics that keep their names whatever the prefix (the source article's, and the
// semantic-convention request histogram), each with whether the options register it.
const FIXED_NAMES: Array<[string, (app: boolean, spans: boolean) => boolean]> = [
  ['http_server_request_energy_joules', (_app, spans) => spans],
  ['app_energy_joules_total', (app) => app],
  ['app_requests_total', (app, spans) => app && spans],
  ['app_joules_per_request', (app, spans) => app && spans],
];

function isRegistryLike(r: unknown): boolean {
  const o = r as Partial<Record<'registerMetric' | 'getSingleMetric' | 'metrics', unknown>> | null;
  return typeof o === 'object' && o !== null && typeof o.registerMetric === 'function' && typeof o.getSingleMetric === 'function' && typeof o.metrics === 'function';
}

// A Registry of another prom-client copy: the application's own, of another major version or not
// deduplicated with the one jouletrace resolves (its peer dependency).
function foreignRegistry(): JouletraceError {
  let ours = 'prom-client';
  try {
    const file = require.resolve('prom-client/package.json');
    ours = `prom-client ${(require(file) as { version: string }).version} in ${path.dirname(file)}`;
  } catch {
    // Named without its version and place: the message still says what to do.
  }
  return new JouletraceError(
    'ERR_JOULETRACE_PROM_CLIENT',
    `options.registry is a Registry of another copy of prom-client than the one jouletrace uses (${ours}); jouletrace's metrics can be registered only in a Registry of that copy. ` +
      `jouletrace needs prom-client ${PROM_CLIENT_RANGE}, one copy for the whole application: install it at the top level (npm install prom-client@${PROM_CLIENT_RANGE}) and run npm dedupe; npm ls prom-client lists the copies.`,
  );
}

/**
 * Registers jouletrace's metrics for `sampler` in a prom-client registry.
 *
 * ```ts
 * const sampler = new Sampler({ ringCapacity: 0 }).start(); // exported only: no ring of samples
 * const { registry } = registerMetrics(sampler, { requests: tracker });
 * http.createServer(async (req, res) => {
 *   // Prometheus 3 refuses a scrape without a Content-Type.
 *   res.setHeader('content-type', registry.contentType);
 *   res.end(await registry.metrics());
 * }).listen(9464);
 * ```
 */
export function registerMetrics(sampler: Sampler, options: PrometheusOptions = {}): PrometheusMetrics {
  const opts = checkObject('options', options);
  for (const k of Object.keys(opts)) {
    if (!OPTION_KEYS.includes(k)) throw new TypeError(`Unknown option options.${k}; known options: ${OPTION_KEYS.join(', ')}`);
  }
  checkSampler('sampler', sampler, ['onSpan']); // settled spans feed the histograms
  if (opts.registry !== undefined && !(opts.registry instanceof Registry)) {
    if (isRegistryLike(opts.registry)) throw foreignRegistry();
    throw invalidType('options.registry', "a prom-client Registry (from the same prom-client as jouletrace's)", opts.registry);
  }
  const registry = (opts.registry as Registry | undefined) ?? new Registry();
  const prefix = opts.prefix === undefined ? 'jouletrace_' : checkString('options.prefix', opts.prefix);
  if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(prefix)) throw new RangeError(`options.prefix: ${JSON.stringify(prefix)} is not a valid metric name prefix`);
  const constLabels: Record<string, string> = {};
  if (opts.labels !== undefined) {
    for (const [k, v] of Object.entries(checkObject('options.labels', opts.labels))) {
      if (!/^[a-zA-Z_][a-zA-Z0-9_]*$/.test(k) || k.startsWith('__')) throw new RangeError(`options.labels: ${JSON.stringify(k)} is not a valid label name`);
      if (RESERVED_LABELS.includes(k)) {
        throw new RangeError(`options.labels: ${JSON.stringify(k)} is a label jouletrace's metrics set themselves; use another name (reserved: ${RESERVED_LABELS.join(', ')})`);
      }
      constLabels[k] = checkString(`options.labels.${k}`, v);
    }
  }
  const topThreads = opts.topThreads === undefined ? 10 : checkIntegerInRange('options.topThreads', opts.topThreads, 0, 1000);
  const spanLabels = new SpanLabels(checkMaxSpanLabels('options.maxSpanLabels', opts.maxSpanLabels));
  const windowMs =
    opts.joulesPerRequestWindowMs === undefined
      ? 300_000
      : checkIntegerInRange('options.joulesPerRequestWindowMs', opts.joulesPerRequestWindowMs, 1000, 86_400_000);
  const appMetrics = opts.appMetrics === undefined ? true : checkBoolean('options.appMetrics', opts.appMetrics);
  const spanMetrics = opts.spanMetrics === undefined ? true : checkBoolean('options.spanMetrics', opts.spanMetrics);
  const requests = checkRequestSource<RequestSource>('options.requests', opts.requests, sampler);
  if (requests && !spanMetrics) throw new TypeError('options.requests needs spanMetrics: the request metrics it feeds (http_server_request_energy_joules, app_requests_total, app_joules_per_request) are left out with options.spanMetrics false');
  const checkBuckets = (name: string, b: unknown, dflt: readonly number[]): number[] => {
    if (b === undefined) return [...dflt];
    // Finite: the +Inf bucket is always there, and a second one is a duplicate series.
    if (!Array.isArray(b) || b.length === 0 || b.some((x, i) => typeof x !== 'number' || !(x > 0) || !Number.isFinite(x) || (i > 0 && x <= b[i - 1]))) {
      throw invalidType(name, 'an increasing array of positive finite numbers (the +Inf bucket is always added)', b);
    }
    return [...b];
  };
  const spanBuckets = checkBuckets('options.spanBuckets', opts.spanBuckets, SPAN_BUCKETS);
  const requestBuckets = checkBuckets('options.requestBuckets', opts.requestBuckets, REQUEST_BUCKETS);
  const givenCarbon = opts.carbon === undefined ? undefined : carbonIntensity(opts.carbon as CarbonIntensityOptions, 'options.carbon');
  for (const [fixed, registered] of FIXED_NAMES) {
    if (!registered(appMetrics, spanMetrics) || !fixed.startsWith(prefix) || !PREFIXED_NAMES.includes(fixed.slice(prefix.length))) continue;
    throw Object.assign(
      new RangeError(
        `options.prefix: ${JSON.stringify(prefix)} names jouletrace's ${fixed.slice(prefix.length)} metric ${fixed}, the name another of its metrics keeps whatever the prefix; use another prefix${fixed.startsWith('app_') ? ', or appMetrics: false' : ''}`,
      ),
      { code: 'ERR_INVALID_ARG_VALUE' },
    );
  }

  const closedHere = closedRegistrations.get(registry)?.get(prefix)?.get(sampler);
  // The app_* series have their names whatever the prefix: going on with them from a closed
  // registration is right only where no registration with app metrics came since, under any prefix.
  const carried = appMetrics && closedHere?.app !== undefined && closedHere.app !== lastAppRegistration.get(registry) ? undefined : closedHere;
  // What this registration's counts feed the app_* series for: its own, or what it goes on from.
  const app = appMetrics ? {} : carried?.app;
  const energy = new EnergyTracker(sampler, carried?.energy);
  const estimatedSource = energy.estimated;
  const constNames = Object.keys(constLabels);
  const labels = (l: Record<string, string | number>, estimated = estimatedSource): Record<string, string | number> =>
    estimated ? { ...constLabels, ...l, estimated: 'true' } : { ...constLabels, ...l };
  const names = (...l: string[]) => [...constNames, ...l, 'estimated'];

  // One reading per scrape: the first collect() reads, the others in the same scrape reuse it.
  let cached: { at: number; reading: EnergyReading } | null = null;
  const read = (): EnergyReading => {
    const now = performance.now();
    if (!cached || now - cached.at > 50) cached = { at: now, reading: energy.read() };
    return cached.reading;
  };
  // A reading from before a run's end would show its power (absent while stopped) and totals
  // short of its final read.
  const forgetReading = sampler.onRunEnd(() => {
    cached = null;
  });
  const health = new EnergyHealth(sampler, carried?.health);
  // Refused, or a metric that could not be built: nothing registered, and nothing reads at the
  // sampler's run ends either.
  const release = () => {
    energy.close();
    forgetReading();
    health.close();
  };

  // Built in a registry of their own, then added to the caller's only if no name is taken there:
  // a conflict (registerMetrics twice on one registry) then leaves nothing half-registered.
  const building = opts.registry === undefined ? registry : new Registry();
  const metricNames: string[] = [];
  const reg = <T extends object>(m: T): T => {
    metricNames.push((m as unknown as { name: string }).name);
    return m;
  };

  // The thread names with a series of their own.
  const named = carried?.named ?? new Set<string>();
  const window = new SlidingWindow(windowMs);
  const carbonAcc: CarbonAccumulation = carried?.carbon ?? { pending: new Map(), lastJoules: new Map(), grams: new Map(), providerErrors: 0 };
  // Given the provider options of the registration it goes on from, its CarbonIntensity: a new
  // one counted the provider's errors from 0 again (a counter going down), warned again, and went
  // back to the fallback (or to no figure) until the provider answered.
  const builtFrom = givenCarbon?.source === 'provider' && givenCarbon !== opts.carbon ? providerOptions(opts.carbon as CarbonIntensityOptions) : undefined;
  const carbon =
    builtFrom && carbonAcc.built && sameProviderOptions(builtFrom, carbonAcc.built.options) ? carbonAcc.built.intensity : givenCarbon;
  // Another provider (or a CarbonIntensity given) counts from where the closed one's count was.
  const providerErrorsFrom = carbon ? Math.max(0, carbonAcc.providerErrors - carbon.errors) : 0;
  let spanHist: FastHistogram;
  let requestHist: FastHistogram;
  let incompleteSpans: Counter;
  let incompleteRequests: Counter;
  let appRequests: Counter | undefined;
  try {
    reg(
      new Counter({
        name: `${prefix}energy_joules_total`,
        help: "Energy measured per RAPL domain and package over the sampler's runs seen by this exporter (and the closed one in this registry it goes on from), the one in progress at the first registration from its start (domains overlap: package includes core and uncore).",
        labelNames: names('domain', 'package', 'source'),
        // Under prom-client's AggregatorRegistry (Node cluster), every worker's sampler reads the
        // same machine's counters: summing them counted the machine once per worker. The max is
        // the reading of the worker whose sampler has run longest, the latest of a counter that
        // only goes up; 'first' would be the worker that answered first, and go down between
        // scrapes.
        aggregator: 'max',
        registers: [building],
        collect() {
          this.reset();
          for (const d of read().domains) {
            this.inc(labels({ domain: d.domain, package: String(d.package), source: sampler.source }, d.estimated), d.joules);
          }
        },
      }),
    );

    // Power: average over the time since the previous scrape (at least 0.5 s; the first figure,
    // once the run is 0.5 s old, averages since its start). A figure per scrape interval integrates exactly to
    // the energy counter, unlike an instantaneous reading.
    const power = new PowerWindow();
    reg(
      new Gauge({
        name: `${prefix}power_watts`,
        help: 'Average power per RAPL domain and package since the previous scrape (at least 0.5 s; none before the run is 0.5 s old); no series for a domain whose energy did not move while reads of the source failed.',
        labelNames: names('domain', 'package'),
        aggregator: 'max', // the machine's power, as each worker saw it (see energy_joules_total)
        registers: [building],
        collect() {
          const r = read();
          const powerLast = power.update(r);
          this.reset();
          for (const d of r.domains) {
            const w = powerLast.get(d.key);
            if (w !== undefined) this.set(labels({ domain: d.domain, package: String(d.package) }, d.estimated), w);
          }
        },
      }),
    );

    if (energy.attributed) {
      reg(
        new Counter({
          name: `${prefix}process_energy_joules_total`,
          help: 'Measured energy (primary domains: package, else psys) split into this process, the idle baseline and other processes; the parts sum to the total.',
          labelNames: names('part'),
          registers: [building],
          collect() {
            this.reset();
            const p = read().parts;
            if (!p) return;
            for (const part of ['process', 'baseline', 'other'] as const) this.inc(labels({ part }), p[part]);
          },
        }),
      );
      energy.readThreadsAtRunEnds(topThreads, named);
      reg(
        new Counter({
          name: `${prefix}thread_energy_joules_total`,
          help: `Energy attributed to this process's threads by thread name: the first ${topThreads} names by energy keep their own series, the rest are "other".`,
          labelNames: names('thread'),
          registers: [building],
          collect() {
            this.reset();
            for (const [thread, j] of energy.readThreads(topThreads, named)) this.inc(labels({ thread }), j);
          },
        }),
      );
      // As serve's jouletrace_process_dropped_threads_total{pid,command}: without it, threads
      // left untracked moved their energy from part="process" to part="other" without a sign.
      reg(
        new Counter({
          name: `${prefix}process_dropped_threads_total`,
          help: `Threads the sampler left untracked because every thread slot (maxThreads) was in use, over its life; their energy went to ${prefix}process_energy_joules_total{part="other"}, not part="process".`,
          labelNames: constNames,
          registers: [building],
          collect() {
            this.reset();
            this.inc({ ...constLabels }, health.read().droppedThreads);
          },
        }),
      );
    }

    // Left out with spanMetrics false: built all the same, in no registry, so that observeSpans()
    // and observeRequests() stay as they are.
    const spanRegisters = spanMetrics ? [building] : [];
    const spanReg = <T extends object>(m: T): T => (spanMetrics ? reg(m) : m);
    spanHist = spanReg(
      new FastHistogram({
        name: `${prefix}span_energy_joules`,
        help: 'Energy of settled jouletrace spans, by label.',
        labelNames: names('label'),
        buckets: spanBuckets,
        registers: spanRegisters,
      }),
    );
    requestHist = spanReg(
      new FastHistogram({
        name: 'http_server_request_energy_joules',
        help: 'Energy charged to each HTTP request (jouletrace), by method, route pattern and status code.',
        labelNames: names('method', 'route', 'status_code'),
        buckets: requestBuckets,
        registers: spanRegisters,
      }),
    );

    // Incomplete spans and requests go into the histograms where they carry a figure, unmarked (a
    // label would double their series); these say how many there were, NaN joules included. With
    // the source's `estimated`, as app_requests_total: the share of incomplete requests is one
    // division of two series with the same labels.
    incompleteSpans = spanReg(
      new Counter({
        name: `${prefix}incomplete_spans_total`,
        help: `Settled spans flagged incomplete (part of their interval unmeasured): those with a figure are in ${prefix}span_energy_joules as well, those with NaN joules only here.`,
        labelNames: names(),
        registers: spanRegisters,
      }),
    );
    incompleteRequests = spanReg(
      new Counter({
        name: `${prefix}incomplete_requests_total`,
        help: 'Finished requests flagged incomplete (part of their lifetime unmeasured): those with a figure are in http_server_request_energy_joules as well, those with NaN joules only here.',
        labelNames: names(),
        registers: spanRegisters,
      }),
    );
    incompleteSpans.inc(labels({}), 0);
    incompleteRequests.inc(labels({}), 0);

    // Sampler health: counts the native sampler keeps, each read whole at a scrape.
    const healthCounters: Array<[string, string, keyof HealthCounts]> = [
      [`${prefix}samples_total`, 'Energy samples taken by the sampler thread.', 'samples'],
      [`${prefix}samples_dropped_total`, 'Samples a full ring could not keep: refused (drop-newest) or overwritten before they were read (overwrite-oldest); detail lost, totals stay exact. A ring nothing reads counts every sample here once full.', 'dropped'],
      [`${prefix}sampler_missed_deadlines_total`, 'Sampling periods the sampler thread woke up too late for.', 'missed'],
      [`${prefix}sampler_read_errors_total`, `Reads of the energy source that failed (the domains kept their last values; ${prefix}power_watts has no series for a window in which they did not move).`, 'readErrors'],
      [`${prefix}sampler_energy_restarts_total`, `Of ${prefix}sampler_read_errors_total, the reads in which an energy counter started again (a driver reloaded, a resume): the energy from its last good read to the restart is lost, where other read errors only delay it.`, 'counterRestarts'],
    ];
    for (const [name, help, key] of healthCounters) {
      reg(
        new Counter({
          name,
          help,
          labelNames: constNames,
          registers: [building],
          collect() {
            this.reset();
            this.inc({ ...constLabels }, health.read()[key]);
          },
        }),
      );
    }
    reg(
      new Counter({
        name: `${prefix}sampler_domain_read_errors_total`,
        help: `Of ${prefix}sampler_read_errors_total, the reads that failed for each RAPL domain and package (a read that failed for two counts for both): a dram zone that fails leaves the package measured.`,
        labelNames: [...constNames, 'domain', 'package'],
        registers: [building],
        collect() {
          this.reset();
          const errors = health.read().readErrorsByDomain;
          sampler.domains.forEach((d, i) => this.inc({ ...constLabels, domain: d.domain, package: String(d.package) }, errors[i]));
        },
      }),
    );
    reg(
      new Gauge({
        name: `${prefix}sampler_jitter_seconds`,
        help: 'Wake-up lateness of the sampler thread since its start(), by statistic: p50, p99, p999, max.',
        // Not "quantile": Prometheus keeps that label for summaries (promtool check metrics refuses
        // it on a gauge), and these quantiles come computed, as a summary's would not.
        labelNames: [...constNames, 'stat'],
        aggregator: 'max', // the worst of the workers' samplers
        registers: [building],
        collect() {
          this.reset();
          const j = health.read().jitterUs;
          if (!j) return;
          const q: Array<[string, number]> = [['p50', j.p50], ['p99', j.p99], ['p999', j.p999], ['max', j.max]];
          for (const [stat, us] of q) this.set({ ...constLabels, stat }, us / 1e6);
        },
      }),
    );
    reg(
      new Gauge({
        name: `${prefix}sampler_counters_still_seconds`,
        help: `How long no energy counter of the source has changed, to its last sample: about 0.001 on real RAPL; seconds mean energy the source is not counting (it reads as 0 J), or reads of it that fail (${prefix}sampler_read_errors_total).`,
        labelNames: constNames,
        aggregator: 'max', // the same counters, seen by each worker: the longest still
        registers: [building],
        collect() {
          this.reset();
          const still = health.read().stillUs;
          // Unknown (no sample in this run, or the sampler closed) is no series: reset() gives a
          // gauge without labels a 0, which reads as counters moving fine.
          if (still === null) this.remove({ ...constLabels });
          else this.set({ ...constLabels }, still / 1e6);
        },
      }),
    );
    reg(
      new Gauge({
        name: `${prefix}sampler_info`,
        help: 'The sampler: energy source, thread-tracking backend and sampling period; value 1.',
        labelNames: names('source', 'threads', 'interval_seconds'),
        aggregator: 'first', // 1, not the number of workers
        registers: [building],
        collect() {
          this.reset();
          const s = health.read();
          this.set(labels({ source: sampler.source, threads: s.threads, interval_seconds: String(s.intervalUs / 1e6) }), 1);
        },
      }),
    );

    // The source article's metrics, made right.
    if (appMetrics) {
      reg(
        new Counter({
          name: 'app_energy_joules_total',
          help: energy.attributed
            ? "Energy attributed to this process (its threads' share of the primary domains), in joules."
            : 'Energy of the primary domains for the whole machine (thread tracking is off), in joules.',
          labelNames: names(),
          registers: [building],
          collect() {
            this.reset();
            const r = read();
            this.inc(labels({}), r.parts ? r.parts.process : r.machine);
          },
        }),
      );
      // Same label set as app_energy_joules_total (estimated included), so that
      // rate(app_energy_joules_total[5m]) / rate(app_requests_total[5m]) matches series one to one.
      // The two request series go with the span metrics: without them no request reaches them.
      appRequests = spanReg(
        new Counter({
          name: 'app_requests_total',
          help: 'Requests finished (as seen by the jouletrace request tracker).',
          labelNames: names(),
          registers: spanRegisters,
        }),
      );
      appRequests.inc(labels({}), 0);
      spanReg(
        new Gauge({
          name: 'app_joules_per_request',
          help: `Mean energy per request over the last ${windowMs / 1000} s, in whole seconds: ${windowMs / 1000} to ${windowMs / 1000 + 1} s (request energy / requests measured, those with NaN joules left out; NaN with no request in the window).`,
          labelNames: names(),
          // A mean per worker: neither their sum nor their average (a mean of means, weighing a
          // worker of 1 request as one of 1000, NaN where any had none) is the cluster's.
          // Aggregated, it is left out; the ratio of rates is the figure (docs/observability.md).
          aggregator: 'omit',
          registers: spanRegisters,
          collect() {
            const { sum, count } = window.totals();
            this.reset();
            this.set(labels({}), count > 0 ? sum / count : NaN);
          },
        }),
      );
    }

    if (carbon) {
      const { pending, lastJoules, grams } = carbonAcc;
      reg(
        new Counter({
          name: `${prefix}carbon_grams_total`,
          help: 'Emissions of the energy measured, in grams CO2e at the grid intensity in use: a yearly average with a country (scope: process = attributed to this process, machine = primary domains).',
          labelNames: names('scope'),
          registers: [building],
          async collect() {
            const r = read();
            const intensity = await carbon.within(SCRAPE_WAIT_MS);
            const scopes: Array<[string, number]> = [['machine', r.machine]];
            if (r.parts) scopes.push(['process', r.parts.process]);
            for (const [scope, joules] of scopes) {
              const delta = joules - (lastJoules.get(scope) ?? 0);
              lastJoules.set(scope, joules);
              pending.set(scope, (pending.get(scope) ?? 0) + delta);
              // Energy spent before any intensity is known waits until one is.
              if (intensity !== null) {
                const total = (grams.get(scope) ?? 0) + joulesToGrams(pending.get(scope)!, intensity);
                // prom-client's inc() throws for a figure that is not finite, at this scrape and
                // every one after: the whole registry's, the application's own metrics included.
                if (Number.isFinite(total)) grams.set(scope, total);
                pending.set(scope, 0);
              }
            }
            this.reset();
            for (const [scope, g] of grams) this.inc(labels({ scope }), g);
          },
        }),
      );
      reg(
        new Gauge({
          name: `${prefix}grid_intensity_grams_per_kwh`,
          help: `Grid carbon intensity used for ${prefix}carbon_grams_total, gCO2e/kWh, by where it came from: country:CODE, fixed, provider, provider:stale (a refresh failed) or fallback (the provider has never answered).`,
          labelNames: [...constNames, 'intensity_source'],
          aggregator: 'max', // one grid, whichever workers report it
          registers: [building],
          async collect() {
            await carbon.within(SCRAPE_WAIT_MS);
            // Read together, after the wait: a provider call ending during it changes both.
            const v = carbon.current();
            const from = carbon.currentSource();
            this.reset();
            if (v !== null && from !== null) this.set({ ...constLabels, intensity_source: from }, v);
          },
        }),
      );
      if (carbon.source === 'provider') {
        reg(
          new Counter({
            name: `${prefix}carbon_provider_errors_total`,
            help: `Failed calls of the carbon intensity provider (it threw or rejected, answered no number of 0 to ${MAX_GRAMS_PER_KWH} gCO2e/kWh, or not within 10 s); meanwhile ${prefix}grid_intensity_grams_per_kwh says provider:stale or fallback, or has no series.`,
            labelNames: constNames,
            registers: [building],
            collect() {
              carbonAcc.providerErrors = providerErrorsFrom + carbon.errors;
              this.reset();
              this.inc({ ...constLabels }, carbonAcc.providerErrors);
            },
          }),
        );
      }
    }
  } catch (err) {
    release();
    throw err;
  }

  // Every settled span and request is observed: their histograms' series are looked up by the
  // record's own strings and numbers (Map keys whose hashes V8 keeps), not by a label object
  // built and hashed per observation (prometheus-histogram.ts).
  const spanSeries = spanHist.cache<string, HistogramSeries[]>(); // label → [plain, estimated]
  const observeSpans = (spans: readonly SpanResult[]): void => {
    let incomplete = 0;
    for (const s of spans) {
      if (s.incomplete) incomplete++;
      if (!(s.joules >= 0) || !Number.isFinite(s.joules)) continue;
      let label = s.label;
      let pair = spanSeries.get(label);
      if (pair === undefined) {
        // A label past maxSpanLabels shares the "(other)" entry, and is looked up anew each time
        // rather than kept: the cache stays as small as the series are.
        label = spanLabels.of(s.label);
        pair = spanSeries.get(label);
        if (pair === undefined) spanSeries.set(label, (pair = []));
      }
      const i = s.estimated ? 1 : 0;
      (pair[i] ??= spanHist.series(labels({ label }, s.estimated))).observe(s.joules);
    }
    if (incomplete > 0) incompleteSpans.inc(labels({}), incomplete);
  };
  // method → route → status code → [plain, estimated]
  const requestSeries = requestHist.cache<string, Map<string, Map<number, HistogramSeries[]>>>();
  const requestSeriesOf = (r: RequestRecord): HistogramSeries => {
    let byRoute = requestSeries.get(r.method);
    if (byRoute === undefined) requestSeries.set(r.method, (byRoute = new Map()));
    let byStatus = byRoute.get(r.route);
    if (byStatus === undefined) byRoute.set(r.route, (byStatus = new Map()));
    let pair = byStatus.get(r.statusCode);
    if (pair === undefined) byStatus.set(r.statusCode, (pair = []));
    const i = r.estimated ? 1 : 0;
    return (pair[i] ??= requestHist.series(labels({ method: r.method, route: r.route, status_code: String(r.statusCode) }, r.estimated)));
  };
  const observeRequests = (records: readonly RequestRecord[]): void => {
    let sum = 0;
    let count = 0;
    let incomplete = 0;
    for (const r of records) {
      if (r.incomplete) incomplete++;
      if (!(r.joules >= 0) || !Number.isFinite(r.joules)) continue;
      requestSeriesOf(r).observe(r.joules);
      sum += r.joules;
      count++;
    }
    // Every request finished counts, measured or not: those left unmeasured under overload
    // (NaN joules) used energy all the same, in app_energy_joules_total.
    if (records.length > 0) appRequests?.inc(labels({}), records.length);
    if (count > 0) window.add(sum, count);
    if (incomplete > 0) incompleteRequests.inc(labels({}), incomplete);
  };

  // The instances themselves (typed as plain objects by prom-client's declarations).
  const built = building === registry ? [] : (building.getMetricsAsArray() as unknown as Array<Metric & { name: string }>);
  const taken = built.map((m) => m.name).filter((name) => registry.getSingleMetric(name) !== undefined);
  if (taken.length > 0) {
    release();
    throw new JouletraceError(
      'ERR_JOULETRACE_METRIC_EXISTS',
      `registerMetrics(): ${taken.join(', ')} already registered in options.registry; close() the earlier registration, or use another registry (http_server_request_energy_joules and the app_* metrics keep their names whatever the prefix)`,
    );
  }
  // Before the metrics go into options.registry: a closed sampler refuses it, and they stayed
  // there (zeros, and a retry on that registry refused as a conflict).
  let unsubscribe: () => void;
  try {
    if (spanMetrics) unsubscribe = subscribe(sampler, requests, observeSpans, observeRequests);
    else {
      sampler.stats(); // nothing to listen for; a closed sampler throws all the same
      unsubscribe = () => {};
    }
  } catch (err) {
    release();
    throw err;
  }
  for (const m of built) registry.registerMetric(m);
  closedRegistrations.get(registry)?.delete(prefix);
  if (appMetrics && app) lastAppRegistration.set(registry, app);
  let closed = false;
  return {
    registry,
    observeSpans,
    observeRequests,
    close() {
      if (closed) return;
      closed = true;
      unsubscribe();
      release();
      cached = null;
      for (const name of metricNames) registry.removeSingleMetric(name);
      carbonAcc.built = builtFrom && carbon ? { intensity: carbon, options: builtFrom } : undefined;
      let byPrefix = closedRegistrations.get(registry);
      if (!byPrefix) closedRegistrations.set(registry, (byPrefix = new Map()));
      byPrefix.set(prefix, new WeakMap([[sampler, { energy, health, named, carbon: carbonAcc, app }]]));
    },
  };
}

/**
 * What the last registration closed in a registry with a prefix had counted (by registry, prefix,
 * then its sampler, the one entry): a new registration of that sampler there goes on from it, so
 * that its counters (same names, same series) never go down and count nothing twice. Only the
 * last: after another sampler's registration, the series show that one's figures, and going on
 * from the earlier one's showed a reset and then a jump, counting its energy again; a new
 * registration then starts as a first one does. The app_* metrics have the same names whatever
 * the prefix: for them the last is the registry's (lastAppRegistration), and counts that fed an
 * earlier registration's are not gone on from by one with app metrics. Weak: a registry or
 * sampler dropped takes it.
 */
const closedRegistrations = new WeakMap<Registry, Map<string, WeakMap<Sampler, CarriedCounts>>>();

/** The last registration in a registry with the app_* metrics (a token, CarriedCounts.app). */
const lastAppRegistration = new WeakMap<Registry, object>();

/** A registration's accumulations that outlive its close(), for the next one to go on from. */
interface CarriedCounts {
  energy: EnergyTracker;
  health: EnergyHealth;
  /** The thread names with a series of their own. */
  named: Set<string>;
  carbon: CarbonAccumulation;
  /**
   * The registration with app metrics whose app_* series these counts went on (this one, or one
   * it went on from); undefined for counts that never fed them.
   */
  app: object | undefined;
}

/** Per scope: joules waiting for an intensity, the cumulative joules last read, and grams so far. */
interface CarbonAccumulation {
  pending: Map<string, number>;
  lastJoules: Map<string, number>;
  grams: Map<string, number>;
  /** What carbon_provider_errors_total showed last. */
  providerErrors: number;
  /** The CarbonIntensity the registration built from provider options, and those options. */
  built?: { intensity: CarbonIntensity; options: ProviderOptions };
}

type ProviderOptions = Extract<CarbonIntensityOptions, { provider: unknown }>;

// A copy: the caller may change its object after registering.
function providerOptions(o: CarbonIntensityOptions): ProviderOptions {
  const { provider, ttlMs, fallbackGramsPerKwh } = o as ProviderOptions;
  return { provider, ttlMs, fallbackGramsPerKwh };
}

function sameProviderOptions(a: ProviderOptions, b: ProviderOptions): boolean {
  return a.provider === b.provider && a.ttlMs === b.ttlMs && a.fallbackGramsPerKwh === b.fallbackGramsPerKwh;
}
