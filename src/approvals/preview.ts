import type { Analysis, AnalysisFailure } from '../analyze/analyze.js';
import type { UpstreamTarget } from '../protocol/postgres/upstream.js';
import { upstreamClient } from '../protocol/postgres/client.js';
import type { MyUpstreamTarget } from '../protocol/mysql/upstream.js';
import { MyClient, myIdent, myQuote } from '../protocol/mysql/client.js';
import type { Approval, Preview } from './store.js';

/** Flags under which running a statement, even in a transaction that is rolled back, could have effects outside it. */
const UNSAFE_FLAGS = new Set(['do-block', 'dynamic-sql', 'privileged-function', 'copy-program', 'server-file']);
const DML = new Set(['INSERT', 'UPDATE', 'DELETE', 'MERGE']);
/** DDL whose blast radius is the rows of the tables it names. */
const TABLE_DDL = new Set(['DROP TABLE', 'TRUNCATE', 'ALTER TABLE', 'DROP INDEX', 'CREATE INDEX']);

const quoteIdent = (name: string) =>
  name
    .split('.')
    .map((p) => `"${p.replace(/"/g, '""')}"`)
    .join('.');

/** The analysis of a statement that may be previewed, or why it is not (unparsable, unsafe, transaction control). */
function previewable(r: Analysis | AnalysisFailure): Analysis | Preview {
  if (!r.ok) return { kind: 'none', note: 'not previewed: the statement does not parse' };
  const unsafe = r.statements.flatMap((s) => s.flags).find((f) => UNSAFE_FLAGS.has(f));
  if (unsafe) return { kind: 'none', note: `not previewed: the statement has ${unsafe} (side effects could escape a rolled-back transaction)` };
  if (r.statements.some((s) => s.class === 'transaction')) return { kind: 'none', note: 'not previewed: transaction control' };
  return r;
}

export interface PreviewOptions {
  upstream: UpstreamTarget;
  analyze: (sql: string) => Analysis | AnalysisFailure;
  /** statement_timeout and lock_timeout of the preview (ms). */
  timeoutMs: number;
}

const connect = (o: PreviewOptions, database: string) => upstreamClient(o.upstream, database, 'sluice-preview');

/**
 * Blast-radius preview for reviewers. Data-changing statements run on a separate upstream connection inside a
 * transaction that is always rolled back, under statement and lock timeouts, and report the rows they would
 * affect; DDL is not run: the objects it touches are listed with their current row counts.
 */
export function makePreview(o: PreviewOptions): (a: Approval) => Promise<Preview> {
  return async (a) => {
    if (a.kind !== 'statement' || !a.sql || a.engine === 'mysql') return { kind: 'none' };
    const r = previewable(o.analyze(a.sql));
    if ('kind' in r) return r;
    if (r.statements.some((s) => s.executes !== undefined)) return { kind: 'none', note: 'not previewed: EXECUTE of a session-prepared statement' };
    const t0 = performance.now();
    if (r.statements.every((s) => DML.has(s.command))) {
      // Parameters that arrived in binary format are kept hex-encoded for the hash; they cannot be replayed as text.
      if (a.binary_params) return { kind: 'none', note: 'not previewed: the statement has binary-format parameters' };
      const params = a.params ?? [];
      const c = await connect(o, a.database);
      try {
        await c.query('BEGIN');
        await c.query(`SET LOCAL statement_timeout = ${Math.floor(o.timeoutMs)}`);
        await c.query(`SET LOCAL lock_timeout = ${Math.floor(o.timeoutMs)}`);
        const res = params.length ? await c.query(a.sql, params) : await c.query(a.sql);
        const results = Array.isArray(res) ? res : [res];
        const rows = results.reduce((n, x) => n + (x.rowCount ?? 0), 0);
        return { kind: 'rows', rows_affected: rows, duration_ms: Math.round(performance.now() - t0), note: 'ran in a transaction that was rolled back' };
      } catch (e) {
        return { kind: 'rows', error: (e as Error).message, duration_ms: Math.round(performance.now() - t0) };
      } finally {
        await c.query('ROLLBACK').catch(() => {});
        await c.end().catch(() => {});
      }
    }
    if (r.statements.every((s) => s.class === 'ddl' || s.class === 'admin')) {
      const objects: NonNullable<Preview['objects']> = [];
      const needsCounts = r.statements.some((s) => TABLE_DDL.has(s.command) && s.tables.length);
      const c = needsCounts ? await connect(o, a.database) : undefined;
      try {
        if (c) {
          await c.query('BEGIN READ ONLY');
          await c.query(`SET LOCAL statement_timeout = ${Math.floor(o.timeoutMs)}`);
          await c.query(`SET LOCAL lock_timeout = ${Math.floor(o.timeoutMs)}`);
        }
        for (const s of r.statements) {
          for (const t of s.tables) {
            let rows: number | undefined;
            if (c && TABLE_DDL.has(s.command)) {
              const exists = await c.query('SELECT to_regclass($1) IS NOT NULL AS ok', [t.name]);
              if (exists.rows[0]?.ok === 't') rows = Number((await c.query(`SELECT count(*)::bigint AS n FROM ${quoteIdent(t.name)}`)).rows[0].n);
            }
            objects.push({ command: s.command, name: t.name, ...(rows !== undefined ? { rows } : {}) });
          }
          if (!s.tables.length) objects.push({ command: s.command, name: '' });
        }
        return { kind: 'objects', objects, duration_ms: Math.round(performance.now() - t0), note: 'not run; objects it touches' };
      } catch (e) {
        return { kind: 'objects', objects, error: (e as Error).message };
      } finally {
        await c?.query('ROLLBACK').catch(() => {});
        await c?.end().catch(() => {});
      }
    }
    return { kind: 'none', note: 'not previewed: only data-changing statements and DDL are previewed' };
  };
}

