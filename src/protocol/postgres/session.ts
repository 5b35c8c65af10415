import net from 'node:net';
import tls from 'node:tls';
import crypto from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Framer } from './framer.js';
import { ProtocolError, Reader, Writer } from './buffer.js';
import * as m from './messages.js';
import { connectUpstream, cancelUpstream, UpstreamError, type UpstreamTarget } from './upstream.js';
import type { Governor, GovernorError, HoldRequest, Verdict } from '../../governor.js';
import { analysisFields, identityFields } from '../../governor.js';
import type { AuditEvent } from '../../audit/audit.js';
import { maskDataRow, maskText, scrubText, parseRowDescription, type Field, type MaskCounts, type MaskPlan } from '../../masking/rows.js';
import { mayContainSensitive } from '../../masking/detectors.js';
import { AuthError, type Identity } from '../../identity/identity.js';
import { addressOf, authFailureFields } from '../../identity/throttle.js';
import type { Analysis, StatementInfo } from '../../analyze/analyze.js';
import { servedBy } from '../../util/glob.js';
import type { Approval } from '../../approvals/store.js';
import { expiryTimer, sessionEndEvent } from '../common.js';
import { lexingRefusal, LEXING_SETTINGS, startupRefusal } from '../../analyze/guard.js';

export interface SessionLimits {
  /** Largest frontend message accepted after startup. */
  maxMessageBytes: number;
  /** Time allowed from connect to a completed login. */
  authTimeoutMs: number;
  /** Named prepared statements one session may keep (portals end with their transaction). */
  maxPrepared: number;
}

export interface PgEngineConfig {
  upstream: UpstreamTarget;
  /** Globs of database names clients may open; all when empty. */
  databases: string[];
  tlsMode: 'disable' | 'allow' | 'require';
  secureContext?: tls.SecureContext;
  limits: SessionLimits;
}

export interface SessionInfo {
  id: string;
  identity?: Identity;
  database?: string;
  clientAddr: string;
  applicationName?: string;
  startedAt: Date;
  tls: boolean;
  currentSql?: string;
  statements: number;
  /** Last ReadyForQuery status: I idle, T in a transaction, E in a failed transaction. */
  txStatus: string;
  /** The approval request the session's current statement is held for. */
  awaitingApproval?: string;
  /** Wire protocol of the session. */
  engine?: 'postgres' | 'mysql';
}

/** What the registry needs of a session of any engine (PostgreSQL, MySQL). */
export interface LiveSession {
  readonly id: string;
  readonly info: SessionInfo;
  terminate(reason: string): void;
  cancelFromClient(secret: number): void;
}

/**
 * Live sessions and their keys, shared by all sessions of every engine of one gateway process. Each engine has its
 * own key space (PostgreSQL cancel keys, MySQL connection ids): a key of one engine never reaches another's session.
 */
export class SessionRegistry {
  readonly sessions = new Map<string, LiveSession>();
  private readonly keys = { postgres: new Map<number, LiveSession>(), mysql: new Map<number, LiveSession>() };
  /** Cancel keys not issued by this process are passed here (to the other processes of a cluster). */
  forwardCancel?: (pid: number, secret: number) => void;
  /** A PostgreSQL CancelRequest: cancel that session if the secret matches; false if the key is not ours. */
  cancel(pid: number, secret: number): boolean {
    const s = this.keys.postgres.get(pid);
    if (!s) return false;
    s.cancelFromClient(secret);
    return true;
  }
  /** The session holding `key` in an engine's key space. */
  lookup(engine: 'postgres' | 'mysql', key: number): LiveSession | undefined {
    return this.keys[engine].get(key);
  }
  register(s: LiveSession, key: number): void {
    this.sessions.set(s.id, s);
    this.keys[s.info.engine ?? 'postgres'].set(key, s);
  }
  unregister(s: LiveSession, key: number): void {
    this.sessions.delete(s.id);
    const space = this.keys[s.info.engine ?? 'postgres'];
    if (space.get(key) === s) space.delete(key);
  }
}

/** What the gateway expects back from the upstream for each message it forwarded, in order. */
type Item =
  | { k: 'query'; epoch: number; sql: string; verdict: Verdict; t0: number; rows: number; error?: Record<string, string>; plan?: MaskPlan; masked?: MaskCounts; copyScan?: boolean; source?: MaskSource }
  /** An Execute refused after its approval was denied: answered by the error of an injected failing Parse. */
  | { k: 'denied'; verdict: Verdict }
  | { k: 'parse'; verdict: Verdict }
  | { k: 'bind' }
  | { k: 'describe'; stmt?: Prepared; portal?: Portal; internal?: boolean }
  | { k: 'execute'; stmt?: Prepared; portal?: Portal; t0: number; rows: number; fetched: number; plan?: MaskPlan; masked?: MaskCounts; copyScan?: boolean; approvalId?: string }
  | { k: 'close' }
  | { k: 'sync'; epoch: number }
  | { k: 'fastpath'; sql: string; verdict: Verdict; t0: number; error?: Record<string, string> };

/** What a result's rows come from, for masking, when the statement producing them is not the one sent (cursors). */
interface MaskSource {
  analysis?: Analysis;
  /** Rows of a cursor Sluice did not see declared (opened by a function): every computed column is masked. */
  taintAll?: boolean;
}

/** ErrorResponse/NoticeResponse fields whose text can echo values (q: the internal query of a PL/pgSQL error). */
const TEXT_FIELDS: Record<string, 'message' | 'detail' | 'hint' | 'context'> = { M: 'message', D: 'detail', H: 'hint', W: 'context', q: 'context' };

/** One statement on its own, as an analysis (a SQL-level prepared statement or a cursor's query). */
const asAnalysis = (s: StatementInfo): Analysis => ({ ok: true, statements: [s], classes: [s.class], tables: s.tables.map((t) => t.name), destructive: s.destructive, flags: s.flags, fingerprint: '' });

interface Prepared {
  name: string;
  sql: string;
  analysis?: Analysis;
  rule: string;
  /** Result columns from a Describe of the statement (formats not yet known). */
  fields?: Field[];
  /** The policy holds its executions for approval (per execution: the approval binds the parameters). */
  hold?: Verdict;
  /** Parameter type OIDs the Parse declared (0 = inferred), kept for held statements: part of what is approved. */
  paramTypes?: number[];
}

interface Portal {
  stmt?: Prepared;
  /** Sync/Query count when it was bound: it ends with the transaction that contains it. */
  epoch: number;
  /** Result format codes from Bind: none = all text, one = for all columns, else per column. */
  formats: number[];
  /** Result columns from a Describe of the portal (formats known). */
  fields?: Field[];
  /** The portal is a SQL cursor Sluice did not see declared. */
  taintAll?: boolean;
  /** Bind parameters, kept only for statements held for approval (text, or \\x hex when sent in binary). */
  params?: (string | null)[];
  binaryParams?: boolean;
  /** Each parameter's format (0 text, 1 binary), kept for held statements when any is binary. */
  paramFormats?: number[];
}

