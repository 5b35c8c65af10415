import { Reader } from './buffer.js';

/** Decoding of the frontend messages the gateway reads (buf[start] is the message type). */

export const pick = (b: Buffer, start: number, end: number): Reader => new Reader(b, start + 5, end);

export interface ParseMessage {
  name: string;
  sql: string;
  /** Parameter type OIDs the Parse declared (0 = inferred). */
  types: number[];
}

export function decodeParse(b: Buffer, start: number, end: number): ParseMessage {
  const r = pick(b, start, end);
  const name = r.cstring();
  const sql = r.cstring();
  const n = r.int16();
  const types: number[] = [];
  for (let i = 0; i < n; i++) types.push(r.int32());
  return { name, sql, types };
}

export interface BindMessage {
  portal: string;
  statement: string;
  /** Result format codes: none = all text, one = for all columns, else per column. */
  formats: number[];
  /** Parameter values, decoded only when asked (held statements): text, or \\x hex when sent in binary. */
  params?: (string | null)[];
  binaryParams: boolean;
  /** Each parameter's format (0 text, 1 binary), with the values. */
  paramFormats: number[];
}

/** A Bind; `withParams` decodes its parameter values too (they are part of what an approval binds). */
export function decodeBind(b: Buffer, start: number, end: number, withParams: boolean): BindMessage {
  const r = pick(b, start, end);
  const portal = r.cstring();
  const statement = r.cstring();
  const nParamFormats = r.int16();
  const declared: number[] = [];
  for (let i = 0; i < nParamFormats; i++) declared.push(r.int16());
  const nParams = r.int16();
  const params: (string | null)[] | undefined = withParams ? [] : undefined;
  const paramFormats: number[] = [];
  let binaryParams = false;
  for (let i = 0; i < nParams; i++) {
    const len = r.int32();
    const v = len > 0 ? r.bytes(len) : undefined;
    if (!params) continue;
    const binary = (nParamFormats === 1 ? declared[0] : declared[i]) === 1;
    binaryParams ||= binary;
    paramFormats.push(binary ? 1 : 0);
    params.push(len < 0 ? null : binary ? `\\x${(v ?? Buffer.alloc(0)).toString('hex')}` : (v?.toString('utf8') ?? ''));
  }
  const nFormats = r.int16();
  const formats: number[] = [];
  for (let i = 0; i < nFormats; i++) formats.push(r.int16());
  return { portal, statement, formats, params, binaryParams, paramFormats };
}

/** Describe or Close: a prepared statement ('S') or a portal ('P'), by name. */
export function decodeTarget(b: Buffer, start: number, end: number): { statement: boolean; name: string } {
  const r = pick(b, start, end);
  const statement = String.fromCharCode(r.byte()) === 'S';
  return { statement, name: r.cstring() };
}

/** A startup message's parameters (after the protocol version), and the protocol options (`_pq_.`) it asked for. */
export function decodeStartup(msg: Buffer): { params: Record<string, string>; unsupported: string[] } {
  const r = new Reader(msg, 8);
  const params: Record<string, string> = {};
  const unsupported: string[] = [];
  for (;;) {
    const k = r.cstring();
    if (k === '') break;
    const v = r.cstring();
    if (k.startsWith('_pq_.')) unsupported.push(k);
    else params[k] = v;
  }
  return { params, unsupported };
}
