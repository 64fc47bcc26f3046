// The command tree of the contract, shared by `tine` and `tine-host`. It only turns argv
// into (command name, raw input); validation happens once, in the command pipeline.
import { Command, CommanderError, Option } from 'commander';
import { addClientCli } from '../client/cli.js';
import { addSecretCli } from '../secrets/cli.js';
import { addSandboxCli } from '../sandbox/commands.js';
import { addLifecycleCli } from '../lifecycle/commands.js';
import { addAuditCli } from '../audit/cli.js';

export interface GlobalOptions {
  output?: 'json' | 'text';
  machine?: string;
  /** Hidden: `agent` holds the command to the agent policy (it can never lower the actor). */
  role?: 'agent';
}

export type Go = (name: string, input: Record<string, unknown>) => Promise<void>;

export type CommandHandler = (name: string, input: Record<string, unknown>, globals: GlobalOptions) => Promise<void>;

/** Drop options the user did not give, so the schema sees only what was said. */
function defined(obj: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined));
}

export function buildProgram(binName: string, handler: CommandHandler): Command {
  const program = new Command(binName)
    .description('tine: production repositories agents cannot touch; millisecond forks they can')
    .addOption(new Option('-o, --output <format>', 'output format (default: text on a terminal, json otherwise)').choices(['json', 'text']))
    .option('-m, --machine <name>', 'run the command on that machine over SSH')
    .addOption(new Option('--role <role>', 'hold this command to the agent policy').choices(['agent']).hideHelp())
    .showSuggestionAfterError(true)
    .exitOverride();

  const globals = (): GlobalOptions => program.opts() as GlobalOptions;
  const go: Go = (name, input) => handler(name, defined(input), globals());

  program
    .command('setup')
    .description('prepare this host (idempotent): datastore, sandbox user, state')
    .option('--datastore <dir>', 'use this btrfs filesystem instead of the embedded pool')
    .option('--size <size>', 'size of the embedded pool file, e.g. 20G (sparse)')
    .action((o: { datastore?: string; size?: string }) => go('setup', { datastore: o.datastore, size: o.size }));

  const repo = program.command('repo').description('repositories: grands and their forks');
  repo
    .command('create <name>')
    .description('create a grand repository')
    .option('--from <dir>', 'copy this directory tree in (reflinked where possible)')
    .action((name: string, o: { from?: string }) => go('repo create', { name, from: o.from }));
  repo.command('list').description('list repositories').action(() => go('repo list', {}));
  repo.command('info <ref>').description('show one repository').action((ref: string) => go('repo info', { ref }));
  repo
    .command('delete <ref>')
    .description('delete a repository (its forks first)')
    .option('--yes', 'do not ask for confirmation')
    .action((ref: string, o: { yes?: boolean }) => go('repo delete', { ref, yes: o.yes }));
  repo
    .command('fork <ref>')
    .description('fork a repository by copy-on-write')
    .requiredOption('--tag <tag>', 'the fork\'s tag (lowercase RFC-1123 label)')
    .action((ref: string, o: { tag: string }) => go('repo fork', { ref, tag: o.tag }));

  // Features add their subcommands here, one call each: addXxxCli(program, repo, go).
  addClientCli(program, repo, go);
  addSecretCli(program, repo, go);
  addSandboxCli(program, repo, go);
  addLifecycleCli(program, repo, go);
  addAuditCli(program, repo, go);

  // Same error behaviour on every level: throw, let the caller render exit 2.
  const all = (c: Command): Command[] => [c, ...c.commands.flatMap(all)];
  for (const c of all(program)) c.exitOverride().configureOutput({ writeErr: () => {} });
  return program;
}

export function isCommanderExit(err: unknown): err is CommanderError {
  return err instanceof CommanderError;
}
