// The audit log: refusals and agent commands appended by real tine processes, the hash
// chain caught by `tine audit verify` naming the edited line, and no secret value logged.
// (Rotation and concurrent appends: audit-chain.test.ts.)
import test from 'ava';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTestHost, type TestHost } from './helpers/host.js';
import { auditDir, logFiles } from '../src/audit/log.js';

let host: TestHost;

test.before(() => {
  host = makeTestHost();
  for (const args of [['repo', 'create', 'app'], ['repo', 'fork', 'app', '--tag', 't1']]) {
    const r = host.run(args);
    if (r.code !== 0) throw new Error(`${args.join(' ')}: ${r.stdout}${r.stderr}`);
  }
});
test.after.always(() => {
  host?.cleanup();
});


const filesText = (stateDir: string) => logFiles(stateDir).map((f) => readFileSync(f, 'utf8')).join('');

test.serial('8. a refused attempt is logged with actor, command, ref and reason; editing a line breaks verify at that line', async (t) => {
  const agent = { CLAUDECODE: '1' };
  const r = host.run(['repo', 'delete', 'app', '--yes'], { env: agent, bin: 'tine' });
  t.is(r.code, 4, r.stdout + r.stderr);
  t.is(r.json.error.code, 'GRAND_GUARD');
  const h = host.run(['repo', 'delete', 'app', '--yes'], { env: agent, bin: 'tine-host' });
  t.is(h.code, 4);
  // An agent's allowed command is logged too.
  t.is(host.run(['repo', 'info', 'app:t1'], { env: agent }).code, 0);

  const log = host.run(['audit', 'log', '--actor', 'agent', '--since', '1h']);
  t.is(log.code, 0, log.stdout);
  const entries = log.json.data.entries as any[];
  const refusals = entries.filter((e) => e.decision === 'refused' && e.command === 'repo delete' && e.ref === 'app');
  t.is(refusals.length, 2);
  for (const e of refusals) {
    t.is(e.actor, 'agent');
    t.is(e.code, 'GRAND_GUARD');
    t.regex(e.reason, /CLAUDECODE=1/);
    t.true(Number.isInteger(e.pid));
    t.truthy(Date.parse(e.time));
  }
  t.deepEqual(refusals.map((e) => e.via).sort(), ['tine', 'tine-host']);
  t.true(entries.some((e) => e.decision === 'allowed' && e.command === 'repo info' && e.ref === 'app:t1'));
  t.deepEqual(host.run(['audit', 'log', '--actor', 'human']).json.data.entries, []);

  const ok = host.run(['audit', 'verify']);
  t.is(ok.code, 0, ok.stdout);
  t.is(ok.json.data.entries, 3);

  // Edit line 2: the actor's reason, keeping valid JSON.
  const file = join(auditDir(host.stateDir), 'current.log');
  const lines = readFileSync(file, 'utf8').split('\n');
  lines[1] = lines[1]!.replace('"ref":"app"', '"ref":"ap"');
  writeFileSync(file, lines.join('\n'));
  const bad = host.run(['audit', 'verify']);
  t.is(bad.code, 1, bad.stdout);
  t.is(bad.json.error.code, 'AUDIT_TAMPERED');
  t.is(bad.json.error.details.line, 2);
  t.regex(bad.json.error.message, /current\.log line 2/);

  // Removing a line instead: the line after the gap is named.
  lines[1] = '';
  writeFileSync(file, lines.filter((l, i) => i !== 1).join('\n'));
  const gap = host.run(['audit', 'verify']);
  t.is(gap.code, 1);
  t.is(gap.json.error.details.line, 2);
  t.regex(gap.json.error.message, /does not follow/);
  // Reset for the next tests (the log is outside every repository, under the state dir).
  rmSync(auditDir(host.stateDir), { recursive: true, force: true });
});

test.serial('no secret value ever reaches the audit log', (t) => {
  const agent = { CLAUDECODE: '1' };
  const refusedSet = host.run(['repo', 'secret', 'set', 'app', '--key', 'DB_PASSWORD', '--value', 'SUPERSECRET-one'], { env: agent, bin: 'tine' });
  t.is(refusedSet.code, 4, refusedSet.stdout);
  t.is(refusedSet.json.error.code, 'GRAND_GUARD');
  host.run(['repo', 'secret', 'set', 'app:t1', '--key', 'DB_PASSWORD', '--value', 'SUPERSECRET-two'], { env: agent, bin: 'tine' });
  const text = filesText(host.stateDir);
  t.true(text.includes('"command":"repo secret set"'));
  t.false(text.includes('SUPERSECRET'));
  t.false(text.includes('DB_PASSWORD') && text.includes('value'), 'no input values');
});

test('audit log input is validated (exit 2, field named)', (t) => {
  const r = host.run(['audit', 'log', '--since', 'yesterday-ish']);
  t.is(r.code, 2);
  t.is(r.json.error.field, 'since');
  const a = host.run(['audit', 'log', '--actor', 'robot']);
  t.is(a.code, 2);
  t.is(a.json.error.field, 'actor');
});

