import net from 'node:net';

/**
 * Zero-configuration value detectors. Each finds sensitive values inside a text cell (the whole cell or a part of
 * it) and validates candidates where a checksum or structure exists (Luhn, IBAN mod 97, SSN ranges, IP syntax), so
 * that ordinary numbers, dates and identifiers are left alone. Cheap pre-checks keep cells without any candidate
 * characters on a fast path.
 */
export const DETECTOR_TYPES = ['email', 'phone', 'card', 'ssn', 'iban', 'ipv4', 'ipv6', 'jwt', 'bearer', 'aws_key', 'api_key'] as const;
export type DetectorType = (typeof DETECTOR_TYPES)[number];

export interface Hit {
  type: DetectorType;
  start: number;
  end: number;
}

export function luhnValid(digits: string): boolean {
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return sum % 10 === 0;
}

export function ibanValid(raw: string): boolean {
  const s = raw.replace(/ /g, '');
  if (s.length < 15 || s.length > 34) return false;
  const moved = s.slice(4) + s.slice(0, 4);
  let rem = 0;
  for (const ch of moved) {
    const c = ch.charCodeAt(0);
    const v = c >= 65 ? String(c - 55) : ch;
    for (const d of v) rem = (rem * 10 + (d.charCodeAt(0) - 48)) % 97;
  }
  return rem === 1;
}

const EMAIL = /[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}/g;
const CARD = /(?<![\w.])\d(?:[ -]?\d){12,18}(?![\w.])/g;
const SSN = /(?<![\w-])(\d{3})-(\d{2})-(\d{4})(?![\w-])/g;
const PHONE_INTL = /(?<![\w+])\+[1-9]\d{0,2}(?:[ .-]?\(?\d{1,4}\)?){2,6}(?!\d)/g;
const PHONE_NANP = /(?<![\w.])(?:\(\d{3}\)\s?|\d{3}[-.])\d{3}[-.]\d{4}(?![\w.])/g;
const IBAN = /\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b/g;
const IPV4 = /(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])/g;
const IPV6 = /(?<![0-9A-Fa-f:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![0-9A-Fa-f:])/g;
const JWT = /\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}/g;
const BEARER = /\bBearer\s+[A-Za-z0-9._~+/-]{16,}=*/g;
const AWS = /\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{16}\b/g;
const API_KEY = /\b(?:sk_live_[A-Za-z0-9]{16,}|rk_live_[A-Za-z0-9]{16,}|sk-[A-Za-z0-9_-]{32,}|ghp_[A-Za-z0-9]{36}|gho_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{40,}|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|slk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}|glpat-[A-Za-z0-9_-]{20})/g;

function each(re: RegExp, s: string, type: DetectorType, out: Hit[], accept?: (m: RegExpExecArray) => boolean): void {
  re.lastIndex = 0;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    if (!accept || accept(m)) out.push({ type, start: m.index, end: m.index + m[0].length });
  }
}

const digitCount = (s: string): number => {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 48 && c <= 57) n++;
  }
  return n;
};

/** For features(): 1 digit, 2 a character with more to it (capitals, separators, '@', '+', '_', ':'), 0 the rest. */
const FEATURE = new Uint8Array(128);
for (let c = 48; c <= 57; c++) FEATURE[c] = 1;
for (let c = 65; c <= 90; c++) FEATURE[c] = 2;
for (const c of ' -.:@+(_') FEATURE[c.charCodeAt(0)] = 2;

/** Character features of a cell, from one pass: which detectors could possibly match. */
function features(s: string) {
  let digits = 0;
  let run = 0;
  let maxRun = 0;
  let dots = 0;
  let colons = 0;
  let dashes = 0;
  let at = false;
  let plus = false;
  let paren = false;
  let upperDigit = false;
  let underscore = false;
  let prevUpper = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const k = c < 128 ? FEATURE[c]! : 0;
    if (k < 2) {
      // A digit (1) or a byte that only ends a run (0), told apart without a branch (see mayContainSensitive).
      if (prevUpper >= 2 && k === 1) upperDigit = true;
      digits += k;
      run = (run + 1) * k;
      if (run > maxRun) maxRun = run;
      prevUpper = 0;
      continue;
    }
    // card numbers are written with single spaces or dashes between digit groups
    if (!((c === 32 || c === 45) && run > 0 && i + 1 < s.length && s.charCodeAt(i + 1) >= 48 && s.charCodeAt(i + 1) <= 57)) run = 0;
    if (c >= 65 && c <= 90) prevUpper++;
    else prevUpper = 0;
    switch (c) {
      case 46: dots++; break;
      case 58: colons++; break;
      case 45: dashes++; break;
      case 64: at = true; break;
      case 43: plus = true; break;
      case 40: paren = true; break;
      case 95: underscore = true; break;
    }
  }
  return { digits, maxRun, dots, colons, dashes, at, plus, paren, upperDigit, underscore };
}

