import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import pg from 'pg';
import { startTestGateway, freshDatabase, PG, type TestGateway } from './support/env.js';

/**
 * The gateway's own server connections are reused across client sessions, and nothing of one client's session
 * reaches the next: settings, role, prepared statements, cursors, LISTEN, advisory locks, an open transaction. A
 * session that ends mid-statement, or that created temporary objects, never goes back to the pool.
 */

let t: TestGateway;
let off: TestGateway;
let db: { name: string; drop: () => Promise<void> };
let key: string;
let offKey: string;

beforeAll(async () => {
  db = await freshDatabase('sluice_pool', 'CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);');
  t = await startTestGateway({ upstreamExtra: 'pool: { size: 4, idle_timeout_s: 30 }' });
  off = await startTestGateway({ upstreamExtra: 'pool: { size: 0 }', storeDb: t.storeDb });
  key = await t.key('human', ['dba'], { name: 'dana' });
  offKey = await off.key('human', ['dba'], { name: 'dana2' });
});
afterAll(async () => {
  await off?.stop();
  await t?.stop();
  await db?.drop();
});

async function session<T>(gw: TestGateway, password: string, fn: (c: pg.Client) => Promise<T>, extra: Partial<pg.ClientConfig> = {}): Promise<T> {
  const c = new pg.Client(gw.conn(password, db.name, extra));
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}
const one = async (c: pg.Client, sql: string) => (await c.query(sql)).rows[0];
const direct = async <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => {
  const c = new pg.Client({ host: PG.host, port: PG.port, user: PG.user, database: db.name });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
};
/** Wait until the pool has taken back as many connections as `n` (the reset runs after the client has gone). */
const returned = (n: number) => expect.poll(() => t.gw.pool!.stats.returned, { timeout: 5000 }).toBeGreaterThanOrEqual(n);

