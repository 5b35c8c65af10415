/**
 * What the statement guard knows about PostgreSQL beyond the grammar: which session settings change how the server
 * reads the bytes of later statements (and which values Sluice can parse under), which settings are ordinary session
 * preferences and which are privileged, which startup parameters may pass, which catalogs hold secrets, and what the
 * built-in functions do besides returning a value.
 *
 * Sluice's parser (libpg-query) reads SQL as PostgreSQL does with `standard_conforming_strings = on` and a client
 * encoding in which every byte below 0x80 is ASCII. The gateway keeps every session in that state: it refuses the
 * statements and startup parameters that would leave it, and ends a session whose server reports anything else.
 */

/** PostgreSQL's clean_encoding_name: lower case, letters and digits only. */
const cleanEncoding = (name: string) => name.toLowerCase().replace(/[^a-z0-9]/g, '');

/**
 * Client encodings in which a byte below 0x80 is always that ASCII character (every server-side encoding), by every
 * name PostgreSQL accepts for them. The client-only encodings (SJIS, BIG5, GBK, UHC, GB18030, JOHAB, Shift JIS 2004)
 * are absent: their second bytes can be `\` or other ASCII, so the server and Sluice would split the text differently.
 */
const SAFE_ENCODINGS = new Set([
  'utf8', 'unicode', 'sqlascii', 'muleinternal', 'euccn', 'eucjp', 'eucjis2004', 'euckr', 'euctw',
  'latin1', 'latin2', 'latin3', 'latin4', 'latin5', 'latin6', 'latin7', 'latin8', 'latin9', 'latin10',
  'iso88591', 'iso88592', 'iso88593', 'iso88594', 'iso88595', 'iso88596', 'iso88597', 'iso88598', 'iso88599',
  'iso885910', 'iso885913', 'iso885914', 'iso885915', 'iso885916',
  'koi8', 'koi8r', 'koi8u', 'win', 'alt', 'abc', 'tcvn', 'tcvn5712', 'vscii',
  'win866', 'win874', 'win1250', 'win1251', 'win1252', 'win1253', 'win1254', 'win1255', 'win1256', 'win1257', 'win1258',
  'windows866', 'windows874', 'windows1250', 'windows1251', 'windows1252', 'windows1253', 'windows1254', 'windows1255',
  'windows1256', 'windows1257', 'windows1258',
]);

export const safeEncoding = (name: string): boolean => SAFE_ENCODINGS.has(cleanEncoding(name));

/** PostgreSQL's parse_bool for the values that mean true (unique prefixes included). */
const TRUE_VALUES = new Set(['on', 'true', 'tru', 'tr', 't', 'yes', 'ye', 'y', '1']);

/** Settings that change how the server reads statement text. */
export const LEXING_SETTINGS = new Set(['standard_conforming_strings', 'client_encoding']);

/**
 * Why a lexing setting may not take this value (undefined: Sluice parses correctly under it). `value` undefined
 * means DEFAULT/RESET: the value the session started with, which the gateway verified at login.
 */
export function lexingRefusal(name: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (name === 'standard_conforming_strings') {
    // A number is refused even when it means on (1): the analysis cache shares one parse between texts that differ
    // only in numeric literals, so `= 1` and `= 0` must get the same answer.
    if (/^[\d.+-]/.test(v)) return `standard_conforming_strings can be set through Sluice only with a word (on, true, yes), not a number`;
    if (TRUE_VALUES.has(v.toLowerCase())) return undefined;
    return `standard_conforming_strings cannot be turned off through Sluice: with it off the server reads backslashes in string literals as escapes, so Sluice could not see which statements a text contains`;
  }
  if (name === 'client_encoding') {
    if (safeEncoding(v) || v.toLowerCase() === 'default') return undefined;
    return `client encoding "${v}" is not allowed through Sluice: in it a multibyte character can end in a backslash or quote, so Sluice and the server would read statements differently; use UTF8`;
  }
  return undefined;
}

