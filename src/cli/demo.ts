// `jouletrace demo`: the README's first command ends here. Shows what the machine can measure,
// then runs a built-in workload (an HTTP server on loopback with a cheap and an expensive route,
// driven by a load generator in a worker thread, plus a CPU-heavy worker thread), and prints
// joules per request per route, energy per thread, where the energy went, and an HTML report.
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { formatProbe, probe } from '../probe';
import { ReportCollector } from '../report/collector';
import { renderReport } from '../report/render';
import { RequestTracker, trackRequest } from '../requests';
import { UNMATCHED_ROUTE } from '../span-types';
import { Sampler, type SamplerOptions } from '../sampler';
import { primaryDomain } from '../sources';
import type { SourceName } from '../source-options';
import { COUNTERS_STILL_NOTE_S, countersStillNote, filePathOption, readErrorsNote, flagsOf, inFlagWords, numberOption, parseArgs, parseIntervalUs, probeInFlagWords, reportUsageError, SOURCE_PATH_HELP, SOURCE_PATH_SPECS, sourceOption, sourcePathOptions, UsageError, type OptionSpec, type SourcePaths } from './args';
import { colorEnabled, counted, fmtJitter, fmtJoules, fmtKnown, fmtWatts, paint, printable, unmeasuredMark } from './format';
import { OutputFiles } from './output-files';

const HELP = `Usage: jouletrace demo [options]

Prints the probe report, then measures a built-in workload for about 10 s: an HTTP server on
127.0.0.1 (this process's main thread) with a cheap route (GET /cheap) and an expensive one
(GET /expensive), driven by a load generator in a worker thread whose load rises and falls
each second, while a CPU-heavy worker thread runs through the middle of the run. Then it
prints the joules per request of each route, the energy of each thread, where the energy went
(this process, the baseline, everything else) and writes an HTML report.

Uses RAPL counters where the machine has them; elsewhere the model source, whose figures are
estimates and are labelled so. Nothing leaves the machine: the server binds 127.0.0.1 only.

Options:
  --seconds N       how long the workload runs (default 10, 2 to 600)
  --interval T      sampling period: microseconds, or with a unit (500us, 1ms, 10ms);
                    50us to 1s (default 1ms)
  --source S        energy source: auto, msr, perf, powercap, model (default auto)
  --html F          where to write the report (default jouletrace-report.html)
  --no-html         write no report
  --json            print the results as JSON on stdout; the human-readable
                    report (the probe report and the tables) goes to stderr
  --no-probe        skip the probe report
  -h, --help        show this help

${SOURCE_PATH_HELP}`;

const SPECS: OptionSpec[] = [
  { name: 'seconds', type: 'number' },
  { name: 'interval', type: 'string' },
  { name: 'source', type: 'string' },
  { name: 'html', type: 'string' },
  { name: 'no-html', type: 'flag' },
  { name: 'json', type: 'flag' },
  { name: 'no-probe', type: 'flag' },
  ...SOURCE_PATH_SPECS,
  { name: 'help', short: 'h', type: 'flag' },
];
// The flags this command's messages name (inFlagWords).
const FLAGS = flagsOf(SPECS);

// A worker's thread id as the sampler's rows number it (gettid(), in this process's own pid
// namespace; a span channel has it from the addon). /proc/thread-self names it in /proc's
// numbering, another namespace's where a pid namespace sees the host's /proc (`unshare --pid
// --fork` without --mount-proc): there its status's NSpid ends with this namespace's number.
const OWN_TID = `(() => {
  const fs = require('node:fs');
  const [pid, , tid] = fs.readlinkSync('/proc/thread-self').split('/');
  if (Number(pid) === process.pid) return Number(tid);
  const nspid = /\\nNSpid:([\\t \\d]+)/.exec(fs.readFileSync('/proc/thread-self/status', 'utf8'));
  return nspid ? Number(nspid[1].trim().split(/\\s+/).pop()) : Number(tid);
})()`;

