import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { startTestGateway, freshDatabase, run, tmpDir, type TestGateway } from './support/env.js';

const CLI = path.resolve('bin/sluice.js');
const cli = (...args: string[]) => run('node', [CLI, ...args]);

let t: TestGateway;
let db: { name: string; drop: () => Promise<void> };

beforeAll(async () => {
  if (!fs.existsSync('dist/cli/main.js')) throw new Error('build first: npm test runs tsc before vitest');
  db = await freshDatabase('sluice_cli', 'CREATE TABLE t (id int)');
  t = await startTestGateway({ embedded: true });
});
afterAll(async () => {
  await t?.gw.close();
  await db?.drop();
});

describe('sluice CLI against a running gateway with the embedded store', () => {
  it('creates a key through the running gateway; the key logs in; revoking it locks it out', async () => {
    const created = await cli('keys', 'create', '-c', t.configFile, '--name', 'nightly-etl', '--kind', 'service', '--groups', 'app', '--json');
    expect(created.code).toBe(0);
    const { key, info } = JSON.parse(created.stdout);
    expect(key).toMatch(/^slk_[0-9a-f]{16}_/);
    expect(info).toMatchObject({ name: 'nightly-etl', kind: 'service', subject: 'service:nightly-etl', groups: ['app'] });
    const c = new pg.Client(t.conn(key, db.name));
    await c.connect();
    await c.query('INSERT INTO t VALUES (1)');
    await c.end();
    const listed = await cli('keys', 'list', '-c', t.configFile);
    expect(listed.stdout).toContain('nightly-etl');
    const secret = key.slice('slk_'.length + 16 + 1); // base64url: may itself contain '_'
    expect(secret).toHaveLength(43);
    expect(listed.stdout).not.toContain(secret);
    expect((await cli('keys', 'revoke', '-c', t.configFile, info.id)).stdout).toContain(`revoked ${info.id}`);
    const refused = await new pg.Client(t.conn(key, db.name)).connect().catch((e) => e);
    expect(refused.message).toMatch(new RegExp(`Sluice key ${info.id} was revoked at`));
  });

  it('lists and filters audit events, as text and JSON', async () => {
    const listed = await cli('audit', 'list', '-c', t.configFile, '--type', 'statement', '--json');
    expect(listed.code).toBe(0);
    const events = listed.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(events.find((e) => e.sql === 'INSERT INTO t VALUES (1)')).toMatchObject({ subject: 'service:nightly-etl', decision: 'allow', tables: ['t'], rows: 1 });
    const text = await cli('audit', 'list', '-c', t.configFile, '--subject', 'service:nightly-etl', '--table', 't');
    expect(text.stdout).toMatch(/statement\s+service:nightly-etl \(service\)\s+db=\S+\s+allow\[app-read-write\]\s+rows=1/);
    const none = await cli('audit', 'list', '-c', t.configFile, '--subject', 'nobody');
    expect(none.stdout).toBe('');
  });

  it('verifies the chain through the gateway and directly on the store after it stops; tampering is reported with exit 1', async () => {
    const live = await cli('audit', 'verify', '-c', t.configFile);
    expect(live.code).toBe(0);
    expect(live.stdout).toMatch(/audit verify: all \d+ chains intact/);
    await t.gw.close();
    const offline = await cli('audit', 'verify', '-c', t.configFile);
    expect(offline.code).toBe(0);
    // Tamper with the stored store directly (as an attacker with file access would) and verify again.
    const { openStore } = await import('../src/store/db.js');
    const store = await openStore({ kind: 'embedded', path: path.join(t.dir, 'store') });
    await store.db.updateTable('audit_events').set({ payload: '{"type":"statement","sql":"nothing to see"}' }).where('type', '=', 'statement').execute();
    await store.close();
    const broken = await cli('audit', 'verify', '-c', t.configFile);
    expect(broken.code).toBe(1);
    expect(broken.stdout).toMatch(/BROKEN\s+chain .*hash does not match the payload/);
  });

  it('validates policy files with file:line errors and answers "would this be allowed?"', async () => {
    const dir = tmpDir('cli-policy');
    const bad = path.join(dir, 'bad.yaml');
    fs.writeFileSync(bad, 'version: 1\nrules:\n  - name: x\n    action: alow\n');
    const r = await cli('policy', 'check', bad);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe(`sluice: ${bad}:4:13: rules.0.action must be one of: allow, deny, require_approval`);
    const good = await cli('policy', 'check', path.join(t.dir, 'policy.yaml'));
    expect(good.stdout).toMatch(/ok \(5 rules, default deny\)/);
    const test = await cli('policy', 'test', path.join(t.dir, 'policy.yaml'), '--sql', 'TRUNCATE orders', '--groups', 'app');
    expect(test.stdout).toContain('deny by rule "destructive-needs-dba": destructive statements need a DBA');
    expect(test.stdout).toContain('TRUNCATE class=write tables=orders(write)');
  });

  it('reports bad config with file:line and exit 2, and unknown commands with usage', async () => {
    const dir = tmpDir('cli-config');
    const cfg = path.join(dir, 'sluice.yaml');
    fs.writeFileSync(cfg, 'upstream:\n  host: db\n  user: app\n  port: "5432x"\npolicy: p.yaml\n');
    const r = await cli('start', '-c', cfg);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe(`sluice: ${cfg}:4:9: upstream.port must be integer`);
    const u = await cli('frobnicate');
    expect(u.code).toBe(2);
    expect(u.stderr).toContain('unknown command "frobnicate"');
  });
});