/** Session settings any user may change that neither change lexing nor reach beyond the session's own work. */
const ORDINARY_SETTINGS = new Set([
  'datestyle', 'intervalstyle', 'timezone', 'time zone', 'application_name', 'array_nulls', 'backend_flush_after', 'backslash_quote',
  'bytea_output', 'check_function_bodies', 'client_connection_check_interval', 'client_min_messages', 'commit_siblings',
  'constraint_exclusion', 'cpu_index_tuple_cost', 'cpu_operator_cost', 'cpu_tuple_cost', 'cursor_tuple_fraction',
  'default_statistics_target', 'default_table_access_method', 'default_tablespace', 'default_text_search_config',
  'default_toast_compression', 'default_transaction_deferrable', 'default_transaction_isolation',
  'default_transaction_read_only', 'effective_cache_size', 'effective_io_concurrency', 'enable_async_append',
  'enable_bitmapscan', 'enable_gathermerge', 'enable_hashagg', 'enable_hashjoin', 'enable_incremental_sort',
  'enable_indexonlyscan', 'enable_indexscan', 'enable_material', 'enable_memoize', 'enable_mergejoin', 'enable_nestloop',
  'enable_parallel_append', 'enable_parallel_hash', 'enable_partition_pruning', 'enable_partitionwise_aggregate',
  'enable_partitionwise_join', 'enable_seqscan', 'enable_sort', 'enable_tidscan', 'enable_presorted_aggregate',
  'enable_group_by_reordering', 'enable_self_join_elimination', 'enable_distinct_reordering', 'escape_string_warning',
  'extra_float_digits', 'force_parallel_mode', 'debug_parallel_query', 'from_collapse_limit', 'geqo', 'geqo_effort',
  'geqo_generations', 'geqo_pool_size', 'geqo_seed', 'geqo_selection_bias', 'geqo_threshold', 'gin_fuzzy_search_limit',
  'gin_pending_list_limit', 'hash_mem_multiplier', 'idle_in_transaction_session_timeout', 'idle_session_timeout',
  'transaction_timeout', 'jit', 'jit_above_cost', 'jit_expressions', 'jit_inline_above_cost', 'jit_optimize_above_cost',
  'jit_tuple_deforming', 'join_collapse_limit', 'lc_monetary', 'lc_numeric', 'lc_time', 'lock_timeout',
  'log_parameter_max_length_on_error', 'logical_decoding_work_mem', 'maintenance_io_concurrency', 'maintenance_work_mem',
  'max_parallel_maintenance_workers', 'max_parallel_workers', 'max_parallel_workers_per_gather',
  'min_parallel_index_scan_size', 'min_parallel_table_scan_size', 'parallel_leader_participation', 'parallel_setup_cost',
  'parallel_tuple_cost', 'password_encryption', 'plan_cache_mode', 'quote_all_identifiers', 'random_page_cost',
  'recursive_worktable_factor', 'restrict_nonsystem_relation_kind', 'row_security', 'search_path', 'seq_page_cost',
  'statement_timeout', 'stats_fetch_consistency', 'synchronize_seqscans', 'synchronous_commit', 'tcp_keepalives_count',
  'tcp_keepalives_idle', 'tcp_keepalives_interval', 'tcp_user_timeout', 'temp_buffers', 'temp_tablespaces',
  'timezone_abbreviations', 'transaction_deferrable', 'transaction_isolation', 'transaction_read_only',
  'transform_null_equals', 'vacuum_cost_delay', 'vacuum_cost_limit', 'vacuum_cost_page_dirty', 'vacuum_cost_page_hit',
  'vacuum_cost_page_miss', 'vacuum_failsafe_age', 'vacuum_freeze_min_age', 'vacuum_freeze_table_age',
  'vacuum_multixact_failsafe_age', 'vacuum_multixact_freeze_min_age', 'vacuum_multixact_freeze_table_age',
  'vacuum_buffer_usage_limit', 'wal_sender_timeout', 'wal_skip_threshold', 'work_mem', 'xmlbinary', 'xmloption',
  'exit_on_error', 'trace_sort', 'plpgsql.variable_conflict', 'plpgsql.print_strict_params', 'plpgsql.check_asserts',
  'plpgsql.extra_warnings', 'plpgsql.extra_errors',
  // SET TRANSACTION / SET SESSION CHARACTERISTICS parse as these.
  'transaction', 'session characteristics', 'transaction snapshot',
]);

