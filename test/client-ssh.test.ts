// The thin client against a real sshd on 127.0.0.1 (its own host key and config): machine
// add/setup, commands over SSH with their exit codes, the client's guard before any
// connection, an agent-role key held to the agent policy by the host, push/pull between two
// datastores, and a changed host key refused.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, statSync, existsSync, rmSync, readdirSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeTestHost, tineBin, type TestHost } from './helpers/host.js';
import { startSshd, type TestSshd } from './helpers/sshd.js';

let remote: TestHost;
let local: TestHost;
let sshd: TestSshd;
let clientDir: string;
let env: NodeJS.ProcessEnv;
let clientBin = tineBin;
const prefix = () => join(sshd.dir, 'remote-install');

interface Run { code: number | null; stdout: string; stderr: string; json: any }

function tine(args: string[], extra: NodeJS.ProcessEnv = {}, opts: { input?: string; json?: boolean } = {}): Run {
  const argv = [clientBin, ...args, ...(opts.json === false ? [] : ['-o', 'json'])];
  const r = spawnSync(process.execPath, argv, { env: { ...env, ...extra }, encoding: 'utf8', input: opts.input ?? '', timeout: 240_000 });
  let json: unknown;
  try { json = JSON.parse(r.stdout.trim().split('\n').pop() ?? ''); } catch { json = undefined; }
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, json };
}

const clientConfig = () => join(clientDir, 'tine', 'config.json');
const remoteHas = (ref: string) => remote.run(['repo', 'info', ref]).code === 0;

/** End our ssh master connections by pid: those whose command line names our control dir. */
function killOurSsh(): void {
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (clientDir && cmd.includes(clientDir) && cmd.startsWith('ssh')) process.kill(Number(pid), 'SIGTERM');
    } catch { /* gone */ }
  }
}

test.before(async () => {
  remote = makeTestHost();
  local = makeTestHost();
  sshd = await startSshd({ setEnv: { TINE_HOST_CONFIG: remote.configPath } });
  clientDir = mkdtempSync(join(tmpdir(), 'tine-client-'));
  env = { ...local.env, ...sshd.env, TINE_CLIENT_CONFIG: clientConfig() };
  // The client runs from a frozen copy of the package: dist/ of this shared tree is rebuilt
  // by others while we run, and `machine setup` hashes and ships what it runs from.
  const pkg = join(clientDir, 'pkg');
  mkdirSync(pkg);
  const root = join(tineBin, '..', '..', '..', '..');
  const parts = ['package.json', 'package-lock.json', 'binding.gyp', 'native', 'dist', 'build', 'scripts', 'node_modules'].filter((p) => existsSync(join(root, p)));
  const cp = spawnSync('cp', ['-a', '--reflink=auto', ...parts.map((p) => join(root, p)), pkg], { encoding: 'utf8' });
  if (cp.status !== 0) throw new Error(`copying the package failed: ${cp.stderr}`);
  clientBin = join(pkg, 'dist', 'src', 'bin', 'tine.js');
});

test.after.always(() => {
  if (clientDir) {
    for (const name of ['local-ssh', 'agent-ssh']) spawnSync(process.execPath, [clientBin, 'machine', 'remove', name], { env, stdio: 'ignore', timeout: 20_000 });
    killOurSsh();
  }
  sshd?.stop();
  remote?.cleanup();
  local?.cleanup();
  if (clientDir) rmSync(clientDir, { recursive: true, force: true });
});

test.serial('machine add pins the host key on first contact; bad input is refused naming the field', (t) => {
  const bad = tine(['machine', 'add', 'local-ssh', '--host', '127.0.0.1', '--port', '99999', '--key', sshd.humanKey]);
  t.is(bad.code, 2, bad.stdout + bad.stderr);
  t.is(bad.json.error.code, 'INVALID_INPUT');
  t.is(bad.json.error.field, 'port');
  t.false(existsSync(clientConfig()));

  const r = tine(['machine', 'add', 'local-ssh', '--host', '127.0.0.1', '--port', String(sshd.port), '--key', sshd.humanKey]);
  t.is(r.code, 0, r.stdout + r.stderr);
  t.truthy(r.json?.data, r.stdout + r.stderr);
  t.deepEqual(r.json.data.fingerprints, [sshd.fingerprint()]);
  const hostPub = readFileSync(`${sshd.hostKey}.pub`, 'utf8').split(' ')[1]!;
  t.true(readFileSync(join(clientDir, 'tine', 'known_hosts.d', 'local-ssh'), 'utf8').includes(hostPub));
  t.is(statSync(clientConfig()).mode & 0o777, 0o600);
  t.is(statSync(join(clientDir, 'tine')).mode & 0o777, 0o700);
  const list = tine(['machine', 'list']);
  t.is(list.code, 0, list.stdout + list.stderr);
  t.is(list.json.data.machines[0].knownHostKey, sshd.fingerprint());
});

