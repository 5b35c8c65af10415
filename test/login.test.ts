import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import pg from 'pg';
import mysql from 'mysql2/promise';
import * as jose from 'jose';
import { startTestGateway, freshDatabase, auditEvents, run, tmpDir, MY, mysqlEngine, type TestGateway } from './support/env.js';
import { startIdp, type TestIdp } from './support/oidc.js';
import { FormBrowser } from './support/browser.js';
import { TokenCache, userConfigDir } from '../src/identity/tokencache.js';
import { deviceLogin, discover, freshToken, pkceLogin } from '../src/cli/login.js';
import { generate } from 'selfsigned';

const CLI = path.resolve('bin/sluice.js');
const SCOPES = 'openid email groups offline_access db';
const ACCOUNTS = { alice: { email: 'alice@example.com', name: 'Alice Analyst', groups: ['analysts'] }, dana: { email: 'dana@example.com', groups: ['dba'] } };

const oidc = (issuer: string, extra = '') => `identity:\n  oidc:\n    - { issuer: ${issuer}, audience: sluice, groups_claim: groups, kind: human${extra} }\n`;

let idp: TestIdp;
let shortIdp: TestIdp;
let t: TestGateway;
let short: TestGateway;
let db: { name: string; drop: () => Promise<void> };
let myDb: string;

beforeAll(async () => {
  if (!fs.existsSync('dist/cli/main.js')) throw new Error('build first: npm test runs tsc before vitest');
  idp = await startIdp({}, { cli: { client_id: 'sluice-cli', accounts: ACCOUNTS } });
  // Access tokens that live 4 s: expiry in the middle of a session, and refresh for the next connection.
  shortIdp = await startIdp({}, { ttl: 4, cli: { client_id: 'sluice-cli', accounts: ACCOUNTS } });
  db = await freshDatabase('sluice_login', 'CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2), (3);');
  myDb = `sluice_login_${crypto.randomBytes(4).toString('hex')}`;
  const r = await mysql.createConnection({ ...MY, multipleStatements: true });
  await r.query(`CREATE DATABASE ${myDb}; CREATE TABLE ${myDb}.t (id int); INSERT INTO ${myDb}.t VALUES (1), (2);`);
  await r.end();
  t = await startTestGateway({ config: `${oidc(idp.issuer)}${mysqlEngine()}\n` });
  short = await startTestGateway({ config: oidc(shortIdp.issuer, ', clock_tolerance_s: 0') });
}, 120_000);
afterAll(async () => {
  await t?.stop();
  await short?.stop();
  await idp?.close();
  await shortIdp?.close();
  await db?.drop();
  const r = await mysql.createConnection(MY);
  await r.query(`DROP DATABASE IF EXISTS ${myDb}`);
  await r.end();
});

/** A user's machine: its own config dir and working directory (no sluice.yaml). */
function machine() {
  const xdg = tmpDir('login-xdg');
  const cwd = tmpDir('login-cwd');
  const env = { XDG_CONFIG_HOME: xdg, SLUICE_CONFIG: '', PGPASSWORD: '', MYSQL_PWD: '', DISPLAY: '', WAYLAND_DISPLAY: '' };
  return {
    xdg,
    env,
    cache: new TokenCache(userConfigDir({ XDG_CONFIG_HOME: xdg })),
    cli: (...args: string[]) => run('sh', ['-c', 'cd "$0" && exec node "$@"', cwd, CLI, ...args], { env }),
    spawn: (...args: string[]) => spawn('node', [CLI, ...args], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] }),
  };
}

