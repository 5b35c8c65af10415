import { SignatureV4 } from '@smithy/signature-v4';
import { Sha256 } from '@aws-crypto/sha256-js';
import { fromNodeProviderChain } from '@aws-sdk/credential-providers';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';
import { SERVER_ID_HEADER, encodeAwsPassword, type SignedStsRequest } from '../identity/aws.js';
import { UsageError } from './usage.js';

export interface AwsTokenOptions {
  /** STS endpoint the gateway sends the request to (its identity.aws.sts_endpoint). */
  endpoint: string;
  /** Signing region: us-east-1 for the global endpoint, else the endpoint's region. */
  region: string;
  /** The gateway's identity.aws.server_id, signed into the request so it cannot be replayed elsewhere. */
  serverId?: string;
  credentials?: AwsCredentialIdentity | AwsCredentialIdentityProvider;
  now?: Date;
}

/** The region a regional STS endpoint (sts.eu-west-1.amazonaws.com) signs for; us-east-1 for the global one. */
export function regionOf(endpoint: string): string {
  return /^sts[.-]([a-z]{2}(?:-[a-z]+)+-\d)\./.exec(new URL(endpoint).hostname)?.[1] ?? 'us-east-1';
}

/**
 * A password for Sluice from the standard AWS credential chain (environment, shared config and SSO, web identity,
 * ECS/EC2 metadata): an sts:GetCallerIdentity request signed with the official SigV4 signer, for the gateway to
 * present to STS. It is valid for as long as STS accepts the signature (minutes), so make one per connection.
 */
export async function awsPassword(o: AwsTokenOptions): Promise<string> {
  const url = new URL(o.endpoint);
  const body = 'Action=GetCallerIdentity&Version=2011-06-15';
  const headers: Record<string, string> = { host: url.host, 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' };
  if (o.serverId) headers[SERVER_ID_HEADER] = o.serverId;
  const signer = new SignatureV4({ service: 'sts', region: o.region, credentials: o.credentials ?? fromNodeProviderChain(), sha256: Sha256 });
  const signed = await signer.sign(
    { method: 'POST', protocol: url.protocol, hostname: url.hostname, port: url.port ? Number(url.port) : undefined, path: url.pathname || '/', headers, body },
    { signingDate: o.now },
  );
  const req: SignedStsRequest = { method: 'POST', url: url.href, headers: signed.headers as Record<string, string>, body };
  return encodeAwsPassword(req);
}

/** `sluice token aws [--sts-endpoint URL] [--region R] [--server-id ID]`: print a password (for PGPASSWORD, MYSQL_PWD). */
export async function runTokenAws(values: Record<string, string | boolean | undefined>): Promise<number> {
  const endpoint = (values['sts-endpoint'] as string | undefined) ?? process.env.SLUICE_AWS_STS_ENDPOINT ?? 'https://sts.amazonaws.com';
  if (!/^https?:\/\//.test(endpoint)) throw new UsageError(`--sts-endpoint must be an http(s) URL, not ${JSON.stringify(endpoint)}`);
  const region = (values.region as string | undefined) ?? regionOf(endpoint);
  const serverId = (values['server-id'] as string | undefined) ?? process.env.SLUICE_AWS_SERVER_ID;
  let password: string;
  try {
    password = await awsPassword({ endpoint, region, serverId });
  } catch (e) {
    throw new Error(`no AWS credentials: ${(e as Error).message} (the standard chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, SSO, web identity, ECS or EC2 metadata)`);
  }
  process.stdout.write(password + '\n');
  return 0;
}
