import type { Identity } from '../../identity/identity.js';
import type { Engine } from '../../util/engine.js';

export type { Engine };

export interface SessionInfo {
  id: string;
  identity?: Identity;
  database?: string;
  clientAddr: string;
  applicationName?: string;
  startedAt: Date;
  tls: boolean;
  currentSql?: string;
  statements: number;
  /** Last transaction status: I idle, T in a transaction, E in a failed transaction. */
  txStatus: string;
  /** The approval request the session's current statement is held for. */
  awaitingApproval?: string;
  /** Wire protocol of the session. */
  engine: Engine;
}

/** What the registry needs of a session of any engine (PostgreSQL, MySQL). */
export interface LiveSession {
  readonly id: string;
  readonly info: SessionInfo;
  terminate(reason: string): void;
  /** A cancel from the client (PostgreSQL CancelRequest with its secret, MySQL KILL QUERY of an own connection). */
  cancelFromClient(secret?: number): void;
}

/**
 * Live sessions and their keys, shared by all sessions of every engine of one gateway process. Each engine has its
 * own key space (PostgreSQL cancel keys, MySQL connection ids): a key of one engine never reaches another's session.
 */
export class SessionRegistry {
  readonly sessions = new Map<string, LiveSession>();
  private readonly keys: Record<Engine, Map<number, LiveSession>> = { postgres: new Map(), mysql: new Map() };
  /** Cancel keys not issued by this process are passed here (to the other processes of a cluster). */
  forwardCancel?: (pid: number, secret: number) => void;
  /** A PostgreSQL CancelRequest: cancel that session if the secret matches; false if the key is not ours. */
  cancel(pid: number, secret: number): boolean {
    const s = this.keys.postgres.get(pid);
    if (!s) return false;
    s.cancelFromClient(secret);
    return true;
  }
  /** The session holding `key` in an engine's key space. */
  lookup(engine: Engine, key: number): LiveSession | undefined {
    return this.keys[engine].get(key);
  }
  register(s: LiveSession, key: number): void {
    this.sessions.set(s.id, s);
    this.keys[s.info.engine].set(key, s);
  }
  unregister(s: LiveSession, key: number): void {
    this.sessions.delete(s.id);
    const space = this.keys[s.info.engine];
    if (space.get(key) === s) space.delete(key);
  }
}
