// index.ts — the typed face of the shim for src/: start a native server from a plain config object,
// read its counters through one mapping of the stats block, stop/free it, probe the kernel, and
// encode/decode user_data through the C functions. No other module touches pointers.
import { toArrayBuffer, type Pointer } from "bun:ffi";
import { cStringAt, native } from "./lib.ts";
import {
  BACKEND_CODES,
  CONFIG,
  CONFIG_FLAGS,
  CONFIG_SIZE,
  ERROR,
  MAX_CPUS,
  STAT_NAMES,
  STATS_STRIDE,
  type StatName,
} from "./layout.ts";

export { STAT_NAMES, MAX_CPUS, MAX_THREADS, type StatName } from "./layout.ts";
export { libraryPath } from "./lib.ts";

export type NativeStats = Record<StatName, number>;

export interface NativeConfig {
  backend: keyof typeof BACKEND_CODES;
  port: number;
  threads: number;
  bufferSize: number;
  bufferCount: number;
  maxConnections: number;
  maxPendingBytes: number;
  backlog: number;
  drainMs: number;
  idleTimeoutMs: number;
  cpus: readonly number[];
  sqpoll: boolean;
  /** Testing aids: skip DEFER_TASKRUN, or act as if io_uring were unavailable. */
  noDefer?: boolean;
  forceNoUring?: boolean;
}

/** An error reported by the shim: negative errno and its message. */
export interface NativeError {
  code: number;
  message: string;
}

export interface NativeServer {
  port: number;
  threads: number;
  features: string[];
  readStats(): NativeStats;
  /** Asks the loops to stop; returns at once. */
  stop(drainMs: number): void;
  /** True once every loop thread has finished. */
  done(): boolean;
  /** Joins the threads and frees the server; the stats mapping is invalid afterwards. */
  free(): void;
}

function encodeConfig(cfg: NativeConfig): Uint8Array {
  const bytes = new Uint8Array(CONFIG_SIZE);
  const view = new DataView(bytes.buffer);
  const u32 = (offset: number, value: number) => view.setUint32(offset, value, true);
  u32(CONFIG.backend, BACKEND_CODES[cfg.backend]);
  u32(CONFIG.port, cfg.port);
  u32(CONFIG.threads, cfg.threads);
  u32(CONFIG.bufferSize, cfg.bufferSize);
  u32(CONFIG.bufferCount, cfg.bufferCount);
  u32(CONFIG.maxConnections, cfg.maxConnections);
  u32(CONFIG.maxPendingBytes, cfg.maxPendingBytes);
  u32(CONFIG.backlog, cfg.backlog);
  u32(CONFIG.drainMs, cfg.drainMs);
  u32(CONFIG.idleTimeoutMs, cfg.idleTimeoutMs);
  let flags = 0;
  if (cfg.sqpoll) flags |= CONFIG_FLAGS.sqpoll;
  if (cfg.noDefer) flags |= CONFIG_FLAGS.noDefer;
  if (cfg.forceNoUring) flags |= CONFIG_FLAGS.forceNoUring;
  u32(CONFIG.flags, flags);
  const cpus = cfg.cpus.slice(0, MAX_CPUS);
  u32(CONFIG.cpuCount, cpus.length);
  cpus.forEach((cpu, i) => view.setInt32(CONFIG.cpus + 4 * i, cpu, true));
  return bytes;
}

function readError(bytes: Uint8Array): NativeError {
  return {
    code: new DataView(bytes.buffer).getInt32(ERROR.code, true),
    message: cStringAt(bytes, ERROR.message, ERROR.messageLength),
  };
}

function cString(s: string): Uint8Array {
  return new TextEncoder().encode(s + "\0");
}

function featureList(bits: number): string[] {
  const names = native().featureNames;
  return names.filter((_, bit) => (bits & (1 << bit)) !== 0);
}

/** Starts a native server; throws the shim's NativeError (not an Error) on failure. */
export function startNative(cfg: NativeConfig, host: string): NativeServer {
  const lib = native().symbols;
  const config = encodeConfig(cfg);
  const err = new Uint8Array(ERROR.size);
  const handle = lib.bunring_server_start(config, cString(host), err);
  if (!handle) throw readError(err);
  const threads = lib.bunring_server_threads(handle);
  // One mapping of the counters for the server's life: threads blocks of STATS_STRIDE u64 values,
  // read as u32 pairs (little-endian) so no BigInt is made per read.
  const statsPtr = lib.bunring_server_stats(handle) as Pointer;
  const words = new Uint32Array(toArrayBuffer(statsPtr, 0, threads * STATS_STRIDE * 8));
  let freed = false;
  return {
    port: lib.bunring_server_port(handle),
    threads,
    features: featureList(lib.bunring_server_features(handle)),
    readStats() {
      const out = {} as NativeStats;
      for (let i = 0; i < STAT_NAMES.length; i++) {
        let sum = 0;
        for (let t = 0; t < threads; t++) {
          const w = (t * STATS_STRIDE + i) * 2;
          sum += words[w]! + words[w + 1]! * 0x100000000;
        }
        out[STAT_NAMES[i]!] = sum;
      }
      return out;
    },
    stop(drainMs) {
      if (!freed) lib.bunring_server_stop(handle, drainMs);
    },
    done() {
      return freed || lib.bunring_server_done(handle) === 1;
    },
    free() {
      if (freed) return;
      freed = true;
      lib.bunring_server_free(handle);
    },
  };
}

export interface ProbeResult {
  kernel: string;
  features: string[];
  error?: NativeError;
}

/** What the running kernel's io_uring supports. */
export function probeNative(): ProbeResult {
  const lib = native().symbols;
  const err = new Uint8Array(ERROR.size);
  const release = new Uint8Array(128);
  const bits = lib.bunring_probe(err, release, release.length);
  const kernel = cStringAt(release, 0, release.length);
  const error = readError(err);
  return { kernel, features: featureList(bits), ...(error.code !== 0 ? { error } : {}) };
}

export interface UserData {
  op: number;
  bid: number;
  slot: number;
  gen: number;
}

/** user_data encode/decode through the shim's own functions (layout in c-shim/bunring.h). */
export const userData = {
  encode(op: number, bid: number, slot: number, gen: number): bigint {
    return BigInt(native().symbols.bunring_ud_encode(op, bid, slot, gen));
  },
  decode(ud: bigint): UserData {
    const s = native().symbols;
    return {
      op: s.bunring_ud_decode_op(ud),
      bid: s.bunring_ud_decode_bid(ud),
      slot: s.bunring_ud_decode_slot(ud),
      gen: s.bunring_ud_decode_gen(ud),
    };
  },
  limits: { op: 0xff, bid: 0xffff, slot: (1 << 20) - 1, gen: (1 << 20) - 1 },
} as const;

