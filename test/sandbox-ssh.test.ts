// Per-repository SSH access: a real sshd on 127.0.0.1 (its own host key, config and
// AuthorizedKeysFile), keys installed with `repo key add`: whatever the client asks for
// runs inside that repository's sandbox, and cannot reach another repository.
import test from 'ava';
import { mkdirSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { spawn, spawnSync, execFileSync, type ChildProcess } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { makeTestHost, type TestHost } from './helpers/host.js';

let host: TestHost;
let sshd: ChildProcess | undefined;
let port = 0;
let keysFile = '';
let grand: any;
let fork: any;
let sibling: any;
const MARK = 'grand-only-7d2e';

const freePort = () => new Promise<number>((resolve, reject) => {
  const s = createServer();
  s.on('error', reject);
  s.listen(0, '127.0.0.1', () => {
    const p = (s.address() as { port: number }).port;
    s.close(() => resolve(p));
  });
});

const canConnect = (p: number) => new Promise<boolean>((resolve) => {
  const c = connect(p, '127.0.0.1');
  c.on('connect', () => { c.destroy(); resolve(true); });
  c.on('error', () => resolve(false));
});

function keygen(file: string): string {
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `test ${file}`, '-f', file]);
  return execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${file}.pub`], { encoding: 'utf8' }).split(' ')[1]!;
}

function ssh(key: string, command?: string, input = '') {
  const args = ['-i', key, '-p', String(port), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'IdentitiesOnly=yes',
    '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR', '-T', 'root@127.0.0.1', ...(command === undefined ? [] : [command])];
  return spawnSync('ssh', args, { encoding: 'utf8', input, timeout: 60_000 });
}

test.before(async () => {
  host = makeTestHost();
  keysFile = join(host.dir, 'ssh', 'authorized_keys');
  const cfg = JSON.parse(readFileSync(host.configPath, 'utf8'));
  writeFileSync(host.configPath, JSON.stringify({ ...cfg, authorizedKeysFile: keysFile }));
  const src = join(host.dir, 'src');
  mkdirSync(src, { recursive: true });
  writeFileSync(join(src, 'secret.txt'), `${MARK}\n`);
  grand = host.run(['repo', 'create', 'app', '--from', src]).json.data;
  fork = host.run(['repo', 'fork', 'app', '--tag', 't1']).json.data;
  sibling = host.run(['repo', 'fork', 'app', '--tag', 't2']).json.data;
  if (!grand || !fork || !sibling) throw new Error('repositories not created');

  const sdir = join(host.dir, 'sshd');
  mkdirSync(sdir, { recursive: true });
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 }); // sshd's privilege-separation dir
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(sdir, 'host_key')]);
  port = await freePort();
  writeFileSync(join(sdir, 'sshd_config'), [
    `Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${join(sdir, 'host_key')}`, `PidFile ${join(sdir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${keysFile}`, 'StrictModes no', 'UsePAM no', 'PasswordAuthentication no', 'KbdInteractiveAuthentication no',
    'PermitRootLogin prohibit-password', 'LogLevel VERBOSE', '',
  ].join('\n'));
  sshd = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', join(sdir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  sshd.stderr!.on('data', (d) => { log += d; });
  for (let i = 0; i < 100 && !(await canConnect(port)); i++) {
    if (sshd.exitCode !== null) throw new Error(`sshd exited: ${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!(await canConnect(port))) throw new Error(`sshd did not listen: ${log}`);
});

test.after.always(() => {
  if (sshd && sshd.exitCode === null) sshd.kill('SIGTERM');
  host?.cleanup();
});

test.serial('repo key add installs a restricted forced-command line; list shows it', (t) => {
  const fp = keygen(join(host.dir, 'k1'));
  const r = host.run(['repo', 'key', 'add', 'app:t1', '--pubkey', join(host.dir, 'k1.pub')]);
  t.is(r.code, 0, r.stdout + r.stderr);
  t.is(r.json.data.fingerprint, fp);
  const line = readFileSync(keysFile, 'utf8').trim();
  t.regex(line, new RegExp(`^restrict,pty,command=".* sandbox-gateway ${fork.guid}" ssh-ed25519 `));
  const list = host.run(['repo', 'key', 'list', 'app:t1']);
  t.is(list.code, 0);
  t.deepEqual(list.json.data.keys.map((k: any) => k.fingerprint), [fp]);
  const l2 = host.run(['repo', 'key', 'list', 'app:t2']);
  t.is(l2.code, 0, l2.stdout + l2.stderr);
  t.deepEqual(l2.json.data.keys, []);
});

