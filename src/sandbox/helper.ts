// runInSandbox: start a command inside one repository's kernel sandbox, through the
// helper executable `tine-sandbox` (binding.gyp target; see native/sandbox/tine-sandbox.c).
// Used by `repo exec`, `repo connect`, the SSH gateway, and (later) the Tinefile hooks.
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { HostConfig } from '../host/config.js';
import type { RepoRecord } from '../repo/registry.js';
import { hookEnv } from '../lifecycle/tinefile.js';
import { TineError, EXIT } from '../errors.js';
import { ensureRepoNetwork } from '../network/netns.js';

/** The helper's own codes (a shell's conventions): setup failed / cannot exec / not found. */
export const SANDBOX_EXIT = { setupFailed: 125, cannotExec: 126, notFound: 127 } as const;

let helperCache: string | undefined;

/** build/Release/tine-sandbox of this package (TINE_SANDBOX_HELPER overrides, root only sets it). */
export function helperPath(): string {
  if (helperCache) return helperCache;
  const override = process.env.TINE_SANDBOX_HELPER;
  if (override) return (helperCache = override);
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    for (const kind of ['Release', 'Debug']) {
      const p = join(dir, 'build', kind, 'tine-sandbox');
      if (existsSync(p)) return (helperCache = p);
    }
    dir = dirname(dir);
  }
  throw new TineError('SANDBOX_HELPER_MISSING', EXIT.unsupported, 'the sandbox helper build/Release/tine-sandbox is not built', {
    next: [{ description: 'Build the native parts', run: 'npx node-gyp rebuild' }],
  });
}

export const dockerSocketPath = (config: HostConfig, networkId: number) => join(config.runDir, `docker-${networkId}.sock`);

/**
 * The command's whole environment: an allow-list from the caller (terminal and locale),
 * the repository's variables (TINE_*, DOCKER_HOST of its own daemon), and `extra`.
 * No secret of any mode, ever: TINE_SECRET_* is dropped wherever it comes from.
 */
export function sandboxEnv(config: HostConfig, repo: RepoRecord, extra: Record<string, string> = {}, callerEnv: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const env: Record<string, string> = {};
  for (const k of ['TERM', 'LANG', 'LC_ALL', 'COLORTERM', 'TZ'] as const) {
    const v = callerEnv[k];
    if (v !== undefined && /^[\x20-\x7e]{0,256}$/.test(v)) env[k] = v;
  }
  Object.assign(env, hookEnv(repo, { ...(env.LANG ? { LANG: env.LANG } : {}), ...extra }));
  env.USER = env.LOGNAME = config.sandboxUser;
  env.SHELL = '/bin/sh';
  env.HOSTNAME = repo.ref;
  for (const k of Object.keys(env)) if (k.startsWith('TINE_SECRET_') || k.includes('=') || k.includes('\0')) delete env[k];
  return env;
}

export interface SandboxOptions {
  /** 'inherit' (default): the caller's stdin/stdout/stderr directly; or any spawn stdio for fds 0-2. */
  stdio?: 'inherit' | 'pipe' | [StdioOptions, StdioOptions, StdioOptions] | any[];
  /** Run the command on a new pty that the helper relays to its own stdin/stdout (connect). */
  pty?: boolean;
  /** Extra environment (e.g. Tinefile variables); TINE_SECRET_* is dropped. */
  env?: Record<string, string>;
  /** Only for the repo's own Tinefile hooks (the one place env-mode secrets may go):
   *  TINE_SECRET_<KEY> variables added after the filter. exec/connect/gateway never pass it. */
  hookSecrets?: Record<string, string>;
  /** Forward these signals received by this process to the sandbox (default: INT TERM HUP QUIT). */
  forwardSignals?: NodeJS.Signals[];
}

export interface SandboxRun {
  child: ChildProcess;
  /** Resolves with the command's exit code (128+n when killed by signal n); rejects with
   *  SANDBOX_FAILED (exit 1) when the sandbox could not be built: nothing ran then. */
  exit: Promise<number>;
}

/** The helper's whole command line and environment for one sandboxed command. */
export interface SandboxInvocation {
  path: string;
  args: string[];
  env: Record<string, string>;
}

