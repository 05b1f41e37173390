// Public shapes of settled spans and per-request records. The Sampler produces them (src/spans.ts,
// src/requests.ts); exporters (Prometheus, OpenTelemetry), the CLI and reports consume them.

/**
 * @internal Carried by exact-mode request tokens (RequestTracker.start()), so that a span call
 * handed one names the mistake. Symbol.for: a process may load both the ESM and the CJS build.
 */
/** A request's route where the framework matched none. */
export const UNMATCHED_ROUTE = '(unmatched)';
/** A request's route where node:http was given none (trackRequest without a route or routeOf). */
export const UNROUTED = '(unrouted)';
/** Where requests past maxRoutes count: their route, and their method where it has no entry yet. */
export const OTHER_ROUTE = '(other)';
/** Where the exporters count spans whose label came past their maxSpanLabels. */
export const OTHER_SPAN_LABEL = '(other)';

export const EXACT_REQUEST_TOKEN: unique symbol = Symbol.for('jouletrace.exactRequestToken');

/** A settled critical section: `sampler.settle(h)`, `sampler.onSpan(cb)`. */
export interface SpanResult {
  label: string;
  /** Kernel thread id of the thread that ran the span. */
  tid: number;
  /** CLOCK_MONOTONIC ns at begin() and end(). */
  startNs: number;
  endNs: number;
  /** On-CPU time charged to the span (its thread's on-CPU time within the span). */
  onCpuNs: number;
  /** The thread's attributed energy over the span (primary domains: package, else psys). */
  joules: number;
  /** joules minus the baseline's share; null when no baseline is known. */
  dynamicJoules: number | null;
  /** True when the source is an estimate (model). */
  estimated: boolean;
  /** True when the sampler stopped before the span ended, or its start fell out of history. */
  incomplete: boolean;
  /** Whatever the context-capture function returned at begin() (see setContextCapture). */
  context?: unknown;
}

/** Per-label aggregate: `sampler.spanStats()`. */
export interface SpanLabelStats {
  label: string;
  count: number;
  joules: { sum: number; mean: number; p50: number; p99: number; max: number };
  onCpuNs: { sum: number; mean: number };
  /** Energy rate while the label's spans ran: sum of joules / sum of wall seconds. */
  watts: number;
  estimated: boolean;
}

/** One HTTP request's energy: delivered by trackRequest(), the Express middleware, the Fastify plugin. */
export interface RequestRecord {
  method: string;
  /** The framework's route pattern ("/users/:id"), never the raw URL; "(unmatched)" when none. */
  route: string;
  statusCode: number;
  startNs: number;
  endNs: number;
  durationNs: number;
  /** Energy charged to the request (see README: fair share among requests in flight, or exact mode). */
  joules: number;
  dynamicJoules: number | null;
  onCpuNs: number;
  estimated: boolean;
  /** 'shared' (fair share of the main thread and libuv pool among in-flight requests) or 'exact'. */
  mode: 'shared' | 'exact';
  /**
   * True when part of the request could not be measured: the sampler stopped while it was in
   * flight, or (on an overloaded machine) its start was seen only after the intervals it
   * overlaps had been settled. Its joules then undercount.
   */
  incomplete: boolean;
  /**
   * True when its accounting ended before its response did: endRequestAccounting(), or the
   * first write() of a `text/event-stream` response. Its end, duration and energy stop there.
   */
  endedEarly: boolean;
  /** Whatever the context-capture function returned when the request began (see setContextCapture). */
  context?: unknown;
}

/**
 * Per-route aggregate of the measured requests (those with joules: see README, routes()). A
 * shared-mode request still open when the sampler stops counts from the stop, its energy and
 * duration measured up to it; an exact-mode one at its end, its duration up to that end.
 */
export interface RouteStats {
  method: string;
  route: string;
  count: number;
  joules: { sum: number; mean: number; p50: number; p99: number; max: number };
  durationMs: { mean: number; p99: number };
  estimated: boolean;
  /** Of count, the requests measured in part (RequestRecord.incomplete): their joules undercount. */
  incomplete: number;
}
