import path from 'node:path';
import { readYamlWithSchema } from './util/yamlfile.js';
import type { OidcIssuerConfig } from './identity/oidc.js';
import { AWS_SCHEMA, type AwsAuthConfig } from './identity/aws.js';
import type { StoreConfig } from './store/db.js';
import type { SpoolOptions } from './audit/spool.js';
import { IDENTITY_KINDS } from './identity/identity.js';
import { THROTTLE_SCHEMA, type ThrottleConfig } from './identity/throttle.js';
import type { ApiConfig } from './api/server.js';
import type { ComplianceConfig } from './compliance/service.js';
import { CHECKPOINT_SCHEMA } from './compliance/checkpoints.js';
import { STREAM_SCHEMA } from './audit/streams/index.js';

export interface SluiceConfig {
  listen: { host: string; port: number };
  tls: { mode: 'disable' | 'allow' | 'require'; cert_file?: string; key_file?: string };
  upstream: {
    host: string;
    port: number;
    user: string;
    password?: string;
    password_env?: string;
    sslmode?: 'disable' | 'prefer' | 'require';
    connect_timeout_s?: number;
    databases?: string[];
    /** Server connections kept for reuse per database and startup parameters (size 0: none). */
    pool: { size: number; idle_timeout_s: number; max_lifetime_s: number };
  };
  identity: { oidc?: OidcIssuerConfig[]; keys?: boolean; throttle: ThrottleConfig; aws?: AwsAuthConfig };
  policy: string;
  store: StoreConfig;
  limits: { max_message_bytes: number; auth_timeout_s: number; max_connections: number; max_unauthenticated: number; max_unauthenticated_per_source: number; max_prepared: number };
  /** Gateway processes sharing the listening port (node:cluster). */
  workers: number;
  /** The local audit spool (see audit/spool.ts); spool_dir defaults to beside the store. */
  audit: { spool_dir?: string; fsync: 'always' | string | number; spool_max_bytes: number } & ComplianceConfig;
  /** Unix socket through which the CLI reaches a running gateway (default: next to the embedded store). */
  admin_socket?: string;
  /** HTTP API (health, metrics, audit, sessions); off unless configured. */
  api?: ApiConfig;
  approvals: ApprovalsConfig;
  /** MySQL/MariaDB engine: its own listener in front of its own upstream; off unless configured. */
  mysql?: {
    listen: { host: string; port: number };
    upstream: { host: string; port: number; user: string; password?: string; password_env?: string; sslmode?: 'disable' | 'prefer' | 'require'; connect_timeout_s?: number; databases?: string[] };
    max_packet_bytes: number;
  };
  /** How `sluice login` signs people in (OIDC client settings of the CLI); see cli/login.ts. */
  login?: LoginConfig;
  /** Where `sluice connect/psql/mysql` reach the gateway (default: this config's listeners). */
  connect?: ConnectConfig;
  /** Directory of the config file; relative paths are resolved against it. */
  dir: string;
  file?: string;
}

export interface ApprovalsConfig {
  /** Base URL of the web console (links in notices and notifications); default: the API's own address. */
  public_url?: string;
  /** Slack-compatible incoming webhook URL notified of requests and outcomes. */
  webhook_url?: string;
  /** How long a held statement waits for a decision, unless its rule sets approval.timeout_s. */
  wait_timeout_s: number;
  /** How long an approved statement stays usable by a re-run if its client has gone. */
  valid_for_s: number;
  /** Longest just-in-time grant that may be requested. */
  max_grant_s: number;
  /** Blast-radius preview: run data-changing statements in a rolled-back transaction (statement_timeout). */
  preview: { enabled: boolean; timeout_ms: number };
  /** How often each gateway process reads decisions made elsewhere. */
  poll_ms: number;
}

export interface LoginConfig {
  issuer: string;
  /** The CLI's client registration at the issuer: public (no secret), authorization code + PKCE and/or device flow. */
  client_id: string;
  scopes: string;
  /** Resource indicator (RFC 8707) for issuers that mint audience-bound access tokens. */
  resource?: string;
}

export interface ConnectConfig {
  host?: string;
  port?: number;
  mysql_port?: number;
  /** CA certificate(s) to verify the gateway's TLS certificate (verify-full); without it TLS is used unverified. */
  ca_file?: string;
}

const LOGIN_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['issuer'],
  properties: {
    issuer: { type: 'string', pattern: '^https?://' },
    client_id: { type: 'string', minLength: 1, default: 'sluice-cli' },
    scopes: { type: 'string', minLength: 1, default: 'openid profile email offline_access' },
    resource: { type: 'string', minLength: 1 },
  },
} as const;

