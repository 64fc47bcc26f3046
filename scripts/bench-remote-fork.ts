// Remote fork benchmark (run as root): `tine -m local-ssh repo fork` against a real sshd on
// 127.0.0.1 with its own datastore, as a whole client process (what a user waits for):
// first call (new SSH connection) and reused connection (ControlMaster), each against the
// baseline of plain `ssh host true` measured in the same run.
//   scripts/bench-remote-fork [--runs N]     (N >= 5, default 7)
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeTestHost } from '../test/helpers/host.js';
import { startSshd } from '../test/helpers/sshd.js';
import { startServe, launcherDir, type Serve } from '../test/helpers/serve.js';

const here = dirname(fileURLToPath(import.meta.url));
const tine = join(here, '..', 'src', 'bin', 'tine.js');
const tineHost = join(here, '..', 'src', 'bin', 'tine-host.js');
const runsArg = process.argv.indexOf('--runs');
const RUNS = Math.max(5, runsArg > 0 ? Number(process.argv[runsArg + 1]) : 7);
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const time = (fn: () => void) => {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
};

if (process.getuid?.() !== 0) {
  console.error('bench-remote-fork must run as root (it makes a loop btrfs and runs sshd)');
  process.exit(7);
}

const remote = makeTestHost();
const bins = launcherDir();
let serve: Serve | undefined = await startServe(remote);
const sshd = await startSshd({ setEnv: { TINE_HOST_CONFIG: remote.configPath } });
const clientDir = mkdtempSync(join(tmpdir(), 'tine-bench-client-'));
const cfgPath = join(clientDir, 'config.json');
const env = { ...remote.env, ...sshd.env, TINE_CLIENT_CONFIG: cfgPath };
const run = (args: string[]) => {
  const r = spawnSync(process.execPath, [tine, ...args, '-o', 'json'], { env, encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`tine ${args.join(' ')} failed (${r.status}): ${r.stdout}${r.stderr}`);
  return r;
};
process.env.TINE_CLIENT_CONFIG = cfgPath;
const { closeMaster: closeMachineMaster } = await import('../src/client/ssh.js');
const { loadClientConfig } = await import('../src/client/config.js');
const closeMaster = () => {
  for (const m of loadClientConfig().machines) closeMachineMaster(m);
};
const plainSsh = ['-i', sshd.humanKey, '-p', String(sshd.port), '-o', 'BatchMode=yes', '-o', `UserKnownHostsFile=${join(clientDir, 'known_hosts.d', 'local-ssh')}`, '-o', 'StrictHostKeyChecking=yes', 'root@127.0.0.1', 'true'];

try {
  run(['machine', 'add', 'local-ssh', '--host', '127.0.0.1', '--port', String(sshd.port), '--key', sshd.humanKey]);
  // The remote install is this checkout (machine setup is measured by its own test).
  const cfg = JSON.parse(readFileSync(cfgPath, 'utf8'));
  // As machine setup installs it: tine-host is the launcher, and tine-host serve runs there.
  cfg.machines[0].tineHost = bins.tineHost;
  writeFileSync(cfgPath, JSON.stringify(cfg), { mode: 0o600 });
  run(['-m', 'local-ssh', 'repo', 'create', 'app']);
  closeMaster();

  const baseline: number[] = [];
  const first: number[] = [];
  const reused: number[] = [];
  const noDaemon: number[] = [];
  const muxTrue: number[] = [];
  const { controlPath } = await import('../src/client/ssh.js');
  const machine = loadClientConfig().machines[0]!;
  // The transport's own floor: `true` over the reused master. On a host whose root shell
  // runs slow rc files (sshd runs every command through it), this is most of the time.
  const overMaster = ['-o', `ControlPath=${controlPath(machine)}`, '-p', String(sshd.port), '-l', 'root', '127.0.0.1', 'true'];
  let n = 0;
  for (let i = 0; i < RUNS; i++) {
    baseline.push(time(() => spawnSync('ssh', plainSsh, { stdio: 'ignore' })));
    closeMaster();
    first.push(time(() => run(['-m', 'local-ssh', 'repo', 'fork', 'app', '--tag', `f${n++}`])));
    reused.push(time(() => run(['-m', 'local-ssh', 'repo', 'fork', 'app', '--tag', `f${n++}`])));
    muxTrue.push(time(() => spawnSync('ssh', overMaster, { stdio: 'ignore' })));
  }
  // The same reused-connection fork with no daemon on the host (the launcher starts Node).
  await serve.stop();
  serve = undefined;
  for (let i = 0; i < RUNS; i++) noDaemon.push(time(() => run(['-m', 'local-ssh', 'repo', 'fork', 'app', '--tag', `f${n++}`])));
  const b = median(baseline);
  const f = median(first);
  const r = median(reused);
  console.log(`runs: ${RUNS} (load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')})`);
  console.log(`baseline  plain \`ssh host true\` (new connection)     median ${b.toFixed(0)} ms`);
  console.log(`first     tine -m local-ssh repo fork (new connection) median ${f.toFixed(0)} ms   ratio ${(f / b).toFixed(2)}x baseline   goal < 2000 ms`);
  console.log(`reused    tine -m local-ssh repo fork (ControlMaster)  median ${r.toFixed(0)} ms   ratio ${(r / b).toFixed(2)}x baseline   goal < 500 ms`);
  console.log(`reused, no tine-host serve on the host                 median ${median(noDaemon).toFixed(0)} ms`);
  const m = median(muxTrue);
  console.log(`floor     ssh over the reused master, \`true\`           median ${m.toFixed(0)} ms   (tine adds ${(r - m).toFixed(0)} ms over it)`);
} finally {
  await serve?.stop();
  bins.cleanup();
  closeMaster();
  sshd.stop();
  remote.cleanup();
  rmSync(clientDir, { recursive: true, force: true });
}
