import type net from 'node:net';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import crypto from 'node:crypto';
import type { Governor, EngineGovernor, HoldRequest, Verdict } from '../../governor.js';
import { identityFields } from '../../audit/fields.js';
import type { AuditEvent } from '../../audit/audit.js';
import { AuthError, type Identity } from '../../identity/identity.js';
import { addressOf, authFailureFields } from '../../identity/throttle.js';
import type { Approval } from '../../approvals/store.js';
import type { Engine } from '../../util/engine.js';
import { engineDetails, sessionEndEvent, sessionFields, StatementAudit } from './audit.js';
import type { LiveSession, SessionInfo, SessionRegistry } from './registry.js';

/** What an engine's upstream login hands to the common session. */
export interface UpstreamLogin {
  socket: net.Socket;
}

/** Why a login did not complete, for the engine to answer in its own protocol. */
export type LoginRefusal = { kind: 'credential'; reason: string } | { kind: 'database'; database: string } | { kind: 'upstream'; error: unknown };

/** What the client said about itself while logging in (audited with the login's outcome). */
export interface ClientHello {
  user: string;
  database: string;
}

/** Sessions whose client writes this event-loop turn holds back until the turn's audit events are in the spool. */
const heldThisTurn = new Set<EngineSession>();
let releaseScheduled = false;

/**
 * End of the turn: one spool write for every session the turn answered (not one system call each), then their
 * client writes go out; a session whose events could not be written gets nothing and is closed.
 */
function releaseTurn(): void {
  releaseScheduled = false;
  const sessions = [...heldThisTurn];
  heldThisTurn.clear();
  const flushed = new Map<EngineGovernor, boolean>();
  for (const s of sessions) s.releaseClientWrites(flushed);
}

/**
 * The engine-independent life of a client session: the client socket (attach, TLS upgrade, backpressure), the
 * login through the Governor (credential, served database, upstream login, registry, expiry, audit), holds for
 * approval, and the close. An engine subclass supplies its wire protocol through the abstract methods.
 */
export abstract class EngineSession<U extends UpstreamLogin = UpstreamLogin> implements LiveSession {
  readonly id = crypto.randomUUID();
  readonly info: SessionInfo;
  protected readonly gov: EngineGovernor;
  protected client: net.Socket;
  protected upstream?: net.Socket;
  protected identity?: Identity;
  protected database = '';
  protected hello: ClientHello = { user: '', database: '' };
  /** Reading is stopped while a statement is held for approval. */
  protected holding = false;
  /** Set once the upstream login completed and the session is registered. */
  protected ready = false;
  protected closed = false;
  protected closeReason = '';
  /** The statement audit of this session (once logged in). */
  protected audit!: StatementAudit;
  private holdAbort?: AbortController;
  private authTimer?: NodeJS.Timeout;
  private expiryTimer?: NodeJS.Timeout;

