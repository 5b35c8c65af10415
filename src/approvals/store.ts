import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';
import type { IdentityKind } from '../identity/identity.js';

export const GRANT_ROLES = ['read', 'write', 'ddl', 'admin'] as const;
export type GrantRole = (typeof GRANT_ROLES)[number];

export type ApprovalStatus = 'pending' | 'approved' | 'denied' | 'expired' | 'executed' | 'revoked';

export interface ApprovalVote {
  by: string;
  by_name?: string;
  /** The voter's principals along its delegation chain: a quorum counts distinct ones. */
  principals?: string[];
  action: 'approve' | 'deny';
  reason?: string;
  at: string;
}

/** What a reviewer sees of a statement's effect before deciding. */
export interface Preview {
  /** rows: the statement ran in a transaction that was rolled back; objects: DDL, not run. */
  kind: 'rows' | 'objects' | 'none';
  rows_affected?: number;
  /** Objects a DDL statement touches, with current row counts where they are tables. */
  objects?: { command: string; name: string; rows?: number }[];
  duration_ms?: number;
  note?: string;
  error?: string;
}

/** A held statement or a just-in-time grant request, as stored (timestamps are ISO strings). */
export interface Approval {
  id: string;
  kind: 'statement' | 'grant';
  status: ApprovalStatus;
  requester: string;
  requester_kind: IdentityKind;
  requester_name?: string;
  requester_groups: string[];
  /** An agent's principal: it may not approve its agent's requests either. */
  acting_for?: string;
  /** Every principal along the requester's delegation chain (acting_for included): none of them may approve. */
  requester_delegation?: string[];
  /** The rule lets agents (identities acting for someone) approve; never for grant requests. */
  agents_may_approve?: boolean;
  database: string;
  /** Which engine's upstream a statement request runs on (default postgres). */
  engine?: 'postgres' | 'mysql';
  /** Statement requests: the SQL and bind parameters the approval is bound to (hash covers database, SQL, params). */
  sql?: string;
  params?: (string | null)[];
  /** Some params arrived in binary format (kept as \\x hex). */
  binary_params?: boolean;
  /** Each parameter's wire format (0 text, 1 binary), when any is binary: part of the hash. */
  param_formats?: number[];
  /** Parameter type OIDs the statement declared (0 = inferred), when any is declared: part of the hash. */
  param_types?: number[];
  hash?: string;
  /** The policy rule that asked for approval and its reason. */
  rule?: string;
  policy_reason?: string;
  classes?: string[];
  tables?: string[];
  destructive?: string[];
  /** Grant requests: the role asked for, for how long, and why. */
  role?: GrantRole;
  duration_s?: number;
  justification?: string;
  /** Set when a grant is approved: matching statements pass until then. */
  grant_expires_at?: string;
  approver_groups: string[];
  quorum: number;
  votes: ApprovalVote[];
  preview?: Preview;
  session_id?: string;
  created_at: string;
  updated_at: string;
  /** Pending: undecided requests expire then. Approved statement requests: an unused approval lapses then. */
  expires_at: string;
  decided_at?: string;
  executed_at?: string;
  /** An approved grant (or unused statement approval) withdrawn before its end: by whom, when and why. */
  revoked_at?: string;
  revoked_by?: string;
  revoke_reason?: string;
  outcome?: { rows?: number; error?: string };
  version: number;
}

export interface ApprovalFilter {
  status?: ApprovalStatus[];
  kind?: Approval['kind'];
  requester?: string;
  hash?: string;
  /** Changed at or after this ISO time (the cross-process change feed). */
  since?: string;
  limit?: number;
}

/** Persistence for approvals; local (kysely) or, in cluster workers, through the process that owns the store. */
export interface ApprovalStore {
  insert(a: Approval): Promise<void>;
  /** Write `a` if the stored version is still a.version - 1; false when someone else changed it first. */
  update(a: Approval): Promise<boolean>;
  get(id: string): Promise<Approval | undefined>;
  list(f: ApprovalFilter): Promise<Approval[]>;
}

const row = (a: Approval) => ({
  id: a.id,
  kind: a.kind,
  status: a.status,
  requester: a.requester,
  hash: a.hash ?? null,
  created_at: new Date(a.created_at),
  updated_at: new Date(a.updated_at),
  expires_at: new Date(a.expires_at),
  version: a.version,
  payload: JSON.stringify(a),
});

export function kyselyApprovalStore(db: Kysely<Database>): ApprovalStore {
  return {
    async insert(a) {
      await db.insertInto('approvals').values(row(a)).execute();
    },
    async update(a) {
      const r = await db
        .updateTable('approvals')
        .set(row(a))
        .where('id', '=', a.id)
        .where('version', '=', a.version - 1)
        .executeTakeFirst();
      return Number(r.numUpdatedRows) === 1;
    },
    async get(id) {
      const r = await db.selectFrom('approvals').select('payload').where('id', '=', id).executeTakeFirst();
      return r ? (JSON.parse(r.payload) as Approval) : undefined;
    },
    async list(f) {
      let q = db.selectFrom('approvals').select('payload');
      if (f.status?.length) q = q.where('status', 'in', f.status);
      if (f.kind) q = q.where('kind', '=', f.kind);
      if (f.requester) q = q.where('requester', '=', f.requester);
      if (f.hash) q = q.where('hash', '=', f.hash);
      if (f.since) q = q.where('updated_at', '>=', new Date(f.since));
      const rows = await q.orderBy('created_at', 'desc').limit(Math.min(f.limit ?? 200, 1000)).execute();
      return rows.map((r) => JSON.parse(r.payload) as Approval);
    },
  };
}
