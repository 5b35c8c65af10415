import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { execFile } from 'node:child_process';
import pg from 'pg';
import { loadConfig } from '../../src/config.js';
import { startGateway, type Gateway } from '../../src/gateway.js';
import { createKey } from '../../src/identity/keys.js';
import type { IdentityKind } from '../../src/identity/identity.js';
import { BASE_POLICY } from './policies.js';

/** The real PostgreSQL the tests run against (.ci/run makes sure it is up). */
export const PG = { host: process.env.SLUICE_TEST_PGHOST ?? '127.0.0.1', port: Number(process.env.SLUICE_TEST_PGPORT ?? 5432), user: process.env.SLUICE_TEST_PGUSER ?? 'postgres' };

/** The MariaDB server the MySQL engine tests run against (.ci/run makes sure it is up). */
export const MY = { host: process.env.SLUICE_TEST_MYHOST ?? '127.0.0.1', port: Number(process.env.SLUICE_TEST_MYPORT ?? 3306), user: process.env.SLUICE_TEST_MYUSER ?? 'root' };

/** The config section for a MySQL engine in front of the test MariaDB (or its socket file, with `host: '/...'`). */
export const mysqlEngine = (o: { sslmode?: 'disable' | 'prefer' | 'require'; host?: string } = {}) =>
  `mysql: { listen: { port: 0 }, upstream: { host: ${o.host ?? MY.host}, port: ${MY.port}, user: ${MY.user}, sslmode: ${o.sslmode ?? 'disable'} } }`;

export async function admin<T>(fn: (c: pg.Client) => Promise<T>, database = 'postgres'): Promise<T> {
  const c = new pg.Client({ ...PG, database });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** A fresh database on the test server, dropped by the returned cleanup. */
export async function freshDatabase(prefix: string, setupSql?: string): Promise<{ name: string; drop: () => Promise<void> }> {
  const name = `${prefix}_${crypto.randomBytes(4).toString('hex')}`.toLowerCase();
  await admin((c) => c.query(`CREATE DATABASE ${name}`));
  if (setupSql) await admin((c) => c.query(setupSql), name);
  return {
    name,
    drop: () => admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => undefined),
  };
}

export const tmpDir = (prefix: string) => fs.mkdtempSync(path.join(os.tmpdir(), `sluice-${prefix}-`));

export { BASE_POLICY };

export interface TestGateway {
  gw: Gateway;
  port: number;
  dir: string;
  configFile: string;
  storeDb: string;
  key(kind: IdentityKind, groups: string[], opts?: { name?: string; actingFor?: string; expiresAt?: Date }): Promise<string>;
  /** node-postgres connection settings for a given password (token or key). */
  conn(password: string, database: string, extra?: Partial<pg.ClientConfig>): pg.ClientConfig;
  stop(): Promise<void>;
}

/**
 * An in-process gateway in front of the test PostgreSQL, with its own store database (postgres store) unless
 * `embedded` is asked for.
 */
export async function startTestGateway(opts: { policy?: string; config?: string; embedded?: boolean; tls?: string; storeDb?: string; storeUrl?: string; upstreamHost?: string; upstreamPort?: number; upstreamUser?: string; sslmode?: string; upstreamExtra?: string } = {}): Promise<TestGateway> {
  const dir = tmpDir('gw');
  fs.writeFileSync(path.join(dir, 'policy.yaml'), opts.policy ?? BASE_POLICY);
  let storeDb = '';
  let dropStore: (() => Promise<void>) | undefined;
  let store = `store: { kind: embedded, path: store }`;
  if (opts.storeUrl) store = `store: { kind: postgres, url: "${opts.storeUrl}" }`;
  else if (opts.storeDb) {
    // Share another gateway's store (scale-out): the other owner drops it.
    storeDb = opts.storeDb;
    store = `store: { kind: postgres, url: "postgres://${PG.user}@${PG.host}:${PG.port}/${opts.storeDb}" }`;
  } else if (!opts.embedded) {
    const d = await freshDatabase('sluice_store');
    storeDb = d.name;
    dropStore = d.drop;
    store = `store: { kind: postgres, url: "postgres://${PG.user}@${PG.host}:${PG.port}/${d.name}" }`;
  }
  const configFile = path.join(dir, 'sluice.yaml');
  fs.writeFileSync(
    configFile,
    `listen: { host: 127.0.0.1, port: 0 }
tls: ${opts.tls ?? '{ mode: allow }'}
upstream: { host: ${opts.upstreamHost ?? PG.host}, port: ${opts.upstreamPort ?? PG.port}, user: ${opts.upstreamUser ?? PG.user}, sslmode: ${opts.sslmode ?? 'disable'}${opts.upstreamExtra ? `, ${opts.upstreamExtra}` : ''} }
policy: policy.yaml
${store}
${opts.config ?? ''}
`,
  );
  const gw = await startGateway(loadConfig(configFile));
  let n = 0;
  return {
    gw,
    port: gw.port,
    dir,
    configFile,
    storeDb,
    async key(kind, groups, o = {}) {
      const { key } = await createKey(gw.store.db, { name: o.name ?? `${kind}-${++n}`, kind, groups, actingFor: o.actingFor, expiresAt: o.expiresAt });
      return key;
    },
    conn: (password, database, extra = {}) => ({ host: '127.0.0.1', port: gw.port, user: 'tester', password, database, ...extra }),
    async stop() {
      await gw.close();
      await dropStore?.();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Run a command (psql, pgbench, the CLI) and collect its output; never rejects. */
export function run(cmd: string, args: string[], opts: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { env: { ...process.env, ...opts.env }, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? Number((err as NodeJS.ErrnoException).code) : 1) : 0;
      resolve({ code, stdout, stderr });
    });
    if (opts.input !== undefined) child.stdin!.end(opts.input);
  });
}

/** Wait for the gateway's audit batch to reach the store, then read events back. */
export async function auditEvents(t: TestGateway, filter: Record<string, unknown> = {}) {
  await t.gw.governor.audit.flush();
  const { queryAudit } = await import('../../src/audit/audit.js');
  return queryAudit(t.gw.store.db, { limit: 1000, ...filter });
}
