import net from 'node:net';
import tls from 'node:tls';
import crypto from 'node:crypto';
import { CAP, MyFramer, MyReader, frame, int4, lenencBuf, parseErr, withoutNul, type ErrInfo } from './packets.js';

export interface MyUpstreamTarget {
  host: string;
  port: number;
  user: string;
  password?: string;
  /** disable: plain TCP; prefer: TLS when offered; require: TLS or fail. */
  sslmode?: 'disable' | 'prefer' | 'require';
  connectTimeoutMs?: number;
  /** CA certificate(s): with them the server's certificate and name are verified (otherwise TLS is unverified). */
  ca?: Buffer;
}

export class MyUpstreamError extends Error {
  constructor(
    message: string,
    readonly err?: ErrInfo,
  ) {
    super(message);
    this.name = 'MyUpstreamError';
  }
}

/** What the upstream announced in its initial handshake. */
export interface UpstreamHello {
  serverVersion: string;
  connectionId: number;
  caps: number;
  charset: number;
  status: number;
  scramble: Buffer;
  plugin: string;
  /** MariaDB extended capabilities (0 from MySQL). */
  extCaps: number;
}

export interface MyUpstream {
  socket: net.Socket;
  hello: UpstreamHello;
  /** Capabilities in force on this connection. */
  caps: number;
  /** Bytes read after the final OK (normally none). */
  leftover: Buffer;
}

function parseHello(p: Buffer): UpstreamHello {
  if (p[0] === 0xff) throw new MyUpstreamError(`upstream refused the connection: ${parseErr(p).message}`, parseErr(p));
  const r = new MyReader(p);
  const proto = r.int1();
  if (proto !== 10) throw new MyUpstreamError(`unsupported upstream protocol version ${proto}`);
  const serverVersion = r.nulString();
  const connectionId = r.int4();
  const s1 = r.bytes(8);
  r.int1();
  let caps = r.int2();
  const charset = r.left ? r.int1() : 33;
  const status = r.left ? r.int2() : 0;
  if (r.left) caps |= r.int2() << 16;
  const authLen = r.left ? r.int1() : 0;
  // MariaDB (CLIENT_MYSQL not set) puts its extended capabilities in the last 4 of the 10 reserved bytes.
  const extCaps = r.left >= 10 ? (caps & CAP.LONG_PASSWORD ? 0 : r.bytes(10).readUInt32LE(6)) : 0;
  if (r.left >= 10 && caps & CAP.LONG_PASSWORD) r.bytes(10);
  let s2: Buffer = Buffer.alloc(0);
  if (caps & CAP.SECURE_CONNECTION) {
    const n = Math.max(13, authLen - 8);
    s2 = withoutNul(r.bytes(Math.min(n, r.left)));
  }
  const plugin = caps & CAP.PLUGIN_AUTH && r.left ? r.nulString() : 'mysql_native_password';
  return { serverVersion, connectionId, caps: caps >>> 0, charset, status, scramble: Buffer.concat([s1, s2]), plugin, extCaps };
}

const sha1 = (...b: Buffer[]) => b.reduce((h, x) => h.update(x), crypto.createHash('sha1')).digest();
const sha256 = (...b: Buffer[]) => b.reduce((h, x) => h.update(x), crypto.createHash('sha256')).digest();
const xor = (a: Buffer, b: Buffer) => Buffer.from(a.map((x, i) => x ^ b[i % b.length]!));

/** The first auth response for a plugin (or undefined: the plugin is not supported). */
export function authResponse(plugin: string, password: string, scramble: Buffer, secure: boolean): Buffer | undefined {
  const pw = Buffer.from(password, 'utf8');
  switch (plugin) {
    case 'mysql_native_password':
      if (!pw.length) return Buffer.alloc(0);
      return xor(sha1(pw), sha1(scramble.subarray(0, 20), sha1(sha1(pw))));
    case 'caching_sha2_password':
      if (!pw.length) return Buffer.alloc(0);
      return xor(sha256(pw), sha256(sha256(sha256(pw)), scramble.subarray(0, 20)));
    case 'mysql_clear_password':
      if (!secure) throw new MyUpstreamError('the upstream asks for the clear-text password plugin over an unencrypted connection; set sslmode: require');
      return Buffer.concat([pw, Buffer.from([0])]);
    default:
      return undefined;
  }
}

/** How the gateway logs in on an upstream connection. */
export interface UpstreamLoginOptions {
  caps: number;
  charset: number;
  database?: string;
  attrs?: Record<string, string>;
  extCaps?: number;
  /** A statement run once logged in (the gateway's session setup), before the connection is handed over; its failure fails the connection. */
  init?: string;
}

/**
 * An upstream connection whose greeting has been read, its login still to come: the gateway's handshake to its
 * client carries this server connection's id, so the thread id a client sees is the server's CONNECTION_ID().
 */
