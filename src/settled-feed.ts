// The exporters' subscription to settled spans and requests, where the sampler and the request
// tracker offer one.
import type { Sampler } from './sampler';
import type { RequestRecord, SpanResult } from './span-types';

/** What the exporters need of a request tracker (src/requests.ts): a batch subscription. */
export interface RequestSource {
  onRequest?(cb: (records: RequestRecord[]) => void): () => void;
}

/** The optional hooks the exporters use on a Sampler (present once spans have landed). */
export interface SpanSource {
  onSpan?(cb: (spans: SpanResult[]) => void): () => void;
}

/** Subscribes to settled spans and requests when the sampler and tracker offer it. */
export function subscribe(
  sampler: Sampler,
  requests: RequestSource | undefined,
  onSpans: (spans: SpanResult[]) => void,
  onRequests: (records: RequestRecord[]) => void,
): () => void {
  const offs: Array<() => void> = [];
  const s = sampler as unknown as SpanSource;
  if (typeof s.onSpan === 'function') offs.push(s.onSpan(onSpans));
  if (requests && typeof requests.onRequest === 'function') offs.push(requests.onRequest(onRequests));
  return () => {
    for (const off of offs.splice(0)) off();
  };
}
