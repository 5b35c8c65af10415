import type { Framer } from './framer.js';

/** Returned by a message handler to stop reading before this message (it stays buffered; see PgSession.hold). */
export const HOLD = Symbol('hold');
export type Outcome = Buffer | null | undefined | typeof HOLD;

/**
 * Feed a chunk through a framer and write out what must go on: runs of messages the handler leaves alone (it
 * returns undefined) are written as single slices of the received bytes; a Buffer it returns is written in place
 * of the message; null drops the message; HOLD stops before the message, leaving it and the rest buffered.
 */
export function relay(framer: Framer, chunk: Buffer, onMessage: (type: number, b: Buffer, start: number, end: number) => Outcome, write: (b: Buffer) => void): void {
  let buf: Buffer | undefined;
  let runStart = 0;
  let runEnd = 0;
  const flushRun = () => {
    if (buf && runEnd > runStart) write(buf.subarray(runStart, runEnd));
  };
  framer.push(chunk, (type, b, start, end) => {
    if (b !== buf) {
      flushRun();
      buf = b;
      runStart = runEnd = start;
    }
    const replacement = onMessage(type, b, start, end);
    if (replacement === undefined) {
      runEnd = end;
      return;
    }
    flushRun();
    runStart = runEnd = end;
    if (replacement === HOLD) {
      buf = undefined;
      return true;
    }
    if (replacement) write(replacement);
  });
  flushRun();
}
