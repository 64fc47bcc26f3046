// The transfer halves of push/pull (`tine-host rpc` verbs outside the command registry) go
// through the guard and the audit log: an agent cannot register a repository by feeding
// `transfer receive` a stream, nor export one with `transfer send`, without `*`.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTestHost, tineHostBin, type TestHost } from './helpers/host.js';

let host: TestHost;
test.before(() => {
  host = makeTestHost();
  if (host.run(['repo', 'create', 'app']).code !== 0) throw new Error('create');
  if (host.run(['repo', 'fork', 'app', '--tag', 't1']).code !== 0) throw new Error('fork');
});
test.after.always(() => host?.cleanup());

/** `tine-host rpc` started by an "agent" shell: the signal is in an ancestor's exec-time env. */
function rpcAsAgent(request: unknown) {
  // The agent is the bash that env starts; it forks tine-host (the `; exit` keeps bash alive).
  const r = spawnSync('env', ['CLAUDECODE=1', 'bash', '-c', '"$0" "$1" rpc; exit $?', process.execPath, tineHostBin], {
    env: host.env, input: JSON.stringify(request) + '\n', encoding: 'utf8', timeout: 60_000,
  });
  const events = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  return { status: r.status, result: events.find((e) => e.event === 'result') };
}

const state = () => JSON.stringify({ repos: host.run(['repo', 'list']).json.data.repos, dirs: readdirSync(join(host.datastore, 'repos')).sort() });

test.serial('an agent is refused transfer receive and transfer send (MACHINE_GUARD), nothing written, audited', (t) => {
  const before = state();
  const app = host.run(['repo', 'info', 'app']).json.data;
  const meta = { name: 'evil', tag: null, guid: '11111111-2222-3333-4444-555555555555', parentGuid: app.guid, grandGuid: app.guid,
    consistency: 'crash', snapshot: `11111111-2222-3333-4444-555555555555@1-abcdef01`, base: null };
  const recv = rpcAsAgent({ command: 'transfer receive', input: { meta }, client: { actor: 'human', reason: 'claims human' } });
  t.is(recv.status, 4);
  t.is(recv.result?.envelope?.error?.code, 'MACHINE_GUARD');
  const send = rpcAsAgent({ command: 'transfer send', input: { ref: 'app:t1' }, client: { actor: 'human', reason: 'claims human' } });
  t.is(send.status, 4);
  t.is(send.result?.envelope?.error?.code, 'MACHINE_GUARD');
  t.is(state(), before);
  const audit = readdirSync(join(host.stateDir, 'audit')).map((f) => readFileSync(join(host.stateDir, 'audit', f), 'utf8')).join('');
  t.regex(audit, /"command":"transfer receive"[^\n]*"decision":"refused"/);
  t.regex(audit, /"command":"transfer send"[^\n]*"decision":"refused"/);
});

test.serial('a received name must be a valid label (exit 2 naming the field), even for a human', (t) => {
  const before = state();
  const r = spawnSync(process.execPath, [tineHostBin, 'rpc'], {
    env: host.env, encoding: 'utf8', timeout: 60_000,
    input: JSON.stringify({ command: 'transfer receive', input: { meta: { name: '../x', tag: null, guid: '11111111-2222-3333-4444-555555555555', parentGuid: null,
      grandGuid: '11111111-2222-3333-4444-555555555555', consistency: null, snapshot: '11111111-2222-3333-4444-555555555555@1-abcdef01', base: null } } }) + '\n',
  });
  t.is(r.status, 2, r.stdout + r.stderr);
  t.regex(r.stdout, /meta\.name/);
  t.is(state(), before);
});
