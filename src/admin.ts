import net from 'node:net';
import fs from 'node:fs';
import type { Kysely } from 'kysely';
import type { Database } from './store/schema.js';
import type { AuditRows } from './audit/rows.js';
import { queryAudit, verifyAudit, sensitiveReport, storeSink, type AuditFilter, type AuditLog, type ChainHead, type StoredEvent, type ChainReport, type SensitiveReport } from './audit/audit.js';
import { AuthError, type Identity } from './identity/identity.js';
import { createKey, listKeys, revokeKey, verifyKey, type KeyInfo, type NewKey } from './identity/keys.js';
import { kyselyLiveSessions, type SessionView } from './store/livesessions.js';
import { kyselyApprovalStore, type Approval, type ApprovalFilter, type ApprovalStore } from './approvals/store.js';
import { collectEvidence, type EvidenceInputs } from './compliance/collect.js';
import { saveCheckpoint, signNow, type Checkpoint } from './compliance/checkpoints.js';

/** Operations the CLI performs; served in-process, or over the admin socket by a running gateway. */
export interface AdminOps {
  auditList(f: AuditFilter): Promise<StoredEvent[]>;
  auditVerify(): Promise<ChainReport[]>;
  sensitiveReport(f: { subject: string; since?: string; until?: string }): Promise<SensitiveReport>;
  keysCreate(k: NewKey): Promise<{ key: string; info: KeyInfo }>;
  keysList(): Promise<KeyInfo[]>;
  keysRevoke(id: string): Promise<boolean>;
  /** For gateway workers that do not own the embedded store: append chained rows, verify a presented key. */
  /** A worker's spooled audit rows and its chain's head, for the store this process owns. */
  auditWrite(rows: AuditRows, head: ChainHead): Promise<void>;
  verifyKey(key: string): Promise<Identity>;
  /** The approval store, for workers (see approvals/store.ts). */
  approvalsInsert(a: Approval): Promise<void>;
  approvalsUpdate(a: Approval): Promise<boolean>;
  approvalsGet(id: string): Promise<Approval | undefined>;
  approvalsList(f: ApprovalFilter): Promise<Approval[]>;
  /** Live sessions (see store/livesessions.ts), for workers. */
  sessionsPublish(gateway: string, sessions: SessionView[]): Promise<{ id: string; by: string }[]>;
  sessionsList(freshS: number): Promise<SessionView[]>;
  sessionsTerminate(id: string, by: string): Promise<boolean>;
  /** What an evidence pack for [from, to] (ISO times) is computed from (see compliance/collect.ts). */
  evidenceInputs(from: string, to: string): Promise<EvidenceInputs>;
  /** A worker's signed chain checkpoint, for the store this process owns. */
  checkpointSave(c: Checkpoint): Promise<void>;
}

/** An ApprovalStore reached through AdminOps (a cluster worker whose primary owns the embedded store). */
export function opsApprovalStore(ops: AdminOps): ApprovalStore {
  return {
    insert: (a) => ops.approvalsInsert(a),
    update: (a) => ops.approvalsUpdate(a),
    get: async (id) => (await ops.approvalsGet(id)) ?? undefined,
    list: (f) => ops.approvalsList(f),
  };
}

export function localOps(db: Kysely<Database>, audit: AuditLog): AdminOps {
  const sink = storeSink(db);
  const approvals = kyselyApprovalStore(db);
  const live = kyselyLiveSessions(db);
  return {
    sessionsPublish: (g, v) => live.publish(g, v),
    sessionsList: (f) => live.list(f),
    sessionsTerminate: (id, by) => live.requestTerminate(id, by),
    approvalsInsert: (a) => approvals.insert(a),
    approvalsUpdate: (a) => approvals.update(a),
    // JSON has no undefined: a missing request travels as null.
    approvalsGet: async (id) => (await approvals.get(id)) ?? (null as never),
    approvalsList: (f) => approvals.list(f),
    auditWrite: (rows, head) => sink.write(rows, head),
    verifyKey: (key) => verifyKey(db, key),
    async auditList(f) {
      await audit.flush();
      return queryAudit(db, { ...f, since: f.since ? new Date(f.since) : undefined, until: f.until ? new Date(f.until) : undefined });
    },
    async auditVerify() {
      await audit.flush();
      return verifyAudit(db);
    },
    async sensitiveReport(f) {
      await audit.flush();
      return sensitiveReport(db, { subject: f.subject, since: f.since ? new Date(f.since) : undefined, until: f.until ? new Date(f.until) : undefined });
    },
    async keysCreate(k) {
      const r = await createKey(db, { ...k, expiresAt: k.expiresAt ? new Date(k.expiresAt) : undefined });
      audit.append({ type: 'key_created', subject: k.createdBy, details: { key_id: r.info.id, name: r.info.name, kind: r.info.kind, key_subject: r.info.subject, groups: r.info.groups, acting_for: r.info.acting_for, expires_at: r.info.expires_at } });
      await audit.flush();
      return r;
    },
    keysList: () => listKeys(db),
    async evidenceInputs(from, to) {
      await signNow(audit);
      await audit.flush();
      return collectEvidence(db, new Date(from), new Date(to), 'sluice evidence export');
    },
    checkpointSave: (c) => saveCheckpoint(db, c),
    async keysRevoke(id) {
      const ok = await revokeKey(db, id);
      if (ok) {
        audit.append({ type: 'key_revoked', details: { key_id: id } });
        await audit.flush();
      }
      return ok;
    },
  };
}

