import type pg from 'pg';
import { upstreamClient } from '../protocol/postgres/client.js';
import type { UpstreamTarget } from '../protocol/postgres/upstream.js';
import { MyClient, myQuote } from '../protocol/mysql/client.js';
import type { MyUpstreamTarget } from '../protocol/mysql/upstream.js';
import { myFields } from '../protocol/mysql/packets.js';
import type { Field } from '../masking/values.js';

/** A column of information_schema, as describe_schema reads it. */
export interface SchemaRow {
  table_schema: string;
  table_name: string;
  table_type: string;
  column_name: string;
  data_type: string;
  is_nullable: string;
}

export interface RunResult {
  command: string;
  fields: Field[];
  rows: (string | null)[][];
  rowCount: number;
}

/** One upstream engine as the MCP tools use it: each call on its own connection with the gateway's credentials. */
export interface McpBackend {
  engine: 'postgres' | 'mysql';
  /** Database globs served (all when empty). */
  databases: string[];
  listDatabases(): Promise<string[]>;
  describe(database: string, schema: string | undefined): Promise<SchemaRow[]>;
  run(database: string, sql: string): Promise<RunResult>;
  /** The plan of one statement as JSON, without running it. */
  explain(database: string, sql: string): Promise<unknown>;
}

/** A failure to reach the upstream (not an SQL error). */
export class BackendUnavailable extends Error {}

export function pgBackend(upstream: UpstreamTarget, databases: string[], statementTimeoutMs: number): McpBackend {
  const withClient = async <T>(database: string, fn: (c: pg.Client) => Promise<T>): Promise<T> => {
    const c = await upstreamClient(upstream, database, 'sluice-mcp').catch((e: Error) => {
      throw new BackendUnavailable(`cannot open database "${database}": ${e.message}`);
    });
    try {
      await c.query(`SET statement_timeout = ${Math.floor(statementTimeoutMs)}`);
      return await fn(c);
    } finally {
      await c.end().catch(() => {});
    }
  };
  return {
    engine: 'postgres',
    databases,
    async listDatabases() {
      const r = await withClient('postgres', (c) => c.query<{ datname: string }>('SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1'));
      return r.rows.map((x) => x.datname);
    },
    async describe(database, schema) {
      const r = await withClient(database, (c) =>
        c.query<SchemaRow>(
          `SELECT t.table_schema, t.table_name, t.table_type, c.column_name, c.data_type, c.is_nullable
             FROM information_schema.tables t JOIN information_schema.columns c USING (table_schema, table_name)
            WHERE t.table_schema NOT IN ('pg_catalog', 'information_schema') AND ($1::text IS NULL OR t.table_schema = $1)
            ORDER BY 1, 2, c.ordinal_position`,
          [schema ?? null],
        ),
      );
      return r.rows;
    },
    async run(database, sql) {
      const res = (await withClient(database, (c) => c.query({ text: sql, rowMode: 'array' }))) as pg.QueryResult | pg.QueryResult[];
      // Several statements: the last result is returned (as psql -c shows the last).
      const last = Array.isArray(res) ? res[res.length - 1]! : res;
      const rowCount = Array.isArray(res) ? res.reduce((n, x) => n + (x.rowCount ?? 0), 0) : (res.rowCount ?? 0);
      const fields: Field[] = (last.fields ?? []).map((f: pg.FieldDef) => ({ name: f.name, tableOid: f.tableID, attnum: f.columnID, typeOid: f.dataTypeID, format: 0 }));
      return { command: last.command, fields, rows: last.rows as (string | null)[][], rowCount };
    },
    async explain(database, sql) {
      const r = await withClient(database, (c) => c.query({ text: `EXPLAIN (FORMAT JSON) ${sql}`, rowMode: 'array' }));
      return JSON.parse((r.rows[0] as string[])[0]!);
    },
  };
}

export function mysqlBackend(upstream: MyUpstreamTarget, databases: string[], statementTimeoutMs: number): McpBackend {
  const withClient = async <T>(database: string | undefined, fn: (c: MyClient) => Promise<T>): Promise<T> => {
    const c = await MyClient.connect(upstream, database).catch((e: Error) => {
      throw new BackendUnavailable(`cannot open database "${database ?? ''}": ${e.message}`);
    });
    try {
      // MariaDB: max_statement_time (seconds); MySQL: max_execution_time (ms, SELECT only).
      await c.query(`SET SESSION max_statement_time = ${statementTimeoutMs / 1000}`).catch(() => c.query(`SET SESSION max_execution_time = ${Math.floor(statementTimeoutMs)}`).catch(() => undefined));
      return await fn(c);
    } finally {
      c.close();
    }
  };
  return {
    engine: 'mysql',
    databases,
    async listDatabases() {
      const r = await withClient(undefined, (c) => c.query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY 1"));
      return r.rows.map((x) => x[0]!);
    },
    async describe(database) {
      const r = await withClient(database, (c) =>
        c.query(
          `SELECT t.TABLE_SCHEMA, t.TABLE_NAME, t.TABLE_TYPE, c.COLUMN_NAME, c.DATA_TYPE, c.IS_NULLABLE
             FROM information_schema.TABLES t JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME
            WHERE t.TABLE_SCHEMA = ${myQuote(database)} ORDER BY t.TABLE_NAME, c.ORDINAL_POSITION`,
        ),
      );
      return r.rows.map(([table_schema, table_name, table_type, column_name, data_type, is_nullable]) => ({
        table_schema: table_schema!,
        table_name: table_name!,
        table_type: table_type === 'VIEW' ? 'VIEW' : 'BASE TABLE',
        column_name: column_name!,
        data_type: data_type!,
        is_nullable: is_nullable!,
      }));
    },
    async run(database, sql) {
      const r = await withClient(database, (c) => c.query(sql));
      return { command: (/^\s*(\w+)/.exec(sql)?.[1] ?? '').toUpperCase(), fields: myFields(r.fields), rows: r.rows, rowCount: r.columns.length ? r.rows.length : r.affected };
    },
    async explain(database, sql) {
      const r = await withClient(database, (c) => c.query(`EXPLAIN FORMAT=JSON ${sql}`));
      return JSON.parse(r.rows[0]?.[0] ?? 'null');
    },
  };
}
