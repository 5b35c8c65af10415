import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startTestGateway, freshDatabase, tmpDir, auditEvents, type TestGateway } from './support/env.js';
import { freePort } from '../src/util/net.js';
import { REVIEWED_WRITES_POLICY } from './support/policies.js';

/**
 * The console's first-hour fixes, checked in Debian's chromium with screenshots (written to $SLUICE_SHOTS or a temp
 * dir, named in the test output): the masked-values marker, the audit detail beside (or under) the table, executed
 * approvals leaving the pending list, "1 row", and the header and filter bar at 800 to 1400 px.
 */
const CHROMIUM = process.env.SLUICE_CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = process.env.SLUICE_SHOTS ?? tmpDir('shots');

let t: TestGateway;
let db: { name: string; drop: () => Promise<void> };
let browser: Browser;
let page: Page;
let base: string;
let alice: string;
let dana: string;

beforeAll(async () => {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: .ci/run installs Debian's chromium`);
  if (!fs.existsSync('dist/web/index.html')) throw new Error('build first: npm test builds the web console');
  const apiPort = await freePort();
  base = `http://127.0.0.1:${apiPort}`;
  db = await freshDatabase('sluice_layout', "CREATE TABLE customers (id int primary key, email text, note text); INSERT INTO customers SELECT g, 'person' || g || '@example.com', 'n' FROM generate_series(1, 3) g; CREATE TABLE orders (id int primary key, status text); INSERT INTO orders VALUES (1, 'new'), (2, 'new');");
  t = await startTestGateway({ policy: REVIEWED_WRITES_POLICY(['dba']), config: `api:\n  listen: { host: 127.0.0.1, port: ${apiPort} }\n  roles: { admin: [dba] }\napprovals: { poll_ms: 200 }` });
  alice = await t.key('human', ['analysts'], { name: 'alice' });
  dana = await t.key('human', ['dba'], { name: 'dana' });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
  page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(`${base}/audit`);
  await page.fill('input[type=password]', dana);
  await page.getByRole('button', { name: 'Sign in with token' }).click();
  await page.getByTestId('who').waitFor();
});
afterAll(async () => {
  await browser?.close();
  await t?.stop();
  await db?.drop();
});

const shot = async (name: string) => {
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: false });
  process.stdout.write(`screenshot ${file}\n`);
  return file;
};

/** Does the audit table need sideways scrolling inside its box (columns hidden off to the right)? */
const tableScrolls = () => page.evaluate(() => {
  const w = document.querySelector('.tablewrap')!;
  return w.scrollWidth > w.clientWidth + 1;
});

/** Nothing sticks out to the right of the viewport, and the page does not scroll sideways. */
async function fitsWidth(): Promise<{ overflow: number; offenders: string[] }> {
  return page.evaluate(() => {
    const w = document.documentElement.clientWidth;
    const offenders = [...document.querySelectorAll('header *, .filters *, .toolbar *')]
      .filter((el) => el.getBoundingClientRect().right > w + 1)
      .map((el) => `${el.tagName.toLowerCase()}.${(el as HTMLElement).className}:${Math.round(el.getBoundingClientRect().right)}`);
    return { overflow: document.documentElement.scrollWidth - w, offenders };
  });
}

describe('console layout and wording in chromium', () => {
  it('the masked-values marker is an inline SVG with the count, not an emoji that renders as an empty box', async () => {
    const c = new pg.Client(t.conn(alice, db.name));
    await c.connect();
    await c.query('SELECT id, email FROM customers ORDER BY id');
    await c.end();
    const row = page.getByTestId('audit-table').locator('tr', { hasText: 'SELECT id, email FROM customers' }).first();
    await row.waitFor({ timeout: 15_000 });
    const mark = row.getByTestId('masked-mark');
    expect(await mark.locator('svg path').count()).toBe(1);
    // The count and the breakdown are the audit event's own (what the gateway recorded as masked).
    const [event] = await auditEvents(t, { type: 'statement', subject: 'human:alice' });
    const masked = event!.masked!;
    const total = Object.values(masked).reduce((n, v) => n + v, 0);
    expect(masked.email).toBe(3);
    expect((await mark.textContent())?.trim()).toBe(String(total));
    expect(await mark.getAttribute('title')).toBe(`${total} values masked: ${Object.entries(masked).map(([k, v]) => `${k} ${v}`).join(', ')}`);
    const html = await page.getByTestId('audit-table').innerHTML();
    expect(html).not.toContain('🛡');
    const box = await mark.boundingBox();
    expect(box!.width).toBeGreaterThan(12);
    await mark.screenshot({ path: path.join(SHOTS, 'masked-mark.png') });
    await shot('audit-1400');
  });

  it('the audit detail does not crush the table: beside it from 1200 px, under it below', async () => {
    for (const width of [1400, 1100]) {
      await page.setViewportSize({ width, height: 900 });
      await page.getByTestId('audit-table').locator('tbody tr').first().click();
      await page.getByTestId('audit-detail').waitFor();
      const table = (await page.locator('.tablewrap').boundingBox())!;
      expect(await tableScrolls()).toBe(false);
      const detail = (await page.getByTestId('audit-detail').boundingBox())!;
      if (width >= 1200) {
        expect(detail.x).toBeGreaterThan(table.x + table.width - 1); // beside
        expect(table.width).toBeGreaterThan(width * 0.55);
      } else {
        expect(detail.y).toBeGreaterThan(table.y + table.height - 1); // under
        expect(table.width).toBeGreaterThan(width * 0.85);
      }
      expect((await fitsWidth()).overflow).toBeLessThanOrEqual(0);
      await shot(`audit-detail-${width}`);
      await page.getByTestId('audit-detail').getByRole('button', { name: 'close' }).click();
    }
  });

  it('the header and the filter bar fit at 800, 1100 and 1400 px', async () => {
    for (const width of [800, 1100, 1400]) {
      await page.setViewportSize({ width, height: 800 });
      await page.getByRole('link', { name: 'Audit' }).click();
      const fit = await fitsWidth();
      expect(fit.offenders).toEqual([]);
      expect(fit.overflow).toBeLessThanOrEqual(0);
      const header = (await page.locator('header').first().boundingBox())!;
      expect(header.height).toBeLessThan(110);
      expect(await tableScrolls()).toBe(false);
      await shot(`header-filters-${width}`);
    }
  });

  it('an executed approval leaves the pending list and says "1 row"', async () => {
    await page.setViewportSize({ width: 1400, height: 900 });
    await page.getByRole('link', { name: 'Approvals' }).click();
    await page.getByTestId('live').getByText('live').waitFor();
    const c = new pg.Client(t.conn(alice, db.name));
    await c.connect();
    const running = c.query("UPDATE orders SET status = 'shipped' WHERE id = 1");
    const card = page.locator('[data-testid^="approval-apr_"]').first();
    await card.waitFor({ timeout: 15_000 });
    expect(await page.getByTestId('pending-count').textContent()).toBe('1 pending');
    await card.getByRole('button', { name: 'Approve' }).click();
    expect((await running).rowCount).toBe(1);
    await c.end();
    const decided = page.getByTestId('decided').locator('[data-status="executed"]');
    await decided.waitFor({ timeout: 15_000 });
    expect(await decided.textContent()).toMatch(/ran: 1 row(?!s)/);
    expect(await page.getByTestId('pending-count').textContent()).toBe('0 pending');
    expect(await page.getByText('Nothing awaiting a decision.').isVisible()).toBe(true);
    await shot('approvals-executed');
  });
});
