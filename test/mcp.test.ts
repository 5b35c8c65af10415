import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { startTestGateway, freshDatabase, admin, run, type TestGateway } from './support/env.js';
import { policyYaml, rules } from './support/policies.js';

const POLICY = policyYaml({
  default: 'deny',
  rules: [
    { name: 'no-deletes-for-agents', match: { kinds: ['agent'], commands: ['DELETE'] }, action: 'deny', reason: 'agents never delete' },
    { name: 'agent-writes-reviewed', match: { kinds: ['agent'], statements: ['write'] }, action: 'require_approval' },
    { name: 'agents-read', match: { kinds: ['agent'], statements: ['read'] }, action: 'allow' },
    rules.dba(),
  ],
  masking: { columns: [{ column: 'customers.ssn', masker: 'partial' }] },
});

const CLI = path.resolve('bin/sluice.js');
let t: TestGateway;
let db: { name: string; drop: () => Promise<void> };
let agent: string;
let dana: string;
let base: string;

beforeAll(async () => {
  if (!fs.existsSync('dist/cli/main.js')) throw new Error('build first: npm test runs tsc before vitest');
  db = await freshDatabase('sluice_mcp', "CREATE TABLE customers (id int primary key, name text, email text, ssn text, notes text); INSERT INTO customers VALUES (1, 'Ada', 'ada@example.com', '123-45-6789', 'call +1 415 555 0100'), (2, 'Bob', 'bob@example.org', '987-65-4321', 'vip');");
  t = await startTestGateway({ policy: POLICY, config: `api: { listen: { host: 127.0.0.1, port: 0 }, roles: { approver: [dba] } }\napprovals: { poll_ms: 200, preview: { enabled: false } }` });
  base = `http://127.0.0.1:${t.gw.apiPort}`;
  agent = await t.key('agent', ['bots'], { name: 'report-bot', actingFor: 'alice@example.com' });
  dana = await t.key('human', ['dba'], { name: 'dana' });
});
afterAll(async () => {
  await t?.stop();
  await db?.drop();
});

