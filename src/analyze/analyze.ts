import * as pg from 'libpg-query';
import { cacheKey } from './cachekey.js';
import { DYNAMIC_SQL_FUNCTIONS, SENSITIVE_CATALOGS, SENSITIVE_FUNCTIONS, lexingRefusal, settingKind } from './guard.js';

/** Broad statement classes that policy rules match on. */
export const STATEMENT_CLASSES = ['read', 'write', 'ddl', 'admin', 'transaction', 'session', 'other'] as const;
export type StatementClass = (typeof STATEMENT_CLASSES)[number];

/** Flags beyond the class; policy rules can match them. */
export const FLAGS = [
  'multi-statement', 'data-modifying-cte', 'do-block', 'dynamic-sql', 'privileged-function', 'locking', 'server-file', 'copy-program',
  'select-into', 'binary-copy',
  /** Calls a function with effects beyond its result (sequences, large objects, locks, sleep, volatile user code). */
  'volatile-function',
  /** Reads a catalog that holds secrets or other sessions' activity (pg_authid, pg_stat_activity, ...). */
  'sensitive-catalog',
  /** Changes a setting reserved to administrators (logging, replication role, library loading, unknown settings). */
  'privileged-setting',
  /** PREPARE TRANSACTION / COMMIT PREPARED / ROLLBACK PREPARED: a transaction that outlives the session. */
  'two-phase',
  /** Creates a stored program (MySQL procedure, function, trigger, event): code that runs later. */
  'stored-program-body',
] as const;
export type Flag = (typeof FLAGS)[number];

export interface TableRef {
  /** schema-qualified when the SQL qualified it, otherwise the bare name */
  name: string;
  access: 'read' | 'write' | 'ddl';
}

/** One output column of a SELECT, by position. */
export interface OutputColumn {
  /** As PostgreSQL names it. */
  name: string;
  /** The columns its expression reads: `column`, `table.column`, `table.*` (whole row), `(subquery s).x`. */
  refs: string[];
  /** The expression is a bare column reference. */
  plain?: boolean;
  /** The expression is count(...) (reveals no value). */
  count?: boolean;
  /** Every column it reads is a column of a table read directly (no subquery, CTE, function or star in between). */
  simple?: boolean;
}

export interface StatementInfo {
  /** Command tag-like name: SELECT, INSERT, DROP TABLE, ALTER TABLE, DO, ... */
  command: string;
  class: StatementClass;
  tables: TableRef[];
  /** Referenced column names as written (qualifier kept), for reporting and masking. */
  columns: string[];
  functions: string[];
  destructive: string[];
  flags: Flag[];
  /** For SQL-level `EXECUTE name`: the prepared statement it runs (resolved by the session). */
  executes?: string;
  /** For SQL-level `PREPARE name AS ...`: the name it defines. */
  prepares?: string;
  /** For `DEALLOCATE name` (empty string = ALL). */
  deallocates?: string;
  /** SQL cursors: DECLARE name, FETCH/MOVE name, CLOSE name (no name: CLOSE ALL). Masking follows a cursor's query. */
  cursor?: { op: 'declare' | 'fetch' | 'close'; name?: string };
  /**
   * For a SELECT: each output column's name (as PostgreSQL names it) and the columns its expression reads, as
   * `column`, `table.column`, or `table.*` for a whole-row reference such as row_to_json(t).
   */
  outputs?: OutputColumn[];
  /**
   * Columns used other than as a plain top-level output or count()'s argument: in predicates, joins, ordering,
   * grouping, windows, DISTINCT ON, FILTER, expressions, subqueries and CTEs (what the inference guard refuses for
   * masked columns). Positional and alias references in ORDER BY / GROUP BY / DISTINCT ON count as their outputs.
   */
  uses?: string[];
  /** Star or whole-row references (`*`, `t.*`, `row_to_json(t)`): outputs may carry any column of those tables. */
  wholeRow?: boolean;
  /** The analysis depends on integer literals (positional ORDER BY / GROUP BY): never share a parse across them. */
  exactOnly?: boolean;
  /** Stores values computed from the data where later statements can read them (set_config with a computed value). */
  storesValues?: boolean;
  /**
   * MySQL analyses: columns used to filter, join, sort or group (WHERE, JOIN ON/USING, ORDER BY, GROUP BY, HAVING),
   * as written. PostgreSQL analyses give the wider `uses` instead.
   */
  filterColumns?: string[];
  /** Operators used, by name (user-defined ones run functions; see analyze/catalog.ts). */
  operators?: string[];
  /** Types cast to, by name (a domain's CHECK can call a function; see analyze/catalog.ts). */
  casts?: string[];
  /** Set when Sluice refuses the statement whatever the policy says: why it cannot judge it or let it run. */
  refuse?: string;
  /** Functions the statement calls that act beyond their result, with what they do (from the catalog). */
  effects?: string[];
  /**
   * Databases the statement needs nobody else connected to (DROP DATABASE, ALTER DATABASE ... RENAME or SET
   * TABLESPACE, CREATE DATABASE ... TEMPLATE): the gateway closes its own idle connections to them first.
   */
  databases?: string[];
}

export interface Analysis {
  ok: true;
  statements: StatementInfo[];
  /** Union over statements. */
  classes: StatementClass[];
  tables: string[];
  destructive: string[];
  flags: Flag[];
  fingerprint: string;
  /** See StatementInfo.exactOnly. */
  exactOnly?: boolean;
  /** Functions called that act beyond their result (set with the database's catalog; see analyze/catalog.ts). */
  volatileFunctions?: string[];
}
export interface AnalysisFailure {
  ok: false;
  error: string;
  /** 1-based character position of the error, when known. */
  position?: number;
  /** The parser found the text invalid (not one of Sluice's own limits): the server may say why in its own words. */
  syntax?: boolean;
}
export type AnalysisResult = Analysis | AnalysisFailure;

type Node = Record<string, any>;

