/**
 * Masking against the person writing the SQL: with email, card and ssn masked for an analyst, no seeded cleartext
 * (as is, digits only, reversed, hex, base64, or digit-translated) may appear in any byte the client receives —
 * result rows in text and binary formats, cursors, prepared statements, COPY, error and notice texts,
 * notifications — through the simple protocol (raw bytes) and the extended protocol (raw Parse/Bind/Execute, text
 * and binary results). With the inference guard on, every oracle is refused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import crypto from 'node:crypto';
import mysql from 'mysql2/promise';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { admin, freshDatabase, mysqlEngine, MY, startTestGateway, type TestGateway } from './support/env.js';
import { rawSession, messages, bind, execute } from './support/raw.js';
import * as m from '../src/protocol/postgres/messages.js';

const SSN = '512-83-4076';
const CARD = '4929481736295731';
const EMAIL = 'grace.hopper@navy.example';

const POLICY = (guard: boolean) => `version: 1
default: deny
rules:
  - name: session-and-transactions
    match: { statements: [transaction, session] }
    action: allow
  - name: reads
    match: { statements: [read] }
    action: allow
  - name: dba
    match: { groups: [dba], statements: [read, write, ddl] }
    action: allow
masking:
  inference_guard: ${guard}
  exempt: { groups: [dba] }
  columns:
    - { column: customers.ssn, masker: partial }
    - { column: customers.card, masker: partial }
    - { column: customers.email, masker: email }
`;

/** Every form of a secret that must never reach the client. */
function forms(v: string): string[] {
  const digits = v.replace(/\D/g, '');
  const out = [v, [...v].reverse().join(''), Buffer.from(v).toString('hex'), Buffer.from(v).toString('hex').toUpperCase(), Buffer.from(v).toString('base64').replace(/=+$/, '')];
  if (digits.length >= 9) out.push(digits, [...digits].reverse().join(''), digits.replace(/\d/g, (d) => 'abcdefghij'[Number(d)]!));
  // The middle of a card (what substr(card, 5, 8) would show)
  if (digits.length >= 16) out.push(digits.slice(4, 12));
  return out;
}
const SECRETS = [SSN, CARD, EMAIL].flatMap(forms);
/** rawSession with a deadline: a session that stops answering is a failure of its own, not a hung test. */
async function exchange(port: number, database: string, password: string, send: Buffer, ready: number): Promise<Buffer | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([rawSession(port, database, password, send, ready), new Promise<'timeout'>((res) => (timer = setTimeout(() => res('timeout'), 5000)))]);
  clearTimeout(timer);
  return r;
}
const leaked = (bytes: Buffer): string[] => {
  const text = bytes.toString('latin1');
  return SECRETS.filter((f) => text.includes(f));
};

