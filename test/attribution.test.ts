// Energy attribution through the Sampler, with both thread-tracking backends: ratios between
// threads, exact conservation at every sample, thread exit, and the unprivileged fallback.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { Sampler, type ThreadsBackend } from '../src/index';
import { EnergyTracker } from '../src/energy-tracker';
import { native } from '../src/native';
import { nativeHandleOf } from '../src/native-handles';
import { describeBpf, itBpf } from './fixtures/bpf-required';
import { createEmulatedMsr, MSR, type EmulatedMsr } from './fixtures/emulated-devices';
import { spawnPython } from './fixtures/python-child';
import { sleep, Spinner } from './fixtures/spinner';
import { stealAllowance } from './fixtures/steal';

const run = promisify(execFile);
const root = path.join(__dirname, '..');
const samplers: Sampler[] = [];
afterEach(() => {
  for (const s of samplers.splice(0)) s.close();
});

// A worker that reports its kernel thread id, does a fixed amount of work and exits. Fixed work,
// not wall time: its CPU time must not depend on what else the machine runs (other test files).
const SPIN = `
const { parentPort, workerData } = require('node:worker_threads');
const tid = Number(require('node:fs').readlinkSync('/proc/thread-self').split('/').pop());
parentPort.postMessage({ tid });
let x = 0;
for (let i = 0; i < workerData.n; i++) x = (x * 31 + i) | 0;
// The kernel's own figure for this thread's CPU time so far, to check the tracker against.
const cpuNs = Number(require('node:fs').readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]);
parentPort.postMessage({ done: x, cpuNs });
`;

// Loop iterations per millisecond of CPU on this machine, measured once.
let perMs = 0;
function iterationsFor(ms: number): number {
  if (!perMs) {
    const n = 2e7;
    const t0 = process.cpuUsage();
    let x = 0;
    for (let i = 0; i < n; i++) x = (x * 31 + i) | 0;
    const used = process.cpuUsage(t0);
    perMs = n / ((used.user + used.system) / 1000) + (x === 0.5 ? 1 : 0);
  }
  return Math.round(perMs * ms);
}

/**
 * `cpuNs`: the worker's CPU time by the kernel as its work ends (its own read). `lastSeenNs`: the
 * last the kernel showed for it (read from here every millisecond) before the thread was gone,
 * its teardown included but for the last moment.
 */
function spin(ms: number): { tid: Promise<number>; done: Promise<void>; cpuNs: Promise<number>; lastSeenNs: Promise<number> } {
  const w = new Worker(SPIN, { eval: true, workerData: { n: iterationsFor(ms) } });
  let tidResolve!: (t: number) => void;
  let cpuResolve!: (ns: number) => void;
  const tid = new Promise<number>((r) => (tidResolve = r));
  const cpuNs = new Promise<number>((r) => (cpuResolve = r));
  let lastSeen = 0;
  let watch: ReturnType<typeof setInterval> | undefined;
  const done = new Promise<void>((resolve, reject) => {
    w.on('message', (m: { tid?: number; cpuNs?: number }) => {
      if (m.tid !== undefined) {
        tidResolve(m.tid);
        const file = `/proc/self/task/${m.tid}/schedstat`;
        watch = setInterval(() => {
          try {
            lastSeen = Number(fs.readFileSync(file, 'utf8').split(' ')[0]);
          } catch {
            clearInterval(watch); // gone
          }
        }, 1);
      }
      if (m.cpuNs !== undefined) cpuResolve(m.cpuNs);
    });
    w.once('exit', () => {
      clearInterval(watch);
      resolve();
    });
    w.once('error', reject);
  });
  return { tid, done, cpuNs, lastSeenNs: done.then(() => lastSeen) };
}

function suite(backend: Exclude<ThreadsBackend, 'off'>) {
  it('splits energy between two workers in the ratio of their CPU time', async () => {
    // With bpf, the switch-in repair from the start, as in spans.test.ts: this guest loses some
    // switch-ins, and under 'auto' the first loss in a process freezes a thread's figures until
    // its switch-out, which for a worker spinning alone can be its exit. (A full-suite run once
    // tracked 290 ms of a worker's 687 by the kernel's count, with 'auto'; which backend was not
    // recorded, so the check below now names it.)
    const repair = backend === 'bpf' ? { repairSwitchIns: 'always' as const } : {};
    const s = new Sampler({ source: 'model', intervalUs: 1000, threads: backend, ...repair });
    samplers.push(s);
    expect(s.stats().threads.backend).toBe(backend);
    const steal = stealAllowance();
    s.start();
    const long = spin(600);
    const short = spin(200);
    const [tidLong, tidShort] = await Promise.all([long.tid, short.tid]);
    await Promise.all([long.done, short.done]);
    s.stop();
    const allowance = steal();
    const threads = s.threads();
    const a = threads.find((t) => t.tid === tidLong)!;
    const b = threads.find((t) => t.tid === tidShort)!;
    expect(a).toBeDefined();
    expect(b).toBeDefined();
    // (not asserting `exited` here: pthread_join returns when the kernel clears the child-tid
    // futex, a moment before the dying thread's last context switch, which is what marks it.)
    expect(a.estimated).toBe(true);
    // Each worker's CPU time by the kernel's own count (its schedstat, read as its work ends)
    // is the reference. The tracker counts a little more: the worker still runs after that read
    // (posting it, tearing its isolate down: 4–18 ms here, 55 ms once beside two reviewers'
    // loads), and eBPF counts the hypervisor steal the kernel leaves out (see
    // test/fixtures/steal.ts). So the upper bound is from the last count the kernel showed before
    // the thread was gone. procfs snapshots lag a thread's last moments by up to a snapshot (4 ms
    // below seen once).
    const [kernelLong, kernelShort] = await Promise.all([long.cpuNs, short.cpuNs]);
    const [lastLong, lastShort] = await Promise.all([long.lastSeenNs, short.lastSeenNs]);
    for (const [t, kernelNs, lastNs] of [[a, kernelLong, lastLong], [b, kernelShort, lastShort]] as const) {
      const what = `${backend}: tid ${t.tid} tracked ${t.onCpuNs} ns, kernel ${kernelNs} ns at its work's end, ${lastNs} ns last seen, steal allowance ${allowance} ns; ${JSON.stringify(s.stats().threads)}`;
      expect(t.onCpuNs, what).toBeGreaterThan(kernelNs - 10e6);
      expect(t.onCpuNs, what).toBeLessThan(Math.max(kernelNs, lastNs) + 40e6 + allowance);
    }
    // The work is in a 3:1 ratio but CPU time is not quite: both workers pay the same start-up
    // and teardown (~40 ms of CPU on this VM), and the short worker runs all its time beside the
    // long one, which is slower per iteration where the vCPUs share a core or its caches on the
    // host (the guest cannot tell). The kernel's own counts came out 2.43–2.65 to 1 on a Zen 5
    // guest. The check against them above is the exact one.
    const cpuRatio = a.onCpuNs / b.onCpuNs;
    const joulesRatio = a.joules / b.joules;
    expect(cpuRatio).toBeGreaterThan(1.8);
    expect(cpuRatio).toBeLessThan(3.6);
    // With the model's idle power as baseline, a thread's dynamic energy is proportional to
    // its CPU time; the model re-reads utilisation every 10 ms (USER_HZ resolution), which
    // misplaces up to ~10-20 ms of power at each phase change, and more when other processes
    // change the machine's utilisation meanwhile (1.20 seen once in a full-suite loop): ±25% on
    // the 200 ms worker. The procfs backend also takes per-CPU busy time from /proc/stat in
    // 10 ms ticks, so an interval's busy time is off by up to a tick either way: ±25% as well.
    const tol = 0.25;
    expect(joulesRatio / cpuRatio).toBeGreaterThan(1 - tol);
    expect(joulesRatio / cpuRatio).toBeLessThan(1 + tol);
    expect(b.onCpuNs).toBeGreaterThan(100e6);
  });

  it('conserves energy exactly at every sample while threads start and exit', async () => {
    const s = new Sampler({ source: 'model', intervalUs: 500, threads: backend });
    samplers.push(s);
    s.start();
    const tids: number[] = [];
    for (let wave = 0; wave < 3; wave++) {
      const ws = [spin(40 + 20 * wave), spin(25)];
      tids.push(...(await Promise.all(ws.map((w) => w.tid))));
      await Promise.all(ws.map((w) => w.done));
    }
    // A worker's 'exit' event follows the join of its thread, which the kernel allows before
    // the thread's final switch-out, where the tracker marks it exited; on a loaded machine that
    // switch came more than 20 ms later. Waited for (the checks below fail if it never comes).
    const exited = (tid: number) => s.threads().find((x) => x.tid === tid)?.exited === true;
    for (const until = Date.now() + 3000; Date.now() < until && !tids.every(exited); ) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 20));
    s.stop();
    expect(s.stats().ring.dropped).toBe(0);
    const recs = s.read();
    const attributed = recs.filter((r) => r.attributed);
    expect(attributed.length).toBeGreaterThan(backend === 'bpf' ? 200 : 15);
    let prev = { process: 0, baseline: 0, other: 0 };
    for (const r of attributed) {
      const p = r.readings[0].parts!;
      expect(p.process + p.baseline + p.other).toBe(r.readings[0].ticks);
      expect(p.process).toBeGreaterThanOrEqual(prev.process);
      expect(p.baseline).toBeGreaterThanOrEqual(prev.baseline);
      expect(p.other).toBeGreaterThanOrEqual(prev.other);
      prev = p;
    }
    const last = recs[recs.length - 1];
    expect(last.attributed).toBe(true);
    const a = s.attribution();
    const d0 = a.byDomain[0];
    expect(d0.ticks.process + d0.ticks.baseline + d0.ticks.other).toBe(d0.ticks.total);
    expect(d0.ticks.total).toBe(BigInt(last.readings[0].ticks));
    expect(d0.ticks.total).toBe(s.totals().readings[0].ticks);
    expect(Number(d0.ticks.process)).toBe(last.readings[0].parts!.process);
    expect(d0.baselineWatts).toBeGreaterThan(0); // the model's idle power
    expect(a.process + a.baseline + a.other).toBeCloseTo(a.total, 9);
    // Every tick given to the process went to one of its threads, exited ones included.
    const threads = s.threads();
    const sum = threads.reduce((acc, t) => acc + t.joules, 0);
    expect(sum).toBeCloseTo(a.process, 9);
    for (const tid of tids) {
      const t = threads.find((x) => x.tid === tid);
      expect(t, `worker ${tid}`).toBeDefined();
      expect(t!.exited).toBe(true);
      expect(t!.joules).toBeGreaterThan(0);
    }
    // Each row has an id of its own (0 is the folded "(exited threads)" row's) and keeps it;
    // a later run's rows never take an earlier one's, so readers keyed by id see new threads.
    const ids = threads.map((t) => t.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) expect(Number.isInteger(id) && id > 0, `id ${id}`).toBe(true);
    const byTid = (list: typeof threads) => list.map((t) => `${t.tid}:${t.id}`).sort();
    expect(byTid(s.threads())).toEqual(byTid(threads));
    s.start();
    await new Promise((r) => setTimeout(r, 20));
    s.stop();
    const next = s.threads().map((t) => t.id);
    expect(next.length).toBeGreaterThan(0);
    expect(Math.min(...next)).toBeGreaterThan(Math.max(...ids));
  });

  it('names threads as they last named themselves, also once they have exited and after stop()', async () => {
    const s = new Sampler({ source: 'model', intervalUs: 1000, threads: backend });
    samplers.push(s);
    s.start();
    // Named after its first switch, as threads name themselves; exits 50 ms later.
    const tid = await new Promise<number>((resolve, reject) => {
      const w = new Worker(
        `const fs = require('node:fs');
        fs.writeFileSync('/proc/thread-self/comm', 'jt-renamed');
        const end = Date.now() + 50; while (Date.now() < end);
        require('node:worker_threads').parentPort.postMessage(Number(fs.readlinkSync('/proc/thread-self').split('/').pop()));`,
        { eval: true },
      );
      w.once('message', resolve);
      w.once('error', reject);
    });
    // Its exit is seen at its last switch-out, which may come well after the message on a
    // loaded machine: waited for, as in the conservation test (the check below fails if never).
    const exited = () => s.threads().find((x) => x.tid === tid)?.exited === true;
    for (const until = Date.now() + 3000; Date.now() < until && !exited(); ) await sleep(10);
    s.stop();
    const threads = s.threads();
    expect(threads.find((t) => t.tid === tid)).toMatchObject({ name: 'jt-renamed', exited: true });
    // The sampler's own thread, gone since stop().
    expect(threads.find((t) => t.tid === s.stats().timing.samplerTid)?.name).toBe('jouletrace');
  });

  it('names live threads as they renamed themselves, reading nothing from /proc in threads()', async () => {
    const s = new Sampler({ source: 'model', intervalUs: 1000, threads: backend });
    samplers.push(s);
    s.start();
    const w = await Spinner.start();
    try {
      const row = () => s.threads().find((x) => x.tid === w.tid);
      for (const until = Date.now() + 3000; Date.now() < until && !row(); ) await sleep(5);
      expect(row()).toBeDefined(); // seen under its first name
      await w.rename('jt-renamed');
      // Taken at an attribution step after the rename (procfs's come 10 ms apart).
      for (const until = Date.now() + 3000; Date.now() < until && row()?.name !== 'jt-renamed'; ) await sleep(5);
      expect(row()?.name).toBe('jt-renamed');
      // A read of /proc per row, on this thread, would find the name too, at 40-100 ms a call for
      // 3,000 threads: threads() makes no read at all. This thread's count of read calls moves by
      // what reading the count costs, no more.
      const reads = () => Number(/^syscr: (\d+)$/m.exec(fs.readFileSync('/proc/thread-self/io', 'utf8'))![1]);
      const r0 = reads();
      const r1 = reads();
      expect(s.threads().length).toBeGreaterThan(2);
      const r2 = reads();
      expect(r2 - r1).toBe(r1 - r0);
    } finally {
      await w.exit();
    }
  });
}

