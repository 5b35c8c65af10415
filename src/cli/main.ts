import { parseArgs } from 'node:util';
import fs from 'node:fs';
import { loadConfig, adminSocketPath, spoolOptions, type SluiceConfig } from '../config.js';
import { ConfigError } from '../util/yamlfile.js';
import { localOps, remoteOps, socketAlive, type AdminOps } from '../admin.js';
import { openStore } from '../store/db.js';
import { AuditLog, storeSink } from '../audit/audit.js';
import { loadPolicy, evaluate } from '../policy/policy.js';
import { analyzeUncached, loadParser } from '../analyze/analyze.js';
import { IDENTITY_KINDS, type IdentityKind } from '../identity/identity.js';
import { parseDuration } from '../util/duration.js';
import type { Approval } from '../approvals/store.js';
import { AUDIT_EVENT_TYPES, APPROVAL_STATUSES, POLICY_TEST_EXIT } from './format.js';
import { log } from '../util/log.js';
import { UsageError, intFlag, enumFlag, enumListFlag, timeFlag } from './usage.js';
import { requireConfig, discoverConfig } from './config-discovery.js';
import { formatEvent } from './format.js';

const HELP = `sluice — identity-aware database gateway

usage: sluice <command> [options]

  start                       run the gateway (config: -c FILE, $SLUICE_CONFIG or ./sluice.yaml)
  demo [--port N]             run a self-contained demo: embedded PostgreSQL with sample data, a demo
                              identity provider, and the gateway in front of it
  audit list [filters]        show audit events, newest first
        --subject S --kind human|agent|service --decision allow|deny --type T --database D
        --table T --session ID --since ISO --until ISO --limit N --json
  audit verify                recompute the audit hash chains; exit 1 if any link is broken
  audit sensitive --subject S [--since ISO] [--until ISO] [--json]
                              what sensitive data S saw: values masked for them, and what they saw in
                              cleartext as an exempt identity
  keys create --name N --kind agent|service|human [--groups a,b] [--subject S]
              [--acting-for PERSON] [--expires 30d]
  keys list                   list keys (secrets are never shown again)
  keys revoke ID
  approvals list [--status pending,approved,...] [--kind statement|grant] [--json]
  approvals show ID           one request: SQL, requester, preview, votes
  approvals approve ID [--reason R]
  approvals deny ID [--reason R]
  approvals revoke ID [--reason R]
  grants list                 approved just-in-time grants you may see
  grants revoke ID [--reason R]
                              end an approved grant now, on every gateway sharing the store (the rule's
                              approvers, admins and the grantee may)
  request --db DB --role read|write|ddl|admin --for 1h --reason R [--wait]
                              ask for a just-in-time grant; approved, matching statements pass until it ends
        (approvals and request act as you through the HTTP API: --token T or $SLUICE_TOKEN, your OIDC token
         or Sluice key; --api URL or $SLUICE_API, default from the config's api.listen)
  mcp [--api URL] [--token T] an MCP server on stdio for AI agents, acting as the token's identity through the
                              gateway (tools: list_databases, describe_schema, query, wait_for_approval, explain)
  login [--issuer URL] [--client-id ID] [--device | --browser] [--no-open]
                              sign in with your identity provider (browser with PKCE when there is one,
                              else the device flow); tokens are cached in ~/.config/sluice (0600) and
                              refreshed silently
  logout [--issuer URL | --all]   forget (and revoke) your cached tokens
  whoami [--json]             who your cached token says you are, and until when
  connect DB [--port N] [--engine postgres|mysql] [--gateway HOST:PORT] [--ca FILE]
                              a local listener on 127.0.0.1 that any client uses without a password; it
                              relays to the gateway over TLS with your fresh token
  psql DB [-- psql args]      run psql against the gateway with your token (PGPASSWORD, sslmode)
  mysql DB [-- mysql args]    run the mysql client with your token (MYSQL_PWD, cleartext plugin over TLS)
  env DB [--engine E]         export lines for scripts: eval "$(sluice env shop)"
  evidence export --from DATE --to DATE -o FILE.zip   a SOC 2 evidence pack (see README, Compliance)
  evidence verify FILE.zip [--key PUBLIC.pem]         check a pack offline; exit 1 if it does not verify
  evidence keygen -o KEY.pem  an Ed25519 key for audit.checkpoints
  token aws [--sts-endpoint URL] [--region R] [--server-id ID]
                              print a password for a gateway with identity.aws: an sts:GetCallerIdentity
                              request signed with your AWS credentials (standard chain); e.g.
                              PGPASSWORD=$(sluice token aws --server-id sluice-prod) psql ...
  policy check [FILE]         validate a policy file (default: the config's)
  policy test --sql SQL [--subject S] [--groups a,b] [--kind K] [--database D]
                              show what the policy decides for a statement; exit 0 allow, 1 deny,
                              3 require_approval (so scripts can use it)

Every command accepts -c/--config FILE; without it the config is $SLUICE_CONFIG, ./sluice.yaml, or the
running demo's (the file used is named on stderr).`;

