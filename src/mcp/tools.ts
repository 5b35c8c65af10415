import { performance } from 'node:perf_hooks';
import type pg from 'pg';
import { analysisFields, identityFields, type Governor, type Verdict } from '../governor.js';
import type { Identity } from '../identity/identity.js';
import type { UpstreamTarget } from '../protocol/postgres/upstream.js';
import { upstreamClient } from '../protocol/postgres/client.js';
import { maskValue, type Field, type MaskCounts } from '../masking/rows.js';
import { globMatch } from '../util/glob.js';
import type { Analysis } from '../analyze/analyze.js';
import type { Approval } from '../approvals/store.js';

/** A tool call the gateway refuses: the agent sees the message (with isError), the audit has the rest. */
export class ToolError extends Error {
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
    this.name = 'ToolError';
  }
}

export interface McpToolsOptions {
  governor: Governor;
  upstream: UpstreamTarget;
  /** Database globs clients may open (all when empty). */
  databases: string[];
  /** statement_timeout for tool queries (ms). */
  statementTimeoutMs?: number;
}

export interface QueryResult {
  status: 'ok';
  command: string;
  columns: string[];
  rows: (string | null)[][];
  row_count: number;
  truncated: boolean;
  masked?: Record<string, number>;
  approval_id?: string;
}
export interface PendingResult {
  status: 'pending_approval';
  approval_id: string;
  url: string;
  message: string;
}

/** Column names that usually hold personal or secret data (flagged in describe_schema even before any value is seen). */
const SENSITIVE_NAME = /(e_?mail|phone|mobile|ssn|social_?security|card|iban|account_?number|passport|tax_?id|dob|birth|salary|password|passwd|secret|token|api_?key|address|ip_?addr)/i;

/**
 * What an AI agent may do through MCP, governed exactly like the wire: every SQL statement goes through
 * Governor.check (policy, inference guard, grants), held statements through the approvals service, results through
 * the same masking plan, and every call is audited with the agent, the person it acts for, and its stated intent.
 * Each query runs on its own upstream connection (no session state leaks between calls or agents).
 */
export class McpTools {
  constructor(private readonly o: McpToolsOptions) {}

  private get g(): Governor {
    return this.o.governor;
  }

  private allowedDatabase(db: string): void {
    if (this.o.databases.length && !this.o.databases.some((p) => globMatch(p, db))) throw new ToolError(`database "${db}" is not served by this gateway`, '3D000');
  }

  private audit(id: Identity, fields: Record<string, unknown>): void {
    this.g.record({ type: 'statement', ...identityFields(id), protocol: 'mcp', application_name: 'mcp', client_addr: 'mcp', ...fields } as never);
  }

  private toolEvent(id: Identity, tool: string, intent: string | undefined, details: Record<string, unknown>, error?: string): void {
    this.g.record({ type: 'tool_call', ...identityFields(id), application_name: 'mcp', error, details: { tool, intent, ...details } });
  }

  private async withClient<T>(database: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
    const c = await upstreamClient(this.o.upstream, database, 'sluice-mcp').catch((e: Error) => {
      throw new ToolError(`cannot open database "${database}": ${e.message}`, '08006');
    });
    try {
      await c.query(`SET statement_timeout = ${Math.floor(this.o.statementTimeoutMs ?? 30_000)}`);
      return await fn(c);
    } finally {
      await c.end().catch(() => {});
    }
  }

  async listDatabases(id: Identity, intent?: string): Promise<{ databases: string[] }> {
    const rows = await this.withClient('postgres', (c) => c.query<{ datname: string }>('SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1'));
    const databases = rows.rows.map((r) => r.datname).filter((d) => !this.o.databases.length || this.o.databases.some((p) => globMatch(p, d)));
    this.toolEvent(id, 'list_databases', intent, { count: databases.length });
    return { databases };
  }

