import { Command } from 'commander';
import pino from 'pino';
import { ConfigError, loadConfig } from './config.ts';
import { VERSION } from './core/version.ts';
import { openDatabase } from './db/database.ts';
import { migrateToLatest, migrationStatus } from './db/migrate.ts';
import { describeDatabase, startServer } from './server.ts';

/**
 * The `plinth` command. Every subcommand reads the same configuration as the server (environment variables
 * and `.env`), so `DATABASE_URL=… plinth migrate` acts on the database the server would use.
 */
const program = new Command('plinth')
  .description('Plinth: a production-grade backend platform.')
  .version(VERSION, '-v, --version')
  .showHelpAfterError();

program
  .command('serve')
  .description('Start the HTTP server (applies migrations first on SQLite, or when AUTO_MIGRATE=true).')
  .action(async () => {
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

async function withDatabase(
  work: (database: ReturnType<typeof openDatabase>, log: (line: string) => void) => Promise<void>,
): Promise<void> {
  const config = loadConfig();
  const database = openDatabase(config.database, { log: pino({ level: config.log.level }) });
  const log = (line: string) => process.stdout.write(`${line}\n`);
  log(`Database: ${describeDatabase(config.database)}`);
  try {
    await work(database, log);
  } finally {
    await database.close();
  }
}

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`${error.message}\n`);
  process.exit(1);
}
