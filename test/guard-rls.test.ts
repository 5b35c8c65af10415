import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import pg from 'pg';
import { connectAs } from './support/query.js';
import { startTestGateway, freshDatabase, admin, auditEvents, PG, type TestGateway } from './support/env.js';
import { basePolicyRules, policyYaml } from './support/policies.js';

/**
 * A read that runs a function through a table's row security policy: when the policy applies to the gateway's
 * upstream user (it is neither a superuser nor exempt), reading the table runs the policy's USING expression, so a
 * volatile function in it runs for every row read. Such a read is judged like a call of that function.
 */

const ROLE = 'sluice_rls_gateway';
let db: { name: string; drop: () => Promise<void> };
let t: TestGateway;

beforeAll(async () => {
  await admin(async (c) => {
    await c.query(`DROP ROLE IF EXISTS ${ROLE}`).catch(() => {});
    await c.query(`CREATE ROLE ${ROLE} LOGIN`);
  });
  db = await freshDatabase(
    'sluice_rls',
    `CREATE TABLE reads_log (id int, at timestamptz DEFAULT now());
     CREATE FUNCTION note_read(i int) RETURNS boolean LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS
       'BEGIN INSERT INTO reads_log (id) VALUES (i); RETURN true; END';
     CREATE FUNCTION same(a int, b int) RETURNS boolean LANGUAGE sql VOLATILE SECURITY DEFINER AS
       'INSERT INTO reads_log (id) VALUES (a) RETURNING a = a';
     CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = same);
     CREATE TABLE docs (id int, body text);
     INSERT INTO docs VALUES (1, 'one'), (2, 'two');
     ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
     CREATE POLICY docs_read ON docs FOR SELECT USING (note_read(id));
     CREATE TABLE notes (id int, body text);
     INSERT INTO notes VALUES (1, 'one');
     ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
     CREATE POLICY notes_read ON notes FOR SELECT USING (id === id);
     CREATE TABLE plain (id int, owner_name text);
     INSERT INTO plain VALUES (1, '${ROLE}'), (2, 'someone');
     ALTER TABLE plain ENABLE ROW LEVEL SECURITY;
     CREATE POLICY plain_read ON plain FOR SELECT USING (owner_name = current_user);
     CREATE VIEW docs_v WITH (security_invoker = true) AS SELECT id, body FROM docs;
     CREATE TABLE memos (id int, body text);
     INSERT INTO memos VALUES (1, 'one');
     ALTER TABLE memos OWNER TO ${ROLE};
     ALTER TABLE memos ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
     CREATE POLICY memos_all ON memos FOR SELECT USING (true);
     -- Policies that read another table whose policy calls the function, or a view that calls it.
     CREATE TABLE hidden (id int);
     INSERT INTO hidden VALUES (1), (2);
     ALTER TABLE hidden ENABLE ROW LEVEL SECURITY;
     CREATE POLICY hidden_read ON hidden FOR SELECT USING (note_read(id));
     CREATE TABLE outer_t (id int);
     INSERT INTO outer_t VALUES (1), (2);
     ALTER TABLE outer_t ENABLE ROW LEVEL SECURITY;
     CREATE POLICY outer_read ON outer_t FOR SELECT USING (EXISTS (SELECT 1 FROM hidden h WHERE h.id = outer_t.id));
     CREATE VIEW writer_v AS SELECT note_read(0) AS ok;
     CREATE TABLE outer_v (id int);
     INSERT INTO outer_v VALUES (1);
     ALTER TABLE outer_v ENABLE ROW LEVEL SECURITY;
     CREATE POLICY outerv_read ON outer_v FOR SELECT USING ((SELECT ok FROM writer_v));
     -- A policy casting to a domain whose CHECK calls a volatile function (the cast runs it).
     CREATE FUNCTION chk(i int) RETURNS boolean LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS 'BEGIN INSERT INTO public.reads_log (id) VALUES (i); RETURN true; END';
     CREATE DOMAIN checked_int AS int CHECK (chk(VALUE));
     CREATE TABLE outer_c (id int);
     INSERT INTO outer_c VALUES (1);
     ALTER TABLE outer_c ENABLE ROW LEVEL SECURITY;
     CREATE POLICY outerc_read ON outer_c FOR SELECT USING ((id::checked_int) > 0);
     CREATE VIEW cast_v AS SELECT id::checked_int AS id FROM plain;
     GRANT SELECT ON hidden, outer_t, writer_v, outer_v, outer_c, cast_v TO ${ROLE};
     GRANT EXECUTE ON FUNCTION note_read(int) TO ${ROLE};
     GRANT SELECT ON docs, notes, plain, docs_v, reads_log TO ${ROLE};`,
  );
  t = await startTestGateway({
    upstreamUser: ROLE,
    policy: policyYaml({ default: 'deny', rules: [...basePolicyRules(), { name: 'agents-read', match: { kinds: ['agent'], statements: ['read'] }, action: 'allow' }], masking: { detectors: false } }),
  });
});
afterAll(async () => {
  await t?.stop();
  await db?.drop();
  await admin((c) => c.query(`DROP ROLE IF EXISTS ${ROLE}`)).catch(() => {});
});

