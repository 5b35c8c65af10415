// Shared by the benchmark scripts: free ports and a gateway process started from a config file.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import path from 'node:path';

export const freePort = () =>
  new Promise((r) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => r(p));
    });
  });

/**
 * `sluice start -c cfgFile`, resolved once `port` accepts connections (and a second more to settle).
 * SLUICE_BENCH_PROF=DIR writes the gateway's CPU profile there.
 */
export async function startGateway(root, cfgFile, port) {
  const prof = process.env.SLUICE_BENCH_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.SLUICE_BENCH_PROF}`] : [];
  const gw = spawn('node', [...prof, path.join(root, 'bin', 'sluice.js'), 'start', '-c', cfgFile], { stdio: ['ignore', 'inherit', 'pipe'], env: { ...process.env, SLUICE_LOG: 'warn' } });
  gw.stderr.on('data', (d) => process.stderr.write(d));
  for (let i = 0; ; i++) {
    const up = await new Promise((r) => {
      const s = net.connect(port, '127.0.0.1');
      s.on('connect', () => {
        s.destroy();
        r(true);
      });
      s.on('error', () => r(false));
    });
    if (up) break;
    if (i > 200) throw new Error('gateway did not start');
    await new Promise((r) => setTimeout(r, 100));
  }
  await new Promise((r) => setTimeout(r, 1000));
  return {
    async stop() {
      gw.kill('SIGTERM');
      await new Promise((r) => gw.once('exit', r));
    },
  };
}

/** The repository's root, the local PostgreSQL the benchmarks use, and psql against it. */
export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const PG = { host: process.env.PGHOST ?? '127.0.0.1', port: process.env.PGPORT ?? '5432', user: process.env.PGUSER ?? 'postgres' };
export const psql = (db, sql) => execFileSync('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', PG.host, '-p', PG.port, '-U', PG.user, '-d', db, '-c', sql], { stdio: ['ignore', 'pipe', 'pipe'] });

/**
 * The gateway's `store:` config line: an embedded store under `out`, or a fresh PostgreSQL database `pgName` on
 * the local server (dropped and created).
 */
export function storeLine(kind, out, pgName) {
  fs.rmSync(path.join(out, 'store'), { recursive: true, force: true });
  if (kind !== 'postgres') return `store: { kind: embedded, path: ${path.join(out, 'store')} }`;
  psql('postgres', `DROP DATABASE IF EXISTS ${pgName} WITH (FORCE)`);
  psql('postgres', `CREATE DATABASE ${pgName}`);
  return `store: { kind: postgres, url: "postgres://${PG.user}@${PG.host}:${PG.port}/${pgName}" }`;
}

/** Run the CLI against a config file; `key(...)` creates a Sluice key and returns it. */
export function cliFor(cfgFile) {
  const cli = (...a) => execFileSync('node', [path.join(root, 'bin', 'sluice.js'), ...a, '-c', cfgFile], { encoding: 'utf8' });
  const key = (name, groups = 'app') => JSON.parse(cli('keys', 'create', '--name', name, '--kind', 'service', '--groups', groups, '--json')).key;
  return { cli, key };
}

/** Options every benchmark takes (parseArgs): pgbench/slap clients, gateway processes, store kind, a scenario filter. */
export const commonOptions = {
  clients: { type: 'string', default: '8' },
  workers: { type: 'string', default: '1' },
  store: { type: 'string', default: 'postgres' },
  only: { type: 'string' },
};

/**
 * Debian's PgBouncer in front of the local PostgreSQL (`databases`: the name clients use -> the server's database),
 * started as a daemon; resolves to its port, pid, directory and version, and `stop()`.
 */
export async function startPgBouncer({ databases, poolMode = 'session', poolSize = 20, maxClients = 1000 }) {
  const bin = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'].find((p) => fs.existsSync(p));
  if (!bin) throw new Error('pgbouncer is not installed (apt-get install pgbouncer), or run with --no-pgbouncer');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-pgbouncer-'));
  const port = await freePort();
  fs.writeFileSync(path.join(dir, 'userlist.txt'), `"${PG.user}" ""\n`);
  fs.writeFileSync(path.join(dir, 'pgbouncer.ini'), `[databases]
${Object.entries(databases).map(([name, db]) => `${name} = host=${PG.host} port=${PG.port} dbname=${db}`).join('\n')}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_type = trust
auth_file = ${dir}/userlist.txt
pool_mode = ${poolMode}
default_pool_size = ${poolSize}
max_client_conn = ${maxClients}
ignore_startup_parameters = extra_float_digits
logfile = ${dir}/pgbouncer.log
pidfile = ${dir}/pgbouncer.pid
`);
  // PgBouncer refuses to run as root: run it as the postgres system user then.
  const asUser = process.getuid?.() === 0 ? ['-u', 'postgres'] : [];
  if (asUser.length) execFileSync('chown', ['-R', 'postgres', dir]);
  execFileSync(bin, ['-d', ...asUser, path.join(dir, 'pgbouncer.ini')]);
  for (let i = 0; i < 50 && !fs.existsSync(path.join(dir, 'pgbouncer.pid')); i++) await new Promise((r) => setTimeout(r, 100));
  const pid = Number(fs.readFileSync(path.join(dir, 'pgbouncer.pid'), 'utf8'));
  return { port, pid, dir, version: execFileSync(bin, ['--version'], { encoding: 'utf8' }).split('\n')[0], stop: () => void spawnSync('kill', [String(pid)]) };
}
