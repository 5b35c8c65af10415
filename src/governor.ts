import { AWS_PREFIX } from './identity/aws.js';
import { AnalysisCache, type Analysis, type AnalysisFailure, type StatementInfo } from './analyze/analyze.js';
import { analyzeMysql } from './analyze/mysql.js';
import { evaluate, type Decision, type Policy } from './policy/policy.js';
import type { AuditEvent, AuditLog } from './audit/audit.js';
import { AuthError, type Identity } from './identity/identity.js';
import { looksLikeJwt, type OidcVerifier } from './identity/oidc.js';
import { looksLikeKey } from './identity/keys.js';
import { AuthThrottle } from './identity/throttle.js';
import crypto from 'node:crypto';
import { maskPlan, maskTaint, isExempt, guardedColumn } from './masking/plan.js';
import { throughViews, type ViewCatalog } from './masking/views.js';
import { judgeFunctions, type FunctionCatalog } from './analyze/catalog.js';
import { changesRoutines, judgeRoutines, unknownCalls, type RoutineCatalog } from './analyze/mysql-routines.js';
import type { Field, MaskPlan } from './masking/values.js';
import { Recorder } from './audit/recorder.js';
import type { Metrics } from './audit/metrics.js';
import type { Engine } from './util/engine.js';
import { ApprovalError, type Approvals, type StatementRequest } from './approvals/service.js';
import type { Approval } from './approvals/store.js';

export interface GovernorError {
  code: string;
  message: string;
  detail?: string;
  hint?: string;
  position?: string;
}

export interface Verdict {
  analysis?: Analysis;
  failure?: AnalysisFailure;
  decision: Decision;
  /** Set when the statement must not run: the error the client gets. */
  error?: GovernorError;
  /** The approval a held statement runs under, once approved. */
  approvalId?: string;
}

/**
 * A statement the policy holds for approval, as the protocol engine saw it: the statement and its parameters as
 * the server will read them (binary parameters kept as \\x hex), and the verdict that held it.
 */
export type HoldRequest = Pick<StatementRequest, 'identity' | 'database' | 'sql' | 'params' | 'binaryParams' | 'paramFormats' | 'paramTypes' | 'sessionId' | 'engine'> & { verdict: Verdict };

export interface GovernorOptions {
  policy: Policy;
  /** The audit log events are recorded to (with metrics); or a recorder built around one. */
  audit: AuditLog;
  recorder?: Recorder;
  oidc?: OidcVerifier;
  verifyKey?: (key: string) => Promise<Identity>;
  /** AWS IAM identities: `aws:` + a signed sts:GetCallerIdentity request (identity/aws.ts). */
  verifyAws?: (password: string) => Promise<Identity>;
  cache?: AnalysisCache;
  approvals?: Approvals;
  /** Views per database (PostgreSQL and MySQL), so masking follows view columns to their tables. */
  views?: { postgres?: ViewCatalog; mysql?: ViewCatalog };
  /** What each PostgreSQL database's functions do (pg_proc): the guard's function classes. */
  functions?: FunctionCatalog;
  /** What the MySQL server's stored routines and views do (information_schema.ROUTINES, VIEWS). */
  mysqlRoutines?: RoutineCatalog;
}

/**
 * The one place decisions are made. Protocol engines (PostgreSQL wire today; MySQL and MCP later) authenticate
 * through it, ask it about every statement, and report what happened; it never speaks a wire protocol itself.
 */
export class Governor {
  private policy: Policy;
  readonly recorder: Recorder;
  readonly cache: AnalysisCache;
  /** MySQL/MariaDB statements (keyed by exact text: MySQL lexing differs from PostgreSQL's). */
  readonly mysqlCache = new AnalysisCache(20_000, analyzeMysql, (s) => s);
  private readonly oidc?: OidcVerifier;
  private readonly verifyKey?: (key: string) => Promise<Identity>;
  private readonly verifyAws?: (password: string) => Promise<Identity>;
  readonly approvals?: Approvals;
  readonly views: { postgres?: ViewCatalog; mysql?: ViewCatalog };
  readonly functions?: FunctionCatalog;
  readonly mysqlRoutines?: RoutineCatalog;