const LEAK_CASES: string[][] = [
  ["SELECT concat_ws('|', email, card) FROM customers"], ["SELECT json_build_object('e', email) FROM customers"],
  ["SELECT ARRAY[replace(ssn, '-', '')] FROM customers"], ['SELECT ROW(ssn, card) FROM customers'],
  ["SELECT translate(card, '0123456789', 'abcdefghij') FROM customers"], ['SELECT substr(card, 5, 8) FROM customers'],
  ['SELECT substr(ssn, 1, 3) || substr(card, 1, 8) FROM customers'], ["SELECT regexp_replace(ssn, '-', '', 'g') FROM customers"],
  ["SELECT format('%s/%s', ssn, card) FROM customers"], ['SELECT ssn::text FROM customers'], ['SELECT card::numeric FROM customers'],
  ['SELECT card::bigint + 0 FROM customers'], ['SELECT l.r FROM customers c, LATERAL (SELECT reverse(c.ssn) AS r) l'],
  ['SELECT name FROM customers UNION ALL SELECT ssn FROM customers'], ["SELECT unnest(string_to_array(ssn, '-')) FROM customers"],
  ["SELECT x FROM (SELECT replace(ssn, '-', '') AS x FROM customers) s"], ['WITH w AS (SELECT reverse(email) AS e FROM customers) SELECT e FROM w'],
  ['SELECT * FROM (SELECT ssn AS x FROM customers) s'], ['SELECT c FROM customers c'], ['SELECT row_to_json(c) FROM customers c'],
  ['SELECT (c).ssn FROM customers c'], ['SELECT array_agg(ssn) FROM customers'], ['SELECT json_agg(c) FROM customers c'],
  ['SELECT first_value(card) OVER () FROM customers'], ['SELECT CASE WHEN true THEN ssn END FROM customers'],
  ["SELECT coalesce(ssn, '') FROM customers"], ['SELECT (SELECT ssn FROM customers LIMIT 1)'],
  ['SELECT * FROM (VALUES ((SELECT card FROM customers LIMIT 1))) v(x)'], ["SELECT encode(convert_to(email, 'UTF8'), 'hex') FROM customers"],
  ["SELECT encode(convert_to(ssn, 'UTF8'), 'base64') FROM customers"], ["SELECT convert_to(email, 'UTF8') FROM customers"],
  ["SELECT string_agg(reverse(ssn), ',') FROM customers"], ["SELECT lower(email) || '' FROM customers"], ['SELECT jsonb_build_array(ssn) FROM customers'],
  ['SELECT xmlelement(name x, ssn) FROM customers'], ['SELECT ssn COLLATE "C" FROM customers'], ["SELECT greatest(ssn, '') FROM customers"],
  ['SELECT quote_literal(email) FROM customers'], ["SELECT split_part(email, '@', 1), split_part(email, '@', 2) FROM customers"],
  ['SELECT left(card, 12), right(card, 8) FROM customers'], ["SELECT overlay(card placing 'x' from 16 for 1) FROM customers"],
  ['SELECT repeat(ssn, 1) FROM customers'], ['SELECT ltrim(ssn) FROM customers'], ['SELECT ssn || name FROM customers'],
  ['SELECT (ARRAY[ssn])[1] FROM customers'], ["SELECT json_build_object('s', ssn)->>'s' FROM customers"], ['SELECT reverse(email) FROM customers'],
  ['SELECT max(card) FROM customers'], ['SELECT min(ssn) FROM customers GROUP BY name'], ['SELECT to_jsonb(c.*) FROM customers c'],
  ['SELECT hstore_free, ssn FROM (SELECT 1 AS hstore_free, ssn FROM customers) s'], ["SELECT replace(replace(ssn, '-', ''), '', '') AS name FROM customers"],
  // Side channels: errors and notices that echo values.
  ['SELECT ssn::int FROM customers'], ['SELECT current_setting(ssn) FROM customers'], ['SELECT email::int FROM customers'],
  ['SELECT card::uuid FROM customers'], ['SELECT id FROM customers WHERE ssn::int > 0'], ['SELECT to_date(ssn, email) FROM customers'],
  ['SELECT ssn::date FROM customers'], ['SELECT 1 FROM customers WHERE card::int2 > 0'],
  // Cursors and prepared statements.
  ['DECLARE c CURSOR FOR SELECT reverse(ssn) FROM customers; FETCH ALL FROM c'],
  ['BEGIN', "DECLARE c CURSOR FOR SELECT replace(card, '9', '9') FROM customers", 'FETCH 10 FROM c', 'COMMIT'],
  ['DECLARE h CURSOR WITH HOLD FOR SELECT reverse(email) FROM customers', 'FETCH ALL FROM h', 'CLOSE h'],
  ['BEGIN', "DECLARE b BINARY CURSOR FOR SELECT convert_to(email, 'UTF8'), ssn FROM customers", 'FETCH ALL FROM b', 'COMMIT'],
  ['PREPARE q AS SELECT reverse(ssn) FROM customers', 'EXECUTE q'],
  ['BEGIN', 'DECLARE d CURSOR FOR SELECT * FROM (SELECT ssn AS x, card AS y FROM customers) s', 'MOVE 0 IN d', 'FETCH NEXT FROM d', 'COMMIT'],
  // Review round 2: variants not written before.
  ['SELECT initcap(email) FROM customers'], ['SELECT ssn::bytea FROM customers'], ["SELECT string_to_array(card, NULL) FROM customers"],
  ["SELECT array_to_string(ARRAY[card], '') FROM customers"], ['SELECT (SELECT array_agg(c) FROM customers c)'],
  ["SELECT jsonb_path_query(to_jsonb(c), '$.ssn') FROM customers c"], ['SELECT lpad(card, 20) FROM customers'],
  ['SELECT * FROM json_populate_record(NULL::customers, (SELECT row_to_json(c) FROM customers c))'], ['SELECT u FROM customers c, LATERAL unnest(ARRAY[c.ssn]) u'],
  ['SELECT t.* FROM (SELECT * FROM customers) t'], ['TABLE customers'], ["SELECT ssn FROM customers UNION SELECT 'x'"],
  ['SELECT * FROM ROWS FROM (unnest(ARRAY[(SELECT card FROM customers)]))'], ["SELECT to_json(email)::text FROM customers"],
  // Columns with no rule, masked by the detectors, whose names say they hold personal data: transformed values too.
  ['SELECT reverse(email) FROM contacts'], ["SELECT encode(convert_to(email, 'UTF8'), 'base64') FROM contacts"],
  ["SELECT translate(email, 'abcdefghijklmnopqrstuvwxyz', 'bcdefghijklmnopqrstuvwxyza') IS NULL, reverse(email) FROM contacts"],
  ['COPY (SELECT reverse(email) FROM contacts) TO STDOUT'], ["SELECT set_config('app.c', email, false) FROM contacts", "SELECT current_setting('app.c')"],
  // Stored where a later statement reads it back.
  ["SELECT set_config('app.x', ssn, false) FROM customers", "SELECT current_setting('app.x')"],
  ["SELECT set_config('app.y', reverse(card), false) FROM customers; SELECT current_setting('app.y')"],
  ["SELECT 1 FROM customers WHERE set_config('app.z', email, false) IS NOT NULL", "SHOW app.z"],
  // COPY carries no column descriptions: refused when it would carry a masked column.
  ['COPY (SELECT reverse(email) FROM customers) TO STDOUT'], ['COPY customers TO STDOUT'], ['COPY customers (name, ssn) TO STDOUT'],
  ["COPY (SELECT * FROM customers) TO STDOUT WITH (FORMAT csv)"],
];

