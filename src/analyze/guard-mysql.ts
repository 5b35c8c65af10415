/**
 * What the statement guard knows about MySQL/MariaDB beyond the grammar: which session variables change how the
 * server reads the bytes of later statements (and which values Sluice can parse under), which settings are
 * privileged, which schemas and tables hold secrets, what built-in functions do besides returning a value, and which
 * statements Sluice deliberately does not relay.
 *
 * Sluice's parser (sqlparser-rs, MySQL dialect) reads SQL as the server does with backslash escapes on, `"` quoting
 * strings (no ANSI_QUOTES) and a client character set in which every byte below 0x80 is ASCII. The gateway keeps every
 * session in that state: it refuses the statements and the login character sets that would leave it.
 */

/** Character sets in which a byte below 0x80 is always that ASCII character (so `\` and `'` cannot hide in a multibyte character). */
const SAFE_CHARSETS = new Set([
  'utf8', 'utf8mb3', 'utf8mb4', 'latin1', 'latin2', 'latin5', 'latin7', 'ascii', 'binary', 'cp1250', 'cp1251', 'cp1256',
  'cp1257', 'cp850', 'cp852', 'cp866', 'koi8r', 'koi8u', 'greek', 'hebrew', 'armscii8', 'keybcs2', 'macce', 'macroman',
  'swe7', 'dec8', 'hp8', 'geostd8', 'tis620', 'euckr', 'ujis', 'eucjpms', 'gb2312',
]);

export const safeCharset = (name: string): boolean => SAFE_CHARSETS.has(name.toLowerCase());

/** A collation's character set is its name up to the first `_` (`utf8mb4_bin` -> utf8mb4). */
const charsetOfCollation = (collation: string): string => collation.toLowerCase().split('_')[0]!;

/**
 * Collation ids (below 256, as MariaDB 10.11 numbers them; MySQL's agree for these sets) of the ASCII-safe character
 * sets above: utf8mb3, utf8mb4 (and MySQL's 255), latin1, ascii, binary, the other single-byte sets and the EUC sets.
 * Others (big5 1, sjis 13, gbk 28, cp932 95, ...) are refused at login.
 */
const SAFE_COLLATION_IDS = new Set([
  2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15, 16, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 29, 30, 31, 32, 33, 34, 36, 37,
  38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 57, 58, 59, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72,
  73, 74, 75, 77, 78, 79, 80, 81, 82, 83, 85, 86, 89, 91, 92, 93, 94, 97, 98, 99, 223, 255,
  ...Array.from({ length: 24 }, (_, i) => 192 + i),
  ...Array.from({ length: 24 }, (_, i) => 224 + i),
]);

/** Why the character set a client sends in its handshake is refused (undefined: it is ASCII-safe). */
export function handshakeCharsetRefusal(id: number): string | undefined {
  if (SAFE_COLLATION_IDS.has(id)) return undefined;
  return `the client character set (collation id ${id}) is not allowed through Sluice: in it a multibyte character can end in a backslash or quote, so Sluice and the server would read statements differently; connect with utf8mb4`;
}

/**
 * sql_mode flags Sluice parses under. Absent on purpose: NO_BACKSLASH_ESCAPES and ANSI_QUOTES (and the combined modes
 * that include it: ANSI, DB2, MAXDB, MSSQL, ORACLE, POSTGRESQL), which change where strings end; PIPES_AS_CONCAT,
 * which changes how expressions parse; unknown names (fail closed). IGNORE_SPACE is safe: it lets a built-in's name
 * be followed by spaces before `(` and still be a call, and Sluice's parser reads every `name (` as a call (it also
 * makes built-in names reserved words, which only makes the server refuse statements that use them as names).
 */
