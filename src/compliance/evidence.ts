import type { AuditEvent } from '../audit/audit.js';
import type { Approval } from '../approvals/store.js';
import { sensitivePairs, type EvidenceInputs } from './collect.js';
import { verifyIntegrity, type IntegrityReport } from './integrity.js';
import { lineDiff, maskedColumns } from './policyversions.js';

/**
 * The evidence of a period, mapped to SOC 2 criteria. A pure function of the pack's inputs: `evidence verify`
 * recomputes it from the (hash-verified) events and compares, so the report cannot say what the events do not.
 */
export interface Evidence {
  format: 'sluice-evidence/1';
  period: { from: string; to: string };
  generated_at: string;
  generator: string;
  summary: Record<string, number>;
  cc6_1_logical_access: { identities: IdentityRow[]; groups: { group: string; members: string[] }[]; keys: KeyRow[]; policy_versions: PolicyRow[] };
  cc6_3_provisioning: { grants: GrantRow[]; key_changes: { ts: string; event: string; key_id: string; subject?: string; by?: string }[] };
  cc7_2_monitoring: { denied: { total: number; by_subject: { subject: string; count: number }[]; items: Row[] }; held: HeldRow[]; auth_failures: { total: number; by_reason: { reason: string; count: number }[]; items: Row[] }; anomalies: Anomaly[] };
  cc8_1_change_management: HeldRow[];
  data_exposure: ExposureRow[];
  access_reviews: { id: string; created_at: string; created_by: string; status: string; closed_at?: string; items: number; confirmed: number; revoked: number; undecided: number; decisions: { item: string; subject: string; decision: string; reviewer: string; reason?: string; at: string }[] }[];
  integrity: IntegrityReport;
}
type Row = Record<string, string | number | boolean | undefined>;
export interface IdentityRow { subject: string; kind: string; groups: string[]; auth_methods: string[]; first_seen: string; last_seen: string; sessions: number; statements: number; denied: number; acting_for: string[] }
export interface KeyRow { key_id: string; name: string; subject: string; kind: string; groups: string[]; created_at: string; created_by: string | null; expires_at: string | null; revoked_at: string | null; last_used_at: string | null; created_in_period: boolean; revoked_in_period: boolean; expired_in_period: boolean; logins_in_period: number }
export interface PolicyRow { id: string; hash: string; loaded_at: string; loaded_by: string; in_force_until?: string; rules: number; text: string; diff_from_previous: string[] }
export interface GrantRow { id: string; requester: string; acting_for?: string; database: string; role?: string; duration_s?: number; justification?: string; status: string; requested_at: string; approvers: string[]; votes: string[]; valid_until?: string; revoked_at?: string; revoked_by?: string; revoke_reason?: string }
export interface HeldRow { id: string; requester: string; acting_for?: string; database: string; sql?: string; rule?: string; status: string; requested_at: string; reviewers: { by: string; action: string; reason?: string; at: string }[]; preview?: string; executed_at?: string; rows?: number; error?: string; destructive?: string[] }
export interface Anomaly { ts: string; kind: 'first_sensitive_access' | 'denial_burst' | 'auth_failure_burst'; subject?: string; detail: string }
export interface ExposureRow { subject: string; kind: string; statements_with_rows: number; masked: Record<string, number>; masked_tables: string[]; exempt_statements: number; exempt_tables: string[]; exempt_columns: string[] }

/** Most detail rows per list (totals always count everything). */
export const MAX_ROWS = 2000;
const BURST_WINDOW_MS = 60_000;
const DENIAL_BURST = 5;
const AUTH_BURST = 10;

const sorted = <T>(s: Iterable<T>) => [...s].sort();
const inc = (m: Map<string, number>, k: string, n = 1) => m.set(k, (m.get(k) ?? 0) + n);
const top = (m: Map<string, number>, key: string) => [...m].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).map(([k, count]) => ({ [key]: k, count }) as never);

