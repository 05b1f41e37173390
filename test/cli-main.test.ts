// `jouletrace` with no command, --help, --version and an unknown command: the streams and exit
// statuses that scripts rely on (usage errors on stderr with 2, asked-for output on stdout with 0).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.join(__dirname, '..');
const BIN = path.join(ROOT, 'bin/jouletrace.js');
const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 20_000 });

describe('jouletrace command line', () => {
  it('prints the help on stdout for --help, -h and help, listing every command and --version', () => {
    for (const flag of ['--help', '-h', 'help']) {
      const r = cli(flag);
      expect(r.status).toBe(0);
      expect(r.stderr).toBe('');
      expect(r.stdout).toMatch(/^Usage: jouletrace <command> \[options\]/);
      for (const c of ['probe', 'run', 'top', 'demo', 'serve']) expect(r.stdout).toMatch(new RegExp(`^  ${c} +\\S`, 'm'));
      expect(r.stdout).toMatch(/-V, --version/);
    }
  });

  it('treats no command as a usage error: the help on stderr, status 2', () => {
    const r = cli();
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^Usage: jouletrace <command>/);
  });

  it('prints the package version for --version and -V', () => {
    const { version } = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      const r = cli(flag);
      expect(r.status).toBe(0);
      expect(r.stdout).toBe(`${version}\n`);
    }
  });

  it('says in one line that --help and --version could not be written, with status 1', () => {
    for (const flag of ['--help', '--version']) {
      const r = spawnSync(process.execPath, [BIN, flag], { encoding: 'utf8', timeout: 20_000, stdio: ['ignore', fs.openSync('/dev/full', 'w'), 'pipe'] });
      expect(r.status).toBe(1);
      expect(r.stderr).toBe('jouletrace: cannot write to stdout: ENOSPC: no space left on device, write\n');
    }
  });

  it('names an unknown command and exits 2', () => {
    // Names every object has were taken for commands: "c.run is not a function".
    for (const name of ['sample', 'toString', 'constructor', '__proto__', 'hasOwnProperty']) {
      const r = cli(name);
      expect(r.status, r.stderr).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(new RegExp(`^jouletrace: unknown command "${name}"\n\nUsage:`));
    }
  });

  it("says in one line that top's help could not be written, and ends quietly when its reader left", () => {
    // top watches stdout itself once running: its help was written with no handler on it.
    const full = spawnSync(process.execPath, [BIN, 'top', '--help'], { encoding: 'utf8', timeout: 20_000, stdio: ['ignore', fs.openSync('/dev/full', 'w'), 'pipe'] });
    expect(full.status).toBe(1);
    expect(full.stderr).toBe('jouletrace top: cannot write to stdout: ENOSPC: no space left on device, write\n');
    // A pipe whose reader is gone before the help is written (`top --help | true`).
    const gone = spawnSync('python3', ['-c', 'import os, subprocess, sys; r, w = os.pipe(); os.close(r); sys.exit(subprocess.run(sys.argv[1:], stdout=w).returncode)', process.execPath, BIN, 'top', '--help'], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(gone.status, gone.stderr).toBe(0);
    expect(gone.stderr).toBe('');
  });
});
