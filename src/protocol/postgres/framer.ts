import { ProtocolError } from './buffer.js';

/**
 * Splits a byte stream of typed messages (1 type byte + int32 length including itself + body) into whole messages.
 * Bytes are kept in one buffer; complete messages are reported as offsets into it so callers can forward runs of
 * untouched messages as a single slice.
 */
export class Framer {
  private buf: Buffer = Buffer.alloc(0);
  constructor(private readonly maxMessage: number) {}

  /** Bytes currently held back waiting for the rest of a message. */
  get pending(): number {
    return this.buf.length;
  }

  /** Keep a chunk without looking at it (input arriving while the reader is paused). */
  append(chunk: Buffer): void {
    if (this.buf.length + chunk.length > this.maxMessage + (1 << 20)) throw new ProtocolError('too much input while a statement is held', '54000');
    this.buf = this.buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.buf, chunk]);
  }

  /**
   * Append a chunk and return the buffer plus the end offset of the last complete message. Messages are
   * [type][len][body]; `visit` is called for each with (type, start, end) where end is exclusive.
   * Throws ProtocolError on an invalid or oversized length. A visitor returning true stops the walk before that
   * message: it and everything after it stay buffered for the next push.
   */
  push(chunk: Buffer, visit: (type: number, buf: Buffer, start: number, end: number) => boolean | void): void {
    const buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    let pos = 0;
    while (buf.length - pos >= 5) {
      const len = buf.readInt32BE(pos + 1);
      if (len < 4) throw new ProtocolError(`invalid message length ${len}`);
      if (len > this.maxMessage) throw new ProtocolError(`message of ${len} bytes exceeds the limit of ${this.maxMessage} bytes`, '54000');
      const end = pos + 1 + len;
      if (end > buf.length) break;
      if (visit(buf[pos]!, buf, pos, end) === true) break;
      pos = end;
    }
    // Keep only the incomplete tail (copy so the big chunk can be freed).
    this.buf = pos === buf.length ? Buffer.alloc(0) : Buffer.from(buf.subarray(pos));
  }
}
