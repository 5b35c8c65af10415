import type { StoredEvent } from '../audit/audit.js';

interface Vote {
  by: string;
  action: 'approve' | 'deny';
}

/** Reviewers of an approval event: `+dana` approved, `-bob` denied. */
function reviewers(e: StoredEvent): string | undefined {
  const votes = (e.details?.votes as Vote[] | undefined) ?? [];
  if (!Array.isArray(votes) || !votes.length) return undefined;
  return votes.map((v) => `${v.action === 'approve' ? '+' : '-'}${v.by}`).join(',');
}

/** One audit event as a line of `sluice audit list`: who, where, decision and rule, masking, approvals, SQL. */
export function formatEvent(e: StoredEvent): string {
  const who = e.subject ? `${e.subject}${e.identity_kind ? ` (${e.identity_kind}${e.acting_for ? ` for ${e.acting_for}` : ''})` : ''}` : '-';
  const parts = [e.ts ?? '', e.type.padEnd(13), who];
  if (e.database) parts.push(`db=${e.database}`);
  if (e.decision) parts.push(`${e.decision}${e.rule ? `[${e.rule}]` : ''}`);
  if (e.rows !== undefined) parts.push(`rows=${e.rows}`);
  if (e.duration_ms !== undefined) parts.push(`${e.duration_ms}ms`);
  if (e.tables?.length) parts.push(`tables=${e.tables.join(',')}`);
  const masked = Object.entries(e.masked ?? {});
  if (masked.length) parts.push(`masked=${masked.map(([k, n]) => `${k}:${n}`).join(',')}`);
  if (e.masking_exempt) parts.push('exempt(cleartext)');
  if (e.approval_id) parts.push(`approval=${e.approval_id}`);
  if (e.type === 'approval') {
    const d = e.details ?? {};
    if (typeof d.event === 'string') parts.push(`event=${d.event}`);
    if (typeof d.requester === 'string' && d.requester !== e.subject) parts.push(`requester=${d.requester}`);
    const r = reviewers(e);
    if (r) parts.push(`reviewers=${r}`);
  }
  if (e.sql) parts.push(JSON.stringify(e.sql.length > 160 ? e.sql.slice(0, 157) + '...' : e.sql));
  if (e.error) parts.push(`error=${JSON.stringify(e.error)}`);
  if (e.reason && !e.error) parts.push(`reason=${JSON.stringify(e.reason)}`);
  return parts.join('  ');
}

/** The audit event types `audit list --type` accepts (AuditEventType in audit/audit.ts). */
export const AUDIT_EVENT_TYPES = ['session_start', 'session_end', 'auth_failure', 'statement', 'key_created', 'key_revoked', 'policy_loaded', 'protocol_error', 'approval', 'tool_call', 'console_login', 'audit_refused', 'access_review'] as const;

/** The approval states `approvals list --status` accepts (ApprovalStatus in approvals/store.ts). */
export const APPROVAL_STATUSES = ['pending', 'approved', 'denied', 'expired', 'executed', 'revoked'] as const;

/** `sluice policy test` exit codes, so scripts can branch on the decision (2 stays "usage error"). */
export const POLICY_TEST_EXIT = { allow: 0, deny: 1, require_approval: 3 } as const;
