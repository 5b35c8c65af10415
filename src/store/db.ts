import fs from 'node:fs';
import { Kysely, Migrator, PostgresDialect } from 'kysely';
import pg from 'pg';
import { Worker } from 'node:worker_threads';
import type { Database } from './schema.js';
import { migrationProvider } from './migrations.js';

export type StoreConfig = { kind: 'embedded'; path: string } | { kind: 'postgres'; url: string; pool_size?: number };

export interface Store {
  db: Kysely<Database>;
  kind: StoreConfig['kind'];
  /** The PostgreSQL store's connection pool (the audit shipper COPYs through it); none for the embedded store. */
  pool?: pg.Pool;
  close(): Promise<void>;
}

/**
 * The embedded store (PGlite: PostgreSQL compiled to WASM) runs on its own thread: its queries execute
 * synchronously inside WASM, and on the gateway's event loop they would stall every session while audit batches
 * are written. The worker is inline so it runs the same from compiled output and from sources under test.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
(async () => {
  const { PGlite } = await import(workerData.pglite);
  const db = await PGlite.create(workerData.path);
  parentPort.postMessage({ ready: true });
  parentPort.on('message', async (msg) => {
    if (msg.close) {
      await db.close();
      parentPort.postMessage({ id: msg.id, closed: true });
      return;
    }
    try {
      const r = await db.query(msg.sql, msg.params);
      parentPort.postMessage({ id: msg.id, rows: r.rows, affectedRows: r.affectedRows });
    } catch (e) {
      parentPort.postMessage({ id: msg.id, error: e.message, code: e.code });
    }
  });
})().catch((e) => parentPort.postMessage({ ready: false, error: String(e && e.message || e) }));
`;

async function startPgliteWorker(dir: string) {
  const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { path: dir, pglite: import.meta.resolve('@electric-sql/pglite') } });
  let next = 1;
  const waiting = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  const failAll = (e: Error) => {
    for (const w of waiting.values()) w.reject(e);
    waiting.clear();
  };
  await new Promise<void>((resolve, reject) => {
    worker.once('error', reject);
    worker.once('message', (m) => (m.ready ? resolve() : reject(new Error(`embedded store failed to start: ${m.error}`))));
  });
  worker.on('message', (m: { id: number; error?: string; code?: string }) => {
    const w = waiting.get(m.id);
    if (!w) return;
    waiting.delete(m.id);
    if (m.error) w.reject(Object.assign(new Error(m.error), { code: m.code }));
    else w.resolve(m);
  });
  worker.on('error', (e) => failAll(new Error(`embedded store thread failed: ${e.message}`)));
  worker.on('exit', () => failAll(new Error('embedded store thread exited')));
  const send = (msg: object) =>
    new Promise<any>((resolve, reject) => {
      const id = next++;
      waiting.set(id, { resolve, reject });
      worker.postMessage({ ...msg, id });
    });
  return {
    query: (sql: string, params: unknown[]) => send({ sql, params }) as Promise<{ rows: Record<string, unknown>[]; affectedRows?: number }>,
    close: async () => {
      await send({ close: true }).catch(() => {});
      await worker.terminate();
    },
  };
}

/**
 * A pg.Pool look-alike over the single embedded connection, so kysely's PostgresDialect can drive it.
 * "Connections" are handed out one at a time so transactions never interleave.
 */
function pglitePool(db: { query: (sql: string, params: unknown[]) => Promise<{ rows: Record<string, unknown>[]; affectedRows?: number }> }) {
  let tail: Promise<void> = Promise.resolve();
  const client = {
    async query(text: string, params: unknown[]) {
      const r = await db.query(text, params);
      const command = text.trimStart().split(/\s/, 1)[0]!.toUpperCase();
      return { command, rowCount: r.affectedRows ?? r.rows.length, rows: r.rows };
    },
    release() {},
  };
  return {
    async connect() {
      let release!: () => void;
      const prev = tail;
      tail = new Promise<void>((r) => (release = r));
      await prev;
      return { ...client, release };
    },
    async end() {},
  };
}

export async function openStore(cfg: StoreConfig): Promise<Store> {
  let db: Kysely<Database>;
  let closeExtra: () => Promise<void>;
  let pgPool: pg.Pool | undefined;
  if (cfg.kind === 'embedded') {
    fs.mkdirSync(cfg.path, { recursive: true });
    const lite = await startPgliteWorker(cfg.path);
    db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: pglitePool(lite) as any }) });
    closeExtra = () => lite.close();
  } else {
    const pool = new pg.Pool({ connectionString: cfg.url, max: cfg.pool_size ?? 5 });
    pool.on('error', () => {}); // idle client errors surface on the next query instead of crashing the process
    pgPool = pool;
    db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    closeExtra = async () => {};
  }
  const migrator = new Migrator({ db, provider: migrationProvider, migrationTableName: 'sluice_migrations', migrationLockTableName: 'sluice_migrations_lock' });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    await db.destroy().catch(() => {});
    const failed = results?.find((r) => r.status === 'Error');
    throw new Error(`store migration ${failed?.migrationName ?? ''} failed: ${(error as Error).message ?? error}`);
  }
  return {
    db,
    kind: cfg.kind,
    pool: pgPool,
    async close() {
      await db.destroy();
      await closeExtra();
    },
  };
}
