import { init as initParser, parse } from '@guanmingchiu/sqlparser-ts';
import crypto from 'node:crypto';
import type { Analysis, AnalysisResult, Flag, StatementClass, StatementInfo, TableRef } from './analyze.js';
import { withoutMariadbClauses } from './mysql-clauses.js';
import { programAfterStatements, programKind, recogniseMysql, recogniseProgram } from './mysql-programs.js';
import { prepareStatements, sqlDeallocate, sqlPrepare } from './mysql-prepare.js';
import { forParser, functionEffect, knownBuiltin, lexingRefusal, lexingVariable, privilegedVariable, SENSITIVE_SHOW, sensitiveTable, unsupported, type SetValue } from './guard-mysql.js';

/**
 * MySQL/MariaDB statement analysis with datafusion-sqlparser-rs (WASM), MySQL dialect. It reads executable
 * comments (`/*! ... *\/`, and MariaDB's `/*M! ... *\/`) as the server does, so `SELECT 1 /*! ; DROP TABLE t *\/` is
 * seen as two statements. The statement guard (guard-mysql.ts) adds what the grammar does not say: lexing settings,
 * privileged settings, functions with effects, secret-bearing catalogs, dynamic SQL.
 * Produces the same Analysis as the PostgreSQL analyzer so policy, masking and audit treat both alike.
 * Whatever the parser cannot read is refused by the Governor (fail closed).
 */

let ready: Promise<void> | undefined;
export function loadMysqlParser(): Promise<void> {
  return (ready ??= initParser().then(() => undefined));
}

type Node = any;

const TXN = new Set(['StartTransaction', 'Commit', 'Rollback', 'Savepoint', 'ReleaseSavepoint', 'SetTransaction']);
const SESSION = new Set(['Set', 'Use', 'ShowVariable', 'ShowVariables', 'ShowStatus', 'Deallocate', 'Prepare', 'Execute', 'Flush', 'Kill', 'Unlock', 'UnlockTables']);
const READ = new Set(['Query', 'Explain', 'ExplainTable', 'ShowTables', 'ShowColumns', 'ShowCreate', 'ShowDatabases', 'ShowSchemas', 'ShowFunctions', 'ShowCollation', 'ShowObjects', 'ShowCharset', 'ShowViews']);
const WRITE = new Set(['Insert', 'Update', 'Delete', 'Merge', 'Copy', 'LoadData', 'LockTables']);
const ADMIN = new Set(['Grant', 'Revoke', 'CreateRole', 'DropRole', 'CreateUser', 'AlterUser', 'RenameUser', 'Kill', 'Flush', 'Install', 'Uninstall', 'CreateServer', 'AlterRole']);
const DDL_PREFIX = ['Create', 'Alter', 'Drop', 'Truncate', 'Rename', 'Comment', 'Analyze', 'Optimize'];
/** Functions that reach the server's files or sleep/benchmark it. */
const PRIVILEGED_FUNCS = new Set(['load_file', 'sys_exec', 'sys_eval', 'benchmark', 'get_lock', 'release_all_locks', 'master_pos_wait', 'source_pos_wait']);

/** Keys under which ObjectName arrays (tables, functions, objects) appear: their parts are not column references. */
const NAME_KEYS = new Set(['name', 'names', 'table_name', 'table_names', 'obj_name', 'TableName', 'ObjectName', 'on', 'grantees', 'objects', 'Tables']);
/** Clauses whose column references filter, join, sort or group (for the inference guard). */
const FILTER_KEYS = new Set(['selection', 'having', 'group_by', 'order_by', 'join_operator', 'qualify', 'sort_by']);

const identOf = (p: Node): string | undefined => (typeof p?.Identifier?.value === 'string' ? p.Identifier.value : typeof p?.value === 'string' ? p.value : undefined);
const objectName = (parts: Node): string | undefined => (Array.isArray(parts) ? parts.map(identOf).filter((x): x is string => x !== undefined).join('.') || undefined : undefined);

