import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { sql } from 'kysely';
import { openStore, type Store } from '../src/store/db.js';
import { AuditLog, storeSink, verifyAudit, queryAudit, type AuditSink } from '../src/audit/audit.js';
import { rowsAs, type AuditRows } from '../src/audit/rows.js';
import { freshDatabase, tmpDir, PG } from './support/env.js';

let store: Store;
let db: { name: string; drop: () => Promise<void> };

beforeAll(async () => {
  db = await freshDatabase('sluice_audit');
  store = await openStore({ kind: 'postgres', url: `postgres://${PG.user}@${PG.host}:${PG.port}/${db.name}` });
});
afterAll(async () => {
  await store?.close();
  await db?.drop();
});

const spool = (maxBytes = 64 << 20) => ({ dir: tmpDir('spool'), fsync: 1000, maxBytes });

/** The sink the gateway uses on a PostgreSQL store (COPY); `json` is the embedded store's. */
const sinkOf = (format: 'copy' | 'json' = 'copy') => (format === 'copy' ? storeSink(store.db, store.pool) : storeSink(store.db));
const seqsOf = (rows: AuditRows) => (JSON.parse(rowsAs(rows, 'json').text) as { seq: number }[]).map((r) => r.seq);

async function writeChain(n: number, chainId: string, sink = sinkOf()) {
  const log = new AuditLog(sink, { chainId, spool: spool() });
  for (let i = 0; i < n; i++) log.append({ type: 'statement', subject: 'ana', sql: `SELECT ${i}`, decision: 'allow', tables: ['t'] });
  await log.close();
}
const report = async (chain: string) => (await verifyAudit(store.db)).find((r) => r.chain_id === chain)!;

