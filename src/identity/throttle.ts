import { AuthError } from './identity.js';

/** One scope's limits: after `max_failures` failures, each further one locks the scope out for twice as long. */
export interface ThrottleLimit {
  /** Failures (within window_s) before the scope is locked out. */
  max_failures: number;
  /** First lockout; doubled with each further failure. */
  base_delay_ms: number;
  /** Longest lockout. */
  max_delay_s: number;
}

/** `identity.throttle` in the config. */
export interface ThrottleConfig {
  enabled: boolean;
  /** Failures against one Sluice key id (slk_<id>_…), from anywhere: stops guessing one key's secret. */
  per_key: ThrottleLimit;
  /** Failures from one source address, whatever was presented: stops spraying. Higher, so that many CI jobs
   * behind one NAT are not locked out by one misconfigured job. */
  per_source: ThrottleLimit;
  /** Failures older than this are forgotten (a success with a key also clears that key's count). */
  window_s: number;
}

export const THROTTLE_DEFAULTS: ThrottleConfig = {
  enabled: true,
  per_key: { max_failures: 5, base_delay_ms: 1000, max_delay_s: 900 },
  per_source: { max_failures: 20, base_delay_ms: 1000, max_delay_s: 60 },
  window_s: 900,
};

const limitSchema = (d: ThrottleLimit) => ({
  type: 'object',
  additionalProperties: false,
  default: {},
  properties: {
    max_failures: { type: 'integer', minimum: 1, default: d.max_failures },
    base_delay_ms: { type: 'integer', minimum: 1, default: d.base_delay_ms },
    max_delay_s: { type: 'integer', minimum: 1, default: d.max_delay_s },
  },
});

/** JSON schema of `identity.throttle` (defaults filled in). */
export const THROTTLE_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  default: {},
  properties: {
    enabled: { type: 'boolean', default: THROTTLE_DEFAULTS.enabled },
    per_key: limitSchema(THROTTLE_DEFAULTS.per_key),
    per_source: limitSchema(THROTTLE_DEFAULTS.per_source),
    window_s: { type: 'integer', minimum: 1, default: THROTTLE_DEFAULTS.window_s },
  },
};

/** A sign-in refused without checking the credential, because its key or its source failed too often. */
export class ThrottledError extends AuthError {
  constructor(
    message: string,
    readonly scope: 'key' | 'source',
    readonly retryAfterMs: number,
  ) {
    super(message);
    this.name = 'ThrottledError';
  }
}

interface Entry {
  failures: number;
  last: number;
  until: number;
}

/** Most entries kept per scope; past it, entries whose failures are forgotten are dropped first. */
const MAX_ENTRIES = 100_000;

const KEY_ID = /^slk_([a-f0-9]{16})_/;

/**
 * Backoff for failed sign-ins, per key id and per source address, in this process (each gateway process keeps
 * its own counts). While a scope is locked out every attempt in it is refused at once, right credential or not,
 * and not counted; once the lockout ends one attempt is judged, and another failure doubles the next lockout.
 */
export class AuthThrottle {
  private readonly keys = new Map<string, Entry>();
  private readonly sources = new Map<string, Entry>();

  constructor(private readonly cfg: ThrottleConfig = THROTTLE_DEFAULTS) {}

  static keyIdOf(secret: string): string | undefined {
    return KEY_ID.exec(secret)?.[1];
  }

  /** Throws ThrottledError when the key or the source is locked out. */
  check(source: string | undefined, keyId: string | undefined, now = Date.now()): void {
    if (!this.cfg.enabled) return;
    const k = keyId !== undefined ? this.live(this.keys, keyId, now) : undefined;
    if (k && k.until > now) throw new ThrottledError(`throttled: too many failed sign-ins with Sluice key ${keyId}; try again in ${Math.ceil((k.until - now) / 1000)}s`, 'key', k.until - now);
    const s = source !== undefined ? this.live(this.sources, source, now) : undefined;
    if (s && s.until > now) throw new ThrottledError(`throttled: too many failed sign-ins from ${source}; try again in ${Math.ceil((s.until - now) / 1000)}s`, 'source', s.until - now);
  }

  failure(source: string | undefined, keyId: string | undefined, now = Date.now()): void {
    if (!this.cfg.enabled) return;
    if (keyId !== undefined) this.count(this.keys, keyId, this.cfg.per_key, now);
    if (source !== undefined) this.count(this.sources, source, this.cfg.per_source, now);
  }

  /** The right secret for a key clears that key's failures (not the source's: one valid key must not reset them). */
  success(keyId: string | undefined): void {
    if (keyId !== undefined) this.keys.delete(keyId);
  }

  /** The entry, unless its failures are older than the window (then it is dropped). */
  private live(map: Map<string, Entry>, id: string, now: number): Entry | undefined {
    const e = map.get(id);
    if (e && e.until <= now && now - e.last > this.cfg.window_s * 1000) {
      map.delete(id);
      return undefined;
    }
    return e;
  }

  private count(map: Map<string, Entry>, id: string, limit: ThrottleLimit, now: number): void {
    const e = this.live(map, id, now) ?? { failures: 0, last: now, until: 0 };
    e.failures++;
    e.last = now;
    if (e.failures >= limit.max_failures) e.until = now + Math.min(limit.base_delay_ms * 2 ** Math.min(e.failures - limit.max_failures, 30), limit.max_delay_s * 1000);
    map.delete(id); // re-insert: the map stays in last-failure order for pruning
    map.set(id, e);
    if (map.size > MAX_ENTRIES) {
      for (const [k, x] of map) {
        if (map.size <= MAX_ENTRIES * 0.9) break;
        if (x.until <= now) map.delete(k);
      }
    }
  }
}

/** The address of a client address written "addr:port" (IPv6 included). */
export const addressOf = (clientAddr: string): string => clientAddr.replace(/:\d+$/, '');

/** Audit fields of a refused sign-in: reason 'throttled' (scope and wait in details) when it was throttled. */
export function authFailureFields(e: unknown, reason: string): { reason: string; details?: Record<string, unknown> } {
  return e instanceof ThrottledError ? { reason: 'throttled', details: { message: e.message, scope: e.scope, retry_after_s: Math.ceil(e.retryAfterMs / 1000) } } : { reason };
}

/** The client address of an HTTP request served by @hono/node-server (its env carries the IncomingMessage). */
export const httpSource = (env: unknown): string | undefined => (env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined)?.incoming?.socket?.remoteAddress;
