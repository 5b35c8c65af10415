import fs from 'node:fs';
import path from 'node:path';
import { userConfigDir, writePrivateFile } from '../identity/tokencache.js';
import { UsageError } from './usage.js';

export type ConfigSource = 'flag' | 'env' | 'cwd' | 'demo';

export interface FoundConfig {
  file: string;
  source: ConfigSource;
}

const demoRecordFile = (env: NodeJS.ProcessEnv) => path.join(userConfigDir(env), 'demo.json');

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/** The config of the demo running now, if one is (recorded by `sluice demo` while it runs). */
export function runningDemoConfig(env: NodeJS.ProcessEnv = process.env): string | undefined {
  try {
    const r = JSON.parse(fs.readFileSync(demoRecordFile(env), 'utf8')) as { pid?: number; config?: string };
    if (typeof r.pid === 'number' && typeof r.config === 'string' && alive(r.pid) && fs.existsSync(r.config)) return r.config;
  } catch {
    /* no demo running */
  }
  return undefined;
}

/** Record (or, with `undefined`, forget) the running demo's config so CLI commands find it. */
export function recordDemo(config: string | undefined, env: NodeJS.ProcessEnv = process.env): void {
  const f = demoRecordFile(env);
  if (config === undefined) {
    try {
      const r = JSON.parse(fs.readFileSync(f, 'utf8')) as { pid?: number };
      if (r.pid === process.pid) fs.rmSync(f, { force: true });
    } catch {
      /* nothing recorded */
    }
    return;
  }
  writePrivateFile(f, JSON.stringify({ pid: process.pid, config: path.resolve(config) }) + '\n');
}

export const NO_CONFIG_HELP = 'no Sluice config found: pass -c FILE, set SLUICE_CONFIG=FILE, run in a directory with a sluice.yaml, or start `sluice demo` (its config is found while it runs)';

/**
 * The config a command uses, in the order users expect: `-c FILE`, `$SLUICE_CONFIG`, `./sluice.yaml`, then the
 * running demo's. Undefined when there is none (the caller decides whether that is an error).
 */
export function discoverConfig(flag: string | undefined, o: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): FoundConfig | undefined {
  const env = o.env ?? process.env;
  const cwd = o.cwd ?? process.cwd();
  if (flag !== undefined) return { file: path.resolve(cwd, flag), source: 'flag' };
  if (env.SLUICE_CONFIG) return { file: path.resolve(cwd, env.SLUICE_CONFIG), source: 'env' };
  const local = path.join(cwd, 'sluice.yaml');
  if (fs.existsSync(local)) return { file: local, source: 'cwd' };
  const demo = runningDemoConfig(env);
  if (demo) return { file: demo, source: 'demo' };
  return undefined;
}

const SOURCE_TEXT: Record<ConfigSource, string> = { flag: '-c', env: '$SLUICE_CONFIG', cwd: './sluice.yaml', demo: 'the running demo' };

/**
 * The config file a command must have: found as `discoverConfig` does, named on stderr unless it was given with -c,
 * and a clear error saying how to point at one when there is none (or the named file does not exist).
 */
export function requireConfig(flag: string | undefined, o: { env?: NodeJS.ProcessEnv; cwd?: string; say?: (s: string) => void } = {}): string {
  const found = discoverConfig(flag, o);
  if (!found) throw new UsageError(NO_CONFIG_HELP);
  if (!fs.existsSync(found.file)) {
    throw new UsageError(`config ${found.file} (from ${SOURCE_TEXT[found.source]}) does not exist; ${found.source === 'flag' ? 'check the path' : 'pass -c FILE to use another'}`);
  }
  if (found.source !== 'flag') (o.say ?? ((s) => process.stderr.write(s + '\n')))(`sluice: using config ${path.relative(o.cwd ?? process.cwd(), found.file) || found.file} (from ${SOURCE_TEXT[found.source]})`);
  return found.file;
}
