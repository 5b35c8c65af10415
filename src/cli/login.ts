import http from 'node:http';
import crypto from 'node:crypto';
import { spawn } from 'node:child_process';
import * as jose from 'jose';
import { TokenCache, type CachedTokens } from '../identity/tokencache.js';
import { UsageError } from './usage.js';

/** The parts of an issuer's discovery document the CLI uses. */
export interface IssuerMeta {
  issuer: string;
  token_endpoint: string;
  authorization_endpoint?: string;
  device_authorization_endpoint?: string;
  revocation_endpoint?: string;
}

/** Who to log in with: the issuer, this CLI's client registration there, and what to ask for. */
export interface LoginSettings {
  issuer: string;
  client_id: string;
  /** Space-separated; offline_access is what gets a refresh token from most issuers. */
  scopes: string;
  /** Resource indicator (RFC 8707) naming the gateway, for issuers that mint audience-bound access tokens. */
  resource?: string;
}

export class LoginError extends Error {}

const TIMEOUT_MS = 10_000;

export async function discover(issuer: string): Promise<IssuerMeta> {
  const url = `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(TIMEOUT_MS) });
  } catch (e) {
    throw new LoginError(`cannot reach ${url}: ${(e as Error & { cause?: Error }).cause?.message ?? (e as Error).message}`);
  }
  if (!res.ok) throw new LoginError(`${url} answered ${res.status}`);
  const doc = (await res.json()) as IssuerMeta;
  if (!doc.token_endpoint) throw new LoginError(`${url} names no token_endpoint`);
  if (doc.issuer !== issuer) throw new LoginError(`${url} says its issuer is ${JSON.stringify(doc.issuer)}, not ${JSON.stringify(issuer)}`);
  return doc;
}

interface TokenResponse {
  access_token?: string;
  refresh_token?: string;
  id_token?: string;
  expires_in?: number;
  scope?: string;
  error?: string;
  error_description?: string;
  interval?: number;
}

async function tokenRequest(endpoint: string, form: Record<string, string | undefined>): Promise<TokenResponse> {
  const body = new URLSearchParams(Object.entries(form).filter((e): e is [string, string] => e[1] !== undefined));
  let res: Response;
  try {
    res = await fetch(endpoint, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' }, body, signal: AbortSignal.timeout(TIMEOUT_MS) });
  } catch (e) {
    throw new LoginError(`cannot reach ${endpoint}: ${(e as Error & { cause?: Error }).cause?.message ?? (e as Error).message}`);
  }
  const data = (await res.json().catch(() => ({ error: `HTTP ${res.status}` }))) as TokenResponse;
  if (!res.ok && !data.error) data.error = `HTTP ${res.status}`;
  return data;
}

/** Epoch seconds the access token stops being valid: expires_in, else its exp claim, else (opaque) in 5 minutes. */
function expiryOf(t: TokenResponse): number {
  if (typeof t.expires_in === 'number') return Math.floor(Date.now() / 1000) + t.expires_in;
  try {
    const exp = jose.decodeJwt(t.access_token!).exp;
    if (typeof exp === 'number') return exp;
  } catch {
    /* an opaque token */
  }
  return Math.floor(Date.now() / 1000) + 300;
}

function cached(s: LoginSettings, meta: IssuerMeta, t: TokenResponse, by: CachedTokens['obtained_by'], previous?: CachedTokens): CachedTokens {
  if (!t.access_token) throw new LoginError(`the issuer returned no access token${t.error ? ` (${t.error}${t.error_description ? `: ${t.error_description}` : ''})` : ''}`);
  return {
    issuer: s.issuer,
    client_id: s.client_id,
    token_endpoint: meta.token_endpoint,
    resource: s.resource,
    scope: t.scope ?? s.scopes,
    access_token: t.access_token,
    expires_at: expiryOf(t),
    refresh_token: t.refresh_token ?? previous?.refresh_token,
    id_token: t.id_token ?? previous?.id_token,
    obtained_by: by,
    updated_at: new Date().toISOString(),
  };
}

const describe = (t: TokenResponse) => `${t.error}${t.error_description ? `: ${t.error_description}` : ''}`;

/**
 * OAuth 2.0 device authorization grant (RFC 8628): show a code and a link, poll until the person has approved it
 * in any browser (also on another machine).
 */
export async function deviceLogin(s: LoginSettings, meta: IssuerMeta, say: (s: string) => void, o: { maxWaitS?: number } = {}): Promise<CachedTokens> {
  if (!meta.device_authorization_endpoint) throw new LoginError(`${s.issuer} does not offer the device flow (no device_authorization_endpoint); use the browser flow`);
  const start = await tokenRequest(meta.device_authorization_endpoint, { client_id: s.client_id, scope: s.scopes, resource: s.resource });
  const d = start as TokenResponse & { device_code?: string; user_code?: string; verification_uri?: string; verification_uri_complete?: string; expires_in?: number };
  if (!d.device_code || !d.user_code || !d.verification_uri) throw new LoginError(`device authorization failed: ${describe(d)}`);
  say(`To sign in, open ${d.verification_uri_complete ?? d.verification_uri}${d.verification_uri_complete ? '' : ` and enter the code ${d.user_code}`}`);
  say(`(code ${d.user_code}; waiting for you to approve it ...)`);
  let interval = Math.max(1, d.interval ?? 5);
  const deadline = Date.now() + Math.min(d.expires_in ?? 600, o.maxWaitS ?? 900) * 1000;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, interval * 1000));
    const t = await tokenRequest(meta.token_endpoint, { grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: d.device_code, client_id: s.client_id, resource: s.resource });
    if (t.access_token) return cached(s, meta, t, 'device');
    if (t.error === 'authorization_pending') continue;
    if (t.error === 'slow_down') {
      interval += 5;
      continue;
    }
    if (t.error === 'access_denied') throw new LoginError('sign-in was declined in the browser');
    if (t.error === 'expired_token') break;
    throw new LoginError(`device sign-in failed: ${describe(t)}`);
  }
  throw new LoginError(`the code ${d.user_code} expired before it was approved; run sluice login again`);
}

const b64url = (b: Buffer) => b.toString('base64url');

/** Try to open a URL in the user's browser; false when there is no way to (then the URL is printed). */
export function openBrowser(url: string): boolean {
  const cmd = process.platform === 'darwin' ? 'open' : process.platform === 'win32' ? 'explorer' : 'xdg-open';
  try {
    const child = spawn(cmd, [url], { stdio: 'ignore', detached: true });
    child.on('error', () => {});
    child.unref();
    return true;
  } catch {
    return false;
  }
}

/** Is there a browser on this machine to send the person to (a desktop session, not SSH)? */
export const browserAvailable = (env: NodeJS.ProcessEnv = process.env): boolean =>
  (process.platform === 'darwin' || process.platform === 'win32' || !!env.DISPLAY || !!env.WAYLAND_DISPLAY) && !env.SSH_CONNECTION;

const CALLBACK_PAGE = (ok: boolean, text: string) =>
  `<!doctype html><meta charset="utf-8"><title>Sluice</title><body style="font-family:sans-serif;margin:3em"><h1>${ok ? 'Signed in' : 'Sign-in failed'}</h1><p>${text.replace(/[<>&]/g, (c) => `&#${c.charCodeAt(0)};`)}</p></body>`;

/** Wait on a loopback server for the authorization response; resolves with the code once `state` matches. */
function awaitCallback(server: http.Server, state: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new LoginError('no answer from the browser in time; run sluice login again (or sluice login --device)')), timeoutMs);
    server.on('request', (req, res) => {
      const u = new URL(req.url ?? '/', 'http://127.0.0.1');
      if (u.pathname !== '/callback') return void res.writeHead(404).end();
      const fail = (msg: string) => {
        res.writeHead(400, { 'content-type': 'text/html; charset=utf-8' }).end(CALLBACK_PAGE(false, msg));
        clearTimeout(timer);
        reject(new LoginError(msg));
      };
      if (u.searchParams.get('state') !== state) return fail('the answer does not belong to this sign-in (state mismatch)');
      const err = u.searchParams.get('error');
      if (err) return fail(`the issuer refused: ${err}${u.searchParams.get('error_description') ? `: ${u.searchParams.get('error_description')}` : ''}`);
      const code = u.searchParams.get('code');
      if (!code) return fail('the answer carries no code');
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(CALLBACK_PAGE(true, 'You can close this tab and return to the terminal.'));
      clearTimeout(timer);
      resolve(code);
    });
  });
}

/**
 * Authorization code + PKCE (RFC 7636) with a loopback redirect (RFC 8252): a one-shot server on 127.0.0.1 takes the
 * browser's redirect. `open` sends the person to the URL (the browser, or a test driving the issuer's pages).
 */
export async function pkceLogin(s: LoginSettings, meta: IssuerMeta, open: (url: string) => void, o: { port?: number; timeoutMs?: number } = {}): Promise<CachedTokens> {
  if (!meta.authorization_endpoint) throw new LoginError(`${s.issuer} has no authorization_endpoint; use sluice login --device`);
  const verifier = b64url(crypto.randomBytes(32));
  const state = b64url(crypto.randomBytes(16));
  const nonce = b64url(crypto.randomBytes(16));
  const server = http.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 0, '127.0.0.1', resolve);
  });
  const redirectUri = `http://127.0.0.1:${(server.address() as { port: number }).port}/callback`;
  try {
    const url = new URL(meta.authorization_endpoint);
    const params: Record<string, string | undefined> = {
      response_type: 'code', client_id: s.client_id, redirect_uri: redirectUri, scope: s.scopes, state, nonce,
      code_challenge: b64url(crypto.createHash('sha256').update(verifier).digest()), code_challenge_method: 'S256', resource: s.resource,
      // offline_access is granted only with explicit consent (OpenID Connect Core 11).
      prompt: s.scopes.split(' ').includes('offline_access') ? 'consent' : undefined,
    };
    for (const [k, v] of Object.entries(params)) if (v !== undefined) url.searchParams.set(k, v);
    const code = awaitCallback(server, state, o.timeoutMs ?? 300_000);
    open(url.href);
    const t = await tokenRequest(meta.token_endpoint, { grant_type: 'authorization_code', code: await code, redirect_uri: redirectUri, code_verifier: verifier, client_id: s.client_id, resource: s.resource });
    if (!t.access_token) throw new LoginError(`exchanging the code failed: ${describe(t)}`);
    return cached(s, meta, t, 'pkce');
  } finally {
    server.closeAllConnections();
    server.close();
  }
}

