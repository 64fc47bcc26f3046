// The client's own guard: decide human or agent from this process tree and refuse an agent
// before anything leaves the laptop. Pure JS over /proc (the thin client loads no native
// code); the host runs its own guard again, and a role-agent key is held to the agent
// policy there whatever this says.
import { readFileSync } from 'node:fs';
import type { Actor } from '../ops/context.js';
import { TineError, EXIT } from '../errors.js';

const FLAG_SIGNALS = ['TINE_AGENT', 'CLAUDECODE', 'GEMINI_CLI', 'COPILOT_CLI'];
const NONEMPTY_SIGNALS = ['CURSOR_TRACE_ID', 'CODEX_THREAD_ID', 'CODEX_SANDBOX', 'CLINE_ACTIVE'];

export function signalIn(env: Record<string, string | undefined>): string | undefined {
  for (const k of FLAG_SIGNALS) if (env[k] === '1') return `${k}=1`;
  for (const k of NONEMPTY_SIGNALS) if (env[k]) return `${k} set`;
  return undefined;
}

function procEnviron(pid: number): Record<string, string> | undefined {
  try {
    const out: Record<string, string> = {};
    for (const kv of readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0')) {
      const i = kv.indexOf('=');
      if (i > 0) out[kv.slice(0, i)] = kv.slice(i + 1);
    }
    return out;
  } catch {
    return undefined;
  }
}

function parentPid(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[1]);
  } catch {
    return undefined;
  }
}

export interface ClientVerdict {
  actor: Actor;
  /** The override as the boundary had it at exec time (agents); the current env (humans). */
  override: string | undefined;
}

export function detectClientActor(): ClientVerdict {
  const own = signalIn(process.env);
  let boundary: { pid: number; env: Record<string, string>; signal: string } | undefined;
  const hasProc = process.platform === 'linux' && procEnviron(process.pid) !== undefined;
  if (hasProc) {
    let pid: number | undefined = process.pid;
    for (let depth = 0; pid && pid > 1 && depth < 64; depth++) {
      const env = procEnviron(pid);
      const signal = env && signalIn(env);
      if (env && signal) boundary = { pid, env, signal };
      pid = parentPid(pid);
    }
  }
  if (boundary) {
    return { actor: { kind: 'agent', reason: `${boundary.signal} in pid ${boundary.pid}` }, override: boundary.env.TINE_ALLOW_GRAND_REPO };
  }
  if (own) {
    // A signal only in the current environment: no boundary to read an override from (fail closed).
    return { actor: { kind: 'agent', reason: `${own} in this process` }, override: undefined };
  }
  return { actor: { kind: 'human', reason: 'no agent signal' }, override: process.env.TINE_ALLOW_GRAND_REPO };
}

const ENTERING_OR_MUTATING = new Set([
  'repo up', 'repo down', 'repo delete', 'repo exec', 'repo connect', 'repo secret set', 'repo secret unset', 'repo restore', 'repo push',
]);
const MACHINE_LEVEL = new Set(['setup', 'repo create', 'repo pull', 'machine setup']);

function overrideNames(override: string | undefined, name: string): boolean {
  if (!override) return false;
  return override.split(',').map((s) => s.trim()).some((s) => s === '*' || s === name);
}

/** The agent policy of the contract, on what the client can see: a ref without a tag is a grand. */
export function clientAuthorize(command: string, input: Record<string, unknown>, verdict: ClientVerdict): void {
  if (verdict.actor.kind !== 'agent') return;
  if (MACHINE_LEVEL.has(command)) {
    if (verdict.override?.split(',').map((s) => s.trim()).includes('*')) return;
    throw new TineError('AGENT_MACHINE_LEVEL', EXIT.refused, `an agent may not run "${command}" (${verdict.actor.reason}); it needs TINE_ALLOW_GRAND_REPO=* set by a human before the agent started`, {
      next: [{ description: 'Ask a human to run it' }, { description: 'Work on a fork instead', run: 'tine repo fork <name> --tag <tag>' }],
    });
  }
  if (!ENTERING_OR_MUTATING.has(command)) return;
  const ref = typeof input.ref === 'string' ? input.ref : undefined;
  if (!ref || ref.includes(':')) return;
  if (overrideNames(verdict.override, ref)) return;
  throw new TineError('GRAND_GUARD', EXIT.refused, `${ref} is a grand repository; an agent may not ${command.replace(/^repo /, '')} it (${verdict.actor.reason})`, {
    next: [
      { description: 'Fork it and work on the fork', run: `tine repo fork ${ref} --tag <tag>` },
      { description: `Then ${command.replace(/^repo /, '')} the fork`, run: `tine ${command} ${ref}:<tag>` },
    ],
  });
}
