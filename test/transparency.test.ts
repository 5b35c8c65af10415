/**
 * Where Sluice must behave as PostgreSQL does for clients that do nothing wrong: the empty query, fast-path calls
 * (large objects through psql), the backend PID clients see, one FATAL when the server ends a session, a malformed
 * startup packet, the server's wording on parse errors.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import postgres from 'postgres';
import { PG, admin, freshDatabase, run, startTestGateway, auditEvents, tmpDir, type TestGateway } from './support/env.js';
import { rawSession, messages } from './support/raw.js';
import * as m from '../src/protocol/postgres/messages.js';
import { PerDatabase } from '../src/util/perdb.js';

let t: TestGateway;
let db: { name: string; drop: () => Promise<void> };
let dba: string;
let agent: string;
const los = () => admin((c) => c.query('SELECT count(*)::int AS n FROM pg_largeobject_metadata').then((r) => r.rows[0].n as number), db.name);
const psql = (password: string, ...cmds: string[]) => run('psql', ['-X', '-At', `host=127.0.0.1 port=${t.port} dbname=${db.name} user=x sslmode=disable`, ...cmds.flatMap((c) => ['-c', c])], { env: { PGPASSWORD: password } });

beforeAll(async () => {
  db = await freshDatabase('sluice_transparent', 'CREATE TABLE t (id int)');
  t = await startTestGateway({ policy: fs.readFileSync('examples/policy.yaml', 'utf8') });
  dba = await t.key('human', ['dba']);
  agent = await t.key('agent', ['analysts']);
}, 120_000);
afterAll(async () => {
  await t?.stop();
  await db?.drop();
});

describe('PostgreSQL behaviour through Sluice', () => {
  it('the empty query gets EmptyQueryResponse, not an error', async () => {
    const data = await rawSession(t.port, db.name, dba, m.query(''), 1);
    expect(messages(data).map((x) => x.type)).toEqual(['I', 'Z']);
    const c = new pg.Client(t.conn(dba, db.name));
    await c.connect();
    expect((await c.query('')).rows).toEqual([]);
    await c.end();
  });

  it("large objects through psql's fast-path calls: \\lo_import, \\lo_export, \\lo_unlink (judged per function)", async () => {
    const dir = tmpDir('lo');
    const src = path.join(dir, 'in.bin');
    const out = path.join(dir, 'out.bin');
    fs.writeFileSync(src, Buffer.from(Array.from({ length: 70_000 }, (_, i) => i % 251)));
    const imp = await psql(dba, `\\lo_import ${src}`);
    expect(imp.stderr).toBe('');
    const oid = Number(/lo_import (\d+)/.exec(imp.stdout)?.[1]);
    expect(oid).toBeGreaterThan(0);
    const exp = await psql(dba, `\\lo_export ${oid} ${out}`);
    expect(exp.stderr).toBe('');
    expect(fs.readFileSync(out).equals(fs.readFileSync(src))).toBe(true);
    // An agent allowed only reads cannot create or remove large objects through the fast path either.
    const before = await los();
    const denied = await psql(agent, `\\lo_import ${src}`, `\\lo_unlink ${oid}`);
    expect(denied.stderr).toMatch(/permission denied by Sluice policy rule "agents-read-only"/);
    expect(await los()).toBe(before);
    const unlink = await psql(dba, `\\lo_unlink ${oid}`);
    expect(unlink.stderr).toBe('');
    expect(await los()).toBe(before - 1);
    const events = await auditEvents(t, { type: 'statement', limit: 1000 });
    expect(events.some((e) => e.protocol === 'fastpath' && e.decision === 'allow' && /lo_open/.test(e.sql ?? ''))).toBe(true);
    expect(events.some((e) => e.protocol === 'fastpath' && e.decision === 'deny' && /lo_(creat|open|unlink)/.test(e.sql ?? ''))).toBe(true);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("the backend PID a client sees is the server's: pg_backend_pid() and notifications agree; cancels still need the gateway's secret", async () => {
    const c = new pg.Client(t.conn(dba, db.name));
    await c.connect();
    try {
      const pid = (c as unknown as { processID: number }).processID;
      expect((await c.query('SELECT pg_backend_pid() AS p')).rows[0].p).toBe(pid);
      const got: number[] = [];
      c.on('notification', (n) => got.push(n.processId));
      await c.query('LISTEN sluice_pid');
      await c.query("NOTIFY sluice_pid, 'x'");
      for (let i = 0; i < 50 && !got.length; i++) await new Promise((r) => setTimeout(r, 20));
      expect(got).toEqual([pid]);
      // A CancelRequest with the right PID and a guessed secret does nothing.
      const running = c.query('SELECT pg_sleep(1) AS s');
      await new Promise((r) => setTimeout(r, 200));
      await new Promise<void>((resolve) => {
        const s = net.connect(t.port, '127.0.0.1', () => s.end(m.cancelRequest(pid, 42)));
        s.on('close', () => resolve());
      });
      expect((await running).rows.length).toBe(1);
    } finally {
      await c.end();
    }
  });

  it('when the server ends the session (pg_terminate_backend), the client sees what it sees directly: one FATAL', async () => {
    const terminated = async (conn: pg.ClientConfig) => {
      const c = new pg.Client(conn);
      const errors: string[] = [];
      c.on('error', (e) => errors.push(`${(e as { code?: string }).code ?? '-'} ${e.message}`));
      await c.connect();
      const pid = (c as unknown as { processID: number }).processID;
      await admin((a) => a.query('SELECT pg_terminate_backend($1)', [pid]));
      for (let i = 0; i < 50 && errors.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, 200));
      return errors;
    };
    const direct = await terminated({ ...PG, database: db.name });
    expect(direct[0]).toMatch(/^57P01 /);
    expect(await terminated(t.conn(dba, db.name))).toEqual(direct);
  });

  it("a burst of DDL queues one reload of the gateway's catalog facts behind the running one, not one each", async () => {
    // The regression scripts through Sluice: each DDL during a catalog read queued another, up to five ran at once,
    // and their snapshots kept VACUUM from marking tenk1 all-visible (other plans than directly).
    let loads = 0;
    let running = 0;
    let most = 0;
    const gates: (() => void)[] = [];
    const facts = new PerDatabase<number>('test facts', async () => {
      loads++;
      most = Math.max(most, ++running);
      await new Promise<void>((r) => gates.push(r));
      running--;
      return loads;
    });
    const started = async (n: number) => {
      for (let i = 0; i < 100 && loads < n; i++) await new Promise((r) => setTimeout(r, 5));
      expect(loads).toBe(n);
    };
    const first = facts.ensure('db', 60_000);
    await started(1);
    for (let i = 0; i < 5; i++) facts.invalidate('db');
    gates.shift()!();
    await first;
    await started(2);
    facts.invalidate('db');
    facts.invalidate('db');
    gates.shift()!();
    await started(3);
    gates.shift()!();
    await new Promise((r) => setTimeout(r, 50));
    expect(loads).toBe(3);
    expect(most).toBe(1);
    expect(facts.get('db')).toBe(3);
  });

  it('a malformed startup packet is closed without an answer, as PostgreSQL does', async () => {
    const data = await new Promise<Buffer>((resolve) => {
      const chunks: Buffer[] = [];
      const s = net.connect(t.port, '127.0.0.1', () => s.write(Buffer.from([0, 0, 0, 4, 0, 0, 0, 0])));
      s.on('data', (d) => chunks.push(d));
      s.on('close', () => resolve(Buffer.concat(chunks)));
      s.on('error', () => resolve(Buffer.concat(chunks)));
    });
    expect(data.length).toBe(0);
  });

  it("text neither parser accepts gets the server's own error (hint, position, unterminated literals), simple and extended, and nothing of it runs", async () => {
    const bad = [
      'SELEC 1',
      'SELECT (',
      "SELECT 'abc",
      'SELECT "abc',
      'SELECT $$abc',
      'SELECT 1 /* abc',
      "SELECT E'\\u00'",
      "SELECT U&'wrong: \\061'",
      "SELECT U&'wrong: +0061' UESCAPE +",
      'SELECT 1 --',
      "INSERT INTO t VALUES (1); SELEC 2",
      "INSERT INTO t VALUES (2); SELECT 'abc",
    ];
    const fieldsOf = (e: pg.DatabaseError) => ({ severity: e.severity, code: e.code, message: e.message, position: e.position, hint: e.hint, detail: e.detail });
    const errors = async (conn: pg.ClientConfig) => {
      const c = new pg.Client(conn);
      await c.connect();
      const out: unknown[] = [];
      try {
        for (const text of bad) {
          out.push(fieldsOf(await c.query(text).then(() => new Error(`ran: ${text}`)).catch((x) => x)));
          out.push(fieldsOf(await c.query({ name: 'p1', text }).then(() => new Error(`ran: ${text}`)).catch((x) => x)));
        }
        // Inside a transaction the error aborts it, as directly.
        await c.query('BEGIN');
        out.push(fieldsOf(await c.query('SELECT 1 FROM (').catch((x) => x)));
        out.push(fieldsOf(await c.query('SELECT 1').catch((x) => x)));
        await c.query('ROLLBACK');
        out.push((await c.query('SELECT count(*)::int AS n FROM t')).rows[0].n);
      } finally {
        await c.end();
      }
      return out;
    };
    const direct = await errors({ ...PG, database: db.name });
    expect(direct.at(-1)).toBe(0);
    expect(direct.filter((e) => (e as { hint?: string }).hint).length).toBeGreaterThanOrEqual(2); // the Unicode escape hints
    expect(await errors(t.conn(dba, db.name))).toEqual(direct);
  });

  it("text the server would parse and Sluice's parser does not is refused by Sluice (its words in the hint), and does not run", async () => {
    // PostgreSQL 15 parses this (it rejects the strategy only when running it); Sluice's parser (PostgreSQL 18) does not.
    const sql = 'CREATE TABLE sluice_magic (a int) PARTITION BY MAGIC (a)';
    const c = new pg.Client(t.conn(dba, db.name));
    await c.connect();
    const e = await c.query(sql).catch((x) => x);
    const ext = await c.query({ name: 'm', text: sql }).catch((x) => x);
    expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    await c.end();
    for (const x of [e, ext]) {
      expect(x.code).toBe('42601');
      expect(x.hint).toMatch(/Sluice could not parse this statement/);
    }
    expect(await admin((a) => a.query("SELECT to_regclass('sluice_magic') AS r"), db.name).then((r) => r.rows[0].r)).toBeNull();
  });

  it("postgres.js: a cancel of a piped query, and two listeners after the listening backend is terminated (two of its suite's tests)", async () => {
    // Both failed now and then inside postgres.js's suite through Sluice under load (a shared connection that stopped
    // answering after the cancel; the notification after the reconnect not seen); not reproduced since.
    const options = { host: '127.0.0.1', port: t.port, user: 'x', pass: dba, db: db.name, connect_timeout: 5 };
    const sql = postgres({ ...options, max: 1 });
    try {
      for (let i = 0; i < 5; i++) {
        await sql`select 1`;
        const last = sql`select pg_sleep(0.3)`.execute();
        const query = sql`select pg_sleep(2) as dig`;
        setTimeout(() => query.cancel(), 150);
        expect((await query.catch((x) => x)).code).toBe('57014');
        await last;
        expect((await sql`select 2 as two`)[0]!.two).toBe(2);
      }
    } finally {
      await sql.end();
    }
    const s = postgres({ ...options, max: 2 });
    const xs: string[] = [];
    try {
      const s1 = await s.listen('sluice_test', (x) => xs.push('1', x));
      await s.listen('sluice_test', (x) => xs.push('2', x));
      await s.notify('sluice_test', 'a');
      await new Promise((r) => setTimeout(r, 50));
      await admin((a) => a.query('SELECT pg_terminate_backend($1)', [s1.state.pid]));
      await new Promise((r) => setTimeout(r, 500));
      await s.notify('sluice_test', 'b');
      await new Promise((r) => setTimeout(r, 100));
    } finally {
      await s.end();
    }
    expect(xs.join('')).toBe('1a2a1b2b');
  });
});
