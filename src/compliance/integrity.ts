import { genesisHash, linkHash } from '../audit/audit.js';
import { checkpointProblem, type Checkpoint } from './checkpoints.js';
import type { RawEvent } from './collect.js';

export interface ChainIntegrity {
  chain_id: string;
  ok: boolean;
  problem?: string;
  /** Events of the chain in the pack (the period's and the context tying them to checkpoints). */
  events: number;
  events_in_period: number;
  first_seq?: number;
  last_seq?: number;
  /** Valid checkpoints within the packed range. */
  checkpoints: number;
  /** The last event a valid checkpoint signs. */
  signed_through?: number;
  /** Events of the period after the last checkpoint: intact as a chain, but no signature proves they are complete. */
  unsigned_in_period: number;
}

export interface IntegrityReport {
  ok: boolean;
  chains: ChainIntegrity[];
  /** The keys the checkpoints were signed with. */
  keys: { key_id: string; public_key: string; checkpoints: number }[];
  /** The key the verifier insisted on (`evidence verify --key`), when one was given. */
  pinned_key_id?: string;
  problems: string[];
}

const inPeriod = (ts: string, p: { from: string; to: string }) => ts >= p.from && ts <= p.to;

/** Recompute one chain's links from its anchor and check every checkpoint against the events. */
function verifyChain(chain: string, events: RawEvent[], cps: Checkpoint[], period: { from: string; to: string }, pinned?: string): ChainIntegrity {
  const r: ChainIntegrity = { chain_id: chain, ok: true, events: events.length, events_in_period: 0, checkpoints: 0, unsigned_in_period: 0 };
  const fail = (problem: string) => ((r.ok = false), (r.problem ??= problem), r);
  for (const c of cps) {
    const why = checkpointProblem(c, pinned);
    if (why) return fail(`checkpoint at event ${c.seq} (signed ${c.signed_at}) is not valid: ${why}`);
  }
  if (!events.length) return fail(`checkpoints signed during the period name this chain, but none of its events are here (the chain was removed)`);
  const bySeq = new Map(cps.map((c) => [c.seq, c]));
  const first = events[0]!.seq;
  r.first_seq = first;
  let prev: string;
  if (first === 1) prev = genesisHash(chain);
  else {
    const anchor = bySeq.get(first - 1);
    if (!anchor) return fail(`the chain starts at event ${first} here, and no signed checkpoint at event ${first - 1} anchors it`);
    prev = anchor.hash;
  }
  let expected = first;
  for (const e of events) {
    if (e.seq !== expected) return fail(`event ${expected} is missing (next is ${e.seq}): events were removed`);
    if (e.prev_hash !== prev) return fail(`event ${e.seq}: prev_hash does not match the previous event (an event was removed or reordered)`);
    if (linkHash(prev, e.payload) !== e.hash) return fail(`event ${e.seq}: its hash does not match its content (the event was altered)`);
    let ts: string | undefined;
    try {
      ts = (JSON.parse(e.payload) as { ts?: string }).ts;
    } catch {
      return fail(`event ${e.seq}: the payload is not JSON`);
    }
    if (ts !== e.ts) return fail(`event ${e.seq}: its time ${e.ts} is not the hashed time ${ts} (the event was altered)`);
    const cp = bySeq.get(e.seq);
    if (cp) {
      if (cp.hash !== e.hash) return fail(`event ${e.seq} is not the event its checkpoint signed (signed ${cp.signed_at}): the chain was rewritten`);
      r.checkpoints++;
      r.signed_through = e.seq;
    }
    if (inPeriod(e.ts, period)) r.events_in_period++;
    prev = e.hash;
    expected = e.seq + 1;
  }
  r.last_seq = expected - 1;
  // A checkpoint signed within the period covers events that must all be here.
  const beyond = cps.find((c) => c.seq > r.last_seq! && c.signed_at <= period.to);
  if (beyond) return fail(`a checkpoint signed ${beyond.signed_at} covers events up to ${beyond.seq}, but the chain ends at ${r.last_seq} here: events ${r.last_seq! + 1} to ${beyond.seq} were removed`);
  r.unsigned_in_period = events.filter((e) => e.seq > (r.signed_through ?? 0) && inPeriod(e.ts, period)).length;
  return r;
}

/** Verify every chain of a pack's inputs, offline: links, anchors, signatures, and nothing missing that was signed. */
export function verifyIntegrity(inputs: { period: { from: string; to: string }; events: RawEvent[]; checkpoints: Checkpoint[] }, pinnedPem?: string): IntegrityReport {
  const chains = [...new Set([...inputs.events.map((e) => e.chain_id), ...inputs.checkpoints.map((c) => c.chain_id)])].sort();
  const byChain = new Map<string, RawEvent[]>();
  for (const e of inputs.events) (byChain.get(e.chain_id) ?? byChain.set(e.chain_id, []).get(e.chain_id)!).push(e);
  const reports = chains.map((ch) => {
    const evs = (byChain.get(ch) ?? []).sort((a, b) => a.seq - b.seq);
    const cps = inputs.checkpoints.filter((c) => c.chain_id === ch).sort((a, b) => a.seq - b.seq);
    return verifyChain(ch, evs, cps, inputs.period, pinnedPem);
  });
  const keys = new Map<string, { key_id: string; public_key: string; checkpoints: number }>();
  for (const c of inputs.checkpoints) {
    const k = keys.get(c.key_id) ?? keys.set(c.key_id, { key_id: c.key_id, public_key: c.public_key, checkpoints: 0 }).get(c.key_id)!;
    k.checkpoints++;
  }
  const problems = reports.filter((r) => !r.ok).map((r) => `chain ${r.chain_id}: ${r.problem}`);
  return { ok: problems.length === 0, chains: reports, keys: [...keys.values()], problems };
}