/** Storage engines whose changes a ROLLBACK undoes. */
const TRANSACTIONAL = new Set(['innodb', 'rocksdb', 'tokudb']);

export interface MysqlPreviewOptions {
  upstream: MyUpstreamTarget;
  analyze: (sql: string) => Analysis | AnalysisFailure;
  timeoutMs: number;
}

/**
 * The same preview for MySQL/MariaDB. MySQL commits DDL implicitly and MyISAM ignores ROLLBACK, so only
 * data-changing statements on transactional tables (InnoDB) run, inside START TRANSACTION ... ROLLBACK.
 */
export function makeMysqlPreview(o: MysqlPreviewOptions): (a: Approval) => Promise<Preview> {
  return async (a) => {
    if (a.kind !== 'statement' || !a.sql) return { kind: 'none' };
    const r = previewable(o.analyze(a.sql));
    if ('kind' in r) return r;
    if (r.statements.some((s) => s.class === 'session')) return { kind: 'none', note: 'not previewed: session statements' };
    if (a.params?.length) return { kind: 'none', note: 'not previewed: prepared statement with bound parameters' };
    const t0 = performance.now();
    const qualified = (name: string) => (name.includes('.') ? name.split('.') : [a.database, name]);
    const c = await MyClient.connect(o.upstream, a.database || undefined);
    try {
      await c.query(`SET SESSION innodb_lock_wait_timeout = ${Math.max(1, Math.ceil(o.timeoutMs / 1000))}`);
      await c.query(`SET SESSION max_statement_time = ${o.timeoutMs / 1000}`).catch(() => c.query(`SET SESSION MAX_EXECUTION_TIME = ${Math.floor(o.timeoutMs)}`).catch(() => undefined));
      if (r.statements.every((s) => DML.has(s.command) || s.command === 'REPLACE')) {
        for (const t of r.tables) {
          const [schema, table] = qualified(t);
          const e = await c.query(`SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ${myQuote(schema!)} AND TABLE_NAME = ${myQuote(table!)}`);
          const engine = e.rows[0]?.[0];
          if (engine && !TRANSACTIONAL.has(engine.toLowerCase())) return { kind: 'none', note: `not previewed: table ${t} uses ${engine}, which a rollback cannot undo` };
        }
        await c.query('START TRANSACTION');
        try {
          const res = await c.query(a.sql);
          return { kind: 'rows', rows_affected: res.affected, duration_ms: Math.round(performance.now() - t0), note: 'ran in a transaction that was rolled back' };
        } catch (e) {
          return { kind: 'rows', error: (e as Error).message, duration_ms: Math.round(performance.now() - t0) };
        } finally {
          await c.query('ROLLBACK').catch(() => undefined);
        }
      }
      if (r.statements.every((s) => s.class === 'ddl' || s.class === 'admin')) {
        const objects: NonNullable<Preview['objects']> = [];
        for (const s of r.statements) {
          for (const t of s.tables) {
            let rows: number | undefined;
            if (TABLE_DDL.has(s.command)) {
              const [schema, table] = qualified(t.name);
              const exists = await c.query(`SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ${myQuote(schema!)} AND TABLE_NAME = ${myQuote(table!)}`);
              if (exists.rows[0]?.[0] !== '0') rows = Number((await c.query(`SELECT COUNT(*) FROM ${myIdent(`${schema}.${table}`)}`)).rows[0]?.[0]);
            }
            objects.push({ command: s.command, name: t.name, ...(rows !== undefined ? { rows } : {}) });
          }
        }
        return { kind: 'objects', objects, duration_ms: Math.round(performance.now() - t0), note: 'not run; objects it touches' };
      }
      return { kind: 'none', note: 'not previewed: only data-changing statements and DDL are previewed' };
    } finally {
      c.close();
    }
  };
}
