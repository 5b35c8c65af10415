import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import v8 from 'node:v8';
import vm from 'node:vm';
import * as m from '../src/protocol/postgres/messages.js';
import { bind, execute, rawClient } from './support/raw.js';
import { SessionMemo } from '../src/governor.js';
import { connectAs } from './support/query.js';
import { startTestGateway, freshDatabase, admin, MY, PG, mysqlEngine, type TestGateway } from './support/env.js';
import { basePolicyRules, policyYaml } from './support/policies.js';

/**
 * A session remembers the Governor's verdicts and masking plans for statements it repeats (SessionMemo). What it
 * remembers must never outlive what it was computed from: the policy, and the database's catalogs.
 */

let db: { name: string; drop: () => Promise<void> };
let t: TestGateway;
const agentRules = () => [...basePolicyRules(), { name: 'agents-read', match: { kinds: ['agent'], statements: ['read'] }, action: 'allow' as const }];

beforeAll(async () => {
  db = await freshDatabase(
    'sluice_memo',
    `CREATE TABLE people (id int PRIMARY KEY, name text, note text);
     INSERT INTO people VALUES (1, 'Ada Lovelace', 'plain'), (2, 'Alan Turing', 'plain');
     CREATE TABLE hits (n int);
     CREATE FUNCTION tally(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x';`,
  );
  t = await startTestGateway({ policy: policyYaml({ default: 'deny', rules: agentRules(), masking: { detectors: false } }) });
});
afterAll(async () => {
  await t?.stop();
  await db?.drop();
});

const hits = () => admin(async (c) => (await c.query('SELECT count(*)::int AS n FROM hits')).rows[0].n as number, db.name);