/**
 * A valid access token for the issuer: the cached one while it has `minValidityS` left, else a refreshed one (saved
 * back to the cache). Throws a LoginError saying to run `sluice login` when neither is possible.
 */
export async function freshToken(cache: TokenCache, issuer: string | undefined, o: { minValidityS?: number } = {}): Promise<CachedTokens> {
  const iss = issuer ?? cache.defaultIssuer();
  if (!iss) throw new LoginError('not logged in: run sluice login --issuer URL');
  const t = cache.get(iss);
  if (!t) throw new LoginError(`not logged in to ${iss}: run sluice login --issuer ${iss}`);
  if (t.expires_at - Math.floor(Date.now() / 1000) > (o.minValidityS ?? 60)) return t;
  if (!t.refresh_token) throw new LoginError(`your token from ${iss} has expired and there is no refresh token: run sluice login again`);
  const r = await tokenRequest(t.token_endpoint, { grant_type: 'refresh_token', refresh_token: t.refresh_token, client_id: t.client_id, resource: t.resource });
  if (!r.access_token) throw new LoginError(`your session with ${iss} has ended (${describe(r)}): run sluice login again`);
  const next = cached({ issuer: iss, client_id: t.client_id, scopes: t.scope ?? '', resource: t.resource }, { issuer: iss, token_endpoint: t.token_endpoint }, r, 'refresh', t);
  cache.put(next, false);
  return next;
}

