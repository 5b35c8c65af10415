import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Context, Hono } from 'hono';
import { getCookie, setCookie, deleteCookie } from 'hono/cookie';
import { OidcVerifier } from '../identity/oidc.js';
import { AuthError, type Identity } from '../identity/identity.js';
import { authFailureFields, httpSource } from '../identity/throttle.js';
import type { Governor } from '../governor.js';
import { log } from '../util/log.js';

export interface WebConfig {
  /** Sign-in for the web console: authorization code flow with PKCE against this issuer. */
  oidc?: {
    issuer: string;
    client_id: string;
    client_secret?: string;
    client_secret_env?: string;
    scopes?: string;
    groups_claim?: string;
    /** Default: <the console's address>/auth/callback. */
    redirect_uri?: string;
  };
  /** Environment variable holding the cookie-signing secret (share it between gateways behind one address). */
  session_secret_env?: string;
  /** The cookie-signing secret, read from session_secret_env (default SLUICE_SESSION_SECRET) by loadConfig. */
  session_secret?: string;
  /** Longest a console session lasts (it also ends when the sign-in token would have expired). */
  session_ttl_s?: number;
}

export const SESSION_COOKIE = 'sluice_session';
const FLOW_COOKIE = 'sluice_auth';

interface SessionBody {
  identity: Identity;
  csrf: string;
  exp: number;
}

/** Signed (HMAC-SHA256), stateless cookies: any gateway with the same secret accepts them. */
export class CookieSealer {
  constructor(private readonly secret: Buffer) {}
  seal(body: object): string {
    const data = Buffer.from(JSON.stringify(body)).toString('base64url');
    return `${data}.${crypto.createHmac('sha256', this.secret).update(data).digest('base64url')}`;
  }
  open<T extends { exp: number }>(value: string | undefined): T | undefined {
    if (!value) return undefined;
    const dot = value.lastIndexOf('.');
    if (dot < 0) return undefined;
    const data = value.slice(0, dot);
    const mac = Buffer.from(value.slice(dot + 1), 'base64url');
    const want = crypto.createHmac('sha256', this.secret).update(data).digest();
    if (mac.length !== want.length || !crypto.timingSafeEqual(mac, want)) return undefined;
    try {
      const body = JSON.parse(Buffer.from(data, 'base64url').toString('utf8')) as T;
      return body.exp > Date.now() / 1000 ? body : undefined;
    } catch {
      return undefined;
    }
  }
}

export function sealerFor(cfg: WebConfig | undefined): CookieSealer {
  const v = cfg?.session_secret;
  if (!v) log.warn(`web: ${cfg?.session_secret_env ?? 'SLUICE_SESSION_SECRET'} is not set; console sign-ins last only as long as this process`);
  return new CookieSealer(v ? crypto.createHash('sha256').update(v).digest() : crypto.randomBytes(32));
}

/** The console session carried by a request's cookie, if any and valid. */
export function cookieSession(c: Context, sealer: CookieSealer): SessionBody | undefined {
  return sealer.open<SessionBody>(getCookie(c, SESSION_COOKIE));
}

function startSession(c: Context, sealer: CookieSealer, cfg: WebConfig | undefined, identity: Identity): SessionBody {
  const ttl = cfg?.session_ttl_s ?? (identity.method === 'key' ? 3600 : 8 * 3600);
  const now = Math.floor(Date.now() / 1000);
  const exp = Math.min(now + ttl, identity.expiresAt ?? Number.MAX_SAFE_INTEGER);
  const body: SessionBody = { identity, csrf: crypto.randomBytes(18).toString('base64url'), exp };
  setCookie(c, SESSION_COOKIE, sealer.seal(body), { httpOnly: true, sameSite: 'Lax', path: '/', secure: new URL(c.req.url).protocol === 'https:', maxAge: exp - now });
  return body;
}

