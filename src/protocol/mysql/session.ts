import type net from 'node:net';
import type tls from 'node:tls';
import crypto from 'node:crypto';
import { SessionMemo, type Governor, type Verdict } from '../../governor.js';
import type { Identity } from '../../identity/identity.js';
import { handshakeCharsetRefusal } from '../../analyze/guard-mysql.js';
import { CAP, COM, MARIADB_CLIENT_EXTENDED_METADATA, MARIADB_CLIENT_PROGRESS, STATUS, MyFramer, MyProtocolError, errPacket, frame, lenencBuf, okPacket, withoutNul, int4, type StateChanges } from './packets.js';
import { connectMyUpstream, greetMyUpstream, type GreetedUpstream, type MyUpstream, type MyUpstreamError, type MyUpstreamTarget, type UpstreamHello } from './upstream.js';
import { MyClient } from './client.js';
import type { Approval } from '../../approvals/store.js';
import { EngineSession, type LoginRefusal } from '../common/session.js';
import type { SessionRegistry } from '../common/registry.js';
import { handshakePacket, parseHandshakeResponse } from './handshake.js';
import { sqlDeallocate, sqlExecute, sqlPrepare } from '../../analyze/mysql-prepare.js';
import { MyResults, type Inflight, type Stmt } from './results.js';
import { KILL, myError, preparedSetting, refusal, reportedStateRefusal, savedSettingRestore, settingText, scopeRefusal, served, sessionStateRefusal, splitStatements, STATE_PROBE, TRACK_SETUP, versionNumber, type SavedSettingRestore } from './verdicts.js';
import { decodeParams, rememberParamTypes } from './params.js';
import { fullAuthPacket, PERFORM_FULL_AUTH, SHA2, switchToSha2 } from './sha2auth.js';

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

/** Capabilities the gateway can relay faithfully (no compression, no LOAD DATA LOCAL). */
const RELAYABLE =
  CAP.LONG_PASSWORD | CAP.FOUND_ROWS | CAP.LONG_FLAG | CAP.CONNECT_WITH_DB | CAP.IGNORE_SPACE | CAP.PROTOCOL_41 | CAP.INTERACTIVE | CAP.IGNORE_SIGPIPE | CAP.TRANSACTIONS |
  CAP.SECURE_CONNECTION | CAP.MULTI_STATEMENTS | CAP.MULTI_RESULTS | CAP.PS_MULTI_RESULTS | CAP.PLUGIN_AUTH | CAP.CONNECT_ATTRS | CAP.PLUGIN_AUTH_LENENC_CLIENT_DATA | CAP.DEPRECATE_EOF |
  CAP.SESSION_TRACK;

const CLEAR = 'mysql_clear_password';
/** The server's syntax errors (ER_PARSE_ERROR, ER_SYNTAX_ERROR). */
const ER_PARSE_ERROR = 1064;
const ER_SYNTAX_ERROR = 1149;

/**
 * Server connections opened for clients that have not logged in yet (so that the thread id they are shown is the
 * server's), in this process. Bounded well below a server's max_connections: clients that never log in cannot
 * take the server's connections from everyone else. Past it, a client is greeted with a thread id of the
 * gateway's own, and its server connection is opened once it has logged in.
 */
export const MAX_PREAUTH_UPSTREAM = 16;
let preAuthUpstream = 0;

/** One client connection speaking the MySQL protocol, relayed to an upstream MySQL/MariaDB under the Governor. */
export class MySession extends EngineSession<MyUpstream> {
  private phase: 'handshake' | 'auth' | 'sha2-token' | 'sha2-full' | 'connecting' | 'ready' = 'handshake';
  private clientFramer: MyFramer;
  private upstreamFramer = new MyFramer(1 << 30);
  private scramble = Buffer.from(crypto.randomBytes(20).map((b) => (b % 94) + 33)); // printable, no NUL
  private caps = 0;
  private charset = 45;
  private attrs: Record<string, string> = {};
  /** The thread id the client is told: its server connection's CONNECTION_ID() (the registry key for KILL). */
  private connId = 0;
  private upstreamThread = 0;
  /** The server connection opened for this client before its login (its id is in the handshake), until used. */
  private greeted?: GreetedUpstream;
  /** This session counts against MAX_PREAUTH_UPSTREAM (a server connection opened before its client logged in). */
  private preAuth = false;
  readonly stmts = new Map<number, Stmt>();
  private readonly results = new MyResults({
    gov: this.gov,
    identity: () => this.identity!,
    stmts: this.stmts,
    database: () => this.database,
    caps: () => this.caps,
    extendedMetadata: () => this.extendedMetadata,
    inflight: () => this.inflight,
    finish: (f, status) => this.finish(f, status),
    write: (b) => !this.client.destroyed && this.auditWritten() && this.writeClient(b),
    upstreamTracks: () => this.upstreamTracks,
    clientTracks: () => (this.caps & CAP.SESSION_TRACK) !== 0,
    stateChanged: (c) => this.stateChanged(c),
  });
  /** The upstream connection reports session-state changes (CLIENT_SESSION_TRACK, set up with TRACK_SETUP). */
  private upstreamTracks = false;
  private inflight?: Inflight;
  private seq = 0;
  /** The handshake offered MariaDB extended capabilities, and the client asked for progress reports. */
  private mariadbExt = false;
  private progress = false;
  /** The upstream's version as executable comments compare with it. */
  private readonly serverVersion: number;
  /** The client asked for TLS in the read being walked. */
  private tlsRequested = false;
  /** Column definitions carry MariaDB's extended type information (negotiated on both legs). */
  private extendedMetadata = false;

