// Subscriptions to onSpan and onRequest, as EventEmitter keeps them: one entry per subscription,
// a delivery to the subscriptions of when it began, none to one removed during it.
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { RequestTracker, Sampler, trackRequest, type RequestRecord, type SpanResult } from '../src/index';
import { describeBpf } from './fixtures/bpf-required';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function sampler(threads: 'bpf' | 'procfs'): Sampler {
  const repair = threads === 'bpf' ? { repairSwitchIns: 'always' as const } : {};
  const s = new Sampler({ source: 'model', intervalUs: 1000, threads, ...repair });
  cleanups.push(() => s.close());
  return s;
}

// One settled span: its batch goes to the onSpan listeners inside settle().
async function oneSpan(s: Sampler, label: string): Promise<void> {
  const h = s.begin(label);
  s.end(h);
  await s.settle(h);
}

for (const threads of ['bpf', 'procfs'] as const) {
  (threads === 'bpf' ? describeBpf : describe)(`onSpan subscriptions (threads: ${threads})`, () => {
    it('a listener that moves itself to a fresh subscription during delivery is called once per batch', async () => {
      const s = sampler(threads);
      s.start();
      // Bounded, so that the old behaviour (visited again after each re-subscription, without
      // end: the process hung) fails rather than hangs.
      let calls = 0;
      let off: () => void;
      const listener = () => {
        calls++;
        if (calls >= 50) return;
        off();
        off = s.onSpan(listener);
      };
      off = s.onSpan(listener);
      await oneSpan(s, 'a');
      expect(calls).toBe(1);
      await oneSpan(s, 'b');
      expect(calls).toBe(2);
      off();
      await oneSpan(s, 'c');
      expect(calls).toBe(2);
    });

    it('a listener subscribed during a delivery gets the next batch, not that one', async () => {
      const s = sampler(threads);
      s.start();
      const late: string[] = [];
      let subscribed = false;
      s.onSpan(() => {
        if (subscribed) return;
        subscribed = true;
        s.onSpan((b) => late.push(...b.map((r) => r.label)));
      });
      await oneSpan(s, 'before');
      expect(late).toEqual([]);
      await oneSpan(s, 'after');
      expect(late).toEqual(['after']);
    });

    it('a listener removed by an earlier one in the same delivery gets nothing from it', async () => {
      const s = sampler(threads);
      s.start();
      let bCalls = 0;
      let offB = () => {};
      const offA = s.onSpan(() => offB());
      offB = s.onSpan(() => bCalls++);
      await oneSpan(s, 'x');
      expect(bCalls).toBe(0);
      offA();
    });

    it('one function subscribed twice gets each batch twice, and each unsubscribe ends its own subscription', async () => {
      const s = sampler(threads);
      s.start();
      const got: string[] = [];
      const log = (b: SpanResult[]) => got.push(...b.map((r) => r.label));
      const off1 = s.onSpan(log);
      const off2 = s.onSpan(log);
      await oneSpan(s, 'both');
      expect(got).toEqual(['both', 'both']);
      off1();
      off1(); // safe twice: does not take the other subscription with it
      await oneSpan(s, 'one');
      expect(got).toEqual(['both', 'both', 'one']);
      off2();
      await oneSpan(s, 'none');
      expect(got).toEqual(['both', 'both', 'one']);
    });
  });
}

describeBpf('onRequest subscriptions', () => {
  async function serve(tracker: RequestTracker): Promise<string> {
    const server = http.createServer((req, res) => {
      trackRequest(tracker, req, res, '/r');
      res.end('ok');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => server.close(r)));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}/r`;
  }

  async function request(url: string, seen: () => number, want: number): Promise<void> {
    await (await fetch(url, { headers: { connection: 'close' } })).text();
    for (const end = Date.now() + 3000; seen() < want && Date.now() < end; ) await new Promise((r) => setTimeout(r, 10));
  }

  it('one function subscribed twice gets each batch twice; one subscribed during a delivery gets the next', async () => {
    const s = sampler('bpf');
    const tracker = new RequestTracker(s, { mode: 'shared' });
    cleanups.push(() => tracker.close());
    const url = await serve(tracker);
    s.start();
    const twice: RequestRecord[] = [];
    const log = (rs: RequestRecord[]) => twice.push(...rs);
    const off1 = tracker.onRequest(log);
    const off2 = tracker.onRequest(log);
    const late: RequestRecord[] = [];
    let subscribed = false;
    tracker.onRequest(() => {
      if (subscribed) return;
      subscribed = true;
      tracker.onRequest((rs) => late.push(...rs));
    });
    await request(url, () => twice.length, 2);
    expect(twice.length).toBe(2);
    expect(late.length).toBe(0);
    off1();
    await request(url, () => late.length, 1);
    // The second request: once to the subscription left, once to the late one.
    await new Promise((r) => setTimeout(r, 50));
    expect(twice.length).toBe(3);
    expect(late.length).toBe(1);
    off2();
  });
});

// jouletrace's own listeners (run ends, a channel's close): a snapshot each time, too, and none
// called once an earlier one has removed it.
describe("jouletrace's own listeners", () => {
  it('a run-end listener removed by an earlier one at the same run end is not called', () => {
    const s = sampler('procfs');
    let bCalls = 0;
    let offB = () => {};
    s.onRunEnd(() => offB());
    offB = s.onRunEnd(() => bCalls++);
    s.start();
    s.stop();
    expect(bCalls).toBe(0);
  });

  it("a channel's close listener removed by an earlier one is not called", () => {
    const s = sampler('procfs');
    const channel = s.spanChannel();
    let bCalls = 0;
    const b = () => bCalls++;
    channel.closeListeners.add(() => channel.closeListeners.delete(b));
    channel.closeListeners.add(b);
    s.close();
    expect(bCalls).toBe(0);
  });
});
