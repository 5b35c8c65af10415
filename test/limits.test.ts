import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import net from 'node:net';
import pg from 'pg';
import { startTestGateway, freshDatabase, mysqlEngine, type TestGateway } from './support/env.js';
import { Framer } from '../src/protocol/postgres/framer.js';
import { MyFramer, frame } from '../src/protocol/mysql/packets.js';
import * as m from '../src/protocol/postgres/messages.js';

// Large messages, connection limits, an upstream that never answers, and HTTP input: the gateway stays responsive
// and says what is wrong.

let db: { name: string; drop: () => Promise<void> };
beforeAll(async () => {
  db = await freshDatabase('sluice_limits');
});
afterAll(async () => {
  await db?.drop();
});

/** Everything a raw socket receives until the gateway closes it (or `ms` pass). */
function collect(s: net.Socket, ms = 5000): Promise<{ data: Buffer; closed: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    s.on('data', (d) => chunks.push(d));
    s.on('error', () => {});
    const t = setTimeout(() => resolve({ data: Buffer.concat(chunks), closed: false }), ms);
    s.on('close', () => {
      clearTimeout(t);
      resolve({ data: Buffer.concat(chunks), closed: true });
    });
  });
}
const fields = (data: Buffer) => m.parseErrorFields(data, 0, data.length);

describe('large messages', () => {
  it('a 60 MB message arriving in 64 KB chunks is framed in linear time (one copy)', () => {
    const body = Buffer.alloc(60 << 20, 0x61);
    const msg = Buffer.concat([Buffer.from([0x51]), Buffer.alloc(4), body]);
    msg.writeInt32BE(4 + body.length, 1);
    const f = new Framer(64 << 20);
    const seen: number[] = [];
    const t0 = performance.now();
    for (let i = 0; i < msg.length; i += 65536) f.push(msg.subarray(i, i + 65536), (type, _b, start, end) => void seen.push(type, end - start));
    const ms = performance.now() - t0;
    expect(seen).toEqual([0x51, msg.length]);
    expect(f.pending).toBe(0);
    // Copying the partial message on every chunk takes minutes here (about 30 GB of copies); linear takes well under a second.
    expect(ms).toBeLessThan(3000);
  });

  it('MySQL: a 40 MB logical packet (three physical packets) in 64 KB chunks is framed in linear time, small packets as before', () => {
    const payload = Buffer.alloc(40 << 20, 0x62);
    payload[0] = 0x03;
    const f = new MyFramer(64 << 20);
    const stream = Buffer.concat([frame(0, payload).bytes, frame(0, Buffer.from([0x0e])).bytes, frame(0, Buffer.from([0x03, 0x41])).bytes]);
    const seen: Buffer[] = [];
    const t0 = performance.now();
    for (let i = 0; i < stream.length; i += 65536) f.push(stream.subarray(i, i + 65536), (_seq, p) => void seen.push(p));
    expect(performance.now() - t0).toBeLessThan(3000);
    expect(seen.map((p) => p.length)).toEqual([40 << 20, 1, 2]);
    expect(seen[0]!.equals(payload)).toBe(true);
    expect(f.pending).toBe(0);
    // Byte by byte, with a visitor that keeps the second packet buffered until asked again.
    const g = new MyFramer(1024);
    const got: number[] = [];
    let hold = true;
    const two = Buffer.concat([frame(0, Buffer.from([1, 2, 3])).bytes, frame(1, Buffer.from([4])).bytes]);
    const visit = (_s: number, p: Buffer) => (p[0] === 4 && hold ? 'keep' : void got.push(...p));
    for (const byte of two) g.push(Buffer.from([byte]), visit);
    expect(got).toEqual([1, 2, 3]);
    expect(g.pending).toBe(5);
    hold = false;
    g.push(Buffer.alloc(0), visit);
    expect(got).toEqual([1, 2, 3, 4]);
  });

  it('a 30 MB query goes through while another session keeps being answered promptly', async () => {
    const t = await startTestGateway();
    try {
      const key = await t.key('service', ['app']);
      const big = new pg.Client(t.conn(key, db.name));
      const other = new pg.Client(t.conn(key, db.name));
      await Promise.all([big.connect(), other.connect()]);
      let worst = 0;
      let running = true;
      const pinger = (async () => {
        while (running) {
          const t0 = performance.now();
          await other.query('SELECT 1');
          worst = Math.max(worst, performance.now() - t0);
          await new Promise((r) => setTimeout(r, 10));
        }
      })();
      const t0 = performance.now();
      const r = await big.query(`SELECT length('${'x'.repeat(30_000_000)}') AS n`);
      const took = performance.now() - t0;
      running = false;
      await pinger;
      expect(r.rows[0].n).toBe(30_000_000);
      expect(took).toBeLessThan(15_000);
      expect(worst).toBeLessThan(5000);
      await Promise.all([big.end(), other.end()]);
    } finally {
      await t.stop();
    }
  });
});

