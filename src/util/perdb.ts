import { log } from './log.js';

interface Entry<T> {
  /** When the last load finished (0: never). */
  at: number;
  value?: T;
  /** The last load failed (the previous value, if any, is kept). */
  failed?: boolean;
  loading?: Promise<void>;
  /** A reload is already queued behind the running load (DDL while it ran). */
  queued?: boolean;
}

/**
 * Facts read from each upstream database with the gateway's own credentials (views, function classes), loaded when
 * a session opens the database, refreshed after DDL and every `ttlMs`, never blocking a statement: readers take
 * what is loaded.
 */
export class PerDatabase<T> {
  private byDb = new Map<string, Entry<T>>();

  constructor(
    private readonly what: string,
    private readonly fetch: (database: string) => Promise<T>,
    private readonly ttlMs = 60_000,
  ) {}

  /**
   * Make sure the database's facts are known: waits (at most `maxWaitMs`) for the first load only; later refreshes
   * run behind. Never throws.
   */
  async ensure(database: string, maxWaitMs = 3000): Promise<void> {
    const e = this.byDb.get(database);
    if (e && !e.loading && !e.failed && Date.now() - e.at < this.ttlMs) return;
    if (e && !e.loading && e.value !== undefined) {
      void this.load(database);
      return;
    }
    if (e?.loading && e.value !== undefined) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([e?.loading ?? this.load(database), new Promise<void>((r) => (timer = setTimeout(r, maxWaitMs)))]);
    clearTimeout(timer);
  }

  /**
   * The database may have changed (after DDL): read it again now, in the background. During a load, one reload
   * is queued behind it however many statements invalidate meanwhile (it starts after all of them), so a burst of
   * DDL does not pile up concurrent catalog reads, whose snapshots would keep VACUUM from cleaning up behind them.
   */
  invalidate(database: string): void {
    const e = this.byDb.get(database);
    if (!e) return;
    if (!e.loading) return void this.load(database);
    if (e.queued) return;
    e.queued = true;
    void e.loading.then(() => {
      e.queued = false;
      return this.load(database);
    });
  }

  /** What is known of the database (undefined: never loaded successfully). */
  get(database: string): T | undefined {
    return this.byDb.get(database)?.value;
  }

  private load(database: string): Promise<void> {
    const entry: Entry<T> = this.byDb.get(database) ?? { at: 0 };
    this.byDb.set(database, entry);
    entry.loading = (async () => {
      try {
        entry.value = await this.fetch(database);
        entry.failed = false;
      } catch (e) {
        entry.failed = true;
        log.warn(`cannot read the ${this.what} of ${database}: ${(e as Error).message}`);
      } finally {
        entry.at = Date.now();
        entry.loading = undefined;
      }
    })();
    return entry.loading;
  }
}
