#!/usr/bin/env node
// tine: the thin client. Locally it runs tine-host (through sudo when not root); with
// -m it talks to tine-host on that machine over SSH. No native code here.
import { clientMain } from '../client/main.js';

clientMain(process.argv).then(
  (code) => {
    process.exitCode = code;
    // stdout may still be flushing to a pipe; exit once it has drained.
    process.stdout.write('', () => process.exit(code));
  },
  (err) => {
    process.stderr.write(`tine: internal error: ${(err as Error)?.stack ?? err}\n`);
    process.exit(1);
  },
);