let t: TestGateway;
let guarded: TestGateway;
let db: { name: string; drop: () => Promise<void> };
let analyst: string;
let guardedAnalyst: string;
let mydb: string;

beforeAll(async () => {
  db = await freshDatabase(
    'sluice_mask_adv',
    `CREATE TABLE customers (id int PRIMARY KEY, name text, email text, card text, ssn text);
     INSERT INTO customers VALUES (1, 'Grace', '${EMAIL}', '${CARD}', '${SSN}');
     CREATE TABLE contacts (id int PRIMARY KEY, name text, email text, phone text);
     INSERT INTO contacts VALUES (1, 'Grace', '${EMAIL}', '+1 415 555 0100');`,
  );
  mydb = `sluice_mask_adv_${crypto.randomBytes(4).toString('hex')}`;
  const r = await mysql.createConnection({ ...MY, multipleStatements: true });
  await r.query(`CREATE DATABASE ${mydb}; USE ${mydb}; CREATE TABLE customers (id int PRIMARY KEY, name varchar(40), email varchar(80), card varchar(20), ssn varchar(20));
    INSERT INTO customers VALUES (1, 'Grace', '${EMAIL}', '${CARD}', '${SSN}');
    CREATE TABLE payments (id int PRIMARY KEY, card_no BIGINT, card_u BIGINT UNSIGNED);
    INSERT INTO payments VALUES (1, 4111111111111111, 5500000000000004);`);
  await r.end();
  t = await startTestGateway({ policy: POLICY(false), config: `api: { listen: { host: 127.0.0.1, port: 0 } }\n${mysqlEngine()}` });
  guarded = await startTestGateway({ policy: POLICY(true) });
  analyst = await t.key('human', ['analysts']);
  guardedAnalyst = await guarded.key('human', ['analysts']);
}, 120_000);

afterAll(async () => {
  await t?.stop();
  await guarded?.stop();
  await db?.drop();
  const r = await mysql.createConnection(MY);
  await r.query(`DROP DATABASE IF EXISTS ${mydb}`);
  await r.end();
});

