// `repo secret …` in the shared command tree. `--value -` is read from stdin here, at the
// CLI edge, so the value never has to appear in argv (and so in `ps`). The same tree is
// parsed by the thin client and by the guard too: stdin is read once per process, and only
// where the request is executed or sent (tine-host, or `tine -m` which ships it over SSH);
// a local `tine` leaves stdin to the tine-host it runs.
import type { Command } from 'commander';
import type { Go } from '../cli/tree.js';
import { fromStdin } from './validate.js';

let stdinText: Promise<string> | undefined;
function readStdinOnce(): Promise<string> {
  stdinText ??= (async () => {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  })();
  return stdinText;
}

export function addSecretCli(program: Command, repo: Command, go: Go): void {
  const readsStdinHere = () => program.name() === 'tine-host' || Boolean((program.opts() as { machine?: string }).machine);
  const secret = repo.command('secret').description('write-only secrets of a repository (a fork starts with none)');
  secret
    .command('set <ref>')
    .description('set a secret (changing one needs --current or --rotate-secret)')
    .requiredOption('--key <key>', 'name: ^[A-Z][A-Z0-9_]*$, at most 64')
    .requiredOption('--value <value>', 'the value, or - to read it from stdin (one trailing newline dropped)')
    .option('--mode <mode>', 'env (TINE_SECRET_<KEY> for the Tinefile) or file (/run/secrets/<KEY>); default file')
    .option('--current <value>', 'the value it has now (required to change an existing secret)')
    .option('--rotate-secret', 'replace it without knowing the current value (audited)')
    .action(async (ref: string, o: { key: string; value: string; mode?: string; current?: string; rotateSecret?: boolean }) => {
      // Not read here: undefined, so that this input can never be executed with a '-' value.
      const value = o.value !== '-' ? o.value : readsStdinHere() ? fromStdin(await readStdinOnce()) : undefined;
      await go('repo secret set', { ref, key: o.key, value, mode: o.mode, current: o.current, rotateSecret: o.rotateSecret });
    });
  secret
    .command('get <ref>')
    .description('show a secret: mode, digest, when and by whom it was set (never the value)')
    .requiredOption('--key <key>', 'its name')
    .action((ref: string, o: { key: string }) => go('repo secret get', { ref, key: o.key }));
  secret
    .command('list <ref>')
    .description('list the secrets of a repository (never values)')
    .action((ref: string) => go('repo secret list', { ref }));
  secret
    .command('unset <ref>')
    .description('remove a secret (needs --current or --rotate-secret)')
    .requiredOption('--key <key>', 'its name')
    .option('--current <value>', 'the value it has now')
    .option('--rotate-secret', 'remove it without knowing the value (audited)')
    .action((ref: string, o: { key: string; current?: string; rotateSecret?: boolean }) =>
      go('repo secret unset', { ref, key: o.key, current: o.current, rotateSecret: o.rotateSecret }));
  secret
    .command('lift <ref>')
    .description('store the KEY=VALUE lines of a file in the repository (e.g. .env) as secrets')
    .requiredOption('--from <path>', 'the file, relative to the repository root')
    .option('--remove', 'rewrite the file without the lifted values (atomic)')
    .option('--mode <mode>', 'env or file; default env')
    .option('--rotate-secret', 'replace secrets that already hold other values')
    .action((ref: string, o: { from: string; remove?: boolean; mode?: string; rotateSecret?: boolean }) =>
      go('repo secret lift', { ref, from: o.from, remove: o.remove, mode: o.mode, rotateSecret: o.rotateSecret }));
}
