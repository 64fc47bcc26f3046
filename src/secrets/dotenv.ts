// `.env` files: KEY=VALUE lines, `#` comments, blank lines, an optional `export ` prefix,
// unquoted, 'single-quoted' (literal) and "double-quoted" (\n \t \" \\ escapes) values;
// quoted values may span lines. Errors name line numbers, never values.
import { KEY_PATTERN, KEY_MAX } from './validate.js';

export interface DotenvEntry {
  key: string;
  value: string;
  /** 0-based index of the first and last line of the assignment. */
  firstLine: number;
  lastLine: number;
}

export class DotenvError extends Error {}

const ASSIGN = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(.*)$/;

export function parseDotenv(text: string): DotenvEntry[] {
  const lines = text.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  const out: DotenvEntry[] = [];
  const seen = new Map<string, number>();
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (/^\s*(#.*)?$/.test(line)) continue;
    const m = ASSIGN.exec(line);
    if (!m) throw new DotenvError(`line ${i + 1} is neither a comment nor KEY=VALUE`);
    const key = m[1]!;
    if (!KEY_PATTERN.test(key) || key.length > KEY_MAX) {
      throw new DotenvError(`line ${i + 1}: key "${key}" must match ^[A-Z][A-Z0-9_]*$ (at most ${KEY_MAX} characters)`);
    }
    const first = i;
    let rest = m[2]!;
    let value: string;
    const quote = rest[0];
    if (quote === '"' || quote === "'") {
      // Collect lines until the closing quote (not escaped, for double quotes).
      let body = rest.slice(1);
      let close = findClose(body, quote);
      while (close < 0) {
        if (i + 1 >= lines.length) throw new DotenvError(`line ${first + 1}: ${key}'s ${quote === '"' ? 'double' : 'single'}-quoted value is never closed`);
        body += '\n' + lines[++i]!;
        close = findClose(body, quote);
      }
      const after = body.slice(close + 1);
      if (!/^\s*(#.*)?$/.test(after)) throw new DotenvError(`line ${i + 1}: unexpected text after ${key}'s closing quote`);
      const raw = body.slice(0, close);
      value = quote === "'" ? raw : unescapeDouble(raw);
    } else {
      // Unquoted: an inline comment starts at whitespace + '#'.
      value = rest.replace(/\s+#.*$/, '').trim();
    }
    const prev = seen.get(key);
    if (prev !== undefined) throw new DotenvError(`${key} is assigned twice (lines ${prev + 1} and ${first + 1}); keep one`);
    seen.set(key, first);
    out.push({ key, value, firstLine: first, lastLine: i });
  }
  return out;
}

function findClose(body: string, quote: string): number {
  for (let j = 0; j < body.length; j++) {
    if (quote === '"' && body[j] === '\\') {
      j++;
      continue;
    }
    if (body[j] === quote) return j;
  }
  return -1;
}

function unescapeDouble(raw: string): string {
  return raw.replace(/\\(.)/gs, (_, c: string) => ({ n: '\n', r: '\r', t: '\t' } as Record<string, string>)[c] ?? c);
}

/**
 * The file without the given assignments: each one becomes a comment saying where the value
 * went; every other line (comments, blanks, other keys) stays byte for byte.
 */
export function removeEntries(text: string, entries: DotenvEntry[], note: (key: string) => string): string {
  const eol = text.includes('\r\n') ? '\r\n' : '\n';
  const lines = text.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  const byFirst = new Map(entries.map((e) => [e.firstLine, e]));
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const e = byFirst.get(i);
    if (!e) {
      out.push(lines[i]!);
      continue;
    }
    out.push(note(e.key));
    i = e.lastLine;
  }
  return out.join(eol);
}
