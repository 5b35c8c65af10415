/**
 * Cache key for the parse cache: the SQL text with numeric literals replaced by '?', so that
 * `... WHERE aid = 1` and `... WHERE aid = 2` share one parse. Only numeric literals are replaced, and only where
 * the scanner is certain they are literals; on anything it does not fully understand (comments, dollar quoting,
 * escape strings, backslashes, numbers glued to identifiers) it returns the text unchanged, so two texts share a
 * key only when they differ in numeric literal values alone — which never changes what a statement touches.
 */
const isDigit = (c: number) => c >= 48 && c <= 57;
const isIdentStart = (c: number) => (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95 || c >= 128;
const isIdentChar = (c: number) => isIdentStart(c) || isDigit(c) || c === 36;

/**
 * Index just past the quoted run that opens at `i` ('...' or "..." with doubled quotes inside), or -1 when it is
 * unterminated or (for strings) contains a backslash.
 */
function skipQuoted(sql: string, i: number, quote: number): number {
  for (i++; i < sql.length; i++) {
    const d = sql.charCodeAt(i);
    if (d === 92 && quote === 39) return -1;
    if (d === quote) {
      if (sql.charCodeAt(i + 1) === quote) i++;
      else return i + 1;
    }
  }
  return -1;
}

export function cacheKey(sql: string): string {
  const n = sql.length;
  let out = '';
  let copied = 0;
  let i = 0;
  while (i < n) {
    const c = sql.charCodeAt(i);
    if (c === 39) {
      // '...': an E'' (escape) string, or any backslash, makes quoting depend on settings: give up.
      const p = i > 0 ? sql.charCodeAt(i - 1) : 0;
      if ((p === 69 || p === 101) && !(i > 1 && isIdentChar(sql.charCodeAt(i - 2)))) return sql;
      i = skipQuoted(sql, i, 39);
      if (i < 0) return sql;
      continue;
    }
    if (c === 34) {
      i = skipQuoted(sql, i, 34);
      if (i < 0) return sql;
      continue;
    }
    if ((c === 45 && sql.charCodeAt(i + 1) === 45) || (c === 47 && sql.charCodeAt(i + 1) === 42)) return sql;
    if (c === 36) {
      if (!isDigit(sql.charCodeAt(i + 1))) return sql; // dollar quoting
      i++;
      while (i < n && isDigit(sql.charCodeAt(i))) i++;
      continue;
    }
    if (isIdentStart(c)) {
      i++;
      while (i < n && isIdentChar(sql.charCodeAt(i))) i++;
      continue;
    }
    if (isDigit(c) || (c === 46 && isDigit(sql.charCodeAt(i + 1)))) {
      const start = i;
      while (i < n && isDigit(sql.charCodeAt(i))) i++;
      if (sql.charCodeAt(i) === 46) {
        i++;
        while (i < n && isDigit(sql.charCodeAt(i))) i++;
      }
      const e = sql.charCodeAt(i);
      if (e === 69 || e === 101) {
        i++;
        const s = sql.charCodeAt(i);
        if (s === 43 || s === 45) i++;
        if (!isDigit(sql.charCodeAt(i))) return sql;
        while (i < n && isDigit(sql.charCodeAt(i))) i++;
      }
      const after = sql.charCodeAt(i);
      if (i < n && (isIdentChar(after) || after === 46)) return sql;
      out += sql.slice(copied, start) + '?';
      copied = i;
      continue;
    }
    i++;
  }
  return copied === 0 ? sql : out + sql.slice(copied);
}