  constructor(socket: net.Socket, governor: Governor, private readonly cfg: MyEngineConfig, registry: SessionRegistry) {
    super(socket, governor, 'mysql', registry, cfg.limits.authTimeoutMs);
    this.clientFramer = new MyFramer(cfg.limits.maxPacketBytes);
    this.serverVersion = versionNumber(cfg.hello.serverVersion);
    void this.greet();
  }

  /**
   * The server connection is opened (its greeting read) before the client's handshake is sent, so the thread id
   * the client sees is the server's CONNECTION_ID(). Connections still logging in are limited by the gate and the
   * login timeout. Without a server connection, the id is the gateway's own (the login then reports why).
   */
  private async greet(): Promise<void> {
    if (preAuthUpstream < MAX_PREAUTH_UPSTREAM) {
      preAuthUpstream++;
      this.preAuth = true;
      try {
        const g = await greetMyUpstream(this.cfg.upstream);
        if (this.closed || this.registry.lookup('mysql', g.hello.connectionId)) {
          g.abandon();
          this.endPreAuth();
        } else {
          this.greeted = g;
          this.connId = g.hello.connectionId;
        }
      } catch {
        /* the login opens a connection again and reports why it cannot */
        this.endPreAuth();
      }
    }
    if (this.closed) return;
    while (this.connId === 0 || this.registry.lookup('mysql', this.connId)) this.connId = crypto.randomBytes(4).readUInt32LE() & 0x7fffffff;
    this.sendHandshake();
    // Anything the client sent before it was greeted.
    if (this.clientFramer.pending) this.onClientData(Buffer.alloc(0));
  }

  protected override close(reason: string): void {
    this.greeted?.abandon();
    this.greeted = undefined;
    this.endPreAuth();
    super.close(reason);
  }

  private endPreAuth(): void {
    if (!this.preAuth) return;
    this.preAuth = false;
    preAuthUpstream--;
  }

  /** The identity this session is logged in as (a KILL is allowed only between sessions of the same subject). */
  get subject(): string | undefined {
    return this.identity?.subject;
  }

  // ---------------------------------------------------------------- lifecycle

  private send(payload: Buffer): void {
    if (!this.auditWritten()) return;
    const f = frame(this.seq, payload);
    this.seq = f.next;
    this.writeClient(f.bytes);
  }

  private fatal(code: number, state: string, message: string): void {
    if (this.closed) return;
    if (!this.client.destroyed) this.client.end(frame(this.ready ? 0 : this.seq, errPacket(code, state, message)).bytes);
    this.close(message);
  }

  protected endWith(kind: 'terminate' | 'expired' | 'refused', message: string): void {
    if (kind === 'refused') this.fatal(1105, 'HY000', message);
    else this.fatal(1927, '70100', `Connection was killed: ${message}`);
  }

  protected loginTimedOut(): void {
    this.fatal(1158, '08S01', 'login timed out: the client did not finish authenticating in time');
  }

  protected registryKey(): number {
    return this.connId;
  }

  /** KILL QUERY from another connection of the same identity: end a held wait, or cancel the running statement. */
  cancelFromClient(): void {
    if (this.cancelHold()) return;
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

  protected endUpstream(u: net.Socket): void {
    if (this.inflight && this.upstreamThread) void this.killUpstreamQuery();
    u.end(frame(0, Buffer.from([COM.QUIT])).bytes);
  }

  protected auditUnfinished(reason: string): void {
    if (this.inflight && (this.inflight.k === 'query' || this.inflight.k === 'execute')) this.auditDone(this.inflight, `not completed: ${reason}`);
    this.inflight = undefined;
  }

  protected upstreamLost(how: 'error' | 'close'): void {
    const message = how === 'error' ? 'lost connection to the upstream database' : 'the upstream database closed the connection';
    // Between commands (wait_timeout, a KILL from elsewhere) the server just closes: so does the gateway, and the
    // client sees its connection closed as it would directly. A command waiting for its answer gets the error.
    if (this.phase === 'ready' && !this.inflight && !this.holding && !this.catalogWait) return this.close(message);
    this.fatal(2013, 'HY000', message);
  }

  // ---------------------------------------------------------------- handshake and login

  private sendHandshake(): void {
    const caps = (this.cfg.hello.caps & RELAYABLE) | (this.cfg.tlsMode !== 'disable' && this.cfg.secureContext ? CAP.SSL : 0) | CAP.PLUGIN_AUTH | CAP.SECURE_CONNECTION | CAP.PROTOCOL_41;
    // A MariaDB upstream does not set CLIENT_MYSQL: MariaDB clients then read extended capabilities from the
    // reserved bytes. The gateway offers one: progress reports, which carry the "awaiting approval" message.
    this.mariadbExt = (caps & CAP.LONG_PASSWORD) === 0;
    // Offered: progress reports (the gateway's own) and extended column metadata when the upstream has it.
    const extCaps = this.mariadbExt ? MARIADB_CLIENT_PROGRESS | (this.cfg.hello.extCaps & MARIADB_CLIENT_EXTENDED_METADATA) : 0;
    this.seq = 0;
    this.send(handshakePacket({ serverVersion: this.cfg.hello.serverVersion, connectionId: this.connId, scramble: this.scramble, caps, charset: this.charset, extCaps, plugin: CLEAR }));
    this.phase = 'auth';
  }

  protected onClientData(d: Buffer): void {
    try {
      if (this.closed) return;
      if (this.phase === 'connecting' || this.holding || this.catalogWait) return this.clientFramer.append(d);
      this.clientFramer.push(d, (seq, p) => this.onClientPacket(seq, p));
      if (this.tlsRequested) {
        this.tlsRequested = false;
        this.upgradeTls(this.cfg.secureContext, this.clientFramer.takeRest());
      }
    } catch (e) {
      this.onFailure(e);
    }
  }

  private onFailure(e: unknown): void {
    const msg = e instanceof MyProtocolError ? e.message : `internal error: ${(e as Error).message}`;
    this.protocolFailure(msg, '08S01');
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
      case 'sha2-token':
        // The client's scramble of a password hash Sluice does not have: full authentication, always.
        this.phase = 'sha2-full';
        this.send(PERFORM_FULL_AUTH);
        return;
      case 'sha2-full': {
        const r = fullAuthPacket(p, { tls: this.info.tls, scramble: this.scramble });
        if ('reply' in r) return void this.send(r.reply);
        if ('password' in r) return this.onPassword(r.password);
        const message = `Sluice could not read the password: ${r.error}`;
        this.auditLoginRefusal(message);
        this.fatal(1045, '28000', message);
        return 'stop';
      }
      case 'ready':
        if (this.inflight || this.holding || this.catalogWait) {
          // One command at a time: keep it (and what follows) until the answer is complete.
          this.seq = seq;
          return 'keep';
        }
        this.onCommand(p);
        return this.inflight !== undefined || this.holding || this.catalogWait || this.closed ? 'stop' : undefined;
      default:
        return 'keep';
    }
  }

