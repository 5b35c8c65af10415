import type net from 'node:net';
import { Framer } from './framer.js';
import { Reader } from './buffer.js';
import * as m from './messages.js';
import { connectUpstream, type UpstreamConnection, type UpstreamTarget } from './upstream.js';

export interface PoolOptions {
  /** Idle server connections kept per database and startup parameters; 0 turns pooling off. */
  size: number;
  /** An idle server connection is closed after this long unused. */
  idleTimeoutMs: number;
  /** A server connection is not reused once this old (it closes when its client session ends). */
  maxLifetimeMs: number;
  /** Longest a reset (ROLLBACK, DISCARD ALL) may take before the connection is dropped instead. */
  resetTimeoutMs: number;
}

interface Idle {
  conn: UpstreamConnection;
  database: string;
  createdAt: number;
  timer: NodeJS.Timeout;
}

export interface PoolStats {
  /** Server connections opened, reused from the pool, reset and returned, dropped (reset failed, too old). */
  opened: number;
  reused: number;
  returned: number;
  dropped: number;
  idle: number;
  /** Dropped instead of kept because their session had created temporary objects (a temporary schema). */
  temp: number;
}

/**
 * Server connections owned by the gateway (its credentials are its own), reused across client sessions. A
 * connection goes back to the pool only when its session ended cleanly between statements; it is then reset
 * with `DISCARD ALL` (after `ROLLBACK` when a transaction was open), which closes portals and prepared
 * statements, resets every setting and the session authorization, unlistens, releases advisory locks and drops
 * temporary tables, so nothing of one client's session reaches the next. Connections are keyed by database and
 * the client's startup parameters (the session defaults DISCARD ALL returns to), so a reused connection is one
 * the client could have opened itself. A connection whose session created temporary objects is not kept: DISCARD
 * ALL drops them but the backend keeps its temporary schema, which a fresh backend would not have.
 */
export class UpstreamPool {
  private readonly idle = new Map<string, Idle[]>();
  private readonly born = new WeakMap<net.Socket, number>();
  private closed = false;
  /** Per database: how many times closeDatabase() closed its connections (a reset under way when it did is dropped). */
  private readonly closings = new Map<string, number>();
  readonly stats: PoolStats = { opened: 0, reused: 0, returned: 0, dropped: 0, idle: 0, temp: 0 };

  constructor(
    private readonly target: UpstreamTarget,
    private readonly o: PoolOptions,
  ) {}

  private static key(params: Record<string, string>): string {
    return JSON.stringify(Object.entries(params).sort(([a], [b]) => (a < b ? -1 : 1)));
  }

  /** A logged-in server session for these startup parameters: an idle one, or a new one. */
  async acquire(params: Record<string, string>): Promise<UpstreamConnection> {
    const list = this.idle.get(UpstreamPool.key(params));
    while (list?.length) {
      const it = list.pop()!;
      clearTimeout(it.timer);
      this.stats.idle--;
      if (it.conn.socket.destroyed) continue;
      it.conn.socket.removeAllListeners();
      this.stats.reused++;
      return { ...it.conn, parameters: new Map(it.conn.parameters), leftover: Buffer.alloc(0) };
    }
    const conn = await connectUpstream(this.target, params);
    this.born.set(conn.socket, Date.now());
    this.stats.opened++;
    return conn;
  }

  /**
   * A client session is done with its server connection, which is idle between messages (`txStatus` from its
   * last ReadyForQuery). It is reset and kept, or closed when pooling is off, it is too old, or the reset fails.
   */
  release(params: Record<string, string>, conn: UpstreamConnection, txStatus: string): void {
    const s = conn.socket;
    s.removeAllListeners();
    const createdAt = this.born.get(s) ?? 0;
    const full = (this.idle.get(UpstreamPool.key(params))?.length ?? 0) >= this.o.size;
    if (this.closed || full || s.destroyed || Date.now() - createdAt > this.o.maxLifetimeMs) return this.drop(s);
    s.on('error', () => s.destroy());
    s.resume();
    const database = params.database ?? '';
    const closings = this.closings.get(database);
    reset(s, txStatus !== 'I', this.o.resetTimeoutMs).then(
      ({ changed, temp }) => {
        if (temp) this.stats.temp++;
        if (this.closed || s.destroyed || temp || this.closings.get(database) !== closings) return this.drop(s);
        for (const [k, v] of changed) conn.parameters.set(k, v);
        this.keep(UpstreamPool.key(params), database, { ...conn, txStatus: 'I' }, createdAt);
      },
      () => this.drop(s),
    );
  }

