import { loadConfig } from '../config.js';
import { startGateway } from '../gateway.js';
import { log } from '../util/log.js';

/** `sluice start`: run until SIGINT/SIGTERM; SIGHUP reloads the policy (a bad file keeps the old one). */
export async function runStart(file: string): Promise<number> {
  const cfg = loadConfig(file);
  const gw = await startGateway(cfg);
  log.info(`sluice listening on ${gw.host}:${gw.port} (upstream ${cfg.upstream.host}:${cfg.upstream.port}, store ${cfg.store.kind}, policy ${cfg.policy})`);
  process.on('SIGHUP', () => {
    try {
      const p = gw.reloadPolicy();
      log.info(`policy reloaded: ${p.rules.length} rules`);
    } catch (e) {
      log.error(`policy reload failed, keeping the previous policy: ${(e as Error).message}`);
    }
  });
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  log.info('shutting down');
  await gw.close();
  return 0;
}