test.serial('the thin client loads no native code, even for -m', (t) => {
  // A preload that makes any native addon load fail loudly.
  const preload = join(clientDir, 'no-native.cjs');
  writeFileSync(preload, "process.dlopen = (m, f) => { process.stderr.write('NATIVE LOAD ' + f + '\\n'); process.exit(99); };\n");
  const r = spawnSync(process.execPath, ['--require', preload, clientBin, '-m', 'no-such-machine', 'repo', 'list', '-o', 'json'], { env, encoding: 'utf8', timeout: 60_000 });
  t.is(r.status, 3, r.stdout + r.stderr);
  t.is(JSON.parse(r.stdout).error.code, 'NOT_FOUND');
  t.false(r.stderr.includes('NATIVE LOAD'));
});

test.serial('machine setup installs tine-host into its own prefix, runs setup there, verifies, and skips the copy next time', (t) => {
  const first = tine(['machine', 'setup', 'local-ssh', '--prefix', prefix()]);
  t.is(first.code, 0, first.stdout + first.stderr);
  t.true(first.json.data.copied);
  t.is(first.json.data.datastore, remote.datastore);
  t.is(first.json.data.hostVersion, JSON.parse(readFileSync(join(tineBin, '..', '..', '..', '..', 'package.json'), 'utf8')).version);
  t.true(existsSync(join(prefix(), 'bin', 'tine-host')));
  const installed = JSON.parse(readFileSync(join(prefix(), 'install.json'), 'utf8'));
  t.is(installed.hash, first.json.data.hash);
  // Other engineers rebuild dist/ in this shared tree: a new build is a new hash and must be
  // copied; the same build must not. Retry once when the build changed in between.
  let prev = first;
  let second = tine(['machine', 'setup', 'local-ssh', '--prefix', prefix()]);
  if (second.json?.data?.hash !== prev.json.data.hash) {
    t.true(second.json?.data?.copied, `a changed build is copied: ${second.stdout}${second.stderr}`);
    prev = second;
    second = tine(['machine', 'setup', 'local-ssh', '--prefix', prefix()]);
  }
  t.is(second.code, 0, second.stdout + second.stderr);
  t.is(second.json.data.hash, prev.json.data.hash);
  t.false(second.json.data.copied);
  t.true(second.json.steps.some((s: any) => s.step === 'copy' && /skipped/.test(s.label)));
});

test.serial('commands run over SSH with Connected/Host verified steps, exit codes propagate, the connection is reused', (t) => {
  const created = tine(['-m', 'local-ssh', 'repo', 'create', 'app']);
  t.is(created.code, 0, created.stdout + created.stderr);
  const fork = tine(['-m', 'local-ssh', 'repo', 'fork', 'app', '--tag', 't1']);
  t.is(fork.code, 0, fork.stdout + fork.stderr);
  t.is(fork.json.data.ref, 'app:t1');
  t.deepEqual(fork.json.steps.slice(0, 2).map((s: any) => s.step), ['connect', 'host_verified']);
  t.true(fork.json.steps.some((s: any) => s.step === 'cow_clone'));
  t.true(remoteHas('app:t1'));
  t.false(existsSync(join(local.datastore, 'repos', fork.json.data.guid)));

  const before = sshd.connections();
  const missing = tine(['-m', 'local-ssh', 'repo', 'info', 'nope:x']);
  t.is(missing.code, 3);
  t.is(missing.json.error.code, 'NOT_FOUND');
  t.truthy(missing.json.error.next?.length);
  t.is(sshd.connections(), before, 'the second command reused the master connection');

  const text = tine(['-m', 'local-ssh', '-o', 'text', 'repo', 'info', 'app:t1'], {}, { json: false });
  t.is(text.code, 0);
  t.regex(text.stdout, /Connected to local-ssh/);
  t.regex(text.stdout, /Host verified/);
});

