import { SQLJSON_PREFIX, type Analysis, type StatementClass, type StatementInfo } from './analyze.js';
import { builtinEffect } from './guard.js';
import { PerDatabase } from '../util/perdb.js';

/** What one function name stands for in a database, over all its overloads and schemas. */
export interface FunctionFacts {
  /** Defined in pg_catalog or information_schema. */
  builtin: boolean;
  builtinVolatile: boolean;
  /** Defined by an installed extension (trusted like a built-in). */
  extension: boolean;
  extensionVolatile: boolean;
  /** Defined by a user (outside the system schemas and extensions). */
  user: boolean;
  userVolatile: boolean;
}

export interface CatalogFacts {
  functions: Map<string, FunctionFacts>;
  /** Function OID -> schema-qualified name (fast-path calls name functions by OID). */
  byOid: Map<number, string>;
  /** Table OID -> its name and columns by attnum (RowDescription names a result column's origin by these). */
  relations: Map<number, { table: string; columns: Map<number, string> }>;
  /** Operators defined outside pg_catalog, by name: whether any of them runs a volatile function. */
  operators: Map<string, boolean>;
  /** Domains whose CHECK (or whose base domain's) calls a volatile function: a cast to one runs it. */
  volatileDomains?: Set<string>;
  /**
   * Tables whose row security policies apply to the gateway's upstream user, by `schema.table` and `table`
   * (lower case): the functions and operators their policies' expressions call. Reading such a table runs them.
   */
  policies?: Map<string, { functions: string[]; operators: string[]; tables?: string[]; domains?: string[] }>;
}

export const FUNCTION_CATALOG_SQL = `
SELECT p.proname AS name,
       bool_or(s.sys) AS builtin, bool_or(s.sys AND p.provolatile = 'v') AS builtin_volatile,
       bool_or(NOT s.sys AND e.objid IS NOT NULL) AS extension, bool_or(NOT s.sys AND e.objid IS NOT NULL AND v.vol) AS extension_volatile,
       bool_or(NOT s.sys AND e.objid IS NULL) AS "user", bool_or(NOT s.sys AND e.objid IS NULL AND v.vol) AS user_volatile
  FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  CROSS JOIN LATERAL (SELECT n.nspname IN ('pg_catalog', 'information_schema') AS sys) s
  -- Volatile in effect: declared so; an aggregate whose support functions are volatile (an aggregate's own
  -- provolatile is not set from them); a function whose argument defaults call a volatile function (the caller
  -- evaluates those).
  CROSS JOIN LATERAL (SELECT p.provolatile = 'v'
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_aggregate a JOIN pg_catalog.pg_proc f
                    ON f.oid IN (a.aggtransfn, a.aggfinalfn, a.aggcombinefn, a.aggserialfn, a.aggdeserialfn, a.aggmtransfn, a.aggminvtransfn, a.aggmfinalfn)
                   WHERE a.aggfnoid = p.oid AND f.provolatile = 'v')
       OR (p.proargdefaults IS NOT NULL AND EXISTS (SELECT 1 FROM pg_catalog.regexp_matches(p.proargdefaults::pg_catalog.text, ':(?:func|opfunc)id (\\d+)', 'g') m
                    JOIN pg_catalog.pg_proc f ON f.oid = m[1]::pg_catalog.oid WHERE f.provolatile = 'v')) AS vol) v
  LEFT JOIN pg_catalog.pg_depend e ON e.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND e.objid = p.oid AND e.deptype = 'e'
 GROUP BY p.proname`;

export const FUNCTION_OID_SQL = `SELECT p.oid::int8 AS oid, n.nspname AS schema, p.proname AS name FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace`;

export const COLUMN_CATALOG_SQL = `SELECT c.oid::int8 AS relid, c.relname AS "table", a.attnum AS attnum, a.attname AS "column"
  FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')`;

export const DOMAIN_CATALOG_SQL = `
WITH RECURSIVE vol AS (
  SELECT t.oid, t.typname FROM pg_catalog.pg_type t WHERE t.typtype = 'd' AND EXISTS (
    SELECT 1 FROM pg_catalog.pg_constraint c
      JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND d.objid = c.oid AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
      JOIN pg_catalog.pg_proc p ON p.oid = d.refobjid
     WHERE c.contypid = t.oid AND p.provolatile = 'v')
  UNION SELECT t.oid, t.typname FROM pg_catalog.pg_type t JOIN vol ON t.typbasetype = vol.oid WHERE t.typtype = 'd'
) SELECT typname AS name FROM vol`;

export const OPERATOR_CATALOG_SQL = `
SELECT o.oprname AS name, bool_or(p.provolatile = 'v') AS volatile
  FROM pg_catalog.pg_operator o
  JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode
 WHERE o.oprnamespace <> 'pg_catalog'::pg_catalog.regnamespace
 GROUP BY o.oprname`;

/**
 * Row security policies in force for the user reading the catalog (the gateway's, which sessions run as), with the
 * functions and operators their USING and WITH CHECK expressions call (recorded in pg_depend).
 */
