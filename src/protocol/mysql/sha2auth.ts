import crypto from 'node:crypto';
import { withoutNul } from './packets.js';

/**
 * The server side of caching_sha2_password's full authentication, which is how Sluice receives the password (an
 * identity token or Sluice key) from clients that did not opt into mysql_clear_password (mysql2 without
 * `enableCleartextPlugin`, MySQL 8 clients): Sluice never has a password hash to compare the client's scramble
 * with, so it always asks for full authentication. The client then sends the password itself: in clear inside TLS,
 * or without TLS encrypted with the gateway's RSA public key (RSA-OAEP with SHA-1, the password XORed with the
 * connection's scramble, as MySQL does), after asking for that key. Without TLS, an active attacker could hand the
 * client another key; a passive one learns nothing (with mysql_clear_password it would read the password).
 */
export const SHA2 = 'caching_sha2_password';

/** AuthMoreData: perform full authentication. */
export const PERFORM_FULL_AUTH = Buffer.from([0x01, 0x04]);
/** The client asks for the server's public key. */
const REQUEST_PUBLIC_KEY = 0x02;

let keys: { publicPem: string; privateKey: crypto.KeyObject } | undefined;

/** The gateway process's RSA key pair (made on first use, never stored). */
function keyPair(): { publicPem: string; privateKey: crypto.KeyObject } {
  if (!keys) {
    const { publicKey, privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    keys = { publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(), privateKey };
  }
  return keys;
}

/** AuthSwitchRequest to caching_sha2_password with the connection's 20-byte scramble. */
export function switchToSha2(scramble: Buffer): Buffer {
  return Buffer.concat([Buffer.from([0xfe]), Buffer.from(`${SHA2}\0`, 'ascii'), scramble, Buffer.from([0])]);
}

/**
 * What a packet of the full-authentication exchange (after PERFORM_FULL_AUTH) means: the password, or the public
 * key to send (AuthMoreData), or why it cannot be read.
 */
export function fullAuthPacket(p: Buffer, o: { tls: boolean; scramble: Buffer }): { password: string } | { reply: Buffer } | { error: string } {
  if (o.tls) return { password: withoutNul(p).toString('utf8') };
  if (p.length === 1 && p[0] === REQUEST_PUBLIC_KEY) return { reply: Buffer.concat([Buffer.from([0x01]), Buffer.from(keyPair().publicPem, 'ascii')]) };
  let plain: Buffer;
  try {
    plain = crypto.privateDecrypt({ key: keyPair().privateKey, padding: crypto.constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, p);
  } catch {
    return { error: 'the password could not be decrypted with this gateway\'s public key (without TLS, caching_sha2_password sends it RSA-encrypted with the key the gateway gives; connect with TLS, or let the client ask for the key)' };
  }
  for (let i = 0; i < plain.length; i++) plain[i]! ^= o.scramble[i % o.scramble.length]!;
  return { password: withoutNul(plain).toString('utf8') };
}