/** 0-based offsets of the start of each line, to turn parser spans (line, column) into string offsets. */
function lineStarts(sql: string): number[] {
  const starts = [0];
  for (let i = 0; i < sql.length; i++) if (sql[i] === '\n') starts.push(i + 1);
  return starts;
}

/** The smallest span covering a node (the parser records spans on leaves). */
function spanOf(n: Node): { start: [number, number]; end: [number, number] } | undefined {
  let best: { start: [number, number]; end: [number, number] } | undefined;
  const visit = (x: Node) => {
    if (!x || typeof x !== 'object') return;
    if (x.span?.start && x.span?.end && x.span.start.line > 0) {
      const s: [number, number] = [x.span.start.line, x.span.start.column];
      const e: [number, number] = [x.span.end.line, x.span.end.column];
      if (!best) best = { start: s, end: e };
      else {
        if (s[0] < best.start[0] || (s[0] === best.start[0] && s[1] < best.start[1])) best.start = s;
        if (e[0] > best.end[0] || (e[0] === best.end[0] && e[1] > best.end[1])) best.end = e;
      }
    }
    for (const v of Array.isArray(x) ? x : Object.values(x)) visit(v);
  };
  visit(n);
  return best;
}

class Collector {
  tables = new Map<string, TableRef['access']>();
  columns = new Set<string>();
  filterColumns = new Set<string>();
  functions = new Set<string>();
  ctes = new Set<string>();
  flags = new Set<Flag>();

  addTable(name: string | undefined, access: TableRef['access']): void {
    if (!name || name.includes('*')) return;
    const prev = this.tables.get(name);
    // Strongest access wins: ddl > write > read.
    const rank = { read: 0, write: 1, ddl: 2 };
    if (!prev || rank[access] > rank[prev]) this.tables.set(name, access);
  }

  /** Walk any node: tables in FROM/JOIN, column references, functions, CTE names, filter columns. */
  visit(n: Node, inFilter = false, key = ''): void {
    if (!n || typeof n !== 'object') return;
    if (Array.isArray(n)) {
      if (NAME_KEYS.has(key)) return;
      for (const x of n) this.visit(x, inFilter, key);
      return;
    }
    if (n.cte_tables) for (const c of n.cte_tables) if (c?.alias?.name?.value) this.ctes.add(String(c.alias.name.value).toLowerCase());
    if (n.relation?.Table?.name) this.addTable(objectName(n.relation.Table.name), 'read');
    if (n.Identifier && typeof n.Identifier.value === 'string' && !NAME_KEYS.has(key)) this.column(n.Identifier.value, inFilter);
    if (Array.isArray(n.CompoundIdentifier)) this.column(n.CompoundIdentifier.map(identOf).join('.'), inFilter);
    if (n.Function?.name) {
      const f = objectName(n.Function.name)?.toLowerCase();
      if (f) {
        this.functions.add(f);
        if (PRIVILEGED_FUNCS.has(f.slice(f.lastIndexOf('.') + 1))) this.flags.add('privileged-function');
      }
    }
    if (Array.isArray(n.locks) && n.locks.length) this.flags.add('locking');
    for (const [k, v] of Object.entries(n)) {
      if (k === 'span' || k === 'alias') continue;
      this.visit(v, inFilter || FILTER_KEYS.has(k), k);
    }
  }

  column(ref: string, inFilter: boolean): void {
    if (!ref || ref.startsWith('@')) return;
    this.columns.add(ref);
    if (inFilter) this.filterColumns.add(ref);
  }
}

function classify(kind: string, body: Node): StatementClass {
  if (TXN.has(kind)) return 'transaction';
  if (kind === 'Query') return 'read';
  if (READ.has(kind) || kind.startsWith('Show')) return 'read';
  if (WRITE.has(kind)) return 'write';
  if (ADMIN.has(kind)) return 'admin';
  if (SESSION.has(kind)) return 'session';
  if (kind === 'Drop' && ['Database', 'Schema', 'User', 'Role'].includes(String(body?.object_type))) return body.object_type === 'User' || body.object_type === 'Role' ? 'admin' : 'ddl';
  if (DDL_PREFIX.some((p) => kind.startsWith(p))) return 'ddl';
  return 'other';
}

