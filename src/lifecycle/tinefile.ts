// Tinefiles: bash files at the repository root and in first-level subdirectories, sourced,
// with optional functions up, down, info, prefork. `up` runs root first then
// subdirectories A→Z; `down` runs in reverse, best effort.
import { readdirSync, lstatSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { HostConfig } from '../host/config.js';
import type { RepoRecord } from '../repo/registry.js';
import { runHookProcess, type HookProcessResult } from './hook-runner.js';
import { TineError, EXIT, type NextStep } from '../errors.js';

export type HookName = 'up' | 'down' | 'info' | 'prefork';

export const HOOK_TIMEOUT_MS: Record<HookName, number> = {
  up: 300_000,
  down: 120_000,
  info: 30_000,
  prefork: 30_000,
};

/** Tinefiles in `up` order: the root's first, then first-level subdirectories A→Z. */
export function findTinefiles(repoPath: string): string[] {
  const out: string[] = [];
  const isFile = (p: string) => {
    try {
      return lstatSync(p).isFile(); // a symlink is not followed out of the repository
    } catch {
      return false;
    }
  };
  if (isFile(join(repoPath, 'Tinefile'))) out.push(join(repoPath, 'Tinefile'));
  let entries: string[] = [];
  try {
    entries = readdirSync(repoPath, { withFileTypes: true })
      .filter((d) => d.isDirectory() && d.name !== '.tine')
      .map((d) => d.name)
      .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  } catch {
    /* unreadable root: no subdirectory Tinefiles */
  }
  for (const name of entries) {
    const f = join(repoPath, name, 'Tinefile');
    if (isFile(f)) out.push(f);
  }
  return out;
}

/** The Tinefile environment of the contract; secrets come in through `extra`, never argv. */
export function hookEnv(repo: RepoRecord, extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    LANG: 'C.UTF-8',
    HOME: repo.path,
    ...extra,
    TINE_REPO: repo.ref,
    TINE_REPO_NAME: repo.name,
    TINE_REPO_TAG: repo.tag ?? '',
    TINE_REPO_GUID: repo.guid,
    TINE_PARENT_GUID: repo.parentGuid ?? '',
    TINE_GRAND_GUID: repo.grandGuid,
    TINE_IS_FORK: repo.parentGuid === null ? '0' : '1',
    TINE_NETWORK_ID: String(repo.networkId),
    TINE_REPO_PATH: repo.path,
    TINE_IP: repo.ip,
    DOCKER_HOST: repo.dockerHost,
  };
}

export interface HookOutcome extends HookProcessResult {
  tinefile: string;
  fn: HookName;
}

export async function runHook(config: HostConfig, repo: RepoRecord, tinefile: string, fn: HookName, extraEnv: Record<string, string>): Promise<HookOutcome> {
  const cwd = tinefile.slice(0, tinefile.lastIndexOf('/')) || '/';
  const r = await runHookProcess({
    tinefile, fn, cwd,
    env: hookEnv(repo, extraEnv),
    timeoutMs: HOOK_TIMEOUT_MS[fn],
    repo,
    config,
  });
  return { ...r, tinefile, fn };
}

export const hookFailed = (o: HookOutcome) => o.timedOut || o.exitCode !== 0;

/** The error for a failed hook: its output, exit code and what to do next. */
export function hookError(repo: RepoRecord, o: HookOutcome, next: NextStep[]): TineError {
  const where = relative(repo.path, o.tinefile) || 'Tinefile';
  const how = o.timedOut ? `timed out after ${HOOK_TIMEOUT_MS[o.fn] / 1000}s` : o.signal ? `was killed by ${o.signal}` : `exited ${o.exitCode}`;
  const syntax = !o.ran && /syntax error/.test(o.output);
  const tail = o.output.trim().split('\n').slice(-20).join('\n');
  return new TineError('TINEFILE_HOOK_FAILED', EXIT.failure,
    `${where}: ${syntax ? 'could not be sourced (syntax error)' : `${o.fn} ${how}`}${tail ? `:\n${tail}` : ''}`, {
      details: { tinefile: o.tinefile, hook: o.fn, exitCode: o.exitCode, signal: o.signal, timedOut: o.timedOut, output: o.output },
      next,
    });
}
