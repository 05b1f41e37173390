// `jouletrace top` in a real pseudo-terminal (tmux, 80×24), and off a terminal.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderFrame, type TopFrame } from '../src/cli/top';

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

  it('restores the terminal on Ctrl-C', async () => {
    const s = 'top-c';
    startTop(s);
    await waitFor(() => screen(s).includes('jt-spinner'), 10_000, 'a frame');
    tmux('send-keys', '-t', s, 'C-c');
    await waitFor(() => screen(s).includes('TOP-EXITED='), 5000, 'top to exit');
    expect(flags(s)).toBe('0 1');
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
      expect(r.stderr).toContain(`is a thread of process ${worker.pid}; --pid takes a process id: pass --pid ${worker.pid}`);
    } finally {
      worker.kill();
    }
  });
});

describe('renderFrame', () => {
  it('never draws wider than the terminal', () => {
    const frame: TopFrame = {
      time: '2025-01-01T12:00:00.000Z',
      mode: 'threads',
      pid: 1,
      source: 'model',
      estimated: true,
      sort: 'watts',
      domains: [{ name: 'package-0', watts: 12.5 }, { name: 'dram-0', watts: 1.25 }],
      tracked: { watts: 3, baselineWatts: 5, otherWatts: 4.5 },
      sampler: { rateHz: 1000, jitterP99Us: 80, dropped: 0, late: 1, cpuPercent: 1.5, backend: 'bpf' },
      rows: Array.from({ length: 40 }, (_, i) => ({ id: i + 1, name: `thread-with-a-long-name-${i}`, cpu: i, watts: i / 10, joules: i })),
    };
    for (const width of [40, 60, 80, 132]) {
      const lines = renderFrame(frame, width, 24, false);
      expect(lines).toHaveLength(24);
      for (const l of lines) expect(l.length).toBeLessThanOrEqual(width);
    }
  });
});