/** Cells shorter than this hold nothing any detector takes (UTF-8 bytes are never fewer than characters). */
const MIN_DETECTABLE = 3;

/** All detector hits in a cell, non-overlapping (the earlier and longer hit wins), in order. */
export function detect(s: string): Hit[] {
  // The shortest value any detector takes is 3 characters ('::1'); an e-mail address can be 6 ('x@y.io').
  if (s.length < MIN_DETECTABLE) return [];
  const f = features(s);
  const hits: Hit[] = [];
  if (f.at) each(EMAIL, s, 'email', hits);
  if (f.dots >= 2 && s.includes('eyJ')) each(JWT, s, 'jwt', hits);
  if (s.includes('Bearer')) each(BEARER, s, 'bearer', hits);
  // A key's 16 characters after the prefix may all be letters: then only the prefix tells.
  if (f.upperDigit || s.includes('AKIA') || s.includes('ASIA') || s.includes('AGPA') || s.includes('AIDA') || s.includes('AROA')) each(AWS, s, 'aws_key', hits);
  if (f.underscore || f.dashes || s.includes('AIza')) each(API_KEY, s, 'api_key', hits);
  if (f.maxRun >= 13) {
    each(CARD, s, 'card', hits, (m) => {
      const d = m[0].replace(/[ -]/g, '');
      return d.length >= 13 && d.length <= 19 && luhnValid(d) && !/^(\d)\1+$/.test(d);
    });
  }
  if (f.digits >= 9 && f.dashes >= 2) {
    each(SSN, s, 'ssn', hits, (m) => {
      const area = Number(m[1]);
      return area !== 0 && area !== 666 && area < 900 && m[2] !== '00' && m[3] !== '0000';
    });
  }
  if (f.digits >= 8) {
    // '415-555.2671': the two separators may differ
    if (f.paren || f.dashes + f.dots >= 2) each(PHONE_NANP, s, 'phone', hits);
    if (f.plus) {
      each(PHONE_INTL, s, 'phone', hits, (m) => {
        const n = digitCount(m[0]);
        return n >= 8 && n <= 15;
      });
    }
  }
  // No digit count: a BBAN may be mostly letters (Malta 4a 5n 18c, Qatar 4a 21c, Kuwait 4a 22c).
  if (f.upperDigit) each(IBAN, s, 'iban', hits, (m) => ibanValid(m[0]));
  if (f.digits >= 4 && f.dots >= 3) each(IPV4, s, 'ipv4', hits);
  if (f.colons >= 2) {
    each(IPV6, s, 'ipv6', hits, (m) => m[0].includes('::') || m[0].split(':').length === 8 ? net.isIPv6(m[0]) : false);
  }
  if (hits.length < 2) return hits;
  hits.sort((a, b) => a.start - b.start || b.end - a.end);
  const out: Hit[] = [];
  for (const h of hits) if (!out.length || h.start >= out[out.length - 1]!.end) out.push(h);
  return out;
}

/**
 * Byte classes for the pre-scan: 0 plain (ends a digit run; every lower-case letter, so prose and hex stay on the
 * fast path), 1 digit, 2 separator inside numbers (also whitespace and every byte of a non-ASCII character), 3 a
 * byte that marks or ends a detectable value ('@', ':', '+', '_' of a token prefix, the 'J' of a JWT's 'eyJ', the
 * 'A' and 'B' of AWS keys and 'Bearer'), 4 another capital letter (an IBAN starts with two).
 */
const CLASS = new Uint8Array(256);
for (let c = 48; c <= 57; c++) CLASS[c] = 1;
for (let c = 65; c <= 90; c++) CLASS[c] = 4;
// Separators: what the detectors' patterns allow between digits ([ .-], parentheses, and \s after an area code,
// which in JavaScript includes tab, line breaks and Unicode spaces: every byte of a multi-byte character counts).
for (const c of ' -.()\t\n\v\f\r') CLASS[c.charCodeAt(0)] = 2;
for (let c = 0x80; c <= 0xff; c++) CLASS[c] = 2;
for (const c of '@:+_JAB') CLASS[c.charCodeAt(0)] = 3;

