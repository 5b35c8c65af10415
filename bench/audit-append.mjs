#!/usr/bin/env node
// CPU per audit event from append to "stored" (a sink that does no I/O), with the spool written every 8 events as
// the sessions do per relayed chunk. usage: npm run build && node bench/audit-append.mjs [new|old] [dist dir]
// ("old": a build from before the spool, whose AuditLog takes no spool option and whose sink serializes rows).
import { fileURLToPath } from 'node:url';
const which = process.argv[2] ?? 'new';
const root = process.argv[3] ?? fileURLToPath(new URL('../dist', import.meta.url));
const { AuditLog } = await import(`${root}/audit/audit.js`);
const fs = await import('node:fs');
const os = await import('node:os');
const path = await import('node:path');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mb-'));
const sink = which === 'old' ? { async write(rows) { JSON.stringify(rows); } } : { async write(json) { void json.length; } };
const log = which === 'old' ? new AuditLog(sink, { flushMs: 50 }) : new AuditLog(sink, { flushMs: 50, spool: { dir, fsync: 1000, maxBytes: 1 << 30 } });
const ev = (i) => ({ type: 'statement', session_id: '3f2a9c1e-1111-2222-3333-444455556666', subject: 'svc-bench', identity_kind: 'service', groups: ['app'], client_addr: '127.0.0.1:5555', database: 'sluice_bench', sql: `SELECT abalance FROM pgbench_accounts WHERE aid = ${i};`, protocol: 'extended', fingerprint: 'abc123', classes: ['read'], commands: ['SELECT'], tables: ['public.pgbench_accounts'], decision: 'allow', rule: 'app-read-write', rows: 1, duration_ms: 0.123 });
const N = 200_000;
for (let round = 0; round < 3; round++) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    log.append(ev(i));
    if (which !== 'old' && i % 8 === 7) log.flushSpool();
    if (i % 2000 === 1999) await log.flush();
  }
  await log.flush();
  const ns = Number(process.hrtime.bigint() - t0);
  console.log(`${which}: ${(ns / N / 1000).toFixed(2)} µs per event, append to stored (round ${round})`);
}
fs.rmSync(dir, { recursive: true, force: true });
process.exit(0);