/** Extension prefixes whose settings are superuser-only or reach beyond the session. */
const PRIVILEGED_PREFIXES = ['pg_stat_statements.', 'auto_explain.', 'pg_prewarm.', 'pgaudit.', 'pg_cron.', 'plpgsql.plugin'];

export type SettingKind = 'ordinary' | 'lexing' | 'privileged';

/**
 * How a setting is classified: lexing (checked by value), ordinary (a session preference), or privileged (logging,
 * replication role, library loading, statistics, anything Sluice does not know: fail closed). Custom placeholders
 * (`app.tenant`) are ordinary.
 */
export function settingKind(name: string): SettingKind {
  const n = name.toLowerCase();
  if (LEXING_SETTINGS.has(n)) return 'lexing';
  if (ORDINARY_SETTINGS.has(n)) return 'ordinary';
  if (n.includes('.') && !PRIVILEGED_PREFIXES.some((p) => n.startsWith(p))) return 'ordinary';
  return 'privileged';
}

/**
 * Split a startup `options` value as PostgreSQL does (whitespace separates, backslash escapes the next character)
 * and return its settings, or why it is refused: only `-c name=value` and `--name=value` are accepted.
 */
export function parseStartupOptions(options: string): { settings: [string, string][] } | { error: string } {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  for (let i = 0; i < options.length; i++) {
    const ch = options[i]!;
    if (ch === '\\' && i + 1 < options.length) {
      cur += options[++i];
      inWord = true;
    } else if (/\s/.test(ch)) {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += ch;
      inWord = true;
    }
  }
  if (inWord) words.push(cur);
  const settings: [string, string][] = [];
  const pair = (s: string) => {
    const eq = s.indexOf('=');
    if (eq <= 0) return undefined;
    return [s.slice(0, eq).replace(/-/g, '_'), s.slice(eq + 1)] as [string, string];
  };
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    let p: [string, string] | undefined;
    if (w === '-c') p = words[i + 1] !== undefined ? pair(words[++i]!) : undefined;
    else if (w.startsWith('-c')) p = pair(w.slice(2));
    else if (w.startsWith('--')) p = pair(w.slice(2));
    if (!p) return { error: `startup option "${w}" is not allowed through Sluice (only -c name=value settings are)` };
    settings.push(p);
  }
  return { settings };
}

/** Why a startup parameter (or a setting in `options`) may not pass, or undefined. */
export function startupRefusal(name: string, value: string): string | undefined {
  const n = name.toLowerCase();
  if (n === 'options') {
    const r = parseStartupOptions(value);
    if ('error' in r) return r.error;
    for (const [k, v] of r.settings) {
      const why = startupRefusal(k, v);
      if (why) return why;
    }
    return undefined;
  }
  if (n === 'user' || n === 'database') return undefined;
  const kind = settingKind(n);
  if (kind === 'lexing') return lexingRefusal(n, value);
  if (kind === 'ordinary') return undefined;
  return `startup parameter "${name}" is not allowed through Sluice (it is not an ordinary session setting)`;
}

