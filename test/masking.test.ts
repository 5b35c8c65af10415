import { describe, it, expect } from 'vitest';
import fs from 'node:fs';
import { detect, luhnValid, ibanValid, mayContainSensitive } from '../src/masking/detectors.js';
import { partial, maskEmail, hashValue, applyMasker } from '../src/masking/maskers.js';
import { maskDataRow } from '../src/protocol/postgres/rows.js';
import type { MaskPlan } from '../src/masking/values.js';
import { Writer, Reader } from '../src/protocol/postgres/buffer.js';

const corpus = fs
  .readFileSync(new URL('./fixtures/detector-corpus.tsv', import.meta.url), 'utf8')
  .split('\n')
  .filter((l) => l && !l.startsWith('#'))
  .map((l) => {
    const [expected, text] = l.split('\t') as [string, string];
    return { expected: expected === '-' ? [] : expected.split(','), text };
  });

describe('zero-config detectors on a labelled corpus', () => {
  it.each(corpus.map((c) => [c.text, c.expected]))('%s → %j', (text, expected) => {
    expect(detect(text as string).map((h) => h.type)).toEqual(expected);
  });

  it('precision and recall over the whole corpus are 100%', () => {
    let tp = 0;
    let fp = 0;
    let fn = 0;
    for (const c of corpus) {
      const got = detect(c.text).map((h) => h.type);
      const want = [...c.expected];
      for (const g of got) {
        const i = want.indexOf(g);
        if (i >= 0) {
          tp++;
          want.splice(i, 1);
        } else fp++;
      }
      fn += want.length;
    }
    expect(corpus.filter((c) => c.expected.length === 0).length).toBeGreaterThanOrEqual(20);
    expect({ precision: tp / (tp + fp), recall: tp / (tp + fn) }).toEqual({ precision: 1, recall: 1 });
  });

  it('the byte pre-scan never drops a cell that holds a detectable value', () => {
    for (const c of corpus.filter((c) => c.expected.length > 0)) {
      const b = Buffer.from(`  ${c.text}  `);
      expect(mayContainSensitive(b, 2, b.length - 2), c.text).toBe(true);
    }
    // and it does clear ordinary cells, long plain numbers and hex hashes among them (no detector takes 8 to 12
    // digits without a separator, a '+' or capital letters in the cell)
    for (const plain of ['Customer d41d8cd98f00b204e9800998ecf8427e', 'hello world, nothing here', 'order 4821 of 2024', '1234567890', 'a3f51234567890bc', '4d5e6f7012345678bcd', '202411302359']) {
      expect(mayContainSensitive(Buffer.from(plain), 0, Buffer.byteLength(plain)), plain).toBe(false);
    }
  });

  it('the byte pre-scan is true for every generated cell the detectors find something in', () => {
    // Cells made of the characters the detectors look at (digits, separators, '+', capitals, '@', ':'), so that
    // phone numbers, SSNs, card numbers, IBANs and addresses occur by chance among near misses.
    let seed = 12345;
    const rnd = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
    const parts = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '41', '555', '123', '4567', '1234', ' ', '-', '.', '(', ')', ') (', '+', '+1 ', '+44 ', '\t', '\n', '\u00a0', '\u2003', 'é', '(415)', '(20)', '555-2671', 'DE', 'GB82', 'NL91', 'ABNA', 'WEST', 'x', 'ab', 'Z', '@', 'a@b.co', ':', '::', '192.168.', '10.', '4111', '3782', 'sk_live_', 'AKIA', 'NL91ABNA0417164300', 'MT84MALT011000012345MTLCAST001S', 'GB44ABCD1234EFGH5678XY', 'DE62ABCD1234EFGH5678XY'];
    let found = 0;
    for (let i = 0; i < 60_000; i++) {
      let cell = '';
      for (let n = 4 + rnd(14); n > 0; n--) cell += parts[rnd(parts.length)];
      if (detect(cell).length === 0) continue;
      found++;
      const b = Buffer.from(cell);
      expect(mayContainSensitive(b, 0, b.length), cell).toBe(true);
    }
    expect(found).toBeGreaterThan(1_000);
    // Phone numbers in every layout the phone patterns allow: whatever may stand between the digit groups
    // (separators, parentheses, any whitespace JavaScript's \s takes after an area code, Unicode spaces among them).
    const gaps = ['', ' ', '-', '.', '\t', '\n', '\v', '\f', '\r', '\u00a0', '\u2003', '\u3000', '\u202f', ') (', ')', '(', ' (', ') '];
    const digits = (n: number) => Array.from({ length: n }, () => String(rnd(10))).join('');
    let phones = 0;
    for (let i = 0; i < 20_000; i++) {
      const g = () => gaps[rnd(gaps.length)];
      const cell = rnd(2)
        ? `${['', 'call ', 'x '][rnd(3)]}(${digits(3)})${g()}${digits(3)}${g()}${digits(4)}`
        : `+${1 + rnd(9)}${digits(rnd(3))}${g()}${g()}${digits(1 + rnd(4))}${g()}${digits(1 + rnd(4))}${g()}${digits(1 + rnd(4))}`;
      if (detect(cell).length === 0) continue;
      phones++;
      const b = Buffer.from(cell);
      expect(mayContainSensitive(b, 0, b.length), JSON.stringify(cell)).toBe(true);
    }
    expect(phones).toBeGreaterThan(500);
  });

  it('the byte pre-scan is true for every mutation of the corpus the detectors find something in', () => {
    // Each detectable value of the corpus with 1-4 characters inserted, deleted or replaced (separators, Unicode
    // spaces, multi-byte characters, token and address characters): 300,000 mutants, about 15% still detectable.
    const alphabet = [' ', '-', '.', '(', ')', '+', '\t', '\n', '\u00a0', '\u2003', '\u3000', '\ufeff', 'é', 'Ω', '😀', '_', ':', '@', '/', ',', ';', 'A', 'Z', 'a', 'z', '0', '5', '9', 'eyJ', 'Bearer ', '\u200b', '\u2028', '"', '='];
    const seeds = corpus.filter((c) => c.expected.length > 0).map((c) => c.text);
    let seed = 987654321;
    const rnd = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
    let detectable = 0;
    for (let n = 0; n < 300_000; n++) {
      let s = seeds[rnd(seeds.length)]!;
      for (let m = 1 + rnd(4); m > 0; m--) {
        const i = rnd(s.length + 1);
        const op = rnd(3);
        const ch = alphabet[rnd(alphabet.length)]!;
        s = op === 0 ? s.slice(0, i) + ch + s.slice(i) : op === 1 ? s.slice(0, i) + s.slice(i + 1) : s.slice(0, i) + ch + s.slice(i + 1);
      }
      if (detect(s).length === 0) continue;
      detectable++;
      const b = Buffer.from(s);
      if (!mayContainSensitive(b, 0, b.length)) expect.fail(`pre-scan says nothing could match ${JSON.stringify(s)}, detectors find ${JSON.stringify(detect(s))}`);
    }
    expect(detectable).toBeGreaterThan(30_000);
  });

  it('hit ranges cover exactly the sensitive part', () => {
    const s = 'mail alice@example.com now';
    const [h] = detect(s);
    expect(s.slice(h!.start, h!.end)).toBe('alice@example.com');
  });

  it('checksums', () => {
    expect(luhnValid('4111111111111111')).toBe(true);
    expect(luhnValid('4111111111111112')).toBe(false);
    expect(ibanValid('GB82 WEST 1234 5698 7654 32')).toBe(true);
    expect(ibanValid('GB82 WEST 1234 5698 7654 33')).toBe(false);
  });
});

