// The client's machine list: ~/.config/tine/config.json (0600, directory 0700), or
// $TINE_CLIENT_CONFIG. Each machine's pinned host key lives in its own known_hosts file
// next to it, which only tine writes.
import { readFileSync, writeFileSync, renameSync, mkdirSync, chmodSync, existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, isAbsolute } from 'node:path';
import { z } from 'zod/v3';
import { TineError, EXIT } from '../errors.js';

export const machineNameSchema = z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'must be a lowercase label (a-z, 0-9, -), max 63');

export const machineSchema = z
  .object({
    name: machineNameSchema,
    host: z.string().min(1, 'is empty').max(253).regex(/^[A-Za-z0-9.:_\[\]-]+$/, 'is not a host name or address'),
    user: z.string().regex(/^[a-z_][a-z0-9_-]*\$?$/, 'is not a user name').default('root'),
    port: z.number().int().min(1).max(65535).default(22),
    key: z.string().refine(isAbsolute, 'must be an absolute path').nullable().default(null),
    /** SHA256 fingerprint(s) of the host key recorded on first contact. */
    knownHostKey: z.string().min(1),
    role: z.enum(['human', 'agent']).default('human'),
    /** How to run tine-host there (machine setup records the installed path). */
    tineHost: z.string().min(1).default('tine-host'),
    installed: z.object({ version: z.string(), hash: z.string(), prefix: z.string() }).nullable().default(null),
  })
  .strict();

export type Machine = z.infer<typeof machineSchema>;

export const clientConfigSchema = z.object({ machines: z.array(machineSchema).default([]) }).strict();
export type ClientConfig = z.infer<typeof clientConfigSchema>;

export function clientConfigPath(): string {
  return process.env.TINE_CLIENT_CONFIG || join(homedir(), '.config', 'tine', 'config.json');
}

export const clientDir = () => dirname(clientConfigPath());
export const knownHostsFile = (name: string) => join(clientDir(), 'known_hosts.d', name);
export const controlDir = () => join(clientDir(), 'cm');

export function loadClientConfig(): ClientConfig {
  const path = clientConfigPath();
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { machines: [] };
    throw new TineError('CLIENT_CONFIG_INVALID', EXIT.usage, `client config ${path}: ${(err as Error).message}`, {
      next: [{ description: `Fix or remove ${path}` }],
    });
  }
  const parsed = clientConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = issue.path.map(String).join('.') || '(root)';
    throw new TineError('CLIENT_CONFIG_INVALID', EXIT.usage, `client config ${path}: field ${field}: ${issue.message}`, {
      field,
      next: [{ description: `Correct "${field}" in ${path}` }],
    });
  }
  return parsed.data;
}

export function saveClientConfig(config: ClientConfig): void {
  const path = clientConfigPath();
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  chmodSync(dirname(path), 0o700);
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(clientConfigSchema.parse(config), null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, path);
}

export function findMachine(name: string): Machine {
  const m = loadClientConfig().machines.find((x) => x.name === name);
  if (!m) {
    throw new TineError('NOT_FOUND', EXIT.notFound, `no machine "${name}" in ${clientConfigPath()}`, {
      next: [
        { description: 'List the machines', run: 'tine machine list' },
        { description: 'Add it', run: `tine machine add ${name} --host <host>` },
      ],
    });
  }
  if (!existsSync(knownHostsFile(name))) {
    throw new TineError('HOST_KEY_MISSING', EXIT.refused, `machine ${name} has no pinned host key file ${knownHostsFile(name)}`, {
      next: [{ description: 'Record its host key again after checking it out of band', run: `tine machine remove ${name} && tine machine add ${name} --host ${m.host} --port ${m.port}` }],
    });
  }
  return m;
}
