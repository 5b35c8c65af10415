import { sql, type Kysely } from 'kysely';
import type { Database } from '../store/schema.js';
import type { Approval } from '../approvals/store.js';
import { listKeys, type KeyInfo } from '../identity/keys.js';
import { chainsSignedBetween, checkpointsOf, type Checkpoint } from './checkpoints.js';
import { policyVersionsDuring, type PolicyVersion } from './policyversions.js';
import { reviewsDuring, type AccessReview } from './review.js';

/** An audit row exactly as stored: the payload string is what the chain hashed. */
export interface RawEvent {
  chain_id: string;
  seq: number;
  ts: string;
  payload: string;
  prev_hash: string;
  hash: string;
}

/** Everything an evidence pack is computed from; the pack carries it, so `evidence verify` recomputes the report. */
export interface EvidenceInputs {
  period: { from: string; to: string };
  generated_at: string;
  generator: string;
  /** Per chain: the events of the period, plus the context that ties them to signed checkpoints. */
  events: RawEvent[];
  checkpoints: Checkpoint[];
  keys: KeyInfo[];
  approvals: Approval[];
  policy_versions: PolicyVersion[];
  reviews: AccessReview[];
  /** "subject column" pairs of sensitive reads before the period (so first accesses in it can be told). */
  prior_sensitive: string[];
}

const PAGE = 5000;
/** Most events one pack holds (a quarter of a busy gateway is more: export shorter periods). */
export const MAX_PACK_EVENTS = 2_000_000;
/** How far back "first access to a sensitive column" looks. */
const PRIOR_LOOKBACK_DAYS = 365;

const raw = (r: { chain_id: string; seq: string | number; ts: Date; payload: string; prev_hash: string; hash: string }): RawEvent => ({
  chain_id: r.chain_id,
  seq: Number(r.seq),
  ts: new Date(r.ts).toISOString(),
  payload: r.payload,
  prev_hash: r.prev_hash,
  hash: r.hash,
});

async function eventsOfChain(db: Kysely<Database>, chain: string, first: number, last: number, out: RawEvent[]): Promise<void> {
  for (let after = first - 1; after < last; ) {
    const rows = await db.selectFrom('audit_events').select(['chain_id', 'seq', 'ts', 'payload', 'prev_hash', 'hash']).where('chain_id', '=', chain).where('seq', '>', after).where('seq', '<=', last).orderBy('seq').limit(PAGE).execute();
    if (!rows.length) return;
    for (const r of rows) out.push(raw(r));
    after = Number(rows[rows.length - 1]!.seq);
    if (out.length > MAX_PACK_EVENTS) throw new Error(`more than ${MAX_PACK_EVENTS} audit events in this period: export a shorter one`);
  }
}

/**
 * The range of a chain a pack holds: from just after the last checkpoint before the period's first event (or the
 * chain's start) to the first checkpoint at or after its last event (or that event, when none signs it yet).
 */
function chainRange(first: number | undefined, last: number | undefined, cps: Checkpoint[], from: Date, to: Date): [number, number] | undefined {
  const inPeriod = cps.filter((c) => new Date(c.signed_at) >= from && new Date(c.signed_at) <= to);
  const lo = first ?? Math.min(...inPeriod.map((c) => c.seq));
  const hi = last ?? Math.max(...inPeriod.map((c) => c.seq));
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return undefined;
  const anchor = [...cps].reverse().find((c) => c.seq < lo);
  const end = cps.find((c) => c.seq >= hi);
  return [anchor ? anchor.seq + 1 : 1, end ? end.seq : hi];
}

