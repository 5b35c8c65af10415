import type net from 'node:net';
import { SessionRegistry, type Engine, type LiveSession } from './registry.js';

export interface GateLimits {
  /** Logged-in sessions of every engine of this process. */
  maxConnections: number;
  /** Connections that have not completed login, in all. */
  maxUnauthenticated: number;
  /** Connections that have not completed login, per client address. */
  maxUnauthenticatedPerSource: number;
}

/**
 * Admission of client connections. Logged-in sessions count against max_connections; connections still logging in
 * are limited on their own, in all and per client address, so silent sockets cannot keep anyone else from logging
 * in (each is also ended by the login timeout). Over a limit the client is told why (the engine's "too many
 * connections" error) instead of seeing its connection closed. At shutdown, connections that never logged in are
 * ended at once.
 */
export class ConnectionGate {
  /** Connections not yet logged in, by engine and client address:port (as SessionInfo.clientAddr). */
  private pending = new Map<string, { socket: net.Socket; source: string }>();
  private perSource = new Map<string, number>();
  /** The registry the sessions register in: logging in moves a connection out of `pending`. */
  readonly registry: SessionRegistry;
  refused = 0;

  constructor(private readonly limits: GateLimits) {
    const gate = this;
    this.registry = new (class extends SessionRegistry {
      override register(s: LiveSession, key: number): void {
        super.register(s, key);
        gate.loggedIn(`${s.info.engine}|${s.info.clientAddr}`);
      }
    })();
  }

  get unauthenticated(): number {
    return this.pending.size;
  }

  /**
   * Admit a new connection, or say why not (the caller sends the engine's error and closes). Admitted connections
   * are tracked until they log in or close.
   */
  admit(engine: Engine, socket: net.Socket): string | undefined {
    const source = socket.remoteAddress ?? '?';
    const l = this.limits;
    let why: string | undefined;
    if (this.registry.sessions.size >= l.maxConnections) why = `too many connections: ${l.maxConnections} sessions are open (limits.max_connections)`;
    else if (this.pending.size >= l.maxUnauthenticated) why = `too many connections: ${l.maxUnauthenticated} connections are logging in (limits.max_unauthenticated)`;
    else if ((this.perSource.get(source) ?? 0) >= l.maxUnauthenticatedPerSource) why = `too many connections from ${source} that have not logged in (limits.max_unauthenticated_per_source is ${l.maxUnauthenticatedPerSource})`;
    if (why) {
      this.refused++;
      return why;
    }
    const key = `${engine}|${source}:${socket.remotePort ?? 0}`;
    this.pending.set(key, { socket, source });
    this.perSource.set(source, (this.perSource.get(source) ?? 0) + 1);
    socket.once('close', () => this.loggedIn(key));
    return undefined;
  }

  private loggedIn(key: string): void {
    const p = this.pending.get(key);
    if (!p) return;
    this.pending.delete(key);
    const n = (this.perSource.get(p.source) ?? 1) - 1;
    if (n > 0) this.perSource.set(p.source, n);
    else this.perSource.delete(p.source);
  }

  /** Shutdown: end every connection that has not logged in (nothing of theirs is running). */
  closeUnauthenticated(): void {
    for (const { socket } of [...this.pending.values()]) socket.destroy();
  }
}
