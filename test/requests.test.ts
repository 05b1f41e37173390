// Joules per request on real servers on loopback: node:http, Express and Fastify, shared and
// exact modes, and the sum over requests against the serving thread's energy.
import { AsyncLocalStorage, AsyncResource } from 'node:async_hooks';
import { execFile, execFileSync } from 'node:child_process';
import { pbkdf2 } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { promisify } from 'node:util';
import express from 'express';
import Fastify from 'fastify';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { energyMiddleware, instrumentExpress } from '../src/express';
import { fastifyEnergy, fastifyRoute } from '../src/fastify';
import { attachSpans, RequestTracker, Sampler, trackRequest, type RequestRecord, type RequestToken } from '../src/index';
import { describeBpf, itBpf } from './fixtures/bpf-required';
import { native } from '../src/native';
import { nativeHandleOf } from '../src/native-handles';
import { endWrapped } from '../src/response-end';
import { busyCpu } from './fixtures/cpu-busy';
import { connect, until } from './fixtures/request-endings';

const run = promisify(execFile);
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

// Spins for `ms` of this thread's CPU time (tests here compare requests' CPU).
const busy = busyCpu;

// jsonItems: POSTs a JSON array of that many small objects (see the fixture).
async function load(base: string, targets: Array<{ path: string; count: number; jsonItems?: number }>, concurrency: number) {
  const spec = { targets: targets.map((t) => ({ url: base + t.path, count: t.count, jsonItems: t.jsonItems })), concurrency };
  const { stdout } = await run(process.execPath, [path.join(__dirname, 'fixtures/load.cjs'), JSON.stringify(spec)]);
  return JSON.parse(stdout) as { status: Record<string, number>; ms: number };
}

// Records arrive once the sampler's intervals cover a request, at its next collection (every
// 20 ms): on a loaded machine that can take longer than a fixed wait.
async function recordsFor(records: unknown[], n: number, ms = 3000): Promise<void> {
  for (const end = Date.now() + ms; records.length < n && Date.now() < end; ) await new Promise((r) => setTimeout(r, 10));
}

function listen(server: http.Server): Promise<string> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`));
  });
}

// The suites that use it need eBPF (describeBpf): its figures are exact enough for tight checks.
// listen: false leaves the tracker without onRequest listeners (its requests then end silently).
function setup(mode: 'shared' | 'exact' = 'shared', { listen = true } = {}) {
  // The switch-in repair from the start, as in spans.test.ts: this VM loses some switch-ins.
  const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'bpf', repairSwitchIns: 'always' });
  const tracker = new RequestTracker(sampler, { mode });
  const records: RequestRecord[] = [];
  if (listen) tracker.onRequest((rs) => records.push(...rs));
  cleanups.push(() => sampler.close());
  cleanups.push(() => tracker.close());
  return { sampler, tracker, records };
}

const mean = (rs: RequestRecord[]) => rs.reduce((a, r) => a + r.joules, 0) / rs.length;

// Every request charged energy but those of one stall: a switch-in the kernel did not report
// leaves the serving thread's figures standing still until the tracker's repair at the next
// scheduler tick (README, "Frozen thread figures"), and a request that falls within it reads
// 0 J; a full-suite run under a reviewer's load saw two such in a row. So: at most three, all
// within 50 ms (a few ticks, at HZ=100 too). The frozen-figures bug this guards against left
// all of them at 0 J.
function expectChargedButOneStall(records: RequestRecord[], diagnosis: string): void {
  const zeros = records.filter((r) => !(r.joules > 0));
  expect(zeros.length, diagnosis).toBeLessThanOrEqual(3);
  if (zeros.length < 2) return;
  const spanMs = (Math.max(...zeros.map((r) => r.endNs)) - Math.min(...zeros.map((r) => r.startNs))) / 1e6;
  expect(spanMs, diagnosis).toBeLessThanOrEqual(50);
}

// A sampler on the procfs backend whose steps come every `intervalUs`, and a tracker without
// listeners: with long intervals the sampler seldom drains the event ring while a test fills it.
function procfsTracker(intervalUs: number) {
  const sampler = new Sampler({ source: 'model', intervalUs, threads: 'procfs' });
  const tracker = new RequestTracker(sampler);
  cleanups.push(() => sampler.close());
  cleanups.push(() => tracker.close());
  return { sampler, tracker, ch: sampler.spanChannel() };
}

// An exact-mode tracker on the procfs backend, its records, and how many callback spans of its
// requests have settled.
function exactProcfs() {
  const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs' });
  const tracker = new RequestTracker(sampler, { mode: 'exact' });
  cleanups.push(() => sampler.close());
  cleanups.push(() => tracker.close());
  const records: RequestRecord[] = [];
  tracker.onRequest((rs) => records.push(...rs));
  const ch = sampler.spanChannel();
  const settled = { callbacks: 0 };
  const count = () => void settled.callbacks++;
  ch.internalListeners.add(count);
  cleanups.push(() => ch.internalListeners.delete(count));
  return { sampler, tracker, ch, records, settled };
}

// Fills this thread's span event ring with spans begun and ended, until a begin no longer fits.
function fillEventRing(sampler: Sampler): void {
  const ch = sampler.spanChannel();
  const dropped = ch.droppedEvents;
  for (let i = 0; i < 70_000 && ch.droppedEvents === dropped; i++) sampler.end(sampler.begin('fill'));
}

// A server with a cheap route (1 ms of CPU) and an expensive one (6 ms), and a span over its
// serving, from the first request to the 210th response: the reference for the requests' sum.
// Not around load(): spawning the load process and reading its report cost the serving thread
// 10–15% of the requests' CPU time on a Zen 5 guest, outside any request. atLast: called with
// the 210th response.
async function twoRouteServer(sampler: Sampler, tracker: RequestTracker, atLast?: (res: http.ServerResponse) => void) {
  let window = 0;
  let served = 0;
  const server = http.createServer((req, res) => {
    if (window === 0) window = sampler.begin('serving');
    const route = req.url === '/expensive' ? '/expensive' : '/cheap';
    trackRequest(tracker, req, res, route);
    busy(route === '/expensive' ? 6 : 1);
    res.end('ok');
    if (++served === 210) {
      sampler.end(window);
      atLast?.(res);
    }
  });
  const base = await listen(server);
  cleanups.push(() => new Promise((r) => server.close(r)));
  return { base, window: () => window };
}

describeBpf('requests on node:http (shared mode)', () => {
  it('charges the expensive route more, and the requests sum to the thread energy while serving', async () => {
    const { sampler, tracker, records } = setup();
    const { base, window } = await twoRouteServer(sampler, tracker);
    sampler.start();
    const summary = await load(base, [{ path: '/cheap', count: 150 }, { path: '/expensive', count: 60 }], 3);
    const w = await sampler.settle(window());
    await recordsFor(records, 210);
    sampler.stop();
    expect(summary.status['200']).toBe(210);
    expect(records).toHaveLength(210);
    const cheap = records.filter((r) => r.route === '/cheap');
    const expensive = records.filter((r) => r.route === '/expensive');
    expect(cheap).toHaveLength(150);
    expect(expensive).toHaveLength(60);
    for (const r of records) {
      expect(r.method).toBe('GET');
      expect(r.statusCode).toBe(200);
      expect(r.mode).toBe('shared');
      expect(r.estimated).toBe(true);
      expect(r.joules).toBeGreaterThanOrEqual(0);
      expect(r.durationNs).toBeGreaterThan(0);
    }
    // Nearly every request is charged energy. A double-counted stint in the tracker's snapshots
    // once froze the serving thread's figures for tens of milliseconds, and every request in
    // that window got 0 J (see "Frozen thread figures" in the README); this allowance was 10%
    // then. Since that fix, one full-suite run still saw 3 of 210 consecutive requests, about
    // 7 ms, at 0 J: a switch-in the kernel never reported (README, same note). The tracker now
    // repairs those at the next scheduler tick, but figures may stand still until then: 5%.
    const unmeasured = records.filter((r) => !(r.joules > 0));
    expect(unmeasured.length, JSON.stringify({ unmeasured: unmeasured.slice(0, 5), bpf: sampler.stats().bpf })).toBeLessThanOrEqual(
      records.length * 0.05,
    );
    // Shared mode splits energy among requests in flight together, so queueing blurs the 6:1
    // CPU ratio; an expensive request still costs clearly more.
    expect(mean(expensive) / mean(cheap)).toBeGreaterThan(1.5);
    // With three clients in a separate process, a request is in flight nearly all the time:
    // the requests hold the serving thread's energy over the window. The window also holds
    // what the server does for a request before its handler runs (reading and parsing it, about
    // 0.2 ms each here): 0.91–0.95 of it went to the requests in 6 runs on a Zen 5 guest.
    const sum = records.reduce((a, r) => a + r.joules, 0);
    expect(sum / w.joules).toBeGreaterThan(0.85);
    expect(sum / w.joules).toBeLessThan(1.1);
    const routes = tracker.routes();
    expect(routes.map((r) => r.route).sort()).toEqual(['/cheap', '/expensive']);
    const er = routes.find((r) => r.route === '/expensive')!;
    expect(er.count).toBe(60);
    expect(er.joules.sum).toBeCloseTo(expensive.reduce((a, r) => a + r.joules, 0), 9);
    expect(er.joules.p50).toBeLessThanOrEqual(er.joules.p99);
  });
});

// A thread's on-CPU ns by the kernel's count (schedstat).
const schedstatNs = (tid: number) => Number(readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0]);

describeBpf("shared mode and libuv's thread pool", () => {
  it('charges a request the pool work it awaits, and no more than the serving thread and the pool were given', async () => {
    const { sampler, tracker, records } = setup();
    const tid = Number(readFileSync('/proc/thread-self/stat', 'utf8').split(' ')[0]);
    const hash = promisify(pbkdf2);
    await hash('warm', 'up', 1, 32, 'sha256'); // queued behind the tracker's search for the pool's threads
    sampler.start();
    await until(() => sampler.stats().timing.samples >= 3); // past the first interval, which only sets the reference
    // Every thread's CPU by the kernel's count: the one that ran the hash is the pool's, whatever
    // it is named (libuv names them libuv-worker from 1.50 on; this machine's Node 20 has 1.46).
    const cpu = () => new Map(readdirSync('/proc/self/task').map((t) => [Number(t), schedstatNs(Number(t))]));
    const before = cpu();
    const h = tracker.start('GET', '/hash')!;
    await hash('secret', 'salt', 500_000, 32, 'sha256'); // about 100 ms of one pool thread's CPU here
    tracker.end(h, 200);
    const after = cpu();
    await recordsFor(records, 1);
    sampler.stop();
    const grew = [...after].map(([t, ns]) => [t, ns - (before.get(t) ?? 0)] as const).sort((a, b) => b[1] - a[1]);
    const [hashTid, poolCpu] = grew.find(([t]) => t !== tid)!;
    const mainCpu = after.get(tid)! - before.get(tid)!;
    const pool = native().poolThreads() as number[];
    expect(records).toHaveLength(1);
    const [r] = records;
    const rows = sampler.threads();
    const main = rows.find((t) => t.tid === tid)!;
    const poolJoules = rows.filter((t) => pool.includes(t.tid)).reduce((a, t) => a + t.joules, 0);
    const what = JSON.stringify({ r, hashTid, poolCpu, mainCpu, pool, main, poolJoules });
    expect(pool, what).toContain(hashTid);
    expect(r.incomplete, what).toBe(false);
    // The request's work is the pool's. 5×, not 10×: in a full-suite run the serving thread once
    // took 10.7 ms of CPU (the runner's own work, a collection) beside the pool's 101 ms.
    expect(poolCpu, what).toBeGreaterThan(5 * mainCpu);
    // Its on-CPU time and energy are the serving thread's plus the pool's over its life (README,
    // "shared"), less the pool's first interval before the sampler saw its thread run (1 ms).
    // The serving thread alone, over the whole run, had a small part of that.
    expect(r.onCpuNs, what).toBeGreaterThan(mainCpu + 0.7 * poolCpu);
    expect(r.dynamicJoules!, what).toBeGreaterThan(main.joules + 0.7 * poolJoules);
    // Alone in flight, it holds the group's energy while it was open, which cannot exceed what
    // attribution gave the serving thread and the pool over the run (rows carry dynamic energy,
    // as dynamicJoules does): the two are sums of the same ticks, equal but for rounding.
    expect(r.dynamicJoules!, what).toBeLessThanOrEqual((main.joules + poolJoules) * (1 + 1e-9));
    expect(r.joules, what).toBeGreaterThan(r.dynamicJoules!); // and the baseline's share beside
  });

  // In a child: this process's pool threads are known already, from the trackers before.
  const lateTracker = (...args: string[]) => {
    const dist = path.join(__dirname, '..', 'dist/cjs');
    const fixture = path.join(__dirname, 'fixtures/late-tracker-pool.cjs');
    const out = execFileSync(process.execPath, [fixture, path.join(dist, 'index.js'), path.join(dist, 'native.js'), ...args], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    const { records, tid, grew, pool } = JSON.parse(out) as { records: RequestRecord[]; tid: number; grew: Array<[number, number]>; pool: number[] };
    const [hashTid, poolCpu] = grew.filter(([t]) => t !== tid).sort((a, b) => b[1] - a[1])[0];
    const mainCpu = grew.find(([t]) => t === tid)![1];
    const what = JSON.stringify({ records, hashTid, poolCpu, mainCpu, pool });
    expect(records, what).toHaveLength(1);
    expect(pool, what).toContain(hashTid);
    return { onCpuNs: records[0].onCpuNs, poolCpu, mainCpu, what };
  };

  it("charges the pool's work to the first requests of a tracker made while the sampler runs", () => {
    const { onCpuNs, poolCpu, mainCpu, what } = lateTracker();
    expect(poolCpu, what).toBeGreaterThan(5 * mainCpu);
    // The pool's threads, found by the tracker's round, count from the next step (1 ms), not from
    // the sampler's next rescan of its threads, up to 250 ms on.
    expect(onCpuNs, what).toBeGreaterThan(mainCpu + 0.7 * poolCpu);
  });

  it("holds the tracker's round until the sampler has taken the pool's threads up, however late its next step", () => {
    // 50 ms intervals: the hash queued behind the round (about 40 ms) ran before the sampler's next
    // step, which took the thread's figures, hash included, as its starting point (0.29–0.61 of
    // the pool's CPU reached the request in 10 runs; one run in five at 1 ms intervals on a
    // loaded 2-CPU guest). The request stays open over every interval the hash ran in, so that
    // the intervals' even spread loses none of it.
    const { onCpuNs, poolCpu, mainCpu, what } = lateTracker('50000', 'hold');
    expect(onCpuNs, what).toBeGreaterThan(mainCpu + 0.9 * poolCpu);
  });

  it("charges the pool once, among the requests in flight on every channel of a sampler's engine (the main thread's and a worker's)", async () => {
    const { sampler, tracker, records } = setup();
    const tid = Number(readFileSync('/proc/thread-self/stat', 'utf8').split(' ')[0]);
    const hash = promisify(pbkdf2);
    await hash('warm', 'up', 1, 32, 'sha256'); // queued behind the tracker's search for the pool's threads
    // A worker's request on the same sampler (its own span channel), in flight while the main
    // thread's awaits the pool, and idle: libuv's pool is the process's, not a thread's. Made
    // through the channel's internal calls: no public API tracks a worker's requests on another
    // thread's sampler (a worker's tracker needs a Sampler of its own), but the engine splits the
    // pool among every channel's requests, and this checks that it does so once. Started before
    // the sampler, so that the threads' figures below leave out its start.
    const index = JSON.stringify(path.join(__dirname, '..', 'dist/cjs/index.js'));
    const code = `
      const fs = require('node:fs');
      const { parentPort, workerData } = require('node:worker_threads');
      const ch = require(${index}).attachSpans(workerData);
      let h;
      ch.sharedListeners.add((handle, r, o) => {
        if (handle === h) parentPort.postMessage({ onCpuNs: r[o + 4], dynamicJoules: r[o + 6], flags: r[o + 7] });
      });
      parentPort.on('message', (m) => {
        if (m === 'begin') {
          h = ch.beginShared(0);
          parentPort.postMessage({ tid: Number(fs.readFileSync('/proc/thread-self/stat', 'utf8').split(' ')[0]) });
        } else if (m === 'end') ch.endRequest(h, 0);
        else parentPort.postMessage('ready');
      });`;
    const { Worker } = await import('node:worker_threads');
    const w = new Worker(code, { eval: true, workerData: sampler.spanContext() });
    cleanups.push(() => w.terminate());
    const reply = <T>(m: string) =>
      new Promise<T>((resolve, reject) => (w.once('message', resolve), w.once('error', reject), w.postMessage(m)));
    await reply('ready?');
    sampler.start();
    await until(() => sampler.stats().timing.samples >= 3);
    const { tid: workerTid } = await reply<{ tid: number }>('begin');
    const pool = native().poolThreads() as number[];
    const poolCpu = () => pool.reduce((a, t) => a + schedstatNs(t), 0);
    const before = poolCpu();
    const h = tracker.start('GET', '/hash')!;
    await Promise.all([hash('one', 'salt', 300_000, 32, 'sha256'), hash('two', 'salt', 300_000, 32, 'sha256')]);
    tracker.end(h, 200);
    const hashed = poolCpu() - before;
    const worker = await reply<{ onCpuNs: number; dynamicJoules: number; flags: number }>('end');
    await recordsFor(records, 1);
    sampler.stop();
    expect(records).toHaveLength(1);
    const [r] = records;
    const rows = sampler.threads();
    const sum = (tids: number[], f: (t: (typeof rows)[number]) => number) => rows.filter((t) => tids.includes(t.tid)).reduce((a, t) => a + f(t), 0);
    const group = [tid, workerTid, ...pool];
    const what = JSON.stringify({ r, worker, hashed, pool, rows: rows.filter((t) => group.includes(t.tid)) });
    expect(r.incomplete, what).toBe(false);
    expect(worker.flags & 1, what).toBe(0);
    // Both were in flight while the pool hashed: they share its work, and together they hold it
    // once, less its first interval before the sampler saw its threads run (1 ms each).
    expect(r.onCpuNs + worker.onCpuNs, what).toBeGreaterThan(0.7 * hashed);
    // Charged to both, they held it twice: more than the two threads and the pool ran over the run.
    expect(r.onCpuNs + worker.onCpuNs, what).toBeLessThanOrEqual(sum(group, (t) => t.onCpuNs) * (1 + 1e-9));
    expect(r.dynamicJoules! + worker.dynamicJoules, what).toBeLessThanOrEqual(sum(group, (t) => t.joules) * (1 + 1e-9));
  });
});

// A record's dynamicJoules is its joules less the baseline's share (null where no baseline is
// known). The model source's idle power is its baseline.
describeBpf('dynamicJoules of request records', () => {
  for (const mode of ['shared', 'exact'] as const) {
    it(`${mode} mode: below joules with the model's idle baseline, 0 under a baseline above what was measured`, async () => {
      const { sampler, tracker, records } = setup(mode);
      sampler.start();
      await until(() => sampler.stats().timing.samples >= 3);
      const request = async (route: string) => {
        const t = tracker.start('GET', route)!;
        busy(20);
        tracker.end(t, 200);
        await recordsFor(records, records.length + 1);
      };
      await request('/idle-baseline');
      sampler.setBaseline({ package: 1000 }); // the model draws 12 to 26 W here
      await request('/high-baseline');
      sampler.stop();
      const by = Object.fromEntries(records.map((r) => [r.route, r]));
      const what = JSON.stringify(records);
      expect(Object.keys(by).sort(), what).toEqual(['/high-baseline', '/idle-baseline']);
      const idle = by['/idle-baseline'];
      expect(idle.mode, what).toBe(mode);
      expect(idle.incomplete, what).toBe(false);
      expect(idle.dynamicJoules, what).not.toBeNull();
      expect(idle.dynamicJoules!, what).toBeGreaterThan(0); // 20 ms of CPU draws above idle
      expect(idle.dynamicJoules!, what).toBeLessThan(idle.joules);
      // The baseline took everything measured: the request's joules are all baseline.
      const high = by['/high-baseline'];
      expect(high.incomplete, what).toBe(false);
      expect(high.joules, what).toBeGreaterThan(0);
      expect(high.dynamicJoules, what).toBe(0);
    });
  }
});

