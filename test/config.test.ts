import { describe, it, expect, afterEach } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../src/config.js';
import { tmpDir } from './support/env.js';

/** Every secret named by an `*_env` key is read by loadConfig, once; a named variable that is not set is an error. */

const write = (body: string) => {
  const dir = tmpDir('cfg');
  fs.writeFileSync(path.join(dir, 'policy.yaml'), 'version: 1\nrules: []\n');
  const file = path.join(dir, 'sluice.yaml');
  fs.writeFileSync(file, `policy: policy.yaml\nstore: { kind: embedded, path: store }\n${body}`);
  return file;
};
const set: string[] = [];
const env = (k: string, v: string) => {
  process.env[k] = v;
  set.push(k);
};
afterEach(() => {
  for (const k of set.splice(0)) delete process.env[k];
});

describe('secrets from the environment', () => {
  it('resolves upstream, MySQL, console client and cookie secrets in loadConfig', () => {
    env('T_UP_PW', 'up-secret');
    env('T_MY_PW', 'my-secret');
    env('T_WEB_CS', 'client-secret');
    env('T_COOKIE', 'cookie-secret');
    const cfg = loadConfig(
      write(`upstream: { host: 127.0.0.1, user: postgres, password_env: T_UP_PW }
mysql: { listen: { port: 0 }, upstream: { host: 127.0.0.1, user: root, password_env: T_MY_PW } }
api: { listen: { port: 0 }, web: { session_secret_env: T_COOKIE, oidc: { issuer: 'http://127.0.0.1:1', client_id: sluice, client_secret_env: T_WEB_CS } } }
`),
    );
    expect(cfg.upstream.password).toBe('up-secret');
    expect(cfg.mysql!.upstream.password).toBe('my-secret');
    expect(cfg.api!.web!.oidc!.client_secret).toBe('client-secret');
    expect(cfg.api!.web!.session_secret).toBe('cookie-secret');
  });

  it('the cookie secret defaults to SLUICE_SESSION_SECRET and may be absent; named variables must be set', () => {
    env('SLUICE_SESSION_SECRET', 'default-cookie');
    expect(loadConfig(write('upstream: { host: 127.0.0.1, user: postgres }\napi: { listen: { port: 0 } }\n')).api!.web!.session_secret).toBe('default-cookie');
    delete process.env.SLUICE_SESSION_SECRET;
    expect(loadConfig(write('upstream: { host: 127.0.0.1, user: postgres }\napi: { listen: { port: 0 } }\n')).api!.web!.session_secret).toBeUndefined();
    expect(() => loadConfig(write('upstream: { host: 127.0.0.1, user: postgres, password_env: T_NOT_SET_1 }\n'))).toThrow(/T_NOT_SET_1 \(upstream\.password_env\) is not set/);
    expect(() => loadConfig(write('upstream: { host: 127.0.0.1, user: postgres }\napi: { listen: { port: 0 }, web: { session_secret_env: T_NOT_SET_2 } }\n'))).toThrow(/T_NOT_SET_2 \(api\.web\.session_secret_env\) is not set/);
  });

  it('resolves the checkpoint signing key and webhook stream secrets too', () => {
    env('T_CP_KEY', '-----BEGIN PRIVATE KEY-----\nnot checked here\n-----END PRIVATE KEY-----\n');
    env('T_HOOK', 'hmac-secret');
    const cfg = loadConfig(
      write(`upstream: { host: 127.0.0.1, user: postgres }
audit: { checkpoints: { key_env: T_CP_KEY }, streams: [ { name: siem, kind: webhook, url: "https://127.0.0.1:9/x", secret_env: T_HOOK } ] }
`),
    );
    expect(cfg.audit.checkpoints!.key_pem).toContain('BEGIN PRIVATE KEY');
    expect(cfg.audit.streams![0]!.secret).toBe('hmac-secret');
    expect(() => loadConfig(write('upstream: { host: 127.0.0.1, user: postgres }\naudit: { streams: [ { name: s, kind: webhook, url: "https://127.0.0.1:9/x", secret_env: T_NOT_SET_3 } ] }\n'))).toThrow(/T_NOT_SET_3 \(audit\.streams\.0\.secret_env\) is not set/);
  });

  it('with secrets: false nothing is read (the CLI reading a config it does not start)', () => {
    env('T_UP_PW2', 'x');
    const cfg = loadConfig(write('upstream: { host: 127.0.0.1, user: postgres, password_env: T_UP_PW2 }\n'), { secrets: false });
    expect(cfg.upstream.password).toBeUndefined();
  });
});
