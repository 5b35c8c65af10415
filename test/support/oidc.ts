import Provider from 'oidc-provider';
import * as jose from 'jose';
import http from 'node:http';
import { freePort } from '../../src/util/net.js';

export interface TestIdp {
  issuer: string;
  /** A real access token from the provider's token endpoint (client credentials grant). */
  token(clientId: string): Promise<string>;
  close(): Promise<void>;
}

/**
 * A real OpenID Provider (oidc-provider) on loopback issuing JWT access tokens for audience "sluice".
 * Clients: `clients` maps client_id to the claims put in its tokens (groups, email, ...).
 */
export interface WebClient {
  client_id: string;
  redirect_uris: string[];
  /** login -> claims put in its ID token (name, email, groups). Any password is accepted (dev interactions). */
  accounts: Record<string, Record<string, unknown>>;
}

/**
 * A command-line client (`sluice login`): public, native (loopback redirect on any port, RFC 8252), authorization
 * code + PKCE, device flow and refresh tokens. Its access tokens carry the account's claims (groups, email, ...).
 */
export interface CliClient {
  client_id: string;
  accounts: Record<string, Record<string, unknown>>;
  /** Lifetime of refresh tokens (default 1 day). */
  refreshTtl?: number;
}

export async function startIdp(clients: Record<string, Record<string, unknown>>, opts: { ttl?: number; web?: WebClient; cli?: CliClient } = {}): Promise<TestIdp> {
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
  const jwk = { ...(await jose.exportJWK(privateKey)), kid: 'test-key', alg: 'RS256', use: 'sig' };
  const accounts: Record<string, Record<string, unknown>> = { ...opts.web?.accounts, ...opts.cli?.accounts };
  const pick = (o: Record<string, unknown>, keys: string[]) => Object.fromEntries(keys.filter((k) => k in o).map((k) => [k, o[k]]));
  const provider = new Provider(issuer, {
    clients: [
      ...Object.keys(clients).map((id) => ({ client_id: id, client_secret: `${id}-secret`, grant_types: ['client_credentials'], redirect_uris: [], response_types: [] })),
      // A browser sign-in client: authorization code + PKCE, public (no secret).
      ...(opts.web ? [{ client_id: opts.web.client_id, token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], response_types: ['code'], redirect_uris: opts.web.redirect_uris }] : []),
      ...(opts.cli
        ? [{ client_id: opts.cli.client_id, application_type: 'native', token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'], response_types: ['code'], redirect_uris: ['http://127.0.0.1/callback'] }]
        : []),
    ],
    jwks: { keys: [jwk as any] },
    ...(opts.web || opts.cli
      ? {
          findAccount: (_ctx: unknown, id: string) => (accounts[id] ? { accountId: id, claims: () => ({ sub: id, ...accounts[id] }) } : undefined),
          claims: { openid: ['sub'], profile: ['name'], email: ['email'], groups: ['groups'] },
          scopes: ['openid', 'profile', 'email', 'groups', 'db', 'offline_access'],
          ttl: { RefreshToken: opts.cli?.refreshTtl ?? 86400, DeviceCode: 600, Interaction: 600, Session: 3600, Grant: 86400 },
          conformIdTokenClaims: false,
          pkce: { required: () => true },
        }
      : {}),
    features: {
      devInteractions: { enabled: !!(opts.web || opts.cli) },
      deviceFlow: { enabled: !!opts.cli },
      revocation: { enabled: !!opts.cli },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'urn:sluice:gateway',
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({ scope: 'db', audience: 'sluice', accessTokenFormat: 'jwt', accessTokenTTL: opts.ttl ?? 600, jwt: { sign: { alg: 'RS256' } } }),
      },
    },
    // Client-credentials tokens carry their client's claims; a person's tokens (sluice login) their account's.
    extraTokenClaims: (_ctx: unknown, token: { clientId?: string; accountId?: string }) => (token.accountId && token.clientId === opts.cli?.client_id ? pick(accounts[token.accountId] ?? {}, ['groups', 'email', 'name']) : (clients[token.clientId ?? ''] ?? {})),
  } as any);
  const server = http.createServer(provider.callback());
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return {
    issuer,
    async token(clientId) {
      const res = await fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${clientId}:${clientId}-secret`).toString('base64')}` },
        body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'db' }),
      });
      const body = (await res.json()) as { access_token?: string; error?: string; error_description?: string };
      if (!body.access_token) throw new Error(`token endpoint: ${body.error}: ${body.error_description}`);
      return body.access_token;
    },
    close: () => new Promise((r) => server.close(() => r())),
  };
}
