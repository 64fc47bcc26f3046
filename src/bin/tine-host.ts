#!/usr/bin/env node
// tine-host: the orchestrator, run as root on a Linux host.
import { hostMain } from '../cli/host-main.js';

const fail = (err: unknown) => {
  process.stderr.write(`tine-host: internal error: ${(err as Error)?.stack ?? err}\n`);
  process.exit(1);
};

// `docker-proxy` is internal, outside the command tree and the guard: tine's root code
// starts it (startDaemon) and everything it serves comes from the host config and state.
if (process.argv[2] === 'docker-proxy') {
  import('../docker/proxy.js').then((m) => m.proxyMain(process.argv.slice(3))).then((code) => process.exit(code), fail);
} else {
  hostMain(process.argv).then((code) => process.exit(code), fail);
}