/** Wait until a child's stderr matches; returns the match. */
async function stderrMatch(child: ChildProcess, re: RegExp, ms = 20_000): Promise<RegExpExecArray> {
  let text = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${re} on stderr within ${ms} ms; got: ${text}`)), ms);
    const on = (d: Buffer) => {
      text += d;
      const m = re.exec(text);
      if (m) {
        clearTimeout(timer);
        child.stderr!.off('data', on);
        resolve(m);
      }
    };
    child.stderr!.on('data', on);
  });
}

const exited = (child: ChildProcess): Promise<number> => new Promise((r) => (child.exitCode !== null ? r(child.exitCode) : child.once('exit', (c) => r(c ?? 1))));

/** `sluice login --device`, approved in the provider's pages by `who`. */
async function deviceLoginCli(m: ReturnType<typeof machine>, issuer: string, who: string) {
  const child = m.spawn('login', '--issuer', issuer, '--client-id', 'sluice-cli', '--scope', SCOPES, '--device');
  const url = (await stderrMatch(child, /To sign in, open (\S+)/))[1]!;
  const page = await new FormBrowser().signIn(url, who);
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const code = await exited(child);
  return { code, stderr, page };
}

describe('sluice login against a real OpenID provider (oidc-provider)', () => {
  it('device flow: the person approves the code in a browser; tokens are cached 0600 in a 0700 dir; whoami', async () => {
    const m = machine();
    const r = await deviceLoginCli(m, idp.issuer, 'alice');
    expect(r.page.html).toMatch(/Sign-in Success|success/i);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`logged in to ${idp.issuer} as alice`);
    const dir = path.join(m.xdg, 'sluice');
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
    const files = fs.readdirSync(path.join(dir, 'tokens'));
    expect(files).toHaveLength(1);
    expect(fs.statSync(path.join(dir, 'tokens', files[0]!)).mode & 0o777).toBe(0o600);
    const cached = m.cache.get(idp.issuer)!;
    expect(cached).toMatchObject({ obtained_by: 'device', client_id: 'sluice-cli' });
    expect(cached.refresh_token).toBeTruthy();
    expect(jose.decodeJwt(cached.access_token)).toMatchObject({ sub: 'alice', aud: 'sluice', groups: ['analysts'] });
    const who = await m.cli('whoami');
    expect(who.code).toBe(0);
    expect(who.stdout).toContain('alice');
    expect(who.stdout).toMatch(/groups\s+analysts/);
    expect(who.stdout).toContain(`issuer   ${idp.issuer}`);
  });

  it('authorization code + PKCE with a loopback redirect (the browser is driven through the login and consent pages)', async () => {
    const m = machine();
    const child = m.spawn('login', '--issuer', idp.issuer, '--client-id', 'sluice-cli', '--scope', SCOPES, '--browser', '--no-open');
    const url = new URL((await stderrMatch(child, /visit:\s+(\S+)/))[1]!);
    expect(url.searchParams.get('code_challenge_method')).toBe('S256');
    expect(url.searchParams.get('redirect_uri')).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/callback$/);
    const page = await new FormBrowser().signIn(url.href, 'dana');
    expect(page.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/callback\?code=/);
    expect(page.html).toContain('Signed in');
    expect(await exited(child)).toBe(0);
    const cached = m.cache.get(idp.issuer)!;
    expect(cached.obtained_by).toBe('pkce');
    expect(jose.decodeJwt(cached.access_token)).toMatchObject({ sub: 'dana', groups: ['dba'] });
    expect(cached.refresh_token).toBeTruthy();
  });

  it('PKCE refuses an answer that does not belong to this sign-in (state mismatch)', async () => {
    const meta = await discover(idp.issuer);
    const err = await pkceLogin({ issuer: idp.issuer, client_id: 'sluice-cli', scopes: SCOPES }, meta, (u) => {
      const cb = new URL(new URL(u).searchParams.get('redirect_uri')!);
      cb.search = '?code=stolen&state=forged';
      void fetch(cb);
    }).catch((e) => e);
    expect(err.message).toContain('state mismatch');
  });

  it('refreshes silently only when the token is about to expire; logout revokes the refresh token at the issuer', async () => {
    const m = machine();
    const say: string[] = [];
    const meta = await discover(shortIdp.issuer);
    const login = deviceLogin({ issuer: shortIdp.issuer, client_id: 'sluice-cli', scopes: SCOPES }, meta, (s) => say.push(s));
    for (let i = 0; i < 100 && !say.length; i++) await new Promise((r) => setTimeout(r, 20));
    await new FormBrowser().signIn(/open (\S+)/.exec(say[0]!)![1]!, 'alice');
    const first = await login;
    m.cache.put(first);
    // 4 s tokens are always within a minute of expiry: the next use refreshes, and the cache keeps the new pair.
    const second = await freshToken(m.cache, shortIdp.issuer);
    expect(second.obtained_by).toBe('refresh');
    expect(second.access_token).not.toBe(first.access_token);
    expect(m.cache.get(shortIdp.issuer)!.access_token).toBe(second.access_token);
    // A token with time left is used as is.
    expect((await freshToken(m.cache, shortIdp.issuer, { minValidityS: 1 })).access_token).toBe(second.access_token);
    const refresh = m.cache.get(shortIdp.issuer)!.refresh_token!;
    const out = await m.cli('logout');
    expect(out.stderr).toContain(`logged out of ${shortIdp.issuer}`);
    expect(m.cache.get(shortIdp.issuer)).toBeUndefined();
    const again = await fetch(meta.token_endpoint, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refresh, client_id: 'sluice-cli' }) });
    expect((await again.json()).error).toBe('invalid_grant');
    const who = await m.cli('whoami');
    expect(who.code).toBe(1);
    expect(who.stderr).toContain('not logged in: run sluice login');
  });
});

describe('sluice connect, psql and env', () => {
  let m: ReturnType<typeof machine>;
  beforeAll(async () => {
    m = machine();
    expect((await deviceLoginCli(m, idp.issuer, 'alice')).code).toBe(0);
  });

  it('PostgreSQL: a local listener any client uses without a password; the gateway sees Alice', async () => {
    const child = m.spawn('connect', db.name, '--port', '0', '--gateway', `127.0.0.1:${t.port}`);
    try {
      const port = Number((await stderrMatch(child, /on 127\.0\.0\.1:(\d+)/))[1]);
      const r = await run('psql', ['-X', '-At', `host=127.0.0.1 port=${port} dbname=anything user=whoever`, '-c', 'SELECT current_database(), sum(id) FROM t'], { env: { PGPASSWORD: '' } });
      expect(r.stderr).toBe('');
      expect(r.stdout.trim()).toBe(`${db.name}|6`);
      const c = new pg.Client({ host: '127.0.0.1', port, user: 'orm', database: 'ignored' });
      await c.connect();
      expect((await c.query('SELECT count(*)::int AS n FROM t')).rows[0].n).toBe(3);
      const denied = await c.query('INSERT INTO t VALUES (4)').catch((e) => e);
      expect(denied.code).toBe('42501');
      expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
      await c.end();
    } finally {
      child.kill('SIGINT');
      expect(await exited(child)).toBe(0);
    }
    const starts = await auditEvents(t, { subject: 'alice', type: 'session_start' });
    expect(starts.length).toBeGreaterThanOrEqual(2);
    expect(starts[0]).toMatchObject({ auth_method: 'oidc', groups: ['analysts'], database: db.name, tls: true });
  });

  it('connect refuses to start when you are not logged in, and says how to log in', async () => {
    const other = machine();
    const r = await other.cli('connect', db.name, '--port', '0', '--gateway', `127.0.0.1:${t.port}`);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('not logged in: run sluice login');
  });

  it('sluice psql launches psql with the token; sluice env prints export lines for scripts', async () => {
    const r = await m.cli('psql', db.name, '--gateway', `127.0.0.1:${t.port}`, '--', '-X', '-At', '-c', 'SELECT sum(id) FROM t');
    expect(r.stdout.trim()).toBe('6');
    const e = await m.cli('env', db.name, '--gateway', `127.0.0.1:${t.port}`);
    expect(e.code).toBe(0);
    expect(e.stdout).toMatch(/^export PGHOST='127\.0\.0\.1'$/m);
    expect(e.stdout).toMatch(/^export PGSSLMODE='require'$/m);
    const viaEnv = await run('sh', ['-c', `${e.stdout}\npsql -X -At -c 'SELECT count(*) FROM t'`], { env: { PGPASSWORD: '' } });
    expect(viaEnv.stdout.trim()).toBe('3');
    const my = await m.cli('env', myDb, '--engine', 'mysql', '--gateway', `127.0.0.1:${t.gw.mysqlPort}`);
    expect(my.stdout).toMatch(/^export MYSQL_PWD='ey[^']+'$/m);
  });

  it('MySQL: the local handshake needs no password; the gateway gets the token over TLS (mysql2 and the mariadb client)', async () => {
    const child = m.spawn('connect', myDb, '--engine', 'mysql', '--port', '0', '--gateway', `127.0.0.1:${t.gw.mysqlPort}`);
    try {
      const port = Number((await stderrMatch(child, /on 127\.0\.0\.1:(\d+)/))[1]);
      const c = await mysql.createConnection({ host: '127.0.0.1', port, user: 'app' });
      const [rows] = await c.query('SELECT DATABASE() AS d, SUM(id) AS s FROM t');
      expect(rows).toEqual([{ d: myDb, s: '3' }]);
      const [prep] = await c.execute('SELECT id FROM t WHERE id = ?', [2]);
      expect(prep).toEqual([{ id: 2 }]);
      const denied = await c.query('DELETE FROM t').catch((e) => e);
      expect(denied.errno).toBe(1142);
      await c.end();
      const cli = await run('mariadb', ['-h', '127.0.0.1', '-P', String(port), '-u', 'someone', '--skip-ssl', '--batch', '-N', '-e', 'SELECT COUNT(*) FROM t'], { env: { MYSQL_PWD: '' } });
      expect(cli.stderr).toBe('');
      expect(cli.stdout.trim()).toBe('2');
    } finally {
      child.kill('SIGINT');
      await exited(child);
    }
    const events = await auditEvents(t, { subject: 'alice', database: myDb, type: 'statement' });
    expect(events.map((e) => e.sql)).toContain('SELECT COUNT(*) FROM t');
  });

  it('the token expires mid-session: the gateway ends that session, and the helper refreshes for the next connection', async () => {
    const s = machine();
    expect((await deviceLoginCli(s, shortIdp.issuer, 'alice')).code).toBe(0);
    const child = s.spawn('connect', db.name, '--port', '0', '--gateway', `127.0.0.1:${short.port}`);
    try {
      const port = Number((await stderrMatch(child, /on 127\.0\.0\.1:(\d+)/))[1]);
      const a = new pg.Client({ host: '127.0.0.1', port, user: 'x', database: 'x' });
      const aErr = new Promise<Error>((r) => a.on('error', r));
      await a.connect();
      const usedA = s.cache.get(shortIdp.issuer)!.access_token;
      expect((await a.query('SELECT count(*)::int AS n FROM t')).rows[0].n).toBe(3);
      await new Promise((r) => setTimeout(r, 5000));
      const err = await Promise.race([aErr, a.query('SELECT 1').then(() => new Error('still open'), (e) => e)]);
      expect(err.message).toMatch(/identity token for this session has expired|Connection terminated/);
      const b = new pg.Client({ host: '127.0.0.1', port, user: 'x', database: 'x' });
      await b.connect();
      expect((await b.query('SELECT count(*)::int AS n FROM t')).rows[0].n).toBe(3);
      await b.end();
      const now = s.cache.get(shortIdp.issuer)!;
      expect(now.access_token).not.toBe(usedA);
      expect(now.obtained_by).toBe('refresh');
    } finally {
      child.kill('SIGINT');
      await exited(child);
    }
  }, 60_000);
});

describe('verify-full: --ca checks the gateway certificate on both legs', () => {
  let v: TestGateway;
  let good: string;
  let wrong: string;
  let m: ReturnType<typeof machine>;
  beforeAll(async () => {
    const dir = tmpDir('login-ca');
    const san = { name: 'subjectAltName' as const, altNames: [{ type: 7 as const, ip: '127.0.0.1' }] };
    const cert = await generate([{ name: 'commonName', value: 'sluice-test-gateway' }], { keySize: 2048, algorithm: 'sha256', extensions: [san] });
    const other = await generate([{ name: 'commonName', value: 'someone-else' }], { keySize: 2048, algorithm: 'sha256', extensions: [san] });
    fs.writeFileSync(path.join(dir, 'cert.pem'), cert.cert);
    fs.writeFileSync(path.join(dir, 'key.pem'), cert.private);
    good = path.join(dir, 'cert.pem');
    wrong = path.join(dir, 'other.pem');
    fs.writeFileSync(wrong, other.cert);
    v = await startTestGateway({ tls: `{ mode: require, cert_file: ${good}, key_file: ${path.join(dir, 'key.pem')} }`, config: `${oidc(idp.issuer)}${mysqlEngine()}\n` });
    m = machine();
    expect((await deviceLoginCli(m, idp.issuer, 'alice')).code).toBe(0);
  }, 120_000);
  afterAll(async () => {
    await v?.stop();
  });

  it('PostgreSQL: the right CA connects; a certificate from another CA is refused before the token is sent', async () => {
    for (const [ca, ok] of [[good, true], [wrong, false]] as const) {
      const child = m.spawn('connect', db.name, '--port', '0', '--gateway', `127.0.0.1:${v.port}`, '--ca', ca);
      try {
        const port = Number((await stderrMatch(child, /on 127\.0\.0\.1:(\d+)/))[1]);
        const r = await run('psql', ['-X', '-At', `host=127.0.0.1 port=${port} dbname=x user=x`, '-c', 'SELECT count(*) FROM t'], { env: { PGPASSWORD: '' } });
        if (ok) expect(r.stdout.trim()).toBe('3');
        else expect(r.stderr).toMatch(/TLS with the gateway at 127\.0\.0\.1:\d+ failed: .*(self-signed|unable to verify|certificate)/i);
      } finally {
        child.kill('SIGINT');
        await exited(child);
      }
    }
  });

  it('MySQL: the right CA connects; another CA stops connect at its first login', async () => {
    const child = m.spawn('connect', myDb, '--engine', 'mysql', '--port', '0', '--gateway', `127.0.0.1:${v.gw.mysqlPort}`, '--ca', good);
    try {
      const port = Number((await stderrMatch(child, /on 127\.0\.0\.1:(\d+)/))[1]);
      const c = await mysql.createConnection({ host: '127.0.0.1', port, user: 'app' });
      const [rows] = await c.query('SELECT COUNT(*) AS n FROM t');
      expect(rows).toEqual([{ n: 2 }]);
      await c.end();
    } finally {
      child.kill('SIGINT');
      await exited(child);
    }
    const refused = await m.cli('connect', myDb, '--engine', 'mysql', '--port', '0', '--gateway', `127.0.0.1:${v.gw.mysqlPort}`, '--ca', wrong);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/self-signed|unable to verify|certificate/i);
  });
});