/** Where the built console is: dist/web beside the compiled code, or from sources under test. */
function webRoot(): string | undefined {
  const here = path.dirname(fileURLToPath(import.meta.url));
  return [path.resolve(here, '../web'), path.resolve(here, '../../dist/web')].find((d) => fs.existsSync(path.join(d, 'index.html')));
}

const TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml', '.json': 'application/json', '.ico': 'image/x-icon', '.png': 'image/png' };

interface Discovery {
  authorization_endpoint: string;
  token_endpoint: string;
}

/**
 * Console sign-in and the console itself: /auth/* (OIDC code + PKCE, or a pasted token/key), and the built React
 * app for every other GET that is not API.
 */
export function mountWeb(app: Hono<any>, cfg: WebConfig | undefined, governor: Governor, sealer: CookieSealer): void {
  const oidc = cfg?.oidc;
  const verifier = oidc ? new OidcVerifier([{ issuer: oidc.issuer, audience: oidc.client_id, groups_claim: oidc.groups_claim ?? 'groups', kind: 'human' }]) : undefined;
  let discovery: Promise<Discovery> | undefined;
  const discover = () =>
    (discovery ??= (async () => {
      const url = `${oidc!.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
      const r = await fetch(url, { signal: AbortSignal.timeout(5000) });
      if (!r.ok) throw new Error(`discovery ${url} answered ${r.status}`);
      return (await r.json()) as Discovery;
    })().catch((e) => {
      discovery = undefined;
      throw e;
    }));
  const redirectUri = (c: Context) => oidc?.redirect_uri ?? new URL('/auth/callback', c.req.url).toString();
  // Only paths of this site: not //host, nor /\host (which browsers read as //host).
  const safeReturn = (r: string | undefined) => (r && /^\/(?![/\\])/.test(r) && !/[\\\r\n]/.test(r) ? r : '/');

  app.get('/auth/config', (c) => c.json({ oidc: oidc ? { issuer: oidc.issuer } : null }));

  app.get('/auth/login', async (c) => {
    if (!oidc) return c.json({ error: 'no OIDC sign-in is configured (web.oidc); sign in with a token instead' }, 404);
    let d: Discovery;
    try {
      d = await discover();
    } catch (e) {
      return c.text(`cannot reach the identity provider: ${(e as Error).message}`, 502);
    }
    const verifierStr = crypto.randomBytes(32).toString('base64url');
    const flow = { state: crypto.randomBytes(16).toString('base64url'), nonce: crypto.randomBytes(16).toString('base64url'), verifier: verifierStr, ret: safeReturn(c.req.query('return')), exp: Math.floor(Date.now() / 1000) + 600 };
    setCookie(c, FLOW_COOKIE, sealer.seal(flow), { httpOnly: true, sameSite: 'Lax', path: '/auth', maxAge: 600 });
    const u = new URL(d.authorization_endpoint);
    u.search = new URLSearchParams({
      response_type: 'code',
      client_id: oidc.client_id,
      redirect_uri: redirectUri(c),
      scope: oidc.scopes ?? 'openid profile email groups',
      state: flow.state,
      nonce: flow.nonce,
      code_challenge: crypto.createHash('sha256').update(verifierStr).digest('base64url'),
      code_challenge_method: 'S256',
    }).toString();
    return c.redirect(u.toString(), 302);
  });

  app.get('/auth/callback', async (c) => {
    if (!oidc || !verifier) return c.text('no OIDC sign-in is configured', 404);
    const flow = sealer.open<{ state: string; nonce: string; verifier: string; ret: string; exp: number }>(getCookie(c, FLOW_COOKIE));
    deleteCookie(c, FLOW_COOKIE, { path: '/auth' });
    const fail = (msg: string, status: 400 | 401 | 502 = 400) => c.html(`<!doctype html><title>Sign-in failed</title><p>Sign-in failed: ${msg.replace(/[<&>"]/g, (ch) => `&#${ch.charCodeAt(0)};`)}</p><p><a href="/">Back to Sluice</a></p>`, status);
    if (c.req.query('error')) return fail(`${c.req.query('error')}: ${c.req.query('error_description') ?? ''}`, 401);
    if (!flow || flow.state !== c.req.query('state')) return fail('the sign-in attempt expired or does not match (state); start again');
    const code = c.req.query('code');
    if (!code) return fail('no authorization code');
    let tokens: { id_token?: string; error?: string; error_description?: string };
    try {
      const d = await discover();
      const secret = oidc.client_secret;
      const r = await fetch(d.token_endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...(secret ? { authorization: `Basic ${Buffer.from(`${encodeURIComponent(oidc.client_id)}:${encodeURIComponent(secret)}`).toString('base64')}` } : {}) },
        body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: redirectUri(c), code_verifier: flow.verifier, ...(secret ? {} : { client_id: oidc.client_id }) }),
        signal: AbortSignal.timeout(10_000),
      });
      tokens = (await r.json()) as typeof tokens;
    } catch (e) {
      return fail(`token exchange failed: ${(e as Error).message}`, 502);
    }
    if (!tokens.id_token) return fail(`token exchange failed: ${tokens.error ?? 'no id_token'} ${tokens.error_description ?? ''}`, 401);
    let identity: Identity;
    try {
      identity = await verifier.verify(tokens.id_token);
      const { nonce } = JSON.parse(Buffer.from(tokens.id_token.split('.')[1]!, 'base64url').toString('utf8')) as { nonce?: string };
      if (nonce !== flow.nonce) throw new AuthError('the ID token nonce does not match this sign-in');
    } catch (e) {
      governor.record({ type: 'auth_failure', application_name: 'web', reason: (e as Error).message });
      return fail((e as Error).message, 401);
    }
    startSession(c, sealer, cfg, identity);
    governor.record({ type: 'console_login', subject: identity.subject, identity_kind: identity.kind, groups: identity.groups, auth_method: 'oidc', application_name: 'web' });
    return c.redirect(flow.ret, 302);
  });

  /** Sign in by presenting a token or key (for keys, and for issuers without a browser flow). */
  app.post('/auth/token', async (c) => {
    const body = (await c.req.json().catch(() => ({}))) as { token?: unknown };
    if (typeof body.token !== 'string' || !body.token.trim()) return c.json({ error: 'send { "token": "<OIDC token or Sluice key>" }' }, 400);
    try {
      const identity = await governor.authenticate(body.token, httpSource(c.env));
      const s = startSession(c, sealer, cfg, identity);
      governor.record({ type: 'console_login', subject: identity.subject, identity_kind: identity.kind, groups: identity.groups, auth_method: identity.method, application_name: 'web' });
      return c.json({ identity, csrf: s.csrf });
    } catch (e) {
      governor.record({ type: 'auth_failure', application_name: 'web', client_addr: httpSource(c.env), ...authFailureFields(e, (e as Error).message) });
      return c.json({ error: e instanceof AuthError ? e.message : 'authentication failed' }, 401);
    }
  });

  app.post('/auth/logout', (c) => {
    deleteCookie(c, SESSION_COOKIE, { path: '/' });
    return c.json({ ok: true });
  });

  const root = webRoot();
  if (!root) log.warn('web: the console is not built (npm run build); only the API is served');
  app.get('*', async (c, next) => {
    const p = c.req.path;
    if (!root || p.startsWith('/api/') || p.startsWith('/auth/') || p === '/mcp' || p === '/metrics' || p === '/healthz') return next();
    const file = path.resolve(root, `.${decodeURIComponent(p)}`);
    if (file.startsWith(root + path.sep) && fs.existsSync(file) && fs.statSync(file).isFile()) {
      return c.body(fs.readFileSync(file), 200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'cache-control': p.startsWith('/assets/') ? 'public, max-age=31536000, immutable' : 'no-cache' });
    }
    // Client-side routes (/audit, /approvals/apr_..., ...) get the app.
    return c.body(fs.readFileSync(path.join(root, 'index.html')), 200, { 'content-type': TYPES['.html']!, 'cache-control': 'no-cache' });
  });
}
