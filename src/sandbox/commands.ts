// The sandbox's commands and their place in the shared command tree.
import { z } from 'zod/v3';
import type { Command } from 'commander';
import type { CommandSpec } from '../commands/spec.js';
import { refField } from '../commands/spec.js';
import type { Go } from '../cli/tree.js';
import type { Ref } from '../repo/ref.js';
import type { RepoKey } from './keys.js';

// Loaded only when one of these commands runs: every other command skips them.
const ops = () => import('./operations.js');
const keys = () => import('./keys.js');

const repoExec: CommandSpec<{ ref: Ref; command: string[] }> = {
  name: 'repo exec',
  input: z.object({
    ref: refField,
    command: z.array(z.string().refine((s) => !s.includes('\0'), 'contains a NUL byte'), { required_error: 'is required', invalid_type_error: 'is required' }).min(1, 'is empty; give the command after --'),
  }).strict(),
  target: (i) => i.ref,
  needsHost: true,
  passthrough: true,
  run: async (ctx, i) => (await ops()).execInRepo(ctx, i),
  plan: async (ctx, i, env) => (await ops()).planPassthrough(ctx, i.ref, i.command, env),
};

const repoConnect: CommandSpec<{ ref: Ref }> = {
  name: 'repo connect',
  input: z.object({ ref: refField }).strict(),
  target: (i) => i.ref,
  needsHost: true,
  passthrough: true,
  run: async (ctx, i) => (await ops()).connectRepo(ctx, i),
  plan: async (ctx, i, env) => (await ops()).planPassthrough(ctx, i.ref, null, env),
};

const sandboxGatewaySpec: CommandSpec<{ guid: string; command?: string }> = {
  name: 'sandbox-gateway',
  input: z.object({
    guid: z.string({ required_error: 'is required', invalid_type_error: 'is required' }).regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'is not a repository guid'),
    command: z.string().refine((s) => !s.includes('\0'), 'contains a NUL byte').optional(),
  }).strict(),
  needsHost: true,
  passthrough: true,
  run: async (ctx, i) => (await ops()).sandboxGateway(ctx, i),
};

const renderKey = (k: RepoKey) => `${k.fingerprint}  ${k.type}  ${k.comment}`;

const repoKeyAdd: CommandSpec<{ ref: Ref; pubkey: string }> = {
  name: 'repo key add',
  input: z.object({ ref: refField, pubkey: z.string({ required_error: 'is required', invalid_type_error: 'is required' }).min(1, 'is empty') }).strict(),
  target: (i) => i.ref,
  needsHost: true,
  run: async (ctx, i) => (await keys()).keyAdd(ctx, i),
  human: (k: RepoKey) => `Key ${k.fingerprint} opens ${k.ref} (sandboxed)`,
};

const repoKeyList: CommandSpec<{ ref: Ref }> = {
  name: 'repo key list',
  input: z.object({ ref: refField }).strict(),
  target: (i) => i.ref,
  needsHost: true,
  run: async (ctx, i) => (await keys()).keyList(ctx, i),
  human: (d: { keys: RepoKey[] }) => (d.keys.length ? d.keys.map(renderKey).join('\n') : 'no keys'),
};

const repoKeyRemove: CommandSpec<{ ref: Ref; fingerprint: string }> = {
  name: 'repo key remove',
  input: z.object({ ref: refField, fingerprint: z.string({ required_error: 'is required', invalid_type_error: 'is required' }).regex(/^SHA256:[A-Za-z0-9+/]{43}$/, 'is not a SHA256:… fingerprint (see tine repo key list)') }).strict(),
  target: (i) => i.ref,
  needsHost: true,
  run: async (ctx, i) => (await keys()).keyRemove(ctx, i),
  human: (d: { removed: RepoKey }) => `Removed key ${d.removed.fingerprint} of ${d.removed.ref}`,
};

export const sandboxCommands: CommandSpec[] = [repoExec, repoConnect, sandboxGatewaySpec, repoKeyAdd, repoKeyList, repoKeyRemove];

export function addSandboxCli(program: Command, repo: Command, go: Go): void {
  repo
    .command('exec <ref> [command...]')
    .description('run a command inside the repository\'s sandbox (put it after --); returns its exit code')
    .action((ref: string, command: string[]) => go('repo exec', { ref, command }));
  repo
    .command('connect <ref>')
    .description('interactive shell inside the repository\'s sandbox')
    .action((ref: string) => go('repo connect', { ref }));
  const key = repo.command('key').description('SSH keys that open one repository\'s sandbox, whatever command is asked');
  key
    .command('add <ref>')
    .description('install a public key with a forced command into the sandbox')
    .requiredOption('--pubkey <file>', 'the public key file (- for stdin)')
    .action((ref: string, o: { pubkey: string }) => go('repo key add', { ref, pubkey: o.pubkey }));
  key.command('list <ref>').description('list the repository\'s keys').action((ref: string) => go('repo key list', { ref }));
  key
    .command('remove <ref>')
    .description('remove a key')
    .requiredOption('--fingerprint <fp>', 'SHA256:… as shown by list')
    .action((ref: string, o: { fingerprint: string }) => go('repo key remove', { ref, fingerprint: o.fingerprint }));
  program
    .command('sandbox-gateway <guid>')
    .description('(forced command of a repo key) run SSH_ORIGINAL_COMMAND inside that repository\'s sandbox')
    .action((guid: string) => go('sandbox-gateway', { guid, command: process.env.SSH_ORIGINAL_COMMAND || undefined }));
}
