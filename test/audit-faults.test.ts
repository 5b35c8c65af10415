import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import pg from 'pg';
import { execFileSync } from 'node:child_process';
import { connectAs } from './support/query.js';
import { startTestGateway, freshDatabase, admin, tmpDir, PG, type TestGateway } from './support/env.js';
import { throwawayCluster, type Cluster } from './support/pgcluster.js';

// The audit trail under store faults, with a real PostgreSQL store: every statement a client saw complete has its
// audit row once the store is back, and /healthz tells the truth meanwhile.

let db: { name: string; drop: () => Promise<void> };
beforeAll(async () => {
  db = await freshDatabase('sluice_af', 'CREATE TABLE t (id int)');
});
afterAll(async () => {
  await db?.drop();
});

const API = `api: { listen: { host: 127.0.0.1, port: 0 } }`;

async function health(t: TestGateway): Promise<{ code: number; body: any }> {
  const r = await fetch(`http://127.0.0.1:${t.gw.apiPort}/healthz`);
  return { code: r.status, body: await r.json() };
}

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The SQL of every statement event in a store, from its own connection. */
async function storedSql(url: string): Promise<string[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const r = await c.query<{ sql: string }>(`SELECT payload::json->>'sql' AS sql FROM audit_events WHERE type = 'statement'`);
    return r.rows.map((x) => x.sql);
  } finally {
    await c.end();
  }
}

