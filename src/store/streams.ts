import { sql, type Kysely } from 'kysely';
import type { Database } from './schema.js';

/** Delivery state of audit streams (see audit/streams/streamer.ts): per sink, the last event of each chain delivered. */
export interface StreamStore {
  /** Take or renew the sink's lease; false while another gateway holds it. */
  claim(sink: string, owner: string, ttlMs: number): Promise<boolean>;
  heads(): Promise<Map<string, number>>;
  delivered(sink: string): Promise<Map<string, number>>;
  /** Rows of a chain after seq, in order. */
  eventsAfter(chain: string, seq: number, limit: number): Promise<{ seq: number; hash: string; payload: string }[]>;
  advance(sink: string, chain: string, seq: number): Promise<void>;
}

export function kyselyStreamStore(db: Kysely<Database>): StreamStore {
  return {
    async claim(sink, owner, ttlMs) {
      const until = new Date(Date.now() + ttlMs);
      const r = await sql<{ owner: string }>`INSERT INTO stream_leases (sink, owner, lease_until) VALUES (${sink}, ${owner}, ${until})
        ON CONFLICT (sink) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until
        WHERE stream_leases.owner = excluded.owner OR stream_leases.lease_until < now() RETURNING owner`.execute(db);
      return r.rows.length === 1;
    },
    async heads() {
      const rows = await db.selectFrom('audit_heads').select(['chain_id', 'seq']).execute();
      return new Map(rows.map((r) => [r.chain_id, Number(r.seq)]));
    },
    async delivered(sink) {
      const rows = await db.selectFrom('stream_checkpoints').select(['chain_id', 'seq']).where('sink', '=', sink).execute();
      return new Map(rows.map((r) => [r.chain_id, Number(r.seq)]));
    },
    async eventsAfter(chain, seq, limit) {
      const rows = await db.selectFrom('audit_events').select(['seq', 'hash', 'payload']).where('chain_id', '=', chain).where('seq', '>', seq).orderBy('seq').limit(limit).execute();
      return rows.map((r) => ({ seq: Number(r.seq), hash: r.hash, payload: r.payload }));
    },
    async advance(sink, chain, seq) {
      await sql`INSERT INTO stream_checkpoints (sink, chain_id, seq, updated_at) VALUES (${sink}, ${chain}, ${seq}, now())
        ON CONFLICT (sink, chain_id) DO UPDATE SET seq = GREATEST(stream_checkpoints.seq, excluded.seq), updated_at = excluded.updated_at`.execute(db);
    },
  };
}
