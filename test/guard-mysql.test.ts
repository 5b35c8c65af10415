/**
 * The MySQL/MariaDB statement guard against the person writing the SQL: an agent whose key allows only reads
 * (examples/policy.yaml; kind agent, group analysts) on a gateway serving one database tries every class of escape.
 * Each case goes through mysql2's text protocol (COM_QUERY, multi-statements on) and through prepared statements
 * (COM_STMT_PREPARE/EXECUTE), each in a fresh session, and each asserts the refusal and that nothing changed: tables,
 * row counts, the sequence, the other database, named and table locks, sleeping or busy upstream sessions, global
 * settings, users, databases, and the session's own sql_mode, character sets and database read back through the gateway.
 */
import fs from 'node:fs';
import crypto from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mysql from 'mysql2/promise';
import { MY, auditEvents, startTestGateway, type TestGateway } from './support/env.js';
import { policyYaml, rules } from './support/policies.js';
import { withOwnMariadb } from './support/mariadb.js';
import { analyzeMysql, loadMysqlParser } from '../src/analyze/mysql.js';
import { forParser, handshakeCharsetRefusal } from '../src/analyze/guard-mysql.js';
import { changesRoutines } from '../src/analyze/mysql-routines.js';

let db: string;
let other: string;
/** The served database's name in capitals: another database to the server (names are case-sensitive). */
let upper: string;
let t: TestGateway;
let agent: string;
let analyst: string;
let dba: string;
let port: number;

const root = () => mysql.createConnection({ ...MY, multipleStatements: true });