const ADMIN_STMTS = new Set([
  'GrantStmt', 'GrantRoleStmt', 'CreateRoleStmt', 'AlterRoleStmt', 'AlterRoleSetStmt', 'DropRoleStmt', 'AlterSystemStmt',
  'VacuumStmt', 'ClusterStmt', 'ReindexStmt', 'CheckPointStmt', 'LoadStmt', 'AlterDefaultPrivilegesStmt',
  'ReassignOwnedStmt', 'DropOwnedStmt', 'AlterDatabaseStmt', 'AlterDatabaseSetStmt', 'AlterDatabaseRefreshCollStmt',
  'CreatedbStmt', 'DropdbStmt', 'CreateTableSpaceStmt', 'DropTableSpaceStmt', 'AlterTableSpaceOptionsStmt',
  'CreateSubscriptionStmt', 'AlterSubscriptionStmt', 'DropSubscriptionStmt', 'CreatePublicationStmt',
  'AlterPublicationStmt', 'CreateUserMappingStmt', 'AlterUserMappingStmt', 'DropUserMappingStmt',
  'CreateForeignServerStmt', 'AlterForeignServerStmt', 'CreateFdwStmt', 'AlterFdwStmt', 'ImportForeignSchemaStmt',
  'CreateEventTrigStmt', 'AlterEventTrigStmt', 'SecLabelStmt', 'CreateExtensionStmt', 'AlterExtensionStmt',
  'AlterExtensionContentsStmt', 'CreatePLangStmt', 'AlterOwnerStmt', 'AlterSystemStmt',
]);
const SESSION_STMTS = new Set(['VariableShowStmt', 'DiscardStmt', 'ListenStmt', 'UnlistenStmt', 'DeallocateStmt', 'FetchStmt', 'ClosePortalStmt', 'ConstraintsSetStmt']);
const DDL_PREFIXES = ['Create', 'Alter', 'Drop', 'Define', 'Rename', 'Comment', 'Composite', 'Index', 'View', 'Rule'];

/** Marks a function name that stands for SQL/JSON syntax: judged only if the database has such a function. */
export const SQLJSON_PREFIX = 'sqljson:';
/** SQL/JSON and MERGE syntax nodes, by the function name an older server reads them as. */
const SQLJSON_FUNCTIONS: Record<string, string> = {
  JsonFuncExpr: 'json_value', JsonParseExpr: 'json', JsonScalarExpr: 'json_scalar', JsonSerializeExpr: 'json_serialize',
  JsonObjectConstructor: 'json_object', JsonArrayConstructor: 'json_array', JsonArrayQueryConstructor: 'json_array',
  JsonObjectAgg: 'json_objectagg', JsonArrayAgg: 'json_arrayagg', JsonIsPredicate: 'json_is', JsonTable: 'json_table',
  MergeSupportFunc: 'merge_action',
};

/** Functions whose call is an administrative act (or runs SQL we cannot see), whatever statement they sit in. */
const PRIVILEGED_FUNCTIONS = new Set([
  'pg_read_file', 'pg_read_binary_file', 'pg_ls_dir', 'pg_stat_file', 'pg_ls_logdir', 'pg_ls_waldir', 'pg_ls_tmpdir',
  'lo_import', 'lo_export', 'lo_from_bytea', 'pg_terminate_backend', 'pg_cancel_backend', 'pg_reload_conf',
  'pg_rotate_logfile', 'pg_file_write', 'pg_file_rename', 'pg_file_unlink', 'pg_logdir_ls',
  'pg_switch_wal', 'pg_create_restore_point', 'pg_promote', 'pg_drop_replication_slot', 'pg_create_logical_replication_slot',
  'pg_create_physical_replication_slot', 'pg_replication_origin_create',
]);

const OBJECT_NAMES: Record<string, string> = {
  OBJECT_TABLE: 'TABLE', OBJECT_VIEW: 'VIEW', OBJECT_MATVIEW: 'MATERIALIZED VIEW', OBJECT_INDEX: 'INDEX',
  OBJECT_SEQUENCE: 'SEQUENCE', OBJECT_SCHEMA: 'SCHEMA', OBJECT_FUNCTION: 'FUNCTION', OBJECT_FOREIGN_TABLE: 'FOREIGN TABLE',
  OBJECT_TYPE: 'TYPE', OBJECT_TRIGGER: 'TRIGGER', OBJECT_EXTENSION: 'EXTENSION', OBJECT_DATABASE: 'DATABASE',
  OBJECT_ROLE: 'ROLE', OBJECT_PROCEDURE: 'PROCEDURE', OBJECT_POLICY: 'POLICY', OBJECT_DOMAIN: 'DOMAIN',
};
const RELATION_OBJECTS = new Set(['OBJECT_TABLE', 'OBJECT_VIEW', 'OBJECT_MATVIEW', 'OBJECT_INDEX', 'OBJECT_SEQUENCE', 'OBJECT_FOREIGN_TABLE']);

const CLASS_RANK: Record<StatementClass, number> = { transaction: 0, session: 1, read: 2, write: 3, ddl: 4, other: 5, admin: 6 };
const escalate = (a: StatementClass, b: StatementClass): StatementClass => (CLASS_RANK[b] > CLASS_RANK[a] ? b : a);

const COMMAND_NAMES: Record<string, string> = {
  CreateStmt: 'CREATE TABLE', IndexStmt: 'CREATE INDEX', CreateFunctionStmt: 'CREATE FUNCTION', CreateTrigStmt: 'CREATE TRIGGER',
  CreateSeqStmt: 'CREATE SEQUENCE', CreatedbStmt: 'CREATE DATABASE', DropdbStmt: 'DROP DATABASE', VacuumStmt: 'VACUUM',
  VariableShowStmt: 'SHOW', GrantStmt: 'GRANT', GrantRoleStmt: 'GRANT ROLE', CreateRoleStmt: 'CREATE ROLE',
  AlterRoleStmt: 'ALTER ROLE', DropRoleStmt: 'DROP ROLE', AlterSystemStmt: 'ALTER SYSTEM', CreateExtensionStmt: 'CREATE EXTENSION',
};

const DML = new Set(['InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt']);

function rangeVarName(rv: Node): string {
  return rv.schemaname ? `${rv.schemaname}.${rv.relname}` : String(rv.relname);
}
function nameList(items: Node[] | undefined): string {
  return (items ?? []).map((i) => i.String?.sval ?? '?').join('.');
}

/** Walks one statement's tree, collecting tables (CTE-scoped), columns, functions and nested DML. */
class Collector {
  tables = new Map<string, TableRef['access']>();
  columns = new Set<string>();
  functions = new Set<string>();
  destructive: string[] = [];
  flags = new Set<Flag>();
  nestedClass: StatementClass = 'read';

  operators = new Set<string>();
  casts = new Set<string>();
  /** Why Sluice refuses the statement whatever the policy says (the first reason found). */
  refuse?: string;

  /** A setting changed by SET or set_config(): lexing settings only to values Sluice parses under; privileged ones flagged. */
  setting(name: string, value: string | undefined): void {
    const kind = settingKind(name);
    if (kind === 'lexing') this.refuse ??= lexingRefusal(name.toLowerCase(), value);
    else if (kind === 'privileged') {
      this.flags.add('privileged-setting');
      this.nestedClass = escalate(this.nestedClass, 'admin');
    }
  }

