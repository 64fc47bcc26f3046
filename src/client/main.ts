// `tine`: the thin client. Client-side commands (machine, mcp, push/pull) run here; with -m
// a command goes to tine-host on that machine over SSH after the client's own guard; without
// -m it runs tine-host on this host (through sudo when not root). No native code here.
import { spawn } from 'node:child_process';
import { tineHostScript } from '../host/install.js';
import { buildProgram, isCommanderExit, type GlobalOptions } from '../cli/tree.js';
import { renderStep, renderTotal, renderError, renderRecord, renderList } from '../cli/render.js';
import { createInterface } from 'node:readline/promises';
import type { Envelope } from '../commands/execute.js';
import { Timeline } from '../ops/timeline.js';
import { CLIENT_COMMANDS } from './cli.js';
import { detectClientActor, clientAuthorize } from './actor.js';
import { findMachine } from './config.js';
import { LOCAL } from './ssh.js';
import { runRemote, runRemotePassthrough, clientRequest, errorEnvelope } from './remote.js';
import { machineAdd, machineAddInput, machineList, machineRemove, machineSetup, machineSetupInput } from './machine.js';
import { transferRepo } from './transfer.js';
import { PASSTHROUGH_COMMANDS } from '../rpc/protocol.js';
import { TineError, EXIT } from '../errors.js';
import { clientGuard } from '../guard/client.js';
import type { z } from 'zod/v3';

const hostScript = tineHostScript;

function outputMode(g: GlobalOptions): 'json' | 'text' {
  return g.output ?? (process.stdout.isTTY ? 'text' : 'json');
}

function print(env: Envelope, mode: 'json' | 'text'): void {
  if (mode === 'json') {
    process.stdout.write(JSON.stringify(env) + '\n');
    return;
  }
  for (const w of env.warnings ?? []) process.stderr.write(`warning: ${w}\n`);
  if (env.ok) {
    if (env.steps?.length) process.stdout.write(renderTotal(env.ms ?? 0, Boolean(process.stdout.isTTY)) + '\n');
    process.stdout.write(humanData(env) + '\n');
  } else process.stderr.write(renderError(env, Boolean(process.stderr.isTTY)) + '\n');
}

/** The same short summaries tine-host prints, for the records the client can render without the registry. */
function humanData(env: Envelope): string {
  const d = env.data as any;
  if (['repo create', 'repo fork', 'repo info', 'repo push', 'repo pull'].includes(env.command) && d?.ref) return renderRecord(d);
  if (env.command === 'repo list' && Array.isArray(d?.repos)) return renderList(d.repos);
  return JSON.stringify(d, null, 2);
}

function parseInput<T>(schema: z.ZodType<T, z.ZodTypeDef, any>, raw: unknown, command: string): T {
  const r = schema.safeParse(raw);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const field = issue.path.map(String).join('.') || 'input';
  throw new TineError('INVALID_INPUT', EXIT.usage, `${field}: ${issue.message}`, { field, next: [{ description: 'See the usage', run: `tine ${command} --help` }] });
}

/** Words after the global options, i.e. what tine-host should get for a passthrough command. */
function commandArgv(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') { out.push(...args.slice(i)); break; }
    if (a === '-m' || a === '--machine' || a === '-o' || a === '--output' || a === '--role') { i++; continue; }
    if (/^(-m.|-o.|--machine=|--output=|--role=)/.test(a)) continue;
    out.push(a);
  }
  return out;
}

async function runClientCommand(name: string, input: Record<string, unknown>, g: GlobalOptions, onStep?: (s: { step: string; label: string; ms: number }) => void): Promise<{ envelope: Envelope; exitCode: number }> {
  const timeline = new Timeline(onStep);
  const ok = (data: unknown) => ({ envelope: { ok: true, command: name, data, steps: timeline.steps, ms: timeline.elapsed() } as Envelope, exitCode: 0 });
  try {
    const verdict = detectClientActor();
    clientAuthorize(name, input, verdict);
    switch (name) {
      case 'machine add': return ok(await machineAdd(parseInput(machineAddInput, input, name), timeline));
      case 'machine list': return ok(machineList());
      case 'machine remove': return ok(machineRemove(String(input.name)));
      case 'machine setup': return ok(await machineSetup(parseInput(machineSetupInput, input, name), timeline));
      case 'repo push':
      case 'repo pull': {
        const other = findMachine(String(name === 'repo push' ? input.to : input.from));
        const here = g.machine ? findMachine(g.machine) : LOCAL;
        const [source, sink] = name === 'repo push' ? [here, other] : [other, here];
        return await transferRepo({ ref: String(input.ref), source, sink, withSecrets: Boolean(input.withSecrets), secretsOnly: Boolean(input.secretsOnly) }, verdict, onStep);
      }
    }
    throw new TineError('USAGE', EXIT.usage, `unknown client command ${name}`);
  } catch (err) {
    return { ...errorEnvelope(name, err), envelope: { ...errorEnvelope(name, err).envelope, steps: timeline.steps } };
  }
}

