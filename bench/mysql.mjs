#!/usr/bin/env node
// mariadb-slap through the Sluice MySQL engine vs directly against the same MariaDB, in one run; prints ratios.
// usage: node bench/mysql.mjs [--queries 40000] [--clients 8] [--workers 1] [--store postgres|embedded]
import { execFileSync } from 'node:child_process';
import { cliFor, commonOptions, freePort, PG, psql, root, startGateway, storeLine } from './lib.mjs';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values: o } = parseArgs({
  options: {
    ...commonOptions,
    queries: { type: 'string', default: '40000' },
    masking: { type: 'string', default: 'on' },
  },
});
const MY = { host: process.env.MYHOST ?? '127.0.0.1', port: process.env.MYPORT ?? '3306', user: process.env.MYUSER ?? 'root' };
const out = path.join(root, 'bench', 'out-mysql');
fs.mkdirSync(out, { recursive: true });
const my = (sql) => execFileSync('mariadb', ['-h', MY.host, '-P', MY.port, '-u', MY.user, '-e', sql], { stdio: ['ignore', 'pipe', 'pipe'] });

console.error('preparing the database ...');
my(`DROP DATABASE IF EXISTS sluice_bench_my; CREATE DATABASE sluice_bench_my; USE sluice_bench_my;
  CREATE TABLE accounts (id INT PRIMARY KEY, name VARCHAR(64), balance INT) ENGINE=InnoDB;
  INSERT INTO accounts SELECT seq, CONCAT('account ', seq), seq % 1000 FROM seq_1_to_10000;
  CREATE TABLE wide ENGINE=InnoDB AS SELECT seq AS id, CONCAT(MD5(seq), '@example.com') AS email, CONCAT('Customer ', MD5(seq * 7)) AS name,
    CONCAT('+1555', LPAD(seq * 7919 % 10000000, 7, '0')) AS phone, REPEAT(MD5(seq), 2) AS notes, MD5(seq * 3) AS token FROM seq_1_to_1000;`);
const store = storeLine(o.store, out, 'sluice_bench_my_store');
const pgPort = await freePort();
const myPort = await freePort();
const policyText = fs.readFileSync(path.join(root, 'examples', 'policy.yaml'), 'utf8');
// --masking off: the same policy with the zero-config detectors switched off (column rules still apply).
fs.writeFileSync(path.join(out, 'policy.yaml'), o.masking === 'off' ? policyText.replace('masking:\n', 'masking:\n  detectors: false\n') : policyText);
const cfgFile = path.join(out, 'sluice.yaml');
fs.writeFileSync(cfgFile, `listen: { host: 127.0.0.1, port: ${pgPort} }
tls: { mode: allow }
upstream: { host: ${PG.host}, port: ${PG.port}, user: ${PG.user}, sslmode: disable }
mysql: { listen: { host: 127.0.0.1, port: ${myPort} }, upstream: { host: ${MY.host}, port: ${MY.port}, user: ${MY.user}, sslmode: disable } }
policy: policy.yaml
${store}
workers: ${o.workers}
`);
const { cli, key: newKey } = cliFor(cfgFile);
const key = newKey('bench');

console.error('starting gateway ...');
const gw = await startGateway(root, cfgFile, myPort);

const Q = Number(o.queries);
const scenarios = [
  { name: 'point select (text protocol)', query: 'SELECT id, name, balance FROM accounts WHERE id = 4242', queries: Q },
  { name: '1000-row x 6-column result', query: 'SELECT * FROM wide', queries: Math.max(200, Math.floor(Q / 100)) },
].filter((s) => !o.only || s.name.includes(o.only));
function slap(s, target) {
  const conn = target === 'direct' ? ['-h', MY.host, '-P', MY.port, '-u', MY.user] : ['-h', '127.0.0.1', '-P', String(myPort), '-u', 'bench', `-p${key}`, '--skip-ssl'];
  const res = execFileSync('mariadb-slap', [...conn, '--create-schema=sluice_bench_my', `--query=${s.query}`, `--concurrency=${o.clients}`, `--number-of-queries=${s.queries}`, '--iterations=1'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const secs = Number(/Average number of seconds to run all queries: ([\d.]+)/.exec(res)?.[1]);
  if (!secs) throw new Error(`mariadb-slap ${target} failed:\n${res}`);
  return s.queries / secs;
}
const rows = [];
try {
  for (const s of scenarios) {
    const direct = slap(s, 'direct');
    const gateway = slap(s, 'gateway');
    rows.push({ name: s.name, direct, gateway, ratio: gateway / direct });
    console.error(`${s.name}: direct ${direct.toFixed(0)} q/s, gateway ${gateway.toFixed(0)} q/s, ratio ${(gateway / direct).toFixed(2)}`);
  }
} finally {
  await gw.stop();
}
const table = [`| scenario | direct q/s | through Sluice q/s | ratio |`, `|---|---:|---:|---:|`, ...rows.map((r) => `| ${r.name} | ${r.direct.toFixed(0)} | ${r.gateway.toFixed(0)} | ${r.ratio.toFixed(2)} |`)].join('\n');
const cmd = `node bench/mysql.mjs --queries ${o.queries} --clients ${o.clients} --workers ${o.workers} --store ${o.store} --masking ${o.masking}${o.only ? ` --only '${o.only}'` : ''}`;
console.log(`\n${cmd}\n(mariadb-slap, ${o.clients} concurrent connections; every statement through Sluice parsed, checked against examples/policy.yaml and audited; masking detectors ${o.masking})\n\n${table}\n`);
fs.writeFileSync(path.join(out, 'last.md'), `${cmd}\n\n${table}\n`);