const maskedFields = (m: MaskCounts | undefined) => (m?.size ? { masked: Object.fromEntries(m) } : {});

const DENIED_MARK = 'SLUICE_DENIED_';
/** SQL that fails in the upstream parser: injected in place of a denied message so that the upstream's own error
 * handling (skip to Sync, abort the open transaction) happens exactly where the client expects the error. */
const deniedSql = () => `${DENIED_MARK}${crypto.randomBytes(6).toString('hex')}`;

const pick = (b: Buffer, start: number, end: number) => new Reader(b, start + 5, end);
const tag = (rows: string) => {
  const parts = rows.split(' ');
  const n = Number(parts[parts.length - 1]);
  return Number.isFinite(n) ? n : 0;
};

/** Text the server reads differently under another standard_conforming_strings or client encoding. */
const LEXING_SENSITIVE = /[\\\u0080-\uffff]/;
const SETTLED_CLASSES = new Set(['read', 'session', 'transaction']);
const UNSETTLING_FLAGS = new Set(['do-block', 'dynamic-sql', 'volatile-function', 'privileged-function', 'privileged-setting']);

/**
 * Whether running this may change session settings in ways the statement does not show (user code in functions,
 * triggers, DO blocks, cursors and prepared statements run later): the server then reports them only afterwards.
 */
function mayChangeSettings(a: Analysis | undefined): boolean {
  if (!a) return true;
  return a.classes.some((c) => !SETTLED_CLASSES.has(c)) || a.flags.some((f) => UNSETTLING_FLAGS.has(f)) || a.statements.some((s) => s.cursor?.op === 'fetch' || s.executes !== undefined);
}

/** Returned by a message handler to stop reading before this message (it stays buffered; see PgSession.hold). */
const HOLD = Symbol('hold');

/**
 * Feed a chunk through a framer and write out what must go on: runs of messages the handler leaves alone (it
 * returns undefined) are written as single slices of the received bytes; a Buffer it returns is written in place
 * of the message; null drops the message; HOLD stops before the message, leaving it and the rest buffered.
 */
