import cluster from 'node:cluster';
import fs from 'node:fs';
import { loadConfig, adminSocketPath, spoolOptions, type SluiceConfig } from '../config.js';
import { startGateway, type Gateway } from '../gateway.js';
import { remoteOps, serveAdmin, localOps } from '../admin.js';
import { openStore } from '../store/db.js';
import { AuditLog, storeSink } from '../audit/audit.js';
import { loadPolicy } from '../policy/policy.js';
import { log } from '../util/log.js';

type ClusterMessage = { type: 'cancel'; pid: number; secret: number } | { type: 'reload' } | { type: 'ready'; port: number };

const untilSignal = () =>
  new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });

function reload(gw: Gateway): void {
  try {
    const p = gw.reloadPolicy();
    log.info(`policy reloaded: ${p.rules.length} rules`);
  } catch (e) {
    log.error(`policy reload failed, keeping the previous policy: ${(e as Error).message}`);
  }
}

/**
 * `sluice start`: run until SIGINT/SIGTERM; SIGHUP reloads the policy (a bad file keeps the old one).
 * With `workers: N` (N > 1) the listening port is shared by N processes (node:cluster); with the embedded store
 * only the primary opens it and workers reach it over the admin socket.
 */
export async function runStart(file: string): Promise<number> {
  const cfg = loadConfig(file);
  if (cfg.workers > 1) return cluster.isPrimary ? runPrimary(cfg) : runWorker(cfg);
  const gw = await startGateway(cfg);
  log.info(`sluice listening on ${gw.host}:${gw.port} (upstream ${cfg.upstream.host}:${cfg.upstream.port}, store ${cfg.store.kind}, policy ${cfg.policy})`);
  process.on('SIGHUP', () => reload(gw));
  await untilSignal();
  log.info('shutting down');
  await gw.close();
  return 0;
}

async function runPrimary(cfg: SluiceConfig): Promise<number> {
  loadPolicy(cfg.policy); // fail fast, with file:line, before forking
  // The primary owns the embedded store and serves it to the workers; with a PostgreSQL store it only serves the CLI.
  const store = await openStore(cfg.store);
  const audit = new AuditLog(storeSink(store.db, store.pool), { spool: spoolOptions(cfg, true), onError: (e) => log.error(`audit: cannot write to the store: ${e.message}`), onNotice: (m) => log.warn(`audit: ${m}`) });
  const sock = adminSocketPath(cfg);
  const admin = sock ? await serveAdmin(sock, localOps(store.db, audit)) : undefined;
  if (cfg.store.kind === 'embedded' && !sock) throw new Error('workers with the embedded store need an admin socket');
  let stopping = false;
  const fork = () => {
    const w = cluster.fork();
    w.on('message', (m: ClusterMessage) => {
      if (m.type === 'cancel') for (const other of Object.values(cluster.workers ?? {})) if (other && other !== w) other.send(m);
      if (m.type === 'ready' && w.id === 1) log.info(`sluice listening on ${cfg.listen.host}:${m.port} with ${cfg.workers} workers (store ${cfg.store.kind})`);
    });
  };
  cluster.on('exit', (w, code, signal) => {
    if (stopping) return;
    log.error(`worker ${w.process.pid} exited (${signal ?? code}); starting a new one`);
    setTimeout(fork, 500);
  });
  for (let i = 0; i < cfg.workers; i++) fork();
  process.on('SIGHUP', () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.send({ type: 'reload' } satisfies ClusterMessage);
  });
  await untilSignal();
  stopping = true;
  log.info('shutting down workers');
  await Promise.all(
    Object.values(cluster.workers ?? {}).map(
      (w) =>
        new Promise<void>((resolve) => {
          if (!w) return resolve();
          w.once('exit', () => resolve());
          w.process.kill('SIGTERM');
        }),
    ),
  );
  admin?.close();
  if (sock) fs.rmSync(sock, { force: true });
  await audit.close();
  await store.close();
  return 0;
}

async function runWorker(cfg: SluiceConfig): Promise<number> {
  const sock = adminSocketPath(cfg);
  const remote = cfg.store.kind === 'embedded' ? remoteOps(sock!) : undefined;
  const gw = await startGateway(cfg, {
    remote,
    admin: false,
    forwardCancel: (pid, secret) => process.send?.({ type: 'cancel', pid, secret } satisfies ClusterMessage),
  });
  process.on('message', (m: ClusterMessage) => {
    if (m.type === 'cancel') gw.registry.cancel(m.pid, m.secret);
    if (m.type === 'reload') reload(gw);
  });
  process.send?.({ type: 'ready', port: gw.port } satisfies ClusterMessage);
  await untilSignal();
  await gw.close();
  remote?.close();
  return 0;
}
