import { readYamlWithSchema, parseYamlWithSchema, type ParsedYaml } from '../util/yamlfile.js';
import { globMatch } from '../util/glob.js';
import { FLAGS, STATEMENT_CLASSES, type Analysis, type StatementInfo } from '../analyze/analyze.js';
import { IDENTITY_KINDS, type Identity } from '../identity/identity.js';
import { MASKERS, type MaskerName } from '../masking/maskers.js';

export const ACTIONS = ['allow', 'deny', 'require_approval'] as const;
export type Action = (typeof ACTIONS)[number];

export interface RuleMatch {
  subjects?: string[];
  groups?: string[];
  kinds?: Identity['kind'][];
  databases?: string[];
  statements?: (typeof STATEMENT_CLASSES)[number][];
  commands?: string[];
  tables?: string[];
  only_tables?: string[];
  destructive?: boolean;
  flags?: (typeof FLAGS)[number][];
}
/** How a `require_approval` rule is reviewed. */
export interface ApprovalSpec {
  /** Groups whose members may approve (default: anyone with the API approver or admin role). */
  approvers?: string[];
  /** Distinct approvers needed (default 1). */
  quorum?: number;
  /** Seconds the client's statement waits for a decision before it fails (default: the gateway's setting). */
  timeout_s?: number;
  /** Agents (and any identity acting for someone) may approve this rule's requests (default false). */
  agents_may_approve?: boolean;
}
export interface Rule {
  name: string;
  description?: string;
  match?: RuleMatch;
  action: Action;
  reason?: string;
  approval?: ApprovalSpec;
  /** false: an approved just-in-time grant does not override this rule (default true). */
  grants?: boolean;
  /** file:line of the rule, for error messages and audit. */
  source?: string;
}
export interface MaskRule {
  /** `column` or `table.column` (table may be schema-qualified); matched against result column names. */
  column?: string;
  /** Or a classification label from `masking.labels`: the rule covers every column carrying it. */
  label?: string;
  masker: MaskerName;
  /** Limit the rule to these identities (default: everyone not exempt). */
  groups?: string[];
  kinds?: Identity['kind'][];
}
export interface MaskingPolicy {
  /** Zero-configuration value detectors on every text cell (default on). */
  detectors?: boolean;
  /** Identities that see cleartext; every statement they run is audited as exempt. */
  exempt?: { groups?: string[]; kinds?: Identity['kind'][]; subjects?: string[] };
  columns?: MaskRule[];
  /** Classification labels: label -> columns (`table.column` or `column`), used by rules with `label:`. */
  labels?: Record<string, string[]>;
  /**
   * Refuse statements that filter, join, sort or group on a column the identity only sees masked (stops probing
   * such as `WHERE ssn LIKE '1%'`).
   */
  inference_guard?: boolean;
}
export interface Policy {
  version: 1;
  default: Action;
  default_reason?: string;
  rules: Rule[];
  masking?: MaskingPolicy;
  file?: string;
}

const stringList = { type: 'array', items: { type: 'string', minLength: 1 }, minItems: 1 } as const;
export const POLICY_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['version', 'rules'],
  properties: {
    version: { const: 1 },
    default: { enum: [...ACTIONS] },
    default_reason: { type: 'string' },
    masking: {
      type: 'object',
      additionalProperties: false,
      properties: {
        detectors: { type: 'boolean' },
        inference_guard: { type: 'boolean' },
        labels: { type: 'object', additionalProperties: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } } },
        exempt: {
          type: 'object',
          additionalProperties: false,
          properties: { groups: stringList, subjects: stringList, kinds: { type: 'array', minItems: 1, items: { enum: [...IDENTITY_KINDS] } } },
        },
        columns: {
          type: 'array',
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['masker'],
            properties: {
              column: { type: 'string', minLength: 1 },
              label: { type: 'string', minLength: 1 },
              // YAML reads a bare `null` as null: accepted as the null masker.
              masker: { enum: [...MASKERS, null] },
              groups: stringList,
              kinds: { type: 'array', minItems: 1, items: { enum: [...IDENTITY_KINDS] } },
            },
          },
        },
      },
    },
    rules: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'action'],
        properties: {
          name: { type: 'string', minLength: 1, pattern: '^[A-Za-z0-9_.:-]+$' },
          description: { type: 'string' },
          action: { enum: [...ACTIONS] },
          reason: { type: 'string' },
          grants: { type: 'boolean' },
          approval: {
            type: 'object',
            additionalProperties: false,
            properties: {
              approvers: stringList,
              quorum: { type: 'integer', minimum: 1, maximum: 10 },
              timeout_s: { type: 'integer', minimum: 1, maximum: 86400 },
              agents_may_approve: { type: 'boolean' },
            },
          },
          match: {
            type: 'object',
            additionalProperties: false,
            properties: {
              subjects: stringList,
              groups: stringList,
              kinds: { type: 'array', minItems: 1, items: { enum: [...IDENTITY_KINDS] } },
              databases: stringList,
              statements: { type: 'array', minItems: 1, items: { enum: [...STATEMENT_CLASSES] } },
              commands: stringList,
              tables: stringList,
              only_tables: stringList,
              destructive: { type: 'boolean' },
              flags: { type: 'array', minItems: 1, items: { enum: [...FLAGS] } },
            },
          },
        },
      },
    },
  },
} as const;

/**
 * Rules written with `label:` become one rule per labelled column (label kept for audit); an unknown label is an
 * error at its file:line.
 */
