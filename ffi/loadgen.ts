// loadgen.ts — the bun:ffi binding of the benchmark's load generator, a library of its own
// (bench/loadgen/loadgen.h, built by `bun run build:loadgen` into
// bench/loadgen/build/libbunring_loadgen.so; override: BUNRING_LOADGEN_LIB). It is opened through
// ffi/loader.ts like the product library: ABI version checked, every struct offset taken from the
// library's own layout description. Typed API: startLoadgen() returns a handle; runLoadgen() polls it
// with `await Bun.sleep` (the native threads do the work, the JS thread stays free), reports
// progress, enforces a hard deadline and returns the result. The library is opened on first use, so
// importing this module (for LOADGEN_LIMITS, say) needs no build.
import { FFIType, ptr, type Pointer } from "bun:ffi";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { cStringAt, openLibrary } from "./loader.ts";

/** BUNRING_LOADGEN_* limits of loadgen.h (the library checks the same numbers). */
export const LOADGEN_LIMITS = {
  maxConnections: 100_000,
  maxLength: 1 << 20,
  maxThreads: 64,
  maxWarmupMs: 60_000,
  maxDurationMs: 3_600_000,
  maxConnectTimeoutMs: 60_000,
  maxCpus: 256,
  maxPipeline: 1024,
  /** connections × pipeline, at most. */
  maxSlots: 1 << 22,
  /** Entries of a request table. */
  maxEntries: 1 << 22,
  /** Bytes of each of the request and reply tables. */
  maxTableBytes: 256 << 20,
} as const;

/** The ABI version this binding speaks (BUNRING_LOADGEN_ABI_VERSION). */
const ABI_VERSION = 2;
const LIB_NAME = "libbunring_loadgen.so";
const SOURCE_DIR = resolve(import.meta.dir, "..", "bench", "loadgen");
const BUILD_HINT =
  "build it with `bun run build:loadgen` (bash bench/loadgen/build.sh) in the bunring repository, or point BUNRING_LOADGEN_LIB at a current build";

/**
 * The library to open: $BUNRING_LOADGEN_LIB as is, else bench/loadgen/build/libbunring_loadgen.so,
 * which must exist and be no older than any of bench/loadgen's *.c, *.h and build.sh (build.sh's own
 * staleness rule). Never builds: throws an Error saying how.
 */
function locateLoadgen(): string {
  const override = process.env.BUNRING_LOADGEN_LIB;
  if (override !== undefined) {
    if (!existsSync(override)) throw new Error(`bunring: BUNRING_LOADGEN_LIB names ${override}, which does not exist; ${BUILD_HINT}`);
    return override;
  }
  const lib = join(SOURCE_DIR, "build", LIB_NAME);
  if (!existsSync(lib)) throw new Error(`bunring: the load generator library ${lib} is not built; ${BUILD_HINT}`);
  const built = statSync(lib, { bigint: true }).mtimeNs;
  const newer = readdirSync(SOURCE_DIR)
    .filter((n) => n.endsWith(".c") || n.endsWith(".h") || n === "build.sh")
    .filter((n) => statSync(join(SOURCE_DIR, n), { bigint: true }).mtimeNs > built);
  if (newer.length > 0) {
    throw new Error(`bunring: the load generator library ${lib} is older than its sources (${newer.join(", ")}); ${BUILD_HINT}`);
  }
  return lib;
}

/** char message[] of bunring_loadgen_result and bunring_loadgen_error. */
const RESULT_MESSAGE_BYTES = 256;
const ERROR_MESSAGE_BYTES = 252;

