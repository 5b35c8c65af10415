import crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { AuditEvent } from '../audit/audit.js';
import { isDelegated, principals, type Identity } from '../identity/identity.js';
import type { ApprovalSpec } from '../policy/policy.js';
import { globMatch } from '../util/glob.js';
import { log } from '../util/log.js';
import type { Approval, ApprovalFilter, ApprovalStore, GrantRole, Preview } from './store.js';

/** A reviewer's action the service refuses (self-approval, not an approver, already decided...). */
export class ApprovalError extends Error {
  constructor(
    message: string,
    readonly status: 403 | 404 | 409 | 400,
  ) {
    super(message);
    this.name = 'ApprovalError';
  }
}

export interface ApprovalsOptions {
  store: ApprovalStore;
  audit: (e: AuditEvent) => void;
  /** Base URL of the web console/API, for links in notices and notifications. */
  publicUrl?: string;
  /** Slack-compatible incoming webhook: JSON `{text, blocks, sluice}` is POSTed on every request and outcome. */
  webhookUrl?: string;
  /** How long a held statement waits for a decision unless its rule says otherwise (seconds). */
  waitTimeoutS?: number;
  /** How long an approved statement stays usable by a re-run when the waiting client has gone (seconds). */
  validForS?: number;
  /** How long an undecided grant request stays open (seconds). */
  grantRequestTtlS?: number;
  /** Longest grant that may be requested (seconds). */
  maxGrantS?: number;
  /** Change-feed poll interval: how soon decisions made by another gateway process are seen (ms). */
  pollMs?: number;
  /** Blast-radius preview of a statement request (runs in the background after the request is stored). */
  preview?: (a: Approval) => Promise<Preview>;
}

export interface StatementRequest {
  identity: Identity;
  database: string;
  sql: string;
  params?: (string | null)[];
  binaryParams?: boolean;
  /** Per-parameter wire format (0 text, 1 binary), when any is binary. */
  paramFormats?: number[];
  /** Declared parameter type OIDs (0 = inferred). */
  paramTypes?: number[];
  engine?: 'postgres' | 'mysql';
  rule: string;
  reason?: string;
  spec?: ApprovalSpec;
  classes?: string[];
  tables?: string[];
  destructive?: string[];
  sessionId?: string;
}

export interface GrantRequest {
  database: string;
  role: GrantRole;
  duration_s: number;
  reason: string;
  approvers?: string[];
  quorum?: number;
}

/** Statement classes each grant role lets through (transaction control and session settings always). */
const ROLE_CLASSES: Record<GrantRole, string[]> = {
  read: ['read', 'transaction', 'session', 'other'],
  write: ['read', 'write', 'transaction', 'session', 'other'],
  ddl: ['read', 'write', 'ddl', 'transaction', 'session', 'other'],
  admin: ['read', 'write', 'ddl', 'admin', 'transaction', 'session', 'other'],
};

const now = () => new Date().toISOString();
const later = (s: number) => new Date(Date.now() + s * 1000).toISOString();

/**
 * What an approval is bound to: the database, the SQL and the parameters as the server will interpret them, so
 * each parameter's wire format (text `\\x4869` and binary 0x4869 are different values) and the declared type OIDs
 * (the same text is a different value as text or bytea) are part of it when they are not the defaults.
 */
export function statementHash(database: string, sql: string, params: (string | null)[] = [], shape: { formats?: number[]; types?: number[] } = {}): string {
  const formats = shape.formats?.some((f) => f !== 0) ? shape.formats : undefined;
  const types = shape.types?.some((t) => t !== 0) ? shape.types : undefined;
  const bound = formats || types ? [database, sql, params, formats ?? [], types ?? []] : [database, sql, params];
  return crypto.createHash('sha256').update(JSON.stringify(bound)).digest('hex');
}

/**
 * Approval requests and just-in-time grants. State lives in the store, so requests survive a restart and every
 * gateway process sharing the store sees every decision: local changes are announced at once, other processes'
 * changes through a polled change feed (updated_at). Emits 'change' with each new version of an approval.
 */
