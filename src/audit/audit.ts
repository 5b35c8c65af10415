import crypto from 'node:crypto';
import os from 'node:os';
import { sql, type Kysely } from 'kysely';
import pg from 'pg';
import type { Database } from '../store/schema.js';
import { AUDIT_COLUMNS, copyJson, copyRowsAfter, copyValue, joinRows, rowsAs, type AuditRows, type RowFormat } from './rows.js';
import { Spool, type SpoolOptions } from './spool.js';

export type AuditEventType = 'session_start' | 'session_end' | 'auth_failure' | 'statement' | 'key_created' | 'key_revoked' | 'policy_loaded' | 'protocol_error' | 'approval' | 'tool_call' | 'console_login' | 'audit_refused' | 'access_review';

/** One audit record. Only defined fields are serialized. */
export interface AuditEvent {
  type: AuditEventType;
  ts?: string;
  session_id?: string;
  subject?: string;
  identity_kind?: string;
  display_name?: string;
  groups?: string[];
  acting_for?: string;
  auth_method?: string;
  key_id?: string;
  client_addr?: string;
  client_user?: string;
  application_name?: string;
  database?: string;
  tls?: boolean;
  sql?: string;
  protocol?: 'simple' | 'extended' | 'fastpath' | 'mcp' | 'mysql' | 'mysql-prepared';
  statement_name?: string;
  fingerprint?: string;
  classes?: string[];
  commands?: string[];
  tables?: string[];
  columns?: string[];
  destructive?: string[];
  flags?: string[];
  /** What the functions the statement calls do beyond their result (catalog facts), e.g. `f() runs DELETE on t`. */
  effects?: string[];
  decision?: 'allow' | 'deny';
  rule?: string;
  reason?: string;
  rows?: number;
  duration_ms?: number;
  error?: string;
  error_code?: string;
  statements?: number;
  /** Cells masked in the result, by detector type or column rule. */
  masked?: Record<string, number>;
  /** The approval request a held statement ran under, or that an approval event is about. */
  approval_id?: string;
  /** The identity is exempt from masking and saw cleartext. */
  masking_exempt?: boolean;
  details?: Record<string, unknown>;
}

export interface StoredEvent extends AuditEvent {
  chain_id: string;
  seq: number;
  hash: string;
  prev_hash: string;
}

export const genesisHash = (chainId: string): string => crypto.createHash('sha256').update(`sluice-audit-chain:${chainId}`).digest('hex');
export const linkHash = (prev: string, payload: string): string => crypto.hash('sha256', `${prev}\n${payload}`);

/**
 * A text as a store column holds it: PostgreSQL text takes no NUL and UTF-8 no lone surrogate (both possible in a
 * JS string, from a JSON `\u0000` or `\ud800` escape in a token's claim), so each becomes U+FFFD; the payload keeps
 * them, escaped. Written so, a row the store would refuse cannot block shipping; verify compares the same way.
 */
function storable<T extends string | null | undefined>(v: T): T {
  if (v === null || v === undefined || !/[\u0000\uD800-\uDFFF]/.test(v)) return v;
  return Buffer.from(v, 'utf8').toString('utf8').replaceAll('\u0000', '\uFFFD') as T;
}

/** The denormalized columns that must agree with the payload (checked by verify). */
function columnsOf(e: AuditEvent) {
  return {
    type: e.type,
    session_id: e.session_id ?? null,
    subject: e.subject ?? null,
    identity_kind: e.identity_kind ?? null,
    acting_for: e.acting_for ?? null,
    database: e.database ?? null,
    decision: e.decision ?? null,
  };
}

/** Where a chain stands: written to audit_heads with each batch, so `audit verify` can tell a chain cut short. */
export interface ChainHead {
  chain_id: string;
  /** Last event of the batch (the chain in the store ends here once the batch is in). */
  seq: number;
  hash: string;
  /** Events the gateway had appended to the chain when it sent the batch. */
  appended: number;
  /** The chain ends here: its gateway shut down cleanly (or a later one shipped what a crashed one left). */
  closed: boolean;
}

