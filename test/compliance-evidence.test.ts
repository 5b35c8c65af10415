import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import pg from 'pg';
import { unzipSync, zipSync, strFromU8, strToU8 } from 'fflate';
import { queryAs } from './support/query.js';
import { startTestGateway, freshDatabase, tmpDir, run, admin, type TestGateway } from './support/env.js';
import { policyYaml, rules, type TestRule } from './support/policies.js';
import { generateKeyPem } from '../src/compliance/checkpoints.js';
import { verifyPack } from '../src/compliance/pack.js';
import { buildEvidence } from '../src/compliance/evidence.js';
import type { EvidenceInputs, RawEvent } from '../src/compliance/collect.js';
import { linkHash } from '../src/audit/audit.js';
import { startGateway } from '../src/gateway.js';
import { loadConfig } from '../src/config.js';
import { localOps } from '../src/admin.js';
import type { Evidence } from '../src/compliance/evidence.js';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.SLUICE_CHROMIUM ?? '/usr/bin/chromium';

const CLI = path.resolve('bin/sluice.js');
const cli = (...args: string[]) => run('node', [CLI, ...args]);

/** The policy the evidence is collected under (and, with an auditors' rule, its second version). */
const policyRules = (extra: TestRule[] = []): TestRule[] => [
  rules.session('session'),
  { name: 'analysts-no-deletes', match: { groups: ['analysts'], commands: ['DELETE'] }, action: 'deny', reason: 'analysts do not delete' },
  rules.reviewed('analysts', ['write'], 'analysts-write-reviewed', { approvers: ['dba'] }),
  rules.read('analysts', 'analysts-read'),
  ...extra,
  rules.dba(),
];
const MASKING = { exempt: { groups: ['dba'] }, columns: [{ column: 'customers.email', masker: 'hash' }] };
const POLICY = policyYaml({ default: 'deny', rules: policyRules(), masking: MASKING });

let t: TestGateway;
let db: { name: string; drop: () => Promise<void> };
let dir: string;
let pub: string;
let alice: string;
let dana: string;
let danaKeyId: string;

const q = (key: string, sql: string) => queryAs(t, key, db.name, sql);

/** The period of the test: today, as dates (the CLI's and the API's usual form). */
const today = () => new Date().toISOString().slice(0, 10);

/** Edit a pack the way a forger would: change files, and optionally recompute the manifest so it matches. */
function forge(zip: Uint8Array, edit: (files: Record<string, Uint8Array>) => void, fixManifest: boolean): Uint8Array {
  const files = unzipSync(zip);
  edit(files);
  if (fixManifest) {
    const m = JSON.parse(strFromU8(files['manifest.json']!));
    for (const n of Object.keys(m.files)) m.files[n] = crypto.createHash('sha256').update(files[n]!).digest('hex');
    files['manifest.json'] = strToU8(JSON.stringify(m, null, 2) + '\n');
  }
  return zipSync(files);
}

const eventsOf = (files: Record<string, Uint8Array>) => strFromU8(files['inputs/events.jsonl']!).trim().split('\n').map((l) => JSON.parse(l));
const setEvents = (files: Record<string, Uint8Array>, evs: unknown[]) => (files['inputs/events.jsonl'] = strToU8(evs.map((e) => JSON.stringify(e)).join('\n') + '\n'));

