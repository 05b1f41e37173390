// The window behind the "recent joules per request" gauge: what it forgets, and by which clock.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SlidingWindow } from '../src/sliding-window';

afterEach(() => {
  vi.useRealTimers();
});

describe('SlidingWindow', () => {
  // A second is forgotten once its end is older than the window: the window covers W to W + 1 s.
  // Forgotten once its start was, it covered W - 1 to W: a request 9.5 s old was out of a 10 s window.
  it('sums what was added within the window and forgets whole seconds once they end past it', () => {
    const w = new SlidingWindow(10_000);
    w.add(5, 1, 1_000);
    w.add(7, 2, 1_500);
    w.add(1, 1, 6_000);
    expect(w.totals(6_000)).toEqual({ count: 4, sum: 13 });
    expect(w.totals(11_000)).toEqual({ count: 4, sum: 13 });
    expect(w.totals(11_999)).toEqual({ count: 4, sum: 13 });
    expect(w.totals(12_000)).toEqual({ count: 1, sum: 1 });
    expect(w.totals(16_999)).toEqual({ count: 1, sum: 1 });
    expect(w.totals(17_000)).toEqual({ count: 0, sum: 0 });
  });

  // The smallest window the exporter takes (joulesPerRequestWindowMs: 1000) read NaN under steady
  // traffic whenever a scrape came just after a second began: it kept that second only.
  it('holds a full window of steady traffic at the smallest window, whenever the scrape comes', () => {
    const w = new SlidingWindow(1_000);
    let t = 0;
    for (const now of [4_999, 5_000.5, 5_050, 5_150, 5_550, 5_950]) {
      // One request every 100 ms, up to the scrape.
      for (; t <= now; t += 100) w.add(0.01, 1, t);
      expect(w.totals(now).count, `at ${now} ms`).toBeGreaterThanOrEqual(10);
      expect(w.totals(now).count, `at ${now} ms`).toBeLessThanOrEqual(20);
    }
  });

  it('forgets on time as measured, whatever the wall clock does', () => {
    vi.useFakeTimers({ toFake: ['Date', 'performance'] });
    const w = new SlidingWindow(10_000);
    w.add(100, 1);
    // The wall clock steps back an hour (NTP, an operator); 11 s pass.
    vi.setSystemTime(Date.now() - 3_600_000);
    vi.advanceTimersByTime(11_000);
    expect(w.totals()).toEqual({ count: 0, sum: 0 });
  });
});
