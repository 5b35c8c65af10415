import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import net from 'node:net';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import mysql from 'mysql2/promise';
import { startTestGateway, run, auditEvents, MY, mysqlEngine, type TestGateway } from './support/env.js';


const POLICY = `version: 1
default: deny
rules:
  - name: session-and-transactions
    match: { statements: [transaction, session] }
    action: allow
  - name: destructive-needs-dba
    match: { destructive: true, groups: [analysts] }
    action: deny
    reason: destructive statements need a DBA
  - name: no-multi-statements
    match: { flags: [multi-statement], groups: [analysts] }
    action: deny
  - name: analysts-write-reviewed
    match: { groups: [analysts], statements: [write] }
    action: require_approval
    approval: { approvers: [dba] }
  - name: analysts-read
    match: { groups: [analysts], statements: [read] }
    action: allow
  - name: dba
    match: { groups: [dba] }
    action: allow
masking:
  inference_guard: true
  exempt: { groups: [dba] }
  columns:
    - { column: customers.ssn, masker: partial }
`;

let t: TestGateway;
let db: string;
let alice: string;
let dana: string;
let port: number;
const root = () => mysql.createConnection({ ...MY, multipleStatements: true });

beforeAll(async () => {
  db = `sluice_my_${crypto.randomBytes(4).toString('hex')}`;
  const r = await root();
  await r.query(`CREATE DATABASE ${db}; USE ${db};
    CREATE TABLE customers (id int primary key, name varchar(50), email varchar(100), ssn varchar(20), notes text, dob date, score double) ENGINE=InnoDB;
    INSERT INTO customers VALUES (1,'Ada','ada@example.com','123-45-6789','call +1 415 555 0100','1990-01-02',1.5),(2,'Bob','bob@example.org','987-65-4321','vip',NULL,2);
    CREATE TABLE orders (id int primary key, customer_id int, status varchar(20)) ENGINE=InnoDB;
    INSERT INTO orders VALUES (1,1,'new'),(2,1,'new'),(3,2,'new');`);
  await r.end();
  t = await startTestGateway({
    policy: POLICY,
    config: `${mysqlEngine({ sslmode: 'prefer' })}
api: { listen: { host: 127.0.0.1, port: 0 }, roles: { admin: [dba] } }
approvals: { poll_ms: 200 }`,
  });
  port = t.gw.mysqlPort!;
  alice = await t.key('human', ['analysts'], { name: 'alice' });
  dana = await t.key('human', ['dba'], { name: 'dana' });
});
afterAll(async () => {
  await t?.stop();
  const r = await root();
  await r.query(`DROP DATABASE IF EXISTS ${db}`);
  await r.end();
});

const connect = (password: string, extra: Record<string, unknown> = {}) => mysql.createConnection({ host: '127.0.0.1', port, user: 'someone', password, database: db, enableCleartextPlugin: true, ...extra } as mysql.ConnectionOptions);
const cli = (password: string, ...args: string[]) => run('mariadb', ['-h', '127.0.0.1', '-P', String(port), '-u', 'someone', `-p${password}`, '--batch', db, ...args]);

describe('MySQL engine: clients that never log in', () => {
  it('hold at most a bounded number of server connections; a real client still logs in meanwhile', async () => {
    const { MAX_PREAUTH_UPSTREAM } = await import('../src/protocol/mysql/session.js');
    const r = await root();
    const unauthenticated = async () => Number(((await r.query(`SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE USER = 'unauthenticated user'`)) as unknown as [{ n: number }[]])[0][0].n);
    const before = await unauthenticated();
    const silent: net.Socket[] = [];
    try {
      // Each connects and reads the greeting, then says nothing (as a scanner or a slow-loris client would).
      for (let i = 0; i < 40; i++) {
        const s = net.connect(port, '127.0.0.1');
        s.on('error', () => {});
        silent.push(s);
      }
      await Promise.all(silent.map((s) => new Promise((done) => s.once('data', done))));
      const held = (await unauthenticated()) - before;
      // Without the bound, each would hold one of the server's connections (40); other test files' gateways may
      // hold a few of their own at this moment.
      expect(held).toBeLessThanOrEqual(MAX_PREAUTH_UPSTREAM + 8);
      const c = await connect(alice);
      const [rows] = (await c.query('SELECT CONNECTION_ID() AS id')) as unknown as [{ id: number }[]];
      expect(rows[0]!.id).toBeGreaterThan(0);
      await c.end();
    } finally {
      for (const s of silent) s.destroy();
      await r.end();
    }
  });
});

