// A hello-world server in its own process (bench/http-server.mjs) and autocannon load against it,
// for bench/http.mjs and bench/request-cost.mjs.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { endWithThisProcess, root } from './common.mjs';

const require = createRequire(import.meta.url);
const autocannon = require('autocannon');

// With `pin` (bench/http.mjs, where taskset is installed and there are 2 CPUs or more): the load
// generator, this process, on CPU 0, and the servers on the others, so that the two never take
// turns on one CPU (on a 2-vCPU guest, unpinned, one measurement's spread was twice as wide).
// Only where this process may run on CPUs 0 to n-1 (a cpuset that leaves some out would refuse
// taskset's list).
const cpus = os.availableParallelism?.() ?? os.cpus().length;
const allowed = /^Cpus_allowed_list:\s*(\S+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1];
export const canPin = cpus >= 2 && allowed === `0-${cpus - 1}` && spawnSync('sh', ['-c', 'command -v taskset']).status === 0;
export function pinLoadGenerator() {
  // Every thread (-a): V8's and libuv's too, not the main one alone.
  spawnSync('taskset', ['-a', '-p', '-c', '0', String(process.pid)], { stdio: 'ignore' });
}

const CONNECTIONS = 10;
// Loads run against each server's port, for stop()'s check of its tracker's count.
const loadsOn = new Map();

// A server that neither listens nor exits within this long is taken for hung.
const LISTEN_TIMEOUT_MS = 60_000;

/** Starts `node bench/http-server.mjs <framework> <variant>` and waits until it listens. */
export async function serve(framework, variant, { pin = false } = {}) {
  const args = [path.join(root, 'bench/http-server.mjs'), framework, variant];
  const child = pin
    ? spawn('taskset', ['-c', `1-${cpus - 1}`, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
    : spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  // Servers still running when this process ends (a benchmark that threw, or was signalled) go
  // with it, frozen ones too.
  endWithThisProcess(child);
  let out = '';
  // Resolved whenever the server exits, before stop() or after.
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`server ${framework} ${variant} printed no "listening" in ${LISTEN_TIMEOUT_MS / 1000} s`));
    }, LISTEN_TIMEOUT_MS);
    child.stdout.on('data', (d) => {
      out += String(d);
      const m = /listening (\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`server ${framework} ${variant} exited with ${code}`));
    });
  });
  return {
    port,
    pid: child.pid,
    // Frozen whole (its sampler thread too) while other variants are measured, and thawed.
    pause: () => child.kill('SIGSTOP'),
    resume: () => child.kill('SIGCONT'),
    mark: () => child.kill('SIGUSR2'),
    // The server's CPU time (all its threads, user + system) per request served since mark(), µs.
    // (Also where it exited already: a server that crashed mid-set reads NaN.) Rejects where the
    // server's tracker recorded fewer requests than it served, less those a load's end may have
    // left in flight (one a connection, CONNECTIONS a load): its hook did not track them, and
    // the variant's figures would be those of a server without accounting.
    stop: () => {
      child.kill('SIGTERM');
      return exited.then(() => {
        const m = /cpu (\{.*\})/.exec(out);
        const c = m ? JSON.parse(m[1]) : undefined;
        const inFlight = CONNECTIONS * (loadsOn.get(port) ?? 0);
        loadsOn.delete(port);
        if (c && c.recorded !== undefined && c.recorded < c.total - inFlight) {
          throw new Error(`server ${framework} ${variant}: its tracker recorded ${c.recorded} of the ${c.total} requests it served (at most ${inFlight} could have been in flight as loads ended)`);
        }
        return c && c.served > 0 ? (c.user + c.system) / c.served : NaN;
      });
    },
  };
}

// autocannon ends a load only at one of its sampling ticks, once a second by default: a load of
// `amount` requests that took 0.2 s resolved after 1 s (2 s at times). Loads by count sample this
// often instead.
const AMOUNT_SAMPLE_MS = 50;

/**
 * Loads GET /hello/world with 10 connections for `seconds` (whole seconds: autocannon ends a
 * load at its once-a-second tick), or for `amount` requests (ended within AMOUNT_SAMPLE_MS of the
 * last); resolves with the mean requests/s.
 * overallRate: a fixed request rate, so that each variant serves the same load and CPU per
 * request compares like with like (at full speed a slower server also changes how the load
 * generator and the server share the CPUs); 0: as fast as possible.
 */
export function load(port, { seconds, amount, overallRate = 0 }) {
  // requests.average is per sampling interval.
  return loadResult(port, { seconds, amount, overallRate }).then((r) => (r.requests.average * 1000) / r.sampleInt);
}

/**
 * load(), resolving with autocannon's whole result (requests.total: how many completed).
 * Rejects where any response was not a 2xx, or any request failed or timed out: autocannon
 * counts those in its throughput (a server answering 500 read faster than one answering 200, a
 * dead one 0 req/s without an error).
 */
export function loadResult(port, { seconds, amount, overallRate = 0 }) {
  loadsOn.set(port, (loadsOn.get(port) ?? 0) + 1);
  return new Promise((resolve, reject) => {
    autocannon(
      {
        url: `http://127.0.0.1:${port}/hello/world`,
        connections: CONNECTIONS,
        ...(amount !== undefined ? { amount, sampleInt: AMOUNT_SAMPLE_MS } : { duration: seconds }),
        ...(overallRate && { overallRate }),
      },
      (err, res) => {
        if (err) return reject(err);
        if (res.non2xx || res.errors || res.timeouts) {
          return reject(new Error(`load on port ${port}: ${res.non2xx} non-2xx responses, ${res.errors} errors, ${res.timeouts} timeouts of ${res.requests.total}`));
        }
        resolve(res);
      },
    );
  });
}