function identities(events: AuditEvent[]): { rows: IdentityRow[]; groups: { group: string; members: string[] }[] } {
  const m = new Map<string, IdentityRow & { _g: Set<string>; _m: Set<string>; _a: Set<string> }>();
  for (const e of events) {
    if (!e.subject || !['session_start', 'statement', 'tool_call', 'console_login'].includes(e.type)) continue;
    let r = m.get(e.subject);
    if (!r) m.set(e.subject, (r = { subject: e.subject, kind: e.identity_kind ?? '', groups: [], auth_methods: [], first_seen: e.ts!, last_seen: e.ts!, sessions: 0, statements: 0, denied: 0, acting_for: [], _g: new Set(), _m: new Set(), _a: new Set() }));
    r.last_seen = e.ts! > r.last_seen ? e.ts! : r.last_seen;
    for (const g of e.groups ?? []) r._g.add(g);
    if (e.auth_method) r._m.add(e.auth_method);
    if (e.acting_for) r._a.add(e.acting_for);
    if (e.type === 'session_start') r.sessions++;
    if (e.type === 'statement') (r.statements++, e.decision === 'deny' && r.denied++);
  }
  const groups = new Map<string, Set<string>>();
  const rows = sorted(m.keys()).map((k) => {
    const { _g, _m, _a, ...r } = m.get(k)!;
    for (const g of _g) (groups.get(g) ?? groups.set(g, new Set()).get(g)!).add(r.subject);
    return { ...r, groups: sorted(_g), auth_methods: sorted(_m), acting_for: sorted(_a) };
  });
  return { rows, groups: sorted(groups.keys()).map((g) => ({ group: g, members: sorted(groups.get(g)!) })) };
}

function keyRows(inputs: EvidenceInputs, events: AuditEvent[]): KeyRow[] {
  const { from, to } = inputs.period;
  const within = (t: string | null) => !!t && t >= from && t <= to;
  const logins = new Map<string, number>();
  for (const e of events) if (e.type === 'session_start' && e.key_id) inc(logins, e.key_id);
  return inputs.keys
    .filter((k) => k.created_at <= to && (!k.revoked_at || k.revoked_at >= from))
    .map((k) => ({
      key_id: k.id, name: k.name, subject: k.subject, kind: k.kind, groups: k.groups, created_at: k.created_at, created_by: k.created_by, expires_at: k.expires_at, revoked_at: k.revoked_at, last_used_at: k.last_used_at,
      created_in_period: within(k.created_at), revoked_in_period: within(k.revoked_at), expired_in_period: within(k.expires_at), logins_in_period: logins.get(k.id) ?? 0,
    }));
}

function policyRows(inputs: EvidenceInputs): PolicyRow[] {
  const v = inputs.policy_versions;
  return v.map((p, i) => ({
    id: p.id, hash: p.hash, loaded_at: p.loaded_at, loaded_by: p.loaded_by, in_force_until: v[i + 1]?.loaded_at,
    rules: (p.text.match(/^ {2}- name:/gm) ?? []).length, text: p.text, diff_from_previous: i === 0 ? [] : lineDiff(v[i - 1]!.text, p.text).filter((l) => !l.startsWith('  ')),
  }));
}

const voteList = (a: Approval) => a.votes.map((x) => ({ by: x.by, action: x.action, reason: x.reason, at: x.at }));

function heldRows(approvals: Approval[], events: AuditEvent[]): HeldRow[] {
  const ran = new Map<string, AuditEvent>();
  for (const e of events) if (e.type === 'statement' && e.approval_id && e.decision === 'allow') ran.set(e.approval_id, e);
  return approvals
    .filter((a) => a.kind === 'statement')
    .map((a) => {
      const e = ran.get(a.id);
      const p = a.preview;
      const preview = p ? (p.error ? `preview failed: ${p.error}` : p.rows_affected !== undefined ? `would affect ${p.rows_affected} rows` : (p.objects ?? []).map((o) => `${o.command} ${o.name}${o.rows !== undefined ? ` (${o.rows} rows)` : ''}`).join('; ') || p.note) : undefined;
      return { id: a.id, requester: a.requester, acting_for: a.acting_for, database: a.database, sql: a.sql, rule: a.rule, status: a.status, requested_at: a.created_at, reviewers: voteList(a), preview, executed_at: e?.ts, rows: e?.rows ?? a.outcome?.rows, error: e?.error ?? a.outcome?.error, destructive: a.destructive };
    });
}

function grantRows(approvals: Approval[]): GrantRow[] {
  return approvals
    .filter((a) => a.kind === 'grant')
    .map((a) => ({
      id: a.id, requester: a.requester, acting_for: a.acting_for, database: a.database, role: a.role, duration_s: a.duration_s, justification: a.justification, status: a.status, requested_at: a.created_at,
      approvers: a.votes.filter((v) => v.action === 'approve').map((v) => v.by), votes: a.votes.map((v) => `${v.action} by ${v.by} at ${v.at}${v.reason ? `: ${v.reason}` : ''}`),
      valid_until: a.grant_expires_at, revoked_at: a.revoked_at, revoked_by: a.revoked_by, revoke_reason: a.revoke_reason,
    }));
}