const SAFE_SQL_MODES = new Set([
  '', 'allow_invalid_dates', 'empty_string_is_null', 'error_for_division_by_zero', 'high_not_precedence', 'ignore_bad_table_options', 'ignore_space',
  'mysql323', 'mysql40', 'no_auto_create_user', 'no_auto_value_on_zero', 'no_dir_in_create', 'no_engine_substitution',
  'no_field_options', 'no_key_options', 'no_table_options', 'no_unsigned_subtraction', 'no_zero_date', 'no_zero_in_date',
  'only_full_group_by', 'pad_char_to_full_length', 'real_as_float', 'simultaneous_assignment', 'strict_all_tables',
  'strict_trans_tables', 'time_round_fractional', 'traditional',
]);

/** Session variables that change how the server reads statement text (or decodes it). */
const LEXING_VARIABLES = new Set(['sql_mode', 'character_set_client', 'character_set_connection', 'character_set_results', 'collation_connection', 'names']);

export const lexingVariable = (name: string): boolean => LEXING_VARIABLES.has(name.toLowerCase());

/** A SET value as Sluice can know it: a constant (string, identifier, DEFAULT), or undefined when it is computed. */
export type SetValue = { constant: string } | { computed: string };

/** Why a lexing variable may not take this value (undefined: Sluice parses correctly under it). */
export function lexingRefusal(name: string, value: SetValue): string | undefined {
  const n = name.toLowerCase();
  if (!LEXING_VARIABLES.has(n)) return undefined;
  if ('computed' in value) return `${n} can only be set to a constant through Sluice (not ${value.computed}): Sluice must know how the server will read the statements that follow`;
  const v = value.constant.trim();
  if (v.toLowerCase() === 'default') return undefined;
  if (n === 'sql_mode') {
    const bad = v.split(',').map((m) => m.trim()).filter((m) => !SAFE_SQL_MODES.has(m.toLowerCase()));
    if (!bad.length) return undefined;
    return `sql_mode ${bad.join(',')} is not allowed through Sluice: NO_BACKSLASH_ESCAPES, ANSI_QUOTES (and ANSI, ORACLE, ... which include it), PIPES_AS_CONCAT and unknown modes change how the server reads statements, so Sluice could not see which statements a text contains`;
  }
  const charset = n === 'collation_connection' ? charsetOfCollation(v) : v;
  if (safeCharset(charset)) return undefined;
  return `character set "${v}" is not allowed through Sluice: in it a multibyte character can end in a backslash or quote, so Sluice and the server would read statements differently; use utf8mb4`;
}

/** Session variables reserved to administrators, or reaching beyond the session (binary log, replication, debugging, identity). */
const PRIVILEGED_VARIABLE = /^(sql_log_bin|sql_log_off|log_.*|general_log.*|slow_query_log.*|binlog_.*|gtid_.*|server_id|pseudo_.*|skip_replication|wsrep_.*|debug.*|slave_.*|replicate_.*|rpl_.*|secure_.*|password|role|default role|authorization|session_track_.*|init_connect|query_cache_.*|enforce_storage_engine)$/;

export const privilegedVariable = (name: string): boolean => PRIVILEGED_VARIABLE.test(name.toLowerCase());

/** Schemas whose tables hold credentials, other sessions' activity or server internals: `sensitive-catalog`. */
export const SENSITIVE_SCHEMAS = new Set(['mysql', 'performance_schema', 'sys']);
/** information_schema tables of the same kind (the rest describe the schema and stay ordinary reads). */
export const SENSITIVE_INFO_TABLES = new Set([
  'processlist', 'user_privileges', 'schema_privileges', 'table_privileges', 'column_privileges', 'applicable_roles', 'enabled_roles',
  'user_statistics', 'client_statistics', 'index_statistics', 'table_statistics', 'thread_pool_queues', 'thread_pool_stats',
  'global_variables', 'session_variables', 'global_status', 'session_status', 'metadata_lock_info', 'locks', 'user_variables',
  'innodb_trx', 'innodb_locks', 'innodb_lock_waits', 'innodb_buffer_page', 'innodb_buffer_page_lru', 'query_response_time',
  'sql_functions', 'routines', 'triggers', 'events', 'views', 'parameters', 'optimizer_trace', 'plugins', 'all_plugins',
  'tablespaces_encryption', 'innodb_tablespaces_encryption', 'disks', 'wsrep_membership', 'wsrep_status', 'audit_log',
]);