describeBpf('requests in exact mode', () => {
  it('charges interleaved async requests for their own callbacks', async () => {
    const { sampler, tracker, records } = setup('exact');
    const userSpans: string[] = [];
    sampler.onSpan((spans) => userSpans.push(...spans.map((x) => x.label)));
    const server = http.createServer((req, res) => {
      const slow = req.url === '/slow';
      trackRequest(tracker, req, res, slow ? '/slow' : '/fast');
      if (!slow) {
        busy(1);
        res.end('fast');
        return;
      }
      busy(2);
      setTimeout(() => {
        busy(2);
        res.end('slow');
      }, 5);
    });
    const base = await listen(server);
    cleanups.push(() => new Promise((r) => server.close(r)));
    sampler.start();
    const mine = sampler.begin('mine');
    await load(base, [{ path: '/fast', count: 80 }, { path: '/slow', count: 40 }], 4);
    sampler.end(mine);
    await new Promise((r) => setTimeout(r, 50));
    sampler.stop();
    expect(records).toHaveLength(120);
    expect(records.every((r) => r.mode === 'exact')).toBe(true);
    // The callbacks' spans are the tracker's business: the user sees only their own spans.
    expect(userSpans).toEqual(['mine']);
    expect(sampler.spanStats().map((x) => x.label)).toEqual(['mine']);
    const slow = records.filter((r) => r.route === '/slow');
    const fast = records.filter((r) => r.route === '/fast');
    // 4 ms of CPU against 1 ms: each request is charged its own callbacks only, however the
    // requests interleave; ±40% absorbs the parser/socket work each request also pays for.
    const ratio = mean(slow) / mean(fast);
    expect(ratio).toBeGreaterThan(4 * 0.6);
    expect(ratio).toBeLessThan(4 * 1.4);
    // busy() spins on the main thread's own CPU, 4 ms and 1 ms; the attribution's on-CPU time may
    // read a little less (eBPF sees switches, schedstat accounts ticks). 3 ms still lies 1 ms above
    // a slow request that its timer's callback was not charged to (2 ms).
    const cpu = (rs: RequestRecord[]) => rs.reduce((a, r) => a + r.onCpuNs, 0) / rs.length;
    expect(cpu(slow)).toBeGreaterThan(3e6);
    expect(cpu(fast)).toBeGreaterThan(0.75e6);
  });

  it("charges a request its own callbacks, a user's span open around idle time or not", async () => {
    const { sampler, tracker, records } = setup('exact');
    // Two callbacks of 0.3 ms each, 2 ms apart: the thread idles for most of each request.
    const server = http.createServer((req, res) =>
      trackRequest(tracker, req, res, req.url, () => {
        busy(0.3);
        setTimeout(() => {
          busy(0.3);
          res.end('ok');
        }, 2);
      }),
    );
    const base = await listen(server);
    cleanups.push(() => new Promise((r) => server.close(r)));
    sampler.start();
    await load(base, [{ path: '/warm-up', count: 30 }], 1); // compiled, as the rounds' will be
    for (let round = 0; round < 4; round++) {
      await load(base, [{ path: '/alone', count: 15 }], 1);
      // A span around a background job, or an awaited measure() in a handler: it covers the
      // idle time, which raised the callbacks' union of spans to the whole interval, and each
      // callback was charged overlap × on-CPU / interval, not its overlap.
      const h = sampler.begin('background job');
      await load(base, [{ path: '/beside-span', count: 15 }], 1);
      sampler.end(h);
    }
    await recordsFor(records, 150);
    sampler.stop();
    const cpu = (route: string) => {
      const rs = records.filter((r) => r.route === route);
      expect(rs, route).toHaveLength(60);
      return rs.reduce((a, r) => a + r.onCpuNs, 0) / rs.length;
    };
    // The same requests, alternated in four rounds: only the open span differs. The ratio came
    // out at 0.92–1.13 over 11 runs on the 2-vCPU VM under a load average of 6 (other processes
    // preempting the server, unevenly between rounds), and diluted at 0.51–0.64 (a callback of
    // 0.3 ms in a 1 ms step with the thread otherwise idle was charged about 0.3 × 0.3 ms).
    const ratio = cpu('/beside-span') / cpu('/alone');
    expect(ratio).toBeGreaterThan(0.8);
    expect(ratio).toBeLessThan(1.25);
  });

  it('outside() leaves what it sets up out of the request that calls it', async () => {
    const { sampler, tracker, records } = setup('exact');
    sampler.start();
    // A timer made in a request's callback, as a pool's socket made during a request is: its
    // callbacks run in that request's context, charged to it.
    for (const route of ['/inside', '/outside']) {
      let fired!: () => void;
      const timer = new Promise<void>((r) => (fired = r));
      const t = tracker.start('JOB', route, () => {
        const later = () =>
          setTimeout(() => {
            busy(4);
            fired();
          }, 1);
        if (route === '/outside') tracker.outside(later);
        else later();
      })!;
      await timer;
      tracker.end(t, 200);
    }
    await recordsFor(records, 2);
    sampler.stop();
    const cpu = (route: string) => records.find((r) => r.route === route)!.onCpuNs;
    expect(cpu('/inside')).toBeGreaterThan(3e6);
    expect(cpu('/outside')).toBeLessThan(1e6);
    expect(() => tracker.outside(5 as never)).toThrow(new TypeError('Expected a function for fn but received 5 of type number'));
    const shared = new RequestTracker(sampler);
    cleanups.push(() => shared.close());
    expect(shared.outside(() => 42)).toBe(42); // shared mode: a plain call
  });
});

describeBpf('several trackers on one sampler', () => {
  it('each tracker gets its own requests', async () => {
    const { sampler, tracker, records } = setup();
    const second = new RequestTracker(sampler);
    const secondRecords: RequestRecord[] = [];
    second.onRequest((rs) => secondRecords.push(...rs));
    cleanups.push(() => second.close());
    const a = http.createServer((req, res) => {
      trackRequest(tracker, req, res, '/a');
      busy(1);
      res.end('a');
    });
    const b = http.createServer((req, res) => {
      trackRequest(second, req, res, '/b');
      busy(1);
      res.end('b');
    });
    const [baseA, baseB] = await Promise.all([listen(a), listen(b)]);
    cleanups.push(() => new Promise((r) => a.close(r)), () => new Promise((r) => b.close(r)));
    sampler.start();
    await Promise.all([load(baseA, [{ path: '/', count: 20 }], 2), load(baseB, [{ path: '/', count: 15 }], 2)]);
    await new Promise((r) => setTimeout(r, 40));
    sampler.stop();
    expect(records.map((r) => r.route)).toEqual(Array(20).fill('/a'));
    expect(secondRecords.map((r) => r.route)).toEqual(Array(15).fill('/b'));
  });
});

