// `jouletrace run` against real command trees: children attributed, exit codes passed through,
// JSON and CSV outputs, signals forwarded.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkNumber, choiceOption, inFlagWords, parseArgs, parseIntervalUs, sourceOption, UsageError } from '../src/cli/args';
import { printable } from '../src/cli/format';
import { exitStatus, processTable, ProcessTreeWatcher, signalName } from '../src/cli/run';
import type { ThreadEnergy } from '../src/sampler';
import { fmtSeconds } from '../src/units';
import { itBpf } from './fixtures/bpf-required';
import { childPids } from './fixtures/child-pids';
import { countingPowercap, createEmulatedPowercap } from './fixtures/emulated-devices';

const ROOT = path.join(__dirname, '..');
const BIN = path.join(ROOT, 'bin/jouletrace.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'jt-run-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

// A command line jouletrace refuses: its exit status, and what it says.
function refused(args: string[], status: number, says: string): void {
  const r = jt(args);
  expect(r.code, r.stderr).toBe(status);
  expect(r.stderr).toContain(says);
}

function jt(args: string[], timeoutMs = 20_000) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: timeoutMs, env: { ...process.env, NO_COLOR: '1' } });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

// A process's state letter (R, S, Z, ...), or 'gone'.
function procState(pid: number): string {
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return st.slice(st.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return 'gone';
  }
}

/**
 * `jouletrace run -- node -e script file` off any terminal, as under timeout(1) (the command in a
 * group of its own), once the script has written `file.pid`: its pid and its child's.
 */
async function runInOwnGroup(script: string, file: string) {
  const child = spawn(process.execPath, [BIN, 'run', '-q', '-o', '/dev/null', '--', process.execPath, '-e', script, file], { stdio: 'ignore', detached: true });
  const exit = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  const deadline = Date.now() + 10_000;
  // Read whole: the file exists, empty, before the script's write fills it.
  const read = () => (fs.existsSync(`${file}.pid`) ? /^(\d+) (\d+)$/.exec(fs.readFileSync(`${file}.pid`, 'utf8')) : null);
  let pids;
  while (!(pids = read())) {
    if (Date.now() > deadline) throw new Error('command never started');
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, exit, command: Number(pids[1]), left: Number(pids[2]) };
}

interface RunJson {
  command: string[];
  exitCode: number;
  source: string;
  estimated: boolean;
  domains: Array<{ domain: string; joules: number; watts: number }>;
  tree: { backend: string; followsChildren: boolean; joules: number; baseline: number; other: number; total: number };
  processes: Array<{ pid: number; ppid: number | null; command: string; onCpuNs: number; joules: number; unmeasuredNs: number }>;
  threads: Array<{ tid: number; pid: number; name: string; onCpuNs: number; joules: number; unmeasuredNs: number }>;
  sampler: { samples: number; dropped: number; jitterUs: { p50: number; p99: number; max: number } | null };
}

