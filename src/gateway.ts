import net from 'node:net';
import crypto from 'node:crypto';
import tls from 'node:tls';
import fs from 'node:fs';
import { generate } from 'selfsigned';
import { openStore, type Store } from './store/db.js';
import { AuditLog, storeSink, type AuditSink } from './audit/audit.js';
import { Governor } from './governor.js';
import { loadPolicy, type Policy } from './policy/policy.js';
import { OidcVerifier } from './identity/oidc.js';
import { AwsVerifier } from './identity/aws.js';
import { verifyKey } from './identity/keys.js';
import { AuthThrottle } from './identity/throttle.js';
import { loadParser } from './analyze/analyze.js';
import { PgSession, type PgEngineConfig } from './protocol/postgres/session.js';
import { UpstreamPool } from './protocol/postgres/pool.js';
import { SessionRegistry, type LiveSession } from './protocol/common/registry.js';
import { adminSocketPath, spoolOptions, type SluiceConfig } from './config.js';
import { localOps, opsApprovalStore, serveAdmin, type AdminOps } from './admin.js';
import { Approvals } from './approvals/service.js';
import { kyselyApprovalStore } from './approvals/store.js';
import { makePreview, makeMysqlPreview } from './approvals/preview.js';
import { McpTools } from './mcp/tools.js';
import { mysqlBackend, pgBackend } from './mcp/backends.js';
import os from 'node:os';
import { MySession, type MyEngineConfig } from './protocol/mysql/session.js';
import { mysqlRoutineCatalog } from './protocol/mysql/catalog.js';
import { probeMyUpstream, type MyUpstreamTarget } from './protocol/mysql/upstream.js';
import { loadMysqlParser } from './analyze/mysql.js';
import { ViewCatalog } from './masking/views.js';
import { FunctionCatalog, COLUMN_CATALOG_SQL, DOMAIN_CATALOG_SQL, FUNCTION_CATALOG_SQL, FUNCTION_OID_SQL, OPERATOR_CATALOG_SQL, POLICY_CATALOG_SQL, catalogFacts, policyFacts } from './analyze/catalog.js';
import { upstreamClient } from './protocol/postgres/client.js';
import type pg from 'pg';
import { MyClient, myQuote } from './protocol/mysql/client.js';
import { kyselyLiveSessions, type LiveSessionStore, type SessionView } from './store/livesessions.js';
import { startApi } from './api/server.js';
import { startCheckpointer, startCompliance, type Compliance } from './compliance/service.js';
import { log } from './util/log.js';
import { ConnectionGate } from './protocol/common/gate.js';
import { errorResponse as pgError } from './protocol/postgres/messages.js';
import { errPacket, frame } from './protocol/mysql/packets.js';

export interface Gateway {
  port: number;
  /** Port of the HTTP API, when configured. */
  apiPort?: number;
  /** Port of the MySQL engine, when configured. */
  mysqlPort?: number;
  host: string;
  governor: Governor;
  registry: SessionRegistry;
  approvals: Approvals;
  /** The PostgreSQL engine's server connection pool (none when upstream.pool.size is 0). */
  pool?: UpstreamPool;
  /** The store, when this process owns it (not in a worker that reaches it through the primary). */
  store: Store;
  /** Checkpoints, policy versions, streams (when this process owns the store). */
  compliance?: Compliance;
  reloadPolicy(): Policy;
  close(): Promise<void>;
}

async function secureContext(cfg: SluiceConfig): Promise<tls.SecureContext | undefined> {
  if (cfg.tls.mode === 'disable') return undefined;
  if (cfg.tls.cert_file && cfg.tls.key_file) {
    return tls.createSecureContext({ cert: fs.readFileSync(cfg.tls.cert_file), key: fs.readFileSync(cfg.tls.key_file) });
  }
  // No certificate configured: a fresh self-signed one keeps tokens off the wire in clear text (clients use
  // sslmode=require; verify-full needs a configured certificate).
  const pems = await generate([{ name: 'commonName', value: 'sluice-gateway' }], { keySize: 2048, algorithm: 'sha256' });
  log.warn('tls: no certificate configured; using a generated self-signed certificate');
  return tls.createSecureContext({ cert: pems.cert, key: pems.private });
}