describe('hash-chained audit trail', () => {
  it('a written chain verifies', async () => {
    await writeChain(25, 'intact');
    expect(await report('intact')).toMatchObject({ ok: true, events: 25 });
    const listed = await queryAudit(store.db, { subject: 'ana', limit: 5 });
    expect(listed).toHaveLength(5);
  });

  it('detects an altered payload', async () => {
    await writeChain(10, 'edited');
    await sql`UPDATE audit_events SET payload = replace(payload, 'SELECT 4', 'SELECT 5') WHERE chain_id = 'edited' AND seq = 5`.execute(store.db);
    expect(await report('edited')).toMatchObject({ ok: false, first_bad_seq: 5, problem: expect.stringMatching(/hash does not match the payload/) });
  });

  it('detects a deleted event', async () => {
    await writeChain(10, 'deleted');
    await sql`DELETE FROM audit_events WHERE chain_id = 'deleted' AND seq = 7`.execute(store.db);
    expect(await report('deleted')).toMatchObject({ ok: false, first_bad_seq: 8, problem: 'event 7 is missing (next is 8)' });
  });

  it('detects a filter column changed to hide an event', async () => {
    await writeChain(4, 'recolumned');
    await sql`UPDATE audit_events SET decision = 'deny', subject = 'someone-else' WHERE chain_id = 'recolumned' AND seq = 2`.execute(store.db);
    expect(await report('recolumned')).toMatchObject({ ok: false, first_bad_seq: 2, problem: expect.stringMatching(/column subject does not match/) });
  });

  it('detects a forged event re-hashed in place (the next link no longer matches)', async () => {
    await writeChain(6, 'rehashed');
    const { linkHash } = await import('../src/audit/audit.js');
    const row = await store.db.selectFrom('audit_events').selectAll().where('chain_id', '=', 'rehashed').where('seq', '=', 3).executeTakeFirstOrThrow();
    const payload = row.payload.replace('SELECT 2', 'SELECT 99');
    await store.db.updateTable('audit_events').set({ payload, hash: linkHash(row.prev_hash, payload) }).where('chain_id', '=', 'rehashed').where('seq', '=', 3).execute();
    expect(await report('rehashed')).toMatchObject({ ok: false, first_bad_seq: 4, problem: expect.stringMatching(/prev_hash does not match/) });
  });

  it('keeps events in the spool while the store is unreachable, fails closed past its bound, and loses nothing', async () => {
    let down = true;
    const written: number[] = [];
    const sink: AuditSink = {
      async write(rows) {
        if (down) throw new Error('store is down');
        written.push(...seqsOf(rows));
      },
    };
    const log = new AuditLog(sink, { flushMs: 5, spool: { ...spool(1 << 20), segmentBytes: 64 * 1024 } });
    const big = 'x'.repeat(2000);
    let n = 0;
    while (log.healthy && n < 5000) {
      log.append({ type: 'statement', sql: `SELECT ${++n} -- ${big}` });
      expect(log.flushSpool()).toBe(true);
    }
    await log.flush();
    expect(n).toBeGreaterThan(400); // about 1 MiB of ~2 KiB events
    expect(log.healthy).toBe(false);
    expect(log.backlog).toBe(n);
    expect(log.health()).toMatchObject({ status: 'failing_closed', store: 'failing', backlog: n });
    // Refused statements are counted, not queued one event each.
    for (let i = 0; i < 1000; i++) log.countRefused();
    expect(log.backlog).toBe(n);
    down = false;
    await log.flush();
    expect(log.healthy).toBe(true);
    expect(log.backlog).toBe(0);
    expect(log.spool.bytes).toBeLessThan(64 * 1024 * 2);
    log.append({ type: 'statement', sql: 'SELECT after' });
    await log.flush();
    // Every event in order, then one summary of the refusals, then the next event.
    expect(written).toEqual(Array.from({ length: n + 2 }, (_, i) => i + 1));
    await log.close();
  });

  it.each(['copy', 'json'] as const)('a batch that half reached the store before the write failed is retried without wedging (%s)', async (format) => {
    const real = sinkOf(format);
    const chain = `half-written-${format}`;
    let failures = 0;
    // The store took the first half of the batch, then the connection died (as a store restart mid-flush).
    const sink: AuditSink = {
      format,
      async write(given, head) {
        const rows = JSON.parse(rowsAs(given, 'json').text) as { seq: number; hash: string }[];
        if (failures < 2 && rows.length > 1) {
          failures++;
          const half = rows.slice(0, Math.ceil(rows.length / 2));
          const text = JSON.stringify(half);
          await real.write(rowsAs({ format: 'json', text, count: half.length, firstSeq: half[0]!.seq }, format), { ...head, seq: half[half.length - 1]!.seq, hash: half[half.length - 1]!.hash });
          throw new Error('Connection terminated unexpectedly');
        }
        await real.write(given, head);
      },
    };
    const log = new AuditLog(sink, { chainId: chain, flushMs: 5, spool: spool() });
    for (let i = 0; i < 300; i++) log.append({ type: 'statement', subject: 'ana', sql: `SELECT ${i}` });
    await log.flush();
    expect(failures).toBe(1);
    expect(log.lastError?.message).toMatch(/terminated/);
    expect(log.health()).toMatchObject({ status: 'degraded', store: 'failing', backlog: 300 });
    for (let i = 0; i < 100 && log.backlog > 0; i++) await new Promise((r) => setTimeout(r, 50));
    expect(log.backlog).toBe(0);
    expect(failures).toBe(2);
    await log.close();
    const rows = await sql<{ n: string; d: string }>`SELECT count(*) AS n, count(DISTINCT seq) AS d FROM audit_events WHERE chain_id = ${chain}`.execute(store.db);
    expect(rows.rows[0]).toEqual({ n: '300', d: '300' });
    expect(await report(chain)).toMatchObject({ ok: true, events: 300, closed: true });
  });

  it.each(['copy', 'json'] as const)('values a COPY line must escape reach the store unchanged, and the chain verifies (%s)', async (format) => {
    const chain = `escapes-${format}`;
    const odd = ['tab\there', 'new\nline', 'cr\rhere', 'back\\slash', '\\N', '\\t literally', 'quote " and \' ', 'é 🙂 \u0001', ''];
    const log = new AuditLog(sinkOf(format), { chainId: chain, flushMs: 5, spool: spool() });
    for (const v of odd) log.append({ type: 'statement', subject: v, database: v, sql: `SELECT '${v}'`, decision: 'allow', details: { v } });
    await log.close();
    expect(await report(chain)).toMatchObject({ ok: true, events: odd.length, closed: true });
    const rows = await store.db.selectFrom('audit_events').select(['subject', 'database', 'payload']).where('chain_id', '=', chain).orderBy('seq').execute();
    expect(rows.map((r) => r.subject)).toEqual(odd);
    expect(rows.map((r) => r.database)).toEqual(odd);
    expect(rows.map((r) => (JSON.parse(r.payload) as { details: { v: string } }).details.v)).toEqual(odd);
  });

  it('a COPY batch the store refuses (a failing trigger) rejects the write and is retried until it goes in, once per event', async () => {
    await sql`CREATE SEQUENCE refuse_attempts`.execute(store.db);
    await sql.raw(`CREATE FUNCTION refuse_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
      IF NEW.chain_id = 'refused-copy' AND NEW.payload LIKE '%refuse-me%' AND nextval('refuse_attempts') <= 2 THEN RAISE EXCEPTION 'refused by trigger'; END IF;
      RETURN NEW; END $$`).execute(store.db);
    await sql`CREATE TRIGGER refuse_once BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION refuse_once()`.execute(store.db);
    try {
      const errors: string[] = [];
      const log = new AuditLog(sinkOf('copy'), { chainId: 'refused-copy', flushMs: 5, spool: spool(), onError: (e) => errors.push(e.message) });
      for (let i = 0; i < 50; i++) log.append({ type: 'statement', subject: 'ana', sql: i === 25 ? `SELECT 'refuse-me'` : `SELECT ${i}` });
      await log.flush();
      expect(log.lastError?.message).toMatch(/refused by trigger/);
      expect(log.backlog).toBe(50);
      for (let i = 0; i < 100 && log.backlog > 0; i++) await new Promise((r) => setTimeout(r, 50));
      expect(log.backlog).toBe(0);
      expect(errors).toEqual(['refused by trigger', 'refused by trigger']);
      await log.close();
      expect(await report('refused-copy')).toMatchObject({ ok: true, events: 50, closed: true });
    } finally {
      await sql`DROP TRIGGER refuse_once ON audit_events`.execute(store.db);
    }
  });

  it('the shipper reads what this process wrote back from its segment files, before and after the store was down', async () => {
    let down = false;
    const real = sinkOf();
    const sink: AuditSink = { format: 'copy', write: (rows, head) => (down ? Promise.reject(new Error('store is down')) : real.write(rows, head)) };
    const log = new AuditLog(sink, { chainId: 'files-read-back', flushMs: 5, spool: { ...spool(), segmentBytes: 16 * 1024 } });
    for (let i = 0; i < 40; i++) log.append({ type: 'statement', subject: 'ana', sql: `SELECT ${i}` });
    await log.flush();
    expect(log.backlog).toBe(0);
    expect(log.spool.readBack).toBe(40);
    down = true;
    for (let i = 0; i < 600; i++) {
      log.append({ type: 'statement', subject: 'ana', sql: `SELECT ${i} -- ${'z'.repeat(200)}` });
      if (i % 7 === 0) log.flushSpool();
    }
    await log.flush();
    expect(log.backlog).toBe(600);
    down = false;
    await log.flush();
    expect(log.backlog).toBe(0);
    for (let i = 0; i < 20; i++) log.append({ type: 'statement', subject: 'ana', sql: 'SELECT again' });
    await log.flush();
    expect(log.spool.readBack).toBeGreaterThanOrEqual(660); // what a failed write had read is read again
    await log.close();
    expect(await report('files-read-back')).toMatchObject({ ok: true, events: 660, closed: true });
    // In order, once each, every one of the 600 written across many segment files while the store was down.
    const seqs = await store.db.selectFrom('audit_events').select('seq').where('chain_id', '=', 'files-read-back').orderBy('seq').execute();
    expect(seqs.map((r) => Number(r.seq))).toEqual(Array.from({ length: 660 }, (_, i) => i + 1));
  });

  it.each([
    ['json', 'copy'],
    ['copy', 'json'],
  ] as const)('a spool written in %s rows is shipped by a log whose store takes %s', async (from, to) => {
    const dir = tmpDir('spool-format');
    const chain = `format-${from}-${to}`;
    const down: AuditSink = { format: from, write: () => Promise.reject(new Error('connect ECONNREFUSED')) };
    const first = new AuditLog(down, { chainId: chain, flushMs: 5, spool: { dir, fsync: 1000, maxBytes: 64 << 20 } });
    for (let i = 0; i < 30; i++) first.append({ type: 'statement', subject: 'tab\there', sql: `SELECT '\\${i}'` });
    await first.close(200);
    const next = new AuditLog(sinkOf(to), { chainId: `${chain}-next`, flushMs: 5, spool: { dir, fsync: 1000, maxBytes: 64 << 20, recover: true } });
    expect(next.backlog).toBe(30);
    await next.flush();
    expect(next.backlog).toBe(0);
    await next.close();
    expect(await report(chain)).toMatchObject({ ok: true, events: 30, closed: true });
    const subjects = await store.db.selectFrom('audit_events').select('subject').where('chain_id', '=', chain).execute();
    expect(new Set(subjects.map((r) => r.subject))).toEqual(new Set(['tab\there']));
  });

  it('under a steady stream of events each store write carries a flush interval of them, not one round trip of them', async () => {
    // A store that takes 3 ms per write, and events arriving in turns of 4 for 600 ms. Shipping at once whatever
    // arrived during the previous write made ~200 transactions of a few rows each; the timer makes ~12.
    const real = sinkOf();
    const sizes: number[] = [];
    const sink: AuditSink = {
      format: 'copy',
      write: async (rows, head) => {
        sizes.push(rows.count);
        await new Promise((r) => setTimeout(r, 3));
        await real.write(rows, head);
      },
    };
    const log = new AuditLog(sink, { chainId: 'steady-stream', flushMs: 50, spool: spool() });
    let n = 0;
    const end = Date.now() + 600;
    while (Date.now() < end) {
      for (let k = 0; k < 4; k++) log.append({ type: 'statement', subject: 'ana', sql: `SELECT ${++n}` });
      log.flushSpool();
      await new Promise((r) => setTimeout(r, 1));
    }
    await log.flush();
    expect(log.backlog).toBe(0);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(n);
    expect(n).toBeGreaterThan(400);
    expect(sizes.length).toBeLessThan(30);
    await log.close();
    expect(await report('steady-stream')).toMatchObject({ ok: true, events: n, closed: true });
  });

  it('spool lines of multi-byte text (and a lone surrogate) carry checksums another process accepts, across buffer growth', async () => {
    const dir = tmpDir('spool-utf8');
    const down: AuditSink = { format: 'copy', write: () => Promise.reject(new Error('connect ECONNREFUSED')) };
    const first = new AuditLog(down, { chainId: 'utf8-lines', flushMs: 5, spool: { dir, fsync: 1000, maxBytes: 64 << 20 } });
    const texts = ['é 🙂 ü', 'lone \ud800 surrogate', '日本語'.repeat(50_000), 'x'];
    // Many lines in one turn (more than the spool's first buffer holds), then single ones.
    for (let i = 0; i < 400; i++) first.append({ type: 'statement', subject: texts[i % 2], sql: `SELECT '${'ß'.repeat(1000)}' -- ${i}` });
    expect(first.flushSpool()).toBe(true);
    for (const t of texts) first.append({ type: 'statement', subject: 'ana', sql: `SELECT '${t}'` });
    await first.close(200);
    const next = new AuditLog(sinkOf('copy'), { chainId: 'utf8-lines-next', flushMs: 5, spool: { dir, fsync: 1000, maxBytes: 64 << 20, recover: true } });
    expect(next.backlog).toBe(404);
    await next.flush();
    expect(next.spool.damaged).toBe(0);
    expect(next.backlog).toBe(0);
    await next.close();
    expect(await report('utf8-lines')).toMatchObject({ ok: true, events: 404, closed: true });
    const last = await store.db.selectFrom('audit_events').select('payload').where('chain_id', '=', 'utf8-lines').orderBy('seq', 'desc').limit(4).execute();
    // The payload keeps even the lone surrogate (JSON escapes it); the subject column holds U+FFFD for it.
    expect(last.map((r) => (JSON.parse(r.payload) as { sql: string }).sql).reverse()).toEqual(texts.map((t) => `SELECT '${t}'`));
    const subjects = await store.db.selectFrom('audit_events').select('subject').distinct().where('chain_id', '=', 'utf8-lines').execute();
    expect(new Set(subjects.map((r) => r.subject))).toEqual(new Set(['é 🙂 ü', 'lone \ufffd surrogate', 'ana']));
  });

  it.each(['copy', 'json'] as const)('a NUL or a lone surrogate in a column (a token claim can carry either) does not block shipping; the chain verifies (%s)', async (format) => {
    const chain = `odd-columns-${format}`;
    const log = new AuditLog(sinkOf(format), { chainId: chain, flushMs: 5, spool: spool() });
    log.append({ type: 'statement', sql: 'SELECT before' });
    log.append({ type: 'session_start', subject: 'a\u0000b', acting_for: 'x\ud800y', database: 'd\u0000' });
    for (let i = 0; i < 10; i++) log.append({ type: 'statement', subject: 'ana', sql: `SELECT after ${i}` });
    await log.flush();
    expect(log.lastError).toBeUndefined();
    expect(log.backlog).toBe(0);
    await log.close();
    expect(await report(chain)).toMatchObject({ ok: true, events: 12, closed: true });
    const row = await store.db.selectFrom('audit_events').select(['subject', 'acting_for', 'database', 'payload']).where('chain_id', '=', chain).where('seq', '=', 2).executeTakeFirstOrThrow();
    expect(row).toMatchObject({ subject: 'a\ufffdb', acting_for: 'x\ufffdy', database: 'd\ufffd' });
    // The payload (what the hash covers) keeps the values exactly.
    expect(JSON.parse(row.payload)).toMatchObject({ subject: 'a\u0000b', acting_for: 'x\ud800y', database: 'd\u0000' });
  });

  it('records read back from a segment file cut short behind the log are checked: nothing but whole, intact records is shipped', async () => {
    let down = true;
    const real = sinkOf();
    const shipped: string[] = [];
    const sink: AuditSink = {
      format: 'copy',
      write: async (rows, head) => {
        if (down) throw new Error('store is down');
        shipped.push(rows.text.toString());
        await real.write(rows, head);
      },
    };
    const dir = tmpDir('spool-cut');
    const log = new AuditLog(sink, { chainId: 'cut-short', flushMs: 5, spool: { dir, fsync: 1000, maxBytes: 64 << 20 } });
    for (let i = 0; i < 40; i++) log.append({ type: 'statement', subject: 'ana', sql: `SELECT ${i}` });
    expect(log.flushSpool()).toBe(true);
    const seg = path.join(dir, 'cut-short', fs.readdirSync(path.join(dir, 'cut-short')).find((f) => f.endsWith('.seg'))!);
    const size = fs.statSync(seg).size;
    fs.truncateSync(seg, Math.floor(size / 2));
    down = false;
    await log.flush();
    // Only whole records went out, every one a COPY row of this chain (no bytes from beyond the end of the file).
    const lines = shipped.join('').split('\n').filter(Boolean);
    expect(lines.length).toBeGreaterThan(5);
    expect(lines.length).toBeLessThan(40);
    for (const l of lines) expect(l.startsWith('cut-short\t')).toBe(true);
    expect(await report('cut-short')).toMatchObject({ ok: true });
    await log.close(200);
  });

  it('a spool whose owner lives in another pid namespace (a container on a shared volume) is not taken over while its heartbeat is fresh; once it stops, a running log takes it over and ships it', async () => {
    const dir = tmpDir('spool-ns');
    const down: AuditSink = { format: 'copy', write: () => Promise.reject(new Error('connect ECONNREFUSED')) };
    const other = new AuditLog(down, { chainId: 'other-ns', flushMs: 5, spool: { dir, fsync: 1000, maxBytes: 64 << 20 } });
    for (let i = 0; i < 5; i++) other.append({ type: 'statement', subject: 'ana', sql: `SELECT ${i}` });
    expect(other.flushSpool()).toBe(true);
    // Its owner as another namespace's process 1 would write it (the pid means nothing here), just touched.
    const owner = path.join(dir, 'other-ns', 'owner');
    fs.writeFileSync(owner, '1\npid:[1]\nsometoken\n');
    const next = new AuditLog(sinkOf(), { chainId: 'this-ns', flushMs: 5, spool: { dir, fsync: 1000, maxBytes: 64 << 20, recover: true, heartbeatMs: 20, adoptEveryMs: 40 } });
    await new Promise((r) => setTimeout(r, 150));
    expect(next.backlog).toBe(0);
    expect(fs.existsSync(owner)).toBe(true);
    // Its heartbeat stops (the other process is gone): taken over by the running log within adoptEveryMs, and shipped.
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(owner, old, old);
    for (let i = 0; i < 100 && !(await report('other-ns').catch(() => undefined))?.events; i++) await new Promise((r) => setTimeout(r, 20));
    expect(await report('other-ns')).toMatchObject({ ok: true, events: 5 });
    await next.close();
    await other.close(50);
  });

  it('a log whose spool directory is moved away by another process (taken for a dead one\'s) fails closed', async () => {
    const dir = tmpDir('spool-moved');
    const log = new AuditLog(sinkOf(), { chainId: 'moved-away', flushMs: 5, spool: { dir, fsync: 1000, maxBytes: 64 << 20, heartbeatMs: 20 } });
    log.append({ type: 'statement', subject: 'ana', sql: 'SELECT 1' });
    expect(log.flushSpool()).toBe(true);
    expect(log.healthy).toBe(true);
    fs.renameSync(path.join(dir, 'moved-away'), path.join(dir, 'elsewhere'));
    for (let i = 0; i < 50 && log.healthy; i++) await new Promise((r) => setTimeout(r, 20));
    expect(log.healthy).toBe(false);
    expect(log.problem).toMatch(/moved away by another process/);
    fs.renameSync(path.join(dir, 'elsewhere'), path.join(dir, 'moved-away'));
    await log.close(200);
  });

  it('once another process has moved a live log\'s directory away (an owner file of an earlier version names only a pid, invisible here), nothing more is acknowledged, and everything acknowledged reaches the store', async () => {
    const dir = tmpDir('spool-taken');
    const a = new AuditLog(sinkOf(), { chainId: 'taken-a', flushMs: 5, spool: { dir, fsync: 1000, maxBytes: 64 << 20 } });
    const acked: number[] = [];
    const add = (i: number) => {
      a.append({ type: 'statement', subject: 'ana', sql: `SELECT ${i}` });
      if (a.flushSpool()) acked.push(a.head.seq);
    };
    for (let i = 0; i < 5; i++) add(i);
    fs.writeFileSync(path.join(dir, 'taken-a', 'owner'), '4194000\n');
    const b = new AuditLog(sinkOf(), { chainId: 'taken-b', flushMs: 5, spool: { dir, fsync: 1000, maxBytes: 64 << 20, recover: true } });
    for (let i = 5; i < 10; i++) add(i);
    expect(acked).toEqual([1, 2, 3, 4, 5]);
    expect(a.healthy).toBe(false);
    expect(a.problem).toMatch(/moved away by another process/);
    await b.flush();
    await a.close(100);
    await b.close(300);
    const c = new AuditLog(sinkOf(), { chainId: 'taken-c', flushMs: 5, spool: { dir, fsync: 1000, maxBytes: 64 << 20, recover: true } });
    await c.flush();
    await c.close(300);
    const stored = (await store.db.selectFrom('audit_events').select('seq').where('chain_id', '=', 'taken-a').orderBy('seq').execute()).map((r) => Number(r.seq));
    for (const seq of acked) expect(stored).toContain(seq);
  });

  it('a chain id may not start with "{" (a COPY row is told from a JSON one by its first byte)', () => {
    expect(() => new AuditLog(sinkOf(), { chainId: '{host}-1', spool: spool() })).toThrow(/may not start with/);
  });

  it('a chain cut short at its end is reported, not called intact', async () => {
    await writeChain(10, 'truncated');
    expect(await report('truncated')).toMatchObject({ ok: true, events: 10, closed: true, recorded_seq: 10 });
    await sql`DELETE FROM audit_events WHERE chain_id = 'truncated' AND seq > 7`.execute(store.db);
    expect(await report('truncated')).toMatchObject({ ok: false, events: 7, first_bad_seq: 8, problem: expect.stringMatching(/cut short: it ends at event 7.*recorded event 10/) });
    // A gateway that had appended more than it stored and went silent (killed, its spool lost).
    await writeChain(4, 'silent');
    await sql`UPDATE audit_heads SET appended = 9, closed = false WHERE chain_id = 'silent'`.execute(store.db);
    expect(await report('silent')).toMatchObject({ ok: true, events: 4, unshipped: 5 }); // in flight, as far as anyone knows
    await sql`UPDATE audit_heads SET updated_at = now() - interval '1 hour' WHERE chain_id = 'silent'`.execute(store.db);
    expect(await report('silent')).toMatchObject({ ok: false, first_bad_seq: 5, problem: expect.stringMatching(/cut short: it ends at event 4, but its gateway had appended 9 .* events 5 to 9 are missing/) });
    await writeChain(3, 'vanished');
    await sql`DELETE FROM audit_events WHERE chain_id = 'vanished'`.execute(store.db);
    expect(await report('vanished')).toMatchObject({ ok: false, events: 0, problem: 'all 3 events its gateway stored are missing' });
  });

  it('a spool left by a log that could not reach the store is shipped by the next log that starts on it', async () => {
    const dir = tmpDir('spool-takeover');
    const down: AuditSink = {
      async write() {
        throw new Error('connect ECONNREFUSED');
      },
    };
    const first = new AuditLog(down, { chainId: 'left-behind', flushMs: 5, spool: { dir, fsync: 'always', maxBytes: 64 << 20 } });
    for (let i = 0; i < 50; i++) first.append({ type: 'statement', sql: `SELECT ${i}` });
    await first.close(300);
    expect(fs.readdirSync(path.join(dir, 'left-behind')).filter((f) => f.endsWith('.seg'))).toHaveLength(1);
    const next = new AuditLog(storeSink(store.db), { chainId: 'next-one', flushMs: 5, spool: { dir, fsync: 1000, maxBytes: 64 << 20, recover: true } });
    expect(next.backlog).toBe(50);
    await next.flush();
    expect(next.backlog).toBe(0);
    await next.close();
    expect(fs.readdirSync(dir)).toEqual([]);
    expect(await report('left-behind')).toMatchObject({ ok: true, events: 50, closed: true });
  });

  it('a spool of many segments is shipped in order after a restart; a damaged record is skipped and shows as a gap', async () => {
    const dir = tmpDir('spool-segments');
    const down: AuditSink = {
      async write() {
        throw new Error('connect ECONNREFUSED');
      },
    };
    const first = new AuditLog(down, { chainId: 'segmented', flushMs: 5, spool: { dir, fsync: 1000, maxBytes: 64 << 20, segmentBytes: 64 * 1024 } });
    for (let i = 0; i < 2000; i++) {
      first.append({ type: 'statement', subject: 'ana', sql: `SELECT ${i}` });
      if (i % 10 === 9) first.flushSpool();
    }
    await first.close(200);
    const segs = fs.readdirSync(path.join(dir, 'segmented')).filter((f) => f.endsWith('.seg')).sort();
    expect(segs.length).toBeGreaterThan(10);
    // Flip one byte inside the record of event 1000 (as a bad disk sector would).
    const all = segs.map((f) => path.join(dir, 'segmented', f));
    const file = all.find((f) => fs.readFileSync(f, 'latin1').includes(' 1000 '))!;
    const text = fs.readFileSync(file, 'latin1');
    const at = text.indexOf('SELECT 999', text.indexOf(' 1000 '));
    const buf = fs.readFileSync(file);
    buf[at] = 'Z'.charCodeAt(0);
    fs.writeFileSync(file, buf);
    const problems: string[] = [];
    const next = new AuditLog(storeSink(store.db), { chainId: 'after-segments', flushMs: 5, spool: { dir, fsync: 1000, maxBytes: 64 << 20, recover: true }, onNotice: (m) => problems.push(m) });
    expect(next.backlog).toBe(2000);
    await next.flush();
    expect(next.backlog).toBe(0);
    expect(next.spool.damaged).toBe(1);
    expect(problems.some((m) => /damaged record skipped/.test(m))).toBe(true);
    await next.close();
    const r = await report('segmented');
    expect(r).toMatchObject({ ok: false, events: 1999, first_bad_seq: 1001, problem: 'event 1000 is missing (next is 1001)' });
  });

  // A real full file system: a 4 MiB tmpfs (mounting needs root, as in CI).
  it.skipIf(process.getuid?.() !== 0)('a full disk fails closed without losing queued events, and recovers when space returns', async () => {
    const mnt = tmpDir('tinyfs');
    const { execFileSync } = await import('node:child_process');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt]);
    try {
      // Nearly full (the default margin is 16 MiB): unhealthy from the start.
      const cautious = new AuditLog(storeSink(store.db), { chainId: 'cautious', spool: { dir: path.join(mnt, 'a'), fsync: 50, maxBytes: 64 << 20 } });
      expect(cautious.healthy).toBe(false);
      expect(cautious.problem).toMatch(/almost full|bytes free/);
      await cautious.close(100);
      // No margin: writes go on until the disk is full.
      const filler = path.join(mnt, 'filler');
      fs.writeFileSync(filler, Buffer.alloc(3 << 20));
      const got: number[] = [];
      const sink: AuditSink = { write: async (rows) => void got.push(...seqsOf(rows)) };
      const log = new AuditLog(sink, { chainId: 'full', flushMs: 1000, spool: { dir: path.join(mnt, 'b'), fsync: 50, maxBytes: 64 << 20, minFreeBytes: 0 } });
      let n = 0;
      let ok = true;
      while (ok && n < 5000) {
        log.append({ type: 'statement', sql: `SELECT ${++n} -- ${'y'.repeat(1000)}` });
        ok = log.flushSpool();
      }
      expect(ok).toBe(false); // the caller must not acknowledge this event
      expect(log.healthy).toBe(false);
      expect(log.problem).toMatch(/ENOSPC/);
      expect(log.health()).toMatchObject({ status: 'failing_closed', backlog: n });
      fs.rmSync(filler);
      for (let i = 0; i < 50 && !log.healthy; i++) await new Promise((r) => setTimeout(r, 50));
      expect(log.healthy).toBe(true);
      await log.flush();
      expect(got).toEqual(Array.from({ length: n }, (_, i) => i + 1));
      await log.close();
    } finally {
      execFileSync('umount', ['-l', mnt]);
    }
  });
});

