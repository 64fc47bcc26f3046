// Who is calling: walk the process tree from this process up (at most 64 levels, stopping
// at pid 1 or an unreadable entry) and look for agent signals in the current environment
// and in every ancestor's exec-time environment. The highest ancestor carrying a signal is
// the boundary; only its exec-time environment can hold an override the user set.
import { statSync } from 'node:fs';
import { findSignal, OVERRIDE_VAR, type AgentSignal } from './signals.js';
import { parseOverride, sameOverride, formatOverride, type Override } from './override.js';
import type { ProcReader } from './proc.js';

export const MAX_LEVELS = 64;

export interface ProcNode {
  /** null for the current (in-memory) environment of this process. */
  pid: number | null;
  comm: string;
  env: Record<string, string | undefined>;
}

export interface IgnoredOverride {
  where: string;
  value: string;
  why: 'set-by-agent' | 'unverifiable';
}

export interface Detection {
  kind: 'human' | 'agent';
  /** Why, for people and the audit log: "CLAUDECODE=1 in pid 4242 (bash)". */
  reason: string;
  signal?: { name: string; value: string; setBy: string; where: string };
  /** The highest process carrying a signal (pid null: only the current env carries one). */
  boundary?: { pid: number | null; comm: string };
  /** The override the user set at the boundary, when it can be verified. */
  override: Override | null;
  /** False when the boundary's origin can't be verified (no /proc, an unreadable ancestor
   *  or the 64-level cap): then no override is accepted at all. */
  overrideVerifiable: boolean;
  /** Overrides seen below the boundary (or unverifiable ones) that were not accepted. */
  ignoredOverrides: IgnoredOverride[];
  /** How far the walk got, and why it stopped. */
  walk: { levels: number; stoppedBy: 'init' | 'unreadable' | 'max-levels'; error?: string };
}

const describe = (n: ProcNode) => (n.pid === null ? 'the current environment' : `pid ${n.pid} (${n.comm})`);

/** Read the chain: current env first, then this process's exec-time env, then ancestors. */
export function readChain(reader: ProcReader, self: { pid: number; env: NodeJS.ProcessEnv }): { nodes: ProcNode[]; walk: Detection['walk'] } {
  const nodes: ProcNode[] = [{ pid: null, comm: 'current environment', env: self.env }];
  let pid = self.pid;
  for (let level = 0; level < MAX_LEVELS; level++) {
    let stat: { ppid: number; comm: string };
    let env: Record<string, string>;
    try {
      stat = reader.stat(pid);
      env = reader.environ(pid);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      // Init is the top: its environment may be closed even to root (no CAP_SYS_PTRACE).
      if (pid === 1 && level > 0) return { nodes, walk: { levels: level, stoppedBy: 'init' } };
      return { nodes, walk: { levels: level, stoppedBy: 'unreadable', error: `${reader.procRoot}/${pid}: ${e.code ?? e.message}` } };
    }
    nodes.push({ pid, comm: stat.comm, env });
    if (pid <= 1 || stat.ppid <= 0) return { nodes, walk: { levels: level + 1, stoppedBy: 'init' } };
    pid = stat.ppid;
  }
  return { nodes, walk: { levels: MAX_LEVELS, stoppedBy: 'max-levels' } };
}

/** Decide from a read chain (pure: tests feed it real chains). */
export function detectFromChain(nodes: ProcNode[], walk: Detection['walk']): Detection {
  let boundaryIndex = -1;
  for (let i = nodes.length - 1; i >= 0; i--) {
    if (findSignal(nodes[i]!.env)) {
      boundaryIndex = i;
      break;
    }
  }
  if (boundaryIndex < 0 && walk.stoppedBy === 'max-levels') {
    // Fail closed: nesting deeper than the walk could be an agent hiding its ancestry.
    return {
      kind: 'agent',
      reason: `the process tree is deeper than ${MAX_LEVELS} levels, so an agent above cannot be ruled out`,
      override: null,
      overrideVerifiable: false,
      ignoredOverrides: [],
      walk,
    };
  }
  if (boundaryIndex < 0) {
    return { kind: 'human', reason: 'no agent signal in this process or its ancestors', override: null, overrideVerifiable: true, ignoredOverrides: [], walk };
  }
  const boundary = nodes[boundaryIndex]!;
  const found = findSignal(boundary.env)!;
  const signal = { name: found.signal.name, value: found.value, setBy: (found.signal as AgentSignal).setBy, where: describe(boundary) };
  // The override counts only from an exec-time environment the walk could trace to the top:
  // not from the in-memory env, not when /proc was unreadable or the walk was cut short
  // (a higher agent could sit above the gap).
  const verifiable = boundary.pid !== null && walk.stoppedBy === 'init';
  const atBoundary = parseOverride(boundary.env[OVERRIDE_VAR]);
  const override = verifiable ? atBoundary : null;
  const ignoredOverrides: IgnoredOverride[] = [];
  for (let i = 0; i <= boundaryIndex; i++) {
    const n = nodes[i]!;
    const raw = n.env[OVERRIDE_VAR];
    const parsed = parseOverride(raw);
    if (!parsed) continue;
    if (!verifiable) ignoredOverrides.push({ where: describe(n), value: raw!, why: 'unverifiable' });
    else if (i < boundaryIndex && !sameOverride(parsed, atBoundary)) ignoredOverrides.push({ where: describe(n), value: raw!, why: 'set-by-agent' });
  }
  const reason = `${signal.name}=${signal.value} in ${signal.where}, set by ${signal.setBy}` + (override ? `; ${OVERRIDE_VAR}=${formatOverride(override)} set by the user` : '');
  return {
    kind: 'agent',
    reason,
    signal,
    boundary: { pid: boundary.pid, comm: boundary.comm },
    override,
    overrideVerifiable: verifiable,
    ignoredOverrides,
    walk,
  };
}

export function detect(reader: ProcReader, self: { pid: number; env: NodeJS.ProcessEnv } = { pid: process.pid, env: process.env }): Detection {
  const { nodes, walk } = readChain(reader, self);
  return detectFromChain(nodes, walk);
}

/** Raise a detection to agent for a role given outside the process tree (`--role agent`,
 *  a client's verdict). Such a role has no verifiable boundary: no override is accepted. */
export function withAgentRole(d: Detection, source: string, env: NodeJS.ProcessEnv = process.env): Detection {
  if (d.kind === 'agent') return d;
  const raw = env[OVERRIDE_VAR];
  const ignoredOverrides: IgnoredOverride[] = parseOverride(raw) ? [{ where: 'the current environment', value: raw!, why: 'unverifiable' }] : [];
  return { ...d, kind: 'agent', reason: `role agent (${source})`, override: null, overrideVerifiable: false, boundary: undefined, ignoredOverrides };
}

let cached: Detection | undefined;

/** The detection of this process, computed once. */
export function processDetection(reader: () => ProcReader): Detection {
  cached ??= detect(reader());
  return cached;
}

export function setProcessDetection(d: Detection): void {
  cached = d;
}

/**
 * The guard's /proc root from the host config. Anything but /proc is honoured only from a
 * config file that root owns and no one else may write, so an agent pointing
 * TINE_HOST_CONFIG at its own file cannot blind the guard.
 */
export function trustedProcRoot(config: { procRoot?: string; configPath: string; configExists: boolean }): string {
  const wanted = config.procRoot ?? '/proc';
  if (wanted === '/proc' || !config.configExists) return '/proc';
  try {
    const st = statSync(config.configPath);
    if (st.uid === 0 && (st.mode & 0o022) === 0) return wanted;
  } catch {
    /* fall through */
  }
  return '/proc';
}
