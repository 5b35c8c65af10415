import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { startTestGateway, freshDatabase, admin, run, type TestGateway } from './support/env.js';
import type { Approval } from '../src/approvals/store.js';
import { REVIEWED_WRITES_POLICY } from './support/policies.js';

const POLICY = REVIEWED_WRITES_POLICY();
const API = `api: { listen: { host: 127.0.0.1, port: 0 }, roles: { approver: [dba], admin: [ops] } }
approvals: { poll_ms: 200, preview: { enabled: false } }`;

const CLI = path.resolve('bin/sluice.js');

let a: TestGateway;
let b: TestGateway;
let db: { name: string; drop: () => Promise<void> };
let alice: string;
let dana: string;

beforeAll(async () => {
  if (!fs.existsSync('dist/cli/main.js')) throw new Error('build first: npm test runs tsc before vitest');
  db = await freshDatabase('sluice_apr2', 'CREATE TABLE t (id int, v text); INSERT INTO t VALUES (1, \'a\'), (2, \'b\');');
  a = await startTestGateway({ policy: POLICY, config: API });
  b = await startTestGateway({ policy: POLICY, config: API, storeDb: a.storeDb });
  alice = await a.key('human', ['analysts'], { name: 'alice' });
  dana = await a.key('human', ['dba'], { name: 'dana' });
});
afterAll(async () => {
  await b?.gw.close();
  await a?.gw.close(); // the restarted gateway (stop() closes the first one)
  await a?.stop();
  await db?.drop();
});

const apiOf = (g: TestGateway) => `http://127.0.0.1:${g.gw.apiPort}`;
const cli = (g: TestGateway, token: string, ...args: string[]) => run('node', [CLI, ...args, '--api', apiOf(g), '--token', token]);
async function pending(g: TestGateway): Promise<Approval> {
  for (let i = 0; i < 100; i++) {
    const r = await cli(g, dana, 'approvals', 'list', '--status', 'pending', '--json');
    const line = r.stdout.trim().split('\n').filter(Boolean)[0];
    if (line) return JSON.parse(line);
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error('nothing pending');
}

describe('live sessions across gateways sharing a store', () => {
  it('gateway B lists a session held by gateway A and terminates it there', async () => {
    const c = new pg.Client(a.conn(alice, db.name));
    const ended = new Promise<Error>((resolve) => c.on('error', resolve));
    await c.connect();
    await c.query('SELECT 1');
    const admin = await b.key('human', ['ops'], { name: 'ops-admin' });
    const list = async () => (await (await fetch(`${apiOf(b)}/api/sessions`, { headers: { authorization: `Bearer ${admin}` } })).json()).sessions as { id: string; subject: string; gateway: string; database: string }[];
    let found: { id: string; gateway: string } | undefined;
    for (let i = 0; i < 50 && !found; i++) {
      found = (await list()).find((s) => s.database === db.name && s.subject === 'human:alice');
      if (!found) await new Promise((r) => setTimeout(r, 200));
    }
    expect(found).toBeDefined();
    const del = await fetch(`${apiOf(b)}/api/sessions/${found!.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${admin}` } });
    expect(del.status).toBe(202);
    expect((await ended).message).toMatch(/terminating connection: terminated by human:ops-admin/);
    expect((await fetch(`${apiOf(b)}/api/sessions/nope`, { method: 'DELETE', headers: { authorization: `Bearer ${admin}` } })).status).toBe(404);
  });
});

