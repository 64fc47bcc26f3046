// The one place a Tinefile hook process is spawned. Today: a plain privilege drop to the
// sandbox user (Node's spawn with uid/gid; libuv drops supplementary groups). The sandbox
// feature swaps this function's body for the kernel sandbox; callers do not change.
import { spawn } from 'node:child_process';

export interface HookProcessSpec {
  /** The Tinefile to source (absolute). */
  tinefile: string;
  /** The function to call: up, down, info, prefork. */
  fn: string;
  /** Working directory: the Tinefile's directory. */
  cwd: string;
  /** The complete environment (nothing is inherited). */
  env: Record<string, string>;
  uid: number;
  gid: number;
  timeoutMs: number;
  /** The repository the hook belongs to (for the sandbox: what it may see). */
  repoPath: string;
}

export interface HookProcessResult {
  /** The function existed and was called (a missing function is skipped). */
  ran: boolean;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** stdout and stderr interleaved, the last 64 KiB. */
  output: string;
}

const OUTPUT_LIMIT = 64 * 1024;

// Sourced, then the function called if it exists. fd 3 tells the runner it was called,
// so a missing function is "skipped", not "succeeded".
const WRAPPER = 'source "$1" || exit; if declare -F "$2" >/dev/null; then echo ran >&3; exec 3>&-; "$2"; else exit 0; fi';

export function runHookProcess(spec: HookProcessSpec): Promise<HookProcessResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/bash', ['--noprofile', '--norc', '-c', WRAPPER, 'tinefile', spec.tinefile, spec.fn], {
      cwd: spec.cwd,
      env: spec.env,
      uid: spec.uid,
      gid: spec.gid,
      // Own process group: a timeout kills the hook and everything it started in the foreground.
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    });
    let output = '';
    let ran = false;
    let timedOut = false;
    const take = (d: Buffer) => {
      output += d.toString('utf8');
      if (output.length > OUTPUT_LIMIT) output = output.slice(-OUTPUT_LIMIT);
    };
    child.stdout!.on('data', take);
    child.stderr!.on('data', take);
    (child.stdio[3] as NodeJS.ReadableStream).on('data', () => (ran = true));
    const timer = setTimeout(() => {
      timedOut = true;
      try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ }
    }, spec.timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    // A hook may leave a background process holding stdout: its exit is what counts,
    // with a short grace for the last output.
    let done = false;
    const finish = (code: number | null, signal: NodeJS.Signals | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      for (const s of child.stdio) (s as { destroy?: () => void } | null)?.destroy?.();
      resolve({ ran, exitCode: code, signal, timedOut, output });
    };
    child.once('exit', (code, signal) => setTimeout(() => finish(code, signal), 200).unref());
    child.once('close', (code, signal) => finish(code, signal));
  });
}
