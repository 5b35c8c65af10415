import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js';
import { z } from 'zod';
import type { Identity } from '../identity/identity.js';
import { ToolError, type McpTools } from './tools.js';

const engine = z.enum(['postgres', 'mysql']).optional().describe('Which engine the database is on (default postgres; mysql when the gateway fronts MySQL/MariaDB too).');
const intent = z.string().max(2000).optional().describe('Why you are calling this (recorded in the audit trail with your identity).');

type Content = { content: { type: 'text'; text: string }[]; structuredContent?: Record<string, unknown>; isError?: boolean };

async function answer(fn: () => Promise<object>): Promise<Content> {
  try {
    const r = (await fn()) as Record<string, unknown>;
    return { content: [{ type: 'text', text: JSON.stringify(r, null, 1) }], structuredContent: r };
  } catch (e) {
    const msg = e instanceof ToolError ? `${e.message}${e.code ? ` [SQLSTATE ${e.code}]` : ''}` : `internal error: ${(e as Error).message}`;
    return { content: [{ type: 'text', text: msg }], isError: true };
  }
}

/** An MCP server whose every tool acts as `identity` (already authenticated by the transport). */
export function buildMcpServer(tools: McpTools, identity: Identity): McpServer {
  const server = new McpServer({ name: 'sluice', version: '0.1.0' }, { instructions: 'Governed database access through Sluice. Every call is checked against policy, masked, and audited as you. Queries that need approval return approval_id: call wait_for_approval with it.' });
  server.registerTool(
    'list_databases',
    { description: 'Databases you can query through this gateway, per engine.', inputSchema: { intent } },
    (a) => answer(() => tools.listDatabases(identity, a.intent)),
  );
  server.registerTool(
    'describe_schema',
    {
      description: 'Tables, views and columns of a database. Columns you would see masked, or that look sensitive, carry a "sensitive" note.',
      inputSchema: { database: z.string().min(1), schema: z.string().min(1).optional(), engine, intent },
    },
    (a) => answer(() => tools.describeSchema(identity, a.database, a.schema, a.intent, a.engine)),
  );
  server.registerTool(
    'query',
    {
      description: 'Run SQL (PostgreSQL dialect) under the gateway policy. Returns rows (sensitive values masked), or status pending_approval with an approval_id when a reviewer must approve first, or an error when the policy denies it. Each call is its own session (autocommit).',
      inputSchema: { database: z.string().min(1), sql: z.string().min(1).max(1_000_000), max_rows: z.number().int().min(1).max(10_000).optional(), engine, intent },
    },
    (a) => answer(() => tools.query(identity, a.database, a.sql, { intent: a.intent, maxRows: a.max_rows, engine: a.engine })),
  );
  server.registerTool(
    'wait_for_approval',
    {
      description: 'Wait (up to timeout_s) for a held query to be decided. Approved: it runs now, once, and its rows are returned. Denied or expired: an error with the reviewer and reason. Still pending: status pending_approval (call again).',
      inputSchema: { approval_id: z.string().min(1), timeout_s: z.number().int().min(1).max(600).optional(), max_rows: z.number().int().min(1).max(10_000).optional(), intent },
    },
    (a) => answer(() => tools.waitForApproval(identity, a.approval_id, { timeoutS: a.timeout_s, maxRows: a.max_rows, intent: a.intent })),
  );
  server.registerTool(
    'explain',
    {
      description: 'The query plan for one statement (EXPLAIN, FORMAT JSON; the statement is not run). Refused when the policy denies the statement.',
      inputSchema: { database: z.string().min(1), sql: z.string().min(1).max(1_000_000), engine, intent },
    },
    (a) => answer(() => tools.explain(identity, a.database, a.sql, a.intent, a.engine)),
  );
  return server;
}

/**
 * Serve one streamable-HTTP request (stateless: each request is authenticated on its own and gets a fresh server,
 * so nothing about one agent lingers for another).
 */
export async function handleMcpRequest(tools: McpTools, identity: Identity, req: Request): Promise<Response> {
  const server = buildMcpServer(tools, identity);
  const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
  await server.connect(transport);
  try {
    return await transport.handleRequest(req);
  } finally {
    // JSON responses are complete once handleRequest resolves.
    void server.close();
  }
}