const ch = (s: string) => s.charCodeAt(0);
const [AT, COLON, PLUS, UNDERSCORE, DASH, DOT, J, A, B] = ['@', ':', '+', '_', '-', '.', 'J', 'A', 'B'].map(ch) as [number, number, number, number, number, number, number, number, number];
const [a, b_, e, h, k, o, p, s_, t, u, x, y, r] = ['a', 'b', 'e', 'h', 'k', 'o', 'p', 's', 't', 'u', 'x', 'y', 'r'].map(ch) as number[] as [number, number, number, number, number, number, number, number, number, number, number, number, number];

/**
 * Byte-level pre-scan of a UTF-8 cell: false when no detector could match, so the cell is neither decoded nor
 * regex-scanned. True for an '@', 3 dots, 2 colons, two capitals and a digit (an IBAN's start), a token prefix (sk_
 * rk_ slk_ sk- ghp_ gho_ github_ glpat- xox?- eyJ Bearer AKIA ASIA AGPA AIDA AROA AIza), 13 digits joined only by
 * separators (a card number), or 8 such digits in a cell that also has a separator, a '+' or a capital letter: the
 * detectors that take 8 to 12 digits (phone numbers, SSNs) need one of those, so a plain number or a hex hash does
 * not count. Most cells of ordinary data (names, ids, hashes, prose) end here. A prefix is recognised at its last
 * byte, looking back (bytes before the cell may be looked at: that can only say true more often).
 */
export function mayContainSensitive(bf: Buffer, start: number, end: number): boolean {
  if (end - start < MIN_DETECTABLE) return false;
  let run = 0;
  let gap = 0;
  let dots = 0;
  let colons = 0;
  /** A run of 8 digits was seen; `marked`: the cell has a separator, '+' or capital letter. */
  let eight = false;
  let marked = false;
  /** Capital letters just before this byte: two and a digit may start an IBAN (whose digit groups can be short). */
  let caps = 0;
  for (let i = start; i < end; i++) {
    const c = bf[i]!;
    const cls = CLASS[c]!;
    if (cls < 2) {
      if (caps >= 2 && cls === 1) return true;
      caps = 0;
      gap = 0;
      // The bytes of this kind that follow, in a loop of their own (most of a cell of ids, hex or prose). A digit
      // extends the run, a plain byte ends it: without a branch on which (digits and letters alternate
      // unpredictably in hex and ids, and a mispredicted branch per byte would cost more than the rest of the scan).
      let j = i;
      let k = cls;
      for (;;) {
        run = (run + 1) * k;
        if (run >= 8) {
          if (run >= 13 || marked) return true;
          eight = true;
        }
        if (++j >= end) break;
        k = CLASS[bf[j]!]!;
        if (k >= 2) break;
      }
      i = j - 1;
      continue;
    }
    if (cls === 2) {
      caps = 0;
      if (c === DOT && ++dots >= 3) return true;
      // sk-  glpat-  xox?-
      if (c === DASH && ((bf[i - 1] === k && bf[i - 2] === s_) || (bf[i - 1] === t && bf[i - 2] === a) || bf[i - 2] === x)) return true;
      if (eight) return true;
      marked = true;
      // Up to 4 separator bytes inside a number: ') (' in an international number, ')' and a 3-byte space.
      if (run > 0 && gap < 4) gap++;
      else run = 0;
      continue;
    }
    run = 0;
    gap = 0;
    // Capitals (A, B and J are also token starts below).
    caps = cls === 4 || c === A || c === B || c === J ? caps + 1 : 0;
    if (cls === 4) {
      if (eight) return true;
      marked = true;
      continue;
    }
    switch (c) {
      case AT:
        return true;
      case COLON:
        if (++colons >= 2) return true;
        break;
      case PLUS:
        if (eight) return true;
        marked = true;
        break;
      case UNDERSCORE: {
        // sk_ rk_ slk_  ghp_ gho_  github_
        const p1 = bf[i - 1];
        const p2 = bf[i - 2];
        if ((p1 === k && (p2 === s_ || p2 === r || p2 === 108)) || (p2 === h && (p1 === p || p1 === o)) || (p1 === b_ && p2 === u)) return true;
        break;
      }
      case J: // eyJ
        if (eight) return true;
        marked = true;
        if (bf[i - 1] === y && bf[i - 2] === e) return true;
        break;
      case B: // Bearer
        if (eight) return true;
        marked = true;
        if (bf[i + 1] === e && bf[i + 2] === a) return true;
        break;
      case A: // AKIA ASIA AGPA AIDA AROA AIza
        if (eight) return true;
        marked = true;
        if (bf[i + 1] === 75 || bf[i + 1] === 83 || bf[i + 1] === 71 || bf[i + 1] === 73 || bf[i + 1] === 82) return true;
        break;
    }
  }
  return false;
}
