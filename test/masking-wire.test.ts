import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import pg from 'pg';
import postgres from 'postgres';
import { startTestGateway, freshDatabase, auditEvents, run, type TestGateway } from './support/env.js';

const SETUP = `
CREATE TABLE customers (id int PRIMARY KEY, name text, email text, card text, ssn text, phone text, dob date, notes text, balance numeric);
INSERT INTO customers VALUES
  (1, 'Ada Lovelace', 'ada@example.com', '4111 1111 1111 1111', '123-45-6789', '+14155552671', '1815-12-10', 'prefers email: ada.l@math.org', 10.50),
  (2, 'Alan Turing', 'alan@example.com', '5500000000000004', '078-05-1121', '(415) 555-2671', '1912-06-23', NULL, 0);
CREATE TABLE payments (id int, card_no bigint, card_num numeric, amount numeric(16,2));
INSERT INTO payments VALUES (1, 4111111111111111, 5500000000000004, 1234567890123.45), (2, -4111111111111111, 4111111111111111.5, 0);
`;
const POLICY = `version: 1
default: allow
rules: []
masking:
  inference_guard: true
  exempt: { groups: [dba] }
  labels:
    contact: [customers.phone]
  columns:
    - { column: customers.ssn, masker: partial }
    - { column: email, masker: hash, groups: [support] }
    - { label: contact, masker: null, groups: [support] }
`;

let t: TestGateway;
let db: { name: string; drop: () => Promise<void> };
let analyst: string;
let support: string;
let dba: string;

beforeAll(async () => {
  db = await freshDatabase('sluice_mask', SETUP);
  t = await startTestGateway({ policy: POLICY });
  analyst = await t.key('human', ['analysts'], { name: 'ana' });
  support = await t.key('human', ['support'], { name: 'sam' });
  dba = await t.key('human', ['dba'], { name: 'dana' });
});
afterAll(async () => {
  await t?.stop();
  await db?.drop();
});

const query = async (key: string, sql: string, params?: unknown[], extra: Partial<pg.ClientConfig> = {}) => {
  const c = new pg.Client(t.conn(key, db.name, extra));
  await c.connect();
  try {
    return (await c.query(sql, params)).rows;
  } finally {
    await c.end();
  }
};

const MASKED_ADA = {
  id: 1,
  name: 'Ada Lovelace',
  email: 'a***@***.com',
  card: '**** **** **** 1111',
  ssn: '***-**-6789',
  phone: '+*******2671',
  // A masked date cannot be sent as text in a date column (clients parse it): it becomes NULL.
  dob: null,
  notes: 'prefers email: a***@***.org',
  balance: '10.50',
};

