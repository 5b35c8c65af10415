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
