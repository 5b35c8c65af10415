import net from 'node:net';
import tls from 'node:tls';
import crypto from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Governor, GovernorError, Verdict } from '../../governor.js';
import { analysisFields, identityFields } from '../../governor.js';
import type { AuditEvent } from '../../audit/audit.js';
import { AuthError, type Identity } from '../../identity/identity.js';
import { addressOf, authFailureFields } from '../../identity/throttle.js';
import type { Analysis } from '../../analyze/analyze.js';
import { countMasked, maskValue, scrubText, type MaskCounts, type MaskPlan } from '../../masking/rows.js';
import { globToRegExp, servedBy } from '../../util/glob.js';
import { handshakeCharsetRefusal } from '../../analyze/guard-mysql.js';
import { mayContainSensitive } from '../../masking/detectors.js';
import type { LiveSession, SessionInfo, SessionRegistry } from '../postgres/session.js';
import { CAP, COM, MARIADB_CLIENT_PROGRESS, MAX_PAYLOAD, STATUS, TYPE, MyFramer, MyProtocolError, MyReader, binarySize, errPacket, frame, int2, int4, isTextColumn, lenencBuf, lenencInt, lenencSize, myFields, okPacket, parseColumn, parseErr, parseOk, withoutNul, writeHeader, type MyColumn } from './packets.js';
import { connectMyUpstream, MyUpstreamError, type MyUpstreamTarget, type UpstreamHello } from './upstream.js';
import { expiryTimer, sessionEndEvent } from '../common.js';
import { MyClient } from './client.js';

export interface MyEngineConfig {
  upstream: MyUpstreamTarget;
  /** Globs of database (schema) names clients may use; all when empty. */
  databases: string[];
  tlsMode: 'disable' | 'allow' | 'require';
  secureContext?: tls.SecureContext;
  limits: { maxPacketBytes: number; authTimeoutMs: number };
  /** The upstream's handshake (version, capabilities), read at start. */
  hello: UpstreamHello;
}

/** Capabilities the gateway can relay faithfully (no compression, no LOAD DATA LOCAL, no session tracking). */
const RELAYABLE =
  CAP.LONG_PASSWORD | CAP.FOUND_ROWS | CAP.LONG_FLAG | CAP.CONNECT_WITH_DB | CAP.IGNORE_SPACE | CAP.PROTOCOL_41 | CAP.INTERACTIVE | CAP.IGNORE_SIGPIPE | CAP.TRANSACTIONS |
  CAP.SECURE_CONNECTION | CAP.MULTI_STATEMENTS | CAP.MULTI_RESULTS | CAP.PS_MULTI_RESULTS | CAP.PLUGIN_AUTH | CAP.CONNECT_ATTRS | CAP.PLUGIN_AUTH_LENENC_CLIENT_DATA | CAP.DEPRECATE_EOF;

const CLEAR = 'mysql_clear_password';

/** MySQL error numbers for the Governor's SQLSTATE-style codes. */
function myError(e: GovernorError): Buffer {
  const map: Record<string, [number, string]> = {
    '42501': [1142, '42000'],
    '42601': [1064, '42000'],
    '57014': [1317, '70100'],
    '57P03': [1290, 'HY000'],
    '26000': [1243, 'HY000'],
  };
  const [code, state] = map[e.code] ?? [1105, 'HY000'];
  return errPacket(code, state, [e.message, e.detail, e.hint].filter(Boolean).join(' — '));
}

/**
 * Whether a database is served, its name matched case-sensitively: MySQL/MariaDB database names are case-sensitive
 * on most servers (lower_case_table_names = 0), so `APP` is not `app`.
 */
function served(globs: readonly string[], db: string): boolean {
  return servedBy(globs, db) && (globs.length === 0 || globs.some((g) => new RegExp(globToRegExp(g).source).test(db)));
}

/** A statement Sluice refuses whatever the policy says (the engine's own guard: databases served, USE). */
function refusal(analysis: Analysis, statement: number, reason: string): Verdict {
  return {
    analysis,
    decision: { action: 'deny', rule: 'sluice-guard', reason, statement },
    error: { code: '42501', message: `Sluice refuses this statement: ${reason}`, hint: 'The statement was not run; the session is still usable.' },
  };
}

interface Stmt {
  sql: string;
  verdict: Verdict;
  params: number;
  columns: MyColumn[];
  /** Parameter types from the last execute that bound them (the server remembers them too). */
  paramTypes?: number[];
}

type ResultState = 'first' | 'cols' | 'eof1' | 'rows';
interface Inflight {
  k: 'query' | 'execute' | 'prepare' | 'fetch' | 'simple' | 'fieldlist' | 'statistics';
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
}

/** One client connection speaking the MySQL protocol, relayed to an upstream MySQL/MariaDB under the Governor. */
export class MySession implements LiveSession {
  readonly id = crypto.randomUUID();
  readonly info: SessionInfo;
  private client: net.Socket;
  private upstream?: net.Socket;
  private phase: 'handshake' | 'auth' | 'switch' | 'connecting' | 'ready' | 'closed' = 'handshake';
  private clientFramer: MyFramer;
  private upstreamFramer = new MyFramer(1 << 30);
  private scramble = crypto.randomBytes(20).map((b) => (b % 94) + 33); // printable, no NUL
  private caps = 0;
  private charset = 45;
  private user = '';
  private attrs: Record<string, string> = {};
  private identity?: Identity;
  private database = '';
  private readonly connId: number;
  private upstreamThread = 0;
  private stmts = new Map<number, Stmt>();
  private inflight?: Inflight;
  private holding = false;
  private holdAbort?: AbortController;
  private authTimer?: NodeJS.Timeout;
  private expiryTimer?: NodeJS.Timeout;
  private closeReason = '';
  private seq = 0;
  /** The handshake offered MariaDB extended capabilities, and the client asked for progress reports. */
  private mariadbExt = false;
  private progress = false;