describeBpf('request tokens (start/end)', () => {
  it('takes the route at end(), ignores a second end() and an end() after settlement', async () => {
    const { sampler, tracker, records } = setup();
    sampler.start();
    const a = tracker.start('GET')!;
    const b = tracker.start('POST', '/orders')!;
    const c = tracker.start('GET', () => '/from-a-function')!;
    expect(tracker.inFlight).toBe(3);
    busy(2);
    tracker.end(a, 200, '/items/:id');
    tracker.end(a, 500, '/other');
    tracker.end(b, 201);
    tracker.end(c, 404, '');
    for (let i = 0; i < 100 && tracker.inFlight > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(tracker.inFlight).toBe(0);
    await Promise.resolve();
    tracker.end(b, 500);
    sampler.stop();
    // Requests settle together, in no particular order.
    expect(records.map((r) => [r.method, r.route, r.statusCode]).sort()).toEqual([
      ['GET', '(unmatched)', 404],
      ['GET', '/items/:id', 200],
      ['POST', '/orders', 201],
    ]);
    expect(records.every((r) => r.joules > 0 && r.mode === 'shared')).toBe(true);
    const routes = tracker.routes();
    expect(routes.map((r) => r.count)).toEqual([1, 1, 1]);
  });

  it("end() and settle() of a request's token are refused, naming where the request ends and its energy goes", async () => {
    const { sampler, tracker, records } = setup();
    sampler.start();
    const t = tracker.start('GET', '/x')!;
    // Ended by hand, the request would be cut short: refused, and the request carries on.
    expect(() => sampler.end(t as unknown as number)).toThrow(
      expect.objectContaining({ code: 'ERR_JOULETRACE_FOREIGN_SPAN', message: expect.stringContaining('ends with its response') }),
    );
    expect(tracker.inFlight).toBe(1);
    tracker.end(t, 200);
    await expect(sampler.settle(t as unknown as number)).rejects.toMatchObject({
      code: 'ERR_JOULETRACE_FOREIGN_SPAN',
      message: expect.stringContaining('tracker.onRequest()'),
    });
    for (let i = 0; i < 100 && records.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(records.map((r) => [r.route, r.statusCode, r.incomplete])).toEqual([['/x', 200, false]]);
    sampler.stop();
  });

  it("an exact-mode request's token is refused by end() and settle() the same way", async () => {
    const { sampler } = setup();
    const tracker = new RequestTracker(sampler, { mode: 'exact' });
    sampler.start();
    const t = tracker.start('GET', '/x')!;
    expect(typeof t).toBe('object');
    expect(tracker.inFlight).toBe(1);
    const refused = expect.objectContaining({ code: 'ERR_JOULETRACE_FOREIGN_SPAN', message: expect.stringContaining('tracker.onRequest()') });
    expect(() => sampler.end(t as unknown as number)).toThrow(refused);
    await expect(sampler.settle(t as unknown as number)).rejects.toEqual(refused);
    // Any other object is still a plain type error.
    expect(() => sampler.end({} as unknown as number)).toThrow(TypeError);
    tracker.end(t, 200);
    // In flight until its last callback span has settled.
    for (let i = 0; i < 200 && tracker.inFlight > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(tracker.inFlight).toBe(0);
    tracker.close();
    sampler.stop();
  });

  it('two trackers on one sampler each settle their own requests, and one closing leaves the other', async () => {
    const { sampler, tracker: first, records: firstRecords } = setup();
    const second = new RequestTracker(sampler);
    cleanups.push(() => second.close());
    const secondRecords: RequestRecord[] = [];
    second.onRequest((rs) => secondRecords.push(...rs));
    sampler.start();
    first.end(first.start('GET', '/first')!, 200);
    second.end(second.start('GET', '/second')!, 201);
    for (let i = 0; i < 100 && (firstRecords.length < 1 || secondRecords.length < 1); i++) await new Promise((r) => setTimeout(r, 10));
    first.close();
    second.end(second.start('GET', '/second')!, 202);
    for (let i = 0; i < 100 && secondRecords.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    sampler.stop();
    expect(firstRecords.map((r) => [r.route, r.statusCode])).toEqual([['/first', 200]]);
    expect(secondRecords.map((r) => [r.route, r.statusCode])).toEqual([
      ['/second', 201],
      ['/second', 202],
    ]);
    expect(second.inFlight).toBe(0);
  });

  it('past maxRoutes, records and aggregates both say (other), so exporter labels stay bounded', async () => {
    const { sampler } = setup();
    const tracker = new RequestTracker(sampler, { maxRoutes: 2 });
    cleanups.push(() => tracker.close());
    const records: RequestRecord[] = [];
    tracker.onRequest((rs) => records.push(...rs));
    sampler.start();
    // Runs of one route (the tracker keeps the last aggregate beside its maps), one route under
    // two methods, and a route past the limit twice in a row.
    const requests: Array<[string, string]> = [
      ['GET', '/a'],
      ['GET', '/a'],
      ['GET', '/b'],
      ['GET', '/c'],
      ['GET', '/c'],
      ['POST', '/a'],
      ['GET', '/a'],
      // Methods no HTTP/1 server takes (HTTP/2 takes any token): one '(other)' for all of them.
      ['BREW', '/a'],
      ['WHEN', '/pot'],
    ];
    for (const [method, route] of requests) tracker.end(tracker.start(method, route)!, 200);
    await new Promise((r) => setTimeout(r, 30));
    sampler.stop();
    for (let i = 0; i < 100 && records.length < requests.length; i++) await new Promise((r) => setTimeout(r, 10));
    expect(records.map((r) => `${r.method} ${r.route}`)).toEqual([
      'GET /a',
      'GET /a',
      'GET /b',
      'GET (other)',
      'GET (other)',
      'POST (other)',
      'GET /a',
      '(other) (other)',
      '(other) (other)',
    ]);
    expect(tracker.routes().map((r) => [r.method, r.route, r.count]).sort()).toEqual([
      ['(other)', '(other)', 2],
      ['GET', '(other)', 2],
      ['GET', '/a', 3],
      ['GET', '/b', 1],
      ['POST', '(other)', 1],
    ]);
  });

  it('a context capture that throws in shared mode leaves no request span open', async () => {
    const { sampler, tracker, records } = setup();
    sampler.start();
    tracker.setContextCapture(() => {
      throw new Error('capture failed');
    });
    expect(() => tracker.start('GET', '/leak')).toThrow('capture failed');
    expect(tracker.inFlight).toBe(0);
    tracker.setContextCapture(null);
    tracker.end(tracker.start('GET', '/ok')!, 200);
    await new Promise((r) => setTimeout(r, 30));
    sampler.stop();
    for (let i = 0; i < 100 && records.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    // A span left open by the failed start would settle at stop() as a second, incomplete record.
    expect(records.map((r) => [r.route, r.statusCode, r.incomplete])).toEqual([['/ok', 200, false]]);
  });

  it('requests still open at stop() give their span slots back when they end', async () => {
    // stop() settles open requests (incomplete); their end() afterwards must free the span
    // slots, or every stop with requests in flight would shrink the pool for good. Fill all
    // 65,536 slots, stop, end them, and fill again: the same number must fit.
    const { sampler, tracker, records } = setup();
    const fill = (route: string) => {
      const tokens = [];
      for (let i = 0; i < 70000; i++) {
        const t = tracker.start('GET', route);
        if (t === undefined) break;
        tokens.push(t);
      }
      return tokens;
    };
    const settleAll = async () => {
      // Results beyond the result ring's capacity arrive over the next polls.
      for (let i = 0; i < 200 && tracker.inFlight > 0; i++) {
        tracker.routes();
        await new Promise((r) => setTimeout(r, 10));
      }
      await Promise.resolve();
    };
    sampler.start();
    const first = fill('/first');
    expect(first.length).toBeGreaterThan(60000);
    sampler.stop();
    await settleAll();
    // Settled, but each record waits for its end(), which gives its status (and route): in
    // flight until then (inFlight read 0 here).
    expect(records.length).toBe(0);
    expect(tracker.inFlight).toBe(first.length);
    await new Promise((r) => setTimeout(r, 30));
    tracker.end(first[0], 503, '/first/late');
    for (const t of first) tracker.end(t, 200);
    for (const t of first.slice(0, 10)) tracker.end(t, 500); // a second end() is ignored
    await settleAll();
    expect(tracker.inFlight).toBe(0);
    expect(records.length).toBe(first.length);
    expect([records[0].route, records[0].statusCode]).toEqual(['/first/late', 503]);
    expect(records.slice(1).every((r) => r.incomplete && r.route === '/first' && r.statusCode === 200)).toBe(true);
    // Measured to the stop, but lasting to its end, 30 ms after it (its duration stopped at the stop).
    expect(Math.min(...records.map((r) => r.durationNs))).toBeGreaterThan(30e6);

    sampler.start();
    const second = fill('/second');
    expect(second.length).toBe(first.length);
    for (const t of second) tracker.end(t, 200);
    sampler.stop();
    await settleAll();
    expect(tracker.inFlight).toBe(0);
  });

  it('a request open across stop() and start() still shares the next run with the requests beside it', async () => {
    // stop() settles a request still open (incomplete); it stays in flight in the sampler thread
    // too, until its end: the next run's requests beside it get half of the thread, as beside
    // one opened in the same run. They got the whole thread, unflagged.
    const { sampler, tracker, records } = setup();
    sampler.start();
    const a = tracker.start('GET', '/A');
    busy(5);
    sampler.stop();
    sampler.start();
    const b = tracker.start('GET', '/B');
    busy(20);
    tracker.end(b, 200);
    tracker.end(a, 200);
    const e = tracker.start('GET', '/E'); // alone once A ended: the whole thread again
    busy(20);
    tracker.end(e, 200);
    const ctl = tracker.start('GET', '/ctl');
    const d = tracker.start('GET', '/D');
    busy(20);
    tracker.end(d, 200);
    tracker.end(ctl, 200);
    await recordsFor(records, 5);
    sampler.stop();
    await new Promise((r) => setTimeout(r, 30));
    const rec = (route: string) => records.filter((r) => r.route === route);
    // One record of A (the first run's part), counted once in its route.
    expect(records.map((r) => r.route).sort()).toEqual(['/A', '/B', '/D', '/E', '/ctl']);
    expect(rec('/A')[0].incomplete).toBe(true);
    expect(tracker.routes().find((r) => r.route === '/A')!.count).toBe(1);
    expect(tracker.inFlight).toBe(0);
    const [rb, rd, re] = [rec('/B')[0], rec('/D')[0], rec('/E')[0]];
    expect([rb.incomplete, rd.incomplete, re.incomplete]).toEqual([false, false, false]);
    expect(rb.onCpuNs / rd.onCpuNs).toBeGreaterThan(0.7);
    expect(rb.onCpuNs / rd.onCpuNs).toBeLessThan(1.4);
    expect(re.onCpuNs / rd.onCpuNs).toBeGreaterThan(1.6);
  });

  it('requests in flight at close() all get their records, more than three result rings of them', async () => {
    // The final step writes 16,384 results (the result ring) and the engine keeps the rest for
    // the channel's collections to fetch, a ring at a time. A ring of requests alone counted as
    // no progress, and each collection stopped after one: the two after close() left 10,848.
    const { sampler, tracker, records } = setup();
    sampler.start();
    const n = 60_000;
    const tokens = Array.from({ length: n }, () => tracker.start('GET', '/held'));
    await new Promise((r) => setTimeout(r, 50));
    sampler.close();
    for (const t of tokens) tracker.end(t, 200);
    await recordsFor(records, n);
    expect(records.length).toBe(n);
    expect(records.every((r) => r.incomplete && r.route === '/held')).toBe(true);
    expect(tracker.inFlight).toBe(0);
  });

  it('shares energy equally among the requests in flight at each moment', async () => {
    // A is open throughout; B and then C run beside it, doing the same work. Two requests are in
    // flight at almost every moment, so under fair sharing A gets exactly what B and C get
    // together (off only by the few hundred ns between B's end and C's begin, when A is alone).
    const { sampler, tracker, records } = setup();
    sampler.start();
    await new Promise((r) => setTimeout(r, 20));
    const onCpu = () => Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]);
    // First calls compile code: done once before, or A would begin alone for a few hundred µs.
    for (let i = 0; i < 3; i++) tracker.end(tracker.start('GET', '/warm-up')!, 200);
    // A try where the thread was held up in a moment A was alone (a loaded machine: 1 try in
    // 4 once) proves nothing: up to 3 tries, judged on the first whose lone moments were short.
    const now = () => process.hrtime.bigint();
    let by: Record<string, (typeof records)[number]> = {};
    let threadOnCpu = 0;
    for (let attempt = 0; attempt < 3; attempt++) {
      records.length = 0;
      const cpu0 = onCpu();
      const t0 = now();
      const a = tracker.start('GET', '/a')!;
      const b = tracker.start('GET', '/b')!;
      const t1 = now();
      busy(40);
      const t2 = now();
      tracker.end(b, 200);
      const c = tracker.start('GET', '/c')!;
      const t3 = now();
      busy(40);
      const t4 = now();
      tracker.end(c, 200);
      tracker.end(a, 200);
      const t5 = now();
      threadOnCpu = onCpu() - cpu0;
      for (let i = 0; i < 100 && tracker.inFlight > 0; i++) await new Promise((r) => setTimeout(r, 10));
      await Promise.resolve();
      by = Object.fromEntries(records.filter((r) => r.route !== '/warm-up').map((r) => [r.route, r]));
      if (t1 - t0 + (t3 - t2) + (t5 - t4) < 200_000n) break;
    }
    sampler.stop();
    expect(Object.keys(by).sort()).toEqual(['/a', '/b', '/c']);
    expect(Object.values(by).every((r) => !r.incomplete && r.joules > 0)).toBe(true);
    // Within 1%: an interval's energy is spread evenly over it, so if the thread is preempted
    // in the moment A is alone, A is charged for part of that time (0.37% seen once in a
    // full-suite run).
    expect(Math.abs(by['/a'].joules / (by['/b'].joules + by['/c'].joules) - 1)).toBeLessThan(0.01);
    expect(Math.abs(by['/a'].onCpuNs / (by['/b'].onCpuNs + by['/c'].onCpuNs) - 1)).toBeLessThan(0.01);
    // A always had company: half of the thread's CPU time over its life (charging each request
    // the thread's whole energy would give A all of it). The kernel's schedstat is the yardstick.
    expect(by['/a'].onCpuNs / threadOnCpu).toBeGreaterThan(0.45);
    expect(by['/a'].onCpuNs / threadOnCpu).toBeLessThan(0.55);
  });

  it('keeps settling requests at the same cost with 30,000 others in flight', async () => {
    // The fair-share clock makes each interval's work proportional to the events in it, not to
    // the requests in flight; long-lived requests (long polls, streams) must not delay others.
    const { sampler, tracker, records } = setup();
    sampler.start();
    const open: NonNullable<ReturnType<typeof tracker.start>>[] = [];
    for (let i = 0; i < 30000; i++) open.push(tracker.start('GET', '/long-poll')!);
    for (let k = 0; k < 50; k++) {
      const t = tracker.start('GET', '/short')!;
      busy(0.2);
      tracker.end(t, 200);
    }
    // Up to 3 s, not 1: a full-suite run on a loaded 2-vCPU guest once counted 48 of the 50 (late or
    // unmeasured was not recorded; the message below now lists any that are unmeasured).
    for (let i = 0; i < 300 && records.length < 50; i++) await new Promise((r) => setTimeout(r, 10));
    const short = records.filter((r) => r.route === '/short');
    expect(short.filter((r) => !r.incomplete && r.joules > 0).length, JSON.stringify(short.filter((r) => r.incomplete || !(r.joules > 0)).slice(0, 3))).toBe(50);
    for (const t of open) tracker.end(t, 200);
    for (let i = 0; i < 200 && tracker.inFlight > 0; i++) {
      tracker.routes();
      await new Promise((r) => setTimeout(r, 10));
    }
    sampler.stop();
    expect(tracker.inFlight).toBe(0);
    const long = records.filter((r) => r.route === '/long-poll');
    expect(long.length).toBe(30000);
    expect(long.every((r) => !r.incomplete && r.joules > 0)).toBe(true);
  });

  it('carries a captured context to each record', async () => {
    const { sampler, tracker, records } = setup();
    let n = 0;
    tracker.setContextCapture(() => `ctx-${n++}`);
    sampler.start();
    const tokens = [tracker.start('GET', '/a')!, tracker.start('GET', '/b')!];
    busy(1);
    for (const t of tokens) tracker.end(t, 200);
    for (let i = 0; i < 100 && tracker.inFlight > 0; i++) await new Promise((r) => setTimeout(r, 10));
    await Promise.resolve();
    sampler.stop();
    expect(records.map((r) => [r.route, r.context]).sort()).toEqual([
      ['/a', 'ctx-0'],
      ['/b', 'ctx-1'],
    ]);
  });
});

describeBpf('per-route aggregates, kept by the sampler thread', () => {
  // A tracker without onRequest listeners ends its requests "silently": the sampler thread adds
  // each to its route as it settles and writes no result back, and the span slot is free at once.
  const resultsWritten = (sampler: Sampler) => Atomics.load(new Int32Array(nativeHandleOf<SharedArrayBuffer>(sampler.spanChannel())), 32);
  const total = (tracker: RequestTracker) => tracker.routes().reduce((a, r) => a + r.count, 0);
  async function routesCount(tracker: RequestTracker, n: number, ms = 3000): Promise<number> {
    for (const end = Date.now() + ms; total(tracker) < n && Date.now() < end; ) await new Promise((r) => setTimeout(r, 10));
    return total(tracker);
  }

  it('without a listener (one added and removed counts as none), no result comes back to the serving thread, and routes() still sums to its energy', async () => {
    const { sampler, tracker } = setup('shared', { listen: false });
    const unsubscribe = tracker.onRequest(() => {});
    unsubscribe();
    let inFlightAtLast = -1;
    // Ended silently: out of flight at its end, not at its settlement 10 ms or more later.
    const { base, window } = await twoRouteServer(sampler, tracker, (res) =>
      res.on('finish', () => setImmediate(() => (inFlightAtLast = tracker.inFlight))),
    );
    sampler.start();
    const written0 = resultsWritten(sampler);
    const summary = await load(base, [{ path: '/cheap', count: 150 }, { path: '/expensive', count: 60 }], 3);
    const w = await sampler.settle(window());
    expect(await routesCount(tracker, 210)).toBe(210);
    sampler.stop();
    expect(summary.status['200']).toBe(210);
    expect(inFlightAtLast).toBe(0);
    // The window span's result only: none for the 210 requests.
    expect(resultsWritten(sampler) - written0).toBe(1);
    const routes = tracker.routes();
    expect(routes.map((r) => [r.method, r.route, r.count]).sort()).toEqual([
      ['GET', '/cheap', 150],
      ['GET', '/expensive', 60],
    ]);
    const [cheap, expensive] = ['/cheap', '/expensive'].map((p) => routes.find((r) => r.route === p)!);
    expect(expensive.joules.mean / cheap.joules.mean).toBeGreaterThan(1.5);
    // As the records do in the first test: the requests hold the serving thread's energy.
    const sum = cheap.joules.sum + expensive.joules.sum;
    expect(sum / w.joules).toBeGreaterThan(0.85);
    expect(sum / w.joules).toBeLessThan(1.1);
    for (const r of routes) {
      expect(r.estimated).toBe(true);
      expect(r.joules.p50).toBeLessThanOrEqual(r.joules.p99);
      expect(r.joules.p99).toBeLessThanOrEqual(r.joules.max);
      expect(r.joules.mean).toBeCloseTo(r.joules.sum / r.count, 12);
      expect(r.durationMs.mean).toBeGreaterThan(expensive === r ? 5 : 0.5);
      expect(r.durationMs.p99).toBeGreaterThanOrEqual(r.durationMs.mean * 0.5);
    }
  });

  it('a new request may take the slot of one that ended silently and has not settled yet', async () => {
    // Slots are handed out first in, first out: a slot comes round again after 65,536 begins.
    // With 1 s intervals the sampler thread settles a request 2 s after its end, so the third
    // batch below takes slots of the first while those requests are ended and unsettled; the
    // engine must keep them apart (SpanEngine::Shared), or 4,464 of them would never settle.
    const sampler = new Sampler({ source: 'model', intervalUs: 1_000_000, threads: 'bpf', repairSwitchIns: 'always' });
    const tracker = new RequestTracker(sampler);
    cleanups.push(() => sampler.close());
    cleanups.push(() => tracker.close());
    const count = (route: string) => tracker.routes().find((r) => r.route === route)?.count ?? 0;
    const batch = (route: string, n: number) => {
      for (let i = 0; i < n; i++) tracker.end(tracker.start('GET', route), 200);
    };
    sampler.start();
    // Each batch's 60,000 events fit the 65,536-event ring; the sampler drains it at each step.
    const step = () => sampler.stats().timing.samples;
    const nextStep = async () => {
      const s0 = step();
      while (step() === s0) await new Promise((r) => setTimeout(r, 5));
    };
    await nextStep();
    batch('/first', 30000);
    await nextStep();
    batch('/second', 30000);
    await nextStep();
    expect(count('/first')).toBe(0); // ended, not settled: the condition this test is about
    batch('/third', 10000);
    expect(count('/first')).toBe(0); // still: the third batch's begins are drained before it settles
    expect(tracker.inFlight).toBe(0);
    // The first batch settles at a step of the run, moved entries and all, then the others.
    for (let i = 0; i < 800 && count('/first') < 30000; i++) await new Promise((r) => setTimeout(r, 10));
    expect(count('/first')).toBe(30000);
    for (let i = 0; i < 800 && count('/third') < 10000; i++) await new Promise((r) => setTimeout(r, 10));
    expect([count('/first'), count('/second'), count('/third')]).toEqual([30000, 30000, 10000]);
    sampler.stop();
    expect(sampler.stats().spans.droppedEvents).toBe(0);
  });

  // track() with a route and no listener keeps nothing of the request on the serving thread (its
  // token is its span handle, negated): these tests go through a server, as that path does.
  async function serveTracked(tracker: RequestTracker, handler: (req: http.IncomingMessage, res: http.ServerResponse) => void) {
    const server = http.createServer((req, res) => {
      trackRequest(tracker, req, res, req.url!);
      handler(req, res);
    });
    const base = await listen(server);
    cleanups.push(() => new Promise((r) => server.close(r)));
    const c = await connect(base);
    cleanups.push(() => c.destroy());
    let got = '';
    c.on('data', (d: Buffer) => (got += String(d)));
    const responses = () => (got.match(/HTTP\/1.1 /g) ?? []).length;
    const get = (path: string) => c.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
    return { get, responses };
  }

  it('a request begun without a listener gets no record, even if one is added before its end; counted once if tracked twice; open at stop(), counted once', async () => {
    const { sampler, tracker } = setup('shared', { listen: false });
    const held: http.ServerResponse[] = [];
    const { get, responses } = await serveTracked(tracker, (req, res) => {
      trackRequest(tracker, req, res, req.url!); // mounted twice: still one request
      if (req.url === '/held') held.push(res);
      else res.end('ok');
    });
    sampler.start();
    get('/held');
    await until(() => held.length === 1);
    expect(tracker.inFlight).toBe(1);
    const records: RequestRecord[] = [];
    tracker.onRequest((rs) => records.push(...rs));
    held[0].end('late'); // began before the listener: no record
    get('/after'); // began after it: a record
    await until(() => responses() === 2 && records.length === 1);
    expect(records.map((r) => r.route)).toEqual(['/after']);
    expect(await routesCount(tracker, 2)).toBe(2);
    expect(tracker.routes().map((r) => [r.route, r.count]).sort()).toEqual([
      ['/after', 1],
      ['/held', 1],
    ]);
    expect(tracker.inFlight).toBe(0);
    sampler.stop();
    // Requests still open when the sampler stops: its final step adds them to their routes;
    // their ends, after it, add nothing.
    const quiet = setup('shared', { listen: false });
    const open: http.ServerResponse[] = [];
    const q = await serveTracked(quiet.tracker, (_req, res) => open.push(res));
    quiet.sampler.start();
    for (let i = 0; i < 5; i++) q.get('/open');
    await until(() => open.length === 5);
    busy(3);
    quiet.sampler.stop();
    expect(quiet.tracker.routes().map((r) => [r.route, r.count])).toEqual([['/open', 5]]);
    for (const res of open) res.end('ok');
    await until(() => q.responses() === 5);
    expect(quiet.tracker.routes().map((r) => [r.route, r.count])).toEqual([['/open', 5]]);
    expect(quiet.tracker.routes()[0].joules.sum).toBeGreaterThan(0);
    expect(quiet.tracker.inFlight).toBe(0);
  });

  it('a request begun without a listener whose end finds the event ring full ends later, and counts once under its route', async () => {
    const { sampler, tracker, ch } = procfsTracker(200_000);
    let late = 0;
    const { get, responses } = await serveTracked(tracker, (_req, res) => {
      fillEventRing(sampler);
      const before = ch.lateEnds;
      res.end('ok');
      late += ch.lateEnds - before;
    });
    sampler.start();
    let sent = 0;
    // (Again should the sampler's step drain the ring between filling it and the end.)
    for (let attempt = 0; attempt < 3 && late === 0; attempt++) {
      get('/late');
      sent++;
      await until(() => responses() === sent);
    }
    expect(late).toBe(1);
    expect(tracker.inFlight).toBe(0); // out of flight at its end, though its result is to come
    expect(await routesCount(tracker, sent, 10_000)).toBe(sent);
    sampler.stop();
    expect(tracker.routes().map((r) => [r.route, r.count])).toEqual([['/late', sent]]);
    expect(tracker.inFlight).toBe(0);
  });

  it('an end that finds the event ring full is written later, with the route it names', async () => {
    // 200 ms intervals: the sampler seldom drains the event ring while the test fills it (a few
    // ms), and settles the late ends 0.6 s or so after they go in.
    const { sampler, tracker, ch } = procfsTracker(200_000);
    sampler.start();
    let late = 0;
    let ended = 0;
    // (Tried again should the sampler's step drain the ring between filling it and the ends.)
    for (let attempt = 0; attempt < 3 && late === 0; attempt++) {
      const tokens = Array.from({ length: 10 }, () => tracker.start('GET'));
      fillEventRing(sampler);
      const lateEnds = ch.lateEnds;
      for (const t of tokens) tracker.end(t, 200, '/named-at-end');
      ended += tokens.length;
      late = ch.lateEnds - lateEnds;
    }
    expect(late).toBe(10);
    expect(await routesCount(tracker, ended, 10_000)).toBe(ended);
    expect(tracker.routes().map((r) => [r.route, r.count])).toEqual([['/named-at-end', ended]]);
    // Their results come back (the fill spans' fill the result ring first, so over several
    // steps): stop() fetches the rest.
    sampler.stop();
    expect(tracker.inFlight).toBe(0);
  });

  it('a request whose begin found the event ring full leaves at its end, unmeasured and not in routes()', async () => {
    const { sampler, tracker, ch } = procfsTracker(1_000_000);
    sampler.start();
    let dropped = false;
    let measured = 0; // attempts where a step drained the ring first: the request began as usual
    for (let attempt = 0; attempt < 3 && !dropped; attempt++) {
      fillEventRing(sampler);
      const filled = ch.droppedEvents;
      const t = tracker.start('GET', '/dropped');
      dropped = ch.droppedEvents > filled;
      if (!dropped) measured++;
      tracker.end(t, 200);
      // Unmeasured, its record (NaN joules) was made at its end; measured, it ended silently.
      expect(tracker.inFlight).toBe(0);
    }
    expect(dropped).toBe(true);
    sampler.stop();
    expect(tracker.routes().find((r) => r.route === '/dropped')?.count ?? 0).toBe(measured);
  });

  it.each([false, true])(
    'a request that stop() settled while open counts under the route its begin named, or else its end, as incomplete, its duration up to the stop (listening: %s)',
    async (listen) => {
      const { sampler, tracker, records } = setup('shared', { listen });
      sampler.start();
      const began = Number(process.hrtime.bigint());
      const named = Array.from({ length: 50 }, () => tracker.start('GET', '/named-at-begin'));
      const unnamed = Array.from({ length: 50 }, () => tracker.start('GET'));
      busy(5);
      tracker.end(tracker.start('GET', '/done'), 200);
      sampler.stop();
      const stopped = Number(process.hrtime.bigint());
      // Ended well after the stop: their records' durations run to their ends.
      await new Promise((r) => setTimeout(r, 60));
      // Counted by the sampler thread's final step, before these ends: not again now.
      for (const t of named) tracker.end(t, 200);
      // Their results came before their ends gave the route: counted now.
      for (const t of unnamed) tracker.end(t, 200, '/named-at-end');
      const routes = tracker.routes();
      expect(routes.map((r) => [r.route, r.count, r.incomplete]).sort()).toEqual([
        ['/done', 1, 0],
        ['/named-at-begin', 50, 50],
        ['/named-at-end', 50, 50],
      ]);
      for (const r of routes) expect(r.joules.sum).toBeGreaterThan(0);
      // In routes(), both ways, what was measured: up to the stop (the route named at the end
      // counted up to its end, 60 ms later, while the one named at the begin stopped there).
      for (const r of routes) expect(r.durationMs.p99 * 1e6).toBeLessThanOrEqual(stopped - began);
      expect(tracker.inFlight).toBe(0);
      if (!listen) return;
      await until(() => records.length === 101);
      const held = records.filter((r) => r.route !== '/done');
      expect(held).toHaveLength(100);
      expect(held.every((r) => r.incomplete && r.durationNs >= 60e6)).toBe(true);
    },
  );
});

describe('route aggregates (native table)', () => {
  it('a route counts towards maxRoutes from a request that begins, or from the end that names it', () => {
    const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs' });
    const tracker = new RequestTracker(sampler, { maxRoutes: 2 });
    cleanups.push(() => sampler.close());
    cleanups.push(() => tracker.close());
    // Stopped: nothing begins, and no route is taken in.
    expect(tracker.start('GET', '/while-stopped')).toBeUndefined();
    sampler.start();
    // A hook's pattern: the route only at the end. '(unrouted)' is not taken in at the begin.
    tracker.end(tracker.start('GET'), 200, '/named-at-end');
    tracker.end(tracker.start('GET', '/begun'), 200);
    tracker.end(tracker.start('GET', '/third'), 200);
    tracker.end(tracker.start('GET'), 200);
    sampler.stop();
    expect(tracker.routes().map((r) => [r.route, r.count]).sort()).toEqual([
      ['(other)', 2],
      ['/begun', 1],
      ['/named-at-end', 1],
    ]);
  });

  it.each([
    ['stop()', (s: Sampler) => s.stop()],
    ['close()', (s: Sampler) => s.close()],
  ])('a route function that calls %s records and counts its request under the route it returns', async (_, act) => {
    for (const listen of [true, false]) {
      const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs' });
      const tracker = new RequestTracker(sampler);
      cleanups.push(() => sampler.close());
      cleanups.push(() => tracker.close());
      const records: RequestRecord[] = [];
      if (listen) tracker.onRequest((rs) => records.push(...rs));
      sampler.start();
      // The sampler's final step delivers the request's result from within the function.
      tracker.end(
        tracker.start('GET', () => {
          act(sampler);
          return '/orders/:id';
        }),
        200,
      );
      await Promise.resolve();
      expect(records.map((r) => [r.route, r.statusCode, r.incomplete])).toEqual(listen ? [['/orders/:id', 200, true]] : []);
      expect(tracker.routes().map((r) => [r.route, r.count])).toEqual([['/orders/:id', 1]]);
      expect(tracker.inFlight).toBe(0);
    }
  });

  it("lets go of a collected tracker's routes", () => {
    // In a child process run with --expose-gc: a closed tracker, dropped and collected.
    const out = JSON.parse(
      execFileSync(process.execPath, ['--expose-gc', path.join(__dirname, 'fixtures/route-release.cjs'), path.join(__dirname, '..', 'dist/cjs/index.js')], {
        encoding: 'utf8',
        timeout: 60_000,
      }),
    ) as { before: number[]; after: number[] };
    expect(out.before).toEqual([100, 0]);
    expect(out.after).toEqual([0, 0]);
  });

  it('counts (the incomplete apart too), sums and keeps exact nearest-rank quantiles over the latest 2,048 requests, readable after close', () => {
    const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs' });
    cleanups.push(() => sampler.close());
    const ch = sampler.spanChannel();
    const [a, b, c, unused] = [ch.newRouteId(), ch.newRouteId(), ch.newRouteId(), ch.newRouteId()];
    for (let v = 1; v <= 100; v++) ch.addToRoute(a, v, v * 1000, false, v % 10 === 0);
    ch.addToRoute(a, NaN, 1, true, true); // never measured: not counted
    for (let v = 1; v <= 3000; v++) ch.addToRoute(b, v, 1e6, v === 7, false); // wrapped: 953..3000 held
    ch.addToRoute(c, 2, 10, false, true);
    ch.addToRoute(c, 1, 20, false, false);
    const read = () => {
      const s = ch.routeSummaries(Int32Array.of(a, b, c, unused, 0));
      return Array.from({ length: 5 }, (_, k) => Array.from(s.subarray(k * 9, k * 9 + 9)));
    };
    // [count, sum, max, p50, p99, duration sum ns, duration p99 ns, estimated, incomplete]
    const want = [
      [100, 5050, 100, 50, 99, 5_050_000, 99_000, 0, 10],
      [3000, 4_501_500, 3000, 1976, 2980, 3e9, 1e6, 1, 0],
      [2, 3, 2, 1, 2, 30, 20, 0, 1],
      [0, 0, 0, 0, 0, 0, 0, 0, 0],
      [0, 0, 0, 0, 0, 0, 0, 0, 0],
    ];
    expect(read()).toEqual(want);
    sampler.close();
    expect(ch.closed).toBe(true);
    expect(read()).toEqual(want);
  });
});

describeBpf('request ends', () => {
  async function serve(handler: http.RequestListener): Promise<string> {
    const server = http.createServer(handler);
    const base = await listen(server);
    cleanups.push(() => new Promise((r) => server.close(r)));
    return base;
  }

  it('adds no listener to responses, and ends a request whose client left first as 499', async () => {
    const { sampler, tracker, records } = setup();
    const added: number[] = [];
    let answer: (() => void) | undefined;
    const base = await serve((req, res) => {
      const before = res.listenerCount('close') + res.listenerCount('finish');
      trackRequest(tracker, req, res, req.url === '/slow' ? '/slow' : '/fast');
      added.push(res.listenerCount('close') + res.listenerCount('finish') - before);
      if (req.url === '/slow') answer = () => res.end('late'); // only when the test says
      else res.end('ok');
    });
    sampler.start();
    const c = await connect(base);
    c.write('GET /fast HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => records.length === 1);
    c.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => tracker.inFlight === 1 && added.length === 2);
    const closedAt = process.hrtime.bigint();
    c.destroy(); // before /slow's response
    await until(() => records.length === 2);
    // Ended at the close, not when the server got round to answering: it has not yet.
    const answeredAt = process.hrtime.bigint();
    answer!();
    sampler.stop();
    expect(added).toEqual([0, 0]);
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([
      ['/fast', 200],
      ['/slow', 499],
    ]);
    expect(records[1].endNs).toBeGreaterThanOrEqual(Number(closedAt));
    expect(records[1].endNs).toBeLessThan(Number(answeredAt));
    expect(tracker.inFlight).toBe(0);
  });

  it('ends a request tracked only after its client left as 499, on a new or a kept-alive connection', async () => {
    const { sampler, tracker, records } = setup();
    const arrived = new Set<string>();
    const base = await serve((req, res) => {
      arrived.add(req.url!);
      if (req.url === '/first') {
        trackRequest(tracker, req, res, '/first');
        res.end('ok');
        return;
      }
      // A handler that reaches the tracker late (after a slow auth check, say): by then the
      // client has gone, and the connection's close (emitted a tick after it is destroyed) has
      // been and gone.
      const waitForClose = () => {
        if (!req.socket.destroyed) return setTimeout(waitForClose, 5);
        setTimeout(() => trackRequest(tracker, req, res, req.url!), 5);
      };
      waitForClose();
    });
    sampler.start();
    // First request on its connection: no close listener was ever added to it.
    const c1 = await connect(base);
    c1.write('GET /late-new HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => arrived.has('/late-new'));
    c1.destroy();
    await until(() => records.length === 1);
    // Second request on a kept-alive connection whose first was tracked and answered.
    const c2 = await connect(base);
    c2.write('GET /first HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => records.length === 2);
    c2.write('GET /late-kept HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => arrived.has('/late-kept'));
    c2.destroy();
    await until(() => records.length === 3);
    sampler.stop();
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([
      ['/late-new', 499],
      ['/first', 200],
      ['/late-kept', 499],
    ]);
    expect(tracker.inFlight).toBe(0);
  });

  it('ends a request whose connection the server closed before answering as 500 (a timeout, a destroy() with an error or none), one the client closed or reset as 499', async () => {
    const { sampler, tracker, records } = setup();
    const base = await serve((req, res) => {
      trackRequest(tracker, req, res, req.url!);
      // What server.timeout sets on each connection: Node's server destroys it when it fires.
      if (req.url === '/idle-timeout') req.socket.setTimeout(20);
      if (req.url === '/handler-timeout') req.setTimeout(20, () => req.destroy());
      if (req.url === '/error') setTimeout(() => res.destroy(new Error('db down')), 20);
      // Ended gracefully, unanswered: the client's FIN follows, and the close reads as the client's (README).
      if (req.url === '/server-end') setTimeout(() => req.socket.end(), 20);
    });
    sampler.start();
    for (const [i, p] of ['/idle-timeout', '/handler-timeout', '/error', '/server-end', '/client-end', '/client-reset'].entries()) {
      const c = await connect(base);
      const closed = new Promise((r) => c.on('close', r));
      c.on('error', () => {});
      c.write(`GET ${p} HTTP/1.1\r\nHost: x\r\n\r\n`);
      await until(() => tracker.inFlight === 1);
      if (p === '/client-end') c.end();
      if (p === '/client-reset') c.resetAndDestroy();
      await closed;
      await until(() => records.length === i + 1);
    }
    sampler.stop();
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([
      ['/idle-timeout', 500],
      ['/handler-timeout', 500],
      ['/error', 500],
      ['/server-end', 499],
      ['/client-end', 499],
      ['/client-reset', 499],
    ]);
  });

  it("records the status Node's server answered with itself: 408 past requestTimeout, 431 for oversized headers; 499 for an abandoned upload", async () => {
    const { sampler, tracker, records } = setup();
    const servers: http.Server[] = [];
    const start = async (clientError: boolean) => {
      // Node checks requestTimeout every connectionsCheckingInterval (30 s by default).
      const server = http.createServer({ requestTimeout: 150, connectionsCheckingInterval: 20, maxHeaderSize: 1024 }, (req, res) => {
        if (req.url === '/hold') {
          trackRequest(tracker, req, res, '/hold');
          setTimeout(() => res.end('late'), 300);
          return;
        }
        if (req.url === '/head') {
          // Headers built, not written: Node still answers the timeout itself.
          trackRequest(tracker, req, res, '/head');
          res.writeHead(201);
          req.resume();
          req.on('end', () => res.end('stored'));
          return;
        }
        trackRequest(tracker, req, res, clientError ? '/upload-own' : '/upload');
        req.resume();
        req.on('end', () => res.end('stored'));
      });
      if (clientError) server.on('clientError', (_e, socket) => socket.destroy());
      servers.push(server);
      cleanups.push(() => new Promise((r) => server.close(r)));
      return listen(server);
    };
    const answer = async (base: string, text: string, clientEnds = false) => {
      const c = await connect(base);
      let got = '';
      c.on('data', (d: Buffer) => (got += d.toString()));
      const closed = new Promise((r) => c.on('close', r));
      if (clientEnds) c.end(text);
      else c.write(text);
      await closed;
      return got.split('\r\n', 1)[0];
    };
    sampler.start();
    const plain = await start(false);
    const own = await start(true);
    // A body that never arrives in full.
    const slow = 'POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab';
    expect(await answer(plain, slow)).toBe('HTTP/1.1 408 Request Timeout');
    // With a 'clientError' listener the answer, if any, is the application's: not known here.
    expect(await answer(own, slow)).toBe('');
    // A second request, pipelined behind one not answered yet, with headers over maxHeaderSize:
    // Node's 431 goes out before any response, so the client reads it as the first one's.
    const big = `GET /hold HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(2000)}\r\n\r\n`;
    expect(await answer(plain, big)).toBe('HTTP/1.1 431 Request Header Fields Too Large');
    expect(await answer(plain, slow.replace('/upload', '/head'))).toBe('HTTP/1.1 408 Request Timeout');
    // A client that gives up its upload (closes its side mid-body): Node's parser fails at the
    // end of input and Node answers 400 to nobody; the client left.
    await answer(plain, slow, true);
    await until(() => records.length === 5);
    sampler.stop();
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([
      ['/upload', 408],
      ['/upload-own', 499],
      ['/hold', 431],
      ['/head', 408],
      ['/upload', 499],
    ]);
    expect(tracker.inFlight).toBe(0);
  });

  it('ends a pipelined response that never got the socket as 499 when the client leaves, though it was ready', async () => {
    const { sampler, tracker, records } = setup();
    const base = await serve((req, res) => {
      if (req.url === '/slow') {
        trackRequest(tracker, req, res, '/slow');
        setTimeout(() => res.end('s'), 300);
      } else {
        trackRequest(tracker, req, res, '/fast');
        res.writeHead(201).end('f'); // queued behind /slow's response
      }
    });
    sampler.start();
    const c = await connect(base);
    let got = '';
    c.on('data', (d) => (got += String(d)));
    c.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => tracker.inFlight === 2);
    await new Promise((r) => setTimeout(r, 50));
    c.destroy(); // neither response was sent
    await until(() => records.length === 2);
    sampler.stop();
    expect(got).toBe('');
    expect(records.map((r) => [r.route, r.statusCode]).sort()).toEqual([
      ['/fast', 499],
      ['/slow', 499],
    ]);
  });

  it('matches pipelined responses to their requests, skipping untracked ones on the same connection', async () => {
    const { sampler, tracker, records } = setup();
    const base = await serve((req, res) => {
      if (req.url === '/a') {
        trackRequest(tracker, req, res, '/a');
        setTimeout(() => res.writeHead(201).end('a'), 20);
      } else if (req.url === '/b') {
        trackRequest(tracker, req, res, '/b');
        res.writeHead(202).end('b');
      } else {
        res.end('untracked');
      }
    });
    // A server nobody tracks: its responses go through the same channel.
    const otherBase = await serve((_req, res) => res.end('other'));
    sampler.start();
    const c = await connect(base);
    let got = '';
    c.on('data', (d) => (got += String(d)));
    c.write('GET /skip HTTP/1.1\r\nHost: x\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /skip HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n');
    const o = await connect(otherBase);
    o.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => (got.match(/HTTP\/1.1/g) ?? []).length === 4 && records.length === 2);
    sampler.stop();
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([
      ['/a', 201],
      ['/b', 202],
    ]);
    expect(tracker.inFlight).toBe(0);
    c.destroy();
    o.destroy();
    await new Promise((r) => setTimeout(r, 20));
    expect(records).toHaveLength(2); // the connections' close ends nothing more
  });

  it('counts once a request tracked again after it ended behind a pipelined one, or by a second tracker, first or again', async () => {
    const { sampler, tracker, records } = setup();
    const second = new RequestTracker(sampler);
    cleanups.push(() => second.close());
    const seconds: RequestRecord[] = [];
    second.onRequest((rs) => seconds.push(...rs));
    const again = (req: http.IncomingMessage, res: http.ServerResponse, route: string) =>
      res.on('finish', () =>
        setImmediate(() => {
          trackRequest(tracker, req, res, route);
          trackRequest(second, req, res, route);
        }),
      );
    const base = await serve((req, res) => {
      if (req.url === '/a') {
        // Ends while /b, pipelined behind it, is in flight: /b takes its place in the
        // connection's entry, and /a is found again by a mark on itself.
        trackRequest(tracker, req, res, '/a');
        again(req, res, '/a');
        setTimeout(() => res.writeHead(201).end('a'), 10);
      } else if (req.url === '/c') {
        // Ended as the connection's last, then tracked by a second tracker for the first time:
        // counted at once for that one, and neither tracker counts it again.
        trackRequest(tracker, req, res, '/c');
        res.on('finish', () =>
          setImmediate(() => {
            trackRequest(second, req, res, '/c');
            trackRequest(tracker, req, res, '/c');
            trackRequest(second, req, res, '/c');
          }),
        );
        res.writeHead(203).end('c');
      } else {
        // Two trackers on one response: the connection's entry keeps one, the other is marked.
        trackRequest(tracker, req, res, '/b');
        trackRequest(second, req, res, '/b');
        again(req, res, '/b');
        setTimeout(() => res.writeHead(202).end('b'), 40);
      }
    });
    sampler.start();
    const c = await connect(base);
    let got = '';
    c.on('data', (d) => (got += String(d)));
    c.write('GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => (got.match(/HTTP\/1.1/g) ?? []).length === 2 && records.length === 2 && seconds.length === 2);
    c.write('GET /c HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => records.length === 3 && seconds.length === 3);
    await new Promise((r) => setTimeout(r, 80)); // several collections: room for a duplicate to show
    sampler.stop();
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([
      ['/a', 201],
      ['/b', 202],
      ['/c', 203],
    ]);
    // The second tracker first saw /a and /c when tracked after their end: counted then, once.
    expect(seconds.map((r) => [r.route, r.statusCode]).sort()).toEqual([
      ['/a', 201],
      ['/b', 202],
      ['/c', 203],
    ]);
    expect(tracker.inFlight + second.inFlight).toBe(0);
    c.destroy();
    await new Promise((r) => setTimeout(r, 20));
    expect(records).toHaveLength(3); // the connection's close ends nothing more
    expect(seconds).toHaveLength(3);
  });

  it('counts a request tracked twice by one tracker once, keeps what the server sent when it cut the connection, and takes fake sockets', async () => {
    const { sampler, tracker, records } = setup();
    const base = await serve((req, res) => {
      if (req.url === '/twice') {
        trackRequest(tracker, req, res, '/twice'); // e.g. middleware mounted twice
        trackRequest(tracker, req, res, '/twice');
        res.end('ok');
      } else if (req.url === '/wrapped') {
        // A wrapper around the response that does not name the request: watched with listeners
        // (a connection finds its request by its response's), and still counted once.
        const wrapped = Object.create(res, { req: { value: undefined } }) as http.ServerResponse;
        trackRequest(tracker, req, wrapped, '/wrapped');
        trackRequest(tracker, req, wrapped, '/wrapped');
        res.statusCode = 202;
        res.end('ok');
      } else {
        trackRequest(tracker, req, res, '/fail');
        res.writeHead(500);
        res.destroy(); // the server fails mid-response: not the client's doing
      }
    });
    sampler.start();
    const c = await connect(base);
    c.write('GET /twice HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => records.length === 1);
    expect(tracker.inFlight).toBe(0); // at the response, not at the connection's close
    const c2 = await connect(base);
    c2.write('GET /fail HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => records.length === 2);
    c2.destroy();
    const c3 = await connect(base);
    c3.write('GET /wrapped HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => records.length === 3);
    expect(tracker.inFlight).toBe(0); // at the response, not at the connection's close
    // An adapter's request on a fake socket (serverless-http builds one from a plain object).
    const req = new http.IncomingMessage({} as never);
    const res = new http.ServerResponse(req);
    expect(() => trackRequest(tracker, req, res, '/adapter')).not.toThrow();
    trackRequest(tracker, req, res, '/adapter'); // twice here too: once
    expect(tracker.inFlight).toBe(1);
    res.statusCode = 201;
    res.emit('finish');
    await until(() => records.length === 4);
    sampler.stop();
    c.destroy();
    c3.destroy();
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([
      ['/twice', 200],
      ['/fail', 500],
      ['/wrapped', 202],
      ['/adapter', 201],
    ]);
  });

  it("puts its wrapper of ServerResponse's end() in place with the tracker, keeps it between requests, and takes it off when the tracker closes", async () => {
    const nodeEnd = http.ServerResponse.prototype.end;
    expect(endWrapped()).toBe(false);
    const { sampler, tracker, records } = setup();
    // Before any request: code that keeps a response's end() for later keeps the wrapper.
    expect(endWrapped()).toBe(true);
    const base = await serve((req, res) => {
      trackRequest(tracker, req, res, '/x');
      res.end('ok');
    });
    sampler.start();
    const c = await connect(base);
    c.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => records.length === 1);
    // Nothing in flight now: wrapping again at every request would cost more than all the rest.
    expect(endWrapped()).toBe(true);
    tracker.close();
    expect(endWrapped()).toBe(false);
    expect(http.ServerResponse.prototype.end).toBe(nodeEnd);
    expect(Object.prototype.hasOwnProperty.call(http.ServerResponse.prototype, 'end')).toBe(false);
    sampler.stop();
    c.destroy();
  });

  it('a response that end() leaves partly buffered ends at its finish, once, and at its connection\'s close if that comes first', async () => {
    const { sampler, tracker, records } = setup();
    const body = Buffer.alloc(32 << 20, 'x'); // more than loopback's socket buffers take at once
    const ended: string[] = [];
    const base = await serve((req, res) => {
      trackRequest(tracker, req, res, req.url!);
      res.end(body);
      ended.push(req.url!);
    });
    sampler.start();
    // A client that reads nothing for 300 ms: the response's end() has returned, its body waits.
    const c = await connect(base);
    c.pause();
    c.write('GET /read HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => ended.length === 1);
    await new Promise((r) => setTimeout(r, 300));
    expect(tracker.inFlight).toBe(1);
    let got = 0;
    c.on('data', (d: Buffer) => (got += d.length));
    c.resume();
    await until(() => records.length === 1, 5000);
    expect(got).toBeGreaterThan(body.length);
    expect(records[0]).toMatchObject({ route: '/read', statusCode: 200 });
    // Its duration runs to the finish, past the 300 ms its body waited.
    expect(records[0].durationNs).toBeGreaterThan(300e6);
    // A client that leaves with the body unread: ended by the connection's close, with the status
    // sent, and the finish that never comes (or comes late) ends nothing more.
    const d = await connect(base);
    d.pause();
    d.write('GET /leave HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => ended.length === 2);
    d.destroy();
    await until(() => records.length === 2);
    await new Promise((r) => setTimeout(r, 100));
    sampler.stop();
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([
      ['/read', 200],
      ['/leave', 200],
    ]);
    expect(tracker.inFlight).toBe(0);
    c.destroy();
  });

  it('a request still in flight when its tracker closes ends, and frees its span slot', async () => {
    const { sampler, tracker } = setup();
    let respond = () => {};
    const base = await serve((req, res) => {
      trackRequest(tracker, req, res, '/slow');
      respond = () => res.end('ok');
    });
    sampler.start();
    const c = await connect(base);
    c.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => tracker.inFlight === 1);
    tracker.close();
    respond();
    const channel = sampler.spanChannel();
    // The result timer runs while a span awaits its result, and stops 200 ms after the last.
    await until(() => !channel.polling, 3000);
    expect(channel.polling).toBe(false);
    c.destroy();
  });

  it('a closed tracker, or a closed sampler, still records the requests in flight (exact mode: measured to the end)', async () => {
    for (const mode of ['shared', 'exact'] as const) {
      for (const closing of ['tracker', 'sampler'] as const) {
        const { sampler, tracker, records } = setup(mode);
        const base = await serve((req, res) => {
          trackRequest(tracker, req, res, '/later', () =>
            setTimeout(() => {
              busy(2);
              res.statusCode = 202;
              res.end('ok');
            }, 30),
          );
        });
        sampler.start();
        const c = await connect(base);
        c.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
        await until(() => tracker.inFlight === 1);
        if (closing === 'tracker') tracker.close();
        else sampler.close();
        await until(() => records.length === 1);
        await until(() => tracker.inFlight === 0);
        const what = `${mode}, ${closing} closed`;
        expect(records.map((r) => [r.route, r.statusCode, r.incomplete]), what).toEqual([['/later', 202, closing === 'sampler']]);
        expect(tracker.inFlight, what).toBe(0);
        // The tracker kept measuring: the 2 ms spin after close() counts (in exact mode, through the
        // async hook it kept). Half of it at least, though the spin is of this thread's own CPU;
        // one that stopped at close() would miss the spin, its request otherwise idle (a 30 ms timer).
        if (closing === 'tracker') expect(records[0].onCpuNs, what).toBeGreaterThan(1e6);
        if (closing === 'tracker') sampler.stop();
        c.destroy();
      }
    }
  });

  it('a request tracked after its response finished ends at once and counts once however often it is tracked; tracked again after its client left, it still counts once', async () => {
    const { sampler, tracker, records } = setup();
    const mw = energyMiddleware(tracker);
    const app = express();
    app.use(mw);
    app.use((_req, _res, next) => void setTimeout(next, 60)); // the client gives up meanwhile
    app.use(mw); // mounted twice
    app.get('/gone', (_req, res) => void res.send('late'));
    const base = await serve((req, res) => {
      if (req.url === '/gone') return void app(req, res);
      if (req.url === '/both') trackRequest(tracker, req, res, '/both');
      res.statusCode = 202;
      res.end('y');
      // Tracked (again) once the response finished: once more counts nothing.
      res.on('finish', () =>
        setImmediate(() => {
          trackRequest(tracker, req, res, '/after');
          trackRequest(tracker, req, res, '/after');
        }),
      );
    });
    sampler.start();
    const c = await connect(base);
    c.write('GET /after HTTP/1.1\r\nHost: x\r\n\r\n');
    // On a connection kept open: not at its close (as 499), but now.
    await until(() => records.length === 1);
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([['/after', 202]]);
    expect(tracker.inFlight).toBe(0);
    c.write('GET /both HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => records.length === 2);
    await new Promise((r) => setTimeout(r, 60)); // three collections: room for a duplicate to show
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([['/after', 202], ['/both', 202]]);
    const c2 = await connect(base);
    c2.write('GET /gone HTTP/1.1\r\nHost: x\r\n\r\n');
    await new Promise((r) => setTimeout(r, 20));
    c2.destroy();
    await new Promise((r) => setTimeout(r, 150));
    sampler.stop();
    c.destroy();
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([
      ['/after', 202],
      ['/both', 202],
      ['(unmatched)', 499],
    ]);
  });

  it('HTTP/2: a stream the client resets before the response counts as 499, also when tracked after the reset', async () => {
    const { sampler, tracker, records } = setup();
    const server = http2.createServer((req, res) => {
      if (req.url === '/late') {
        req.stream.once('close', () => trackRequest(tracker, req as never, res as never, '/late'));
        return;
      }
      trackRequest(tracker, req as never, res as never, '/hang');
      res.statusCode = 201; // chosen, never sent
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => server.close(r)));
    sampler.start();
    const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    cleanups.push(() => void client.destroy());
    for (const p of ['/hang', '/late']) {
      const stream = client.request({ ':path': p });
      stream.on('error', () => {});
      await new Promise((r) => setTimeout(r, 40));
      stream.close(http2.constants.NGHTTP2_CANCEL);
    }
    await until(() => records.length === 2);
    sampler.stop();
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([
      ['/hang', 499],
      ['/late', 499],
    ]);
    expect(tracker.inFlight).toBe(0);
  });

  it('HTTP/2: a stream the server destroys before the response counts as 500 (with an error or none), one whose client drops its connection as 499', async () => {
    const { sampler, tracker, records } = setup();
    const server = http2.createServer((req, res) => {
      trackRequest(tracker, req as never, res as never, req.url);
      if (req.url === '/destroy') setTimeout(() => res.stream.destroy(), 20);
      if (req.url === '/error') setTimeout(() => res.destroy(new Error('db down')), 20);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => server.close(r)));
    const port = (server.address() as AddressInfo).port;
    sampler.start();
    for (const [i, p] of ['/destroy', '/error', '/client-reset'].entries()) {
      let socket: net.Socket | undefined;
      const client = http2.connect(`http://127.0.0.1:${port}`, { createConnection: () => (socket = net.connect(port, '127.0.0.1')) });
      client.on('error', () => {});
      cleanups.push(() => void client.destroy());
      const stream = client.request({ ':path': p });
      stream.on('error', () => {});
      const closed = new Promise((r) => stream.on('close', r));
      await until(() => tracker.inFlight === 1);
      if (p === '/client-reset') socket!.resetAndDestroy();
      await closed;
      await until(() => records.length === i + 1);
    }
    sampler.stop();
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([
      ['/destroy', 500],
      ['/error', 500],
      ['/client-reset', 499],
    ]);
  });

  it("Fastify's inject() (no HTTP server) is tracked through the response", async () => {
    const { sampler, tracker, records } = setup();
    const app = Fastify();
    await app.register(fastifyEnergy, { tracker });
    app.get('/items/:id', async (req, reply) => reply.code((req.params as { id: string }).id === '0' ? 404 : 200).send('x'));
    await app.ready();
    cleanups.push(() => app.close());
    sampler.start();
    for (const id of ['1', '0', '2']) await app.inject({ url: `/items/${id}` });
    await until(() => records.length === 3);
    sampler.stop();
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([
      ['/items/:id', 200],
      ['/items/:id', 404],
      ['/items/:id', 200],
    ]);
  });

  it("exact mode: a reply sent inside the request's first callback (inject()) keeps its status", async () => {
    const { sampler, tracker, records } = setup('exact');
    const app = Fastify();
    await app.register(fastifyEnergy, { tracker });
    app.get('/sync', (_req, reply) => {
      reply.code(203).send('x');
    });
    await app.ready();
    cleanups.push(() => app.close());
    sampler.start();
    await app.inject({ url: '/sync' });
    await until(() => records.length === 1);
    sampler.stop();
    expect(records.map((r) => [r.route, r.statusCode, r.mode])).toEqual([['/sync', 203, 'exact']]);
  });
});

describeBpf('requests on a thread the tracker had no slot for', () => {
  it('settle unmeasured (NaN joules, incomplete), not as 0 J, and stay out of routes()', async () => {
    // A sampler made in a worker, with a slot for every thread but the worker's own.
    const index = JSON.stringify(path.join(__dirname, '..', 'dist/cjs/index.js'));
    const code = `
      const fs = require('node:fs');
      const { parentPort } = require('node:worker_threads');
      const { Sampler, RequestTracker } = require(${index});
      const s = new Sampler({ source: 'model', threads: 'bpf', maxThreads: fs.readdirSync('/proc/self/task').length - 1, intervalUs: 1000 });
      s.start();
      const tracker = new RequestTracker(s);
      const records = [];
      tracker.onRequest((r) => records.push(...r));
      const t = tracker.start('GET', '/x');
      const until = performance.now() + 50;
      while (performance.now() < until);
      tracker.end(t, 200);
      setTimeout(() => {
        s.stop();
        parentPort.postMessage({ records: JSON.stringify(records), routes: tracker.routes().length, dropped: s.stats().threads.droppedThreads });
        s.close();
      }, 100);`;
    const { Worker } = await import('node:worker_threads');
    const w = new Worker(code, { eval: true });
    const m = await new Promise<{ records: string; routes: number; dropped: number }>((resolve, reject) => (w.once('message', resolve), w.once('error', reject)));
    expect(m.dropped).toBeGreaterThan(0);
    const records = JSON.parse(m.records) as Array<Record<string, unknown>>;
    // JSON writes NaN as null.
    expect(records).toMatchObject([{ route: '/x', statusCode: 200, joules: null, onCpuNs: null, incomplete: true }]);
    expect(m.routes).toBe(0);
  });
});

describe("request tracking beside users' span labels", () => {
  // Requests' spans had labels of their own, interned at their first use: once users' labels had
  // reached the limit, every shared-mode request begun through beginShared() threw RangeError out
  // of track(), and exact mode's callbacks went unmeasured.
  it("tracks requests in either mode once the thread's span labels are used up", async () => {
    const { sampler, tracker, ch, records, settled } = exactProcfs();
    const shared = new RequestTracker(sampler);
    cleanups.push(() => shared.close());
    const sharedRecords: RequestRecord[] = [];
    shared.onRequest((rs) => sharedRecords.push(...rs));
    sampler.start();
    let last = 0;
    for (let i = 0; i < 65_536; i++) sampler.end((last = sampler.begin(`path ${i}`)));
    await sampler.settle(last);
    expect(() => sampler.begin('one more')).toThrow(RangeError);
    // The result timer idle, a request begins through beginShared(), as after any quiet spell.
    await until(() => !ch.polling);
    expect(ch.polling).toBe(false);
    const t = shared.start('GET', '/shared')!;
    busy(2);
    shared.end(t, 200);
    // Begun in a callback, as a server's request is: that callback is its first span.
    const e = await new Promise<RequestToken>((resolve) => setTimeout(() => resolve(tracker.start('GET', '/exact')!), 0));
    await until(() => settled.callbacks === 1);
    tracker.end(e, 200);
    await until(() => sharedRecords.length === 1 && records.length === 1);
    sampler.stop();
    for (const r of [...sharedRecords, ...records]) {
      expect(r, JSON.stringify(r)).toMatchObject({ incomplete: false });
      expect(r.joules, JSON.stringify(r)).toBeGreaterThan(0);
    }
    expect([...sharedRecords, ...records].map((r) => [r.route, r.mode])).toEqual([
      ['/shared', 'shared'],
      ['/exact', 'exact'],
    ]);
  });
});

describe('exact mode edges', () => {
  // serverless-http and other adapters build the response themselves; its status is theirs.
  it.each(['shared', 'exact'] as const)('%s mode: ends a request whose response holds no HTTP status, as status 0', async (mode) => {
    const { sampler, tracker, records } = setup(mode);
    sampler.start();
    const req = new http.IncomingMessage({} as never);
    req.method = 'GET';
    const res = new http.ServerResponse(req);
    res.statusCode = undefined as unknown as number;
    trackRequest(tracker, req, res, '/fake');
    res.emit('finish');
    await until(() => records.length === 1);
    sampler.stop();
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([['/fake', 0]]);
    // Ended: nothing left in flight to keep the tracker's hooks on.
    expect(tracker.inFlight).toBe(0);
  });

  it('exact mode: a callback of a request while the sampler is stopped is not measured, and no span begun for it (no error made and thrown each time)', async () => {
    // Each await of a request in flight across stop() called beginInternal(), which built and
    // threw a JouletraceError that #openFor() caught: 1,000 awaits, 1,000 errors (25.9 µs per
    // await against 3.7 while running).
    const { sampler, tracker, ch, records } = exactProcfs();
    sampler.start();
    await until(() => sampler.stats().timing.samples >= 5);
    const begin = vi.spyOn(ch, 'beginInternal');
    cleanups.push(() => begin.mockRestore());
    const counts = { running: 0, stopped: 0, threw: 0 };
    let done!: Promise<void>;
    const token = tracker.start('GET', '/long', () => {
      done = (async () => {
        for (let i = 0; i < 100; i++) await null;
        counts.running = begin.mock.calls.length;
        sampler.stop();
        const before = begin.mock.calls.length;
        for (let i = 0; i < 1000; i++) await null;
        counts.stopped = begin.mock.calls.length - before;
        counts.threw = begin.mock.results.filter((r) => r.type === 'throw').length;
      })();
    });
    await done;
    tracker.end(token, 200);
    await until(() => records.length === 1);
    expect(counts.running).toBeGreaterThanOrEqual(100);
    expect([counts.stopped, counts.threw]).toEqual([0, 0]);
    expect(records.map((r) => [r.route, r.incomplete])).toEqual([['/long', true]]);
    // Measured in part: routes() says so.
    expect(tracker.routes().map((r) => [r.route, r.count, r.incomplete])).toEqual([['/long', 1, 1]]);
  });

  itBpf('exact mode: a callback that runs a nested async scope is charged whole, before and after it', async () => {
    const { sampler, tracker, records } = setup('exact');
    const outside = new AsyncResource('outside');
    const server = http.createServer((req, res) => {
      const nested = req.url === '/nested';
      trackRequest(tracker, req, res, nested ? '/nested' : '/flat', () => {
        busy(1);
        // Its own before and after: the rest of this callback was charged to nobody.
        if (nested) outside.runInAsyncScope(() => {});
        busy(2);
        res.end();
      });
    });
    const base = await listen(server);
    cleanups.push(() => new Promise((r) => server.close(r)));
    sampler.start();
    await load(base, [{ path: '/nested', count: 20 }, { path: '/flat', count: 20 }], 1);
    await new Promise((r) => setTimeout(r, 50));
    sampler.stop();
    const cpu = (route: string) => {
      const rs = records.filter((r) => r.route === route);
      expect(rs).toHaveLength(20);
      return rs.reduce((a, r) => a + r.onCpuNs, 0) / rs.length;
    };
    // 3 ms of the callback's own CPU in both; a nested scope that stopped the charging left 1.
    expect(cpu('/nested') / cpu('/flat')).toBeGreaterThan(0.8);
  });

  itBpf("exact mode: a callback that starts another unit with start(run) is charged its work after start() returns, whether run returns, throws or enters a third", async () => {
    const { sampler, tracker, records } = setup('exact');
    sampler.start();
    // A job begun from a request's callback (an e-mail to send): run is the job's, and what the
    // callback does once start() has returned is its request's again (it was charged to nobody).
    let entered: RequestToken | undefined;
    for (const how of ['returns', 'throws', 'enters'] as const) {
      let fired!: () => void;
      const done = new Promise<void>((r) => (fired = r));
      const t = tracker.start('JOB', `/order-${how}`, () => {
        setTimeout(() => {
          busy(1);
          try {
            const job = tracker.start('JOB', `/job-${how}`, () => {
              busy(1);
              if (how === 'throws') throw new Error('job failed');
              // Entered for the rest of run only: AsyncLocalStorage gives the caller back its own
              // context as run returns (this request kept the order's spin).
              if (how === 'enters') entered = tracker.start('JOB', '/entered');
            });
            tracker.end(job, 200);
          } catch {
            // The job ended with status 500.
          }
          busy(3);
          fired();
        }, 1);
      });
      await done;
      tracker.end(t, 200);
    }
    tracker.end(entered, 200);
    await recordsFor(records, 7);
    sampler.stop();
    const record = (route: string) => records.find((r) => r.route === route)!;
    for (const how of ['returns', 'throws', 'enters']) {
      // 4 ms of the order's own CPU: 1 before the job, 3 after (1.1 ms read when the 3 went uncharged).
      expect(record(`/order-${how}`).onCpuNs, how).toBeGreaterThan(3e6);
      expect(record(`/job-${how}`).onCpuNs, how).toBeLessThan(2e6);
    }
    expect(record('/job-throws').statusCode).toBe(500);
    expect(record('/entered').onCpuNs).toBeLessThan(1e6);
    expect(records).toHaveLength(7);
  });

  itBpf('exact mode: a request idle across stop() and start() is measured whole; one whose callback the stop cut, or ran while stopped, is incomplete', async () => {
    const { sampler, tracker, records } = setup('exact');
    sampler.start();
    // A request of 1 ms of CPU, then laterMs more in a later callback, when `later` is called.
    const begin = (route: string, laterMs = 2) => {
      let later!: () => void;
      const gate = new Promise<void>((r) => (later = r));
      let after!: Promise<void>;
      const t = tracker.start('JOB', route, () => {
        busy(1);
        after = gate.then(() => busy(laterMs));
      });
      return { t, resume: () => (later(), after) };
    };
    // Idle while the sampler stops and starts again: a request is its callbacks, none running.
    const idle = begin('/idle');
    sampler.stop();
    sampler.start();
    await idle.resume();
    tracker.end(idle.t, 200);
    // Its later callback runs while the sampler is stopped: unmeasured. 20 ms, far above what the
    // measured 1 ms can come to: a span's share of an interval's on-CPU time follows its wall time,
    // which a preemption during it stretches (4.51 ms once, in a CI run, against a bound of 2).
    const stopped = begin('/while-stopped', 20);
    sampler.stop();
    await stopped.resume();
    sampler.start();
    tracker.end(stopped.t, 200);
    // The sampler stops (and starts) inside its callback: that callback settles at the stop.
    const cut = tracker.start('JOB', '/cut', () => {
      busy(1);
      sampler.stop();
      sampler.start();
    });
    tracker.end(cut, 200);
    await recordsFor(records, 3);
    sampler.stop();
    const record = (route: string) => records.find((r) => r.route === route)!;
    expect(records.map((r) => [r.route, r.statusCode, r.incomplete])).toEqual([
      ['/idle', 200, false],
      ['/while-stopped', 200, true],
      ['/cut', 200, true],
    ]);
    // 3 ms: both callbacks, the one after the restart too.
    expect(record('/idle').onCpuNs).toBeGreaterThan(2e6);
    // 1 ms: the callback while stopped (20 ms) is not in it.
    expect(record('/while-stopped').onCpuNs).toBeLessThan(10e6);
  });

  // Each callback span of an exact-mode request counted as settled: 10 requests and a span read 65.
  it("exact mode: stats().spans.settled counts spans and shared-mode requests; callbacks, a request's callback spans", async () => {
    const { sampler, tracker, records, settled } = exactProcfs();
    const shared = new RequestTracker(sampler);
    cleanups.push(() => shared.close());
    const sharedRecords: RequestRecord[] = [];
    shared.onRequest((rs) => sharedRecords.push(...rs));
    sampler.start();
    for (let i = 0; i < 3; i++) {
      const t = await new Promise<RequestToken>((resolve) => setTimeout(() => resolve(tracker.start('GET', '/exact')!), 0));
      tracker.end(t, 200);
    }
    shared.end(shared.start('GET', '/shared')!, 200);
    const h = sampler.begin('span');
    sampler.end(h);
    await sampler.settle(h);
    await until(() => records.length === 3 && sharedRecords.length === 1);
    sampler.stop();
    expect(records.length).toBe(3);
    expect(settled.callbacks).toBeGreaterThanOrEqual(3);
    expect(sampler.stats().spans).toMatchObject({ settled: 2, callbacks: settled.callbacks });
  });

  it("exact mode: the result timer a request's callback starts, and the batches of records, run in no request's context", async () => {
    const { sampler, tracker, ch, settled } = exactProcfs();
    const mine = new AsyncLocalStorage<string>();
    const contexts: unknown[] = [];
    tracker.onRequest(() => contexts.push(mine.getStore()));
    sampler.start();
    await until(() => !ch.polling);
    expect(ch.polling).toBe(false);
    // Begun in a callback of its own, as a server's request is: its first callback span starts the
    // timer. Made in the request's context, the timer's every tick was charged to it while it was
    // open, and kept it alive.
    const t = await new Promise<RequestToken>((resolve) => mine.run('request', () => setTimeout(() => resolve(tracker.start('GET', '/long')!), 0)));
    expect(ch.polling).toBe(true);
    await until(() => settled.callbacks === 1);
    await new Promise((r) => setTimeout(r, 250)); // a dozen ticks of the timer, or its stop
    expect(settled.callbacks).toBe(1);
    // Its callback settled: its end queues its record at once, where end() is called.
    mine.run('elsewhere', () => tracker.end(t, 200));
    await until(() => contexts.length === 1);
    expect(contexts).toEqual([undefined]);
    expect(tracker.inFlight).toBe(0);
  });

  it('listeners run in no context even when jouletrace was loaded inside one', async () => {
    // In a child process, which loads jouletrace afresh inside an AsyncLocalStorage context.
    const dist = path.join(__dirname, '..', 'dist/cjs/index.js');
    const { stdout } = await run(process.execPath, [path.join(__dirname, 'fixtures/load-in-context.cjs'), dist]);
    // A scope made as the package loaded held that context: every timer tick, onSpan and onRequest
    // batch ran in it, and it stayed reachable for good.
    expect(JSON.parse(stdout)).toEqual({ onSpan: [null], exact: [null], shared: [null] });
  });

  it("exact mode: a request's callback that queues another request's record is one callback span", async () => {
    const { sampler, tracker, records, settled } = exactProcfs();
    sampler.start();
    const inCallback = <T>(fn: () => T) => new Promise<T>((resolve) => setTimeout(() => resolve(fn()), 0));
    const a = await inCallback(() => tracker.start('GET', '/a')!);
    const b = await inCallback(() => ({ t: tracker.start('GET', '/b')!, scope: new AsyncResource('in b') }));
    await until(() => settled.callbacks === 2);
    // Within a callback of b's, a's end queues its record at once (its callbacks have settled), in
    // the scope outsideRequests() enters: its before and after ended b's callback span and began
    // another.
    b.scope.runInAsyncScope(() => tracker.end(a, 200));
    tracker.end(b.t, 200);
    await until(() => records.length === 2);
    expect(settled.callbacks).toBe(3);
  });

  it("exact mode: a span begun in a request's callback with the result timer off leaves no timer running after close()", async () => {
    const { sampler, tracker, ch } = exactProcfs();
    sampler.start();
    await until(() => !ch.polling);
    // Every interval made from here on, until cleared.
    const live = new Set<unknown>();
    const { setInterval: set, clearInterval: clear } = globalThis;
    globalThis.setInterval = ((...a: Parameters<typeof set>) => {
      const t = set(...a);
      live.add(t);
      return t;
    }) as typeof set;
    globalThis.clearInterval = ((t: Parameters<typeof clear>[0]) => {
      live.delete(t);
      clear(t);
    }) as typeof clear;
    try {
      await new Promise<void>((resolve) =>
        setTimeout(() => {
          const t = tracker.start('GET', '/x');
          // A restart leaves the timer off, and the request's callback span open: the begin()
          // that arms the timer made its hooks begin another callback span, which armed a timer
          // of its own that the first then overwrote, running for ever.
          sampler.stop();
          sampler.start();
          ch.end(ch.begin('user'));
          tracker.end(t, 200);
          resolve();
        }, 0),
      );
      expect(ch.polling).toBe(true);
      expect(live.size).toBe(1);
      tracker.close();
      sampler.close();
      expect(live.size).toBe(0);
    } finally {
      globalThis.setInterval = set;
      globalThis.clearInterval = clear;
      for (const t of live) clear(t as Parameters<typeof clear>[0]);
    }
  });

  it('end() and start() refuse a status, route or method that is none, in either mode', () => {
    const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs' });
    cleanups.push(() => sampler.close());
    for (const mode of ['shared', 'exact'] as const) {
      const tracker = new RequestTracker(sampler, { mode });
      cleanups.push(() => tracker.close());
      sampler.start();
      const token = tracker.start('GET', '/a');
      for (const status of [2 ** 30 + 200, '404', NaN, 99, 1000, 200.5]) {
        // A number out of range is a RangeError, as every option's.
        const kind = typeof status === 'number' && !Number.isNaN(status) ? RangeError : TypeError;
        expect(() => tracker.end(token, status as number), `${mode} ${String(status)}`).toThrow(kind);
        expect(() => tracker.end(token, status as number), `${mode} ${String(status)}`).toThrow(
          `Expected an HTTP status code (an integer from 100 to 999) for statusCode but received`,
        );
      }
      expect(() => tracker.end(token, 200, 42 as unknown as string)).toThrow(new TypeError('Expected a route pattern (a string) for route but received 42 of type number'));
      expect(() => tracker.start(42 as unknown as string, '/a')).toThrow('Expected an HTTP method (a non-empty string) for method but received 42 of type number');
      expect(() => tracker.start('', '/a')).toThrow('for method but received');
      tracker.end(token, 200); // still open after the refusals
      sampler.stop();
    }
  });

  // A tracker of each mode, with its records, on one running sampler (procfs).
  function trackerOfEachMode() {
    const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs' });
    cleanups.push(() => sampler.close());
    sampler.start();
    return (['shared', 'exact'] as const).map((mode) => {
      const tracker = new RequestTracker(sampler, { mode });
      cleanups.push(() => tracker.close());
      const records: RequestRecord[] = [];
      tracker.onRequest((rs) => records.push(...rs));
      return { mode, tracker, records };
    });
  }

  it('start() and track() refuse a run that is no function before the request begins, in either mode', () => {
    for (const { mode, tracker } of trackerOfEachMode()) {
      for (const [bad, shown] of [[5, '5 of type number'], ['x', '"x" of type string'], [{}, '{} of type object']] as const) {
        // Was V8's bare "run is not a function", thrown once the request had begun: in flight for good.
        expect(() => tracker.start('GET', '/bad', bad as unknown as () => void), mode).toThrow(
          new TypeError(`Expected a function (the work to run in the request's context) or undefined for run but received ${shown}`),
        );
        expect(() => tracker.track({ method: 'GET' } as http.IncomingMessage, {} as http.ServerResponse, '/bad', bad as unknown as () => void), mode).toThrow('for run but received');
      }
      expect(tracker.inFlight, mode).toBe(0);
    }
  });

  it('start() ends the request of a run that throws, with status 500, and rethrows, in either mode', async () => {
    for (const { mode, tracker, records } of trackerOfEachMode()) {
      const boom = new Error('user bug');
      expect(() =>
        tracker.start('GET', '/throws', () => {
          throw boom;
        }),
      ).toThrow(boom);
      // No token came back to end it with: it ended there, as a failed request.
      await until(() => records.length === 1);
      expect(records.map((r) => [r.route, r.statusCode]), mode).toEqual([['/throws', 500]]);
      expect(tracker.inFlight, mode).toBe(0);
    }
  });

  it('on a closed sampler start() throws without running run, as on a closed tracker, in either mode', () => {
    for (const mode of ['shared', 'exact'] as const) {
      for (const closing of ['sampler', 'tracker'] as const) {
        const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs' });
        cleanups.push(() => sampler.close());
        const tracker = new RequestTracker(sampler, { mode });
        cleanups.push(() => tracker.close());
        sampler.start();
        if (closing === 'sampler') sampler.close();
        else tracker.close();
        let ran = 0;
        // A hook's `try { start(..., next) } catch { next() }` ran next twice.
        expect(() => tracker.start('GET', '/x', () => ran++), `${mode}, ${closing}`).toThrow(expect.objectContaining({ code: 'ERR_JOULETRACE_CLOSED' }));
        expect(ran, `${mode}, ${closing}`).toBe(0);
      }
    }
  });

  it("exact mode: the async hook goes when the sampler closes with nothing in flight, else as the last request in flight ends", async () => {
    const { sampler, tracker } = exactProcfs();
    sampler.start();
    expect(tracker.hookEnabled).toBe(true);
    sampler.close(); // the tracker left open: its hook cost every callback of the process
    expect(tracker.hookEnabled).toBe(false);

    const second = exactProcfs();
    second.sampler.start();
    const t = await new Promise<RequestToken>((resolve) => setTimeout(() => resolve(second.tracker.start('GET', '/x')!), 0));
    second.sampler.close();
    expect(second.tracker.hookEnabled).toBe(true); // measuring the request in flight
    second.tracker.end(t, 200);
    await until(() => second.records.length === 1);
    expect(second.tracker.hookEnabled).toBe(false);
  });

  it("end() refuses another tracker's token and what is no token, and leaves the request to its own tracker", async () => {
    const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs' });
    cleanups.push(() => sampler.close());
    const make = (mode: 'shared' | 'exact') => {
      const tracker = new RequestTracker(sampler, { mode });
      cleanups.push(() => tracker.close());
      const records: RequestRecord[] = [];
      tracker.onRequest((rs) => records.push(...rs));
      return { tracker, records };
    };
    const exact = make('exact');
    const otherExact = make('exact');
    const shared = make('shared');
    sampler.start();
    const t = exact.tracker.start('GET', '/exact')!;
    const foreign = expect.objectContaining({ code: 'ERR_JOULETRACE_FOREIGN_SPAN', message: expect.stringContaining("another RequestTracker's") });
    expect(() => shared.tracker.end(t, 200)).toThrow(foreign);
    expect(() => otherExact.tracker.end(t, 200)).toThrow(foreign);
    expect([exact.tracker.inFlight, otherExact.tracker.inFlight, shared.tracker.inFlight]).toEqual([1, 0, 0]);
    const s = shared.tracker.start('GET', '/shared')!;
    const plain = {};
    for (const [tracker, bad] of [
      [exact.tracker, plain],
      [exact.tracker, 'abc'],
      [exact.tracker, s], // a shared-mode token: a number
      [shared.tracker, plain],
      [shared.tracker, 'abc'],
      // Numbers no start() returns (a token is a positive integer): refused, not ignored.
      [shared.tracker, -3],
      [shared.tracker, 1.5],
      [shared.tracker, NaN],
      [shared.tracker, 0],
      [shared.tracker, -s],
    ] as const) {
      expect(() => tracker.end(bad as never, 200), `${tracker.mode} ${String(bad)}`).toThrow(
        expect.objectContaining({ name: 'TypeError', message: expect.stringMatching(/^Expected a token from this tracker's start\(\) .* for token but received /) }),
      );
    }
    expect(Object.keys(plain)).toEqual([]);
    shared.tracker.end(s, 201);
    exact.tracker.end(t, 200);
    await until(() => exact.records.length === 1 && shared.records.length === 1);
    sampler.stop();
    expect(exact.records.map((r) => [r.route, r.statusCode, r.mode])).toEqual([['/exact', 200, 'exact']]);
    expect(shared.records.map((r) => [r.route, r.statusCode, r.mode])).toEqual([['/shared', 201, 'shared']]);
    expect(otherExact.records).toEqual([]);
    expect([exact.tracker.inFlight, otherExact.tracker.inFlight, shared.tracker.inFlight]).toEqual([0, 0, 0]);
  });

  it('a listener that throws costs no request its accounting, in either mode', async () => {
    // In a child process: the listener's errors are uncaught there (vitest would fail on them).
    const dist = path.join(__dirname, '..', 'dist/cjs/index.js');
    for (const mode of ['shared', 'exact']) {
      const { stdout } = await run(process.execPath, [path.join(__dirname, 'fixtures/throwing-listener.cjs'), dist, mode]);
      const r = JSON.parse(stdout) as { settled: number; counted: number | string; delivered: number; thrown: number };
      // 40 requests settled in one collection; a listener called within it cut it short.
      expect(r, mode).toEqual({ settled: 40, counted: 40, delivered: 40, thrown: expect.any(Number) });
      expect(r.thrown, mode).toBeGreaterThanOrEqual(1);
    }
  });

  it("exact mode: a handler passed as run keeps an untracked request pipelined after it out of its context", async () => {
    const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs' });
    cleanups.push(() => sampler.close());
    const tracker = new RequestTracker(sampler, { mode: 'exact' });
    cleanups.push(() => tracker.close());
    const records: RequestRecord[] = [];
    tracker.onRequest((rs) => records.push(...rs));
    const server = http.createServer((req, res) => {
      if (req.url === '/a') {
        trackRequest(tracker, req, res, '/a', () => {
          setTimeout(() => res.end('a'), 200);
        });
      } else {
        // Untracked, and dispatched by Node in the same callback as /a: 100 ms of CPU.
        setImmediate(() => {
          busy(100);
          res.end('b');
        });
      }
    });
    const base = await listen(server);
    cleanups.push(() => new Promise((r) => server.close(r)));
    sampler.start();
    const socket = net.connect(Number(new URL(base).port), '127.0.0.1');
    socket.write('GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    socket.resume();
    await new Promise((r) => socket.once('close', r));
    for (let i = 0; i < 100 && records.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    sampler.stop();
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([['/a', 200]]);
    // /a itself runs well under a millisecond; /b's 100 ms would show here were it charged.
    expect(records[0].onCpuNs).toBeLessThan(30e6);
  });

  it('exact mode: a request tracked once its response had ended is reported unmeasured, flagged incomplete', async () => {
    const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs' });
    const tracker = new RequestTracker(sampler, { mode: 'exact' });
    const records: RequestRecord[] = [];
    tracker.onRequest((rs) => records.push(...rs));
    cleanups.push(() => sampler.close());
    cleanups.push(() => tracker.close());
    const server = http.createServer((req, res) => {
      res.end('done');
      trackRequest(tracker, req, res, '/late');
    });
    const base = await listen(server);
    cleanups.push(() => new Promise((r) => server.close(r)));
    sampler.start();
    await (await fetch(`${base}/`)).text();
    await recordsFor(records, 1);
    expect(records).toHaveLength(1);
    expect(Number.isNaN(records[0].joules)).toBe(true);
    expect(records[0].incomplete).toBe(true);
    expect(tracker.inFlight).toBe(0);
  });

  // A dependency pinning another version of jouletrace: its tracker failed instanceof and was
  // refused as 'Expected a RequestTracker or a Sampler ... but received {"mode":"shared"}'.
  it('refuses a RequestTracker of another copy of jouletrace as such, and takes its Sampler', async () => {
    // The compiled package loaded beside these sources is such a copy: its own RequestTracker class.
    const other = createRequire(__filename)(path.join(__dirname, '..', 'dist/cjs/index.js')) as typeof import('../src/index');
    expect(other.RequestTracker).not.toBe(RequestTracker);
    // Its prototype's methods are all the shape test sees (made without a sampler: nothing runs).
    const foreign = Object.create(other.RequestTracker.prototype) as RequestTracker;
    const refused = (option: string) =>
      expect.objectContaining({
        code: 'ERR_JOULETRACE_FOREIGN_TRACKER',
        message:
          `${option} is a RequestTracker of another copy of jouletrace than this integration's (two versions in node_modules: npm ls jouletrace lists them), and each copy's integrations drive only its own trackers. ` +
          'Use the integration of the copy that made the tracker, or pass its Sampler here (a tracker is then made from it), or install one version of jouletrace.',
      });
    expect(() => energyMiddleware(foreign)).toThrow(refused('trackerOrSampler'));
    expect(() => instrumentExpress(express(), foreign)).toThrow(refused('trackerOrSampler'));
    const app = Fastify();
    await expect(app.register(fastifyEnergy, { tracker: foreign }).ready()).rejects.toThrow(refused('options.tracker'));
    await app.close();
    // Its Sampler, by shape: the tracker is made here.
    const sampler = new other.Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs' });
    cleanups.push(() => sampler.close());
    const made = energyMiddleware(sampler as unknown as Sampler);
    expect(made.tracker).toBeInstanceOf(RequestTracker);
    made.tracker.close();
  });

  // A tracker made here from another copy's Sampler reads its routes from that copy's channel:
  // one of a version before the incomplete count wrote 8 words a route, read with a stride of 9
  // (three routes of 3, 5 and 7 requests read 3, 0.047 and 0.014).
  it("reads routes() with the words per route of the Sampler's copy", async () => {
    const other = createRequire(__filename)(path.join(__dirname, '..', 'dist/cjs/index.js')) as typeof import('../src/index');
    const otherChannel = createRequire(__filename)(path.join(__dirname, '..', 'dist/cjs/span-channel.js')) as typeof import('../src/span-channel');
    // That copy, as a version before the incomplete count: 8 words a route.
    const nine = otherChannel.SpanChannel.prototype.routeSummaries;
    otherChannel.SpanChannel.prototype.routeSummaries = function (this: unknown, ids: Int32Array) {
      const full = nine.call(this, ids);
      return full.filter((_, i) => i % 9 !== 8);
    };
    cleanups.push(() => void (otherChannel.SpanChannel.prototype.routeSummaries = nine));
    const sampler = new other.Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs' });
    cleanups.push(() => sampler.close());
    const tracker = new RequestTracker(sampler as unknown as Sampler);
    cleanups.push(() => tracker.close());
    sampler.start();
    for (const [route, n] of [['/a', 3], ['/b', 5], ['/c', 7]] as const) {
      for (let i = 0; i < n; i++) tracker.end(tracker.start('GET', route), 200);
    }
    await until(() => tracker.routes().reduce((a, r) => a + r.count, 0) === 15);
    expect(tracker.routes().map((r) => [r.route, r.count, r.incomplete]).sort()).toEqual([
      ['/a', 3, 0],
      ['/b', 5, 0],
      ['/c', 7, 0],
    ]);
  });

  it('refuses what is not a sampler, options a passed-in tracker would drop, and a route that is not one; an empty route is unmatched', async () => {
    const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs' });
    cleanups.push(() => sampler.close());
    for (const bad of [{}, undefined, null]) {
      expect(() => new RequestTracker(bad as unknown as Sampler)).toThrow(/^Expected a Sampler for sampler but received /);
    }
    // What a worker has at hand, its span channel or the context it came from (a channel's
    // figures, shown, said nothing of why): how requests in a worker are tracked.
    const ch = attachSpans(sampler.spanContext());
    cleanups.push(() => ch.close());
    const inWorker =
      ": a worker's span channel (attachSpans()) carries spans only, and requests in a worker are tracked with a Sampler made in that worker (a run of its own, which counts libuv's thread pool in full)";
    expect(() => new RequestTracker(ch as unknown as Sampler)).toThrow(new TypeError(`Expected a Sampler for sampler but received a span channel${inWorker}`));
    expect(() => new RequestTracker(sampler.spanContext() as unknown as Sampler)).toThrow(
      new TypeError(`Expected a Sampler for sampler but received a span context${inWorker}`),
    );
    // The helpers name their own argument, which takes either.
    const either = 'Expected a RequestTracker or a Sampler for trackerOrSampler but received';
    expect(() => energyMiddleware({} as unknown as Sampler)).toThrow(`${either} {} of type object`);
    expect(() => energyMiddleware(5 as unknown as Sampler)).toThrow(`${either} 5 of type number`);
    expect(() => instrumentExpress(express(), {} as unknown as Sampler)).toThrow(`${either} {} of type object`);
    expect(() => (instrumentExpress as unknown as (app: express.Express) => void)(express())).toThrow(`${either} undefined`);
    // Fastify's options name it options.sampler; trackRequest() wants the tracker, and says how to
    // make one of a Sampler.
    expect(() => fastifyEnergy({ addHook() {} } as never, { sampler: {} as Sampler }, (e) => { throw e; })).toThrow(
      new TypeError('Expected a Sampler for options.sampler but received {} of type object'),
    );
    const req = new http.IncomingMessage({} as never);
    expect(() => trackRequest(sampler as never, req, new http.ServerResponse(req))).toThrow(
      new TypeError(
        'Expected a RequestTracker for tracker but received a Sampler: make one tracker from it at startup, new RequestTracker(sampler), and pass that to every trackRequest()',
      ),
    );
    expect(() => trackRequest(null as never, req, new http.ServerResponse(req))).toThrow(
      new TypeError('Expected a RequestTracker (new RequestTracker(sampler)) for tracker but received null of type null'),
    );
    const tracker = new RequestTracker(sampler);
    const records: RequestRecord[] = [];
    tracker.onRequest((rs) => records.push(...rs));
    cleanups.push(() => tracker.close());
    expect(() => energyMiddleware(tracker, { mode: 'exact' })).toThrow('options.mode is for a tracker made from a Sampler');
    expect(() => energyMiddleware(tracker, { bogus: 1 } as never)).toThrow(/options.*bogus/);
    expect(() => instrumentExpress(express(), tracker, { maxRoutes: 5 })).toThrow('options.maxRoutes is for a tracker made from a Sampler');
    const app = Fastify();
    // Refused by the types too (FastifyEnergyOptions: a tracker, or a sampler and its tracker's options).
    // @ts-expect-error mode beside a tracker
    await expect(app.register(fastifyEnergy, { tracker, mode: 'exact' }).ready()).rejects.toThrow('options.mode is for a tracker made from a Sampler');
    const neither = Fastify();
    cleanups.push(() => neither.close());
    // @ts-expect-error neither a tracker nor a sampler
    await expect(neither.register(fastifyEnergy, {}).ready()).rejects.toThrow('Expected a RequestTracker for options.tracker or a Sampler for options.sampler');
    // The sampler form's tracker, reachable to read and close.
    const made = energyMiddleware(sampler, { maxRoutes: 7 });
    expect(made.tracker).toBeInstanceOf(RequestTracker);
    made.tracker.close();
    sampler.start();
    expect(() => tracker.start('GET', 42 as unknown as string)).toThrow('Expected a route pattern (a string) or a function that returns one for route but received 42 of type number');
    tracker.end(tracker.start('GET', ''), 200);
    await recordsFor(records, 1);
    expect(records.map((r) => r.route)).toEqual(['(unmatched)']);
    sampler.stop();
  });

  it('the integrations refuse routeOf, which they would never call: each request is named by the route its framework matched', async () => {
    const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs' });
    cleanups.push(() => sampler.close());
    const routeOf = () => '/grouped';
    const refused = (integration: string, framework: string) =>
      new TypeError(
        `options.routeOf is not taken by ${integration}: each request is named by the route ${framework} matched, and routeOf (the route of a node:http request given none) would never be called; leave it out`,
      );
    // Refused by the types too.
    // @ts-expect-error routeOf
    expect(() => energyMiddleware(sampler, { routeOf })).toThrow(refused('energyMiddleware()', 'Express'));
    // @ts-expect-error routeOf
    expect(() => instrumentExpress(express(), sampler, { routeOf })).toThrow(refused('instrumentExpress()', 'Express'));
    // Beside a tracker, it would not be the tracker's either.
    const tracker = new RequestTracker(sampler);
    cleanups.push(() => tracker.close());
    // @ts-expect-error routeOf
    expect(() => energyMiddleware(tracker, { routeOf })).toThrow(refused('energyMiddleware()', 'Express'));
    const app = Fastify();
    cleanups.push(() => app.close());
    // @ts-expect-error routeOf
    await expect(app.register(fastifyEnergy, { sampler, routeOf }).ready()).rejects.toThrow(refused('fastifyEnergy', 'Fastify'));
  });

  it.each(['shared', 'exact'] as const)('%s mode: track() refuses a req or res that is none, naming it, and leaves nothing in flight', async (mode) => {
    const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs' });
    cleanups.push(() => sampler.close());
    const tracker = new RequestTracker(sampler, { mode });
    cleanups.push(() => tracker.close());
    const ch = sampler.spanChannel();
    sampler.start();
    const refused = (name: string, expected: string) =>
      expect.objectContaining({ name: 'TypeError', message: expect.stringMatching(new RegExp(`^Expected ${expected} for ${name} but received `)) });
    const noRes = refused('res', String.raw`a response \(an http\.ServerResponse, or an object with once\(\)\)`);
    const noReq = refused('req', String.raw`a request \(an http\.IncomingMessage\)`);
    // A request on a fake socket (an adapter's) is watched with listeners on its response; one on a
    // connection of Node's server that carried a tracked request already, through the connection.
    const fake = new http.IncomingMessage({} as never);
    fake.method = 'GET';
    const records: RequestRecord[] = [];
    // Shared mode keeps nothing of a request with a named route and no listener; a route function,
    // a run or a listener take other paths.
    const variants: Array<[string | (() => string), (() => void) | undefined]> = [
      ['/x', undefined],
      [() => '/x', undefined],
      ['/x', () => {}],
    ];
    for (const listen of [false, true]) {
      const off = listen ? tracker.onRequest((rs) => records.push(...rs)) : undefined;
      for (const [route, run] of variants) {
        for (const res of [undefined, null, {}, 42]) expect(() => trackRequest(tracker, fake, res as never, route, run)).toThrow(noRes);
        for (const req of [undefined, null, 'GET /x']) expect(() => trackRequest(tracker, req as never, new http.ServerResponse(fake), route, run)).toThrow(noReq);
      }
      off?.();
    }
    expect(tracker.inFlight).toBe(0);
    // Refused, the request was not taken as tracked: tracked again with its response, it counts.
    tracker.onRequest((rs) => records.push(...rs));
    const res = new http.ServerResponse(fake);
    trackRequest(tracker, fake, res, '/fake');
    res.emit('finish');
    const errors: unknown[] = [];
    const sockets = new Set<net.Socket>();
    const server = http.createServer((req, res) => {
      sockets.add(req.socket);
      if (req.url === '/bad') {
        try {
          trackRequest(tracker, req, undefined as never, '/bad');
        } catch (e) {
          errors.push(e);
        }
      } else trackRequest(tracker, req, res, '/ok');
      res.end('ok');
    });
    const base = await listen(server);
    cleanups.push(() => new Promise((r) => server.close(r)));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    cleanups.push(() => agent.destroy());
    const get = (p: string) =>
      new Promise<void>((resolve, reject) => http.get(base + p, { agent }, (r) => r.resume().on('end', resolve)).on('error', reject));
    for (const p of ['/ok', '/bad', '/ok']) await get(p);
    expect(errors).toEqual([noRes]);
    expect(sockets.size).toBe(1);
    await until(() => records.length === 3 && tracker.inFlight === 0);
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([
      ['/fake', 200],
      ['/ok', 200],
      ['/ok', 200],
    ]);
    expect(tracker.inFlight).toBe(0);
    // Nothing left open: the closed tracker lets go, and the channel stops polling.
    tracker.close();
    await until(() => !ch.polling);
    expect(ch.polling).toBe(false);
  });

  it('a request whose callback span was never measured is reported once, complete in time, flagged incomplete', async () => {
    // A 1 s interval: the sampler does not drain the event ring while the test fills it.
    const sampler = new Sampler({ source: 'model', intervalUs: 1_000_000, threads: 'procfs' });
    const tracker = new RequestTracker(sampler, { mode: 'exact' });
    const records: RequestRecord[] = [];
    tracker.onRequest((rs) => records.push(...rs));
    cleanups.push(() => sampler.close());
    cleanups.push(() => tracker.close());
    sampler.start();
    const channel = sampler.spanChannel();
    const dropped = channel.droppedEvents;
    for (let i = 0; i < 70_000 && channel.droppedEvents === dropped; i++) sampler.end(sampler.begin('fill'));
    expect(channel.droppedEvents).toBeGreaterThan(dropped);
    const token = tracker.start('GET', '/x')!; // its callback span's begin finds the ring full
    tracker.end(token, 200);
    await recordsFor(records, 1);
    sampler.stop();
    expect(records).toHaveLength(1);
    expect(records[0].endNs).toBeGreaterThan(records[0].startNs);
    expect(records[0].incomplete).toBe(true);
    expect(tracker.routes().map((r) => [r.route, r.count])).toEqual([]); // NaN joules: not aggregated
  });

  it('serves a request tracked (shared mode) when the event ring is full, every span slot busy, or spans capture a context', async () => {
    // A 1 s interval: the sampler does not drain the event ring while the test fills it.
    const sampler = new Sampler({ source: 'model', intervalUs: 1_000_000, threads: 'procfs' });
    const tracker = new RequestTracker(sampler);
    const records: RequestRecord[] = [];
    tracker.onRequest((rs) => records.push(...rs));
    cleanups.push(() => sampler.close());
    cleanups.push(() => tracker.close());
    const server = http.createServer((req, res) => {
      trackRequest(tracker, req, res, req.url!);
      res.end('ok');
    });
    const base = await listen(server);
    cleanups.push(() => new Promise((r) => server.close(r)));
    const get = async (p: string) => expect((await fetch(base + p)).status).toBe(200);
    sampler.start();
    const channel = sampler.spanChannel();
    // A span's context capture on: a request carries none of it, and is measured.
    sampler.setContextCapture(() => 'span context');
    await get('/captured');
    sampler.setContextCapture(null);
    // The event ring full: the request's begin cannot be written. It is served, and reported at
    // its end, unmeasured. (Tried again should the sampler's step drain the ring meanwhile, once a
    // second: a request whose begin was written is then measured as usual.)
    let ringFull = '';
    for (let attempt = 0; attempt < 3 && ringFull === ''; attempt++) {
      const before = channel.droppedEvents;
      for (let i = 0; i < 70_000 && channel.droppedEvents === before; i++) sampler.end(sampler.begin('fill'));
      const filled = channel.droppedEvents;
      await get(`/ring-full-${attempt}`);
      if (channel.droppedEvents > filled) ringFull = `/ring-full-${attempt}`;
    }
    expect(ringFull).not.toBe('');
    await recordsFor(records, 1);
    const unmeasured = records.find((r) => r.route === ringFull);
    expect([unmeasured?.incomplete, Number.isNaN(unmeasured?.joules)]).toEqual([true, true]);
    // Every slot busy (held spans): served, not measured, counted. (Again, tried once more should a
    // step free slots meanwhile.)
    const held: number[] = [];
    let noSlot = false;
    for (let attempt = 0; attempt < 3 && !noSlot; attempt++) {
      for (let h = sampler.begin('hold'); h !== 0; h = sampler.begin('hold')) held.push(h);
      const droppedSpans = channel.droppedSpans;
      await get('/no-slot');
      noSlot = channel.droppedSpans === droppedSpans + 1;
    }
    expect(noSlot).toBe(true);
    for (const h of held) sampler.end(h);
    sampler.stop();
    await recordsFor(records, 2);
    expect(records.map((r) => r.route)).toContain('/captured');
    expect(records.map((r) => r.route)).not.toContain('/no-slot');
    expect(records.find((r) => r.route === '/captured')).not.toHaveProperty('context');
    expect(tracker.inFlight).toBe(0);
  });

  itBpf('nothing is accounted while the sampler is stopped; a callback with no span slot marks its request incomplete', async () => {
    const { sampler, tracker, records } = setup('exact');
    let ran = 0;
    expect(tracker.start('GET', '/stopped', () => ran++)).toBeUndefined();
    expect(ran).toBe(1);
    sampler.start();
    const held: number[] = [];
    for (let i = 0; i < 65536; i++) held.push(sampler.begin('hold'));
    const token = tracker.start('GET', '/noslot')!;
    tracker.end(token, 200);
    for (const h of held) sampler.end(h);
    await recordsFor(records, 1);
    sampler.stop();
    expect(records.map((r) => [r.route, r.incomplete])).toEqual([['/noslot', true]]);
  });

  itBpf('a context capture that throws fails begin() without holding a span slot', async () => {
    const { sampler } = setup();
    sampler.start();
    sampler.setContextCapture(() => {
      throw new Error('capture failed');
    });
    expect(() => sampler.begin('x')).toThrow('capture failed');
    sampler.setContextCapture(null);
    // The result timer runs while some span holds a slot, and stops 200 ms after the last.
    const channel = sampler.spanChannel();
    for (let i = 0; i < 100 && channel.polling; i++) await new Promise((r) => setTimeout(r, 10));
    expect(channel.polling).toBe(false);
    sampler.stop();
  });
});

describeBpf('framework integrations', () => {
  it.each([
    ['the middleware', (app: express.Express, t: RequestTracker) => void app.use(energyMiddleware(t))],
    ['instrumentExpress()', (app: express.Express, t: RequestTracker) => void instrumentExpress(app, t)],
  ])('Express, through %s, reports the route pattern and status code', async (_how, install) => {
    const { sampler, tracker, records } = setup();
    const app = express();
    install(app, tracker);
    const users = express.Router();
    users.get('/:id', (req, res) => {
      busy(1);
      res.status(req.params.id === '0' ? 404 : 200).send('user');
    });
    // Leaving the router with an error, or falling through it, puts req.baseUrl back to ''.
    users.get('/boom/sync', () => {
      throw new Error('boom');
    });
    users.get('/boom/async', async () => {
      throw new Error('boom');
    });
    users.get('/pass/:id', (_req, _res, next) => next());
    app.use('/users', users);
    app.get('/health', (_req, res) => {
      res.send('ok');
    });
    const server = http.createServer(app);
    const base = await listen(server);
    cleanups.push(() => new Promise((r) => server.close(r)));
    sampler.start();
    await load(
      base,
      [
        { path: '/users/7', count: 10 },
        { path: '/users/0', count: 5 },
        { path: '/health', count: 5 },
        { path: '/nope', count: 3 },
        { path: '/users/boom/sync', count: 2 },
        { path: '/users/boom/async', count: 2 },
        { path: '/users/pass/3', count: 2 },
      ],
      2,
    );
    await recordsFor(records, 29);
    sampler.stop();
    const by = (route: string, status: number) => records.filter((r) => r.route === route && r.statusCode === status).length;
    expect(by('/users/:id', 200)).toBe(10);
    expect(by('/users/:id', 404)).toBe(5);
    expect(by('/health', 200)).toBe(5);
    expect(by('(unmatched)', 404)).toBe(3);
    expect(by('/users/boom/sync', 500)).toBe(2);
    expect(by('/users/boom/async', 500)).toBe(2);
    expect(by('/users/pass/:id', 404)).toBe(2);
    expect(records.some((r) => r.route.includes('/7'))).toBe(false); // never the raw URL
  });

  it('instrumentExpress(): each request once, sub-applications included; exact mode; errors that say what to pass', async () => {
    const ok = (_req: express.Request, res: express.Response) => {
      res.send('ok');
    };
    const { sampler, tracker, records } = setup();
    // Parent and sub-application both instrumented: the sub-application's requests are the parent's.
    const app = express();
    const sub = express();
    sub.use(energyMiddleware(tracker)); // a middleware too, by mistake: still once
    sub.get('/x/:id', ok);
    app.use(energyMiddleware(tracker));
    app.use('/sub', sub);
    app.get('/top', ok);
    expect(instrumentExpress(app, tracker)).toBe(tracker);
    instrumentExpress(sub, tracker);
    // A sub-application instrumented alone, in an app that is not: its own requests count,
    // once, though a middleware of the parent's tracks them too.
    const plain = express();
    const alone = express();
    alone.get('/y/:id', ok);
    plain.use(energyMiddleware(tracker));
    plain.use('/alone', alone);
    plain.get('/untracked', ok);
    instrumentExpress(alone, tracker);
    // Instrumented alone in an app that jouletrace does not touch: a request that leaves it by an
    // error or a fall-through (Express restores the parent's request prototype first) keeps the
    // route it matched there, unless a route of the parent's matches it afterwards.
    const untouched = express();
    const lone = express();
    lone.get('/boom/:id', () => {
      throw new Error('boom');
    });
    lone.get('/fall/:id', (_req, _res, next) => next());
    lone.get('/pass/:id', (_req, _res, next) => next());
    untouched.use('/lone', lone);
    untouched.get('/lone/pass/:n', ok);
    instrumentExpress(lone, tracker);
    const bases: string[] = [];
    for (const a of [app, plain, untouched]) {
      const server = http.createServer(a);
      bases.push(await listen(server));
      cleanups.push(() => new Promise((r) => server.close(r)));
    }
    sampler.start();
    const requests = [
      [0, '/sub/x/1', 200],
      [0, '/top', 200],
      [0, '/nope', 404],
      [1, '/alone/y/2', 200],
      [1, '/untracked', 200],
      [2, '/lone/boom/3', 500],
      [2, '/lone/fall/4', 404],
      [2, '/lone/pass/5', 200],
    ] as const;
    for (const [at, p, status] of requests) {
      expect((await fetch(`${bases[at]}${p}`)).status).toBe(status);
    }
    for (let i = 0; i < 300 && records.length < requests.length; i++) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 30));
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([
      ['/sub/x/:id', 200],
      ['/top', 200],
      ['(unmatched)', 404],
      ['/alone/y/:id', 200],
      ['/untracked', 200], // by the parent's middleware
      ['/lone/boom/:id', 500],
      ['/lone/fall/:id', 404],
      ['/lone/pass/:n', 200], // the parent's route, not '/lone' + it
    ]);
    expect(records.every((r) => !r.incomplete)).toBe(true);
    expectChargedButOneStall(records, JSON.stringify(records.map((r) => r.joules)));
    // A context capture that throws: the request is served all the same, unaccounted, with one
    // process warning (this is Node's request listener: a throw would leave the request unanswered).
    const warnings: string[] = [];
    const onWarning = (w: Error & { code?: string }) => void warnings.push(`${w.code}: ${w.message}`);
    process.on('warning', onWarning);
    cleanups.push(() => process.off('warning', onWarning));
    tracker.setContextCapture(() => {
      throw new Error('capture boom');
    });
    expect((await fetch(`${bases[0]}/top`)).status).toBe(200);
    tracker.setContextCapture(null);
    await new Promise((r) => setTimeout(r, 20));
    expect(warnings).toEqual([expect.stringMatching(/^JOULETRACE_UNACCOUNTED: instrumentExpress\(\): .*capture boom/)]);
    sampler.stop();

    // Exact mode: Express's handler runs in the request's context, so its callbacks are charged to it.
    const exact = setup('exact');
    const app2 = express();
    app2.get('/later', (_req, res) => {
      setTimeout(() => {
        busy(1);
        res.send('later');
      }, 5);
    });
    instrumentExpress(app2, exact.tracker);
    const server2 = http.createServer(app2);
    const base2 = await listen(server2);
    cleanups.push(() => new Promise((r) => server2.close(r)));
    exact.sampler.start();
    expect((await fetch(`${base2}/later`)).status).toBe(200);
    for (let i = 0; i < 300 && exact.records.length < 1; i++) await new Promise((r) => setTimeout(r, 10));
    exact.sampler.stop();
    expect(exact.records.map((r) => [r.route, r.statusCode, r.mode])).toEqual([['/later', 200, 'exact']]);
    // The 1 ms spin ran in a timer callback of the request's: counted, though not in track()'s call.
    expect(exact.records[0].onCpuNs).toBeGreaterThan(0.8e6);

    expect(() => instrumentExpress(app, tracker)).toThrow(expect.objectContaining({ code: 'ERR_JOULETRACE_ALREADY_INSTRUMENTED' }));
    expect(() => instrumentExpress({} as never, tracker)).toThrow('Expected an Express application (from express()) for app but received {} of type object');
    expect(() => instrumentExpress(express.Router() as never, tracker)).toThrow(TypeError);
  });

  it('Express: req.route reads as Express set it, and the middleware adds no property to the request', async () => {
    const { sampler, tracker, records } = setup();
    const app = express();
    app.use(energyMiddleware(tracker));
    const seen: unknown[] = [];
    const own = (req: object) => Reflect.ownKeys(req).filter((k) => String(k).includes('jouletrace') || k === 'route');
    const items = express.Router();
    items.get('/:id', (req, res, next) => {
      seen.push([req.route.path, Object.keys(req.route.methods), own(req), (Object.create(req) as typeof req).route === req.route, new Proxy(req, {}).route]);
      next();
    });
    items.get('/:id', (req, res) => {
      seen.push([req.route.path, own(req)]);
      req.route = { path: '/by-hand' }; // user code may assign it too
      seen.push((req.route as { path: string }).path);
      res.send('item');
    });
    app.use('/items', items);
    const server = http.createServer(app);
    const base = await listen(server);
    cleanups.push(() => new Promise((r) => server.close(r)));
    sampler.start();
    expect((await fetch(`${base}/items/3`)).status).toBe(200);
    await recordsFor(records, 1);
    sampler.stop();
    // Own properties added to a request Express re-prototyped cost V8 a map migration each
    // (about 1.4 µs here): the route and its mount path are kept beside the request.
    expect(seen).toEqual([['/:id', ['get'], [], true, undefined], ['/:id', []], '/by-hand']);
    expect(records.map((r) => r.route)).toEqual(['/items/by-hand']);
  });

  it('Express: the route pattern through mount paths with parameters; the URL where the routers cannot tell', async () => {
    const { sampler, tracker, records } = setup();
    const ok = (_req: express.Request, res: express.Response) => {
      res.send('ok');
    };
    const app = express();
    app.use(energyMiddleware(tracker));
    const posts = express.Router({ mergeParams: true });
    posts.get('/:pid', ok);
    posts.get('/:pid/boom', () => {
      throw new Error('boom');
    });
    let release = () => {};
    const released = new Promise<void>((r) => (release = r));
    posts.get('/:pid/slow', async (_req, res) => {
      await released;
      res.send('slow');
    });
    app.use('/users/:uid/posts', posts);
    const twice = express.Router(); // mounted at two paths: which one a request came by is not known
    twice.get('/:id', ok);
    app.use('/a', twice);
    app.use('/b', twice);
    const items = express.Router(); // mounted here and reused behind a sub-application
    items.get('/items/:id', ok);
    app.use('/v1', items);
    const v2 = express();
    v2.use(items);
    app.use('/v2', v2);
    const tenants = express(); // a sub-application: its routers are walked on their own
    tenants.get('/x/:id', ok);
    tenants.get('/x/:id/boom', () => {
      throw new Error('boom'); // handled by the parent app, the request's prototype put back
    });
    app.use('/t/:tenant', tenants);
    app.get(/^\/re\/\d+$/, ok);
    const sub = express(); // a sub-application mounted through a router does not learn its parent
    sub.get('/x/:id', ok);
    const api = express.Router();
    api.use('/:version', sub);
    app.use('/api', api);
    app.get(['/list', '/list/:page'], ok);
    const servers: http.Server[] = [];
    const urls: string[] = [];
    for (const a of [app, express().use(energyMiddleware(tracker)).use('/other/:o', posts)]) {
      const server = http.createServer(a);
      servers.push(server);
      urls.push(await listen(server));
      cleanups.push(() => new Promise((r) => server.close(r)));
    }
    sampler.start();
    let requested = 0;
    const get = async (path: string, status: number, at = 0) => {
      requested++;
      expect((await fetch(`${urls[at]}${path}`)).status).toBe(status);
    };
    const delivered = async () => {
      for (let i = 0; i < 300 && records.length < requested; i++) await new Promise((r) => setTimeout(r, 10));
      expect(records).toHaveLength(requested);
    };
    await get('/users/42/posts/7', 200);
    await get('/Users/43/posts/8/boom', 500); // Express matches case-insensitively
    await get('/a/1', 200);
    await get('/b/2', 200);
    await get('/v1/items/3', 200);
    await get('/v2/items/4', 200);
    await get('/api/v7/x/5', 200);
    await get('/list/2', 200);
    await get('/t/acme/x/1', 200);
    await get('/t/other/x/2/boom', 500);
    await get('/re/12', 200);
    await get('/other/9/6', 200, 1); // the same router, in another app
    // Added after the routers were walked: a route (found by walking them again), and a second
    // mount of a router already placed (the URL it matched).
    posts.get('/:pid/late', ok);
    // Walks again only past a hundred times the last walk's duration (src/express-route-patterns.ts),
    // measured in wall time: on a loaded guest a walk preempted midway holds the next one off for
    // a second or more, and until then the route counts under its URL. Asked again until it counts
    // under its pattern (not under the mount path the URL gave); the requests before that are
    // taken out of the records.
    for (let attempt = 0; attempt < 50; attempt++) {
      await new Promise((r) => setTimeout(r, 100));
      await get('/users/44/posts/9/late', 200);
      await delivered();
      if (records[records.length - 1].route === '/users/:uid/posts/:pid/late') break;
      records.pop();
      requested--;
    }
    const later = express.Router();
    later.get('/:id', ok);
    app.use('/first', later);
    await get('/first/1', 200);
    app.use('/second', later);
    await get('/second/2', 200);
    // The same route matched in two apps at once: each request keeps its own app's pattern.
    const inFirst = fetch(`${urls[0]}/users/1/posts/2/slow`);
    await new Promise((r) => setTimeout(r, 20));
    const inOther = fetch(`${urls[1]}/other/9/3/slow`);
    await new Promise((r) => setTimeout(r, 20));
    release();
    expect([(await inFirst).status, (await inOther).status]).toEqual([200, 200]);
    requested += 2;
    await delivered();
    sampler.stop();
    expect(records.slice(-2).map((r) => r.route).sort()).toEqual(['/other/:o/:pid/slow', '/users/:uid/posts/:pid/slow']);
    records.splice(-2);
    expect(records.map((r) => [r.route, r.statusCode])).toEqual([
      ['/users/:uid/posts/:pid', 200],
      ['/users/:uid/posts/:pid/boom', 500],
      ['/a/:id', 200],
      ['/b/:id', 200],
      ['/v1/items/:id', 200],
      ['/v2/items/:id', 200],
      ['/api/v7/x/:id', 200],
      ['/list/:page', 200],
      ['/t/:tenant/x/:id', 200],
      ['/t/:tenant/x/:id/boom', 500],
      ['/^\\/re\\/\\d+$/', 200],
      ['/other/:o/:pid', 200],
      ['/users/:uid/posts/:pid/late', 200],
      ['/first/:id', 200],
      ['/second/:id', 200],
    ]);
  });

  it('keeps serving once the tracker or the sampler is closed, and a plugin-made tracker closes with its app', async () => {
    const { sampler, tracker } = setup();
    const app = express();
    app.use(energyMiddleware(tracker));
    app.get('/x', (_req, res) => {
      res.send('x');
    });
    const server = http.createServer(app);
    const base = await listen(server);
    cleanups.push(() => new Promise((r) => server.close(r)));
    sampler.start();
    expect((await fetch(`${base}/x`)).status).toBe(200);
    tracker.close();
    expect((await fetch(`${base}/x`)).status).toBe(200); // not a 500 from the middleware
    expect(() => tracker.start('GET', '/x')).toThrow(expect.objectContaining({ code: 'ERR_JOULETRACE_CLOSED' }));
    // What start() gives while nothing is accounted may be handed back to end().
    expect(() => tracker.end(undefined, 200)).not.toThrow();

    const s2 = setup().sampler;
    const fast = Fastify();
    await fast.register(fastifyEnergy, { sampler: s2 });
    fast.get('/y', async () => 'y');
    s2.start();
    expect((await fast.inject('/y')).statusCode).toBe(200);
    const own: RequestTracker = fast.jouletrace; // typed by the plugin's augmentation of FastifyInstance
    await fast.close();
    expect(() => own.start('GET', '/y')).toThrow(expect.objectContaining({ code: 'ERR_JOULETRACE_CLOSED' }));
    s2.close();
    const s3 = setup();
    const t3 = s3.tracker;
    const srv3 = http.createServer((req, res) => {
      trackRequest(t3, req, res, '/z');
      res.end('z');
    });
    const base3 = await listen(srv3);
    cleanups.push(() => new Promise((r) => srv3.close(r)));
    s3.sampler.start();
    s3.sampler.close();
    expect((await fetch(`${base3}/z`)).status).toBe(200); // a closed sampler: served, not accounted
    // A direct start() on an open tracker learns that its sampler is closed, in either mode.
    expect(() => t3.start('GET', '/z')).toThrow(expect.objectContaining({ code: 'ERR_JOULETRACE_CLOSED' }));
    const s4 = setup('exact');
    s4.sampler.start();
    s4.sampler.close();
    expect(() => s4.tracker.start('GET', '/w')).toThrow(expect.objectContaining({ code: 'ERR_JOULETRACE_CLOSED' }));
    let ran = 0;
    s4.tracker.track({ method: 'GET' } as http.IncomingMessage, new http.ServerResponse({ method: 'GET' } as http.IncomingMessage), '/w', () => ran++);
    expect(ran).toBe(1);
  });

  it("Fastify, exact mode: a request is charged its body's parsing", async () => {
    const { sampler, tracker, records } = setup('exact');
    const app = Fastify({ bodyLimit: 1e8 });
    await app.register(fastifyEnergy, { tracker });
    app.post('/p', async (req) => ({ n: (req.body as unknown[]).length }));
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    cleanups.push(() => app.close());
    sampler.start();
    await new Promise((r) => setTimeout(r, 30));
    const thread = () => sampler.threads().find((t) => t.tid === process.pid)!.onCpuNs;
    const before = thread();
    // 20 bodies of 1.3 MB: JSON.parse takes about 10 ms of each request's 15 here.
    const { status } = await load(base, [{ path: '/p', count: 20, jsonItems: 40_000 }], 1);
    const used = thread() - before;
    await recordsFor(records, 20);
    sampler.stop();
    expect(status).toEqual({ 200: 20 });
    const charged = records.reduce((a, r) => a + r.onCpuNs, 0);
    // Fastify parses the body in a listener it adds unbound to the raw request, which Node runs
    // in no request's context: the requests were charged 6% of the thread's CPU (node:http
    // reading its body with for await, and Express's express.json, 77%; the rest is HTTP
    // parsing, sockets, and the load process's spawn).
    expect(charged / used).toBeGreaterThan(0.5);
  });

  it('Fastify plugin reports the route pattern and status code', async () => {
    const { sampler, tracker, records } = setup();
    const app = Fastify();
    await app.register(fastifyEnergy, { tracker });
    app.get('/items/:id', async () => {
      busy(1);
      return { ok: true };
    });
    await app.register(
      async (api) => {
        api.get('/orders/:id', async () => ({ ok: true }));
      },
      { prefix: '/v1' },
    );
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    cleanups.push(() => app.close());
    sampler.start();
    await load(base, [{ path: '/items/1', count: 12 }, { path: '/missing', count: 3 }, { path: '/v1/orders/7', count: 2 }], 2);
    await recordsFor(records, 17);
    sampler.stop();
    expect(records.filter((r) => r.route === '/items/:id' && r.statusCode === 200)).toHaveLength(12);
    expect(records.filter((r) => r.route === '/v1/orders/:id' && r.statusCode === 200)).toHaveLength(2);
    expect(records.filter((r) => r.statusCode === 404).map((r) => r.route)).toEqual(['(unmatched)', '(unmatched)', '(unmatched)']);
    // Without Fastify's private context (another major version), the public getter answers.
    expect(fastifyRoute({ raw: {} as never, routeOptions: { url: '/from/:getter' } })).toBe('/from/:getter');
    // When this fails, the message carries what is needed to tell a tracker fault from a
    // settlement bug (see "Frozen thread figures" in the README).
    const diagnosis = JSON.stringify(
      { main: sampler.threads().find((t) => t.tid === process.pid), bpf: sampler.stats().bpf, attribution: sampler.attribution() },
      (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v),
    );
    expectChargedButOneStall(records, diagnosis);
    expect(() => fastifyEnergy({ addHook() {} } as never, {} as never, (e) => { throw e; })).toThrow(
      'Expected a RequestTracker for options.tracker or a Sampler for options.sampler',
    );
    // Registered twice (here, in a child of the app that has it): the registration fails, with a
    // code, rather than Fastify's decorate() throwing out of the plugin as an uncaught exception.
    const twice = Fastify();
    await twice.register(fastifyEnergy, { tracker });
    twice.register(async (child) => {
      await child.register(fastifyEnergy, { tracker });
    });
    await expect(twice.ready()).rejects.toMatchObject({ code: 'ERR_JOULETRACE_ALREADY_INSTRUMENTED', message: expect.stringMatching(/^fastifyEnergy: .*register it once/) });
    await twice.close();
    // A plugin that declares it as a dependency finds it (fastify-plugin's metadata).
    const dependent = Fastify();
    await dependent.register(fastifyEnergy, { tracker });
    const needsIt = Object.assign(async () => {}, {
      [Symbol.for('skip-override')]: true,
      [Symbol.for('plugin-meta')]: { name: 'needs-jouletrace', dependencies: ['jouletrace'] },
    });
    dependent.register(needsIt);
    await expect(dependent.ready()).resolves.toBeDefined();
    expect(dependent.hasPlugin('jouletrace')).toBe(true);
    await dependent.close();
  });
});
