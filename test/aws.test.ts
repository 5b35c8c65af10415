import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { startTestGateway, freshDatabase, auditEvents, run, type TestGateway } from './support/env.js';
import { startSts, sigv4Signature, type StsStandIn } from './support/sts.js';
import { awsPassword } from '../src/cli/awstoken.js';
import { AWS_PREFIX, principalArn, type SignedStsRequest } from '../src/identity/aws.js';

/**
 * AWS IAM sign-in. STS is the one service this suite does not talk to for real: test/support/sts.ts stands in for
 * it and verifies SigV4 signatures itself (checked here against AWS's published test vector).
 */
const CLI = path.resolve('bin/sluice.js');
const ACCOUNT = '123456789012';
const ROLE_SESSION = { akid: 'ASIATESTROLESESSION1', secret: 'role-session-secret/K7MDENG+bPxRfiCYEXAMPLEKEY', token: 'IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKEN' };
const USER = { akid: 'AKIATESTUSER0000001', secret: 'user-secret/K7MDENG+bPxRfiCYEXAMPLEKEY' };
const STRANGER = { akid: 'AKIATESTSTRANGER001', secret: 'stranger-secret/EXAMPLEKEY' };

let sts: StsStandIn;
let t: TestGateway;
let db: { name: string; drop: () => Promise<void> };

beforeAll(async () => {
  sts = await startSts({
    [ROLE_SESSION.akid]: { secretAccessKey: ROLE_SESSION.secret, sessionToken: ROLE_SESSION.token, arn: `arn:aws:sts::${ACCOUNT}:assumed-role/etl-loader/i-0abc123` },
    [USER.akid]: { secretAccessKey: USER.secret, arn: `arn:aws:iam::${ACCOUNT}:user/ci-bot` },
    [STRANGER.akid]: { secretAccessKey: STRANGER.secret, arn: `arn:aws:iam::999999999999:role/other` },
  });
  db = await freshDatabase('sluice_aws', 'CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);');
  t = await startTestGateway({
    config: `identity:
  aws:
    sts_endpoint: ${sts.endpoint}
    server_id: sluice-test
    roles:
      - { arn: "arn:aws:iam::${ACCOUNT}:role/etl-*", subject: "service:etl", kind: service, groups: [app] }
      - { arn: "arn:aws:iam::${ACCOUNT}:user/ci-bot", kind: agent, groups: [analysts] }
`,
  });
});
afterAll(async () => {
  await t?.stop();
  await sts?.close();
  await db?.drop();
});

const roleCreds = { accessKeyId: ROLE_SESSION.akid, secretAccessKey: ROLE_SESSION.secret, sessionToken: ROLE_SESSION.token };
const sign = (o: Partial<Parameters<typeof awsPassword>[0]> = {}) => awsPassword({ endpoint: sts.endpoint, region: 'us-east-1', serverId: 'sluice-test', credentials: roleCreds, ...o });
const decode = (p: string) => JSON.parse(Buffer.from(p.slice(AWS_PREFIX.length), 'base64url').toString()) as SignedStsRequest;
const encode = (r: SignedStsRequest) => AWS_PREFIX + Buffer.from(JSON.stringify(r)).toString('base64url');
const login = async (password: string) => {
  const c = new pg.Client(t.conn(password, db.name));
  await c.connect();
  return c;
};

describe('the STS stand-in is honest', () => {
  it("computes AWS's published SigV4 test vector (get-vanilla)", () => {
    const sig = sigv4Signature({
      method: 'GET', path: '/', headers: { host: 'example.amazonaws.com', 'x-amz-date': '20150830T123600Z' }, signedHeaders: ['host', 'x-amz-date'], body: '',
      secret: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', date: '20150830', region: 'us-east-1', service: 'service', amzDate: '20150830T123600Z',
    });
    expect(sig).toBe('5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31');
  });

  it('answers GetCallerIdentity like AWS, and refuses bad signatures, stale dates and other actions', async () => {
    const send = (r: SignedStsRequest) => fetch(sts.endpoint, { method: 'POST', headers: Object.fromEntries(Object.entries(r.headers).filter(([k]) => k !== 'host')), body: r.body });
    const good = decode(await sign());
    const ok = await send(good);
    expect(ok.status).toBe(200);
    expect(await ok.text()).toMatch(new RegExp(`<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">[\\s\\S]*<Arn>arn:aws:sts::${ACCOUNT}:assumed-role/etl-loader/i-0abc123</Arn>[\\s\\S]*<Account>${ACCOUNT}</Account>`));
    const wrongKey = await send(decode(await sign({ credentials: { ...roleCreds, secretAccessKey: 'not-the-secret' } })));
    expect([wrongKey.status, await wrongKey.text()]).toEqual([403, expect.stringContaining('<Code>SignatureDoesNotMatch</Code>')]);
    const stale = await send(decode(await sign({ now: new Date(Date.now() - 20 * 60_000) })));
    expect(await stale.text()).toContain('Signature expired');
    const other = await send({ ...good, body: 'Action=GetSessionToken&Version=2011-06-15' });
    expect(await other.text()).toContain('<Code>SignatureDoesNotMatch</Code>'); // the body is signed
  });
});