/**
 * Serve AdminOps on a unix socket (mode 0600: whoever may read the store files may use it). One JSON request per
 * line, one JSON answer per line.
 */
export async function serveAdmin(socketPath: string, ops: AdminOps): Promise<net.Server> {
  try {
    fs.unlinkSync(socketPath);
  } catch {
    /* not there */
  }
  const server = net.createServer((s) => {
    let buf = '';
    s.on('error', () => s.destroy());
    s.on('data', (d) => {
      buf += d.toString('utf8');
      // Local, 0600, trusted peers; the bound only stops a runaway line (audit batches are sent in chunks).
      if (buf.length > 256 << 20) return s.destroy();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        void (async () => {
          let id: unknown;
          try {
            const req = JSON.parse(line) as { id: unknown; method: keyof AdminOps; params: unknown[] };
            id = req.id;
            if (typeof ops[req.method] !== 'function') throw new Error(`unknown admin method ${String(req.method)}`);
            const result = await (ops[req.method] as (...a: unknown[]) => Promise<unknown>)(...(req.params ?? []));
            s.write(JSON.stringify({ id, result }) + '\n');
          } catch (e) {
            s.write(JSON.stringify({ id, error: (e as Error).message, auth: e instanceof AuthError }) + '\n');
          }
        })();
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  fs.chmodSync(socketPath, 0o600);
  return server;
}

export function remoteOps(socketPath: string): AdminOps & { close(): void } {
  let sock: net.Socket | undefined;
  let buf = '';
  let next = 1;
  const waiting = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  const conn = () => {
    if (sock) return sock;
    sock = net.connect(socketPath);
    sock.on('data', (d) => {
      buf += d.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        const w = waiting.get(msg.id);
        waiting.delete(msg.id);
        if (msg.error) w?.reject(msg.auth ? new AuthError(msg.error) : new Error(msg.error));
        else w?.resolve(msg.result);
      }
    });
    sock.on('error', (e) => {
      for (const w of waiting.values()) w.reject(new Error(`cannot reach the running gateway at ${socketPath}: ${e.message}`));
      waiting.clear();
      sock = undefined;
      buf = '';
    });
    sock.on('close', () => {
      sock = undefined;
      buf = '';
    });
    return sock;
  };
  const call = (method: keyof AdminOps, ...params: unknown[]) =>
    new Promise<any>((resolve, reject) => {
      const id = next++;
      waiting.set(id, { resolve, reject });
      conn().write(JSON.stringify({ id, method, params }) + '\n');
    });
  return {
    auditList: (f) => call('auditList', f),
    auditVerify: () => call('auditVerify'),
    sensitiveReport: (f) => call('sensitiveReport', f),
    keysCreate: (k) => call('keysCreate', k),
    keysList: () => call('keysList'),
    keysRevoke: (id) => call('keysRevoke', id),
    auditWrite: (rows, head) => call('auditWrite', rows, head),
    verifyKey: (key) => call('verifyKey', key),
    approvalsInsert: (a) => call('approvalsInsert', a),
    approvalsUpdate: (a) => call('approvalsUpdate', a),
    approvalsGet: (id) => call('approvalsGet', id),
    approvalsList: (f) => call('approvalsList', f),
    sessionsPublish: (g, v) => call('sessionsPublish', g, v),
    sessionsList: (f) => call('sessionsList', f),
    sessionsTerminate: (id, by) => call('sessionsTerminate', id, by),
    evidenceInputs: (from, to) => call('evidenceInputs', from, to),
    checkpointSave: (c) => call('checkpointSave', c),
    close: () => sock?.end(),
  };
}

/** True when something answers on the socket. */
export function socketAlive(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    if (!fs.existsSync(socketPath)) return resolve(false);
    const s = net.connect(socketPath);
    s.once('connect', () => {
      s.end();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
