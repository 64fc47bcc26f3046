// A command of the contract, as data: its input schema (validated once, at the edge), the
// repository it targets (for the guard), and the one operation that implements it.
import { z } from 'zod/v3';
import type { OpContext } from '../ops/context.js';
import type { Ref } from '../repo/ref.js';
import { parseRef, checkLabel } from '../repo/ref.js';
import { TineError } from '../errors.js';

export interface CommandSpec<I = any> {
  /** Contract name, e.g. "repo fork". */
  name: string;
  input: z.ZodType<I, z.ZodTypeDef, any>;
  /** The repository the command acts on (the guard decides on grand vs fork). */
  target?: (input: I) => Ref | undefined;
  /** Needs the datastore and the state database (everything but setup and client-only commands). */
  needsHost: boolean;
  run: (ctx: OpContext, input: I) => Promise<unknown> | unknown;
  human?: (data: any) => string;
  /** Runs a process on the caller's stdio (repo exec/connect): on success no envelope is
   *  printed and the process exits with `data.exitCode`; refusals still get the envelope. */
  passthrough?: boolean;
  /** For passthrough commands: what would run (the sandbox helper's invocation) instead of
   *  running it; `tine-host serve` answers the `tine` launcher with it. `callerEnv` is the
   *  caller's environment (only its allow-listed terminal/locale variables are used). */
  plan?: (ctx: OpContext, input: I, callerEnv: Record<string, string>) => Promise<unknown> | unknown;
}

/** A zod string parsed into a Ref; a bad ref becomes an issue naming the field. */
export const refField = z.string({ required_error: 'is required', invalid_type_error: 'is required' }).transform((value, zctx) => {
  try {
    return parseRef(value);
  } catch (err) {
    zctx.addIssue({ code: 'custom', message: stripField((err as TineError).message) });
    return z.NEVER;
  }
});

export const labelField = z.string({ required_error: 'is required', invalid_type_error: 'is required' }).transform((value, zctx) => {
  try {
    return checkLabel('x', value);
  } catch (err) {
    zctx.addIssue({ code: 'custom', message: stripField((err as TineError).message) });
    return z.NEVER;
  }
});

function stripField(message: string): string {
  return message.replace(/^[^:]*: /, '');
}
