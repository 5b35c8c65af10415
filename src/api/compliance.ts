import { Hono, type Context } from 'hono';
import type { Identity } from '../identity/identity.js';
import type { Compliance } from '../compliance/service.js';
import { buildPack } from '../compliance/pack.js';
import { closeReview, decide, getReview, listReviews, ReviewError, startReview } from '../compliance/review.js';
import { policyVersionsDuring } from '../compliance/policyversions.js';

type Env = { Variables: { identity: Identity; roles: Set<string>; csrf?: string } };

const problem = (c: Context, status: 400 | 403 | 404 | 409, message: string) => c.json({ error: message }, status);

/**
 * A period bound: an ISO time, or a date (`2026-12-31`), which as `to` means the end of that day (UTC).
 * Returns the 400 message when it is neither.
 */
export function periodBound(v: string | undefined, end: boolean): Date | string {
  if (!v) return `${end ? 'to' : 'from'} is required (an ISO date or time)`;
  const d = /^\d{4}-\d{2}-\d{2}$/.test(v) ? new Date(`${v}T${end ? '23:59:59.999' : '00:00:00.000'}Z`) : new Date(v);
  return Number.isNaN(d.getTime()) ? `${end ? 'to' : 'from'} must be an ISO 8601 date or time` : d;
}

async function body(c: Context): Promise<Record<string, unknown>> {
  const b = await c.req.json().catch(() => ({}));
  return b && typeof b === 'object' && !Array.isArray(b) ? (b as Record<string, unknown>) : {};
}

/**
 * /api/compliance/*: evidence packs and compliance status (auditors), access reviews (auditors see them, admins
 * decide). Mounted by buildApi after its authentication middleware, so identity and roles are set.
 */
export function complianceApi(x: Compliance): Hono<Env> {
  const app = new Hono<Env>();
  const has = (c: Context<Env>, role: string) => c.get('roles').has(role) || c.get('roles').has('admin');
  app.use('/api/compliance/*', async (c, next) => (has(c, 'auditor') ? next() : problem(c, 403, 'the auditor or admin role is required')));

  app.get('/api/compliance/status', async (c) => c.json(await x.status()));
  app.get('/api/compliance/evidence', async (c) => {
    const from = periodBound(c.req.query('from'), false);
    const to = periodBound(c.req.query('to'), true);
    if (typeof from === 'string') return problem(c, 400, from);
    if (typeof to === 'string') return problem(c, 400, to);
    if (!(from < to)) return problem(c, 400, 'the period must end after it starts');
    const { zip } = buildPack(await x.evidenceInputs(from, to));
    const name = `sluice-evidence-${from.toISOString().slice(0, 10)}-${to.toISOString().slice(0, 10)}.zip`;
    return c.body(zip as unknown as ArrayBuffer, 200, { 'content-type': 'application/zip', 'content-disposition': `attachment; filename="${name}"` });
  });
  app.get('/api/compliance/policy-versions', async (c) => c.json({ versions: await policyVersionsDuring(x.db, new Date(0), new Date()) }));

  app.get('/api/compliance/reviews', async (c) => c.json({ reviews: await listReviews(x.db) }));
  app.get('/api/compliance/reviews/:id', async (c) => {
    const r = await getReview(x.db, c.req.param('id'));
    return r ? c.json({ review: r }) : problem(c, 404, 'no such access review');
  });
  const adminOnly = (c: Context<Env>) => (c.get('roles').has('admin') ? undefined : problem(c, 403, 'the admin role is required to run access reviews'));
  const reviewError = (c: Context<Env>, e: unknown) => {
    if (e instanceof ReviewError) return problem(c, e.status, e.message);
    throw e;
  };
  app.post('/api/compliance/reviews', async (c) => adminOnly(c) ?? c.json({ review: await startReview(x.db, c.get('identity'), x.record) }, 201));
  app.post('/api/compliance/reviews/:id/items/:item', async (c) => {
    const denied = adminOnly(c);
    if (denied) return denied;
    const b = await body(c);
    try {
      return c.json({ review: await decide(x.db, c.req.param('id'), c.req.param('item'), String(b.decision ?? ''), c.get('identity'), typeof b.reason === 'string' ? b.reason : undefined, x.record) });
    } catch (e) {
      return reviewError(c, e);
    }
  });
  app.post('/api/compliance/reviews/:id/close', async (c) => {
    const denied = adminOnly(c);
    if (denied) return denied;
    try {
      return c.json({ review: await closeReview(x.db, c.req.param('id'), c.get('identity'), x.record) });
    } catch (e) {
      return reviewError(c, e);
    }
  });
  // Prometheus lines of the audit streams (backlog and health per sink), unauthenticated like /metrics.
  app.get('/metrics/compliance', (c) => c.text(x.metrics(), 200, { 'content-type': 'text/plain; version=0.0.4' }));
  return app;
}
