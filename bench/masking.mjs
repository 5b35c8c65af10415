#!/usr/bin/env node
// Masking throughput: DataRow messages of a 1000-row x 6-text-column result (like bench_wide in pgbench.mjs) run
// through the gateway's row masker with every column scanned by the zero-config detectors, with personal data in
// every row and without any. Prints cells per second of CPU time.
// usage: node bench/masking.mjs [--seconds 5]
import { parseArgs } from 'node:util';
import { maskDataRow } from '../dist/protocol/postgres/rows.js';
import { Writer } from '../dist/protocol/postgres/buffer.js';
import crypto from 'node:crypto';

const { values: o } = parseArgs({ options: { seconds: { type: 'string', default: '5' } } });
const md5 = (s) => crypto.createHash('md5').update(String(s)).digest('hex');
const message = (cells) => {
  const w = new Writer().int16(cells.length);
  for (const c of cells) w.int32(Buffer.byteLength(c)).bytes(Buffer.from(c));
  return w.message('D');
};
const rows = [];
const plainRows = [];
for (let g = 1; g <= 1000; g++) {
  // bench_pii's shape: one real email and one phone per row, the rest ordinary text and hex.
  rows.push(message([String(g), `${md5(g)}@example.com`, `Customer ${md5(g * 7)}`, `+1555${String((g * 7919) % 10000000).padStart(7, '0')}`, md5(g).repeat(2), md5(g * 3)]));
  // bench_wide's: no personal data (ids, names and hex hashes).
  plainRows.push(message([String(g), md5(g), `Customer ${md5(g * 7)}`, md5(g * 11), md5(g).repeat(2), md5(g * 3)]));
}
const plan = { key: Buffer.from('bench'), columns: Array.from({ length: 6 }, () => ({ kind: 'scan' })) };
const passPlan = { key: plan.key, columns: Array.from({ length: 6 }, () => ({ kind: 'pass' })) };
const counts = new Map();
/** Cells per second of CPU time (this process), so that other load on the machine does not count. */
const run = (set, p, ms) => {
  let cells = 0;
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  while (performance.now() - t0 < ms) {
    for (const r of set) maskDataRow(r, 0, r.length, p, counts);
    cells += set.length * 6;
  }
  const c = process.cpuUsage(c0);
  return cells / ((c.user + c.system) / 1e6);
};
run(rows, plan, 500); // warm up
run(plainRows, plan, 500);
const rate = run(rows, plan, Number(o.seconds) * 1000);
const plainRate = run(plainRows, plan, Number(o.seconds) * 1000);
const passRate = run(rows, passPlan, 1000);
console.log(`node bench/masking.mjs --seconds ${o.seconds}`);
const once = new Map();
for (const r of rows) maskDataRow(r, 0, r.length, plan, once);
console.log(`PII in every row, scanned and masked: ${(rate / 1e6).toFixed(2)}M cells/s (${((rate / 6) / 1000).toFixed(0)}k rows/s); masked in the 1000 rows: ${JSON.stringify(Object.fromEntries(once))}`);
console.log(`no PII, scanned: ${(plainRate / 1e6).toFixed(2)}M cells/s (${((plainRate / 6) / 1000).toFixed(0)}k rows/s)`);
console.log(`parse only (no column scanned): ${(passRate / 1e6).toFixed(2)}M cells/s`);
