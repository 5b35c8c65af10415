/**
 * The statement guard against the person writing the SQL: an agent whose key allows only reads (examples/policy.yaml)
 * tries every class of escape. Each case goes through psql (simple protocol) and node-postgres (a real
 * Parse/Bind/Execute), and each asserts the refusal and that nothing changed in the database: tables, row counts,
 * the sequence, large objects, advisory locks, collations, prepared transactions, statistics, sleeping backends and
 * the session's lexing settings.
 */
import fs from 'node:fs';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import mysql from 'mysql2/promise';
import { admin, freshDatabase, mysqlEngine, run, startTestGateway, auditEvents, type TestGateway } from './support/env.js';
import { rawSession, messages, bind, execute } from './support/raw.js';
import * as m from '../src/protocol/postgres/messages.js';
import { AnalysisCache, loadParser } from '../src/analyze/analyze.js';
import { refusalLeaks, SESSION_STATE_SQL } from './support/guard.js';

const SETUP = `
CREATE TABLE t (id int PRIMARY KEY, v text);
INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 10) g;
CREATE TABLE orders (id int PRIMARY KEY, status text);
INSERT INTO orders SELECT g, 'new' FROM generate_series(1, 5) g;
CREATE SEQUENCE s;
CREATE FUNCTION bump() RETURNS int LANGUAGE sql VOLATILE AS $$ INSERT INTO t VALUES (1000 + (SELECT count(*) FROM t)::int, 'bumped') RETURNING id $$;
CREATE FUNCTION safe_fn(int) RETURNS int LANGUAGE sql STABLE AS $$ SELECT $1 + 1 $$;
CREATE FUNCTION sneaky_scs() RETURNS text LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM set_config('standard_conforming_strings', 'off', false); RETURN 'x'; END $$;
CREATE FUNCTION op_fn(int, int) RETURNS int LANGUAGE sql VOLATILE AS $$ SELECT nextval('s')::int $$;
CREATE OPERATOR ### (LEFTARG = int, RIGHTARG = int, FUNCTION = op_fn);
CREATE VIEW v_next AS SELECT nextval('s') AS n;
CREATE INDEX t_lower ON t ((lower(v)));
`;

/** What must not change: read directly, beside the gateway. */
const STATE_SQL = `SELECT
  (SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public') AS tables,
  (SELECT count(*) FROM t) AS t_rows, (SELECT count(*) FROM orders) AS orders_rows,
  (SELECT string_agg(status, ',' ORDER BY id) FROM orders) AS statuses,
  (SELECT last_value || '/' || is_called FROM s) AS seq,
  (SELECT count(*) FROM pg_largeobject_metadata) AS large_objects,
  (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())) AS advisory_locks,
  (SELECT count(*) FROM pg_collation) AS collations,
  (SELECT count(*) FROM pg_prepared_xacts) AS prepared_xacts,
  (SELECT coalesce(stats_reset::text, '') FROM pg_stat_database WHERE datname = current_database()) AS stats_reset,
  (SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND datname = current_database()) AS sleepers,
  (SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace) AS functions`;


