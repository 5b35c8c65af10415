import pg from 'pg';

/** The session's own lexing and replication settings, asked through the gateway after an attempt. */
export const SESSION_STATE_SQL = `SELECT current_setting('standard_conforming_strings') || '|' || current_setting('client_encoding') || '|' || current_setting('session_replication_role') || '|' || current_user AS state`;
export const SESSION_OK = /^on\|UTF8\|origin\|postgres$/;

/**
 * Run adversarial cases (each one or more statements) in one node-postgres session, by the simple protocol or by
 * Parse/Bind/Execute (a statement name forces it), and return every way one got through: not refused (42501 by
 * Sluice's policy or guard, 42601 as SQL Sluice cannot parse, its own refusal or the server's syntax error), the
 * session's lexing state moved, or the database state read by `state` changed.
 */
export async function refusalLeaks(conn: pg.ClientConfig, cases: string[][], mode: 'simple' | 'extended', state: () => Promise<unknown>): Promise<string[]> {
  const before = JSON.stringify(await state());
  const leaks: string[] = [];
  const c = new pg.Client(conn);
  await c.connect();
  try {
    let n = 0;
    for (const steps of cases) {
      const errors: string[] = [];
      for (const s of steps) {
        const e = await c.query(mode === 'simple' ? s : { name: `adv${++n}`, text: s }).then(() => undefined, (err) => err as pg.DatabaseError);
        if (e) errors.push(`${e.code} ${e.message} ${e.hint ?? ''}`);
      }
      const what = steps.join(' ⏎ ');
      // Refused by Sluice, or (text Sluice cannot parse goes upstream with a suffix no server parses) the server's
      // own syntax error: it parses a whole message before running any of it, so nothing ran either way.
      if (!errors.some((e) => /^42501 /.test(e) ? /Sluice/.test(e) : /^42601 /.test(e))) leaks.push(`${what}: not refused (${errors.join('; ') || 'ran'})`);
      const st = (await c.query(SESSION_STATE_SQL)).rows[0].state;
      if (!SESSION_OK.test(st)) leaks.push(`${what}: session state ${st}`);
      const after = JSON.stringify(await state());
      if (after !== before) leaks.push(`${what}: changed ${before} -> ${after}`);
    }
  } finally {
    await c.end();
  }
  return leaks;
}