/** Where spooled rows go: straight into the store, or to another process that owns it. */
export interface AuditSink {
  /** The row format the sink takes best (the log writes its spool records in it); json when not given. */
  readonly format?: RowFormat;
  /** Store rows and the chain's head, atomically and idempotently (a retry never conflicts). */
  write(rows: AuditRows, head: ChainHead): Promise<void>;
}

/** The chain's head goes in with each batch (never moved back by a late retry). */
const headUpsert = (h: ChainHead) => sql`INSERT INTO audit_heads (chain_id, seq, hash, appended, closed, updated_at)
      VALUES (${h.chain_id}, ${h.seq}, ${h.hash}, ${h.appended}, ${h.closed}, now())
      ON CONFLICT (chain_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, appended = GREATEST(audit_heads.appended, excluded.appended),
        closed = audit_heads.closed OR excluded.closed, updated_at = excluded.updated_at
      WHERE audit_heads.seq <= excluded.seq`;

/** COPY ... FROM STDIN through node-postgres: the whole batch goes as one CopyData message. */
class CopyIn extends (pg.Query as unknown as new (text: string, values: undefined, cb: (err: Error | null) => void) => { handleCopyInResponse(c: unknown): void }) {
  constructor(
    text: string,
    private readonly data: string | Buffer,
    cb: (err: Error | null) => void,
  ) {
    super(text, undefined, cb);
  }
  override handleCopyInResponse(con: { sendCopyFromChunk(b: Buffer): void; endCopyFrom(): void }): void {
    con.sendCopyFromChunk(typeof this.data === 'string' ? Buffer.from(this.data, 'utf8') : this.data);
    con.endCopyFrom();
  }
}

/** Run a COPY FROM STDIN with the given data; settles when the server has answered it (a custom query object
 * given to client.query is not a promise: its callback is how completion and errors arrive). */
const copyIn = (client: pg.PoolClient, text: string, data: string | Buffer) =>
  new Promise<void>((resolve, reject) => {
    client.query(new CopyIn(text, data, (err) => (err ? reject(err) : resolve())) as unknown as pg.QueryConfig);
  });

/**
 * A PostgreSQL store: the rows go in with COPY (no per-row JSON parsing on the server), the head with them in one
 * transaction. Idempotent: rows the store already holds (a retry after a failure that hid a commit) are left out,
 * found by the chain's highest stored seq, which the primary key index answers at once.
 */
const copySink = (db: Kysely<Database>, pool: pg.Pool): AuditSink => ({
  format: 'copy',
  async write(given, h) {
    let rows = rowsAs(given, 'copy');
    const client = await pool.connect();
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      if (rows.count > 0) {
        const r = await client.query<{ seq: string | null }>('SELECT max(seq) AS seq FROM audit_events WHERE chain_id = $1', [h.chain_id]);
        const stored = Number(r.rows[0]?.seq ?? 0);
        if (stored >= rows.firstSeq) rows = copyRowsAfter(rows, stored);
        if (rows.count > 0) await copyIn(client, `COPY audit_events (${AUDIT_COLUMNS.join(', ')}) FROM STDIN`, rows.text);
      }
      const head = headUpsert(h).compile(db);
      await client.query(head.sql, [...head.parameters]);
      await client.query('COMMIT');
    } catch (e) {
      broken = e as Error;
      throw e;
    } finally {
      // A connection that failed mid-transaction is not reused.
      client.release(broken);
    }
  },
});

/**
 * The store's sink. With the PostgreSQL store's pool: COPY. Otherwise (the embedded store) one statement: the
 * rows (one JSON parameter expanded by json_populate_recordset, far cheaper per row than binding 13 parameters
 * each) and the head go in together or not at all; rows already there are skipped, so a batch retried after a
 * failure that hid its success (a store restart mid-commit) cannot wedge the shipper.
 */