export { UsageError };

/** The config file a command runs with (-c, $SLUICE_CONFIG, ./sluice.yaml, the running demo's); named on stderr. */
const configPath = (v: unknown): string => requireConfig(v as string | undefined);

/** The time a duration from now (`--expires 30d`). */
function expiresIn(s: string): Date {
  try {
    return new Date(Date.now() + parseDuration(s) * 1000);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** The admin operations: through a running gateway when one holds the store, else on the store directly. */
async function withOps<T>(cfg: SluiceConfig, fn: (ops: AdminOps) => Promise<T>): Promise<T> {
  const sock = adminSocketPath(cfg);
  if (sock && (await socketAlive(sock))) {
    const ops = remoteOps(sock);
    try {
      return await fn(ops);
    } finally {
      ops.close();
    }
  }
  const store = await openStore(cfg.store);
  const audit = new AuditLog(storeSink(store.db, store.pool), { spool: spoolOptions(cfg, false), onNotice: (m) => log.warn(`audit: ${m}`) });
  try {
    return await fn(localOps(store.db, audit));
  } finally {
    await audit.close();
    await store.close();
  }
}

/** Who the command acts as (--token or $SLUICE_TOKEN) and where the gateway's API is (--api, $SLUICE_API, config). */
function apiTarget(values: Record<string, string | boolean | undefined>): { token: string; base: string } {
  const token = (values.token as string | undefined) ?? process.env.SLUICE_TOKEN;
  if (!token) throw new UsageError('this command acts as you: pass --token (or set SLUICE_TOKEN) with your OIDC token or Sluice key');
  let base = (values.api as string | undefined) ?? process.env.SLUICE_API;
  if (!base) {
    const file = discoverConfig(values.config as string | undefined)?.file;
    if (!file || !fs.existsSync(file)) throw new UsageError('no API address: pass --api URL, set SLUICE_API, or point -c at a config with api.listen');
    const cfg = loadConfig(file, { secrets: false });
    if (!cfg.api) throw new UsageError(`${file} has no api section: pass --api URL or set SLUICE_API`);
    base = `http://${cfg.api.listen.host}:${cfg.api.listen.port}`;
  }
  return { token, base };
}

/** Call the gateway's HTTP API as the person holding the token. */
async function apiCall(values: Record<string, string | boolean | undefined>, method: string, path: string, body?: unknown): Promise<any> {
  const { token, base } = apiTarget(values);
  let r: Response;
  try {
    r = await fetch(new URL(path, base), { method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
  } catch (e) {
    throw new Error(`cannot reach the Sluice API at ${base}: ${(e as Error & { cause?: Error }).cause?.message ?? (e as Error).message}`);
  }
  const data = (await r.json().catch(() => ({}))) as { error?: string };
  if (!r.ok) throw new Error(`${r.status}: ${data.error ?? r.statusText}`);
  return data;
}

function formatApproval(a: Approval, long = false): string {
  const what = a.kind === 'grant' ? `grant ${a.role} on ${a.database} for ${a.duration_s}s: ${JSON.stringify(a.justification)}` : `${a.database}: ${JSON.stringify(a.sql && a.sql.length > 120 && !long ? a.sql.slice(0, 117) + '...' : a.sql)}`;
  const votes = a.votes.map((v) => `${v.action === 'approve' ? '+' : '-'}${v.by}${v.reason ? `(${JSON.stringify(v.reason)})` : ''}`).join(' ');
  const line = `${a.id}  ${a.status.padEnd(8)} ${a.requester}${a.acting_for ? ` for ${a.acting_for}` : ''}  ${what}${votes ? `  votes ${votes}` : ''}${a.quorum > 1 ? ` (quorum ${a.quorum})` : ''}`;
  if (!long) return line;
  const extra = [`  created ${a.created_at}, ${a.status === 'pending' ? 'expires' : 'valid until'} ${a.expires_at}${a.rule ? `, rule ${a.rule}` : ''}${a.policy_reason ? ` (${a.policy_reason})` : ''}`];
  if (a.params?.length) extra.push(`  parameters ${a.params.map((v, i) => `$${i + 1}=${JSON.stringify(v)}${a.param_formats?.[i] === 1 ? ' (binary, hex)' : ''}${a.param_types?.[i] ? ` (type oid ${a.param_types[i]})` : ''}`).join(' ')}`);
  if (a.approver_groups.length) extra.push(`  approvers: members of ${a.approver_groups.join(', ')}`);
  if (a.grant_expires_at) extra.push(`  grant until ${a.grant_expires_at}`);
  if (a.revoked_at) extra.push(`  revoked ${a.revoked_at} by ${a.revoked_by}${a.revoke_reason ? ` (${JSON.stringify(a.revoke_reason)})` : ''}`);
  const p = a.preview;
  if (p) {
    if (p.kind === 'rows' && p.rows_affected !== undefined) extra.push(`  preview: would affect ${p.rows_affected} row${p.rows_affected === 1 ? '' : 's'} (${p.note ?? ''})`);
    for (const o of p.objects ?? []) extra.push(`  preview: ${o.command} ${o.name}${o.rows !== undefined ? ` (${o.rows} rows)` : ''}`);
    if (p.error) extra.push(`  preview failed: ${p.error}`);
    else if (p.kind === 'none' && p.note) extra.push(`  preview: ${p.note}`);
  }
  if (a.outcome) extra.push(`  outcome: ${a.outcome.error ? `error ${a.outcome.error}` : `${a.outcome.rows} rows`}`);
  return [line, ...extra].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, sub, ...rest] = argv;
  const out = (s: string) => process.stdout.write(s + '\n');
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    out(HELP);
    return 0;
  }
  type Spec = Record<string, { type: 'string' | 'boolean'; short?: string }>;
  const opts = (args: string[], options: Spec): { values: Record<string, string | boolean | undefined>; positionals: string[] } =>
    parseArgs({ args, options: { config: { type: 'string', short: 'c' }, ...options }, allowPositionals: true, strict: true }) as never;

  switch (cmd) {
    case 'start': {
      const { values } = opts(argv.slice(1), {});
      const { runStart } = await import('./start.js');
      const code = await runStart(configPath(values.config));
      // Shutdown is complete (sessions ended, audit flushed): leave even if a handle such as a cluster IPC channel
      // would keep the process alive.
      process.exit(code);
    }
    case 'demo': {
      const { values } = opts(argv.slice(1), { port: { type: 'string' }, dir: { type: 'string' } });
      const { runDemo } = await import('../demo/demo.js');
      return runDemo({ port: intFlag('port', values.port, { min: 0, max: 65535 }) ?? 6432, dir: values.dir as string | undefined });
    }
    case 'audit': {
      const { values } = opts(rest, {
        subject: { type: 'string' }, kind: { type: 'string' }, decision: { type: 'string' }, type: { type: 'string' },
        database: { type: 'string' }, table: { type: 'string' }, session: { type: 'string' }, since: { type: 'string' },
        until: { type: 'string' }, limit: { type: 'string' }, json: { type: 'boolean' },
      });
      if (!['list', 'verify', 'sensitive'].includes(String(sub))) throw new UsageError('usage: sluice audit list|verify|sensitive');
      const f = {
        subject: values.subject as string | undefined, kind: enumFlag('kind', values.kind, IDENTITY_KINDS), decision: enumFlag('decision', values.decision, ['allow', 'deny'] as const),
        type: enumFlag('type', values.type, AUDIT_EVENT_TYPES), database: values.database as string | undefined, table: values.table as string | undefined,
        session: values.session as string | undefined, since: timeFlag('since', values.since) as any, until: timeFlag('until', values.until) as any,
        limit: intFlag('limit', values.limit, { min: 1, max: 100_000 }) ?? 50,
      };
      const cfg = loadConfig(configPath(values.config), { secrets: false });
      if (sub === 'list') {
        const events = await withOps(cfg, (ops) => ops.auditList(f));
        for (const e of events) out(values.json ? JSON.stringify(e) : formatEvent(e));
        return 0;
      }
      if (sub === 'verify') {
        const reports = await withOps(cfg, (ops) => ops.auditVerify());
        let bad = 0;
        for (const r of reports) {
          if (r.ok) out(`ok      chain ${r.chain_id}: ${r.events} events, head ${r.head?.slice(0, 16)}${r.closed ? ', closed' : ''}${r.unshipped ? `; ${r.unshipped} more appended by its gateway, not in the store yet` : ''}`);
          else {
            bad++;
            out(`BROKEN  chain ${r.chain_id}: event ${r.first_bad_seq}: ${r.problem}`);
          }
        }
        out(bad ? `audit verify: ${bad} of ${reports.length} chains broken` : `audit verify: all ${reports.length} chains intact`);
        return bad ? 1 : 0;
      }
      if (sub === 'sensitive') {
        if (!values.subject) throw new UsageError('audit sensitive needs --subject');
        const r = await withOps(cfg, (ops) => ops.sensitiveReport({ subject: String(values.subject), since: f.since, until: f.until }));
        if (values.json) out(JSON.stringify(r));
        else {
          out(`${r.subject}: ${r.statements} statements returned rows${r.since ? ` since ${r.since}` : ''}`);
          const masked = Object.entries(r.masked).sort((a, b) => b[1] - a[1]);
          out(masked.length ? `  masked before they saw it: ${masked.map(([k, v]) => `${k} ${v}`).join(', ')} (tables ${r.masked_tables.join(', ')})` : '  nothing was masked for them');
          out(r.cleartext.statements ? `  saw cleartext (exempt) in ${r.cleartext.statements} statements: tables ${r.cleartext.tables.join(', ')}; columns ${r.cleartext.columns.join(', ')}` : '  never saw cleartext through an exemption');
        }
        return 0;
      }
      throw new UsageError('usage: sluice audit list|verify|sensitive');
    }
    case 'keys': {
      const { values, positionals } = opts(rest, {
        name: { type: 'string' }, kind: { type: 'string' }, groups: { type: 'string' }, subject: { type: 'string' },
        'acting-for': { type: 'string' }, expires: { type: 'string' }, json: { type: 'boolean' },
      });
      const cfg = loadConfig(configPath(values.config), { secrets: false });
      if (sub === 'create') {
        if (!values.name) throw new UsageError('keys create needs --name');
        const kind: IdentityKind = enumFlag('kind', values.kind, IDENTITY_KINDS) ?? 'service';
        const groups = values.groups ? String(values.groups).split(',').map((g) => g.trim()).filter(Boolean) : [];
        const expiresAt = values.expires ? expiresIn(String(values.expires)) : undefined;
        const r = await withOps(cfg, (ops) =>
          ops.keysCreate({ name: String(values.name), kind, groups, subject: values.subject as string | undefined, actingFor: values['acting-for'] as string | undefined, expiresAt, createdBy: `cli:${process.env.USER ?? 'unknown'}` }),
        );
        if (values.json) out(JSON.stringify(r));
        else {
          out(r.key);
          process.stderr.write(`created key ${r.info.id} for ${r.info.subject} (${r.info.kind}${r.info.groups.length ? `, groups ${r.info.groups.join(',')}` : ''}); it is shown only once\n`);
        }
        return 0;
      }
      if (sub === 'list') {
        const keys = await withOps(cfg, (ops) => ops.keysList());
        for (const k of keys) out(values.json ? JSON.stringify(k) : `${k.id}  ${k.name.padEnd(16)} ${k.kind.padEnd(8)} ${k.subject}  groups=${k.groups.join(',') || '-'}${k.acting_for ? `  for=${k.acting_for}` : ''}${k.revoked_at ? `  REVOKED ${k.revoked_at}` : ''}${k.expires_at ? `  expires=${k.expires_at}` : ''}`);
        return 0;
      }
      if (sub === 'revoke') {
        const id = positionals[0];
        if (!id) throw new UsageError('usage: sluice keys revoke ID');
        const ok = await withOps(cfg, (ops) => ops.keysRevoke(id));
        out(ok ? `revoked ${id}` : `no active key ${id}`);
        return ok ? 0 : 1;
      }
      throw new UsageError('usage: sluice keys create|list|revoke');
    }
    case 'approvals': {
      const { values, positionals } = opts(rest, { token: { type: 'string' }, api: { type: 'string' }, status: { type: 'string' }, kind: { type: 'string' }, reason: { type: 'string' }, json: { type: 'boolean' } });
      const show = (a: Approval, long: boolean) => out(values.json ? JSON.stringify(a) : formatApproval(a, long));
      if (sub === 'list') {
        const q = new URLSearchParams();
        const status = enumListFlag('status', values.status, APPROVAL_STATUSES);
        if (status) q.set('status', status.join(','));
        const kind = enumFlag('kind', values.kind, ['statement', 'grant'] as const);
        if (kind) q.set('kind', kind);
        const r = await apiCall(values, 'GET', `/api/approvals?${q}`);
        for (const a of r.approvals as Approval[]) show(a, false);
        if (!values.json && !r.approvals.length) process.stderr.write('no approval requests\n');
        return 0;
      }
      const id = positionals[0];
      if (!id || !['show', 'approve', 'deny', 'revoke'].includes(String(sub))) throw new UsageError('usage: sluice approvals list | show ID | approve ID [--reason R] | deny ID [--reason R] | revoke ID [--reason R]');
      if (sub === 'show') {
        show((await apiCall(values, 'GET', `/api/approvals/${encodeURIComponent(id)}`)).approval, true);
        return 0;
      }
      const r = await apiCall(values, 'POST', `/api/approvals/${encodeURIComponent(id)}/${sub}`, { reason: values.reason });
      show(r.approval, false);
      return 0;
    }
    case 'grants': {
      const { values, positionals } = opts(rest, { token: { type: 'string' }, api: { type: 'string' }, reason: { type: 'string' }, json: { type: 'boolean' } });
      const show = (a: Approval) => out(values.json ? JSON.stringify(a) : formatApproval(a, false));
      if (sub === 'list') {
        for (const a of (await apiCall(values, 'GET', '/api/approvals?kind=grant&status=approved')).approvals as Approval[]) show(a);
        return 0;
      }
      if (sub !== 'revoke' || !positionals[0]) throw new UsageError('usage: sluice grants list | revoke ID [--reason R]');
      show((await apiCall(values, 'POST', `/api/grants/${encodeURIComponent(positionals[0])}/revoke`, { reason: values.reason })).approval);
      return 0;
    }
    case 'request': {
      const { values } = opts(argv.slice(1), { token: { type: 'string' }, api: { type: 'string' }, db: { type: 'string' }, role: { type: 'string' }, for: { type: 'string' }, reason: { type: 'string' }, wait: { type: 'boolean' }, json: { type: 'boolean' } });
      for (const k of ['db', 'role', 'for', 'reason'] as const) if (!values[k]) throw new UsageError(`request needs --${k} (sluice request --db DB --role write --for 1h --reason "...")`);
      enumFlag('role', values.role, ['read', 'write', 'ddl', 'admin'] as const);
      const r = await apiCall(values, 'POST', '/api/grants', { database: values.db, role: values.role, duration: values.for, reason: values.reason });
      let a = r.approval as Approval;
      if (!values.json) process.stderr.write(`requested ${a.id}: ${r.url}\n`);
      while (values.wait && a.status === 'pending') {
        await new Promise((res) => setTimeout(res, 1000));
        a = (await apiCall(values, 'GET', `/api/approvals/${a.id}`)).approval;
      }
      out(values.json ? JSON.stringify(a) : formatApproval(a, true));
      return !values.wait || a.status === 'approved' ? 0 : 1;
    }
    case 'mcp': {
      const { values } = opts(argv.slice(1), { token: { type: 'string' }, api: { type: 'string' } });
      const { token, base } = apiTarget(values);
      const { runStdioMcp } = await import('../mcp/stdio.js');
      return runStdioMcp(base, token);
    }
    case 'evidence':
      return (await import('./evidence.js')).runEvidence(sub, rest, (v) => configPath(v));
    case 'policy': {
      const { values, positionals } = opts(rest, { sql: { type: 'string' }, subject: { type: 'string' }, groups: { type: 'string' }, kind: { type: 'string' }, database: { type: 'string' } });
      const file = positionals[0] ?? loadConfig(configPath(values.config), { secrets: false }).policy;
      const policy = loadPolicy(file);
      if (sub === 'check') {
        out(`${file}: ok (${policy.rules.length} rules, default ${policy.default})`);
        return 0;
      }
      if (sub === 'test') {
        if (!values.sql) throw new UsageError('policy test needs --sql');
        await loadParser();
        const a = analyzeUncached(String(values.sql));
        if (!a.ok) {
          out(`deny (unparsable, fail closed): ${a.error}`);
          return 1;
        }
        const kind: IdentityKind = enumFlag('kind', values.kind, IDENTITY_KINDS) ?? 'human';
        const d = evaluate(policy, { identity: { subject: String(values.subject ?? 'someone'), kind, groups: values.groups ? String(values.groups).split(',') : [], method: 'key' }, database: String(values.database ?? 'postgres') }, a);
        out(`${d.action} by rule "${d.rule}"${d.reason ? `: ${d.reason}` : ''}`);
        for (const s of a.statements) out(`  ${s.command} class=${s.class} tables=${s.tables.map((t) => `${t.name}(${t.access})`).join(',') || '-'}${s.destructive.length ? ` destructive=${JSON.stringify(s.destructive)}` : ''}${s.flags.length ? ` flags=${s.flags.join(',')}` : ''}`);
        return POLICY_TEST_EXIT[d.action];
      }
      throw new UsageError('usage: sluice policy check|test');
    }
    case 'login':
    case 'logout':
    case 'whoami':
    case 'connect':
    case 'psql':
    case 'mysql':
    case 'env': {
      const { CLIENT_OPTIONS, runClientCommand } = await import('./client.js');
      const { values, positionals } = opts(argv.slice(1), CLIENT_OPTIONS[cmd]);
      return runClientCommand(cmd, values, positionals);
    }
    case 'token': {
      const { values } = opts(rest, { 'sts-endpoint': { type: 'string' }, region: { type: 'string' }, 'server-id': { type: 'string' } });
      if (sub !== 'aws') throw new UsageError('usage: sluice token aws [--sts-endpoint URL] [--region R] [--server-id ID]');
      return (await import('./awstoken.js')).runTokenAws(values);
    }
    default:
      throw new UsageError(`unknown command "${cmd}"\n\n${HELP}`);
  }
}

/** parseArgs' messages, said the way the rest of the CLI speaks. */
function argsMessage(e: Error & { code?: string }, argv: string[]): string {
  const m = /^Unknown option '([^']+)'/.exec(e.message);
  if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && m) return `unknown option ${m[1]} for \`sluice ${argv.filter((a) => !a.startsWith('-')).slice(0, 2).join(' ')}\` (see sluice help)`;
  return e.message;
}

export async function run(argv: string[]): Promise<void> {
  try {
    process.exitCode = await main(argv);
  } catch (e) {
    if (e instanceof ConfigError || e instanceof UsageError || (e as { code?: string }).code?.startsWith?.('ERR_PARSE_ARGS')) {
      process.stderr.write(`sluice: ${argsMessage(e as Error, argv)}\n`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`sluice: ${(e as Error).message}\n`);
      process.exitCode = 1;
    }
  }
}

if (process.argv[1] && fs.realpathSync(process.argv[1]).endsWith('cli/main.js')) await run(process.argv.slice(2));
