// The one pipeline every command goes through, whoever calls: validate the input (exit 2,
// field named, nothing written), attach the host, repair what a crash left, ask the guard,
// run the operation, and wrap the outcome in the contract's envelope.
import type { z } from 'zod/v3';
import { loadHostConfig, type LoadedHostConfig } from '../host/config.js';
import { attachDatastore } from '../host/datastore.js';
import { openDb, type Db } from '../state/db.js';
import { BtrfsSubvolumeDriver } from '../store/btrfs.js';
import type { StoreDriver } from '../store/driver.js';
import { Timeline, type StepListener, type StepRecord } from '../ops/timeline.js';
import type { Actor, Caller, OpContext } from '../ops/context.js';
import { repairDeadIntents } from '../repo/intents.js';
import { repairLifecycle } from '../lifecycle/operations.js';
import { findCommand } from './registry.js';
import type { CommandSpec } from './spec.js';
import { TineError, EXIT, toTineError, unsupported, type NextStep } from '../errors.js';
import { authorize } from '../guard/authorize.js';

export interface Envelope {
  ok: boolean;
  command: string;
  data?: unknown;
  error?: { code: string; message: string; field?: string; next?: NextStep[]; details?: Record<string, unknown> };
  steps?: StepRecord[];
  ms?: number;
  warnings?: string[];
}

export interface ExecuteOptions {
  actor: Actor;
  caller: Caller;
  onStep?: StepListener;
  /** Plan instead of run (passthrough commands with a `plan`): the whole pipeline up to and
   *  including the guard and its audit record, then the invocation instead of the process. */
  plan?: { callerEnv: Record<string, string> };
}

export interface ExecuteResult {
  envelope: Envelope;
  exitCode: number;
}

class HostContext implements OpContext {
  private _db?: Db;
  private _store?: StoreDriver;
  constructor(
    readonly config: LoadedHostConfig,
    readonly timeline: Timeline,
    readonly actor: Actor,
    readonly caller: Caller,
  ) {}
  get db(): Db {
    this._db ??= openDb(this.config);
    return this._db;
  }
  get store(): StoreDriver {
    this._store ??= new BtrfsSubvolumeDriver();
    return this._store;
  }
  close(): void {
    this._db?.close();
  }
}

/** Validate raw input against a command's schema; the first problem names its field. */
export function validateInput<I>(spec: CommandSpec<I>, raw: unknown): I {
  const parsed = (spec.input as z.ZodType<I, z.ZodTypeDef, unknown>).safeParse(raw ?? {});
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  let field = issue.path.map(String).join('.');
  let message = issue.message;
  if (issue.code === 'unrecognized_keys') {
    field = (issue as { keys: string[] }).keys[0] ?? field;
    message = 'is not an option of this command';
  }
  throw new TineError('INVALID_INPUT', EXIT.usage, `${field || 'input'}: ${message}`, {
    field: field || undefined,
    next: [{ description: 'See the command\'s usage', run: `tine ${spec.name} --help` }],
  });
}

export async function execute(name: string, raw: unknown, opts: ExecuteOptions): Promise<ExecuteResult> {
  const timeline = new Timeline(opts.onStep);
  let ctx: HostContext | undefined;
  const warnings: string[] = [];
  try {
    const spec = findCommand(name);
    if (!spec) throw new TineError('USAGE', EXIT.usage, `unknown command "${name}"`, { next: [{ description: 'List the commands', run: 'tine --help' }] });
    const input = validateInput(spec, raw);
    const config = loadHostConfig();
    ctx = new HostContext(config, timeline, opts.actor, opts.caller);
    if (spec.needsHost) {
      if (process.platform !== 'linux') throw unsupported(`tine-host needs Linux with btrfs; this is ${process.platform}`);
      if (process.getuid?.() !== 0) {
        throw unsupported('tine-host needs root (it manages subvolumes and sandboxes)', [{ description: 'Run it through sudo', run: `sudo tine ${name}` }]);
      }
      const { attached } = attachDatastore(config);
      if (attached) timeline.record('reattach', `Re-attached pool ${config.pool?.file} at ${config.datastore}`, 0);
      // Orphan daemons first: a rollback must not destroy a subvolume a daemon still uses.
      for (const r of await repairLifecycle(ctx)) {
        warnings.push(`repaired an interrupted lifecycle operation of ${r.ref ?? `network id ${r.networkId}`}: ${r.outcome.replace(/_/g, ' ')}`);
      }
      for (const r of await repairDeadIntents(ctx.db, ctx.store, ctx.config)) {
        warnings.push(`repaired an interrupted ${r.op} of ${r.repoGuid}: ${r.outcome.replace('_', ' ')}`);
      }
    }
    await authorize(ctx, spec, input);
    if (opts.plan && !spec.plan) throw new TineError('NO_PLAN', EXIT.usage, `${name} cannot be planned`);
    const data = opts.plan ? await spec.plan!(ctx, input, opts.plan.callerEnv) : await spec.run(ctx, input);
    return { envelope: { ok: true, command: name, data, steps: timeline.steps, ms: timeline.elapsed(), ...(warnings.length ? { warnings } : {}) }, exitCode: EXIT.ok };
  } catch (err) {
    const e = toTineError(err);
    return {
      envelope: { ok: false, command: name, error: e.toJSON() as Envelope['error'], steps: timeline.steps, ms: timeline.elapsed(), ...(warnings.length ? { warnings } : {}) },
      exitCode: e.exitCode,
    };
  } finally {
    ctx?.close();
  }
}
