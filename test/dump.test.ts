/**
 * pg_dump and pg_restore through Sluice (as a DBA under examples/policy.yaml): a database with large objects,
 * functions, a trigger, a view, a sequence, backslashes and non-ASCII text dumps through the gateway and restores
 * through it into a database that dumps identically to one restored directly.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PG, admin, freshDatabase, run, startTestGateway, tmpDir, type TestGateway } from './support/env.js';

const SOURCE = `
CREATE SEQUENCE order_seq START 100;
CREATE TABLE orders (id int PRIMARY KEY DEFAULT nextval('order_seq'), status text, note text, updated_at timestamptz);
INSERT INTO orders (status, note) SELECT 'new', 'note ' || g || E' with \\\\ backslash and é' FROM generate_series(1, 50) g;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE TRIGGER orders_touch BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION touch();
CREATE VIEW open_orders AS SELECT id, status FROM orders WHERE status = 'new';
CREATE FUNCTION total() RETURNS bigint LANGUAGE sql STABLE AS $$ SELECT count(*) FROM orders $$;
SELECT lo_from_bytea(0, convert_to(repeat('large object data ', 5000), 'UTF8'));
SELECT lo_from_bytea(0, '\\x00010203ff'::bytea);
COMMENT ON TABLE orders IS 'orders table';
`;

let t: TestGateway;
let dba: string;
const dbs: { name: string; drop: () => Promise<void> }[] = [];
let dir: string;

beforeAll(async () => {
  t = await startTestGateway({ policy: fs.readFileSync('examples/policy.yaml', 'utf8') });
  dba = await t.key('human', ['dba']);
  dir = tmpDir('dump');
}, 120_000);
afterAll(async () => {
  await t?.stop();
  for (const d of dbs) await d.drop();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A plain-text dump of a database, taken directly, without the per-run \\restrict key. */
const plainDump = async (db: string) => (await run('pg_dump', ['-h', PG.host, '-p', String(PG.port), '-U', PG.user, '-d', db])).stdout.split('\n').filter((l) => !/^\\(un)?restrict /.test(l)).join('\n');
const largeObjects = (db: string) => admin((c) => c.query('SELECT oid::text, md5(lo_get(oid)) AS h FROM pg_largeobject_metadata ORDER BY oid').then((r) => r.rows), db);

describe('pg_dump / pg_restore through Sluice', () => {
  it('dumps and restores through the gateway exactly as directly (large objects, functions, trigger, view, sequence)', async () => {
    const src = await freshDatabase('sluice_dump_src', SOURCE);
    const viaDb = await freshDatabase('sluice_dump_via');
    const directDb = await freshDatabase('sluice_dump_direct');
    dbs.push(src, viaDb, directDb);
    const gw = ['-h', '127.0.0.1', '-p', String(t.port), '-U', 'dumper'];
    const env = { PGPASSWORD: dba, PGSSLMODE: 'disable' };
    const via = path.join(dir, 'via.dump');
    const direct = path.join(dir, 'direct.dump');
    const d1 = await run('pg_dump', [...gw, '-Fc', '-f', via, src.name], { env });
    expect(d1.stderr).toBe('');
    expect(d1.code).toBe(0);
    expect((await run('pg_dump', ['-h', PG.host, '-p', String(PG.port), '-U', PG.user, '-Fc', '-f', direct, src.name])).code).toBe(0);
    // The two archives hold the same entries (their timestamps differ).
    const list = async (f: string) => (await run('pg_restore', ['-l', f])).stdout.split('\n').filter((l) => !l.startsWith(';'));
    expect(await list(via)).toEqual(await list(direct));
    // Ownership is an administrator's act under the example policy: restored without owners, both ways.
    const r1 = await run('pg_restore', [...gw, '--no-owner', '-d', viaDb.name, via], { env });
    expect(r1.stderr).toBe('');
    expect(r1.code).toBe(0);
    expect((await run('pg_restore', ['-h', PG.host, '-p', String(PG.port), '-U', PG.user, '--no-owner', '-d', directDb.name, direct])).code).toBe(0);
    expect(await plainDump(viaDb.name)).toEqual(await plainDump(directDb.name));
    const los = await largeObjects(viaDb.name);
    expect(los.length).toBe(2);
    expect(los).toEqual(await largeObjects(src.name));
  }, 120_000);
});