/** Every case: statements run in order in one session; at least one must be refused by Sluice, and nothing may change. */
const cases = (): string[][] => {
  const DESYNC_BACKSLASH = "SELECT 'a\\'; DELETE FROM orders; -- '";
  const DESYNC_ANSI = 'SELECT "a\\"; DELETE FROM orders; -- "';
  const MARIADB_COMMENTS = [
    'SELECT 1 /*M! ; DROP TABLE t */', 'SELECT 1 /*M!100100 ; DROP TABLE t */', 'SELECT 1 /*M!100100 , (SELECT NEXTVAL(s)) */',
    '/*M! DELETE FROM orders */', 'SELECT /*M!100000 SLEEP(3600), */ 1', 'SELECT 1 /*!50000 ; DELETE FROM orders */',
    'SELECT * FROM t /*M! WHERE 1 ; TRUNCATE orders */', 'SELECT 1 /*M!100100 ; SET NAMES gbk */',
  ].map((s) => [s]);
  const DYNAMIC = [
    ["EXECUTE IMMEDIATE 'DROP TABLE t'"], ["EXECUTE IMMEDIATE CONCAT('DROP', ' TABLE t')"], ["EXECUTE IMMEDIATE 'DELETE FROM orders'"],
    ["EXECUTE IMMEDIATE 'SELECT NEXTVAL(s)'"], ["SET @q = 'DELETE FROM orders'", 'EXECUTE IMMEDIATE @q'],
    ["PREPARE p FROM 'DELETE FROM orders'", 'EXECUTE p'], ["SET @v = 'DROP TABLE t'", 'PREPARE p FROM @v', 'EXECUTE p'],
    ["EXECUTE IMMEDIATE 'EXECUTE IMMEDIATE ''DROP TABLE t'''"], ["EXECUTE IMMEDIATE 'SET NAMES gbk'"], ["EXECUTE IMMEDIATE 'USE mysql'"],
    ["EXECUTE IMMEDIATE 'SELECT ?' USING NEXTVAL(s)"], ["EXECUTE IMMEDIATE 'SELECT * FROM mysql.user'"],
    // PREPARE name FROM '<text>' is judged as its text; EXECUTE name as the text prepared through Sluice.
    ["PREPARE p FROM 'SELECT 1'", "PREPARE p FROM 'DELETE FROM orders'", 'EXECUTE p'], ["PREPARE p FROM 'SELECT 1 #\\nFROM mysql.user'", 'EXECUTE p'],
    ["PREPARE p FROM 'SELECT 1 -- \\r\\n, NEXTVAL(s)'", 'EXECUTE p'], ["PREPARE p FROM 'SELECT \\'a\\\\\\\\\\' , NEXTVAL(s) -- \\''", 'EXECUTE p'],
    ['PREPARE p FROM "DELETE FROM orders"', 'EXECUTE p'], ["PREPARE p FROM 'DELETE ' 'FROM orders'", 'EXECUTE p'], ["PREPARE p FROM 'SELECT 1 ' \"FROM mysql.user\"", 'EXECUTE p'],
    ["PREPARE p FROM _utf8mb4'DELETE FROM orders'", 'EXECUTE p'], ["PREPARE p FROM _binary'SELECT 1'"], ['PREPARE p FROM 0x44454C4554452046524F4D206F7264657273', 'EXECUTE p'],
    ["PREPARE p FROM X'44454C4554452046524F4D206F7264657273'", 'EXECUTE p'], ["PREPARE p FROM N'DELETE FROM orders'", 'EXECUTE p'], ["PREPARE p FROM CONCAT('DELETE', ' FROM orders')", 'EXECUTE p'],
    ["PREPARE p FROM 'SELECT 1' /*!100000 'FROM mysql.user' */", 'EXECUTE p'], ["PREPARE p FROM 'SELECT 1 /*!100000 FROM mysql.user */'", 'EXECUTE p'],
    ["SELECT 1; PREPARE p FROM 'DELETE FROM orders'", 'EXECUTE p'], ["PREPARE p FROM 'SELECT 1'; EXECUTE p"], ["PREPARE p FROM 'USE mysql'", 'EXECUTE p'],
    ["PREPARE p FROM 'SET NAMES gbk'", 'EXECUTE p'], ["PREPARE p FROM 'KILL 1'", 'EXECUTE p'], ["PREPARE p FROM 'SELECT 1'", 'DEALLOCATE PREPARE p', "PREPARE p FROM 'DELETE FROM orders'", 'EXECUTE p'],
    ["PREPARE p FROM 'SELECT ?'", 'EXECUTE p USING NEXTVAL(s)'], ["PREPARE p FROM 'SELECT ?'", 'EXECUTE p USING @@global.max_connections', 'SET GLOBAL max_connections = @@global.max_connections'],
    ["PREPARE `p` FROM 'SELECT 1'", "PREPARE P FROM 'DELETE FROM orders'", 'EXECUTE p'], ["PREPARE p FROM 'PREPARE q FROM ''DELETE FROM orders'''", 'EXECUTE q'],
  ];
  const LEXING = [
    ["SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')", DESYNC_BACKSLASH],
    ["SET sql_mode = 'NO_BACKSLASH_ESCAPES'", DESYNC_BACKSLASH], ["SET @@session.sql_mode = 'ANSI_QUOTES'", DESYNC_ANSI],
    ["SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')", DESYNC_ANSI], ["SET @@sql_mode = 'ANSI'"], ["SET LOCAL sql_mode = 'ORACLE'"],
    ["SET @saved = 'NO_BACKSLASH_ESCAPES'", 'SET sql_mode = @saved'], ["SET @cs = 'gbk'", '/*!40101 SET character_set_client = @cs */'],
    ["SET @m = 'ANSI_QUOTES'", 'SET @@session.sql_mode := @m'], ['SET sql_mode = @never_set'],
    // Saved values the server reads differently from their text: a sql_mode bit mask, a collation id, hex, SELECT INTO.
    ['SET @a = 4', 'SET sql_mode = @a'], ['SET @cs = 28', 'SET character_set_client = @cs'],
    ['SET @a = 0x414E53495F51554F544553', 'SET sql_mode = @a'], ["SELECT 'ANSI_QUOTES' INTO @a", 'SET sql_mode = @A'], ["SET sql_mode = (SELECT 'NO_BACKSLASH_ESCAPES')"],
    ["SET SESSION sql_mode = 'STRICT_TRANS_TABLES', character_set_client = 'gbk'"], ['SET sql_mode = 0x4E4F5F4241434B534C4153485F45534341504553'],
    ["SET STATEMENT sql_mode = 'NO_BACKSLASH_ESCAPES' FOR SELECT 1"], ['SET sql_mode = 2097152'],
    ['SET NAMES gbk'], ["SET NAMES 'big5'"], ['SET NAMES sjis COLLATE sjis_japanese_ci'], ['SET NAMES cp932'], ['SET CHARACTER SET gbk'],
    ['SET character_set_client = gbk'], ["SET @@session.character_set_connection = 'big5'"], ["SET @@character_set_client = 'sjis'"],
    ["SET collation_connection = 'gbk_chinese_ci'"], ['SET character_set_client = @@global.character_set_client'],
    ["SET NAMES utf8mb4 COLLATE 'gbk_bin'"],
    // DEFAULT is the server's global value: the statements after it in the same text are read under a value Sluice
    // cannot know (alone, the server reports the value it took; see the session-tracking cases below).
    [`SET sql_mode = DEFAULT; ${DESYNC_ANSI}`], ['SET NAMES DEFAULT; SELECT 1'], ["SET @@session.character_set_client = 'default', autocommit = 1; SELECT 1"],
    ["EXECUTE IMMEDIATE 'SET character_set_client = DEFAULT'; SELECT 1"],
    // The gateway follows the session's settings through session tracking: not the client's to change.
    ["SET SESSION session_track_system_variables = ''", "SET NAMES utf8mb4 COLLATE 'utf8mb4_bin'"], ['SET session_track_schema = OFF'],
  ];
  // Global settings are set to their own values, and SET PASSWORD names a user that does not exist: should one get
  // through, the shared server stays usable (the case still fails: it was not refused).
  const PRIVILEGED = [
    'SET GLOBAL max_connections = @@global.max_connections', 'SET @@global.wait_timeout = @@global.wait_timeout', 'SET GLOBAL sql_mode = @@global.sql_mode',
    'SET wait_timeout = 100, GLOBAL max_connections = @@global.max_connections', 'SET GLOBAL wait_timeout = @@global.wait_timeout, max_connections = @@global.max_connections',
    'SET SESSION sql_log_bin = 0', 'SET sql_log_off = 1', "SET PASSWORD FOR sluice_guard_nobody = PASSWORD('x')", 'SET ROLE NONE',
    'SET @@global.general_log = @@global.general_log', 'SET PERSIST max_connections = @@global.max_connections',
  ].map((s) => [s]);
  const EFFECTS = [
    'LOCK TABLES t WRITE', 'LOCK TABLES t READ, orders WRITE', 'LOCK TABLE orders READ', 'SELECT SLEEP(3600)', 'SELECT * FROM t WHERE SLEEP(3600) = 0',
    "SELECT GET_LOCK('sluice_l', 0)", 'SELECT RELEASE_ALL_LOCKS()', 'SELECT NEXTVAL(s)', 'SELECT NEXT VALUE FOR s', 'SELECT SETVAL(s, 424242)',
    "SELECT BENCHMARK(100000000, MD5('x'))", 'SELECT bump()', 'SELECT id FROM t WHERE id = bump()', 'SELECT (SELECT NEXTVAL(s)) AS n',
    'WITH x AS (SELECT NEXTVAL(s) AS n) SELECT * FROM x', `SELECT ${db}.bump()`, "SELECT MASTER_POS_WAIT('x', 1, 1)", "SELECT LOAD_FILE('/etc/passwd')",
    'SELECT v FROM t ORDER BY NEXTVAL(s) LIMIT 1', 'SELECT PREVIOUS VALUE FOR s, NEXTVAL(s)', 'DO SLEEP(3600)',
  ].map((s) => [s]);
  const CATALOGS = [
    'SELECT * FROM mysql.user', 'SELECT User, Password FROM mysql.user', 'SELECT * FROM information_schema.PROCESSLIST', 'SELECT * FROM information_schema.USER_PRIVILEGES',
    'SELECT * FROM performance_schema.threads', 'SELECT * FROM sys.processlist', `SELECT * FROM ${other}.secrets`, `SELECT t.id, s.v FROM t JOIN ${other}.secrets s ON 1 = 1`,
    'SHOW TABLES FROM mysql', 'SHOW GRANTS', 'SHOW PROCESSLIST', 'SHOW FULL PROCESSLIST', 'SELECT (SELECT count(*) FROM mysql.user)', 'DESCRIBE mysql.user',
    'SHOW CREATE TABLE mysql.user', 'SELECT info FROM information_schema.processlist WHERE 1', 'SHOW COLUMNS FROM user FROM mysql', 'SHOW INDEX FROM user FROM mysql',
    `INSERT INTO ${other}.secrets VALUES ('x')`, 'SELECT * FROM t WHERE EXISTS (SELECT 1 FROM mysql.user)', 'SELECT id FROM t UNION SELECT User FROM mysql.user',
  ].map((s) => [s]);
  const ESCAPES = [
    'WITH d AS (SELECT id FROM orders) DELETE FROM orders WHERE id IN (SELECT id FROM d)', "WITH d AS (SELECT 1) UPDATE orders SET status = 'x' WHERE id > 0",
    'WITH d AS (SELECT 1 AS a) INSERT INTO orders SELECT 100 + a, 1 FROM d', 'USE mysql', `USE ${other}`, `USE ${upper}`, `SELECT * FROM ${upper}.secrets`, '/* x */ USE mysql', 'USE mysql; SELECT 1', 'KILL 999999999',
    'KILL QUERY ID 5', 'DROP TABLE t', 'DELETE FROM orders', 'TRUNCATE orders', 'SELECT 1; DROP TABLE t', "XA START 'x'", 'HANDLER t OPEN', 'CALL nothing()',
    `SELECT * FROM t INTO OUTFILE '/tmp/${db}.out'`, "LOAD DATA INFILE '/etc/passwd' INTO TABLE t", 'CREATE USER sluice_guard_evil', 'GRANT ALL ON *.* TO CURRENT_USER',
    'SELECT 1 --1; DELETE FROM orders', 'SELECT 1 # x\n; DELETE FROM orders', "INSERT INTO orders VALUES (99, 'x')", "REPLACE INTO orders VALUES (1, 'x')",
    "UPDATE orders SET status = 'x'", 'CREATE TABLE x (a int)', 'ALTER TABLE t DROP COLUMN v', 'RENAME TABLE t TO t2', 'FLUSH TABLES WITH READ LOCK',
    "SELECT 'x' /* ; */ ; DROP TABLE t", 'SELECT * FROM t FOR UPDATE; DELETE FROM orders',
  ].map((s) => [s]);
  // Stored functions judged from information_schema.ROUTINES and their bodies (created in beforeAll): declared
  // MODIFIES SQL DATA, or declared READS SQL DATA / NO SQL / CONTAINS SQL while the body writes, calls a procedure
  // or another function that does, takes a named lock, moves a sequence, sets a session variable; functions named
  // like built-ins the server does not have (json_*, format_bytes), functions in another schema called through one
  // in this one, views calling them (and views of such views), names no catalog knows.
  const ROUTINES = [
    'SELECT liar()', `SELECT ${db}.liar()`, 'SELECT id FROM t WHERE liar() = 1', 'SELECT safe_count(), liar()', 'SELECT (SELECT nested_liar())',
    'SELECT nosql_update()', 'SELECT calls_proc()', 'SELECT locker()', 'SELECT seq_fn()', 'SELECT json_wipe()', 'SELECT format_bytes(3)',
    'SELECT via_other()', 'SELECT sets_session()', 'SELECT * FROM v_liar', 'SELECT x FROM v_of_v', 'SELECT id FROM t WHERE id IN (SELECT x FROM v_liar)',
    'SELECT no_such_function()', `SELECT ${db}.no_such_function()`, 'SELECT peek_users()', 'SELECT via_view()', 'SELECT * FROM v_users', 'SELECT peek_other()', "EXECUTE IMMEDIATE 'SELECT liar()'", 'SELECT safe_count() FROM t WHERE id = json_wipe()',
    'WITH w AS (SELECT liar() AS x) SELECT * FROM w', 'SELECT liar() UNION SELECT 1', 'SELECT COALESCE(NULL, nested_liar())', 'DO liar()', 'CALL writer_proc()',
    // mysql2 sessions run with IGNORE_SPACE (CLIENT_IGNORE_SPACE): a space before `(` is still a call.
    'SELECT liar ()', 'SELECT SLEEP (3600)', "SELECT GET_LOCK ('sluice_l', 0)", 'SELECT json_wipe /* x */ ()',
    // A stored program after other statements of the same text is read as one, and nothing after its body runs.
    'SELECT 1; CREATE PROCEDURE sluice_evil() BEGIN DELETE FROM orders; END', 'SELECT 1; CREATE FUNCTION sluice_evil() RETURNS int RETURN 1; DELETE FROM orders',
    "SELECT ';'; /* ; */ CREATE PROCEDURE sluice_evil() DELETE FROM orders", 'DROP PROCEDURE IF EXISTS sluice_evil; CREATE PROCEDURE sluice_evil() BEGIN SELECT 1; END; DELETE FROM orders',
  ].map((s) => [s]);
  return [...MARIADB_COMMENTS, ...DYNAMIC, ...LEXING, ...PRIVILEGED, ...EFFECTS, ...CATALOGS, ...ESCAPES, ...ROUTINES];
};