const COMMANDS: Record<string, string> = {
  Query: 'SELECT', Insert: 'INSERT', Update: 'UPDATE', Delete: 'DELETE', Truncate: 'TRUNCATE', StartTransaction: 'BEGIN', Commit: 'COMMIT', Rollback: 'ROLLBACK',
  Set: 'SET', Use: 'USE', ExplainTable: 'DESCRIBE', Explain: 'EXPLAIN', CreateTable: 'CREATE TABLE', AlterTable: 'ALTER TABLE', CreateIndex: 'CREATE INDEX', CreateView: 'CREATE VIEW',
  CreateDatabase: 'CREATE DATABASE', Grant: 'GRANT', Revoke: 'REVOKE', CreateUser: 'CREATE USER',
};

function commandOf(kind: string, body: Node): string {
  if (kind === 'Insert' && body?.replace_into) return 'REPLACE';
  if (kind === 'Drop') return `DROP ${String(body?.object_type ?? '').toUpperCase()}`.trim();
  // SHOW forms the parser keeps as bare words (SHOW GRANTS, SHOW ENGINE ..., SHOW TABLE STATUS): named by their first word.
  if (kind === 'ShowVariable' && Array.isArray(body?.variable) && body.variable.length) return `SHOW ${String(identOf(body.variable[0]) ?? '').toUpperCase()}`.trim();
  if (COMMANDS[kind]) return COMMANDS[kind]!;
  return kind.replace(/([a-z])([A-Z])/g, '$1 $2').toUpperCase();
}

const DML = ['Insert', 'Update', 'Delete', 'Merge'];
const CLASS_RANK: Record<StatementClass, number> = { read: 0, session: 0, transaction: 0, other: 1, write: 1, ddl: 2, admin: 2 };

