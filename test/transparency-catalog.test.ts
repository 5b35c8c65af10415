/**
 * The gateway's own connections (its pool, its catalog reads) must not change what a client sees: DROP DATABASE and
 * its kin are not blocked by them, the first login does not wait for the database's catalog (the first statement
 * does, so none is judged without it), the catalog read after DDL is over before the session's next statement
 * runs, and a database recreated under the same name is judged by its own catalog.
 *
 * The gateway here reaches the server through a relay that holds back the first query of each of the gateway's
 * catalog reads (application_name sluice-catalog) for `relay.delayMs`, so a catalog read is seen running.
 */
import net from 'node:net';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import pg from 'pg';
import { PG, admin, startTestGateway, type TestGateway } from './support/env.js';
import { analyzeUncached, loadParser } from '../src/analyze/analyze.js';
import { catalogFacts, judgeFunctions, type CatalogFacts } from '../src/analyze/catalog.js';
import { ViewCatalog, throughViews } from '../src/masking/views.js';

const relay = { delayMs: 0, port: 0 };
let relayServer: net.Server;
let g: TestGateway;
let dba: string;
let analyst: string;
const made: string[] = [];

/** A TCP relay to the test server; a catalog read's first query waits `relay.delayMs` (its connection is open meanwhile). */
function startRelay(): Promise<net.Server> {
  const server = net.createServer((client) => {
    const up = net.connect(PG.port, PG.host);
    let startup = true;
    let catalog = false;
    let held = false;
    let queue: Buffer[] | undefined;
    client.on('data', (d) => {
      if (startup) {
        startup = false;
        catalog = d.includes('sluice-catalog');
        up.write(d);
      } else if (catalog && !held) {
        held = true;
        queue = [d];
        setTimeout(() => {
          for (const b of queue ?? []) up.write(b);
          queue = undefined;
        }, relay.delayMs);
      } else if (queue) queue.push(d);
      else up.write(d);
    });
    up.on('data', (d) => client.write(d));
    const close = () => {
      client.destroy();
      up.destroy();
    };
    for (const s of [client, up]) {
      s.on('close', close);
      s.on('error', close);
    }
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const name = (prefix: string) => {
  const n = `${prefix}_${Math.random().toString(16).slice(2, 10)}`;
  made.push(n);
  return n;
};
const exists = (db: string) => admin((c) => c.query('SELECT count(*)::int AS n FROM pg_database WHERE datname = $1', [db])).then((r) => r.rows[0].n === 1);
async function through<T>(password: string, database: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client(g.conn(password, database));
  c.on('error', () => {});
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => {});
  }
}
/** Run one statement through the gateway on the database postgres: its error (code, message, detail), or 'ok'. */
const onPostgres = (sql: string) => through(dba, 'postgres', (c) => c.query(sql).then(() => 'ok' as const, (e: pg.DatabaseError) => ({ code: e.code, message: e.message, detail: e.detail })));
const directly = (sql: string) => admin((c) => c.query(sql).then(() => 'ok' as const, (e: pg.DatabaseError) => ({ code: e.code, message: e.message, detail: e.detail })));
/** A session through the gateway on `db` that ends at once: its server connection goes back to the pool (idle). */
async function leaveIdle(db: string, statement = true): Promise<void> {
  const before = g.gw.pool!.stats.returned;
  await through(dba, db, async (c) => statement && c.query('SELECT 1'));
  await expect.poll(() => g.gw.pool!.stats.returned, { timeout: 5000 }).toBeGreaterThan(before);
}

beforeAll(async () => {
  relayServer = await startRelay();
  relay.port = (relayServer.address() as net.AddressInfo).port;
  g = await startTestGateway({ upstreamHost: '127.0.0.1', upstreamPort: relay.port });
  dba = await g.key('human', ['dba']);
  analyst = await g.key('human', ['analysts']);
  // The catalog of `postgres`, where the DROP DATABASE statements below run, is read once now (not held back).
  await through(dba, 'postgres', (c) => c.query('SELECT 1'));
}, 120_000);
afterAll(async () => {
  await g?.stop();
  relayServer?.close();
  for (const n of made) await admin((c) => c.query(`DROP DATABASE IF EXISTS ${n} WITH (FORCE)`)).catch(() => {});
});

describe("the gateway's own connections and catalog reads", () => {
  beforeEach(() => {
    relay.delayMs = 0;
  });

  it("DROP DATABASE is not blocked by the gateway's idle pooled connection nor by its catalog read of the database", async () => {
    relay.delayMs = 8000;
    const x = name('sluice_dropx');
    await admin((c) => c.query(`CREATE DATABASE ${x}`));
    // A session on x leaves its server connection idle in the pool; its login started a catalog read of x, held
    // back by the relay with its connection to x open (longer than the 5 s the server waits for other sessions).
    await leaveIdle(x, false);
    const catalogReads = () => admin((c) => c.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = 'sluice-catalog'", [x])).then((r) => r.rows[0].n);
    expect(await catalogReads()).toBeGreaterThanOrEqual(1);
    // Directly this succeeds at once; without closing the gateway's connections it fails with 55006 after 5 s.
    expect(await onPostgres(`DROP DATABASE ${x}`)).toBe('ok');
    expect(await exists(x)).toBe(false);
  });

  it('ALTER DATABASE ... RENAME and CREATE DATABASE ... TEMPLATE are not blocked by idle pooled connections either', async () => {
    const x = name('sluice_tmplx');
    const copy = name('sluice_copyx');
    const renamed = name('sluice_renamedx');
    await admin((c) => c.query(`CREATE DATABASE ${x}`));
    await admin((c) => c.query('CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)'), x);
    await leaveIdle(x);
    expect(await onPostgres(`CREATE DATABASE ${copy} TEMPLATE ${x}`)).toBe('ok');
    expect(await admin((c) => c.query('SELECT v FROM kept'), copy).then((r) => r.rows)).toEqual([{ v: 42 }]);
    await leaveIdle(x);
    expect(await onPostgres(`ALTER DATABASE ${x} RENAME TO ${renamed}`)).toBe('ok');
    await leaveIdle(renamed);
    expect(await onPostgres(`DROP DATABASE ${renamed}`)).toBe('ok');
    expect([await exists(x), await exists(renamed), await exists(copy)]).toEqual([false, false, true]);
  });

  it("a client's own session still blocks DROP DATABASE as directly, and WITH (FORCE) still ends it", async () => {
    const outcome = async (via: (sql: string) => Promise<unknown>, open: (db: string) => Promise<pg.Client>) => {
      const x = name('sluice_busyx');
      await admin((c) => c.query(`CREATE DATABASE ${x}`));
      const c = await open(x);
      const blocked = await via(`DROP DATABASE ${x}`);
      const forced = await via(`DROP DATABASE ${x} WITH (FORCE)`);
      const after = await c.query('SELECT 1').then(() => 'ok', (e: pg.DatabaseError) => e.code);
      await c.end().catch(() => {});
      return { blocked, forced, after, exists: await exists(x) };
    };
    const connect = async (config: pg.ClientConfig) => {
      const c = new pg.Client(config);
      c.on('error', () => {});
      await c.connect();
      await c.query('SELECT 1');
      return c;
    };
    const direct = await outcome(directly, (x) => connect({ ...PG, database: x }));
    expect(direct.blocked).toMatchObject({ code: '55006' });
    expect(direct).toMatchObject({ forced: 'ok', exists: false });
    const sluice = await outcome(onPostgres, (x) => connect(g.conn(dba, x)));
    const unnamed = (o: typeof direct) => JSON.parse(JSON.stringify(o).replace(/sluice_busyx_[0-9a-f]+/g, 'X'));
    expect(unnamed(sluice)).toEqual(unnamed(direct));
  }, 30_000);

  it('a database dropped and created again under the same name is judged by its own catalog, not the old one', async () => {
    const x = name('sluice_againx');
    await admin((c) => c.query(`CREATE DATABASE ${x}`));
    await admin((c) => c.query("CREATE FUNCTION f() RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT 1'"), x);
    // An analyst may read: f() has no effects in this database.
    expect(await through(analyst, x, (c) => c.query('SELECT f() AS v').then((r) => r.rows))).toEqual([{ v: 1 }]);
    expect(await onPostgres(`DROP DATABASE ${x}`)).toBe('ok');
    expect(await onPostgres(`CREATE DATABASE ${x}`)).toBe('ok');
    await admin((c) => c.query("CREATE TABLE w (v int); CREATE FUNCTION f() RETURNS int VOLATILE LANGUAGE sql AS 'INSERT INTO w VALUES (1) RETURNING 1'"), x);
    // The same name, another f(): it writes. Judged with the old database's facts it would pass as a read.
    const e = await through(analyst, x, (c) => c.query('SELECT f() AS v').catch((err: pg.DatabaseError) => err));
    expect(e).toMatchObject({ code: '42501' });
    expect(await admin((c) => c.query('SELECT count(*)::int AS n FROM w'), x).then((r) => r.rows[0].n)).toBe(0);
  });

  it("the first login does not wait for the database's catalog; its first statement does, and is judged with it", async () => {
    relay.delayMs = 3000;
    const x = name('sluice_firstx');
    await admin((c) => c.query(`CREATE DATABASE ${x}`));
    await admin((c) => c.query("CREATE FUNCTION seven() RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT 7'"), x);
    const t0 = Date.now();
    const c = new pg.Client(g.conn(analyst, x));
    await c.connect();
    const loggedIn = Date.now() - t0;
    // postgres.js gives a login 1 s by default; before, the login waited for the catalog (up to 3 s).
    expect(loggedIn).toBeLessThan(1500);
    // Judged with the catalog (a function the gateway did not know would count as one with effects: refused).
    expect((await c.query('SELECT seven() AS v')).rows).toEqual([{ v: 7 }]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2500);
    await c.end();
  });

  it("after DDL the session's next statement waits for the catalog read it caused: no overlap, and the new function is known", async () => {
    const x = name('sluice_ddlx');
    await admin((c) => c.query(`CREATE DATABASE ${x}`));
    const reader = new pg.Client(g.conn(analyst, x));
    await reader.connect();
    await reader.query('SELECT 1');
    relay.delayMs = 1500;
    const seen = await through(dba, x, async (c) => {
      await c.query("CREATE FUNCTION eight() RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT 8'");
      // Runs only once the catalog read the CREATE caused is over: none is open while it runs.
      return (await c.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'sluice-catalog'")).rows[0].n;
    });
    expect(seen).toBe(0);
    // The function is known at once: an analyst may call it (unknown, it would count as having effects: refused).
    expect((await reader.query('SELECT eight() AS v')).rows).toEqual([{ v: 8 }]);
    // Inside a transaction the read waits for its end (it could not see the function before the COMMIT).
    const inTx = await through(dba, x, async (c) => {
      await c.query('BEGIN');
      await c.query("CREATE FUNCTION nine() RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT 9'");
      const during = (await c.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'sluice-catalog'")).rows[0].n;
      await c.query('COMMIT');
      // The session's next statement that needs the catalog waits for the read the COMMIT caused.
      expect((await c.query('SELECT nine() AS v')).rows).toEqual([{ v: 9 }]);
      return during;
    });
    expect(inTx).toBe(0);
    expect((await reader.query('SELECT nine() AS v')).rows).toEqual([{ v: 9 }]);
    await reader.end();
    // DDL that changes nothing the gateway reads (an index) is followed by no catalog read and no wait.
    await admin((c) => c.query('CREATE TABLE indexed (v int)'), x);
    relay.delayMs = 5000;
    const waited = await through(dba, x, async (c) => {
      await c.query('CREATE INDEX ON indexed (v)');
      const t0 = Date.now();
      await c.query('SELECT count(*) FROM indexed');
      return Date.now() - t0;
    });
    expect(waited).toBeLessThan(2500);
    // DDL after DDL waits for nothing; the statement that needs the catalog waits for one read after them.
    const run = await through(dba, x, async (c) => {
      const t0 = Date.now();
      for (const n of [1, 2, 3]) await c.query(`CREATE TABLE run${n} (v int)`);
      const ddl = Date.now() - t0;
      const reads = (await c.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'sluice-catalog'")).rows[0].n;
      return { ddl, reads, total: Date.now() - t0 };
    });
    expect(run.ddl).toBeLessThan(4000);
    expect(run.reads).toBe(0);
    expect(run.total).toBeGreaterThanOrEqual(4500);
  });

  it('judged statements do not keep old catalog loads alive (one load after most DDL: the gateway ran out of memory)', async () => {
    await loadParser();
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const fn = (name: string) => ({ name, builtin: false, builtin_volatile: false, extension: false, extension_volatile: false, user: true, user_volatile: false });
    // Two statements stay cached (as in the analysis cache); each was last judged with another load.
    const a1 = analyzeUncached('SELECT f1()');
    const a2 = analyzeUncached('SELECT f2()');
    if (!a1.ok || !a2.ok) throw new Error('unparsable');
    const views = new ViewCatalog(async () => [{ schema: 'public', name: 'v', definition: 'SELECT f1() AS x' }], (sql) => analyzeUncached(sql));
    await views.start('db');
    const old = (() => {
      let first: CatalogFacts | undefined = catalogFacts([fn('f1'), fn('f2')], []);
      judgeFunctions(a1, first, views.get('db'));
      throughViews(a1, views.get('db'));
      const ref = new WeakRef(first);
      first = undefined;
      return ref;
    })();
    const oldViews = new WeakRef(views.get('db')!);
    await views.refresh('db');
    judgeFunctions(a2, catalogFacts([fn('f1'), fn('f2')], []), views.get('db'));
    throughViews(a2, views.get('db'));
    for (let i = 0; i < 5 && (old.deref() || oldViews.deref()); i++) {
      await new Promise((r) => setTimeout(r, 10));
      gc();
    }
    expect(old.deref()).toBeUndefined();
    expect(oldViews.deref()).toBeUndefined();
    expect(a1.statements.length).toBe(1); // still alive
  });
});
