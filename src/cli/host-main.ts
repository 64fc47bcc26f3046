// tine-host's entry: argv → command → execute → envelope on stdout, exit code of the contract.
import { createInterface } from 'node:readline/promises';
import { hostActor } from '../guard/host-actor.js';
import { buildProgram, isCommanderExit, type GlobalOptions } from './tree.js';
import { execute, type Envelope } from '../commands/execute.js';
import { findCommand } from '../commands/registry.js';
import { renderStep, renderTotal, renderError } from './render.js';
import type { Caller } from '../ops/context.js';
import { EXIT, toTineError } from '../errors.js';
import { authorizeHostVerb } from '../guard/authorize.js';
import { loadHostConfig } from '../host/config.js';
import { runRpc, type RpcOptions } from '../rpc/server.js';

const ttyCaller: Caller = {
  interactive: true,
  async confirm(question: string) {
    const rl = createInterface({ input: process.stdin, output: process.stdout });
    try {
      const answer = await rl.question(question);
      const expected = /Type "([^"]+)"/.exec(question)?.[1];
      return expected ? answer.trim() === expected : /^y(es)?$/i.test(answer.trim());
    } finally {
      rl.close();
    }
  },
};

export function outputMode(g: GlobalOptions): 'json' | 'text' {
  return g.output ?? (process.stdout.isTTY ? 'text' : 'json');
}

/** The envelope as the caller sees it: `out` for stdout, `err` for stderr. */
export function renderEnvelope(env: Envelope, mode: 'json' | 'text', human: ((d: unknown) => string) | undefined, tty: { stdout: boolean; stderr: boolean }): { out: string; err: string } {
  if (mode === 'json') return { out: JSON.stringify(env) + '\n', err: '' };
  let out = '';
  let err = '';
  for (const w of env.warnings ?? []) err += `warning: ${w}\n`;
  if (env.ok) {
    if (env.steps?.length) out += renderTotal(env.ms ?? 0, tty.stdout) + '\n';
    out += (human ? human(env.data) : JSON.stringify(env.data, null, 2)) + '\n';
  } else {
    err += renderError(env, tty.stderr) + '\n';
  }
  return { out, err };
}

export function printEnvelope(env: Envelope, mode: 'json' | 'text', human?: (d: unknown) => string): void {
  const { out, err } = renderEnvelope(env, mode, human, { stdout: Boolean(process.stdout.isTTY), stderr: Boolean(process.stderr.isTTY) });
  if (err) process.stderr.write(err);
  if (out) process.stdout.write(out);
}

export async function hostMain(argv: string[]): Promise<number> {
  process.umask(0o077);
  let exitCode: number = EXIT.ok;
  const program = buildProgram('tine-host', async (name, input, globals) => {
    // Who is calling: this host's own view of the process tree, raised by --role agent.
    const actor = hostActor(globals.role === 'agent' ? 'agent' : undefined);
    if (name === 'rpc') {
      exitCode = await runRpc(input as RpcOptions, actor);
      return;
    }
    if (name === 'serve') {
      const { serveHost } = await import('../host/serve.js');
      try {
        await authorizeHostVerb({ config: loadHostConfig(), actor }, 'serve');
      } catch (err) {
        const e = toTineError(err);
        printEnvelope({ ok: false, command: name, error: e.toJSON() as Envelope['error'] }, outputMode(globals));
        exitCode = e.exitCode;
        return;
      }
      exitCode = await serveHost(input as { socket?: string });
      return;
    }
    const mode = outputMode(globals);
    const caller: Caller = process.stdin.isTTY && process.stdout.isTTY ? ttyCaller : { interactive: false, confirm: async () => false };
    const tty = Boolean(process.stdout.isTTY);
    // repo exec/connect: stdout belongs to the command; only a refusal gets the envelope.
    const passthrough = Boolean(findCommand(name)?.passthrough);
    const { envelope, exitCode: code } = await execute(name, input, {
      actor,
      caller,
      onStep: mode === 'text' && !passthrough ? (s) => process.stdout.write(renderStep(s, tty) + '\n') : undefined,
    });
    if (passthrough && envelope.ok) {
      exitCode = (envelope.data as { exitCode: number }).exitCode;
      return;
    }
    printEnvelope(envelope, mode, findCommand(name)?.human);
    exitCode = code;
  });
  try {
    await program.parseAsync(argv, { from: 'node' });
  } catch (err) {
    if (isCommanderExit(err)) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0) return 0;
      const message = err.message.replace(/^error: /, '');
      const env: Envelope = { ok: false, command: argv.slice(2).filter((a) => !a.startsWith('-')).slice(0, 2).join(' '), error: { code: 'USAGE', message, next: [{ description: 'See the usage', run: 'tine --help' }] } };
      printEnvelope(env, process.stdout.isTTY && !argv.includes('json') ? 'text' : 'json');
      return EXIT.usage;
    }
    throw err;
  }
  return exitCode;
}