export function storeSink(db: Kysely<Database>, pool?: pg.Pool): AuditSink {
  if (pool) return copySink(db, pool);
  return {
    format: 'json',
    async write(given, h) {
      const json = rowsAs(given, 'json').text.toString();
      await sql`WITH r AS (SELECT * FROM json_populate_recordset(NULL::audit_events, ${json}::json)),
      ins AS (INSERT INTO audit_events SELECT * FROM r ON CONFLICT (chain_id, seq) DO NOTHING)
      ${headUpsert(h)}`.execute(db);
    },
  };
}

export interface AuditLogOptions {
  chainId?: string;
  /** How long appended events wait before the shipper sends them (they are on disk meanwhile). */
  flushMs?: number;
  /** Most rows per store write. */
  batchSize?: number;
  /** The local spool every event is written to before it is acknowledged (see spool.ts). */
  spool: SpoolOptions;
  onError?: (e: Error) => void;
  /** Spool and recovery notices for the gateway log. */
  onNotice?: (msg: string) => void;
}

export interface AuditStages {
  /** Appended in this event-loop turn, not yet written to the spool. */
  buffered: number;
  /** In the spool file, waiting for the shipper (this chain and chains taken over from a previous process). */
  spooled: number;
  /** Being written to the store right now. */
  in_flight: number;
}

/** Wait for p, or ms at most (a timer that keeps the process alive meanwhile, cleared when p settles first). */
function within(p: Promise<unknown> | undefined, ms: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const t = setTimeout(resolve, Math.max(0, ms));
    p?.then(
      () => (clearTimeout(t), resolve()),
      () => (clearTimeout(t), resolve()),
    );
  });
}

export interface AuditHealth {
  /** False while statements are refused (fail closed). */
  healthy: boolean;
  /** ok; degraded: the store cannot be written but events are safe in the spool; failing_closed: statements are refused. */
  status: 'ok' | 'degraded' | 'failing_closed';
  /** failing: the last write to the store failed (unreachable, or refusing the batch); retried with backoff. */
  store: 'ok' | 'failing';
  backlog: number;
  stages: AuditStages;
  oldest_unshipped_s: number;
  spool_bytes: number;
  spool_max_bytes: number;
  /** Statements refused since start because the audit log could not take them. */
  refused_statements: number;
  problem?: string;
  last_error?: string;
}

/**
 * Appends events to one hash chain. Hashing happens synchronously at append time (so order is the order of
 * events). Every event goes to the local spool before the statement it records is acknowledged (the protocol
 * engines call flushSpool() before releasing a reply; anything else is written at the end of the event-loop
 * turn), and a shipper moves spooled events to the store in idempotent batches, retrying with backoff. Past the
 * spool's bound, or when the spool cannot be written, the log reports itself unhealthy and the Governor stops
 * allowing statements (fail closed); statements refused meanwhile are counted, not queued one event each.
 * Nothing is dropped: what is not in the store at shutdown stays in the spool, and the next start ships it.
 */
export class AuditLog {
  readonly chainId: string;
  readonly spool: Spool;
  /** The row format of the spool records (the sink's). */
  private readonly format: RowFormat;
  /** The start of every row (the chain id is the same for all). */
  private readonly rowHead: string;
  private seq = 0;
  private prev: string;
  private isoAt = -1;
  private iso = '';
  private shipping: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private failures = 0;
  private closed = false;
  private inFlight = 0;
  /** Statements refused because the log was unhealthy, not yet summarized in an event. */
  private refused = 0;
  private refusedSince?: string;
  refusedTotal = 0;
  lastError: Error | undefined;
  written = 0;

