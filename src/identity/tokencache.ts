import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';

/**
 * The user's Sluice directory: $XDG_CONFIG_HOME/sluice, else ~/.config/sluice. Created 0700 (and tightened to 0700
 * when it exists with wider permissions), since it holds tokens.
 */
export function userConfigDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME && path.isAbsolute(env.XDG_CONFIG_HOME) ? env.XDG_CONFIG_HOME : path.join(env.HOME ?? os.homedir(), '.config');
  return path.join(base, 'sluice');
}

function ensurePrivateDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = fs.statSync(dir);
  if ((st.mode & 0o077) !== 0) fs.chmodSync(dir, 0o700);
}

/** Write a file readable by its owner only, atomically (a reader never sees half a token). */
export function writePrivateFile(file: string, text: string): void {
  ensurePrivateDir(path.dirname(file));
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`;
  fs.writeFileSync(tmp, text, { mode: 0o600 });
  fs.chmodSync(tmp, 0o600);
  fs.renameSync(tmp, file);
}

/** What `sluice login` keeps per issuer. */
export interface CachedTokens {
  issuer: string;
  client_id: string;
  /** Where refreshes go (from the issuer's discovery document at login). */
  token_endpoint: string;
  /** The resource indicator (RFC 8707) asked for at login, if any; refreshes ask for it again. */
  resource?: string;
  scope?: string;
  access_token: string;
  /** Epoch seconds; from expires_in, else the access token's exp claim. */
  expires_at: number;
  refresh_token?: string;
  id_token?: string;
  /** How the tokens were obtained: device, pkce, or refresh. */
  obtained_by: 'device' | 'pkce' | 'refresh';
  updated_at: string;
}

/** Tokens cached per issuer in the user's config dir: tokens/<sha256(issuer)[:24]>.json, 0600, dir 0700. */
export class TokenCache {
  constructor(readonly dir: string = userConfigDir()) {}

  private fileFor(issuer: string): string {
    return path.join(this.dir, 'tokens', `${crypto.createHash('sha256').update(issuer).digest('hex').slice(0, 24)}.json`);
  }
  private get defaultFile(): string {
    return path.join(this.dir, 'default-issuer');
  }

  get(issuer: string): CachedTokens | undefined {
    const f = this.fileFor(issuer);
    let text: string;
    try {
      text = fs.readFileSync(f, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    const st = fs.statSync(f);
    if ((st.mode & 0o077) !== 0) throw new Error(`${f} is readable by others (mode ${(st.mode & 0o777).toString(8)}); remove it and run sluice login again`);
    try {
      const v = JSON.parse(text) as CachedTokens;
      return v.issuer === issuer ? v : undefined;
    } catch {
      throw new Error(`${f} is not valid JSON; remove it and run sluice login again`);
    }
  }

  put(t: CachedTokens, makeDefault = true): void {
    writePrivateFile(this.fileFor(t.issuer), JSON.stringify(t, null, 2) + '\n');
    if (makeDefault) writePrivateFile(this.defaultFile, t.issuer + '\n');
  }

  /** Forget an issuer's tokens; true when there were any. */
  remove(issuer: string): boolean {
    const f = this.fileFor(issuer);
    const had = fs.existsSync(f);
    fs.rmSync(f, { force: true });
    if (this.defaultIssuer() === issuer) fs.rmSync(this.defaultFile, { force: true });
    return had;
  }

  /** The issuer of the last login. */
  defaultIssuer(): string | undefined {
    try {
      return fs.readFileSync(this.defaultFile, 'utf8').trim() || undefined;
    } catch {
      return undefined;
    }
  }

  /** Every issuer with cached tokens. */
  issuers(): string[] {
    const d = path.join(this.dir, 'tokens');
    if (!fs.existsSync(d)) return [];
    const out: string[] = [];
    for (const f of fs.readdirSync(d).filter((f) => f.endsWith('.json'))) {
      try {
        out.push((JSON.parse(fs.readFileSync(path.join(d, f), 'utf8')) as CachedTokens).issuer);
      } catch {
        /* a damaged file is reported when its issuer is used */
      }
    }
    return out;
  }
}
