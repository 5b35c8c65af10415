import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { generate } from 'selfsigned';
import { queryAs } from './support/query.js';
import { startTestGateway, freshDatabase, tmpDir, type TestGateway } from './support/env.js';
import { freePort } from '../src/util/net.js';
import { webhookSignature } from '../src/audit/streams/webhook.js';

/**
 * End to end: every audit event reaches an OTLP/HTTP receiver (what the official exporter sends, decoded here), an
 * HTTPS webhook (self-signed certificate, HMAC checked), syslog over TCP and over TLS (RFC 5424, octet counting),
 * and a rotating JSONL file; then the receivers go down, events are written, the receivers come back, and every
 * event is delivered, none lost, each sink's checkpoint at the chain's head.
 */

const SECRET = 'hook-secret-7f3a';
type Got = Map<string, number>; // "chain seq" -> deliveries

interface Receiver {
  name: string;
  got: Got;
  start(): Promise<void>;
  stop(): Promise<void>;
}

const note = (got: Got, chain: string, seq: number) => got.set(`${chain} ${seq}`, (got.get(`${chain} ${seq}`) ?? 0) + 1);

/** Start/stop a server on a fixed port (it comes back on the same one after an outage). */
function receiver(name: string, port: number, make: (got: Got) => net.Server): Receiver {
  const got: Got = new Map();
  let server: net.Server | undefined;
  const sockets = new Set<net.Socket>();
  return {
    name,
    got,
    start: () =>
      new Promise<void>((resolve, reject) => {
        server = make(got);
        server.on(server instanceof tls.Server ? 'secureConnection' : 'connection', (s: net.Socket) => (sockets.add(s), s.on('close', () => sockets.delete(s))));
        server.once('error', reject);
        server.listen(port, '127.0.0.1', () => resolve());
      }),
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        (server as http.Server).closeAllConnections?.();
        server!.close(() => resolve());
      }),
  };
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    req.on('data', (d) => parts.push(d));
    req.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
  });
}

/** What the OpenTelemetry exporter POSTs (OTLP/HTTP JSON): resourceLogs → scopeLogs → logRecords with attributes. */
const otlpServer = (got: Got, bodies: unknown[]) =>
  http.createServer(async (req, res) => {
    const body = JSON.parse(await readBody(req));
    bodies.push({ path: req.url, type: req.headers['content-type'], body });
    for (const rl of body.resourceLogs ?? [])
      for (const sl of rl.scopeLogs ?? [])
        for (const r of sl.logRecords ?? []) {
          const a = Object.fromEntries(r.attributes.map((x: { key: string; value: Record<string, unknown> }) => [x.key, Object.values(x.value)[0]]));
          note(got, String(a['sluice.chain_id']), Number(a['sluice.seq']));
        }
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  });

const webhookServer = (got: Got, cert: { cert: string; private: string }, bad: string[]) =>
  https.createServer({ cert: cert.cert, key: cert.private }, async (req, res) => {
    const body = await readBody(req);
    const ts = String(req.headers['x-sluice-timestamp']);
    if (req.headers['x-sluice-signature'] !== webhookSignature(SECRET, ts, body)) {
      bad.push(String(req.headers['x-sluice-signature']));
      return res.writeHead(401).end();
    }
    for (const l of body.trim().split('\n')) {
      const r = JSON.parse(l);
      note(got, r.chain_id, r.seq);
    }
    res.writeHead(204).end();
  });

/** RFC 6587 octet-counted RFC 5424 messages; the structured data carries chain and seq. */
function syslogHandler(got: Got, messages: string[]) {
  return (s: net.Socket) => {
    let buf = Buffer.alloc(0);
    s.on('error', () => {});
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const sp = buf.indexOf(0x20);
        if (sp < 0) return;
        const len = Number(buf.subarray(0, sp).toString());
        if (buf.length < sp + 1 + len) return;
        const msg = buf.subarray(sp + 1, sp + 1 + len).toString('utf8');
        buf = buf.subarray(sp + 1 + len);
        messages.push(msg);
        const m = /\[sluice@32473 chain="([^"]+)" seq="(\d+)"/.exec(msg);
        if (m) note(got, m[1]!, Number(m[2]));
      }
    });
  };
}

