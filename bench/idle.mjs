#!/usr/bin/env node
// Gateway memory per idle authenticated session: RSS of the gateway process before and after opening N sessions
// (each logged in with a Sluice key, one statement run, then left idle), and the same after the sessions close.
// Each session holds a server connection, so N is bounded by the upstream's max_connections; with --via-pgbouncer
// the gateway's upstream is PgBouncer in transaction mode (which holds thousands of idle clients on a few server
// connections), so N can be in the thousands (then bounded by the open-files limit: two sockets per session).
// usage: node bench/idle.mjs [--sessions 80] [--via-pgbouncer] [--warmup N]
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { cliFor, freePort, PG, root, startGateway, startPgBouncer, storeLine } from './lib.mjs';

const { values: o } = parseArgs({ options: { sessions: { type: 'string', default: '80' }, 'via-pgbouncer': { type: 'boolean', default: false }, warmup: { type: 'string' }, workers: { type: 'string', default: '1' } } });
const N = Number(o.sessions);
const W = Number(o.warmup ?? N);
const out = path.join(root, 'bench', 'out', 'idle');
fs.rmSync(out, { recursive: true, force: true });
fs.mkdirSync(out, { recursive: true });
fs.copyFileSync(path.join(root, 'examples', 'policy.yaml'), path.join(out, 'policy.yaml'));
const store = storeLine('postgres', out, 'sluice_idle_store');
const port = await freePort();
const bouncer = o['via-pgbouncer'] ? await startPgBouncer({ databases: { postgres: 'postgres' }, poolMode: 'transaction', poolSize: 20, maxClients: N + 100 }) : undefined;
const upstreamPort = bouncer?.port ?? PG.port;
const cfgFile = path.join(out, 'sluice.yaml');
fs.writeFileSync(cfgFile, `listen: { host: 127.0.0.1, port: ${port} }
tls: { mode: allow }
upstream: { host: ${PG.host}, port: ${upstreamPort}, user: ${PG.user}, sslmode: disable, pool: { size: 0 } }
policy: policy.yaml
${store}
limits: { max_connections: ${N + 10} }
workers: ${o.workers}
`);
const key = cliFor(cfgFile).key('idle');
const gw = await startGateway(root, cfgFile, port);
// Every gateway process (with --workers N, the primary and its workers): the sum of their RSS.
const pids = () => execFileSync('pgrep', ['-f', `sluice.js start -c ${cfgFile}`], { encoding: 'utf8' }).trim().split('\n').map(Number);
const rss = () => pids().reduce((sum, pid) => sum + Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]), 0);
const settle = () => new Promise((r) => setTimeout(r, 2000));

const clients = [];
try {
  // Warm up (parser, policy, catalogs, JIT, the heap's working size): open and close W sessions (default: as many
  // as will be measured), twice, then measure. Opened 20 at a time (each login is a key check and an upstream login).
  const openAll = async (n) => {
    let next = 0;
    const one = async () => {
      while (next < n) {
        next++;
        const c = new pg.Client({ host: '127.0.0.1', port, user: 'idle', password: key, database: 'postgres' });
        await c.connect();
        await c.query('SELECT 1');
        clients.push(c);
      }
    };
    await Promise.all(Array.from({ length: 20 }, one));
  };
  for (let round = 0; round < 2; round++) {
    await openAll(W);
    for (const c of clients.splice(0)) await c.end();
  }
  await settle();
  const before = rss();
  const t0 = Date.now();
  await openAll(N);
  const opened = (Date.now() - t0) / 1000;
  await settle();
  const open = rss();
  for (const c of clients.splice(0)) await c.end();
  await settle();
  const after = rss();
  const per = (open - before) / N;
  const cmd = `node bench/idle.mjs --sessions ${N}${bouncer ? ' --via-pgbouncer' : ''}${o.warmup ? ` --warmup ${W}` : ''}${o.workers !== '1' ? ` --workers ${o.workers}` : ''}`;
  console.log(`${cmd}\n\n| | gateway RSS (${pids().length} process(es)) |\n|---|---:|\n| before | ${(before / 1024).toFixed(1)} MiB |\n| ${N} idle sessions open (opened in ${opened.toFixed(1)} s) | ${(open / 1024).toFixed(1)} MiB |\n| after they closed | ${(after / 1024).toFixed(1)} MiB |\n| per idle session | ${per.toFixed(0)} KiB |\n| 10,000 sessions at that rate | ${((before + per * 10_000) / 1024 / 1024).toFixed(2)} GiB |`);
} finally {
  for (const c of clients) await c.end().catch(() => {});
  await gw.stop();
  bouncer?.stop();
}