/** One parsed statement (EXECUTE IMMEDIATE of a constant text: the statements of that text). */
function analyzeStatement(stmt: Node, sql: string, starts: number[], depth: number): StatementInfo[] {
  // Unit variants (UNLOCK TABLES) come as bare strings.
  const kind = typeof stmt === 'string' ? stmt : (Object.keys(stmt ?? {})[0] ?? 'Unknown');
  const body = typeof stmt === 'object' ? stmt[kind] : undefined;
  if (kind === 'Execute') return executeStatement(body, depth);
  // WITH ... DELETE/UPDATE/INSERT: the statement is the DML (the CTEs are read).
  const dml = kind === 'Query' ? DML.find((k) => body?.body?.[k]) : undefined;
  if (dml) {
    const inner = analyzeStatement(body.body[dml], sql, starts, depth);
    const ctes = new Collector();
    ctes.visit(body.with);
    const isCte = (n: string) => !n.includes('.') && ctes.ctes.has(n.toLowerCase());
    return inner.map((s) => ({
      ...s,
      tables: [...s.tables.filter((t) => !isCte(t.name)), ...[...ctes.tables].filter(([n]) => !isCte(n) && !s.tables.some((t) => t.name === n)).map(([name, access]) => ({ name, access }))],
      functions: [...new Set([...s.functions, ...ctes.functions])],
      flags: [...new Set([...s.flags, ...ctes.flags, 'data-modifying-cte' as Flag])],
    }));
  }
  let cls = classify(kind, body);
  const c = new Collector();
  const destructive: string[] = [];
  const flags = c.flags;
  let refuse: string | undefined;
  let serverDefault = false;
  switch (kind) {
    case 'Set': {
      const j = judgeSet(body);
      if (j.privileged) {
        cls = 'admin';
        flags.add('privileged-setting');
      }
      refuse = j.refuse;
      serverDefault = j.serverDefault !== undefined;
      break;
    }
    case 'Prepare':
      // Read by mysql-prepare.ts before the parser; a PREPARE the parser reads is another form.
      refuse = 'not supported by Sluice: SQL-level PREPARE in this form (dynamic SQL); use PREPARE name FROM \'<statement>\' or your client\'s prepared statements';
      break;
    case 'LockTables':
      flags.add('locking');
      for (const t of body.tables ?? []) c.addTable(identOf(t.table) ?? objectName(t.table), 'write');
      break;
    case 'ShowProcessList':
      flags.add('sensitive-catalog');
      break;
    case 'ShowVariable': {
      const words: string[] = (body.variable ?? []).map((w: Node) => String(identOf(w) ?? '')).filter(Boolean);
      if (SENSITIVE_SHOW.test(words.join(' '))) flags.add('sensitive-catalog');
      showFrom(words, c);
      break;
    }
    case 'Insert':
      c.addTable(objectName(body.table?.TableName ?? body.table_name ?? body.table), 'write');
      break;
    case 'Update':
      if (body.table?.relation?.Table?.name) c.addTable(objectName(body.table.relation.Table.name), 'write');
      if (!body.selection) destructive.push('UPDATE without WHERE');
      break;
    case 'Delete': {
      const from = body.from?.WithFromKeyword ?? body.from?.WithoutKeyword ?? [];
      for (const f of from) if (f?.relation?.Table?.name) c.addTable(objectName(f.relation.Table.name), 'write');
      for (const t of body.tables ?? []) c.addTable(objectName(t), 'write');
      if (!body.selection) destructive.push('DELETE without WHERE');
      break;
    }
    case 'Drop':
      for (const n of body.names ?? []) c.addTable(objectName(n), 'ddl');
      destructive.push(`DROP ${String(body.object_type ?? '').toUpperCase()}`);
      break;
    case 'Truncate':
      for (const t of body.table_names ?? []) c.addTable(objectName(t.name), 'ddl');
      destructive.push('TRUNCATE');
      break;
    case 'AlterTable':
      c.addTable(objectName(body.name), 'ddl');
      for (const op of body.operations ?? []) {
        const k = Object.keys(op ?? {})[0] ?? '';
        if (k.startsWith('Drop')) destructive.push(`ALTER TABLE ... ${k.replace(/([a-z])([A-Z])/g, '$1 $2').toUpperCase()}`);
      }
      break;
    case 'ExplainTable':
      c.addTable(objectName(body.table_name), 'read');
      break;
    case 'ShowCreate':
      c.addTable(objectName(body.obj_name), 'read');
      break;
    default:
      if (cls === 'ddl') for (const k of ['name', 'table_name']) if (Array.isArray(body?.[k])) c.addTable(objectName(body[k]), 'ddl');
  }
  c.visit(body);
  // SHOW TABLES FROM db, SHOW COLUMNS FROM t FROM db: the database they read.
  const parent = body?.show_options?.show_in?.parent_name;
  if (Array.isArray(parent) && parent.length) {
    const names = parent.map(identOf).filter((x: string | undefined): x is string => x !== undefined);
    if (kind === 'ShowColumns') c.addTable(names.join('.'), 'read');
    else c.tables.set(`${names[0]}.*`, 'read');
  }
  // CTE names are not tables.
  for (const name of [...c.tables.keys()]) if (!name.includes('.') && c.ctes.has(name.toLowerCase())) c.tables.delete(name);
  if ([...c.tables.keys()].some(sensitiveTable)) flags.add('sensitive-catalog');
  // Functions with effects (sequences, named locks, sleeping, stored functions, unknown names) make a statement at
  // least a write. Stored functions are judged again from the server's catalog when it is known (mysql-routines.ts):
  // what the statement is without them is kept for that.
  const effectsOf = (names: string[]) => names.flatMap((f) => {
    const e = functionEffect(f);
    return e ? [`${f}() ${e}`] : [];
  });
  const effects = effectsOf([...c.functions]);
  const builtinEffects = effectsOf([...c.functions].filter(knownBuiltin));
  const withoutRoutines: RoutineCalls = { cls: builtinEffects.length && CLASS_RANK[cls] < CLASS_RANK.write ? 'write' : cls, effects: builtinEffects, functions: [...c.functions], ...(kind === 'Call' ? { procedure: objectName(body?.name) } : {}) };
  if (effects.length) {
    flags.add('volatile-function');
    if (CLASS_RANK[cls] < CLASS_RANK.write) cls = 'write';
  }
  const outputs: StatementInfo['outputs'] = [];
  const select = kind === 'Query' ? body?.body?.Select : undefined;
  if (select) {
    for (const item of select.projection ?? []) {
      const expr = item.UnnamedExpr ?? item.ExprWithAlias?.expr;
      if (!expr) continue;
      const refs = new Collector();
      refs.visit(expr);
      let name: string | undefined = item.ExprWithAlias?.alias?.value;
      if (!name && expr.Identifier) name = expr.Identifier.value;
      if (!name && Array.isArray(expr.CompoundIdentifier)) name = identOf(expr.CompoundIdentifier[expr.CompoundIdentifier.length - 1]);
      if (!name) {
        // MySQL names an unaliased expression column by its text as written.
        const sp = spanOf(expr);
        if (sp) {
          const from = (starts[sp.start[0] - 1] ?? 0) + sp.start[1] - 1;
          const to = (starts[sp.end[0] - 1] ?? 0) + sp.end[1] - 1;
          name = sql.slice(from, to);
          // The leaf spans end before a closing parenthesis.
          let depth = 0;
          for (const ch of name) depth += ch === '(' ? 1 : ch === ')' ? -1 : 0;
          let end = to;
          while (depth > 0 && end < sql.length) {
            if (sql[end] === ')') depth--;
            end++;
          }
          name = sql.slice(from, end);
        }
      }
      if (name) outputs.push({ name, refs: [...refs.columns], ...(expr.Identifier || expr.CompoundIdentifier ? { plain: true } : {}) });
    }
  }
  const info: StatementInfo = {
    command: commandOf(kind, body),
    class: cls,
    tables: [...c.tables].map(([name, access]) => ({ name, access })),
    columns: [...c.columns],
    functions: [...c.functions],
    destructive,
    flags: [...flags],
    outputs: outputs.length ? outputs : undefined,
    filterColumns: [...c.filterColumns],
    ...(effects.length ? { effects } : {}),
    ...(refuse ? { refuse } : {}),
    ...(storesUserVariables(kind, body) ? { storesValues: true } : {}),
  };
  if (serverDefault) SERVER_DEFAULT.add(info);
  if (c.functions.size || kind === 'Call') ROUTINE_CALLS.set(info, withoutRoutines);
  if (kind === 'Set') SET_TARGETS.set(info, setTargets(body));
  return [info];
}

