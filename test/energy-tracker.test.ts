// The accumulation behind the exporters' counters: cumulative readings that restart at every
// sampler start() become totals that never go down.
import { describe, expect, it } from 'vitest';
import { Monotonic } from '../src/energy-tracker';

describe('Monotonic', () => {
  it('adds each increase within a run and starts afresh from zero at a new run id', () => {
    const m = new Monotonic();
    m.beginRun(1n);
    expect(m.update('pkg', 2)).toBe(2);
    expect(m.update('pkg', 5)).toBe(3);
    m.beginRun(1n); // the same run: nothing forgotten
    expect(m.update('pkg', 6)).toBe(1);
    m.beginRun(2n); // restarted: its readings count from zero again
    expect(m.update('pkg', 4)).toBe(4);
    expect(m.total('pkg')).toBe(10);
  });

  it('counts a reading below the last one as a restart the run id missed', () => {
    const m = new Monotonic();
    m.beginRun(1n);
    m.update('pkg', 8);
    expect(m.update('pkg', 3)).toBe(3);
    expect(m.total('pkg')).toBe(11);
  });

  it('knows a key read at zero (so that exporters show it) and an unknown key as 0', () => {
    const m = new Monotonic();
    m.beginRun(1n);
    m.update('idle', 0);
    expect(m.total('idle')).toBe(0);
    expect(m.total('never')).toBe(0);
  });

  it('forgets the last readings of keys it is not told to keep, and keeps their totals', () => {
    const m = new Monotonic();
    m.beginRun(1n);
    m.update('t1', 5);
    m.update('t2', 7);
    m.retain(new Set(['t2']));
    // t1 came back (a reused tid): its reading is counted whole, not against 5.
    expect(m.update('t1', 2)).toBe(2);
    expect(m.update('t2', 9)).toBe(2);
    expect(m.total('t1')).toBe(7);
    expect(m.total('t2')).toBe(9);
  });

  it('without totals, returns the increases and holds nothing per key beyond the last reading', () => {
    const m = new Monotonic(false);
    m.beginRun(1n);
    expect(m.update('t1', 5)).toBe(5);
    expect(m.update('t1', 8)).toBe(3);
    expect(m.total('t1')).toBe(0);
    m.beginRun(2n);
    expect(m.update('t1', 1)).toBe(1);
    expect(m.total('t1')).toBe(0);
  });
});
