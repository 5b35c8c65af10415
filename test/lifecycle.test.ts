import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { startTestGateway, freshDatabase, auditEvents, type TestGateway } from './support/env.js';
import { basePolicyRules, policyYaml } from './support/policies.js';

let db: { name: string; drop: () => Promise<void> };
beforeAll(async () => {
  db = await freshDatabase('sluice_life', 'CREATE TABLE t (id int); INSERT INTO t VALUES (1);');
});
afterAll(async () => {
  await db?.drop();
});

describe('policy reload', () => {
  let t: TestGateway;
  afterAll(() => t?.stop());

  it('a new policy applies to the next statement of an open session; a broken file keeps the old policy', async () => {
    t = await startTestGateway();
    const key = await t.key('human', ['analysts']);
    const c = new pg.Client(t.conn(key, db.name));
    await c.connect();
    try {
      expect((await c.query('SELECT count(*)::int AS n FROM t')).rows[0].n).toBe(1);
      const file = path.join(t.dir, 'policy.yaml');
      const narrowed = basePolicyRules().map((r) => (r.name === 'analysts-read' ? { ...r, match: { ...r.match, tables: ['nothing'] } } : r));
      expect(narrowed.some((r) => (r.match?.tables as string[] | undefined)?.includes('nothing'))).toBe(true);
      fs.writeFileSync(file, policyYaml({ default: 'deny', rules: narrowed }));
      t.gw.reloadPolicy();
      const err = await c.query('SELECT count(*) FROM t').catch((e) => e);
      expect(err.code).toBe('42501');
      fs.writeFileSync(file, 'version: 1\nrules:\n  - name: oops\n    action: maybe\n');
      expect(() => t.gw.reloadPolicy()).toThrow(`${file}:4:13: rules.0.action must be one of: allow, deny`);
      expect((await c.query('SELECT count(*) FROM t').catch((e) => e)).code).toBe('42501'); // previous (valid) policy still in force
      const loads = await auditEvents(t, { type: 'policy_loaded' });
      expect(loads).toHaveLength(2); // the start and the one good reload
    } finally {
      await c.end();
    }
  });
});

describe('graceful shutdown', () => {
  it('open sessions get FATAL 57P01 with a reason and every event is written before close returns', async () => {
    const t = await startTestGateway();
    const key = await t.key('service', ['app']);
    const c = new pg.Client(t.conn(key, db.name));
    const errors: Error[] = [];
    c.on('error', (e) => errors.push(e));
    await c.connect();
    await c.query('SELECT 1');
    const { queryAudit } = await import('../src/audit/audit.js');
    const storeUrl = `postgres://postgres@127.0.0.1:5432/${t.storeDb}`;
    await t.gw.close();
    for (let i = 0; i < 50 && errors.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect((errors[0] as any)?.code).toBe('57P01');
    expect(errors[0]?.message).toContain('the gateway is shutting down');
    // Read back from the store with a fresh connection: nothing was lost on the way down.
    const { openStore } = await import('../src/store/db.js');
    const store = await openStore({ kind: 'postgres', url: storeUrl });
    const events = await queryAudit(store.db, { limit: 100 });
    await store.close();
    expect(events.map((e) => e.type)).toEqual(expect.arrayContaining(['session_start', 'statement', 'session_end']));
    expect(events.find((e) => e.type === 'session_end')?.reason).toMatch(/shutting down/);
    await t.stop();
  });
});
