// `tine-host serve` for one test host, and the launcher (build/Release/tine-launch) under
// the names `tine` and `tine-host` in a directory of the test.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { distRoot, tineHostBin, type TestHost } from './host.js';

export const launcherPath = join(dirname(distRoot), 'build', 'Release', 'tine-launch');

export interface Serve {
  child: ChildProcess;
  socket: string;
  /** What serve logged so far (one line per request). */
  log(): string;
  stop(): Promise<void>;
}

function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect(path);
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
}

/** Start serve for this host and wait (bounded: 15 s) until its socket answers. */
export async function startServe(host: Pick<TestHost, 'env' | 'runDir'>): Promise<Serve> {
  const socket = join(host.runDir, 'host.sock');
  const child = spawn(process.execPath, [tineHostBin, 'serve'], { env: host.env, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => (log += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(t);
    }
  };
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null) break;
    if (existsSync(socket) && (await canConnect(socket))) return { child, socket, log: () => log, stop };
    await new Promise((r) => setTimeout(r, 50));
  }
  await stop();
  throw new Error(`tine-host serve did not come up: ${log}`);
}

/** A directory with `tine` and `tine-host` linked to the launcher. */
export function launcherDir(): { dir: string; tine: string; tineHost: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'tine-launch-'));
  symlinkSync(launcherPath, join(dir, 'tine'));
  symlinkSync(launcherPath, join(dir, 'tine-host'));
  return { dir, tine: join(dir, 'tine'), tineHost: join(dir, 'tine-host'), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
