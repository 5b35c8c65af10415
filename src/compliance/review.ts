import crypto from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import type { Database } from '../store/schema.js';
import type { AuditEvent } from '../audit/audit.js';
import type { Identity } from '../identity/identity.js';
import { listKeys, revokeKey } from '../identity/keys.js';

/** One line of an access review: a key, or an identity seen signing in without one (OIDC). */
export interface ReviewItem {
  id: string;
  kind: 'key' | 'identity';
  subject: string;
  identity_kind: string;
  groups: string[];
  key_id?: string;
  key_name?: string;
  acting_for?: string | null;
  created_at?: string;
  expires_at?: string | null;
  /** Last time it was used (key: last login with it; identity: last audited activity). */
  last_used_at?: string | null;
  /** Not used for `unused_days` (or never). */
  unused: boolean;
}

export interface ReviewDecision {
  item_id: string;
  decision: 'confirm' | 'revoke';
  reviewer: string;
  reason?: string;
  decided_at: string;
}

export interface AccessReview {
  id: string;
  created_at: string;
  created_by: string;
  status: 'open' | 'closed';
  closed_at?: string;
  items: ReviewItem[];
  decisions: ReviewDecision[];
}

export class ReviewError extends Error {
  constructor(
    message: string,
    readonly status: 400 | 403 | 404 | 409,
  ) {
    super(message);
  }
}

/** How far back identities without keys are looked for, and what counts as unused. */
export const REVIEW_LOOKBACK_DAYS = 90;

async function identitiesSeen(db: Kysely<Database>, since: Date): Promise<ReviewItem[]> {
  const r = await sql<{ subject: string; identity_kind: string | null; ts: Date; payload: string }>`
    SELECT DISTINCT ON (subject) subject, identity_kind, ts, payload FROM audit_events
    WHERE type IN ('session_start', 'statement', 'tool_call', 'console_login') AND subject IS NOT NULL AND ts >= ${since}
    ORDER BY subject, ts DESC`.execute(db);
  const out: ReviewItem[] = [];
  for (const row of r.rows) {
    const e = JSON.parse(row.payload) as AuditEvent;
    if (e.auth_method === 'key' || e.key_id) continue; // reviewed as a key
    out.push({ id: `identity:${row.subject}`, kind: 'identity', subject: row.subject, identity_kind: row.identity_kind ?? 'human', groups: e.groups ?? [], last_used_at: new Date(row.ts).toISOString(), unused: false });
  }
  return out;
}

/** Who has access now: every active key and every identity that used the gateway within the lookback. */
export async function accessSnapshot(db: Kysely<Database>, now = new Date()): Promise<ReviewItem[]> {
  const cutoff = new Date(now.getTime() - REVIEW_LOOKBACK_DAYS * 86400_000);
  const keys = (await listKeys(db)).filter((k) => !k.revoked_at && !(k.expires_at && new Date(k.expires_at) <= now));
  const items: ReviewItem[] = keys.map((k) => ({
    id: `key:${k.id}`,
    kind: 'key',
    subject: k.subject,
    identity_kind: k.kind,
    groups: k.groups,
    key_id: k.id,
    key_name: k.name,
    acting_for: k.acting_for,
    created_at: k.created_at,
    expires_at: k.expires_at,
    last_used_at: k.last_used_at,
    unused: !k.last_used_at || new Date(k.last_used_at) < cutoff,
  }));
  return [...items, ...(await identitiesSeen(db, cutoff))];
}

type ReviewRow = { id: string; created_at: Date; created_by: string; status: string; closed_at: Date | null; items: string };

async function withDecisions(db: Kysely<Database>, rows: ReviewRow[]): Promise<AccessReview[]> {
  if (!rows.length) return [];
  const ds = await db.selectFrom('access_review_decisions').selectAll().where('review_id', 'in', rows.map((r) => r.id)).orderBy('decided_at').execute();
  return rows.map((r) => ({
    id: r.id,
    created_at: new Date(r.created_at).toISOString(),
    created_by: r.created_by,
    status: r.status as AccessReview['status'],
    ...(r.closed_at ? { closed_at: new Date(r.closed_at).toISOString() } : {}),
    items: JSON.parse(r.items) as ReviewItem[],
    decisions: ds.filter((d) => d.review_id === r.id).map((d) => ({ item_id: d.item_id, decision: d.decision as ReviewDecision['decision'], reviewer: d.reviewer, ...(d.reason ? { reason: d.reason } : {}), decided_at: new Date(d.decided_at).toISOString() })),
  }));
}

export async function getReview(db: Kysely<Database>, id: string): Promise<AccessReview | undefined> {
  const rows = await db.selectFrom('access_reviews').selectAll().where('id', '=', id).execute();
  return (await withDecisions(db, rows))[0];
}

