import type { Analysis, AnalysisResult, StatementInfo } from '../analyze/analyze.js';
import { log } from '../util/log.js';

/** What a view reads: its base tables and, per output column, the columns it is computed from. */
export interface ViewInfo {
  tables: string[];
  outputs: { name: string; refs: string[] }[];
}

export interface ViewSource {
  schema: string;
  name: string;
  definition: string;
}

interface Entry {
  at: number;
  views: Map<string, ViewInfo>;
  loading?: Promise<void>;
}

/**
 * The views of each database, analyzed like statements, so masking rules and the inference guard follow a view's
 * columns back to the table columns they come from (`CREATE VIEW v AS SELECT ssn AS s FROM customers`: `v.s` is
 * masked like `customers.ssn`). Loaded when a session opens a database, refreshed after DDL and every `ttlMs`.
 */
export class ViewCatalog {
  private byDb = new Map<string, Entry>();

  constructor(
    private readonly fetch: (database: string) => Promise<ViewSource[]>,
    private readonly analyze: (sql: string) => AnalysisResult,
    private readonly ttlMs = 60_000,
  ) {}

  /**
   * Make sure the database's views are known: waits (at most `maxWaitMs`) for the first load only; later
   * refreshes run behind. Never throws.
   */
  async ensure(database: string, maxWaitMs = 3000): Promise<void> {
    const e = this.byDb.get(database);
    if (e && !e.loading && Date.now() - e.at < this.ttlMs) return;
    if (e && !e.loading) {
      void this.load(database);
      return;
    }
    if (e?.loading && e.at > 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([e?.loading ?? this.load(database), new Promise<void>((r) => (timer = setTimeout(r, maxWaitMs)))]);
    clearTimeout(timer);
  }

  /** A database's views may have changed (after DDL): read them again now, in the background. */
  invalidate(database: string): void {
    const e = this.byDb.get(database);
    if (!e) return;
    if (e.loading) void e.loading.then(() => this.load(database));
    else void this.load(database);
  }

  get(database: string): Map<string, ViewInfo> | undefined {
    const v = this.byDb.get(database)?.views;
    return v?.size ? v : undefined;
  }

  private load(database: string): Promise<void> {
    const entry: Entry = this.byDb.get(database) ?? { at: 0, views: new Map() };
    this.byDb.set(database, entry);
    entry.loading = (async () => {
      try {
        const views = new Map<string, ViewInfo>();
        for (const v of await this.fetch(database)) {
          const a = this.analyze(v.definition);
          if (!a.ok) continue;
          const info: ViewInfo = { tables: a.tables, outputs: a.statements.flatMap((s) => s.outputs ?? []) };
          views.set(v.name.toLowerCase(), info);
          views.set(`${v.schema}.${v.name}`.toLowerCase(), info);
        }
        entry.views = views;
      } catch (e) {
        log.warn(`masking: cannot read the views of ${database}: ${(e as Error).message}`);
      } finally {
        entry.at = Date.now();
        entry.loading = undefined;
      }
    })();
    return entry.loading;
  }
}

/** Output column name (lower case) -> the columns it is computed from, over statements (names may repeat). */
export function outputRefs(statements: readonly StatementInfo[]): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const st of statements) for (const o of st.outputs ?? []) m.set(o.name.toLowerCase(), [...(m.get(o.name.toLowerCase()) ?? []), ...o.refs]);
  return m;
}

/** The command of the statements throughViews() adds for views (so their outputs can be told apart). */
export const VIEW_COMMAND = 'VIEW';

const cache = new WeakMap<Analysis, { views: Map<string, ViewInfo>; result: Analysis }>();

/**
 * The analysis as masking sees it through views: each referenced view adds its base tables and, as an extra
 * statement, its output columns with what they are computed from (views of views followed a few levels).
 * Returns the analysis itself when it reads no view.
 */
export function throughViews(a: Analysis, views: Map<string, ViewInfo> | undefined): Analysis {
  if (!views) return a;
  const hit = cache.get(a);
  if (hit && hit.views === views) return hit.result;
  const tables = new Set(a.tables);
  const extra: StatementInfo[] = [];
  let frontier = a.tables.filter((t) => views.has(t.toLowerCase()));
  const seen = new Set<string>();
  for (let depth = 0; depth < 5 && frontier.length; depth++) {
    const next: string[] = [];
    for (const t of frontier) {
      const key = t.toLowerCase();
      if (seen.has(key)) continue;
      seen.add(key);
      const v = views.get(key)!;
      for (const bt of v.tables) {
        tables.add(bt);
        if (views.has(bt.toLowerCase())) next.push(bt);
      }
      extra.push({ command: VIEW_COMMAND, class: 'read', tables: v.tables.map((name) => ({ name, access: 'read' })), columns: [], functions: [], destructive: [], flags: [], outputs: v.outputs, filterColumns: [] });
    }
    frontier = next;
  }
  // A view over a view: expand each output's references through the inner views' outputs.
  if (extra.length > 1) {
    const inner = outputRefs(extra);
    const expand = (refs: string[], depth: number): string[] => {
      if (depth > 5) return refs;
      const out = new Set(refs);
      for (const r of refs) {
        const more = inner.get(r.slice(r.lastIndexOf('.') + 1).toLowerCase());
        if (more) for (const x of expand(more.filter((m) => !out.has(m)), depth + 1)) out.add(x);
      }
      return [...out];
    };
    for (const st of extra) st.outputs = st.outputs?.map((o) => ({ name: o.name, refs: expand(o.refs, 0) }));
  }
  const result = extra.length ? { ...a, tables: [...tables], statements: [...a.statements, ...extra] } : a;
  cache.set(a, { views, result });
  return result;
}
