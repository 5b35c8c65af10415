import type net from 'node:net';
import type tls from 'node:tls';
import crypto from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Framer } from './framer.js';
import { ProtocolError } from './buffer.js';
import * as m from './messages.js';
import { connectUpstream, cancelUpstream, UpstreamError, type UpstreamTarget, type UpstreamConnection } from './upstream.js';
import { SessionMemo, sameInputs, type Governor, type HoldRequest, type Verdict } from '../../governor.js';
import { servedBy } from '../../util/glob.js';
import type { Approval } from '../../approvals/store.js';
import { startupRefusal } from '../../analyze/guard.js';
import { lexingMismatch, mayChangeSettings, settle, unsettledRefusal } from './lexing.js';
import { EngineSession, type LoginRefusal } from '../common/session.js';
import type { SessionRegistry } from '../common/registry.js';
import { decodeBind, decodeParse, decodeStartup, decodeTarget, pick } from './frontend.js';
import { PgPipeline, type Item, type Prepared, type Probe } from './pipeline.js';
import type { Analysis } from '../../analyze/analyze.js';
import type { UpstreamPool } from './pool.js';
import { HOLD, relay, type Outcome } from './relay.js';
import { approvalNotice, decideFastPath } from './calls.js';

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
  /** Server connections reused across client sessions (reset in between); none: each session opens its own. */
  pool?: UpstreamPool;
}

const DENIED_MARK = 'SLUICE_DENIED_';
/** SQL that fails in the upstream parser: injected in place of a denied message so that the upstream's own error
 * handling (skip to Sync, abort the open transaction) happens exactly where the client expects the error. */
const deniedSql = () => `${DENIED_MARK}${crypto.randomBytes(6).toString('hex')}`;

/**
 * A text Sluice's parser rejects goes upstream with this suffix, so that the client gets the server's own error
 * about its text, as it would directly, and nothing runs: the server parses a whole message before it runs any of
 * it, and no text followed by this parses (after a newline and a semicolon, a lone identifier is no statement;
 * inside a string, quoted identifier, dollar quote or comment it leaves that unterminated). The pipeline relays the
 * server's error only when it is about the client's text (see probeAnswer); otherwise Sluice's refusal stands.
 */
function probe(sql: string, verdict: Verdict): { text: string; probe?: Probe } {
  if (!verdict.failure?.syntax) return { text: deniedSql() };
  const suffix = `\n;${deniedSql()}`;
  return { text: sql + suffix, probe: { suffix, chars: [...sql].length, failure: verdict.failure } };
}

/**
 * DDL that changes nothing the gateway reads from the catalog (functions, operators, domains, views, the columns of
 * tables, views and foreign tables, row security policies): no catalog read after it. (Most of the regression
 * scripts' DDL is on indexes.)
 */
const FACTLESS_DDL = new Set(['CREATE INDEX', 'DROP INDEX', 'COMMENT', 'CREATE STATS', 'CREATE SEQUENCE', 'ALTER SEQ', 'CREATE TRIGGER']);

/** One client connection speaking the PostgreSQL protocol 3.0, relayed to the upstream PostgreSQL under the Governor. */
export class PgSession extends EngineSession<UpstreamConnection> {
  private phase: 'startup' | 'auth' | 'connecting' | 'ready' = 'startup';
  private startupBuf: Buffer = Buffer.alloc(0);
  private clientFramer: Framer;
  private upstreamFramer = new Framer(1 << 30);
  private pipeline!: PgPipeline;
  /** The Governor's answers this session remembers (verdicts, masking plans). */
  private memo!: SessionMemo;
  private params: Record<string, string> = {};
  private pid = 0;
  private secret = 0;
  private upstreamPid = 0;
  private upstreamSecret = 0;
  /** The upstream login (kept for the pool). */
  private upConn?: UpstreamConnection;
  /** The upstream sent FATAL (relayed to the client as is): its close is not reported a second time. */
  private upstreamFatal?: string;
  /** The outcome of a hold, for the held message when it is read again. */
  private resolved?: Verdict;
  /** Reading stopped until the statements that may change session settings have answered (see settle). */
  private settling = false;
  /** The Query/Sync (by epoch) whose ReadyForQuery reports the settings after the last statement that may change them. */
  private unsettledUntil = 0;
  /** The Query/Sync (by epoch) that completes the last DDL statement sent, until its transaction has ended (0: none). */
  private ddlUntil = 0;
  /** The catalog load this session waits for before its next statement (opened at login; its DDL committed). */
  private catalogLoad?: Promise<void>;
  /** Reading stopped until catalogLoad is done or the DDL sent has answered (see catalogGate). */
  private catalogWaiting = false;