describe('approvals across gateway processes, restarts and the CLI', () => {
  it('held on gateway A, approved through gateway B with the CLI: the client on A completes', async () => {
    const c = new pg.Client(a.conn(alice, db.name));
    await c.connect();
    const running = c.query("UPDATE t SET v = 'x' WHERE id = 1");
    const req = await pending(b);
    expect(req.sql).toBe("UPDATE t SET v = 'x' WHERE id = 1");
    const shown = await cli(b, dana, 'approvals', 'show', req.id);
    expect(shown.stdout).toContain(req.id);
    expect(shown.stdout).toContain('pending');
    // The requester cannot approve through the CLI either.
    const self = await cli(b, alice, 'approvals', 'approve', req.id);
    expect(self.code).toBe(1);
    expect(self.stderr).toMatch(/403: the approver or admin role is required/);
    const ok = await cli(b, dana, 'approvals', 'approve', req.id, '--reason', 'fine');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/approved/);
    expect((await running).rowCount).toBe(1);
    await c.end();
  });

  it('a request survives a gateway restart; once approved, the re-run statement runs at once', async () => {
    const c = new pg.Client(a.conn(alice, db.name));
    c.on('error', () => {}); // the restart ends this session
    await c.connect();
    const sql = "UPDATE t SET v = 'y' WHERE id = 2";
    const running = c.query(sql).catch((e: Error) => e);
    const req = await pending(a);
    // Restart A (same config, same store): the waiting client is disconnected, the request stays.
    const cfg = a.configFile;
    await a.gw.close();
    expect(String(await running)).toMatch(/terminating connection|Connection terminated/);
    const { startGateway } = await import('../src/gateway.js');
    const { loadConfig } = await import('../src/config.js');
    a.gw = await startGateway(loadConfig(cfg));
    a.port = a.gw.port;
    a.conn = (password, database) => ({ host: '127.0.0.1', port: a.gw.port, user: 'tester', password, database });
    const after = await pending(a);
    expect(after.id).toBe(req.id);
    expect((await cli(b, dana, 'approvals', 'deny', 'apr_nonexistent')).stderr).toMatch(/404/);
    expect((await cli(a, dana, 'approvals', 'approve', req.id)).code).toBe(0);
    const c2 = new pg.Client(a.conn(alice, db.name));
    await c2.connect();
    expect((await c2.query(sql)).rowCount).toBe(1);
    await c2.end();
    expect((await admin((x) => x.query('SELECT v FROM t WHERE id = 2'), db.name)).rows[0].v).toBe('y');
  });

  it('sluice request: a JIT grant approved on one gateway opens writes on the other', async () => {
    const r = cli(b, alice, 'request', '--db', db.name, '--role', 'write', '--for', '10m', '--reason', 'backfill', '--wait', '--json');
    const g = await (async () => {
      for (let i = 0; i < 100; i++) {
        const l = await cli(a, dana, 'approvals', 'list', '--kind', 'grant', '--status', 'pending', '--json');
        if (l.stdout.trim()) return JSON.parse(l.stdout.trim().split('\n')[0]!) as Approval;
        await new Promise((res) => setTimeout(res, 100));
      }
      throw new Error('no grant request');
    })();
    expect(g).toMatchObject({ kind: 'grant', role: 'write', duration_s: 600, justification: 'backfill' });
    expect((await cli(a, dana, 'approvals', 'approve', g.id)).code).toBe(0);
    const done = await r;
    expect(done.code).toBe(0);
    expect(JSON.parse(done.stdout).status).toBe('approved');
    // Gateway B learns of it through the shared store's change feed: its policy tester says so first (a write
    // sent before that would be held for approval, as the policy says).
    let decision = '';
    for (let i = 0; i < 100 && decision !== 'allow'; i++) {
      const res = await fetch(`${apiOf(b)}/api/policy/test`, { method: 'POST', headers: { authorization: `Bearer ${alice}`, 'content-type': 'application/json' }, body: JSON.stringify({ sql: "INSERT INTO t VALUES (3, 'z')", database: db.name }) });
      const body = (await res.json()) as { decision: string; rule: string };
      decision = body.decision;
      if (decision === 'allow') expect(body.rule).toBe(`grant:${g.id}`);
      else await new Promise((res2) => setTimeout(res2, 100));
    }
    expect(decision).toBe('allow');
    const c = new pg.Client(b.conn(alice, db.name));
    await c.connect();
    expect((await c.query("INSERT INTO t VALUES (3, 'z')")).rowCount).toBe(1);
    await c.end();
    const usage = await run('node', [CLI, 'request', '--api', apiOf(a), '--token', alice, '--db', 'x']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('request needs --role');
  });
});
