import type { Analysis } from '../analyze/analyze.js';
import type { Identity } from '../identity/identity.js';
import type { MaskingPolicy, MaskRule } from '../policy/policy.js';
import { globMatch } from '../util/glob.js';
import type { MaskerName } from './maskers.js';
import { binaryNumber, scannable, type ColumnAction, type Field, type MaskPlan } from './values.js';
import { outputRefs, VIEW_COMMAND } from './views.js';

/** How a rule is named in audit: its column, and its classification label when it came from one. */
const ruleLabel = (r: MaskRule) => (r.label ? `${r.label}:${r.column}` : r.column!);

/** json and jsonb results must stay valid JSON when masked whole. */
const isJson = (f: Field) => f.typeOid === 114 || f.typeOid === 3802;

/** Column names that hold dates of birth: masked whole when detectors are on (a date alone is not detectable). */
const DOB = /^(dob|date_?of_?birth|birth_?date|birthday)$/i;

/**
 * Column names that hold personal data by convention. With the detectors on, values in such columns are found by
 * scanning; an expression can transform them past any scan (reverse(email), hex(card)), so a statement touching one
 * masks its computed outputs like a ruled column would.
 */
const PII_NAME = /^(e_?mail(_?address)?|phone(_?number)?|mobile(_?number)?|tel(ephone)?|ssn|social_?security(_?number)?|tax_?id|national_?id|card(_?number)?|credit_?card(_?number)?|cc_?number|pan|iban|account_?number|passport(_?number)?|password|passwd|secret|api_?key|access_?token|token|ip(_?address)?)$/i;
const sensitiveName = (c: string) => DOB.test(c) || PII_NAME.test(c);

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

/** Where a result column comes from when it is a table's column as is (RowDescription's table OID and attnum). */
export type ColumnOrigin = (tableOid: number, attnum: number) => { table: string; column: string } | undefined;

/** Types whose text a masker's output can stand in for; any other masked value becomes NULL (still valid). */
const TEXT_TYPES = new Set([25, 1043, 1042, 19, 114, 3802, 705, 142, 0]);
/** Binary formats that are the text itself (jsonb's binary form has a version byte first, so it is not). */
const TEXT_BINARY = new Set([25, 1043, 1042, 19, 114, 705, 142]);

/** `table.column` (table maybe schema-qualified or `(subquery s)`) or `column`, as [table, column]. */
function splitRef(ref: string): [string | undefined, string] {
  const dot = ref.lastIndexOf('.');
  return dot >= 0 ? [ref.slice(0, dot), ref.slice(dot + 1)] : [undefined, ref];
}

/** A masker applied to a value computed from a masked column: one that could reveal part of it becomes redact. */
const derivedMasker = (r: MaskRule | undefined): MaskerName => (r?.masker === 'hash' || r?.masker === 'null' ? r.masker : 'redact');

/**
 * Decide what happens to each column of a result for this identity. Column rules match the result column's name
 * (with `table.column`, only when the statement reads that table) and, through `origin`, the table column a result
 * column is as is. When the statement touches a masked column anywhere (or a whole row of a table), every computed
 * column is masked too unless it provably reads only unmasked columns of tables read directly, or is a count():
 * taint, so no expression can carry a masked value out. Returns undefined when nothing needs masking.
 */
