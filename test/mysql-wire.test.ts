import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import net from 'node:net';
import crypto from 'node:crypto';
import tls from 'node:tls';
import { Duplex } from 'node:stream';
import mysql from 'mysql2/promise';
import { startTestGateway, MY, mysqlEngine, auditEvents, type TestGateway } from './support/env.js';
import { withOwnMariadb } from './support/mariadb.js';
import { policyYaml, rules } from './support/policies.js';
import { CAP, MyFramer, frame, int4 } from '../src/protocol/mysql/packets.js';

/** MySQL wire details that clients depend on: TLS started in the same segment as the request, MariaDB metadata. */

let t: TestGateway;
let key: string;

beforeAll(async () => {
  t = await startTestGateway({ policy: policyYaml({ default: 'deny', rules: [rules.dba()] }), config: mysqlEngine() });
  key = await t.key('human', ['dba'], { name: 'dana' });
});
afterAll(() => t?.stop());

/** Read MySQL packets from a stream until `n` have arrived. */
function packets(s: Duplex, n: number): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const framer = new MyFramer(1 << 24);
    const got: Buffer[] = [];
    const timer = setTimeout(() => reject(new Error(`only ${got.length} of ${n} packets arrived`)), 5000);
    const onData = (d: Buffer) =>
      framer.push(d, (_seq, p) => {
        got.push(p);
        if (got.length < n) return;
        clearTimeout(timer);
        s.off('data', onData);
        resolve(got);
        return 'stop';
      });
    s.on('data', onData);
  });
}

