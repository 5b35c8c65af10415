#!/usr/bin/env node
// pgbench through the Sluice gateway vs directly against the same PostgreSQL, in one run; prints ratios.
// usage: node bench/pgbench.mjs [--duration 15] [--workers 2] [--store postgres|embedded] [--clients 8] [--scale 10]
import { execFileSync } from 'node:child_process';
import { cliFor, commonOptions, freePort, PG, psql, root, startGateway, storeLine } from './lib.mjs';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values: o } = parseArgs({
  options: {
    ...commonOptions,
    duration: { type: 'string', default: '15' },
    workers: { type: 'string', default: '2' },
    scale: { type: 'string', default: '10' },
    masking: { type: 'string', default: 'on' },
    'upstream-socket': { type: 'string' },
  },
});
const out = path.join(root, 'bench', 'out');
fs.mkdirSync(out, { recursive: true });

console.error('preparing databases ...');
psql('postgres', 'DROP DATABASE IF EXISTS sluice_bench WITH (FORCE)');
psql('postgres', 'CREATE DATABASE sluice_bench');
execFileSync('pgbench', ['-i', '-q', '-s', o.scale, '-h', PG.host, '-p', PG.port, '-U', PG.user, 'sluice_bench'], { stdio: 'ignore' });
psql('sluice_bench', `CREATE TABLE bench_wide AS SELECT g AS id, md5(g::text) || '@example.com' AS email, 'Customer ' || md5((g*7)::text) AS name,
  '+1555' || lpad((g * 7919 % 10000000)::text, 7, '0') AS phone, repeat(md5(g::text), 2) AS notes, md5((g*3)::text) AS token FROM generate_series(1, 1000) g`);
const store = storeLine(o.store, out, 'sluice_bench_store');
const port = await freePort();
const policyText = fs.readFileSync(path.join(root, 'examples', 'policy.yaml'), 'utf8');
// --masking off: the same policy with the zero-config detectors switched off (column rules still apply).
fs.writeFileSync(path.join(out, 'policy.yaml'), o.masking === 'off' ? policyText.replace('masking:\n', 'masking:\n  detectors: false\n') : policyText);
const cfgFile = path.join(out, 'sluice.yaml');
fs.writeFileSync(cfgFile, `listen: { host: 127.0.0.1, port: ${port} }
tls: { mode: allow }
upstream: { host: ${o['upstream-socket'] ?? PG.host}, port: ${PG.port}, user: ${PG.user}, sslmode: disable }
policy: policy.yaml
${store}
workers: ${o.workers}
`);
const { cli, key: newKey } = cliFor(cfgFile);
const key = newKey('bench');

console.error(`starting gateway (${o.workers} worker process(es), ${o.store} store) ...`);
const gw = await startGateway(root, cfgFile, port);

fs.writeFileSync(path.join(out, 'wide.sql'), 'SELECT * FROM bench_wide;\n');
const T = o.duration;
const C = o.clients;
const scenarios = [
  { name: 'select-only, simple protocol', args: ['-S', '-M', 'simple', '-c', C, '-j', '2', '-T', T] },
  { name: 'select-only, extended protocol', args: ['-S', '-M', 'extended', '-c', C, '-j', '2', '-T', T] },
  { name: 'select-only, prepared', args: ['-S', '-M', 'prepared', '-c', C, '-j', '2', '-T', T] },
  { name: '1000-row x 6-column result', args: ['-f', path.join(out, 'wide.sql'), '-c', '4', '-j', '2', '-T', T] },
  { name: 'connection churn (-C), select-only', args: ['-S', '-C', '-c', '4', '-j', '2', '-T', T] },
].filter((s) => !o.only || s.name.includes(o.only));

function pgbench(args, target) {
  const conn = target === 'direct' ? `host=${PG.host} port=${PG.port} user=${PG.user} dbname=sluice_bench sslmode=disable` : `host=127.0.0.1 port=${port} user=bench dbname=sluice_bench sslmode=disable`;
  const res = execFileSync('pgbench', ['-n', ...args, conn], { encoding: 'utf8', env: { ...process.env, PGPASSWORD: target === 'direct' ? '' : key }, stdio: ['ignore', 'pipe', 'pipe'] });
  const tps = Number(/tps = ([\d.]+)/.exec(res)?.[1]);
  const failed = Number(/number of failed transactions: (\d+)/.exec(res)?.[1] ?? 0);
  if (!tps || failed) throw new Error(`pgbench ${target} failed:\n${res}`);
  return tps;
}

const rows = [];
try {
  for (const s of scenarios) {
    const direct = pgbench(s.args, 'direct');
    const gateway = pgbench(s.args, 'gateway');
    rows.push({ name: s.name, direct, gateway, ratio: gateway / direct });
    console.error(`${s.name}: direct ${direct.toFixed(0)} tps, gateway ${gateway.toFixed(0)} tps, ratio ${(gateway / direct).toFixed(2)}`);
  }
} finally {
  await gw.stop();
}
const audited = cli('audit', 'list', '--type', 'statement', '--limit', '1', '--json').trim() ? 'yes' : 'no';

const table = [
  `| scenario | direct tps | through Sluice tps | ratio |`,
  `|---|---:|---:|---:|`,
  ...rows.map((r) => `| ${r.name} | ${r.direct.toFixed(0)} | ${r.gateway.toFixed(0)} | ${r.ratio.toFixed(2)} |`),
].join('\n');
const cmd = `node bench/pgbench.mjs --duration ${o.duration} --workers ${o.workers} --store ${o.store} --clients ${o.clients} --scale ${o.scale} --masking ${o.masking}${o.only ? ` --only '${o.only}'` : ''}${o['upstream-socket'] ? ` --upstream-socket ${o['upstream-socket']}` : ''}`;
console.log(`\n${cmd}\n(pgbench scale ${o.scale}, ${C} clients for select-only; every statement through Sluice parsed, checked against examples/policy.yaml and audited: ${audited}; masking detectors ${o.masking})\n\n${table}\n`);
fs.writeFileSync(path.join(out, 'last.md'), `${cmd}\n\n${table}\n`);
