// A complete, throw-away tine host for one test file: its own loop-mounted btrfs
// datastore, state dir, run dir and host config (TINE_HOST_CONFIG), set up by the real
// `tine-host setup`. Run commands as real processes with `host.run([...])`.
import { spawnSync, spawn, type SpawnSyncReturns } from 'node:child_process';
import { mkdirSync, writeFileSync, openSync, closeSync, readFileSync, unlinkSync } from 'node:fs';
import { removeInstallNetwork } from '../../src/network/netns.js';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeLoopFs, type LoopFs } from './loopfs.js';

const here = dirname(fileURLToPath(import.meta.url));
/** dist/ root of the compiled tree. */
export const distRoot = join(here, '..', '..');
export const tineHostBin = join(distRoot, 'src', 'bin', 'tine-host.js');
export const tineBin = join(distRoot, 'src', 'bin', 'tine.js');

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The JSON envelope, when stdout held one. */
  json: any;
}

export interface TestHost {
  fs: LoopFs;
  dir: string;
  configPath: string;
  datastore: string;
  stateDir: string;
  runDir: string;
  /** This host's repository address block: one of TEST_BLOCKS, held by a lock file until cleanup. */
  addressBlock: string;
  env: NodeJS.ProcessEnv;
  /** Run `tine-host ARGS -o json` (or `tine` with bin: 'tine'). */
  run(args: string[], opts?: { env?: NodeJS.ProcessEnv; input?: string; bin?: 'tine' | 'tine-host'; timeoutMs?: number }): RunResult;
  /** The same, asynchronously (for concurrent or long-running commands). */
  runAsync(args: string[], opts?: { env?: NodeJS.ProcessEnv; input?: string; bin?: 'tine' | 'tine-host'; timeoutMs?: number }): Promise<RunResult>;
  cleanup(): void;
}

function toResult(r: Pick<SpawnSyncReturns<string>, 'status' | 'signal' | 'stdout' | 'stderr'>): RunResult {
  let json: unknown;
  try {
    json = JSON.parse(r.stdout.trim().split('\n').pop() ?? '');
  } catch {
    json = undefined;
  }
  return { code: r.status, signal: r.signal as NodeJS.Signals | null, stdout: r.stdout, stderr: r.stderr, json };
}

/** Address blocks for test hosts: eight /13s of 10.64.0.0/10, never the default block of a
 *  real install (100.64.0.0/10); one per concurrent test host (ava runs files in parallel). */
const TEST_BLOCKS = Array.from({ length: 8 }, (_, i) => `10.${64 + 8 * i}.0.0/13`);
const blockLock = (i: number) => `/tmp/tine-test-address-block-${i}.lock`;

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Take a free block (O_EXCL lock file holding our pid; a dead holder's lock is taken over). */
function allocateAddressBlock(): { block: string; release: () => void } {
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < TEST_BLOCKS.length; i++) {
      try {
        const fd = openSync(blockLock(i), 'wx', 0o600);
        writeFileSync(fd, String(process.pid));
        closeSync(fd);
        return { block: TEST_BLOCKS[i]!, release: () => { try { unlinkSync(blockLock(i)); } catch { /* gone */ } } };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        if (round === 1) continue;
        let holder = 0;
        try { holder = Number.parseInt(readFileSync(blockLock(i), 'utf8'), 10); } catch { /* being written */ }
        if (holder > 0 && !pidAlive(holder)) { try { unlinkSync(blockLock(i)); } catch { /* raced */ } }
      }
    }
  }
  throw new Error(`all ${TEST_BLOCKS.length} test address blocks are in use (${TEST_BLOCKS.map((_, i) => blockLock(i)).join(', ')})`);
}

export function makeTestHost(opts: { size?: string; setup?: boolean } = {}): TestHost {
  const fs = makeLoopFs({ size: opts.size ?? '3G' });
  const dir = fs.dir;
  const datastore = join(fs.mountpoint, 'tine');
  const stateDir = join(dir, 'state');
  const runDir = join(dir, 'run');
  mkdirSync(datastore, { recursive: true });
  const configPath = join(dir, 'host.json');
  // pool: null — the datastore is a btrfs this test made (the embedded pool has its own test).
  // Repo keys go to a file of the test, never to root's own authorized_keys.
  const { block: addressBlock, release: releaseBlock } = allocateAddressBlock();
  writeFileSync(configPath, JSON.stringify({ datastore, pool: null, stateDir, runDir, authorizedKeysFile: join(dir, 'authorized_keys'), addressBlock }));
  const env: NodeJS.ProcessEnv = { ...process.env, TINE_HOST_CONFIG: configPath };
  // A test must not inherit the agent signals of whoever runs the suite.
  for (const k of ['TINE_AGENT', 'CLAUDECODE', 'GEMINI_CLI', 'COPILOT_CLI', 'CURSOR_TRACE_ID', 'CODEX_THREAD_ID', 'CODEX_SANDBOX', 'CLINE_ACTIVE', 'TINE_ALLOW_GRAND_REPO']) delete env[k];
  const argvFor = (args: string[], bin: 'tine' | 'tine-host' = 'tine-host') => [bin === 'tine' ? tineBin : tineHostBin, ...args, ...(args.includes('-o') ? [] : ['-o', 'json'])];
  const host: TestHost = {
    fs, dir, configPath, datastore, stateDir, runDir, addressBlock, env,
    run(args, o = {}) {
      const r = spawnSync(process.execPath, argvFor(args, o.bin), {
        env: { ...env, ...o.env }, input: o.input ?? '', encoding: 'utf8', timeout: o.timeoutMs ?? 120_000,
      });
      return toResult(r);
    },
    runAsync(args, o = {}) {
      return new Promise((resolve) => {
        const child = spawn(process.execPath, argvFor(args, o.bin), { env: { ...env, ...o.env }, stdio: ['pipe', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => (stdout += d));
        child.stderr.on('data', (d) => (stderr += d));
        const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 120_000);
        child.on('close', (status, signal) => {
          clearTimeout(timer);
          resolve(toResult({ status, signal, stdout, stderr }));
        });
        child.stdin.on('error', () => undefined); // EPIPE when it exits before reading
        child.stdin.end(o.input ?? '');
      });
    },
    cleanup() {
      // Namespaces, veths and the nft table of this install (processes in them are gone by now).
      try {
        removeInstallNetwork({ runDir, addressBlock });
      } finally {
        releaseBlock();
        fs.cleanup();
      }
    },
  };
  if (opts.setup !== false) {
    const r = host.run(['setup']);
    if (r.code !== 0) {
      host.cleanup();
      throw new Error(`test host setup failed (${r.code}): ${r.stdout}${r.stderr}`);
    }
  }
  return host;
}
