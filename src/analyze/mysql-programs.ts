import type { AnalysisResult, Flag, StatementClass, StatementInfo, TableRef } from './analyze.js';
import { functionEffect } from './guard-mysql.js';
import { Cur, lex } from './mysql-lex.js';

/**
 * Exact recognisers for MySQL/MariaDB statements the SQL parser cannot read, used only when it fails: stored programs
 * (CREATE PROCEDURE/FUNCTION/TRIGGER/EVENT with BEGIN ... END bodies), CREATE SEQUENCE, DROP EVENT, SHOW CREATE
 * SEQUENCE, SHOW FUNCTION|PROCEDURE STATUS, ALTER TABLE ... DISABLE|ENABLE KEYS, START TRANSACTION WITH CONSISTENT
 * SNAPSHOT, table maintenance (OPTIMIZE/CHECK/REPAIR/CHECKSUM/ANALYZE TABLE), DO, and the MariaDB clauses the parser
 * lacks (ZEROFILL, PARTITION BY, WITH SYSTEM VERSIONING, FOR SYSTEM_TIME, WITH CHECK OPTION), which are checked
 * token by token, blanked, and the rest parsed. Each recogniser must account for every token of the text (one
 * statement: a second one after it is refused); anything else stays unrecognised and is refused (fail closed).
 * A stored program body is code that runs later: creating one is DDL flagged `stored-program-body`, its statements
 * are analysed (their tables, functions, flags, destructive acts and effects are the creating statement's), and
 * dynamic SQL in it is flagged `dynamic-sql`.
 */

type Analyze = (sql: string) => AnalysisResult;
type Recogniser = (c: Cur, an: Analyze) => StatementInfo[] | undefined;

const RANK: Record<StatementClass, number> = { read: 0, session: 0, transaction: 0, other: 1, write: 1, ddl: 2, admin: 3 };

const info = (command: string, cls: StatementClass, tables: TableRef[], o: Partial<StatementInfo> = {}): StatementInfo => ({
  command, class: cls, tables, columns: [], functions: [], destructive: [], flags: [], filterColumns: [], ...o,
});

/** The statements of a text the parser could not read, when a recogniser reads all of it; undefined otherwise. */
export function recogniseMysql(sql: string, an: Analyze): StatementInfo[] | undefined {
  const l = lex(sql);
  if (!l || !l.toks.length) return undefined;
  for (const r of RECOGNISERS) {
    const c = new Cur(l.toks, l.flat);
    const out = r(c, an);
    if (!out) continue;
    c.eat(';');
    if (c.done) return out;
    return [{ ...out[0]!, refuse: `not supported by Sluice: a statement after ${out[0]!.command} in the same text (send it separately)` }];
  }
  return undefined;
}

/**
 * CREATE PROCEDURE/FUNCTION/TRIGGER/EVENT are always read here (the parser reads some of them, but not their bodies):
 * which one a text creates, or undefined.
 */
export function programKind(sql: string): string | undefined {
  if (!/\bCREATE\b/i.test(sql.slice(0, 300))) return undefined;
  const l = lex(sql);
  if (!l) return undefined;
  const c = new Cur(l.toks, l.flat);
  if (!c.eat('CREATE')) return undefined;
  c.eat('OR', 'REPLACE');
  if (!definer(c)) return undefined;
  c.eat('AGGREGATE');
  const kind = c.peek()?.v ?? '';
  return ['PROCEDURE', 'FUNCTION', 'TRIGGER', 'EVENT'].includes(kind) ? kind : undefined;
}

/**
 * Where a stored program begins after other statements in the same text (`DROP PROCEDURE IF EXISTS p; CREATE
 * PROCEDURE p() BEGIN ... END`): the offset of its CREATE, after the first `;` that ends a statement and is followed
 * by CREATE [OR REPLACE] [DEFINER=...] [AGGREGATE] PROCEDURE|FUNCTION|TRIGGER|EVENT; undefined when there is none.
 * The server reads such a text the same way: the statements before it, then the program to the end of the text.
 */