const CONNECT_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    host: { type: 'string', minLength: 1 },
    port: { type: 'integer', minimum: 1, maximum: 65535 },
    mysql_port: { type: 'integer', minimum: 1, maximum: 65535 },
    ca_file: { type: 'string', minLength: 1 },
  },
} as const;

/** Where an engine connects, with the gateway's own credentials. */
const upstreamSchema = (defaultPort: number, extra: Record<string, unknown> = {}) =>
  ({
    type: 'object',
    additionalProperties: false,
    required: ['host', 'user'],
    properties: {
      host: { type: 'string', minLength: 1 },
      port: { type: 'integer', minimum: 1, maximum: 65535, default: defaultPort },
      user: { type: 'string', minLength: 1 },
      password: { type: 'string' },
      password_env: { type: 'string', minLength: 1 },
      sslmode: { enum: ['disable', 'prefer', 'require'], default: 'prefer' },
      /** Connecting, TLS negotiation (any sslmode) and logging in to the upstream must finish within this. */
      connect_timeout_s: { type: 'number', exclusiveMinimum: 0, maximum: 600, default: 10 },
      databases: { type: 'array', items: { type: 'string', minLength: 1 } },
      ...extra,
    },
  }) as const;

/** The gateway's own server connections, reused across client sessions (PostgreSQL; see protocol/postgres/pool.ts). */
const POOL_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  default: {},
  properties: {
    size: { type: 'integer', minimum: 0, maximum: 10_000, default: 20 },
    idle_timeout_s: { type: 'number', exclusiveMinimum: 0, default: 60 },
    max_lifetime_s: { type: 'number', exclusiveMinimum: 0, default: 3600 },
  },
} as const;

const CONFIG_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['upstream', 'policy'],
  properties: {
    listen: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: { host: { type: 'string', default: '127.0.0.1' }, port: { type: 'integer', minimum: 0, maximum: 65535, default: 6432 } },
    },
    tls: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: { mode: { enum: ['disable', 'allow', 'require'], default: 'allow' }, cert_file: { type: 'string' }, key_file: { type: 'string' } },
    },
    upstream: upstreamSchema(5432, { pool: POOL_SCHEMA }),
    identity: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        keys: { type: 'boolean', default: true },
        throttle: THROTTLE_SCHEMA,
        aws: AWS_SCHEMA,
        oidc: {
          type: 'array',
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['issuer', 'audience'],
            properties: {
              issuer: { type: 'string', minLength: 1 },
              audience: { anyOf: [{ type: 'string', minLength: 1 }, { type: 'array', items: { type: 'string' }, minItems: 1 }] },
              jwks_uri: { type: 'string' },
              groups_claim: { type: 'string' },
              subject_claim: { type: 'string' },
              kind: { enum: [...IDENTITY_KINDS] },
              kind_claim: { type: 'string' },
              acting_for_claim: { type: 'string' },
              algorithms: { type: 'array', items: { type: 'string' } },
              clock_tolerance_s: { type: 'integer', minimum: 0 },
              group_prefix: { type: 'string' },
            },
          },
        },
      },
    },
    policy: { type: 'string', minLength: 1 },
    store: {
      type: 'object',
      default: { kind: 'embedded', path: '.sluice/store' },
      oneOf: [
        { type: 'object', additionalProperties: false, required: ['kind', 'path'], properties: { kind: { const: 'embedded' }, path: { type: 'string' } } },
        {
          type: 'object',
          additionalProperties: false,
          required: ['kind'],
          properties: { kind: { const: 'postgres' }, url: { type: 'string' }, url_env: { type: 'string' }, pool_size: { type: 'integer', minimum: 1 } },
        },
      ],
    },
    limits: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        max_message_bytes: { type: 'integer', minimum: 1024, default: 64 * 1024 * 1024 },
        auth_timeout_s: { type: 'number', exclusiveMinimum: 0, default: 30 },
        max_connections: { type: 'integer', minimum: 1, default: 2000 },
        max_unauthenticated: { type: 'integer', minimum: 1, default: 512 },
        max_unauthenticated_per_source: { type: 'integer', minimum: 1, default: 64 },
        max_prepared: { type: 'integer', minimum: 1, default: 10000 },
      },
    },
    workers: { type: 'integer', minimum: 1, maximum: 64, default: 1 },
    mysql: {
      type: 'object',
      additionalProperties: false,
      required: ['upstream'],
      properties: {
        listen: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: { host: { type: 'string', default: '127.0.0.1' }, port: { type: 'integer', minimum: 0, maximum: 65535, default: 3307 } },
        },
        upstream: upstreamSchema(3306),
        max_packet_bytes: { type: 'integer', minimum: 1024, default: 64 * 1024 * 1024 },
      },
    },
    approvals: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        public_url: { type: 'string', pattern: '^https?://' },
        webhook_url: { type: 'string', pattern: '^https?://' },
        wait_timeout_s: { type: 'integer', minimum: 1, maximum: 86400, default: 300 },
        valid_for_s: { type: 'integer', minimum: 1, default: 3600 },
        max_grant_s: { type: 'integer', minimum: 60, default: 7 * 86400 },
        poll_ms: { type: 'integer', minimum: 50, maximum: 60000, default: 1000 },
        preview: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: { enabled: { type: 'boolean', default: true }, timeout_ms: { type: 'integer', minimum: 10, maximum: 600000, default: 5000 } },
        },
      },
    },
    audit: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        spool_dir: { type: 'string', minLength: 1 },
        fsync: { anyOf: [{ const: 'always' }, { type: 'integer', minimum: 1, maximum: 60000 }, { type: 'string', pattern: '^[0-9]+(ms|s)$' }], default: '1s' },
        spool_max_bytes: { type: 'integer', minimum: 1048576, default: 1024 * 1024 * 1024 },
        checkpoints: CHECKPOINT_SCHEMA,
        streams: { type: 'array', items: STREAM_SCHEMA },
      },
    },
    admin_socket: { type: 'string' },
    login: LOGIN_SCHEMA,
    connect: CONNECT_SCHEMA,
    api: {
      type: 'object',
      additionalProperties: false,
      required: ['listen'],
      properties: {
        listen: {
          type: 'object',
          additionalProperties: false,
          properties: { host: { type: 'string', default: '127.0.0.1' }, port: { type: 'integer', minimum: 0, maximum: 65535, default: 8080 } },
        },
        roles: {
          type: 'object',
          additionalProperties: false,
          properties: Object.fromEntries(['admin', 'auditor', 'approver'].map((r) => [r, { type: 'array', items: { type: 'string', minLength: 1 } }])),
        },
        web: {
          type: 'object',
          additionalProperties: false,
          properties: {
            session_secret_env: { type: 'string', minLength: 1 },
            session_ttl_s: { type: 'integer', minimum: 60 },
            oidc: {
              type: 'object',
              additionalProperties: false,
              required: ['issuer', 'client_id'],
              properties: {
                issuer: { type: 'string', pattern: '^https?://' },
                client_id: { type: 'string', minLength: 1 },
                client_secret: { type: 'string' },
                client_secret_env: { type: 'string', minLength: 1 },
                scopes: { type: 'string' },
                groups_claim: { type: 'string' },
                redirect_uri: { type: 'string', pattern: '^https?://' },
              },
            },
          },
        },
      },
    },
  },
} as const;

