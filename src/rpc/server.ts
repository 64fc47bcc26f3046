// `tine-host rpc [--role agent]`: the host end of `tine -m`. One JSON request in (stdin's
// first line, or `--request B64` for commands that keep stdin for themselves), then JSON
// lines out: hello, each step as it happens, and the final envelope. The host decides the
// actor: agent when the key's role says so, when the client says so, or when its own
// detection says so; never weaker than any of them.
import { spawn } from 'node:child_process';
import { closeSync, readFileSync } from 'node:fs';
import { tineHostScript } from '../host/install.js';
import { execute, type Envelope } from '../commands/execute.js';
import type { Actor } from '../ops/context.js';
import { nonInteractive } from '../ops/context.js';
import { TineError, EXIT, toTineError } from '../errors.js';
import { rpcRequestSchema, PASSTHROUGH_COMMANDS, PROTOCOL_VERSION, decodeRequestArg, type RpcEvent, type RpcRequest } from './protocol.js';
import { readFirstLine } from './lines.js';
import { packageVersion } from '../client/version.js';
import { transferBases, transferSend, transferReceive, TRANSFER_COMMANDS } from './transfer.js';
import { openSecrets, sealSecrets } from '../secrets/transfer.js';
import { authorizeHostVerb } from '../guard/authorize.js';
import { loadHostConfig } from '../host/config.js';

const hostScript = tineHostScript;

export interface RpcOptions {
  role?: 'agent' | 'human';
  /** The request given as an argument (base64url JSON). */
  request?: string;
  /** The request line on this inherited fd (the launcher's hand-over: not on argv, and
   *  stdin left untouched for the stream that follows). */
  requestFd?: number;
}

export type Emit = (ev: RpcEvent) => void;

export const emit: Emit = (ev) => {
  process.stdout.write(JSON.stringify(ev) + '\n');
};

/** Under a forced command the client's own command line is only in SSH_ORIGINAL_COMMAND; take the request from there, nothing else. */
function requestFromOriginalCommand(): string | undefined {
  const orig = process.env.SSH_ORIGINAL_COMMAND;
  if (!orig) return undefined;
  const m = /(?:^|\s)--request[= ]([A-Za-z0-9_-]+)(?:\s|$)/.exec(orig);
  return m?.[1];
}

export function decideActor(role: RpcOptions['role'], claimed: RpcRequest['client'] | undefined, host: Actor): Actor {
  if (role === 'agent') return { kind: 'agent', reason: 'SSH key with role agent (forced command)' };
  if (host.kind === 'agent') return host;
  if (claimed?.actor === 'agent') return { kind: 'agent', reason: `client says agent: ${claimed.reason}`.slice(0, 300) };
  return { kind: 'human', reason: `client says human: ${claimed?.reason ?? 'no reason given'}`.slice(0, 300) };
}

function failEnvelope(command: string, err: unknown): { envelope: Envelope; exitCode: number } {
  const e = toTineError(err);
  return { envelope: { ok: false, command, error: e.toJSON() as Envelope['error'] }, exitCode: e.exitCode };
}

/** A request line → the request, or the error envelope to answer with. */
export function parseRequest(raw: unknown): { req: RpcRequest } | { failure: { envelope: Envelope; exitCode: number } } {
  const parsed = rpcRequestSchema.safeParse(raw);
  if (parsed.success) return { req: parsed.data };
  const issue = parsed.error.issues[0]!;
  const field = issue.path.map(String).join('.') || 'request';
  return { failure: failEnvelope('rpc', new TineError('INVALID_INPUT', EXIT.usage, `${field}: ${issue.message}`, { field })) };
}

export function badRequestLine(err: unknown): { envelope: Envelope; exitCode: number } {
  return err instanceof TineError ? failEnvelope('rpc', err) : failEnvelope('rpc', new TineError('RPC_BAD_REQUEST', EXIT.usage, `request: not JSON: ${(err as Error).message}`));
}

export const helloEvent = (actor: Actor): RpcEvent => ({ event: 'hello', protocol: PROTOCOL_VERSION, version: packageVersion(), actor: actor.kind, actorReason: actor.reason });

/** Requests that tine-host serve answers itself: everything that runs through execute()
 *  (not the transfer verbs, which stream, and not exec/connect, which own the terminal). */
export const answeredByServe = (req: RpcRequest) => !req.argv && !TRANSFER_COMMANDS.has(req.command) && !PASSTHROUGH_COMMANDS.has(req.command);

