import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import net from 'node:net';
import pg from 'pg';
import { startTestGateway, freshDatabase, admin, auditEvents, type TestGateway } from './support/env.js';
import * as m from '../src/protocol/postgres/messages.js';

let t: TestGateway;
let db: { name: string; drop: () => Promise<void> };
let key: string;
let bystander: pg.Client;

beforeAll(async () => {
  db = await freshDatabase('sluice_bad', 'CREATE TABLE t (id int); INSERT INTO t VALUES (1);');
  t = await startTestGateway({ config: 'limits: { max_message_bytes: 1048576, auth_timeout_s: 2, max_prepared: 50 }' });
  key = await t.key('service', ['app'], { name: 'bad-input' });
  // A well-behaved session that must survive everything below.
  bystander = new pg.Client(t.conn(key, db.name));
  await bystander.connect();
});
afterAll(async () => {
  await bystander?.end();
  await t?.stop();
  await db?.drop();
});

/** Open a raw socket, send bytes, collect what comes back until the gateway closes it. */
function raw(bytes: Buffer[], opts: { waitMs?: number } = {}): Promise<{ data: Buffer; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(t.port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let closed = false;
    s.on('data', (d) => chunks.push(d));
    s.on('error', () => {});
    s.on('close', () => {
      closed = true;
      resolve({ data: Buffer.concat(chunks), closed });
    });
    s.on('connect', async () => {
      for (const b of bytes) {
        s.write(b);
        await new Promise((r) => setTimeout(r, 30));
      }
      setTimeout(() => {
        if (!closed) {
          s.destroy();
          resolve({ data: Buffer.concat(chunks), closed: false });
        }
      }, opts.waitMs ?? 3000);
    });
  });
}

/** Bytes of a session that logs in with `key`, ready for further messages. */
const login = () => [m.startupMessage({ user: 'x', database: db.name }), m.passwordMessage(key)];

const fatalMessage = (data: Buffer): string | undefined => {
  const i = data.lastIndexOf(Buffer.from('SFATAL\0'));
  if (i < 0) return undefined;
  const mi = data.indexOf(Buffer.from('\0M'), i);
  return data.toString('utf8', mi + 2, data.indexOf(0, mi + 2));
};

async function bystanderStillWorks() {
  expect((await bystander.query('SELECT count(*)::int AS n FROM t')).rows[0].n).toBe(1);
}