export interface GatewayOptions {
  policy?: Policy;
  store?: Store;
  /** Worker mode: store operations go to the process that owns the store. */
  remote?: AdminOps;
  /** Serve the admin socket (default true; workers leave it to the primary). */
  admin?: boolean;
  /** Where a CancelRequest for a session this process does not know goes (other cluster workers). */
  forwardCancel?: (pid: number, secret: number) => void;
}

/** Audit batches to the process that owns the (embedded) store, in the format it takes; the spool bounds their size. */
const remoteSink = (remote: Pick<AdminOps, 'auditWrite'>): AuditSink => ({ format: 'json', write: (rows, head) => remote.auditWrite(rows, head) });

/** Where an engine connects, with the gateway's own credentials (the config's upstream without its database list). */
const targetOf = (u: Omit<SluiceConfig['upstream'], 'pool'>) => ({ host: u.host, port: u.port, user: u.user, password: u.password, sslmode: u.sslmode, connectTimeoutMs: (u.connect_timeout_s ?? 10) * 1000 });
type Targets = { postgres: PgEngineConfig['upstream']; mysql?: MyUpstreamTarget };

/**
 * Run the gateway's own catalog reads on a database. They must never block or abort client work: short lock and
 * statement timeouts, a read-only transaction, no locks kept (the connection ends with it).
 */
async function readCatalog<T>(upstream: Targets['postgres'], db: string, signal: AbortSignal, read: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = await upstreamClient(upstream, db, 'sluice-catalog');
  // Aborted (the database is about to be dropped or renamed): the connection ends now, so it does not hold it.
  const end = () => void c.end().catch(() => {});
  signal.addEventListener('abort', end, { once: true });
  try {
    if (signal.aborted) throw new Error('aborted');
    // No JIT: the function catalog's query costs enough to be compiled (0.5-1 s here, against 40 ms without).
    await c.query(`BEGIN READ ONLY; SET LOCAL lock_timeout = '500ms'; SET LOCAL statement_timeout = '10s'; SET LOCAL jit = off`);
    const r = await read(c);
    await c.query('COMMIT');
    return r;
  } finally {
    signal.removeEventListener('abort', end);
    await c.end().catch(() => {});
  }
}

/** What each PostgreSQL database's functions and operators do (see analyze/catalog.ts). */
function functionCatalog(targets: Targets) {
  return new FunctionCatalog((db, signal) =>
    readCatalog(targets.postgres, db, signal, async (c) => {
      const f = await c.query(FUNCTION_CATALOG_SQL);
      const o = await c.query(OPERATOR_CATALOG_SQL);
      const oids = await c.query(FUNCTION_OID_SQL);
      const cols = await c.query(COLUMN_CATALOG_SQL);
      const domains = await c.query<{ name: string }>(DOMAIN_CATALOG_SQL);
      const policies = await c.query<{ schema: string; table: string; functions: string; operators: string }>(POLICY_CATALOG_SQL);
      return { ...catalogFacts(f.rows, o.rows, oids.rows, cols.rows), volatileDomains: new Set(domains.rows.map((d) => d.name.toLowerCase())), policies: policyFacts(policies.rows) };
    }),
  );
}

/** The views of each database, read with the gateway's own credentials (see masking/views.ts). */
function viewCatalogs(targets: Targets, governor: () => Governor) {
  const postgres = new ViewCatalog(
    (db, signal) =>
      readCatalog(targets.postgres, db, signal, async (c) => {
        const r = await c.query<{ schema: string; name: string; definition: string }>(
          `SELECT schemaname AS schema, viewname AS name, definition FROM pg_views WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
           UNION ALL SELECT schemaname, matviewname, definition FROM pg_matviews`,
        );
        return r.rows;
      }),
    (sql) => governor().cache.analyze(sql),
  );
  const m = targets.mysql;
  const mysql = m
    ? new ViewCatalog(
        async (db) => {
          const c = await MyClient.connect(m, db);
          try {
            const r = await c.query(`SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ${myQuote(db)}`);
            return r.rows.map(([schema, name, definition]) => ({ schema: schema ?? db, name: name ?? '', definition: definition ?? '' }));
          } finally {
            c.close();
          }
        },
        (sql) => governor().mysqlCache.analyze(sql),
      )
    : undefined;
  return { postgres, mysql };
}