beforeAll(async () => {
  dir = tmpDir('evidence');
  const k = generateKeyPem();
  fs.writeFileSync(path.join(dir, 'checkpoint.pem'), k.privatePem);
  pub = k.publicPem;
  fs.writeFileSync(path.join(dir, 'checkpoint.pub.pem'), pub);
  db = await freshDatabase('sluice_ev', "CREATE TABLE customers (id int primary key, name text, email text); INSERT INTO customers VALUES (1, 'Ann', 'ann@example.com'), (2, 'Bob', 'bob@example.com'); CREATE TABLE orders (id int primary key, status text); INSERT INTO orders SELECT g, 'new' FROM generate_series(1, 5) g;");
  t = await startTestGateway({
    policy: POLICY,
    config: `audit: { checkpoints: { key_file: ${path.join(dir, 'checkpoint.pem')}, interval_s: 1 } }
api: { listen: { host: 127.0.0.1, port: 0 }, roles: { admin: [dba] } }
approvals: { poll_ms: 200, preview: { enabled: true } }`,
  });
  alice = await t.key('human', ['analysts'], { name: 'alice' });
  dana = await t.key('human', ['dba'], { name: 'dana' });
  danaKeyId = dana.split('_')[1]!;
  // The period's activity: masked and cleartext reads, a burst of denials, failed logins, a reviewed write.
  await q(alice, 'SELECT name, email FROM customers');
  await q(dana, 'SELECT email FROM customers');
  for (let i = 0; i < 6; i++) await expect(q(alice, `DELETE FROM orders WHERE id = ${i}`)).rejects.toThrow();
  for (let i = 0; i < 2; i++) await expect(q('slk_0000000000000000_wrongwrongwrongwrongwrongwrongwrongwrongwro', 'SELECT 1')).rejects.toThrow();
  const held = q(alice, "UPDATE orders SET status = 'shipped' WHERE id = 1");
  let pending;
  for (let i = 0; i < 100 && !pending; i++) {
    pending = (await t.gw.approvals.list({ status: ['pending'], limit: 10 }))[0];
    if (!pending) await new Promise((r) => setTimeout(r, 100));
  }
  await t.gw.approvals.decide(pending!.id, { subject: 'human:dana', kind: 'human', groups: ['dba'], method: 'key' }, 'approve', 'ticket OPS-1');
  expect((await held).rowCount).toBe(1);
  // A second policy version, put in force with a reload.
  fs.writeFileSync(t.gw.governor.currentPolicy.file!, policyYaml({ default: 'deny', rules: policyRules([rules.read('security', 'auditors-read')]), masking: MASKING }));
  t.gw.reloadPolicy();
  await t.gw.compliance!.checkpointer!.tick();
  await t.gw.governor.audit.flush();
}, 120_000);

