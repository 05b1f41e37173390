import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { JouletraceError } from '../src/errors';
import { nativeHandleOf } from '../src/native-handles';
import { openThreadTracker, type ThreadTracker } from '../src/threads';
import { sleep } from './fixtures/spinner';
import { runNonLeaderExec } from './fixtures/exec-thread';
import { expectMonotonic, expectPairAsKernel, find, spinPair } from './fixtures/thread-checks';
import { itGated, toolsRequired } from './fixtures/gated';
import { hiddenProcSkip, openTrackerHidden } from './fixtures/hidden-proc';

describe('procfs thread tracker on this machine', () => {
  let tracker: ThreadTracker | undefined;
  afterEach(() => {
    tracker?.close();
    tracker = undefined;
  });

  it('splits two concurrent workers 3:1 and stays within wall time', async () => {
    tracker = openThreadTracker({ backend: 'procfs' });
    const r = await spinPair(tracker);
    const wallNs = Number(r.after.timeNs - r.before.timeNs);
    // Same 3:1 work and check as the bpf test.
    expectPairAsKernel(r);
    expect(r.longNs).toBeLessThanOrEqual(wallNs);
    for (let i = 1; i < r.snaps.length; i++) expectMonotonic(r.snaps[i - 1], r.snaps[i]);
    for (const [tid, comm] of r.comms) expect(find(r.after, tid)?.name).toBe(comm);
    expect(r.after.cpus).toHaveLength(os.cpus().length);
    const busy = r.after.cpus.reduce((s, c) => s + c.busyNs, 0) - r.before.cpus.reduce((s, c) => s + c.busyNs, 0);
    // /proc/stat counts in USER_HZ ticks: allow one tick per CPU at each end.
    expect(busy + 2 * os.cpus().length * 10e6).toBeGreaterThanOrEqual(r.longNs + r.shortNs);
    expect(tracker.stats()).toMatchObject({ backend: 'procfs', attached: true });
  });

  // Out of descriptors, the task directory cannot be listed: that read as every thread exiting,
  // and each came back as new with its whole history (563 ms for 200 ms of wall time).
  it('keeps its threads while the process is out of file descriptors', () => {
    const script = `
      const fs = require('node:fs');
      const { openThreadTracker } = require(${JSON.stringify(path.join(__dirname, '..', 'dist/cjs/index.js'))});
      const spin = (ms) => { const end = performance.now() + ms; while (performance.now() < end); };
      const ran = () => Number(fs.readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]);
      const spinCpu = (ms) => { const until = ran() + ms * 1e6; while (ran() < until) spin(0.5); };
      spinCpu(300); // run time from before the tracker, which it must not count
      const t = openThreadTracker({ backend: 'procfs' });
      const t0 = process.hrtime.bigint();
      const first = t.snapshot().threads.find((r) => r.tid === process.pid);
      const fds = [];
      try { for (;;) fds.push(fs.openSync('/dev/null', 'r')); } catch (e) { if (e.code !== 'EMFILE') throw e; }
      let exited = 0;
      for (let i = 0; i < 3; i++) { spin(12); exited += t.snapshot().threads.filter((r) => r.exited).length; }
      for (const fd of fds) fs.closeSync(fd);
      spinCpu(30); // CPU time, which a spin of wall time may not get on a loaded machine
      const last = t.snapshot().threads.find((r) => r.tid === process.pid);
      console.log(JSON.stringify({ fds: fds.length, exited, first, last, wallNs: Number(process.hrtime.bigint() - t0) }));
    `;
    const r = spawnSync('sh', ['-c', 'ulimit -n 256 && exec "$0" -e "$1"', process.execPath, script], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as { fds: number; exited: number; first: { generation: number }; last: { generation: number; onCpuNs: number; exited: boolean }; wallNs: number };
    expect(out.fds).toBeGreaterThan(100);
    expect(out.exited).toBe(0);
    expect(out.last.generation).toBe(out.first.generation);
    expect(out.last.exited).toBe(false);
    expect(out.last.onCpuNs).toBeGreaterThan(20e6);
    // Within the wall time, give or take the scheduler's clock against CLOCK_MONOTONIC (a few
    // percent on a VM) and the stretch between the first read and t0; 300 ms more when it
    // counted the time before the tracker.
    expect(out.last.onCpuNs).toBeLessThanOrEqual(out.wallNs * 1.05 + 2e6);
  });

  // Opened with two descriptors to spare, the tracker cannot open the threads' files nor read
  // them by path: counted from the first good read, not from their birth (450 ms read for 50).
  // The spins are of the thread's own CPU time (schedstat, read with descriptors to spare): a
  // spin of wall time got under 20 ms of CPU on a loaded machine.
  it('counts a thread from its first good read when the first one failed for want of descriptors', () => {
    const script = `
      const fs = require('node:fs');
      const { openThreadTracker } = require(${JSON.stringify(path.join(__dirname, '..', 'dist/cjs/index.js'))});
      const spin = (ms) => { const end = performance.now() + ms; while (performance.now() < end); };
      const ran = () => Number(fs.readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]);
      const spinCpu = (ms) => { const until = ran() + ms * 1e6; while (ran() < until) spin(0.5); };
      spinCpu(400); // before the tracker: not to be counted
      const fds = [];
      try { for (;;) fds.push(fs.openSync('/dev/null', 'r')); } catch (e) { if (e.code !== 'EMFILE') throw e; }
      fs.closeSync(fds.pop()); fs.closeSync(fds.pop()); // /proc/stat's and the task listing's
      const t = openThreadTracker({ backend: 'procfs' });
      for (const fd of fds) fs.closeSync(fd);
      const t0 = process.hrtime.bigint();
      t.snapshot(); // the first good read (by path)
      spin(12); // past the 10 ms between rescans
      t.snapshot(); // the descriptors open at this rescan: the row goes on in schedstat's figure
      spinCpu(50);
      const me = t.snapshot().threads.find((r) => r.tid === process.pid);
      console.log(JSON.stringify({ onCpuNs: me.onCpuNs, wallNs: Number(process.hrtime.bigint() - t0) }));
    `;
    const r = spawnSync('sh', ['-c', 'ulimit -n 256 && exec "$0" -e "$1"', process.execPath, script], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as { onCpuNs: number; wallNs: number };
    // At least the 50 ms spun, less schedstat's lag of a tick at each end (10 ms at HZ=100);
    // within the wall time since the first good read, plus that lag.
    expect(out.onCpuNs).toBeGreaterThan(20e6);
    expect(out.onCpuNs).toBeLessThanOrEqual(out.wallNs + 10e6);
  });

  // The exec'ing thread takes the leader's tid and the leader's descriptors read its whole run
  // time: the leader's row counted it again (0.9 s for 0.6 s run), or froze where the old leader
  // had run longer.
  it('counts a thread that execs from outside the leader once: its row ends, the leader\'s counts on', async () => {
    const { pid, threads } = await runNonLeaderExec({ source: 'model', threads: 'procfs' });
    const rows = threads.filter((t) => t.onCpuNs > 50e6);
    expect(rows.map((t) => t.exited).sort()).toEqual([false, true]);
    expect(rows.find((t) => !t.exited)!.tid).toBe(pid);
    const total = threads.reduce((n, t) => n + t.onCpuNs, 0);
    expect(total).toBeGreaterThan(0.5e9);
    expect(total).toBeLessThan(0.8e9);
  });
});

describe('procfs thread tracker under a /proc mounted with hidepid', () => {
  // This process runs as root; the child, as nobody, is not shown it.
  itGated("refuses another user's hidden process with EPERM and the remedies, not as a missing process", hiddenProcSkip, toolsRequired(), 'JOULETRACE_REQUIRE_TOOLS=1', () => {
    const remedies = "procfs hides other users' processes here (mounted with hidepid): run as the process's user, as root or with CAP_SYS_PTRACE, or remount /proc with hidepid=0 or gid= a group of yours";
    expect(openTrackerHidden(1, [], 'procfs', process.pid)).toEqual({
      code: 'EPERM',
      message: `jouletrace: cannot read /proc/${process.pid}/task (Operation not permitted): ${remedies}`,
    });
    // hidepid=2 hides the directory itself: it read as "no such process".
    expect(openTrackerHidden(2, [], 'procfs', process.pid)).toEqual({
      code: 'EPERM',
      message: `jouletrace: cannot read /proc/${process.pid}/task (No such file or directory, though process ${process.pid} exists): ${remedies}`,
    });
    // procRoot '/proc/' is /proc: the same advice, where it read as "no such process".
    expect(openTrackerHidden(2, [], 'procfs', process.pid, { procRoot: '/proc/' })).toEqual({
      code: 'EPERM',
      message: `jouletrace: cannot read /proc/${process.pid}/task (No such file or directory, though process ${process.pid} exists): ${remedies}`,
    });
    expect(openTrackerHidden(2, ['sys_ptrace'], 'procfs', process.pid)).toBe('opened');
  });
});

// `unshare --pid --fork` without --mount-proc: a pid namespace of its own that sees the host's
// /proc, where getpid() is 1 and /proc/1 is the host's init (/proc/2, kthreadd). Needs root and
// util-linux's unshare.
const foreignProcSkip: string | undefined = (() => {
  if (process.getuid?.() !== 0) return 'unshare --pid needs root';
  const r = spawnSync('unshare', ['--pid', '--fork', 'true'], { encoding: 'utf8' });
  if (r.error) return `unshare could not run (${r.error.message}): util-linux is not installed`;
  if (r.status !== 0) return `unshare --pid --fork failed: ${r.stderr.trim()}`;
  return undefined;
})();

/** Runs a script under `unshare --pid --fork` (extra: more unshare options); its JSON output. */
function inPidNamespace(script: string, extra: string[] = []): Record<string, any> {
  const r = spawnSync('unshare', ['--pid', '--fork', ...extra, process.execPath, '-e', script], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

describe('procfs thread tracker in a pid namespace that sees the host\'s /proc', () => {
  const dist = JSON.stringify(path.join(__dirname, '..', 'dist/cjs/index.js'));

  // The tracker read /proc/<getpid()>: kthreadd's threads (or init's) for this process's, 0 ns
  // and 0 J, silently; and spans, which go by gettid(), found no row of theirs.
  itGated("tracks this process's own threads, under the numbers the process knows them by", foreignProcSkip, toolsRequired(), 'JOULETRACE_REQUIRE_TOOLS=1', () => {
    const out = inPidNamespace(`
      const fs = require('node:fs');
      const j = require(${dist});
      const ran = () => Number(fs.readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]);
      const spinCpu = (ms) => { const until = ran() + ms * 1e6; while (ran() < until); };
      // The host's numbering of this process's threads, and their names, from /proc/self.
      const names = () => fs.readdirSync('/proc/self/task').map((t) => fs.readFileSync('/proc/self/task/' + t + '/comm', 'utf8').trim()).sort();
      const t = j.openThreadTracker({ backend: 'procfs' });
      spinCpu(100);
      const rows = t.snapshot().threads;
      const hostNames = names();
      t.close();
      const s = new j.Sampler({ source: 'model' });
      s.start();
      const h = s.begin('spin');
      spinCpu(200);
      s.end(h);
      setTimeout(async () => {
        const span = await s.settle(h);
        const backend = s.stats().threads.backend;
        s.close();
        process.stdout.write(JSON.stringify({ pid: process.pid, selfLink: fs.readlinkSync('/proc/self'), rows, hostNames, span, backend }));
      }, 50);`);
    // Under unshare --fork the script is its namespace's init, and /proc the host's.
    expect(out.pid).toBe(1);
    expect(Number(out.selfLink)).not.toBe(1);
    const main = out.rows.find((r: { tid: number }) => r.tid === out.pid);
    expect(main, JSON.stringify(out.rows)).toBeDefined();
    expect(main.name).toBe('node');
    expect(main.onCpuNs).toBeGreaterThanOrEqual(100e6); // counted from the open, which the spin followed
    for (const r of out.rows) {
      expect(r.tgid).toBe(out.pid);
      expect(r.tid).toBeGreaterThan(0);
      expect(r.tid).toBeLessThan(1000); // this namespace's numbers, not the host's
    }
    expect(out.rows.map((r: { name: string }) => r.name).sort()).toEqual(out.hostNames);
    // A Sampler falls back to procfs here (the eBPF program needs the host's pid namespace), and
    // its span finds its thread's row.
    expect(out.backend).toBe('procfs');
    expect(out.span.tid).toBe(out.pid);
    expect(out.span.onCpuNs).toBeGreaterThan(100e6);
    expect(out.span.joules).toBeGreaterThan(0);
  });

  itGated("refuses a pid, which /proc does not number as this namespace does, saying how to mount a /proc of its own", foreignProcSkip, toolsRequired(), 'JOULETRACE_REQUIRE_TOOLS=1', () => {
    const script = `
      const { spawn } = require('node:child_process');
      const j = require(${dist});
      const child = spawn('sleep', ['30']);
      const attempt = (f) => { try { f(); return 'opened'; } catch (e) { return { code: e.code, message: e.message }; } };
      const out = {
        pid: process.pid,
        child: child.pid,
        procfs: attempt(() => j.openThreadTracker({ backend: 'procfs', pid: child.pid }).close()),
        sampler: attempt(() => new j.Sampler({ source: 'model', threads: 'procfs', pid: child.pid }).close()),
        // This process by its own pid is this process, which /proc/self names.
        self: attempt(() => {
          const t = j.openThreadTracker({ backend: 'procfs', pid: process.pid });
          const rows = t.snapshot().threads;
          t.close();
          if (!rows.some((r) => r.tid === process.pid && r.tgid === process.pid)) throw new Error(JSON.stringify(rows));
        }),
      };
      child.kill();
      process.stdout.write(JSON.stringify(out));`;
    const out = inPidNamespace(script);
    const remedy = 'Mount a proc of this pid namespace\'s own on /proc: `unshare --pid --fork --mount-proc`';
    expect(out.procfs.code).toBe('ERR_JOULETRACE_PROC_NAMESPACE');
    expect(out.procfs.message).toMatch(new RegExp(`^jouletrace: the procfs thread tracker cannot follow pid ${out.child}: /proc here is another pid namespace's than this process's \\(it numbers this process \\d+, which is 1 in its own: the host's /proc`));
    expect(out.procfs.message).toContain(remedy);
    expect(out.sampler).toEqual({ code: 'ERR_JOULETRACE_PROC_NAMESPACE', message: `threads: 'procfs': ${out.procfs.message}` });
    expect(out.self).toBe('opened');
    // With a /proc of its own, the same pid is followed.
    const mounted = inPidNamespace(script, ['--mount-proc']);
    expect(mounted.procfs).toBe('opened');
    expect(mounted.self).toBe('opened');
  });

  itGated('refuses this process too where /proc is a namespace\'s that has no number for it', foreignProcSkip, toolsRequired(), 'JOULETRACE_REQUIRE_TOOLS=1', () => {
    // A child pid namespace's proc, mounted over /proc in a mount namespace of the test's own:
    // getpid()'s number there is another process, or none.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-childproc-'));
    try {
      const script = `const j = require(${dist});
        const out = {};
        try { j.openThreadTracker({ backend: 'procfs' }).close(); out.procfs = 'opened'; } catch (e) { out.procfs = { code: e.code, message: e.message }; }
        const r = j.bpfReadiness();
        out.bpfReady = r.ready;
        out.bpfReason = r.reason;
        process.stdout.write(JSON.stringify(out));`;
      const sh = `unshare --pid --fork --kill-child sh -c 'mount -t proc proc "$1" && sleep 30' sh "$1" </dev/null >/dev/null 2>&1 & child=$!
        for i in $(seq 100); do [ -e "$1/1" ] && break; sleep 0.05; done
        mount --bind "$1" /proc && "$2" -e "$3"; rc=$?; kill -KILL $child; exit $rc`;
      const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', sh, 'sh', dir, process.execPath, script], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout);
      expect(out.procfs.code).toBe('ERR_JOULETRACE_PROC_NAMESPACE');
      expect(out.procfs.message).toBe(
        "jouletrace: the procfs thread tracker cannot follow this process: /proc here is another pid namespace's than this process's " +
          "(it has no number for this process: a proc of a pid namespace below this one's, or beside it, mounted there). Mount a proc " +
          "of this pid namespace's own on /proc: `unshare --pid --fork --mount-proc`, `mount -t proc proc /proc` in a mount namespace " +
          "of its own, or the container runtime's own /proc.",
      );
      expect(out.bpfReady).toBe(false);
      expect(out.bpfReason).toContain('the eBPF tracker lists the tracked process\'s threads in /proc, but /proc here is another pid namespace\'s');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('procfs thread tracker on an emulated /proc', () => {
  let root: string;
  let tracker: ThreadTracker | undefined;
  const PID = 4242;
  const hz = 100; // USER_HZ is 100 on every Linux architecture Node supports

  // startTicks: stat's start time (field 22), clock ticks since boot; 0 reads as unknown.
  function writeThread(tid: number, schedNs: number, cpu: number, comm: string, startTicks = 0) {
    const dir = path.join(root, String(PID), 'task', String(tid));
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'schedstat'), `${schedNs} 1234 56\n`);
    // Fields 3..52 after "(comm)"; field 39 is the CPU last run on. A name may hold spaces and
    // parentheses (the helper's does): the name ends, and fields resume, at the last ')'.
    const fields = Array.from({ length: 50 }, (_, i) => (i === 0 ? 'S' : i === 36 ? String(cpu) : i === 19 ? String(startTicks) : '0'));
    fs.writeFileSync(path.join(dir, 'stat'), `${tid} (${comm}) ${fields.join(' ')}\n`);
    fs.writeFileSync(path.join(dir, 'comm'), `${comm}\n`);
  }

  // The leader's stat with utime (field 14) and stime (15) in clock ticks, last run on CPU 1.
  function writeTicks(utime: number, stime = 0) {
    const fields = Array.from({ length: 50 }, (_, i) => (i === 0 ? 'R' : i === 11 ? String(utime) : i === 12 ? String(stime) : i === 36 ? '1' : '0'));
    fs.writeFileSync(path.join(root, String(PID), 'task', String(PID), 'stat'), `${PID} (main) ${fields.join(' ')}\n`);
  }

  function writeStat(lines: number[][]) {
    const cpuLines = lines.map((f, i) => `cpu${i} ${f.join(' ')} 0 0`);
    fs.writeFileSync(path.join(root, 'stat'), `cpu 0 0 0 0 0 0 0 0 0 0\n${cpuLines.join('\n')}\nintr 0\n`);
  }

  afterEach(() => {
    tracker?.close();
    tracker = undefined;
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('refuses a FIFO at options.procRoot/stat, naming the option, rather than waiting on it', () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-proc-'));
    writeThread(PID, 5_000_000, 1, 'main');
    expect(spawnSync('mkfifo', [path.join(root, 'stat')]).status).toBe(0);
    // In a child, bounded: before, open() waited for a writer that never came.
    const script = `
      const { openThreadTracker } = require(${JSON.stringify(path.resolve(__dirname, '../dist/cjs/index.js'))});
      try { openThreadTracker({ backend: 'procfs', pid: ${PID}, procRoot: ${JSON.stringify(root)} }).close(); process.stdout.write('null'); }
      catch (e) { process.stdout.write(JSON.stringify({ code: e.code, message: e.message })); }`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 10_000 });
    expect(r.error, 'openThreadTracker had not returned after 10 s').toBeUndefined();
    const e = JSON.parse(r.stdout) as { code: string; message: string } | null;
    expect(e?.code).toBe('EINVAL');
    expect(e?.message).toContain(`${path.join(root, 'stat')} (a FIFO, not a file: check options.procRoot)`);
  });

  it('parses schedstat, stat and /proc/stat, and reports an exited thread once', async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-proc-'));
    writeThread(PID, 5_000_000, 1, 'main');
    writeThread(PID + 1, 7_000_000, 0, 'helper (1) x)');
    //          user nice system idle iowait irq softirq steal
    writeStat([
      [10, 1, 2, 100, 3, 1, 1, 0],
      [20, 0, 5, 50, 0, 0, 0, 2],
    ]);
    tracker = openThreadTracker({ backend: 'procfs', pid: PID, procRoot: root, cpuPackage: [0, 1] });

    const s0 = tracker.snapshot();
    const tick = 1e9 / hz;
    expect(s0.cpus).toEqual([
      { busyNs: 15 * tick, idleNs: 103 * tick },
      { busyNs: 25 * tick, idleNs: 52 * tick }, // steal is idle: the kernel keeps it out of thread times
    ]);
    // Threads present at open are counted from open, not from their birth.
    expect(find(s0, PID)).toMatchObject({ tgid: PID, onCpuNs: 0, name: 'main', exited: false });
    expect(find(s0, PID + 1)).toMatchObject({ onCpuNs: 0, name: 'helper (1) x)', exited: false });

    writeThread(PID, 9_000_000, 1, 'main');
    writeThread(PID + 1, 8_000_000, 0, 'helper (1) x)');
    await sleep(5); // the leader's 4 ms must fit in the time that passed (see the exec test)
    const s1 = tracker.snapshot();
    expect(find(s1, PID)).toMatchObject({ onCpuNs: 4_000_000 });
    expect(find(s1, PID)!.pkgNs.slice(0, 2)).toEqual([0, 4_000_000]);
    expect(find(s1, PID + 1)!.pkgNs.slice(0, 2)).toEqual([1_000_000, 0]);

    // /proc/stat going backwards (iowait does on some kernels) never shows as a decrease.
    writeStat([
      [10, 1, 2, 100, 1, 1, 1, 0],
      [21, 0, 5, 50, 0, 0, 0, 2],
    ]);
    const s2 = tracker.snapshot();
    expect(s2.cpus[0].idleNs).toBe(103 * tick);
    expect(s2.cpus[1].busyNs).toBe(26 * tick);
    expectMonotonic(s1, s2);

    // The helper exits after running 2 ms more; a new thread appears.
    writeThread(PID + 1, 10_000_000, 0, 'helper (1) x)');
    tracker.snapshot();
    fs.rmSync(path.join(root, String(PID), 'task', String(PID + 1)), { recursive: true });
    writeThread(PID + 2, 3_000_000, 1, 'late');
    await sleep(60); // thread discovery rereads the task directory once 9 ms have passed since the last
    const s3 = tracker.snapshot();
    const gone = find(s3, PID + 1)!;
    expect(gone).toMatchObject({ exited: true, onCpuNs: 3_000_000 });
    // Born after open: all of its time counts.
    expect(find(s3, PID + 2)).toMatchObject({ onCpuNs: 3_000_000, name: 'late', exited: false });
    const s4 = tracker.snapshot();
    expect(find(s4, PID + 1)).toBeUndefined();
    expect(find(s4, PID)).toMatchObject({ exited: false });
    expect(tracker.stats()).toMatchObject({ backend: 'procfs', slotsUsed: 2, events: 6 });
  });

  // Read from comm by path at each rescan, names cost three system calls a thread; a rescan is
  // now also spaced out where it costs much (thousands of threads).
  it("names a thread from its stat line at every read: a rename shows at the next snapshot, not the next rescan", () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-proc-'));
    writeThread(PID, 1_000_000, 0, 'main');
    writeStat([[1, 0, 1, 9, 0, 0, 0, 0]]);
    tracker = openThreadTracker({ backend: 'procfs', pid: PID, procRoot: root });
    writeThread(PID, 2_000_000, 0, 'pool (2) a)b');
    expect(find(tracker.snapshot(), PID)?.name).toBe('pool (2) a)b');
  });

  it('reads every CPU of a large machine from /proc/stat (384 CPUs, 40 KiB of cpu lines)', () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-proc-'));
    writeThread(PID, 1_000_000, 0, 'main');
    // Counters as wide as a long-running host's, so the lines are long.
    const big = 123_456_789_012;
    writeStat(Array.from({ length: 384 }, (_, i) => [big + i, 0, big, big * 9, 0, 0, 0, 0]));
    tracker = openThreadTracker({ backend: 'procfs', pid: PID, procRoot: root });
    const cpus = tracker.snapshot().cpus;
    expect(fs.statSync(path.join(root, 'stat')).size).toBeGreaterThan(16384);
    expect(cpus).toHaveLength(384);
    expect(cpus[383].busyNs).toBe((2 * big + 383) * (1e9 / hz));
    expect(cpus[383].idleNs).toBe(big * 9 * (1e9 / hz));
  });

  // An emulated tree is the caller's to write: a CPU number past any kernel's (NR_CPUS is at
  // most 8192) had the tracker read a sysfs file per CPU up to it (tens of millions: minutes).
  it('ignores CPU numbers no kernel has in an emulated /proc/stat', () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-proc-'));
    writeThread(PID, 1_000_000, 0, 'main');
    writeStat([[1, 0, 1, 9, 0, 0, 0, 0]]);
    fs.appendFileSync(path.join(root, 'stat'), 'cpu20000000 1 0 1 9 0 0 0 0 0 0\ncpu99999999999999999999 1 0 1 9 0 0 0 0 0 0\n');
    tracker = openThreadTracker({ backend: 'procfs', pid: PID, procRoot: root, cpuPackage: [0] });
    expect(tracker.snapshot().cpus).toHaveLength(1);
  });

  it('fails with a coded error for a process that does not exist', () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-proc-'));
    expect(() => openThreadTracker({ backend: 'procfs', pid: PID, procRoot: root })).toThrow(
      expect.objectContaining({ code: 'ESRCH' }),
    );
  });

  // The addon's own object was handed out: its refusals were plain Errors, where every other
  // entry point's are JouletraceErrors.
  it('refuses snapshot() and stats() once closed with a JouletraceError that says what to do', () => {
    const t = openThreadTracker({ backend: 'procfs' });
    t.close();
    t.close(); // safe twice
    for (const call of [() => t.snapshot(), () => t.stats()]) {
      expect(call).toThrow(JouletraceError);
      expect(call).toThrow(
        expect.objectContaining({ code: 'ERR_JOULETRACE_CLOSED', message: 'ThreadTracker is closed: open another with openThreadTracker()' }),
      );
    }
  });

  // CLOCK_BOOTTIME in clock ticks, as stat's start times count: /proc/uptime reads it.
  const bootTicks = () => Math.floor(Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * hz);

  // Listing task/ skips live threads while others exit. Only the first listing counted threads
  // from their first read: one it skipped was counted from its birth when a later one found it
  // (2.5 s of CPU in a 200 ms run on 2 CPUs, all of it idle threads' history).
  it('counts a thread that started before the open from its first read, whichever listing finds it', async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-proc-'));
    writeThread(PID, 1_000_000, 0, 'main', 1);
    writeStat([[10, 0, 0, 100, 0, 0, 0, 0]]);
    tracker = openThreadTracker({ backend: 'procfs', pid: PID, procRoot: root, cpuPackage: [0] });
    const now = bootTicks();
    writeThread(PID + 1, 400_000_000, 0, 'old', now - 500); // 5 s old, missed by the first listing
    writeThread(PID + 2, 3_000_000, 0, 'new', now + 1); // born after the open
    await sleep(12);
    const s1 = tracker.snapshot();
    expect(find(s1, PID + 1)).toMatchObject({ onCpuNs: 0, exited: false });
    expect(find(s1, PID + 2)).toMatchObject({ onCpuNs: 3_000_000, exited: false });
    writeThread(PID + 1, 402_000_000, 0, 'old', now - 500);
    expect(find(tracker.snapshot(), PID + 1)).toMatchObject({ onCpuNs: 2_000_000 });
  });

  // A Sampler's tracker opens when the Sampler is made; each start() takes a reference snapshot
  // that the run counts from. A thread born before it was counted from its birth where no listing
  // had found it by then: at once, since the last listing (9 ms before, at most), or skipped.
  it('counts a thread born before a reference snapshot from there: listed by it, or, where skipped, from its first read', async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-proc-'));
    writeThread(PID, 1_000_000, 0, 'main', 1);
    writeStat([[10, 0, 0, 100, 0, 0, 0, 0]]);
    tracker = openThreadTracker({ backend: 'procfs', pid: PID, procRoot: root, cpuPackage: [0] });
    const born = bootTicks() + 1; // after the open
    await sleep(30); // three ticks: the reference comes after both threads' births
    const reference = () => nativeHandleOf<{ _referenceSnapshot(): ReturnType<ThreadTracker['snapshot']> }>(tracker!)._referenceSnapshot();
    tracker.snapshot();
    writeThread(PID + 1, 5_000_000, 0, 'listed', born);
    expect(find(reference(), PID + 1)).toMatchObject({ onCpuNs: 0, exited: false });
    writeThread(PID + 2, 50_000_000, 0, 'skipped', born); // a listing skipped it until now
    await sleep(12);
    const s1 = tracker.snapshot();
    expect(find(s1, PID + 2)).toMatchObject({ onCpuNs: 0, exited: false });
    writeThread(PID + 1, 6_000_000, 0, 'listed', born);
    writeThread(PID + 2, 51_000_000, 0, 'skipped', born);
    const s2 = tracker.snapshot();
    expect(find(s2, PID + 1)).toMatchObject({ onCpuNs: 1_000_000 });
    expect(find(s2, PID + 2)).toMatchObject({ onCpuNs: 1_000_000 });
  });

  it('counts utime + stime from stat where the kernel has no schedstat, rather than losing the thread', async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-proc-'));
    writeThread(PID, 0, 1, 'main');
    const dir = path.join(root, String(PID), 'task', String(PID));
    fs.rmSync(path.join(dir, 'schedstat')); // CONFIG_SCHED_INFO=n
    writeTicks(30, 10);
    writeStat([
      [10, 0, 0, 100, 0, 0, 0, 0],
      [10, 0, 0, 100, 0, 0, 0, 0],
    ]);
    tracker = openThreadTracker({ backend: 'procfs', pid: PID, procRoot: root, cpuPackage: [0, 1] });
    expect(tracker.snapshot().threads).toEqual([expect.objectContaining({ tid: PID, onCpuNs: 0, exited: false })]);
    writeTicks(31, 11); // 2 ticks more
    await sleep(25);
    const t = tracker.snapshot().threads[0];
    expect(t).toMatchObject({ tid: PID, onCpuNs: (2 * 1e9) / hz, exited: false });
    expect(t.pkgNs[1]).toBe((2 * 1e9) / hz);
  });

  // Older kernels without schedstats print "0 0 0" for every task: utime + stime count then,
  // also for a process with no tick yet at open (jouletrace run's stopped wrapper), which read
  // 0 for good when that was decided once, at open.
  it.each([
    ['a process that has run', 30, 32],
    ['a process with no tick yet', 0, 3],
  ])('counts utime + stime where schedstat reads 0 0 0: %s', async (_name, ticksAtOpen, ticksLater) => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-proc-'));
    writeThread(PID, 0, 1, 'main');
    writeTicks(ticksAtOpen);
    writeStat([[10, 0, 0, 100, 0, 0, 0, 0]]);
    tracker = openThreadTracker({ backend: 'procfs', pid: PID, procRoot: root, cpuPackage: [0] });
    tracker.snapshot();
    writeTicks(ticksLater);
    await sleep(35); // the ticks written must fit in the time passed (see the exec test)
    expect(tracker.snapshot().threads[0]).toMatchObject({ tid: PID, onCpuNs: ((ticksLater - ticksAtOpen) * 1e9) / hz });
  });

  it('counts a thread left out for want of a slot once, and from when a slot takes it', async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-proc-'));
    writeThread(PID, 1_000_000, 0, 'main');
    writeThread(PID + 1, 2_000_000, 0, 'a');
    writeStat([[10, 0, 0, 100, 0, 0, 0, 0]]);
    tracker = openThreadTracker({ backend: 'procfs', pid: PID, procRoot: root, maxThreads: 2, cpuPackage: [0] });
    writeThread(PID + 2, 500_000_000, 0, 'b'); // born now, to run 0.5 s while left out
    for (let i = 0; i < 4; i++) {
      tracker.snapshot();
      await sleep(12); // each snapshot 10 ms apart rereads the task directory
    }
    expect(tracker.snapshot().threads.map((t) => t.tid).sort()).toEqual([PID, PID + 1]);
    expect(tracker.stats().droppedThreads).toBe(1); // it was counted at every rescan
    // a exits: b takes its slot, counted from then (its 0.5 s went to "other" while left out).
    fs.rmSync(path.join(root, String(PID), 'task', String(PID + 1)), { recursive: true });
    await sleep(12);
    tracker.snapshot();
    await sleep(12);
    tracker.snapshot();
    writeThread(PID + 2, 503_000_000, 0, 'b');
    expect(find(tracker.snapshot(), PID + 2)).toMatchObject({ onCpuNs: 3_000_000, exited: false });
    expect(tracker.stats().droppedThreads).toBe(1);
  });

  it('keeps a thread left out for want of a slot when the task directory cannot be listed once', async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-proc-'));
    const task = path.join(root, String(PID), 'task');
    writeThread(PID, 1_000_000, 0, 'main');
    writeThread(PID + 1, 2_000_000, 0, 'a');
    writeStat([[10, 0, 0, 100, 0, 0, 0, 0]]);
    tracker = openThreadTracker({ backend: 'procfs', pid: PID, procRoot: root, maxThreads: 2, cpuPackage: [0] });
    writeThread(PID + 2, 500_000_000, 0, 'b'); // born now, to run 0.5 s while left out
    await sleep(12);
    tracker.snapshot();
    fs.rmSync(path.join(task, String(PID + 1)), { recursive: true }); // a exits: a slot frees
    await sleep(12);
    tracker.snapshot();
    // One scan that cannot list task/ (EMFILE in life; ENOTDIR here): b is not forgotten.
    fs.renameSync(task, `${task}.x`);
    fs.writeFileSync(task, '');
    await sleep(12);
    tracker.snapshot();
    fs.rmSync(task);
    fs.renameSync(`${task}.x`, task);
    await sleep(12);
    // Taken when listed again, counted from then: its 0.5 s went to "other" while it was left out.
    expect(find(tracker.snapshot(), PID + 2)).toMatchObject({ onCpuNs: 0, exited: false });
    expect(tracker.stats().droppedThreads).toBe(1);
  });

  it('counts on in the leader\'s row when another thread execs and takes its tid', async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-proc-'));
    writeThread(PID, 900_000_000, 0, 'main'); // the leader ran 0.9 s before the tracker
    writeThread(PID + 1, 100_000_000, 0, 'worker');
    writeStat([[10, 0, 0, 100, 0, 0, 0, 0]]);
    tracker = openThreadTracker({ backend: 'procfs', pid: PID, procRoot: root, cpuPackage: [0] });
    tracker.snapshot();
    await sleep(10);
    writeThread(PID, 905_000_000, 0, 'main');
    writeThread(PID + 1, 120_000_000, 0, 'worker');
    tracker.snapshot();
    // The worker execs: its directory goes, and the leader's tid reads its run time, all 0.12 s
    // of it and 1 ms more (the kernel gives it the leader's start time as well).
    fs.rmSync(path.join(root, String(PID), 'task', String(PID + 1)), { recursive: true });
    writeThread(PID, 121_000_000, 0, 'newprog');
    await sleep(12);
    const s = tracker.snapshot();
    expect(find(s, PID + 1)).toMatchObject({ exited: true, onCpuNs: 20_000_000 });
    expect(find(s, PID)).toMatchObject({ exited: false, onCpuNs: 5_000_000 }); // it went back: frozen until it passed 0.905 s
    await sleep(10);
    writeThread(PID, 124_000_000, 0, 'newprog');
    expect(find(tracker.snapshot(), PID)).toMatchObject({ onCpuNs: 8_000_000 });
    // The other way round, a leader's tid that jumps further than the time passed: counted on
    // from there, not the whole jump (the exec'ing thread's history is in its own row).
    writeThread(PID, 2_124_000_000, 0, 'newprog');
    expect(find(tracker.snapshot(), PID)).toMatchObject({ onCpuNs: 8_000_000 });
  });

  it('refuses a thread id where a process id is due, naming the process', () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-proc-'));
    writeThread(PID, 1000, 0, 'worker');
    fs.writeFileSync(path.join(root, String(PID), 'status'), `Name:\tworker\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4000\nPid:\t${PID}\n`);
    expect(() => openThreadTracker({ backend: 'procfs', pid: PID, procRoot: root })).toThrow(
      expect.objectContaining({
        code: 'ERR_JOULETRACE_NOT_A_PROCESS',
        message: `jouletrace: pid ${PID} is a thread of process 4000; options.pid takes a process id: pass 4000`,
      }),
    );
  });

  it('rejects options the chosen backend would ignore, naming them', () => {
    expect(() => openThreadTracker({ backend: 'procfs', followChildren: true })).toThrow("options.followChildren needs backend: 'bpf'");
    expect(() => openThreadTracker({ backend: 'procfs', bpfProgram: 'compat' })).toThrow("options.bpfProgram needs backend: 'bpf'");
    expect(() => openThreadTracker({ backend: 'procfs', repairSwitchIns: 'off' })).toThrow("options.repairSwitchIns needs backend: 'bpf'");
    expect(() => openThreadTracker({ procRoot: '/proc' })).toThrow("options.procRoot needs backend: 'procfs'");
    // Paths reach native code: empty ones and NULs (which would cut them short there) are refused.
    expect(() => openThreadTracker({ backend: 'procfs', procRoot: '' })).toThrow(RangeError);
    expect(() => openThreadTracker({ backend: 'procfs', procRoot: '/proc\0/x' })).toThrow('options.procRoot');
  });
});