describeBpf('attribution with the eBPF backend', () => {
  suite('bpf');

  it("reads live threads' names from /proc in threads() where the rename hook is not attached", async () => {
    const s = new Sampler({ source: 'model', intervalUs: 1000, threads: 'bpf' });
    samplers.push(s);
    nativeHandleOf<{ _dropRenameHook(): void }>(s)._dropRenameHook();
    expect(s.stats().bpf!.renameHook).toBe('off: dropped by a test');
    s.start();
    const w = await Spinner.start();
    try {
      const row = () => s.threads().find((x) => x.tid === w.tid);
      for (const until = Date.now() + 3000; Date.now() < until && !row(); ) await sleep(5);
      expect(row()).toBeDefined(); // seen under its first name, which its slot keeps
      await w.rename('jt-unhooked');
      expect(row()?.name).toBe('jt-unhooked');
    } finally {
      await w.exit();
    }
  });

  it('reports the BPF program state in stats()', async () => {
    const s = new Sampler({ source: 'model', intervalUs: 1000, threads: 'bpf' });
    samplers.push(s);
    s.start();
    await new Promise((r) => setTimeout(r, 50));
    s.stop();
    const b = s.stats().bpf!;
    expect(b.attached).toBe(true);
    expect(b.events).toBeGreaterThan(10);
    expect(b.slotsUsed).toBeGreaterThan(0);
    expect(b.slotsMax).toBeGreaterThanOrEqual(b.slotsUsed);
    // This machine runs Linux >= 6.2 (see the tracker tests for the choice itself).
    expect(b.program).toBe('task-storage');
    expect(b.hashRefs).toBe(0);
    expect(b.renameHook).toBe('tp_btf/task_rename');
  });

  it('without CAP_BPF: threads "bpf" names the missing capability, the default falls back to procfs', async () => {
    const script = `
      const { Sampler } = require(${JSON.stringify(path.join(root, 'dist/cjs/index.js'))});
      const out = {};
      try { new Sampler({ source: 'model', threads: 'bpf' }); out.bpf = 'opened'; }
      catch (e) { out.bpf = { code: e.code, message: e.message }; }
      const s = new Sampler({ source: 'model' });
      out.fallback = s.stats().threads;
      // A pid that is no process: under the default, named as such, not as procfs's failure.
      const never = Number(require('node:fs').readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
      try { new Sampler({ source: 'model', pid: never }); } catch (e) { out.pid = { code: e.code, message: e.message }; }
      s.start(); setTimeout(() => { s.stop(); out.threads = s.threads().length; console.log(JSON.stringify(out)); s.close(); }, 30);`;
    const { stdout } = await run('capsh', ['--drop=cap_bpf,cap_perfmon,cap_sys_admin', '--', '-c', `exec "${process.execPath}" -e '${script.replace(/'/g, "'\\''")}'`]);
    const out = JSON.parse(stdout);
    expect(out.bpf.code).toBe('EPERM');
    expect(out.bpf.message).toMatch(/^threads: 'bpf': /);
    expect(out.bpf.message).toMatch(/CAP_BPF/);
    expect(out.fallback.backend).toBe('procfs');
    expect(out.fallback.fallbackReason).toMatch(/CAP_BPF/);
    expect(out.fallback.fallbackReason).toMatch(/using procfs/);
    expect(out.threads).toBeGreaterThan(0);
    expect(out.pid.code).toBe('ESRCH');
    expect(out.pid.message).toMatch(/^jouletrace: cannot read \/proc\/\d+\/task .*no such process/);
  });
});

describeBpf('attribution with the eBPF backend, across runs', () => {
  it('gives no row in a run to threads that lived and ended while the sampler stood stopped', async () => {
    const s = new Sampler({ source: 'model', intervalUs: 1000, threads: 'bpf' });
    samplers.push(s);
    s.start();
    await sleep(30);
    s.stop();
    const tids: number[] = [];
    for (let i = 0; i < 3; i++) {
      const w = spin(10);
      tids.push(await w.tid);
      await w.done;
    }
    s.start();
    await sleep(30);
    s.stop();
    // None of its 10 ms of work. A Worker's 'exit' comes before its OS thread has ended, and the
    // kernel removes /proc/self/task/<tid> before the thread's last switch: under load one was
    // still running its exit path when the run began, and got a row with those microseconds.
    const rows = s.threads().filter((t) => tids.includes(t.tid));
    expect(rows.filter((t) => t.onCpuNs > 1e6)).toEqual([]);
  });
});