/** Every case: one or more statements (run in order in one session), each expected to be refused or harmless. */
const LEXING: string[][] = [
  ...['off', 'OFF', 'false', '0', 'no', 'f', 'of', "'off'", "'no'"].map((v) => [`SET standard_conforming_strings = ${v}`]),
  ['SET standard_conforming_strings TO off'],
  ['SET SESSION standard_conforming_strings = off'],
  ['BEGIN', 'SET LOCAL standard_conforming_strings = off', 'COMMIT'],
  ["SELECT set_config('standard_conforming_strings', 'off', false)"],
  ["SELECT set_config('standard_conforming_strings', 'off', true)"],
  ["SELECT pg_catalog.set_config('STANDARD_CONFORMING_STRINGS', 'off', false)"],
  ["SELECT set_config('standard_conforming_strings'::text, 'off'::text, false)"],
  ["SELECT set_config(name, 'off', false) FROM (VALUES ('standard_conforming_strings')) v(name)"],
  ["SELECT set_config('standard_conforming_strings', v, false) FROM (VALUES ('off')) x(v)"],
  ["SELECT set_config(lower('STANDARD_CONFORMING_STRINGS'), 'off', false)"],
  ["SELECT 1 WHERE set_config('standard_conforming_strings', 'off', false) IS NOT NULL"],
  ["WITH x AS (SELECT set_config('standard_conforming_strings', 'off', false)) SELECT * FROM x"],
  ["UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'"],
  ["UPDATE pg_catalog.pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding'"],
  ...['SJIS', 'sjis', 'Shift_JIS', 'SHIFT_JIS_2004', 'MSKANJI', 'BIG5', 'WIN950', 'GBK', 'WIN936', 'UHC', 'WIN949', 'GB18030', 'JOHAB', 'WIN932'].map((e) => [`SET client_encoding = '${e}'`]),
  ["SET NAMES 'SJIS'"],
  ['SET NAMES big5'],
  ["SELECT set_config('client_encoding', 'GBK', false)"],
  ["DO $$BEGIN SET standard_conforming_strings = off; END$$"],
  ["DO $$BEGIN PERFORM set_config('standard_conforming_strings', 'off', false); END$$"],
  ["DO $$BEGIN EXECUTE 'SET standard_conforming_strings = off'; END$$"],
  ["DO $$BEGIN EXECUTE 'SET client_encoding = ' || quote_literal('SJIS'); END$$"],
  ['ALTER ROLE CURRENT_USER SET standard_conforming_strings = off'],
  ["ALTER DATABASE CURRENT SET client_encoding = 'SJIS'"],
  ["ALTER SYSTEM SET standard_conforming_strings = off"],
  // The desync payloads themselves, after (or with) the refused change.
  [`SET standard_conforming_strings = off; SELECT 'a\\', $$'; DROP TABLE t; --$$`],
  ['SET standard_conforming_strings = off', `SELECT 'a\\', $$'; DROP TABLE t; --$$`],
  ["SET client_encoding = 'SJIS'", `SELECT 'x'; DELETE FROM orders; --'`],
  [`PREPARE p AS SELECT set_config('standard_conforming_strings', 'off', false)`, 'EXECUTE p'],
];

