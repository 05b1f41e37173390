// Bounded-memory summaries behind spanStats() and routes(): quantiles exact (nearest rank) over
// the most recent values, while the window grows, once it is full, and once it has wrapped.
import { describe, expect, it } from 'vitest';
import { JoulesSummary, RecentValues } from '../src/summaries';

describe('RecentValues', () => {
  it('gives exact quantiles over the last `capacity` values, before and after its window fills', () => {
    const r = new RecentValues(100);
    expect(r.quantiles(0.5)).toEqual([0]);
    for (const v of [3, 1, 2]) r.add(v);
    expect(r.quantiles(0, 0.5, 0.99)).toEqual([1, 2, 3]);
    for (let v = 4; v <= 100; v++) r.add(v); // grown through 16, 32, 64 to 100
    // Nearest rank: the median of 1..100 is the 50th value, p99 the 99th (not the maximum).
    expect(r.quantiles(0, 0.5, 0.99, 1)).toEqual([1, 50, 99, 100]);
    for (let v = 101; v <= 250; v++) r.add(v); // wrapped: only 151..250 remain
    expect(r.quantiles(0, 0.5, 0.99)).toEqual([151, 200, 249]);
    const two = new RecentValues(16);
    two.add(2);
    two.add(1);
    expect(two.quantiles(0.5, 0.99)).toEqual([1, 2]);
  });

  it('keeps a window whose capacity is not a power of two exact too (grown 16, then 20)', () => {
    const r = new RecentValues(20);
    for (let v = 1; v <= 45; v++) r.add(v);
    expect(r.quantiles(0, 1)).toEqual([26, 45]);
  });
});

describe('JoulesSummary', () => {
  it('sums all values, keeps the max and whether any was estimated, quantiles over the recent ones', () => {
    const s = new JoulesSummary(4);
    s.add(1, false);
    s.add(10, true);
    for (const v of [2, 3, 4, 5]) s.add(v, false);
    expect(s.count).toBe(6);
    expect(s.estimated).toBe(true);
    expect(s.summary()).toEqual({ sum: 25, mean: 25 / 6, p50: 3, p99: 5, max: 10 });
  });

  it('addFrom() reads the value out of an array, as add() takes it', () => {
    const values = Float64Array.of(1, 10, 2, 3, 4, 5);
    const s = new JoulesSummary(4);
    for (let i = 0; i < values.length; i++) s.addFrom(values, i, i === 1);
    expect([s.count, s.estimated]).toEqual([6, true]);
    expect(s.summary()).toEqual({ sum: 25, mean: 25 / 6, p50: 3, p99: 5, max: 10 });
    const r = new RecentValues(3);
    for (let i = 0; i < values.length; i++) r.addFrom(values, i);
    expect(r.quantiles(0, 1)).toEqual([3, 5]);
  });
});
