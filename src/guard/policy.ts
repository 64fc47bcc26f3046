// The guard's policy, as data: for every command of the contract (also those later issues
// build), what an agent may do. Humans are never refused by the guard.
//
//   read      always allowed (reads, forks of anything, listing)
//   grand     refused on a grand unless the user's override names it or is `*`; allowed on forks
//   family    changes beyond the target (keys granting host access, pushing into the parent): refused on the grand (GRAND_GUARD) AND on its forks (FORK_BLOCKED)
//             unless the override names the repository family or is `*`
//   machine   machine-level (setup, creating grands, managing machines): needs `*`
//   dispatch  carries requests that each pass through the guard again (rpc, mcp)
//   human     humans only: refused to every agent, whatever the override says (secret values leaving a host)

export type AgentRule = 'read' | 'grand' | 'family' | 'machine' | 'dispatch' | 'human';

export interface PolicyEntry {
  command: string;
  agent: AgentRule;
  /** The input field naming the repository the command acts on. */
  target?: 'ref' | 'name' | 'guid';
  /** What the command does, in the words of a refusal. */
  does: string;
}

export const POLICY: readonly PolicyEntry[] = [
  { command: 'setup', agent: 'machine', does: 'prepare the host' },
  { command: 'repo create', agent: 'machine', target: 'name', does: 'create a grand repository' },
  { command: 'repo list', agent: 'read', does: 'list repositories' },
  { command: 'repo info', agent: 'read', target: 'ref', does: 'show a repository' },
  { command: 'repo fork', agent: 'read', target: 'ref', does: 'fork a repository' },
  { command: 'repo delete', agent: 'grand', target: 'ref', does: 'delete a repository' },
  { command: 'repo up', agent: 'grand', target: 'ref', does: 'start a repository' },
  { command: 'repo down', agent: 'grand', target: 'ref', does: 'stop a repository' },
  { command: 'repo restore', agent: 'grand', target: 'ref', does: 'restore a repository' },
  // Brings up every repository that was up: host-wide.
  { command: 'repo restore-all', agent: 'machine', does: 'restore every repository' },
  { command: 'repo exec', agent: 'grand', target: 'ref', does: 'run a command inside a repository' },
  { command: 'repo connect', agent: 'grand', target: 'ref', does: 'open a shell inside a repository' },
  { command: 'repo secret set', agent: 'grand', target: 'ref', does: 'set a secret' },
  { command: 'repo secret unset', agent: 'grand', target: 'ref', does: 'remove a secret' },
  { command: 'repo secret get', agent: 'read', target: 'ref', does: 'show a secret\'s digest' },
  { command: 'repo secret list', agent: 'read', target: 'ref', does: 'list secrets' },
  { command: 'repo secret lift', agent: 'grand', target: 'ref', does: 'lift secrets from a file into a repository' },
  // Keys grant SSH access to the host: host-wide, even when they name a fork.
  { command: 'repo key add', agent: 'family', target: 'ref', does: 'add an access key' },
  { command: 'repo key remove', agent: 'family', target: 'ref', does: 'remove an access key' },
  { command: 'repo key list', agent: 'read', target: 'ref', does: 'list access keys' },
  // Pushing a fork changes its parent; pulling changes only the target.
  { command: 'repo push', agent: 'family', target: 'ref', does: 'push changes into the parent repository' },
  { command: 'repo pull', agent: 'grand', target: 'ref', does: 'pull changes into a repository' },
  { command: 'audit log', agent: 'read', does: 'read the audit log' },
  { command: 'audit verify', agent: 'read', does: 'verify the audit log' },
  { command: 'mcp serve', agent: 'dispatch', does: 'serve MCP' },
  { command: 'machine add', agent: 'machine', does: 'add a machine' },
  { command: 'machine setup', agent: 'machine', does: 'set up a machine' },
  { command: 'machine remove', agent: 'machine', does: 'remove a machine' },
  { command: 'machine list', agent: 'read', does: 'list machines' },
  { command: 'rpc', agent: 'dispatch', does: 'serve RPC' },
  // The host daemon answers root's local requests and SSH relays; each request passes the guard again.
  { command: 'serve', agent: 'machine', does: 'run the host daemon' },
  // Host halves of push/pull, reached through `tine-host rpc`. Receiving registers a new
  // repository (a create) and sending exports data off the host: both host-wide.
  { command: 'transfer bases', agent: 'read', does: 'list the snapshots held for transfers' },
  { command: 'transfer send', agent: 'machine', does: 'send a repository to another host' },
  { command: 'transfer receive', agent: 'machine', does: 'receive a repository from another host' },
  // `--with-secrets`: the sink's one-transfer key (open) and the source sealing the values to
  // it (seal). Secret values leave a host here, so no override lets an agent do it.
  { command: 'transfer secrets open', agent: 'human', does: 'receive secrets from another host' },
  { command: 'transfer secrets seal', agent: 'human', does: 'copy secrets to another host' },
  // The SSH forced command of a repository key: it enters that repository's sandbox.
  { command: 'sandbox-gateway', agent: 'grand', target: 'guid', does: 'enter a repository through the sandbox gateway' },
];

/** Every command name of the contract and of the issues that build on it. */
export const CONTRACT_COMMANDS: readonly string[] = [
  'setup',
  'repo create', 'repo list', 'repo info', 'repo delete', 'repo fork', 'repo up', 'repo down', 'repo exec', 'repo connect',
  'repo secret set', 'repo secret get', 'repo secret list', 'repo secret unset', 'repo secret lift',
  'repo key add', 'repo key list', 'repo key remove',
  'repo push', 'repo pull',
  'audit log', 'audit verify',
  'mcp serve',
  'machine add', 'machine setup', 'machine list', 'machine remove',
  'rpc', 'serve', 'sandbox-gateway',
  'transfer bases', 'transfer send', 'transfer receive', 'transfer secrets open', 'transfer secrets seal',
];

export function policyFor(command: string): PolicyEntry | undefined {
  return POLICY.find((p) => p.command === command);
}
