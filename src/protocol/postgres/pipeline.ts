import { sameInputs, type EngineGovernor, type SessionMemo, type Verdict } from '../../governor.js';
import type { Analysis, AnalysisFailure, StatementInfo } from '../../analyze/analyze.js';
import type { Identity } from '../../identity/identity.js';
import type { Field, MaskCounts, MaskPlan } from '../../masking/values.js';
import type { StatementAudit } from '../common/audit.js';
import type { SessionInfo } from '../common/registry.js';
import { pick } from './frontend.js';
import * as m from './messages.js';
import { maskCopyLine, maskDataRow, maskNotification, parseRowDescription, scrubNotice } from './rows.js';

/** What the gateway expects back from the upstream for each message it forwarded, in order. */
export type Item =
  | { k: 'query'; epoch: number; sql: string; verdict: Verdict; t0: number; rows: number; error?: Record<string, string>; plan?: MaskPlan; masked?: MaskCounts; copyScan?: boolean; source?: MaskSource; probe?: Probe }
  /** An Execute refused after its approval was denied: answered by the error of an injected failing Parse. */
  | { k: 'denied'; verdict: Verdict }
  | { k: 'parse'; verdict: Verdict; probe?: Probe }
  | { k: 'bind' }
  | { k: 'describe'; stmt?: Prepared; portal?: Portal; internal?: boolean }
  | { k: 'execute'; stmt?: Prepared; portal?: Portal; t0: number; rows: number; fetched: number; plan?: MaskPlan; masked?: MaskCounts; copyScan?: boolean; approvalId?: string }
  | { k: 'close' }
  | { k: 'sync'; epoch: number }
  | { k: 'fastpath'; sql: string; verdict: Verdict; t0: number; error?: Record<string, string> };
type Query = Extract<Item, { k: 'query' }>;
type Execute = Extract<Item, { k: 'execute' }>;

/**
 * A text Sluice could not parse, sent upstream with a suffix the server cannot parse either (so nothing runs; see
 * the session's probe): the server's error is relayed when it is about the client's own text.
 */
export interface Probe {
  suffix: string;
  /** The client's text in characters (error positions count characters). */
  chars: number;
  failure: AnalysisFailure;
}

/**
 * What the client gets for a probed text, given the server's error: undefined to relay the server's error as is,
 * a Buffer to send instead, null for Sluice's refusal (the server's first error is in the suffix: it parsed the
 * client's text, Sluice did not).
 */
export function probeAnswer(p: Probe, b: Buffer, start: number, end: number, fields: Record<string, string>): Buffer | null | undefined {
  const message = fields.message ?? '';
  const position = Number(fields.position);
  const inText = Number.isInteger(position) && position >= 1 && position <= p.chars;
  // An unterminated string, identifier or comment runs to the end of the input: the server quotes the suffix too.
  const at = message.lastIndexOf(p.suffix);
  if (inText && at >= 0) return m.withMessage(b, start, end, message.slice(0, at) + message.slice(at + p.suffix.length));
  if (inText && !message.includes(p.suffix.slice(2))) return undefined;
  // The text ends early: the server stumbled on the suffix's semicolon; directly it would have said so at the end.
  if (position === p.chars + 2 && p.failure.error === 'syntax error at end of input') return m.errorResponse({ severity: 'ERROR', code: '42601', message: p.failure.error, position: String(p.chars + 1) });
  return null;
}

/** What a result's rows come from, for masking, when the statement producing them is not the one sent (cursors). */
export interface MaskSource {
  analysis?: Analysis;
  /** Rows of a cursor Sluice did not see declared (opened by a function): every computed column is masked. */
  taintAll?: boolean;
}

export interface Prepared {
  name: string;
  sql: string;
  analysis?: Analysis;
  rule: string;
  /** A Describe of the statement: its result columns (formats not yet known) and shape. */
  shape?: Described;
  /** The policy holds its executions for approval (per execution: the approval binds the parameters). */
  hold?: Verdict;
  /** Parameter type OIDs the Parse declared (0 = inferred), kept for held statements: part of what is approved. */
  paramTypes?: number[];
  /** What the verdict was computed from (Governor.memoInputs): when it changes, the next execution is judged again. */
  inputs?: readonly unknown[];
  /** Judged again and refused (the policy or the catalog changed since it was prepared): its executions fail. */
  refusal?: Verdict;
}

