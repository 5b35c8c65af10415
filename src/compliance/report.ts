import type { Evidence } from './evidence.js';

/** The pack's human-readable report: one self-contained HTML page (no scripts, no external resources). */

const esc = (v: unknown): string =>
  v === undefined || v === null ? '' : String(Array.isArray(v) ? v.join(', ') : v).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

const day = (iso: string | undefined | null) => (iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '');

type Col<T> = [string, (r: T) => unknown, string?];

function table<T>(rows: T[], cols: Col<T>[], empty: string, total?: number): string {
  if (!rows.length) return `<p class="empty">${esc(empty)}</p>`;
  const head = cols.map(([h]) => `<th>${esc(h)}</th>`).join('');
  const body = rows.map((r) => `<tr>${cols.map(([, f, cls]) => `<td${cls ? ` class="${cls}"` : ''}>${esc(f(r))}</td>`).join('')}</tr>`).join('\n');
  const more = total !== undefined && total > rows.length ? `<p class="note">Showing ${rows.length} of ${total}; the CSV and JSON files hold the rest.</p>` : '';
  return `<table><thead><tr>${head}</tr></thead><tbody>\n${body}\n</tbody></table>${more}`;
}

const section = (id: string, criteria: string, title: string, intro: string, body: string) =>
  `<section id="${id}"><h2><span class="crit">${esc(criteria)}</span> ${esc(title)}</h2><p class="intro">${esc(intro)}</p>${body}</section>`;

