import Fastify from 'fastify';

/**
 * The baseline every Plinth figure is printed next to: a bare Fastify "hello world" on the same machine, in
 * its own process, in the same run. The gap between the two is what Plinth's plumbing costs.
 */
const port = Number(process.argv[2]);
const app = Fastify({ logger: false });
app.get('/hello', async () => ({ hello: 'world' }));
await app.listen({ host: '127.0.0.1', port });
process.stdout.write('ready\n');
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
