import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import pg from 'pg';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startTestGateway, freshDatabase, type TestGateway } from './support/env.js';
import { startIdp, type TestIdp } from './support/oidc.js';
import { freePort } from '../src/util/net.js';
import { REVIEWED_WRITES_POLICY } from './support/policies.js';

const CHROMIUM = process.env.SLUICE_CHROMIUM ?? '/usr/bin/chromium';

const POLICY = REVIEWED_WRITES_POLICY(['dba']);

let t: TestGateway;
let idp: TestIdp;
let db: { name: string; drop: () => Promise<void> };
let browser: Browser;
let page: Page;
let base: string;
let alice: string;

beforeAll(async () => {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: .ci/run installs Debian's chromium (apt-get install chromium)`);
  if (!fs.existsSync('dist/web/index.html')) throw new Error('build first: npm test builds the web console');
  const apiPort = await freePort();
  base = `http://127.0.0.1:${apiPort}`;
  idp = await startIdp({}, { web: { client_id: 'sluice-console', redirect_uris: [`${base}/auth/callback`], accounts: { dana: { name: 'Dana DBA', email: 'dana@example.com', groups: ['dba'] }, eve: { name: 'Eve', groups: [] } } } });
  db = await freshDatabase('sluice_web', "CREATE TABLE orders (id int primary key, status text); INSERT INTO orders SELECT g, 'new' FROM generate_series(1, 5) g;");
  t = await startTestGateway({
    policy: POLICY,
    config: `api:
  listen: { host: 127.0.0.1, port: ${apiPort} }
  roles: { admin: [dba] }
  web: { oidc: { issuer: ${idp.issuer}, client_id: sluice-console } }
approvals: { poll_ms: 200 }`,
  });
  alice = await t.key('human', ['analysts'], { name: 'alice' });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
  page = await browser.newPage();
});
afterAll(async () => {
  await browser?.close();
  await t?.stop();
  await idp?.close();
  await db?.drop();
});

async function signIn(p: Page, login: string) {
  await p.goto(`${base}/audit`);
  await p.getByText(/Sign in with 127\.0\.0\.1/).click();
  await p.fill('input[name=login]', login);
  await p.fill('input[name=password]', 'any');
  await p.click('button[type=submit]');
  await p.getByRole('button', { name: 'Continue' }).click();
}

