import net from 'node:net';
import tls from 'node:tls';
import crypto from 'node:crypto';
import { Framer } from './framer.js';
import { Reader } from './buffer.js';
import * as m from './messages.js';

export interface UpstreamTarget {
  host: string;
  port: number;
  user: string;
  password?: string;
  /** 'disable' (plain TCP), 'prefer' (TLS if the server offers it), 'require' (TLS or fail). */
  sslmode?: 'disable' | 'prefer' | 'require';
  /** Verify the upstream certificate (with `ca` when it is private). */
  sslRejectUnauthorized?: boolean;
  ca?: string;
  connectTimeoutMs?: number;
}

export interface UpstreamConnection {
  socket: net.Socket;
  parameters: Map<string, string>;
  pid: number;
  secret: number;
  /** Bytes received after the first ReadyForQuery (normally empty). */
  leftover: Buffer;
  txStatus: string;
}

/** An upstream failure whose message is safe to show a client (never includes credentials). */
export class UpstreamError extends Error {
  constructor(message: string, readonly code = '08006', readonly fields?: Record<string, string>) {
    super(message);
    this.name = 'UpstreamError';
  }
}

const saltedCache = new Map<string, Buffer>();
function saltedPassword(password: string, salt: Buffer, iterations: number): Buffer {
  // PBKDF2 at 4096+ iterations costs milliseconds per connection; the result only depends on these inputs.
  const key = crypto.createHash('sha256').update(password).update('\0').update(salt).update(String(iterations)).digest('base64');
  let v = saltedCache.get(key);
  if (!v) {
    v = crypto.pbkdf2Sync(password.normalize('NFKC'), salt, iterations, 32, 'sha256');
    if (saltedCache.size > 64) saltedCache.clear();
    saltedCache.set(key, v);
  }
  return v;
}
const hmac = (key: Buffer, data: string): Buffer => crypto.createHmac('sha256', key).update(data).digest();

/** Client side of SCRAM-SHA-256 (RFC 5802/7677), without channel binding. */
export class ScramClient {
  private readonly nonce = crypto.randomBytes(18).toString('base64');
  private clientFirstBare = '';
  private expectedServerSignature = '';
  constructor(private readonly password: string) {}
  first(): Buffer {
    this.clientFirstBare = `n=,r=${this.nonce}`;
    return Buffer.from(`n,,${this.clientFirstBare}`);
  }
  final(serverFirst: string): Buffer {
    const attrs = new Map(serverFirst.split(',').map((p) => [p[0], p.slice(2)] as [string, string]));
    const r = attrs.get('r');
    const s = attrs.get('s');
    const i = Number(attrs.get('i'));
    if (!r || !s || !Number.isInteger(i) || i < 1 || !r.startsWith(this.nonce)) {
      throw new UpstreamError('upstream sent an invalid SCRAM server-first message', '08P01');
    }
    const salted = saltedPassword(this.password, Buffer.from(s, 'base64'), i);
    const clientKey = hmac(salted, 'Client Key');
    const storedKey = crypto.createHash('sha256').update(clientKey).digest();
    const withoutProof = `c=biws,r=${r}`;
    const authMessage = `${this.clientFirstBare},${serverFirst},${withoutProof}`;
    const signature = hmac(storedKey, authMessage);
    const proof = Buffer.alloc(clientKey.length);
    for (let k = 0; k < proof.length; k++) proof[k] = clientKey[k]! ^ signature[k]!;
    this.expectedServerSignature = hmac(hmac(salted, 'Server Key'), authMessage).toString('base64');
    return Buffer.from(`${withoutProof},p=${proof.toString('base64')}`);
  }
  verify(serverFinal: string): void {
    const v = serverFinal.split(',').find((p) => p.startsWith('v='))?.slice(2);
    if (!v || v !== this.expectedServerSignature) {
      throw new UpstreamError('upstream SCRAM server signature did not verify', '28000');
    }
  }
}

