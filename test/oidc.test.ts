import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import pg from 'pg';
import * as jose from 'jose';
import { startTestGateway, freshDatabase, auditEvents, run, type TestGateway } from './support/env.js';
import { startIdp, type TestIdp } from './support/oidc.js';

let idp: TestIdp;
let other: TestIdp;
let t: TestGateway;
let db: { name: string; drop: () => Promise<void> };

beforeAll(async () => {
  idp = await startIdp({
    'ci-deploy': { groups: ['app'], email: 'deploy@ci.example' },
    'analytics-job': { groups: ['analysts'] },
    'report-agent': { groups: ['analysts'], sluice_kind: 'agent', act: { sub: 'alice@example.com' } },
  });
  other = await startIdp({ 'ci-deploy': { groups: ['dba'] } });
  db = await freshDatabase('sluice_oidc', 'CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);');
  t = await startTestGateway({
    config: `identity:
  oidc:
    - issuer: ${idp.issuer}
      audience: sluice
      groups_claim: groups
      kind: service
      kind_claim: sluice_kind
`,
  });
});
afterAll(async () => {
  await t?.stop();
  await idp?.close();
  await other?.close();
  await db?.drop();
});

const connect = async (password: string) => {
  const c = new pg.Client(t.conn(password, db.name));
  await c.connect();
  return c;
};

describe('OIDC tokens from a real provider (oidc-provider)', () => {
  it('accepts a valid access token and maps subject, kind and groups', async () => {
    const token = await idp.token('analytics-job');
    const c = await connect(token);
    try {
      expect((await c.query('SELECT count(*)::int AS n FROM t')).rows[0].n).toBe(2);
      const err = await c.query('INSERT INTO t VALUES (3)').catch((e) => e);
      expect(err.code).toBe('42501');
    } finally {
      await c.end();
    }
    const events = await auditEvents(t, { subject: 'analytics-job' });
    expect(events.find((e) => e.type === 'session_start')).toMatchObject({ identity_kind: 'service', groups: ['analysts'], auth_method: 'oidc' });
  });

  it('takes the identity kind and the person an agent acts for from the token', async () => {
    const c = await connect(await idp.token('report-agent'));
    await c.query('SELECT 1');
    await c.end();
    const events = await auditEvents(t, { subject: 'report-agent', type: 'statement' });
    expect(events[0]).toMatchObject({ identity_kind: 'agent', acting_for: 'alice@example.com' });
  });

  it('refuses tokens from an untrusted issuer even when the subject exists', async () => {
    const err = await connect(await other.token('ci-deploy')).catch((e) => e);
    expect(err.code).toBe('28P01');
    expect(err.message).toContain(`token issuer "${other.issuer}" is not trusted`);
  });

  it('refuses a token whose signature does not verify (forged with another key)', async () => {
    const { privateKey } = await jose.generateKeyPair('RS256');
    const forged = await new jose.SignJWT({ groups: ['dba'] }).setProtectedHeader({ alg: 'RS256', kid: 'test-key' }).setIssuer(idp.issuer).setSubject('mallory').setAudience('sluice').setExpirationTime('5m').sign(privateKey);
    const err = await connect(forged).catch((e) => e);
    expect(err.code).toBe('28P01');
    expect(err.message).toContain('signature does not verify');
  });

  it('refuses expired tokens and tokens for another audience with the reason', async () => {
    const real = await idp.token('ci-deploy');
    const header = jose.decodeProtectedHeader(real);
    // Re-sign is impossible without the provider key, so ask the provider for a short-lived token instead.
    const shortIdp = await startIdp({ quick: { groups: ['app'] } }, { ttl: 1 });
    const t2 = await startTestGateway({ config: `identity:\n  oidc:\n    - { issuer: ${shortIdp.issuer}, audience: sluice, clock_tolerance_s: 0 }\n` });
    const wrongAud = await startTestGateway({ config: `identity:\n  oidc:\n    - { issuer: ${idp.issuer}, audience: some-other-api }\n` });
    try {
      const quick = await shortIdp.token('quick');
      await new Promise((r) => setTimeout(r, 2100));
      const c = new pg.Client(t2.conn(quick, db.name));
      const expired = await c.connect().catch((e) => e);
      expect(expired.code).toBe('28P01');
      expect(expired.message).toMatch(/token expired at \d{4}-/);
      const c2 = new pg.Client(wrongAud.conn(real, db.name));
      const aud = await c2.connect().catch((e) => e);
      expect(aud.message).toContain('token audience "sluice" is not accepted');
      expect(header.alg).toBe('RS256');
      const failures = await auditEvents(t2, { type: 'auth_failure' });
      expect(failures[0]?.reason).toMatch(/token expired/);
    } finally {
      await t2.stop();
      await wrongAud.stop();
      await shortIdp.close();
    }
  });

  it('works with psql presenting the token as its password', async () => {
    const token = await idp.token('ci-deploy');
    const r = await run('psql', ['-X', '-At', `host=127.0.0.1 port=${t.port} dbname=${db.name} user=ci sslmode=require`, '-c', 'SELECT sum(id) FROM t'], { env: { PGPASSWORD: token } });
    expect(r.stdout.trim()).toBe('3');
  });
});