/**
 * What runs `argv` inside `repo`'s sandbox: the helper, its arguments (status on fd 3) and
 * the command's environment. runInSandbox spawns it; `tine-host serve` hands it to the
 * `tine` launcher, which runs it itself (no Node start-up on the exec path).
 */
export function sandboxInvocation(ctx: { config: HostConfig }, repo: RepoRecord, argv: string[], opts: Pick<SandboxOptions, 'pty' | 'env' | 'hookSecrets'> = {}, callerEnv: NodeJS.ProcessEnv = process.env): SandboxInvocation {
  const { config } = ctx;
  if (argv.length === 0) throw new TineError('INVALID_INPUT', EXIT.usage, 'command: is empty', { field: 'command' });
  // The repository's own network namespace (made on first use, and again after a reboot);
  // if it cannot be made this throws NETWORK_SETUP_FAILED: never the host's network instead.
  const net = ensureRepoNetwork(config, repo.networkId);
  const args = [
    '--uid', String(config.sandboxUid), '--gid', String(config.sandboxUid),
    // HOST_NAME_MAX is 64; a ref may be up to 127 characters.
    '--hostname', repo.ref.slice(0, 64),
    '--repo', repo.path,
    '--docker-sock', dockerSocketPath(config, repo.networkId),
    '--netns', net.netnsFile,
    '--landlock', config.landlock,
    '--status-fd', '3',
    ...(opts.pty ? ['--pty'] : []),
    '--', ...argv,
  ];
  const env = sandboxEnv(config, repo, opts.env, callerEnv);
  for (const [k, v] of Object.entries(opts.hookSecrets ?? {})) {
    if (!/^TINE_SECRET_[A-Z][A-Z0-9_]*$/.test(k) || v.includes('\0')) throw new TineError('INVALID_INPUT', EXIT.usage, `hookSecrets: ${k} is not a TINE_SECRET_<KEY> variable`, { field: 'hookSecrets' });
    env[k] = v;
  }
  return { path: helperPath(), args, env };
}

/** The error of a sandbox whose helper reported a failed setup step (nothing ran). */
export function sandboxFailed(config: HostConfig, ref: string, status: string, helperExit: number | null): TineError {
  return new TineError('SANDBOX_FAILED', EXIT.failure, `sandbox of ${ref} not started: ${status.trim()}`, {
    next: config.landlock === 'required' && /Landlock/.test(status)
      ? [{ description: 'Run on a kernel with Landlock, or (operator only) set "landlock": "off" in the host config' }]
      : [{ description: 'Check the host (mount namespaces, /dev, the sandbox user), then retry', run: `tine repo exec ${ref} -- true` }],
    details: { helperExit },
  });
}

/**
 * Start `argv` inside `repo`'s sandbox. Every namespace, mount, Landlock and privilege step
 * happens in the helper, which aborts (nothing runs) when any fails.
 */
export function runInSandbox(ctx: { config: HostConfig }, repo: RepoRecord, argv: string[], opts: SandboxOptions = {}): SandboxRun {
  const { config } = ctx;
  const { path, args, env } = sandboxInvocation(ctx, repo, argv, opts);
  const std = opts.stdio ?? 'inherit';
  const stdio = (Array.isArray(std) ? [...std.slice(0, 3), 'pipe'] : [std, std, std, 'pipe']) as StdioOptions;
  const child = spawn(path, args, { stdio, env });
  const signals = opts.forwardSignals ?? ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'];
  const forward = (sig: NodeJS.Signals) => { child.kill(sig); };
  for (const s of signals) process.on(s, forward);
  let status = '';
  const statusPipe = child.stdio[3] as NodeJS.ReadableStream | null;
  statusPipe?.setEncoding('utf8');
  statusPipe?.on('data', (d: string) => { if (status.length < 4096) status += d; });
  const exit = new Promise<number>((resolve, reject) => {
    child.on('error', (err) => {
      for (const s of signals) process.off(s, forward);
      reject(new TineError('SANDBOX_FAILED', EXIT.failure, `cannot start the sandbox helper: ${err.message}`, { cause: err }));
    });
    child.on('close', (code, signal) => {
      for (const s of signals) process.off(s, forward);
      if (status) {
        reject(sandboxFailed(config, repo.ref, status, code));
        return;
      }
      resolve(code ?? 128 + (signal ? (constants.signals[signal] ?? 0) : 0));
    });
  });
  return { child, exit };
}
