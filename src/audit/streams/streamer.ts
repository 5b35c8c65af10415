import type { AuditEvent } from '../audit.js';
import type { StreamStore } from '../../store/streams.js';
import type { StreamConfig, StreamRecord, StreamSink } from './types.js';

export interface SinkHealth {
  name: string;
  kind: StreamConfig['kind'];
  /** ok; failing: the last delivery failed (retried with backoff); backlogged: more undelivered than max_backlog; standby: another gateway delivers. */
  status: 'ok' | 'failing' | 'backlogged' | 'standby';
  /** Events in the store not yet delivered to this sink. */
  backlog: number;
  delivered: number;
  failures: number;
  last_error?: string;
  last_delivered_at?: string;
}

interface SinkState {
  sink: StreamSink;
  cfg: StreamConfig;
  failures: number;
  delivered: number;
  backlog: number;
  standby: boolean;
  lastError?: string;
  lastDeliveredAt?: string;
  timer?: NodeJS.Timeout;
  running?: Promise<void>;
}

/** How long a gateway's claim on a sink lasts without renewal (another gateway takes over after it). */
const LEASE_MS = 30_000;
const MAX_BACKOFF_MS = 30_000;

/**
 * Delivers every audit event in the store to each sink, at least once, in chain order. The store is the queue:
 * per sink and chain the last delivered seq is kept there (stream_checkpoints), so a sink outage or a restart
 * loses nothing, and statements never wait on a sink (they wait only on the local spool). When a sink fails, its
 * batch is retried with exponential backoff and jitter; its backlog (events in the store past its checkpoint) is
 * reported in health() and /metrics. With several gateways sharing a store, one holds each sink's lease.
 */
export class AuditStreamer {
  private readonly states: SinkState[];
  private closed = false;

  constructor(
    private readonly store: StreamStore,
    sinks: { sink: StreamSink; cfg: StreamConfig }[],
    private readonly owner: string,
    private readonly onNotice: (msg: string) => void = () => {},
  ) {
    this.states = sinks.map((s) => ({ ...s, failures: 0, delivered: 0, backlog: 0, standby: false }));
  }

  start(): void {
    for (const s of this.states) this.schedule(s, 0);
  }

  private schedule(s: SinkState, ms: number): void {
    if (this.closed) return;
    clearTimeout(s.timer);
    s.timer = setTimeout(() => {
      s.running = this.run(s)
        .then((more) => this.schedule(s, this.delay(s, more)))
        .finally(() => (s.running = undefined));
    }, ms);
    s.timer.unref();
  }

  /** Backoff with jitter after failures; at once while a sink catches up; else the poll interval. */
  private delay(s: SinkState, more: boolean): number {
    const backoff = Math.min(MAX_BACKOFF_MS, 250 * 2 ** Math.min(s.failures, 8));
    return s.failures ? Math.round(backoff / 2 + Math.random() * (backoff / 2)) : more ? 0 : s.cfg.poll_ms;
  }

  private async run(s: SinkState): Promise<boolean> {
    let more = false;
    try {
      s.standby = !(await this.store.claim(s.cfg.name, this.owner, LEASE_MS));
      if (!s.standby) more = await this.deliver(s);
      if (s.failures > 0) this.onNotice(`audit stream ${s.cfg.name}: delivering again after ${s.failures} failed attempts`);
      s.failures = 0;
      s.lastError = undefined;
    } catch (e) {
      s.failures++;
      s.lastError = (e as Error).message;
      if (s.failures === 1 || s.failures % 20 === 0) this.onNotice(`audit stream ${s.cfg.name} (${s.cfg.kind}): ${s.lastError}; ${s.backlog} events wait in the store, retrying`);
    }
    return more;
  }

  /** One batch per chain that has undelivered events; true when more remain. */
  private async deliver(s: SinkState): Promise<boolean> {
    const heads = await this.store.heads();
    const done = await this.store.delivered(s.cfg.name);
    let backlog = 0;
    for (const [chain, seq] of heads) backlog += Math.max(0, seq - (done.get(chain) ?? 0));
    s.backlog = backlog;
    let more = false;
    for (const [chain, head] of [...heads].sort((a, b) => a[0].localeCompare(b[0]))) {
      const from = done.get(chain) ?? 0;
      if (head <= from) continue;
      const rows = await this.store.eventsAfter(chain, from, s.cfg.batch_size);
      if (!rows.length) continue;
      const records: StreamRecord[] = rows.map((r) => ({ chain_id: chain, seq: r.seq, hash: r.hash, event: JSON.parse(r.payload) as AuditEvent }));
      await s.sink.send(records);
      const last = rows[rows.length - 1]!.seq;
      await this.store.advance(s.cfg.name, chain, last);
      s.delivered += rows.length;
      s.backlog -= rows.length;
      s.lastDeliveredAt = new Date().toISOString();
      if (last < head) more = true;
    }
    return more;
  }

  /** Deliver what is in the store now (tests and shutdown); resolves when every sink caught up or failed once. */
  async drain(): Promise<void> {
    for (const s of this.states) {
      clearTimeout(s.timer);
      if (s.running) await s.running;
      clearTimeout(s.timer);
      let more = true;
      while (more && !this.closed) {
        const p = this.run(s);
        s.running = p.then(() => undefined);
        more = (await p) && !s.failures;
      }
      s.running = undefined;
      this.schedule(s, this.delay(s, false));
    }
  }

  health(): SinkHealth[] {
    return this.states.map((s) => ({
      name: s.cfg.name,
      kind: s.cfg.kind,
      status: s.standby ? 'standby' : s.failures ? 'failing' : s.backlog > s.cfg.max_backlog ? 'backlogged' : 'ok',
      backlog: s.backlog,
      delivered: s.delivered,
      failures: s.failures,
      ...(s.lastError ? { last_error: s.lastError } : {}),
      ...(s.lastDeliveredAt ? { last_delivered_at: s.lastDeliveredAt } : {}),
    }));
  }

  /** Prometheus lines: backlog and health per sink. */
  metrics(): string {
    const h = this.health();
    const out = ['# HELP sluice_audit_stream_backlog Audit events in the store not yet delivered to a stream sink.', '# TYPE sluice_audit_stream_backlog gauge'];
    for (const x of h) out.push(`sluice_audit_stream_backlog{sink="${x.name}",kind="${x.kind}"} ${x.backlog}`);
    out.push('# HELP sluice_audit_stream_up 1 while a sink takes deliveries (0: failing or backlogged).', '# TYPE sluice_audit_stream_up gauge');
    for (const x of h) out.push(`sluice_audit_stream_up{sink="${x.name}",kind="${x.kind}"} ${x.status === 'ok' || x.status === 'standby' ? 1 : 0}`);
    out.push('# HELP sluice_audit_stream_delivered_total Audit events delivered to a sink by this process.', '# TYPE sluice_audit_stream_delivered_total counter');
    for (const x of h) out.push(`sluice_audit_stream_delivered_total{sink="${x.name}",kind="${x.kind}"} ${x.delivered}`);
    return out.join('\n') + '\n';
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const s of this.states) clearTimeout(s.timer);
    await Promise.all(this.states.map((s) => s.running?.catch(() => {})));
    await Promise.all(this.states.map((s) => s.sink.close().catch(() => {})));
  }
}