/**
 * A RowDescription the session received: its bytes, its fields, and the session memo's keys for it (the bytes as
 * latin1 after a prefix saying what else decides the plan). A session describing the same statement again gets
 * this object back, so the fields are parsed and the key strings built (and hashed, on the memo's lookup) once.
 */
export interface Described {
  bytes: Buffer;
  fields: Field[];
  keys: Map<string, string>;
}

/** The memo's key for results of this shape, `prefix` naming what else decides the plan. */
function shapeKey(d: Described, prefix: string): string {
  let k = d.keys.get(prefix);
  if (k === undefined) d.keys.set(prefix, (k = prefix + d.bytes.toString('latin1')));
  return k;
}

export interface Portal {
  stmt?: Prepared;
  /** Sync/Query count when it was bound: it ends with the transaction that contains it. */
  epoch: number;
  /** Result format codes from Bind: none = all text, one = for all columns, else per column. */
  formats: number[];
  /** A Describe of the portal: its result columns (formats known) and shape. */
  shape?: Described;
  /** The portal is a SQL cursor Sluice did not see declared. */
  taintAll?: boolean;
  /** Bind parameters, kept only for statements held for approval (text, or \\x hex when sent in binary). */
  params?: (string | null)[];
  binaryParams?: boolean;
  /** Each parameter's format (0 text, 1 binary), kept for held statements when any is binary. */
  paramFormats?: number[];
}

/** One statement on its own, as an analysis (a SQL-level prepared statement or a cursor's query). */
const asAnalysis = (s: StatementInfo): Analysis => ({ ok: true, statements: [s], classes: [s.class], tables: s.tables.map((t) => t.name), destructive: s.destructive, flags: s.flags, fingerprint: '' });

const rowsOf = (tag: string) => {
  const n = Number(tag.slice(tag.lastIndexOf(' ') + 1));
  return Number.isFinite(n) ? n : 0;
};

/** What the pipeline needs of its session. */
export interface PipelineHost {
  readonly gov: EngineGovernor;
  readonly identity: Identity;
  readonly memo: SessionMemo;
  readonly info: SessionInfo;
  readonly audit: StatementAudit;
  database(): string;
  /** A ParameterStatus: false when the session cannot go on under it (it has been ended). */
  parameterStatus(name: string, value: string): boolean;
  /** The upstream sent FATAL: its close is not reported a second time. */
  upstreamFatal(message: string): void;
}

/**
 * The PostgreSQL session's statement state (prepared statements, portals, SQL-level prepared statements and
 * cursors) and the pipeline of answers expected from the upstream: each backend message is matched to the request
 * it answers, masked under that request's plan, and completes its audit record.
 */
export class PgPipeline {
  items: Item[] = [];
  readonly statements = new Map<string, Prepared>();
  readonly portals = new Map<string, Portal>();
  /** Counts Sync and Query messages sent upstream (see Portal.epoch). */
  epoch = 0;
  readonly sqlPrepared = new Map<string, StatementInfo>();
  /**
   * SQL cursors declared in this session: what FETCH (or a protocol Execute of the cursor) returns, and what it
   * was last judged under (Governor.memoInputs): at its DECLARE, or a FETCH judged as its query.
   */
  readonly cursors = new Map<string, { query: StatementInfo; inputs: readonly unknown[] }>();
  /** The epoch of the last Query/Sync answered by ReadyForQuery. */
  answered = 0;

  constructor(private readonly host: PipelineHost) {}

  private get gov(): EngineGovernor {
    return this.host.gov;
  }
  private get identity(): Identity {
    return this.host.identity;
  }