describe('web console in Chromium', () => {
  it('signs in with OIDC (code + PKCE) and shows a statement made through the gateway', async () => {
    await signIn(page, 'dana');
    await page.waitForURL(`${base}/audit`);
    expect(await page.getByTestId('who').textContent()).toContain('Dana DBA');
    expect(await page.getByTestId('who').textContent()).toContain('admin');
    const c = new pg.Client(t.conn(alice, db.name));
    await c.connect();
    await c.query("SELECT id, 'web-marker-7731' AS marker FROM orders WHERE id = 1");
    // The audit view refreshes on its own; the statement shows up with its identity.
    const row = page.getByTestId('audit-table').locator('tr', { hasText: 'web-marker-7731' });
    await row.first().waitFor({ timeout: 15_000 });
    await row.first().click();
    const detail = await page.getByTestId('audit-detail').textContent();
    expect(detail).toContain('analysts-read');
    expect(detail).toContain('orders');
    await page.getByTestId('chain').getByText(/hash chain intact/).waitFor({ timeout: 10_000 });
    // Live sessions: alice is connected now.
    await page.getByRole('link', { name: 'Live sessions' }).click();
    await page.getByTestId('sessions-table').locator('tr', { hasText: db.name }).first().waitFor({ timeout: 10_000 });
    await c.end();
  });

  it('a held statement appears live in the approvals inbox; approving it lets the client complete', async () => {
    await page.getByRole('link', { name: 'Approvals' }).click();
    await page.getByTestId('live').getByText('live').waitFor({ timeout: 10_000 });
    const c = new pg.Client(t.conn(alice, db.name));
    await c.connect();
    const running = c.query("UPDATE orders SET status = 'shipped' WHERE id <= 3");
    // No reload: the request arrives over server-sent events.
    const card = page.locator('article[data-status]', { hasText: "UPDATE orders SET status = 'shipped'" });
    await card.waitFor({ timeout: 15_000 }).catch(async (e) => {
      await page.screenshot({ path: '/tmp/web-fail.png' });
      throw e;
    });
    await card.getByTestId('preview').getByText(/would affect 3 rows/).waitFor({ timeout: 15_000 });
    await card.getByTestId('reason').fill('release 42');
    await card.getByRole('button', { name: 'Approve' }).click();
    const r = await running;
    expect(r.rowCount).toBe(3);
    await page.locator('article[data-status="executed"]', { hasText: "UPDATE orders SET status = 'shipped'" }).waitFor({ timeout: 15_000 });
    await c.end();
  });

  it('a grant approved in the console is revoked from it: the next statement needs approval again', async () => {
    const asAlice = (path: string, body: unknown) => fetch(`${base}${path}`, { method: 'POST', headers: { authorization: `Bearer ${alice}`, 'content-type': 'application/json' }, body: JSON.stringify(body) }).then((r) => r.json() as Promise<any>);
    const decision = async () => (await asAlice('/api/policy/test', { sql: "UPDATE orders SET status = 'x' WHERE id = 5", database: db.name })).decision as string;
    const g = (await asAlice('/api/grants', { database: db.name, role: 'write', duration: '1h', reason: 'console revoke test' })).approval;
    const card = page.getByTestId(`approval-${g.id}`);
    await card.waitFor({ timeout: 15_000 });
    await card.getByRole('button', { name: 'Approve' }).click();
    await page.locator(`article[data-testid="approval-${g.id}"][data-status="approved"]`).waitFor({ timeout: 15_000 });
    expect(await decision()).toBe('allow');
    await card.getByTestId('revoke-reason').fill('no longer needed');
    await card.getByTestId('revoke').click();
    await page.locator(`article[data-testid="approval-${g.id}"][data-status="revoked"]`).waitFor({ timeout: 15_000 });
    expect(await card.getByTestId('revoked').textContent()).toContain('no longer needed');
    expect(await decision()).toBe('require_approval');
  });

  it('the policy tester answers for the signed-in identity; API calls without the CSRF header are refused', async () => {
    await page.getByRole('link', { name: 'Policy' }).click();
    await page.getByTestId('test-sql').fill('DROP TABLE orders');
    await page.getByRole('button', { name: 'Test' }).click();
    expect(await page.getByTestId('test-result').textContent()).toMatch(/allow by rule dba/);
    const status = await page.evaluate(async () => (await fetch('/api/approvals/x/approve', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })).status);
    expect(status).toBe(403);
  });

  it('sign-in only ever returns to a path of the console (no open redirect)', async () => {
    for (const ret of ['//evil.example', '/\\evil.example', 'https://evil.example']) {
      const r = await fetch(`${base}/auth/login?return=${encodeURIComponent(ret)}`, { redirect: 'manual' });
      expect(r.status).toBe(302);
      expect(r.headers.get('location')).toMatch(new RegExp(`^${idp.issuer}/`));
      const flow = /sluice_auth=([^;]+)/.exec(r.headers.get('set-cookie') ?? '')![1]!;
      expect(JSON.parse(Buffer.from(flow.split('.')[0]!, 'base64url').toString()).ret).toBe('/');
    }
  });

  it('a user without roles sees only approvals and policy; signing out ends the session', async () => {
    const p2 = await browser.newPage();
    await signIn(p2, 'eve');
    await p2.getByRole('heading', { name: 'Approvals' }).waitFor();
    expect(await p2.getByRole('link', { name: 'Audit' }).count()).toBe(0);
    const audit = await p2.evaluate(async () => (await fetch('/api/audit')).status);
    expect(audit).toBe(403);
    await p2.getByRole('button', { name: 'Sign out' }).click();
    await p2.getByText(/Sign in with 127/).waitFor();
    expect(await p2.evaluate(async () => (await fetch('/api/me')).status)).toBe(401);
    await p2.close();
  });
});
