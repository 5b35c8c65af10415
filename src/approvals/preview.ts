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
type PreviewClient = Awaited<ReturnType<typeof connect>>;

/**
 * Functions a preview never calls, whatever pg_proc says of them: their effects survive a rollback (sequences,
 * large-object files, advisory locks, other connections, server files, logical messages) or reach other sessions.
 */
const NEVER_PREVIEWED = /^(nextval|setval|lo_.*|pg_advisory.*|pg_try_advisory.*|dblink.*|pg_notify|pg_logical_emit_message|pg_file_.*|pg_write_.*|pg_stat_reset.*|pg_switch_wal|pg_create_.*|pg_drop_replication_slot|pg_replication_.*|pg_reload_conf|pg_rotate_logfile|pg_cancel_backend|pg_terminate_backend|set_config|pg_sleep.*)$/i;

/**
 * Why running these data-changing statements, even in a transaction that is rolled back, could leave effects
 * behind, or undefined when it cannot: every function they call is looked up in this database's pg_proc (on the
 * preview connection itself) and any name with a volatile overload, or that names no function at all, stops the
 * preview; so do the tables they write having triggers or rules, and inserts into tables whose defaults draw on
 * sequences or volatile functions.
 */
async function lastingEffects(c: PreviewClient, r: Analysis, sql: string): Promise<string | undefined> {
  // The analyzer may already know which calls are volatile (Analysis.volatileFunctions, flag volatile-function).
  const known = r.volatileFunctions ?? [];
  if (known.length) return `preview skipped: calls ${known[0]}(), a volatile function`;
  if (r.statements.some((s) => s.flags.includes('volatile-function'))) return 'preview skipped: calls a volatile function';
  const functions = [...new Set(r.statements.flatMap((s) => s.functions))];
  const bare = (f: string) => f.split('.').pop()!;
  const never = functions.find((f) => NEVER_PREVIEWED.test(bare(f)));
  if (never) return `preview skipped: calls ${bare(never)}()`;
  if (functions.length) {
    const procs = await c.query('SELECT p.proname, n.nspname, p.provolatile, p.prokind FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE p.proname = ANY($1::text[])', [functions.map(bare)]);
    for (const f of functions) {
      const parts = f.split('.');
      const name = parts.pop()!;
      const schema = parts.pop();
      // Unqualified names are judged by every schema's overloads: the client's search_path may differ from ours.
      const matches = procs.rows.filter((p) => p.proname === name && (schema === undefined || p.nspname === schema));
      if (!matches.length) return `preview skipped: calls ${f}(), which is not a function this database knows`;
      if (matches.some((p) => p.provolatile === 'v')) return `preview skipped: calls ${f}(), a volatile function`;
      if (matches.some((p) => p.prokind === 'p')) return `preview skipped: calls ${f}(), a procedure`;
    }
  }
  // Operators run functions too (CREATE OPERATOR ... FUNCTION = f): judged by the function behind them.
  const operators = [...new Set(r.statements.flatMap((s) => s.operators ?? []))];
  if (operators.length) {
    const ops = await c.query("SELECT o.oprname, p.proname FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode WHERE o.oprname = ANY($1::text[]) AND p.provolatile = 'v' LIMIT 1", [operators]);
    if (ops.rows.length) return `preview skipped: operator ${ops.rows[0].oprname} calls ${ops.rows[0].proname}(), a volatile function`;
  }
  // Views run what their definitions call, views of views included: a volatile function or a sequence anywhere
  // below one the statement reads (nextval() in a view) stops the preview.
  const referenced = [...new Set(r.statements.flatMap((s) => s.tables.map((t) => t.name)))];
  if (referenced.length) {
    const v = await c.query(
      `WITH RECURSIVE rel(oid) AS (
         SELECT to_regclass(n)::oid FROM unnest($1::text[]) AS n WHERE to_regclass(n) IS NOT NULL
         UNION
         SELECT d.refobjid FROM rel JOIN pg_catalog.pg_rewrite w ON w.ev_class = rel.oid
           JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = w.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> rel.oid)
       SELECT rel.oid::regclass::text AS view FROM rel JOIN pg_catalog.pg_rewrite w ON w.ev_class = rel.oid
         JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = w.oid
         LEFT JOIN pg_catalog.pg_proc p ON d.refclassid = 'pg_catalog.pg_proc'::regclass AND p.oid = d.refobjid AND p.provolatile = 'v'
         LEFT JOIN pg_catalog.pg_class s ON d.refclassid = 'pg_catalog.pg_class'::regclass AND s.oid = d.refobjid AND s.relkind = 'S'
       WHERE p.oid IS NOT NULL OR s.oid IS NOT NULL LIMIT 1`,
      [referenced],
    );
    if (v.rows.length) return `preview skipped: view ${v.rows[0].view} calls a volatile function or draws on a sequence`;
  }
  const written = [...new Set(r.statements.flatMap((s) => s.tables.filter((t) => t.access === 'write').map((t) => t.name)))];
  const inserts = r.statements.some((s) => s.command === 'INSERT' || s.command === 'MERGE') || /\bDEFAULT\b/i.test(sql);
  for (const t of written) {
    const q = await c.query(
      `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g WHERE g.tgrelid = c.oid AND NOT g.tgisinternal AND g.tgenabled <> 'D') AS triggers,
              EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite w WHERE w.ev_class = c.oid AND w.rulename <> '_RETURN') AS rules,
              EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity <> '')
           OR EXISTS (SELECT 1 FROM pg_catalog.pg_attrdef d JOIN pg_catalog.pg_depend x ON x.classid = 'pg_catalog.pg_attrdef'::regclass AND x.objid = d.oid
                      LEFT JOIN pg_catalog.pg_class s ON x.refclassid = 'pg_catalog.pg_class'::regclass AND s.oid = x.refobjid AND s.relkind = 'S'
                      LEFT JOIN pg_catalog.pg_proc p ON x.refclassid = 'pg_catalog.pg_proc'::regclass AND p.oid = x.refobjid AND p.provolatile = 'v'
                      WHERE d.adrelid = c.oid AND (s.oid IS NOT NULL OR p.oid IS NOT NULL)) AS volatile_defaults
         FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1)`,
      [t],
    );
    const x = q.rows[0];
    if (!x) continue;
    if (x.triggers === 't') return `preview skipped: table ${t} has triggers, which could act outside the transaction`;
    if (x.rules === 't') return `preview skipped: table ${t} has rewrite rules`;
    if (inserts && x.volatile_defaults === 't') return `preview skipped: inserting into ${t} draws on a sequence or volatile default (nextval() is not rolled back)`;
  }
  return undefined;
}