  private onHandshakeResponse(p: Buffer): 'stop' | void {
    const h = parseHandshakeResponse(p);
    const mariadbClient = this.mariadbExt && !(h.caps & CAP.LONG_PASSWORD);
    this.progress = mariadbClient && (h.extCaps & MARIADB_CLIENT_PROGRESS) !== 0;
    this.extendedMetadata = mariadbClient && (h.extCaps & this.cfg.hello.extCaps & MARIADB_CLIENT_EXTENDED_METADATA) !== 0;
    if (h.sslRequest) {
      if (!this.cfg.secureContext || this.cfg.tlsMode === 'disable') throw new MyProtocolError('TLS was requested but is not enabled on this gateway');
      // TLS starts once this read is walked: what follows the request in it is the client's TLS handshake.
      this.tlsRequested = true;
      return 'stop';
    }
    if (this.cfg.tlsMode === 'require' && !this.info.tls) {
      this.fatal(3159, '08004', 'connections to Sluice must use TLS (ssl-mode=REQUIRED)');
      return 'stop';
    }
    this.caps = h.caps & ((this.cfg.hello.caps & RELAYABLE) | CAP.SSL | CAP.PLUGIN_AUTH | CAP.SECURE_CONNECTION | CAP.PROTOCOL_41);
    this.hello = { user: h.user, database: h.database };
    this.database = h.database;
    this.attrs = h.attrs;
    this.info.applicationName = this.attrs.program_name ?? this.attrs._client_name;
    // The client's character set decides how the server reads every statement: only ASCII-safe ones.
    const badCharset = handshakeCharsetRefusal(h.charset);
    if (badCharset) {
      this.protocolFailure(badCharset, '42000');
      this.fatal(1115, '42000', badCharset);
      return 'stop';
    }
    this.charset = h.charset;
    if (h.plugin === CLEAR && h.auth.length) return this.onPassword(withoutNul(h.auth).toString('utf8'));
    // The password is the identity token or key. A client that did not take mysql_clear_password (mysql2 without
    // enableCleartextPlugin, MySQL 8 clients) is asked for it by caching_sha2_password's full authentication
    // (sha2auth.ts): in clear inside TLS, RSA-encrypted without.
    if (h.plugin === SHA2 && h.auth.length) {
      this.phase = 'sha2-full';
      this.send(PERFORM_FULL_AUTH);
      return;
    }
    this.phase = 'sha2-token';
    this.send(switchToSha2(this.scramble));
  }

  protected override tlsStarted(): void {
    this.clientFramer = new MyFramer(this.cfg.limits.maxPacketBytes);
  }

  private onPassword(password: string): 'stop' {
    this.phase = 'connecting';
    void this.login(password);
    return 'stop';
  }

  protected serves(database: string): boolean {
    return served(this.cfg.databases, database);
  }

  protected openUpstream(identity: Identity): Promise<MyUpstream> {
    // Session tracking is always asked of a server that has it (the gateway reads the state changes it reports);
    // clients that did not ask get OK packets without them.
    const track = this.cfg.hello.caps & CAP.SESSION_TRACK;
    const o = {
      caps: this.caps | track,
      charset: this.charset,
      extCaps: this.extendedMetadata ? MARIADB_CLIENT_EXTENDED_METADATA : 0,
      database: this.database || undefined,
      attrs: { program_name: `sluice:${identity.subject}`.slice(0, 64) },
      init: track ? TRACK_SETUP : undefined,
    };
    const g = this.greeted;
    this.greeted = undefined;
    this.endPreAuth();
    if (!g) return connectMyUpstream(this.cfg.upstream, o);
    // The server may have closed the greeted connection meanwhile (its connect_timeout): then a new one (another id).
    return g.login(o).catch((e: MyUpstreamError) => (e.err ? Promise.reject(e) : connectMyUpstream(this.cfg.upstream, o)));
  }

