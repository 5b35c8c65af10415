import pg from 'pg';
import type { UpstreamTarget } from './upstream.js';

/** Every value as the text PostgreSQL sent (what masking scans and what tools return). */
const RAW_TYPES = { getTypeParser: () => (v: string) => v } as unknown as pg.CustomTypesConfig;

/**
 * A node-postgres connection to the upstream with the gateway's own credentials, for work the gateway does itself
 * (approval previews, MCP tools). sslmode as configured: prefer tries TLS first.
 */
export async function upstreamClient(u: UpstreamTarget, database: string, applicationName: string): Promise<pg.Client> {
  const tryConnect = async (ssl: boolean) => {
    const c = new pg.Client({
      host: u.host,
      port: u.port,
      user: u.user,
      password: u.password,
      database,
      application_name: applicationName,
      connectionTimeoutMillis: u.connectTimeoutMs ?? 10_000,
      ssl: ssl ? { rejectUnauthorized: u.sslRejectUnauthorized ?? false, ca: u.ca } : false,
      types: RAW_TYPES,
    });
    c.on('error', () => {});
    await c.connect();
    return c;
  };
  if (u.sslmode === 'require') return tryConnect(true);
  if (u.sslmode === 'prefer') return tryConnect(true).catch(() => tryConnect(false));
  return tryConnect(false);
}
