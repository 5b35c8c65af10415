import { OTLPLogExporter } from '@opentelemetry/exporter-logs-otlp-http';
import { LoggerProvider, type LogRecordProcessor, type ReadWriteLogRecord, type ReadableLogRecord } from '@opentelemetry/sdk-logs';
import { SeverityNumber } from '@opentelemetry/api-logs';
import { resourceFromAttributes } from '@opentelemetry/resources';
import os from 'node:os';
import { isWarning, type StreamConfig, type StreamRecord, type StreamSink } from './types.js';

/** Collects the records the SDK builds, so the exporter's own result decides whether a batch was delivered. */
class Capture implements LogRecordProcessor {
  records: ReadWriteLogRecord[] = [];
  onEmit(r: ReadWriteLogRecord): void {
    this.records.push(r);
  }
  async forceFlush(): Promise<void> {}
  async shutdown(): Promise<void> {}
}

type Attr = string | number | boolean | string[];

/** Event fields as OpenTelemetry log attributes (sluice.*), the whole event as the body. */
function attributes(r: StreamRecord): Record<string, Attr> {
  const e = r.event;
  const a: Record<string, Attr> = { 'sluice.chain_id': r.chain_id, 'sluice.seq': r.seq, 'sluice.hash': r.hash, 'sluice.event.type': e.type };
  const add = (k: string, v: Attr | undefined) => v !== undefined && (a[k] = v);
  add('enduser.id', e.subject);
  add('sluice.identity_kind', e.identity_kind);
  add('sluice.acting_for', e.acting_for);
  add('db.namespace', e.database);
  add('db.query.text', e.sql);
  add('sluice.decision', e.decision);
  add('sluice.rule', e.rule);
  add('sluice.session_id', e.session_id);
  add('client.address', e.client_addr);
  add('sluice.tables', e.tables);
  return a;
}

/**
 * OTLP/HTTP logs through the official OpenTelemetry JS SDK and exporter (@opentelemetry/sdk-logs,
 * @opentelemetry/exporter-logs-otlp-http). Records are built by the SDK's LoggerProvider and exported by the
 * exporter directly, so a batch is delivered only when the exporter reports success.
 */
export function otlpSink(cfg: StreamConfig): StreamSink {
  const exporter = new OTLPLogExporter({ url: cfg.url, headers: cfg.headers, timeoutMillis: cfg.timeout_ms });
  const capture = new Capture();
  const provider = new LoggerProvider({
    resource: resourceFromAttributes({ 'service.name': 'sluice', 'host.name': os.hostname(), 'process.pid': process.pid }),
    processors: [capture],
  });
  const logger = provider.getLogger('sluice.audit', '1');
  return {
    name: cfg.name,
    kind: 'otlp',
    send(records: StreamRecord[]) {
      capture.records = [];
      for (const r of records) {
        const warn = isWarning(r.event);
        logger.emit({
          timestamp: r.event.ts ? new Date(r.event.ts) : new Date(),
          severityNumber: warn ? SeverityNumber.WARN : SeverityNumber.INFO,
          severityText: warn ? 'WARN' : 'INFO',
          eventName: `sluice.audit.${r.event.type}`,
          body: JSON.stringify(r.event),
          attributes: attributes(r),
        });
      }
      const batch: ReadableLogRecord[] = capture.records;
      capture.records = [];
      return new Promise<void>((resolve, reject) => {
        exporter.export(batch, (res) => (res.code === 0 ? resolve() : reject(new Error(`OTLP export to ${cfg.url} failed: ${res.error?.message ?? 'unknown error'}`))));
      });
    },
    async close() {
      await exporter.shutdown().catch(() => {});
      await provider.shutdown().catch(() => {});
    },
  };
}
