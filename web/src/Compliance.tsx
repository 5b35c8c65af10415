import { useCallback, useEffect, useState } from 'react';
import { api } from './api';

interface Checkpoint {
  chain_id: string;
  seq: number;
  signed_at: string;
  key_id: string;
}
interface Sink {
  name: string;
  kind: string;
  status: string;
  backlog: number;
  delivered: number;
  last_error?: string;
  last_delivered_at?: string;
}
interface Status {
  checkpoints: { enabled: boolean; key_id?: string; interval_s?: number; signed_here: number; last_error?: string; latest: Checkpoint[] };
  streams: Sink[];
}
interface Item {
  id: string;
  kind: 'key' | 'identity';
  subject: string;
  identity_kind: string;
  groups: string[];
  key_id?: string;
  key_name?: string;
  acting_for?: string | null;
  expires_at?: string | null;
  last_used_at?: string | null;
  unused: boolean;
}
interface Decision {
  item_id: string;
  decision: 'confirm' | 'revoke';
  reviewer: string;
  reason?: string;
  decided_at: string;
}
interface Review {
  id: string;
  created_at: string;
  created_by: string;
  status: 'open' | 'closed';
  closed_at?: string;
  items: Item[];
  decisions: Decision[];
}

const day = (d: Date) => d.toISOString().slice(0, 10);
const quarterStart = (d: Date) => new Date(Date.UTC(d.getUTCFullYear(), Math.floor(d.getUTCMonth() / 3) * 3, 1));
const when = (s?: string | null) => (s ? new Date(s).toLocaleString() : '—');
const SINK_CLASS: Record<string, string> = { ok: 'ok', standby: '', failing: 'bad', backlogged: 'warn' };

function EvidenceCard() {
  const [from, setFrom] = useState(day(quarterStart(new Date())));
  const [to, setTo] = useState(day(new Date()));
  const href = `/api/compliance/evidence?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`;
  return (
    <div className="card">
      <h3>Evidence pack (SOC 2)</h3>
      <p className="muted">A zip with a readable report, JSON and CSV mapped to CC6.1–CC6.3, CC7.2, CC8.1, data exposure and audit integrity, plus the signed audit chains it comes from. Check it offline with <code>sluice evidence verify pack.zip --key public.pem</code>.</p>
      <div className="filters">
        <label className="inline">from <input type="date" value={from} onChange={(e) => setFrom(e.target.value)} data-testid="evidence-from" /></label>
        <label className="inline">to <input type="date" value={to} onChange={(e) => setTo(e.target.value)} data-testid="evidence-to" /></label>
        <a className="button primary" href={href} download data-testid="evidence-download">Download evidence pack</a>
      </div>
    </div>
  );
}

function IntegrityCard({ s }: { s: Status }) {
  const c = s.checkpoints;
  return (
    <div className="card">
      <h3>Signed checkpoints</h3>
      {c.enabled ? (
        <p>
          <span className={`badge ${c.last_error ? 'bad' : 'ok'}`}>{c.last_error ? 'failing' : 'signing'}</span> key <span className="mono">{c.key_id}</span>, every {c.interval_s}s; {c.signed_here} signed by this gateway{c.last_error ? <span className="error"> · {c.last_error}</span> : null}
        </p>
      ) : (
        <p className="muted">Not configured: set <code>audit.checkpoints</code> (a key from <code>sluice evidence keygen</code>) so evidence packs prove nothing was removed or rewritten.</p>
      )}
      {c.latest.length > 0 && (
        <table className="events">
          <thead><tr><th>chain</th><th>signed through event</th><th>signed at</th><th>key</th></tr></thead>
          <tbody>{c.latest.map((x) => <tr key={x.chain_id}><td className="mono">{x.chain_id}</td><td>{x.seq}</td><td>{when(x.signed_at)}</td><td className="mono">{x.key_id}</td></tr>)}</tbody>
        </table>
      )}
    </div>
  );
}