describe('MySQL wire', () => {
  it('starts TLS when the SSL request and the ClientHello arrive in one segment', async () => {
    const raw = net.connect(t.gw.mysqlPort!, '127.0.0.1');
    const [hello] = await packets(raw, 1);
    expect(hello![0]).toBe(10);
    const caps = CAP.PROTOCOL_41 | CAP.SECURE_CONNECTION | CAP.PLUGIN_AUTH | CAP.SSL | CAP.PLUGIN_AUTH_LENENC_CLIENT_DATA | CAP.DEPRECATE_EOF;
    const sslRequest = frame(1, Buffer.concat([int4(caps), int4(1 << 24), Buffer.from([45]), Buffer.alloc(23)])).bytes;
    // A transport that sends the TLS client's first flight glued to the SSL request, in one write.
    let first = true;
    const glue = new Duplex({
      read: () => void raw.resume(),
      write: (chunk: Buffer, _e, cb) => {
        raw.write(first ? Buffer.concat([sslRequest, chunk]) : chunk, cb);
        first = false;
      },
    });
    raw.on('data', (d: Buffer) => glue.push(d));
    const secure = tls.connect({ socket: glue as unknown as net.Socket, rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
      setTimeout(() => reject(new Error('the TLS handshake never completed (the ClientHello was lost)')), 5000);
    });
    const password = Buffer.from(`${key}\0`, 'utf8');
    const response = Buffer.concat([int4(caps), int4(1 << 24), Buffer.from([45]), Buffer.alloc(23), Buffer.from('x\0'), Buffer.from([password.length]), password, Buffer.from('mysql_clear_password\0')]);
    secure.write(frame(2, response).bytes);
    const [ok] = await packets(secure, 1);
    expect(ok![0]).toBe(0x00);
    secure.destroy();
  });

  it('asks clients that did not opt into mysql_clear_password for the password by caching_sha2_password full authentication: RSA-encrypted without TLS, in clear inside TLS', async () => {
    const { authPlugins } = (await import('mysql2')) as any;
    for (const ssl of [undefined, { rejectUnauthorized: false }]) {
      let publicKey: Buffer | undefined;
      const c = await mysql.createConnection({
        host: '127.0.0.1', port: t.gw.mysqlPort!, user: 'x', password: key, database: 'mysql', ...(ssl ? { ssl } : {}),
        authPlugins: { caching_sha2_password: authPlugins.caching_sha2_password({ onServerPublicKey: (k: Buffer) => (publicKey = k) }) },
      } as mysql.ConnectionOptions);
      const [rows] = await c.query('SELECT 1 AS one');
      await c.end();
      expect(rows).toEqual([{ one: 1 }]);
      // Without TLS the client asked for the gateway's key and encrypted the password with it; inside TLS it did not need one.
      if (ssl) expect(publicKey).toBeUndefined();
      else expect(String(publicKey)).toMatch(/^-----BEGIN PUBLIC KEY-----/);
    }
    // The plain default of mysql2 (no authPlugins option): the same.
    const plain = await mysql.createConnection({ host: '127.0.0.1', port: t.gw.mysqlPort!, user: 'x', password: key, database: 'mysql' });
    expect((await plain.query('SELECT 2 AS two'))[0]).toEqual([{ two: 2 }]);
    await plain.end();
    const wrong = await mysql.createConnection({ host: '127.0.0.1', port: t.gw.mysqlPort!, user: 'x', password: `${key}x`, database: 'mysql' }).catch((e) => e);
    expect(wrong).toMatchObject({ errno: 1045 });
    const ev = await auditEvents(t, { type: 'session_start', limit: 1000 });
    expect(ev.filter((e) => e.subject === 'human:dana' && e.details?.engine === 'mysql').map((e) => e.tls)).toEqual(expect.arrayContaining([true, false]));
  });

  it('caching_sha2_password without TLS: a password sent unencrypted, or encrypted for another connection (replayed), is refused', async () => {
    /** A raw login up to the full-authentication request: the socket, the connection's scramble, and the packet reader. */
    const begin = async () => {
      const raw = net.connect(t.gw.mysqlPort!, '127.0.0.1');
      const [hello] = await packets(raw, 1);
      const v = hello!.indexOf(0, 1);
      const scramble = Buffer.concat([hello!.subarray(v + 5, v + 13), hello!.subarray(v + 32, v + 44)]);
      const caps = CAP.PROTOCOL_41 | CAP.SECURE_CONNECTION | CAP.PLUGIN_AUTH | CAP.PLUGIN_AUTH_LENENC_CLIENT_DATA;
      const response = Buffer.concat([int4(caps), int4(1 << 24), Buffer.from([45]), Buffer.alloc(23), Buffer.from('x\0'), Buffer.from([20]), crypto.randomBytes(20), Buffer.from('mysql_native_password\0')]);
      raw.write(frame(1, response).bytes);
      const [sw] = await packets(raw, 1);
      expect(sw![0]).toBe(0xfe);
      expect(sw!.subarray(1, sw!.indexOf(0, 1)).toString()).toBe('caching_sha2_password');
      expect(sw!.subarray(sw!.indexOf(0, 1) + 1, sw!.indexOf(0, 1) + 21)).toEqual(scramble);
      raw.write(frame(3, crypto.randomBytes(32)).bytes);
      const [more] = await packets(raw, 1);
      expect([...more!]).toEqual([0x01, 0x04]);
      return { raw, scramble };
    };
    const encrypt = (pem: string, scramble: Buffer) => {
      const plain = Buffer.from(`${key}\0`, 'utf8');
      for (let i = 0; i < plain.length; i++) plain[i]! ^= scramble[i % scramble.length]!;
      return crypto.publicEncrypt({ key: pem, oaepHash: 'sha1', padding: crypto.constants.RSA_PKCS1_OAEP_PADDING }, plain);
    };
    const askKey = async (raw: net.Socket) => {
      raw.write(frame(5, Buffer.from([0x02])).bytes);
      const [k] = await packets(raw, 1);
      expect(k![0]).toBe(0x01);
      return k!.subarray(1).toString();
    };
    // The exchange works: key asked for, password encrypted with it and this connection's scramble.
    const a = await begin();
    const pem = await askKey(a.raw);
    const blob = encrypt(pem, a.scramble);
    a.raw.write(frame(7, blob).bytes);
    expect((await packets(a.raw, 1))[0]![0]).toBe(0x00);
    a.raw.destroy();
    // The same bytes on another connection (another scramble) do not log in.
    const b = await begin();
    await askKey(b.raw);
    b.raw.write(frame(7, blob).bytes);
    const [replayed] = await packets(b.raw, 1);
    expect(replayed![0]).toBe(0xff);
    expect(replayed!.readUInt16LE(1)).toBe(1045);
    b.raw.destroy();
    // The key in clear without TLS is not taken as the password.
    const c = await begin();
    c.raw.write(frame(5, Buffer.from(`${key}\0`)).bytes);
    const [clear] = await packets(c.raw, 1);
    expect(clear![0]).toBe(0xff);
    expect(clear!.subarray(9).toString()).toMatch(/could not be decrypted/);
    c.raw.destroy();
    await new Promise((r) => setTimeout(r, 300));
    const failures = await auditEvents(t, { type: 'auth_failure', limit: 1000 });
    expect(failures.filter((e) => /could not be decrypted/.test(String(e.reason))).length).toBeGreaterThanOrEqual(1);
  });

  it('a session the server ends between commands (wait_timeout) is closed for the client as the server closes it, without an error packet; audited', async () => {
    const c = await mysql.createConnection({ host: '127.0.0.1', port: t.gw.mysqlPort!, user: 'x', password: key, database: 'mysql', enableCleartextPlugin: true } as mysql.ConnectionOptions);
    const lost = new Promise<{ code?: string; message: string }>((resolve) => c.on('error', resolve));
    await c.query('SET SESSION wait_timeout = 1');
    const e = await lost;
    // mysql2's own wording for a connection closed by the server (an error packet from the gateway would be another).
    expect(e).toMatchObject({ code: 'PROTOCOL_CONNECTION_LOST', message: 'Connection lost: The server closed the connection.' });
    await new Promise((r) => setTimeout(r, 300));
    const ends = await auditEvents(t, { type: 'session_end', limit: 1000 });
    expect(ends.some((x) => x.details?.engine === 'mysql' && /^(lost connection to the upstream database|the upstream database closed the connection)$/.test(String(x.reason)))).toBe(true);
  });

  it('offers MariaDB extended metadata, so JSON values arrive typed as they do directly', async () => {
    const sql = "SELECT JSON_OBJECT('a', 1, 'b', JSON_ARRAY(1, 2)) AS j, 'plain' AS s";
    const direct = await mysql.createConnection({ ...MY, database: 'mysql' });
    const [want] = await direct.query(sql);
    await direct.end();
    const c = await mysql.createConnection({ host: '127.0.0.1', port: t.gw.mysqlPort!, user: 'x', password: key, database: 'mysql', enableCleartextPlugin: true } as mysql.ConnectionOptions);
    const [got] = await c.query(sql);
    const [prepared] = await c.execute(sql);
    await c.end();
    expect(want).toEqual([{ j: { a: 1, b: [1, 2] }, s: 'plain' }]);
    expect(got).toEqual(want);
    expect(prepared).toEqual(want);
  });

  it('MCP on the MySQL engine refuses tables of databases the engine does not serve, as the wire does', async () => {
    const served = `sluice_myw_${Date.now().toString(36)}`;
    const other = `${served}_other`;
    const r = await mysql.createConnection({ ...MY, multipleStatements: true });
    await r.query(`CREATE DATABASE ${served}; CREATE TABLE ${served}.t (v varchar(10)); CREATE DATABASE ${other}; CREATE TABLE ${other}.secrets (v varchar(10)); INSERT INTO ${other}.secrets VALUES ('s3cret');`);
    const g = await startTestGateway({
      policy: policyYaml({ default: 'deny', rules: [rules.dba()] }),
      config: `${mysqlEngine().replace('sslmode: disable }', `sslmode: disable, databases: [${served}] }`)}
api: { listen: { host: 127.0.0.1, port: 0 } }`,
    });
    try {
      const agentKey = await g.key('agent', ['dba'], { name: 'scoped-agent' });
      const { Client } = await import('@modelcontextprotocol/sdk/client/index.js');
      const { StreamableHTTPClientTransport } = await import('@modelcontextprotocol/sdk/client/streamableHttp.js');
      const client = new Client({ name: 'agent', version: '1' });
      await client.connect(new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${g.gw.apiPort}/mcp`), { requestInit: { headers: { authorization: `Bearer ${agentKey}` } } }));
      const call = async (args: Record<string, unknown>) => (await client.callTool({ name: 'query', arguments: { engine: 'mysql', ...args } })) as { isError?: boolean; content: { text: string }[]; structuredContent?: any };
      expect((await call({ database: served, sql: 'SELECT count(*) AS n FROM t' })).isError).toBeFalsy();
      const cross = await call({ database: served, sql: `SELECT v FROM ${other}.secrets` });
      expect(cross.isError).toBe(true);
      expect(cross.content[0]!.text).toMatch(new RegExp(`database "${other}" is not served`));
      const use = await call({ database: served, sql: `EXECUTE IMMEDIATE 'USE ${other}'` });
      expect(use.isError).toBe(true);
      // Database names are case-sensitive on MariaDB: another case is another database, not served.
      expect((await call({ database: served.toUpperCase(), sql: 'SELECT 1' })).isError).toBe(true);
      await client.close();
    } finally {
      await g.stop();
      await r.query(`DROP DATABASE ${served}; DROP DATABASE ${other};`);
      await r.end();
    }
  });

  it('relays session-state changes to clients that ask for them (mysql2 then writes in the character set the server reports), and OK packets without them to clients that do not', async () => {
    /** SET NAMES latin1, a non-ASCII literal, and the OK packets of an INSERT and an UPDATE (their info text). */
    const session = async (c: mysql.Connection) => {
      await c.query('CREATE TEMPORARY TABLE tt (a int)');
      const [names] = (await c.query('SET NAMES latin1')) as any;
      const [rows] = await c.query("SELECT 'héllo ✓' AS s, CHARSET('é') AS cs, HEX('é') AS h");
      const [ins] = (await c.query('INSERT INTO tt VALUES (1), (2)')) as any;
      const [upd] = (await c.query('UPDATE tt SET a = a + 1')) as any;
      await c.end();
      const ok = (r: any) => ({ affectedRows: r.affectedRows, info: r.info, changedRows: r.changedRows, serverStatus: r.serverStatus, warningStatus: r.warningStatus });
      return { client: names.stateChanges?.systemVariables?.character_set_client, rows, ins: ok(ins), upd: ok(upd) };
    };
    for (const flags of [[], ['-SESSION_TRACK']]) {
      const direct = await session(await mysql.createConnection({ ...MY, database: 'mysql', flags }));
      const through = await session(await mysql.createConnection({ host: '127.0.0.1', port: t.gw.mysqlPort!, user: 'x', password: key, database: 'mysql', enableCleartextPlugin: true, flags } as mysql.ConnectionOptions));
      expect(through, flags.join()).toEqual(direct);
      expect(direct.client).toBe(flags.length ? undefined : 'latin1');
      expect(direct.upd.info).toMatch(/^Rows matched: 2/);
    }
  });

  it('ends a login when the server would read statements differently (its sql_mode has ANSI_QUOTES), and audits why', async () => {
    // A MariaDB of the test's own, started with a global sql_mode Sluice cannot parse under (the shared server's
    // global settings stay untouched).
    await withOwnMariadb('mariadb-ansi', ['--sql-mode=ANSI_QUOTES'], async (port) => {
      const g = await startTestGateway({
        policy: policyYaml({ default: 'deny', rules: [rules.dba()] }),
        config: `mysql: { listen: { port: 0 }, upstream: { host: 127.0.0.1, port: ${port}, user: root, sslmode: disable } }`,
      });
      try {
        const k = await g.key('human', ['dba'], { name: 'ansi' });
        const e = await mysql.createConnection({ host: '127.0.0.1', port: g.gw.mysqlPort!, user: 'x', password: k, database: 'mysql', enableCleartextPlugin: true } as mysql.ConnectionOptions).catch((x) => x);
        expect(e).toBeInstanceOf(Error);
        expect(e.message).toMatch(/Sluice ended the login: the server reports sql_mode = 'ANSI_QUOTES'/);
        const ev = await auditEvents(g, { type: 'protocol_error' });
        expect(ev.some((x) => /sql_mode = 'ANSI_QUOTES'/.test(String(x.error)))).toBe(true);
      } finally {
        await g.stop();
      }
    });
  }, 120_000);
});

