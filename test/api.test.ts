import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import pg from 'pg';
import { startTestGateway, freshDatabase, type TestGateway } from './support/env.js';
import { startIdp, type TestIdp } from './support/oidc.js';

let t: TestGateway;
let idp: TestIdp;
let db: { name: string; drop: () => Promise<void> };
let analyst: string;
let auditor: string;
let adminKey: string;
let base: string;

beforeAll(async () => {
  idp = await startIdp({ 'sec-team': { groups: ['security'] } });
  db = await freshDatabase('sluice_api', "CREATE TABLE customers (id int, email text); INSERT INTO customers VALUES (1, 'ada@example.com');");
  t = await startTestGateway({
    config: `api: { listen: { host: 127.0.0.1, port: 0 }, roles: { admin: [dba], auditor: [security] } }
identity:
  oidc:
    - { issuer: ${idp.issuer}, audience: sluice }
`,
  });
  base = `http://127.0.0.1:${t.gw.apiPort}`;
  analyst = await t.key('human', ['analysts'], { name: 'ana' });
  adminKey = await t.key('human', ['dba'], { name: 'root' });
  auditor = await idp.token('sec-team');
});
afterAll(async () => {
  await t?.stop();
  await idp?.close();
  await db?.drop();
});

const get = async (path: string, token?: string, method = 'GET') => {
  const res = await fetch(base + path, { method, headers: token ? { authorization: `Bearer ${token}` } : {} });
  const type = res.headers.get('content-type') ?? '';
  return { status: res.status, body: type.includes('json') ? await res.json() : await res.text() };
};

