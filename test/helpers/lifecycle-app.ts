// The counter app of the lifecycle tests and benchmark: a Tinefile whose `up` starts one
// container (busybox httpd on $TINE_IP:8080) serving a counter that a loop increments
// every 50 ms and persists in the repository (data/n, a bind mount).
import { mkdirSync, writeFileSync, readdirSync, readFileSync, chmodSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { writeBusyboxTar } from './busybox-image.js';
import type { TestHost } from './host.js';
import type { HostConfig } from '../../src/host/config.js';
import { cgroupPrefix, killCgroupTree, removeCgroupTree } from '../../src/docker/daemon.js';

/** cgroup parents of this test host's daemons (containers outlive a killed shim). */
function hostCgroups(host: TestHost): string[] {
  const prefix = cgroupPrefix({ runDir: host.runDir } as HostConfig);
  const names = new Set<string>();
  for (const root of ['/sys/fs/cgroup', ...readdirSync('/sys/fs/cgroup').map((c) => join('/sys/fs/cgroup', c))]) {
    try {
      for (const n of readdirSync(root)) if (n.startsWith(prefix)) names.add(n);
    } catch {
      /* not a directory */
    }
  }
  return [...names];
}

export const COUNTER_TINEFILE = String.raw`# counter app (tine lifecycle tests)
up() {
  env | grep -E '^(TINE_|DOCKER_HOST=)' | sort > "$TINE_REPO_PATH/.hook-env"
  mkdir -p "$TINE_REPO_PATH/data"
  docker image inspect tine-busybox >/dev/null 2>&1 || docker import busybox.tar tine-busybox >/dev/null || return 1
  if ! docker container inspect counter >/dev/null 2>&1; then
    docker run -d --name counter --network host --stop-timeout 1 \
      -v "$TINE_REPO_PATH/data:/data" -e ADDR="$TINE_IP" tine-busybox sh -c '
        mkdir -p /www/cgi-bin
        printf "#!/bin/sh\necho Content-Type: text/plain\necho\ncat /data/n\n" > /www/cgi-bin/n
        chmod +x /www/cgi-bin/n
        n=$(cat /data/n 2>/dev/null || echo 0)
        (while true; do n=$((n+1)); echo $n > /data/n.tmp; mv /data/n.tmp /data/n; sleep 0.05; done) &
        exec httpd -f -p $ADDR:8080 -h /www' >/dev/null || return 1
  fi
  docker start counter >/dev/null || return 1
  for i in $(seq 1 100); do
    curl -sf "http://$TINE_IP:8080/cgi-bin/n" >/dev/null && return 0
    sleep 0.1
  done
  echo "counter did not answer on $TINE_IP:8080" >&2
  return 1
}
down() {
  docker stop -t 1 counter >/dev/null
}
prefork() {
  cat "$TINE_REPO_PATH/data/n" > "$TINE_REPO_PATH/prefork-ran"
}
`;

/** A source tree for `repo create --from`: the Tinefile and a busybox rootfs tarball. */
export function writeCounterApp(dir: string, tinefile = COUNTER_TINEFILE): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'Tinefile'), tinefile);
  writeBusyboxTar(join(dir, 'busybox.tar'));
}

/** The test host's directory is mkdtemp's 0700: the sandbox user must traverse to its repos. */
export function openTestHostForSandbox(host: TestHost): void {
  chmodSync(host.dir, 0o711);
}

/** One GET with curl (as the host would), or null when it fails. */
export function getCounter(ip: string, timeoutS = 1): number | null {
  try {
    const out = execFileSync('curl', ['-sf', '--max-time', String(timeoutS), `http://${ip}:8080/cgi-bin/n`], { encoding: 'utf8' });
    const n = Number.parseInt(out.trim(), 10);
    return Number.isFinite(n) ? n : null;
  } catch {
    return null;
  }
}

function cmdline(pid: string): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return [];
  }
}

/** Pids of every process (dockerd, containerd, shims) whose argv mentions this directory. */
export function processesUnder(dir: string): number[] {
  return readdirSync('/proc').filter((n) => /^\d+$/.test(n) && Number(n) !== process.pid)
    .filter((n) => cmdline(n).some((a) => a.includes(dir)))
    .map(Number);
}

/** A live dockerd serving this socket path (the repository's DOCKER_HOST, served by its
 *  filtering endpoint; dockerd itself listens on the raw socket behind it)? */
export function dockerdFor(socket: string): number | null {
  const id = /docker-(\d+)\.sock$/.exec(socket)?.[1];
  const served = [`unix://${socket}`, ...(id ? [`unix://${join(dirname(socket), 'docker-raw', `${id}.sock`)}`] : [])];
  for (const n of readdirSync('/proc')) {
    if (!/^\d+$/.test(n)) continue;
    const argv = cmdline(n);
    if (argv[0]?.endsWith('dockerd') && served.some((s) => argv.includes(s))) {
      try {
        if (readFileSync(`/proc/${n}/stat`, 'utf8').split(') ')[1]?.startsWith('Z')) continue;
      } catch {
        continue;
      }
      return Number(n);
    }
  }
  return null;
}

/** after.always: stop every repo, then kill what is left of daemons under the test dir. */
export async function teardownLifecycleHost(host: TestHost): Promise<void> {
  const list = host.run(['repo', 'list']);
  if (!list.json?.ok) console.error(`teardown: repo list failed: ${list.stdout}${list.stderr}`);
  for (const r of (list.json?.data?.repos ?? []) as { ref: string }[]) {
    const down = host.run(['repo', 'down', r.ref], { timeoutMs: 90_000 });
    if (!down.json?.ok) console.error(`teardown: repo down ${r.ref}: ${down.stdout}${down.stderr}`);
  }
  for (const sig of ['SIGTERM', 'SIGKILL'] as const) {
    const pids = processesUnder(host.dir);
    for (const p of pids) { try { process.kill(p, sig); } catch { /* gone */ } }
    for (let i = 0; i < 50 && processesUnder(host.dir).length; i++) await new Promise((r) => setTimeout(r, 100));
  }
  for (const name of hostCgroups(host)) {
    await killCgroupTree(name);
    await removeCgroupTree(name);
  }
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4]).filter((m): m is string => !!m && m.startsWith(host.dir + '/') && m !== host.fs.mountpoint);
  for (const m of mounts.sort((a, b) => b.length - a.length)) {
    try { execFileSync('umount', ['-l', m]); } catch { /* gone */ }
  }
}
