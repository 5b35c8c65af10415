import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import crypto from 'node:crypto';
import pg from 'pg';
import mysql from 'mysql2/promise';
import { startTestGateway, freshDatabase, MY, mysqlEngine, type TestGateway } from './support/env.js';
import { policyYaml, rules } from './support/policies.js';

const POLICY = policyYaml({ rules: [rules.everything()], masking: { inference_guard: true, detectors: false, columns: [{ column: 'customers.ssn', masker: 'partial' }] } });

let t: TestGateway;
let pgdb: { name: string; drop: () => Promise<void> };
let mydb: string;
let key: string;

beforeAll(async () => {
  pgdb = await freshDatabase(
    'sluice_views',
    `CREATE TABLE customers (id int, name text, ssn text); INSERT INTO customers VALUES (1, 'Ada', '123-45-6789');
     CREATE VIEW people AS SELECT id, name, ssn AS tax_id FROM customers;
     CREATE VIEW people2 AS SELECT id, upper(tax_id) AS t FROM people;`,
  );
  mydb = `sluice_views_${crypto.randomBytes(4).toString('hex')}`;
  const r = await mysql.createConnection({ ...MY, multipleStatements: true });
  await r.query(`CREATE DATABASE ${mydb}; USE ${mydb}; CREATE TABLE customers (id int, name varchar(20), ssn varchar(20)); INSERT INTO customers VALUES (1, 'Ada', '123-45-6789');
    CREATE VIEW people AS SELECT id, name, ssn AS tax_id FROM customers;`);
  await r.end();
  t = await startTestGateway({ policy: POLICY, config: mysqlEngine() });
  key = await t.key('human', ['analysts']);
});
afterAll(async () => {
  await t?.stop();
  await pgdb?.drop();
  const r = await mysql.createConnection(MY);
  await r.query(`DROP DATABASE IF EXISTS ${mydb}`);
  await r.end();
});

describe('masking follows view columns to the table columns they come from', () => {
  it('PostgreSQL: a view renaming a ruled column, and a view over that view', async () => {
    const c = new pg.Client(t.conn(key, pgdb.name));
    await c.connect();
    expect((await c.query('SELECT * FROM people')).rows).toEqual([{ id: 1, name: 'Ada', tax_id: '***-**-6789' }]);
    // Computed from the masked column (upper), through two views: redacted, not partially shown.
    expect((await c.query('SELECT t FROM people2')).rows).toEqual([{ t: '[redacted customers.ssn (derived)]' }]);
    await expect(c.query("SELECT id FROM people WHERE tax_id LIKE '1%'")).rejects.toThrow(/inference guard/);
    // A view created in the session is picked up (views are re-read after DDL).
    await c.query('CREATE VIEW people3 AS SELECT ssn AS hidden FROM customers');
    let row: unknown;
    for (let i = 0; i < 20; i++) {
      row = (await c.query('SELECT hidden FROM people3')).rows[0];
      if ((row as { hidden: string }).hidden !== '123-45-6789') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(row).toEqual({ hidden: '***-**-6789' });
    await c.end();
  });

  it('MySQL: the same through the MySQL engine', async () => {
    const c = await mysql.createConnection({ host: '127.0.0.1', port: t.gw.mysqlPort!, user: 'x', password: key, database: mydb, enableCleartextPlugin: true } as mysql.ConnectionOptions);
    const [rows] = await c.query('SELECT * FROM people');
    expect(rows).toEqual([{ id: 1, name: 'Ada', tax_id: '***-**-6789' }]);
    await c.end();
  });
});
