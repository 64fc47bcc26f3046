// Human output: the live step timeline and short summaries. JSON output never comes here.
import type { RepoRecord } from '../repo/registry.js';
import type { StepRecord } from '../ops/timeline.js';
import type { SetupResult } from '../host/setup.js';
import type { Envelope } from '../commands/execute.js';

const color = (code: number, s: string, on: boolean) => (on ? `\x1b[${code}m${s}\x1b[0m` : s);

export function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`;
}

export function renderStep(step: StepRecord, tty: boolean): string {
  const label = step.label.length > 48 ? step.label.slice(0, 47) + '…' : step.label;
  return `  ${color(32, '✓', tty)} ${label.padEnd(50, ' ')}${formatMs(step.ms).padStart(10)}`;
}

export function renderTotal(ms: number, tty: boolean): string {
  return `  ${color(1, 'Total'.padEnd(52, ' '), tty)}${formatMs(ms).padStart(10)}`;
}

export function renderRecord(r: RepoRecord & { addresses?: string[]; confinement?: Record<string, string> }): string {
  const rows: [string, string | number | null][] = [
    ['ref', r.ref],
    ['kind', r.parentGuid ? `fork (consistency: ${r.consistency})` : 'grand'],
    ['guid', r.guid],
    ['parent', r.parentGuid],
    ['grand', r.grandGuid],
    ['network id', r.networkId],
    ['ip', r.ip],
    ['addresses', r.addresses ? r.addresses.join(' ') : null],
    ['confinement', r.confinement ? Object.entries(r.confinement).map(([k, v]) => `${k}: ${v}`).join(', ') : null],
    ['path', r.path],
    ['docker', r.dockerHost],
    ['state', r.state],
    ['created', r.createdAt],
  ];
  return rows.filter(([, v]) => v !== null).map(([k, v]) => `${k.padEnd(11)} ${v}`).join('\n');
}

export function renderList(repos: RepoRecord[]): string {
  if (!repos.length) return 'No repositories yet. Create one: tine repo create <name> [--from DIR]';
  const head = ['REF', 'KIND', 'STATE', 'NET', 'IP', 'GUID'];
  const rows = repos.map((r) => [r.ref, r.parentGuid ? 'fork' : 'grand', r.state, String(r.networkId), r.ip, r.guid]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  return [head, ...rows].map((row) => row.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

export function renderSetup(d: SetupResult): string {
  const lines = [
    `datastore   ${d.datastore}${d.embedded ? ` (embedded pool ${d.poolFile})` : ''}`,
    `state       ${d.stateDb}`,
    `run dir     ${d.runDir}`,
    `sandbox     ${d.sandboxUser} (uid/gid ${d.sandboxUid})`,
    `config      ${d.configPath}`,
    d.changed.length ? `changed     ${d.changed.join('; ')}` : 'changed     nothing (already set up)',
  ];
  return lines.join('\n');
}

export function renderError(env: Envelope, tty: boolean): string {
  const e = env.error!;
  const lines = [`${color(31, 'error', tty)} [${e.code}] ${e.message}`];
  for (const n of e.next ?? []) lines.push(`  → ${n.description}${n.run ? `:  ${color(1, n.run, tty)}` : ''}`);
  return lines.join('\n');
}
