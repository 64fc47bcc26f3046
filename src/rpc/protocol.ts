// The wire protocol between `tine` (client) and `tine-host rpc` (host): one JSON request,
// then JSON-lines events. Shared by both sides; zod only (the client loads no native code).
import { z } from 'zod/v3';
import type { StepRecord } from '../ops/timeline.js';
import type { Envelope } from '../commands/execute.js';

export const PROTOCOL_VERSION = 1;

export const rpcRequestSchema = z
  .object({
    /** Contract name, e.g. "repo fork"; or an internal transfer verb ("transfer bases" …). */
    command: z.string().min(1, 'is empty').max(64),
    input: z.record(z.string(), z.unknown()).default({}),
    /** For commands that own the terminal (exec, connect): the tine-host argv to run as a child. */
    argv: z.array(z.string()).max(4096).optional(),
    client: z
      .object({
        actor: z.enum(['human', 'agent']),
        reason: z.string().max(500).default(''),
        version: z.string().max(100).optional(),
      })
      .strict()
      .default({ actor: 'human', reason: 'not given' }),
  })
  .strict();

export type RpcRequest = z.infer<typeof rpcRequestSchema>;

export type RpcEvent =
  | { event: 'hello'; protocol: number; version: string; actor: 'human' | 'agent'; actorReason: string }
  | ({ event: 'step' } & StepRecord)
  | { event: 'result'; envelope: Envelope; exitCode: number }
  /** `transfer secrets open`: the sink's one-transfer public key, for the client to relay to the source. */
  | { event: 'secrets-offer'; offer: { v: 1; host: string; guid: string; publicKey: string } };

/** Commands whose output is the program's own bytes and that may want a terminal. */
export const PASSTHROUGH_COMMANDS = new Set(['repo exec', 'repo connect']);

export function encodeRequestArg(req: RpcRequest): string {
  return Buffer.from(JSON.stringify(req), 'utf8').toString('base64url');
}

export function decodeRequestArg(arg: string): unknown {
  return JSON.parse(Buffer.from(arg, 'base64url').toString('utf8'));
}