describe('connection limits', () => {
  let t: TestGateway;
  let key: string;
  const silent: net.Socket[] = [];
  beforeAll(async () => {
    t = await startTestGateway({ config: 'limits: { max_connections: 3, max_unauthenticated: 100, max_unauthenticated_per_source: 20, auth_timeout_s: 30 }' });
    key = await t.key('service', ['app']);
  });
  afterAll(async () => {
    for (const s of silent) s.destroy();
    await t?.stop();
  });

  it('silent sockets do not count against max_connections, are limited per source, and over the limit get FATAL 53300', async () => {
    const opened = await Promise.all(
      Array.from({ length: 20 }, () => new Promise<net.Socket>((resolve) => {
        const s = net.connect({ port: t.port, host: '127.0.0.1', localAddress: '127.0.0.2' }, () => resolve(s));
        s.on('error', () => {});
      })),
    );
    silent.push(...opened);
    // The 21st silent connection from the same address is told why and closed.
    const over = net.connect({ port: t.port, host: '127.0.0.1', localAddress: '127.0.0.2' });
    const got = await collect(over);
    expect(got.closed).toBe(true);
    expect(fields(got.data)).toMatchObject({ severity: 'FATAL', code: '53300', message: expect.stringMatching(/too many connections from 127\.0\.0\.2 that have not logged in/) });
    // Logins from elsewhere go through at once, up to max_connections (3) logged-in sessions.
    const clients = [new pg.Client(t.conn(key, db.name)), new pg.Client(t.conn(key, db.name)), new pg.Client(t.conn(key, db.name))];
    const t0 = Date.now();
    for (const c of clients) await c.connect();
    expect(Date.now() - t0).toBeLessThan(5000);
    const fourth = new pg.Client(t.conn(key, db.name));
    await expect(fourth.connect()).rejects.toMatchObject({ code: '53300', message: expect.stringMatching(/too many connections: 3 sessions are open/) });
    await Promise.all(clients.map((c) => c.end()));
  });

  it('shutdown ends connections that never logged in at once', async () => {
    expect(silent.filter((s) => !s.destroyed).length).toBe(20);
    const closed = silent.map((s) => new Promise<void>((r) => (s.destroyed ? r() : s.once('close', () => r()))));
    const t0 = Date.now();
    await t.gw.close();
    await Promise.all(closed);
    expect(Date.now() - t0).toBeLessThan(8000);
  });
});

describe('connection limits on the MySQL engine', () => {
  it('over the limit a MySQL client gets ERROR 1040 Too many connections, not a bare close', async () => {
    const t = await startTestGateway({ config: `limits: { max_unauthenticated_per_source: 2 }\n${mysqlEngine()}` });
    const held: net.Socket[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        const s = net.connect(t.gw.mysqlPort!, '127.0.0.1');
        s.on('error', () => {});
        await new Promise((r) => s.once('data', r)); // the gateway's handshake: admitted
        held.push(s);
      }
      const over = await collect(net.connect(t.gw.mysqlPort!, '127.0.0.1'));
      expect(over.closed).toBe(true);
      // One packet: [len][seq 0][0xff][1040 LE]['#08004'][message]
      expect(over.data[4]).toBe(0xff);
      expect(over.data.readUInt16LE(5)).toBe(1040);
      expect(over.data.toString('utf8', 8, 13)).toBe('08004');
      expect(over.data.toString('utf8', 13)).toMatch(/too many connections from 127\.0\.0\.1 that have not logged in/);
    } finally {
      for (const s of held) s.destroy();
      await t.stop();
    }
  });
});