export class Approvals extends EventEmitter {
  readonly store: ApprovalStore;
  private readonly o: Required<Omit<ApprovalsOptions, 'publicUrl' | 'webhookUrl' | 'preview'>> & ApprovalsOptions;
  private readonly seen = new Map<string, number>();
  /** Approved grants by requester subject (refreshed from the change feed). */
  private readonly grants = new Map<string, Approval[]>();
  private timer?: NodeJS.Timeout;
  private lastPoll = now();
  private polls = 0;
  private polling = false;
  private readonly previews = new Set<Promise<void>>();

  constructor(o: ApprovalsOptions) {
    super();
    this.setMaxListeners(0);
    this.store = o.store;
    this.o = { waitTimeoutS: 300, validForS: 3600, grantRequestTtlS: 86400, maxGrantS: 7 * 86400, pollMs: 1000, ...o };
  }

  async start(): Promise<void> {
    for (const g of await this.store.list({ kind: 'grant', status: ['approved'], limit: 1000 })) this.note(g);
    this.timer = setInterval(() => void this.poll(), this.o.pollMs);
    this.timer.unref();
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await Promise.allSettled([...this.previews]);
  }

  /** Where reviewers open a request (the web console); set by the gateway once its API listens. */
  get publicUrl(): string | undefined {
    return this.o.publicUrl;
  }
  set publicUrl(u: string | undefined) {
    this.o.publicUrl = u;
  }

  url(id: string): string {
    return this.o.publicUrl ? `${this.o.publicUrl.replace(/\/$/, '')}/approvals/${id}` : `sluice approvals show ${id}`;
  }

  get(id: string): Promise<Approval | undefined> {
    return this.store.get(id);
  }

  list(f: ApprovalFilter): Promise<Approval[]> {
    return this.store.list(f);
  }

  /**
   * A held statement: reuse this requester's open request for the very same statement (a re-run after a
   * disconnect, or after approval) or store a new one, notify reviewers and start the preview.
   */
  async requestStatement(r: StatementRequest): Promise<Approval> {
    const hash = statementHash(`${r.engine === 'mysql' ? 'mysql:' : ''}${r.database}`, r.sql, r.params, { formats: r.paramFormats, types: r.paramTypes });
    const open = await this.store.list({ requester: r.identity.subject, hash, status: ['pending', 'approved'], limit: 5 });
    const reusable = open.find((a) => a.expires_at > now());
    if (reusable) return reusable;
    const t = now();
    const a: Approval = {
      id: `apr_${crypto.randomBytes(6).toString('hex')}`,
      kind: 'statement',
      status: 'pending',
      ...requesterFields(r.identity),
      database: r.database,
      engine: r.engine === 'mysql' ? 'mysql' : undefined,
      sql: r.sql,
      params: r.params?.length ? r.params : undefined,
      binary_params: r.binaryParams || undefined,
      param_formats: r.paramFormats?.some((f) => f !== 0) ? r.paramFormats : undefined,
      param_types: r.paramTypes?.some((t) => t !== 0) ? r.paramTypes : undefined,
      hash,
      rule: r.rule,
      policy_reason: r.reason || undefined,
      classes: r.classes,
      tables: r.tables,
      destructive: r.destructive?.length ? r.destructive : undefined,
      approver_groups: r.spec?.approvers ?? [],
      quorum: r.spec?.quorum ?? 1,
      agents_may_approve: r.spec?.agents_may_approve || undefined,
      votes: [],
      session_id: r.sessionId,
      created_at: t,
      updated_at: t,
      expires_at: later(r.spec?.timeout_s ?? this.o.waitTimeoutS),
      version: 1,
    };
    await this.open(a);
    if (this.o.preview) {
      const p = this.runPreview(a).finally(() => this.previews.delete(p));
      this.previews.add(p);
    }
    return a;
  }

