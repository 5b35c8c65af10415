import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { AuditEvent, AuditHealth } from '../audit/audit.js';

const APPROVAL_EVENTS = ['requested', 'approved', 'denied', 'expired', 'revoked'];
const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Prometheus metrics, fed from the audit events the Governor records (so every engine is counted alike). */
export class Metrics {
  private statements = new Map<string, number>();
  private masked = new Map<string, number>();
  private authFailures = 0;
  private authThrottled = 0;
  private buckets = new Array<number>(BUCKETS.length).fill(0);
  private durationSum = 0;
  private durationCount = 0;
  private sessionsStarted = 0;
  private approvals = new Map<string, number>();
  /** Event-loop delay between scrapes (every session shares the one loop: lag is everyone's latency). */
  private loopDelay = monitorEventLoopDelay({ resolution: 10 });

  constructor() {
    this.loopDelay.enable();
  }

  observe(e: AuditEvent): void {
    if (e.type === 'statement') {
      const k = e.decision ?? 'unknown';
      this.statements.set(k, (this.statements.get(k) ?? 0) + 1);
      if (e.duration_ms !== undefined) {
        const s = e.duration_ms / 1000;
        this.durationSum += s;
        this.durationCount++;
        for (let i = 0; i < BUCKETS.length; i++) if (s <= BUCKETS[i]!) this.buckets[i]!++;
      }
      for (const [t, n] of Object.entries(e.masked ?? {})) this.masked.set(t, (this.masked.get(t) ?? 0) + n);
    } else if (e.type === 'auth_failure') {
      this.authFailures++;
      if (e.reason === 'throttled') this.authThrottled++;
    }
    else if (e.type === 'session_start') this.sessionsStarted++;
    else if (e.type === 'approval') {
      const ev = String(e.details?.event ?? '');
      if (APPROVAL_EVENTS.includes(ev)) this.approvals.set(ev, (this.approvals.get(ev) ?? 0) + 1);
    }
  }