describe('maskers', () => {
  it('partial keeps the last 4 letters/digits and the separators', () => {
    expect(partial('4111-1111-1111-1234')).toBe('****-****-****-1234');
    expect(partial('+14155552671')).toBe('+*******2671');
  });
  it('email keeps only the first character and the top-level domain', () => {
    expect(maskEmail('grace.hopper@navy.mil')).toBe('g***@***.mil');
  });
  it('hash is keyed and deterministic', () => {
    const k1 = Buffer.from('k1');
    expect(hashValue('x@y.com', k1)).toBe(hashValue('x@y.com', k1));
    expect(hashValue('x@y.com', k1)).not.toBe(hashValue('x@y.com', Buffer.from('k2')));
    expect(hashValue('x@y.com', k1)).toMatch(/^h:[0-9a-f]{16}$/);
  });
  it('null masker yields SQL NULL', () => {
    expect(applyMasker('null', 'secret', Buffer.alloc(1))).toBeNull();
  });
});

describe('DataRow rewriting', () => {
  const row = (cells: (string | null)[]) => {
    const w = new Writer().int16(cells.length);
    for (const c of cells) (c === null ? w.int32(-1) : w.int32(Buffer.byteLength(c)).bytes(Buffer.from(c)));
    return w.message('D');
  };
  const cells = (b: Buffer) => {
    const r = new Reader(b, 5);
    const n = r.int16();
    return Array.from({ length: n }, () => {
      const len = r.int32();
      return len < 0 ? null : r.bytes(len).toString();
    });
  };
  const plan: MaskPlan = { key: Buffer.from('k'), columns: [{ kind: 'pass' }, { kind: 'scan' }, { kind: 'rule', masker: 'null', label: 't.ssn' }, { kind: 'scan' }] };

  it('masks scanned and ruled cells, keeps NULLs and passes the rest byte for byte', () => {
    const counts = new Map<string, number>();
    const input = row(['4111111111111111', 'card 4111 1111 1111 1111, mail a@b.io', '123-45-6789', null]);
    const out = maskDataRow(input, 0, input.length, plan, counts)!;
    expect(cells(out)).toEqual(['4111111111111111', 'card **** **** **** 1111, mail a***@***.io', null, null]);
    expect(Object.fromEntries(counts)).toEqual({ card: 1, email: 1, 't.ssn': 1 });
  });

  it('returns undefined (forward the original) when nothing is sensitive', () => {
    const input = row(['1', 'plain text', 'x', 'y']);
    expect(maskDataRow(input, 0, input.length, { ...plan, columns: plan.columns.map(() => ({ kind: 'scan' as const })) }, new Map())).toBeUndefined();
  });

  it('refuses a row with bytes after its last column (a rebuilt row would end in uninitialised memory)', () => {
    const good = row(['4111111111111111', 'mail a@b.io', 'x', null]);
    const input = Buffer.concat([good, Buffer.from('junk')]);
    input.writeInt32BE(input.length - 1, 1);
    expect(() => maskDataRow(input, 0, input.length, plan, new Map())).toThrow(/bytes after its last column/);
  });

  it('refuses a row whose column count disagrees with its description', () => {
    const input = row(['a']);
    expect(() => maskDataRow(input, 0, input.length, plan, new Map())).toThrow(/DataRow has 1 columns/);
  });
});
