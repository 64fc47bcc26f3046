// What every operation receives: the host config, state, store driver, the step timeline,
// who is calling, and how to ask the caller a question (only on a terminal).
import type { LoadedHostConfig } from '../host/config.js';
import type { Db } from '../state/db.js';
import type { StoreDriver } from '../store/driver.js';
import type { Timeline } from './timeline.js';

export type ActorKind = 'human' | 'agent';

export interface Actor {
  kind: ActorKind;
  /** Why: which signal (e.g. "CLAUDECODE=1 in pid 4242") or role decided it. */
  reason: string;
  /** The calling process, when it is not this one (tine-host serve): for the audit record. */
  pid?: number;
}

export interface Caller {
  /** A person can answer a question here (stdin and stdout are a terminal). */
  interactive: boolean;
  confirm(question: string): Promise<boolean>;
}

export interface OpContext {
  config: LoadedHostConfig;
  db: Db;
  store: StoreDriver;
  timeline: Timeline;
  actor: Actor;
  caller: Caller;
}

export const nonInteractive: Caller = {
  interactive: false,
  confirm: async () => false,
};