export function maskPlan(m: MaskingPolicy | undefined, id: Identity, analysis: Analysis | undefined, fields: Field[], key: Buffer, origin?: ColumnOrigin, opts: { taintAll?: boolean } = {}): MaskPlan | undefined {
  if (isExempt(m, id)) return undefined;
  const detectors = m?.detectors !== false;
  const tables = analysis?.tables ?? [];
  const rules = rulesFor(m, id);
  // Output name -> columns its expression reads (union over statements: conservative when names repeat).
  const derived = outputRefs(analysis?.statements ?? []);
  // Output names that are bare renames of a column everywhere they occur keep the column's own masker.
  const renames = new Set<string>();
  const computed = new Set<string>();
  for (const st of analysis?.statements ?? []) for (const o of st.outputs ?? []) (o.plain ? renames : computed).add(o.name.toLowerCase());
  // A column reached through a subquery or CTE could come from any table the statement reads.
  const ruleFor = (column: string, table?: string) => rules.find((r) => ruleNames(r, column, table && !table.startsWith('(subquery') && tables.includes(table) ? [table] : tables));
  const dob = (column: string) => detectors && DOB.test(column);
  // Results whose statement Sluice did not see (a cursor opened by a function) are taken to touch masked columns.
  const taint = statementTaint(analysis, rules, ruleFor, (c) => detectors && sensitiveName(c)) ?? (opts.taintAll && (rules.length || detectors) ? { masker: 'redact' as MaskerName, label: 'unknown source' } : undefined);
  // The one statement whose outputs are these columns, by position (not with several statements, stars or set operations).
  const own = analysis?.statements.filter((st) => st.command !== VIEW_COMMAND);
  const outputs = own?.length === 1 && own[0]!.outputs?.length === fields.length ? own[0]!.outputs : undefined;
  let any = false;
  const rule = (f: Field, masker: MaskerName, label: string): ColumnAction => {
    any = true;
    const asText = TEXT_TYPES.has(f.typeOid) && (f.format === 0 || TEXT_BINARY.has(f.typeOid));
    return { kind: 'rule', masker: asText ? masker : 'null', label, json: isJson(f) };
  };
  const columns: ColumnAction[] = fields.map((f, i) => {
    const name = f.name.toLowerCase();
    const direct = ruleFor(name);
    if (direct) return rule(f, direct.masker, ruleLabel(direct));
    if (dob(f.name)) return rule(f, 'redact', 'date_of_birth');
    const asIs = f.origin !== undefined || f.tableOid !== 0;
    if (asIs) {
      // A table's column as is: its origin names it exactly, whatever alias or subquery it came through.
      const o = f.origin ?? origin?.(f.tableOid, f.attnum);
      if (o) {
        const r = rules.find((x) => ruleNames(x, o.column, [o.table]));
        if (r) return rule(f, r.masker, ruleLabel(r));
        if (dob(o.column)) return rule(f, 'redact', 'date_of_birth');
      } else if (taint) return rule(f, taint.masker, `${taint.label} (derived)`);
    }
    const out = outputs?.[i];
    // count() reveals no value of what it counts.
    if (out?.count && !asIs) return { kind: 'pass' };
    // An expression over a ruled column (upper(email), email || '', row_to_json(t), string_agg(ssn, ',')) is
    // masked like the column itself; a whole row that contains one is redacted. When in doubt, mask.
    for (const ref of derived.get(name) ?? []) {
      const [table, col] = splitRef(ref);
      const r = ruleFor(col, table);
      if (r || dob(col)) {
        const masker = col === '*' ? 'redact' : r && renames.has(name) && !computed.has(name) ? r.masker : derivedMasker(r);
        return rule(f, masker, r ? `${ruleLabel(r)} (derived)` : 'date_of_birth (derived)');
      }
    }
    if (taint && !asIs) {
      const unmasked = (ref: string) => {
        const [table, col] = splitRef(ref);
        return !ruleFor(col, table) && !(detectors && sensitiveName(col));
      };
      const clean = out?.simple && out.refs.every(unmasked);
      if (!clean) return rule(f, taint.masker, `${taint.label} (derived)`);
    }
    if (detectors && scannable(f)) {
      any = true;
      // float8 as text: its digits are scanned as the number they are (see floatText).
      return TEXT_TYPES.has(f.typeOid) ? { kind: 'scan' } : f.typeOid === 701 ? { kind: 'scan', floatText: true, nullOnHit: true } : { kind: 'scan', nullOnHit: true };
    }
    if (detectors && binaryNumber(f)) {
      // Its text form is scanned (a card number in a bigint or numeric column); a hit makes it NULL.
      any = true;
      return { kind: 'scan', binaryNumber: f.typeOid };
    }
    return { kind: 'pass' };
  });
  return any ? { columns, key } : undefined;
}

/** Whether the statement touches a column this identity sees masked (see statementTaint). */
export function maskTaint(m: MaskingPolicy | undefined, id: Identity, analysis: Analysis, opts: { byName?: boolean } = {}): string | undefined {
  if (isExempt(m, id)) return undefined;
  const rules = rulesFor(m, id);
  const ruleFor = (column: string) => rules.find((r) => ruleNames(r, column, analysis.tables));
  const byName = opts.byName !== false;
  return statementTaint(analysis, rules, ruleFor, (c) => m?.detectors !== false && (byName ? sensitiveName(c) : DOB.test(c)))?.label;
}

/**
 * Whether a statement touches a masked column anywhere (any clause, subquery, CTE, function argument), or a whole
 * row or star of a table while column rules apply: then any computed output may carry a masked value. Returns the
 * masker for such outputs and the rule it comes from.
 */
function statementTaint(analysis: Analysis | undefined, rules: MaskRule[], ruleFor: (column: string, table?: string) => MaskRule | undefined, named: (c: string) => boolean): { masker: MaskerName; label: string } | undefined {
  if (!analysis) return undefined;
  let found: { masker: MaskerName; label: string } | undefined;
  for (const st of analysis.statements) {
    for (const ref of st.columns) {
      const col = ref.slice(ref.lastIndexOf('.') + 1);
      const r = col === '*' ? undefined : ruleFor(col);
      if (r) {
        const masker = derivedMasker(r);
        if (!found || masker === 'null' || (masker === 'redact' && found.masker === 'hash')) found = { masker, label: ruleLabel(r) };
      } else if (named(col) && !found) found = { masker: 'redact', label: DOB.test(col) ? 'date_of_birth' : `${col.toLowerCase()} (by name)` };
    }
    const mayHold = rules.some((r) => !r.column?.includes('.') || tableMatches(r.column.slice(0, r.column.lastIndexOf('.')), analysis.tables));
    if (st.wholeRow && mayHold && !found) found = { masker: 'redact', label: 'whole row' };
  }
  return found;
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
    for (const ref of st.uses ?? st.filterColumns ?? []) {
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
