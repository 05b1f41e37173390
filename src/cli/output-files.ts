// Output files a command writes once its work is done, opened before it starts: a path that
// cannot be written fails at once, and a run that fails leaves an existing file as it was.
import * as fs from 'node:fs';
import * as path from 'node:path';

interface OutputFile {
  /** The path given, as the user wrote it (messages name it). */
  file: string;
  fd: number;
  /** Where the content goes until commit(); undefined for devices and pipes, written in place. */
  temp?: string;
  /** The descriptor has been handed to a stream that closes it. */
  handedOver: boolean;
}

export class OutputFiles<K extends string> {
  readonly #files = new Map<K, OutputFile>();

  /**
   * Opens each named path for writing. A regular file (or a new one) is written beside its final
   * place and renamed over it by commit(); /dev/stdout, a FIFO and the like are written in place.
   * Throws an Error naming the file that cannot be opened, and leaves nothing behind.
   */
  static open<K extends string>(paths: Partial<Record<K, string>>): OutputFiles<K> {
    const out = new OutputFiles<K>();
    const seen = new Map<string, string>();
    try {
      for (const [name, file] of Object.entries(paths) as Array<[K, string | undefined]>) {
        if (file === undefined) continue;
        const key = identity(file);
        const clash = seen.get(key);
        if (clash !== undefined) throw new Error(`cannot write ${file}: ${clash} names the same file`);
        seen.set(key, file);
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

  /** The caller's stream now closes this descriptor. */
  handOver(name: K): void {
    const f = this.#files.get(name);
    if (f) f.handedOver = true;
  }

  /** Closes every descriptor and moves each file into its final place. */
  commit(): void {
    for (const f of this.#files.values()) {
      closeOnce(f);
      if (f.temp !== undefined) fs.renameSync(f.temp, f.file);
    }
    this.#files.clear();
  }

  /** Closes every descriptor and removes what was written: existing files keep their content. */
  discard(): void {
    for (const f of this.#files.values()) {
      closeOnce(f);
      if (f.temp !== undefined) fs.rmSync(f.temp, { force: true });
    }
    this.#files.clear();
  }
}

function closeOnce(f: OutputFile): void {
  if (f.handedOver) return;
  f.handedOver = true;
  fs.closeSync(f.fd);
}

/** Two spellings of one file give one key: the real path where it exists, else the absolute one. */
function identity(file: string): string {
  try {
    const st = fs.statSync(file);
    return `${st.dev}:${st.ino}`;
  } catch {
    return path.resolve(file);
  }
}

function openOne(file: string): OutputFile {
  let existing: fs.Stats | undefined;
  try {
    existing = fs.statSync(file);
  } catch {
    // a new file
  }
  if (existing && !existing.isFile()) {
    if (existing.isDirectory()) throw new Error('it is a directory');
    return { file, fd: fs.openSync(file, 'w'), handedOver: false };
  }
  // Opening the final path itself first tells a missing directory or a read-only file apart with
  // the system's own message (ENOENT, EACCES) before anything is created.
  fs.closeSync(fs.openSync(file, existing ? 'r+' : 'wx'));
  if (!existing) fs.rmSync(file, { force: true });
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.jouletrace-${process.pid}`);
  const fd = fs.openSync(temp, 'w', existing ? existing.mode & 0o7777 : 0o666);
  return { file, fd, temp, handedOver: false };
}