/** Bursts: at least `n` events of one key within a minute (one anomaly per burst). */
function bursts(events: AuditEvent[], keyOf: (e: AuditEvent) => string | undefined, n: number, kind: Anomaly['kind'], what: string): Anomaly[] {
  const by = new Map<string, string[]>();
  for (const e of events) {
    const k = keyOf(e);
    if (k) (by.get(k) ?? by.set(k, []).get(k)!).push(e.ts!);
  }
  const out: Anomaly[] = [];
  for (const [k, ts] of by) {
    const t = ts.map((x) => Date.parse(x)).sort((a, b) => a - b);
    for (let i = 0, j = 0; j < t.length; j++) {
      while (t[j]! - t[i]! > BURST_WINDOW_MS) i++;
      if (j - i + 1 === n) {
        let end = j;
        while (end + 1 < t.length && t[end + 1]! - t[i]! <= BURST_WINDOW_MS) end++;
        out.push({ ts: new Date(t[i]!).toISOString(), kind, subject: k, detail: `${end - i + 1} ${what} within a minute` });
        i = end + 1;
        j = end;
      }
    }
  }
  return out;
}

/** Columns that are sensitive: masked by a rule of any policy version, named by a masked-value count, or named like a detector that masked values. */
function sensitiveColumns(inputs: EvidenceInputs, events: AuditEvent[]): Set<string> {
  const s = new Set(inputs.policy_versions.flatMap((v) => maskedColumns(v.text)));
  const last = (c: string) => c.slice(c.lastIndexOf('.') + 1).toLowerCase();
  for (const e of events) {
    for (const k of Object.keys(e.masked ?? {})) {
      if (k.includes('.')) s.add(last(k));
      // A detector's hits (email, card, ...) come from the statement's columns named like it (card → card_number).
      else for (const c of e.columns ?? []) if (last(c).includes(k.toLowerCase())) s.add(last(c));
    }
  }
  return s;
}

function anomalies(inputs: EvidenceInputs, events: AuditEvent[]): Anomaly[] {
  const seen = new Set(inputs.prior_sensitive);
  const sensitive = sensitiveColumns(inputs, events);
  const out: Anomaly[] = [];
  for (const e of events) {
    if (e.type !== 'statement' || e.decision !== 'allow') continue;
    for (const p of sensitivePairs(e)) {
      const col = p.slice(e.subject!.length + 1);
      if (seen.has(p) || !sensitive.has(col.slice(col.lastIndexOf('.') + 1).toLowerCase())) continue;
      seen.add(p);
      out.push({ ts: e.ts!, kind: 'first_sensitive_access', subject: e.subject, detail: `first read of ${col} (${e.masking_exempt ? 'cleartext, exempt from masking' : 'masked'})` });
    }
  }
  out.push(...bursts(events.filter((e) => e.type === 'statement' && e.decision === 'deny'), (e) => e.subject, DENIAL_BURST, 'denial_burst', 'denied statements'));
  out.push(...bursts(events.filter((e) => e.type === 'auth_failure'), (e) => e.client_addr ?? e.subject, AUTH_BURST, 'auth_failure_burst', 'failed logins'));
  return out.sort((a, b) => a.ts.localeCompare(b.ts) || a.kind.localeCompare(b.kind));
}

function exposure(events: AuditEvent[]): ExposureRow[] {
  const m = new Map<string, ExposureRow & { _mt: Set<string>; _et: Set<string>; _ec: Set<string> }>();
  for (const e of events) {
    if (e.type !== 'statement' || e.decision !== 'allow' || !e.rows || !e.subject) continue;
    let r = m.get(e.subject);
    if (!r) m.set(e.subject, (r = { subject: e.subject, kind: e.identity_kind ?? '', statements_with_rows: 0, masked: {}, masked_tables: [], exempt_statements: 0, exempt_tables: [], exempt_columns: [], _mt: new Set(), _et: new Set(), _ec: new Set() }));
    r.statements_with_rows++;
    for (const [k, v] of Object.entries(e.masked ?? {})) r.masked[k] = (r.masked[k] ?? 0) + v;
    if (e.masked && Object.keys(e.masked).length) for (const t of e.tables ?? []) r._mt.add(t);
    if (e.masking_exempt) {
      r.exempt_statements++;
      for (const t of e.tables ?? []) r._et.add(t);
      for (const c of e.columns ?? []) r._ec.add(c);
    }
  }
  return sorted(m.keys()).map((k) => {
    const { _mt, _et, _ec, ...r } = m.get(k)!;
    return { ...r, masked: Object.fromEntries(Object.entries(r.masked).sort()), masked_tables: sorted(_mt), exempt_tables: sorted(_et), exempt_columns: sorted(_ec) };
  });
}

const statementRow = (e: AuditEvent): Row => ({ ts: e.ts, subject: e.subject, kind: e.identity_kind, acting_for: e.acting_for, database: e.database, client_addr: e.client_addr, rule: e.rule, reason: e.reason, sql: e.sql?.slice(0, 2000) });

