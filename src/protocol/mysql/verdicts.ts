import type { GovernorError, Verdict } from '../../governor.js';
import type { Analysis } from '../../analyze/analyze.js';
import { globToRegExp, servedBy } from '../../util/glob.js';
import { errPacket } from './packets.js';
import { lexingRefusal } from '../../analyze/guard-mysql.js';

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

/**
 * Why a session the server reports in this state cannot be relayed: the values of sql_mode, character_set_client,
 * character_set_connection and collation_connection, in that order (as read at login). `ignoreSpace`: the client
 * asked for CLIENT_IGNORE_SPACE, which puts IGNORE_SPACE in the session's sql_mode (the server does it at login).
 */
export function sessionStateRefusal(row: (string | null)[], o: { ignoreSpace: boolean }): string | undefined {
  const names = ['sql_mode', 'character_set_client', 'character_set_connection', 'collation_connection'];
  for (const [i, name] of names.entries()) {
    let value = row[i] ?? '';
    if (i === 0 && o.ignoreSpace) value = value.split(',').filter((m) => m.toUpperCase() !== 'IGNORE_SPACE').join(',');
    const why = lexingRefusal(name, { constant: value });
    if (why) return `Sluice ended the login: the server reports ${name} = '${value}' for this session. ${why}`;
  }
  return undefined;
}
