// WrapCounter (native/energy/wrap_counter.h) at the edges no device reaches in a test: perf's
// 64-bit count passing 2^64, after 2^32 J of the kernel's 2^-32 J units (248 days at 200 W), and
// the time between reads, which an emulated device cannot stretch. The header is compiled into a
// small program with the compiler that builds the addon.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, expect } from 'vitest';
import { itGated, toolsRequired } from './fixtures/gated';

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

const skip = haveCompiler ? undefined : `no C++ compiler (${cxx}): install one (g++, as the addon's build needs) or set CXX`;
// Skips without a compiler, or fails where CI requires one (it builds the addon).
const itCompiled = (name: string, fn: () => void) => itGated(name, skip, toolsRequired(), 'JOULETRACE_REQUIRE_TOOLS=1', fn);

// The sampler takes a total below the last for nothing: the wrap read as a restart added 0 J
// until the total climbed back past its old value, and every read meanwhile was an ERANGE.
itCompiled('carries a 64-bit count across 2^64 exactly', () => {
  const out = run(`
    WrapCounter w(0);  // perf: the count's own 64 bits
    uint64_t count = ~0ull - 2500;
    w.reset(count, 0);
    int failed = 0;
    for (int i = 0; i < 3; i++) {
      count += 1000;  // wraps in the second step, as the kernel's local64_add does
      if (!w.update(count, 0)) failed++;
    }
    std::printf("%llu %d\\n", (unsigned long long)w.total(), failed);
    // Backwards by less than half of 2^64: a count that started again, as for every counter.
    std::printf("%d\\n", int(w.update(count - 5, 0)));`);
  expect(out).toBe('3000 0\n0\n');
});

// A total in the count's own units overflows where the count wraps: kept in ticks of 2^shift
// units, the remainder carried, it adds up to the same energy.
itCompiled('counts ticks of 2^shift units, carrying the remainder', () => {
  const out = run(`
    WrapCounter w(0, 12);
    uint64_t count = ~0ull - 100000;
    w.reset(count, 0);
    for (int i = 0; i < 1000; i++) w.update(count += 1234, 0);  // 1,234,000 units, across 2^64
    std::printf("%llu\\n", (unsigned long long)w.total());`);
  expect(out).toBe(`${Math.floor(1_234_000 / 4096)}\n`);
});

// A restart from the upper half of a 2^32 counter reads as a wrap of up to 2^31 units: 131 kJ of
// 61 µJ units in one interval. The same delta over a sampler's long stall is a real wrap.
itCompiled('takes a delta no domain could draw since the last read for a restart, not the same delta over a long stall', () => {
  const out = run(`
    const double unit = 1.0 / 16384;  // 61 µJ
    const uint64_t ms = 1000000;
    // update() before total(): the arguments of one call are evaluated in no set order.
    auto show = [](const WrapCounter& c, bool moved) { std::printf("%d %llu\\n", int(moved), (unsigned long long)c.total()); };
    WrapCounter w(uint64_t(1) << 32, 0, unit);
    w.reset((uint64_t(1) << 31) + 51000, 0);
    // Restarted at 0, read 1 ms later at 5000: as a wrap, 2^31 - 46000 units (131 kJ in 1 ms).
    bool moved = w.update(5000, 1 * ms);
    show(w, moved);
    moved = w.update(6000, 2 * ms);  // counted from there on
    show(w, moved);
    // The same wrap after 400 s without a read: 328 W, counted exactly.
    WrapCounter slow(uint64_t(1) << 32, 0, unit);
    slow.reset((uint64_t(1) << 31) + 51000, 0);
    moved = slow.update(5000, 400000 * ms);
    show(slow, moved);
    // A wrap from just below 2^32, 1 ms later: 4 J, counted.
    WrapCounter near(uint64_t(1) << 32, 0, unit);
    near.reset((uint64_t(1) << 32) - 3 * 16384, 0);
    moved = near.update(16384, 1 * ms);
    show(near, moved);
    // perf's kernel takes the 32-bit hardware counter's change as signed (rapl_event_update):
    // a restart from the upper half of its range moves the count forward by up to half a wrap,
    // 131 kJ of 61 µJ units here,
    WrapCounter p(0, 20, 1.0 / 4294967296.0);  // 2^-32 J units
    p.reset(1000, 0);
    moved = p.update(1000 + (uint64_t(131072) << 32), 1 * ms);
    show(p, moved);
    // and one from the lower half moves it back: 100 J below the last value, a second later,
    WrapCounter back(0, 20, 1.0 / 4294967296.0);
    back.reset(uint64_t(5000) << 32, 0);
    moved = back.update(uint64_t(4900) << 32, 1000 * ms);
    show(back, moved);
    // or, on a count not yet that far from 0, back past it to just under 2^64.
    WrapCounter past(0, 20, 1.0 / 4294967296.0);
    past.reset(uint64_t(50) << 32, 0);
    moved = past.update(0 - (uint64_t(50) << 32), 1000 * ms);
    show(past, moved);
    // A counter read every millisecond that stood still for 600 ms, then caught up 300 J at
    // once (500 W): the bound runs from when it last moved, so the catch-up counts.
    WrapCounter still(uint64_t(1) << 32, 0, unit);
    still.reset(1000, 0);
    for (uint64_t t = 1; t <= 600; t++) still.update(1000, t * ms);
    moved = still.update(1000 + 300 * 16384, 601 * ms);
    show(still, moved);`);
  expect(out).toBe(`0 0\n1 1000\n1 ${2 ** 31 - 46000}\n1 ${4 * 16384}\n0 0\n0 0\n0 0\n1 ${300 * 16384}\n`);
});

// The sources took one time before their read loop: a sampler stopped between it and a counter's
// read (a cgroup freezer, docker pause, SIGSTOP, CFS throttling) read the pause's energy over one
// interval's time, and at 500 W half a second's pause was refused whole. The bound's time runs
// from a time no later than the read that first showed the last value to one no earlier than
// this read.
itCompiled("bounds a delta by the time from before the last value's read to after this one", () => {
  const out = run(`
    const double unit = 1.0 / 16384;  // 61 µJ
    const uint64_t ms = 1000000, joule = 16384;
    auto show = [](const WrapCounter& c, bool moved) { std::printf("%d %llu\\n", int(moved), (unsigned long long)c.total()); };
    // Its clock read at 1 ms, stopped for 500 ms, then read: 250.5 J of 500 W.
    WrapCounter before(uint64_t(1) << 32, 0, unit);
    before.reset(1000, 0);
    bool moved = before.update(1000 + 501 * joule / 2, 1 * ms, 501 * ms);
    show(before, moved);
    // Read at 1 ms, stopped for 500 ms before the clock after it: the next read holds the pause.
    WrapCounter after(uint64_t(1) << 32, 0, unit);
    after.reset(1000, 0);
    moved = after.update(1000 + joule / 2, 1 * ms, 501 * ms);
    moved = after.update(1000 + joule / 2 + 250 * joule, 502 * ms, 502 * ms) && moved;
    show(after, moved);`);
  expect(out).toBe(`1 ${(501 * 16384) / 2}\n1 ${16384 / 2 + 250 * 16384}\n`);
});
