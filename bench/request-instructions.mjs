// Instructions that request accounting adds per request, counted by valgrind's callgrind: a
// measure that the noise of a small shared VM does not move (on our 2-vCPU guests two loopback
// runs of the same server differ by up to 35%, and the CPU-time benchmarks' spread is as large as
// jouletrace's cost; see bench/RESULTS.md). Instructions are not time: a cache miss costs more
// than an instruction, and callgrind cannot see that; nor does it count the kernel's work (the
// socket's system calls), a large part of a loopback request's CPU. What it gives is the work
// jouletrace adds in user space (two runs agree within about 150 instructions a request with the
// settings below), beside the work of the request.
//
// Each variant of bench/http-server.mjs runs under callgrind, one thread per output file. This
// process sends it requests one at a time on one kept-alive connection (so that each request is
// one read and one write whatever the variant), WARMUP of them until V8 has compiled the hot
// code, then PARTS parts of REQUESTS, zeroing the counters before each part and dumping them
// after it (callgrind_control). Per request: the main thread's instructions, those of them in
// V8's garbage collector (Heap::CollectGarbage, inclusive), and the sampler thread's span engine
// (SpanEngine::, inclusive; the thread is found by its jouletrace:: symbols). Variants are
// compared outside the collector, whose count per part follows how many scavenges fell in it.
//
// valgrind runs the server about 50 times slower than the wall clock, so work done per unit of
// time would weigh 50 times as much per request as it does at full speed. The server stretches
// its setInterval timers by as much (BENCH_INTERVAL_SCALE), jouletrace's result timer among
// them, so that each of its runs collects about as many requests as at full speed. The sampler
// thread's own wake-ups stay at 1 ms: only the span engine's count is shown for that thread.
//
// BENCH_VG_PARTS, BENCH_VG_REQUESTS, BENCH_VG_WARMUP, BENCH_HTTP_FRAMEWORKS and
// BENCH_VG_VARIANTS (bare,sampler,hook,middleware,hooked,floor; straight only where named) narrow a run; BENCH_VG_KEEP=1 keeps the dumps
// for callgrind_annotate, and BENCH_VG_NODE_FLAGS=--perf-basic-prof writes /tmp/perf-<pid>.map,
// which names the JIT-compiled functions that callgrind knows only by address. BENCH_VG_CACHE=1
// also counts the main thread's cache misses (see CACHE_SIM below).
//
// Skipped, with the reason, where valgrind is not installed (Debian: apt-get install valgrind).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { endWithThisProcess, median, root, table } from './common.mjs';

const WARMUP = Number(process.env.BENCH_VG_WARMUP ?? 6000);
const REQUESTS = Number(process.env.BENCH_VG_REQUESTS ?? 4000);
const PARTS = Number(process.env.BENCH_VG_PARTS ?? 3);
// valgrind's slowdown, give or take: the server's setInterval timers are stretched by as much.
const SLOWDOWN = 50;
// V8 optimises on the main thread here. Compiled concurrently, a function's optimised code
// arrives after a number of calls that varies from one process to the next, with other feedback,
// and is inlined differently: from one run of the same variant to the next that moved the count
// by 500 instructions a request. (The garbage collector keeps its helper threads: with
// --single-threaded-gc, incremental marking landed on the main thread, in some parts and not
// others.) The young generation has a fixed size: V8 otherwise sizes it from what survived its
// last collections, and each scavenge has a fixed cost (its roots), which moved the count by up
// to 400.
const V8_FLAGS = ['--no-concurrent-recompilation', '--no-concurrent-osr', '--min-semi-space-size=16', '--max-semi-space-size=16'];
// BENCH_VG_CACHE=1: callgrind's cache simulator too, with a Zen 4/5 core's sizes (L2 as the last
// level: the L3 is shared with whatever else the host runs). It counts the misses that
// instructions do not show: code run once a request costs a fetch of each of its cache lines
// from L2 where the request's whole path does not fit the L1i. About twice as slow.
const CACHE_SIM = process.env.BENCH_VG_CACHE === '1' ? ['--cache-sim=yes', '--I1=32768,8,64', '--D1=49152,12,64', '--LL=1048576,16,64'] : [];
const FRAMEWORKS = (process.env.BENCH_HTTP_FRAMEWORKS ?? 'node:http,express,fastify').split(',');
const VARIANTS = {
  'node:http': ['bare', 'sampler', 'middleware', 'floor'],
  express: ['bare', 'sampler', 'hook', 'middleware', 'instrumented'],
  fastify: ['bare', 'sampler', 'hook', 'middleware', 'hooked', 'floor'],
};
const ONLY = process.env.BENCH_VG_VARIANTS?.split(',');
const NAMES = { bare: 'bare', sampler: 'sampler alone', hook: 'sampler + empty hook', middleware: 'sampler + jouletrace', instrumented: 'sampler + instrumentExpress()', hooked: 'sampler + empty hook + jouletrace', floor: 'sampler + floor (no jouletrace)', straight: 'sampler + 5.7 KB of straight-line code' };

