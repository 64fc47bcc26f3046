// Secret commands as real tine-host processes on a real btrfs test host: validation, the
// --current / --rotate-secret rule, forks, delete, lift, and that no value ever leaks into
// output, the state directory (DB, WAL, audit) or a copied database without the key.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, lstatSync, mkdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync, chmodSync, chownSync } from 'node:fs';
import { join } from 'node:path';
import { makeTestHost, type TestHost, type RunResult } from './helpers/host.js';
import { readSecretRows, decryptWith, allFiles, findValues } from './helpers/secrets.js';

let host: TestHost | undefined;
const h = () => host!;
/** Every value any test handed to tine, and every byte tine printed. */
const values: string[] = [];
const outputs: string[] = [];

const secretValue = (label: string) => {
  const v = `${label}-${randomBytes(12).toString('hex')}`;
  values.push(v);
  return v;
};

function tine(args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; bin?: 'tine' | 'tine-host' } = {}): RunResult {
  const r = h().run(args, opts);
  outputs.push(r.stdout, r.stderr);
  return r;
}

function list(ref: string): any[] {
  const r = tine(['repo', 'secret', 'list', ref]);
  if (r.code !== 0) throw new Error(`list ${ref}: ${r.stdout}${r.stderr}`);
  return r.json.data.secrets;
}

const dbFile = () => join(h().stateDir, 'state.db');
const auditLines = (): any[] => {
  const f = join(h().stateDir, 'audit', 'current.log');
  return existsSync(f) ? readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
};

test.before(() => {
  if (process.getuid?.() !== 0) throw new Error('secrets tests need root');
  host = makeTestHost();
  const src = join(h().dir, 'src-app');
  mkdirSync(src);
  writeFileSync(join(src, 'README'), 'app\n');
  for (const args of [['repo', 'create', 'app', '--from', src], ['repo', 'create', 'other']]) {
    const r = tine(args);
    if (r.code !== 0) throw new Error(`${args.join(' ')}: ${r.stdout}${r.stderr}`);
  }
});

test.after.always(() => {
  host?.cleanup();
});

test.serial('setup made the host key: root, 0600, 32 bytes, in the state dir; a second setup keeps it', (t) => {
  const key = join(h().stateDir, 'secret.key');
  const st = statSync(key);
  t.is(st.uid, 0);
  t.is(st.mode & 0o777, 0o600);
  t.is(st.size, 32);
  t.false(key.startsWith(h().datastore));
  const before = readFileSync(key);
  const r = tine(['setup']);
  t.is(r.code, 0, r.stdout);
  t.deepEqual(readFileSync(key), before);
  t.is(statSync(dbFile()).mode & 0o777, 0o600);
});

test.serial('each bad key: exit 2, field key, nothing written', (t) => {
  const v = secretValue('badkey');
  for (const key of ['', 'lower', '1ABC', '_ABC', 'A-B', 'A B', 'ÄB', 'abc_DEF', 'A'.repeat(65)]) {
    const r = tine(['repo', 'secret', 'set', 'app', '--key', key, '--value', v]);
    t.is(r.code, 2, `key ${JSON.stringify(key)}: ${r.stdout}`);
    t.is(r.json.error.code, 'INVALID_INPUT');
    t.is(r.json.error.field, 'key');
    t.true(r.json.error.message.startsWith('key: '));
  }
  // 64 characters is the limit, not an error (then removed again, by rotation).
  const ok = tine(['repo', 'secret', 'set', 'app', '--key', 'K'.repeat(64), '--value', v]);
  t.is(ok.code, 0, ok.stdout);
  t.is(tine(['repo', 'secret', 'unset', 'app', '--key', 'K'.repeat(64), '--current', v]).code, 0);
  t.deepEqual(list('app'), []);
  t.deepEqual(readSecretRows(dbFile()), []);
});

