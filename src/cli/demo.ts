// `jouletrace demo`: the README's first command ends here. Shows what the machine can measure,
// then samples the best source while a known workload runs (idle, then a CPU-bound worker thread
// beside the main thread), printing watts per domain each second and, at the end, where the
// energy went: this process, its threads, the baseline, everything else.
import { Worker } from 'node:worker_threads';
import { formatProbe, probe } from '../probe';
import { Sampler, type Totals } from '../sampler';

const HELP = `Usage: jouletrace demo [--seconds N] [--interval-us N] [--no-probe]

Prints the probe report, then samples the best available energy source for a few seconds
while a built-in workload runs (1 s idle, then a busy worker thread, then both threads busy),
printing watts per domain every second, and finally the energy attributed to this process's
threads, the baseline and everything else, with the sampler's own statistics.

Options:
  --seconds N       how long to sample (default 6, at least 3)
  --interval-us N   sampling period in microseconds (default 1000)
  --no-probe        skip the probe report
  -h, --help        show this help
`;

const SPIN_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const end = Date.now() + workerData.ms;
let x = 0;
while (Date.now() < end) x = (x * 1103515245 + 12345) % 2147483648;
parentPort.postMessage(x);
`;

function spinWorker(ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const w = new Worker(SPIN_WORKER, { eval: true, workerData: { ms }, name: 'demo-spin' });
    w.once('message', () => resolve());
    w.once('error', reject);
  });
}

function spinMain(ms: number): void {
  const end = Date.now() + ms;
  let x = 0;
  while (Date.now() < end) x = (x * 1103515245 + 12345) % 2147483648;
  if (x === -1) console.log(x);
}

const pad = (s: string, n: number) => s.padStart(n);

export async function demoCommand(argv: string[]): Promise<number> {
  let seconds = 6;
  let intervalUs = 1000;
  let showProbe = true;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') {
      process.stdout.write(HELP);
      return 0;
    } else if (a === '--seconds') seconds = Number(argv[++i]);
    else if (a === '--interval-us') intervalUs = Number(argv[++i]);
    else if (a === '--no-probe') showProbe = false;
    else {
      process.stderr.write(`jouletrace demo: unknown argument ${JSON.stringify(a)}\n\n${HELP}`);
      return 2;
    }
  }
  if (!Number.isFinite(seconds) || seconds < 3 || seconds > 3600) {
    process.stderr.write('jouletrace demo: --seconds must be a number from 3 to 3600\n');
    return 2;
  }

  if (showProbe) {
    process.stdout.write(formatProbe(await probe()) + '\n');
  }
  const sampler = new Sampler({ intervalUs });
  const st0 = sampler.stats();
  const out = process.stdout;
  out.write(`Sampling '${sampler.source}' every ${intervalUs} µs for ${seconds} s`);
  out.write(`, threads tracked with ${st0.threads.backend}.\n`);
  for (const s of sampler.skipped) out.write(`  (skipped ${s.source}: ${s.message ?? s.code})\n`);
  if (st0.threads.fallbackReason) out.write(`  (${st0.threads.fallbackReason})\n`);
  if (st0.estimated) {
    out.write('  No energy counters here: every figure below is ESTIMATED by the model source from CPU time.\n');
  }

  const domains = sampler.domains.map((d) => `${d.domain}-${d.package}`);
  out.write(`\n${'t (s)'.padEnd(6)}  ${'phase'.padEnd(22)}${domains.map((d) => pad(d + ' W', 14)).join('')}\n`);
  sampler.start();
  let prev: Totals = sampler.totals();
  const phases = (t: number) => (t < 1 ? 'idle' : t < Math.ceil(seconds / 2) ? 'worker thread busy' : 'worker + main busy');
  for (let t = 0; t < seconds; t++) {
    const phase = phases(t);
    if (phase === 'idle') await new Promise((r) => setTimeout(r, 1000));
    else if (phase === 'worker thread busy') await spinWorker(1000);
    else {
      const w = spinWorker(1000);
      spinMain(950);
      await w;
    }
    const cur = sampler.totals();
    const dt = Number(cur.timeNs - prev.timeNs) / 1e9;
    const watts = cur.readings.map((r, i) => (r.joules - prev.readings[i].joules) / dt);
    out.write(`${String(t + 1).padEnd(6)}  ${phase.padEnd(22)}${watts.map((w) => pad(w.toFixed(2), 14)).join('')}\n`);
    prev = cur;
  }
  sampler.stop();

  const totals = sampler.totals();
  const elapsed = Number(totals.timeNs - totals.startNs) / 1e9;
  out.write(`\nEnergy over ${elapsed.toFixed(2)} s${st0.estimated ? ' (estimated)' : ''}:\n`);
  for (const r of totals.readings) {
    out.write(`  ${(r.domain + '-' + r.package).padEnd(12)} ${pad(r.joules.toFixed(3), 10)} J  ${pad((r.joules / elapsed).toFixed(2), 8)} W\n`);
  }
  if (sampler.stats().threads.backend !== 'off') {
    const a = sampler.attribution();
    const pct = (x: number) => (a.total > 0 ? ((100 * x) / a.total).toFixed(1) : '0.0');
    out.write(`\nWhere the ${a.domains.join('+')} energy went:\n`);
    out.write(`  this process   ${pad(a.process.toFixed(3), 10)} J  ${pad(pct(a.process), 5)} %\n`);
    out.write(`  baseline       ${pad(a.baseline.toFixed(3), 10)} J  ${pad(pct(a.baseline), 5)} %  (idle power × time)\n`);
    out.write(`  other          ${pad(a.other.toFixed(3), 10)} J  ${pad(pct(a.other), 5)} %  (other processes; idle without a baseline)\n`);
    out.write('\nTop threads of this process:\n');
    out.write(`  ${'tid'.padEnd(8)} ${'name'.padEnd(16)} ${pad('on-CPU ms', 10)} ${pad('joules', 10)}\n`);
    for (const t of sampler.threads().slice(0, 6)) {
      out.write(`  ${String(t.tid).padEnd(8)} ${t.name.padEnd(16)} ${pad((t.onCpuNs / 1e6).toFixed(1), 10)} ${pad(t.joules.toFixed(3), 10)}${t.exited ? '  (exited)' : ''}\n`);
    }
  }
  const s = sampler.stats();
  out.write(
    `\nSampler: ${s.timing.samples} samples at ${s.timing.achievedRateHz.toFixed(0)} Hz, ` +
      `jitter p50 ${s.timing.jitterUs.p50.toFixed(1)} µs / p99 ${s.timing.jitterUs.p99.toFixed(1)} µs, ` +
      `${s.timing.missedDeadlines} missed deadlines, ${s.ring.dropped} dropped, ` +
      `${s.timing.cpuPercent.toFixed(2)} % of one core` +
      (s.bpf ? `; eBPF saw ${s.bpf.events} context switches` : '') +
      '.\n',
  );
  sampler.close();
  return 0;
}