  constructor(
    private readonly sink: AuditSink,
    private readonly opts: AuditLogOptions,
  ) {
    this.chainId = opts.chainId ?? `${os.hostname().replace(/^\{/, '_')}-${process.pid}-${Date.now().toString(36)}-${crypto.randomBytes(3).toString('hex')}`;
    // A spool's COPY row is told from a JSON one by its first byte, the chain id's.
    if (this.chainId.startsWith('{')) throw new Error(`an audit chain id may not start with "{": ${this.chainId}`);
    this.prev = genesisHash(this.chainId);
    this.format = sink.format ?? 'json';
    this.rowHead = this.format === 'copy' ? `${copyValue(this.chainId)}\t` : `{"chain_id":${JSON.stringify(this.chainId)},"seq":`;
    this.spool = new Spool(this.chainId, opts.spool, opts.onNotice);
    this.spool.onAdopted = () => this.schedule(0);
    // Events a previous process left behind go out first.
    if (this.spool.unshipped > 0) this.schedule(0);
  }

  get healthy(): boolean {
    return this.spool.ok;
  }
  /** The last event appended to this chain (what a signed checkpoint covers); seq 0 before the first. */
  get head(): { chain_id: string; seq: number; hash: string } {
    return { chain_id: this.chainId, seq: this.seq, hash: this.prev };
  }
  /** Every event not yet in the store: buffered, spooled, in flight. */
  get backlog(): number {
    return this.spool.buffered + this.spool.unshipped;
  }
  get stages(): AuditStages {
    return { buffered: this.spool.buffered, spooled: this.spool.unshipped - this.inFlight, in_flight: this.inFlight };
  }
  /** Why statements are refused, when they are. */
  get problem(): string | undefined {
    return this.spool.problem;
  }
  /** Age in seconds of the oldest event not yet in the store (0 when none). */
  get oldestUnshippedS(): number {
    const t = this.spool.buffered > 0 && this.spool.unshipped === 0 ? Date.now() : this.spool.oldestTs;
    return t === undefined ? 0 : Math.max(0, (Date.now() - t) / 1000);
  }

  /**
   * The audit_events row in the spool's format, written out directly: this runs for every event before its
   * statement is acknowledged, and a template costs about a third less than building and serialising an object.
   */
  private row(seq: number, iso: string, payload: string, hash: string, e: AuditEvent): string {
    if (this.format === 'copy') {
      const c = copyValue;
      return `${this.rowHead}${seq}\t${iso}\t${c(e.type)}\t${c(storable(e.session_id))}\t${c(storable(e.subject))}\t${c(e.identity_kind)}\t${c(storable(e.acting_for))}\t${c(storable(e.database))}\t${c(e.decision)}\t${copyJson(payload)}\t${this.prev}\t${hash}`;
    }
    const s = (v: string | undefined) => (v === undefined ? 'null' : JSON.stringify(storable(v)));
    return `${this.rowHead}${seq},"ts":"${iso}","payload":${JSON.stringify(payload)},"prev_hash":"${this.prev}","hash":"${hash}","type":${s(e.type)},"session_id":${s(e.session_id)},"subject":${s(e.subject)},"identity_kind":${s(e.identity_kind)},"acting_for":${s(e.acting_for)},"database":${s(e.database)},"decision":${s(e.decision)}}`;
  }

  /** What /healthz and /metrics report: every event not yet in the store counts, whatever stage it is in. */
  health(): AuditHealth {
    const healthy = this.healthy;
    return {
      healthy,
      status: !healthy ? 'failing_closed' : this.lastError ? 'degraded' : 'ok',
      store: this.lastError ? 'failing' : 'ok',
      backlog: this.backlog,
      stages: this.stages,
      oldest_unshipped_s: Math.round(this.oldestUnshippedS * 1000) / 1000,
      spool_bytes: this.spool.bytes,
      spool_max_bytes: this.opts.spool.maxBytes,
      refused_statements: this.refusedTotal,
      ...(this.problem ? { problem: this.problem } : {}),
      ...(this.lastError ? { last_error: this.lastError.message } : {}),
    };
  }

