// This package's version and a hash of what is installed, so `machine setup` can skip a
// copy when the machine already runs exactly this build.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { dirname, join, relative } from 'node:path';

/** The package root (the directory holding package.json), from dist/src/client. */
export const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

let version: string | undefined;
export function packageVersion(): string {
  if (version) return version;
  try {
    version = String((JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version);
  } catch {
    version = 'unknown';
  }
  return version;
}

/** Files that make an install: what `machine setup` ships. */
export const SHIPPED = ['package.json', 'package-lock.json', 'binding.gyp', 'native', 'dist/src', 'scripts'];

function walk(dir: string, out: string[]): void {
  let entries: string[];
  try {
    entries = readdirSync(dir).sort();
  } catch {
    return;
  }
  for (const e of entries) {
    const p = join(dir, e);
    const st = statSync(p);
    if (st.isDirectory()) walk(p, out);
    else if (st.isFile() && !e.endsWith('.map')) out.push(p);
  }
}

/** sha256 over the shipped files' paths and contents: equal hash = same build. */
export function contentHash(root = packageRoot): string {
  const h = createHash('sha256');
  for (const top of SHIPPED) {
    const files: string[] = [];
    const p = join(root, top);
    try {
      if (statSync(p).isDirectory()) walk(p, files);
      else files.push(p);
    } catch {
      continue;
    }
    for (const f of files) {
      h.update(relative(root, f) + '\0');
      h.update(readFileSync(f));
    }
  }
  return h.digest('hex').slice(0, 32);
}
