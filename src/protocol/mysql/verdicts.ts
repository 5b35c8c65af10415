import type { GovernorError, Verdict } from '../../governor.js';
import type { Analysis } from '../../analyze/analyze.js';
import { globToRegExp, servedBy } from '../../util/glob.js';
import { errPacket } from './packets.js';
import { lexingRefusal } from '../../analyze/guard-mysql.js';
import { lex } from '../../analyze/mysql-lex.js';

/** MySQL error numbers for the Governor's SQLSTATE-style codes. */
export function myError(e: GovernorError): Buffer {
  const map: Record<string, [number, string]> = {
    '42501': [1142, '42000'],
    '42601': [1064, '42000'],
    '57014': [1317, '70100'],
    '57P03': [1290, 'HY000'],
    '26000': [1243, 'HY000'],
  };
  const [code, state] = map[e.code] ?? [1105, 'HY000'];
  return errPacket(code, state, [e.message, e.detail, e.hint].filter(Boolean).join(' — '));
}

/**
 * Whether a database is served, its name matched case-sensitively: MySQL/MariaDB database names are case-sensitive
 * on most servers (lower_case_table_names = 0), so `APP` is not `app`.
 */
export function served(globs: readonly string[], db: string): boolean {
  return servedBy(globs, db) && (globs.length === 0 || globs.some((g) => new RegExp(globToRegExp(g).source).test(db)));
}

/** A statement Sluice refuses whatever the policy says (the engine's own guard: databases served, USE). */
export function refusal(analysis: Analysis | undefined, statement: number | undefined, reason: string): Verdict {
  return {
    analysis,
    decision: { action: 'deny', rule: 'sluice-guard', reason, ...(statement !== undefined ? { statement } : {}) },
    error: { code: '42501', message: `Sluice refuses this statement: ${reason}`, hint: 'The statement was not run; the session is still usable.' },
  };
}

export interface SavedSettingRestore {
  setting: string;
  variable: string;
}

const LEXING_SETTING = '(?<setting>sql_mode|character_set_client|character_set_connection|character_set_results|collation_connection)';
const SAVED_RESTORE = new RegExp(
  `^\\s*(?:/\\*!(?<version>\\d{5,6})\\s+)?SET\\s+(?:(?:SESSION|LOCAL)\\s+|@@(?:SESSION|LOCAL)\\.|@@)?${LEXING_SETTING}\\s*:?=\\s*@(?<variable>[A-Za-z0-9_$.]+|\`(?:[^\`]|\`\`)+\`)\\s*(?<close>\\*/)?\\s*;?\\s*$`,
  'i',
);

/**
 * A lone `SET <lexing setting> = @variable` (also inside a /*!NNNNN ... *\/ comment the server runs), as dump files
 * put settings back: which setting, from which user variable. Anything else (other forms, more statements) is not.
 */
export function savedSettingRestore(sql: string, serverVersion: number): SavedSettingRestore | undefined {
  if (!sql.includes('@')) return undefined;
  const m = SAVED_RESTORE.exec(sql);
  if (!m?.groups) return undefined;
  const { version, variable, close } = m.groups;
  // A versioned comment must be closed, and run by this server; otherwise the text is not this statement.
  if ((version !== undefined) !== (close !== undefined)) return undefined;
  if (version !== undefined && Number(version) > serverVersion) return undefined;
  const name = variable!.startsWith('`') ? variable!.slice(1, -1).replace(/``/g, '`') : variable!;
  return { setting: m.groups.setting!.toLowerCase(), variable: name };
}

const PREPARED_SETTING = new RegExp(`^\\s*SET\\s+(?:(?:SESSION|LOCAL)\\s+|@@(?:SESSION|LOCAL)\\.|@@)?${LEXING_SETTING}\\s*:?=\\s*\\?\\s*;?\\s*$`, 'i');

/**
 * A prepared `SET <lexing setting> = ?` (mysql2's execute('SET character_set_results = ?', [cs])): which setting.
 * Its value is known only when the statement is executed: it is judged then, as the constant the client binds.
 */
export function preparedSetting(sql: string): string | undefined {
  return PREPARED_SETTING.exec(sql)?.groups?.setting?.toLowerCase();
}

