import type { ColumnType, Generated } from 'kysely';

export interface AuditEventsTable {
  chain_id: string;
  seq: ColumnType<string | number, number, number>;
  ts: ColumnType<Date, Date, never>;
  type: string;
  session_id: string | null;
  subject: string | null;
  identity_kind: string | null;
  acting_for: string | null;
  database: string | null;
  decision: string | null;
  payload: string;
  prev_hash: string;
  hash: string;
}

export interface AuditHeadsTable {
  chain_id: string;
  seq: ColumnType<string | number, number, number>;
  hash: string;
  appended: ColumnType<string | number, number, number>;
  closed: boolean;
  updated_at: Date;
}

export interface ApiKeysTable {
  id: string;
  name: string;
  kind: string;
  subject: string;
  groups: string;
  acting_for: string | null;
  secret_hash: string;
  created_at: ColumnType<Date, Date, never>;
  created_by: string | null;
  expires_at: Date | null;
  revoked_at: Date | null;
  last_used_at: Date | null;
}

export interface ApprovalsTable {
  id: string;
  kind: string;
  status: string;
  requester: string;
  hash: string | null;
  created_at: Date;
  updated_at: Date;
  expires_at: Date;
  version: number;
  payload: string;
}

export interface LiveSessionsTable {
  id: string;
  gateway: string;
  updated_at: Date;
  terminate_by: string | null;
  info: string;
}

export interface AuditCheckpointsTable {
  chain_id: string;
  seq: ColumnType<string | number, number, number>;
  hash: string;
  signed_at: Date;
  key_id: string;
  public_key: string;
  signature: string;
}

export interface PolicyVersionsTable {
  id: string;
  hash: string;
  loaded_at: Date;
  loaded_by: string;
  text: string;
}

export interface StreamCheckpointsTable {
  sink: string;
  chain_id: string;
  seq: ColumnType<string | number, number, number>;
  updated_at: Date;
}

export interface AccessReviewsTable {
  id: string;
  created_at: Date;
  created_by: string;
  status: string;
  closed_at: Date | null;
  items: string;
}

export interface AccessReviewDecisionsTable {
  review_id: string;
  item_id: string;
  decision: string;
  reviewer: string;
  reason: string | null;
  decided_at: Date;
}

export interface Database {
  audit_events: AuditEventsTable;
  audit_checkpoints: AuditCheckpointsTable;
  policy_versions: PolicyVersionsTable;
  stream_checkpoints: StreamCheckpointsTable;
  stream_leases: { sink: string; owner: string; lease_until: Date };
  access_reviews: AccessReviewsTable;
  access_review_decisions: AccessReviewDecisionsTable;
  audit_heads: AuditHeadsTable;
  live_sessions: LiveSessionsTable;
  approvals: ApprovalsTable;
  api_keys: ApiKeysTable;
  sluice_meta: { key: string; value: string; id?: Generated<number> };
}