const symbols = {
  bunring_loadgen_abi_version: { args: [], returns: FFIType.u32 },
  bunring_loadgen_layout_entry: { args: [FFIType.u32, FFIType.ptr], returns: FFIType.ptr },
  bunring_loadgen_start: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr], returns: FFIType.ptr },
  bunring_loadgen_progress: { args: [FFIType.ptr, FFIType.ptr], returns: FFIType.void },
  bunring_loadgen_done: { args: [FFIType.ptr], returns: FFIType.u32 },
  bunring_loadgen_stop: { args: [FFIType.ptr], returns: FFIType.void },
  bunring_loadgen_result: { args: [FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  bunring_loadgen_free: { args: [FFIType.ptr], returns: FFIType.void },
} as const;

function open() {
  const lib = openLibrary({
    name: LIB_NAME,
    path: locateLoadgen(),
    symbols,
    abiSymbol: "bunring_loadgen_abi_version",
    abiVersion: ABI_VERSION,
    layoutSymbol: "bunring_loadgen_layout_entry",
    rebuildHint: BUILD_HINT,
  });
  const config = lib.struct("bunring_loadgen_config", {
    port: "u32",
    connections: "u32",
    length: "u32",
    threads: "u32",
    warmupMs: "u32",
    durationMs: "u32",
    connectTimeoutMs: "u32",
    serverPid: "i32",
    flags: "u32",
    cpuCount: "u32",
    cpus: { bytes: 4 * LOADGEN_LIMITS.maxCpus },
    pipeline: "u32",
    requestLen: "u32",
    requestCount: "u32",
    replyLen: "u32",
    replyCount: "u32",
    requests: "u64",
    replies: "u64",
  });
  const progress = lib.struct("bunring_loadgen_progress", {
    phase: "u32",
    done: "u32",
    connections: "u64",
    connectErrors: "u64",
    errors: "u64",
    responsesTotal: "u64",
    responses: "u64",
    nowNs: "u64",
    startNs: "u64",
    endNs: "u64",
  });
  const result = lib.struct("bunring_loadgen_result", {
    status: "i32",
    connections: "u32",
    connectErrors: "u64",
    mismatches: "u64",
    shortReads: "u64",
    extras: "u64",
    ioErrors: "u64",
    requests: "u64",
    responses: "u64",
    responsesTotal: "u64",
    bytesVerified: "u64",
    elapsedNs: "u64",
    connectNs: "u64",
    latencyMinNs: "u64",
    latencyMeanNs: "u64",
    latencyP50Ns: "u64",
    latencyP90Ns: "u64",
    latencyP99Ns: "u64",
    latencyP999Ns: "u64",
    latencyMaxNs: "u64",
    serverCpuNs: "i64",
    serverCpuTicks: "i64",
    ticksPerSec: "u64",
    clientCpuNs: "i64",
    edgeSkewNs: "u64",
    uringWorkers: "u32",
    workers: "u32",
    message: { bytes: RESULT_MESSAGE_BYTES },
  });
  const error = lib.struct("bunring_loadgen_error", { code: "i32", message: { bytes: ERROR_MESSAGE_BYTES } });
  return { symbols: lib.symbols, config, progress, result, error };
}

type Native = ReturnType<typeof open>;
let loaded: Native | undefined;
function native(): Native {
  loaded ??= open();
  return loaded;
}

/**
 * A request/reply workload: `count` requests of `requestLen` bytes each, laid end to end in
 * `requests`, and their replies (`replyLen` bytes each) in `replies`, which holds either one reply
 * (every request gets the same) or `count`. Request s of connection i is entry
 * (i + s × connections) % count: each connection cycles through its share. The library copies both
 * tables when the run starts.
 */
export interface LoadgenTable {
  requests: Uint8Array;
  requestLen: number;
  replies: Uint8Array;
  replyLen: number;
}

export interface LoadgenOptions {
  /** IPv4 or IPv6 literal. */
  host: string;
  port: number;
  connections: number;
  /** Echo workload: bytes per message (ignored with `table`). */
  length: number;
  /** Requests in flight per connection (default 1); replies are matched in order. */
  pipeline?: number;
  /** The request/reply table; absent: the echo workload. */
  table?: LoadgenTable;
  /** Worker threads (each with its own io_uring or epoll); at most one per connection. */
  threads: number;
  warmupMs: number;
  durationMs: number;
  connectTimeoutMs: number;
  /** Worker i runs on cpus[i % cpus.length]; empty = not pinned. */
  cpus: readonly number[];
  /** Sample this process's CPU time at the edges of the measured interval. */
  serverPid?: number;
  /** "uring" (default): io_uring where the kernel allows, else epoll; "epoll": epoll always. */
  io?: LoadgenIo;
}

export type LoadgenIo = "uring" | "epoll";

/** Flag bits of struct bunring_loadgen_config. */
const FLAG_EPOLL = 1;

export type LoadgenPhase = "connecting" | "warmup" | "measuring" | "draining" | "done";
const PHASES: readonly LoadgenPhase[] = ["connecting", "warmup", "measuring", "draining", "done"];

export interface LoadgenProgress {
  phase: LoadgenPhase;
  done: boolean;
  connections: number;
  connectErrors: number;
  errors: number;
  responsesTotal: number;
  /** Round trips inside the measured interval so far. */
  responses: number;
  /** Seconds into the measured interval (0 before it starts), and its length. */
  measuredS: number;
  durationS: number;
}

export interface LoadgenResult {
  /** 0 = ran to the end; else -errno, and message says why. */
  status: number;
  message: string;
  connections: number;
  connectErrors: number;
  mismatches: number;
  shortReads: number;
  /** Connections that received bytes while no request was outstanding. */
  extras: number;
  ioErrors: number;
  /** Requests fully written inside the measured interval. */
  requests: number;
  /** Replies completed and verified inside the measured interval. */
  responses: number;
  responsesTotal: number;
  bytesVerified: number;
  elapsedS: number;
  connectS: number;
  requestsPerSec: number;
  responsesPerSec: number;
  latencyUs: { min: number; mean: number; p50: number; p90: number; p99: number; p999: number; max: number };
  /** Server CPU over the interval in µs: the process CPU clock, else /proc ticks; null if not sampled. */
  serverCpuUs: number | null;
  /** The same from /proc/<pid>/stat utime+stime (10 ms resolution), null if not sampled. */
  serverCpuUsFromTicks: number | null;
  /** The load generator's own worker CPU over the interval, µs. */
  clientCpuUs: number | null;
  /** How late the CPU samples were taken after the interval edges, µs. */
  edgeSkewUs: number;
  /** What the workers' traffic ran on: "io_uring", "epoll", or "io_uring+epoll" if some fell back. */
  io: string;
}

export interface LoadgenHandle {
  progress(): LoadgenProgress;
  done(): boolean;
  /** Asks the run to end early; the result then has status -ECANCELED. */
  stop(): void;
  /** The result, or null while the run is not done. */
  result(): LoadgenResult | null;
  /** Stops if needed, joins the native threads and frees them (blocks ≤ ~1.2 s after a stop). */
  free(): void;
}

function encodeConfig(at: Native["config"], o: LoadgenOptions): Uint8Array {
  const bytes = new Uint8Array(at.size);
  const view = new DataView(bytes.buffer);
  const u32 = (offset: number, value: number) => view.setUint32(offset, value, true);
  u32(at.port, o.port);
  u32(at.connections, o.connections);
  u32(at.length, o.length);
  u32(at.threads, o.threads);
  u32(at.warmupMs, o.warmupMs);
  u32(at.durationMs, o.durationMs);
  u32(at.connectTimeoutMs, o.connectTimeoutMs);
  view.setInt32(at.serverPid, o.serverPid ?? 0, true);
  u32(at.flags, o.io === "epoll" ? FLAG_EPOLL : 0);
  const cpus = o.cpus.slice(0, LOADGEN_LIMITS.maxCpus);
  u32(at.cpuCount, cpus.length);
  cpus.forEach((cpu, i) => view.setInt32(at.cpus + 4 * i, cpu, true));
  u32(at.pipeline, o.pipeline ?? 1);
  const t = o.table;
  if (t) {
    const whole = (n: number, len: number) => len > 0 && n > 0 && n % len === 0 ? n / len : 0;
    const count = whole(t.requests.length, t.requestLen);
    const replies = whole(t.replies.length, t.replyLen);
    if (count === 0 || (replies !== 1 && replies !== count)) {
      throw new Error(
        `bunring loadgen: the table holds ${t.requests.length} request bytes of ${t.requestLen} each and ` +
          `${t.replies.length} reply bytes of ${t.replyLen} each; it needs whole requests and 1 or as many replies`,
      );
    }
    u32(at.requestLen, t.requestLen);
    u32(at.requestCount, count);
    u32(at.replyLen, t.replyLen);
    u32(at.replyCount, replies);
    // Read by start() only, which copies the tables: the arrays need to live until it returns.
    view.setBigUint64(at.requests, BigInt(ptr(t.requests)), true);
    view.setBigUint64(at.replies, BigInt(ptr(t.replies)), true);
  }
  return bytes;
}

function decodeResult(at: Native["result"], bytes: Uint8Array): LoadgenResult {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u64 = (offset: number) => Number(view.getBigUint64(offset, true));
  const i64 = (offset: number) => Number(view.getBigInt64(offset, true));
  const us = (offset: number) => u64(offset) / 1000;
  const elapsedNs = u64(at.elapsedNs);
  const perSec = (n: number) => (elapsedNs > 0 ? (n * 1e9) / elapsedNs : 0);
  const cpuNs = i64(at.serverCpuNs);
  const ticks = i64(at.serverCpuTicks);
  const ticksPerSec = u64(at.ticksPerSec) || 100;
  const fromTicks = ticks >= 0 ? (ticks * 1e6) / ticksPerSec : null;
  const clientNs = i64(at.clientCpuNs);
  const requests = u64(at.requests);
  const responses = u64(at.responses);
  const uringWorkers = view.getUint32(at.uringWorkers, true);
  const workers = view.getUint32(at.workers, true);
  return {
    status: view.getInt32(at.status, true),
    message: cStringAt(bytes, at.message, RESULT_MESSAGE_BYTES),
    connections: view.getUint32(at.connections, true),
    connectErrors: u64(at.connectErrors),
    mismatches: u64(at.mismatches),
    shortReads: u64(at.shortReads),
    extras: u64(at.extras),
    ioErrors: u64(at.ioErrors),
    requests,
    responses,
    responsesTotal: u64(at.responsesTotal),
    bytesVerified: u64(at.bytesVerified),
    elapsedS: elapsedNs / 1e9,
    connectS: u64(at.connectNs) / 1e9,
    requestsPerSec: perSec(requests),
    responsesPerSec: perSec(responses),
    latencyUs: {
      min: us(at.latencyMinNs),
      mean: us(at.latencyMeanNs),
      p50: us(at.latencyP50Ns),
      p90: us(at.latencyP90Ns),
      p99: us(at.latencyP99Ns),
      p999: us(at.latencyP999Ns),
      max: us(at.latencyMaxNs),
    },
    serverCpuUs: cpuNs >= 0 ? cpuNs / 1000 : fromTicks,
    serverCpuUsFromTicks: fromTicks,
    clientCpuUs: clientNs >= 0 ? clientNs / 1000 : null,
    edgeSkewUs: u64(at.edgeSkewNs) / 1000,
    io: uringWorkers === 0 ? "epoll" : uringWorkers === workers ? "io_uring" : "io_uring+epoll",
  };
}

/** Starts a run (the connect phase begins at once). Throws with the shim's message on bad options. */
export function startLoadgen(options: LoadgenOptions): LoadgenHandle {
  const lib = native();
  const s = lib.symbols;
  const config = encodeConfig(lib.config, options);
  const host = new TextEncoder().encode(`${options.host}\0`);
  const err = new Uint8Array(lib.error.size);
  const handle = s.bunring_loadgen_start(config, host, err) as Pointer | null;
  if (!handle) {
    const code = new DataView(err.buffer).getInt32(lib.error.code, true);
    throw new Error(`bunring loadgen: ${cStringAt(err, lib.error.message, ERROR_MESSAGE_BYTES)} (${code})`);
  }
  const progressBytes = new Uint8Array(lib.progress.size);
  const progressView = new DataView(progressBytes.buffer);
  let freed = false;
  const live = () => {
    if (freed) throw new Error("bunring loadgen: the run was already freed");
    return handle;
  };
  return {
    progress() {
      s.bunring_loadgen_progress(live(), progressBytes);
      const u64 = (offset: number) => Number(progressView.getBigUint64(offset, true));
      const now = u64(lib.progress.nowNs);
      const start = u64(lib.progress.startNs);
      const end = u64(lib.progress.endNs);
      return {
        phase: PHASES[progressView.getUint32(lib.progress.phase, true)] ?? "done",
        done: progressView.getUint32(lib.progress.done, true) !== 0,
        connections: u64(lib.progress.connections),
        connectErrors: u64(lib.progress.connectErrors),
        errors: u64(lib.progress.errors),
        responsesTotal: u64(lib.progress.responsesTotal),
        responses: u64(lib.progress.responses),
        measuredS: start > 0 && now > start ? (Math.min(now, end) - start) / 1e9 : 0,
        durationS: options.durationMs / 1000,
      };
    },
    done: () => s.bunring_loadgen_done(live()) !== 0,
    stop: () => s.bunring_loadgen_stop(live()),
    result() {
      const bytes = new Uint8Array(lib.result.size);
      return s.bunring_loadgen_result(live(), bytes) === 0 ? decodeResult(lib.result, bytes) : null;
    },
    free() {
      if (freed) return;
      freed = true;
      s.bunring_loadgen_free(handle);
    },
  };
}

export interface RunHooks {
  /** Called every pollMs with a fresh snapshot. */
  onProgress?: (p: LoadgenProgress) => void;
  pollMs?: number;
  /** Abort (e.g. on SIGINT): the run stops early and its partial result is returned. */
  signal?: AbortSignal;
}

/**
 * Runs one load to completion without blocking the JS thread: polls every pollMs (default 100) and
 * returns the result. Hard deadline: connect timeout + warm-up + duration + 5 s; past it the run is
 * stopped, and if the native side still has not finished 5 s later this throws (leaving it allocated
 * rather than blocking forever in free()).
 */
export async function runLoadgen(options: LoadgenOptions, hooks: RunHooks = {}): Promise<LoadgenResult> {
  const run = startLoadgen(options);
  const pollMs = hooks.pollMs ?? 100;
  const deadline = performance.now() + options.connectTimeoutMs + options.warmupMs + options.durationMs + 5000;
  let stoppedAt: number | undefined;
  const stop = () => {
    if (stoppedAt === undefined) {
      stoppedAt = performance.now();
      run.stop();
    }
  };
  hooks.signal?.addEventListener("abort", stop, { once: true });
  try {
    for (;;) {
      const p = run.progress();
      hooks.onProgress?.(p);
      if (p.done) break;
      if (performance.now() > deadline) stop();
      if (stoppedAt !== undefined && performance.now() - stoppedAt > 5000) {
        throw new Error("bunring loadgen: the native run did not finish within 5 s of being stopped");
      }
      await Bun.sleep(pollMs);
    }
    const result = run.result();
    run.free();
    if (!result) throw new Error("bunring loadgen: done but no result");
    return result;
  } finally {
    hooks.signal?.removeEventListener("abort", stop);
  }
}
