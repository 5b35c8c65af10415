import { CAP, MyProtocolError, MyReader, STATUS, int2, int4 } from './packets.js';

/** The server side of the MySQL connection phase: the gateway's handshake and the client's response. */

export interface HandshakeOffer {
  serverVersion: string;
  connectionId: number;
  /** 20 bytes of scramble (printable, no NUL). */
  scramble: Buffer;
  caps: number;
  charset: number;
  /** MariaDB extended capabilities offered in the reserved bytes (only to MariaDB clients: 0 otherwise). */
  extCaps: number;
  plugin: string;
}

/** Protocol::HandshakeV10. */
export function handshakePacket(o: HandshakeOffer): Buffer {
  const reserved = Buffer.alloc(10);
  reserved.writeUInt32LE(o.extCaps >>> 0, 6);
  return Buffer.concat([
    Buffer.from([10]),
    Buffer.from(`${o.serverVersion}\0`, 'utf8'),
    int4(o.connectionId),
    o.scramble.subarray(0, 8),
    Buffer.from([0]),
    int2(o.caps & 0xffff),
    Buffer.from([o.charset]),
    int2(STATUS.AUTOCOMMIT),
    int2((o.caps >>> 16) & 0xffff),
    Buffer.from([21]),
    reserved,
    o.scramble.subarray(8, 20),
    Buffer.from([0]),
    Buffer.from(`${o.plugin}\0`, 'ascii'),
  ]);
}

export interface HandshakeResponse {
  caps: number;
  /** MariaDB extended capabilities (the last 4 of the 23 filler bytes). */
  extCaps: number;
  charset: number;
  /** An SSLRequest: the short response a client sends before starting TLS. */
  sslRequest: boolean;
  user: string;
  auth: Buffer;
  database: string;
  plugin: string;
  attrs: Record<string, string>;
}

/** Protocol::HandshakeResponse41 (or the SSLRequest that precedes it). */
export function parseHandshakeResponse(p: Buffer): HandshakeResponse {
  const r = new MyReader(p);
  const caps = r.int4();
  r.int4(); // max packet
  const charset = r.int1();
  const extCaps = r.bytes(23).readUInt32LE(19);
  if (!(caps & CAP.PROTOCOL_41)) throw new MyProtocolError('the client does not speak protocol 4.1');
  const base = { caps, extCaps, charset, user: '', auth: Buffer.alloc(0), database: '', plugin: '', attrs: {} };
  if (r.left === 0 && caps & CAP.SSL) return { ...base, sslRequest: true };
  const user = r.nulString();
  let auth: Buffer;
  if (caps & CAP.PLUGIN_AUTH_LENENC_CLIENT_DATA) auth = r.lenencBytes() ?? Buffer.alloc(0);
  else if (caps & CAP.SECURE_CONNECTION) auth = r.bytes(r.int1());
  else auth = r.nulBytes();
  const database = caps & CAP.CONNECT_WITH_DB && r.left ? r.nulString() : '';
  const plugin = caps & CAP.PLUGIN_AUTH && r.left ? r.nulString() : '';
  const attrs: Record<string, string> = {};
  if (caps & CAP.CONNECT_ATTRS && r.left) {
    const block = new MyReader(r.lenencBytes() ?? Buffer.alloc(0));
    while (block.left) attrs[block.lenencString()] = block.lenencString();
  }
  return { caps, extCaps, charset, sslRequest: false, user, auth, database, plugin, attrs };
}