  /** SET / RESET (also inside ALTER ROLE|DATABASE|SYSTEM ... SET and function SET clauses). */
  variableSet(node: Node): void {
    const kind = String(node.kind ?? '');
    if (kind === 'VAR_RESET_ALL' || kind === 'VAR_SET_MULTI') return;
    const name = String(node.name ?? '');
    const args = (node.args as Node[] | undefined) ?? [];
    let value: string | undefined;
    if (kind === 'VAR_SET_VALUE') {
      const parts = args.map((a) => constantText(a));
      value = parts.some((p) => p === undefined) ? '?' : parts.join(',');
    }
    this.setting(name, value);
  }

  /** set_config(name, value, is_local): judged like SET when the name (and, for lexing settings, the value) is a constant. */
  setConfig(args: Node[] | undefined): void {
    const name = constantText(args?.[0]) ?? this.settingsRowName(args?.[0]);
    if (name === undefined) {
      this.refuse ??= 'set_config() with a setting name that is not a constant: Sluice cannot tell which setting it changes';
      return;
    }
    const value = constantText(args?.[1]);
    // A value computed from the data (set_config('app.x', ssn, false)) can be read back by a later statement.
    if (value === undefined) this.storesValues = true;
    if (settingKind(name) === 'lexing' && value === undefined) {
      this.refuse ??= `set_config('${name}', ...) with a value that is not a constant: Sluice cannot tell how the server will read later statements`;
      return;
    }
    this.setting(name, value ?? '');
  }

  /** Fold a nested statement's findings (EXPLAIN, PREPARE, COPY (query), DECLARE, PL/pgSQL bodies) into this one. */
  uses = new Set<string>();
  positional = false;
  /** Stores values computed from the statement's data where a later statement can read them (set_config). */
  storesValues = false;
  /** Names and aliases of every relation referenced (a bare column reference equal to one is a whole row). */
  relNames = new Set<string>();

  addUses(u: { uses: string[]; positional: boolean }): void {
    for (const x of u.uses) this.uses.add(x);
    this.positional ||= u.positional;
  }

  absorb(sub: StatementInfo): void {
    for (const x of sub.uses ?? []) this.uses.add(x);
    this.positional ||= !!sub.exactOnly;
    this.storesValues ||= !!sub.storesValues;
    if (sub.wholeRow) this.columns.add('*');
    for (const t of sub.tables) this.addTable(t.name, t.access);
    for (const col of sub.columns) this.columns.add(col);
    for (const f of sub.functions) this.functions.add(f);
    for (const o of sub.operators ?? []) this.operators.add(o);
    for (const t of sub.casts ?? []) this.casts.add(t);
    this.destructive.push(...sub.destructive);
    for (const f of sub.flags) this.flags.add(f);
    this.refuse ??= sub.refuse;
  }

  /** In `SELECT ... FROM pg_settings WHERE name = 'x'` (pg_dump's form for settings that may not exist): 'x'. */
  settingsRow?: string;

  /** The setting named by a `name` column reference inside such a SELECT. */
  settingsRowName(arg: Node | undefined): string | undefined {
    const f = (arg?.ColumnRef?.fields as Node[] | undefined)?.map((x) => x.String?.sval);
    return f && f.length === 1 && f[0] === 'name' ? this.settingsRow : undefined;
  }

  addTable(name: string, access: TableRef['access']) {
    const bare = name.toLowerCase().slice(name.lastIndexOf('.') + 1);
    if (SENSITIVE_CATALOGS.has(bare) && (!name.includes('.') || /^(pg_catalog|information_schema)\./i.test(name))) this.flags.add('sensitive-catalog');
    if (access === 'write' && name.toLowerCase().replace(/^pg_catalog\./, '') === 'pg_settings') {
      this.refuse ??= 'writing to pg_settings changes session settings behind SET: use SET (Sluice checks each setting)';
    }
    const prev = this.tables.get(name);
    const rank = { read: 0, write: 1, ddl: 2 } as const;
    if (!prev || rank[access] > rank[prev]) this.tables.set(name, access);
  }

  /** Visit any node; `scope` holds CTE names visible here; `writeTarget` marks the RangeVar being written. */
  visit(node: unknown, scope: ReadonlySet<string>): void {
    if (Array.isArray(node)) {
      for (const n of node) this.visit(n, scope);
      return;
    }
    if (!node || typeof node !== 'object') return;
    for (const [key, value] of Object.entries(node as Node)) {
      if (key === 'RangeVar') {
        const name = rangeVarName(value);
        if (value.schemaname || !scope.has(value.relname)) {
          this.addTable(name, 'read');
          this.relNames.add(String(value.alias?.aliasname ?? value.relname));
          if (SENSITIVE_CATALOGS.has(String(value.relname).toLowerCase())) this.flags.add('sensitive-catalog');
        }
        continue;
      }
      if (key === 'A_Expr' || key === 'SubLink') {
        // Operators run functions: `a ### b`, and `a ### ANY (SELECT ...)` (a SubLink's operName).
        for (const n of ((key === 'A_Expr' ? value.name : value.operName) as Node[] | undefined) ?? []) if (n.String) this.operators.add(String(n.String.sval));
        this.visit(value, scope);
        continue;
      }
      if (key === 'TypeCast') {
        const t = (value.typeName?.names as Node[] | undefined)?.map((n) => n.String?.sval).filter(Boolean);
        if (t?.length) this.casts.add(String(t.at(-1)).toLowerCase());
        this.visit(value, scope);
        continue;
      }
      if (SQLJSON_FUNCTIONS[key]) {
        // SQL/JSON syntax (PostgreSQL 16+) is a plain function call to an older server: judged by that name too.
        this.functions.add(`${SQLJSON_PREFIX}${SQLJSON_FUNCTIONS[key]!}`);
        this.visit(value, scope);
        continue;
      }
      if (key === 'ColumnRef') {
        const fields = (value.fields ?? []) as Node[];
        const parts = fields.map((f) => (f.String ? f.String.sval : f.A_Star ? '*' : '?'));
        this.columns.add(parts.join('.'));
        continue;
      }
      if (key === 'FuncCall') {
        const fname = nameList(value.funcname);
        const bare = fname.split('.').pop()!.toLowerCase();
        this.functions.add(fname);
        if (PRIVILEGED_FUNCTIONS.has(bare)) {
          this.flags.add('privileged-function');
          this.nestedClass = escalate(this.nestedClass, 'admin');
        }
        if (DYNAMIC_SQL_FUNCTIONS.has(bare)) {
          this.flags.add('dynamic-sql');
          this.nestedClass = escalate(this.nestedClass, 'admin');
        }
        if (SENSITIVE_FUNCTIONS.has(bare)) this.flags.add('sensitive-catalog');
        if (bare === 'set_config') this.setConfig(value.args as Node[] | undefined);
        this.visit(value, scope);
        continue;
      }
      if (key === 'VariableSetStmt' || key === 'setstmt') {
        this.variableSet(value);
        continue;
      }
      if (key === 'withClause' && value) continue; // handled by the owning statement
      if (key === 'SelectStmt' || DML.has(key)) {
        this.statement(key, value, scope, true);
        continue;
      }
      this.visit(value, scope);
    }
  }

