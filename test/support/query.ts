import pg from 'pg';
import type { TestGateway } from './env.js';
import type { IdentityKind } from '../../src/identity/identity.js';

/** Run one statement through the gateway on its own connection, logged in with `password` (a key or token). */
export async function queryAs(t: TestGateway, password: string, database: string, sql: string): Promise<pg.QueryResult> {
  const c = new pg.Client(t.conn(password, database));
  await c.connect();
  try {
    return await c.query(sql);
  } finally {
    await c.end();
  }
}

/** A connection through the gateway, logged in with a new key of this kind and groups. */
export async function connectAs(t: TestGateway, kind: IdentityKind, groups: string[], database: string): Promise<pg.Client> {
  const c = new pg.Client(t.conn(await t.key(kind, groups), database));
  await c.connect();
  return c;
}
