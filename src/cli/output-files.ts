// Output files a command writes once its work is done, opened before it starts: a path that
// cannot be written fails at once, and a run that fails leaves an existing file as it was.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:os';
import { Writable } from 'node:stream';
import { UsageError } from './args';
import { notIgnored } from './ignored-signals';

// A descriptor of a process that the path names (/dev/stdout is /proc/self/fd/1).
const FD_ALIAS = /^\/(?:dev\/(stdout|stderr|fd\/(\d+))|proc\/(self|thread-self|\d+)\/fd\/(\d+))$/;

/**
 * Signals that kill a process by default and that a command can handle: temporary files are
 * removed first, `run` passes them on to its command, `top` restores the terminal. Not SIGUSR1,
 * which starts Node's inspector; not SIGPROF, V8's profiler's; not those a fault raises (SIGSEGV,
 * SIGBUS, SIGFPE, SIGILL, SIGABRT), after which no JavaScript can be trusted to run.
 */
export const FATAL_SIGNALS: readonly NodeJS.Signals[] = (['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR2', 'SIGALRM', 'SIGVTALRM', 'SIGPWR'] as const).filter(
  (sig) => sig in constants.signals,
);

/** Those of FATAL_SIGNALS that a terminal sends to its foreground process group (Ctrl-C, Ctrl-\, hang-up). */
export const TERMINAL_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGQUIT', 'SIGHUP'];

interface OutputFile {
  /** The path given, as the user wrote it (messages name it). */
  file: string;
  /** -1 while a FIFO waits for its reader (waitForReaders()). */
  fd: number;
  /** A FIFO that had no reader when opened: the flags to open it with once one comes. */
  awaitingReader?: number;
  /** Where the content goes until commit(); undefined where the file is written in place. */
  temp?: string;
  /** The file the temporary one replaces: the given path with links resolved. */
  target?: string;
  /** Written in part only (a write failed): dropped by commit() like a failed run's files. */
  failed?: boolean;
  /**
   * A regular file written in place, opened without truncation so that a failed run leaves it as
   * it was: cut to what was written at commit() (or at handOver(), from where a stream writes it).
   */
  cutAtCommit?: boolean;
  /** Bytes write() put in the file. */
  written: number;
  existed?: boolean;
  /** The descriptor has been handed to a stream that closes it. */
  handedOver: boolean;
  /** One of this process's own descriptors (/dev/stdout): written through, never closed. */
  own?: boolean;
  /**
   * process.stdout or process.stderr, where the descriptor is theirs and a pipe, socket or
   * terminal: written through that stream. Node made the pipe non-blocking when it made the
   * stream (main.ts's guards do), so a write of the descriptor itself failed with EAGAIN once the
   * pipe was full (a slow reader), and could pass text the stream still held.
   */
  stdio?: NodeJS.WriteStream;
}