test.serial('each bad value: exit 2, field value, the value never echoed, nothing written', (t) => {
  const cases: { name: string; args: string[]; input?: string }[] = [
    { name: 'empty', args: ['--value', ''] },
    { name: 'empty from stdin', args: ['--value', '-'], input: '\n' },
    { name: 'nothing on stdin', args: ['--value', '-'], input: '' },
    { name: 'env over 32 KiB', args: ['--value', '-', '--mode', 'env'], input: secretValue('envbig').padEnd(32 * 1024 + 1, 'x') },
    { name: 'file over 256 KiB', args: ['--value', '-', '--mode', 'file'], input: secretValue('filebig').padEnd(256 * 1024 + 1, 'y') },
    { name: 'NUL in an env value', args: ['--value', '-', '--mode', 'env'], input: `${secretValue('nul')}\0tail` },
  ];
  for (const c of cases) {
    const r = tine(['repo', 'secret', 'set', 'app', '--key', 'BAD_VALUE', ...c.args], { input: c.input });
    t.is(r.code, 2, `${c.name}: ${r.stdout}`);
    t.is(r.json.error.code, 'INVALID_INPUT', c.name);
    t.is(r.json.error.field, 'value', c.name);
  }
  // Exactly at the limits is fine.
  const env = tine(['repo', 'secret', 'set', 'app', '--key', 'AT_ENV_LIMIT', '--value', '-', '--mode', 'env'], { input: secretValue('envlim').padEnd(32 * 1024, 'e') + '\n' });
  t.is(env.code, 0, env.stdout);
  const file = tine(['repo', 'secret', 'set', 'app', '--key', 'AT_FILE_LIMIT', '--value', '-'], { input: secretValue('filelim').padEnd(256 * 1024, 'f') });
  t.is(file.code, 0, file.stdout);
  t.is(file.json.data.mode, 'file');
  for (const k of ['AT_ENV_LIMIT', 'AT_FILE_LIMIT']) t.is(tine(['repo', 'secret', 'unset', 'app', '--key', k, '--rotate-secret']).code, 0);
  t.deepEqual(list('app'), []);
});

test.serial('bad mode, bad ref, unknown repo', (t) => {
  const v = secretValue('mode');
  const mode = tine(['repo', 'secret', 'set', 'app', '--key', 'M', '--value', v, '--mode', 'disk']);
  t.is(mode.code, 2);
  t.is(mode.json.error.field, 'mode');
  const ref = tine(['repo', 'secret', 'set', 'App!', '--key', 'M', '--value', v]);
  t.is(ref.code, 2);
  t.is(ref.json.error.field, 'ref');
  const missing = tine(['repo', 'secret', 'set', 'nope', '--key', 'M', '--value', v]);
  t.is(missing.code, 3);
  t.is(missing.json.error.code, 'NOT_FOUND');
  t.deepEqual(list('app'), []);
});