export function programAfterStatements(sql: string): number | undefined {
  if (!/\b(PROCEDURE|FUNCTION|TRIGGER|EVENT)\b/i.test(sql) || !sql.includes(';')) return undefined;
  const l = lex(sql);
  if (!l) return undefined;
  for (let i = 0; i < l.toks.length - 1; i++) {
    const t = l.toks[i]!;
    if (t.k !== 'p' || t.v !== ';') continue;
    const c = new Cur(l.toks, l.flat);
    c.i = i + 1;
    if (!c.eat('CREATE')) continue;
    c.eat('OR', 'REPLACE');
    if (!definer(c)) continue;
    c.eat('AGGREGATE');
    if (['PROCEDURE', 'FUNCTION', 'TRIGGER', 'EVENT'].includes(c.peek()?.v ?? '')) return l.toks[i + 1]!.s;
  }
  return undefined;
}

/** The statement creating a stored program, read exactly, or undefined. */
export function recogniseProgram(sql: string, an: Analyze): StatementInfo[] | undefined {
  const l = lex(sql);
  if (!l) return undefined;
  const c = new Cur(l.toks, l.flat);
  const out = createProgram(c, an);
  if (!out) return undefined;
  c.eat(';');
  return c.done ? out : [{ ...out[0]!, refuse: `not supported by Sluice: a statement after ${out[0]!.command} in the same text (send it separately)` }];
}

/** `DEFINER = user[@host]` or CURRENT_USER. */
function definer(c: Cur): boolean {
  if (!c.eat('DEFINER')) return true;
  if (!c.eat('=')) return false;
  if (c.eat('CURRENT_USER')) {
    if (c.is('(')) return c.eat('(', ')');
    return true;
  }
  const t = c.peek();
  if (!t || !['w', 'q', 's'].includes(t.k)) return false;
  c.i++;
  if (c.peek()?.k === 'v') c.i++;
  return true;
}

/** Tokens up to (not including) a stop word at depth 0, outside CASE ... END; [start, end) or undefined. */
function until(c: Cur, stops: string[], allowEnd = false): [number, number] | undefined {
  const a = c.i;
  let depth = 0;
  let cases = 0;
  while (!c.done) {
    const t = c.peek()!;
    if (t.k === 'p' && t.v === ';') break;
    if (t.k === 'p' && t.v === '(') depth++;
    if (t.k === 'p' && t.v === ')') depth--;
    if (t.k === 'w' && depth === 0) {
      if (t.v === 'CASE') cases++;
      else if (t.v === 'END' && cases > 0) cases--;
      else if (cases === 0 && stops.includes(t.v)) return c.i > a ? [a, c.i] : undefined;
    }
    c.i++;
  }
  return allowEnd && c.i > a ? [a, c.i] : undefined;
}

/** A stored program body: its statements, analysed. */
class Body {
  pieces: StatementInfo[] = [];
  notes: string[] = [];
  refuse?: string;
  /** Names declared in the body (variables, conditions, cursors), lower case. */
  declared = new Set<string>();
  constructor(readonly c: Cur, readonly an: Analyze) {}

  /** Analyse one piece (a statement, or an expression as `SELECT expr`). */
  take(a: number, b: number, expr = false): void {
    const text = this.c.text(a, b);
    const r = this.an(expr ? `SELECT ${text}` : text);
    if (!r.ok) {
      if (/^not supported by Sluice: SQL-level (PREPARE|EXECUTE)/.test(r.error)) this.pieces.push(info('PREPARE', 'session', [], { flags: ['dynamic-sql'] }));
      else this.notes.push(`not analysed: ${text.replace(/\s+/g, ' ').slice(0, 80)}`);
      return;
    }
    for (const s of r.statements) {
      if (s.refuse && /dynamic SQL/.test(s.refuse)) this.pieces.push({ ...s, refuse: undefined, flags: [...s.flags, 'dynamic-sql'] });
      else {
        if (s.refuse) this.refuse ??= `in the stored program body: ${s.refuse}`;
        this.pieces.push(s);
      }
    }
  }