/** Stored routines and views for the function-effect cases (created directly, as root). */
const ROUTINE_DDL = (d: string, o: string) => [
  `CREATE FUNCTION ${d}.liar() RETURNS int READS SQL DATA BEGIN DELETE FROM ${d}.orders WHERE id = 1; RETURN 1; END`,
  `CREATE FUNCTION ${d}.nosql_update() RETURNS int NO SQL DETERMINISTIC BEGIN UPDATE ${d}.orders SET status = 'x' WHERE id = 2; RETURN 1; END`,
  `CREATE PROCEDURE ${d}.writer_proc() INSERT INTO ${d}.t VALUES (1000, 'from a procedure')`,
  `CREATE FUNCTION ${d}.calls_proc() RETURNS int CONTAINS SQL BEGIN CALL writer_proc(); RETURN 1; END`,
  `CREATE FUNCTION ${d}.nested_liar() RETURNS int READS SQL DATA DETERMINISTIC RETURN liar() + 0`,
  `CREATE FUNCTION ${d}.locker() RETURNS int NOT DETERMINISTIC NO SQL RETURN GET_LOCK('sluice_l', 0)`,
  `CREATE FUNCTION ${d}.seq_fn() RETURNS bigint READS SQL DATA RETURN NEXTVAL(s)`,
  `CREATE FUNCTION ${d}.json_wipe() RETURNS int READS SQL DATA BEGIN DELETE FROM ${d}.orders WHERE id = 3; RETURN 1; END`,
  `CREATE FUNCTION ${d}.format_bytes(x int) RETURNS text READS SQL DATA BEGIN DELETE FROM ${d}.orders WHERE id = x; RETURN 'x'; END`,
  `CREATE FUNCTION ${o}.wipe() RETURNS int READS SQL DATA BEGIN DELETE FROM ${o}.secrets; RETURN 1; END`,
  `CREATE FUNCTION ${d}.via_other() RETURNS int READS SQL DATA RETURN ${o}.wipe()`,
  `CREATE FUNCTION ${d}.sets_session() RETURNS int NO SQL BEGIN SET SESSION wait_timeout = 28799; RETURN 1; END`,
  `CREATE FUNCTION ${d}.safe_count() RETURNS int READS SQL DATA DETERMINISTIC RETURN (SELECT count(*) FROM ${d}.t)`,
  `CREATE FUNCTION ${d}.peek_users() RETURNS text READS SQL DATA RETURN (SELECT GROUP_CONCAT(User) FROM mysql.user)`,
  `CREATE FUNCTION ${d}.safe_local(k int) RETURNS varchar(50) READS SQL DATA BEGIN DECLARE n int DEFAULT 0; DECLARE w varchar(50); SET n = k + 1; SELECT v INTO w FROM ${d}.t WHERE id = n; RETURN CONCAT(w, '!'); END`,
  `CREATE FUNCTION ${d}.safe_nested() RETURNS int NO SQL RETURN safe_count() + JSON_LENGTH('[1]')`,
  `CREATE VIEW ${d}.v_liar AS SELECT liar() AS x`,
  `CREATE VIEW ${d}.v_of_v AS SELECT x FROM ${d}.v_liar`,
  `CREATE VIEW ${d}.v_safe AS SELECT safe_count() AS n, safe_local(2) AS w`,
  `CREATE FUNCTION ${d}.via_view() RETURNS int READS SQL DATA RETURN (SELECT x FROM ${d}.v_liar)`,
  `CREATE FUNCTION ${d}.peek_other() RETURNS text READS SQL DATA RETURN (SELECT GROUP_CONCAT(v) FROM ${o}.secrets)`,
  `CREATE VIEW ${d}.v_users AS SELECT User FROM mysql.user`,
];

/** What must not change, read beside the gateway (lock waits time out rather than hang). */
async function state(): Promise<string> {
  const r = await root();
  try {
    await r.query('SET SESSION lock_wait_timeout = 3');
    const [open] = (await r.query(`SHOW OPEN TABLES FROM ${db} WHERE In_use > 0`)) as unknown as [unknown[]];
    const [[row]] = (await r.query(`SELECT
      (SELECT GROUP_CONCAT(table_name ORDER BY table_name) FROM information_schema.tables WHERE table_schema = '${db}') AS tables,
      (SELECT count(*) FROM ${db}.t) AS t_rows, (SELECT count(*) FROM ${db}.orders) AS orders_rows,
      (SELECT GROUP_CONCAT(status ORDER BY id) FROM ${db}.orders) AS statuses,
      (SELECT next_not_cached_value FROM ${db}.s) AS seq, (SELECT count(*) FROM ${other}.secrets) AS secrets,
      IS_USED_LOCK('sluice_l') AS named_lock,
      (SELECT count(*) FROM information_schema.processlist WHERE id <> CONNECTION_ID() AND db = '${db}' AND (state IN ('User sleep', 'User lock') OR (command = 'Query' AND time >= 2))) AS busy,
      @@global.max_connections AS max_conn, @@global.wait_timeout AS wait_timeout, @@global.sql_mode AS global_mode, @@global.general_log AS general_log,
      (SELECT count(*) FROM mysql.user) AS users,
      (SELECT GROUP_CONCAT(schema_name ORDER BY schema_name) FROM information_schema.schemata WHERE schema_name LIKE '${db}%') AS dbs`)) as any;
    return JSON.stringify({ ...row, open_tables: open.length });
  } catch (e) {
    return `state unreadable: ${(e as Error).message}`;
  } finally {
    await r.end();
  }
}

/** The session's own lexing state and database, asked through the gateway. */
const SESSION_SQL = 'SELECT @@session.sql_mode AS m, @@character_set_client AS c, @@character_set_connection AS cc, DATABASE() AS d';

const connect = (password: string, extra: Record<string, unknown> = {}) =>
  mysql.createConnection({ host: '127.0.0.1', port, user: 'agent', password, database: db, enableCleartextPlugin: true, multipleStatements: true, ...extra } as mysql.ConnectionOptions);

