// The guard in the thin client: the same detection (plain fs reads of /proc, no native
// code) and the same decision, BEFORE tine-host is spawned. It can only refuse or raise
// the role to agent; tine-host decides again with its own view of the tree.
import { existsSync } from 'node:fs';
import { loadHostConfig } from '../host/config.js';
import { formatRef } from '../repo/ref.js';
import { renderError } from '../cli/render.js';
import { EXIT } from '../errors.js';
import { appendAudit } from '../audit/log.js';
import { detect, trustedProcRoot, withAgentRole, setProcessDetection, type Detection } from './detect.js';
import { FsProcReader } from './proc.js';
import { decide } from './decide.js';
import { policyFor } from './policy.js';
import { parseInvocation, targetRef } from './invocation.js';

export type ClientVerdict =
  | { kind: 'run'; hostArgs: string[] }
  | { kind: 'refused'; exitCode: number };

export async function clientGuard(argv: string[]): Promise<ClientVerdict> {
  const args = argv.slice(2);
  const inv = await parseInvocation(argv);
  if (!inv) return { kind: 'run', hostArgs: args }; // help or usage: tine-host answers

  let config: ReturnType<typeof loadHostConfig> | undefined;
  try {
    config = loadHostConfig();
  } catch {
    config = undefined; // tine-host reports a broken config; the guard reads the real /proc
  }
  let who: Detection = detect(new FsProcReader(config ? trustedProcRoot(config) : '/proc'));
  if (inv.globals.role === 'agent') who = withAgentRole(who, '--role agent');
  setProcessDetection(who);

  const entry = policyFor(inv.name);
  const ref = targetRef(entry, inv.input);
  const hostArgs = who.kind === 'agent' ? ['--role', 'agent', ...args] : args;
  // A bad ref is exit 2 from tine-host's validation; a guid needs its registry. Both are
  // decided there (with the role passed on), never allowed here.
  if (entry?.target && !ref) return { kind: 'run', hostArgs };
  // The client has no registry: a tagless ref is a grand; a tagged one is left to the host.
  let decision = decide(inv.name, who, ref ? { ref, isGrand: ref.tag === null } : undefined);
  // Copying secrets is a human's act whatever the override allows for the move itself.
  if (decision.allowed && (inv.name === 'repo push' || inv.name === 'repo pull') && (inv.input.withSecrets || inv.input.secretsOnly)) {
    decision = decide('transfer secrets seal', who, ref ? { ref, isGrand: ref.tag === null } : undefined);
  }
  // As a user without root, the client may not be able to read the tree above sudo-like
  // processes; an override it cannot verify for that reason is left to tine-host (root),
  // which reads the whole tree and decides again.
  const partialView = who.walk.stoppedBy === 'unreadable' && who.walk.levels > 0 && process.getuid?.() !== 0;
  if (decision.allowed || (partialView && decision.error.code === 'OVERRIDE_REJECTED')) return { kind: 'run', hostArgs };

  const warnings: string[] = [];
  // Only on a machine that is a tine host (its state dir exists), and only for local
  // commands: a client-only machine gets no state dir from a refusal.
  if (config && !inv.globals.machine && existsSync(config.stateDir)) {
    try {
      await appendAudit(
        { stateDir: config.stateDir, rotateBytes: config.auditRotateBytes },
        {
          actor: who.kind,
          reason: who.reason,
          pid: process.pid,
          via: 'tine',
          command: inv.name,
          ...(ref ? { ref: formatRef(ref) } : {}),
          decision: 'refused',
          code: decision.error.code,
        },
      );
    } catch (err) {
      warnings.push(`this refusal was not recorded in the audit log (${(err as Error).message}); tine-host records the refusals it makes itself`);
    }
  }
  const envelope = { ok: false, command: inv.name, error: decision.error.toJSON(), ...(warnings.length ? { warnings } : {}) };
  const mode = inv.globals.output ?? (process.stdout.isTTY ? 'text' : 'json');
  if (mode === 'json') process.stdout.write(JSON.stringify(envelope) + '\n');
  else {
    for (const w of warnings) process.stderr.write(`warning: ${w}\n`);
    process.stderr.write(renderError(envelope as Parameters<typeof renderError>[0], Boolean(process.stderr.isTTY)) + '\n');
  }
  return { kind: 'refused', exitCode: EXIT.refused };
}
