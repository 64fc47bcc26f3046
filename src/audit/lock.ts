// A cross-process lock the kernel releases when its holder dies: binding an abstract Unix
// socket (Linux). No stale lock files, no pid guessing. Abstract names are per network
// namespace; every audit writer (tine-host, the local client) runs in the host's.
import { createServer, type Server } from 'node:net';
import { createHash } from 'node:crypto';
import { TineError, EXIT } from '../errors.js';

export async function withLock<T>(key: string, fn: () => T | Promise<T>, timeoutMs = 15_000): Promise<T> {
  const name = '\0tine-lock-' + createHash('sha256').update(key).digest('hex').slice(0, 24);
  const deadline = Date.now() + timeoutMs;
  let server: Server | undefined;
  for (let attempt = 0; !server; attempt++) {
    server = await new Promise<Server | undefined>((resolve, reject) => {
      const s = createServer();
      s.once('error', (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' ? resolve(undefined) : reject(err)));
      s.listen(name, () => resolve(s));
    });
    if (server) break;
    if (Date.now() > deadline) {
      throw new TineError('LOCKED', EXIT.conflict, `the audit log is locked by another process (waited ${timeoutMs} ms)`, {
        next: [{ description: 'Try again' }],
      });
    }
    await new Promise((r) => setTimeout(r, 2 + Math.floor(Math.random() * Math.min(50, 2 + attempt))));
  }
  // Never keep the process alive for the lock's sake.
  server.unref();
  try {
    return await fn();
  } finally {
    await new Promise<void>((r) => server!.close(() => r()));
  }
}
