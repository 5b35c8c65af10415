import type { Analysis, AnalysisResult, StatementInfo } from '../analyze/analyze.js';
import { PerDatabase } from '../util/perdb.js';

/** What a view reads: its base tables, the functions it calls and, per output column, the columns it is computed from. */
export interface ViewInfo {
  tables: string[];
  functions: string[];
  /** Operators it uses (user-defined ones run functions). */
  operators: string[];
  /** Domains it casts to (a volatile CHECK runs on the cast). */
  casts?: string[];
  outputs: { name: string; refs: string[] }[];
}

export interface ViewSource {
  schema: string;
  name: string;
  definition: string;
}

/**
 * The views of each database, analyzed like statements, so masking rules and the inference guard follow a view's
 * columns back to the table columns they come from (`CREATE VIEW v AS SELECT ssn AS s FROM customers`: `v.s` is
 * masked like `customers.ssn`), and the guard sees the functions a view calls. Loaded when a session opens a
 * database, refreshed after DDL and every `ttlMs`.
 */
export class ViewCatalog extends PerDatabase<Map<string, ViewInfo>> {
  constructor(fetch: (database: string, signal: AbortSignal) => Promise<ViewSource[]>, analyze: (sql: string) => AnalysisResult, ttlMs = 60_000) {
    super(
      'views',
      async (database, signal) => {
        const views = new Map<string, ViewInfo>();
        for (const v of await fetch(database, signal)) {
          const a = analyze(v.definition);
          if (!a.ok) continue;
          const info: ViewInfo = { tables: a.tables, functions: [...new Set(a.statements.flatMap((s) => s.functions))], operators: [...new Set(a.statements.flatMap((s) => s.operators ?? []))], casts: [...new Set(a.statements.flatMap((s) => s.casts ?? []))], outputs: a.statements.flatMap((s) => s.outputs ?? []) };
          views.set(v.name.toLowerCase(), info);
          views.set(`${v.schema}.${v.name}`.toLowerCase(), info);
        }
        return views;
      },
      ttlMs,
    );
  }

  /** The database's views (undefined: none, or never loaded). */
  override get(database: string): Map<string, ViewInfo> | undefined {
    const v = super.get(database);
    return v?.size ? v : undefined;
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

/** Per view catalog load, per analysis (keyed by the load first: cached analyses must not keep old loads alive). */
const cache = new WeakMap<Map<string, ViewInfo>, WeakMap<Analysis, Analysis>>();

/**
 * The analysis as masking sees it through views: each referenced view adds its base tables and, as an extra
 * statement, its output columns with what they are computed from (views of views followed a few levels).
 * Returns the analysis itself when it reads no view.
 */
export function throughViews(a: Analysis, views: Map<string, ViewInfo> | undefined): Analysis {
  if (!views) return a;
  let byAnalysis = cache.get(views);
  if (!byAnalysis) cache.set(views, (byAnalysis = new WeakMap()));
  const hit = byAnalysis.get(a);
  if (hit) return hit;
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
      extra.push({ command: VIEW_COMMAND, class: 'read', tables: v.tables.map((name) => ({ name, access: 'read' })), columns: [], functions: [], destructive: [], flags: [], outputs: v.outputs });
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
  byAnalysis.set(a, result);
  return result;
}
