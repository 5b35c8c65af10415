import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import pg from 'pg';
import { freshDatabase, tmpDir, run, PG } from './support/env.js';
import { freePort } from '../src/util/net.js';

const CLI = path.resolve('bin/sluice.js');
let dir: string;
let cfg: string;
let port: number;
let proc: ChildProcess;
let apiPort: number;
let logs = '';
let db: { name: string; drop: () => Promise<void> };

beforeAll(async () => {
  db = await freshDatabase('sluice_cluster', 'CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2), (3);');
  dir = tmpDir('cluster');
  port = await freePort();
  apiPort = await freePort();
  fs.copyFileSync('examples/policy.yaml', path.join(dir, 'policy.yaml'));
  cfg = path.join(dir, 'sluice.yaml');
  fs.writeFileSync(cfg, `listen: { host: 127.0.0.1, port: ${port} }\nupstream: { host: ${PG.host}, port: ${PG.port}, user: ${PG.user}, sslmode: disable }\npolicy: policy.yaml\nstore: { kind: embedded, path: store }\nworkers: 2\napi: { listen: { host: 127.0.0.1, port: ${apiPort} }, roles: { admin: [dba] } }\napprovals: { poll_ms: 200 }\n`);
  proc = spawn('node', [CLI, 'start', '-c', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stderr!.on('data', (d) => (logs += d));
  for (let i = 0; i < 300 && !/listening on .* with 2 workers/.test(logs); i++) await new Promise((r) => setTimeout(r, 100));
  expect(logs).toMatch(/with 2 workers \(store embedded\)/);
}, 120_000);
afterAll(async () => {
  if (proc.exitCode === null) proc.kill('SIGKILL');
  await db?.drop();
});

describe('several gateway processes (workers: 2) sharing one port and the embedded store', () => {
  it('approvals and live sessions work across workers (their store is reached through the primary)', async () => {
    const mk = async (name: string, groups: string) => (await run('node', [CLI, 'keys', 'create', '-c', cfg, '--name', name, '--kind', 'human', '--groups', groups])).stdout.trim();
    const analyst = await mk('ann', 'analysts');
    const dba = await mk('dba', 'dba');
    const api = async (p: string, method = 'GET') => (await fetch(`http://127.0.0.1:${apiPort}${p}`, { method, headers: { authorization: `Bearer ${dba}`, 'content-type': 'application/json' }, body: method === 'POST' ? '{}' : undefined })).json();
    const c = new pg.Client({ host: '127.0.0.1', port, user: 'x', password: analyst, database: db.name });
    await c.connect();
    const held = c.query('UPDATE t SET id = id + 10 WHERE id = 3');
    let pending: { id: string } | undefined;
    for (let i = 0; i < 100 && !pending; i++) {
      pending = (await api('/api/approvals?status=pending')).approvals?.[0];
      if (!pending) await new Promise((r) => setTimeout(r, 100));
    }
    expect(pending).toBeDefined();
    // Whichever worker answers the API sees the session (published through the primary).
    let listed = false;
    for (let i = 0; i < 50 && !listed; i++) {
      listed = (await api('/api/sessions')).sessions?.some((x: { awaiting_approval?: string }) => x.awaiting_approval === pending!.id);
      if (!listed) await new Promise((r) => setTimeout(r, 200));
    }
    expect(listed).toBe(true);
    expect((await api(`/api/approvals/${pending!.id}/approve`, 'POST')).approval.status).toBe('approved');
    expect((await held).rowCount).toBe(1);
    await c.end();
  });

  it('serves sessions from both workers, cancels across workers, audits into one store and stops cleanly on SIGTERM', async () => {
    const created = await run('node', [CLI, 'keys', 'create', '-c', cfg, '--name', 'multi', '--kind', 'service', '--groups', 'app']);
    expect(created.code).toBe(0);
    const key = created.stdout.trim();
    const clients = await Promise.all(
      Array.from({ length: 6 }, async () => {
        const c = new pg.Client({ host: '127.0.0.1', port, user: 'x', password: key, database: db.name });
        await c.connect();
        return c;
      }),
    );
    try {
      for (const c of clients) expect((await c.query('SELECT sum(id)::int AS s FROM t')).rows[0].s).toBe(16);
      // Each cancel request opens a new connection, which may land on the other worker: all must work.
      for (const c of clients.slice(0, 4)) {
        const p = c.query('SELECT pg_sleep(20)').catch((e) => e);
        await new Promise((r) => setTimeout(r, 300));
        await new Promise<void>((resolve) => {
          const canceller = new (pg as any).Client({ host: '127.0.0.1', port });
          canceller.cancel(c, (c as any).activeQuery);
          setTimeout(resolve, 50);
        });
        expect((await p).code).toBe('57014');
      }
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    proc.kill('SIGTERM');
    expect(await exited).toBe(0);
    const verify = await run('node', [CLI, 'audit', 'verify', '-c', cfg]);
    expect(verify.code).toBe(0);
    const chains = Number(/all (\d+) chains intact/.exec(verify.stdout)?.[1]);
    expect(chains).toBeGreaterThanOrEqual(3); // one per worker, plus the CLI's key creation
    const listed = await run('node', [CLI, 'audit', 'list', '-c', cfg, '--type', 'statement', '--json', '--limit', '100']);
    const events = listed.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(events.filter((e) => e.sql === 'SELECT sum(id)::int AS s FROM t' && e.decision === 'allow')).toHaveLength(6);
    expect(new Set(events.map((e) => e.chain_id)).size).toBe(2);
  });
});
