import net from 'node:net';
import tls from 'node:tls';
import crypto from 'node:crypto';
import { CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, PROTOCOL_3_0, SSL_REQUEST_CODE, errorResponse, passwordMessage, startupMessage, sslRequest } from '../protocol/postgres/messages.js';
import { CAP, MyFramer, STATUS, errPacket, frame, okPacket } from '../protocol/mysql/packets.js';
import { handshakePacket, parseHandshakeResponse } from '../protocol/mysql/handshake.js';
import { connectMyUpstream, type MyUpstream, type UpstreamHello } from '../protocol/mysql/upstream.js';

/** Where the gateway is, and how its TLS certificate is checked. */
export interface GatewayAddress {
  host: string;
  port: number;
  /** CA certificate(s): with them the gateway's certificate is verified (verify-full); without, TLS is unverified. */
  ca?: Buffer;
}

/** The user's current token, refreshed as needed (called for every new connection). */
export type TokenSource = () => Promise<string>;

export interface LocalListener {
  port: number;
  /** Connections served so far (handy for logs and tests). */
  readonly connections: number;
  close(): Promise<void>;
}

const MAX_STARTUP = 10_000;

/** Open a TLS connection to a PostgreSQL-protocol gateway: SSLRequest, then the handshake (never falls back to clear). */
export function pgGatewaySocket(g: GatewayAddress): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const raw = net.connect({ host: g.host, port: g.port, noDelay: true });
    const timer = setTimeout(() => raw.destroy(new Error(`timed out connecting to the gateway at ${g.host}:${g.port}`)), 10_000);
    raw.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot reach the gateway at ${g.host}:${g.port}: ${e.message}`));
    });
    raw.once('connect', () => raw.write(sslRequest()));
    raw.once('data', (d) => {
      if (d[0] !== 0x53 /* S */) {
        clearTimeout(timer);
        raw.destroy();
        return reject(new Error(`the gateway at ${g.host}:${g.port} does not offer TLS; the token is not sent in clear text`));
      }
      // host: the name (or address) the certificate must be issued for, with a CA (verify-full).
      const s = tls.connect({ socket: raw, host: g.host, ca: g.ca, rejectUnauthorized: !!g.ca, servername: net.isIP(g.host) ? undefined : g.host });
      s.once('secureConnect', () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once('error', (e) => {
        clearTimeout(timer);
        reject(new Error(`TLS with the gateway at ${g.host}:${g.port} failed: ${e.message}`));
      });
    });
  });
}

/** Read one untyped startup-phase packet (int32 length first) from the local client. */
function readStartup(sock: net.Socket, buffered: { b: Buffer }): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const tryTake = () => {
      if (buffered.b.length < 4) return false;
      const len = buffered.b.readInt32BE(0);
      if (len < 8 || len > MAX_STARTUP) {
        reject(new Error(`invalid startup packet length ${len}`));
        return true;
      }
      if (buffered.b.length < len) return false;
      const p = buffered.b.subarray(0, len);
      buffered.b = buffered.b.subarray(len);
      resolve(p);
      return true;
    };
    if (tryTake()) return;
    const onData = (d: Buffer) => {
      buffered.b = Buffer.concat([buffered.b, d]);
      if (tryTake()) cleanup();
    };
    const onEnd = () => {
      cleanup();
      reject(new Error('the client went away during startup'));
    };
    const cleanup = () => {
      sock.off('data', onData);
      sock.off('close', onEnd);
    };
    sock.on('data', onData);
    sock.on('close', onEnd);
  });
}

function parseStartupParams(p: Buffer): Record<string, string> {
  const params: Record<string, string> = {};
  const parts = p.subarray(8).toString('utf8').split('\0');
  for (let i = 0; i + 1 < parts.length && parts[i] !== ''; i += 2) params[parts[i]!] = parts[i + 1]!;
  return params;
}

/**
 * Log in to the gateway as the client's session: forward its startup parameters (database replaced by the one this
 * listener serves), answer the gateway's password request with the token, then hand back the TLS socket and any bytes
 * the gateway sent after the request (AuthenticationOk onwards, for the client).
 */
async function pgLogin(g: GatewayAddress, params: Record<string, string>, token: string): Promise<tls.TLSSocket> {
  const s = await pgGatewaySocket(g);
  s.write(startupMessage(params));
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 9) return;
      const type = String.fromCharCode(buf[0]!);
      const len = buf.readInt32BE(1);
      if (type === 'R' && buf.readInt32BE(5) === 3) {
        s.off('data', onData);
        s.write(passwordMessage(token));
        const rest = buf.subarray(1 + len);
        if (rest.length) s.unshift(rest);
        return resolve(s);
      }
      // Anything else (an error, or an authentication method Sluice does not use): the client sees it as is.
      s.off('data', onData);
      s.unshift(buf);
      resolve(s);
    };
    s.on('data', onData);
    s.once('error', reject);
  });
}

const pgFatal = (code: string, message: string, hint?: string) => errorResponse({ severity: 'FATAL', code, message, hint });

/** Serve one local PostgreSQL client: startup locally (no password asked), then a relay to the gateway. */
async function servePg(client: net.Socket, database: string, g: GatewayAddress, token: TokenSource): Promise<void> {
  const buffered = { b: Buffer.alloc(0) as Buffer };
  for (;;) {
    const p = await readStartup(client, buffered);
    const code = p.readInt32BE(4);
    if (code === SSL_REQUEST_CODE || code === GSSENC_REQUEST_CODE) {
      client.write('N'); // loopback only: the client speaks in clear to this process; the gateway leg is TLS
      continue;
    }
    if (code === CANCEL_REQUEST_CODE) {
      // The client holds the gateway's cancel key (relayed BackendKeyData): pass the request on, over TLS.
      const s = await pgGatewaySocket(g);
      s.end(p);
      client.end();
      return;
    }
    if (code !== PROTOCOL_3_0) {
      client.end(pgFatal('08P01', `unsupported frontend protocol ${code >> 16}.${code & 0xffff}`));
      return;
    }
    const params = { ...parseStartupParams(p), database };
    let tok: string;
    try {
      tok = await token();
    } catch (e) {
      client.end(pgFatal('28000', `sluice connect: ${(e as Error).message}`, 'Run `sluice login` and connect again.'));
      return;
    }
    let up: tls.TLSSocket;
    try {
      up = await pgLogin(g, params, tok);
    } catch (e) {
      client.end(pgFatal('08006', `sluice connect: ${(e as Error).message}`));
      return;
    }
    relay(client, up, buffered.b);
    return;
  }
}

/** Pipe both ways until either side ends; `pending` are client bytes read past the login. */
function relay(client: net.Socket, up: net.Socket, pending: Buffer): void {
  if (pending.length) up.write(pending);
  client.pipe(up);
  up.pipe(client);
  const end = () => {
    client.destroy();
    up.destroy();
  };
  client.on('error', end);
  up.on('error', end);
  client.on('close', end);
  up.on('close', end);
}

/** Listen on 127.0.0.1 and serve every connection with `serve`; errors end that connection only. */
async function listenLocal(port: number, serve: (s: net.Socket) => Promise<void>, onError: (e: Error) => void): Promise<LocalListener> {
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    serve(s).catch((e) => {
      onError(e as Error);
      s.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(e.code === 'EADDRINUSE' ? new Error(`port ${port} on 127.0.0.1 is in use; pick another with --port`) : e));
    server.listen(port, '127.0.0.1', resolve);
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    get connections() {
      return connections;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** `sluice connect --engine postgres`: a passwordless local PostgreSQL endpoint for `database`, relayed to the gateway. */
export function startPgConnect(o: { database: string; port: number; gateway: GatewayAddress; token: TokenSource; onError?: (e: Error) => void }): Promise<LocalListener> {
  return listenLocal(o.port, (s) => servePg(s, o.database, o.gateway, o.token), o.onError ?? (() => {}));
}

// ------------------------------------------------------------------------------------------------ MySQL

/**
 * Serve one local MySQL client. The local handshake (the shared server-side code of the MySQL engine) offers the
 * gateway's capabilities without TLS and takes whatever password the client sends; then the gateway login (the
 * engine's client-side handshake) presents the token with mysql_clear_password over TLS, and the gateway's OK goes
 * to the client in place of ours. From then on packets are relayed unchanged.
 */
async function serveMy(client: net.Socket, database: string, g: GatewayAddress, hello: UpstreamHello, token: TokenSource, connId: number): Promise<void> {
  const caps = hello.caps & ~CAP.SSL & ~CAP.COMPRESS & ~CAP.LOCAL_FILES;
  const scramble = Buffer.from(crypto.randomBytes(20).map((b) => 0x21 + (b % 94)));
  let seq = 0;
  const send = (payload: Buffer) => {
    const f = frame(seq, payload);
    seq = f.next;
    client.write(f.bytes);
  };
  send(handshakePacket({ serverVersion: hello.serverVersion, connectionId: connId, scramble, caps, charset: hello.charset, extCaps: 0, plugin: 'mysql_native_password' }));
  const response = await new Promise<Buffer>((resolve, reject) => {
    const framer = new MyFramer(1 << 20);
    const onData = (d: Buffer) => {
      try {
        framer.push(d, (s, p) => {
          seq = (s + 1) & 0xff;
          client.off('data', onData);
          resolve(p);
          return 'stop';
        });
      } catch (e) {
        reject(e);
      }
    };
    client.on('data', onData);
    client.once('close', () => reject(new Error('the client went away during the handshake')));
  });
  const h = parseHandshakeResponse(response);
  if (h.sslRequest) return void client.end(frame(seq, errPacket(1045, '28000', 'sluice connect listens on loopback without TLS: connect with --ssl-mode=DISABLED (the gateway leg is TLS)')).bytes);
  let tok: string;
  try {
    tok = await token();
  } catch (e) {
    return void client.end(frame(seq, errPacket(1045, '28000', `sluice connect: ${(e as Error).message}; run sluice login`)).bytes);
  }
  try {
    const up = await myGatewayLogin(g, { user: h.user || 'sluice', password: tok }, { caps: h.caps, charset: h.charset, database: database || h.database || undefined, attrs: h.attrs });
    send(okPacket({ status: STATUS.AUTOCOMMIT }));
    relay(client, up.socket, up.leftover);
  } catch (e) {
    const err = (e as { err?: { code: number; sqlState: string; message: string } }).err;
    client.end(frame(seq, err ? errPacket(err.code, err.sqlState, err.message) : errPacket(1105, 'HY000', `sluice connect: ${(e as Error).message}`)).bytes);
  }
}

/**
 * Log in to the gateway's MySQL engine with the token (mysql_clear_password inside TLS). A login whose TLS
 * handshake stalls is retried: MySQL has no answer to SSLRequest, so the TLS ClientHello can reach the gateway in
 * the same read as the SSLRequest, and the gateway's engine then waits for a ClientHello it already consumed (seen in
 * the tests: a 385-byte first read holding both). Attempts are kept short (2.5 s, five of them, inside a
 * client's usual 10 s connect timeout) so a stalled one costs little; error codes sent to the client stay in the server
 * range (a client reads 2xxx codes from a server as a malformed packet).
 */
async function myGatewayLogin(g: GatewayAddress, who: { user: string; password: string }, o: Parameters<typeof connectMyUpstream>[1], attempts = 5): Promise<MyUpstream> {
  for (let i = 1; ; i++) {
    try {
      return await connectMyUpstream({ host: g.host, port: g.port, user: who.user, password: who.password, sslmode: 'require', connectTimeoutMs: 2500, ca: g.ca }, o);
    } catch (e) {
      if (i >= attempts || !/timed out/.test((e as Error).message)) throw e;
    }
  }
}

/** `sluice connect --engine mysql`: a passwordless local MySQL endpoint for `database`, relayed to the gateway. */
export async function startMyConnect(o: { database: string; port: number; gateway: GatewayAddress; token: TokenSource; onError?: (e: Error) => void }): Promise<LocalListener> {
  // The gateway's handshake (version, capabilities) is what the local handshake offers; read it with a real login.
  const probe = await myGatewayLogin(o.gateway, { user: 'sluice', password: await o.token() }, { caps: 0xffffffff, charset: 45, database: o.database });
  probe.socket.end(frame(0, Buffer.from([0x01])).bytes);
  let connId = 0;
  return listenLocal(o.port, (s) => serveMy(s, o.database, o.gateway, probe.hello, o.token, ++connId), o.onError ?? (() => {}));
}
