// The exporters' subscription to settled spans and, where a request tracker is given, requests.
import { checkMethods } from './errors';
import type { Sampler } from './sampler';
import type { RequestRecord, SpanResult } from './span-types';

/** What the exporters need of a request tracker (src/requests.ts): a batch subscription. */
export interface RequestSource {
  onRequest(cb: (records: RequestRecord[]) => void): () => void;
}

/**
 * The exporters' `requests` option. The middleware energyMiddleware() returns is a function, not
 * its tracker: given as is, it would feed no request metric without a word.
 */
export function checkRequestSource<T extends RequestSource>(option: string, value: unknown): T | undefined {
  if (value === undefined) return undefined;
  return checkMethods<T>(option, value, 'a RequestTracker', ['onRequest'], "pass the tracker itself (energyMiddleware()'s is middleware.tracker)");
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
