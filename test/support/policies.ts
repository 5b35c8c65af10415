import YAML from 'yaml';

/**
 * The policies the tests run under, built from one set of rules (so a rule means the same in every file and a
 * change to the policy language is made here once).
 */

export interface TestRule {
  name: string;
  match?: Record<string, unknown>;
  action: 'allow' | 'deny' | 'require_approval';
  reason?: string;
  approval?: { approvers?: string[]; quorum?: number; timeout_s?: number; agents_may_approve?: boolean };
  grants?: boolean;
}

export const rules = {
  /** BEGIN/COMMIT/SET and friends, for everyone. */
  session: (name = 'session-and-transactions'): TestRule => ({ name, match: { statements: ['transaction', 'session'] }, action: 'allow' }),
  /** Reads for a group. */
  read: (group: string, name = `${group}-read`): TestRule => ({ name, match: { groups: [group], statements: ['read'] }, action: 'allow' }),
  /** A group's statements of some classes held for approval. */
  reviewed: (group: string, statements: string[], name: string, approval?: TestRule['approval'], reason?: string): TestRule => ({ name, match: { groups: [group], statements }, action: 'require_approval', ...(reason ? { reason } : {}), ...(approval ? { approval } : {}) }),
  /** Everything for the group dba. */
  dba: (): TestRule => ({ name: 'dba', match: { groups: ['dba'] }, action: 'allow' }),
  destructiveNeedsDba: (groups: string[]): TestRule => ({ name: 'destructive-needs-dba', match: { destructive: true, groups }, action: 'deny', reason: 'destructive statements need a DBA' }),
  everything: (): TestRule => ({ name: 'everything', action: 'allow' }),
};

/** A policy file's text. */
export function policyYaml(o: { default?: 'allow' | 'deny'; rules: TestRule[]; masking?: Record<string, unknown> }): string {
  return YAML.stringify({ version: 1, ...(o.default ? { default: o.default } : {}), rules: o.rules, ...(o.masking ? { masking: o.masking } : {}) });
}

/** The rules of a gateway started without a policy: sessions, reads for analysts, read/write/ddl for app, all for dba. */
export const basePolicyRules = (): TestRule[] => [
  rules.session(),
  rules.destructiveNeedsDba(['analysts', 'app']),
  rules.read('analysts', 'analysts-read'),
  { name: 'app-read-write', match: { groups: ['app'], statements: ['read', 'write', 'ddl'] }, action: 'allow' },
  { name: 'dba', match: { groups: ['dba'], statements: ['read', 'write', 'ddl', 'admin'] }, action: 'allow' },
];
export const BASE_POLICY = policyYaml({ default: 'deny', rules: basePolicyRules() });

/** Analysts read and have their writes reviewed (by `approvers` when given); dba does anything. */
export const REVIEWED_WRITES_POLICY = (approvers?: string[]): string =>
  policyYaml({ default: 'deny', rules: [rules.session('session'), rules.reviewed('analysts', ['write'], 'analysts-write-reviewed', approvers ? { approvers } : undefined), rules.read('analysts'), rules.dba()] });
