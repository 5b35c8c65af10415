import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { loadClientConfig, type ClientConfig } from '../config.js';
import { TokenCache, userConfigDir } from '../identity/tokencache.js';
import { discoverConfig } from './config-discovery.js';
import { LoginError, browserAvailable, describeToken, deviceLogin, discover, freshToken, openBrowser, pkceLogin, requireIssuer, revokeAtIssuer, type LoginSettings } from './login.js';
import { startMyConnect, startPgConnect, type GatewayAddress } from './connect.js';
import { UsageError, enumFlag, intFlag } from './usage.js';

/** The commands people and scripts use on their own machines: login, logout, whoami, connect, psql, mysql, env. */

type Values = Record<string, string | boolean | undefined>;
const say = (s: string) => process.stderr.write(s + '\n');
const out = (s: string) => process.stdout.write(s + '\n');

/** Client settings: the config found the usual way (-c, $SLUICE_CONFIG, ./sluice.yaml, the running demo), else ~/.config/sluice/sluice.yaml. */
function clientConfig(values: Values): ClientConfig | undefined {
  const found = discoverConfig(values.config as string | undefined);
  if (!found) {
    // A laptop's own client settings (login:, connect:) in the user's config dir.
    const mine = path.join(userConfigDir(), 'sluice.yaml');
    return fs.existsSync(mine) ? loadClientConfig(mine) : undefined;
  }
  if (!fs.existsSync(found.file)) {
    if (found.source === 'flag' || found.source === 'env') throw new UsageError(`config ${found.file} does not exist`);
    return undefined;
  }
  return loadClientConfig(found.file);
}

const cacheOf = () => new TokenCache();

/** Login settings: flags, then the config's login section, then what the last login used. */
function loginSettings(values: Values, cfg: ClientConfig | undefined, cache: TokenCache): LoginSettings {
  const issuer = requireIssuer((values.issuer as string | undefined) ?? cfg?.login?.issuer ?? cache.defaultIssuer());
  const previous = cache.get(issuer);
  const fromCfg = cfg?.login?.issuer === issuer ? cfg.login : undefined;
  return {
    issuer,
    client_id: (values['client-id'] as string | undefined) ?? fromCfg?.client_id ?? previous?.client_id ?? 'sluice-cli',
    scopes: (values.scope as string | undefined) ?? fromCfg?.scopes ?? previous?.scope ?? 'openid profile email offline_access',
    resource: (values.resource as string | undefined) ?? fromCfg?.resource ?? previous?.resource,
  };
}

async function login(values: Values): Promise<number> {
  const cache = cacheOf();
  const s = loginSettings(values, clientConfig(values), cache);
  if (values.device && values.browser) throw new UsageError('choose one of --device and --browser');
  const meta = await discover(s.issuer);
  const useBrowser = values.browser === true || (!values.device && browserAvailable() && !!meta.authorization_endpoint);
  const t = useBrowser
    ? await pkceLogin(s, meta, (url) => {
        say(`Opening your browser to sign in to ${s.issuer}; if it does not open, visit:\n  ${url}`);
        if (!values['no-open']) openBrowser(url);
      })
    : await deviceLogin(s, meta, say);
  cache.put(t);
  const d = describeToken(t);
  say(`logged in to ${s.issuer} as ${d.subject ?? '?'}${d.email && d.email !== d.subject ? ` (${d.email})` : ''}; token valid until ${d.expires_at}${t.refresh_token ? ', refreshed automatically' : ' (no refresh token: log in again then)'}`);
  return 0;
}

async function logout(values: Values): Promise<number> {
  const cache = cacheOf();
  const issuers = values.all ? cache.issuers() : [(values.issuer as string | undefined) ?? cache.defaultIssuer()].filter((i): i is string => !!i);
  if (!issuers.length) {
    say('not logged in');
    return 0;
  }
  for (const iss of issuers) {
    const t = cache.get(iss);
    const problem = t ? await revokeAtIssuer(t) : undefined;
    const had = cache.remove(iss);
    say(had ? `logged out of ${iss}${problem ? ` (${problem})` : ''}` : `not logged in to ${iss}`);
  }
  return 0;
}

async function whoami(values: Values): Promise<number> {
  const cache = cacheOf();
  const t = await freshToken(cache, values.issuer as string | undefined);
  const d = describeToken(t);
  if (values.json) out(JSON.stringify(d));
  else {
    out(`${d.subject}${d.name ? ` (${d.name})` : ''}${d.email ? ` <${d.email}>` : ''}`);
    out(`  issuer   ${d.issuer}`);
    if (Array.isArray(d.groups)) out(`  groups   ${(d.groups as string[]).join(', ') || '-'}`);
    out(`  token    valid until ${d.expires_at} (${d.obtained_by}${d.refreshable ? ', refreshable' : ''})`);
  }
  return 0;
}

