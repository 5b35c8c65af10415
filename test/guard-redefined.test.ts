import { it, expect, beforeAll, afterAll } from 'vitest';
import postgres from 'postgres';
import { startTestGateway, freshDatabase, admin, type TestGateway } from './support/env.js';
import { basePolicyRules, policyYaml } from './support/policies.js';
import { connectAs } from './support/query.js';

/**
 * A function redefined to write after a read-only agent prepared, cached or declared statements calling it: every
 * way back to it is judged again (SQL PREPARE/EXECUTE, named statements, postgres.js, a view, another schema,
 * multi-statement text, other spelling, binary results, a cursor, DROP+CREATE and ALTER), refused, nothing written.
 */

let db: { name: string; drop: () => Promise<void> };
let t: TestGateway;
beforeAll(async () => {
  db = await freshDatabase('sluice_atk', `CREATE TABLE hits (n int); CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x';
    CREATE VIEW v AS SELECT f(1) AS a; CREATE SCHEMA s2; CREATE FUNCTION s2.g(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x';`);
  t = await startTestGateway({ policy: policyYaml({ default: 'deny', rules: [...basePolicyRules(), { name: 'agents-read', match: { kinds: ['agent'], statements: ['read'] }, action: 'allow' }], masking: { detectors: false } }) });
});
afterAll(async () => {
  await t?.stop();
  await db?.drop();
});
const hits = () => admin(async (c) => (await c.query('SELECT count(*)::int AS n FROM hits')).rows[0].n as number, db.name);

it('a read-only agent gets no stale verdict after a function it used is redefined to write', async () => {
  const a = await connectAs(t, 'agent', [], db.name);
  const dba = await connectAs(t, 'human', ['dba'], db.name);
  const sql = postgres({ host: '127.0.0.1', port: t.port, user: 'x', password: await t.key('agent', []), database: db.name, max: 1, onnotice: () => {} });
  const before: (() => Promise<unknown>)[] = [
    () => a.query('PREPARE p1 AS SELECT f(1)'),
    () => a.query('EXECUTE p1'),
    () => a.query({ name: 'n1', text: 'SELECT f($1) AS v', values: [1] }),
    () => a.query({ name: 'n2', text: 'SELECT a FROM v' }),
    () => a.query({ name: 'n3', text: 'SELECT s2.g($1)', values: [1] }),
    () => sql`SELECT f(${2}) AS v`,
    () => sql`SELECT s2.g(${2}) AS v`,
  ];
  for (const q of before) await q();
  const w = (fn: string) => `CREATE OR REPLACE FUNCTION ${fn}(x int) RETURNS int LANGUAGE sql VOLATILE AS 'INSERT INTO hits VALUES (1) RETURNING x'`;
  await dba.query(w('f'));
  await dba.query(w('s2.g'));
  await dba.query('SELECT count(*) FROM hits');
  const after: [string, () => Promise<unknown>][] = [
    ['EXECUTE p1', () => a.query('EXECUTE p1')],
    ['named n1', () => a.query({ name: 'n1', text: 'SELECT f($1) AS v', values: [1] })],
    ['named view n2', () => a.query({ name: 'n2', text: 'SELECT a FROM v' })],
    ['named other schema n3', () => a.query({ name: 'n3', text: 'SELECT s2.g($1)', values: [1] })],
    ['postgres.js f', () => sql`SELECT f(${2}) AS v`],
    ['postgres.js s2.g', () => sql`SELECT s2.g(${2}) AS v`],
    ['multi', () => a.query('SELECT 1; SELECT f(3)')],
    ['case/space', () => a.query('select   F( 4 )')],
    ['view simple', () => a.query('SELECT a FROM v')],
    ['binary', () => a.query({ text: 'SELECT f($1) AS v', values: [1], binary: true })],
    ['cursor', () => a.query('BEGIN; DECLARE c CURSOR FOR SELECT f(1); FETCH ALL FROM c; COMMIT')],
  ];
  const through: string[] = [];
  for (const [name, q] of after) {
    const e = await q().then(() => undefined, (x) => x);
    if (!e || e.code !== '42501') through.push(`${name}: ${e ? e.code + ' ' + e.message : 'ran'}`);
    await a.query('ROLLBACK').catch(() => {});
  }
  // DROP + CREATE and ALTER ... VOLATILE
  await dba.query('DROP FUNCTION s2.g(int) CASCADE');
  await dba.query(`CREATE FUNCTION s2.g(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x'`);
  await dba.query('SELECT count(*) FROM hits');
  await a.query({ name: 'n4', text: 'SELECT s2.g($1)', values: [1] });
  await dba.query(`ALTER FUNCTION s2.g(int) VOLATILE`);
  await dba.query(`CREATE OR REPLACE FUNCTION s2.g(x int) RETURNS int LANGUAGE sql VOLATILE AS 'INSERT INTO hits VALUES (1) RETURNING x'`);
  await dba.query('SELECT count(*) FROM hits');
  const e = await a.query({ name: 'n4', text: 'SELECT s2.g($1)', values: [1] }).then(() => undefined, (x) => x);
  if (!e || e.code !== '42501') through.push(`drop/create/alter n4: ${e ? e.code : 'ran'}`);
  await sql.end();
  await a.end();
  await dba.end();
  expect(through).toEqual([]);
  expect(await hits()).toBe(0);
}, 120_000);
