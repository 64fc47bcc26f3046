// `repo exec`, `repo connect` and `sandbox-gateway`: run something inside one repository's
// sandbox with the caller's stdio. They return { exitCode } and are `passthrough`
// commands: tine-host prints no envelope when the command ran, and exits with its code.
import { existsSync } from 'node:fs';
import type { OpContext } from '../ops/context.js';
import type { Ref } from '../repo/ref.js';
import { formatRef } from '../repo/ref.js';
import { type RepoRow, requireRepo, findByGuid, toRecord } from '../repo/registry.js';
import { runInSandbox, sandboxInvocation, type SandboxInvocation } from './helper.js';
import { TineError, EXIT, conflict, notFound } from '../errors.js';

export interface PassthroughResult {
  exitCode: number;
}

function usable(ctx: OpContext, row: RepoRow) {
  if (row.status !== 'ready') {
    throw conflict('BUSY', `repository ${formatRef(row)} is being ${row.status === 'deleting' ? 'deleted' : 'created'}`, [
      { description: 'List what is there now', run: 'tine repo list' },
    ]);
  }
  if (!existsSync(row.path)) {
    throw new TineError('REPO_MISSING', EXIT.failure, `repository ${formatRef(row)} is registered but ${row.path} is missing`, {
      next: [{ description: 'Look at the repository', run: `tine repo info ${formatRef(row)}` }],
    });
  }
  return toRecord(row, ctx.config);
}

/** A login shell that the sandbox (same /usr as the host) has. */
function loginShell(): string[] {
  return existsSync('/bin/bash') ? ['/bin/bash', '-l'] : ['/bin/sh', '-l'];
}

async function runPassthrough(ctx: OpContext, row: RepoRow, argv: string[], pty: boolean): Promise<PassthroughResult> {
  const record = usable(ctx, row);
  const { exit } = runInSandbox(ctx, record, argv, { pty });
  return { exitCode: await exit };
}

/** exec/connect for the `tine` launcher: everything but the spawn (see tine-host serve). */
export function planPassthrough(ctx: OpContext, ref: Ref, argv: string[] | null, callerEnv: Record<string, string>): SandboxInvocation & { ref: string } {
  const record = usable(ctx, requireRepo(ctx.db, ref));
  return { ...sandboxInvocation(ctx, record, argv ?? loginShell(), { pty: argv === null }, callerEnv), ref: record.ref };
}

export function execInRepo(ctx: OpContext, input: { ref: Ref; command: string[] }): Promise<PassthroughResult> {
  return runPassthrough(ctx, requireRepo(ctx.db, input.ref), input.command, false);
}

export function connectRepo(ctx: OpContext, input: { ref: Ref }): Promise<PassthroughResult> {
  return runPassthrough(ctx, requireRepo(ctx.db, input.ref), loginShell(), true);
}

/**
 * The forced command of a repo key: whatever the SSH client asked for (SSH_ORIGINAL_COMMAND)
 * runs inside this repository's sandbox, through `sh -c`; no command = a login shell.
 */
export function sandboxGateway(ctx: OpContext, input: { guid: string; command?: string }): Promise<PassthroughResult> {
  const row = findByGuid(ctx.db, input.guid);
  if (!row) throw notFound(`no repository with guid ${input.guid} on this host (its key is stale)`, [{ description: 'Ask the operator for a key of an existing repository', run: 'tine repo key list <ref>' }]);
  const argv = input.command ? ['/bin/sh', '-c', input.command] : loginShell();
  return runPassthrough(ctx, row, argv, !input.command && Boolean(process.stdin.isTTY));
}
