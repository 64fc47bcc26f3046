// An offline Docker image for tests: a rootfs of the host's static busybox plus applet
// symlinks, tarred, and `docker import`ed. No registry is needed (none is reachable).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, copyFileSync, symlinkSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const BUSYBOX_APPLETS = ['sh', 'httpd', 'nc', 'cat', 'echo', 'sleep', 'ls', 'mkdir', 'mv', 'rm', 'printf', 'date', 'env', 'expr', 'seq', 'true', 'false', 'chmod', 'test'];

/** Write a busybox rootfs tarball to `tarPath` (readable by everyone). */
export function writeBusyboxTar(tarPath: string, busybox = '/bin/busybox'): void {
  const dir = mkdtempSync(join(tmpdir(), 'tine-bb-'));
  try {
    const root = join(dir, 'rootfs');
    mkdirSync(join(root, 'bin'), { recursive: true });
    mkdirSync(join(root, 'tmp'), { recursive: true });
    copyFileSync(busybox, join(root, 'bin', 'busybox'));
    chmodSync(join(root, 'bin', 'busybox'), 0o755);
    for (const a of BUSYBOX_APPLETS) symlinkSync('busybox', join(root, 'bin', a));
    execFileSync('tar', ['-C', root, '-cf', tarPath, '.']);
    chmodSync(tarPath, 0o644);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Import a busybox image as `tag` into the daemon at `dockerHost` (unix://…). */
export function importBusyboxImage(dockerHost: string, tag = 'tine-busybox:latest'): void {
  const dir = mkdtempSync(join(tmpdir(), 'tine-bb-'));
  try {
    const tar = join(dir, 'busybox.tar');
    writeBusyboxTar(tar);
    execFileSync('docker', ['import', tar, tag], { env: { ...process.env, DOCKER_HOST: dockerHost }, stdio: ['ignore', 'pipe', 'pipe'] });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
