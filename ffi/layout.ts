// layout.ts — byte layouts of the C structs in c-shim/bunring.h, mirrored by offset, and the order of
// the stats counters. ffi/lib.ts checks these against the loaded library at load time, so a header
// change that is not reflected here fails loudly instead of reading the wrong fields.

export const ABI_VERSION = 1;

/** struct bunring_config: twelve u32 fields, then int32 cpus[MAX_CPUS]. */
export const CONFIG = {
  backend: 0,
  port: 4,
  threads: 8,
  bufferSize: 12,
  bufferCount: 16,
  maxConnections: 20,
  maxPendingBytes: 24,
  backlog: 28,
  drainMs: 32,
  idleTimeoutMs: 36,
  flags: 40,
  cpuCount: 44,
  cpus: 48,
} as const;
export const MAX_CPUS = 256;
export const MAX_THREADS = 64;
export const CONFIG_SIZE = CONFIG.cpus + 4 * MAX_CPUS;

export const CONFIG_FLAGS = {
  sqpoll: 1 << 0,
  noDefer: 1 << 1,
  forceNoUring: 1 << 2,
} as const;

export const BACKEND_CODES = { uring: 0, epoll: 1 } as const;

/** struct bunring_error: int32 code, char message[252]. */
export const ERROR = { code: 0, message: 4, messageLength: 252, size: 256 } as const;

/** enum bunring_stat, in order. */
export const STAT_NAMES = [
  "connAccepted",
  "connOpen",
  "connClosedEof",
  "connClosedReset",
  "connClosedStop",
  "connClosedIdle",
  "connRejected",
  "acceptErrors",
  "bytesIn",
  "bytesOut",
  "bytesDiscarded",
  "recvCompletions",
  "sendCompletions",
  "shortSends",
  "sendEagain",
  "enobufs",
  "pauses",
  "pausedNow",
  "recvRearms",
  "acceptRearms",
  "staleCompletions",
  "loopIterations",
  "waitCalls",
  "allocsAfterStart",
  "buffersTotal",
  "buffersInUse",
  "errors",
] as const;
export type StatName = (typeof STAT_NAMES)[number];
/** Counters per loop block (BUNRING_STATS_STRIDE). */
export const STATS_STRIDE = 32;