describe('an upstream that accepts connections but never answers', () => {
  it('fails the login with a clear upstream timeout in every sslmode, and leaves no upstream socket open', async () => {
    const held = new Set<net.Socket>();
    const blackhole = net.createServer((s) => {
      // Reads (so it sees the gateway hang up) but never answers.
      s.resume();
      held.add(s);
      s.on('close', () => held.delete(s));
      s.on('error', () => {});
    });
    await new Promise<void>((r) => blackhole.listen(0, '127.0.0.1', () => r()));
    const port = (blackhole.address() as net.AddressInfo).port;
    try {
      for (const sslmode of ['prefer', 'require', 'disable']) {
        const t = await startTestGateway({ upstreamPort: port, sslmode, upstreamExtra: 'connect_timeout_s: 1' });
        try {
          const key = await t.key('service', ['app']);
          const c = new pg.Client(t.conn(key, db.name));
          c.on('error', () => {});
          const t0 = Date.now();
          const err = await c.connect().then(() => undefined, (e) => e);
          expect(Date.now() - t0).toBeLessThan(5000);
          expect(err).toMatchObject({ code: '08006', message: expect.stringMatching(/upstream database 127\.0\.0\.1:\d+ did not answer within 1 s/) });
          for (let i = 0; i < 50 && held.size > 0; i++) await new Promise((r) => setTimeout(r, 100));
          expect(held.size).toBe(0);
        } finally {
          await t.stop();
        }
      }
    } finally {
      blackhole.close();
    }
  });
});

describe('HTTP input', () => {
  let t: TestGateway;
  let key: string;
  const url = (p: string) => `http://127.0.0.1:${t.gw.apiPort}${p}`;
  beforeAll(async () => {
    t = await startTestGateway({ config: 'api: { listen: { host: 127.0.0.1, port: 0 }, roles: { auditor: [app] } }' });
    key = await t.key('service', ['app']);
  });
  afterAll(async () => {
    await t?.stop();
  });
  const get = async (p: string) => {
    const r = await fetch(url(p), { headers: { authorization: `Bearer ${key}` } });
    return { status: r.status, body: await r.json() };
  };

  it('bad query parameters get 400 with a message, not 500', async () => {
    expect(await get('/api/approvals?limit=-1')).toEqual({ status: 400, body: { error: expect.stringMatching(/limit must be a whole number/) } });
    expect(await get('/api/sensitive?since=garbage')).toEqual({ status: 400, body: { error: 'since must be an ISO 8601 time' } });
    expect(await get('/api/audit/export?limit=abc')).toEqual({ status: 400, body: { error: expect.stringMatching(/limit must be a whole number/) } });
    expect(await get('/api/audit?limit=0')).toEqual({ status: 400, body: { error: expect.stringMatching(/limit must be a whole number/) } });
    expect((await get('/api/approvals?limit=5')).status).toBe(200);
  });

  it('request bodies of /api and /auth are bounded', async () => {
    const huge = JSON.stringify({ sql: `SELECT '${'x'.repeat(2 << 20)}'`, token: 'x'.repeat(2 << 20) });
    for (const p of ['/api/policy/test', '/auth/token']) {
      const r = await fetch(url(p), { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: huge });
      expect(r.status).toBe(413);
      expect(await r.json()).toEqual({ error: expect.stringMatching(/request body larger than/) });
    }
    const ok = await fetch(url('/api/policy/test'), { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify({ sql: 'SELECT 1', database: db.name }) });
    expect(ok.status).toBe(200);
  });
});
