// The exporters' subscription to settled spans and, where a request tracker is given, requests.
import { checkIntegerInRange, checkMethods } from './errors';
import type { Sampler } from './sampler';
import { OTHER_SPAN_LABEL, type RequestRecord, type SpanResult } from './span-types';

/** What the exporters need of a request tracker (src/requests.ts): a batch subscription. */
export interface RequestSource {
  onRequest(cb: (records: RequestRecord[]) => void): () => void;
}

/**
 * The exporters' `requests` option. The middleware energyMiddleware() returns is a function, not
 * its tracker: given as is, it would feed no request metric without a word.
 */
export function checkRequestSource<T extends RequestSource>(option: string, value: unknown, sampler: Sampler): T | undefined {
  if (value === undefined) return undefined;
  const source = checkMethods<T>(option, value, 'a RequestTracker', ['onRequest'], "pass the tracker itself (energyMiddleware()'s is middleware.tracker)");
  // A tracker of another sampler: its requests' energy is that sampler's, and the app_* ratio
  // would divide this sampler's energy by them. One of the application's own, with no `sampler`,
  // is taken at its word.
  const of = (source as { sampler?: unknown }).sampler;
  if (of !== undefined && of !== sampler) {
    throw new TypeError(
      `${option} is a RequestTracker of another Sampler than the one given: its requests are measured by that sampler, not this one; pass a tracker made with new RequestTracker(sampler) of the sampler you register, or register the tracker's own (${option}.sampler)`,
    );
  }
  return source;
}

/** How many span labels the exporters give series of their own unless told (maxSpanLabels). */
export const DEFAULT_MAX_SPAN_LABELS = 200;

/** The maxSpanLabels option, checked. */
export function checkMaxSpanLabels(option: string, value: unknown): number {
  return value === undefined ? DEFAULT_MAX_SPAN_LABELS : checkIntegerInRange(option, value, 1, 1_000_000);
}

/**
 * The span labels an exporter gives series of their own: the first `max` it sees keep theirs for
 * good, later ones count under OTHER_SPAN_LABEL, as routes past a tracker's maxRoutes do. Each
 * label is a histogram's worth of series, and one built from data (an id, a path) had no bound:
 * 20,000 labels made a 42.5 MB exposition that took ~4 s to build at every scrape.
 */
export class SpanLabels {
  readonly #kept = new Set<string>();
  constructor(readonly max: number) {}

  /** The label `label`'s spans count under. */
  of(label: string): string {
    if (this.#kept.has(label)) return label;
    if (this.#kept.size >= this.max) return OTHER_SPAN_LABEL;
    this.#kept.add(label);
    return label;
  }
}

/**
 * Subscribes to the sampler's settled spans and the tracker's requests; all or nothing (the
 * sampler refuses a subscription once closed).
 */
export function subscribe(
  sampler: Sampler,
  requests: RequestSource | undefined,
  onSpans: (spans: SpanResult[]) => void,
  onRequests: (records: RequestRecord[]) => void,
): () => void {
  const offs = [sampler.onSpan(onSpans)];
  if (requests) {
    try {
      offs.push(requests.onRequest(onRequests));
    } catch (err) {
      offs[0]();
      throw err;
    }
  }
  return () => {
    for (const off of offs.splice(0)) off();
  };
}
