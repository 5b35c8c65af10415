import type { Field } from '../../masking/values.js';
/** MySQL/MariaDB client/server protocol: framing, field codecs and the packets the gateway builds itself. */

export class MyProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MyProtocolError';
  }
}

export const CAP = {
  LONG_PASSWORD: 1,
  FOUND_ROWS: 2,
  LONG_FLAG: 4,
  CONNECT_WITH_DB: 8,
  NO_SCHEMA: 16,
  COMPRESS: 32,
  ODBC: 64,
  LOCAL_FILES: 128,
  IGNORE_SPACE: 256,
  PROTOCOL_41: 512,
  INTERACTIVE: 1024,
  SSL: 2048,
  IGNORE_SIGPIPE: 4096,
  TRANSACTIONS: 8192,
  RESERVED: 16384,
  SECURE_CONNECTION: 32768,
  MULTI_STATEMENTS: 1 << 16,
  MULTI_RESULTS: 1 << 17,
  PS_MULTI_RESULTS: 1 << 18,
  PLUGIN_AUTH: 1 << 19,
  CONNECT_ATTRS: 1 << 20,
  PLUGIN_AUTH_LENENC_CLIENT_DATA: 1 << 21,
  CAN_HANDLE_EXPIRED_PASSWORDS: 1 << 22,
  SESSION_TRACK: 1 << 23,
  DEPRECATE_EOF: 1 << 24,
} as const;

/** MariaDB extended capability (sent in reserved handshake bytes when CLIENT_MYSQL is not set). */
export const MARIADB_CLIENT_PROGRESS = 1;
/** MariaDB extended capability: column definitions carry extended type information (json, geometry subtypes). */
export const MARIADB_CLIENT_EXTENDED_METADATA = 1 << 3;

export const STATUS = { IN_TRANS: 0x0001, AUTOCOMMIT: 0x0002, MORE_RESULTS_EXISTS: 0x0008, SESSION_STATE_CHANGED: 0x4000 } as const;

export const COM = {
  QUIT: 0x01,
  INIT_DB: 0x02,
  QUERY: 0x03,
  FIELD_LIST: 0x04,
  STATISTICS: 0x09,
  PROCESS_INFO: 0x0a,
  PROCESS_KILL: 0x0c,
  DEBUG: 0x0d,
  PING: 0x0e,
  CHANGE_USER: 0x11,
  BINLOG_DUMP: 0x12,
  STMT_PREPARE: 0x16,
  STMT_EXECUTE: 0x17,
  STMT_SEND_LONG_DATA: 0x18,
  STMT_CLOSE: 0x19,
  STMT_RESET: 0x1a,
  SET_OPTION: 0x1b,
  STMT_FETCH: 0x1c,
  RESET_CONNECTION: 0x1f,
} as const;

export const MAX_PAYLOAD = 0xffffff;

/**
 * Splits a byte stream into logical packets: [3-byte length][sequence id][payload]; a payload of exactly 2^24-1
 * bytes continues in the next packet. `visit` gets the sequence id of the first physical packet and the whole
 * payload; returning 'keep' stops before that packet (it stays buffered), 'stop' stops after it.
 */
export class MyFramer {
  /**
   * Bytes received and not yet walked. A packet arriving in many chunks is collected as a list and copied once,
   * when it is complete (copying the partial packet on every chunk made large packets quadratic).
   */
  private parts: Buffer[] = [];
  private partsLen = 0;
  /** Offset of the next physical header of the first buffered logical packet, and whether that packet is complete. */
  private scanOff = 0;
  private ready = false;
  constructor(private readonly maxPacket: number) {}

  get pending(): number {
    return this.partsLen;
  }

  /** Everything buffered and not walked, as raw bytes (the stream changes hands, e.g. to TLS). */
  takeRest(): Buffer {
    const rest = Buffer.concat(this.parts, this.partsLen);
    this.parts = [];
    this.partsLen = 0;
    this.scanOff = 0;
    this.ready = false;
    return rest;
  }

