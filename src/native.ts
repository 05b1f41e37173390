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
    loadError = nativeLoadError(e);
    throw loadError;
  }
}

// What `npm rebuild jouletrace` compiles with: the build list of scripts/system-packages.sh, kept
// the same by test/install-failed.test.ts. bpftool has no package of its own on Ubuntu.
const BUILD_PACKAGES = 'clang libbpf-dev libelf-dev zlib1g-dev make g++ python3';
const BPFTOOL_HINT = 'and bpftool (Debian: bpftool; Ubuntu: linux-tools-common linux-tools-$(uname -r))';
// Runtime libraries the addon links against, by soname.
const RUNTIME_PACKAGES: Record<string, { pkg: string; note?: string }> = {
  'libbpf.so.1': { pkg: 'libbpf1' },
  'libelf.so.1': { pkg: 'libelf1', note: ' (libelf1t64 on Debian 13 and Ubuntu 24.04)' },
  'libz.so.1': { pkg: 'zlib1g' },
};

/**
 * The error for an addon that did not load, with the fix for the cause at hand: not built, a
 * shared library missing, or built for another Node. The loader's own message (node-gyp-build's
 * spans lines) stays on `cause`.
 */
export function nativeLoadError(e: unknown): JouletraceError {
  const cause = e instanceof Error ? e.message : String(e);
  const oneLine = cause.replace(/\s*\n\s*/g, ' ').trim();
  const rebuild = (verb: string) =>
    `Fix: ${verb} it with \`npm rebuild jouletrace\`, which compiles it and needs ` +
    `\`sudo apt-get install ${BUILD_PACKAGES}\` ${BPFTOOL_HINT}.`;
  let message: string;
  const library = /([\w.+-]+\.so(?:\.[\w.]+)?): cannot open shared object file/.exec(cause);
  if (/^No native build was found/.test(cause)) {
    message =
      `the native addon is not built for this platform (${process.platform}-${process.arch}, ` +
      `Node ${process.versions.node}, ABI ${process.versions.modules}): no build/Release and no matching prebuild. ` +
      rebuild('build') +
      // npm 12 skips a dependency's install script unless the project approves it, and says so
      // only once, in the install's output: the compile never ran.
      ' If npm skipped its install script (npm 12 runs only those your package.json\'s ' +
      '`allowScripts` approves; `--ignore-scripts`), approve it first: `npm approve-scripts jouletrace`.';
  } else if (library) {
    const soname = library[1];
    const pkg = RUNTIME_PACKAGES[soname];
    message =
      `the native addon needs the shared library ${soname}, which is not installed. ` +
      (pkg ? `Fix: \`sudo apt-get install ${pkg.pkg}\`${pkg.note ?? ''}.` : `Fix: install the package that provides ${soname}.`);
  } else if (/NODE_MODULE_VERSION|undefined symbol|invalid ELF header|wrong ELF class/.test(cause)) {
    message =
      `the native addon was built for another Node.js or platform (${oneLine}). ` +
      rebuild('rebuild');
  } else {
    message = `the native addon could not be loaded (${oneLine}). ${rebuild('build')}`;
  }
  return new JouletraceError('ERR_JOULETRACE_NATIVE_LOAD', message, e);
}
