import { ProtocolError } from './buffer.js';

/**
 * Splits a byte stream of typed messages (1 type byte + int32 length including itself + body) into whole messages.
 * Complete messages are reported as offsets into one buffer so callers can forward runs of untouched messages as a
 * single slice. A message arriving in many chunks is collected as a list and copied once, when it is complete:
 * a 60 MB query in 64 KB chunks costs one 60 MB copy, not the sum of every partial copy.
 */
export class Framer {
  /** Bytes received and not yet walked (a partial message, or messages held back by a visitor). */
  private parts: Buffer[] = [];
  private partsLen = 0;
  /** Bytes the first held-back message needs to be complete (0 while its header is incomplete). */
  private need = 0;
  constructor(private readonly maxMessage: number) {}

  /** Bytes currently held back waiting for the rest of a message. */
  get pending(): number {
    return this.partsLen;
  }

  /** Keep a chunk without looking at it (input arriving while the reader is paused). */
  append(chunk: Buffer): void {
    if (this.partsLen + chunk.length > this.maxMessage + (1 << 20)) throw new ProtocolError('too much input while a statement is held', '54000');
    this.keep(chunk);
  }

  private keep(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.parts.push(chunk);
    this.partsLen += chunk.length;
    if (this.need === 0 && this.partsLen >= 5) {
      const head = this.parts[0]!.length >= 5 ? this.parts[0]! : Buffer.concat(this.parts, 5);
      this.need = 1 + this.checkLength(head.readInt32BE(1));
    }
  }

  private checkLength(len: number): number {
    if (len < 4) throw new ProtocolError(`invalid message length ${len}`);
    if (len > this.maxMessage) throw new ProtocolError(`message of ${len} bytes exceeds the limit of ${this.maxMessage} bytes`, '54000');
    return len;
  }

  /**
   * Append a chunk and walk the complete messages: `visit` is called for each with (type, buf, start, end) where end
   * is exclusive. Throws ProtocolError on an invalid or oversized length. A visitor returning true stops the walk
   * before that message: it and everything after it stay buffered for the next push.
   */
  push(chunk: Buffer, visit: (type: number, buf: Buffer, start: number, end: number) => boolean | void): void {
    let buf: Buffer;
    if (this.partsLen === 0) buf = chunk;
    else {
      this.keep(chunk);
      // Still waiting for the rest of the first message: nothing to walk, nothing copied.
      if (this.need === 0 || this.partsLen < this.need) return;
      buf = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.partsLen);
    }
    this.parts = [];
    this.partsLen = 0;
    this.need = 0;
    let pos = 0;
    while (buf.length - pos >= 5) {
      const end = pos + 1 + this.checkLength(buf.readInt32BE(pos + 1));
      if (end > buf.length) break;
      if (visit(buf[pos]!, buf, pos, end) === true) break;
      pos = end;
    }
    if (pos < buf.length) {
      // Keep the tail; a small tail of a large buffer is copied so that the buffer can be freed.
      const tail = buf.subarray(pos);
      this.keep(tail.length * 4 < buf.length ? Buffer.from(tail) : tail);
    }
  }
}
