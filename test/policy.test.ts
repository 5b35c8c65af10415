import { describe, it, expect, beforeAll } from 'vitest';
import { parsePolicy, evaluate, loadPolicy } from '../src/policy/policy.js';
import { ConfigError } from '../src/util/yamlfile.js';
import { analyzeUncached, loadParser, type Analysis } from '../src/analyze/analyze.js';
import type { Identity } from '../src/identity/identity.js';

beforeAll(() => loadParser());

const errorOf = (text: string) => {
  try {
    parsePolicy('policy.yaml', text);
  } catch (e) {
    return (e as Error).message;
  }
  return 'no error';
};

describe('policy file errors name the exact file:line:col', () => {
  it('unknown keys', () => {
    expect(errorOf('version: 1\nrules:\n  - name: a\n    action: allow\n    mtach: {}\n')).toBe('policy.yaml:5:5: unknown key "mtach" in rules.0');
  });
  it('bad enum values', () => {
    expect(errorOf('version: 1\nrules:\n  - name: a\n    action: permit\n')).toBe('policy.yaml:4:13: rules.0.action must be one of: allow, deny, require_approval');
    expect(errorOf('version: 1\nrules:\n  - name: a\n    action: deny\n    match:\n      statements: [read, wirte]\n')).toBe('policy.yaml:6:26: rules.0.match.statements.1 must be one of: read, write, ddl, admin, transaction, session, other');
  });
  it('missing required keys', () => {
    expect(errorOf('version: 1\nrules:\n  - name: a\n')).toBe('policy.yaml:3:5: rules.0 is missing required key "action"');
  });
  it('YAML syntax errors', () => {
    expect(errorOf('version: 1\nrules:\n  - name: [a\n')).toMatch(/^policy\.yaml:4:1: /);
  });
  it('duplicate rule names', () => {
    expect(errorOf('version: 1\nrules:\n  - { name: a, action: allow }\n  - { name: a, action: deny }\n')).toBe('policy.yaml:4:5: duplicate rule name "a" (first defined at policy.yaml:3:5)');
  });
  it('an unreadable file', () => {
    expect(() => loadPolicy('/nonexistent/policy.yaml')).toThrow(ConfigError);
  });
});

const P = parsePolicy(
  'p.yaml',
  `version: 1
default: deny
rules:
  - name: tx
    match: { statements: [transaction] }
    action: allow
  - name: no-salaries
    match: { tables: [hr.salaries] }
    action: deny
    reason: salaries are off limits
  - name: no-multi-for-agents
    match: { kinds: [agent], flags: [multi-statement] }
    action: deny
  - name: reports
    match: { groups: [analysts], statements: [read], only_tables: ["public.*", "orders"] }
    action: allow
  - name: ci-writes
    match: { kinds: [service], subjects: ["repo:acme/*"], databases: [app_*], statements: [read, write] }
    action: allow
`,
);
const who = (o: Partial<Identity>): Identity => ({ subject: 'x', kind: 'human', groups: [], method: 'key', ...o });
const A = (sql: string): Analysis => {
  const r = analyzeUncached(sql);
  if (!r.ok) throw new Error(r.error);
  return r;
};
const decide = (id: Partial<Identity>, sql: string, database = 'app_main') => evaluate(P, { identity: who(id), database }, A(sql));

