import { Reader, Writer } from './buffer.js';

export const PROTOCOL_3_0 = 196608;
export const SSL_REQUEST_CODE = 80877103;
export const GSSENC_REQUEST_CODE = 80877104;
export const CANCEL_REQUEST_CODE = 80877102;

/** Fields of an ErrorResponse / NoticeResponse, by their single-letter protocol codes. */
export interface PgErrorFields {
  severity: 'ERROR' | 'FATAL' | 'PANIC' | 'WARNING' | 'NOTICE' | 'INFO' | 'LOG' | 'DEBUG';
  code: string;
  message: string;
  detail?: string;
  hint?: string;
  [field: string]: string | undefined;
}

const FIELD_CODES: Record<string, string> = {
  severity: 'S',
  code: 'C',
  message: 'M',
  detail: 'D',
  hint: 'H',
  position: 'P',
  where: 'W',
  schema: 's',
  table: 't',
  column: 'c',
  constraint: 'n',
};
const FIELD_NAMES: Record<string, string> = Object.fromEntries(Object.entries(FIELD_CODES).map(([k, v]) => [v, k]));

function fieldsMessage(type: 'E' | 'N', f: PgErrorFields): Buffer {
  const w = new Writer();
  w.int8('S'.charCodeAt(0)).cstring(f.severity);
  w.int8('V'.charCodeAt(0)).cstring(f.severity);
  for (const [name, value] of Object.entries(f)) {
    if (name === 'severity' || value === undefined) continue;
    const code = FIELD_CODES[name];
    if (code) w.int8(code.charCodeAt(0)).cstring(value);
  }
  w.int8(0);
  return w.message(type);
}

export const errorResponse = (f: PgErrorFields): Buffer => fieldsMessage('E', f);
export const noticeResponse = (f: Omit<PgErrorFields, 'severity'> & { severity?: PgErrorFields['severity'] }): Buffer =>
  fieldsMessage('N', { severity: 'NOTICE', ...f } as PgErrorFields);

/** Parse the body of an ErrorResponse/NoticeResponse (buf[start] is the type byte). */
export function parseErrorFields(buf: Buffer, start: number, end: number): Record<string, string> {
  const r = new Reader(buf, start + 5, end);
  const out: Record<string, string> = {};
  while (r.remaining > 0) {
    const code = r.byte();
    if (code === 0) break;
    const value = r.cstring();
    const ch = String.fromCharCode(code);
    out[FIELD_NAMES[ch] ?? ch] = value;
  }
  return out;
}

/** The same ErrorResponse/NoticeResponse, every field kept in its order, with another message text. */
export function withMessage(buf: Buffer, start: number, end: number, message: string): Buffer {
  const r = new Reader(buf, start + 5, end);
  const w = new Writer();
  while (r.remaining > 0) {
    const code = r.byte();
    if (code === 0) break;
    const value = r.cstring();
    w.int8(code).cstring(code === 0x4d /* M */ ? message : value);
  }
  w.int8(0);
  return w.message(String.fromCharCode(buf[start]!));
}

export const authenticationOk = (): Buffer => new Writer().int32(0).message('R');
export const authenticationCleartext = (): Buffer => new Writer().int32(3).message('R');
export const parameterStatus = (name: string, value: string): Buffer => new Writer().cstring(name).cstring(value).message('S');
export const backendKeyData = (pid: number, secret: number): Buffer => new Writer().int32(pid).int32(secret).message('K');
export const readyForQuery = (status: string): Buffer => new Writer().int8(status.charCodeAt(0)).message('Z');
export function negotiateProtocolVersion(minor: number, unsupported: string[]): Buffer {
  const w = new Writer().int32(minor).int32(unsupported.length);
  for (const o of unsupported) w.cstring(o);
  return w.message('v');
}

// ---- frontend messages the gateway itself sends upstream ----
export function startupMessage(params: Record<string, string>): Buffer {
  const w = new Writer().int32(PROTOCOL_3_0);
  for (const [k, v] of Object.entries(params)) w.cstring(k).cstring(v);
  w.int8(0);
  return w.untyped();
}
export const passwordMessage = (password: string): Buffer => new Writer().cstring(password).message('p');
export function saslInitialResponse(mechanism: string, data: Buffer): Buffer {
  return new Writer().cstring(mechanism).int32(data.length).bytes(data).message('p');
}
export const saslResponse = (data: Buffer): Buffer => new Writer().bytes(data).message('p');
export const query = (sql: string): Buffer => new Writer().cstring(sql).message('Q');
export function parse(name: string, sql: string, paramTypes: number[] = []): Buffer {
  const w = new Writer().cstring(name).cstring(sql).int16(paramTypes.length);
  for (const t of paramTypes) w.int32(t);
  return w.message('P');
}
export const sync = (): Buffer => new Writer().message('S');
export const describe = (what: 'S' | 'P', name: string): Buffer => new Writer().int8(what.charCodeAt(0)).cstring(name).message('D');
export const terminate = (): Buffer => new Writer().message('X');
export const cancelRequest = (pid: number, secret: number): Buffer =>
  new Writer().int32(CANCEL_REQUEST_CODE).int32(pid).int32(secret).untyped();
export const sslRequest = (): Buffer => new Writer().int32(SSL_REQUEST_CODE).untyped();