describe('audit trail under store faults', () => {
  let cluster: Cluster | undefined;
  afterAll(async () => {
    await cluster?.destroy();
  });

  it('store stopped: acknowledged statements are spooled, health says degraded, the spool bound fails closed, refusals are counted, and all rows land after restart', async () => {
    cluster = await throwawayCluster();
    const t = await startTestGateway({ storeUrl: cluster.url(), config: `${API}\naudit: { spool_max_bytes: 1048576, fsync: 100ms }` });
    const c = await connectAs(t, 'service', ['app'], db.name);
    const acked: string[] = [];
    const exec = async (sql: string) => {
      await c.query(sql);
      acked.push(sql);
    };
    try {
      for (let i = 0; i < 20; i++) await exec(`SELECT ${i} AS before_stop`);
      await t.gw.governor.audit.flush();
      expect(await health(t)).toMatchObject({ code: 200, body: { status: 'ok', audit: { backlog: 0 } } });

      await cluster.stop();
      for (let i = 0; i < 100; i++) await exec(`SELECT ${i} AS while_down`);
      const degraded = await until('the shipper to notice the store is down', async () => {
        const h = await health(t);
        return h.body.audit.store === 'failing' && h;
      });
      expect(degraded.code).toBe(200);
      expect(degraded.body.status).toBe('degraded');
      expect(degraded.body.audit.backlog).toBeGreaterThanOrEqual(100);
      expect(degraded.body.audit.stages.spooled).toBeGreaterThanOrEqual(100);
      expect(degraded.body.audit.spool_bytes).toBeGreaterThan(0);
      expect(degraded.body.audit.oldest_unshipped_s).toBeGreaterThan(0);

      // Fill the 1 MiB spool: statements run until the gateway refuses them rather than run what it cannot record.
      const pad = 'x'.repeat(8000);
      let refusal: any;
      for (let i = 0; i < 500 && !refusal; i++) {
        const sql = `SELECT ${i} AS filling -- ${pad}`;
        await c.query(sql).then(
          () => acked.push(sql),
          (e) => (refusal = e),
        );
      }
      expect(refusal?.code).toBe('57P03');
      const closed = await health(t);
      expect(closed).toMatchObject({ code: 503, body: { status: 'failing_closed', audit: { healthy: false } } });
      expect(closed.body.audit.spool_bytes).toBeGreaterThan(1048576);
      const before = closed.body.audit;
      for (let i = 0; i < 50; i++) await expect(c.query(`SELECT ${i} AS refused`)).rejects.toMatchObject({ code: '57P03' });
      const after = (await health(t)).body.audit;
      expect(after.backlog).toBe(before.backlog); // refusals are counted, not queued
      expect(after.refused_statements - before.refused_statements).toBe(50);
      const metrics = await (await fetch(`http://127.0.0.1:${t.gw.apiPort}/metrics`)).text();
      expect(metrics).toMatch(new RegExp(`sluice_audit_backlog_events\\{stage="spooled"\\} ${after.stages.spooled}`));
      expect(metrics).toMatch(/sluice_audit_healthy 0/);
      expect(metrics).toMatch(/sluice_event_loop_lag_seconds\{quantile="0.99"\} \d/);
      expect(metrics).toMatch(/sluice_process_resident_memory_bytes \d+/);

      await cluster.start();
      await until('the backlog to drain', async () => {
        const h = await health(t);
        return h.code === 200 && h.body.status === 'ok' && h.body.audit.backlog === 0;
      });
      await c.query('SELECT 1 AS after_restart');
      acked.push('SELECT 1 AS after_restart');
      await t.gw.governor.audit.flush();
      const stored = new Set(await storedSql(cluster.url()));
      expect(acked.filter((s) => !stored.has(s))).toEqual([]);
      expect(acked.length).toBeGreaterThan(150);
      const summary = await t.gw.store.db.selectFrom('audit_events').select('payload').where('type', '=', 'audit_refused').execute();
      expect(summary.map((r) => JSON.parse(r.payload).statements).reduce((a, b) => a + b, 0)).toBe(51);
    } finally {
      await c.end().catch(() => {});
      await t.stop();
    }
  });

  it('a batch the store refuses mid-way (a failing trigger) is retried until it goes in, once per event; health shows it meanwhile', async () => {
    const t = await startTestGateway({ config: API });
    const storeUrl = `postgres://${PG.user}@${PG.host}:${PG.port}/${t.storeDb}`;
    await admin(
      (a) =>
        a.query(`CREATE SEQUENCE poison_attempts;
          CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
            IF NEW.payload LIKE '%poison-pill%' AND nextval('poison_attempts') <= 4 THEN RAISE EXCEPTION 'injected failure in the middle of a batch'; END IF;
            RETURN NEW; END $$;
          CREATE TRIGGER poison BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION poison();`),
      t.storeDb,
    );
    const c = await connectAs(t, 'service', ['app'], db.name);
    const acked: string[] = [];
    try {
      // One message of many statements: their events land in one batch, with the poisoned one in the middle.
      const sqls = Array.from({ length: 400 }, (_, i) => (i === 200 ? `SELECT 'poison-pill'` : `SELECT ${i} AS batch`));
      for (const s of sqls) c.query(s).then(() => acked.push(s));
      await c.query('SELECT 1 AS last');
      acked.push('SELECT 1 AS last');
      const failing = await until('the store to refuse the batch', async () => {
        const h = await health(t);
        return h.body.audit.store === 'failing' && h;
      });
      expect(failing).toMatchObject({ code: 200, body: { status: 'degraded' } });
      expect(failing.body.audit.backlog).toBeGreaterThan(0);
      expect(failing.body.audit.last_error).toMatch(/injected failure/);
      // Statements are still allowed meanwhile: their events are safe in the spool.
      await c.query('SELECT 2 AS during_failure');
      acked.push('SELECT 2 AS during_failure');
      await until('the batch to go in', async () => {
        const h = await health(t);
        return h.body.status === 'ok' && h.body.audit.backlog === 0;
      });
      expect(acked).toHaveLength(402);
      const stored = await storedSql(storeUrl);
      expect(acked.filter((s) => !stored.includes(s))).toEqual([]);
      const dup = await t.gw.store.db.selectFrom('audit_events').select(({ fn }) => [fn.countAll<string>().as('n')]).executeTakeFirstOrThrow();
      const seqs = await t.gw.store.db.selectFrom('audit_events').select('seq').where('chain_id', '=', t.gw.governor.audit.chainId).execute();
      expect(new Set(seqs.map((r) => Number(r.seq))).size).toBe(seqs.length);
      expect(Number(dup.n)).toBeGreaterThan(402);
      const { verifyAudit } = await import('../src/audit/audit.js');
      expect((await verifyAudit(t.gw.store.db)).every((r) => r.ok)).toBe(true);
    } finally {
      await c.end().catch(() => {});
      await t.stop();
    }
  });

  it('a spool that cannot be written when an answer comes back: the client never sees the answer, and nothing runs unrecorded after it', async () => {
    const t = await startTestGateway({ config: API });
    const key = await t.key('service', ['app']);
    const a = new pg.Client(t.conn(key, db.name));
    const b = new pg.Client(t.conn(key, db.name));
    a.on('error', () => {});
    b.on('error', () => {});
    await a.connect();
    await b.connect();
    try {
      const spool = t.gw.governor.audit.spool as unknown as { fd: number };
      const answer = a.query(`SELECT pg_sleep(0.5), 'the answer' AS marker`);
      // While the statement runs, the spool file's descriptor goes bad (as an I/O error would): the write of its
      // event, due before the answer is released, fails.
      await new Promise((r) => setTimeout(r, 150));
      const { closeSync } = await import('node:fs');
      closeSync(spool.fd);
      await expect(answer).rejects.toThrow(/terminated|closed|ended|ECONNRESET/i);
      // The log now fails closed: the next statement anywhere is refused (or its session closed), not run unrecorded.
      await expect(b.query(`INSERT INTO t VALUES (4242)`)).rejects.toThrow();
      expect(t.gw.governor.audit.health()).toMatchObject({ healthy: false, status: 'failing_closed', problem: expect.stringMatching(/cannot write the audit spool/) });
      await admin(async (c) => expect((await c.query('SELECT count(*)::int AS n FROM t WHERE id = 4242')).rows[0].n).toBe(0), db.name);
    } finally {
      await a.end().catch(() => {});
      await b.end().catch(() => {});
      await t.stop().catch(() => {});
    }
  });

  // A real, nearly full file system for the spool: a 4 MiB tmpfs (mounting needs root, as in CI).
  it.skipIf(process.getuid?.() !== 0)('a spool on a nearly full disk: statements are refused (57P03) and /healthz says why', async () => {
    const mnt = tmpDir('tinyspool');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt]);
    try {
      const t = await startTestGateway({ config: `${API}\naudit: { spool_dir: ${mnt} }` });
      try {
        const c = await connectAs(t, 'service', ['app'], db.name);
        await expect(c.query('SELECT 1')).rejects.toMatchObject({ code: '57P03' });
        const h = await health(t);
        expect(h).toMatchObject({ code: 503, body: { status: 'failing_closed', audit: { healthy: false, problem: expect.stringMatching(/almost full|bytes free/) } } });
        await c.end();
      } finally {
        await t.stop();
      }
    } finally {
      execFileSync('umount', ['-l', mnt]);
    }
  });
});