  append(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.parts.push(chunk);
    this.partsLen += chunk.length;
    if (this.partsLen > this.maxPacket + (1 << 20)) throw new MyProtocolError('too much input buffered');
    while (!this.ready && this.partsLen - this.scanOff >= 4) {
      const len = this.byteAt(this.scanOff) | (this.byteAt(this.scanOff + 1) << 8) | (this.byteAt(this.scanOff + 2) << 16);
      const end = this.scanOff + 4 + len;
      if (end > this.partsLen) break;
      this.scanOff = end;
      if (len < MAX_PAYLOAD) this.ready = true;
    }
  }

  private byteAt(off: number): number {
    for (const p of this.parts) {
      if (off < p.length) return p[off]!;
      off -= p.length;
    }
    return 0;
  }

  push(chunk: Buffer, visit: (seq: number, payload: Buffer) => 'keep' | 'stop' | void): void {
    this.append(chunk);
    // The first packet is still incomplete: nothing to walk, nothing copied.
    if (!this.ready) return;
    const b = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.partsLen);
    this.parts = [];
    this.partsLen = 0;
    this.scanOff = 0;
    this.ready = false;
    let pos = 0;
    for (;;) {
      // Find a complete logical packet starting at pos.
      let p = pos;
      let total = 0;
      const parts: [number, number][] = [];
      let complete = false;
      while (b.length - p >= 4) {
        const len = b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16);
        if (p + 4 + len > b.length) break;
        parts.push([p + 4, p + 4 + len]);
        total += len;
        if (total > this.maxPacket) throw new MyProtocolError(`packet of more than ${this.maxPacket} bytes`);
        p += 4 + len;
        if (len < MAX_PAYLOAD) {
          complete = true;
          break;
        }
      }
      if (!complete) break;
      const seq = b[pos + 3]!;
      const payload = parts.length === 1 ? b.subarray(parts[0]![0], parts[0]![1]) : Buffer.concat(parts.map(([s, e]) => b.subarray(s, e)));
      const r = visit(seq, payload);
      if (r === 'keep') break;
      pos = p;
      if (r === 'stop') break;
    }
    // Keep the tail; a small tail of a large buffer is copied so that the buffer can be freed.
    const tail = b.subarray(pos);
    if (tail.length) this.append(tail.length * 4 < b.length ? Buffer.from(tail) : tail);
  }
}

/** Write a physical packet header (3-byte length, sequence id) at `off`. */
export function writeHeader(b: Buffer, off: number, len: number, seq: number): void {
  b[off] = len & 0xff;
  b[off + 1] = (len >> 8) & 0xff;
  b[off + 2] = (len >> 16) & 0xff;
  b[off + 3] = seq & 0xff;
}

/** Frame a payload as one or more physical packets starting at `seq`; returns the bytes and the next sequence id. */
export function frame(seq: number, payload: Buffer): { bytes: Buffer; next: number } {
  if (payload.length < MAX_PAYLOAD) {
    const out = Buffer.allocUnsafe(4 + payload.length);
    writeHeader(out, 0, payload.length, seq);
    payload.copy(out, 4);
    return { bytes: out, next: (seq + 1) & 0xff };
  }
  const chunks: Buffer[] = [];
  let off = 0;
  let s = seq;
  for (;;) {
    const len = Math.min(MAX_PAYLOAD, payload.length - off);
    const h = Buffer.allocUnsafe(4);
    writeHeader(h, 0, len, s);
    chunks.push(h, payload.subarray(off, off + len));
    s = (s + 1) & 0xff;
    off += len;
    if (len < MAX_PAYLOAD) break;
  }
  return { bytes: Buffer.concat(chunks), next: s };
}

