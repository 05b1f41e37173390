// `npm run bench`: every benchmark in its own process, one after the other, so they do not
// disturb each other. BENCH_ONLY=sampler,ring limits the set.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = path.dirname(fileURLToPath(import.meta.url));
const order = ['sampler', 'ring', 'attribution', 'attribution-split', 'bpf-event-cost', 'spans', 'requests-in-flight', 'request-cost', 'request-cold', 'http', 'request-instructions'];
const only = process.env.BENCH_ONLY?.split(',');
const files = order.filter((n) => fs.existsSync(path.join(dir, `${n}.mjs`)) && (!only || only.includes(n)));
console.log(`jouletrace benchmarks — node ${process.version}, ${process.arch}; medians and ratios against baselines measured in the same run`);

// A signal to this process (a CI step's timeout, `kill`, Ctrl-C) goes on to the benchmark running,
// which ends its own children (servers, load processes) and restores what it changed
// (kernel.bpf_stats_enabled); then no further benchmark starts, and this process exits with
// 128 + the signal's number once that one has ended. (spawnSync forwarded nothing: the benchmark
// ran on, and the next ones after it.)
let current;
let stopping;
for (const sig of ['SIGTERM', 'SIGHUP', 'SIGINT']) {
  process.on(sig, () => {
    stopping = sig;
    current?.kill(sig);
  });
}

let failed = 0;
for (const name of files) {
  if (stopping) break;
  current = spawn(process.execPath, ['--expose-gc', path.join(dir, `${name}.mjs`)], { stdio: 'inherit' });
  const [status, signal] = await new Promise((resolve) => {
    current.once('error', (e) => resolve([`not started (${e.message})`, null]));
    current.once('exit', (code, sig) => resolve([code, sig]));
  });
  current = undefined;
  if (status !== 0) {
    console.error(`bench ${name} failed with ${signal ? `signal ${signal}` : `status ${status}`}`);
    failed++;
  }
}
if (stopping) process.exit(128 + os.constants.signals[stopping]);
process.exit(failed ? 1 : 0);