describe('what a session remembers', () => {
  it('a policy reload applies to a statement the session has run before (simple, extended, a named statement prepared before the reload, text and binary results): verdict and masking', async () => {
    const c = await connectAs(t, 'agent', [], db.name);
    try {
      const simple = () => c.query('SELECT name FROM people WHERE id = 1');
      const extended = () => c.query({ text: 'SELECT name FROM people WHERE id = $1', values: [1] });
      // A named statement is described once; its executions are planned from that description and Bind's formats.
      const named = (binary = false) => c.query({ name: 'by-id', text: 'SELECT name FROM people WHERE id = $1', values: [1], binary });
      const text = (v: unknown) => (Buffer.isBuffer(v) ? v.toString('utf8') : v);
      for (let i = 0; i < 3; i++) {
        expect((await simple()).rows[0].name).toBe('Ada Lovelace');
        expect((await extended()).rows[0].name).toBe('Ada Lovelace');
        expect((await named()).rows[0].name).toBe('Ada Lovelace');
        expect(text((await named(true)).rows[0].name)).toBe('Ada Lovelace');
      }
      // Masking: the same statements now return the column masked.
      const file = path.join(t.dir, 'policy.yaml');
      fs.writeFileSync(file, policyYaml({ default: 'deny', rules: agentRules(), masking: { detectors: false, columns: [{ column: 'people.name', masker: 'redact' }] } }));
      t.gw.reloadPolicy();
      const masked = (await simple()).rows[0].name;
      expect(masked).not.toBe('Ada Lovelace');
      expect((await extended()).rows[0].name).toBe(masked);
      expect((await named()).rows[0].name).toBe(masked);
      expect(text((await named(true)).rows[0].name)).toBe(masked);
      // A literal the session has not sent yet shares the remembered analysis: masked too.
      expect((await c.query('SELECT name FROM people WHERE id = 2')).rows[0].name).not.toMatch(/Turing/);
      // The verdict: reads are no longer allowed to agents.
      fs.writeFileSync(file, policyYaml({ default: 'deny', rules: basePolicyRules() }));
      t.gw.reloadPolicy();
      expect((await simple().catch((e) => e)).code).toBe('42501');
      expect((await extended().catch((e) => e)).code).toBe('42501');
      expect((await named().catch((e) => e)).code).toBe('42501');
      expect((await c.query('SHOW server_version')).rows).toHaveLength(1); // the session is still usable
    } finally {
      await c.end();
      fs.writeFileSync(path.join(t.dir, 'policy.yaml'), policyYaml({ default: 'deny', rules: agentRules(), masking: { detectors: false } }));
      t.gw.reloadPolicy();
    }
  });

  it('a policy reload applies to executions that nothing describes (Parse, Bind, Execute, Sync on one raw session): masked after it', async () => {
    const key = await t.key('agent', []);
    const c = rawClient(t.port);
    // Executions of an unnamed statement, text and binary results, with no Describe: the gateway asks the server
    // itself when masking applies, and remembers per analysis whether it does.
    const batch = () => Buffer.concat([m.parse('', 'SELECT name FROM people WHERE id = 1'), bind('', '', 0), execute(''), bind('', '', 1), execute(''), m.sync()]);
    const cells = (from: number) => c.received(from).filter((x) => x.type === 'D').map((x) => x.body.toString('utf8', 6));
    try {
      c.send(Buffer.concat([m.startupMessage({ user: 'agent', database: db.name }), m.passwordMessage(key)]));
      await c.ready(1);
      let from = c.bytes;
      for (let i = 0; i < 3; i++) c.send(batch());
      await c.ready(4);
      expect(cells(from)).toEqual(Array(6).fill('Ada Lovelace'));
      const file = path.join(t.dir, 'policy.yaml');
      fs.writeFileSync(file, policyYaml({ default: 'deny', rules: agentRules(), masking: { detectors: false, columns: [{ column: 'people.name', masker: 'redact' }] } }));
      t.gw.reloadPolicy();
      from = c.bytes;
      c.send(batch());
      await c.ready(5);
      const after = cells(from);
      expect(after).toHaveLength(2);
      for (const v of after) expect(v).not.toMatch(/Ada|Lovelace/);
    } finally {
      c.close();
      fs.writeFileSync(path.join(t.dir, 'policy.yaml'), policyYaml({ default: 'deny', rules: agentRules(), masking: { detectors: false } }));
      t.gw.reloadPolicy();
    }
  });

  it('a function redefined to write after a session called it is judged anew: refused, and nothing is written', async () => {
    const agent = await connectAs(t, 'agent', [], db.name);
    const dba = await connectAs(t, 'human', ['dba'], db.name);
    try {
      for (let i = 1; i <= 3; i++) expect((await agent.query(`SELECT tally(${i}) AS v`)).rows[0].v).toBe(i);
      expect((await agent.query({ text: 'SELECT tally($1) AS v', values: [5] })).rows[0].v).toBe(5);
      // A named statement prepared now, executed again after the change: judged again before that execution.
      const named = () => agent.query({ name: 'tally-named', text: 'SELECT tally($1) AS v', values: [6] });
      expect((await named()).rows[0].v).toBe(6);
      // Redefined through the gateway by a DBA: the DBA's next statement that needs the catalog waits for the re-read.
      await dba.query(`CREATE OR REPLACE FUNCTION tally(x int) RETURNS int LANGUAGE sql VOLATILE AS 'INSERT INTO hits VALUES (1) RETURNING x'`);
      await dba.query('SELECT count(*) FROM hits');
      // The same text, another literal, and the extended protocol: all refused (a read-only identity may not write).
      for (const q of ['SELECT tally(1) AS v', 'SELECT tally(9) AS v']) {
        const e = await agent.query(q).catch((x) => x);
        expect(e.code, q).toBe('42501');
      }
      expect((await agent.query({ text: 'SELECT tally($1) AS v', values: [5] }).catch((x) => x)).code).toBe('42501');
      for (let i = 0; i < 2; i++) expect((await named().catch((x) => x)).code).toBe('42501');
      expect(await hits()).toBe(0);
    } finally {
      await agent.end();
      await dba.end();
    }
  });

  it('a cursor declared before a policy reload or a function change is judged as its query at its next FETCH, MOVE or protocol Execute', async () => {
    const file = path.join(t.dir, 'policy.yaml');
    const agent = await connectAs(t, 'agent', [], db.name);
    const dba = await connectAs(t, 'human', ['dba'], db.name);
    try {
      // 1. A reload that takes reads away from agents: FETCH and MOVE from an open cursor are refused.
      await agent.query('BEGIN');
      await agent.query('DECLARE c CURSOR FOR SELECT name FROM people ORDER BY id');
      await agent.query('DECLARE d CURSOR FOR SELECT name FROM people ORDER BY id');
      expect((await agent.query('FETCH 1 FROM c')).rows).toEqual([{ name: 'Ada Lovelace' }]);
      fs.writeFileSync(file, policyYaml({ default: 'deny', rules: basePolicyRules() }));
      t.gw.reloadPolicy();
      for (const q of ['FETCH 1 FROM c', 'fetch next from "c"', 'MOVE 1 IN c', 'FETCH ALL FROM d; SELECT 1']) {
        await agent.query('SAVEPOINT s');
        expect((await agent.query(q).catch((e) => e)).code, q).toBe('42501');
        await agent.query('ROLLBACK TO SAVEPOINT s');
      }
      // The extended protocol (a FETCH parsed, bound and executed): refused the same way.
      expect((await agent.query({ text: 'FETCH 1 FROM d', values: [] }).catch((e) => e)).code).toBe('42501');
      await agent.query('ROLLBACK');
      // Agents may read again: a cursor declared now fetches, and goes on fetching.
      fs.writeFileSync(file, policyYaml({ default: 'deny', rules: agentRules(), masking: { detectors: false } }));
      t.gw.reloadPolicy();
      await agent.query('BEGIN');
      await agent.query('DECLARE e CURSOR FOR SELECT name FROM people ORDER BY id');
      // A reload that changes nothing for agents: the cursor is judged again as its query, allowed, and fetches on.
      t.gw.reloadPolicy();
      expect((await agent.query('FETCH 1 FROM e')).rows).toEqual([{ name: 'Ada Lovelace' }]);
      expect((await agent.query('FETCH 1 FROM e')).rows).toEqual([{ name: 'Alan Turing' }]);
      await agent.query('COMMIT');
      // 2. A function the cursor's query calls, redefined to write after the DECLARE: the next FETCH is refused and
      // nothing is written.
      await dba.query(`CREATE OR REPLACE FUNCTION tally(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x'`);
      await dba.query('SELECT count(*) FROM hits');
      await agent.query('BEGIN');
      await agent.query('DECLARE f CURSOR FOR SELECT tally(id) AS v FROM people ORDER BY id');
      expect((await agent.query('FETCH 1 FROM f')).rows).toEqual([{ v: 1 }]);
      await dba.query(`CREATE OR REPLACE FUNCTION tally(x int) RETURNS int LANGUAGE sql VOLATILE AS 'INSERT INTO hits VALUES (3) RETURNING x'`);
      await dba.query('SELECT count(*) FROM hits');
      expect((await agent.query('FETCH 1 FROM f').catch((e) => e)).code).toBe('42501');
      await agent.query('ROLLBACK');
      expect(await hits()).toBe(0);
    } finally {
      await agent.end();
      await dba.query(`CREATE OR REPLACE FUNCTION tally(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x'`).catch(() => undefined);
      await dba.end();
      fs.writeFileSync(file, policyYaml({ default: 'deny', rules: agentRules(), masking: { detectors: false } }));
      t.gw.reloadPolicy();
    }
  });

  it('a protocol Execute of a cursor\'s portal (no Bind through Sluice) after a reload is judged as the cursor\'s query', async () => {
    const file = path.join(t.dir, 'policy.yaml');
    const key = await t.key('agent', []);
    const c = rawClient(t.port);
    try {
      c.send(Buffer.concat([m.startupMessage({ user: 'agent', database: db.name }), m.passwordMessage(key)]));
      await c.ready(1);
      c.send(m.query('BEGIN; DECLARE d CURSOR FOR SELECT name FROM people ORDER BY id'));
      await c.ready(2);
      // Before the reload the portal's rows come (Execute of 1 row).
      let from = c.bytes;
      c.send(Buffer.concat([execute('d', 1), m.sync()]));
      await c.ready(3);
      expect(c.received(from).filter((x) => x.type === 'D').map((x) => x.body.toString('utf8', 6))).toEqual(['Ada Lovelace']);
      fs.writeFileSync(file, policyYaml({ default: 'deny', rules: basePolicyRules() }));
      t.gw.reloadPolicy();
      from = c.bytes;
      c.send(Buffer.concat([execute('d', 1), m.sync()]));
      await c.ready(4);
      const after = c.received(from);
      expect(after.filter((x) => x.type === 'D')).toHaveLength(0);
      const err = after.find((x) => x.type === 'E');
      expect(err?.body.toString('utf8')).toContain('42501');
    } finally {
      c.close();
      fs.writeFileSync(file, policyYaml({ default: 'deny', rules: agentRules(), masking: { detectors: false } }));
      t.gw.reloadPolicy();
    }
  });

  it('after a DDL in one session, another session\'s statements wait for the catalog\'s re-read instead of being judged from the old one', async () => {
    const agent = await connectAs(t, 'agent', [], db.name);
    const dba = await connectAs(t, 'human', ['dba'], db.name);
    const locker = new pg.Client({ ...PG, database: db.name });
    await locker.connect();
    try {
      await dba.query(`CREATE OR REPLACE FUNCTION tally(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x'`);
      await dba.query('SELECT count(*) FROM hits');
      expect((await agent.query('SELECT tally(1) AS v')).rows[0].v).toBe(1);
      // Hold the re-read up (it reads pg_policy; the DDL below does not touch it) for a moment.
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE pg_catalog.pg_policy IN ACCESS EXCLUSIVE MODE');
      await dba.query(`CREATE OR REPLACE FUNCTION tally(x int) RETURNS int LANGUAGE sql VOLATILE AS 'INSERT INTO hits VALUES (4) RETURNING x'`);
      // The DDL has committed; the gateway's re-read of the catalog waits on the lock. The agent's call waits too.
      let settled = false;
      const call = agent.query('SELECT tally(1) AS v').then(
        (r) => ((settled = true), r),
        (e) => ((settled = true), e),
      );
      await new Promise((r) => setTimeout(r, 250));
      expect(settled).toBe(false);
      await locker.query('COMMIT');
      expect(((await call) as { code?: string }).code).toBe('42501');
      expect(await hits()).toBe(0);
    } finally {
      await locker.query('ROLLBACK').catch(() => undefined);
      await locker.end();
      await dba.query(`CREATE OR REPLACE FUNCTION tally(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x'`).catch(() => undefined);
      await agent.end();
      await dba.end();
    }
  });

  it('a function redefined behind the gateway\'s back is judged anew once the catalog is read again', async () => {
    const agent = await connectAs(t, 'agent', [], db.name);
    try {
      await admin((c) => c.query(`CREATE OR REPLACE FUNCTION tally(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x'`), db.name);
      // Read the catalog again (as the periodic refresh does) and wait for it: the function is harmless again.
      await t.gw.governor.refreshCatalogs(db.name);
      expect((await agent.query('SELECT tally(4) AS v')).rows[0].v).toBe(4);
      await admin((c) => c.query(`CREATE OR REPLACE FUNCTION tally(x int) RETURNS int LANGUAGE sql VOLATILE AS 'INSERT INTO hits VALUES (2) RETURNING x'`), db.name);
      await t.gw.governor.refreshCatalogs(db.name);
      expect((await agent.query('SELECT tally(4) AS v').catch((x) => x)).code).toBe('42501');
      expect(await hits()).toBe(0);
    } finally {
      await agent.end();
    }
  });
});