// Past 4,096 exited threads, step() folds the oldest into one "(exited threads)" row: their
// energy moves with them (it was dropped, the folded row's time kept: 2.3 J of a process's 5 J
// gone from every row in a run of 5,000 threads).
describeBpf('attribution of more exited threads than it keeps', () => {
  it('folds the oldest into one row, their energy and time with them', async () => {
    const { child, waitFor } = spawnPython(`
import sys, threading, time
print('ready', time.process_time(), flush=True)
sys.stdin.readline()
def work():
    x = 0
    for i in range(2000): x += i
for batch in range(50):
    ts = [threading.Thread(target=work) for _ in range(100)]
    for t in ts: t.start()
    for t in ts: t.join()
    time.sleep(0.002)
print('done', time.process_time(), flush=True)
sys.stdin.readline()`);
    let out = '';
    child.stdout.on('data', (d) => (out += String(d)));
    try {
      await waitFor('ready');
      const s = new Sampler({ source: 'model', intervalUs: 1000, threads: 'bpf', pid: child.pid });
      samplers.push(s);
      s.start();
      child.stdin.write('go\n');
      await waitFor('done', 60_000);
      await sleep(20);
      s.stop();
      const [readyNs, doneNs] = ['ready', 'done'].map((w) => Number(/^(\S+) (\S+)$/m.exec(out.split('\n').find((l) => l.startsWith(`${w} `))!)![2]) * 1e9);
      const rows = s.threads();
      const folded = rows.filter((t) => t.name === '(exited threads)');
      expect(folded).toHaveLength(1);
      expect(folded[0]).toMatchObject({ exited: true });
      expect(rows.length).toBeLessThanOrEqual(4096 + 2); // the kept exited rows, the folded one, the live thread
      // Every joule the process was given is in some row, the folded ones' included.
      const process = s.attribution().process;
      expect(process).toBeGreaterThan(0);
      expect(Math.abs(rows.reduce((n, t) => n + t.joules, 0) - process)).toBeLessThanOrEqual(process * 1e-9);
      expect(folded[0].joules).toBeGreaterThan(0);
      expect(folded[0].onCpuNs).toBeGreaterThan(0);
      // And every thread's time: at least the kernel's count of the process's CPU time over the
      // work (the tracker's also holds the hypervisor's steal, which the kernel's leaves out).
      expect(rows.reduce((n, t) => n + t.onCpuNs, 0)).toBeGreaterThan((doneNs - readyNs) * 0.95);
    } finally {
      child.kill();
    }
  }, 120_000);
});

// Two packages, emulated over this machine's first two CPUs (cpu0 on package 0, cpu1 on
// package 1), with a worker pinned to each: every other test has one package, where a split that
// took every domain for package 0's, or psys for one package's, gives the same figures.
// cpu1's package is read from its topology, or, with cpu1 offline when the sampler is made (the
// kernel removes an offline CPU's topology/, not its cpuN/nodeX link), found through its NUMA
// node, whose other CPUs (emulated: cpu2 and cpu3, package 1's, read its counter) are package
// 1's. That CPU was package 0's for the whole run, its threads given package 0's energy.
const twoPackageLayouts = [
  { cpu1: 'online', cpus: 2, pkg1Cpu: 1 },
  { cpu1: 'offline at creation', cpus: 4, pkg1Cpu: 2 },
] as const;
// Package 0 and 1 of e counting from 1000 (read on counterCpus), two spinning workers pushed into
// `workers`, each pinned to the CPU given (before the tracker exists, so that it sees neither run
// anywhere else), and an msr sampler of them with eBPF tracking, not started.
async function samplerOfPinnedWorkers(e: EmulatedMsr, workers: Spinner[], cpus: [number, number], counterCpus = [0, 1]): Promise<Sampler> {
  for (const cpu of counterCpus) {
    e.write(cpu, MSR.INTEL_UNIT, 0x000a0e03);
    e.write(cpu, MSR.INTEL_PKG, 1000);
  }
  workers.push(...(await Promise.all([Spinner.start(), Spinner.start()])));
  workers.forEach((w, i) => execFileSync('taskset', ['-pc', String(cpus[i]), String(w.tid)], { stdio: 'ignore' }));
  const s = new Sampler({
    source: 'msr',
    ...e.options,
    cpuIdentity: { vendor: 'intel', family: 6, model: 0x9e },
    threads: 'bpf',
    intervalUs: 1000,
    repairSwitchIns: 'always',
  });
  samplers.push(s);
  return s;
}

describeBpf('attribution on a machine of two packages', () => {
  it.each(twoPackageLayouts)("gives a thread its own package's energy, conserves each package's, and splits psys over every CPU (cpu1 $cpu1)", async (layout) => {
    const e = createEmulatedMsr({ vendor: 'intel', cpus: layout.cpus, packages: 2 });
    if (layout.cpu1 !== 'online') {
      const cpu = (n: number) => path.join(e.sysfsCpuRoot, `cpu${n}`);
      fs.rmSync(path.join(cpu(1), 'topology'), { recursive: true });
      for (const [n, node] of [[0, 0], [1, 1], [2, 1], [3, 1]]) fs.mkdirSync(path.join(cpu(n), `node${node}`));
      fs.writeFileSync(path.join(e.sysfsCpuRoot, 'online'), '0,2-3\n');
      fs.writeFileSync(path.join(e.sysfsCpuRoot, 'possible'), '0-3\n');
    }
    const workers: Spinner[] = [];
    try {
      e.write(0, MSR.INTEL_PSYS, 1000); // platform-wide, read on package 0's CPU
      const s = await samplerOfPinnedWorkers(e, workers, [0, 1], [0, layout.pkg1Cpu]);
      const [w0, w1] = workers;
      expect(s.domains.map((d) => `${d.domain}-${d.package}`)).toEqual(['package-0', 'psys-0', 'package-1']);
      if (layout.cpu1 !== 'online') expect(s.stats().threads.unknownPackageCpus).toEqual([]);
      s.start();
      // The first interval only sets the reference: energy written before it is in no split.
      for (const until = Date.now() + 3000; Date.now() < until && s.stats().timing.samples < 3; ) await sleep(2);
      // Package 1 draws 20 times package 0's power, psys as much as package 1: a share of the wrong
      // package's energy shows however the CPUs' time divides.
      const step = { pkg0: 50, pkg1: 1000, psys: 1000 };
      const written = { pkg0: 0, pkg1: 0, psys: 0 };
      let spinning = true;
      // Each until it has run 60 ms on its CPU, not for a wall time: on a loaded machine a
      // worker given 250 ms of wall time ran 8.7 ms.
      const spins = Promise.all([w0.cpu(60), w1.cpu(60)]).finally(() => (spinning = false));
      while (spinning) {
        written.pkg0 += step.pkg0;
        written.pkg1 += step.pkg1;
        written.psys += step.psys;
        e.write(0, MSR.INTEL_PKG, 1000 + written.pkg0);
        e.write(layout.pkg1Cpu, MSR.INTEL_PKG, 1000 + written.pkg1);
        e.write(0, MSR.INTEL_PSYS, 1000 + written.psys);
        await sleep(2);
      }
      await spins;
      const samples = s.stats().timing.samples;
      for (const until = Date.now() + 3000; Date.now() < until && s.stats().timing.samples < samples + 3; ) await sleep(2);
      s.stop();

      const a = s.attribution();
      const at = (domain: string, pkg: number) => a.byDomain.find((d) => d.domain === domain && d.package === pkg)!;
      const [pkg0, pkg1, psys] = [at('package', 0), at('package', 1), at('psys', 0)];
      // Each package's (and psys's) measured energy, all of it, split exactly.
      expect([pkg0.ticks.total, pkg1.ticks.total, psys.ticks.total]).toEqual([written.pkg0, written.pkg1, written.psys].map(BigInt));
      for (const d of a.byDomain) expect(d.ticks.process + d.ticks.baseline + d.ticks.other, `${d.domain}-${d.package}`).toBe(d.ticks.total);
      // No baseline is known for a measuring source: every tick is dynamic.
      expect(pkg0.ticks.baseline + pkg1.ticks.baseline + psys.ticks.baseline).toBe(0n);
      const threads = s.threads();
      const sum = (k: string) => threads.reduce((acc, t) => acc + (t.byDomain[k] ?? 0), 0);
      expect(sum('package')).toBeCloseTo(pkg0.process + pkg1.process, 9);
      expect(sum('psys')).toBeCloseTo(psys.process, 9);

      const [r0, r1] = [w0, w1].map((w) => threads.find((t) => t.tid === w.tid)!);
      const what = JSON.stringify({ r0, r1, attribution: a.byDomain.map((d) => [d.domain, d.package, d.process, d.other]) });
      expect(r0, what).toBeDefined();
      expect(r1, what).toBeDefined();
      expect(r0.onCpuNs, what).toBeGreaterThan(20e6);
      expect(r1.onCpuNs, what).toBeGreaterThan(20e6);
      // Each worker ran on one package's CPU only, so its package energy is that package's: the
      // worker on cpu1 holds a good part of package 1's (it kept cpu1 busy), and the one on cpu0
      // no more than package 0's, a twentieth of package 1's.
      expect(r1.byDomain.package, what).toBeGreaterThan(0.25 * pkg1.process);
      expect(r1.byDomain.package, what).toBeLessThanOrEqual(pkg1.process * (1 + 1e-9));
      expect(r0.byDomain.package, what).toBeGreaterThan(0);
      expect(r0.byDomain.package, what).toBeLessThanOrEqual(pkg0.process * (1 + 1e-9));
      // psys covers the platform: it is split over both CPUs' busy time, so the worker on
      // package 1's CPU has a share of it too, though psys is reported as package 0.
      expect(r1.byDomain.psys, what).toBeGreaterThan(0.02 * psys.process);
      expect(r0.byDomain.psys, what).toBeGreaterThan(0);
    } finally {
      await Promise.all(workers.map((w) => w.exit()));
      e.close();
    }
  });
});

