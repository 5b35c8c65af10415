import type { Verdict } from '../../governor.js';
import type { Analysis } from '../../analyze/analyze.js';
import { lexingRefusal, LEXING_SETTINGS } from '../../analyze/guard.js';

/**
 * The session's lexing state: Sluice parses statements as the server reads them only under
 * standard_conforming_strings = on and an ASCII-safe client encoding. Statements that could change that state
 * unseen make later texts that depend on it wait until the server has reported its settings again.
 */

/** Text the server reads differently under another standard_conforming_strings or client encoding. */
const LEXING_SENSITIVE = /[\\\u0080-\uffff]/;
const SETTLED_CLASSES = new Set(['read', 'session', 'transaction']);
const UNSETTLING_FLAGS = new Set(['do-block', 'dynamic-sql', 'volatile-function', 'privileged-function', 'privileged-setting']);

/**
 * Whether running this may change session settings in ways the statement does not show (user code in functions,
 * triggers, DO blocks, cursors and prepared statements run later): the server then reports them only afterwards.
 */
export function mayChangeSettings(a: Analysis | undefined): boolean {
  if (!a) return true;
  return a.classes.some((c) => !SETTLED_CLASSES.has(c)) || a.flags.some((f) => UNSETTLING_FLAGS.has(f)) || a.statements.some((s) => s.cursor?.op === 'fetch' || s.executes !== undefined);
}

/**
 * Why the session cannot go on when the server reports this parameter value: Sluice parses statements as the
 * server reads them only under standard_conforming_strings = on and an ASCII-safe client encoding, and refuses
 * every statement that would leave that state. A server that reports another (a function, trigger or role default
 * changed it) ends the session: fail closed.
 */
export function lexingMismatch(name: string, value: string): string | undefined {
  if (!LEXING_SETTINGS.has(name.toLowerCase())) return undefined;
  const why = lexingRefusal(name.toLowerCase(), value);
  return why && `Sluice ended the session: the server reports ${name} = ${value}. ${why}`;
}

/**
 * A text the server would read differently under other settings (it has a backslash or a non-ASCII character)
 * may not reach the server while a statement that could change those settings unseen is still running: the
 * server reports settings only when it is ready again. It waits for that ('wait') when the running work ends in
 * a Sync or Query already sent; otherwise it cannot be judged ('refuse').
 */
export function settle(sql: string, answered: number, epoch: number, unsettledUntil: number): 'wait' | 'refuse' | undefined {
  if (answered >= unsettledUntil || !LEXING_SENSITIVE.test(sql)) return undefined;
  return epoch >= unsettledUntil ? 'wait' : 'refuse';
}

/** The refusal of a statement that cannot be judged until earlier statements have answered (see settle). */
export function unsettledRefusal(): Verdict {
  const reason = 'the statement has backslashes or non-ASCII characters and follows, before any Sync, a statement that may change how the server reads them';
  return { decision: { action: 'deny', rule: 'sluice-guard', reason }, error: { code: '42501', message: `Sluice refuses this statement: ${reason}`, hint: 'Send Sync before this statement (or run the earlier statement on its own).' } };
}
