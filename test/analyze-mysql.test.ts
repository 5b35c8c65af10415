import { describe, it, expect, beforeAll } from 'vitest';
import { analyzeMysql, loadMysqlParser } from '../src/analyze/mysql.js';
import type { Analysis } from '../src/analyze/analyze.js';

beforeAll(() => loadMysqlParser());
const A = (sql: string): Analysis => {
  const r = analyzeMysql(sql);
  if (!r.ok) throw new Error(r.error);
  return r;
};

describe('MySQL analysis', () => {
  it('sees statements hidden in executable comments', () => {
    const a = A('SELECT 1 /*! ; DROP TABLE customers */');
    expect(a.statements.map((s) => s.command)).toEqual(['SELECT', 'DROP TABLE']);
    expect(a.flags).toContain('multi-statement');
    expect(a.destructive).toEqual(['DROP TABLE']);
    expect(A('SELECT /*!50000 load_file("/etc/passwd"), */ 1').flags).toContain('privileged-function');
  });
  it('classifies and finds tables with their access', () => {
    expect(A('SELECT a.email FROM shop.customers a JOIN orders o ON o.cid = a.id WHERE a.ssn LIKE "1%"').statements[0]).toMatchObject({
      class: 'read',
      tables: [{ name: 'shop.customers', access: 'read' }, { name: 'orders', access: 'read' }],
      filterColumns: expect.arrayContaining(['a.ssn', 'o.cid', 'a.id']),
    });
    expect(A('INSERT INTO t (a) SELECT x FROM u').statements[0]!.tables).toEqual([{ name: 't', access: 'write' }, { name: 'u', access: 'read' }]);
    expect(A('UPDATE t SET a = 1').destructive).toEqual(['UPDATE without WHERE']);
    expect(A('DELETE FROM t WHERE id = 1').destructive).toEqual([]);
    expect(A('DELETE FROM t').destructive).toEqual(['DELETE without WHERE']);
    expect(A('TRUNCATE TABLE t').statements[0]).toMatchObject({ class: 'ddl', command: 'TRUNCATE', destructive: ['TRUNCATE'] });
    expect(A('ALTER TABLE t DROP COLUMN c').destructive[0]).toMatch(/DROP COLUMN/);
    expect(A('BEGIN').classes).toEqual(['transaction']);
    expect(A('SET NAMES utf8mb4').classes).toEqual(['session']);
    expect(A('USE shop').classes).toEqual(['session']);
    expect(A('SHOW TABLES').classes).toEqual(['read']);
    expect(A('GRANT ALL ON *.* TO bob').classes).toEqual(['admin']);
    expect(A('SELECT * FROM t FOR UPDATE').flags).toContain('locking');
    expect(A('REPLACE INTO t VALUES (1)').statements[0]!.command).toBe('REPLACE');
  });
  it('CTE names are not tables', () => {
    expect(A('WITH c AS (SELECT id FROM customers) SELECT * FROM c').tables).toEqual(['customers']);
  });
  it('names output columns as MySQL does, with the columns they read', () => {
    const o = A('SELECT upper(email), ssn AS s, concat(a.x, b.y) FROM customers').statements[0]!.outputs;
    expect(o).toEqual([
      { name: 'upper(email)', refs: ['email'] },
      { name: 's', refs: ['ssn'], plain: true },
      { name: 'concat(a.x, b.y)', refs: ['a.x', 'b.y'] },
    ]);
  });
  it('fails closed on what it cannot parse, with a position', () => {
    const r = analyzeMysql('SELEC 1');
    expect(r).toMatchObject({ ok: false, position: 1 });
    expect(analyzeMysql("SELECT * FROM t INTO OUTFILE '/tmp/x'").ok).toBe(false);
  });
});

