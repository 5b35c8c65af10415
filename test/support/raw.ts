import net from 'node:net';
import * as m from '../../src/protocol/postgres/messages.js';
import { Writer } from '../../src/protocol/postgres/buffer.js';

export const bind = (portal: string, stmt = '', resultFormat?: number) => {
  const w = new Writer().cstring(portal).cstring(stmt).int16(0).int16(0);
  return (resultFormat === undefined ? w.int16(0) : w.int16(1).int16(resultFormat)).message('B');
};
export const execute = (portal: string, maxRows = 0) => new Writer().cstring(portal).int32(maxRows).message('E');

/** Split a byte stream of backend messages into [type, body] pairs. */
export function messages(data: Buffer): { type: string; body: Buffer }[] {
  const out: { type: string; body: Buffer }[] = [];
  for (let p = 0; p + 5 <= data.length; p += 1 + data.readInt32BE(p + 1)) out.push({ type: String.fromCharCode(data[p]!), body: data.subarray(p + 5, p + 1 + data.readInt32BE(p + 1)) });
  return out;
}

/**
 * Log in with a raw socket, send `send` once the session is ready, and collect everything after it until
 * `readyCount` ReadyForQuery messages have arrived.
 */
export function rawSession(port: number, database: string, password: string, send: Buffer, readyCount: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let chunks: Buffer[] = [];
    let ready = false;
    s.on('data', (d) => {
      chunks.push(d);
      const all = Buffer.concat(chunks);
      const seen = messages(all).filter((x) => x.type === 'Z').length;
      if (!ready && seen >= 1) {
        ready = true;
        chunks = [];
        s.write(send);
      } else if (ready && seen >= readyCount) {
        s.end(m.terminate());
        resolve(all);
      }
    });
    s.on('error', reject);
    s.on('close', () => resolve(Buffer.concat(chunks)));
    s.write(Buffer.concat([m.startupMessage({ user: 'raw', database }), m.passwordMessage(password)]));
  });
}

/**
 * A raw protocol connection that stays open across steps: `send` writes, `ready(n)` waits until n ReadyForQuery
 * messages have arrived in all, `received(from)` splits what came after byte `from`, `bytes` is how much came so far.
 */
export function rawClient(port: number) {
  const s = net.connect(port, '127.0.0.1');
  let buf = Buffer.alloc(0);
  let waiting: (() => void) | undefined;
  let want = 0;
  const check = () => {
    if (waiting && messages(buf).filter((x) => x.type === 'Z').length >= want) {
      const w = waiting;
      waiting = undefined;
      w();
    }
  };
  s.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    check();
  });
  return {
    send: (b: Buffer) => void s.write(b),
    ready: (n: number) =>
      new Promise<void>((resolve, reject) => {
        want = n;
        waiting = resolve;
        s.once('error', reject);
        check();
      }),
    get bytes() {
      return buf.length;
    },
    received: (from: number) => messages(buf.subarray(from)),
    close: () => void s.destroy(),
  };
}