describe('masking in results through the gateway', () => {
  it('simple protocol: detectors mask emails, cards, phones inside text; column rules and date-of-birth columns apply', async () => {
    const rows = await query(analyst, "SELECT id, name, email, card, ssn, phone, dob, notes, balance FROM customers ORDER BY id");
    expect(rows[0]).toEqual(MASKED_ADA);
    expect(rows[1]).toMatchObject({ card: '************0004', ssn: '***-**-1121', phone: '(***) ***-2671', notes: null });
  });

  it('extended protocol with parameters, and binary result format', async () => {
    expect((await query(analyst, 'SELECT id, name, email, card, ssn, phone, dob, notes, balance FROM customers WHERE id = $1', [1]))[0]).toEqual(MASKED_ADA);
    const bin = await query(analyst, 'SELECT id, email, balance FROM customers WHERE id = $1', [2], { binary: true } as never);
    expect(bin[0]).toMatchObject({ id: 2, email: 'a***@***.com' });
  });

  it('short values are scanned too: a 6-character e-mail address and a 3-character IPv6 address (text, extended, binary)', async () => {
    const sql = `SELECT v FROM (VALUES (1, 'x@y.io'), (2, '::1'), (3, 'a@b.co'), (4, 'x@y'), (5, '12:30')) t(i, v) ORDER BY i`;
    for (const rows of [await query(analyst, sql), await query(analyst, `${sql} LIMIT $1`, [10]), await query(analyst, `${sql} LIMIT $1`, [10], { binary: true } as never)]) {
      const v = rows.map((r) => (Buffer.isBuffer(r.v) ? r.v.toString('utf8') : r.v));
      expect(v.slice(3)).toEqual(['x@y', '12:30']);
      for (const masked of v.slice(0, 3)) expect(['x@y.io', '::1', 'a@b.co']).not.toContain(masked);
    }
  });

  it('card numbers in bigint and numeric columns are found in text and binary results (a hit becomes NULL: masked text would not parse as a number)', async () => {
    const sql = 'SELECT card_no, card_num, amount FROM payments WHERE id > $1 ORDER BY id';
    expect(await query(analyst, sql, [0])).toEqual([
      { card_no: null, card_num: null, amount: '1234567890123.45' },
      { card_no: null, card_num: '4111111111111111.5', amount: '0.00' },
    ]);
    // The simple protocol; and postgres.js reading int8 as a BigInt, which masked text would make throw.
    expect(await query(analyst, 'SELECT card_no, card_num FROM payments WHERE id = 1')).toEqual([{ card_no: null, card_num: null }]);
    const pjs = postgres({ host: '127.0.0.1', port: t.port, user: 'x', pass: analyst, database: db.name, max: 1, types: { bigint: postgres.BigInt } });
    try {
      expect(await pjs`SELECT card_no, id::int8 AS n FROM payments WHERE id = ${1}`).toEqual([{ card_no: null, n: 1n }]);
    } finally {
      await pjs.end();
    }
    // Binary int8 and numeric cells carry the number, not its text: scanned as their text would be.
    const bin = await query(analyst, sql, [0], { binary: true } as never);
    // (4111111111111111.5 is no card number, in either form.)
    expect(bin.map((r) => [r.card_no, r.card_num === null])).toEqual([[null, true], [null, false]]);
    expect(bin[0]!.amount).not.toBeNull();
  });

  it('a card number as a float8 (whose text is 4.111111111111111e+15) becomes NULL in text and binary results', async () => {
    const sql = 'SELECT card_num::float8 AS f, (card_no + 0)::float8 AS g, 1.5::float8 AS plain FROM payments WHERE id = $1';
    for (const binary of [false, true]) {
      const rows = await query(analyst, sql, [1], { binary } as never);
      // (node-postgres misreads binary float8 values, directly too: only that the plain one is left is checked.)
      expect(rows[0], `binary ${binary}`).toMatchObject({ f: null, g: null });
      expect(rows[0].plain).not.toBeNull();
      if (!binary) expect(rows[0].plain).toBe(1.5);
    }
    expect(await query(analyst, 'SELECT 4111111111111111::float8 AS f')).toEqual([{ f: null }]);
  });

  it('postgres.js (describe once, then bind/execute) gets masked rows too', async () => {
    const sql = postgres({ host: '127.0.0.1', port: t.port, user: 'x', pass: analyst, database: db.name, max: 1 });
    try {
      for (let i = 0; i < 3; i++) {
        const r = await sql`SELECT card, ssn FROM customers WHERE id = ${1}`;
        expect(r[0]).toEqual({ card: '**** **** **** 1111', ssn: '***-**-6789' });
      }
    } finally {
      await sql.end();
    }
  });

  it('pipelined statements with different columns each get their own plan', async () => {
    const sql = postgres({ host: '127.0.0.1', port: t.port, user: 'x', pass: analyst, database: db.name, max: 1 });
    try {
      const [a, b, c] = await Promise.all([
        sql`SELECT ssn, name FROM customers WHERE id = ${1}`,
        sql`SELECT id, name, dob FROM customers WHERE id = ${2}`,
        sql`SELECT name, ssn FROM customers WHERE id = ${2}`,
      ]);
      expect(a[0]).toEqual({ ssn: '***-**-6789', name: 'Ada Lovelace' });
      expect(b[0]).toEqual({ id: 2, name: 'Alan Turing', dob: null });
      expect(c[0]).toEqual({ name: 'Alan Turing', ssn: '***-**-1121' });
    } finally {
      await sql.end();
    }
  });

  it('a keyed hash rule for one group keeps equal values equal (joins still work) without revealing them', async () => {
    const a = await query(support, 'SELECT email FROM customers WHERE id = 1');
    const b = await query(support, 'SELECT email FROM customers WHERE id = 1');
    expect(a[0].email).toMatch(/^h:[0-9a-f]{16}$/);
    expect(b[0].email).toBe(a[0].email);
    expect((await query(support, 'SELECT email FROM customers WHERE id = 2'))[0].email).not.toBe(a[0].email);
  });

  it('a rule by classification label applies to the labelled columns and is named by its label in the audit', async () => {
    const rows = await query(support, 'SELECT phone, name FROM customers WHERE id = 1');
    expect(rows[0]).toEqual({ phone: null, name: 'Ada Lovelace' });
    const events = await auditEvents(t, { subject: 'human:sam', type: 'statement' });
    expect(events.find((e) => e.sql === 'SELECT phone, name FROM customers WHERE id = 1')?.masked).toEqual({ 'contact:customers.phone': 1 });
  });

  it('an exempt group sees cleartext, and that is audited', async () => {
    const rows = await query(dba, 'SELECT email, ssn FROM customers WHERE id = 1');
    expect(rows[0]).toEqual({ email: 'ada@example.com', ssn: '123-45-6789' });
    const events = await auditEvents(t, { subject: 'human:dana', type: 'statement' });
    expect(events[0]).toMatchObject({ masking_exempt: true, rows: 1 });
    expect(events[0]!.masked).toBeUndefined();
  });

  it('audit records what was masked per statement, by detector type and rule', async () => {
    await query(analyst, 'SELECT email, ssn, card FROM customers ORDER BY id');
    const events = await auditEvents(t, { subject: 'human:ana', type: 'statement' });
    expect(events.find((e) => e.sql === 'SELECT email, ssn, card FROM customers ORDER BY id')?.masked).toEqual({ email: 2, 'customers.ssn': 2, card: 2 });
  });

  it('COPY ... TO STDOUT rows are masked; binary COPY is refused to masked identities', async () => {
    const r = await run('psql', ['-X', '-At', `host=127.0.0.1 port=${t.port} dbname=${db.name} user=a sslmode=require`, '-c', 'COPY (SELECT id, email, card FROM customers ORDER BY id) TO STDOUT WITH (FORMAT csv)'], { env: { PGPASSWORD: analyst } });
    expect(r.stdout).toBe('1,a***@***.com,**** **** **** 1111\n2,a***@***.com,************0004\n');
    const c = new pg.Client(t.conn(analyst, db.name));
    await c.connect();
    const err = await c.query('COPY customers TO STDOUT WITH (FORMAT binary)').catch((e) => e);
    await c.end();
    expect(err.code).toBe('42501');
    expect(err.message).toMatch(/binary format is not allowed/);
    const exempt = await run('psql', ['-X', '-At', `host=127.0.0.1 port=${t.port} dbname=${db.name} user=d sslmode=require`, '-c', 'COPY (SELECT email FROM customers WHERE id = 1) TO STDOUT'], { env: { PGPASSWORD: dba } });
    expect(exempt.stdout).toBe('ada@example.com\n');
  });

  it('with the inference guard on, expressions over a masked column are refused (their masking without the guard: masking-adversary.test.ts)', async () => {
    for (const sql of ["SELECT upper(ssn) FROM customers WHERE id = 1", "SELECT ssn || '' AS s2 FROM customers", 'SELECT string_agg(ssn, \',\') OVER () AS agg FROM customers', 'SELECT left(dob::text, 4) AS born FROM customers']) {
      const err = await query(analyst, sql).catch((e) => e);
      expect(err.code, sql).toBe('42501');
    }
    // A whole row is a plain output: masked, not refused.
    const rows = await query(analyst, 'SELECT row_to_json(c) AS j FROM customers c WHERE id = 1');
    expect(rows[0].j).toBe('[redacted customers.ssn (derived)]');
    // A masked column passed through a subquery or CTE is refused under the guard (the outer query could filter on
    // it under another name); selected as is, the rule applies (the keyed hash shows it is the rule, not a detector).
    const nested = await query(support, 'SELECT t.email AS x FROM (SELECT email FROM customers WHERE id = 1) t').catch((e) => e);
    expect(nested.code).toBe('42501');
    const hashed = await query(support, 'SELECT email AS x FROM customers ORDER BY id');
    expect(hashed[0].x).toMatch(/^h:[0-9a-f]{16}$/);
    expect(hashed[1].x).toMatch(/^h:[0-9a-f]{16}$/);
    expect(hashed[0].x).not.toBe(hashed[1].x);
    // A qualified rule does not fire for a different table's column of the same name; a column named ssn is still
    // taken to hold personal data (by name), so a value computed from it is masked.
    const other = await query(analyst, "SELECT upper(x.ssn) AS u FROM (VALUES ('not-a-secret')) AS x(ssn)");
    expect(other[0].u).toBe('[redacted ssn (by name) (derived)]');
    const unnamed = await query(analyst, "SELECT upper(x.y) AS u FROM (VALUES ('not-a-secret')) AS x(y)");
    expect(unnamed[0].u).toBe('NOT-A-SECRET');
  });

  it('the inference guard refuses filtering, joining, sorting and grouping on a masked column, not selecting it', async () => {
    for (const sql of [
      "SELECT id FROM customers WHERE ssn LIKE '1%'",
      'SELECT id FROM customers ORDER BY ssn',
      'SELECT count(*) FROM customers GROUP BY ssn',
      'SELECT a.id FROM customers a JOIN customers b ON a.ssn = b.ssn',
      "SELECT id FROM customers WHERE id IN (SELECT id FROM customers WHERE ssn > '5')",
      "SELECT id FROM customers WHERE dob < '1900-01-01'",
    ]) {
      const err = await query(analyst, sql).catch((e) => e);
      expect(err.code, sql).toBe('42501');
      expect(err.message, sql).toMatch(/is masked for you and cannot be used in WHERE, JOIN, ORDER BY, GROUP BY, HAVING, expressions or subqueries/);
    }
    // selecting it is fine (masked); a hash-ruled column is guarded only for the group the rule applies to
    expect((await query(analyst, 'SELECT ssn FROM customers WHERE id = 1'))[0].ssn).toBe('***-**-6789');
    expect((await query(analyst, "SELECT id FROM customers WHERE email = 'ada@example.com'"))).toEqual([{ id: 1 }]);
    expect((await query(support, "SELECT id FROM customers WHERE email = 'ada@example.com'").catch((e) => e)).code).toBe('42501');
    // exempt identities are not guarded
    expect(await query(dba, "SELECT id FROM customers WHERE ssn LIKE '1%'")).toEqual([{ id: 1 }]);
    const denied = await auditEvents(t, { subject: 'human:ana', decision: 'deny' });
    expect(denied.some((e) => e.rule === 'inference-guard')).toBe(true);
  });

  it('answers "what sensitive data did X see" from the audit trail (CLI)', async () => {
    const cli = (...a: string[]) => run('node', ['bin/sluice.js', 'audit', 'sensitive', '-c', t.configFile, ...a]);
    const ana = JSON.parse((await cli('--subject', 'human:ana', '--json')).stdout);
    expect(ana.masked['customers.ssn']).toBeGreaterThanOrEqual(2);
    expect(ana.masked.email).toBeGreaterThanOrEqual(2);
    expect(ana.masked_tables).toContain('customers');
    expect(ana.cleartext.statements).toBe(0);
    const dana = await cli('--subject', 'human:dana');
    expect(dana.stdout).toMatch(/nothing was masked for them/);
    expect(dana.stdout).toMatch(/saw cleartext \(exempt\) in \d+ statements: tables customers; columns .*ssn/);
  });

  it('psql output is masked as well', async () => {
    const r = await run('psql', ['-X', '-At', `host=127.0.0.1 port=${t.port} dbname=${db.name} user=a sslmode=require`, '-c', 'SELECT email FROM customers ORDER BY id'], { env: { PGPASSWORD: analyst } });
    expect(r.stdout.trim().split('\n')).toEqual(['a***@***.com', 'a***@***.com']);
  });
});

