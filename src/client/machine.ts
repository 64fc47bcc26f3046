// `tine machine add | list | remove | setup`: the client's machines, their pinned host keys,
// agent-role keys, and installing tine-host on them over SSH.
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { z } from 'zod/v3';
import {
  loadClientConfig, saveClientConfig, findMachine, machineNameSchema, knownHostsFile, type Machine,
} from './config.js';
import { scanHostKeys, writeKnownHosts, closeMaster, spawnRemoteShell, sshFailure, shellQuote } from './ssh.js';
import { runRemote, clientRequest } from './remote.js';
import { packageRoot, packageVersion, contentHash, SHIPPED } from './version.js';
import type { Timeline } from '../ops/timeline.js';
import { TineError, EXIT, conflict } from '../errors.js';

export const machineAddInput = z
  .object({
    name: machineNameSchema,
    host: z.string({ required_error: 'is required', invalid_type_error: 'is required' }).min(1, 'is empty').max(253).regex(/^[A-Za-z0-9.:_\[\]-]+$/, 'is not a host name or address'),
    user: z.string().regex(/^[a-z_][a-z0-9_-]*\$?$/, 'is not a user name').default('root'),
    port: z.coerce.number().int('is not a port').min(1, 'is not a port').max(65535, 'is not a port').default(22),
    key: z.string().min(1).optional(),
    role: z.enum(['human', 'agent']).default('human'),
    /** Install the agent key's forced-command line through this (human) machine entry. */
    via: machineNameSchema.optional(),
    authorizedKeys: z.string().min(1).optional(),
  })
  .strict();
export type MachineAddInput = z.infer<typeof machineAddInput>;

export function agentKeyLine(tineHost: string, publicKey: string): string {
  return `restrict,command="${tineHost} rpc --role agent" ${publicKey.trim()}`;
}

export async function machineAdd(input: MachineAddInput, timeline: Timeline): Promise<{ machine: Machine; fingerprints: string[]; authorizedKeysLine?: string; installed?: boolean }> {
  const { resolve } = await import('node:path');
  const key = input.key ? resolve(input.key) : null;
  if (key && !existsSync(key)) throw new TineError('INVALID_INPUT', EXIT.usage, `key: ${key} does not exist`, { field: 'key' });
  if (input.role === 'agent' && !key) {
    throw new TineError('INVALID_INPUT', EXIT.usage, 'key: an agent-role machine needs its own key (--key FILE), whose public half gets the forced command', { field: 'key' });
  }
  const config = loadClientConfig();
  const existing = config.machines.find((m) => m.name === input.name);
  const scanned = await timeline.step('host_key', `Host key fetched from ${input.host}:${input.port}`, () => scanHostKeys(input.host, input.port));
  const fpText = scanned.fingerprints.join(',');
  if (existing && (existing.host !== input.host || existing.port !== input.port || existing.knownHostKey !== fpText)) {
    const changedKey = existing.host === input.host && existing.port === input.port;
    throw conflict(changedKey ? 'HOST_KEY_CHANGED' : 'EXISTS', changedKey
      ? `the host key of ${input.name} changed: recorded ${existing.knownHostKey}, now ${fpText}; nothing recorded`
      : `machine ${input.name} already exists (${existing.user}@${existing.host}:${existing.port})`, [
      { description: 'Check the new key with the machine\'s operator (out of band)' },
      { description: 'If it is expected, forget the old entry and add it again', run: `tine machine remove ${input.name} && tine machine add ${input.name} --host ${input.host} --port ${input.port}` },
    ]);
  }
  let tineHost = existing?.tineHost ?? 'tine-host';
  let via: Machine | undefined;
  if (input.via) {
    via = findMachine(input.via);
    if (via.role === 'agent') throw new TineError('INVALID_INPUT', EXIT.usage, `via: ${input.via} is an agent-role machine; install keys through a human one`, { field: 'via' });
    tineHost = via.tineHost;
  }
  const machine: Machine = {
    name: input.name, host: input.host, user: input.user, port: input.port, key, knownHostKey: fpText, role: input.role,
    tineHost, installed: existing?.installed ?? via?.installed ?? null,
  };
  writeKnownHosts(input.name, scanned.lines);
  saveClientConfig({ machines: [...config.machines.filter((m) => m.name !== input.name), machine] });
  timeline.record('recorded', `Host key recorded (${scanned.fingerprints[0]})`, 0);
  if (input.role !== 'agent') return { machine, fingerprints: scanned.fingerprints };

  const pubFile = `${key}.pub`;
  if (!existsSync(pubFile)) throw new TineError('INVALID_INPUT', EXIT.usage, `key: no public key ${pubFile} next to it`, { field: 'key' });
  const line = agentKeyLine(tineHost, readFileSync(pubFile, 'utf8'));
  if (!via) return { machine, fingerprints: scanned.fingerprints, authorizedKeysLine: line, installed: false };
  const file = input.authorizedKeys ?? '.ssh/authorized_keys';
  await timeline.step('agent_key', `Agent key installed with forced command on ${via.name}`, async () => {
    const q = shellQuote(file);
    const script = `umask 077; mkdir -p "$(dirname ${q})"; touch ${q}; grep -qxF ${shellQuote(line)} ${q} || printf '%s\\n' ${shellQuote(line)} >> ${q}`;
    const r = await runShell(via!, script);
    if (r.code !== 0) throw r.code === 255 ? sshFailure(via!, r.stderr) : new TineError('FAILED', EXIT.failure, `installing the agent key failed: ${r.stderr.trim()}`);
  });
  return { machine, fingerprints: scanned.fingerprints, authorizedKeysLine: line, installed: true };
}

