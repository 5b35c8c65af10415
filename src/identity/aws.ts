import { AuthError, IDENTITY_KINDS, type Identity, type IdentityKind } from './identity.js';
import { globMatch } from '../util/glob.js';

/**
 * AWS IAM identities (Vault's AWS auth style): the password is `aws:` + base64url(JSON {method, url, headers, body})
 * of an `sts:GetCallerIdentity` request the workload signed with its own credentials (SigV4). Sluice sends it to the
 * configured STS endpoint; STS answers with the caller's ARN only if the signature is good. An assumed-role ARN is
 * mapped to its role ARN, and role ARNs to Sluice subjects, kinds and groups in `identity.aws.roles`.
 */
export interface AwsRoleMapping {
  /** Role (or IAM user) ARN, a glob (`*` any run, case-insensitive as IAM names are), e.g. arn:aws:iam::123456789012:role/etl-*. */
  arn: string;
  /** Sluice subject; default the ARN itself. */
  subject?: string;
  kind?: IdentityKind;
  groups?: string[];
}

export interface AwsAuthConfig {
  /** Where the signed requests go; they must be signed for this host. Default https://sts.amazonaws.com. */
  sts_endpoint: string;
  /** When set, the request must carry (and sign) X-Sluice-Server-Id with this value: no replay to another service. */
  server_id?: string;
  /** How old (or how far in the future) the request's X-Amz-Date may be. */
  max_skew_s: number;
  timeout_ms: number;
  roles: AwsRoleMapping[];
}

export const AWS_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['roles'],
  properties: {
    sts_endpoint: { type: 'string', pattern: '^https?://', default: 'https://sts.amazonaws.com' },
    server_id: { type: 'string', minLength: 1 },
    max_skew_s: { type: 'integer', minimum: 1, maximum: 3600, default: 900 },
    timeout_ms: { type: 'integer', minimum: 100, maximum: 60000, default: 5000 },
    roles: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['arn'],
        properties: {
          arn: { type: 'string', pattern: '^arn:aws[a-z-]*:(iam|sts)::' },
          subject: { type: 'string', minLength: 1 },
          kind: { enum: [...IDENTITY_KINDS] },
          groups: { type: 'array', items: { type: 'string', minLength: 1 } },
        },
      },
    },
  },
} as const;

export const AWS_PREFIX = 'aws:';
export const SERVER_ID_HEADER = 'x-sluice-server-id';
const GET_CALLER_IDENTITY = 'Action=GetCallerIdentity&Version=2011-06-15';

/** The signed request as the client sends it. */
export interface SignedStsRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: string;
}

export const encodeAwsPassword = (r: SignedStsRequest): string => AWS_PREFIX + Buffer.from(JSON.stringify(r)).toString('base64url');

function decode(password: string): SignedStsRequest {
  const raw = password.slice(AWS_PREFIX.length);
  if (raw.length > 16_384) throw new AuthError('the AWS credential is too long');
  let r: Partial<SignedStsRequest>;
  try {
    r = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as Partial<SignedStsRequest>;
  } catch {
    throw new AuthError('the AWS credential is not base64url JSON of a signed GetCallerIdentity request (make it with `sluice token aws`)');
  }
  if (typeof r !== 'object' || r === null || typeof r.method !== 'string' || typeof r.url !== 'string' || typeof r.body !== 'string' || typeof r.headers !== 'object' || r.headers === null) {
    throw new AuthError('the AWS credential must hold method, url, headers and body');
  }
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(r.headers)) {
    if (typeof v !== 'string') throw new AuthError(`the AWS credential's header ${k} is not a string`);
    headers[k.toLowerCase()] = v;
  }
  return { method: r.method, url: r.url, headers, body: r.body };
}

/** The SigV4 Authorization header's signed header names. */
function signedHeaders(auth: string | undefined): string[] {
  const m = /SignedHeaders=([^,\s]+)/.exec(auth ?? '');
  if (!auth?.startsWith('AWS4-HMAC-SHA256 ') || !m) throw new AuthError('the AWS credential is not signed with SigV4 (no AWS4-HMAC-SHA256 Authorization header)');
  return m[1]!.split(';');
}

/** X-Amz-Date (20260101T000000Z) as epoch ms. */
function amzDate(v: string | undefined): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(v ?? '');
  if (!m) throw new AuthError('the AWS credential has no valid X-Amz-Date');
  return Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!);
}

