// Throughput of an Express and a Fastify hello-world on loopback with autocannon, bare and with
// jouletrace: the sampler alone, the sampler + request accounting (shared mode), and exact mode;
// then the server's CPU per request at a fixed rate (half the bare throughput) for each variant.
// A ruler runs beside them: no jouletrace, one hook that busy-waits 1 µs per request, to show
// what 1 µs of added work per request costs on the machine at hand (on a small VM where the load
// generator shares the CPUs, more than 1 µs: see bench/RESULTS.md).
//
// On our 2-vCPU guests the host's speed drifts by a third within minutes, so variants are
// measured close together: each set starts one server per variant, warms each up (WARMUP_SECONDS
// of load), then takes ROUNDS rounds of one short load per variant (SECONDS each, the order
// reversed every other round), the servers not being measured frozen meanwhile (SIGSTOP: their
// sampler threads would otherwise wake on the same CPUs), each thawed and loaded for a moment
// before it is measured. Each variant is compared with the baseline measured in the same round:
// ratios are medians of those paired ratios, with a bootstrap 95% interval of the median that
// resamples the sets, then the rounds (see pairedRatio). A fresh set of processes each SETS
// time, since a process's own layout moves its speed for as long as it lives (V8's stub cache,
// where its code landed: see bench/RESULTS.md): many sets of a few rounds each, rather than the
// reverse. (Before, each measurement was a fresh server's first 2 s, which also timed V8
// compiling the server's code, more of it with accounting.) The load
// generator (this process) runs on CPU 0 and the servers on the other CPUs, where taskset is
// installed (BENCH_HTTP_PIN=0 leaves them to the scheduler). BENCH_HTTP_CORUN=1 measures
// another way: both servers of a pair loaded at once (see coRunSet).
import * as fs from 'node:fs';
import { canPin, load, loadResult, pinLoadGenerator, serve } from './http-load.mjs';
import { median, processCpuNs, sleep, table } from './common.mjs';

const SETS = Number(process.env.BENCH_HTTP_SETS ?? 4);
const ROUNDS = Number(process.env.BENCH_REPS ?? 5);
const SECONDS = Number(process.env.BENCH_HTTP_SECONDS ?? 1);
const WARMUP_SECONDS = Number(process.env.BENCH_HTTP_WARMUP ?? 1);
const VARIANTS = (process.env.BENCH_HTTP_VARIANTS ?? 'bare,work1us,sampler,middleware,exact').split(',');
const FRAMEWORKS = (process.env.BENCH_HTTP_FRAMEWORKS ?? 'express,fastify').split(',');
// `instrumented` (instrumentExpress) exists for Express only: skipped for the others.
const variantsFor = (framework) => VARIANTS.filter((v) => v !== 'instrumented' || framework === 'express');
// BENCH_HTTP_CPU=0: throughput only (the fixed-rate CPU part doubles the run's time).
// BENCH_HTTP_SAMPLER_CPU=N pins the servers' sampler threads to CPU N (read by http-server.mjs).
const CPU = process.env.BENCH_HTTP_CPU !== '0';
// BENCH_HTTP_CORUN=1: instead of both, each variant and the baseline loaded at once, on one CPU
// (see coRunSet).
const CORUN = process.env.BENCH_HTTP_CORUN === '1';
// The load generator on CPU 0, the servers on the others (BENCH_HTTP_PIN=0: wherever the
// scheduler puts them).
const PIN = canPin && process.env.BENCH_HTTP_PIN !== '0';
if (PIN) pinLoadGenerator();

// The median of paired ratios, and a bootstrap 95% interval of it (fixed seed: the same data
// prints the same interval). The ratios come in sets, one per set of fresh processes, and a
// process's own layout moves its speed for as long as it lives (V8's stub cache, where its code
// and data landed): pairs within a set are not independent, so the interval resamples the sets,
// then the rounds within each. Resampling rounds alone gave intervals a few tenths wide around
// set medians that differed by several percent (bench/RESULTS.md). Also the median of each set.
function pairedRatio(xsBySet, basesBySet) {
  const sets = xsBySet.map((xs, k) => xs.map((x, i) => x / basesBySet[k][i]));
  let seed = 12345;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const pick = (xs) => xs[Math.floor(rand() * xs.length)];
  const meds = [];
  for (let b = 0; b < 2000; b++) {
    const sample = [];
    for (let k = 0; k < sets.length; k++) {
      const set = pick(sets);
      for (let i = 0; i < set.length; i++) sample.push(pick(set));
    }
    meds.push(median(sample));
  }
  meds.sort((a, b) => a - b);
  return {
    median: median(sets.flat()),
    lo: meds[Math.floor(0.025 * meds.length)],
    hi: meds[Math.ceil(0.975 * meds.length) - 1],
    bySet: sets.map(median),
  };
}

