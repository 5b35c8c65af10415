import { Hono, type Context, type Next } from 'hono';
import { serve, type ServerType } from '@hono/node-server';
import type { Governor } from '../governor.js';
import type { AdminOps } from '../admin.js';
import type { AuditFilter } from '../audit/audit.js';
import type { SessionRegistry } from '../protocol/common/registry.js';
import { AuthError, type Identity } from '../identity/identity.js';
import { authFailureFields, httpSource, ThrottledError } from '../identity/throttle.js';
import type { Metrics } from '../audit/metrics.js';
import { streamSSE } from 'hono/streaming';
import { bodyLimit } from 'hono/body-limit';
import { log } from '../util/log.js';
import { ApprovalError, sharedPrincipal, type Approvals } from '../approvals/service.js';
import { GRANT_ROLES, type Approval, type ApprovalStatus } from '../approvals/store.js';
import { parseDuration } from '../util/duration.js';
import type { McpTools } from '../mcp/tools.js';
import type { SessionView } from '../store/livesessions.js';
import { handleMcpRequest } from '../mcp/server.js';
import { cookieSession, mountWeb, sealerFor, type WebConfig } from './web.js';
import { complianceApi } from './compliance.js';
import type { Compliance } from '../compliance/service.js';

export type Role = 'admin' | 'auditor' | 'approver' | 'user';

export interface ApiConfig {
  listen: { host: string; port: number };
  /** Groups that grant each role; every authenticated identity is at least a user. */
  roles?: Partial<Record<Exclude<Role, 'user'>, string[]>>;
  /** The web console's sign-in (the console itself is served whenever it is built). */
  web?: WebConfig;
}

export interface ApiDeps {
  governor: Governor;
  ops: Pick<AdminOps, 'auditList' | 'auditVerify' | 'sensitiveReport'>;
  registry: SessionRegistry;
  /** Live sessions of every gateway sharing the store, and terminating one wherever it runs. */
  sessions: { list(): Promise<SessionView[]>; terminate(id: string, by: string): Promise<'terminated' | 'requested' | 'not_found'> };
  metrics: Metrics;
  approvals?: Approvals;
  /** MCP over streamable HTTP at /mcp (same bearer credentials as everything else). */
  mcp?: McpTools;
  /** Evidence packs, checkpoints, streams and access reviews (api/compliance.ts). */
  compliance?: Compliance;
}

type Env = { Variables: { identity: Identity; roles: Set<Role>; csrf?: string } };

export function rolesOf(cfg: ApiConfig, id: Identity): Set<Role> {
  const roles = new Set<Role>(['user']);
  for (const [role, groups] of Object.entries(cfg.roles ?? {}) as [Role, string[]][]) if (groups.some((g) => id.groups.includes(g))) roles.add(role);
  if (roles.has('admin')) ['auditor', 'approver'].forEach((r) => roles.add(r as Role));
  return roles;
}

const problem = (c: Context, status: 400 | 401 | 403 | 404 | 409 | 503, message: string) => c.json({ error: message }, status);

const STATUSES: ApprovalStatus[] = ['pending', 'approved', 'denied', 'expired', 'executed', 'revoked'];

/** A query parameter that must be a whole number from 1 to max (default when absent), or the 400 message. */
function intParam(v: string | undefined, dflt: number, max: number): number | string {
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  return /^\d+$/.test(v) && n >= 1 && n <= max ? n : `limit must be a whole number from 1 to ${max}`;
}

/** The 400 message for a since/until that is not a time, if any. */
function badTimes(q: Record<string, string | undefined>): string | undefined {
  for (const k of ['since', 'until']) if (q[k] && Number.isNaN(new Date(q[k]!).getTime())) return `${k} must be an ISO 8601 time`;
  return undefined;
}

/** Request bodies of /api/* and /auth/* (JSON requests of a few KB; a policy test's SQL at most). */
const MAX_BODY_BYTES = 1 << 20;