describe('what a MySQL session remembers', () => {
  it('a policy reload applies to a text and a prepared statement the session has run before', async () => {
    const mysql = (await import('mysql2/promise')).default;
    const root = await mysql.createConnection({ ...MY });
    await root.query('CREATE DATABASE IF NOT EXISTS sluice_memo_my');
    await root.query('CREATE TABLE IF NOT EXISTS sluice_memo_my.people (id int PRIMARY KEY, name text)');
    await root.query("REPLACE INTO sluice_memo_my.people VALUES (1, 'Ada Lovelace')");
    const g = await startTestGateway({ config: mysqlEngine(), policy: policyYaml({ default: 'deny', rules: agentRules(), masking: { detectors: false } }) });
    const c = await mysql.createConnection({ host: '127.0.0.1', port: g.gw.mysqlPort!, user: 'x', password: await g.key('agent', []), database: 'sluice_memo_my', enableCleartextPlugin: true } as Parameters<typeof mysql.createConnection>[0]);
    try {
      for (let i = 0; i < 3; i++) {
        expect((await c.query('SELECT name FROM people WHERE id = 1'))[0]).toEqual([{ name: 'Ada Lovelace' }]);
        expect((await c.execute('SELECT name FROM people WHERE id = ?', [1]))[0]).toEqual([{ name: 'Ada Lovelace' }]);
      }
      fs.writeFileSync(path.join(g.dir, 'policy.yaml'), policyYaml({ default: 'deny', rules: basePolicyRules() }));
      g.gw.reloadPolicy();
      for (const run of [() => c.query('SELECT name FROM people WHERE id = 1'), () => c.query('SELECT name FROM people WHERE id = 2'), () => c.execute('SELECT name FROM people WHERE id = ?', [1])]) {
        const e = await run().catch((x) => x);
        expect(e.errno).toBe(1142);
        expect(e.message).toMatch(/Sluice policy/);
      }
    } finally {
      await c.end();
      await g.stop();
      await root.query('DROP DATABASE sluice_memo_my');
      await root.end();
    }
  });
});

describe('the memo itself', () => {
  it('keeps only the catalog load it answers from: asked with newer inputs, it forgets the older ones', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const memo = new SessionMemo({ subject: 's', kind: 'agent', groups: [], method: 'key' });
    const analysis = { statements: [], classes: [], tables: [], destructive: [], flags: [], fingerprint: 'f', ok: true } as never;
    const verdict = { decision: { action: 'allow' as const, rule: 'r' } };
    const policy = {};
    const old = (() => {
      const load = { big: new Array(1000).fill('x') };
      memo.remember(analysis, [policy, 'db', undefined, load], verdict);
      memo.rememberPlan('shape', analysis, [policy, 'db', undefined, load], undefined);
      expect(memo.verdict(analysis, [policy, 'db', undefined, load])).toBe(verdict);
      return new WeakRef(load);
    })();
    const now = {};
    expect(memo.verdict(analysis, [policy, 'db', undefined, now])).toBeUndefined();
    expect(memo.plan('shape', analysis, [policy, 'db', undefined, now])).toBeUndefined();
    for (let i = 0; i < 5 && old.deref(); i++) {
      await new Promise((r) => setTimeout(r, 10));
      gc();
    }
    expect(old.deref()).toBeUndefined();
  });
});
