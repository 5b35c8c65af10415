import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';

/** `audit.checkpoints` in the config: the Ed25519 key that signs chain heads, and how often. */
export interface CheckpointConfig {
  /** PEM file holding an Ed25519 private key (PKCS#8), relative to the config file. */
  key_file?: string;
  /** Environment variable holding that PEM text. */
  key_env?: string;
  /** The PEM text of key_env, read by loadConfig. */
  key_pem?: string;
  interval_s: number;
}

/** A signed statement "chain C had event N with hash H when this gateway signed it at T". */
export interface Checkpoint {
  chain_id: string;
  seq: number;
  hash: string;
  signed_at: string;
  key_id: string;
  /** SPKI PEM of the verifying key (packs carry it; `evidence verify --key` pins the expected one). */
  public_key: string;
  /** Ed25519 signature of checkpointMessage(), base64. */
  signature: string;
}

export interface SigningKey {
  privateKey: crypto.KeyObject;
  publicKeyPem: string;
  keyId: string;
}

/** Key id: the first 16 hex digits of sha256 over the public key's DER (SPKI). */
export function keyIdOf(publicKey: crypto.KeyObject): string {
  return crypto.createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16);
}

export function signingKeyFromPem(pem: string, where: string): SigningKey {
  let privateKey: crypto.KeyObject;
  try {
    privateKey = crypto.createPrivateKey(pem);
  } catch (e) {
    throw new Error(`${where}: not a PEM private key (${(e as Error).message})`);
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error(`${where}: the checkpoint key must be Ed25519, not ${privateKey.asymmetricKeyType}`);
  const publicKey = crypto.createPublicKey(privateKey);
  return { privateKey, publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(), keyId: keyIdOf(publicKey) };
}

/** The key named by the config (key_file resolved against the config's directory, or key_env). */
export function loadSigningKey(cfg: CheckpointConfig, dir: string): SigningKey {
  if (cfg.key_file) {
    const file = path.resolve(dir, cfg.key_file);
    return signingKeyFromPem(fs.readFileSync(file, 'utf8'), `audit.checkpoints.key_file ${file}`);
  }
  if (cfg.key_env) {
    const v = cfg.key_pem;
    if (!v) throw new Error(`audit.checkpoints.key_env: environment variable ${cfg.key_env} is not set`);
    return signingKeyFromPem(v, `audit.checkpoints.key_env ${cfg.key_env}`);
  }
  throw new Error('audit.checkpoints needs key_file or key_env');
}

/** A new Ed25519 key pair as PEM (`sluice evidence keygen`). */
export function generateKeyPem(): { privatePem: string; publicPem: string; keyId: string } {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ed25519');
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    keyId: keyIdOf(publicKey),
  };
}

/** Exactly what is signed: a versioned, line-separated text (no JSON canonicalisation to get wrong). */
export const checkpointMessage = (c: Pick<Checkpoint, 'chain_id' | 'seq' | 'hash' | 'signed_at' | 'key_id'>): Buffer =>
  Buffer.from(`sluice-audit-checkpoint/1\n${c.chain_id}\n${c.seq}\n${c.hash}\n${c.signed_at}\n${c.key_id}\n`, 'utf8');

export function signCheckpoint(key: SigningKey, head: { chain_id: string; seq: number; hash: string }, at = new Date()): Checkpoint {
  const body = { chain_id: head.chain_id, seq: head.seq, hash: head.hash, signed_at: at.toISOString(), key_id: key.keyId };
  const signature = crypto.sign(null, checkpointMessage(body), key.privateKey).toString('base64');
  return { ...body, public_key: key.publicKeyPem, signature };
}

/** Why a checkpoint's signature does not hold, or undefined when it does (with `publicKeyPem` when pinned). */
export function checkpointProblem(c: Checkpoint, publicKeyPem = c.public_key): string | undefined {
  let key: crypto.KeyObject;
  try {
    key = crypto.createPublicKey(publicKeyPem);
  } catch {
    return 'its public key is not a valid PEM key';
  }
  if (key.asymmetricKeyType !== 'ed25519') return 'its public key is not an Ed25519 key';
  if (keyIdOf(key) !== c.key_id) return `it names key ${c.key_id}, but the key given has id ${keyIdOf(key)}`;
  const ok = crypto.verify(null, checkpointMessage(c), key, Buffer.from(c.signature, 'base64'));
  return ok ? undefined : 'the signature does not match (the checkpoint was altered or signed by another key)';
}

