// The step timeline: every long operation reports named, timed steps. The CLI prints them
// live on a terminal, the RPC endpoint streams them as JSON lines, the envelope lists them.

export interface StepRecord {
  step: string;
  label: string;
  ms: number;
}

export type StepListener = (step: StepRecord) => void;

export class Timeline {
  readonly steps: StepRecord[] = [];
  private readonly started = performance.now();

  constructor(private readonly listener?: StepListener) {}

  /** Run `fn` as one named step; its time is recorded only when it succeeds. */
  async step<T>(step: string, label: string, fn: () => Promise<T> | T): Promise<T> {
    const t0 = performance.now();
    const result = await fn();
    this.record(step, label, performance.now() - t0);
    return result;
  }

  record(step: string, label: string, ms: number): void {
    const rec = { step, label, ms: round(ms) };
    this.steps.push(rec);
    this.listener?.(rec);
  }

  elapsed(): number {
    return round(performance.now() - this.started);
  }
}

export const round = (ms: number) => Math.round(ms * 10) / 10;

/** Undo list for multi-step operations: run in reverse on failure, every entry tried. */
export class UndoStack {
  private readonly entries: { label: string; fn: () => Promise<void> | void }[] = [];

  push(label: string, fn: () => Promise<void> | void): void {
    this.entries.push({ label, fn });
  }

  /** Forget everything: the operation committed. */
  clear(): void {
    this.entries.length = 0;
  }

  /** Undo in reverse order. Returns the failures; it never throws, so the original error surfaces. */
  async unwind(): Promise<{ label: string; error: unknown }[]> {
    const failures: { label: string; error: unknown }[] = [];
    while (this.entries.length) {
      const { label, fn } = this.entries.pop()!;
      try {
        await fn();
      } catch (error) {
        failures.push({ label, error });
      }
    }
    return failures;
  }
}