  /** Statements, each ended by `;`, until one of the stop words begins the next. */
  list(stops: string[]): boolean {
    const c = this.c;
    while (!c.done) {
      const t = c.peek()!;
      if (t.k === 'w' && stops.includes(t.v)) return true;
      if (!this.statement() || !c.eat(';')) return false;
    }
    return false;
  }

  /** One statement (compound or simple), without its closing `;`. */
  statement(): boolean {
    const c = this.c;
    const label = (c.peek()?.k === 'w' || c.peek()?.k === 'q') && c.is(':', 1) && ['BEGIN', 'LOOP', 'WHILE', 'REPEAT'].includes(c.peek(2)?.v ?? '');
    if (label) c.i += 2;
    const endLabel = () => {
      if (c.peek() && !c.is(';') && (c.peek()!.k === 'w' || c.peek()!.k === 'q')) c.i++;
      return true;
    };
    if (c.eat('BEGIN')) {
      c.eat('NOT', 'ATOMIC');
      return this.list(['END']) && c.eat('END') && endLabel();
    }
    if (c.eat('IF')) {
      for (;;) {
        const cond = until(c, ['THEN']);
        if (!cond || !c.eat('THEN')) return false;
        this.take(cond[0], cond[1], true);
        if (!this.list(['ELSEIF', 'ELSE', 'END'])) return false;
        if (c.eat('ELSEIF')) continue;
        if (c.eat('ELSE') && !this.list(['END'])) return false;
        return c.eat('END', 'IF');
      }
    }
    if (c.eat('CASE')) {
      if (!c.is('WHEN')) {
        const op = until(c, ['WHEN']);
        if (!op) return false;
        this.take(op[0], op[1], true);
      }
      while (c.eat('WHEN')) {
        const w = until(c, ['THEN']);
        if (!w || !c.eat('THEN')) return false;
        this.take(w[0], w[1], true);
        if (!this.list(['WHEN', 'ELSE', 'END'])) return false;
      }
      if (c.eat('ELSE') && !this.list(['END'])) return false;
      return c.eat('END', 'CASE');
    }
    if (c.eat('LOOP')) return this.list(['END']) && c.eat('END', 'LOOP') && endLabel();
    if (c.eat('WHILE')) {
      const cond = until(c, ['DO']);
      if (!cond || !c.eat('DO')) return false;
      this.take(cond[0], cond[1], true);
      return this.list(['END']) && c.eat('END', 'WHILE') && endLabel();
    }
    if (c.eat('REPEAT')) {
      if (!this.list(['UNTIL']) || !c.eat('UNTIL')) return false;
      const cond = until(c, ['END']);
      if (!cond) return false;
      this.take(cond[0], cond[1], true);
      return c.eat('END', 'REPEAT') && endLabel();
    }
    if (label) return false;
    if (c.eat('DECLARE')) return this.declare();
    return this.simple();
  }

  /** DECLARE a variable, condition, cursor (its SELECT analysed) or handler (its statement analysed). */
  declare(): boolean {
    const c = this.c;
    if (c.eat('CONTINUE') || c.eat('EXIT') || c.eat('UNDO')) {
      if (!c.eat('HANDLER', 'FOR')) return false;
      do {
        if (c.eat('SQLSTATE')) {
          c.eat('VALUE');
          if (c.peek()?.k !== 's') return false;
          c.i++;
        } else if (c.eat('SQLWARNING') || c.eat('SQLEXCEPTION') || c.eat('NOT', 'FOUND')) continue;
        else if (c.peek()?.k === 'n') c.i++;
        else if (!c.ident()) return false;
      } while (c.eat(','));
      return this.statement();
    }
    if ((c.peek()?.k === 'w' || c.peek()?.k === 'q') && c.is('CURSOR', 1)) {
      this.declared.add(c.text(c.i, c.i + 1).replace(/^`|`$/g, '').toLowerCase());
      c.i += 2;
      if (c.is('(')) return false;
      if (!c.eat('FOR')) return false;
      return this.simple();
    }
    // Variables and conditions: names, a type, DEFAULT expr (analysed).
    for (let j = c.i; c.t[j] && (c.t[j]!.k === 'w' || c.t[j]!.k === 'q'); j += 2) {
      this.declared.add(c.text(j, j + 1).replace(/^`|`$/g, '').toLowerCase());
      if (!(c.t[j + 1]?.k === 'p' && c.t[j + 1]!.v === ',')) break;
    }
    const a = c.i;
    const d = until(c, ['DEFAULT'], true);
    if (c.eat('DEFAULT')) {
      const e = until(c, [], true);
      if (!e) return false;
      this.take(e[0], e[1], true);
      return true;
    }
    return !!d && d[0] === a;
  }