  constructor(
    socket: net.Socket,
    private readonly governor: Governor,
    private readonly cfg: MyEngineConfig,
    private readonly registry: SessionRegistry,
  ) {
    this.client = socket;
    this.clientFramer = new MyFramer(cfg.limits.maxPacketBytes);
    do this.connId = crypto.randomBytes(4).readUInt32LE() & 0x7fffffff;
    while (this.connId === 0 || registry.lookup('mysql', this.connId));
    this.info = { id: this.id, clientAddr: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`, startedAt: new Date(), tls: false, statements: 0, txStatus: 'I', engine: 'mysql' };
    socket.setNoDelay(true);
    this.attach(socket);
    this.authTimer = setTimeout(() => this.fatal(1158, '08S01', 'login timed out: the client did not finish authenticating in time'), cfg.limits.authTimeoutMs);
    this.authTimer.unref();
    this.sendHandshake();
  }

  // ---------------------------------------------------------------- plumbing

  private attach(s: net.Socket): void {
    s.on('data', (d: Buffer) => this.onClientData(d));
    s.on('error', () => this.close('client connection error'));
    s.on('close', () => this.close('client disconnected'));
    s.on('drain', () => this.upstream?.resume());
  }

  private send(payload: Buffer): void {
    if (!this.auditWritten()) return;
    const f = frame(this.seq, payload);
    this.seq = f.next;
    if (!this.client.destroyed && !this.client.write(f.bytes)) this.upstream?.pause();
  }

  /** The audit events of what is about to be answered reach the spool first; if they cannot, the client gets nothing (fail closed). */
  private auditWritten(): boolean {
    if (this.governor.audit.flushSpool()) return true;
    this.client.destroy();
    this.close('the audit spool cannot be written');
    return false;
  }

  private fatal(code: number, state: string, message: string): void {
    if (this.phase === 'closed') return;
    if (!this.client.destroyed) {
      const f = frame(this.phase === 'ready' ? 0 : this.seq, errPacket(code, state, message));
      this.client.end(f.bytes);
    }
    this.close(message);
  }

  terminate(reason: string): void {
    this.fatal(1927, '70100', `Connection was killed: ${reason}`);
  }

  /** KILL QUERY from another connection of the same identity: end a held wait, or cancel the running statement. */
  cancelFromClient(): void {
    if (this.holding) {
      this.holdAbort?.abort();
      return;
    }
    if (this.inflight && this.upstreamThread) void this.killUpstreamQuery();
  }

  private async killUpstreamQuery(): Promise<void> {
    try {
      const c = await MyClient.connect(this.cfg.upstream);
      await c.query(`KILL QUERY ${this.upstreamThread}`).finally(() => c.close());
    } catch {
      /* best effort, as a CancelRequest */
    }
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
      if (this.inflight && this.upstreamThread) void this.killUpstreamQuery();
      u.end(frame(0, Buffer.from([COM.QUIT])).bytes);
      setTimeout(() => u.destroy(), 2000).unref();
    }
    if (this.inflight && (this.inflight.k === 'query' || this.inflight.k === 'execute')) this.auditDone(this.inflight, `not completed: ${this.closeReason}`);
    this.inflight = undefined;
    if (!this.client.destroyed) this.client.end();
    setTimeout(() => this.client.destroy(), 2000).unref();
    if (wasReady) {
      this.registry.unregister(this, this.connId);
      this.governor.record(sessionEndEvent(this.info, this.identity!, this.database, this.closeReason));
    }
  }

  // ---------------------------------------------------------------- handshake and login

  private sendHandshake(): void {
    const h = this.cfg.hello;
    const caps = (h.caps & RELAYABLE) | (this.cfg.tlsMode !== 'disable' && this.cfg.secureContext ? CAP.SSL : 0) | CAP.PLUGIN_AUTH | CAP.SECURE_CONNECTION | CAP.PROTOCOL_41;
    // A MariaDB upstream does not set CLIENT_MYSQL: MariaDB clients then read extended capabilities from the
    // reserved bytes. The gateway offers one: progress reports, which carry the "awaiting approval" message.
    this.mariadbExt = (caps & CAP.LONG_PASSWORD) === 0;
    const reserved = Buffer.alloc(10);
    if (this.mariadbExt) reserved.writeUInt32LE(MARIADB_CLIENT_PROGRESS, 6);
    const payload = Buffer.concat([
      Buffer.from([10]),
      Buffer.from(`${h.serverVersion}\0`, 'utf8'),
      int4(this.connId),
      this.scramble.subarray(0, 8),
      Buffer.from([0]),
      int2(caps & 0xffff),
      Buffer.from([this.charset]),
      int2(STATUS.AUTOCOMMIT),
      int2((caps >>> 16) & 0xffff),
      Buffer.from([21]),
      reserved,
      this.scramble.subarray(8, 20),
      Buffer.from([0]),
      Buffer.from(`${CLEAR}\0`, 'ascii'),
    ]);
    this.seq = 0;
    this.send(payload);
    this.phase = 'auth';
  }

  private onClientData(d: Buffer): void {
    try {
      if (this.phase === 'closed') return;
      if (this.phase === 'connecting' || this.holding) return this.clientFramer.append(d);
      this.clientFramer.push(d, (seq, p) => this.onClientPacket(seq, p));
    } catch (e) {
      this.protocolFailure(e);
    }
  }

  private protocolFailure(e: unknown): void {
    const msg = e instanceof MyProtocolError ? e.message : `internal error: ${(e as Error).message}`;
    // The same fields as the PostgreSQL engine's protocol_error (error, error_code), with the engine in details.
    this.governor.record({ type: 'protocol_error', session_id: this.id, client_addr: this.info.clientAddr, ...(this.identity ? identityFields(this.identity) : {}), error: msg, error_code: '08S01', details: { engine: 'mysql' } });
    this.fatal(1047, '08S01', `protocol error: ${msg}`);
  }

  /**
   * 'stop' after a packet that starts something asynchronous (login, a forwarded command, a hold); 'keep' leaves a
   * packet buffered until the command in flight is answered.
   */
  private onClientPacket(seq: number, p: Buffer): 'keep' | 'stop' | void {
    this.seq = (seq + 1) & 0xff;
    switch (this.phase) {
      case 'auth':
        return this.onHandshakeResponse(p);
      case 'switch':
        return this.onPassword(withoutNul(p).toString('utf8'));
      case 'ready':
        if (this.inflight || this.holding) {
          // One command at a time: keep it (and what follows) until the answer is complete.
          this.seq = seq;
          return 'keep';
        }
        this.onCommand(p);
        return this.inflight !== undefined || this.holding || this.phase !== 'ready' ? 'stop' : undefined;
      default:
        return 'keep';
    }
  }

  private onHandshakeResponse(p: Buffer): 'stop' | void {
    const r = new MyReader(p);
    const caps = r.int4();
    r.int4(); // max packet
    const charset = r.int1();
    const filler = r.bytes(23);
    this.progress = this.mariadbExt && !(caps & CAP.LONG_PASSWORD) && (filler.readUInt32LE(19) & MARIADB_CLIENT_PROGRESS) !== 0;
    if (!(caps & CAP.PROTOCOL_41)) throw new MyProtocolError('the client does not speak protocol 4.1');
    if (r.left === 0 && caps & CAP.SSL) {
      if (!this.cfg.secureContext || this.cfg.tlsMode === 'disable') throw new MyProtocolError('TLS was requested but is not enabled on this gateway');
      this.upgradeTls();
      return 'stop';
    }
    if (this.cfg.tlsMode === 'require' && !this.info.tls) {
      this.fatal(3159, '08004', 'connections to Sluice must use TLS (ssl-mode=REQUIRED)');
      return 'stop';
    }
    this.caps = caps & ((this.cfg.hello.caps & RELAYABLE) | CAP.SSL | CAP.PLUGIN_AUTH | CAP.SECURE_CONNECTION | CAP.PROTOCOL_41);
    // The client's character set decides how the server reads every statement: only ASCII-safe ones.
    const badCharset = handshakeCharsetRefusal(charset);
    if (badCharset) {
      this.governor.record({ type: 'protocol_error', client_addr: this.info.clientAddr, error: badCharset, error_code: '42000', details: { engine: 'mysql' } });
      this.fatal(1115, '42000', badCharset);
      return 'stop';
    }
    this.charset = charset;
    this.user = r.nulString();
    let auth: Buffer;
    if (caps & CAP.PLUGIN_AUTH_LENENC_CLIENT_DATA) auth = r.lenencBytes() ?? Buffer.alloc(0);
    else if (caps & CAP.SECURE_CONNECTION) auth = r.bytes(r.int1());
    else auth = r.nulBytes();
    if (caps & CAP.CONNECT_WITH_DB && r.left) this.database = r.nulString();
    const plugin = caps & CAP.PLUGIN_AUTH && r.left ? r.nulString() : '';
    if (caps & CAP.CONNECT_ATTRS && r.left) {
      const block = new MyReader(r.lenencBytes() ?? Buffer.alloc(0));
      while (block.left) this.attrs[block.lenencString()] = block.lenencString();
    }
    this.info.applicationName = this.attrs.program_name ?? this.attrs._client_name;
    if (plugin === CLEAR && auth.length) return this.onPassword(withoutNul(auth).toString('utf8'));
    // Ask for the password in clear text (inside TLS): it is the identity token or key.
    this.phase = 'switch';
    this.send(Buffer.concat([Buffer.from([0xfe]), Buffer.from(`${CLEAR}\0`, 'ascii')]));
  }

  private upgradeTls(): void {
    const plain = this.client;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    plain.removeAllListeners('error');
    plain.removeAllListeners('drain');
    const secure = new tls.TLSSocket(plain, { isServer: true, secureContext: this.cfg.secureContext });
    this.client = secure;
    this.info.tls = true;
    this.clientFramer = new MyFramer(this.cfg.limits.maxPacketBytes);
    this.attach(secure);
  }

  private onPassword(password: string): 'stop' {
    this.phase = 'connecting';
    void this.login(password);
    return 'stop';
  }

  private async login(password: string): Promise<void> {
    let identity: Identity;
    try {
      identity = await this.governor.authenticate(password, addressOf(this.info.clientAddr));
    } catch (e) {
      const reason = e instanceof AuthError ? e.message : 'authentication failed';
      const f = authFailureFields(e, reason);
      this.governor.record({ type: 'auth_failure', client_addr: this.info.clientAddr, client_user: this.user, database: this.database, reason: f.reason, details: { engine: 'mysql', ...f.details } } as never);
      this.fatal(1045, '28000', `Access denied: ${reason}`);
      return;
    }
    if (this.phase === 'closed') return;
    if (this.database && !served(this.cfg.databases, this.database)) {
      // Audited like the PostgreSQL engine's refusal of an unserved database.
      this.governor.record({ type: 'auth_failure', ...identityFields(identity), client_addr: this.info.clientAddr, database: this.database, reason: 'database not served', details: { engine: 'mysql' } });
      this.fatal(1044, '42000', `database "${this.database}" is not served by this Sluice gateway`);
      return;
    }
    this.identity = identity;
    this.info.identity = identity;
    this.info.database = this.database;
    try {
      const [u] = await Promise.all([
        connectMyUpstream(this.cfg.upstream, { caps: this.caps, charset: this.charset, database: this.database || undefined, attrs: { program_name: `sluice:${identity.subject}`.slice(0, 64) } }),
        this.database ? this.governor.openDatabase('mysql', this.database) : undefined,
      ]);
      if (this.isClosed()) {
        u.socket.destroy();
        return;
      }
      this.upstream = u.socket;
      this.upstreamThread = u.hello.connectionId;
      u.socket.on('data', (d: Buffer) => this.onUpstreamData(d));
      u.socket.on('error', () => this.fatal(2013, 'HY000', 'lost connection to the upstream database'));
      u.socket.on('close', () => this.fatal(2013, 'HY000', 'the upstream database closed the connection'));
      u.socket.on('drain', () => this.client.resume());
    } catch (e) {
      const err = e as MyUpstreamError;
      this.fatal(err.err?.code ?? 2003, err.err?.sqlState ?? 'HY000', `Sluice could not connect to the upstream database: ${err.err?.message ?? err.message}`);
      return;
    }
    clearTimeout(this.authTimer);
    this.phase = 'ready';
    this.registry.register(this, this.connId);
    this.scheduleExpiry();
    this.governor.record({ type: 'session_start', session_id: this.id, ...identityFields(identity), client_addr: this.info.clientAddr, client_user: this.user, application_name: this.info.applicationName, database: this.database, tls: this.info.tls, details: { engine: 'mysql' } } as never);
    this.send(okPacket({ status: STATUS.AUTOCOMMIT }));
    this.continueReading();
  }

  /** (A method, so the compiler does not narrow the phase across awaits.) */
  private isClosed(): boolean {
    return this.phase === 'closed';
  }

  private scheduleExpiry(): void {
    this.expiryTimer = expiryTimer(this.identity, () => this.terminate('the identity token expired; reconnect with a fresh token'));
  }

  /** Process client packets that arrived while we were busy. */
  private continueReading(): void {
    if (this.phase !== 'ready' || this.inflight || this.holding) return;
    try {
      this.clientFramer.push(Buffer.alloc(0), (seq, p) => this.onClientPacket(seq, p));
    } catch (e) {
      this.protocolFailure(e);
    }
  }

  // ---------------------------------------------------------------- commands

  private forward(p: Buffer, inflight: Omit<Inflight, 'outSeq' | 't0' | 'rows' | 'state' | 'colsLeft' | 'columns' | 'binary'> & Partial<Inflight>): void {
    // The answer's packets continue the numbering after anything already sent for this command (progress reports).
    this.inflight = { t0: performance.now(), rows: 0, state: 'first', colsLeft: 0, columns: [], binary: false, outSeq: this.seq, ...inflight };
    const u = this.upstream!;
    if (!u.write(frame(0, p).bytes)) this.client.pause();
  }

  private decide(sql: string): Verdict {
    const v = this.governor.check(this.identity!, this.database, sql, undefined, 'mysql');
    const a = v.analysis;
    if (v.error || !a) return v;
    // USE inside another statement, a prepared statement or EXECUTE IMMEDIATE would switch the upstream's database
    // unseen: only `USE db` on its own (or the client's use command) switches, and it is judged for that database.
    const use = a.statements.findIndex((s) => /(^|\s)USE$/.test(s.command));
    if (use >= 0) return refusal(a, use, 'not supported by Sluice: USE as part of another statement, a prepared statement or EXECUTE IMMEDIATE; send `USE db` on its own (or use your client\'s use command)');
    // `db.table` (and `db.fn()`) reach other databases: only the served ones.
    for (const [i, s] of a.statements.entries()) {
      for (const name of [...s.tables.map((t) => t.name), ...s.functions]) {
        const dot = name.indexOf('.');
        if (dot < 0) continue;
        const db = name.slice(0, dot);
        if (db.toLowerCase() !== 'information_schema' && !served(this.cfg.databases, db)) return refusal(a, i, `database "${db}" is not served by this Sluice gateway (${name})`);
      }
    }
    return v;
  }

  private onCommand(p: Buffer): void {
    const cmd = p[0];
    if ((cmd === COM.STMT_EXECUTE || cmd === COM.STMT_FETCH || cmd === COM.STMT_CLOSE || cmd === COM.STMT_SEND_LONG_DATA || cmd === COM.STMT_RESET) && p.length < 5) {
      throw new MyProtocolError('prepared-statement command without a statement id');
    }
    if (cmd === undefined) throw new MyProtocolError('empty command packet');
    switch (cmd) {
      case COM.QUIT:
        this.close('client quit');
        return;
      case COM.PING:
      case COM.STATISTICS:
      case COM.RESET_CONNECTION:
      case COM.SET_OPTION:
      case COM.STMT_RESET:
        if (cmd === COM.RESET_CONNECTION) this.stmts.clear();
        this.forward(p, { k: cmd === COM.STATISTICS ? 'statistics' : 'simple' });
        return;
      case COM.INIT_DB: {
        // The client's `use db` command: judged and audited as the statement `USE db`.
        const db = p.subarray(1).toString('utf8');
        this.useDatabase(p, db, `USE \`${db.replace(/`/g, '``')}\``);
        return;
      }
      case COM.FIELD_LIST:
        this.forward(p, { k: 'fieldlist' });
        return;
      case COM.QUERY: {
        const sql = p.subarray(1).toString('utf8');
        this.info.currentSql = sql;
        if (this.killCommand(sql)) return;
        const use = /^\s*USE\s+`?([^`;\s]+)`?\s*;?\s*$/i.exec(sql)?.[1];
        if (use !== undefined) return this.useDatabase(p, use, sql);
        const v = this.decide(sql);
        if (v.decision.action === 'require_approval') return this.hold(p, sql, v, 'mysql');
        this.runQuery(p, sql, v);
        return;
      }
      case COM.STMT_PREPARE: {
        const sql = p.subarray(1).toString('utf8');
        this.info.currentSql = sql;
        const v = this.decide(sql);
        if (v.error) {
          this.auditDenied(sql, v, 'mysql-prepared');
          this.send(myError(v.error));
          return;
        }
        this.forward(p, { k: 'prepare', sql, verdict: v });
        return;
      }
      case COM.STMT_EXECUTE: {
        const id = p.readUInt32LE(1);
        const stmt = this.stmts.get(id);
        if (!stmt) {
          this.send(errPacket(1243, 'HY000', `Unknown prepared statement handler (${id}) given to mysqld_stmt_execute (not prepared through Sluice)`));
          return;
        }
        this.info.currentSql = stmt.sql;
        // Policy is re-checked at execution: grants expire and the policy may have been reloaded since PREPARE.
        const v = this.decide(stmt.sql);
        if (v.decision.action === 'require_approval') return this.hold(p, stmt.sql, v, 'mysql-prepared', stmt);
        this.runExecute(p, stmt, v);
        return;
      }
      case COM.STMT_FETCH: {
        const stmt = this.stmts.get(p.readUInt32LE(1));
        this.forward(p, { k: 'fetch', binary: true, state: 'rows', columns: stmt?.columns ?? [], plan: stmt ? this.planFor(stmt.columns, stmt.verdict.analysis) : undefined });
        return;
      }
      case COM.STMT_SEND_LONG_DATA:
        // No answer: pass it on.
        this.upstream!.write(frame(0, p).bytes);
        return;
      case COM.STMT_CLOSE:
        this.stmts.delete(p.readUInt32LE(1));
        this.upstream!.write(frame(0, p).bytes);
        return;
      case COM.CHANGE_USER:
        this.send(errPacket(1227, '42000', 'COM_CHANGE_USER is not supported through Sluice: reconnect with the other identity'));
        return;
      default:
        this.send(errPacket(1047, '08S01', `command 0x${(cmd ?? 0).toString(16)} is not supported through Sluice`));
    }
  }

  /** The database a forwarded USE / COM_INIT_DB switches to once the upstream answers OK. */
  private pendingDb?: string;

  /**
   * `USE db` (SQL, or the client's use command): judged for the database it switches to, held for approval like
   * any statement, and tracked as the session's database when the upstream accepts it.
   */
  private useDatabase(p: Buffer, db: string, sql: string): void {
    if (!served(this.cfg.databases, db)) {
      const message = `database "${db}" is not served by this Sluice gateway`;
      this.governor.record({ type: 'statement', ...this.base(), sql, protocol: 'mysql', decision: 'deny', rule: 'database-not-served', reason: message, error_code: '1044' });
      this.send(errPacket(1044, '42000', message));
      return;
    }
    const v = this.governor.check(this.identity!, db, sql, undefined, 'mysql');
    if (v.decision.action === 'require_approval') return this.hold(p, sql, v, 'mysql', undefined, db);
    this.runQuery(p, sql, v, db);
  }

  /** `KILL [QUERY|CONNECTION] <id>` of one of this identity's own gateway connections (mysql client's Ctrl-C). */
  private killCommand(sql: string): boolean {
    const m = /^\s*KILL\s+(QUERY\s+|CONNECTION\s+)?(\d+)\s*;?\s*$/i.exec(sql);
    if (!m) return false;
    const target = this.registry.lookup('mysql', Number(m[2]));
    if (!(target instanceof MySession) || target.identity?.subject !== this.identity?.subject) {
      const message = `Unknown thread id: ${m[2]} (only your own Sluice connections can be killed)`;
      this.governor.record({ type: 'statement', ...this.base(), sql, protocol: 'mysql', decision: 'deny', rule: 'own-connection-kill', reason: message, error_code: '1094' });
      this.send(errPacket(1094, 'HY000', message));
      return true;
    }
    this.governor.record({ type: 'statement', ...this.base(), sql, protocol: 'mysql', decision: 'allow', rule: 'own-connection-kill', rows: 0, details: { target: target.id } });
    if (m[1]?.trim().toUpperCase() === 'QUERY') target.cancelFromClient();
    else target.terminate(`killed by ${this.identity!.subject}`);
    this.send(okPacket({ status: STATUS.AUTOCOMMIT }));
    return true;
  }

  private runQuery(p: Buffer, sql: string, v: Verdict, use?: string): void {
    this.info.statements++;
    if (v.error) {
      this.auditDenied(sql, v, 'mysql');
      this.send(myError(v.error));
      return;
    }
    this.pendingDb = use;
    this.forward(p, { k: 'query', sql, verdict: v, approvalId: v.approvalId });
  }

  private runExecute(p: Buffer, stmt: Stmt, v: Verdict): void {
    this.info.statements++;
    if (v.error) {
      this.auditDenied(stmt.sql, v, 'mysql-prepared');
      this.send(myError(v.error));
      return;
    }
    this.rememberParamTypes(p, stmt);
    this.forward(p, { k: 'execute', sql: stmt.sql, verdict: { ...stmt.verdict, decision: v.decision, approvalId: v.approvalId }, binary: true, approvalId: v.approvalId });
  }

  /**
   * Hold the command for approval: the client waits (MySQL has no way to show a notice mid-command; the request
   * appears in the console, the webhook and `sluice approvals list`). Approved, it runs in place.
   */
  private hold(p: Buffer, sql: string, v: Verdict, protocol: 'mysql' | 'mysql-prepared', stmt?: Stmt, use?: string): void {
    this.holding = true;
    this.client.pause();
    const abort = new AbortController();
    this.holdAbort = abort;
    const params = stmt ? this.decodeParams(p, stmt) : undefined;
    const req = { identity: this.identity!, database: this.database, sql, params: params?.values, binaryParams: params?.binary, paramFormats: params?.formats, paramTypes: params?.types, verdict: v, sessionId: this.id, engine: 'mysql' as const };
    this.governor
      .hold(req, (a, url) => {
        this.info.awaitingApproval = a.id;
        // MariaDB clients that take progress reports show this while they wait (MySQL has no notices).
        if (this.progress) this.sendProgress(`awaiting approval ${a.id}: ${url}`);
      }, abort.signal)
      .catch(
        (): Verdict => ({ analysis: v.analysis, approvalId: this.info.awaitingApproval, decision: { action: 'deny', rule: v.decision.rule, reason: 'canceled while awaiting approval' }, error: { code: '57014', message: `Query execution was interrupted while awaiting approval${this.info.awaitingApproval ? ` (request ${this.info.awaitingApproval} stays open; run the statement again to wait for it)` : ''}` } }),
      )
      .then((r) => {
        this.holding = false;
        this.holdAbort = undefined;
        this.info.awaitingApproval = undefined;
        if (this.phase !== 'ready') return;
        this.client.resume();
        if (protocol === 'mysql') this.runQuery(p, sql, r, use);
        else this.runExecute(p, stmt!, r);
        this.continueReading();
      });
  }

  /** A MariaDB progress report (an ERR packet with code 0xFFFF), part of the current command's answer. */
  private sendProgress(info: string): void {
    this.send(Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 1, 1, 1, 0, 0, 0]), lenencBuf(Buffer.from(info.slice(0, 200), 'utf8'))]));
  }

  private rememberParamTypes(p: Buffer, stmt: Stmt): void {
    if (!stmt.params) return;
    const r = new MyReader(p, 10);
    r.bytes((stmt.params + 7) >> 3);
    if (r.left && r.int1() === 1) {
      stmt.paramTypes = [];
      for (let i = 0; i < stmt.params; i++) stmt.paramTypes.push(r.int2() & 0xff);
    }
  }

  /** Bind parameters of a COM_STMT_EXECUTE as text (the approval binds them); undecodable ones as hex. */
  private decodeParams(p: Buffer, stmt: Stmt): { values: (string | null)[]; binary: boolean; formats: number[]; types: number[] } | undefined {
    if (!stmt.params) return undefined;
    try {
      const r = new MyReader(p, 10);
      const nulls = r.bytes((stmt.params + 7) >> 3);
      let types = stmt.paramTypes;
      if (r.left && r.int1() === 1) {
        types = [];
        for (let i = 0; i < stmt.params; i++) types.push(r.int2() & 0xff);
      }
      const values: (string | null)[] = [];
      const formats: number[] = [];
      let binary = false;
      for (let i = 0; i < stmt.params; i++) {
        formats.push(0);
        if (nulls[i >> 3]! & (1 << (i & 7))) {
          values.push(null);
          continue;
        }
        const t = types?.[i] ?? TYPE.VAR_STRING;
        switch (t) {
          case TYPE.TINY:
            values.push(String(r.int1()));
            break;
          case TYPE.SHORT:
          case TYPE.YEAR:
            values.push(String(r.int2()));
            break;
          case TYPE.LONG:
          case TYPE.INT24:
            values.push(String(r.bytes(4).readInt32LE()));
            break;
          case TYPE.LONGLONG:
            values.push(r.bytes(8).readBigInt64LE().toString());
            break;
          case TYPE.FLOAT:
            values.push(String(r.bytes(4).readFloatLE()));
            break;
          case TYPE.DOUBLE:
            values.push(String(r.bytes(8).readDoubleLE()));
            break;
          default: {
            if (binarySize(t) === -2) {
              values.push(`\\x${r.bytes(r.int1()).toString('hex')}`);
              formats[i] = 1;
              binary = true;
            } else values.push(r.lenencBytes()?.toString('utf8') ?? null);
          }
        }
      }
      // The approval binds the values with the types the server reads them as (the string '1' is not the integer 1).
      return { values, binary, formats, types: Array.from({ length: stmt.params }, (_, i) => types?.[i] ?? TYPE.VAR_STRING) };
    } catch {
      return { values: [`\\x${p.subarray(10).toString('hex')}`], binary: true, formats: [1], types: [] };
    }
  }

  // ---------------------------------------------------------------- upstream -> client

  private onUpstreamData(d: Buffer): void {
    try {
      this.upstreamFramer.push(d, (_seq, p) => void this.onUpstreamPacket(p));
      this.flushOut();
    } catch (e) {
      this.pendingOut = [];
      this.fatal(2027, 'HY000', `malformed packet from the upstream database: ${(e as Error).message}`);
    }
  }

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

  private flushOut(): void {
    if (!this.pendingOut.length) return;
    const chunks = this.pendingOut;
    this.pendingOut = [];
    if (this.client.destroyed || !this.auditWritten()) return;
    if (!this.client.write(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks))) this.upstream?.pause();
  }

  private finish(f: Inflight, status?: number): void {
    if (status !== undefined) this.info.txStatus = status & STATUS.IN_TRANS ? 'T' : 'I';
    if (this.pendingDb !== undefined) {
      // USE / COM_INIT_DB answered: switch only if the upstream did.
      if (!f.error) {
        this.database = this.pendingDb;
        this.info.database = this.database;
        this.baseFields = undefined;
        void this.governor.openDatabase('mysql', this.database);
      }
      this.pendingDb = undefined;
    }
    if (f.k === 'query' || f.k === 'execute') this.auditDone(f);
    this.inflight = undefined;
    this.info.currentSql = undefined;
    // The answer goes out before anything the next command writes.
    this.flushOut();
    this.continueReading();
  }

  private onUpstreamPacket(p: Buffer): void {
    const f = this.inflight;
    if (!f) return; // nothing asked (should not happen): drop
    const head = p[0];
    const deprecateEof = (this.caps & CAP.DEPRECATE_EOF) !== 0;
    switch (f.k) {
      case 'simple':
      case 'statistics':
        this.out(f, p);
        return this.finish(f, head === 0x00 ? parseOk(p).status : undefined);
      case 'fieldlist':
        this.out(f, p);
        if (head === 0xfe || head === 0xff) this.finish(f);
        return;
      case 'prepare':
        return this.onPrepareAnswer(f, p, deprecateEof);
      default:
        return this.onResultPacket(f, p, deprecateEof);
    }
  }

  private onPrepareAnswer(f: Inflight, p: Buffer, deprecateEof: boolean): void {
    this.out(f, p);
    if (!f.prep) {
      if (p[0] === 0xff) {
        f.error = parseErr(p);
        return this.finish(f);
      }
      const r = new MyReader(p, 1);
      const id = r.int4();
      const cols = r.int2();
      const params = r.int2();
      // Each non-empty section: its definitions, then an EOF unless DEPRECATE_EOF.
      const section = (n: number) => (n ? n + (deprecateEof ? 0 : 1) : 0);
      f.prep = { id, params, cols, total: section(params) + section(cols), seen: 0, columns: [] };
    } else {
      // Column definitions come after the parameter section.
      const paramSection = f.prep.total - (f.prep.cols ? f.prep.cols + (deprecateEof ? 0 : 1) : 0);
      if (f.prep.seen >= paramSection && f.prep.columns.length < f.prep.cols) f.prep.columns.push(parseColumn(p));
      f.prep.seen++;
    }
    if (f.prep.seen === f.prep.total) {
      this.stmts.set(f.prep.id, { sql: f.sql!, verdict: f.verdict!, params: f.prep.params, columns: f.prep.columns });
      this.finish(f);
    }
  }

  /** The last statement touched a column masked for this identity: its warnings (SHOW WARNINGS) can echo values. */
  private lastTainted = false;

  private planFor(columns: MyColumn[], analysis: Analysis | undefined): MaskPlan | undefined {
    const diagnostics = analysis?.statements.some((s) => /^SHOW (WARNINGS|ERRORS)/.test(s.command)) ?? false;
    return this.governor.maskPlan(this.identity!, analysis, myFields(columns), this.database, 'mysql', { taintAll: diagnostics && this.lastTainted });
  }

  /**
   * An upstream error for an identity whose results are masked: its message can echo values
   * (`Truncated incorrect DOUBLE value: '...'`); scrubbed like PostgreSQL error texts, with single-quoted values
   * hidden as well when the statement touches a masked column.
   */
  private scrubErr(f: Inflight, p: Buffer): Buffer {
    if (this.governor.maskingExempt(this.identity!)) return p;
    const tainted = !!this.governor.taint(this.identity!, f.verdict?.analysis, this.database, 'mysql');
    const e = parseErr(p);
    let message = scrubText(e.message, 'message', { tainted, detectors: this.governor.scansText(this.identity!, undefined) });
    if (tainted) message = message.replace(/'[^']*'/g, "'****'");
    return message === e.message ? p : errPacket(e.code, e.sqlState, message);
  }

  private onResultPacket(f: Inflight, p: Buffer, deprecateEof: boolean): void {
    const head = p[0];
    switch (f.state) {
      case 'first': {
        const diagnostics = f.verdict?.analysis?.statements.some((s) => /^SHOW (WARNINGS|ERRORS)/.test(s.command));
        if (!diagnostics && f.verdict?.analysis) this.lastTainted = !!this.governor.taint(this.identity!, f.verdict.analysis, this.database, 'mysql');
        if (head === 0x00 || head === 0xff) {
          this.out(f, head === 0xff ? this.scrubErr(f, p) : p);
          if (head === 0xff) {
            f.error = parseErr(p);
            return this.finish(f);
          }
          const ok = parseOk(p);
          f.rows += ok.affected;
          if (ok.status & STATUS.MORE_RESULTS_EXISTS) return;
          return this.finish(f, ok.status);
        }
        if (head === 0xfb) {
          // LOAD DATA LOCAL is not offered to the upstream; refuse defensively.
          this.out(f, errPacket(1148, '42000', 'LOAD DATA LOCAL is not allowed through Sluice'));
          return this.finish(f);
        }
        const n = new MyReader(p).lenenc() ?? 0;
        f.colsLeft = n;
        f.columns = [];
        f.state = 'cols';
        this.out(f, p);
        return;
      }
      case 'cols':
        f.columns.push(parseColumn(p));
        this.out(f, p);
        if (--f.colsLeft === 0) {
          f.plan = this.planFor(f.columns, f.verdict?.analysis);
          f.state = deprecateEof ? 'rows' : 'eof1';
        }
        return;
      case 'eof1':
        this.out(f, p);
        f.state = 'rows';
        // A cursor was opened (COM_STMT_EXECUTE with a cursor): rows come with COM_STMT_FETCH.
        if (head === 0xfe && p.length >= 5 && p.readUInt16LE(3) & 0x0040) this.finish(f, p.readUInt16LE(3));
        return;
      case 'rows': {
        if (head === 0xff) {
          this.out(f, p);
          f.error = parseErr(p);
          return this.finish(f);
        }
        if (head === 0xfe && p.length < (deprecateEof ? 0xffffff : 9)) {
          this.out(f, p);
          const status = deprecateEof ? parseOk(p).status : p.length >= 5 ? p.readUInt16LE(3) : 0;
          if (status & STATUS.MORE_RESULTS_EXISTS) {
            f.state = 'first';
            return;
          }
          return this.finish(f, status);
        }
        f.rows++;
        const masked = f.plan ? (f.binary ? this.maskBinaryRow(f, p) : this.maskTextRow(f, p)) : undefined;
        this.out(f, masked ?? p);
        return;
      }
    }
  }

  /**
   * Mask one text-protocol row. Cells are handled as offsets into the packet (only cells the byte pre-scan flags
   * are decoded) and a changed row is rebuilt in one allocation, unchanged cells copied with their length prefix.
   */
  private maskTextRow(f: Inflight, p: Buffer): Buffer | undefined {
    const plan = f.plan!;
    const n = f.columns.length;
    const starts = (this.cellStarts ??= new Int32Array(4096));
    if (n + 1 > starts.length) throw new MyProtocolError(`row of ${n} columns`);
    let changed: (string | null | undefined)[] | undefined;
    const r = new MyReader(p);
    for (let i = 0; i < n; i++) {
      starts[i] = r.pos;
      const len = r.lenenc();
      if (len === null) continue;
      const at = r.pos;
      const end = at + len;
      if (end > p.length) throw new MyProtocolError('row cell overruns the packet');
      r.pos = end;
      const action = plan.columns[i];
      if (!action || action.kind === 'pass' || (action.kind === 'scan' && !mayContainSensitive(p, at, end))) continue;
      const counts = (f.masked ??= new Map());
      let m: string | null | undefined;
      if (action.kind === 'rule' && !isTextColumn(f.columns[i]!)) {
        // A masked number or date would not parse as its type in the client: it becomes NULL (as in binary rows).
        countMasked(counts, action.label);
        m = null;
      } else m = maskValue(action, p.toString('utf8', at, end), plan.key, counts);
      if (m !== undefined) (changed ??= new Array(n))[i] = m;
    }
    starts[n] = r.pos;
    if (!changed) return undefined;
    let size = 0;
    for (let i = 0; i < n; i++) {
      const c = changed[i];
      if (c === undefined) size += starts[i + 1]! - starts[i]!;
      else if (c === null) size += 1;
      else {
        const len = Buffer.byteLength(c, 'utf8');
        size += lenencSize(len) + len;
      }
    }
    const out = Buffer.allocUnsafe(size);
    let o = 0;
    for (let i = 0; i < n; i++) {
      const c = changed[i];
      if (c === undefined) {
        o += p.copy(out, o, starts[i]!, starts[i + 1]!);
      } else if (c === null) out[o++] = 0xfb;
      else {
        const len = Buffer.byteLength(c, 'utf8');
        o += lenencInt(len).copy(out, o);
        o += out.write(c, o, 'utf8');
      }
    }
    return out;
  }

  private cellStarts?: Int32Array;

  private maskBinaryRow(f: Inflight, p: Buffer): Buffer | undefined {
    const plan = f.plan!;
    const n = f.columns.length;
    const bitmapLen = (n + 7 + 2) >> 3;
    const nulls = Buffer.from(p.subarray(1, 1 + bitmapLen));
    const r = new MyReader(p, 1 + bitmapLen);
    const cells: Buffer[] = [];
    let changed = false;
    for (let i = 0; i < n; i++) {
      const bit = i + 2;
      if (nulls[bit >> 3]! & (1 << (bit & 7))) continue;
      const col = f.columns[i]!;
      const size = binarySize(col.type);
      const start = r.pos;
      let value: Buffer | undefined;
      if (size >= 0) r.bytes(size);
      else if (size === -2) r.bytes(r.int1());
      else value = r.lenencBytes() ?? Buffer.alloc(0);
      const raw = p.subarray(start, r.pos);
      const action = plan.columns[i];
      if (!action || action.kind === 'pass') {
        cells.push(raw);
        continue;
      }
      if (value === undefined) {
        // A rule on a number or date: it cannot be rewritten in its binary form, so it becomes NULL.
        if (action.kind === 'rule') {
          nulls[bit >> 3]! |= 1 << (bit & 7);
          countMasked((f.masked ??= new Map()), action.label);
          changed = true;
        } else cells.push(raw);
        continue;
      }
      const m = maskValue(action, value.toString('utf8'), plan.key, (f.masked ??= new Map()));
      if (m === undefined) cells.push(raw);
      else if (m === null) {
        nulls[bit >> 3]! |= 1 << (bit & 7);
        changed = true;
      } else {
        cells.push(lenencBuf(Buffer.from(m, 'utf8')));
        changed = true;
      }
    }
    if (!changed) return undefined;
    return Buffer.concat([Buffer.from([0x00]), nulls, ...cells]);
  }

  // ---------------------------------------------------------------- audit

  private baseFields?: Partial<AuditEvent>;
  private base(): Partial<AuditEvent> {
    return (this.baseFields ??= { session_id: this.id, ...identityFields(this.identity!), client_addr: this.info.clientAddr, application_name: this.info.applicationName, database: this.database });
  }

  private auditDenied(sql: string, v: Verdict, protocol: 'mysql' | 'mysql-prepared'): void {
    this.governor.record({ type: 'statement', ...this.base(), sql, protocol, ...analysisFields(v.analysis), decision: 'deny', rule: v.decision.rule, reason: v.error?.message, error_code: v.error?.code, approval_id: v.approvalId });
  }

  private auditDone(f: Inflight, notCompleted?: string): void {
    const error = notCompleted ?? (f.error ? f.error.message : undefined);
    const exempt = f.rows > 0 && this.governor.maskingExempt(this.identity!) ? { masking_exempt: true } : {};
    this.governor.record({
      type: 'statement',
      ...this.base(),
      sql: f.sql,
      protocol: f.k === 'execute' ? 'mysql-prepared' : 'mysql',
      ...analysisFields(f.verdict?.analysis),
      decision: 'allow',
      rule: f.verdict?.decision.rule,
      ...(f.masked?.size ? { masked: Object.fromEntries(f.masked) } : {}),
      ...exempt,
      rows: f.rows,
      duration_ms: Math.round((performance.now() - f.t0) * 1000) / 1000,
      error,
      error_code: f.error ? String(f.error.code) : undefined,
      approval_id: f.approvalId,
    });
    if (f.approvalId) this.governor.approvals?.recordOutcome(f.approvalId, { rows: f.rows, error });
  }
}
