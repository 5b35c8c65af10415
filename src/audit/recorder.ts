import type { AuditEvent, AuditLog } from './audit.js';
import { Metrics } from './metrics.js';

/**
 * Where everything that happens is reported: the audit log (hash-chained, durable before a client sees a result)
 * and the metrics fed from the same events, so every engine, MCP and the API are counted alike.
 */
export class Recorder {
  readonly metrics = new Metrics();
  private readonly listeners: ((e: AuditEvent) => void)[] = [];

  constructor(readonly audit: AuditLog) {}

  /** Called after each recorded event (the Governor refreshes catalogs after DDL). */
  onRecord(fn: (e: AuditEvent) => void): void {
    this.listeners.push(fn);
  }

  /** `json`: the event as the caller serialised it (see AuditLog.append). */
  record(event: AuditEvent, json?: string): void {
    this.metrics.observe(event);
    // Refused because the audit log cannot take events: counted (one summary event once it recovers), not queued.
    if (event.type === 'statement' && event.rule === 'audit-unavailable') return this.audit.countRefused();
    this.audit.append(event, json);
    for (const fn of this.listeners) fn(event);
  }

  /** Write what was recorded to the spool before a reply is released; false when it cannot be written (fail closed). */
  flush(): boolean {
    return this.audit.flushSpool();
  }
}