beforeAll(async () => {
  const tag = crypto.randomBytes(4).toString('hex');
  db = `sluice_gm_${tag}`;
  other = `sluice_gm_${tag}_other`;
  upper = db.toUpperCase();
  const r = await root();
  await r.query(`CREATE DATABASE ${db}; CREATE DATABASE ${other}; CREATE DATABASE ${upper}; CREATE TABLE ${upper}.secrets (v varchar(20)); USE ${db};
    CREATE TABLE t (id int PRIMARY KEY, v varchar(50)) ENGINE=InnoDB;
    INSERT INTO t SELECT seq, CONCAT('row ', seq) FROM seq_1_to_10;
    CREATE TABLE orders (id int PRIMARY KEY, status varchar(20)) ENGINE=InnoDB;
    INSERT INTO orders SELECT seq, 'new' FROM seq_1_to_5;
    CREATE SEQUENCE s NOCACHE;
    CREATE SEQUENCE s2 NOCACHE;
    CREATE TABLE ${other}.secrets (v varchar(20));
    INSERT INTO ${other}.secrets VALUES ('s3cret');`);
  await r.query(`CREATE FUNCTION ${db}.bump() RETURNS int MODIFIES SQL DATA BEGIN INSERT INTO ${db}.t SELECT MAX(id) + 1, 'bumped' FROM ${db}.t; RETURN 1; END`);
  for (const sql of ROUTINE_DDL(db, other)) await r.query(sql);
  await r.end();
  t = await startTestGateway({
    embedded: true,
    policy: fs.readFileSync('examples/policy.yaml', 'utf8'),
    config: `mysql: { listen: { port: 0 }, upstream: { host: ${MY.host}, port: ${MY.port}, user: ${MY.user}, sslmode: disable, databases: [${db}] } }`,
  });
  port = t.gw.mysqlPort!;
  [agent, analyst, dba] = await Promise.all([t.key('agent', ['analysts'], { name: 'guard-agent' }), t.key('human', ['analysts'], { name: 'guard-analyst' }), t.key('human', ['dba'], { name: 'guard-dba' })]);
}, 300_000);

afterAll(async () => {
  await t?.stop();
  const r = await root();
  await r.query(`DROP DATABASE IF EXISTS ${db}; DROP DATABASE IF EXISTS ${other}; DROP DATABASE IF EXISTS ${upper}; DROP USER IF EXISTS sluice_guard_evil`);
  await r.end();
});

type Runner = (c: mysql.Connection, sql: string) => Promise<unknown>;

/** A statement that has not answered in 8 s (a sleep or a lock wait that got through) ends its connection. */
function within<T>(p: Promise<T>, c: mysql.Connection): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      c.destroy();
      reject(new Error('no answer within 8 s'));
    }, 8000);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Run every case through one protocol; the leaks found (not refused, session state changed, database changed). */
async function leaksThrough(run: Runner): Promise<string[]> {
  const leaks: string[] = [];
  const base = await connect(agent);
  const [[session0]] = (await base.query(SESSION_SQL)) as any;
  await base.end();
  const before = await state();
  for (const steps of cases()) {
    const label = steps.join(' ⏎ ');
    const c = await connect(agent);
    c.on('error', () => undefined);
    try {
      const errors: string[] = [];
      for (const s of steps) {
        const e = await within(run(c, s), c).then(() => undefined, (err: { errno?: number; message: string }) => err);
        if (e) errors.push(`${e.errno} ${e.message}`);
      }
      if (!errors.some((e) => /Sluice/.test(e))) leaks.push(`${label}: not refused (${errors.join('; ') || 'ran'})`);
      const [[session]] = (await within(c.query(SESSION_SQL), c).catch((e) => [[{ error: String(e.message) }]])) as any;
      if (JSON.stringify(session) !== JSON.stringify(session0)) leaks.push(`${label}: session state ${JSON.stringify(session0)} -> ${JSON.stringify(session)}`);
      const after = await state();
      if (after !== before) leaks.push(`${label}: changed ${before} -> ${after}`);
    } finally {
      c.destroy();
    }
  }
  return leaks;
}

describe('adversarial MySQL guard suite: every case through the text protocol and as a prepared statement', () => {
  it(`has ${cases().length} cases (at least 60), ${cases().filter((c) => c.length > 1).length} of them several statements in one session`, () => {
    expect(cases().length).toBeGreaterThanOrEqual(60);
  });

  it('every case is refused through the text protocol (COM_QUERY) and nothing changes', async () => {
    expect(await leaksThrough((c, sql) => c.query(sql))).toEqual([]);
  }, 900_000);

  it('every case is refused as a prepared statement (COM_STMT_PREPARE/EXECUTE) and nothing changes', async () => {
    expect(await leaksThrough((c, sql) => c.execute(sql))).toEqual([]);
  }, 900_000);

  it('names what it refuses, and audits it (the function and its class, the setting, unsupported statements, KILL and USE)', async () => {
    const c = await connect(agent);
    try {
      const err = (sql: string) => c.query(sql).then(() => undefined, (e: { errno: number; message: string }) => e);
      expect(await err('SET NAMES gbk')).toMatchObject({ errno: 1142, message: expect.stringContaining('character set "gbk" is not allowed through Sluice') });
      expect(await err("SET sql_mode = 'NO_BACKSLASH_ESCAPES'")).toMatchObject({ message: expect.stringContaining('sql_mode NO_BACKSLASH_ESCAPES is not allowed through Sluice') });
      expect(await err("SET sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')")).toMatchObject({ message: expect.stringContaining('sql_mode can only be set to a constant') });
      expect(await err('PREPARE p FROM @v')).toMatchObject({ message: expect.stringContaining('not supported by Sluice: SQL-level PREPARE ... FROM something other than string literals') });
      expect(await err('EXECUTE nothing_prepared')).toMatchObject({ message: expect.stringContaining('not prepared through Sluice') });
      expect(await err('SET CHARACTER SET utf8mb4')).toMatchObject({ message: expect.stringContaining('not supported by Sluice') });
      expect(await err('SELECT SLEEP(3600)')).toMatchObject({ errno: 1142, message: expect.stringMatching(/agents-read-only.*class write/) });
      expect(await err('SET GLOBAL max_connections = @@global.max_connections')).toMatchObject({ message: expect.stringMatching(/agents-read-only.*class admin/) });
      expect(await err(`SELECT * FROM ${other}.secrets`)).toMatchObject({ message: expect.stringContaining(`database "${other}" is not served by this Sluice gateway`) });
      expect(await err('SELECT * FROM mysql.user')).toMatchObject({ message: expect.stringContaining('secrets-and-server-settings-dba-only') });
      expect(await err('KILL 999999999')).toMatchObject({ errno: 1094 });
      expect(await err('USE mysql')).toMatchObject({ errno: 1044 });
      const [ok] = await c.query('SELECT 1 AS one');
      expect(ok).toEqual([{ one: 1 }]);
    } finally {
      await c.end();
    }
    const denied = await auditEvents(t, { subject: 'agent:guard-agent', type: 'statement', decision: 'deny', limit: 5000 });
    expect(denied.find((e) => e.sql === 'SELECT SLEEP(3600)')).toMatchObject({ rule: 'agents-read-only', classes: ['write'], flags: expect.arrayContaining(['volatile-function']) });
    expect(denied.find((e) => e.sql === 'SET NAMES gbk')).toMatchObject({ rule: 'sluice-guard' });
    expect(denied.find((e) => e.sql === 'LOCK TABLES t WRITE')).toMatchObject({ rule: 'agents-read-only', classes: ['write'], flags: expect.arrayContaining(['locking']) });
    expect(denied.find((e) => e.sql === 'WITH d AS (SELECT id FROM orders) DELETE FROM orders WHERE id IN (SELECT id FROM d)')).toMatchObject({ classes: ['write'], flags: expect.arrayContaining(['data-modifying-cte']) });
    expect(denied.find((e) => e.sql === 'KILL 999999999')).toMatchObject({ rule: 'own-connection-kill' });
    expect(denied.find((e) => e.sql === 'USE mysql')).toMatchObject({ rule: 'database-not-served' });
    expect(denied.find((e) => e.sql === 'USE mysql' && e.protocol === 'mysql-prepared')).toMatchObject({ rule: 'sluice-guard' });
  });
});