afterAll(async () => {
  await t?.stop();
  await db?.drop();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('signed checkpoints', () => {
  it('sign the head of the gateway chain with the configured Ed25519 key', async () => {
    const cps = await t.gw.store.db.selectFrom('audit_checkpoints').selectAll().where('chain_id', '=', t.gw.governor.audit.chainId).execute();
    expect(cps.length).toBeGreaterThan(0);
    const last = cps.sort((a, b) => Number(b.seq) - Number(a.seq))[0]!;
    const ev = await t.gw.store.db.selectFrom('audit_events').select('hash').where('chain_id', '=', last.chain_id).where('seq', '=', Number(last.seq)).executeTakeFirstOrThrow();
    expect(last.hash).toBe(ev.hash);
    expect(last.public_key.trim()).toBe(pub.trim());
  });

  it('sign a cluster worker chain through the process that owns the store', async () => {
    const worker = await startGateway(loadConfig(t.configFile), { remote: localOps(t.gw.store.db, t.gw.governor.audit), admin: false });
    const chain = worker.governor.audit.chainId;
    try {
      const c = new pg.Client({ ...t.conn(dana, db.name), port: worker.port });
      await c.connect();
      await c.query('SELECT 1');
      await c.end();
    } finally {
      await worker.close();
    }
    const cps = await t.gw.store.db.selectFrom('audit_checkpoints').select(['seq', 'hash']).where('chain_id', '=', chain).orderBy('seq', 'desc').execute();
    expect(cps.length).toBeGreaterThan(0);
    const head = await t.gw.store.db.selectFrom('audit_events').select(['seq', 'hash']).where('chain_id', '=', chain).orderBy('seq', 'desc').limit(1).executeTakeFirstOrThrow();
    expect([Number(cps[0]!.seq), cps[0]!.hash]).toEqual([Number(head.seq), head.hash]);
  });
});

describe('evidence pack', () => {
  let zip: Uint8Array;
  let ev: Evidence;

  it('is exported by the CLI and verifies offline', async () => {
    const out = path.join(dir, 'pack.zip');
    const r = await cli('evidence', 'export', '-c', t.configFile, '--from', today(), '--to', today(), '-o', out);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/wrote .*pack\.zip: \d+ events/);
    zip = fs.readFileSync(out);
    const v = await cli('evidence', 'verify', out, '--key', path.join(dir, 'checkpoint.pub.pem'));
    expect(v.stdout).toContain('evidence verify: OK');
    expect(v.code).toBe(0);
    ev = JSON.parse(strFromU8(unzipSync(zip)['evidence.json']!));
  });

  it('maps the activity to SOC 2 criteria', () => {
    const ids = ev.cc6_1_logical_access.identities.map((i) => i.subject);
    expect(ids).toEqual(expect.arrayContaining(['human:alice', 'human:dana']));
    expect(ev.cc6_1_logical_access.keys.find((k) => k.name === 'alice')?.logins_in_period).toBeGreaterThan(0);
    const versions = ev.cc6_1_logical_access.policy_versions;
    expect(versions.length).toBe(2);
    expect(versions[1]!.diff_from_previous).toContain('+   - name: auditors-read');
    expect(versions[0]!.hash).not.toBe(versions[1]!.hash);
    const mon = ev.cc7_2_monitoring;
    expect(mon.denied.total).toBe(6);
    expect(mon.auth_failures.total).toBe(2);
    expect(mon.anomalies.filter((a) => a.kind === 'denial_burst').map((a) => a.subject)).toEqual(['human:alice']);
    const first = mon.anomalies.filter((a) => a.kind === 'first_sensitive_access');
    expect(first.find((a) => a.subject === 'human:alice' && a.detail.includes('email') && a.detail.includes('masked'))).toBeTruthy();
    expect(first.find((a) => a.subject === 'human:dana' && a.detail.includes('cleartext'))).toBeTruthy();
    expect(first.filter((a) => a.detail.includes('of name'))).toEqual([]);
    const change = ev.cc8_1_change_management.find((c) => c.sql?.includes("status = 'shipped'"));
    expect(change?.reviewers).toEqual([expect.objectContaining({ by: 'human:dana', action: 'approve', reason: 'ticket OPS-1' })]);
    expect(change?.executed_at).toBeTruthy();
    expect(change?.preview).toMatch(/would affect 1 rows/);
    const exposure = Object.fromEntries(ev.data_exposure.map((x) => [x.subject, x]));
    expect(exposure['human:alice']!.masked).toEqual({ 'customers.email': 2 });
    expect(exposure['human:dana']!.exempt_columns).toEqual(expect.arrayContaining(['email']));
    expect(ev.integrity.ok).toBe(true);
    const mine = ev.integrity.chains.find((c) => c.chain_id === t.gw.governor.audit.chainId)!;
    expect(mine.checkpoints).toBeGreaterThan(0);
    expect(mine.unsigned_in_period).toBe(0);
  });

  it('opens in Chromium as a readable report', async () => {
    const html = path.join(dir, 'report.html');
    fs.writeFileSync(html, unzipSync(zip)['report.html']!);
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      await page.goto(`file://${html}`);
      expect(await page.locator('h1').textContent()).toContain('Database access evidence');
      const headings = await page.locator('h2').allTextContents();
      for (const h of ['Logical access', 'Provisioning and removal', 'Monitoring', 'Change management', 'Data exposure', 'Access reviews', 'Audit integrity']) expect(headings.join('|')).toContain(h);
      expect(await page.locator('#integrity .ok').textContent()).toContain('Every audit chain of the period verifies');
      expect(await page.locator('#cc7-2').textContent()).toContain('6 denied statements within a minute');
      expect(await page.locator('#cc8-1').textContent()).toContain('ticket OPS-1');
      expect(await page.locator('#cc6-1 pre.diff').textContent()).toContain('auditors-read');
      await page.screenshot({ path: path.join(process.env.SLUICE_SCREENSHOTS ?? dir, 'evidence-report.png'), fullPage: true });
    } finally {
      await browser.close();
    }
  });

  it('is also served by the API (auditor role) and reads the same', async () => {
    const base = `http://127.0.0.1:${t.gw.apiPort}`;
    const denied = await fetch(`${base}/api/compliance/evidence?from=${today()}&to=${today()}`, { headers: { authorization: `Bearer ${alice}` } });
    expect(denied.status).toBe(403);
    const r = await fetch(`${base}/api/compliance/evidence?from=${today()}&to=${today()}`, { headers: { authorization: `Bearer ${dana}` } });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe('application/zip');
    const v = verifyPack(new Uint8Array(await r.arrayBuffer()), pub);
    expect(v.problems).toEqual([]);
    expect(v.ok).toBe(true);
    expect(v.summary!.denied).toBe(6);
  });

  it('detects an event altered in the zip, even with the manifest recomputed', () => {
    const forged = forge(zip, (f) => {
      const evs = eventsOf(f);
      const i = evs.findIndex((e) => e.payload.includes('DELETE FROM orders WHERE id = 3'));
      evs[i].payload = evs[i].payload.replace('DELETE FROM orders WHERE id = 3', 'SELECT 1');
      setEvents(f, evs);
    }, true);
    const v = verifyPack(forged, pub);
    expect(v.ok).toBe(false);
    expect(v.problems.join('\n')).toMatch(/event \d+: its hash does not match its content \(the event was altered\)/);
  });

  it('detects a rewritten chain (every later hash recomputed) through the signed checkpoints', () => {
    const forged = forge(zip, (f) => {
      const evs = eventsOf(f);
      const i = evs.findIndex((e) => e.payload.includes('DELETE FROM orders WHERE id = 3'));
      evs.splice(i, 1); // drop the event, renumber and re-hash everything after it
      for (let j = i; j < evs.length; j++) {
        const prev = evs[j - 1];
        if (evs[j].chain_id !== prev.chain_id) break;
        evs[j].seq = prev.seq + 1;
        evs[j].prev_hash = prev.hash;
        evs[j].hash = linkHash(prev.hash, evs[j].payload);
      }
      setEvents(f, evs);
    }, true);
    const v = verifyPack(forged, pub);
    expect(v.ok).toBe(false);
    expect(v.problems.join('\n')).toMatch(/is not the event its checkpoint signed|covers events up to \d+, but the chain ends/);
  });

  it('detects an edited report, a file changed without the manifest, and the wrong key', () => {
    const edited = forge(zip, (f) => (f['report.html'] = strToU8(strFromU8(f['report.html']!).replace(/Denied statements \(6\)/, 'Denied statements (0)'))), true);
    expect(verifyPack(edited, pub).problems).toContain("report.html does not match what the pack's verified events give (the report was edited)");
    const unlisted = forge(zip, (f) => (f['csv/anomalies.csv'] = strToU8('ts,kind\r\n')), false);
    expect(verifyPack(unlisted, pub).problems).toContain('csv/anomalies.csv was modified after the pack was made (its sha256 is not the manifest\'s)');
    const other = generateKeyPem().publicPem;
    const v = verifyPack(zip, other);
    expect(v.ok).toBe(false);
    expect(v.problems.join('\n')).toMatch(/names key [0-9a-f]{16}, but the key given has id [0-9a-f]{16}/);
  });

  it('detects an event altered in the store: the export reports it and the pack does not verify', async () => {
    const chain = t.gw.governor.audit.chainId;
    const row = await t.gw.store.db.selectFrom('audit_events').select(['seq', 'payload']).where('chain_id', '=', chain).where('payload', 'like', '%DELETE FROM orders WHERE id = 2%').executeTakeFirstOrThrow();
    await admin((c) => c.query('UPDATE audit_events SET payload = $1 WHERE chain_id = $2 AND seq = $3', [row.payload.replace('human:alice', 'human:nobody'), chain, row.seq]), t.storeDb);
    const out = path.join(dir, 'tampered.zip');
    const r = await cli('evidence', 'export', '-c', t.configFile, '--from', today(), '--to', today(), '-o', out);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`event ${row.seq}: its hash does not match its content (the event was altered)`);
    const v = await cli('evidence', 'verify', out);
    expect(v.code).toBe(1);
    expect(v.stdout).toContain(`BROKEN  chain ${chain}: event ${row.seq}: its hash does not match its content`);
    expect(v.stdout).toContain('evidence verify: FAILED');
    await admin((c) => c.query('UPDATE audit_events SET payload = $1 WHERE chain_id = $2 AND seq = $3', [row.payload, chain, row.seq]), t.storeDb);
  });

  it('detects events removed from the end of a chain in the store', async () => {
    const chain = t.gw.governor.audit.chainId;
    await t.gw.compliance!.checkpointer!.tick();
    await t.gw.governor.audit.flush();
    const cp = await t.gw.store.db.selectFrom('audit_checkpoints').select(['seq']).where('chain_id', '=', chain).orderBy('seq', 'desc').limit(1).executeTakeFirstOrThrow();
    const gone = await admin((c) => c.query('DELETE FROM audit_events WHERE chain_id = $1 AND seq > $2 - 3 RETURNING *', [chain, cp.seq]), t.storeDb);
    expect(gone.rowCount).toBeGreaterThan(0);
    await admin((c) => c.query('UPDATE audit_heads SET seq = $2 - 3 WHERE chain_id = $1', [chain, cp.seq]), t.storeDb);
    const out = path.join(dir, 'truncated.zip');
    const r = await cli('evidence', 'export', '-c', t.configFile, '--from', today(), '--to', today(), '-o', out);
    expect(r.code).toBe(1);
    const v = verifyPack(fs.readFileSync(out), pub);
    expect(v.ok).toBe(false);
    expect(v.problems.join('\n')).toMatch(/were removed/);
    // Put them back (the rest of the suite's gateway keeps appending to this chain).
    for (const row of gone.rows) await admin((c) => c.query('INSERT INTO audit_events SELECT * FROM json_populate_record(NULL::audit_events, $1)', [JSON.stringify(row)]), t.storeDb);
  });
});

