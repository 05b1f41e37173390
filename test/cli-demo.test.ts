// `jouletrace demo` completes on this VM, and its report renders in headless Chromium.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReportCollector } from '../src/report/collector';
import { niceTicks, renderReport } from '../src/report/render';
import { Sampler } from '../src/sampler';
import type { ReportData } from '../src/report/types';
import { countingPowercap } from './fixtures/emulated-devices';
import { itGated, setupInstalls, toolsRequired } from './fixtures/gated';

// Debian's chromium package; Ubuntu ships Chromium as a snap only, which setup does not install.
const noChromium =
  spawnSync('chromium', ['--version'], { encoding: 'utf8' }).status === 0
    ? undefined
    : 'no chromium on PATH: apt-get install chromium (Debian), snap install chromium (Ubuntu)';
import { itBpf } from './fixtures/bpf-required';

const ROOT = path.join(__dirname, '..');
const BIN = path.join(ROOT, 'bin/jouletrace.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'jt-demo-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Decodes an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes) to RGBA pixels. */
function decodePng(buf: Buffer): { width: number; height: number; rgba: Uint8Array } {
  expect(buf.subarray(0, 8).toString('hex')).toBe('89504e470d0a1a0a');
  let off = 8;
  let width = 0;
  let height = 0;
  let colorType = 0;
  const idat: Buffer[] = [];
  while (off < buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString('latin1', off + 4, off + 8);
    const data = buf.subarray(off + 8, off + 8 + len);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      expect(data[8]).toBe(8); // bit depth
      colorType = data[9];
      expect(data[12]).toBe(0); // not interlaced
    } else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') break;
    off += 12 + len;
  }
  const channels = colorType === 6 ? 4 : colorType === 2 ? 3 : 0;
  expect(channels).toBeGreaterThan(0);
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const cur = new Uint8Array(stride);
  const prev = new Uint8Array(stride);
  const rgba = new Uint8Array(width * height * 4);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let i = 0; i < stride; i++) {
      const a = i >= channels ? cur[i - channels] : 0;
      const b = prev[i];
      const c = i >= channels ? prev[i - channels] : 0;
      let v = line[i];
      if (filter === 1) v += a;
      else if (filter === 2) v += b;
      else if (filter === 3) v += (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - b);
        const pc = Math.abs(p - c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      cur[i] = v & 0xff;
    }
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 4;
      rgba[o] = cur[x * channels];
      rgba[o + 1] = cur[x * channels + 1];
      rgba[o + 2] = cur[x * channels + 2];
      rgba[o + 3] = channels === 4 ? cur[x * channels + 3] : 255;
    }
    prev.set(cur);
  }
  return { width, height, rgba };
}

function screenshot(htmlFile: string, png: string): void {
  const profile = fs.mkdtempSync(path.join(tmp, 'chromium-'));
  const r = spawnSync(
    'chromium',
    [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      `--user-data-dir=${profile}`,
      `--screenshot=${png}`,
      '--window-size=1280,2000',
      `file://${htmlFile}`,
    ],
    { encoding: 'utf8', timeout: 20_000 },
  );
  if (!fs.existsSync(png)) throw new Error(`chromium wrote no screenshot (status ${r.status}): ${r.stderr}`);
}

interface DemoJson {
  source: string;
  estimated: boolean;
  durationS: number;
  requests: number;
  routes: Array<{ route: string; count: number; joules: { sum: number; mean: number; p50: number; p99: number } }>;
  threads: Array<{ tid: number; name: string; role: string | null; onCpuNs: number; joules: number }>;
  attribution: { total: number; process: number; baseline: number; other: number };
  spans: Array<{ label: string; count: number; joules: { mean: number } }>;
  report: string;
}

describe('jouletrace demo, bad report path', () => {
  it('fails before running the workload when the report cannot be written', () => {
    const r = spawnSync(process.execPath, [BIN, 'demo', '--seconds', '30', '--no-probe', '--html', '/nonexistent/dir/r.html'], {
      encoding: 'utf8',
      timeout: 10_000,
      env: { ...process.env, NO_COLOR: '1' },
    });
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toContain('jouletrace demo: cannot write /nonexistent/dir/r.html: ENOENT');
    expect(r.stdout).not.toContain('Measuring');
  });

  it('leaves no temporary report behind when interrupted', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'interrupted-'));
    const child = spawn(process.execPath, [BIN, 'demo', '--seconds', '30', '--no-probe'], { cwd: dir, stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 1500));
    expect(fs.readdirSync(dir).some((f) => f.includes('.jouletrace-'))).toBe(true); // being written
    child.kill('SIGINT');
    const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => child.once('exit', (c, s) => resolve([c, s])));
    expect(signal ?? code).toBe('SIGINT');
    expect(fs.readdirSync(dir)).toEqual([]);
  });
});