  /** Returns undefined to relay the message as is, a Buffer to send instead, or null to drop it. */
  onMessage(type: number, b: Buffer, start: number, end: number): Buffer | null | undefined {
    const head = this.items[0];
    switch (type) {
      case 0x44 /* D DataRow */:
        if (head?.k === 'execute') head.fetched++;
        if ((head?.k !== 'execute' && head?.k !== 'query') || !head.plan) return undefined;
        return maskDataRow(b, start, end, head.plan, (head.masked ??= new Map()));
      case 0x43 /* C CommandComplete */:
        return this.commandComplete(head, rowsOf(pick(b, start, end).cstring()));
      case 0x5a /* Z ReadyForQuery */:
        return this.readyForQuery(String.fromCharCode(b[start + 5]!));
      case 0x45 /* E ErrorResponse */:
        return this.error(head, b, start, end);
      case 0x4e /* N NoticeResponse */:
        return this.scrub(b, start, end, head);
      case 0x41 /* A NotificationResponse */:
        // Payloads can carry any session's data: scanned like result text for identities whose results are masked.
        return this.gov.scansText(this.identity) ? maskNotification(b, start, end) : undefined;
      case 0x6e /* n NoData */:
      case 0x31 /* 1 ParseComplete */:
      case 0x32 /* 2 BindComplete */:
      case 0x33 /* 3 CloseComplete */:
      case 0x49 /* I EmptyQuery */:
      case 0x73 /* s PortalSuspended */:
        return this.completion(head, type);
      case 0x48 /* H CopyOutResponse */:
        // Text-format COPY rows are scanned line by line by the detectors. Binary COPY, and COPY that would carry a
        // ruled column or values computed from personal data, were refused at decision time.
        if (head?.k === 'query' || head?.k === 'execute') head.copyScan = b[start + 5] === 0 && this.gov.scansText(this.identity);
        return undefined;
      case 0x64 /* d CopyData */:
        if ((head?.k !== 'query' && head?.k !== 'execute') || !head.copyScan) return undefined;
        return maskCopyLine(b, start, end, (head.masked ??= new Map()));
      case 0x54 /* T RowDescription */:
        return this.rowDescription(head, b, start, end);
      case 0x53 /* S ParameterStatus */: {
        const r = pick(b, start, end);
        return this.host.parameterStatus(r.cstring(), r.cstring()) ? undefined : null;
      }
      default:
        // t ParameterDescription, G/W/c COPY: pass through.
        return undefined;
    }
  }

  private commandComplete(head: Item | undefined, rows: number): undefined {
    if (head?.k === 'query') head.rows += rows;
    else if (head?.k === 'execute') {
      head.rows += rows;
      this.items.shift();
      this.auditExecute(head);
    }
    return undefined;
  }

  private readyForQuery(status: string): undefined {
    this.host.info.txStatus = status;
    // Everything up to and including the query/sync this answers is complete.
    while (this.items.length) {
      const it = this.items.shift()!;
      if (it.k === 'query' || it.k === 'sync') {
        this.answered = it.epoch;
        if (it.k === 'query' && it.verdict.decision.action === 'allow') this.auditQuery(it);
        // Outside a transaction every portal bound up to here is gone upstream: forget them too.
        if (status === 'I') for (const [name, p] of this.portals) if (p.epoch <= it.epoch) this.portals.delete(name);
        break;
      }
      if (it.k === 'fastpath') {
        if (!it.verdict.error) this.host.audit.ran({ sql: it.sql, protocol: 'fastpath', analysis: it.verdict.analysis, rule: it.verdict.decision.rule, t0: it.t0, error: it.error });
        break;
      }
    }
    this.host.info.currentSql = undefined;
    return undefined;
  }

