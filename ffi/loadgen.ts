// loadgen.ts — the bun:ffi binding of the shim's load generator (c-shim/loadgen.c): its symbols, the
// byte layouts of its three structs (checked against the library's sizes at load time), and a typed
// API: startLoadgen() returns a handle; runLoadgen() polls it with `await Bun.sleep` (the native
// threads do the work, the JS thread stays free), reports progress, enforces a hard deadline and
// returns the result. It opens the same library as ffi/lib.ts (same path, same staleness check).
import { dlopen, FFIType, type Pointer } from "bun:ffi";
import { checkBuilt, cStringAt, libraryPath } from "./lib.ts";

export const LOADGEN_LIMITS = {
  maxConnections: 100_000,
  maxLength: 1 << 20,
  maxThreads: 64,
  maxWarmupMs: 60_000,
  maxDurationMs: 3_600_000,
  maxConnectTimeoutMs: 60_000,
  maxCpus: 256,
} as const;

/** struct bunring_loadgen_config: ten 4-byte fields, then int32 cpus[256]. */
const CONFIG = {
  port: 0,
  connections: 4,
  length: 8,
  threads: 12,
  warmupMs: 16,
  durationMs: 20,
  connectTimeoutMs: 24,
  serverPid: 28,
  flags: 32,
  cpuCount: 36,
  cpus: 40,
  size: 40 + 4 * LOADGEN_LIMITS.maxCpus,
} as const;

/** struct bunring_loadgen_progress: two u32, then u64 fields. */
const PROGRESS = {
  phase: 0,
  done: 4,
  connections: 8,
  connectErrors: 16,
  errors: 24,
  responsesTotal: 32,
  responses: 40,
  nowNs: 48,
  startNs: 56,
  endNs: 64,
  size: 72,
} as const;

/** struct bunring_loadgen_result: i32 status, u32 connections, 22 u64/i64 fields, two u32, char message[256]. */
const RESULT = {
  status: 0,
  connections: 4,
  connectErrors: 8,
  mismatches: 16,
  shortReads: 24,
  ioErrors: 32,
  requests: 40,
  responses: 48,
  responsesTotal: 56,
  bytesVerified: 64,
  elapsedNs: 72,
  connectNs: 80,
  latencyMinNs: 88,
  latencyMeanNs: 96,
  latencyP50Ns: 104,
  latencyP90Ns: 112,
  latencyP99Ns: 120,
  latencyP999Ns: 128,
  latencyMaxNs: 136,
  serverCpuNs: 144,
  serverCpuTicks: 152,
  ticksPerSec: 160,
  clientCpuNs: 168,
  edgeSkewNs: 176,
  uringWorkers: 184,
  workers: 188,
  message: 192,
  messageLength: 256,
  size: 448,
} as const;

/** struct bunring_error: int32 code, char message[252]. */
const ERROR = { code: 0, message: 4, size: 256 } as const;

