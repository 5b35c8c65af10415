import type { Analysis } from '../analyze/analyze.js';
import type { Identity } from '../identity/identity.js';
import type { MaskingPolicy } from '../policy/policy.js';
import { globMatch } from '../util/glob.js';
import { scannable, type ColumnAction, type Field, type MaskPlan } from './rows.js';

/** Column names that hold dates of birth: masked whole when detectors are on (a date alone is not detectable). */
const DOB = /^(dob|date_?of_?birth|birth_?date|birthday)$/i;

export function isExempt(m: MaskingPolicy | undefined, id: Identity): boolean {
  const e = m?.exempt;
  if (!e) return false;
  return !!(e.groups?.some((g) => id.groups.includes(g)) || e.kinds?.includes(id.kind) || e.subjects?.some((s) => globMatch(s, id.subject)));
}

function tableMatches(ruleTable: string, tables: string[]): boolean {
  return tables.some((t) => t === ruleTable || t.endsWith(`.${ruleTable}`) || ruleTable.endsWith(`.${t}`));
}

/**
 * Decide what happens to each column of a result for this identity. Column rules match the result column's name
 * (with `table.column`, only when the statement reads that table). Returns undefined when nothing needs masking,
 * so results pass through untouched.
 */
export function maskPlan(m: MaskingPolicy | undefined, id: Identity, analysis: Analysis | undefined, fields: Field[], key: Buffer): MaskPlan | undefined {
  if (isExempt(m, id)) return undefined;
  const detectors = m?.detectors !== false;
  const tables = analysis?.tables ?? [];
  const rules = (m?.columns ?? []).filter((r) => (!r.groups || r.groups.some((g) => id.groups.includes(g))) && (!r.kinds || r.kinds.includes(id.kind)));
  let any = false;
  const columns: ColumnAction[] = fields.map((f) => {
    const name = f.name.toLowerCase();
    for (const r of rules) {
      const dot = r.column.lastIndexOf('.');
      const col = (dot >= 0 ? r.column.slice(dot + 1) : r.column).toLowerCase();
      if (col !== name) continue;
      if (dot >= 0 && !tableMatches(r.column.slice(0, dot), tables)) continue;
      any = true;
      return { kind: 'rule', masker: r.masker, label: r.column };
    }
    if (detectors && DOB.test(f.name)) {
      any = true;
      return { kind: 'rule', masker: 'redact', label: 'date_of_birth' };
    }
    if (detectors && scannable(f)) {
      any = true;
      return { kind: 'scan' };
    }
    return { kind: 'pass' };
  });
  return any ? { columns, key } : undefined;
}
