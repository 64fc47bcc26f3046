// `tine mcp serve [-m NAME]`: an MCP server over stdio whose every call runs as actor agent.
// Each tool is one command of the contract, sent through the same RPC as `tine -m` (to this
// host's tine-host, or to the machine): the client's guard first, then the host's.
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { z } from 'zod';
import type { Machine } from '../client/config.js';
import { findMachine } from '../client/config.js';
import { LOCAL } from '../client/ssh.js';
import { detectClientActor, clientAuthorize, type ClientVerdict } from '../client/actor.js';
import { runRemote, runPassthroughCaptured, clientRequest, errorEnvelope } from '../client/remote.js';
import type { Envelope } from '../commands/execute.js';
import { packageVersion } from '../client/version.js';

type ToolResult = { content: { type: 'text'; text: string }[]; isError?: boolean; structuredContent?: Record<string, unknown> };

function envelopeResult(env: Envelope, exitCode: number): ToolResult {
  if (env.ok) return { content: [{ type: 'text', text: JSON.stringify(env) }], structuredContent: { envelope: env, exitCode } };
  const e = env.error!;
  const next = (e.next ?? []).map((n) => `- ${n.description}${n.run ? `: ${n.run}` : ''}`).join('\n');
  const text = `${e.code}: ${e.message}${next ? `\nnext:\n${next}` : ''}\n\n${JSON.stringify(env)}`;
  return { content: [{ type: 'text', text }], isError: true, structuredContent: { envelope: env, exitCode } };
}

export async function serveMcp(opts: { machine?: string }): Promise<number> {
  const target: Machine = opts.machine ? findMachine(opts.machine) : LOCAL;
  const detected = detectClientActor();
  // Every call is an agent's. The override is what the human set before the agent started.
  const verdict: ClientVerdict = {
    actor: { kind: 'agent', reason: detected.actor.kind === 'agent' ? `MCP server (${detected.actor.reason})` : 'MCP server' },
    override: detected.override,
    detection: detected.detection,
  };
  const hostEnv: NodeJS.ProcessEnv = { ...process.env, TINE_AGENT: '1' };
  if (verdict.override) hostEnv.TINE_ALLOW_GRAND_REPO = verdict.override;
  else delete hostEnv.TINE_ALLOW_GRAND_REPO;

  const call = async (command: string, input: Record<string, unknown>): Promise<ToolResult> => {
    try {
      clientAuthorize(command, input, verdict);
      const r = await runRemote(target, clientRequest(command, input, verdict.actor), undefined, hostEnv);
      return envelopeResult(r.envelope, r.exitCode);
    } catch (err) {
      const r = errorEnvelope(command, err);
      return envelopeResult(r.envelope, r.exitCode);
    }
  };

  const server = new McpServer({ name: 'tine', version: packageVersion() });
  const ref = z.string().describe('repository ref: NAME (the grand) or NAME:TAG (a fork)');
  const ro = { readOnlyHint: true, openWorldHint: false };

  server.registerTool('repo_list', { description: 'List the repositories on the host.', inputSchema: {}, annotations: ro }, () => call('repo list', {}));
  server.registerTool('repo_info', { description: 'Show one repository record.', inputSchema: { ref }, annotations: ro }, (a) => call('repo info', a));
  server.registerTool('repo_fork', {
    description: 'Fork a repository by copy-on-write (milliseconds). Work on forks; grands are production.',
    inputSchema: { ref, tag: z.string().describe('the fork\'s tag: lowercase RFC-1123 label') },
  }, (a) => call('repo fork', a));
  server.registerTool('repo_up', { description: 'Start a repository (refused on grands).', inputSchema: { ref } }, (a) => call('repo up', a));
  server.registerTool('repo_down', { description: 'Stop a repository (refused on grands).', inputSchema: { ref } }, (a) => call('repo down', a));
  server.registerTool('repo_delete', { description: 'Delete a repository for good (refused on grands).', inputSchema: { ref }, annotations: { destructiveHint: true } }, (a) => call('repo delete', { ...a, yes: true }));
  server.registerTool('repo_secret_list', { description: 'List a repository\'s secret keys (never values).', inputSchema: { ref }, annotations: ro }, (a) => call('repo secret list', a));
  server.registerTool('repo_secret_get', { description: 'A secret\'s digest (never its value).', inputSchema: { ref, key: z.string() }, annotations: ro }, (a) => call('repo secret get', a));
  server.registerTool('repo_exec', {
    description: 'Run a command in the repository\'s sandbox (refused on grands); returns its exit code and output.',
    inputSchema: { ref, command: z.array(z.string()).min(1).describe('argv: program and arguments') },
  }, async (a) => {
    const input = { ref: a.ref, command: a.command };
    try {
      clientAuthorize('repo exec', input, verdict);
      const argv = ['repo', 'exec', a.ref, '--', ...a.command];
      const r = await runPassthroughCaptured(target, clientRequest('repo exec', input, verdict.actor, argv), hostEnv);
      // A refusal or usage error before the program ran arrives as an envelope line.
      const last = r.stdout.trim().split('\n').pop() ?? '';
      if (r.exitCode !== 0 && last.startsWith('{')) {
        try {
          const parsed = JSON.parse(last);
          const env: Envelope | undefined = parsed.event === 'result' ? parsed.envelope : parsed.ok === false ? parsed : undefined;
          if (env) return envelopeResult(env, r.exitCode);
        } catch { /* the program's own output */ }
      }
      const env: Envelope = { ok: true, command: 'repo exec', data: { ref: a.ref, exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr } };
      return { content: [{ type: 'text', text: JSON.stringify(env) }], isError: r.exitCode !== 0, structuredContent: { envelope: env, exitCode: r.exitCode } };
    } catch (err) {
      const r = errorEnvelope('repo exec', err);
      return envelopeResult(r.envelope, r.exitCode);
    }
  });

  const transport = new StdioServerTransport();
  await server.connect(transport);
  await new Promise<void>((resolve) => {
    transport.onclose = () => resolve();
    process.stdin.on('end', () => resolve());
  });
  await server.close().catch(() => {});
  return 0;
}