  /** A (possibly nested) SELECT/INSERT/UPDATE/DELETE/MERGE with its own WITH scope. */
  statement(type: string, node: Node, outer: ReadonlySet<string>, nested: boolean): void {
    let scope: Set<string> = new Set(outer);
    const withClause = node.withClause as Node | undefined;
    if (withClause) {
      const ctes = (withClause.ctes ?? []).map((c: Node) => c.CommonTableExpr);
      const names = ctes.map((c: Node) => String(c.ctename));
      if (withClause.recursive) for (const n of names) scope.add(n);
      for (const cte of ctes) {
        // A non-recursive CTE sees only the CTEs before it: `WITH t AS (SELECT * FROM t)` reads the real table t.
        const q = cte.ctequery as Node;
        const qType = Object.keys(q)[0]!;
        if (DML.has(qType)) {
          this.flags.add('data-modifying-cte');
        }
        this.statement(qType, q[qType], scope, true);
        scope.add(String(cte.ctename));
      }
      scope = new Set([...scope, ...names]);
    }
    if (DML.has(type)) {
      if (nested) this.nestedClass = escalate(this.nestedClass, 'write');
      const rel = node.relation as Node | undefined;
      if (rel) {
        const name = rangeVarName(rel);
        if (rel.schemaname || !scope.has(rel.relname)) this.addTable(name, 'write');
      }
      const verb = type.replace('Stmt', '').toUpperCase();
      if ((type === 'DeleteStmt' || type === 'UpdateStmt') && rel) {
        const where = node.whereClause;
        if (!where) this.destructive.push(`${verb} without WHERE on ${rangeVarName(rel)}`);
        else if (!containsKey(where, 'ColumnRef') && !containsKey(where, 'SubLink')) this.destructive.push(`${verb} on ${rangeVarName(rel)} with a WHERE clause that does not reference any column`);
      }
      const { relation: _r, withClause: _w, ...rest } = node;
      this.visit(rest, scope);
      return;
    }
    if (type === 'SelectStmt') {
      const outerRow = this.settingsRow;
      this.settingsRow = pgSettingsRow(node);
      try {
        this.select(node, scope);
      } finally {
        this.settingsRow = outerRow;
      }
      return;
    }
    this.visit(node, scope);
  }

  private select(node: Node, scope: ReadonlySet<string>): void {
    if (node.intoClause) {
      this.flags.add('select-into');
      this.nestedClass = escalate(this.nestedClass, 'ddl');
      this.addTable(rangeVarName(node.intoClause.rel), 'ddl');
    }
    if (node.lockingClause) {
      // SELECT ... FOR UPDATE/SHARE takes row locks that other sessions wait on, like LOCK TABLE: a write.
      this.flags.add('locking');
      this.nestedClass = escalate(this.nestedClass, 'write');
    }
    const { withClause: _w, intoClause: _i, ...rest } = node;
    this.visit(rest, scope);
  }
}

/** 'x' when a SELECT reads exactly one row of pg_settings: `FROM [pg_catalog.]pg_settings WHERE name = 'x'`. */
function pgSettingsRow(node: Node): string | undefined {
  const from = node.fromClause as Node[] | undefined;
  const rv = from?.length === 1 ? from[0]!.RangeVar : undefined;
  if (!rv || rv.relname !== 'pg_settings' || (rv.schemaname && rv.schemaname !== 'pg_catalog')) return undefined;
  const w = node.whereClause?.A_Expr;
  if (!w || w.kind !== 'AEXPR_OP' || (w.name as Node[])?.[0]?.String?.sval !== '=') return undefined;
  const col = (w.lexpr?.ColumnRef?.fields as Node[] | undefined)?.map((x) => x.String?.sval);
  if (!col || col.length !== 1 || col[0] !== 'name') return undefined;
  return constantText(w.rexpr);
}

/** PostgreSQL's default name for an output expression (FigureColname, for the common cases). */
function outputName(val: Node | undefined): string {
  if (!val) return '?column?';
  if (val.ColumnRef) {
    const last = (val.ColumnRef.fields as Node[]).at(-1);
    return last?.String?.sval ?? '?column?';
  }
  if (val.FuncCall) return String((val.FuncCall.funcname as Node[]).at(-1)?.String?.sval ?? '?column?');
  if (val.TypeCast) {
    const inner = outputName(val.TypeCast.arg);
    return inner !== '?column?' ? inner : String((val.TypeCast.typeName?.names as Node[] | undefined)?.at(-1)?.String?.sval ?? '?column?');
  }
  if (val.CaseExpr) return 'case';
  if (val.CoalesceExpr) return 'coalesce';
  if (val.MinMaxExpr) return val.MinMaxExpr.op === 'IS_GREATEST' ? 'greatest' : 'least';
  if (val.SubLink) {
    const sub = val.SubLink;
    if (sub.subLinkType === 'EXISTS_SUBLINK') return 'exists';
    if (sub.subLinkType === 'ARRAY_SUBLINK') return 'array';
    const first = (sub.subselect?.SelectStmt?.targetList as Node[] | undefined)?.[0]?.ResTarget;
    return first ? (first.name ?? outputName(first.val)) : '?column?';
  }
  return '?column?';
}

