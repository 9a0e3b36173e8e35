// server.ts — serve() and probe(): the public, Bun.listen-shaped face of a native echo server. Starts
// the shim's loops (synchronously: the server listens when serve() returns), turns shim errors into
// Errors that say what to do, reads live counters, and stops gracefully without blocking the JS thread.
import { constants } from "node:os";
import { probeNative, startNative, type NativeError, type NativeServer, type NativeStats } from "../ffi/server.ts";
import { checkDrainMs, resolveOptions, type Backend, type ServeOptions } from "./options.ts";

export type ServerStats = NativeStats;

export interface Server {
  readonly backend: Backend;
  readonly host: string;
  readonly port: number;
  readonly threads: number;
  /** io_uring features in use (empty for epoll). */
  readonly features: readonly string[];
  /** Set when backend "auto" fell back to epoll: why io_uring could not be used. */
  readonly fallbackReason?: string;
  /** True once stop() has finished. */
  readonly stopped: boolean;
  /** Live counters summed over all loops (the final values once stopped). */
  stats(): ServerStats;
  /**
   * Stops accepting, lets in-flight echoes finish for up to drainMs, closes everything, frees. Called
   * again while stopping, a shorter drainMs brings the deadline closer (0 closes every connection now).
   */
  stop(options?: { drainMs?: number }): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface ProbeReport {
  kernel: string;
  /** Whether the io_uring backend can run here. */
  uring: boolean;
  /** Why not, when it cannot. */
  reason?: string;
  features: string[];
}

/**
 * BUNRING_DISABLE_URING=1 makes bunring behave as if the kernel refused io_uring (as under a seccomp
 * filter or kernel.io_uring_disabled=2): how the fallback and the error paths are tested.
 */
function uringDisabledByEnv(): boolean {
  return process.env.BUNRING_DISABLE_URING === "1";
}

/** What the running kernel's io_uring supports, and whether bunring's io_uring backend can run. */
export function probe(): ProbeReport {
  if (uringDisabledByEnv()) {
    return { kernel: probeNative().kernel, uring: false, reason: "io_uring is disabled (BUNRING_DISABLE_URING=1)", features: [] };
  }
  const p = probeNative();
  const uring = p.features.includes("multishot_recv");
  return {
    kernel: p.kernel,
    uring,
    ...(uring ? {} : { reason: p.error?.message ?? "io_uring is unavailable" }),
    features: p.features,
  };
}

const errnoNames = new Map<number, string>(Object.entries(constants.errno).map(([name, n]) => [n, name]));

/** A shim start failure as an Error naming the backend and address, with .code ("EADDRINUSE") and .errno. */
export function toError(e: NativeError, backend: Backend, host: string, port: number): Error {
  const name = errnoNames.get(-e.code) ?? `errno ${-e.code}`;
  const hint = backend === "uring" && /io_uring/.test(e.message) && !/epoll/.test(e.message) ? "; use backend 'epoll'" : "";
  const err = new Error(`bunring: could not start the ${backend} server on ${host}:${port}: ${e.message}${hint}`);
  return Object.assign(err, { code: name, errno: e.code });
}

/**
 * Polls a condition without blocking the JS thread (the loops finish on their own threads), at most
 * `maxWaitMs` apart.
 */
export async function until(done: () => boolean, maxWaitMs = 5): Promise<void> {
  let wait = 0;
  while (!done()) {
    await Bun.sleep(wait);
    wait = Math.min(wait + 1, maxWaitMs);
  }
}

/** How often a server that stopped accepting looks whether its last connection has closed. */
const STOP_ACCEPTING_POLL_MS = 50;

/** stop() and stats() of a running native server, shared by serve() and listen(). */
export interface StopControl {
  stop(options?: { drainMs?: number }): Promise<void>;
  /**
   * Stops accepting and keeps serving the open connections; resolves once the last has closed and
   * everything is freed (a stop() meanwhile drains and closes them as usual).
   */
  stopAccepting(): Promise<void>;
  /** Live counters, or the final ones once stopped. */
  stats(): ServerStats;
  stopped(): boolean;
}

/**
 * The stop sequence: ask the loops to stop (again with a shorter drainMs: closer deadline), poll
 * done() without blocking, run `beforeFree` (listen() delivers the loops' last events there), keep
 * the final counters, free, then run `afterFree`.
 */
export function stopControl(native: NativeServer, drainDefault: number, hooks: { beforeFree?(): void; afterFree?(): void } = {}): StopControl {
  let finalStats: ServerStats | undefined;
  let stopping: Promise<void> | undefined;
  const stop = (options?: { drainMs?: number }): Promise<void> => {
    let drainMs: number;
    try {
      drainMs = options?.drainMs === undefined ? drainDefault : checkDrainMs(options.drainMs);
    } catch (e) {
      return Promise.reject(e);
    }
    // Called again during the drain: a shorter drainMs moves the deadline closer (0 closes now).
    if (finalStats === undefined) native.stop(drainMs);
    return finish(5);
  };
  /** Polls done(), then the last events, the final counters and free (once, however often asked). */
  const finish = (pollMs: number): Promise<void> =>
    (stopping ??= until(() => native.done(), pollMs).then(() => {
      try {
        hooks.beforeFree?.();
      } finally {
        finalStats = native.readStats();
        native.free();
        hooks.afterFree?.();
      }
    }));
  const stopAccepting = (): Promise<void> => {
    if (finalStats === undefined && stopping === undefined) native.closeListener();
    return finish(STOP_ACCEPTING_POLL_MS);
  };
  return { stop, stopAccepting, stats: () => finalStats ?? native.readStats(), stopped: () => finalStats !== undefined };
}

function wrap(native: NativeServer, backend: Backend, host: string, drainDefault: number, fallbackReason?: string): Server {
  const control = stopControl(native, drainDefault);
  return {
    backend,
    host,
    port: native.port,
    threads: native.threads,
    features: backend === "uring" ? native.features : [],
    ...(fallbackReason ? { fallbackReason } : {}),
    get stopped() {
      return control.stopped();
    },
    stats: control.stats,
    stop: control.stop,
    [Symbol.asyncDispose]: () => control.stop(),
  };
}

/**
 * Starts an echo server; it is listening when this returns. Throws TypeError/RangeError for a bad
 * option and Error (with .code such as "EADDRINUSE") when the socket or io_uring cannot be set up.
 */
export function serve(options?: ServeOptions): Server {
  const { backend: wanted, host, config } = resolveOptions(options);
  let backend: Backend = wanted === "auto" ? "uring" : wanted;
  let fallbackReason: string | undefined;
  if (wanted === "auto") {
    const p = probe();
    if (!p.uring) {
      backend = "epoll";
      fallbackReason = p.reason;
    }
  }
  const start = (b: Backend) =>
    startNative({ ...config, backend: b, sqpoll: b === "uring" && config.sqpoll, forceNoUring: uringDisabledByEnv() }, host);
  let native: NativeServer;
  try {
    native = start(backend);
  } catch (e) {
    const ne = e as NativeError;
    if (typeof ne.code !== "number") throw e;
    // "auto": io_uring passed the probe but still failed to set up (e.g. locked memory limits).
    if (wanted === "auto" && backend === "uring" && !/in use|permission|address/.test(ne.message)) {
      backend = "epoll";
      fallbackReason = ne.message;
      try {
        native = start(backend);
      } catch (e2) {
        throw toError(e2 as NativeError, backend, host, config.port);
      }
    } else {
      throw toError(ne, backend, host, config.port);
    }
  }
  return wrap(native, backend, host, config.drainMs, fallbackReason);
}
