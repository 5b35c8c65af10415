import { useCallback, useEffect, useState } from 'react';
import { plural } from './format';
import { api, type Approval, type Me } from './api';

const STATUS_CLASS: Record<Approval['status'], string> = { pending: 'warn', approved: 'ok', executed: 'ok', denied: 'bad', expired: 'muted', revoked: 'bad' };

function Preview({ p }: { p: NonNullable<Approval['preview']> }) {
  if (p.error) return <p className="error">preview failed: {p.error}</p>;
  if (p.kind === 'rows') return <p data-testid="preview"><strong>Blast radius:</strong> would affect <strong>{p.rows_affected}</strong> row{p.rows_affected === 1 ? '' : 's'} <span className="muted">({p.note})</span></p>;
  if (p.kind === 'objects')
    return (
      <div data-testid="preview">
        <strong>Touches:</strong>
        <ul>{p.objects?.map((o, i) => <li key={i}>{o.command} {o.name}{o.rows !== undefined ? ` — ${plural(o.rows, 'row')}` : ''}</li>)}</ul>
      </div>
    );
  return <p className="muted" data-testid="preview">{p.note ?? 'no preview'}</p>;
}

function Card({ a, me, focused }: { a: Approval; me: Me; focused: boolean }) {
  const [reason, setReason] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  // The server refuses approvals by anyone sharing a principal with the requester, and by agents unless the rule
  // allows them; the console only offers what it would accept.
  const mine = [me.identity.subject, me.identity.actingFor, ...(me.identity.delegation ?? [])].filter(Boolean);
  const theirs = [a.requester, a.acting_for, ...(a.requester_delegation ?? [])];
  const own = mine.some((p) => theirs.includes(p));
  const delegated = me.identity.kind === 'agent' || !!me.identity.actingFor;
  const approver = me.roles.includes('approver') || a.approver_groups.some((g) => me.identity.groups.includes(g));
  const decide = async (action: 'approve' | 'deny' | 'revoke') => {
    setBusy(true);
    setError('');
    try {
      await api(`/api/approvals/${a.id}/${action}`, { method: 'POST', body: { reason: reason || undefined } });
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <article className={`card${focused ? ' focused' : ''}`} data-testid={`approval-${a.id}`} data-status={a.status}>
      <header>
        <span className={`badge ${STATUS_CLASS[a.status]}`} data-testid="status">{a.status}</span>
        <strong className="mono">{a.id}</strong>
        <span>
          {a.requester_name ?? a.requester} <span className="muted">({a.requester_kind}{a.acting_for ? `, for ${a.acting_for}` : ''})</span>
        </span>
        <span className="muted">on {a.database} · {new Date(a.created_at).toLocaleString()}</span>
      </header>
      {a.kind === 'statement' ? (
        <>
          <pre className="sql">{a.sql}</pre>
          {a.params?.length ? (
            <p className="mono" data-testid="params">
              parameters: {a.params.map((v, i) => `$${i + 1}=${JSON.stringify(v)}${a.param_formats?.[i] === 1 ? ' (binary, hex)' : ''}${a.param_types?.[i] ? ` (type oid ${a.param_types[i]})` : ''}`).join(' ')}
            </p>
          ) : null}
          <p className="muted">
            rule <strong>{a.rule}</strong>{a.policy_reason ? ` — ${a.policy_reason}` : ''}
            {a.destructive?.length ? <span className="error"> · destructive: {a.destructive.join('; ')}</span> : null}
          </p>
          {a.preview ? <Preview p={a.preview} /> : a.status === 'pending' ? <p className="muted">preview running…</p> : null}
        </>
      ) : (
        <p>
          Just-in-time <strong>{a.role}</strong> access to <strong>{a.database}</strong> for {Math.round((a.duration_s ?? 0) / 60)} min: {a.justification}
          {a.grant_expires_at && <span className="muted"> (until {new Date(a.grant_expires_at).toLocaleString()})</span>}
        </p>
      )}
      <p className="muted">
        needs {a.quorum} approval{a.quorum > 1 ? 's' : ''}{a.approver_groups.length ? ` from ${a.approver_groups.join(' or ')}` : ''}
        {a.votes.length ? ' · ' : ''}
        {a.votes.map((v) => `${v.action === 'approve' ? '✔' : '✘'} ${v.by}${v.reason ? ` (“${v.reason}”)` : ''}`).join(', ')}
        {a.status === 'pending' && ` · expires ${new Date(a.expires_at).toLocaleTimeString()}`}
        {a.outcome && ` · ran: ${a.outcome.error ? `error ${a.outcome.error}` : plural(a.outcome.rows ?? 0, 'row')}`}
      </p>
      {a.status === 'pending' && (approver || own) && (
        <div className="decide">
          <input placeholder="reason (recorded)" value={reason} onChange={(e) => setReason(e.target.value)} data-testid="reason" />
          {approver && !own && (!delegated || a.agents_may_approve) && (
            <button className="primary" disabled={busy} onClick={() => decide('approve')}>Approve</button>
          )}
          <button className="danger" disabled={busy} onClick={() => decide('deny')}>{own ? 'Withdraw' : 'Deny'}</button>
        </div>
      )}
      {a.status === 'approved' && (approver || own) && (a.kind === 'statement' || (a.grant_expires_at ?? '') > new Date().toISOString()) && (
        <div className="decide">
          <input placeholder="reason (recorded)" value={reason} onChange={(e) => setReason(e.target.value)} data-testid="revoke-reason" />
          <button className="danger" disabled={busy} onClick={() => decide('revoke')} data-testid="revoke">Revoke</button>
        </div>
      )}
      {a.revoked_at && <p className="error" data-testid="revoked">revoked by {a.revoked_by} at {new Date(a.revoked_at).toLocaleString()}{a.revoke_reason ? ` (“${a.revoke_reason}”)` : ''}</p>}
      {error && <p className="error">{error}</p>}
    </article>
  );
}

function GrantForm() {
  const [f, setF] = useState({ database: '', role: 'read', duration: '1h', reason: '' });
  const [msg, setMsg] = useState('');
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    try {
      const r = await api<{ approval: Approval }>('/api/grants', { method: 'POST', body: f });
      setMsg(`requested ${r.approval.id}`);
    } catch (err) {
      setMsg((err as Error).message);
    }
  };
  return (
    <form className="filters" onSubmit={submit}>
      <strong>Request access:</strong>
      <input placeholder="database" required value={f.database} onChange={(e) => setF({ ...f, database: e.target.value })} />
      <select value={f.role} onChange={(e) => setF({ ...f, role: e.target.value })}>
        {['read', 'write', 'ddl', 'admin'].map((r) => <option key={r}>{r}</option>)}
      </select>
      <input placeholder="for (e.g. 1h)" required value={f.duration} onChange={(e) => setF({ ...f, duration: e.target.value })} size={6} />
      <input placeholder="reason" required value={f.reason} onChange={(e) => setF({ ...f, reason: e.target.value })} />
      <button type="submit">Request</button>
      {msg && <span className="muted">{msg}</span>}
    </form>
  );
}