  private error(head: Item | undefined, b: Buffer, start: number, end: number): Buffer | undefined {
    const fields = m.parseErrorFields(b, start, end);
    const severity = fields.V ?? fields.severity;
    if (severity === 'FATAL' || severity === 'PANIC') this.host.upstreamFatal(fields.message ?? fields.code ?? 'FATAL');
    // No pending request (asynchronous, e.g. the server shutting down) or an error raised by Sync itself
    // (a deferred constraint at implicit commit): pass it through; ReadyForQuery follows.
    if (!head || head.k === 'sync') return this.scrub(b, start, end, head);
    const denied = head.k === 'query' || head.k === 'parse' || head.k === 'fastpath' || head.k === 'denied' ? head.verdict.error : undefined;
    const probed = (head.k === 'query' || head.k === 'parse') && head.probe ? probeAnswer(head.probe, b, start, end, fields) : null;
    const refusal = () => (probed === undefined ? this.scrub(b, start, end, head) : probed ? this.scrub(probed, 0, probed.length, head) ?? probed : m.errorResponse({ severity: 'ERROR', ...denied! }));
    if (head.k === 'query' || head.k === 'fastpath') {
      if (!denied) head.error = fields;
      return denied ? refusal() : this.scrub(b, start, end, head);
    }
    // Extended protocol: this message failed; the upstream now skips everything until Sync.
    const failed = this.items.shift()!;
    if (failed.k === 'execute') this.auditExecute(failed, fields);
    // The server now discards every message until Sync, simple Queries and fast-path calls included: they get no
    // answer, so their slots go too (and cannot have changed settings).
    while (this.items.length && this.items[0]!.k !== 'sync') {
      const skipped = this.items.shift()!;
      if (skipped.k !== 'query') continue;
      this.answered = Math.max(this.answered, skipped.epoch);
      if (skipped.verdict.decision.action === 'allow') this.auditQuery(skipped, { message: 'not run: the server skipped it after an earlier error, until Sync' });
    }
    return denied ? refusal() : this.scrub(b, start, end, failed);
  }

  /** NoData, ParseComplete, BindComplete, CloseComplete, EmptyQuery, PortalSuspended. */
  private completion(head: Item | undefined, type: number): null | undefined {
    if (!head || head.k === 'query' || head.k === 'sync' || head.k === 'fastpath') return undefined;
    this.items.shift();
    if (head.k === 'describe' && head.internal) return null; // NoData for our own Describe
    if (head.k === 'execute') {
      if (type === 0x73) head.rows = head.fetched;
      this.auditExecute(head);
    }
    return undefined;
  }

  private rowDescription(head: Item | undefined, b: Buffer, start: number, end: number): null | undefined {
    if (head?.k === 'query') {
      head.plan = this.queryPlan(head.source?.analysis ?? head.verdict.analysis, !!head.source?.taintAll, b, start, end);
      return undefined;
    }
    if (head?.k !== 'describe') return undefined;
    this.items.shift();
    const shape = this.described(b, start, end);
    if (head.stmt) head.stmt.shape = shape;
    if (head.portal) head.portal.shape = shape;
    // Pipelined clients send Execute before this answer arrives: re-plan the executions already queued.
    for (const it of this.items) {
      if (it.k !== 'execute' || !it.portal) continue;
      if ((head.portal && it.portal === head.portal) || (head.stmt && it.portal.stmt === head.stmt)) it.plan = this.portalPlan(it.portal);
    }
    return head.internal ? null : undefined; // the client did not ask for it
  }

  /** The masking plan for a simple query's RowDescription. */
  private queryPlan(analysis: Analysis | undefined, taintAll: boolean, b: Buffer, start: number, end: number): MaskPlan | undefined {
    const d = this.described(b, start, end);
    return this.memoPlan(shapeKey(d, taintAll ? 'qt' : 'qf'), analysis, taintAll, () => d.fields);
  }

  /** The last few result descriptions received, most recent first (see Described). */
  private readonly recent: Described[] = [];

  private described(b: Buffer, start: number, end: number): Described {
    const len = end - start;
    for (const d of this.recent) if (d.bytes.length === len && b.compare(d.bytes, 0, len, start, end) === 0) return d;
    const d: Described = { bytes: Buffer.from(b.subarray(start, end)), fields: parseRowDescription(b, start, end), keys: new Map() };
    this.recent.unshift(d);
    if (this.recent.length > 4) this.recent.pop();
    return d;
  }

  /**
   * A masking plan, remembered by the session per result shape (`shape`: the RowDescription's bytes and whatever
   * else decides the columns, such as Bind's formats) and analysis, so a session repeating a statement plans it
   * once while the policy and catalogs stay the same.
   */
  private memoPlan(shape: string, analysis: Analysis | undefined, taintAll: boolean, fields: () => Field[]): MaskPlan | undefined {
    const database = this.host.database();
    const inputs = this.gov.memoInputs(database);
    const known = this.host.memo.plan(shape, analysis, inputs);
    if (known) return known.plan;
    const plan = this.gov.maskPlan(this.identity, analysis, fields(), database, { taintAll });
    this.host.memo.rememberPlan(shape, analysis, inputs, plan);
    return plan;
  }