describe('jouletrace demo on measured counters', () => {
  // The demo calibrated idle power for 500 ms, then started its collector: the page said
  // "duration 2.10 s" beside "package-0 22.430 J, 8.59 W average", totals over the sampler's
  // 2.61 s. The collector now starts with the sampler, the calibration inside its window.
  it("gives its report the duration over which the page's totals and averages are taken", () => {
    const { e, writer } = countingPowercap();
    const html = path.join(tmp, 'measured.html');
    try {
      const r = spawnSync(process.execPath, [BIN, 'demo', '--seconds', '2', '--no-probe', '--json', '--html', html, '--source', 'powercap', '--powercap-root', e.powercapRoot], {
        encoding: 'utf8',
        timeout: 25_000,
        env: { ...process.env, NO_COLOR: '1' },
      });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toContain('calibrating idle power for 500 ms');
      const res = JSON.parse(r.stdout) as DemoJson;
      expect(res.estimated).toBe(false);
      const page = fs.readFileSync(html, 'utf8');
      const duration = Number(/<td>duration<\/td><td>([\d.]+) s<\/td>/.exec(page)![1]);
      const [, joules, watts] = /<td>package-0<\/td><td>([\d.]+) J, ([\d.]+) W average<\/td>/.exec(page)!.map(Number);
      // The page's last point is taken at the sampler's final sample (the 500 ms of calibration
      // were missing); its averages are its totals over that duration.
      expect(Math.abs(duration - res.durationS)).toBeLessThan(0.25);
      expect(Math.abs(joules / watts - duration)).toBeLessThan(0.25);
      expect(page).toContain('baseline (idle) power measured over the first 500 ms, before the workload');
    } finally {
      writer.kill();
      e.close();
    }
  }, 30_000);
});