  constructor(socket: net.Socket, governor: Governor, private readonly cfg: PgEngineConfig, registry: SessionRegistry) {
    super(socket, governor, 'postgres', registry, cfg.limits.authTimeoutMs);
    this.clientFramer = new Framer(cfg.limits.maxMessageBytes);
  }

  // ---------------------------------------------------------------- lifecycle

  /** Send a FATAL error to the client and end the session. */
  fatal(code: string, message: string, detail?: string): void {
    if (this.closed) return;
    if (!this.client.destroyed) this.client.end(m.errorResponse({ severity: 'FATAL', code, message, detail }));
    this.close(message);
  }

  protected endWith(kind: 'terminate' | 'expired' | 'refused', message: string): void {
    if (kind === 'terminate') this.fatal('57P01', `terminating connection: ${message}`);
    else this.fatal(kind === 'expired' ? '28P01' : '42501', message);
  }

  protected loginTimedOut(): void {
    // Once the client has sent its password, the wait is the gateway's (credential check, upstream login): say so.
    this.fatal('08P01', this.phase === 'connecting' ? 'login timed out: checking the credential or logging in to the upstream database took too long' : 'login timed out: the client did not finish authenticating in time');
  }

  protected registryKey(): number {
    return this.pid;
  }

  protected endUpstream(u: net.Socket): boolean {
    const busy = !this.pipeline || this.pipeline.items.length > 0;
    // A session that ended between messages leaves a server connection the pool can reset and reuse.
    if (this.cfg.pool && this.upConn && !busy && !this.upstreamFatal) {
      this.cfg.pool.release({ ...this.params, database: this.database }, this.upConn, this.info.txStatus);
      return true;
    }
    // A client that vanished mid-query must not leave its statement running upstream.
    if (busy && this.upstreamPid) void cancelUpstream(this.cfg.upstream, this.upstreamPid, this.upstreamSecret);
    // DDL sent and not seen to end: the catalogs are read again once the server session is gone (it committed or not).
    if (this.ddlUntil) u.once('close', () => void this.gov.refreshCatalogs(this.database));
    u.end(m.terminate());
    return false;
  }

  protected auditUnfinished(reason: string): void {
    this.pipeline?.auditUnfinished(reason);
  }

  protected upstreamLost(how: 'error' | 'close'): void {
    if (how === 'error') this.fatal('08006', 'lost connection to the upstream database');
    else if (this.upstreamFatal) this.close(`the upstream database ended the session: ${this.upstreamFatal}`);
    else this.fatal('08006', 'the upstream database closed the connection');
  }

  cancelFromClient(secret?: number): void {
    if (secret !== this.secret || !this.upstreamPid) return;
    // A held statement has not reached the upstream: end the wait instead (the request stays open).
    if (this.cancelHold()) return;
    void cancelUpstream(this.cfg.upstream, this.upstreamPid, this.upstreamSecret);
  }