  /**
   * Append an event to the chain. `json`, when given, is the caller's own serialisation of the event without its
   * `ts` and closing brace, exactly what JSON.stringify would give (the statement path builds it from parts it
   * keeps per session and per analysis); `event` then needs only the fields the row's columns, the metrics and the
   * listeners read.
   */
  append(event: AuditEvent, json?: string): void {
    if (this.refused > 0 && this.healthy && event.type !== 'audit_refused') this.summarizeRefused();
    const now = Date.now();
    // One ISO string per millisecond (a busy gateway appends several events in one).
    if (now !== this.isoAt) {
      this.isoAt = now;
      this.iso = new Date(now).toISOString();
    }
    const iso = this.iso;
    event.ts = iso;
    const payload = json === undefined ? JSON.stringify(event) : `${json},"ts":"${iso}"}`;
    const hash = linkHash(this.prev, payload);
    const seq = ++this.seq;
    this.spool.add(seq, now, hash, this.row(seq, iso, payload, hash, event));
    this.prev = hash;
    // Written at the end of this turn at the latest (the protocol engines flush before they reply).
    this.immediate ??= setImmediate(() => {
      this.immediate = undefined;
      this.flushSpool();
    });
    if (this.spool.unshipped + this.spool.buffered >= (this.opts.batchSize ?? 2000)) this.schedule(0);
    else this.schedule(this.opts.flushMs ?? 50);
  }

  /** A statement refused because the log is unhealthy: counted, and summarized in one event once it recovers. */
  countRefused(): void {
    if (this.refused === 0) this.refusedSince = new Date().toISOString();
    this.refused++;
    this.refusedTotal++;
  }

  private summarizeRefused(): void {
    const n = this.refused;
    this.refused = 0;
    this.append({ type: 'audit_refused', statements: n, reason: 'statements refused while the audit log could not take them', details: { since: this.refusedSince, until: new Date().toISOString() } });
  }

  /**
   * Write buffered events to the spool now (one write system call; cheap when nothing is buffered). Call right
   * before releasing a reply that acknowledges a statement; false means they could not be made durable.
   */
  flushSpool(): boolean {
    return this.spool.flush();
  }