test.serial('first set, get, list: key, mode, digest, time, actor; never the value', (t) => {
  const v = secretValue('stripe');
  const r = tine(['repo', 'secret', 'set', 'app', '--key', 'STRIPE_KEY', '--value', '-', '--mode', 'env'], { input: v + '\n' });
  t.is(r.code, 0, r.stdout);
  t.like(r.json.data, { ref: 'app', key: 'STRIPE_KEY', mode: 'env', actor: 'human', check: 'first-set' });
  t.regex(r.json.data.digest, /^hmac-sha256:[0-9a-f]{16}$/);
  t.false(Number.isNaN(Date.parse(r.json.data.setAt)));
  const g = tine(['repo', 'secret', 'get', 'app', '--key', 'STRIPE_KEY']);
  t.is(g.code, 0);
  t.deepEqual(Object.keys(g.json.data).sort(), ['actor', 'digest', 'key', 'mode', 'ref', 'setAt']);
  t.is(g.json.data.digest, r.json.data.digest);
  t.deepEqual(list('app').map((s) => s.key), ['STRIPE_KEY']);
  // The stdin newline was dropped: the stored value is exactly v (checked with --current).
  const same = tine(['repo', 'secret', 'set', 'other', '--key', 'STRIPE_KEY', '--value', v, '--mode', 'env']);
  t.is(same.json.data.digest, r.json.data.digest, 'same value, same digest across repositories');
  t.is(tine(['repo', 'secret', 'unset', 'other', '--key', 'STRIPE_KEY', '--current', v]).code, 0);
  const missing = tine(['repo', 'secret', 'get', 'app', '--key', 'NOPE']);
  t.is(missing.code, 3);
  t.is(missing.json.error.code, 'NOT_FOUND');
  // Through the thin client `tine` too: it leaves stdin to the tine-host it runs.
  const viaTine = tine(['repo', 'secret', 'set', 'other', '--key', 'VIA_TINE', '--value', '-', '--mode', 'env'], { input: v + '\n', bin: 'tine' });
  t.is(viaTine.code, 0, viaTine.stdout + viaTine.stderr);
  t.is(viaTine.json.data.digest, r.json.data.digest, 'the same value arrived through tine');
  t.is(tine(['repo', 'secret', 'unset', 'other', '--key', 'VIA_TINE', '--current', v]).code, 0);
  // Human output too.
  const text = tine(['repo', 'secret', 'list', 'app', '-o', 'text']);
  t.is(text.code, 0);
  t.regex(text.stdout, /STRIPE_KEY\s+env\s+hmac-sha256:/);
});

test.serial('overwrite without, with wrong, with right --current; --rotate-secret; both flags', (t) => {
  const v1 = secretValue('db1');
  t.is(tine(['repo', 'secret', 'set', 'app', '--key', 'DB_PASSWORD', '--value', v1]).code, 0);
  const digest0 = tine(['repo', 'secret', 'get', 'app', '--key', 'DB_PASSWORD']).json.data.digest;
  const unchanged = () => t.is(tine(['repo', 'secret', 'get', 'app', '--key', 'DB_PASSWORD']).json.data.digest, digest0);
  const v2 = secretValue('db2');

  const expectPrecondition = (r: RunResult, retry: string) => {
    t.is(r.code, 5, r.stdout);
    t.is(r.json.error.code, 'PRECONDITION_FAILED');
    t.deepEqual(r.json.error.next.map((n: any) => n.run), ['tine repo secret get app --key DB_PASSWORD', retry]);
    unchanged();
  };
  const retrySet = 'tine repo secret set app --key DB_PASSWORD --value - --rotate-secret';
  expectPrecondition(tine(['repo', 'secret', 'set', 'app', '--key', 'DB_PASSWORD', '--value', v2]), retrySet);
  expectPrecondition(tine(['repo', 'secret', 'set', 'app', '--key', 'DB_PASSWORD', '--value', v2, '--current', v2]), retrySet);
  // A prefix or a longer string of the old value is not the old value.
  expectPrecondition(tine(['repo', 'secret', 'set', 'app', '--key', 'DB_PASSWORD', '--value', v2, '--current', v1.slice(0, -1)]), retrySet);
  expectPrecondition(tine(['repo', 'secret', 'set', 'app', '--key', 'DB_PASSWORD', '--value', v2, '--current', v1 + 'x']), retrySet);

  const text = tine(['repo', 'secret', 'set', 'app', '--key', 'DB_PASSWORD', '--value', v2, '--current', v2, '-o', 'text']);
  t.is(text.code, 5);
  t.regex(text.stderr, /PRECONDITION_FAILED/);
  t.true(text.stderr.includes(retrySet));
  const both = tine(['repo', 'secret', 'set', 'app', '--key', 'DB_PASSWORD', '--value', v2, '--current', v1, '--rotate-secret']);
  t.is(both.code, 2);
  t.is(both.json.error.code, 'INVALID_INPUT');
  t.is(both.json.error.field, 'rotateSecret');
  unchanged();

  const right = tine(['repo', 'secret', 'set', 'app', '--key', 'DB_PASSWORD', '--value', v2, '--current', v1]);
  t.is(right.code, 0, right.stdout);
  t.is(right.json.data.check, 'current');
  t.not(right.json.data.digest, digest0);
  t.is(right.json.data.mode, 'file', 'mode kept');

  const v3 = secretValue('db3');
  const rot = tine(['repo', 'secret', 'set', 'app', '--key', 'DB_PASSWORD', '--value', '-', '--rotate-secret'], { input: v3 });
  t.is(rot.code, 0);
  t.is(rot.json.data.check, 'rotate-secret');
  t.not(rot.json.data.digest, right.json.data.digest);
  const rotations = auditLines().filter((e) => e.code === 'SECRET_ROTATED');
  t.like(rotations.at(-1), { command: 'repo secret set', ref: 'app', actor: 'human', decision: 'allowed' });

  // --current on a key that has no value is a failed precondition too.
  const noPrev = tine(['repo', 'secret', 'set', 'app', '--key', 'NEW_ONE', '--value', v3, '--current', v1]);
  t.is(noPrev.code, 5);
  t.false(list('app').some((s) => s.key === 'NEW_ONE'));
});