  private onFailure(e: unknown): void {
    const pe = e instanceof ProtocolError ? e : new ProtocolError(`internal error handling client message: ${(e as Error).message}`, 'XX000');
    this.protocolFailure(pe.message, pe.code);
    // A malformed startup or cancel packet gets no answer (as from PostgreSQL): the connection is just closed.
    if (this.phase === 'startup' && /^invalid length of (startup packet|cancel request)$/.test(pe.message)) return this.close(pe.message);
    this.fatal(pe.code, pe.message);
  }

  // ---------------------------------------------------------------- startup and login

  protected onClientData(d: Buffer): void {
    if (this.closed) return;
    try {
      if (this.phase === 'ready') return this.onClientMessages(d);
      if (this.phase === 'startup') return this.onStartupData(d);
      if (this.phase === 'auth') return this.onAuthData(d);
      // Nothing may arrive before AuthenticationOk; buffer a little (pipelining clients) and fail otherwise.
      this.startupBuf = Buffer.concat([this.startupBuf, d]);
      if (this.startupBuf.length > 1 << 20) throw new ProtocolError('too much data sent before login completed');
    } catch (e) {
      this.onFailure(e);
    }
  }

  private onStartupData(d: Buffer): void {
    this.startupBuf = this.startupBuf.length ? Buffer.concat([this.startupBuf, d]) : d;
    while (this.phase === 'startup' && !this.closed && this.startupBuf.length >= 4) {
      const len = this.startupBuf.readInt32BE(0);
      if (len < 8 || len > 10_000) throw new ProtocolError('invalid length of startup packet');
      if (this.startupBuf.length < len) return;
      const msg = this.startupBuf.subarray(0, len);
      this.startupBuf = this.startupBuf.subarray(len);
      if (this.onStartupPacket(msg, len) === 'tls') return;
    }
    // A client may send its password right behind the startup message: handle what is already buffered.
    if (this.phase === 'auth' && this.startupBuf.length) this.onAuthData(Buffer.alloc(0));
  }

  private onStartupPacket(msg: Buffer, len: number): 'tls' | undefined {
    const code = msg.readInt32BE(4);
    if (code === m.SSL_REQUEST_CODE) {
      if (this.startupBuf.length) throw new ProtocolError('received unencrypted data after SSL request');
      if (this.cfg.tlsMode === 'disable' || !this.cfg.secureContext || this.info.tls) {
        this.client.write('N');
        return undefined;
      }
      this.client.write('S');
      this.upgradeTls(this.cfg.secureContext);
      return 'tls';
    }
    if (code === m.GSSENC_REQUEST_CODE) {
      this.client.write('N');
      return undefined;
    }
    if (code === m.CANCEL_REQUEST_CODE) {
      if (len !== 16) throw new ProtocolError('invalid length of cancel request');
      const pid = msg.readInt32BE(8);
      const secret = msg.readInt32BE(12);
      if (!this.registry.cancel(pid, secret)) this.registry.forwardCancel?.(pid, secret);
      this.close('cancel request');
      return undefined;
    }
    if (code >> 16 !== 3) throw new ProtocolError(`unsupported frontend protocol ${code >> 16}.${code & 0xffff}: Sluice speaks protocol 3.0`, '0A000');
    this.onStartupMessage(msg, code & 0xffff);
    return undefined;
  }

