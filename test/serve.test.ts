// `jouletrace serve`: the host agent's /metrics, per-pid attribution, arguments, and shutdown.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { processGone, processState } from '../src/cli/proc-stat';
import { serveCommand } from '../src/cli/serve';
import { freePort } from './fixtures/prometheus-server';

const BIN = path.join(__dirname, '..', 'bin/jouletrace.js');

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  vi.restoreAllMocks();
});

function parse(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$/.exec(line);
    if (m) out.set(m[1] + (m[2] ?? ''), Number(m[3]));
  }
  return out;
}

const scrape = async (port: number) => parse(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());

// Starts serve on a free port and waits until /metrics answers; stop() is its SIGTERM (serve's own
// handler: the test runner's are left alone).
async function startServe(args: string[]) {
  const port = await freePort();
  const before = new Set(process.listeners('SIGTERM'));
  const done = serveCommand(['--port', String(port), ...args]);
  let body = '';
  for (let i = 0; i < 100 && !body; i++) {
    await new Promise((r) => setTimeout(r, 50));
    try {
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      if (res.ok) body = await res.text();
    } catch {
      // not listening yet
    }
  }
  const added = () => process.listeners('SIGTERM').filter((l) => !before.has(l));
  return {
    port,
    added,
    stop: async () => {
      expect(added()).toHaveLength(1);
      (added()[0] as () => void)();
      expect(await done).toBe(0);
    },
  };
}

