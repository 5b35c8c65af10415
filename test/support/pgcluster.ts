import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { run } from './env.js';

const BIN = process.env.SLUICE_TEST_PGBIN ?? '/usr/lib/postgresql/15/bin';

/** A free TCP port on 127.0.0.1 (bound and released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export interface Cluster {
  port: number;
  url(database?: string): string;
  start(): Promise<void>;
  /** pg_ctl stop -m fast (connections are ended, the server is gone until start). */
  stop(): Promise<void>;
  destroy(): Promise<void>;
}

/**
 * A throwaway PostgreSQL cluster (initdb + pg_ctl in a temp dir, run as the postgres OS user when the tests run as
 * root) on a free port: a store the test can stop and start.
 */
export async function throwawayCluster(): Promise<Cluster> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-pgc-'));
  const data = path.join(dir, 'data');
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const { uid, gid } = await postgresIds();
    fs.chownSync(dir, uid, gid);
  }
  const pg = (bin: string, args: string[]) => (asRoot ? run('runuser', ['-u', 'postgres', '--', path.join(BIN, bin), ...args]) : run(path.join(BIN, bin), args));
  const must = async (bin: string, args: string[]) => {
    const r = await pg(bin, args);
    if (r.code !== 0) throw new Error(`${bin} ${args.join(' ')} failed (${r.code}): ${r.stderr || r.stdout}`);
  };
  await must('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8']);
  const port = await freePort();
  const cluster: Cluster = {
    port,
    url: (database = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${database}`,
    start: () => must('pg_ctl', ['-D', data, '-l', path.join(dir, 'log'), '-w', '-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`, 'start']),
    stop: () => must('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']),
    async destroy() {
      await pg('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  await cluster.start();
  return cluster;
}

async function postgresIds(): Promise<{ uid: number; gid: number }> {
  const u = await run('id', ['-u', 'postgres']);
  const g = await run('id', ['-g', 'postgres']);
  return { uid: Number(u.stdout.trim()), gid: Number(g.stdout.trim()) };
}