// The load generator: sequential keep-alive requests over loopback, alternating 150 ms batches
// of each route; each one-second slot is busy for a rising then falling share of it, so
// throughput (and power) vary and the proportionality curve has a range to show.
const LOADGEN = `
const http = require('node:http');
const { parentPort, workerData } = require('node:worker_threads');
parentPort.postMessage({ tid: ${OWN_TID} });
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const duty = [0.2, 0.45, 0.7, 0.95, 0.7, 0.45];
function get(path) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: workerData.port, path, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
  });
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
(async () => {
  const start = Date.now();
  const end = start + workerData.ms;
  let sent = 0;
  let route = 0;
  const routes = ['/cheap', '/expensive'];
  while (Date.now() < end) {
    const slot = Math.floor((Date.now() - start) / 1000);
    const slotEnd = Math.min(end, start + (slot + 1) * 1000);
    const busyUntil = Math.min(slotEnd, start + slot * 1000 + 1000 * duty[slot % duty.length]);
    while (Date.now() < busyUntil) {
      const batchEnd = Math.min(busyUntil, Date.now() + 150);
      while (Date.now() < batchEnd) { await get(routes[route]); sent++; }
      route = 1 - route;
    }
    parentPort.postMessage({ sent });
    if (slotEnd > Date.now()) await sleep(slotEnd - Date.now());
  }
  agent.destroy();
  parentPort.postMessage({ sent, done: true });
})().catch((e) => parentPort.postMessage({ error: String(e && e.message || e) }));
`;

const HOG = `
const { parentPort, workerData } = require('node:worker_threads');
parentPort.postMessage({ tid: ${OWN_TID} });
const end = Date.now() + workerData.ms;
let x = 0;
while (Date.now() < end) for (let i = 0; i < 1e5; i++) x = (x * 1103515245 + 12345) % 2147483648;
parentPort.postMessage(x);
`;

/** The expensive route's work: about a few milliseconds of arithmetic on the main thread. */
function expensiveWork(): number {
  let acc = 0;
  for (let i = 1; i < 300_000; i++) acc += Math.sqrt(i) * Math.sin(i);
  return acc;
}

export interface RouteSummary {
  route: string;
  count: number;
  joules: { sum: number; mean: number; p50: number; p99: number; max: number };
  durationMs: { mean: number };
  /** Of count, those measured in part (RouteStats.incomplete): their joules undercount. */
  incomplete: number;
}

// A route row's note of requests measured in part (their joules undercount): none, nothing.
function incompleteMark(n: number): string {
  return n > 0 ? `  (${n} incomplete)` : '';
}

