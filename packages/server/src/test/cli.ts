import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The repository root, where `npm start` runs `packages/server/bin/plinth.js`. */
const REPO_ROOT = fileURLToPath(new URL('../../../../', import.meta.url));

/** What a `plinth` command did: its exit code and what it printed. */
export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * How long a command may run before the test kills it: a command that hangs must not hang the test run. Well
 * above a start-up on a busy machine (several seconds: each start loads the app), well below the test timeout.
 */
const CLI_TIMEOUT_MS = 40_000;

/**
 * Runs `node packages/server/bin/plinth.js <args>` from the repository root as an operator would, with only
 * `env` on top of a bare environment (PATH, HOME, NODE_ENV=test, silent logs): nothing of the test's own
 * environment configures the command.
 */
export function runPlinth(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['packages/server/bin/plinth.js', ...args], {
      cwd: REPO_ROOT,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? '',
        NODE_ENV: 'test',
        LOG_LEVEL: 'silent',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString('utf8');
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString('utf8');
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), CLI_TIMEOUT_MS);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
