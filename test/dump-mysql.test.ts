/**
 * mariadb-dump and a restore with the mariadb client, both through Sluice (TLS, a DBA's key, examples/policy.yaml):
 * a database with a stored procedure and function (BEGIN ... END bodies), a trigger, an event, a sequence, a
 * partitioned table, a system-versioned table, a view with ALGORITHM/DEFINER/SQL SECURITY/WITH CHECK OPTION and a
 * ZEROFILL column dumps through the gateway as it dumps directly, and restores through it into a database that dumps
 * identically to one restored directly. A read-only identity cannot create a procedure, trigger or event.
 */
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MY, mysqlEngine, run, startTestGateway, tmpDir, type TestGateway } from './support/env.js';

const SOURCE = `
CREATE TABLE customers (id int PRIMARY KEY, name varchar(50), code int(6) UNSIGNED ZEROFILL, note text) ENGINE=InnoDB;
INSERT INTO customers VALUES (1, 'Ada', 42, 'back\\\\slash é'), (2, 'Bob', 7, NULL);
CREATE SEQUENCE order_seq START WITH 100 INCREMENT BY 1;
CREATE TABLE orders (id int PRIMARY KEY, customer_id int, amount decimal(10,2), created date, updated_at datetime) ENGINE=InnoDB
  PARTITION BY RANGE (id) (PARTITION p0 VALUES LESS THAN (1000), PARTITION p1 VALUES LESS THAN MAXVALUE);
INSERT INTO orders VALUES (NEXT VALUE FOR order_seq, 1, 10.5, '2024-01-01', NULL), (NEXTVAL(order_seq), 2, 20, '2024-02-01', NULL);
CREATE TABLE prices (id int PRIMARY KEY, price decimal(10,2)) WITH SYSTEM VERSIONING;
INSERT INTO prices VALUES (1, 9.99);
UPDATE prices SET price = 10.99 WHERE id = 1;
CREATE ALGORITHM=MERGE DEFINER=root@localhost SQL SECURITY INVOKER VIEW big_orders AS SELECT id, amount FROM orders WHERE amount > 15 WITH CASCADED CHECK OPTION;
DELIMITER ;;
CREATE PROCEDURE add_order(IN c int, IN a decimal(10,2))
BEGIN
  DECLARE n int DEFAULT 0;
  INSERT INTO orders VALUES (NEXT VALUE FOR order_seq, c, a, CURDATE(), NULL);
  SELECT count(*) INTO n FROM orders WHERE customer_id = c;
  IF n > 10 THEN
    UPDATE customers SET note = 'many' WHERE id = c;
  END IF;
END;;
CREATE FUNCTION order_total(c int) RETURNS decimal(10,2) READS SQL DATA
BEGIN
  RETURN (SELECT COALESCE(SUM(amount), 0) FROM orders WHERE customer_id = c);
END;;
CREATE TRIGGER orders_touch BEFORE UPDATE ON orders FOR EACH ROW
BEGIN
  SET NEW.updated_at = NOW();
END;;
CREATE EVENT purge_old ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' ON COMPLETION PRESERVE DISABLE DO
  DELETE FROM orders WHERE created < '2000-01-01';;
DELIMITER ;
`;

let t: TestGateway;
let dba: string;
let agent: string;
let dir: string;
const dbs: string[] = [];
const direct = ['-h', MY.host, '-P', String(MY.port), '-u', MY.user];
const root = (db: string, input: string) => run('mariadb', [...direct, db], { input });
const fresh = async (prefix: string) => {
  const name = `${prefix}_${crypto.randomBytes(4).toString('hex')}`;
  dbs.push(name);
  expect((await run('mariadb', [...direct, '-e', `CREATE DATABASE ${name}`])).code).toBe(0);
  return name;
};
/** Through Sluice, over TLS, with a Sluice key as the password. */
const gw = (key: string) => ['-h', '127.0.0.1', '-P', String(t.gw.mysqlPort), '-u', 'dumper', `-p${key}`, '--ssl', '--ssl-verify-server-cert=0'];
const DUMP = ['--single-transaction', '--routines', '--events'];
/** A dump without its comment lines (date, host, server version). */
const body = (dump: string) => dump.split('\n').filter((l) => !l.startsWith('-- ')).join('\n');
const dumpDirect = async (db: string) => body((await run('mariadb-dump', [...direct, ...DUMP, db])).stdout);

