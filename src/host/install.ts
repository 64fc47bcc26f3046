// Where this installation's tine-host entry point is (for forced commands, spawning it
// locally and over SSH). Every module lives one directory below src/, so the relative
// path holds in tsc's output and in the bundle alike.
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

export const tineHostScript = join(dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'tine-host.js');
