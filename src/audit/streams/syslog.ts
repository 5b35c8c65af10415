import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import tls from 'node:tls';
import type { AuditEvent } from '../audit.js';
import { isWarning, type StreamConfig, type StreamRecord, type StreamSink } from './types.js';

/** Private enterprise number in structured-data ids (RFC 5424 §7.2.2 wants one; 32473 is the documentation number). */
const SD_ID = 'sluice@32473';

const sdValue = (v: string) => v.replace(/[\\"\]]/g, (c) => `\\${c}`);
/** PRINTUSASCII without spaces, at most `max` characters (RFC 5424 header fields), or the nil value. */
const token = (v: string | undefined, max: number) => (v ? v.replace(/[^\x21-\x7e]/g, '_').slice(0, max) : '-');

/** One RFC 5424 message: the event as JSON in MSG, its chain position and key fields as structured data. */
export function syslogMessage(r: StreamRecord, cfg: Pick<StreamConfig, 'facility' | 'app_name'>, host = os.hostname()): string {
  const e: AuditEvent = r.event;
  const pri = (cfg.facility ?? 10) * 8 + (isWarning(e) ? 4 : 6);
  const sd: [string, string | undefined][] = [['chain', r.chain_id], ['seq', String(r.seq)], ['hash', r.hash], ['type', e.type], ['subject', e.subject], ['decision', e.decision], ['database', e.database]];
  const params = sd.filter(([, v]) => v !== undefined).map(([k, v]) => `${k}="${sdValue(v!)}"`).join(' ');
  return `<${pri}>1 ${e.ts ?? new Date().toISOString()} ${token(host, 255)} ${token(cfg.app_name ?? 'sluice', 48)} ${process.pid} ${token(e.type, 32)} [${SD_ID} ${params}] ${JSON.stringify(e)}`;
}

/**
 * Syslog over TCP (RFC 6587 octet counting), or TLS (RFC 5425). Each batch goes over its own connection, ended
 * cleanly: a batch counts as delivered only when the receiver closed it without a reset. Syslog has no
 * application-level acknowledgement, so this is as close to at-least-once as the protocol allows.
 */
export function syslogSink(cfg: StreamConfig): StreamSink {
  const ca = cfg.ca_file ? fs.readFileSync(cfg.ca_file) : undefined;
  const connect = (): net.Socket =>
    cfg.tls ? tls.connect({ host: cfg.host, port: cfg.port, ca, servername: net.isIP(cfg.host!) ? undefined : cfg.host }) : net.connect({ host: cfg.host, port: cfg.port! });
  return {
    name: cfg.name,
    kind: 'syslog',
    send(records) {
      const frames = records.map((r) => {
        const m = Buffer.from(syslogMessage(r, cfg), 'utf8');
        return Buffer.concat([Buffer.from(`${m.length} `), m]);
      });
      return new Promise<void>((resolve, reject) => {
        const s = connect();
        let failed: Error | undefined;
        const timer = setTimeout(() => s.destroy(new Error(`syslog receiver did not take the batch within ${cfg.timeout_ms} ms`)), cfg.timeout_ms);
        s.on('error', (e) => (failed ??= e));
        s.once(cfg.tls ? 'secureConnect' : 'connect', () => s.end(Buffer.concat(frames)));
        // Data from the receiver is not expected; reading it lets its close be seen.
        s.on('data', () => {});
        s.on('close', () => {
          clearTimeout(timer);
          if (failed) reject(new Error(`syslog ${cfg.host}:${cfg.port}: ${failed.message}`));
          else resolve();
        });
      });
    },
    async close() {},
  };
}
