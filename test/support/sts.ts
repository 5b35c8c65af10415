import http from 'node:http';
import crypto from 'node:crypto';

/**
 * A local stand-in for AWS STS, the one service the suite cannot talk to for real. It is kept honest: it verifies
 * the SigV4 signature of every request itself (a hand-written verifier following the AWS documentation, checked
 * against AWS's published test vector in test/aws.test.ts, not the SDK signer the client uses), refuses a request
 * date more than 15 minutes from now, accepts only GetCallerIdentity, and answers in AWS's XML, errors included.
 */
export interface StsPrincipal {
  secretAccessKey: string;
  /** The caller's ARN as GetCallerIdentity reports it (assumed-role ARNs for role sessions). */
  arn: string;
  /** Temporary credentials: the session token that must come (signed) in X-Amz-Security-Token. */
  sessionToken?: string;
}

export interface StsStandIn {
  endpoint: string;
  /** Requests that reached it. */
  requests: number;
  close(): Promise<void>;
}

const hmac = (key: Buffer | string, data: string) => crypto.createHmac('sha256', key).update(data, 'utf8').digest();
const sha256hex = (data: string | Buffer) => crypto.createHash('sha256').update(data).digest('hex');

/** The SigV4 signature of a request (AWS General Reference, "Create a signed AWS API request"). */
export function sigv4Signature(o: { method: string; path: string; query?: string; headers: Record<string, string>; signedHeaders: string[]; body: string; secret: string; date: string; region: string; service: string; amzDate: string }): string {
  const canonicalHeaders = o.signedHeaders.map((h) => `${h}:${(o.headers[h] ?? '').trim().replace(/\s+/g, ' ')}\n`).join('');
  // The hash of the body that arrived, never a hash the client claims (STS reads the body it was sent).
  const payloadHash = sha256hex(o.body);
  const canonicalRequest = [o.method, o.path, o.query ?? '', canonicalHeaders, o.signedHeaders.join(';'), payloadHash].join('\n');
  const scope = `${o.date}/${o.region}/${o.service}/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', o.amzDate, scope, sha256hex(canonicalRequest)].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${o.secret}`, o.date), o.region), o.service), 'aws4_request');
  return crypto.createHmac('sha256', key).update(stringToSign, 'utf8').digest('hex');
}

const NS = 'https://sts.amazonaws.com/doc/2011-06-15/';
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function errorXml(code: string, message: string, type = 'Sender'): string {
  return `<ErrorResponse xmlns="${NS}">\n  <Error>\n    <Type>${type}</Type>\n    <Code>${code}</Code>\n    <Message>${esc(message)}</Message>\n  </Error>\n  <RequestId>${crypto.randomUUID()}</RequestId>\n</ErrorResponse>\n`;
}

function identityXml(arn: string): string {
  const account = /^arn:aws[a-z-]*:(?:sts|iam)::(\d{12}):/.exec(arn)?.[1] ?? '000000000000';
  const session = /assumed-role\/[^/]+\/(.+)$/.exec(arn)?.[1];
  const userId = `${session ? 'AROA' : 'AIDA'}${crypto.createHash('sha1').update(arn).digest('hex').slice(0, 17).toUpperCase()}${session ? `:${session}` : ''}`;
  return `<GetCallerIdentityResponse xmlns="${NS}">\n  <GetCallerIdentityResult>\n    <Arn>${esc(arn)}</Arn>\n    <UserId>${esc(userId)}</UserId>\n    <Account>${account}</Account>\n  </GetCallerIdentityResult>\n  <ResponseMetadata>\n    <RequestId>${crypto.randomUUID()}</RequestId>\n  </ResponseMetadata>\n</GetCallerIdentityResponse>\n`;
}

/** Check one request as STS does; the caller's ARN, or [status, code, message]. */
function judge(req: http.IncomingMessage, body: string, principals: Record<string, StsPrincipal>, region: string): string | [number, string, string] {
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string') headers[k] = v;
  const auth = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/.exec(headers.authorization ?? '');
  if (!auth) return [403, 'MissingAuthenticationToken', 'Request is missing Authentication Token'];
  const [, akid, date, scopeRegion, service, signedList, signature] = auth as unknown as string[];
  const p = principals[akid!];
  if (!p) return [403, 'InvalidClientTokenId', 'The security token included in the request is invalid.'];
  const amzDate = headers['x-amz-date'] ?? '';
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate);
  if (!m || amzDate.slice(0, 8) !== date) return [400, 'IncompleteSignature', 'Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP'];
  if (scopeRegion !== region || service !== 'sts') return [403, 'SignatureDoesNotMatch', `Credential should be scoped to a valid region, not '${scopeRegion}'. Credential should be scoped to correct service: 'sts'.`];
  const signed = signedList!.split(';');
  if (!signed.includes('host')) return [403, 'SignatureDoesNotMatch', "'Host' must be a 'SignedHeader' in the AWS Authorization."];
  const at = Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!);
  if (Math.abs(Date.now() - at) > 15 * 60_000) return [403, 'SignatureDoesNotMatch', `Signature expired: ${amzDate} is now earlier than ${new Date(Date.now() - 15 * 60_000).toISOString().replace(/[-:]|\.\d+/g, '')} (current time - 15 min.)`];
  const url = new URL(req.url ?? '/', 'http://x');
  const expected = sigv4Signature({ method: req.method ?? 'POST', path: url.pathname, query: url.search.slice(1), headers, signedHeaders: signed, body, secret: p.secretAccessKey, date: date!, region: region, service: 'sts', amzDate });
  if (!crypto.timingSafeEqual(Buffer.from(expected), Buffer.from(signature!))) {
    return [403, 'SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.'];
  }
  if (p.sessionToken !== undefined && (headers['x-amz-security-token'] !== p.sessionToken || !signed.includes('x-amz-security-token'))) return [403, 'InvalidClientTokenId', 'The security token included in the request is invalid.'];
  const form = new URLSearchParams(body);
  if (form.get('Action') !== 'GetCallerIdentity') return [400, 'InvalidAction', `Could not find operation ${form.get('Action')} for version ${form.get('Version')}`];
  if (form.get('Version') !== '2011-06-15') return [400, 'InvalidAction', `Could not find operation GetCallerIdentity for version ${form.get('Version')}`];
  return p.arn;
}

export async function startSts(principals: Record<string, StsPrincipal>, o: { region?: string } = {}): Promise<StsStandIn> {
  const region = o.region ?? 'us-east-1';
  const state = { requests: 0 };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      state.requests++;
      const r = req.method === 'POST' ? judge(req, Buffer.concat(chunks).toString('utf8'), principals, region) : ([405, 'InvalidAction', 'Only POST is served here'] as [number, string, string]);
      res.setHeader('content-type', 'text/xml');
      res.setHeader('x-amzn-requestid', crypto.randomUUID());
      if (typeof r === 'string') res.writeHead(200).end(identityXml(r));
      else res.writeHead(r[0]).end(errorXml(r[1], r[2]));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as { port: number }).port}/`,
    get requests() {
      return state.requests;
    },
    close: () => new Promise((r) => server.close(() => r())),
  };
}