describe('MySQL engine: mysql2 (text and prepared)', () => {
  it('masks results by detector and column rule, in text and binary protocol; exempt DBAs see cleartext', async () => {
    const c = await connect(alice);
    const [rows] = await c.query('SELECT id, email, ssn, notes, dob, score FROM customers ORDER BY id');
    // A masked date (or number) becomes NULL: any other text would not parse as its type in the client.
    expect(rows).toEqual([
      { id: 1, email: 'a***@***.com', ssn: '***-**-6789', notes: 'call +* *** *** 0100', dob: null, score: 1.5 },
      { id: 2, email: 'b***@***.org', ssn: '***-**-4321', notes: 'vip', dob: null, score: 2 },
    ]);
    const [prepared] = await c.execute('SELECT id, email, ssn, upper(ssn) AS up, dob FROM customers WHERE id = ?', [1]);
    expect(prepared).toEqual([{ id: 1, email: 'a***@***.com', ssn: '***-**-6789', up: '[redacted customers.ssn (derived)]', dob: null }]);
    await c.end();
    const d = await connect(dana);
    const [clear] = await d.query('SELECT ssn FROM customers WHERE id = 1');
    expect(clear).toEqual([{ ssn: '123-45-6789' }]);
    await d.end();
    const ev = (await auditEvents(t, { subject: 'human:alice', type: 'statement' })).find((e) => e.sql?.startsWith('SELECT id, email, ssn, notes'));
    expect(ev).toMatchObject({ protocol: 'mysql', decision: 'allow', rows: 2, masked: { email: 2, 'customers.ssn': 2, phone: 1, date_of_birth: 1 } });
  });

  it('a card number in a number column becomes NULL in text and binary rows (masked text would not parse as a number)', async () => {
    const c = await connect(alice);
    try {
      const sql = 'SELECT 4111111111111111 AS card_no, CAST(5500000000000004 AS DECIMAL(20,0)) AS card_num, CAST(4111111111111111 AS DOUBLE) AS card_d, CAST(4111111111111111 AS UNSIGNED) AS card_u, 1234567890123 AS plain, 1.5e0 AS f, id FROM customers WHERE id = 1';
      const want = [{ card_no: null, card_num: null, card_d: null, card_u: null, plain: 1234567890123, f: 1.5, id: 1 }];
      const [text] = await c.query(sql);
      expect(text).toEqual(want);
      const [binary] = await c.execute(sql.replace('id = 1', 'id = ?'), [1]);
      expect(binary).toEqual(want);
    } finally {
      await c.end();
    }
  });

  it('stored functions that read a masked column: their values are not shown in clear (the inference guard refuses them as expressions over it); other functions answer as directly', async () => {
    const r = await root();
    // Created through Sluice (the gateway reads its routine catalog again after them; routines created behind its
    // back are taken to have effects until its next read, within a minute).
    const d = await connect(dana);
    for (const sql of [
      'CREATE FUNCTION get_ssn(k int) RETURNS varchar(20) READS SQL DATA RETURN (SELECT ssn FROM customers WHERE id = k)',
      "CREATE FUNCTION ssn_starts(p varchar(5)) RETURNS int READS SQL DATA RETURN (SELECT count(*) FROM customers WHERE ssn LIKE CONCAT(p, '%'))",
      'CREATE FUNCTION get_name(k int) RETURNS varchar(50) READS SQL DATA RETURN (SELECT name FROM customers WHERE id = k)',
      'CREATE FUNCTION via_name(k int) RETURNS varchar(20) READS SQL DATA RETURN get_ssn(k)',
    ]) await d.query(sql);
    const c = await connect(alice);
    try {
      for (const sql of ['SELECT get_ssn(1) AS s', "SELECT id FROM orders WHERE ssn_starts('123') > 0", 'SELECT via_name(1) AS s', 'SELECT upper(get_ssn(2)) AS s']) {
        await expect(c.query(sql), sql).rejects.toMatchObject({ errno: 1142, message: expect.stringContaining('inference guard') });
      }
      expect((await c.query('SELECT get_name(1) AS n'))[0]).toEqual([{ n: 'Ada' }]);
      expect((await d.query('SELECT get_ssn(1) AS s'))[0]).toEqual([{ s: '123-45-6789' }]);
      // Created behind the gateway's back: the first call makes it read its catalog again (not a write held for approval).
      await r.query(`CREATE FUNCTION ${db}.behind(k int) RETURNS int READS SQL DATA RETURN k + 1`);
      const late = new Promise((_, reject) => setTimeout(() => reject(new Error('not answered in 5 s (held as a call of an unknown routine?)')), 5000));
      expect((await Promise.race([c.query('SELECT behind(6) AS b'), late]) as any)[0]).toEqual([{ b: 7 }]);
    } finally {
      await c.end();
      await d.end();
      await r.query(`DROP FUNCTION ${db}.get_ssn; DROP FUNCTION ${db}.ssn_starts; DROP FUNCTION ${db}.get_name; DROP FUNCTION ${db}.via_name; DROP FUNCTION IF EXISTS ${db}.behind`);
      await r.end();
    }
  });

  it('several result sets in one query, and 100k-row results, pass intact and masked', async () => {
    const c = await connect(dana, { multipleStatements: true });
    const [multi] = (await c.query("SELECT 1 AS a; SELECT 'x@example.com' AS e, 2 AS b; SELECT 3 AS c")) as unknown as [unknown[]];
    // Dana is exempt from masking: cleartext.
    expect(multi).toEqual([[{ a: 1 }], [{ e: 'x@example.com', b: 2 }], [{ c: 3 }]]);
    await c.end();
    const a = await connect(alice);
    const [big] = (await a.query('SELECT seq, CONCAT(seq, "@example.com") AS e FROM seq_1_to_100000')) as unknown as [{ seq: number; e: string }[]];
    expect(big).toHaveLength(100_000);
    expect(big[99_999]).toEqual({ seq: 100_000, e: '1***@***.com' });
    await a.end();
  });

  it('denies by policy with a MySQL error, the connection stays usable; unparsable SQL fails closed', async () => {
    const c = await connect(alice);
    await expect(c.query('DELETE FROM orders')).rejects.toMatchObject({ errno: 1142, sqlState: '42000', message: expect.stringContaining('destructive statements need a DBA') });
    await expect(c.query('SELECT 1 /*! ; DROP TABLE orders */')).rejects.toMatchObject({ errno: 1142, message: expect.stringContaining('no-multi-statements') });
    // Unparsable for both: the server's own error (nothing ran); unparsable for Sluice only: Sluice's refusal.
    await expect(c.query('SELEC 1')).rejects.toMatchObject({ errno: 1064, sqlState: '42000', message: expect.stringContaining('You have an error in your SQL syntax') });
    await expect(c.query('SELECT id FROM orders WHERE id = 1 LOCK IN SHARE MODE')).rejects.toMatchObject({ errno: 1064, sqlState: '42000', message: expect.stringContaining('Sluice could not parse') });
    await expect(c.query("SELECT id FROM customers WHERE ssn LIKE '1%'")).rejects.toMatchObject({ errno: 1142, message: expect.stringContaining('inference guard') });
    await expect(c.execute('DELETE FROM orders', [])).rejects.toMatchObject({ errno: 1142 });
    const [ok] = await c.query('SELECT count(*) AS n FROM orders');
    expect(ok).toEqual([{ n: 3 }]);
    await c.end();
    const r = await root();
    const [[n]] = (await r.query(`SELECT count(*) AS n FROM ${db}.orders`)) as any;
    expect(n.n).toBe(3);
    await r.end();
  });

  it('a database the gateway does not serve is refused at login and audited, as on the PostgreSQL engine', async () => {
    const g = await startTestGateway({ config: mysqlEngine().replace('sslmode: disable }', 'sslmode: disable, databases: [only_this_one] }') });
    try {
      const key = await g.key('human', ['analysts'], { name: 'unserved' });
      const e = await mysql.createConnection({ host: '127.0.0.1', port: g.gw.mysqlPort!, user: 'x', password: key, database: db, enableCleartextPlugin: true } as mysql.ConnectionOptions).catch((x) => x);
      expect(e).toMatchObject({ errno: 1044 });
      const ev = await auditEvents(g, { type: 'auth_failure' });
      expect(ev.find((x) => x.database === db)).toMatchObject({ reason: 'database not served', subject: 'human:unserved' });
    } finally {
      await g.stop();
    }
  });

  it('refuses bad tokens with the reason (1045) and audits the failure', async () => {
    await expect(connect('not-a-token')).rejects.toMatchObject({ errno: 1045, message: expect.stringContaining('neither a JWT nor a Sluice key') });
    const ev = await auditEvents(t, { type: 'auth_failure' });
    expect(ev.some((e) => e.details?.engine === 'mysql')).toBe(true);
  });

  it('held writes wait for approval and run in place (prepared statement, parameters bound to the approval)', async () => {
    const c = await connect(alice);
    const running = c.execute('UPDATE orders SET status = ? WHERE customer_id = ?', ['shipped', 1]);
    const base = `http://127.0.0.1:${t.gw.apiPort}`;
    let a: any;
    for (let i = 0; i < 100 && !a; i++) {
      const r = await (await fetch(`${base}/api/approvals?status=pending`, { headers: { authorization: `Bearer ${dana}` } })).json();
      a = r.approvals[0];
      if (!a) await new Promise((res) => setTimeout(res, 100));
    }
    expect(a).toMatchObject({ engine: 'mysql', sql: 'UPDATE orders SET status = ? WHERE customer_id = ?', params: ['shipped', '1'] });
    const res = await fetch(`${base}/api/approvals/${a.id}/approve`, { method: 'POST', headers: { authorization: `Bearer ${dana}`, 'content-type': 'application/json' }, body: '{}' });
    expect(res.status).toBe(200);
    const [r] = (await running) as any;
    expect(r.affectedRows).toBe(2);
    // A text-protocol write: the preview ran it in a rolled-back transaction on InnoDB.
    const held = c.query("UPDATE orders SET status = 'lost' WHERE id = 3").then(() => undefined, (e: Error) => e);
    let b: any;
    for (let i = 0; i < 100 && !b?.preview; i++) {
      const r2 = await (await fetch(`${base}/api/approvals?status=pending`, { headers: { authorization: `Bearer ${dana}` } })).json();
      b = r2.approvals[0];
      if (!b?.preview) await new Promise((res) => setTimeout(res, 100));
    }
    expect(b.preview).toMatchObject({ kind: 'rows', rows_affected: 1 });
    await fetch(`${base}/api/approvals/${b.id}/deny`, { method: 'POST', headers: { authorization: `Bearer ${dana}`, 'content-type': 'application/json' }, body: JSON.stringify({ reason: 'no' }) });
    expect(await held).toMatchObject({ errno: 1142, message: expect.stringMatching(/denied by .*: no/) });
    const [[s]] = (await c.query('SELECT status FROM orders WHERE id = 3')) as any;
    expect(s.status).toBe('new');
    await c.end();
  });
});