/** What a statement is without the stored routines it calls (their effects come from the catalog), and which it calls. */
export interface RoutineCalls {
  /** The class with only the built-ins' effects. */
  cls: StatementClass;
  /** The built-ins' effects. */
  effects: string[];
  /** Every function called, as written (lower case; built-in names too: a stored function may answer to one). */
  functions: string[];
  /** CALL: the procedure, as written. */
  procedure?: string;
}

const ROUTINE_CALLS = new WeakMap<StatementInfo, RoutineCalls>();
const SET_TARGETS = new WeakMap<StatementInfo, string[]>();

/** The routine calls of a statement as analysed (undefined for statements that call none, or copies made of one). */
export const routineCalls = (s: StatementInfo): RoutineCalls | undefined => ROUTINE_CALLS.get(s);
/** The session variables (not `@user` ones) a SET statement assigns, lower case. */
export const setTargetsOf = (s: StatementInfo): string[] | undefined => SET_TARGETS.get(s);

function setTargets(body: Node): string[] {
  const kind = Object.keys(body ?? {})[0];
  const b = body?.[kind ?? ''];
  if (kind === 'SingleAssignment') return [setTarget(b.variable ?? [], b.scope)?.name ?? ''].filter(Boolean);
  if (kind === 'MultipleAssignments') return (b.assignments ?? []).flatMap((a: Node) => setTarget(a.name ?? [], a.scope)?.name ?? []);
  return [kind === 'SetRole' ? 'role' : 'names'];
}

