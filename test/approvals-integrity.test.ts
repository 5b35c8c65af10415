import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn } from 'node:child_process';
import pg from 'pg';
import mysql from 'mysql2/promise';
import { startTestGateway, freshDatabase, admin, run, auditEvents, mysqlEngine, MY, type TestGateway } from './support/env.js';
import { startIdp, type TestIdp } from './support/oidc.js';
import { createKey } from '../src/identity/keys.js';
import * as pgm from '../src/protocol/postgres/messages.js';
import { cancelRequest } from '../src/protocol/postgres/messages.js';
import { Writer } from '../src/protocol/postgres/buffer.js';
import { messages, execute } from './support/raw.js';
import crypto from 'node:crypto';
import type { Approval } from '../src/approvals/store.js';
import type { IdentityKind } from '../src/identity/identity.js';
import { policyYaml, rules } from './support/policies.js';

/** Issue #14: approvals and identity that hold against their own users. */

const POLICY = policyYaml({
  default: 'deny',
  rules: [
    rules.session(),
    rules.reviewed('analysts', ['write'], 'analysts-write-needs-dba', { approvers: ['dba'] }),
    rules.read('analysts'),
    rules.reviewed('interns', ['write'], 'interns-write-agents-may-review', { approvers: ['dba'], agents_may_approve: true }),
    rules.reviewed('interns', ['ddl'], 'interns-ddl-two-reviewers', { approvers: ['dba'], quorum: 2, agents_may_approve: true }),
    rules.read('interns'),
    rules.read('contractors'),
    rules.dba(),
  ],
});

const CLI = path.resolve('bin/sluice.js');

let t: TestGateway;
let idp: TestIdp;
let db: { name: string; drop: () => Promise<void> };
let base: string;
let dana: string; // human DBA
let alice: string; // human analyst, subject alice@example.com
let bob: string; // human intern, subject bob@example.com

const key = async (name: string, kind: IdentityKind, groups: string[], o: { subject?: string; actingFor?: string } = {}) =>
  (await createKey(t.gw.store.db, { name, kind, groups, subject: o.subject, actingFor: o.actingFor })).key;

beforeAll(async () => {
  idp = await startIdp({
    // An agent token in the approvers' group whose delegation chain ends at bob (RFC 8693 nested act claims).
    'relay-agent': { groups: ['dba'], sluice_kind: 'agent', act: { sub: 'svc-middle', act: { sub: 'bob@example.com' } } },
    // An agent token acting for carol, who is nobody's requester here.
    'carol-agent': { groups: ['dba'], sluice_kind: 'agent', act: { sub: 'carol@example.com' } },
  });
  db = await freshDatabase('sluice_aprint', "CREATE TABLE orders (id int primary key, status text); INSERT INTO orders SELECT g, 'new' FROM generate_series(1, 10) g; CREATE SEQUENCE order_seq START 100; CREATE TABLE events (id serial primary key, what text); CREATE FUNCTION bump() RETURNS text LANGUAGE sql VOLATILE AS $$ SELECT nextval('order_seq')::text $$; CREATE FUNCTION shout(text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT upper($1) $$; CREATE FUNCTION vol_eq(int, int) RETURNS boolean LANGUAGE sql VOLATILE AS $$ SELECT nextval('order_seq') > 0 AND $1 = $2 $$; CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = vol_eq); CREATE VIEW next_ids AS SELECT nextval('order_seq') AS n; CREATE VIEW next_ids_again AS SELECT n FROM next_ids;");
  t = await startTestGateway({
    policy: POLICY,
    config: `api: { listen: { host: 127.0.0.1, port: 0 }, roles: { admin: [dba] } }
approvals: { poll_ms: 200 }
${mysqlEngine()}
identity:
  oidc:
    - { issuer: "${idp.issuer}", audience: sluice, groups_claim: groups, kind: human, kind_claim: sluice_kind }`,
  });
  base = `http://127.0.0.1:${t.gw.apiPort}`;
  dana = await key('dana', 'human', ['dba'], { subject: 'dana@example.com' });
  alice = await key('alice', 'human', ['analysts'], { subject: 'alice@example.com' });
  bob = await key('bob', 'human', ['interns'], { subject: 'bob@example.com' });
});
afterAll(async () => {
  await t?.stop();
  await idp?.close();
  await db?.drop();
});

