// The one place a Tinefile hook process is spawned: inside the repository's kernel sandbox
// (the same one as `repo exec`: its own mount, PID, IPC and UTS namespaces, Landlock,
// UID 7111 without groups or capabilities, no_new_privs). If the sandbox cannot be built
// the hook does not run (SANDBOX_FAILED): never unconfined.
import { runInSandbox } from '../sandbox/helper.js';
import type { HostConfig } from '../host/config.js';
import type { RepoRecord } from '../repo/registry.js';

export interface HookProcessSpec {
  /** The Tinefile to source (absolute). */
  tinefile: string;
  /** The function to call: up, down, info, prefork. */
  fn: string;
  /** Working directory: the Tinefile's directory. */
  cwd: string;
  /** The complete environment (nothing is inherited). */
  env: Record<string, string>;
  timeoutMs: number;
  /** The repository the hook belongs to: the sandbox shows it and nothing else. */
  repo: RepoRecord;
  config: HostConfig;
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

// cd to the Tinefile's directory, source it, call the function if it exists. A marker on
// stderr tells the runner it was called, so a missing function is "skipped", not "succeeded".
const RAN_MARKER = '\x1etine-hook-ran\n';
const WRAPPER = 'cd "$3" || exit; source "$1" || exit; if declare -F "$2" >/dev/null; then printf "\\036tine-hook-ran\\n" >&2; "$2"; else exit 0; fi';

export async function runHookProcess(spec: HookProcessSpec): Promise<HookProcessResult> {
  // Env-mode secrets reach the hook only through the sandbox's one door for them.
  const env: Record<string, string> = {};
  const hookSecrets: Record<string, string> = {};
  for (const [k, v] of Object.entries(spec.env)) (k.startsWith('TINE_SECRET_') ? hookSecrets : env)[k] = v;
  const { child, exit } = runInSandbox({ config: spec.config }, spec.repo,
    ['/bin/bash', '--noprofile', '--norc', '-c', WRAPPER, 'tinefile', spec.tinefile, spec.fn, spec.cwd],
    { stdio: ['ignore', 'pipe', 'pipe'], env, hookSecrets, forwardSignals: [] });
  let output = '';
  let ran = false;
  const take = (d: Buffer) => {
    let text = d.toString('utf8');
    if (text.includes(RAN_MARKER)) {
      ran = true;
      text = text.split(RAN_MARKER).join('');
    }
    output += text;
    if (output.length > OUTPUT_LIMIT) output = output.slice(-OUTPUT_LIMIT);
  };
  child.stdout!.on('data', take);
  child.stderr!.on('data', take);
  let timedOut = false;
  // Killing the helper takes its PID namespace, and so everything the hook started, with it.
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, spec.timeoutMs);
  try {
    const code = await exit;
    const signal = code > 128 && child.signalCode ? child.signalCode : null;
    return { ran, exitCode: signal ? null : code, signal, timedOut, output };
  } finally {
    clearTimeout(timer);
  }
}