describe('login character set', () => {
  it.each(['GBK_CHINESE_CI', 'BIG5_CHINESE_CI', 'SJIS_JAPANESE_CI', 'CP932_JAPANESE_CI'])('a handshake in %s is refused with a clear error; utf8mb4 and latin1 pass', async (charset) => {
    const e = await connect(agent, { charset }).then((c) => c.end().then(() => undefined), (err: Error) => err);
    expect(e?.message).toMatch(/client character set \(collation id \d+\) is not allowed through Sluice/);
    for (const ok of ['UTF8MB4_GENERAL_CI', 'LATIN1_SWEDISH_CI', 'CP1251_GENERAL_CI', 'KOI8R_GENERAL_CI', 'LATIN2_GENERAL_CI']) {
      const c = await connect(agent, { charset: ok });
      expect((await c.query('SELECT 1 AS one'))[0]).toEqual([{ one: 1 }]);
      await c.end();
    }
  });
});

describe('benign traffic still passes', () => {
  it('ordinary settings, harmless built-ins, backslashes and quotes, constant EXECUTE IMMEDIATE of a read, information_schema, USE of a served database', async () => {
    const c = await connect(analyst);
    try {
      const sqls = [
        'SET NAMES utf8mb4', "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_bin'", "SET sql_mode = 'STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION'", 'SET sql_mode = TRADITIONAL',
        "SET character_set_client = 'latin1'", "SET character_set_client = 'utf8mb4'", 'SET @x = 5',
        // What a mysql2 session reads back from @@sql_mode and puts back (it asked for CLIENT_IGNORE_SPACE).
        "SET sql_mode = 'IGNORE_SPACE,STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION'", "SET time_zone = '+00:00'", 'SET autocommit = 1',
        "SELECT upper(v), concat(v, 'x'), length(v), NOW(), DATABASE(), COALESCE(NULL, 1), JSON_OBJECT('a', 1) FROM t LIMIT 1",
        "SELECT 'a\\'b', \"c\\\"d\", 'héllo ✓'", "EXECUTE IMMEDIATE 'SELECT 1'", 'SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()',
        `USE ${db}`, 'SELECT 1 /*M!100100 + 1 */ AS two',
        // How dump files put settings back: the variable is read on the session and the constant judged.
        'SET @saved_mode = @@sql_mode', 'SET sql_mode = @saved_mode', 'SET @saved_cs = @@character_set_client', '/*!40101 SET character_set_client = @saved_cs */', "SELECT IS_FREE_LOCK('sluice_l')", 'UNLOCK TABLES', "SELECT 'it''s /*M! DROP TABLE t */', \"/*M! ; DELETE FROM orders */\"",
      ];
      for (const sql of sqls) {
        const e = await c.query(sql).then(() => undefined, (err: Error) => err.message);
        expect(e, sql).toBeUndefined();
      }
      const [[two]] = (await c.query('SELECT 1 /*M!100100 + 1 */ AS two')) as any;
      expect(Number(two.two)).toBe(2);
      const [[s]] = (await c.query("SELECT 'a\\'b' AS s")) as any;
      expect(s.s).toBe("a'b");
      const [prepared] = await c.execute('SELECT v FROM t WHERE id = ?', [3]);
      expect(prepared).toEqual([{ v: 'row 3' }]);
    } finally {
      await c.end();
    }
  });

  it('a prepared SET of a lexing setting is judged at each execution by the value it binds', async () => {
    const c = await connect(agent);
    c.on('error', () => undefined);
    try {
      const [[session0]] = (await c.query(SESSION_SQL)) as any;
      const before = await state();
      const bad: [string, unknown][] = [
        ['SET character_set_client = ?', 'gbk'], ['SET @@session.character_set_connection = ?', 'big5'], ['SET sql_mode = ?', 'ANSI_QUOTES'],
        ['SET SESSION sql_mode = ?', 'STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES'], ['SET sql_mode = ?', 4], ['SET character_set_client = ?', 28],
        ['SET collation_connection = ?', 'sjis_japanese_ci'], ['SET character_set_results = ?', null], ['SET character_set_client = ?', Buffer.from('gbk')],
      ];
      for (const [sql, value] of bad) {
        await expect(c.execute(sql, [value]), `${sql} ${String(value)}`).rejects.toMatchObject({ errno: 1142, message: expect.stringContaining('Sluice') });
        const [[session]] = (await c.query(SESSION_SQL)) as any;
        expect(session, `${sql} ${String(value)}`).toEqual(session0);
      }
      expect(await state()).toBe(before);
      // As mysql2's test-charset-results does: the value is an ASCII-safe character set.
      for (const cs of ['cp1251', 'koi8r', 'utf8mb4']) {
        await c.execute('SET character_set_results = ?', [cs]);
        const [[row]] = (await c.query('SELECT @@character_set_results AS r')) as any;
        expect(row.r).toBe(cs);
      }
    } finally {
      c.destroy();
    }
  });

  it("text Sluice cannot parse gets the server's own syntax error when the server cannot parse it either (nothing runs); Sluice's refusal when it can", async () => {
    const errOf = (p: Promise<unknown>) => p.then(() => undefined, (e: { errno: number; message: string }) => ({ errno: e.errno, message: e.message }));
    for (const charset of ['UTF8MB4_GENERAL_CI', 'KOI8R_GENERAL_CI']) {
      const c = await connect(dba, { charset });
      const d = await mysql.createConnection({ ...MY, database: db, charset, multipleStatements: true });
      try {
        for (const sql of ['SELECT * FROM `МояТаблица', 'SELEC 1', "SELECT v FROM t WHERE v = 'x' AND", 'SELECT 1 +']) {
          const through = await errOf(c.query(sql));
          expect(through, sql).toEqual(await errOf(d.query(sql)));
          expect(through?.errno, sql).toBe(1064);
        }
        // Several statements: directly the DELETE would run before the error; through Sluice nothing runs.
        const before = await state();
        expect(await errOf(c.query('DELETE FROM orders WHERE id = 1; SELEC 1'))).toMatchObject({ errno: 1064 });
        expect(await state()).toBe(before);
        // The server can parse it, Sluice cannot: Sluice's refusal.
        expect(await errOf(c.query('SELECT v FROM t WHERE id = 1 LOCK IN SHARE MODE'))).toMatchObject({ errno: 1064, message: expect.stringContaining('Sluice could not parse this statement') });
        expect((await c.query('SELECT 1 AS one'))[0]).toEqual([{ one: 1 }]);
      } finally {
        await c.end();
        await d.end();
      }
    }
    const ev = (await auditEvents(t, { subject: 'human:guard-dba', type: 'statement', decision: 'deny', limit: 5000 })).find((e) => e.sql === 'SELEC 1');
    expect(ev).toMatchObject({ rule: 'unparsable' });
  });

  it('PREPARE name FROM a literal answers as directly; EXECUTE is judged and audited as the prepared text; DEALLOCATE forgets it', async () => {
    const c = await connect(analyst);
    const d = await root();
    try {
      await d.query(`USE ${db}`);
      const steps = ["PREPARE q FROM 'SELECT v, \\'a\\\\nb\\' AS s, \"x\" ''y'' AS c FROM t WHERE id = ?'", 'SET @i = 3', 'EXECUTE q USING @i', 'EXECUTE Q USING 4', "PREPARE q FROM 'SELECT 2 AS two'", 'EXECUTE q'];
      for (const sql of steps) {
        const [through] = await c.query(sql);
        const [direct] = await d.query(sql);
        expect(through, sql).toEqual(direct);
      }
      expect((await c.query('execute `Q`'))[0]).toEqual([{ two: 2 }]);
      await c.query('DEALLOCATE PREPARE q');
      await expect(c.query('EXECUTE q')).rejects.toThrow(/not prepared through Sluice/);
    } finally {
      await c.end();
      await d.end();
    }
    const ev = (await auditEvents(t, { subject: 'human:guard-analyst', type: 'statement', decision: 'allow', limit: 1000 })).find((e) => e.sql === 'EXECUTE Q USING 4');
    expect(ev).toMatchObject({ tables: ['t'], classes: ['read'] });
  });

  it('a DBA may move a sequence; the audit records it as a write with volatile-function', async () => {
    const c = await connect(dba);
    try {
      const [[r]] = (await c.query('SELECT NEXTVAL(s2) AS n')) as any;
      expect(Number(r.n)).toBe(1);
    } finally {
      await c.end();
    }
    const ev = (await auditEvents(t, { subject: 'human:guard-dba', type: 'statement', decision: 'allow', limit: 1000 })).find((e) => e.sql === 'SELECT NEXTVAL(s2) AS n');
    expect(ev).toMatchObject({ classes: ['write'], flags: expect.arrayContaining(['volatile-function']) });
  });
});