// The CPU → package table covers every possible CPU number, offline ones too, and says which
// CPUs' packages it could not find (they count as package 0's). It was sized by a count of CPUs,
// and a CPU without topology/ (offline) was package 0's without a word.
describe('CPUs whose package is not in their topology', () => {
  it("finds an offline CPU's package through its NUMA node, and lists those it cannot find", () => {
    const e = createEmulatedMsr({ vendor: 'intel', cpus: 4, packages: 2 });
    try {
      e.write(0, MSR.INTEL_UNIT, 0x000a0e03);
      e.write(0, MSR.INTEL_PKG, 1000);
      e.write(2, MSR.INTEL_PKG, 1000);
      const cpu = (n: number) => path.join(e.sysfsCpuRoot, `cpu${n}`);
      for (const [n, node] of [[0, 0], [1, 0], [2, 1], [3, 1], [4, 1]]) fs.mkdirSync(path.join(cpu(n), `node${node}`), { recursive: true });
      fs.mkdirSync(cpu(5)); // offline, on no node
      fs.writeFileSync(path.join(e.sysfsCpuRoot, 'possible'), '0-7\n'); // 6 and 7: not present
      const make = (threads: 'procfs' | 'off') => {
        const s = new Sampler({ source: 'msr', ...e.options, cpuIdentity: { vendor: 'intel', family: 6, model: 0x9e }, threads });
        samplers.push(s);
        return s;
      };
      expect(make('procfs').stats().threads.unknownPackageCpus).toEqual([5, 6, 7]);
      expect(make('off').stats().threads.unknownPackageCpus).toEqual([]);
    } finally {
      e.close();
    }
  });
});

// Package 1's counter (with `dies`, die 1's of package 0), written every 2 ms (1000 units of 61 µJ,
// 30 W) while not `failing`, beside package 0's (die 0's, 50 units); `pkg1` is its value.
interface CounterWriter {
  pkg1: number;
  failing: boolean;
}

// Two workers on package 1's CPU: package 1's reads fail (EIO) while A spins 300 ms, and
// `recover` brings its counter back while B spins `bMs`, through `restore`, which makes its
// device readable again at the value given (counted on from there). Returns the run's figures
// once stopped, those of the failing counter's domain. With `dies`, CPU 1 is package 0's second
// die (Cascade Lake-AP), and the domain package 0, the sum of both dies' counters. baselineWatts:
// the failing counter's domain's, set before the run.
//
// The gap must stay well inside the 1 s for which a multi-die package is held while one die
// fails (and the tests' bounds assume a gap of about 400 ms): on a loaded machine this thread's
// writer and the workers' messages were held up, the gap grew past 1.8 s, and the hold's
// release split it as designed, not as the tests expect. A try whose gap took over 700 ms is
// run again (gapOnPackageOne's `gapMs`), up to five times.
async function gapOnPackageOne(...args: Parameters<typeof gapOnPackageOneOnce>): ReturnType<typeof gapOnPackageOneOnce> {
  let r = await gapOnPackageOneOnce(...args);
  for (let tries = 1; tries < 5 && r.gapMs > 700; tries++) r = await gapOnPackageOneOnce(...args);
  expect(r.gapMs, `the failed gap took ${r.gapMs.toFixed(0)} ms in each of 5 tries: the machine is too loaded for this test`).toBeLessThanOrEqual(700);
  return r;
}

async function gapOnPackageOneOnce(
  bMs: number,
  recover: (w: CounterWriter, s: Sampler, restore: (pkg1: number) => void) => Promise<void>,
  layout: 'packages' | 'dies' = 'packages',
  baselineWatts = 0,
) {
  const e = createEmulatedMsr({ vendor: 'intel', cpus: 2, ...(layout === 'dies' ? { packages: 1, dies: 2 } : { packages: 2 }) });
  const workers: Spinner[] = [];
  try {
    const s = await samplerOfPinnedWorkers(e, workers, [1, 1]);
    const [a, b] = workers;
    if (baselineWatts > 0) s.setBaseline(s.domains.map((d) => (d.domain === 'package' && d.package === (layout === 'dies' ? 0 : 1) ? baselineWatts : 0)));
    s.start();
    for (const until = Date.now() + 3000; Date.now() < until && s.stats().timing.samples < 3; ) await sleep(2);
    const w: CounterWriter = { pkg1: 1000, failing: false };
    let writing = true;
    let pkg0 = 1000;
    const writer = (async () => {
      for (; writing; await sleep(2)) {
        e.write(0, MSR.INTEL_PKG, (pkg0 += 50));
        w.pkg1 += 1000;
        if (!w.failing) e.write(1, MSR.INTEL_PKG, w.pkg1);
      }
    })();
    await sleep(20);
    w.failing = true;
    e.truncate(1);
    const gapFrom = performance.now();
    let gapMs = Infinity;
    await a.spin(300);
    const errorsInGap = s.stats().timing.readErrors;
    const bDone = b.spin(bMs);
    await recover(w, s, (pkg1) => {
      e.write(1, MSR.INTEL_UNIT, 0x000a0e03);
      e.write(1, MSR.INTEL_PKG, (w.pkg1 = pkg1));
      w.failing = false;
      gapMs = Math.min(gapMs, performance.now() - gapFrom); // its first restore ends the gap
    });
    await bDone;
    writing = false;
    await writer;
    const samples = s.stats().timing.samples;
    for (const until = Date.now() + 3000; Date.now() < until && s.stats().timing.samples < samples + 3; ) await sleep(2);
    s.stop();
    const i = s.domains.findIndex((d) => d.domain === 'package' && d.package === (layout === 'dies' ? 0 : 1));
    const at = s.attribution().byDomain[i];
    const [ra, rb] = [a, b].map((x) => s.threads().find((t) => t.tid === x.tid)!);
    return { s, at, measured: s.totals().readings[i].ticks, ra, rb, errorsInGap, pkg0, pkg1: w.pkg1, gapMs, what: JSON.stringify({ ra, rb, pkg1: [at.process, at.other], gapMs }) };
  } finally {
    await Promise.all(workers.map((x) => x.exit()));
    e.close();
  }
}