/** Output columns of a (non-set-operation) SELECT with the columns each reads; whole-row refs via FROM aliases. */
function selectOutputs(node: Node): StatementInfo['outputs'] {
  if (!node.targetList) return undefined;
  const aliases = new Map<string, string>();
  const ctes = new Set(((node.withClause?.ctes as Node[] | undefined) ?? []).map((c) => String(c.CommonTableExpr?.ctename)));
  // Only plain tables (and joins of them) in FROM: an unqualified column is then a table's column.
  const baseOnly = ((node.fromClause as Node[] | undefined) ?? []).every(function base(f: Node): boolean {
    if (f.RangeVar) return !(!f.RangeVar.schemaname && ctes.has(String(f.RangeVar.relname)));
    if (f.JoinExpr) return base(f.JoinExpr.larg) && base(f.JoinExpr.rarg);
    return false;
  });
  const collectFrom = (n: unknown): void => {
    if (Array.isArray(n)) return n.forEach(collectFrom);
    if (!n || typeof n !== 'object') return;
    for (const [k, v] of Object.entries(n as Node)) {
      if (k === 'RangeVar') {
        const name = rangeVarName(v);
        aliases.set(String(v.alias?.aliasname ?? v.relname), name);
        continue;
      }
      if (k === 'RangeSubselect' && v.alias?.aliasname) aliases.set(String(v.alias.aliasname), `(subquery ${v.alias.aliasname})`);
      if (k === 'SelectStmt') continue; // sub-selects have their own scope
      collectFrom(v);
    }
  };
  collectFrom(node.fromClause);
  return (node.targetList as Node[]).map((t) => {
    const rt = t.ResTarget as Node;
    const refs = new Set<string>();
    const walk = (n: unknown): void => {
      if (Array.isArray(n)) return n.forEach(walk);
      if (!n || typeof n !== 'object') return;
      for (const [k, v] of Object.entries(n as Node)) {
        if (k === 'ColumnRef') {
          const parts = (v.fields as Node[]).map((f) => (f.String ? String(f.String.sval) : '*'));
          if (parts.length === 1 && parts[0] !== '*' && aliases.has(parts[0]!)) refs.add(`${aliases.get(parts[0]!)}.*`);
          if (parts.length >= 2 && aliases.has(parts[parts.length - 2]!)) refs.add(`${aliases.get(parts[parts.length - 2]!)}.${parts.at(-1)}`);
          else refs.add(parts.join('.'));
          continue;
        }
        walk(v);
      }
    };
    walk(rt.val);
    const v = rt.val as Node | undefined;
    const star = containsKey(v, 'A_Star');
    const plain = !!v?.ColumnRef && !star;
    // count(...), also cast (count(DISTINCT email)::int)
    const fc = (v?.TypeCast ? v.TypeCast.arg : v)?.FuncCall;
    const count = !!fc && nameList(fc.funcname).replace(/^pg_catalog\./, '') === 'count' && ((fc.args as Node[] | undefined) ?? []).every((a) => a.ColumnRef && !containsKey(a, 'A_Star'));
    const simple =
      baseOnly &&
      !star &&
      !containsKey(v, 'SubLink') &&
      [...refs].every((r) => {
        const dot = r.lastIndexOf('.');
        if (dot < 0) return true;
        const table = r.slice(0, dot);
        return r.slice(dot + 1) !== '*' && !table.startsWith('(subquery') && !ctes.has(table);
      });
    return { name: String(rt.name ?? outputName(rt.val)), refs: [...refs], ...(plain ? { plain } : {}), ...(count ? { count } : {}), ...(simple ? { simple } : {}) };
  });
}

const columnRefName = (v: Node): string => ((v.fields as Node[]) ?? []).map((f) => (f.String ? String(f.String.sval) : '*')).join('.');

/** Every column reference under a node, counted (JOIN ... USING columns too). */
function tallyColumns(n: unknown, counts: Map<string, number>, by = 1): void {
  if (Array.isArray(n)) return n.forEach((x) => tallyColumns(x, counts, by));
  if (!n || typeof n !== 'object') return;
  for (const [k, v] of Object.entries(n as Node)) {
    if (k === 'ColumnRef') {
      counts.set(columnRefName(v), (counts.get(columnRefName(v)) ?? 0) + by);
    } else if (k === 'usingClause') {
      for (const u of (v as Node[]) ?? []) if (u.String) counts.set(String(u.String.sval), (counts.get(String(u.String.sval)) ?? 0) + by);
    } else tallyColumns(v, counts, by);
  }
}

/**
 * What the inference guard looks at: columns used other than as a bare top-level output (of a SELECT, or a
 * RETURNING list) or as count()'s argument. ORDER BY / GROUP BY / DISTINCT ON by position or output alias use the
 * output's columns.
 */
function columnUses(type: string, node: Node): { uses: string[]; positional: boolean } {
  const counts = new Map<string, number>();
  tallyColumns(node, counts);
  let positional = false;
  const targets = ((type === 'SelectStmt' ? node.targetList : node.returningList) as Node[] | undefined)?.map((t) => t.ResTarget as Node) ?? [];
  for (const rt of targets) {
    const v = rt.val as Node | undefined;
    if (v?.ColumnRef && !containsKey(v, 'A_Star')) tallyColumns(v, counts, -1);
    const fc = (v?.TypeCast ? v.TypeCast.arg : v)?.FuncCall;
    // count()'s argument reveals no value (its FILTER and OVER clauses are uses like any other).
    if (fc && nameList(fc.funcname).replace(/^pg_catalog\./, '') === 'count') for (const a of (fc.args as Node[] | undefined) ?? []) if (a.ColumnRef) tallyColumns(a, counts, -1);
  }
  if (type === 'SelectStmt') {
    const keys: Node[] = [...((node.sortClause as Node[] | undefined) ?? []).map((x) => x.SortBy?.node as Node), ...((node.groupClause as Node[] | undefined) ?? []), ...((node.distinctClause as Node[] | undefined) ?? [])];
    for (const k of keys) {
      if (!k) continue;
      if (k.A_Const?.ival !== undefined) {
        positional = true;
        const t = targets[Number(k.A_Const.ival.ival ?? 0) - 1];
        if (t) tallyColumns(t.val, counts);
        continue;
      }
      const name = k.ColumnRef ? columnRefName(k.ColumnRef) : undefined;
      const aliased = name ? targets.find((t) => t.name === name) : undefined;
      if (aliased) tallyColumns(aliased.val, counts);
    }
  }
  return { uses: [...counts].filter(([, n]) => n > 0).map(([c]) => c), positional };
}

/** The text of a string or number constant (possibly cast), or undefined when the expression is not a constant. */
function constantText(n: Node | undefined): string | undefined {
  if (!n) return undefined;
  if (n.TypeCast) return constantText(n.TypeCast.arg);
  const c = n.A_Const;
  if (!c || c.isnull) return undefined;
  if (c.sval) return String(c.sval.sval ?? '');
  if (c.ival) return String(c.ival.ival ?? 0);
  if (c.fval) return String(c.fval.fval);
  if (c.boolval) return c.boolval.boolval ? 'on' : 'off';
  return undefined;
}

function containsKey(node: unknown, key: string): boolean {
  if (Array.isArray(node)) return node.some((n) => containsKey(n, key));
  if (!node || typeof node !== 'object') return false;
  for (const [k, v] of Object.entries(node as Node)) {
    if (k === key || containsKey(v, key)) return true;
  }
  return false;
}

function defElem(options: Node[] | undefined, name: string): Node | undefined {
  return (options ?? []).map((o) => o.DefElem).find((d) => d?.defname === name);
}

