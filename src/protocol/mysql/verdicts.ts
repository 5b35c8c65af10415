import type { GovernorError, Verdict } from '../../governor.js';
import type { Analysis } from '../../analyze/analyze.js';
import { globToRegExp, servedBy } from '../../util/glob.js';
import { errPacket } from './packets.js';

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
export function refusal(analysis: Analysis, statement: number, reason: string): Verdict {
  return {
    analysis,
    decision: { action: 'deny', rule: 'sluice-guard', reason, statement },
    error: { code: '42501', message: `Sluice refuses this statement: ${reason}`, hint: 'The statement was not run; the session is still usable.' },
  };
}