describe(`masking cannot be unwrapped: ${LEAK_CASES.length} cases, simple and extended protocol, text and binary`, () => {
  it('no seeded cleartext in any byte of the simple protocol (results, errors, notices, cursors, COPY)', async () => {
    const leaks: string[] = [];
    for (const steps of LEAK_CASES) {
      const data = await exchange(t.port, db.name, analyst, Buffer.concat(steps.map((s) => m.query(s))), steps.length);
      if (data === 'timeout') {
        leaks.push(`${steps.join(' ⏎ ')}: no answer`);
        continue;
      }
      const found = leaked(data);
      if (found.length) leaks.push(`${steps.join(' ⏎ ')}: ${found.join(', ')}`);
      if (messages(data).filter((x) => x.type === 'Z').length < steps.length) leaks.push(`${steps.join(' ⏎ ')}: session did not answer every message`);
    }
    expect(leaks).toEqual([]);
  }, 120_000);

  it('no seeded cleartext through Parse/Bind/Execute, in text and in binary result format', async () => {
    const leaks: string[] = [];
    for (const steps of LEAK_CASES.filter((s) => s.length === 1 && !s[0]!.includes(';') && !s[0]!.startsWith('COPY'))) {
      for (const format of [0, 1]) {
        const send = Buffer.concat([m.parse('', steps[0]!), bind('', '', format), m.describe('P', ''), execute(''), m.sync()]);
        const data = await exchange(t.port, db.name, analyst, send, 1);
        if (data === 'timeout') {
          leaks.push(`${steps[0]} (format ${format}): no answer`);
          continue;
        }
        const found = leaked(data);
        if (found.length) leaks.push(`${steps[0]} (format ${format}): ${found.join(', ')}`);
      }
    }
    // A statement prepared with SQL PREPARE, then bound and executed by the protocol; a SQL cursor's portal
    // executed by the protocol.
    const viaSqlPrepare = Buffer.concat([m.query('PREPARE sq AS SELECT reverse(ssn), card::numeric FROM customers'), bind('', 'sq', 1), execute(''), m.sync()]);
    const d1 = await exchange(t.port, db.name, analyst, viaSqlPrepare, 2);
    if (d1 === 'timeout' || leaked(d1).length) leaks.push(`SQL PREPARE + protocol Bind: ${d1 === 'timeout' ? 'no answer' : leaked(d1).join(', ')}`);
    const viaCursorPortal = Buffer.concat([m.query('BEGIN'), m.query('DECLARE pc CURSOR FOR SELECT reverse(email) FROM customers'), execute('pc'), m.sync(), m.query('COMMIT')]);
    const d2 = await exchange(t.port, db.name, analyst, viaCursorPortal, 4);
    if (d2 === 'timeout' || leaked(d2).length) leaks.push(`protocol Execute of a SQL cursor: ${d2 === 'timeout' ? 'no answer' : leaked(d2).join(', ')}`);
    expect(leaks).toEqual([]);
  }, 120_000);

  it("notifications from another session are scanned: a DBA's pg_notify of an SSN reaches the analyst masked", async () => {
    const listener = new pg.Client(t.conn(analyst, db.name));
    await listener.connect();
    const got: string[] = [];
    listener.on('notification', (n) => got.push(n.payload ?? ''));
    await listener.query('LISTEN leak');
    await admin((c) => c.query(`SELECT pg_notify('leak', 'ssn ' || ssn) FROM customers`), db.name);
    for (let i = 0; i < 50 && !got.length; i++) await new Promise((r) => setTimeout(r, 20));
    await listener.end();
    expect(got.length).toBe(1);
    expect(SECRETS.filter((f) => got[0]!.includes(f))).toEqual([]);
  });

  it('plain selects still read naturally: masked values, not refusals; clean expressions pass', async () => {
    const c = new pg.Client(t.conn(analyst, db.name));
    await c.connect();
    const r = await c.query('SELECT id, name, upper(name) AS up, email, ssn, card, count(*) OVER () AS n FROM customers');
    await c.end();
    expect(r.rows[0]).toEqual({ id: 1, name: 'Grace', up: 'GRACE', email: 'g***@***.example', ssn: '***-**-4076', card: '************5731', n: '1' });
    // Detector-masked columns of a table without rules: plain values masked by the scan, clean expressions untouched.
    const c2 = new pg.Client(t.conn(analyst, db.name));
    await c2.connect();
    const r2 = await c2.query('SELECT email, upper(name) AS up, length(name) AS n FROM contacts');
    await c2.end();
    expect(r2.rows[0]).toEqual({ email: 'g***@***.example', up: 'GRACE', n: 5 });
  });
});