  /** Store a new request and announce it (audit, change feed, webhook). */
  private async open(a: Approval): Promise<void> {
    await this.store.insert(a);
    this.auditEvent('requested', a);
    this.changed(a);
    this.notify('requested', a);
  }

  private async runPreview(a: Approval): Promise<void> {
    let preview: Preview;
    try {
      preview = await this.o.preview!(a);
    } catch (e) {
      preview = { kind: 'none', error: (e as Error).message };
    }
    await this.mutate(a.id, (cur) => {
      cur.preview = preview;
    }).catch((e) => log.warn(`approvals: cannot store the preview of ${a.id}: ${(e as Error).message}`));
    this.audit({ type: 'approval', subject: a.requester, database: a.database, approval_id: a.id, details: { event: 'preview', preview } });
  }

  async requestGrant(identity: Identity, g: GrantRequest): Promise<Approval> {
    if (!(g.duration_s > 0) || g.duration_s > this.o.maxGrantS) throw new ApprovalError(`a grant lasts between 1 second and ${this.o.maxGrantS} seconds`, 400);
    if (!ROLE_CLASSES[g.role]) throw new ApprovalError(`unknown role "${g.role}" (read, write, ddl or admin)`, 400);
    if (!g.reason?.trim()) throw new ApprovalError('a grant request needs a reason', 400);
    if (!g.database?.trim()) throw new ApprovalError('a grant request needs a database (a name or glob)', 400);
    const t = now();
    const a: Approval = {
      id: `grt_${crypto.randomBytes(6).toString('hex')}`,
      kind: 'grant',
      status: 'pending',
      ...requesterFields(identity),
      database: g.database,
      role: g.role,
      duration_s: g.duration_s,
      justification: g.reason,
      approver_groups: g.approvers ?? [],
      quorum: g.quorum ?? 1,
      votes: [],
      created_at: t,
      updated_at: t,
      expires_at: later(this.o.grantRequestTtlS),
      version: 1,
    };
    await this.open(a);
    return a;
  }

  /** Record one reviewer's approve/deny. Refuses self-approval, non-approvers, double votes and closed requests. */
  async decide(id: string, approver: Identity, action: 'approve' | 'deny', reason?: string): Promise<Approval> {
    let final = false;
    const a = await this.mutate(id, (cur) => {
      try {
        this.mayVote(cur, approver, action);
      } catch (e) {
        // Refused self-approvals and agents' votes are security events: audited, not only answered.
        if (e instanceof ApprovalError && e.status === 403) this.audit({ type: 'approval', subject: approver.subject, identity_kind: approver.kind, acting_for: approver.actingFor, database: cur.database, approval_id: cur.id, decision: 'deny', reason: e.message, details: { event: 'vote_refused', action, requester: cur.requester } });
        throw e;
      }
      const voter = principals(approver);
      cur.votes.push({ by: approver.subject, by_name: approver.displayName, principals: voter.length > 1 ? voter : undefined, action, reason: reason || undefined, at: now() });
      if (action === 'deny') cur.status = 'denied';
      else if (cur.votes.filter((v) => v.action === 'approve').length >= cur.quorum) {
        cur.status = 'approved';
        if (cur.kind === 'statement') cur.expires_at = later(this.o.validForS);
        else {
          cur.grant_expires_at = later(cur.duration_s!);
          cur.expires_at = cur.grant_expires_at;
        }
      }
      if (cur.status !== 'pending') cur.decided_at = now();
      final = cur.status !== 'pending';
    });
    this.audit({ type: 'approval', subject: approver.subject, identity_kind: approver.kind, acting_for: approver.actingFor, database: a.database, approval_id: a.id, decision: action === 'approve' ? 'allow' : 'deny', reason: reason || undefined, details: { event: 'vote', requester: a.requester, status: a.status, votes: a.votes.length, quorum: a.quorum } });
    if (final) this.auditEvent(a.status, a, approver.subject);
    if (final) this.notify(a.status, a);
    return a;
  }

