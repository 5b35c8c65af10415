import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { loadConfig, adminSocketPath, spoolOptions } from '../config.js';
import { localOps, remoteOps, socketAlive } from '../admin.js';
import { openStore } from '../store/db.js';
import { AuditLog, storeSink } from '../audit/audit.js';
import { buildPack, verifyPack, type PackVerdict } from '../compliance/pack.js';
import { generateKeyPem } from '../compliance/checkpoints.js';
import { periodBound } from '../api/compliance.js';
import type { EvidenceInputs } from '../compliance/collect.js';
import { log } from '../util/log.js';


/** The pack's inputs: through the running gateway (admin socket) when there is one, else from the store directly. */
async function inputsFor(configFile: string, from: Date, to: Date): Promise<EvidenceInputs> {
  const cfg = loadConfig(configFile, { secrets: false });
  const sock = adminSocketPath(cfg);
  if (sock && (await socketAlive(sock))) {
    const ops = remoteOps(sock);
    try {
      return await ops.evidenceInputs(from.toISOString(), to.toISOString());
    } finally {
      ops.close();
    }
  }
  const store = await openStore(cfg.store);
  const audit = new AuditLog(storeSink(store.db, store.pool), { spool: spoolOptions(cfg, false), onNotice: (m) => log.warn(`audit: ${m}`) });
  try {
    return await localOps(store.db, audit).evidenceInputs(from.toISOString(), to.toISOString());
  } finally {
    await audit.close();
    await store.close();
  }
}

export function formatVerdict(file: string, v: PackVerdict): string[] {
  const lines: string[] = [];
  if (v.period) lines.push(`${file}: period ${v.period.from} to ${v.period.to}`);
  for (const c of v.integrity?.chains ?? []) {
    lines.push(c.ok ? `ok      chain ${c.chain_id}: ${c.events_in_period} events in the period, ${c.checkpoints} signed checkpoints${c.signed_through ? ` (through event ${c.signed_through})` : ''}` : `BROKEN  chain ${c.chain_id}: ${c.problem}`);
  }
  for (const p of v.problems.filter((p) => !p.startsWith('chain '))) lines.push(`FAIL    ${p}`);
  for (const w of v.warnings) lines.push(`warning ${w}`);
  lines.push(v.ok ? `evidence verify: OK — ${v.summary?.events ?? 0} events, ${v.summary?.checkpoints ?? 0} checkpoints, every file matches` : `evidence verify: FAILED — ${v.problems.length} problem${v.problems.length === 1 ? '' : 's'}`);
  return lines;
}

/** A mistake in the command line: said on stderr, exit code 2 (like the rest of the CLI). */
class UsageError extends Error {}

/** `sluice evidence export|verify|keygen`; `configPath` finds the config file as the other commands do. */
export async function runEvidence(sub: string | undefined, args: string[], configPath: (v: string | undefined) => string): Promise<number> {
  try {
    return await evidenceCommand(sub, args, configPath);
  } catch (e) {
    if (!(e instanceof UsageError) && !String((e as { code?: string }).code ?? '').startsWith('ERR_PARSE_ARGS')) throw e;
    process.stderr.write(`sluice: ${(e as Error).message}\n`);
    return 2;
  }
}

async function evidenceCommand(sub: string | undefined, args: string[], configPath: (v: string | undefined) => string): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: { config: { type: 'string', short: 'c' }, from: { type: 'string' }, to: { type: 'string' }, output: { type: 'string', short: 'o' }, key: { type: 'string' }, json: { type: 'boolean' } }, allowPositionals: true, strict: true });
  const out = (s: string) => process.stdout.write(s + '\n');
  if (sub === 'export') {
    const from = periodBound(values.from, false);
    const to = periodBound(values.to, true);
    if (typeof from === 'string') throw new UsageError(`--${from}`);
    if (typeof to === 'string') throw new UsageError(`--${to}`);
    if (!values.output) throw new UsageError('evidence export needs -o FILE.zip');
    if (!(from < to)) throw new UsageError('--to must be after --from');
    const { zip, evidence } = buildPack(await inputsFor(configPath(values.config), from, to));
    fs.writeFileSync(values.output, zip);
    const s = evidence.summary;
    out(`wrote ${values.output}: ${s.events} events, ${s.identities} identities, ${s.denied} denied, ${s.anomalies} anomalies, ${s.chains_intact}/${s.chains} chains intact, ${s.checkpoints} signed checkpoints`);
    if (!evidence.integrity.ok) process.stderr.write(`warning: the audit chains of this period do not verify:\n${evidence.integrity.problems.map((p) => `  ${p}`).join('\n')}\n`);
    return evidence.integrity.ok ? 0 : 1;
  }
  if (sub === 'verify') {
    const file = positionals[0];
    if (!file) throw new UsageError('usage: sluice evidence verify FILE.zip [--key PUBLIC.pem]');
    const v = verifyPack(fs.readFileSync(file), values.key ? fs.readFileSync(values.key, 'utf8') : undefined);
    if (values.json) out(JSON.stringify(v));
    else for (const l of formatVerdict(file, v)) out(l);
    return v.ok ? 0 : 1;
  }
  if (sub === 'keygen') {
    if (!values.output) throw new UsageError('evidence keygen needs -o KEY.pem');
    if (fs.existsSync(values.output)) throw new UsageError(`${values.output} exists; not overwriting a key`);
    const k = generateKeyPem();
    fs.writeFileSync(values.output, k.privatePem, { mode: 0o600 });
    fs.writeFileSync(`${values.output.replace(/\.pem$/, '')}.pub.pem`, k.publicPem);
    out(`wrote ${values.output} (private, mode 0600) and ${values.output.replace(/\.pem$/, '')}.pub.pem; key id ${k.keyId}`);
    out(`config: audit: { checkpoints: { key_file: ${values.output}, interval_s: 60 } }`);
    return 0;
  }
  throw new UsageError('usage: sluice evidence export|verify|keygen');
}