describe('policy evaluation', () => {
  it('first matching rule decides; default applies when none matches', () => {
    expect(decide({ groups: ['analysts'] }, 'SELECT * FROM orders')).toMatchObject({ action: 'allow', rule: 'reports' });
    expect(decide({ groups: ['analysts'] }, 'DELETE FROM orders WHERE id = 1')).toMatchObject({ action: 'deny', rule: 'default' });
  });
  it('tables: any referenced table matches (also unqualified references to a qualified pattern)', () => {
    expect(decide({ groups: ['analysts'] }, 'SELECT * FROM orders JOIN salaries USING (id)')).toMatchObject({ action: 'deny', rule: 'no-salaries', reason: 'salaries are off limits' });
  });
  it('only_tables: every table must match', () => {
    expect(decide({ groups: ['analysts'] }, 'SELECT * FROM public.a JOIN orders USING (id)')).toMatchObject({ action: 'allow' });
    expect(decide({ groups: ['analysts'] }, 'SELECT * FROM public.a JOIN secret.b USING (id)')).toMatchObject({ action: 'deny', rule: 'default' });
    expect(decide({ groups: ['analysts'] }, 'SELECT 1')).toMatchObject({ action: 'deny' });
  });
  it('subjects and databases match by glob; kinds by identity kind', () => {
    expect(decide({ kind: 'service', subject: 'repo:acme/api:ref:refs/heads/main' }, 'INSERT INTO t VALUES (1)')).toMatchObject({ action: 'allow', rule: 'ci-writes' });
    expect(decide({ kind: 'service', subject: 'repo:evil/api' }, 'INSERT INTO t VALUES (1)')).toMatchObject({ action: 'deny' });
    expect(decide({ kind: 'service', subject: 'repo:acme/api' }, 'INSERT INTO t VALUES (1)', 'billing')).toMatchObject({ action: 'deny' });
    expect(decide({ kind: 'human', subject: 'repo:acme/api' }, 'INSERT INTO t VALUES (1)')).toMatchObject({ action: 'deny' });
  });
  it('require_approval: a message needs approval if any statement does, unless another is denied', () => {
    const Q = parsePolicy('q.yaml', `version: 1
rules:
  - { name: reads, match: { statements: [read] }, action: allow }
  - { name: writes, match: { statements: [write] }, action: require_approval, approval: { approvers: [dba], quorum: 2, timeout_s: 60 } }
`);
    const q = (sql: string) => evaluate(Q, { identity: who({}), database: 'd' }, A(sql));
    expect(q('SELECT 1; UPDATE t SET a = 1 WHERE id = 2')).toMatchObject({ action: 'require_approval', rule: 'writes', statement: 1, approval: { approvers: ['dba'], quorum: 2, timeout_s: 60 } });
    expect(q('UPDATE t SET a = 1 WHERE id = 2; DROP TABLE t')).toMatchObject({ action: 'deny', rule: 'default', statement: 1 });
    expect(errorOf('version: 1\nrules:\n  - name: a\n    action: allow\n    approval: { quorum: 2 }\n')).toBe('policy.yaml:5:15: rule "a": "approval" only applies to action require_approval');
    expect(errorOf('version: 1\nrules:\n  - name: a\n    action: require_approval\n    approval: { quorum: 0 }\n')).toMatch(/^policy.yaml:5:25: rules.0.approval.quorum must be >= 1/);
  });
  it('a message is allowed only if every statement is; the first denial names the statement', () => {
    const d = decide({ groups: ['analysts'] }, 'BEGIN; SELECT * FROM orders; DELETE FROM orders WHERE id = 1');
    expect(d).toMatchObject({ action: 'deny', rule: 'default', statement: 2 });
    expect(decide({ kind: 'agent', groups: ['analysts'] }, 'SELECT * FROM orders; SELECT * FROM orders')).toMatchObject({ action: 'deny', rule: 'no-multi-for-agents' });
  });
});

describe('masking classification labels', () => {
  it('a rule by label covers every labelled column', () => {
    const p = parsePolicy('p.yaml', `version: 1
rules: []
masking:
  labels:
    pii: [customers.email, customers.phone]
    financial: [iban]
  columns:
    - { label: pii, masker: hash }
    - { label: financial, masker: redact, groups: [support] }
`);
    expect(p.masking!.columns).toEqual([
      { label: 'pii', column: 'customers.email', masker: 'hash' },
      { label: 'pii', column: 'customers.phone', masker: 'hash' },
      { label: 'financial', column: 'iban', masker: 'redact', groups: ['support'] },
    ]);
  });
  it('an unknown label is an error at its line', () => {
    expect(errorOf('version: 1\nrules: []\nmasking:\n  columns:\n    - masker: hash\n      label: secret\n')).toBe('policy.yaml:6:14: unknown classification label "secret" (define it under masking.labels)');
  });
  it('a rule needs a column or a label', () => {
    expect(errorOf('version: 1\nrules: []\nmasking:\n  columns:\n    - masker: hash\n')).toBe('policy.yaml:5:7: masking.columns.0 needs exactly one of "column" or "label"');
    expect(errorOf('version: 1\nrules: []\nmasking:\n  labels: { a: [x] }\n  columns:\n    - { masker: hash, column: x, label: a }\n')).toBe('policy.yaml:6:7: masking.columns.0 needs exactly one of "column" or "label"');
  });
});
