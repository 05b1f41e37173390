// The commands keep no ring of samples where nothing of theirs reads one: a ring nothing read
// held memory and, once full (65 s at 1 kHz), counted every sample as lost, which serve
// exported as jouletrace_samples_dropped_total (the dashboard's "dropped/s").
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { SamplerOptions, SamplerStats } from '../src/sampler';
import { demoCommand } from '../src/cli/demo';
import { runCommand } from '../src/cli/run';
import { serveCommand } from '../src/cli/serve';
import { topCommand } from '../src/cli/top';
import { freePort } from './fixtures/prometheus-server';

// Every Sampler the commands make, with its ring as it was when it closed. The default ring is
// 4 samples here, not 65,536: it fills at once, where a real one took a minute.
const made = vi.hoisted(() => [] as Array<{ ring?: SamplerStats['ring'] }>);
vi.mock('../src/sampler', async (importOriginal) => {
  const mod = await importOriginal<typeof import('../src/sampler')>();
  class SmallDefaultRing extends mod.Sampler {
    readonly #seen: { ring?: SamplerStats['ring'] } = {};
    constructor(options: SamplerOptions = {}) {
      super({ ringCapacity: 4, ...options });
      made.push(this.#seen);
    }
    override close(): void {
      try {
        this.#seen.ring ??= this.stats().ring;
      } catch {
        /* closed already */
      }
      super.close();
    }
  }
  return { ...mod, Sampler: SmallDefaultRing };
});

afterEach(() => {
  made.splice(0);
  vi.restoreAllMocks();
});

const quiet = () => {
  vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
  vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
};

const noRing = { capacity: 0, written: 0, dropped: 0, overwritten: 0 };

describe('commands whose figures come from totals, threads and spans keep no ring', () => {
  it('serve: no sample dropped past what a ring would hold, on the machine sampler and a watched process', async () => {
    quiet();
    const port = await freePort();
    const before = new Set(process.listeners('SIGTERM'));
    const done = serveCommand(['--port', String(port), '--source', 'model', '--interval', '1ms', '--pid', String(process.pid)]);
    const scrape = async () => {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/metrics`);
        return res.ok ? await res.text() : '';
      } catch {
        return ''; // not listening yet
      }
    };
    const samples = (text: string) => Number(/^jouletrace_samples_total (\S+)$/m.exec(text)?.[1] ?? 0);
    let text = '';
    for (let i = 0; i < 500 && samples(text) < 64; i++) {
      await new Promise((r) => setTimeout(r, 20));
      text = await scrape();
    }
    expect(samples(text)).toBeGreaterThanOrEqual(64);
    expect(text).toMatch(/^jouletrace_samples_dropped_total 0$/m);
    const stop = process.listeners('SIGTERM').filter((l) => !before.has(l));
    expect(stop).toHaveLength(1);
    (stop[0] as () => void)();
    expect(await done).toBe(0);
    expect(made).toHaveLength(2);
    for (const m of made) expect(m.ring).toMatchObject(noRing);
  });

  it('top', async () => {
    quiet();
    expect(await topCommand(['--json', '--iterations', '1', '--delay', '0.2', '--source', 'model'])).toBe(0);
    expect(made).toHaveLength(1);
    expect(made[0].ring).toMatchObject(noRing);
  });

  it('demo', async () => {
    quiet();
    expect(await demoCommand(['--seconds', '2', '--no-probe', '--no-html', '--json', '--source', 'model'])).toBe(0);
    expect(made).toHaveLength(1);
    expect(made[0].ring).toMatchObject(noRing);
  });

  it('run without --csv; with --csv, which reads samples, a ring', async () => {
    quiet();
    expect(await runCommand(['-q', '--source', 'model', '-o', '/dev/null', '--', 'sleep', '0.1'])).toBe(0);
    expect(made).toHaveLength(1);
    expect(made[0].ring).toMatchObject(noRing);
    made.splice(0);
    expect(await runCommand(['-q', '--source', 'model', '-o', '/dev/null', '--csv', '/dev/null', '--', 'sleep', '0.1'])).toBe(0);
    expect(made).toHaveLength(1);
    expect(made[0].ring!.capacity).toBe(4);
  });
});
