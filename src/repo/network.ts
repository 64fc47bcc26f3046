// Network ids: one per repository, unique on the host while any repository holds it.
// The id names the Docker socket, the secrets directory and the repo's address block.

export const NETWORK_ID_MIN = 1000;
export const NETWORK_ID_MAX = 60000;

/** Each repository owns a /29 of loopback addresses inside 127.64.0.0/10. */
export function repoAddresses(networkId: number): string[] {
  const base = (127 << 24) + (64 << 16) + networkId * 8;
  const out: string[] = [];
  for (let i = 1; i <= 6; i++) {
    const n = base + i;
    out.push([(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.'));
  }
  return out;
}

export const firstServiceAddress = (networkId: number) => repoAddresses(networkId)[0]!;