  /** The masking plan for executing a portal, from its Describe or its statement's Describe plus Bind's formats. */
  portalPlan(p: Portal | undefined): MaskPlan | undefined {
    if (!p) return undefined;
    const taintAll = !!p.taintAll;
    const t = taintAll ? 't' : 'f';
    // A Describe's answer: the portal's, or its statement's with Bind's result formats.
    const portalShape = p.shape;
    if (portalShape) return this.memoPlan(shapeKey(portalShape, `p${t}`), p.stmt?.analysis, taintAll, () => portalShape.fields);
    const stmt = p.stmt;
    const stmtShape = stmt?.shape;
    if (stmtShape) {
      const f = p.formats;
      const withFormats = () => stmtShape.fields.map((x, i) => ({ ...x, format: f.length === 0 ? 0 : f.length === 1 ? f[0]! : (f[i] ?? 0) }));
      return this.memoPlan(shapeKey(stmtShape, `s${t}${f.join(',')}|`), stmt.analysis, taintAll, withFormats);
    }
    // Rows without any RowDescription: when every column comes back as text it is safe to scan them all.
    if (p.formats.some((x) => x !== 0)) return undefined;
    return this.masks(stmt?.analysis) ? { columns: [], key: this.gov.maskKey, scanUnknown: true } : undefined;
  }

  /**
   * Whether masking applies to rows of this analysis at all (an Execute before its Describe is answered asks, for
   * every execution of an unnamed statement): remembered by the session like its plans.
   */
  masks(analysis: Analysis | undefined): boolean {
    const inputs = this.gov.memoInputs(this.host.database());
    const known = this.host.memo.masks(analysis, inputs);
    if (known !== undefined) return known;
    const masks = this.gov.masks(this.identity, analysis);
    this.host.memo.rememberMasks(analysis, inputs, masks);
    return masks;
  }

  /**
   * Error and notice texts can echo values (`invalid input syntax for type integer: "123-45-6789"`, a unique
   * violation's DETAIL, a RAISE in a function). For identities whose results are masked, detector hits are masked
   * in every text field; when the statement touches a column masked for them, quoted values are hidden and DETAIL
   * and CONTEXT are replaced. Returns the rewritten message, or undefined to pass it as is.
   */
  private scrub(b: Buffer, start: number, end: number, head: Item | undefined): Buffer | undefined {
    if (this.gov.maskingExempt(this.identity)) return undefined;
    const analysis = head?.k === 'query' ? (head.source?.analysis ?? head.verdict.analysis) : head?.k === 'execute' ? head.stmt?.analysis : head?.k === 'fastpath' ? head.verdict.analysis : undefined;
    const tainted = (head?.k === 'query' && !!head.source?.taintAll) || (head?.k === 'execute' && !!head.portal?.taintAll) || !!this.gov.taint(this.identity, analysis, this.host.database());
    const detectors = this.gov.scansText(this.identity);
    if (!tainted && !detectors) return undefined;
    return scrubNotice(b, start, end, { tainted, detectors });
  }

  // ---------------------------------------------------------------- SQL-level prepared statements and cursors

  /** A protocol Bind of a statement prepared with SQL PREPARE: executed as what that PREPARE was judged to be. */
  sqlPreparedStatement(name: string): Prepared | undefined {
    const s = this.sqlPrepared.get(name);
    return s ? { name, sql: `EXECUTE ${name}`, analysis: asAnalysis(s), rule: 'sql-prepare' } : undefined;
  }

  /** A protocol Execute of a portal never bound through Sluice: a SQL cursor (its query, if Sluice saw it declared). */
  cursorPortal(name: string): Portal {
    const c = this.cursors.get(name)?.query;
    return c ? { formats: [], epoch: this.epoch + 1, stmt: { name, sql: `FETCH FROM ${name}`, analysis: asAnalysis(c), rule: 'cursor' } } : { formats: [], epoch: this.epoch + 1, taintAll: true };
  }