export const POLICY_CATALOG_SQL = `
SELECT n.nspname AS schema, c.relname AS "table",
       pg_catalog.to_json(pg_catalog.array_remove(pg_catalog.array_agg(DISTINCT p.proname::pg_catalog.text), NULL)) AS functions,
       pg_catalog.to_json(pg_catalog.array_remove(pg_catalog.array_agg(DISTINCT o.oprname::pg_catalog.text), NULL)) AS operators,
       pg_catalog.to_json(pg_catalog.array_remove(pg_catalog.array_agg(DISTINCT CASE WHEN r.oid IS NOT NULL THEN pg_catalog.concat_ws('.', rn.nspname, r.relname) END), NULL)) AS tables,
       pg_catalog.to_json(pg_catalog.array_remove(pg_catalog.array_agg(DISTINCT ty.typname::pg_catalog.text), NULL)) AS domains
  FROM pg_catalog.pg_policy pol
  JOIN pg_catalog.pg_class c ON c.oid = pol.polrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND d.objid = pol.oid
  LEFT JOIN pg_catalog.pg_proc p ON d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND p.oid = d.refobjid
  LEFT JOIN pg_catalog.pg_operator o ON d.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass AND o.oid = d.refobjid
  -- Other tables and views the policy's expressions read (their own policies and view functions run too).
  LEFT JOIN pg_catalog.pg_class r ON d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND r.oid = d.refobjid AND r.oid <> c.oid
  LEFT JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace
  -- Domains the expressions cast to (a CHECK calling a volatile function runs on the cast).
  LEFT JOIN pg_catalog.pg_type ty ON d.refclassid = 'pg_catalog.pg_type'::pg_catalog.regclass AND ty.oid = d.refobjid AND ty.typtype = 'd'
 WHERE pg_catalog.row_security_active(c.oid) AND (p.oid IS NOT NULL OR o.oid IS NOT NULL OR r.oid IS NOT NULL OR ty.oid IS NOT NULL)
 GROUP BY n.nspname, c.relname`;

/** POLICY_CATALOG_SQL's rows as CatalogFacts.policies (the name lists as JSON text: the catalog reads keep every value as text). */
export function policyFacts(rows: { schema: string; table: string; functions: string | string[]; operators: string | string[]; tables?: string | string[]; domains?: string | string[] }[]): Map<string, { functions: string[]; operators: string[]; tables: string[]; domains: string[] }> {
  const list = (v: string | string[] | undefined): string[] => (v === undefined ? [] : typeof v === 'string' ? (JSON.parse(v) as string[]) : v);
  const m = new Map<string, { functions: string[]; operators: string[]; tables: string[]; domains: string[] }>();
  for (const r of rows) {
    const v = { functions: list(r.functions).map((f) => f.toLowerCase()), operators: list(r.operators), tables: list(r.tables).map((t) => t.toLowerCase()), domains: list(r.domains).map((t) => t.toLowerCase()) };
    for (const key of [`${r.schema}.${r.table}`.toLowerCase(), r.table.toLowerCase()]) {
      const had = m.get(key);
      m.set(key, had ? { functions: [...had.functions, ...v.functions], operators: [...had.operators, ...v.operators], tables: [...had.tables, ...v.tables], domains: [...had.domains, ...v.domains] } : v);
    }
  }
  return m;
}

interface FunctionRow {
  name: string;
  builtin: boolean;
  builtin_volatile: boolean;
  extension: boolean;
  extension_volatile: boolean;
  user: boolean;
  user_volatile: boolean;
}

/** Turn the catalog queries' rows into facts. */
export function catalogFacts(
  functions: FunctionRow[],
  operators: { name: string; volatile: boolean }[],
  oids: { oid: string | number; schema: string; name: string }[] = [],
  columns: { relid: string | number; table: string; attnum: string | number; column: string }[] = [],
): CatalogFacts {
  const relations = new Map<number, { table: string; columns: Map<number, string> }>();
  for (const c of columns) {
    const id = Number(c.relid);
    let r = relations.get(id);
    if (!r) relations.set(id, (r = { table: c.table, columns: new Map() }));
    r.columns.set(Number(c.attnum), c.column);
  }
  const t = (v: unknown) => v === true || v === 't' || v === 'true';
  const f = new Map<string, FunctionFacts>();
  for (const r of functions) {
    f.set(r.name.toLowerCase(), {
      builtin: t(r.builtin),
      builtinVolatile: t(r.builtin_volatile),
      extension: t(r.extension),
      extensionVolatile: t(r.extension_volatile),
      user: t(r.user),
      userVolatile: t(r.user_volatile),
    });
  }
  return { functions: f, operators: new Map(operators.map((o) => [o.name, t(o.volatile)])), byOid: new Map(oids.map((o) => [Number(o.oid), `${o.schema}.${o.name}`])), relations };
}

/** The per-database function catalog (read with the gateway's credentials; see gateway.ts). */
export class FunctionCatalog extends PerDatabase<CatalogFacts> {
  constructor(fetch: (database: string, signal: AbortSignal) => Promise<CatalogFacts>, ttlMs = 60_000) {
    super('function catalog', fetch, ttlMs);
  }
}

