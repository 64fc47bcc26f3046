// The client's subcommands in the shared command tree: machines, MCP, push/pull, and the
// host's `rpc` endpoint. One call from src/cli/tree.ts.
import { Command, Option } from 'commander';
import type { Go } from '../cli/tree.js';

/** Commands the client runs itself (never forwarded to a machine as such). */
export const CLIENT_COMMANDS = new Set(['machine add', 'machine list', 'machine remove', 'machine setup', 'mcp serve', 'repo push', 'repo pull']);

export function addClientCli(program: Command, repo: Command, go: Go): void {
  const machine = program.command('machine').description('machines this client drives over SSH');
  machine
    .command('add <name>')
    .description('record a machine and pin its SSH host key (first contact)')
    .requiredOption('--host <host>', 'host name or address')
    .option('--user <user>', 'SSH user (default root)')
    .option('--port <port>', 'SSH port (default 22)')
    .option('--key <file>', 'SSH private key to use')
    // Not `--role`: that is the tree's global "hold me to the agent policy" option.
    .option('--agent', 'an agent\'s key: it may only run `tine-host rpc --role agent` there')
    .option('--via <machine>', 'install the agent key\'s forced-command line through this machine entry')
    .option('--authorized-keys <file>', 'authorized_keys file on the machine (default ~/.ssh/authorized_keys)')
    .action((name: string, o: Record<string, string | boolean | undefined>) =>
      go('machine add', { name, host: o.host, user: o.user, port: o.port, key: o.key, role: o.agent ? 'agent' : undefined, via: o.via, authorizedKeys: o.authorizedKeys }));
  machine.command('list').description('list machines').action(() => go('machine list', {}));
  machine.command('remove <name>').description('forget a machine and its pinned key').action((name: string) => go('machine remove', { name }));
  machine
    .command('setup <name>')
    .description('install or update tine-host on the machine and run tine setup there (idempotent)')
    .option('--prefix <dir>', 'install directory there (default /opt/tine)')
    .option('--datastore <dir>', 'btrfs filesystem there to use as datastore')
    .option('--force', 'copy even when the installed build matches')
    .action((name: string, o: { prefix?: string; datastore?: string; force?: boolean }) => go('machine setup', { name, prefix: o.prefix, datastore: o.datastore, force: o.force }));

  program
    .command('mcp')
    .description('Model Context Protocol')
    .command('serve')
    .description('MCP server over stdio; every call runs as actor agent')
    .action(() => go('mcp serve', {}));

  repo
    .command('push <ref>')
    .description('send a repository to a machine (btrfs send/receive; incremental when a base is shared)')
    .requiredOption('--to <machine>', 'destination machine')
    .option('--with-secrets', 'also copy its own secrets, end-to-end encrypted between the two hosts (humans only)')
    .option('--secrets-only', 'copy only the secrets, to a copy that is already there (retry of --with-secrets; idempotent)')
    .action((ref: string, o: { to: string; withSecrets?: boolean; secretsOnly?: boolean }) => go('repo push', { ref, to: o.to, withSecrets: o.withSecrets, secretsOnly: o.secretsOnly }));
  repo
    .command('pull <ref>')
    .description('fetch a repository from a machine to this host')
    .requiredOption('--from <machine>', 'source machine')
    .option('--with-secrets', 'also copy its own secrets, end-to-end encrypted between the two hosts (humans only)')
    .option('--secrets-only', 'copy only the secrets, to a copy that is already here (retry of --with-secrets; idempotent)')
    .action((ref: string, o: { from: string; withSecrets?: boolean; secretsOnly?: boolean }) => go('repo pull', { ref, from: o.from, withSecrets: o.withSecrets, secretsOnly: o.secretsOnly }));

  program
    .command('serve')
    .description('(host) run the host daemon in the foreground: answers the tine launcher and SSH relays without a Node start-up per command')
    .option('--socket <path>', 'listen here instead of <runDir>/host.sock')
    .action((o: { socket?: string }) => go('serve', { socket: o.socket }));

  program
    .command('rpc')
    .description('(host) serve one request from a tine client: JSON in, JSON lines out')
    .option('--request <b64>', 'the request, base64url JSON (instead of stdin)')
    .addOption(new Option('--request-fd <fd>', 'the request line on this inherited fd (the launcher\'s hand-over)').argParser((v) => Number.parseInt(v, 10)).hideHelp())
    .action((o: { role?: string; request?: string; requestFd?: number }) => go('rpc', { role: o.role ?? (program.opts() as { role?: string }).role, request: o.request, requestFd: o.requestFd }));
}