  protected refuseLogin(r: LoginRefusal): void {
    if (r.kind === 'credential') return this.fatal(1045, '28000', `Access denied: ${r.reason}`);
    if (r.kind === 'database') return this.fatal(1044, '42000', `database "${r.database}" is not served by this Sluice gateway`);
    const err = r.error as MyUpstreamError;
    this.fatal(err.err?.code ?? 2003, err.err?.sqlState ?? 'HY000', `Sluice could not connect to the upstream database: ${err.err?.message ?? err.message}`);
  }

  /** The Governor's verdicts this session remembers (see SessionMemo). */
  private memo?: SessionMemo;

  protected accepted(up: MyUpstream): void {
    this.memo = new SessionMemo(this.identity!);
    this.upstreamThread = up.hello.connectionId;
    this.upstreamTracks = (up.caps & CAP.SESSION_TRACK) !== 0;
  }

  /**
   * The upstream session is open: before the client is told so, the server is asked how it reads statements
   * (sql_mode and the connection's character sets, from the server's defaults, init_connect, ...). Sluice parses
   * only under the state it keeps sessions in; another one ends the login with a clear error (fail closed).
   */
  protected loggedIn(): void {
    this.phase = 'ready';
    this.readState((why) => {
      if (why) {
        const message = `Sluice ended the login: ${why}`;
        this.protocolFailure(message, '42000');
        this.send(errPacket(1105, 'HY000', message));
        return this.close(message);
      }
      this.send(okPacket({ status: STATUS.AUTOCOMMIT }));
      this.continueReading();
    });
  }

  /** Ask the server for the session's state (STATE_PROBE): `then` gets why Sluice cannot go on in it, or undefined. */
  private readState(then: (why: string | undefined) => void): void {
    this.forward(Buffer.concat([Buffer.from([COM.QUERY]), Buffer.from(STATE_PROBE, 'utf8')]), {
      k: 'probe',
      onProbe: (row) => {
        if (this.closed) return;
        then(row instanceof Error ? `Sluice could not read the session's settings: ${row.message}` : sessionStateRefusal(row, { ignoreSpace: this.ignoreSpace }));
      },
    });
  }

  private get ignoreSpace(): boolean {
    return (this.caps & CAP.IGNORE_SPACE) !== 0;
  }

  /**
   * The server reported session-state changes (in an OK packet): a lexing variable in a value Sluice cannot parse
   * under, or a database this gateway does not serve, ends the session (why); a served database is the session's.
   */
  private stateChanged(c: StateChanges): string | undefined {
    for (const [name, value] of c.variables) {
      const why = reportedStateRefusal(name, value, { ignoreSpace: this.ignoreSpace });
      if (why) return `Sluice ended the session: ${why}`;
    }
    if (c.schema && c.schema !== this.database) {
      if (!served(this.cfg.databases, c.schema)) return `Sluice ended the session: the server reports the session's database is now "${c.schema}", which this Sluice gateway does not serve`;
      this.databaseChanged(c.schema);
    }
    return undefined;
  }

  /**
   * The answer's last packet waits while the session's state is read (a classic EOF said it changed without saying
   * how; COM_RESET_CONNECTION put the server's defaults back, tracking set-up included): relayed when Sluice can go
   * on in that state, replaced by an error that ends the session otherwise.
   */
  private recheckState(f: Inflight, held: { seq: number; payload: Buffer }): void {
    const reset = f.reset === true;
    const decide = (why: string | undefined) => {
      if (!why) {
        if (this.auditWritten()) this.writeClient(frame(held.seq, held.payload).bytes);
        return this.afterAnswer(f);
      }
      const message = `Sluice ended the session: ${why}`;
      this.protocolFailure(message, '42000');
      if (this.auditWritten()) this.writeClient(frame(held.seq, errPacket(1105, 'HY000', message)).bytes);
      this.close(message);
    };
    if (!reset || !this.upstreamTracks) return this.readState(decide);
    this.forward(Buffer.concat([Buffer.from([COM.QUERY]), Buffer.from(TRACK_SETUP, 'utf8')]), {
      k: 'probe',
      acceptOk: true,
      onProbe: (r) => {
        if (this.closed) return;
        if (r instanceof Error) return decide(`Sluice could not set up session tracking again: ${r.message}`);
        this.readState(decide);
      },
    });
  }

  /** Process client packets that arrived while we were busy. */
  private continueReading(): void {
    if (this.phase !== 'ready' || this.closed || this.inflight || this.holding || this.catalogWait) return;
    try {
      this.clientFramer.push(Buffer.alloc(0), (seq, p) => this.onClientPacket(seq, p));
    } catch (e) {
      this.onFailure(e);
    }
  }

  // ---------------------------------------------------------------- commands

  private forward(p: Buffer, inflight: Omit<Inflight, 'outSeq' | 't0' | 'rows' | 'state' | 'colsLeft' | 'columns' | 'binary'> & Partial<Inflight>): void {
    // The answer's packets continue the numbering after anything already sent for this command (progress reports).
    this.inflight = { t0: performance.now(), rows: 0, state: 'first', colsLeft: 0, columns: [], binary: false, outSeq: this.seq, ...inflight };
    const u = this.upstream!;
    if (!u.write(frame(0, p).bytes)) this.client.pause();
  }