describe('HTTP API', () => {
  it('health and Prometheus metrics reflect what went through the gateway', async () => {
    const c = new pg.Client(t.conn(analyst, db.name));
    await c.connect();
    await c.query('SELECT email FROM customers');
    await c.query('DELETE FROM customers').catch(() => {});
    expect((await get('/healthz')).body).toMatchObject({ status: 'ok', audit: { healthy: true, status: 'ok', store: 'ok', backlog: expect.any(Number), stages: { buffered: expect.any(Number), spooled: expect.any(Number), in_flight: expect.any(Number) }, spool_bytes: expect.any(Number) } });
    const metrics = (await get('/metrics')).body as string;
    expect(metrics).toMatch(/^sluice_connections 1$/m);
    expect(metrics).toMatch(/^sluice_statements_total\{decision="allow"\} [1-9]/m);
    expect(metrics).toMatch(/^sluice_statements_total\{decision="deny"\} [1-9]/m);
    expect(metrics).toMatch(/^sluice_masked_values_total\{kind="email"\} [1-9]/m);
    expect(metrics).toMatch(/^sluice_statement_duration_seconds_count [1-9]/m);
    await c.end();
  });

  it('requires a valid bearer token and enforces roles from groups', async () => {
    expect((await get('/api/audit')).status).toBe(401);
    expect((await get('/api/audit', 'not-a-token')).body.error).toMatch(/neither a JWT nor a Sluice key/);
    expect((await get('/api/audit', analyst)).status).toBe(403);
    const me = await get('/api/me', auditor);
    expect(me.body).toMatchObject({ identity: { subject: 'sec-team', method: 'oidc' }, roles: expect.arrayContaining(['user', 'auditor']) });
  });

  it('auditors list and filter audit events and verify the chain', async () => {
    const r = await get(`/api/audit?subject=human:ana&decision=deny&table=customers`, auditor);
    expect(r.status).toBe(200);
    expect(r.body.events.map((e: { sql: string }) => e.sql)).toEqual(['DELETE FROM customers']);
    expect((await get('/api/audit?since=yesterday', auditor)).status).toBe(400);
    const v = await get('/api/audit/verify', auditor);
    expect(v.body.ok).toBe(true);
  });

  it('the sensitive-data report: your own, or anyone\'s for auditors', async () => {
    const own = await get('/api/sensitive', analyst);
    expect(own.body).toMatchObject({ subject: 'human:ana', masked: { email: 1 }, masked_tables: ['customers'] });
    expect((await get('/api/sensitive?subject=human:root', analyst)).status).toBe(403);
    expect((await get('/api/sensitive?subject=human:ana', auditor)).body.masked.email).toBe(1);
  });

  it('lists live sessions and lets an admin terminate one', async () => {
    const c = new pg.Client({ ...t.conn(analyst, db.name), application_name: 'victim' });
    const errors: Error[] = [];
    c.on('error', (e) => errors.push(e));
    await c.connect();
    const list = await get('/api/sessions', auditor);
    const s = list.body.sessions.find((x: { application_name: string }) => x.application_name === 'victim');
    expect(s).toMatchObject({ subject: 'human:ana', kind: 'human', database: db.name, transaction: 'I' });
    expect((await get(`/api/sessions/${s.id}`, auditor, 'DELETE')).status).toBe(403);
    expect((await get(`/api/sessions/${s.id}`, adminKey, 'DELETE')).body).toEqual({ terminated: s.id });
    for (let i = 0; i < 50 && errors.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(errors[0]?.message).toContain('terminated by human:root');
    expect((await get(`/api/sessions/${s.id}`, adminKey, 'DELETE')).status).toBe(404);
  });

  it('exports audit events as JSONL and CSV', async () => {
    const jsonl = await fetch(`${base}/api/audit/export?subject=human:ana&type=statement`, { headers: { authorization: `Bearer ${auditor}` } });
    expect(jsonl.headers.get('content-type')).toContain('application/x-ndjson');
    const lines = (await jsonl.text()).trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((e) => e.sql)).toEqual(expect.arrayContaining(['SELECT email FROM customers', 'DELETE FROM customers']));
    const csv = await (await fetch(`${base}/api/audit/export?subject=human:ana&type=statement&format=csv`, { headers: { authorization: `Bearer ${auditor}` } })).text();
    const rows = csv.trim().split('\r\n');
    expect(rows[0]).toBe('ts,type,subject,identity_kind,acting_for,database,client_addr,decision,rule,sql,tables,rows,duration_ms,masked,error,chain_id,seq,hash');
    expect(rows.some((r) => r.includes(',deny,destructive-needs-dba,DELETE FROM customers,"[""customers""]",'))).toBe(true);
    expect((await get('/api/audit/export?format=xml', auditor)).status).toBe(400);
  });

  it('shows the policy and answers "would this be allowed?"', async () => {
    const policy = await get('/api/policy', analyst);
    expect(policy.body.rules.map((r: { name: string }) => r.name)).toContain('analysts-read');
    const ask = async (token: string, body: unknown) =>
      (await fetch(`${base}/api/policy/test`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) })).json() as Promise<any>;
    expect(await ask(analyst, { sql: 'SELECT * FROM customers' })).toMatchObject({ decision: 'allow', rule: 'analysts-read' });
    expect(await ask(analyst, { sql: 'TRUNCATE customers' })).toMatchObject({ decision: 'deny', rule: 'destructive-needs-dba', statements: [{ command: 'TRUNCATE', class: 'write' }] });
    expect(await ask(analyst, { sql: 'SELEC 1' })).toMatchObject({ decision: 'deny', rule: 'unparsable', parse_error: expect.stringMatching(/syntax error/) });
    expect(await ask(analyst, { sql: 'TRUNCATE customers', identity: { subject: 'x', groups: ['dba'] } })).toEqual({ error: 'testing for another identity needs the admin role' });
    expect(await ask(adminKey, { sql: 'TRUNCATE customers', identity: { subject: 'x', groups: ['dba'] } })).toMatchObject({ decision: 'allow', rule: 'dba' });
  });

  it('serves an OpenAPI document', async () => {
    const doc = await get('/api/openapi.json');
    expect(doc.body.openapi).toBe('3.1.0');
    expect(Object.keys(doc.body.paths)).toEqual(expect.arrayContaining(['/api/audit', '/api/sensitive', '/api/sessions/{id}', '/metrics']));
  });
});