function have(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}
if (!have('valgrind') || !have('callgrind_control') || !have('callgrind_annotate')) {
  console.log('\nrequest-instructions: skipped: valgrind is not installed (Debian: apt-get install valgrind)');
  process.exit(0);
}

function get(agent, port) {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/hello/world', agent }, (r) => {
        r.resume();
        r.on('end', () => (r.statusCode === 200 ? resolve() : reject(new Error(`status ${r.statusCode}`))));
      })
      .on('error', reject);
  });
}

async function requests(agent, port, n) {
  for (let i = 0; i < n; i++) await get(agent, port);
}

// Totals per thread of one dump: callgrind writes <out>.<part>-<thread> files.
function readPart(dir, pid, part) {
  const threads = [];
  for (const f of fs.readdirSync(dir)) {
    const m = new RegExp(`^cg\\.${pid}\\.${part}-(\\d+)$`).exec(f);
    if (!m) continue;
    const file = path.join(dir, f);
    const text = fs.readFileSync(file, 'utf8');
    // events: Ir [I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw] (the rest with --cache-sim=yes)
    const names = (/^events: (.*)$/m.exec(text)?.[1] ?? 'Ir').trim().split(/\s+/);
    const values = (/^summary: (.*)$/m.exec(text)?.[1] ?? '0').trim().split(/\s+/).map(Number);
    const ev = (name) => values[names.indexOf(name)] ?? 0;
    threads.push({
      thread: Number(m[1]),
      file,
      ir: ev('Ir'),
      i1: ev('I1mr'),
      d1: ev('D1mr') + ev('D1mw'),
      ll: ev('ILmr') + ev('DLmr') + ev('DLmw'),
      sampler: text.includes('jouletrace::SpanEngine') || text.includes('jouletrace::AttributionEngine'),
    });
  }
  return threads;
}

// The largest inclusive count among the functions whose names match `pattern` in one thread's
// dump: their outermost entry point's.
function inclusiveIr(file, pattern) {
  const out = execFileSync('callgrind_annotate', ['--inclusive=yes', '--threshold=100', file], { encoding: 'utf8', maxBuffer: 256 << 20 });
  let top = 0;
  for (const line of out.split('\n')) {
    const m = /^\s*([\d,]+)\s/.exec(line);
    if (m && pattern.test(line)) top = Math.max(top, Number(m[1].replace(/,/g, '')));
  }
  return top;
}