  constructor(
    socket: net.Socket,
    governor: Governor,
    readonly engine: Engine,
    protected readonly registry: SessionRegistry,
    authTimeoutMs: number,
  ) {
    this.gov = governor.for(engine);
    this.client = socket;
    this.info = { id: this.id, clientAddr: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`, startedAt: new Date(), tls: false, statements: 0, txStatus: 'I', engine };
    socket.setNoDelay(true);
    this.attachClient(socket);
    this.authTimer = setTimeout(() => this.loginTimedOut(), authTimeoutMs);
    this.authTimer.unref();
  }

  // ---------------------------------------------------------------- what an engine supplies

  protected abstract onClientData(d: Buffer): void;
  protected abstract onUpstreamData(d: Buffer): void;
  /** The registry key of this session in its engine's key space (cancel key, connection id). */
  protected abstract registryKey(): number;
  /** Log in to the upstream database as the gateway. */
  protected abstract openUpstream(identity: Identity): Promise<U>;
  /** The upstream login is accepted: set up what the session needs before it is registered. */
  protected abstract accepted(up: U): void;
  /** The upstream session is open and the client is logged in: tell the client, relay what is buffered. */
  protected abstract loggedIn(up: U): void;
  /**
   * End the session with the engine's fatal error: an operator or the client's own KILL ended it (`terminate`),
   * its credential expired (`expired`), or Sluice cannot judge statements in it (`refused`).
   */
  protected abstract endWith(kind: 'terminate' | 'expired' | 'refused', message: string): void;
  /** Answer a login that did not complete (and end the session). */
  protected abstract refuseLogin(r: LoginRefusal): void;
  /** Whether this engine serves a database. */
  protected abstract serves(database: string): boolean;
  /** Close the upstream session (cancelling anything still running there), or hand it back to a pool: true if kept. */
  protected abstract endUpstream(u: net.Socket): boolean | void;
  /** Audit what was sent upstream and not answered before the session ended. */
  protected abstract auditUnfinished(reason: string): void;
  /** The upstream connection failed or closed. */
  protected abstract upstreamLost(how: 'error' | 'close'): void;
  /** The login did not complete in time. */
  protected abstract loginTimedOut(): void;

  /** Read the database's catalogs at login; the login waits for what this returns (PostgreSQL: nothing). */
  protected openCatalogs(): Promise<void> | undefined {
    return this.gov.openDatabase(this.database);
  }
  /** An upstream session just opened is not usable (the PostgreSQL engine checks the lexing state): why. */
  protected unusableUpstream(_up: U): string | undefined {
    return undefined;
  }
  /** The client socket changed to TLS (an engine resets its framing here). */
  protected tlsStarted(): void {}

  // ---------------------------------------------------------------- client socket

  protected attachClient(s: net.Socket): void {
    s.on('data', (d: Buffer) => this.onClientData(d));
    s.on('error', () => this.close('client connection error'));
    s.on('close', () => this.close('client disconnected'));
    s.on('drain', () => this.upstream?.resume());
  }

  /**
   * Switch the client connection to TLS (after the engine's SSL request). `early`: bytes already read after the
   * request, which belong to the TLS handshake (a MySQL client may send its ClientHello in the same segment).
   */
  protected upgradeTls(secureContext: tls.SecureContext | undefined, early?: Buffer): void {
    const raw = this.client;
    raw.removeAllListeners('data');
    raw.removeAllListeners('error');
    raw.removeAllListeners('close');
    raw.removeAllListeners('drain');
    raw.on('error', () => this.close('client connection error'));
    const s = new tls.TLSSocket(early?.length ? withEarlyBytes(raw, early) : raw, { isServer: true, secureContext });
    this.client = s;
    this.info.tls = true;
    this.tlsStarted();
    this.attachClient(s);
  }

  /** Write to the client; a client that reads slowly pauses the upstream. */
  protected writeClient(b: Buffer): void {
    if (this.client.destroyed || this.closed) return;
    if (!this.client.write(b)) this.upstream?.pause();
  }

  /** Write to the upstream; an upstream that reads slowly pauses the client. */
  protected writeUpstream(b: Buffer): void {
    const u = this.upstream;
    if (!u || u.destroyed) return;
    if (!u.write(b)) this.client.pause();
  }

  private holdingWrites = false;

  /**
   * Hold this turn's client writes back (corked) until the end of the turn, when the audit events of what they
   * complete have reached the spool in one write for all sessions (see releaseTurn).
   */
  protected holdClientWrites(): void {
    if (this.holdingWrites) return;
    this.holdingWrites = true;
    this.client.cork();
    heldThisTurn.add(this);
    if (!releaseScheduled) {
      releaseScheduled = true;
      setImmediate(releaseTurn);
    }
  }

  /** (For releaseTurn.) `flushed` remembers each governor's spool write of this turn. */
  releaseClientWrites(flushed: Map<EngineGovernor, boolean>): void {
    this.holdingWrites = false;
    let ok = flushed.get(this.gov);
    if (ok === undefined) flushed.set(this.gov, (ok = this.gov.flushAudit()));
    if (ok) this.client.uncork();
    else if (!this.client.destroyed) this.unrecorded();
  }

  /** The audit events of what is about to be answered reach the spool first; if they cannot, the client gets nothing. */
  protected auditWritten(): boolean {
    if (this.gov.flushAudit()) return true;
    this.unrecorded();
    return false;
  }

  /** What was to be answered could not be recorded: the client gets nothing more, and the session ends. */
  private unrecorded(): void {
    this.client.destroy();
    this.close('the audit spool cannot be written');
  }

  /** (A method, so the compiler does not narrow `closed` across awaits.) */
  protected isClosed(): boolean {
    return this.closed;
  }

  /** Ask the session to end (admin terminate, shutdown, KILL). */
  terminate(reason: string): void {
    this.endWith('terminate', reason);
  }

  abstract cancelFromClient(secret?: number): void;

  protected close(reason: string): void {
    if (this.closed) return;
    const wasReady = this.ready;
    this.closed = true;
    this.ready = false;
    this.closeReason ||= reason;
    clearTimeout(this.authTimer);
    clearTimeout(this.expiryTimer);
    this.holdAbort?.abort();
    const u = this.upstream;
    if (u && !u.destroyed && !this.endUpstream(u)) setTimeout(() => u.destroy(), 2000).unref();
    this.auditUnfinished(this.closeReason);
    if (!this.client.destroyed) this.client.end();
    setTimeout(() => this.client.destroy(), 2000).unref();
    if (wasReady) {
      this.registry.unregister(this, this.registryKey());
      this.gov.record(sessionEndEvent(this.info, this.identity!, this.database, this.closeReason));
    }
  }

  /** A malformed message from the client (or a failure handling it): audited, then the engine's fatal error. */
  protected protocolFailure(message: string, code: string): void {
    this.gov.record({ type: 'protocol_error', session_id: this.id, ...(this.identity ? identityFields(this.identity) : {}), client_addr: this.info.clientAddr, error: message, error_code: code, details: engineDetails(this.engine) });
  }

  // ---------------------------------------------------------------- login

  /** A login refused before the credential was checked (startup rules): audited as an authentication failure. */
  protected auditLoginRefusal(reason: string, extra: Partial<AuditEvent> = {}): void {
    this.gov.record({ type: 'auth_failure', client_addr: this.info.clientAddr, client_user: this.hello.user, database: this.hello.database, application_name: this.info.applicationName, reason, details: engineDetails(this.engine), ...extra });
  }

  /**
   * The client presented its password (an OIDC token or a Sluice key): check it, check the database is served,
   * log in upstream and open the database's catalogs, register the session, and hand over to the engine.
   */
  protected async login(password: string): Promise<void> {
    let identity: Identity;
    try {
      identity = await this.gov.authenticate(password, addressOf(this.info.clientAddr));
    } catch (e) {
      const reason = e instanceof AuthError ? e.message : `authentication error: ${(e as Error).message}`;
      const f = authFailureFields(e, reason);
      this.auditLoginRefusal(f.reason, { tls: this.info.tls, details: { ...engineDetails(this.engine), ...f.details } });
      return this.refuseLogin({ kind: 'credential', reason });
    }
    if (this.isClosed()) return;
    if (this.database && !this.serves(this.database)) {
      this.gov.record({ type: 'auth_failure', ...identityFields(identity), client_addr: this.info.clientAddr, database: this.database, reason: 'database not served', details: engineDetails(this.engine) });
      return this.refuseLogin({ kind: 'database', database: this.database });
    }
    let up: U;
    try {
      // The database's views and functions are read alongside, so statements can be judged from the first one.
      [up] = await Promise.all([this.openUpstream(identity), this.database ? this.openCatalogs() : undefined]);
    } catch (e) {
      return this.refuseLogin({ kind: 'upstream', error: e });
    }
    if (this.isClosed()) {
      up.socket.destroy();
      return;
    }
    const unusable = this.unusableUpstream(up);
    if (unusable) {
      up.socket.destroy();
      return this.endWith('refused', unusable);
    }
    this.start(identity, up);
  }

  private start(identity: Identity, up: U): void {
    clearTimeout(this.authTimer);
    this.upstream = up.socket;
    this.identity = identity;
    this.info.identity = identity;
    this.info.database = this.database;
    this.audit = new StatementAudit(this.gov, identity, () => (this.baseFields ??= sessionFields(this.info, identity, this.database)));
    this.accepted(up);
    this.ready = true;
    this.registry.register(this, this.registryKey());
    this.expiryTimer = expiryTimer(identity, () => this.endWith('expired', 'the identity token for this session has expired; reconnect with a fresh token'));
    this.gov.record({ type: 'session_start', session_id: this.id, ...identityFields(identity), client_addr: this.info.clientAddr, client_user: this.hello.user, application_name: this.info.applicationName, database: this.database, tls: this.info.tls, details: engineDetails(this.engine) });
    up.socket.on('data', (d: Buffer) => this.onUpstreamData(d));
    up.socket.on('error', () => this.upstreamLost('error'));
    up.socket.on('close', () => this.upstreamLost('close'));
    up.socket.on('drain', () => this.client.resume());
    this.loggedIn(up);
  }

  private baseFields?: Partial<AuditEvent>;
  /** The session's database changed (MySQL USE): statement events name the new one. */
  protected databaseChanged(database: string): void {
    this.database = database;
    this.info.database = database;
    this.baseFields = undefined;
    void this.gov.openDatabase(database);
  }

  // ---------------------------------------------------------------- holds for approval

  /**
   * Hold a statement for approval: reading stops (what the client sends meanwhile stays buffered), `notify` tells
   * the client where to get it approved, and once decided `done` gets the outcome (approved, denied, timed out, or
   * `canceled` when the client cancelled the wait; the request then stays open).
   */
  protected holdFor(req: Omit<HoldRequest, 'identity' | 'database' | 'sessionId' | 'engine'>, notify: (a: Approval, url: string) => void, canceled: (approvalId: string | undefined) => Verdict, done: (v: Verdict) => void): void {
    this.holding = true;
    this.client.pause();
    const abort = new AbortController();
    this.holdAbort = abort;
    this.gov
      .hold({ ...req, identity: this.identity!, database: this.database, sessionId: this.id }, (a, url) => {
        this.info.awaitingApproval = a.id;
        notify(a, url);
      }, abort.signal)
      .catch(() => canceled(this.info.awaitingApproval))
      .then((v) => {
        this.holding = false;
        this.holdAbort = undefined;
        this.info.awaitingApproval = undefined;
        if (!this.ready) return;
        this.client.resume();
        done(v);
      });
  }

  /** A cancel while held ends the wait (the request stays open); true if there was one. */
  protected cancelHold(): boolean {
    if (!this.holding) return false;
    this.holdAbort?.abort();
    return true;
  }
}

/** A timer that ends a session when its identity's credential expires (none when it never does, or not for weeks). */
export function expiryTimer(identity: Identity | undefined, onExpire: () => void): NodeJS.Timeout | undefined {
  const exp = identity?.expiresAt;
  if (!exp) return undefined;
  const ms = exp * 1000 - Date.now();
  if (ms > 2 ** 31 - 1) return undefined;
  const t = setTimeout(onExpire, Math.max(ms, 0));
  t.unref();
  return t;
}

/**
 * A stream over a socket that first yields bytes already read from it. TLS over a net.Socket reads the socket's
 * handle directly, so bytes the gateway has already taken off the socket would never reach it.
 */
function withEarlyBytes(raw: net.Socket, early: Buffer): net.Socket {
  const d = new Duplex({
    read: () => void raw.resume(),
    write: (chunk: Buffer, _enc, cb) => void raw.write(chunk, cb),
    final: (cb) => void raw.end(cb),
    destroy: (err, cb) => {
      raw.destroy(err ?? undefined);
      cb(err);
    },
  });
  d.push(early);
  raw.on('data', (b: Buffer) => {
    if (!d.push(b)) raw.pause();
  });
  raw.on('end', () => d.push(null));
  raw.on('close', () => d.destroy());
  return d as unknown as net.Socket;
}
