// Throughput of an Express and a Fastify hello-world on loopback with autocannon, bare and with
// jouletrace: the sampler alone, the sampler + request accounting (shared mode), and exact mode.
// Variants alternate within each repetition so slow drifts of the machine hit all of them alike.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { median, root, sleep, table } from './common.mjs';

const require = createRequire(import.meta.url);
const autocannon = require('autocannon');
const REPS = Number(process.env.BENCH_REPS ?? 3);
const SECONDS = Number(process.env.BENCH_HTTP_SECONDS ?? 4);
const VARIANTS = ['bare', 'sampler', 'middleware', 'exact'];

async function serve(framework, variant) {
  const child = spawn(process.execPath, [path.join(root, 'bench/http-server.mjs'), framework, variant], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      const m = /listening (\d+)/.exec(String(d));
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
  return { port, stop: () => new Promise((r) => (child.once('exit', r), child.kill('SIGTERM'))) };
}

function load(port) {
  return new Promise((resolve, reject) => {
    autocannon({ url: `http://127.0.0.1:${port}/hello/world`, connections: 10, duration: SECONDS }, (err, res) =>
      err ? reject(err) : resolve(res.requests.average),
    );
  });
}

const rows = [];
for (const framework of ['express', 'fastify']) {
  const rps = Object.fromEntries(VARIANTS.map((v) => [v, []]));
  for (let r = 0; r < REPS; r++) {
    for (const v of VARIANTS) {
      const s = await serve(framework, v);
      await sleep(200);
      await load(s.port).then((x) => rps[v].push(x));
      await s.stop();
    }
  }
  const base = median(rps.bare);
  for (const v of VARIANTS) {
    const m = median(rps[v]);
    rows.push([framework, v, m, (m / base).toFixed(3), `${((1 - m / base) * 100).toFixed(1)} %`]);
  }
}
table(
  `HTTP hello-world throughput, requests/s (autocannon, 10 connections, ${SECONDS} s, median of ${REPS}; server and load share this machine's CPUs)`,
  ['framework', 'variant', 'req/s', 'ratio to bare', 'loss'],
  rows,
);
