// tine-host serve + the launcher: the fast paths give the same answers as the Node paths
// (exit codes, stdin, refusals with their envelope, the guard on the caller's own process
// tree), fall back to Node for everything else, and only root may ask the daemon anything.
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect } from 'node:net';
import { join } from 'node:path';
import { makeTestHost, tineBin, type TestHost } from './helpers/host.js';
import { startSshd } from './helpers/sshd.js';
import { startServe, launcherDir, type Serve } from './helpers/serve.js';

let host: TestHost;
let serve: Serve;
let bins: ReturnType<typeof launcherDir>;
let fork: { ref: string; path: string };

test.before(async () => {
  host = makeTestHost();
  host.run(['repo', 'create', 'app']);
  fork = host.run(['repo', 'fork', 'app', '--tag', 't1']).json.data;
  if (!fork) throw new Error('fork not created');
  bins = launcherDir();
  serve = await startServe(host);
});
test.after.always(async () => {
  // Each step even when one before it fails: a test host must never be left mounted.
  try {
    await serve?.stop();
  } finally {
    try {
      bins?.cleanup();
    } finally {
      host?.cleanup();
    }
  }
});

/** Run the launcher (async: serve's log is read by this process's event loop meanwhile). */
function launch(bin: 'tine' | 'tine-host', args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(bin === 'tine' ? bins.tine : bins.tineHost, args, { env: { ...host.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
    // A launcher that exits before reading its stdin makes the write fail (EPIPE): that is
    // its business, not a crash of this worker.
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}

const requestsLogged = (what: RegExp) => serve.log().split('\n').filter((l) => what.test(l)).length;

/** Serve logs a request after answering it: wait (bounded) for the line. */
async function logged(what: RegExp, atLeast: number): Promise<number> {
  for (let i = 0; i < 100 && requestsLogged(what) < atLeast; i++) await new Promise((r) => setTimeout(r, 50));
  return requestsLogged(what);
}

test.serial('repo exec through serve: exit code, stdin and stdout pass; it runs as 7111 in the fork', async (t) => {
  const before = requestsLogged(/exec pid \d+: run app:t1/);
  const r = await launch('tine', ['repo', 'exec', 'app:t1', '--', 'sh', '-c', 'id -u; pwd; cat; exit 7'], { input: 'from stdin\n' });
  t.is(r.code, 7, r.stderr);
  t.is(r.stdout, `7111\n${fork.path}\nfrom stdin\n`);
  t.is(await logged(/exec pid \d+: run app:t1/, before + 1), before + 1, 'answered by serve, not by Node');
});

test.serial('an agent is refused on the grand by the guard on its own process tree; nothing runs', async (t) => {
  const marker = join(host.dir, 'agent-ran');
  const r = await launch('tine', ['repo', 'exec', 'app', '--', 'sh', '-c', `touch ${marker}`], { env: { TINE_AGENT: '1' } });
  t.is(r.code, 4, r.stdout + r.stderr);
  const env = JSON.parse(r.stdout);
  t.is(env.ok, false);
  t.is(env.error.code, 'GRAND_GUARD');
  t.true(env.error.next.some((n: { run?: string }) => /tine repo fork app --tag/.test(n.run ?? '')));
  t.false(existsSync(marker));
  t.is(await logged(/refused GRAND_GUARD/, 1), 1);
  // The same agent on the fork is allowed.
  t.is((await launch('tine', ['repo', 'exec', 'app:t1', '--', 'true'], { env: { TINE_AGENT: '1' } })).code, 0);
});

test.serial('bad input through serve: exit 2 naming the field', async (t) => {
  const r = await launch('tine', ['repo', 'exec', 'App!', '--', 'true']);
  t.is(r.code, 2);
  t.is(JSON.parse(r.stdout).error.field, 'ref');
  const missing = await launch('tine', ['repo', 'exec', 'app:nope', '--', 'true']);
  t.is(missing.code, 3);
});

test.serial('repo connect through serve: a shell on its own pty, under script', async (t) => {
  const before = requestsLogged(/exec pid \d+: run app:t1/);
  const r = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
    const cmd = `printf 'id -u; test -t 0 && echo IS-A-TTY; exit 5\\n' | script -qec '${bins.tine} repo connect app:t1' /dev/null`;
    const child = spawn('sh', ['-c', cmd], { env: host.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout }); });
  });
  t.regex(r.stdout, /^7111\r?$/m, r.stdout);
  t.regex(r.stdout, /IS-A-TTY/);
  t.is(r.code, 5);
  t.is(await logged(/exec pid \d+: run app:t1/, before + 1), before + 1);
});

test.serial('signals reach the command: SIGTERM to the launcher ends it with 143', async (t) => {
  const child = spawn(bins.tine, ['repo', 'exec', 'app:t1', '--', 'sh', '-c', 'echo up; exec sleep 30'], { env: host.env, stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    const t0 = setTimeout(() => reject(new Error('no output within 20 s')), 20_000);
    child.stdout!.once('data', () => { clearTimeout(t0); resolve(); });
  });
  child.kill('SIGTERM');
  const code = await new Promise<number | null>((resolve) => {
    const t1 = setTimeout(() => { child.kill('SIGKILL'); resolve(null); }, 10_000);
    child.once('exit', (c) => { clearTimeout(t1); resolve(c); });
  });
  t.is(code, 143);
});