async function runLocal(args: string[]): Promise<number> {
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    // Already root on this host: run tine-host's code in this process instead of paying a
    // second Node start-up. Same entry, same argv, same guard (it detects again itself).
    const { hostMain } = await import('../cli/host-main.js');
    return hostMain([process.execPath, hostScript, ...args]);
  }
  const [cmd, cmdArgs] = asRoot ? [process.execPath, [hostScript, ...args]] : ['sudo', [process.execPath, hostScript, ...args]];
  const child = spawn(cmd, cmdArgs, { stdio: 'inherit' });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'] as const) process.on(sig, () => child.kill(sig));
  return new Promise((resolve) => {
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 + 1 : 1)));
    child.on('error', (err) => {
      process.stderr.write(`tine: cannot run tine-host: ${err.message}\n`);
      resolve(1);
    });
  });
}

export async function clientMain(argv: string[]): Promise<number> {
  const args = argv.slice(2);
  // The guard's client half decides first, on this process tree: an agent is refused here,
  // before tine-host is spawned or any SSH connection is made.
  const verdict = await clientGuard(argv);
  if (verdict.kind === 'refused') return verdict.exitCode;
  const hostArgs = verdict.hostArgs;
  let exitCode = 0;
  let handled = false;
  const program = buildProgram('tine', async (name, input, g) => {
    handled = true;
    const mode = outputMode(g);
    const tty = Boolean(process.stdout.isTTY);
    const onStep = mode === 'text' ? (s: { step: string; label: string; ms: number }) => process.stdout.write(renderStep(s, tty) + '\n') : undefined;
    if (name === 'mcp serve') {
      const { serveMcp } = await import('../mcp/server.js');
      exitCode = await serveMcp({ machine: g.machine });
      return;
    }
    if (CLIENT_COMMANDS.has(name)) {
      const r = await runClientCommand(name, input, g, onStep);
      print(r.envelope, mode);
      exitCode = r.exitCode;
      return;
    }
    if (!g.machine) {
      exitCode = await runLocal(hostArgs);
      return;
    }
    // Remote: the client's guard first, so an agent is refused before any connection.
    try {
      const verdict = detectClientActor();
      if ((g as { role?: string }).role === 'agent' && verdict.actor.kind === 'human') verdict.actor = { kind: 'agent', reason: '--role agent' };
      clientAuthorize(name, input, verdict);
      const m = findMachine(g.machine);
      if (PASSTHROUGH_COMMANDS.has(name)) {
        exitCode = await runRemotePassthrough(m, clientRequest(name, input, verdict.actor, commandArgv(args)), name === 'repo connect' && Boolean(process.stdin.isTTY));
        return;
      }
      let r = await runRemote(m, clientRequest(name, input, verdict.actor), onStep);
      // The host cannot ask across SSH; a person at this terminal can confirm here.
      if (r.envelope.error?.code === 'CONFIRMATION_REQUIRED' && process.stdin.isTTY && process.stdout.isTTY && typeof input.ref === 'string') {
        const rl = createInterface({ input: process.stdin, output: process.stdout });
        const answer = await rl.question(`Delete ${input.ref} on ${m.name} and all its files? Type "${input.ref}" to confirm: `).finally(() => rl.close());
        if (answer.trim() === input.ref) r = await runRemote(m, clientRequest(name, { ...input, yes: true }, verdict.actor), onStep);
      }
      print(r.envelope, mode);
      exitCode = r.exitCode;
    } catch (err) {
      const r = errorEnvelope(name, err);
      print(r.envelope, mode);
      exitCode = r.exitCode;
    }
  });
  try {
    await program.parseAsync(argv, { from: 'node' });
  } catch (err) {
    if (!isCommanderExit(err)) throw err;
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0) {
      return 0;
    }
    if (!handled && !args.includes('-m') && !args.some((a) => a.startsWith('--machine'))) return runLocal(hostArgs);
    const env: Envelope = { ok: false, command: args.filter((a) => !a.startsWith('-')).slice(0, 2).join(' '), error: { code: 'USAGE', message: err.message.replace(/^error: /, ''), next: [{ description: 'See the usage', run: 'tine --help' }] } };
    print(env, args.includes('json') || !process.stdout.isTTY ? 'json' : 'text');
    return EXIT.usage;
  }
  return exitCode;
}
