// The MCP server driven by the SDK's own client over stdio: tools listed, a fork made,
// exec on the fork, and a refusal on the grand carrying its `next` commands.
import test from 'ava';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { makeTestHost, tineBin, type TestHost } from './helpers/host.js';

let host: TestHost;
let client: Client | undefined;

test.before(async () => {
  host = makeTestHost();
  const r = host.run(['repo', 'create', 'app']);
  if (r.code !== 0) throw new Error(`create failed: ${r.stdout}${r.stderr}`);
  const env = Object.fromEntries(Object.entries(host.env).filter((e): e is [string, string] => typeof e[1] === 'string'));
  const transport = new StdioClientTransport({ command: process.execPath, args: [tineBin, 'mcp', 'serve'], env, stderr: 'pipe' });
  client = new Client({ name: 'tine-test', version: '0' });
  await client.connect(transport);
});

test.after.always(async () => {
  await client?.close().catch(() => {});
  host?.cleanup();
});

const text = (r: any) => (r.content as { type: string; text: string }[]).map((c) => c.text).join('\n');

test.serial('lists the tools of the contract with input schemas', async (t) => {
  const { tools } = await client!.listTools();
  const names = tools.map((x) => x.name).sort();
  t.deepEqual(names, ['repo_delete', 'repo_down', 'repo_exec', 'repo_fork', 'repo_info', 'repo_list', 'repo_secret_get', 'repo_secret_list', 'repo_up']);
  const fork = tools.find((x) => x.name === 'repo_fork')!;
  t.deepEqual(Object.keys(fork.inputSchema.properties ?? {}).sort(), ['ref', 'tag']);
});

test.serial('repo_fork forks the grand and returns the envelope; repo_exec runs on the fork', async (t) => {
  const r: any = await client!.callTool({ name: 'repo_fork', arguments: { ref: 'app', tag: 'm1' } });
  t.falsy(r.isError, text(r));
  const env = JSON.parse(text(r));
  t.true(env.ok);
  t.is(env.data.ref, 'app:m1');
  t.is(host.run(['repo', 'info', 'app:m1']).code, 0);

  const e: any = await client!.callTool({ name: 'repo_exec', arguments: { ref: 'app:m1', command: ['sh', '-c', 'echo mcp-$(id -u); exit 5'] } });
  const data = JSON.parse(text(e)).data;
  t.is(data.exitCode, 5, text(e));
  t.regex(data.stdout, /mcp-7111/);
  t.true(e.isError);
});

test.serial('every call is an agent\'s: the grand is refused with its next commands, and nothing changes', async (t) => {
  const before = host.run(['repo', 'list']).json.data.repos.length;
  for (const [name, args] of [['repo_delete', { ref: 'app' }], ['repo_exec', { ref: 'app', command: ['true'] }]] as const) {
    const r: any = await client!.callTool({ name, arguments: args });
    t.true(r.isError, name);
    t.regex(text(r), /GRAND_GUARD/);
    t.regex(text(r), /tine repo fork app --tag/);
  }
  const info = host.run(['repo', 'info', 'app']);
  t.is(info.code, 0, info.stdout + info.stderr);
  t.is(host.run(['repo', 'list']).json.data.repos.length, before);
  // Bad input is refused by the tool schema, naming the field.
  const bad: any = await client!.callTool({ name: 'repo_fork', arguments: { ref: 'app' } });
  t.true(bad.isError);
  t.regex(text(bad), /tag/);
});
