#!/usr/bin/env node
// Per-stage CPU cost (process CPU time) of one cached select-only statement in the gateway, measured in-process (single thread, no
// sockets): framing, analysis cache and policy (Governor.check), masking plan, a DataRow through the plan, the audit
// event (build, serialise, hash-chain, spool write) (the store write: bench/audit-store.mjs). Needs `npm run build` first.
// usage: node bench/stages.mjs [--iterations 50000]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = (p) => import(path.join(root, 'dist', p));
const { values: o } = parseArgs({ options: { iterations: { type: 'string', default: '50000' } } });
const N = Number(o.iterations);
const { loadParser } = await dist('analyze/analyze.js');
const { Governor, SessionMemo } = await dist('governor.js');
const { AuditLog, storeSink } = await dist('audit/audit.js');
const { loadPolicy } = await dist('policy/policy.js');
const { StatementAudit } = await dist('protocol/common/audit.js');
const { Framer } = await dist('protocol/postgres/framer.js');
const m = await dist('protocol/postgres/messages.js');
const { maskDataRow } = await dist('protocol/postgres/rows.js');
const { openStore } = await dist('store/db.js');
await loadParser();

const PG = { host: process.env.PGHOST ?? '127.0.0.1', port: Number(process.env.PGPORT ?? 5432), user: process.env.PGUSER ?? 'postgres' };
const admin = new pg.Client({ ...PG, database: 'postgres' });
await admin.connect();
await admin.query('DROP DATABASE IF EXISTS sluice_stages_store WITH (FORCE)');
await admin.query('CREATE DATABASE sluice_stages_store');
const store = await openStore({ kind: 'postgres', url: `postgres://${PG.user}@${PG.host}:${PG.port}/sluice_stages_store` });

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-stages-'));
// The PostgreSQL store's row format (COPY text), as in the interleaved runs; the embedded store takes JSON rows.
const sink = { format: process.env.SLUICE_STAGES_FORMAT ?? 'copy', async write() {} };
const audit = new AuditLog(sink, { flushMs: 60_000, batchSize: 1e9, spool: { dir, fsync: 1000, maxBytes: 1 << 30 } });
const g = new Governor({ policy: loadPolicy(path.join(root, 'examples', 'policy.yaml')), audit });
const id = { subject: 'service:bench', kind: 'service', groups: ['app'], method: 'key' };
const gov = g.for('postgres');
const sql = (i) => `SELECT abalance FROM pgbench_accounts WHERE aid = ${i % 100000};`;
const fields = [{ name: 'abalance', tableOid: 16400, attnum: 3, typeOid: 23, format: 0 }];
// A session's fields are one object for its life (until MySQL USE changes the database), as in the engines.
const sessionFields = { session_id: '5d1f0c3e-0000-4000-8000-000000000000', subject: id.subject, identity_kind: 'service', groups: id.groups, auth_method: 'key', client_addr: '127.0.0.1:50000', database: 'sluice_bench' };
const sa = new StatementAudit(gov, id, () => sessionFields);

const rows = [];
function stage(name, fn, n = N) {
  for (let i = 0; i < Math.min(n, 5000); i++) fn(i);
  // CPU time of the process, not wall time: on a shared machine other processes' load does not count.
  const c = process.cpuUsage();
  for (let i = 0; i < n; i++) fn(i);
  const d = process.cpuUsage(c);
  const us = (d.user + d.system) / n;
  rows.push([name, us]);
}

const query = m.query(sql(1));
const framer = new Framer(1 << 20);
stage('framing: one Query message through the Framer', () => framer.push(query, () => undefined));
stage('analysis cache + policy + guard (Governor.check)', (i) => gov.check(id, 'sluice_bench', sql(i)));
const memo = new SessionMemo(id);
stage('the same through the session memo (a statement the session ran before)', (i) => gov.check(id, 'sluice_bench', sql(i), undefined, memo));
const v = gov.check(id, 'sluice_bench', sql(1));
stage('masking plan for the RowDescription', () => gov.maskPlan(id, v.analysis, fields, 'sluice_bench'));
const plan = gov.maskPlan(id, v.analysis, fields, 'sluice_bench');
// What the PostgreSQL pipeline does for a RowDescription the session has seen with this analysis (PgPipeline.queryPlan).
const rowDesc = Buffer.from('T\0\0\0\x1d\0\x01abalance\0\0\0\x40\x10\0\x03\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0', 'latin1');
memo.rememberPlan(`f${rowDesc.toString('latin1')}`, v.analysis, gov.memoInputs('sluice_bench'), plan);
stage('the same through the session memo (a result shape the session saw before)', () => memo.plan(`f${rowDesc.toString('latin1', 0, rowDesc.length)}`, v.analysis, gov.memoInputs('sluice_bench')));
const row = Buffer.from([0x44, 0, 0, 0, 14, 0, 1, 0, 0, 0, 4, 0x2d, 0x31, 0x32, 0x33]);
stage('one DataRow through the plan (detector pre-scan)', () => plan && maskDataRow(row, 0, row.length, plan, new Map()));
// (Events are not timed without their spool writes: appended and never written, they pile up in memory.)
stage('audit spool: write one turn of 8 events', (i) => {
  for (let k = 0; k < 8; k++) sa.ran({ sql: sql(1), protocol: 'simple', analysis: v.analysis, rule: v.decision.rule, rows: 1, t0: performance.now() });
  gov.flushAudit();
}, N / 8);
rows[rows.length - 1][1] /= 8;
rows[rows.length - 1][0] = 'audit event incl. its share of a spool write (8 per turn)';

// The store write is measured by bench/audit-store.mjs (CPU per event in the gateway and in the store's server).
await audit.close();
await store.close();
await admin.query('DROP DATABASE IF EXISTS sluice_stages_store WITH (FORCE)');
await admin.end();

console.log(`node bench/stages.mjs --iterations ${N}\n\n| stage (one cached select-only statement) | µs |\n|---|---:|`);
for (const [name, us] of rows) console.log(`| ${name} | ${us.toFixed(2)} |`);