export async function listReviews(db: Kysely<Database>, limit = 50): Promise<AccessReview[]> {
  return withDecisions(db, await db.selectFrom('access_reviews').selectAll().orderBy('created_at', 'desc').limit(limit).execute());
}

/** Reviews open at any time during [from, to]. */
export async function reviewsDuring(db: Kysely<Database>, from: Date, to: Date): Promise<AccessReview[]> {
  const rows = await db.selectFrom('access_reviews').selectAll().where('created_at', '<=', to).where((eb) => eb.or([eb('closed_at', 'is', null), eb('closed_at', '>=', from)])).orderBy('created_at').execute();
  return withDecisions(db, rows);
}

export type Audit = (e: AuditEvent) => void;

const who = (id: Identity): Partial<AuditEvent> => ({ subject: id.subject, identity_kind: id.kind, acting_for: id.actingFor });

export async function startReview(db: Kysely<Database>, by: Identity, audit: Audit): Promise<AccessReview> {
  const items = await accessSnapshot(db);
  const id = `rev_${crypto.randomBytes(6).toString('hex')}`;
  const now = new Date();
  await db.insertInto('access_reviews').values({ id, created_at: now, created_by: by.subject, status: 'open', closed_at: null, items: JSON.stringify(items) }).execute();
  audit({ type: 'access_review', ...who(by), details: { event: 'started', review_id: id, items: items.length, unused: items.filter((i) => i.unused).length } });
  return (await getReview(db, id))!;
}

/**
 * A reviewer's decision on one item. Revoking a key revokes it in the store (every gateway refuses it from its
 * next login); revoking an identity without keys revokes any key issued to that subject and records that its
 * access must be removed at the identity provider (Sluice does not own those groups).
 */
export async function decide(db: Kysely<Database>, reviewId: string, itemId: string, decision: string, reviewer: Identity, reason: string | undefined, audit: Audit): Promise<AccessReview> {
  if (decision !== 'confirm' && decision !== 'revoke') throw new ReviewError('decision must be confirm or revoke', 400);
  const review = await getReview(db, reviewId);
  if (!review) throw new ReviewError('no such access review', 404);
  if (review.status !== 'open') throw new ReviewError('this review is closed', 409);
  const item = review.items.find((i) => i.id === itemId);
  if (!item) throw new ReviewError('no such item in this review', 404);
  // Separation of duties: nobody confirms (or revokes) their own access, or that of an agent acting for them.
  if (item.subject === reviewer.subject || item.acting_for === reviewer.subject) throw new ReviewError('you cannot review your own access: another reviewer decides this item', 403);
  if (review.decisions.some((d) => d.item_id === itemId)) throw new ReviewError('this item was already decided', 409);
  const inserted = await db
    .insertInto('access_review_decisions')
    .values({ review_id: reviewId, item_id: itemId, decision, reviewer: reviewer.subject, reason: reason || null, decided_at: new Date() })
    .onConflict((oc) => oc.columns(['review_id', 'item_id']).doNothing())
    .executeTakeFirst();
  if (Number(inserted.numInsertedOrUpdatedRows ?? 0) === 0) throw new ReviewError('this item was already decided', 409);
  const revoked: string[] = [];
  if (decision === 'revoke') {
    const keyIds = item.key_id ? [item.key_id] : (await listKeys(db)).filter((k) => k.subject === item.subject && !k.revoked_at).map((k) => k.id);
    for (const k of keyIds) {
      if (await revokeKey(db, k)) {
        revoked.push(k);
        audit({ type: 'key_revoked', ...who(reviewer), reason: reason || 'access review', details: { key_id: k, review_id: reviewId } });
      }
    }
  }
  audit({
    type: 'access_review',
    ...who(reviewer),
    decision: decision === 'confirm' ? 'allow' : 'deny',
    reason: reason || undefined,
    details: { event: 'decision', review_id: reviewId, item_id: itemId, item_subject: item.subject, key_id: item.key_id, decision, revoked_keys: revoked, ...(item.kind === 'identity' && decision === 'revoke' ? { action_needed: 'remove this identity from its groups at the identity provider' } : {}) },
  });
  return (await getReview(db, reviewId))!;
}

export async function closeReview(db: Kysely<Database>, reviewId: string, by: Identity, audit: Audit): Promise<AccessReview> {
  const r = await db.updateTable('access_reviews').set({ status: 'closed', closed_at: new Date() }).where('id', '=', reviewId).where('status', '=', 'open').executeTakeFirst();
  if (Number(r.numUpdatedRows) === 0) throw new ReviewError((await getReview(db, reviewId)) ? 'this review is already closed' : 'no such access review', (await getReview(db, reviewId)) ? 409 : 404);
  const review = (await getReview(db, reviewId))!;
  audit({ type: 'access_review', ...who(by), details: { event: 'closed', review_id: reviewId, items: review.items.length, decided: review.decisions.length, revoked: review.decisions.filter((d) => d.decision === 'revoke').length } });
  return review;
}