/** One contract command for a remote client: its steps as events, then the result. */
export async function answerRequest(req: RpcRequest, actor: Actor, out: Emit): Promise<number> {
  const { envelope, exitCode } = await execute(req.command, req.input, {
    actor,
    caller: nonInteractive,
    onStep: (s) => out({ event: 'step', ...s }),
  });
  out({ event: 'result', envelope, exitCode });
  return exitCode;
}

export async function runRpc(opts: RpcOptions, hostActor: Actor): Promise<number> {
  const encoded = opts.request ?? requestFromOriginalCommand();
  let raw: unknown;
  let rest: Buffer = Buffer.alloc(0);
  let command = 'rpc';
  try {
    if (opts.requestFd !== undefined) {
      const text = readFileSync(opts.requestFd, 'utf8');
      // Not left open for the children this process starts (hooks, helpers).
      closeSync(opts.requestFd);
      raw = JSON.parse(text);
    }
    else if (encoded) raw = decodeRequestArg(encoded);
    else {
      const first = await readFirstLine(process.stdin, 1 << 20);
      rest = first.rest;
      if (first.line === null) throw new TineError('RPC_NO_REQUEST', EXIT.usage, 'request: no JSON request on stdin');
      raw = JSON.parse(first.line);
    }
  } catch (err) {
    const env = badRequestLine(err);
    emit({ event: 'result', ...env });
    return env.exitCode;
  }
  const parsed = parseRequest(raw);
  if ('failure' in parsed) {
    emit({ event: 'result', ...parsed.failure });
    return parsed.failure.exitCode;
  }
  const req = parsed.req;
  command = req.command;
  const actor = decideActor(opts.role, req.client, hostActor);
  // exec/connect hand stdout to the program: no event lines there.
  if (!req.argv) emit(helloEvent(actor));

  if (TRANSFER_COMMANDS.has(command)) {
    try {
      // Not in the command registry, so not through execute(): the guard and the audit log
      // are applied here, before anything is read or written.
      await authorizeHostVerb({ config: loadHostConfig(), actor }, command);
      if (command === 'transfer bases') return finish(command, await transferBases(req.input));
      if (command === 'transfer send') return await transferSend(req.input, actor);
      if (command === 'transfer secrets seal') return finish(command, await sealSecrets(req.input, actor));
      if (command === 'transfer secrets open') return finish(command, await openSecrets(req.input, actor, rest, process.stdin, (offer) => emit({ event: 'secrets-offer', offer })));
      return finish(command, await transferReceive(req.input, actor, rest, process.stdin, (s) => emit({ event: 'step', ...s })));
    } catch (err) {
      const env = failEnvelope(command, err);
      // During a send stdout carries the stream; the envelope then goes to stderr too.
      process.stderr.write(JSON.stringify({ event: 'result', ...env }) + '\n');
      emit({ event: 'result', ...env });
      return env.exitCode;
    }
  }

  if (req.argv) return passthrough(req, actor);

  return answerRequest(req, actor, emit);
}

function finish(command: string, data: unknown): number {
  emit({ event: 'result', envelope: { ok: true, command, data }, exitCode: 0 });
  return 0;
}

/**
 * exec and connect own the terminal: run them as a child tine-host with the caller's stdio.
 * An agent's child carries TINE_AGENT=1 (a signal can only make the guard stricter) and no
 * override: the child is its own boundary, and its exec-time environment has none.
 */
function passthrough(req: RpcRequest, actor: Actor): Promise<number> {
  const argv = req.argv!;
  const words = req.command.split(' ');
  if (!PASSTHROUGH_COMMANDS.has(req.command) || argv[0] !== words[0] || argv[1] !== words[1] || argv.includes('-m') || argv.includes('--machine')) {
    const env = failEnvelope(req.command, new TineError('INVALID_INPUT', EXIT.usage, `argv: only ${[...PASSTHROUGH_COMMANDS].join(', ')} run with their own argv, and it must start with the command`, { field: 'argv' }));
    emit({ event: 'result', ...env });
    return Promise.resolve(env.exitCode);
  }
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.SSH_ORIGINAL_COMMAND;
  if (actor.kind === 'agent') {
    env.TINE_AGENT = '1';
    delete env.TINE_ALLOW_GRAND_REPO;
  }
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [hostScript, ...argv], { stdio: 'inherit', env });
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 + 1 : 1)));
    child.on('error', () => resolve(EXIT.failure));
  });
}
