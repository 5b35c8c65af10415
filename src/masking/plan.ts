import type { Analysis } from '../analyze/analyze.js';
import type { Identity } from '../identity/identity.js';
import type { MaskingPolicy, MaskRule } from '../policy/policy.js';
import { globMatch } from '../util/glob.js';
import { scannable, type ColumnAction, type Field, type MaskPlan } from './rows.js';
import { outputRefs, VIEW_COMMAND } from './views.js';

/** How a rule is named in audit: its column, and its classification label when it came from one. */
const ruleLabel = (r: MaskRule) => (r.label ? `${r.label}:${r.column}` : r.column!);

/** json and jsonb results must stay valid JSON when masked whole. */
const isJson = (f: Field) => f.typeOid === 114 || f.typeOid === 3802;

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

/** The column rules that apply to this identity (by group and kind). */
const rulesFor = (m: MaskingPolicy | undefined, id: Identity): MaskRule[] =>
  (m?.columns ?? []).filter((r) => (!r.groups || r.groups.some((g) => id.groups.includes(g))) && (!r.kinds || r.kinds.includes(id.kind)));

/** Whether a rule names this column (`*`, a whole row, matches any); a `table.column` rule also needs its table in `tables`. */
function ruleNames(r: MaskRule, column: string, tables: string[]): boolean {
  const rc = r.column!;
  const dot = rc.lastIndexOf('.');
  const col = (dot >= 0 ? rc.slice(dot + 1) : rc).toLowerCase();
  if (col !== column.toLowerCase() && column !== '*') return false;
  return dot < 0 || tableMatches(rc.slice(0, dot), tables);
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
  const rules = rulesFor(m, id);
  // Output name -> columns its expression reads (union over statements: conservative when names repeat).
  const derived = outputRefs(analysis?.statements ?? []);
  // A column reached through a subquery or CTE could come from any table the statement reads.
  const ruleFor = (column: string, table?: string) => rules.find((r) => ruleNames(r, column, table && !table.startsWith('(subquery') && tables.includes(table) ? [table] : tables));
  let any = false;
  const columns: ColumnAction[] = fields.map((f) => {
    const name = f.name.toLowerCase();
    const direct = ruleFor(name);
    if (direct) {
      any = true;
      return { kind: 'rule', masker: direct.masker, label: ruleLabel(direct), json: isJson(f) };
    }
    if (detectors && DOB.test(f.name)) {
      any = true;
      return { kind: 'rule', masker: 'redact', label: 'date_of_birth', json: isJson(f) };
    }
    // An expression over a ruled column (upper(email), email || '', row_to_json(t), string_agg(ssn, ',')) is
    // masked like the column itself; a whole row that contains one is redacted. When in doubt, mask.
    for (const ref of derived.get(name) ?? []) {
      const dot = ref.lastIndexOf('.');
      const col = dot >= 0 ? ref.slice(dot + 1) : ref;
      const r = ruleFor(col, dot >= 0 ? ref.slice(0, dot) : undefined);
      if (r || (detectors && DOB.test(col))) {
        any = true;
        const label = r ? `${ruleLabel(r)} (derived)` : 'date_of_birth (derived)';
        return { kind: 'rule', masker: col === '*' || !r ? 'redact' : r.masker, label, json: isJson(f) };
      }
    }

    if (detectors && scannable(f)) {
      any = true;
      return { kind: 'scan' };
    }
    return { kind: 'pass' };
  });
  return any ? { columns, key } : undefined;
}

/**
 * The inference guard: the first column this identity sees masked by a rule (or as a date of birth) that the
 * statement uses in WHERE / JOIN / ORDER BY / GROUP BY / HAVING, if the policy enables the guard.
 */
export function guardedColumn(m: MaskingPolicy | undefined, id: Identity, analysis: Analysis): { column: string; rule: string } | undefined {
  if (!m?.inference_guard || isExempt(m, id)) return undefined;
  const rules = rulesFor(m, id);
  // A filter on a view's column filters on what that column is computed from (see masking/views.ts).
  const derived = outputRefs(analysis.statements.filter((st) => st.command === VIEW_COMMAND));
  const check = (ref: string, tables: string[]): string | undefined => {
    const col = ref.slice(ref.lastIndexOf('.') + 1).toLowerCase();
    const r = col === '*' ? undefined : rules.find((x) => ruleNames(x, col, tables));
    if (r) return ruleLabel(r);
    if (m.detectors !== false && DOB.test(col)) return 'date_of_birth';
    return undefined;
  };
  for (const st of analysis.statements) {
    const tables = st.tables.map((t) => t.name);
    for (const ref of st.filterColumns) {
      const direct = check(ref, tables);
      if (direct) return { column: ref, rule: direct };
      for (const via of derived.get(ref.slice(ref.lastIndexOf('.') + 1).toLowerCase()) ?? []) {
        const r = check(via, analysis.tables);
        if (r) return { column: ref, rule: `${r} (through ${via})` };
      }
    }
  }
  return undefined;
}
