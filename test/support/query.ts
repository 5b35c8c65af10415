import pg from 'pg';
import type { TestGateway } from './env.js';

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
