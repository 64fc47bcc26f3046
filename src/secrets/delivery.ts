// Secret delivery at `repo up` / `repo down` (the lifecycle calls these; the secrets
// feature implements them). Until then: no secrets, nothing to clean.
import type { OpContext } from '../ops/context.js';
import type { RepoRecord } from '../repo/registry.js';

export interface DeliveredSecrets {
  /** env-mode secrets as TINE_SECRET_<KEY> for the Tinefile environment (never argv). */
  env: Record<string, string>;
  /** Directory on a tmpfs holding file-mode secrets (one file per key), or null. */
  fileDir: string | null;
}

export async function deliverSecrets(_ctx: OpContext, _repo: RepoRecord): Promise<DeliveredSecrets> {
  return { env: {}, fileDir: null };
}

export async function withdrawSecrets(_ctx: OpContext, _repo: RepoRecord): Promise<void> {
  return;
}