/** Analyze one parsed statement (the value under RawStmt.stmt). */
function analyzeStmt(stmt: Node, depth = 0): StatementInfo {
  const type = Object.keys(stmt)[0] ?? 'Unknown';
  const node = stmt[type] as Node;
  const c = new Collector();
  let cls: StatementClass = 'other';
  let command = COMMAND_NAMES[type] ?? type.replace(/Stmt$/, '').replace(/([a-z])([A-Z])/g, '$1 $2').toUpperCase();
  const info: Partial<StatementInfo> = {};

  const nested = (inner: Node | undefined): StatementInfo | undefined => {
    if (!inner) return undefined;
    const sub = analyzeStmt(inner, depth + 1);
    c.absorb(sub);
    return sub;
  };

  switch (type) {
    case 'SelectStmt':
      c.statement(type, node, new Set(), false);
      cls = escalate('read', c.nestedClass);
      command = node.intoClause ? 'SELECT INTO' : 'SELECT';
      info.outputs = selectOutputs(node);
      c.addUses(columnUses(type, node));
      break;
    case 'InsertStmt':
    case 'UpdateStmt':
    case 'DeleteStmt':
    case 'MergeStmt':
      c.statement(type, node, new Set(), false);
      cls = escalate('write', c.nestedClass);
      command = type.replace('Stmt', '').toUpperCase();
      c.addUses(columnUses(type, node));
      break;
    case 'CopyStmt': {
      command = node.is_from ? 'COPY FROM' : 'COPY TO';
      if (node.relation) {
        c.addTable(rangeVarName(node.relation), node.is_from ? 'write' : 'read');
        // COPY t TO copies every column (a whole row); with a column list, those columns.
        const cols = ((node.attlist as Node[] | undefined) ?? []).map((a) => String(a.String?.sval));
        if (cols.length) for (const col of cols) c.columns.add(col);
        else c.columns.add('*');
      }
      cls = node.is_from ? 'write' : 'read';
      const format = defElem(node.options, 'format')?.arg;
      if (String(format?.String?.sval ?? '').toLowerCase() === 'binary' || defElem(node.options, 'binary')) c.flags.add('binary-copy');
      if (node.query) {
        const sub = nested(node.query);
        cls = escalate(cls, sub?.class ?? 'read');
        // What COPY (query) writes out is the query's output.
        if (sub?.outputs) info.outputs = sub.outputs;
      }
      if (node.is_program) {
        c.flags.add('copy-program');
        c.destructive.push(`COPY ... PROGRAM runs a shell command on the database server (${JSON.stringify(node.filename ?? '')})`);
        cls = 'admin';
      } else if (node.filename) {
        c.flags.add('server-file');
        cls = 'admin';
      }
      break;
    }
    case 'ExplainStmt': {
      const sub = nested(node.query);
      // PostgreSQL takes the last of repeated options: the statement runs if any ANALYZE option is not plainly false.
      const falsy = (d: Node) => d.arg?.Boolean?.boolval === false || /^(false|off|no|0|f|of|n)$/i.test(String(d.arg?.String?.sval ?? d.arg?.A_Const?.sval?.sval ?? (d.arg?.Integer?.ival === 0 ? '0' : '')));
      const executes = ((node.options as Node[] | undefined) ?? []).some((o) => o.DefElem?.defname === 'analyze' && !falsy(o.DefElem));
      cls = executes ? (sub?.class ?? 'read') : 'read';
      command = executes ? 'EXPLAIN ANALYZE' : 'EXPLAIN';
      break;
    }
    case 'PrepareStmt': {
      const sub = nested(node.query);
      cls = sub?.class ?? 'other';
      command = 'PREPARE';
      info.prepares = String(node.name);
      break;
    }
    case 'ExecuteStmt':
      cls = 'other'; // resolved by the session from its PREPAREd statements
      command = 'EXECUTE';
      info.executes = String(node.name);
      c.visit(node.params, new Set());
      break;
    case 'DeclareCursorStmt': {
      const sub = nested(node.query);
      cls = sub?.class ?? 'read';
      command = 'DECLARE CURSOR';
      info.cursor = { op: 'declare', name: String(node.portalname) };
      // What FETCH returns is this query's output.
      if (sub?.outputs) info.outputs = sub.outputs;
      break;
    }
    case 'NotifyStmt':
      // Sends a message to other sessions, like pg_notify(): not a read.
      command = 'NOTIFY';
      cls = 'write';
      break;
    case 'FetchStmt':
      cls = 'session';
      command = node.ismove ? 'MOVE' : 'FETCH';
      info.cursor = { op: 'fetch', name: String(node.portalname ?? '') };
      break;
    case 'ClosePortalStmt':
      cls = 'session';
      command = 'CLOSE';
      info.cursor = { op: 'close', ...(node.portalname ? { name: String(node.portalname) } : {}) };
      break;
    case 'CreateTableAsStmt': {
      nested(node.query);
      const target = node.into?.rel;
      if (target) c.addTable(rangeVarName(target), 'ddl');
      cls = 'ddl';
      command = node.objtype === 'OBJECT_MATVIEW' ? 'CREATE MATERIALIZED VIEW' : 'CREATE TABLE AS';
      break;
    }
    case 'ViewStmt':
      nested(node.query);
      if (node.view) c.addTable(rangeVarName(node.view), 'ddl');
      cls = 'ddl';
      command = 'CREATE VIEW';
      break;
    case 'DropStmt': {
      const what = OBJECT_NAMES[node.removeType] ?? String(node.removeType).replace('OBJECT_', '');
      command = `DROP ${what}`;
      cls = 'ddl';
      const names: string[] = [];
      for (const o of node.objects ?? []) {
        const name = o.List ? nameList(o.List.items) : o.String ? o.String.sval : o.TypeName ? nameList(o.TypeName.names) : o.ObjectWithArgs ? nameList(o.ObjectWithArgs.objname) : '?';
        names.push(name);
        if (RELATION_OBJECTS.has(node.removeType)) c.addTable(name, 'ddl');
      }
      c.destructive.push(`DROP ${what} ${names.join(', ')}${node.behavior === 'DROP_CASCADE' ? ' CASCADE' : ''}`);
      if (node.removeType === 'OBJECT_ROLE' || node.removeType === 'OBJECT_DATABASE') cls = 'admin';
      break;
    }
    case 'TruncateStmt': {
      command = 'TRUNCATE';
      cls = 'write';
      const names = (node.relations ?? []).map((r: Node) => rangeVarName(r.RangeVar));
      for (const n of names) c.addTable(n, 'write');
      c.destructive.push(`TRUNCATE ${names.join(', ')}`);
      break;
    }
    case 'AlterTableStmt': {
      const objtype = OBJECT_NAMES[node.objtype] ?? 'TABLE';
      command = `ALTER ${objtype}`;
      cls = 'ddl';
      if (node.relation) c.addTable(rangeVarName(node.relation), 'ddl');
      for (const cmd of node.cmds ?? []) {
        const at = cmd.AlterTableCmd;
        if (!at) continue;
        if (at.subtype === 'AT_DropColumn') c.destructive.push(`ALTER ${objtype} ${rangeVarName(node.relation)} DROP COLUMN ${at.name}`);
        if (at.subtype === 'AT_DropConstraint') c.destructive.push(`ALTER ${objtype} ${rangeVarName(node.relation)} DROP CONSTRAINT ${at.name}`);
        if (at.subtype === 'AT_DetachPartition') c.destructive.push(`ALTER ${objtype} ${rangeVarName(node.relation)} DETACH PARTITION`);
        c.visit(at.def, new Set());
      }
      break;
    }
    case 'RenameStmt':
      command = 'ALTER ' + (OBJECT_NAMES[node.renameType] ?? 'OBJECT') + ' RENAME';
      cls = 'ddl';
      if (node.relation) c.addTable(rangeVarName(node.relation), 'ddl');
      break;
    case 'DoStmt': {
      command = 'DO';
      cls = 'write';
      c.flags.add('do-block');
      const lang = defElem(node.args, 'language')?.arg?.String?.sval ?? 'plpgsql';
      const body = defElem(node.args, 'as')?.arg?.String?.sval;
      c.destructive.push('DO block runs procedural code');
      if (String(lang).toLowerCase() !== 'plpgsql' || typeof body !== 'string') {
        c.flags.add('dynamic-sql');
        cls = 'admin';
        break;
      }
      cls = escalate(cls, analyzePlpgsql(body, c, depth));
      break;
    }
    case 'CallStmt':
      command = 'CALL';
      cls = 'write';
      c.visit(node.funccall, new Set());
      break;
    case 'TransactionStmt':
      cls = 'transaction';
      command = String(node.kind ?? '').replace('TRANS_STMT_', '').replace('_', ' ');
      if (['TRANS_STMT_PREPARE', 'TRANS_STMT_COMMIT_PREPARED', 'TRANS_STMT_ROLLBACK_PREPARED'].includes(String(node.kind))) {
        // A prepared transaction keeps its locks and changes after the session ends: an administrator's act.
        c.flags.add('two-phase');
        cls = 'admin';
      }
      break;
    case 'VariableSetStmt': {
      const name = String(node.name ?? '').toLowerCase();
      command = node.kind === 'VAR_RESET' || node.kind === 'VAR_RESET_ALL' ? 'RESET' : 'SET';
      cls = name === 'role' || name === 'session_authorization' || name === 'session authorization' ? 'admin' : 'session';
      if (node.kind === 'VAR_RESET_ALL') cls = 'session';
      c.variableSet(node);
      break;
    }
    case 'LockStmt':
      command = 'LOCK TABLE';
      cls = 'write';
      c.flags.add('locking');
      for (const r of node.relations ?? []) c.addTable(rangeVarName(r.RangeVar), 'write');
      break;
    case 'RefreshMatViewStmt':
      command = 'REFRESH MATERIALIZED VIEW';
      cls = 'write';
      if (node.relation) c.addTable(rangeVarName(node.relation), 'write');
      break;
    case 'DeallocateStmt':
      cls = 'session';
      command = 'DEALLOCATE';
      info.deallocates = node.name ? String(node.name) : '';
      break;
    default: {
      if (ADMIN_STMTS.has(type)) cls = 'admin';
      else if (SESSION_STMTS.has(type)) cls = 'session';
      else if (DDL_PREFIXES.some((p) => type.startsWith(p))) cls = 'ddl';
      else cls = 'other';
      if (type.startsWith('Drop')) {
        // DROP DATABASE / ROLE / TABLESPACE / SUBSCRIPTION ... name their target in different fields.
        const roles = (node?.roles ?? []).map((r: Node) => r.RoleSpec?.rolename).filter(Boolean);
        const target = [node?.dbname, node?.tablespacename, node?.subname, ...roles].filter(Boolean).join(', ');
        c.destructive.push(target ? `${command} ${target}` : command);
      }
      // Relations named directly by DDL (CREATE TABLE x, CREATE INDEX ON x, CREATE TRIGGER ON x, ...)
      const rel = node?.relation?.relname ? node.relation : node?.relation?.RangeVar;
      if (rel?.relname) c.addTable(rangeVarName(rel), cls === 'ddl' ? 'ddl' : 'read');
      const { relation: _r, ...rest } = node ?? {};
      c.visit(rest, new Set());
    }
  }
  cls = escalate(cls, c.nestedClass === 'read' ? cls : c.nestedClass);
  const databases = exclusiveDatabases(type, node);
  if (databases.length) info.databases = databases;
  return {
    command,
    class: cls,
    tables: [...c.tables].map(([name, access]) => ({ name, access })),
    columns: [...c.columns],
    functions: [...c.functions],
    destructive: c.destructive,
    flags: [...c.flags],
    ...(c.operators.size ? { operators: [...c.operators] } : {}),
    ...(c.casts.size ? { casts: [...c.casts] } : {}),
    ...(c.uses.size ? { uses: [...c.uses] } : {}),
    ...(c.positional ? { exactOnly: true } : {}),
    ...(c.storesValues ? { storesValues: true } : {}),
    ...([...c.columns].some((col) => col === '*' || col.endsWith('.*') || c.relNames.has(col)) ? { wholeRow: true } : {}),
    ...(c.refuse ? { refuse: c.refuse } : {}),
    ...info,
  };
}

