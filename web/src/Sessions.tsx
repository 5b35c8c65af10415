import { useCallback, useEffect, useState } from 'react';
import { api } from './api';

interface Session {
  id: string;
  subject?: string;
  kind?: string;
  acting_for?: string;
  database?: string;
  client_addr: string;
  application_name?: string;
  started_at: string;
  tls: boolean;
  statements: number;
  transaction: string;
  current_sql?: string;
  awaiting_approval?: string;
  gateway?: string;
}

export function SessionsPage({ isAdmin }: { isAdmin: boolean }) {
  const [sessions, setSessions] = useState<Session[]>([]);
  const [error, setError] = useState('');
  const load = useCallback(() => {
    api<{ sessions: Session[] }>('/api/sessions').then(
      (r) => {
        setSessions(r.sessions);
        setError('');
      },
      (e: Error) => setError(e.message),
    );
  }, []);
  useEffect(() => {
    load();
    const t = setInterval(load, 2000);
    return () => clearInterval(t);
  }, [load]);
  const terminate = async (id: string) => {
    if (!confirm('Terminate this session?')) return;
    await api(`/api/sessions/${id}`, { method: 'DELETE' }).catch((e: Error) => setError(e.message));
    load();
  };
  return (
    <section>
      <div className="toolbar">
        <h2>Live sessions</h2>
        <span className="muted">{sessions.length} connected</span>
      </div>
      {error && <p className="error">{error}</p>}
      <table className="events" data-testid="sessions-table">
        <thead>
          <tr>
            <th>who</th>
            <th>database</th>
            <th>from</th>
            <th>since</th>
            <th>statements</th>
            <th>now</th>
            {isAdmin && <th />}
          </tr>
        </thead>
        <tbody>
          {sessions.map((s) => (
            <tr key={s.id}>
              <td>
                {s.subject} <span className="muted">{s.kind}{s.acting_for ? ` for ${s.acting_for}` : ''}</span>
              </td>
              <td>{s.database}</td>
              <td>
                {s.client_addr} <span className="muted">{s.application_name}{s.tls ? ' · TLS' : ''}{s.gateway ? ` · via ${s.gateway}` : ''}</span>
              </td>
              <td className="nowrap">{new Date(s.started_at).toLocaleTimeString()}</td>
              <td>{s.statements}</td>
              <td className="sql">
                {s.awaiting_approval ? <a href={`/approvals/${s.awaiting_approval}`}>awaiting {s.awaiting_approval}</a> : null} {s.current_sql ?? (s.transaction === 'T' ? 'idle in transaction' : 'idle')}
              </td>
              {isAdmin && (
                <td>
                  <button className="danger" onClick={() => terminate(s.id)}>Terminate</button>
                </td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
