import crypto from 'node:crypto';
import type { DetectorType } from './detectors.js';

export const MASKERS = ['redact', 'partial', 'hash', 'null', 'email'] as const;
export type MaskerName = (typeof MASKERS)[number];

/** Keep the last 4 characters that are letters or digits, star the other letters and digits, keep separators. */
export function partial(v: string): string {
  let keep = 4;
  let out = '';
  for (let i = v.length - 1; i >= 0; i--) {
    const c = v.charCodeAt(i);
    const alnum = (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
    if (alnum && keep === 0) out = '*' + out;
    else {
      if (alnum) keep--;
      out = v[i] + out;
    }
  }
  return out;
}

/** Format-preserving email: first character of the local part and the top-level domain stay. */
export function maskEmail(v: string): string {
  const at = v.lastIndexOf('@');
  if (at < 1) return redact(v);
  const local = v.slice(0, at);
  const domain = v.slice(at + 1);
  const dot = domain.lastIndexOf('.');
  const tld = dot >= 0 ? domain.slice(dot) : '';
  return `${local[0]}***@***${tld}`;
}

export const redact = (_v: string, type?: string): string => (type ? `[redacted ${type}]` : '[redacted]');

/** Keyed, deterministic: equal inputs give equal outputs (joins and GROUP BY still work), not reversible. */
export function hashValue(v: string, key: Buffer): string {
  return 'h:' + crypto.createHmac('sha256', key).update(v).digest('hex').slice(0, 16);
}

/** Apply a named masker; `null` yields null (an SQL NULL). */
export function applyMasker(name: MaskerName, v: string, key: Buffer, type?: string): string | null {
  switch (name) {
    case 'redact':
      return redact(v, type);
    case 'partial':
      return partial(v);
    case 'hash':
      return hashValue(v, key);
    case 'null':
      return null;
    case 'email':
      return maskEmail(v);
  }
}

/** What a detector hit becomes with zero configuration: readable shape, no secret. */
export function defaultForDetector(type: DetectorType, v: string): string {
  switch (type) {
    case 'email':
      return maskEmail(v);
    case 'card':
    case 'phone':
    case 'ssn':
    case 'iban':
      return partial(v);
    default:
      return redact(v, type);
  }
}
