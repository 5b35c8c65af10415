import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import mysql from 'mysql2/promise';
import { startTestGateway, freshDatabase, auditEvents, mysqlEngine, tmpDir, type TestGateway } from './support/env.js';

/** Authentication throttling (issue #14): online guessing of keys stops; the right key does not slip in after. */

let db: { name: string; drop: () => Promise<void> };
beforeAll(async () => {
  db = await freshDatabase('sluice_throttle', 'CREATE TABLE t (id int); INSERT INTO t VALUES (1);');
});
afterAll(async () => {
  await db?.drop();
});

/** A key with the same id and a wrong secret of the right shape. */
const wrongSecret = (key: string, i: number) => `${key.slice(0, 'slk_'.length + 16 + 1)}${String(i).padStart(43, 'x')}`;
const randomKey = (i: number) => `slk_${i.toString(16).padStart(16, '0')}_${'y'.repeat(43)}`;

async function pgLogin(t: TestGateway, password: string): Promise<{ ok: true } | { ok: false; code?: string; message: string }> {
  const c = new pg.Client(t.conn(password, db.name));
  try {
    await c.connect();
    await c.query('SELECT 1');
    return { ok: true };
  } catch (e) {
    return { ok: false, code: (e as { code?: string }).code, message: (e as Error).message };
  } finally {
    await c.end().catch(() => {});
  }
}

describe('per key id', () => {
  let t: TestGateway;
  beforeAll(async () => {
    // A long first lockout (so the test does not race it) and a source limit out of the way.
    t = await startTestGateway({
      config: `api: { listen: { host: 127.0.0.1, port: 0 } }
${mysqlEngine()}
identity: { throttle: { per_key: { max_failures: 5, base_delay_ms: 20000 }, per_source: { max_failures: 100000 } } }`,
    });
  });
  afterAll(async () => {
    await t?.stop();
  });

  it('PostgreSQL wire: after 50 wrong secrets for a key, the right one is refused at once (throttled), audited and counted', async () => {
    const key = await t.key('human', ['analysts'], { name: 'victim' });
    const keyId = key.slice(4, 20);
    for (let i = 0; i < 50; i++) {
      const r = await pgLogin(t, wrongSecret(key, i));
      expect(r).toMatchObject({ ok: false, code: '28P01' });
    }
    const right = await pgLogin(t, key);
    expect(right).toMatchObject({ ok: false, code: '28P01' });
    expect((right as { message: string }).message).toContain(`throttled: too many failed sign-ins with Sluice key ${keyId}`);
    // Only the first five were checked; the rest were refused unchecked.
    const failures = await auditEvents(t, { type: 'auth_failure' });
    expect(failures.filter((e) => e.reason === 'unknown or invalid Sluice key').length).toBe(5);
    const throttled = failures.filter((e) => e.reason === 'throttled');
    expect(throttled.length).toBe(46);
    expect(throttled[0]!.details).toMatchObject({ scope: 'key' });
    expect((await auditEvents(t, { type: 'session_start' })).length).toBe(0);
    const metrics = await (await fetch(`http://127.0.0.1:${t.gw.apiPort}/metrics`)).text();
    expect(metrics).toMatch(/^sluice_auth_throttled_total 46$/m);
    // Another key from the same address is not affected.
    expect(await pgLogin(t, await t.key('human', ['analysts'], { name: 'bystander' }))).toEqual({ ok: true });
  });

  it('HTTP API: the same backoff, answered 429 with Retry-After', async () => {
    const key = await t.key('human', ['analysts'], { name: 'api-victim' });
    const me = (password: string) => fetch(`http://127.0.0.1:${t.gw.apiPort}/api/me`, { headers: { authorization: `Bearer ${password}` } });
    for (let i = 0; i < 5; i++) expect((await me(wrongSecret(key, i))).status).toBe(401);
    const right = await me(key);
    expect(right.status).toBe(429);
    expect(Number(right.headers.get('retry-after'))).toBeGreaterThan(10);
    expect(((await right.json()) as { error: string }).error).toContain('throttled');
    expect((await auditEvents(t, { type: 'auth_failure' })).some((e) => e.reason === 'throttled' && e.application_name === 'api')).toBe(true);
  });

  it('MySQL wire: the same backoff', async () => {
    const key = await t.key('human', ['analysts'], { name: 'my-victim' });
    const connect = (password: string) => mysql.createConnection({ host: '127.0.0.1', port: t.gw.mysqlPort!, user: 'x', password, enableCleartextPlugin: true } as mysql.ConnectionOptions);
    for (let i = 0; i < 5; i++) await expect(connect(wrongSecret(key, i))).rejects.toMatchObject({ errno: 1045, message: expect.stringContaining('unknown or invalid') });
    await expect(connect(key)).rejects.toMatchObject({ errno: 1045, message: expect.stringContaining('throttled') });
  });

  it('a valid key with surrounding whitespace is the same key (documented: credentials are trimmed)', async () => {
    const key = await t.key('human', ['analysts'], { name: 'spaces' });
    expect(await pgLogin(t, `${key}  \n`)).toEqual({ ok: true });
  });
});

describe('per source address', () => {
  let t: TestGateway;
  beforeAll(async () => {
    t = await startTestGateway({ config: 'identity: { throttle: { per_source: { max_failures: 10, base_delay_ms: 1500, max_delay_s: 2 } } }' });
  });
  afterAll(async () => {
    await t?.stop();
  });

  it('spraying made-up keys locks the address out for a while, the right key included; then it works again', async () => {
    const key = await t.key('human', ['analysts'], { name: 'good' });
    for (let i = 0; i < 50; i++) expect(await pgLogin(t, randomKey(i))).toMatchObject({ ok: false, code: '28P01' });
    const right = await pgLogin(t, key);
    expect(right).toMatchObject({ ok: false, code: '28P01', message: expect.stringContaining('throttled: too many failed sign-ins from 127.0.0.1') });
    // The lockout is a delay, not a ban: it ends (here after at most 2 s).
    await new Promise((r) => setTimeout(r, 2100));
    expect(await pgLogin(t, key)).toEqual({ ok: true });
  });
});

describe('identity.throttle in the config', () => {
  it('defaults apply when it is left out, and the schema refuses nonsense with the place it is at', async () => {
    const { loadConfig } = await import('../src/config.js');
    const { THROTTLE_DEFAULTS } = await import('../src/identity/throttle.js');
    const dir = tmpDir('throttle-cfg');
    const file = path.join(dir, 'sluice.yaml');
    fs.writeFileSync(file, 'upstream: { host: 127.0.0.1, port: 5432, user: postgres }\npolicy: policy.yaml\n');
    expect(loadConfig(file, { secrets: false }).identity.throttle).toEqual(THROTTLE_DEFAULTS);
    fs.writeFileSync(file, 'upstream: { host: 127.0.0.1, port: 5432, user: postgres }\npolicy: policy.yaml\nidentity:\n  throttle: { per_key: { max_failures: 0 } }\n');
    expect(() => loadConfig(file, { secrets: false })).toThrow(/sluice\.yaml:4.*max_failures/s);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