  private schedule(ms: number): void {
    if (this.closed || this.shipping) return;
    if (this.timer) {
      if (ms > 0) return;
      clearTimeout(this.timer);
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.ship();
    }, ms);
    this.timer.unref?.();
  }

  /**
   * Ship spooled events, until none are left (`drain`: flush and close) or, from the timer, while full batches
   * are waiting; or until the store fails (then retry later with backoff and jitter).
   */
  private ship(drain = false): Promise<void> {
    if (this.shipping) return this.shipping;
    const p: Promise<void> = this.shipAll(drain).finally(() => {
      if (this.shipping === p) this.shipping = undefined;
      if (this.failures > 0) {
        // Exponential backoff with jitter, so gateways sharing a store do not retry in step.
        const ceiling = Math.min(5000, 100 * 2 ** Math.min(this.failures, 6));
        this.schedule(Math.round(ceiling / 2 + Math.random() * (ceiling / 2)));
      } else if (this.spool.unshipped > 0 || this.spool.buffered > 0) this.schedule(this.opts.flushMs ?? 50);
    });
    this.shipping = p;
    return p;
  }

  private async shipAll(drain: boolean): Promise<void> {
    try {
      this.flushSpool();
      for (let src = this.spool.next(); src; src = this.spool.next()) {
        const batch = this.spool.read(src, this.opts.batchSize ?? 2000, 4 << 20, this.format);
        if (batch.lines === 0) break;
        this.inFlight = batch.count;
        try {
          if (batch.count > 0) {
            const appended = src.own ? this.seq : batch.lastSeq;
            await this.sink.write(batch.rows, { chain_id: src.chainId, seq: batch.lastSeq, hash: batch.lastHash, appended, closed: !src.own && batch.lines === src.remaining });
          }
        } finally {
          this.inFlight = 0;
        }
        this.spool.commit(batch);
        this.written += batch.count;
        if (this.failures > 0) this.opts.onNotice?.(`the audit store takes writes again after ${this.failures} failed attempts; ${this.backlog} events to go`);
        this.failures = 0;
        this.lastError = undefined;
        if (this.refused > 0 && this.healthy) {
          this.summarizeRefused();
          this.flushSpool();
        }
        // From the timer, this process's own events go on to the next batch at once only when a full one is
        // waiting. Events that arrived while this batch was in flight wait for the next timer, so that under load a
        // store write carries one flush interval's events rather than one round trip's (each write is a
        // transaction, and its fixed cost, on the store's server and here, was most of the shipping's).
        if (!drain && src.own && src.remaining < (this.opts.batchSize ?? 2000)) break;
      }
    } catch (err) {
      this.failures++;
      this.lastError = err as Error;
      this.opts.onError?.(err as Error);
    }
  }

  /** Ship what has been appended so far; resolves when it is in the store or a write failed (see lastError). */
  async flush(): Promise<void> {
    const target = this.seq;
    this.flushSpool();
    // Own events ship in order, one line each: those not buffered or spooled are in the store.
    const shipped = () => this.seq - this.spool.buffered - this.spool.own.remaining;
    // At least one run (it ships chains taken over first), then more while they make progress.
    let before = shipped();
    await this.ship(true);
    while (!this.lastError && shipped() < target && shipped() > before) {
      before = shipped();
      await this.ship(true);
    }
  }

  /**
   * Shut down: everything goes to the spool and is synced; then the shipper gets up to `timeoutMs` to empty it
   * and mark the chain closed. What it cannot ship (store down) stays on disk for the next start: never dropped.
   */
  async close(timeoutMs = 5000): Promise<void> {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.immediate) clearImmediate(this.immediate);
    this.immediate = undefined;
    if (this.refused > 0) this.summarizeRefused();
    this.flushSpool();
    this.spool.sync();
    this.closed = true;
    const deadline = Date.now() + timeoutMs;
    while (this.backlog > 0 && Date.now() < deadline) {
      await within(this.ship(true), deadline - Date.now());
      if (this.lastError && this.backlog > 0) await within(undefined, Math.min(500, deadline - Date.now()));
    }
    if (this.shipping) await within(this.shipping, 1000);
    if (this.backlog === 0 && this.seq > 0 && !this.lastError) {
      await this.sink.write(joinRows([], this.format, 0), { chain_id: this.chainId, seq: this.seq, hash: this.prev, appended: this.seq, closed: true }).catch((e) => (this.lastError = e as Error));
    }
    const left = this.backlog;
    const empty = this.spool.close();
    if (!empty) this.opts.onNotice?.(`${left} audit events are not in the store yet (${this.lastError?.message ?? 'shutdown'}); they stay in ${this.opts.spool.dir} and the next start ships them`);
  }
}

export interface AuditFilter {
  subject?: string;
  kind?: string;
  type?: string;
  decision?: string;
  database?: string;
  session?: string;
  table?: string;
  since?: Date;
  until?: Date;
  limit?: number;
}