test.serial('other commands fall back to Node, with the same result', async (t) => {
  const r = await launch('tine', ['repo', 'list', '-o', 'json']);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(JSON.parse(r.stdout).data.repos.map((x: { ref: string }) => x.ref).sort(), ['app', 'app:t1']);
  // exec on another machine is never planned here.
  t.regex((await launch('tine', ['-m', 'nowhere', 'repo', 'exec', 'app:t1', '--', 'true'])).stdout, /nowhere/);
});

test.serial('tine-host rpc relayed to serve: events stream, the exit code is the result\'s', async (t) => {
  const before = requestsLogged(/rpc pid \d+: repo list → 0/);
  const r = await launch('tine-host', ['rpc'], { input: JSON.stringify({ command: 'repo list', input: {} }) + '\n' });
  t.is(r.code, 0, r.stderr);
  const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  t.is(events[0].event, 'hello');
  t.is(events.at(-1).event, 'result');
  t.is(events.at(-1).envelope.data.repos.length, 2);
  t.is(await logged(/rpc pid \d+: repo list → 0/, before + 1), before + 1);
});

test.serial('an agent-role relay is held to the agent policy whatever the client claims', async (t) => {
  const req = { command: 'repo delete', input: { ref: 'app', yes: true }, client: { actor: 'human', reason: 'says so' } };
  const r = await launch('tine-host', ['rpc', '--role', 'agent'], { input: JSON.stringify(req) + '\n' });
  t.is(r.code, 4, r.stdout + r.stderr);
  const result = r.stdout.trim().split('\n').map((l) => JSON.parse(l)).at(-1);
  t.is(result.envelope.error.code, 'GRAND_GUARD');
  t.is(host.run(['repo', 'info', 'app']).code, 0, 'the grand is still there');
});

test.serial('a transfer verb falls back to Node with the request on an inherited fd', async (t) => {
  const r = await launch('tine-host', ['rpc'], { input: JSON.stringify({ command: 'transfer bases', input: {} }) + '\n' });
  t.is(r.code, 0, r.stderr);
  const result = r.stdout.trim().split('\n').map((l) => JSON.parse(l)).at(-1);
  t.deepEqual(result.envelope.data, { snapshots: [] });
  t.is(await logged(/rpc pid \d+: fallback transfer bases/, 1), 1);
});

test.serial('a bad request line gets the protocol\'s own error', async (t) => {
  const r = await launch('tine-host', ['rpc'], { input: 'not json\n' });
  t.is(r.code, 2);
  t.is(JSON.parse(r.stdout.trim()).envelope.error.code, 'RPC_BAD_REQUEST');
});

test.serial('tine -m over a real sshd reaches serve through the launcher on the host', async (t) => {
  const sshd = await startSshd({ setEnv: { TINE_HOST_CONFIG: host.configPath } });
  const clientDir = mkdtempSync(join(tmpdir(), 'tine-serve-client-'));
  const cfgPath = join(clientDir, 'config.json');
  const env = { ...host.env, ...sshd.env, TINE_CLIENT_CONFIG: cfgPath };
  const tine = (args: string[]) => spawnSync(process.execPath, [tineBin, ...args, '-o', 'json'], { env, encoding: 'utf8', timeout: 60_000 });
  try {
    t.is(tine(['machine', 'add', 'here', '--host', '127.0.0.1', '--port', String(sshd.port), '--key', sshd.humanKey]).status, 0);
    const cfg = JSON.parse(readFileSync(cfgPath, 'utf8'));
    cfg.machines[0].tineHost = bins.tineHost;
    writeFileSync(cfgPath, JSON.stringify(cfg), { mode: 0o600 });
    const before = requestsLogged(/rpc pid \d+: repo fork → 0/);
    const r = tine(['-m', 'here', 'repo', 'fork', 'app', '--tag', 'viassh']);
    t.is(r.status, 0, r.stdout + r.stderr);
    t.is(JSON.parse(r.stdout).data.ref, 'app:viassh');
    t.is(await logged(/rpc pid \d+: repo fork → 0/, before + 1), before + 1, 'answered by serve');
    // exec keeps its own path (a pty or the caller's stdio): Node on the host, same code.
    const ex = spawnSync(process.execPath, [tineBin, '-m', 'here', 'repo', 'exec', 'app:viassh', '--', 'sh', '-c', 'exit 6'], { env, encoding: 'utf8', timeout: 60_000 });
    t.is(ex.status, 6, ex.stderr);
  } finally {
    const { closeMaster } = await import('../src/client/ssh.js');
    const { loadClientConfig } = await import('../src/client/config.js');
    process.env.TINE_CLIENT_CONFIG = cfgPath;
    for (const m of loadClientConfig().machines) closeMaster(m);
    delete process.env.TINE_CLIENT_CONFIG;
    sshd.stop();
    rmSync(clientDir, { recursive: true, force: true });
  }
});