  constructor(o: GovernorOptions) {
    this.mysqlRoutines = o.mysqlRoutines;
    this.approvals = o.approvals;
    this.views = o.views ?? {};
    this.functions = o.functions;
    this.policy = o.policy;
    this.recorder = o.recorder ?? new Recorder(o.audit);
    // A view or function may have changed: read the database's catalogs again after DDL.
    // (PostgreSQL wire sessions refresh themselves once the DDL's transaction has ended, and wait for it: PgSession.)
    this.recorder.onRecord((e) => {
      // MySQL routines and views (after the DDL ran; CREATE FUNCTION with a GRANT in its body is admin).
      if (e.type === 'statement' && e.decision === 'allow' && (e.protocol === 'mysql' || e.protocol === 'mysql-prepared') && (e.classes?.includes('ddl') || e.classes?.includes('admin')) && changesRoutines(e.commands)) this.mysqlRoutines?.invalidate();
      if (e.type !== 'statement' || e.decision !== 'allow' || !e.classes?.includes('ddl') || e.database === undefined) return;
      if (e.protocol === 'simple' || e.protocol === 'extended' || e.protocol === 'fastpath') return;
      const engine = e.protocol === 'mysql' || e.protocol === 'mysql-prepared' ? 'mysql' : 'postgres';
      this.views[engine]?.invalidate(e.database);
      if (engine === 'postgres') this.functions?.invalidate(e.database);
    });
    this.oidc = o.oidc;
    this.verifyKey = o.verifyKey;
    this.verifyAws = o.verifyAws;
    this.cache = o.cache ?? new AnalysisCache();
  }

  get audit(): AuditLog {
    return this.recorder.audit;
  }
  /** Counters for /metrics, fed from every recorded event. */
  get metrics(): Metrics {
    return this.recorder.metrics;
  }

  private readonly engines = new Map<Engine, EngineGovernor>();
  /** The Governor as one engine (wire protocol and SQL dialect) uses it. */
  for(engine: Engine): EngineGovernor {
    let g = this.engines.get(engine);
    if (!g) this.engines.set(engine, (g = new EngineGovernor(this, engine)));
    return g;
  }

  /** Load what judging statements on a database needs (its views, its function catalog); waits for the first load only. */
  async openDatabase(engine: 'postgres' | 'mysql', database: string): Promise<void> {
    await Promise.all([this.views[engine]?.ensure(database), engine === 'postgres' ? this.functions?.ensure(database) : this.mysqlRoutines?.ensure()]);
  }

  /**
   * PostgreSQL: start reading a database's views and functions unless they are fresh, without waiting; the load
   * under way (never rejects), if any. A session waits for it before its first statement (see PgSession).
   */
  loadCatalogs(database: string): Promise<void> | undefined {
    return whenAll([this.views.postgres?.start(database), this.functions?.start(database)]);
  }

  /** PostgreSQL: read a database's catalogs again (DDL committed); the load that will see the change, if any. */
  refreshCatalogs(database: string): Promise<void> | undefined {
    const p = whenAll([this.views.postgres?.refresh(database), this.functions?.refresh(database)]);
    if (p) {
      this.refreshing.set(database, p);
      void p.then(() => {
        if (this.refreshing.get(database) === p) this.refreshing.delete(database);
      });
    }
    return p;
  }

  /** Catalog re-reads under way after DDL, by database (see pendingRefresh). */
  private readonly refreshing = new Map<string, Promise<void>>();

  /**
   * PostgreSQL: the re-read of a database's catalogs that DDL (committed in some session) started, while it runs.
   * Every session's statements that need the catalog wait for it, not only the DDL's own session: judged from the
   * facts before the DDL, a function just redefined to write would pass for what it was.
   */
  pendingRefresh(database: string): Promise<void> | undefined {
    return this.refreshing.get(database);
  }

  /** PostgreSQL: a database is about to be dropped or renamed: forget its catalogs and end loads running on it. */
  forgetDatabase(database: string): void {
    this.views.postgres?.forget(database);
    this.functions?.forget(database);
  }

  get currentPolicy(): Policy {
    return this.policy;
  }
  setPolicy(p: Policy): void {
    this.policy = p;
    this.audit.append({ type: 'policy_loaded', details: { file: p.file, rules: p.rules.map((r) => r.name), default: p.default } });
  }

  /** Backoff for failed sign-ins per key id and source address (config identity.throttle; the gateway sets it). */
  throttle = new AuthThrottle();

  /**
   * Turn a presented password (JWT or Sluice key) into an identity, or throw AuthError with a clear reason.
   * `source` is the client's address: failures are counted per source and per key id, and while either is locked
   * out the attempt is refused unchecked (ThrottledError). Surrounding whitespace is not part of a credential.
   */
  async authenticate(password: string, source?: string): Promise<Identity> {
    const secret = password.trim();
    const keyId = AuthThrottle.keyIdOf(secret);
    this.throttle.check(source, keyId);
    try {
      const id = await this.verifyCredential(secret);
      this.throttle.success(keyId);
      return id;
    } catch (e) {
      if (e instanceof AuthError && !e.transient) this.throttle.failure(source, keyId);
      throw e;
    }
  }