describe('jouletrace serve', () => {
  it('serves machine energy and per-pid attribution on 127.0.0.1, and exits 0 on SIGTERM', async () => {
    // A process to watch: burns CPU until killed.
    const child = spawn(process.execPath, ['-e', 'for(;;){}'], { stdio: 'ignore' });
    cleanups.push(() => child.kill('SIGKILL'));
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const { port, added, stop } = await startServe(['--pid', String(child.pid), '--source', 'model', '--interval', '5', '--grams-per-kwh', '400']);
    // A failure below must not leave this serve running into the next test (its stderr line
    // about this child's exit would land in that test's spy).
    let stopped = false;
    cleanups.push(async () => {
      if (!stopped) for (const l of added()) (l as () => void)();
    });
    expect(stderr.mock.calls.map((c) => String(c[0])).join('')).toContain(`http://127.0.0.1:${port}/metrics`);
    await new Promise((r) => setTimeout(r, 400));
    const v0 = await scrape(port);
    await new Promise((r) => setTimeout(r, 400));
    const v = await scrape(port);
    const pkgKey = 'jouletrace_energy_joules_total{domain="package",package="0",source="model",estimated="true"}';
    const pkg = v.get(pkgKey)!;
    expect(pkg).toBeGreaterThan(0);
    const key = (part: string) => `jouletrace_process_energy_joules_total{pid="${child.pid}",command="node",part="${part}",estimated="true"}`;
    const parts = ['process', 'baseline', 'other'].map((p) => v.get(key(p))!);
    // The spinning child gets a real share of the energy.
    expect(parts[0]).toBeGreaterThan(0);
    const threads = (await import('../src/threads')).bpfReadiness().ready ? 'bpf' : 'procfs';
    const running = `jouletrace_process_running{pid="${child.pid}",command="node",threads="${threads}"}`;
    expect(v.get(running)).toBe(1);
    expect(v.get(`jouletrace_process_dropped_threads_total{pid="${child.pid}",command="node"}`)).toBe(0);
    // Its sampler's parts add up to the machine total, read a moment apart by another sampler:
    // compared over the window between two scrapes, as the two samplers start at different
    // moments (the process's opens its thread tracker first; a loaded run saw 50% apart at the
    // first scrape, counted from each one's start).
    const grown = (x: Map<string, number>) => ['process', 'baseline', 'other'].reduce((n, p) => n + x.get(key(p))!, 0);
    const sum = grown(v) - grown(v0);
    const machine = pkg - v0.get(pkgKey)!;
    expect(Math.abs(sum - machine) / machine).toBeLessThan(0.25);
    expect(v.get('jouletrace_carbon_grams_total{scope="machine",estimated="true"}')).toBeCloseTo(pkg * (400 / 3.6e6), 3);
    // No in-process app metrics on a host agent, nor span and request metrics.
    expect([...v.keys()].some((k) => k.startsWith('app_'))).toBe(false);
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(text).not.toMatch(/^# HELP (jouletrace_span_energy_joules|http_server_request_energy_joules|jouletrace_incomplete_spans_total|jouletrace_incomplete_requests_total) /m);
    expect(text).toMatch(/^# HELP jouletrace_sampler_read_errors_total /m);
    expect((await fetch(`http://127.0.0.1:${port}/nope`)).status).toBe(404);

    // The watched process exits: its figures stay as they were (they went on growing, the
    // baseline and the rest charged to a process that was gone), with one line on stderr.
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    // Noticed without a scrape: series frozen at the exit, not at whenever the next scrape comes.
    for (let i = 0; i < 40 && !stderr.mock.calls.some((c) => String(c[0]).includes('exited')); i++) await new Promise((r) => setTimeout(r, 50));
    expect(stderr.mock.calls.map((c) => String(c[0])).join('')).toContain(`jouletrace serve: process ${child.pid} (node) exited`);
    const atExit = await scrape(port);
    await new Promise((r) => setTimeout(r, 300));
    const later = await scrape(port);
    for (const p of ['process', 'baseline', 'other']) expect(later.get(key(p)), p).toBe(atExit.get(key(p)));
    expect(later.get(running)).toBe(0);
    expect(later.get(pkgKey)!).toBeGreaterThan(atExit.get(pkgKey)!); // the machine's energy goes on
    expect(stderr.mock.calls.map((c) => String(c[0])).join('')).toContain(`jouletrace serve: process ${child.pid} (node) exited`);

    stopped = true;
    await stop();
    await expect(fetch(`http://127.0.0.1:${port}/metrics`)).rejects.toThrow();
    expect(added()).toHaveLength(0);
  });

  it('keeps watching a process whose main thread exited while another thread runs', async () => {
    // The leader thread is a zombie; the process lives on in its other thread, spinning.
    const code = 'import ctypes, threading\nthreading.Thread(target=lambda: [0 for _ in iter(int, 1)]).start()\nctypes.CDLL(None).pthread_exit(None)\n';
    const child = spawn('python3', ['-c', code], { stdio: 'ignore' });
    cleanups.push(() => child.kill('SIGKILL'));
    // Python itself, past any wrapper (pyenv's shims are bash scripts that exec it).
    const isPython = () => path.basename(fs.readlinkSync(`/proc/${child.pid}/exe`)).startsWith('python');
    for (let i = 0; i < 250 && !isPython(); i++) await new Promise((r) => setTimeout(r, 20));
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const { port, stop } = await startServe(['--pid', String(child.pid), '--source', 'model', '--interval', '5']);
    cleanups.push(stop);
    await new Promise((r) => setTimeout(r, 1300)); // past the exit check's second
    const comm = fs.readFileSync(`/proc/${child.pid}/comm`, 'utf8').trim(); // python3, python3.11, ...
    const key = `jouletrace_process_energy_joules_total{pid="${child.pid}",command="${comm}",part="process",estimated="true"}`;
    const first = (await scrape(port)).get(key)!;
    await new Promise((r) => setTimeout(r, 300));
    expect((await scrape(port)).get(key)!).toBeGreaterThan(first);
    expect(stderr.mock.calls.map((c) => String(c[0])).join('')).not.toContain('exited');
  });

  it('refuses a process that has exited and not been reaped, as one that is not there', async () => {
    // sleep 0.2 ends as the shell execs into a sleep that never reaps it: a zombie.
    const parent = spawn('sh', ['-c', 'sleep 0.2 & echo $!; exec sleep 5'], { stdio: ['ignore', 'pipe', 'ignore'] });
    cleanups.push(() => parent.kill('SIGKILL'));
    const zombie = await new Promise<number>((resolve) => parent.stdout!.once('data', (d: Buffer) => resolve(Number(String(d).trim()))));
    for (let i = 0; i < 100 && !/^\d+ \(sleep\) Z /.test(fs.readFileSync(`/proc/${zombie}/stat`, 'utf8')); i++) await new Promise((r) => setTimeout(r, 20));
    const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    expect(await serveCommand(['--pid', String(zombie), '--port', '0', '--source', 'model'])).toBe(1);
    expect(String(err.mock.calls.at(-1)![0])).toBe(`jouletrace serve: process ${zombie} has exited (its parent has not reaped it yet)\n`);
  });

  // Out of file descriptors (the procfs backend holds 2 a thread; a flood of connections takes
  // the rest), /proc/PID/stat could not be opened, and a live process was declared exited: its
  // sampler closed, its series frozen for good, jouletrace_process_running 0.
  it('keeps watching a live process while it cannot open /proc for want of file descriptors', async () => {
    const target = spawn('sleep', ['60'], { stdio: 'ignore' });
    cleanups.push(() => target.kill('SIGKILL'));
    const port = await freePort();
    const limit = 64;
    const serve = spawn('bash', ['-c', `ulimit -n ${limit} && exec "$0" "$@"`, process.execPath, BIN, 'serve', '--port', String(port), '--pid', String(target.pid), '--source', 'model'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    cleanups.push(() => serve.kill('SIGKILL'));
    let stderr = '';
    serve.stderr!.on('data', (d: Buffer) => (stderr += String(d)));
    for (let i = 0; i < 200 && !stderr.includes('/metrics'); i++) await new Promise((r) => setTimeout(r, 25));
    expect(stderr).toContain(`http://127.0.0.1:${port}/metrics`);
    // Connections it accepts and keeps (their requests never end) until it has no descriptor left.
    const sockets: net.Socket[] = [];
    cleanups.push(() => sockets.forEach((c) => c.destroy()));
    for (let i = 0; i < limit * 2; i++) {
      const c = net.connect(port, '127.0.0.1', () => c.write('GET /metrics HTTP/1.1\r\nHost: x\r\n'));
      c.on('error', () => {});
      sockets.push(c);
    }
    // Every descriptor number under the limit taken (one above it may come from the test runner).
    const fds = () => fs.readdirSync(`/proc/${serve.pid}/fd`).filter((fd) => Number(fd) < limit).length;
    for (let i = 0; i < 200 && fds() < limit; i++) await new Promise((r) => setTimeout(r, 25));
    expect(fds()).toBe(limit);
    await new Promise((r) => setTimeout(r, 1300)); // past the exit check's second
    for (const c of sockets) c.destroy();
    let text = '';
    for (let i = 0; i < 100 && !text; i++) {
      try {
        text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      } catch {
        await new Promise((r) => setTimeout(r, 25)); // the closed connections' descriptors not yet given back
      }
    }
    expect(parse(text).get(`jouletrace_process_running{pid="${target.pid}",command="sleep",threads="${(await import('../src/threads')).bpfReadiness().ready ? 'bpf' : 'procfs'}"}`)).toBe(1);
    expect(stderr).not.toContain('exited');
    serve.kill('SIGTERM');
    expect(await new Promise((r) => serve.once('exit', r))).toBe(0);
  });

  // It took the model source without a word of what the hardware sources lacked.
  it('says at start-up why --source auto passed over each source before the one it took', async () => {
    // An msr device that reads nothing, and no perf PMU or RAPL zone: auto comes down to model.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-serve-'));
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    fs.writeFileSync(path.join(dir, 'msr0'), '');
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const { stop } = await startServe(['--msr-path', `${dir}/msr%d`, '--perf-pmu-root', dir, '--powercap-root', dir]);
    await stop();
    const lines = stderr.mock.calls.map((c) => String(c[0])).join('').split('\n');
    const notes = lines.filter((l) => l.startsWith('jouletrace serve: note: '));
    expect(notes).toHaveLength(3);
    expect(notes[0]).toMatch(new RegExp(`^jouletrace serve: note: msr unavailable here: ${dir}/msr0: reading the RAPL unit register 0x\\w+ failed`));
    expect(notes[1]).toMatch(new RegExp(`^jouletrace serve: note: perf unavailable here: ${dir}/type: .*not a perf PMU directory$`));
    expect(notes[2]).toMatch(new RegExp(`^jouletrace serve: note: powercap unavailable here: no RAPL zones under ${dir} — check --powercap-root: it should name`));
    // Before the address, which says which source it took.
    expect(lines.indexOf(notes[2])).toBeLessThan(lines.findIndex((l) => l.includes('/metrics (source model')));
  });

  it('prints help and rejects bad arguments with exit code 2', async () => {
    const out = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    expect(await serveCommand(['--help'])).toBe(0);
    expect(String(out.mock.calls[0][0])).toMatch(/--host HOST .*default 127\.0\.0\.1/);
    expect(await serveCommand(['--port', '70000'])).toBe(2);
    const lastError = () => String(err.mock.calls.at(-1)![0]);
    expect(lastError()).toContain('jouletrace serve: --port must be an integer from 0 to 65535, not 70000');
    expect(await serveCommand(['--pid', 'x'])).toBe(2);
    expect(lastError()).toContain('--pid expects a number but received "x"');
    expect(await serveCommand(['--pid', '1', '--pid', '0'])).toBe(2);
    expect(lastError()).toContain('--pid must be an integer from 1 to 4194304, not 0');
    expect(await serveCommand(['--interval', '20us'])).toBe(2);
    expect(lastError()).toContain('--interval must be from 50us to 1s, not 20us');
    expect(await serveCommand(['--source', 'nope'])).toBe(2);
    expect(lastError()).toContain('--source must be one of auto, msr, perf, powercap, model, not "nope"');
    expect(await serveCommand(['--bogus'])).toBe(2);
    expect(await serveCommand(['--country', 'FRA', '--grams-per-kwh', '3'])).toBe(2);
    expect(lastError()).toContain('use --country or --grams-per-kwh, not both');
  });

  it('reports a port in use as an error that says what to do, exit code 1', async () => {
    const http = await import('node:http');
    const blocker = http.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => blocker.close(r)));
    const port = (blocker.address() as { port: number }).port;
    const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    expect(await serveCommand(['--port', String(port), '--source', 'model'])).toBe(1);
    expect(err.mock.calls.map((c) => String(c[0])).join('')).toBe(
      `jouletrace serve: cannot listen on 127.0.0.1:${port}: listen EADDRINUSE: address already in use 127.0.0.1:${port}: another process has the port (perhaps another jouletrace serve, or an application exporting OpenTelemetry metrics with @opentelemetry/exporter-prometheus, whose default port is 9464 too); pick another with --port N\n`,
    );
  });

  const lowPortsOpen = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8')) <= 1;
  it.skipIf(process.getuid?.() !== 0 || lowPortsOpen)(
    `says what a port below 1024 needs, to a user without the right to it${lowPortsOpen ? ' (skipped: net.ipv4.ip_unprivileged_port_start lets anyone bind port 1)' : ''}`,
    () => {
      // As user nobody: root binds any port. Port 1: refused before any check of its use.
      const r = spawnSync(process.execPath, [BIN, 'serve', '--port', '1', '--source', 'model'], { uid: 65534, gid: 65534, encoding: 'utf8', timeout: 15_000 });
      expect(r.status, r.stderr).toBe(1);
      expect(r.stderr).toBe(
        'jouletrace serve: cannot listen on 127.0.0.1:1: listen EACCES: permission denied 127.0.0.1:1: ports below 1024 need root or CAP_NET_BIND_SERVICE (or a lower sysctl net.ipv4.ip_unprivileged_port_start); or pick one above with --port N\n',
      );
    },
  );

  it('says what to do when out of file descriptors at listen()', async () => {
    // Every descriptor taken just before listen(), once the samplers have theirs.
    const script = `
      const fs = require('node:fs');
      const http = require('node:http');
      const listen = http.Server.prototype.listen;
      http.Server.prototype.listen = function (...args) {
        try { for (;;) fs.openSync('/dev/null', 'r'); } catch {}
        return listen.apply(this, args);
      };
      require(${JSON.stringify(path.join(__dirname, '..', 'dist/cjs/cli/main.js'))}).main(process.argv.slice(1)).then((code) => process.exit(code));`;
    const port = await freePort();
    const r = spawnSync(process.execPath, ['-e', script, 'serve', '--port', String(port), '--source', 'model'], { encoding: 'utf8', timeout: 15_000 });
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toBe(
      `jouletrace serve: cannot listen on 127.0.0.1:${port}: listen EMFILE: too many open files 127.0.0.1:${port}: out of file descriptors; raise the limit (ulimit -n; the procfs backends of the --pids keep up to a quarter of them)\n`,
    );
  });
});

describe('processState', () => {
  // A procfs of the test's own: what /proc/PID/stat and /proc/PID/task hold, or something in
  // their place that cannot be read (EISDIR, ENOTDIR: stand-ins for EMFILE, ENOMEM and EACCES,
  // errors that say nothing of the process).
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-proc-'));
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));
  const stat = (name: string, state: string, start: number) => `${name.split('/').at(-1)} (node) ${state} 1 1 1 0 -1 0 0 0 0 0 5 3 0 0 20 0 1 0 ${start} 0 0\n`;
  const put = (rel: string, content: string | null) => {
    const p = path.join(root, rel);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    if (content === null) fs.mkdirSync(p);
    else fs.writeFileSync(p, content);
  };

  it('tells a process running, gone, a zombie and its pid reused from one whose files cannot be read', () => {
    put('100/stat', stat('100', 'S', 777));
    expect(processState(100, 777, root)).toBe('running');
    expect(processState(100, 778, root)).toBe('reused');
    expect(processState(101, 777, root)).toBe('exited');
    put('102/stat', null); // reading it fails with EISDIR
    expect(processState(102, 777, root)).toBe('unknown');
    expect(processGone(102, 777, root)).toBe(false);
    expect(processGone(101, 777, root)).toBe(true);
    fs.writeFileSync(path.join(root, '103'), ''); // 103/stat: ENOTDIR
    expect(processState(103, 777, root)).toBe('unknown');
  });

  it('takes a zombie leader with a live thread as running, and one whose threads cannot be read as unknown', () => {
    put('200/stat', stat('200', 'Z', 5));
    put('200/task/200/stat', stat('200', 'Z', 5));
    put('200/task/201/stat', stat('201', 'R', 6));
    expect(processState(200, 5, root)).toBe('running');
    fs.rmSync(path.join(root, '200/task/201'), { recursive: true });
    expect(processState(200, 5, root)).toBe('zombie');
    expect(processGone(200, 5, root)).toBe(true);
    put('200/task/202/stat', null);
    expect(processState(200, 5, root)).toBe('unknown');
    fs.rmSync(path.join(root, '200/task'), { recursive: true });
    fs.writeFileSync(path.join(root, '200/task'), ''); // readdir: ENOTDIR
    expect(processState(200, 5, root)).toBe('unknown');
    expect(processGone(200, 5, root)).toBe(false);
  });
});