const symbols = {
  bunring_loadgen_config_size: { args: [], returns: FFIType.u32 },
  bunring_loadgen_progress_size: { args: [], returns: FFIType.u32 },
  bunring_loadgen_result_size: { args: [], returns: FFIType.u32 },
  bunring_loadgen_start: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr], returns: FFIType.ptr },
  bunring_loadgen_progress: { args: [FFIType.ptr, FFIType.ptr], returns: FFIType.void },
  bunring_loadgen_done: { args: [FFIType.ptr], returns: FFIType.u32 },
  bunring_loadgen_stop: { args: [FFIType.ptr], returns: FFIType.void },
  bunring_loadgen_result: { args: [FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  bunring_loadgen_free: { args: [FFIType.ptr], returns: FFIType.void },
} as const;

function open() {
  const path = libraryPath();
  checkBuilt(path);
  const s = dlopen(path, symbols).symbols;
  const sizes: [string, number, number][] = [
    ["bunring_loadgen_config", s.bunring_loadgen_config_size(), CONFIG.size],
    ["bunring_loadgen_progress", s.bunring_loadgen_progress_size(), PROGRESS.size],
    ["bunring_loadgen_result", s.bunring_loadgen_result_size(), RESULT.size],
  ];
  for (const [name, actual, expected] of sizes) {
    if (actual !== expected) {
      throw new Error(`bunring: ${path} has sizeof(struct ${name}) = ${actual}, ffi/loadgen.ts expects ${expected}; rebuild the shim`);
    }
  }
  return s;
}

let lib: ReturnType<typeof open> | undefined;
function native(): ReturnType<typeof open> {
  lib ??= open();
  return lib;
}

export interface LoadgenOptions {
  /** IPv4 or IPv6 literal. */
  host: string;
  port: number;
  connections: number;
  /** Bytes per message. */
  length: number;
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
  ioErrors: number;
  /** Messages fully written inside the measured interval. */
  requests: number;
  /** Round trips completed and verified inside the measured interval. */
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

function encodeConfig(o: LoadgenOptions): Uint8Array {
  const bytes = new Uint8Array(CONFIG.size);
  const view = new DataView(bytes.buffer);
  const u32 = (offset: number, value: number) => view.setUint32(offset, value, true);
  u32(CONFIG.port, o.port);
  u32(CONFIG.connections, o.connections);
  u32(CONFIG.length, o.length);
  u32(CONFIG.threads, o.threads);
  u32(CONFIG.warmupMs, o.warmupMs);
  u32(CONFIG.durationMs, o.durationMs);
  u32(CONFIG.connectTimeoutMs, o.connectTimeoutMs);
  view.setInt32(CONFIG.serverPid, o.serverPid ?? 0, true);
  u32(CONFIG.flags, o.io === "epoll" ? FLAG_EPOLL : 0);
  const cpus = o.cpus.slice(0, LOADGEN_LIMITS.maxCpus);
  u32(CONFIG.cpuCount, cpus.length);
  cpus.forEach((cpu, i) => view.setInt32(CONFIG.cpus + 4 * i, cpu, true));
  return bytes;
}

function decodeResult(bytes: Uint8Array): LoadgenResult {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u64 = (offset: number) => Number(view.getBigUint64(offset, true));
  const i64 = (offset: number) => Number(view.getBigInt64(offset, true));
  const us = (offset: number) => u64(offset) / 1000;
  const elapsedNs = u64(RESULT.elapsedNs);
  const perSec = (n: number) => (elapsedNs > 0 ? (n * 1e9) / elapsedNs : 0);
  const cpuNs = i64(RESULT.serverCpuNs);
  const ticks = i64(RESULT.serverCpuTicks);
  const ticksPerSec = u64(RESULT.ticksPerSec) || 100;
  const fromTicks = ticks >= 0 ? (ticks * 1e6) / ticksPerSec : null;
  const clientNs = i64(RESULT.clientCpuNs);
  const requests = u64(RESULT.requests);
  const responses = u64(RESULT.responses);
  const uringWorkers = view.getUint32(RESULT.uringWorkers, true);
  const workers = view.getUint32(RESULT.workers, true);
  return {
    status: view.getInt32(RESULT.status, true),
    message: cStringAt(bytes, RESULT.message, RESULT.messageLength),
    connections: view.getUint32(RESULT.connections, true),
    connectErrors: u64(RESULT.connectErrors),
    mismatches: u64(RESULT.mismatches),
    shortReads: u64(RESULT.shortReads),
    ioErrors: u64(RESULT.ioErrors),
    requests,
    responses,
    responsesTotal: u64(RESULT.responsesTotal),
    bytesVerified: u64(RESULT.bytesVerified),
    elapsedS: elapsedNs / 1e9,
    connectS: u64(RESULT.connectNs) / 1e9,
    requestsPerSec: perSec(requests),
    responsesPerSec: perSec(responses),
    latencyUs: {
      min: us(RESULT.latencyMinNs),
      mean: us(RESULT.latencyMeanNs),
      p50: us(RESULT.latencyP50Ns),
      p90: us(RESULT.latencyP90Ns),
      p99: us(RESULT.latencyP99Ns),
      p999: us(RESULT.latencyP999Ns),
      max: us(RESULT.latencyMaxNs),
    },
    serverCpuUs: cpuNs >= 0 ? cpuNs / 1000 : fromTicks,
    serverCpuUsFromTicks: fromTicks,
    clientCpuUs: clientNs >= 0 ? clientNs / 1000 : null,
    edgeSkewUs: u64(RESULT.edgeSkewNs) / 1000,
    io: uringWorkers === 0 ? "epoll" : uringWorkers === workers ? "io_uring" : "io_uring+epoll",
  };
}

/** Starts a run (the connect phase begins at once). Throws with the shim's message on bad options. */
export function startLoadgen(options: LoadgenOptions): LoadgenHandle {
  const s = native();
  const config = encodeConfig(options);
  const host = new TextEncoder().encode(`${options.host}\0`);
  const err = new Uint8Array(ERROR.size);
  const handle = s.bunring_loadgen_start(config, host, err) as Pointer | null;
  if (!handle) {
    const code = new DataView(err.buffer).getInt32(ERROR.code, true);
    throw new Error(`bunring loadgen: ${cStringAt(err, ERROR.message, ERROR.size - ERROR.message)} (${code})`);
  }
  const progressBytes = new Uint8Array(PROGRESS.size);
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
      const now = u64(PROGRESS.nowNs);
      const start = u64(PROGRESS.startNs);
      const end = u64(PROGRESS.endNs);
      return {
        phase: PHASES[progressView.getUint32(PROGRESS.phase, true)] ?? "done",
        done: progressView.getUint32(PROGRESS.done, true) !== 0,
        connections: u64(PROGRESS.connections),
        connectErrors: u64(PROGRESS.connectErrors),
        errors: u64(PROGRESS.errors),
        responsesTotal: u64(PROGRESS.responsesTotal),
        responses: u64(PROGRESS.responses),
        measuredS: start > 0 && now > start ? (Math.min(now, end) - start) / 1e9 : 0,
        durationS: options.durationMs / 1000,
      };
    },
    done: () => s.bunring_loadgen_done(live()) !== 0,
    stop: () => s.bunring_loadgen_stop(live()),
    result() {
      const bytes = new Uint8Array(RESULT.size);
      return s.bunring_loadgen_result(live(), bytes) === 0 ? decodeResult(bytes) : null;
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
