import { MyReader, TYPE, binarySize } from './packets.js';

/** What COM_STMT_EXECUTE's parameters need of their prepared statement. */
export interface ExecParams {
  /** Number of parameters. */
  params: number;
  /** Parameter types from the last execute that bound them (the server remembers them too). */
  paramTypes?: number[];
}

export interface DecodedParams {
  values: (string | null)[];
  binary: boolean;
  formats: number[];
  types: number[];
}

/** The parameter types a COM_STMT_EXECUTE binds (the server remembers them for later executions). */
export function rememberParamTypes(p: Buffer, stmt: ExecParams): void {
  if (!stmt.params) return;
  const r = new MyReader(p, 10);
  r.bytes((stmt.params + 7) >> 3);
  if (r.left && r.int1() === 1) {
    stmt.paramTypes = [];
    for (let i = 0; i < stmt.params; i++) stmt.paramTypes.push(r.int2() & 0xff);
  }
}

/** Bind parameters of a COM_STMT_EXECUTE as text (the approval binds them); undecodable ones as hex. */
export function decodeParams(p: Buffer, stmt: ExecParams): DecodedParams | undefined {
  if (!stmt.params) return undefined;
  try {
    const r = new MyReader(p, 10);
    const nulls = r.bytes((stmt.params + 7) >> 3);
    let types = stmt.paramTypes;
    if (r.left && r.int1() === 1) {
      types = [];
      for (let i = 0; i < stmt.params; i++) types.push(r.int2() & 0xff);
    }
    const values: (string | null)[] = [];
    const formats: number[] = [];
    let binary = false;
    for (let i = 0; i < stmt.params; i++) {
      formats.push(0);
      if (nulls[i >> 3]! & (1 << (i & 7))) {
        values.push(null);
        continue;
      }
      const t = types?.[i] ?? TYPE.VAR_STRING;
      switch (t) {
        case TYPE.TINY:
          values.push(String(r.int1()));
          break;
        case TYPE.SHORT:
        case TYPE.YEAR:
          values.push(String(r.int2()));
          break;
        case TYPE.LONG:
        case TYPE.INT24:
          values.push(String(r.bytes(4).readInt32LE()));
          break;
        case TYPE.LONGLONG:
          values.push(r.bytes(8).readBigInt64LE().toString());
          break;
        case TYPE.FLOAT:
          values.push(String(r.bytes(4).readFloatLE()));
          break;
        case TYPE.DOUBLE:
          values.push(String(r.bytes(8).readDoubleLE()));
          break;
        default: {
          if (binarySize(t) === -2) {
            values.push(`\\x${r.bytes(r.int1()).toString('hex')}`);
            formats[i] = 1;
            binary = true;
          } else values.push(r.lenencBytes()?.toString('utf8') ?? null);
        }
      }
    }
    // The approval binds the values with the types the server reads them as (the string '1' is not the integer 1).
    return { values, binary, formats, types: Array.from({ length: stmt.params }, (_, i) => types?.[i] ?? TYPE.VAR_STRING) };
  } catch {
    return { values: [`\\x${p.subarray(10).toString('hex')}`], binary: true, formats: [1], types: [] };
  }
}