function StreamsCard({ s }: { s: Status }) {
  return (
    <div className="card">
      <h3>Audit streams</h3>
      {s.streams.length === 0 ? (
        <p className="muted">No sinks configured (<code>audit.streams</code>: otlp, webhook, syslog, file).</p>
      ) : (
        <table className="events" data-testid="streams-table">
          <thead><tr><th>sink</th><th>kind</th><th>status</th><th>undelivered</th><th>delivered here</th><th>last delivery</th></tr></thead>
          <tbody>
            {s.streams.map((x) => (
              <tr key={x.name}>
                <td>{x.name}</td><td>{x.kind}</td>
                <td><span className={`badge ${SINK_CLASS[x.status] ?? ''}`}>{x.status}</span>{x.last_error ? <span className="error"> {x.last_error}</span> : null}</td>
                <td>{x.backlog}</td><td>{x.delivered}</td><td>{when(x.last_delivered_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

function ReviewRow({ item, decision, canDecide, onDecide }: { item: Item; decision?: Decision; canDecide: boolean; onDecide: (id: string, d: 'confirm' | 'revoke', reason: string) => void }) {
  const [reason, setReason] = useState('');
  return (
    <tr data-testid={`review-item-${item.id}`}>
      <td>{item.subject} <span className="muted">{item.identity_kind}{item.acting_for ? ` for ${item.acting_for}` : ''}</span></td>
      <td>{item.kind === 'key' ? <span className="mono">{item.key_id} ({item.key_name})</span> : <span className="muted">signs in with the identity provider</span>}</td>
      <td>{item.groups.join(', ') || '—'}</td>
      <td className="nowrap">{when(item.last_used_at)} {item.unused && <span className="badge warn">unused</span>}</td>
      <td>
        {decision ? (
          <span data-testid="decision"><span className={`badge ${decision.decision === 'confirm' ? 'ok' : 'bad'}`}>{decision.decision === 'confirm' ? 'confirmed' : 'revoked'}</span> by {decision.reviewer}{decision.reason ? ` — ${decision.reason}` : ''}</span>
        ) : canDecide ? (
          <div className="decide">
            <input placeholder="reason" value={reason} onChange={(e) => setReason(e.target.value)} />
            <button className="primary" onClick={() => onDecide(item.id, 'confirm', reason)}>Confirm</button>
            <button className="danger" onClick={() => onDecide(item.id, 'revoke', reason)}>Revoke</button>
          </div>
        ) : (
          <span className="muted">undecided</span>
        )}
      </td>
    </tr>
  );
}

function ReviewCard({ isAdmin }: { isAdmin: boolean }) {
  const [reviews, setReviews] = useState<Review[]>([]);
  const [error, setError] = useState('');
  const [me, setMe] = useState('');
  useEffect(() => void api<{ identity: { subject: string } }>('/api/me').then((m) => setMe(m.identity.subject), () => {}), []);
  const load = useCallback(() => {
    api<{ reviews: Review[] }>('/api/compliance/reviews').then((r) => setReviews(r.reviews), (e: Error) => setError(e.message));
  }, []);
  useEffect(load, [load]);
  const act = (p: Promise<unknown>) => p.then(() => (setError(''), load()), (e: Error) => setError(e.message));
  const current = reviews.find((r) => r.status === 'open') ?? reviews[0];
  const decided = new Map(current?.decisions.map((d) => [d.item_id, d]) ?? []);
  return (
    <div className="card">
      <div className="toolbar">
        <h3>Access review</h3>
        <span className="spacer" />
        {isAdmin && !reviews.some((r) => r.status === 'open') && <button className="primary" onClick={() => act(api('/api/compliance/reviews', { method: 'POST', body: {} }))}>Start access review</button>}
        {isAdmin && current?.status === 'open' && <button onClick={() => act(api(`/api/compliance/reviews/${current.id}/close`, { method: 'POST', body: {} }))}>Close review</button>}
      </div>
      {error && <p className="error">{error}</p>}
      {!current ? (
        <p className="muted">No review yet. A review lists every identity and key with access, its groups and last use; each is confirmed or revoked, and every decision is audited and goes into evidence packs.</p>
      ) : (
        <>
          <p className="muted" data-testid="review-summary">
            {current.id}: started {when(current.created_at)} by {current.created_by}; {current.status}{current.closed_at ? ` ${when(current.closed_at)}` : ''} · {current.decisions.length} of {current.items.length} decided
          </p>
          <table className="events" data-testid="review-table">
            <thead><tr><th>identity</th><th>credential</th><th>groups</th><th>last used</th><th>decision</th></tr></thead>
            <tbody>
              {current.items.map((i) => (
                <ReviewRow key={i.id} item={i} decision={decided.get(i.id)} canDecide={isAdmin && current.status === 'open' && i.subject !== me && i.acting_for !== me} onDecide={(id, d, reason) => act(api(`/api/compliance/reviews/${current.id}/items/${encodeURIComponent(id)}`, { method: 'POST', body: { decision: d, reason } }))} />
              ))}
            </tbody>
          </table>
        </>
      )}
    </div>
  );
}

export function CompliancePage({ isAdmin }: { isAdmin: boolean }) {
  const [status, setStatus] = useState<Status | undefined>();
  const [error, setError] = useState('');
  useEffect(() => {
    const load = () => api<Status>('/api/compliance/status').then((s) => (setStatus(s), setError('')), (e: Error) => setError(e.message));
    load();
    const t = setInterval(load, 5000);
    return () => clearInterval(t);
  }, []);
  return (
    <section>
      <div className="toolbar"><h2>Compliance</h2></div>
      {error && <p className="error">{error}</p>}
      <EvidenceCard />
      {status && <IntegrityCard s={status} />}
      {status && <StreamsCard s={status} />}
      <ReviewCard isAdmin={isAdmin} />
    </section>
  );
}
