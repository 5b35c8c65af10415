import { CAP, COM, MyFramer, MyReader, frame, parseColumn, parseErr, parseOk, type MyColumn } from './packets.js';
import { connectMyUpstream, type MyUpstreamTarget } from './upstream.js';

export interface MyResult {
  affected: number;
  columns: string[];
  /** Column definitions of the (last) result set. */
  fields: MyColumn[];
  rows: (string | null)[][];
}

/**
 * A small text-protocol client on the gateway's own upstream credentials, for work the gateway does itself
 * (approval previews). One query at a time.
 */
export class MyClient {
  private framer = new MyFramer(1 << 26);
  private waiting?: { resolve: (r: MyResult) => void; reject: (e: Error) => void; res: MyResult; state: 'first' | 'cols' | 'rows'; cols: number };

  private constructor(private readonly socket: import('node:net').Socket) {
    socket.on('data', (d: Buffer) => {
      try {
        this.framer.push(d, (_s, p) => void this.onPacket(p));
      } catch (e) {
        this.fail(e as Error);
      }
    });
    socket.on('error', (e) => this.fail(e));
    socket.on('close', () => this.fail(new Error('connection closed')));
  }

  static async connect(t: MyUpstreamTarget, database?: string): Promise<MyClient> {
    // Classic EOF-terminated results, several result sets allowed.
    const caps = CAP.PROTOCOL_41 | CAP.SECURE_CONNECTION | CAP.PLUGIN_AUTH | CAP.TRANSACTIONS | CAP.MULTI_RESULTS | CAP.LONG_FLAG | CAP.PLUGIN_AUTH_LENENC_CLIENT_DATA;
    const u = await connectMyUpstream(t, { caps, charset: 45, database });
    return new MyClient(u.socket);
  }

  private fail(e: Error): void {
    const w = this.waiting;
    this.waiting = undefined;
    w?.reject(e);
  }

  private onPacket(p: Buffer): void {
    const w = this.waiting;
    if (!w) return;
    const head = p[0];
    if (w.state === 'first') {
      if (head === 0xff) {
        this.waiting = undefined;
        return w.reject(new Error(parseErr(p).message));
      }
      if (head === 0x00) {
        const ok = parseOk(p);
        w.res.affected += ok.affected;
        if (ok.status & 0x0008) return;
        this.waiting = undefined;
        return w.resolve(w.res);
      }
      w.cols = new MyReader(p).lenenc() ?? 0;
      w.res.columns = [];
      w.res.fields = [];
      w.res.rows = [];
      w.state = 'cols';
      return;
    }
    if (w.state === 'cols') {
      if (head === 0xfe && p.length < 9) {
        w.state = 'rows';
        return;
      }
      const col = parseColumn(p);
      w.res.fields.push(col);
      w.res.columns.push(col.name);
      return;
    }
    if (head === 0xff) {
      this.waiting = undefined;
      return w.reject(new Error(parseErr(p).message));
    }
    if (head === 0xfe && p.length < 9) {
      const status = p.length >= 5 ? p.readUInt16LE(3) : 0;
      if (status & 0x0008) {
        w.state = 'first';
        return;
      }
      this.waiting = undefined;
      return w.resolve(w.res);
    }
    const r = new MyReader(p);
    w.res.rows.push(w.res.columns.map(() => r.lenencBytes()?.toString('utf8') ?? null));
  }

  query(sql: string): Promise<MyResult> {
    if (this.waiting) return Promise.reject(new Error('a query is already running'));
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject, res: { affected: 0, columns: [], fields: [], rows: [] }, state: 'first', cols: 0 };
      this.socket.write(frame(0, Buffer.concat([Buffer.from([COM.QUERY]), Buffer.from(sql, 'utf8')])).bytes);
    });
  }

  close(): void {
    this.waiting = undefined;
    this.socket.end(frame(0, Buffer.from([COM.QUIT])).bytes);
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }
}

/** A MySQL string literal (backslash escapes on, as by default). */
export const myQuote = (s: string) => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'").replace(/\0/g, '\\0')}'`;
export const myIdent = (name: string) =>
  name
    .split('.')
    .map((p) => `\`${p.replace(/`/g, '``')}\``)
    .join('.');
