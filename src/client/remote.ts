// `tine -m NAME …`: send one request to `tine-host rpc` on the machine and turn its event
// lines back into the same live timeline and envelope a local command gives.
import { createInterface } from 'node:readline';
import type { Machine } from './config.js';
import { spawnRemote, sshFailure, LOCAL } from './ssh.js';
import type { Envelope } from '../commands/execute.js';
import type { StepListener, StepRecord } from '../ops/timeline.js';
import { round } from '../ops/timeline.js';
import type { Actor } from '../ops/context.js';
import { TineError, EXIT, toTineError } from '../errors.js';
import { encodeRequestArg, type RpcEvent, type RpcRequest } from '../rpc/protocol.js';
import { packageVersion } from './version.js';

export interface RemoteResult {
  envelope: Envelope;
  exitCode: number;
  hostVersion?: string;
}

export function clientRequest(command: string, input: Record<string, unknown>, actor: Actor, argv?: string[]): RpcRequest {
  return { command, input, ...(argv ? { argv } : {}), client: { actor: actor.kind, reason: actor.reason.slice(0, 500), version: packageVersion() } };
}

/** Collect a stream's text (bounded) for error messages. */
function collect(stream: NodeJS.ReadableStream | null, limit = 64 * 1024): () => string {
  let text = '';
  stream?.on('data', (d: Buffer) => {
    if (text.length < limit) text += d.toString('utf8');
  });
  return () => text;
}

export async function runRemote(m: Machine, req: RpcRequest, onStep?: StepListener, env?: NodeJS.ProcessEnv): Promise<RemoteResult> {
  const t0 = performance.now();
  const clientSteps: StepRecord[] = [];
  const remoteSteps: StepRecord[] = [];
  const step = (s: StepRecord, mine: boolean) => {
    (mine ? clientSteps : remoteSteps).push(s);
    onStep?.(s);
  };
  const child = spawnRemote(m, ['rpc'], { env });
  const stderr = collect(child.stderr);
  child.stdin!.on('error', () => {});
  child.stdin!.end(JSON.stringify(req) + '\n');
  let result: Extract<RpcEvent, { event: 'result' }> | undefined;
  let hostVersion: string | undefined;
  const lines = createInterface({ input: child.stdout! });
  lines.on('line', (line) => {
    let ev: RpcEvent;
    try {
      ev = JSON.parse(line) as RpcEvent;
    } catch {
      return;
    }
    if (ev.event === 'hello') {
      hostVersion = ev.version;
      if (m === LOCAL) return;
      const ms = performance.now() - t0;
      step({ step: 'connect', label: `Connected to ${m.name} (${m.user}@${m.host}:${m.port})`, ms: round(ms) }, true);
      step({ step: 'host_verified', label: `Host verified (${m.knownHostKey.split(',')[0]})`, ms: 0 }, true);
    } else if (ev.event === 'step') {
      const { event: _e, ...s } = ev;
      step(s, false);
    } else if (ev.event === 'result') {
      result = ev;
    }
  });
  const code = await new Promise<number>((resolve) => {
    child.on('error', () => resolve(255));
    child.on('close', (c) => resolve(c ?? 255));
  });
  const ms = round(performance.now() - t0);
  if (!result) {
    const err = hostVersion === undefined && code === 255
      ? sshFailure(m, stderr())
      : new TineError('RPC_FAILED', EXIT.failure, `tine-host on ${m.name} ended (exit ${code}) without a result: ${stderr().trim().split('\n').pop() ?? ''}`, {
          next: [{ description: 'Check or reinstall tine-host there', run: `tine machine setup ${m.name}` }],
        });
    return { envelope: { ok: false, command: req.command, error: err.toJSON() as Envelope['error'], steps: clientSteps, ms }, exitCode: err.exitCode, hostVersion };
  }
  const envelope: Envelope = { ...result.envelope, steps: [...clientSteps, ...(result.envelope.steps ?? remoteSteps)], ms };
  return { envelope, exitCode: result.exitCode, hostVersion };
}

/**
 * exec and connect: the request travels as an argument so stdin stays the program's; the
 * program's bytes come back unchanged and its exit code is ours. connect gets a pty (-tt).
 */
export async function runRemotePassthrough(m: Machine, req: RpcRequest, tty: boolean): Promise<number> {
  const child = spawnRemote(m, ['rpc', '--request', encodeRequestArg(req)], { tty, stdio: 'inherit' });
  return new Promise<number>((resolve) => {
    child.on('error', () => resolve(255));
    child.on('close', (c, signal) => resolve(c ?? (signal ? 129 : 255)));
  });
}

/** The same, with the program's output captured (MCP's repo_exec). */
export async function runPassthroughCaptured(m: Machine, req: RpcRequest, env?: NodeJS.ProcessEnv): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  const child = spawnRemote(m, ['rpc', '--request', encodeRequestArg(req)], { env });
  const out = collect(child.stdout, 1 << 20);
  const err = collect(child.stderr, 1 << 20);
  child.stdin!.on('error', () => {});
  child.stdin!.end();
  const exitCode = await new Promise<number>((resolve) => {
    child.on('error', () => resolve(255));
    child.on('close', (c, signal) => resolve(c ?? (signal ? 129 : 255)));
  });
  return { exitCode, stdout: out(), stderr: err() };
}

export function errorEnvelope(command: string, err: unknown): { envelope: Envelope; exitCode: number } {
  const e = toTineError(err);
  return { envelope: { ok: false, command, error: e.toJSON() as Envelope['error'] }, exitCode: e.exitCode };
}