export async function demoCommand(argv: string[]): Promise<number> {
  let seconds: number;
  let intervalUs = 1000;
  let opts;
  let source: SourceName | undefined;
  let paths: SourcePaths;
  try {
    opts = parseArgs(argv, SPECS).options;
    if (opts.help) {
      process.stdout.write(HELP);
      return 0;
    }
    seconds = numberOption(opts, 'seconds', 10, 2, 600);
    if (opts.interval !== undefined) intervalUs = parseIntervalUs(opts.interval as string);
    source = sourceOption(opts);
    paths = sourcePathOptions(opts);
    filePathOption(opts, 'html');
    if (opts.html !== undefined && opts['no-html']) throw new UsageError('--html and --no-html contradict each other');
  } catch (e) {
    return reportUsageError('demo', HELP, e);
  }
  const json = opts.json === true;
  // Human-readable text goes to stdout, unless stdout carries JSON.
  const out = json ? process.stderr : process.stdout;
  const err = process.stderr;
  const c = paint(colorEnabled(out));
  const htmlPath = opts['no-html'] ? undefined : path.resolve((opts.html as string | undefined) ?? 'jouletrace-report.html');
  // Opened now: a path that cannot be written fails before the workload runs, not after it.
  let files: OutputFiles<'html'>;
  try {
    files = OutputFiles.open({ html: htmlPath });
  } catch (e) {
    err.write(`jouletrace demo: ${(e as Error).message}\n`);
    return 1;
  }
  // A FIFO with no reader yet is waited for; a signal ends the wait (the files' own handler
  // removes what was made and raises it again).
  try {
    await files.waitForReaders();
  } catch (e) {
    files.discard();
    err.write(`jouletrace demo: ${(e as Error).message}\n`);
    return 1;
  }

  if (!opts['no-probe']) out.write(formatProbe(probeInFlagWords(await probe(paths), FLAGS)) + '\n');

  // Nothing here reads samples (the figures come from totals, threads and spans): a ring would
  // only hold memory, and once full count every sample past its size as lost.
  const samplerOptions: SamplerOptions = { intervalUs, ...paths, ringCapacity: 0 };
  if (source !== undefined) samplerOptions.source = source;
  // Before the workload: said in this command's flags, as run and top say it, with the sampler
  // closed and no report written (thrown, it reached bin/jouletrace.js in the library's words).
  const abandon = (e: unknown, opened?: Sampler): number => {
    opened?.close();
    files.discard();
    err.write(`jouletrace demo: ${inFlagWords((e as Error).message, FLAGS)}\n`);
    return 1;
  };
  let sampler: Sampler;
  try {
    sampler = new Sampler(samplerOptions);
  } catch (e) {
    return abandon(e);
  }
  const st0 = sampler.stats();
  const estimated = st0.estimated;
  out.write(c.bold(`Measuring with '${sampler.source}'`) + ` every ${intervalUs} µs, threads tracked with ${st0.threads.backend}.\n`);
  if (st0.threads.fallbackReason) out.write(c.dim(`  (${inFlagWords(st0.threads.fallbackReason, FLAGS)})\n`));
  if (estimated) {
    out.write(c.yellow('  No energy counters here: every figure below is ESTIMATED by the model source from CPU time.\n'));
  }
  try {
    sampler.start();
  } catch (e) {
    return abandon(e, sampler);
  }
  // Started with the sampler, the calibration included: the report's duration then covers what
  // its totals and attribution bar do (the sampler's whole run). Started after calibrating, it
  // said 2.10 s beside 8.59 W average from 22.43 J over 2.61 s.
  const collector = new ReportCollector(sampler, { title: 'jouletrace demo', subtitle: `built-in HTTP workload, ${seconds} s` });
  collector.start();
  const notes: string[] = [];
  if (!estimated && st0.threads.backend !== 'off') {
    const ms = seconds < 6 ? 500 : 1000;
    err.write(`  calibrating idle power for ${ms} ms: keep the machine quiet…\n`);
    let b;
    try {
      b = await sampler.calibrateBaseline({ durationMs: ms });
    } catch (e) {
      collector.stop();
      return abandon(e, sampler);
    }
    notes.push(
      `baseline (idle) power measured over the first ${ms} ms, before the workload: ${b.watts.map((w) => `${w.domain}-${w.package} ${fmtWatts(w.watts)}`).join(', ')}`,
    );
  } else if (estimated) {
    notes.push('the model source counts its idle watts as the baseline');
  }

  // Joules per request: the request tracker charges each request the energy of the thread that
  // serves it (and libuv's pool) while it is in flight, shared among requests in flight together.
  const tracker = new RequestTracker(sampler);
  tracker.onRequest((batch) => {
    for (const r of batch) {
      collector.addRecord({ label: `${r.method} ${r.route}`, joules: r.joules, endNs: r.endNs, durationMs: r.durationNs / 1e6, incomplete: r.incomplete }, 'request');
    }
  });
  // The expensive route's computation is also a span: a critical section measured on its own.
  const spans = st0.threads.backend !== 'off';
  const server = http.createServer((req, res) => {
    const route = req.url === '/cheap' || req.url === '/expensive' ? req.url : UNMATCHED_ROUTE;
    trackRequest(tracker, req, res, route);
    let body: string;
    if (route === '/cheap') body = JSON.stringify({ ok: true, t: Date.now() });
    else if (route === '/expensive') body = JSON.stringify({ ok: true, value: spans ? sampler.measure('expensive: compute', expensiveWork) : expensiveWork() });
    else {
      res.statusCode = 404;
      body = '{"ok":false}';
    }
    res.setHeader('content-type', 'application/json');
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;

  const roles = new Map<number, string>([[process.pid, 'main: server']]);
  const nameThread = (tid: number, role: string) => {
    roles.set(tid, role);
    collector.labelThread(process.pid, tid, role);
  };
  nameThread(process.pid, 'main: server');
  const samplerTid = sampler.stats().timing.samplerTid;
  if (samplerTid > 0) nameThread(samplerTid, 'sampler');
  const runStart = Date.now();
  const ms = Math.round(seconds * 1000);
  let sent = 0;
  const workers: Worker[] = [];
  const loadDone = new Promise<void>((resolve, reject) => {
    const w = new Worker(LOADGEN, { eval: true, workerData: { port, ms }, name: 'loadgen' });
    workers.push(w);
    w.on('message', (m: { tid?: number; sent: number; done?: boolean; error?: string }) => {
      if (m.tid !== undefined) return nameThread(m.tid, 'loadgen');
      if (m.error) reject(new Error(`load generator: ${m.error}`));
      sent = m.sent;
      if (m.done) resolve();
    });
    w.once('error', reject);
  });
  const hogStart = ms * 0.3;
  let hogTimer: NodeJS.Timeout | undefined;
  const hogDone = new Promise<void>((resolve, reject) => {
    hogTimer = setTimeout(() => {
      const w = new Worker(HOG, { eval: true, workerData: { ms: ms * 0.4 }, name: 'cpu-hog' });
      workers.push(w);
      w.on('message', (m: { tid?: number }) => (m.tid !== undefined ? nameThread(m.tid, 'cpu-hog') : resolve()));
      w.once('error', reject);
    }, hogStart);
  });

  // Progress: a bar on a terminal, a line every two seconds elsewhere.
  let prev = sampler.totals();
  let lastLine = 0;
  const primary = primaryDomain(sampler.domains);
  const progress = setInterval(() => {
    const cur = sampler.totals();
    const dt = Number(cur.timeNs - prev.timeNs) / 1e9;
    const watts = dt > 0 ? cur.readings.reduce((a, r, i) => a + (r.domain === primary ? r.joules - prev.readings[i].joules : 0), 0) / dt : 0;
    prev = cur;
    const el = (Date.now() - runStart) / 1000;
    const text = `${el.toFixed(1)}/${seconds} s  ${primary ?? ''} ${fmtWatts(watts)}${estimated ? ' (est.)' : ''}  ${sent} requests`;
    if (err.isTTY) {
      const width = 24;
      const done = Math.min(width, Math.round((width * el) / seconds));
      err.write(`\r\x1b[2K  [${'#'.repeat(done)}${'.'.repeat(width - done)}] ${text}`);
    } else if (el - lastLine >= 2) {
      lastLine = el;
      err.write(`  ${text}\n`);
    }
  }, 250);

  try {
    await Promise.all([loadDone, hogDone]);
  } catch (e) {
    // A load generator or hog that failed: the server, the other worker and the sampler would
    // keep the process alive, and the demo would never end.
    clearTimeout(hogTimer);
    await Promise.all(workers.map((w) => w.terminate()));
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    tracker.close();
    collector.stop();
    sampler.close();
    files.discard();
    throw e;
  } finally {
    clearInterval(progress);
    if (err.isTTY) err.write('\r\x1b[2K');
  }
  await new Promise<void>((resolve) => server.close(() => resolve()));
  // Let the last energy intervals land so the last requests and spans settle (bounded).
  const settleBy = Date.now() + 2000;
  do await new Promise((r) => setTimeout(r, Math.max(50, (4 * intervalUs) / 1000)));
  while (tracker.inFlight > 0 && Date.now() < settleBy);
  const routeStats = tracker.routes();
  tracker.close();
  const spanStats = spans ? sampler.spanStats() : [];
  // The sampler's final sample first: thread time no read measured joins unmeasuredNs only there,
  // and the collector's last point after it takes that in, as run's does.
  sampler.stop();
  collector.stop();

  const totals = sampler.totals();
  const elapsed = Number(totals.timeNs - totals.startNs) / 1e9;
  const threads = sampler.threads();
  const attribution = sampler.attribution();
  const stats = sampler.stats();
  const routeSummaries: RouteSummary[] = routeStats
    .map((r) => ({ route: `${r.method} ${r.route}`, count: r.count, joules: r.joules, durationMs: { mean: r.durationMs.mean }, incomplete: r.incomplete }))
    .sort((a, b) => a.route.localeCompare(b.route));
  const est = estimated ? ' (estimated)' : '';

  out.write(`\n${c.bold(`Joules per request${est}`)} — ${sent} requests in ${((Date.now() - runStart) / 1000).toFixed(1)} s, server on the main thread:\n`);
  out.write(c.dim(`  ${'route'.padEnd(16)} ${'requests'.padStart(8)} ${'mean'.padStart(10)} ${'p50'.padStart(10)} ${'p99'.padStart(10)} ${'total'.padStart(10)} ${'latency'.padStart(9)}\n`));
  for (const r of routeSummaries) {
    out.write(
      `  ${r.route.padEnd(16)} ${String(r.count).padStart(8)} ${fmtJoules(r.joules.mean).padStart(10)} ${fmtJoules(r.joules.p50).padStart(10)} ${fmtJoules(r.joules.p99).padStart(10)} ${fmtJoules(r.joules.sum).padStart(10)} ${`${r.durationMs.mean.toFixed(2)} ms`.padStart(9)}${c.yellow(incompleteMark(r.incomplete))}\n`,
    );
  }
  // Requests settle once an energy interval covers them: with no good read from some point on,
  // none after it did, and the table stood empty under its heading with nothing said.
  if (routeSummaries.length === 0) out.write(c.yellow(`  none of the ${sent} requests settled: no energy interval covered them (see the notes below)\n`));
  const cheap = routeSummaries.find((r) => r.route.endsWith('/cheap'));
  const dear = routeSummaries.find((r) => r.route.endsWith('/expensive'));
  if (cheap && dear && cheap.joules.mean > 0) {
    out.write(c.dim(`  /expensive costs ${(dear.joules.mean / cheap.joules.mean).toFixed(1)}× the energy of /cheap per request.\n`));
  }
  out.write(c.dim("  (each request is charged the serving thread's energy while it is in flight, shared with requests in flight beside it)\n"));

  for (const sp of spanStats) {
    out.write(
      c.dim(`  span '${sp.label}': ${sp.count} × ${fmtJoules(sp.joules.mean)} mean, ${fmtJoules(sp.joules.p99)} p99 (the computation alone, including its share of the baseline; ${fmtWatts(sp.watts)} while it ran)\n`),
    );
  }

  out.write(`\n${c.bold(`Energy per thread${est}`)}:\n`);
  out.write(c.dim(`  ${'tid'.padStart(8)}  ${'name'.padEnd(16)} ${'on-CPU'.padStart(10)} ${'joules'.padStart(12)}\n`));
  for (const t of threads.slice(0, 8)) {
    const name = printable(roles.get(t.tid) ?? t.name);
    out.write(`  ${String(t.tid).padStart(8)}  ${name.slice(0, 16).padEnd(16)} ${`${(t.onCpuNs / 1e6).toFixed(0)} ms`.padStart(10)} ${fmtJoules(t.joules).padStart(12)}${t.exited ? c.dim('  exited') : ''}${c.yellow(unmeasuredMark(t.unmeasuredNs))}\n`);
  }

  const pct = (x: number) => (attribution.total > 0 ? `${((100 * x) / attribution.total).toFixed(1)} %` : '-');
  out.write(`\n${c.bold(`Where the ${attribution.domains.join('+')} energy went${est}`)} over ${elapsed.toFixed(2)} s (${fmtJoules(attribution.total)}):\n`);
  out.write(`  ${'this process'.padEnd(14)} ${fmtJoules(attribution.process).padStart(12)} ${pct(attribution.process).padStart(8)}\n`);
  out.write(`  ${'baseline'.padEnd(14)} ${fmtJoules(attribution.baseline).padStart(12)} ${pct(attribution.baseline).padStart(8)}  idle power × time\n`);
  out.write(`  ${'other'.padEnd(14)} ${fmtJoules(attribution.other).padStart(12)} ${pct(attribution.other).padStart(8)}  other processes\n`);
  for (const r of totals.readings) out.write(c.dim(`  ${`${r.domain}-${r.package}`.padEnd(14)} ${fmtJoules(r.joules).padStart(12)} ${fmtWatts(r.joules / elapsed).padStart(10)} average\n`));
  // Measured figures that read 0 J over a stretch say so, as run's do.
  const still = (stats.timing.countersStillUs?.longest ?? 0) / 1e6;
  if (!stats.estimated && still >= COUNTERS_STILL_NOTE_S) {
    const note = countersStillNote(sampler.source, still);
    notes.push(note);
    out.write(c.yellow(`  note: ${note}\n`));
  }
  const readErrors = readErrorsNote(stats, threads.reduce((a, t) => a + t.unmeasuredNs, 0), 'marked in the thread table');
  if (readErrors !== null) {
    notes.push(readErrors);
    out.write(c.yellow(`  note: ${readErrors}\n`));
  }
  out.write(
    `\nSampler: ${stats.timing.samples} samples at ${fmtKnown(stats.timing.achievedRateHz, 0, ' Hz')}, ${fmtJitter(stats.timing.jitterUs)}, ` +
      `${counted(stats.timing.missedDeadlines, 'period')} skipped, ${stats.ring.dropped} dropped, ${fmtKnown(stats.timing.cpuPercent, 2, ' %')} of one core` +
      (stats.bpf ? `; eBPF (${stats.bpf.program} build) saw ${stats.bpf.events} context switches` : '') +
      '.\n',
  );

  if (htmlPath) {
    const data = collector.data({
      attribution,
      summary: [
        ...routeSummaries.map((r): [string, string] => [r.route, `${r.count} requests, ${fmtJoules(r.joules.mean)} mean, ${fmtJoules(r.joules.p99)} p99${est}${r.incomplete > 0 ? `, ${r.incomplete} incomplete` : ''}`]),
        ...totals.readings.map((r): [string, string] => [`${r.domain}-${r.package}`, `${fmtJoules(r.joules)}, ${fmtWatts(r.joules / elapsed)} average${est}`]),
        ['this process', `${fmtJoules(attribution.process)} (${pct(attribution.process)})${est}`],
        ['threads', `${st0.threads.backend}${stats.bpf ? `, ${stats.bpf.events} context switches seen` : ''}`],
        ['sampler', `${stats.timing.samples} samples, ${stats.ring.dropped} dropped, ${stats.timing.jitterUs ? `jitter p99 ${stats.timing.jitterUs.p99.toFixed(1)} µs` : 'no jitter yet'}`],
      ],
      notes: [...notes, "joules per request: RequestTracker in 'shared' mode, each request charged the serving thread's energy while in flight"],
    });
    const e = await files.write('html', renderReport(data));
    if (e) err.write(`jouletrace demo: cannot write ${htmlPath}: ${e.message}\n`);
    else out.write(`\nReport written to ${htmlPath}\n`);
  }
  const notWritten = files.failed().length;
  files.commit();
  for (const f of files.unplaced) err.write(`jouletrace demo: cannot put the report in place: ${f}\n`);
  const reportFailed = notWritten + files.unplaced.length > 0;
  if (json) {
    process.stdout.write(
      JSON.stringify(
        {
          source: sampler.source,
          estimated,
          durationS: elapsed,
          requests: sent,
          routes: routeSummaries,
          spans: spanStats,
          threads: threads.map((t) => ({ tid: t.tid, pid: t.pid, name: t.name, role: roles.get(t.tid) ?? null, onCpuNs: t.onCpuNs, joules: t.joules, unmeasuredNs: t.unmeasuredNs, exited: t.exited })),
          attribution: { total: attribution.total, process: attribution.process, baseline: attribution.baseline, other: attribution.other, domains: attribution.domains },
          domains: totals.readings.map((r) => ({ domain: r.domain, package: r.package, joules: r.joules })),
          report: htmlPath !== undefined && !reportFailed ? htmlPath : null,
        },
        null,
        2,
      ) + '\n',
    );
  }
  sampler.close();
  return reportFailed ? 1 : 0;
}
