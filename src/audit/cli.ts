// `tine audit log | verify` in the shared command tree.
import type { Command } from 'commander';
import type { Go } from '../cli/tree.js';

export function addAuditCli(program: Command, _repo: Command, go: Go): void {
  const audit = program.command('audit').description('the tamper-evident log of guard decisions');
  audit
    .command('log')
    .description('show entries: every refusal and every command an agent ran')
    .option('--actor <actor>', 'only human or agent')
    .option('--since <when>', 'only newer than this: 30m, 1h, 2d or an ISO time')
    .option('--limit <n>', 'at most this many, the newest (default 200)')
    .action((o: { actor?: string; since?: string; limit?: string }) => go('audit log', { actor: o.actor, since: o.since, limit: o.limit }));
  audit
    .command('verify')
    .description('check the hash chain; names the first broken line')
    .action(() => go('audit verify', {}));
}