test.serial('a caller that is gone before its request is handled is refused, not taken for a human', async (t) => {
  // A connects and exits; its child B sends an agent's request on the inherited socket. The
  // pid serve got from SO_PEERCRED is dead by then: the guard must refuse, not see no agent.
  const marker = join(host.dir, 'dead-caller-ran');
  const py = `
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
if os.fork() > 0:
    os._exit(0)
time.sleep(0.5)
args = [b'repo', b'exec', b'app', b'--', b'sh', b'-c', b'touch ' + sys.argv[3].encode()]
s.sendall(b'EXEC %d 0 0\\n' % len(args) + sys.argv[2].encode() + b'\\0' + b''.join(a + b'\\0' for a in args))
data = b''
while True:
    d = s.recv(65536)
    if not d: break
    data += d
sys.stdout.write(data.decode(errors='replace'))
`;
  const r = await new Promise<string>((resolve) => {
    const child = spawn('python3', ['-c', py, serve.socket, host.configPath, marker], { env: { ...host.env, TINE_AGENT: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const timer = setTimeout(() => resolve(out), 20_000);
    child.stdout.on('close', () => { clearTimeout(timer); resolve(out); });
  });
  t.regex(r, /^EXIT 4 /, r);
  t.regex(r, /CALLER_UNVERIFIED/);
  t.false(existsSync(marker));
});

test.serial('exec sent as a plain rpc request is never run inside the daemon', async (t) => {
  const req = { command: 'repo exec', input: { ref: 'app:t1', command: ['sh', '-c', 'exit 3'] } };
  const r = await launch('tine-host', ['rpc'], { input: JSON.stringify(req) + '\n' });
  t.is(await logged(/rpc pid \d+: fallback repo exec/, 1), 1);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout.trim().split('\n').map((l) => JSON.parse(l)).at(-1).envelope.data.exitCode, 3);
});

test.serial('the launcher runs only what a root daemon answers: a non-root listener is ignored', async (t) => {
  // A config (root-owned, as the launcher requires) whose run dir holds a socket that the
  // sandbox user listens on, answering RUN with a command of its choice.
  const dir = mkdtempSync(join(tmpdir(), 'tine-fake-serve-'));
  chmodSync(dir, 0o755);
  const runDir = join(dir, 'run');
  const marker = join(dir, 'fake-ran');
  spawnSync('install', ['-d', '-o', '7111', '-g', '7111', '-m', '0755', runDir]);
  const cfg = join(dir, 'host.json');
  writeFileSync(cfg, JSON.stringify({ runDir, stateDir: join(dir, 'state'), datastore: join(dir, 'ds'), pool: null }));
  const fake = spawn(process.execPath, ['-e', `require('net').createServer((c) => { c.on('data', () => c.end('RUN 3 0 json\\n/bin/sh\\0-c\\0touch ${marker}\\0\\0\\0')); }).listen(${JSON.stringify(join(runDir, 'host.sock'))}, () => console.log('up'))`], { uid: 7111, gid: 7111, stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolve, reject) => {
      const t0 = setTimeout(() => reject(new Error('fake server did not start')), 10_000);
      fake.stdout!.once('data', () => { clearTimeout(t0); resolve(); });
    });
    const r = await launch('tine', ['repo', 'exec', 'x:y', '--', 'true'], { env: { TINE_HOST_CONFIG: cfg } });
    t.not(r.code, 0);
    t.false(existsSync(marker), 'the non-root answer was not executed');
  } finally {
    fake.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

test.serial('the socket is root-only: the sandbox user cannot connect', (t) => {
  const st = spawnSync(process.execPath, ['-e', `require('net').connect(${JSON.stringify(serve.socket)}).on('connect',()=>{console.log('connected');process.exit(0)}).on('error',e=>{console.log(e.code);process.exit(1)})`], { uid: 7111, gid: 7111, encoding: 'utf8', timeout: 10_000 });
  t.is(st.stdout.trim(), 'EACCES');
  t.is(readFileSync('/proc/self/status', 'utf8').includes('Uid:\t0'), true);
});

test.serial('without the daemon the launcher runs Node: same exit code', async (t) => {
  await serve.stop();
  t.false(existsSync(serve.socket));
  const r = await launch('tine', ['repo', 'exec', 'app:t1', '--', 'sh', '-c', 'exit 5']);
  t.is(r.code, 5, r.stderr);
  const rpc = await launch('tine-host', ['rpc'], { input: JSON.stringify({ command: 'repo list', input: {} }) + '\n' });
  t.is(rpc.code, 0, rpc.stderr);
  serve = await startServe(host);
  const live = await new Promise<boolean>((resolve) => {
    const c = connect(serve.socket);
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
  t.true(live);
});