  /**
   * The verdict on a text. KILL is never sent to the server (its ids are the server's, and only a session's own
   * connections may be killed): onQuery runs it; anywhere else (prepared, EXECUTE IMMEDIATE) it is refused.
   */
  private decide(sql: string, database = this.database): Verdict {
    const v = this.gov.check(this.identity!, database, sql, undefined, this.memo);
    const kill = v.analysis?.statements.findIndex((s) => /(^|\s)KILL$/.test(s.command)) ?? -1;
    if (kill >= 0) return refusal(v.analysis, kill, 'not supported by Sluice: KILL here (Sluice runs KILL [QUERY|CONNECTION] <id> of your own connections itself, as a statement of a text sent with COM_QUERY)');
    return (!v.error && v.analysis && scopeRefusal(v.analysis, this.cfg.databases)) || v;
  }

  /** Waiting for the server's routine catalog to be read again after DDL before judging a statement. */
  private catalogWait = false;

  private onCommand(p: Buffer): void {
    const cmd = p[0];
    // After DDL (here or in another session) the routine catalog is read again: what a function or view does is
    // judged from the reloaded catalog, never from the one before the DDL (which may have replaced it). A call of a
    // routine the catalog does not know waits for a read too (created behind the gateway's back).
    const text = cmd === COM.QUERY || cmd === COM.STMT_PREPARE ? p.subarray(1).toString('utf8') : cmd === COM.STMT_EXECUTE && p.length >= 5 ? this.stmts.get(p.readUInt32LE(1))?.sql : undefined;
    const reload = text === undefined ? undefined : this.gov.routinesFor(text, this.database);
    if (reload) {
      this.catalogWait = true;
      this.client.pause();
      void reload.then(() => {
        this.catalogWait = false;
        if (this.closed) return;
        this.client.resume();
        try {
          this.onCommand(p);
        } catch (e) {
          return this.onFailure(e);
        }
        this.continueReading();
      });
      return;
    }
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
        if (cmd === COM.RESET_CONNECTION) {
          this.stmts.clear();
          this.sqlPrepared.clear();
        }
        this.forward(p, { k: cmd === COM.STATISTICS ? 'statistics' : 'simple', reset: cmd === COM.RESET_CONNECTION });
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
      case COM.QUERY:
        return this.onQuery(p, p.subarray(1).toString('utf8'));
      case COM.STMT_PREPARE: {
        const sql = p.subarray(1).toString('utf8');
        this.info.currentSql = sql;
        // SET <lexing setting> = ?: preparing sets nothing; each execution is judged with the value it binds.
        const setting = preparedSetting(sql);
        const v = this.decide(setting ? settingText(setting, setting === 'sql_mode' ? '' : setting === 'collation_connection' ? 'utf8mb4_general_ci' : 'utf8mb4') : sql);
        if (v.error) {
          this.audit.denied(sql, v, 'mysql-prepared');
          this.send(myError(v.error));
          return;
        }
        this.forward(p, { k: 'prepare', sql, verdict: v });
        return;
      }
      case COM.STMT_EXECUTE:
        return this.onExecute(p);
      case COM.STMT_FETCH: {
        const stmt = this.stmts.get(p.readUInt32LE(1));
        this.forward(p, { k: 'fetch', binary: true, state: 'rows', columns: stmt?.columns ?? [], plan: stmt ? this.results.planFor(stmt.columns, stmt.verdict.analysis) : undefined });
        return;
      }
      case COM.STMT_SEND_LONG_DATA:
        this.longData.add(p.readUInt32LE(1));
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

  private onQuery(p: Buffer, sql: string): void {
    this.info.currentSql = sql;
    if (this.killCommand(sql)) return;
    const restore = savedSettingRestore(sql, this.serverVersion);
    if (restore) return this.probeSavedSetting(p, sql, restore);
    const use = /^\s*USE\s+`?([^`;\s]+)`?\s*;?\s*$/i.exec(sql)?.[1];
    if (use !== undefined) return this.useDatabase(p, use, sql);
    const exec = sqlExecute(sql);
    const prepared = exec && this.sqlPrepared.get(exec.name);
    if (exec && prepared) return this.executeSqlPrepared(p, sql, exec.using, prepared);
    const v = this.decide(sql);
    if (v.failure && !v.failure.error.startsWith('not supported by Sluice')) return this.unparsable(p, sql, v);
    const kills = v.analysis?.statements.filter((s) => s.command === 'KILL').length ?? 0;
    if (kills) return this.killScript(sql, v.analysis!.statements.length);
    if (v.decision.action === 'require_approval') return this.hold(p, sql, v, 'mysql');
    this.runQuery(p, sql, v);
  }

  /**
   * A text Sluice's parser cannot read is refused; the server is asked whether it can read it, by preparing it
   * (COM_STMT_PREPARE parses and never runs anything; the statement is closed again): when it cannot either, the
   * client gets the server's own syntax error, as directly; when it can, Sluice's refusal. (A text of several
   * statements does not prepare: nothing of it runs, where directly the statements before the error would.)
   */
  private unparsable(p: Buffer, sql: string, v: Verdict): void {
    this.forward(Buffer.concat([Buffer.from([COM.STMT_PREPARE]), p.subarray(1)]), {
      k: 'probe',
      onPrepared: (r) => {
        if (this.closed) return;
        this.info.statements++;
        this.audit.denied(sql, v, 'mysql');
        if ('id' in r) this.upstream!.write(frame(0, Buffer.concat([Buffer.from([COM.STMT_CLOSE]), int4(r.id)])).bytes);
        const code = 'error' in r ? r.error.readUInt16LE(1) : 0;
        this.send(code === ER_PARSE_ERROR || code === ER_SYNTAX_ERROR ? (r as { error: Buffer }).error : myError(v.error!));
        this.continueReading();
      },
    });
  }

  private onExecute(p: Buffer): void {
    const id = p.readUInt32LE(1);
    const stmt = this.stmts.get(id);
    if (!stmt) {
      this.send(errPacket(1243, 'HY000', `Unknown prepared statement handler (${id}) given to mysqld_stmt_execute (not prepared through Sluice)`));
      return;
    }
    this.info.currentSql = stmt.sql;
    // Policy is re-checked at execution: grants expire and the policy may have been reloaded since PREPARE.
    const longData = this.longData.delete(id);
    const setting = preparedSetting(stmt.sql);
    const v = setting ? this.decideBound(p, stmt, setting, longData) : this.decide(stmt.sql);
    if (v.decision.action === 'require_approval') return this.hold(p, stmt.sql, v, 'mysql-prepared', stmt);
    this.runExecute(p, stmt, v);
  }

  /** Statements that were sent long data (COM_STMT_SEND_LONG_DATA) since their last execution. */
  private readonly longData = new Set<number>();

  /** An execution of a prepared `SET <lexing setting> = ?`: judged as the constant it binds, or refused when Sluice cannot read that. */
  private decideBound(p: Buffer, stmt: Stmt, setting: string, longData: boolean): Verdict {
    const params = longData ? undefined : decodeParams(p, stmt);
    const value = params && !params.binary ? params.values[0] : undefined;
    if (value === undefined || value === null) return refusal(undefined, undefined, `${setting} is bound to a value Sluice cannot read as text (NULL, binary, or sent as long data)`);
    return this.decide(settingText(setting, value));
  }

  /**
   * `SET <lexing setting> = @saved` (how dump files put a setting back): the statement alone cannot say what the
   * server will be set to, so the session asks its upstream for the variable's value first (nothing else runs on
   * the session in between) and judges the statement as the constant assignment it is. Refused like any unsafe
   * setting when the value is one Sluice cannot parse under.
   */
  private probeSavedSetting(p: Buffer, sql: string, r: SavedSettingRestore): void {
    const query = Buffer.concat([Buffer.from([COM.QUERY]), Buffer.from(`SELECT @\`${r.variable.replace(/`/g, '``')}\``, 'utf8')]);
    this.forward(query, {
      k: 'probe',
      onProbe: (row) => {
        if (this.closed) return;
        const value = row instanceof Error ? row : row[0]!;
        const judged = value instanceof Error || value === null ? undefined : settingText(r.setting, value);
        const v = judged ? this.decide(judged) : refusal(undefined, undefined, `${r.setting} is set from @${r.variable}, which ${value instanceof Error ? `could not be read (${value.message})` : 'is NULL'}`);
        if (v.decision.action === 'require_approval') this.hold(p, sql, v, 'mysql');
        else this.runQuery(p, sql, v);
        this.continueReading();
      },
    });
  }

  /** The database a forwarded USE / COM_INIT_DB switches to once the upstream answers OK. */
  private pendingDb?: string;

  /** SQL-level prepared statements of this session (PREPARE name FROM '<text>'), by lower-case name. */
  private readonly sqlPrepared = new Map<string, { text: string; database: string }>();
  /** A forwarded PREPARE, recorded once the server answers OK. */
  private pendingPrepare?: { name: string; text: string; database: string };

  /**
   * `EXECUTE name` of a statement prepared through Sluice: judged as the statement it runs, in the database it was
   * prepared in (where the server resolves its names), held for approval with that text. USING variables are not
   * bound to an approval, so a statement that needs one is refused with them.
   */
  private executeSqlPrepared(p: Buffer, sql: string, using: boolean, prepared: { text: string; database: string }): void {
    const v = this.decide(prepared.text, prepared.database);
    if (v.decision.action !== 'require_approval') return this.runQuery(p, sql, v);
    if (!using) return this.hold(p, prepared.text, v, 'mysql');
    this.runQuery(p, sql, refusal(v.analysis, undefined, 'not supported by Sluice: EXECUTE ... USING of a statement that needs approval (the variables\' values are not part of what is approved); PREPARE it with its values'));
  }

  /**
   * What a statement about to run does to the session's SQL-level prepared statements: PREPARE replaces the name
   * (the server drops the old one even when the new one fails), DEALLOCATE drops it, and CALL forgets them all (a
   * procedure can PREPARE names Sluice does not see; EXECUTE of them is then refused until prepared again here).
   */
  private noteSqlPrepared(sql: string, v: Verdict): void {
    const st = v.analysis?.statements ?? [];
    if (st.some((s) => /(^|\s)CALL$/.test(s.command))) this.sqlPrepared.clear();
    const d = sqlDeallocate(sql);
    if (d !== undefined) this.sqlPrepared.delete(d);
    if (st.length !== 1 || !st[0]!.command.startsWith('PREPARE ')) return;
    const pr = sqlPrepare(sql);
    if (!pr || 'refuse' in pr) return;
    this.sqlPrepared.delete(pr.name);
    this.pendingPrepare = { ...pr, database: this.database };
  }

  /**
   * `USE db` (SQL, or the client's use command): judged for the database it switches to, held for approval like
   * any statement, and tracked as the session's database when the upstream accepts it.
   */
  private useDatabase(p: Buffer, db: string, sql: string): void {
    if (!served(this.cfg.databases, db)) {
      const message = `database "${db}" is not served by this Sluice gateway`;
      this.audit.engineDecision(sql, 'mysql', 'deny', 'database-not-served', { reason: message, errorCode: '1044' });
      this.send(errPacket(1044, '42000', message));
      return;
    }
    const v = this.gov.check(this.identity!, db, sql, undefined, this.memo);
    if (v.decision.action === 'require_approval') return this.hold(p, sql, v, 'mysql', undefined, db);
    this.runQuery(p, sql, v, db);
  }

  /** `KILL [QUERY|CONNECTION] <id>` of one of this identity's own gateway connections (mysql client's Ctrl-C). */
  private killCommand(sql: string): boolean {
    const m = KILL.exec(sql);
    if (!m) return false;
    this.send(this.kill(sql, m));
    return true;
  }

  /**
   * Run one KILL: the id is a thread id a client of this gateway was given, and only a session of the same
   * identity may be killed (never a server connection by its id: the text never reaches the server). The answer.
   */
  private kill(sql: string, m: RegExpExecArray): Buffer {
    const target = this.registry.lookup('mysql', Number(m[2]));
    if (!(target instanceof MySession) || target.subject !== this.identity?.subject) {
      const message = `Unknown thread id: ${m[2]} (only your own Sluice connections can be killed)`;
      this.audit.engineDecision(sql, 'mysql', 'deny', 'own-connection-kill', { reason: message, errorCode: '1094' });
      return errPacket(1094, 'HY000', message);
    }
    this.audit.engineDecision(sql, 'mysql', 'allow', 'own-connection-kill', { details: { target: target.id } });
    if (m[1]?.trim().toUpperCase() === 'QUERY') target.cancelFromClient();
    else target.terminate(`killed by ${this.identity!.subject}`);
    return okPacket({ status: STATUS.AUTOCOMMIT });
  }

  /** The statements of a multi-statement text that has KILLs in it, run one by one (KILLs by the gateway). */
  private script?: { pieces: { sql: string; kill?: RegExpExecArray }[]; next: number; seq: number };

  /**
   * A text with KILL among several statements: each statement is judged as it would be alone (the KILLs by the
   * gateway's own-connection rule, the others by policy, together, before anything runs), then they run in order,
   * one answer each, as the server would answer the text; the first error ends the run. Refused when the text cannot
   * be split into statements with certainty (executable comments) or a KILL is not of the form Sluice runs.
   */
  private killScript(sql: string, statements: number): void {
    const pieces = splitStatements(sql);
    const refuse = (why: string) => {
      const v = refusal(undefined, undefined, why);
      this.audit.denied(sql, v, 'mysql');
      this.send(myError(v.error!));
    };
    if (!pieces || pieces.length !== statements) return refuse('not supported by Sluice: this text with KILL (Sluice runs KILL [QUERY|CONNECTION] <id> itself, and here could not split the text into its statements with certainty; send the KILL on its own)');
    const parts = pieces.map((text) => ({ sql: text, kill: KILL.exec(text) ?? undefined }));
    if (statements < 2 || parts.every((x) => !x.kill)) return refuse('not supported by Sluice: this form of KILL (only KILL [QUERY|CONNECTION] <id> of your own Sluice connections)');
    const rest = parts.filter((x) => !x.kill).map((x) => x.sql);
    if (rest.length) {
      const v = this.decide(rest.join(';\n'));
      if (v.error || v.decision.action !== 'allow') {
        const denied = v.error ? v : refusal(v.analysis, undefined, 'not supported by Sluice: statements that need approval in one text with KILL; send them separately');
        this.audit.denied(sql, denied, 'mysql');
        this.send(myError(denied.error!));
        return;
      }
    }
    this.info.statements++;
    this.script = { pieces: parts, next: 0, seq: this.seq };
    this.nextPiece();
  }

  private nextPiece(): void {
    const s = this.script!;
    const piece = s.pieces[s.next++]!;
    const last = s.next === s.pieces.length;
    if (piece.kill) {
      const answer = this.kill(piece.sql, piece.kill);
      const ok = answer[0] === 0x00;
      if (this.closed) return;
      this.seq = s.seq;
      this.send(ok && !last ? okPacket({ status: STATUS.AUTOCOMMIT | STATUS.MORE_RESULTS_EXISTS }) : answer);
      s.seq = this.seq;
      if (ok && !last) return this.nextPiece();
      this.script = undefined;
      return this.continueReading();
    }
    // Masking and audit follow the statement's own analysis (policy allowed the statements together).
    const v = this.decide(piece.sql);
    this.noteSqlPrepared(piece.sql, v);
    this.forward(Buffer.concat([Buffer.from([COM.QUERY]), Buffer.from(piece.sql, 'utf8')]), { k: 'query', sql: piece.sql, verdict: v, more: !last, outSeq: s.seq });
  }

  private runQuery(p: Buffer, sql: string, v: Verdict, use?: string): void {
    this.info.statements++;
    if (v.error) {
      this.audit.denied(sql, v, 'mysql');
      this.send(myError(v.error));
      return;
    }
    this.pendingDb = use;
    this.noteSqlPrepared(sql, v);
    this.forward(p, { k: 'query', sql, verdict: v, approvalId: v.approvalId });
  }

  private runExecute(p: Buffer, stmt: Stmt, v: Verdict): void {
    this.info.statements++;
    if (v.error) {
      this.audit.denied(stmt.sql, v, 'mysql-prepared');
      this.send(myError(v.error));
      return;
    }
    rememberParamTypes(p, stmt);
    this.forward(p, { k: 'execute', sql: stmt.sql, verdict: { ...stmt.verdict, decision: v.decision, approvalId: v.approvalId }, binary: true, approvalId: v.approvalId });
  }

  /**
   * Hold the command for approval: the client waits (MySQL has no way to show a notice mid-command; the request
   * appears in the console, the webhook and `sluice approvals list`). Approved, it runs in place.
   */
  private hold(p: Buffer, sql: string, v: Verdict, protocol: 'mysql' | 'mysql-prepared', stmt?: Stmt, use?: string): void {
    const params = stmt ? decodeParams(p, stmt) : undefined;
    const req = { sql, params: params?.values, binaryParams: params?.binary, paramFormats: params?.formats, paramTypes: params?.types, verdict: v };
    // MariaDB clients that take progress reports show this while they wait (MySQL has no notices).
    const notify = (a: Approval, url: string) => this.progress && this.sendProgress(`awaiting approval ${a.id}: ${url}`);
    const canceled = (id: string | undefined): Verdict => ({ analysis: v.analysis, approvalId: id, decision: { action: 'deny', rule: v.decision.rule, reason: 'canceled while awaiting approval' }, error: { code: '57014', message: `Query execution was interrupted while awaiting approval${id ? ` (request ${id} stays open; run the statement again to wait for it)` : ''}` } });
    this.holdFor(req, notify, canceled, (r) => {
      if (protocol === 'mysql') this.runQuery(p, sql, r, use);
      else this.runExecute(p, stmt!, r);
      this.continueReading();
    });
  }

  /** A MariaDB progress report (an ERR packet with code 0xFFFF), part of the current command's answer. */
  private sendProgress(info: string): void {
    this.send(Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 1, 1, 1, 0, 0, 0]), lenencBuf(Buffer.from(info.slice(0, 200), 'utf8'))]));
  }

  // ---------------------------------------------------------------- upstream -> client

  protected onUpstreamData(d: Buffer): void {
    try {
      this.upstreamFramer.push(d, (_seq, p) => void this.results.onUpstreamPacket(p));
      this.results.flushOut();
    } catch (e) {
      this.results.discard();
      this.fatal(2027, 'HY000', `malformed packet from the upstream database: ${(e as Error).message}`);
    }
  }

  private finish(f: Inflight, status?: number): void {
    if (status !== undefined) this.info.txStatus = status & STATUS.IN_TRANS ? 'T' : 'I';
    if (this.pendingDb !== undefined) {
      // USE / COM_INIT_DB answered: switch only if the upstream did (its schema report may have switched already).
      if (!f.error && !f.endSession && this.pendingDb !== this.database) this.databaseChanged(this.pendingDb);
      this.pendingDb = undefined;
    }
    if (this.pendingPrepare) {
      if (!f.error && !f.endSession) this.sqlPrepared.set(this.pendingPrepare.name, { text: this.pendingPrepare.text, database: this.pendingPrepare.database });
      this.pendingPrepare = undefined;
    }
    if (f.k === 'query' || f.k === 'execute') this.auditDone(f);
    this.inflight = undefined;
    // A probe's command goes on in its callback: nothing is answered or read before it.
    if (f.k === 'probe') return;
    this.info.currentSql = undefined;
    // The answer goes out before anything the next command writes.
    this.results.flushOut();
    if (f.endSession) {
      // The answer ended with the error saying why; what may still run of a multi-statement text is stopped.
      if (this.upstreamThread) void this.killUpstreamQuery();
      this.protocolFailure(f.endSession, '42000');
      return this.close(f.endSession);
    }
    if (f.held) return this.recheckState(f, f.held);
    this.afterAnswer(f);
  }

  /** An answer is complete: the next statement of a text with KILLs (unless this one failed: the server would stop there too), or the next command. */
  private afterAnswer(f: Inflight): void {
    if (this.script) {
      if (f.more && !f.error) {
        this.script.seq = f.outSeq;
        return this.nextPiece();
      }
      this.script = undefined;
    }
    this.continueReading();
  }

  // ---------------------------------------------------------------- audit

  private auditDone(f: Inflight, notCompleted?: string): void {
    const error = notCompleted !== undefined ? { message: notCompleted } : f.error ? { message: f.error.message, code: f.error.code } : undefined;
    this.audit.ran({ sql: f.sql, protocol: f.k === 'execute' ? 'mysql-prepared' : 'mysql', analysis: f.verdict?.analysis, rule: f.verdict?.decision.rule, masked: f.masked, rows: f.rows, t0: f.t0, error, approvalId: f.approvalId });
  }
}
