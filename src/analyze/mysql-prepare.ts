import type { AnalysisResult, Flag, StatementInfo } from './analyze.js';
import { lex, type Tok } from './mysql-lex.js';

/**
 * SQL-level prepared statements: `PREPARE name FROM '<text>'` is judged as the statement its text is (the same guard
 * and policy as if that text were sent directly), and the session maps the name to that text, so `EXECUTE name` is
 * judged as it. Only a text Sluice reads with certainty is accepted: one or more adjacent string literals (the
 * server concatenates them), unescaped exactly as the server does with backslash escapes on. A user variable, an
 * expression, a charset introducer (`_latin1'...'`, `N'...'`), a hex or bit literal, or an executable comment
 * anywhere in the statement is refused (the server may read those differently from their text).
 */

/** What a `PREPARE ... FROM ...` text prepares, or why Sluice refuses it. */
export type SqlPrepare = { name: string; text: string } | { refuse: string };

const ESCAPES: Record<string, string> = { '0': '\0', b: '\b', n: '\n', r: '\r', t: '\t', Z: '\x1a' };

/** A string literal's value as the server reads it (backslash escapes on, no ANSI_QUOTES): `raw` includes its quotes. */
export function unquoteMysql(raw: string): string {
  const q = raw[0]!;
  let out = '';
  for (let i = 1; i < raw.length - 1; i++) {
    const ch = raw[i]!;
    if (ch === '\\') {
      const n = raw[++i]!;
      // \% and \_ keep their backslash (they are LIKE escapes); any other escaped character is itself.
      out += ESCAPES[n] ?? (n === '%' || n === '_' ? `\\${n}` : n);
    } else if (ch === q) {
      out += q;
      i++;
    } else out += ch;
  }
  return out;
}

const nameOf = (t: Tok | undefined): string | undefined => (t && (t.k === 'q' || (t.k === 'w' && /^[A-Z0-9_$]+$/.test(t.v))) ? t.v.toLowerCase() : undefined);

/** `PREPARE name FROM ...` (the text's first word is PREPARE): the name and text, or why not; undefined for another statement. */
export function sqlPrepare(sql: string): SqlPrepare | undefined {
  const l = lex(sql);
  const toks = l?.toks;
  if (!toks || !(toks[0]?.k === 'w' && toks[0].v === 'PREPARE')) return undefined;
  if (/\/\*M?!/.test(sql)) return { refuse: 'SQL-level PREPARE with an executable comment in it (Sluice reads PREPARE name FROM \'<statement>\' with plain string literals only)' };
  const name = nameOf(toks[1]);
  if (name === undefined || !(toks[2]?.k === 'w' && toks[2].v === 'FROM')) return { refuse: 'SQL-level PREPARE in this form (Sluice reads PREPARE name FROM \'<statement>\')' };
  let end = toks.length;
  if (toks[end - 1]?.k === 'p' && toks[end - 1]!.v === ';') end--;
  const parts = toks.slice(3, end);
  if (!parts.length || parts.some((t) => t.k !== 's')) {
    return { refuse: 'SQL-level PREPARE ... FROM something other than string literals (a user variable, an expression, a charset introducer, a hex literal, another statement): Sluice cannot see the statement it prepares; use your client\'s prepared statements or PREPARE name FROM \'<statement>\'' };
  }
  return { name, text: parts.map((t) => unquoteMysql(sql.slice(t.s, t.e))).join('') };
}

/** `DEALLOCATE PREPARE name` / `DROP PREPARE name` alone: the name (lower case), or undefined. */
export function sqlDeallocate(sql: string): string | undefined {
  const toks = lex(sql)?.toks;
  if (!toks || toks.length < 3 || toks.length > 4 || !(toks[0]!.v === 'DEALLOCATE' || toks[0]!.v === 'DROP') || toks[1]!.v !== 'PREPARE') return undefined;
  if (toks.length === 4 && toks[3]!.v !== ';') return undefined;
  return nameOf(toks[2]);
}

/**
 * `EXECUTE name [USING @a, 1, ...]` alone: the name (lower case) and whether it has USING; undefined for anything
 * else (EXECUTE IMMEDIATE, USING with expressions: those go to the parser and are refused).
 */
export function sqlExecute(sql: string): { name: string; using: boolean } | undefined {
  const toks = lex(sql)?.toks;
  if (!toks || toks[0]?.v !== 'EXECUTE' || toks[0].k !== 'w') return undefined;
  const name = nameOf(toks[1]);
  if (name === undefined || name === 'immediate') return undefined;
  let i = 2;
  const using = toks[i]?.k === 'w' && toks[i]!.v === 'USING';
  if (using) {
    i++;
    for (;;) {
      const t = toks[i];
      if (!t || (t.k !== 'v' && t.k !== 'n') || t.v.startsWith('@@')) return undefined;
      i++;
      if (toks[i]?.v === ',' && toks[i]!.k === 'p') i++;
      else break;
    }
  }
  if (toks[i]?.k === 'p' && toks[i]!.v === ';') i++;
  return i === toks.length ? { name, using } : undefined;
}

/** The analysis of a `PREPARE name FROM '<text>'`: the statements of the text, as PREPARE (dynamic SQL); or a refusal. */
export function prepareStatements(p: SqlPrepare, an: (sql: string) => AnalysisResult): StatementInfo[] | { error: string } {
  if ('refuse' in p) return { error: `not supported by Sluice: ${p.refuse}` };
  const inner = an(p.text);
  if (!inner.ok) return { error: `PREPARE of a text Sluice cannot parse: ${inner.error}` };
  if (inner.statements.length !== 1) return { error: 'not supported by Sluice: PREPARE of a text with several statements (the server prepares one)' };
  const s = inner.statements[0]!;
  if (/^(PREPARE|EXECUTE|DEALLOCATE)\b/.test(s.command)) return { error: `not supported by Sluice: PREPARE of ${s.command.split(' ')[0]}` };
  return [{ ...s, command: `PREPARE ${s.command}`, flags: [...new Set([...s.flags, 'dynamic-sql' as Flag])] }];
}