/** What Sluice checks before it sends anything to STS. */
function checkRequest(r: SignedStsRequest, cfg: AwsAuthConfig, now: number): void {
  const endpoint = new URL(cfg.sts_endpoint);
  if (r.method.toUpperCase() !== 'POST') throw new AuthError('the AWS credential must be a POST to STS');
  if (r.body.replace(/\s+$/, '') !== GET_CALLER_IDENTITY) throw new AuthError('the AWS credential must be exactly an sts:GetCallerIdentity request');
  if (r.headers.host !== endpoint.host) throw new AuthError(`the AWS credential is signed for ${JSON.stringify(r.headers.host ?? null)}; this gateway accepts requests for ${endpoint.host}`);
  const signed = signedHeaders(r.headers.authorization);
  if (!signed.includes('host')) throw new AuthError('the AWS credential does not sign the host header');
  if (cfg.server_id !== undefined) {
    if (r.headers[SERVER_ID_HEADER] !== cfg.server_id) throw new AuthError(`the AWS credential is for server id ${JSON.stringify(r.headers[SERVER_ID_HEADER] ?? null)}, not this gateway's (${JSON.stringify(cfg.server_id)})`);
    if (!signed.includes(SERVER_ID_HEADER)) throw new AuthError(`the AWS credential does not sign ${SERVER_ID_HEADER}`);
  }
  const skew = Math.abs(now - amzDate(r.headers['x-amz-date']));
  if (skew > cfg.max_skew_s * 1000) throw new AuthError(`the AWS credential was signed ${Math.round(skew / 1000)} s away from now (at most ${cfg.max_skew_s} s): make a fresh one`);
}

const xmlText = (xml: string, tag: string): string | undefined => new RegExp(`<${tag}>([^<]*)</${tag}>`).exec(xml)?.[1]?.replace(/&amp;/g, '&').replace(/&lt;/g, '<').replace(/&gt;/g, '>');

/** arn:aws:sts::ACCT:assumed-role/NAME/SESSION -> arn:aws:iam::ACCT:role/NAME (and the session name). */
export function principalArn(arn: string): { arn: string; session?: string } {
  const m = /^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role\/([^/]+)\/(.+)$/.exec(arn);
  if (m) return { arn: `arn:${m[1]}:iam::${m[2]}:role/${m[3]}`, session: m[4] };
  return { arn };
}

/** Send the signed request to STS and read the caller's ARN from its GetCallerIdentity answer. */
async function callerArn(r: SignedStsRequest, cfg: AwsAuthConfig): Promise<string> {
  // Only the signed request's own headers go to STS, never a hop-by-hop or length header from the client.
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(r.headers)) if (!['content-length', 'connection', 'transfer-encoding', 'host'].includes(k)) headers[k] = v;
  let res: Response;
  try {
    res = await fetch(cfg.sts_endpoint, { method: 'POST', headers, body: r.body, signal: AbortSignal.timeout(cfg.timeout_ms), redirect: 'error' });
  } catch (e) {
    throw new AuthError(`cannot reach AWS STS at ${cfg.sts_endpoint}: ${(e as Error & { cause?: Error }).cause?.message ?? (e as Error).message}`, true);
  }
  const xml = await res.text();
  if (!res.ok) {
    const code = xmlText(xml, 'Code') ?? `HTTP ${res.status}`;
    if (res.status >= 500) throw new AuthError(`AWS STS failed (${code}); try again`, true);
    throw new AuthError(`AWS STS refused the credential: ${code}${xmlText(xml, 'Message') ? `: ${xmlText(xml, 'Message')}` : ''}`);
  }
  const arn = xmlText(xml, 'Arn');
  if (!arn || !/<GetCallerIdentityResponse[\s>]/.test(xml)) throw new AuthError('AWS STS answered without a caller ARN');
  return arn;
}

export class AwsVerifier {
  constructor(private readonly cfg: AwsAuthConfig) {}

  async verify(password: string, now = Date.now()): Promise<Identity> {
    const r = decode(password);
    checkRequest(r, this.cfg, now);
    const caller = principalArn(await callerArn(r, this.cfg));
    const mapping = this.cfg.roles.find((m) => globMatch(m.arn, caller.arn));
    if (!mapping) throw new AuthError(`AWS identity ${caller.arn} is not mapped to a Sluice identity (identity.aws.roles)`);
    return {
      subject: mapping.subject ?? caller.arn,
      kind: mapping.kind ?? 'service',
      groups: mapping.groups ?? [],
      displayName: caller.session ? `${caller.arn} (session ${caller.session})` : caller.arn,
      method: 'aws',
      issuer: new URL(this.cfg.sts_endpoint).host,
    };
  }
}
