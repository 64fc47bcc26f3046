#!/usr/bin/env node
// tine-host: the orchestrator, run as root on a Linux host.
import { hostMain } from '../cli/host-main.js';

hostMain(process.argv).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`tine-host: internal error: ${(err as Error)?.stack ?? err}\n`);
    process.exit(1);
  },
);
