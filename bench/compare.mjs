#!/usr/bin/env node
// Direct PostgreSQL, PgBouncer (session mode, Debian's pgbouncer) and Sluice side by side, in one interleaved run:
// every round runs each workload against each target in turn, so drift on the shared machine hits all alike.
// Prints median tps, the ratio to direct, the process CPU per transaction (Sluice, PgBouncer) and, at one client,
// the latency each hop adds.
// usage: node bench/compare.mjs [--rounds 3] [--duration 8] [--clients 8] [--workers 1] [--store postgres|embedded]
//                               [--only select-simple,...] [--no-pgbouncer]
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { cliFor, commonOptions, freePort, PG, psql, root, startGateway, startPgBouncer, storeLine } from './lib.mjs';

const { values: o } = parseArgs({
  options: {
    ...commonOptions,
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '8' },
    scale: { type: 'string', default: '10' },
    'no-pgbouncer': { type: 'boolean', default: false },
  },
});
const DB = 'sluice_bench';
const out = path.join(root, 'bench', 'out');
fs.mkdirSync(out, { recursive: true });

console.error('preparing databases ...');
psql('postgres', `DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
psql('postgres', `CREATE DATABASE ${DB}`);
execFileSync('pgbench', ['-i', '-q', '-s', o.scale, '-h', PG.host, '-p', PG.port, '-U', PG.user, DB], { stdio: 'ignore' });
// 1000 rows x 6 text columns; `bench_pii` has personal data in every row (emails and phone numbers the zero-config
// detectors mask), `bench_wide` the same shape without.
psql(DB, `CREATE TABLE bench_wide AS SELECT g AS id, md5(g::text) AS a, 'Customer ' || md5((g*7)::text) AS b, md5((g*11)::text) AS c, repeat(md5(g::text), 2) AS notes, md5((g*3)::text) AS d FROM generate_series(1, 1000) g;
  CREATE TABLE bench_pii AS SELECT g AS id, md5(g::text) || '@example.com' AS email, 'Customer ' || md5((g*7)::text) AS name, '+1 555 ' || lpad((g * 7919 % 10000000)::text, 7, '0') AS phone, repeat(md5(g::text), 2) AS notes, md5((g*3)::text) AS d FROM generate_series(1, 1000) g;`);

// ------------------------------------------------------------------ Sluice
const store = storeLine(o.store, out, 'sluice_bench_store');
const sluicePort = await freePort();
fs.copyFileSync(path.join(root, 'examples', 'policy.yaml'), path.join(out, 'policy.yaml'));
const cfgFile = path.join(out, 'compare.yaml');
fs.writeFileSync(cfgFile, `listen: { host: 127.0.0.1, port: ${sluicePort} }
tls: { mode: allow }
upstream: { host: ${PG.host}, port: ${PG.port}, user: ${PG.user}, sslmode: disable }
policy: policy.yaml
${store}
workers: ${o.workers}
`);
const { cli, key: newKey } = cliFor(cfgFile);
const key = newKey('bench');
console.error(`starting Sluice (${o.workers} process(es), ${o.store} store, examples/policy.yaml) ...`);
const gw = await startGateway(root, cfgFile, sluicePort);
const sluicePids = () => execFileSync('pgrep', ['-f', `sluice.js start -c ${cfgFile}`], { encoding: 'utf8' }).trim().split('\n').map(Number);

// ------------------------------------------------------------------ PgBouncer
let bouncer;
if (!o['no-pgbouncer']) {
  bouncer = await startPgBouncer({ databases: { [DB]: DB }, poolMode: 'session', poolSize: Math.max(20, Number(o.clients)), maxClients: 1000 });
}

// ------------------------------------------------------------------ workloads
fs.writeFileSync(path.join(out, 'wide.sql'), 'SELECT * FROM bench_wide;\n');
fs.writeFileSync(path.join(out, 'pii.sql'), 'SELECT * FROM bench_pii;\n');
const C = o.clients;
const T = o.duration;
const workloads = [
  { name: 'select-simple', label: 'select-only, simple', args: ['-S', '-M', 'simple', '-c', C, '-j', '2'] },
  { name: 'select-extended', label: 'select-only, extended', args: ['-S', '-M', 'extended', '-c', C, '-j', '2'] },
  { name: 'select-prepared', label: 'select-only, prepared', args: ['-S', '-M', 'prepared', '-c', C, '-j', '2'] },
  { name: 'wide', label: '1000-row result', args: ['-f', path.join(out, 'wide.sql'), '-c', '4', '-j', '2'] },
  { name: 'wide-pii', label: '1000-row result, PII in every row (masked by Sluice)', args: ['-f', path.join(out, 'pii.sql'), '-c', '4', '-j', '2'] },
  { name: 'churn', label: 'connection churn (-C), select-only', args: ['-S', '-C', '-c', C, '-j', '2'] },
  { name: 'select-c1', label: '1 client, select-only (latency)', args: ['-S', '-M', 'simple', '-c', '1', '-j', '1'] },
].filter((w) => !o.only || o.only.split(',').includes(w.name));
const targets = [
  { name: 'direct', port: PG.port, pids: () => [] },
  ...(bouncer ? [{ name: 'pgbouncer', port: bouncer.port, pids: () => [bouncer.pid] }] : []),
  { name: 'sluice', port: sluicePort, pids: sluicePids, password: key },
];

const ticks = (pids) => pids.reduce((n, pid) => n + fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ').slice(11, 13).reduce((a, b) => a + Number(b), 0), 0);
const HZ = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }));

function run(w, t, seconds) {
  const pids = t.pids();
  const before = ticks(pids);
  const conn = `host=127.0.0.1 port=${t.port} user=${PG.user} dbname=${DB} sslmode=disable`;
  const r = spawnSync('pgbench', ['-n', ...w.args, '-T', String(seconds), conn], { encoding: 'utf8', env: { ...process.env, PGPASSWORD: t.password ?? '' } });
  const cpu = (ticks(pids) - before) / HZ;
  const tps = Number(/tps = ([\d.]+)/.exec(r.stdout)?.[1]);
  const tx = Number(/number of transactions actually processed: (\d+)/.exec(r.stdout)?.[1]);
  const latency = Number(/latency average = ([\d.]+) ms/.exec(r.stdout)?.[1]);
  const failed = Number(/number of failed transactions: (\d+)/.exec(r.stdout)?.[1] ?? 0);
  if (!tps || failed) throw new Error(`pgbench ${w.name} via ${t.name} failed:\n${r.stdout}\n${r.stderr}`);
  return { tps, latency, cpuPerTx: pids.length ? (cpu / tx) * 1e6 : undefined };
}

const median = (xs) => {
  const s = xs.filter((x) => x !== undefined).sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : undefined;
};
const results = new Map();
try {
  for (const w of workloads) for (const t of targets) run(w, t, 2); // warm-up (JIT, pools, caches)
  for (let round = 1; round <= Number(o.rounds); round++) {
    for (const w of workloads) {
      for (const t of targets) {
        const r = run(w, t, Number(T));
        const k = `${w.name}/${t.name}`;
        if (!results.has(k)) results.set(k, []);
        results.get(k).push(r);
        console.error(`round ${round} ${w.name} ${t.name}: ${r.tps.toFixed(0)} tps${r.cpuPerTx ? `, ${r.cpuPerTx.toFixed(0)} µs CPU/tx` : ''}`);
      }
    }
  }
} finally {
  await gw.stop();
  if (bouncer) spawnSync('kill', [String(bouncer.pid)]);
}

const m = (w, t, f) => median((results.get(`${w}/${t}`) ?? []).map((r) => r[f]));
const fmt = (x, d = 2) => (x === undefined ? '—' : x.toFixed(d));
const lines = [
  `| workload | direct tps | PgBouncer / direct | Sluice / direct | Sluice ÷ PgBouncer | CPU µs/tx PgBouncer | CPU µs/tx Sluice |`,
  `|---|---:|---:|---:|---:|---:|---:|`,
];
for (const w of workloads) {
  const d = m(w.name, 'direct', 'tps');
  const b = bouncer ? m(w.name, 'pgbouncer', 'tps') : undefined;
  const s = m(w.name, 'sluice', 'tps');
  lines.push(`| ${w.label} | ${d.toFixed(0)} | ${fmt(b && b / d)} | ${fmt(s / d)} | ${fmt(b && s / b)} | ${fmt(m(w.name, 'pgbouncer', 'cpuPerTx'), 0)} | ${fmt(m(w.name, 'sluice', 'cpuPerTx'), 0)} |`);
}
const c1 = workloads.find((w) => w.name === 'select-c1');
if (c1) {
  const d = m('select-c1', 'direct', 'latency');
  lines.push('', `Latency added at one client (select-only, simple): PgBouncer ${bouncer ? `+${((m('select-c1', 'pgbouncer', 'latency') - d) * 1000).toFixed(0)} µs` : '—'}, Sluice +${((m('select-c1', 'sluice', 'latency') - d) * 1000).toFixed(0)} µs (direct ${(d * 1000).toFixed(0)} µs).`);
}
const cmd = `node bench/compare.mjs --rounds ${o.rounds} --duration ${o.duration} --clients ${o.clients} --workers ${o.workers} --store ${o.store}${o.only ? ` --only ${o.only}` : ''}`;
const text = `${cmd}\n(medians of ${o.rounds} interleaved rounds; ${bouncer ? bouncer.version : 'no PgBouncer'}; Sluice with examples/policy.yaml, zero-config masking and audit to a ${o.store} store)\n\n${lines.join('\n')}\n`;
console.log(`\n${text}`);
fs.writeFileSync(path.join(out, 'compare.md'), text);