/** A string field without its terminating NUL, when it has one. */
export const withoutNul = (b: Buffer): Buffer => (b[b.length - 1] === 0 ? b.subarray(0, b.length - 1) : b);

export class MyReader {
  pos: number;
  constructor(
    readonly b: Buffer,
    start = 0,
  ) {
    this.pos = start;
  }
  get left(): number {
    return this.b.length - this.pos;
  }
  private need(n: number): void {
    if (this.pos + n > this.b.length) throw new MyProtocolError('packet too short');
  }
  int1(): number {
    this.need(1);
    return this.b[this.pos++]!;
  }
  int2(): number {
    this.need(2);
    const v = this.b.readUInt16LE(this.pos);
    this.pos += 2;
    return v;
  }
  int3(): number {
    this.need(3);
    const v = this.b.readUIntLE(this.pos, 3);
    this.pos += 3;
    return v;
  }
  int4(): number {
    this.need(4);
    const v = this.b.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  int8(): number {
    this.need(8);
    const v = Number(this.b.readBigUInt64LE(this.pos));
    this.pos += 8;
    return v;
  }
  /** Length-encoded integer; null for the 0xFB NULL marker. */
  lenenc(): number | null {
    const f = this.int1();
    if (f < 0xfb) return f;
    if (f === 0xfb) return null;
    if (f === 0xfc) return this.int2();
    if (f === 0xfd) return this.int3();
    if (f === 0xfe) return this.int8();
    throw new MyProtocolError('invalid length-encoded integer');
  }
  bytes(n: number): Buffer {
    this.need(n);
    const v = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
  lenencBytes(): Buffer | null {
    const n = this.lenenc();
    return n === null ? null : this.bytes(n);
  }
  lenencString(): string {
    return this.lenencBytes()?.toString('utf8') ?? '';
  }
  nulBytes(): Buffer {
    const end = this.b.indexOf(0, this.pos);
    if (end < 0) throw new MyProtocolError('unterminated string');
    const v = this.b.subarray(this.pos, end);
    this.pos = end + 1;
    return v;
  }
  nulString(): string {
    return this.nulBytes().toString('utf8');
  }
  rest(): Buffer {
    const v = this.b.subarray(this.pos);
    this.pos = this.b.length;
    return v;
  }
}

/** Bytes a length-encoded integer takes. */
export const lenencSize = (n: number): number => (n < 0xfb ? 1 : n < 0x10000 ? 3 : n < 0x1000000 ? 4 : 9);

export function lenencInt(n: number): Buffer {
  if (n < 0xfb) return Buffer.from([n]);
  if (n < 0x10000) return Buffer.from([0xfc, n & 0xff, n >> 8]);
  if (n < 0x1000000) return Buffer.from([0xfd, n & 0xff, (n >> 8) & 0xff, n >> 16]);
  const b = Buffer.alloc(9);
  b[0] = 0xfe;
  b.writeBigUInt64LE(BigInt(n), 1);
  return b;
}
export const lenencBuf = (v: Buffer): Buffer => Buffer.concat([lenencInt(v.length), v]);

export function int4(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}
export function int2(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n & 0xffff);
  return b;
}

export function okPacket(o: { affected?: number; insertId?: number; status: number; warnings?: number; info?: string; eofHeader?: boolean }): Buffer {
  return Buffer.concat([Buffer.from([o.eofHeader ? 0xfe : 0x00]), lenencInt(o.affected ?? 0), lenencInt(o.insertId ?? 0), int2(o.status), int2(o.warnings ?? 0), Buffer.from(o.info ?? '', 'utf8')]);
}

export function errPacket(code: number, sqlState: string, message: string): Buffer {
  return Buffer.concat([Buffer.from([0xff]), int2(code), Buffer.from(`#${sqlState.padEnd(5, '0').slice(0, 5)}`, 'ascii'), Buffer.from(message, 'utf8')]);
}

export const eofPacket = (status: number, warnings = 0): Buffer => Buffer.concat([Buffer.from([0xfe]), int2(warnings), int2(status)]);

export interface ErrInfo {
  code: number;
  sqlState: string;
  message: string;
}
export function parseErr(p: Buffer): ErrInfo {
  const r = new MyReader(p, 1);
  const code = r.int2();
  let sqlState = 'HY000';
  if (p[3] === 0x23) {
    r.int1();
    sqlState = r.bytes(5).toString('ascii');
  }
  return { code, sqlState, message: r.rest().toString('utf8') };
}

/** The status flags and affected rows of an OK packet (or an EOF-headed OK under DEPRECATE_EOF). */
export function parseOk(p: Buffer): { affected: number; insertId: number; status: number; warnings: number } {
  const r = new MyReader(p, 1);
  const affected = r.lenenc() ?? 0;
  const insertId = r.lenenc() ?? 0;
  const status = r.left >= 2 ? r.int2() : 0;
  const warnings = r.left >= 2 ? r.int2() : 0;
  return { affected, insertId, status, warnings };
}

/** The session-state changes an OK packet reports under CLIENT_SESSION_TRACK: system variables and the schema. */
export interface StateChanges {
  variables: [string, string][];
  /** The session's database, when it changed. */
  schema?: string;
}

/** Offset just past the warnings of an OK packet (or EOF-headed OK): where its info starts. */
function okInfoStart(p: Buffer): { at: number; status: number; statusAt: number } {
  const r = new MyReader(p, 1);
  r.lenenc();
  r.lenenc();
  const statusAt = r.pos;
  const status = r.left >= 2 ? r.int2() : 0;
  if (r.left >= 2) r.int2();
  return { at: r.pos, status, statusAt };
}

/**
 * What an OK packet sent under CLIENT_SESSION_TRACK says changed in the session (undefined: the server sets no
 * SERVER_SESSION_STATE_CHANGED flag). Layout: info string<lenenc>, then the state changes string<lenenc>, a list of
 * (type int<1>, data string<lenenc>); type 0 holds name/value pairs (string<lenenc> each), type 1 the schema name.
 */
export function sessionChanges(p: Buffer): StateChanges | undefined {
  const { at, status } = okInfoStart(p);
  if (!(status & STATUS.SESSION_STATE_CHANGED)) return undefined;
  const out: StateChanges = { variables: [] };
  const r = new MyReader(p, at);
  if (!r.left) return out;
  r.lenencBytes(); // info
  if (!r.left) return out;
  const list = new MyReader(r.lenencBytes() ?? Buffer.alloc(0));
  while (list.left) {
    const type = list.int1();
    const data = new MyReader(list.lenencBytes() ?? Buffer.alloc(0));
    if (type === 0) while (data.left) out.variables.push([data.lenencString().toLowerCase(), data.lenencString()]);
    else if (type === 1) out.schema = data.lenencString();
  }
  return out;
}

/**
 * An OK packet read from a server under CLIENT_SESSION_TRACK, as a client without it gets it: no state changes, no
 * SERVER_SESSION_STATE_CHANGED flag. (The info stays length-encoded: MySQL and MariaDB write it so either way.)
 */
export function withoutSessionTrack(p: Buffer): Buffer {
  const { at, status, statusAt } = okInfoStart(p);
  if (!(status & STATUS.SESSION_STATE_CHANGED)) return p;
  const r = new MyReader(p, at);
  if (r.left) r.lenencBytes();
  const q = Buffer.from(p.subarray(0, r.pos));
  q.writeUInt16LE(status & ~STATUS.SESSION_STATE_CHANGED, statusAt);
  return q;
}

/** An OK packet, EOF-headed OK, or (`classicEof`, a 0xFE packet under 9 bytes) a classic EOF, with these status flags. */
export function withStatus(p: Buffer, status: number, classicEof: boolean): Buffer {
  const q = Buffer.from(p);
  if (p[0] === 0xfe && classicEof) {
    if (p.length >= 5) q.writeUInt16LE(status & 0xffff, 3);
    return q;
  }
  q.writeUInt16LE(status & 0xffff, okInfoStart(p).statusAt);
  return q;
}

/** A result column (ColumnDefinition41). */
export interface MyColumn {
  schema: string;
  table: string;
  orgTable: string;
  name: string;
  orgName: string;
  charset: number;
  length: number;
  type: number;
  flags: number;
  decimals: number;
}

/** A column definition; `extended`: MARIADB_CLIENT_EXTENDED_METADATA was negotiated (type info after org_name). */
export function parseColumn(p: Buffer, extended = false): MyColumn {
  const r = new MyReader(p);
  r.lenencString(); // catalog
  const schema = r.lenencString();
  const table = r.lenencString();
  const orgTable = r.lenencString();
  const name = r.lenencString();
  const orgName = r.lenencString();
  if (extended) r.lenencBytes(); // extended type information
  r.lenenc(); // length of fixed fields (0x0c)
  const charset = r.int2();
  const length = r.int4();
  const type = r.int1();
  const flags = r.int2();
  const decimals = r.int1();
  return { schema, table, orgTable, name, orgName, charset, length, type, flags, decimals };
}

export const TYPE = {
  DECIMAL: 0, TINY: 1, SHORT: 2, LONG: 3, FLOAT: 4, DOUBLE: 5, NULL: 6, TIMESTAMP: 7, LONGLONG: 8, INT24: 9, DATE: 10, TIME: 11, DATETIME: 12, YEAR: 13, NEWDATE: 14,
  VARCHAR: 15, BIT: 16, TIMESTAMP2: 17, DATETIME2: 18, TIME2: 19, JSON: 245, NEWDECIMAL: 246, ENUM: 247, SET: 248, TINY_BLOB: 249, MEDIUM_BLOB: 250, LONG_BLOB: 251, BLOB: 252,
  VAR_STRING: 253, STRING: 254, GEOMETRY: 255,
} as const;

/** Binary-protocol value size for fixed-width types; -1 for length-encoded values, -2 for 1-byte-length temporal values. */
export function binarySize(type: number): number {
  switch (type) {
    case TYPE.TINY:
      return 1;
    case TYPE.SHORT:
    case TYPE.YEAR:
      return 2;
    case TYPE.LONG:
    case TYPE.INT24:
    case TYPE.FLOAT:
      return 4;
    case TYPE.LONGLONG:
    case TYPE.DOUBLE:
      return 8;
    case TYPE.NULL:
      return 0;
    case TYPE.DATE:
    case TYPE.DATETIME:
    case TYPE.TIMESTAMP:
    case TYPE.TIME:
    case TYPE.NEWDATE:
    case TYPE.TIMESTAMP2:
    case TYPE.DATETIME2:
    case TYPE.TIME2:
      return -2;
    default:
      return -1;
  }
}

/** Text types whose values can hold personal data (binary collation 63 means bytes, not text). */
export const isTextColumn = (c: MyColumn): boolean =>
  c.charset !== 63 && [TYPE.VARCHAR, TYPE.VAR_STRING, TYPE.STRING, TYPE.TINY_BLOB, TYPE.MEDIUM_BLOB, TYPE.LONG_BLOB, TYPE.BLOB, TYPE.JSON, TYPE.ENUM, TYPE.SET].includes(c.type as never);

/** Result columns as the masking plan sees them: the real column name when there is one, text or not. */
export const myFields = (columns: MyColumn[]): Field[] =>
  columns.map((c) => ({ name: c.orgName || c.name, tableOid: 0, attnum: 0, typeOid: c.type === TYPE.JSON ? 114 : 25, format: isTextColumn(c) ? 0 : 1, ...(c.orgName && c.orgTable ? { origin: { table: c.orgTable, column: c.orgName } } : {}) }));