const api = async (p: string, token: string, method = 'GET', body?: unknown) => {
  const res = await fetch(base + p, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
  return { status: res.status, body: (await res.json()) as any };
};

async function pendingFor(subject: string): Promise<Approval> {
  for (let i = 0; i < 100; i++) {
    const r = await api(`/api/approvals?status=pending&requester=${encodeURIComponent(subject)}`, dana);
    if (r.body.approvals?.length) return r.body.approvals[0];
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`no pending request of ${subject}`);
}

const status = (id: number) => admin((c) => c.query('SELECT status FROM orders WHERE id = $1', [id]).then((r) => r.rows[0].status as string), db.name);

/** psql running one statement in the background; its exit code and output once it ends. */
function psql(password: string, sql: string) {
  const child = spawn('psql', ['-X', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(t.port), '-U', 'x', '-d', db.name, '-c', sql], { env: { ...process.env, PGPASSWORD: password, PGSSLMODE: 'disable' } });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  return new Promise<{ code: number; out: string }>((r) => child.on('exit', (code) => r({ code: code ?? -1, out })));
}

describe('self-approval through a delegation chain (issue #14.1)', () => {
  it("an agent key acting for the requester, in the approvers' group, can approve neither her held UPDATE nor her grant (API and CLI)", async () => {
    if (!fs.existsSync('dist/cli/main.js')) throw new Error('build first: npx tsc -p tsconfig.json');
    const agent = await key('alice-helper', 'agent', ['dba'], { actingFor: 'alice@example.com' });
    const ran = psql(alice, "UPDATE orders SET status = 'shipped' WHERE id = 1");
    const a = await pendingFor('alice@example.com');
    const viaApi = await api(`/api/approvals/${a.id}/approve`, agent, 'POST', { reason: 'lgtm' });
    expect(viaApi.status).toBe(403);
    expect(viaApi.body.error).toContain('share the principal alice@example.com');
    const viaCli = await run('node', [CLI, 'approvals', 'approve', a.id, '--api', base, '--token', agent]);
    expect(viaCli.code).toBe(1);
    expect(viaCli.stderr).toContain('403');
    // The grant the agent would have approved for her: refused the same way.
    const g = (await api('/api/grants', alice, 'POST', { database: '*', role: 'admin', duration: '1h', reason: 'INC-1' })).body.approval as Approval;
    const grantVote = await api(`/api/approvals/${g.id}/approve`, agent, 'POST', {});
    expect(grantVote.status).toBe(403);
    // Nothing was recorded as a vote, nothing ran, and no grant lets her writes through; the attempts are audited.
    for (const id of [a.id, g.id]) expect((await api(`/api/approvals/${id}`, dana)).body.approval).toMatchObject({ status: 'pending', votes: [] });
    const refused = (await auditEvents(t, { type: 'approval' })).filter((e) => (e.details as { event?: string })?.event === 'vote_refused' && e.subject === 'agent:alice-helper');
    expect(refused.map((e) => e.approval_id).sort()).toEqual([a.id, a.id, g.id].sort());
    expect(await status(1)).toBe('new');
    await api(`/api/approvals/${a.id}/deny`, dana, 'POST', { reason: 'no' });
    await api(`/api/approvals/${g.id}/deny`, dana, 'POST', { reason: 'no' });
    const r = await ran;
    expect(r.code).not.toBe(0);
    expect(r.out).toContain('denied by dana@example.com');
    expect(await status(1)).toBe('new');
  });

  it('a delegation chain through keys (agent → agent → person) and through nested act claims of a token is followed', async () => {
    // Key chain: agent:a acts for agent:b, whose key acts for bob.
    await key('b', 'agent', [], { subject: 'agent:b', actingFor: 'bob@example.com' });
    const chained = await key('a', 'agent', ['dba'], { subject: 'agent:a', actingFor: 'agent:b' });
    const c = new pg.Client(t.conn(bob, db.name));
    await c.connect();
    const running = c.query("UPDATE orders SET status = 'bob' WHERE id = 2").catch((e: Error) => e);
    const a = await pendingFor('bob@example.com');
    // The rule lets agents approve, but not these: each shares bob along its chain.
    const viaKeys = await api(`/api/approvals/${a.id}/approve`, chained, 'POST', {});
    expect(viaKeys.status).toBe(403);
    expect(viaKeys.body.error).toContain('share the principal bob@example.com');
    const viaToken = await api(`/api/approvals/${a.id}/approve`, await idp.token('relay-agent'), 'POST', {});
    expect(viaToken.status).toBe(403);
    expect(viaToken.body.error).toContain('share the principal bob@example.com');
    expect(await status(2)).toBe('new');
    // An agent acting for someone else may approve under this rule (agents_may_approve: true)...
    const ok = await api(`/api/approvals/${a.id}/approve`, await idp.token('carol-agent'), 'POST', {});
    expect(ok.status).toBe(200);
    expect(((await running) as pg.QueryResult).rowCount).toBe(1);
    expect(await status(2)).toBe('bob');
    await c.end();
  });

  it('agents cannot approve unless the rule says agents_may_approve', async () => {
    const carolAgent = await idp.token('carol-agent');
    const ran = psql(alice, "UPDATE orders SET status = 'x' WHERE id = 4");
    const a = await pendingFor('alice@example.com');
    const r = await api(`/api/approvals/${a.id}/approve`, carolAgent, 'POST', {});
    expect(r.status).toBe(403);
    expect(r.body.error).toContain('agents_may_approve');
    expect((await api(`/api/approvals/${a.id}`, dana)).body.approval.votes).toEqual([]);
    await api(`/api/approvals/${a.id}/deny`, dana, 'POST', {});
    expect((await ran).code).not.toBe(0);
    expect(await status(4)).toBe('new');
  });

  it('a quorum counts distinct people: an agent acting for a DBA who voted does not vote again', async () => {
    const danasAgent = await key('dana-helper', 'agent', ['dba'], { actingFor: 'dana@example.com' });
    const dan2 = await key('dan2', 'human', ['dba'], { subject: 'dan2@example.com' });
    const c = new pg.Client(t.conn(bob, db.name));
    await c.connect();
    const running = c.query('CREATE INDEX orders_status ON orders (status)').catch((e: Error) => e);
    const a = await pendingFor('bob@example.com');
    expect(a.quorum).toBe(2);
    expect((await api(`/api/approvals/${a.id}/approve`, dana, 'POST', {})).body.approval.status).toBe('pending');
    const again = await api(`/api/approvals/${a.id}/approve`, danasAgent, 'POST', {});
    expect(again.status).toBe(409);
    expect(again.body.error).toContain('shares a principal with dana@example.com');
    expect((await api(`/api/approvals/${a.id}`, dana)).body.approval).toMatchObject({ status: 'pending', votes: [{ by: 'dana@example.com' }] });
    const indexes = () => admin((x) => x.query("SELECT count(*)::int AS n FROM pg_indexes WHERE indexname = 'orders_status'").then((r) => r.rows[0].n as number), db.name);
    expect(await indexes()).toBe(0);
    expect((await api(`/api/approvals/${a.id}/approve`, dan2, 'POST', {})).body.approval.status).toBe('approved');
    expect(await running).not.toBeInstanceOf(Error);
    expect(await indexes()).toBe(1);
    await c.end();
  });

  it('the policy schema validates agents_may_approve', async () => {
    const { loadPolicy } = await import('../src/policy/policy.js');
    const file = path.join(t.dir, 'bad-policy.yaml');
    fs.writeFileSync(file, POLICY.replace('agents_may_approve: true', 'agents_may_approve: sometimes'));
    expect(() => loadPolicy(file)).toThrow(/agents_may_approve/);
  });
});

describe('approvals bound to parameters as the server reads them (issue #14.2)', () => {
  it('a text \\x4869 approval does not run the binary 0x4869 parameter: that needs its own approval', async () => {
    const c = new pg.Client(t.conn(alice, db.name));
    await c.connect();
    const sql = 'UPDATE orders SET status = $1 WHERE id = 3';
    const first = c.query(sql, ['\\x4869']).catch((e: Error & { code?: string }) => e);
    const a = await pendingFor('alice@example.com');
    expect(a.params).toEqual(['\\x4869']);
    // Ctrl-C: the request stays open; it is approved while the client is away.
    const k = c as unknown as { processID: number; secretKey: number };
    await new Promise<void>((resolve) => {
      const s = net.connect(t.port, '127.0.0.1', () => s.end(cancelRequest(k.processID, k.secretKey)));
      s.on('close', () => resolve());
    });
    expect(((await first) as { code?: string }).code).toBe('57014');
    expect((await api(`/api/approvals/${a.id}/approve`, dana, 'POST', {})).status).toBe(200);
    // The same SQL with the same bytes sent in binary format is a different value ('Hi'): held anew.
    const swapped = c.query(sql, [Buffer.from('Hi')]).catch((e: Error & { code?: string }) => e);
    let b: Approval | undefined;
    for (let i = 0; i < 100 && !b; i++) {
      b = ((await api('/api/approvals?status=pending&requester=alice%40example.com', dana)).body.approvals as Approval[]).find((x) => x.id !== a.id);
      if (!b) await new Promise((r) => setTimeout(r, 100));
    }
    expect(b).toMatchObject({ binary_params: true, param_formats: [1] });
    expect(b!.hash).not.toBe(a.hash);
    // The reviewer is told which parameter arrived in binary.
    expect((await run('node', [CLI, 'approvals', 'show', b!.id, '--api', base, '--token', dana])).stdout).toContain('parameters $1="\\\\x4869" (binary, hex)');
    expect(await status(3)).toBe('new');
    expect((await api(`/api/approvals/${a.id}`, dana)).body.approval.status).toBe('approved');
    await api(`/api/approvals/${b!.id}/deny`, dana, 'POST', { reason: 'not what was approved' });
    expect(String(await swapped)).toContain('not what was approved');
    expect(await status(3)).toBe('new');
    // The approved text value still runs, once.
    expect((await c.query(sql, ['\\x4869'])).rowCount).toBe(1);
    expect(await status(3)).toBe('\\x4869');
    await c.end();
  });
});


/** The preview of a request once it is stored (it runs in the background). */
async function previewOf(id: string): Promise<NonNullable<Approval['preview']>> {
  for (let i = 0; i < 100; i++) {
    const p = (await api(`/api/approvals/${id}`, dana)).body.approval.preview;
    if (p) return p;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no preview of ${id}`);
}

describe('approvals bound to declared parameter types (issue #14.2)', () => {
  /** One extended-protocol execution with the parameter type declared in Parse, on a raw socket. */
  function typedUpdate(oid: number) {
    const value = Buffer.from('\\x4869');
    const bindMsg = new Writer().cstring('').cstring('').int16(0).int16(1).int32(value.length).bytes(value).int16(0).message('B');
    const send = Buffer.concat([pgm.parse('', 'UPDATE orders SET status = md5($1) WHERE id = 8', [oid]), bindMsg, execute(''), pgm.sync()]);
    const s = net.connect(t.port, '127.0.0.1');
    let all = Buffer.alloc(0);
    let sent = false;
    const done = new Promise<{ type: string; body: Buffer }[]>((resolve) => s.on('close', () => resolve(messages(all))));
    s.on('error', () => {});
    s.on('data', (d) => {
      all = Buffer.concat([all, d]);
      const ready = messages(all).filter((x) => x.type === 'Z').length;
      if (!sent && ready === 1) {
        sent = true;
        s.write(send);
      } else if (ready === 2) s.end(pgm.terminate());
    });
    s.write(Buffer.concat([pgm.startupMessage({ user: 'raw', database: db.name }), pgm.passwordMessage(alice)]));
    return { done, leave: () => s.destroy() };
  }

  it("'\\x4869' approved as text does not run declared as bytea (md5(text) and md5(bytea) differ); the typed statement is still previewed", async () => {
    const first = typedUpdate(25);
    const a = await pendingFor('alice@example.com');
    expect(a.param_types).toEqual([25]);
    expect(await previewOf(a.id)).toMatchObject({ kind: 'rows', rows_affected: 1 });
    first.leave();
    await first.done;
    expect((await api(`/api/approvals/${a.id}/approve`, dana, 'POST', {})).status).toBe(200);
    const swapped = typedUpdate(17);
    let b: Approval | undefined;
    for (let i = 0; i < 100 && !b; i++) {
      b = ((await api('/api/approvals?status=pending&requester=alice%40example.com', dana)).body.approvals as Approval[]).find((x) => x.id !== a.id);
      if (!b) await new Promise((r) => setTimeout(r, 100));
    }
    expect(b).toMatchObject({ param_types: [17], params: ['\\x4869'] });
    expect(await status(8)).toBe('new');
    await api(`/api/approvals/${b!.id}/deny`, dana, 'POST', {});
    expect((await swapped.done).some((x) => x.type === 'E')).toBe(true);
    expect(await status(8)).toBe('new');
    // Declared as text again, it runs under the approval: md5 of the six characters, not of the two bytes.
    const again = await typedUpdate(25).done;
    expect(again.some((x) => x.type === 'C')).toBe(true);
    expect(await status(8)).toBe(crypto.createHash('md5').update('\\x4869').digest('hex'));
  });
});

describe('previews never leave lasting effects (issue #14.3)', () => {
  const sequence = (name: string) => admin((c) => c.query(`SELECT last_value::int AS v, is_called FROM ${name}`).then((r) => r.rows[0] as { v: number; is_called: boolean }), db.name);

  /** Hold `sql` for alice, wait for its preview, deny it; the preview and what psql said. */
  async function previewed(sql: string) {
    const ran = psql(alice, sql);
    const a = await pendingFor('alice@example.com');
    const p = await previewOf(a.id);
    const shown = await run('node', [CLI, 'approvals', 'show', a.id, '--api', base, '--token', dana]);
    await api(`/api/approvals/${a.id}/deny`, dana, 'POST', { reason: 'preview test' });
    expect((await ran).code).not.toBe(0);
    return { p, shown: shown.stdout };
  }

  it("setval(): the preview is skipped and says why; the sequence does not move", async () => {
    const { p, shown } = await previewed("UPDATE orders SET status = setval('order_seq', 424242)::text WHERE id = 5");
    expect(p).toMatchObject({ kind: 'none', note: 'preview skipped: calls setval()' });
    expect(shown).toContain('preview: preview skipped: calls setval()');
    expect(await sequence('order_seq')).toEqual({ v: 100, is_called: false });
    expect(await status(5)).toBe('new');
  });

  it("a user's volatile function is looked up in pg_proc and skipped; an immutable one is previewed", async () => {
    const volatile = await previewed('UPDATE orders SET status = bump() WHERE id = 6');
    expect(volatile.p.note).toBe('preview skipped: calls bump(), a volatile function');
    expect(await sequence('order_seq')).toEqual({ v: 100, is_called: false });
    const unknown = await previewed('UPDATE orders SET status = no_such_fn() WHERE id = 6');
    expect(unknown.p.note).toBe('preview skipped: calls no_such_fn(), which is not a function this database knows');
    const viaOperator = await previewed("UPDATE orders SET status = 'op' WHERE id === 7");
    expect(viaOperator.p.note).toBe('preview skipped: operator === calls vol_eq(), a volatile function');
    expect(await sequence('order_seq')).toEqual({ v: 100, is_called: false });
    const viaView = await previewed('UPDATE orders SET status = (SELECT n FROM next_ids_again)::text WHERE id = 7');
    expect(viaView.p.note).toBe('preview skipped: view next_ids calls a volatile function or draws on a sequence');
    expect(await sequence('order_seq')).toEqual({ v: 100, is_called: false });
    const immutable = await previewed("UPDATE orders SET status = shout('ok') WHERE id <= 2");
    expect(immutable.p).toMatchObject({ kind: 'rows', rows_affected: 2 });
    expect(await status(6)).toBe('new');
  });

  it('an INSERT drawing on a serial default is not previewed (nextval is not rolled back)', async () => {
    const { p } = await previewed("INSERT INTO events (what) VALUES ('x')");
    expect(p.note).toContain('preview skipped: inserting into events draws on a sequence');
    expect(await sequence('events_id_seq')).toEqual({ v: 1, is_called: false });
    expect(await admin((c) => c.query('SELECT count(*)::int AS n FROM events').then((r) => r.rows[0].n), db.name)).toBe(0);
  });
});

describe('MySQL previews never leave lasting effects either (issue #14.3)', () => {
  const mydb = `sluice_aprint_${crypto.randomBytes(4).toString('hex')}`;
  const root = () => mysql.createConnection({ ...MY, multipleStatements: true });
  beforeAll(async () => {
    const r = await root();
    await r.query(`CREATE DATABASE ${mydb}; USE ${mydb}; CREATE TABLE events (id int AUTO_INCREMENT PRIMARY KEY, what varchar(20)) ENGINE=InnoDB; CREATE TABLE plain (id int PRIMARY KEY, v bigint) ENGINE=InnoDB; INSERT INTO plain VALUES (1, 0), (2, 0); CREATE SEQUENCE s ENGINE=InnoDB; CREATE FUNCTION seven() RETURNS int DETERMINISTIC RETURN 7;`);
    await r.end();
  });
  afterAll(async () => {
    const r = await root();
    await r.query(`DROP DATABASE IF EXISTS ${mydb}`);
    await r.end();
  });
  const state = async () => {
    const r = await root();
    const [[auto]] = (await r.query(`SELECT AUTO_INCREMENT AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = '${mydb}' AND TABLE_NAME = 'events'`)) as any;
    const [[seq]] = (await r.query(`SELECT next_not_cached_value AS n FROM ${mydb}.s`)) as any;
    const [rows] = (await r.query(`SELECT id, v FROM ${mydb}.plain ORDER BY id`)) as any;
    await r.end();
    return { auto: Number(auto.n), seq: Number(seq.n), rows };
  };
  async function previewed(sql: string) {
    const c = await mysql.createConnection({ host: '127.0.0.1', port: t.gw.mysqlPort!, user: 'x', password: alice, database: mydb, enableCleartextPlugin: true } as mysql.ConnectionOptions);
    const running = c.query(sql).catch((e: Error) => e);
    const a = await pendingFor('alice@example.com');
    const p = await previewOf(a.id);
    await api(`/api/approvals/${a.id}/deny`, dana, 'POST', {});
    expect(String(await running)).toContain('denied');
    await c.end();
    return p;
  }

  it('sequences, counters, stored functions and AUTO_INCREMENT inserts are not previewed; plain updates are', async () => {
    const before = await state();
    expect((await previewed("INSERT INTO events (what) VALUES ('x')")).note).toBe('preview skipped: inserting into events consumes AUTO_INCREMENT values, which a rollback does not give back');
    expect((await previewed('UPDATE plain SET v = NEXTVAL(s) WHERE id = 1')).note).toBe('preview skipped: calls nextval()');
    expect((await previewed('UPDATE plain SET v = UUID_SHORT() WHERE id = 1')).note).toBe('preview skipped: calls uuid_short()');
    expect((await previewed('UPDATE plain SET v = seven() WHERE id = 1')).note).toBe('preview skipped: calls the stored function seven(), which could act outside the transaction');
    expect(await previewed('UPDATE plain SET v = ABS(-2) WHERE id <= 2')).toMatchObject({ kind: 'rows', rows_affected: 2 });
    expect(await state()).toEqual(before);
  });
});

describe('revoking grants (issue #14.4)', () => {
  it('a revoke ends an approved grant on the next statement of open sessions on every gateway sharing the store; audited; CLI and API', async () => {
    if (!fs.existsSync('dist/cli/main.js')) throw new Error('build first: npx tsc -p tsconfig.json');
    const carl = await key('carl', 'human', ['contractors'], { subject: 'carl@example.com' });
    const other = await key('cora', 'human', ['contractors'], { subject: 'cora@example.com' });
    // A second gateway on the same store (scale-out).
    const b = await startTestGateway({ policy: POLICY, storeDb: t.storeDb, config: 'api: { listen: { host: 127.0.0.1, port: 0 }, roles: { admin: [dba] } }\napprovals: { poll_ms: 200 }' });
    const baseB = `http://127.0.0.1:${b.gw.apiPort}`;
    const decisionOnB = async () => {
      const r = await fetch(`${baseB}/api/policy/test`, { method: 'POST', headers: { authorization: `Bearer ${carl}`, 'content-type': 'application/json' }, body: JSON.stringify({ sql: "UPDATE orders SET status = 'b' WHERE id = 10", database: db.name }) });
      return ((await r.json()) as { decision: string }).decision;
    };
    const waitOnB = async (want: string) => {
      for (let i = 0; i < 100 && (await decisionOnB()) !== want; i++) await new Promise((r) => setTimeout(r, 50));
      expect(await decisionOnB()).toBe(want);
    };
    const cA = new pg.Client(t.conn(carl, db.name));
    const cB = new pg.Client(b.conn(carl, db.name));
    try {
      await cA.connect();
      await cB.connect();
      await expect(cA.query("UPDATE orders SET status = 'a' WHERE id = 9")).rejects.toMatchObject({ code: '42501' });
      const g = (await api('/api/grants', carl, 'POST', { database: db.name, role: 'write', duration: '1h', reason: 'INC-9' })).body.approval as Approval;
      expect((await api(`/api/approvals/${g.id}/approve`, dana, 'POST', {})).body.approval.status).toBe('approved');
      await waitOnB('allow');
      expect((await cA.query("UPDATE orders SET status = 'a' WHERE id = 9")).rowCount).toBe(1);
      expect((await cB.query("UPDATE orders SET status = 'b' WHERE id = 10")).rowCount).toBe(1);
      // Denying an approved grant does nothing but say how to end it.
      const denied = await api(`/api/approvals/${g.id}/deny`, dana, 'POST', {});
      expect(denied.status).toBe(409);
      expect(denied.body.error).toContain('revoke');
      // Someone who is neither an approver nor the grantee may not revoke it.
      expect((await api(`/api/grants/${g.id}/revoke`, other, 'POST', {})).status).toBe(404);
      expect((await run('node', [CLI, 'grants', 'list', '--api', base, '--token', carl])).stdout).toContain(`${g.id}  approved`);
      const cli = await run('node', [CLI, 'grants', 'revoke', g.id, '--reason', 'incident over', '--api', base, '--token', dana]);
      expect(cli.code).toBe(0);
      expect(cli.stdout).toContain(`${g.id}  revoked`);
      // This gateway: the very next statement of the open session is refused.
      await expect(cA.query("UPDATE orders SET status = 'a2' WHERE id = 9")).rejects.toMatchObject({ code: '42501' });
      // The other gateway: once its change feed has the revoke (within a poll), its open session is refused too.
      await waitOnB('deny');
      await expect(cB.query("UPDATE orders SET status = 'b2' WHERE id = 10")).rejects.toMatchObject({ code: '42501' });
      expect(await status(9)).toBe('a');
      expect(await status(10)).toBe('b');
      expect((await api(`/api/approvals/${g.id}`, dana)).body.approval).toMatchObject({ status: 'revoked', revoked_by: 'dana@example.com', revoke_reason: 'incident over' });
      expect((await api(`/api/approvals/${g.id}/revoke`, dana, 'POST', {})).status).toBe(409);
      const events = await auditEvents(t, { type: 'approval' });
      expect(events.find((e) => e.approval_id === g.id && (e.details as { event?: string })?.event === 'revoked')).toMatchObject({ subject: 'dana@example.com', reason: 'incident over' });
      expect(await (await fetch(`${base}/metrics`)).text()).toMatch(/^sluice_approval_events_total\{event="revoked"\} 1$/m);
      // The grantee may end their own grant early.
      const own = (await api('/api/grants', carl, 'POST', { database: db.name, role: 'write', duration: '1h', reason: 'INC-10' })).body.approval as Approval;
      await api(`/api/approvals/${own.id}/approve`, dana, 'POST', {});
      expect((await cA.query("UPDATE orders SET status = 'a3' WHERE id = 9")).rowCount).toBe(1);
      expect((await api(`/api/grants/${own.id}/revoke`, carl, 'POST', { reason: 'done early' })).status).toBe(200);
      await expect(cA.query("UPDATE orders SET status = 'a4' WHERE id = 9")).rejects.toMatchObject({ code: '42501' });
      expect(await status(9)).toBe('a3');
    } finally {
      await cA.end().catch(() => {});
      await cB.end().catch(() => {});
      await b.gw.close();
    }
  });
});

