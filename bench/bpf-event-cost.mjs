#!/usr/bin/env node
// Cost of the sched_switch program per event (bpf_stats run_time_ns / run_cnt), of the
// sched_stat_runtime repair program per run and runs per switch, and the throughput of a
// context-switch-heavy load with and without the tracker attached (both programs).
//
// bpf_stats times each run with sched_clock() and the trampoline costs something of its own, so
// an empty program on the same hook is measured in the same run: "own" is the tracker's figure
// less that floor, the work the tracker adds. On a KVM guest the floor is 30-50 ns and one
// bpf_ktime_get_ns() costs 30-60 ns more; on bare metal both are a fraction of that.
// Needs root (or CAP_BPF + CAP_PERFMON + write access to kernel.bpf_stats_enabled).
//
//   node bench/bpf-event-cost.mjs [--runs 5]     (or BENCH_REPS=5)
//
// Load: `perf bench sched pipe` (two processes ping-ponging over a pipe) when perf exists, else
// two node processes doing the same, run two ways:
//   one CPU   both pinned to CPU 0: every switch goes from one busy task to another, the common
//             case on a loaded server, where the program's cost is CPU taken from work
//   two CPUs  unpinned: each side sleeps while the other runs, so nearly every switch is to or
//             from the idle task (these always need the clock)
// Configurations, timed in alternation within each run:
//   off          no program attached
//   empty        a program that returns at once (the floor)
//   not tracked  tracker attached to this process only: the load's switches touch no thread slot
//   tracked      tracker following this process's children: the load's own threads are tracked,
//                so every switch also updates two thread slots
//   ... (compat) the same two with the build for kernels without task-local storage
//   ... + repair the same two with the sched_stat_runtime repair attached (repairSwitchIns
//                'always'); the others run with it off, which is what 'auto' costs on a kernel
//                that reports every switch
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
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
// --runs, else BENCH_REPS (as the other benchmarks take it), else 5.
const RUNS = opt('runs', Number(process.env.BENCH_REPS ?? 5));
const STATS = '/proc/sys/kernel/bpf_stats_enabled';

const ready = addon.bpfReadiness();
if (!ready.ready) {
  // Skipped, as request-instructions skips without valgrind: the rest of `npm run bench` stands.
  console.log(`bpf-event-cost: skipped, eBPF unavailable: ${ready.reason}`);
  process.exit(0);
}

const perf = ['/usr/bin/perf', '/usr/sbin/perf'].find((p) => fs.existsSync(p));
const taskset = ['/usr/bin/taskset', '/bin/taskset'].find((p) => fs.existsSync(p));

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

// Loop counts keep each run near a second: a pinned pipe ping-pong is ~20× faster.
const LOADS = [
  { name: 'one CPU', pinned: true, loops: 200000 },
  { name: 'two CPUs', pinned: false, loops: 20000 },
].filter((l) => !l.pinned || taskset);

// The load running, in a process group of its own (the load's two processes), killed whole if
// this process is signalled. Spawned asynchronously: under spawnSync the signal's handler waited
// for the whole run, every load of it, to end.
let running = null;
function runLoad(load) {
  const cmd = perf
    ? [perf, 'bench', 'sched', 'pipe', '-l', String(load.loops)]
    : [process.execPath, '-e', PINGPONG, String(Math.floor(load.loops / 5))];
  const argv = load.pinned ? [taskset, '-c', '0', ...cmd] : cmd;
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    running = child;
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += String(d)));
    child.stderr.on('data', (d) => (err += String(d)));
    child.once('error', reject);
    child.once('close', () => {
      running = null;
      const m = /(\d+)\s+ops\/sec/.exec(out);
      if (m) resolve(Number(m[1]));
      else reject(new Error(`load failed: ${err || out}`));
    });
  });
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const CONFIGS = [
  { name: 'off' },
  { name: 'empty', open: () => new addon.bench.EmptySwitchProgram() },
  ...[
    ['', 'task-storage', 'off'],
    [' (compat)', 'compat', 'off'],
    [' + repair', 'task-storage', 'always'],
  ].flatMap(([suffix, bpfProgram, repairSwitchIns]) => [
    {
      name: `not tracked${suffix}`,
      open: () => new addon.ThreadTracker({ backend: 'bpf', bpfProgram, repairSwitchIns }),
    },
    {
      name: `tracked${suffix}`,
      open: () => new addon.ThreadTracker({ backend: 'bpf', bpfProgram, repairSwitchIns, followChildren: true }),
      mustTrack: true,
    },
  ]),
];