describe('MySQL recognisers for what the parser cannot read (mariadb-dump and its restores)', () => {
  const one = (sql: string) => {
    const a = A(sql);
    expect(a.statements).toHaveLength(1);
    return a.statements[0]!;
  };
  const refused = (sql: string) => {
    const r = analyzeMysql(sql);
    return !r.ok ? r.error : r.statements.find((s) => s.refuse)?.refuse;
  };
  it('stored programs are DDL flagged stored-program-body, with what their bodies do', () => {
    const proc = one("CREATE DEFINER=`root`@`127.0.0.1` PROCEDURE `add_order`(IN c int)\nBEGIN\n  DECLARE n int DEFAULT 0;\n  INSERT INTO orders VALUES (NEXT VALUE FOR order_seq, c);\n  SELECT count(*) INTO n FROM orders WHERE customer_id = c;\n  IF n > 10 THEN\n    UPDATE customers SET note = 'many' WHERE id = c;\n  END IF;\nEND");
    expect(proc).toMatchObject({ command: 'CREATE PROCEDURE', class: 'ddl', tables: [{ name: 'add_order', access: 'ddl' }, { name: 'orders', access: 'write' }, { name: 'customers', access: 'write' }] });
    expect(proc.flags).toEqual(expect.arrayContaining(['stored-program-body', 'volatile-function']));
    expect(proc.refuse).toBeUndefined();
    const fn = one('CREATE FUNCTION order_total(c int) RETURNS decimal(10,2) READS SQL DATA BEGIN RETURN (SELECT SUM(amount) FROM orders WHERE customer_id = c); END');
    expect(fn).toMatchObject({ command: 'CREATE FUNCTION', class: 'ddl', tables: [{ name: 'order_total', access: 'ddl' }, { name: 'orders', access: 'read' }], flags: ['stored-program-body'] });
    // mariadb-dump's wrapping: each part in a versioned executable comment the server runs.
    const trg = one('/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`127.0.0.1`*/ /*!50003 TRIGGER orders_touch BEFORE UPDATE ON orders FOR EACH ROW\nBEGIN\n  SET NEW.updated_at = NOW();\nEND \n*/');
    expect(trg).toMatchObject({ command: 'CREATE TRIGGER', class: 'ddl', tables: [{ name: 'orders_touch', access: 'ddl' }, { name: 'orders', access: 'ddl' }], flags: ['stored-program-body'] });
    const ev = one("/*!50106 CREATE*/ /*!50117 DEFINER=`root`@`127.0.0.1`*/ /*!50106 EVENT `purge_old` ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' ON COMPLETION PRESERVE DISABLE DO DELETE FROM orders WHERE created < '2000-01-01' */");
    expect(ev).toMatchObject({ command: 'CREATE EVENT', class: 'ddl', tables: [{ name: 'purge_old', access: 'ddl' }, { name: 'orders', access: 'write' }] });
    const loops = one('CREATE PROCEDURE p() BEGIN DECLARE done INT DEFAULT 0; DECLARE c CURSOR FOR SELECT id FROM secrets; DECLARE CONTINUE HANDLER FOR NOT FOUND SET done = 1; OPEN c; l: LOOP FETCH c INTO done; IF done THEN LEAVE l; END IF; END LOOP; CLOSE c; WHILE done < 3 DO SET done = done + 1; END WHILE; REPEAT SET done = done - 1; UNTIL done = 0 END REPEAT; CASE done WHEN 0 THEN SELECT 0; ELSE DELETE FROM logs; END CASE; END');
    expect(loops.tables).toEqual([{ name: 'p', access: 'ddl' }, { name: 'secrets', access: 'read' }, { name: 'logs', access: 'write' }]);
    expect(loops.destructive).toEqual(['DELETE without WHERE (in the stored program)']);
  });
  it('a trigger whose body drops a table is DDL on both tables and destructive; dynamic SQL in a body is flagged', () => {
    const t = one('CREATE TRIGGER tr AFTER INSERT ON orders FOR EACH ROW DROP TABLE customers');
    expect(t).toMatchObject({ class: 'ddl', tables: [{ name: 'tr', access: 'ddl' }, { name: 'orders', access: 'ddl' }, { name: 'customers', access: 'ddl' }], destructive: ['DROP TABLE (in the stored program)'] });
    const d = one("CREATE PROCEDURE p() BEGIN SET @q = 'DROP TABLE t'; PREPARE st FROM @q; EXECUTE st; END");
    expect(d.flags).toEqual(expect.arrayContaining(['stored-program-body', 'dynamic-sql']));
    expect(one('CREATE PROCEDURE p() BEGIN GRANT ALL ON *.* TO bob; END').class).toBe('admin');
    // Names in other databases are there for the served-database check: the program's own and those in its body.
    expect(one('CREATE PROCEDURE other.p() BEGIN DELETE FROM vault.t WHERE id = 1; END').tables.map((t) => t.name)).toEqual(['other.p', 'vault.t']);
  });
  it('refuses near misses: a second statement after the body, bodies it cannot read, effects in schedules and partitions', () => {
    for (const sql of [
      'CREATE PROCEDURE p() BEGIN SELECT 1; END; DROP TABLE t',
      'CREATE PROCEDURE p() BEGIN SELECT 1; END x; DROP TABLE t',
      'CREATE PROCEDURE p() BEGIN SELECT 1; END; BEGIN NOT ATOMIC SELECT 1; END',
      'CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO DELETE FROM t; DROP TABLE u',
      'CREATE PROCEDURE p() BEGIN SELECT 1 END',
      'CREATE PROCEDURE p() BEGIN IF 1 THEN SELECT 1; END',
      "CREATE FUNCTION f RETURNS STRING SONAME 'x.so'",
      'CREATE EVENT e ON SCHEDULE AT SLEEP(5) DO SELECT 1',
      'CREATE PROCEDURE p() BEGIN SET NAMES gbk; END',
      'CREATE TABLE z (a int zerofill) PARTITION BY HASH(sleep(a))',
      'CREATE TABLE z (a int) PARTITION BY HASH(a) DATA DIRECTORY = \'/tmp\'',
      'CREATE TABLE z (a int zerofill) PARTITION BY HASH(a); DROP TABLE t',
      'CREATE VIEW v AS SELECT 1 WITH CHECK OPTION; DROP TABLE t',
      'SELECT * FROM prices FOR SYSTEM_TIME AS OF (SELECT 1)',
      'CREATE SEQUENCE s START WITH (SELECT 1)',
      'ALTER TABLE t DISABLE KEYS; DROP TABLE t',
      'DO 1 FROM t',
      'SHOW FUNCTION STATUS WHERE Db = (SELECT 1); DROP TABLE t',
    ]) expect(refused(sql), sql).toBeTruthy();
  });
  it('MariaDB table and query clauses, sequences and the statements mariadb-dump sends', () => {
    expect(one('CREATE TABLE `customers` (`id` int(11) NOT NULL, `code` int(6) unsigned zerofill DEFAULT NULL, PRIMARY KEY (`id`)) ENGINE=InnoDB')).toMatchObject({ command: 'CREATE TABLE', class: 'ddl', tables: [{ name: 'customers', access: 'ddl' }] });
    expect(one('CREATE TABLE o (id int) ENGINE=InnoDB\n PARTITION BY RANGE (`id`)\n(PARTITION `p0` VALUES LESS THAN (1000) ENGINE = InnoDB,\n PARTITION `p1` VALUES LESS THAN MAXVALUE ENGINE = InnoDB)').tables).toEqual([{ name: 'o', access: 'ddl' }]);
    expect(one('CREATE TABLE p (id int) WITH SYSTEM VERSIONING').command).toBe('CREATE TABLE');
    expect(one("SELECT * FROM prices FOR SYSTEM_TIME AS OF TIMESTAMP '2020-01-01 00:00:00' WHERE id = 1")).toMatchObject({ class: 'read', tables: [{ name: 'prices', access: 'read' }] });
    expect(one('SELECT * FROM prices FOR SYSTEM_TIME ALL').class).toBe('read');
    expect(one('/*!50001 CREATE ALGORITHM=MERGE */\n/*!50013 DEFINER=`root`@`localhost` SQL SECURITY INVOKER */\n/*!50001 VIEW `big` AS select `orders`.`id` AS `id` from `orders` */\n/*!50002 WITH CASCADED CHECK OPTION */')).toMatchObject({ command: 'CREATE VIEW', class: 'ddl', tables: [{ name: 'big', access: 'ddl' }, { name: 'orders', access: 'read' }] });
    expect(one('CREATE SEQUENCE `order_seq` start with 100 minvalue 1 maxvalue 9223372036854775806 increment by 1 cache 1000 nocycle ENGINE=InnoDB')).toMatchObject({ command: 'CREATE SEQUENCE', class: 'ddl', tables: [{ name: 'order_seq', access: 'ddl' }] });
    expect(one('DO SETVAL(`order_seq`, 1100, 0)')).toMatchObject({ command: 'DO', class: 'write', flags: ['volatile-function'] });
    expect(one('SHOW CREATE SEQUENCE `order_seq`')).toMatchObject({ class: 'read', tables: [{ name: 'order_seq', access: 'read' }] });
    expect(one('SHOW CREATE DATABASE IF NOT EXISTS `shop`')).toMatchObject({ class: 'read', tables: [{ name: 'shop.*', access: 'read' }] });
    expect(one("SHOW FUNCTION STATUS WHERE Db = 'shop'")).toMatchObject({ command: 'SHOW FUNCTION STATUS', class: 'read', flags: ['sensitive-catalog'] });
    expect(one('/*!40000 ALTER TABLE `customers` DISABLE KEYS */')).toMatchObject({ class: 'ddl', tables: [{ name: 'customers', access: 'ddl' }] });
    expect(one('START TRANSACTION /*!40100 WITH CONSISTENT SNAPSHOT */').class).toBe('transaction');
    expect(one('OPTIMIZE TABLE a, b')).toMatchObject({ class: 'ddl', tables: [{ name: 'a', access: 'ddl' }, { name: 'b', access: 'ddl' }] });
    expect(one('CHECK TABLE a FOR UPGRADE')).toMatchObject({ class: 'read', tables: [{ name: 'a', access: 'read' }] });
    expect(one('/*!50106 DROP EVENT IF EXISTS `purge_old` */')).toMatchObject({ class: 'ddl', tables: [{ name: 'purge_old', access: 'ddl' }], destructive: ['DROP EVENT'] });
    // The dump's first line: version 999999 is never run by the server, so it is a comment.
    expect(one('/*M!999999 enable the sandbox mode */ \n/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */').command).toBe('SET');
    expect(A('SELECT 1 /*M!999999 ; DROP TABLE t */').statements).toHaveLength(1);
    expect(A('SELECT 1 /*M!100100 ; DROP TABLE t */').statements).toHaveLength(2);
    // What stays refused: SQL-level PREPARE from anything but string literals, and restoring a lexing setting from a user variable.
    expect(refused('PREPARE s FROM @q')).toMatch(/^not supported by Sluice: SQL-level PREPARE/);
    expect(refused('/*!50003 SET character_set_client = @saved_cs_client */')).toMatch(/can only be set to a constant/);
  });

  it('PREPARE name FROM literals: the statement of the text, unescaped as the server does; anything else refused', () => {
    expect(one("PREPARE s FROM 'SELECT 1 #\\nFROM mysql.user'")).toMatchObject({ command: 'PREPARE SELECT', class: 'read', tables: [{ name: 'mysql.user', access: 'read' }], flags: ['sensitive-catalog', 'dynamic-sql'] });
    expect(one("PREPARE s FROM 'DELETE ' \"FROM t WHERE v = 'a\\\\\\\\' OR 1\"")).toMatchObject({ command: 'PREPARE DELETE', class: 'write', tables: [{ name: 't', access: 'write' }] });
    expect(one('DROP PREPARE s')).toMatchObject({ command: 'DEALLOCATE', class: 'session' });
    for (const sql of ["PREPARE s FROM _utf8mb4'SELECT 1'", "PREPARE s FROM X'53454C4543542031'", 'PREPARE s FROM 0x53454C4543542031', "PREPARE s FROM CONCAT('SELECT', ' 1')", "PREPARE s FROM 'SELECT 1' /*!100000 'FROM mysql.user' */", "PREPARE s FROM 'SELECT 1'; SELECT 2"]) {
      expect(refused(sql), sql).toMatch(/^not supported by Sluice: SQL-level PREPARE/);
    }
    expect(refused("PREPARE s FROM 'SELECT 1; DELETE FROM t'")).toMatch(/several statements/);
    expect(refused("PREPARE s FROM 'EXECUTE t'")).toMatch(/PREPARE of EXECUTE/);
  });
  it('SET of a lexing variable to DEFAULT is refused when statements follow it in the text', () => {
    expect(one('SET sql_mode = DEFAULT').refuse).toBeUndefined();
    expect(one('SET NAMES DEFAULT').refuse).toBeUndefined();
    for (const sql of ['SET sql_mode = DEFAULT; SELECT 1', "SET character_set_client = 'default'; SELECT 1", "EXECUTE IMMEDIATE 'SET NAMES DEFAULT'; SELECT 1"]) {
      expect(A(sql).statements[0]!.refuse, sql).toMatch(/set to DEFAULT with more statements after it/);
    }
    expect(A('SELECT 1; SET sql_mode = DEFAULT').statements.every((s) => !s.refuse)).toBe(true);
    expect(one("SET session_track_system_variables = ''").refuse).toMatch(/session tracking/);
  });
});