// A server per variant, each warmed (at `rate`, 0: as fast as possible) and left frozen. One
// that fails to start or to serve stops those already started.
async function startServers(framework, variants, rate) {
  const servers = [];
  try {
    for (const v of variants) {
      const s = await serve(framework, v, { pin: PIN });
      servers.push([v, s]);
      await sleep(200);
      await load(s.port, { seconds: WARMUP_SECONDS, overallRate: rate });
      s.pause();
    }
  } catch (e) {
    await stopServers(servers);
    throw e;
  }
  return servers;
}

// The touch load before each measured one: its caches, after the others ran. By count, about
// 0.2 s at 30,000 requests/s (a duration would run to autocannon's 1 s tick; a count ends at
// load()'s 50 ms tick).
const TOUCH = 6000;

// A server's CPU time (all its threads), read while it is frozen: the kernel brings a thread's
// count up to date when it leaves a CPU, not while it runs (schedstat moves in ~4 ms steps for
// a running thread, 0.8% of a 0.5 s window). Left frozen.
async function frozenCpuNs(s) {
  s.pause();
  for (let i = 0; i < 200 && !/^\d+ \(.*\) [Tt] /.test(readStat(s.pid)); i++) await sleep(1);
  return processCpuNs(s.pid);
}

function readStat(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return '';
  }
}

async function stopServers(servers) {
  for (const [, s] of servers) {
    s.resume();
    await s.stop();
  }
}

// One set: a server per variant, warmed, then alternated short loads. rate 0: as fast as
// possible (requests/s served); else that fixed rate (server CPU per request, µs, all threads).
async function set(framework, variants, rate, out, k) {
  const servers = await startServers(framework, variants, rate);
  try {
    for (let r = 0; r < ROUNDS; r++) {
      for (const [v, s] of r % 2 ? [...servers].reverse() : servers) {
        s.resume();
        await load(s.port, { amount: rate === 0 ? TOUCH : Math.ceil(rate / 5), overallRate: rate });
        if (rate === 0) {
          out[v][k].push((await loadResult(s.port, { seconds: SECONDS })).requests.average);
          s.pause();
          continue;
        }
        const before = await frozenCpuNs(s);
        s.resume();
        const res = await loadResult(s.port, { seconds: SECONDS, overallRate: rate });
        out[v][k].push(((await frozenCpuNs(s)) - before) / 1000 / res.requests.total);
      }
    }
  } finally {
    await stopServers(servers);
  }
}

// One set, co-run: the baseline (the first variant) and each other variant in turn served at
// full speed at the same time, both servers on the same CPU(s), each loaded by its own
// autocannon; what is compared is each server's CPU (all its threads) per request served over
// the same second. The host's speed, which drifts between the rounds of set() by more than the
// 3% target, is then the same for both: they take turns on the CPU every few milliseconds. The
// figure is throughput per CPU, baseline CPU per request / variant CPU per request, which is
// the throughput ratio wherever the server's CPU is the bottleneck. Both processes share the
// CPU's caches, switching every few milliseconds, as two services on one host would.
async function coRunSet(framework, variants, out, k) {
  const servers = await startServers(framework, variants, 0);
  const [, base] = servers[0];
  try {
    for (let r = 0; r < ROUNDS; r++) {
      const others = servers.slice(1);
      for (const [v, s] of r % 2 ? others.reverse() : others) {
        base.resume();
        s.resume();
        await Promise.all([load(base.port, { amount: TOUCH }), load(s.port, { amount: TOUCH })]);
        const [b0, s0] = await Promise.all([frozenCpuNs(base), frozenCpuNs(s)]);
        base.resume();
        s.resume();
        const [rb, rs] = await Promise.all([loadResult(base.port, { seconds: SECONDS }), loadResult(s.port, { seconds: SECONDS })]);
        const [b1, s1] = await Promise.all([frozenCpuNs(base), frozenCpuNs(s)]);
        const perBase = (b1 - b0) / rb.requests.total;
        const perVariant = (s1 - s0) / rs.requests.total;
        out[v][k].push(perBase / perVariant);
      }
    }
  } finally {
    await stopServers(servers);
  }
}

const pct = (r) => `${((1 - r) * 100).toFixed(1)} %`;
// Each set's loss (1 − ratio), or the CPU it added (ratio − 1), in %.
const lossBySet = (p) => p.bySet.map((r) => ((1 - r) * 100).toFixed(1)).join(' ');
const addedBySet = (p) => p.bySet.map((r) => ((r - 1) * 100).toFixed(1)).join(' ');

