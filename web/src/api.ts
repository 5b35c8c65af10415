export interface Identity {
  subject: string;
  kind: 'human' | 'agent' | 'service';
  groups: string[];
  displayName?: string;
  actingFor?: string;
  delegation?: string[];
  method: string;
}
export interface Me {
  identity: Identity;
  roles: string[];
  csrf?: string;
}

let csrf: string | undefined;
export const setCsrf = (v: string | undefined) => {
  csrf = v;
};

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** Same-origin calls with the console's session cookie; writes carry the CSRF token. */
export async function api<T = any>(path: string, init: { method?: string; body?: unknown } = {}): Promise<T> {
  const method = init.method ?? 'GET';
  const headers: Record<string, string> = {};
  if (init.body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && csrf) headers['x-sluice-csrf'] = csrf;
  const r = await fetch(path, { method, headers, body: init.body !== undefined ? JSON.stringify(init.body) : undefined, credentials: 'same-origin' });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new ApiError((data as { error?: string }).error ?? `${r.status} ${r.statusText}`, r.status);
  return data as T;
}

export interface AuditEvent {
  chain_id: string;
  seq: number;
  ts: string;
  type: string;
  subject?: string;
  identity_kind?: string;
  acting_for?: string;
  database?: string;
  decision?: string;
  rule?: string;
  reason?: string;
  sql?: string;
  tables?: string[];
  columns?: string[];
  rows?: number;
  duration_ms?: number;
  masked?: Record<string, number>;
  masking_exempt?: boolean;
  error?: string;
  approval_id?: string;
  client_addr?: string;
  application_name?: string;
  hash: string;
  details?: Record<string, unknown>;
  [k: string]: unknown;
}

export interface Approval {
  id: string;
  kind: 'statement' | 'grant';
  status: 'pending' | 'approved' | 'denied' | 'expired' | 'executed' | 'revoked';
  requester: string;
  requester_kind: string;
  requester_name?: string;
  acting_for?: string;
  requester_delegation?: string[];
  agents_may_approve?: boolean;
  revoked_at?: string;
  revoked_by?: string;
  revoke_reason?: string;
  database: string;
  sql?: string;
  params?: (string | null)[];
  param_formats?: number[];
  param_types?: number[];
  rule?: string;
  policy_reason?: string;
  tables?: string[];
  destructive?: string[];
  role?: string;
  duration_s?: number;
  justification?: string;
  grant_expires_at?: string;
  approver_groups: string[];
  quorum: number;
  votes: { by: string; action: 'approve' | 'deny'; reason?: string; at: string }[];
  preview?: { kind: string; rows_affected?: number; objects?: { command: string; name: string; rows?: number }[]; note?: string; error?: string };
  created_at: string;
  expires_at: string;
  outcome?: { rows?: number; error?: string };
  version: number;
}