describeBpf('attribution across failed reads', () => {
  // Attribution stepped on while package 1's reads failed, splitting 0 J over the gap's time, and
  // the first good read's energy, the whole gap's, went by the last interval's time alone: a
  // thread that ran through the gap got nothing, one that started just before the recovery all.
  // With `dies`, a package of two dies whose second die's reads fail: the package read as die 0's
  // sum meanwhile, and moved, so it was never held. Each interval of the gap was split with die
  // 0's energy alone, a twentieth of die 1's, and die 1's came whole at its recovery, to B: A got
  // a fiftieth of B's energy per nanosecond.
  it.each(['packages', 'dies'] as const)("splits the energy a failed domain's next good read brings over the whole gap's time (%s)", async (layout) => {
    // The counter comes back where it went on counting, while B runs.
    let heldInGap: boolean[] = [];
    const { at, ra, rb, errorsInGap, pkg0, pkg1, what } = await gapOnPackageOne(
      100,
      async (w, s, restore) => {
        await sleep(50);
        // Held while its reads fail, as attribution() and threads() say with their figures.
        const i = s.domains.findIndex((d) => d.domain === 'package' && d.package === (layout === 'dies' ? 0 : 1));
        heldInGap = [s.attribution().byDomain[i].held, s.threadsAt().held];
        restore(w.pkg1);
      },
      layout,
    );
    expect(errorsInGap).toBeGreaterThan(0);
    expect(heldInGap).toEqual([true, true]);
    expect(at.held).toBe(false);
    expect(at.ticks.total).toBe(BigInt(pkg1 - 1000 + (layout === 'dies' ? pkg0 - 1000 : 0)));
    expect(at.ticks.process + at.ticks.baseline + at.ticks.other).toBe(at.ticks.total);
    expect(ra.onCpuNs, what).toBeGreaterThan(20e6);
    expect(rb.onCpuNs, what).toBeGreaterThan(20e6);
    // Both kept package 1's CPU busy at a steady power: each gets about the same energy per
    // nanosecond it ran (A got 0 J before, and B the gap's energy).
    const perNs = (t: typeof ra) => t.byDomain.package / t.onCpuNs;
    expect(perNs(ra) / perNs(rb), what).toBeGreaterThan(0.5);
    expect(perNs(ra) / perNs(rb), what).toBeLessThan(2);
    // The good read brought the gap's energy: none of their time went unmeasured.
    expect([ra.unmeasuredNs, rb.unmeasuredNs], what).toEqual([0, 0]);
  });

  // Reads that fail until the run ends leave no good read to bring the gap's energy: the held time
  // was dropped at stop(), and the row of a thread that ran through it showed its on-CPU time
  // with 0 J more and nothing to say why. It is the row's unmeasuredNs.
  it.each([
    ['fail from mid-run to its end', true],
    ['all succeed', false],
  ])("counts the thread time whose energy no read measured as the row's unmeasuredNs: reads of package 1 %s", async (_, failing) => {
    const e = createEmulatedMsr({ vendor: 'intel', cpus: 2, packages: 2 });
    const workers: Spinner[] = [];
    try {
      const s = await samplerOfPinnedWorkers(e, workers, [1, 1]);
      const [a, b] = workers;
      s.start();
      for (const until = Date.now() + 3000; Date.now() < until && s.stats().timing.samples < 3; ) await sleep(2);
      let writing = true;
      let fails = false;
      const pkg = [1000, 1000];
      const writer = (async () => {
        for (; writing; await sleep(2)) {
          e.write(0, MSR.INTEL_PKG, (pkg[0] += 50));
          if (!fails) e.write(1, MSR.INTEL_PKG, (pkg[1] += 1000));
        }
      })();
      // A runs 40 ms of CPU time while package 1 reads, then 60 ms more, through the failure.
      const measuredUntil = await a.cpu(40);
      if (failing) {
        fails = true;
        e.truncate(1);
      }
      const stretchNs = (await a.cpu(60)) - measuredUntil;
      writing = false;
      await writer;
      const samples = s.stats().timing.samples;
      for (const until = Date.now() + 3000; Date.now() < until && s.stats().timing.samples < samples + 3; ) await sleep(2);
      s.stop();
      const threads = s.threads();
      const [ra, rb] = [a, b].map((x) => threads.find((t) => t.tid === x.tid)!);
      const what = JSON.stringify({ ra, rb, stretchNs, readErrors: s.stats().timing.byDomain });
      expect(ra.onCpuNs, what).toBeGreaterThan(90e6);
      expect(ra.joules, what).toBeGreaterThan(0);
      for (const t of threads) expect(t.unmeasuredByDomain.package, what).toBe(t.unmeasuredNs);
      if (!failing) {
        for (const t of threads) expect(t.unmeasuredNs, what).toBe(0);
        return;
      }
      expect(s.stats().timing.byDomain[s.domains.findIndex((d) => d.package === 1)].readErrors, what).toBeGreaterThan(0);
      // A's time over the failed reads, as its schedstat counts it (which lags a running thread by
      // up to a tick), and none of its measured time before. B stood idle.
      expect(ra.unmeasuredNs, what).toBeGreaterThan(0.9 * stretchNs);
      expect(ra.unmeasuredNs, what).toBeLessThan(stretchNs + 10e6);
      expect(ra.unmeasuredNs, what).toBeLessThan(ra.onCpuNs - 30e6);
      expect(rb.unmeasuredNs, what).toBeLessThanOrEqual(rb.onCpuNs);
    } finally {
      await Promise.all(workers.map((w) => w.exit()));
      e.close();
    }
  });
});

describeBpf('attribution across a counter that started again', () => {
  // A counter that started again in a failed gap loses the gap's energy: no read brings it. The
  // gap's time was held as for any failed read and split against the first energy after the
  // restart, which is not its: the thread that ran through the gap took most of it.
  it("lets go of a failed gap's time when the counter started again, rather than split later energy over it", async () => {
    // The counter comes back started again, at 500, below its last value, while B runs, and then
    // draws 100,000 units (6.1 J) at once.
    const { s, at, measured, ra, rb, what } = await gapOnPackageOne(150, async (_, sampler, restore) => {
      await sleep(60);
      restore(500);
      for (const until = Date.now() + 3000; Date.now() < until && sampler.stats().timing.counterRestarts === 0; ) await sleep(1);
      restore(500 + 100_000);
    });
    expect(s.stats().timing.counterRestarts).toBe(1);
    expect(at.ticks.total).toBe(measured);
    expect(at.ticks.process + at.ticks.baseline + at.ticks.other).toBe(at.ticks.total);
    expect(ra.onCpuNs, what).toBeGreaterThan(20e6);
    expect(rb.byDomain.package, what).toBeGreaterThan(0);
    // A ran in the gap alone, 60 ms and more before the restart: none of the energy after it is
    // A's. Split over the gap's time, A took about three quarters of the 6.1 J, more than B's
    // whole share.
    expect(ra.byDomain.package, what).toBeLessThan(0.1 * rb.byDomain.package);
    // No energy was measured for A's time in the gap, nor for B's before the restart: their rows
    // say how much, where they showed the time beside 0 J and nothing to tell why.
    expect(ra.unmeasuredNs, what).toBeGreaterThan(0.9 * ra.onCpuNs);
    expect(ra.unmeasuredNs, what).toBeLessThanOrEqual(ra.onCpuNs);
    expect(rb.unmeasuredNs, what).toBeGreaterThan(0);
    expect(rb.unmeasuredNs, what).toBeLessThan(rb.onCpuNs);
  });

  // A die that comes back started again (or another that starts again while one fails) loses its
  // own energy, not the dies' that answered through the gap: their energy over the held time
  // comes with the release. The held time was let go of as for a counter of its own, so that
  // energy went by one step's time (to B alone), and the baseline's share of the gap to no one.
  it("keeps a multi-die package's held time when the failed die comes back started again", async () => {
    const { s, at, measured, ra, what } = await gapOnPackageOne(
      150,
      async (_, sampler, restore) => {
        await sleep(60);
        restore(500);
        for (const until = Date.now() + 3000; Date.now() < until && sampler.stats().timing.counterRestarts === 0; ) await sleep(1);
      },
      'dies',
      1,
    );
    expect(s.stats().timing.counterRestarts).toBe(1);
    expect(at.ticks.total).toBe(measured);
    expect(at.ticks.process + at.ticks.baseline + at.ticks.other).toBe(at.ticks.total);
    // Die 0 draws 1.5 W alone, both 32 W: 1 W of baseline is paid all along, the gap's 360 ms and
    // more too (it took 40% of the run's).
    const t = s.totals();
    const runTicks = Number(t.timeNs - t.startNs) / 1e9 / 2 ** -14; // units of 61 µJ
    expect(Number(at.ticks.baseline), what).toBeGreaterThan(0.9 * runTicks);
    // A ran in the gap alone: its share of die 0's energy there, none of its time unmeasured.
    expect(ra.byDomain.package, what).toBeGreaterThan(0);
    expect(ra.unmeasuredNs, what).toBe(0);
  });
});

// The kernel gives a tid again once its thread has exited: at pid_max (32,768 by default) on a
// busy host, or at once where ns_last_pid says which comes next (as CRIU sets it, which takes
// CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE; this suite's eBPF already takes root here).
describeBpf('a tid reused by a later thread', () => {
  it('gets a row and id of its own, and the exporters count each thread once', async () => {
    const s = new Sampler({ source: 'model', intervalUs: 1000, threads: 'bpf' });
    samplers.push(s);
    const tracker = new EnergyTracker(s);
    s.start();
    const first = spin(20);
    const tid = await first.tid;
    await first.done;
    let again = 0;
    for (let i = 0; i < 50 && again !== tid; i++) {
      fs.writeFileSync('/proc/sys/kernel/ns_last_pid', String(tid - 1));
      const next = spin(20);
      again = await next.tid;
      await next.done;
    }
    expect(again, 'no later thread was given the tid (other processes took it first 50 times)').toBe(tid);
    const exited = () => s.threads().filter((t) => t.tid === tid && t.exited).length >= 2;
    for (const until = Date.now() + 3000; Date.now() < until && !exited(); ) await sleep(10);
    tracker.readThreads(10, new Set());
    s.stop();
    const rows = s.threads().filter((t) => t.tid === tid);
    expect(rows.length).toBeGreaterThanOrEqual(2);
    expect(new Set(rows.map((t) => t.id)).size).toBe(rows.length);
    for (const t of rows) expect(t.joules).toBeGreaterThan(0);
    // Read again after the run's end: by tid, each read added the larger row's energy again.
    const named = new Set<string>();
    tracker.readThreads(10, named);
    const counted = [...tracker.readThreads(10, named).values()].reduce((a, b) => a + b, 0);
    expect(counted).toBeCloseTo(s.attribution().process, 9);
    tracker.close();
  });
});

// A process of its own that spins for ms of wall time and exits.
function spinningProcess(ms: number): { child: ChildProcess; exited: Promise<void> } {
  const child = spawn(process.execPath, ['-e', `const t = Date.now(); while (Date.now() - t < ${ms}) {}`], { stdio: 'ignore' });
  return { child, exited: new Promise((r) => child.once('exit', () => r())) };
}

async function until(done: () => boolean, ms = 5000): Promise<void> {
  for (const t0 = Date.now(); !done() && Date.now() - t0 < ms; ) await sleep(5);
}