  private async verifyCredential(secret: string): Promise<Identity> {
    if (secret === '') throw new AuthError('no token presented: put an OIDC token or a Sluice key in the password field');
    if (looksLikeKey(secret)) {
      if (!this.verifyKey) throw new AuthError('Sluice keys are not enabled on this gateway');
      return this.verifyKey(secret);
    }
    if (secret.startsWith(AWS_PREFIX)) {
      if (!this.verifyAws) throw new AuthError('AWS IAM sign-in is not enabled on this gateway (identity.aws)');
      return this.verifyAws(secret);
    }
    if (looksLikeJwt(secret)) {
      if (!this.oidc) throw new AuthError('no OIDC issuer is configured on this gateway');
      return this.oidc.verify(secret);
    }
    throw new AuthError('the password is neither a JWT nor a Sluice key (database passwords are not accepted: present your identity token)');
  }

  /**
   * Decide one client request (one simple Query or one Parse). `prepared` resolves SQL-level `EXECUTE name` to the
   * statement its PREPARE defined.
   */
  /**
   * What a verdict or a masking plan was computed from, besides the statement and the identity: the policy and every
   * catalog read for the database. Anything check() or maskPlan() reads must be here, or a session's memo would
   * answer from facts that have changed (each catalog replaces its facts object when it reads them again).
   */
  memoInputs(dialect: Engine, database: string): readonly unknown[] {
    return dialect === 'mysql'
      ? [this.policy, database, this.views.mysql?.get(database), this.mysqlRoutines?.get()]
      : [this.policy, database, this.views.postgres?.get(database), this.functions?.get(database)];
  }

  /**
   * `staleCursors`: SQL cursors the session declared under another policy or catalog than the current one; a FETCH
   * or MOVE from one is judged as the cursor's query (it runs that query on).
   */
  check(identity: Identity, database: string, sql: string, prepared?: ReadonlyMap<string, StatementInfo>, dialect: 'postgres' | 'mysql' = 'postgres', memo?: SessionMemo, staleCursors?: ReadonlyMap<string, StatementInfo>): Verdict {
    if (!this.audit.healthy) {
      return {
        decision: { action: 'deny', rule: 'audit-unavailable', reason: 'the audit log cannot be written' },
        error: { code: '57P03', message: 'Sluice cannot record statements right now (audit store unavailable), so it does not run them', hint: 'Try again shortly; the gateway operator has been alerted in the gateway log.' },
      };
    }
    const r = (dialect === 'mysql' ? this.mysqlCache : this.cache).analyze(sql);
    if (!r.ok) {
      return {
        failure: r,
        decision: { action: 'deny', rule: 'unparsable', reason: r.error },
        error: { code: '42601', message: r.error, hint: 'Sluice could not parse this statement, so it was not run.', ...(r.position ? { position: String(r.position) } : {}) },
      };
    }
    // The same statement (up to numeric literals: one cached analysis) judged before in this session, from the same
    // policy and catalogs: the same verdict.
    const inputs = memo?.identity === identity ? this.memoInputs(dialect, database) : undefined;
    const known = inputs && !fetchesFrom(r, staleCursors) && memo!.verdict(r, inputs);
    if (known) return known;
    const executes = resolveExecutes(r, prepared);
    if ('decision' in executes) return executes;
    const resolved = resolveFetches(executes, staleCursors);
    let analysis = resolved;
    const refused = analysis.statements.findIndex((s) => s.refuse);
    if (refused >= 0) return guardRefusal(analysis, refused, analysis.statements[refused]!.refuse!);
    if (dialect === 'postgres' && this.functions) {
      // What the called functions do comes from the database's catalog; without it, calls cannot be judged.
      const facts = this.functions.get(database);
      if (facts) analysis = judgeFunctions(analysis, facts, this.views.postgres?.get(database));
      else {
        const calls = analysis.statements.findIndex((s) => s.functions.length || s.operators?.length);
        if (calls >= 0) return guardRefusal(analysis, calls, `Sluice could not read the function catalog of database "${database}", so it cannot tell what the functions this statement calls do`);
      }
    }
    // MySQL: stored routines and views judged from the server's catalog (without it, every stored routine has effects).
    const routines = dialect === 'mysql' ? this.mysqlRoutines?.get() : undefined;
    if (routines) analysis = judgeRoutines(analysis, routines, database);
    let decision = evaluate(this.policy, { identity, database, qualifiedIsDatabase: dialect === 'mysql' }, analysis);
    // Only what the policy itself allows is remembered: grants expire, and a denial may be lifted by one.
    const byPolicy = decision.action === 'allow';
    if (decision.action !== 'allow' && decision.grants !== false && this.approvals) {
      // An approved just-in-time grant lets through what the policy would deny or hold (unless a rule says grants: false).
      const g = this.approvals.grantFor(identity, database, analysis.classes);
      if (g) decision = { action: 'allow', rule: `grant:${g.id}`, reason: `just-in-time ${g.role} grant ${g.id} until ${g.grant_expires_at}` };
    }
    if (decision.action === 'require_approval' && !this.approvals) {
      decision = { ...decision, action: 'deny', reason: `${decision.reason ? `${decision.reason}; ` : ''}approval required, but approvals are not enabled on this gateway` };
    }
    if (decision.action === 'allow' || decision.action === 'require_approval') {
      const refused = this.maskingRefusal(identity, analysis, database, dialect);
      if (refused) return refused;
      const v: Verdict = { analysis, decision };
      // SQL-level EXECUTE (and FETCH from a stale cursor) is judged by what the session prepared or declared, which
      // the memo does not know.
      if (inputs && byPolicy && resolved === r) memo!.remember(r, inputs, v);
      return v;
    }
    const s = analysis.statements[decision.statement ?? 0];
    const what = s ? `${s.command}${s.tables.length ? ` on ${s.tables.map((t) => t.name).join(', ')}` : ''}` : 'statement';
    return {
      analysis,
      decision,
      error: {
        code: '42501',
        message: `permission denied by Sluice policy rule "${decision.rule}"${decision.reason ? `: ${decision.reason}` : ''}`,
        detail: `${what} (class ${s?.class ?? '?'})${s?.destructive.length ? `; destructive: ${s.destructive.join('; ')}` : ''}${s?.effects?.length ? `; effects: ${s.effects.join('; ')}` : ''}`,
        hint: `Identity ${identity.subject} (${identity.kind}${identity.groups.length ? `, groups ${identity.groups.join(', ')}` : ''}).`,
      },
    };
  }

