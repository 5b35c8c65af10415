import crypto from 'node:crypto';
import os from 'node:os';
import type { Kysely } from 'kysely';
import { parse, stringify } from 'yaml';
import type { Database } from '../store/schema.js';
import type { Policy } from '../policy/policy.js';

export interface PolicyVersion {
  id: string;
  hash: string;
  loaded_at: string;
  loaded_by: string;
  /** The policy as the gateway held it (YAML, without the file name). */
  text: string;
}

/** The policy in force as text: what was evaluated, whatever file it came from. */
export function policyText(p: Policy): string {
  const { file: _file, ...rest } = p;
  // Where each rule sits in its file is not part of what it says.
  const rules = rest.rules.map(({ source: _source, ...r }) => r);
  return stringify({ ...rest, rules }, { lineWidth: 0 });
}

/** Column names (last segment) a policy masks by rule or label: what counts as sensitive in first-access anomalies. */
export function maskedColumns(text: string): string[] {
  const p = parse(text) as { masking?: { columns?: { column?: string; label?: string }[]; labels?: Record<string, string[]> } };
  const m = p?.masking;
  const named = [...(m?.columns ?? []).map((c) => c.column), ...Object.values(m?.labels ?? {}).flat()].filter((c): c is string => typeof c === 'string');
  return named.map((c) => c.slice(c.lastIndexOf('.') + 1).toLowerCase());
}

export const policyHash = (text: string): string => crypto.createHash('sha256').update(text).digest('hex');

/** Every time a different policy is put in force, one row: its hash, text, who (which process, as which user) and when. */
export async function recordPolicyVersion(db: Kysely<Database>, p: Policy, by: string, at = new Date()): Promise<PolicyVersion | undefined> {
  const text = policyText(p);
  const hash = policyHash(text);
  const last = await db.selectFrom('policy_versions').select('hash').orderBy('loaded_at', 'desc').limit(1).executeTakeFirst();
  if (last?.hash === hash) return undefined;
  const v = { id: `pv_${at.getTime().toString(36)}_${hash.slice(0, 12)}`, hash, loaded_at: at, loaded_by: by, text };
  await db.insertInto('policy_versions').values(v).onConflict((oc) => oc.column('id').doNothing()).execute();
  return { ...v, loaded_at: at.toISOString() };
}

/** The versions in force during [from, to]: the one in force at `from`, and every one loaded before `to`. */
export async function policyVersionsDuring(db: Kysely<Database>, from: Date, to: Date): Promise<PolicyVersion[]> {
  const before = await db.selectFrom('policy_versions').selectAll().where('loaded_at', '<', from).orderBy('loaded_at', 'desc').limit(1).execute();
  const during = await db.selectFrom('policy_versions').selectAll().where('loaded_at', '>=', from).where('loaded_at', '<=', to).orderBy('loaded_at').execute();
  return [...before, ...during].map((r) => ({ ...r, loaded_at: new Date(r.loaded_at).toISOString() }));
}

/** Who loads a policy: this gateway process and the OS user it runs as. */
export const loader = (): string => `gateway ${os.hostname()}:${process.pid} (user ${os.userInfo().username})`;

/**
 * Watches the Governor's policy (loaded at start, reloaded on SIGHUP) and records each new one. Polling the
 * reference is enough: a reload swaps the object.
 */
export class PolicyRecorder {
  private seen?: Policy;
  private timer?: NodeJS.Timeout;
  lastError?: Error;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly current: () => Policy,
  ) {}

  async check(): Promise<void> {
    const p = this.current();
    if (p === this.seen) return;
    try {
      await recordPolicyVersion(this.db, p, loader());
      this.seen = p;
      this.lastError = undefined;
    } catch (e) {
      this.lastError = e as Error;
    }
  }

  start(intervalMs = 1000): void {
    this.timer = setInterval(() => void this.check(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** A line diff (longest common subsequence): lines prefixed "+ ", "- " or "  ". */
export function lineDiff(a: string, b: string): string[] {
  const x = a.split('\n');
  const y = b.split('\n');
  const n = x.length;
  const m = y.length;
  if (n * m > 4_000_000) return [...x.map((l) => `- ${l}`), ...y.map((l) => `+ ${l}`)];
  const L: Uint32Array[] = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) L[i]![j] = x[i] === y[j] ? L[i + 1]![j + 1]! + 1 : Math.max(L[i + 1]![j]!, L[i]![j + 1]!);
  const out: string[] = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) (out.push(`  ${x[i]}`), i++, j++);
    else if (L[i + 1]![j]! >= L[i]![j + 1]!) out.push(`- ${x[i++]}`);
    else out.push(`+ ${y[j++]}`);
  }
  while (i < n) out.push(`- ${x[i++]}`);
  while (j < m) out.push(`+ ${y[j++]}`);
  return out;
}