describe('anomalies from detector masking (zero-config)', () => {
  const ev = (seq: number, e: Record<string, unknown>): RawEvent => {
    const payload = JSON.stringify({ type: 'statement', decision: 'allow', rows: 2, ts: `2026-11-27T10:00:0${seq}.000Z`, ...e });
    return { chain_id: 'c', seq, ts: `2026-11-27T10:00:0${seq}.000Z`, payload, prev_hash: '', hash: '' };
  };
  const inputs = (prior: string[]): EvidenceInputs => ({
    period: { from: '2026-11-27T00:00:00.000Z', to: '2026-11-27T23:59:59.999Z' }, generated_at: '2026-11-27T12:00:00.000Z', generator: 'test', checkpoints: [], keys: [], approvals: [], reviews: [], prior_sensitive: prior,
    policy_versions: [],
    events: [
      ev(1, { subject: 'alice', columns: ['full_name', 'email', 'card_number'], masked: { email: 2, card: 2 } }),
      ev(2, { subject: 'dana', columns: ['full_name', 'email'], masking_exempt: true }),
      ev(3, { subject: 'alice', columns: ['email'], masked: { email: 1 } }),
    ],
  });
  it('flag the first read of each column a detector masked, by whoever reads it, once', () => {
    const a = buildEvidence(inputs([])).cc7_2_monitoring.anomalies.map((x) => `${x.subject}: ${x.detail}`);
    expect(a).toEqual(['alice: first read of email (masked)', 'alice: first read of card_number (masked)', 'dana: first read of email (cleartext, exempt from masking)']);
  });
  it('do not flag what the identity read before the period', () => {
    const a = buildEvidence(inputs(['alice email', 'dana email'])).cc7_2_monitoring.anomalies.map((x) => `${x.subject}: ${x.detail}`);
    expect(a).toEqual(['alice: first read of card_number (masked)']);
  });
});

