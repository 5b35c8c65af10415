import { StrictMode, useCallback, useEffect, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { api, setCsrf, type Me } from './api';
import { SignIn } from './SignIn';
import { AuditPage } from './Audit';
import { SessionsPage } from './Sessions';
import { ApprovalsPage } from './Approvals';
import { PolicyPage } from './Policy';
import { CompliancePage } from './Compliance';
import './style.css';

/** The path is the route: links from NOTICEs (/approvals/apr_...) open the right page. */
function usePath(): [string, (p: string) => void] {
  const [path, setPath] = useState(location.pathname);
  useEffect(() => {
    const on = () => setPath(location.pathname);
    addEventListener('popstate', on);
    return () => removeEventListener('popstate', on);
  }, []);
  const go = useCallback((p: string) => {
    history.pushState(null, '', p);
    setPath(p);
  }, []);
  return [path, go];
}

function App() {
  const [me, setMe] = useState<Me | null | undefined>(undefined);
  const [path, go] = usePath();
  const load = useCallback(() => {
    api<Me>('/api/me').then(
      (m) => {
        setCsrf(m.csrf);
        setMe(m);
      },
      () => setMe(null),
    );
  }, []);
  useEffect(load, [load]);
  if (me === undefined) return <p className="muted pad">Loading…</p>;
  if (me === null) return <SignIn onSignedIn={load} />;
  const can = (r: string) => me.roles.includes(r);
  const tabs: [string, string, boolean][] = [
    ['/audit', 'Audit', can('auditor')],
    ['/sessions', 'Live sessions', can('auditor')],
    ['/approvals', 'Approvals', true],
    ['/policy', 'Policy', true],
    ['/compliance', 'Compliance', can('auditor')],
  ];
  const visible = tabs.filter((t) => t[2]);
  const current = visible.find((t) => path.startsWith(t[0]))?.[0] ?? (can('auditor') ? '/audit' : '/approvals');
  const signOut = async () => {
    await api('/auth/logout', { method: 'POST' }).catch(() => {});
    setMe(null);
  };
  return (
    <div className="app">
      <header>
        <strong className="brand">Sluice</strong>
        <nav>
          {visible.map(([p, label]) => (
            <a key={p} href={p} className={current === p ? 'active' : ''} onClick={(e) => { e.preventDefault(); go(p); }}>
              {label}
            </a>
          ))}
        </nav>
        <span className="who" data-testid="who">
          {me.identity.displayName ?? me.identity.subject} <span className="muted">({me.roles.filter((r) => r !== 'user').join(', ') || 'user'})</span>
          <button className="link" onClick={signOut}>Sign out</button>
        </span>
      </header>
      <main>
        {current === '/audit' && <AuditPage />}
        {current === '/sessions' && <SessionsPage isAdmin={can('admin')} />}
        {current === '/approvals' && <ApprovalsPage me={me} focus={path.startsWith('/approvals/') ? path.slice('/approvals/'.length) : undefined} />}
        {current === '/policy' && <PolicyPage isAdmin={can('admin')} />}
        {current === '/compliance' && <CompliancePage isAdmin={can('admin')} />}
      </main>
    </div>
  );
}

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
