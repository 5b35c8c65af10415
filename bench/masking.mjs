#!/usr/bin/env node
// Masking throughput: DataRow messages of a 1000-row x 6-text-column result (like bench_wide in pgbench.mjs) run
// through the gateway's row masker with every column scanned by the zero-config detectors. Prints cells/s.
// usage: node bench/masking.mjs [--seconds 5]
import { parseArgs } from 'node:util';
import { maskDataRow } from '../dist/masking/rows.js';
import { Writer } from '../dist/protocol/postgres/buffer.js';
import crypto from 'node:crypto';

const { values: o } = parseArgs({ options: { seconds: { type: 'string', default: '5' } } });
const md5 = (s) => crypto.createHash('md5').update(String(s)).digest('hex');
const rows = [];
for (let g = 1; g <= 1000; g++) {
  // Same shapes as bench_wide: one real email and one phone per row, the rest ordinary text and hex.
  const cells = [String(g), `${md5(g)}@example.com`, `Customer ${md5(g * 7)}`, `+1555${String((g * 7919) % 10000000).padStart(7, '0')}`, md5(g).repeat(2), md5(g * 3)];
  const w = new Writer().int16(cells.length);
  for (const c of cells) w.int32(Buffer.byteLength(c)).bytes(Buffer.from(c));
  rows.push(w.message('D'));
}
const plan = { key: Buffer.from('bench'), columns: Array.from({ length: 6 }, () => ({ kind: 'scan' })) };
const counts = new Map();
const run = (ms) => {
  let cells = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    for (const r of rows) maskDataRow(r, 0, r.length, plan, counts);
    cells += rows.length * 6;
  }
  return cells / ((performance.now() - t0) / 1000);
};
run(500); // warm up
const rate = run(Number(o.seconds) * 1000);
const passPlan = { key: plan.key, columns: Array.from({ length: 6 }, () => ({ kind: 'pass' })) };
let t0 = performance.now();
let n = 0;
while (performance.now() - t0 < 1000) {
  for (const r of rows) maskDataRow(r, 0, r.length, passPlan, counts);
  n += rows.length * 6;
}
console.log(`node bench/masking.mjs --seconds ${o.seconds}`);
const once = new Map();
for (const r of rows) maskDataRow(r, 0, r.length, plan, once);
console.log(`scanned and masked: ${(rate / 1e6).toFixed(2)}M cells/s (${((rate / 6) / 1000).toFixed(0)}k rows/s); masked in the 1000 rows: ${JSON.stringify(Object.fromEntries(once))}`);
console.log(`parse only (no column scanned): ${(n / 1e6).toFixed(2)}M cells/s`);