/**
 * What calling `name` (as written, maybe schema-qualified) does beyond returning a value, or undefined. Every
 * overload counts: a name with any volatile user-defined overload is treated as that one (Sluice does not resolve
 * argument types), and a name the catalog does not know is treated as having effects.
 */
export function functionEffect(written: string, facts: CatalogFacts): string | undefined {
  if (written.startsWith(SQLJSON_PREFIX)) {
    // SQL/JSON syntax: a function call only where the database has a function of that name.
    const name = written.slice(SQLJSON_PREFIX.length);
    return facts.functions.has(name) ? functionEffect(name, facts) : undefined;
  }
  const parts = written.toLowerCase().split('.');
  const name = parts.at(-1)!;
  const schema = parts.length > 1 ? parts.at(-2) : undefined;
  const f = facts.functions.get(name);
  if (!f) return 'is not a function Sluice knows in this database';
  const system = schema === 'pg_catalog' || schema === 'information_schema';
  if (!system && f.user && f.userVolatile) return 'is a volatile user-defined function';
  if (!system && f.extension) {
    const e = builtinEffect(name, f.extensionVolatile);
    if (e) return e;
  }
  if (f.builtin && (schema === undefined || system)) return builtinEffect(name, f.builtinVolatile);
  return undefined;
}

type ViewFacts = ReadonlyMap<string, { functions: string[]; operators?: string[]; tables?: string[]; casts?: string[] }>;
/**
 * Judgements per catalog load and view catalog, per analysis. Keyed by the loads first, so that nothing keeps an
 * old load alive: cached analyses outlive many loads (one after most DDL), and each kept the load it was last
 * judged with (the gateway ran out of memory after about 140 regression scripts).
 */
const NO_VIEWS = {};
const judged = new WeakMap<CatalogFacts, WeakMap<ViewFacts | typeof NO_VIEWS, WeakMap<Analysis, Analysis>>>();
function judgedWith(facts: CatalogFacts, views: ViewFacts | undefined): WeakMap<Analysis, Analysis> {
  let byViews = judged.get(facts);
  if (!byViews) judged.set(facts, (byViews = new WeakMap()));
  let m = byViews.get(views ?? NO_VIEWS);
  if (!m) byViews.set(views ?? NO_VIEWS, (m = new WeakMap()));
  return m;
}

/**
 * The analysis with what its function calls do, from the database's catalog: a statement calling a function with
 * effects (directly, through a user-defined operator, or through a view it reads) gets the `volatile-function` flag,
 * its effects listed, and is at least a write. Cached per analysis and catalog load.
 */
export function judgeFunctions(a: Analysis, facts: CatalogFacts, views?: ViewFacts): Analysis {
  const cache = judgedWith(facts, views);
  const hit = cache.get(a);
  if (hit) return hit;
  const called = new Set<string>();
  const statements = a.statements.map((s) => {
    const effects: string[] = [];
    const names = new Set(s.functions);
    const operators = new Set(s.operators);
    const casts = new Set(s.casts);
    // Every relation the statement reads, directly or through views (views of views) or the row security policies
    // of what it reads: a view runs its functions, and a table's policies their expressions' functions and operators.
    const seen = new Set<string>();
    const queue = s.tables.map((t) => t.name.toLowerCase());
    while (queue.length) {
      const key = queue.shift()!;
      if (seen.has(key)) continue;
      seen.add(key);
      const pol = facts.policies?.get(key);
      for (const fn of pol?.functions ?? []) names.add(fn);
      for (const op of pol?.operators ?? []) operators.add(op);
      for (const t of pol?.tables ?? []) queue.push(t);
      for (const d of pol?.domains ?? []) casts.add(d);
      const v = views?.get(key);
      if (!v) continue;
      for (const fn of v.functions) names.add(fn);
      for (const op of v.operators ?? []) operators.add(op);
      for (const c of v.casts ?? []) casts.add(c);
      for (const bt of v.tables ?? []) queue.push(bt.toLowerCase());
    }
    for (const fn of names) {
      const e = functionEffect(fn, facts);
      if (!e) continue;
      effects.push(`${fn}() ${e}`);
      called.add(fn);
    }
    for (const t of casts) if (facts.volatileDomains?.has(t)) effects.push(`a cast to domain ${t} runs a volatile CHECK function`);
    for (const op of operators) if (facts.operators.get(op)) effects.push(`operator ${op} runs a volatile function`);
    if (!effects.length) return s;
    const cls: StatementClass = s.class === 'read' || s.class === 'session' || s.class === 'transaction' ? 'write' : s.class;
    const out: StatementInfo = { ...s, class: cls, effects, flags: s.flags.includes('volatile-function') ? s.flags : [...s.flags, 'volatile-function'] };
    return out;
  });
  const changed = statements.some((s, i) => s !== a.statements[i]);
  const result: Analysis = changed
    ? { ...a, statements, classes: [...new Set(statements.map((s) => s.class))], flags: a.flags.includes('volatile-function') ? a.flags : [...a.flags, 'volatile-function'], volatileFunctions: [...called] }
    : a;
  cache.set(a, result);
  return result;
}