describe('AWS IAM sign-in (Vault AWS auth style)', () => {
  it('`sluice token aws` from the standard credential chain (environment) signs in as the mapped role', async () => {
    const r = await run('node', [CLI, 'token', 'aws', '--sts-endpoint', sts.endpoint, '--server-id', 'sluice-test'], {
      env: { AWS_ACCESS_KEY_ID: ROLE_SESSION.akid, AWS_SECRET_ACCESS_KEY: ROLE_SESSION.secret, AWS_SESSION_TOKEN: ROLE_SESSION.token, AWS_EC2_METADATA_DISABLED: 'true', AWS_CONFIG_FILE: '/nonexistent', AWS_SHARED_CREDENTIALS_FILE: '/nonexistent' },
    });
    expect(r.stderr).toBe('');
    const password = r.stdout.trim();
    expect(password.startsWith(AWS_PREFIX)).toBe(true);
    expect(decode(password).headers).toMatchObject({ 'x-sluice-server-id': 'sluice-test', 'x-amz-security-token': ROLE_SESSION.token });
    const c = await login(password);
    expect((await c.query('SELECT count(*)::int AS n FROM t')).rows[0].n).toBe(2);
    await c.query('INSERT INTO t VALUES (3)'); // group app may write
    await c.end();
    const starts = await auditEvents(t, { subject: 'service:etl', type: 'session_start' });
    expect(starts[0]).toMatchObject({ identity_kind: 'service', groups: ['app'], auth_method: 'aws' });
    expect(starts[0]!.display_name).toBe(`arn:aws:iam::${ACCOUNT}:role/etl-loader (session i-0abc123)`);
    // psql with the password, as a workload would use it
    const viaPsql = await run('psql', ['-X', '-At', `host=127.0.0.1 port=${t.port} dbname=${db.name} user=etl sslmode=require`, '-c', 'SELECT count(*) FROM t'], { env: { PGPASSWORD: await sign() } });
    expect(viaPsql.stdout.trim()).toBe('3');
  });

  it('maps IAM user ARNs too, with their own kind and groups', async () => {
    const c = await login(await sign({ credentials: { accessKeyId: USER.akid, secretAccessKey: USER.secret } }));
    const err = await c.query('INSERT INTO t VALUES (9)').catch((e) => e);
    expect(err.code).toBe('42501'); // analysts only read
    await c.end();
    expect((await auditEvents(t, { subject: `arn:aws:iam::${ACCOUNT}:user/ci-bot`, type: 'session_start' }))[0]).toMatchObject({ identity_kind: 'agent', groups: ['analysts'] });
  });

  const refused = async (password: string, reason: RegExp) => {
    const err = await login(password).catch((e) => e);
    expect(err.code).toBe('28P01');
    expect(err.message).toMatch(reason);
  };

  it('refuses what STS refuses: a signature made with the wrong secret', async () => {
    await refused(await sign({ credentials: { ...roleCreds, secretAccessKey: 'guessed' } }), /AWS STS refused the credential: SignatureDoesNotMatch/);
  });

  it('refuses before asking STS: another server id, an unsigned server id, a stale request, another host, another action', async () => {
    const before = sts.requests;
    await refused(await sign({ serverId: 'some-other-service' }), /server id "some-other-service", not this gateway's \("sluice-test"\)/);
    const unsigned = decode(await sign({ serverId: undefined }));
    unsigned.headers['x-sluice-server-id'] = 'sluice-test';
    await refused(encode(unsigned), /does not sign x-sluice-server-id/);
    await refused(await sign({ now: new Date(Date.now() - 20 * 60_000) }), /signed 1[0-9]{3} s away from now/);
    await refused(await sign({ endpoint: 'https://sts.amazonaws.com' }), /signed for "sts\.amazonaws\.com"; this gateway accepts requests for 127\.0\.0\.1:\d+/);
    await refused(encode({ ...decode(await sign()), body: 'Action=GetSessionToken&Version=2011-06-15' }), /exactly an sts:GetCallerIdentity request/);
    await refused(`${AWS_PREFIX}not-json`, /not base64url JSON/);
    expect(sts.requests).toBe(before);
  });

  it('refuses a genuine AWS identity that no role mapping names', async () => {
    await refused(await sign({ credentials: { accessKeyId: STRANGER.akid, secretAccessKey: STRANGER.secret } }), /AWS identity arn:aws:iam::999999999999:role\/other is not mapped to a Sluice identity/);
  });

  it('maps assumed-role ARNs to role ARNs', () => {
    expect(principalArn('arn:aws:sts::123456789012:assumed-role/etl-loader/i-0abc')).toEqual({ arn: 'arn:aws:iam::123456789012:role/etl-loader', session: 'i-0abc' });
    expect(principalArn('arn:aws-us-gov:sts::123456789012:assumed-role/r/s/with/slash')).toEqual({ arn: 'arn:aws-us-gov:iam::123456789012:role/r', session: 's/with/slash' });
    expect(principalArn('arn:aws:iam::123456789012:user/u')).toEqual({ arn: 'arn:aws:iam::123456789012:user/u' });
  });

  it('says so when AWS sign-in is not configured, and when there are no AWS credentials', async () => {
    const plain = await startTestGateway();
    try {
      const err = await new pg.Client(plain.conn(await sign(), db.name)).connect().catch((e) => e);
      expect(err.message).toContain('AWS IAM sign-in is not enabled on this gateway (identity.aws)');
    } finally {
      await plain.stop();
    }
    const home = fs.mkdtempSync('/tmp/sluice-aws-home-');
    const r = await run('node', [CLI, 'token', 'aws'], { env: { HOME: home, AWS_ACCESS_KEY_ID: '', AWS_SECRET_ACCESS_KEY: '', AWS_SESSION_TOKEN: '', AWS_PROFILE: '', AWS_EC2_METADATA_DISABLED: 'true', AWS_CONFIG_FILE: `${home}/none`, AWS_SHARED_CREDENTIALS_FILE: `${home}/none` } });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no AWS credentials: .*standard chain/);
  });
});
