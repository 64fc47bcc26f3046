// The guard's entry point for the command pipeline. (Filled in by the guard: actor +
// policy table; until then every command is allowed.)
import type { OpContext } from '../ops/context.js';
import type { CommandSpec } from '../commands/spec.js';

export async function authorize(_ctx: OpContext, _spec: CommandSpec, _input: unknown): Promise<void> {
  return;
}
