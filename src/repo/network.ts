// Network ids: one per repository, unique on the host while any repository holds it.
// The id names the Docker socket, the secrets directory and the repo's address block.

export const NETWORK_ID_MIN = 1000;
export const NETWORK_ID_MAX = 60000;
/** Each network id owns one /29 of the host's address block. */
export const ADDRESSES_PER_REPO = 8;

/** An IPv4 CIDR as [base, prefix], or null when it is not one. */
export function parseCidr(cidr: string): [number, number] | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(cidr);
  if (!m) return null;
  const octets = m.slice(1, 5).map(Number);
  const prefix = Number(m[5]);
  if (octets.some((o) => o > 255) || prefix > 32) return null;
  return [((octets[0]! << 24) | (octets[1]! << 16) | (octets[2]! << 8) | octets[3]!) >>> 0, prefix];
}

export const formatIp = (n: number) => [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');

/** Why `cidr` cannot be the host's address block, or null when it can. */
export function addressBlockProblem(cidr: string): string | null {
  const parsed = parseCidr(cidr);
  if (!parsed) return 'must be an IPv4 CIDR such as 100.64.0.0/10';
  const [base, prefix] = parsed;
  const size = 2 ** (32 - prefix);
  if (base % size !== 0) return `${cidr}: the base address is not aligned to /${prefix}`;
  const needed = (NETWORK_ID_MAX + 1) * ADDRESSES_PER_REPO;
  if (size < needed) return `${cidr} holds ${size} addresses; network ids up to ${NETWORK_ID_MAX} with a /29 each need ${needed} (a /13 or larger)`;
  const first = base >>> 24;
  if (first === 127 || first === 0 || first >= 224) return `${cidr}: loopback, "this network" and multicast/reserved addresses cannot be routed to a repository`;
  return null;
}

function blockBase(config: { addressBlock: string }): number {
  const parsed = parseCidr(config.addressBlock);
  if (!parsed) throw new Error(`addressBlock ${config.addressBlock} is not a CIDR (the host config validates it)`);
  return parsed[0];
}

/** The repository's /29 inside the host's address block: [network address, prefix 29]. */
export function repoSubnet(networkId: number, config: { addressBlock: string }): string {
  return `${formatIp(blockBase(config) + networkId * ADDRESSES_PER_REPO)}/29`;
}

/** The six service addresses of a repository (its /29 minus network and broadcast). */
export function repoAddresses(networkId: number, config: { addressBlock: string }): string[] {
  const base = blockBase(config) + networkId * ADDRESSES_PER_REPO;
  const out: string[] = [];
  for (let i = 1; i <= 6; i++) out.push(formatIp(base + i));
  return out;
}

export const firstServiceAddress = (networkId: number, config: { addressBlock: string }) => repoAddresses(networkId, config)[0]!;

/** The host side of every repository's veth: block + 1 (ids below NETWORK_ID_MIN own no /29). */
export const gatewayAddress = (config: { addressBlock: string }) => formatIp(blockBase(config) + 1);
