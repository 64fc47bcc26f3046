// OpenSSH as the transport: a pinned per-machine known_hosts file (StrictHostKeyChecking=yes),
// a shared master connection (ControlMaster) so the second command skips the handshake.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { tineHostScript } from '../host/install.js';
import { mkdirSync, writeFileSync, chmodSync, existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createHash } from 'node:crypto';
import { type Machine, knownHostsFile, controlDir } from './config.js';
import { TineError, EXIT } from '../errors.js';

/**
 * One master connection per machine entry, never shared between entries: an agent-role entry
 * for the same user@host must not ride on a master that a human key authenticated.
 */
export function controlPath(m: Machine): string {
  const id = createHash('sha256').update(JSON.stringify([m.name, m.user, m.host, m.port, m.key, m.role])).digest('hex').slice(0, 24);
  return join(controlDir(), id);
}

export function sshBaseArgs(m: Machine, opts: { tty?: boolean } = {}): string[] {
  mkdirSync(controlDir(), { recursive: true, mode: 0o700 });
  return [
    '-o', 'BatchMode=yes',
    '-o', `UserKnownHostsFile=${knownHostsFile(m.name)}`,
    '-o', 'GlobalKnownHostsFile=/dev/null',
    '-o', 'StrictHostKeyChecking=yes',
    '-o', 'UpdateHostKeys=no',
    '-o', 'ControlMaster=auto',
    '-o', `ControlPath=${controlPath(m)}`,
    '-o', 'ControlPersist=60',
    '-o', 'ConnectTimeout=10',
    '-o', 'LogLevel=ERROR',
    ...(m.key ? ['-i', m.key, '-o', 'IdentitiesOnly=yes'] : []),
    '-p', String(m.port),
    '-l', m.user,
    opts.tty ? '-tt' : '-T',
    m.host,
  ];
}

/** This host's own tine-host (through sudo when not root), for local ends of the protocol (MCP without -m, push/pull). */
const hostScript = tineHostScript;
export const LOCAL: Machine = {
  name: 'local', host: 'localhost', user: 'root', port: 22, key: null, knownHostKey: 'local', role: 'human', tineHost: 'tine-host', installed: null,
};

/** Run `tine-host ARGS` on the machine; the remote command line is words, quoted for its shell. */
export function spawnRemote(m: Machine, hostArgs: string[], opts: { tty?: boolean; stdio?: 'pipe' | 'inherit'; env?: NodeJS.ProcessEnv } = {}): ChildProcess {
  if (m === LOCAL) {
    const asRoot = process.getuid?.() === 0;
    const [cmd, args] = asRoot ? [process.execPath, [hostScript, ...hostArgs]] : ['sudo', ['-n', process.execPath, hostScript, ...hostArgs]];
    return spawn(cmd, args, { stdio: opts.stdio === 'inherit' ? 'inherit' : ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
  }
  const remote = [...m.tineHost.split(' ').filter(Boolean), ...hostArgs].map(shellQuote).join(' ');
  const stdio = opts.stdio ?? 'pipe';
  return spawn('ssh', [...sshBaseArgs(m, opts), '--', remote], { stdio: stdio === 'inherit' ? 'inherit' : ['pipe', 'pipe', 'pipe'] });
}

/** Run a plain shell command on the machine (setup only; never for role-agent machines). */
export function spawnRemoteShell(m: Machine, command: string): ChildProcess {
  return spawn('ssh', [...sshBaseArgs(m), '--', command], { stdio: ['pipe', 'pipe', 'pipe'] });
}

export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Turn ssh's own failure (exit 255, nothing from tine-host) into a TineError. */
export function sshFailure(m: Machine, stderr: string): TineError {
  const where = `${m.user}@${m.host}:${m.port}`;
  if (/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed|host key for .* has changed/i.test(stderr)) {
    return new TineError('HOST_KEY_CHANGED', EXIT.refused, `the host key of ${m.name} (${where}) does not match the one recorded (${m.knownHostKey}); refusing to connect`, {
      next: [
        { description: 'Check the new key with the machine\'s operator (out of band)' },
        { description: 'If the change is expected, record the new key', run: `tine machine remove ${m.name} && tine machine add ${m.name} --host ${m.host} --port ${m.port} --user ${m.user}` },
      ],
    });
  }
  if (/Permission denied/i.test(stderr)) {
    return new TineError('SSH_AUTH_FAILED', EXIT.refused, `${where} refused the SSH login: ${stderr.trim().split('\n').pop()}`, {
      next: [{ description: 'Check the key given with --key and the authorized_keys on the machine', run: `tine machine list` }],
    });
  }
  return new TineError('SSH_FAILED', EXIT.failure, `cannot reach ${m.name} (${where}): ${stderr.trim().split('\n').pop() || 'ssh failed'}`, {
    next: [{ description: 'Check that the machine is up and sshd listens', run: `ssh -p ${m.port} ${m.user}@${m.host} true` }],
  });
}

export interface ScannedKeys {
  lines: string;
  fingerprints: string[];
}

/** First contact: fetch the host's keys (ssh-keyscan) and their SHA256 fingerprints. */
export function scanHostKeys(host: string, port: number): ScannedKeys {
  const r = spawnSync('ssh-keyscan', ['-T', '5', '-p', String(port), host], { encoding: 'utf8', timeout: 15_000 });
  const lines = (r.stdout ?? '').split('\n').filter((l) => l && !l.startsWith('#')).sort().join('\n');
  if (!lines) {
    throw new TineError('SSH_FAILED', EXIT.failure, `no SSH host key from ${host}:${port} (${(r.stderr ?? '').trim().split('\n').pop() || 'no answer'})`, {
      next: [{ description: 'Check that sshd listens there', run: `ssh-keyscan -p ${port} ${host}` }],
    });
  }
  const fp = spawnSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', '-'], { input: lines + '\n', encoding: 'utf8' });
  const fingerprints = [...new Set((fp.stdout ?? '').split('\n').map((l) => l.split(' ')[1]).filter((x): x is string => Boolean(x)))].sort();
  return { lines: lines + '\n', fingerprints };
}

export function writeKnownHosts(name: string, lines: string, file = knownHostsFileFor(name)): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, lines, { mode: 0o600 });
  chmodSync(file, 0o600);
}

const knownHostsFileFor = (name: string) => knownHostsFile(name);

export function readKnownHosts(name: string): string | undefined {
  const f = knownHostsFile(name);
  return existsSync(f) ? readFileSync(f, 'utf8') : undefined;
}

/** Stop the shared master connection of a machine (tests, machine remove). */
export function closeMaster(m: Machine): void {
  spawnSync('ssh', ['-o', `ControlPath=${controlPath(m)}`, '-p', String(m.port), '-l', m.user, '-O', 'exit', m.host], { stdio: 'ignore', timeout: 10_000 });
}