  private onStartupMessage(msg: Buffer, minor: number): void {
    const { params, unsupported } = decodeStartup(msg);
    if (minor > 0 || unsupported.length) this.client.write(m.negotiateProtocolVersion(0, unsupported));
    if (this.cfg.tlsMode === 'require' && !this.info.tls) {
      return this.fatal('28000', 'Sluice requires an encrypted connection: connect with sslmode=require (tokens must not cross the network in clear text)');
    }
    this.hello = { user: params.user ?? '', database: params.database || params.user || '' };
    this.info.applicationName = params.application_name;
    // Only ordinary session settings pass to the server (the role, replication, logging, lexing state are Sluice's).
    for (const [k, v] of Object.entries(params)) {
      const why = startupRefusal(k, v);
      if (!why) continue;
      this.auditLoginRefusal(why);
      return this.fatal('42501', why);
    }
    this.database = this.hello.database;
    if (!this.database) return this.fatal('3D000', 'no database specified');
    delete params.user;
    delete params.database;
    this.params = params;
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

  protected serves(database: string): boolean {
    return servedBy(this.cfg.databases, database);
  }

  /**
   * The login does not wait for the database's catalogs (a client's connect timeout may be short): the session's
   * first statement does (see catalogGate), so none is judged without them.
   */
  protected override openCatalogs(): undefined {
    this.waitForLoad(this.gov.loadCatalogs(this.database));
    return undefined;
  }

  protected openUpstream(): Promise<UpstreamConnection> {
    const params = { ...this.params, database: this.database };
    return this.cfg.pool ? this.cfg.pool.acquire(params) : connectUpstream(this.cfg.upstream, params);
  }

  protected refuseLogin(r: LoginRefusal): void {
    if (r.kind === 'credential') return this.fatal('28P01', `Sluice authentication failed: ${r.reason}`);
    if (r.kind === 'database') return this.fatal('3D000', `database "${r.database}" is not served by this Sluice gateway`);
    const e = r.error;
    if (e instanceof UpstreamError) return this.fatal(e.code, e.message);
    this.fatal('08006', `could not open the upstream session: ${(e as Error).message}`);
  }

  protected override unusableUpstream(up: UpstreamConnection): string | undefined {
    for (const [k, v] of up.parameters) {
      const why = lexingMismatch(k, v);
      if (why) return why;
    }
    return undefined;
  }

  protected accepted(up: UpstreamConnection): void {
    this.upConn = up;
    // The client sees the server's backend PID (so pg_backend_pid(), notifications and pg_terminate_backend agree)
    // with a secret only the gateway knows: a cancel must come through the gateway, which checks it.
    this.pid = up.pid;
    this.secret = crypto.randomInt(-0x80000000, 0x7fffffff);
    this.upstreamPid = up.pid;
    this.upstreamSecret = up.secret;
    this.info.txStatus = up.txStatus;
    this.memo = new SessionMemo(this.identity!);
    this.pipeline = new PgPipeline({
      gov: this.gov,
      identity: this.identity!,
      memo: this.memo,
      info: this.info,
      audit: this.audit,
      database: () => this.database,
      parameterStatus: (name, value) => this.parameterStatus(name, value),
      upstreamFatal: (message) => (this.upstreamFatal = message),
    });
  }

  protected loggedIn(up: UpstreamConnection): void {
    const parts: Buffer[] = [m.authenticationOk()];
    for (const [k, v] of up.parameters) parts.push(m.parameterStatus(k, v));
    parts.push(m.backendKeyData(this.pid, this.secret), m.readyForQuery(up.txStatus));
    this.client.write(Buffer.concat(parts));
    this.phase = 'ready';
    if (up.leftover.length) this.onUpstreamData(up.leftover);
    if (this.startupBuf.length) {
      const early = this.startupBuf;
      this.startupBuf = Buffer.alloc(0);
      this.onClientMessages(early);
    }
  }


  private parameterStatus(name: string, value: string): boolean {
    const why = lexingMismatch(name, value);
    if (!why) return true;
    this.protocolFailure(why, '42501');
    this.fatal('42501', why);
    return false;
  }

  // ---------------------------------------------------------------- client -> upstream

  private onClientMessages(d: Buffer): void {
    if (this.holding || this.settling || this.catalogWaiting) return this.clientFramer.append(d);
    const u = this.upstream!;
    u.cork();
    try {
      relay(this.clientFramer, d, (type, b, start, end) => this.onClientMessage(type, b, start, end), (x) => this.writeUpstream(x));
    } catch (e) {
      this.onFailure(e);
    } finally {
      u.uncork();
    }
  }

  /** Returns undefined to forward the message as is, a Buffer to send instead, null to drop it, or HOLD. */
  private onClientMessage(type: number, b: Buffer, start: number, end: number): Outcome {
    if (this.phase !== 'ready' || this.closed) return null;
    const p = this.pipeline;
    switch (type) {
      case 0x51 /* Q */:
        return this.onQuery(pick(b, start, end).cstring());
      case 0x50 /* P */:
        return this.onParse(b, start, end);
      case 0x42 /* B */:
        return this.onBind(b, start, end);
      case 0x45 /* E */:
        return this.onExecute(b, start, end);
      case 0x44 /* D */: {
        // Keep the objects, not the names: a pipelining client may rebind a name before the answer arrives.
        const t = decodeTarget(b, start, end);
        p.items.push(t.statement ? { k: 'describe', stmt: p.statements.get(t.name) } : { k: 'describe', portal: p.portals.get(t.name) });
        return undefined;
      }
      case 0x43 /* C */: {
        const t = decodeTarget(b, start, end);
        if (t.statement) p.statements.delete(t.name);
        else p.portals.delete(t.name);
        p.items.push({ k: 'close' });
        return undefined;
      }
      case 0x53 /* S */:
        p.items.push({ k: 'sync', epoch: ++p.epoch });
        return undefined;
      case 0x48 /* H flush */:
      case 0x64 /* d CopyData */:
      case 0x63 /* c CopyDone */:
      case 0x66 /* f CopyFail */:
        return undefined;
      case 0x46 /* F FunctionCall */:
        return this.onFunctionCall(pick(b, start, end).int32() >>> 0);
      case 0x58 /* X */:
        this.close('client terminated the session');
        return null;
      default:
        throw new ProtocolError(`invalid frontend message type ${type} ('${String.fromCharCode(type)}')`);
    }
  }

  private onQuery(sql: string): Outcome {
    const p = this.pipeline;
    const resolved = this.takeResolved();
    const settle = resolved ? undefined : this.settle(sql);
    if (settle === 'wait') return this.waitForSettings();
    const verdict = resolved ?? (settle === 'refuse' ? unsettledRefusal() : this.decide(sql));
    if (!resolved && this.catalogGate(verdict.analysis)) return this.waitForCatalog();
    this.info.currentSql = sql;
    if (verdict.decision.action === 'require_approval') return this.hold({ sql, verdict }, 'simple');
    this.info.statements++;
    const item: Extract<Item, { k: 'query' }> = { k: 'query', epoch: ++p.epoch, sql, verdict, t0: performance.now(), rows: 0 };
    if (!verdict.error && mayChangeSettings(verdict.analysis)) this.unsettledUntil = p.epoch;
    p.items.push(item);
    if (verdict.error) {
      this.audit.denied(sql, verdict, 'simple');
      p.trackRefusedPrepare(verdict);
      const sent = probe(sql, verdict);
      item.probe = sent.probe;
      return m.query(sent.text);
    }
    p.trackSqlPrepared(verdict);
    item.source = p.cursorSource(verdict.analysis);
    this.running(verdict.analysis, item.epoch);
    return undefined;
  }

  private onParse(b: Buffer, start: number, end: number): Outcome {
    const p = this.pipeline;
    const { name, sql, types } = decodeParse(b, start, end);
    const settle = this.settle(sql);
    if (settle === 'wait') return this.waitForSettings();
    const verdict = settle === 'refuse' ? unsettledRefusal() : this.decide(sql);
    if (this.catalogGate(verdict.analysis)) return this.waitForCatalog();
    this.info.currentSql = sql;
    if (verdict.error) {
      this.audit.denied(sql, verdict, 'extended', { name });
      const sent = probe(sql, verdict);
      p.items.push({ k: 'parse', verdict, probe: sent.probe });
      return m.parse(name, sent.text, types);
    }
    p.items.push({ k: 'parse', verdict });
    const max = this.cfg.limits.maxPrepared;
    if (name !== '' && !p.statements.has(name) && p.statements.size >= max) throw new ProtocolError(`too many prepared statements in one session (limit ${max})`, '53400');
    p.trackSqlPrepared(verdict);
    // A statement held for approval is parsed upstream (harmless); each execution waits for its approval.
    const hold = verdict.decision.action === 'require_approval' ? verdict : undefined;
    p.statements.set(name, { name, sql, analysis: verdict.analysis, rule: verdict.decision.rule, hold, paramTypes: hold && types.some((t) => t !== 0) ? types : undefined, inputs: this.gov.memoInputs(this.database) });
    return undefined;
  }

  private onBind(b: Buffer, start: number, end: number): Outcome {
    const p = this.pipeline;
    const peek = decodeBind(b, start, end, false);
    const prepared = p.statements.get(peek.statement) ?? p.sqlPreparedStatement(peek.statement);
    const bind = prepared?.hold ? decodeBind(b, start, end, true) : peek;
    p.portals.set(bind.portal, { stmt: prepared, formats: bind.formats, epoch: p.epoch + 1, params: bind.params, binaryParams: bind.binaryParams, paramFormats: bind.binaryParams ? bind.paramFormats : undefined });
    p.items.push({ k: 'bind' });
    return undefined;
  }

  private onExecute(b: Buffer, start: number, end: number): Outcome {
    const p = this.pipeline;
    const portal = pick(b, start, end).cstring();
    const bound = p.portals.get(portal);
    let approvalId: string | undefined;
    if (bound?.stmt && !this.resolved) this.rejudge(bound.stmt);
    if (bound?.stmt?.refusal) {
      const s = bound.stmt;
      this.info.statements++;
      this.audit.denied(s.sql, s.refusal!, 'extended', { name: s.name });
      p.items.push({ k: 'denied', verdict: s.refusal! });
      return m.parse(deniedSql().toLowerCase(), deniedSql(), []);
    }
    if (bound?.stmt?.hold) {
      const s = bound.stmt;
      const resolved = this.takeResolved();
      if (!resolved) return this.hold({ sql: s.sql, verdict: s.hold!, params: bound.params, binaryParams: bound.binaryParams, paramFormats: bound.paramFormats, paramTypes: s.paramTypes }, 'extended', s.name);
      this.info.statements++;
      if (resolved.error) {
        // Denied or timed out: fail this Execute's slot so the upstream skips to Sync as for any error.
        this.audit.denied(s.sql, resolved, 'extended', { name: s.name });
        p.items.push({ k: 'denied', verdict: resolved });
        return m.parse(deniedSql().toLowerCase(), deniedSql(), []);
      }
      approvalId = resolved.approvalId;
    } else this.info.statements++;
    // A portal the gateway never saw bound is a SQL cursor: one declared before the policy or a catalog changed is
    // judged as its query first, as a FETCH from it would be.
    const cursor = bound ? undefined : p.cursors.get(portal);
    if (cursor && !sameInputs(cursor.inputs, this.gov.memoInputs(this.database))) {
      const sql = `FETCH FORWARD ALL FROM "${portal.replace(/"/g, '""')}"`;
      const v = this.decide(sql);
      if (v.error || v.decision.action !== 'allow') {
        const refused: Verdict = v.error
          ? v
          : { ...v, decision: { ...v.decision, action: 'deny' }, error: { code: '42501', message: `the policy now holds reading cursor "${portal}" for approval (rule "${v.decision.rule}"): FETCH from it with a SQL statement to ask for one` } };
        this.info.statements++;
        this.audit.denied(sql, refused, 'extended');
        p.items.push({ k: 'denied', verdict: refused });
        return m.parse(deniedSql().toLowerCase(), deniedSql(), []);
      }
      p.trackSqlPrepared(v);
    }
    // Rows of a portal whose columns were never described cannot be masked reliably (binary formats): when
    // masking applies, ask the upstream to describe it first and keep that answer to ourselves.
    // A portal the gateway never saw bound (a SQL DECLAREd cursor) is described the same way.
    const target = bound ?? p.cursorPortal(portal);
    const blind = !target.shape && !target.stmt?.shape && (target.taintAll || p.masks(target.stmt?.analysis));
    if (blind) p.items.push({ k: 'describe', portal: target, internal: true });
    p.items.push({ k: 'execute', stmt: target.stmt, portal: target, t0: performance.now(), rows: 0, fetched: 0, plan: p.portalPlan(target), approvalId });
    if (mayChangeSettings(target.stmt?.analysis)) this.unsettledUntil = p.epoch + 1;
    this.running(target.stmt?.analysis, p.epoch + 1);
    return blind ? Buffer.concat([m.describe('P', portal), b.subarray(start, end)]) : undefined;
  }

  /**
   * The fast-path interface calls a function by OID (large objects: psql's \lo_*, pg_dump, pg_restore): judged
   * like `SELECT schema.function()` under policy, the catalog naming the OID.
   */
  private onFunctionCall(oid: number): Outcome {
    if (this.catalogGate('always')) return this.waitForCatalog();
    const { sql, verdict } = decideFastPath(this.gov, this.identity!, this.database, oid, (q) => this.decide(q));
    this.info.statements++;
    this.pipeline.items.push({ k: 'fastpath', sql, verdict, t0: performance.now() });
    if (!verdict.error) return undefined;
    this.audit.denied(sql, verdict, 'fastpath');
    return m.query(deniedSql());
  }

  /**
   * A prepared statement was judged when it was parsed. If the policy or the database's catalogs have changed since
   * (a reload that narrows what this identity may do, a function redefined to write), it is judged again before
   * its next execution: refused, held for approval, or allowed, as a new Parse of it would be.
   */
  private rejudge(s: Prepared): void {
    const now = this.gov.memoInputs(this.database);
    if (s.inputs && sameInputs(s.inputs, now)) return;
    const v = this.decide(s.sql);
    s.inputs = now;
    s.refusal = v.error ? v : undefined;
    if (v.error) return;
    s.analysis = v.analysis;
    s.rule = v.decision.rule;
    s.hold = v.decision.action === 'require_approval' ? v : undefined;
  }

  private decide(sql: string): Verdict {
    const p = this.pipeline;
    const stale = p.cursors.size ? p.staleCursors(this.gov.memoInputs(this.database)) : undefined;
    return this.gov.check(this.identity!, this.database, sql, p.sqlPrepared, this.memo, stale);
  }

  // ---------------------------------------------------------------- lexing state and approval holds

  private settle(sql: string): 'wait' | 'refuse' | undefined {
    return settle(sql, this.pipeline.answered, this.pipeline.epoch, this.unsettledUntil);
  }

  private waitForSettings(): typeof HOLD {
    this.settling = true;
    this.client.pause();
    return HOLD;
  }

  /** Called after each upstream chunk: resume reading once nothing that may change settings is running. */
  private settled(): void {
    if (!this.settling || this.phase !== 'ready' || this.closed || this.pipeline.answered < this.unsettledUntil) return;
    this.settling = false;
    if (!this.catalogWaiting) this.client.resume();
    this.onClientMessages(Buffer.alloc(0));
  }

  // ---------------------------------------------------------------- the database's catalogs

  /**
   * An allowed statement goes upstream, completed by the Query/Sync `until`. DDL: once its transaction has ended,
   * the catalogs are read again and the session's next statement waits for that (a function created just before
   * is judged with its catalog facts, and the gateway's catalog reads do not overlap the session's own work).
   * Statements that need nobody connected to a database: the gateway's idle connections to it close first.
   */
  private running(a: Analysis | undefined, until: number): void {
    if (a?.statements.some((st) => st.class === 'ddl' && !FACTLESS_DDL.has(st.command))) this.ddlUntil = until;
    for (const st of a?.statements ?? []) {
      for (const db of st.databases ?? []) {
        this.cfg.pool?.closeDatabase(db);
        this.gov.forgetDatabase(db);
      }
    }
  }

  /**
   * Whether a statement that needs catalog facts (it calls functions or operators, casts, or names tables: views
   * count) must wait: for the catalog load this session waits for, or for the answer to the DDL it sent (when a
   * Query or Sync that completes it was sent: otherwise the server answers only after more input). Statements that
   * need none (more DDL, SET, SELECT 1) go on meanwhile, so DDL after DDL waits for nothing and one read follows a
   * run of it.
   */
  private catalogGate(a: Analysis | undefined | 'always'): boolean {
    if (a !== 'always' && !a?.statements.some((st) => st.functions.length || st.operators?.length || st.casts?.length || st.tables.some((t) => t.access !== 'ddl') || st.executes !== undefined || st.cursor?.op === 'fetch')) return false;
    if (this.catalogLoad) return true;
    // A re-read after DDL that another session committed: wait for it too.
    const pending = this.gov.pendingRefresh(this.database);
    if (pending) {
      this.waitForLoad(pending);
      return true;
    }
    const p = this.pipeline;
    return this.ddlUntil > 0 && p.answered < this.ddlUntil && p.epoch >= this.ddlUntil;
  }

  private waitForCatalog(): typeof HOLD {
    this.catalogWaiting = true;
    this.client.pause();
    return HOLD;
  }

  private waitForLoad(load: Promise<void> | undefined): void {
    this.catalogLoad = load;
    void load?.then(() => {
      if (this.catalogLoad !== load) return;
      this.catalogLoad = undefined;
      this.catalogStep();
    });
  }

  /** After each upstream chunk and each catalog load: refresh after DDL whose transaction ended; resume reading. */
  private catalogStep(): void {
    if (this.phase !== 'ready' || this.closed) return;
    if (this.ddlUntil && this.pipeline.answered >= this.ddlUntil && this.info.txStatus === 'I') {
      this.ddlUntil = 0;
      this.waitForLoad(this.gov.refreshCatalogs(this.database));
    }
    if (!this.catalogWaiting || this.catalogGate('always')) return;
    this.catalogWaiting = false;
    if (!this.holding && !this.settling) this.client.resume();
    this.onClientMessages(Buffer.alloc(0));
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
    const rule = req.verdict.decision.rule;
    const what = protocol === 'extended' && name ? `prepared statement "${name}"` : 'statement';
    const notify = (a: Approval, url: string) => this.writeClient(approvalNotice(a, url, req.verdict.decision, what));
    const canceled = (id: string | undefined): Verdict => ({
      analysis: req.verdict.analysis,
      approvalId: id,
      decision: { action: 'deny', rule, reason: 'canceled by the client while awaiting approval' },
      error: { code: '57014', message: 'canceling statement due to user request', detail: id ? `Approval request ${id} stays open: run the same statement again to wait for it (it runs at once if approved meanwhile).` : undefined },
    });
    this.holdFor(req, notify, canceled, (v) => {
      // Read the held message again, with its outcome.
      this.resolved = v;
      this.onClientMessages(Buffer.alloc(0));
    });
    return HOLD;
  }

  // ---------------------------------------------------------------- upstream -> client

  protected onUpstreamData(d: Buffer): void {
    // The audit events of what this chunk completes reach the spool before the client sees the completions: the
    // writes are released at the end of the turn, after one spool write for all sessions.
    this.holdClientWrites();
    try {
      relay(this.upstreamFramer, d, (type, b, start, end) => this.pipeline.onMessage(type, b, start, end), (x) => this.writeClient(x));
    } catch (e) {
      // Ending the session sends what is held: the events of what it completes go to the spool first.
      if (this.auditWritten()) this.fatal('08P01', `invalid data from the upstream database: ${(e as Error).message}`);
    }
    this.settled();
    this.catalogStep();
  }
}