describe('MySQL engine: MCP', () => {
  it('agents query MariaDB through MCP with the same policy and masking', async () => {
    const { Client } = await import('@modelcontextprotocol/sdk/client/index.js');
    const { StreamableHTTPClientTransport } = await import('@modelcontextprotocol/sdk/client/streamableHttp.js');
    const client = new Client({ name: 'agent', version: '1' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${t.gw.apiPort}/mcp`), { requestInit: { headers: { authorization: `Bearer ${alice}` } } }));
    const call = async (name: string, args: Record<string, unknown>) => (await client.callTool({ name, arguments: args })) as { isError?: boolean; content: { text: string }[]; structuredContent?: any };
    expect((await call('list_databases', {})).structuredContent.engines.mysql).toContain(db);
    const schema = await call('describe_schema', { engine: 'mysql', database: db });
    expect(schema.structuredContent.tables.find((x: { name: string }) => x.name === 'customers').columns.find((c: { name: string }) => c.name === 'ssn').sensitive).toMatch(/masked for you/);
    const r = await call('query', { engine: 'mysql', database: db, sql: 'SELECT id, email, ssn FROM customers WHERE id = 1', intent: 'check a customer' });
    expect(r.structuredContent.rows).toEqual([['1', 'a***@***.com', '***-**-6789']]);
    const denied = await call('query', { engine: 'mysql', database: db, sql: 'DELETE FROM orders' });
    expect(denied.isError).toBe(true);
    expect(denied.content[0]!.text).toContain('destructive statements need a DBA');
    const held = await call('query', { engine: 'mysql', database: db, sql: "UPDATE orders SET status = 'mcp' WHERE id = 1" });
    expect(held.structuredContent.status).toBe('pending_approval');
    expect((await fetch(`http://127.0.0.1:${t.gw.apiPort}/api/approvals/${held.structuredContent.approval_id}`, { headers: { authorization: `Bearer ${dana}` } }).then((x) => x.json())).approval).toMatchObject({ engine: 'mysql', requester: 'human:alice' });
    // Withdrawn by the requester (so no other test finds it pending).
    await fetch(`http://127.0.0.1:${t.gw.apiPort}/api/approvals/${held.structuredContent.approval_id}/deny`, { method: 'POST', headers: { authorization: `Bearer ${alice}`, 'content-type': 'application/json' }, body: '{}' });
    const plan = await call('explain', { engine: 'mysql', database: db, sql: 'SELECT * FROM orders WHERE id = 1' });
    expect(JSON.stringify(plan.structuredContent.plan)).toContain('orders');
    await client.close();
  });
});

describe('MySQL engine: databases', () => {
  it('a rule limited to databases does not cover tables qualified with another database; USE is judged and tracked', async () => {
    const other = `${db}_other`;
    const r = await root();
    await r.query(`CREATE DATABASE ${other}; CREATE TABLE ${other}.secrets (v varchar(10)); INSERT INTO ${other}.secrets VALUES ('s3cret');`);
    await r.end();
    try {
      // analysts-read has no databases limit in this policy; a scoped policy is loaded for this test.
      const scoped = await startTestGateway({
        policy: `version: 1
default: deny
rules:
  - { name: use-vault-reviewed, match: { commands: [USE], databases: ['*_vault'] }, action: require_approval }
  - { name: session, match: { statements: [session, transaction] }, action: allow }
  - { name: shop-readers, match: { databases: [${db}], statements: [read] }, action: allow }
`,
        config: mysqlEngine(),
      });
      try {
        const key = await scoped.key('human', ['analysts']);
        const c = await mysql.createConnection({ host: '127.0.0.1', port: scoped.gw.mysqlPort!, user: 'x', password: key, database: db, enableCleartextPlugin: true } as mysql.ConnectionOptions);
        const [ok] = await c.query('SELECT count(*) AS n FROM orders');
        expect(ok).toEqual([{ n: 3 }]);
        await expect(c.query(`SELECT * FROM ${other}.secrets`)).rejects.toMatchObject({ errno: 1142, message: expect.stringContaining('"default"') });
        // USE switches the session's database (and the policy follows it): nothing is allowed in the other one.
        await c.query(`USE ${other}`);
        await expect(c.query('SELECT * FROM secrets')).rejects.toMatchObject({ errno: 1142 });
        // Switching databases is held like any statement when a rule says so, as SQL and as the client's command.
        const vault = `${db}_vault`;
        const r3 = await root();
        await r3.query(`CREATE DATABASE ${vault}`);
        await r3.end();
        const denyPending = async () => {
          let a: { id: string } | undefined;
          for (let i = 0; i < 100 && !a; i++) {
            a = (await scoped.gw.approvals.list({ status: ['pending'] }))[0];
            if (!a) await new Promise((res) => setTimeout(res, 50));
          }
          await scoped.gw.approvals.decide(a!.id, { subject: 'reviewer', kind: 'human', groups: [], method: 'key' }, 'deny', 'no vault today');
        };
        const heldSql = c.query(`USE ${vault}`).then(() => 'ran', (e: Error) => e.message);
        await denyPending();
        expect(await heldSql).toContain('no vault today');
        // The mariadb client's `use` sends COM_INIT_DB: the same rule holds it.
        const heldCommand = run('mariadb', ['-h', '127.0.0.1', '-P', String(scoped.gw.mysqlPort), '-u', 'x', `-p${key}`, '--skip-ssl', db, '-e', `use ${vault}`]);
        await denyPending();
        expect((await heldCommand).stderr).toContain('no vault today');
        // The denied switch left the session where it was.
        await expect(c.query('SELECT 2 AS after_denied_use FROM secrets')).rejects.toMatchObject({ errno: 1142 });
        await c.end();
        const events = await auditEvents(scoped, { type: 'statement' });
        expect(events.find((e) => e.sql === 'SELECT * FROM secrets')).toMatchObject({ database: other, decision: 'deny' });
        expect(events.find((e) => e.sql === 'SELECT 2 AS after_denied_use FROM secrets')).toMatchObject({ database: other, decision: 'deny' });
        expect(events.filter((e) => e.rule === 'use-vault-reviewed' && e.decision === 'deny' && e.approval_id)).toHaveLength(2);
      } finally {
        await scoped.stop();
      }
    } finally {
      const r2 = await root();
      await r2.query(`DROP DATABASE IF EXISTS ${db}_vault`);
      await r2.query(`DROP DATABASE IF EXISTS ${other}`);
      await r2.end();
    }
  });
});

describe('MySQL engine: the mariadb command-line client', () => {
  it('runs queries, shows masked values and policy errors, over TLS too', async () => {
    const r = await cli(alice, '--skip-ssl', '-e', 'SELECT name, ssn FROM customers ORDER BY id');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('name\tssn\nAda\t***-**-6789\nBob\t***-**-4321\n');
    const denied = await cli(alice, '--skip-ssl', '-e', 'DROP TABLE orders');
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/ERROR 1142 \(42000\).*destructive statements need a DBA/);
    // The client's `use` command (COM_INIT_DB) is judged and audited like USE.
    const use = await cli(dana, '--skip-ssl', '-e', `use ${db}; SELECT DATABASE() AS db`);
    expect(use.stdout).toBe(`db\n${db}\n`);
    expect((await auditEvents(t, { type: 'statement', subject: 'human:dana' })).some((e) => e.sql === `USE \`${db}\`` && e.decision === 'allow')).toBe(true);
    const tls = await cli(dana, '--ssl', '--ssl-verify-server-cert=0', '-e', "SHOW STATUS LIKE 'Ssl_cipher'");
    expect(tls.code).toBe(0);
    const sessions = await auditEvents(t, { type: 'session_start', subject: 'human:dana' });
    expect(sessions.some((e) => e.tls === true && e.details?.engine === 'mysql')).toBe(true);
  });

  it('an interactive mariadb session shows the approval link while the statement waits (progress report)', async () => {
    // `script` gives the client a terminal, so it runs interactively and displays progress reports.
    const child = spawn('script', ['-q', '-c', `mariadb -h 127.0.0.1 -P ${port} -u someone -p${alice} --skip-ssl ${db}`, '/dev/null'], { env: { ...process.env, TERM: 'dumb' } });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const until = async (what: RegExp, ms = 15_000) => {
      for (let waited = 0; !what.test(out); waited += 50) {
        if (waited > ms) throw new Error(`timed out waiting for ${what} in: ${JSON.stringify(out)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    try {
      await until(/MariaDB \[.*\]> /);
      child.stdin.write("UPDATE orders SET status = 'packed' WHERE id = 2;\n");
      await until(/awaiting approval apr_[0-9a-f]+: http:\/\/127\.0\.0\.1:\d+\/approvals\/apr_/);
      const id = /awaiting approval (apr_[0-9a-f]+)/.exec(out)![1];
      const base = `http://127.0.0.1:${t.gw.apiPort}`;
      expect((await fetch(`${base}/api/approvals/${id}/approve`, { method: 'POST', headers: { authorization: `Bearer ${dana}`, 'content-type': 'application/json' }, body: '{}' })).status).toBe(200);
      await until(/Query OK, 1 row affected/);
      child.stdin.write('quit\n');
    } finally {
      child.kill();
    }
  });

  it('KILL QUERY of one of your own connections (what Ctrl-C sends) interrupts it', async () => {
    const c = await connect(dana);
    const threadId = c.threadId!;
    const slow = c.query('SELECT SLEEP(20) AS s').then((x) => x, (e) => e);
    await new Promise((res) => setTimeout(res, 300));
    const k = await connect(dana);
    await k.query(`KILL QUERY ${threadId}`);
    const out = (await slow) as any;
    // SLEEP returns 1 when interrupted.
    expect(Array.isArray(out) ? out[0][0].s : out.errno).toBeOneOf([1, 1317]);
    // The server connection of a client that is not this identity's own Sluice session (here: one not through Sluice).
    const direct = await root();
    await expect(k.query(`KILL QUERY ${direct.threadId}`)).rejects.toMatchObject({ errno: 1094 });
    await expect(k.query(`KILL ${direct.threadId}`)).rejects.toMatchObject({ errno: 1094 });
    expect((await direct.query('SELECT 1 AS one'))[0]).toEqual([{ one: 1 }]);
    await direct.end();
    const other = await connect(alice);
    await expect(other.query(`KILL ${threadId}`)).rejects.toMatchObject({ errno: 1094 });
    await other.end();
    await k.end();
    await c.end();
  });
});

describe('MySQL engine: thread ids and KILL', () => {
  it("the thread id a client is told is its server connection's CONNECTION_ID()", async () => {
    const cs = await Promise.all([connect(dana), connect(alice), connect(dana)]);
    for (const c of cs) {
      const [[row]] = (await c.query('SELECT CONNECTION_ID() AS id')) as any;
      expect(Number(row.id)).toBe(c.threadId);
    }
    expect(new Set(cs.map((c) => c.threadId)).size).toBe(3);
    await Promise.all(cs.map((c) => c.end()));
  });

  it('KILL inside a multi-statement text is judged per statement and answered as directly; never sent to the server', async () => {
    /** [first result, KILL's OK, last result] of `SELECT 1 AS a; KILL QUERY <a sleeping connection>; SELECT 2 AS b`. */
    const killWhileSleeping = async (killer: mysql.Connection, sleeper: mysql.Connection) => {
      const slow = sleeper.query('SELECT SLEEP(20) AS s').then((x) => x, (e) => e);
      await new Promise((res) => setTimeout(res, 300));
      const [results] = (await killer.query(`SELECT 1 AS a; KILL QUERY ${sleeper.threadId}; SELECT 2 AS b`)) as any;
      const out = (await slow) as any;
      return { results: results.map((x: any) => (Array.isArray(x) ? x : { affectedRows: x.affectedRows, insertId: x.insertId, warningStatus: x.warningStatus })), interrupted: Array.isArray(out) ? out[0][0].s : out.errno };
    };
    const r = await root();
    const r2 = await root();
    const direct = await killWhileSleeping(r, r2);
    const c = await connect(dana, { multipleStatements: true });
    const victim = await connect(dana);
    const through = await killWhileSleeping(c, victim);
    expect(direct.results).toEqual([[{ a: 1 }], { affectedRows: 0, insertId: 0, warningStatus: 0 }, [{ b: 2 }]]);
    expect(through).toEqual(direct);
    expect(through.interrupted).toBeOneOf([1, 1317]);
    // A server connection not through Sluice: refused at that statement (what came before ran, nothing after).
    await expect(c.query(`SELECT 3 AS c; KILL ${r2.threadId}; SELECT 4 AS d`)).rejects.toMatchObject({ errno: 1094 });
    expect((await r2.query('SELECT 1 AS one'))[0]).toEqual([{ one: 1 }]);
    // Not as a prepared statement, not through EXECUTE IMMEDIATE; the statements beside a KILL are judged by policy.
    await expect(c.execute(`KILL QUERY ${victim.threadId}`)).rejects.toThrow(/KILL here/);
    await expect(c.query(`EXECUTE IMMEDIATE 'KILL ${r2.threadId}'`)).rejects.toThrow(/KILL here/);
    const other = await connect(alice, { multipleStatements: true });
    await expect(other.query(`KILL QUERY ${victim.threadId}; DELETE FROM orders`)).rejects.toThrow(/destructive statements need a DBA/);
    expect((await r.query(`SELECT count(*) AS n FROM ${db}.orders`))[0]).toEqual([{ n: 3 }]);
    expect((await r2.query('SELECT 1 AS one'))[0]).toEqual([{ one: 1 }]);
    const ev = await auditEvents(t, { subject: 'human:dana', type: 'statement', limit: 1000 });
    expect(ev.some((x) => x.rule === 'own-connection-kill' && x.decision === 'allow' && x.sql === `KILL QUERY ${victim.threadId}`)).toBe(true);
    expect(ev.some((x) => x.rule === 'own-connection-kill' && x.decision === 'deny' && x.sql === `KILL ${r2.threadId}`)).toBe(true);
    await Promise.all([c.end(), victim.end(), other.end(), r.end(), r2.end()]);
  });
});

describe('MySQL engine: answers whose session state is read again', () => {
  it('a function that leaves a safe character set: the state is read before the answer ends, and a text with KILL goes on after it', async () => {
    const r = await root();
    await r.query(`CREATE FUNCTION ${db}.names_latin1() RETURNS int BEGIN SET NAMES latin1; RETURN 1; END`);
    const c = await connect(dana, { multipleStatements: true });
    try {
      const [[row]] = (await c.query('SELECT names_latin1() AS x')) as any;
      expect(row).toEqual({ x: 1 });
      const [results] = (await c.query(`SELECT names_latin1() AS x; KILL QUERY ${r.threadId! + 1000000}; SELECT 2 AS b`).catch((e) => [e])) as any;
      expect(results).toMatchObject({ errno: 1094 });
      const [ok] = (await c.query(`SELECT names_latin1() AS x; KILL QUERY ${c.threadId}; SELECT 2 AS b`)) as any;
      expect(ok.map((x: any) => (Array.isArray(x) ? x : 'ok'))).toEqual([[{ x: 1 }], 'ok', [{ b: 2 }]]);
      const [[cs]] = (await c.query('SELECT @@character_set_results AS r')) as any;
      expect(cs.r).toBe('latin1');
    } finally {
      await c.end();
      await r.end();
    }
  });
});

describe('MySQL engine: bad input', () => {
  it('garbage and truncated packets get a protocol error and never take the gateway down', async () => {
    const raw = (bytes: Buffer) =>
      new Promise<Buffer>((resolve) => {
        const s = net.connect(port, '127.0.0.1');
        let got = Buffer.alloc(0);
        s.on('data', (d) => {
          got = Buffer.concat([got, d]);
          if (got.length > 4) s.write(bytes);
        });
        s.on('close', () => resolve(got));
        s.on('error', () => resolve(got));
        setTimeout(() => s.destroy(), 2000);
      });
    const out = await raw(Buffer.from([0x05, 0x00, 0x00, 0x01, 0x01, 0x02, 0x03, 0x04, 0x05]));
    expect(out.toString('latin1')).toMatch(/protocol error|protocol 4\.1|too short/);
    await raw(Buffer.from([0xff, 0xff, 0xff, 0x01, 0x00]));
    // After a real login: a COM_STMT_EXECUTE with no statement id is a protocol error for that client only.
    const c2 = await connect(dana);
    const stream = (c2.connection as unknown as { stream: net.Socket }).stream;
    const closed = new Promise((r) => stream.once('close', r));
    stream.write(Buffer.from([0x01, 0x00, 0x00, 0x00, 0x17]));
    await closed;
    await c2.end().catch(() => {});
    const ev = await auditEvents(t, { type: 'protocol_error' });
    // The same fields as the PostgreSQL engine's protocol errors: error and error_code.
    expect(ev.find((e) => e.error === 'prepared-statement command without a statement id')).toMatchObject({ error_code: '08S01' });
    const c = await connect(dana);
    const [rows] = await c.query('SELECT 1 AS one');
    expect(rows).toEqual([{ one: 1 }]);
    await c.end();
  });
});
