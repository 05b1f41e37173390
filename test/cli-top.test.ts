// `jouletrace top` in a real pseudo-terminal (tmux, 80×24), and off a terminal.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProcessShares, type ProcessTicks } from '../src/cli/process-shares';
import { readCpuTicks } from '../src/cli/proc-stat';
import { displayWidth, fit, padCols } from '../src/cli/format';
import { DomainRates, readAllProcesses, renderBlock, renderFrame, stripEscapes, ThreadRows, type TopDomain, type TopFrame } from '../src/cli/top';
import { childPids } from './fixtures/child-pids';
import { asHardware, countingPowercap, createEmulatedPowercap } from './fixtures/emulated-devices';

const ROOT = path.join(__dirname, '..');
const BIN = path.join(ROOT, 'bin/jouletrace.js');
const SOCKET = `jt-top-test-${process.pid}`;

// A target process whose second thread is named "jt-spinner" and burns CPU.
const SPINNER = `
import ctypes, threading, time
def spin():
    ctypes.CDLL(None).prctl(15, b"jt-spinner", 0, 0, 0)
    x = 0
    while True:
        x += 1
threading.Thread(target=spin, daemon=True).start()
time.sleep(60)
`;

let target: ChildProcess;

function tmux(...args: string[]): string {
  const r = spawnSync('tmux', ['-L', SOCKET, ...args], { encoding: 'utf8', timeout: 5000 });
  if (r.status !== 0) throw new Error(`tmux ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

const screen = (s: string) => tmux('capture-pane', '-p', '-t', s);
const flags = (s: string) => tmux('display-message', '-p', '-t', s, '#{alternate_on} #{cursor_flag}').trim();

async function waitFor(what: () => boolean, ms: number, label: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!what()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${label}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function startTop(session: string): void {
  // After top exits, the shell prints its status and stays so the pane can be inspected.
  const cmd = `${process.execPath} ${BIN} top --pid ${target.pid}; echo TOP-EXITED=$?; sleep 30`;
  tmux('new-session', '-d', '-s', session, '-x', '80', '-y', '24', cmd);
}

beforeAll(async () => {
  target = spawn('python3', ['-c', SPINNER], { stdio: 'ignore' });
  // Wait until the thread has its name.
  await waitFor(() => {
    const r = spawnSync('sh', ['-c', `cat /proc/${target.pid}/task/*/comm`], { encoding: 'utf8' });
    return r.stdout.includes('jt-spinner');
  }, 5000, 'the spinner thread');
});

afterAll(() => {
  spawnSync('tmux', ['-L', SOCKET, 'kill-server']);
  target.kill('SIGKILL');
});

describe('jouletrace top in a terminal', () => {
  it('shows the threads of a process, changes sort on s, and restores the screen on q', async () => {
    const s = 'top-q';
    startTop(s);
    await waitFor(() => screen(s).includes('jt-spinner'), 10_000, 'a frame listing jt-spinner');
    const text = screen(s);
    expect(flags(s)).toBe('1 0'); // alternate screen on, cursor hidden
    expect(text).toContain(`threads of pid ${target.pid}`);
    expect(text).toMatch(/package-0 \d+\.\d+ W/);
    expect(text).toMatch(/sampler \d+ Hz, jitter p99/);
    expect(text).toContain('sort: watts');
    const lines = text.split('\n');
    expect(Math.max(...lines.map((l) => l.length))).toBeLessThanOrEqual(80);
    // The spinner burns all the CPU it gets: it tops the watts sort. Alone it shows ~100 % CPU;
    // with other processes on a 2-vCPU machine (36 % was seen), still a large share.
    const rows = lines.filter((l) => /^\s+\d+\s{2}\S/.test(l));
    expect(rows[0]).toContain('jt-spinner');
    const cpu = Number(rows[0].trim().split(/\s+/)[2]);
    expect(cpu).toBeGreaterThan(20);

    tmux('send-keys', '-t', s, 's');
    await waitFor(() => screen(s).includes('sort: joules'), 3000, 'sort: joules');
    tmux('send-keys', '-t', s, 's', 's');
    await waitFor(() => screen(s).includes('sort: name'), 3000, 'sort: name');
    // Sorted by name, in the order localeCompare gives.
    const named = screen(s).split('\n').filter((l) => /^\s+\d+\s{2}\S/.test(l));
    const names = named.map((l) => l.trim().split(/\s+/)[1]);
    expect(names).toEqual([...names].sort((a, b) => a.localeCompare(b)));

    tmux('send-keys', '-t', s, 'q');
    await waitFor(() => screen(s).includes('TOP-EXITED=0'), 5000, 'top to exit');
    expect(flags(s)).toBe('0 1'); // back on the main screen, cursor shown
    expect(screen(s)).not.toContain('jt-spinner');
  });

  // Left to their default action, SIGQUIT and SIGUSR2 killed top with the terminal in raw mode
  // (no ICANON, no ECHO) and on the alternate screen.
  it.each(['SIGQUIT', 'SIGUSR2', 'SIGHUP'] as const)('restores the terminal on %s, and exits 128 + N', async (signal) => {
    const s = `top-${signal}`;
    const modes = "stty -a | tr ' ;' '\\n\\n' | grep -xE -- '-?(icanon|echo)' | tr '\\n' ' '";
    tmux('new-session', '-d', '-s', s, '-x', '80', '-y', '24', `${process.execPath} ${BIN} top --pid ${target.pid}; echo TOP-EXITED=$?; echo MODES: $(${modes}); sleep 30`);
    await waitFor(() => screen(s).includes('jt-spinner'), 10_000, 'a frame');
    const shell = tmux('display-message', '-p', '-t', s, '#{pane_pid}').trim();
    const top = childPids(Number(shell))[0];
    expect(top, 'the pane shell runs jouletrace top').toBeDefined();
    process.kill(top!, signal);
    await waitFor(() => screen(s).includes('MODES:'), 5000, 'top to exit');
    expect(flags(s)).toBe('0 1');
    expect(screen(s)).toContain(`TOP-EXITED=${128 + os.constants.signals[signal]}`);
    expect(screen(s)).toMatch(/MODES: icanon echo/);
  });

  it('restores the terminal on Ctrl-C', async () => {
    const s = 'top-c';
    startTop(s);
    await waitFor(() => screen(s).includes('jt-spinner'), 10_000, 'a frame');
    tmux('send-keys', '-t', s, 'C-c');
    await waitFor(() => screen(s).includes('TOP-EXITED='), 5000, 'top to exit');
    expect(flags(s)).toBe('0 1');
  });
  // Keys were matched one character at a time, those of escape sequences too: F2 (ESC O Q)
  // quit, F4 (ESC O S) changed the sort.
  it('ignores function and arrow keys', async () => {
    const s = 'top-fkeys';
    startTop(s);
    await waitFor(() => screen(s).includes('jt-spinner'), 10_000, 'a frame');
    tmux('send-keys', '-t', s, 'F2', 'F4', 'Up', 'M-q', 's');
    await waitFor(() => screen(s).includes('TOP-EXITED') || (screen(s).includes('sort: ') && !screen(s).includes('sort: watts')), 5000, 'the sort to change, or top to exit');
    expect(screen(s)).toContain('sort: joules'); // s alone, once
    expect(screen(s)).not.toContain('TOP-EXITED');
    tmux('send-keys', '-t', s, 'q');
    await waitFor(() => screen(s).includes('TOP-EXITED=0'), 5000, 'top to exit');
  });

  // Ctrl-Z is a byte in raw mode, no signal: it did nothing, and top could not be suspended.
  it('suspends on Ctrl-Z with the terminal restored, and takes the screen again on fg', async () => {
    const s = 'top-z';
    // An interactive shell, whose job control stops top and continues it (fg).
    tmux('new-session', '-d', '-s', s, '-x', '80', '-y', '24', 'env PS1="$ " bash --norc --noprofile -i');
    // In a subshell, whose echo waits for top's end: the shell's own list goes on once the job stops.
    tmux('send-keys', '-t', s, `(${process.execPath} ${BIN} top --pid ${target.pid}; echo TOP-EXITED=$?)`, 'Enter');
    await waitFor(() => screen(s).includes('jt-spinner'), 10_000, 'a frame');
    tmux('send-keys', '-t', s, 'C-z');
    await waitFor(() => /Stopped/.test(screen(s)), 5000, 'top to stop');
    expect(flags(s)).toBe('0 1'); // the main screen, the cursor shown
    expect(screen(s)).not.toContain('jt-spinner');
    tmux('send-keys', '-t', s, 'fg', 'Enter');
    await waitFor(() => flags(s) === '1 0' && screen(s).includes('jt-spinner'), 5000, 'top to draw again');
    // Keys work again: raw mode is back (in the shell's cooked mode, q waited for Enter).
    tmux('send-keys', '-t', s, 'q');
    await waitFor(() => screen(s).includes('TOP-EXITED=0'), 5000, 'top to exit');
    expect(flags(s)).toBe('0 1');
  });

  // Rows were cut and padded by their length in UTF-16 units: a name of five CJK characters
  // took ten columns where five were counted, and the row wrapped in a narrow terminal.
  it('fits names of wide characters to the columns they take', async () => {
    const s = 'top-cjk';
    const py = spawn('python3', ['-c', 'import ctypes, time\nctypes.CDLL(None).prctl(15, "日本語スレ".encode(), 0, 0, 0)\nprint("up", flush=True)\ntime.sleep(30)'], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      await new Promise<void>((resolve) => py.stdout!.once('data', () => resolve()));
      tmux('new-session', '-d', '-s', s, '-x', '60', '-y', '24', `${process.execPath} ${BIN} top --pid ${py.pid} --threads procfs; echo TOP-EXITED=$?; sleep 30`);
      await waitFor(() => screen(s).includes('日本語スレ'), 10_000, 'a frame');
      const lines = screen(s).split('\n');
      const row = lines.findIndex((l) => l.includes('日本語スレ'));
      // Whole: the joules at its end, and the next line a row or blank, not its wrapped tail.
      expect(lines[row], screen(s)).toMatch(/^ +\d+ {2}日本語スレ +\d+\.\d +\S+ m?W +\S+ .?J$/);
      expect(lines[row + 1]).not.toMatch(/^\s*\S+ .?J$/);
      tmux('send-keys', '-t', s, 'q');
      await waitFor(() => screen(s).includes('TOP-EXITED=0'), 5000, 'top to exit');
    } finally {
      py.kill('SIGKILL');
    }
  });

  // TERM=dumb took the colour away but kept the full-screen cursor control, which such a
  // terminal shows as text.
  it('prints plain blocks with TERM=dumb', async () => {
    const s = 'top-dumb';
    tmux('new-session', '-d', '-s', s, '-x', '80', '-y', '40', `TERM=dumb ${process.execPath} ${BIN} top --pid ${target.pid} --iterations 2 --delay 0.3; echo TOP-EXITED=$?; sleep 30`);
    await waitFor(() => screen(s).includes('TOP-EXITED='), 10_000, 'top to exit');
    const text = screen(s);
    expect(text).toContain('TOP-EXITED=0');
    // On the terminal's own screen, as written: on the alternate one, they went with it at the end.
    expect(text.match(/^ +\d+ {2}jt-spinner /gm), text).toHaveLength(2);
    expect(text).not.toContain('q quit');
  });
});

describe('jouletrace top off a terminal', () => {
  it('prints plain periodic blocks', () => {
    const r = spawnSync(process.execPath, [BIN, 'top', '--pid', String(target.pid), '--iterations', '2', '--delay', '0.5'], {
      encoding: 'utf8',
      timeout: 15_000,
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/\x1b/);
    const blocks = r.stdout.trim().split('\n\n');
    expect(blocks).toHaveLength(2);
    for (const b of blocks) expect(b).toContain('jt-spinner');
  });

  it('prints one JSON object per refresh with --json, system-wide without --pid', () => {
    const r = spawnSync(process.execPath, [BIN, 'top', '--json', '--iterations', '2', '--delay', '0.5'], { encoding: 'utf8', timeout: 15_000 });
    expect(r.status, r.stderr).toBe(0);
    const frames = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as TopFrame);
    expect(frames).toHaveLength(2);
    expect(frames[1].mode).toBe('processes');
    const spinner = frames[1].rows.find((row) => row.id === target.pid);
    expect(spinner).toBeDefined();
    expect(spinner!.cpu).toBeGreaterThan(20); // as in the terminal test: other processes share 2 vCPUs
    expect(spinner!.watts).toBeGreaterThan(0);
  });

  it('gives each process its share of all CPU time, and the rest to (idle) and (other) rows that add up to the package', () => {
    const before = readCpuTicks();
    const r = spawnSync(process.execPath, [BIN, 'top', '--json', '--iterations', '3', '--delay', '0.5'], { encoding: 'utf8', timeout: 15_000 });
    const after = readCpuTicks();
    expect(r.status, r.stderr).toBe(0);
    const frames = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as TopFrame);
    const packageWatts = (f: TopFrame) => f.domains.filter((d) => d.name.startsWith('package-')).reduce((a, d) => a + d.watts!, 0);
    // The processes get the busy time's share as /proc/stat tells it (read here over a little
    // more than top's refreshes: its start-up is busy time), not the idle time's. Spread over
    // the processes seen, an idle machine's power went to whatever ran (top itself had it all).
    const idleShare = (after.idle - before.idle) / (after.idle - before.idle + after.busy - before.busy);
    const rowsShare = frames.reduce((a, f) => a + f.rows.reduce((b, row) => b + row.watts!, 0), 0) / frames.reduce((a, f) => a + packageWatts(f), 0);
    expect(rowsShare, `processes ${rowsShare} of the package; /proc/stat idle ${idleShare}`).toBeLessThan(1 - idleShare + 0.2);
    let pkg = 0;
    let idle = 0;
    for (const f of frames) {
      const watts = packageWatts(f);
      const rows = f.rows.reduce((a, row) => a + row.watts!, 0);
      expect(f.rest, JSON.stringify(f)).not.toBeNull();
      expect(rows + f.rest!.idle.watts! + f.rest!.other.watts!).toBeCloseTo(watts, 6);
      for (const x of [f.rest!.idle, f.rest!.other]) expect(x.watts).toBeGreaterThanOrEqual(0);
      pkg += watts;
      idle += f.rest!.idle.watts!;
    }
    expect(Math.abs(idle / pkg - idleShare), `idle ${idle / pkg} vs /proc/stat ${idleShare}`).toBeLessThan(0.2);
    // Plain text: the two rows, first.
    const text = spawnSync(process.execPath, [BIN, 'top', '--iterations', '1', '--delay', '0.3'], { encoding: 'utf8', timeout: 15_000 });
    const lines = text.stdout.split('\n');
    const header = lines.findIndex((l) => l.includes('PID  NAME'));
    expect(lines[header + 1], text.stdout).toMatch(/^ {7}- {2}\(idle\) +\d+\.\d +[\d.]+ m?W /);
    expect(lines[header + 2], text.stdout).toMatch(/^ {7}- {2}\(other: exited, irq\) +\d+\.\d +[\d.]+ .?W /);
  });

  it('ends when its process exits, also as a zombie its parent does not reap; refuses one already exited', async () => {
    // The background sleep's parent execs another sleep, which never waits for it.
    const parent = spawn('sh', ['-c', 'sleep 1.5 & echo $!; exec sleep 20'], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const zombie = await new Promise<number>((resolve) => parent.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))));
      expect(zombie).toBeGreaterThan(0);
      // Ended by the zombie, not by its parent's exit at 20 s, which would reap it: a top that
      // waited for that is killed at the timeout (status null, SIGTERM).
      const r = spawnSync(process.execPath, [BIN, 'top', '--pid', String(zombie), '--json', '--delay', '0.2'], { encoding: 'utf8', timeout: 15_000 });
      expect(r.status, `${r.signal} ${r.stderr}`).toBe(0);
      // After a note, on measured counters, that no baseline was given.
      expect(r.stderr.endsWith(`jouletrace top: process ${zombie} exited\n`), r.stderr).toBe(true);
      expect(fs.readFileSync(`/proc/${zombie}/stat`, 'utf8')).toMatch(/^\d+ \(sleep\) Z /); // still there
      const late = spawnSync(process.execPath, [BIN, 'top', '--pid', String(zombie), '--json', '--delay', '0.2'], { encoding: 'utf8', timeout: 8000 });
      expect(late.status, `${late.signal} ${late.stderr}`).toBe(1);
      expect(late.stderr).toBe(`jouletrace top: process ${zombie} has exited (its parent has not reaped it yet)\n`);
    } finally {
      parent.kill('SIGKILL');
    }
  });

  // The procfs backend holds 2 file descriptors a thread: with 60 threads and 64 descriptors,
  // /proc/PID/stat could not be opened, and top ended as if the process had exited.
  it('goes on with a live process whose /proc it cannot read for want of file descriptors', async () => {
    const code = 'import threading, time\nev = threading.Event()\nfor i in range(60): threading.Thread(target=ev.wait, daemon=True).start()\nprint("up", flush=True)\ntime.sleep(60)\n';
    const py = spawn('python3', ['-c', code], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      await new Promise<void>((resolve) => py.stdout!.once('data', () => resolve()));
      const args = [BIN, 'top', '--pid', String(py.pid), '--threads', 'procfs', '--source', 'model', '--json', '--delay', '0.2', '--iterations', '5'];
      const r = spawnSync('bash', ['-c', 'ulimit -n 64 && exec "$0" "$@"', process.execPath, ...args], { encoding: 'utf8', timeout: 15_000 });
      expect(r.stderr).not.toContain('exited');
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout.trim().split('\n')).toHaveLength(5);
    } finally {
      py.kill('SIGKILL');
    }
  });

  // A start() that failed escaped to bin/jouletrace.js: "jouletrace: start(): ...", the sampler
  // left open.
  it('says in its own name that the sampler could not start, and closes it', () => {
    // The package counter, the one spans are charged from: start() goes on without another.
    const { e, writer } = countingPowercap();
    try {
      const r = spawnSync(
        process.execPath,
        ['-r', path.join(__dirname, 'fixtures', 'failing-start.cjs'), BIN, 'top', '--json', '--iterations', '1', '--delay', '0.3', '--source', 'powercap', '--powercap-root', e.powercapRoot],
        {
          encoding: 'utf8',
          timeout: 15_000,
          env: { ...process.env, JOULETRACE_TEST_CUT_ON_START: path.join(e.zonePath('intel-rapl:0'), 'energy_uj'), JOULETRACE_TEST_HOLD_PID: String(writer.pid) },
        },
      );
      expect(r.status, r.stderr).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/^jouletrace top: start\(\): the first read of the 'powercap' source failed for package-0 \([^\n]+\nfailing-start: 0 sampler\(s\) left open\n$/);
    } finally {
      writer.kill('SIGKILL');
      e.close();
    }
  });

  // Counters that stopped moving showed as a measured 0 W, frame after frame, with no word of it.
  // Without a package domain (left out as not counting) the rows were shared out of the first
  // domain listed, one package's dram, where attribution and the report take psys.
  it('shares out psys where there is no package domain, not the first domain listed', () => {
    const e = createEmulatedPowercap([
      { name: 'package-0', energyUj: 5_000_000, children: [{ name: 'dram', energyUj: 1000 }] },
      { name: 'psys', energyUj: 1000 },
    ]);
    // dram 2 W and psys 40 W (µJ a millisecond); package-0 stands still.
    const writer = spawn(
      ...asHardware([
        process.execPath,
        '-e',
        `const fs=require('fs');const [a,b]=process.argv.slice(1).map((f)=>fs.openSync(f,'r+'));let d=1000,p=1000;setInterval(()=>{d+=2000;p+=40000;fs.writeSync(a,d+'\\n',0);fs.writeSync(b,p+'\\n',0)},1)`,
        path.join(e.zonePath('intel-rapl:0:0'), 'energy_uj'),
        path.join(e.zonePath('intel-rapl:1'), 'energy_uj'),
      ]),
      { stdio: 'ignore' },
    );
    try {
      const r = spawnSync(process.execPath, [BIN, 'top', '--json', '--iterations', '3', '--delay', '0.5', '--source', 'powercap', '--powercap-root', e.powercapRoot], {
        encoding: 'utf8',
        timeout: 15_000,
      });
      expect(r.status, r.stderr).toBe(0);
      const frames = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as TopFrame);
      expect(frames[0].domains.map((d) => d.name)).toEqual(['dram-0', 'psys-0']);
      for (const f of frames.slice(1)) {
        const psys = f.domains.find((d) => d.name === 'psys-0')!.watts;
        const dram = f.domains.find((d) => d.name === 'dram-0')!.watts;
        expect(psys, JSON.stringify(f.domains)).toBeGreaterThan(5 * dram!);
        const rows = f.rows.reduce((a, row) => a + row.watts!, 0);
        expect(rows + f.rest!.idle.watts! + f.rest!.other.watts!, JSON.stringify(f.domains)).toBeCloseTo(psys!, 6);
      }
    } finally {
      writer.kill('SIGKILL');
      e.close();
    }
  });

  it('flags the frames in which the counters stood still for a second or more', () => {
    const { e, writer } = countingPowercap();
    try {
      const top = (env: Record<string, string>, ...args: string[]) =>
        spawnSync(
          process.execPath,
          ['-r', path.join(__dirname, 'fixtures', 'failing-start.cjs'), BIN, 'top', '--iterations', '2', '--delay', '1.5', '--source', 'powercap', '--powercap-root', e.powercapRoot, ...args],
          { encoding: 'utf8', timeout: 15_000, env: { ...process.env, NO_COLOR: '1', ...env } },
        );
      const moving = top({}, '--json');
      expect(moving.status, moving.stderr).toBe(0);
      for (const f of moving.stdout.trim().split('\n').map((l) => JSON.parse(l) as TopFrame)) expect(f.countersStillS).toBeNull();
      // The writer stopped as the sampler starts: every frame's counters stand still.
      const hold = { JOULETRACE_TEST_HOLD_PID: String(writer.pid) };
      const json = top(hold, '--json');
      expect(json.status, json.stderr).toBe(0);
      const frames = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as TopFrame);
      expect(frames).toHaveLength(2);
      expect(frames[0].countersStillS).toBeGreaterThanOrEqual(1);
      expect(frames[1].countersStillS).toBeGreaterThan(frames[0].countersStillS!);
      process.kill(writer.pid!, 'SIGCONT');
      const plain = top(hold);
      expect(plain.status, plain.stderr).toBe(0);
      expect(plain.stdout.match(/^powercap's counters stood still for \d+\.\d s: these watts miss the power drawn$/gm)).toHaveLength(2);
    } finally {
      writer.kill('SIGKILL');
      e.close();
    }
  });

  // A domain whose reads failed stood still: its line read 0.00 W, and so did the process and
  // every row, with nothing said; the refresh after its first good read carried the whole gap.
  it('gives no figure for a refresh whose reads failed, says so, and averages the energy the next good read brings', async () => {
    const { e, writer } = countingPowercap();
    const file = path.join(e.zonePath('intel-rapl:0'), 'energy_uj');
    // The writer is stopped as the sampler starts: the counter moves only as the test writes it.
    const top = spawn(
      process.execPath,
      ['-r', path.join(__dirname, 'fixtures', 'failing-start.cjs'), BIN, 'top', '--pid', String(target.pid), '--json', '--delay', '0.25', '--iterations', '60', '--source', 'powercap', '--powercap-root', e.powercapRoot],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, JOULETRACE_TEST_HOLD_PID: String(writer.pid) } },
    );
    const frames: TopFrame[] = [];
    let buf = '';
    top.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const l of lines) frames.push(JSON.parse(l) as TopFrame);
    });
    const pkg = (f: TopFrame) => f.domains.find((d) => d.name === 'package-0')!;
    try {
      await waitFor(() => frames.length >= 1, 10_000, 'a first frame');
      const held = Number(fs.readFileSync(file, 'utf8'));
      // A frame measured wholly after the writer stopped: the reference the gap is measured from.
      const before = frames.length + 1;
      await waitFor(() => frames.length >= before, 5000, 'a frame with the counter still');
      fs.writeFileSync(file, 'junk\n');
      await waitFor(() => frames.filter((f) => pkg(f).readErrors > 0).length >= 2, 5000, 'two frames with failed reads');
      // The stretch's energy, 3 J, comes with the first good read.
      fs.writeFileSync(file, `${held + 3_000_000}\n`);
      await waitFor(() => frames.length > before && pkg(frames[frames.length - 1]).readErrors === 0, 5000, 'a frame with good reads');
      const failing = frames.slice(before).filter((f) => pkg(f).readErrors > 0);
      for (const f of failing) {
        expect(pkg(f), JSON.stringify(f)).toMatchObject({ watts: null, averagedS: null, lost: false });
        expect(f.readErrors).toBe(pkg(f).readErrors);
        expect(f.samples).toBeGreaterThanOrEqual(f.readErrors);
        expect(f.tracked).toMatchObject({ watts: null, baselineWatts: null, otherWatts: null });
        for (const r of f.rows) expect(r.watts).toBeNull();
        expect(f.exited!.watts).toBeNull();
      }
      const good = frames[frames.length - 1];
      const p = pkg(good);
      // Over the stretch and this refresh: the 3 J, spread evenly, not 0 W then a spike.
      expect(p.averagedS, JSON.stringify(good)).toBeGreaterThan(0.5);
      expect(p.watts! * p.averagedS!).toBeCloseTo(3, 6);
      expect(good.rowsAveragedS).toBeGreaterThan(0.5);
      const t = good.tracked!;
      expect((t.watts! + t.baselineWatts! + t.otherWatts!) * good.rowsAveragedS!).toBeCloseTo(3, 6);
      const rows = good.rows.reduce((a, r) => a + r.watts!, 0) + good.exited!.watts!;
      expect(Math.abs(rows - t.watts!)).toBeLessThan(0.05 * t.watts! + 0.01);
    } finally {
      top.kill('SIGKILL');
      writer.kill('SIGKILL');
      e.close();
    }
  });

  it('charges idle power to the baseline given or measured, and notes on measured counters that there is none', () => {
    const { e, writer } = countingPowercap();
    try {
      const top = (...args: string[]) => {
        const r = spawnSync(
          process.execPath,
          [BIN, 'top', '--pid', String(target.pid), '--json', '--iterations', '1', '--delay', '0.3', '--source', 'powercap', '--powercap-root', e.powercapRoot, ...args],
          { encoding: 'utf8', timeout: 15_000 },
        );
        expect(r.status, r.stderr).toBe(0);
        return { stderr: r.stderr, frame: JSON.parse(r.stdout) as TopFrame };
      };
      const none = top();
      expect(none.stderr).toContain('jouletrace top: note: no baseline: idle power is shared out by CPU time, so the process is charged part of it; --calibrate S');
      expect(none.frame.tracked!.baselineWatts).toBe(0);
      const given = top('--baseline', '0.2');
      expect(given.stderr).toBe('');
      expect(given.frame.tracked!.baselineWatts).toBeGreaterThan(0);
      const measured = top('--calibrate', '0.3');
      expect(measured.stderr).toBe('jouletrace top: measuring idle power for 0.3 s: keep the machine quiet\n');
      expect(measured.frame.tracked!.baselineWatts).toBeGreaterThan(0);
    } finally {
      writer.kill();
      e.close();
    }
  });

  it('ends quietly with status 0 when its reader goes away (top --json | head -1)', () => {
    const r = spawnSync('bash', ['-c', `"${process.execPath}" "${BIN}" top --json --delay 0.2 | head -1; echo "top=\${PIPESTATUS[0]}" >&2`], {
      encoding: 'utf8',
      timeout: 15_000,
    });
    expect(JSON.parse(r.stdout).mode).toBe('processes');
    expect(r.stderr.trim()).toBe('top=0');
  });

  // Its last frame's write fails only after top has finished: that error was left to Node,
  // which printed a stack trace.
  it('reports a last frame it could not write in one line, and ends quietly when its reader left after it', () => {
    const full = spawnSync(process.execPath, [BIN, 'top', '--json', '--iterations', '1', '--delay', '0.2'], {
      encoding: 'utf8',
      timeout: 15_000,
      stdio: ['ignore', fs.openSync('/dev/full', 'w'), 'pipe'],
    });
    expect(full.status).toBe(1);
    expect(full.stderr.trim()).toBe('jouletrace top: cannot write: ENOSPC: no space left on device, write');
    const gone = spawnSync('bash', ['-c', `"${process.execPath}" "${BIN}" top --json --iterations 1 --delay 0.2 | true; echo "top=\${PIPESTATUS[0]}" >&2`], {
      encoding: 'utf8',
      timeout: 15_000,
    });
    expect(gone.stderr.trim()).toBe('top=0');
  });

  it('does not count a process that renames itself as having run its whole life again', async () => {
    // 1 s of CPU, then idle, renaming itself (its comm, as kernel workers do) every 50 ms.
    const code = `
import ctypes, time
libc = ctypes.CDLL(None)
end = time.process_time() + 1.0
while time.process_time() < end: pass
print('ready', flush=True)
i = 0
while True:
    i += 1
    libc.prctl(15, ('renamer-%d' % i).encode(), 0, 0, 0)
    time.sleep(0.05)
`;
    const renamer = spawn('python3', ['-c', code], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      await new Promise<void>((resolve) => renamer.stdout!.once('data', () => resolve()));
      const r = spawnSync(process.execPath, [BIN, 'top', '--json', '--iterations', '3', '--delay', '0.3'], { encoding: 'utf8', timeout: 15_000 });
      expect(r.status, r.stderr).toBe(0);
      for (const frame of r.stdout.trim().split('\n').map((l) => JSON.parse(l) as TopFrame)) {
        const row = frame.rows.find((x) => x.id === renamer.pid);
        // Idle: a few ticks at most. Counted from its start, 1 s in 0.3 s would read over 300 %.
        expect(row?.cpu ?? 0).toBeLessThan(50);
      }
    } finally {
      renamer.kill();
    }
  });

  // Threads that exited had no row: for a process whose work runs in short-lived threads, the rows
  // held 1.05 W of the process's 5.48 W.
  it('gives the threads that exited with --pid a row of their own, so that the rows add up to the process', () => {
    // Every 250 ms a worker thread spins 150 ms and exits; the main thread stays idle.
    const script = "const { Worker } = require('worker_threads'); setInterval(() => new Worker('const t = Date.now(); while (Date.now() - t < 150);', { eval: true }), 250); setTimeout(() => process.exit(0), 30000);";
    const workers = spawn(process.execPath, ['-e', script], { stdio: 'ignore' });
    try {
      const r = spawnSync(process.execPath, [BIN, 'top', '--pid', String(workers.pid), '--json', '--iterations', '3', '--delay', '0.6'], { encoding: 'utf8', timeout: 20_000 });
      expect(r.status, r.stderr).toBe(0);
      const frames = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as TopFrame);
      expect(frames).toHaveLength(3);
      const last = frames[2];
      expect(last.exited!.joules).toBeGreaterThan(0);
      for (const f of frames) {
        const sum = f.rows.reduce((a, x) => a + x.watts!, 0) + f.exited!.watts!;
        // Read apart (attribution, then the threads): a sample may fall between the two.
        expect(Math.abs(sum - f.tracked!.watts!), JSON.stringify(f)).toBeLessThan(0.05 * f.tracked!.watts! + 0.01);
      }
    } finally {
      workers.kill('SIGKILL');
    }
  });

  // Past the thread slots, threads went untracked and their power into "other", unsaid.
  it('says with --pid how many threads went untracked, the thread slots full', async () => {
    const six = spawn('python3', ['-c', 'import threading, time\nfor _ in range(5): threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\ntime.sleep(30)'], { stdio: 'ignore' });
    try {
      await waitFor(() => fs.readdirSync(`/proc/${six.pid}/task`).length === 6, 5000, 'six threads');
      const args = ['top', '--pid', String(six.pid), '--threads', 'procfs', '--max-threads', '2', '--iterations', '1', '--delay', '0.2'];
      const json = spawnSync(process.execPath, [BIN, ...args, '--json'], { encoding: 'utf8', timeout: 15_000 });
      expect(json.status, json.stderr).toBe(0);
      expect((JSON.parse(json.stdout) as TopFrame).tracked!.droppedThreads).toBe(4);
      const plain = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 15_000 });
      expect(plain.status, plain.stderr).toBe(0);
      expect(plain.stdout).toContain('4 threads untracked, slots full: their power is in "other" (--max-threads N)');
      // Both threads tracked still listed under it.
      expect(plain.stdout.split('\n').filter((l) => /^\s+\d+\s{2}python3/.test(l))).toHaveLength(2);
    } finally {
      six.kill('SIGKILL');
    }
  });

  // A process that exited while --calibrate measured ended top with the calibration's error
  // ("the sampler was stopped ... keep it running") and status 1.
  it('says that its process exited, status 0, when it exits during --calibrate', () => {
    const sleeper = spawn('sleep', ['1'], { stdio: 'ignore' });
    try {
      const r = spawnSync(process.execPath, [BIN, 'top', '--pid', String(sleeper.pid), '--calibrate', '20', '--source', 'model', '--json'], { encoding: 'utf8', timeout: 15_000 });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toBe(`jouletrace top: measuring idle power for 20 s: keep the machine quiet\njouletrace top: process ${sleeper.pid} exited\n`);
      expect(r.stdout).toBe('');
    } finally {
      sleeper.kill('SIGKILL');
    }
  });

  // Off a terminal a block showed 16 rows at most, and nothing said the others were left out.
  it('lists every row in a plain block', async () => {
    const code = 'import threading, time\nev = threading.Event()\nfor i in range(24): threading.Thread(target=ev.wait, daemon=True).start()\nprint("up", flush=True)\ntime.sleep(30)\n';
    const py = spawn('python3', ['-c', code], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      await new Promise<void>((resolve) => py.stdout!.once('data', () => resolve()));
      const r = spawnSync(process.execPath, [BIN, 'top', '--pid', String(py.pid), '--threads', 'procfs', '--source', 'model', '--iterations', '1', '--delay', '0.2'], { encoding: 'utf8', timeout: 15_000 });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout.split('\n').filter((l) => /^\s+\d+\s{2}python3/.test(l))).toHaveLength(25);
    } finally {
      py.kill('SIGKILL');
    }
  });

  // The figures of --pid move at attribution steps (procfs: every 5 samples), and were divided by
  // the time between the samples read: the model's constant 12 W baseline read 11.36-12.60 W.
  it('gives --pid rates over the time between the attribution steps they are as of', () => {
    const r = spawnSync(process.execPath, [BIN, 'top', '--pid', String(target.pid), '--threads', 'procfs', '--source', 'model', '--json', '--iterations', '10', '--delay', '0.2'], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(r.status, r.stderr).toBe(0);
    const frames = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as TopFrame);
    expect(frames).toHaveLength(10);
    // A refresh with no step (a sampler starved of CPU) has no figure, and says so.
    for (const f of frames) expect(f.tracked!.baselineWatts === null, JSON.stringify(f)).toBe(f.noAttributionStep);
    const baseline = frames.map((f) => f.tracked!.baselineWatts).filter((b) => b !== null);
    expect(baseline.length).toBeGreaterThanOrEqual(5);
    // The model's baseline is a constant: each frame's, over its own steps' time, that constant.
    // (The baseline is also capped at the energy measured, and owed what it went short: a frame
    // may read a little off, never most of them.)
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
    const m = median(baseline);
    expect(median(baseline.map((b) => Math.abs(b - m))), baseline.join(' ')).toBeLessThan(0.01);
  });

  it('rejects a missing process and bad options', () => {
    expect(spawnSync(process.execPath, [BIN, 'top', '--pid', '4194000'], { encoding: 'utf8' }).status).toBe(1);
    expect(spawnSync(process.execPath, [BIN, 'top', '--sort', 'size'], { encoding: 'utf8' }).status).toBe(2);
    // A thread's id: the error says which flag to give, not the library's option.
    const worker = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)']);
    try {
      // Any thread but the main one (V8's and libuv's start with the process).
      let tid: string | undefined;
      for (let i = 0; i < 100 && tid === undefined; i++) {
        spawnSync('sleep', ['0.05']);
        tid = fs.readdirSync(`/proc/${worker.pid}/task`).find((t) => t !== String(worker.pid));
      }
      const r = spawnSync(process.execPath, [BIN, 'top', '--pid', tid!, '--threads', 'procfs'], { encoding: 'utf8', timeout: 15_000 });
      expect(r.status).toBe(1);
      expect(r.stderr).toContain(`pid ${tid} is a thread of process ${worker.pid}; --pid takes a process id: pass --pid ${worker.pid}\n`);
      // Named once: the library's own "jouletrace: " prefix doubled it.
      expect(r.stderr).toMatch(/^jouletrace top: /);
      expect(r.stderr).not.toContain('jouletrace: ');
    } finally {
      worker.kill();
    }
  });
});

const domain = (name: string, watts: number | null, more: Partial<TopDomain> = {}): TopDomain => ({ name, watts, readErrors: 0, averagedS: null, lost: false, ...more });
// A --pid frame of one package domain at 12 W, every figure known: tests set what they are about.
const threadsFrame = (more: Partial<TopFrame>): TopFrame => ({
  time: '2025-01-01T12:00:00.000Z',
  mode: 'threads',
  pid: 1,
  source: 'model',
  estimated: true,
  sort: 'watts',
  domains: [domain('package-0', 12)],
  samples: 500,
  readErrors: 0,
  tracked: { watts: 3, baselineWatts: 5, otherWatts: 4, droppedThreads: 0 },
  rowsAveragedS: null,
  noAttributionStep: false,
  sampler: { rateHz: 500, jitterP99Us: 80, dropped: 0, late: 0, cpuPercent: 1, backend: 'bpf' },
  countersStillS: null,
  rows: [],
  rest: null,
  exited: null,
  ...more,
});

describe('renderFrame', () => {
  const frame: TopFrame = {
    time: '2025-01-01T12:00:00.000Z',
    mode: 'threads',
    pid: 1,
    source: 'model',
    estimated: true,
    sort: 'watts',
    domains: [domain('package-0', 12.5), domain('dram-0', 1.25)],
    samples: 500,
    readErrors: 0,
    tracked: { watts: 3, baselineWatts: 5, otherWatts: 4.5, droppedThreads: 0 },
    rowsAveragedS: null,
    noAttributionStep: false,
    sampler: { rateHz: 1000, jitterP99Us: 80, dropped: 0, late: 1, cpuPercent: 1.5, backend: 'bpf' },
    countersStillS: null,
    rows: Array.from({ length: 40 }, (_, i) => ({ id: i + 1, name: `thread-with-a-long-name-${i}`, cpu: i, watts: i / 10, joules: i })),
    rest: null,
    exited: { cpu: 15, watts: 0.4, joules: 2 },
  };
  const dropping = (n: number): TopFrame => ({ ...frame, tracked: { ...frame.tracked!, droppedThreads: n } });

  it('never draws wider than the terminal', () => {
    for (const f of [frame, dropping(1905)]) {
      for (const width of [40, 60, 80, 132]) {
        const lines = renderFrame(f, width, 24, false);
        expect(lines).toHaveLength(24);
        for (const l of lines) expect(l.length).toBeLessThanOrEqual(width);
      }
    }
  });

  // Before the sampler's first sample its rate, jitter and CPU are unknown (null), not 0.
  it("shows '-' for the sampler figures not known yet", () => {
    const early: TopFrame = { ...frame, sampler: { ...frame.sampler, rateHz: null, jitterP99Us: null, cpuPercent: null } };
    expect(renderFrame(early, 132, 24, false)).toContain('sampler - Hz, jitter p99 - µs, 0 dropped, 1 period skipped, - % CPU, bpf');
    expect(renderFrame(frame, 132, 24, false)).toContain('sampler 1000 Hz, jitter p99 80 µs, 0 dropped, 1 period skipped, 1.5 % CPU, bpf');
  });

  // Past the thread slots, threads went untracked and their power into "other" with no word of it.
  it('says how many threads went untracked, their power in other', () => {
    expect(renderFrame(dropping(1905), 80, 24, false)).toContain('1905 threads untracked, slots full: their power is in "other" (--max-threads N)');
    expect(renderFrame(frame, 80, 24, false).join('\n')).not.toContain('untracked');
  });

  // Counters that stopped moving showed as a measured 0 W with no word of it.
  it('says when the counters stood still', () => {
    const still: TopFrame = { ...frame, source: 'powercap', estimated: false, countersStillS: 1.44 };
    for (const width of [40, 80]) for (const l of renderFrame(still, width, 24, false)) expect(l.length).toBeLessThanOrEqual(width);
    expect(renderFrame(still, 100, 24, false)).toContain("powercap's counters stood still for 1.4 s: these watts miss the power drawn");
    expect(renderFrame(frame, 100, 24, false).join('\n')).not.toContain('stood still');
  });

  // The clock was UTC's (the ISO time's); top(1) shows local time.
  it('shows the local time', () => {
    const tz = process.env.TZ;
    try {
      process.env.TZ = 'Asia/Kolkata'; // UTC+5:30, no daylight saving
      expect(renderFrame(frame, 80, 24, false)[0]).toMatch(/ 17:30:00$/);
    } finally {
      if (tz === undefined) delete process.env.TZ;
      else process.env.TZ = tz;
    }
  });

  it('shows the (exited threads) row first, whatever the sort', () => {
    const lines = renderFrame(frame, 80, 24, false);
    const header = lines.findIndex((l) => l.includes('TID  NAME'));
    expect(lines[header + 1]).toMatch(/^ {7}- {2}\(exited threads\) +15\.0 +0\.40 W +2\.000 J$/);
    expect(lines[header + 2]).toMatch(/^ {7}1 {2}thread-with-a-long-name-0 /);
  });
});

// A thread that exited within a refresh never showed its last energy, and one that started and
// ended within it never showed at all: the rows did not add up to the process (5.48 W against
// 1.05 W for a process whose work runs in short-lived threads).
describe('ThreadRows', () => {
  const t = (id: number, joules: number, exited = false) => ({ id, tid: id === 0 ? 0 : 1000 + id, name: id === 0 ? '(exited threads)' : `w${id}`, onCpuNs: joules * 1e8, joules, exited });
  const at = (s: number, threads: Array<ReturnType<typeof t>>) => ({ timeNs: BigInt(Math.round(s * 1e9)), threads });

  it('gives the threads that exited their energy since the last refresh, in one row', () => {
    const r = new ThreadRows({ timeNs: 0n });
    r.step(at(1, [t(1, 1), t(2, 2)]), 'measured');
    // 2 exited after the last refresh; 3 started and ended within this one.
    const s = r.step(at(2, [t(1, 1.5), t(2, 2.4, true), t(3, 0.7, true)]), 'measured');
    expect(s.rows.map((x) => [x.id, x.watts])).toEqual([[1001, 0.5]]);
    expect(s.exited.watts).toBeCloseTo(1.1, 9);
    expect(s.exited.cpu).toBeCloseTo(11, 6);
    // With the rows, the whole increase of the process: 5.6 - 4.
    expect(s.rows[0].watts! + s.exited.watts!).toBeCloseTo(1.6, 9);
    // Listed again, unchanged: nothing more.
    expect(r.step(at(3, [t(1, 1.5), t(2, 2.4, true), t(3, 0.7, true)]), 'measured').exited).toEqual({ cpu: 0, watts: 0, joules: expect.closeTo(1.1, 9) as number });
  });

  it('counts once the threads folded into the (exited threads) row', () => {
    const r = new ThreadRows({ timeNs: 0n });
    r.step(at(1, [t(1, 1), t(2, 2.4, true), t(3, 0.7, true)]), 'measured');
    // 2 and 3 folded into row 0, with 4, which came and went between the two refreshes.
    const s = r.step(at(3, [t(1, 2), t(0, 2.4 + 0.7 + 0.3, true)]), 'measured');
    expect(s.exited.watts).toBeCloseTo(0.3 / 2, 9);
    expect(s.exited.joules).toBeCloseTo(3.1 + 0.3, 9);
    const u = r.step(at(4, [t(1, 2), t(0, 3.4 + 0.2, true)]), 'measured');
    expect(u.exited.watts).toBeCloseTo(0.2, 9);
  });
});

describe('renderFrame, system-wide', () => {
  const frame: TopFrame = {
    time: '2025-01-01T12:00:00.000Z',
    mode: 'processes',
    pid: null,
    source: 'model',
    estimated: true,
    sort: 'watts',
    domains: [domain('package-0', 12)],
    samples: 500,
    readErrors: 0,
    tracked: null,
    rowsAveragedS: null,
    noAttributionStep: false,
    sampler: { rateHz: 500, jitterP99Us: 80, dropped: 0, late: 0, cpuPercent: 1, backend: 'off' },
    countersStillS: null,
    rows: [
      { id: 42, name: 'evil\x1b[2J\x1b]0;x\x07', cpu: 2, watts: 0.12, joules: 1 },
      { id: 43, name: 'c1\x9bm\x7f', cpu: 1, watts: 0.06, joules: 0.5 },
    ],
    rest: { idle: { cpu: 197, watts: 11.82, joules: 100 }, other: { cpu: 0, watts: 0, joules: 0 } },
    exited: null,
  };

  it('shows the (idle) and (other) rows first, and names with control characters as ?', () => {
    const lines = renderFrame(frame, 80, 24, false);
    const header = lines.findIndex((l) => l.includes('PID  NAME'));
    expect(lines[header + 1]).toMatch(/^ {7}- {2}\(idle\) +197\.0 +11\.82 W/);
    expect(lines[header + 2]).toMatch(/^ {7}- {2}\(other: exited, irq\) +0\.0 +0\.00 W/);
    expect(lines[header + 3]).toMatch(/^ {6}42 {2}evil\?\[2J\?\]0;x\? /);
    expect(lines[header + 4]).toMatch(/^ {6}43 {2}c1\?m\? /);
    for (const l of lines) expect(l).not.toMatch(/[\x00-\x1f\x7f-\x9f]/);
  });
});

describe('readAllProcesses', () => {
  // A process whose stat could not be read at one refresh (EMFILE, ENOMEM; here EISDIR) was left
  // out, and came back at the next as a new process, its whole life's CPU time in one refresh.
  it('keeps the last figures of a process whose stat cannot be read, and drops one that is gone', () => {
    const proc = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-proc-'));
    try {
      const put = (pid: number, ticks: number) => {
        fs.mkdirSync(path.join(proc, String(pid)), { recursive: true });
        fs.writeFileSync(path.join(proc, String(pid), 'stat'), `${pid} (w ${pid}) S 1 1 1 0 -1 0 0 0 0 0 ${ticks} 0 0 0 20 0 1 0 ${pid * 10} 0\n`);
      };
      put(100, 50);
      put(200, 70);
      const first = readAllProcesses(undefined, proc);
      expect(first.get(100)).toEqual({ name: 'w 100', ticks: 50, start: 1000 });
      fs.rmSync(path.join(proc, '100', 'stat'));
      fs.mkdirSync(path.join(proc, '100', 'stat'));
      fs.rmSync(path.join(proc, '200'), { recursive: true });
      const second = readAllProcesses(first, proc);
      expect([...second]).toEqual([[100, { name: 'w 100', ticks: 50, start: 1000 }]]);
    } finally {
      fs.rmSync(proc, { recursive: true, force: true });
    }
  });
});

describe('ProcessShares', () => {
  const procs = (...list: Array<[number, string, number, number]>) => new Map<number, ProcessTicks>(list.map(([pid, name, ticks, start]) => [pid, { name, ticks, start }]));

  it("leaves an idle machine's power with (idle), not with the one process that ran", () => {
    // 2 CPUs for 1 s (200 ticks): top itself ran 1 tick, the rest was idle.
    const s = new ProcessShares(procs([10, 'top', 50, 7]), { busy: 1000, idle: 5000 });
    const r = s.step(procs([10, 'top', 51, 7]), { busy: 1001, idle: 5199 }, { watts: 12, dt: 1 });
    expect(r.processes).toEqual([{ pid: 10, name: 'top', ticks: 1, watts: 0.06, joules: 0.06 }]);
    expect(r.idle.watts).toBeCloseTo(11.94, 10);
    expect(r.other.watts).toBe(0);
  });

  it('gives busy time no process accounts for (one that ended) to (other); all adds up to the package', () => {
    const s = new ProcessShares(procs([10, 'a', 0, 1], [11, 'gone', 0, 1]), { busy: 0, idle: 0 });
    // 100 busy ticks, 100 idle: 'a' ran 60 of them, 'gone' the other 40 and ended before the read.
    const r = s.step(procs([10, 'a', 60, 1]), { busy: 100, idle: 100 }, { watts: 10, dt: 2 });
    expect(r.processes.map((p) => [p.pid, p.watts, p.joules])).toEqual([[10, 3, 6]]);
    expect([r.idle.watts, r.other.watts, r.other.joules]).toEqual([5, 2, 4]);
  });

  it('never gives the processes more than the whole when their ticks exceed the busy time read', () => {
    const s = new ProcessShares(procs([10, 'a', 0, 1]), { busy: 0, idle: 0 });
    const r = s.step(procs([10, 'a', 110, 1]), { busy: 100, idle: 90 }, { watts: 20, dt: 1 });
    expect(r.processes[0].watts! + r.idle.watts! + r.other.watts!).toBeCloseTo(20, 10);
    expect(r.processes[0].watts).toBeCloseTo(11, 10);
    expect(r.other.watts).toBe(0);
  });

  it("starts a reused pid from nothing, and counts a new process's whole life", () => {
    const s = new ProcessShares(procs([10, 'old', 100, 1]), { busy: 0, idle: 0 });
    const first = s.step(procs([10, 'old', 150, 1]), { busy: 50, idle: 50 }, { watts: 10, dt: 1 });
    expect(first.processes[0].joules).toBe(5);
    // pid 10 is now another process (another start time), which ran 20 ticks since it started.
    const second = s.step(procs([10, 'new', 20, 9]), { busy: 100, idle: 100 }, { watts: 10, dt: 1 });
    expect(second.processes).toEqual([{ pid: 10, name: 'new', ticks: 20, watts: 2, joules: 2 }]);
    // The rest of the busy time (the old process's last ticks) goes to (other), not to the new one.
    expect(second.other.watts).toBe(3);
  });
});

describe('DomainRates', () => {
  const totals = (sec: number, joules: number[]) => ({
    startNs: 0n,
    timeNs: BigInt(Math.round(sec * 1e9)),
    readings: joules.map((j, i) => ({ domain: i === 0 ? 'package' : 'dram', package: 0, joules: j, ticks: 0n, estimated: false, held: false })),
  });
  const timing = (samples: number, errors: number[], counterRestarts = 0, unread = [false, false]) => ({
    samples,
    readErrors: Math.max(...errors),
    counterRestarts,
    byDomain: errors.map((readErrors, i) => ({ domain: i === 0 ? 'package' : 'dram', package: 0, readErrors, unread: unread[i] })),
  });

  // While reads fail the counter holds its last value, and the next good read brings the gap:
  // drawn as read, 0 W over the stretch, then a spike.
  it('gives no figure while reads fail, then the stretch average once a good read brings the energy', () => {
    const r = new DomainRates(totals(0, [0, 0]), timing(0, [0, 0]), [true, false]);
    let s = r.step(totals(1, [10, 2]), timing(500, [0, 0]));
    expect(s.domains.map((d) => d.watts)).toEqual([10, 2]);
    expect(s.rows).toEqual({ watts: 10, dt: 1 });
    // Two refreshes whose package reads failed: the counter stands at 10 J.
    s = r.step(totals(2, [10, 4]), timing(1000, [500, 0]));
    expect(s.domains[0]).toEqual({ name: 'package-0', watts: null, readErrors: 500, averagedS: null, lost: false });
    expect(s.domains[1].watts).toBe(2);
    expect([s.rows, s.readErrors, s.samples]).toEqual(['held', 500, 500]);
    s = r.step(totals(3, [10, 6]), timing(1500, [700, 0]));
    expect([s.domains[0].watts, s.domains[0].readErrors, s.rows]).toEqual([null, 200, 'held']);
    // The first read of this refresh was good: it brought the 30 J of all three seconds.
    s = r.step(totals(4, [40, 8]), timing(2000, [700, 0]));
    expect(s.domains[0]).toEqual({ name: 'package-0', watts: 10, readErrors: 0, averagedS: 3, lost: false });
    expect([s.rows, s.rowsAveragedS]).toEqual([{ watts: 10, dt: 3 }, 3]);
    s = r.step(totals(5, [52, 10]), timing(2500, [700, 0]));
    expect([s.domains[0].watts, s.domains[0].averagedS, s.rowsAveragedS]).toEqual([12, null, null]);
  });

  it('gives none where a counter started again among the failed reads, and starts afresh', () => {
    const r = new DomainRates(totals(0, [0, 0]), timing(0, [0, 0]), [true, false]);
    r.step(totals(1, [10, 1]), timing(500, [0, 0]));
    let s = r.step(totals(2, [10, 2]), timing(1000, [3, 0], 1));
    expect([s.domains[0].watts, s.rows]).toEqual([null, 'held']);
    // What the good read brought is short of the stretch's energy: no figure either.
    s = r.step(totals(3, [14, 3]), timing(1500, [3, 0], 1));
    expect(s.domains[0]).toEqual({ name: 'package-0', watts: null, readErrors: 0, averagedS: null, lost: true });
    expect(s.rows).toBe('lost');
    s = r.step(totals(4, [24, 4]), timing(2000, [3, 0], 1));
    expect([s.domains[0].watts, s.domains[0].lost, s.rows]).toEqual([10, false, { watts: 10, dt: 1 }]);
  });

  it('gives none for a domain until a refresh after its first good read, which it counts from', () => {
    const r = new DomainRates(totals(0, [0, 0]), timing(0, [0, 1], 0, [false, true]), [true, false]);
    let s = r.step(totals(1, [10, 0]), timing(500, [0, 300], 0, [false, true]));
    expect([s.domains[1].watts, s.domains[1].readErrors, s.domains[0].watts, s.rows]).toEqual([null, 300, 10, { watts: 10, dt: 1 }]);
    s = r.step(totals(2, [20, 1]), timing(1000, [0, 310], 0, [false, false]));
    expect(s.domains[1].watts).toBeNull();
    s = r.step(totals(3, [30, 3]), timing(1500, [0, 310], 0, [false, false]));
    expect(s.domains[1]).toEqual({ name: 'dram-0', watts: null, readErrors: 0, averagedS: null, lost: true });
    s = r.step(totals(4, [40, 5]), timing(2000, [0, 310], 0, [false, false]));
    expect(s.domains[1].watts).toBe(2);
  });
});

describe('ProcessShares, reads failing', () => {
  const procs = (...list: Array<[number, string, number]>) => new Map<number, ProcessTicks>(list.map(([pid, name, ticks]) => [pid, { name, ticks, start: 1 }]));

  // The energy of a stretch of failed reads comes at its end: shared by the CPU time of that
  // refresh alone, it went to whoever ran then.
  it('shares the energy a good read brings by the CPU time of the whole stretch', () => {
    const s = new ProcessShares(procs([10, 'a', 0], [11, 'b', 0]), { busy: 0, idle: 0 });
    // a ran while the reads failed, b after.
    const held = s.step(procs([10, 'a', 100], [11, 'b', 0]), { busy: 100, idle: 100 }, 'held');
    expect(held.processes.map((p) => [p.pid, p.ticks, p.watts, p.joules])).toEqual([[10, 100, null, 0]]);
    expect([held.idle.watts, held.other.watts]).toEqual([null, null]);
    const r = s.step(procs([10, 'a', 100], [11, 'b', 100]), { busy: 200, idle: 200 }, { watts: 10, dt: 2 });
    // 400 ticks over the stretch: a and b 100 each, idle 200.
    expect(r.processes.map((p) => [p.pid, p.ticks, p.watts, p.joules])).toEqual([
      [10, 0, 2.5, 5],
      [11, 100, 2.5, 5],
    ]);
    expect([r.idle.ticks, r.idle.watts, r.other.watts]).toEqual([100, 5, 0]);
  });

  it('starts afresh after energy was lost', () => {
    const s = new ProcessShares(procs([10, 'a', 0]), { busy: 0, idle: 0 });
    s.step(procs([10, 'a', 100]), { busy: 100, idle: 100 }, 'held');
    const lost = s.step(procs([10, 'a', 150]), { busy: 150, idle: 150 }, 'lost');
    expect(lost.processes[0].watts).toBeNull();
    const r = s.step(procs([10, 'a', 150]), { busy: 200, idle: 200 }, { watts: 10, dt: 1 });
    // Over the last refresh only: a did not run in it.
    expect([r.processes[0].watts, r.idle.watts, r.other.watts]).toEqual([0, 5, 5]);
  });
});

describe('renderFrame, reads failing', () => {
  const frame = threadsFrame({
    source: 'powercap',
    estimated: false,
    domains: [domain('package-0', null, { readErrors: 125 }), domain('dram-0', 1.25)],
    samples: 125,
    readErrors: 125,
    tracked: { watts: null, baselineWatts: null, otherWatts: null, droppedThreads: 0 },
    rows: [{ id: 7, name: 'w', cpu: 50, watts: null, joules: 1 }],
    exited: { cpu: 0, watts: null, joules: 0 },
  });

  it('names the domains whose reads failed and shows n/a, not 0 W', () => {
    const text = renderFrame(frame, 80, 24, false).join('\n');
    expect(text).toContain('package-0 n/a   dram-0 1.25 W');
    expect(text).toContain('reads failed: package-0 125 of 125 (n/a: the energy comes with a good read)');
    expect(text).toContain('process n/a   baseline n/a   other n/a');
    expect(text).toMatch(/^ {7}7 {2}w +50\.0 +n\/a +1\.000 J$/m);
    expect(text).not.toMatch(/0\.00 W/);
  });

  it('marks the figures averaged over a stretch, and says why', () => {
    const f: TopFrame = {
      ...frame,
      domains: [domain('package-0', 10, { averagedS: 3 }), domain('dram-0', 1.25)],
      readErrors: 0,
      tracked: { watts: 1, baselineWatts: 5, otherWatts: 4, droppedThreads: 0 },
      rowsAveragedS: 2.99,
    };
    const text = renderFrame(f, 80, 24, false).join('\n');
    expect(text).toContain('package-0 10.00 W avg   dram-0 1.25 W');
    expect(text).toContain('avg: energy held by failed reads, averaged over package-0 3.0 s, rows 3.0 s');
    expect(text).toContain('process 1.00 W avg   baseline 5.00 W avg   other 4.00 W avg');
    expect(renderFrame({ ...f, domains: [domain('package-0', null, { lost: true })], rowsAveragedS: null }, 80, 24, false)).toContain(
      'package-0: n/a, energy lost in failed reads (a counter restarted, or never read)',
    );
  });
});

describe('display width', () => {
  // Names were cut and padded by their UTF-16 length: CJK characters take two columns each.
  it('measures and cuts by the columns characters take', () => {
    expect(displayWidth('日本語スレ')).toBe(10);
    expect(displayWidth('e\u0301te\u0301')).toBe(3); // combining acute accents take none
    expect(displayWidth('ｆｕｌｌ')).toBe(8);
    expect(displayWidth('🔥x')).toBe(3);
    expect(fit('日本語スレ', 10)).toBe('日本語スレ');
    expect(fit('日本語スレ', 9)).toBe('日本語ス…');
    expect(fit('日本語スレ', 6)).toBe('日本…');
    expect(fit('a𝒳bcdef', 3)).toBe('a𝒳…'); // a surrogate pair is never split
    expect(padCols('日本', 6)).toBe('日本  ');
  });

  it('never draws rows of wide names wider than the terminal', () => {
    const f = threadsFrame({
      rows: ['日本語スレ', 'ｗｏｒｋｅｒ－１２３', 'e\u0301crire', '🔥🔥🔥'].map((name, i) => ({ id: 100 + i, name, cpu: 1, watts: 1, joules: 1 })),
    });
    for (const width of [40, 50, 60, 80]) {
      const lines = renderFrame(f, width, 24, false);
      for (const l of lines) expect(displayWidth(l), l).toBeLessThanOrEqual(width);
      // The columns after the name line up with the header's.
      const header = lines.find((l) => l.includes('TID  NAME'))!;
      for (const l of lines.filter((x) => /^ +10\d {2}/.test(x))) expect(displayWidth(l), l).toBe(Math.min(width, displayWidth(header)));
    }
  });
});

describe('keys', () => {
  // Matched a character at a time, F2 (ESC O Q) quit and F4 (ESC O S) changed the sort.
  it('drops whole escape sequences', () => {
    expect(stripEscapes('\x1bOQ\x1bOS')).toBe('');
    expect(stripEscapes('\x1b[A\x1b[1;5S\x1b[15~s')).toBe('s');
    expect(stripEscapes('a\x1bqs')).toBe('as'); // Alt+q
    expect(stripEscapes('q\x1b[')).toBe('q'); // cut off at the end of the read
    expect(stripEscapes('\x1b')).toBe('');
    expect(stripEscapes('\x1a\x03')).toBe('\x1a\x03');
  });
});

describe('renderBlock', () => {
  // Off a terminal a block showed 16 rows at most and dropped the footer: nothing said rows were missing.
  it('lists every row, with no key help', () => {
    const f = threadsFrame({
      rows: Array.from({ length: 40 }, (_, i) => ({ id: i + 1, name: `t${i}`, cpu: 1, watts: 1, joules: 1 })),
      exited: { cpu: 0, watts: 0, joules: 0 },
    });
    const lines = renderBlock(f);
    expect(lines.filter((l) => /^ +\d+ {2}t\d+ /.test(l))).toHaveLength(40);
    expect(lines.join('\n')).not.toContain('q quit');
    expect(lines.every((l) => l.trim() !== '')).toBe(true);
  });
});