  /**
   * What masking forbids of an allowed statement: a masked column used anywhere but as a plain output (inference
   * guard), binary COPY output, storing values computed from masked columns, COPY of rows that carry them.
   */
  private maskingRefusal(identity: Identity, analysis: Analysis, database: string, dialect: Engine): Verdict | undefined {
    const viewed = throughViews(analysis, this.views[dialect]?.get(database));
    const guarded = guardedColumn(this.policy.masking, identity, viewed);
    if (guarded) {
      return refusal(analysis, 'inference-guard', `column ${guarded.column} is masked for this identity (${guarded.rule})`, undefined, {
        message: `column "${guarded.column}" is masked for you and cannot be used in WHERE, JOIN, ORDER BY, GROUP BY, HAVING, expressions or subqueries (Sluice inference guard)`,
        hint: 'Select the column as is (you will see it masked), count it, or ask for an exemption.',
      });
    }
    // Binary COPY output cannot be scanned for sensitive values: refused to anyone whose results are masked.
    const binaryOut = analysis.statements.findIndex((s) => s.command === 'COPY TO' && s.flags.includes('binary-copy'));
    if (binaryOut >= 0 && this.masks(identity, analysis)) {
      return refusal(analysis, 'masking-binary-copy', 'binary COPY output cannot be masked', binaryOut, {
        message: 'COPY ... TO STDOUT in binary format is not allowed through Sluice for identities whose results are masked; use text or CSV format',
      });
    }
    // A masked value stored where a later statement reads it back (set_config('app.x', ssn, ...)) would leave
    // unmasked: a statement that touches a masked column may not store computed values.
    const stores = analysis.statements.findIndex((s) => s.storesValues);
    const storeTaint = stores >= 0 ? maskTaint(this.policy.masking, identity, viewed) : undefined;
    if (storeTaint) {
      return refusal(analysis, 'masking-store', `the statement would store a value computed from ${storeTaint}, which is masked for this identity`, stores, {
        message: `Sluice refuses to store a value computed from ${storeTaint} (masked for you) where a later statement could read it back`,
        hint: 'set_config() with a constant value is fine.',
      });
    }
    // COPY rows are lines of text with no column descriptions. Columns copied as they are are scanned line by line
    // like any result text; a ruled column, or a value computed from one or from a column whose name says it holds
    // personal data, cannot be told apart in the lines: such a COPY is refused.
    const copyOut = analysis.statements.findIndex((s) => s.command === 'COPY TO');
    const copy = analysis.statements[copyOut];
    const asIs = !!copy?.outputs?.every((o) => o.plain);
    const copyTaint = copy ? maskTaint(this.policy.masking, identity, throughViews({ ...analysis, statements: [copy] }, this.views[dialect]?.get(database)), { byName: !asIs }) : undefined;
    if (copyTaint) {
      return refusal(analysis, 'masking-copy', `COPY output would carry ${copyTaint}, which is masked for this identity`, copyOut, {
        message: `COPY ... TO is not allowed through Sluice for rows that include ${copyTaint}, which is masked for you`,
        hint: 'Name the columns you need (COPY t (a, b) TO ...), or SELECT them: masked columns come back masked.',
      });
    }
    return undefined;
  }

