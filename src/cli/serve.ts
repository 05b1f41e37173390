// `jouletrace serve`: a host agent serving Prometheus metrics — the machine's energy per RAPL
// domain and, for each --pid, the energy attributed to that process.
import * as fs from 'node:fs';
import * as http from 'node:http';
import { EnergyTracker } from '../energy-tracker';
import { gridIntensity } from '../carbon';
import { Sampler } from '../sampler';
import { SOURCE_NAMES, type SourceName } from '../source-options';
import { checkNumber, flagsOf, inFlagWords, numberOption, parseArgs, parseIntervalUs, reportUsageError, skippedSourceNotes, SOURCE_PATH_HELP, SOURCE_PATH_SPECS, sourceOption, sourcePathOptions, UsageError, type OptionSpec, type ParsedArgs, type SourcePaths } from './args';
import { printable } from './format';
import { wasIgnored } from './ignored-signals';
import { processState, watchedProcessStart } from './proc-stat';

const HELP = `Usage: jouletrace serve [options]

Serves Prometheus metrics at http://HOST:PORT/metrics until SIGINT or SIGTERM:
  jouletrace_energy_joules_total{domain,package,source}   energy per RAPL domain and package
  jouletrace_power_watts{domain,package}                  average power since the previous scrape
  jouletrace_process_energy_joules_total{pid,command,part}
      for each --pid: energy attributed to that process (part="process"), the idle baseline
      and everything else, which add up to the machine's package (or psys) energy
      since that process was first watched (until it exits)
  jouletrace_process_running{pid,command,threads}         1 while that process runs, 0 once it
                                                          exited; threads: bpf or procfs
  jouletrace_process_dropped_threads_total{pid,command}   its threads left untracked (no free slot)
  jouletrace_samples_total, jouletrace_sampler_jitter_seconds{stat}, ...  sampler health
Figures from the model source carry estimated="true".

Options:
  --host HOST          address to listen on (default 127.0.0.1; 0.0.0.0 exposes it to the network)
  --port N             port (default 9464)
  --pid N              attribute energy to process N (repeatable; one sampler per pid, each
                       tracking that process's threads: eBPF, else procfs). Once N exits, its
                       figures stay as they were at its exit (its sampler stops within 10 ms of
                       it; one line on stderr)
  --source NAME        energy source: ${SOURCE_NAMES.join(', ')} (default auto: a note
                       on stderr says why each source before the one it takes was passed over)
  --interval T         sampling period: milliseconds, or with a unit (500us, 10ms, 1s);
                       50us to 1s (default 10ms)
  --country CODE       grid carbon intensity of this country (ISO 3166-1 alpha-3, e.g. FRA):
                       adds jouletrace_carbon_grams_total
  --grams-per-kwh N    fixed grid carbon intensity instead of --country
  -h, --help           show this help

${SOURCE_PATH_HELP}`;

const SPECS: OptionSpec[] = [
  { name: 'host', type: 'string' },
  { name: 'port', type: 'number' },
  { name: 'pid', type: 'number', repeatable: true },
  { name: 'source', type: 'string' },
  { name: 'interval', type: 'string' },
  { name: 'country', type: 'string' },
  { name: 'grams-per-kwh', type: 'number' },
  { name: 'help', short: 'h', type: 'flag' },
  ...SOURCE_PATH_SPECS,
];
// The flags this command's messages name (inFlagWords).
const FLAGS = flagsOf(SPECS);

interface ServeArgs {
  host: string;
  port: number;
  pids: number[];
  source: SourceName;
  paths: SourcePaths;
  intervalUs: number;
  carbon?: { country: string } | { gramsPerKwh: number };
}

function serveArgs(options: ParsedArgs['options'], lists: ParsedArgs['lists']): ServeArgs {
  const host = (options.host as string | undefined) ?? '127.0.0.1';
  if (host === '') throw new UsageError('--host expects an address');
  const pids = [...new Set((lists.pid ?? []).map((p) => checkNumber('pid', p as number, 1, 2 ** 22, true)))];
  const country = options.country as string | undefined;
  if (country === '') throw new UsageError('--country expects an ISO 3166-1 alpha-3 code');
  const gramsPerKwh = options['grams-per-kwh'] === undefined ? undefined : numberOption(options, 'grams-per-kwh', 0, 0, 1e5);
  if (country !== undefined && gramsPerKwh !== undefined) throw new UsageError('use --country or --grams-per-kwh, not both');
  if (country !== undefined) {
    try {
      gridIntensity(country);
    } catch {
      // Unknown, or known with no figure (CAF): either way the figure must come from the user.
      throw new UsageError(
        `--country expects an ISO 3166-1 alpha-3 code or a region that @tgwf/co2's data gives a figure for (e.g. FRA, USA, WORLD; else give --grams-per-kwh), not ${JSON.stringify(country)}`,
      );
    }
  }
  return {
    host,
    port: numberOption(options, 'port', 9464, 0, 65535, true),
    pids,
    source: sourceOption(options) ?? 'auto',
    paths: sourcePathOptions(options),
    intervalUs: options.interval === undefined ? 10_000 : parseIntervalUs(options.interval as string, 'ms'),
    carbon: country !== undefined ? { country } : gramsPerKwh !== undefined ? { gramsPerKwh } : undefined,
  };
}

