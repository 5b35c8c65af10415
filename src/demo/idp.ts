import http from 'node:http';
import * as jose from 'jose';

/**
 * A minimal OIDC issuer for the demo: discovery document + JWKS over HTTP on loopback, and a way to mint
 * RS256 tokens. The gateway verifies these exactly as it would Okta's or Keycloak's.
 */
export class DemoIssuer {
  private constructor(private readonly server: http.Server, readonly issuer: string, private readonly key: jose.CryptoKey, private readonly kid: string) {}

  static async start(host = '127.0.0.1', port = 0): Promise<DemoIssuer> {
    const { publicKey, privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
    const jwk = { ...(await jose.exportJWK(publicKey)), alg: 'RS256', use: 'sig', kid: 'demo-1' };
    let issuer = '';
    const server = http.createServer((req, res) => {
      const send = (body: unknown) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (req.url === '/.well-known/openid-configuration') return send({ issuer, jwks_uri: `${issuer}/jwks`, id_token_signing_alg_values_supported: ['RS256'] });
      if (req.url === '/jwks') return send({ keys: [jwk] });
      res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(port, host, r));
    issuer = `http://${host}:${(server.address() as { port: number }).port}`;
    return new DemoIssuer(server, issuer, privateKey, jwk.kid);
  }

  mint(sub: string, claims: Record<string, unknown>, opts: { audience?: string; expiresIn?: string } = {}): Promise<string> {
    return new jose.SignJWT(claims)
      .setProtectedHeader({ alg: 'RS256', kid: this.kid })
      .setIssuer(this.issuer)
      .setSubject(sub)
      .setAudience(opts.audience ?? 'sluice')
      .setIssuedAt()
      .setExpirationTime(opts.expiresIn ?? '12h')
      .sign(this.key);
  }

  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}
