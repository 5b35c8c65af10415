import fs from 'node:fs';
import { parseDocument, LineCounter, isMap, isPair, isScalar, type Document, type Node as YNode } from 'yaml';
import { Ajv, type ErrorObject, type AnySchema } from 'ajv';

/** A configuration problem with its exact location: "file:line:col: message". */
export class ConfigError extends Error {
  constructor(readonly file: string, readonly line: number, readonly col: number, readonly reason: string) {
    super(`${file}:${line}:${col}: ${reason}`);
    this.name = 'ConfigError';
  }
}

const ajv = new Ajv({ allErrors: false, strict: true, useDefaults: true, allowUnionTypes: true });
const compiled = new WeakMap<object, ReturnType<typeof ajv.compile>>();

function locate(doc: Document, lc: LineCounter, path: (string | number)[], key?: string): { line: number; col: number } {
  let node: unknown = path.length ? doc.getIn(path, true) : doc.contents;
  // For "unknown property" errors point at the offending key itself.
  if (key !== undefined && isMap(node)) {
    const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === key);
    if (pair && isScalar(pair.key)) node = pair.key;
  }
  // Walk up until we find a node with a source range (missing values have none).
  while (!(node as YNode | undefined)?.range && path.length) {
    path = path.slice(0, -1);
    node = path.length ? doc.getIn(path, true) : doc.contents;
  }
  const offset = (node as YNode | undefined)?.range?.[0] ?? 0;
  const pos = lc.linePos(offset);
  return { line: pos.line, col: pos.col };
}

function describe(e: ErrorObject): { message: string; key?: string } {
  const where = e.instancePath ? e.instancePath.slice(1).replace(/\//g, '.') : 'document';
  switch (e.keyword) {
    case 'additionalProperties':
      return { message: `unknown key "${e.params.additionalProperty}" in ${where}`, key: String(e.params.additionalProperty) };
    case 'required':
      return { message: `${where} is missing required key "${e.params.missingProperty}"` };
    case 'enum':
      return { message: `${where} must be one of: ${(e.params.allowedValues as unknown[]).join(', ')}` };
    case 'type':
      return { message: `${where} must be ${e.params.type}` };
    default:
      return { message: `${where} ${e.message ?? 'is invalid'}` };
  }
}

/** Parse YAML text and validate it against a JSON schema; every problem is reported with file:line:col. */
export interface ParsedYaml<T> {
  value: T;
  /** `file:line:col` of a path in the document (its nearest located ancestor). */
  locate: (path: (string | number)[]) => string;
  /** A ConfigError located at a path, for checks beyond the schema. */
  fail: (path: (string | number)[], reason: string) => ConfigError;
}

export function parseYamlWithSchema<T>(file: string, text: string, schema: AnySchema): ParsedYaml<T> {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length) {
    const err = doc.errors[0]!;
    const pos = lc.linePos(err.pos[0]);
    throw new ConfigError(file, pos.line, pos.col, err.message.split('\n')[0]!);
  }
  const value = doc.toJS({ maxAliasCount: 100 }) ?? {};
  let validate = compiled.get(schema as object);
  if (!validate) {
    validate = ajv.compile(schema);
    compiled.set(schema as object, validate);
  }
  if (!validate(value)) {
    const e = validate.errors![0]!;
    const path = e.instancePath
      .split('/')
      .slice(1)
      .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
      .map((p) => (/^\d+$/.test(p) ? Number(p) : p));
    const d = describe(e);
    const pos = locate(doc, lc, path, d.key);
    throw new ConfigError(file, pos.line, pos.col, d.message);
  }
  return {
    value: value as T,
    locate: (path) => {
      const pos = locate(doc, lc, path);
      return `${file}:${pos.line}:${pos.col}`;
    },
    fail: (path, reason) => {
      const pos = locate(doc, lc, path);
      return new ConfigError(file, pos.line, pos.col, reason);
    },
  };
}

export function readYamlWithSchema<T>(file: string, schema: AnySchema) {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(file, 0, 0, `cannot read file: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return parseYamlWithSchema<T>(file, text, schema);
}
