import * as jose from 'jose';
import { AuthError, type Identity, type IdentityKind } from './identity.js';

export interface OidcIssuerConfig {
  issuer: string;
  /** Accepted audience(s); tokens without one of these are refused. */
  audience: string | string[];
  /** JWKS location; discovered from {issuer}/.well-known/openid-configuration when omitted. */
  jwks_uri?: string;
  /** Claim (dotted path allowed, e.g. realm_access.roles) that lists groups. */
  groups_claim?: string;
  subject_claim?: string;
  /** Kind of identity tokens from this issuer represent (human for Okta/Keycloak, service for CI/Kubernetes). */
  kind?: IdentityKind;
  /** Claim that carries the kind, overriding `kind` when present and valid. */
  kind_claim?: string;
  /** Claim naming the person an agent acts for; `act.sub` (RFC 8693) is also honoured. */
  acting_for_claim?: string;
  algorithms?: string[];
  clock_tolerance_s?: number;
  /** Prefix added to group names from this issuer (e.g. "okta:"), to keep issuers' groups apart. */
  group_prefix?: string;
}

function claimAt(payload: Record<string, unknown>, path: string): unknown {
  let v: unknown = payload;
  for (const part of path.split('.')) {
    if (v && typeof v === 'object' && part in (v as object)) v = (v as Record<string, unknown>)[part];
    else return undefined;
  }
  return v;
}

/**
 * Every principal a token names besides its subject: the configured acting-for claim, `on_behalf_of`, and each
 * `sub` of the (possibly nested, RFC 8693 §4.1) `act` claims.
 */
function delegationChain(payload: Record<string, unknown>, actingForClaim?: string): string[] {
  const out: string[] = [];
  const add = (v: unknown) => {
    if (typeof v === 'string' && v !== '' && !out.includes(v)) out.push(v);
  };
  if (actingForClaim) add(claimAt(payload, actingForClaim));
  let act = payload.act;
  for (let depth = 0; act && typeof act === 'object' && depth < 16; depth++) {
    add((act as Record<string, unknown>).sub);
    act = (act as Record<string, unknown>).act;
  }
  add(payload.on_behalf_of);
  return out;
}

export const looksLikeJwt = (s: string): boolean => /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(s);

/** Verifies OIDC/JWT bearer tokens from a set of trusted issuers. */
export class OidcVerifier {
  private jwks = new Map<string, ReturnType<typeof jose.createRemoteJWKSet>>();
  private discovering = new Map<string, Promise<string>>();
  constructor(private readonly issuers: OidcIssuerConfig[]) {}

  private async jwksFor(cfg: OidcIssuerConfig) {
    let set = this.jwks.get(cfg.issuer);
    if (set) return set;
    let uri = cfg.jwks_uri;
    if (!uri) {
      let p = this.discovering.get(cfg.issuer);
      if (!p) {
        p = (async () => {
          const url = `${cfg.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
          const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
          if (!res.ok) throw new Error(`discovery ${url} answered ${res.status}`);
          const doc = (await res.json()) as { jwks_uri?: string };
          if (!doc.jwks_uri) throw new Error(`discovery ${url} has no jwks_uri`);
          return doc.jwks_uri;
        })();
        this.discovering.set(cfg.issuer, p);
        p.catch(() => this.discovering.delete(cfg.issuer));
      }
      uri = await p;
    }
    set = jose.createRemoteJWKSet(new URL(uri), { timeoutDuration: 5000, cooldownDuration: 30_000, cacheMaxAge: 10 * 60_000 });
    this.jwks.set(cfg.issuer, set);
    return set;
  }

  async verify(token: string): Promise<Identity> {
    let unverified: jose.JWTPayload;
    try {
      unverified = jose.decodeJwt(token);
    } catch {
      throw new AuthError('the password is not a valid JWT');
    }
    const cfg = this.issuers.find((i) => i.issuer === unverified.iss);
    if (!cfg) throw new AuthError(`token issuer ${JSON.stringify(unverified.iss ?? null)} is not trusted by this gateway`);
    let jwks;
    try {
      jwks = await this.jwksFor(cfg);
    } catch (e) {
      throw new AuthError(`cannot fetch signing keys for issuer ${cfg.issuer}: ${(e as Error).message}`, true);
    }
    let payload: jose.JWTPayload;
    try {
      ({ payload } = await jose.jwtVerify(token, jwks, {
        issuer: cfg.issuer,
        audience: cfg.audience,
        algorithms: cfg.algorithms ?? ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'],
        clockTolerance: cfg.clock_tolerance_s ?? 30,
        requiredClaims: ['exp'],
      }));
    } catch (e) {
      throw new AuthError(describeJoseError(e, cfg));
    }
    const subjectClaim = cfg.subject_claim ?? 'sub';
    const subject = claimAt(payload, subjectClaim);
    if (typeof subject !== 'string' || subject === '') throw new AuthError(`token has no "${subjectClaim}" claim to identify its subject`);
    const rawGroups = claimAt(payload, cfg.groups_claim ?? 'groups');
    const groups = (Array.isArray(rawGroups) ? rawGroups : typeof rawGroups === 'string' ? rawGroups.split(/[ ,]+/) : [])
      .filter((g): g is string => typeof g === 'string' && g !== '')
      .map((g) => (cfg.group_prefix ?? '') + g);
    let kind: IdentityKind = cfg.kind ?? 'human';
    const claimedKind = cfg.kind_claim ? claimAt(payload, cfg.kind_claim) : undefined;
    if (claimedKind === 'human' || claimedKind === 'agent' || claimedKind === 'service') kind = claimedKind;
    const act = cfg.acting_for_claim ? claimAt(payload, cfg.acting_for_claim) : (claimAt(payload, 'act.sub') ?? claimAt(payload, 'on_behalf_of'));
    const delegation = delegationChain(payload, cfg.acting_for_claim);
    return {
      subject,
      kind,
      groups,
      displayName: typeof payload.name === 'string' ? payload.name : undefined,
      email: typeof payload.email === 'string' ? payload.email : undefined,
      actingFor: typeof act === 'string' ? act : undefined,
      delegation: delegation.length ? delegation : undefined,
      issuer: cfg.issuer,
      method: 'oidc',
      expiresAt: payload.exp,
    };
  }
}

function describeJoseError(e: unknown, cfg: OidcIssuerConfig): string {
  const err = e as jose.errors.JOSEError & { claim?: string; payload?: jose.JWTPayload };
  switch (err.code) {
    case 'ERR_JWT_EXPIRED':
      return `token expired at ${new Date(((err.payload?.exp as number) ?? 0) * 1000).toISOString()}`;
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (err.claim === 'aud') return `token audience ${JSON.stringify(err.payload?.aud ?? null)} is not accepted (expected ${JSON.stringify(cfg.audience)})`;
      if (err.claim === 'nbf') return 'token is not valid yet (nbf is in the future)';
      return `token claim "${err.claim}" is invalid: ${err.message}`;
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return `token signature does not verify against the signing keys of ${cfg.issuer}`;
    case 'ERR_JWKS_NO_MATCHING_KEY':
      return `token is signed with a key (kid) that ${cfg.issuer} does not publish`;
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return 'token signing algorithm is not allowed';
    default:
      return `token rejected: ${err.message}`;
  }
}