  /** Tables and columns, with the columns this identity would see masked (or that look sensitive) flagged. */
  async describeSchema(id: Identity, database: string, schema: string | undefined, intent?: string) {
    this.allowedDatabase(database);
    const r = await this.withClient(database, (c) =>
      c.query<{ table_schema: string; table_name: string; table_type: string; column_name: string; data_type: string; is_nullable: string }>(
        `SELECT t.table_schema, t.table_name, t.table_type, c.column_name, c.data_type, c.is_nullable
           FROM information_schema.tables t JOIN information_schema.columns c USING (table_schema, table_name)
          WHERE t.table_schema NOT IN ('pg_catalog', 'information_schema') AND ($1::text IS NULL OR t.table_schema = $1)
          ORDER BY 1, 2, c.ordinal_position`,
        [schema ?? null],
      ),
    );
    const tables = new Map<string, { schema: string; name: string; type: string; columns: { name: string; type: string; nullable: boolean; sensitive?: string }[] }>();
    for (const row of r.rows) {
      const key = `${row.table_schema}.${row.table_name}`;
      let t = tables.get(key);
      if (!t) tables.set(key, (t = { schema: row.table_schema, name: row.table_name, type: row.table_type === 'VIEW' ? 'view' : 'table', columns: [] }));
      t.columns.push({ name: row.column_name, type: row.data_type, nullable: row.is_nullable === 'YES' });
    }
    for (const t of tables.values()) {
      // The masking plan this identity would get for `SELECT * FROM t`.
      const analysis = { ok: true, statements: [], classes: ['read'], tables: [`${t.schema}.${t.name}`, t.name], destructive: [], flags: [], fingerprint: '' } as unknown as Analysis;
      const fields: Field[] = t.columns.map((c) => ({ name: c.name, tableOid: 0, attnum: 0, typeOid: 25, format: 0 }));
      const plan = this.g.maskPlan(id, analysis, fields);
      t.columns.forEach((c, i) => {
        const a = plan?.columns[i];
        if (a?.kind === 'rule') c.sensitive = `masked for you (${a.masker}, ${a.label})`;
        else if (SENSITIVE_NAME.test(c.name)) c.sensitive = a?.kind === 'scan' ? 'likely sensitive by name; values are scanned and masked by detectors' : 'likely sensitive by name (you see it in cleartext)';
      });
    }
    this.toolEvent(id, 'describe_schema', intent, { database, schema, tables: tables.size });
    return { database, tables: [...tables.values()] };
  }

  /**
   * Run SQL under policy. Allowed: rows (masked). Held for approval: the pending request (wait_for_approval
   * resumes it). Denied: ToolError with the policy's message.
   */
  async query(id: Identity, database: string, sql: string, opts: { intent?: string; maxRows?: number } = {}): Promise<QueryResult | PendingResult> {
    this.allowedDatabase(database);
    await this.g.views.postgres?.ensure(database);
    const v = this.g.check(id, database, sql);
    const intentDetails = { tool: 'query', intent: opts.intent };
    if (v.decision.action === 'require_approval') {
      const a = await this.g.requestApproval({ identity: id, database, sql, verdict: v, sessionId: `mcp:${id.subject}` });
      if (a.status === 'approved') return this.runApproved(id, a, v, opts);
      // Not a decision yet: the statement runs (or is refused) when the agent resumes with wait_for_approval.
      this.g.record({ type: 'tool_call', ...identityFields(id), application_name: 'mcp', database, sql, rule: v.decision.rule, approval_id: a.id, details: { ...intentDetails, held: true } });
      const url = this.g.approvals!.url(a.id);
      return { status: 'pending_approval', approval_id: a.id, url, message: `Sluice policy rule "${v.decision.rule}" requires approval. Ask a reviewer to approve ${a.id} (${url}), then call wait_for_approval.` };
    }
    if (v.error) {
      this.audit(id, { database, sql, ...analysisFields(v.analysis), decision: 'deny', rule: v.decision.rule, reason: v.error.message, error_code: v.error.code, details: intentDetails });
      throw new ToolError(v.error.message + (v.error.detail ? ` (${v.error.detail})` : ''), v.error.code);
    }
    return this.execute(id, database, sql, v, opts);
  }

  /** Wait (bounded) for a held query's decision; approved, it runs now (once) and returns its rows. */
  async waitForApproval(id: Identity, approvalId: string, opts: { timeoutS?: number; maxRows?: number; intent?: string } = {}): Promise<QueryResult | PendingResult> {
    const approvals = this.g.approvals;
    if (!approvals) throw new ToolError('approvals are not enabled on this gateway');
    const a = await approvals.get(approvalId);
    if (!a || a.kind !== 'statement' || (a.requester !== id.subject && a.acting_for !== id.subject)) throw new ToolError(`no approval request ${approvalId} of yours`);
    const signal = AbortSignal.timeout(Math.min(Math.max(opts.timeoutS ?? 60, 1), 600) * 1000);
    let final: Approval;
    try {
      final = a.status === 'pending' ? await approvals.wait(a.id, signal) : a;
    } catch (e) {
      if (!signal.aborted) throw e;
      return { status: 'pending_approval', approval_id: a.id, url: approvals.url(a.id), message: `still awaiting approval; call wait_for_approval again` };
    }
    const v = this.g.check(id, a.database, a.sql!);
    if (final.status === 'approved') return this.runApproved(id, final, v, opts);
    const outcome = await this.g.awaitApproval({ identity: id, database: a.database, sql: a.sql!, verdict: v }, final);
    this.audit(id, { database: a.database, sql: a.sql, ...analysisFields(v.analysis), decision: 'deny', rule: outcome.decision.rule, reason: outcome.error?.message, error_code: outcome.error?.code, approval_id: a.id, details: { tool: 'wait_for_approval', intent: opts.intent } });
    throw new ToolError(outcome.error?.message ?? `approval ${a.id} is ${final.status}`, outcome.error?.code);
  }

