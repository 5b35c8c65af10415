import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import { cancelRequest } from '../src/protocol/postgres/messages.js';
import { spawn } from 'node:child_process';
import pg from 'pg';
import { startTestGateway, freshDatabase, admin, type TestGateway } from './support/env.js';
import type { Approval } from '../src/approvals/store.js';
import { policyYaml, rules } from './support/policies.js';

const POLICY = policyYaml({
  default: 'deny',
  rules: [
    rules.session(),
    { name: 'never-drop-audit', match: { tables: ['audit_copy'], destructive: true }, action: 'deny', grants: false },
    rules.reviewed('analysts', ['write'], 'analysts-write-needs-dba', { approvers: ['dba'] }, 'writes by analysts are reviewed'),
    rules.reviewed('analysts', ['ddl'], 'analysts-ddl-two-dbas', { approvers: ['dba'], quorum: 2 }),
    rules.read('analysts'),
    rules.reviewed('interns', ['write'], 'interns-write-mentored', { approvers: ['mentors'] }),
    rules.read('interns'),
    rules.reviewed('leads', ['write'], 'leads-write-reviewed', { timeout_s: 2 }),
    rules.read('leads'),
    rules.dba(),
  ],
});

let t: TestGateway;
let db: { name: string; drop: () => Promise<void> };
let alice: string; // analysts
let lead: string; // leads + approver role (may approve others, never self)
let dana: string; // dba
let dan2: string; // dba
let base: string;
let hook: http.Server;
const hooked: { text: string; sluice: { event: string; approval: Approval } }[] = [];

beforeAll(async () => {
  hook = http.createServer((req, res) => {
    let b = '';
    req.on('data', (d) => (b += d));
    req.on('end', () => {
      hooked.push(JSON.parse(b));
      res.end('ok');
    });
  });
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
  db = await freshDatabase('sluice_apr', 'CREATE TABLE accounts (id int primary key, owner text, balance int); INSERT INTO accounts SELECT g, \'owner\' || g, 100 FROM generate_series(1, 50) g; CREATE TABLE audit_copy (x int);');
  t = await startTestGateway({
    policy: POLICY,
    config: `api: { listen: { host: 127.0.0.1, port: 0 }, roles: { admin: [dba], approver: [leads] } }
approvals: { webhook_url: "http://127.0.0.1:${(hook.address() as { port: number }).port}/hook", poll_ms: 200 }`,
  });
  base = `http://127.0.0.1:${t.gw.apiPort}`;
  alice = await t.key('human', ['analysts'], { name: 'alice' });
  lead = await t.key('human', ['leads'], { name: 'lee' });
  dana = await t.key('human', ['dba'], { name: 'dana' });
  dan2 = await t.key('human', ['dba'], { name: 'dan2' });
});
afterAll(async () => {
  await t?.stop();
  await db?.drop();
  hook?.close();
});

