import crypto from 'node:crypto';
import os from 'node:os';
import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';
import type { AuditEvent, AuditLog } from '../audit/audit.js';
import type { Policy } from '../policy/policy.js';
import { kyselyStreamStore } from '../store/streams.js';
import { AuditStreamer, createSink, resolveStream, type SinkHealth, type StreamConfig } from '../audit/streams/index.js';
import { Checkpointer, latestCheckpoints, loadSigningKey, saveCheckpoint, type Checkpoint, type CheckpointConfig } from './checkpoints.js';
import { PolicyRecorder } from './policyversions.js';
import { collectEvidence, type EvidenceInputs } from './collect.js';

/** `audit.checkpoints` and `audit.streams` of the config. */
export interface ComplianceConfig {
  checkpoints?: CheckpointConfig;
  streams?: StreamConfig[];
}

export interface ComplianceStatus {
  checkpoints: { enabled: boolean; key_id?: string; public_key?: string; interval_s?: number; signed_here: number; last_error?: string; latest: Checkpoint[] };
  streams: SinkHealth[];
}

/** What the gateway runs for compliance: chain checkpoints, policy version records, audit streams. */
export class Compliance {
  constructor(
    readonly db: Kysely<Database>,
    private readonly audit: AuditLog,
    readonly record: (e: AuditEvent) => void,
    readonly checkpointer?: Checkpointer,
    readonly streamer?: AuditStreamer,
    private readonly policies?: PolicyRecorder,
    private readonly key?: { keyId: string; publicKeyPem: string; intervalS: number },
  ) {}

  /** The inputs of an evidence pack for [from, to], once every event appended so far is in the store. */
  async evidenceInputs(from: Date, to: Date): Promise<EvidenceInputs> {
    await this.policies?.check();
    await this.checkpointer?.tick();
    await this.audit.flush();
    return collectEvidence(this.db, from, to, `sluice gateway on ${os.hostname()}`);
  }

  async status(): Promise<ComplianceStatus> {
    return {
      checkpoints: {
        enabled: !!this.checkpointer,
        key_id: this.key?.keyId,
        public_key: this.key?.publicKeyPem,
        interval_s: this.key?.intervalS,
        signed_here: this.checkpointer?.signed ?? 0,
        ...(this.checkpointer?.lastError ? { last_error: this.checkpointer.lastError.message } : {}),
        latest: await latestCheckpoints(this.db, 20),
      },
      streams: this.streamer?.health() ?? [],
    };
  }

  metrics(): string {
    return this.streamer?.metrics() ?? '';
  }

  async close(): Promise<void> {
    this.policies?.stop();
    await this.policies?.check();
    await this.checkpointer?.close();
    await this.streamer?.close();
  }
}

/**
 * Sign this process's chain head as `audit.checkpoints` asks (undefined when not configured). Cluster workers that
 * reach the store through the primary pass a `save` that sends each checkpoint there.
 */
export function startCheckpointer(cfg: { audit: ComplianceConfig; dir: string }, audit: AuditLog, save: (c: Checkpoint) => Promise<void>): { checkpointer: Checkpointer; keyId: string; publicKeyPem: string; intervalS: number } | undefined {
  const cp = cfg.audit.checkpoints;
  if (!cp) return undefined;
  const k = loadSigningKey(cp, cfg.dir);
  const checkpointer = new Checkpointer(k, () => audit.head, save, cp.interval_s * 1000);
  checkpointer.start(audit);
  return { checkpointer, keyId: k.keyId, publicKeyPem: k.publicKeyPem, intervalS: cp.interval_s };
}

/**
 * Start what the config asks for, in the process that owns the store. Checkpoints sign this process's own chain;
 * streams deliver every chain in the store (one gateway per sink at a time).
 */
export async function startCompliance(cfg: { audit: ComplianceConfig; dir: string }, d: { db: Kysely<Database>; audit: AuditLog; policy: () => Policy; record: (e: AuditEvent) => void; onNotice?: (m: string) => void }): Promise<Compliance> {
  const policies = new PolicyRecorder(d.db, d.policy);
  await policies.check();
  policies.start();
  const signer = startCheckpointer(cfg, d.audit, (c) => saveCheckpoint(d.db, c));
  let streamer: AuditStreamer | undefined;
  const streams = (cfg.audit.streams ?? []).map((s) => resolveStream(s, cfg.dir));
  const names = streams.map((s) => s.name);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup) throw new Error(`audit.streams: two sinks are named ${dup}`);
  if (streams.length) {
    const owner = `${os.hostname()}:${process.pid}:${crypto.randomBytes(3).toString('hex')}`;
    streamer = new AuditStreamer(kyselyStreamStore(d.db), streams.map((s) => ({ cfg: s, sink: createSink(s) })), owner, d.onNotice);
    streamer.start();
  }
  return new Compliance(d.db, d.audit, d.record, signer?.checkpointer, streamer, policies, signer);
}
