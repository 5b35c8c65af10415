import { performance } from 'node:perf_hooks';
import type { AuditEvent } from '../../audit/audit.js';
import { analysisFields, analysisJson, identityFields, jsonMembers } from '../../audit/fields.js';
import type { Analysis } from '../../analyze/analyze.js';
import type { Identity } from '../../identity/identity.js';
import type { MaskCounts } from '../../masking/values.js';
import type { Engine } from '../../util/engine.js';
import type { EngineGovernor, Verdict } from '../../governor.js';
import type { SessionInfo } from './registry.js';

/** How a statement reached the gateway. */
export type StatementProtocol = 'simple' | 'extended' | 'fastpath' | 'mysql' | 'mysql-prepared' | 'mcp';

/** A statement that was sent to the database (it may have failed there, or not completed). */
export interface RanStatement {
  sql?: string;
  protocol: StatementProtocol;
  /** Prepared statement name (PostgreSQL extended protocol). */
  name?: string;
  analysis?: Analysis;
  rule?: string;
  approvalId?: string;
  rows?: number;
  masked?: MaskCounts | Record<string, number>;
  /** performance.now() when it was sent. */
  t0?: number;
  error?: { message?: string; code?: string | number };
  details?: Record<string, unknown>;
}

/** A number as JSON.stringify writes it (without the call: this runs for every statement). */
const jsonNumber = (n: number): string => (Number.isFinite(n) ? String(n) : 'null');
/** Strings a session repeats (protocols, rule names), serialised once. */
const jsonStrings = new Map<string, string>();
function jsonString(v: string): string {
  let j = jsonStrings.get(v);
  if (j === undefined) {
    if (jsonStrings.size >= 4096) jsonStrings.clear();
    jsonStrings.set(v, (j = JSON.stringify(v)));
  }
  return j;
}

const durationMs = (t0: number) => Math.round((performance.now() - t0) * 1000) / 1000;
/** The cells masked, by detector or rule; undefined when none were. */
const maskedObject = (m: RanStatement['masked']): Record<string, number> | undefined => {
  if (!m) return undefined;
  const o = m instanceof Map ? Object.fromEntries(m) : m;
  return Object.keys(o).length ? o : undefined;
};

/** Engine-specific fields for events other than statements (the PostgreSQL engine is the default and says nothing). */
export const engineDetails = (engine: Engine): Record<string, unknown> | undefined => (engine === 'postgres' ? undefined : { engine });

/**
 * The one builder of statement audit events, for every engine and MCP: what was refused before it ran, what ran
 * (rows, masking, exemption, duration, error), and the outcome of the approval it ran under.
 */
export class StatementAudit {
  constructor(
    private readonly gov: EngineGovernor,
    private readonly identity: Identity,
    /** Fields every event carries (session, identity, client, database); read per event, so they can change (USE). */
    private readonly fields: () => Partial<AuditEvent>,
  ) {}

  /** A statement refused before it reached the database (policy, guard, approval denied). */
  denied(sql: string | undefined, v: Pick<Verdict, 'analysis' | 'decision' | 'error' | 'approvalId'>, protocol: StatementProtocol, o: { name?: string; details?: Record<string, unknown> } = {}): void {
    this.gov.record({ type: 'statement', ...this.fields(), sql, protocol, statement_name: o.name || undefined, ...analysisFields(v.analysis), decision: 'deny', rule: v.decision.rule, reason: v.error?.message, error_code: v.error?.code, approval_id: v.approvalId, details: o.details });
  }

  /** A command the engine itself refused or answered (not judged by policy): USE of an unserved database, KILL. */
  engineDecision(sql: string, protocol: StatementProtocol, decision: 'allow' | 'deny', rule: string, o: { reason?: string; errorCode?: string; details?: Record<string, unknown> } = {}): void {
    this.gov.record({ type: 'statement', ...this.fields(), sql, protocol, decision, rule, reason: o.reason, error_code: o.errorCode, ...(decision === 'allow' ? { rows: 0 } : {}), details: o.details });
  }

  /** A statement that was sent to the database, with what came of it. */
  ran(r: RanStatement): void {
    const error = r.error?.message;
    const f = this.fields();
    if (f !== this.lastFields) {
      this.lastFields = f;
      this.fieldsJson = jsonMembers(f);
    }
    const a = r.analysis;
    const af = a ? analysisFields(a) : undefined;
    const masked = maskedObject(r.masked);
    const exempt = (r.rows ?? 0) > 0 && this.gov.maskingExempt(this.identity);
    const duration = r.t0 === undefined ? undefined : durationMs(r.t0);
    const errorCode = r.error?.code === undefined ? undefined : String(r.error.code);
    // The payload is what JSON.stringify gives for the whole event ({type, ...fields, sql, protocol, statement_name,
    // ...analysisFields, decision, rule, masked, masking_exempt, rows, duration_ms, error, error_code, approval_id,
    // details}), built from the session's and the analysis's serialised parts: this runs for every statement.
    let j = '{"type":"statement"';
    if (this.fieldsJson) j += `,${this.fieldsJson}`;
    if (r.sql !== undefined) j += `,"sql":${JSON.stringify(r.sql)}`;
    j += `,"protocol":${jsonString(r.protocol)}`;
    if (r.name) j += `,"statement_name":${JSON.stringify(r.name)}`;
    const aj = a ? analysisJson(a) : '';
    if (aj) j += `,${aj}`;
    j += ',"decision":"allow"';
    if (r.rule !== undefined) j += `,"rule":${jsonString(r.rule)}`;
    if (masked) j += `,"masked":${JSON.stringify(masked)}`;
    if (exempt) j += ',"masking_exempt":true';
    if (r.rows !== undefined) j += `,"rows":${jsonNumber(r.rows)}`;
    if (duration !== undefined) j += `,"duration_ms":${jsonNumber(duration)}`;
    if (error !== undefined) j += `,"error":${JSON.stringify(error)}`;
    if (errorCode !== undefined) j += `,"error_code":${JSON.stringify(errorCode)}`;
    if (r.approvalId !== undefined) j += `,"approval_id":${JSON.stringify(r.approvalId)}`;
    if (r.details !== undefined) j += `,"details":${JSON.stringify(r.details)}`;
    // What the row's columns, the metrics and the Governor's listeners read.
    const event: AuditEvent = {
      type: 'statement',
      session_id: f.session_id,
      subject: f.subject,
      identity_kind: f.identity_kind,
      acting_for: f.acting_for,
      database: f.database,
      protocol: r.protocol,
      classes: af?.classes,
      decision: 'allow',
      rule: r.rule,
      masked,
      rows: r.rows,
      duration_ms: duration,
      error,
      error_code: errorCode,
    };
    this.gov.record(event, j);
    if (r.approvalId) this.gov.approvalOutcome(r.approvalId, { rows: r.rows, error });
  }

  private lastFields?: Partial<AuditEvent>;
  private fieldsJson = '';
}

/** The fields every statement event of a wire session carries. */
export function sessionFields(info: SessionInfo, identity: Identity, database: string): Partial<AuditEvent> {
  return { session_id: info.id, ...identityFields(identity), client_addr: info.clientAddr, application_name: info.applicationName, database };
}

/** The audit event that closes a session of any engine. */
export function sessionEndEvent(info: SessionInfo, identity: Identity, database: string, reason: string): AuditEvent {
  return {
    type: 'session_end',
    session_id: info.id,
    ...identityFields(identity),
    database,
    client_addr: info.clientAddr,
    reason,
    details: { statements: info.statements, duration_s: (Date.now() - info.startedAt.getTime()) / 1000, ...engineDetails(info.engine) },
  };
}