  /**
   * Withdraw an approved grant before it ends, or an approved statement approval before it is used. Every gateway
   * sharing the store stops honouring it by its next statement (here at once, elsewhere through the change feed).
   * Who may revoke (the rule's approvers, admins, the grantee) is the caller's to check.
   */
  async revoke(id: string, by: Identity, reason?: string): Promise<Approval> {
    const a = await this.mutate(id, (cur) => {
      if (cur.status !== 'approved') throw new ApprovalError(`${cur.id} is ${cur.status}: only an approved grant or an approved, unused statement can be revoked`, 409);
      if (cur.kind === 'grant' && cur.grant_expires_at! <= now()) throw new ApprovalError(`grant ${cur.id} already ended at ${cur.grant_expires_at}`, 409);
      cur.status = 'revoked';
      cur.revoked_at = now();
      cur.revoked_by = by.subject;
      cur.revoke_reason = reason || undefined;
    });
    this.auditEvent('revoked', a, by.subject, reason);
    this.notify('revoked', a);
    return a;
  }

  /** Whether this identity may cast this vote on the request as it stands now; throws the refusal. */
  private mayVote(cur: Approval, approver: Identity, action: 'approve' | 'deny'): void {
    if (cur.status === 'pending' && cur.expires_at <= now()) cur.status = 'expired';
    if (cur.status !== 'pending') throw new ApprovalError(`${cur.id} is already ${cur.status}${cur.status === 'approved' ? ` (to withdraw it, revoke it: POST /api/approvals/${cur.id}/revoke)` : ''}`, 409);
    const shared = sharedPrincipal(approver, cur);
    const own = shared !== undefined;
    if (own && action === 'approve') {
      throw new ApprovalError(
        approver.subject === cur.requester
          ? `${approver.subject} cannot approve their own request ${cur.id}`
          : `${approver.subject} cannot approve ${cur.id}: requester ${cur.requester} and approver ${approver.subject} share the principal ${shared} along their delegation chains (self-approval)`,
        403,
      );
    }
    if (action === 'approve' && isDelegated(approver) && !cur.agents_may_approve) {
      throw new ApprovalError(`${approver.subject} is an agent or acts for someone (${approver.kind}${approver.actingFor ? `, for ${approver.actingFor}` : ''}) and cannot approve ${cur.id}: ${cur.kind === 'grant' ? 'grant requests are approved by people' : `rule "${cur.rule}" does not set approval.agents_may_approve`}`, 403);
    }
    if (!own && cur.approver_groups.length && !cur.approver_groups.some((g) => approver.groups.includes(g))) {
      throw new ApprovalError(`${cur.id} must be reviewed by a member of ${cur.approver_groups.join(' or ')}`, 403);
    }
    if (cur.votes.some((v) => v.by === approver.subject)) throw new ApprovalError(`${approver.subject} has already voted on ${cur.id}`, 409);
    // A quorum is of distinct people: an agent does not vote again for the person it acts for, nor the reverse.
    const mine = principals(approver);
    const twice = cur.votes.find((v) => (v.principals ?? [v.by]).some((p) => mine.includes(p)));
    if (twice) throw new ApprovalError(`${approver.subject} shares a principal with ${twice.by}, who has already voted on ${cur.id}`, 409);
  }