async function collectEvents(db: Kysely<Database>, from: Date, to: Date): Promise<{ events: RawEvent[]; checkpoints: Checkpoint[] }> {
  const spans = await db.selectFrom('audit_events').select(['chain_id', sql<string>`min(seq)`.as('first'), sql<string>`max(seq)`.as('last')]).where('ts', '>=', from).where('ts', '<=', to).groupBy('chain_id').execute();
  const span = new Map(spans.map((s) => [s.chain_id, [Number(s.first), Number(s.last)] as const]));
  const chains = [...new Set([...span.keys(), ...(await chainsSignedBetween(db, from, to))])].sort();
  const all = await checkpointsOf(db, chains);
  const events: RawEvent[] = [];
  const checkpoints: Checkpoint[] = [];
  for (const chain of chains) {
    const cps = all.filter((c) => c.chain_id === chain);
    const s = span.get(chain);
    const range = chainRange(s?.[0], s?.[1], cps, from, to);
    if (!range) continue;
    await eventsOfChain(db, chain, range[0], range[1], events);
    // The anchor, every checkpoint inside the range, and later ones signed within the period (verify checks those
    // events are here: they were signed before the period ended).
    checkpoints.push(...cps.filter((c) => c.seq >= range[0] - 1 && (c.seq <= range[1] || new Date(c.signed_at) <= to)));
  }
  return { events, checkpoints };
}

async function priorSensitive(db: Kysely<Database>, from: Date): Promise<string[]> {
  const since = new Date(from.getTime() - PRIOR_LOOKBACK_DAYS * 86400_000);
  const pairs = new Set<string>();
  for (let after: { ts: Date; seq: number; chain: string } | undefined; ; ) {
    let q = db.selectFrom('audit_events').select(['chain_id', 'seq', 'ts', 'payload']).where('type', '=', 'statement').where('decision', '=', 'allow').where('ts', '>=', since).where('ts', '<', from);
    if (after) q = q.where((eb) => eb.or([eb('ts', '>', after!.ts), eb.and([eb('ts', '=', after!.ts), eb('chain_id', '>', after!.chain)]), eb.and([eb('ts', '=', after!.ts), eb('chain_id', '=', after!.chain), eb('seq', '>', after!.seq)])]));
    const rows = await q.orderBy('ts').orderBy('chain_id').orderBy('seq').limit(PAGE).execute();
    for (const r of rows) for (const p of sensitivePairs(JSON.parse(r.payload))) pairs.add(p);
    if (rows.length < PAGE) break;
    const l = rows[rows.length - 1]!;
    after = { ts: l.ts, seq: Number(l.seq), chain: l.chain_id };
  }
  return [...pairs].sort();
}

/** "subject column" for each column a statement read that was masked for the identity or that it saw exempt. */
export function sensitivePairs(e: { subject?: string; columns?: string[]; masked?: Record<string, number>; masking_exempt?: boolean; rows?: number }): string[] {
  if (!e.subject || !e.columns?.length) return [];
  const masked = e.masked && Object.keys(e.masked).length > 0;
  if (!masked && !e.masking_exempt) return [];
  return e.columns.map((c) => `${e.subject} ${c}`);
}

async function approvalsDuring(db: Kysely<Database>, from: Date, to: Date): Promise<Approval[]> {
  const rows = await db.selectFrom('approvals').select('payload').where('created_at', '<=', to).where('updated_at', '>=', from).orderBy('created_at').limit(100_000).execute();
  return rows.map((r) => JSON.parse(r.payload) as Approval);
}

/** Read what a pack for [from, to] needs from the store. */
export async function collectEvidence(db: Kysely<Database>, from: Date, to: Date, generator: string): Promise<EvidenceInputs> {
  if (!(from < to)) throw new Error('the period must end after it starts');
  const { events, checkpoints } = await collectEvents(db, from, to);
  return {
    period: { from: from.toISOString(), to: to.toISOString() },
    generated_at: new Date().toISOString(),
    generator,
    events,
    checkpoints,
    keys: await listKeys(db),
    approvals: await approvalsDuring(db, from, to),
    policy_versions: await policyVersionsDuring(db, from, to),
    reviews: await reviewsDuring(db, from, to),
    prior_sensitive: await priorSensitive(db, from),
  };
}
