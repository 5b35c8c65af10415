import { log } from './log.js';

interface Entry<T> {
  /** When the last load finished (0: never). */
  at: number;
  value?: T;
  /** The last load failed (the previous value, if any, is kept). */
  failed?: boolean;
  loading?: Promise<void>;
  /** Ends the running load's connection (the database is about to be dropped or renamed). */
  abort?: AbortController;
  /** The reload queued behind the running load (DDL while it ran). */
  next?: Promise<void>;
}

/**
 * Facts read from each upstream database with the gateway's own credentials (views, function classes), loaded when
 * a session opens the database, refreshed after DDL and every `ttlMs`, never blocking a statement: readers take
 * what is loaded. (PostgreSQL sessions wait for the loads they start before their next statement; see PgSession.)
 */
export class PerDatabase<T> {
  private byDb = new Map<string, Entry<T>>();

  constructor(
    private readonly what: string,
    private readonly fetch: (database: string, signal: AbortSignal) => Promise<T>,
    private readonly ttlMs = 60_000,
  ) {}

  /**
   * Make sure the database's facts are known: waits (at most `maxWaitMs`) for the first load only; later refreshes
   * run behind. Never throws.
   */
  async ensure(database: string, maxWaitMs = 3000): Promise<void> {
    const load = this.start(database);
    if (!load || this.byDb.get(database)?.value !== undefined) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([load, new Promise<void>((r) => (timer = setTimeout(r, maxWaitMs)))]);
    clearTimeout(timer);
  }

  /**
   * Start reading the database unless what is known is fresh; returns the load under way (this one, or one already
   * running or queued), which never rejects, or undefined when there is none.
   */
  start(database: string): Promise<void> | undefined {
    const e = this.byDb.get(database);
    if (e?.loading) return e.next ?? e.loading;
    if (e && !e.failed && Date.now() - e.at < this.ttlMs) return undefined;
    return this.load(database);
  }

  /**
   * The database may have changed (DDL committed): read it again, now or, during a load (which may have started
   * before the change), once behind it; one reload is queued however many changes come meanwhile, so a burst of DDL
   * does not pile up concurrent catalog reads, whose snapshots would keep VACUUM from cleaning up behind them.
   * Returns the load that will see the change (never rejects); undefined when the database was never opened.
   */
  refresh(database: string): Promise<void> | undefined {
    const e = this.byDb.get(database);
    if (!e) return undefined;
    if (!e.loading) return this.load(database);
    if (e.next) return e.next;
    const next: Promise<void> = e.loading.then(() => {
      // Forgotten meanwhile (dropped, renamed): the next session to open it reads it afresh.
      if (e.next !== next) return;
      e.next = undefined;
      return this.load(database);
    });
    return (e.next = next);
  }

  /** The same as refresh(), for callers that do not wait. */
  invalidate(database: string): void {
    void this.refresh(database);
  }

  /**
   * A database is about to be dropped or renamed: end a load running on it and the one queued (their connections
   * would keep it in use), and have the next session that opens it read it afresh (another database may take its
   * name). Sessions still in it (the statement may fail) keep what is known.
   */
  forget(database: string): void {
    const e = this.byDb.get(database);
    if (!e) return;
    e.next = undefined;
    e.at = 0;
    e.abort?.abort();
  }

  /** What is known of the database (undefined: never loaded successfully). */
  get(database: string): T | undefined {
    return this.byDb.get(database)?.value;
  }

  private load(database: string): Promise<void> {
    const entry: Entry<T> = this.byDb.get(database) ?? { at: 0 };
    this.byDb.set(database, entry);
    const abort = new AbortController();
    entry.abort = abort;
    entry.loading = (async () => {
      try {
        const value = await this.fetch(database, abort.signal);
        if (abort.signal.aborted) return;
        entry.value = value;
        entry.failed = false;
      } catch (e) {
        entry.failed = true;
        if (!abort.signal.aborted) log.warn(`cannot read the ${this.what} of ${database}: ${(e as Error).message}`);
      } finally {
        if (!abort.signal.aborted) entry.at = Date.now();
        entry.loading = undefined;
        entry.abort = undefined;
      }
    })();
    return entry.loading;
  }
}