function commandOf(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

// What to do about the listen errors that have a remedy.
function listenFix(code: string | undefined, port: number): string {
  switch (code) {
    case 'EADDRINUSE':
      // 9464 is @opentelemetry/exporter-prometheus's default port as well as serve's.
      return ': another process has the port (perhaps another jouletrace serve, or an application exporting OpenTelemetry metrics with @opentelemetry/exporter-prometheus, whose default port is 9464 too); pick another with --port N';
    case 'EACCES':
      // Above the privileged ports only a security module (SELinux, AppArmor) or a BPF bind hook refuses.
      return port > 0 && port < 1024
        ? ': ports below 1024 need root or CAP_NET_BIND_SERVICE (or a lower sysctl net.ipv4.ip_unprivileged_port_start); or pick one above with --port N'
        : ': a security policy (SELinux, AppArmor, a cgroup BPF bind hook) refuses this port to this process';
    case 'EMFILE':
      return ': out of file descriptors; raise the limit (ulimit -n; the procfs backends of the --pids keep up to a quarter of them)';
    default:
      return '';
  }
}

/** Runs the agent; resolves with the exit code once SIGINT or SIGTERM arrives (0) or on a start-up error. */
export async function serveCommand(argv: string[]): Promise<number> {
  let args: ServeArgs;
  try {
    const { options, lists } = parseArgs(argv, SPECS);
    if (options.help) {
      process.stdout.write(HELP);
      return 0;
    }
    args = serveArgs(options, lists);
  } catch (e) {
    return reportUsageError('serve', HELP, e);
  }
  // Loaded once the command line is taken: --help and a usage error need no prom-client (an
  // optional peer dependency), and one missing is then the one error left to report.
  await import('../prom-client-peer'); // first: a missing prom-client is its error
  const { Counter, Gauge, Registry } = await import('prom-client');
  const { registerMetrics } = await import('../prometheus');
  // As top says it: a process that is not there is not a sampler's error about /proc; nor one
  // that has exited and not been reaped (a zombie).
  const starts = new Map<number, number>();
  for (const pid of args.pids) {
    const start = watchedProcessStart('serve', pid);
    if (start === undefined) return 1;
    starts.set(pid, start);
  }
  const samplers: Sampler[] = [];
  let exitWatch: NodeJS.Timeout | undefined;
  const closeAll = () => {
    clearInterval(exitWatch);
    for (const s of samplers.splice(0)) s.close();
  };
  const registry = new Registry();
  const intervalUs = args.intervalUs;
  try {
    // Machine-level energy: one sampler without thread tracking. No sampler here keeps a ring:
    // nothing reads samples, and a full ring would count each one past it as dropped.
    const node = new Sampler({ source: args.source, ...args.paths, intervalUs, threads: 'off', ringCapacity: 0 });
    samplers.push(node);
    for (const note of skippedSourceNotes(node.skipped, FLAGS)) process.stderr.write(`jouletrace serve: note: ${note}\n`);
    // Nothing of this process is measured: no app_* metric, no span or request histogram.
    registerMetrics(node, { registry, appMetrics: false, spanMetrics: false, carbon: args.carbon });
    node.start();

    // Per process: a sampler tracking that process's threads, and its attribution as counters.
    const trackers = args.pids.map((pid) => {
      const s = new Sampler({ source: node.source, ...args.paths, intervalUs, pid, ringCapacity: 0 });
      samplers.push(s);
      s.start();
      // droppedThreads: read at each scrape, and kept at the exit (the sampler closes then).
      const stats = s.stats();
      const threads = stats.threads.backend;
      const watch = stats.target?.watch ?? null;
      return { pid, command: commandOf(pid), start: starts.get(pid)!, watch, sampler: s, tracker: new EnergyTracker(s), exited: false, threads, droppedThreads: 0 };
    });
    // A process gone (or a zombie, or its pid reused) keeps its figures as they were, rather than
    // go on charging the baseline and the rest of the machine to a process that is not there:
    // its sampler stopped itself at the exit (stats().target), so a last read takes the final
    // figures, then the sampler closes. Looked at each second, and at each scrape; /proc as well,
    // for a sampler that could not watch (neither a pidfd nor the process's stat file). A pidfd
    // sees the exit itself: there /proc only tells a zombie or a reused pid, never an absence.
    // /proc that cannot be read (out of file descriptors: the procfs backend holds 2 a thread)
    // says nothing of the process, which is watched on.
    const gone = (t: (typeof trackers)[number]): boolean => {
      if (!t.sampler.running) return true;
      const state = processState(t.pid, t.start);
      return state === 'zombie' || state === 'reused' || (state === 'exited' && t.watch !== 'pidfd');
    };
    const noticeExits = () => {
      for (const t of trackers) {
        if (t.exited || !gone(t)) continue;
        t.tracker.read();
        t.droppedThreads = t.sampler.stats().threads.droppedThreads;
        t.sampler.close();
        t.exited = true;
        process.stderr.write(`jouletrace serve: process ${t.pid} (${printable(t.command)}) exited; its figures stay as they were at its exit\n`);
      }
    };
    if (trackers.length > 0) {
      exitWatch = setInterval(noticeExits, 1000).unref();
      new Counter({
        name: 'jouletrace_process_energy_joules_total',
        help: "Energy attributed to each watched process (part=process), the idle baseline and the rest, from that process's sampler; the parts add up to the machine's primary-domain energy since the process was first watched, until it exited.",
        labelNames: ['pid', 'command', 'part', 'estimated'],
        registers: [registry],
        collect() {
          this.reset();
          noticeExits();
          for (const t of trackers) {
            const parts = t.tracker.read().parts;
            if (!parts) continue;
            for (const part of ['process', 'baseline', 'other'] as const) {
              const labels: Record<string, string> = { pid: String(t.pid), command: t.command, part };
              if (t.tracker.estimated) labels.estimated = 'true';
              this.inc(labels, parts[part]);
            }
          }
        },
      });
      // Per process, what the machine-level health series say of the machine's sampler: whether
      // its figures still move, and what they leave out. Read from the last run once it exited.
      new Gauge({
        name: 'jouletrace_process_running',
        help: 'Whether each watched process still runs (1) or has exited (0, its energy series final); threads: the tracking backend.',
        labelNames: ['pid', 'command', 'threads'],
        registers: [registry],
        collect() {
          this.reset();
          for (const t of trackers) this.set({ pid: String(t.pid), command: t.command, threads: t.threads }, t.exited ? 0 : 1);
        },
      });
      new Counter({
        name: 'jouletrace_process_dropped_threads_total',
        help: "Threads of each watched process left untracked for want of a slot; their energy went to part=\"other\".",
        labelNames: ['pid', 'command'],
        registers: [registry],
        collect() {
          this.reset();
          for (const t of trackers) {
            if (!t.exited) t.droppedThreads = t.sampler.stats().threads.droppedThreads;
            this.inc({ pid: String(t.pid), command: t.command }, t.droppedThreads);
          }
        },
      });
    }
  } catch (err) {
    closeAll();
    process.stderr.write(`jouletrace serve: ${inFlagWords(err instanceof Error ? err.message : String(err), FLAGS)}\n`);
    return 1;
  }

  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
    } else if (url === '/metrics' && req.method === 'HEAD') {
      // Headers only, and no collection: one would move the window behind jouletrace_power_watts
      // (a health check's HEAD every few seconds would shorten Prometheus's).
      res.writeHead(200, { 'content-type': registry.contentType }).end();
    } else if (url === '/metrics') {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${String(err)}\n`),
      );
    } else if (url === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end('<a href="/metrics">/metrics</a>\n');
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found; try /metrics\n');
    }
  });

  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(args.port, args.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    closeAll();
    process.stderr.write(`jouletrace serve: cannot listen on ${args.host}:${args.port}: ${(err as Error).message}${listenFix((err as NodeJS.ErrnoException).code, args.port)}\n`);
    return 1;
  }
  const addr = server.address();
  const where = typeof addr === 'object' && addr ? `${addr.address.includes(':') ? `[${addr.address}]` : addr.address}:${addr.port}` : String(addr);
  process.stderr.write(
    `jouletrace serve: http://${where}/metrics (source ${samplers[0].source}${args.pids.length ? `, pids ${args.pids.join(', ')}` : ''})\n`,
  );

  return new Promise<number>((resolve) => {
    const stop = (signal: string) => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      process.stderr.write(`jouletrace serve: ${signal}, stopping\n`);
      server.close(() => {
        closeAll();
        resolve(0);
      });
      server.closeAllConnections();
    };
    const onInt = () => stop('SIGINT');
    const onTerm = () => stop('SIGTERM');
    // One ignored at start-up (`serve &` in a script: SIGINT) stays ignored.
    if (!wasIgnored('SIGINT')) process.on('SIGINT', onInt);
    if (!wasIgnored('SIGTERM')) process.on('SIGTERM', onTerm);
  });
}
