import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A real HTTP receiver for webhook tests, on 127.0.0.1 (a random port): it records every request and answers
 * what the test says, so deliveries go over real sockets through the real client.
 */

export interface Received {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface Answer {
  status: number;
  headers?: Record<string, string>;
  body?: string;
}

export interface TestReceiver {
  /** `http://127.0.0.1:<port>` */
  origin: string;
  received: Received[];
  /** Decides each answer; the default answers 204. `n` counts requests from 1. */
  answer: (request: Received, n: number) => Answer;
  close(): Promise<void>;
}

export async function startReceiver(
  answer?: (request: Received, n: number) => Answer,
): Promise<TestReceiver> {
  const receiver: TestReceiver = {
    origin: '',
    received: [],
    answer: answer ?? (() => ({ status: 204 })),
    close: async () => {},
  };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const request: Received = {
        method: req.method ?? '',
        path: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      };
      receiver.received.push(request);
      const reply = receiver.answer(request, receiver.received.length);
      res.writeHead(reply.status, reply.headers ?? {});
      res.end(reply.body ?? '');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  receiver.origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  receiver.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return receiver;
}