describe('evidence through a running gateway on the embedded store', () => {
  it('keygen makes a key; export goes through the admin socket; the pack verifies with the public key', async () => {
    const kdir = tmpDir('keygen');
    const k = await cli('evidence', 'keygen', '-o', path.join(kdir, 'audit-key.pem'));
    expect(k.code).toBe(0);
    expect(k.stdout).toMatch(/key id [0-9a-f]{16}/);
    expect(fs.statSync(path.join(kdir, 'audit-key.pem')).mode & 0o777).toBe(0o600);
    expect((await cli('evidence', 'keygen', '-o', path.join(kdir, 'audit-key.pem'))).code).toBe(2);
    const e = await startTestGateway({ embedded: true, config: `audit: { checkpoints: { key_file: ${path.join(kdir, 'audit-key.pem')}, interval_s: 60 } }` });
    try {
      const key = await e.key('service', ['app'], { name: 'etl' });
      await queryAs(e, key, 'postgres', 'SELECT 1');
      const out = path.join(kdir, 'pack.zip');
      const r = await cli('evidence', 'export', '-c', e.configFile, '--from', today(), '--to', today(), '-o', out);
      expect(r.code).toBe(0);
      const v = await cli('evidence', 'verify', out, '--key', path.join(kdir, 'audit-key.pub.pem'));
      expect(v.stdout).toContain('evidence verify: OK');
      expect(v.stdout).not.toContain('warning');
      const ev = JSON.parse(strFromU8(unzipSync(fs.readFileSync(out))['evidence.json']!)) as Evidence;
      expect(ev.cc6_1_logical_access.identities.map((i) => i.subject)).toContain('service:etl');
    } finally {
      await e.stop();
      fs.rmSync(kdir, { recursive: true, force: true });
    }
  });
});