  /** A simple statement up to `;` (or the end): analysed; procedural ones read exactly. */
  simple(): boolean {
    const c = this.c;
    const a = c.i;
    while (!c.done && !c.is(';')) c.i++;
    if (c.i === a) return false;
    const first = c.t[a]!;
    const words = c.t.slice(a + 1, c.i);
    if (first.k === 'w' && ['LEAVE', 'ITERATE', 'OPEN', 'CLOSE'].includes(first.v)) return words.length === 1 && words[0]!.k !== 'p';
    if (first.k === 'w' && ['FETCH', 'SIGNAL', 'RESIGNAL'].includes(first.v)) return words.every((t) => t.k !== 'p' || t.v === ',' || t.v === '=');
    if (first.k === 'w' && first.v === 'RETURN') {
      if (!words.length) return false;
      this.take(a + 1, c.i, true);
      return true;
    }
    this.take(a, c.i);
    return true;
  }

  /** The creating statement, with what its body does. */
  into(s: StatementInfo): StatementInfo {
    const tables = new Map<string, TableRef['access']>(s.tables.map((t) => [t.name, t.access]));
    const rank = { read: 0, write: 1, ddl: 2 };
    for (const p of this.pieces) for (const t of p.tables) if (!tables.has(t.name) || rank[t.access] > rank[tables.get(t.name)!]) tables.set(t.name, t.access);
    const flags = new Set<Flag>([...s.flags, 'stored-program-body', ...this.pieces.flatMap((p) => p.flags.filter((f) => f !== 'multi-statement'))]);
    const effects = [...this.pieces.flatMap((p) => p.effects ?? []), ...this.notes];
    const cls = this.pieces.reduce<StatementClass>((k, p) => (RANK[p.class] > RANK[k] ? p.class : k), s.class);
    return {
      ...s,
      class: cls,
      tables: [...tables].map(([name, access]) => ({ name, access })),
      columns: [...new Set(this.pieces.flatMap((p) => p.columns))],
      functions: [...new Set(this.pieces.flatMap((p) => p.functions))],
      destructive: [...s.destructive, ...this.pieces.flatMap((p) => p.destructive.map((d) => `${d} (in the stored program)`))],
      flags: [...flags],
      filterColumns: [],
      ...(effects.length ? { effects } : {}),
      ...(this.refuse ? { refuse: this.refuse } : {}),
    };
  }
}

/**
 * A stored routine's body as the server keeps it (information_schema.ROUTINES.ROUTINE_DEFINITION): its statements,
 * analysed, the names it declares, what was not analysed; undefined when it cannot be read exactly.
 */
export function routineBody(text: string, an: Analyze): { pieces: StatementInfo[]; declared: Set<string>; notes: string[]; refuse?: string } | undefined {
  const l = lex(text);
  if (!l) return undefined;
  const c = new Cur(l.toks, l.flat);
  const b = new Body(c, an);
  if (!b.statement()) return undefined;
  c.eat(';');
  return c.done ? { pieces: b.pieces, declared: b.declared, notes: b.notes, ...(b.refuse ? { refuse: b.refuse } : {}) } : undefined;
}

/** A body to the end of the text (one statement: BEGIN ... END, or a simple one). */
function body(c: Cur, an: Analyze, s: StatementInfo): StatementInfo[] | undefined {
  const b = new Body(c, an);
  if (!b.statement()) return undefined;
  return [b.into(s)];
}

const CHARACTERISTIC = ['COMMENT', 'LANGUAGE', 'NOT', 'DETERMINISTIC', 'CONTAINS', 'NO', 'READS', 'MODIFIES', 'SQL'];