/** Whether reading `db.table` (schema-qualified or not) touches a secret-bearing catalog. */
export function sensitiveTable(name: string): boolean {
  const dot = name.indexOf('.');
  if (dot < 0) return false;
  const schema = name.slice(0, dot).toLowerCase();
  if (SENSITIVE_SCHEMAS.has(schema)) return true;
  return schema === 'information_schema' && SENSITIVE_INFO_TABLES.has(name.slice(dot + 1).toLowerCase());
}

/** SHOW forms (by their words) that reveal credentials, other sessions or server internals. */
export const SENSITIVE_SHOW = /^(grants|engine|binlog|relaylog|master|slave|replica|binary|processlist|full processlist|privileges|profile|profiles|create user|user_statistics|client_statistics|explain)/i;

/** Built-ins with effects beyond their result: what they do. A statement calling one is at least a write. */
const EFFECTS: [RegExp, string][] = [
  [/^(nextval|setval)$/, 'moves a sequence'],
  [/^(get_lock|release_lock|release_all_locks)$/, 'takes or releases named locks'],
  [/^(sleep|benchmark)$/, 'holds the connection busy'],
  [/^(master_pos_wait|source_pos_wait|master_gtid_wait|wait_for_executed_gtid_set|wait_until_sql_thread_after_gtids)$/, 'waits on replication'],
  [/^(load_file)$/, 'reads a server file'],
  [/^(sys_exec|sys_eval)$/, 'runs a server command'],
  [/^(uuid_short)$/, 'advances a server counter'],
];

/**
 * Built-in functions that only compute a value. Any other name (user stored functions, qualified `db.fn()`, names
 * Sluice does not know) is taken to have effects (fail closed).
 */
const HARMLESS = new Set(
  `abs acos adddate addtime aes_decrypt aes_encrypt any_value ascii asin atan atan2 avg bin binary bit_and bit_count bit_length
  bit_or bit_xor cast ceil ceiling char char_length character_length charset chr coalesce coercibility collation compress concat
  concat_ws connection_id conv convert convert_tz cos cot count crc32 crc32c cume_dist curdate current_date current_role current_time
  current_timestamp current_user curtime database date date_add date_format date_sub datediff day dayname dayofmonth dayofweek
  dayofyear decode default degrees dense_rank des_decrypt des_encrypt elt encode encrypt exp export_set extract extractvalue field
  find_in_set first_value floor format format_bytes format_pico_time found_rows from_base64 from_days from_unixtime greatest
  group_concat hex hour if ifnull inet_aton inet_ntoa inet6_aton inet6_ntoa insert instr interval is_free_lock is_ipv4
  is_ipv4_compat is_ipv4_mapped is_ipv6 is_used_lock isnull lastval json_arrayagg json_objectagg lag last_day last_insert_id last_value lcase
  lead least left length ln localtime localtimestamp locate log log10 log2 lower lpad ltrim make_set makedate maketime max md5
  median microsecond mid min minute mod month monthname natural_sort_key now nth_value ntile nullif oct octet_length old_password
  ord percent_rank percentile_cont percentile_disc period_add period_diff pi position pow power quarter quote radians rand rank
  regexp regexp_instr regexp_replace regexp_substr repeat replace reverse right round row_count row_number rpad rtrim schema
  sec_to_time second session_user sformat sha sha1 sha2 sign sin soundex space sqrt std stddev stddev_pop stddev_samp str_to_date
  strcmp subdate substr substring substring_index subtime sum sysdate system_user tan time time_format time_to_sec timediff
  timestamp timestampadd timestampdiff to_base64 to_char to_days to_seconds trim truncate ucase uncompress uncompressed_length
  unhex unix_timestamp updatexml upper user utc_date utc_time utc_timestamp uuid values var_pop var_samp variance version week
  weekday weekofyear weight_string year yearweek column_add column_check column_create column_delete column_exists column_get
  column_json column_list kdf random_bytes sys_guid nvl nvl2 add_months lengthb`.split(/\s+/).filter(Boolean),
);