  /** For a message that FETCHes from cursors: what the rows come from (the cursors' queries), for masking. */
  cursorSource(a: Analysis | undefined): MaskSource | undefined {
    if (!a?.statements.some((s) => s.cursor?.op === 'fetch')) return undefined;
    const statements: StatementInfo[] = [];
    let taintAll = false;
    for (const s of a.statements) {
      if (s.cursor?.op !== 'fetch') statements.push(s);
      else {
        const c = this.cursors.get(s.cursor.name ?? '')?.query;
        if (c) statements.push(c);
        else taintAll = true;
      }
    }
    return { analysis: { ...a, statements, tables: [...new Set(statements.flatMap((s) => s.tables.map((t) => t.name)))] }, taintAll };
  }

  /**
   * A refused `PREPARE name AS ...` is remembered (unless the name is taken) so that `EXECUTE name` is refused for
   * what it would run rather than as unknown. The server never saw it: were EXECUTE allowed, it would fail there.
   */
  trackRefusedPrepare(v: Verdict): void {
    for (const s of v.analysis?.statements ?? []) if (s.prepares !== undefined && !this.sqlPrepared.has(s.prepares)) this.sqlPrepared.set(s.prepares, s);
  }

  /**
   * Cursors judged under other inputs than `now` (the policy was reloaded or a catalog read again since their
   * DECLARE): a FETCH or MOVE from one is judged as its query, as a DECLARE of it would be now. Like a statement
   * prepared before the change (PgSession.rejudge).
   */
  staleCursors(now: readonly unknown[]): ReadonlyMap<string, StatementInfo> | undefined {
    let stale: Map<string, StatementInfo> | undefined;
    for (const [name, c] of this.cursors) if (!sameInputs(c.inputs, now)) (stale ??= new Map()).set(name, c.query);
    return stale;
  }

  /** Keep SQL-level PREPARE/EXECUTE/DEALLOCATE, cursors and DISCARD in step with the upstream. */
  trackSqlPrepared(v: Verdict): void {
    for (const s of v.analysis?.statements ?? []) {
      if (s.prepares !== undefined) this.sqlPrepared.set(s.prepares, s);
      // A cursor is judged now: declared, or fetched from with the FETCH judged (as its query, when it was stale).
      const cursor = s.cursor?.name ? this.cursors.get(s.cursor.name) : undefined;
      if (s.cursor?.op === 'declare' && s.cursor.name) this.cursors.set(s.cursor.name, { query: s, inputs: this.gov.memoInputs(this.host.database()) });
      else if (s.cursor?.op === 'fetch' && cursor) cursor.inputs = this.gov.memoInputs(this.host.database());
      if (s.cursor?.op === 'close') {
        if (s.cursor.name) this.cursors.delete(s.cursor.name);
        else this.cursors.clear();
      }
      if (s.deallocates === '') this.sqlPrepared.clear();
      else if (s.deallocates !== undefined) this.sqlPrepared.delete(s.deallocates);
      if (s.command === 'DISCARD') {
        this.sqlPrepared.clear();
        this.cursors.clear();
        this.statements.clear();
      }
    }
  }

  // ---------------------------------------------------------------- audit

  auditQuery(it: Query, err?: Record<string, string>): void {
    const v = it.verdict;
    this.host.audit.ran({ sql: it.sql, protocol: 'simple', analysis: v.analysis, rule: v.decision.rule, masked: it.masked, rows: it.rows, t0: it.t0, error: err ?? it.error, approvalId: v.approvalId });
  }

  auditExecute(it: Execute, err?: Record<string, string>): void {
    this.host.audit.ran({ sql: it.stmt?.sql, protocol: 'extended', name: it.stmt?.name, analysis: it.stmt?.analysis, rule: it.stmt?.rule, masked: it.masked, rows: it.rows, t0: it.t0, error: err, approvalId: it.approvalId });
  }

  /** The session ended: what was sent and not answered is audited as not completed. */
  auditUnfinished(reason: string): void {
    for (const it of this.items) {
      if (it.k === 'query' && it.verdict.decision.action === 'allow') this.auditQuery(it, { message: `not completed: ${reason}` });
      if (it.k === 'execute') this.auditExecute(it, { message: `not completed: ${reason}` });
    }
    this.items = [];
  }
}
