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
const CARD = /(?<![\d.])\d(?:[ -]?\d){12,18}(?![\d.])/g;
const SSN = /(?<![\d-])(\d{3})-(\d{2})-(\d{4})(?![\d-])/g;
const PHONE_INTL = /(?<![\w+])\+[1-9]\d{0,2}(?:[ .-]?\(?\d{1,4}\)?){2,6}(?!\d)/g;
const PHONE_NANP = /(?<!\d)(?:\(\d{3}\)\s?|\d{3}[-.])\d{3}[-.]\d{4}(?!\d)/g;
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

/** All detector hits in a cell, non-overlapping (the earlier and longer hit wins), in order. */
export function detect(s: string): Hit[] {
  if (s.length < 7) return [];
  const hits: Hit[] = [];
  const digits = digitCount(s);
  const hasAt = s.includes('@');
  if (hasAt) each(EMAIL, s, 'email', hits);
  if (s.includes('eyJ')) each(JWT, s, 'jwt', hits);
  if (s.includes('Bearer')) each(BEARER, s, 'bearer', hits);
  if (s.includes('A')) each(AWS, s, 'aws_key', hits);
  if (s.includes('_') || s.includes('-') || s.includes('AIza')) each(API_KEY, s, 'api_key', hits);
  if (digits >= 13) {
    each(CARD, s, 'card', hits, (m) => {
      const d = m[0].replace(/[ -]/g, '');
      return d.length >= 13 && d.length <= 19 && luhnValid(d) && !/^(\d)\1+$/.test(d);
    });
  }
  if (digits >= 9 && s.includes('-')) {
    each(SSN, s, 'ssn', hits, (m) => {
      const area = Number(m[1]);
      return area !== 0 && area !== 666 && area < 900 && m[2] !== '00' && m[3] !== '0000';
    });
  }
  if (digits >= 10) {
    each(PHONE_NANP, s, 'phone', hits);
    if (s.includes('+')) {
      each(PHONE_INTL, s, 'phone', hits, (m) => {
        const n = digitCount(m[0]);
        return n >= 8 && n <= 15;
      });
    }
  }
  if (digits >= 4 && /[A-Z]{2}\d\d/.test(s)) each(IBAN, s, 'iban', hits, (m) => ibanValid(m[0]));
  if (digits >= 4 && s.includes('.')) each(IPV4, s, 'ipv4', hits);
  if (s.includes(':')) {
    each(IPV6, s, 'ipv6', hits, (m) => m[0].includes('::') || m[0].split(':').length === 8 ? net.isIPv6(m[0]) : false);
  }
  if (hits.length < 2) return hits;
  hits.sort((a, b) => a.start - b.start || b.end - a.end);
  const out: Hit[] = [];
  for (const h of hits) if (!out.length || h.start >= out[out.length - 1]!.end) out.push(h);
  return out;
}