test.serial('the key lands in that repository\'s sandbox whatever command is asked', (t) => {
  const key = join(host.dir, 'k1');
  const r = ssh(key, `id; hostname; pwd; cat ${grand.path}/secret.txt; ls ${host.datastore}/repos; cat ${host.stateDir}/state.db | head -c 16; echo end`);
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /^uid=7111\(tine\) gid=7111\(tine\) groups=7111\(tine\)$/m);
  t.regex(r.stdout, /^app:t1$/m);
  t.regex(r.stdout, new RegExp(`^${fork.path}$`, 'm'));
  t.regex(r.stdout, new RegExp(`^${fork.guid}$`, 'm'));
  t.notRegex(r.stdout, new RegExp(`${MARK}|${grand.guid}|${sibling.guid}|SQLite`));
  // Asking for a host tool or a "login" still runs in the sandbox.
  const asked = ssh(key, `${process.execPath} --version; tine-host repo list; /usr/sbin/sshd -t; id -u`);
  t.regex(asked.stdout, /^7111$/m);
  t.notRegex(asked.stdout, new RegExp(grand.guid));
  const stdin = ssh(key, 'cat; exit 9', 'through ssh\n');
  t.is(stdin.status, 9);
  t.is(stdin.stdout, 'through ssh\n');
  const shell = ssh(key, undefined, 'id -u; hostname\n');
  t.regex(shell.stdout, /^7111$/m);
  t.regex(shell.stdout, /^app:t1$/m);
});

test.serial('a key of one repository cannot reach another; the same key cannot open two', (t) => {
  keygen(join(host.dir, 'k2'));
  t.is(host.run(['repo', 'key', 'add', 'app:t2', '--pubkey', join(host.dir, 'k2.pub')]).code, 0);
  const before = readFileSync(keysFile, 'utf8');
  const again = host.run(['repo', 'key', 'add', 'app:t2', '--pubkey', join(host.dir, 'k1.pub')]);
  t.is(again.code, 6);
  t.is(again.json.error.code, 'KEY_IN_USE');
  t.is(readFileSync(keysFile, 'utf8'), before);
  const r = ssh(join(host.dir, 'k2'), `hostname; ls ${host.datastore}/repos; cat ${fork.path}/secret.txt; echo end`);
  t.regex(r.stdout, /^app:t2$/m);
  t.regex(r.stdout, new RegExp(sibling.guid));
  t.notRegex(r.stdout, new RegExp(`${fork.guid}|${MARK}`));
});

test.serial('refusals: bad key file (exit 2), duplicate (exit 6), unrestricted line (exit 6); file unchanged', (t) => {
  const before = readFileSync(keysFile, 'utf8');
  writeFileSync(join(host.dir, 'bad.pub'), 'ssh-ed25519 not-base64!!\n');
  const bad = host.run(['repo', 'key', 'add', 'app:t1', '--pubkey', join(host.dir, 'bad.pub')]);
  t.is(bad.code, 2);
  t.is(bad.json.error.field, 'pubkey');
  const dup = host.run(['repo', 'key', 'add', 'app:t1', '--pubkey', join(host.dir, 'k1.pub')]);
  t.is(dup.code, 6);
  t.is(dup.json.error.code, 'EXISTS');
  t.is(readFileSync(keysFile, 'utf8'), before);
  keygen(join(host.dir, 'k3'));
  writeFileSync(keysFile, before + readFileSync(join(host.dir, 'k3.pub'), 'utf8'));
  const withOpen = readFileSync(keysFile, 'utf8');
  const unr = host.run(['repo', 'key', 'add', 'app:t1', '--pubkey', join(host.dir, 'k3.pub')]);
  t.is(unr.code, 6);
  t.is(unr.json.error.code, 'KEY_UNRESTRICTED');
  t.is(readFileSync(keysFile, 'utf8'), withOpen);
  writeFileSync(keysFile, before);
});

test.serial('repo key remove: the key no longer opens anything', (t) => {
  const fp = host.run(['repo', 'key', 'list', 'app:t1']).json.data.keys[0].fingerprint;
  const missing = host.run(['repo', 'key', 'remove', 'app:t2', '--fingerprint', fp]);
  t.is(missing.code, 3);
  const r = host.run(['repo', 'key', 'remove', 'app:t1', '--fingerprint', fp]);
  t.is(r.code, 0, r.stdout);
  t.deepEqual(host.run(['repo', 'key', 'list', 'app:t1']).json.data.keys, []);
  t.false(readFileSync(keysFile, 'utf8').includes(fork.guid));
  const denied = ssh(join(host.dir, 'k1'), 'id');
  t.is(denied.status, 255);
  t.true(existsSync(keysFile));
});

test.serial('repo delete removes the repository\'s keys: its key opens nothing afterwards', (t) => {
  t.true(readFileSync(keysFile, 'utf8').includes(sibling.guid), 'app:t2 has a key line before');
  const r = host.run(['repo', 'delete', 'app:t2', '--yes']);
  t.is(r.code, 0, r.stdout);
  t.true(r.json.steps.some((s: { step: string }) => s.step === 'keys'));
  t.false(readFileSync(keysFile, 'utf8').includes(sibling.guid));
  t.is(ssh(join(host.dir, 'k2'), 'id').status, 255);
});
