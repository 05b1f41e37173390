// `npm run bench`: every benchmark in its own process, one after the other, so they do not
// disturb each other. BENCH_ONLY=sampler,ring limits the set.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = path.dirname(fileURLToPath(import.meta.url));
const order = ['sampler', 'ring', 'attribution', 'bpf-event-cost', 'spans', 'requests-in-flight', 'request-cost', 'request-cold', 'http', 'request-instructions'];
const only = process.env.BENCH_ONLY?.split(',');
const files = order.filter((n) => fs.existsSync(path.join(dir, `${n}.mjs`)) && (!only || only.includes(n)));
console.log(`jouletrace benchmarks — node ${process.version}, ${process.arch}; medians and ratios against baselines measured in the same run`);
let failed = 0;
for (const name of files) {
  const r = spawnSync(process.execPath, ['--expose-gc', path.join(dir, `${name}.mjs`)], { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`bench ${name} failed with status ${r.status}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
