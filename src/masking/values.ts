import { detect, type DetectorType } from './detectors.js';
import { applyMasker, defaultForDetector, type MaskerName } from './maskers.js';

/** One column of a RowDescription. */
export interface Field {
  name: string;
  tableOid: number;
  attnum: number;
  typeOid: number;
  format: number;
  /** The table column this result column is as is, when the protocol says so (MySQL's org_table/org_name). */
  origin?: { table: string; column: string };
}

/** What happens to one column's cells: left alone, scanned by the detectors, or masked whole by a rule. */
/**
 * `scan`: the detectors look at the cell's text; `binaryNumber`: a binary int8/numeric cell, read as its text;
 * `nullOnHit`: a value of a type other than text (an int8 or numeric column, inet, a timestamp) cannot carry the
 * masked text (clients parse it as the type), so a hit makes it NULL, as binary numbers and dates do.
 */
export type ColumnAction = { kind: 'pass' } | { kind: 'scan'; binaryNumber?: number; floatText?: boolean; nullOnHit?: boolean } | { kind: 'rule'; masker: MaskerName; label: string; json?: boolean };

export interface MaskPlan {
  columns: ColumnAction[];
  key: Buffer;
  /** The columns are not known (no RowDescription was seen): scan every cell as text. */
  scanUnknown?: boolean;
}
export const SCAN: ColumnAction = { kind: 'scan' };

/** Counts of what was masked in one result, by detector type or rule label. */
export type MaskCounts = Map<string, number>;

/** Types whose binary wire form is their UTF-8 text, so binary cells can be scanned as text too. */
const TEXTUAL_BINARY = new Set([25, 1043, 1042, 19, 114, 705, 142]);
export const scannable = (f: Pick<Field, 'format' | 'typeOid'>): boolean => f.format === 0 || TEXTUAL_BINARY.has(f.typeOid);
/** int8, numeric and float8 in binary form: numbers long enough to be card numbers, which their text form would show. */
export const binaryNumber = (f: Pick<Field, 'format' | 'typeOid'>): boolean => f.format === 1 && (f.typeOid === 20 || f.typeOid === 1700 || f.typeOid === 701);

/**
 * A floating-point value's digits as the detectors read numbers: a double holds a 16-digit card number exactly,
 * and its text form (`4.111111111111111e+15`) shows no card; whole values of 12 or more digits are written out.
 */
export function floatText(n: number): string {
  return Number.isInteger(n) && Math.abs(n) >= 1e11 && Math.abs(n) < 1e21 ? BigInt(n).toString() : String(n);
}

/** The text of a binary int8 (typeOid 20) or numeric cell, for the detectors. */
export function binaryNumberText(typeOid: number, b: Buffer, start: number, end: number): string {
  if (typeOid === 20) return end - start === 8 ? b.readBigInt64BE(start).toString() : '';
  if (typeOid === 701) return end - start === 8 ? floatText(b.readDoubleBE(start)) : '';
  if (end - start < 8) return '';
  const ndigits = b.readInt16BE(start);
  const weight = b.readInt16BE(start + 2);
  const sign = b.readUInt16BE(start + 4);
  if (sign !== 0 && sign !== 0x4000) return '';
  const dscale = b.readInt16BE(start + 6);
  const digit = (i: number) => (i >= 0 && i < ndigits && start + 10 + 2 * i <= end ? String(b.readInt16BE(start + 8 + 2 * i)).padStart(4, '0') : '0000');
  let int = '';
  for (let i = 0; i <= weight; i++) int += digit(i);
  let frac = '';
  for (let i = weight + 1; frac.length < dscale; i++) frac += digit(i);
  int = int.replace(/^0+(?=.)/, '') || '0';
  return (sign === 0x4000 ? '-' : '') + int + (dscale > 0 ? '.' + frac.slice(0, dscale) : '');
}

/** Count one masked value of a kind (detector type or rule label). */
export const countMasked = (c: MaskCounts, k: string) => c.set(k, (c.get(k) ?? 0) + 1);

/** Mask every detector hit inside a text; undefined when there is none. */
export function maskText(v: string, counts: MaskCounts): string | undefined {
  const hits = detect(v);
  if (hits.length === 0) return undefined;
  let out = '';
  let at = 0;
  for (const h of hits) {
    out += v.slice(at, h.start) + defaultForDetector(h.type as DetectorType, v.slice(h.start, h.end));
    at = h.end;
    countMasked(counts, h.type);
  }
  return out + v.slice(at);
}

const HIDDEN = '[hidden by Sluice: the statement reads columns masked for you]';

/**
 * An error or notice text (message, detail, hint, context) for an identity whose results are masked: detector hits
 * masked; when the statement touches a masked column (`tainted`), quoted values and `(key)=(value)` pairs are
 * hidden and detail/context replaced, since servers echo values there (`invalid input syntax for type integer:
 * "123-45-6789"`, `Key (ssn)=(...) already exists`, `Failing row contains (...)`).
 */
export function scrubText(v: string, field: 'message' | 'detail' | 'hint' | 'context', o: { tainted: boolean; detectors: boolean }): string {
  let out = v;
  if (o.tainted && (field === 'detail' || field === 'context')) out = HIDDEN;
  else if (o.tainted) out = out.replace(/"[^"]*"/g, '"****"').replace(/\([^()]*\)=\([^()]*\)/g, '(****)=(****)');
  if (o.detectors) out = maskText(out, new Map()) ?? out;
  return out;
}

/** One decoded text cell under its column's action: the replacement, null (masked to NULL), or undefined (unchanged). */
export function maskValue(action: ColumnAction, v: string, key: Buffer, counts: MaskCounts): string | null | undefined {
  if (action.kind === 'pass') return undefined;
  if (action.kind === 'scan') {
    const r = maskText(v, counts);
    return r !== undefined && action.nullOnHit ? null : r;
  }
  countMasked(counts, action.label);
  const r = applyMasker(action.masker, v, key, action.label);
  // A masked json/jsonb value is sent as a JSON string so the client can still parse it.
  return action.json && r !== null ? JSON.stringify(r) : r;
}
