import type { AnalysisResult, StatementInfo } from './analyze.js';
import { functionEffect } from './guard-mysql.js';
import { lex, type Tok } from './mysql-lex.js';

/**
 * MariaDB clauses the SQL parser lacks, inside statements it otherwise reads: the column attribute ZEROFILL, a CREATE
 * TABLE's `PARTITION BY ...` and `WITH SYSTEM VERSIONING`, a column's `WITHOUT SYSTEM VERSIONING`, a view's
 * `WITH [CASCADED|LOCAL] CHECK OPTION`, and a table reference's `FOR SYSTEM_TIME {ALL | AS OF ... | BETWEEN ... AND
 * ... | FROM ... TO ...}`. Each is matched token by token (strings, identifiers and comments are not words), checked
 * (a partitioning clause holds no statement, subquery or function with effects), blanked, and the rest parsed: the
 * result must be one statement of the kind the clause belongs to. None of these clauses changes what the statement
 * reads or writes.
 */

const UNITS = new Set(['MICROSECOND', 'SECOND', 'MINUTE', 'HOUR', 'DAY', 'WEEK', 'MONTH', 'QUARTER', 'YEAR']);

/** A literal point in time: 'text', a number, TIMESTAMP 'text', NOW()/CURRENT_TIMESTAMP[()], with an INTERVAL n unit. */
function timePoint(t: Tok[], i: number): number | undefined {
  if (t[i]?.v === 'TIMESTAMP' || t[i]?.v === 'TRANSACTION') i++;
  const x = t[i];
  if (!x) return undefined;
  if (x.k === 's' || x.k === 'n') i++;
  else if (x.k === 'w' && ['NOW', 'CURRENT_TIMESTAMP'].includes(x.v)) {
    i++;
    if (t[i]?.v === '(' && t[i + 1]?.v === ')') i += 2;
  } else return undefined;
  while ((t[i]?.v === '-' || t[i]?.v === '+') && t[i + 1]?.v === 'INTERVAL' && t[i + 2]?.k === 'n' && UNITS.has(t[i + 3]?.v ?? '')) i += 4;
  return i;
}

/** End (exclusive) of a `FOR SYSTEM_TIME ...` clause starting at i, or undefined. */
function systemTime(t: Tok[], i: number): number | undefined {
  if (t[i]?.v !== 'FOR' || t[i + 1]?.v !== 'SYSTEM_TIME' || t[i]!.k !== 'w') return undefined;
  i += 2;
  if (t[i]?.v === 'ALL') return i + 1;
  if (t[i]?.v === 'AS' && t[i + 1]?.v === 'OF') return timePoint(t, i + 2);
  const pair = (a: string, b: string) => {
    if (t[i]?.v !== a) return undefined;
    const m = timePoint(t, i + 1);
    return m !== undefined && t[m]?.v === b ? timePoint(t, m + 1) : undefined;
  };
  return pair('BETWEEN', 'AND') ?? pair('FROM', 'TO');
}

/** End of a CREATE TABLE's partitioning clause from i (it runs to the end of the statement), or undefined. */
function partitioning(t: Tok[], i: number): number | undefined {
  let j = i;
  for (; j < t.length && t[j]!.v !== ';'; j++) {
    const x = t[j]!;
    if (x.k === 'w' && ['SELECT', 'DATA', 'INDEX', 'DIRECTORY'].includes(x.v)) return undefined;
    if (x.k === 'w' && t[j + 1]?.v === '(' && !['RANGE', 'LIST', 'HASH', 'KEY', 'COLUMNS', 'THAN', 'IN', 'VALUES'].includes(x.v) && functionEffect(x.v)) return undefined;
    if (x.k === 'v') return undefined;
  }
  return j;
}

/** The statement with the clauses blanked, when there are any; undefined when there are none or one is not exact. */
export function withoutMariadbClauses(sql: string, an: (sql: string) => AnalysisResult): StatementInfo[] | undefined {
  const l = lex(sql);
  if (!l) return undefined;
  const t = l.toks;
  const first = t[0]?.v;
  const createTable = first === 'CREATE' && t.slice(1, 5).some((x) => x.v === 'TABLE' && x.k === 'w');
  const createView = first === 'CREATE' && t.slice(1, 20).some((x) => x.v === 'VIEW' && x.k === 'w');
  const tableDef = createTable || (first === 'ALTER' && t[1]?.v === 'TABLE');
  const cut: [number, number][] = [];
  let depth = 0;
  for (let i = 0; i < t.length; i++) {
    const x = t[i]!;
    if (x.k === 'p') depth += x.v === '(' ? 1 : x.v === ')' ? -1 : 0;
    if (x.k !== 'w') continue;
    const st = systemTime(t, i);
    if (st !== undefined) {
      cut.push([i, st]);
      i = st - 1;
    } else if (tableDef && x.v === 'ZEROFILL') cut.push([i, i + 1]);
    else if (tableDef && (x.v === 'WITH' || x.v === 'WITHOUT') && t[i + 1]?.v === 'SYSTEM' && t[i + 2]?.v === 'VERSIONING') {
      cut.push([i, i + 3]);
      i += 2;
    } else if (createTable && depth === 0 && x.v === 'PARTITION' && t[i + 1]?.v === 'BY') {
      const end = partitioning(t, i);
      if (end === undefined) return undefined;
      cut.push([i, end]);
      i = end - 1;
    } else if (createView && depth === 0 && x.v === 'WITH') {
      let j = i + 1;
      if (t[j]?.v === 'CASCADED' || t[j]?.v === 'LOCAL') j++;
      if (t[j]?.v === 'CHECK' && t[j + 1]?.v === 'OPTION' && (j + 2 === t.length || t[j + 2]?.v === ';')) {
        cut.push([i, j + 2]);
        i = j + 1;
      }
    }
  }
  if (!cut.length) return undefined;
  const chars = l.flat.split('');
  for (const [a, b] of cut) for (let k = t[a]!.s; k < t[b - 1]!.e; k++) chars[k] = ' ';
  const r = an(chars.join(''));
  if (!r.ok || r.statements.length !== 1) return undefined;
  const s = r.statements[0]!;
  // Table clauses belong to a CREATE/ALTER TABLE, the check option to a CREATE VIEW.
  if (createTable && s.command !== 'CREATE TABLE') return undefined;
  if (createView && s.command !== 'CREATE VIEW') return undefined;
  return [s];
}