/** See StatementInfo.databases. */
function exclusiveDatabases(type: string, node: Node): string[] {
  const option = (name: string) => (node?.options ?? []).map((o: Node) => o.DefElem).find((d: Node) => d?.defname === name)?.arg?.String?.sval;
  const names: unknown[] = [];
  if (type === 'DropdbStmt') names.push(node.dbname);
  else if (type === 'RenameStmt' && node.renameType === 'OBJECT_DATABASE') names.push(node.subname, node.newname);
  else if (type === 'CreatedbStmt') names.push(option('template'));
  else if (type === 'AlterDatabaseStmt' && option('tablespace') !== undefined) names.push(node.dbname);
  return names.filter((n): n is string => typeof n === 'string' && n !== '');
}

/** Parse a PL/pgSQL body and fold every embedded SQL statement into the collector; returns the highest class. */
function analyzePlpgsql(body: string, c: Collector, depth: number): StatementClass {
  let cls: StatementClass = 'read';
  let tree: unknown;
  try {
    tree = pg.parsePlPgSQLSync(`CREATE FUNCTION sluice_inline() RETURNS void LANGUAGE plpgsql AS $sluice_body$${body}$sluice_body$`);
  } catch {
    // The body could not be parsed (or contains our delimiter): we cannot see inside it, so treat it as opaque code.
    c.flags.add('dynamic-sql');
    return 'admin';
  }
  const fold = (sql: string) => {
    if (depth > 8) throw new Error('PL/pgSQL nesting too deep to analyze');
    const r = pg.parseSync(sql) as Node;
    for (const raw of r.stmts ?? []) {
      const sub = analyzeStmt(raw.stmt, depth + 1);
      cls = escalate(cls, sub.class);
      c.absorb(sub);
    }
  };
  const walk = (n: unknown): void => {
    if (Array.isArray(n)) return n.forEach(walk);
    if (!n || typeof n !== 'object') return;
    for (const [k, v] of Object.entries(n as Node)) {
      if (k === 'PLpgSQL_stmt_dynexecute' || k === 'PLpgSQL_stmt_dynfors' || k === 'PLpgSQL_stmt_open' && v?.dynquery) {
        c.flags.add('dynamic-sql');
        c.destructive.push('dynamic EXECUTE inside a DO block (the SQL it runs is only known at run time)');
        cls = escalate(cls, 'admin');
        // When the executed SQL is a plain string constant we can still see what it does.
        const q = (v.query ?? v.dynquery)?.PLpgSQL_expr?.query as string | undefined;
        const lit = q?.match(/^\s*'((?:[^']|'')*)'\s*$/);
        if (lit) {
          try {
            fold(lit[1]!.replace(/''/g, "'"));
          } catch {
            /* opaque */
          }
        }
        continue;
      }
      if (k === 'PLpgSQL_expr') {
        const sql = String(v.query ?? '');
        try {
          fold(v.parseMode === 0 || v.parseMode === undefined ? sql : `SELECT ${sql}`);
        } catch {
          /* expressions with PL/pgSQL-only syntax: the variables are not tables */
        }
        continue;
      }
      walk(v);
    }
  };
  walk(tree);
  return cls;
}

