// The addon's C++ compiles for arm64 (Graviton, Ampere), not only for the x86-64 it is built and
// tested on here: it once included <cpuid.h> unconditionally, so an arm64 install failed to
// compile and the bpf tracker's ERR_JOULETRACE_UNSUPPORTED_ARCH fall-back to procfs was never
// reached. clang checks every source of binding.gyp for aarch64 with the build's flags and
// Node's headers; `npm test`'s set-up installs the aarch64 C and C++ headers it needs.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { itGated, toolsRequired } from './fixtures/gated';
import { scratchDirs, script, which } from './fixtures/shell-scripts';

const ROOT = path.join(__dirname, '..');
const TARGET = 'aarch64-linux-gnu';
const scratch = scratchDirs();

interface Target {
  sources: string[];
  include_dirs: string[];
  defines: string[];
  cflags_cc: string[];
}

// binding.gyp is a Python literal (comments, trailing commas): Python reads it, as gyp does.
function addonTarget(): Target {
  const r = spawnSync('python3', ['-c', 'import ast, json, sys; print(json.dumps(ast.literal_eval(open(sys.argv[1]).read())))', path.join(ROOT, 'binding.gyp')], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`python3 could not read binding.gyp: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { targets: (Target & { target_name: string })[] }).targets.find((t) => t.target_name === 'jouletrace')!;
}

// Node's headers where node-gyp took them (its nodedir), else beside this node, else node-gyp's cache.
function nodeHeaders(): string | undefined {
  const places: string[] = [];
  const gypi = path.join(ROOT, 'build/config.gypi');
  const nodedir = fs.existsSync(gypi) ? /"nodedir": "([^"]+)"/.exec(fs.readFileSync(gypi, 'utf8'))?.[1] : undefined;
  if (nodedir) places.push(path.join(nodedir, 'include/node'));
  places.push(path.join(path.dirname(process.execPath), '../include/node'));
  places.push(path.join(process.env.HOME ?? '/root', '.cache/node-gyp', process.versions.node, 'include/node'));
  return places.find((p) => fs.existsSync(path.join(p, 'node_api.h')));
}

const clang = which('clang++');
const headers = nodeHeaders();
const skeletons = path.join(ROOT, 'build/Release/obj/gen/bpf');
// A one-line aarch64 C++ file that includes libc and libstdc++ tells whether their headers are here.
const crossHeaders = clang ? spawnSync(clang, [`--target=${TARGET}`, '-fsyntax-only', '-x', 'c++', '-'], { input: '#include <cstdint>\n#include <string>\n', encoding: 'utf8' }) : undefined;
const missing = !clang
  ? 'no clang++ on PATH (apt-get install clang)'
  : !headers
    ? `no Node.js headers (node_api.h) for Node ${process.versions.node}: run node-gyp once to fetch them`
    : !fs.existsSync(path.join(skeletons, 'thread_tracker.skel.h'))
      ? `no BPF skeleton headers in ${skeletons}: build the addon first (npx node-gyp rebuild)`
      : crossHeaders?.status !== 0
        ? `no aarch64 C/C++ headers (npm test's set-up installs them: libc6-dev-arm64-cross and libstdc++-N-dev-arm64-cross, N being g++'s major version): ${crossHeaders?.stderr.split('\n')[0]}`
        : undefined;

describe('the native addon on arm64', () => {
  itGated(
    'compiles for aarch64 with the build flags: no error, no warning',
    missing,
    toolsRequired(),
    'JOULETRACE_REQUIRE_TOOLS=1',
    () => {
      const t = addonTarget();
      // gyp's <!(command) is the command's output; the skeletons are where the build put them.
      const includes = t.include_dirs.map((d) => {
        const command = /^<!\((.*)\)$/.exec(d)?.[1];
        return command ? spawnSync('bash', ['-c', command], { cwd: ROOT, encoding: 'utf8' }).stdout.trim() : d.replace('<(SHARED_INTERMEDIATE_DIR)/bpf', skeletons);
      });
      const r = spawnSync(
        clang!,
        [
          `--target=${TARGET}`,
          '-fsyntax-only',
          ...t.cflags_cc.filter((f) => f !== '-O2'),
          ...t.defines.map((d) => `-D${d}`),
          `-I${headers}`,
          ...includes.map((d) => `-I${d}`),
          ...t.sources,
        ],
        { cwd: ROOT, encoding: 'utf8' },
      );
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
    },
    180_000,
  );
});

describe("set-up's arm64 headers", () => {
  // The libstdc++ package is named by GCC's version: Debian 12's g++ is 12, Ubuntu 24.04's 13.
  function missingWith(gxx: string | undefined, aptDepends: string): string {
    const dir = scratch('arm64');
    const bin = path.join(dir, 'bin');
    fs.mkdirSync(bin);
    if (gxx) fs.writeFileSync(path.join(bin, 'g++'), script(`echo ${gxx}`), { mode: 0o755 });
    fs.writeFileSync(path.join(bin, 'apt-cache'), script(`[ "$1 $2" = "depends g++" ] && printf '${aptDepends}'`), { mode: 0o755 });
    for (const cmd of ['grep', 'cut']) fs.symlinkSync(which(cmd)!, path.join(bin, cmd));
    const r = spawnSync(which('bash')!, ['--norc', '-euo', 'pipefail', '-c', 'source scripts/system-packages.sh; missing=(); missing_arm64_headers; echo "${missing[*]}"'], {
      cwd: ROOT,
      encoding: 'utf8',
      env: { PATH: bin, ARM64_SYSROOT: path.join(dir, 'sysroot') },
    });
    expect(r.stderr).toBe('');
    return r.stdout.trim();
  }

  it("names libc's and the host g++'s libstdc++ cross headers where they are missing", () => {
    expect(missingWith('13.2.0', '')).toBe('libc6-dev-arm64-cross libstdc++-13-dev-arm64-cross');
    // g++ not installed yet: the version apt's g++ depends on.
    expect(missingWith(undefined, 'g++\\n  Depends: cpp\\n  Depends: g++-12\\n')).toBe('libc6-dev-arm64-cross libstdc++-12-dev-arm64-cross');
    // Ubuntu 24.04's g++ depends on g++-x86-64-linux-gnu as well, named first: no version in it.
    expect(missingWith(undefined, 'g++\\n  Depends: cpp\\n  Depends: g++-x86-64-linux-gnu\\n  Depends: g++-13\\n')).toBe('libc6-dev-arm64-cross libstdc++-13-dev-arm64-cross');
  });

  it('names nothing where they are there', () => {
    const dir = scratch('arm64-sysroot');
    fs.mkdirSync(path.join(dir, 'include/c++/12'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'include/stdint.h'), '');
    fs.writeFileSync(path.join(dir, 'include/c++/12/cstdint'), '');
    const r = spawnSync('bash', ['--norc', '-euo', 'pipefail', '-c', 'source scripts/system-packages.sh; missing=(); missing_arm64_headers; echo "[${missing[*]}]"'], {
      cwd: ROOT,
      encoding: 'utf8',
      env: { ...process.env, ARM64_SYSROOT: dir },
    });
    expect(r.stdout.trim()).toBe('[]');
  });
});
