#!/usr/bin/env node
// Gateway memory per idle authenticated session: RSS of the gateway process before and after opening N sessions
// (each logged in with a Sluice key, one statement run, then left idle), and the same after the sessions close.
// N is bounded by the upstream's max_connections (each session holds a server connection); the per-session figure
// is what scales. usage: node bench/idle.mjs [--sessions 80]
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { cliFor, freePort, PG, root, startGateway, storeLine } from './lib.mjs';

const { values: o } = parseArgs({ options: { sessions: { type: 'string', default: '80' } } });
const N = Number(o.sessions);
const out = path.join(root, 'bench', 'out', 'idle');
fs.rmSync(out, { recursive: true, force: true });
fs.mkdirSync(out, { recursive: true });
fs.copyFileSync(path.join(root, 'examples', 'policy.yaml'), path.join(out, 'policy.yaml'));
const store = storeLine('postgres', out, 'sluice_idle_store');
const port = await freePort();
const cfgFile = path.join(out, 'sluice.yaml');
fs.writeFileSync(cfgFile, `listen: { host: 127.0.0.1, port: ${port} }
tls: { mode: allow }
upstream: { host: ${PG.host}, port: ${PG.port}, user: ${PG.user}, sslmode: disable, pool: { size: 0 } }
policy: policy.yaml
${store}
limits: { max_connections: ${N + 10} }
`);
const key = cliFor(cfgFile).key('idle');
const gw = await startGateway(root, cfgFile, port);
const pid = Number(execFileSync('pgrep', ['-f', `sluice.js start -c ${cfgFile}`], { encoding: 'utf8' }).trim().split('\n')[0]);
const rss = () => Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
const settle = () => new Promise((r) => setTimeout(r, 2000));

const clients = [];
try {
  // Warm up (parser, policy, catalogs, JIT, the heap's working size): open and close as many sessions as will be
  // measured, twice, then measure.
  const openAll = async () => {
    for (let i = 0; i < N; i++) {
      const c = new pg.Client({ host: '127.0.0.1', port, user: 'idle', password: key, database: 'postgres' });
      await c.connect();
      await c.query('SELECT 1');
      clients.push(c);
    }
  };
  for (let round = 0; round < 2; round++) {
    await openAll();
    for (const c of clients.splice(0)) await c.end();
  }
  await settle();
  const before = rss();
  await openAll();
  await settle();
  const open = rss();
  for (const c of clients.splice(0)) await c.end();
  await settle();
  const after = rss();
  const per = (open - before) / N;
  console.log(`node bench/idle.mjs --sessions ${N}\n\n| | gateway RSS |\n|---|---:|\n| before | ${(before / 1024).toFixed(1)} MiB |\n| ${N} idle sessions open | ${(open / 1024).toFixed(1)} MiB |\n| after they closed | ${(after / 1024).toFixed(1)} MiB |\n| per idle session | ${per.toFixed(0)} KiB |\n| 10,000 sessions at that rate | ${((before + per * 10_000) / 1024 / 1024).toFixed(2)} GiB |`);
} finally {
  for (const c of clients) await c.end().catch(() => {});
  await gw.stop();
}