function monitoring(inputs: EvidenceInputs, events: AuditEvent[]): Evidence['cc7_2_monitoring'] {
  const denied = events.filter((e) => e.type === 'statement' && e.decision === 'deny');
  const fails = events.filter((e) => e.type === 'auth_failure');
  const bySubject = new Map<string, number>();
  for (const e of denied) inc(bySubject, e.subject ?? '(unknown)');
  const byReason = new Map<string, number>();
  for (const e of fails) inc(byReason, e.reason ?? e.error ?? '(none)');
  return {
    denied: { total: denied.length, by_subject: top(bySubject, 'subject'), items: denied.slice(0, MAX_ROWS).map(statementRow) },
    held: heldRows(inputs.approvals, events),
    auth_failures: { total: fails.length, by_reason: top(byReason, 'reason'), items: fails.slice(0, MAX_ROWS).map((e) => ({ ts: e.ts, subject: e.subject, client_addr: e.client_addr, application_name: e.application_name, key_id: e.key_id, reason: e.reason ?? e.error })) },
    anomalies: anomalies(inputs, events),
  };
}

function reviews(inputs: EvidenceInputs): Evidence['access_reviews'] {
  return inputs.reviews.map((r) => {
    const subjectOf = new Map(r.items.map((i) => [i.id, i.subject]));
    const c = (d: string) => r.decisions.filter((x) => x.decision === d).length;
    return {
      id: r.id, created_at: r.created_at, created_by: r.created_by, status: r.status, closed_at: r.closed_at, items: r.items.length, confirmed: c('confirm'), revoked: c('revoke'), undecided: r.items.length - r.decisions.length,
      decisions: r.decisions.map((d) => ({ item: d.item_id, subject: subjectOf.get(d.item_id) ?? '', decision: d.decision, reviewer: d.reviewer, reason: d.reason, at: d.decided_at })),
    };
  });
}

/** The period's events (by their hashed time), parsed; events of other times in the pack are chain context only. */
export function periodEvents(inputs: EvidenceInputs): AuditEvent[] {
  const { from, to } = inputs.period;
  const out: AuditEvent[] = [];
  for (const r of inputs.events) {
    if (r.ts < from || r.ts > to) continue;
    try {
      out.push(JSON.parse(r.payload) as AuditEvent);
    } catch {
      /* reported by the integrity check */
    }
  }
  return out.sort((a, b) => (a.ts! < b.ts! ? -1 : a.ts! > b.ts! ? 1 : 0));
}

export function buildEvidence(inputs: EvidenceInputs, pinnedKeyPem?: string): Evidence {
  const events = periodEvents(inputs);
  const ids = identities(events);
  const mon = monitoring(inputs, events);
  const integrity = verifyIntegrity(inputs, pinnedKeyPem);
  const changes = mon.held.filter((h) => h.status !== 'pending' || h.executed_at);
  const keyChanges = events.filter((e) => e.type === 'key_created' || e.type === 'key_revoked').map((e) => ({ ts: e.ts!, event: e.type === 'key_created' ? 'created' : 'revoked', key_id: String(e.details?.key_id ?? ''), subject: (e.details?.key_subject as string | undefined) ?? undefined, by: e.subject }));
  const ev: Evidence = {
    format: 'sluice-evidence/1', period: inputs.period, generated_at: inputs.generated_at, generator: inputs.generator, summary: {},
    cc6_1_logical_access: { identities: ids.rows, groups: ids.groups, keys: keyRows(inputs, events), policy_versions: policyRows(inputs) },
    cc6_3_provisioning: { grants: grantRows(inputs.approvals), key_changes: keyChanges },
    cc7_2_monitoring: mon,
    cc8_1_change_management: changes,
    data_exposure: exposure(events),
    access_reviews: reviews(inputs),
    integrity,
  };
  ev.summary = {
    events: events.length, identities: ids.rows.length, statements: events.filter((e) => e.type === 'statement').length, denied: mon.denied.total, held: mon.held.length, auth_failures: mon.auth_failures.total,
    anomalies: mon.anomalies.length, grants: ev.cc6_3_provisioning.grants.length, policy_versions: ev.cc6_1_logical_access.policy_versions.length, access_reviews: ev.access_reviews.length,
    chains: integrity.chains.length, chains_intact: integrity.chains.filter((c) => c.ok).length, checkpoints: integrity.chains.reduce((n, c) => n + c.checkpoints, 0), unsigned_events: integrity.chains.reduce((n, c) => n + c.unsigned_in_period, 0),
  };
  return ev;
}
