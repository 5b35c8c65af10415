import type { Analysis, AnalysisResult, Flag, StatementClass, StatementInfo } from './analyze.js';
import { knownBuiltin, lexingRefusal } from './guard-mysql.js';
import { routineCalls, setTargetsOf } from './mysql.js';
import { routineBody } from './mysql-programs.js';
import { log } from '../util/log.js';

/**
 * What MySQL/MariaDB stored functions and procedures do, read from the server's catalog (information_schema.ROUTINES,
 * PARAMETERS and VIEWS, with the gateway's credentials), the way the PostgreSQL engine reads pg_proc.
 *
 * A routine's declared SQL_DATA_ACCESS is not enforced by the server (a function declared `READS SQL DATA` or `NO
 * SQL` may still DELETE), so its body is read too: a routine has effects when it is declared `MODIFIES SQL DATA`;
 * when its body writes, runs DDL, administrative or transaction statements, dynamic SQL, sets a session variable
 * (anything but its own parameters and declared variables), calls a built-in with effects (locks, sequences,
 * sleeping, ...); when it calls a function or procedure with effects, or one the catalog does not know; and when its
 * body cannot be read exactly (not visible to the gateway's user, not read by Sluice's recogniser, created under a
 * sql_mode or character set Sluice does not lex). Views run the functions in their definitions (views of views too).
 */

export interface RoutineRow {
  schema: string;
  name: string;
  type: string;
  access: string | null;
  definition: string | null;
  sqlMode: string | null;
  charset: string | null;
}
export interface ParameterRow {
  schema: string;
  name: string;
  parameter: string;
}
export interface ViewRow {
  schema: string;
  name: string;
  definition: string | null;
}

interface Routine {
  /** What it does beyond returning a value (undefined: nothing). */
  effect?: string;
  /** It stores values in user variables (a later statement could read them back: see Governor masking). */
  stores: boolean;
  /** Secret-bearing catalogs its body reads. */
  sensitive: boolean;
  /** The tables it reads (`schema.table`; views read through included) and the columns it names (lower case). */
  reads: { schema: string; table: string }[];
  columns: string[];
}

interface View {
  schema: string;
  /** What reading it runs beyond its rows, or undefined. */
  effect?: string;
  /** It reads secret-bearing catalogs. */
  sensitive: boolean;
}

export interface RoutineFacts {
  /** `F:schema.name` / `P:schema.name` (lower case: names are matched case-insensitively, so every schema spelled alike counts) -> what it does; several routines may share a key. */
  routines: Map<string, Routine[]>;
  /** `schema.view` (lower case). */
  views: Map<string, View[]>;
}

const routineKey = (kind: 'F' | 'P', schema: string, name: string) => `${kind}:${schema.toLowerCase()}.${name.toLowerCase()}`;
const tableKey = (schema: string, name: string) => `${schema.toLowerCase()}.${name.toLowerCase()}`;