  /**
   * Store an approval request for a held statement (or find this identity's open one for the same statement).
   * Engines that wait in place use hold(); MCP returns the id and resumes with awaitApproval().
   */
  requestApproval(h: HoldRequest): Promise<Approval> {
    if (!this.approvals) throw new ApprovalError('approvals are not enabled on this gateway', 400);
    const unheld = unapprovable(h.verdict);
    if (unheld) throw new ApprovalError(unheld.message, 400);
    const a = h.verdict.analysis;
    const { verdict: _, ...statement } = h;
    return this.approvals.requestStatement({
      ...statement,
      rule: h.verdict.decision.rule,
      reason: h.verdict.decision.reason,
      spec: h.verdict.decision.approval,
      classes: a?.classes,
      tables: a?.tables,
      destructive: a?.destructive,
    });
  }

  /**
   * The verdict a held statement ends with once its request is decided: allowed (the approval is used up, single
   * use), or an error naming the reviewer and reason, or the timeout. An abort (client cancel) leaves it pending.
   */
  async awaitApproval(h: HoldRequest, a: Approval, signal?: AbortSignal): Promise<Verdict> {
    const approvals = this.approvals!;
    const final = a.status === 'pending' ? await approvals.wait(a.id, signal) : a;
    const base = { analysis: h.verdict.analysis };
    if (final.status === 'approved') {
      const used = await approvals.consume(final.id, h.sessionId);
      if (used) {
        const by = used.votes.filter((v) => v.action === 'approve').map((v) => v.by).join(', ');
        return { ...base, approvalId: used.id, decision: { action: 'allow', rule: h.verdict.decision.rule, reason: `approved by ${by} (${used.id})` } };
      }
      return { ...base, approvalId: final.id, decision: { action: 'deny', rule: h.verdict.decision.rule, reason: 'approval already used' }, error: { code: '42501', message: `approval ${final.id} was already used (an approval runs its statement once)` } };
    }
    const vote = final.votes.find((v) => v.action === 'deny');
    if (final.status === 'denied') {
      const who = vote?.by === final.requester ? 'withdrawn by the requester' : `denied by ${vote?.by ?? 'a reviewer'}`;
      return { ...base, approvalId: final.id, decision: { action: 'deny', rule: h.verdict.decision.rule, reason: `${who}${vote?.reason ? `: ${vote.reason}` : ''}` }, error: { code: '42501', message: `statement ${who}${vote?.reason ? `: ${vote.reason}` : ''} (${final.id})`, detail: `Rule "${h.verdict.decision.rule}" requires approval.` } };
    }
    if (final.status === 'revoked') {
      const why = `approval ${final.id} was revoked by ${final.revoked_by ?? 'a reviewer'}${final.revoke_reason ? `: ${final.revoke_reason}` : ''}`;
      return { ...base, approvalId: final.id, decision: { action: 'deny', rule: h.verdict.decision.rule, reason: why }, error: { code: '42501', message: why } };
    }
    const reason = final.status === 'executed' ? 'approval already used' : 'no decision in time';
    return { ...base, approvalId: final.id, decision: { action: 'deny', rule: h.verdict.decision.rule, reason }, error: { code: final.status === 'executed' ? '42501' : '57014', message: final.status === 'executed' ? `approval ${final.id} was already used (an approval runs its statement once)` : `canceling statement: approval ${final.id} was not decided in time`, hint: 'Run the statement again to file a new request, or ask a reviewer to decide sooner.' } };
  }

  /** Request and wait in place: `notify` is told the request (and its link) when the client must wait. */
  async hold(h: HoldRequest, notify: (a: Approval, url: string) => void, signal?: AbortSignal): Promise<Verdict> {
    const unheld = unapprovable(h.verdict);
    if (unheld) return { analysis: h.verdict.analysis, decision: { action: 'deny', rule: h.verdict.decision.rule, reason: 'COPY FROM STDIN cannot be approved (the rows are not part of the request)' }, error: unheld };
    try {
      const a = await this.requestApproval(h);
      if (a.status === 'pending') notify(a, this.approvals!.url(a.id));
      return await this.awaitApproval(h, a, signal);
    } catch (e) {
      if (signal?.aborted) throw e;
      return { analysis: h.verdict.analysis, decision: { action: 'deny', rule: h.verdict.decision.rule, reason: `approval unavailable: ${(e as Error).message}` }, error: { code: '57P03', message: `this statement needs approval, but the approval service failed: ${(e as Error).message}` } };
    }
  }