function md5Password(user: string, password: string, salt: Buffer): string {
  const inner = crypto.createHash('md5').update(password + user).digest('hex');
  return 'md5' + crypto.createHash('md5').update(Buffer.concat([Buffer.from(inner), salt])).digest('hex');
}

/**
 * Where to connect: a host and port, or (as libpq does for a host starting with '/') the unix socket
 * `<dir>/.s.PGSQL.<port>`, which costs less per round trip when the gateway runs beside the database.
 */
export const upstreamAddress = (t: Pick<UpstreamTarget, 'host' | 'port'>): net.NetConnectOpts => (t.host.startsWith('/') ? { path: `${t.host.replace(/\/$/, '')}/.s.PGSQL.${t.port}` } : { host: t.host, port: t.port });

/** `track` is told every socket opened, so that a deadline can destroy whichever is current. */
async function openSocket(t: UpstreamTarget, track: (s: net.Socket) => void): Promise<net.Socket> {
  const plain = await new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect(upstreamAddress(t));
    track(s);
    s.once('connect', () => resolve(s));
    s.once('error', (e) => reject(new UpstreamError(`could not connect to upstream ${t.host}:${t.port}: ${(e as NodeJS.ErrnoException).code ?? e.message}`)));
  });
  if (!t.host.startsWith('/')) plain.setNoDelay(true);
  // No TLS on a local socket (PostgreSQL does not offer it there; the traffic never leaves the machine).
  const mode = t.host.startsWith('/') ? 'disable' : (t.sslmode ?? 'disable');
  if (mode === 'disable') return plain;
  plain.write(m.sslRequest());
  const answer = await new Promise<string>((resolve, reject) => {
    plain.once('data', (d) => resolve(String.fromCharCode(d[0]!)));
    plain.once('error', reject);
    plain.once('close', () => reject(new UpstreamError('upstream closed the connection during TLS negotiation')));
  });
  if (answer !== 'S') {
    if (mode === 'require') {
      plain.destroy();
      throw new UpstreamError('upstream does not support TLS but sslmode is require');
    }
    return plain;
  }
  return await new Promise<net.Socket>((resolve, reject) => {
    const s = tls.connect({ socket: plain, servername: net.isIP(t.host) ? undefined : t.host, rejectUnauthorized: t.sslRejectUnauthorized ?? false, ca: t.ca });
    track(s);
    s.once('secureConnect', () => resolve(s));
    s.once('error', (e) => reject(new UpstreamError(`TLS to upstream failed: ${e.message}`)));
  });
}

/**
 * Open an authenticated upstream session. `params` are the startup parameters to forward (database,
 * application_name, ...); the user and password are the gateway's own and never come from the client.
 */
