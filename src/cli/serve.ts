// `jouletrace serve`: a host agent serving Prometheus metrics — the machine's energy per RAPL
// domain and, for each --pid, the energy attributed to that process.
import * as fs from 'node:fs';
import * as http from 'node:http';
import { Counter, Registry } from 'prom-client';
import { EnergyTracker } from '../obs-internal';
import { registerMetrics } from '../prometheus';
import { Sampler } from '../sampler';
import { SOURCE_NAMES, type SourceName } from '../source-options';

const HELP = `Usage: jouletrace serve [options]

Serves Prometheus metrics at http://HOST:PORT/metrics until SIGINT or SIGTERM:
  jouletrace_energy_joules_total{domain,package,source}   energy per RAPL domain and package
  jouletrace_power_watts{domain,package}                  average power since the previous scrape
  jouletrace_process_energy_joules_total{pid,command,part}
      for each --pid: energy attributed to that process (part="process"), the idle baseline
      and everything else, which add up to the machine's package (or psys) energy
  jouletrace_samples_total, jouletrace_sampler_jitter_seconds{quantile}, ...  sampler health
Figures from the model source carry estimated="true".

Options:
  --host HOST          address to listen on (default 127.0.0.1; 0.0.0.0 exposes it to the network)
  --port N             port (default 9464)
  --pid N              attribute energy to process N (repeatable; one sampler per pid, each
                       tracking that process's threads: eBPF, else procfs)
  --source NAME        energy source: ${SOURCE_NAMES.join(', ')} (default auto)
  --interval MS        sampling period in milliseconds, 0.05 to 1000 (default 10)
  --country CODE       grid carbon intensity of this country (ISO 3166-1 alpha-3, e.g. FRA):
                       adds jouletrace_carbon_grams_total
  --grams-per-kwh N    fixed grid carbon intensity instead of --country
  -h, --help           show this help
`;

interface ServeArgs {
  host: string;
  port: number;
  pids: number[];
  source: SourceName;
  intervalMs: number;
  country?: string;
  gramsPerKwh?: number;
}

function parseArgs(argv: string[]): ServeArgs | { help: true } | { error: string } {
  const args: ServeArgs = { host: '127.0.0.1', port: 9464, pids: [], source: 'auto' as SourceName, intervalMs: 10 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.indexOf('=');
    const name = arg.startsWith('--') && eq > 0 ? arg.slice(0, eq) : arg;
    const value = (): string | undefined => (eq > 0 && arg.startsWith('--') ? arg.slice(eq + 1) : argv[++i]);
    const num = (v: string | undefined, min: number, max: number, integer: boolean): number | string => {
      const n = Number(v);
      if (v === undefined || v === '' || !Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
        return `${name} expects ${integer ? 'an integer' : 'a number'} from ${min} to ${max}, got ${JSON.stringify(v ?? null)}`;
      }
      return n;
    };
    switch (name) {
      case '-h':
      case '--help':
        return { help: true };
      case '--host': {
        const v = value();
        if (!v) return { error: '--host expects an address' };
        args.host = v;
        break;
      }
      case '--port': {
        const n = num(value(), 0, 65535, true);
        if (typeof n === 'string') return { error: n };
        args.port = n;
        break;
      }
      case '--pid': {
        const n = num(value(), 1, 2 ** 22, true);
        if (typeof n === 'string') return { error: n };
        if (!args.pids.includes(n)) args.pids.push(n);
        break;
      }
      case '--source': {
        const v = value();
        if (!v || !(SOURCE_NAMES as readonly string[]).includes(v)) {
          return { error: `--source expects one of ${SOURCE_NAMES.join(', ')}, got ${JSON.stringify(v ?? null)}` };
        }
        args.source = v as SourceName;
        break;
      }
      case '--interval': {
        const n = num(value(), 0.05, 1000, false);
        if (typeof n === 'string') return { error: n };
        args.intervalMs = n;
        break;
      }
      case '--country': {
        const v = value();
        if (!v) return { error: '--country expects an ISO 3166-1 alpha-3 code' };
        args.country = v;
        break;
      }
      case '--grams-per-kwh': {
        const n = num(value(), 0, 1e5, false);
        if (typeof n === 'string') return { error: n };
        args.gramsPerKwh = n;
        break;
      }
      default:
        return { error: `unknown argument ${JSON.stringify(arg)}` };
    }
  }
  if (args.country !== undefined && args.gramsPerKwh !== undefined) return { error: 'use --country or --grams-per-kwh, not both' };
  return args;
}

function commandOf(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

/** Runs the agent; resolves with the exit code once SIGINT or SIGTERM arrives (0) or on a start-up error. */
export async function serveCommand(argv: string[]): Promise<number> {
  const parsed = parseArgs(argv);
  if ('help' in parsed) {
    process.stdout.write(HELP);
    return 0;
  }
  if ('error' in parsed) {
    process.stderr.write(`jouletrace serve: ${parsed.error}\n\n${HELP}`);
    return 2;
  }
  const args = parsed;
  const samplers: Sampler[] = [];
  const closeAll = () => {
    for (const s of samplers.splice(0)) s.close();
  };
  const registry = new Registry();
  const intervalUs = Math.round(args.intervalMs * 1000);
  try {
    // Machine-level energy: one sampler without thread tracking.
    const node = new Sampler({ source: args.source, intervalUs, threads: 'off' });
    samplers.push(node);
    const carbon =
      args.country !== undefined ? { country: args.country } : args.gramsPerKwh !== undefined ? { gramsPerKwh: args.gramsPerKwh } : undefined;
    registerMetrics(node, { registry, appMetrics: false, carbon });
    node.start();

    // Per process: a sampler tracking that process's threads, and its attribution as counters.
    const trackers = args.pids.map((pid) => {
      const s = new Sampler({ source: node.source, intervalUs, pid });
      samplers.push(s);
      s.start();
      return { pid, command: commandOf(pid), tracker: new EnergyTracker(s) };
    });
    if (trackers.length > 0) {
      new Counter({
        name: 'jouletrace_process_energy_joules_total',
        help: "Energy attributed to each watched process (part=process), the idle baseline and the rest, from that process's sampler; the parts add up to the machine's primary-domain energy.",
        labelNames: ['pid', 'command', 'part', 'estimated'],
        registers: [registry],
        collect() {
          this.reset();
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
    }
  } catch (err) {
    closeAll();
    process.stderr.write(`jouletrace serve: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }

  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
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
    process.stderr.write(`jouletrace serve: cannot listen on ${args.host}:${args.port}: ${(err as Error).message}\n`);
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
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
  });
}