  render(gauges: { connections: number; audit: AuditHealth; approvalsPending?: number }): string {
    const esc = (v: string) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
    const out: string[] = [];
    out.push('# HELP sluice_connections Client sessions currently open.', '# TYPE sluice_connections gauge', `sluice_connections ${gauges.connections}`);
    out.push('# HELP sluice_sessions_started_total Sessions that completed login.', '# TYPE sluice_sessions_started_total counter', `sluice_sessions_started_total ${this.sessionsStarted}`);
    out.push('# HELP sluice_auth_failures_total Logins refused.', '# TYPE sluice_auth_failures_total counter', `sluice_auth_failures_total ${this.authFailures}`);
    out.push('# HELP sluice_auth_throttled_total Logins refused unchecked because their key id or source address failed too often (identity.throttle).', '# TYPE sluice_auth_throttled_total counter', `sluice_auth_throttled_total ${this.authThrottled}`);
    out.push('# HELP sluice_statements_total Statements by decision.', '# TYPE sluice_statements_total counter');
    for (const d of ['allow', 'deny']) out.push(`sluice_statements_total{decision="${d}"} ${this.statements.get(d) ?? 0}`);
    out.push('# HELP sluice_statement_duration_seconds Time from a statement reaching the gateway to its completion.', '# TYPE sluice_statement_duration_seconds histogram');
    BUCKETS.forEach((b, i) => out.push(`sluice_statement_duration_seconds_bucket{le="${b}"} ${this.buckets[i]}`));
    out.push(`sluice_statement_duration_seconds_bucket{le="+Inf"} ${this.durationCount}`, `sluice_statement_duration_seconds_sum ${this.durationSum}`, `sluice_statement_duration_seconds_count ${this.durationCount}`);
    out.push('# HELP sluice_masked_values_total Values masked in results, by detector type or rule.', '# TYPE sluice_masked_values_total counter');
    for (const [k, n] of this.masked) out.push(`sluice_masked_values_total{kind="${esc(k)}"} ${n}`);
    out.push('# HELP sluice_approval_events_total Approval requests made here and their outcomes decided here.', '# TYPE sluice_approval_events_total counter');
    for (const k of APPROVAL_EVENTS) out.push(`sluice_approval_events_total{event="${k}"} ${this.approvals.get(k) ?? 0}`);
    if (gauges.approvalsPending !== undefined) out.push('# HELP sluice_approvals_pending Requests awaiting a decision (all gateways sharing the store).', '# TYPE sluice_approvals_pending gauge', `sluice_approvals_pending ${gauges.approvalsPending}`);
    const a = gauges.audit;
    out.push('# HELP sluice_audit_backlog Audit events not yet written to the store (every stage).', '# TYPE sluice_audit_backlog gauge', `sluice_audit_backlog ${a.backlog}`);
    out.push('# HELP sluice_audit_backlog_events Audit events not yet in the store, by stage.', '# TYPE sluice_audit_backlog_events gauge');
    for (const [k, n] of Object.entries(a.stages)) out.push(`sluice_audit_backlog_events{stage="${k}"} ${n}`);
    out.push('# HELP sluice_audit_oldest_unshipped_seconds Age of the oldest audit event not yet in the store.', '# TYPE sluice_audit_oldest_unshipped_seconds gauge', `sluice_audit_oldest_unshipped_seconds ${a.oldest_unshipped_s}`);
    out.push('# HELP sluice_audit_spool_bytes Bytes of audit spool files on disk.', '# TYPE sluice_audit_spool_bytes gauge', `sluice_audit_spool_bytes ${a.spool_bytes}`);
    out.push('# HELP sluice_audit_spool_max_bytes Spool size past which statements are refused.', '# TYPE sluice_audit_spool_max_bytes gauge', `sluice_audit_spool_max_bytes ${a.spool_max_bytes}`);
    out.push('# HELP sluice_audit_store_up 1 while the audit store takes writes.', '# TYPE sluice_audit_store_up gauge', `sluice_audit_store_up ${a.store === 'ok' ? 1 : 0}`);
    out.push('# HELP sluice_audit_refused_statements_total Statements refused because the audit log could not take them.', '# TYPE sluice_audit_refused_statements_total counter', `sluice_audit_refused_statements_total ${a.refused_statements}`);
    out.push('# HELP sluice_audit_healthy 1 while the audit log accepts events (statements are refused at 0).', '# TYPE sluice_audit_healthy gauge', `sluice_audit_healthy ${a.healthy ? 1 : 0}`);
    const mem = process.memoryUsage();
    out.push('# HELP sluice_process_resident_memory_bytes Resident set size.', '# TYPE sluice_process_resident_memory_bytes gauge', `sluice_process_resident_memory_bytes ${mem.rss}`);
    out.push('# HELP sluice_process_heap_used_bytes V8 heap in use.', '# TYPE sluice_process_heap_used_bytes gauge', `sluice_process_heap_used_bytes ${mem.heapUsed}`);
    out.push('# HELP sluice_process_external_memory_bytes Memory of buffers outside the V8 heap.', '# TYPE sluice_process_external_memory_bytes gauge', `sluice_process_external_memory_bytes ${mem.external + mem.arrayBuffers}`);
    const d = this.loopDelay;
    const lag = (ns: number) => (Number.isFinite(ns) ? ns / 1e9 : 0);
    out.push('# HELP sluice_event_loop_lag_seconds Event-loop delay since the previous scrape.', '# TYPE sluice_event_loop_lag_seconds gauge');
    out.push(`sluice_event_loop_lag_seconds{quantile="0.5"} ${lag(d.percentile(50))}`, `sluice_event_loop_lag_seconds{quantile="0.99"} ${lag(d.percentile(99))}`, `sluice_event_loop_lag_seconds{quantile="1"} ${lag(d.max)}`);
    d.reset();
    return out.join('\n') + '\n';
  }
}
