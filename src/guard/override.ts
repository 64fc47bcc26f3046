// TINE_ALLOW_GRAND_REPO: `*`, a name, or a comma list; spaces and empty items are tolerated.

export type Override = { all: true } | { all: false; names: ReadonlySet<string> };

/** Parse the variable's value; null when unset or it names nothing. */
export function parseOverride(value: string | undefined): Override | null {
  if (value === undefined) return null;
  const items = value.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  if (!items.length) return null;
  if (items.includes('*')) return { all: true };
  return { all: false, names: new Set(items) };
}

export function overrideCovers(o: Override | null, name: string): boolean {
  if (!o) return false;
  return o.all || o.names.has(name);
}

/** Canonical text, so `a, b` and `b,a` compare equal. */
export function formatOverride(o: Override | null): string | null {
  if (!o) return null;
  return o.all ? '*' : [...o.names].sort().join(',');
}

export const sameOverride = (a: Override | null, b: Override | null) => formatOverride(a) === formatOverride(b);
