import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import pg from 'pg';
import { startDemo, type Demo } from '../src/demo/demo.js';
import { tmpDir, run } from './support/env.js';
import { queryAudit } from '../src/audit/audit.js';

let demo: Demo;
beforeAll(async () => {
  demo = await startDemo({ port: 0, dir: tmpDir('demo'), quiet: true });
}, 180_000);
afterAll(async () => {
  await demo?.stop();
  if (demo) fs.rmSync(demo.dir, { recursive: true, force: true });
});

const connect = async (password: string) => {
  const c = new pg.Client({ host: '127.0.0.1', port: demo.gateway.port, user: 'demo', password, database: 'shop', ssl: { rejectUnauthorized: false } });
  await c.connect();
  return c;
};

describe('the demo on embedded defaults', () => {
  it('Alice (analysts) reads the seeded customers over TLS with her OIDC token, and cannot write', async () => {
    const c = await connect(demo.tokens.alice);
    try {
      const r = await c.query('SELECT count(*)::int AS n, count(DISTINCT email)::int AS emails FROM customers');
      expect(r.rows[0]).toEqual({ n: 200, emails: 200 });
      const first = await c.query('SELECT email, card_number, ssn FROM customers ORDER BY id LIMIT 1');
      expect(first.rows[0].email).toMatch(/^g\*\*\*@\*\*\*\.com$/);
      expect(first.rows[0].card_number).toMatch(/^\*{12}\d{4}$/);
      expect(first.rows[0].ssn).toMatch(/^\*\*\*-\*\*-\d{4}$/);
      const err = await c.query('DELETE FROM orders').catch((e) => e);
      expect(err.code).toBe('42501');
      expect(err.message).toContain('destructive-needs-dba');
    } finally {
      await c.end();
    }
  });

  it('Dana (dba) may change data; the agent key acting for Alice is read-only', async () => {
    const dana = await connect(demo.tokens.dana);
    expect((await dana.query('SELECT email FROM customers ORDER BY id LIMIT 1')).rows[0].email).toBe('grace.lovelace1@example.com'); // exempt
    expect((await dana.query("UPDATE orders SET status = 'shipped' WHERE id = 1")).rowCount).toBe(1);
    await dana.end();
    const bot = await connect(demo.agentKey);
    expect((await bot.query('SELECT count(*)::int AS n FROM orders')).rows[0].n).toBe(600);
    const err = await bot.query("UPDATE orders SET status = 'x' WHERE id = 1").catch((e) => e);
    expect(err.message).toContain('agents-read-only');
    await bot.end();
    await demo.gateway.governor.audit.flush();
    const events = await queryAudit(demo.gateway.store.db, { subject: 'agent:report-bot', type: 'statement' });
    expect(events.map((e) => [e.decision, e.acting_for])).toEqual([
      ['deny', 'alice@example.com'],
      ['allow', 'alice@example.com'],
    ]);
  });

  it('the printed psql instructions work: token files and sslmode=require', async () => {
    const token = fs.readFileSync(`${demo.dir}/alice.token`, 'utf8').trim();
    const r = await run('psql', ['-X', '-At', `host=127.0.0.1 port=${demo.gateway.port} dbname=shop user=alice sslmode=require`, '-c', "SELECT tier, count(*) FROM customers GROUP BY tier ORDER BY tier"], { env: { PGPASSWORD: token } });
    // seed.ts assigns tier ['gold', 'silver', 'bronze'][id % 3] to ids 1..200
    const expected = new Map<string, number>();
    for (let i = 1; i <= 200; i++) expected.set(['gold', 'silver', 'bronze'][i % 3]!, (expected.get(['gold', 'silver', 'bronze'][i % 3]!) ?? 0) + 1);
    expect(r.stdout.trim().split('\n')).toEqual([...expected].sort().map(([tier, n]) => `${tier}|${n}`));
  });

  it('serves the HTTP API with Dana as admin', async () => {
    const res = await fetch(`http://127.0.0.1:${demo.gateway.apiPort}/api/me`, { headers: { authorization: `Bearer ${demo.tokens.dana}` } });
    expect(await res.json()).toMatchObject({ identity: { subject: 'dana@example.com' }, roles: expect.arrayContaining(['admin', 'auditor']) });
  });

  it("the demo policy holds Alice's writes until Dana approves them, as the demo says", async () => {
    const c = new pg.Client({ host: '127.0.0.1', port: demo.gateway.port, user: 'alice', password: demo.tokens.alice, database: 'shop', ssl: { rejectUnauthorized: false } });
    const notices: string[] = [];
    c.on('notice', (n) => notices.push(n.message ?? ''));
    await c.connect();
    const running = c.query("UPDATE orders SET status = 'refunded' WHERE id = 7");
    const base = `http://127.0.0.1:${demo.gateway.apiPort}`;
    for (let i = 0; i < 100 && !notices.length; i++) await new Promise((r) => setTimeout(r, 50));
    const id = /awaiting approval (apr_[0-9a-f]+): (\S+)/.exec(notices[0] ?? '');
    expect(id?.[2]).toBe(`${base}/approvals/${id?.[1]}`);
    // The link opens the web console.
    expect(await (await fetch(id![2]!)).text()).toContain('<div id="root">');
    const r = await fetch(`${base}/api/approvals/${id![1]}/approve`, { method: 'POST', headers: { authorization: `Bearer ${demo.tokens.dana}`, 'content-type': 'application/json' }, body: '{}' });
    expect(r.status).toBe(200);
    expect((await running).rowCount).toBe(1);
    await c.end();
  });

  it('the upstream password is never in anything the demo hands users', () => {
    const secret = process.env.SLUICE_DEMO_UPSTREAM_PASSWORD!;
    expect(secret.length).toBeGreaterThan(10);
    for (const f of fs.readdirSync(demo.dir).filter((f) => fs.statSync(`${demo.dir}/${f}`).isFile())) {
      expect(fs.readFileSync(`${demo.dir}/${f}`, 'utf8')).not.toContain(secret);
    }
  });

  it("an evidence pack of the demo's activity exports and verifies offline against the demo's signing key", async () => {
    const c = await connect(demo.tokens.alice);
    await c.query('SELECT full_name, email FROM customers LIMIT 2');
    await c.end();
    const day = (d: number) => new Date(Date.now() + d * 86_400_000).toISOString().slice(0, 10);
    const zip = `${demo.dir}/demo-evidence.zip`;
    const exported = await run('node', ['bin/sluice.js', 'evidence', 'export', '--from', day(-1), '--to', day(1), '-o', zip, '-c', `${demo.dir}/sluice.yaml`]);
    expect(exported.stderr).not.toMatch(/error/i);
    expect(exported.code).toBe(0);
    const verified = await run('node', ['bin/sluice.js', 'evidence', 'verify', zip, '--key', `${demo.dir}/checkpoint-key.pub.pem`]);
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);
    // The pack is signed by the demo's key: another key does not verify it.
    fs.writeFileSync(`${demo.dir}/other.pub.pem`, (await import('../src/compliance/checkpoints.js')).generateKeyPem().publicPem);
    expect((await run('node', ['bin/sluice.js', 'evidence', 'verify', zip, '--key', `${demo.dir}/other.pub.pem`])).code).not.toBe(0);
  });
});

