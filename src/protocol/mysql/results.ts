import type { EngineGovernor, Verdict } from '../../governor.js';
import type { Identity } from '../../identity/identity.js';
import type { Analysis } from '../../analyze/analyze.js';
import { scrubText, type MaskCounts, type MaskPlan } from '../../masking/values.js';
import { CAP, MAX_PAYLOAD, STATUS, MyReader, errPacket, frame, myFields, parseColumn, parseErr, parseOk, sessionChanges, withStatus, withoutSessionTrack, writeHeader, type MyColumn, type StateChanges } from './packets.js';
import { maskBinaryRow, maskTextRow } from './rows.js';

export interface Stmt {
  sql: string;
  verdict: Verdict;
  params: number;
  columns: MyColumn[];
  /** Parameter types from the last execute that bound them (the server remembers them too). */
  paramTypes?: number[];
}

export type ResultState = 'first' | 'cols' | 'eof1' | 'rows';
export interface Inflight {
  k: 'query' | 'execute' | 'prepare' | 'fetch' | 'simple' | 'fieldlist' | 'statistics' | 'probe';
  /** probe: the gateway's own one-row query; its first row goes to this callback, never to the client. */
  onProbe?: (row: (string | null)[] | Error) => void;
  /** probe of a COM_STMT_PREPARE (nothing runs): the server's error packet, or the id of the statement it prepared. */
  onPrepared?: (r: { error: Buffer } | { id: number }) => void;
  probeRow?: (string | null)[];
  sql?: string;
  verdict?: Verdict;
  t0: number;
  rows: number;
  masked?: MaskCounts;
  state: ResultState;
  colsLeft: number;
  columns: MyColumn[];
  plan?: MaskPlan;
  binary: boolean;
  error?: { code: number; message: string };
  /** prepare: the answer's packets after its OK (parameter definitions, column definitions, their EOFs). */
  prep?: { id: number; params: number; cols: number; total: number; seen: number; columns: MyColumn[] };
  /** Sequence id of the next packet sent to the client. */
  outSeq: number;
  approvalId?: string;
  /** probe: an OK (no result set) is an answer too (the gateway's own SET). */
  acceptOk?: boolean;
  /** The command is COM_RESET_CONNECTION: the session's variables are back to the server's defaults. */
  reset?: boolean;
  /** A classic EOF said the session state changed without saying how: the state is read before the answer ends. */
  stateUnknown?: boolean;
  /** The last packet of the answer, held back until the session's state is read (its sequence id, its payload). */
  held?: { seq: number; payload: Buffer };
  /** The server reported a session state Sluice cannot parse under: the answer ended with this error, and so does the session. */
  endSession?: string;
  /** A statement of a text the gateway runs one by one: more follow (the answer's last packet says so). */
  more?: boolean;
}


/** What the answer side needs of its session. */
export interface ResultsHost {
  readonly gov: EngineGovernor;
  identity(): Identity;
  readonly stmts: Map<number, Stmt>;
  database(): string;
  caps(): number;
  /** Column definitions carry MariaDB's extended type information. */
  extendedMetadata(): boolean;
  inflight(): Inflight | undefined;
  /** The command's answer is complete (status: the server status flags of its last OK/EOF). */
  finish(f: Inflight, status?: number): void;
  /** Write to the client (after the audit of what it answers is written). */
  write(b: Buffer): void;
  /** The upstream connection reports session-state changes (CLIENT_SESSION_TRACK), and the client asked for them. */
  upstreamTracks(): boolean;
  clientTracks(): boolean;
  /** The server reported these changes: why the session cannot go on (undefined: it can). */
  stateChanged(c: StateChanges): string | undefined;
}

/**
 * The answer side of a MySQL session: each upstream packet is matched to the command in flight (result sets,
 * prepared-statement answers, OK/ERR), rows are masked under the command's plan, errors scrubbed, and the packets
 * for the client are renumbered and written once per upstream chunk.
 */