/** Routine characteristics (COMMENT 's', [NOT] DETERMINISTIC, ... SQL DATA, SQL SECURITY ...). */
function characteristics(c: Cur): boolean {
  for (;;) {
    if (c.eat('COMMENT')) {
      if (c.peek()?.k !== 's') return false;
      c.i++;
    } else if (!(c.eat('LANGUAGE', 'SQL') || c.eat('NOT', 'DETERMINISTIC') || c.eat('DETERMINISTIC') || c.eat('CONTAINS', 'SQL') || c.eat('NO', 'SQL') || c.eat('READS', 'SQL', 'DATA') || c.eat('MODIFIES', 'SQL', 'DATA') || c.eat('SQL', 'SECURITY', 'DEFINER') || c.eat('SQL', 'SECURITY', 'INVOKER'))) return true;
  }
}

/** CREATE [OR REPLACE] [DEFINER=...] {PROCEDURE|[AGGREGATE] FUNCTION|TRIGGER|EVENT} ... body. */
const createProgram: Recogniser = (c, an) => {
  if (!c.eat('CREATE')) return undefined;
  c.eat('OR', 'REPLACE');
  if (!definer(c)) return undefined;
  const aggregate = c.eat('AGGREGATE');
  const kind = c.peek()?.v;
  if (!['PROCEDURE', 'FUNCTION', 'TRIGGER', 'EVENT'].includes(kind ?? '') || (aggregate && kind !== 'FUNCTION')) return undefined;
  c.i++;
  c.eat('IF', 'NOT', 'EXISTS');
  const name = c.name();
  if (!name) return undefined;
  // The program's own name is an object it creates (a `db.` prefix is checked against the served databases).
  const s = info(`CREATE ${kind}`, 'ddl', [{ name, access: 'ddl' }]);
  if (kind === 'PROCEDURE' || kind === 'FUNCTION') {
    if (!c.group()) return undefined;
    if (kind === 'FUNCTION') {
      if (!c.eat('RETURNS')) return undefined;
      // The return type: a word, its (length), attributes; never a body keyword.
      let n = 0;
      while (!c.done && n++ < 12 && !CHARACTERISTIC.includes(c.peek()!.v) && !['BEGIN', 'RETURN', 'SONAME'].includes(c.peek()!.v) && !c.is(':', 1)) {
        if (c.is('(')) {
          if (!c.group()) return undefined;
        } else if (c.peek()!.k === 'p') return undefined;
        else c.i++;
      }
      if (c.is('SONAME')) return undefined;
    }
    if (!characteristics(c)) return undefined;
    return body(c, an, s);
  }
  if (kind === 'TRIGGER') {
    if (!(c.eat('BEFORE') || c.eat('AFTER'))) return undefined;
    if (!(c.eat('INSERT') || c.eat('UPDATE') || c.eat('DELETE')) || !c.eat('ON')) return undefined;
    const table = c.name();
    if (!table || !c.eat('FOR', 'EACH', 'ROW')) return undefined;
    if ((c.eat('FOLLOWS') || c.eat('PRECEDES')) && !c.ident()) return undefined;
    s.tables.push({ name: table, access: 'ddl' });
    return body(c, an, s);
  }
  return event(c, an, s);
};

/** CREATE EVENT ... ON SCHEDULE ... DO body (the schedule's functions must only compute values). */
function event(c: Cur, an: Analyze, s: StatementInfo): StatementInfo[] | undefined {
  if (!c.eat('ON', 'SCHEDULE')) return undefined;
  const sched = until(c, ['ON', 'ENABLE', 'DISABLE', 'COMMENT', 'DO']);
  if (!sched) return undefined;
  for (let i = sched[0]; i < sched[1]; i++) {
    const t = c.t[i]!;
    if (t.k === 'w' && (t.v === 'SELECT' || (c.t[i + 1]?.v === '(' && functionEffect(t.v)))) return undefined;
  }
  if (c.eat('ON', 'COMPLETION')) {
    c.eat('NOT');
    if (!c.eat('PRESERVE')) return undefined;
  }
  if (c.eat('ENABLE') || c.eat('DISABLE')) c.eat('ON', 'SLAVE');
  if (c.eat('COMMENT')) {
    if (c.peek()?.k !== 's') return undefined;
    c.i++;
  }
  if (!c.eat('DO')) return undefined;
  return body(c, an, s);
}

