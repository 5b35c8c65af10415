import { performance } from 'node:perf_hooks';
import { identityFields } from '../audit/fields.js';
import type { Governor, Verdict } from '../governor.js';
import { StatementAudit } from '../protocol/common/audit.js';
import { scopeRefusal, served } from '../protocol/mysql/verdicts.js';
import type { Identity } from '../identity/identity.js';
import type { McpBackend, RunResult } from './backends.js';
import { maskValue, scrubText, type Field, type MaskCounts } from '../masking/values.js';
import { servedBy } from '../util/glob.js';
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
  /** The engines agents can query: PostgreSQL always, MySQL/MariaDB when the gateway has that engine. */
  backends: McpBackend[];
}

export type Engine = McpBackend['engine'];

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

  /** The backend for an engine, refusing databases it does not serve. */
  private backend(engine: Engine | undefined, database?: string): McpBackend {
    const b = this.o.backends.find((x) => x.engine === (engine ?? 'postgres'));
    if (!b) throw new ToolError(`engine "${engine}" is not served by this gateway (available: ${this.o.backends.map((x) => x.engine).join(', ')})`);
    if (database !== undefined && !(b.engine === 'mysql' ? served(b.databases, database) : servedBy(b.databases, database))) throw new ToolError(`database "${database}" is not served by this gateway`, '3D000');
    return b;
  }

  /** The Governor's verdict, with what the engine itself refuses (MySQL: other databases, USE inside statements). */
  private check(id: Identity, b: McpBackend, database: string, sql: string): Verdict {
    const v = this.g.check(id, database, sql, undefined, b.engine);
    return (b.engine === 'mysql' && !v.error && v.analysis && scopeRefusal(v.analysis, b.databases)) || v;
  }

  /** The statement audit of one call: the same builder the wire engines use. */
  private audit(id: Identity, engine: Engine, database: string): StatementAudit {
    return new StatementAudit(this.g.for(engine), id, () => ({ ...identityFields(id), application_name: 'mcp', client_addr: 'mcp', database }));
  }

  private toolEvent(id: Identity, tool: string, intent: string | undefined, details: Record<string, unknown>, error?: string): void {
    this.g.record({ type: 'tool_call', ...identityFields(id), application_name: 'mcp', error, details: { tool, intent, ...details } });
  }

  async listDatabases(id: Identity, intent?: string): Promise<{ databases: string[]; engines: Record<string, string[]> }> {
    const engines: Record<string, string[]> = {};
    for (const b of this.o.backends) {
      const all = await b.listDatabases().catch((e: Error) => {
        throw new ToolError(e.message);
      });
      engines[b.engine] = all.filter((d) => servedBy(b.databases, d));
    }
    this.toolEvent(id, 'list_databases', intent, { count: Object.values(engines).reduce((n, l) => n + l.length, 0) });
    return { databases: engines.postgres ?? [], engines };
  }

  /** Tables and columns, with the columns this identity would see masked (or that look sensitive) flagged. */
  async describeSchema(id: Identity, database: string, schema: string | undefined, intent?: string, engine?: Engine) {
    const b = this.backend(engine, database);
    const rows = await b.describe(database, schema).catch((e: Error) => {
      throw new ToolError(e.message);
    });
    const tables = new Map<string, { schema: string; name: string; type: string; columns: { name: string; type: string; nullable: boolean; sensitive?: string }[] }>();
    for (const row of rows) {
      const key = `${row.table_schema}.${row.table_name}`;
      let t = tables.get(key);
      if (!t) tables.set(key, (t = { schema: row.table_schema, name: row.table_name, type: row.table_type === 'VIEW' ? 'view' : 'table', columns: [] }));
      t.columns.push({ name: row.column_name, type: row.data_type, nullable: row.is_nullable === 'YES' });
    }
    for (const t of tables.values()) {
      // The masking plan this identity would get for `SELECT * FROM t`.
      const analysis = { ok: true, statements: [], classes: ['read'], tables: [`${t.schema}.${t.name}`, t.name], destructive: [], flags: [], fingerprint: '' } as unknown as Analysis;
      const fields: Field[] = t.columns.map((c) => ({ name: c.name, tableOid: 0, attnum: 0, typeOid: 25, format: 0 }));
      const plan = this.g.maskPlan(id, analysis, fields, database, b.engine);
      t.columns.forEach((c, i) => {
        const a = plan?.columns[i];
        if (a?.kind === 'rule') c.sensitive = `masked for you (${a.masker}, ${a.label})`;
        else if (SENSITIVE_NAME.test(c.name)) c.sensitive = a?.kind === 'scan' ? 'likely sensitive by name; values are scanned and masked by detectors' : 'likely sensitive by name (you see it in cleartext)';
      });
    }
    this.toolEvent(id, 'describe_schema', intent, { engine: b.engine, database, schema, tables: tables.size });
    return { engine: b.engine, database, tables: [...tables.values()] };
  }

  /**
   * Run SQL under policy. Allowed: rows (masked). Held for approval: the pending request (wait_for_approval
   * resumes it). Denied: ToolError with the policy's message.
   */
  async query(id: Identity, database: string, sql: string, opts: { intent?: string; maxRows?: number; engine?: Engine } = {}): Promise<QueryResult | PendingResult> {
    const b = this.backend(opts.engine, database);
    await this.g.openDatabase(b.engine, database);
    const v = this.check(id, b, database, sql);
    const intentDetails = { tool: 'query', intent: opts.intent, engine: b.engine };
    if (v.decision.action === 'require_approval') {
      const a = await this.g.requestApproval({ identity: id, database, sql, verdict: v, sessionId: `mcp:${id.subject}`, engine: b.engine });
      if (a.status === 'approved') return this.runApproved(id, a, v, opts, b);
      // Not a decision yet: the statement runs (or is refused) when the agent resumes with wait_for_approval.
      this.g.record({ type: 'tool_call', ...identityFields(id), application_name: 'mcp', database, sql, rule: v.decision.rule, approval_id: a.id, details: { ...intentDetails, held: true } });
      const url = this.g.approvals!.url(a.id);
      return { status: 'pending_approval', approval_id: a.id, url, message: `Sluice policy rule "${v.decision.rule}" requires approval. Ask a reviewer to approve ${a.id} (${url}), then call wait_for_approval.` };
    }
    if (v.error) {
      this.audit(id, b.engine, database).denied(sql, v, 'mcp', { details: intentDetails });
      throw new ToolError(v.error.message + (v.error.detail ? ` (${v.error.detail})` : '') + (v.error.code === '42601' && v.error.hint ? ` ${v.error.hint}` : ''), v.error.code);
    }
    return this.execute(id, b, database, sql, v, opts);
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
    const b = this.backend(a.engine ?? 'postgres');
    const v = this.check(id, b, a.database, a.sql!);
    if (final.status === 'approved') return this.runApproved(id, final, v, opts, b);
    const outcome = await this.g.awaitApproval({ identity: id, database: a.database, sql: a.sql!, verdict: v }, final);
    this.audit(id, b.engine, a.database).denied(a.sql, { ...outcome, analysis: v.analysis, approvalId: a.id }, 'mcp', { details: { tool: 'wait_for_approval', intent: opts.intent } });
    throw new ToolError(outcome.error?.message ?? `approval ${a.id} is ${final.status}`, outcome.error?.code);
  }

  private async runApproved(id: Identity, a: Approval, v: Verdict, opts: { intent?: string; maxRows?: number }, b: McpBackend): Promise<QueryResult> {
    const outcome = await this.g.awaitApproval({ identity: id, database: a.database, sql: a.sql!, verdict: v, sessionId: `mcp:${id.subject}`, engine: b.engine }, a);
    if (outcome.error) throw new ToolError(outcome.error.message, outcome.error.code);
    const r = await this.execute(id, b, a.database, a.sql!, outcome, opts);
    return { ...r, approval_id: a.id };
  }

  private async execute(id: Identity, b: McpBackend, database: string, sql: string, v: Verdict, opts: { intent?: string; maxRows?: number }): Promise<QueryResult> {
    const maxRows = Math.min(Math.max(opts.maxRows ?? 500, 1), 10_000);
    const t0 = performance.now();
    const audit = this.audit(id, b.engine, database);
    const base = { sql, protocol: 'mcp' as const, analysis: v.analysis, rule: v.decision.rule, approvalId: v.approvalId, t0, details: { tool: 'query', intent: opts.intent, engine: b.engine } };
    let res: RunResult;
    try {
      res = await b.run(database, sql);
    } catch (e) {
      const err = e as Error & { code?: string };
      audit.ran({ ...base, error: err });
      // The server's error can echo values: the agent gets it scrubbed like a wire client would.
      const shown = this.g.maskingExempt(id) ? err.message : scrubText(err.message, 'message', { tainted: !!this.g.taint(id, v.analysis, database, b.engine), detectors: this.g.scansText(id, undefined) });
      throw new ToolError(shown, err.code);
    }
    const fields = res.fields;
    const plan = fields.length ? this.g.maskPlan(id, v.analysis, fields, database, b.engine) : undefined;
    const counts: MaskCounts = new Map();
    const rows = res.rows.slice(0, maxRows).map((row) =>
      row.map((cell, i) => {
        if (cell === null || !plan) return cell;
        const m = maskValue(plan.columns[i]!, cell, plan.key, counts);
        return m === undefined ? cell : m;
      }),
    );
    const masked = counts.size ? Object.fromEntries(counts) : undefined;
    const rowCount = res.rowCount;
    audit.ran({ ...base, rows: rowCount, masked });
    return { status: 'ok', command: res.command, columns: fields.map((f) => f.name), rows, row_count: rowCount, truncated: res.rows.length > maxRows, ...(masked ? { masked } : {}) };
  }

  /** The plan PostgreSQL would use (EXPLAIN without ANALYZE: never runs the statement); the policy must not deny it. */
  async explain(id: Identity, database: string, sql: string, intent?: string, engine?: Engine): Promise<{ plan: unknown }> {
    const b = this.backend(engine, database);
    const v = this.check(id, b, database, sql);
    const details = { tool: 'explain', intent, engine: b.engine };
    const audit = this.audit(id, b.engine, database);
    if (v.analysis && (v.analysis.statements.length !== 1 || v.analysis.statements[0]!.command.startsWith('EXPLAIN'))) {
      throw new ToolError('explain takes exactly one statement (not itself an EXPLAIN)');
    }
    // Held statements may be explained: reviewers and agents both benefit from seeing the plan first.
    if (v.error) {
      audit.denied(`EXPLAIN ${sql}`, v, 'mcp', { details });
      throw new ToolError(v.error.message, v.error.code);
    }
    const t0 = performance.now();
    const plan = await b.explain(database, sql).catch((e: Error & { code?: string }) => {
      audit.ran({ sql: `EXPLAIN ${sql}`, protocol: 'mcp', analysis: v.analysis, rule: v.decision.rule, t0, error: e, details });
      throw new ToolError(e.message, e.code);
    });
    audit.ran({ sql: `EXPLAIN ${sql}`, protocol: 'mcp', analysis: v.analysis, rule: v.decision.rule, t0, rows: 1, details });
    return { plan };
  }
}
