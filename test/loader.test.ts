// The addon loader: build/ first, prebuilds/ as the fallback (node-gyp-build's order), and one
// clear error listing the fix when neither exists.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { nativeLoadError } from '../src/native';

const run = promisify(execFile);
const root = path.join(__dirname, '..');
let dir: string | undefined;
afterEach(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

// A copy of the package as a user would install it: package.json, dist/, node_modules links.
function installedCopy(): string {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-loader-'));
  fs.copyFileSync(path.join(root, 'package.json'), path.join(dir, 'package.json'));
  fs.copyFileSync(path.join(root, 'binding.gyp'), path.join(dir, 'binding.gyp'));
  fs.cpSync(path.join(root, 'dist'), path.join(dir, 'dist'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(path.join(root, 'node_modules/node-gyp-build'), path.join(dir, 'node_modules/node-gyp-build'));
  return dir;
}

const probeScript = (d: string) =>
  `const j = require(${JSON.stringify(path.join(d, 'dist/cjs/index.js'))});
   try { const s = j.openSource({ source: 'model' }); console.log(JSON.stringify({ ok: s.name })); s.close(); }
   catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`;

describe('native addon loader', () => {
  it('falls back to prebuilds/<platform>-<arch>/ when there is no build/', async () => {
    const d = installedCopy();
    const pre = path.join(d, 'prebuilds', `${process.platform}-${process.arch}`);
    fs.mkdirSync(pre, { recursive: true });
    fs.copyFileSync(path.join(root, 'build/Release/jouletrace.node'), path.join(pre, 'jouletrace.napi.node'));
    const { stdout } = await run(process.execPath, ['-e', probeScript(d)]);
    expect(JSON.parse(stdout)).toEqual({ ok: 'model' });
  });

  it('explains how to fix a missing binary, naming the platform and the packages to install', async () => {
    const d = installedCopy();
    const { stdout } = await run(process.execPath, ['-e', probeScript(d)]);
    const r = JSON.parse(stdout);
    expect(r.code).toBe('ERR_JOULETRACE_NATIVE_LOAD');
    expect(r.message).toMatch(new RegExp(`^the native addon is not built for this platform \\(${process.platform}-${process.arch}, Node \\d+\\.\\d+\\.\\d+, ABI \\d+\\)`));
    expect(r.message).toMatch(/npm rebuild jouletrace/);
    expect(r.message).toMatch(/apt-get install clang libbpf-dev libelf-dev zlib1g-dev make g\+\+ python3`/);
    expect(r.message).toMatch(/Ubuntu: linux-tools-common/);
    expect(r.message).toMatch(/npm skipped its install script .*`npm approve-scripts jouletrace`/);
    // One line: node-gyp-build's own multi-line message stays on error.cause.
    expect(r.message).not.toMatch(/\n|loaded from/);
  });

  it('names a missing shared library and its package, from the loader\'s real error', async () => {
    // The addon as built, but needing a libbpf soname no system has: dlopen fails as it does
    // where libbpf1 is not installed.
    const d = installedCopy();
    const pre = path.join(d, 'prebuilds', `${process.platform}-${process.arch}`);
    fs.mkdirSync(pre, { recursive: true });
    const elf = fs.readFileSync(path.join(root, 'build/Release/jouletrace.node'));
    const needed = Buffer.from('libbpf.so.1\0');
    const at = elf.indexOf(needed);
    expect(at).toBeGreaterThan(0);
    elf.write('libbpf.so.7', at, 'latin1');
    fs.writeFileSync(path.join(pre, 'jouletrace.napi.node'), elf);
    const { stdout } = await run(process.execPath, ['-e', probeScript(d)]);
    expect(JSON.parse(stdout)).toEqual({
      code: 'ERR_JOULETRACE_NATIVE_LOAD',
      message:
        'the native addon needs the shared library libbpf.so.7, which is not installed. ' +
        'Fix: install the package that provides libbpf.so.7.',
    });

    // The sonames the addon links against map to their Debian/Ubuntu packages.
    const dlopen = (so: string) => new Error(`${so}: cannot open shared object file: No such file or directory`);
    expect(nativeLoadError(dlopen('libbpf.so.1')).message).toMatch(/libbpf\.so\.1, .* `sudo apt-get install libbpf1`\.$/);
    expect(nativeLoadError(dlopen('libelf.so.1')).message).toMatch(/`sudo apt-get install libelf1` \(libelf1t64 on Debian 13 and Ubuntu 24\.04\)\.$/);
    expect(nativeLoadError(dlopen('libz.so.1')).message).toMatch(/apt-get install zlib1g`/);
  });

  it('tells a binary built for another Node from one that is missing, and keeps the cause', () => {
    const cause = new Error(
      "The module '/x/jouletrace.node'\nwas compiled against a different Node.js version using\nNODE_MODULE_VERSION 108. " +
        'This version of Node.js requires\nNODE_MODULE_VERSION 115.',
    );
    const e = nativeLoadError(cause);
    expect(e.message).toMatch(/^the native addon was built for another Node\.js or platform \(The module '\/x\/jouletrace\.node' was compiled against a different Node\.js version using NODE_MODULE_VERSION 108\. This version of Node\.js requires NODE_MODULE_VERSION 115\.\)\. Fix: rebuild it with `npm rebuild jouletrace`/);
    expect(e.cause).toBe(cause);
    expect(nativeLoadError('odd').message).toMatch(/^the native addon could not be loaded \(odd\)\. Fix: build it/);
  });

  it('serves ESM and CJS users the same module', async () => {
    const esm = `import { Sampler, openSource, probe } from ${JSON.stringify(path.join(root, 'dist/esm/index.mjs'))};
      import { createRequire } from 'node:module';
      const cjs = createRequire(import.meta.url)(${JSON.stringify(path.join(root, 'dist/cjs/index.js'))});
      console.log(JSON.stringify({ same: Sampler === cjs.Sampler && openSource === cjs.openSource, probe: typeof probe }));`;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', esm]);
    expect(JSON.parse(stdout)).toEqual({ same: true, probe: 'function' });
  });
});
