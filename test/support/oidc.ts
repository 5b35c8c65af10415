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

export async function startIdp(clients: Record<string, Record<string, unknown>>, opts: { ttl?: number; web?: WebClient } = {}): Promise<TestIdp> {
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
  const jwk = { ...(await jose.exportJWK(privateKey)), kid: 'test-key', alg: 'RS256', use: 'sig' };
  const provider = new Provider(issuer, {
    clients: [
      ...Object.keys(clients).map((id) => ({ client_id: id, client_secret: `${id}-secret`, grant_types: ['client_credentials'], redirect_uris: [], response_types: [] })),
      // A browser sign-in client: authorization code + PKCE, public (no secret).
      ...(opts.web ? [{ client_id: opts.web.client_id, token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], response_types: ['code'], redirect_uris: opts.web.redirect_uris }] : []),
    ],
    jwks: { keys: [jwk as any] },
    ...(opts.web
      ? {
          findAccount: (_ctx: unknown, id: string) => (opts.web!.accounts[id] ? { accountId: id, claims: () => ({ sub: id, ...opts.web!.accounts[id] }) } : undefined),
          claims: { openid: ['sub'], profile: ['name'], email: ['email'], groups: ['groups'] },
          scopes: ['openid', 'profile', 'email', 'groups', 'db'],
          conformIdTokenClaims: false,
          pkce: { required: () => true },
        }
      : {}),
    features: {
      devInteractions: { enabled: !!opts.web },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'urn:sluice:gateway',
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({ scope: 'db', audience: 'sluice', accessTokenFormat: 'jwt', accessTokenTTL: opts.ttl ?? 600, jwt: { sign: { alg: 'RS256' } } }),
      },
    },
    extraTokenClaims: (_ctx: unknown, token: { clientId?: string }) => clients[token.clientId ?? ''] ?? {},
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