function expandLabels(value: Policy, fail: ParsedYaml<Policy>['fail']): void {
  const m = value.masking;
  if (!m?.columns) return;
  m.columns = m.columns.flatMap((raw, i) => {
    const r = { ...raw, masker: raw.masker ?? 'null' };
    if (!r.column === !r.label) {
      throw fail(['masking', 'columns', i], `masking.columns.${i} needs exactly one of "column" or "label"`);
    }
    if (!r.label) return [r];
    const cols = m.labels?.[r.label];
    if (!cols) {
      throw fail(['masking', 'columns', i, 'label'], `unknown classification label "${r.label}" (define it under masking.labels)`);
    }
    return cols.map((column) => ({ ...r, column, label: r.label }));
  });
}

function finish(file: string, { value, locate, fail }: ParsedYaml<Policy>): Policy {
  expandLabels(value, fail);
  const seen = new Map<string, string>();
  value.rules.forEach((r, i) => {
    r.source = locate(['rules', i]);
    const prev = seen.get(r.name);
    if (prev) throw fail(['rules', i], `duplicate rule name "${r.name}" (first defined at ${prev})`);
    if (r.approval && r.action !== 'require_approval') throw fail(['rules', i, 'approval'], `rule "${r.name}": "approval" only applies to action require_approval`);
    seen.set(r.name, r.source);
  });
  return { ...value, default: value.default ?? 'deny', file };
}

export function loadPolicy(file: string): Policy {
  return finish(file, readYamlWithSchema<Policy>(file, POLICY_SCHEMA));
}
export function parsePolicy(file: string, text: string): Policy {
  return finish(file, parseYamlWithSchema<Policy>(file, text, POLICY_SCHEMA));
}

/** A table pattern `schema.name` also matches an unqualified reference to `name` (search_path is not known). */
function tableMatches(pattern: string, table: string): boolean {
  if (globMatch(pattern, table)) return true;
  const dot = table.indexOf('.');
  if (dot < 0 && pattern.includes('.')) return globMatch(pattern.slice(pattern.lastIndexOf('.') + 1), table);
  if (dot >= 0 && !pattern.includes('.')) return globMatch(pattern, table.slice(table.lastIndexOf('.') + 1));
  return false;
}

export interface EvalContext {
  identity: Identity;
  database: string;
  /**
   * MySQL: a qualified table name `db.table` names another database, so a rule limited to `databases` only
   * matches statements whose qualified tables are all in those databases too.
   */
  qualifiedIsDatabase?: boolean;
}

function identityMatches(m: RuleMatch, ctx: EvalContext): boolean {
  if (m.subjects && !m.subjects.some((g) => globMatch(g, ctx.identity.subject))) return false;
  if (m.groups && !m.groups.some((g) => ctx.identity.groups.includes(g))) return false;
  if (m.kinds && !m.kinds.includes(ctx.identity.kind)) return false;
  if (m.databases && !m.databases.some((g) => globMatch(g, ctx.database))) return false;
  return true;
}

function statementMatches(m: RuleMatch, s: StatementInfo): boolean {
  if (m.statements && !m.statements.includes(s.class)) return false;
  if (m.commands && !m.commands.some((c) => c.toUpperCase() === s.command)) return false;
  if (m.destructive !== undefined && m.destructive !== s.destructive.length > 0) return false;
  if (m.flags && !m.flags.some((f) => s.flags.includes(f))) return false;
  if (m.tables && !s.tables.some((t) => m.tables!.some((p) => tableMatches(p, t.name)))) return false;
  if (m.only_tables && (s.tables.length === 0 || !s.tables.every((t) => m.only_tables!.some((p) => tableMatches(p, t.name))))) return false;
  return true;
}

/** Every database a statement names through `db.table` is one the rule's `databases` allows. */
function databasesCover(m: RuleMatch, s: StatementInfo): boolean {
  if (!m.databases) return true;
  return s.tables.every((t) => {
    const dot = t.name.lastIndexOf('.');
    return dot < 0 || m.databases!.some((g) => globMatch(g, t.name.slice(0, dot)));
  });
}

export interface Decision {
  action: Action;
  /** Name of the deciding rule, or "default". */
  rule: string;
  reason: string;
  /** Index of the statement that decided a denial. */
  statement?: number;
  /** require_approval: how it is reviewed. */
  approval?: ApprovalSpec;
  /** false when a just-in-time grant may not override this decision. */
  grants?: boolean;
}

const SEVERITY: Record<Action, number> = { allow: 0, require_approval: 1, deny: 2 };

/**
 * First matching rule wins, per statement. A message is allowed only when every statement in it is allowed;
 * otherwise the first denied statement decides it, else the first one that needs approval.
 */
export function evaluate(policy: Policy, ctx: EvalContext, analysis: Analysis): Decision {
  const rules = policy.rules.filter((r) => !r.match || identityMatches(r.match, ctx));
  let allowed: Decision | undefined;
  analysis.statements.forEach((raw, i) => {
    if (allowed?.action === 'deny') return;
    // "multi-statement" describes the message, so every statement in such a message carries it for matching.
    const s: StatementInfo = analysis.statements.length > 1 ? { ...raw, flags: [...raw.flags, 'multi-statement'] } : raw;
    const rule = rules.find((r) => !r.match || (statementMatches(r.match, s) && (!ctx.qualifiedIsDatabase || databasesCover(r.match, s))));
    const d: Decision = rule
      ? { action: rule.action, rule: rule.name, reason: rule.reason ?? rule.description ?? '', statement: i, approval: rule.approval, grants: rule.grants }
      : { action: policy.default, rule: 'default', reason: policy.default_reason ?? 'no policy rule allows this statement', statement: i };
    if (!allowed || SEVERITY[d.action] > SEVERITY[allowed.action]) allowed = d;
  });
  return allowed ?? { action: 'allow', rule: 'empty', reason: 'empty query' };
}