describe('stored functions judged from the catalog (information_schema.ROUTINES and the bodies)', () => {
  const err = (c: mysql.Connection, sql: string) => c.query(sql).then(() => undefined, (e: { errno: number; message: string }) => e);

  it('functions that only read pass as reads, for an agent too, and answer as directly (also through views and prepared)', async () => {
    const c = await connect(agent);
    const d = await root();
    try {
      await d.query(`USE ${db}`);
      for (const sql of ['SELECT safe_count() AS n', `SELECT ${db}.safe_count() AS n`, 'SELECT safe_local(3) AS w', 'SELECT safe_nested() AS n', 'SELECT * FROM v_safe', 'SELECT id, safe_local(id) AS w FROM t WHERE id < 3 ORDER BY id']) {
        const [through] = await c.query(sql);
        const [direct] = await d.query(sql);
        expect(through, sql).toEqual(direct);
        const [prepared] = await c.execute(sql);
        expect(prepared, sql).toEqual(direct);
      }
    } finally {
      await c.end();
      await d.end();
    }
    const ev = (await auditEvents(t, { subject: 'agent:guard-agent', type: 'statement', decision: 'allow', limit: 5000 })).find((e) => e.sql === 'SELECT safe_local(3) AS w');
    expect(ev).toMatchObject({ classes: ['read'] });
    expect(ev?.flags ?? []).not.toContain('volatile-function');
  });

  it('names what a refused function does, audits it, and the session stays usable', async () => {
    const c = await connect(agent);
    try {
      const cases: [string, RegExp][] = [
        ['SELECT liar()', /liar\(\) is a stored function that runs DELETE on .*orders/],
        ['SELECT nested_liar()', /nested_liar\(\) is a stored function that calls liar\(\), which runs DELETE/],
        ['SELECT calls_proc()', /calls procedure writer_proc, which runs INSERT/],
        ['SELECT json_wipe()', /json_wipe\(\) may run the stored function .*json_wipe, which runs DELETE/],
        ['SELECT via_other()', /calls .*wipe\(\), which runs DELETE on .*secrets/],
        ['SELECT sets_session()', /sets wait_timeout/],
        ['SELECT * FROM v_of_v', /view v_of_v reads view .*v_liar, which calls liar\(\), which runs DELETE/],
        ['SELECT via_view()', /via_view\(\) is a stored function that reads view .*v_liar, which calls liar\(\), which runs DELETE/],
        ['SELECT no_such_function()', /no_such_function\(\) is not a stored function Sluice knows in /],
      ];
      for (const [sql, why] of cases) {
        const e = await err(c, sql);
        expect(e, sql).toMatchObject({ errno: 1142, message: expect.stringMatching(/agents-read-only.*class write\); effects: /) });
        expect(e?.message, sql).toMatch(why);
        const [ok] = await c.query('SELECT 1 AS one');
        expect(ok).toEqual([{ one: 1 }]);
        const ev = (await auditEvents(t, { subject: 'agent:guard-agent', type: 'statement', decision: 'deny', limit: 5000 })).find((x) => x.sql === sql);
        expect(ev, sql).toMatchObject({ rule: 'agents-read-only', classes: ['write'], flags: expect.arrayContaining(['volatile-function']) });
      }
    } finally {
      await c.end();
    }
  });

  it('DROP PROCEDURE and CREATE PROCEDURE in one text (as mysql2 tests send it) run for a DBA and answer as directly; the analysis reads both', async () => {
    const text = (name: string) => `DROP PROCEDURE IF EXISTS ${name}; CREATE PROCEDURE ${name}() BEGIN SELECT 1 AS a; SELECT 'x;y' AS b FROM t WHERE id = 2; END`;
    const c = await connect(dba);
    const d = await root();
    try {
      await d.query(`USE ${db}`);
      await c.query(text('two_sets_sluice'));
      await d.query(text('two_sets_direct'));
      // CALL is class other, which examples/policy.yaml gives nobody: both procedures are called directly.
      const [through] = await d.query('CALL two_sets_sluice()');
      const [direct] = await d.query('CALL two_sets_direct()');
      expect(JSON.stringify(through)).toBe(JSON.stringify(direct));
    } finally {
      await c.end();
      await d.query('DROP PROCEDURE IF EXISTS two_sets_sluice; DROP PROCEDURE IF EXISTS two_sets_direct');
      await d.end();
    }
    const ev = (await auditEvents(t, { subject: 'human:guard-dba', type: 'statement', decision: 'allow', limit: 5000 })).find((e) => e.sql === text('two_sets_sluice'));
    expect(ev).toMatchObject({ commands: ['DROP PROCEDURE', 'CREATE PROCEDURE'], classes: ['ddl'], flags: expect.arrayContaining(['multi-statement', 'stored-program-body']) });
  });

  it('a function created or replaced through Sluice is judged by its new body at the next statement, in the same session and in others', async () => {
    const r = await root();
    await r.query(`CREATE TABLE ${db}.fresh_log (n int)`);
    const c = await connect(dba);
    const a = await connect(agent);
    try {
      const classOf = async (sql: string) => {
        await c.query(sql);
        const ev = (await auditEvents(t, { subject: 'human:guard-dba', type: 'statement', decision: 'allow', limit: 5000 })).filter((e) => e.sql === sql).at(-1);
        return ev?.classes;
      };
      const harmless = 'CREATE OR REPLACE FUNCTION fresh() RETURNS int READS SQL DATA RETURN (SELECT count(*) FROM t)';
      const harmful = 'CREATE OR REPLACE FUNCTION fresh() RETURNS int READS SQL DATA BEGIN INSERT INTO fresh_log VALUES (1); RETURN 1; END';
      await c.query(harmless);
      expect(await classOf('SELECT fresh() AS a')).toEqual(['read']);
      expect(await err(a, 'SELECT fresh() AS a')).toBeUndefined();
      await c.query(harmful);
      expect(await classOf('SELECT fresh() AS b')).toEqual(['write']);
      expect(await err(a, 'SELECT fresh() AS b')).toMatchObject({ errno: 1142, message: expect.stringContaining('agents-read-only') });
      await c.query(harmless);
      expect(await classOf('SELECT fresh() AS c')).toEqual(['read']);
      // In the same text as the DDL (EXECUTE IMMEDIATE of CREATE FUNCTION), the call cannot be judged before it ran.
      await c.query("EXECUTE IMMEDIATE 'CREATE OR REPLACE FUNCTION fresh() RETURNS int READS SQL DATA RETURN 2'; SELECT fresh() AS d");
      const ev = (await auditEvents(t, { subject: 'human:guard-dba', type: 'statement', decision: 'allow', limit: 5000 })).find((e) => String(e.sql).endsWith('SELECT fresh() AS d'));
      expect(ev?.classes).toEqual(expect.arrayContaining(['write']));
      const [[n]] = (await r.query(`SELECT count(*) AS n FROM ${db}.fresh_log`)) as any;
      expect(Number(n.n)).toBe(1);
      // A view replaced through Sluice: the agent's next read of it is judged by the new definition.
      await c.query('CREATE OR REPLACE VIEW v_fresh AS SELECT safe_count() AS x');
      expect(await err(a, 'SELECT x FROM v_fresh')).toBeUndefined();
      await c.query('CREATE OR REPLACE VIEW v_fresh AS SELECT fresh() + liar() AS x');
      expect(await err(a, 'SELECT x FROM v_fresh')).toMatchObject({ errno: 1142, message: expect.stringContaining('view v_fresh') });

    } finally {
      await c.end();
      await a.end();
      await r.query(`DROP TABLE ${db}.fresh_log; DROP VIEW IF EXISTS ${db}.v_fresh; DROP FUNCTION IF EXISTS ${db}.fresh`);
      await r.end();
    }
  });
});