/** `secrets: false` skips resolving the upstream password (admin commands do not connect upstream). */
export function loadConfig(file: string, opts: { secrets?: boolean } = {}): SluiceConfig {
  const { value, fail } = readYamlWithSchema<SluiceConfig & { store: StoreConfig & { url_env?: string } }>(file, CONFIG_SCHEMA);
  const dir = path.dirname(path.resolve(file));
  const cfg: SluiceConfig = { ...value, dir, file };
  const resolve = (p: string) => path.resolve(dir, p);
  cfg.policy = resolve(cfg.policy);
  if (cfg.tls.cert_file) cfg.tls.cert_file = resolve(cfg.tls.cert_file);
  if (cfg.tls.key_file) cfg.tls.key_file = resolve(cfg.tls.key_file);
  if (!!cfg.tls.cert_file !== !!cfg.tls.key_file) {
    throw fail(['tls'], 'tls.cert_file and tls.key_file go together');
  }
  // Every secret named by an *_env key is read here, once: the rest of the gateway sees values only.
  if (opts.secrets !== false) {
    const fromEnv = (at: string[], name: string | undefined, required: boolean): string | undefined => {
      if (!name) return undefined;
      const v = process.env[name];
      if (v === undefined && required) throw fail(at, `environment variable ${name} (${at.join('.')}) is not set`);
      return v;
    };
    cfg.upstream.password = fromEnv(['upstream', 'password_env'], cfg.upstream.password_env, true) ?? cfg.upstream.password;
    const my = cfg.mysql?.upstream;
    if (my) my.password = fromEnv(['mysql', 'upstream', 'password_env'], my.password_env, true) ?? my.password;
    const web = cfg.api?.web;
    if (web?.oidc) web.oidc.client_secret = fromEnv(['api', 'web', 'oidc', 'client_secret_env'], web.oidc.client_secret_env, true) ?? web.oidc.client_secret;
    const cp = cfg.audit.checkpoints;
    if (cp?.key_env) cp.key_pem = fromEnv(['audit', 'checkpoints', 'key_env'], cp.key_env, true);
    for (const [i, s] of (cfg.audit.streams ?? []).entries()) if (s.secret_env) s.secret = fromEnv(['audit', 'streams', String(i), 'secret_env'], s.secret_env, true);
    if (cfg.api) {
      cfg.api.web ??= {};
      cfg.api.web.session_secret = fromEnv(['api', 'web', 'session_secret_env'], cfg.api.web.session_secret_env ?? 'SLUICE_SESSION_SECRET', !!cfg.api.web.session_secret_env);
    }
  }
  const store = value.store as StoreConfig & { url_env?: string; url?: string };
  if (store.kind === 'embedded') cfg.store = { kind: 'embedded', path: resolve(store.path) };
  else {
    const url = store.url ?? (store.url_env ? process.env[store.url_env] : undefined);
    if (!url) {
      throw fail(['store'], 'store of kind postgres needs url or url_env (set in the environment)');
    }
    cfg.store = { kind: 'postgres', url, pool_size: store.pool_size };
  }
  if (cfg.admin_socket) cfg.admin_socket = resolve(cfg.admin_socket);
  if (cfg.connect?.ca_file) cfg.connect.ca_file = resolve(cfg.connect.ca_file);
  if (cfg.audit.spool_dir) cfg.audit.spool_dir = resolve(cfg.audit.spool_dir);
  return cfg;
}