export class OutputFiles<K extends string> {
  readonly #files = new Map<K, OutputFile>();
  // A process that exits without commit() or discard() (an uncaught error) leaves no temporary
  // file behind.
  readonly #onExit = () => this.discard();
  // Killed by a signal no one else handles (before or after a command's own handlers are on):
  // 'exit' does not run then, so the files are discarded here and the signal raised again.
  readonly #onSignal = (sig: NodeJS.Signals) => {
    if (process.listenerCount(sig) > 1) return; // a command's handler decides
    this.discard();
    process.kill(process.pid, sig);
  };

  // Not those ignored at start-up (nohup's SIGHUP), which stay ignored: a listener here would
  // end jouletrace on them.
  readonly #signals = notIgnored(FATAL_SIGNALS);

  private constructor() {
    process.on('exit', this.#onExit);
    for (const sig of this.#signals) process.on(sig, this.#onSignal);
  }

  #unhook(): void {
    process.off('exit', this.#onExit);
    for (const sig of this.#signals) process.off(sig, this.#onSignal);
  }

  /**
   * Opens each named path for writing. A regular file (or a new one) is written beside its final
   * place and renamed over it by commit(). Written in place: /dev/stdout, /dev/fd/N and
   * /proc/self/fd/N (through that descriptor), another process's /proc/PID/fd/N (appended to),
   * devices and FIFOs, a dangling link, a file with other hard links, and a writable file in a
   * directory this process cannot create files in. A FIFO with no reader yet is opened by
   * waitForReaders(), which the caller awaits next.
   * Throws an Error naming the file that cannot be opened, and leaves nothing behind.
   */
  static open<K extends string>(paths: Partial<Record<K, string>>): OutputFiles<K> {
    const out = new OutputFiles<K>();
    const seen = new Map<string, string>();
    const given = (Object.entries(paths) as Array<[K, string | undefined]>).filter((e): e is [K, string] => e[1] !== undefined);
    try {
      // All before any is opened: opening one may create another's file (a dangling link's).
      for (const [name, file] of given) {
        // Devices (/dev/null, a terminal) may take several outputs; one file may not.
        if (isDevice(file)) continue;
        const key = identity(file);
        const clash = seen.get(key);
        // Named by two options: the command line's mistake, told as the options.
        if (clash !== undefined) throw new UsageError(`--${clash} and --${name} name the same file (${file}); give each its own`);
        seen.set(key, name);
      }
      for (const [name, file] of given) {
        try {
          out.#files.set(name, openOne(file));
        } catch (e) {
          throw new Error(`cannot write ${file}: ${(e as Error).message}`);
        }
      }
    } catch (e) {
      out.discard();
      throw e;
    }
    return out;
  }

  fd(name: K): number | undefined {
    return this.#files.get(name)?.fd;
  }

  /** The FIFOs that had no reader when opened, as given: waitForReaders() waits for them. */
  awaitingReaders(): string[] {
    return [...this.#files.values()].filter((f) => f.awaitingReader !== undefined).map((f) => f.file);
  }

  /**
   * Waits until each FIFO that had no reader when opened has one, as a blocking open would, but
   * trying again every FIFO_RETRY_MS without blocking: a blocking open waited in the main thread,
   * where no signal handler runs, deaf to Ctrl-C and SIGTERM. Resolves false, at the next try,
   * once `stop` is aborted (a signal arrived: the caller discards the files). Rejects with an
   * Error naming the file where opening fails otherwise (the FIFO removed meanwhile).
   */
  async waitForReaders(stop?: AbortSignal): Promise<boolean> {
    for (;;) {
      if (stop?.aborted) return false;
      let waiting = false;
      for (const f of this.#files.values()) {
        if (f.awaitingReader === undefined) continue;
        let fd: number | undefined;
        try {
          fd = openFifo(f.file, f.awaitingReader);
        } catch (e) {
          const gone = (e as NodeJS.ErrnoException).code === 'ENOENT' ? ' (removed while its reader was awaited)' : '';
          throw new Error(`cannot write ${f.file}: ${(e as Error).message}${gone}`);
        }
        if (fd === undefined) waiting = true;
        else {
          f.fd = fd;
          f.awaitingReader = undefined;
        }
      }
      if (!waiting) return true;
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          stop?.removeEventListener('abort', done);
          resolve();
        };
        const timer = setTimeout(done, FIFO_RETRY_MS);
        stop?.addEventListener('abort', done);
      });
    }
  }

  /**
   * A stream that writes the file from its start (see handOver()), and closes it when it ends.
   * Its 'error' may be a reader gone (readerGone()).
   */
  stream(name: K): Writable | undefined {
    const f = this.#files.get(name);
    if (!f) return undefined;
    const { fd, stdio } = f;
    // Ending this one must not end process.stdout: the summary may follow it there.
    const stream = stdio
      ? new Writable({ write: (chunk: Buffer, _encoding, done) => writeFromPool(fd, stdio, chunk).then(() => done(), done) })
      : fs.createWriteStream('', { fd, autoClose: f.own !== true });
    this.handOver(name);
    return stream;
  }

  /**
   * The caller's stream now writes and closes this descriptor. A file written in place is emptied
   * now: the stream's writes replace what was there.
   */
  handOver(name: K): void {
    const f = this.#files.get(name);
    if (!f) return;
    f.handedOver = true;
    if (f.cutAtCommit) {
      f.cutAtCommit = false;
      try {
        fs.ftruncateSync(f.fd, 0);
      } catch {
        this.fail(name);
      }
    }
  }

  /**
   * Writes all of `data` to the file. On failure, marks it failed (see fail()) and returns the
   * error, for the caller to report; a reader gone (readerGone()) is no failure.
   */
  async write(name: K, data: string): Promise<Error | undefined> {
    const f = this.#files.get(name)!;
    try {
      if (f.stdio) await writeThrough(f.stdio, data);
      else fs.writeFileSync(f.fd, data);
      f.written += Buffer.byteLength(data);
      return undefined;
    } catch (e) {
      if (this.readerGone(name, e)) return undefined;
      this.fail(name);
      return e as Error;
    }
  }

  /**
   * Whether `e`, from writing this file, says that it is one of this process's own descriptors
   * whose reader went away (`-o /dev/stdout | head`): no failure, as stdout's is none (main.ts).
   */
  readerGone(name: K, e: unknown): boolean {
    return this.#files.get(name)?.own === true && (e as NodeJS.ErrnoException | undefined)?.code === 'EPIPE';
  }

  /** A write to this file failed: commit() leaves the existing file as it was. */
  fail(name: K): void {
    const f = this.#files.get(name);
    if (f) f.failed = true;
  }

  /** The files whose writes failed, each with what became of it. */
  failed(): string[] {
    return [...this.#files.values()]
      .filter((f) => f.failed)
      .map((f) => `${f.file} (${f.temp === undefined ? 'incomplete: written in place' : f.existed ? 'left as it was' : 'not created'})`);
  }

  /** The files commit() could not put in place, each with why (their content is lost). */
  readonly unplaced: string[] = [];
  readonly #unplacedNames = new Set<K>();

  /** Whether commit() could not put this file in place. */
  isUnplaced(name: K): boolean {
    return this.#unplacedNames.has(name);
  }

  /**
   * Closes every descriptor and moves each file that did not fail into its final place. Where
   * the rename is refused (another user's file in a sticky directory such as /tmp), the content
   * is copied over the file in place; what cannot be placed either way is listed in `unplaced`.
   */
  commit(): void {
    for (const [name, f] of this.#files) {
      if (f.cutAtCommit && !f.failed) {
        try {
          fs.ftruncateSync(f.fd, f.written);
        } catch (e) {
          this.unplaced.push(`${f.file} (${(e as Error).message})`);
          this.#unplacedNames.add(name);
        }
      }
      closeOnce(f);
      if (f.temp === undefined) continue;
      if (f.failed) {
        fs.rmSync(f.temp, { force: true });
        continue;
      }
      try {
        fs.renameSync(f.temp, f.target!);
      } catch (e) {
        try {
          // No O_CREAT: fs.protected_regular refuses it on another user's file in a sticky
          // directory, even one open to all.
          const fd = fs.openSync(f.target!, fs.constants.O_WRONLY | fs.constants.O_TRUNC);
          try {
            fs.writeFileSync(fd, fs.readFileSync(f.temp));
          } finally {
            fs.closeSync(fd);
          }
        } catch {
          this.unplaced.push(`${f.file} (${(e as Error).message})`);
          this.#unplacedNames.add(name);
        }
        fs.rmSync(f.temp, { force: true });
      }
    }
    this.#files.clear();
    this.#unhook();
  }

  /** Closes every descriptor and removes what was written: existing files keep their content. */
  discard(): void {
    for (const f of this.#files.values()) {
      closeOnce(f);
      if (f.temp !== undefined) fs.rmSync(f.temp, { force: true });
    }
    this.#files.clear();
    this.#unhook();
  }
}

function closeOnce(f: OutputFile): void {
  if (f.handedOver) return;
  f.handedOver = true;
  if (!f.own && f.fd >= 0) fs.closeSync(f.fd);
}

/**
 * Two spellings of one file give one key: its device and inode where it exists, else its name in
 * its directory's real path (`b/x` where b links to a is `a/x`). A dangling link is the file it
 * points to, which writing through it creates.
 */
function identity(file: string, links = 0): string {
  try {
    const st = fs.statSync(file);
    return `${st.dev}:${st.ino}`;
  } catch {
    const abs = path.resolve(file);
    // 40 links at most, as the kernel follows (ELOOP).
    if (links < 40 && isLink(abs)) {
      try {
        // Relative to the link's real directory, as the kernel resolves it (a/l -> ../t where a
        // links to real/sub is real/t, not ./t).
        return identity(path.resolve(fs.realpathSync(path.dirname(abs)), fs.readlinkSync(abs)), links + 1);
      } catch {
        // gone meanwhile: named as it is
      }
    }
    try {
      return path.join(fs.realpathSync(path.dirname(abs)), path.basename(abs));
    } catch {
      return abs;
    }
  }
}

// An event poll, eventfd or signalfd (anon_inode), or a pipe whose read end this process holds
// too: libuv's. (Node marks inherited descriptors close-on-exec as well, so that flag tells
// nothing; a pipe passed in, `3>&1 | less`, has its read end elsewhere.)
function internalDescriptor(fd: number): boolean {
  const target = (n: number | string) => fs.readlinkSync(`/proc/self/fd/${n}`);
  const readable = (n: number | string) => (parseInt(/^flags:\s*([0-7]+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${n}`, 'utf8'))?.[1] ?? '1', 8) & 3) !== 1;
  try {
    const what = target(fd);
    if (what.startsWith('anon_inode:')) return true;
    if (!what.startsWith('pipe:')) return false;
    return fs.readdirSync('/proc/self/fd').some((n) => {
      try {
        return Number(n) !== fd && target(n) === what && readable(n);
      } catch {
        return false; // closed meanwhile (the directory's own descriptor)
      }
    });
  } catch {
    return false;
  }
}

/**
 * process.stdout or process.stderr where fd is a copy of their descriptor (`3>&1`) or another
 * opening of what it writes to: a pipe that Node made non-blocking for the stream is so through
 * every copy, and written directly it failed with EAGAIN once full, as stdout's own did.
 */
function stdioCopy(fd: number): NodeJS.WriteStream | undefined {
  const same = (a: fs.Stats, n: number) => {
    try {
      const b = fs.fstatSync(n);
      return a.dev === b.dev && a.ino === b.ino;
    } catch {
      return false; // closed
    }
  };
  const st = fs.fstatSync(fd);
  return same(st, 1) ? process.stdout : same(st, 2) ? process.stderr : undefined;
}

function openOne(file: string): OutputFile {
  // /dev/stdout, /proc/self/fd/N and the like are links to what the shell opened: a file put in
  // their place would replace /dev/stdout itself, or leave the shell's descriptor on the old file.
  // This process's own are written through the descriptor itself: one opened anew has an offset
  // of its own (appending or not), and the shell's `>` descriptor wrote over it. Another
  // process's is appended to, as `>>` would.
  const alias = FD_ALIAS.exec(path.resolve(file));
  if (alias) {
    const [, std, devFd, proc, procFd] = alias;
    let fd: number | undefined;
    if (std === 'stdout') fd = 1;
    else if (std === 'stderr') fd = 2;
    else if (devFd !== undefined) fd = Number(devFd);
    else if (proc === 'self' || proc === 'thread-self' || Number(proc) === process.pid) fd = Number(procFd);
    if (fd === undefined) return inPlace(file, 'append');
    fs.writeSync(fd, Buffer.alloc(0)); // EBADF: not open, or not for writing
    // Node's own descriptors are open too (libuv's event poll, its wake-up and signal pipes):
    // written into, one of them crashed the process.
    if (fd > 2 && internalDescriptor(fd)) throw new Error(`descriptor ${fd} is not one this command was given (it is jouletrace's own); open it in the shell first, e.g. ${fd}>file`);
    const stdio = fd === 1 ? process.stdout : fd === 2 ? process.stderr : stdioCopy(fd);
    // A file's stream writes synchronously, and its descriptor blocks: written directly.
    return { file, fd, own: true, handedOver: false, written: 0, ...(stdio instanceof net.Socket ? { stdio } : {}) };
  }
  let existing: fs.Stats | undefined;
  try {
    existing = fs.statSync(file);
  } catch {
    // a new file, or a dangling link: written through it, where the link points
    if (isLink(file)) return inPlace(file, 'overwrite');
  }
  if (existing?.isDirectory()) throw new Error('it is a directory');
  // A device, a FIFO, a socket: written in place. So is a file with other hard links, which a
  // rename would part from this one.
  if (existing && (!existing.isFile() || existing.nlink > 1)) return inPlace(file, 'overwrite');
  // Opening the final path itself first tells a missing directory or a read-only file apart with
  // the system's own message (ENOENT, EACCES) before anything is created.
  // Write-only access is enough for an existing file (O_WRONLY, no truncation).
  fs.closeSync(fs.openSync(file, existing ? fs.constants.O_WRONLY : 'wx'));
  // A link stays a link: the file goes where it points.
  const target = fs.realpathSync(file);
  if (!existing) fs.rmSync(target, { force: true });
  // Short whatever the file's name: a name of its own plus a suffix could pass NAME_MAX.
  const dir = path.dirname(target);
  const temp = path.join(dir, `.jouletrace-${process.pid}-${randomBytes(6).toString('hex')}`);
  let fd: number;
  try {
    // 'wx': never through a link someone put at this name.
    fd = fs.openSync(temp, 'wx', existing ? existing.mode & 0o7777 : 0o666);
  } catch (e) {
    // A file this process may write (opened above) in a directory it may not create files in
    // (EACCES, EPERM, EROFS), or where no file can be made (ENOENT under /proc or /sys): in place.
    // Anything else (a full disk, no descriptors left) fails here, before the run.
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS' || code === 'ENOENT') return inPlace(file, 'overwrite');
    throw new Error(`${(e as Error).message.replace(/, open '.*'$/s, '')} (creating a file in ${dir})`);
  }
  if (existing) {
    try {
      // As root, another user's file stays theirs.
      if (existing.uid !== process.getuid?.() || existing.gid !== process.getgid?.()) fs.fchownSync(fd, existing.uid, existing.gid);
      fs.fchmodSync(fd, existing.mode & 0o7777); // not narrowed by the umask
    } catch {
      // not permitted: the file becomes this process's, as any new file would
    }
  }
  return { file, fd, temp, target, existed: existing !== undefined, handedOver: false, written: 0 };
}

/**
 * Writes through process.stdout or process.stderr, settled once the data is written (a full pipe
 * waits for its reader). Failed, it rejects with the error that ended the stream, which may be an
 * earlier write's (the summary's EPIPE), not "write after destroy".
 */
function writeThrough(stdio: NodeJS.WriteStream, data: string | Buffer): Promise<void> {
  return new Promise((resolve, reject) => stdio.write(data, (e) => (e ? reject(stdio.errored ?? e) : resolve())));
}

/**
 * Writes `data` to stdout's or stderr's descriptor from libuv's threads, so that a slow reader
 * holds no JavaScript up while a command runs (process.stdout writes from this thread, and a
 * child spawned with the descriptor made it blocking again); what a full non-blocking pipe
 * refuses (EAGAIN), and anything while the stream holds text not yet written, goes through the
 * stream, in order.
 */
function writeFromPool(fd: number, stdio: NodeJS.WriteStream, data: Buffer): Promise<void> {
  if (stdio.writableLength > 0 || stdio.destroyed) return writeThrough(stdio, data);
  return new Promise((resolve, reject) => {
    fs.write(fd, data, (e, n) => {
      if (e?.code === 'EAGAIN') writeThrough(stdio, data).then(resolve, reject);
      else if (e) reject(e);
      else if (n < data.length) writeFromPool(fd, stdio, data.subarray(n)).then(resolve, reject);
      else resolve();
    });
  });
}

function isDevice(file: string): boolean {
  try {
    const st = fs.statSync(file);
    return st.isCharacterDevice() || st.isBlockDevice();
  } catch {
    return false;
  }
}

function isLink(file: string): boolean {
  try {
    return fs.lstatSync(file).isSymbolicLink();
  } catch {
    return false;
  }
}

function inPlace(file: string, mode: 'append' | 'overwrite'): OutputFile {
  // No O_TRUNC: until its content is written, the file keeps what it had.
  const flags = mode === 'append' ? fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_APPEND : fs.constants.O_WRONLY | fs.constants.O_CREAT;
  if (isFifo(file)) {
    const fd = openFifo(file, flags);
    return fd === undefined ? { file, fd: -1, awaitingReader: flags, handedOver: false, written: 0 } : { file, fd, handedOver: false, written: 0 };
  }
  const fd = fs.openSync(file, flags, 0o666);
  return { file, fd, handedOver: false, written: 0, cutAtCommit: mode === 'overwrite' && fs.fstatSync(fd).isFile() };
}

function isFifo(file: string): boolean {
  try {
    return fs.statSync(file).isFIFO();
  } catch {
    return false;
  }
}

/**
 * How often waitForReaders() tries a FIFO again: a reader that comes waits this long at most for
 * the run to start, and a signal is acted on at once (it ends the wait between tries).
 */
const FIFO_RETRY_MS = 25;

/**
 * Opens a FIFO (or a pipe named by /proc/PID/fd/N) for writing, or returns undefined where it has
 * no reader (ENXIO) for waitForReaders() to try again. Opened as any file, it waited for a reader
 * in the main thread, where no signal handler runs: with no reader, the run hung before the
 * command started, deaf to Ctrl-C and SIGTERM. Opened without blocking first, one with no reader
 * fails at once; one with a reader is opened again, blocking, which returns at once as it has a
 * reader: its writes wait for a slow reader, as a pipe on stdout does, rather than fail with
 * EAGAIN. (A reader that closes between the two opens leaves the second waiting for the next,
 * as before.) Without O_CREAT: a FIFO removed while its reader was awaited is an error
 * (ENOENT), not a regular file made in its place.
 * Permissions are checked before readers, so a FIFO this process may not write fails at once.
 */
function openFifo(file: string, flags: number): number | undefined {
  const noCreate = flags & ~fs.constants.O_CREAT;
  let probe: number;
  try {
    probe = fs.openSync(file, noCreate | fs.constants.O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENXIO') return undefined;
    throw e;
  }
  try {
    return fs.openSync(file, noCreate);
  } finally {
    fs.closeSync(probe);
  }
}