describe('what the analysis says (the classes and flags policy rules match on)', () => {
  beforeAll(() => loadMysqlParser());
  const one = (sql: string) => {
    const r = analyzeMysql(sql);
    if (!r.ok) throw new Error(r.error);
    return r;
  };
  it('classes, flags and refusals', () => {
    expect(one('SELECT 1 /*M!100100 ; DROP TABLE t */').statements.map((s) => s.command)).toEqual(['SELECT', 'DROP TABLE']);
    expect(one('LOCK TABLES t WRITE').statements[0]).toMatchObject({ class: 'write', flags: ['locking'], tables: [{ name: 't', access: 'write' }] });
    expect(one('UNLOCK TABLES').classes).toEqual(['session']);
    expect(one('SET GLOBAL wait_timeout = 5').statements[0]).toMatchObject({ class: 'admin', flags: ['privileged-setting'] });
    // A GLOBAL modifier applies to the assignments after it.
    expect(one('SET GLOBAL wait_timeout = 5, max_connections = 9').classes).toEqual(['admin']);
    expect(one('SET SESSION wait_timeout = 5, @x = 1').classes).toEqual(['session']);
    expect(one('SELECT SLEEP(1)').statements[0]).toMatchObject({ class: 'write', flags: ['volatile-function'], effects: ['sleep() holds the connection busy'] });
    expect(one('SELECT NEXT VALUE FOR s').statements[0]).toMatchObject({ class: 'write', effects: ['nextval() moves a sequence'] });
    expect(one('SELECT my_fn(1)').statements[0]!.effects).toEqual([expect.stringContaining('not a known built-in')]);
    expect(one('SELECT upper(v), NOW(), JSON_OBJECT("a", 1), COUNT(*) FROM t').statements[0]).toMatchObject({ class: 'read', flags: [] });
    expect(one('WITH d AS (SELECT id FROM o) DELETE FROM t WHERE id IN (SELECT id FROM d)').statements[0]).toMatchObject({ command: 'DELETE', class: 'write', tables: [{ name: 't', access: 'write' }, { name: 'o', access: 'read' }] });
    expect(one('SELECT * FROM mysql.user').flags).toContain('sensitive-catalog');
    expect(one('SELECT * FROM information_schema.tables').flags).toEqual([]);
    expect(one('SHOW TABLES FROM mysql').tables).toEqual(['mysql.*']);
    expect(one('SHOW GRANTS').statements[0]).toMatchObject({ command: 'SHOW GRANTS', class: 'read', flags: ['sensitive-catalog'] });
    expect(one("EXECUTE IMMEDIATE 'DELETE FROM t'").statements[0]).toMatchObject({ command: 'EXECUTE IMMEDIATE DELETE', class: 'write', destructive: ['DELETE without WHERE'], flags: ['dynamic-sql'] });
    expect(one("EXECUTE IMMEDIATE CONCAT('SELECT', ' 1')").statements[0]!.refuse).toMatch(/not a constant/);
    expect(one("SET sql_mode = 'STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION'").statements[0]!.refuse).toBeUndefined();
    expect(one("SET sql_mode = 'STRICT_TRANS_TABLES,ANSI_QUOTES'").statements[0]!.refuse).toMatch(/sql_mode ANSI_QUOTES is not allowed/);
    expect(one('SET NAMES latin1').statements[0]!.refuse).toBeUndefined();
    expect(one('SET NAMES gbk').statements[0]!.refuse).toMatch(/character set "gbk"/);
    expect(analyzeMysql("XA START 'x'")).toMatchObject({ ok: false, error: expect.stringContaining('not supported by Sluice') });
  });
  it('which DDL makes the routine catalog be read again (routines, views, databases, renames) and which does not', () => {
    const commands = (sql: string) => one(sql).statements.map((s) => s.command);
    for (const sql of ['CREATE FUNCTION f() RETURNS int RETURN 1', 'DROP FUNCTION IF EXISTS f', 'DROP PROCEDURE p', 'CREATE OR REPLACE VIEW v AS SELECT 1', 'ALTER VIEW v AS SELECT 2', 'DROP VIEW v', 'DROP DATABASE d', 'DROP SCHEMA d', 'CREATE DATABASE d', 'RENAME TABLE a TO b', "EXECUTE IMMEDIATE 'CREATE FUNCTION g() RETURNS int RETURN 1'", 'CREATE DEFINER=root@localhost VIEW v AS SELECT 1']) {
      expect(changesRoutines(commands(sql)), sql).toBe(true);
    }
    for (const sql of ['CREATE TABLE t (a int)', 'ALTER TABLE t ADD COLUMN b int', 'CREATE INDEX i ON t (a)', 'DROP TABLE t', 'TRUNCATE t', 'CREATE SEQUENCE s2']) expect(changesRoutines(commands(sql)), sql).toBe(false);
    expect(changesRoutines(undefined)).toBe(true);
  });
  it('MariaDB executable comments are read as SQL, the same comment text in strings and identifiers is not', () => {
    expect(forParser("SELECT '/*M! x */', `/*M!1`, \"/*M!\" /*M!100100 1 */")).toBe("SELECT '/*M! x */', `/*M!1`, \"/*M!\" /*!        1 */");
    expect(forParser("SELECT 'a\\' /*M! ; DROP TABLE t */ '")).toBe("SELECT 'a\\' /*M! ; DROP TABLE t */ '");
    expect(one("SELECT 'a\\' /*M! ; DROP TABLE t */ '").statements).toHaveLength(1);
    expect(one("SELECT 'a\\\\' /*M! ; DROP TABLE t */").statements).toHaveLength(2);
    expect(one('SELECT 1 -- /*M! ; DROP TABLE t */').statements).toHaveLength(1);
  });
  it('login character sets: utf8/utf8mb4/latin1/ascii/binary collations pass, multibyte sets with ASCII trail bytes do not', () => {
    for (const id of [8, 33, 45, 46, 63, 83, 224, 255, 51, 7, 9]) expect(handshakeCharsetRefusal(id)).toBeUndefined();
    for (const id of [1, 13, 28, 84, 87, 88, 95, 96]) expect(handshakeCharsetRefusal(id)).toMatch(/not allowed through Sluice/);
  });
});

/**
 * Session settings the server changes without the statement text saying so: a stored procedure or function that
 * runs SET NAMES, SET sql_mode or SET character_set_client, a setting put back to DEFAULT, COM_RESET_CONNECTION. The
 * gateway reads the changes the server reports (session tracking, or the session's state read again when a result
 * set's EOF says it changed): a state Sluice cannot parse under ends the session with the reason, audited, before
 * anything else runs. The caller here may CALL procedures and SELECT (its own policy), and never DELETE.
 */
