import type { ServerOptions } from 'node:http';
import type { TimeoutsConfig } from '../config.ts';

/** The Fastify server options that bound how long a slow client can hold a connection. */
export interface ServerTimeoutOptions {
  /** Socket inactivity timeout in milliseconds: no byte in either direction for this long closes the socket. */
  connectionTimeout: number;
  /** How long an idle keep-alive connection stays open after a response, in milliseconds. */
  keepAliveTimeout: number;
  /** How long a client may take to send a whole request, body included, in milliseconds. */
  requestTimeout: number;
}

/**
 * Fastify's own timeout options. The socket inactivity timeout (`connectionTimeout`) covers what the others do
 * not: a handler or a response write during which nothing moves. It cannot stop a client that trickles bytes,
 * since every byte counts as activity; the request and headers timeouts below do, because Node measures them
 * from the request's start by a periodic sweep over the open connections, however active each looks. An idle
 * keep-alive connection follows `keepAliveTimeout` alone.
 */
export function serverTimeoutOptions(timeouts: TimeoutsConfig): ServerTimeoutOptions {
  return {
    connectionTimeout: timeouts.connectionMs,
    keepAliveTimeout: timeouts.keepAliveMs,
    requestTimeout: timeouts.requestMs,
  };
}

/** How often Node checks open connections against the headers and request timeouts, at most, in ms. */
const MAX_CHECKING_INTERVAL_MS = 1000;

/**
 * The options for Node's `http.createServer` (Fastify's `http` option) that Fastify does not set itself: the
 * headers timeout, which is what defeats a slowloris client (one that keeps a request's headers unfinished,
 * sending a byte now and then), and how often it is checked. Node's own sweep runs every 30 s, which would let
 * such a client hold its connection up to 30 s past the timeout; a sweep every second (or a fifth of the
 * headers timeout, when that is shorter) costs a walk over the open connections and keeps the bound close.
 */
export function httpServerTimeoutOptions(
  timeouts: TimeoutsConfig,
): Pick<ServerOptions, 'headersTimeout' | 'requestTimeout' | 'connectionsCheckingInterval'> {
  return {
    headersTimeout: timeouts.headersMs,
    // Also given here because Node checks, when it creates the server, that the headers timeout is not longer
    // than the request timeout; Fastify sets its `requestTimeout` only afterwards.
    requestTimeout: timeouts.requestMs,
    connectionsCheckingInterval: Math.min(
      MAX_CHECKING_INTERVAL_MS,
      Math.max(10, Math.floor(timeouts.headersMs / 5)),
    ),
  };
}