const num = (c: Cur): boolean => {
  if (c.is('-') || c.is('+')) c.i++;
  if (c.peek()?.k !== 'n') return false;
  c.i++;
  return true;
};

/** CREATE [OR REPLACE] [TEMPORARY] SEQUENCE [IF NOT EXISTS] name [options]. */
const createSequence: Recogniser = (c) => {
  if (!c.eat('CREATE')) return undefined;
  c.eat('OR', 'REPLACE');
  c.eat('TEMPORARY');
  if (!c.eat('SEQUENCE')) return undefined;
  c.eat('IF', 'NOT', 'EXISTS');
  const name = c.name();
  if (!name) return undefined;
  while (!c.done && !c.is(';')) {
    const ok =
      (c.eat('START') && (c.eat('WITH') || c.eat('=') || true) && num(c)) ||
      (c.eat('INCREMENT') && (c.eat('BY') || c.eat('=') || true) && num(c)) ||
      (c.eat('MINVALUE') && (c.eat('=') || true) && num(c)) ||
      (c.eat('MAXVALUE') && (c.eat('=') || true) && num(c)) ||
      (c.eat('CACHE') && (c.eat('=') || true) && num(c)) ||
      c.eat('NO', 'MINVALUE') || c.eat('NO', 'MAXVALUE') || c.eat('NO', 'CACHE') || c.eat('NO', 'CYCLE') ||
      c.eat('NOMINVALUE') || c.eat('NOMAXVALUE') || c.eat('NOCACHE') || c.eat('NOCYCLE') || c.eat('CYCLE') ||
      (c.eat('ENGINE') && (c.eat('=') || true) && !!c.ident()) ||
      (c.eat('AS') && !!c.ident() && (c.eat('UNSIGNED') || c.eat('SIGNED') || true));
    if (!ok) return undefined;
  }
  return [info('CREATE SEQUENCE', 'ddl', [{ name, access: 'ddl' }])];
};

/** DROP EVENT [IF EXISTS] name. */
const dropEvent: Recogniser = (c) => {
  if (!c.eat('DROP', 'EVENT')) return undefined;
  c.eat('IF', 'EXISTS');
  const name = c.name();
  if (!name) return undefined;
  return [info('DROP EVENT', 'ddl', [{ name, access: 'ddl' }], { destructive: ['DROP EVENT'] })];
};

/** ALTER TABLE t DISABLE|ENABLE KEYS (mariadb-dump around each table's rows). */
const alterKeys: Recogniser = (c) => {
  if (!c.eat('ALTER', 'TABLE')) return undefined;
  const name = c.name();
  if (!name || !(c.eat('DISABLE', 'KEYS') || c.eat('ENABLE', 'KEYS'))) return undefined;
  return [info('ALTER TABLE', 'ddl', [{ name, access: 'ddl' }])];
};

/** START TRANSACTION WITH CONSISTENT SNAPSHOT [, READ ONLY | READ WRITE]. */
const consistentSnapshot: Recogniser = (c) => {
  if (!c.eat('START', 'TRANSACTION', 'WITH', 'CONSISTENT', 'SNAPSHOT')) return undefined;
  if (c.eat(',') && !(c.eat('READ', 'ONLY') || c.eat('READ', 'WRITE'))) return undefined;
  return [info('BEGIN', 'transaction', [])];
};

