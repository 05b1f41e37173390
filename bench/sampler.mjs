// Sampler CPU cost and scheduling jitter at 1 kHz and 10 kHz, against a bare timer loop (a
// thread that wakes on the same absolute deadlines and does nothing) measured in this run. The
// sampler runs without thread tracking (threads: 'off'), so no attribution step: the tables say so.
import { emulatedIntelMsr, jouletrace, median, native, sleep, table, threadCpuNs } from './common.mjs';

const { Sampler } = jouletrace;
const REPS = Number(process.env.BENCH_REPS ?? 3);
const WINDOW_MS = Number(process.env.BENCH_WINDOW_MS ?? 2000);

async function samplerRun(options) {
  const s = new Sampler({ threads: 'off', ...options });
  s.start();
  await sleep(200);
  const tid = s.stats().timing.samplerTid;
  const c0 = threadCpuNs(tid);
  const t0 = process.hrtime.bigint();
  await sleep(WINDOW_MS);
  const c1 = threadCpuNs(tid);
  const wall = Number(process.hrtime.bigint() - t0);
  const st = s.stats();
  s.stop();
  s.close();
  return { cpuPct: (100 * (c1 - c0)) / wall, jitter: st.timing.jitterUs, missed: st.timing.missedDeadlines };
}

function baselineRun(intervalUs, cpu = -1) {
  const r = native.bench.timerLoop(intervalUs, Math.round((WINDOW_MS * 1000) / intervalUs), cpu);
  return {
    cpuPct: (100 * r.cpuNs) / r.wallNs,
    jitter: { p50: r.jitterP50Ns / 1000, p99: r.jitterP99Ns / 1000, p999: r.jitterP999Ns / 1000 },
  };
}

const msr = emulatedIntelMsr();
const rows = [];
for (const intervalUs of [1000, 100]) {
  const base = [];
  for (let i = 0; i < REPS; i++) base.push(baselineRun(intervalUs).cpuPct);
  const b = median(base);
  rows.push([`bare timer loop`, `${1e3 / intervalUs} kHz`, b, '1.00']);
  for (const [name, opts] of [
    ['model source', { source: 'model' }],
    ['emulated msr (3 domains)', msr.options],
  ]) {
    const cpu = [];
    for (let i = 0; i < REPS; i++) cpu.push((await samplerRun({ ...opts, intervalUs })).cpuPct);
    const m = median(cpu);
    rows.push([`sampler, ${name}`, `${1e3 / intervalUs} kHz`, m, (m / b).toFixed(2)]);
  }
}
table(`Sampler CPU cost, % of one core (threads: 'off': no thread tracking, no attribution step; median of ${REPS} × ${WINDOW_MS} ms, from the thread's schedstat)`, ['what', 'rate', 'cpu %', 'ratio to bare loop'], rows);

const jrows = [];
for (const intervalUs of [1000, 100]) {
  for (const cpu of [undefined, 1]) {
    const runs = [];
    for (let i = 0; i < REPS; i++) runs.push(await samplerRun({ source: 'model', intervalUs, ...(cpu === undefined ? {} : { cpu }) }));
    const base = [];
    for (let i = 0; i < REPS; i++) base.push(baselineRun(intervalUs, cpu ?? -1));
    const j = (k) => median(runs.map((r) => r.jitter[k]));
    const bj = (k) => median(base.map((r) => r.jitter[k]));
    jrows.push([`${1e3 / intervalUs} kHz`, cpu === undefined ? 'no' : `cpu ${cpu}`, j('p50'), j('p99'), j('p999'), bj('p50'), bj('p99'), bj('p999'), median(runs.map((r) => r.missed))]);
  }
}
table("Sampler wake-up jitter, µs (actual − scheduled), against the bare timer loop (model source, threads: 'off')", ['rate', 'pinned', 'p50', 'p99', 'p99.9', 'bare p50', 'bare p99', 'bare p99.9', 'missed'], jrows);
msr.close();
