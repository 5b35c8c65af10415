import { Reader, ProtocolError, Writer } from './buffer.js';
import { mayContainSensitive } from '../../masking/detectors.js';
import { binaryNumberText, floatText, maskText, maskValue, scrubText, SCAN, type Field, type MaskCounts, type MaskPlan } from '../../masking/values.js';

/** The PostgreSQL row codec under a masking plan: RowDescription, DataRow, error/notice texts, notifications. */

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
    if (action.kind === 'scan' && (action.binaryNumber || action.floatText)) {
      const text = action.binaryNumber ? binaryNumberText(action.binaryNumber, buf, pos, cellEnd) : floatText(Number(buf.toString('latin1', pos, cellEnd)));
      if (maskText(text, counts) !== undefined) {
        (changed ??= new Array(n))[i] = null;
        grow -= len;
      }
    } else if (action.kind === 'rule' || (action.kind === 'scan' && mayContainSensitive(buf, pos, cellEnd))) {
      const replacement = maskValue(action, buf.toString('utf8', pos, cellEnd), plan.key, counts);
      if (replacement !== undefined) {
        const out = replacement === null ? null : Buffer.from(replacement, 'utf8');
        (changed ??= new Array(n))[i] = out;
        grow += (out ? out.length : 0) - len;
      }
    }
    pos = cellEnd;
  }
  if (pos !== end) throw new ProtocolError('DataRow has bytes after its last column');
  if (!changed) return undefined;
  // Rebuild in one allocation: unchanged cells are copied as they are.
  const size = end - start + grow;
  const out = Buffer.allocUnsafe(size);
  out[0] = 0x44;
  out.writeInt32BE(size - 1, 1);
  out.writeInt16BE(n, 5);
  let o = 7;
  // Unchanged cells are copied as they are, length words included, a run of neighbours at a time.
  let from = -1;
  let to = -1;
  const flush = () => {
    if (from >= 0) o += buf.copy(out, o, from, to);
    from = -1;
  };
  for (let i = 0; i < n; i++) {
    const c = changed[i];
    if (c === undefined) {
      if (from < 0) from = cellAt[i]! - 4;
      to = cellAt[i]! + Math.max(cellLen[i]!, 0);
      continue;
    }
    flush();
    if (c === null) {
      out.writeInt32BE(-1, o);
      o += 4;
    } else {
      out.writeInt32BE(c.length, o);
      o += 4 + c.copy(out, o + 4);
    }
  }
  flush();
  return out;
}

/** ErrorResponse/NoticeResponse fields whose text can echo values (q: the internal query of a PL/pgSQL error). */
const TEXT_FIELDS: Record<string, 'message' | 'detail' | 'hint' | 'context'> = { M: 'message', D: 'detail', H: 'hint', W: 'context', q: 'context' };

/**
 * An ErrorResponse or NoticeResponse (buf[start] is its type) with its texts scrubbed (see scrubText); undefined
 * when nothing changed.
 */
export function scrubNotice(buf: Buffer, start: number, end: number, o: { tainted: boolean; detectors: boolean }): Buffer | undefined {
  const r = new Reader(buf, start + 5, end);
  const w = new Writer();
  let changed = false;
  for (;;) {
    const code = r.byte();
    if (code === 0) break;
    let v = r.cstring();
    const field = TEXT_FIELDS[String.fromCharCode(code)];
    if (field) {
      const before = v;
      v = scrubText(v, field, o);
      changed ||= v !== before;
    }
    w.int8(code).cstring(v);
  }
  if (!changed) return undefined;
  w.int8(0);
  return w.message(String.fromCharCode(buf[start]!));
}

/** A NotificationResponse with detector hits in its payload masked; undefined when nothing changed. */
export function maskNotification(buf: Buffer, start: number, end: number): Buffer | undefined {
  const r = new Reader(buf, start + 5, end);
  const pid = r.int32();
  const channel = r.cstring();
  const masked = maskText(r.cstring(), new Map());
  return masked === undefined ? undefined : new Writer().int32(pid).cstring(channel).cstring(masked).message('A');
}

/** A CopyData line of text with detector hits masked; undefined when nothing changed. */
export function maskCopyLine(buf: Buffer, start: number, end: number, counts: MaskCounts): Buffer | undefined {
  if (!mayContainSensitive(buf, start + 5, end)) return undefined;
  const line = maskText(buf.toString('utf8', start + 5, end), counts);
  return line === undefined ? undefined : new Writer().bytes(Buffer.from(line, 'utf8')).message('d');
}
