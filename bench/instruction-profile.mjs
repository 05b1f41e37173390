// Where the instructions of bench/request-instructions.mjs go, per request, by function, and
// what one variant adds to another. callgrind knows V8's compiled JavaScript only by address;
// the server's /tmp/perf-<pid>.map (node --perf-basic-prof) names it.
//
//   BENCH_VG_KEEP=1 BENCH_VG_NODE_FLAGS=--perf-basic-prof BENCH_HTTP_FRAMEWORKS=node:http \
//     BENCH_VG_VARIANTS=sampler,middleware node bench/request-instructions.mjs
//   node bench/instruction-profile.mjs <dir of sampler> <dir of middleware> [part] [rows]
//
// Each dir is one variant's dump directory as printed by that run; part (default 2) picks the
// dump; requests per part is read from BENCH_VG_REQUESTS (default 4000), as in that run.
// BENCH_VG_EVENT picks what is counted (default Ir, instructions): with dumps from callgrind's
// --cache-sim=yes, I1mr, D1mr, ILmr or DLmr give cache misses per request by function instead.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const [dirA, dirB, part = '2', rows = '30'] = process.argv.slice(2);
if (!dirB) {
  console.error('usage: node bench/instruction-profile.mjs <dump dir A> <dump dir B> [part] [rows]');
  process.exit(2);
}
const requests = Number(process.env.BENCH_VG_REQUESTS ?? 4000);
const EVENT = process.env.BENCH_VG_EVENT ?? 'Ir';

// The main thread's dump of one part, and the perf map of the process that wrote it.
function files(dir) {
  const dump = fs.readdirSync(dir).find((f) => new RegExp(`^cg\\.\\d+\\.${part}-01$`).test(f));
  if (!dump) throw new Error(`no main-thread dump of part ${part} in ${dir}`);
  const pid = dump.split('.')[1];
  return { dump: path.join(dir, dump), map: `/tmp/perf-${pid}.map` };
}

function jitNames(mapFile) {
  if (!fs.existsSync(mapFile)) return { find: () => undefined };
  const ranges = fs
    .readFileSync(mapFile, 'utf8')
    .split('\n')
    .map((l) => /^([0-9a-f]+) ([0-9a-f]+) (.*)$/.exec(l))
    .filter(Boolean)
    .map((m) => [parseInt(m[1], 16), parseInt(m[1], 16) + parseInt(m[2], 16), m[3]])
    .sort((a, b) => a[0] - b[0]);
  return {
    find(addr) {
      let lo = 0;
      let hi = ranges.length - 1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (ranges[mid][0] <= addr) lo = mid + 1;
        else hi = mid - 1;
      }
      const r = ranges[hi];
      return r && addr < r[1] ? r[2] : undefined;
    },
  };
}

// Self cost per function; the frames around the event loop (all of it, inclusive) are left out.
const AROUND = /\(below main\)|libc-start|libc_start_call_main|0x000000000001ab70|SpinEventLoopInternal|NodeMainInstance::Run|node::Start\(|\?\?\?:main /;
function selfCost({ dump, map }) {
  const names = jitNames(map);
  const out = execFileSync('callgrind_annotate', ['--threshold=100', `--show=${EVENT}`, `--sort=${EVENT}`, dump], { encoding: 'utf8', maxBuffer: 256 << 20 });
  const cost = new Map();
  let listing = false;
  for (const line of out.split('\n')) {
    if (line.includes('file:function')) listing = true;
    const m = listing && /^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$/.exec(line);
    if (!m || AROUND.test(m[2])) continue;
    const jit = /^\?\?\?:0x([0-9a-f]+) \[\?\?\?\]/.exec(m[2]);
    const name = jit ? (names.find(parseInt(jit[1], 16)) ?? '(JIT code, unnamed)') : m[2].replace(/^\?\?\?:/, '').replace(/\s*\[[^\]]*\]$/, '');
    cost.set(name, (cost.get(name) ?? 0) + Number(m[1].replace(/,/g, '')) / requests);
  }
  return cost;
}

const a = selfCost(files(dirA));
const b = selfCost(files(dirB));
const sum = (c) => [...c.values()].reduce((x, y) => x + y, 0);
console.log(`${EVENT === 'Ir' ? 'instructions' : EVENT} per request: A ${Math.round(sum(a))}, B ${Math.round(sum(b))}, B − A ${Math.round(sum(b) - sum(a))}`);
console.log('   B − A        A        B  function (self cost)');
const names = [...new Set([...a.keys(), ...b.keys()])];
names.sort((x, y) => Math.abs((b.get(y) ?? 0) - (a.get(y) ?? 0)) - Math.abs((b.get(x) ?? 0) - (a.get(x) ?? 0)));
for (const n of names.slice(0, Number(rows))) {
  const x = a.get(n) ?? 0;
  const y = b.get(n) ?? 0;
  console.log(`${(y - x >= 0 ? '+' : '') + (y - x).toFixed(0)}`.padStart(8) + `${x.toFixed(0)}`.padStart(9) + `${y.toFixed(0)}`.padStart(9) + `  ${n.slice(0, 140)}`);
}