/** Revoke the refresh token at the issuer (best effort: logout forgets the tokens locally either way). */
export async function revokeAtIssuer(t: CachedTokens): Promise<string | undefined> {
  if (!t.refresh_token) return undefined;
  try {
    const meta = await discover(t.issuer);
    if (!meta.revocation_endpoint) return 'the issuer has no revocation endpoint; the refresh token was forgotten locally';
    const res = await fetch(meta.revocation_endpoint, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: t.refresh_token, token_type_hint: 'refresh_token', client_id: t.client_id }), signal: AbortSignal.timeout(TIMEOUT_MS) });
    return res.ok ? undefined : `the issuer answered ${res.status} to the revocation`;
  } catch (e) {
    return `could not revoke at the issuer: ${(e as Error).message}`;
  }
}

/** What `sluice whoami` shows from a cached token: its claims as the gateway will read them. */
export function describeToken(t: CachedTokens): Record<string, unknown> {
  let claims: jose.JWTPayload = {};
  try {
    claims = jose.decodeJwt(t.access_token);
  } catch {
    /* an opaque access token: only what the cache knows */
  }
  let idClaims: jose.JWTPayload = {};
  try {
    if (t.id_token) idClaims = jose.decodeJwt(t.id_token);
  } catch {
    /* ignore */
  }
  return {
    issuer: t.issuer,
    subject: claims.sub ?? idClaims.sub,
    email: claims.email ?? idClaims.email,
    name: claims.name ?? idClaims.name,
    groups: claims.groups ?? idClaims.groups,
    audience: claims.aud,
    expires_at: new Date(t.expires_at * 1000).toISOString(),
    expired: t.expires_at <= Date.now() / 1000,
    refreshable: !!t.refresh_token,
    obtained_by: t.obtained_by,
  };
}

export function requireIssuer(v: string | undefined): string {
  if (!v) throw new UsageError('which issuer? pass --issuer URL (or set login.issuer in the config)');
  if (!/^https?:\/\//.test(v)) throw new UsageError(`--issuer must be an http(s) URL, not ${JSON.stringify(v)}`);
  return v;
}
