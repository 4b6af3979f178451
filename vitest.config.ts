import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['packages/*/src/**/*.test.ts'],
    globalSetup: ['packages/server/src/test/global-setup.ts'],
    pool: 'forks',
    // A worker imports the app once and runs its files on that module graph, rather than importing it afresh for
    // each file (2.5 s a file, two minutes a run). The app keeps no module-level state a test could see: every
    // test app is built with its own database, clock, registries and caches.
    isolate: false,
    // One test file per CPU. Vitest's default leaves one CPU free, which on a two-CPU machine (CI's) runs the
    // files one at a time; but they spend much of their time waiting on PostgreSQL, Redis, child processes and
    // timers, so a worker per CPU keeps both busy. Each file's apps have databases of their own.
    maxWorkers: availableParallelism(),
    // Generous, because a timeout here only catches a hang (speed is measured by `npm run bench`, never asserted):
    // with both CPUs busy, a test that starts `plinth` several times (each start loads the app) takes tens of s.
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
