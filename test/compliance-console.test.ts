import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { unzipSync, strFromU8 } from 'fflate';
import { chromium, type Browser, type Page } from 'playwright-core';
import { queryAs } from './support/query.js';
import { startTestGateway, freshDatabase, auditEvents, tmpDir, type TestGateway } from './support/env.js';
import { generateKeyPem } from '../src/compliance/checkpoints.js';
import { verifyPack } from '../src/compliance/pack.js';
import type { Evidence } from '../src/compliance/evidence.js';
import { freePort } from '../src/util/net.js';

const CHROMIUM = process.env.SLUICE_CHROMIUM ?? '/usr/bin/chromium';

let t: TestGateway;
let db: { name: string; drop: () => Promise<void> };
let dir: string;
let browser: Browser;
let page: Page;
let base: string;
let keys: Record<'dana' | 'alice' | 'oldci' | 'sec', string>;
const keyId = (k: string) => k.split('_')[1]!;

const connect = (key: string) => queryAs(t, key, db.name, 'SELECT 1');

const call = async (key: string, method: string, p: string, body?: unknown) => {
  const r = await fetch(`${base}${p}`, { method, headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
  return { status: r.status, body: await r.json().catch(() => ({})) };
};

beforeAll(async () => {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing`);
  if (!fs.existsSync('dist/web/index.html')) throw new Error('build first: npm run build builds the web console');
  dir = tmpDir('review');
  fs.writeFileSync(path.join(dir, 'cp.pem'), generateKeyPem().privatePem);
  db = await freshDatabase('sluice_review', 'CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1);');
  const apiPort = await freePort();
  base = `http://127.0.0.1:${apiPort}`;
  t = await startTestGateway({
    config: `api: { listen: { host: 127.0.0.1, port: ${apiPort} }, roles: { admin: [dba], auditor: [security] } }
audit: { checkpoints: { key_file: ${path.join(dir, 'cp.pem')}, interval_s: 1 } }`,
  });
  keys = { dana: await t.key('human', ['dba'], { name: 'dana' }), alice: await t.key('human', ['analysts'], { name: 'alice' }), oldci: await t.key('service', ['app'], { name: 'old-ci' }), sec: await t.key('human', ['security'], { name: 'sam' }) };
  await connect(keys.alice);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await t?.stop();
  await db?.drop();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('access reviews', () => {
  it('need the auditor role to see and the admin role to run', async () => {
    expect((await call(keys.alice, 'GET', '/api/compliance/reviews')).status).toBe(403);
    expect((await call(keys.sec, 'GET', '/api/compliance/reviews')).status).toBe(200);
    const r = await call(keys.sec, 'POST', '/api/compliance/reviews', {});
    expect(r.status).toBe(403);
    expect(r.body.error).toBe('the admin role is required to run access reviews');
  });

  it('run in the console: every key with access, unused ones flagged; a revoke really revokes the key', async () => {
    await page.goto(`${base}/compliance`);
    await page.fill('input[type=password]', keys.dana);
    await page.click('button[type=submit]');
    await page.getByRole('link', { name: 'Compliance' }).click();
    await page.getByRole('button', { name: 'Start access review' }).click();
    const oldci = page.getByTestId(`review-item-key:${keyId(keys.oldci)}`);
    await oldci.waitFor();
    expect(await oldci.textContent()).toContain('unused');
    expect(await page.getByTestId(`review-item-key:${keyId(keys.alice)}`).textContent()).not.toContain('unused');
    await oldci.getByPlaceholder('reason').fill('never used; CI moved to OIDC');
    await oldci.getByRole('button', { name: 'Revoke' }).click();
    await oldci.getByTestId('decision').waitFor();
    expect(await oldci.getByTestId('decision').textContent()).toContain('revoked by human:dana — never used; CI moved to OIDC');
    const alice = page.getByTestId(`review-item-key:${keyId(keys.alice)}`);
    await alice.getByRole('button', { name: 'Confirm' }).click();
    await alice.getByTestId('decision').waitFor();
    expect(await page.getByTestId('review-summary').textContent()).toContain('2 of 4 decided');
    // Nobody reviews their own access: no buttons on dana's own row, and the API refuses it.
    expect(await page.getByTestId(`review-item-key:${keyId(keys.dana)}`).getByRole('button').count()).toBe(0);
    await page.screenshot({ path: path.join(process.env.SLUICE_SCREENSHOTS ?? dir, 'compliance-page.png'), fullPage: true });
    // The revoked key no longer logs in; the kept one does.
    await expect(connect(keys.oldci)).rejects.toThrow(/revoked/);
    await connect(keys.alice);
    const ev = await auditEvents(t, { type: 'access_review' });
    const decisions = ev.filter((e) => e.details?.event === 'decision').map((e) => [e.subject, e.details?.decision, e.details?.item_subject]);
    expect(decisions).toEqual(expect.arrayContaining([['human:dana', 'revoke', 'service:old-ci'], ['human:dana', 'confirm', 'human:alice']]));
    expect((await auditEvents(t, { type: 'key_revoked' })).map((e) => e.details?.key_id)).toContain(keyId(keys.oldci));
  });

  it('refuses a second decision on an item, and closes', async () => {
    const review = (await call(keys.dana, 'GET', '/api/compliance/reviews')).body.reviews[0];
    const own = await call(keys.dana, 'POST', `/api/compliance/reviews/${review.id}/items/${encodeURIComponent(`key:${keyId(keys.dana)}`)}`, { decision: 'confirm' });
    expect([own.status, own.body.error]).toEqual([403, 'you cannot review your own access: another reviewer decides this item']);
    const again = await call(keys.dana, 'POST', `/api/compliance/reviews/${review.id}/items/${encodeURIComponent(`key:${keyId(keys.alice)}`)}`, { decision: 'revoke' });
    expect(again.status).toBe(409);
    await connect(keys.alice);
    expect((await call(keys.dana, 'POST', `/api/compliance/reviews/${review.id}/close`, {})).body.review.status).toBe('closed');
    expect((await call(keys.dana, 'POST', `/api/compliance/reviews/${review.id}/close`, {})).status).toBe(409);
  });

  it('go into the evidence pack, which verifies', async () => {
    const today = new Date().toISOString().slice(0, 10);
    const r = await fetch(`${base}/api/compliance/evidence?from=${today}&to=${today}`, { headers: { authorization: `Bearer ${keys.sec}` } });
    const zip = new Uint8Array(await r.arrayBuffer());
    const v = verifyPack(zip);
    expect(v.problems).toEqual([]);
    const ev = JSON.parse(strFromU8(unzipSync(zip)['evidence.json']!)) as Evidence;
    const rev = ev.access_reviews[0]!;
    expect([rev.status, rev.items, rev.confirmed, rev.revoked, rev.undecided]).toEqual(['closed', 4, 1, 1, 2]);
    expect(rev.decisions.find((d) => d.decision === 'revoke')).toMatchObject({ subject: 'service:old-ci', reviewer: 'human:dana', reason: 'never used; CI moved to OIDC' });
    expect(ev.cc6_1_logical_access.keys.find((k) => k.name === 'old-ci')?.revoked_in_period).toBe(true);
    expect(ev.cc6_3_provisioning.key_changes.filter((k) => k.event === 'revoked').map((k) => k.key_id)).toEqual([keyId(keys.oldci)]);
  });
});
