#!/usr/bin/env node
// tine: the thin client. Locally it runs tine-host (through sudo when not root); with
// -m it talks to tine-host on that machine over SSH. No native code here.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const hostScript = join(dirname(fileURLToPath(import.meta.url)), 'tine-host.js');
const args = process.argv.slice(2);
const asRoot = process.getuid?.() === 0;
const [cmd, cmdArgs] = asRoot ? [process.execPath, [hostScript, ...args]] : ['sudo', [process.execPath, hostScript, ...args]];

const child = spawn(cmd, cmdArgs, { stdio: 'inherit' });
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'] as const) {
  process.on(sig, () => child.kill(sig));
}
child.on('exit', (code, signal) => {
  if (signal) process.kill(process.pid, signal);
  else process.exit(code ?? 1);
});
child.on('error', (err) => {
  process.stderr.write(`tine: cannot run tine-host: ${err.message}\n`);
  process.exit(1);
});
