import { Reader, ProtocolError } from '../protocol/postgres/buffer.js';
import { detect, mayContainSensitive, type DetectorType } from './detectors.js';
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
export type ColumnAction = { kind: 'pass' } | { kind: 'scan' } | { kind: 'rule'; masker: MaskerName; label: string; json?: boolean };

export interface MaskPlan {
  columns: ColumnAction[];
  key: Buffer;
  /** The columns are not known (no RowDescription was seen): scan every cell as text. */
  scanUnknown?: boolean;
}
const SCAN: ColumnAction = { kind: 'scan' };

/** Counts of what was masked in one result, by detector type or rule label. */
export type MaskCounts = Map<string, number>;

export function parseRowDescription(buf: Buffer, start: number, end: number): Field[] {
  const r = new Reader(buf, start + 5, end);
  const n = r.int16();
  const fields: Field[] = [];
  for (let i = 0; i < n; i++) {
    const name = r.cstring();
    const tableOid = r.int32() >>> 0;
    const attnum = r.int16();
    const typeOid = r.int32() >>> 0;
    r.int16(); // typlen
    r.int32(); // typmod
    const format = r.int16();
    fields.push({ name, tableOid, attnum, typeOid, format });
  }
  return fields;
}

/** Types whose binary wire form is their UTF-8 text, so binary cells can be scanned as text too. */
const TEXTUAL_BINARY = new Set([25, 1043, 1042, 19, 114, 705, 142]);
export const scannable = (f: Pick<Field, 'format' | 'typeOid'>): boolean => f.format === 0 || TEXTUAL_BINARY.has(f.typeOid);

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
  if (action.kind === 'scan') return maskText(v, counts);
  countMasked(counts, action.label);
  const r = applyMasker(action.masker, v, key, action.label);
  // A masked json/jsonb value is sent as a JSON string so the client can still parse it.
  return action.json && r !== null ? JSON.stringify(r) : r;
}

// Reused per call (single-threaded): cell offsets and lengths of the row being masked. PostgreSQL allows at most
// 1664 columns in a result.
const cellAt = new Int32Array(1664);
const cellLen = new Int32Array(1664);
const readI32 = (b: Buffer, p: number) => (b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!;

/**
 * Apply a plan to one DataRow message (buf[start] is 'D'). Returns undefined when nothing changed (forward the
 * original bytes), or the rebuilt message. Cells are handled as offsets into the message; only cells that the
 * byte pre-scan flags are decoded.
 */
export function maskDataRow(buf: Buffer, start: number, end: number, plan: MaskPlan, counts: MaskCounts): Buffer | undefined {
  if (end - start < 7) throw new ProtocolError('DataRow too short');
  const n = (buf[start + 5]! << 8) | buf[start + 6]!;
  if (n > cellAt.length) throw new ProtocolError(`DataRow has ${n} columns`);
  if (!plan.scanUnknown && n !== plan.columns.length) throw new ProtocolError(`DataRow has ${n} columns but its RowDescription had ${plan.columns.length}`);
  let pos = start + 7;
  let changed: (Buffer | null | undefined)[] | undefined;
  let grow = 0;
  for (let i = 0; i < n; i++) {
    if (pos + 4 > end) throw new ProtocolError('DataRow truncated');
    const len = readI32(buf, pos);
    pos += 4;
    cellAt[i] = pos;
    cellLen[i] = len;
    if (len < 0) continue;
    const cellEnd = pos + len;
    if (cellEnd > end) throw new ProtocolError('DataRow cell overruns the message');
    const action = plan.scanUnknown ? SCAN : plan.columns[i]!;
    if (action.kind === 'rule' || (action.kind === 'scan' && mayContainSensitive(buf, pos, cellEnd))) {
      const replacement = maskValue(action, buf.toString('utf8', pos, cellEnd), plan.key, counts);
      if (replacement !== undefined) {
        const out = replacement === null ? null : Buffer.from(replacement, 'utf8');
        (changed ??= new Array(n))[i] = out;
        grow += (out ? out.length : 0) - len;
      }
    }
    pos = cellEnd;
  }
  if (!changed) return undefined;
  // Rebuild in one allocation: unchanged cells are copied as they are.
  const size = end - start + grow;
  const out = Buffer.allocUnsafe(size);
  out[0] = 0x44;
  out.writeInt32BE(size - 1, 1);
  out.writeInt16BE(n, 5);
  let o = 7;
  for (let i = 0; i < n; i++) {
    const c = changed[i];
    if (c !== undefined) {
      if (c === null) {
        out.writeInt32BE(-1, o);
        o += 4;
      } else {
        out.writeInt32BE(c.length, o);
        c.copy(out, o + 4);
        o += 4 + c.length;
      }
      continue;
    }
    const len = cellLen[i]!;
    out.writeInt32BE(len, o);
    o += 4;
    if (len > 0) {
      buf.copy(out, o, cellAt[i]!, cellAt[i]! + len);
      o += len;
    }
  }
  return out;
}
