import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';

/**
 * `sluice mcp`: an MCP server on stdio for agents that launch their tools as processes. It relays every message to
 * the gateway's /mcp endpoint with the agent's token, so the policy, approvals, masking and audit are the
 * gateway's, and the upstream credentials never leave it. The token is checked before anything is served.
 */
export async function runStdioMcp(api: string, token: string): Promise<number> {
  const me = await fetch(new URL('/api/me', api), { headers: { authorization: `Bearer ${token}` } }).catch((e: Error & { cause?: Error }) => {
    throw new Error(`cannot reach the Sluice API at ${api}: ${e.cause?.message ?? e.message}`);
  });
  if (!me.ok) {
    const body = (await me.json().catch(() => ({}))) as { error?: string };
    process.stderr.write(`sluice mcp: the gateway refused the token: ${body.error ?? me.status}\n`);
    return 2;
  }
  const who = ((await me.json()) as { identity: { subject: string; kind: string } }).identity;
  process.stderr.write(`sluice mcp: serving on stdio as ${who.subject} (${who.kind}) through ${api}\n`);
  const remote = new StreamableHTTPClientTransport(new URL('/mcp', api), { requestInit: { headers: { authorization: `Bearer ${token}` } } });
  const local = new StdioServerTransport();
  const done = new Promise<void>((resolve) => {
    local.onclose = () => resolve();
    process.stdin.once('end', () => resolve());
  });
  local.onmessage = (msg: JSONRPCMessage) => {
    remote.send(msg).catch((e: Error) => {
      // A request that could not be relayed still gets its answer, so the agent is not left waiting.
      if ('id' in msg && 'method' in msg) void local.send({ jsonrpc: '2.0', id: msg.id, error: { code: -32603, message: `Sluice gateway: ${e.message}` } });
      else process.stderr.write(`sluice mcp: ${e.message}\n`);
    });
  };
  remote.onmessage = (msg) => void local.send(msg);
  remote.onerror = (e) => process.stderr.write(`sluice mcp: ${e.message}\n`);
  await remote.start();
  await local.start();
  await done;
  await remote.close().catch(() => {});
  return 0;
}
