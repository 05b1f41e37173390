// Loads the native addon once, on first use, so `require('jouletrace')` itself never fails:
// build/ first (a local build), then prebuilds/ (node-gyp-build's order).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { JouletraceError } from './errors';

// The addon's private surface; the public API wraps it in src/*.ts.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type NativeBinding = any;

let cached: NativeBinding | undefined;
let loadError: Error | undefined;

export function packageRoot(): string {
  // src/*.ts under vitest and dist/cjs/*.js once compiled: find the directory holding package.json.
  let dir = __dirname;
  for (let i = 0; i < 4; i++) {
    if (fs.existsSync(path.join(dir, 'binding.gyp'))) return dir;
    dir = path.dirname(dir);
  }
  return path.join(__dirname, '..');
}

export function native(): NativeBinding {
  if (cached) return cached;
  if (loadError) throw loadError;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const load = require('node-gyp-build') as (dir: string) => NativeBinding;
    cached = load(packageRoot());
    return cached;
  } catch (e) {
    const cause = e instanceof Error ? e.message : String(e);
    loadError = new JouletraceError(
      'ERR_JOULETRACE_NATIVE_LOAD',
      `jouletrace: the native addon could not be loaded (${cause}).\n` +
        'Fix: build it with `npm rebuild jouletrace` (needs clang, libbpf-dev, libelf-dev, zlib1g-dev, ' +
        'pkg-config, bpftool, make, g++, python3: `sudo apt-get install clang llvm libbpf-dev libelf-dev ' +
        'zlib1g-dev pkg-config bpftool make g++ python3`), or install a release that ships a prebuilt binary ' +
        'for this platform (prebuilds/linux-x64).',
    );
    throw loadError;
  }
}