export async function queryAudit(db: Kysely<Database>, f: AuditFilter): Promise<StoredEvent[]> {
  let q = db.selectFrom('audit_events').selectAll();
  if (f.subject) q = q.where('subject', 'like', f.subject.replace(/\*/g, '%'));
  if (f.kind) q = q.where('identity_kind', '=', f.kind);
  if (f.type) q = q.where('type', '=', f.type);
  if (f.decision) q = q.where('decision', '=', f.decision);
  if (f.database) q = q.where('database', '=', f.database);
  if (f.session) q = q.where('session_id', '=', f.session);
  if (f.since) q = q.where('ts', '>=', f.since);
  if (f.until) q = q.where('ts', '<=', f.until);
  const limit = Math.min(f.limit ?? 100, 100_000);
  // The table filter looks inside the payload; over-fetch and filter precisely in code.
  const rows = await q.orderBy('ts', 'desc').orderBy('seq', 'desc').limit(f.table ? limit * 20 : limit).execute();
  const out: StoredEvent[] = [];
  for (const r of rows) {
    const e = JSON.parse(r.payload) as AuditEvent;
    if (f.table && !(e.tables ?? []).some((t) => t === f.table || t.endsWith(`.${f.table}`) || f.table!.endsWith(`.${t}`))) continue;
    out.push({ ...e, chain_id: r.chain_id, seq: Number(r.seq), hash: r.hash, prev_hash: r.prev_hash });
    if (out.length >= limit) break;
  }
  return out;
}

export interface ChainReport {
  chain_id: string;
  events: number;
  ok: boolean;
  problem?: string;
  first_bad_seq?: number;
  head?: string;
  /** The last event its gateway recorded as stored (audit_heads), when it recorded one. */
  recorded_seq?: number;
  /** The gateway shut down cleanly and everything it appended is here. */
  closed?: boolean;
  /** Events its gateway had appended that are not in the store yet (still in its spool, or lost with it). */
  unshipped?: number;
}

/**
 * Recompute every link of every chain; report the first broken link per chain. Each chain is also checked against
 * the head its gateway recorded with its last batch, so removing the newest events (or a whole chain) shows.
 */
export async function verifyAudit(db: Kysely<Database>): Promise<ChainReport[]> {
  const chains = await db.selectFrom('audit_events').select('chain_id').distinct().execute();
  const heads = new Map((await db.selectFrom('audit_heads').selectAll().execute()).map((h) => [h.chain_id, h]));
  const reports: ChainReport[] = [];
  for (const { chain_id } of chains) {
    let prev = genesisHash(chain_id);
    let expected = 1;
    let report: ChainReport = { chain_id, events: 0, ok: true };
    let after = 0;
    const head = heads.get(chain_id);
    heads.delete(chain_id);
    let hashAtHead: string | undefined;
    for (;;) {
      const rows = await db.selectFrom('audit_events').selectAll().where('chain_id', '=', chain_id).where('seq', '>', after).orderBy('seq').limit(5000).execute();
      if (rows.length === 0) break;
      for (const r of rows) {
        const seq = Number(r.seq);
        after = seq;
        report.events++;
        if (head && seq === Number(head.seq)) hashAtHead = r.hash;
        if (!report.ok) continue;
        const bad = (problem: string) => (report = { ...report, ok: false, problem, first_bad_seq: seq });
        if (seq !== expected) bad(`event ${expected} is missing (next is ${seq})`);
        else if (r.prev_hash !== prev) bad('prev_hash does not match the previous event (an event was removed or reordered)');
        else if (linkHash(prev, r.payload) !== r.hash) bad('hash does not match the payload (the event was altered)');
        else {
          let e: AuditEvent;
          try {
            e = JSON.parse(r.payload);
          } catch {
            bad('payload is not valid JSON');
            continue;
          }
          const cols = columnsOf(e);
          const diff = (Object.keys(cols) as (keyof typeof cols)[]).find((k) => (r as any)[k] !== storable(cols[k]));
          if (diff) bad(`column ${diff} does not match the hashed payload (the row was altered)`);
        }
        prev = r.hash;
        expected = seq + 1;
      }
    }
    report.head = prev;
    if (head) report = { ...report, ...checkHead(head, after, hashAtHead, report.ok) };
    reports.push(report);
  }
  // A head without any event: the whole chain was removed.
  for (const h of heads.values()) reports.push({ chain_id: h.chain_id, events: 0, ok: false, first_bad_seq: 1, recorded_seq: Number(h.seq), problem: `all ${Number(h.seq)} events its gateway stored are missing` });
  return reports;
}