export async function connectUpstream(t: UpstreamTarget, params: Record<string, string>): Promise<UpstreamConnection> {
  // One deadline for everything up to ReadyForQuery (TCP, TLS negotiation in any sslmode, authentication): an
  // upstream that accepts connections but never answers fails the login clearly, and leaves no socket behind.
  const ms = t.connectTimeoutMs ?? 10_000;
  const sockets: net.Socket[] = [];
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new UpstreamError(`the upstream database ${t.host}:${t.port} did not answer within ${ms / 1000} s (connecting, negotiating TLS and logging in)`, '08006')), ms);
  });
  try {
    return await Promise.race([openSocket(t, (s) => sockets.push(s)).then((s) => handshake(s, t, params)), deadline]);
  } catch (e) {
    for (const s of sockets) s.destroy();
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

function handshake(socket: net.Socket, t: UpstreamTarget, params: Record<string, string>): Promise<UpstreamConnection> {
  return new Promise((resolve, reject) => {
    const framer = new Framer(1 << 20);
    const parameters = new Map<string, string>();
    let pid = 0;
    let secret = 0;
    let scram: ScramClient | undefined;
    let done = false;
    const fail = (e: unknown) => {
      if (done) return;
      done = true;
      detach();
      reject(e instanceof UpstreamError ? e : new UpstreamError(`upstream handshake failed: ${(e as Error).message}`));
    };
    const needPassword = (): string => {
      if (t.password === undefined || t.password === '') throw new UpstreamError('upstream requires a password but none is configured for the gateway', '28000');
      return t.password;
    };
    const onData = (chunk: Buffer) => {
      try {
        let finished = false;
        framer.push(chunk, (type, buf, start, end) => {
          if (finished) return;
          const r = new Reader(buf, start + 5, end);
          switch (String.fromCharCode(type)) {
            case 'R': {
              const kind = r.int32();
              if (kind === 0) return;
              if (kind === 3) socket.write(m.passwordMessage(needPassword()));
              else if (kind === 5) socket.write(m.passwordMessage(md5Password(t.user, needPassword(), r.bytes(4))));
              else if (kind === 10) {
                const mechs: string[] = [];
                for (let s = r.cstring(); s !== ''; s = r.cstring()) mechs.push(s);
                if (!mechs.includes('SCRAM-SHA-256')) throw new UpstreamError(`upstream offers no supported SASL mechanism (${mechs.join(', ')})`, '28000');
                scram = new ScramClient(needPassword());
                socket.write(m.saslInitialResponse('SCRAM-SHA-256', scram.first()));
              } else if (kind === 11) {
                if (!scram) throw new UpstreamError('unexpected SASL continue from upstream', '08P01');
                socket.write(m.saslResponse(scram.final(r.rest().toString('utf8'))));
              } else if (kind === 12) {
                if (!scram) throw new UpstreamError('unexpected SASL final from upstream', '08P01');
                scram.verify(r.rest().toString('utf8'));
              } else throw new UpstreamError(`upstream requested unsupported authentication method ${kind}`, '28000');
              return;
            }
            case 'S':
              parameters.set(r.cstring(), r.cstring());
              return;
            case 'K':
              pid = r.int32();
              secret = r.int32();
              return;
            case 'N':
              return;
            case 'E': {
              const f = m.parseErrorFields(buf, start, end);
              const auth = f.code === '28P01' || f.code === '28000';
              // Upstream auth failures are about the gateway's credentials: report them without echoing details.
              throw new UpstreamError(auth ? 'the gateway could not authenticate to the upstream database (check the gateway\'s upstream credentials)' : `upstream refused the session: ${f.message ?? 'unknown error'}`, auth ? '08006' : f.code ?? '08006', f);
            }
            case 'Z': {
              finished = true;
              done = true;
              detach();
              const leftover = Buffer.from(buf.subarray(end));
              resolve({ socket, parameters, pid, secret, leftover, txStatus: String.fromCharCode(buf[start + 5]!) });
              return;
            }
            case 'v':
              return; // NegotiateProtocolVersion: we only ask for 3.0 options we know.
            default:
              throw new UpstreamError(`unexpected message '${String.fromCharCode(type)}' from upstream during startup`, '08P01');
          }
        });
      } catch (e) {
        fail(e);
      }
    };
    const onError = (e: Error) => fail(new UpstreamError(`upstream connection error: ${e.message}`));
    const onClose = () => fail(new UpstreamError('upstream closed the connection during startup'));
    function detach() {
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
    }
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.write(m.startupMessage({ ...params, user: t.user }));
  });
}

/** Send a CancelRequest to the upstream for the given upstream backend key. */
export async function cancelUpstream(t: UpstreamTarget, pid: number, secret: number): Promise<void> {
  const s = net.connect(upstreamAddress(t));
  await new Promise<void>((resolve) => {
    s.once('connect', () => {
      s.end(m.cancelRequest(pid, secret));
    });
    s.once('close', () => resolve());
    s.once('error', () => resolve());
    setTimeout(() => {
      s.destroy();
      resolve();
    }, 5000).unref();
  });
}