/**
 * Whether an unqualified name is a built-in Sluice knows (harmless or with known effects). Not every such name is a
 * function of every server version (`format_bytes` is MySQL's, the prefixes match any name): where the session's
 * database has a stored function of that name, the server may call it instead (see mysql-routines.ts).
 */
export function knownBuiltin(name: string): boolean {
  const n = name.toLowerCase();
  if (n.includes('.')) return false;
  return EFFECTS.some(([re]) => re.test(n)) || HARMLESS.has(n) || /^(json_|st_|mbr|geometry|point|linestring|polygon|multi|geomfrom|astext|aswkt|asbinary|aswkb)/.test(n);
}

/** What calling this function does beyond returning a value, or undefined when it only computes one. */
export function functionEffect(name: string): string | undefined {
  const n = name.toLowerCase();
  if (n.includes('.')) return 'is a stored function (Sluice cannot tell what it changes)';
  for (const [re, what] of EFFECTS) if (re.test(n)) return what;
  if (knownBuiltin(n)) return undefined;
  return 'is not a known built-in (a stored function, or one Sluice does not know: it may change data)';
}

/**
 * Statements the parser cannot read that Sluice deliberately does not relay: why, and what to do instead. Matched
 * against the text (comments and leading whitespace stripped) when parsing fails.
 */
export const UNSUPPORTED: [RegExp, string][] = [
  [/^PREPARE\b/i, 'SQL-level PREPARE in this form (dynamic SQL: Sluice cannot see the statement it prepares); use PREPARE name FROM \'<statement>\' or your client\'s prepared statements'],
  [/^EXECUTE\b/i, 'SQL-level EXECUTE of a statement not prepared through Sluice (PREPARE name FROM \'<statement>\' in this session)'],
  [/^SET\s+(CHARACTER\s+SET|CHARSET)\b/i, 'SET CHARACTER SET; use SET NAMES utf8mb4'],
  [/^SET\s+STATEMENT\b/i, 'SET STATEMENT ... FOR (it changes how the server reads the statement it applies to)'],
  [/^SET\s+(PERSIST|PERSIST_ONLY)\b/i, 'SET PERSIST (it changes server settings)'],
  [/^SET\s+(DEFAULT\s+ROLE|PASSWORD)\b/i, 'SET DEFAULT ROLE / SET PASSWORD through Sluice'],
  [/^(XA)\b/i, 'XA transactions (they outlive the session)'],
  [/^(HANDLER)\b/i, 'HANDLER (it reads tables past the statement analysis)'],
  [/^(BINLOG)\b/i, 'BINLOG (it replays binary log events)'],
  [/^(DO)\b/i, 'DO; use SELECT'],
  [/^(SHUTDOWN|RESTART)\b/i, 'SHUTDOWN / RESTART'],
  [/^LOCK\s+TABLES?\b/i, 'this form of LOCK TABLES (Sluice reads `LOCK TABLES t READ|WRITE, ...` with unqualified table names)'],
  [/^LOAD\s+(DATA|XML)\b/i, 'LOAD DATA / LOAD XML'],
  [/\bINTO\s+(OUTFILE|DUMPFILE)\b/i, 'SELECT ... INTO OUTFILE / DUMPFILE (server files)'],
  [/^KILL\b/i, 'this form of KILL (only KILL [QUERY|CONNECTION] <id> of your own Sluice connections)'],
];

/** Why a statement the parser could not read is deliberately unsupported, or undefined (then it is a syntax error). */
export function unsupported(sql: string): string | undefined {
  const text = stripLeadingComments(sql);
  for (const [re, why] of UNSUPPORTED) if (re.test(text)) return why;
  return undefined;
}