const oldStats = fs.readFileSync(STATS, 'utf8').trim();
const restore = () => fs.writeFileSync(STATS, oldStats);
// The setting is the kernel's: restored on every signal that would end this process (a CI step's
// timeout sends SIGTERM, a closed terminal SIGHUP), not Ctrl-C's alone. The programs attached go
// with the process's descriptors.
for (const sig of ['SIGTERM', 'SIGHUP', 'SIGINT']) {
  process.on(sig, () => {
    // The group may be gone already: its 'exit' comes before the 'close' that clears `running`,
    // and an ESRCH thrown here would skip the restore.
    try {
      if (running) process.kill(-running.pid, 'SIGKILL');
    } catch {}
    restore();
    process.exit(128 + os.constants.signals[sig]);
  });
}

// results[load][config] = { ops: [], ns: [], repairNs: [], repairPerSwitch: [] }
const results = LOADS.map(() =>
  Object.fromEntries(CONFIGS.map((c) => [c.name, { ops: [], ns: [], repairNs: [], repairPerSwitch: [] }])),
);
try {
  fs.writeFileSync(STATS, '1');
  for (let i = 0; i < RUNS; i++) {
    for (const [li, load] of LOADS.entries()) {
      for (const c of CONFIGS) {
        const prog = c.open?.();
        try {
          const a = prog?.stats();
          results[li][c.name].ops.push(await runLoad(load));
          if (!prog) continue;
          const b = prog.stats();
          const cnt = b.runCount - a.runCount;
          if (cnt > 0) results[li][c.name].ns.push((b.runTimeNs - a.runTimeNs) / cnt);
          const rcnt = (b.repairRunCount ?? 0) - (a.repairRunCount ?? 0);
          if (rcnt > 0 && cnt > 0) {
            results[li][c.name].repairNs.push((b.repairRunTimeNs - a.repairRunTimeNs) / rcnt);
            results[li][c.name].repairPerSwitch.push(rcnt / cnt);
          }
          if (c.mustTrack && i === 0 && li === 0) {
            const tracked = prog.snapshot().threads.filter((x) => x.tgid !== process.pid).length;
            if (tracked === 0) throw new Error(`${c.name}: followChildren tracked none of the load threads`);
          }
        } finally {
          prog?.close();
        }
      }
    }
  }
} finally {
  restore();
}

console.log(`\nsched_switch program cost — load: ${perf ? 'perf bench sched pipe' : 'node pipe ping-pong'}, ${RUNS} runs, medians`);
console.log(`kernel ${ready.kernel}, bpf_stats_enabled restored to ${oldStats}`);
for (const [li, load] of LOADS.entries()) {
  const r = results[li];
  const base = median(r.off.ops);
  const floor = median(r.empty.ns);
  console.log(`\n  ${load.name} (${load.loops} round trips per run; ${load.pinned ? 'busy→busy switches' : 'switches to and from idle'})`);
  console.log('  configuration           ns/event  own ns  repair ns/run  runs/switch  ops/sec  ratio to off');
  console.log('  ----------------------  --------  ------  -------------  -----------  -------  ------------');
  for (const c of CONFIGS) {
    const ops = median(r[c.name].ops);
    const ns = r[c.name].ns.length ? median(r[c.name].ns) : NaN;
    const own = c.name === 'off' || c.name === 'empty' ? '' : (ns - floor).toFixed(1);
    const rNs = r[c.name].repairNs.length ? median(r[c.name].repairNs).toFixed(1) : '';
    const rPer = r[c.name].repairPerSwitch.length ? median(r[c.name].repairPerSwitch).toFixed(2) : '';
    console.log(
      `  ${c.name.padEnd(22)}  ${(Number.isNaN(ns) ? '' : ns.toFixed(1)).padStart(8)}  ${own.padStart(6)}  ` +
        `${rNs.padStart(13)}  ${rPer.padStart(11)}  ${ops.toFixed(0).padStart(7)}  ${(ops / base).toFixed(3).padStart(12)}`,
    );
  }
}