let t: TestGateway;
let db: { name: string; drop: () => Promise<void> };
let dir: string;
let key: string;
let receivers: Receiver[];
const otlpBodies: unknown[] = [];
const badSignatures: string[] = [];
const syslogMessages: string[] = [];

const statement = (sql: string) => queryAs(t, key, db.name, sql);

/** Every event in the store, as "chain seq". */
async function stored(): Promise<string[]> {
  await t.gw.governor.audit.flush();
  const rows = await t.gw.store.db.selectFrom('audit_events').select(['chain_id', 'seq']).execute();
  return rows.map((r) => `${r.chain_id} ${Number(r.seq)}`).sort();
}

function fileRecords(): Got {
  const got: Got = new Map();
  for (const f of fs.readdirSync(dir).filter((n) => n.startsWith('audit.jsonl'))) {
    for (const l of fs.readFileSync(path.join(dir, f), 'utf8').split('\n').filter(Boolean)) {
      const r = JSON.parse(l);
      note(got, r.chain_id, r.seq);
    }
  }
  return got;
}

async function until(what: string, ok: () => Promise<boolean> | boolean, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const missing = async (got: Got) => (await stored()).filter((k) => !got.has(k));

beforeAll(async () => {
  dir = tmpDir('streams');
  const cert = await generate([{ name: 'commonName', value: 'localhost' }], { keySize: 2048, algorithm: 'sha256' });
  fs.writeFileSync(path.join(dir, 'ca.pem'), cert.cert);
  process.env.SLUICE_TEST_HOOK_SECRET = SECRET;
  const [otlpPort, hookPort, sysPort, sysTlsPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
  receivers = [
    receiver('otlp', otlpPort, (got) => otlpServer(got, otlpBodies)),
    receiver('webhook', hookPort, (got) => webhookServer(got, cert, badSignatures)),
    receiver('syslog', sysPort, (got) => net.createServer(syslogHandler(got, syslogMessages))),
    receiver('syslog-tls', sysTlsPort, (got) => tls.createServer({ cert: cert.cert, key: cert.private }, syslogHandler(got, syslogMessages))),
  ];
  for (const r of receivers) await r.start();
  db = await freshDatabase('sluice_streams', 'CREATE TABLE t (id int primary key, v text); INSERT INTO t VALUES (1, $$a$$);');
  t = await startTestGateway({
    config: `api: { listen: { host: 127.0.0.1, port: 0 } }
audit:
  streams:
    - { name: otel, kind: otlp, url: "http://127.0.0.1:${otlpPort}/v1/logs", poll_ms: 100, batch_size: 7 }
    - { name: siem, kind: webhook, url: "https://127.0.0.1:${hookPort}/ingest", secret_env: SLUICE_TEST_HOOK_SECRET, ca_file: ${path.join(dir, 'ca.pem')}, poll_ms: 100, batch_size: 5 }
    - { name: syslog, kind: syslog, host: 127.0.0.1, port: ${sysPort}, poll_ms: 100 }
    - { name: syslog-tls, kind: syslog, host: localhost, port: ${sysTlsPort}, tls: true, ca_file: ${path.join(dir, 'ca.pem')}, poll_ms: 100 }
    - { name: archive, kind: file, path: ${path.join(dir, 'audit.jsonl')}, max_bytes: 4096, keep: 1000, poll_ms: 100 }`,
  });
  key = await t.key('service', ['app'], { name: 'etl' });
}, 60_000);

afterAll(async () => {
  await t?.stop();
  for (const r of receivers ?? []) await r.stop().catch(() => {});
  await db?.drop();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('audit streams', () => {
  it('deliver every event as written to OTLP, webhook, syslog (TCP and TLS) and a rotating file', async () => {
    for (let i = 0; i < 5; i++) await statement(`SELECT v FROM t WHERE id = ${i}`);
    await expect(statement('DROP TABLE t')).rejects.toThrow(/denied/);
    for (const r of receivers) await until(`${r.name} to have every event`, async () => (await missing(r.got)).length === 0);
    await until('the file sink to have every event', async () => (await missing(fileRecords())).length === 0);
    // What each receiver got is what the store holds: the OTLP records came from the official exporter's JSON.
    const first = otlpBodies[0] as { path: string; type: string; body: { resourceLogs: { resource: { attributes: { key: string }[] }; scopeLogs: { scope: { name: string }; logRecords: { severityText: string; body: { stringValue: string } }[] }[] }[] } };
    expect(first.path).toBe('/v1/logs');
    expect(first.type).toBe('application/json');
    expect(first.body.resourceLogs[0]!.resource.attributes.map((a) => a.key)).toContain('service.name');
    expect(first.body.resourceLogs[0]!.scopeLogs[0]!.scope.name).toBe('sluice.audit');
    const denied = syslogMessages.find((m) => m.includes('DROP TABLE t'));
    expect(denied).toMatch(/^<84>1 \S+ \S+ sluice \d+ statement \[sluice@32473 chain="[^"]+" seq="\d+" hash="[0-9a-f]{64}" type="statement" subject="service:etl" decision="deny"/);
    expect(badSignatures).toEqual([]);
    // The file was rotated (4 KiB per file) and nothing was lost across files.
    expect(fs.readdirSync(dir).filter((n) => n.startsWith('audit.jsonl.')).length).toBeGreaterThan(0);
  });

  it('lose nothing and block nothing through a receiver outage, then catch up and advance their checkpoints', async () => {
    for (const r of receivers) await r.stop();
    const before = (await stored()).length;
    // Statements go on while every receiver is down.
    const t0 = Date.now();
    for (let i = 0; i < 20; i++) expect((await statement(`SELECT v FROM t WHERE id = ${i % 3}`)).rowCount).toBeLessThanOrEqual(1);
    expect(Date.now() - t0).toBeLessThan(15_000);
    const during = await stored();
    expect(during.length).toBeGreaterThan(before + 20);
    await until('the sinks to report the outage', () => t.gw.compliance!.streamer!.health().filter((h) => h.kind !== 'file').every((h) => h.status === 'failing' && h.backlog > 0));
    const metrics = await (await fetch(`http://127.0.0.1:${t.gw.apiPort}/metrics/compliance`)).text();
    expect(metrics).toMatch(/^sluice_audit_stream_up\{sink="siem",kind="webhook"\} 0$/m);
    expect(Number(/^sluice_audit_stream_backlog\{sink="siem",kind="webhook"\} (\d+)$/m.exec(metrics)![1])).toBeGreaterThan(0);
    // The same on the gateway's own /metrics and /healthz (still 200: a sink outage never stops statements).
    expect(await (await fetch(`http://127.0.0.1:${t.gw.apiPort}/metrics`)).text()).toMatch(/^sluice_audit_stream_up\{sink="otel",kind="otlp"\} 0$/m);
    const hz = await fetch(`http://127.0.0.1:${t.gw.apiPort}/healthz`);
    expect(hz.status).toBe(200);
    expect(((await hz.json()) as { streams: { name: string; status: string }[] }).streams.find((s) => s.name === 'syslog')?.status).toBe('failing');
    const status = await (await fetch(`http://127.0.0.1:${t.gw.apiPort}/api/compliance/status`, { headers: { authorization: `Bearer ${key}` } })).status;
    expect(status).toBe(403);
    for (const r of receivers) await r.start();
    for (const r of receivers) await until(`${r.name} to catch up`, async () => (await missing(r.got)).filter((k) => during.includes(k)).length === 0, 90_000);
    // Caught up; a sink whose last attempt failed (a reconnect racing the receiver's restart) reports ok again at
    // its next attempt.
    await until('every sink to report ok', () => t.gw.compliance!.streamer!.health().every((h) => h.status === 'ok'), 30_000);
    for (const h of t.gw.compliance!.streamer!.health()) expect([h.name, h.status]).toEqual([h.name, 'ok']);
    // Each sink's checkpoint in the store reached the head of the gateway's chain as it was after the outage.
    const chain = t.gw.governor.audit.chainId;
    const lastDuring = Math.max(...during.filter((k) => k.startsWith(`${chain} `)).map((k) => Number(k.split(' ')[1])));
    const cps = await t.gw.store.db.selectFrom('stream_checkpoints').selectAll().where('chain_id', '=', chain).execute();
    expect(cps.map((c) => c.sink).sort()).toEqual(['archive', 'otel', 'siem', 'syslog', 'syslog-tls']);
    for (const c of cps) expect(Number(c.seq)).toBeGreaterThanOrEqual(lastDuring);
  }, 180_000);
});