  /**
   * Close the idle connections to a database, and those being reset for it now, so that a statement that needs
   * nobody connected to it (DROP DATABASE, ALTER DATABASE ... RENAME, CREATE DATABASE ... TEMPLATE) is not blocked
   * by the gateway's own connections. Connections in use by client sessions are theirs (as directly).
   */
  closeDatabase(database: string): void {
    this.closings.set(database, (this.closings.get(database) ?? 0) + 1);
    for (const [key, list] of this.idle) for (const it of [...list]) if (it.database === database) this.evict(key, it);
  }

  private keep(key: string, database: string, conn: UpstreamConnection, createdAt: number): void {
    const s = conn.socket;
    let list = this.idle.get(key);
    if (!list) this.idle.set(key, (list = []));
    const ttl = Math.min(this.o.idleTimeoutMs, Math.max(createdAt + this.o.maxLifetimeMs - Date.now(), 0));
    const it: Idle = { conn, database, createdAt, timer: setTimeout(() => this.evict(key, it), ttl) };
    it.timer.unref();
    // An idle server connection that closes (server restart, terminated backend) or sends anything leaves the pool.
    const gone = () => this.evict(key, it);
    s.once('close', gone);
    s.once('data', gone);
    list.push(it);
    this.stats.returned++;
    this.stats.idle++;
  }

  private evict(key: string, it: Idle): void {
    const list = this.idle.get(key);
    const i = list?.indexOf(it) ?? -1;
    if (i < 0) return;
    list!.splice(i, 1);
    this.stats.idle--;
    clearTimeout(it.timer);
    this.drop(it.conn.socket);
  }

  private drop(s: net.Socket): void {
    this.stats.dropped++;
    s.removeAllListeners();
    s.on('error', () => {});
    if (!s.destroyed) s.end(m.terminate());
    setTimeout(() => s.destroy(), 2000).unref();
  }

  /** Close every idle connection (shutdown); connections in use close with their sessions. */
  close(): void {
    this.closed = true;
    for (const [key, list] of this.idle) for (const it of [...list]) this.evict(key, it);
  }
}

/** Whether the session has a temporary schema (schema-qualified, no operator: the client set the search_path). */
const TEMP_SCHEMA_SQL = 'SELECT pg_catalog.pg_my_temp_schema()';

/**
 * Reset a server session for the next client: ROLLBACK (if a transaction is open), then DISCARD ALL, with a look
 * at whether the session has a temporary schema in the same round trip. Resolves with the settings the server
 * reports as changed by the reset and that; rejects on any error, a transaction still open after it, or the
 * timeout.
 */
function reset(s: net.Socket, rollback: boolean, timeoutMs: number): Promise<{ changed: Map<string, string>; temp: boolean }> {
  return new Promise((resolve, reject) => {
    const framer = new Framer(1 << 20);
    const changed = new Map<string, string>();
    let temp: boolean | undefined;
    let pending = rollback ? 3 : 2;
    const timer = setTimeout(() => fail(new Error('reset timed out')), timeoutMs);
    const fail = (e: Error) => {
      clearTimeout(timer);
      s.removeListener('data', onData);
      reject(e);
    };
    const onData = (d: Buffer) => {
      try {
        framer.push(d, (type, b, start, end) => {
          const r = new Reader(b, start + 5, end);
          if (type === 0x45 /* E */) throw new Error(m.parseErrorFields(b, start, end).message ?? 'reset failed');
          if (type === 0x53 /* S */) changed.set(r.cstring(), r.cstring());
          if (type === 0x44 /* D */ && r.int16() === 1) {
            const n = r.int32();
            temp = n < 0 || r.bytes(n).toString() !== '0';
          }
          if (type !== 0x5a /* Z */ || --pending > 0) return;
          clearTimeout(timer);
          s.removeListener('data', onData);
          if (String.fromCharCode(b[start + 5]!) !== 'I') reject(new Error('a transaction is still open after the reset'));
          else if (temp === undefined) reject(new Error('no answer about the temporary schema'));
          else resolve({ changed, temp });
        });
      } catch (e) {
        fail(e as Error);
      }
    };
    s.on('data', onData);
    s.once('close', () => fail(new Error('closed during the reset')));
    const rest = [m.query(TEMP_SCHEMA_SQL), m.query('DISCARD ALL')];
    s.write(Buffer.concat(rollback ? [m.query('ROLLBACK'), ...rest] : rest));
  });
}