/** Blast-radius previews on the upstream of the engine a request came from. */
function previewFor(cfg: SluiceConfig, targets: Targets, governor: () => Governor) {
  const timeoutMs = cfg.approvals.preview.timeout_ms;
  const pg = makePreview({ upstream: targets.postgres, analyze: (sql) => governor().cache.analyze(sql), timeoutMs });
  const my = targets.mysql ? makeMysqlPreview({ upstream: targets.mysql, analyze: (sql) => governor().mysqlCache.analyze(sql), timeoutMs }) : undefined;
  return (a: Parameters<typeof pg>[0]) => (a.engine === 'mysql' ? (my ? my(a) : Promise.resolve({ kind: 'none' as const })) : pg(a));
}

/** A connection over a limit is told why (the engine's error) and closed. */
function refuse(socket: net.Socket, error: Buffer): void {
  socket.on('error', () => {});
  socket.end(error);
  setTimeout(() => socket.destroy(), 2000).unref();
}

/** Beyond this many sockets the listener drops connections without a word (file descriptors are finite). */
const hardCap = (cfg: SluiceConfig) => cfg.limits.max_connections + cfg.limits.max_unauthenticated + 256;

/** statement_timeout of MCP tool queries. */
const MCP_STATEMENT_TIMEOUT_MS = 30_000;

/** How often each gateway publishes its live sessions (and picks up termination requests). */
const LIVE_PUBLISH_MS = 2000;

function sessionView(s: LiveSession, gateway: string): SessionView {
  const i = s.info;
  return {
    id: i.id,
    gateway,
    subject: i.identity?.subject,
    kind: i.identity?.kind,
    acting_for: i.identity?.actingFor,
    database: i.database,
    client_addr: i.clientAddr,
    application_name: i.applicationName,
    started_at: i.startedAt.toISOString(),
    tls: i.tls,
    statements: i.statements,
    transaction: i.txStatus,
    current_sql: i.currentSql,
    awaiting_approval: i.awaitingApproval,
    engine: i.engine ?? 'postgres',
  };
}

/** The MySQL/MariaDB listener: same Governor, registry and TLS certificate as the PostgreSQL one. */
async function startMysqlEngine(cfg: SluiceConfig, upstream: MyUpstreamTarget, governor: Governor, gate: ConnectionGate, secureContext: tls.SecureContext | undefined): Promise<{ server: net.Server; port: number }> {
  const m = cfg.mysql!;
  await loadMysqlParser();
  // The upstream's version and capabilities shape the gateway's own handshake (a login also proves the credentials).
  const hello = await probeMyUpstream(upstream);
  const engine: MyEngineConfig = {
    upstream,
    databases: m.upstream.databases ?? [],
    tlsMode: cfg.tls.mode,
    secureContext,
    limits: { maxPacketBytes: m.max_packet_bytes, authTimeoutMs: cfg.limits.auth_timeout_s * 1000 },
    hello,
  };
  const server = net.createServer({ noDelay: true }, (socket) => {
    const refusal = gate.admit('mysql', socket);
    if (refusal) return refuse(socket, frame(0, errPacket(1040, '08004', refusal)).bytes);
    try {
      new MySession(socket, governor, engine, gate.registry);
    } catch (e) {
      log.error(`mysql session setup failed: ${(e as Error).message}`);
      socket.destroy();
    }
  });
  server.maxConnections = hardCap(cfg);
  server.on('error', (e) => log.error(`mysql listener: ${e.message}`));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(m.listen.port, m.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as net.AddressInfo).port;
  log.info(`mysql engine listening on ${m.listen.host}:${port} (upstream ${upstream.host}:${upstream.port}, ${hello.serverVersion})`);
  return { server, port };
}