const api = async (path: string, token: string, method = 'GET', body?: unknown) => {
  const res = await fetch(base + path, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
  return { status: res.status, body: (await res.json()) as any };
};

/** Wait until the gateway holds a statement of `subject`'s and return its request. */
async function pendingFor(subject: string, token = dana): Promise<Approval> {
  for (let i = 0; i < 100; i++) {
    const r = await api(`/api/approvals?status=pending&requester=${encodeURIComponent(subject)}`, token);
    if (r.body.approvals?.length) return r.body.approvals[0];
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`no pending request of ${subject}`);
}

const subjectOf = async (key: string) => (await api('/api/me', key)).body.identity.subject as string;
const balance = (id: number) => admin((c) => c.query('SELECT balance FROM accounts WHERE id = $1', [id]).then((r) => r.rows[0].balance as number), db.name);

describe('approvals: statements held in place', () => {
  it('psql: the UPDATE waits with a NOTICE and link, runs once a DBA approves, with a blast-radius preview', async () => {
    const aliceSub = await subjectOf(alice);
    const child = spawn('psql', ['-X', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(t.port), '-U', 'alice', '-d', db.name, '-c', 'UPDATE accounts SET balance = balance + 1 WHERE id <= 10'], { env: { ...process.env, PGPASSWORD: alice, PGSSLMODE: 'disable' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number>((r) => child.on('exit', (code) => r(code ?? -1)));
    const a = await pendingFor(aliceSub);
    expect(a.sql).toBe('UPDATE accounts SET balance = balance + 1 WHERE id <= 10');
    expect(a.rule).toBe('analysts-write-needs-dba');
    expect(a.approver_groups).toEqual(['dba']);
    // The client is told where to get it approved, and has not run it yet.
    for (let i = 0; i < 50 && !stderr.includes('awaiting approval'); i++) await new Promise((r) => setTimeout(r, 100));
    expect(stderr).toContain(`NOTICE:  awaiting approval ${a.id}: ${base}/approvals/${a.id}`);
    expect(await balance(1)).toBe(100);
    // The preview ran the UPDATE in a rolled-back transaction: it reports 10 rows and changed nothing.
    let preview;
    for (let i = 0; i < 50 && !preview; i++) {
      preview = (await api(`/api/approvals/${a.id}`, dana)).body.approval.preview;
      if (!preview) await new Promise((r) => setTimeout(r, 100));
    }
    expect(preview).toMatchObject({ kind: 'rows', rows_affected: 10 });
    expect(await balance(1)).toBe(100);
    // Another analyst cannot decide; a DBA approves.
    expect((await api(`/api/approvals/${a.id}/approve`, alice, 'POST', {})).status).toBe(403);
    const ok = await api(`/api/approvals/${a.id}/approve`, dana, 'POST', { reason: 'ticket OPS-1' });
    expect(ok.status).toBe(200);
    expect(await exited).toBe(0);
    expect(stdout.trim()).toBe('UPDATE 10');
    expect(await balance(1)).toBe(101);
    // Single use: the same statement needs a new approval next time.
    const after = (await api(`/api/approvals/${a.id}`, dana)).body.approval as Approval;
    expect(after.status).toBe('executed');
    expect(after.outcome).toEqual({ rows: 10 });
    // Audit: the request, the vote, and the statement that ran under the approval.
    await t.gw.governor.audit.flush();
    const events = await admin((c) => c.query(`SELECT type, subject, payload FROM audit_events WHERE payload::jsonb->>'approval_id' = $1 ORDER BY seq`, [a.id]), t.storeDb);
    const kinds = events.rows.map((r) => `${r.type}:${JSON.parse(r.payload).details?.event ?? JSON.parse(r.payload).decision}`);
    expect(kinds).toEqual(expect.arrayContaining(['approval:requested', 'approval:preview', 'approval:vote', 'approval:approved', 'statement:allow']));
    const stmt = JSON.parse(events.rows.find((r) => r.type === 'statement')!.payload);
    expect(stmt).toMatchObject({ subject: aliceSub, rows: 10, rule: 'analysts-write-needs-dba' });
    // The webhook heard about the request and the approval.
    expect(hooked.find((h) => h.sluice.event === 'requested' && h.sluice.approval.id === a.id)?.text).toContain(a.sql!);
    expect(hooked.some((h) => h.sluice.event === 'approved' && h.sluice.approval.id === a.id)).toBe(true);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/^sluice_approval_events_total\{event="approved"\} [1-9]/m);
    expect(metrics).toMatch(/^sluice_approvals_pending 0$/m);
  });

  it('node-postgres, extended protocol inside a transaction: the approval binds the parameters; a denial names the reviewer and the session goes on', async () => {
    const aliceSub = await subjectOf(alice);
    const c = new pg.Client(t.conn(alice, db.name));
    const notices: string[] = [];
    c.on('notice', (n) => notices.push(n.message ?? ''));
    await c.connect();
    await c.query('BEGIN');
    const running = c.query('UPDATE accounts SET owner = $1 WHERE id = $2', ['mallory', 7]).then(
      (r) => ({ ok: r.rowCount }),
      (e: Error & { code?: string }) => ({ err: e.message, code: e.code }),
    );
    const a = await pendingFor(aliceSub);
    expect(a.params).toEqual(['mallory', '7']);
    await api(`/api/approvals/${a.id}/deny`, dana, 'POST', { reason: 'not your account' });
    const r = await running;
    expect(r).toMatchObject({ code: '42501' });
    expect((r as { err: string }).err).toContain(`denied by ${await subjectOf(dana)}: not your account`);
    expect(notices.some((n) => n.startsWith(`awaiting approval ${a.id}`))).toBe(true);
    await t.gw.governor.audit.flush();
    const deniedEv = await admin((x) => x.query(`SELECT payload FROM audit_events WHERE type = 'statement' AND payload::jsonb->>'approval_id' = $1`, [a.id]), t.storeDb);
    expect(deniedEv.rows.map((r) => JSON.parse(r.payload))).toEqual([expect.objectContaining({ decision: 'deny', protocol: 'extended', error_code: '42501', reason: expect.stringContaining('not your account') })]);
    // Like any error, it aborted the transaction; after ROLLBACK the session is fine.
    await c.query('ROLLBACK');
    expect((await c.query('SELECT owner FROM accounts WHERE id = 7')).rows[0].owner).toBe('owner7');
    // Approved within a transaction: runs in place and commits with it.
    await c.query('BEGIN');
    const again = c.query('UPDATE accounts SET owner = $1 WHERE id = $2', ['alice', 8]);
    const b = await pendingFor(aliceSub);
    expect(b.id).not.toBe(a.id);
    await api(`/api/approvals/${b.id}/approve`, dana, 'POST', {});
    expect((await again).rowCount).toBe(1);
    await c.query('COMMIT');
    expect((await c.query('SELECT owner FROM accounts WHERE id = 8')).rows[0].owner).toBe('alice');
    await c.end();
  });

  it('timeout fails the statement with 57014; the requester cannot approve their own request', async () => {
    const leadSub = await subjectOf(lead);
    const c = new pg.Client(t.conn(lead, db.name));
    await c.connect();
    const running = c.query('DELETE FROM accounts WHERE id = 50').catch((e: Error & { code?: string }) => e);
    const a = await pendingFor(leadSub);
    // lee holds the approver role, but not for his own request.
    const self = await api(`/api/approvals/${a.id}/approve`, lead, 'POST', {});
    expect(self.status).toBe(403);
    expect(self.body.error).toContain('cannot approve their own request');
    const e = (await running) as Error & { code?: string };
    expect(e.code).toBe('57014');
    expect(e.message).toContain(`approval ${a.id} was not decided in time`);
    expect((await api(`/api/approvals/${a.id}`, dana)).body.approval.status).toBe('expired');
    expect((await c.query('SELECT count(*)::int AS n FROM accounts WHERE id = 50')).rows[0].n).toBe(1);
    await c.end();
  });

  it('a quorum of two distinct approvers; one approver cannot vote twice', async () => {
    const aliceSub = await subjectOf(alice);
    const c = new pg.Client(t.conn(alice, db.name));
    await c.connect();
    const running = c.query('CREATE INDEX accounts_owner ON accounts (owner)');
    const a = await pendingFor(aliceSub);
    expect(a.quorum).toBe(2);
    // DDL is not run for the preview: the objects it touches are listed, with row counts.
    let preview;
    for (let i = 0; i < 50 && !preview; i++) {
      preview = (await api(`/api/approvals/${a.id}`, dana)).body.approval.preview;
      if (!preview) await new Promise((r) => setTimeout(r, 100));
    }
    expect(preview).toMatchObject({ kind: 'objects', objects: [{ command: 'CREATE INDEX', name: 'accounts', rows: 50 }] });
    expect((await api(`/api/approvals/${a.id}/approve`, dana, 'POST', {})).body.approval.status).toBe('pending');
    expect((await api(`/api/approvals/${a.id}/approve`, dana, 'POST', {})).status).toBe(409);
    // The lead has the approver role but is not in the rule's approver group.
    expect((await api(`/api/approvals/${a.id}/approve`, lead, 'POST', {})).status).toBe(403);
    expect((await api(`/api/approvals/${a.id}/approve`, dan2, 'POST', {})).body.approval.status).toBe('approved');
    await running;
    expect((await c.query("SELECT count(*)::int AS n FROM pg_indexes WHERE indexname = 'accounts_owner'")).rows[0].n).toBe(1);
    await c.end();
  });

  it('cancel while held leaves the request open; a re-run after approval runs at once (single use)', async () => {
    const aliceSub = await subjectOf(alice);
    const c = new pg.Client(t.conn(alice, db.name));
    await c.connect();
    const sql = 'UPDATE accounts SET balance = 0 WHERE id = 3';
    const running = c.query(sql).catch((e: Error & { code?: string }) => e);
    const a = await pendingFor(aliceSub);
    // A CancelRequest with the session's key, as psql's Ctrl-C sends it.
    const k = c as unknown as { processID: number; secretKey: number };
    await new Promise<void>((resolve) => {
      const s = net.connect(t.port, '127.0.0.1', () => s.end(cancelRequest(k.processID, k.secretKey)));
      s.on('close', () => resolve());
    });
    const e = (await running) as Error & { code?: string };
    expect(e.code).toBe('57014');
    expect((e as { detail?: string }).detail).toContain(`${a.id} stays open`);
    expect((await api(`/api/approvals/${a.id}`, dana)).body.approval.status).toBe('pending');
    await api(`/api/approvals/${a.id}/approve`, dana, 'POST', {});
    // The same statement again: it uses the approval without waiting.
    expect((await c.query(sql)).rowCount).toBe(1);
    expect((await api(`/api/approvals/${a.id}`, dana)).body.approval.status).toBe('executed');
    // And once more: a new request (the approval was single use).
    const third = c.query(sql).catch((x: Error) => x);
    const b = await pendingFor(aliceSub);
    expect(b.id).not.toBe(a.id);
    await api(`/api/approvals/${b.id}/deny`, alice, 'POST', { reason: 'never mind' });
    expect(String(await third)).toContain('withdrawn by the requester');
    await c.end();
  });
});

describe('approver groups from the rule', () => {
  it("members of a rule's approver groups see and decide its requests without the API approver role, and no others", async () => {
    const intern = await t.key('human', ['interns'], { name: 'ivy' });
    const mentor = await t.key('human', ['mentors'], { name: 'max' });
    const c = new pg.Client(t.conn(intern, db.name));
    await c.connect();
    const running = c.query('UPDATE accounts SET balance = 7 WHERE id = 9');
    const a = await pendingFor(await subjectOf(intern));
    const seen = (await api('/api/approvals?status=pending', mentor)).body.approvals as Approval[];
    expect(seen.map((x) => x.id)).toContain(a.id);
    // Other rules' requests stay out of the mentor's reach.
    const other = new pg.Client(t.conn(alice, db.name));
    await other.connect();
    const aliceRunning = other.query('UPDATE accounts SET balance = 8 WHERE id = 10').catch((e: Error) => e);
    const b = await pendingFor(await subjectOf(alice));
    expect(((await api('/api/approvals?status=pending', mentor)).body.approvals as Approval[]).map((x) => x.id)).not.toContain(b.id);
    expect((await api(`/api/approvals/${b.id}/approve`, mentor, 'POST', {})).status).toBe(404);
    await api(`/api/approvals/${b.id}/deny`, dana, 'POST', { reason: 'not now' });
    expect(String(await aliceRunning)).toContain('not now');
    expect((await api(`/api/approvals/${a.id}/approve`, mentor, 'POST', { reason: 'ok' })).status).toBe(200);
    expect((await running).rowCount).toBe(1);
    await c.end();
    await other.end();
  });
});

describe('approval events (SSE)', () => {
  it('streams each change to the approvers; a requester sees only their own', async () => {
    const open = async (token: string) => {
      const res = await fetch(`${base}/api/events`, { headers: { authorization: `Bearer ${token}` } });
      expect(res.headers.get('content-type')).toContain('text/event-stream');
      const reader = res.body!.getReader();
      let buf = '';
      const events: { event: string; data: any }[] = [];
      void (async () => {
        for (;;) {
          const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }));
          if (done) return;
          buf += Buffer.from(value!).toString('utf8');
          let i: number;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            const ev = /^event: (.*)$/m.exec(block)?.[1] ?? 'message';
            const data = block.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
            events.push({ event: ev, data: JSON.parse(data) });
          }
        }
      })();
      return { events, close: () => reader.cancel() };
    };
    const reviewer = await open(dana);
    const other = await open(await t.key('human', ['analysts'], { name: 'bob' }));
    const own = await open(alice);
    const req = await api('/api/grants', alice, 'POST', { database: db.name, role: 'read', duration: '1m', reason: 'sse test' });
    await api(`/api/approvals/${req.body.approval.id}/deny`, dana, 'POST', { reason: 'no' });
    // Wait for this request's two changes (other requests of this file may change meanwhile and be streamed too).
    const mine = (x: { events: { event: string; data: any }[] }) => x.events.filter((e) => e.event === 'approval' && e.data.id === req.body.approval.id).length;
    for (let i = 0; i < 200 && [reviewer, own].some((x) => mine(x) < 2); i++) await new Promise((r) => setTimeout(r, 50));
    const seen = reviewer.events.filter((e) => e.event === 'approval' && e.data.id === req.body.approval.id).map((e) => e.data.status);
    expect(seen).toEqual(['pending', 'denied']);
    // The requester follows her own request; another analyst (no approver role) sees nothing of it.
    expect(own.events.filter((e) => e.event === 'approval' && e.data.id === req.body.approval.id).map((e) => e.data.status)).toEqual(['pending', 'denied']);
    expect(other.events.some((e) => e.event === 'approval')).toBe(false);
    expect(other.events[0]?.event).toBe('hello');
    for (const s of [reviewer, other, own]) await s.close();
  });
});

