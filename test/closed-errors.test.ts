// What a closed sampler or span channel says to the call that finds it closed: the method the
// caller made, what is closed, and what to make anew.
import { afterEach, describe, expect, it } from 'vitest';
import { attachSpans, RequestTracker, Sampler } from '../src/index';

const samplers: Sampler[] = [];
afterEach(() => {
  for (const s of samplers.splice(0)) s.close();
});

function sampler(): Sampler {
  const s = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs' });
  samplers.push(s);
  return s;
}

describe('closed errors', () => {
  // A shared-mode start() reached the channel's begin() and said "begin(): the span channel is
  // closed", naming neither the call made nor the sampler, nor what to do.
  it("names the tracker's start() and a new Sampler when the tracker's sampler is closed, in both modes", () => {
    for (const mode of ['shared', 'exact'] as const) {
      const s = sampler().start();
      const tracker = new RequestTracker(s, { mode });
      s.close();
      expect(() => tracker.start('GET', '/x'), mode).toThrow(
        expect.objectContaining({ code: 'ERR_JOULETRACE_CLOSED', message: 'start(): the sampler is closed; create a new Sampler and RequestTracker' }),
      );
    }
  });

  // It said only "the request tracker is closed", where a closed sampler says what to make anew.
  it("names the tracker's start() and a new RequestTracker when the tracker itself is closed, in both modes", () => {
    for (const mode of ['shared', 'exact'] as const) {
      const tracker = new RequestTracker(sampler().start(), { mode });
      tracker.close();
      expect(() => tracker.start('GET', '/x'), mode).toThrow(
        expect.objectContaining({ code: 'ERR_JOULETRACE_CLOSED', message: 'start(): the request tracker is closed; create a new RequestTracker' }),
      );
    }
  });

  it('names the channel and attachSpans() when a channel closed by its close() is used', async () => {
    const s = sampler().start();
    const spans = attachSpans(s.spanContext());
    const open = spans.begin('open');
    spans.close();
    expect(() => spans.begin('after')).toThrow(
      expect.objectContaining({
        code: 'ERR_JOULETRACE_CLOSED',
        message: 'begin(): this span channel is closed; attach a new one: attachSpans(sampler.spanContext())',
      }),
    );
    await expect(spans.settle(open)).rejects.toThrow(
      expect.objectContaining({
        code: 'ERR_JOULETRACE_CLOSED',
        message: 'settle(): this span channel was closed before the span settled; settle spans (or listen with onSpan) before its close()',
      }),
    );
  });
});
