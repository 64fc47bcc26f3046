// A real sshd on 127.0.0.1 for one test file: its own host key, sshd_config, authorized
// keys and log, plus client keys and an `ssh` wrapper that counts every invocation.
// Everything lives in one temp dir; stop() ends the daemon and removes it.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, existsSync, rmSync, mkdirSync, chmodSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestSshd {
  dir: string;
  port: number;
  hostKey: string;
  humanKey: string;
  agentKey: string;
  authorizedKeys: string;
  log: string;
  /** Directory with the counting `ssh` wrapper: put it first in PATH. */
  binDir: string;
  sshCalls: string;
  env: NodeJS.ProcessEnv;
  connections(): number;
  sshInvocations(): number;
  fingerprint(): string;
  /** Stop, optionally replace the host key, start again on the same port. */
  restart(opts?: { newHostKey?: boolean }): Promise<void>;
  stop(): void;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

const keygen = (file: string) => execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'tine-test', '-f', file], { stdio: 'ignore' });

export async function startSshd(opts: { setEnv?: Record<string, string> } = {}): Promise<TestSshd> {
  const dir = mkdtempSync(join(tmpdir(), 'tine-sshd-'));
  chmodSync(dir, 0o755);
  const port = await freePort();
  const hostKey = join(dir, 'ssh_host_ed25519_key');
  const humanKey = join(dir, 'human_key');
  const agentKey = join(dir, 'agent_key');
  keygen(hostKey);
  keygen(humanKey);
  keygen(agentKey);
  const authorizedKeys = join(dir, 'authorized_keys');
  writeFileSync(authorizedKeys, readFileSync(`${humanKey}.pub`), { mode: 0o600 });
  const log = join(dir, 'sshd.log');
  const config = join(dir, 'sshd_config');
  const setEnv = Object.entries(opts.setEnv ?? {}).map(([k, v]) => `${k}=${v}`).join(' ');
  writeFileSync(config, [
    `Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${hostKey}`, `PidFile ${join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${authorizedKeys}`, 'PermitRootLogin prohibit-password', 'PasswordAuthentication no',
    'KbdInteractiveAuthentication no', 'UsePAM no', 'StrictModes no', 'LogLevel VERBOSE', 'MaxStartups 100:30:200',
    'MaxSessions 50', ...(setEnv ? [`SetEnv ${setEnv}`] : []), '',
  ].join('\n'));
  const binDir = join(dir, 'bin');
  mkdirSync(binDir);
  const sshCalls = join(dir, 'ssh-calls.log');
  writeFileSync(join(binDir, 'ssh'), `#!/bin/sh\necho "$$ $*" >> ${sshCalls}\nexec /usr/bin/ssh "$@"\n`, { mode: 0o755 });
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  let child: ChildProcess | undefined;
  const start = async () => {
    child = spawn('/usr/sbin/sshd', ['-D', '-f', config, '-E', log], { stdio: 'ignore' });
    // Bounded: 20 s (a loaded 2-core CI host can be slow to start it).
    for (let i = 0; i < 400; i++) {
      if (existsSync(log) && /Server listening/.test(readFileSync(log, 'utf8').split('\n').slice(-5).join('\n'))) return;
      if (child.exitCode !== null) throw new Error(`sshd exited: ${readFileSync(log, 'utf8')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    // Never leave a daemon behind that nobody holds a handle to.
    child.kill('SIGKILL');
    throw new Error('sshd did not start in 20 s');
  };
  const stopDaemon = () => {
    if (child && child.exitCode === null) {
      child.kill('SIGTERM');
      for (let i = 0; i < 50 && child.exitCode === null; i++) execFileSync('sleep', ['0.05']);
    }
  };
  try {
    await start();
  } catch (err) {
    stopDaemon();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const env: NodeJS.ProcessEnv = { PATH: `${binDir}:${process.env.PATH}` };
  const count = (file: string, re: RegExp) => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((l) => re.test(l)).length : 0);
  return {
    dir, port, hostKey, humanKey, agentKey, authorizedKeys, log, binDir, sshCalls, env,
    connections: () => count(log, /Connection from 127\.0\.0\.1/),
    sshInvocations: () => count(sshCalls, /./),
    fingerprint: () => execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${hostKey}.pub`], { encoding: 'utf8' }).split(' ')[1]!,
    async restart(o = {}) {
      stopDaemon();
      if (o.newHostKey) {
        rmSync(hostKey, { force: true });
        rmSync(`${hostKey}.pub`, { force: true });
        keygen(hostKey);
      }
      // A log line from the previous daemon must not count as "listening".
      writeFileSync(log, readFileSync(log, 'utf8').replace(/Server listening/g, 'Server was listening'));
      await start();
    },
    stop() {
      stopDaemon();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
