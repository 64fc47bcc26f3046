// The guard in the command pipeline (called by execute() after input validation): who is
// calling (detected once per process; a role given by the caller can only raise it to
// agent), what the policy says for this command and target, an audit entry for every
// refusal and every agent command, and the refusal itself.
import type { OpContext } from '../ops/context.js';
import type { CommandSpec } from '../commands/spec.js';
import { formatRef, type Ref } from '../repo/ref.js';
import { findByRef, findByGuid } from '../repo/registry.js';
import { TineError, EXIT } from '../errors.js';
import { appendAudit } from '../audit/log.js';
import { processDetection, trustedProcRoot, withAgentRole, type Detection } from './detect.js';
import { NativeProcReader } from './native-proc.js';
import { decide, type Target } from './decide.js';
import { policyFor } from './policy.js';
import { targetRef } from './invocation.js';

export function hostDetection(ctx: Pick<OpContext, 'config' | 'actor'>): Detection {
  const d = processDetection(() => new NativeProcReader(trustedProcRoot(ctx.config)));
  return ctx.actor.kind === 'agent' ? withAgentRole(d, ctx.actor.reason) : d;
}

/** Grand or fork: a tagless ref always names a grand; otherwise the registry row says. */
function resolveTarget(ctx: OpContext, spec: CommandSpec, ref: Ref): Target {
  if (ref.tag === null) return { ref, isGrand: true };
  if (!spec.needsHost) return { ref, isGrand: false };
  const row = findByRef(ctx.db, ref);
  // A missing repo is not the guard's business: the operation reports NOT_FOUND.
  return { ref, isGrand: row ? row.parent_guid === null : false };
}

export async function authorize(ctx: OpContext, spec: CommandSpec, input: unknown): Promise<void> {
  const who = hostDetection(ctx);
  const entry = policyFor(spec.name);
  const ref = spec.target?.(input) ?? targetRef(entry, (input ?? {}) as Record<string, unknown>);
  let target = ref ? resolveTarget(ctx, spec, ref) : undefined;
  if (!target && entry?.target === 'guid') {
    // Unknown guid: no target, so the decision needs `*` from an agent (fail closed).
    const row = findByGuid(ctx.db, String((input as Record<string, unknown>).guid));
    if (row) target = { ref: { name: row.name, tag: row.tag }, isGrand: row.parent_guid === null };
  }
  const decision = decide(spec.name, who, target);
  if (decision.allowed && who.kind === 'human') return;

  const record = {
    actor: who.kind,
    reason: who.reason,
    pid: ctx.actor.pid ?? process.pid,
    via: 'tine-host' as const,
    command: spec.name,
    ...(target ? { ref: formatRef(target.ref) } : {}),
    decision: decision.allowed ? ('allowed' as const) : ('refused' as const),
    ...(decision.allowed ? {} : { code: decision.error.code }),
  };
  try {
    await appendAudit({ stateDir: ctx.config.stateDir, rotateBytes: ctx.config.auditRotateBytes }, record);
  } catch (err) {
    // Fail closed: an agent command that cannot be recorded does not run. A refusal
    // stands either way; it says that it was not recorded.
    const why = err instanceof Error ? err.message : String(err);
    if (!decision.allowed) {
      throw new TineError(decision.error.code, decision.error.exitCode, `${decision.error.message} (not recorded in the audit log: ${why})`, {
        next: decision.error.next,
        details: decision.error.details,
      });
    }
    throw new TineError('AUDIT_FAILED', EXIT.failure, `an agent command is only run when it can be audited, and the audit log could not be written: ${why}`, {
      next: [{ description: 'Check the audit log', run: 'tine audit verify' }],
    });
  }
  if (!decision.allowed) throw decision.error;
}

/**
 * The guard for host verbs that do not run through execute() (the transfer halves of
 * push/pull in `tine-host rpc`): the same detection, policy, audit and refusal. They carry
 * no repository target here, so an agent needs the `*` override (their policy: machine).
 */
export async function authorizeHostVerb(ctx: Pick<OpContext, 'config' | 'actor'>, command: string): Promise<void> {
  const spec = { name: command, needsHost: false } as CommandSpec;
  await authorize(ctx as OpContext, spec, {});
}
