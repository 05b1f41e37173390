// WrapCounter (native/energy/wrap_counter.h) at the edge no device reaches in a test: perf's
// 64-bit count passing 2^64, after 2^32 J of the kernel's 2^-32 J units (248 days at 200 W). The
// header is compiled into a small program with the compiler that builds the addon.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, expect, it } from 'vitest';

const cxx = process.env.CXX ?? 'c++';
const haveCompiler = !spawnSync(cxx, ['--version']).error;

const dirs: string[] = [];
afterEach(() => {
  while (dirs.length) fs.rmSync(dirs.pop()!, { recursive: true, force: true });
});

/** Compiles `body` (the inside of main, with WrapCounter in scope) and returns what it prints. */
function run(body: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-wrap-'));
  dirs.push(dir);
  const src = path.join(dir, 'main.cc');
  fs.writeFileSync(src, `#include <cstdio>\n#include "energy/wrap_counter.h"\nusing namespace jouletrace;\nint main() {\n${body}\n}\n`);
  const exe = path.join(dir, 'main');
  const c = spawnSync(cxx, ['-std=c++17', '-Wall', '-Wextra', '-Werror', '-I', path.resolve(__dirname, '../native'), src, '-o', exe], { encoding: 'utf8' });
  if (c.status !== 0) throw new Error(`${cxx} failed:\n${c.stderr}`);
  const r = spawnSync(exe, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`main failed: ${r.stderr}`);
  return r.stdout;
}

const skip = haveCompiler ? undefined : `no C++ compiler (${cxx})`;

// The sampler takes a total below the last for nothing: the wrap read as a restart added 0 J
// until the total climbed back past its old value, and every read meanwhile was an ERANGE.
it.skipIf(skip !== undefined)(`carries a 64-bit count across 2^64 exactly${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const out = run(`
    WrapCounter w(0);  // perf: the count's own 64 bits
    uint64_t count = ~0ull - 2500;
    w.reset(count);
    int failed = 0;
    for (int i = 0; i < 3; i++) {
      count += 1000;  // wraps in the second step, as the kernel's local64_add does
      if (!w.update(count)) failed++;
    }
    std::printf("%llu %d\\n", (unsigned long long)w.total(), failed);
    // Backwards by less than half of 2^64: a count that started again, as for every counter.
    std::printf("%d\\n", int(w.update(count - 5)));`);
  expect(out).toBe('3000 0\n0\n');
});

// A total in the count's own units overflows where the count wraps: kept in ticks of 2^shift
// units, the remainder carried, it adds up to the same energy.
it.skipIf(skip !== undefined)(`counts ticks of 2^shift units, carrying the remainder${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const out = run(`
    WrapCounter w(0, 12);
    uint64_t count = ~0ull - 100000;
    w.reset(count);
    for (int i = 0; i < 1000; i++) w.update(count += 1234);  // 1,234,000 units, across 2^64
    std::printf("%llu\\n", (unsigned long long)w.total());`);
  expect(out).toBe(`${Math.floor(1_234_000 / 4096)}\n`);
});
