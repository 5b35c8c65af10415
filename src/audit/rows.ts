/**
 * audit_events rows as the spool holds them and the store takes them, in one of two formats:
 *
 * - `copy`: one line of PostgreSQL's COPY text format, in AUDIT_COLUMNS order. A PostgreSQL store takes a batch
 *   of these with one COPY, which costs the server a fraction of parsing the same rows from JSON.
 * - `json`: one JSON object, what json_populate_recordset takes (the embedded store, and spools written before
 *   the copy format existed).
 *
 * Neither contains a raw newline, so a row is a spool line. A spool can hold both (an older process's spool taken
 * over); a batch is converted to the format its sink takes.
 */
export type RowFormat = 'copy' | 'json';

/** A batch of rows for the store: `copy` lines each ending in a newline, or a JSON array. */
export interface AuditRows {
  format: RowFormat;
  /** UTF-8 bytes (copy rows shipped from memory) or text. */
  text: string | Buffer;
  count: number;
  /** Sequence number of the first row (0 when there are none). */
  firstSeq: number;
}

export const AUDIT_COLUMNS = ['chain_id', 'seq', 'ts', 'type', 'session_id', 'subject', 'identity_kind', 'acting_for', 'database', 'decision', 'payload', 'prev_hash', 'hash'] as const;
type Column = (typeof AUDIT_COLUMNS)[number];
export type RowValues = Record<Column, string | number | null>;

const SPECIAL = /[\\\t\n\r]/;
const SPECIALS = /[\\\t\n\r]/g;
const ESCAPES: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r' };

/** A value in COPY text format: NULL is \N; backslash, tab, newline and carriage return are escaped. */
export function copyValue(v: string | number | null | undefined): string {
  if (v === null || v === undefined) return '\\N';
  if (typeof v === 'number') return String(v);
  return SPECIAL.test(v) ? v.replace(SPECIALS, (c) => ESCAPES[c]!) : v;
}

/** A JSON text as a COPY value: JSON holds no raw tab, newline or carriage return, so only backslashes need escaping. */
export const copyJson = (json: string): string => (json.includes('\\') ? json.replaceAll('\\', '\\\\') : json);

const UNESCAPES: Record<string, string> = { b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', '\\': '\\' };

/** The inverse of copyValue (and of the other single-character escapes COPY knows). */
function uncopyValue(s: string): string | null {
  if (s === '\\N') return null;
  if (!s.includes('\\')) return s;
  return s.replace(/\\(.)/g, (_, c: string) => UNESCAPES[c] ?? c);
}

export function copyLine(v: RowValues): string {
  let out = '';
  for (let i = 0; i < AUDIT_COLUMNS.length; i++) out += (i ? '\t' : '') + copyValue(v[AUDIT_COLUMNS[i]!]);
  return out;
}

export function jsonLine(v: RowValues): string {
  return JSON.stringify(v);
}

/** Row values from a JSON row's object. */
function valuesOf(o: Record<string, unknown>): RowValues {
  const v = {} as RowValues;
  for (const c of AUDIT_COLUMNS) v[c] = (o[c] ?? null) as string | number | null;
  return v;
}

/** Row values from one spool row of either format; undefined when it is neither. */
export function rowValues(row: string): RowValues | undefined {
  if (row.startsWith('{')) {
    try {
      return valuesOf(JSON.parse(row) as Record<string, unknown>);
    } catch {
      return undefined;
    }
  }
  const parts = row.split('\t');
  if (parts.length !== AUDIT_COLUMNS.length) return undefined;
  const v = {} as RowValues;
  AUDIT_COLUMNS.forEach((c, i) => (v[c] = uncopyValue(parts[i]!)));
  v.seq = Number(v.seq);
  return v;
}

export const rowFormatOf = (row: string): RowFormat => (row.startsWith('{') ? 'json' : 'copy');

/** One spool row in the given format (converted when it was written in the other one). */
export function rowAs(row: string, format: RowFormat): string | undefined {
  if (rowFormatOf(row) === format) return row;
  const v = rowValues(row);
  return v && (format === 'copy' ? copyLine(v) : jsonLine(v));
}

/** Rows joined as a batch of the given format. */
export function joinRows(rows: string[], format: RowFormat, firstSeq: number): AuditRows {
  const text = format === 'copy' ? (rows.length ? rows.join('\n') + '\n' : '') : `[${rows.join(',')}]`;
  return { format, text, count: rows.length, firstSeq };
}

const textOf = (rows: AuditRows): string => (typeof rows.text === 'string' ? rows.text : rows.text.toString('utf8'));

/** The same batch in another format. */
export function rowsAs(rows: AuditRows, format: RowFormat): AuditRows {
  if (rows.format === format) return rows;
  const text = textOf(rows);
  const lines =
    rows.format === 'copy'
      ? text.split('\n').filter((l) => l.length > 0).map((l) => rowAs(l, format)!)
      : (JSON.parse(text) as Record<string, unknown>[]).map((o) => copyLine(valuesOf(o)));
  return joinRows(lines, format, rows.firstSeq);
}

/** A copy batch without the rows up to and including seq `upTo` (already in the store). */
export function copyRowsAfter(rows: AuditRows, upTo: number): AuditRows {
  const kept = textOf(rows).split('\n').filter((l) => l.length > 0 && Number(l.split('\t', 2)[1]) > upTo);
  return joinRows(kept, 'copy', kept.length ? Number(kept[0]!.split('\t', 2)[1]) : 0);
}