function relay(framer: Framer, chunk: Buffer, onMessage: (type: number, b: Buffer, start: number, end: number) => Buffer | null | undefined | typeof HOLD, write: (b: Buffer) => void): void {
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

export class PgSession implements LiveSession {
  readonly id = crypto.randomUUID();
  readonly info: SessionInfo;
  private client: net.Socket;
  private upstream?: net.Socket;
  private phase: 'startup' | 'auth' | 'connecting' | 'ready' | 'closed' = 'startup';
  private startupBuf: Buffer = Buffer.alloc(0);
  private clientFramer: Framer;
  private upstreamFramer = new Framer(1 << 30);
  private items: Item[] = [];
  private statements = new Map<string, Prepared>();
  private portals = new Map<string, Portal>();
  /** Counts Sync and Query messages sent upstream (see Portal.epoch). */
  private epoch = 0;
  private sqlPrepared = new Map<string, StatementInfo>();
  /** SQL cursors declared in this session: what FETCH (or a protocol Execute of the cursor) returns. */
  private cursors = new Map<string, StatementInfo>();
  private identity?: Identity;
  private database = '';
  private clientUser = '';
  private params: Record<string, string> = {};
  private pid = 0;
  private secret = 0;
  private upstreamPid = 0;
  private upstreamSecret = 0;
  private authTimer?: NodeJS.Timeout;
  private expiryTimer?: NodeJS.Timeout;
  private closeReason = '';
  /** The upstream sent FATAL (relayed to the client as is): its close is not reported a second time. */
  private upstreamFatal?: string;

  constructor(socket: net.Socket, private readonly governor: Governor, private readonly cfg: PgEngineConfig, private readonly registry: SessionRegistry) {
    this.client = socket;
    this.clientFramer = new Framer(cfg.limits.maxMessageBytes);
    this.info = { id: this.id, clientAddr: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`, startedAt: new Date(), tls: false, statements: 0, txStatus: 'I' };
    socket.setNoDelay(true);
    this.attachClient(socket);
    // Once the client has sent its password, the wait is the gateway's (credential check, upstream login): say so.
    this.authTimer = setTimeout(() => this.fatal('08P01', this.phase === 'connecting' ? 'login timed out: checking the credential or logging in to the upstream database took too long' : 'login timed out: the client did not finish authenticating in time'), cfg.limits.authTimeoutMs);
    this.authTimer.unref();
  }

  // ---------------------------------------------------------------- plumbing

  private attachClient(s: net.Socket): void {
    s.on('data', (d: Buffer) => this.onClientData(d));
    s.on('error', () => this.close('client connection error'));
    s.on('close', () => this.close('client disconnected'));
    s.on('drain', () => this.upstream?.resume());
  }

  private writeClient(b: Buffer): void {
    if (this.client.destroyed || this.phase === 'closed') return;
    if (!this.client.write(b)) this.upstream?.pause();
  }
  private writeUpstream(b: Buffer): void {
    const u = this.upstream;
    if (!u || u.destroyed) return;
    if (!u.write(b)) this.client.pause();
  }

  /** Send a FATAL error to the client and end the session. */
  fatal(code: string, message: string, detail?: string): void {
    if (this.phase === 'closed') return;
    if (!this.client.destroyed) this.client.end(m.errorResponse({ severity: 'FATAL', code, message, detail }));
    this.close(message);
  }

  /** Ask the session to end (admin terminate, shutdown). */
  terminate(reason: string): void {
    this.fatal('57P01', `terminating connection: ${reason}`);
  }

  private close(reason: string): void {
    if (this.phase === 'closed') return;
    const wasReady = this.phase === 'ready';
    this.phase = 'closed';
    this.closeReason ||= reason;
    clearTimeout(this.authTimer);
    clearTimeout(this.expiryTimer);
    this.holdAbort?.abort();
    const u = this.upstream;
    if (u && !u.destroyed) {
      // A client that vanished mid-query must not leave its statement running upstream.
      if (this.items.length && this.upstreamPid) void cancelUpstream(this.cfg.upstream, this.upstreamPid, this.upstreamSecret);
      u.end(m.terminate());
      setTimeout(() => u.destroy(), 2000).unref();
    }
    for (const it of this.items) {
      if (it.k === 'query' && it.verdict.decision.action === 'allow') this.auditQuery(it, { message: `not completed: ${this.closeReason}` });
      if (it.k === 'execute') this.auditExecute(it, { message: `not completed: ${this.closeReason}` });
    }
    this.items = [];
    if (!this.client.destroyed) this.client.end();
    setTimeout(() => this.client.destroy(), 2000).unref();
    if (wasReady) {
      this.registry.unregister(this, this.pid);
      this.governor.record(sessionEndEvent(this.info, this.identity!, this.database, this.closeReason));
    }
  }

  // ---------------------------------------------------------------- startup & login

  private onClientData(d: Buffer): void {
    try {
      if (this.phase === 'ready') return this.onClientMessages(d);
      if (this.phase === 'startup') return this.onStartupData(d);
      if (this.phase === 'auth') return this.onAuthData(d);
      if (this.phase === 'connecting') {
        // Nothing may arrive before AuthenticationOk; buffer a little (pipelining clients) and fail otherwise.
        this.startupBuf = Buffer.concat([this.startupBuf, d]);
        if (this.startupBuf.length > 1 << 20) throw new ProtocolError('too much data sent before login completed');
      }
    } catch (e) {
      this.protocolFailure(e);
    }
  }

  private protocolFailure(e: unknown): void {
    const pe = e instanceof ProtocolError ? e : new ProtocolError(`internal error handling client message: ${(e as Error).message}`, 'XX000');
    if (this.phase === 'ready') this.governor.record({ type: 'protocol_error', session_id: this.id, ...identityFields(this.identity!), client_addr: this.info.clientAddr, error: pe.message, error_code: pe.code });
    else this.governor.record({ type: 'protocol_error', client_addr: this.info.clientAddr, error: pe.message, error_code: pe.code });
    // A malformed startup or cancel packet gets no answer (as from PostgreSQL): the connection is just closed.
    if (this.phase === 'startup' && /^invalid length of (startup packet|cancel request)$/.test(pe.message)) return this.close(pe.message);
    this.fatal(pe.code, pe.message);
  }

  private onStartupData(d: Buffer): void {
    this.startupBuf = this.startupBuf.length ? Buffer.concat([this.startupBuf, d]) : d;
    while (this.phase === 'startup' && this.startupBuf.length >= 4) {
      const len = this.startupBuf.readInt32BE(0);
      if (len < 8 || len > 10_000) throw new ProtocolError('invalid length of startup packet');
      if (this.startupBuf.length < len) return;
      const msg = this.startupBuf.subarray(0, len);
      this.startupBuf = this.startupBuf.subarray(len);
      const code = msg.readInt32BE(4);
      if (code === m.SSL_REQUEST_CODE) {
        if (this.startupBuf.length) throw new ProtocolError('received unencrypted data after SSL request');
        if (this.cfg.tlsMode === 'disable' || !this.cfg.secureContext || this.info.tls) {
          this.client.write('N');
          continue;
        }
        this.client.write('S');
        this.upgradeTls();
        return;
      }
      if (code === m.GSSENC_REQUEST_CODE) {
        this.client.write('N');
        continue;
      }
      if (code === m.CANCEL_REQUEST_CODE) {
        if (len !== 16) throw new ProtocolError('invalid length of cancel request');
        const pid = msg.readInt32BE(8);
        const secret = msg.readInt32BE(12);
        if (!this.registry.cancel(pid, secret)) this.registry.forwardCancel?.(pid, secret);
        this.phase = 'closed';
        this.client.end();
        return;
      }
      if (code >> 16 !== 3) throw new ProtocolError(`unsupported frontend protocol ${code >> 16}.${code & 0xffff}: Sluice speaks protocol 3.0`, '0A000');
      this.onStartupMessage(msg, code & 0xffff);
    }
    // A client may send its password right behind the startup message: handle what is already buffered.
    if (this.phase === 'auth' && this.startupBuf.length) this.onAuthData(Buffer.alloc(0));
  }

  private upgradeTls(): void {
    const raw = this.client;
    raw.removeAllListeners('data');
    raw.removeAllListeners('error');
    raw.removeAllListeners('close');
    raw.removeAllListeners('drain');
    raw.on('error', () => this.close('client connection error'));
    const s = new tls.TLSSocket(raw, { isServer: true, secureContext: this.cfg.secureContext });
    this.client = s;
    this.info.tls = true;
    this.attachClient(s);
  }

  private onStartupMessage(msg: Buffer, minor: number): void {
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
    if (minor > 0 || unsupported.length) this.client.write(m.negotiateProtocolVersion(0, unsupported));
    if (this.cfg.tlsMode === 'require' && !this.info.tls) {
      return this.fatal('28000', 'Sluice requires an encrypted connection: connect with sslmode=require (tokens must not cross the network in clear text)');
    }
    // Only ordinary session settings pass to the server (the role, replication, logging, lexing state are Sluice's).
    for (const [k, v] of Object.entries(params)) {
      const why = startupRefusal(k, v);
      if (why) {
        this.governor.record({ type: 'auth_failure', client_addr: this.info.clientAddr, client_user: params.user, database: params.database, application_name: params.application_name, reason: why } as never);
        return this.fatal('42501', why);
      }
    }
    this.clientUser = params.user ?? '';
    this.database = params.database || this.clientUser;
    if (!this.database) return this.fatal('3D000', 'no database specified');
    delete params.user;
    delete params.database;
    this.params = params;
    this.info.applicationName = params.application_name;
    this.phase = 'auth';
    this.client.write(m.authenticationCleartext());
  }

  private onAuthData(d: Buffer): void {
    let password: string | undefined;
    let rest = Buffer.alloc(0);
    const all = Buffer.concat([this.startupBuf, d]);
    new Framer(64 * 1024).push(all, (type, buf, start, end) => {
      if (password !== undefined) return;
      if (type !== 0x70) throw new ProtocolError(`expected password message, got '${String.fromCharCode(type)}'`);
      password = pick(buf, start, end).cstring();
      rest = Buffer.from(buf.subarray(end));
    });
    if (password === undefined) {
      this.startupBuf = all;
      if (this.startupBuf.length > 64 * 1024) throw new ProtocolError('password message too large');
      return;
    }
    // Whatever the client pipelined behind its password is handled once the login completes.
    this.startupBuf = rest;
    this.phase = 'connecting';
    void this.login(password);
  }

  private async login(password: string): Promise<void> {
    let identity: Identity;
    try {
      identity = await this.governor.authenticate(password, addressOf(this.info.clientAddr));
    } catch (e) {
      const reason = e instanceof AuthError ? e.message : `authentication error: ${(e as Error).message}`;
      this.governor.record({ type: 'auth_failure', client_addr: this.info.clientAddr, client_user: this.clientUser, database: this.database, application_name: this.params.application_name, tls: this.info.tls, ...authFailureFields(e, reason) } as never);
      return this.fatal('28P01', `Sluice authentication failed: ${reason}`);
    }
    if (this.phase === 'closed') return;
    if (!servedBy(this.cfg.databases, this.database)) {
      this.governor.record({ type: 'auth_failure', ...identityFields(identity), client_addr: this.info.clientAddr, database: this.database, reason: 'database not served' } as never);
      return this.fatal('3D000', `database "${this.database}" is not served by this Sluice gateway`);
    }
    try {
      // The database's views are read alongside, so masking can follow view columns to their tables.
      const [up] = await Promise.all([connectUpstream(this.cfg.upstream, { ...this.params, database: this.database }), this.governor.openDatabase('postgres', this.database)]);
      if ((this.phase as string) === 'closed') {
        up.socket.destroy();
        return;
      }
      const unparsable = [...up.parameters].find(([k, v]) => this.lexingMismatch(k, v));
      if (unparsable) {
        up.socket.destroy();
        return this.fatal('42501', this.lexingMismatch(unparsable[0], unparsable[1])!);
      }
      this.upstream = up.socket;
      this.upstreamPid = up.pid;
      this.upstreamSecret = up.secret;
      this.info.txStatus = up.txStatus;
      this.identity = identity;
      this.info.identity = identity;
      this.info.database = this.database;
      clearTimeout(this.authTimer);
      // The client sees the server's backend PID (so pg_backend_pid(), notifications and pg_terminate_backend agree)
      // with a secret only the gateway knows: a cancel must come through the gateway, which checks it.
      this.pid = up.pid;
      this.secret = crypto.randomInt(-0x80000000, 0x7fffffff);
      const parts: Buffer[] = [m.authenticationOk()];
      for (const [k, v] of up.parameters) parts.push(m.parameterStatus(k, v));
      parts.push(m.backendKeyData(this.pid, this.secret), m.readyForQuery(up.txStatus));
      this.client.write(Buffer.concat(parts));
      this.phase = 'ready';
      this.registry.register(this, this.pid);
      this.scheduleExpiry();
      this.governor.record({ type: 'session_start', session_id: this.id, ...identityFields(identity), client_addr: this.info.clientAddr, client_user: this.clientUser, application_name: this.params.application_name, database: this.database, tls: this.info.tls });
      up.socket.on('data', (chunk: Buffer) => this.onUpstreamData(chunk));
      up.socket.on('error', () => this.fatal('08006', 'lost connection to the upstream database'));
      up.socket.on('close', () => (this.upstreamFatal ? this.close(`the upstream database ended the session: ${this.upstreamFatal}`) : this.fatal('08006', 'the upstream database closed the connection')));
      up.socket.on('drain', () => this.client.resume());
      if (up.leftover.length) this.onUpstreamData(up.leftover);
      if (this.startupBuf.length) {
        const early = this.startupBuf;
        this.startupBuf = Buffer.alloc(0);
        this.onClientMessages(early);
      }
    } catch (e) {
      if (e instanceof UpstreamError) return this.fatal(e.code === '3D000' ? '3D000' : e.code, e.message);
      return this.fatal('08006', `could not open the upstream session: ${(e as Error).message}`);
    }
  }

  /**
   * Why the session cannot go on when the server reports this parameter value: Sluice parses statements as the
   * server reads them only under standard_conforming_strings = on and an ASCII-safe client encoding, and refuses
   * every statement that would leave that state. A server that reports another (a function, trigger or role default
   * changed it) ends the session: fail closed.
   */
  private lexingMismatch(name: string, value: string): string | undefined {
    if (!LEXING_SETTINGS.has(name.toLowerCase())) return undefined;
    const why = lexingRefusal(name.toLowerCase(), value);
    return why && `Sluice ended the session: the server reports ${name} = ${value}. ${why}`;
  }

  /** A token-based session ends when its token expires (clients reconnect with a fresh token). */
  private scheduleExpiry(): void {
    this.expiryTimer = expiryTimer(this.identity, () => this.fatal('28P01', 'the identity token for this session has expired; reconnect with a fresh token'));
  }

  cancelFromClient(secret: number): void {
    if (secret !== this.secret || !this.upstreamPid) return;
    if (this.holding) {
      // The held statement has not reached the upstream: end the wait instead (the request stays open).
      this.holdAbort?.abort();
      return;
    }
    void cancelUpstream(this.cfg.upstream, this.upstreamPid, this.upstreamSecret);
  }

  // ---------------------------------------------------------------- client -> upstream

  private onClientMessages(d: Buffer): void {
    if (this.holding || this.settling) return this.clientFramer.append(d);
    const u = this.upstream!;
    u.cork();
    try {
      relay(this.clientFramer, d, (type, b, start, end) => this.onClientMessage(type, b, start, end), (x) => this.writeUpstream(x));
    } catch (e) {
      this.protocolFailure(e);
    } finally {
      u.uncork();
    }
  }

  /** Returns undefined to forward the message as is, a Buffer to send instead, or null to drop it. */
  private onClientMessage(type: number, b: Buffer, start: number, end: number): Buffer | null | undefined | typeof HOLD {
    if (this.phase !== 'ready') return null;
    switch (type) {
      case 0x51 /* Q */: {
        const sql = pick(b, start, end).cstring();
        const resolved = this.takeResolved();
        const settle = resolved ? undefined : this.settle(sql);
        if (settle === 'wait') return this.waitForSettings();
        this.info.currentSql = sql;
        const verdict = resolved ?? (settle === 'refuse' ? this.unsettledRefusal() : this.decide(sql));
        if (verdict.decision.action === 'require_approval') return this.hold({ sql, verdict }, 'simple');
        this.info.statements++;
        const item: Extract<Item, { k: 'query' }> = { k: 'query', epoch: ++this.epoch, sql, verdict, t0: performance.now(), rows: 0 };
        if (!verdict.error && mayChangeSettings(verdict.analysis)) this.unsettledUntil = this.epoch;
        this.items.push(item);
        if (verdict.error) {
          this.auditDenied(sql, verdict, 'simple');
          this.trackRefusedPrepare(verdict);
          return m.query(deniedSql());
        }
        this.trackSqlPrepared(verdict);
        item.source = this.cursorSource(verdict.analysis);
        return undefined;
      }
      case 0x50 /* P */: {
        const r = pick(b, start, end);
        const name = r.cstring();
        const sql = r.cstring();
        const nTypes = r.int16();
        const types: number[] = [];
        for (let i = 0; i < nTypes; i++) types.push(r.int32());
        const settle = this.settle(sql);
        if (settle === 'wait') return this.waitForSettings();
        this.info.currentSql = sql;
        const verdict = settle === 'refuse' ? this.unsettledRefusal() : this.decide(sql);
        this.items.push({ k: 'parse', verdict });
        if (verdict.error) {
          this.auditDenied(sql, verdict, 'extended', name);
          return m.parse(name, deniedSql(), types);
        }
        if (name !== '' && !this.statements.has(name) && this.statements.size >= this.cfg.limits.maxPrepared) {
          throw new ProtocolError(`too many prepared statements in one session (limit ${this.cfg.limits.maxPrepared})`, '53400');
        }
        this.trackSqlPrepared(verdict);
        // A statement held for approval is parsed upstream (harmless); each execution waits for its approval.
        const hold = verdict.decision.action === 'require_approval' ? verdict : undefined;
        this.statements.set(name, { name, sql, analysis: verdict.analysis, rule: verdict.decision.rule, hold, paramTypes: hold && types.some((t) => t !== 0) ? types : undefined });
        return undefined;
      }
      case 0x42 /* B */: {
        const r = pick(b, start, end);
        const portal = r.cstring();
        const stmt = r.cstring();
        const prepared = this.statements.get(stmt) ?? this.sqlPreparedStatement(stmt);
        const nParamFormats = r.int16();
        const paramFormats: number[] = [];
        for (let i = 0; i < nParamFormats; i++) paramFormats.push(r.int16());
        const nParams = r.int16();
        const params: (string | null)[] | undefined = prepared?.hold ? [] : undefined;
        let binaryParams = false;
        const formatOf: number[] = [];
        for (let i = 0; i < nParams; i++) {
          const len = r.int32();
          const v = len > 0 ? r.bytes(len) : undefined;
          if (!params) continue;
          const binary = (nParamFormats === 1 ? paramFormats[0] : paramFormats[i]) === 1;
          binaryParams ||= binary;
          formatOf.push(binary ? 1 : 0);
          params.push(len < 0 ? null : binary ? `\\x${(v ?? Buffer.alloc(0)).toString('hex')}` : (v?.toString('utf8') ?? ''));
        }
        const nFormats = r.int16();
        const formats: number[] = [];
        for (let i = 0; i < nFormats; i++) formats.push(r.int16());
        this.portals.set(portal, { stmt: prepared, formats, epoch: this.epoch + 1, params, binaryParams, paramFormats: binaryParams ? formatOf : undefined });
        this.items.push({ k: 'bind' });
        return undefined;
      }
      case 0x45 /* E */: {
        const portal = pick(b, start, end).cstring();
        const p = this.portals.get(portal);
        let approvalId: string | undefined;
        if (p?.stmt?.hold) {
          const resolved = this.takeResolved();
          if (!resolved) return this.hold({ sql: p.stmt.sql, verdict: p.stmt.hold, params: p.params, binaryParams: p.binaryParams, paramFormats: p.paramFormats, paramTypes: p.stmt.paramTypes }, 'extended', p.stmt.name);
          this.info.statements++;
          if (resolved.error) {
            // Denied or timed out: fail this Execute's slot so the upstream skips to Sync as for any error.
            this.auditDenied(p.stmt.sql, resolved, 'extended', p.stmt.name);
            this.items.push({ k: 'denied', verdict: resolved });
            return m.parse(deniedSql().toLowerCase(), deniedSql(), []);
          }
          approvalId = resolved.approvalId;
        } else this.info.statements++;
        // Rows of a portal whose columns were never described cannot be masked reliably (binary formats): when
        // masking applies, ask the upstream to describe it first and keep that answer to ourselves.
        // A portal the gateway never saw bound (a SQL DECLAREd cursor) is described the same way.
        const target = p ?? this.cursorPortal(portal);
        const blind = !target.fields && !target.stmt?.fields && (target.taintAll || this.governor.masks(this.identity!, target.stmt?.analysis));
        if (blind) this.items.push({ k: 'describe', portal: target, internal: true });
        this.items.push({ k: 'execute', stmt: target.stmt, portal: target, t0: performance.now(), rows: 0, fetched: 0, plan: this.portalPlan(target), approvalId });
        if (mayChangeSettings(target.stmt?.analysis)) this.unsettledUntil = this.epoch + 1;
        return blind ? Buffer.concat([m.describe('P', portal), b.subarray(start, end)]) : undefined;
      }
      case 0x44 /* D */: {
        const r = pick(b, start, end);
        // Keep the objects, not the names: a pipelining client may rebind a name before the answer arrives.
        const isStmt = String.fromCharCode(r.byte()) === 'S';
        const name = r.cstring();
        this.items.push(isStmt ? { k: 'describe', stmt: this.statements.get(name) } : { k: 'describe', portal: this.portals.get(name) });
        return undefined;
      }
      case 0x43 /* C */: {
        const r = pick(b, start, end);
        const what = String.fromCharCode(r.byte());
        const name = r.cstring();
        if (what === 'S') this.statements.delete(name);
        else this.portals.delete(name);
        this.items.push({ k: 'close' });
        return undefined;
      }
      case 0x53 /* S */:
        this.items.push({ k: 'sync', epoch: ++this.epoch });
        return undefined;
      case 0x48 /* H flush */:
      case 0x64 /* d CopyData */:
      case 0x63 /* c CopyDone */:
      case 0x66 /* f CopyFail */:
        return undefined;
      case 0x46 /* F FunctionCall */: {
        // The fast-path interface calls a function by OID (large objects: psql's \lo_*, pg_dump, pg_restore):
        // judged like `SELECT schema.function()` under policy, the catalog naming the OID.
        const { sql, verdict } = this.decideFastPath(pick(b, start, end).int32() >>> 0);
        this.info.statements++;
        this.items.push({ k: 'fastpath', sql, verdict, t0: performance.now() });
        if (!verdict.error) return undefined;
        this.auditDenied(sql, verdict, 'fastpath');
        return m.query(deniedSql());
      }
      case 0x58 /* X */:
        this.close('client terminated the session');
        return null;
      default:
        throw new ProtocolError(`invalid frontend message type ${type} ('${String.fromCharCode(type)}')`);
    }
  }

  // ---------------------------------------------------------------- approval holds

  private holding = false;
  private holdAbort?: AbortController;
  /** The outcome of a hold, for the held message when it is read again. */
  private resolved?: Verdict;

  /** Reading stopped until the statements that may change session settings have answered (see settle). */
  private settling = false;
  /** The Query/Sync (by epoch) whose ReadyForQuery reports the settings after the last statement that may change them. */
  private unsettledUntil = 0;
  /** The epoch of the last Query/Sync answered by ReadyForQuery. */
  private answered = 0;

  /**
   * A text the server would read differently under other settings (it has a backslash or a non-ASCII character)
   * may not reach the server while a statement that could change those settings unseen is still running: the
   * server reports settings only when it is ready again. It waits for that ('wait') when the running work ends in
   * a Sync or Query already sent; otherwise it cannot be judged ('refuse').
   */
  private settle(sql: string): 'wait' | 'refuse' | undefined {
    if (this.answered >= this.unsettledUntil || !LEXING_SENSITIVE.test(sql)) return undefined;
    return this.epoch >= this.unsettledUntil ? 'wait' : 'refuse';
  }

  private waitForSettings(): typeof HOLD {
    this.settling = true;
    this.client.pause();
    return HOLD;
  }

  /** Called after each upstream chunk: resume reading once nothing that may change settings is running. */
  private settled(): void {
    if (!this.settling || this.phase !== 'ready' || this.answered < this.unsettledUntil) return;
    this.settling = false;
    this.client.resume();
    this.onClientMessages(Buffer.alloc(0));
  }

  private unsettledRefusal(): Verdict {
    const reason = 'the statement has backslashes or non-ASCII characters and follows, before any Sync, a statement that may change how the server reads them';
    return { decision: { action: 'deny', rule: 'sluice-guard', reason }, error: { code: '42501', message: `Sluice refuses this statement: ${reason}`, hint: 'Send Sync before this statement (or run the earlier statement on its own).' } };
  }

  private takeResolved(): Verdict | undefined {
    const r = this.resolved;
    this.resolved = undefined;
    return r;
  }

  /**
   * The policy holds this message for approval: stop reading client input before it (it stays buffered, as does
   * anything pipelined behind it), tell the client where to get it approved, and once decided read it again with
   * the outcome: approved runs it in place; denied or timed out answers it with an error; the session goes on.
   */
  private hold(req: Pick<HoldRequest, 'sql' | 'verdict' | 'params' | 'binaryParams' | 'paramFormats' | 'paramTypes'>, protocol: 'simple' | 'extended', name?: string): typeof HOLD {
    this.holding = true;
    this.client.pause();
    const abort = new AbortController();
    this.holdAbort = abort;
    const rule = req.verdict.decision.rule;
    const notify = (a: Approval, url: string) => {
      this.info.awaitingApproval = a.id;
      const need = a.quorum > 1 ? `${a.quorum} approvals` : 'approval';
      this.writeClient(
        m.noticeResponse({
          severity: 'NOTICE',
          code: '01000',
          message: `awaiting approval ${a.id}: ${url}`,
          detail: `Sluice policy rule "${rule}" needs ${need}${a.approver_groups.length ? ` from ${a.approver_groups.join(' or ')}` : ''} before this ${protocol === 'extended' && name ? `prepared statement "${name}"` : 'statement'} runs${req.verdict.decision.reason ? ` (${req.verdict.decision.reason})` : ''}.`,
          hint: `It runs as soon as it is approved; it waits until ${a.expires_at}. Cancel (Ctrl-C) to stop waiting.`,
        }),
      );
    };
    this.governor.hold({ ...req, identity: this.identity!, database: this.database, sessionId: this.id }, notify, abort.signal).then(
      (v) => this.release(v),
      () => {
        const id = this.info.awaitingApproval;
        this.release({
          analysis: req.verdict.analysis,
          approvalId: id,
          decision: { action: 'deny', rule, reason: 'canceled by the client while awaiting approval' },
          error: { code: '57014', message: 'canceling statement due to user request', detail: id ? `Approval request ${id} stays open: run the same statement again to wait for it (it runs at once if approved meanwhile).` : undefined },
        });
      },
    );
    return HOLD;
  }

  private release(v: Verdict): void {
    this.holding = false;
    this.holdAbort = undefined;
    this.info.awaitingApproval = undefined;
    if (this.phase !== 'ready') return;
    this.resolved = v;
    this.client.resume();
    this.onClientMessages(Buffer.alloc(0));
  }

  /**
   * A fast-path call, judged as the SQL call of the function its OID names in this database. Functions whose result
   * is raw data (large object contents) are refused to identities whose results are masked: they cannot be scanned.
   */
  private decideFastPath(oid: number): { sql: string; verdict: Verdict } {
    const name = this.governor.functions?.get(this.database)?.byOid.get(oid);
    const refuse = (sql: string, reason: string): { sql: string; verdict: Verdict } => ({ sql, verdict: { decision: { action: 'deny', rule: 'sluice-guard', reason }, error: { code: '42501', message: `Sluice refuses this fast-path call: ${reason}` } } });
    if (!name) return refuse(`SELECT fastpath_function_${oid}() -- fast-path call`, `function OID ${oid} is not one Sluice knows in database "${this.database}"`);
    const sql = `SELECT ${name.split('.').map((p) => `"${p.replace(/"/g, '""')}"`).join('.')}() -- fast-path call`;
    const verdict = this.decide(sql);
    if (verdict.decision.action === 'require_approval') return refuse(sql, `${name} needs approval under rule "${verdict.decision.rule}", and a fast-path call cannot be held; call it with SQL`);
    if (!verdict.error && /^pg_catalog\.(loread|lo_get)$/.test(name) && this.governor.masks(this.identity!, verdict.analysis)) {
      return refuse(sql, `${name} returns large object contents, which Sluice cannot mask; it is allowed only to identities exempt from masking`);
    }
    return { sql, verdict };
  }

  private decide(sql: string): Verdict {
    return this.governor.check(this.identity!, this.database, sql, this.sqlPrepared);
  }

  /**
   * A refused `PREPARE name AS ...` is remembered (unless the name is taken) so that `EXECUTE name` is refused for
   * what it would run rather than as unknown. The server never saw it: were EXECUTE allowed, it would fail there.
   */
  private trackRefusedPrepare(v: Verdict): void {
    for (const s of v.analysis?.statements ?? []) if (s.prepares !== undefined && !this.sqlPrepared.has(s.prepares)) this.sqlPrepared.set(s.prepares, s);
  }

  /** Keep SQL-level PREPARE/EXECUTE/DEALLOCATE in step with the upstream so EXECUTE can be judged. */
  private trackSqlPrepared(v: Verdict): void {
    for (const s of v.analysis?.statements ?? []) {
      if (s.prepares !== undefined) this.sqlPrepared.set(s.prepares, s);
      if (s.cursor?.op === 'declare' && s.cursor.name) this.cursors.set(s.cursor.name, s);
      if (s.cursor?.op === 'close') {
        if (s.cursor.name) this.cursors.delete(s.cursor.name);
        else this.cursors.clear();
      }
      if (s.deallocates === '') this.sqlPrepared.clear();
      else if (s.deallocates !== undefined) this.sqlPrepared.delete(s.deallocates);
      if (s.command === 'DISCARD') {
        this.sqlPrepared.clear();
        this.cursors.clear();
        this.statements.clear();
      }
    }
  }

  // ---------------------------------------------------------------- upstream -> client

  private onUpstreamData(d: Buffer): void {
    const c = this.client;
    c.cork();
    try {
      relay(this.upstreamFramer, d, (type, b, start, end) => this.onUpstreamMessage(type, b, start, end), (x) => this.writeClient(x));
    } catch (e) {
      this.fatal('08P01', `invalid data from the upstream database: ${(e as Error).message}`);
    } finally {
      // The audit events of what this chunk completes reach the spool before the client sees the completions.
      if (!this.governor.audit.flushSpool()) this.auditUnwritable();
      c.uncork();
    }
    this.settled();
  }

  /** The spool cannot be written: the completions of this chunk must not reach the client (fail closed). */
  private auditUnwritable(): void {
    this.client.destroy();
    this.close('the audit spool cannot be written');
  }

  private onUpstreamMessage(type: number, b: Buffer, start: number, end: number): Buffer | null | undefined {
    const head = this.items[0];
    switch (type) {
      case 0x44 /* D DataRow */: {
        if (head?.k === 'execute') head.fetched++;
        if (head?.k !== 'execute' && head?.k !== 'query') return undefined;
        if (!head.plan) return undefined;
        head.masked ??= new Map();
        return maskDataRow(b, start, end, head.plan, head.masked);
      }
      case 0x43 /* C CommandComplete */: {
        const rows = tag(pick(b, start, end).cstring());
        if (head?.k === 'query') head.rows += rows;
        else if (head?.k === 'execute') {
          head.rows += rows;
          this.items.shift();
          this.auditExecute(head);
        }
        return undefined;
      }
      case 0x5a /* Z ReadyForQuery */: {
        this.info.txStatus = String.fromCharCode(b[start + 5]!);
        // Everything up to and including the query/sync this answers is complete.
        while (this.items.length) {
          const it = this.items.shift()!;
          if (it.k === 'query' || it.k === 'sync') {
            this.answered = it.epoch;
            if (it.k === 'query' && it.verdict.decision.action === 'allow') this.auditQuery(it);
            // Outside a transaction every portal bound up to here is gone upstream: forget them too.
            if (this.info.txStatus === 'I') for (const [name, p] of this.portals) if (p.epoch <= it.epoch) this.portals.delete(name);
            break;
          }
          if (it.k === 'fastpath') {
            if (!it.verdict.error) this.governor.record({ type: 'statement', ...this.base(), sql: it.sql, protocol: 'fastpath', ...analysisFields(it.verdict.analysis), decision: 'allow', rule: it.verdict.decision.rule, duration_ms: Math.round((performance.now() - it.t0) * 1000) / 1000, error: it.error?.message, error_code: it.error?.code });
            break;
          }
        }
        this.info.currentSql = undefined;
        return undefined;
      }
      case 0x45 /* E ErrorResponse */: {
        const fields = m.parseErrorFields(b, start, end);
        const severity = fields.V ?? fields.severity;
        if (severity === 'FATAL' || severity === 'PANIC') this.upstreamFatal = fields.message ?? fields.code ?? 'FATAL';
        // No pending request (asynchronous, e.g. the server shutting down) or an error raised by Sync itself
        // (a deferred constraint at implicit commit): pass it through; ReadyForQuery follows.
        if (!head || head.k === 'sync') return this.scrub(b, start, end, head);
        const denied = head.k === 'query' || head.k === 'parse' || head.k === 'fastpath' || head.k === 'denied' ? head.verdict.error : undefined;
        if (head.k === 'query') {
          if (!denied) head.error = fields;
          return denied ? this.errorFor(denied) : this.scrub(b, start, end, head);
        }
        if (head.k === 'fastpath') {
          if (!denied) head.error = fields;
          return denied ? this.errorFor(denied) : this.scrub(b, start, end, head);
        }
        // Extended protocol: this message failed; the upstream now skips everything until Sync.
        const failed = this.items.shift()!;
        if (failed.k === 'execute') this.auditExecute(failed, fields);
        // The server now discards every message until Sync, simple Queries and fast-path calls included: they get no
        // answer, so their slots go too (and cannot have changed settings).
        while (this.items.length && this.items[0]!.k !== 'sync') {
          const skipped = this.items.shift()!;
          if (skipped.k === 'query') {
            this.answered = Math.max(this.answered, skipped.epoch);
            if (skipped.verdict.decision.action === 'allow') this.auditQuery(skipped, { message: 'not run: the server skipped it after an earlier error, until Sync' });
          }
        }
        return denied ? this.errorFor(denied) : this.scrub(b, start, end, failed);
      }
      case 0x4e /* N NoticeResponse */:
        return this.scrub(b, start, end, head);
      case 0x41 /* A NotificationResponse */: {
        // Payloads can carry any session's data: scanned like result text for identities whose results are masked.
        if (!this.governor.scansText(this.identity!, undefined)) return undefined;
        const r = pick(b, start, end);
        const pid = r.int32();
        const channel = r.cstring();
        const payload = r.cstring();
        const masked = maskText(payload, new Map());
        return masked === undefined ? undefined : new Writer().int32(pid).cstring(channel).cstring(masked).message('A');
      }
      case 0x6e /* n NoData */:
      case 0x31 /* 1 ParseComplete */:
      case 0x32 /* 2 BindComplete */:
      case 0x33 /* 3 CloseComplete */:
      case 0x49 /* I EmptyQuery */:
      case 0x73 /* s PortalSuspended */:
        if (head && head.k !== 'query' && head.k !== 'sync' && head.k !== 'fastpath') {
          this.items.shift();
          if (head.k === 'describe' && head.internal) return null; // NoData for our own Describe
          if (head.k === 'execute') {
            if (type === 0x73) head.rows = head.fetched;
            this.auditExecute(head);
          }
        }
        return undefined;
      case 0x48 /* H CopyOutResponse */: {
        if (head?.k !== 'query' && head?.k !== 'execute') return undefined;
        // Text-format COPY rows are scanned line by line by the detectors. Binary COPY, and COPY that would carry a
        // ruled column or values computed from personal data, were refused at decision time.
        head.copyScan = b[start + 5] === 0 && this.governor.scansText(this.identity!, undefined);
        return undefined;
      }
      case 0x64 /* d CopyData */: {
        if ((head?.k !== 'query' && head?.k !== 'execute') || !head.copyScan) return undefined;
        if (!mayContainSensitive(b, start + 5, end)) return undefined;
        head.masked ??= new Map();
        const line = maskText(b.toString('utf8', start + 5, end), head.masked);
        return line === undefined ? undefined : new Writer().bytes(Buffer.from(line, 'utf8')).message('d');
      }
      case 0x54 /* T RowDescription */: {
        if (head?.k === 'query') {
          head.plan = this.governor.maskPlan(this.identity!, head.source?.analysis ?? head.verdict.analysis, parseRowDescription(b, start, end), this.database, 'postgres', { taintAll: head.source?.taintAll });
        } else if (head?.k === 'describe') {
          this.items.shift();
          const fields = parseRowDescription(b, start, end);
          if (head.stmt) head.stmt.fields = fields;
          if (head.portal) head.portal.fields = fields;
          // Pipelined clients send Execute before this answer arrives: re-plan the executions already queued.
          for (const it of this.items) {
            if (it.k !== 'execute' || !it.portal) continue;
            if ((head.portal && it.portal === head.portal) || (head.stmt && it.portal.stmt === head.stmt)) it.plan = this.portalPlan(it.portal);
          }
          if (head.internal) return null; // the client did not ask for it
        }
        return undefined;
      }
      case 0x53 /* S ParameterStatus */: {
        const r = pick(b, start, end);
        const why = this.lexingMismatch(r.cstring(), r.cstring());
        if (!why) return undefined;
        this.governor.record({ type: 'protocol_error', session_id: this.id, ...identityFields(this.identity!), client_addr: this.info.clientAddr, error: why, error_code: '42501' });
        this.fatal('42501', why);
        return null;
      }
      default:
        // t ParameterDescription, N Notice, A Notification, G/H/W/d/c COPY: pass through.
        return undefined;
    }
  }

  /** The masking plan for executing a portal, from its Describe or its statement's Describe plus Bind's formats. */
  private portalPlan(p: Portal | undefined): MaskPlan | undefined {
    if (!p) return undefined;
    let fields = p.fields;
    if (!fields && p.stmt?.fields) {
      const f = p.formats;
      fields = p.stmt.fields.map((x, i) => ({ ...x, format: f.length === 0 ? 0 : f.length === 1 ? f[0]! : (f[i] ?? 0) }));
    }
    if (!fields) {
      // Rows without any RowDescription: when every column comes back as text it is safe to scan them all.
      if (p.formats.some((x) => x !== 0)) return undefined;
      return this.governor.masks(this.identity!, p.stmt?.analysis) ? { columns: [], key: this.governor.maskKey, scanUnknown: true } : undefined;
    }
    return this.governor.maskPlan(this.identity!, p.stmt?.analysis, fields, this.database, 'postgres', { taintAll: p.taintAll });
  }

  /**
   * Error and notice texts can echo values (`invalid input syntax for type integer: "123-45-6789"`, a unique
   * violation's DETAIL, a RAISE in a function). For identities whose results are masked, detector hits are masked
   * in every text field; when the statement touches a column masked for them, quoted values are hidden and DETAIL
   * and CONTEXT are replaced. Returns the rewritten message, or undefined to pass it as is.
   */
  private scrub(b: Buffer, start: number, end: number, head: Item | undefined): Buffer | undefined {
    if (this.governor.maskingExempt(this.identity!)) return undefined;
    const analysis = head?.k === 'query' ? (head.source?.analysis ?? head.verdict.analysis) : head?.k === 'execute' ? head.stmt?.analysis : head?.k === 'fastpath' ? head.verdict.analysis : undefined;
    const tainted = (head?.k === 'query' && head.source?.taintAll) || (head?.k === 'execute' && head.portal?.taintAll) || !!this.governor.taint(this.identity!, analysis, this.database);
    const detectors = this.governor.scansText(this.identity!, undefined);
    if (!tainted && !detectors) return undefined;
    const r = pick(b, start, end);
    const w = new Writer();
    let changed = false;
    for (;;) {
      const code = r.byte();
      if (code === 0) break;
      let v = r.cstring();
      const c = String.fromCharCode(code);
      const field = TEXT_FIELDS[c];
      if (field) {
        const before = v;
        v = scrubText(v, field, { tainted, detectors });
        changed ||= v !== before;
      }
      w.int8(code).cstring(v);
    }
    if (!changed) return undefined;
    w.int8(0);
    return w.message(String.fromCharCode(b[start]!));
  }

  /** A protocol Bind of a statement prepared with SQL PREPARE: executed as what that PREPARE was judged to be. */
  private sqlPreparedStatement(name: string): Prepared | undefined {
    const s = this.sqlPrepared.get(name);
    return s ? { name, sql: `EXECUTE ${name}`, analysis: asAnalysis(s), rule: 'sql-prepare' } : undefined;
  }

  /** A protocol Execute of a portal never bound through Sluice: a SQL cursor (its query, if Sluice saw it declared). */
  private cursorPortal(name: string): Portal {
    const c = this.cursors.get(name);
    return c ? { formats: [], epoch: this.epoch + 1, stmt: { name, sql: `FETCH FROM ${name}`, analysis: asAnalysis(c), rule: 'cursor' } } : { formats: [], epoch: this.epoch + 1, taintAll: true };
  }

  /** For a message that FETCHes from cursors: what the rows come from (the cursors' queries), for masking. */
  private cursorSource(a: Analysis | undefined): MaskSource | undefined {
    if (!a?.statements.some((s) => s.cursor?.op === 'fetch')) return undefined;
    const statements: StatementInfo[] = [];
    let taintAll = false;
    for (const s of a.statements) {
      if (s.cursor?.op !== 'fetch') statements.push(s);
      else {
        const c = this.cursors.get(s.cursor.name ?? '');
        if (c) statements.push(c);
        else taintAll = true;
      }
    }
    return { analysis: { ...a, statements, tables: [...new Set(statements.flatMap((s) => s.tables.map((t) => t.name)))] }, taintAll };
  }

  /** Exemptions from masking are explicit and audited: mark statements whose rows an exempt identity saw. */
  private exemptField(rows: number): Partial<AuditEvent> {
    return rows > 0 && this.governor.maskingExempt(this.identity!) ? { masking_exempt: true } : {};
  }

  private errorFor(e: GovernorError): Buffer {
    return m.errorResponse({ severity: 'ERROR', ...e });
  }

  // ---------------------------------------------------------------- audit

  private baseFields?: Partial<AuditEvent>;
  /** Fields every statement event of this session carries (built once per session). */
  private base(): Partial<AuditEvent> {
    return (this.baseFields ??= { session_id: this.id, ...identityFields(this.identity!), client_addr: this.info.clientAddr, application_name: this.params.application_name, database: this.database });
  }

  private auditDenied(sql: string, v: Verdict, protocol: 'simple' | 'extended' | 'fastpath', name?: string): void {
    this.governor.record({ type: 'statement', ...this.base(), sql, protocol, statement_name: name || undefined, ...analysisFields(v.analysis), decision: 'deny', rule: v.decision.rule, reason: v.error?.message, error_code: v.error?.code, approval_id: v.approvalId });
  }

  private auditQuery(it: Extract<Item, { k: 'query' }>, err?: Record<string, string>): void {
    const e = err ?? it.error;
    const approvalId = it.verdict.approvalId;
    this.governor.record({ type: 'statement', ...this.base(), sql: it.sql, protocol: 'simple', ...analysisFields(it.verdict.analysis), decision: 'allow', rule: it.verdict.decision.rule, ...maskedFields(it.masked), ...this.exemptField(it.rows), rows: it.rows, duration_ms: Math.round((performance.now() - it.t0) * 1000) / 1000, error: e?.message, error_code: e?.code, approval_id: approvalId });
    if (approvalId) this.governor.approvals?.recordOutcome(approvalId, { rows: it.rows, error: e?.message });
  }

  private auditExecute(it: Extract<Item, { k: 'execute' }>, err?: Record<string, string>): void {
    this.governor.record({ type: 'statement', ...this.base(), sql: it.stmt?.sql, protocol: 'extended', statement_name: it.stmt?.name || undefined, ...analysisFields(it.stmt?.analysis), decision: 'allow', rule: it.stmt?.rule, ...maskedFields(it.masked), ...this.exemptField(it.rows), rows: it.rows, duration_ms: Math.round((performance.now() - it.t0) * 1000) / 1000, error: err?.message, error_code: err?.code, approval_id: it.approvalId });
    if (it.approvalId) this.governor.approvals?.recordOutcome(it.approvalId, { rows: it.rows, error: err?.message });
  }
}