test.serial('repo exec over SSH returns the command\'s exit code and output; connect gets a remote pty', (t) => {
  const r = tine(['-m', 'local-ssh', 'repo', 'exec', 'app:t1', '--', 'sh', '-c', 'echo from-sandbox-$(id -u); exit 7'], {}, { json: false });
  t.is(r.code, 7, r.stdout + r.stderr);
  t.regex(r.stdout, /from-sandbox-7111/);
  const c = spawnSync('script', ['-qfec', `${process.execPath} ${clientBin} -m local-ssh repo connect app:t1`, '/dev/null'], {
    env, encoding: 'utf8', input: 'tty; echo inside-$((6*7)); exit 3\n', timeout: 120_000,
  });
  // The remote end is a pty (ssh -tt): its line discipline echoes the input and ends lines with CR LF.
  t.regex(c.stdout, /inside-42\r\n/, c.stdout + c.stderr);
  t.regex(c.stdout, /echo inside-\$\(\(6\*7\)\); exit 3\r\n/);
});

test.serial('secret get over SSH returns a digest, never the value', (t) => {
  const set = tine(['-m', 'local-ssh', 'repo', 'secret', 'set', 'app:t1', '--key', 'API_TOKEN', '--value', '-'], {}, { input: 's3cr3t-value\n' });
  t.is(set.code, 0, set.stdout + set.stderr);
  const get = tine(['-m', 'local-ssh', 'repo', 'secret', 'get', 'app:t1', '--key', 'API_TOKEN']);
  t.is(get.code, 0, get.stdout + get.stderr);
  t.false(get.stdout.includes('s3cr3t-value'));
  t.regex(JSON.stringify(get.json.data), /sha256|digest/i);
});

test.serial('an agent process tree is refused on the client before any SSH connection is made', (t) => {
  const conns = sshd.connections();
  const calls = sshd.sshInvocations();
  const r = tine(['-m', 'local-ssh', 'repo', 'delete', 'app', '--yes'], { CLAUDECODE: '1' });
  t.is(r.code, 4, r.stdout + r.stderr);
  t.is(r.json.error.code, 'GRAND_GUARD');
  t.true(r.json.error.next.some((n: any) => /tine repo fork app --tag/.test(n.run ?? '')));
  t.is(sshd.sshInvocations(), calls, 'ssh was never started');
  t.is(sshd.connections(), conns, 'sshd saw no connection');
  t.true(remoteHas('app'));
});