/** SHOW {FUNCTION|PROCEDURE|PACKAGE [BODY]} STATUS [LIKE 'p' | WHERE expr]: information_schema.ROUTINES, as a read. */
const showRoutineStatus: Recogniser = (c, an) => {
  if (!c.eat('SHOW')) return undefined;
  const what = c.eat('FUNCTION') ? 'FUNCTION' : c.eat('PROCEDURE') ? 'PROCEDURE' : c.eat('PACKAGE', 'BODY') ? 'PACKAGE BODY' : c.eat('PACKAGE') ? 'PACKAGE' : undefined;
  if (!what || !c.eat('STATUS')) return undefined;
  const s = info(`SHOW ${what} STATUS`, 'read', [{ name: 'information_schema.ROUTINES', access: 'read' }], { flags: ['sensitive-catalog'] });
  if (c.eat('LIKE')) {
    if (c.peek()?.k !== 's') return undefined;
    c.i++;
  } else if (c.eat('WHERE')) {
    const w = until(c, [], true);
    if (!w) return undefined;
    const r = an(`SELECT 1 FROM information_schema.ROUTINES WHERE ${c.text(w[0], w[1])}`);
    if (!r.ok || r.statements.length !== 1) return undefined;
    const q = r.statements[0]!;
    return [{ ...q, command: s.command, outputs: undefined, flags: [...new Set([...q.flags, ...s.flags])] }];
  }
  return [s];
};

/** SHOW CREATE SEQUENCE name; SHOW CREATE {DATABASE|SCHEMA} [IF NOT EXISTS] db (mariadb-dump --databases). */
const showCreateSequence: Recogniser = (c) => {
  if (c.eat('SHOW', 'CREATE', 'DATABASE') || c.eat('SHOW', 'CREATE', 'SCHEMA')) {
    c.eat('IF', 'NOT', 'EXISTS');
    const db = c.ident();
    return db ? [info('SHOW CREATE DATABASE', 'read', [{ name: `${db}.*`, access: 'read' }])] : undefined;
  }
  if (!c.eat('SHOW', 'CREATE', 'SEQUENCE')) return undefined;
  const name = c.name();
  return name ? [info('SHOW CREATE SEQUENCE', 'read', [{ name, access: 'read' }])] : undefined;
};

/** {OPTIMIZE|REPAIR|ANALYZE|CHECK|CHECKSUM} [NO_WRITE_TO_BINLOG|LOCAL] TABLE t[, ...] [options]. */
const maintenance: Recogniser = (c) => {
  const verb = ['OPTIMIZE', 'REPAIR', 'ANALYZE', 'CHECK', 'CHECKSUM'].find((v) => c.eat(v));
  if (!verb) return undefined;
  c.eat('NO_WRITE_TO_BINLOG') || c.eat('LOCAL');
  if (!(c.eat('TABLE') || c.eat('TABLES'))) return undefined;
  const names: string[] = [];
  do {
    const n = c.name();
    if (!n) return undefined;
    names.push(n);
  } while (c.eat(','));
  while (['QUICK', 'FAST', 'MEDIUM', 'EXTENDED', 'CHANGED', 'USE_FRM'].some((o) => c.eat(o)) || c.eat('FOR', 'UPGRADE'));
  const reads = verb === 'CHECK' || verb === 'CHECKSUM';
  return [info(`${verb} TABLE`, reads ? 'read' : 'ddl', names.map((name) => ({ name, access: reads ? 'read' : 'ddl' })))];
};

/** DO expr[, ...]: judged as `SELECT expr, ...` (no FROM: the expressions only). */
const doExprs: Recogniser = (c, an) => {
  if (!c.eat('DO')) return undefined;
  const a = c.i;
  for (let d = 0; !c.done && !c.is(';'); c.i++) {
    const t = c.peek()!;
    d += t.v === '(' ? 1 : t.v === ')' ? -1 : 0;
    if (d === 0 && t.k === 'w' && ['FROM', 'INTO', 'WHERE', 'GROUP', 'HAVING', 'ORDER', 'LIMIT', 'UNION', 'FOR', 'WINDOW', 'LOCK', 'EXCEPT', 'INTERSECT'].includes(t.v)) return undefined;
  }
  if (c.i === a) return undefined;
  const r = an(`SELECT ${c.text(a, c.i)}`);
  if (!r.ok || r.statements.length !== 1) return undefined;
  return [{ ...r.statements[0]!, command: 'DO', outputs: undefined }];
};

export const RECOGNISERS: Recogniser[] = [createSequence, dropEvent, alterKeys, consistentSnapshot, showRoutineStatus, showCreateSequence, maintenance, doExprs];