  record(event: AuditEvent): void {
    this.recorder.record(event);
  }

  /** Key for the deterministic `hash` masker: SLUICE_MASK_KEY (shared by all gateways), else random per process. */
  readonly maskKey: Buffer = process.env.SLUICE_MASK_KEY ? Buffer.from(process.env.SLUICE_MASK_KEY, 'utf8') : crypto.randomBytes(32);

  /**
   * How to mask a result with these columns for this identity; undefined when it passes untouched. With the
   * database, columns of views are traced to the table columns they come from.
   */
  maskPlan(identity: Identity, analysis: Analysis | undefined, fields: Field[], database?: string, dialect: 'postgres' | 'mysql' = 'postgres', opts: { taintAll?: boolean } = {}): MaskPlan | undefined {
    const a = analysis && database !== undefined ? throughViews(analysis, this.views[dialect]?.get(database)) : analysis;
    const relations = dialect === 'postgres' && database !== undefined ? this.functions?.get(database)?.relations : undefined;
    const origin = relations ? (oid: number, attnum: number) => {
      const r = relations.get(oid);
      const column = r?.columns.get(attnum);
      return r && column ? { table: r.table, column } : undefined;
    } : undefined;
    return maskPlan(this.policy.masking, identity, a, fields, this.maskKey, origin, opts);
  }

  /**
   * Whether text this identity receives in columns the gateway cannot name (COPY rows, undescribed portals) is
   * scanned by the detectors: a plan for an anonymous text column.
   */
  /** Whether anything in results of this statement is masked for this identity (detectors, rules or taint). */
  masks(identity: Identity, analysis: Analysis | undefined): boolean {
    return this.maskPlan(identity, analysis, PROBE_FIELD) !== undefined;
  }

  scansText(identity: Identity, analysis: Analysis | undefined): boolean {
    return this.maskPlan(identity, analysis, PROBE_FIELD)?.columns[0]?.kind === 'scan';
  }

  /** The masked column (rule label) a statement touches for this identity, if any: its errors and notices are scrubbed. */
  taint(identity: Identity, analysis: Analysis | undefined, database?: string, dialect: 'postgres' | 'mysql' = 'postgres'): string | undefined {
    if (!analysis) return undefined;
    return maskTaint(this.policy.masking, identity, database !== undefined ? throughViews(analysis, this.views[dialect]?.get(database)) : analysis);
  }

  maskingExempt(identity: Identity): boolean {
    return isExempt(this.policy.masking, identity);
  }
}

/**
 * The Governor bound to one engine: what a protocol engine (and MCP, per call) asks of it. Engines reach nothing
 * else of the Governor (its caches, catalogs, approvals or audit log).
 */
export class EngineGovernor {
  constructor(private readonly g: Governor, readonly engine: Engine) {}

  authenticate(password: string, source?: string): Promise<Identity> {
    return this.g.authenticate(password, source);
  }
  openDatabase(database: string): Promise<void> {
    return this.g.openDatabase(this.engine, database);
  }
  /**
   * MySQL: what judging this text must wait for: the reload of the routine catalog after DDL, or a read of it when
   * the text calls a routine it does not know (created behind the gateway's back; at most one such read every 2 s).
   */
  routinesFor(sql: string, database: string): Promise<void> | undefined {
    const c = this.engine === 'mysql' ? this.g.mysqlRoutines : undefined;
    if (!c) return undefined;
    const settled = c.settled();
    if (settled) return settled;
    const facts = c.get();
    const r = facts && this.g.mysqlCache.analyze(sql);
    return r?.ok && unknownCalls(r, facts!, database) ? c.refreshUnknown() : undefined;
  }
  /** `memo`: the session's (see SessionMemo). */
  check(identity: Identity, database: string, sql: string, prepared?: ReadonlyMap<string, StatementInfo>, memo?: SessionMemo, staleCursors?: ReadonlyMap<string, StatementInfo>): Verdict {
    return this.g.check(identity, database, sql, prepared, this.engine, memo, staleCursors);
  }
  loadCatalogs(database: string): Promise<void> | undefined {
    return this.g.loadCatalogs(database);
  }
  refreshCatalogs(database: string): Promise<void> | undefined {
    return this.g.refreshCatalogs(database);
  }
  pendingRefresh(database: string): Promise<void> | undefined {
    return this.g.pendingRefresh(database);
  }
  forgetDatabase(database: string): void {
    this.g.forgetDatabase(database);
  }
  hold(h: Omit<HoldRequest, 'engine'>, notify: (a: Approval, url: string) => void, signal?: AbortSignal): Promise<Verdict> {
    return this.g.hold({ ...h, engine: this.engine }, notify, signal);
  }
  /** Report what happened to the approval a statement ran under. */
  approvalOutcome(approvalId: string, o: { rows?: number; error?: string }): void {
    this.g.approvals?.recordOutcome(approvalId, o);
  }
  /** The qualified name of the function an OID names in a database (fast-path calls), if the catalog knows it. */
  functionName(database: string, oid: number): string | undefined {
    return this.g.functions?.get(database)?.byOid.get(oid);
  }
  record(event: AuditEvent, json?: string): void {
    this.g.recorder.record(event, json);
  }
  /** The events recorded so far reach the spool before a reply is released; false when they cannot (fail closed). */
  flushAudit(): boolean {
    return this.g.recorder.flush();
  }
  /** What a session's memo entries depend on (see Governor.memoInputs). */
  memoInputs(database: string): readonly unknown[] {
    return this.g.memoInputs(this.engine, database);
  }
  maskPlan(identity: Identity, analysis: Analysis | undefined, fields: Field[], database: string, opts: { taintAll?: boolean } = {}): MaskPlan | undefined {
    return this.g.maskPlan(identity, analysis, fields, database, this.engine, opts);
  }
  masks(identity: Identity, analysis: Analysis | undefined): boolean {
    return this.g.masks(identity, analysis);
  }
  scansText(identity: Identity): boolean {
    return this.g.scansText(identity, undefined);
  }
  taint(identity: Identity, analysis: Analysis | undefined, database: string): string | undefined {
    return this.g.taint(identity, analysis, database, this.engine);
  }
  maskingExempt(identity: Identity): boolean {
    return this.g.maskingExempt(identity);
  }
  /** The key of a plan for rows of unknown columns (every cell scanned). */
  get maskKey(): Buffer {
    return this.g.maskKey;
  }
}

