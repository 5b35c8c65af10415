import fs from 'node:fs';
import { spawn } from 'node:child_process';
import { expect } from 'vitest';
import { run, tmpDir } from './env.js';
import { freePort } from '../../src/util/net.js';

/**
 * A MariaDB server of the test's own (a fresh data directory, started with `args`), for settings that must not touch
 * the shared server: `fn` gets its port; the server is killed and its files removed afterwards.
 */
export async function withOwnMariadb<T>(name: string, args: string[], fn: (port: number) => Promise<T>): Promise<T> {
  const dir = tmpDir(name);
  const install = await run('mariadb-install-db', ['--no-defaults', `--datadir=${dir}/data`, '--user=root', '--auth-root-authentication-method=normal', '--skip-test-db']);
  expect(install.code).toBe(0);
  const port = await freePort();
  const server = spawn('mariadbd', ['--no-defaults', `--datadir=${dir}/data`, `--port=${port}`, '--bind-address=127.0.0.1', `--socket=${dir}/s.sock`, '--user=root', '--skip-log-bin', ...args], { stdio: 'ignore' });
  try {
    await expect.poll(async () => (await run('mariadb-admin', ['-h', '127.0.0.1', '-P', String(port), '-u', 'root', 'ping'])).code, { timeout: 60_000, interval: 500 }).toBe(0);
    return await fn(port);
  } finally {
    server.kill('SIGKILL');
    await new Promise((r) => server.once('exit', r));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
