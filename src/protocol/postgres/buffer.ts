/** Minimal, allocation-conscious readers and writers for PostgreSQL protocol message bodies. */

export class ProtocolError extends Error {
  constructor(message: string, readonly code = '08P01') {
    super(message);
    this.name = 'ProtocolError';
  }
}

/** Reads fields out of one message body. Every read is bounds-checked; a short body is a ProtocolError. */
export class Reader {
  private pos: number;
  constructor(private readonly buf: Buffer, start = 0, private readonly end = buf.length) {
    this.pos = start;
  }
  get remaining(): number {
    return this.end - this.pos;
  }
  byte(): number {
    if (this.pos + 1 > this.end) throw new ProtocolError('message too short (byte)');
    return this.buf[this.pos++]!;
  }
  int16(): number {
    if (this.pos + 2 > this.end) throw new ProtocolError('message too short (int16)');
    const v = this.buf.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  int32(): number {
    if (this.pos + 4 > this.end) throw new ProtocolError('message too short (int32)');
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  /** NUL-terminated string. */
  cstring(): string {
    const nul = this.buf.indexOf(0, this.pos);
    if (nul < 0 || nul >= this.end) throw new ProtocolError('unterminated string in message');
    const s = this.buf.toString('utf8', this.pos, nul);
    this.pos = nul + 1;
    return s;
  }
  bytes(n: number): Buffer {
    if (n < 0 || this.pos + n > this.end) throw new ProtocolError('message too short (bytes)');
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  rest(): Buffer {
    const b = this.buf.subarray(this.pos, this.end);
    this.pos = this.end;
    return b;
  }
}

/** Builds one message: type byte (or none for startup-style), int32 length, body. */
export class Writer {
  private chunks: Buffer[] = [];
  private size = 0;
  int8(v: number): this {
    const b = Buffer.allocUnsafe(1);
    b[0] = v;
    return this.push(b);
  }
  int16(v: number): this {
    const b = Buffer.allocUnsafe(2);
    b.writeInt16BE(v);
    return this.push(b);
  }
  int32(v: number): this {
    const b = Buffer.allocUnsafe(4);
    b.writeInt32BE(v);
    return this.push(b);
  }
  cstring(s: string): this {
    return this.push(Buffer.from(s + '\0', 'utf8'));
  }
  bytes(b: Buffer): this {
    return this.push(b);
  }
  private push(b: Buffer): this {
    this.chunks.push(b);
    this.size += b.length;
    return this;
  }
  /** Finish as a typed message ('Q', 'E', ...). */
  message(type: string): Buffer {
    return this.finish(type.charCodeAt(0));
  }
  /** Finish as an untyped message (StartupMessage, CancelRequest, SSLRequest). */
  untyped(): Buffer {
    return this.finish();
  }
  private finish(type?: number): Buffer {
    const head = type === undefined ? 0 : 1;
    const out = Buffer.allocUnsafe(head + 4 + this.size);
    if (type !== undefined) out[0] = type;
    out.writeInt32BE(4 + this.size, head);
    let o = head + 4;
    for (const c of this.chunks) {
      c.copy(out, o);
      o += c.length;
    }
    return out;
  }
}
