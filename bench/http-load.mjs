// A hello-world server in its own process (bench/http-server.mjs) and autocannon load against it,
// for bench/http.mjs and bench/request-cost.mjs.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { root } from './common.mjs';

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
  spawnSync('taskset', ['-p', '-c', '0', String(process.pid)], { stdio: 'ignore' });
}

/** Starts `node bench/http-server.mjs <framework> <variant>` and waits until it listens. */
export async function serve(framework, variant, { pin = false } = {}) {
  const args = [path.join(root, 'bench/http-server.mjs'), framework, variant];
  const child = pin
    ? spawn('taskset', ['-c', `1-${cpus - 1}`, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
    : spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  const port = await new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += String(d);
      const m = /listening (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
  return {
    port,
    pid: child.pid,
    // Frozen whole (its sampler thread too) while other variants are measured, and thawed.
    pause: () => child.kill('SIGSTOP'),
    resume: () => child.kill('SIGCONT'),
    mark: () => child.kill('SIGUSR2'),
    // The server's CPU time (all its threads, user + system) per request served since mark(), µs.
    stop: () =>
      new Promise((r) => {
        child.once('exit', () => {
          const m = /cpu (\{.*\})/.exec(out);
          const c = m ? JSON.parse(m[1]) : undefined;
          r(c && c.served > 0 ? (c.user + c.system) / c.served : NaN);
        });
        child.kill('SIGTERM');
      }),
  };
}

/**
 * Loads GET /hello/world with 10 connections for `seconds`; resolves with the mean requests/s.
 * overallRate: a fixed request rate, so that each variant serves the same load and CPU per
 * request compares like with like (at full speed a slower server also changes how the load
 * generator and the server share the CPUs); 0: as fast as possible.
 */
export function load(port, { seconds, overallRate = 0 }) {
  return loadResult(port, { seconds, overallRate }).then((r) => r.requests.average);
}

/** load(), resolving with autocannon's whole result (requests.total: how many completed). */
export function loadResult(port, { seconds, overallRate = 0 }) {
  return new Promise((resolve, reject) => {
    autocannon(
      { url: `http://127.0.0.1:${port}/hello/world`, connections: 10, duration: seconds, ...(overallRate && { overallRate }) },
      (err, res) => (err ? reject(err) : resolve(res)),
    );
  });
}
