// The window behind the "recent joules per request" gauge: what it forgets, and by which clock.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SlidingWindow } from '../src/sliding-window';

afterEach(() => {
  vi.useRealTimers();
});

describe('SlidingWindow', () => {
  it('sums what was added within the window and forgets whole seconds past it', () => {
    const w = new SlidingWindow(10_000);
    w.add(5, 1, 1_000);
    w.add(7, 2, 1_500);
    w.add(1, 1, 6_000);
    expect(w.totals(6_000)).toEqual({ count: 4, sum: 13 });
    expect(w.totals(10_999)).toEqual({ count: 4, sum: 13 });
    expect(w.totals(11_000)).toEqual({ count: 1, sum: 1 });
    expect(w.totals(16_000)).toEqual({ count: 0, sum: 0 });
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