describe('COPY FROM STDIN under a rule that holds (issue #14.5)', () => {
  it('is refused with 42501 saying why, before any request is filed; nothing is loaded', async () => {
    const before = (await api('/api/approvals?requester=alice%40example.com', dana)).body.approvals.length as number;
    const r = await run('psql', ['-X', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(t.port), '-U', 'x', '-d', db.name, '-c', 'COPY orders (id, status) FROM STDIN'], { env: { PGPASSWORD: alice, PGSSLMODE: 'disable' }, input: '100\tsmuggled\n101\tsmuggled\n\\.\n' });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('COPY ... FROM STDIN cannot be held for approval under Sluice policy rule "analysts-write-needs-dba"');
    expect(r.stderr).toContain('without seeing the rows it loads');
    // psql's \copy sends the same COPY ... FROM STDIN.
    const viaCopy = await run('psql', ['-X', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(t.port), '-U', 'x', '-d', db.name, '-c', '\\copy orders (id, status) from stdin'], { env: { PGPASSWORD: alice, PGSSLMODE: 'disable' }, input: '102\tsmuggled\n\\.\n' });
    expect(viaCopy.code).not.toBe(0);
    expect(viaCopy.stderr).toContain('cannot be held for approval');
    expect(await admin((c) => c.query("SELECT count(*)::int AS n FROM orders WHERE status = 'smuggled' OR id >= 100").then((x) => x.rows[0].n), db.name)).toBe(0);
    expect((await api('/api/approvals?requester=alice%40example.com', dana)).body.approvals.length).toBe(before);
    const denied = (await auditEvents(t, { type: 'statement', decision: 'deny' })).filter((e) => /^copy\s+orders/i.test(e.sql ?? ''));
    expect(denied.length).toBe(2);
    expect(denied[0]).toMatchObject({ error_code: '42501', rule: 'analysts-write-needs-dba' });
    // A DBA's COPY (allowed, not held) still loads rows.
    const ok = await run('psql', ['-X', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(t.port), '-U', 'x', '-d', db.name, '-c', 'COPY orders (id, status) FROM STDIN'], { env: { PGPASSWORD: dana, PGSSLMODE: 'disable' }, input: '200\tloaded\n\\.\n' });
    expect(ok.stdout.trim()).toBe('COPY 1');
  });
});