/** Where the CLI finds a running gateway. */
export function adminSocketPath(cfg: SluiceConfig): string | undefined {
  if (cfg.admin_socket) return cfg.admin_socket;
  // Beside the store, not inside it: the embedded store's directory is PGlite's data directory, which it manages.
  if (cfg.store.kind === 'embedded') return `${cfg.store.path.replace(/\/+$/, '')}.admin.sock`;
  return undefined;
}

/**
 * The audit spool of this config: `audit.spool_dir`, else beside the embedded store (`<store>.spool`) or, with a
 * PostgreSQL store, `.sluice/audit-spool` beside the config file. fsync: `always`, or an interval (`1s`, `200ms`, ms).
 */
export function spoolOptions(cfg: SluiceConfig, recover: boolean): SpoolOptions {
  const dir = cfg.audit.spool_dir ?? (cfg.store.kind === 'embedded' ? `${cfg.store.path.replace(/\/+$/, '')}.spool` : path.join(cfg.dir, '.sluice', 'audit-spool'));
  const f = cfg.audit.fsync;
  const fsync = f === 'always' ? 'always' : typeof f === 'number' ? f : f.endsWith('ms') ? Number(f.slice(0, -2)) : Number(f.slice(0, -1)) * 1000;
  return { dir, fsync, maxBytes: cfg.audit.spool_max_bytes, recover };
}

/** The client side of a config: a gateway's full config, or a file with only `login:`, `connect:` and `api:`. */
export interface ClientConfig {
  login?: LoginConfig;
  connect: ConnectConfig;
  api?: string;
  file: string;
}

const CLIENT_SCHEMA = { type: 'object', properties: { login: LOGIN_SCHEMA, connect: CONNECT_SCHEMA } } as const;

/** Read what `sluice login/connect` need from a config file, gateway config or not (other sections are not checked). */
export function loadClientConfig(file: string): ClientConfig {
  const { value } = readYamlWithSchema<{ login?: LoginConfig; connect?: ConnectConfig; listen?: { host?: string; port?: number }; mysql?: { listen?: { host?: string; port?: number } }; api?: { listen?: { host?: string; port?: number } } }>(file, CLIENT_SCHEMA);
  const dir = path.dirname(path.resolve(file));
  const local = (h?: string) => (!h || h === '0.0.0.0' || h === '::' ? '127.0.0.1' : h);
  const c: ConnectConfig = { ...value.connect };
  c.host ??= value.listen ? local(value.listen.host) : undefined;
  c.port ??= value.listen?.port || (value.listen ? 6432 : undefined);
  c.mysql_port ??= value.mysql ? value.mysql.listen?.port || 3307 : undefined;
  if (c.ca_file) c.ca_file = path.resolve(dir, c.ca_file);
  const api = value.api?.listen ? `http://${local(value.api.listen.host)}:${value.api.listen.port ?? 8080}` : undefined;
  return { login: value.login, connect: c, api, file };
}
