import type { Kysely } from 'kysely';
import type { Database } from './schema.js';

/** A live session as the API shows it (from any gateway process sharing the store). */
export interface SessionView {
  id: string;
  gateway: string;
  subject?: string;
  kind?: string;
  acting_for?: string;
  database?: string;
  client_addr: string;
  application_name?: string;
  started_at: string;
  tls: boolean;
  statements: number;
  transaction: string;
  current_sql?: string;
  awaiting_approval?: string;
  engine?: 'postgres' | 'mysql';
}

export interface LiveSessionStore {
  /** Replace this gateway's published sessions; answers the termination requests waiting for it. */
  publish(gateway: string, sessions: SessionView[]): Promise<{ id: string; by: string }[]>;
  /** Sessions whose gateway published within `freshS` seconds. */
  list(freshS: number): Promise<SessionView[]>;
  requestTerminate(id: string, by: string): Promise<boolean>;
}

export function kyselyLiveSessions(db: Kysely<Database>): LiveSessionStore {
  return {
    async publish(gateway, sessions) {
      const now = new Date();
      return db.transaction().execute(async (tx) => {
        const asked = await tx.selectFrom('live_sessions').select(['id', 'terminate_by']).where('gateway', '=', gateway).where('terminate_by', 'is not', null).execute();
        const ids = sessions.map((s) => s.id);
        let del = tx.deleteFrom('live_sessions').where('gateway', '=', gateway);
        if (ids.length) del = del.where('id', 'not in', ids);
        await del.execute();
        for (let i = 0; i < sessions.length; i += 500) {
          const chunk = sessions.slice(i, i + 500).map((s) => ({ id: s.id, gateway, updated_at: now, terminate_by: null, info: JSON.stringify(s) }));
          await tx
            .insertInto('live_sessions')
            .values(chunk)
            .onConflict((oc) => oc.column('id').doUpdateSet((eb) => ({ updated_at: eb.ref('excluded.updated_at'), info: eb.ref('excluded.info') })))
            .execute();
        }
        return asked.map((r) => ({ id: r.id, by: r.terminate_by! }));
      });
    },
    async list(freshS) {
      const rows = await db.selectFrom('live_sessions').select('info').where('updated_at', '>=', new Date(Date.now() - freshS * 1000)).execute();
      return rows.map((r) => JSON.parse(r.info) as SessionView);
    },
    async requestTerminate(id, by) {
      const r = await db.updateTable('live_sessions').set({ terminate_by: by }).where('id', '=', id).executeTakeFirst();
      return Number(r.numUpdatedRows) === 1;
    },
  };
}