export interface GreetedUpstream {
  hello: UpstreamHello;
  /** Log in (once). Fails when the server has closed the connection meanwhile (its connect_timeout). */
  login(o: UpstreamLoginOptions): Promise<MyUpstream>;
  /**
   * Not needed after all (the client's login failed or it left): logged in with the gateway's own credentials and
   * quit, because a connection dropped during the handshake counts against the server's max_connect_errors for the
   * gateway's host.
   */
  abandon(): void;
}

/**
 * Connect and log in to the upstream MySQL/MariaDB with the gateway's own credentials. `caps` are the capabilities
 * the gateway's client negotiated, so packets can be relayed between the two unchanged.
 */
export function connectMyUpstream(t: MyUpstreamTarget, o: UpstreamLoginOptions): Promise<MyUpstream> {
  return greetMyUpstream(t).then((g) => g.login(o));
}

/** Connect to the upstream and read its greeting; the login follows with GreetedUpstream.login. */
export function greetMyUpstream(t: MyUpstreamTarget): Promise<GreetedUpstream> {
  return new Promise((resolveGreet, rejectGreet) => {
    // A host starting with '/' is the server's unix socket file (e.g. /run/mysqld/mysqld.sock).
    const local = t.host.startsWith('/');
    let socket: net.Socket = net.connect(local ? { path: t.host } : { host: t.host, port: t.port, noDelay: true });
    const timeout = () => fail(new MyUpstreamError(`timed out connecting to upstream ${t.host}:${t.port}`));
    let timer = setTimeout(timeout, t.connectTimeoutMs ?? 10_000);
    let done = false;
    let o: UpstreamLoginOptions | undefined;
    let resolve: ((u: MyUpstream) => void) | undefined;
    let reject: ((e: Error) => void) | undefined;
    /** Why the connection failed between its greeting and the login. */
    let dead: Error | undefined;
    const fail = (e: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const err = e instanceof MyUpstreamError ? e : new MyUpstreamError(`upstream ${t.host}:${t.port}: ${e.message}`);
      if (!hello) rejectGreet(err);
      else if (reject) reject(err);
      else dead = err;
    };
    let framer = new MyFramer(1 << 24);
    let hello: UpstreamHello | undefined;
    let seq = 0;
    let caps = 0;
    let plugin = '';
    let scramble: Buffer = Buffer.alloc(0);
    let secure = false;
    let initSent = false;
    // The 23 filler bytes of the handshake response; MariaDB reads extended capabilities from the last 4.
    const filler = () => {
      const b = Buffer.alloc(23);
      if (hello && !(hello.caps & CAP.LONG_PASSWORD)) b.writeUInt32LE((o!.extCaps ?? 0) & hello.extCaps, 19);
      return b;
    };
    const send = (payload: Buffer) => {
      const f = frame(seq, payload);
      seq = f.next;
      socket.write(f.bytes);
    };
    const onData = (d: Buffer) => {
      try {
        framer.push(d, (s, p) => {
          if (done) return 'keep';
          seq = (s + 1) & 0xff;
          if (!hello) return void greeted(p);
          if (!o) throw new MyUpstreamError('the upstream sent a packet before the login');
          return step(p);
        });
      } catch (e) {
        fail(e as Error);
      }
    };
    const greeted = (p: Buffer) => {
      hello = parseHello(p);
      clearTimeout(timer);
      const login = (opts: UpstreamLoginOptions) =>
        new Promise<MyUpstream>((res, rej) => {
          if (o || done) return rej(dead ?? new MyUpstreamError(o ? 'already logged in' : `upstream ${t.host}:${t.port} closed the connection before the login`));
          o = opts;
          resolve = res;
          reject = rej;
          timer = setTimeout(timeout, t.connectTimeoutMs ?? 10_000);
          try {
            start();
          } catch (e) {
            fail(e as Error);
          }
        });
      resolveGreet({
        hello,
        login,
        abandon: () => void login({ caps: CAP.PROTOCOL_41 | CAP.SECURE_CONNECTION | CAP.PLUGIN_AUTH, charset: 45 }).then((u) => u.socket.end(frame(0, Buffer.from([0x01])).bytes), () => undefined),
      });
    };
    const start = () => {
      const h = hello!;
      const opts = o!;
      // No TLS over a local socket: the traffic never leaves the machine.
      const wantTls = !local && (t.sslmode === 'require' || (t.sslmode ?? 'prefer') === 'prefer');
      const canTls = (h.caps & CAP.SSL) !== 0;
      if (!local && t.sslmode === 'require' && !canTls) throw new MyUpstreamError('sslmode is require but the upstream does not offer TLS');
      caps = (opts.caps & h.caps & ~CAP.SSL & ~CAP.COMPRESS & ~CAP.LOCAL_FILES) | CAP.PROTOCOL_41 | CAP.SECURE_CONNECTION | CAP.PLUGIN_AUTH | (h.caps & CAP.PLUGIN_AUTH_LENENC_CLIENT_DATA);
      if (opts.database) caps |= CAP.CONNECT_WITH_DB;
      if (!(h.caps & CAP.CONNECT_ATTRS)) caps &= ~CAP.CONNECT_ATTRS;
      plugin = h.plugin;
      scramble = h.scramble;
      if (wantTls && canTls) {
        caps |= CAP.SSL;
        send(Buffer.concat([int4(caps), int4(1 << 24), Buffer.from([opts.charset]), filler()]));
        socket.removeListener('data', onData);
        const plain = socket;
        socket = tls.connect({ socket: plain, host: t.host, ca: t.ca, rejectUnauthorized: !!t.ca, servername: net.isIP(t.host) ? undefined : t.host });
        socket.once('secureConnect', () => {
          secure = true;
          framer = new MyFramer(1 << 24);
          socket.on('data', onData);
          sendLogin();
        });
        socket.on('error', fail);
        return;
      }
      sendLogin();
    };
    const sendLogin = () => {
      const opts = o!;
      const resp = authResponse(plugin, t.password ?? '', scramble, secure) ?? Buffer.alloc(0);
      const parts = [int4(caps), int4(1 << 24), Buffer.from([opts.charset]), filler(), Buffer.from(t.user + '\0', 'utf8')];
      parts.push(caps & CAP.PLUGIN_AUTH_LENENC_CLIENT_DATA ? lenencBuf(resp) : Buffer.concat([Buffer.from([resp.length]), resp]));
      if (caps & CAP.CONNECT_WITH_DB) parts.push(Buffer.from(`${opts.database ?? ''}\0`, 'utf8'));
      parts.push(Buffer.from(`${plugin}\0`, 'utf8'));
      if (caps & CAP.CONNECT_ATTRS) {
        const kv = Object.entries({ _client_name: 'sluice', ...(opts.attrs ?? {}) }).map(([k, v]) => Buffer.concat([lenencBuf(Buffer.from(k)), lenencBuf(Buffer.from(v))]));
        parts.push(lenencBuf(Buffer.concat(kv)));
      }
      send(Buffer.concat(parts));
    };
    const step = (p: Buffer): 'stop' | void => {
      const head = p[0];
      if (head === 0x00 && o!.init && !initSent) {
        initSent = true;
        seq = 0;
        send(Buffer.concat([Buffer.from([0x03]), Buffer.from(o!.init!, 'utf8')]));
        return;
      }
      if (head === 0x00) {
        done = true;
        clearTimeout(timer);
        socket.removeListener('data', onData);
        socket.removeListener('error', fail);
        resolve!({ socket, hello: hello!, caps, leftover: Buffer.alloc(0) });
        return 'stop';
      }
      if (head === 0xff) {
        const e = parseErr(p);
        throw new MyUpstreamError(initSent ? `the upstream refused the session setup: ${e.message}` : `upstream login failed: ${e.message}`, e);
      }
      if (head === 0xfe) {
        // AuthSwitchRequest: another plugin, with new scramble data.
        const r = new MyReader(p, 1);
        plugin = r.nulString();
        scramble = withoutNul(r.rest());
        const resp = authResponse(plugin, t.password ?? '', scramble, secure);
        if (!resp) throw new MyUpstreamError(`upstream asks for unsupported authentication plugin ${plugin}`);
        send(resp);
        return;
      }
      if (head === 0x01) {
        // AuthMoreData (caching_sha2_password): 3 = fast auth done (OK follows), 4 = full authentication needed.
        const more = p.subarray(1);
        if (plugin === 'caching_sha2_password' && more.length === 1 && more[0] === 3) return;
        if (plugin === 'caching_sha2_password' && more.length === 1 && more[0] === 4) {
          if (secure) send(Buffer.from(`${t.password ?? ''}\0`, 'utf8'));
          else send(Buffer.from([2])); // ask for the server's RSA public key
          return;
        }
        if (plugin === 'caching_sha2_password' && more.toString('ascii').includes('BEGIN PUBLIC KEY')) {
          const pw = Buffer.from(`${t.password ?? ''}\0`, 'utf8');
          send(crypto.publicEncrypt({ key: more.toString('ascii'), padding: crypto.constants.RSA_PKCS1_OAEP_PADDING }, xor(pw, scramble.subarray(0, 20))));
          return;
        }
        throw new MyUpstreamError(`unexpected authentication data from the upstream (${plugin})`);
      }
      throw new MyUpstreamError(`unexpected packet 0x${(head ?? 0).toString(16)} during upstream login`);
    };
    socket.on('data', onData);
    socket.on('error', fail);
    socket.on('close', () => fail(new MyUpstreamError(`upstream ${t.host}:${t.port} closed the connection during login`)));
  });
}

/**
 * The upstream's version and capabilities, for the gateway's own handshake: a full login and COM_QUIT (a bare
 * connect-and-close would count against the server's max_connect_errors and can get the gateway's host blocked).
 */
export async function probeMyUpstream(t: MyUpstreamTarget): Promise<UpstreamHello> {
  const u = await connectMyUpstream(t, { caps: 0xffffffff, charset: 45 });
  u.socket.end(frame(0, Buffer.from([0x01])).bytes);
  return u.hello;
}
