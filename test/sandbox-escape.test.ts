// The escape suite of the kernel sandbox: each attempt runs inside `repo exec` of a fork,
// as a real process on a real loop-mounted btrfs, and must fail without changing anything
// outside. Plus the positive cases (identity, writable repo, exit codes, stdin, signals).
import test from 'ava';
import { mkdirSync, writeFileSync, readFileSync, readdirSync, existsSync, statSync, lstatSync, copyFileSync, chmodSync, chownSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { makeTestHost, tineHostBin, type TestHost, type RunResult } from './helpers/host.js';

let host: TestHost;
let grand: any; // app
let fork: any; // app:t1
let sibling: any; // app:t2
let other: any; // bank (another grand)
const sockets: Server[] = [];
const children: ChildProcess[] = [];

const MARK = 'grand-secret-content-4c1f';

test.before(() => {
  host = makeTestHost();
  const src = join(host.dir, 'src-app');
  mkdirSync(src, { recursive: true });
  writeFileSync(join(src, 'secret.txt'), `${MARK}\n`);
  grand = host.run(['repo', 'create', 'app', '--from', src]).json.data;
  other = host.run(['repo', 'create', 'bank', '--from', src]).json.data;
  fork = host.run(['repo', 'fork', 'app', '--tag', 't1']).json.data;
  sibling = host.run(['repo', 'fork', 'app', '--tag', 't2']).json.data;
  if (!grand || !fork || !sibling || !other) throw new Error('test repositories not created');
});

test.after.always(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const s of sockets) s.close();
  host?.cleanup();
});

/** `sh -c SCRIPT` inside the fork's sandbox. */
function sx(script: string, opts: { env?: NodeJS.ProcessEnv; input?: string; ref?: string } = {}): RunResult {
  return host.run(['-o', 'json', 'repo', 'exec', opts.ref ?? 'app:t1', '--', 'sh', '-c', script], opts);
}

/** Paths, sizes and content digests under a directory (what a write would change). */
function snapshot(dir: string): string {
  const out: string[] = [];
  const walk = (d: string, depth: number) => {
    if (depth > 6) return;
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = lstatSync(p);
      if (st.isDirectory()) {
        out.push(`${p}/ ${st.mode}`);
        walk(p, depth + 1);
      } else if (st.isFile()) {
        out.push(`${p} ${st.size} ${st.mode} ${createHash('sha256').update(readFileSync(p)).digest('hex')}`);
      } else out.push(`${p} ${st.mode}`);
    }
  };
  walk(dir, 0);
  return out.join('\n');
}

// ---- positive cases ----

test.serial('id: uid 7111, gid 7111, no supplementary groups; hostname is the ref; cwd is the repo', (t) => {
  const r = sx('id; hostname; pwd; echo "$HOME"');
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, `uid=7111(tine) gid=7111(tine) groups=7111(tine)\napp:t1\n${fork.path}\n${fork.path}\n`);
  t.is(r.json, undefined, 'no envelope on stdout when the command ran');
});

test.serial('no capabilities, no_new_privs, no_new_privs-proof: /proc/self/status', (t) => {
  const r = sx('grep -E "^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Groups|Uid|Gid):" /proc/self/status');
  t.is(r.code, 0, r.stderr);
  for (const cap of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) t.regex(r.stdout, new RegExp(`${cap}:\\s+0000000000000000`));
  t.regex(r.stdout, /NoNewPrivs:\s+1/);
  t.regex(r.stdout, /Uid:\s+7111\s+7111\s+7111\s+7111/);
  t.regex(r.stdout, /Gid:\s+7111\s+7111\s+7111\s+7111/);
  t.regex(r.stdout, /Groups:\s*\n/);
});

test.serial('the repository is writable; the write lands in the fork only', (t) => {
  const before = snapshot(grand.path);
  const r = sx('echo hello > made-here.txt && mkdir -p d/e && echo x > d/e/f && cat made-here.txt');
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, 'hello\n');
  t.is(readFileSync(join(fork.path, 'made-here.txt'), 'utf8'), 'hello\n');
  t.is(statSync(join(fork.path, 'made-here.txt')).uid, 7111);
  t.false(existsSync(join(grand.path, 'made-here.txt')));
  t.is(snapshot(grand.path), before);
});