/** Catalog relations (and functions) whose rows hold secrets or other sessions' activity: `sensitive-catalog`. */
export const SENSITIVE_CATALOGS = new Set([
  'pg_authid', 'pg_shadow', 'pg_user_mapping', 'pg_user_mappings', 'pg_hba_file_rules', 'pg_ident_file_mappings',
  'pg_file_settings', 'pg_statistic', 'pg_statistic_ext_data', 'pg_stats', 'pg_stats_ext', 'pg_stats_ext_exprs',
  'pg_largeobject', 'pg_subscription', 'pg_stat_activity', 'pg_stat_statements', 'pg_stat_statements_info',
  'pg_db_role_setting', 'pg_foreign_server', 'pg_replication_origin_status', 'pg_stat_replication',
  'pg_stat_subscription', 'pg_prepared_xacts',
  // information_schema views over pg_user_mapping / pg_foreign_server that show their options (passwords).
  'user_mapping_options', '_pg_user_mappings', 'foreign_server_options', '_pg_foreign_servers',
  // Other sessions' connections (views over pg_stat_get_activity), and views over functions listed below.
  'pg_stat_ssl', 'pg_stat_gssapi', 'pg_backend_memory_contexts', 'pg_shmem_allocations',
]);
export const SENSITIVE_FUNCTIONS = new Set([
  'pg_hba_file_rules', 'pg_ident_file_mappings', 'pg_show_all_file_settings', 'pg_stat_get_activity', 'pg_stat_statements',
  'pg_read_file', 'pg_read_binary_file', 'pg_read_file_old', 'pg_ls_dir', 'pg_stat_file', 'pg_ls_logdir', 'pg_ls_waldir',
  'pg_ls_tmpdir', 'pg_ls_archive_statusdir', 'pg_ls_logicalmapdir', 'pg_ls_logicalsnapdir', 'pg_ls_replslotdir',
  'pg_current_logfile', 'pg_get_backend_memory_contexts', 'pg_get_shmem_allocations',
  // Per-backend accessors behind pg_stat_activity: other sessions' statements, addresses, users.
  'pg_stat_get_backend_activity', 'pg_stat_get_backend_client_addr', 'pg_stat_get_backend_client_port',
  'pg_stat_get_backend_userid', 'pg_stat_get_backend_wait_event', 'pg_stat_get_backend_wait_event_type',
  'pg_stat_get_backend_activity_start', 'pg_stat_get_backend_xact_start', 'pg_stat_get_backend_start',
  // The function behind pg_prepared_xacts.
  'pg_prepared_xact',
]);

/**
 * Built-in functions that act beyond returning a value: what they do. A statement calling one is not a read
 * (`volatile-function`): sequences, large objects, advisory locks, notifications, statistics resets, WAL and
 * replication control, backups, sleeping on a held connection.
 */
const EFFECTS: [RegExp, string][] = [
  [/^(nextval|setval)$/, 'moves a sequence'],
  [/^(lo_creat|lo_create|lo_from_bytea|lo_import|lo_export|lo_put|lo_truncate|lo_truncate64|lowrite|lo_unlink)$/, 'changes large objects'],
  [/^pg_(try_)?advisory_/, 'takes or releases advisory locks'],
  [/^pg_notify$/, 'sends a notification'],
  [/^pg_logical_emit_message$/, 'writes to the WAL'],
  [/^pg_sleep(_for|_until)?$/, 'holds the connection asleep'],
  // Stable, yet they assign the transaction an ID: a commit record in the WAL, one XID consumed per call.
  [/^(txid_current|pg_current_xact_id)$/, 'assigns a transaction ID (writes to the WAL)'],
  [/^pg_stat_reset/, 'resets statistics'],
  [/^pg_(backup_start|backup_stop|start_backup|stop_backup|create_restore_point|switch_wal|promote|wal_replay_pause|wal_replay_resume)$/, 'controls backups or the WAL'],
  [/^pg_import_system_collations$/, 'creates collations'],
  [/^(brin_summarize_new_values|brin_summarize_range|brin_desummarize_range|gin_clean_pending_list)$/, 'changes an index'],
  [/^pg_(create|drop|copy)_(logical|physical)?_?replication_slot$|^pg_replication_slot_advance$|^pg_logical_slot_(get|peek)_/, 'controls replication slots'],
  [/^pg_replication_origin_/, 'controls replication origins'],
  [/^(pg_reload_conf|pg_rotate_logfile|pg_rotate_logfile_old|pg_log_backend_memory_contexts|pg_cancel_backend|pg_terminate_backend)$/, 'acts on the server or other sessions'],
  [/^(binary_upgrade_|pg_nextoid$|pg_stop_making_pinned_objects$|pg_extension_config_dump$)/, 'changes the system catalogs'],
  [/^dblink/, 'runs SQL on another connection'],
];

/**
 * Volatile built-ins that only read (or touch only the caller's own snapshot or random seed): they leave a
 * statement a read. Every other volatile function does not.
 */