export function machineList(): { machines: Array<Omit<Machine, 'installed'> & { installedVersion: string | null }> } {
  return { machines: loadClientConfig().machines.map(({ installed, ...m }) => ({ ...m, installedVersion: installed?.version ?? null })) };
}

export function machineRemove(name: string): { name: string; removed: true } {
  const config = loadClientConfig();
  const m = config.machines.find((x) => x.name === name);
  if (!m) throw new TineError('NOT_FOUND', EXIT.notFound, `no machine "${name}"`, { next: [{ description: 'List the machines', run: 'tine machine list' }] });
  closeMaster(m);
  saveClientConfig({ machines: config.machines.filter((x) => x.name !== name) });
  rmSync(knownHostsFile(name), { force: true });
  return { name, removed: true };
}

export function runShell(m: Machine, script: string, input?: NodeJS.ReadableStream | Buffer): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawnRemoteShell(m, script);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    child.stdin!.on('error', () => {});
    if (Buffer.isBuffer(input)) child.stdin!.end(input);
    else if (input) input.pipe(child.stdin!);
    else child.stdin!.end();
    child.on('error', () => resolve({ code: 255, stdout, stderr }));
    child.on('close', (code) => resolve({ code: code ?? 255, stdout, stderr }));
  });
}

export const machineSetupInput = z
  .object({
    name: machineNameSchema,
    prefix: z.string().regex(/^\/[A-Za-z0-9._\/-]*$/, 'must be an absolute path of plain characters').default('/opt/tine'),
    datastore: z.string().regex(/^\/[A-Za-z0-9._\/-]*$/, 'must be an absolute path of plain characters').optional(),
    force: z.boolean().default(false),
  })
  .strict();
export type MachineSetupInput = z.infer<typeof machineSetupInput>;

const abiProbe = `node -p "process.versions.modules+'-'+process.arch+'-'+process.platform" 2>/dev/null || echo none`;

/** Production dependency directories, relative to the package root. */
function productionModules(): string[] {
  const r = spawnSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: packageRoot, encoding: 'utf8', maxBuffer: 1 << 26 });
  return (r.stdout ?? '').split('\n').filter((p) => p.startsWith(packageRoot + '/node_modules/')).map((p) => p.slice(packageRoot.length + 1));
}