function summarize(statements: StatementInfo[], fingerprint: string): Analysis {
  const classes = new Set<StatementClass>();
  const tables = new Set<string>();
  const destructive: string[] = [];
  const flags = new Set<Flag>();
  for (const s of statements) {
    classes.add(s.class);
    for (const t of s.tables) tables.add(t.name);
    destructive.push(...s.destructive);
    for (const f of s.flags) flags.add(f);
  }
  if (statements.length > 1) flags.add('multi-statement');
  const exactOnly = statements.some((s) => s.exactOnly);
  return { ok: true, statements, classes: [...classes], tables: [...tables], destructive, flags: [...flags], fingerprint, ...(exactOnly ? { exactOnly } : {}) };
}

/** Statements in one message, and comment openers in one text, beyond which Sluice refuses to analyze. */
const MAX_STATEMENTS = 2000;
const MAX_COMMENT_OPENERS = 1000;

let loaded: Promise<void> | undefined;
/** libpg-query is WASM: load it once before the first analyze(). */
export function loadParser(): Promise<void> {
  return (loaded ??= pg.loadModule());
}

/** Parse and classify SQL (uncached). Never throws: unparsable SQL yields { ok: false }. */
export function analyzeUncached(sql: string): AnalysisResult {
  // The empty query: nothing runs (the server answers EmptyQueryResponse); the parser refuses an empty string.
  if (sql === '') return summarize([], '');
  // Bounds that keep one message from holding the event loop (the scanner is quadratic in nested comment openers).
  if (sql.length > 4096) {
    const count = (needle: string) => {
      let n = 0;
      for (let i = sql.indexOf(needle); i >= 0 && n <= MAX_STATEMENTS; i = sql.indexOf(needle, i + needle.length)) n++;
      return n;
    };
    if (count('/*') > MAX_COMMENT_OPENERS) return { ok: false, error: `statement has more than ${MAX_COMMENT_OPENERS} comment openers; Sluice does not analyze it` };
    if (count(';') > MAX_STATEMENTS) return { ok: false, error: `message has more than ${MAX_STATEMENTS} statements; send them in several messages` };
  }
  let tree: Node;
  try {
    tree = pg.parseSync(sql) as Node;
  } catch (e) {
    if (e instanceof RangeError) return { ok: false, error: 'statement is nested too deeply for Sluice to analyze' };
    const details = (e as { sqlDetails?: { cursorPosition?: number } }).sqlDetails;
    return { ok: false, error: (e as Error).message, position: details?.cursorPosition !== undefined ? details.cursorPosition + 1 : undefined, syntax: true };
  }
  if ((tree.stmts ?? []).length > MAX_STATEMENTS) return { ok: false, error: `message has more than ${MAX_STATEMENTS} statements; send them in several messages` };
  try {
    const statements = (tree.stmts ?? []).map((s: Node) => analyzeStmt(s.stmt ?? {}));
    let fingerprint = '';
    try {
      fingerprint = pg.fingerprintSync(sql);
    } catch {
      fingerprint = '';
    }
    return summarize(statements, fingerprint);
  } catch (e) {
    if (e instanceof RangeError) return { ok: false, error: 'statement is nested too deeply for Sluice to analyze' };
    return { ok: false, error: `could not analyze statement: ${(e as Error).message}` };
  }
}

/** LRU-ish cache of analyses keyed by SQL text with numeric literals normalized. */
export class AnalysisCache {
  private map = new Map<string, AnalysisResult>();
  hits = 0;
  misses = 0;
  /**
   * `analyzer` and `key` default to PostgreSQL; the key may merge texts only where the dialect's lexer is sure they
   * parse alike (exact text for other dialects).
   */
  constructor(
    private readonly max = 20_000,
    private readonly analyzer: (sql: string) => AnalysisResult = analyzeUncached,
    private readonly key: (sql: string) => string = cacheKey,
  ) {}
  analyze(sql: string): AnalysisResult {
    const key = sql.length > 100_000 ? sql : this.key(sql);
    // Failures, and analyses that depend on integer literals (ORDER BY 2), are kept under their exact text only, in
    // a key space of their own (a NUL never occurs in statement text).
    const exact = `\u0000${sql}`;
    const hit = this.map.get(key) ?? this.map.get(exact);
    if (hit) {
      this.hits++;
      return hit;
    }
    this.misses++;
    const r = this.analyzer(sql);
    if (this.map.size >= this.max) {
      // Drop the oldest eighth: cheap amortized eviction.
      let n = this.max >> 3;
      for (const k of this.map.keys()) {
        this.map.delete(k);
        if (--n <= 0) break;
      }
    }
    // A failure is kept only under its exact text: texts that share a normalized key differ in literal values, and
    // one value can be invalid where another is not (ALTER INDEX ... ALTER COLUMN 0 vs 2).
    if (sql.length <= 100_000) this.map.set(r.ok && !r.exactOnly ? key : exact, r);
    return r;
  }
}
