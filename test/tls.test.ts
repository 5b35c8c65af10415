import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { generate } from 'selfsigned';
import { startTestGateway, freshDatabase, tmpDir, type TestGateway } from './support/env.js';

let t: TestGateway;
let db: { name: string; drop: () => Promise<void> };
let key: string;
let cert: string;

beforeAll(async () => {
  const dir = tmpDir('tls');
  const pems = await generate([{ name: 'commonName', value: 'sluice.test' }], { keySize: 2048, algorithm: 'sha256' });
  cert = pems.cert;
  fs.writeFileSync(path.join(dir, 'cert.pem'), pems.cert);
  fs.writeFileSync(path.join(dir, 'key.pem'), pems.private);
  db = await freshDatabase('sluice_tls', 'CREATE TABLE t (id int)');
  t = await startTestGateway({ tls: `{ mode: require, cert_file: ${path.join(dir, 'cert.pem')}, key_file: ${path.join(dir, 'key.pem')} }` });
  key = await t.key('service', ['app']);
});
afterAll(async () => {
  await t?.stop();
  await db?.drop();
});

describe('TLS termination', () => {
  it('with mode require, a plaintext client is refused before any token is sent', async () => {
    const err = await new pg.Client(t.conn(key, db.name, { ssl: false })).connect().catch((e) => e);
    expect(err.code).toBe('28000');
    expect(err.message).toMatch(/requires an encrypted connection/);
  });

  it('serves the configured certificate, verifiable by the client', async () => {
    const c = new pg.Client(t.conn(key, db.name, { ssl: { ca: cert, rejectUnauthorized: true, checkServerIdentity: () => undefined } }));
    await c.connect();
    expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    await c.end();
    const events = (await import('./support/env.js')).auditEvents;
    const starts = await events(t, { type: 'session_start' });
    expect(starts[0]?.tls).toBe(true);
  });

  it('a client expecting another CA refuses the gateway (no silent downgrade)', async () => {
    const other = await generate([{ name: 'commonName', value: 'other' }], { keySize: 2048 });
    const err = await new pg.Client(t.conn(key, db.name, { ssl: { ca: other.cert, rejectUnauthorized: true } })).connect().catch((e) => e);
    expect(String(err.message)).toMatch(/self[- ]signed|unable to verify|certificate/i);
  });
});