// A sampler that went on after its process exited charged the machine's energy to a process
// that was not there (its baseline and `other`), and, once the pid was reused, a stranger's
// threads to it.
describe('a sampler of another process (options.pid)', () => {
  const backends = [['procfs', it] as const, ['bpf', itBpf] as const];
  for (const [threads, test] of backends) {
    test(`stops by itself when the process exits, its figures final (${threads})`, async () => {
      const { child, exited } = spinningProcess(300);
      const s = new Sampler({ source: 'model', intervalUs: 1000, threads, pid: child.pid });
      samplers.push(s);
      s.start();
      expect(s.stats().target).toEqual({ pid: child.pid, watch: 'pidfd', exited: false });
      await exited;
      await until(() => !s.running);
      expect(s.running).toBe(false);
      expect(s.stats().target).toEqual({ pid: child.pid, watch: 'pidfd', exited: true });
      const atExit = s.attribution();
      expect(atExit.process).toBeGreaterThan(0);
      const timeNs = s.totals().timeNs;
      await sleep(50);
      expect(s.attribution()).toEqual(atExit);
      expect(s.totals().timeNs).toBe(timeNs);
      // stop() in a caller's usual order finds the run over, and returns.
      expect(s.stop()).toBe(s);
      expect(s.stop()).toBe(s);
      expect(() => s.start()).toThrow(expect.objectContaining({ code: 'ERR_JOULETRACE_TARGET_EXITED' }));
      expect(s.attribution()).toEqual(atExit);
    });
  }

  it('ends its run in JavaScript too once the process exits: readers are told, and nothing holds it', async () => {
    const { child, exited } = spinningProcess(100);
    const s = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs', pid: child.pid });
    samplers.push(s);
    const told: number[] = [];
    s.onRunEnd(() => told.push(s.attribution().process));
    s.start();
    await exited;
    // Within the JavaScript check's 250 ms, no stop() called: exporters read the final figures,
    // and the sampler, no longer held as running, is collected once unreferenced (below).
    await until(() => told.length > 0, 3000);
    expect(told).toHaveLength(1);
    expect(told[0]).toBeGreaterThan(0);
    expect(s.stop()).toBe(s);
    expect(told).toHaveLength(1);
    const script = `
      const { spawn } = require('node:child_process');
      const { Sampler } = require(${JSON.stringify(path.join(root, 'dist/cjs/index.js'))});
      const child = spawn('sleep', ['0.05']);
      let collected = false;
      const registry = new FinalizationRegistry(() => (collected = true));
      (() => registry.register(new Sampler({ source: 'model', threads: 'procfs', pid: child.pid }).start(), 0))();
      child.once('exit', async () => {
        for (let i = 0; i < 40 && !collected; i++) {
          await new Promise((r) => setTimeout(r, 50));
          gc();
        }
        console.log(collected ? 'collected' : 'held');
      });`;
    const { stdout } = await run(process.execPath, ['--expose-gc', '-e', script]);
    expect(stdout.trim()).toBe('collected');
  });

  it('refuses start() once the process has exited while the sampler stood stopped', async () => {
    const { child, exited } = spinningProcess(20);
    const s = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs', pid: child.pid });
    samplers.push(s);
    await exited;
    expect(() => s.start()).toThrow(expect.objectContaining({ name: 'JouletraceError', code: 'ERR_JOULETRACE_TARGET_EXITED' }));
    expect(s.running).toBe(false);
  });

  it('watches through /proc where there is no pidfd, a zombie leader with live threads not taken for an exit', async () => {
    // The leader thread exits at once and is a zombie; the process lives on in its other thread
    // for 300 ms.
    const code = 'import ctypes, threading, time\nthreading.Thread(target=lambda: time.sleep(0.3)).start()\nctypes.CDLL(None).pthread_exit(None)\n';
    const child = spawn('python3', ['-c', code], { stdio: 'ignore' });
    const exited = new Promise((r) => child.once('exit', r));
    // Python itself, past any wrapper (pyenv's shims are bash scripts that exec it).
    const isPython = () => path.basename(fs.readlinkSync(`/proc/${child.pid}/exe`)).startsWith('python');
    for (let i = 0; i < 250 && !isPython(); i++) await sleep(20);
    const NativeSampler = native().NativeSampler as new (o: Record<string, unknown>) => {
      start(): void;
      stop(): void;
      close(): void;
      running(): boolean;
      info(): { targetWatch: string };
      stats(): { targetExited: boolean };
    };
    const s = new NativeSampler({ source: 'model', threads: 'procfs', pid: child.pid, intervalUs: 1000, ringCapacity: 64, targetWatchProc: true });
    try {
      expect(s.info().targetWatch).toBe('proc');
      s.start();
      await until(() => /^\d+ \(.*\) Z /.test(fs.readFileSync(`/proc/${child.pid}/stat`, 'utf8')));
      await sleep(50);
      expect(s.running()).toBe(true);
      await exited;
      await until(() => !s.running());
      expect(s.running()).toBe(false);
      expect(s.stats().targetExited).toBe(true);
      s.stop();
    } finally {
      s.close();
    }
  });

  itBpf('goes on after the process exits where it follows its children, which may outlive it', async () => {
    const { child, exited } = spinningProcess(50);
    const s = new Sampler({ source: 'model', intervalUs: 1000, threads: 'bpf', pid: child.pid, followChildren: true });
    samplers.push(s);
    s.start();
    expect(s.stats().target).toEqual({ pid: child.pid, watch: null, exited: false });
    await exited;
    await sleep(50);
    expect(s.running).toBe(true);
    s.stop();
  });

  // With eBPF there, the default backend (auto) took eBPF's refusal of the pid for eBPF's own
  // failure, fell back to procfs, and said "threads: 'procfs': ..." of a backend never asked for.
  itBpf('names the wrong pid itself under the default backend, not the procfs fallback', () => {
    const never = Number(fs.readFileSync('/proc/sys/kernel/pid_max', 'utf8')); // pids stay below it
    expect(() => new Sampler({ source: 'model', pid: never })).toThrow(
      expect.objectContaining({ code: 'ESRCH', message: `jouletrace: no process with pid ${never} to track` }),
    );
    const thread = fs.readdirSync('/proc/self/task').map(Number).find((t) => t !== process.pid)!;
    expect(() => new Sampler({ source: 'model', pid: thread })).toThrow(
      expect.objectContaining({ code: 'ERR_JOULETRACE_NOT_A_PROCESS', message: expect.stringMatching(/^jouletrace: pid \d+ is a thread of process/) }),
    );
  });

  it('refuses a process that has exited and not been reaped', async () => {
    // sleep 0.2 ends as the shell execs into a sleep that never reaps it: a zombie.
    const parent = spawn('sh', ['-c', 'sleep 0.2 & echo $!; exec sleep 5'], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const zombie = await new Promise<number>((resolve) => parent.stdout!.once('data', (d: Buffer) => resolve(Number(String(d).trim()))));
      await until(() => /^\d+ \(sleep\) Z /.test(fs.readFileSync(`/proc/${zombie}/stat`, 'utf8')));
      expect(() => new Sampler({ source: 'model', threads: 'procfs', pid: zombie })).toThrow(
        expect.objectContaining({ code: 'ESRCH', message: `jouletrace: process ${zombie} has exited (its parent has not reaped it yet)` }),
      );
    } finally {
      parent.kill('SIGKILL');
    }
  });
});

describe('attribution with the procfs backend', () => {
  suite('procfs');

  it('settles at most every 10 ms, and says so', () => {
    const s = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs' });
    samplers.push(s);
    expect(s.stats().threads).toEqual({ backend: 'procfs', fallbackReason: null, attributionEvery: 10, droppedThreads: 0, unreadThreads: 0, unknownPackageCpus: expect.any(Array) });
    expect(s.stats().bpf).toBeUndefined();
  });
});