  private async runApproved(id: Identity, a: Approval, v: Verdict, opts: { intent?: string; maxRows?: number }): Promise<QueryResult> {
    const outcome = await this.g.awaitApproval({ identity: id, database: a.database, sql: a.sql!, verdict: v, sessionId: `mcp:${id.subject}` }, a);
    if (outcome.error) throw new ToolError(outcome.error.message, outcome.error.code);
    const r = await this.execute(id, a.database, a.sql!, outcome, opts);
    return { ...r, approval_id: a.id };
  }

  private async execute(id: Identity, database: string, sql: string, v: Verdict, opts: { intent?: string; maxRows?: number }): Promise<QueryResult> {
    const maxRows = Math.min(Math.max(opts.maxRows ?? 500, 1), 10_000);
    const t0 = performance.now();
    const base = { database, sql, ...analysisFields(v.analysis), decision: 'allow' as const, rule: v.decision.rule, approval_id: v.approvalId, details: { tool: 'query', intent: opts.intent } };
    let res: pg.QueryResult | pg.QueryResult[];
    try {
      res = await this.withClient(database, (c) => c.query({ text: sql, rowMode: 'array' }));
    } catch (e) {
      const err = e as Error & { code?: string };
      this.audit(id, { ...base, error: err.message, error_code: err.code, duration_ms: Math.round(performance.now() - t0) });
      if (v.approvalId) this.g.approvals?.recordOutcome(v.approvalId, { error: err.message });
      if (e instanceof ToolError) throw e;
      throw new ToolError(err.message, err.code);
    }
    // Several statements: the last result is returned (as psql -c shows the last).
    const last = Array.isArray(res) ? res[res.length - 1]! : res;
    const rowCount = Array.isArray(res) ? res.reduce((n, x) => n + (x.rowCount ?? 0), 0) : (res.rowCount ?? 0);
    const fields: Field[] = (last.fields ?? []).map((f: pg.FieldDef) => ({ name: f.name, tableOid: f.tableID, attnum: f.columnID, typeOid: f.dataTypeID, format: 0 }));
    const plan = fields.length ? this.g.maskPlan(id, v.analysis, fields, database) : undefined;
    const counts: MaskCounts = new Map();
    const rows = (last.rows as (string | null)[][]).slice(0, maxRows).map((row) =>
      row.map((cell, i) => {
        if (cell === null || !plan) return cell;
        const m = maskValue(plan.columns[i]!, cell, plan.key, counts);
        return m === undefined ? cell : m;
      }),
    );
    const masked = counts.size ? Object.fromEntries(counts) : undefined;
    this.audit(id, { ...base, rows: rowCount, masked, duration_ms: Math.round((performance.now() - t0) * 1000) / 1000, ...(rows.length > 0 && this.g.maskingExempt(id) ? { masking_exempt: true } : {}) });
    if (v.approvalId) this.g.approvals?.recordOutcome(v.approvalId, { rows: rowCount });
    return { status: 'ok', command: last.command, columns: fields.map((f) => f.name), rows, row_count: rowCount, truncated: last.rows.length > maxRows, ...(masked ? { masked } : {}) };
  }

  /** The plan PostgreSQL would use (EXPLAIN without ANALYZE: never runs the statement); the policy must not deny it. */
  async explain(id: Identity, database: string, sql: string, intent?: string): Promise<{ plan: unknown }> {
    this.allowedDatabase(database);
    const v = this.g.check(id, database, sql);
    const details = { tool: 'explain', intent };
    if (v.analysis && (v.analysis.statements.length !== 1 || v.analysis.statements[0]!.command.startsWith('EXPLAIN'))) {
      throw new ToolError('explain takes exactly one statement (not itself an EXPLAIN)');
    }
    // Held statements may be explained: reviewers and agents both benefit from seeing the plan first.
    if (v.error) {
      this.audit(id, { database, sql: `EXPLAIN ${sql}`, ...analysisFields(v.analysis), decision: 'deny', rule: v.decision.rule, reason: v.error.message, error_code: v.error.code, details });
      throw new ToolError(v.error.message, v.error.code);
    }
    const t0 = performance.now();
    const r = await this.withClient(database, (c) => c.query({ text: `EXPLAIN (FORMAT JSON) ${sql}`, rowMode: 'array' })).catch((e: Error & { code?: string }) => {
      this.audit(id, { database, sql: `EXPLAIN ${sql}`, ...analysisFields(v.analysis), decision: 'allow', rule: v.decision.rule, error: e.message, error_code: e.code, details });
      throw e instanceof ToolError ? e : new ToolError(e.message, e.code);
    });
    this.audit(id, { database, sql: `EXPLAIN ${sql}`, ...analysisFields(v.analysis), decision: 'allow', rule: v.decision.rule, rows: 1, duration_ms: Math.round(performance.now() - t0), details });
    const text = (r.rows[0] as string[])[0]!;
    return { plan: JSON.parse(text) };
  }
}