export class MyResults {
  constructor(private readonly host: ResultsHost) {}

  /** Packets for the client from one upstream chunk, written at once (one copy, one write). */
  private pendingOut: Buffer[] = [];

  private out(f: Inflight, payload: Buffer): void {
    if (payload.length < MAX_PAYLOAD) {
      const h = Buffer.allocUnsafe(4);
      writeHeader(h, 0, payload.length, f.outSeq);
      f.outSeq = (f.outSeq + 1) & 0xff;
      this.pendingOut.push(h, payload);
    } else {
      const x = frame(f.outSeq, payload);
      f.outSeq = x.next;
      this.pendingOut.push(x.bytes);
    }
  }

  /** Drop what is not yet written (the session is ending). */
  discard(): void {
    this.pendingOut = [];
  }

  flushOut(): void {
    if (!this.pendingOut.length) return;
    const chunks = this.pendingOut;
    this.pendingOut = [];
    this.host.write(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
  }

  onUpstreamPacket(p: Buffer): void {
    const f = this.host.inflight();
    if (!f) return; // nothing asked (should not happen): drop
    const head = p[0];
    const deprecateEof = (this.host.caps() & CAP.DEPRECATE_EOF) !== 0;
    switch (f.k) {
      case 'simple': {
        if (head !== 0x00) {
          this.out(f, p);
          return this.host.finish(f);
        }
        const status = parseOk(p).status;
        const relayed = this.tracked(f, p, status);
        return relayed && this.end(f, relayed, status);
      }
      case 'statistics':
        this.out(f, p);
        return this.host.finish(f);
      case 'fieldlist':
        this.out(f, p);
        if (head === 0xfe || head === 0xff) this.host.finish(f);
        return;
      case 'prepare':
        return this.onPrepareAnswer(f, p, deprecateEof);
      case 'probe':
        return f.onPrepared ? this.onPrepareProbeAnswer(f, p, deprecateEof) : this.onProbeAnswer(f, p, deprecateEof);
      default:
        return this.onResultPacket(f, p, deprecateEof);
    }
  }

  /** The answer to a probe (a one-row text result, or an error): read, not relayed. */
  private onProbeAnswer(f: Inflight, p: Buffer, deprecateEof: boolean): void {
    const head = p[0];
    const done = (v: (string | null)[] | Error) => {
      this.host.finish(f);
      f.onProbe!(v);
    };
    if (f.state === 'first') {
      if (head === 0xff) return done(new Error(parseErr(p).message));
      if (head === 0x00) return done(f.acceptOk ? [] : new Error('the probe returned no result'));
      f.colsLeft = new MyReader(p).lenenc() ?? 0;
      f.columns = new Array(f.colsLeft);
      f.state = 'cols';
      return;
    }
    if (f.state === 'cols') {
      if (--f.colsLeft === 0) f.state = deprecateEof ? 'rows' : 'eof1';
      return;
    }
    if (f.state === 'eof1') {
      f.state = 'rows';
      return;
    }
    if (head === 0xff) return done(new Error(parseErr(p).message));
    if (head === 0xfe && p.length < (deprecateEof ? 0xffffff : 9)) return done(f.probeRow ?? new Error('the probe returned no row'));
    if (f.probeRow) return;
    const r = new MyReader(p);
    f.probeRow = Array.from(f.columns, () => r.lenencBytes()?.toString('utf8') ?? null);
  }

  /** The answer to the gateway's own COM_STMT_PREPARE: read to its end, not relayed. */
  private onPrepareProbeAnswer(f: Inflight, p: Buffer, deprecateEof: boolean): void {
    if (!f.prep) {
      if (p[0] === 0xff) {
        this.host.finish(f);
        return f.onPrepared!({ error: p });
      }
      f.prep = prepareOk(p, deprecateEof);
    } else f.prep.seen++;
    if (f.prep.seen === f.prep.total) {
      this.host.finish(f);
      f.onPrepared!({ id: f.prep.id });
    }
  }

  private onPrepareAnswer(f: Inflight, p: Buffer, deprecateEof: boolean): void {
    this.out(f, p);
    if (!f.prep) {
      if (p[0] === 0xff) {
        f.error = parseErr(p);
        return this.host.finish(f);
      }
      f.prep = prepareOk(p, deprecateEof);
    } else {
      // Column definitions come after the parameter section.
      const paramSection = f.prep.total - (f.prep.cols ? f.prep.cols + (deprecateEof ? 0 : 1) : 0);
      if (f.prep.seen >= paramSection && f.prep.columns.length < f.prep.cols) f.prep.columns.push(parseColumn(p, this.host.extendedMetadata()));
      f.prep.seen++;
    }
    if (f.prep.seen === f.prep.total) {
      this.host.stmts.set(f.prep.id, { sql: f.sql!, verdict: f.verdict!, params: f.prep.params, columns: f.prep.columns });
      this.host.finish(f);
    }
  }

  /** The last statement touched a column masked for this identity: its warnings (SHOW WARNINGS) can echo values. */
  private lastTainted = false;

  planFor(columns: MyColumn[], analysis: Analysis | undefined): MaskPlan | undefined {
    const diagnostics = analysis?.statements.some((s) => /^SHOW (WARNINGS|ERRORS)/.test(s.command)) ?? false;
    return this.host.gov.maskPlan(this.host.identity(), analysis, myFields(columns), this.host.database(), { taintAll: diagnostics && this.lastTainted });
  }

  /**
   * An upstream error for an identity whose results are masked: its message can echo values
   * (`Truncated incorrect DOUBLE value: '...'`); scrubbed like PostgreSQL error texts, with single-quoted values
   * hidden as well when the statement touches a masked column.
   */
  private scrubErr(f: Inflight, p: Buffer): Buffer {
    if (this.host.gov.maskingExempt(this.host.identity())) return p;
    const tainted = !!this.host.gov.taint(this.host.identity(), f.verdict?.analysis, this.host.database());
    const e = parseErr(p);
    let message = scrubText(e.message, 'message', { tainted, detectors: this.host.gov.scansText(this.host.identity()) });
    if (tainted) message = message.replace(/'[^']*'/g, "'****'");
    return message === e.message ? p : errPacket(e.code, e.sqlState, message);
  }

  /**
   * An OK packet (or EOF-headed OK) of the answer: the session-state changes it reports are checked, and it is
   * relayed in the form the client negotiated. Undefined when the session must end: the answer ended with an error.
   */
  private tracked(f: Inflight, p: Buffer, status: number): Buffer | undefined {
    if (!this.host.upstreamTracks()) return p;
    if (status & STATUS.SESSION_STATE_CHANGED) {
      const why = this.host.stateChanged(sessionChanges(p)!);
      if (why) {
        f.endSession = why;
        this.out(f, errPacket(1105, 'HY000', why));
        this.host.finish(f);
        return undefined;
      }
    }
    return this.host.clientTracks() ? p : withoutSessionTrack(p);
  }

  /** A classic EOF: one that says the session state changed (it cannot say how) makes the state be read before the answer ends. */
  private classicEof(f: Inflight, p: Buffer): Buffer {
    if (p.length < 5 || !this.host.upstreamTracks() || !(p.readUInt16LE(3) & STATUS.SESSION_STATE_CHANGED)) return p;
    f.stateUnknown = true;
    if (this.host.clientTracks()) return p;
    const q = Buffer.from(p);
    q.writeUInt16LE(p.readUInt16LE(3) & ~STATUS.SESSION_STATE_CHANGED, 3);
    return q;
  }

  /** The answer's last packet: held back while the session's state must be read first, relayed otherwise. */
  private end(f: Inflight, p: Buffer, status: number): void {
    if (f.more) p = withStatus(p, status | STATUS.MORE_RESULTS_EXISTS, (this.host.caps() & CAP.DEPRECATE_EOF) === 0);
    if (f.stateUnknown || f.reset) {
      f.held = { seq: f.outSeq, payload: p };
      f.outSeq = (f.outSeq + 1) & 0xff;
    } else this.out(f, p);
    this.host.finish(f, status);
  }

  private onResultPacket(f: Inflight, p: Buffer, deprecateEof: boolean): void {
    const head = p[0];
    switch (f.state) {
      case 'first': {
        const diagnostics = f.verdict?.analysis?.statements.some((s) => /^SHOW (WARNINGS|ERRORS)/.test(s.command));
        if (!diagnostics && f.verdict?.analysis) this.lastTainted = !!this.host.gov.taint(this.host.identity(), f.verdict.analysis, this.host.database());
        if (head === 0xff) {
          this.out(f, this.scrubErr(f, p));
          f.error = parseErr(p);
          return this.host.finish(f);
        }
        if (head === 0x00) {
          const ok = parseOk(p);
          const relayed = this.tracked(f, p, ok.status);
          if (!relayed) return;
          f.rows += ok.affected;
          if (!(ok.status & STATUS.MORE_RESULTS_EXISTS)) return this.end(f, relayed, ok.status);
          this.out(f, relayed);
          return;
        }
        if (head === 0xfb) {
          // LOAD DATA LOCAL is not offered to the upstream; refuse defensively.
          this.out(f, errPacket(1148, '42000', 'LOAD DATA LOCAL is not allowed through Sluice'));
          return this.host.finish(f);
        }
        const n = new MyReader(p).lenenc() ?? 0;
        f.colsLeft = n;
        f.columns = [];
        f.state = 'cols';
        this.out(f, p);
        return;
      }
      case 'cols':
        f.columns.push(parseColumn(p, this.host.extendedMetadata()));
        this.out(f, p);
        if (--f.colsLeft === 0) {
          f.plan = this.planFor(f.columns, f.verdict?.analysis);
          f.state = deprecateEof ? 'rows' : 'eof1';
        }
        return;
      case 'eof1':
        this.out(f, this.classicEof(f, p));
        f.state = 'rows';
        // A cursor was opened (COM_STMT_EXECUTE with a cursor): rows come with COM_STMT_FETCH.
        if (head === 0xfe && p.length >= 5 && p.readUInt16LE(3) & 0x0040) this.host.finish(f, p.readUInt16LE(3));
        return;
      case 'rows': {
        if (head === 0xff) {
          this.out(f, p);
          f.error = parseErr(p);
          return this.host.finish(f);
        }
        if (head === 0xfe && p.length < (deprecateEof ? 0xffffff : 9)) {
          const status = deprecateEof ? parseOk(p).status : p.length >= 5 ? p.readUInt16LE(3) : 0;
          const relayed = deprecateEof ? this.tracked(f, p, status) : this.classicEof(f, p);
          if (!relayed) return;
          if (!(status & STATUS.MORE_RESULTS_EXISTS)) return this.end(f, relayed, status);
          this.out(f, relayed);
          f.state = 'first';
          return;
        }
        f.rows++;
        const masked = f.plan ? (f.binary ? maskBinaryRow : maskTextRow)(p, f.columns, f.plan, () => (f.masked ??= new Map())) : undefined;
        this.out(f, masked ?? p);
        return;
      }
    }
  }
}

/** A COM_STMT_PREPARE_OK: the statement id, and how many definition packets follow it. */
function prepareOk(p: Buffer, deprecateEof: boolean): NonNullable<Inflight['prep']> {
  const r = new MyReader(p, 1);
  const id = r.int4();
  const cols = r.int2();
  const params = r.int2();
  // Each non-empty section: its definitions, then an EOF unless DEPRECATE_EOF.
  const section = (n: number) => (n ? n + (deprecateEof ? 0 : 1) : 0);
  return { id, params, cols, total: section(params) + section(cols), seen: 0, columns: [] };
}