describe('just-in-time grants', () => {
  it('approved write access lets statements through until it ends, enforced mid-session', async () => {
    const c = new pg.Client(t.conn(alice, db.name));
    await c.connect();
    const req = await api('/api/grants', alice, 'POST', { database: db.name, role: 'write', duration: '3s', reason: 'fix balances INC-7' });
    expect(req.status).toBe(201);
    const g = req.body.approval as Approval;
    expect((await api(`/api/approvals/${g.id}/approve`, alice, 'POST', {})).status).toBe(403);
    const ok = await api(`/api/approvals/${g.id}/approve`, dana, 'POST', { reason: 'ok for 3s' });
    expect(ok.body.approval.status).toBe('approved');
    // Without waiting for approval now:
    expect((await c.query('UPDATE accounts SET balance = 5 WHERE id = 4')).rowCount).toBe(1);
    // A grant never overrides a rule that says grants: false, nor DDL beyond its role.
    await expect(c.query('TRUNCATE audit_copy')).rejects.toThrow(/never-drop-audit/);
    // Expiry, mid-session: the next write is held again.
    await new Promise((r) => setTimeout(r, 3200));
    const held = c.query('UPDATE accounts SET balance = 6 WHERE id = 4').catch((e: Error) => e);
    const a = await pendingFor(await subjectOf(alice));
    await api(`/api/approvals/${a.id}/deny`, dana, 'POST', { reason: 'grant is over' });
    expect(String(await held)).toContain('grant is over');
    await t.gw.governor.audit.flush();
    const granted = await admin((c2) => c2.query(`SELECT count(*)::int AS n FROM audit_events WHERE type = 'statement' AND payload::jsonb->>'rule' = $1`, [`grant:${g.id}`]), t.storeDb);
    expect(granted.rows[0].n).toBe(1);
    await c.end();
  });

  it('rejects bad grant requests with clear errors', async () => {
    expect((await api('/api/grants', alice, 'POST', { database: 'x', role: 'root', duration: '1h', reason: 'r' })).body.error).toMatch(/role must be one of/);
    expect((await api('/api/grants', alice, 'POST', { database: 'x', role: 'read', duration: 'forever', reason: 'r' })).body.error).toMatch(/invalid duration/);
    expect((await api('/api/grants', alice, 'POST', { database: 'x', role: 'read', duration: '1h' })).body.error).toMatch(/needs a reason/);
  });
});
