import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { loadParser } from '../src/analyze/analyze.js';
import { AuditLog, type AuditEvent, type AuditSink } from '../src/audit/audit.js';
import { Governor } from '../src/governor.js';
import { Approvals } from '../src/approvals/service.js';
import { kyselyApprovalStore } from '../src/approvals/store.js';
import { openStore, type Store } from '../src/store/db.js';
import { parsePolicy } from '../src/policy/policy.js';
import type { Identity } from '../src/identity/identity.js';
import { policyYaml, rules } from './support/policies.js';
import { tmpDir } from './support/env.js';

/**
 * The Governor on its own, without a wire protocol: what it decides for grants, the inference guard and SQL-level
 * EXECUTE, and what it records (through Governor.for(engine), as the engines and MCP use it).
 */

const POLICY = policyYaml({
  default: 'deny',
  rules: [rules.session(), rules.read('analysts'), { name: 'never-with-grants', match: { tables: ['ledger'], statements: ['write'] }, action: 'deny', grants: false }, rules.dba()],
  masking: { inference_guard: true, columns: [{ column: 'customers.ssn', masker: 'partial' }], exempt: { groups: ['dba'] } },
});

const ana: Identity = { subject: 'human:ana', kind: 'human', groups: ['analysts'], method: 'key' };
const dana: Identity = { subject: 'human:dana', kind: 'human', groups: ['dba'], method: 'key' };

class MemorySink implements AuditSink {
  rows: Record<string, unknown>[] = [];
  async write(json: string): Promise<void> {
    this.rows.push(...(JSON.parse(json) as Record<string, unknown>[]));
  }
}

let store: Store;
let approvals: Approvals;
let governor: Governor;
let audit: AuditLog;
const recorded: AuditEvent[] = [];

beforeAll(async () => {
  await loadParser();
  store = await openStore({ kind: 'embedded', path: tmpDir('gov-store') });
  audit = new AuditLog(new MemorySink(), { flushMs: 5, spool: { dir: tmpDir('gov-spool'), fsync: 1000, maxBytes: 64 << 20 } });
  approvals = new Approvals({ store: kyselyApprovalStore(store.db), audit: (e) => governor.record(e), pollMs: 50 });
  await approvals.start();
  governor = new Governor({ policy: parsePolicy('policy.yaml', POLICY), audit, approvals });
  governor.recorder.onRecord((e) => recorded.push(e));
});
afterAll(async () => {
  await approvals?.close();
  await audit?.close();
  await store?.close();
});

describe('Governor decisions without a wire protocol', () => {
  const pg = () => governor.for('postgres');

  it('EXECUTE is judged as what PREPARE defined, from the session or from the same message', () => {
    const prepared = pg().check(ana, 'shop', 'PREPARE p AS DELETE FROM orders');
    expect(prepared.error?.code).toBe('42501');
    const session = new Map(prepared.analysis!.statements.map((s) => [s.prepares!, s]));
    const execute = pg().check(ana, 'shop', 'EXECUTE p', session);
    expect(execute.error?.code).toBe('42501');
    expect(execute.analysis!.classes).toEqual(['write']);
    const same = pg().check(dana, 'shop', 'PREPARE q AS SELECT 1; EXECUTE q');
    expect(same.error).toBeUndefined();
    expect(same.analysis!.statements[1]!.command).toBe('EXECUTE');
    const unknown = pg().check(dana, 'shop', 'EXECUTE nope');
    expect(unknown.decision.rule).toBe('unknown-prepared-statement');
    expect(unknown.error?.code).toBe('26000');
  });

  it('the inference guard refuses a masked column anywhere but a plain output, for identities it is masked for', () => {
    expect(pg().check(ana, 'shop', 'SELECT ssn FROM customers').error).toBeUndefined();
    const where = pg().check(ana, 'shop', "SELECT id FROM customers WHERE ssn LIKE '1%'");
    expect(where.decision.rule).toBe('inference-guard');
    expect(where.error?.message).toMatch(/column "ssn" is masked for you/);
    expect(pg().check(ana, 'shop', 'SELECT id FROM customers ORDER BY ssn').decision.rule).toBe('inference-guard');
    expect(pg().check(dana, 'shop', "SELECT id FROM customers WHERE ssn LIKE '1%'").error).toBeUndefined();
  });

  it('an approved just-in-time grant lets through what the policy denies, until it ends, except where grants: false', async () => {
    expect(pg().check(ana, 'shop', 'UPDATE orders SET total = 1 WHERE id = 1').error?.code).toBe('42501');
    const request = await approvals.requestGrant(ana, { database: 'shop', role: 'write', duration_s: 2, reason: 'INC-1' });
    await approvals.decide(request.id, dana, 'approve');
    await expect.poll(() => pg().check(ana, 'shop', 'UPDATE orders SET total = 1 WHERE id = 1').decision.rule, { timeout: 5000 }).toBe(`grant:${request.id}`);
    expect(pg().check(ana, 'other', 'UPDATE orders SET total = 1 WHERE id = 1').error?.code).toBe('42501');
    expect(pg().check(ana, 'shop', 'UPDATE ledger SET total = 1 WHERE id = 1').decision.rule).toBe('never-with-grants');
    await expect.poll(() => pg().check(ana, 'shop', 'UPDATE orders SET total = 1 WHERE id = 1').error?.code, { timeout: 5000 }).toBe('42501');
  });

  it('records through the engine view: metrics and audit alike, and a refused-while-unhealthy statement is only counted', () => {
    const before = recorded.length;
    const mysql = governor.for('mysql');
    expect(governor.for('mysql')).toBe(mysql);
    mysql.record({ type: 'statement', subject: ana.subject, sql: 'SELECT 1', protocol: 'mysql', decision: 'allow', rule: 'analysts-read' });
    expect(recorded.length).toBe(before + 1);
    expect(governor.metrics.render({ connections: 0, audit: audit.health() })).toMatch(/sluice_statements_total\{decision="allow"\} [1-9]/);
    mysql.record({ type: 'statement', subject: ana.subject, sql: 'SELECT 1', protocol: 'mysql', decision: 'deny', rule: 'audit-unavailable' });
    expect(recorded.length).toBe(before + 1);
  });
});