describe('MySQL engine: the same taint, text and binary protocol', () => {
  const MYSQL_CASES: string[][] = [
    ["SELECT CONCAT(ssn, '') FROM customers"], ['SELECT HEX(ssn) FROM customers'], ['SELECT TO_BASE64(email) FROM customers'],
    ['SELECT SUBSTRING(card, 5, 8) FROM customers'], ['SELECT CONVERT(ssn USING latin1) FROM customers'], ['SELECT REVERSE(email) FROM customers'],
    ['SELECT name FROM customers UNION ALL SELECT ssn FROM customers'], ["SELECT JSON_OBJECT('s', ssn) FROM customers"], ['SELECT CAST(card AS UNSIGNED) FROM customers'],
    ['SELECT ssn + 0 FROM customers'], ["SELECT REPLACE(ssn, '-', '') FROM customers"], ['SELECT x FROM (SELECT ssn AS x FROM customers) s'],
    ['SELECT ssn INTO @v FROM customers', 'SELECT @v'], ['SET @w = (SELECT card FROM customers LIMIT 1)', 'SELECT @w'],
    ['SELECT CAST(card AS SIGNED) + 0 FROM customers', 'SHOW WARNINGS'], ["SELECT ssn * 1 FROM customers", 'SHOW WARNINGS'],
    ['SELECT LPAD(card, 20, 0) FROM customers'], ["SELECT INSERT(ssn, 1, 0, '') FROM customers"], ['SELECT ELT(1, ssn) FROM customers'],
    ['SELECT (SELECT ssn FROM customers LIMIT 1)'], ['SELECT GROUP_CONCAT(ssn) FROM customers'], ['SELECT JSON_ARRAY(email) FROM customers'],
    ["SELECT REGEXP_REPLACE(ssn, '-', '') FROM customers"], ["SELECT CONCAT_WS('|', email, card) FROM customers"],
    ['SELECT SUBSTR(card FROM 5 FOR 8) FROM customers'], ['SELECT UNHEX(HEX(ssn)) FROM customers'],
  ];
  it.each([false, true])('no seeded cleartext in results, errors or warnings (prepared: %s)', async (prepared) => {
    const key = await t.key('human', ['analysts']);
    const leaks: string[] = [];
    for (const steps of MYSQL_CASES) {
      const c = await mysql.createConnection({ host: '127.0.0.1', port: t.gw.mysqlPort!, user: 'x', password: key, database: mydb, enableCleartextPlugin: true } as mysql.ConnectionOptions);
      const seen: string[] = [];
      try {
        for (const sql of steps) {
          const r = await (prepared && !sql.startsWith('SHOW') ? c.execute(sql) : c.query(sql)).then((x) => JSON.stringify(x[0]), (e: Error) => e.message);
          seen.push(r);
        }
      } finally {
        await c.end();
      }
      const text = seen.join(' ');
      const found = SECRETS.filter((f) => text.includes(f));
      if (found.length) leaks.push(`${steps.join(' ⏎ ')}: ${found.join(', ')}`);
    }
    expect(leaks).toEqual([]);
  }, 120_000);
});