describe('statement events built from serialised parts', () => {
  it('hash exactly what JSON.stringify gives for the whole event, for every kind of field', async () => {
    const { Governor } = await import('../src/governor.js');
    const { parsePolicy } = await import('../src/policy/policy.js');
    const { AnalysisCache, loadParser } = await import('../src/analyze/analyze.js');
    const { StatementAudit, sessionFields } = await import('../src/protocol/common/audit.js');
    const { analysisFields } = await import('../src/audit/fields.js');
    await loadParser();
    const chain = 'serialised-parts';
    const log = new AuditLog(sinkOf('copy'), { chainId: chain, flushMs: 5, spool: spool() });
    const policy = parsePolicy('p.yaml', 'version: 1\ndefault: allow\nrules: []\nmasking: { exempt: { groups: [dba] } }\n');
    const gov = new Governor({ policy, audit: log }).for('postgres');
    const cache = new AnalysisCache();
    const analysis = (q: string) => {
      const r = cache.analyze(q);
      if (!r.ok) throw new Error(r.error);
      return r;
    };
    const info = { id: 's-1', clientAddr: '10.0.0.1:5555', applicationName: 'app "quoted" \\ name', startedAt: new Date(), tls: false, statements: 0, txStatus: 'I', engine: 'postgres' as const };
    const ana = { subject: 'ana@example.com', kind: 'human' as const, groups: ['analysts', 'dba'], displayName: 'Ana\tTab', method: 'oidc' as const };
    const bot = { subject: 'agent:x', kind: 'agent' as const, groups: [], actingFor: 'bob', method: 'key' as const, keyId: 'k1' };
    let database = 'app';
    let fields: Record<string, unknown> | undefined;
    const cases: { who: typeof ana | typeof bot; r: Parameters<InstanceType<typeof StatementAudit>['ran']>[0] }[] = [
      { who: ana, r: { sql: 'SELECT 1', protocol: 'simple', analysis: analysis('SELECT 1'), rule: 'r1', rows: 1, t0: performance.now() } },
      { who: ana, r: { sql: "SELECT 'a\\b', E'\\n' FROM t WHERE x = 'ü \"q\"'\n\t;", protocol: 'extended', name: 'stmt "1"', analysis: analysis("SELECT 'a\\b', E'\\n' FROM t WHERE x = 'ü \"q\"'\n\t;"), rule: 'r"2', rows: 0 } },
      { who: bot, r: { sql: 'UPDATE t SET a = 1 WHERE id = 2', protocol: 'simple', analysis: analysis('UPDATE t SET a = 1 WHERE id = 2'), rule: 'w', rows: 3, masked: new Map([['email', 2], ['rule:"x"', 1]]), error: { message: 'boom\nline', code: 23505 }, approvalId: 'ap-1', details: { engine: 'mysql', nested: { a: [1, 'b\\'] } }, t0: performance.now() } },
      { who: bot, r: { protocol: 'fastpath', masked: {}, rows: undefined } },
      { who: bot, r: { sql: 'SELECT 2', protocol: 'mcp', analysis: analysis('SELECT 2'), masked: { phone: 4 }, rows: 7, error: { code: '57014' } } },
    ];
    const expected: object[] = [];
    for (const [i, { who, r }] of cases.entries()) {
      if (i === 2) database = 'other "db"'; // the session's fields change (MySQL USE): the next events name the new database
      fields = i === 0 || i === 2 ? sessionFields(info, who, database) : fields;
      const f = fields!;
      new StatementAudit(gov, who, () => f).ran(r);
      // The event as StatementAudit built it before it serialised parts (object spreads and JSON.stringify).
      const o = r.masked instanceof Map ? Object.fromEntries(r.masked) : r.masked;
      expected.push({
        type: 'statement', ...f, sql: r.sql, protocol: r.protocol, statement_name: r.name || undefined, ...analysisFields(r.analysis),
        decision: 'allow', rule: r.rule, ...(o && Object.keys(o).length ? { masked: o } : {}), ...((r.rows ?? 0) > 0 && who.groups.includes('dba') ? { masking_exempt: true } : {}),
        rows: r.rows, duration_ms: r.t0 === undefined ? undefined : 'DURATION', error: r.error?.message, error_code: r.error?.code === undefined ? undefined : String(r.error.code), approval_id: r.approvalId, details: r.details,
      });
    }
    await log.close();
    const rows = await store.db.selectFrom('audit_events').select(['seq', 'payload', 'ts']).where('chain_id', '=', chain).where('type', '=', 'statement').orderBy('seq').execute();
    expect(rows).toHaveLength(cases.length);
    for (const [i, row] of rows.entries()) {
      const stored = JSON.parse(row.payload) as Record<string, unknown>;
      const want = { ...expected[i], ts: stored.ts } as Record<string, unknown>;
      if (want.duration_ms === 'DURATION') {
        expect(typeof stored.duration_ms).toBe('number');
        want.duration_ms = stored.duration_ms;
      }
      expect(row.payload).toBe(JSON.stringify(want));
    }
    expect(await report(chain)).toMatchObject({ ok: true });
  });
});
