import { useCallback, useEffect, useState } from 'react';
import { api, type AuditEvent } from './api';
import { MaskedMark } from './format';

const FILTERS = ['subject', 'kind', 'decision', 'type', 'database', 'table', 'since', 'until'] as const;
type Filters = Partial<Record<(typeof FILTERS)[number], string>>;

function query(f: Filters, extra: Record<string, string> = {}): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(f)) if (v) q.set(k, k === 'since' || k === 'until' ? new Date(v).toISOString() : v);
  for (const [k, v] of Object.entries(extra)) q.set(k, v);
  return q.toString();
}

const who = (e: AuditEvent) => (e.subject ? `${e.subject}${e.acting_for ? ` → for ${e.acting_for}` : ''}` : '—');

export function AuditPage() {
  const [filters, setFilters] = useState<Filters>({});
  const [applied, setApplied] = useState<Filters>({});
  const [events, setEvents] = useState<AuditEvent[]>([]);
  const [live, setLive] = useState(true);
  const [error, setError] = useState('');
  const [selected, setSelected] = useState<AuditEvent | undefined>();
  const [chain, setChain] = useState<{ ok: boolean; chains: { chain_id: string; ok: boolean; events: number; problem?: string }[] } | undefined>();

  const load = useCallback(() => {
    api<{ events: AuditEvent[] }>(`/api/audit?${query(applied, { limit: '200' })}`).then(
      (r) => {
        setEvents(r.events);
        setError('');
      },
      (e: Error) => setError(e.message),
    );
  }, [applied]);
  useEffect(() => {
    load();
    if (!live) return;
    const t = setInterval(load, 2000);
    return () => clearInterval(t);
  }, [load, live]);
  const verify = useCallback(() => {
    setChain(undefined);
    api('/api/audit/verify').then(setChain, (e: Error) => setError(e.message));
  }, []);
  useEffect(verify, [verify]);

  return (
    <section>
      <div className="toolbar">
        <h2>Audit</h2>
        <span data-testid="chain" className={chain ? (chain.ok ? 'badge ok' : 'badge bad') : 'badge'} title={chain?.chains.map((c) => `${c.chain_id}: ${c.ok ? `${c.events} events intact` : c.problem}`).join('\n')}>
          {chain ? (chain.ok ? `hash chain intact (${chain.chains.reduce((n, c) => n + c.events, 0)} events)` : 'hash chain BROKEN') : 'verifying…'}
        </span>
        <button className="link" onClick={verify}>verify again</button>
        <span className="spacer" />
        <label className="inline">
          <input type="checkbox" checked={live} onChange={(e) => setLive(e.target.checked)} /> live
        </label>
        <a className="button" href={`/api/audit/export?${query(applied, { format: 'jsonl' })}`}>Export JSONL</a>
        <a className="button" href={`/api/audit/export?${query(applied, { format: 'csv' })}`}>Export CSV</a>
      </div>
      <form
        className="filters"
        onSubmit={(e) => {
          e.preventDefault();
          setApplied({ ...filters });
        }}
      >
        <input placeholder="identity" value={filters.subject ?? ''} onChange={(e) => setFilters({ ...filters, subject: e.target.value })} />
        <select value={filters.kind ?? ''} onChange={(e) => setFilters({ ...filters, kind: e.target.value })}>
          <option value="">any kind</option>
          <option value="human">human</option>
          <option value="agent">agent</option>
          <option value="service">service</option>
        </select>
        <select value={filters.decision ?? ''} onChange={(e) => setFilters({ ...filters, decision: e.target.value })}>
          <option value="">any decision</option>
          <option value="allow">allow</option>
          <option value="deny">deny</option>
        </select>
        <select value={filters.type ?? ''} onChange={(e) => setFilters({ ...filters, type: e.target.value })}>
          <option value="">any event</option>
          {['statement', 'session_start', 'session_end', 'auth_failure', 'approval', 'tool_call', 'console_login', 'policy_loaded', 'protocol_error'].map((t) => (
            <option key={t}>{t}</option>
          ))}
        </select>
        <input placeholder="database" value={filters.database ?? ''} onChange={(e) => setFilters({ ...filters, database: e.target.value })} />
        <input placeholder="table" value={filters.table ?? ''} onChange={(e) => setFilters({ ...filters, table: e.target.value })} />
        <label className="inline">
          since <input type="datetime-local" value={filters.since ?? ''} onChange={(e) => setFilters({ ...filters, since: e.target.value })} />
        </label>
        <label className="inline">
          until <input type="datetime-local" value={filters.until ?? ''} onChange={(e) => setFilters({ ...filters, until: e.target.value })} />
        </label>
        <button type="submit">Filter</button>
      </form>
      {error && <p className="error">{error}</p>}
      <div className={selected ? 'split open' : 'split'}>
        <div className="tablewrap">
        <table className="events" data-testid="audit-table">
          <thead>
            <tr>
              <th>time</th>
              <th>event</th>
              <th>who</th>
              <th>db</th>
              <th>decision</th>
              <th>statement</th>
              <th>rows</th>
            </tr>
          </thead>
          <tbody>
            {events.map((e) => (
              <tr key={`${e.chain_id}:${e.seq}`} onClick={() => setSelected(e)} className={selected === e ? 'selected' : ''}>
                <td className="nowrap">{new Date(e.ts).toLocaleTimeString()}</td>
                <td className="nowrap">{e.type}</td>
                <td>
                  {who(e)} <span className="muted">{e.identity_kind}</span>
                </td>
                <td>{e.database}</td>
                <td>{e.decision && <span className={`badge ${e.decision === 'allow' ? 'ok' : 'bad'}`}>{e.decision}</span>} {e.rule && <span className="muted">{e.rule}</span>}</td>
                <td className="sql">{e.sql ?? e.reason ?? (e.details?.event as string | undefined) ?? ''}</td>
                <td className="nowrap">{e.rows ?? ''} {e.masked && <MaskedMark masked={e.masked} />}</td>
              </tr>
            ))}
          </tbody>
        </table>
        </div>
        {selected && (
          <aside className="detail" data-testid="audit-detail">
            <button className="link close" onClick={() => setSelected(undefined)}>close</button>
            <h3>{selected.type} · {new Date(selected.ts).toLocaleString()}</h3>
            <dl>
              <dt>who</dt>
              <dd>{who(selected)} ({selected.identity_kind ?? '?'})</dd>
              <dt>from</dt>
              <dd>{selected.client_addr} {selected.application_name}</dd>
              {selected.decision && (
                <>
                  <dt>decision</dt>
                  <dd>{selected.decision} by rule {selected.rule} {selected.reason && `— ${selected.reason}`}</dd>
                </>
              )}
              {selected.sql && (
                <>
                  <dt>SQL</dt>
                  <dd><pre>{selected.sql}</pre></dd>
                </>
              )}
              {selected.tables?.length ? (<><dt>tables</dt><dd>{selected.tables.join(', ')}</dd></>) : null}
              {selected.columns?.length ? (<><dt>columns</dt><dd>{selected.columns.join(', ')}</dd></>) : null}
              {selected.masked && (<><dt>masked</dt><dd>{Object.entries(selected.masked).map(([k, v]) => `${k} ×${v}`).join(', ')}</dd></>)}
              {selected.masking_exempt && (<><dt>exempt</dt><dd>saw cleartext (masking exemption)</dd></>)}
              {selected.approval_id && (<><dt>approval</dt><dd><a href={`/approvals/${selected.approval_id}`}>{selected.approval_id}</a></dd></>)}
              {selected.error && (<><dt>error</dt><dd className="error">{selected.error}</dd></>)}
              <dt>chain</dt>
              <dd className="mono">{selected.chain_id} #{selected.seq} {selected.hash.slice(0, 16)}…</dd>
            </dl>
            <details>
              <summary>raw event</summary>
              <pre>{JSON.stringify(selected, null, 2)}</pre>
            </details>
          </aside>
        )}
      </div>
    </section>
  );
}
