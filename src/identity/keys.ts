import crypto from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';
import { AuthError, type Identity, type IdentityKind } from './identity.js';

/** Gateway-issued keys look like `slk_<id>_<secret>`; only sha256(secret) is stored. */
const KEY_RE = /^slk_([a-f0-9]{16})_([A-Za-z0-9_-]{43})$/;
export const looksLikeKey = (s: string): boolean => s.startsWith('slk_');

const hashSecret = (secret: string) => crypto.createHash('sha256').update(secret).digest('hex');

export interface NewKey {
  name: string;
  kind: IdentityKind;
  subject?: string;
  groups?: string[];
  actingFor?: string;
  expiresAt?: Date;
  createdBy?: string;
}
export interface KeyInfo {
  id: string;
  name: string;
  kind: string;
  subject: string;
  groups: string[];
  acting_for: string | null;
  created_at: string;
  created_by: string | null;
  expires_at: string | null;
  revoked_at: string | null;
  last_used_at: string | null;
}

export async function createKey(db: Kysely<Database>, k: NewKey): Promise<{ key: string; info: KeyInfo }> {
  const id = crypto.randomBytes(8).toString('hex');
  const secret = crypto.randomBytes(32).toString('base64url');
  const subject = k.subject ?? `${k.kind}:${k.name}`;
  await db
    .insertInto('api_keys')
    .values({ id, name: k.name, kind: k.kind, subject, groups: JSON.stringify(k.groups ?? []), acting_for: k.actingFor ?? null, secret_hash: hashSecret(secret), created_at: new Date(), created_by: k.createdBy ?? null, expires_at: k.expiresAt ?? null, revoked_at: null, last_used_at: null })
    .execute();
  const info = (await listKeys(db)).find((x) => x.id === id)!;
  return { key: `slk_${id}_${secret}`, info };
}

const iso = (d: Date | string | null) => (d ? new Date(d).toISOString() : null);

export async function listKeys(db: Kysely<Database>): Promise<KeyInfo[]> {
  const rows = await db.selectFrom('api_keys').selectAll().orderBy('created_at').execute();
  return rows.map((r) => ({
    id: r.id,
    name: r.name,
    kind: r.kind,
    subject: r.subject,
    groups: JSON.parse(r.groups) as string[],
    acting_for: r.acting_for,
    created_at: iso(r.created_at)!,
    created_by: r.created_by,
    expires_at: iso(r.expires_at),
    revoked_at: iso(r.revoked_at),
    last_used_at: iso(r.last_used_at),
  }));
}

export async function revokeKey(db: Kysely<Database>, id: string): Promise<boolean> {
  const r = await db.updateTable('api_keys').set({ revoked_at: new Date() }).where('id', '=', id).where('revoked_at', 'is', null).executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

/**
 * The principals a key acts for, transitively: its acting_for, and where that is itself the subject of a key that
 * acts for someone, that one's acting_for, and so on (an agent's key acting for another agent acting for a person).
 */
async function delegationOf(db: Kysely<Database>, first: string): Promise<string[]> {
  const chain = [first];
  for (let i = 0; i < chain.length && chain.length < 16; i++) {
    const rows = await db.selectFrom('api_keys').select('acting_for').where('subject', '=', chain[i]!).where('acting_for', 'is not', null).where('revoked_at', 'is', null).execute();
    for (const r of rows) if (!chain.includes(r.acting_for!)) chain.push(r.acting_for!);
  }
  return chain;
}

/** Verify a presented key. Errors say what is wrong without revealing whether a key id exists. */
/** When this process last recorded each key's use (see verifyKey). */
const lastUsedWritten = new Map<string, number>();
const LAST_USED_EVERY_MS = 60_000;

export async function verifyKey(db: Kysely<Database>, presented: string): Promise<Identity> {
  const m = KEY_RE.exec(presented);
  if (!m) throw new AuthError('malformed Sluice key');
  const [, id, secret] = m;
  const row = await db.selectFrom('api_keys').selectAll().where('id', '=', id!).executeTakeFirst();
  const expected = Buffer.from(row?.secret_hash ?? '0'.repeat(64), 'hex');
  const actual = Buffer.from(hashSecret(secret!), 'hex');
  if (!row || !crypto.timingSafeEqual(expected, actual)) throw new AuthError('unknown or invalid Sluice key');
  if (row.revoked_at) throw new AuthError(`Sluice key ${id} was revoked at ${iso(row.revoked_at)}`);
  if (row.expires_at && new Date(row.expires_at).getTime() <= Date.now()) throw new AuthError(`Sluice key ${id} expired at ${iso(row.expires_at)}`);
  // Best effort: a failed "last used" update must not fail the login. Written at most once a minute per key, so
  // connection churn does not turn every login into a store write.
  const now = Date.now();
  if ((lastUsedWritten.get(id!) ?? 0) < now - LAST_USED_EVERY_MS) {
    lastUsedWritten.set(id!, now);
    if (lastUsedWritten.size > 100_000) lastUsedWritten.clear();
    db.updateTable('api_keys').set({ last_used_at: new Date(now) }).where('id', '=', id!).execute().catch(() => lastUsedWritten.delete(id!));
  }
  return {
    subject: row.subject,
    kind: row.kind as IdentityKind,
    groups: JSON.parse(row.groups),
    actingFor: row.acting_for ?? undefined,
    delegation: row.acting_for ? await delegationOf(db, row.acting_for) : undefined,
    method: 'key',
    keyId: row.id,
    displayName: row.name,
    expiresAt: row.expires_at ? Math.floor(new Date(row.expires_at).getTime() / 1000) : undefined,
  };
}
