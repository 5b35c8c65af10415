import type { AuditEvent } from '../audit.js';

/** One entry of `audit.streams` in the config. */
export interface StreamConfig {
  /** Names the sink's delivery checkpoint in the store: renaming a sink starts it over. */
  name: string;
  kind: 'otlp' | 'webhook' | 'syslog' | 'file';
  /** otlp: the collector's logs endpoint (http(s)://host:4318/v1/logs); webhook: where JSON lines are POSTed. */
  url?: string;
  headers?: Record<string, string>;
  /** webhook: environment variable holding the HMAC-SHA256 secret (x-sluice-signature). */
  secret_env?: string;
  /** The secret of secret_env, read by loadConfig. */
  secret?: string;
  /** webhook, syslog with tls: PEM file of the CA to trust (a private or self-signed one). */
  ca_file?: string;
  /** syslog: the receiver (RFC 5424 over TCP, octet-counted; RFC 5425 with tls). */
  host?: string;
  port?: number;
  tls?: boolean;
  app_name?: string;
  /** syslog facility number (default 10, authpriv). */
  facility?: number;
  /** file: JSON lines, rotated past max_bytes, keeping `keep` old files (path.1 is the newest). */
  path?: string;
  max_bytes?: number;
  keep?: number;
  /** Most events per delivery. */
  batch_size: number;
  /** Undelivered events past which the sink reports itself backlogged (events are never dropped: they are in the store). */
  max_backlog: number;
  /** How often the store is looked at for new events. */
  poll_ms: number;
  /** Delivery timeout per batch. */
  timeout_ms: number;
}

/** An audit event as streamed: where it sits in its hash chain, and the event itself. */
export interface StreamRecord {
  chain_id: string;
  seq: number;
  hash: string;
  event: AuditEvent;
}

/** A destination. send() resolves once the receiver has the batch (or throws; the batch is sent again later). */
export interface StreamSink {
  readonly name: string;
  readonly kind: StreamConfig['kind'];
  send(records: StreamRecord[]): Promise<void>;
  close(): Promise<void>;
}

/** Syslog/OTLP severity of an event: refusals and failures are warnings. */
export const isWarning = (e: AuditEvent): boolean => e.decision === 'deny' || e.type === 'auth_failure' || e.type === 'audit_refused' || e.type === 'protocol_error' || !!e.error;