/** A name as written (`f`, `db.f`, lower-cased by the analysis) -> its schema (the default one when unqualified) and name. */
function resolve(written: string, defaultSchema: string | undefined): { schema?: string; name: string; qualified: boolean } {
  const parts = written.replace(/`/g, '').split('.');
  const name = parts.at(-1)!;
  return parts.length > 1 ? { schema: parts.at(-2)!, name, qualified: true } : { schema: defaultSchema, name, qualified: false };
}

/** A routine or a view, while the facts are computed: what it does itself, what it calls or reads. */
interface Pending {
  key: string;
  schema: string;
  own: string[];
  /** Routine (`F:`/`P:`) and view (`V:`) keys it calls or reads, with how (for the reason). */
  calls: { key: string; written: string; kind: 'F' | 'P' | 'V' }[];
  stores: boolean;
  sensitive: boolean;
  /** `schema\0table` of the tables it reads, and the columns it names (lower case, unqualified). */
  reads: Set<string>;
  columns: Set<string>;
}

const viewKey = (schema: string, name: string) => `V:${tableKey(schema, name)}`;

/** Turn the catalog rows into facts (bodies and view definitions analysed with `analyze`). */
export function routineFacts(rows: RoutineRow[], parameters: ParameterRow[], views: ViewRow[], analyze: (sql: string) => AnalysisResult): RoutineFacts {
  const params = new Map<string, Set<string>>();
  for (const p of parameters) {
    const k = `${p.schema}.${p.name}`.toLowerCase();
    if (!params.has(k)) params.set(k, new Set());
    params.get(k)!.add(p.parameter.toLowerCase());
  }
  const known = new Set([...rows.map((r) => routineKey(r.type === 'PROCEDURE' ? 'P' : 'F', r.schema, r.name)), ...views.map((v) => viewKey(v.schema, v.name))]);
  const pending: Pending[] = rows.map((r) => {
    const kind = r.type === 'PROCEDURE' ? 'P' : 'F';
    const p: Pending = { key: routineKey(kind, r.schema, r.name), schema: r.schema, own: [], calls: [], stores: false, sensitive: false, reads: new Set(), columns: new Set() };
    if (r.type !== 'FUNCTION' && r.type !== 'PROCEDURE') p.own.push(`is a ${r.type.toLowerCase()}`);
    if (r.access === 'MODIFIES SQL DATA') p.own.push('is declared MODIFIES SQL DATA');
    const mode = r.sqlMode === null ? undefined : lexingRefusal('sql_mode', { constant: r.sqlMode });
    const charset = r.charset === null ? undefined : lexingRefusal('character_set_client', { constant: r.charset });
    if (mode || charset) p.own.push(`was created under ${mode ? `sql_mode ${r.sqlMode}` : `character set ${r.charset}`}, under which Sluice cannot read its body`);
    if (r.definition === null) {
      p.own.push("has a body the gateway's database user cannot read");
      return p;
    }
    if (mode || charset) return p;
    const body = routineBody(r.definition, analyze);
    if (!body) {
      p.own.push('has a body Sluice cannot read exactly');
      return p;
    }
    if (body.refuse) p.own.push(body.refuse);
    p.own.push(...body.notes);
    const locals = new Set([...body.declared, ...(params.get(`${r.schema}.${r.name}`.toLowerCase()) ?? [])]);
    for (const piece of body.pieces) judgePiece(piece, locals, known, p);
    return p;
  });
  // Views: what their definitions call and read (unqualified names are the view's schema's).
  for (const v of views) {
    const p: Pending = { key: viewKey(v.schema, v.name), schema: v.schema, own: [], calls: [], stores: false, sensitive: false, reads: new Set(), columns: new Set() };
    pending.push(p);
    const a = v.definition === null ? undefined : analyze(v.definition);
    if (!a?.ok) {
      p.own.push('has a definition Sluice cannot read');
      continue;
    }
    for (const st of a.statements) {
      const rc = routineCalls(st);
      p.own.push(...(rc ? rc.effects : (st.effects ?? [])));
      if (st.flags.includes('sensitive-catalog')) p.sensitive = true;
      readsOf(st, p);
      calls(st, rc, known, p);
    }
  }
  // Effects travel up the graph: a routine or view calling a routine (or reading a view) with effects, or a
  // routine not known, has effects.
  const byKey = new Map<string, Pending[]>();
  for (const p of pending) byKey.set(p.key, [...(byKey.get(p.key) ?? []), p]);
  const effect = new Map<Pending, string>();
  for (const p of pending) if (p.own.length) effect.set(p, p.own.join('; '));
  const how = { F: (w: string) => `calls ${w}()`, P: (w: string) => `calls procedure ${w}`, V: (w: string) => `reads view ${w}` };
  for (let changed = true; changed; ) {
    changed = false;
    for (const p of pending) {
      if (effect.has(p)) continue;
      for (const c of p.calls) {
        const callee = (byKey.get(c.key) ?? []).find((q) => effect.has(q));
        if (!callee) continue;
        effect.set(p, `${how[c.kind](c.written)}, which ${effect.get(callee)}`);
        changed = true;
        break;
      }
    }
  }
  // Storing values, reading secret-bearing catalogs, and what is read travel up the same way.
  for (let changed = true; changed; ) {
    changed = false;
    for (const p of pending) {
      for (const c of p.calls) {
        for (const q of byKey.get(c.key) ?? []) {
          if (q.stores && !p.stores) changed = p.stores = true;
          if (q.sensitive && !p.sensitive) changed = p.sensitive = true;
          for (const t of q.reads) if (!p.reads.has(t)) changed = !!p.reads.add(t);
          for (const col of q.columns) if (!p.columns.has(col)) changed = !!p.columns.add(col);
        }
      }
    }
  }
  const facts: RoutineFacts = { routines: new Map(), views: new Map() };
  for (const p of pending) {
    if (p.key.startsWith('V:')) {
      const k = p.key.slice(2);
      facts.views.set(k, [...(facts.views.get(k) ?? []), { schema: p.schema, effect: effect.get(p), sensitive: p.sensitive }]);
    } else {
      const reads = [...p.reads].map((t) => ({ schema: t.slice(0, t.indexOf('\0')), table: t.slice(t.indexOf('\0') + 1) }));
      facts.routines.set(p.key, [...(facts.routines.get(p.key) ?? []), { effect: effect.get(p), stores: p.stores, sensitive: p.sensitive, reads, columns: [...p.columns] }]);
    }
  }
  return facts;
}

/** The tables a statement reads and the columns it names (unqualified names are the routine's or view's schema's). */
function readsOf(st: StatementInfo, p: Pending): void {
  for (const t of st.tables) {
    if (t.name.includes('*')) continue;
    const r = resolve(t.name, p.schema);
    p.reads.add(`${r.schema}\0${r.name}`);
  }
  for (const c of st.columns) p.columns.add(c.slice(c.lastIndexOf('.') + 1).toLowerCase());
}

/** The routines a statement calls and the views it reads (`schema`: the default for unqualified names). */
function calls(st: StatementInfo, rc: ReturnType<typeof routineCalls>, known: Set<string>, p: Pending): void {
  if (rc?.procedure) {
    const r = resolve(rc.procedure.toLowerCase(), p.schema);
    const key = routineKey('P', r.schema!, r.name);
    p.calls.push({ key, written: rc.procedure, kind: 'P' });
    if (!known.has(key)) p.own.push(`calls procedure ${rc.procedure}, which Sluice does not know`);
  }
  for (const f of rc?.functions ?? st.functions) {
    const r = resolve(f, p.schema);
    const key = routineKey('F', r.schema!, r.name);
    if (known.has(key)) p.calls.push({ key, written: f, kind: 'F' });
    else if (r.qualified || !knownBuiltin(r.name)) p.own.push(`calls ${f}(), which is not a function Sluice knows`);
  }
  for (const t of st.tables) {
    const r = resolve(t.name, p.schema);
    const key = viewKey(r.schema!, r.name);
    if (known.has(key)) p.calls.push({ key, written: t.name, kind: 'V' });
  }
}

/** What one statement of a routine body adds to the routine: its own effects, the routines it calls, the views it reads. */
function judgePiece(piece: StatementInfo, locals: Set<string>, known: Set<string>, p: Pending): void {
  const rc = routineCalls(piece);
  const cls: StatementClass = rc?.cls ?? piece.class;
  const tables = piece.tables.length ? ` on ${piece.tables.map((t) => t.name).join(', ')}` : '';
  p.own.push(...(rc ? rc.effects : (piece.effects ?? [])));
  if (piece.flags.includes('dynamic-sql')) p.own.push('runs dynamic SQL');
  if (piece.flags.includes('sensitive-catalog')) p.sensitive = true;
  if (piece.storesValues) p.stores = true;
  readsOf(piece, p);
  if (cls === 'write' || cls === 'ddl' || cls === 'admin') p.own.push(`runs ${piece.command}${tables}`);
  else if (cls === 'transaction') p.own.push(`runs ${piece.command} (transaction control in the caller's session)`);
  else if (cls === 'session') {
    const targets = setTargetsOf(piece);
    const set = targets?.filter((t) => !locals.has(t));
    if (targets && set!.length) p.own.push(`sets ${set!.join(', ')}`);
    else if (!targets && !/^SHOW\b/.test(piece.command)) p.own.push(`runs ${piece.command}`);
  } else if (cls === 'other') {
    if (!rc?.procedure) p.own.push(`runs ${piece.command}`);
  }
  calls(piece, rc, known, p);
}

/**
 * What a statement's routine calls do, from the facts (undefined: the statement calls none the analysis did not
 * already judge): effects, whether a called routine stores values or reads secret-bearing catalogs.
 */
function statementEffects(s: StatementInfo, facts: RoutineFacts, database: string | undefined, afterDdl: boolean): string[] {
  const rc = routineCalls(s);
  if (!rc) return s.effects ?? [];
  const effects = [...rc.effects];
  for (const f of rc.functions) {
    const e = callEffect(f, 'F', facts, database, afterDdl);
    if (e) effects.push(e);
  }
  return effects;
}

function callEffect(written: string, kind: 'F' | 'P', facts: RoutineFacts, database: string | undefined, afterDdl: boolean): string | undefined {
  const r = resolve(written, database);
  const builtin = !r.qualified && knownBuiltin(r.name);
  const what = kind === 'P' ? `procedure ${written}` : `${written}()`;
  if (afterDdl) return `${what} is called after DDL in the same text (Sluice judged the text before that DDL ran, so it cannot tell what the routine does then)`;
  if (r.schema === undefined) return builtin ? undefined : `${what} is not a known built-in, and no database is selected`;
  const found = facts.routines.get(routineKey(kind, r.schema, r.name));
  if (!found) return builtin ? undefined : `${what} is not a stored ${kind === 'P' ? 'procedure' : 'function'} Sluice knows in ${r.schema} (it may change data)`;
  const bad = found.find((x) => x.effect);
  if (!bad) return undefined;
  return builtin
    ? `${what} may run the stored function ${r.schema}.${r.name}, which ${bad.effect}`
    : `${what} is a stored ${kind === 'P' ? 'procedure' : 'function'} that ${bad.effect}`;
}

/**
 * Whether DDL with these commands can change what the routine catalog holds: routines, views, databases (their
 * routines and views go with them), renames (of views). Other DDL (tables, indexes, sequences, ...) cannot, and
 * needs no reload (nor a wait for one). Unknown commands count.
 */
export function changesRoutines(commands: readonly string[] | undefined): boolean {
  return !commands || commands.some((c) => /\b(FUNCTION|PROCEDURE|VIEW|DATABASE|SCHEMA|PACKAGE|RENAME)\b/.test(c));
}

/** Whether a statement of the analysis calls a stored routine (or a name that is not a built-in) the facts do not know. */
export function unknownCalls(a: Analysis, facts: RoutineFacts, database: string): boolean {
  for (const s of a.statements) {
    const rc = routineCalls(s);
    if (!rc) continue;
    if (rc.procedure) {
      const r = resolve(rc.procedure.toLowerCase(), database || undefined);
      if (r.schema !== undefined && !facts.routines.has(routineKey('P', r.schema, r.name))) return true;
    }
    for (const f of rc.functions) {
      const r = resolve(f, database || undefined);
      if (r.schema !== undefined && (r.qualified || !knownBuiltin(r.name)) && !facts.routines.has(routineKey('F', r.schema, r.name))) return true;
    }
  }
  return false;
}

const RANK: Record<StatementClass, number> = { read: 0, session: 0, transaction: 0, other: 1, write: 1, ddl: 2, admin: 2 };

const judged = new WeakMap<Analysis, { facts: RoutineFacts; database: string; result: Analysis }>();

/**
 * The analysis with what its stored-routine calls do, from the catalog (the analysis alone takes every stored
 * routine and unknown name to have effects). A statement calling a routine with effects, or reading a view that
 * does, is at least a write with flag `volatile-function` and its effects listed; one whose calls are all known to
 * be harmless keeps the class it has without them. Unqualified names are the session database's; a name that is
 * also a built-in's is judged by the stored function of that name where the database has one. Calls after DDL in
 * the same text are taken to have effects (the DDL may have changed them). Cached per analysis and facts.
 */
export function judgeRoutines(a: Analysis, facts: RoutineFacts, database: string): Analysis {
  const hit = judged.get(a);
  if (hit && hit.facts === facts && hit.database === database) return hit.result;
  const db = database || undefined;
  const statements = a.statements.map((s, i) => {
    const afterDdl = a.statements.slice(0, i).some((x) => x.class === 'ddl' || x.class === 'admin');
    const rc = routineCalls(s);
    const read = s.tables.flatMap((t) => {
      const r = resolve(t.name, db);
      return t.access === 'read' && r.schema !== undefined ? (facts.views.get(tableKey(r.schema, r.name)) ?? []).map((v) => ({ name: t.name, ...v })) : [];
    });
    const viewEffects = read.flatMap((v) => (v.effect ? [`view ${v.name} ${v.effect}`] : []));
    if (!rc && !viewEffects.length && !read.some((v) => v.sensitive)) return s;
    const effects = [...statementEffects(s, facts, db, afterDdl), ...viewEffects];
    if (rc?.procedure) {
      const e = callEffect(rc.procedure.toLowerCase(), 'P', facts, db, afterDdl);
      if (e) effects.push(e);
    }
    const called = [...(rc?.functions ?? []).map((f) => ['F', f] as const), ...(rc?.procedure ? [['P', rc.procedure.toLowerCase()] as const] : [])].flatMap(([k, f]) => {
      const r = resolve(f, db);
      return r.schema === undefined ? [] : (facts.routines.get(routineKey(k, r.schema, r.name)) ?? []);
    });
    const stores = called.some((x) => x.stores);
    // What the called routines read is read by the statement: policy rules on tables, the databases served, and
    // masking (a value computed from a masked column inside a function is a computed output; with the inference
    // guard, a masked column used inside a function is used in an expression).
    const tables = new Map(s.tables.map((t) => [t.name, t.access] as const));
    for (const x of called) for (const t of x.reads) {
      const name = t.schema === db ? t.table : `${t.schema}.${t.table}`;
      if (!tables.has(name)) tables.set(name, 'read');
    }
    const columns = [...new Set(called.flatMap((x) => x.columns))];
    const sensitive = called.some((x) => x.sensitive) || read.some((v) => v.sensitive);
    const base: StatementClass = rc ? rc.cls : s.class;
    const cls: StatementClass = effects.length && RANK[base] < RANK.write ? 'write' : base;
    const f = new Set(s.flags);
    if (rc && !rc.effects.length) f.delete('volatile-function');
    if (effects.length) f.add('volatile-function');
    if (sensitive) f.add('sensitive-catalog');
    const out: StatementInfo = { ...s, class: cls, flags: [...f] };
    if (tables.size > s.tables.length) out.tables = [...tables].map(([name, access]) => ({ name, access }));
    if (columns.length) {
      out.columns = [...new Set([...s.columns, ...columns])];
      out.filterColumns = [...new Set([...(s.filterColumns ?? []), ...columns])];
    }
    if (effects.length) out.effects = effects;
    else delete out.effects;
    if (stores) out.storesValues = true;
    return out;
  });
  const changed = statements.some((s, i) => s !== a.statements[i]);
  const flags = new Set<Flag>(statements.flatMap((s) => s.flags));
  if (a.flags.includes('multi-statement')) flags.add('multi-statement');
  const result: Analysis = changed ? { ...a, statements, classes: [...new Set(statements.map((s) => s.class))], tables: [...new Set(statements.flatMap((s) => s.tables.map((t) => t.name)))], flags: [...flags] } : a;
  judged.set(a, { facts, database, result });
  return result;
}

/**
 * The server's routines and views (one catalog per server: routines and views of every schema, so `otherdb.f()` and
 * a view in another schema are judged too). Loaded when a session opens a database; after DDL through the gateway
 * the facts are out of date until read again (get() answers undefined, and sessions wait for the reload before
 * judging statements that call functions or read tables); refreshed every `ttlMs` in the background.
 */
export class RoutineCatalog {
  private facts?: RoutineFacts;
  private at = 0;
  private loading?: Promise<void>;
  /** DDL ran since the running load started: another load follows it. */
  private queued = false;
  /** DDL ran since the facts were read. */
  private dirty = false;

  constructor(private readonly fetch: () => Promise<RoutineFacts>, private readonly ttlMs = 60_000) {}

  /** What is known (undefined: never loaded, or DDL ran since and the reload has not finished). */
  get(): RoutineFacts | undefined {
    if (!this.loading && Date.now() - this.at > (this.dirty ? 1000 : this.ttlMs)) void this.load();
    return this.dirty ? undefined : this.facts;
  }

  /** Waits (at most `maxWaitMs`) for facts that are not out of date. Never throws. */
  async ensure(maxWaitMs = 3000): Promise<void> {
    if (!this.loading && (this.dirty || !this.facts || Date.now() - this.at > this.ttlMs)) void this.load();
    const p = this.facts ? this.settled() : this.loading;
    if (!p) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([p, new Promise<void>((r) => (timer = setTimeout(r, maxWaitMs)))]);
    clearTimeout(timer);
  }

  /** A promise for the reload after DDL, when the facts are out of date and one is running; undefined otherwise. */
  settled(): Promise<void> | undefined {
    if (!this.dirty || !this.loading) return undefined;
    return this.loading.then(() => this.settled());
  }

  /**
   * A statement calls a routine the facts do not know (created behind the gateway's back): read again, at most once
   * every 2 s (a flood of unknown names costs one read per 2 s); the read under way, if any.
   */
  refreshUnknown(): Promise<void> | undefined {
    if (this.loading) return this.loading;
    if (Date.now() - this.unknownAt < 2000) return undefined;
    this.unknownAt = Date.now();
    return this.load();
  }
  private unknownAt = 0;

  /** DDL ran: the facts are out of date until read again (one reload queued behind a running one). */
  invalidate(): void {
    this.dirty = true;
    if (!this.loading) return void this.load();
    this.queued = true;
  }

  private load(): Promise<void> {
    const wasDirty = this.dirty;
    this.loading = (async () => {
      try {
        const facts = await this.fetch();
        this.facts = facts;
        if (wasDirty && !this.queued) this.dirty = false;
      } catch (e) {
        log.warn(`cannot read the stored routines and views of the MySQL server: ${(e as Error).message}`);
      } finally {
        this.at = Date.now();
        this.loading = undefined;
        if (this.queued) {
          this.queued = false;
          void this.load();
        }
      }
    })();
    return this.loading;
  }
}
