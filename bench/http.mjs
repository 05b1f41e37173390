// Throughput of an Express and a Fastify hello-world on loopback with autocannon, bare and with
// jouletrace: the sampler alone, the sampler + request accounting (shared mode), and exact mode;
// then the server's CPU per request at a fixed rate (half the bare throughput) for each variant.
// A ruler runs beside them: no jouletrace, one hook that busy-waits 1 µs per request, to show
// what 1 µs of added work per request costs on the machine at hand (on a small VM where the load
// generator shares the CPUs, more than 1 µs: see bench/RESULTS.md).
// Variants alternate within each repetition so slow drifts of the machine hit all of them alike.
import { load as loadAt, serve } from './http-load.mjs';
import { median, sleep, table } from './common.mjs';

const REPS = Number(process.env.BENCH_REPS ?? 3);
const SECONDS = Number(process.env.BENCH_HTTP_SECONDS ?? 4);
const VARIANTS = (process.env.BENCH_HTTP_VARIANTS ?? 'bare,work1us,sampler,middleware,exact').split(',');
const load = (port, overallRate = 0) => loadAt(port, { seconds: SECONDS, overallRate });
const FRAMEWORKS = (process.env.BENCH_HTTP_FRAMEWORKS ?? 'express,fastify').split(',');

const rows = [];
const cpuRows = [];
const rates = [];
for (const framework of FRAMEWORKS) {
  // `instrumented` (instrumentExpress) exists for Express only: skipped for the others.
  const variants = VARIANTS.filter((v) => v !== 'instrumented' || framework === 'express');
  const rps = Object.fromEntries(variants.map((v) => [v, []]));
  const cpu = Object.fromEntries(variants.map((v) => [v, []]));
  for (let r = 0; r < REPS; r++) {
    for (const v of variants) {
      const s = await serve(framework, v);
      await sleep(200);
      await load(s.port).then((x) => rps[v].push(x));
      await s.stop();
    }
  }
  const base = median(rps.bare);
  // Half of what the bare server sustained: every variant keeps up, so each serves the same load.
  const rate = Number(process.env.BENCH_HTTP_RATE ?? Math.round(base / 200) * 100);
  rates.push(`${framework} ${rate}`);
  for (let r = 0; r < REPS; r++) {
    for (const v of variants) {
      const s = await serve(framework, v);
      await sleep(200);
      s.mark();
      await load(s.port, rate);
      cpu[v].push(await s.stop());
    }
  }
  const baseCpu = median(cpu.bare);
  const samplerCpu = median(cpu.sampler ?? cpu.bare);
  for (const v of variants) {
    const m = median(rps[v]);
    rows.push([framework, v, m, (m / base).toFixed(3), `${((1 - m / base) * 100).toFixed(1)} %`]);
    const c = median(cpu[v]);
    cpuRows.push([framework, v, c, `${c >= baseCpu ? '+' : '−'}${Math.abs(c - baseCpu).toFixed(2)}`, (c / baseCpu).toFixed(3), (c / samplerCpu).toFixed(3)]);
  }
}
table(
  `HTTP hello-world throughput, requests/s (autocannon, 10 connections, ${SECONDS} s, median of ${REPS}; server and load share this machine's CPUs)`,
  ['framework', 'variant', 'req/s', 'ratio to bare', 'loss'],
  rows,
);
table(
  `Server CPU per request, µs (all its threads, user + system) at a fixed rate, half the bare server's throughput (${rates.join(', ')} requests/s), median of ${REPS}`,
  ['framework', 'variant', 'µs/request', 'vs bare', 'ratio to bare', 'ratio to sampler alone'],
  cpuRows,
);
if (VARIANTS.includes('work1us')) console.log('  work1us: no jouletrace; one middleware / onRequest hook that busy-waits 1 µs per request (a ruler)');
