// Host preparation for the lifecycle (one setup step): Docker from Debian's docker.io, and
// on a systemd host a boot unit that brings back the repositories that were up.
import { existsSync, readFileSync, writeFileSync, realpathSync } from 'node:fs';
import { ensureCommands, run, which } from '../host/system.js';
import { DEFAULT_CONFIG_PATH, type LoadedHostConfig } from '../host/config.js';

export const BOOT_UNIT_PATH = '/etc/systemd/system/tine-restore.service';

export function systemdIsInit(): boolean {
  try {
    return readFileSync('/proc/1/comm', 'utf8').trim() === 'systemd';
  } catch {
    return false;
  }
}

export function bootUnitText(config: LoadedHostConfig, tineHost: string): string {
  const env = config.configPath !== DEFAULT_CONFIG_PATH ? `Environment=TINE_HOST_CONFIG=${config.configPath}\n` : '';
  return `[Unit]
Description=tine: bring back the repositories that were up
After=local-fs.target network-online.target
Wants=network-online.target

[Service]
Type=oneshot
${env}ExecStart=${process.execPath} ${tineHost} repo restore-all -o json
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
`;
}

/** Returns what it changed. */
export function ensureLifecycleHost(config: LoadedHostConfig): string[] {
  const changed: string[] = [];
  const installed = ensureCommands([
    { command: 'dockerd', pkg: 'docker.io' },
    { command: 'docker', pkg: 'docker.io' },
  ]);
  if (installed.length) changed.push(`installed ${installed.join(', ')}`);
  // Only where systemd runs the machine, and only for the default install (a test host or a
  // second install with its own TINE_HOST_CONFIG must not touch /etc/systemd); elsewhere
  // the operator runs `tine-host repo restore-all` at boot.
  if (systemdIsInit() && config.configPath === DEFAULT_CONFIG_PATH && process.argv[1]) {
    const text = bootUnitText(config, realpathSync(process.argv[1]));
    if (!existsSync(BOOT_UNIT_PATH) || readFileSync(BOOT_UNIT_PATH, 'utf8') !== text) {
      writeFileSync(BOOT_UNIT_PATH, text, { mode: 0o644 });
      const systemctl = which('systemctl');
      if (systemctl) {
        run(systemctl, ['daemon-reload']);
        run(systemctl, ['enable', 'tine-restore.service']);
      }
      changed.push(`boot unit ${BOOT_UNIT_PATH}`);
    }
  }
  return changed;
}
