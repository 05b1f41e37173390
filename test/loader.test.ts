// The addon loader: build/ first, prebuilds/ as the fallback (node-gyp-build's order), and one
// clear error listing the fix when neither exists.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';

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

  it('explains how to fix a missing binary, naming the packages to install', async () => {
    const d = installedCopy();
    const { stdout } = await run(process.execPath, ['-e', probeScript(d)]);
    const r = JSON.parse(stdout);
    expect(r.code).toBe('ERR_JOULETRACE_NATIVE_LOAD');
    expect(r.message).toMatch(/npm rebuild jouletrace/);
    expect(r.message).toMatch(/libbpf-dev/);
    expect(r.message).toMatch(/prebuilds\/linux-x64/);
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
