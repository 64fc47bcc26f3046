// Every command of the contract that tine-host runs. The CLI, the RPC endpoint and the
// MCP server all dispatch through `execute` with one of these names.
import { z } from 'zod/v3';
import type { CommandSpec } from './spec.js';
import { refField, labelField } from './spec.js';
import { createRepo, forkRepo, listRepos, repoInfo, deleteRepo } from '../repo/operations.js';
import type { RepoRecord } from '../repo/registry.js';
import { renderRecord, renderList, renderSetup } from '../cli/render.js';
import { setupHost, type SetupResult } from '../host/setup.js';
import { secretCommands } from '../secrets/commands.js';
import { sandboxCommands } from '../sandbox/commands.js';
import { lifecycleCommands } from '../lifecycle/commands.js';
import { auditCommands } from '../audit/commands.js';
import { forkAndUp } from '../lifecycle/operations.js';

const setup: CommandSpec<{ datastore?: string; size?: string }> = {
  name: 'setup',
  input: z.object({ datastore: z.string().min(1, 'is empty').optional(), size: z.string().regex(/^\d+[KMGT]?$/, 'is not a size like 20G').optional() }).strict(),
  needsHost: false,
  run: (ctx, i) => setupHost(ctx.config, ctx.timeline, i),
  human: (d: SetupResult) => renderSetup(d),
};

const repoCreate: CommandSpec<{ name: ReturnType<typeof refField.parse>; from?: string }> = {
  name: 'repo create',
  input: z.object({ name: refField, from: z.string().min(1, 'is empty').optional() }).strict(),
  needsHost: true,
  run: (ctx, i) => createRepo(ctx, { ref: i.name, from: i.from }),
  human: (d: RepoRecord) => renderRecord(d),
};

const repoFork: CommandSpec<{ ref: ReturnType<typeof refField.parse>; tag: string; up: boolean }> = {
  name: 'repo fork',
  input: z.object({ ref: refField, tag: labelField, up: z.boolean().default(false) }).strict(),
  target: (i) => i.ref,
  needsHost: true,
  run: (ctx, i) => (i.up ? forkAndUp(ctx, { ref: i.ref, tag: i.tag }) : forkRepo(ctx, { ref: i.ref, tag: i.tag })),
  human: (d: RepoRecord) => renderRecord(d),
};

const repoList: CommandSpec<Record<string, never>> = {
  name: 'repo list',
  input: z.object({}).strict(),
  needsHost: true,
  run: (ctx) => listRepos(ctx),
  human: (d: { repos: RepoRecord[] }) => renderList(d.repos),
};

const repoInfoSpec: CommandSpec<{ ref: ReturnType<typeof refField.parse> }> = {
  name: 'repo info',
  input: z.object({ ref: refField }).strict(),
  target: (i) => i.ref,
  needsHost: true,
  run: (ctx, i) => repoInfo(ctx, { ref: i.ref }),
  human: (d: RepoRecord) => renderRecord(d),
};

const repoDelete: CommandSpec<{ ref: ReturnType<typeof refField.parse>; yes: boolean }> = {
  name: 'repo delete',
  input: z.object({ ref: refField, yes: z.boolean().default(false) }).strict(),
  target: (i) => i.ref,
  needsHost: true,
  run: (ctx, i) => deleteRepo(ctx, { ref: i.ref, yes: i.yes }),
  human: (d: { ref: string }) => `Deleted ${d.ref}`,
};

const coreCommands: CommandSpec[] = [setup, repoCreate, repoFork, repoList, repoInfoSpec, repoDelete];

// Each feature contributes its own array of specs (one import + one entry here).
export const commands: CommandSpec[] = [
  ...coreCommands,
  ...secretCommands,
  ...sandboxCommands,
  ...lifecycleCommands,
  ...auditCommands,
];

export function findCommand(name: string): CommandSpec | undefined {
  return commands.find((c) => c.name === name);
}