const FUNCTIONS: string[] = [
  "SELECT nextval('s')", "SELECT setval('s', 424242)", "SELECT setval('s', 1, false)", "SELECT pg_catalog.nextval('s')",
  "SELECT nextval('public.s'::regclass)", "SELECT * FROM t WHERE id = nextval('s')", "SELECT (SELECT nextval('s'))",
  "WITH x AS (SELECT nextval('s')) SELECT * FROM x", "SELECT v FROM t ORDER BY nextval('s') LIMIT 1", "SELECT count(*) FROM t GROUP BY nextval('s')",
  "SELECT * FROM (SELECT setval('s', 99)) sub", "SELECT * FROM t, LATERAL (SELECT nextval('s')) l", "SELECT id FROM t UNION SELECT nextval('s')::int",
  "SELECT CASE WHEN true THEN nextval('s') END", "SELECT coalesce(NULL, setval('s', 7))", "SELECT ARRAY[nextval('s')]",
  "SELECT lo_create(0)", "SELECT lo_creat(-1)", "SELECT lo_from_bytea(0, 'x')", "SELECT lo_import('/etc/hostname')", "SELECT lo_unlink(1)",
  "SELECT lo_put(1, 0, 'x')", "SELECT lowrite(0, 'x')", "SELECT lo_truncate(0, 0)",
  'SELECT pg_advisory_lock(1)', 'SELECT pg_try_advisory_lock(1)', 'SELECT pg_advisory_lock_shared(1)', 'SELECT pg_advisory_xact_lock(1)',
  'SELECT pg_try_advisory_xact_lock(2)', 'SELECT pg_advisory_unlock_all()', 'SELECT pg_advisory_lock(1, 2)',
  'SELECT pg_sleep(3600)', "SELECT pg_sleep_for('1 hour')", "SELECT pg_sleep_until(now() + interval '1 hour')", 'SELECT 1 FROM pg_sleep(3600)',
  'SELECT pg_stat_reset()', "SELECT pg_stat_reset_shared('bgwriter')", "SELECT pg_stat_reset_single_table_counters('t'::regclass)",
  "SELECT pg_notify('ch', 'x')", "SELECT pg_logical_emit_message(true, 'p', 'm')", "SELECT pg_import_system_collations('pg_catalog')",
  "SELECT pg_backup_start('x')", "SELECT pg_create_restore_point('x')", 'SELECT pg_switch_wal()', "SELECT brin_summarize_new_values('t_lower'::regclass)",
  "SELECT gin_clean_pending_list('t_lower'::regclass)", "SELECT pg_replication_origin_create('x')", "SELECT pg_create_physical_replication_slot('x')",
  'SELECT pg_reload_conf()', 'SELECT pg_rotate_logfile()', 'SELECT pg_terminate_backend(1)', 'SELECT pg_cancel_backend(1)',
  'SELECT bump()', 'SELECT public.bump()', 'SELECT * FROM bump()', 'SELECT * FROM t WHERE bump() IS NULL', 'SELECT (SELECT bump()) AS b',
  'SELECT sneaky_scs()', 'SELECT 1 ### 2', 'SELECT * FROM t WHERE id ### 1 = 0', 'SELECT * FROM v_next', 'SELECT n FROM public.v_next',
  'SELECT unknown_fn()', "SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, ''b''::tsquery')", "SELECT ts_stat('SELECT to_tsvector(v) FROM t')",
  "SELECT query_to_xml('DELETE FROM t RETURNING *', true, true, '')", "SELECT table_to_xml('orders', true, true, '')",
  "SELECT database_to_xml(true, true, '')", "SELECT schema_to_xml('public', true, true, '')",
  "DECLARE c CURSOR WITH HOLD FOR SELECT nextval('s')", "EXPLAIN ANALYZE SELECT nextval('s')", "COPY (SELECT nextval('s')) TO STDOUT",
  "SELECT * FROM t WHERE v = (SELECT setval('s', 5)::text)", "SELECT string_agg(nextval('s')::text, ',') FROM t",
];

const PRIVILEGED: string[] = [
  'SET session_replication_role = replica', "SET log_statement = 'none'", 'SET log_min_duration_statement = -1', 'SET track_activities = off',
  'SET track_counts = off', "SET local_preload_libraries = 'x'", "SET session_preload_libraries = 'x'", 'SET zero_damaged_pages = on',
  'SET allow_system_table_mods = on', 'SET lo_compat_privileges = on', 'SET LOCAL log_statement = none', 'RESET session_replication_role',
  "SELECT set_config('session_replication_role', 'replica', false)", "SELECT set_config('log_statement', 'none', true)",
  "SET some_unknown_setting = 1", "SET pg_stat_statements.track = 'none'", "PREPARE TRANSACTION 'sluice_x'", "COMMIT PREPARED 'sluice_x'",
  "ROLLBACK PREPARED 'sluice_x'", 'LOCK TABLE t IN ACCESS EXCLUSIVE MODE', 'LOCK t', 'SET ROLE postgres', 'SET SESSION AUTHORIZATION postgres',
  "DO $$BEGIN SET session_replication_role = replica; END$$", 'SET log_parser_stats = on', 'SET temp_file_limit = -1',
];