const HARMLESS_VOLATILE = new Set([
  'random', 'random_normal', 'setseed', 'clock_timestamp', 'timeofday', 'gen_random_uuid', 'uuidv4', 'uuidv7', 'currval', 'lastval',
  'current_query', 'currtid2', 'pg_blocking_pids', 'pg_safe_snapshot_blocking_pids', 'pg_isolation_test_session_is_blocked',
  'pg_collation_actual_version', 'pg_database_collation_actual_version', 'pg_control_checkpoint', 'pg_control_init',
  'pg_control_recovery', 'pg_control_system', 'pg_current_wal_flush_lsn', 'pg_current_wal_insert_lsn', 'pg_current_wal_lsn',
  'pg_database_size', 'pg_indexes_size', 'pg_relation_size', 'pg_table_size', 'pg_total_relation_size', 'pg_tablespace_size',
  'pg_get_wal_replay_pause_state', 'pg_get_wal_resource_managers', 'pg_is_in_recovery', 'pg_is_wal_replay_paused',
  'pg_jit_available', 'pg_last_committed_xact', 'pg_last_wal_receive_lsn', 'pg_last_wal_replay_lsn',
  'pg_last_xact_replay_timestamp', 'pg_lock_status', 'pg_get_multixact_members', 'pg_notification_queue_usage',
  'pg_partition_ancestors', 'pg_partition_tree', 'pg_prepared_xact', 'pg_sequence_last_value', 'pg_stat_clear_snapshot',
  'pg_stat_force_next_flush', 'pg_stat_get_recovery_prefetch', 'pg_stat_have_stats', 'pg_xact_commit_timestamp',
  'pg_xact_status', 'txid_status', 'pg_export_snapshot', 'cursor_to_xml', 'cursor_to_xmlschema', 'lo_open', 'lo_close',
  'loread', 'lo_get', 'lo_lseek', 'lo_lseek64', 'lo_tell', 'lo_tell64', 'amvalidate', 'bernoulli', 'system',
  'dsnowball_init', 'dsnowball_lexize', 'pg_get_backend_memory_contexts', 'pg_get_shmem_allocations', 'pg_current_logfile',
  'pg_show_all_file_settings', 'pg_hba_file_rules', 'pg_ident_file_mappings', 'pg_ls_dir', 'pg_ls_logdir', 'pg_ls_waldir',
  'pg_ls_tmpdir', 'pg_ls_archive_statusdir', 'pg_ls_logicalmapdir', 'pg_ls_logicalsnapdir', 'pg_ls_replslotdir',
  'pg_read_file', 'pg_read_binary_file', 'pg_read_file_old', 'pg_stat_file', 'pg_stat_get_activity',
  'plpgsql_call_handler', 'plpgsql_inline_handler', 'plpgsql_validator',
  // Judged by the analyzer like SET (lexing settings refused, privileged ones flagged): not an effect here.
  'set_config',
]);

/** What calling this built-in does beyond returning a value, or undefined. `volatile` is its pg_proc volatility. */
export function builtinEffect(name: string, volatile: boolean): string | undefined {
  const n = name.toLowerCase();
  for (const [re, what] of EFFECTS) if (re.test(n)) return what;
  if (volatile && !HARMLESS_VOLATILE.has(n) && !/_(in|out|recv|send|handler)$/.test(n)) return 'is volatile (Sluice cannot tell what it changes)';
  return undefined;
}

/** Functions that run SQL given to them as text, or read tables named by value: what they see is not in the statement. */
export const DYNAMIC_SQL_FUNCTIONS = new Set([
  'dblink', 'dblink_exec', 'dblink_send_query', 'dblink_open', 'dblink_fetch', 'query_to_xml', 'query_to_xml_and_xmlschema',
  'query_to_xmlschema', 'ts_stat', 'ts_rewrite', 'table_to_xml', 'table_to_xmlschema', 'table_to_xml_and_xmlschema',
  'schema_to_xml', 'schema_to_xmlschema', 'schema_to_xml_and_xmlschema', 'database_to_xml', 'database_to_xmlschema',
  'database_to_xml_and_xmlschema',
]);
