import { describe, expect, it } from 'vitest';
import { fmtJoules, fmtSeconds, fmtWatts } from '../src/units';

describe('figures with their units', () => {
  it('picks the unit on the figure as printed, never 1000 of the smaller one', () => {
    expect(fmtJoules(0)).toBe('0 J');
    expect(fmtJoules(5e-7)).toBe('0.5 µJ');
    expect(fmtJoules(0.0009999)).toBe('999.9 µJ');
    expect(fmtJoules(0.00099999)).toBe('1.00 mJ');
    expect(fmtJoules(0.9999996)).toBe('1.000 J');
    expect(fmtJoules(-0.25)).toBe('-250.00 mJ');
    expect(fmtJoules(9999.9996)).toBe('10.00 kJ');
    expect(fmtJoules(123456)).toBe('123.46 kJ');
    expect(fmtWatts(0.09996)).toBe('0.10 W');
    expect(fmtWatts(0.0999)).toBe('99.9 mW');
    expect(fmtWatts(-0.05)).toBe('-50.0 mW');
    expect(fmtWatts(0)).toBe('0.00 W');
    expect(fmtWatts(12.345)).toBe('12.35 W');
  });

  it('prints "n/a" for what is not a figure', () => {
    for (const v of [NaN, Infinity, -Infinity]) {
      expect(fmtJoules(v)).toBe('n/a');
      expect(fmtWatts(v)).toBe('n/a');
      expect(fmtSeconds(v)).toBe('n/a');
    }
  });

  // "0.00 s elapsed" was printed beside a short run's non-zero joules and watts.
  it('prints below a second in ms, and below a millisecond in µs', () => {
    expect(fmtSeconds(0)).toBe('0 s');
    expect(fmtSeconds(0.0000004)).toBe('0 µs');
    expect(fmtSeconds(0.000851)).toBe('851 µs');
    expect(fmtSeconds(0.0009996)).toBe('1.0 ms');
    expect(fmtSeconds(0.00321)).toBe('3.2 ms');
    expect(fmtSeconds(0.41234)).toBe('412.3 ms');
    expect(fmtSeconds(0.99996)).toBe('1.00 s');
  });

  it('never prints 60 seconds or 60 minutes', () => {
    expect(fmtSeconds(9.876)).toBe('9.88 s');
    expect(fmtSeconds(9.999)).toBe('10.0 s');
    expect(fmtSeconds(42.34)).toBe('42.3 s');
    expect(fmtSeconds(59.96)).toBe('1m00s');
    expect(fmtSeconds(119.6)).toBe('2m00s');
    expect(fmtSeconds(125)).toBe('2m05s');
    expect(fmtSeconds(3599.7)).toBe('1h00m00s');
    expect(fmtSeconds(3725)).toBe('1h02m05s');
  });
});