export async function startGateway(cfg: SluiceConfig, opts: GatewayOptions = {}): Promise<Gateway> {
  await loadParser();
  const policy = opts.policy ?? loadPolicy(cfg.policy);
  const store = opts.remote ? undefined : (opts.store ?? (await openStore(cfg.store)));
  const sink = opts.remote ? remoteSink(opts.remote) : storeSink(store!.db, store!.pool);
  const audit = new AuditLog(sink, { spool: spoolOptions(cfg, true), onError: (e) => log.error(`audit: cannot write to the store: ${e.message}`), onNotice: (m) => log.warn(`audit: ${m}`) });
  const oidc = cfg.identity.oidc?.length ? new OidcVerifier(cfg.identity.oidc) : undefined;
  const aws = cfg.identity.aws ? new AwsVerifier(cfg.identity.aws) : undefined;
  const keyCheck = opts.remote ? (k: string) => opts.remote!.verifyKey(k) : (k: string) => verifyKey(store!.db, k);
  const targets: Targets = { postgres: targetOf(cfg.upstream), mysql: cfg.mysql ? targetOf(cfg.mysql.upstream) : undefined };
  const upstream = targets.postgres;
  const ac = cfg.approvals;
  // Bound once the Governor exists: approval events are counted in /metrics like every recorded event.
  let governor: Governor | undefined;
  const approvals = new Approvals({
    store: opts.remote ? opsApprovalStore(opts.remote) : kyselyApprovalStore(store!.db),
    audit: (e) => governor!.record(e),
    publicUrl: ac.public_url,
    webhookUrl: ac.webhook_url,
    waitTimeoutS: ac.wait_timeout_s,
    validForS: ac.valid_for_s,
    maxGrantS: ac.max_grant_s,
    pollMs: ac.poll_ms,
    preview: ac.preview.enabled ? previewFor(cfg, targets, () => governor!) : undefined,
  });
  await approvals.start();
  governor = new Governor({ policy, audit, oidc, verifyAws: aws && ((p: string) => aws.verify(p)), verifyKey: cfg.identity.keys === false ? undefined : keyCheck, approvals, views: viewCatalogs(targets, () => governor!), functions: functionCatalog(targets), mysqlRoutines: targets.mysql && mysqlRoutineCatalog(targets.mysql, (sql) => governor!.mysqlCache.analyze(sql)) });
  governor.setPolicy(policy);
  governor.throttle = new AuthThrottle(cfg.identity.throttle);
  // Signed checkpoints, policy versions and audit streams run where the store is (see compliance/service.ts).
  const compliance = store ? await startCompliance(cfg, { db: store.db, audit, policy: () => governor!.currentPolicy, record: (e) => governor!.record(e), onNotice: (m) => log.warn(m) }) : undefined;
  const workerSigner = opts.remote ? startCheckpointer(cfg, audit, (c) => opts.remote!.checkpointSave(c)) : undefined;
  const pc = cfg.upstream.pool;
  const pool = pc.size > 0 ? new UpstreamPool(upstream, { size: pc.size, idleTimeoutMs: pc.idle_timeout_s * 1000, maxLifetimeMs: pc.max_lifetime_s * 1000, resetTimeoutMs: 5000 }) : undefined;
  const engine: PgEngineConfig = {
    upstream,
    pool,
    databases: cfg.upstream.databases ?? [],
    tlsMode: cfg.tls.mode,
    secureContext: await secureContext(cfg),
    limits: {
      maxMessageBytes: cfg.limits.max_message_bytes,
      authTimeoutMs: cfg.limits.auth_timeout_s * 1000,
      maxPrepared: cfg.limits.max_prepared,
    },
  };
  const gate = new ConnectionGate({ maxConnections: cfg.limits.max_connections, maxUnauthenticated: cfg.limits.max_unauthenticated, maxUnauthenticatedPerSource: cfg.limits.max_unauthenticated_per_source });
  const registry = gate.registry;
  registry.forwardCancel = opts.forwardCancel;
  const server = net.createServer({ noDelay: true }, (socket) => {
    const refusal = gate.admit('postgres', socket);
    if (refusal) return refuse(socket, pgError({ severity: 'FATAL', code: '53300', message: refusal }));
    try {
      new PgSession(socket, governor, engine, registry);
    } catch (e) {
      log.error(`session setup failed: ${(e as Error).message}`);
      socket.destroy();
    }
  });
  server.maxConnections = hardCap(cfg);
  server.on('error', (e) => log.error(`listener: ${e.message}`));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(cfg.listen.port, cfg.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as net.AddressInfo;
  const mysql = targets.mysql ? await startMysqlEngine(cfg, targets.mysql, governor, gate, engine.secureContext) : undefined;
  const ops = store ? localOps(store.db, audit) : opts.remote!;
  const sockPath = opts.admin === false || !store ? undefined : adminSocketPath(cfg);
  const admin = sockPath ? await serveAdmin(sockPath, ops) : undefined;
  const mcp = new McpTools({
    governor,
    backends: [
      pgBackend(upstream, cfg.upstream.databases ?? [], MCP_STATEMENT_TIMEOUT_MS),
      ...(targets.mysql ? [mysqlBackend(targets.mysql, cfg.mysql!.upstream.databases ?? [], MCP_STATEMENT_TIMEOUT_MS)] : []),
    ],
  });
  // Live sessions are published to the store so any gateway's API lists (and can terminate) all of them.
  const gatewayId = `${os.hostname()}:${process.pid}:${crypto.randomBytes(3).toString('hex')}`;
  const live: LiveSessionStore = opts.remote
    ? { publish: (g, v) => opts.remote!.sessionsPublish(g, v), list: (f) => opts.remote!.sessionsList(f), requestTerminate: (id, by) => opts.remote!.sessionsTerminate(id, by) }
    : kyselyLiveSessions(store!.db);
  const localViews = (): SessionView[] => [...registry.sessions.values()].map((x) => sessionView(x, gatewayId));
  let publishing = false;
  const publish = async () => {
    if (publishing) return;
    publishing = true;
    try {
      for (const t of await live.publish(gatewayId, localViews())) registry.sessions.get(t.id)?.terminate(`terminated by ${t.by}`);
    } catch (e) {
      log.warn(`live sessions: cannot publish: ${(e as Error).message}`);
    } finally {
      publishing = false;
    }
  };
  const publisher = setInterval(() => void publish(), LIVE_PUBLISH_MS);
  publisher.unref();
  const sessions = {
    async list(): Promise<SessionView[]> {
      const mine = localViews();
      const ids = new Set(mine.map((v) => v.id));
      const others = await live.list((LIVE_PUBLISH_MS * 3) / 1000).catch(() => [] as SessionView[]);
      return [...mine, ...others.filter((v) => !ids.has(v.id) && v.gateway !== gatewayId)];
    },
    async terminate(id: string, by: string) {
      const s = registry.sessions.get(id);
      if (s) {
        s.terminate(`terminated by ${by}`);
        return 'terminated' as const;
      }
      return (await live.requestTerminate(id, by)) ? ('requested' as const) : ('not_found' as const);
    },
  };
  const api = cfg.api ? await startApi(cfg.api, { governor, ops, registry, sessions, metrics: governor.metrics, approvals, mcp, compliance }) : undefined;
  if (api) log.info(`api listening on http://${cfg.api!.listen.host}:${api.port}`);
  if (api && !ac.public_url) approvals.publicUrl = `http://${cfg.api!.listen.host}:${api.port}`;
  let closed = false;
  return {
    port: addr.port,
    apiPort: api?.port,
    mysqlPort: mysql?.port,
    host: cfg.listen.host,
    governor,
    registry,
    approvals,
    pool,
    store: store as Store,
    compliance,
    reloadPolicy() {
      const p = loadPolicy(cfg.policy);
      governor.setPolicy(p);
      return p;
    },
    async close() {
      if (closed) return;
      closed = true;
      // Connections that never logged in have nothing running: they end now, not when their login times out.
      gate.closeUnauthenticated();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        mysql?.server.close();
        for (const s of registry.sessions.values()) s.terminate('the gateway is shutting down');
      });
      pool?.close();
      admin?.close();
      api?.server.close();
      clearInterval(publisher);
      await live.publish(gatewayId, []).catch(() => {});
      await approvals.close();
      await compliance?.close().catch((e) => log.error(`compliance: ${(e as Error).message}`));
      await workerSigner?.checkpointer.close();
      if (sockPath) fs.rmSync(sockPath, { force: true });
      await audit.close().catch((e) => log.error(e.message));
      if (store && !opts.store) await store.close();
    },
  };
}
