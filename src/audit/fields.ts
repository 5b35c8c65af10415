import type { Analysis } from '../analyze/analyze.js';
import type { Identity } from '../identity/identity.js';
import type { AuditEvent } from './audit.js';

/** Per cached analysis: its audit fields, and the same as JSON members once a statement event needed them. */
const cache = new WeakMap<Analysis, { fields: Partial<AuditEvent>; json?: string }>();

const cached = (a: Analysis) => {
  let c = cache.get(a);
  if (!c) cache.set(a, (c = { fields: computeAnalysisFields(a) }));
  return c;
};

/** Audit fields describing an analysis (computed once per cached analysis: this runs for every statement). */
export function analysisFields(a: Analysis | undefined): Partial<AuditEvent> {
  return a ? cached(a).fields : {};
}

/** The members of an object's JSON, without the braces ('' for none): a part of a payload built by concatenation. */
export const jsonMembers = (o: object): string => JSON.stringify(o).slice(1, -1);

/** analysisFields(a) as JSON members (see jsonMembers), computed once per cached analysis. */
export function analysisJson(a: Analysis): string {
  const c = cached(a);
  return (c.json ??= jsonMembers(c.fields));
}

/** What the functions a statement calls do beyond their result (from the catalog), when anything. */
function effectsOf(a: Analysis): string[] | undefined {
  const e = a.statements.flatMap((s) => s.effects ?? []);
  return e.length ? [...new Set(e)] : undefined;
}

function computeAnalysisFields(a: Analysis): Partial<AuditEvent> {
  return {
    fingerprint: a.fingerprint || undefined,
    classes: a.classes,
    commands: a.statements.map((s) => s.command),
    tables: a.tables,
    columns: [...new Set(a.statements.flatMap((s) => s.columns))].slice(0, 200),
    destructive: a.destructive.length ? a.destructive : undefined,
    flags: a.flags.length ? a.flags : undefined,
    effects: effectsOf(a),
    statements: a.statements.length,
  };
}

export function identityFields(id: Identity): Partial<AuditEvent> {
  return {
    subject: id.subject,
    identity_kind: id.kind,
    display_name: id.displayName,
    groups: id.groups,
    acting_for: id.actingFor,
    auth_method: id.method,
    key_id: id.keyId,
  };
}