/** Run SQL whose parameters have declared types: PREPARE with those types, EXECUTE with the values as literals. */
async function runTyped(c: PreviewClient, sql: string, params: (string | null)[], types: number[]) {
  const names = (await c.query('SELECT CASE WHEN t = 0 THEN \'unknown\' ELSE format_type(t, NULL) END AS n FROM unnest($1::oid[]) WITH ORDINALITY AS x(t, i) ORDER BY i', [types])).rows.map((x) => x.n as string);
  await c.query('SET LOCAL standard_conforming_strings = on');
  await c.query(`PREPARE sluice_preview (${names.join(', ')}) AS ${sql}`);
  const literal = (v: string | null) => (v === null ? 'NULL' : `'${v.replace(/'/g, "''")}'`);
  return c.query(`EXECUTE sluice_preview (${params.map(literal).join(', ')})`);
}

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
        const skipped = await lastingEffects(c, r, a.sql);
        if (skipped) return { kind: 'none', note: skipped };
        const res = a.param_types?.length ? await runTyped(c, a.sql, params, a.param_types) : params.length ? await c.query(a.sql, params) : await c.query(a.sql);
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

/** MySQL/MariaDB functions whose effects a rollback does not undo (locks, sequences, counters, waits, files). */
const MYSQL_NEVER_PREVIEWED = /^(get_lock|release_lock|release_all_locks|sleep|benchmark|nextval|setval|lastval|uuid_short|last_insert_id|master_pos_wait|source_pos_wait|master_gtid_wait|load_file|sys_exec|sys_eval)$/i;

/**
 * The MySQL counterpart of lastingEffects: functions that act outside the transaction, any stored function (its
 * body may write non-transactional tables or take locks; DETERMINISTIC is only the author's word), sequences,
 * triggers on the written tables, and inserts that consume AUTO_INCREMENT values (not given back by a rollback).
 */
async function mysqlLastingEffects(c: MyClient, r: Analysis, sql: string, qualified: (name: string) => string[]): Promise<string | undefined> {
  const functions = [...new Set(r.statements.flatMap((s) => s.functions.map((f) => f.split('.').pop()!)))];
  const never = functions.find((f) => MYSQL_NEVER_PREVIEWED.test(f));
  if (never) return `preview skipped: calls ${never.toLowerCase()}()`;
  if (/\b(NEXT|PREVIOUS)\s+VALUE\s+FOR\b/i.test(sql)) return 'preview skipped: uses a sequence (NEXT VALUE FOR is not rolled back)';
  if (functions.length) {
    const stored = await c.query(`SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_TYPE = 'FUNCTION' AND LOWER(ROUTINE_NAME) IN (${functions.map((f) => myQuote(f.toLowerCase())).join(', ')}) LIMIT 1`);
    if (stored.rows.length) return `preview skipped: calls the stored function ${stored.rows[0]![0]}(), which could act outside the transaction`;
  }
  const inserts = r.statements.some((s) => s.command === 'INSERT' || s.command === 'REPLACE');
  for (const t of new Set(r.statements.flatMap((s) => s.tables.filter((x) => x.access === 'write').map((x) => x.name)))) {
    const [schema, table] = qualified(t);
    const where = `EVENT_OBJECT_SCHEMA = ${myQuote(schema!)} AND EVENT_OBJECT_TABLE = ${myQuote(table!)}`;
    if ((await c.query(`SELECT 1 FROM information_schema.TRIGGERS WHERE ${where} LIMIT 1`)).rows.length) return `preview skipped: table ${t} has triggers, which could act outside the transaction`;
    if (inserts) {
      const auto = await c.query(`SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = ${myQuote(schema!)} AND TABLE_NAME = ${myQuote(table!)}`);
      if (auto.rows[0]?.[0] != null) return `preview skipped: inserting into ${t} consumes AUTO_INCREMENT values, which a rollback does not give back`;
    }
  }
  return undefined;
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
        const skipped = await mysqlLastingEffects(c, r, a.sql, qualified);
        if (skipped) return { kind: 'none', note: skipped };
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
