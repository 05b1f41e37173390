import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Native threads, BPF programs and worker_threads: one process per test file, no isolation tricks.
    pool: 'forks',
    // One file at a time: these tests measure energy and CPU time of real threads on a small
    // machine, and a neighbouring file spinning both CPUs would change what they measure.
    fileParallelism: false,
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