const CATALOGS: string[] = [
  'SELECT * FROM pg_authid', 'SELECT rolpassword FROM pg_catalog.pg_authid', 'SELECT * FROM pg_shadow', 'SELECT passwd FROM pg_catalog.pg_shadow',
  'SELECT * FROM pg_hba_file_rules', 'SELECT * FROM pg_file_settings', 'SELECT * FROM pg_user_mappings', 'SELECT query FROM pg_stat_activity',
  'SELECT * FROM pg_statistic', 'SELECT most_common_vals FROM pg_stats', 'SELECT * FROM pg_largeobject', 'SELECT * FROM pg_subscription',
  'SELECT * FROM pg_db_role_setting', "SELECT pg_read_file('pg_hba.conf')", "SELECT pg_ls_dir('.')", 'SELECT * FROM pg_show_all_file_settings()',
  'SELECT * FROM pg_hba_file_rules()', 'SELECT (SELECT count(*) FROM pg_shadow)', 'WITH a AS (SELECT rolname, rolpassword FROM pg_authid) SELECT * FROM a',
  'SELECT 1 WHERE EXISTS (SELECT 1 FROM pg_authid)', 'SELECT rolname FROM pg_roles UNION SELECT rolpassword FROM pg_authid',
  'SELECT * FROM t JOIN pg_authid a ON true LIMIT 1', 'SELECT * FROM pg_stat_get_activity(NULL)', "SELECT pg_read_binary_file('postgresql.conf')",
];

const ESCAPES: string[] = [
  'DROP TABLE t', 'TRUNCATE orders', 'DELETE FROM orders', 'UPDATE orders SET status = 1::text', 'SELECT 1; DROP TABLE t', 'SELECT 1;DELETE FROM orders',
  `SELECT $a$ $$ $a$; DROP TABLE t`, `SELECT E'\\''; DROP TABLE t; --'`, `SELECT 'x' /* ; */ ; DROP TABLE t`, `SELECT U&'\\0027'; DROP TABLE t`,
  'WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d', 'SELECT * INTO t2 FROM t', "COPY (SELECT 1) TO PROGRAM 'true'",
  'CREATE TABLE x (a int)', 'ALTER TABLE t DROP COLUMN v', "INSERT INTO orders VALUES (99, 'x')", 'MERGE INTO orders o USING t ON o.id = t.id WHEN MATCHED THEN DELETE',
  "PREPARE p2 AS DELETE FROM orders WHERE id = $1; EXECUTE p2(1)", 'CALL nothing()', "DO $$BEGIN DELETE FROM orders; END$$",
  "DO $$BEGIN EXECUTE 'DROP' || ' TABLE t'; END$$", "DO LANGUAGE sql 'DELETE FROM orders'", 'SELECT * FROM t FOR UPDATE; DELETE FROM orders',
  "COPY orders FROM '/etc/passwd'", 'VACUUM FULL t', 'REINDEX TABLE t', 'CLUSTER t USING t_pkey', 'REFRESH MATERIALIZED VIEW x', 'CHECKPOINT',
  "SELECT 1 \\; DELETE FROM orders", 'ANALYZE t',
];

const ALL = [...LEXING, ...[...FUNCTIONS, ...PRIVILEGED, ...CATALOGS, ...ESCAPES].map((s) => [s])];

const PSQL_STATE = /on\|UTF8\|origin\|postgres/;

let t: TestGateway;
let db: { name: string; drop: () => Promise<void> };
let agent: string;
let analyst: string;
let dba: string;

const state = () => admin((c) => c.query(STATE_SQL).then((r) => r.rows[0]), db.name);
const psqlArgs = (extra: string[] = []) => ['-X', `host=127.0.0.1 port=${t.port} dbname=${db.name} user=agent sslmode=disable`, ...extra];

beforeAll(async () => {
  await loadParser();
  db = await freshDatabase('sluice_guard', SETUP);
  t = await startTestGateway({ policy: fs.readFileSync('examples/policy.yaml', 'utf8') });
  agent = await t.key('agent', ['analysts'], { name: 'guard-agent' });
  analyst = await t.key('human', ['analysts'], { name: 'guard-analyst' });
  dba = await t.key('human', ['dba'], { name: 'guard-dba' });
}, 120_000);

afterAll(async () => {
  await t?.stop();
  await db?.drop();
});

