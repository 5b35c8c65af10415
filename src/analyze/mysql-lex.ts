/**
 * A MySQL/MariaDB tokenizer for the forms the SQL parser cannot read (stored programs, MariaDB extensions), lexing as
 * the server does in the state Sluice keeps sessions in (backslash escapes, `"` strings). Executable comments
 * (`/*!NNNNN ... *\/`, which forParser has already made of MariaDB's `/*M! ... *\/`) are read as SQL; ordinary
 * comments are skipped. `flat` is the text with the executable-comment markers blanked (same length), so a slice
 * between two tokens is SQL the parser can read again.
 */

export interface Tok {
  /** w: bare word (v upper-cased), q: `quoted` identifier, s: string, n: number, v: @variable, p: punctuation */
  k: 'w' | 'q' | 's' | 'n' | 'v' | 'p';
  v: string;
  s: number;
  e: number;
}

export interface Lexed {
  toks: Tok[];
  flat: string;
}

const WORD = /[\w$\u0080-\uffff]/;

/** Tokens, or undefined when the text does not lex (an unterminated string or comment). */
export function lex(sql: string): Lexed | undefined {
  const toks: Tok[] = [];
  const flat = sql.split('');
  let inExec = false;
  let i = 0;
  const n = sql.length;
  const blank = (a: number, b: number) => {
    for (let x = a; x < b; x++) flat[x] = ' ';
  };
  while (i < n) {
    const ch = sql[i]!;
    if (/\s/.test(ch)) {
      i++;
      continue;
    }
    if (ch === '/' && sql[i + 1] === '*') {
      const m = /^\/\*!\d{0,6}/.exec(sql.slice(i, i + 9));
      if (m) {
        if (inExec) return undefined;
        inExec = true;
        blank(i, i + m[0].length);
        i += m[0].length;
        continue;
      }
      const j = sql.indexOf('*/', i + 2);
      if (j < 0) return undefined;
      i = j + 2;
      continue;
    }
    if (ch === '*' && sql[i + 1] === '/' && inExec) {
      inExec = false;
      blank(i, i + 2);
      i += 2;
      continue;
    }
    if (ch === '#' || (ch === '-' && sql[i + 1] === '-' && /[\s\x00-\x1f]/.test(sql[i + 2] ?? '\n'))) {
      const j = sql.indexOf('\n', i);
      i = j < 0 ? n : j + 1;
      continue;
    }
    if (ch === "'" || ch === '"' || ch === '`') {
      let j = i + 1;
      let v = '';
      for (;;) {
        if (j >= n) return undefined;
        const c = sql[j]!;
        if (c === '\\' && ch !== '`') {
          v += sql[j + 1] ?? '';
          j += 2;
        } else if (c === ch) {
          if (sql[j + 1] === ch) {
            v += ch;
            j += 2;
          } else break;
        } else {
          v += c;
          j++;
        }
      }
      toks.push({ k: ch === '`' ? 'q' : 's', v, s: i, e: j + 1 });
      i = j + 1;
      continue;
    }
    if (ch === '@') {
      let j = i + 1;
      if (sql[j] === '@') j++;
      if (sql[j] === '`' || sql[j] === "'" || sql[j] === '"') {
        const q = sql[j]!;
        const end = sql.indexOf(q, j + 1);
        if (end < 0) return undefined;
        j = end + 1;
      } else while (j < n && /[\w$.\u0080-\uffff]/.test(sql[j]!)) j++;
      toks.push({ k: 'v', v: sql.slice(i, j), s: i, e: j });
      i = j;
      continue;
    }
    if (WORD.test(ch)) {
      let j = i;
      while (j < n && WORD.test(sql[j]!)) j++;
      const w = sql.slice(i, j);
      toks.push({ k: /^(\d+(e\d+)?|0x[0-9a-f]+)$/i.test(w) ? 'n' : 'w', v: w.toUpperCase(), s: i, e: j });
      i = j;
      continue;
    }
    toks.push({ k: 'p', v: ch, s: i, e: i + 1 });
    i++;
  }
  if (inExec) return undefined;
  return { toks, flat: flat.join('') };
}

/** A cursor over tokens with exact matching helpers. */
export class Cur {
  i = 0;
  constructor(readonly t: Tok[], readonly flat: string) {}
  get done(): boolean {
    return this.i >= this.t.length;
  }
  peek(o = 0): Tok | undefined {
    return this.t[this.i + o];
  }
  /** The next token is this bare word (or punctuation). */
  is(v: string, o = 0): boolean {
    const t = this.t[this.i + o];
    return !!t && (t.k === 'w' || t.k === 'p') && t.v === v;
  }
  /** Consume these words in order if they all come next. */
  eat(...vs: string[]): boolean {
    if (!vs.every((v, o) => this.is(v, o))) return false;
    this.i += vs.length;
    return true;
  }
  /** An identifier (bare word or `quoted`), or undefined. */
  ident(): string | undefined {
    const t = this.peek();
    if (!t || (t.k !== 'w' && t.k !== 'q')) return undefined;
    this.i++;
    return t.k === 'q' ? t.v : this.flat.slice(t.s, t.e);
  }
  /** A possibly qualified name: `db`.`t` or t. */
  name(): string | undefined {
    const a = this.ident();
    if (a === undefined) return undefined;
    if (this.is('.')) {
      this.i++;
      const b = this.ident();
      return b === undefined ? undefined : `${a}.${b}`;
    }
    return a;
  }
  /** Text of the flat SQL from token a to token b (exclusive). */
  text(a: number, b: number): string {
    if (b <= a) return '';
    return this.flat.slice(this.t[a]!.s, this.t[b - 1]!.e);
  }
  /** Skip a balanced parenthesised group starting here; false when there is none or it does not close. */
  group(): boolean {
    if (!this.is('(')) return false;
    let d = 0;
    while (!this.done) {
      const t = this.t[this.i++]!;
      if (t.k === 'p' && t.v === '(') d++;
      else if (t.k === 'p' && t.v === ')' && --d === 0) return true;
      else if (t.k === 'p' && t.v === ';') return false;
    }
    return false;
  }
}