describe('procfs thread tracker under a low descriptor limit', () => {
  // Two descriptors kept per thread took the host's: under `ulimit -n 1024` and 700 threads its
  // own open() failed with EMFILE, and threads beyond read by path failed too, 0 ns, uncounted.
  it("keeps to a share of the process's descriptors, reads the other threads by path, and counts those it cannot read", () => {
    const threads = 200;
    const script = `
      const fs = require('node:fs');
      const { spawn } = require('node:child_process');
      const { openThreadTracker } = require(${JSON.stringify(path.join(__dirname, '..', 'dist/cjs/index.js'))});
      const py = spawn('python3', ['-c', [
        'import sys, threading',
        'go, done, lock, woke = threading.Event(), threading.Event(), threading.Lock(), [0]',
        'def work():',
        '    go.wait()',
        '    with lock:',
        '        woke[0] += 1',
        '        if woke[0] == ${threads}: print("woke", flush=True)',
        '    done.wait()',
        'for _ in range(${threads}): threading.Thread(target=work, daemon=True).start()',
        'print("up", flush=True)',
        'sys.stdin.readline()',
        'go.set()', // every thread runs once after the open
        'sys.stdin.readline()',
      ].join('\\n')], { stdio: ['pipe', 'pipe', 'inherit'] });
      const lines = [];
      let wait;
      py.stdout.setEncoding('utf8').on('data', (d) => { lines.push(...d.split('\\n').filter(Boolean)); wait?.(); });
      const line = (l) => new Promise((resolve) => { wait = () => lines.includes(l) && resolve(); wait(); });
      const fdCount = () => { try { return fs.readdirSync('/proc/self/fd').length; } catch (e) { return e.code; } };
      const tryOpen = () => { try { fs.closeSync(fs.openSync('/dev/null', 'r')); return 'ok'; } catch (e) { return e.code; } };
      (async () => {
        await line('up');
        const fdsBefore = fdCount();
        const t = openThreadTracker({ backend: 'procfs', pid: py.pid });
        t.snapshot();
        const t2 = openThreadTracker({ backend: 'procfs', pid: py.pid }); // the quarter is for both
        t2.snapshot();
        const held = fdCount() - fdsBefore;
        t2.close();
        const appOpen = tryOpen();
        py.stdin.write('\\n');
        await line('woke');
        const a = t.snapshot().threads;
        const unreadA = t.stats().unreadThreads;
        // The host takes every descriptor left: the threads read by path cannot be read.
        const fds = [];
        try { for (;;) fds.push(fs.openSync('/dev/null', 'r')); } catch (e) { if (e.code !== 'EMFILE') throw e; }
        const b = t.snapshot().threads;
        const unreadB = t.stats().unreadThreads;
        for (const fd of fds) fs.closeSync(fd);
        const c = t.snapshot().threads;
        console.log(JSON.stringify({
          held, appOpen, rows: a.length, zeroA: a.filter((r) => r.onCpuNs === 0).length, unreadA,
          fds: fds.length, unreadB, exitedB: b.filter((r) => r.exited).length,
          rowsC: c.length, zeroC: c.filter((r) => r.onCpuNs === 0).length, unreadC: t.stats().unreadThreads,
        }));
        t.close();
        py.kill();
      })();
    `;
    const r = spawnSync('bash', ['-c', 'ulimit -n 256 && exec "$0" -e "$1"', process.execPath, script], { encoding: 'utf8', timeout: 60_000 });
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as Record<string, number | string>;
    // The host can open files while it tracks: its trackers keep a quarter of the limit at most.
    expect(out.appOpen).toBe('ok');
    expect(out.held).toBeLessThanOrEqual(256 / 4);
    // Every thread ran after the open, and every row says so: those without descriptors are read
    // by path, schedstat included (stat's clock ticks read 0 for a wake-up's few microseconds).
    expect(out.rows).toBe(threads + 1);
    expect(out).toMatchObject({ zeroA: 0, unreadA: 0 });
    // Out of descriptors, the threads read by path (all but the few with descriptors of their
    // own) are counted as unread, once each, not taken for exited.
    expect(out.fds).toBeGreaterThan(100);
    expect(out.unreadB).toBeGreaterThan(threads / 2);
    expect(out.unreadB).toBeLessThanOrEqual(threads + 1);
    expect(out).toMatchObject({ exitedB: 0, rowsC: threads + 1, zeroC: 0, unreadC: out.unreadB });
  });
});