async function httpClient(token?: string): Promise<Client> {
  const client = new Client({ name: 'test-agent', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL('/mcp', base), token ? { requestInit: { headers: { authorization: `Bearer ${token}` } } } : undefined);
  await client.connect(transport);
  return client;
}

type ToolResult = { isError?: boolean; content: { type: string; text: string }[]; structuredContent?: any };
const call = async (c: Client, name: string, args: Record<string, unknown>) => (await c.callTool({ name, arguments: args })) as ToolResult;

describe('MCP over streamable HTTP', () => {
  it('refuses to serve without a valid token', async () => {
    await expect(httpClient()).rejects.toThrow(/401|Bearer/);
    await expect(httpClient('slk_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA')).rejects.toThrow();
  });

  it('lists tools and databases, describes the schema with sensitive columns flagged', async () => {
    const c = await httpClient(agent);
    const tools = (await c.listTools()).tools.map((x) => x.name).sort();
    expect(tools).toEqual(['describe_schema', 'explain', 'list_databases', 'query', 'wait_for_approval']);
    const dbs = await call(c, 'list_databases', { intent: 'find the customer database' });
    expect(dbs.structuredContent.databases).toContain(db.name);
    const schema = await call(c, 'describe_schema', { database: db.name, schema: 'public' });
    const customers = schema.structuredContent.tables.find((x: { name: string }) => x.name === 'customers');
    const col = (n: string) => customers.columns.find((x: { name: string }) => x.name === n);
    expect(col('ssn').sensitive).toMatch(/^masked for you \(partial, customers.ssn\)/);
    expect(col('email').sensitive).toMatch(/likely sensitive by name; values are scanned/);
    expect(col('name').sensitive).toBeUndefined();
    await c.close();
  });

  it('query: allowed reads come back masked; denials are tool errors; everything is audited with agent, principal and intent', async () => {
    const c = await httpClient(agent);
    const r = await call(c, 'query', { database: db.name, sql: 'SELECT id, email, ssn, notes FROM customers ORDER BY id', intent: 'monthly report' });
    expect(r.isError).toBeFalsy();
    const rows = r.structuredContent.rows as string[][];
    expect(r.structuredContent.columns).toEqual(['id', 'email', 'ssn', 'notes']);
    expect(rows[0]![0]).toBe('1');
    expect(rows[0]![1]).not.toContain('ada@example.com');
    expect(rows[0]![2]).toBe('***-**-6789');
    expect(rows[0]![3]).not.toContain('415 555 0100');
    expect(rows[1]![3]).toBe('vip');
    expect(r.structuredContent.masked).toMatchObject({ email: 2, 'customers.ssn': 2, phone: 1 });
    const denied = await call(c, 'query', { database: db.name, sql: 'DELETE FROM customers WHERE id = 2', intent: 'cleanup' });
    expect(denied.isError).toBe(true);
    expect(denied.content[0]!.text).toContain('no-deletes-for-agents');
    expect(denied.content[0]!.text).toContain('SQLSTATE 42501');
    const bad = await call(c, 'query', { database: db.name, sql: 'SELEC 1' });
    expect(bad.isError).toBe(true);
    expect(bad.content[0]!.text).toMatch(/syntax error/);
    const plan = await call(c, 'explain', { database: db.name, sql: 'SELECT * FROM customers WHERE id = 1' });
    expect(JSON.stringify(plan.structuredContent.plan)).toContain('"Relation Name":"customers"');
    expect((await call(c, 'explain', { database: db.name, sql: 'DELETE FROM customers' })).isError).toBe(true);
    await c.close();
    await t.gw.governor.audit.flush();
    const ev = await admin((x) => x.query(`SELECT type, decision, payload FROM audit_events WHERE (type = 'statement' OR type = 'tool_call') AND subject LIKE '%report-bot%' ORDER BY seq`), t.storeDb);
    const events = ev.rows.map((x) => JSON.parse(x.payload));
    const read = events.find((e) => e.sql?.startsWith('SELECT id, email'));
    expect(read).toMatchObject({ protocol: 'mcp', identity_kind: 'agent', acting_for: 'alice@example.com', decision: 'allow', rows: 2, details: { tool: 'query', intent: 'monthly report' }, masked: { email: 2 } });
    expect(events.find((e) => e.sql === 'DELETE FROM customers WHERE id = 2')).toMatchObject({ decision: 'deny', rule: 'no-deletes-for-agents', details: { intent: 'cleanup' } });
    expect(events.some((e) => e.type === 'tool_call' && e.details.tool === 'list_databases' && e.details.intent === 'find the customer database')).toBe(true);
  });

  it('held writes return an approval id; wait_for_approval resumes and runs it once approved', async () => {
    const c = await httpClient(agent);
    const sql = "UPDATE customers SET notes = 'contacted' WHERE id = 2";
    const held = await call(c, 'query', { database: db.name, sql, intent: 'mark contacted' });
    expect(held.structuredContent).toMatchObject({ status: 'pending_approval', approval_id: expect.stringMatching(/^apr_/) });
    const id = held.structuredContent.approval_id as string;
    // Still pending after a short wait.
    const still = await call(c, 'wait_for_approval', { approval_id: id, timeout_s: 1 });
    expect(still.structuredContent.status).toBe('pending_approval');
    expect((await admin((x) => x.query('SELECT notes FROM customers WHERE id = 2'), db.name)).rows[0].notes).toBe('vip');
    const waiting = call(c, 'wait_for_approval', { approval_id: id, timeout_s: 30 });
    await new Promise((r) => setTimeout(r, 200));
    const approved = await fetch(`${base}/api/approvals/${id}/approve`, { method: 'POST', headers: { authorization: `Bearer ${dana}`, 'content-type': 'application/json' }, body: '{}' });
    expect(approved.status).toBe(200);
    const done = await waiting;
    expect(done.structuredContent).toMatchObject({ status: 'ok', command: 'UPDATE', row_count: 1, approval_id: id });
    expect((await admin((x) => x.query('SELECT notes FROM customers WHERE id = 2'), db.name)).rows[0].notes).toBe('contacted');
    await t.gw.governor.audit.flush();
    const trail = (await admin((x) => x.query(`SELECT type, payload FROM audit_events WHERE payload::jsonb->>'approval_id' = $1 ORDER BY seq`, [id]), t.storeDb)).rows.map((r) => JSON.parse(r.payload));
    expect(trail.find((e) => e.type === 'tool_call')).toMatchObject({ acting_for: 'alice@example.com', details: { tool: 'query', intent: 'mark contacted', held: true } });
    expect(trail.find((e) => e.type === 'statement')).toMatchObject({ decision: 'allow', rows: 1, protocol: 'mcp' });
    // Single use.
    const again = await call(c, 'wait_for_approval', { approval_id: id, timeout_s: 1 });
    expect(again.isError).toBe(true);
    expect(again.content[0]!.text).toMatch(/already used/);
    // Denied: the reviewer and reason come back.
    const held2 = await call(c, 'query', { database: db.name, sql: "UPDATE customers SET notes = 'x' WHERE id = 1" });
    const id2 = held2.structuredContent.approval_id as string;
    await fetch(`${base}/api/approvals/${id2}/deny`, { method: 'POST', headers: { authorization: `Bearer ${dana}`, 'content-type': 'application/json' }, body: JSON.stringify({ reason: 'not now' }) });
    const denied = await call(c, 'wait_for_approval', { approval_id: id2, timeout_s: 5 });
    expect(denied.isError).toBe(true);
    expect(denied.content[0]!.text).toMatch(/denied by .*dana.*: not now/);
    // Someone else's approval id is not yours to wait on.
    const other = await httpClient(dana);
    expect((await call(other, 'wait_for_approval', { approval_id: id2 })).content[0]!.text).toMatch(/no approval request .* of yours/);
    await other.close();
    await c.close();
  });
});

describe('MCP over stdio (sluice mcp)', () => {
  it('serves the same governed tools as the token identity', async () => {
    const transport = new StdioClientTransport({ command: 'node', args: [CLI, 'mcp', '--api', base, '--token', agent], stderr: 'pipe' });
    const c = new Client({ name: 'stdio-agent', version: '1.0.0' });
    await c.connect(transport);
    expect((await c.listTools()).tools.length).toBe(5);
    const r = await call(c, 'query', { database: db.name, sql: 'SELECT ssn FROM customers WHERE id = 1' });
    expect(r.structuredContent.rows).toEqual([['***-**-6789']]);
    const denied = await call(c, 'query', { database: db.name, sql: 'DELETE FROM customers' });
    expect(denied.isError).toBe(true);
    await c.close();
  });

  it('refuses to start with a bad token', async () => {
    const r = await run('node', [CLI, 'mcp', '--api', base, '--token', 'nope'], { input: '' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('the gateway refused the token');
    expect(r.stdout).toBe('');
  });
});