const userVariable = (n: Node | undefined) => {
  const v = String(n?.Identifier?.value ?? '');
  return v.startsWith('@') && !v.startsWith('@@');
};
const literal = (n: Node | undefined) => !!n?.Value;
/** A SELECT ... INTO anywhere in a query (set operation branches included). */
function hasInto(n: unknown): boolean {
  if (Array.isArray(n)) return n.some(hasInto);
  if (!n || typeof n !== 'object') return false;
  return Object.entries(n as Node).some(([k, v]) => (k === 'into' && v) || hasInto(v));
}

/**
 * `SELECT ... INTO @v` and `SET @v = <computed>` keep values in the session where a later statement reads them
 * back (`SELECT @v`): with a masked column among them, masking would be lost (see Governor.check).
 */
function storesUserVariables(kind: string, body: Node | undefined): boolean {
  if (kind === 'Query') return hasInto(body);
  const set = body?.SingleAssignment;
  if (set) return (set.variable as Node[] | undefined)?.some(userVariable) === true && !((set.values as Node[] | undefined) ?? []).every(literal);
  const many = body?.MultipleAssignments?.assignments as Node[] | undefined;
  return many?.some((a) => (a.name as Node[] | undefined)?.some(userVariable) && !literal(a.value)) === true;
}

/** SHOW INDEX|COLUMNS FROM t [FROM db], SHOW TABLE STATUS|TRIGGERS|EVENTS FROM db (as the parser's bare words). */
function showFrom(words: string[], c: Collector): void {
  const at = words.flatMap((w, i) => (/^(FROM|IN)$/i.test(w) && words[i + 1] ? [words[i + 1]!] : []));
  if (!at.length) return;
  const tableFirst = /^(FULL\s+)?(INDEX|INDEXES|KEYS|COLUMNS|FIELDS)\b/i.test(words.join(' '));
  if (tableFirst) c.addTable(at[1] ? `${at[1]}.${at[0]}` : at[0], 'read');
  else c.tables.set(`${at[0]}.*`, 'read');
}

/** A SET value as a constant when it is one (string, number, bare word), or what computes it. */
function setValue(v: Node): SetValue {
  const lit = v?.Value?.value;
  if (lit) {
    for (const k of ['SingleQuotedString', 'DoubleQuotedString']) if (typeof lit[k] === 'string') return { constant: lit[k] };
    if (Array.isArray(lit.Number)) return { constant: String(lit.Number[0]) };
    if (typeof lit.Boolean === 'boolean') return { constant: lit.Boolean ? 'ON' : 'OFF' };
  }
  const id = v?.Identifier;
  if (id && typeof id.value === 'string' && !id.value.startsWith('@')) return { constant: id.value };
  return { computed: id?.value ?? (v && typeof v === 'object' ? `an expression (${Object.keys(v)[0]})` : 'an expression') };
}

/** Which session variable an assignment sets, in which scope (`@@global.x`, `@@x`, `GLOBAL x`, ...); user variables (`@x`) are none. */
function setTarget(parts: Node[], scope: string | undefined): { name: string; global: boolean } | undefined {
  const names = parts.map((p) => String(identOf(p) ?? ''));
  let global = scope === 'Global';
  let name = names.join('.');
  const m = /^@@(global|session|local)$/i.exec(names[0] ?? '');
  if (m && names.length > 1) {
    global = m[1]!.toLowerCase() === 'global';
    name = names.slice(1).join('.');
  } else if (name.startsWith('@@')) name = name.slice(2);
  else if (name.startsWith('@')) return undefined;
  return { name: name.toLowerCase(), global };
}

/**
 * SET: lexing variables are checked by value (refused when Sluice could not parse under it); global and privileged
 * settings are admin; `serverDefault` names a lexing variable set to DEFAULT (the server's global value, unknown to
 * the text); the session-tracking settings the gateway relies on are not the client's to change.
 */
