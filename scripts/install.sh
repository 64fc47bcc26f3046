#!/usr/bin/env bash
# Install everything tine-host needs on a Debian/Ubuntu host, build it, and put `tine` and
# `tine-host` on PATH. Idempotent. Run as root from a checkout:  sudo scripts/install.sh
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

if [ "$(id -u)" != 0 ]; then echo "install.sh: run as root (sudo scripts/install.sh)" >&2; exit 7; fi

# Debian packages: btrfs tools, loop/mount, Docker for per-repository daemons, sshd for the
# remote client, busybox for offline test images, the native build toolchain.
PKGS=(btrfs-progs util-linux mount e2fsprogs docker.io openssh-server openssh-client busybox-static
      iproute2 nftables curl ca-certificates python3 make g++ git sqlite3 acl)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ! command -v node >/dev/null 2>&1; then missing+=(nodejs npm); fi
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "install.sh: tine needs Node.js >= 20 (found $(node --version)); install a newer nodejs package and run again" >&2
  exit 7
fi

# npm ci only when the installed tree does not satisfy package.json / the lock file.
if [ ! -d node_modules ] || ! npm ls --depth=0 >/dev/null 2>&1; then
  npm ci --no-audit --no-fund
fi
npm run build --silent

# `tine` and `tine-host` are the native launcher (build/Release/tine-launch): it asks a
# running `tine-host serve` for the hot paths (repo exec/connect, rpc) and runs Node for
# everything else.
for bin in tine tine-host; do
  rm -f "/usr/local/bin/$bin"
  ln -s "$PWD/build/Release/tine-launch" "/usr/local/bin/$bin"
done
echo "install.sh: tine and tine-host installed in /usr/local/bin (from $PWD)"

# The host daemon, where systemd runs this host; elsewhere start `tine-host serve` under
# your own supervisor (without it every command still works, through Node).
if [ -d /run/systemd/system ]; then
  cat > /etc/systemd/system/tine-host.service <<UNIT
[Unit]
Description=tine host daemon (fast path for repo exec/connect and remote requests)
After=local-fs.target

[Service]
ExecStart=/usr/local/bin/tine-host serve
Restart=on-failure
KillMode=process

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable tine-host.service >/dev/null 2>&1 || true
  systemctl restart tine-host.service || echo "install.sh: tine-host serve did not start; see journalctl -u tine-host" >&2
  echo "install.sh: tine-host serve runs under systemd (tine-host.service)"
else
  echo "install.sh: no systemd here; run 'tine-host serve' under a supervisor for the fast paths"
fi