/** The token to present for new connections: the cached one, refreshed when it has under a minute left. */
const tokenSource = (issuer: string | undefined) => async () => (await freshToken(cacheOf(), issuer)).access_token;

function gatewayOf(values: Values, cfg: ClientConfig | undefined, engine: 'postgres' | 'mysql'): GatewayAddress {
  const flag = (values.gateway as string | undefined) ?? process.env.SLUICE_GATEWAY;
  let host = cfg?.connect.host;
  let port = engine === 'mysql' ? cfg?.connect.mysql_port : cfg?.connect.port;
  if (flag) {
    const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(flag);
    if (!m) throw new UsageError(`--gateway must be HOST or HOST:PORT, not ${JSON.stringify(flag)}`);
    host = m[1]!.replace(/^\[|\]$/g, '');
    port = m[2] ? intFlag('gateway port', m[2], { min: 1, max: 65535 }) : port;
  }
  if (!host || !port) throw new UsageError(`where is the gateway${engine === 'mysql' ? "'s MySQL engine" : ''}? pass --gateway HOST:PORT, set SLUICE_GATEWAY, or use a config with connect: (or the gateway's own config)`);
  const caFile = (values.ca as string | undefined) ?? cfg?.connect.ca_file;
  return { host, port, ca: caFile ? fs.readFileSync(caFile) : undefined };
}

const ENGINES = ['postgres', 'mysql'] as const;

/** What connect, psql, mysql and env act on: a database of an engine, at a gateway (and its CA file, if any). */
function dbTarget(values: Values, positionals: string[], usage: string, fixed?: 'postgres' | 'mysql') {
  const database = positionals[0];
  if (!database) throw new UsageError(`usage: ${usage}`);
  const engine = fixed ?? enumFlag('engine', values.engine, ENGINES) ?? 'postgres';
  const cfg = clientConfig(values);
  const caFile = (values.ca as string | undefined) ?? cfg?.connect.ca_file;
  return { database, engine, gateway: gatewayOf(values, cfg, engine), caFile, rest: positionals.slice(1) };
}