// The engine alone, fed interval by interval as a tracker reports them: one CPU, one thread,
// [CPU busy ns, thread ns, energy ticks] per 10 ms interval. Each interval is conserved exactly.
describe('attribution engine, interval by interval', () => {
  // Per step: [process, other, baseline, thread 0's ticks, thread 1's, ...]; a row holds
  // [CPU busy ns, thread 0's ns, energy ticks, thread 1's ns, ...].
  const replay = (
    native().bench as { attributionReplay(q: number, dt: number, steps: number[][], unitJoules?: number, baselineWatts?: number): number[][] }
  ).attributionReplay;
  function processShare(busyQuantumNs: number, steps: number[][]): number {
    const out = replay(busyQuantumNs, 10e6, steps);
    out.forEach(([process, other], i) => expect(process + other).toBe(steps[i][2]));
    const process = out.reduce((a, [p]) => a + p, 0);
    return process / steps.reduce((a, s) => a + s[2], 0);
  }
  const ticks = (n: number, threadNs: number) => Array.from({ length: n }, (_, i) => [i % 2 ? 10e6 : 0, threadNs, 1000]);

  it("procfs: a process alone on a CPU at 50% gets the CPU's energy, though /proc/stat's 10 ms ticks land in every other interval", () => {
    // Clamped per interval, it got all of the intervals that read 0 busy and half of those that
    // read 10 ms: 75%.
    expect(processShare(10e6, ticks(400, 5e6))).toBeGreaterThan(0.97);
  });

  it('procfs: a process beside other work gets its share of the busy time, not one skewed by where the ticks land', () => {
    // 2 ms of the 5 ms busy per interval: all of a 0-tick interval and a fifth of a 10 ms one gave it 60%.
    expect(processShare(10e6, ticks(400, 2e6))).toBeCloseTo(0.4, 1);
  });

  // Other tasks' busy time, averaged alone, went on being given out after they stopped: a
  // process whose work followed theirs lost a quarter of its energy (0.69-0.78 of its share).
  it("procfs: a process that takes turns with other work keeps its turns' energy", () => {
    // 50 ms (5 intervals) of the process at 100% of the CPU, then 50 ms of another task's.
    const steps = Array.from({ length: 400 }, (_, i) => (Math.floor(i / 5) % 2 === 0 ? [10e6, 10e6, 1000] : [10e6, 0, 1000]));
    expect(processShare(10e6, steps)).toBeGreaterThan(0.49);
    // 100 ms of another task's, then 100 ms of the process's at 60%, then 300 ms idle.
    const after = Array.from({ length: 500 }, (_, i) => {
      const phase = i % 50;
      if (phase < 10) return [6e6, 0, 600];
      if (phase < 20) return [6e6, 6e6, 600];
      return [0, 0, 0];
    });
    // Half the energy is the process's. At most two ticks of the other task's time reach its
    // turn: 0.77 of its share at worst, in the simulation that chose the band
    // (bench/attribution-split.mjs); the average alone gave 0.73.
    expect(processShare(10e6, after)).toBeGreaterThan(0.5 * 0.75);
  });

  it('eBPF: thread time read a few hundred ns ahead of busy time is owed to the next interval, not given to other', () => {
    const steps = Array.from({ length: 100 }, (_, i) => [i % 2 ? 1e6 + 300 : 1e6 - 300, 1e6, 1000]);
    expect(processShare(0, steps)).toBe(1);
  });

  const sum = (out: number[][], column: number) => out.reduce((a, row) => a + row[column], 0);

  // Each interval's share was rounded down and the rest sent to other: the process lost half a
  // tick an interval, all of a 1 J counter's energy (psys on Sapphire Rapids) and 5-20% of a
  // 61 µJ one's at a 1-2% share. What rounding leaves is carried to the next intervals.
  it("a counter of 1 J units: a process at half the busy time gets half the energy, not 0", () => {
    // 60 W read at 1 ms intervals: a tick about every 17th interval.
    const steps = Array.from({ length: 6000 }, (_, i) => [1e6, 5e5, Math.floor((i + 1) * 0.06) - Math.floor(i * 0.06)]);
    const out = replay(0, 1e6, steps, 1);
    out.forEach(([process, other], i) => expect(process + other).toBe(steps[i][2]));
    const total = sum(out, 0) + sum(out, 1);
    expect(total).toBe(360);
    expect(Math.abs(sum(out, 0) - total / 2)).toBeLessThanOrEqual(1);
  });

  it('a counter of 61 µJ units: a process at 1-2% of the busy time gets its exact share within a tick', () => {
    // 30 W: about 490 ticks a millisecond; the process's time varies from 1 to 2% of it.
    const steps = Array.from({ length: 5000 }, (_, i) => [1e6, 10_000 + ((i * 7919) % 10_000), 480 + ((i * 31) % 23)]);
    const out = replay(0, 1e6, steps, 2 ** -14);
    out.forEach(([process, other], i) => expect(process + other).toBe(steps[i][2]));
    const exact = steps.reduce((a, [busy, ns, ticks]) => a + (ticks * ns) / busy, 0);
    expect(Math.abs(sum(out, 0) - exact)).toBeLessThanOrEqual(1);
  });

  it('a thread with a small share of the process is not passed over when the process gets whole ticks of a coarse counter', () => {
    // Two threads at 90% and 10% of the CPU, a 1 J tick about every 17th interval: each tick went
    // to the thread with the larger remainder, always the first.
    const steps = Array.from({ length: 6000 }, (_, i) => [1e6, 9e5, Math.floor((i + 1) * 0.06) - Math.floor(i * 0.06), 1e5]);
    const out = replay(0, 1e6, steps, 1);
    out.forEach(([process, other, , a, b]) => expect([other, a + b]).toEqual([0, process]));
    expect(Math.abs(sum(out, 3) - 324)).toBeLessThanOrEqual(1);
    expect(Math.abs(sum(out, 4) - 36)).toBeLessThanOrEqual(1);
  });

  it('a baseline under 50 W on a counter of 1 J units gets its energy', () => {
    // The shortfall was carried for at most 20 ms of baseline power (0.8 J at 40 W): under a
    // tick, so the baseline never had one to take.
    const steps = Array.from({ length: 10_000 }, (_, i) => [5e5, 2.5e5, Math.floor((i + 1) * 0.06) - Math.floor(i * 0.06)]);
    const out = replay(0, 1e6, steps, 1, 40);
    out.forEach(([process, other, baseline], i) => expect(process + other + baseline).toBe(steps[i][2]));
    expect(sum(out, 2)).toBeGreaterThanOrEqual(398);
    expect(sum(out, 2)).toBeLessThanOrEqual(400);
    // The rest (200 J) half the process's.
    expect(Math.abs(sum(out, 0) - sum(out, 1))).toBeLessThanOrEqual(2);
  });

  it('owes at most 100 ms of busy time per CPU: thread time that runs ahead for good does not hide later work', () => {
    // 1 s of thread time beyond busy time, then intervals half the process's, half another's.
    const steps = [...Array.from({ length: 2000 }, () => [5e5, 1e6, 1000]), ...Array.from({ length: 300 }, () => [2e6, 1e6, 1000])];
    const out = replay(0, 10e6, steps);
    // 100 ms of debt is paid by the first 100 intervals' 1 ms of other work; then half each.
    expect(out.slice(2000, 2100).every(([p]) => p === 1000)).toBe(true);
    expect(out.slice(2100).every(([p, o]) => p === 500 && o === 500)).toBe(true);
  });
});

