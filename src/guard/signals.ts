// The one table of agent signals: environment variables that coding agents set in the
// processes they start. A process is an agent when it, or any ancestor's exec-time
// environment, carries one of these with a matching value.

export type SignalMatch = { kind: 'equals'; value: string } | { kind: 'non-empty' };

export interface AgentSignal {
  name: string;
  match: SignalMatch;
  /** Who sets it (for the user-facing reason and the docs). */
  setBy: string;
}

const one: SignalMatch = { kind: 'equals', value: '1' };
const nonEmpty: SignalMatch = { kind: 'non-empty' };

export const AGENT_SIGNALS: readonly AgentSignal[] = [
  { name: 'TINE_AGENT', match: one, setBy: 'any agent or wrapper that wants tine to treat it as an agent' },
  // CLAUDECODE=true (or anything but exactly 1) is not a signal: Claude Code sets 1.
  { name: 'CLAUDECODE', match: one, setBy: 'Claude Code' },
  { name: 'GEMINI_CLI', match: one, setBy: 'Gemini CLI' },
  { name: 'COPILOT_CLI', match: one, setBy: 'GitHub Copilot CLI' },
  { name: 'CURSOR_TRACE_ID', match: nonEmpty, setBy: 'Cursor' },
  { name: 'CODEX_THREAD_ID', match: nonEmpty, setBy: 'OpenAI Codex CLI' },
  { name: 'CODEX_SANDBOX', match: nonEmpty, setBy: 'OpenAI Codex CLI (sandboxed commands)' },
  { name: 'CLINE_ACTIVE', match: nonEmpty, setBy: 'Cline' },
  // Set by the SSH forced command of a key installed for role agent: the host holds that
  // session to the agent policy whatever the client claims.
  { name: 'TINE_ROLE', match: { kind: 'equals', value: 'agent' }, setBy: 'the SSH forced command of an agent-role key' },
];

/** The variable through which the user, before starting the agent, allows grands. */
export const OVERRIDE_VAR = 'TINE_ALLOW_GRAND_REPO';

export function signalMatches(signal: AgentSignal, value: string | undefined): boolean {
  if (value === undefined) return false;
  return signal.match.kind === 'equals' ? value === signal.match.value : value.length > 0;
}

/** The first signal an environment carries, in table order. */
export function findSignal(env: Readonly<Record<string, string | undefined>>): { signal: AgentSignal; value: string } | undefined {
  for (const signal of AGENT_SIGNALS) {
    const value = Object.prototype.hasOwnProperty.call(env, signal.name) ? env[signal.name] : undefined;
    if (signalMatches(signal, value)) return { signal, value: value! };
  }
  return undefined;
}