  /** Wait until the request is decided or expires (it is marked expired then). An abort leaves it pending. */
  wait(id: string, signal?: AbortSignal): Promise<Approval> {
    return new Promise<Approval>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      let finished = false;
      const done = (err: Error | undefined, a?: Approval) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        this.off('change', onChange);
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve(a!);
      };
      const onChange = (a: Approval) => {
        if (a.id === id && a.status !== 'pending') done(undefined, a);
      };
      const onAbort = () => done(new Error('aborted'));
      if (signal?.aborted) return onAbort();
      this.on('change', onChange);
      signal?.addEventListener('abort', onAbort);
      this.store.get(id).then(
        (a) => {
          if (finished) return;
          if (!a) return done(new ApprovalError(`no approval request ${id}`, 404));
          if (a.status !== 'pending') return done(undefined, a);
          const ms = Math.max(0, Date.parse(a.expires_at) - Date.now());
          timer = setTimeout(() => this.expire(id).then((x) => done(undefined, x), (e) => done(e as Error)), ms);
          timer.unref();
        },
        (e) => done(e as Error),
      );
    });
  }

  /** Mark a pending request expired (no-op if it was decided meanwhile); returns its final state. */
  async expire(id: string): Promise<Approval> {
    let expired = false;
    const a = await this.mutate(id, (cur) => {
      if (cur.status !== 'pending') return false;
      cur.status = 'expired';
      cur.decided_at = now();
      expired = true;
    });
    if (expired) {
      this.auditEvent('expired', a);
      this.notify('expired', a);
    }
    return a;
  }

  /** Use an approved statement approval (single use): false when it was used, or lapsed, already. */
  async consume(id: string, sessionId?: string): Promise<Approval | undefined> {
    let took = false;
    try {
      const a = await this.mutate(id, (cur) => {
        if (cur.status !== 'approved' || cur.kind !== 'statement' || cur.expires_at <= now()) return false;
        cur.status = 'executed';
        cur.executed_at = now();
        if (sessionId) cur.session_id = sessionId;
        took = true;
      });
      return took ? a : undefined;
    } catch (e) {
      if (e instanceof ApprovalError) return undefined;
      throw e;
    }
  }

  /** Record how the approved statement ended (rows or error) on its request. */
  recordOutcome(id: string, outcome: { rows?: number; error?: string }): void {
    this.mutate(id, (cur) => {
      cur.outcome = outcome;
    }).catch((e) => log.warn(`approvals: cannot record the outcome of ${id}: ${(e as Error).message}`));
  }

  /** An approved, unexpired grant of this identity covering the database and every statement class given. */
  grantFor(identity: Identity, database: string, classes: readonly string[]): Approval | undefined {
    const list = this.grants.get(identity.subject);
    if (!list) return undefined;
    const t = now();
    return list.find((g) => g.grant_expires_at! > t && globMatch(g.database, database) && classes.every((c) => ROLE_CLASSES[g.role!].includes(c)));
  }

  /**
   * Read-modify-write with optimistic concurrency (another process may change the same row): `change` edits the
   * current record in place; returning false leaves it unchanged.
   */
  private async mutate(id: string, change: (a: Approval) => void | false): Promise<Approval> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const cur = await this.store.get(id);
      if (!cur) throw new ApprovalError(`no approval request ${id}`, 404);
      if (change(cur) === false) return cur;
      cur.version++;
      cur.updated_at = now();
      if (await this.store.update(cur)) {
        this.changed(cur);
        return cur;
      }
    }
    throw new ApprovalError(`${id} is being changed concurrently; try again`, 409);
  }

  private changed(a: Approval): void {
    if ((this.seen.get(a.id) ?? 0) >= a.version) return;
    this.seen.set(a.id, a.version);
    this.note(a);
    this.emit('change', a);
  }

  private note(a: Approval): void {
    if (a.kind !== 'grant') return;
    const list = (this.grants.get(a.requester) ?? []).filter((g) => g.id !== a.id);
    if (a.status === 'approved') list.push(a);
    if (list.length) this.grants.set(a.requester, list);
    else this.grants.delete(a.requester);
  }

  /** Pick up changes made by other processes; every tenth round, expire abandoned pending requests. */
  private async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      const since = new Date(Date.parse(this.lastPoll) - 2000).toISOString();
      this.lastPoll = now();
      for (const a of (await this.store.list({ since, limit: 1000 })).reverse()) this.changed(a);
      if (++this.polls % 10 === 0) {
        await this.reconcileGrants();
        const t = now();
        for (const a of await this.store.list({ status: ['pending'], limit: 1000 })) if (a.expires_at <= t) await this.expire(a.id);
        if (this.seen.size > 10000) this.seen.clear();
      }
    } catch (e) {
      log.warn(`approvals: change feed: ${(e as Error).message}`);
    } finally {
      this.polling = false;
    }
  }

  /**
   * Drop grants this process still honours that the store no longer has approved (a revoke the change feed missed,
   * for example across clock skew between gateways).
   */
  private async reconcileGrants(): Promise<void> {
    const live = new Set((await this.store.list({ kind: 'grant', status: ['approved'], limit: 1000 })).map((g) => g.id));
    for (const g of [...this.grants.values()].flat()) {
      if (live.has(g.id)) continue;
      const cur = await this.store.get(g.id);
      if (cur) this.note(cur);
    }
  }

  private auditEvent(event: string, a: Approval, actor?: string, reason?: string): void {
    // Operators see requests and outcomes in the gateway log too.
    log.info(`approval ${a.id} ${event}${actor && actor !== a.requester ? ` by ${actor}` : ''}: ${a.requester} on ${a.database}${a.kind === 'grant' ? ` (grant ${a.role} for ${a.duration_s}s)` : ''}`);
    this.audit({
      type: 'approval',
      subject: actor ?? a.requester,
      database: a.database,
      approval_id: a.id,
      sql: event === 'requested' ? a.sql : undefined,
      rule: a.rule,
      reason: reason || undefined,
      details: { event, kind: a.kind, requester: a.requester, acting_for: a.acting_for, status: a.status, role: a.role, duration_s: a.duration_s, justification: a.justification, grant_expires_at: a.grant_expires_at, votes: event === 'requested' ? undefined : a.votes },
    });
  }

  private audit(e: AuditEvent): void {
    try {
      this.o.audit(e);
    } catch (err) {
      log.error(`approvals: audit: ${(err as Error).message}`);
    }
  }

  /** Slack-compatible notification; failures are logged, never block the flow. */
  private notify(event: string, a: Approval): void {
    const url = this.o.webhookUrl;
    if (!url) return;
    const what = a.kind === 'grant' ? `${a.role} access to ${a.database} for ${a.duration_s}s: ${a.justification}` : `${a.sql}`;
    const verb = event === 'requested' ? 'requests approval' : `request ${event}`;
    const text = `Sluice ${a.id}: ${a.requester} ${verb}${event === 'requested' ? ` (rule ${a.rule ?? 'jit-grant'})` : ''}\n${what}\n${this.url(a.id)}`;
    const body = {
      text,
      blocks: [{ type: 'section', text: { type: 'mrkdwn', text: `*Sluice ${a.id}*: ${a.requester} ${verb}\n\`\`\`${what}\`\`\`\n<${this.url(a.id)}|Review>` } }],
      sluice: { event, approval: { ...a, params: undefined } },
    };
    fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(5000) })
      .then((r) => {
        if (!r.ok) log.warn(`approvals: webhook answered ${r.status}`);
      })
      .catch((e) => log.warn(`approvals: webhook failed: ${(e as Error).message}`));
  }
}

function requesterFields(id: Identity): Pick<Approval, 'requester' | 'requester_kind' | 'requester_name' | 'requester_groups' | 'acting_for' | 'requester_delegation'> {
  return { requester: id.subject, requester_kind: id.kind, requester_name: id.displayName, requester_groups: id.groups, acting_for: id.actingFor, requester_delegation: id.delegation?.length ? id.delegation : undefined };
}

/**
 * A principal the identity shares with the request's requester anywhere along either delegation chain (the
 * subjects themselves, a key's acting_for, a token's act.sub/on_behalf_of), or undefined: that identity is the
 * requester as far as approving goes.
 */
export function sharedPrincipal(id: Pick<Identity, 'subject' | 'actingFor' | 'delegation'>, a: Pick<Approval, 'requester' | 'acting_for' | 'requester_delegation'>): string | undefined {
  const theirs = new Set(principals({ subject: a.requester, actingFor: a.acting_for, delegation: a.requester_delegation }));
  return principals(id).find((p) => theirs.has(p));
}
