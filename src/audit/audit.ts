import crypto from 'node:crypto';
import os from 'node:os';
import { sql, type Kysely, type Insertable } from 'kysely';
import type { Database, AuditEventsTable } from '../store/schema.js';

export type AuditEventType = 'session_start' | 'session_end' | 'auth_failure' | 'statement' | 'key_created' | 'key_revoked' | 'policy_loaded' | 'protocol_error' | 'approval' | 'tool_call' | 'console_login';

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
  protocol?: 'simple' | 'extended' | 'mcp' | 'mysql' | 'mysql-prepared';
  statement_name?: string;
  fingerprint?: string;
  classes?: string[];
  commands?: string[];
  tables?: string[];
  columns?: string[];
  destructive?: string[];
  flags?: string[];
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
export const linkHash = (prev: string, payload: string): string => crypto.createHash('sha256').update(prev).update('\n').update(payload).digest('hex');

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

/** One stored audit row (the audit_events table), as written. */
type Row = Insertable<AuditEventsTable> & { seq: number; ts: Date };

/** Where chained rows go: straight into the store, or to another process that owns it. */
export interface AuditSink {
  write(rows: Row[]): Promise<void>;
}
export type AuditRow = Row;

/**
 * Writes a batch as one statement with one JSON parameter, expanded by the database (json_populate_recordset):
 * far cheaper per row than binding 13 parameters per row, which matters for the embedded (WASM) store.
 */
export const storeSink = (db: Kysely<Database>): AuditSink => ({
  async write(rows) {
    for (let i = 0; i < rows.length; i += 5000) {
      const json = JSON.stringify(rows.slice(i, i + 5000));
      await sql`INSERT INTO audit_events SELECT * FROM json_populate_recordset(NULL::audit_events, ${json}::json)`.execute(db);
    }
  },
});

export interface AuditLogOptions {
  chainId?: string;
  flushMs?: number;
  batchSize?: number;
  /** Events held in memory while the store is unreachable before the gateway fails closed. */
  maxPending?: number;
  onError?: (e: Error) => void;
}

/**
 * Appends events to one hash chain. Hashing happens synchronously at append time (so order is the order of
 * events); rows are written in batches. If the store is unreachable rows are kept and retried; past maxPending
 * the log reports itself unhealthy and the Governor stops allowing statements (fail closed) — nothing is dropped.
 */
export class AuditLog {
  readonly chainId: string;
  private seq = 0;
  private prev: string;
  private pending: Row[] = [];
  private flushing: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private failures = 0;
  private closed = false;
  lastError: Error | undefined;
  written = 0;

  constructor(private readonly sink: AuditSink, private readonly opts: AuditLogOptions = {}) {
    this.chainId = opts.chainId ?? `${os.hostname()}-${process.pid}-${Date.now().toString(36)}-${crypto.randomBytes(3).toString('hex')}`;
    this.prev = genesisHash(this.chainId);
  }

  get healthy(): boolean {
    return this.pending.length < (this.opts.maxPending ?? 200_000);
  }
  get backlog(): number {
    return this.pending.length;
  }

  append(event: AuditEvent): void {
    const ts = new Date();
    event.ts = ts.toISOString();
    const payload = JSON.stringify(event);
    const hash = linkHash(this.prev, payload);
    this.pending.push({
      chain_id: this.chainId,
      seq: ++this.seq,
      ts,
      payload,
      prev_hash: this.prev,
      hash,
      ...columnsOf(event),
    });
    this.prev = hash;
    if (this.pending.length >= (this.opts.batchSize ?? 2000)) void this.flush();
    else if (!this.timer && !this.closed) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        void this.flush();
      }, this.opts.flushMs ?? 50);
      this.timer.unref?.();
    }
  }

  /** Write everything pending; resolves when the rows appended so far are stored (or the write failed). */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    this.flushing = (async () => {
      try {
        await this.sink.write(batch);
        this.written += batch.length;
        this.failures = 0;
        this.lastError = undefined;
      } catch (err) {
        this.pending = batch.concat(this.pending);
        this.failures++;
        this.lastError = err as Error;
        this.opts.onError?.(err as Error);
        if (!this.closed) {
          const delay = Math.min(5000, 100 * 2 ** Math.min(this.failures, 6));
          clearTimeout(this.timer);
          this.timer = setTimeout(() => {
            this.timer = undefined;
            void this.flush();
          }, delay);
          this.timer.unref?.();
        }
      } finally {
        this.flushing = undefined;
      }
    })();
    await this.flushing;
  }

  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    clearTimeout(this.timer);
    if (this.pending.length) throw new Error(`audit log closed with ${this.pending.length} events not written: ${this.lastError?.message}`);
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
}

/** Recompute every link of every chain; report the first broken link per chain. */
export async function verifyAudit(db: Kysely<Database>): Promise<ChainReport[]> {
  const chains = await db.selectFrom('audit_events').select('chain_id').distinct().execute();
  const reports: ChainReport[] = [];
  for (const { chain_id } of chains) {
    let prev = genesisHash(chain_id);
    let expected = 1;
    let report: ChainReport = { chain_id, events: 0, ok: true };
    let after = 0;
    for (;;) {
      const rows = await db.selectFrom('audit_events').selectAll().where('chain_id', '=', chain_id).where('seq', '>', after).orderBy('seq').limit(5000).execute();
      if (rows.length === 0) break;
      for (const r of rows) {
        const seq = Number(r.seq);
        after = seq;
        report.events++;
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
          const diff = (Object.keys(cols) as (keyof typeof cols)[]).find((k) => (r as any)[k] !== cols[k]);
          if (diff) bad(`column ${diff} does not match the hashed payload (the row was altered)`);
        }
        prev = r.hash;
        expected = seq + 1;
      }
    }
    report.head = prev;
    reports.push(report);
  }
  return reports;
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
