// Small wrappers over host tools (mount, losetup, mkfs.btrfs, useradd, apt-get).
import { execFileSync, spawnSync } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { TineError, EXIT } from '../errors.js';

export function which(cmd: string): string | undefined {
  const paths = (process.env.PATH || '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter);
  for (const dir of [...paths, '/usr/sbin', '/sbin']) {
    const p = join(dir, cmd);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return undefined;
}

/** Run a host tool; on failure throw a TineError carrying its stderr. */
export function run(cmd: string, args: string[], opts: { input?: string } = {}): string {
  const res = spawnSync(cmd, args, { encoding: 'utf8', input: opts.input, stdio: ['pipe', 'pipe', 'pipe'] });
  if (res.error) {
    throw new TineError('HOST_TOOL_FAILED', EXIT.failure, `${cmd}: ${res.error.message}`, { cause: res.error });
  }
  if (res.status !== 0) {
    const detail = (res.stderr || res.stdout || '').trim().split('\n').slice(-3).join(' | ');
    throw new TineError('HOST_TOOL_FAILED', EXIT.failure, `${cmd} ${args.join(' ')} failed (exit ${res.status}): ${detail}`);
  }
  return res.stdout;
}

/** Install Debian packages whose commands are missing (setup only). */
export function ensureCommands(needed: { command: string; pkg: string }[]): string[] {
  const missing = needed.filter((n) => !which(n.command));
  if (!missing.length) return [];
  const pkgs = [...new Set(missing.map((m) => m.pkg))];
  if (!which('apt-get')) {
    throw new TineError('HOST_UNSUPPORTED', EXIT.unsupported, `missing ${missing.map((m) => m.command).join(', ')} and no apt-get to install them`, {
      next: [{ description: `Install ${pkgs.join(' ')} with the host's package manager, then run setup again`, run: 'tine setup' }],
    });
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'ignore', env });
  execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...pkgs], { stdio: 'ignore', env });
  return pkgs;
}

/** Mount points from /proc/self/mountinfo (with the octal escapes undone). */
export function mountPoints(): Map<string, { fstype: string; source: string }> {
  const out = new Map<string, { fstype: string; source: string }>();
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (!line) continue;
    const [left, right] = line.split(' - ');
    const mountPoint = unescape(left!.split(' ')[4]!);
    const [fstype, source] = right!.split(' ');
    out.set(mountPoint, { fstype: fstype!, source: unescape(source!) });
  }
  return out;
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}