describe('jouletrace demo whose counters stop during the workload', () => {
  // They read as a measured 0 W, with no word of it (run notes it).
  it('notes that they stood still, in its text and its report', () => {
    const { e, writer } = countingPowercap();
    const html = path.join(tmp, 'still.html');
    try {
      const r = spawnSync(
        process.execPath,
        ['-r', path.join(__dirname, 'fixtures', 'failing-start.cjs'), BIN, 'demo', '--seconds', '2', '--no-probe', '--html', html, '--source', 'powercap', '--powercap-root', e.powercapRoot],
        {
          encoding: 'utf8',
          timeout: 25_000,
          env: { ...process.env, NO_COLOR: '1', JOULETRACE_TEST_HOLD_PID: String(writer.pid), JOULETRACE_TEST_HOLD_AFTER_CALIBRATION: '1' },
        },
      );
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^ {2}note: powercap's counters stood still for [2-9]\.\d s at a stretch: energy over such a stretch reads 0 J/m);
      expect(fs.readFileSync(html, 'utf8')).toMatch(/powercap&#39;s counters stood still for [2-9]\.\d s at a stretch/);
    } finally {
      writer.kill('SIGKILL');
      e.close();
    }
  }, 30_000);
});

describe('jouletrace demo whose reads fail to the end of the workload', () => {
  // No read measured the threads' time after calibration: their rows read a plain, lower figure
  // (run marks such rows; demo shares its marker).
  it("marks each thread's time that no read measured, in its table, its JSON and its report", () => {
    const { e, writer } = countingPowercap();
    const html = path.join(tmp, 'unmeasured.html');
    try {
      const r = spawnSync(
        process.execPath,
        ['-r', path.join(__dirname, 'fixtures', 'failing-start.cjs'), BIN, 'demo', '--seconds', '2', '--no-probe', '--json', '--html', html, '--source', 'powercap', '--powercap-root', e.powercapRoot],
        {
          encoding: 'utf8',
          timeout: 25_000,
          env: {
            ...process.env,
            NO_COLOR: '1',
            JOULETRACE_TEST_HOLD_PID: String(writer.pid),
            JOULETRACE_TEST_JUNK_AFTER_CALIBRATION: path.join(e.zonePath('intel-rapl:0'), 'energy_uj'),
          },
        },
      );
      expect(r.status, r.stderr).toBe(0);
      const res = JSON.parse(r.stdout) as { threads: Array<{ tid: number; role: string | null; onCpuNs: number; unmeasuredNs: number }> };
      const server = res.threads.find((t) => t.role === 'main: server');
      expect(server, JSON.stringify(res.threads)).toBeDefined();
      // The server ran through the whole workload, all of it after the reads began to fail.
      expect(server!.unmeasuredNs).toBeGreaterThan(server!.onCpuNs / 2);
      expect(server!.unmeasuredNs).toBeLessThanOrEqual(server!.onCpuNs);
      expect(r.stderr).toMatch(new RegExp(`^ +${server!.tid} .* {2}\\([\\d.]+ ms unmeasured, not in joules\\)$`, 'm'));
      expect(r.stderr).toMatch(/^ {2}note: \d+ of \d+ reads of the energy source failed \(package-0 \d+\): .* [\d.]+ ms of thread time \(marked in the thread table\) has no energy/m);
      // Failed reads are not counters that stood still (a hypervisor's doing, it said).
      expect(r.stderr).not.toMatch(/stood still/);
      // No request settled, and the table says so rather than stand empty under its heading.
      expect(r.stderr).toMatch(/^ {2}none of the \d+ requests settled: no energy interval covered them/m);
      expect(fs.readFileSync(html, 'utf8')).toMatch(/[\d.]+ (ms|s) of the tracked threads&#39; on-CPU time has no energy in these figures/);
    } finally {
      writer.kill('SIGKILL');
      e.close();
    }
  }, 30_000);
});

describe('jouletrace demo whose counters fail before the workload', () => {
  // A start() or a calibration that failed escaped to bin/jouletrace.js in the library's words
  // ("jouletrace: calibrateBaseline(): ... set one with setBaseline(), or use source 'model'"),
  // the sampler left open.
  it.each([
    ['cannot start', { JOULETRACE_TEST_CUT_ON_START: 'energy_uj' }, /^jouletrace demo: start\(\): the first read of the 'powercap' source failed for package-0 /m],
    ['stand still', {}, /^jouletrace demo: calibrateBaseline\(\): package-0 did not move in \d+ ms, so no baseline can be measured from it \([^)]*\): use --source model\n/m],
  ])('says so in its own name and flags when they %s, closing the sampler and writing no report', (_, env: Record<string, string>, says) => {
    const { e, writer } = countingPowercap();
    const dir = fs.mkdtempSync(path.join(tmp, 'failing-'));
    try {
      const cut = env.JOULETRACE_TEST_CUT_ON_START && path.join(e.zonePath('intel-rapl:0'), 'energy_uj');
      const r = spawnSync(
        process.execPath,
        ['-r', path.join(__dirname, 'fixtures', 'failing-start.cjs'), BIN, 'demo', '--seconds', '2', '--no-probe', '--json', '--html', path.join(dir, 'r.html'), '--source', 'powercap', '--powercap-root', e.powercapRoot],
        { encoding: 'utf8', timeout: 20_000, env: { ...process.env, NO_COLOR: '1', JOULETRACE_TEST_HOLD_PID: String(writer.pid), ...(cut ? { JOULETRACE_TEST_CUT_ON_START: cut } : {}) } },
      );
      expect(r.status, r.stderr).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(says);
      expect(r.stderr).toMatch(/\nfailing-start: 0 sampler\(s\) left open\n$/);
      expect(fs.readdirSync(dir)).toEqual([]);
    } finally {
      writer.kill('SIGKILL');
      e.close();
    }
  });
});

describe('jouletrace demo, a run longer than its ring', () => {
  it('reports no lost samples: nothing reads the ring, whose oldest samples are overwritten', () => {
    // 65536 samples filled the default ring (3.3 s at 50 µs), and were counted as dropped. A
    // run that long fell short of 65536 samples on a busy machine (76-88k in 6 s at 50 µs): the
    // default ring is 4 samples here instead (test/fixtures/small-default-ring.cjs).
    const preload = path.join(__dirname, 'fixtures', 'small-default-ring.cjs');
    const r = spawnSync(process.execPath, ['-r', preload, BIN, 'demo', '--seconds', '2', '--no-probe', '--no-html'], {
      encoding: 'utf8',
      timeout: 20_000,
      env: { ...process.env, NO_COLOR: '1' },
    });
    expect(r.status, r.stderr).toBe(0);
    const m = /^Sampler: (\d+) samples at \d+ Hz, .*, (\d+) dropped, /m.exec(r.stdout);
    expect(m, r.stdout).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThan(4 * 10);
    expect(Number(m![2])).toBe(0);
  }, 30_000);
});

describe('jouletrace demo', () => {
  const html = path.join(tmp, 'report.html');
  let run: { status: number | null; stdout: string; stderr: string };
  beforeAll(() => {
    const r = spawnSync(process.execPath, [BIN, 'demo', '--seconds', '4', '--json', '--html', html], {
      encoding: 'utf8',
      timeout: 25_000,
      cwd: tmp,
      env: { ...process.env, NO_COLOR: '1' },
    });
    run = { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }, 30_000);

  it('completes and measures both routes, the cheap one cheaper', () => {
    expect(run.status, run.stderr).toBe(0);
    const res = JSON.parse(run.stdout) as DemoJson;
    expect(res.report).toBe(html);
    expect(res.estimated).toBe(res.source === 'model');
    const cheap = res.routes.find((r) => r.route === 'GET /cheap')!;
    const dear = res.routes.find((r) => r.route === 'GET /expensive')!;
    expect(cheap.count).toBeGreaterThan(50);
    expect(dear.count).toBeGreaterThan(10);
    expect(cheap.count + dear.count).toBeLessThanOrEqual(res.requests);
    expect(cheap.joules.mean).toBeGreaterThan(0);
    expect(dear.joules.mean).toBeGreaterThan(3 * cheap.joules.mean);
    // The server thread and both workers appear; energy is conserved.
    for (const role of ['main: server', 'loadgen', 'cpu-hog']) {
      const t = res.threads.find((x) => x.role === role);
      expect(t, role).toBeDefined();
      expect(t!.onCpuNs, role).toBeGreaterThan(0);
      expect(t!.joules, role).toBeGreaterThan(0);
    }
    // The hog spins for 40 % of the run, 1.6 s: never more CPU than that (and its start-up), and
    // a good part of it even where other processes keep both CPUs of a 2-CPU machine busy (0.53 s
    // beside five busy loops).
    const hogNs = res.threads.find((x) => x.role === 'cpu-hog')!.onCpuNs;
    expect(hogNs).toBeGreaterThan(0.3e9);
    expect(hogNs).toBeLessThan(1.6e9 + 100e6);
    const a = res.attribution;
    expect(a.process).toBeGreaterThan(0);
    expect(a.process + a.baseline + a.other).toBeCloseTo(a.total, 6);
    // Every expensive request ran its computation as a span.
    const span = res.spans.find((x) => x.label === 'expensive: compute')!;
    expect(span.count).toBeGreaterThanOrEqual(dear.count - 1);
    expect(span.count).toBeLessThanOrEqual(dear.count);
    expect(span.joules.mean).toBeGreaterThan(0);
  });

  // The help said that with --json "progress still goes to stderr": the whole report goes there.
  it('puts the JSON alone on stdout and the human-readable report on stderr, as its help says', () => {
    const help = spawnSync(process.execPath, [BIN, 'demo', '--help'], { encoding: 'utf8', timeout: 10_000 });
    expect(help.stdout).toContain(
      '  --json            print the results as JSON on stdout; the human-readable\n                    report (the probe report and the tables) goes to stderr\n',
    );
    expect(() => JSON.parse(run.stdout)).not.toThrow();
    for (const heading of ['Energy sources (auto picks', 'Joules per request', 'Energy per thread']) expect(run.stderr).toContain(heading);
  });

  // The span line read "(the computation alone, with its share of the baseline: 11.74 W)", the
  // watts read as the baseline's share; they are the span's average power while it ran.
  it("gives the span's joules per run and its power while it ran, each for what it is", () => {
    expect(run.stderr).toMatch(/^ {2}span 'expensive: compute': \d+ × [\d.]+ [µm]?J mean, [\d.]+ [µm]?J p99 \(the computation alone, including its share of the baseline; [\d.]+ m?W while it ran\)$/m);
  });

  itBpf('keeps the probe report first and says when figures are estimated', () => {
    // With --json the human text goes to stderr; the probe report leads it.
    const probeAt = run.stderr.indexOf('Energy sources (auto picks');
    expect(probeAt).toBeGreaterThanOrEqual(0);
    expect(probeAt).toBeLessThan(run.stderr.indexOf("Measuring with 'model'"));
    expect(run.stderr).toMatch(/ESTIMATED by the model source/);
    expect(run.stderr).toMatch(/Joules per request \(estimated\)/);
    expect(run.stderr).toMatch(/main: server/);
    expect(run.stderr).toMatch(/cpu-hog/);
    expect(run.stderr).toMatch(/loadgen/);
    expect(run.stderr).toMatch(/this process .* %/);
    expect(run.stderr).toMatch(/eBPF \((task-storage|compat) build\) saw \d+ context switches/);
    expect(run.stderr).toMatch(/Report written to/);
  });

  it('writes a self-contained report whose four charts all hold data', () => {
    const text = fs.readFileSync(html, 'utf8');
    expect(text).not.toMatch(/<script|<link|<img|(src|href)=["']?https?:/);
    for (const id of ['power', 'threads', 'records', 'proportionality']) {
      const section = new RegExp(`<section id="${id}">(.*?)</section>`, 's').exec(text)?.[1] ?? '';
      expect(section, id).toContain('<svg');
      const paths = [...section.matchAll(/<path class="data[^"]*"[^>]* d="([^"]+)"/g)].map((m) => m[1]);
      expect(paths.length, id).toBeGreaterThan(0);
      // Each path has real geometry: several coordinates, none NaN.
      for (const d of paths) {
        expect(d).not.toContain('NaN');
        expect(d.match(/-?\d+(\.\d+)?/g)!.length).toBeGreaterThan(3);
      }
    }
    expect(text).toContain('estimated: no energy counters');
    expect(text).toContain('GET /expensive');
  });

  // The summary table's figures were written bare beside an "estimated" badge, where the
  // terminal said "(estimated)" of the same figures.
  it("says of each energy figure in the report's summary that it is estimated when it is", () => {
    const res = JSON.parse(run.stdout) as DemoJson;
    const text = fs.readFileSync(html, 'utf8');
    const rows = new Map([...text.matchAll(/<tr><td>([^<]*)<\/td><td>([^<]*)<\/td><\/tr>/g)].map((m) => [m[1], m[2]]));
    for (const name of ['GET /cheap', 'GET /expensive', 'package-0', 'this process']) {
      expect(rows.get(name), name).toBeDefined();
      if (res.estimated) expect(rows.get(name), name).toMatch(/ \(estimated\)$/);
      else expect(rows.get(name), name).not.toContain('estimated');
    }
    expect(rows.get('sampler')).not.toContain('estimated');
  });

  // Required only where set-up installs it: on Ubuntu it leaves chromium out (a snap only there).
  itGated('renders in headless Chromium: the page is not blank and the charts are drawn', noChromium, toolsRequired() && setupInstalls('chromium'), 'JOULETRACE_REQUIRE_TOOLS=1', () => {
    const png = path.join(tmp, 'report.png');
    screenshot(html, png);
    const { width, height, rgba } = decodePng(fs.readFileSync(png));
    expect([width, height]).toEqual([1280, 2000]);
    let ink = 0;
    let colored = 0;
    for (let i = 0; i < rgba.length; i += 4) {
      const [r, g, b] = [rgba[i], rgba[i + 1], rgba[i + 2]];
      if (r < 240 || g < 240 || b < 240) ink++;
      // Saturated pixels: chart series (text and axes are grey).
      if (Math.max(r, g, b) - Math.min(r, g, b) > 60) colored++;
    }
    const total = width * height;
    expect(ink / total).toBeGreaterThan(0.03);
    expect(colored / total).toBeGreaterThan(0.01);
  });
});

describe('ReportCollector', () => {
  it('turns polls of a running sampler into power and per-thread series that add up', async () => {
    const sampler = new Sampler({ source: 'model', intervalUs: 1000 });
    try {
      sampler.start();
      const collector = new ReportCollector(sampler, { periodMs: 50 }).start();
      collector.labelThread(process.pid, 'main');
      const end = Date.now() + 500;
      while (Date.now() < end) {
        const t = Date.now() + 20;
        while (Date.now() < t);
        await new Promise((r) => setTimeout(r, 5));
      }
      collector.addRecord({ label: 'spin', joules: 0.5, endNs: process.hrtime.bigint(), durationMs: 500 }, 'span');
      collector.stop();
      sampler.stop();
      const d = collector.data();
      expect(d.estimated).toBe(true);
      expect(d.time.length).toBeGreaterThanOrEqual(4);
      expect(d.watts[0]).toHaveLength(d.time.length);
      for (const w of d.watts[0]) expect(w).toBeGreaterThan(0);
      const main = d.threads.find((t) => t.label.startsWith('main ('));
      expect(main).toBeDefined();
      expect(main!.joules).toHaveLength(d.time.length);
      // The busy main thread got most of the threads' energy, and the series sum to the totals.
      const seriesSum = d.threads.reduce((a, t) => a + t.joules.reduce((x, y) => x + y, 0), 0);
      const threadsTotal = sampler.threads().reduce((a, t) => a + t.joules, 0);
      expect(seriesSum).toBeLessThanOrEqual(threadsTotal + 1e-9);
      expect(seriesSum).toBeGreaterThan(threadsTotal * 0.5);
      expect(d.cpuCores.some((c) => c > 0.3)).toBe(true);
      expect(d.records).toHaveLength(1);
      expect(d.records[0].t).toBeGreaterThan(0.4);
      expect(d.records[0].t).toBeLessThanOrEqual(d.durationS + 0.01);
      expect(d.recordKind).toBe('span');
    } finally {
      sampler.close();
    }
  });

  it('keeps power positive across a sampler stop() and start(), and stops quietly after close()', async () => {
    const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'off' });
    try {
      sampler.start();
      const collector = new ReportCollector(sampler, { periodMs: 50 });
      const points = async (n: number) => {
        for (let i = 0; i < n; i++) {
          await new Promise((r) => setTimeout(r, 30));
          collector.poll();
        }
      };
      await points(4);
      sampler.stop();
      sampler.start(); // its totals start again from 0
      await points(4);
      sampler.close();
      expect(() => collector.stop()).not.toThrow();
      const w = collector.data().watts[0];
      expect(w.length).toBeGreaterThanOrEqual(7);
      // The model never reads below its idle power: a restart read -113 W here.
      expect(Math.min(...w)).toBeGreaterThan(0);
    } finally {
      sampler.close();
    }
  });
});

describe('ReportCollector across runs and late starts', () => {
  const spin = (ms: number) => {
    const end = performance.now() + ms;
    while (performance.now() < end);
  };

  // The totals and threads() start afresh at each start(): the stretch of a run after the last
  // poll was lost (a second run's interval read half the energy of the first's).
  it("counts each run's last stretch, energy and threads, though no poll came between the runs", () => {
    // 10 Hz: the first poll, right after start(), reads the run's zero exactly.
    const sampler = new Sampler({ source: 'model', intervalUs: 100_000, threads: 'procfs' });
    try {
      sampler.start();
      const collector = new ReportCollector(sampler, { periodMs: 50 });
      collector.poll();
      spin(250);
      collector.poll();
      spin(250);
      sampler.stop();
      const run1 = sampler.totals().readings[0].joules;
      const threads1 = sampler.threads().reduce((a, t) => a + t.joules, 0);
      sampler.start();
      spin(250);
      sampler.stop();
      const run2 = sampler.totals().readings[0].joules;
      const threads2 = sampler.threads().reduce((a, t) => a + t.joules, 0);
      collector.stop();
      const d = collector.data();
      expect(run1).toBeGreaterThan(0);
      expect(run2).toBeGreaterThan(0);
      // Over the seconds measured: the time between stop() and start() is not.
      let drawn = 0;
      d.time.forEach((t, i) => {
        const measured = t - (i > 0 ? d.time[i - 1] : d.startS!) - (d.unmeasuredS?.[i] ?? 0);
        if (measured > 0) drawn += d.watts[0][i] * measured;
      });
      expect(drawn).toBeCloseTo(run1 + run2, 6);
      const threadsDrawn = d.threads.reduce((a, t) => a + t.joules.reduce((x, y) => x + y, 0), 0);
      expect(threadsDrawn).toBeCloseTo(threads1 + threads2, 6);
    } finally {
      sampler.close();
    }
  });

  it('starts its first interval at its first poll, and places records added before the first start', async () => {
    const sampler = new Sampler({ source: 'model', intervalUs: 1000, threads: 'off' });
    try {
      const collector = new ReportCollector(sampler, { periodMs: 50 });
      // Before any start() there is no run to measure from: the record waits for one.
      collector.addRecord({ label: 'early', joules: 0.001, endNs: process.hrtime.bigint(), durationMs: 1 });
      sampler.start();
      await new Promise((r) => setTimeout(r, 300));
      collector.start();
      await new Promise((r) => setTimeout(r, 200));
      collector.stop();
      sampler.stop();
      const d = collector.data();
      expect(d.startS).toBeGreaterThan(0.25);
      expect(d.startS).toBeLessThan(d.time[0]);
      // Ended just before the run began, not 80,000 s after the machine booted.
      expect(d.records[0].t).toBeLessThanOrEqual(0);
      expect(d.records[0].t).toBeGreaterThan(-1);
    } finally {
      sampler.close();
    }
  });
});

describe('renderReport', () => {
  const base: ReportData = {
    version: 1,
    title: 'a <title> & more',
    createdAt: '2025-01-01T00:00:00.000Z',
    source: 'msr',
    estimated: false,
    durationS: 3,
    domains: ['package-0'],
    time: [1, 2, 3],
    watts: [[10, 20, 15]],
    threads: [],
    cpuCores: [],
    records: [],
    recordKind: 'span',
    summary: [],
    notes: [],
  };

  it('escapes text, and says what is missing instead of drawing empty charts', () => {
    const out = renderReport(base);
    expect(out).toContain('a &lt;title&gt; &amp; more');
    expect(out).not.toContain('estimated');
    expect(out).toContain('No thread tracking in this run');
    expect(out).toContain('No spans were recorded');
    expect(out).toMatch(/<section id="power">.*<path class="data line"/s);
  });

  it('puts only a known record kind into the markup (a report drawn from a saved copy)', () => {
    const out = renderReport({ ...base, recordKind: '<img src=x onerror=alert(1)>' as unknown as 'span' });
    expect(out).not.toContain('<img');
    expect(out).toContain('No requests were recorded');
  });

  it('labels estimated figures', () => {
    expect(renderReport({ ...base, estimated: true })).toContain('power (W), estimated');
  });

  it('draws records whatever their energy: none measured, some unmeasured, and a long run', () => {
    const rec = (label: string, joules: number) => ({ label, joules, t: 1, durationMs: 1 });
    // No record above 0 J (every request unmeasured, or all 0 J): the axis loop ran forever.
    const none = renderReport({ ...base, records: [rec('/a', NaN), rec('/a', 0), rec('/b', null as unknown as number)] });
    expect(none).toContain('No span in this run has a measured energy above 0 J.');
    // One unmeasured record among measured ones: left out of the row's figures, and counted.
    const some = renderReport({ ...base, records: [1, 2, 3, 4].map((j) => rec('/r', j * 1e-3)).concat([rec('/r', NaN)]) });
    expect(some).not.toContain('NaN');
    expect(some).toContain('n=4, mean 2.50 mJ, 1 unmeasured');
    // 8 h at 200 ms, two domains: Math.max(...values) overflowed the call stack.
    const n = 144_000;
    const time = Array.from({ length: n }, (_, i) => (i + 1) * 0.2);
    const long = renderReport({ ...base, domains: ['package-0', 'dram-0'], time, watts: [time.map(() => 10), time.map(() => 2)] });
    expect(long).toContain('<section id="power">');
  });

  it('picks round tick values', () => {
    expect(niceTicks(0, 23.7, 5)).toEqual([0, 5, 10, 15, 20, 25]);
    expect(niceTicks(0, 1, 4)).toEqual([0, 0.25, 0.5, 0.75, 1]);
  });
});
