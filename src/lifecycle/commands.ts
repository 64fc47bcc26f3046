// Commands of the repository lifecycle: `repo up`, `repo down`, `repo restore-all`, and
// the `--up` option of `repo fork` (its spec lives with the core commands).
import { z } from 'zod/v3';
import type { Command } from 'commander';
import type { CommandSpec } from '../commands/spec.js';
import { refField } from '../commands/spec.js';
import type { Go } from '../cli/tree.js';
import { renderRecord } from '../cli/render.js';
import { upRepo, downRepo, restoreAll, type UpResult, type DownResult, type RestoreResult } from './operations.js';

type RefInput = { ref: ReturnType<typeof refField.parse> };

const repoUp: CommandSpec<RefInput> = {
  name: 'repo up',
  input: z.object({ ref: refField }).strict(),
  target: (i) => i.ref,
  needsHost: true,
  run: (ctx, i) => upRepo(ctx, { ref: i.ref }),
  human: (d: UpResult) => `${d.changed ? 'Up' : 'Already up'}: ${d.ref}\n${renderRecord(d)}`,
};

const repoDown: CommandSpec<RefInput> = {
  name: 'repo down',
  input: z.object({ ref: refField }).strict(),
  target: (i) => i.ref,
  needsHost: true,
  run: (ctx, i) => downRepo(ctx, { ref: i.ref }),
  human: (d: DownResult) => `${d.changed ? 'Down' : 'Already down'}: ${d.ref}`,
};

const repoRestoreAll: CommandSpec<Record<string, never>> = {
  name: 'repo restore-all',
  input: z.object({}).strict(),
  needsHost: true,
  run: (ctx) => restoreAll(ctx),
  human: (d: RestoreResult) =>
    [`Restored: ${d.restored.join(', ') || '(none)'}`, `Already running: ${d.alreadyRunning.join(', ') || '(none)'}`].join('\n'),
};

export const lifecycleCommands: CommandSpec[] = [repoUp, repoDown, repoRestoreAll];

export function addLifecycleCli(_program: Command, repo: Command, go: Go): void {
  repo.command('up <ref>').description('start a repository: its Docker daemon, containers and Tinefile up').action((ref: string) => go('repo up', { ref }));
  repo.command('down <ref>').description('stop a repository: Tinefile down (best effort), then its Docker daemon').action((ref: string) => go('repo down', { ref }));
  repo
    .command('restore-all')
    .description('bring back every repository that was up (after a reboot; the boot unit runs this)')
    .action(() => go('repo restore-all', {}));
  // `repo fork --up`: the fork command is the core's; the lifecycle adds its option.
  const fork = repo.commands.find((c) => c.name() === 'fork');
  fork
    ?.option('--up', 'bring the fork up: prefork in the source, snapshot, its own daemon, containers, Tinefile up')
    .action((ref: string, o: { tag: string; up?: boolean }) => go('repo fork', { ref, tag: o.tag, up: o.up }));
}
