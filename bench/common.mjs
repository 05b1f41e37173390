// Shared by the bench/ scripts: loading the compiled package, medians, table printing, and an
// emulated Intel MSR device (sparse file per CPU, 8-byte values at MSR offsets).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

export const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
export const jouletrace = require(path.join(root, 'dist/cjs/index.js'));
export const nativeHandles = require(path.join(root, 'dist/cjs/native-handles.js'));
export const native = require(path.join(root, 'dist/cjs/native.js')).native();

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Child processes that end with this one however it ends: a benchmark that threw ('exit'), or a
// signal (SIGTERM from a CI step's timeout or `kill`, SIGHUP, Ctrl-C's SIGINT). Node's default
// action for those ends the process without its 'exit' listeners, which left servers running,
// some frozen (SIGSTOP) and some with the tracker's eBPF programs attached. SIGKILL reaches a
// stopped process too. After such a signal this process exits with 128 + its number, the status
// a shell shows for a process the signal ended.
const owned = new Set();
let ownedHooked = false;
export function endWithThisProcess(child) {
  if (!ownedHooked) {
    ownedHooked = true;
    const killAll = () => {
      for (const c of owned) c.kill('SIGKILL');
    };
    process.on('exit', killAll);
    for (const sig of ['SIGTERM', 'SIGHUP', 'SIGINT']) {
      process.on(sig, () => {
        killAll();
        process.exit(128 + os.constants.signals[sig]);
      });
    }
  }
  owned.add(child);
  child.once('exit', () => owned.delete(child));
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function fmt(x, digits = 2) {
  if (typeof x !== 'number') return String(x);
  if (Math.abs(x) >= 1e6) return x.toExponential(2);
  return x.toFixed(digits);
}

export function table(title, header, rows) {
  const all = [header, ...rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : String(c))))];
  const widths = header.map((_, i) => Math.max(...all.map((r) => r[i].length)));
  console.log(`\n${title}`);
  for (const [k, r] of all.entries()) {
    console.log('  ' + r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  '));
    if (k === 0) console.log('  ' + widths.map((w) => '-'.repeat(w)).join('  '));
  }
}

/** Intel layout, one package, ESU 14; counters advance only if the caller writes them. */
export function emulatedIntelMsr(cpus = os.cpus().length) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-bench-msr-'));
  const sys = path.join(dir, 'sys');
  const write = (cpu, msr, value) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(value));
    const fd = fs.openSync(path.join(dir, `cpu${cpu}`, 'msr'), 'r+');
    fs.writeSync(fd, b, 0, 8, msr);
    fs.closeSync(fd);
  };
  for (let c = 0; c < cpus; c++) {
    fs.mkdirSync(path.join(dir, `cpu${c}`));
    fs.writeFileSync(path.join(dir, `cpu${c}`, 'msr'), '');
    fs.mkdirSync(path.join(sys, `cpu${c}`, 'topology'), { recursive: true });
    fs.writeFileSync(path.join(sys, `cpu${c}`, 'topology', 'physical_package_id'), '0\n');
    fs.writeFileSync(path.join(sys, `cpu${c}`, 'topology', 'core_id'), `${c}\n`);
  }
  fs.writeFileSync(path.join(sys, 'online'), `0-${cpus - 1}\n`);
  write(0, 0x606, 0xa0e03);
  write(0, 0x611, 123456);
  write(0, 0x639, 654321);
  write(0, 0x619, 1111);
  return {
    options: {
      source: 'msr',
      msrPath: path.join(dir, 'cpu%d', 'msr'),
      sysfsCpuRoot: sys,
      // The file's counters move only when written: no wait for them to advance at open.
      liveCheckMs: 0,
      cpuIdentity: { vendor: 'intel', family: 6, model: 0x9e },
    },
    write,
    close: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

/**
 * Cumulative on-CPU ns of one thread of this process, from its schedstat: exact for a thread off
 * the CPU; for one running now, as of its last scheduler tick (about 4 ms steps here).
 */
export function threadCpuNs(tid, pid = process.pid) {
  return Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
}

/**
 * Cumulative on-CPU ns of every thread of process pid (schedstat, where utime ticks at 10 ms):
 * exact when none is running, as in a process stopped first (bench/http.mjs's frozenCpuNs).
 */
export function processCpuNs(pid) {
  let ns = 0;
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += threadCpuNs(tid, pid);
    } catch {
      /* a thread that exited meanwhile */
    }
  }
  return ns;
}