describe('session state changed by the server, unseen in the text (session tracking)', () => {
  let g: TestGateway;
  let caller: string;
  const DESYNC_BACKSLASH = "SELECT 'a\\'; DELETE FROM orders; -- '";
  const DESYNC_ANSI = 'SELECT "a\\"; DELETE FROM orders; -- "';
  const connectTo = (gw: TestGateway, key: string) =>
    mysql.createConnection({ host: '127.0.0.1', port: gw.gw.mysqlPort!, user: 'caller', password: key, database: db, enableCleartextPlugin: true, multipleStatements: true } as mysql.ConnectionOptions);

  beforeAll(async () => {
    const r = await root();
    await r.query(`USE ${db};
      CREATE PROCEDURE names_gbk() SET NAMES gbk;
      CREATE PROCEDURE results_big5() SET character_set_results = 'big5';
      CREATE PROCEDURE ansi() SET sql_mode = 'ANSI_QUOTES';
      CREATE PROCEDURE nbe() EXECUTE IMMEDIATE 'SET sql_mode = ''NO_BACKSLASH_ESCAPES''';
      CREATE PROCEDURE client_gbk() SET character_set_client = 'gbk';
      CREATE FUNCTION names_gbk_fn() RETURNS int BEGIN SET NAMES gbk; RETURN 1; END`);
    await r.end();
    g = await startTestGateway({
      policy: policyYaml({ default: 'deny', rules: [rules.session(), { name: 'caller', match: { kinds: ['agent'], commands: ['CALL', 'SELECT'] }, action: 'allow' }] }),
      config: `mysql: { listen: { port: 0 }, upstream: { host: ${MY.host}, port: ${MY.port}, user: ${MY.user}, sslmode: disable, databases: [${db}] } }`,
    });
    caller = await g.key('agent', ['analysts'], { name: 'tracking-caller' });
  }, 300_000);
  afterAll(() => g?.stop());

  /** One case in a fresh session: the errors of its statements, the session's state read afterwards, and whether anything changed. */
  async function runCase(steps: readonly string[], prepared: boolean) {
    const before = await state();
    const c = await connectTo(g, caller);
    c.on('error', () => undefined);
    const errors: string[] = [];
    try {
      for (const sql of steps) {
        const e = await within((prepared ? c.execute(sql) : c.query(sql)) as Promise<unknown>, c).then(() => undefined, (err: Error) => err.message);
        if (e) errors.push(e);
      }
      const session = await within(c.query(SESSION_SQL), c).then(([[row]]: any) => row, (e: Error) => ({ error: e.message }));
      return { errors, session, changed: (await state()) !== before };
    } finally {
      c.destroy();
    }
  }

  it.each([false, true])('a procedure or function leaving the results in gbk or big5 ends the session with the reason, audited; nothing after it runs (prepared: %s)', async (prepared) => {
    const cases: [string[], string][] = [
      [['CALL names_gbk()', DESYNC_BACKSLASH], "character_set_results = 'gbk'"],
      [['CALL results_big5()', 'SELECT 1'], "character_set_results = 'big5'"],
      [['SELECT names_gbk_fn() AS one', DESYNC_BACKSLASH], "character_set_results = 'gbk'"],
    ];
    for (const [steps, setting] of cases) {
      const r = await runCase(steps, prepared);
      expect(r.errors[0], steps[0]).toContain(`Sluice ended the session: the server reports ${setting} for this session`);
      expect(r.errors, steps[0]).toHaveLength(2);
      expect(r.session, steps[0]).toHaveProperty('error');
      expect(r.changed, steps[0]).toBe(false);
    }
    const ev = await auditEvents(g, { type: 'protocol_error', limit: 1000 });
    expect(ev.filter((e) => /Sluice ended the session: the server reports character_set_results = '(gbk|big5)'/.test(String(e.error))).length).toBeGreaterThanOrEqual(3);
  }, 120_000);

  it('procedures whose sql_mode or client character set the server puts back leave the session as it was; the desync attempt after them changes nothing', async () => {
    const base = await connectTo(g, caller);
    const [[session0]] = (await base.query(SESSION_SQL)) as any;
    await base.end();
    for (const steps of [['CALL ansi()', DESYNC_ANSI], ['CALL nbe()', DESYNC_BACKSLASH], ['CALL client_gbk()', DESYNC_BACKSLASH]]) {
      const r = await runCase(steps, false);
      expect(r.errors, steps[0]).toEqual([]);
      expect(r.session, steps[0]).toEqual(session0);
      expect(r.changed, steps[0]).toBe(false);
    }
  }, 120_000);
});

describe("settings put back to a server default Sluice cannot parse under (a server of the test's own)", () => {
  const DESYNC = 'SELECT "a\\"; DELETE FROM d.orders; -- "';
  it('SET sql_mode = DEFAULT and COM_RESET_CONNECTION after the global sql_mode became ANSI_QUOTES end the session; with statements after it, DEFAULT is refused and nothing runs', async () => {
    await withOwnMariadb('mariadb-default', [], async (serverPort) => {
      const admin = await mysql.createConnection({ host: '127.0.0.1', port: serverPort, user: 'root', multipleStatements: true });
      await admin.query("CREATE DATABASE d; CREATE TABLE d.orders (id int PRIMARY KEY, status varchar(20)); INSERT INTO d.orders VALUES (1, 'new'), (2, 'new')");
      const g = await startTestGateway({
        policy: policyYaml({ default: 'deny', rules: [rules.session(), { name: 'reads', match: { statements: ['read'] }, action: 'allow' }] }),
        config: `mysql: { listen: { port: 0 }, upstream: { host: 127.0.0.1, port: ${serverPort}, user: root, sslmode: disable } }`,
      });
      try {
        const k = await g.key('agent', ['analysts'], { name: 'defaults' });
        const open = () => mysql.createConnection({ host: '127.0.0.1', port: g.gw.mysqlPort!, user: 'x', password: k, database: 'd', enableCleartextPlugin: true, multipleStatements: true } as mysql.ConnectionOptions);
        const err = (p: Promise<unknown>) => p.then(() => undefined, (e: Error) => e.message);
        const [a, b, c] = await Promise.all([open(), open(), open()]);
        for (const s of [a, b, c]) s.on('error', () => undefined);
        // Logged in under the safe default; then a DBA changes the server's global sql_mode.
        await admin.query("SET GLOBAL sql_mode = 'ANSI_QUOTES'");
        expect(await err(a.query(`SET sql_mode = DEFAULT; ${DESYNC}`))).toMatch(/not supported by Sluice: a character set or sql_mode set to DEFAULT with more statements after it/);
        expect(await err(a.query('SELECT 1'))).toBeUndefined();
        expect(await err(a.query('SET sql_mode = DEFAULT'))).toMatch(/Sluice ended the session: the server reports sql_mode = 'ANSI_QUOTES' for this session/);
        expect(await err(a.query(DESYNC))).toBeDefined();
        expect(await err((b as any).reset())).toMatch(/Sluice ended the session: the server reports sql_mode = 'ANSI_QUOTES' for this session/);
        expect(await err(b.query(DESYNC))).toBeDefined();
        // A session that does neither goes on in the state it logged in with.
        expect(await err(c.query(DESYNC))).toBeUndefined();
        const [[rows]] = (await admin.query('SELECT count(*) AS n, GROUP_CONCAT(status) AS s FROM d.orders')) as any;
        expect(rows).toEqual({ n: 2, s: 'new,new' });
        const ev = await auditEvents(g, { type: 'protocol_error' });
        expect(ev.filter((x) => /Sluice ended the session: the server reports sql_mode = 'ANSI_QUOTES'/.test(String(x.error)))).toHaveLength(2);
        for (const s of [a, b, c]) s.destroy();
      } finally {
        await g.stop();
        await admin.end();
      }
    });
  }, 180_000);
});
