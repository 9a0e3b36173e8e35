/**
 * Starting and stopping servers in tests: which backends run here, every server a test starts is
 * remembered so an afterEach can stop it even when the test failed half-way, waiting on the stats
 * (statsReach), and "quiet": wait until all traffic the test sent has been echoed and every
 * connection closed, then check the counters against what the test did.
 */
import { afterEach, expect } from "bun:test";
import { probe, serve, type Listener } from "../../src/index.ts";
import { waitFor } from "./wait.ts";

export type ServeOptions = NonNullable<Parameters<typeof serve>[0]>;
export type Server = ReturnType<typeof serve>;
export type ServerStats = ReturnType<Server["stats"]>;

export const BACKENDS = ["uring", "epoll"] as const;
export type Backend = (typeof BACKENDS)[number];

const probed = probe();
/** io_uring is usable on this machine (else uring variants are skipped, with the reason printed). */
export const URING_OK = probed.uring;
if (!URING_OK) console.warn(`bunring tests: io_uring unavailable (${probed.reason ?? "?"}); uring cases skipped`);

export function backendAvailable(b: Backend): boolean {
  return b === "epoll" || URING_OK;
}

const live = new Set<Server>();

/** serve() on an ephemeral loopback port (unless the options say otherwise), tracked for cleanup. */
export function startServer(backend: Backend, opts: ServeOptions = {}): Server {
  const s = serve({ backend, port: 0, host: "127.0.0.1", ...opts });
  live.add(s);
  return s;
}

/** Stops a tracked server (default: no drain wait) and forgets it. */
export async function stopServer(s: Server, drainMs = 0): Promise<void> {
  live.delete(s);
  await s.stop({ drainMs });
}

/** For afterEach: stops every server a test left running. */
export async function stopAll(): Promise<void> {
  const all = [...live];
  live.clear();
  await Promise.all(all.map((s) => s.stop({ drainMs: 0 }).catch(() => undefined)));
}

export function fmtStats(s: ServerStats): string {
  return JSON.stringify(s);
}

/** Waits until a predicate over the server's stats holds; the timeout message shows the stats then. */
export async function statsReach<S>(stats: () => S, ok: (s: S) => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  await waitFor(() => ok(stats()), () => `${what}; stats: ${JSON.stringify(stats())}`, { timeoutMs, intervalMs: 5 });
}

export interface QuietExpect {
  /** Total bytes the test sent (and so must have been received and echoed). */
  bytes: number;
  /** Connections the test made. */
  conns: number;
  timeoutMs?: number;
}

/**
 * Waits until the server is quiet (no connection open, everything sent echoed), then checks the
 * counters agree exactly with what the test did. Returns the final stats.
 */
export async function expectQuiet(s: Server, e: QuietExpect): Promise<ServerStats> {
  await waitFor(
    () => {
      const st = s.stats();
      return st.connOpen === 0 && st.connAccepted >= e.conns && st.bytesOut >= e.bytes && st.buffersInUse === 0;
    },
    () => `server quiet with ${e.conns} connections and ${e.bytes} bytes: ${fmtStats(s.stats())}`,
    { timeoutMs: e.timeoutMs ?? 15_000 },
  );
  const st = s.stats();
  expect({
    bytesIn: st.bytesIn,
    bytesOut: st.bytesOut,
    connAccepted: st.connAccepted,
    connOpen: st.connOpen,
    allocsAfterStart: st.allocsAfterStart,
    errors: st.errors,
    buffersInUse: st.buffersInUse,
    pausedNow: st.pausedNow,
  }).toEqual({
    bytesIn: e.bytes,
    bytesOut: e.bytes,
    connAccepted: e.conns,
    connOpen: 0,
    allocsAfterStart: 0,
    errors: 0,
    buffersInUse: 0,
    pausedNow: 0,
  });
  return st;
}

/**
 * listen() servers a test file starts: add each to the returned set, and after every test each one
 * still there is stopped at once (stop(true)), even when the test failed half-way.
 */
export function stopListenersAfterEach(): Set<Listener> {
  const live = new Set<Listener>();
  afterEach(async () => {
    const all = [...live];
    live.clear();
    await Promise.all(all.map((l) => l.stop(true).catch(() => undefined)));
  });
  return live;
}
