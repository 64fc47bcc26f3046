// Storage sits behind a driver with a capability record (as Incus's storage drivers do):
// generic code asks what a driver can do, never which driver it is.

export interface StoreCapabilities {
  /** A snapshot of a live volume is one atomic point in time (no copy loop). */
  atomicSnapshot: boolean;
  /** Snapshots can be made read-only (for send/receive and pinned bases). */
  readonlySnapshot: boolean;
  /** Files can be cloned by reference (FICLONE) when copying a tree in. */
  reflinkCopy: boolean;
  /** The filesystem must be frozen around a snapshot to make it consistent. */
  needsFreezeForConsistency: boolean;
  /** Volumes can be streamed to another host incrementally (btrfs send/receive). */
  sendReceive: boolean;
}

export interface StoreDriver {
  readonly name: string;
  readonly caps: StoreCapabilities;
  /** Throws a TineError (exit 7) when `dir` cannot hold this driver's volumes. */
  check(dir: string): void;
  createVolume(path: string): Promise<void>;
  snapshotVolume(src: string, dst: string, opts?: { readonly?: boolean }): Promise<void>;
  destroyVolume(path: string): Promise<void>;
  volumeExists(path: string): boolean;
  /** Copy a directory tree into an existing volume, cloning extents where possible. */
  copyTreeIn(srcDir: string, volume: string): Promise<void>;
}