const STYLE = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;margin:0;background:#f6f7f9}
header{background:#17324d;color:#fff;padding:24px 40px}header h1{margin:0 0 4px;font-size:22px}header p{margin:0;opacity:.85}
main{padding:8px 40px 40px;max-width:1200px}
nav.toc{margin:16px 0;display:flex;flex-wrap:wrap;gap:8px}nav.toc a{background:#fff;border:1px solid #d5dae1;border-radius:4px;padding:4px 10px;color:#17324d;text-decoration:none;font-size:13px}
section{background:#fff;border:1px solid #dde2e8;border-radius:6px;padding:16px 20px;margin:16px 0}
h2{font-size:17px;margin:0 0 6px}h3{font-size:14px;margin:16px 0 6px}.crit{background:#e4ecf5;color:#17324d;border-radius:3px;padding:1px 6px;font-size:12px;margin-right:6px;vertical-align:2px}
.intro{color:#55606e;margin:0 0 10px}.empty{color:#6b7683;font-style:italic}.note{color:#6b7683;font-size:12px}
table{border-collapse:collapse;width:100%;font-size:12.5px;margin:6px 0}th,td{text-align:left;border-bottom:1px solid #e8ebef;padding:4px 6px;vertical-align:top}
th{background:#f1f3f6;font-weight:600}td.sql{font-family:ui-monospace,Menlo,monospace;font-size:12px;max-width:420px;word-break:break-word}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}.card{background:#fff;border:1px solid #dde2e8;border-radius:6px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:20px}.card span{color:#55606e;font-size:12px}
.ok{color:#1b7a3a;font-weight:600}.bad{color:#b42318;font-weight:600}.warn{color:#9a6700}
pre.diff{background:#f6f8fa;border:1px solid #e1e4e8;padding:8px;font-size:12px;overflow:auto}.add{color:#1b7a3a}.del{color:#b42318}
@media print{body{background:#fff}section{break-inside:avoid}}`;

function cards(ev: Evidence): string {
  const s = ev.summary;
  const items: [string, number | string, string?][] = [
    ['audit events', s.events!], ['identities', s.identities!], ['statements', s.statements!], ['denied', s.denied!], ['held for approval', s.held!],
    ['login failures', s.auth_failures!], ['anomalies', s.anomalies!], ['policy versions', s.policy_versions!],
    ['chains intact', `${s.chains_intact}/${s.chains}`, s.chains_intact === s.chains ? 'ok' : 'bad'], ['signed checkpoints', s.checkpoints!],
  ];
  return `<div class="cards">${items.map(([l, v, c]) => `<div class="card"><b${c ? ` class="${c}"` : ''}>${esc(v)}</b><span>${esc(l)}</span></div>`).join('')}</div>`;
}

function access(ev: Evidence): string {
  const a = ev.cc6_1_logical_access;
  const ids = table(a.identities, [['identity', (r) => r.subject], ['kind', (r) => r.kind], ['groups', (r) => r.groups], ['auth', (r) => r.auth_methods], ['acting for', (r) => r.acting_for], ['first seen', (r) => day(r.first_seen)], ['last seen', (r) => day(r.last_seen)], ['sessions', (r) => r.sessions], ['statements', (r) => r.statements], ['denied', (r) => r.denied]], 'No identity used the gateway in this period.');
  const groups = table(a.groups, [['group', (r) => r.group], ['members seen', (r) => r.members]], 'No groups.');
  const keys = table(a.keys, [['key', (r) => `${r.key_id} (${r.name})`], ['subject', (r) => r.subject], ['kind', (r) => r.kind], ['groups', (r) => r.groups], ['created', (r) => `${day(r.created_at)}${r.created_by ? ` by ${r.created_by}` : ''}`], ['expires', (r) => day(r.expires_at)], ['revoked', (r) => day(r.revoked_at)], ['logins in period', (r) => r.logins_in_period], ['status in period', (r) => [r.created_in_period && 'created', r.expired_in_period && 'expired', r.revoked_in_period && 'revoked'].filter(Boolean).join(', ') || 'active']], 'No keys existed in this period.');
  const pol = a.policy_versions.length
    ? a.policy_versions.map((p, i) => `<h3>Version ${i + 1}: <code>${esc(p.hash.slice(0, 16))}</code></h3><p>Loaded ${esc(day(p.loaded_at))} by ${esc(p.loaded_by)}; in force until ${esc(p.in_force_until ? day(p.in_force_until) : 'the end of the period')}; ${p.rules} rules.</p>${p.diff_from_previous.length ? `<pre class="diff">${p.diff_from_previous.map((l) => `<span class="${l.startsWith('+') ? 'add' : 'del'}">${esc(l)}</span>`).join('\n')}</pre>` : i ? '<p class="note">Same rules as the previous version.</p>' : ''}`).join('')
    : '<p class="empty">No policy version was recorded for this period.</p>';
  return section('cc6-1', 'CC6.1 · CC6.2 · CC6.3', 'Logical access', 'Who used the database gateway, with which groups and credentials, and the access policy in force throughout the period (every version, who loaded it and what changed).', `<h3>Identities</h3>${ids}<h3>Groups</h3>${groups}<h3>Keys</h3>${keys}<h3>Policy in force</h3>${pol}`);
}

function provisioning(ev: Evidence): string {
  const p = ev.cc6_3_provisioning;
  const grants = table(p.grants, [['request', (r) => r.id], ['requester', (r) => r.requester], ['database', (r) => r.database], ['role', (r) => r.role], ['reason', (r) => r.justification], ['status', (r) => r.status], ['approved by', (r) => r.approvers], ['valid until', (r) => day(r.valid_until)], ['revoked', (r) => (r.revoked_at ? `${day(r.revoked_at)} by ${r.revoked_by}${r.revoke_reason ? `: ${r.revoke_reason}` : ''}` : '')]], 'No just-in-time grants were requested in this period.');
  const keys = table(p.key_changes, [['time', (r) => day(r.ts)], ['event', (r) => r.event], ['key', (r) => r.key_id], ['subject', (r) => r.subject], ['by', (r) => r.by]], 'No keys were created or revoked in this period.');
  return section('cc6-3', 'CC6.3', 'Provisioning and removal', 'Just-in-time grants with their approvers and expiry, revocations, and keys issued and revoked.', `<h3>Just-in-time grants</h3>${grants}<h3>Keys created and revoked</h3>${keys}`);
}

function monitoring(ev: Evidence): string {
  const m = ev.cc7_2_monitoring;
  const anomalies = table(m.anomalies, [['time', (r) => day(r.ts)], ['kind', (r) => r.kind.replace(/_/g, ' ')], ['identity', (r) => r.subject], ['detail', (r) => r.detail]], 'No anomalies.');
  const denied = table(m.denied.items.slice(0, 200), [['time', (r) => day(r.ts as string)], ['identity', (r) => r.subject], ['database', (r) => r.database], ['rule', (r) => r.rule], ['reason', (r) => r.reason], ['statement', (r) => r.sql, 'sql']], 'No statement was denied.', m.denied.total);
  const held = table(m.held, [['request', (r) => r.id], ['requester', (r) => r.requester], ['statement', (r) => r.sql, 'sql'], ['status', (r) => r.status], ['decided by', (r) => r.reviewers.map((v) => `${v.action} ${v.by}${v.reason ? ` (${v.reason})` : ''}`)], ['outcome', (r) => (r.executed_at ? `ran ${day(r.executed_at)}${r.rows !== undefined ? `, ${r.rows} rows` : ''}${r.error ? `, error ${r.error}` : ''}` : '')]], 'No statement was held for approval.');
  const fails = table(m.auth_failures.by_reason, [['reason', (r) => r.reason], ['count', (r) => r.count]], 'No failed logins.');
  const bySubject = table(m.denied.by_subject.slice(0, 20), [['identity', (r) => r.subject], ['denied statements', (r) => r.count]], 'No denials.');
  return section('cc7-2', 'CC7.2', 'Monitoring', 'What the gateway refused or held, failed logins, and unusual activity: an identity reading a sensitive column for the first time, bursts of denials or failed logins.', `<h3>Anomalies</h3>${anomalies}<h3>Denied statements (${m.denied.total})</h3>${bySubject}${denied}<h3>Held statements and their outcomes</h3>${held}<h3>Failed logins (${m.auth_failures.total})</h3>${fails}`);
}

function change(ev: Evidence): string {
  const rows = table(ev.cc8_1_change_management, [['request', (r) => r.id], ['requested', (r) => `${day(r.requested_at)} by ${r.requester}${r.acting_for ? ` for ${r.acting_for}` : ''}`], ['database', (r) => r.database], ['statement', (r) => r.sql, 'sql'], ['rule', (r) => r.rule], ['preview', (r) => r.preview], ['reviewers', (r) => r.reviewers.map((v) => `${v.action} by ${v.by} ${day(v.at)}${v.reason ? `: ${v.reason}` : ''}`)], ['status', (r) => r.status], ['ran', (r) => day(r.executed_at)]], 'No change needed approval in this period.');
  return section('cc8-1', 'CC8.1', 'Change management', 'Every write or schema change that policy required to be approved: who asked, the blast-radius preview, who reviewed it and why, and whether it ran.', rows);
}

function exposure(ev: Evidence): string {
  const rows = table(ev.data_exposure, [['identity', (r) => r.subject], ['kind', (r) => r.kind], ['statements returning rows', (r) => r.statements_with_rows], ['values masked', (r) => Object.entries(r.masked).map(([k, v]) => `${k}: ${v}`)], ['tables masked', (r) => r.masked_tables], ['exempt statements', (r) => r.exempt_statements], ['cleartext columns (exempt)', (r) => r.exempt_columns]], 'No data was returned in this period.');
  return section('exposure', 'C1.1 · P4', 'Data exposure', 'What sensitive data each identity saw: values masked before they reached it (by detector or rule), and what exempt identities saw in cleartext.', rows);
}

function reviews(ev: Evidence): string {
  const r = ev.access_reviews;
  const body = r.length
    ? r.map((x) => `<h3>Review ${esc(x.id)}</h3><p>Started ${esc(day(x.created_at))} by ${esc(x.created_by)}; ${esc(x.status)}${x.closed_at ? ` ${esc(day(x.closed_at))}` : ''}. ${x.items} items: ${x.confirmed} confirmed, ${x.revoked} revoked, ${x.undecided} undecided.</p>${table(x.decisions, [['item', (d) => d.item], ['subject', (d) => d.subject], ['decision', (d) => d.decision], ['reviewer', (d) => d.reviewer], ['reason', (d) => d.reason], ['at', (d) => day(d.at)]], 'No decisions yet.')}`).join('')
    : '<p class="empty">No access review was open in this period.</p>';
  return section('reviews', 'CC6.2 · CC6.3', 'Access reviews', 'Periodic reviews of every identity and key with access; each confirmation or revocation is audited.', body);
}

function integrity(ev: Evidence): string {
  const i = ev.integrity;
  const verdict = i.ok ? '<p class="ok">Every audit chain of the period verifies: each event links to the previous one, and every signed checkpoint matches.</p>' : `<p class="bad">The audit chains do NOT verify:</p><ul>${i.problems.map((p) => `<li class="bad">${esc(p)}</li>`).join('')}</ul>`;
  const chains = table(i.chains, [['chain', (c) => c.chain_id], ['verdict', (c) => (c.ok ? 'intact' : c.problem)], ['events in period', (c) => c.events_in_period], ['events checked', (c) => `${c.events} (${c.first_seq ?? '-'}–${c.last_seq ?? '-'})`], ['checkpoints', (c) => c.checkpoints], ['signed through', (c) => c.signed_through], ['unsigned in period', (c) => c.unsigned_in_period]], 'No audit chain has events in this period.');
  const keys = table(i.keys, [['key id', (k) => k.key_id], ['checkpoints', (k) => k.checkpoints]], 'No checkpoint signing key.');
  return section('integrity', 'CC7.2 · PI1', 'Audit integrity', 'The audit log is a hash chain per gateway process; the gateway signs the head of its chain periodically with an Ed25519 key. `sluice evidence verify` re-checks all of this offline.', `${verdict}${chains}<h3>Signing keys</h3>${keys}`);
}

export function renderReport(ev: Evidence): string {
  const toc = [['cc6-1', 'Logical access'], ['cc6-3', 'Provisioning'], ['cc7-2', 'Monitoring'], ['cc8-1', 'Change management'], ['exposure', 'Data exposure'], ['reviews', 'Access reviews'], ['integrity', 'Audit integrity']];
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Sluice evidence ${esc(ev.period.from.slice(0, 10))} to ${esc(ev.period.to.slice(0, 10))}</title><style>${STYLE}</style></head>
<body><header><h1>Database access evidence — SOC 2</h1><p>Period ${esc(day(ev.period.from))} to ${esc(day(ev.period.to))} · generated ${esc(day(ev.generated_at))} by ${esc(ev.generator)}</p></header>
<main>${cards(ev)}<nav class="toc">${toc.map(([id, t]) => `<a href="#${id}">${t}</a>`).join('')}</nav>
${access(ev)}
${provisioning(ev)}
${monitoring(ev)}
${change(ev)}
${exposure(ev)}
${reviews(ev)}
${integrity(ev)}
</main></body></html>
`;
}
