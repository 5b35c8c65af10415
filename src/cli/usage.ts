/** A mistake in how a command was called: reported as `sluice: <message>` with exit code 2. */
export class UsageError extends Error {}

/** A flag that must be a whole number within bounds (`--limit 50`, `--port 6432`). */
export function intFlag(name: string, v: unknown, o: { min?: number; max?: number } = {}): number | undefined {
  if (v === undefined) return undefined;
  const s = String(v).trim();
  const n = /^-?\d+$/.test(s) ? Number(s) : NaN;
  if (!Number.isSafeInteger(n)) throw new UsageError(`--${name} must be a whole number, not ${JSON.stringify(String(v))}`);
  if (o.min !== undefined && n < o.min) throw new UsageError(`--${name} must be at least ${o.min} (got ${n})`);
  if (o.max !== undefined && n > o.max) throw new UsageError(`--${name} must be at most ${o.max} (got ${n})`);
  return n;
}

/** A flag that must be one of a few words (`--decision allow|deny`). */
export function enumFlag<T extends string>(name: string, v: unknown, allowed: readonly T[]): T | undefined {
  if (v === undefined) return undefined;
  if (!allowed.includes(String(v) as T)) throw new UsageError(`--${name} must be one of ${allowed.join(', ')}, not ${JSON.stringify(String(v))}`);
  return String(v) as T;
}

/** A comma-separated list whose every item must be one of a few words (`--status pending,approved`). */
export function enumListFlag<T extends string>(name: string, v: unknown, allowed: readonly T[]): T[] | undefined {
  if (v === undefined) return undefined;
  const items = String(v).split(',').map((s) => s.trim()).filter(Boolean);
  const bad = items.filter((s) => !allowed.includes(s as T));
  if (!items.length || bad.length) throw new UsageError(`--${name} takes a comma-separated list of ${allowed.join(', ')}${bad.length ? `; not ${bad.map((b) => JSON.stringify(b)).join(', ')}` : ''}`);
  return items as T[];
}

/** An ISO 8601 time flag (`--since 2026-11-01`). */
export function timeFlag(name: string, v: unknown): string | undefined {
  if (v === undefined) return undefined;
  if (Number.isNaN(new Date(String(v)).getTime())) throw new UsageError(`--${name}: invalid time "${v}" (use ISO 8601, e.g. 2026-11-01 or 2026-11-01T09:00:00Z)`);
  return String(v);
}