test.serial('unset without, with wrong, with right --current; --rotate-secret; both flags', (t) => {
  const v = secretValue('tok');
  t.is(tine(['repo', 'secret', 'set', 'app', '--key', 'API_TOKEN', '--value', v, '--mode', 'env']).code, 0);
  const retry = 'tine repo secret unset app --key API_TOKEN --rotate-secret';
  for (const extra of [[], ['--current', secretValue('wrong')]]) {
    const r = tine(['repo', 'secret', 'unset', 'app', '--key', 'API_TOKEN', ...extra]);
    t.is(r.code, 5);
    t.is(r.json.error.code, 'PRECONDITION_FAILED');
    t.deepEqual(r.json.error.next.map((n: any) => n.run), ['tine repo secret get app --key API_TOKEN', retry]);
    t.true(list('app').some((s) => s.key === 'API_TOKEN'));
  }
  const both = tine(['repo', 'secret', 'unset', 'app', '--key', 'API_TOKEN', '--current', v, '--rotate-secret']);
  t.is(both.code, 2);
  t.is(both.json.error.field, 'rotateSecret');
  t.true(list('app').some((s) => s.key === 'API_TOKEN'));
  const right = tine(['repo', 'secret', 'unset', 'app', '--key', 'API_TOKEN', '--current', v]);
  t.is(right.code, 0, right.stdout);
  t.like(right.json.data, { key: 'API_TOKEN', mode: 'env', removed: true, check: 'current' });
  t.false(list('app').some((s) => s.key === 'API_TOKEN'));
  const again = tine(['repo', 'secret', 'unset', 'app', '--key', 'API_TOKEN', '--rotate-secret']);
  t.is(again.code, 3);

  t.is(tine(['repo', 'secret', 'set', 'app', '--key', 'API_TOKEN', '--value', secretValue('tok2')]).code, 0);
  const rot = tine(['repo', 'secret', 'unset', 'app', '--key', 'API_TOKEN', '--rotate-secret']);
  t.is(rot.code, 0);
  t.is(rot.json.data.check, 'rotate-secret');
  t.like(auditLines().filter((e) => e.code === 'SECRET_ROTATED').at(-1), { command: 'repo secret unset', ref: 'app' });
  t.false(list('app').some((s) => s.key === 'API_TOKEN'));
});

