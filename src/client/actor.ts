// The client side of the guard for `-m`, MCP and client-only commands: the guard's own
// detection (plain fs reads of /proc: the thin client loads no native code) and the guard's
// own policy table and decision. The host decides again; a role-agent key is held to the
// agent policy there whatever this says.
import type { Actor } from '../ops/context.js';
import { loadHostConfig } from '../host/config.js';
import { parseRef } from '../repo/ref.js';
import { detect, trustedProcRoot, withAgentRole, type Detection } from '../guard/detect.js';
import { FsProcReader } from '../guard/proc.js';
import { decide } from '../guard/decide.js';
import { formatOverride } from '../guard/override.js';

export interface ClientVerdict {
  actor: Actor;
  /** The verified override (the boundary's, for agents), as the variable's text. */
  override: string | undefined;
  detection: Detection;
}

export function detectClientActor(): ClientVerdict {
  let procRoot = '/proc';
  try {
    procRoot = trustedProcRoot(loadHostConfig());
  } catch {
    /* no host config here: the real /proc */
  }
  const detection = detect(new FsProcReader(procRoot));
  return { actor: { kind: detection.kind, reason: detection.reason }, override: formatOverride(detection.override) ?? undefined, detection };
}

/** The guard's decision on what the client can see: a ref without a tag is a grand. */
export function clientAuthorize(command: string, input: Record<string, unknown>, verdict: ClientVerdict): void {
  // A caller that raised the actor (MCP, --role agent) is held to the agent policy.
  const who = verdict.actor.kind === 'agent' ? withAgentRole(verdict.detection, verdict.actor.reason) : verdict.detection;
  let target;
  if (typeof input.ref === 'string') {
    try {
      const ref = parseRef(input.ref);
      target = { ref, isGrand: ref.tag === null };
    } catch {
      return; // a bad ref is the host's exit 2, decided there with the role passed on
    }
  }
  const decision = decide(command, who, target);
  if (!decision.allowed) throw decision.error;
}