describe('a SQL cursor fetched through the extended protocol', () => {
  it('has its rows masked although the gateway never saw the portal bound', async () => {
    const { rawSession, execute, messages } = await import('./support/raw.js');
    const m = await import('../src/protocol/postgres/messages.js');
    const send = Buffer.concat([m.query('BEGIN; DECLARE c CURSOR FOR SELECT email FROM customers ORDER BY id'), execute('c', 0), m.sync()]);
    const data = await rawSession(t.port, db.name, analyst, send, 2);
    const rows = messages(data).filter((x) => x.type === 'D').map((x) => x.body.subarray(6).toString());
    expect(rows).toEqual(['a***@***.com', 'a***@***.com']);
    expect(data.includes(Buffer.from('ada@example.com'))).toBe(false);
    expect(messages(data).map((x) => x.type).filter((x) => x === 'T' || x === 'n')).toEqual([]); // our Describe stays hidden
  });
});

describe('a client that never describes its portals', () => {
  it('still gets masked rows in text and binary result formats, and sees no extra messages', async () => {
    const net = await import('node:net');
    const m = await import('../src/protocol/postgres/messages.js');
    const { Writer } = await import('../src/protocol/postgres/buffer.js');
    const bind = (format: number) => new Writer().cstring('').cstring('').int16(0).int16(0).int16(1).int16(format).message('B');
    const execute = () => new Writer().cstring('').int32(0).message('E');
    const data: Buffer = await new Promise((resolve, reject) => {
      const s = net.connect(t.port, '127.0.0.1');
      const chunks: Buffer[] = [];
      let sent = false;
      s.on('data', (d) => {
        chunks.push(d);
        const all = Buffer.concat(chunks);
        if (!sent && all.includes(Buffer.from([0x5a, 0, 0, 0, 5, 0x49]))) {
          sent = true;
          chunks.length = 0;
          // Parse, then Bind (text), Execute, Bind (binary), Execute, Sync: no Describe anywhere.
          s.write(Buffer.concat([m.parse('', 'SELECT email FROM customers WHERE id = 1'), bind(0), execute(), bind(1), execute(), m.sync()]));
        } else if (sent && all.includes(Buffer.from([0x5a, 0, 0, 0, 5]))) {
          s.end(m.terminate());
          resolve(all);
        }
      });
      s.on('error', reject);
      s.write(m.startupMessage({ user: 'raw', database: db.name }));
      s.write(m.passwordMessage(analyst));
    });
    // Message types the client receives: ParseComplete, then (BindComplete, DataRow, CommandComplete) twice, ReadyForQuery.
    const types: string[] = [];
    for (let p = 0; p < data.length; p += 1 + data.readInt32BE(p + 1)) types.push(String.fromCharCode(data[p]!));
    expect(types.join('')).toBe('12DC2DCZ');
    expect(data.includes(Buffer.from('ada@example.com'))).toBe(false);
    expect(data.toString('latin1').split('a***@***.com').length - 1).toBe(2);
  });
});
