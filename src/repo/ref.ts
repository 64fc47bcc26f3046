// Refs: `name` is a grand, `name:tag` a fork. Both parts are lowercase RFC-1123 labels,
// so they can name hosts, containers and directories without escaping.
import { invalidInput } from '../errors.js';

const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export interface Ref {
  name: string;
  tag: string | null;
}

export function checkLabel(field: string, value: string): string {
  if (typeof value !== 'string' || value.length === 0) throw invalidInput(field, 'is empty');
  if (value.length > 63) throw invalidInput(field, `"${value.slice(0, 70)}…" is longer than 63 characters`);
  if (!LABEL.test(value)) {
    throw invalidInput(field, `"${value}" is not a lowercase RFC-1123 label (a-z, 0-9 and inner '-', at most 63)`);
  }
  return value;
}

export function parseRef(value: string, field = 'ref'): Ref {
  if (typeof value !== 'string' || value.length === 0) throw invalidInput(field, 'is empty; give NAME or NAME:TAG');
  const parts = value.split(':');
  if (parts.length > 2) throw invalidInput(field, `"${value}" has more than one ':'; give NAME or NAME:TAG`);
  const name = checkLabel(`${field} (name)`, parts[0]!);
  const tag = parts.length === 2 ? checkLabel(`${field} (tag)`, parts[1]!) : null;
  return { name, tag };
}

export const formatRef = (r: Ref) => (r.tag === null ? r.name : `${r.name}:${r.tag}`);