export async function machineSetup(input: MachineSetupInput, timeline: Timeline): Promise<Record<string, unknown>> {
  const m = findMachine(input.name);
  if (m.role === 'agent') {
    throw new TineError('AGENT_MACHINE_LEVEL', EXIT.refused, `${m.name} is an agent-role entry: its key may only run tine-host rpc`, {
      next: [{ description: 'Set the machine up through a human entry for the same host', run: 'tine machine setup <human-machine>' }],
    });
  }
  const { prefix } = input;
  const probe = await timeline.step('probe', `Connected to ${m.name}; host checked`, async () => {
    const r = await runShell(m, `id -u; uname -s; ${abiProbe}; sudo -n true >/dev/null 2>&1 && echo sudo || echo nosudo; cat ${prefix}/install.json 2>/dev/null || echo '{}'`);
    if (r.code === 255) throw sshFailure(m, r.stderr);
    const [uid, os, abi, sudo, ...rest] = r.stdout.trim().split('\n');
    let installed: { version?: string; hash?: string } = {};
    try { installed = JSON.parse(rest.join('\n')); } catch { /* none */ }
    return { uid: Number(uid), os, abi, sudo: sudo === 'sudo', installed };
  });
  if (probe.os !== 'Linux') throw new TineError('HOST_UNSUPPORTED', EXIT.unsupported, `${m.name} runs ${probe.os}; tine-host needs Linux`);
  if (probe.uid !== 0 && !probe.sudo) {
    throw new TineError('HOST_UNSUPPORTED', EXIT.unsupported, `${m.user} on ${m.name} is not root and has no password-less sudo`, {
      next: [{ description: 'Log in as root, or give the user sudo', run: `tine machine add ${m.name} --host ${m.host} --user root` }],
    });
  }
  if (probe.abi === 'none') {
    throw new TineError('HOST_UNSUPPORTED', EXIT.unsupported, `${m.name} has no Node.js (need 20+)`, {
      next: [{ description: 'Install Node.js 20 there (Debian 12: apt-get install nodejs npm from NodeSource), then run setup again' }],
    });
  }
  const sudo = probe.uid === 0 ? '' : 'sudo -n ';
  const version = packageVersion();
  const hash = contentHash();
  const release = `${prefix}/releases/${version}-${hash}`;
  const skip = !input.force && probe.installed.hash === hash;
  const localAbi = `${process.versions.modules}-${process.arch}-${process.platform}`;
  const shipModules = probe.abi === localAbi;
  if (skip) timeline.record('copy', `Installed version ${version} (${hash.slice(0, 12)}) matches; copy skipped`, 0);
  else {
    await timeline.step('copy', `Package copied (${version}, ${hash.slice(0, 12)})${shipModules ? ' with its built modules' : ''}`, async () => {
      const files = SHIPPED.filter((f) => existsSync(`${packageRoot}/${f}`));
      if (shipModules) files.push(...productionModules(), ...(existsSync(`${packageRoot}/build/Release`) ? ['build/Release'] : []));
      const tar = spawn('tar', ['-C', packageRoot, '--exclude=*.map', '--exclude=build/Release/obj.target', '-czf', '-', ...files], { stdio: ['ignore', 'pipe', 'pipe'] });
      const r = await runShell(m, `set -e; ${sudo}mkdir -p ${release}; ${sudo}tar -xzf - -C ${release}`, tar.stdout!);
      if (r.code !== 0) throw r.code === 255 ? sshFailure(m, r.stderr) : new TineError('SETUP_FAILED', EXIT.failure, `unpacking on ${m.name} failed: ${r.stderr.trim()}`);
    });
    if (!shipModules) {
      await timeline.step('deps', 'Dependencies installed and native addon built there (npm ci)', async () => {
        const r = await runShell(m, `set -e; cd ${release}; ${sudo}npm ci --omit=dev --no-audit --no-fund; ${sudo}npx --no-install node-gyp rebuild`);
        if (r.code !== 0) throw new TineError('SETUP_FAILED', EXIT.failure, `npm ci on ${m.name} failed: ${r.stderr.trim().split('\n').slice(-3).join(' ')}`, {
          next: [{ description: 'Install the build tools there', run: 'apt-get install -y build-essential python3 nodejs npm' }],
        });
      });
    }
    await timeline.step('link', `tine-host linked at ${prefix}/bin/tine-host`, async () => {
      const wrapper = `#!/bin/sh\\nexec node ${prefix}/current/dist/src/bin/tine-host.js "$@"\\n`;
      const link = prefix === '/opt/tine' ? `${sudo}ln -sfn ${prefix}/bin/tine-host /usr/local/bin/tine-host;` : '';
      const info = JSON.stringify({ version, hash, release, installedAt: new Date().toISOString() });
      // The native launcher where it was built (it asks a running tine-host serve first and
      // starts Node only when it must); the plain Node wrapper otherwise.
      const launcher = `${prefix}/current/build/Release/tine-launch`;
      const entry = `if [ -x ${launcher} ]; then ${sudo}ln -sfn ${launcher} ${prefix}/bin/tine-host; else ${sudo}rm -f ${prefix}/bin/tine-host; printf '${wrapper}' | ${sudo}tee ${prefix}/bin/tine-host >/dev/null; ${sudo}chmod 755 ${prefix}/bin/tine-host; fi`;
      // A running daemon still has the old code: restart it where systemd runs it.
      const restart = `if [ -d /run/systemd/system ]; then ${sudo}systemctl try-restart tine-host.service 2>/dev/null || true; fi`;
      const r = await runShell(m, `set -e; ${sudo}mkdir -p ${prefix}/bin; ${sudo}ln -sfn ${release} ${prefix}/current; ${entry}; ${link} printf '%s\\n' ${shellQuote(info)} | ${sudo}tee ${prefix}/install.json >/dev/null; ${restart}`);
      if (r.code !== 0) throw new TineError('SETUP_FAILED', EXIT.failure, `linking on ${m.name} failed: ${r.stderr.trim()}`);
    });
  }
  const tineHost = `${sudo}${prefix}/bin/tine-host`;
  const setupEnv = await timeline.step('host_setup', `tine setup ran on ${m.name}`, async () => {
    const r = await runShell(m, `${tineHost} setup -o json${input.datastore ? ` --datastore ${input.datastore}` : ''}`);
    const last = r.stdout.trim().split('\n').pop() ?? '';
    let env: { ok?: boolean; data?: Record<string, unknown>; error?: { code: string; message: string } } = {};
    try { env = JSON.parse(last); } catch { /* below */ }
    if (r.code !== 0 || !env.ok) throw new TineError(env.error?.code ?? 'SETUP_FAILED', r.code && r.code < 10 ? r.code : EXIT.failure, `tine setup on ${m.name} failed: ${env.error?.message ?? r.stderr.trim()}`);
    return env.data ?? {};
  });
  const updated: Machine = { ...m, tineHost: tineHost.trim(), installed: { version, hash, prefix } };
  const cfg = loadClientConfig();
  saveClientConfig({ machines: cfg.machines.map((x) => (x.name === m.name ? updated : x)) });
  const verify = await timeline.step('verify', `Verified: tine-host ${version} answers, btrfs datastore`, async () => {
    const res = await runRemote(updated, clientRequest('repo list', {}, { kind: 'human', reason: 'machine setup verification' }));
    if (!res.envelope.ok) throw new TineError('SETUP_FAILED', EXIT.failure, `verification on ${m.name} failed: ${res.envelope.error?.message}`);
    if (res.hostVersion !== version) throw new TineError('SETUP_FAILED', EXIT.failure, `${m.name} answers with version ${res.hostVersion}, expected ${version}`);
    return { hostVersion: res.hostVersion };
  });
  return { machine: m.name, version, hash, copied: !skip, shippedModules: !skip && shipModules, prefix, datastore: setupEnv.datastore, ...verify };
}