/** Whether two Governor.memoInputs() are the same objects (nothing a verdict depends on has changed). */
export const sameInputs = (a: readonly unknown[], b: readonly unknown[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * What one session remembers of the Governor's answers: a statement's verdict per cached analysis, and the masking
 * plan per result shape (RowDescription) and analysis. Everything it holds was computed from one set of inputs
 * (the policy and the database's catalog loads, Governor.memoInputs) and for the session's identity; asked with
 * other inputs it forgets everything first, so it never answers from facts that changed and never keeps an old
 * catalog load alive. A session repeats the same few statements, so most skip policy, guard and masking
 * evaluation. Bounded: cleared when full.
 */
export class SessionMemo {
  private readonly verdicts = new Map<Analysis, Verdict>();
  private readonly plans = new Map<string, { analysis: Analysis | undefined; plan: MaskPlan | undefined }>();
  private readonly masking = new Map<Analysis | undefined, boolean>();
  private inputs?: readonly unknown[];

  constructor(
    readonly identity: Identity,
    private readonly max = 256,
  ) {}

  /** Entries are for `inputs`: forget those made from others. */
  private align(inputs: readonly unknown[]): void {
    if (this.inputs && sameInputs(this.inputs, inputs)) return;
    this.verdicts.clear();
    this.plans.clear();
    this.masking.clear();
    this.inputs = inputs;
  }

  verdict(a: Analysis, inputs: readonly unknown[]): Verdict | undefined {
    this.align(inputs);
    return this.verdicts.get(a);
  }
  remember(a: Analysis, inputs: readonly unknown[], v: Verdict): void {
    this.align(inputs);
    if (this.verdicts.size >= this.max) this.verdicts.clear();
    this.verdicts.set(a, v);
  }
  /** `shape`: the result's description as bytes (and anything else the plan depends on), as a string. */
  plan(shape: string, a: Analysis | undefined, inputs: readonly unknown[]): { plan: MaskPlan | undefined } | undefined {
    this.align(inputs);
    const e = this.plans.get(shape);
    return e && e.analysis === a ? { plan: e.plan } : undefined;
  }
  rememberPlan(shape: string, a: Analysis | undefined, inputs: readonly unknown[], plan: MaskPlan | undefined): void {
    this.align(inputs);
    if (this.plans.size >= this.max) this.plans.clear();
    this.plans.set(shape, { analysis: a, plan });
  }
  /** Whether masking applies to the rows of this analysis at all (Governor.masks), when remembered. */
  masks(a: Analysis | undefined, inputs: readonly unknown[]): boolean | undefined {
    this.align(inputs);
    return this.masking.get(a);
  }
  rememberMasks(a: Analysis | undefined, inputs: readonly unknown[], masks: boolean): void {
    this.align(inputs);
    if (this.masking.size >= this.max) this.masking.clear();
    this.masking.set(a, masks);
  }
}

/** One promise for the loads under way (undefined: none). */
function whenAll(loads: (Promise<void> | undefined)[]): Promise<void> | undefined {
  const running = loads.filter((p): p is Promise<void> => p !== undefined);
  return running.length ? Promise.all(running).then(() => undefined) : undefined;
}

/**
 * Why a held statement cannot be put to a reviewer at all: COPY ... FROM STDIN loads rows that arrive only after
 * the statement runs, so an approval could not show or bind them.
 */
function unapprovable(v: Verdict): GovernorError | undefined {
  const copy = v.analysis?.statements.find((s) => s.command === 'COPY FROM' && !s.flags.includes('server-file') && !s.flags.includes('copy-program'));
  if (!copy) return undefined;
  return {
    code: '42501',
    message: `COPY ... FROM STDIN cannot be held for approval under Sluice policy rule "${v.decision.rule}": the reviewer would approve the statement without seeing the rows it loads`,
    hint: 'Load the rows with INSERT statements (each approval is bound to its values), or ask for a just-in-time write grant (sluice request).',
  };
}

/**
 * SQL-level `EXECUTE name` judged as what `PREPARE name` defined (a PREPARE earlier in the same message counts too);
 * a verdict when a name was not prepared through Sluice.
 */
/** An analysis whose statements were replaced by what they run (EXECUTE, FETCH), with its summary fields again. */
function withStatements(r: Analysis, statements: StatementInfo[]): Analysis {
  return { ...r, statements, classes: [...new Set(statements.map((s) => s.class))], tables: [...new Set(statements.flatMap((s) => s.tables.map((t) => t.name)))], destructive: statements.flatMap((s) => s.destructive), flags: [...new Set(statements.flatMap((s) => s.flags))] };
}

/** Whether the analysis FETCHes or MOVEs from one of these cursors. */
const fetchesFrom = (r: Analysis, cursors: ReadonlyMap<string, StatementInfo> | undefined): cursors is ReadonlyMap<string, StatementInfo> =>
  !!cursors?.size && r.statements.some((s) => s.cursor?.op === 'fetch' && cursors.has(s.cursor.name ?? ''));

/** FETCH and MOVE from a cursor in `stale` judged as that cursor's query (what they run on). */
function resolveFetches(r: Analysis, stale: ReadonlyMap<string, StatementInfo> | undefined): Analysis {
  if (!fetchesFrom(r, stale)) return r;
  return withStatements(
    r,
    r.statements.map((s) => {
      const target = s.cursor?.op === 'fetch' ? stale.get(s.cursor.name ?? '') : undefined;
      return target ? { ...target, command: s.command, cursor: s.cursor, prepares: undefined } : s;
    }),
  );
}

function resolveExecutes(r: Analysis, prepared: ReadonlyMap<string, StatementInfo> | undefined): Analysis | Verdict {
  if (!r.statements.some((s) => s.executes !== undefined)) return r;
  const statements: StatementInfo[] = [];
  // A PREPARE earlier in the same message counts too (`PREPARE p AS ...; EXECUTE p`).
  const local = new Map<string, StatementInfo>();
  for (const s of r.statements) {
    if (s.prepares !== undefined) local.set(s.prepares, s);
    if (s.executes === undefined) {
      statements.push(s);
      continue;
    }
    const target = local.get(s.executes) ?? prepared?.get(s.executes);
    if (!target) {
      return {
        analysis: r,
        decision: { action: 'deny', rule: 'unknown-prepared-statement', reason: `prepared statement "${s.executes}" was not prepared through Sluice` },
        error: { code: '26000', message: `prepared statement "${s.executes}" does not exist in this Sluice session` },
      };
    }
    statements.push({ ...target, command: 'EXECUTE', executes: s.executes, prepares: undefined });
  }
  return withStatements(r, statements);
}

/** A one-column text result of no particular name (see scansText). */
const PROBE_FIELD: Field[] = [{ name: '?column?', tableOid: 0, attnum: 0, typeOid: 0, format: 0 }];

/** A statement Sluice refuses whatever the policy says: it cannot judge it, or it would leave the state Sluice parses under. */
function guardRefusal(analysis: Analysis, statement: number, reason: string): Verdict {
  return refusal(analysis, 'sluice-guard', reason, statement, { message: `Sluice refuses this statement: ${reason}`, hint: 'The statement was not run; the session is still usable.' });
}

/** A statement refused (42501) by one of the gateway's own rules rather than by a policy rule. */
function refusal(analysis: Analysis, rule: string, reason: string, statement: number | undefined, error: { message: string; hint?: string }): Verdict {
  return { analysis, decision: { action: 'deny', rule, reason, ...(statement !== undefined ? { statement } : {}) }, error: { code: '42501', ...error } };
}