export async function saveCheckpoint(db: Kysely<Database>, c: Checkpoint): Promise<void> {
  await db
    .insertInto('audit_checkpoints')
    .values({ ...c, signed_at: new Date(c.signed_at) })
    .onConflict((oc) => oc.columns(['chain_id', 'seq']).doNothing())
    .execute();
}

type Row = Database['audit_checkpoints'] extends infer T ? { [K in keyof T]: unknown } : never;
const fromRow = (r: Row): Checkpoint => ({
  chain_id: String(r.chain_id),
  seq: Number(r.seq),
  hash: String(r.hash),
  signed_at: new Date(r.signed_at as Date).toISOString(),
  key_id: String(r.key_id),
  public_key: String(r.public_key),
  signature: String(r.signature),
});

/** Checkpoints of the given chains, by chain and seq. */
export async function checkpointsOf(db: Kysely<Database>, chains: string[]): Promise<Checkpoint[]> {
  if (!chains.length) return [];
  const rows = await db.selectFrom('audit_checkpoints').selectAll().where('chain_id', 'in', chains).orderBy('chain_id').orderBy('seq').execute();
  return rows.map(fromRow);
}

/** Chains with a checkpoint signed in [from, to]. */
export async function chainsSignedBetween(db: Kysely<Database>, from: Date, to: Date): Promise<string[]> {
  const rows = await db.selectFrom('audit_checkpoints').select('chain_id').distinct().where('signed_at', '>=', from).where('signed_at', '<=', to).execute();
  return rows.map((r) => r.chain_id);
}

/** The newest checkpoint of each chain (the console's integrity status). */
export async function latestCheckpoints(db: Kysely<Database>, limit = 50): Promise<Checkpoint[]> {
  const rows = await db.selectFrom('audit_checkpoints').selectAll().orderBy('signed_at', 'desc').limit(limit * 20).execute();
  const seen = new Set<string>();
  const out: Checkpoint[] = [];
  for (const r of rows) {
    if (seen.has(r.chain_id)) continue;
    seen.add(r.chain_id);
    out.push(fromRow(r));
    if (out.length >= limit) break;
  }
  return out;
}

/** The checkpointer of each audit log in this process, so an export can have the head signed first. */
const signers = new WeakMap<object, Checkpointer>();

/** Sign the chain head of `audit` now, if a checkpointer signs it (exports call this so the period is covered). */
export async function signNow(audit: object): Promise<void> {
  await signers.get(audit)?.tick();
}

/**
 * Signs this gateway's own chain head every interval when it moved (and once more at shutdown). It signs the head
 * the gateway computed itself, in memory, not what the store says: rewriting the store cannot change what was signed.
 */
export class Checkpointer {
  private timer?: NodeJS.Timeout;
  private lastSeq = 0;
  private running?: Promise<void>;
  lastError?: Error;
  signed = 0;

  constructor(
    private readonly key: SigningKey,
    private readonly head: () => { chain_id: string; seq: number; hash: string },
    private readonly save: (c: Checkpoint) => Promise<void>,
    private readonly intervalMs: number,
  ) {}

  /** Start signing; `owner` (the audit log) lets signNow() find this checkpointer. */
  start(owner?: object): void {
    if (owner) signers.set(owner, this);
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    this.timer.unref();
  }

  /** Sign the head now if it moved since the last checkpoint. */
  tick(): Promise<void> {
    if (this.running) return this.running;
    const h = this.head();
    if (h.seq === 0 || h.seq === this.lastSeq) return Promise.resolve();
    const c = signCheckpoint(this.key, h);
    this.running = this.save(c).then(
      () => {
        this.lastSeq = c.seq;
        this.signed++;
        this.lastError = undefined;
      },
      (e) => void (this.lastError = e as Error),
    ).finally(() => (this.running = undefined));
    return this.running;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    if (this.running) await this.running;
    await this.tick();
  }
}

/** The JSON schema of `audit.checkpoints` (config.ts). */
export const CHECKPOINT_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    key_file: { type: 'string', minLength: 1 },
    key_env: { type: 'string', minLength: 1 },
    interval_s: { type: 'integer', minimum: 1, maximum: 86400, default: 60 },
  },
} as const;