describe('upstream connection pool', () => {
  it('reuses the server connection of a finished session, reset to a fresh session state', async () => {
    const before = t.gw.pool!.stats.returned;
    const first = await session(t, key, async (c) => {
      await c.query("SET search_path = pg_catalog; SET statement_timeout = '7s'; SET ROLE pg_monitor");
      await c.query('PREPARE p AS SELECT 1');
      await c.query('LISTEN pool_channel');
      await c.query('SELECT pg_advisory_lock(4242)');
      await c.query('BEGIN; DECLARE cur CURSOR WITH HOLD FOR SELECT 1; COMMIT');
      await c.query('BEGIN');
      await c.query('SELECT count(*) FROM pg_class');
      return (await one(c, 'SELECT pg_backend_pid() AS pid')).pid as number;
    });
    await returned(before + 1);
    // The lock was released by the reset: another session can take it at once.
    expect((await direct((c) => one(c, 'SELECT pg_try_advisory_lock(4242) AS ok'))).ok).toBe(true);
    await session(t, key, async (c) => {
      expect((await one(c, 'SELECT pg_backend_pid() AS pid')).pid).toBe(first);
      expect((await one(c, 'SHOW search_path')).search_path).toBe('"$user", public');
      expect((await one(c, 'SHOW statement_timeout')).statement_timeout).toBe('0');
      expect((await one(c, 'SELECT current_user AS u')).u).toBe(PG.user);
      expect((await one(c, 'SELECT count(*)::int AS n FROM pg_prepared_statements')).n).toBe(0);
      expect((await one(c, 'SELECT count(*)::int AS n FROM pg_cursors')).n).toBe(0);
      expect((await one(c, 'SELECT count(*)::int AS n FROM pg_listening_channels()')).n).toBe(0);
      expect((await one(c, "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")).n).toBe(0);
      // Not inside the first session's transaction.
      expect((await one(c, 'SELECT now() = statement_timestamp() AS fresh')).fresh).toBe(true);
    });
  });

  it('a session that created temporary objects leaves a fresh backend to the next one, as a reconnect does directly', async () => {
    // DISCARD ALL drops temporary tables, but the backend keeps its temporary schema (pg_my_temp_schema() <> 0), so
    // the next client would not get what a new connection gives (PostgreSQL's temp regression script checks this).
    const temp0 = t.gw.pool!.stats.temp;
    const first = await session(t, key, async (c) => {
      await c.query('CREATE TEMP TABLE scratch (x int)');
      return (await one(c, 'SELECT pg_backend_pid() AS pid')).pid as number;
    }, { application_name: 'temp-objects' });
    await expect.poll(() => t.gw.pool!.stats.temp, { timeout: 5000 }).toBe(temp0 + 1);
    // The server connection is closed, not kept.
    await expect.poll(() => direct((d) => one(d, `SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ${first}`)).then((r) => r.n), { timeout: 5000 }).toBe(0);
    const next = await session(t, key, async (c) => one(c, "SELECT pg_backend_pid() AS pid, pg_my_temp_schema()::int AS temp, (SELECT count(*)::int FROM pg_class WHERE relname = 'scratch' AND relpersistence = 't') AS n"), { application_name: 'temp-objects' });
    expect(next.pid).not.toBe(first);
    expect(next.temp).toBe(0);
    expect(next.n).toBe(0);
    // A session that made no temporary objects is kept as before.
    const returned0 = t.gw.pool!.stats.returned;
    const plain = await session(t, key, async (c) => (await one(c, 'SELECT pg_backend_pid() AS pid')).pid, { application_name: 'temp-objects' });
    await returned(returned0 + 1);
    expect(await session(t, key, async (c) => (await one(c, 'SELECT pg_backend_pid() AS pid')).pid, { application_name: 'temp-objects' })).toBe(plain);
    expect(t.gw.pool!.stats.temp).toBe(temp0 + 1);
  });

  it('keys connections by the startup parameters the client asked for', async () => {
    const a = await session(t, key, async (c) => (await one(c, 'SELECT pg_backend_pid() AS pid, current_setting($$application_name$$) AS app')), { application_name: 'app-a' });
    await returned(1);
    const b = await session(t, key, async (c) => (await one(c, 'SELECT pg_backend_pid() AS pid, current_setting($$application_name$$) AS app')), { application_name: 'app-b' });
    expect(a.app).toBe('app-a');
    expect(b.app).toBe('app-b');
    expect(b.pid).not.toBe(a.pid);
    const again = await session(t, key, async (c) => (await one(c, 'SELECT pg_backend_pid() AS pid')), { application_name: 'app-a' });
    expect(again.pid).toBe(a.pid);
  });

  it('never reuses a connection whose session ended mid-statement; the statement is cancelled', async () => {
    const c = new pg.Client(t.conn(key, db.name, { application_name: 'mid-statement' }));
    c.on('error', () => {});
    await c.connect();
    const pid = (await one(c, 'SELECT pg_backend_pid() AS pid')).pid as number;
    c.query('SELECT pg_sleep(30)').catch(() => {});
    await new Promise((r) => setTimeout(r, 300));
    (c as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
    await expect.poll(() => direct((d) => one(d, `SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ${pid}`)).then((r) => r.n), { timeout: 5000 }).toBe(0);
    const next = await session(t, key, async (x) => (await one(x, 'SELECT pg_backend_pid() AS pid')).pid, { application_name: 'mid-statement' });
    expect(next).not.toBe(pid);
  });

  it('with size 0 every session opens its own server connection', async () => {
    const a = await session(off, offKey, (c) => one(c, 'SELECT pg_backend_pid() AS pid'));
    await new Promise((r) => setTimeout(r, 300));
    const b = await session(off, offKey, (c) => one(c, 'SELECT pg_backend_pid() AS pid'));
    expect(b.pid).not.toBe(a.pid);
    expect(off.gw.pool).toBeUndefined();
  });

  it('drops idle connections the server ended, and opens a new one', async () => {
    const pid = await session(t, key, async (c) => (await one(c, 'SELECT pg_backend_pid() AS pid')).pid, { application_name: 'terminated' });
    await returned(1);
    await direct((c) => c.query(`SELECT pg_terminate_backend(${pid})`));
    await new Promise((r) => setTimeout(r, 300));
    const next = await session(t, key, async (c) => (await one(c, 'SELECT 1 AS one, pg_backend_pid() AS pid')), { application_name: 'terminated' });
    expect(next.one).toBe(1);
    expect(next.pid).not.toBe(pid);
  });
});