/**
 * A chain whose gateway had appended more than the store holds and has written nothing for this long is reported
 * as cut short: a live gateway ships within seconds of the store coming back, and a restart on its spool ships
 * what a dead one left.
 */
export const STALE_HEAD_MS = 10 * 60_000;

/** Compare a chain's last stored event with the head its gateway recorded. */
function checkHead(h: { seq: string | number; hash: string; appended: string | number; closed: boolean; updated_at: Date }, last: number, hashAtHead: string | undefined, ok: boolean): Partial<ChainReport> {
  const seq = Number(h.seq);
  const appended = Number(h.appended);
  const info: Partial<ChainReport> = { recorded_seq: seq, closed: h.closed && last >= appended, ...(appended > last ? { unshipped: appended - last } : {}) };
  if (!ok) return info;
  if (last < seq) return { ...info, ok: false, first_bad_seq: last + 1, problem: `the chain was cut short: it ends at event ${last}, but its gateway recorded event ${seq} as stored (events ${last + 1} to ${seq} were removed)` };
  if (hashAtHead !== h.hash) return { ...info, ok: false, first_bad_seq: seq, problem: `event ${seq} is not the one its gateway recorded as the chain's head (the end of the chain was replaced)` };
  if (h.closed && last < appended) return { ...info, ok: false, first_bad_seq: last + 1, problem: `the chain was cut short: it ends at event ${last}, but its gateway closed it at event ${appended}` };
  const since = new Date(h.updated_at);
  if (last < appended && Date.now() - since.getTime() > STALE_HEAD_MS) {
    return { ...info, ok: false, first_bad_seq: last + 1, problem: `the chain was cut short: it ends at event ${last}, but its gateway had appended ${appended} when it last wrote (${since.toISOString()}) and nothing came since; events ${last + 1} to ${appended} are missing (a gateway started on that gateway's spool directory would ship them)` };
  }
  return info;
}

export interface SensitiveReport {
  subject: string;
  since?: string;
  until?: string;
  /** Statements that returned rows. */
  statements: number;
  /** Values masked before they reached the identity, by detector type or column rule. */
  masked: Record<string, number>;
  /** Tables whose masked values the identity was shown (masked). */
  masked_tables: string[];
  /** What the identity saw in cleartext because it is exempt from masking. */
  cleartext: { statements: number; tables: string[]; columns: string[] };
}

/** "What sensitive data did X see": aggregated from the statement events of one subject. */
export async function sensitiveReport(db: Kysely<Database>, f: { subject: string; since?: Date; until?: Date }): Promise<SensitiveReport> {
  const events = await queryAudit(db, { subject: f.subject, type: 'statement', decision: 'allow', since: f.since, until: f.until, limit: 100_000 });
  const r: SensitiveReport = { subject: f.subject, since: f.since?.toISOString(), until: f.until?.toISOString(), statements: 0, masked: {}, masked_tables: [], cleartext: { statements: 0, tables: [], columns: [] } };
  const maskedTables = new Set<string>();
  const clearTables = new Set<string>();
  const clearColumns = new Set<string>();
  for (const e of events) {
    if (!e.rows) continue;
    r.statements++;
    for (const [k, v] of Object.entries(e.masked ?? {})) r.masked[k] = (r.masked[k] ?? 0) + v;
    if (e.masked) for (const t of e.tables ?? []) maskedTables.add(t);
    if (e.masking_exempt) {
      r.cleartext.statements++;
      for (const t of e.tables ?? []) clearTables.add(t);
      for (const c of e.columns ?? []) clearColumns.add(c);
    }
  }
  r.masked_tables = [...maskedTables].sort();
  r.cleartext.tables = [...clearTables].sort();
  r.cleartext.columns = [...clearColumns].sort();
  return r;
}
