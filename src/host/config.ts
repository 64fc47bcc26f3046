// One host config names every host path, so tests and a second install on the same
// machine use their own locations. File: $TINE_HOST_CONFIG or /etc/tine/host.json.
import { readFileSync, writeFileSync, renameSync, mkdirSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { createHash } from 'node:crypto';
import { z } from 'zod/v3';
import { TineError, EXIT } from '../errors.js';
import { addressBlockProblem } from '../repo/network.js';

export const DEFAULT_CONFIG_PATH = '/etc/tine/host.json';

const absolutePath = z.string().refine(isAbsolute, 'must be an absolute path');

export const hostConfigSchema = z.object({
  /** The btrfs filesystem (or directory on one) that holds repositories. */
  datastore: absolutePath.default('/mnt/tine'),
  /** The embedded default pool: a sparse file, loop-mounted at `datastore`. null = datastore is the operator's own. */
  pool: z
    .object({ file: absolutePath, size: z.string().regex(/^\d+[KMGT]?$/, 'a size like 20G') })
    .nullable()
    .default({ file: '/var/lib/tine/pool.img', size: '20G' }),
  stateDir: absolutePath.default('/var/lib/tine'),
  runDir: absolutePath.default('/run/tine'),
  sandboxUser: z.string().regex(/^[a-z_][a-z0-9_-]*$/).default('tine'),
  sandboxUid: z.number().int().min(1000).max(65533).default(7111),
  /** Landlock is the sandbox's second layer; only an operator may turn it off, here. */
  landlock: z.enum(['required', 'off']).default('required'),
  /** Where the guard reads the process tree. Only tests point it elsewhere (an empty dir =
   *  /proc unreadable); honoured only from a root-owned config, so an agent cannot use it. */
  procRoot: absolutePath.default('/proc'),
  /** The audit log rotates to a new file past this size; the hash chain spans the files. */
  auditRotateBytes: z.number().int().min(1024).default(8 * 1024 * 1024),
  /** Where `repo key add` installs sandbox-gateway keys (the account sshd logs them in as). */
  authorizedKeysFile: absolutePath.default('/root/.ssh/authorized_keys'),
  /** The IPv4 block that repositories' addresses come from: a /29 per network id, plus the
   *  gateway (block + 1) on the host side of every repository's veth. Not 127/8: loopback
   *  addresses cannot be routed into a repository's network namespace. The default is the
   *  shared address space of RFC 6598 (carrier-grade NAT), which hosts rarely use themselves
   *  and which is large enough (a /10) for every network id; a host that uses it sets another. */
  addressBlock: z.string().default('100.64.0.0/10').superRefine((v, ctx) => {
    const why = addressBlockProblem(v);
    if (why) ctx.addIssue({ code: z.ZodIssueCode.custom, message: why });
  }),
});

export type HostConfig = z.infer<typeof hostConfigSchema>;

/**
 * A short tag of this install, from its run dir: for host-wide names (cgroups, network
 * namespaces, interfaces, nft tables) that two installs on one machine must not share.
 */
export function installTag(config: Pick<HostConfig, 'runDir'>, hexDigits: number): string {
  return createHash('sha256').update(config.runDir).digest('hex').slice(0, hexDigits);
}

export function hostConfigPath(): string {
  return process.env.TINE_HOST_CONFIG || DEFAULT_CONFIG_PATH;
}

export interface LoadedHostConfig extends HostConfig {
  /** Where it was read from, and whether that file exists yet (setup writes it). */
  configPath: string;
  configExists: boolean;
}

let cached: LoadedHostConfig | undefined;

export function loadHostConfig(): LoadedHostConfig {
  if (cached) return cached;
  const configPath = hostConfigPath();
  let raw: unknown = {};
  let configExists = false;
  try {
    raw = JSON.parse(readFileSync(configPath, 'utf8'));
    configExists = true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') {
      throw new TineError('HOST_CONFIG_INVALID', EXIT.failure, `host config ${configPath}: ${(err as Error).message}`, {
        next: [{ description: 'Fix or remove the host config, then run setup again', run: 'tine setup' }],
      });
    }
  }
  const parsed = hostConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = issue.path.join('.') || '(root)';
    throw new TineError('HOST_CONFIG_INVALID', EXIT.failure, `host config ${configPath}: field ${field}: ${issue.message}`, {
      field,
      next: [{ description: `Correct "${field}" in ${configPath}` }],
    });
  }
  cached = { ...parsed.data, configPath, configExists };
  return cached;
}

/** Persist the config atomically (write + rename) and refresh the cache. */
export function saveHostConfig(config: HostConfig): LoadedHostConfig {
  const configPath = hostConfigPath();
  mkdirSync(dirname(configPath), { recursive: true, mode: 0o755 });
  const tmp = `${configPath}.tmp-${process.pid}`;
  const { datastore, pool, stateDir, runDir, sandboxUser, sandboxUid, landlock, procRoot, auditRotateBytes, authorizedKeysFile, addressBlock } = config;
  writeFileSync(tmp, JSON.stringify({ datastore, pool, stateDir, runDir, sandboxUser, sandboxUid, landlock, procRoot, auditRotateBytes, authorizedKeysFile, addressBlock }, null, 2) + '\n', { mode: 0o644 });
  renameSync(tmp, configPath);
  cached = { ...config, configPath, configExists: true };
  return cached;
}

export function resetHostConfigCache(): void {
  cached = undefined;
}

export const reposDir = (c: HostConfig) => join(c.datastore, 'repos');
export const stateDbPath = (c: HostConfig) => join(c.stateDir, 'state.db');
