import { describe, it, expect, afterAll } from 'vitest';
import { openStore } from '../src/store/db.js';
import { createKey, verifyKey } from '../src/identity/keys.js';
import { tmpDir } from './support/env.js';

const store = await openStore({ kind: 'embedded', path: tmpDir('keys-store') });
afterAll(() => store.close());

const lastUsed = async (id: string) => (await store.db.selectFrom('api_keys').select('last_used_at').where('id', '=', id).executeTakeFirstOrThrow()).last_used_at;

describe('Sluice keys', () => {
  it("records a key's last use on its first login, then at most once a minute (churn does not write per login)", async () => {
    const { key, info } = await createKey(store.db, { name: 'churn', kind: 'service', groups: ['app'] });
    const id = info.id;
    expect(await lastUsed(id)).toBeNull();
    expect((await verifyKey(store.db, key)).subject).toBe('service:churn');
    await expect.poll(() => lastUsed(id)).not.toBeNull();
    const first = String(await lastUsed(id));
    await new Promise((r) => setTimeout(r, 20));
    for (let i = 0; i < 5; i++) await verifyKey(store.db, key);
    await new Promise((r) => setTimeout(r, 50));
    expect(String(await lastUsed(id))).toBe(first);
    await expect(verifyKey(store.db, `${key.slice(0, -2)}xx`)).rejects.toThrow(/unknown or invalid Sluice key/);
  });
});
