import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import pg from 'pg';
import postgres from 'postgres';
import { startTestGateway, freshDatabase, run, auditEvents, admin, type TestGateway } from './support/env.js';

const SETUP = `
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text);
INSERT INTO customers (name, email) SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 50) g;
CREATE TABLE events (id serial PRIMARY KEY, payload text);
`;

let t: TestGateway;
let db: { name: string; drop: () => Promise<void> };
let analyst: string;
let app: string;
let dba: string;

beforeAll(async () => {
  db = await freshDatabase('sluice_proxy', SETUP);
  t = await startTestGateway();
  analyst = await t.key('human', ['analysts'], { name: 'ana' });
  app = await t.key('service', ['app'], { name: 'orders-service' });
  dba = await t.key('human', ['dba'], { name: 'dana' });
});
afterAll(async () => {
  await t?.stop();
  await db?.drop();
});

async function client(password: string): Promise<pg.Client> {
  const c = new pg.Client(t.conn(password, db.name));
  await c.connect();
  return c;
}

describe('node-postgres (pg) through the gateway', () => {
  it('runs simple and extended (parameterized) queries and returns real results', async () => {
    const c = await client(analyst);
    try {
      const simple = await c.query('SELECT count(*)::int AS n FROM customers');
      expect(simple.rows[0].n).toBe(50);
      const ext = await c.query('SELECT name, email FROM customers WHERE id = $1', [7]);
      // Zero-config masking applies to results (see masking-wire.test.ts): emails reach an analyst masked.
      expect(ext.rows).toEqual([{ name: 'customer 7', email: 'c***@***.com' }]);
      const named = await c.query({ name: 'by-id', text: 'SELECT name FROM customers WHERE id = $1', values: [3] });
      const again = await c.query({ name: 'by-id', text: 'SELECT name FROM customers WHERE id = $1', values: [4] });
      expect([named.rows[0].name, again.rows[0].name]).toEqual(['customer 3', 'customer 4']);
    } finally {
      await c.end();
    }
  });

  it('denies by policy with SQLSTATE 42501 and the rule name, and the session stays usable', async () => {
    const c = await client(analyst);
    try {
      const err = await c.query('UPDATE customers SET name = $1 WHERE id = 1', ['x']).catch((e) => e);
      expect(err.code).toBe('42501');
      expect(err.message).toMatch(/Sluice policy rule "default"/);
      const destructive = await c.query('DELETE FROM customers').catch((e) => e);
      expect(destructive.code).toBe('42501');
      expect(destructive.message).toContain('destructive-needs-dba');
      expect(destructive.detail).toContain('DELETE without WHERE on customers');
      const ok = await c.query('SELECT 1 AS one');
      expect(ok.rows[0].one).toBe(1);
    } finally {
      await c.end();
    }
    const rows = await admin((a) => a.query('SELECT count(*)::int AS n, max(name) AS m FROM customers'), db.name);
    expect(rows.rows[0].n).toBe(50);
  });

  it('a denied statement inside a transaction aborts it, as a PostgreSQL error would', async () => {
    const c = await client(app);
    try {
      await c.query('BEGIN');
      await c.query("INSERT INTO events (payload) VALUES ('in-tx')");
      const err = await c.query('TRUNCATE events').catch((e) => e);
      expect(err.code).toBe('42501');
      const aborted = await c.query('SELECT 1').catch((e) => e);
      expect(aborted.code).toBe('25P02'); // current transaction is aborted
      await c.query('COMMIT'); // becomes a rollback
      const n = await c.query("SELECT count(*)::int AS n FROM events WHERE payload = 'in-tx'");
      expect(n.rows[0].n).toBe(0);
    } finally {
      await c.end();
    }
  });

  it('fails closed on SQL it cannot parse, with the parser position', async () => {
    const c = await client(dba);
    try {
      const err = await c.query('SELEC name FROM customers').catch((e) => e);
      expect(err.code).toBe('42601');
      expect(err.message).toBe('syntax error at or near "SELEC"');
      expect(err.hint).toBeUndefined(); // the server's own error, as directly (text neither parser reads; test/transparency.test.ts)
      expect(err.position).toBe('1');
      expect((await c.query('SELECT 2 AS two')).rows[0].two).toBe(2);
    } finally {
      await c.end();
    }
  });

  it('checks every statement of a multi-statement string; one denial stops them all', async () => {
    const c = await client(app);
    try {
      const err = await c.query("INSERT INTO events (payload) VALUES ('multi'); DROP TABLE customers").catch((e) => e);
      expect(err.code).toBe('42501');
      const n = await c.query("SELECT count(*)::int AS n FROM events WHERE payload = 'multi'");
      expect(n.rows[0].n).toBe(0);
    } finally {
      await c.end();
    }
  });

  it('judges SQL-level PREPARE/EXECUTE by the prepared statement', async () => {
    const c = await client(analyst);
    try {
      const err = await c.query('PREPARE wipe AS DELETE FROM customers WHERE id = $1').catch((e) => e);
      expect(err.code).toBe('42501');
      // The refused PREPARE is remembered: EXECUTE is refused for what it would run, not as unknown.
      const refused = await c.query('EXECUTE wipe(1)').catch((e) => e);
      expect(refused.code).toBe('42501');
      expect(refused.detail).toMatch(/EXECUTE on customers \(class write\)/);
      const unknown = await c.query('EXECUTE never_prepared(1)').catch((e) => e);
      expect(unknown.code).toBe('26000');
      await c.query('PREPARE one(int) AS SELECT name FROM customers WHERE id = $1');
      expect((await c.query('EXECUTE one(5)')).rows[0].name).toBe('customer 5');
    } finally {
      await c.end();
    }
  });

  it('relays NOTIFY to a LISTENing session', async () => {
    const c = await client(app);
    const listener = await client(app);
    try {
      const got: string[] = [];
      await listener.query('LISTEN sluice_test');
      listener.on('notification', (n) => got.push(n.payload ?? ''));
      await c.query("NOTIFY sluice_test, 'hello'");
      for (let i = 0; i < 50 && got.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(got).toEqual(['hello']);
    } finally {
      await c.end();
      await listener.end();
    }
  });

  it('cancels a running query through the gateway (CancelRequest is mapped to the upstream backend)', async () => {
    // pg_sleep holds a connection: a volatile function, so not a read (app may write).
    const c = await client(app);
    try {
      const started = Date.now();
      const p = c.query('SELECT pg_catalog.now(), count(*) FROM generate_series(1, 1) , LATERAL (SELECT pg_sleep(20)) s').catch((e) => e);
      await new Promise((r) => setTimeout(r, 500));
      // pg's cancel opens a new connection with CancelRequest carrying the gateway-issued key.
      const canceller = new (pg as any).Client(t.conn(app, db.name));
      (canceller as any).cancel(c, (c as any).activeQuery);
      const err = await p;
      expect(err.code).toBe('57014');
      expect(Date.now() - started).toBeLessThan(10_000);
      expect((await c.query('SELECT 3 AS three')).rows[0].three).toBe(3);
    } finally {
      await c.end();
    }
  });

  it('audits every statement with identity, decision, rule, tables, rows and duration', async () => {
    const c = await client(analyst);
    await c.query({ text: 'SELECT id FROM customers WHERE id <= $1', values: [4], application_name: undefined } as any);
    await c.query('DELETE FROM customers').catch(() => {});
    await c.end();
    const events = await auditEvents(t, { subject: 'human:ana' });
    const sel = events.find((e) => e.sql === 'SELECT id FROM customers WHERE id <= $1');
    expect(sel).toMatchObject({ type: 'statement', decision: 'allow', rule: 'analysts-read', rows: 4, identity_kind: 'human', database: db.name, tables: ['customers'], protocol: 'extended' });
    expect(sel!.duration_ms).toBeGreaterThan(0);
    const del = events.find((e) => e.sql === 'DELETE FROM customers');
    expect(del).toMatchObject({ decision: 'deny', rule: 'destructive-needs-dba', classes: ['write'], destructive: ['DELETE without WHERE on customers'] });
    expect(events.some((e) => e.type === 'session_start' && e.client_addr?.startsWith('127.0.0.1:'))).toBe(true);
  });
});

describe('postgres.js through the gateway', () => {
  it('runs pipelined queries and keeps responses in order around a denial', async () => {
    const sql = postgres({ host: '127.0.0.1', port: t.port, user: 'x', pass: app, database: db.name, max: 1, onnotice: () => {} });
    try {
      const [a, b, c, d] = await Promise.allSettled([
        sql`SELECT ${1}::int AS v`,
        sql`DROP TABLE customers`,
        sql`SELECT name FROM customers WHERE id = ${2}`,
        sql`SELECT ${4}::int AS v`,
      ]);
      expect(a.status === 'fulfilled' && a.value[0]!.v).toBe(1);
      expect(b.status).toBe('rejected');
      expect((b as PromiseRejectedResult).reason.code).toBe('42501');
      expect(c.status === 'fulfilled' && c.value[0]!.name).toBe('customer 2');
      expect(d.status === 'fulfilled' && d.value[0]!.v).toBe(4);
      const inserted = await sql.begin(async (tx) => {
        await tx`INSERT INTO events (payload) VALUES (${'pgjs'})`;
        return tx`SELECT count(*)::int AS n FROM events WHERE payload = 'pgjs'`;
      });
      expect(inserted[0]!.n).toBe(1);
    } finally {
      await sql.end();
    }
  });
});

describe('psql through the gateway', () => {
  it('runs a script with COPY FROM STDIN, a denial and more statements after it', async () => {
    const script = `\\set ON_ERROR_STOP 0
COPY events (payload) FROM STDIN;
from-copy-1
from-copy-2
\\.
SELECT count(*) AS copied FROM events WHERE payload LIKE 'from-copy-%';
DROP TABLE events;
SELECT 'still here' AS status;
`;
    const r = await run('psql', ['-X', '-v', 'ON_ERROR_STOP=0', `host=127.0.0.1 port=${t.port} dbname=${db.name} user=svc sslmode=require`], { env: { PGPASSWORD: app }, input: script });
    expect(r.stdout).toContain('COPY 2');
    expect(r.stdout).toMatch(/copied\s*\n-+\n\s*2/);
    expect(r.stderr).toContain('permission denied by Sluice policy rule "destructive-needs-dba"');
    expect(r.stdout).toContain('still here');
  });

  it('relays COPY ... TO STDOUT rows', async () => {
    const r = await run('psql', ['-X', '-At', `host=127.0.0.1 port=${t.port} dbname=${db.name} user=svc sslmode=require`, '-c', 'COPY (SELECT id, name FROM customers WHERE id <= 3 ORDER BY id) TO STDOUT WITH (FORMAT csv)'], { env: { PGPASSWORD: analyst } });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('1,customer 1\n2,customer 2\n3,customer 3\n');
  });

  it('reports a bad token as FATAL 28P01 with the reason', async () => {
    const r = await run('psql', ['-X', `host=127.0.0.1 port=${t.port} dbname=${db.name} user=svc sslmode=disable`, '-c', 'select 1'], { env: { PGPASSWORD: 'slk_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' } });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('FATAL:  Sluice authentication failed: unknown or invalid Sluice key');
  });
});

describe('pgbench through the gateway', () => {
  it('completes select-only runs in simple, extended and prepared modes without failures', async () => {
    const bench = await freshDatabase('sluice_pgb');
    try {
      const init = await run('pgbench', ['-i', '-s', '1', '-q', '-h', '127.0.0.1', '-U', 'postgres', bench.name]);
      expect(init.code).toBe(0);
      for (const mode of ['simple', 'extended', 'prepared']) {
        const r = await run('pgbench', ['-S', '-M', mode, '-c', '4', '-j', '2', '-t', '200', '-n', `host=127.0.0.1 port=${t.port} dbname=${bench.name} user=bench sslmode=disable`], { env: { PGPASSWORD: analyst } });
        expect(r.stderr + r.stdout).not.toMatch(/error|aborted/i);
        expect(r.stdout).toContain('number of transactions actually processed: 800/800');
      }
      // The built-in TPC-B-like script writes: the analyst is refused, the app service is allowed.
      const denied = await run('pgbench', ['-c', '1', '-t', '5', '-n', `host=127.0.0.1 port=${t.port} dbname=${bench.name} user=bench sslmode=disable`], { env: { PGPASSWORD: analyst } });
      expect(denied.stderr).toContain('permission denied by Sluice policy');
      const allowed = await run('pgbench', ['-c', '2', '-t', '50', '-n', `host=127.0.0.1 port=${t.port} dbname=${bench.name} user=bench sslmode=disable`], { env: { PGPASSWORD: app } });
      expect(allowed.stdout).toContain('number of transactions actually processed: 100/100');
    } finally {
      await bench.drop();
    }
  });
});
