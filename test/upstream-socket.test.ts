import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import pg from 'pg';
import { startTestGateway, freshDatabase, type TestGateway } from './support/env.js';

/** The local PostgreSQL's unix socket directory (Debian's default; .ci/run installs PostgreSQL from Debian). */
const SOCKET_DIR = process.env.SLUICE_TEST_PGSOCKET ?? '/var/run/postgresql';

let t: TestGateway;
let db: { name: string; drop: () => Promise<void> };
beforeAll(async () => {
  if (!fs.existsSync(`${SOCKET_DIR}/.s.PGSQL.5432`)) throw new Error(`no PostgreSQL socket in ${SOCKET_DIR} (set SLUICE_TEST_PGSOCKET)`);
  db = await freshDatabase('sluice_sock', 'CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);');
  t = await startTestGateway({ upstreamHost: SOCKET_DIR });
});
afterAll(async () => {
  await t?.stop();
  await db?.drop();
});

describe('upstream over a unix socket (host starting with /, as libpq)', () => {
  it('serves sessions, and cancels reach the upstream the same way', async () => {
    const key = await t.key('service', ['app']);
    const c = new pg.Client(t.conn(key, db.name));
    await c.connect();
    expect((await c.query('SELECT sum(id)::int AS s FROM t')).rows[0].s).toBe(3);
    // The upstream sees a local-socket connection (no client address).
    expect((await c.query('SELECT inet_client_addr() AS a')).rows[0].a).toBeNull();
    const slow = c.query('SELECT pg_sleep(20)').catch((e: Error & { code?: string }) => e);
    await new Promise((r) => setTimeout(r, 200));
    const canceller = new (pg as any).Client(t.conn(key, db.name));
    canceller.cancel(c, (c as any).activeQuery);
    expect(((await slow) as { code?: string }).code).toBe('57014');
    await c.end();
  });
});