if (CORUN) {
  const coRows = [];
  for (const framework of FRAMEWORKS) {
    const variants = variantsFor(framework);
    const ratios = Object.fromEntries(variants.slice(1).map((v) => [v, Array.from({ length: SETS }, () => [])]));
    for (let k = 0; k < SETS; k++) await coRunSet(framework, variants, ratios, k);
    for (const v of variants.slice(1)) {
      const p = pairedRatio(ratios[v], ratios[v].map((xs) => xs.map(() => 1)));
      coRows.push([framework, `${v} beside ${variants[0]}`, `${p.median.toFixed(3)} (${pct(p.median)})`, `${pct(p.hi)} to ${pct(p.lo)}`, lossBySet(p)]);
    }
  }
  table(
    `HTTP hello-world, co-run: the baseline and a variant served at full speed at once on the same CPU(s) (autocannon, 10 connections each; ${SETS} sets of fresh servers × ${ROUNDS} rounds of ${SECONDS} s, after ${WARMUP_SECONDS} s of warm-up). Throughput per CPU against the baseline: the median of the paired ratios (the loss), its 95% interval (bootstrap over sets, then rounds), and the loss in each set, %`,
    ['framework', 'variant', 'throughput per CPU', 'loss, 95%', 'loss by set'],
    coRows,
  );
  process.exit(0);
}

const rows = [];
const cpuRows = [];
const rates = [];
for (const framework of FRAMEWORKS) {
  const variants = variantsFor(framework);
  // By variant, by set: one array of measurements for each set of processes.
  const perSet = () => Object.fromEntries(variants.map((v) => [v, Array.from({ length: SETS }, () => [])]));
  const rps = perSet();
  const cpu = perSet();
  for (let k = 0; k < SETS; k++) await set(framework, variants, 0, rps, k);
  // Half of what the bare server (or the first variant) sustained: every variant keeps up, so
  // each serves the same load.
  const rate = Number(process.env.BENCH_HTTP_RATE ?? Math.round(median((rps.bare ?? rps[variants[0]]).flat()) / 200) * 100);
  rates.push(`${framework} ${rate}`);
  if (CPU) for (let k = 0; k < SETS; k++) await set(framework, variants, rate, cpu, k);
  // The loss by set, against the sampler alone where it ran (else bare): how far apart sets of
  // fresh processes land.
  const setBase = variants.includes('sampler') ? 'sampler' : 'bare';
  for (const v of variants) {
    const row = [framework, v, median(rps[v].flat()).toFixed(0)];
    const cpuRow = [framework, v, CPU ? median(cpu[v].flat()) : NaN];
    const against = (xs, base) => (xs[base] && v !== base && xs[v][0].length !== 0 ? pairedRatio(xs[v], xs[base]) : undefined);
    const ratios = {};
    for (const base of ['bare', 'sampler']) {
      const p = (ratios[base] = { rps: against(rps, base), cpu: against(cpu, base) });
      row.push(p.rps ? `${p.rps.median.toFixed(3)} (${pct(p.rps.median)})` : '', p.rps ? `${pct(p.rps.hi)} to ${pct(p.rps.lo)}` : '');
      cpuRow.push(p.cpu ? `${p.cpu.median.toFixed(3)} (${p.cpu.lo.toFixed(3)}–${p.cpu.hi.toFixed(3)})` : '');
    }
    // Each set's figure, from the ratios above (the last column).
    row.push(ratios[setBase].rps ? lossBySet(ratios[setBase].rps) : '');
    cpuRow.push(ratios[setBase].cpu ? addedBySet(ratios[setBase].cpu) : '');
    rows.push(row);
    cpuRows.push(cpuRow);
  }
}
const how = `${SETS} sets of fresh servers × ${ROUNDS} alternated rounds of ${SECONDS} s each, after ${WARMUP_SECONDS} s of warm-up; ${PIN ? 'load on CPU 0, the server on the others' : "server and load share this machine's CPUs"}`;
table(
  `HTTP hello-world throughput, requests/s (autocannon, 10 connections; ${how}). Ratios: the median of the paired ratios (the loss), the loss's 95% interval (bootstrap over sets, then rounds), and the loss in each set, %`,
  ['framework', 'variant', 'req/s (median)', 'to bare', 'loss, 95%', 'to sampler alone', 'loss, 95%', 'loss by set'],
  rows,
);
if (CPU) table(
  `Server CPU per request, µs (all its threads, schedstat) at a fixed rate, half the bare server's throughput (${rates.join(', ')} requests/s; ${how}). Ratios: median of the paired ratios (95% interval), and the CPU added in each set, %`,
  ['framework', 'variant', 'µs/request (median)', 'ratio to bare', 'ratio to sampler alone', 'added by set'],
  cpuRows,
);
if (VARIANTS.includes('work1us')) console.log('  work1us: no jouletrace; one middleware / onRequest hook that busy-waits 1 µs per request (a ruler)');