describe('MySQL: a card number in a BIGINT column (no rule, found by the detectors)', () => {
  it.each([false, true])('is masked in text rows and NULL in binary rows (prepared: %s)', async (prepared) => {
    const key = await t.key('human', ['analysts']);
    const c = await mysql.createConnection({ host: '127.0.0.1', port: t.gw.mysqlPort!, user: 'x', password: key, database: mydb, enableCleartextPlugin: true, supportBigNumbers: true, bigNumberStrings: true } as mysql.ConnectionOptions);
    try {
      const sql = 'SELECT id, card_no, card_u FROM payments';
      const [rows] = (await (prepared ? c.execute(sql) : c.query(sql))) as unknown as [Record<string, unknown>[]];
      const text = JSON.stringify(rows);
      expect(text).not.toContain('4111111111111111');
      expect(text).not.toContain('5500000000000004');
      if (prepared) expect(rows).toEqual([{ id: 1, card_no: null, card_u: null }]);
    } finally {
      await c.end();
    }
  });
});

describe('MCP: the query tool masks the same way (one implementation)', () => {
  it('no seeded cleartext in any tool result or tool error', async () => {
    const agent = await t.key('agent', ['analysts'], { name: 'mcp-agent' });
    const client = new Client({ name: 'adversary', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL('/mcp', `http://127.0.0.1:${t.gw.apiPort}`), { requestInit: { headers: { authorization: `Bearer ${agent}` } } }));
    const leaks: string[] = [];
    try {
      for (const steps of LEAK_CASES.filter((x) => x.length === 1 && !x[0]!.includes(';') && !x[0]!.startsWith('COPY'))) {
        const r = await client.callTool({ name: 'query', arguments: { database: db.name, sql: steps[0], intent: 'adversarial test' } });
        const text = JSON.stringify(r);
        const found = SECRETS.filter((f) => text.includes(f));
        if (found.length) leaks.push(`${steps[0]}: ${found.join(', ')}`);
      }
    } finally {
      await client.close();
    }
    expect(leaks).toEqual([]);
  }, 120_000);
});

describe('the inference guard refuses every oracle on a masked column', () => {
  const ORACLES = [
    "SELECT CASE WHEN ssn LIKE '5%' THEN 1 END FROM customers", 'SELECT ssn FROM customers ORDER BY 1', 'SELECT ssn FROM customers ORDER BY ssn',
    'SELECT rank() OVER (ORDER BY card) FROM customers', 'SELECT DISTINCT ON (substr(ssn, 1, 1)) id FROM customers',
    "SELECT count(*) FILTER (WHERE ssn LIKE '5%') FROM customers", "SELECT * FROM (SELECT ssn AS x FROM customers) s WHERE x LIKE '5%'",
    "WITH w AS (SELECT ssn AS x FROM customers) SELECT 1 FROM w WHERE x > '5'", "SELECT 1 / (CASE WHEN ssn LIKE '5%' THEN 0 ELSE 1 END) FROM customers",
    'SELECT ssn, count(*) FROM customers GROUP BY 1', 'SELECT ssn AS s FROM customers ORDER BY s', 'SELECT id FROM customers WHERE length(ssn) = 11',
    'SELECT c1.id FROM customers c1 JOIN customers c2 USING (ssn)', 'SELECT max(ssn) FROM customers', "SELECT id FROM customers WHERE email ~ '^g'",
    'SELECT id FROM customers ORDER BY card DESC LIMIT 1', "SELECT ascii(ssn) FROM customers", 'SELECT ssn FROM customers GROUP BY ssn',
    'SELECT count(DISTINCT ssn) FILTER (WHERE card > \'4\') FROM customers', "SELECT id FROM customers WHERE EXISTS (SELECT 1 FROM customers x WHERE x.card LIKE '4%')",
  ];
  it.each(ORACLES)('%s', async (sql) => {
    const c = new pg.Client(guarded.conn(guardedAnalyst, db.name));
    await c.connect();
    try {
      const e = await c.query(sql).catch((x) => x);
      expect(e.code).toBe('42501');
      expect(e.message).toMatch(/masked for you/);
      expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    } finally {
      await c.end();
    }
  });
  it('plain outputs and count() are allowed under the guard, masked', async () => {
    const c = new pg.Client(guarded.conn(guardedAnalyst, db.name));
    await c.connect();
    const r = await c.query('SELECT ssn, name, count(ssn) OVER () AS n FROM customers ORDER BY name');
    await c.end();
    expect(r.rows[0]).toEqual({ ssn: '***-**-4076', name: 'Grace', n: '1' });
  });
});
