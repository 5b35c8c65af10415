// Shared by the benchmark scripts: free ports and a gateway process started from a config file.
import { spawn } from 'node:child_process';
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
