import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { StreamConfig, StreamRecord, StreamSink } from './types.js';

/** Header carrying `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">` under the shared secret. */
export const SIGNATURE_HEADER = 'x-sluice-signature';
export const TIMESTAMP_HEADER = 'x-sluice-timestamp';

export const webhookSignature = (secret: string, timestamp: string, body: string): string => `sha256=${crypto.createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;

/**
 * POSTs each batch as JSON lines (one `{chain_id, seq, hash, event}` per line). A 2xx answer is delivery; anything
 * else (or no answer within timeout_ms) fails the batch, which is sent again: receivers dedupe on (chain_id, seq).
 */
export function webhookSink(cfg: StreamConfig): StreamSink {
  const url = new URL(cfg.url!);
  const secret = cfg.secret;
  if (cfg.secret_env && !secret) throw new Error(`audit stream ${cfg.name}: environment variable ${cfg.secret_env} (secret_env) is not set`);
  const ca = cfg.ca_file ? fs.readFileSync(cfg.ca_file) : undefined;
  const agent = url.protocol === 'https:' ? new https.Agent({ keepAlive: true, ca }) : new http.Agent({ keepAlive: true });
  return {
    name: cfg.name,
    kind: 'webhook',
    send(records: StreamRecord[]) {
      const body = records.map((r) => JSON.stringify(r)).join('\n') + '\n';
      const ts = String(Math.floor(Date.now() / 1000));
      const headers: Record<string, string> = {
        ...cfg.headers,
        'content-type': 'application/x-ndjson',
        'content-length': String(Buffer.byteLength(body)),
        [TIMESTAMP_HEADER]: ts,
        'x-sluice-events': `${records[0]!.chain_id}:${records[0]!.seq}-${records[records.length - 1]!.seq}`,
      };
      if (secret) headers[SIGNATURE_HEADER] = webhookSignature(secret, ts, body);
      const mod = url.protocol === 'https:' ? https : http;
      return new Promise<void>((resolve, reject) => {
        const req = mod.request(url, { method: 'POST', headers, agent, timeout: cfg.timeout_ms }, (res) => {
          res.resume();
          res.on('end', () => (res.statusCode! >= 200 && res.statusCode! < 300 ? resolve() : reject(new Error(`webhook answered ${res.statusCode}`))));
          res.on('error', reject);
        });
        req.on('timeout', () => req.destroy(new Error(`webhook did not answer within ${cfg.timeout_ms} ms`)));
        req.on('error', (e) => reject(new Error(`webhook: ${e.message}`)));
        req.end(body);
      });
    },
    async close() {
      agent.destroy();
    },
  };
}
