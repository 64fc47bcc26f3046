// Which command an argv asks for, parsed by the same commander tree the binaries use, with
// no output and nothing run. The thin client needs it to decide before it spawns tine-host.
import { Command } from 'commander';
import { buildProgram, type GlobalOptions } from '../cli/tree.js';
import { parseRef, type Ref } from '../repo/ref.js';
import type { PolicyEntry } from './policy.js';

export interface Invocation {
  name: string;
  input: Record<string, unknown>;
  globals: GlobalOptions & { role?: string };
}

/** undefined for help, version and usage errors (tine-host reports those itself). */
export async function parseInvocation(argv: string[]): Promise<Invocation | undefined> {
  let found: Invocation | undefined;
  const program = buildProgram('tine', async (name, input, globals) => {
    found = { name, input, globals };
  });
  const all = (c: Command): Command[] => [c, ...c.commands.flatMap(all)];
  for (const c of all(program)) c.configureOutput({ writeOut: () => {}, writeErr: () => {} });
  try {
    await program.parseAsync(argv, { from: 'node' });
  } catch {
    return undefined;
  }
  return found;
}

/** The repository a command acts on, from raw (strings) or validated (Ref) input. */
export function targetRef(entry: PolicyEntry | undefined, input: Record<string, unknown>): Ref | undefined {
  if (!entry?.target || entry.target === 'guid') return undefined; // a guid needs the registry (host side)
  const v = input[entry.target];
  if (typeof v === 'string') {
    try {
      return parseRef(v);
    } catch {
      return undefined; // bad input: the command's own validation reports it (exit 2)
    }
  }
  if (v && typeof v === 'object' && typeof (v as Ref).name === 'string') return v as Ref;
  return undefined;
}