async function measure(framework, variant) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-vg-'));
  const child = spawn(
    'valgrind',
    ['--tool=callgrind', '--separate-threads=yes', ...CACHE_SIM, `--callgrind-out-file=${dir}/cg.%p`, process.execPath, ...V8_FLAGS, ...(process.env.BENCH_VG_NODE_FLAGS?.split(' ') ?? []), path.join(root, 'bench/http-server.mjs'), framework, variant],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, BENCH_INTERVAL_SCALE: String(SLOWDOWN) } },
  );
  endWithThisProcess(child);
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => (err += String(d)));
  const exited = new Promise((r) => child.once('exit', r));
  const port = await new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += String(d);
      const m = /listening (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`server under valgrind exited with ${code}: ${err.slice(-400)}`)));
  });
  // valgrind's own pid is the program's (it runs in the same process).
  const pid = child.pid;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const parts = [];
  try {
    await requests(agent, port, WARMUP);
    for (let p = 1; p <= PARTS; p++) {
      execFileSync('callgrind_control', ['-z', String(pid)], { stdio: 'ignore' });
      await requests(agent, port, REQUESTS);
      execFileSync('callgrind_control', ['-d', String(pid)], { stdio: 'ignore' });
      // The dump is written by the program's own thread once it runs again.
      let threads = [];
      for (let i = 0; i < 200 && threads.length === 0; i++) {
        await new Promise((r) => setTimeout(r, 50));
        threads = readPart(dir, pid, p);
      }
      // Read again once every thread's file of the part is complete.
      await new Promise((r) => setTimeout(r, 200));
      threads = readPart(dir, pid, p);
      const main = threads.find((t) => t.thread === 1);
      const sampler = threads.find((t) => t.sampler);
      parts.push({
        main: main ? main.ir / REQUESTS : NaN,
        i1: main ? main.i1 / REQUESTS : NaN,
        d1: main ? main.d1 / REQUESTS : NaN,
        ll: main ? main.ll / REQUESTS : NaN,
        gc: main ? inclusiveIr(main.file, /v8::internal::Heap::CollectGarbage\(/) / REQUESTS : NaN,
        spans: sampler ? inclusiveIr(sampler.file, /jouletrace::SpanEngine::\w+\(/) / REQUESTS : NaN,
      });
    }
  } finally {
    agent.destroy();
    child.kill('SIGTERM');
    await exited;
    // BENCH_VG_KEEP=1 keeps the dumps for callgrind_annotate.
    if (process.env.BENCH_VG_KEEP) console.error(`${framework} ${variant}: callgrind dumps in ${dir} (pid ${pid})`);
    else fs.rmSync(dir, { recursive: true, force: true });
  }
  return parts;
}

const signed = (x) => `${x >= 0 ? '+' : '−'}${Math.round(Math.abs(x))}`;
const range = (xs) => `${Math.round(Math.min(...xs))}–${Math.round(Math.max(...xs))}`;
const rows = [];
const samplerRows = [];
const cacheRows = [];
for (const framework of FRAMEWORKS) {
  const results = {};
  // straight (a ruler, see bench/http-server.mjs) only where BENCH_VG_VARIANTS names it.
  const variants = ONLY ? [...VARIANTS[framework], 'straight'].filter((v) => ONLY.includes(v)) : VARIANTS[framework];
  for (const v of variants) results[v] = await measure(framework, v);
  const m = (v, k) => median(results[v].map((p) => p[k]));
  // Compared outside the collector: how many scavenges fall in a part moves its count by more
  // than jouletrace's own allocations (its two clock arrays a request) add to them.
  const mutator = (v) => median(results[v].map((p) => p.main - p.gc));
  const bare = results.bare ? mutator('bare') : NaN;
  const alone = results.sampler ? mutator('sampler') : NaN;
  for (const v of variants) {
    const a = mutator(v);
    rows.push([
      framework,
      NAMES[v],
      String(Math.round(m(v, 'main'))),
      range(results[v].map((p) => p.main)),
      String(Math.round(m(v, 'gc'))),
      Number.isNaN(bare) ? '' : signed(a - bare),
      v === 'bare' || Number.isNaN(alone) ? '' : `${signed(a - alone)} (${(((a - alone) / alone) * 100).toFixed(2)} %)`,
    ]);
    if (v !== 'bare') samplerRows.push([framework, NAMES[v], String(Math.round(m(v, 'spans')))]);
    if (CACHE_SIM.length > 0) {
      const vsAlone = (k) => (v === 'sampler' || !results.sampler ? '' : ` (${signed(m(v, k) - m('sampler', k))})`);
      cacheRows.push([framework, NAMES[v], ...['i1', 'd1', 'll'].map((k) => `${m(v, k).toFixed(1)}${vsAlone(k)}`)]);
    }
  }
}
table(
  `Main thread's instructions per request (callgrind; ${REQUESTS} sequential requests on one kept-alive connection per part, median of ${PARTS} parts after ${WARMUP}; young generation fixed at 16 MB)`,
  ['framework', 'variant', 'instructions', 'parts', 'in GC', 'outside GC, vs bare', 'outside GC, vs sampler alone'],
  rows,
);
table("Sampler thread's span engine, instructions per request (inclusive)", ['framework', 'variant', 'span engine'], samplerRows);
if (CACHE_SIM.length > 0) {
  table(
    "Main thread's cache misses per request (callgrind's simulator: 32 KiB 8-way L1i, 48 KiB 12-way L1d, 1 MiB 16-way L2 as the last level; median of the parts; in brackets, against the sampler alone)",
    ['framework', 'variant', 'L1i misses', 'L1d misses', 'L2 misses'],
    cacheRows,
  );
}
