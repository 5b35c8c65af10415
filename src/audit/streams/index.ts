import path from 'node:path';
import type { StreamConfig, StreamSink } from './types.js';
import { webhookSink } from './webhook.js';
import { syslogSink } from './syslog.js';
import { fileSink } from './file.js';
import { otlpSink } from './otlp.js';

export type { StreamConfig, StreamRecord, StreamSink } from './types.js';
export { AuditStreamer, type SinkHealth } from './streamer.js';

/** Check a sink's settings (what the schema cannot say per kind) and resolve its files against the config's directory. */
export function resolveStream(s: StreamConfig, dir: string): StreamConfig {
  const need = (k: keyof StreamConfig) => {
    if (s[k] === undefined) throw new Error(`audit.streams ${s.name}: a ${s.kind} sink needs ${k}`);
  };
  if (s.kind === 'otlp' || s.kind === 'webhook') need('url');
  if (s.kind === 'syslog') (need('host'), need('port'));
  if (s.kind === 'file') need('path');
  return { ...s, ...(s.ca_file ? { ca_file: path.resolve(dir, s.ca_file) } : {}), ...(s.path ? { path: path.resolve(dir, s.path) } : {}) };
}

export function createSink(s: StreamConfig): StreamSink {
  switch (s.kind) {
    case 'otlp':
      return otlpSink(s);
    case 'webhook':
      return webhookSink(s);
    case 'syslog':
      return syslogSink(s);
    case 'file':
      return fileSink(s);
  }
}

/** The JSON schema of one `audit.streams` entry (config.ts). */
export const STREAM_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'kind'],
  properties: {
    name: { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,64}$' },
    kind: { enum: ['otlp', 'webhook', 'syslog', 'file'] },
    url: { type: 'string', pattern: '^https?://' },
    headers: { type: 'object', additionalProperties: { type: 'string' } },
    secret_env: { type: 'string', minLength: 1 },
    ca_file: { type: 'string', minLength: 1 },
    host: { type: 'string', minLength: 1 },
    port: { type: 'integer', minimum: 1, maximum: 65535 },
    tls: { type: 'boolean', default: false },
    app_name: { type: 'string', minLength: 1 },
    facility: { type: 'integer', minimum: 0, maximum: 23 },
    path: { type: 'string', minLength: 1 },
    max_bytes: { type: 'integer', minimum: 1024 },
    keep: { type: 'integer', minimum: 0, maximum: 1000 },
    batch_size: { type: 'integer', minimum: 1, maximum: 10000, default: 500 },
    max_backlog: { type: 'integer', minimum: 1, default: 100000 },
    poll_ms: { type: 'integer', minimum: 50, maximum: 60000, default: 500 },
    timeout_ms: { type: 'integer', minimum: 100, maximum: 120000, default: 10000 },
  },
} as const;
