// tine-host's actor: the guard's detection over the native /proc reader, raised to agent by
// `--role agent` (hidden global option; the client passes it on) or TINE_ROLE=agent (set by
// the SSH forced command of an agent-role key). Nothing a caller passes can lower it.
import { loadHostConfig } from '../host/config.js';
import type { Actor } from '../ops/context.js';
import { detect, setProcessDetection, trustedProcRoot, withAgentRole } from './detect.js';
import { NativeProcReader } from './native-proc.js';

/** `role`: the hidden global option, already parsed by the command tree (no second parse). */
export function hostActor(role: 'agent' | undefined): Actor {
  let procRoot = '/proc';
  try {
    procRoot = trustedProcRoot(loadHostConfig());
  } catch {
    /* the pipeline reports a broken config */
  }
  let who = detect(new NativeProcReader(procRoot));
  if (role === 'agent') who = withAgentRole(who, '--role agent');
  setProcessDetection(who);
  return { kind: who.kind, reason: who.reason };
}