describe('jouletrace run', () => {
  itBpf('attributes the energy of children the command forks, listing each process', () => {
    const script = 'yes > /dev/null & a=$!; yes > /dev/null & b=$!; sleep 1; kill $a $b; wait';
    const r = jt(['run', '--json', '--', 'sh', '-c', script]);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as RunJson;
    expect(res.command).toEqual(['sh', '-c', script]);
    expect(res.exitCode).toBe(0);
    expect(res.tree.backend).toBe('bpf');
    expect(res.tree.followsChildren).toBe(true);
    const root = res.processes.find((p) => p.command.startsWith('sh -c'));
    expect(root, JSON.stringify(res.processes)).toBeDefined();
    // A child whose command line the 100 ms /proc poll did not catch in time is named by its
    // kernel comm in brackets, as ps names it: either way it is listed, with its energy.
    const burners = res.processes.filter((p) => p.command === 'yes' || p.command === '[yes]');
    expect(burners, JSON.stringify(res.processes)).toHaveLength(2);
    for (const b of burners) {
      expect(b.ppid).toBe(root!.pid);
      // A second of burning, on a 2-CPU machine that other tests may be loading too.
      expect(b.onCpuNs).toBeGreaterThan(0.05e9);
      expect(b.joules).toBeGreaterThan(0);
    }
    // The sleeping child is there too, with its parent, named by its comm as above if no poll
    // caught its command line. (This failed once in a full-suite run, before it printed the
    // list; a missed command line is the likely cause, not a confirmed one.)
    const sleeper = (p: { command: string }) => p.command === 'sleep 1' || p.command === '[sleep]';
    expect(res.processes.some((p) => sleeper(p) && p.ppid === root!.pid), JSON.stringify(res.processes)).toBe(true);
    // The tree's energy includes the children's, and attribution conserves the total.
    const childJ = burners.reduce((a, b) => a + b.joules, 0);
    expect(res.tree.joules).toBeGreaterThanOrEqual(childJ * 0.999);
    expect(res.tree.joules + res.tree.baseline + res.tree.other).toBeCloseTo(res.tree.total, 6);
    const sumProcesses = res.processes.reduce((a, p) => a + p.joules, 0);
    expect(sumProcesses).toBeCloseTo(res.tree.joules, 3);
    expect(res.sampler.samples).toBeGreaterThan(500);
    expect(res.estimated).toBe(res.source === 'model');
  });

  // Past the tracker's thread slots, threads of the tree went untracked and their energy into
  // "other", with no word of it in the summary, the notes or the JSON.
  itBpf('says how many threads of the tree went untracked, in the summary, the notes and the JSON', () => {
    // Nine processes alive at once, four slots.
    const script = 'for i in 1 2 3 4 5 6 7 8; do sleep 0.5 & done; wait';
    const r = jt(['run', '--json', '--max-threads', '4', '--', 'sh', '-c', script]);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as RunJson & { tree: { maxThreads: number; droppedThreads: number }; notes: string[] };
    expect(res.tree.maxThreads).toBe(4);
    expect(res.tree.droppedThreads).toBeGreaterThanOrEqual(5);
    const note = `${res.tree.droppedThreads} threads of the tree went untracked: all 4 thread slots were in use, so their energy is counted in "other", not in the tree's; --max-threads N (above the threads alive at once) tracks them all`;
    expect(res.notes).toContain(note);
    const text = jt(['run', '--max-threads', '4', '--', 'sh', '-c', script]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stderr).toMatch(/ other +\d+\.\d % {3}other processes, idle, and \d+ untracked threads of the tree\n/);
    expect(text.stderr).toContain(' note: ');
    expect(text.stderr).toContain('thread slots were in use');
    // Within the slots: none.
    const within = JSON.parse(jt(['run', '--json', '--', 'sh', '-c', script]).stdout) as typeof res;
    expect(within.tree).toMatchObject({ maxThreads: 4096, droppedThreads: 0 });
    expect(within.notes.join('\n')).not.toContain('untracked');
  });

  it('takes --max-threads from 1 to 1048576, with thread tracking only', () => {
    refused(['run', '--max-threads', '0', '--', 'true'], 2, '--max-threads must be an integer from 1 to 1048576, not 0');
    refused(['run', '--max-threads', '1.5', '--', 'true'], 2, '--max-threads must be an integer from 1 to 1048576, not 1.5');
    refused(['run', '--threads', 'off', '--max-threads', '8', '--', 'true'], 2, '--max-threads needs thread tracking, which --threads off turns off');
    refused(['top', '--max-threads', '8'], 2, '--max-threads needs --pid');
    expect(jt(['run', '--help']).stdout).toContain('--max-threads N');
    expect(jt(['top', '--help']).stdout).toContain('--max-threads N');
  });

  it('prints a perf-stat-like summary on stderr, leaving stdout to the command', () => {
    const r = jt(['run', '--', 'sh', '-c', 'echo hello; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('hello\n');
    expect(r.stderr).toMatch(/Energy stats for 'sh -c echo hello/);
    expect(r.stderr).toMatch(/elapsed/);
    expect(r.stderr).toMatch(/package-0 .* W average/);
    expect(r.stderr).toMatch(/process tree/);
    expect(r.stderr).toMatch(/baseline/);
    expect(r.stderr).toMatch(/Top threads by joules/);
    expect(r.stderr).toMatch(/\d+ samples at \d+ Hz .* dropped/);
    // "sampler used" was the sampler thread's alone: jouletrace's /proc watch is beside it.
    expect(r.stderr).toMatch(/; sampler thread used \d+\.\d\d % of a core, jouletrace in all \d+\.\d\d %\n/);
    expect(r.stderr).toMatch(/source: model — ESTIMATED/);
    expect(r.stderr).not.toMatch(/\x1b\[/); // not a terminal: no colour
  });

  it("names a command that exits before the first poll by its own command line, not the wrapper's", () => {
    // `true` execs and exits within a millisecond: no 100 ms poll sees it after its exec.
    const r = jt(['run', '--json', '--', 'true']);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as RunJson;
    expect(res.processes.map((p) => p.command)).toEqual(['true']);
  });

  it('passes the exit code through', () => {
    expect(jt(['run', '-q', '--', 'sh', '-c', 'exit 3']).code).toBe(3);
    expect(jt(['run', '--', 'true']).code).toBe(0);
  });

  it('exits 128 + signal when the command was killed', () => {
    const r = jt(['run', '--json', '--', 'sh', '-c', 'kill -KILL $$']);
    expect(r.code).toBe(137);
    expect(JSON.parse(r.stdout)).toMatchObject({ exitCode: 137, signal: 'SIGKILL' });
  });

  // Node's 'exit' event names only the signals Node has names for: killed by a real-time one
  // (34 to 64), the command read as exit 0, a success.
  it('exits 128 + N for a real-time signal, which Node has no name for', () => {
    const r = jt(['run', '--json', '--', 'sh', '-c', 'kill -40 $$']);
    expect(r.code, r.stderr).toBe(168);
    expect(JSON.parse(r.stdout)).toMatchObject({ exitCode: 168, signal: 'SIGRTMIN+6' });
    const text = jt(['run', '--', 'sh', '-c', 'kill -64 $$']);
    expect(text.code, text.stderr).toBe(192);
    expect(text.stderr).toContain(' exit status: 192 (killed by SIGRTMAX)\n');
  });

  it('exits 127 when the command does not exist, 2 on a bad command line', () => {
    expect(jt(['run', '--', 'no-such-command-jt']).code).toBe(127);
    const bad = jt(['run', '--interval', 'fast', '--', 'true']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--interval expects a duration');
    expect(jt(['run']).code).toBe(2);
    expect(jt(['run', '--threads', 'sometimes', '--', 'true']).code).toBe(2);
    // A value forgotten before '--': not a file named '--'.
    const noValue = jt(['run', '--html', '--', 'true']);
    expect(noValue.code).toBe(2);
    expect(noValue.stderr).toContain('--html needs a value');
    // An empty path is the command line's mistake too, not a file it could not write (125).
    refused(['run', '--output=', '--', 'true'], 2, '--output expects a file path');
    refused(['run', '--csv=', '--', 'true'], 2, '--csv expects a file path');
    refused(['demo', '--html='], 2, '--html expects a file path');
    // serve: an unknown country names its flag (2); a process that is not there is told as top tells it (1).
    refused(['serve', '--country', 'ZZZ', '--port', '0'], 2, '--country expects an ISO 3166-1 alpha-3 code');
    // Known to the data with no figure: told to give the figure.
    refused(['serve', '--country', 'CAF', '--port', '0'], 2, 'else give --grams-per-kwh), not "CAF"');
    refused(['serve', '--pid', '4194000', '--port', '0'], 1, 'jouletrace serve: no process 4194000\n');
    expect(jt(['run', '--help']).stdout).toContain('(Ctrl-C, Ctrl-\\, hang-up)');
  });

  it('writes every sample to --csv, with a header', () => {
    const csv = path.join(tmp, 'samples.csv');
    const r = jt(['run', '--interval', '2ms', '--csv', csv, '--json', '--', 'sleep', '0.5']);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as RunJson;
    const lines = fs.readFileSync(csv, 'utf8').trimEnd().split('\n');
    const header = lines[0].split(',');
    expect(header.slice(0, 4)).toEqual(['time_s', 'seq', 'late', 'estimated']);
    expect(header).toContain('package-0_joules');
    expect(header).toContain('package-0_tree_joules');
    const rows = lines.slice(1).map((l) => l.split(','));
    // Every sample the sampler took (a few around start/stop may be in flight).
    expect(rows.length).toBeGreaterThan(res.sampler.samples - 5);
    expect(rows.length).toBeLessThanOrEqual(res.sampler.samples + 1);
    const jCol = header.indexOf('package-0_joules');
    const treeCol = header.indexOf('package-0_tree_joules');
    let prevT = -1;
    let prevJ = -1;
    let prevTree = 0;
    let prevSeq = -1;
    for (const row of rows) {
      expect(row).toHaveLength(header.length);
      const t = Number(row[0]);
      const j = Number(row[jCol]);
      const seq = Number(row[1]);
      expect(seq).toBeGreaterThan(prevSeq);
      // Printed to the µs: the final sample taken at stop can fall within a µs of the last
      // periodic one (seen once in CI), so time only never goes back.
      expect(t).toBeGreaterThanOrEqual(prevT);
      expect(j).toBeGreaterThanOrEqual(prevJ);
      // The tree's share, in joules, where the sample was attributed (blank where not yet).
      if (row[treeCol] !== '') {
        const tree = Number(row[treeCol]);
        expect(tree).toBeGreaterThanOrEqual(prevTree);
        expect(tree).toBeLessThanOrEqual(j);
        prevTree = tree;
      }
      prevT = t;
      prevJ = j;
      prevSeq = seq;
    }
    expect(prevT).toBeGreaterThan(0.4);
    // The last sample is the run's final one: its figures are the summary's.
    expect(prevJ).toBeCloseTo(res.domains[0].joules, 6);
    expect(prevTree).toBeCloseTo(res.tree!.joules, 6);
  });

  it.each([
    ['SIGTERM', 143],
    ['SIGINT', 130],
    ['SIGHUP', 129],
    ['SIGQUIT', 131],
    // Left to their default action, these killed jouletrace, leaving its temporary files and the
    // command, in a group of its own, running.
    ['SIGUSR2', 140],
    ['SIGALRM', 142],
    ['SIGVTALRM', 154],
    ['SIGPWR', 158],
  ] as const)('forwards %s to the command and reports its death by it, leaving no temporary file', async (signal, status) => {
    // In a session of its own, off any terminal: run from a terminal, the test's process group
    // is its foreground one, whose terminal signals jouletrace rightly does not pass on again.
    const out = path.join(tmp, `signal-${signal}.json`);
    const child = spawn(process.execPath, [BIN, 'run', '-q', '-o', out, '--', 'sleep', '20'], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    // Wait until the command runs (sleep is exec'd in the tree).
    const deadline = Date.now() + 10_000;
    for (;;) {
      const kid = childPids(child.pid!)[0];
      if (kid !== undefined && fs.readFileSync(`/proc/${kid}/cmdline`, 'utf8').startsWith('sleep')) break;
      if (Date.now() > deadline) throw new Error('command never started');
      await new Promise((r) => setTimeout(r, 50));
    }
    // Not passed on, the signal would leave sleep to end by itself after 20 s, with status 0.
    child.kill(signal);
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    expect(code).toBe(status);
    expect(fs.readFileSync(out, 'utf8')).toContain(`killed by ${signal}`);
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.jouletrace-'))).toEqual([]);
  });

  // A command that ends by the signal passed on: dying of it, or exiting with 128 + N as a shell
  // that ends on it says so.
  it.each([
    ['exits 128 + N', 'process.exit(143)'],
    ['dies of it', "process.removeAllListeners('SIGTERM'); process.kill(process.pid, 'SIGTERM')"],
  ])('passes a signal sent to its whole process group on once, and ends what is left of the tree when the command %s', async (_, ending) => {
    // timeout(1), `kill -TERM -PGID` and systemd signal jouletrace's whole group: the command got
    // the signal from there and again from jouletrace, and took the second as "quit now".
    const counted = path.join(tmp, `group-signal-count-${ending.length}`);
    const script = `
      const fs = require('fs');
      const left = require('child_process').spawn('sleep', ['30'], { stdio: 'ignore' });
      let n = 0;
      process.on('SIGTERM', () => {
        if (++n === 1) setTimeout(() => { fs.writeFileSync(process.argv[1], String(n)); ${ending}; }, 300);
      });
      fs.writeFileSync(process.argv[1] + '.pid', process.pid + ' ' + left.pid);
      setInterval(() => {}, 1000);`;
    const { child, exit, command, left } = await runInOwnGroup(script, counted);
    try {
      // In a group of its own: the group's signal cannot reach it. (Two signals that arrive
      // before the first is delivered are one, so the count alone did not always show it.)
      const st = fs.readFileSync(`/proc/${command}/stat`, 'utf8');
      expect(Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[2])).toBe(command);
      process.kill(-child.pid!, 'SIGTERM');
      expect(await exit).toBe(143);
      expect(fs.readFileSync(counted, 'utf8')).toBe('1');
      // The child the command left behind got the signal too, as it did from the group: gone
      // (or a zombie about to be reaped by init).
      let state = procState(left);
      for (let i = 0; i < 50 && !['gone', 'Z'].includes(state); i++) {
        await new Promise((r) => setTimeout(r, 20));
        state = procState(left);
      }
      expect(state).toMatch(/^(gone|Z)$/);
    } finally {
      // A test that fails leaves nothing behind either.
      for (const pid of [left, command, child.pid!]) if (!['gone', 'Z'].includes(procState(pid))) process.kill(pid, 'SIGKILL');
    }
  });

  // Every signal passed on went to the command's whole group when the command exited, however
  // much later and however it exited: one it handled (SIGUSR2, SIGHUP to reload) killed its
  // background children at its normal exit.
  it('leaves the background children of a command that lived through a signal passed on', async () => {
    const marker = path.join(tmp, 'usr2-handled');
    const script = `
      const fs = require('fs');
      const left = require('child_process').spawn('sleep', ['30'], { stdio: 'ignore' });
      left.unref();
      process.on('SIGUSR2', () => setTimeout(() => { fs.writeFileSync(process.argv[1], 'handled'); process.exit(0); }, 300));
      fs.writeFileSync(process.argv[1] + '.pid', process.pid + ' ' + left.pid);
      setInterval(() => {}, 1000);`;
    const { child, exit, command, left } = await runInOwnGroup(script, marker);
    try {
      child.kill('SIGUSR2'); // to jouletrace alone, which passes it on
      expect(await exit).toBe(0);
      expect(fs.readFileSync(marker, 'utf8')).toBe('handled');
      // A signal sent by jouletrace before it exited would have ended sleep by now, or soon.
      for (let i = 0; i < 25; i++) {
        expect(procState(left)).not.toMatch(/^(gone|Z)$/);
        await new Promise((r) => setTimeout(r, 20));
      }
    } finally {
      for (const pid of [left, command, child.pid!]) if (!['gone', 'Z'].includes(procState(pid))) process.kill(pid, 'SIGKILL');
    }
  });

  it('refuses an output file it cannot write before running the command (exit 125)', () => {
    const ran = path.join(tmp, 'ran');
    for (const flag of ['--csv', '-o', '--html']) {
      const r = jt(['run', '-q', flag, '/nonexistent/dir/out', '--', 'touch', ran]);
      expect(r.code, r.stderr).toBe(125);
      expect(r.stderr).toContain('jouletrace run: cannot write /nonexistent/dir/out: ENOENT');
      expect(fs.existsSync(ran)).toBe(false);
    }
  });

  it('leaves existing output files as they were when it fails, and refuses one path given twice', () => {
    const out = path.join(tmp, 'kept.json');
    const csv = path.join(tmp, 'kept.csv');
    fs.writeFileSync(out, 'old summary');
    fs.writeFileSync(csv, 'old samples');
    const ran = path.join(tmp, 'ran-kept');
    // A source that fails fails after the files are open: exit 125, the command never ran, and
    // both files keep their content. MSR device files with nothing in them fail everywhere: no
    // RAPL register reads from them (x86), or this CPU has no RAPL MSRs (others).
    const msr = path.join(tmp, 'empty-msr');
    for (let cpu = 0; cpu < os.cpus().length; cpu++) {
      fs.mkdirSync(path.join(msr, String(cpu)), { recursive: true });
      fs.writeFileSync(path.join(msr, String(cpu), 'msr'), '');
    }
    let r = jt(['run', '-q', '--source', 'msr', '--msr-path', path.join(msr, '%d', 'msr'), '-o', out, '--csv', csv, '--', 'touch', ran]);
    expect(r.code, r.stderr).toBe(125);
    expect(fs.existsSync(ran)).toBe(false);
    expect(fs.readFileSync(out, 'utf8')).toBe('old summary');
    expect(fs.readFileSync(csv, 'utf8')).toBe('old samples');
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.jouletrace-'))).toEqual([]);

    // One file named twice is the command line's mistake (2), told as its two options.
    r = jt(['run', '-q', '-o', out, '--csv', path.join(tmp, '.', 'kept.json'), '--', 'touch', ran]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain(`--output and --csv name the same file`);
    expect(fs.existsSync(ran)).toBe(false);
    expect(fs.readFileSync(out, 'utf8')).toBe('old summary');

    // A run that succeeds replaces them.
    r = jt(['run', '-q', '--json', '-o', out, '--csv', csv, '--', 'true']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(fs.readFileSync(out, 'utf8')).command).toEqual(['true']);
    expect(fs.readFileSync(csv, 'utf8')).toMatch(/^time_s,seq,/);
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.jouletrace-'))).toEqual([]);
  });

  it('writes through links where they point, and in place where a rename would go wrong', () => {
    // A link stays a link; the file it points to gets the content.
    const target = path.join(tmp, 'link-target.json');
    const link = path.join(tmp, 'link.json');
    fs.writeFileSync(target, 'old');
    fs.symlinkSync(target, link);
    let r = jt(['run', '-q', '--json', '-o', link, '--', 'true']);
    expect(r.code, r.stderr).toBe(0);
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
    expect(JSON.parse(fs.readFileSync(target, 'utf8')).command).toEqual(['true']);
    // A dangling link: the file is created where it points.
    const later = path.join(tmp, 'link-later.json');
    const dangling = path.join(tmp, 'dangling.json');
    fs.symlinkSync(later, dangling);
    r = jt(['run', '-q', '--json', '-o', dangling, '--', 'true']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(fs.readFileSync(later, 'utf8')).command).toEqual(['true']);
    // One device for two outputs is fine; one file through two directory spellings is not.
    r = jt(['run', '-q', '-o', '/dev/null', '--csv', '/dev/null', '--', 'true']);
    expect(r.code, r.stderr).toBe(0);
    fs.mkdirSync(path.join(tmp, 'real-dir'));
    fs.symlinkSync(path.join(tmp, 'real-dir'), path.join(tmp, 'dir-link'));
    r = jt(['run', '-q', '-o', path.join(tmp, 'real-dir', 'x.txt'), '--csv', path.join(tmp, 'dir-link', 'x.txt'), '--', 'true']);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain('name the same file');

    // /proc/self/fd/1 (what /dev/stdout links to): appended to through the shell's descriptor.
    const captured = path.join(tmp, 'stdout.txt');
    fs.writeFileSync(captured, 'before\n');
    const fd = fs.openSync(captured, 'a');
    const child = spawnSync(process.execPath, [BIN, 'run', '-q', '--json', '-o', '/proc/self/fd/1', '--', 'true'], {
      stdio: ['ignore', fd, 'pipe'],
      encoding: 'utf8',
      timeout: 20_000,
    });
    fs.closeSync(fd);
    expect(child.status, child.stderr).toBe(0);
    const text = fs.readFileSync(captured, 'utf8');
    expect(text.startsWith('before\n')).toBe(true);
    expect(JSON.parse(text.slice('before\n'.length)).command).toEqual(['true']);

    // A file with another hard link: both names see the new content.
    const a = path.join(tmp, 'hard-a.csv');
    const b = path.join(tmp, 'hard-b.csv');
    fs.writeFileSync(a, 'old');
    fs.linkSync(a, b);
    r = jt(['run', '-q', '--csv', a, '--', 'true']);
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readFileSync(b, 'utf8')).toMatch(/^time_s,seq,/);
    expect(fs.statSync(a).ino).toBe(fs.statSync(b).ino);
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.jouletrace-'))).toEqual([]);
  });

  it("writes /dev/stderr through the shell's own descriptor, so the summary after the CSV does not overwrite it", () => {
    // `run --csv /dev/stderr 2> f`: opened anew (appending or not), the CSV had an offset of its
    // own, and the summary, written through the shell's descriptor from 0, overwrote it.
    const captured = path.join(tmp, 'stderr.txt');
    const fd = fs.openSync(captured, 'w');
    const r = spawnSync(process.execPath, [BIN, 'run', '-q', '--csv', '/dev/stderr', '--', 'true'], { stdio: ['ignore', 'pipe', fd], encoding: 'utf8', timeout: 20_000 });
    fs.closeSync(fd);
    expect(r.status).toBe(0);
    const text = fs.readFileSync(captured, 'utf8');
    expect(text).toMatch(/^time_s,seq,late,estimated,.*\n(\d+\.\d+,.*\n)+\n Energy stats for 'true'/);
    expect(text).toMatch(/ exit status: 0\n$/);
    // A descriptor not open (or not for writing) is refused before the command runs.
    refused(['run', '-q', '--csv', '/dev/fd/99', '--', 'true'], 125, 'jouletrace run: cannot write /dev/fd/99: EBADF');
  });

  it("refuses as an output file a descriptor of Node's own, and takes one the shell passed in", () => {
    // libuv's event poll, wake-up and signal pipes are open in jouletrace too: a CSV written into
    // them went nowhere (exit 0), or crashed the process (139).
    for (let n = 3; n <= 16; n++) {
      const r = jt(['run', '-q', '--csv', `/dev/fd/${n}`, '--', 'true']);
      expect(r.code, `/dev/fd/${n}: ${r.stderr}`).toBe(125);
      expect(r.stderr).toMatch(new RegExp(`^jouletrace run: cannot write /dev/fd/${n}: (E[A-Z]+|descriptor ${n} is not one this command was given)`));
    }
    const csv = path.join(tmp, 'fd3.csv');
    const fd = fs.openSync(csv, 'w');
    const r = spawnSync(process.execPath, [BIN, 'run', '-q', '--csv', '/dev/fd/3', '--', 'true'], { stdio: ['ignore', 'pipe', 'pipe', fd], encoding: 'utf8', timeout: 20_000 });
    fs.closeSync(fd);
    expect(r.status, r.stderr).toBe(0);
    expect(fs.readFileSync(csv, 'utf8')).toMatch(/^time_s,seq,late,estimated,/);
  });

  it('exits 125 when an output file cannot be written in full, keeping the others and the old file', () => {
    const csv = path.join(tmp, 'full-kept.csv');
    const out = path.join(tmp, 'full-summary.json');
    fs.writeFileSync(csv, 'old samples');
    // /dev/full: every write fails with ENOSPC, as a full disk's would.
    let r = jt(['run', '-q', '--json', '-o', out, '--html', '/dev/full', '--csv', csv, '--', 'true']);
    expect(r.code, r.stderr).toBe(125);
    expect(r.stderr).toContain('jouletrace run: cannot write /dev/full: ENOSPC');
    expect(r.stderr).toContain('not written: /dev/full (incomplete: written in place); the command exited with 0');
    expect(fs.readFileSync(csv, 'utf8')).toMatch(/^time_s,seq,/); // written in full: replaced
    expect(JSON.parse(fs.readFileSync(out, 'utf8')).exitCode).toBe(0);

    fs.writeFileSync(csv, 'old samples');
    r = jt(['run', '-q', '--json', '-o', '/dev/full', '--csv', csv, '--', 'true']);
    expect(r.code, r.stderr).toBe(125);
    expect(r.stderr).toContain('jouletrace run: cannot write /dev/full: ENOSPC');
    expect(JSON.parse(r.stderr.slice(r.stderr.indexOf('{'))).command).toEqual(['true']); // the summary, on stderr instead
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.jouletrace-'))).toEqual([]);
  });

  it('exits 125 with one line when stdout cannot be written, and probe exits 1', () => {
    const stdoutTo = (args: string[]) => {
      const fd = fs.openSync('/dev/full', 'w');
      try {
        return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 20_000, stdio: ['ignore', fd, 'pipe'] });
      } finally {
        fs.closeSync(fd);
      }
    };
    const run = stdoutTo(['run', '-q', '--json', '--', 'true']);
    expect(run.status, run.stderr).toBe(125);
    expect(run.stderr).toBe('jouletrace run: cannot write to stdout: ENOSPC: no space left on device, write\n');
    const probe = stdoutTo(['probe']);
    expect(probe.status, probe.stderr).toBe(1);
    expect(probe.stderr).toMatch(/^jouletrace probe: cannot write to stdout: ENOSPC/);
  });

  // Every error on stderr was ignored: the summary lost to a full disk, the run still exited 0.
  it('exits 125 when the summary cannot be written to stderr, but not when its reader went away', () => {
    const full = fs.openSync('/dev/full', 'w');
    try {
      const r = spawnSync(process.execPath, [BIN, 'run', '--', 'sh', '-c', 'exit 3'], { timeout: 20_000, stdio: ['ignore', 'ignore', full] });
      expect(r.status).toBe(125);
      // The other outputs are written all the same.
      const csv = path.join(tmp, 'stderr-full.csv');
      const withCsv = spawnSync(process.execPath, [BIN, 'run', '--csv', csv, '--', 'true'], { timeout: 20_000, stdio: ['ignore', 'ignore', full] });
      expect(withCsv.status).toBe(125);
      expect(fs.readFileSync(csv, 'utf8')).toMatch(/^time_s,seq,/);
      // -o: nothing goes to stderr.
      expect(spawnSync(process.execPath, [BIN, 'run', '-o', '/dev/null', '--', 'sh', '-c', 'exit 3'], { timeout: 20_000, stdio: ['ignore', 'ignore', full] }).status).toBe(3);
    } finally {
      fs.closeSync(full);
    }
    // A reader gone: the command's status.
    const gone = spawnSync('bash', ['-c', `${process.execPath} ${BIN} run -- sh -c 'sleep 0.3; exit 3' 2>&1 >/dev/null | true; echo "rc=\${PIPESTATUS[0]}"`], { encoding: 'utf8', timeout: 20_000 });
    expect(gone.stdout).toBe('rc=3\n');
  });

  // `-o /dev/stdout | true`: the summary's reader gone failed the run (125) and put the summary
  // on stderr, where --help says a reader gone from a pipe is no failure.
  it('takes a reader gone from /dev/stdout as an output file as no failure', () => {
    for (const args of ['--json -o /dev/stdout -- true | true', '--html /dev/stdout -- true | true', '--csv /dev/stdout -- sleep 0.5 | head -1 >/dev/null']) {
      const r = spawnSync('bash', ['-c', `${process.execPath} ${BIN} run -q ${args}; echo "rc=\${PIPESTATUS[0]}" >&2`], { encoding: 'utf8', timeout: 20_000 });
      expect(r.stderr, args).toMatch(/(^|\n)rc=0\n$/);
      expect(r.stderr, args).not.toContain('jouletrace run:');
    }
  });

  it('writes in place a file where nothing can be created beside it, and never names its own temporary file', () => {
    // /proc: a file root may open for writing, in a directory where no file can be made (ENOENT).
    // The write itself fails there (the kernel takes nothing): 125, said of the file given.
    const r = jt(['run', '-q', '--csv', '/proc/version', '--', 'true']);
    expect(r.code, r.stderr).toBe(125);
    expect(r.stderr).toContain('/proc/version');
    expect(r.stderr).not.toContain('.jouletrace-');
  });

  it("draws the run's last stretch in the HTML report", () => {
    // The collector stopped before the sampler took its final sample: the report ended at the
    // last periodic one (here 0.5 s into a 0.8 s run, too few points to draw power over time).
    const html = path.join(tmp, 'last-stretch.html');
    const r = jt(['run', '--json', '--interval', '500ms', '--html', html, '--', 'sleep', '0.8']);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as RunJson & { durationS: number };
    const text = fs.readFileSync(html, 'utf8');
    expect(text).toContain(`<td>duration</td><td>${fmtSeconds(res.durationS)}</td>`);
    expect(text).toMatch(/<section id="power">.*<path class="data line"/s);
  });

  it('names the main thread in the HTML report after its program, whose path may hold spaces', () => {
    const dir = path.join(tmp, 'my dir');
    fs.mkdirSync(dir, { recursive: true });
    const nap = path.join(dir, 'nap');
    fs.copyFileSync(fs.realpathSync('/bin/sleep'), nap);
    fs.chmodSync(nap, 0o755);
    const html = path.join(tmp, 'nap.html');
    const r = jt(['run', '-q', '--html', html, '--', nap, '0.8']);
    expect(r.code, r.stderr).toBe(0);
    const threads = /<section id="threads">(.*?)<\/section>/s.exec(fs.readFileSync(html, 'utf8'))![1];
    expect(threads).toMatch(/>nap \(\d+\): /);
    expect(threads).not.toMatch(/>my \(/);
  });

  it('writes an HTML report with --html', () => {
    const html = path.join(tmp, 'run.html');
    const r = jt(['run', '-q', '--html', html, '--', 'sh', '-c', 'yes > /dev/null & p=$!; sleep 0.6; kill $p']);
    expect(r.code, r.stderr).toBe(0);
    const text = fs.readFileSync(html, 'utf8');
    expect(text).toMatch(/^<!doctype html>/);
    expect(text).not.toMatch(/<script|<link|<img|(src|href)=["']?https?:/);
    expect(text).toMatch(/<section id="power">.*<path class="data line"/s);
    expect(text).toMatch(/<section id="threads">.*<path class="data area"/s);
    expect(text).toContain('estimated');
    // Each energy figure of the summary table says so too, as the terminal's summary does.
    const rows = new Map([...text.matchAll(/<tr><td>([^<]*)<\/td><td>([^<]*)<\/td><\/tr>/g)].map((m) => [m[1], m[2]]));
    expect(rows.get('package-0')).toMatch(/ W average \(estimated\)$/);
    if (rows.has('process tree')) expect(rows.get('process tree')).toMatch(/ process\(es\) \(estimated\)$/);
    expect(rows.get('exit status')).toBe('0');
  });
});

describe('jouletrace run, job control and signals ignored', () => {
  const waitFor = async (what: () => boolean, label: string) => {
    const deadline = Date.now() + 10_000;
    while (!what()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${label}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const alive = (pid: number) => !['gone', 'Z'].includes(procState(pid));

  // nohup ignores SIGHUP for jouletrace and its command (and a script's `cmd &`, SIGINT and
  // SIGQUIT); Node set it back to its default action as it started, libuv again in the child, and
  // jouletrace handled it: a hang-up ended jouletrace (129) and the command with it.
  it('keeps a signal ignored at start-up ignored, for jouletrace and for the command', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'nohup-'));
    const file = (f: string) => path.join(dir, f);
    const script = 'echo $$ > cmd.pid; echo ${JOULETRACE_SIGIGN-unset} > env; sleep 0.5; echo done > done';
    // Started as a program, as nohup starts it: only its sh prelude can read what was ignored.
    const env = { ...process.env, NO_COLOR: '1', PATH: `${path.dirname(process.execPath)}:${process.env.PATH}` };
    const child = spawn('sh', ['-c', `trap '' HUP; exec "$0" "$@"`, BIN, 'run', '-o', 'summary', '--', 'sh', '-c', script], { cwd: dir, env, stdio: 'ignore', detached: true });
    const exit = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    let command = 0;
    try {
      await waitFor(() => /^\d+\n$/.test(fs.existsSync(file('cmd.pid')) ? fs.readFileSync(file('cmd.pid'), 'utf8') : ''), 'the command');
      command = Number(fs.readFileSync(file('cmd.pid'), 'utf8'));
      child.kill('SIGHUP'); // the hang-up, to jouletrace and to the command
      process.kill(command, 'SIGHUP');
      expect(await exit).toBe(0);
      expect(fs.readFileSync(file('done'), 'utf8')).toBe('done\n');
      expect(fs.readFileSync(file('summary'), 'utf8')).toContain(' exit status: 0\n');
      // Passed to Node, not to the command.
      expect(fs.readFileSync(file('env'), 'utf8')).toBe('unset\n');
    } finally {
      for (const pid of [command, child.pid!]) if (pid > 0 && alive(pid)) process.kill(pid, 'SIGKILL');
    }
  });

  // The prelude read the mask of the shell running it, and bash (busybox ash too) ignores SIGQUIT
  // itself: where /bin/sh is bash, every command ran with SIGQUIT ignored and Ctrl-\\ did nothing.
  // Its `read k v` also overwrote a caller's exported k and v on their way to the command.
  it("takes no signal as ignored that only the bin's own shell ignores, and leaves the caller's variables as they were", () => {
    const mask = (out: string) => BigInt(`0x${/^SigIgn:\s*([0-9a-f]+)$/m.exec(out)![1]}`);
    const env = { ...process.env, NO_COLOR: '1', k: 'world', v: 'hello', PATH: `${path.dirname(process.execPath)}:${process.env.PATH}` };
    for (const shell of ['bash', 'dash']) {
      const out = execFileSync(shell, [BIN, 'run', '--source', 'model', '-o', '/dev/null', '--', 'sh', '-c', 'grep SigIgn /proc/self/status; echo "v=$v k=$k"'], { env, encoding: 'utf8' });
      expect(mask(out) & 4n, `${shell}: ${out}`).toBe(0n); // SIGQUIT (3): bit 2
      expect(out).toContain('v=hello k=world');
    }
  });

  // The wrapper held the command stopped until the tracker was on: the SIGCONT that the shell's
  // `fg` and `bg` send to the job after Ctrl-Z let it go, during --calibrate too. It ran early,
  // and the run ended with "the command ended before it started".
  it('holds the command until --calibrate ends, whatever SIGCONT its wrapper gets', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'cont-'));
    const child = spawn(process.execPath, [BIN, 'run', '--calibrate', '1', '-o', 'summary', '--', 'sh', '-c', 'echo ran > ran'], {
      cwd: dir,
      stdio: ['ignore', 'ignore', 'pipe'],
      detached: true,
      env: { ...process.env, NO_COLOR: '1' },
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exit = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    try {
      await waitFor(() => stderr.includes('measuring idle power'), 'the calibration');
      const wrapper = childPids(child.pid!)[0];
      expect(wrapper).toBeDefined();
      process.kill(wrapper, 'SIGCONT'); // as fg or bg would, to the whole job
      expect(await exit, stderr).toBe(0);
      expect(stderr).not.toContain('ended before it started');
      expect(fs.readFileSync(path.join(dir, 'summary'), 'utf8')).toContain(' exit status: 0\n');
      expect(fs.readFileSync(path.join(dir, 'ran'), 'utf8')).toBe('ran\n');
    } finally {
      if (alive(child.pid!)) process.kill(child.pid!, 'SIGKILL');
    }
  });
});

describe('jouletrace run on a terminal', () => {
  const SOCKET = `jt-run-test-${process.pid}`;
  const tmux = (...args: string[]): string => {
    const r = spawnSync('tmux', ['-L', SOCKET, ...args], { encoding: 'utf8', timeout: 5000 });
    if (r.status !== 0) throw new Error(`tmux ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  // With the scrollback: the summary scrolls the command's output off a 20-line screen.
  const screen = (s: string) => tmux('capture-pane', '-p', '-S', '-200', '-t', s);
  const waitFor = async (what: () => boolean, ms: number, label: string) => {
    const deadline = Date.now() + ms;
    while (!what()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${label}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  // The pane's shell stays after the run so that its screen can be read.
  const start = (s: string, runArgs: string, script: string) =>
    tmux('new-session', '-d', '-s', s, '-x', '100', '-y', '20', `NO_COLOR=1 ${process.execPath} ${BIN} run ${runArgs} -- sh -c '${script}'; echo RUN-EXITED=$?; sleep 30`);
  afterAll(() => {
    spawnSync('tmux', ['-L', SOCKET, 'kill-server']);
  });

  it("draws nothing while the command runs unless --live: the command's partial line stays", async () => {
    // A prompt-like partial line, then a pause the live line (every 250 ms) would fall in.
    start('quiet', '', 'printf partial; sleep 0.8; echo " end"');
    await waitFor(() => screen('quiet').includes('RUN-EXITED='), 10_000, 'the run to end');
    const text = screen('quiet');
    expect(text).toContain('RUN-EXITED=0');
    expect(text).toMatch(/^partial end$/m);
    expect(text).not.toContain('jouletrace:');

    start('live', '--live', 'sleep 1.5');
    await waitFor(() => / jouletrace: \d+(\.\d+)? m?s {2}package-0 \d+\.\d+ W/.test(screen('live')), 5000, 'the live line');
    await waitFor(() => screen('live').includes('RUN-EXITED=0'), 10_000, 'the run to end');
    // Cleared before the summary is printed.
    expect(screen('live')).not.toContain('jouletrace:');
  });

  // In a session of its own, a background job's command read what was typed to the shell (no
  // SIGTTIN off its controlling terminal) and ran on past Ctrl-Z.
  it("leaves a background job's command under the shell's job control", async () => {
    tmux('new-session', '-d', '-s', 'bg', '-x', '120', '-y', '20', 'bash --norc --noprofile -i');
    await waitFor(() => screen('bg').trim().length > 0, 5000, 'the shell');
    // CMD""-GOT as typed: where the repository's path is long, the typed line wraps in the
    // 120-column window, and a wrapped line starting CMD-GOT: read as the command's output.
    tmux('send-keys', '-t', 'bg', `PS1='$ '; ${process.execPath} ${BIN} run -o /dev/null -- sh -c 'read x; echo CMD""-GOT:[$x]' &`, 'Enter');
    await waitFor(() => /\[1\] \d+/.test(screen('bg')), 5000, 'the job');
    await new Promise((r) => setTimeout(r, 1000)); // the command reaches its read
    tmux('send-keys', '-t', 'bg', 'echo SHELL-GOT-LINE', 'Enter');
    await waitFor(() => /Stopped/.test(screen('bg')), 5000, 'the job to stop on its read of the terminal');
    const text = screen('bg');
    expect(text).toMatch(/^SHELL-GOT-LINE$/m);
    expect(text).not.toMatch(/^CMD-GOT:/m);
    tmux('send-keys', '-t', 'bg', 'kill -9 %1', 'Enter');
  });

  it('still takes -q (the default now), refuses it with --live, and says so in --help', () => {
    expect(jt(['run', '-q', '--', 'true']).code).toBe(0);
    expect(jt(['run', '--quiet', '--', 'true']).code).toBe(0);
    refused(['run', '--live', '-q', '--', 'true'], 2, '--live and -q/--quiet contradict each other');
    const help = jt(['run', '--help']).stdout;
    expect(help).toContain('--live');
    expect(help).toContain('no live line: the default');
  });
});

describe('jouletrace run, timing and lost samples', () => {
  it('stops when the command exits, not an interval or two later', () => {
    // A final sample at stop() covers the exit: at 1 s intervals, a wait of two intervals
    // made a 0.3 s command read 2.3 s and 2 s of idle energy. That final sample is the run's
    // only one: a wait for the next 1 s sample adds one. A try that a loaded machine stretched
    // past 1 s takes that sample rightly: tried again.
    for (let attempt = 1; ; attempt++) {
      const r = jt(['run', '--json', '--interval', '1s', '--', 'sleep', '0.3']);
      expect(r.code, r.stderr).toBe(0);
      const res = JSON.parse(r.stdout) as RunJson & { durationS: number };
      if (res.sampler.samples > 1 && attempt < 3) continue;
      expect(res.sampler.samples, `a run of ${res.durationS} s`).toBe(1);
      // stop()'s sample only, no timed wake: no jitter, where it read 0 µs (a perfect sampler).
      expect(res.sampler.jitterUs).toBeNull();
      expect(res.durationS).toBeGreaterThanOrEqual(0.3);
      expect(res.domains[0].joules).toBeGreaterThan(0);
      expect(res.domains[0].joules / res.domains[0].watts).toBeCloseTo(res.durationS, 6);
      break;
    }
  });

  // `--interval 1s -- true` printed "0.00 s elapsed" beside its joules and watts, and "1 samples at
  // 98 Hz (every 1000000 µs)".
  it('prints a short run in ms, and its samples with the period as given, no rate shorter than it', () => {
    const r = jt(['run', '--interval', '1s', '--', 'true']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^ +\d+(\.\d)? (ms|µs) {3}elapsed$/m);
    // The periods skipped, not "late": a late sample skips one or more, and they outnumbered the samples.
    expect(r.stderr).toMatch(/^ 1 sample \(every 1 s: longer than the run\), 0 dropped, \d+ periods? skipped, no jitter yet \(no timed wake\); /m);
    const paced = jt(['run', '--interval', '1500us', '--', 'sleep', '0.1']);
    expect(paced.stderr).toMatch(/^ \d+ samples at \d+ Hz \(every 1\.5 ms\), 0 dropped, \d+ periods? skipped, jitter p50 \d+\.\d µs/m);
  });

  it('reports no lost samples when nothing reads the ring, however long the run', () => {
    // 65536 samples fill the default ring: 3.3 s at 50 µs. Unread (no --csv), samples past that
    // were counted as dropped (50203 in 6 s) though nothing was lost.
    const r = jt(['run', '--json', '--interval', '50us', '--', 'sleep', '5'], 30_000);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as RunJson;
    expect(res.sampler.samples, 'too few samples to fill the ring: the machine was too busy to show it').toBeGreaterThan(65536);
    expect(res.sampler.dropped).toBe(0);
    const text = jt(['run', '--interval', '50us', '--', 'sleep', '5'], 30_000);
    expect(text.stderr).toMatch(/ \d{5,} samples at \d+ Hz \(every 50 µs\), 0 dropped,/);
  });
});

describe('jouletrace run, names from the processes', () => {
  it('prints control characters in command lines and thread names as ?, and JSON as they are', () => {
    // The process names its thread, and carries escape sequences in its command line (a comment
    // up front, within the 60 characters of the summary's process table).
    const code = '#\x1b]0;owned\x07\x1b[2J\x7f\nimport ctypes, time\nctypes.CDLL(None).prctl(15, b"ev\\x1b[2Jil", 0, 0, 0)\ntime.sleep(0.4)';
    // The interpreter itself, not a wrapper script (pyenv's shim runs bash first).
    const py = spawnSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).stdout.trim();
    const r = jt(['run', '--', py, '-c', code]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f-\x9f]/);
    expect(r.stderr).toContain(`Energy stats for '${py} -c #?]0;owned??[2J??import ctypes`);
    expect(r.stderr).toMatch(/python3 -c #\?\]0;owned\?\?\[2J\?/); // the process table, in 60 columns
    expect(r.stderr).toMatch(/ ev\?\[2Jil /); // the thread's name at its end
    const j = jt(['run', '--json', '--', py, '-c', code]);
    const res = JSON.parse(j.stdout) as RunJson;
    expect(res.processes.map((p) => p.command)).toEqual([`${py} -c ${code}`]);
    expect(res.threads.map((t) => t.name)).toEqual(['ev\x1b[2Jil']);
  });

  it('printable() replaces C0, DEL and C1 characters, and only those', () => {
    expect(printable('a\x00b\tc\nd\x1be\x7ff\x80g\x9bh\x9f')).toBe('a?b?c?d?e?f?g?h?');
    expect(printable('plain ascii ~ é ü 電 \u00a0 \u{1f600}')).toBe('plain ascii ~ é ü 電 \u00a0 \u{1f600}');
  });
});

describe('jouletrace run, a signal while the command is being started', () => {
  it('ends the run with 128 + N and leaves no stopped wrapper behind', async () => {
    // The window is a few ms (the wrapper shell starting and stopping itself): signalled as soon
    // as jouletrace has a child, some tries land in it. It killed jouletrace (as SIGTERM's
    // default) and left the wrapper stopped in state T, in 4 tries of 10 here.
    const outcomes: string[] = [];
    for (let i = 0; i < 8; i++) {
      const child = spawn(process.execPath, [BIN, 'run', '--', 'sleep', '20'], { stdio: 'ignore', detached: true });
      const exit = new Promise<[number | null, string | null]>((resolve) => child.once('exit', (c, s) => resolve([c, s])));
      let wrapper = 0;
      const deadline = Date.now() + 10_000;
      while (wrapper === 0 && Date.now() < deadline) {
        try {
          wrapper = Number(fs.readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/)[0]);
        } catch {
          // not started yet
        }
      }
      child.kill('SIGTERM');
      const [code, signal] = await exit;
      await new Promise((r) => setTimeout(r, 100));
      let state = 'gone';
      try {
        const st = fs.readFileSync(`/proc/${wrapper}/stat`, 'utf8');
        state = st.slice(st.lastIndexOf(')') + 2).split(' ')[0];
        process.kill(wrapper, 'SIGKILL'); // a test that fails leaves nothing behind either
      } catch {
        // reaped
      }
      outcomes.push(`exit ${code} signal ${signal} wrapper ${state}`);
    }
    expect(outcomes).toEqual(Array(8).fill('exit 143 signal null wrapper gone'));
  });

  // The tracker is attached (the sampler made and started) without a turn of the event loop: a
  // signal then was read only after the command had been let go, passed on to it, and the run
  // went on with the command's status, as if it had been sent later. Sent once jouletrace has
  // loaded the eBPF program, in that stretch.
  itBpf('ends the run, the command not run, for a signal that arrives while the tracker attaches', async () => {
    const bpfLoaded = (pid: number) => {
      try {
        return fs.readdirSync(`/proc/${pid}/fd`).some((n) => {
          try {
            return fs.readlinkSync(`/proc/${pid}/fd/${n}`).startsWith('anon_inode:bpf');
          } catch {
            return false; // closed meanwhile
          }
        });
      } catch {
        return false;
      }
    };
    const outcomes: string[] = [];
    for (let i = 0; i < 5; i++) {
      const child = spawn(process.execPath, [BIN, 'run', '-o', '/dev/null', '--', 'sh', '-c', 'echo RAN'], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      let out = '';
      let stderr = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (stderr += d));
      const exit = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
      const deadline = Date.now() + 10_000;
      while (!bpfLoaded(child.pid!) && Date.now() < deadline) {
        // polled without a pause: the stretch lasts tens of ms
      }
      child.kill('SIGTERM');
      const code = await exit;
      outcomes.push(`exit ${code} ran ${out.includes('RAN')}: ${stderr.split('\n')[0]}`);
    }
    expect(outcomes).toEqual(Array(5).fill('exit 143 ran false: jouletrace run: SIGTERM arrived before the command started; it did not run'));
  });
});

describe('where the sources read (--powercap-root and the other source paths)', () => {
  it('jouletrace run reads an emulated powercap tree, and notes counters that stood still', () => {
    const { e, writer } = countingPowercap();
    try {
      // The command stops the counter (the sampler opened, and saw it count, before the command
      // started) and runs on 1.5 s: a hypervisor that stopped updating RAPL, as the note says.
      const still = jt(['run', '--json', '--source', 'powercap', '--powercap-root', e.powercapRoot, '--threads', 'off', '--', 'sh', '-c', `kill ${writer.pid}; sleep 1.5`]);
      expect(still.code, still.stderr).toBe(0);
      const res = JSON.parse(still.stdout) as RunJson & { notes: string[] };
      expect(res.source).toBe('powercap');
      expect(res.estimated).toBe(false);
      expect(res.domains.map((d) => d.domain)).toEqual(['package']);
      expect(res.notes.join('\n')).toMatch(/powercap's counters stood still for 1\.[4-9] s at a stretch/);
    } finally {
      writer.kill();
      e.close();
    }
  });

  // A run whose counter started again lost energy, and said nothing: the summary showed no read
  // error at all, and --json gave the count without the restarts or the domain.
  it('jouletrace run reports failed reads and a counter that started again, with a note', () => {
    const { e, writer } = countingPowercap();
    const file = path.join(e.zonePath('intel-rapl:0'), 'energy_uj');
    try {
      // The counter starts again at 400,000 µJ (below the writer's 1,000,000 and up), fails to
      // read for a while, then counts on.
      const script = `kill ${writer.pid}; sleep 0.2; echo 400000 > ${file}; sleep 0.3; echo junk > ${file}; sleep 0.3; echo 900000 > ${file}; sleep 0.3`;
      const r = jt(['run', '--json', '--source', 'powercap', '--powercap-root', e.powercapRoot, '--threads', 'off', '--', 'sh', '-c', script]);
      expect(r.code, r.stderr).toBe(0);
      const res = JSON.parse(r.stdout) as RunJson & {
        notes: string[];
        sampler: { readErrors: number; counterRestarts: number; readErrorsByDomain: Array<{ domain: string; package: number; readErrors: number }> };
      };
      expect(res.sampler.counterRestarts).toBe(1);
      expect(res.sampler.readErrors).toBeGreaterThan(1);
      expect(res.sampler.readErrorsByDomain).toEqual([{ domain: 'package', package: 0, readErrors: res.sampler.readErrors }]);
      const note = res.notes.find((n) => n.includes('reads of the energy source failed'));
      expect(note).toBe(
        `${res.sampler.readErrors} of ${res.sampler.samples} reads of the energy source failed (package-0 ${res.sampler.readErrors}); in 1 of them a counter started again (a driver reloaded, a resume): the energy from its last good read to the restart is lost, and these figures miss it`,
      );
    } finally {
      writer.kill();
      e.close();
    }
  });

  // Reads that failed until the run's end measured none of the time the command's shell spun
  // through meanwhile: its row read a plain, lower figure, as if it had cost that little.
  it("jouletrace run gives each thread's and process's unmeasured on-CPU time, in the JSON and marked in the summary", () => {
    // The shell spins once the counter reads junk, to the end of the run.
    const spin = (file: string) => `echo junk > ${file}; i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done`;
    for (const json of [true, false]) {
      const { e, writer } = countingPowercap();
      const file = path.join(e.zonePath('intel-rapl:0'), 'energy_uj');
      try {
        const r = jt(['run', ...(json ? ['--json'] : []), '--source', 'powercap', '--powercap-root', e.powercapRoot, '--', 'sh', '-c', `kill ${writer.pid}; sleep 0.1; ${spin(file)}`]);
        expect(r.code, r.stderr).toBe(0);
        if (json) {
          const res = JSON.parse(r.stdout) as RunJson;
          const sh = res.threads.find((t) => t.name === 'sh');
          expect(sh, JSON.stringify(res.threads)).toBeDefined();
          // Most of its on-CPU time is the spin, all of it in failed reads.
          expect(sh!.unmeasuredNs).toBeGreaterThan(sh!.onCpuNs / 2);
          expect(sh!.unmeasuredNs).toBeLessThanOrEqual(sh!.onCpuNs);
          const proc = res.processes.find((p) => p.pid === sh!.pid)!;
          expect(proc.unmeasuredNs).toBe(res.threads.filter((t) => t.pid === sh!.pid).reduce((a, t) => a + t.unmeasuredNs, 0));
        } else {
          expect(r.stderr).toMatch(/ sh +[\d.]+ ms +\S+ \S+ {2}exited {2}\([\d.]+ ms unmeasured, not in joules\)\n/);
          expect(r.stderr).toMatch(/ {2}sh -c kill .* {2}\([\d.]+ ms unmeasured, not in joules\)\n/);
          // Not "its energy came with its next good read": none came.
          expect(r.stderr).toMatch(/reads that failed to the end of the run got no good read after them: [\d.]+ ms of thread time \(marked below\) has no energy/);
        }
      } finally {
        writer.kill();
        e.close();
      }
    }
  });

  it('jouletrace run adds no such note while the counters move', () => {
    const { e, writer } = countingPowercap();
    try {
      const moving = jt(['run', '--json', '--source', 'powercap', '--powercap-root', e.powercapRoot, '--', 'sleep', '1.5']);
      expect(moving.code, moving.stderr).toBe(0);
      const res = JSON.parse(moving.stdout) as RunJson & {
        notes: string[];
        sampler: { readErrors: number; counterRestarts: number };
      };
      expect(res.sampler.readErrors).toBe(0);
      // Every read measured: no time unmeasured, so no row of the summary is marked.
      expect(res.threads.length).toBeGreaterThan(0);
      expect([...res.threads, ...res.processes].map((x) => x.unmeasuredNs)).toEqual([...res.threads, ...res.processes].map(() => 0));
      expect(res.sampler.counterRestarts).toBe(0);
      expect(res.notes.join('\n')).not.toMatch(/reads of the energy source failed/);
      expect(res.source).toBe('powercap');
      // 1,000 µJ a millisecond: about 1 W, if the writer kept pace.
      expect(res.domains[0].joules).toBeGreaterThan(0.3);
      expect(res.notes.join('\n')).not.toMatch(/stood still/);
    } finally {
      writer.kill();
      e.close();
    }
  });

  it('jouletrace run charges idle power to the baseline given or measured, and notes where there is none', () => {
    const { e, writer } = countingPowercap();
    try {
      const run = (...args: string[]) => {
        const r = jt(['run', '--json', '--source', 'powercap', '--powercap-root', e.powercapRoot, ...args, '--', 'sleep', '0.3']);
        expect(r.code, r.stderr).toBe(0);
        return { ...(JSON.parse(r.stdout) as RunJson & { notes: string[] }), stderr: r.stderr };
      };
      // None: the idle power went to the tree and to other, and nothing said so.
      const none = run();
      expect(none.tree.baseline).toBe(0);
      expect(none.notes.join('\n')).toContain('no baseline: idle power is shared out by CPU time, so the tree is charged part of it; --calibrate S');
      // 0.2 W of the writer's 1 W or so, at most what was measured in each interval.
      const given = run('--baseline', '0.2');
      expect(given.tree.baseline).toBeGreaterThan(0);
      expect(given.notes.join('\n')).not.toContain('no baseline');
      const measured = run('--calibrate', '0.3');
      expect(measured.stderr).toContain('jouletrace run: measuring idle power for 0.3 s before the command starts');
      expect(measured.tree.baseline).toBeGreaterThan(0);
      expect(measured.notes.join('\n')).toMatch(/baseline \(idle\) power measured over 0\.3 s before the command started: package-0 \d/);
    } finally {
      writer.kill();
      e.close();
    }
    // The model's idle power is its own estimate: the note said "measured" watts without a word of it.
    const model = jt(['run', '--json', '--source', 'model', '--calibrate', '0.2', '--', 'true']);
    expect(model.code, model.stderr).toBe(0);
    expect((JSON.parse(model.stdout) as { notes: string[] }).notes.join('\n')).toMatch(/before the command started: package-0 [\d.]+ \S*W \(estimated\)(,|$)/m);
    refused(['run', '--baseline', '-1', '--', 'true'], 2, '--baseline must be a number from 0 to 1000000, not -1');
    refused(['run', '--calibrate', '0.1', '--', 'true'], 2, '--calibrate must be a number from 0.2 to 600, not 0.1');
    refused(['run', '--baseline', '5', '--calibrate', '1', '--', 'true'], 2, '--baseline and --calibrate contradict each other');
    refused(['run', '--threads', 'off', '--baseline', '5', '--', 'true'], 2, '--baseline needs thread tracking');
    refused(['top', '--calibrate', '1'], 2, '--calibrate needs --pid');
  });

  it('probe reads the paths given, and a path that is not there is a usage error naming the option', () => {
    const e = createEmulatedPowercap([{ name: 'package-0', energyUj: 1_000_000 }]);
    try {
      // Still counters: found there, and refused for not counting (the default root has none).
      const r = jt(['probe', '--json', '--powercap-root', e.powercapRoot]);
      expect(r.code, r.stderr).toBe(0);
      const powercap = (JSON.parse(r.stdout) as { sources: Array<{ source: string; available: boolean; code?: string }> }).sources.find((s) => s.source === 'powercap');
      expect(powercap).toMatchObject({ available: false, code: 'ERR_JOULETRACE_NOT_COUNTING' });
    } finally {
      e.close();
    }
    refused(['run', '--powercap-root', '/nonexistent/powercap', '--', 'true'], 2, '--powercap-root: /nonexistent/powercap does not exist');
    refused(['top', '--msr-path', '/dev/cpu/0/msr', '--iterations', '1'], 2, '--msr-path needs exactly one %d');
    // A path given: the flag, not the module (modprobe msr) that the default path would need.
    const msr = jt(['probe', '--msr-path', '/nonexistent/%d/msr']);
    expect(msr.code).toBe(2);
    expect(msr.stderr).toMatch(
      /^jouletrace probe: --msr-path: \/nonexistent\/0\/msr does not exist \(give where this process sees the host's \/dev\/cpu\/%d\/msr, as \/host\/dev\/cpu\/%d\/msr where the host's root is mounted at \/host\)\n/,
    );
    refused(['serve', '--proc-stat='], 2, '--proc-stat expects a path');
    for (const cmd of ['run', 'top', 'serve', 'demo', 'probe']) expect(jt([cmd, '--help']).stdout).toContain('--sysfs-cpu-root D');
  });
});

// The library's messages name its options (threads 'procfs', source 'model', liveCheckMs); a
// command names its flag instead, or leaves the advice out where it has no such flag.
describe('library messages in the words of each command', () => {
  const asNobody = (args: string[]) => {
    const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 20_000, uid: 65534, gid: 65534, env: { ...process.env, NO_COLOR: '1' } });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  const LIBRARY_WORDS = /backend '|threads '|source '|liveCheckMs|options\./;

  it("run without eBPF privileges notes the fallback to procfs without advising procfs; --threads bpf names --threads procfs", () => {
    const r = asNobody(['run', '--json', '--', 'true']);
    expect(r.code, r.stderr).toBe(0);
    const notes = (JSON.parse(r.stdout) as { notes: string[] }).notes;
    const fallback = notes.find((n) => n.startsWith('eBPF unavailable ('));
    expect(fallback, notes.join('\n')).toBeDefined();
    expect(fallback).not.toMatch(/procfs'|--threads|use procfs/);
    expect(fallback).toMatch(/\.\); using procfs, which does not follow child processes$/);
    const bpf = asNobody(['run', '--threads', 'bpf', '--', 'true']);
    expect(bpf.code).toBe(125);
    expect(bpf.stderr).toMatch(/([,;] or use|Use|Otherwise use) --threads procfs( instead)?\.\n$/);
    expect(bpf.stderr).not.toMatch(LIBRARY_WORDS);
  });

  it('probe, which has neither --threads nor --source, leaves out that advice; its --json keeps the library words', () => {
    const r = asNobody(['probe']);
    const bpfReason = r.stdout.split('\n').at(-2)!;
    expect(r.stdout).toContain('eBPF thread attribution  ✗ not ready');
    expect(bpfReason).not.toMatch(/procfs|--threads/);
    expect(r.stdout).not.toMatch(LIBRARY_WORDS);
    const json = JSON.parse(asNobody(['probe', '--json']).stdout) as { bpf: { reason: string } };
    expect(json.bpf.reason).toMatch(/backend 'procfs'/);
  });

  it('a source that lists RAPL and never counts: run names --source model, probe no source, neither liveCheckMs', () => {
    const e = createEmulatedPowercap([{ name: 'package-0', energyUj: 1_000_000 }]);
    try {
      const run = jt(['run', '--source', 'powercap', '--powercap-root', e.powercapRoot, '--', 'true']);
      expect(run.code).toBe(125);
      expect(run.stderr).toMatch(/— the machine lists RAPL but does not count it, as hypervisors commonly do: measure on bare metal or in a VM given RAPL, or use --source model \(an estimate\)\n$/);
      const probe = jt(['probe', '--powercap-root', e.powercapRoot]);
      expect(probe.stdout).toContain('      fix: the machine lists RAPL but does not count it, as hypervisors commonly do: measure on bare metal or in a VM given RAPL\n');
      expect(probe.stdout).not.toMatch(LIBRARY_WORDS);
    } finally {
      e.close();
    }
  });

  it('a path given that holds no source names its flag', () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'empty-'));
    const r = jt(['probe', '--powercap-root', dir]);
    expect(r.stdout).toContain(`  ✗ powercap  ENOENT: no RAPL zones under ${dir}\n      fix: check --powercap-root: it should name where this process sees the host's /sys/class/powercap\n`);
    const run = jt(['run', '--source', 'powercap', '--powercap-root', dir, '--', 'true']);
    expect(run.stderr).toContain(`no RAPL zones under ${dir} — check --powercap-root: it should name`);
    const topology = jt(['probe', '--sysfs-cpu-root', dir]);
    expect(topology.code).toBe(1);
    expect(topology.stdout).toContain(`  ✗ model     ENOENT: ${dir}/online: No such file or directory\n      fix: cannot tell which CPUs are online; check --sysfs-cpu-root: it should name`);
  });

  // Each of the native messages that names an option, with and without the command's flag. The
  // eBPF refusals come in a Sampler's words (run's and top's messages: threads 'procfs') and in
  // openThreadTracker()'s and bpfReadiness()'s (probe's: backend 'procfs'), each row in both.
  const inBothWords = (rows: string[][]) =>
    rows.flatMap(([library, ...rest]) => ['backend', 'threads'].map((option) => [library.replace('OPTION', option), ...rest]));
  it.each([
    ...inBothWords([
      ["... (Linux >= 5.8), or use OPTION 'procfs'.", '... (Linux >= 5.8), or use --threads procfs.', '... (Linux >= 5.8).'],
      ["... (a copy kept for this service narrows that); or use OPTION 'procfs'.", '... (a copy kept for this service narrows that); or use --threads procfs.', '... (a copy kept for this service narrows that).'],
      ["... (running 6.1). Use OPTION 'procfs' instead.", '... (running 6.1). Use --threads procfs instead.', '... (running 6.1).'],
      ["... an LSM can refuse bpf() too. Otherwise use OPTION 'procfs'.", '... an LSM can refuse bpf() too. Otherwise use --threads procfs.', '... an LSM can refuse bpf() too.'],
      [
        "... not these. Use OPTION 'procfs', or run the container with the host's pid namespace (docker run --pid=host)",
        "... not these. Use --threads procfs, or run the container with the host's pid namespace (docker run --pid=host)",
        "... not these. Run the container with the host's pid namespace (docker run --pid=host)",
      ],
    ]),
    ["...with 18h) — use source 'model'", '...with 18h) — use --source model', '...with 18h)'],
    ["... going offline? Try again, or use source 'powercap' or 'perf'", '... going offline? Try again, or use --source powercap or perf', '... going offline? Try again'],
    ["... RAPL MSRs; try source 'powercap', 'perf' or 'model'", '... RAPL MSRs; try --source powercap, perf or model', '... RAPL MSRs'],
    [
      "... given RAPL, or use source 'model' (an estimate); liveCheckMs sets the wait",
      '... given RAPL, or use --source model (an estimate)',
      '... given RAPL',
    ],
    [
      "...(a VM): set one with setBaseline(), or use source 'model'",
      '...(a VM): set one with --baseline W, or use --source model',
      '...(a VM): use --source model',
    ],
    ['... x — check options.msrPath: it should', '... x — check --msr-path: it should', '... x — check --msr-path: it should'],
  ])('%s', (library, withFlags, without) => {
    expect(inFlagWords(library, ['pid', 'threads', 'source', 'baseline', 'msr-path'])).toBe(withFlags);
    // Without the flag named; demo calibrates with --source and no --baseline; every command has --msr-path.
    const fewer = library.includes('setBaseline') ? ['source'] : library.includes('msrPath') ? ['msr-path'] : [];
    expect(inFlagWords(library, fewer)).toBe(without);
  });
});

describe('jouletrace --help', () => {
  it.each(['run', 'top', 'demo', 'probe'])('%s --help prints its usage and exits 0', (cmd) => {
    const r = jt([cmd, '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^Usage: jouletrace ${cmd}`));
    expect(r.stdout).toContain('--json');
  });

  it('lists every command', () => {
    const r = jt(['--help']);
    expect(r.code).toBe(0);
    for (const cmd of ['probe', 'run', 'top', 'demo']) expect(r.stdout).toMatch(new RegExp(`^  ${cmd} `, 'm'));
    expect(jt(['frobnicate']).code).toBe(2);
  });
});

describe('ProcessTreeWatcher', () => {
  // A procfs of the test's own: /proc/PID/stat, cmdline and task/PID/children.
  function fakeProc() {
    const dir = fs.mkdtempSync(path.join(tmp, 'proc-'));
    const put = (pid: number, p: { comm: string; ppid: number; start: number; state?: string; cmdline?: string; argv?: string[]; children?: number[] }) => {
      fs.mkdirSync(path.join(dir, String(pid), 'task', String(pid)), { recursive: true });
      // pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime
      // stime cutime cstime priority nice num_threads itrealvalue starttime ...
      fs.writeFileSync(path.join(dir, String(pid), 'stat'), `${pid} (${p.comm}) ${p.state ?? 'S'} ${p.ppid} ${pid} ${pid} 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 ${p.start} 0\n`);
      fs.writeFileSync(path.join(dir, String(pid), 'cmdline'), p.state === 'Z' ? '' : `${(p.argv ?? (p.cmdline ?? p.comm).split(' ')).join('\0')}\0`);
      fs.writeFileSync(path.join(dir, String(pid), 'task', String(pid), 'children'), (p.children ?? []).map((c) => `${c} `).join(''));
    };
    return { dir, put };
  }
  const row = (pid: number, name: string, exited: boolean, tid = pid) => ({ tid, pid, name, exited });

  it('never takes the process that has a pid after the one it watched there', () => {
    const proc = fakeProc();
    proc.put(100, { comm: 'sh', ppid: 1, start: 400, cmdline: 'sh -c work', children: [101] });
    proc.put(101, { comm: 'sleep', ppid: 100, start: 500, cmdline: 'sleep 30' });
    const w = new ProcessTreeWatcher(100, undefined, proc.dir);
    expect(w.get(101)).toEqual({ ppid: 100, command: 'sleep 30' });
    // 101 exits between two polls and an unrelated process gets its pid.
    proc.put(100, { comm: 'sh', ppid: 1, start: 400, cmdline: 'sh -c work' });
    proc.put(101, { comm: 'other', ppid: 1, start: 900, cmdline: 'UNRELATED' });
    w.poll([row(100, 'sh', false), row(101, 'sleep', true)]);
    expect(w.get(101)).toEqual({ ppid: 100, command: 'sleep 30' });
    // One first heard of from the sampler with its threads exited: a live process there now is
    // another's. Its zombie is still itself (ppid known); a live one is the tree's (an orphan,
    // whose parent, init now, is not its own: unknown).
    proc.put(102, { comm: 'other', ppid: 1, start: 950, cmdline: 'UNRELATED' });
    proc.put(103, { comm: 'true', ppid: 100, start: 960, state: 'Z' });
    proc.put(104, { comm: 'daemon', ppid: 1, start: 970, cmdline: 'daemon --fork' });
    w.poll([row(100, 'sh', false), row(102, 'true', true), row(103, 'true', true), row(104, 'daemon', false)]);
    expect(w.get(102)).toEqual({ ppid: null, command: '[true]' });
    expect(w.get(103)).toEqual({ ppid: 100, command: '[true]' });
    expect(w.get(104)).toEqual({ ppid: null, command: 'daemon --fork' });
    expect(w.pids().sort()).toEqual([100, 101, 102, 103, 104]);
  });

  // An orphan first read after it was re-parented was listed with init (or a subreaper) as its
  // parent, where the docs say a parent not seen is null.
  it('gives an orphan heard of from the sampler no parent but one of the tree, whatever the order it is read in', () => {
    const proc = fakeProc();
    proc.put(100, { comm: 'sh', ppid: 1, start: 400, cmdline: 'sh -c work' });
    proc.put(50, { comm: 'reaper', ppid: 1, start: 300, cmdline: 'reaper' });
    const w = new ProcessTreeWatcher(100, undefined, proc.dir);
    // 201, re-parented to the subreaper 50, and its child 202; 203 re-parented to init, a zombie.
    proc.put(201, { comm: 'sub', ppid: 50, start: 500, cmdline: 'sh -c sub' });
    proc.put(202, { comm: 'sleep', ppid: 201, start: 510, cmdline: 'sleep 9' });
    proc.put(203, { comm: 'true', ppid: 1, start: 520, state: 'Z' });
    // The sampler lists the child first and the parent last: read in either order.
    for (const order of [[202, 201, 203], [203, 201, 202]]) {
      const x = new ProcessTreeWatcher(100, undefined, proc.dir);
      x.poll(order.map((pid) => row(pid, String(pid), pid === 203)));
      expect(x.get(201)).toEqual({ ppid: null, command: 'sh -c sub' });
      expect(x.get(202)).toEqual({ ppid: 201, command: 'sleep 9' });
      expect(x.get(203)).toEqual({ ppid: null, command: '[true]' });
      expect(x.get(50)).toBeUndefined();
    }
    // The root's parent (jouletrace) stays.
    expect(w.get(100)).toEqual({ ppid: 1, command: 'sh -c work' });
  });

  // The report named main threads after the command line's first word: '/opt/my' for a
  // program at '/opt/my app/srv'.
  // Each thread's task/TID/children file was read at every poll: 3000 idle threads took half a
  // core. Children are found by the parent pid in their stat, read once for a process new to /proc.
  it('finds children by the parent pid in their stat, reading no thread\'s children file', () => {
    const proc = fakeProc();
    proc.put(100, { comm: 'sh', ppid: 1, start: 400, cmdline: 'sh -c work' });
    // Threads of the root, none with a children file.
    for (let tid = 150; tid < 160; tid++) fs.mkdirSync(path.join(proc.dir, '100', 'task', String(tid)));
    proc.put(90, { comm: 'init', ppid: 0, start: 1, cmdline: 'init' });
    const w = new ProcessTreeWatcher(100, undefined, proc.dir);
    proc.put(101, { comm: 'make', ppid: 100, start: 500, cmdline: 'make all' });
    proc.put(102, { comm: 'cc', ppid: 101, start: 510, cmdline: 'cc -c a.c' });
    proc.put(103, { comm: 'cron', ppid: 90, start: 520, cmdline: 'cron' });
    w.poll();
    expect(w.get(101)).toEqual({ ppid: 100, command: 'make all' });
    expect(w.get(102)).toEqual({ ppid: 101, command: 'cc -c a.c' });
    expect(w.get(103)).toBeUndefined();
    expect(w.pids().sort()).toEqual([100, 101, 102]);
  });

  it("takes no process whose parent, read when it first appeared, has since exited and its pid gone to one of the tree's", () => {
    // The parent pid a process had when first read is kept: an outside daemon's child,
    // re-parented to init once the daemon exited, was taken for the tree's when the daemon's pid
    // came back as a child of the command.
    const proc = fakeProc();
    proc.put(100, { comm: 'sh', ppid: 1, start: 400, cmdline: 'sh -c work' });
    proc.put(200, { comm: 'daemon', ppid: 1, start: 100, cmdline: 'daemon' });
    proc.put(300, { comm: 'backup', ppid: 200, start: 150, cmdline: 'backup-daemon' });
    const w = new ProcessTreeWatcher(100, undefined, proc.dir);
    w.poll();
    expect(w.pids().sort()).toEqual([100]);
    fs.rmSync(path.join(proc.dir, '200'), { recursive: true });
    proc.put(300, { comm: 'backup', ppid: 1, start: 150, cmdline: 'backup-daemon' });
    w.poll();
    proc.put(200, { comm: 'make', ppid: 100, start: 900, cmdline: 'make all' });
    w.poll();
    expect(w.pids().sort()).toEqual([100, 200]);
    expect(w.get(300)).toBeUndefined();
  });

  it("gives each process's argv[0] whole, and the command's own for the root until it execs", () => {
    const proc = fakeProc();
    proc.put(100, { comm: 'sh', ppid: 1, start: 400, argv: ['/bin/sh', '-c', 'wrapper'], children: [101] });
    proc.put(101, { comm: 'srv', ppid: 100, start: 500, argv: ['/opt/my app/srv', '--port', '80'] });
    const w = new ProcessTreeWatcher(100, ['/opt/my tools/run', 'x'], proc.dir);
    expect(w.get(101)).toEqual({ ppid: 100, command: '/opt/my app/srv --port 80' });
    expect(w.program(101)).toBe('/opt/my app/srv');
    // The root, still the stopped wrapper: the command it will exec.
    expect(w.get(100)).toEqual({ ppid: 1, command: '/opt/my tools/run x' });
    expect(w.program(100)).toBe('/opt/my tools/run');
    proc.put(100, { comm: 'run', ppid: 1, start: 400, argv: ['/opt/my tools/run', 'x y'], children: [101] });
    w.poll();
    expect(w.program(100)).toBe('/opt/my tools/run');
    expect(w.program(999)).toBeUndefined();
  });

  // A process tearing down its memory as it exits is still running (state R) with an empty
  // cmdline: a poll then renamed it [comm], the root included (`[perl]` for `perl -e ...`).
  it('keeps the command line of a process read while it exits, its cmdline empty', () => {
    const proc = fakeProc();
    proc.put(100, { comm: 'sh', ppid: 1, start: 400, argv: ['/bin/sh', '-c', 'wrapper'], children: [101] });
    proc.put(101, { comm: 'perl', ppid: 100, start: 500, argv: ['perl', '-e', 'work'] });
    const w = new ProcessTreeWatcher(100, ['perl', '-e', 'big'], proc.dir);
    proc.put(100, { comm: 'perl', ppid: 1, start: 400, argv: ['perl', '-e', 'big'], children: [101] });
    w.poll();
    for (const pid of [100, 101]) {
      proc.put(pid, { comm: 'perl', ppid: pid === 100 ? 1 : 100, start: pid === 100 ? 400 : 500, state: 'R' });
      fs.writeFileSync(path.join(proc.dir, String(pid), 'cmdline'), '');
    }
    w.poll();
    expect(w.get(100)).toEqual({ ppid: 1, command: 'perl -e big' });
    expect(w.get(101)).toEqual({ ppid: 100, command: 'perl -e work' });
    expect(w.program(101)).toBe('perl');
    // The root read first while exiting: the command it was given.
    proc.put(200, { comm: 'perl', ppid: 1, start: 700, state: 'R' });
    fs.writeFileSync(path.join(proc.dir, '200', 'cmdline'), '');
    const x = new ProcessTreeWatcher(200, ['perl', '-e', 'big'], proc.dir);
    x.poll();
    expect(x.get(200)).toEqual({ ppid: 1, command: 'perl -e big' });
    // A kernel thread has no command line ever: named by its comm.
    proc.put(300, { comm: 'kworker/0:1', ppid: 2, start: 800 });
    fs.writeFileSync(path.join(proc.dir, '300', 'cmdline'), '');
    const k = new ProcessTreeWatcher(300, undefined, proc.dir);
    k.poll();
    expect(k.get(300)).toEqual({ ppid: 2, command: '[kworker/0:1]' });
  });

  it('looks at a process that has exited once, however often the sampler lists it', () => {
    // Every 100 ms, the sampler's list (up to 4096 exited threads) was read anew in /proc: 40 %
    // of a core once a build had run a few thousand processes.
    const proc = fakeProc();
    proc.put(100, { comm: 'sh', ppid: 1, start: 400 });
    const w = new ProcessTreeWatcher(100, undefined, proc.dir);
    const listed = [row(100, 'sh', false), row(105, 'cc', true)];
    w.poll(listed); // 105: gone from /proc already
    expect(w.get(105)).toEqual({ ppid: null, command: '[cc]' });
    // Were it read again, this would be taken for it.
    proc.put(105, { comm: 'cc', ppid: 100, start: 990, state: 'Z' });
    w.poll(listed);
    expect(w.get(105)).toEqual({ ppid: null, command: '[cc]' });
  });

  // Out of file descriptors, /proc/PID/stat could not be opened: the process was taken as
  // exited, and its exec and children never seen again.
  it('looks again at a process whose stat could not be read, rather than take it as exited', () => {
    const proc = fakeProc();
    proc.put(100, { comm: 'sh', ppid: 1, start: 400, cmdline: 'sh -c work', children: [101] });
    proc.put(101, { comm: 'sh', ppid: 100, start: 500, cmdline: 'sh -c step' });
    const w = new ProcessTreeWatcher(100, undefined, proc.dir);
    const stat = path.join(proc.dir, '101', 'stat');
    const line = fs.readFileSync(stat, 'utf8');
    fs.rmSync(stat);
    fs.mkdirSync(stat); // reads fail with EISDIR, as they would with EMFILE
    // 102 is first seen while its stat cannot be read either.
    proc.put(102, { comm: 'cc', ppid: 100, start: 600, cmdline: 'cc -c a.c' });
    const stat102 = path.join(proc.dir, '102', 'stat');
    const line102 = fs.readFileSync(stat102, 'utf8');
    fs.rmSync(stat102);
    fs.mkdirSync(stat102);
    proc.put(100, { comm: 'sh', ppid: 1, start: 400, cmdline: 'sh -c work', children: [101, 102] });
    w.poll();
    fs.rmdirSync(stat);
    fs.writeFileSync(stat, line.replace('(sh)', '(make)'));
    fs.writeFileSync(path.join(proc.dir, '101', 'cmdline'), 'make\0all\0');
    fs.rmdirSync(stat102);
    fs.writeFileSync(stat102, line102);
    w.poll();
    expect(w.get(101)).toEqual({ ppid: 100, command: 'make all' });
    expect(w.get(102)).toEqual({ ppid: 100, command: 'cc -c a.c' });
  });

  // A known process whose stat cannot be read is taken as alive for the poll: its children are
  // looked at, so one it started then is the tree's from its first poll, not lost until the next.
  it('walks the children of a known process whose stat could not be read', () => {
    const proc = fakeProc();
    proc.put(100, { comm: 'sh', ppid: 1, start: 400, cmdline: 'sh -c work', children: [101] });
    proc.put(101, { comm: 'make', ppid: 100, start: 500, cmdline: 'make all' });
    const w = new ProcessTreeWatcher(100, undefined, proc.dir);
    proc.put(101, { comm: 'make', ppid: 100, start: 500, cmdline: 'make all', children: [103] });
    proc.put(103, { comm: 'cc', ppid: 101, start: 700, cmdline: 'cc -c b.c' });
    const stat = path.join(proc.dir, '101', 'stat');
    fs.rmSync(stat);
    fs.mkdirSync(stat); // EISDIR, as EMFILE would be
    w.poll();
    expect(w.get(103)).toEqual({ ppid: 101, command: 'cc -c b.c' });
    expect(w.get(101)).toEqual({ ppid: 100, command: 'make all' });
    // One never seen before, unreadable: not taken as the tree's, nor its children.
    proc.put(100, { comm: 'sh', ppid: 1, start: 400, cmdline: 'sh -c work', children: [101, 104] });
    proc.put(104, { comm: 'sh', ppid: 100, start: 800, cmdline: 'sh -c x', children: [105] });
    proc.put(105, { comm: 'cc', ppid: 104, start: 810, cmdline: 'cc -c c.c' });
    fs.rmSync(path.join(proc.dir, '104', 'stat'));
    fs.mkdirSync(path.join(proc.dir, '104', 'stat'));
    w.poll();
    expect(w.get(105)).toBeUndefined();
  });

  it('lists every process of the tree past the threads folded into pid 0, which is no process', () => {
    const proc = fakeProc();
    proc.put(100, { comm: 'sh', ppid: 1, start: 400, cmdline: 'sh -c build' });
    const w = new ProcessTreeWatcher(100, undefined, proc.dir);
    w.poll([row(100, 'sh', false), row(201, 'cc', true), row(202, 'cc', true), row(202, 'cc', true, 203)]);
    // 201 and 202's threads are folded into the pid 0 row at the next look.
    const threads: ThreadEnergy[] = [
      { id: 1, tid: 100, pid: 100, name: 'sh', onCpuNs: 5e6, joules: 0.5, byDomain: {}, unmeasuredNs: 0, unmeasuredByDomain: {}, estimated: false, exited: false },
      { id: 0, tid: 0, pid: 0, name: '(exited threads)', onCpuNs: 9e6, joules: 0.9, byDomain: {}, unmeasuredNs: 2e6, unmeasuredByDomain: { package: 2e6 }, estimated: false, exited: true },
    ];
    w.poll(threads);
    expect(w.folded).toBe(3);
    const table = processTable(threads, w, true);
    expect(table).toEqual([
      { pid: 0, ppid: null, command: '(3 exited threads, folded)', onCpuNs: 9e6, joules: 0.9, unmeasuredNs: 2e6, threads: 1 },
      { pid: 100, ppid: 1, command: 'sh -c build', onCpuNs: 5e6, joules: 0.5, unmeasuredNs: 0, threads: 1 },
      { pid: 201, ppid: null, command: '[cc]', onCpuNs: null, joules: null, unmeasuredNs: null, threads: null },
      { pid: 202, ppid: null, command: '[cc]', onCpuNs: null, joules: null, unmeasuredNs: null, threads: null },
    ]);
    // procfs tracks the command's own process: the others' energy is not in the row.
    expect(processTable(threads, w, false).map((p) => p.pid)).toEqual([0, 100]);
  });
});

describe('cli helpers', () => {
  it('parses intervals with units', () => {
    expect(parseIntervalUs('500us')).toBe(500);
    expect(parseIntervalUs('2ms')).toBe(2000);
    expect(parseIntervalUs('1000')).toBe(1000);
    expect(() => parseIntervalUs('10')).toThrow('from 50us to 1s');
    expect(() => parseIntervalUs('2 h')).toThrow(UsageError);
    // serve's plain numbers are milliseconds; every command rounds to whole microseconds.
    expect(parseIntervalUs('10', 'ms')).toBe(10_000);
    expect(parseIntervalUs('750us', 'ms')).toBe(750);
    expect(parseIntervalUs('0.0505', 'ms')).toBe(51);
    expect(() => parseIntervalUs('2s', 'ms')).toThrow('from 50us to 1s');
  });

  it('collects repeatable options and checks choices', () => {
    const specs = [
      { name: 'pid', type: 'number' as const, repeatable: true },
      { name: 'source', type: 'string' as const },
    ];
    expect(parseArgs(['--pid', '3', '--pid=4', '--source', 'model'], specs)).toEqual({
      options: { source: 'model' },
      lists: { pid: [3, 4] },
      rest: [],
    });
    expect(sourceOption({ source: 'model' })).toBe('model');
    expect(sourceOption({})).toBeUndefined();
    expect(() => sourceOption({ source: 'rapl' })).toThrow('--source must be one of auto, msr, perf, powercap, model, not "rapl"');
    expect(choiceOption({}, 'sort', ['watts', 'name'] as const, 'watts')).toBe('watts');
    expect(() => checkNumber('pid', 0, 1, 10, true)).toThrow('--pid must be an integer from 1 to 10, not 0');
    // Numbers are decimal: what Number() also reads as numbers is refused.
    const top = [{ name: 'top', type: 'number' as const }];
    expect(parseArgs(['--top', '1e2'], top).options.top).toBe(100);
    expect(parseArgs(['--top', '-0.5'], top).options.top).toBe(-0.5);
    for (const text of ['0x10', '0b1', '', ' ', 'Infinity', '1_000']) {
      expect(() => parseArgs(['--top', text], top), text).toThrow(`--top expects a number but received ${JSON.stringify(text)}`);
    }
  });

  // `run --html --json -- true` wrote the report to a file named --json, and printed nothing.
  it('takes no option as the value of one that needs a value, unless given with =', () => {
    const specs = [
      { name: 'html', type: 'string' as const },
      { name: 'json', type: 'flag' as const },
      { name: 'top', type: 'number' as const },
    ];
    expect(() => parseArgs(['--html', '--json'], specs, true)).toThrow(
      new UsageError('--html needs a value, not the option --json (for a value that begins with "-", write --html=--json)'),
    );
    expect(() => parseArgs(['--html', '-q'], specs, true)).toThrow('--html needs a value, not the option -q');
    expect(parseArgs(['--html=--json'], specs, true).options.html).toBe('--json');
    // '-' is a value (a file of that name: no option takes it for stdout), and so is a negative number.
    expect(parseArgs(['--html', '-'], specs, true).options.html).toBe('-');
    expect(parseArgs(['--top', '-3'], specs, true).options.top).toBe(-3);
    const dir = fs.mkdtempSync(path.join(tmp, 'dash-value-'));
    for (const [args, flag] of [
      [['run', '--html', '--json', '--', 'true'], '--html'],
      [['run', '-o', '--csv', 'x.csv', '--', 'true'], '--output'],
      [['run', '--csv', '-q', '--', 'true'], '--csv'],
      [['demo', '--html', '--no-probe'], '--html'],
    ] as const) {
      const r = spawnSync(process.execPath, [BIN, ...args], { cwd: dir, encoding: 'utf8', timeout: 20_000 });
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toContain(`${flag} needs a value, not the option ${args[2]}`);
    }
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('stops option parsing at the command', () => {
    expect(parseArgs(['--json', 'ls', '--json'], [{ name: 'json', type: 'flag' }], true)).toEqual({
      options: { json: true },
      lists: {},
      rest: ['ls', '--json'],
    });
    expect(() => parseArgs(['--nope'], [], true)).toThrow('unknown option --nope');
  });

  // top, probe, demo and serve run no command: what followed '--' was dropped unread, and
  // `top -- --pid 1` watched the whole system, exit 0.
  it("refuses arguments after '--' where no command is run, as a stray argument", () => {
    const json = [{ name: 'json', type: 'flag' as const }];
    expect(() => parseArgs(['--json', '--', '--pid', '1'], json)).toThrow(new UsageError('unexpected argument "--pid"'));
    expect(parseArgs(['--json', '--'], json)).toEqual({ options: { json: true }, lists: {}, rest: [] });
    for (const cmd of ['top', 'probe', 'demo', 'serve']) refused([cmd, '--', '--pid', '1'], 2, `jouletrace ${cmd}: unexpected argument "--pid"`);
  });

  it('maps signals to 128 + N', () => {
    expect(exitStatus(null, 'SIGKILL')).toBe(137);
    for (const n of [34, 40, 49, 50, 63, 64]) expect(exitStatus(null, signalName(n))).toBe(128 + n);
    expect([34, 40, 50, 64, 9].map(signalName)).toEqual(['SIGRTMIN', 'SIGRTMIN+6', 'SIGRTMAX-14', 'SIGRTMAX', 'SIGKILL']);
    expect(exitStatus(null, 'SIGINT')).toBe(130);
    expect(exitStatus(5, null)).toBe(5);
  });
});
