import closeWithGrace from 'close-with-grace';
import type { FastifyInstance } from 'fastify';
import { type AppOptions, buildApp } from './app.ts';
import type { Config } from './config.ts';
import { describeDatabase } from './db/database.ts';

/**
 * Builds the app, listens, and shuts down gracefully on SIGTERM/SIGINT: stop accepting connections, let
 * in-flight requests finish (at most `SHUTDOWN_TIMEOUT_MS`), close the database pools, exit 0. This is the only
 * place that listens.
 */
export async function startServer(config: Config, options: AppOptions = {}): Promise<FastifyInstance> {
  const app = await buildApp(config, options);
  await app.listen({
    host: config.host,
    port: config.port,
    // The one start-up line: where it listens and which database it uses.
    listenTextResolver: (address) =>
      `Plinth listening on ${address} (database: ${describeDatabase(config.database)})`,
  });

  closeWithGrace({ delay: config.shutdownTimeoutMs, logger: app.log }, async ({ signal, err }) => {
    if (err) app.log.error({ err }, 'shutting down after an uncaught error');
    else app.log.info({ signal }, 'shutting down: finishing in-flight requests');
    await app.close();
  });
  return app;
}
