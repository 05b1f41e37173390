// The exporters' subscription to settled spans and, where a request tracker is given, requests.
import type { Sampler } from './sampler';
import type { RequestRecord, SpanResult } from './span-types';

/** What the exporters need of a request tracker (src/requests.ts): a batch subscription. */
export interface RequestSource {
  onRequest?(cb: (records: RequestRecord[]) => void): () => void;
}

/** Subscribes to the sampler's settled spans and, when the tracker offers it, its requests. */
export function subscribe(
  sampler: Sampler,
  requests: RequestSource | undefined,
  onSpans: (spans: SpanResult[]) => void,
  onRequests: (records: RequestRecord[]) => void,
): () => void {
  const offs = [sampler.onSpan(onSpans)];
  if (requests && typeof requests.onRequest === 'function') offs.push(requests.onRequest(onRequests));
  return () => {
    for (const off of offs.splice(0)) off();
  };
}