function stripLeadingComments(sql: string): string {
  let s = sql;
  for (;;) {
    const t = s.replace(/^\s+/, '');
    if (t.startsWith('/*') && (!/^\/\*(!|M!)/.test(t) || NEVER_RUN.test(t))) s = t.slice(t.indexOf('*/') < 0 ? t.length : t.indexOf('*/') + 2);
    else if (/^(#|--\s)/.test(t)) s = t.slice(t.indexOf('\n') < 0 ? t.length : t.indexOf('\n') + 1);
    else if (/^\/\*(M!|!)\d*/.test(t)) s = t.replace(/^\/\*(M!|!)\d*/, '');
    else return t;
  }
}

/** An executable comment no server runs (version 999999). */
export const NEVER_RUN = /^\/\*M?!999999/;

/**
 * The text as the parser should read it: MariaDB executable comments (`/*M! ... *\/`, `/*M!100100 ... *\/`), which
 * the server runs, become MySQL ones (`/*! ... *\/`), which the parser reads as SQL; `NEXT VALUE FOR s` and
 * `PREVIOUS VALUE FOR s` become NEXTVAL(s) / LASTVAL(s). Lengths are kept (padding with spaces), so positions still
 * match the original. Strings, quoted identifiers and ordinary comments are left alone (MySQL's lexing in the
 * state Sluice keeps sessions in: backslash escapes, `"` strings).
 */
export function forParser(sql: string): string {
  if (!/\/\*M!|\/\*!999999|VALUE\s+FOR/i.test(sql)) return sql;
  let out = '';
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const ch = sql[i]!;
    if (ch === "'" || ch === '"' || ch === '`') {
      let j = i + 1;
      while (j < n) {
        if (sql[j] === '\\' && ch !== '`') j += 2;
        else if (sql[j] === ch) {
          if (sql[j + 1] === ch) j += 2;
          else break;
        } else j++;
      }
      out += sql.slice(i, j + 1);
      i = j + 1;
      continue;
    }
    if (ch === '#' || (ch === '-' && sql[i + 1] === '-' && /[\s\x00-\x1f]/.test(sql[i + 2] ?? '\n'))) {
      const j = sql.indexOf('\n', i);
      const end = j < 0 ? n : j;
      out += sql.slice(i, end);
      i = end;
      continue;
    }
    if (ch === '/' && sql[i + 1] === '*') {
      // Version 999999 is above any server's: MariaDB never runs it (mariadb-dump's `/*M!999999\- enable the sandbox
      // mode *\/` line); every lower version is read as run (over-reading is judged, never hidden).
      const never = NEVER_RUN.test(sql.slice(i, i + 11));
      const m = never ? null : /^\/\*M!(\d*)/.exec(sql.slice(i, i + 12));
      if (m) {
        out += '/*!' + ' '.repeat(m[0].length - 3);
        i += m[0].length;
        continue;
      }
      if (sql[i + 2] === '!' && !never) {
        // Executable: its content is SQL, read on.
        out += '/*!';
        i += 3;
        continue;
      }
      const j = sql.indexOf('*/', i + 2);
      const end = j < 0 ? n : j + 2;
      out += never ? sql.slice(i, end).replace('!', ' ') : sql.slice(i, end);
      i = end;
      continue;
    }
    const m = /[np]/i.test(ch) ? /^(NEXT|PREVIOUS)(\s+)VALUE(\s+)FOR(\s+)((?:`(?:[^`]|``)*`|[\w$]+)(?:\s*\.\s*(?:`(?:[^`]|``)*`|[\w$]+))?)/i.exec(sql.slice(i, i + 300)) : null;
    if (m && (i === 0 || !/[\w$]/.test(sql[i - 1]!))) {
      const call = `${m[1]!.toUpperCase() === 'NEXT' ? 'NEXTVAL' : 'LASTVAL'}(${m[5]})`;
      out += call + ' '.repeat(Math.max(0, m[0].length - call.length));
      i += m[0].length;
      continue;
    }
    out += ch;
    i++;
  }
  return out;
}
