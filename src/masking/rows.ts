import { Reader, Writer, ProtocolError } from '../protocol/postgres/buffer.js';
import { detect, type DetectorType } from './detectors.js';
import { applyMasker, defaultForDetector, type MaskerName } from './maskers.js';

/** One column of a RowDescription. */
export interface Field {
  name: string;
  tableOid: number;
  attnum: number;
  typeOid: number;
  format: number;
}

/** What happens to one column's cells: left alone, scanned by the detectors, or masked whole by a rule. */
export type ColumnAction = { kind: 'pass' } | { kind: 'scan' } | { kind: 'rule'; masker: MaskerName; label: string };

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

const bump = (c: MaskCounts, k: string) => c.set(k, (c.get(k) ?? 0) + 1);

function maskText(v: string, counts: MaskCounts): string | undefined {
  const hits = detect(v);
  if (hits.length === 0) return undefined;
  let out = '';
  let at = 0;
  for (const h of hits) {
    out += v.slice(at, h.start) + defaultForDetector(h.type as DetectorType, v.slice(h.start, h.end));
    at = h.end;
    bump(counts, h.type);
  }
  return out + v.slice(at);
}

/**
 * Apply a plan to one DataRow message (buf[start] is 'D'). Returns the message to send: the original slice when
 * nothing changed, or a rebuilt message.
 */
export function maskDataRow(buf: Buffer, start: number, end: number, plan: MaskPlan, counts: MaskCounts): Buffer | undefined {
  const r = new Reader(buf, start + 5, end);
  const n = r.int16();
  if (!plan.scanUnknown && n !== plan.columns.length) throw new ProtocolError(`DataRow has ${n} columns but its RowDescription had ${plan.columns.length}`);
  let changed: (Buffer | null | undefined)[] | undefined;
  const cells: (Buffer | null)[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const len = r.int32();
    const cell = len < 0 ? null : r.bytes(len);
    cells[i] = cell;
    const action = plan.scanUnknown ? SCAN : plan.columns[i]!;
    if (cell === null || action.kind === 'pass') continue;
    let replacement: string | null | undefined;
    if (action.kind === 'rule') {
      replacement = applyMasker(action.masker, cell.toString('utf8'), plan.key, action.label);
      bump(counts, action.label);
    } else {
      replacement = maskText(cell.toString('utf8'), counts);
      if (replacement === undefined) continue;
    }
    changed ??= [];
    changed[i] = replacement === null ? null : Buffer.from(replacement, 'utf8');
  }
  if (!changed) return undefined;
  const w = new Writer().int16(n);
  for (let i = 0; i < n; i++) {
    const v = i in changed ? changed[i]! : cells[i]!;
    if (v === null) w.int32(-1);
    else w.int32(v.length).bytes(v);
  }
  return w.message('D');
}