test.serial('agents: get and list everywhere; set, unset and lift refused on a grand, allowed on a fork', (t) => {
  const agent = { TINE_AGENT: '1' };
  t.is(tine(['repo', 'secret', 'set', 'app', '--key', 'HUMAN_SET', '--value', secretValue('human')]).code, 0);
  const before = list('app');
  const v = secretValue('agent');
  t.is(h().run(['repo', 'secret', 'list', 'app'], { env: agent }).code, 0);
  t.is(h().run(['repo', 'secret', 'get', 'app', '--key', 'HUMAN_SET'], { env: agent }).code, 0);
  for (const args of [
    ['repo', 'secret', 'set', 'app', '--key', 'AGENT_KEY', '--value', v],
    ['repo', 'secret', 'unset', 'app', '--key', 'HUMAN_SET', '--rotate-secret'],
    ['repo', 'secret', 'lift', 'app', '--from', '.env'],
  ]) {
    const r = h().run(args, { env: agent });
    outputs.push(r.stdout, r.stderr);
    t.is(r.code, 4, `${args.join(' ')}: ${r.stdout}`);
    t.is(r.json.error.code, 'GRAND_GUARD');
  }
  t.deepEqual(list('app'), before);
  t.is(tine(['repo', 'fork', 'app', '--tag', 'ag']).code, 0);
  const onFork = h().run(['repo', 'secret', 'set', 'app:ag', '--key', 'AGENT_KEY', '--value', '-'], { env: agent, input: v });
  outputs.push(onFork.stdout, onFork.stderr);
  t.is(onFork.code, 0, onFork.stdout);
  t.is(onFork.json.data.actor, 'agent');
  t.deepEqual(list('app'), before);
  t.is(tine(['repo', 'delete', 'app:ag', '--yes']).code, 0);
});

test.serial('a fork starts with no secrets; setting on the fork never touches the parent', (t) => {
  const before = list('app');
  t.true(before.length > 0);
  const f = tine(['repo', 'fork', 'app', '--tag', 'f1']);
  t.is(f.code, 0, f.stdout);
  t.deepEqual(list('app:f1'), []);
  const fv = secretValue('forkval');
  t.is(tine(['repo', 'secret', 'set', 'app:f1', '--key', 'DB_PASSWORD', '--value', fv]).code, 0, 'first set on the fork needs no --current');
  t.deepEqual(list('app'), before);
  t.is(list('app:f1').length, 1);
  // A fork of the fork starts empty too.
  t.is(tine(['repo', 'fork', 'app:f1', '--tag', 'f2']).code, 0);
  t.deepEqual(list('app:f2'), []);
  t.is(tine(['repo', 'delete', 'app:f2', '--yes']).code, 0);
});

test.serial('deleting a repository deletes its secrets', (t) => {
  const guid = tine(['repo', 'info', 'app:f1']).json.data.guid;
  t.true(readSecretRows(dbFile()).some((r) => r.repo_guid === guid));
  const r = tine(['repo', 'delete', 'app:f1', '--yes']);
  t.is(r.code, 0, r.stdout);
  t.false(readSecretRows(dbFile()).some((r) => r.repo_guid === guid));
  t.true(readSecretRows(dbFile()).length > 0, 'the parent keeps its own');
});