/** A lexing setting assigned a string constant, as the statement text Sluice judges (the value escaped for MySQL). */
export const settingText = (setting: string, value: string): string => `SET SESSION ${setting} = '${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;

/** A server version string as the number executable comments compare with (`10.11.19-MariaDB` -> 101119). */
export function versionNumber(serverVersion: string): number {
  const m = /(\d+)\.(\d+)\.(\d+)/.exec(serverVersion.replace(/^5\.5\.5-/, ''));
  return m ? Number(m[1]) * 10000 + Number(m[2]) * 100 + Number(m[3]) : 0;
}

/**
 * What the MySQL engine refuses of an analysed text beyond policy (for wire sessions and MCP alike): USE inside
 * another statement, a prepared statement or EXECUTE IMMEDIATE would switch the upstream's database unseen (only
 * `USE db` on its own, or the client's use command, switches, judged for that database); `db.table` and `db.fn()`
 * reach other databases, so only served ones.
 */
export function scopeRefusal(a: Analysis, databases: readonly string[]): Verdict | undefined {
  const use = a.statements.findIndex((s) => /(^|\s)USE$/.test(s.command));
  if (use >= 0) return refusal(a, use, "not supported by Sluice: USE as part of another statement, a prepared statement or EXECUTE IMMEDIATE; send `USE db` on its own (or use your client's use command)");
  for (const [i, s] of a.statements.entries()) {
    for (const name of [...s.tables.map((t) => t.name), ...s.functions]) {
      const dot = name.indexOf('.');
      if (dot < 0) continue;
      const db = name.slice(0, dot);
      if (db.toLowerCase() !== 'information_schema' && !served(databases, db)) return refusal(a, i, `database "${db}" is not served by this Sluice gateway (${name})`);
    }
  }
  return undefined;
}

/** The session variables that decide how the server reads and decodes statements and results, as the gateway reads them. */
export const STATE_VARIABLES = ['sql_mode', 'character_set_client', 'character_set_connection', 'character_set_results', 'collation_connection'] as const;

/** The gateway's own query for the session's state (one row: STATE_VARIABLES in order). */
export const STATE_PROBE = `SELECT ${STATE_VARIABLES.map((v) => `@@session.${v}`).join(', ')}`;

/**
 * Run on every upstream session before it is used (and again after COM_RESET_CONNECTION, which puts it back to the
 * server's defaults): the server reports in its OK packets every change of the variables the guard depends on and of
 * the session's database, whatever caused it (a stored procedure's SET NAMES, SET ... = DEFAULT). The server's own
 * tracked variables are kept ('*' stays '*', which cannot be combined with names).
 */
export const TRACK_SETUP = `SET SESSION session_track_schema = ON, session_track_system_variables = IF(FIND_IN_SET('*', @@global.session_track_system_variables), '*', CONCAT_WS(',', NULLIF(@@global.session_track_system_variables, ''), '${STATE_VARIABLES.join(',')}'))`;

/**
 * Why Sluice cannot parse under a session variable's value as the server reports it, or undefined. `ignoreSpace`:
 * the client asked for CLIENT_IGNORE_SPACE, which puts IGNORE_SPACE in the session's sql_mode (the server does it at
 * login), so it is accepted there.
 */
export function reportedStateRefusal(name: string, value: string | null, o: { ignoreSpace: boolean }): string | undefined {
  let v = value ?? '';
  if (name === 'sql_mode' && o.ignoreSpace) v = v.split(',').filter((m) => m.toUpperCase() !== 'IGNORE_SPACE').join(',');
  const why = lexingRefusal(name, { constant: v });
  return why && `the server reports ${name} = '${value === null ? 'NULL' : v}' for this session. ${why}`;
}

/** Why a session whose state probe (STATE_PROBE) read this row cannot be relayed, or undefined. */
export function sessionStateRefusal(row: (string | null)[], o: { ignoreSpace: boolean }): string | undefined {
  for (const [i, name] of STATE_VARIABLES.entries()) {
    const why = reportedStateRefusal(name, row[i] ?? null, o);
    if (why) return why;
  }
  return undefined;
}

/** `KILL [QUERY|CONNECTION] <id>`, the form Sluice runs itself (a statement alone, `;` allowed). */
export const KILL = /^\s*KILL\s+(QUERY\s+|CONNECTION\s+)?(\d+)\s*;?\s*$/i;

/**
 * The statements of a text, split at the `;` between them as the server reads them (strings, quoted names and
 * comments kept whole); undefined when that is not certain: executable comments (their content may hold `;`), an
 * empty statement, a text that does not lex.
 */
export function splitStatements(sql: string): string[] | undefined {
  if (/\/\*M?!/.test(sql)) return undefined;
  const l = lex(sql);
  if (!l) return undefined;
  const out: string[] = [];
  let start = 0;
  for (const t of l.toks) {
    if (t.k !== 'p' || t.v !== ';') continue;
    out.push(sql.slice(start, t.s));
    start = t.e;
  }
  if (sql.slice(start).trim()) out.push(sql.slice(start));
  return out.every((x) => x.trim()) ? out.map((x) => x.trim()) : undefined;
}