async function jsonBody(c: Context): Promise<Record<string, unknown> | undefined> {
  try {
    const b = await c.req.json();
    return b && typeof b === 'object' && !Array.isArray(b) ? (b as Record<string, unknown>) : undefined;
  } catch {
    return c.req.header('content-length') === '0' || !c.req.header('content-type') ? {} : undefined;
  }
}

/** The HTTP API: health, metrics, audit, the sensitive-data report and live sessions. Tokens are the same as on the wire. */
export function buildApi(cfg: ApiConfig, d: ApiDeps): Hono<Env> {
  const app = new Hono<Env>();
  // An unexpected failure is logged here; the caller gets a short JSON error, never a stack trace.
  app.onError((e, c) => {
    log.error(`api: ${c.req.method} ${c.req.path}: ${e.stack ?? e.message}`);
    return c.json({ error: 'internal error (logged by the gateway)' }, 500);
  });
  for (const path of ['/api/*', '/auth/*']) {
    app.use(path, bodyLimit({ maxSize: MAX_BODY_BYTES, onError: (c) => c.json({ error: `request body larger than ${MAX_BODY_BYTES} bytes` }, 413) }));
  }
  app.get('/healthz', (c) => {
    // 503 only while statements are refused; "degraded" (200) while the store is unreachable but the spool holds.
    const audit = d.governor.audit.health();
    return c.json({ status: audit.status, audit, ...(d.compliance?.streamer ? { streams: d.compliance.streamer.health() } : {}) }, audit.healthy ? 200 : 503);
  });
  app.get('/metrics', async (c) => {
    const approvalsPending = d.approvals ? await d.approvals.list({ status: ['pending'], limit: 1000 }).then((l) => l.length, () => undefined) : undefined;
    return c.text(d.metrics.render({ connections: d.registry.sessions.size, audit: d.governor.audit.health(), approvalsPending }) + (d.compliance?.metrics() ?? ''), 200, { 'content-type': 'text/plain; version=0.0.4' });
  });
  app.get('/api/openapi.json', (c) => c.json(OPENAPI));

  // MCP (streamable HTTP, stateless, JSON responses): every request carries the agent's token or key.
  app.all('/mcp', async (c) => {
    if (!d.mcp) return problem(c, 404, 'MCP is not enabled on this gateway');
    if (c.req.method !== 'POST') return c.json({ jsonrpc: '2.0', error: { code: -32000, message: 'Method not allowed: this MCP endpoint is stateless; POST JSON-RPC requests' }, id: null }, 405, { allow: 'POST' });
    const m = /^Bearer\s+(\S+)$/i.exec(c.req.header('authorization') ?? '');
    if (!m) return c.json({ error: 'send Authorization: Bearer <OIDC token or Sluice key>' }, 401, { 'www-authenticate': 'Bearer realm="sluice"' });
    let id: Identity;
    try {
      id = await d.governor.authenticate(m[1]!, httpSource(c.env));
    } catch (e) {
      d.governor.record({ type: 'auth_failure', application_name: 'mcp', client_addr: httpSource(c.env), ...authFailureFields(e, e instanceof AuthError ? e.message : 'authentication failed') });
      return c.json({ error: e instanceof AuthError ? e.message : 'authentication failed' }, 401, { 'www-authenticate': 'Bearer realm="sluice", error="invalid_token"' });
    }
    const res = await handleMcpRequest(d.mcp, id, c.req.raw);
    // The tool calls' audit events reach the spool before the agent sees their results.
    if (!d.governor.audit.flushSpool()) return problem(c, 503, 'Sluice cannot record this call (the audit spool cannot be written)');
    return res;
  });

  const sealer = sealerFor(cfg.web);
  app.use('/api/*', async (c, next) => {
    if (c.req.path === '/api/openapi.json') return next();
    const h = c.req.header('authorization') ?? '';
    const m = /^Bearer\s+(\S+)$/i.exec(h);
    if (!m) {
      // The web console: a signed session cookie; state-changing calls must echo its CSRF token in a header.
      const s = cookieSession(c, sealer);
      if (!s) return problem(c, 401, 'send Authorization: Bearer <OIDC token or Sluice key>, or sign in to the console');
      if (c.req.method !== 'GET' && c.req.method !== 'HEAD' && c.req.header('x-sluice-csrf') !== s.csrf) return problem(c, 403, 'missing or wrong x-sluice-csrf header');
      c.set('identity', s.identity);
      c.set('roles', rolesOf(cfg, s.identity));
      c.set('csrf', s.csrf);
      return next();
    }
    try {
      const id = await d.governor.authenticate(m[1]!, httpSource(c.env));
      c.set('identity', id);
      c.set('roles', rolesOf(cfg, id));
    } catch (e) {
      d.governor.record({ type: 'auth_failure', application_name: 'api', client_addr: httpSource(c.env), ...authFailureFields(e, e instanceof AuthError ? e.message : 'authentication failed') });
      if (e instanceof ThrottledError) return c.json({ error: e.message }, 429, { 'retry-after': String(Math.ceil(e.retryAfterMs / 1000)) });
      return problem(c, 401, e instanceof AuthError ? e.message : 'authentication failed');
    }
    return next();
  });
  const need = (c: Context<Env>, ...roles: Role[]) => roles.some((r) => c.get('roles').has(r));
  /** Route middleware: the caller must hold a role (admins hold every role). */
  const requireRole = (role: Role) => async (c: Context<Env>, next: Next) => (need(c, role) ? next() : problem(c, 403, role === 'admin' ? 'the admin role is required' : `the ${role} or admin role is required`));
  /** The audit filters of a query string (shared by the list and the export), or the 400 answer. */
  const auditQuery = (c: Context<Env>, defaultLimit: number): AuditFilter | Response => {
    const q = c.req.query();
    const bad = badTimes(q);
    if (bad) return problem(c, 400, bad);
    const limit = intParam(q.limit, defaultLimit, 100_000);
    if (typeof limit === 'string') return problem(c, 400, limit);
    return { subject: q.subject, kind: q.kind, type: q.type, decision: q.decision, database: q.database, table: q.table, session: q.session, since: q.since as never, until: q.until as never, limit };
  };

  app.get('/api/me', (c) => c.json({ identity: c.get('identity'), roles: [...c.get('roles')], ...(c.get('csrf') ? { csrf: c.get('csrf') } : {}) }));

  app.get('/api/audit', requireRole('auditor'), async (c) => {
    const q = auditQuery(c, 100);
    if (q instanceof Response) return q;
    return c.json({ events: await d.ops.auditList(q) });
  });
  app.get('/api/audit/verify', requireRole('auditor'), async (c) => {
    const chains = await d.ops.auditVerify();
    return c.json({ ok: chains.every((x) => x.ok), chains });
  });
  app.get('/api/sensitive', async (c) => {
    const subject = c.req.query('subject') ?? c.get('identity').subject;
    if (subject !== c.get('identity').subject && !need(c, 'auditor')) return problem(c, 403, 'you may only see your own report unless you are an auditor');
    const bad = badTimes(c.req.query());
    if (bad) return problem(c, 400, bad);
    return c.json(await d.ops.sensitiveReport({ subject, since: c.req.query('since'), until: c.req.query('until') }));
  });
  app.get('/api/audit/export', requireRole('auditor'), async (c) => {
    const format = c.req.query('format') ?? 'jsonl';
    if (format !== 'jsonl' && format !== 'csv') return problem(c, 400, 'format must be jsonl or csv');
    const q = auditQuery(c, 10_000);
    if (q instanceof Response) return q;
    const events = await d.ops.auditList(q);
    if (format === 'jsonl') return c.body(events.map((e) => JSON.stringify(e)).join('\n') + (events.length ? '\n' : ''), 200, { 'content-type': 'application/x-ndjson', 'content-disposition': 'attachment; filename="sluice-audit.jsonl"' });
    const cols = ['ts', 'type', 'subject', 'identity_kind', 'acting_for', 'database', 'client_addr', 'decision', 'rule', 'sql', 'tables', 'rows', 'duration_ms', 'masked', 'error', 'chain_id', 'seq', 'hash'] as const;
    const cell = (v: unknown) => {
      if (v === undefined || v === null) return '';
      const s = typeof v === 'object' ? JSON.stringify(v) : String(v);
      return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
    };
    const lines = [cols.join(','), ...events.map((e) => cols.map((k) => cell((e as unknown as Record<string, unknown>)[k])).join(','))];
    return c.body(lines.join('\r\n') + '\r\n', 200, { 'content-type': 'text/csv; charset=utf-8', 'content-disposition': 'attachment; filename="sluice-audit.csv"' });
  });

  app.get('/api/policy', (c) => {
    const p = d.governor.currentPolicy;
    return c.json({ file: p.file, default: p.default, rules: p.rules, masking: p.masking });
  });
  /** "Would this be allowed?": the Governor's verdict for an identity (yours, or any for admins) and SQL. */
  app.post('/api/policy/test', async (c) => {
    let body: { sql?: unknown; database?: unknown; identity?: { subject?: unknown; kind?: unknown; groups?: unknown } };
    try {
      body = await c.req.json();
    } catch {
      return problem(c, 400, 'send a JSON body: { "sql": "...", "database": "...", "identity"?: { subject, kind, groups } }');
    }
    if (typeof body.sql !== 'string' || body.sql === '') return problem(c, 400, 'sql must be a non-empty string');
    let who = c.get('identity');
    if (body.identity) {
      if (!need(c, 'admin')) return problem(c, 403, 'testing for another identity needs the admin role');
      const kind = body.identity.kind ?? 'human';
      if (kind !== 'human' && kind !== 'agent' && kind !== 'service') return problem(c, 400, 'identity.kind must be human, agent or service');
      const groups = Array.isArray(body.identity.groups) ? body.identity.groups.filter((g): g is string => typeof g === 'string') : [];
      who = { subject: String(body.identity.subject ?? 'someone'), kind, groups, method: 'key' };
    }
    const v = d.governor.check(who, typeof body.database === 'string' ? body.database : 'postgres', body.sql);
    return c.json({
      decision: v.decision.action,
      rule: v.decision.rule,
      reason: v.error?.message ?? v.decision.reason,
      statements: v.analysis?.statements.map((s) => ({ command: s.command, class: s.class, tables: s.tables, destructive: s.destructive, flags: s.flags })) ?? [],
      parse_error: v.failure?.error,
    });
  });

  // ---- approvals and just-in-time grants. Approvers (and admins) see and decide every request; members of a
  // request's approver groups (from its policy rule) see and decide that request; anyone sees their own.
  const approvals = d.approvals;
  const isApprover = (c: Context<Env>) => need(c, 'approver');
  const inApproverGroups = (c: Context<Env>, a: Approval) => a.approver_groups.some((g) => c.get('identity').groups.includes(g));
  const mayDecide = (c: Context<Env>, a: Approval) => isApprover(c) || inApproverGroups(c, a);
  const isOwn = (c: Context<Env>, a: Approval) => sharedPrincipal(c.get('identity'), a) !== undefined;
  const visible = (c: Context<Env>, a: Approval) => mayDecide(c, a) || isOwn(c, a);
  for (const path of ['/api/approvals', '/api/approvals/*', '/api/grants', '/api/grants/*', '/api/events']) {
    app.use(path, async (c, next) => (approvals ? next() : problem(c, 503, 'approvals are not enabled on this gateway')));
  }
  app.get('/api/approvals', async (c) => {
    const q = c.req.query();
    const status = q.status ? q.status.split(',') : undefined;
    if (status?.some((x) => !STATUSES.includes(x as ApprovalStatus))) return problem(c, 400, `status must be among ${STATUSES.join(', ')}`);
    if (q.kind && q.kind !== 'statement' && q.kind !== 'grant') return problem(c, 400, 'kind must be statement or grant');
    const limit = intParam(q.limit, 200, 10_000);
    if (typeof limit === 'string') return problem(c, 400, limit);
    // Without the approver role, the store is read for everything and filtered to what the caller may see.
    const list = await approvals!.list({ status: status as ApprovalStatus[] | undefined, kind: q.kind as Approval['kind'] | undefined, requester: q.requester, limit });
    return c.json({ approvals: list.filter((a) => visible(c, a)) });
  });
  app.get('/api/approvals/:id', async (c) => {
    const a = await approvals!.get(c.req.param('id'));
    if (!a || !visible(c, a)) return problem(c, 404, 'no such approval request');
    return c.json({ approval: a, url: approvals!.url(a.id) });
  });
  for (const action of ['approve', 'deny'] as const) {
    app.post(`/api/approvals/:id/${action}`, async (c) => {
      const body = await jsonBody(c);
      if (!body) return problem(c, 400, 'send a JSON body: { "reason"?: "..." }');
      const id = c.req.param('id');
      const me = c.get('identity');
      const a = await approvals!.get(id);
      if (!a || !visible(c, a)) return problem(c, 404, 'no such approval request');
      // Requesters may withdraw (deny) their own request; deciding anyone else's needs the approver role.
      if (!mayDecide(c, a) && !(isOwn(c, a) && action === 'deny')) return problem(c, 403, `the approver or admin role${a.approver_groups.length ? `, or membership in ${a.approver_groups.join(' or ')},` : ''} is required`);
      try {
        const r = await approvals!.decide(id, me, action, typeof body.reason === 'string' ? body.reason : undefined);
        return c.json({ approval: r });
      } catch (e) {
        if (e instanceof ApprovalError) return problem(c, e.status, e.message);
        throw e;
      }
    });
  }
  // Revoke an approved grant (or an unused statement approval): the rule's approvers, admins, and the grantee.
  for (const path of ['/api/approvals/:id/revoke', '/api/grants/:id/revoke']) {
    app.post(path, async (c) => {
      const body = await jsonBody(c);
      if (!body) return problem(c, 400, 'send a JSON body: { "reason"?: "..." }');
      const a = await approvals!.get(c.req.param('id') ?? '');
      if (!a || !visible(c, a)) return problem(c, 404, 'no such approval request');
      if (!mayDecide(c, a) && !isOwn(c, a)) return problem(c, 403, 'only the approver or admin role, the rule\'s approver groups, or the grantee may revoke');
      try {
        return c.json({ approval: await approvals!.revoke(a.id, c.get('identity'), typeof body.reason === 'string' ? body.reason : undefined) });
      } catch (e) {
        if (e instanceof ApprovalError) return problem(c, e.status, e.message);
        throw e;
      }
    });
  }
  app.post('/api/grants', async (c) => {
    const body = await jsonBody(c);
    if (!body) return problem(c, 400, 'send a JSON body: { "database", "role", "duration", "reason" }');
    const role = body.role;
    if (typeof role !== 'string' || !GRANT_ROLES.includes(role as never)) return problem(c, 400, `role must be one of ${GRANT_ROLES.join(', ')}`);
    if (typeof body.database !== 'string' || !body.database) return problem(c, 400, 'database must be a database name or glob');
    let seconds: number;
    try {
      seconds = parseDuration(body.duration as string | number);
    } catch (e) {
      return problem(c, 400, (e as Error).message);
    }
    try {
      const a = await approvals!.requestGrant(c.get('identity'), { database: body.database, role: role as never, duration_s: seconds, reason: typeof body.reason === 'string' ? body.reason : '' });
      return c.json({ approval: a, url: approvals!.url(a.id) }, 201);
    } catch (e) {
      if (e instanceof ApprovalError) return problem(c, e.status, e.message);
      throw e;
    }
  });
  /** Server-sent events: every change to an approval the caller may see (`event: approval`), plus keep-alives. */
  app.get('/api/events', (c) =>
    streamSSE(c, async (stream) => {
      const queue: Approval[] = [];
      let wake: (() => void) | undefined;
      const onChange = (a: Approval) => {
        if (!visible(c, a)) return;
        queue.push(a);
        wake?.();
      };
      approvals!.on('change', onChange);
      let open = true;
      stream.onAbort(() => {
        open = false;
        wake?.();
      });
      try {
        await stream.writeSSE({ event: 'hello', data: JSON.stringify({ subject: c.get('identity').subject }) });
        while (open) {
          while (queue.length) {
            const a = queue.shift()!;
            await stream.writeSSE({ event: 'approval', id: `${a.id}:${a.version}`, data: JSON.stringify(a) });
          }
          await new Promise<void>((resolve) => {
            wake = resolve;
            setTimeout(resolve, 15_000);
          });
          wake = undefined;
          if (open && !queue.length) await stream.writeSSE({ event: 'ping', data: '{}' });
        }
      } finally {
        approvals!.off('change', onChange);
      }
    }),
  );

  app.get('/api/sessions', requireRole('auditor'), async (c) => {
    return c.json({ sessions: await d.sessions.list() });
  });
  app.delete('/api/sessions/:id', requireRole('admin'), async (c) => {
    const id = c.req.param('id')!;
    const r = await d.sessions.terminate(id, c.get('identity').subject);
    if (r === 'not_found') return problem(c, 404, 'no such live session');
    return c.json({ [r]: id }, r === 'terminated' ? 200 : 202);
  });
  if (d.compliance) app.route('/', complianceApi(d.compliance));
  mountWeb(app, cfg.web, d.governor, sealer);
  return app;
}

