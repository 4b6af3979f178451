import type { FastifyBaseLogger } from 'fastify';
import type { Transaction } from 'kysely';
import { type DatabaseHandle, isPostgres } from '../../db/database.ts';
import type { Database } from '../../db/schema.ts';
import { eventHash, GENESIS_HASH, personalDigest } from './audit.chain.ts';
import * as repo from './audit.repo.ts';

/*
 * The sequencer: what gives audit events their place in a chain. A change's transaction writes its event to
 * `audit_pending`, unchained and without a lock (record.ts); the sequencer moves a chain's pending events into
 * `audit_events` in batches, each with the next `seq`, the digest of its personal fields and the hash that links
 * it to the one before — under the chain head's lock, so concurrent sequencers (replicas, readers) never fork
 * a chain. Chain order is the order the sequencer finds events in: their ids', which are UUIDv7s, so the order
 * they were made in.
 *
 * Readers keep the contract that every committed event has its `seq`: each reader of a chain (the list, the
 * export, verification, the archive) sequences it first, and what reads across chains (a person's data export,
 * their erasure, the usage reports, `plinth audit verify`) sequences every chain first. In the background, each
 * replica sequences every chain with pending events every `AUDIT_SEQUENCE_INTERVAL_MS`, so the table stays
 * nearly empty.
 */

/** How many of a chain's pending events one batch moves: one insert's parameters stay well under both limits. */
const BATCH = 200;
/** How many chains one background pass looks at; the next pass takes the rest. */
const CHAINS_PER_PASS = 1000;

/** The chained event for a pending one: its `seq`, personal digest and hash after `prevHash`. */
function chained(pending: repo.PendingEventRow, seq: number, prevHash: string): repo.AuditEventRow {
  const digest = personalDigest({
    actorId: pending.actor_id,
    ip: pending.ip,
    userAgent: pending.user_agent,
    changes: pending.changes,
  });
  const hash = eventHash({
    id: pending.id,
    orgId: pending.org_id,
    seq,
    at: pending.at,
    actorType: pending.actor_type,
    actorVia: pending.actor_via,
    action: pending.action,
    targetType: pending.target_type,
    targetId: pending.target_id,
    requestId: pending.request_id,
    outcome: pending.outcome,
    personalDigest: digest,
    prevHash,
  });
  return { ...pending, seq, personal_digest: digest, prev_hash: prevHash, hash, erased_at: null };
}

/** The chain's head, locked; created first (genesis) for a chain's first event. */
async function lockOrCreateHead(db: Transaction<Database>, chain: string): Promise<repo.ChainHeadRow> {
  const head = await repo.lockHead(db, chain);
  if (head) return head;
  await repo.createHead(db, {
    org_id: chain,
    seq: 0,
    hash: GENESIS_HASH,
    archived_through_seq: 0,
    archived_hash: GENESIS_HASH,
  });
  const created = await repo.lockHead(db, chain);
  if (!created) throw new Error(`the audit chain head of ${chain} is missing after creating it`);
  return created;
}

/**
 * Moves every pending event of `chain` that `db` sees into the chain, in `db`, whose write lock (SQLite) the
 * caller holds. Locks the chain's head (until `db` ends) only when there is something to move. Returns how many
 * events it moved.
 */
async function moveChain(db: Transaction<Database>, chain: string): Promise<number> {
  let pending = await repo.pendingEvents(db, chain, BATCH);
  if (pending.length === 0) return 0;
  let head = await lockOrCreateHead(db, chain);
  // While this one waited for the head, another replica's sequencer may have moved them (PostgreSQL; SQLite
  // has one writer, whose transactions run one at a time).
  if (isPostgres(db)) pending = await repo.pendingEvents(db, chain, BATCH);
  let moved = 0;
  while (pending.length > 0) {
    let seq = Number(head.seq);
    let hash = head.hash;
    const events = pending.map((event) => {
      seq += 1;
      const row = chained(event, seq, hash);
      hash = row.hash;
      return row;
    });
    await repo.insertEvents(db, events);
    await repo.moveHead(db, chain, { seq, hash });
    await repo.deletePending(
      db,
      chain,
      pending.map((event) => event.id),
    );
    head = { ...head, seq, hash };
    moved += pending.length;
    pending = pending.length < BATCH ? [] : await repo.pendingEvents(db, chain, BATCH);
  }
  return moved;
}

/**
 * Moves every pending event of `chain` into the chain, in `db`: a transaction on the chain (`withTenant`) or
 * across tenants, best begun with this call (on SQLite it takes the write lock; see repo.takeSqliteWriteLock).
 * Returns how many events it moved.
 */
export async function sequenceChain(db: Transaction<Database>, chain: string): Promise<number> {
  await repo.takeSqliteWriteLock(db);
  return moveChain(db, chain);
}

/**
 * Moves every pending event of every chain into its chain, in `db` (a transaction across tenants), locking the
 * heads in the order of their names, as every sequencer that holds more than one does, so two never deadlock.
 * For what reads across chains. Returns how many events it moved.
 */
export async function sequenceAllChains(db: Transaction<Database>): Promise<number> {
  await repo.takeSqliteWriteLock(db);
  let moved = 0;
  for (;;) {
    const chains = await repo.pendingChains(db, CHAINS_PER_PASS);
    for (const chain of chains) moved += await moveChain(db, chain);
    if (chains.length < CHAINS_PER_PASS) return moved;
  }
}

/** Sequences `chain` in a transaction of its own: for a reader that reads the chain in several transactions. */
export function sequenceChainNow(
  database: Pick<DatabaseHandle, 'withTenant'>,
  chain: string,
): Promise<number> {
  return database.withTenant(chain, (db) => sequenceChain(db, chain));
}

export interface AuditSequencer {
  /** Starts the background passes. */
  start(): void;
  /** Stops them, waiting for a pass under way. */
  stop(): Promise<void>;
}

export interface AuditSequencerDeps {
  database: DatabaseHandle;
  log: FastifyBaseLogger;
  /** Between two background passes (`AUDIT_SEQUENCE_INTERVAL_MS`). */
  intervalMs: number;
}

/**
 * The background sequencer of one replica: a pass every `intervalMs`, one transaction per chain, so that one
 * chain's head is locked only while its own batch is written. A failed pass is logged and the next one retries:
 * nothing is lost, the events stay pending (and readers still sequence them).
 */
export function createAuditSequencer(deps: AuditSequencerDeps): AuditSequencer {
  const { database, log, intervalMs } = deps;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let stopped = true;

  /** Every chain with pending events, each in a transaction of its own. */
  async function pass(): Promise<void> {
    const chains = await database.acrossTenants((db) => repo.pendingChains(db, CHAINS_PER_PASS));
    for (const chain of chains) await sequenceChainNow(database, chain);
  }

  function schedule(): void {
    if (stopped) return;
    timer = setTimeout(() => {
      running = pass()
        .catch((error: unknown) =>
          log.error({ err: error }, 'an audit sequencer pass failed; the next one retries'),
        )
        .finally(() => {
          running = undefined;
          schedule();
        });
    }, intervalMs);
    timer.unref();
  }

  return {
    start() {
      if (!stopped) return;
      stopped = false;
      schedule();
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
