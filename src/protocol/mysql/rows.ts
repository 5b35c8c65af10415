import { countMasked, floatText, maskText, maskValue, type MaskCounts, type MaskPlan } from '../../masking/values.js';
import { mayContainSensitive } from '../../masking/detectors.js';
import { MyProtocolError, MyReader, TYPE, binarySize, isTextColumn, lenencBuf, lenencInt, lenencSize, type MyColumn } from './packets.js';

/** The MySQL row codec under a masking plan: text-protocol and binary-protocol result rows. */

// Reused per call (single-threaded): where each cell of the row being masked starts.
const starts = new Int32Array(4096);

/**
 * Mask one text-protocol row. Cells are handled as offsets into the packet (only cells the byte pre-scan flags
 * are decoded) and a changed row is rebuilt in one allocation, unchanged cells copied with their length prefix.
 */
export function maskTextRow(p: Buffer, columns: MyColumn[], plan: MaskPlan, counts: () => MaskCounts): Buffer | undefined {
  const n = columns.length;
  if (n + 1 > starts.length) throw new MyProtocolError(`row of ${n} columns`);
  let changed: (string | null | undefined)[] | undefined;
  const r = new MyReader(p);
  for (let i = 0; i < n; i++) {
    starts[i] = r.pos;
    const len = r.lenenc();
    if (len === null) continue;
    const at = r.pos;
    const end = at + len;
    if (end > p.length) throw new MyProtocolError('row cell overruns the packet');
    r.pos = end;
    const action = plan.columns[i];
    const col = columns[i]!;
    // A DOUBLE or FLOAT's text (`4.111111111111111e15`) is scanned as the number it is (see floatText).
    if (action?.kind === 'scan' && (col.type === TYPE.DOUBLE || col.type === TYPE.FLOAT)) {
      if (maskText(floatText(Number(p.toString('latin1', at, end))), counts()) !== undefined) (changed ??= new Array(n))[i] = null;
      continue;
    }
    if (!action || action.kind === 'pass' || (action.kind === 'scan' && !mayContainSensitive(p, at, end))) continue;
    const c = counts();
    let m: string | null | undefined;
    if (action.kind === 'rule' && !isTextColumn(columns[i]!)) {
      // A masked number or date would not parse as its type in the client: it becomes NULL (as in binary rows).
      countMasked(c, action.label);
      m = null;
    } else {
      m = maskValue(action, p.toString('utf8', at, end), plan.key, c);
      // The same for a detector's hit in a number or date column (a card number in a BIGINT).
      if (m !== undefined && action.kind === 'scan' && !isTextColumn(columns[i]!)) m = null;
    }
    if (m !== undefined) (changed ??= new Array(n))[i] = m;
  }
  starts[n] = r.pos;
  if (!changed) return undefined;
  let size = 0;
  for (let i = 0; i < n; i++) {
    const c = changed[i];
    if (c === undefined) size += starts[i + 1]! - starts[i]!;
    else if (c === null) size += 1;
    else {
      const len = Buffer.byteLength(c, 'utf8');
      size += lenencSize(len) + len;
    }
  }
  const out = Buffer.allocUnsafe(size);
  let o = 0;
  for (let i = 0; i < n; i++) {
    const c = changed[i];
    if (c === undefined) {
      o += p.copy(out, o, starts[i]!, starts[i + 1]!);
    } else if (c === null) out[o++] = 0xfb;
    else {
      const len = Buffer.byteLength(c, 'utf8');
      o += lenencInt(len).copy(out, o);
      o += out.write(c, o, 'utf8');
    }
  }
  return out;
}

/** Mask one binary-protocol row (COM_STMT_EXECUTE results). */
export function maskBinaryRow(p: Buffer, columns: MyColumn[], plan: MaskPlan, counts: () => MaskCounts): Buffer | undefined {
  const n = columns.length;
  const bitmapLen = (n + 7 + 2) >> 3;
  const nulls = Buffer.from(p.subarray(1, 1 + bitmapLen));
  const r = new MyReader(p, 1 + bitmapLen);
  const cells: Buffer[] = [];
  let changed = false;
  for (let i = 0; i < n; i++) {
    const bit = i + 2;
    if (nulls[bit >> 3]! & (1 << (bit & 7))) continue;
    const col = columns[i]!;
    const size = binarySize(col.type);
    const start = r.pos;
    let value: Buffer | undefined;
    if (size >= 0) r.bytes(size);
    else if (size === -2) r.bytes(r.int1());
    else value = r.lenencBytes() ?? Buffer.alloc(0);
    const raw = p.subarray(start, r.pos);
    const action = plan.columns[i];
    if (!action || action.kind === 'pass') {
      cells.push(raw);
      continue;
    }
    if (value === undefined) {
      // A rule on a number or date: it cannot be rewritten in its binary form, so it becomes NULL.
      if (action.kind === 'rule') {
        nulls[bit >> 3]! |= 1 << (bit & 7);
        countMasked(counts(), action.label);
        changed = true;
      } else if (
        (col.type === TYPE.LONGLONG && maskText((col.flags & 32 ? raw.readBigUInt64LE(0) : raw.readBigInt64LE(0)).toString(), counts()) !== undefined) ||
        (col.type === TYPE.DOUBLE && maskText(floatText(raw.readDoubleLE(0)), counts()) !== undefined)
      ) {
        // A BIGINT's or DOUBLE's number can be a card number (the text protocol's row would be scanned): it becomes NULL.
        nulls[bit >> 3]! |= 1 << (bit & 7);
        changed = true;
      } else cells.push(raw);
      continue;
    }
    let m = maskValue(action, value.toString('utf8'), plan.key, counts());
    // A detector's hit in a DECIMAL (sent as its text) or another non-text column: NULL, as in text rows.
    if (m !== undefined && action.kind === 'scan' && !isTextColumn(col)) m = null;
    if (m === undefined) cells.push(raw);
    else if (m === null) {
      nulls[bit >> 3]! |= 1 << (bit & 7);
      changed = true;
    } else {
      cells.push(lenencBuf(Buffer.from(m, 'utf8')));
      changed = true;
    }
  }
  if (!changed) return undefined;
  return Buffer.concat([Buffer.from([0x00]), nulls, ...cells]);
}