export function ApprovalsPage({ me, focus }: { me: Me; focus?: string }) {
  const [items, setItems] = useState<Map<string, Approval>>(new Map());
  const [show, setShow] = useState<'pending' | 'all'>('pending');
  const [live, setLive] = useState(false);
  const [error, setError] = useState('');
  // Requests seen pending in this view stay on screen after they are decided, so the reviewer sees the outcome.
  const [seenPending] = useState(() => new Set<string>());
  const merge = useCallback((list: Approval[]) => {
    for (const a of list) if (a.status === 'pending') seenPending.add(a.id);
    setItems((prev) => {
      const next = new Map(prev);
      for (const a of list) if ((next.get(a.id)?.version ?? 0) <= a.version) next.set(a.id, a);
      return next;
    });
  }, [seenPending]);
  useEffect(() => {
    api<{ approvals: Approval[] }>('/api/approvals?limit=200').then((r) => merge(r.approvals), (e: Error) => setError(e.message));
    if (focus) api<{ approval: Approval }>(`/api/approvals/${focus}`).then((r) => merge([r.approval]), (e: Error) => setError(e.message));
    // Live: every change arrives as a server-sent event, no reload needed.
    const es = new EventSource('/api/events');
    es.addEventListener('hello', () => setLive(true));
    es.addEventListener('approval', (ev) => merge([JSON.parse((ev as MessageEvent).data)]));
    es.onerror = () => setLive(false);
    return () => es.close();
  }, [merge, focus]);
  const order = (x: Approval, y: Approval) => (x.id === focus ? -1 : y.id === focus ? 1 : y.created_at.localeCompare(x.created_at));
  // The pending view lists what awaits a decision; requests decided while on screen move below it, with their outcome.
  const list = [...items.values()].filter((a) => show === 'all' || a.status === 'pending' || a.id === focus).sort(order);
  const decided = show === 'pending' ? [...items.values()].filter((a) => a.status !== 'pending' && a.id !== focus && seenPending.has(a.id)).sort(order) : [];
  const pending = [...items.values()].filter((a) => a.status === 'pending').length;
  return (
    <section>
      <div className="toolbar">
        <h2>Approvals</h2>
        <span className="badge warn" data-testid="pending-count">{pending} pending</span>
        <span className={`badge ${live ? 'ok' : 'muted'}`} data-testid="live">{live ? 'live' : 'connecting…'}</span>
        <span className="spacer" />
        <label className="inline"><input type="radio" checked={show === 'pending'} onChange={() => setShow('pending')} /> pending</label>
        <label className="inline"><input type="radio" checked={show === 'all'} onChange={() => setShow('all')} /> all recent</label>
      </div>
      <GrantForm />
      {error && <p className="error">{error}</p>}
      {list.length === 0 && <p className="muted">Nothing awaiting a decision.</p>}
      {list.map((a) => <Card key={a.id} a={a} me={me} focused={a.id === focus} />)}
      {decided.length > 0 && (
        <div data-testid="decided">
          <h3 className="muted">Decided while you were here</h3>
          {decided.map((a) => <Card key={a.id} a={a} me={me} focused={false} />)}
        </div>
      )}
    </section>
  );
}