test.serial('exit codes, stdin and stderr pass through', (t) => {
  t.is(sx('exit 42').code, 42);
  t.is(sx('exit 0').code, 0);
  const r = sx('tr a-z A-Z; echo oops >&2; exit 3', { input: 'piped in\n' });
  t.is(r.code, 3);
  t.is(r.stdout, 'PIPED IN\n');
  t.is(r.stderr, 'oops\n');
  const missing = host.run(['-o', 'json', 'repo', 'exec', 'app:t1', '--', 'no-such-command']);
  t.is(missing.code, 127);
  t.regex(missing.stderr, /no-such-command/);
});

test.serial('a signal to tine-host reaches the command (SIGTERM -> 143)', async (t) => {
  const child = spawn(process.execPath, [tineHostBin, '-o', 'json', 'repo', 'exec', 'app:t1', '--', 'sh', '-c', 'echo ready; exec sleep 30'], { env: host.env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  const ready = new Promise<void>((resolve) => child.stdout!.on('data', (d) => { out += d; if (out.includes('ready')) resolve(); }));
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  await ready;
  const t0 = Date.now();
  child.kill('SIGTERM');
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  clearTimeout(timer);
  t.is(code, 143);
  t.true(Date.now() - t0 < 10_000);
});

test.serial('environment: allow-list plus the repo\'s variables; no TINE_SECRET_* even when the caller has one', (t) => {
  const r = sx('env', { env: { TINE_SECRET_LEAK: 'leak-value-9', AWS_SECRET_ACCESS_KEY: 'aws-9', TINE_HOST_CONFIG_X: 'x' } });
  t.is(r.code, 0, r.stderr);
  t.notRegex(r.stdout, /leak-value-9|aws-9|TINE_SECRET_|TINE_HOST_CONFIG/);
  t.regex(r.stdout, new RegExp(`^DOCKER_HOST=unix://${host.runDir}/docker-${fork.networkId}\\.sock$`, 'm'));
  t.regex(r.stdout, /^TINE_REPO=app:t1$/m);
  t.regex(r.stdout, /^USER=tine$/m);
});

test.serial('only this repository\'s Docker socket is visible, at its usual path', (t) => {
  const own = join(host.runDir, `docker-${fork.networkId}.sock`);
  const theirs = join(host.runDir, `docker-${sibling.networkId}.sock`);
  const grands = join(host.runDir, `docker-${grand.networkId}.sock`);
  for (const p of [own, theirs, grands]) {
    const s = createServer((c) => c.end('PONG ' + p + '\n'));
    s.listen(p);
    sockets.push(s);
  }
  return new Promise<void>((resolve) => setTimeout(resolve, 200)).then(() => {
    // Like dockerd's socket (group 7111, 0660): permissions would allow all three.
    for (const p of [own, theirs, grands]) chmodSync(p, 0o666);
    // async: the socket servers live in this process and must keep answering meanwhile.
    return host.runAsync(['-o', 'json', 'repo', 'exec', 'app:t1', '--', 'sh', '-c', `test -S ${own} && echo own-present; ls ${host.runDir}; test -e ${theirs} || echo theirs-absent; test -e ${grands} || echo grands-absent; ` +
      `python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print(s.recv(200).decode().strip())" ${own}; ` +
      `python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])" ${theirs} 2>/dev/null || echo connect-theirs-failed`], { timeoutMs: 60_000 });
  }).then((r) => {
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout, /own-present/);
    t.regex(r.stdout, new RegExp(`^docker-${fork.networkId}\\.sock$`, 'm'));
    t.notRegex(r.stdout, new RegExp(`docker-${sibling.networkId}\\.sock\n`));
    t.regex(r.stdout, /theirs-absent/);
    t.regex(r.stdout, /grands-absent/);
    t.regex(r.stdout, new RegExp(`PONG ${own}`));
    t.regex(r.stdout, /connect-theirs-failed/);
  });
});

// ---- escape attempts ----

test.serial('read the parent\'s files by absolute path: fails', (t) => {
  const r = sx(`cat ${grand.path}/secret.txt; ls ${grand.path}; echo rc=$?`);
  t.notRegex(r.stdout, new RegExp(MARK));
  t.regex(r.stdout, /rc=[12]/);
  // The fork's own copy is readable: the test can see content when access works.
  t.regex(sx('cat secret.txt').stdout, new RegExp(MARK));
});

test.serial('read the parent through `..`: fails', (t) => {
  const r = sx(`cat ../${grand.guid}/secret.txt; ls ..; cat ../../repos/${sibling.guid}/secret.txt`);
  t.notRegex(r.stdout, new RegExp(MARK));
  t.notRegex(r.stdout, new RegExp(grand.guid));
  t.notRegex(r.stdout, new RegExp(sibling.guid));
});

test.serial('read through a symlink planted in the fork (inside or from the host side): fails', (t) => {
  const r = sx(`ln -s ${grand.path}/secret.txt planted && cat planted; ln -s ${host.stateDir}/state.db db-link && cat db-link | head -c 100; echo done`);
  t.notRegex(r.stdout, new RegExp(MARK));
  t.notRegex(r.stdout, /SQLite/);
  t.regex(r.stdout, /done/);
  symlinkSync(join(other.path, 'secret.txt'), join(fork.path, 'host-planted'));
  const r2 = sx('cat host-planted; echo rc=$?');
  t.notRegex(r2.stdout, new RegExp(MARK));
  t.regex(r2.stdout, /rc=1/);
});

test.serial('list the datastore: only this repository is there', (t) => {
  const r = sx(`ls -a ${host.datastore}/repos ${host.datastore} ${host.fs.mountpoint}; find ${host.fs.mountpoint} -maxdepth 4 2>/dev/null`);
  for (const g of [grand.guid, sibling.guid, other.guid]) t.notRegex(r.stdout, new RegExp(g));
  t.regex(r.stdout, new RegExp(fork.guid), 'the test sees its own guid, so it would see others');
});

test.serial('read the state database and the host state dir: fails', (t) => {
  const r = sx(`cat ${host.stateDir}/state.db | head -c 64; ls ${host.stateDir}; ls /var/lib/tine; cat ${host.configPath}; echo done`);
  t.notRegex(r.stdout, /SQLite format/);
  t.notRegex(r.stdout, /state\.db/);
  t.notRegex(r.stdout, /datastore/);
  t.regex(r.stdout, /done/);
  t.regex(r.stderr, /No such file or directory/);
});

test.serial('/proc shows only the sandbox; /proc/1/environ unreadable; a host process cannot be seen or signalled', (t) => {
  const victim = spawn('sleep', ['300'], { stdio: 'ignore' });
  children.push(victim);
  const r = sx(`ls /proc | grep -E '^[0-9]+$' | wc -l; cat /proc/1/environ; echo env-rc=$?; kill -9 ${victim.pid}; echo kill-rc=$?; ls /proc/${victim.pid} 2>&1 | head -1; cat /proc/*/cmdline 2>/dev/null | tr '\\0' ' '`);
  const lines = r.stdout.split('\n');
  t.true(Number(lines[0]) <= 6, `few processes: ${lines[0]}`);
  t.regex(r.stdout, /env-rc=1/);
  t.regex(r.stdout, /kill-rc=1/);
  t.notRegex(r.stdout, /sleep 300/);
  t.notRegex(r.stdout, /TINE_HOST_CONFIG/);
  t.is(victim.exitCode, null);
  t.is(victim.signalCode, null);
  t.true(existsSync(`/proc/${victim.pid}`), 'the host process still runs');
  victim.kill('SIGKILL');
});

test.serial('su, and setuid binaries (system and planted), do not give root', (t) => {
  const suid = join(fork.path, 'suid-id');
  copyFileSync('/usr/bin/id', suid);
  chownSync(suid, 0, 0);
  chmodSync(suid, 0o4755);
  const r = sx(`su -c id root </dev/null; echo su-rc=$?; ./suid-id -u; /usr/bin/mount -t tmpfs none /tmp; echo mount-rc=$?; python3 -c 'import os; os.setuid(0)'; echo setuid-rc=$?`);
  t.regex(r.stdout, /su-rc=[1-9]/);
  t.regex(r.stdout, /^7111$/m);
  t.notRegex(r.stdout, /uid=0/);
  t.regex(r.stdout, /mount-rc=[1-9]/);
  t.regex(r.stdout, /setuid-rc=1/);
});

test.serial('mount, unshare -m, chroot: refused', (t) => {
  const before = snapshot(fork.path);
  const r = sx(`mkdir -p /tmp/m; mount -t tmpfs none /tmp/m; echo mount-rc=$?; unshare -m true; echo unshare-rc=$?; chroot / true; echo chroot-rc=$?; umount ${fork.path}; echo umount-rc=$?`);
  t.regex(r.stdout, /mount-rc=[1-9]/);
  t.regex(r.stdout, /unshare-rc=[1-9]/);
  t.regex(r.stdout, /chroot-rc=[1-9]/);
  t.regex(r.stdout, /umount-rc=[1-9]/);
  t.is(snapshot(fork.path), before);
});

test.serial('write /etc (and the root, and /usr): refused; host /etc unchanged', (t) => {
  const etcBefore = readdirSync('/etc').sort().join(',');
  const passwd = readFileSync('/etc/passwd', 'utf8');
  const r = sx('echo x > /etc/tine-escape; echo etc-rc=$?; echo x >> /etc/passwd; echo passwd-rc=$?; touch /escape; echo root-rc=$?; touch /usr/escape; echo usr-rc=$?');
  for (const k of ['etc', 'passwd', 'root', 'usr']) t.regex(r.stdout, new RegExp(`${k}-rc=[1-9]`));
  t.is(readdirSync('/etc').sort().join(','), etcBefore);
  t.is(readFileSync('/etc/passwd', 'utf8'), passwd);
  t.false(existsSync('/escape'));
});

test.serial('a user namespace gives no way out: creating one is refused (seccomp)', (t) => {
  const r = sx(`unshare -Ur sh -c 'id -u; cat ${host.stateDir}/state.db | head -c 16; touch /etc/x; echo etc-rc=$?; mount -t tmpfs none /etc; echo mount-rc=$?; cat /proc/1/environ; echo env-rc=$?'; echo userns-rc=$?`);
  t.notRegex(r.stdout, /SQLite/);
  t.notRegex(r.stdout, /etc-rc=0/);
  t.notRegex(r.stdout, /mount-rc=0/);
  t.notRegex(r.stdout, /env-rc=0/);
  t.false(existsSync('/etc/x'));
  t.regex(r.stdout, /userns-rc=1/);
  t.regex(r.stderr, /unshare failed: Operation not permitted/);
  const py = sx(`python3 -c "import os; os.unshare(os.CLONE_NEWUSER)"; echo py-rc=$?`);
  t.regex(py.stdout, /py-rc=1/);
});

test.serial('TIOCSTI cannot inject keystrokes into the caller\'s terminal', (t) => {
  // Control: the same injection from a process that owns the terminal does arrive, so the
  // check below would notice a successful injection.
  const inject = `python3 -c "import fcntl,termios,sys
ok=0
for fd in (0,):
  try:
    [fcntl.ioctl(fd, termios.TIOCSTI, bytes([c])) for c in b'echo INJECTED\\n']; ok=1
  except OSError as e: print('fd-err', e.errno)
try:
  t=open('/dev/tty','wb',buffering=0)
  [fcntl.ioctl(t, termios.TIOCSTI, bytes([c])) for c in b'echo INJECTED\\n']; ok=1
except OSError as e: print('tty-err', e.errno)
print('injected' if ok else 'refused')"`;
  // script's stdin stays open (sleep): at EOF script would queue ^D ahead of any injection.
  const q = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;
  const outer = (inner: string) => spawnSync('sh', ['-c', `sleep 4 | script -qec ${q(`bash -c ${q(`${inner}; read -t 2 line; echo "GOT:$line"`)}`)} /dev/null`], { env: host.env, encoding: 'utf8', timeout: 60_000 });
  const control = outer(inject);
  t.regex(control.stdout, /GOT:echo INJECTED/, 'control: injection works outside the sandbox');
  const inside = outer(`${process.execPath} ${tineHostBin} -o json repo exec app:t1 -- ${inject}`);
  t.regex(inside.stdout, /refused/);
  t.notRegex(inside.stdout, /GOT:echo INJECTED/);
  t.regex(inside.stdout, /GOT:/);
});

test.serial('no secret of the fork, its parent or any repo is readable', (t) => {
  const set = (ref: string) => host.run(['repo', 'secret', 'set', ref, '--key', 'DB_PASSWORD', '--value', 'hunter2-secret', '--mode', 'env']);
  const setFile = (ref: string) => host.run(['repo', 'secret', 'set', ref, '--key', 'API_TOKEN', '--value', 'filetoken-secret', '--mode', 'file']);
  const results = [set('app'), set('app:t1'), setFile('app'), setFile('app:t1')];
  const r = sx(`env; grep -rs hunter2 / --exclude-dir=proc 2>/dev/null | head -3; grep -rs filetoken / --exclude-dir=proc 2>/dev/null | head -3; ls /run /run/secrets ${host.runDir} 2>&1; echo done`);
  t.regex(r.stdout, /done/);
  t.notRegex(r.stdout, /hunter2|filetoken|TINE_SECRET_/);
  t.log(`secret set exit codes: ${results.map((x) => x.code).join(',')}`);
});

test.serial('refusals keep the envelope and the contract\'s exit codes; nothing runs', (t) => {
  const notFound = host.run(['-o', 'json', 'repo', 'exec', 'app:nope', '--', 'touch', join(fork.path, 'nf')]);
  t.is(notFound.code, 3);
  t.is(notFound.json.error.code, 'NOT_FOUND');
  const bad = host.run(['-o', 'json', 'repo', 'exec', 'App!', '--', 'true']);
  t.is(bad.code, 2);
  t.is(bad.json.error.field, 'ref');
  const empty = host.run(['-o', 'json', 'repo', 'exec', 'app:t1']);
  t.is(empty.code, 2);
  t.is(empty.json.error.field, 'command');
  t.false(existsSync(join(fork.path, 'nf')));
});

test.serial('Landlock is a real second layer: listing / is denied with it, allowed with landlock "off"', (t) => {
  const on = sx('ls / >/dev/null; echo rc=$?');
  t.regex(on.stdout, /rc=2/);
  const cfg = JSON.parse(readFileSync(host.configPath, 'utf8'));
  const offPath = join(host.dir, 'host-landlock-off.json');
  writeFileSync(offPath, JSON.stringify({ ...cfg, landlock: 'off' }));
  const off = sx('ls /; echo rc=$?', { env: { TINE_HOST_CONFIG: offPath } });
  t.regex(off.stdout, /rc=0/);
  t.regex(off.stdout, /^usr$/m);
  // Still the sandbox without Landlock: the other repositories are absent.
  t.regex(sx(`cat ${grand.path}/secret.txt; echo rc=$?`, { env: { TINE_HOST_CONFIG: offPath } }).stdout, /rc=1/);
});

test.serial('repo connect: an interactive shell on a pty, under script', (t) => {
  const cmd = `printf 'id -u; test -t 0 && echo IS-A-TTY; hostname; exit 5\\n' | script -qec '${process.execPath} ${tineHostBin} repo connect app:t1' /dev/null`;
  const r = spawnSync('sh', ['-c', cmd], { env: host.env, encoding: 'utf8', timeout: 60_000 });
  t.regex(r.stdout, /^7111\r?$/m, r.stdout + r.stderr);
  t.regex(r.stdout, /IS-A-TTY/);
  t.regex(r.stdout, /app:t1/);
  t.is(r.status, 5);
});

test.serial('the guard: an agent is refused exec/connect on a grand (exit 4, nothing runs), allowed on its fork', (t) => {
  const agent = { TINE_AGENT: '1' };
  const r = host.run(['-o', 'json', 'repo', 'exec', 'app', '--', 'sh', '-c', 'touch guard-escape'], { env: agent });
  t.is(r.code, 4, r.stdout + r.stderr);
  t.is(r.json.ok, false);
  t.true(r.json.error.next.length > 0);
  t.false(existsSync(join(grand.path, 'guard-escape')));
  const c = host.run(['-o', 'json', 'repo', 'connect', 'app'], { env: agent });
  t.is(c.code, 4);
  const f = host.run(['-o', 'json', 'repo', 'exec', 'app:t1', '--', 'id', '-u'], { env: agent });
  t.is(f.code, 0, f.stderr);
  t.is(f.stdout, '7111\n');
});

test.serial('the sandbox dies with tine-host: SIGKILL of tine-host leaves no process behind', async (t) => {
  const marker = `sleep 300.${process.pid}`;
  const child = spawn(process.execPath, [tineHostBin, '-o', 'json', 'repo', 'exec', 'app:t1', '--', 'sh', '-c', `echo ready; ${marker}`], { env: host.env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  await new Promise<void>((resolve) => child.stdout!.on('data', (d) => { out += d; if (out.includes('ready')) resolve(); }));
  const running = () => spawnSync('pgrep', ['-f', marker], { encoding: 'utf8' }).stdout.trim();
  // Visible while it runs (so the check below can see a survivor).
  for (let i = 0; i < 50 && !running(); i++) await new Promise((r) => setTimeout(r, 100));
  t.not(running(), '');
  child.kill('SIGKILL');
  await new Promise((resolve) => child.on('close', resolve));
  clearTimeout(timer);
  for (let i = 0; i < 50 && running(); i++) await new Promise((r) => setTimeout(r, 100));
  t.is(running(), '');
});

test.serial('a ref longer than a hostname may be (64) still gets a sandbox; hostname is its first 64 characters', (t) => {
  const tag = 'a'.repeat(63);
  const f = host.run(['repo', 'fork', 'app', '--tag', tag]);
  t.is(f.code, 0, f.stdout);
  const r = sx('hostname', { ref: `app:${tag}` });
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, `app:${tag}`.slice(0, 64) + '\n');
});