beforeAll(async () => {
  t = await startTestGateway({ policy: fs.readFileSync('examples/policy.yaml', 'utf8'), config: mysqlEngine() });
  dba = await t.key('human', ['dba'], { name: 'dba' });
  agent = await t.key('agent', [], { name: 'reader' });
  dir = tmpDir('dump-mysql');
}, 120_000);
afterAll(async () => {
  await t?.stop();
  for (const d of dbs) await run('mariadb', [...direct, '-e', `DROP DATABASE IF EXISTS ${d}`]);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('mariadb-dump / mariadb restore through Sluice', () => {
  it('dumps through the gateway as directly, and restores through it into the same database as directly', async () => {
    const src = await fresh('sluice_mydump_src');
    const made = await root(src, SOURCE);
    expect(made.stderr).toBe('');
    const via = await run('mariadb-dump', [...gw(dba), ...DUMP, src]);
    expect(via.stderr).toBe('');
    expect(via.code).toBe(0);
    const directDump = await run('mariadb-dump', [...direct, ...DUMP, src]);
    expect(directDump.code).toBe(0);
    // Everything is there, and the gateway's dump is the direct one.
    for (const part of ['PROCEDURE `add_order`', 'FUNCTION `order_total`', 'TRIGGER orders_touch', 'EVENT `purge_old`', 'CREATE SEQUENCE `order_seq`', 'PARTITION BY RANGE', 'WITH SYSTEM VERSIONING', 'WITH CASCADED CHECK OPTION', 'zerofill', "'back\\\\slash é'"]) {
      expect(directDump.stdout).toContain(part);
    }
    expect(body(via.stdout)).toEqual(body(directDump.stdout));
    fs.writeFileSync(path.join(dir, 'via.sql'), via.stdout);

    const viaDb = await fresh('sluice_mydump_via');
    const directDb = await fresh('sluice_mydump_direct');
    // The dump puts its lexing settings back from user variables (SET character_set_client = @saved_cs_client,
    // ...): Sluice reads each variable on the session first and judges the constant, so the restore runs whole.
    expect((via.stdout.match(/SET (character_set_client|character_set_results|collation_connection|sql_mode)\s*=\s*@/gi) ?? []).length).toBeGreaterThan(0);
    const r = await run('mariadb', [...gw(dba), viaDb], { input: via.stdout });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const d = await root(directDb, via.stdout);
    expect(d.stderr).toBe('');
    const restored = await dumpDirect(viaDb);
    expect(restored).toContain('PROCEDURE `add_order`');
    expect(restored).toEqual(await dumpDirect(directDb));
  }, 180_000);

  it('mariadb-dump --databases (SHOW CREATE DATABASE, USE) through the gateway as directly', async () => {
    const src = await fresh('sluice_mydump_dbs');
    expect((await root(src, SOURCE)).stderr).toBe('');
    const via = await run('mariadb-dump', [...gw(dba), ...DUMP, '--databases', src]);
    expect(via.stderr).toBe('');
    const directDump = await run('mariadb-dump', [...direct, ...DUMP, '--databases', src]);
    expect(directDump.stdout).toContain(`CREATE DATABASE /*!32312 IF NOT EXISTS*/ \`${src}\``);
    expect(body(via.stdout)).toEqual(body(directDump.stdout));
  }, 60_000);

  it('sequences, system-versioned queries and table maintenance work through the gateway', async () => {
    const db = await fresh('sluice_mydump_q');
    expect((await root(db, SOURCE)).stderr).toBe('');
    const q = (sql: string) => run('mariadb', [...gw(dba), '--batch', '--skip-column-names', db, '-e', sql]);
    const seq = await q('SHOW CREATE SEQUENCE order_seq; SELECT NEXTVAL(order_seq); SELECT NEXT VALUE FOR order_seq; SELECT SETVAL(order_seq, 500); SELECT NEXTVAL(order_seq)');
    expect(seq.stderr).toBe('');
    expect(seq.stdout.split('\n').slice(1, 5)).toEqual(['102', '103', '500', '501']);
    const hist = await q('SELECT count(*) FROM prices FOR SYSTEM_TIME ALL');
    expect(hist.stdout.trim()).toBe('2');
    const maint = await q('OPTIMIZE TABLE customers; CHECK TABLE customers; DROP EVENT IF EXISTS no_such_event; DO SETVAL(order_seq, 600)');
    expect(maint.stderr).toBe('');
    expect(maint.stdout).toContain('status');
    expect((await q('SELECT NEXTVAL(order_seq)')).stdout.trim()).toBe('601');
  }, 60_000);

  it('a read-only identity cannot create a procedure, trigger or event (refused, nothing created)', async () => {
    const db = await fresh('sluice_mydump_ro');
    expect((await root(db, 'CREATE TABLE orders (id int PRIMARY KEY, note text); CREATE TABLE customers (id int)')).stderr).toBe('');
    const programs = [
      'CREATE PROCEDURE p1() BEGIN SELECT 1; END',
      'CREATE TRIGGER tr1 AFTER INSERT ON orders FOR EACH ROW BEGIN DELETE FROM customers; END',
      'CREATE TRIGGER tr2 BEFORE INSERT ON orders FOR EACH ROW SET NEW.note = \'x\'',
      'CREATE EVENT ev1 ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM orders',
      '/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`127.0.0.1`*/ /*!50003 PROCEDURE p2() BEGIN END */',
    ];
    for (const sql of programs) {
      const r = await run('mariadb', [...gw(agent), db], { input: `DELIMITER ;;\n${sql};;\nDELIMITER ;\n` });
      expect(r.code, sql).not.toBe(0);
      expect(r.stderr, sql).toMatch(/ERROR 1142 .*agents-read-only/);
    }
    const n = await run('mariadb', [...direct, '--batch', '--skip-column-names', '-e',
      `SELECT (SELECT count(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '${db}') + (SELECT count(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '${db}') + (SELECT count(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '${db}') + (SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '${db}')`]);
    expect(n.stdout.trim()).toBe('2');
    // The same statements as a DBA are created (the refusal above was the policy, not a syntax error).
    for (const sql of programs) {
      const r = await run('mariadb', [...gw(dba), db], { input: `DELIMITER ;;\n${sql};;\nDELIMITER ;\n` });
      expect(r.stderr, sql).toBe('');
    }
  }, 60_000);
});
