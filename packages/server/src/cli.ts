import { resolve } from 'node:path';
import { coreErrors } from '@plinth/shared';
import { Command } from 'commander';
import pino from 'pino';
import { type Config, ConfigError, loadConfig } from './config.ts';
import { systemClock } from './core/clock.ts';
import { AppError } from './core/errors.ts';
import { isId } from './core/ids.ts';
import { VERSION } from './core/version.ts';
import { describeDatabase, openDatabase } from './db/database.ts';
import { migrateToLatest, migrationStatus } from './db/migrate.ts';

/**
 * The `plinth` command. Every subcommand reads the same configuration as the server (environment variables
 * and `.env`), so `DATABASE_URL=… plinth migrate` acts on the database the server would use. A command imports
 * the modules it needs when it runs: loading the server and every module takes a second or more, which
 * `plinth migrate` or `plinth --version` need not wait for.
 */
const program = new Command('plinth')
  .description('Plinth: a production-grade backend platform.')
  .version(VERSION, '-v, --version')
  .showHelpAfterError();

program
  .command('serve')
  .description('Start the HTTP server (applies migrations first on SQLite, or when AUTO_MIGRATE=true).')
  .action(async () => {
    const { startServer } = await import('./server.ts');
    await startServer(loadConfig());
  });

const migrate = program.command('migrate').description('Apply or inspect database migrations.');
migrate
  .command('up', { isDefault: true })
  .description('Apply every pending migration.')
  .action(async () => {
    await withDatabase(async (database, log) => {
      const applied = await migrateToLatest(database.db, database.dialect);
      log(
        applied.length === 0
          ? 'Database is up to date.'
          : `Applied ${applied.length} migration(s):\n  ${applied.join('\n  ')}`,
      );
    });
  });
migrate
  .command('status')
  .description('List migrations and whether each has been applied; exits 1 when any is pending.')
  .action(async () => {
    await withDatabase(async (database, log) => {
      const states = await migrationStatus(database.db, database.dialect);
      for (const m of states)
        log(`${m.executedAt ? 'applied' : 'pending'}  ${m.name}${m.executedAt ? `  (${m.executedAt})` : ''}`);
      const pending = states.filter((m) => !m.executedAt).length;
      log(pending === 0 ? 'Status: current.' : `Status: ${pending} pending.`);
      if (pending > 0) process.exitCode = 1;
    });
  });

program
  .command('create-admin')
  .description(
    'Create an installation operator (superadmin); an existing account with the address is taken over (new password, sessions ended).',
  )
  .requiredOption('--email <email>', 'the email address of the account')
  .option('--name <name>', 'display name', 'Administrator')
  .option(
    '--password <password>',
    'the password (prompted for when omitted; avoid it on shared machines: shell history)',
  )
  .action(async (options: { email: string; name: string; password?: string }) => {
    const password = options.password ?? (await promptPassword('Password: '));
    const { createAdmin } = await import('./modules/auth/index.ts');
    await withDatabase(async (database, log, config) => {
      if (config.autoMigrate) await migrateToLatest(database.db, database.dialect);
      const { id, created } = await createAdmin(
        { db: database.db, database, config, clock: systemClock },
        { email: options.email, password, name: options.name },
      );
      log(created ? `Created superadmin ${id}.` : `Account ${id} is now a superadmin.`);
    });
  });

const audit = program.command('audit').description('Inspect the tamper-evident audit log.');
audit
  .command('verify')
  .description(
    "Recompute the audit hash chains (every organization's, every account's, the installation's) and print ok or the first broken event; exits 1 when any is broken.",
  )
  .option('--org <id>', 'verify only this organization (default: every chain)')
  .action(async (options: { org?: string }) => {
    const { auditChains, verifyAuditChain } = await import('./modules/audit/index.ts');
    await withDatabase(async (database, log) => {
      if (options.org !== undefined && !isId(options.org)) {
        throw new AppError(coreErrors.VALIDATION_FAILED, {
          detail: `--org: not an organization id: ${options.org}`,
        });
      }
      const orgIds = options.org ? [options.org.toLowerCase()] : await auditChains(database);
      let broken = 0;
      for (const orgId of orgIds) {
        const result = await verifyAuditChain(database, orgId);
        if (result.ok) log(`ok  ${orgId}  (${result.checked} events)`);
        else {
          broken += 1;
          log(`broken  ${orgId}  at seq ${result.brokenAt}  (${result.checked} events checked)`);
        }
      }
      log(
        orgIds.length === 0
          ? 'No audit log yet.'
          : broken === 0
            ? `All ${orgIds.length} chain(s) verify.`
            : `${broken} of ${orgIds.length} chain(s) broken.`,
      );
      if (broken > 0) process.exitCode = 1;
    });
  });

