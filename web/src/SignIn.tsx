import { useEffect, useState } from 'react';
import { api, ApiError } from './api';

export function SignIn({ onSignedIn }: { onSignedIn: () => void }) {
  const [oidc, setOidc] = useState<{ issuer: string } | null>(null);
  const [token, setToken] = useState('');
  const [error, setError] = useState('');
  useEffect(() => {
    api<{ oidc: { issuer: string } | null }>('/auth/config').then((c) => setOidc(c.oidc), () => {});
  }, []);
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    setError('');
    try {
      await api('/auth/token', { method: 'POST', body: { token: token.trim() } });
      onSignedIn();
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    }
  };
  const ret = encodeURIComponent(location.pathname + location.search);
  return (
    <div className="signin">
      <h1>Sluice</h1>
      <p className="muted">Identity-aware database gateway</p>
      {oidc && (
        <a className="button primary" href={`/auth/login?return=${ret}`}>
          Sign in with {new URL(oidc.issuer).host}
        </a>
      )}
      <form onSubmit={submit}>
        <label>
          {oidc ? 'or paste' : 'Paste'} an OIDC token or Sluice key
          <input type="password" value={token} onChange={(e) => setToken(e.target.value)} placeholder="eyJ… or slk_…" autoComplete="off" />
        </label>
        <button type="submit" disabled={!token.trim()}>Sign in with token</button>
      </form>
      {error && <p className="error">{error}</p>}
    </div>
  );
}