describe('malformed and hostile input', () => {
  it('garbage before startup closes the connection without an answer (as PostgreSQL does) and is audited', async () => {
    const r = await raw([Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')]);
    expect(r.closed).toBe(true);
    expect(r.data.length).toBe(0);
    const ev = await auditEvents(t, { type: 'protocol_error', limit: 100 });
    expect(ev.some((e) => e.error === 'invalid length of startup packet')).toBe(true);
    await bystanderStillWorks();
  });

  it('refuses an unsupported protocol version', async () => {
    const b = Buffer.alloc(8);
    b.writeInt32BE(8, 0);
    b.writeInt32BE(2 << 16, 4);
    const r = await raw([b]);
    expect(fatalMessage(r.data)).toMatch(/unsupported frontend protocol 2\.0/);
  });

  it('an invalid message length after login ends only that session', async () => {
    const bad = Buffer.from([0x51, 0, 0, 0, 2]); // Query with length 2 (< 4)
    const r = await raw([...login(), bad]);
    expect(r.closed).toBe(true);
    expect(fatalMessage(r.data)).toBe('invalid message length 2');
    await bystanderStillWorks();
  });

  it('an oversized message is refused before it is buffered', async () => {
    const header = Buffer.alloc(5);
    header[0] = 0x51;
    header.writeInt32BE(512 * 1024 * 1024, 1);
    const r = await raw([...login(), header]);
    expect(fatalMessage(r.data)).toMatch(/exceeds the limit of 1048576 bytes/);
    await bystanderStillWorks();
  });

  it('an unknown message type is a protocol violation', async () => {
    const r = await raw([...login(), Buffer.from([0x7a, 0, 0, 0, 4])]);
    expect(fatalMessage(r.data)).toMatch(/invalid frontend message type 122/);
    const events = await auditEvents(t, { type: 'protocol_error' });
    expect(events.some((e) => /invalid frontend message type/.test(e.error ?? ''))).toBe(true);
  });

  it('a truncated field inside a message is a protocol violation, not a crash', async () => {
    const q = Buffer.from([0x50, 0, 0, 0, 8, 0x61, 0x62, 0x63, 0x64]); // Parse with unterminated strings
    const r = await raw([...login(), q]);
    expect(fatalMessage(r.data)).toMatch(/unterminated string/);
    await bystanderStillWorks();
  });

  it('a client that never finishes logging in is timed out', async () => {
    const r = await raw([m.startupMessage({ user: 'x', database: db.name })], { waitMs: 5000 });
    expect(r.closed).toBe(true);
    expect(fatalMessage(r.data)).toMatch(/login timed out/);
  });

  it('startup parameters that would switch the upstream role are refused', async () => {
    const c = new pg.Client({ ...t.conn(key, db.name), options: '-c role=postgres' });
    const err = await c.connect().catch((e) => e);
    expect(err.message).toMatch(/startup parameter "role" is not allowed/);
    const r = await raw([m.startupMessage({ user: 'x', database: db.name, replication: 'database' })]);
    expect(fatalMessage(r.data)).toMatch(/startup parameter "replication" is not allowed/);
  });

  it('a client disconnecting mid-query has its upstream statement cancelled and its backend closed', async () => {
    const c = new pg.Client({ ...t.conn(key, db.name), application_name: 'sluice-vanishing-client' });
    c.on('error', () => {}); // we cut its socket on purpose
    await c.connect();
    void c.query('SELECT pg_sleep(30)').catch(() => {});
    await new Promise((r) => setTimeout(r, 300));
    (c as any).connection.stream.destroy();
    let remaining = 1;
    for (let i = 0; i < 50 && remaining > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      remaining = (await admin((a) => a.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'sluice-vanishing-client'"))).rows[0].n;
    }
    expect(remaining).toBe(0);
    const events = await auditEvents(t, { type: 'statement' });
    expect(events.find((e) => e.sql === 'SELECT pg_sleep(30)')?.error).toMatch(/not completed: client (disconnected|connection error)/);
    await bystanderStillWorks();
  });

  it('a fast-path call of a function OID Sluice cannot name is refused and the session continues', async () => {
    const fn = Buffer.from([0x46, 0, 0, 0, 14, 0, 0, 0x04, 0xd2, 0, 0, 0, 0, 0, 0]);
    const r = await raw([...login(), fn, m.query('SELECT 1')], { waitMs: 1500 });
    expect(r.data.includes(Buffer.from('function OID 1234 is not one Sluice knows'))).toBe(true);
    expect(r.data.includes(Buffer.from('SELECT 1\0'))).toBe(true); // CommandComplete of the query after it
  });

  it('a client may pipeline startup, password and its first query in one write', async () => {
    const data: Buffer = await new Promise((resolve) => {
      const s = net.connect(t.port, '127.0.0.1');
      const chunks: Buffer[] = [];
      s.on('data', (d) => {
        chunks.push(d);
        const all = Buffer.concat(chunks);
        if (all.includes(Buffer.from('SELECT 1\0'))) {
          s.destroy();
          resolve(all);
        }
      });
      s.on('error', () => resolve(Buffer.concat(chunks)));
      s.write(Buffer.concat([m.startupMessage({ user: 'x', database: db.name }), m.passwordMessage(key), m.query('SELECT 41 + 1 AS answer')]));
    });
    expect(data.includes(Buffer.from('42'))).toBe(true);
    expect(data.includes(Buffer.from('SELECT 1\0'))).toBe(true);
  });

  it('named portals end with their transaction: a long session may bind many more than the prepared limit', async () => {
    const { rawSession, bind, execute, messages } = await import('./support/raw.js');
    const parts = [m.parse('', 'SELECT 1 AS one')];
    for (let i = 0; i < 120; i++) parts.push(bind(`p${i}`), execute(`p${i}`), m.sync());
    const data = await rawSession(t.port, db.name, key, Buffer.concat(parts), 120);
    const types = messages(data).map((x) => x.type);
    expect(types.filter((x) => x === 'C')).toHaveLength(120);
    expect(types).not.toContain('E');
  });

  it('hundreds of abrupt connects and disconnects leave the gateway healthy', async () => {
    await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        new Promise<void>((resolve) => {
          const s = net.connect(t.port, '127.0.0.1');
          s.on('error', () => resolve());
          s.on('close', () => resolve());
          s.on('connect', () => {
            if (i % 2) s.write(m.startupMessage({ user: 'x', database: db.name }));
            s.destroy();
          });
        }),
      ),
    );
    await bystanderStillWorks();
    const c = new pg.Client(t.conn(key, db.name));
    await c.connect();
    expect((await c.query('SELECT 42 AS x')).rows[0].x).toBe(42);
    await c.end();
  });
});