program
  .command('backup')
  .description(
    'Back up the SQLite database now (embedded mode), as the nightly job does: online backup, verified, into BACKUP_DIR, keeping the BACKUP_KEEP newest.',
  )
  .option('--dir <dir>', 'write the backup here instead of BACKUP_DIR')
  .option('--keep <n>', 'keep this many backups instead of BACKUP_KEEP')
  .action(async (options: { dir?: string; keep?: string }) => {
    const config = loadConfig();
    const log = (line: string) => process.stdout.write(`${line}\n`);
    if (config.database.dialect !== 'sqlite') {
      throw new AppError(coreErrors.BAD_REQUEST, {
        detail:
          'plinth backup backs up the SQLite database of embedded mode; back up PostgreSQL with pg_dump or your provider (docs/operations.md).',
      });
    }
    const keep = options.keep === undefined ? config.backup.keep : Number(options.keep);
    if (!Number.isInteger(keep) || keep < 1 || keep > 1000) {
      throw new AppError(coreErrors.VALIDATION_FAILED, {
        detail: `--keep: not a number from 1 to 1000: ${options.keep}`,
      });
    }
    const { backupSqlite } = await import('./modules/backup/index.ts');
    const result = await backupSqlite({
      source: config.database.path,
      dir: options.dir === undefined ? config.backup.dir : resolve(options.dir),
      keep,
      now: systemClock.now(),
    });
    log(`Backup written: ${result.file} (${result.bytes} bytes, integrity check ok).`);
    for (const removed of result.removed) log(`Removed old backup: ${removed}`);
  });

/** Reads a password from the terminal without echoing it, or one line from standard input when piped. */
async function promptPassword(question: string): Promise<string> {
  const input = process.stdin;
  if (!input.isTTY) {
    const chunks: Buffer[] = [];
    for await (const chunk of input) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? '';
  }
  process.stdout.write(question);
  input.setRawMode(true);
  input.resume();
  let value = '';
  return new Promise((resolve, reject) => {
    const onData = (data: Buffer) => {
      for (const char of data.toString('utf8')) {
        if (char === '\r' || char === '\n') {
          input.setRawMode(false);
          input.pause();
          input.off('data', onData);
          process.stdout.write('\n');
          resolve(value);
          return;
        }
        if (char === '\u0003') {
          input.setRawMode(false);
          reject(new Error('cancelled'));
          return;
        }
        value = char === '\u007f' ? value.slice(0, -1) : value + char;
      }
    };
    input.on('data', onData);
  });
}

async function withDatabase(
  work: (
    database: ReturnType<typeof openDatabase>,
    log: (line: string) => void,
    config: Config,
  ) => Promise<void>,
): Promise<void> {
  const config = loadConfig();
  const database = openDatabase(config.database, { log: pino({ level: config.log.level }) });
  const log = (line: string) => process.stdout.write(`${line}\n`);
  log(`Database: ${describeDatabase(config.database)}`);
  try {
    await work(database, log, config);
  } finally {
    await database.close();
  }
}

try {
  await program.parseAsync(process.argv);
} catch (error) {
  // Errors a person can act on are printed as sentences; anything else is a bug and keeps its stack trace.
  if (error instanceof ConfigError) process.stderr.write(`${error.message}\n`);
  else if (error instanceof AppError) {
    process.stderr.write(
      `${error.detail ?? error.title}\n${(error.errors ?? []).map((e) => `  ${e.message}\n`).join('')}`,
    );
  } else throw error;
  process.exit(1);
}