export function startApi(cfg: ApiConfig, d: ApiDeps): Promise<{ server: ServerType; port: number }> {
  const app = buildApi(cfg, d);
  return new Promise((resolve) => {
    const server = serve({ fetch: app.fetch, hostname: cfg.listen.host, port: cfg.listen.port }, (info) => resolve({ server, port: info.port }));
  });
}

const OPENAPI = {
  openapi: '3.1.0',
  info: { title: 'Sluice API', version: '0.1.0', description: 'Authenticate with Authorization: Bearer <OIDC token or Sluice key>; roles come from groups (config api.roles).' },
  components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
  security: [{ bearer: [] }],
  paths: {
    '/healthz': { get: { summary: 'Liveness and audit health', security: [], responses: { '200': { description: 'ok' }, '503': { description: 'statements are being refused: the audit spool is past its bound or cannot be written' } } } },
    '/metrics': { get: { summary: 'Prometheus metrics', security: [], responses: { '200': { description: 'text exposition format' } } } },
    '/api/me': { get: { summary: 'The caller identity and roles', responses: { '200': { description: 'identity' } } } },
    '/api/audit': {
      get: {
        summary: 'Audit events, newest first (auditor)',
        parameters: ['subject', 'kind', 'type', 'decision', 'database', 'table', 'session', 'since', 'until', 'limit'].map((name) => ({ name, in: 'query', schema: { type: 'string' } })),
        responses: { '200': { description: '{ events: [...] }' }, '403': { description: 'not an auditor' } },
      },
    },
    '/api/audit/verify': { get: { summary: 'Recompute every hash chain (auditor)', responses: { '200': { description: '{ ok, chains }' } } } },
    '/api/sensitive': { get: { summary: 'What sensitive data a subject saw (own report, or any subject for auditors)', parameters: [{ name: 'subject', in: 'query', schema: { type: 'string' } }, { name: 'since', in: 'query', schema: { type: 'string' } }, { name: 'until', in: 'query', schema: { type: 'string' } }], responses: { '200': { description: 'report' } } } },
    '/api/audit/export': { get: { summary: 'Audit events as JSONL or CSV (auditor); same filters as /api/audit, plus format=jsonl|csv', responses: { '200': { description: 'file' } } } },
    '/api/policy': { get: { summary: 'The loaded policy', responses: { '200': { description: 'policy' } } } },
    '/api/policy/test': { post: { summary: 'Would this be allowed? { sql, database, identity? } (another identity needs admin)', responses: { '200': { description: '{ decision, rule, reason, statements }' } } } },
    '/api/approvals': { get: { summary: 'Approval requests (held statements and grant requests), newest first: all for approvers, your own otherwise', parameters: ['status', 'kind', 'requester', 'limit'].map((name) => ({ name, in: 'query', schema: { type: 'string' } })), responses: { '200': { description: '{ approvals }' } } } },
    '/api/approvals/{id}': { get: { summary: 'One request with its preview and votes', parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }], responses: { '200': { description: '{ approval, url }' }, '404': { description: 'not found or not yours' } } } },
    '/api/approvals/{id}/approve': { post: { summary: 'Approve { reason? } (approver; never your own request)', parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }], responses: { '200': { description: '{ approval }' }, '403': { description: 'not an approver, not in the approver groups, or your own request' }, '409': { description: 'already decided, expired, or you already voted' } } } },
    '/api/approvals/{id}/deny': { post: { summary: 'Deny { reason? } (approver; requesters may withdraw their own)', parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }], responses: { '200': { description: '{ approval }' } } } },
    '/api/approvals/{id}/revoke': { post: { summary: 'Revoke an approved grant or unused statement approval { reason? } (approver, the rule\'s approver groups, or the grantee); every gateway stops honouring it by its next statement. Also at /api/grants/{id}/revoke', parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }], responses: { '200': { description: '{ approval }' }, '403': { description: 'not allowed to revoke it' }, '409': { description: 'not approved (pending, denied, expired, used or already revoked) or already ended' } } } },
    '/api/grants': { post: { summary: 'Request a just-in-time grant { database, role: read|write|ddl|admin, duration: "1h", reason }', responses: { '201': { description: '{ approval, url }' } } } },
    '/api/events': { get: { summary: 'Server-sent events: approval changes you may see (event: approval)', responses: { '200': { description: 'text/event-stream' } } } },
    '/auth/login': { get: { summary: 'Console sign-in: redirect to the OIDC issuer (authorization code + PKCE); ?return=/path', security: [], responses: { '302': { description: 'to the issuer' } } } },
    '/auth/callback': { get: { summary: 'OIDC redirect target: exchanges the code, verifies the ID token, sets the session cookie', security: [], responses: { '302': { description: 'back to the console' } } } },
    '/auth/token': { post: { summary: 'Console sign-in with a token or key { token }: sets the session cookie', security: [], responses: { '200': { description: '{ identity, csrf }' }, '401': { description: 'refused, with the reason' } } } },
    '/auth/logout': { post: { summary: 'End the console session', security: [], responses: { '200': { description: 'ok' } } } },
    '/mcp': { post: { summary: 'Model Context Protocol (streamable HTTP, stateless, JSON responses): tools list_databases, describe_schema, query, wait_for_approval, explain, acting as the bearer', responses: { '200': { description: 'JSON-RPC response' }, '401': { description: 'no or bad token' } } } },
    '/api/sessions': { get: { summary: 'Live sessions of every gateway sharing the store (auditor)', responses: { '200': { description: '{ sessions }' } } } },
    '/api/sessions/{id}': { delete: { summary: 'Terminate a live session (admin)', parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }], responses: { '200': { description: 'terminated (it ran in this process)' }, '202': { description: 'requested: the gateway that holds it ends it within seconds' }, '404': { description: 'no such session' } } } },
  },
};