test.serial('lift a .env with comments and quoted values: stored exactly, file rewritten atomically', (t) => {
  const repoPath = tine(['repo', 'info', 'app']).json.data.path;
  const a = secretValue('plain');
  const b = secretValue('dq');
  const c = secretValue('sq');
  const d = secretValue('multi');
  const envFile = [
    '# production settings',
    '',
    `PLAIN_KEY=${a}   # inline comment`,
    `export DQ_KEY="${b} with \\"quotes\\" and # hash"`,
    `SQ_KEY='${c} $NOT_EXPANDED \\n'`,
    `MULTI_KEY="${d}`,
    'second line"',
    'EMPTY_KEY=',
    '   # indented comment',
    'KEEP_ME_KEY_PUBLIC_URL=https://example.invalid/#frag',
    '',
  ].join('\n');
  const path = join(repoPath, '.env');
  writeFileSync(path, envFile, { mode: 0o640 });
  chownSync(path, 7111, 7111);
  chmodSync(path, 0o640);
  const r = tine(['repo', 'secret', 'lift', 'app', '--from', '.env', '--remove']);
  t.is(r.code, 0, r.stdout);
  t.deepEqual(r.json.data.lifted.map((l: any) => l.key).sort(), ['DQ_KEY', 'KEEP_ME_KEY_PUBLIC_URL', 'MULTI_KEY', 'PLAIN_KEY', 'SQ_KEY']);
  t.deepEqual(r.json.data.skipped.map((s: any) => s.key), ['EMPTY_KEY']);
  t.regex(r.json.data.notice, /forks and snapshots/);
  t.true(r.json.data.removed);

  // Round trip: what is stored is exactly what the file meant.
  const master = readFileSync(join(h().stateDir, 'secret.key'));
  const guid = tine(['repo', 'info', 'app']).json.data.guid;
  const stored = Object.fromEntries(readSecretRows(dbFile()).filter((x) => x.repo_guid === guid).map((x) => [x.key, decryptWith(master, x)]));
  t.is(stored.PLAIN_KEY, a);
  t.is(stored.DQ_KEY, `${b} with "quotes" and # hash`);
  t.is(stored.SQ_KEY, `${c} $NOT_EXPANDED \\n`);
  t.is(stored.MULTI_KEY, `${d}\nsecond line`);
  t.is(stored.KEEP_ME_KEY_PUBLIC_URL, 'https://example.invalid/#frag');
  t.true(r.json.data.lifted.every((l: any) => l.mode === 'env'));

  // The file: values gone, comments and other lines kept, same owner and mode.
  const after = readFileSync(path, 'utf8');
  t.deepEqual(findValues(after, [a, b, c, d]), []);
  for (const line of ['# production settings', '   # indented comment', 'EMPTY_KEY=']) t.true(after.split('\n').includes(line), line);
  t.regex(after, /# PLAIN_KEY: moved to tine secrets/);
  const st = lstatSync(path);
  t.is(st.uid, 7111);
  t.is(st.mode & 0o777, 0o640);
  t.false(after.includes('second line'));

  // Lifting the same file again (values now gone) changes nothing; lifting a conflicting one needs --rotate-secret.
  const conflictPath = join(repoPath, 'conflict.env');
  writeFileSync(conflictPath, `PLAIN_KEY=${secretValue('other')}\nDQ_KEY="${b} with \\"quotes\\" and # hash"\n`);
  chownSync(conflictPath, 7111, 7111);
  const digestsBefore = list('app');
  const conflict = tine(['repo', 'secret', 'lift', 'app', '--from', 'conflict.env']);
  t.is(conflict.code, 5);
  t.is(conflict.json.error.code, 'PRECONDITION_FAILED');
  t.is(conflict.json.error.next.length, 2);
  t.deepEqual(list('app'), digestsBefore);
  const rot = tine(['repo', 'secret', 'lift', 'app', '--from', 'conflict.env', '--rotate-secret']);
  t.is(rot.code, 0, rot.stdout);
  t.deepEqual(rot.json.data.lifted.map((l: any) => l.key), ['PLAIN_KEY']);
  t.deepEqual(rot.json.data.unchanged, ['DQ_KEY']);
});

test.serial('lift refuses paths outside the repository: exit 2 naming from, nothing stored', (t) => {
  const repoPath = tine(['repo', 'info', 'app']).json.data.path;
  const outside = join(h().dir, 'outside.env');
  writeFileSync(outside, `OUTSIDE_KEY=${secretValue('outside')}\n`);
  chmodSync(outside, 0o644);
  symlinkSync(outside, join(repoPath, 'link.env'));
  symlinkSync('/etc', join(repoPath, 'etcdir'));
  mkdirSync(join(repoPath, 'sub'));
  const before = list('app');
  for (const from of ['../outside.env', '/etc/passwd', 'link.env', 'etcdir/passwd', 'sub/../../x', 'missing.env', 'sub']) {
    const r = tine(['repo', 'secret', 'lift', 'app', '--from', from]);
    t.is(r.code, 2, `${from}: ${r.stdout}`);
    t.is(r.json.error.field, 'from', from);
  }
  const bad = join(repoPath, 'bad.env');
  writeFileSync(bad, 'lower_key=1\n');
  t.is(tine(['repo', 'secret', 'lift', 'app', '--from', 'bad.env']).json.error.field, 'from');
  t.deepEqual(list('app'), before);
  t.true(existsSync(outside));
});

test.serial('a copied state database without the key decrypts nothing; with it, everything', (t) => {
  const copyDir = join(h().dir, 'stolen');
  mkdirSync(copyDir);
  // The whole state as a thief would take it (DB + WAL), minus the key.
  for (const f of ['state.db', 'state.db-wal', 'state.db-shm']) {
    if (existsSync(join(h().stateDir, f))) copyFileSync(join(h().stateDir, f), join(copyDir, f));
  }
  const rows = readSecretRows(join(copyDir, 'state.db'));
  t.true(rows.length >= 5);
  const bytes = Buffer.concat(allFiles(copyDir).map((f) => f.bytes));
  t.deepEqual(findValues(bytes, values), []);
  for (const guess of [Buffer.alloc(32), randomBytes(32)]) {
    for (const row of rows) t.throws(() => decryptWith(guess, row));
  }
  // Control: the real key opens them (so the test above could fail).
  const master = readFileSync(join(h().stateDir, 'secret.key'));
  for (const row of rows) t.notThrows(() => decryptWith(master, row));
  // A row moved to another repository or key name does not authenticate.
  const moved = { ...rows[0]!, key: rows[1]!.key };
  t.throws(() => decryptWith(master, moved));
});

test.serial('a missing or unsafe host key fails closed; setup will not replace a key that secrets need', (t) => {
  const keyFile = join(h().stateDir, 'secret.key');
  const saved = readFileSync(keyFile);
  t.is(tine(['repo', 'secret', 'set', 'other', '--key', 'SEALED', '--value', secretValue('sealed')]).code, 0);
  const before = list('app');
  try {
    chmodSync(keyFile, 0o644);
    const unsafe = tine(['repo', 'secret', 'set', 'app', '--key', 'DB_PASSWORD', '--value', secretValue('k1'), '--rotate-secret']);
    t.is(unsafe.code, 1);
    t.is(unsafe.json.error.code, 'SECRET_KEY_UNSAFE');
    chmodSync(keyFile, 0o600);
    rmSync(keyFile);
    const missing = tine(['repo', 'secret', 'set', 'app', '--key', 'DB_PASSWORD', '--value', secretValue('k2'), '--rotate-secret']);
    t.is(missing.code, 7);
    t.is(missing.json.error.code, 'SECRET_KEY_MISSING');
    const setup = tine(['setup']);
    t.is(setup.code, 1, setup.stdout);
    t.is(setup.json.error.code, 'SECRET_KEY_MISSING');
    t.false(existsSync(keyFile), 'no new key over secrets sealed under the old one');
  } finally {
    writeFileSync(keyFile, saved, { mode: 0o600 });
    chmodSync(keyFile, 0o600);
  }
  t.deepEqual(list('app'), before);
  t.is(tine(['repo', 'secret', 'set', 'app', '--key', 'DB_PASSWORD', '--value', secretValue('k3'), '--rotate-secret']).code, 0);
  t.is(tine(['repo', 'secret', 'unset', 'other', '--key', 'SEALED', '--rotate-secret']).code, 0);
});

test.serial('no value in the state dir (DB, WAL, audit), nor in any command output', (t) => {
  t.true(values.length > 10);
  t.true(outputs.length > 50);
  for (const f of allFiles(h().stateDir)) {
    t.deepEqual(findValues(f.bytes, values), [], f.path);
  }
  t.deepEqual(findValues(outputs.join('\n'), values), []);
});
