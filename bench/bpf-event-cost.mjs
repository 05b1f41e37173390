#!/usr/bin/env node
// Cost of the sched_switch program per event (bpf_stats run_time_ns / run_cnt) and the
// throughput of a context-switch-heavy load with and without the tracker attached.
// bpf_stats times each run with sched_clock(), so the figure includes that clock's own cost: on
// a KVM guest an empty tp_btf program already reads ~80 ns and bpf_ktime_get_ns() ~55 ns more.
// Throughput on a 2-CPU machine varies run to run with where the scheduler puts the two
// processes (same CPU: no IPI); compare medians over several alternating runs.
// Needs root (or CAP_BPF + CAP_PERFMON + write access to kernel.bpf_stats_enabled).
//
//   node bench/bpf-event-cost.mjs [--runs 5] [--loops 100000]
//
// Load: `perf bench sched pipe` (two processes ping-ponging over a pipe) when perf exists,
// else two node processes doing the same. Three configurations are timed in alternation:
//   off      no tracker loaded
//   filter   tracker attached to this process only: every switch runs the CPU accounting and
//            the tgid filter, none touches a thread slot
//   tracked  tracker following this process's children: the load's own threads are tracked,
//            so every switch also updates two thread slots
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const addon = require(path.join(root, 'build', 'Release', 'jouletrace.node'));

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const RUNS = opt('runs', 5);
const LOOPS = opt('loops', 100000);
const STATS = '/proc/sys/kernel/bpf_stats_enabled';

const ready = addon.bpfReadiness();
if (!ready.ready) {
  console.error(`bpf-event-cost: eBPF unavailable: ${ready.reason}`);
  process.exit(1);
}

const perf = ['/usr/bin/perf', '/usr/sbin/perf'].find((p) => fs.existsSync(p));

const PINGPONG = `
const { spawn } = require('node:child_process');
const n = Number(process.argv[1]);
const echo = spawn(process.execPath, ['-e', "process.stdin.on('data', (b) => process.stdout.write(b))"]);
let left = n;
const t0 = process.hrtime.bigint();
echo.stdout.on('data', () => {
  if (--left === 0) {
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    console.log((n / s).toFixed(0) + ' ops/sec');
    echo.kill();
  } else echo.stdin.write('x');
});
echo.stdin.write('x');
`;

function runLoad() {
  const r = perf
    ? spawnSync(perf, ['bench', 'sched', 'pipe', '-l', String(LOOPS)], { encoding: 'utf8' })
    : spawnSync(process.execPath, ['-e', PINGPONG, String(Math.floor(LOOPS / 5))], { encoding: 'utf8' });
  const m = /(\d+)\s+ops\/sec/.exec(r.stdout ?? '');
  if (!m) throw new Error(`load failed: ${r.stderr || r.stdout}`);
  return Number(m[1]);
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const oldStats = fs.readFileSync(STATS, 'utf8').trim();
const restore = () => fs.writeFileSync(STATS, oldStats);
process.on('SIGINT', () => {
  restore();
  process.exit(130);
});

const results = { off: [], filter: [], tracked: [] };
const cost = { filter: [], tracked: [] };
try {
  fs.writeFileSync(STATS, '1');
  for (let i = 0; i < RUNS; i++) {
    results.off.push(runLoad());
    for (const mode of ['filter', 'tracked']) {
      const t = new addon.ThreadTracker({ backend: 'bpf', followChildren: mode === 'tracked' });
      try {
        const a = t.stats();
        results[mode].push(runLoad());
        const b = t.stats();
        const cnt = b.runCount - a.runCount;
        if (cnt > 0) cost[mode].push((b.runTimeNs - a.runTimeNs) / cnt);
        if (mode === 'tracked' && i === 0) {
          const s = t.snapshot();
          const tracked = s.threads.filter((x) => x.tgid !== process.pid).length;
          if (tracked === 0) throw new Error('followChildren tracked none of the load threads');
        }
      } finally {
        t.close();
      }
    }
  }
} finally {
  restore();
}

const base = median(results.off);
console.log(`load: ${perf ? `perf bench sched pipe -l ${LOOPS}` : 'node pipe ping-pong'}, ${RUNS} runs, medians`);
console.log(`kernel ${ready.kernel}, bpf_stats_enabled restored to ${oldStats}`);
console.log(`no tracker:             ${base.toFixed(0)} ops/sec`);
for (const mode of ['filter', 'tracked']) {
  const ops = median(results[mode]);
  console.log(
    `${mode === 'filter' ? 'attached, not tracked: ' : 'attached, tracked:     '}` +
      ` ${ops.toFixed(0)} ops/sec (ratio ${(ops / base).toFixed(3)}), ` +
      `${median(cost[mode]).toFixed(1)} ns per sched_switch event ` +
      `(runs: ${cost[mode].map((c) => c.toFixed(0)).join(', ')})`,
  );
}
