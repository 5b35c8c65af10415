import { useEffect, useState } from 'react';
import { api } from './api';

interface Rule {
  name: string;
  description?: string;
  match?: Record<string, unknown>;
  action: string;
  reason?: string;
  source?: string;
  approval?: Record<string, unknown>;
}
interface PolicyDoc {
  file?: string;
  default: string;
  rules: Rule[];
  masking?: Record<string, unknown>;
}
interface TestResult {
  decision: string;
  rule: string;
  reason: string;
  statements: { command: string; class: string; tables: { name: string; access: string }[]; destructive: string[]; flags: string[] }[];
  parse_error?: string;
}

export function PolicyPage({ isAdmin }: { isAdmin: boolean }) {
  const [policy, setPolicy] = useState<PolicyDoc | undefined>();
  const [sql, setSql] = useState('');
  const [database, setDatabase] = useState('');
  const [who, setWho] = useState({ subject: '', kind: 'human', groups: '' });
  const [result, setResult] = useState<TestResult | undefined>();
  const [error, setError] = useState('');
  useEffect(() => {
    api<PolicyDoc>('/api/policy').then(setPolicy, (e: Error) => setError(e.message));
  }, []);
  const test = async (e: React.FormEvent) => {
    e.preventDefault();
    setError('');
    try {
      const identity = isAdmin && who.subject ? { subject: who.subject, kind: who.kind, groups: who.groups.split(',').map((g) => g.trim()).filter(Boolean) } : undefined;
      setResult(await api<TestResult>('/api/policy/test', { method: 'POST', body: { sql, database: database || undefined, identity } }));
    } catch (err) {
      setError((err as Error).message);
    }
  };
  return (
    <section>
      <div className="toolbar">
        <h2>Policy</h2>
        <span className="muted">{policy?.file} · default {policy?.default}</span>
      </div>
      <form className="tester" onSubmit={test}>
        <h3>Would this be allowed?</h3>
        <textarea rows={3} placeholder="SQL" value={sql} onChange={(e) => setSql(e.target.value)} data-testid="test-sql" />
        <div className="filters">
          <input placeholder="database" value={database} onChange={(e) => setDatabase(e.target.value)} />
          {isAdmin && (
            <>
              <input placeholder="as subject (default: you)" value={who.subject} onChange={(e) => setWho({ ...who, subject: e.target.value })} />
              <select value={who.kind} onChange={(e) => setWho({ ...who, kind: e.target.value })}>
                <option>human</option>
                <option>agent</option>
                <option>service</option>
              </select>
              <input placeholder="groups a,b" value={who.groups} onChange={(e) => setWho({ ...who, groups: e.target.value })} />
            </>
          )}
          <button type="submit" disabled={!sql.trim()}>Test</button>
        </div>
        {result && (
          <div className="result" data-testid="test-result">
            <span className={`badge ${result.decision === 'allow' ? 'ok' : result.decision === 'deny' ? 'bad' : 'warn'}`}>{result.decision}</span> by rule <strong>{result.rule}</strong>: {result.reason}
            <ul>
              {result.statements.map((s, i) => (
                <li key={i}>
                  {s.command} <span className="muted">({s.class})</span> {s.tables.map((t) => `${t.name}:${t.access}`).join(', ')}
                  {s.destructive.length ? <span className="error"> destructive: {s.destructive.join('; ')}</span> : null}
                  {s.flags.length ? <span className="muted"> flags: {s.flags.join(', ')}</span> : null}
                </li>
              ))}
            </ul>
          </div>
        )}
      </form>
      {error && <p className="error">{error}</p>}
      <h3>Rules (first match wins)</h3>
      <table className="events">
        <thead>
          <tr>
            <th>#</th>
            <th>rule</th>
            <th>match</th>
            <th>action</th>
            <th>source</th>
          </tr>
        </thead>
        <tbody>
          {policy?.rules.map((r, i) => (
            <tr key={r.name}>
              <td>{i + 1}</td>
              <td>
                <strong>{r.name}</strong>
                <div className="muted">{r.description ?? r.reason}</div>
              </td>
              <td className="mono">{r.match ? JSON.stringify(r.match) : 'everything'}</td>
              <td>
                <span className={`badge ${r.action === 'allow' ? 'ok' : r.action === 'deny' ? 'bad' : 'warn'}`}>{r.action}</span>
                {r.approval ? <div className="mono">{JSON.stringify(r.approval)}</div> : null}
              </td>
              <td className="muted">{r.source}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {policy?.masking && (
        <>
          <h3>Masking</h3>
          <pre>{JSON.stringify(policy.masking, null, 2)}</pre>
        </>
      )}
    </section>
  );
}