describe(`adversarial guard suite: ${ALL.length} cases, each through psql and through node-postgres' extended protocol`, () => {
  it(`every case is refused by psql (simple protocol) and nothing changes`, async () => {
    const before = await state();
    const leaks: string[] = [];
    for (const steps of ALL) {
      const args = psqlArgs(steps.flatMap((s) => ['-c', s]).concat(['-At', '-c', SESSION_STATE_SQL]));
      const r = await run('psql', args, { env: { PGPASSWORD: agent } });
      // Refused by Sluice, or the server's own syntax error for text Sluice cannot parse either (see test/support/guard.ts).
      if (!/Sluice|ERROR: {2}syntax error/.test(r.stderr)) leaks.push(`${steps.join(' ⏎ ')}: not refused (${r.stderr.trim() || r.stdout.trim()})`);
      if (!PSQL_STATE.test(r.stdout)) leaks.push(`${steps.join(' ⏎ ')}: session state ${r.stdout.trim()} ${r.stderr.trim()}`);
      const after = await state();
      if (JSON.stringify(after) !== JSON.stringify(before)) leaks.push(`${steps.join(' ⏎ ')}: changed ${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
    }
    expect(leaks).toEqual([]);
  }, 240_000);

  it('every case is refused through the extended protocol (Parse/Bind/Execute), the session stays usable, nothing changes', async () => {
    expect(await refusalLeaks(t.conn(agent, db.name), ALL, 'extended', state)).toEqual([]);
    const denied = await auditEvents(t, { type: 'statement', decision: 'deny', limit: 5000 });
    expect(denied.find((e) => e.sql === "SELECT setval('s', 424242)")).toMatchObject({ rule: 'agents-read-only', flags: expect.arrayContaining(['volatile-function']) });
    expect(denied.find((e) => e.sql === 'SET standard_conforming_strings = off')).toMatchObject({ rule: 'sluice-guard' });
  }, 240_000);

  it('names what it refuses: the function and its effect, the setting and why', async () => {
    const c = new pg.Client(t.conn(agent, db.name));
    await c.connect();
    try {
      const e1 = await c.query("SELECT setval('s', 424242)").catch((e) => e);
      expect(e1.detail).toMatch(/class write/);
      const e2 = await c.query('SET standard_conforming_strings = off').catch((e) => e);
      expect(e2.message).toMatch(/standard_conforming_strings cannot be turned off through Sluice/);
      const e3 = await c.query("SET client_encoding = 'SJIS'").catch((e) => e);
      expect(e3.message).toMatch(/client encoding "SJIS" is not allowed/);
      const e4 = await c.query('SELECT ' + '('.repeat(20000) + '1' + ')'.repeat(20000)).catch((e) => e);
      expect(e4.code).toBe('42601');
      expect(e4.message).not.toMatch(/call stack/);
      expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    } finally {
      await c.end();
    }
  });
});

describe('benign traffic still passes', () => {
  it("psql's \\d family, ordinary settings, harmless volatile and stable functions, backslashes and non-ASCII text", async () => {
    const cmds = ['\\d', '\\dt', '\\d t', '\\df', '\\dv', '\\dn', '\\du', '\\l', '\\di', '\\ds', '\\dx', '\\dT', '\\dp'];
    const sqls = [
      "SELECT pg_catalog.set_config('search_path', '', false)", "SET search_path = public", "SET application_name = 'x'", "SET TIME ZONE 'UTC'",
      "SET client_encoding = 'UTF8'", "SET client_encoding = 'LATIN1'", "RESET client_encoding", 'SET standard_conforming_strings = on', "SET app.tenant = '7'",
      'SET statement_timeout = 1000', 'SET TRANSACTION ISOLATION LEVEL READ COMMITTED', 'SELECT now(), random(), clock_timestamp(), gen_random_uuid()',
      'SELECT safe_fn(1)', "SELECT E'a\\\\b', 'c\\d', 'héllo wörld ✓'", 'SELECT count(*) FROM pg_class', "SELECT currval('s') IS NULL",
      'SELECT pg_database_size(current_database()) > 0', 'SELECT * FROM pg_roles LIMIT 1', 'SELECT * FROM pg_settings LIMIT 1', 'SHOW ALL', '\\du',
    ];
    const r = await run('psql', [...psqlArgs(), '-v', 'ON_ERROR_STOP=0', ...cmds.flatMap((x) => ['-c', x]), ...sqls.flatMap((x) => ['-c', x])], { env: { PGPASSWORD: analyst }, timeoutMs: 30_000 });
    const refusals = r.stderr.split('\n').filter((l) => /Sluice|ERROR/.test(l) && !/currval of sequence "s" is not yet defined/.test(l));
    expect(refusals).toEqual([]);
    expect(r.stdout).toContain('héllo wörld ✓');
  });

  it('a DBA may call functions with effects; the audit names them', async () => {
    const c = new pg.Client(t.conn(dba, db.name));
    await c.connect();
    try {
      const r = await c.query("SELECT nextval('s') AS n");
      expect(Number(r.rows[0].n)).toBeGreaterThan(0);
      await c.query("SELECT setval('s', 1, false)");
    } finally {
      await c.end();
    }
    const ev = (await auditEvents(t, { type: 'statement', decision: 'allow', limit: 5000 })).find((e) => e.sql === "SELECT nextval('s') AS n");
    expect(ev?.classes).toEqual(['write']);
    expect(ev?.flags).toContain('volatile-function');
  });
});

describe('session state Sluice cannot parse under ends the session', () => {
  it('a user function that turns standard_conforming_strings off: the pipelined payload never runs, the session ends (FATAL)', async () => {
    const payload = `SELECT 'a\\', $$'; DROP TABLE t; --$$`;
    const data = await rawSession(t.port, db.name, dba, Buffer.concat([m.query('SELECT sneaky_scs()'), m.query(payload)]), 3);
    const types = messages(data).map((x) => x.type);
    const fatal = messages(data).find((x) => x.type === 'E');
    expect(fatal?.body.toString()).toMatch(/Sluice ended the session: the server reports standard_conforming_strings = off/);
    expect(types.filter((x) => x === 'Z').length).toBe(0);
    expect((await state()).tables).toBe('orders,t');
    const ev = await auditEvents(t, { type: 'protocol_error', limit: 100 });
    expect(ev.some((e) => /standard_conforming_strings = off/.test(e.error ?? ''))).toBe(true);
  });

  it('a backslash text pipelined in the extended protocol behind an unsynced volatile call is refused; after Sync it runs', async () => {
    const bindExec = Buffer.concat([bind(''), execute('')]);
    const send = Buffer.concat([m.parse('', "SELECT nextval('s')"), bindExec, m.parse('', "SELECT 'a\\b'"), bindExec, m.sync()]);
    const data = await rawSession(t.port, db.name, dba, send, 1);
    const err = messages(data).find((x) => x.type === 'E');
    expect(err?.body.toString()).toMatch(/follows, before any Sync, a statement that may change how the server reads them/);
    const ok = await rawSession(t.port, db.name, dba, Buffer.concat([m.parse('', "SELECT nextval('s')"), bindExec, m.sync(), m.parse('', "SELECT 'a\\b'"), bindExec, m.sync()]), 2);
    expect(messages(ok).some((x) => x.type === 'E')).toBe(false);
    expect(ok.toString()).toContain('a\\b');
    await admin((c) => c.query("SELECT setval('s', 1, false)"), db.name);
  });
});

describe('startup parameters: only ordinary session settings pass', () => {
  const refused: [string, Record<string, string>][] = [
    ['options -c session_replication_role=replica', { PGOPTIONS: '-c session_replication_role=replica' }],
    ['options --session_replication_role=replica', { PGOPTIONS: '--session_replication_role=replica' }],
    ['options -csession_replication_role=replica', { PGOPTIONS: '-csession_replication_role=replica' }],
    ['options -c role=postgres', { PGOPTIONS: '-c role=postgres' }],
    ['options -c log_statement=none', { PGOPTIONS: '-c log_statement=none' }],
    ['options -c standard_conforming_strings=off', { PGOPTIONS: '-c standard_conforming_strings=off' }],
    ['options -c client_encoding=SJIS', { PGOPTIONS: '-c client_encoding=SJIS' }],
    ['options -d 5 (a backend switch)', { PGOPTIONS: '-d 5' }],
    ['options -c search_path=public -P', { PGOPTIONS: '-c search_path=public -P' }],
    ['options -c track_counts=off', { PGOPTIONS: '-c track_counts=off' }],
    ['client_encoding SJIS', { PGCLIENTENCODING: 'SJIS' }],
    ['client_encoding BIG5', { PGCLIENTENCODING: 'BIG5' }],
  ];
  it.each(refused)('%s is refused at login with a clear FATAL (psql)', async (_name, env) => {
    const r = await run('psql', [...psqlArgs(), '-c', 'SELECT 1'], { env: { PGPASSWORD: agent, ...env } });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/not allowed through Sluice|cannot be turned off through Sluice/);
  });
  it('node-postgres: options and a replication parameter are refused; ordinary options pass', async () => {
    for (const options of ['-c session_replication_role=replica', '-c standard_conforming_strings=off']) {
      const c = new pg.Client({ ...t.conn(agent, db.name), options });
      const e = await c.connect().catch((err) => err);
      expect(e?.message).toMatch(/not allowed through Sluice|cannot be turned off/);
    }
    const ok = new pg.Client({ ...t.conn(agent, db.name), options: '-c search_path=public -c statement_timeout=5000', application_name: 'guard-ok' });
    await ok.connect();
    expect((await ok.query('SHOW statement_timeout')).rows[0].statement_timeout).toBe('5s');
    await ok.end();
  });
});

describe('cancel keys are per engine', () => {
  it('a PostgreSQL CancelRequest naming a MySQL connection id does not cancel the MySQL session', async () => {
    const g = await startTestGateway({ policy: fs.readFileSync('examples/policy.yaml', 'utf8'), config: mysqlEngine() });
    try {
      const dbaKey = await g.key('human', ['dba']);
      const my = await mysql.createConnection({ host: '127.0.0.1', port: g.gw.mysqlPort!, user: 'x', password: dbaKey, database: 'mysql', enableCleartextPlugin: true } as mysql.ConnectionOptions);
      try {
        const id = my.threadId!;
        const started = Date.now();
        const running = my.query('SELECT SLEEP(1.5) AS s');
        await new Promise((r) => setTimeout(r, 300));
        for (const secret of [0, 1, -1, 12345]) {
          await new Promise<void>((resolve) => {
            const s = net.connect(g.port, '127.0.0.1', () => s.end(m.cancelRequest(id, secret)));
            s.on('close', () => resolve());
            s.on('error', () => resolve());
          });
        }
        const [rows] = (await running) as unknown as [{ s: number }[]];
        expect(Number(rows[0]!.s)).toBe(0); // SLEEP returns 1 when interrupted
        expect(Date.now() - started).toBeGreaterThanOrEqual(1400);
      } finally {
        await my.end();
      }
    } finally {
      await g.stop();
    }
  });
});

describe('parse failures are not cached under a normalized key', () => {
  it('an invalid literal value does not poison texts that differ from it only in that value', async () => {
    const cache = new AnalysisCache();
    expect(cache.analyze('ALTER INDEX t_lower ALTER COLUMN 0 SET STATISTICS 1').ok).toBe(false);
    expect(cache.analyze('ALTER INDEX t_lower ALTER COLUMN 1 SET STATISTICS 1').ok).toBe(true);
    const c = new pg.Client(t.conn(dba, db.name));
    await c.connect();
    try {
      // The server's own parse-time error, as directly (column 0 is out of range: 22023).
      const direct = await admin((a) => a.query('ALTER INDEX t_lower ALTER COLUMN 0 SET STATISTICS 1').catch((e) => e), db.name);
      expect(direct.code).toBe('22023');
      expect((await c.query('ALTER INDEX t_lower ALTER COLUMN 0 SET STATISTICS 1').catch((e) => e)).code).toBe(direct.code);
      await c.query('ALTER INDEX t_lower ALTER COLUMN 1 SET STATISTICS 1');
    } finally {
      await c.end();
    }
  });
});