const logged = () => admin(async (c) => (await c.query('SELECT count(*)::int AS n FROM reads_log')).rows[0].n as number, db.name);

describe('row security policies that call functions', () => {
  it('the premise: directly as the gateway\'s user, reading the table runs the policy\'s function, which writes', async () => {
    const c = new pg.Client({ ...PG, user: ROLE, database: db.name });
    await c.connect();
    try {
      expect((await c.query('SELECT count(*)::int AS n FROM docs')).rows[0].n).toBe(2);
      expect(await logged()).toBe(2);
    } finally {
      await c.end();
      await admin((a) => a.query('TRUNCATE reads_log'), db.name);
    }
  });

  it('a read-only agent\'s reads of such a table (directly, through a view, in a join, a subquery, both protocols) are refused, and nothing is written', async () => {
    const c = await connectAs(t, 'agent', [], db.name);
    try {
      const reads = [
        'SELECT * FROM docs',
        'SELECT body FROM public.docs WHERE id = 1',
        'SELECT count(*) FROM docs_v',
        'SELECT p.id FROM plain p JOIN docs d ON d.id = p.id',
        'SELECT 1 WHERE EXISTS (SELECT 1 FROM docs)',
        'WITH x AS (SELECT * FROM docs) SELECT * FROM x',
        'SELECT * FROM notes',
        'TABLE docs',
        'SELECT * FROM outer_t',
        'SELECT * FROM outer_v',
        'SELECT * FROM outer_c',
        'SELECT * FROM cast_v',
      ];
      for (const q of reads) {
        const e = await c.query(q).catch((x) => x);
        expect(e.code, q).toBe('42501');
        expect(e.message, q).toMatch(/policy|agents|read-only|permission denied by Sluice/i);
        const x = await c.query({ text: q, values: [] }).catch((y) => y);
        expect(x.code, `${q} (extended)`).toBe('42501');
      }
      expect(await logged()).toBe(0);
      // The audit names what the read would have run.
      const denied = (await auditEvents(t, { decision: 'deny' })).filter((e) => e.sql === 'SELECT * FROM docs');
      expect(denied.length).toBeGreaterThan(0);
      for (const e of denied) expect(e.effects?.join(' ')).toMatch(/note_read\(\)/);
      // A table whose policy calls only harmless built-ins reads as usual (and the policy applies: one row is visible).
      expect((await c.query('SELECT id FROM plain')).rows).toEqual([{ id: 1 }]);
      expect((await c.query('SELECT count(*)::int AS n FROM reads_log')).rows[0].n).toBe(0);
    } finally {
      await c.end();
    }
  });

  it('a policy created through the gateway is known once the re-read it started is done: a read of its table is refused, nothing written', async () => {
    const agent = await connectAs(t, 'agent', [], db.name);
    const dba = await connectAs(t, 'human', ['dba'], db.name);
    try {
      expect((await agent.query('SELECT body FROM memos')).rows).toEqual([{ body: 'one' }]);
      await dba.query('CREATE POLICY memos_logged ON memos AS RESTRICTIVE FOR SELECT USING (note_read(id))');
      // The DBA's next statement that needs the catalog waits for the re-read the DDL started.
      await dba.query('SELECT count(*) FROM reads_log');
      for (const q of ['SELECT body FROM memos', 'SELECT count(*) FROM memos WHERE id = 7']) expect((await agent.query(q).catch((e) => e)).code, q).toBe('42501');
      expect(await logged()).toBe(0);
      await dba.query('DROP POLICY memos_logged ON memos');
      await dba.query('SELECT count(*) FROM reads_log');
      expect((await agent.query('SELECT body FROM memos')).rows).toEqual([{ body: 'one' }]);
    } finally {
      await agent.end();
      await dba.end();
    }
  });
});
