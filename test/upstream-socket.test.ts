import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import pg from 'pg';
import crypto from 'node:crypto';
import mysql from 'mysql2/promise';
import { startTestGateway, freshDatabase, MY, mysqlEngine, type TestGateway } from './support/env.js';

/** The local PostgreSQL's unix socket directory (Debian's default; .ci/run installs PostgreSQL from Debian). */
const SOCKET_DIR = process.env.SLUICE_TEST_PGSOCKET ?? '/var/run/postgresql';
/** MariaDB's socket file (Debian's default). */
const MY_SOCKET = process.env.SLUICE_TEST_MYSOCKET ?? '/run/mysqld/mysqld.sock';

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

describe('MySQL upstream over its unix socket file', () => {
  it('serves sessions through the MySQL engine', async () => {
    if (!fs.existsSync(MY_SOCKET)) throw new Error(`no MariaDB socket at ${MY_SOCKET} (set SLUICE_TEST_MYSOCKET)`);
    const name = `sluice_mysock_${crypto.randomBytes(4).toString('hex')}`;
    const root = await mysql.createConnection({ ...MY, multipleStatements: true });
    await root.query(`CREATE DATABASE ${name}; CREATE TABLE ${name}.t (id int); INSERT INTO ${name}.t VALUES (1), (2), (3);`);
    const g = await startTestGateway({ config: mysqlEngine({ host: MY_SOCKET }) });
    try {
      const key = await g.key('service', ['app']);
      const c = await mysql.createConnection({ host: '127.0.0.1', port: g.gw.mysqlPort!, user: 'x', password: key, database: name, enableCleartextPlugin: true } as mysql.ConnectionOptions);
      const [rows] = await c.query('SELECT sum(id) AS s, @@hostname IS NOT NULL AS ok FROM t');
      expect(rows).toEqual([{ s: '6', ok: 1 }]);
      await c.end();
    } finally {
      await g.stop();
      await root.query(`DROP DATABASE ${name}`);
      await root.end();
    }
  });
});