async function connect(values: Values, positionals: string[]): Promise<number> {
  const { database, engine, gateway } = dbTarget(values, positionals, 'sluice connect DATABASE [--port N] [--engine postgres|mysql] [--gateway HOST:PORT]');
  const port = intFlag('port', values.port, { min: 0, max: 65535 }) ?? (engine === 'mysql' ? 3306 : 5432);
  const issuer = values.issuer as string | undefined;
  await freshToken(cacheOf(), issuer); // fail now, not at the first client, when not logged in
  if (!gateway.ca) say(`note: the gateway's TLS certificate is not verified (pass --ca FILE or set connect.ca_file for verify-full)`);
  const start = engine === 'mysql' ? startMyConnect : startPgConnect;
  const l = await start({ database, port, gateway, token: tokenSource(issuer), onError: (e) => say(`sluice connect: ${e.message}`) });
  const client = engine === 'mysql' ? `mysql -h 127.0.0.1 -P ${l.port} --ssl-mode=DISABLED ${database}` : `psql "host=127.0.0.1 port=${l.port} dbname=${database}"`;
  say(`sluice connect: ${engine} database ${database} on 127.0.0.1:${l.port} -> gateway ${gateway.host}:${gateway.port} (TLS, your token)\n  no password needed, e.g. ${client}\n  Ctrl-C to stop`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await l.close();
  return 0;
}

/** The environment a client needs to reach the gateway directly with the token as its password. */
function clientEnv(engine: 'postgres' | 'mysql', database: string, g: GatewayAddress, token: string, caFile?: string): Record<string, string> {
  if (engine === 'mysql') return { MYSQL_PWD: token, MYSQL_HOST: g.host, MYSQL_TCP_PORT: String(g.port) };
  return { PGHOST: g.host, PGPORT: String(g.port), PGDATABASE: database, PGPASSWORD: token, PGSSLMODE: caFile ? 'verify-full' : 'require', ...(caFile ? { PGSSLROOTCERT: caFile } : {}) };
}

async function launch(values: Values, positionals: string[], engine: 'postgres' | 'mysql'): Promise<number> {
  const { database, gateway: g, caFile, rest: args } = dbTarget(values, positionals, `sluice ${engine === 'mysql' ? 'mysql' : 'psql'} DATABASE [-- client arguments]`, engine);
  const { access_token } = await freshToken(cacheOf(), values.issuer as string | undefined);
  const env = { ...process.env, ...clientEnv(engine, database, g, access_token, caFile) };
  const bin = engine === 'mysql' ? ((values.client as string | undefined) ?? 'mysql') : 'psql';
  const argv = engine === 'mysql' ? [...mysqlTlsArgs(bin, caFile), database, ...args] : args;
  const child = spawn(bin, argv, { stdio: 'inherit', env });
  return new Promise((resolve, reject) => {
    child.on('error', (e) => reject(new Error(`cannot run ${bin}: ${e.message}`)));
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}

/**
 * The gateway asks MySQL clients for the token in clear text (mysql_clear_password), so TLS is required: Oracle's
 * client needs --enable-cleartext-plugin and --ssl-mode; MariaDB's client sends it as is and takes --ssl.
 */
function mysqlTlsArgs(bin: string, caFile: string | undefined): string[] {
  const version = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  if (version.error) throw new Error(`cannot run ${bin}: ${version.error.message}`);
  if (/MariaDB/i.test(version.stdout)) return ['--ssl', ...(caFile ? [`--ssl-ca=${caFile}`, '--ssl-verify-server-cert'] : ['--skip-ssl-verify-server-cert'])];
  return ['--enable-cleartext-plugin', caFile ? '--ssl-mode=VERIFY_IDENTITY' : '--ssl-mode=REQUIRED', ...(caFile ? [`--ssl-ca=${caFile}`] : [])];
}

/** `sluice env DATABASE`: export lines for scripts (eval "$(sluice env shop)"). */
async function env(values: Values, positionals: string[]): Promise<number> {
  const { database, engine, gateway: g, caFile } = dbTarget(values, positionals, 'sluice env DATABASE [--engine postgres|mysql]');
  const { access_token, expires_at } = await freshToken(cacheOf(), values.issuer as string | undefined, { minValidityS: 300 });
  const quote = (v: string) => `'${v.replace(/'/g, `'\\''`)}'`;
  for (const [k, v] of Object.entries(clientEnv(engine, database, g, access_token, caFile))) out(`export ${k}=${quote(v)}`);
  say(`# token valid until ${new Date(expires_at * 1000).toISOString()}; run again for a fresh one`);
  return 0;
}

export const CLIENT_COMMANDS = ['login', 'logout', 'whoami', 'connect', 'psql', 'mysql', 'env'] as const;
export type ClientCommand = (typeof CLIENT_COMMANDS)[number];

/** The options each client command takes (besides -c). */
export const CLIENT_OPTIONS: Record<ClientCommand, Record<string, { type: 'string' | 'boolean' }>> = {
  login: { issuer: { type: 'string' }, 'client-id': { type: 'string' }, scope: { type: 'string' }, resource: { type: 'string' }, device: { type: 'boolean' }, browser: { type: 'boolean' }, 'no-open': { type: 'boolean' } },
  logout: { issuer: { type: 'string' }, all: { type: 'boolean' } },
  whoami: { issuer: { type: 'string' }, json: { type: 'boolean' } },
  connect: { issuer: { type: 'string' }, port: { type: 'string' }, engine: { type: 'string' }, gateway: { type: 'string' }, ca: { type: 'string' } },
  psql: { issuer: { type: 'string' }, gateway: { type: 'string' }, ca: { type: 'string' } },
  mysql: { issuer: { type: 'string' }, gateway: { type: 'string' }, ca: { type: 'string' }, client: { type: 'string' } },
  env: { issuer: { type: 'string' }, engine: { type: 'string' }, gateway: { type: 'string' }, ca: { type: 'string' } },
};

export async function runClientCommand(cmd: ClientCommand, values: Values, positionals: string[]): Promise<number> {
  try {
    switch (cmd) {
      case 'login':
        return await login(values);
      case 'logout':
        return await logout(values);
      case 'whoami':
        return await whoami(values);
      case 'connect':
        return await connect(values, positionals);
      case 'psql':
        return await launch(values, positionals, 'postgres');
      case 'mysql':
        return await launch(values, positionals, 'mysql');
      case 'env':
        return await env(values, positionals);
    }
  } catch (e) {
    if (e instanceof LoginError) {
      say(`sluice: ${e.message}`);
      return 1;
    }
    throw e;
  }
}
