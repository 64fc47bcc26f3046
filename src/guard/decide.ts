// The guard's decision, shared by the thin client and tine-host: (command, who, target) →
// allowed, or a refusal that says what happened and what to do instead.
import { TineError, EXIT, type NextStep } from '../errors.js';
import { formatRef, type Ref } from '../repo/ref.js';
import type { Detection } from './detect.js';
import { overrideCovers, parseOverride } from './override.js';
import { OVERRIDE_VAR } from './signals.js';
import { policyFor, type AgentRule } from './policy.js';

export interface Target {
  ref: Ref;
  /** A grand: the ref has no tag, or the registry row has no parent (either is enough). */
  isGrand: boolean;
}

export type Decision =
  | { allowed: true; rule: AgentRule | 'unknown' }
  | { allowed: false; rule: AgentRule | 'unknown'; error: TineError };

export const GUARD_CODES = ['GRAND_GUARD', 'OVERRIDE_REJECTED', 'MACHINE_GUARD', 'FORK_BLOCKED', 'HUMAN_ONLY'] as const;

const restartWith = (value: string): NextStep => ({
  description: `Only the user can allow it: quit the agent, then start it again with the override set`,
  run: `${OVERRIDE_VAR}=${value === '*' ? "'*'" : value} <agent command>`,
});

export function decide(command: string, who: Detection, target: Target | undefined): Decision {
  const entry = policyFor(command);
  const rule = entry?.agent ?? 'unknown';
  if (who.kind === 'human' || rule === 'read' || rule === 'dispatch') return { allowed: true, rule };

  const does = entry?.does ?? `run "${command}"`;
  const ref = target ? formatRef(target.ref) : undefined;
  const name = target?.ref.name;
  if (rule === 'human') {
    // Before any override is looked at: no override makes this an agent's operation.
    return {
      allowed: false,
      rule,
      error: new TineError('HUMAN_ONLY', EXIT.refused, `an agent may not ${does}${ref ? ` (${ref})` : ''}: secret values leave a host only when a person asks, and no override changes that. Detected: ${who.reason}.`, {
        next: [
          { description: 'Move the repository without its secrets', run: `tine repo push ${ref ?? '<ref>'} --to <machine>` },
          { description: 'Ask the user to copy the secrets', run: `tine repo push ${ref ?? '<ref>'} --to <machine> --secrets-only` },
        ],
        details: { actor: who.kind, reason: who.reason, command, ...(ref ? { ref } : {}) },
      }),
    };
  }
  // What the request needs from the override: `*`, or the repository family's name.
  const needsAll = rule === 'machine' || rule === 'unknown' || !name;
  if (rule === 'grand' && target && !target.isGrand) return { allowed: true, rule };
  if (needsAll ? who.override !== null && who.override.all : overrideCovers(who.override, name!)) return { allowed: true, rule };

  const covered = (raw: string) => {
    const o = parseOverride(raw);
    return needsAll ? o !== null && o.all : overrideCovers(o, name!);
  };
  const attempted = who.ignoredOverrides.filter((o) => covered(o.value));
  const details = { actor: who.kind, reason: who.reason, command, ...(ref ? { ref } : {}) };
  const refuse = (code: string, message: string, next: NextStep[]): Decision => ({
    allowed: false,
    rule,
    error: new TineError(code, EXIT.refused, message, { next, details }),
  });
  const forkNext: NextStep[] = name
    ? [
        { description: 'Fork it and work on the fork', run: `tine repo fork ${name} --tag <tag>` },
        { description: 'Or use a fork that exists', run: 'tine repo list' },
      ]
    : [];

  if (attempted.length) {
    const unverifiable = attempted.some((o) => o.why === 'unverifiable');
    const seen = attempted.map((o) => `${OVERRIDE_VAR}=${o.value} in ${o.where}`).join('; ');
    const message = unverifiable
      ? `${OVERRIDE_VAR} was not accepted: its origin could not be verified (${who.walk.stoppedBy === 'unreadable' ? `the process tree could not be read: ${who.walk.error}` : 'the process tree could not be traced to its top'}), so an agent may not ${does}${ref ? ` on ${ref}` : ''}. Ignored: ${seen}.`
      : `agent-initiated overrides are not accepted; only the user can set it before starting the agent. Ignored: ${seen}. The agent may not ${does}${ref ? ` on ${ref}` : ''}.`;
    return refuse('OVERRIDE_REJECTED', message, [...forkNext, restartWith(needsAll ? '*' : name!)]);
  }
  if (needsAll) {
    return refuse(
      'MACHINE_GUARD',
      `an agent may not ${does}${ref ? ` (${ref})` : ''}: it is a machine-level operation and the user has not allowed it (${OVERRIDE_VAR}='*'). Detected: ${who.reason}.`,
      [
        { description: 'Ask the user to run it', run: `tine ${command}${command === 'repo create' && ref ? ` ${ref}` : ''}` },
        ...(command === 'repo create' ? [{ description: 'Or work on a fork of a repository that exists', run: 'tine repo list' }] : []),
        restartWith('*'),
      ],
    );
  }
  if (target && !target.isGrand) {
    return refuse(
      'FORK_BLOCKED',
      `${ref} is a fork, but to ${does} reaches beyond the fork (host access, the grand's secrets or the parent), so an agent may not do it unless the user allowed "${name}". Detected: ${who.reason}.`,
      [{ description: 'Ask the user to run it', run: `tine ${command} ${ref}` }, restartWith(name!)],
    );
  }
  return refuse(
    'GRAND_GUARD',
    `${ref} is a grand (production) repository: an agent may not ${does} on it. Work on a fork instead. Detected: ${who.reason}.`,
    [
      ...forkNext,
      ...(rule === 'grand' ? [{ description: 'Then do the same on the fork', run: `tine ${command} ${name}:<tag>${command === 'repo exec' ? ' -- CMD' : ''}` }] : []),
      restartWith(name!),
    ],
  );
}