function judgeSet(body: Node): { privileged: boolean; refuse?: string; serverDefault?: string } {
  const kind = Object.keys(body ?? {})[0];
  const b = body?.[kind ?? ''];
  let privileged = false;
  let refuse: string | undefined;
  let serverDefault: string | undefined;
  const one = (parts: Node[], value: Node, scope: string | undefined) => {
    const t = setTarget(parts, scope);
    if (!t) return;
    if (t.global || privilegedVariable(t.name)) privileged = true;
    const v = setValue(value);
    refuse ??= lexingRefusal(t.name, v);
    if (!t.global && /^session_track_/.test(t.name)) refuse ??= `not supported by Sluice: ${t.name} (the gateway follows the session's settings through session tracking)`;
    if (!t.global && lexingVariable(t.name) && 'constant' in v && v.constant.trim().toLowerCase() === 'default') serverDefault ??= t.name;
  };
  switch (kind) {
    case 'SingleAssignment':
      one(b.variable ?? [], b.values?.[0], b.scope);
      if ((b.values?.length ?? 0) > 1) refuse ??= 'a SET with several values is not supported by Sluice';
      break;
    case 'MultipleAssignments': {
      // MySQL: a GLOBAL or SESSION modifier applies to the assignments after it until the next one.
      let scope: string | undefined;
      for (const a of b.assignments ?? []) {
        scope = a.scope ?? scope;
        one(a.name ?? [], a.value, scope);
      }
      break;
    }
    case 'SetNames':
      refuse = lexingRefusal('names', { constant: String(b.charset_name?.value ?? '') }) ?? (b.collation_name ? lexingRefusal('collation_connection', { constant: String(b.collation_name) }) : undefined);
      break;
    case 'SetNamesDefault':
      serverDefault = 'names';
      break;
    case 'SetRole':
      privileged = true;
      break;
  }
  return { privileged, refuse, serverDefault };
}

/** Statements setting a lexing variable to DEFAULT: the statements after them in the same text are read by the server under a value Sluice cannot know. */
const SERVER_DEFAULT = new WeakSet<StatementInfo>();

/** A lexing variable set to DEFAULT is refused when more statements follow it in the text (alone, the server reports the value it took). */
function defaultsLast(statements: StatementInfo[]): StatementInfo[] {
  return statements.map((s, i) =>
    i < statements.length - 1 && SERVER_DEFAULT.has(s) && !s.refuse
      ? { ...s, refuse: `not supported by Sluice: a character set or sql_mode set to DEFAULT with more statements after it in the same text (DEFAULT is the server's global value, which Sluice learns only once the statement ran, and the server reads the statements after it under that value); send it on its own` }
      : s,
  );
}

/** EXECUTE IMMEDIATE 'constant text': the statements of that text (dynamic SQL); anything else is refused. */
function executeStatement(body: Node, depth: number): StatementInfo[] {
  const name = objectName(body?.name)?.toLowerCase();
  const base = { command: 'EXECUTE', class: 'session' as StatementClass, tables: [], columns: [], functions: [], destructive: [], flags: ['dynamic-sql' as Flag], filterColumns: [] };
  if (name !== 'immediate') return [{ ...base, refuse: 'not supported by Sluice: SQL-level EXECUTE (dynamic SQL: the statement it runs was not prepared through Sluice)' }];
  const text = setValue(body.parameters?.[0]);
  if ('computed' in text || body.parameters?.length !== 1) return [{ ...base, refuse: 'EXECUTE IMMEDIATE of a text that is not a constant cannot be judged by Sluice (dynamic SQL)' }];
  if (depth > 4) return [{ ...base, refuse: 'EXECUTE IMMEDIATE nested too deeply' }];
  const inner = analyze(text.constant, depth + 1);
  if (!inner.ok) return [{ ...base, refuse: `EXECUTE IMMEDIATE of a text Sluice cannot parse: ${inner.error}` }];
  // USING arguments are evaluated too.
  const using = new Collector();
  using.visit(body.using);
  const extra = [...using.functions].flatMap((f) => (functionEffect(f) ? [`${f}() ${functionEffect(f)}`] : []));
  return inner.statements.map((s) => marked(s, {
    ...s,
    command: `EXECUTE IMMEDIATE ${s.command}`,
    class: extra.length && CLASS_RANK[s.class] < CLASS_RANK.write ? 'write' : s.class,
    functions: [...new Set([...s.functions, ...using.functions])],
    flags: [...new Set([...s.flags, 'dynamic-sql' as Flag, ...(extra.length ? ['volatile-function' as Flag] : [])])],
    ...(extra.length || s.effects ? { effects: [...(s.effects ?? []), ...extra] } : {}),
  }));
}