test.serial('an agent-role key is held to the agent policy by the host even when the client says human', (t) => {
  remote.run(['repo', 'create', 'solo']);
  const add = tine(['machine', 'add', 'agent-ssh', '--host', '127.0.0.1', '--port', String(sshd.port), '--key', sshd.agentKey, '--agent', '--via', 'local-ssh', '--authorized-keys', sshd.authorizedKeys]);
  t.is(add.code, 0, add.stdout + add.stderr);
  const line = readFileSync(sshd.authorizedKeys, 'utf8').split('\n').find((l) => l.includes(readFileSync(`${sshd.agentKey}.pub`, 'utf8').split(' ')[1]!))!;
  t.regex(line, /^restrict,command=".* rpc --role agent" ssh-ed25519 /);

  // No agent signal here: the client claims human; the key's forced command makes it an agent.
  const del = tine(['-m', 'agent-ssh', 'repo', 'delete', 'solo', '--yes']);
  t.is(del.code, 4, del.stdout + del.stderr);
  t.is(del.json.error.code, 'GRAND_GUARD');
  t.truthy(del.json.error.next?.length);
  t.true(remoteHas('solo'));
  const fork = tine(['-m', 'agent-ssh', 'repo', 'fork', 'solo', '--tag', 'a1']);
  t.is(fork.code, 0, fork.stdout + fork.stderr);
  const delFork = tine(['-m', 'agent-ssh', 'repo', 'delete', 'solo:a1', '--yes']);
  t.is(delFork.code, 0, delFork.stdout + delFork.stderr);

  // The key runs nothing but the RPC: a shell command asked for is not run.
  const raw = spawnSync('ssh', ['-i', sshd.agentKey, '-p', String(sshd.port), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', 'root@127.0.0.1', 'echo PWNED-$((1+1))'], { encoding: 'utf8', input: '', timeout: 60_000 });
  t.false(raw.stdout.includes('PWNED-2'));
  t.is(raw.status, 2, raw.stdout + raw.stderr);
});

test.serial('push then pull between two datastores: metadata travels, the second transfer is incremental', (t) => {
  const src = join(local.dir, 'web-src');
  mkdirSync(src);
  writeFileSync(join(src, 'a.txt'), 'grand file\n');
  const web = local.run(['repo', 'create', 'web', '--from', src]);
  t.is(web.code, 0, web.stdout + web.stderr);
  const push = tine(['repo', 'push', 'web', '--to', 'local-ssh']);
  t.is(push.code, 0, push.stdout + push.stderr);
  t.is(push.json.data.guid, web.json.data.guid);
  t.false(push.json.data.incremental);
  const remoteWeb = remote.run(['repo', 'info', 'web']).json.data;
  t.is(remoteWeb.guid, web.json.data.guid);
  t.is(readFileSync(join(remoteWeb.path, 'a.txt'), 'utf8'), 'grand file\n');

  const f1 = local.run(['repo', 'fork', 'web', '--tag', 'f1']).json.data;
  writeFileSync(join(f1.path, 'b.txt'), 'fork file\n');
  const pushFork = tine(['repo', 'push', 'web:f1', '--to', 'local-ssh']);
  t.is(pushFork.code, 0, pushFork.stdout + pushFork.stderr);
  t.true(pushFork.json.data.incremental);
  const remoteF1 = remote.run(['repo', 'info', 'web:f1']).json.data;
  t.is(remoteF1.parentGuid, web.json.data.guid);
  t.is(remoteF1.grandGuid, web.json.data.guid);
  t.is(readFileSync(join(remoteF1.path, 'b.txt'), 'utf8'), 'fork file\n');

  const again = tine(['repo', 'push', 'web', '--to', 'local-ssh']);
  t.is(again.code, 6);
  t.is(again.json.error.code, 'EXISTS');

  const r1 = tine(['-m', 'local-ssh', 'repo', 'fork', 'web', '--tag', 'r1']).json.data;
  writeFileSync(join(r1.path, 'c.txt'), 'made remotely\n');
  const pull = tine(['repo', 'pull', 'web:r1', '--from', 'local-ssh']);
  t.is(pull.code, 0, pull.stdout + pull.stderr);
  t.true(pull.json.data.incremental);
  const localR1 = local.run(['repo', 'info', 'web:r1']).json.data;
  t.is(localR1.guid, r1.guid);
  t.is(readFileSync(join(localR1.path, 'c.txt'), 'utf8'), 'made remotely\n');
  t.is(readFileSync(join(localR1.path, 'a.txt'), 'utf8'), 'grand file\n');
});

test.serial('a changed host key is refused by machine add and by every command', async (t) => {
  spawnSync(process.execPath, [clientBin, 'machine', 'remove', 'agent-ssh'], { env, stdio: 'ignore' });
  killOurSsh();
  const cfgBefore = readFileSync(clientConfig(), 'utf8');
  const old = sshd.fingerprint();
  await sshd.restart({ newHostKey: true });
  t.not(sshd.fingerprint(), old);
  const add = tine(['machine', 'add', 'local-ssh', '--host', '127.0.0.1', '--port', String(sshd.port), '--key', sshd.humanKey]);
  t.is(add.code, 6, add.stdout + add.stderr);
  t.is(add.json.error.code, 'HOST_KEY_CHANGED');
  t.truthy(add.json.error.next?.length);
  t.is(readFileSync(clientConfig(), 'utf8'), cfgBefore);
  const list = tine(['-m', 'local-ssh', 'repo', 'list']);
  t.is(list.code, 4, list.stdout + list.stderr);
  t.is(list.json.error.code, 'HOST_KEY_CHANGED');
});
