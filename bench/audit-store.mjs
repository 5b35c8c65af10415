#!/usr/bin/env node
// CPU per audit event from append to a PostgreSQL store, as the gateway ships them (spool, batches every 50 ms),
// and the CPU the store's server process spends on them. Events arrive in turns of 4 at a few thousand per second,
// like eight pgbench clients through one gateway.
// usage: npm run build && node bench/audit-store.mjs [dist dir] [--url postgres://...]
// (a dist dir from an older build measures that build: its storeSink takes the pool argument or ignores it)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';

const { values: o, positionals } = parseArgs({ allowPositionals: true, options: { url: { type: 'string', default: 'postgres://postgres@127.0.0.1:5432/sluice_bench_store' }, events: { type: 'string', default: '40000' } } });
const root = positionals[0] ?? fileURLToPath(new URL('../dist', import.meta.url));
const { AuditLog, storeSink } = await import(`${root}/audit/audit.js`);
const { openStore } = await import(`${root}/store/db.js`);
const admin = new pg.Client({ connectionString: o.url.replace(/\/[^/]*$/, '/postgres') });
await admin.connect();
const dbName = new URL(o.url).pathname.slice(1);
if (!(await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [dbName])).rowCount) await admin.query(`CREATE DATABASE ${dbName}`);
await admin.end();
const store = await openStore({ kind: 'postgres', url: o.url, pool_size: 1 });
// The one store connection's server process (the pool holds one connection; the sink uses it).
const backendPid = async () => (await store.db.selectNoFrom((eb) => eb.fn('pg_backend_pid', []).as('p')).executeTakeFirstOrThrow()).p;
const cpuOf = (pid) => {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) * (1e6 / 100);
  } catch {
    return NaN;
  }
};
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'audit-store-'));
const log = new AuditLog(storeSink(store.db, store.pool), { flushMs: 50, spool: { dir, fsync: 1000, maxBytes: 1 << 30 } });
const ev = (i) => ({ type: 'statement', session_id: '3f2a9c1e-1111-2222-3333-444455556666', subject: 'service:bench', identity_kind: 'service', display_name: 'bench', groups: ['app'], auth_method: 'key', key_id: '3f29f7b315f0de5e', client_addr: '127.0.0.1:5555', application_name: 'pgbench', database: 'sluice_bench', sql: `SELECT abalance FROM pgbench_accounts WHERE aid = ${i};`, protocol: 'simple', fingerprint: '348bee4e67e86ca6', classes: ['read'], commands: ['SELECT'], tables: ['pgbench_accounts'], columns: ['abalance', 'aid'], statements: 1, decision: 'allow', rule: 'app-read-write', rows: 1, duration_ms: 0.38 });
const N = Number(o.events);
for (let round = 0; round < 3; round++) {
  const pid = await backendPid();
  const c0 = process.cpuUsage();
  const b0 = cpuOf(pid);
  const t0 = Date.now();
  for (let i = 0; i < N; i += 4) {
    for (let k = 0; k < 4; k++) log.append(ev(i + k));
    log.flushSpool();
    await new Promise((r) => setImmediate(r));
    if (i % 40 === 0) await new Promise((r) => setTimeout(r, 1));
  }
  await log.flush();
  const c = process.cpuUsage(c0);
  const b = cpuOf(pid) - b0;
  console.log(`round ${round}: gateway ${((c.user + c.system) / N).toFixed(1)} µs/event (user ${(c.user / N).toFixed(1)}, sys ${(c.system / N).toFixed(1)}), store server process ${(b / N).toFixed(1)} µs/event, ${(N / ((Date.now() - t0) / 1000)).toFixed(0)} events/s`);
}
await log.close();
await store.close();
fs.rmSync(dir, { recursive: true, force: true });
