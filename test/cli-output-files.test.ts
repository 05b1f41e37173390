// The output files of `jouletrace run` and `demo` (-o, --csv, --html): a run that fails leaves an
// existing file as it was, whether it is written beside its place or in place.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { OutputFiles } from '../src/cli/output-files';

const ROOT = path.join(__dirname, '..');
const BIN = path.join(ROOT, 'bin/jouletrace.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'jt-output-files-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const leftovers = () => fs.readdirSync(tmp).filter((f) => f.includes('.jouletrace-'));

describe('OutputFiles', () => {
  it('keeps a file whose name is near the longest allowed as it was when the run fails', async () => {
    // 250 bytes of 255: the temporary name, the file's own plus a suffix, was too long, and the
    // file was written in place, emptied at open.
    const file = path.join(tmp, `${'r'.repeat(245)}.html`);
    fs.writeFileSync(file, 'old report');
    let files = OutputFiles.open({ html: file });
    expect(fs.readFileSync(file, 'utf8')).toBe('old report');
    files.discard();
    expect(fs.readFileSync(file, 'utf8')).toBe('old report');
    expect(leftovers()).toEqual([]);
    files = OutputFiles.open({ html: file });
    expect(await files.write('html', 'new')).toBeUndefined();
    files.commit();
    expect(fs.readFileSync(file, 'utf8')).toBe('new');
    expect(leftovers()).toEqual([]);
  });

  it('refuses a dangling link and the file it points to as one file', () => {
    // Writing through the link creates the other: one output overwrote the other.
    const target = path.join(tmp, 'not-yet.txt');
    const link = path.join(tmp, 'to-not-yet.txt');
    fs.symlinkSync('not-yet.txt', link); // relative to the link's directory
    expect(() => OutputFiles.open({ output: link, csv: target })).toThrow(`--output and --csv name the same file (${target}); give each its own`);
    expect(() => OutputFiles.open({ csv: target, output: link })).toThrow(`--csv and --output name the same file (${link}); give each its own`);
    expect(fs.existsSync(target)).toBe(false);
    expect(leftovers()).toEqual([]);
    // Through a linked directory: ../ is taken from the link's real directory, as the kernel does
    // (a/l -> ../t.csv, a -> real/sub: real/t.csv, not ./t.csv).
    fs.mkdirSync(path.join(tmp, 'real', 'sub'), { recursive: true });
    fs.symlinkSync(path.join('real', 'sub'), path.join(tmp, 'a'));
    fs.symlinkSync('../t.csv', path.join(tmp, 'real', 'sub', 'l'));
    const viaLink = path.join(tmp, 'a', 'l');
    const real = path.join(tmp, 'real', 't.csv');
    expect(() => OutputFiles.open({ csv: viaLink, html: real })).toThrow(`--csv and --html name the same file (${real}); give each its own`);
    expect(fs.existsSync(real)).toBe(false);
  });

  it('empties a file written in place only once its new content is there', async () => {
    // Another hard link: written in place, which a rename would part from this name.
    const file = path.join(tmp, 'linked.json');
    const other = path.join(tmp, 'linked-too.json');
    fs.writeFileSync(file, 'the old summary, longer than the new one');
    fs.linkSync(file, other);
    let files = OutputFiles.open({ output: file });
    expect(fs.readFileSync(file, 'utf8')).toBe('the old summary, longer than the new one');
    files.discard(); // the run failed
    expect(fs.readFileSync(other, 'utf8')).toBe('the old summary, longer than the new one');

    files = OutputFiles.open({ output: file });
    expect(await files.write('output', 'new summary')).toBeUndefined();
    files.commit();
    expect(fs.readFileSync(other, 'utf8')).toBe('new summary');

    // A stream writes from the start: the old content goes when the stream takes the file.
    const streamed = OutputFiles.open({ csv: file });
    expect(fs.readFileSync(file, 'utf8')).toBe('new summary');
    const csv = fs.createWriteStream('', { fd: streamed.fd('csv')! });
    streamed.handOver('csv');
    await new Promise<void>((resolve, reject) => csv.end('a,b\n', () => resolve()).on('error', reject));
    streamed.commit();
    expect(fs.readFileSync(other, 'utf8')).toBe('a,b\n');
    expect(fs.statSync(file).ino).toBe(fs.statSync(other).ino);
  });

  // Node makes a pipe on stdout non-blocking when it makes process.stdout (main.ts's guard does
  // it first thing): written to the descriptor, the report failed with EAGAIN once the pipe was
  // full (`demo --html /dev/stdout | slow reader`: 63,713 bytes, then exit 1). A copy of that
  // descriptor (`--html /dev/fd/3 3>&1 | slow reader`) shares its non-blocking state, and failed
  // with EAGAIN at 65,536 bytes.
  it.each([
    ['/dev/stdout', 'write'],
    ['/dev/stdout', 'stream'],
    ['/dev/fd/3', 'write'],
    ['/dev/fd/3', 'stream'],
  ])("waits for a slow reader of stdout's pipe, written as %s (%s)", async (file, how) => {
    const script = `
      const { OutputFiles } = require(${JSON.stringify(path.join(ROOT, 'dist/cjs/cli/output-files.js'))});
      process.stdout.on('error', () => {});
      const files = OutputFiles.open({ html: process.argv[2] });
      const data = 'x'.repeat(1 << 20);
      (async () => {
        let e;
        if (process.argv[1] === 'write') e = await files.write('html', data);
        else {
          const s = files.stream('html');
          for (let i = 0; i < 16; i++) s.write(data.slice(i << 16, (i + 1) << 16));
          e = await new Promise((resolve) => s.on('error', resolve).end(() => resolve()));
        }
        files.commit();
        if (e) { process.stderr.write(e.message); process.exitCode = 1; }
      })();`;
    // Descriptor 3 made a copy of stdout's, as the shell's `3>&1` does.
    const child = spawn('sh', ['-c', 'exec "$@" 3>&1', 'sh', process.execPath, '-e', script, how, file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const closed = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    // Read nothing for a while: the pipe fills, as under `| (sleep 20; wc -c)`.
    await new Promise((r) => setTimeout(r, 500));
    let bytes = 0;
    child.stdout.on('data', (d: Buffer) => (bytes += d.length));
    expect(await closed, stderr).toBe(0);
    expect(stderr).toBe('');
    expect(bytes).toBe(1 << 20);
  });

  // Opened for writing as any file, a FIFO waited for a reader in the main thread, where no signal
  // handler runs: with none, `run --csv FIFO` hung before the command started, deaf to Ctrl-C and
  // SIGTERM. Failing at once instead broke the writer started before its reader
  // (`run --csv f -- job & cat f`: 0 lines, 125): it waits, trying again without blocking.

  /**
   * Resolves once `pid` has loaded the addon, which `run` does after opening its output files
   * (so a FIFO with no reader is being waited for), or once it has exited.
   */
  const pastOpen = async (pid: number, closed: Promise<unknown>) => {
    let exited = false;
    void closed.then(() => (exited = true));
    for (;;) {
      let maps = '';
      try {
        maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8');
      } catch {
        return; // gone
      }
      if (exited || maps.includes('jouletrace.node')) return;
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  it.each([
    // The summary, to its last line.
    ['-o', (text: string) => expect(text.trimEnd()).toMatch(/\n exit status: 0$/)],
    // Every sample of 300 ms, each line as long as the header.
    [
      '--csv',
      (text: string) => {
        const lines = text.split('\n');
        expect(lines[0]).toMatch(/^time_s,seq,/);
        expect(lines.pop()).toBe('');
        expect(lines.length).toBeGreaterThan(100);
        const fields = lines[0].split(',').length;
        expect(lines.filter((l) => l.split(',').length !== fields)).toEqual([]);
      },
    ],
    ['--html', (text: string) => expect(text.trimEnd()).toMatch(/<\/html>$/)],
  ])('waits for the reader of a FIFO given to %s that comes after the run started', async (option, whole) => {
    const fifo = path.join(tmp, `read-later${option}`);
    execFileSync('mkfifo', [fifo]);
    const child = spawn(process.execPath, [BIN, 'run', option, fifo, '--', 'sleep', '0.3'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const closed = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    let reader: net.Socket | undefined;
    try {
      await pastOpen(child.pid!, closed);
      await new Promise((r) => setTimeout(r, 200));
      // Opened without blocking, as the slow reader's below: a run that failed meanwhile leaves
      // no open waiting for a writer in the thread pool.
      reader = new net.Socket({ fd: fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK), readable: true, writable: false });
      let text = '';
      reader.on('data', (d: Buffer) => (text += d.toString()));
      const ended = new Promise<void>((resolve) => reader!.on('end', resolve));
      expect(await closed, stderr).toBe(0);
      await ended;
      whole(text);
    } finally {
      reader?.destroy();
      child.kill('SIGKILL'); // an assertion failed: nothing left behind
    }
    expect(leftovers()).toEqual([]);
  });

  it('ends the run on SIGTERM while it waits for the reader of a FIFO, with 143, the command not run', async () => {
    const fifo = path.join(tmp, 'never-read');
    const marker = path.join(tmp, 'ran');
    execFileSync('mkfifo', [fifo]);
    const child = spawn(process.execPath, [BIN, 'run', '--csv', fifo, '--', 'touch', marker], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const closed = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    try {
      await pastOpen(child.pid!, closed);
      child.kill('SIGTERM');
      // Not ended, it waits on: the test's own timeout fails it.
      expect({ status: await closed, stderr }).toEqual({
        status: 143,
        stderr: `jouletrace run: SIGTERM arrived while waiting for a reader of ${fifo}; the command did not run\n`,
      });
    } finally {
      child.kill('SIGKILL');
    }
    expect(fs.existsSync(marker)).toBe(false);
    expect(leftovers()).toEqual([]);
  });

  it('fails at once on a path that cannot be written, a FIFO with no reader beside it', () => {
    // Every other path is opened before the FIFO's reader is awaited: no wait for a run that
    // cannot write its files.
    const fifo = path.join(tmp, 'unread');
    execFileSync('mkfifo', [fifo]);
    const missing = path.join(tmp, 'no-such-dir', 'summary.json');
    const r = spawnSync(process.execPath, [BIN, 'run', '--csv', fifo, '-o', missing, '--', 'true'], { encoding: 'utf8', timeout: 10_000, killSignal: 'SIGKILL' });
    expect({ status: r.status, stderr: r.stderr }).toEqual({
      status: 125,
      stderr: `jouletrace run: cannot write ${missing}: ENOENT: no such file or directory, open '${missing}'\n`,
    });
    expect(leftovers()).toEqual([]);
  });

  // Opened without blocking to tell a reader is there, it must write blocking: a full FIFO failed
  // with EAGAIN otherwise.
  it('waits for a slow reader of a FIFO', async () => {
    const fifo = path.join(tmp, 'slowly-read');
    execFileSync('mkfifo', [fifo]);
    const script = `
      const { OutputFiles } = require(${JSON.stringify(path.join(ROOT, 'dist/cjs/cli/output-files.js'))});
      const files = OutputFiles.open({ html: process.argv[1] });
      files.write('html', 'x'.repeat(1 << 20)).then((e) => {
        files.commit();
        if (e) { process.stderr.write(e.message); process.exitCode = 1; }
      });`;
    // The reader is there (its open does not wait for a writer), reading nothing for a while.
    const reader = new net.Socket({ fd: fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK), readable: true, writable: false });
    reader.pause();
    let bytes = 0;
    const ended = new Promise<void>((resolve) => reader.on('end', resolve));
    const child = spawn(process.execPath, ['-e', script, fifo], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const closed = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    await new Promise((r) => setTimeout(r, 500));
    reader.on('data', (d: Buffer) => (bytes += d.length));
    reader.resume();
    expect(await closed, stderr).toBe(0);
    await ended;
    expect(bytes).toBe(1 << 20);
  });
});
