import { identityFields } from '../governor.js';
import type { AuditEvent } from '../audit/audit.js';
import type { Identity } from '../identity/identity.js';
import type { SessionInfo } from './postgres/session.js';

/** A timer that ends a session when its identity's credential expires (none when it never does, or not for weeks). */
export function expiryTimer(identity: Identity | undefined, onExpire: () => void): NodeJS.Timeout | undefined {
  const exp = identity?.expiresAt;
  if (!exp) return undefined;
  const ms = exp * 1000 - Date.now();
  if (ms > 2 ** 31 - 1) return undefined;
  const t = setTimeout(onExpire, Math.max(ms, 0));
  t.unref();
  return t;
}

/** The audit event that closes a session of any engine. */
export function sessionEndEvent(info: SessionInfo, identity: Identity, database: string, reason: string): AuditEvent {
  return {
    type: 'session_end',
    session_id: info.id,
    ...identityFields(identity),
    database,
    client_addr: info.clientAddr,
    reason,
    details: { statements: info.statements, duration_s: (Date.now() - info.startedAt.getTime()) / 1000, ...(info.engine && info.engine !== 'postgres' ? { engine: info.engine } : {}) },
  };
}
