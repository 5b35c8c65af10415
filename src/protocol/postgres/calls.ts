import type { EngineGovernor, Verdict } from '../../governor.js';
import type { Identity } from '../../identity/identity.js';
import type { Decision } from '../../policy/policy.js';
import type { Approval } from '../../approvals/store.js';
import * as m from './messages.js';

/**
 * A fast-path call, judged as the SQL call of the function its OID names in this database. Functions whose result
 * is raw data (large object contents) are refused to identities whose results are masked: they cannot be scanned.
 */
export function decideFastPath(gov: EngineGovernor, identity: Identity, database: string, oid: number, decide: (sql: string) => Verdict): { sql: string; verdict: Verdict } {
  const name = gov.functionName(database, oid);
  const refuse = (sql: string, reason: string): { sql: string; verdict: Verdict } => ({ sql, verdict: { decision: { action: 'deny', rule: 'sluice-guard', reason }, error: { code: '42501', message: `Sluice refuses this fast-path call: ${reason}` } } });
  if (!name) return refuse(`SELECT fastpath_function_${oid}() -- fast-path call`, `function OID ${oid} is not one Sluice knows in database "${database}"`);
  const sql = `SELECT ${name.split('.').map((p) => `"${p.replace(/"/g, '""')}"`).join('.')}() -- fast-path call`;
  const verdict = decide(sql);
  if (verdict.decision.action === 'require_approval') return refuse(sql, `${name} needs approval under rule "${verdict.decision.rule}", and a fast-path call cannot be held; call it with SQL`);
  if (!verdict.error && /^pg_catalog\.(loread|lo_get)$/.test(name) && gov.masks(identity, verdict.analysis)) {
    return refuse(sql, `${name} returns large object contents, which Sluice cannot mask; it is allowed only to identities exempt from masking`);
  }
  return { sql, verdict };
}

/** The NOTICE a client gets while its statement is held for approval: where to approve it, who may, until when. */
export function approvalNotice(a: Approval, url: string, d: Decision, what: string): Buffer {
  const need = a.quorum > 1 ? `${a.quorum} approvals` : 'approval';
  return m.noticeResponse({
    severity: 'NOTICE',
    code: '01000',
    message: `awaiting approval ${a.id}: ${url}`,
    detail: `Sluice policy rule "${d.rule}" needs ${need}${a.approver_groups.length ? ` from ${a.approver_groups.join(' or ')}` : ''} before this ${what} runs${d.reason ? ` (${d.reason})` : ''}.`,
    hint: `It runs as soon as it is approved; it waits until ${a.expires_at}. Cancel (Ctrl-C) to stop waiting.`,
  });
}