/** `to`, carrying `from`'s SERVER_DEFAULT mark. */
function marked(from: StatementInfo, to: StatementInfo): StatementInfo {
  if (SERVER_DEFAULT.has(from)) SERVER_DEFAULT.add(to);
  return to;
}

export function analyzeMysql(sql: string): AnalysisResult {
  return analyze(sql, 0);
}

function analyze(sql: string, depth: number): AnalysisResult {
  let ast: Node[];
  const text = forParser(sql);
  // Stored programs are read by Sluice's own recogniser (bodies included), never by the parser alone.
  const program = depth > 4 ? undefined : programKind(text);
  if (program) {
    const p = recogniseProgram(text, (s) => analyze(s, depth + 1));
    return p ? finish(p) : { ok: false, error: `syntax error: Sluice could not read this CREATE ${program} exactly (its header, or its body's block structure)` };
  }
  // Statements, then a stored program to the end of the text: each part read as such.
  const at = depth > 4 ? undefined : programAfterStatements(text);
  if (at !== undefined) {
    const head = analyze(text.slice(0, at), depth + 1);
    if (!head.ok) return head;
    const tail = analyze(text.slice(at), depth + 1);
    if (!tail.ok) return { ...tail, ...(tail.position ? { position: tail.position + at } : {}) };
    return finish([...head.statements, ...tail.statements]);
  }
  // PREPARE name FROM '<text>': the statement of its text (mysql-prepare.ts); DEALLOCATE|DROP PREPARE name.
  const prep = depth > 4 ? undefined : sqlPrepare(text);
  if (prep) {
    const r = prepareStatements(prep, (s) => analyze(s, depth + 1));
    return 'error' in r ? { ok: false, error: r.error } : finish(r);
  }
  if (sqlDeallocate(text) !== undefined) return finish([{ command: 'DEALLOCATE', class: 'session', tables: [], columns: [], functions: [], destructive: [], flags: [], filterColumns: [] }]);
  try {
    ast = parse(text, 'mysql') as Node[];
  } catch (e) {
    // Forms the parser lacks, read by exact recognisers (judged like any statement); never past a nesting limit.
    const known = depth > 4 ? undefined : (withoutMariadbClauses(text, (s) => analyze(s, depth + 1)) ?? recogniseMysql(text, (s) => analyze(s, depth + 1)));
    if (known) return finish(known);
    const why = unsupported(sql);
    // Deliberately not relayed: a refusal that says so, not a syntax error.
    if (why) return { ok: false, error: `not supported by Sluice: ${why}` };
    const msg = String((e as Error).message ?? e).replace(/^sql parser error:\s*/, '');
    const m = /at Line: (\d+), Column: (\d+)/.exec(msg);
    let position: number | undefined;
    if (m) position = (lineStarts(sql)[Number(m[1]) - 1] ?? 0) + Number(m[2]);
    return { ok: false, error: `syntax error: ${msg}`, ...(position ? { position } : {}) };
  }
  const starts = lineStarts(text);
  return finish(ast.flatMap((s) => analyzeStatement(s, text, starts, depth)));
}

function finish(all: StatementInfo[]): Analysis {
  const statements = defaultsLast(all);
  const flags = new Set<Flag>(statements.flatMap((s) => s.flags));
  if (statements.length > 1) flags.add('multi-statement');
  const a: Analysis = {
    ok: true,
    statements,
    classes: [...new Set(statements.map((s) => s.class))],
    tables: [...new Set(statements.flatMap((s) => s.tables.map((t) => t.name)))],
    destructive: statements.flatMap((s) => s.destructive),
    flags: [...flags],
    fingerprint: crypto.createHash('sha256').update(statements.map((s) => `${s.command}:${s.tables.map((t) => t.name).join(',')}`).join(';')).digest('hex').slice(0, 16),
  };
  return a;
}