describe('attribution API', () => {
  it('refuses thread queries when tracking is off', () => {
    const s = new Sampler({ source: 'model', threads: 'off' });
    samplers.push(s);
    expect(() => s.threads()).toThrow(expect.objectContaining({ code: 'ERR_JOULETRACE_NO_THREADS' }));
    expect(() => s.attribution()).toThrow(/thread tracking is off/);
  });

  it('a baseline takes idle power × time before the split', async () => {
    const s = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs', modelIdleWatts: 20, modelMaxWatts: 40 });
    samplers.push(s);
    expect(() => s.setBaseline({ gpu: 3 })).toThrow(RangeError);
    // The README's example had dram, which the model (and AMD's counters) lack: said as much
    // ('Expected domain names among package for watts but received "dram"' before).
    expect(() => s.setBaseline({ package: 5, dram: 1 })).toThrow(
      new RangeError('setBaseline(): this source (model) has no "dram" domain (it has: package); give watts for those only, e.g. { package: 12 }'),
    );
    s.setBaseline({ package: 5 });
    s.start();
    await new Promise((r) => setTimeout(r, 200));
    s.stop();
    const a = s.attribution();
    const seconds = Number(s.totals().timeNs - s.totals().startNs) / 1e9;
    expect(a.baseline).toBeCloseTo(5 * seconds, 2);
    expect(a.byDomain[0].baselineWatts).toBe(5);
  });

  // The parts and rows move at attribution steps only: rates taken between two reads over
  // totals()' time (the samples') were off by up to a step's time, and 0 where no step came.
  it("gives the time of the step its figures are as of, which rates divide by", async () => {
    const s = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs', modelIdleWatts: 20, modelMaxWatts: 40 });
    samplers.push(s);
    s.setBaseline({ package: 5 });
    s.start();
    const start = s.totals().startNs;
    expect(s.attribution().timeNs).toBe(start);
    expect(s.threadsAt().timeNs).toBe(start);
    let prev = s.attribution();
    const rates: number[] = [];
    for (let i = 0; i < 8; i++) {
      await sleep(23);
      const a = s.attribution();
      expect(a.timeNs).toBeGreaterThan(prev.timeNs);
      expect(a.timeNs).toBeLessThanOrEqual(s.totals().timeNs);
      expect(a.byDomain[0].held).toBe(false);
      rates.push((a.baseline - prev.baseline) / (Number(a.timeNs - prev.timeNs) / 1e9));
      prev = a;
    }
    s.stop();
    // The baseline, 5 W of the model's 20 W or more, is exactly 5 W × each step's time.
    for (const r of rates) expect(r, rates.join(' ')).toBeCloseTo(5, 3);
  });

  it('setBaseline() reads each value once and hands native the value it checked', () => {
    const s = new Sampler({ source: 'model', threads: 'procfs' });
    samplers.push(s);
    let reads = 0;
    // A getter read again after the check could hand native Infinity (an infinite carry: no
    // baseline energy at all until the next start()).
    s.setBaseline({
      get package() {
        return reads++ === 0 ? 3 : Infinity;
      },
    });
    expect(reads).toBe(1);
    expect(s.attribution().byDomain[0].baselineWatts).toBe(3);
  });

  it('native takes a baseline that is not finite and at least 0 as none', async () => {
    const s = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs', modelIdleWatts: 20, modelMaxWatts: 40 });
    samplers.push(s);
    const handle = nativeHandleOf<{ setBaselineWatts(w: unknown[]): void }>(s);
    for (const w of [Infinity, NaN, -5]) {
      handle.setBaselineWatts([w]);
      expect(s.attribution().byDomain[0].baselineWatts).toBeNull();
    }
    handle.setBaselineWatts([Infinity]);
    s.start();
    await sleep(50);
    // A valid baseline after a bad one is paid: an infinite one left an infinite carry behind.
    s.setBaseline({ package: 5 });
    const before = s.attribution().baseline;
    await sleep(200);
    s.stop();
    expect(s.attribution().baseline - before).toBeGreaterThan(0);
  });

  it('setBaseline() refuses an array with a hole instead of removing the default baseline', () => {
    const s = new Sampler({ source: 'model', threads: 'procfs', modelIdleWatts: 7 });
    samplers.push(s);
    expect(s.attribution().byDomain[0].baselineWatts).toBe(7);
    expect(() => s.setBaseline(new Array<number>(s.domains.length))).toThrow(
      new TypeError('Expected a number between 0 and 1000000 for watts[0] but received undefined of type undefined'),
    );
    expect(s.attribution().byDomain[0].baselineWatts).toBe(7);
  });

  it('a baseline above the measured power takes all of it, and nothing goes negative', async () => {
    const s = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs', modelIdleWatts: 20, modelMaxWatts: 40 });
    samplers.push(s);
    s.setBaseline({ package: 1000 }); // watts, far above the model's 20-40 W
    s.start();
    await new Promise((r) => setTimeout(r, 200));
    s.stop();
    const a = s.attribution();
    const t = a.byDomain[0].ticks;
    expect(t.total).toBeGreaterThan(0n);
    expect(t.baseline).toBe(t.total);
    expect(t.process).toBe(0n);
    expect(t.other).toBe(0n);
    expect(s.threads().every((th) => th.joules === 0)).toBe(true);
  });

  it('calibrateBaseline() keeps the lowest window power and uses it', async () => {
    const s = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs', modelIdleWatts: 12, modelMaxWatts: 60 });
    samplers.push(s);
    s.start();
    const before = s.totals();
    const r = await s.calibrateBaseline({ durationMs: 400 });
    const after = s.totals();
    expect(r.durationMs).toBeGreaterThanOrEqual(399);
    s.stop();
    const meanWatts = (after.readings[0].joules - before.readings[0].joules) / (Number(after.timeNs - before.timeNs) / 1e9);
    expect(r.watts[0].domain).toBe('package');
    // The model's figures are estimates, its baseline too ("Every estimated figure says so").
    expect(r.watts.every((w) => w.estimated)).toBe(true);
    // The model never estimates below its idle power over time, and the lowest 100 ms window
    // cannot exceed the mean over the whole calibration (whatever else the machine is doing).
    // A single window can read a little under idle: the model credits energy ahead at the last
    // rate between its 10 ms utilisation refreshes and never takes any back, so a window that
    // starts just after a busier refresh has had part of its share counted in the one before
    // (1.1% under, seen once in CI; 5% allows a few times that).
    expect(r.watts[0].watts).toBeGreaterThan(12 * 0.95);
    expect(r.watts[0].watts).toBeLessThanOrEqual(meanWatts * 1.01);
    expect(s.attribution().byDomain[0].baselineWatts).toBe(r.watts[0].watts);
    await expect(s.calibrateBaseline({ durationMs: 10 })).rejects.toThrow(
      'Expected an integer between 200 and 600000 for options.durationMs but received 10 of type number',
    );
  });

  // A run that ended during the calibration left its windows after the end without samples: it
  // resolved once the duration was up, with a baseline of the milliseconds before the stop
  // ({ watts: 25.99, durationMs: 404 } for a stop 5 ms in), and set it.
  it('calibrateBaseline() rejects with ERR_JOULETRACE_NOT_STARTED, setting nothing, when the run ends before it does', async () => {
    const s = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs', modelIdleWatts: 12, modelMaxWatts: 60 });
    samplers.push(s);
    s.setBaseline({ package: 3 });
    const ended = (how: string) =>
      expect.objectContaining({
        name: 'JouletraceError',
        code: 'ERR_JOULETRACE_NOT_STARTED',
        message: expect.stringMatching(
          new RegExp(`^calibrateBaseline\\(\\): the sampler was ${how} within the first \\d+ ms of a 400 ms calibration, so no baseline was set: keep it running until the calibration ends, and calibrate again$`),
        ),
      });
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    s.start();
    await sleep(50);
    // Stopped just after it began.
    const stopped = s.calibrateBaseline({ durationMs: 400 });
    setTimeout(() => s.stop(), 5);
    await expect(stopped).rejects.toEqual(ended('stopped'));
    // Stopped and started again.
    s.start();
    const restarted = s.calibrateBaseline({ durationMs: 400 });
    await sleep(150);
    s.stop();
    s.start();
    await expect(restarted).rejects.toEqual(ended('stopped and started again'));
    expect(s.running).toBe(true);
    s.stop();
    expect(s.attribution().byDomain[0].baselineWatts).toBe(3);
    // On a stopped sampler it runs its own: stopped by the caller, it rejects as well (not on its own stop()).
    const own = s.calibrateBaseline({ durationMs: 400 });
    await sleep(150);
    expect(s.running).toBe(true);
    s.stop();
    await expect(own).rejects.toEqual(ended('stopped'));
    expect(s.running).toBe(false);
    // Stopped and started again by the caller: that run is the caller's, left running.
    const mine = s.calibrateBaseline({ durationMs: 400 });
    await sleep(150);
    s.stop();
    s.start();
    await expect(mine).rejects.toEqual(ended('stopped and started again'));
    expect(s.running).toBe(true);
    s.stop();
    expect(s.attribution().byDomain[0].baselineWatts).toBe(3);
    // Left running throughout, its own run is stopped at the end, and the baseline set.
    const r = await s.calibrateBaseline({ durationMs: 400 });
    expect(s.running).toBe(false);
    expect(r.durationMs).toBeGreaterThanOrEqual(399);
    expect(s.attribution().byDomain[0].baselineWatts).toBe(r.watts[0].watts);
  });

  it('calibrateBaseline() waits for samples when the interval is longer than its windows, never a 0 W baseline', async () => {
    // One sample every 500 ms: 100 ms windows would see none and made a 0 W baseline of that.
    const s = new Sampler({ source: 'model', intervalUs: 500_000, threads: 'procfs', modelIdleWatts: 12, modelMaxWatts: 60 });
    samplers.push(s);
    const r = await s.calibrateBaseline({ durationMs: 200 });
    expect(r.watts[0].watts).toBeGreaterThan(12 * 0.95);
    // Two 1 s windows: it says how long it took, not the 200 ms it was asked for.
    expect(r.durationMs).toBeGreaterThanOrEqual(1990);
  });

  // A sampler whose first onSpan listener throws, and a second that counts the spans it gets.
  function withThrowingListener() {
    const s = new Sampler({ source: 'model', intervalUs: 1000, threads: 'procfs' });
    samplers.push(s);
    s.onSpan(() => {
      throw new Error('listener failed');
    });
    const seen = { count: 0 };
    s.onSpan((spans) => (seen.count += spans.length));
    return { s, seen };
  }

  it('close() shuts the native sampler down even when an onSpan listener throws on the last results', async () => {
    const { s, seen } = withThrowingListener();
    s.start();
    s.end(s.begin('last'));
    const tid = s.stats().timing.samplerTid;
    // Blocking (no timer may run and collect it): until the result waits in the ring.
    const block = new Int32Array(new SharedArrayBuffer(4));
    for (let i = 0; i < 400 && s.stats().spans.settled < 1; i++) Atomics.wait(block, 0, 0, 5);
    expect(s.stats().spans.settled).toBe(1);
    // The listener's error surfaces on its own, as an uncaught exception, after close() is done.
    const uncaught: unknown[] = [];
    process.setUncaughtExceptionCaptureCallback((e) => uncaught.push(e));
    try {
      s.close();
      await new Promise((r) => setImmediate(r));
    } finally {
      process.setUncaughtExceptionCaptureCallback(null);
    }
    expect(uncaught).toEqual([new Error('listener failed')]);
    expect(seen.count).toBe(1); // the listener after it had the batch
    expect(() => s.stats()).toThrow(expect.objectContaining({ code: 'ERR_JOULETRACE_CLOSED' }));
    // The native sampler is closed too: its thread (still running at close()) has ended.
    expect(fs.existsSync(`/proc/self/task/${tid}`)).toBe(false);
  });

  it('a throwing onSpan listener leaves stop(), settle() and the listeners after it unharmed', async () => {
    const { s, seen } = withThrowingListener();
    const uncaught: unknown[] = [];
    process.setUncaughtExceptionCaptureCallback((e) => uncaught.push(e));
    try {
      s.start();
      const h = s.begin('a');
      s.end(h);
      const block = new Int32Array(new SharedArrayBuffer(4));
      for (let i = 0; i < 400 && s.stats().spans.settled < 1; i++) Atomics.wait(block, 0, 0, 5);
      // settle() collects the result, calling the listeners: it still resolves.
      expect((await s.settle(h)).label).toBe('a');
      s.end(s.begin('b'));
      s.stop(); // its final collection meets the listener again
      expect(s.running).toBe(false);
      s.start(); // stopped for real: it starts again
      s.stop();
      await new Promise((r) => setImmediate(r));
    } finally {
      process.setUncaughtExceptionCaptureCallback(null);
    }
    expect(seen.count).toBe(2);
    expect(uncaught).toEqual([new Error('listener failed'), new Error('listener failed')]);
  });
});
