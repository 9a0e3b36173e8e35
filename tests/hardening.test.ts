// hardening.test.ts — one test (or a few) per hardening fix, each written so that it fails on the
// behaviour before the fix (named in each test's comment):
//   1. cpus given as a sparse array is rejected (TypeError naming cpus and the missing entry).
//   2. CPU numbers are checked against the affinity mask (taskset), and --cpu takes ranges (0-1).
//   3. maxConnections is a total across loops (threads: 2, maxConnections: 4 serves 4 clients).
//   4. stop({ drainMs: -1 }) returns a rejected promise instead of throwing; the server keeps going.
//   5. stop({ drainMs: 0 }) during a long drain closes every connection at once.
//   6. CLI: a second SIGINT during a long drain closes every connection now and exits 0.
//   7. drainMs / idleTimeoutMs / stallTimeoutMs maxima and the pool rule (bufferCount vs
//      maxPendingBytes), through serve() and through the CLI.
//   8. connections that arrive while the server stops are not counted as connRejected.
//   9. TCP_NODELAY: checked directly with getsockopt(2) on the listening sockets (accepted
//      sockets inherit it) and on accepted sockets that are ordinary fds. A ping-pong latency check
//      was tried and dropped: on this kernel 1-byte (and 2–140 KB) round trips took ~0.03 ms median
//      against the old build too, whose io_uring connections had no TCP_NODELAY at all, so it
//      could not tell the two apart.
// Real sockets; waits are on conditions with deadlines; every server, client and child is closed.
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { dlopen, FFIType, ptr } from "bun:ffi";
import { readFileSync } from "node:fs";
import net from "node:net";
import { serve } from "../src/index.ts";
import { BUN, CLI, bannerOf, exitOf, killIfRunning, runCli, stoppedStats, type CliRun } from "./helpers/cli.ts";
import { listenersOn, listFds } from "./helpers/proc.ts";
import {
  BACKENDS,
  backendAvailable,
  fmtStats,
  startServer,
  statsReach,
  stopAll,
  stopServer,
  type Server,
  type ServerStats,
} from "./helpers/server.ts";
import { connect, endOf, refused, type Conn, type ConnEnd } from "./helpers/sockets.ts";
import { waitFor, withTimeout } from "./helpers/wait.ts";

const KiB = 1 << 10;
const MiB = 1 << 20;

setDefaultTimeout(60_000);

// ---------------------------------------------------------------------------------------------
// Cleanup: every client socket and child process a test makes is closed/killed after it.

const sockets = new Set<net.Socket>();
const runs = new Set<CliRun>();
const rawFds = new Set<number>();

function track(sock: net.Socket): net.Socket {
  sockets.add(sock);
  return sock;
}

async function connectTracked(port: number): Promise<Conn> {
  const c = await connect(port);
  track(c.sock);
  return c;
}

function cli(args: string[], cmd?: string[]): CliRun {
  const run = runCli(args, cmd ? { cmd } : {});
  runs.add(run);
  return run;
}

afterEach(async () => {
  unpinThisThread();
  for (const s of sockets) s.destroy();
  sockets.clear();
  for (const fd of rawFds) libc().close(fd);
  rawFds.clear();
  for (const r of runs) killIfRunning(r);
  await Promise.all([...runs].map((r) => r.exited.catch(() => undefined)));
  runs.clear();
  await stopAll();
});

// ---------------------------------------------------------------------------------------------
// Helpers.

/** Every close counter: once a server has stopped, connAccepted must equal their sum. */
function closedTotal(st: ServerStats): number {
  return st.connClosedEof + st.connClosedReset + st.connClosedStop + st.connClosedIdle + (st.connClosedStalled ?? 0);
}

/** The error serve(opts) throws; if it starts a server instead, stops it and fails. */
function serveError(opts: Parameters<typeof serve>[0]): Error {
  let s: Server;
  try {
    s = serve(opts);
  } catch (e) {
    return e as Error;
  }
  void s.stop({ drainMs: 0 });
  throw new Error(`serve() started a server (port ${s.port}) instead of rejecting the options`);
}

/** Writes `text` on an open connection and resolves with exactly that many bytes of echo. */
function echoOn(sock: net.Socket, text: string, timeoutMs = 5_000): Promise<string> {
  const want = Buffer.byteLength(text);
  const got = new Promise<string>((resolve, reject) => {
    if (sock.destroyed || !sock.writable) {
      reject(new Error(`connection already closed before echoing ${JSON.stringify(text)}`));
      return;
    }
    let buf = Buffer.alloc(0);
    const cleanup = () => {
      sock.off("data", onData);
      sock.off("close", onClose);
    };
    const onData = (b: Buffer) => {
      buf = Buffer.concat([buf, b]);
      if (buf.length >= want) {
        cleanup();
        resolve(buf.toString());
      }
    };
    const onClose = () => {
      cleanup();
      reject(new Error(`connection closed after ${buf.length}/${want} bytes of the echo of ${JSON.stringify(text)}`));
    };
    sock.on("data", onData);
    sock.once("close", onClose);
    sock.write(text);
  });
  return withTimeout(got, timeoutMs, `echo of ${JSON.stringify(text)}`);
}

/**
 * A connection whose echo cannot finish: the client never reads and sends far more than the
 * loopback buffers hold, so the server ends up paused holding echo it cannot send (pausedNow 1,
 * bytesIn > bytesOut). Use with a small maxPendingBytes.
 */
async function holdUnsentEcho(s: Server, bytes = 16 * MiB): Promise<Conn> {
  const c = await connectTracked(s.port);
  c.sock.pause();
  const chunk = Buffer.alloc(64 * KiB, 0x61);
  for (let off = 0; off < bytes; off += chunk.length) c.sock.write(chunk);
  await statsReach(
    () => s.stats(),
    (st) => st.pausedNow === 1 && st.bytesIn > st.bytesOut,
    "the non-reading connection paused with echo the server cannot send",
    20_000,
  );
  return c;
}

/** A connection that keeps up to 8 MiB in flight and reads every echo: keeps the loop busy. */
function busyTraffic(port: number): { stop: () => void; closed: Promise<ConnEnd> } {
  const sock = track(net.connect({ port, host: "127.0.0.1" }));
  const closed = endOf(sock);
  const chunk = Buffer.alloc(64 * KiB, 0x62);
  let inFlight = 0;
  let on = true;
  let waiting = false;
  const pump = () => {
    while (on && !waiting && !sock.destroyed && inFlight < 8 * MiB) {
      inFlight += chunk.length;
      if (!sock.write(chunk)) {
        waiting = true;
        sock.once("drain", () => {
          waiting = false;
          pump();
        });
      }
    }
  };
  sock.on("connect", pump);
  sock.on("data", (b: Buffer) => {
    inFlight -= b.length;
    pump();
  });
  return {
    stop: () => {
      on = false;
    },
    closed,
  };
}

// libc through bun:ffi: blocking connect(2) (so a burst of connections reaches the kernel right
// after stop(), without waiting for the JS event loop) and getsockopt(2) for TCP_NODELAY.
let libcSymbols:
  | {
      socket: (domain: number, type: number, proto: number) => number;
      connect: (fd: number, addr: unknown, len: number) => number;
      close: (fd: number) => number;
      getsockopt: (fd: number, level: number, name: number, val: unknown, len: unknown) => number;
    }
  | undefined;

function libc(): NonNullable<typeof libcSymbols> {
  libcSymbols ??= dlopen("libc.so.6", {
    socket: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    connect: { args: [FFIType.i32, FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
    close: { args: [FFIType.i32], returns: FFIType.i32 },
    getsockopt: { args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  }).symbols as unknown as NonNullable<typeof libcSymbols>;
  return libcSymbols;
}

const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;

/**
 * Blocking connects to 127.0.0.1:port, one after the other, until one fails (the listener is gone)
 * or `max` succeeded; the fds stay open (tracked) until the caller closes them.
 */
function connectBurst(port: number, max: number): { fds: number[]; connected: number; failed: boolean } {
  const sa = new Uint8Array(16);
  sa[0] = AF_INET; // sin_family, little-endian u16
  sa[2] = port >> 8; // sin_port, network order
  sa[3] = port & 0xff;
  sa.set([127, 0, 0, 1], 4);
  const fds: number[] = [];
  let connected = 0;
  for (let i = 0; i < max; i++) {
    const fd = libc().socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new Error("socket(2) failed");
    fds.push(fd);
    rawFds.add(fd);
    if (libc().connect(fd, ptr(sa), sa.length) !== 0) return { fds, connected, failed: true };
    connected++;
  }
  return { fds, connected, failed: false };
}

function closeRaw(fds: number[]): void {
  for (const fd of fds) {
    libc().close(fd);
    rawFds.delete(fd);
  }
}

function tcpNoDelay(fd: number): number {
  const val = new Int32Array(1);
  const len = new Uint32Array([4]);
  if (libc().getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, ptr(val), ptr(len)) !== 0) {
    throw new Error(`getsockopt(${fd}, TCP_NODELAY) failed`);
  }
  return val[0]!;
}

// sched_{get,set}affinity(0, ...) act on the calling thread only: this JS thread.
let savedMask: Uint8Array | undefined;

function pinThisThread(cpu: number): void {
  const a = affinity();
  savedMask = new Uint8Array(128);
  if (a.sched_getaffinity(0, savedMask.length, ptr(savedMask)) < 0) throw new Error("sched_getaffinity failed");
  const mask = new Uint8Array(128);
  mask[cpu >> 3] = 1 << (cpu & 7);
  if (a.sched_setaffinity(0, mask.length, ptr(mask)) !== 0) throw new Error(`sched_setaffinity(CPU ${cpu}) failed`);
}

function unpinThisThread(): void {
  if (savedMask === undefined) return;
  affinity().sched_setaffinity(0, savedMask.length, ptr(savedMask));
  savedMask = undefined;
}

let affinitySymbols:
  | {
      sched_getaffinity: (pid: number, size: number, mask: unknown) => number;
      sched_setaffinity: (pid: number, size: number, mask: unknown) => number;
    }
  | undefined;

function affinity(): NonNullable<typeof affinitySymbols> {
  affinitySymbols ??= dlopen("libc.so.6", {
    sched_getaffinity: { args: [FFIType.i32, FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
    sched_setaffinity: { args: [FFIType.i32, FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
  }).symbols as unknown as NonNullable<typeof affinitySymbols>;
  return affinitySymbols;
}

/** Inodes of this machine's TCP sockets whose local port is `port`, in state `st` (0A LISTEN, 01 ESTABLISHED). */
function socketInodes(port: number, st: "0A" | "01"): Set<string> {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  const out = new Set<string>();
  for (const f of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(f, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 9 && cols[1]!.endsWith(`:${hex}`) && cols[3] === st) out.add(cols[9]!);
    }
  }
  return out;
}

/** This process's fds that are those sockets. */
function fdsOfSockets(inodes: Set<string>): number[] {
  const out: number[] = [];
  for (const [fd, target] of listFds()) {
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m && inodes.has(m[1]!)) out.push(fd);
  }
  return out.sort((a, b) => a - b);
}

/** CPUs this process may run on (its affinity mask), from /proc/self/status. */
function allowedCpus(): number[] {
  const m = /^Cpus_allowed_list:\s+(\S+)/m.exec(readFileSync("/proc/self/status", "utf8"));
  const out: number[] = [];
  for (const part of (m?.[1] ?? "").split(",")) {
    const r = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!r) continue;
    for (let c = Number(r[1]); c <= Number(r[2] ?? r[1]); c++) out.push(c);
  }
  return out;
}

/** Stdout lines of a finished CLI run. */
function linesOf(text: string): string[] {
  return text.split("\n").filter((l) => l.length > 0);
}

// ---------------------------------------------------------------------------------------------
// Fix 2: CPU numbers against the affinity mask; ranges. (Before: checked against a CPU count, so
// under `taskset -c 1` --cpu 1 was refused and --cpu 0 accepted; "0-1" was not a valid list.)

const CPUS = allowedCpus();
const TASKSET = Bun.which("taskset");
const canTaskset = TASKSET !== null && CPUS.includes(0) && CPUS.includes(1);

describe("fix 2: --cpu is checked against the affinity mask", () => {
  test.skipIf(!canTaskset)("`taskset -c 1 ... --cpu 1` starts, echoes, and stops on SIGINT with exit 0", async () => {
    const run = cli([], [TASKSET!, "-c", "1", BUN, CLI, "--backend", "epoll", "--port", "0", "--cpu", "1"]);
    const b = await bannerOf(run);
    expect(b.line).toMatch(/^bunring epoll listening on /);
    const c = await connectTracked(b.port);
    expect(await echoOn(c.sock, "pinned to cpu 1")).toBe("pinned to cpu 1");
    c.sock.end();
    await withTimeout(c.closed, 5_000, "client closed");
    run.proc.kill("SIGINT");
    const r = await exitOf(run);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
    expect(linesOf(r.stdout).at(-1)).toMatch(/^bunring stopped: SIGINT; /);
  });

  test.skipIf(!canTaskset)("`taskset -c 1 ... --cpu 0` exits 2 with one stderr line naming --cpu and the allowed list 1", async () => {
    const run = cli([], [TASKSET!, "-c", "1", BUN, CLI, "--backend", "epoll", "--port", "0", "--cpu", "0"]);
    const r = await exitOf(run, 10_000);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    const lines = linesOf(r.stderr);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("--cpu");
    expect(lines[0]).toContain("(1)"); // the allowed CPUs under taskset -c 1, formatted as a list
    expect(lines[0]).not.toContain("0-1");
  });

  test.skipIf(!(CPUS.includes(0) && CPUS.includes(1)))("`--cpu 0-1` (a range) is accepted: 2 pinned loops start, echo and stop", async () => {
    const run = cli(["--backend", "epoll", "--port", "0", "--threads", "2", "--cpu", "0-1"]);
    const b = await bannerOf(run);
    expect(b.details).toContain("2 threads");
    const c = await connectTracked(b.port);
    expect(await echoOn(c.sock, "range")).toBe("range");
    c.sock.end();
    await withTimeout(c.closed, 5_000, "client closed");
    run.proc.kill("SIGINT");
    expect((await exitOf(run)).code).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------
// Fix 7 (CLI half): the pool rule and the stall timeout through flags. (Before: --buffers 16 with
// the default --max-pending started a server whose pool one paused peer could exhaust; there was
// no --stall-timeout-ms.)

describe("fix 7: invalid values through the CLI exit 2 naming the flags", () => {
  test("--buffers 16 (default --max-pending) exits 2 naming --buffers and --max-pending", async () => {
    const r = await exitOf(cli(["--backend", "epoll", "--port", "0", "--buffers", "16"]), 10_000);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    const lines = linesOf(r.stderr);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("--buffers");
    expect(lines[0]).toContain("--max-pending");
  });

  test("--stall-timeout-ms abc exits 2 naming the flag", async () => {
    const r = await exitOf(cli(["--backend", "epoll", "--port", "0", "--stall-timeout-ms", "abc"]), 10_000);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    const lines = linesOf(r.stderr);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("--stall-timeout-ms");
  });
});

// ---------------------------------------------------------------------------------------------
// Per backend.

for (const backend of BACKENDS) {
  describe.skipIf(!backendAvailable(backend))(`${backend}`, () => {
    // Fix 1. Before: cpus.map() skipped the holes, the sparse array was accepted and every loop
    // was pinned to CPU 0.
    test("fix 1: cpus as a sparse array is a TypeError naming cpus and the missing entry", () => {
      const e1 = serveError({ backend, port: 0, cpus: new Array(2) });
      expect(e1).toBeInstanceOf(TypeError);
      expect(e1.message).toContain("cpus");
      expect(e1.message).toMatch(/entry 1\b/);

      const cpu = CPUS[0] ?? 0;
      const e2 = serveError({ backend, port: 0, threads: 2, cpus: [cpu, , cpu] as number[] }); // a hole at index 1
      expect(e2).toBeInstanceOf(TypeError);
      expect(e2.message).toContain("cpus");
      expect(e2.message).toMatch(/entry 2\b/);
    });

    // Fix 3. Before: each loop admitted maxConnections / threads, so with SO_REUSEPORT spreading
    // 4 clients at random over 2 loops, a client was refused with only 3 open in most runs (only
    // a 2–2 split, probability 6/16, passed: 6 rounds all pass with probability < 0.3%).
    test("fix 3: maxConnections is a total: threads 2, maxConnections 4 serves 4 clients; the 5th is rejected", async () => {
      for (let round = 0; round < 6; round++) {
        const s = startServer(backend, { threads: 2, maxConnections: 4 });
        let maxOpen = 0;
        const sample = () => {
          maxOpen = Math.max(maxOpen, s.stats().connOpen);
        };
        const sampler = setInterval(sample, 1);
        try {
          const clients: Conn[] = [];
          for (let i = 0; i < 4; i++) clients.push(await connectTracked(s.port));
          for (let i = 0; i < 4; i++) {
            const msg = `round ${round} client ${i}`;
            expect(await echoOn(clients[i]!.sock, msg)).toBe(msg);
          }
          await statsReach(() => s.stats(), (st) => st.connOpen === 4, `round ${round}: 4 connections open`);

          // The 5th: accepted by the kernel, closed at once by the server, counted as rejected.
          const fifth = track(net.connect({ port: s.port, host: "127.0.0.1" }));
          const fifthEnd = await withTimeout(endOf(fifth), 5_000, `round ${round}: the 5th connection closed by the server`);
          expect(["EOF", "ECONNRESET", "close"]).toContain(fifthEnd.how);
          await statsReach(() => s.stats(), (st) => st.connRejected === 1, `round ${round}: connRejected 1`);

          // The 4 are unaffected.
          for (let i = 0; i < 4; i++) {
            const msg = `round ${round} again ${i}`;
            expect(await echoOn(clients[i]!.sock, msg)).toBe(msg);
          }
          sample();
          const st = s.stats();
          expect({ accepted: st.connAccepted, open: st.connOpen, rejected: st.connRejected }).toEqual({ accepted: 4, open: 4, rejected: 1 });
          for (const c of clients) c.sock.end();
          await withTimeout(Promise.all(clients.map((c) => c.closed)), 5_000, "clients closed");
          await stopServer(s);
        } finally {
          clearInterval(sampler);
        }
        expect(maxOpen).toBeLessThanOrEqual(4);
        expect(s.stats().connOpen).toBe(0);
      }
    });

    // Fix 4. Before: checkDrainMs threw synchronously out of stop().
    test("fix 4: stop({ drainMs: -1 }) returns a rejected promise (RangeError); the server keeps running; stop() works after", async () => {
      const s = startServer(backend);
      for (const bad of [-1, 1.5]) {
        let p: Promise<void> | undefined;
        expect(() => {
          p = s.stop({ drainMs: bad });
        }).not.toThrow();
        expect(p).toBeInstanceOf(Promise);
        const err = await p!.then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(RangeError);
        expect((err as Error).message).toContain("drainMs");
      }
      expect(s.stopped).toBe(false);
      const c = await connectTracked(s.port);
      expect(await echoOn(c.sock, "still serving")).toBe("still serving");
      c.sock.end();
      await withTimeout(c.closed, 5_000, "client closed");
      await withTimeout(s.stop(), 10_000, "stop() after the rejected one");
      expect(s.stopped).toBe(true);
      expect(await refused(s.port)).toBe(true);
    });

    // Fix 5. Before: a second stop() returned the first one's promise and changed nothing, so the
    // drain ran its full 60 s.
    test("fix 5: stop({ drainMs: 0 }) during a 60 s drain closes the stuck connection at once", async () => {
      const s = startServer(backend, { maxPendingBytes: 4 * KiB });
      const c = await holdUnsentEcho(s);
      const first = s.stop({ drainMs: 60_000 });
      // The drain has begun once the listening socket is gone (looked up in /proc/net/tcp, not by
      // connecting, so no probe connection is counted); the stuck connection is still open.
      await waitFor(() => listenersOn(s.port) === 0, "the listener closed after stop({ drainMs: 60000 })", { timeoutMs: 10_000, intervalMs: 10 });
      expect(s.stopped).toBe(false);
      expect(s.stats().connOpen).toBe(1);
      const t0 = performance.now();
      const second = s.stop({ drainMs: 0 });
      await withTimeout(Promise.all([first, second]), 10_000, () => `both stops resolve after stop({ drainMs: 0 }); ${fmtStats(s.stats())}`);
      const ms = performance.now() - t0;
      // A paused client does not see a FIN that arrives behind echo it has not read (a reset it
      // does): it reads again now, gets the echo it was owed, then the end.
      c.sock.resume();
      await withTimeout(c.closed, 5_000, "the stuck client sees its connection closed");
      const st = s.stats();
      expect(s.stopped).toBe(true);
      expect({ open: st.connOpen, closedStop: st.connClosedStop, rejected: st.connRejected }).toEqual({ open: 0, closedStop: 1, rejected: 0 });
      expect(st.connAccepted).toBe(closedTotal(st));
      expect(ms).toBeLessThan(10_000);
    });

    // Fix 6. Before: the CLI ignored every signal after the first, so the drain ran its 60 s.
    test("fix 6: CLI: first SIGINT starts a 60 s drain, a second SIGINT closes every connection now and exits 0", async () => {
      const run = cli(["--backend", backend, "--port", "0", "--drain-ms", "60000", "--max-pending", "4096"]);
      const { port } = await bannerOf(run);
      // A client that never reads and offers 64 MiB: the server pauses holding echo it cannot send.
      // The child's counters cannot be read from here, so wait until the client's writes stop
      // reaching the kernel (unchanged over 5 polls 100 ms apart: the server stopped reading); the
      // final stats line confirms it afterwards (closedStop 1, bytesIn > bytesOut).
      const c = await connectTracked(port);
      c.sock.pause();
      const chunk = Buffer.alloc(MiB, 0x63);
      let flushed = 0;
      for (let i = 0; i < 64; i++) {
        c.sock.write(chunk, (err) => {
          if (!err) flushed += chunk.length; // this chunk reached the kernel
        });
      }
      let last = -1;
      let steady = 0;
      await waitFor(
        () => {
          steady = flushed === last ? steady + 1 : 0;
          last = flushed;
          return flushed >= MiB && flushed < 64 * MiB && steady >= 5;
        },
        () => `the client's writes stall (flushed ${flushed} bytes)`,
        { timeoutMs: 30_000, intervalMs: 100 },
      );
      let clientClosed = false;
      void c.closed.then(() => (clientClosed = true));

      run.proc.kill("SIGINT");
      await waitFor(() => listenersOn(port) === 0, "the listener closed after the first SIGINT", { timeoutMs: 10_000, intervalMs: 10 });
      expect(run.proc.exitCode).toBeNull(); // still draining
      expect(clientClosed).toBe(false);

      const t0 = performance.now();
      run.proc.kill("SIGINT");
      const r = await exitOf(run, 10_000);
      const ms = performance.now() - t0;
      expect(r.code).toBe(0);
      const err = linesOf(r.stderr);
      expect(err).toHaveLength(1);
      expect(err[0]).toMatch(/SIGINT/);
      expect(err[0]).toMatch(/clos\w*[^\n]*connection[^\n]*now/i);
      const finalLine = linesOf(r.stdout).at(-1) ?? "";
      expect(finalLine).toMatch(/^bunring stopped: SIGINT; /);
      const st = stoppedStats(finalLine);
      expect(st.closedStop).toBe(1);
      expect(st.open).toBe(0);
      expect(st.accepted).toBe(1);
      expect(st.bytesIn).toBeGreaterThan(st.bytesOut!); // echo was still unsent when the drain was cut short
      c.sock.resume(); // a paused client with unread echo does not see a FIN (as in fix 5)
      await withTimeout(c.closed, 5_000, "the client sees its connection closed");
      expect(ms).toBeLessThan(10_000);
    });

    // Fix 7 (API half). drainMs and idleTimeoutMs had these maxima before; stallTimeoutMs did not
    // exist (unknown option: TypeError) and bufferCount 16 with the default maxPendingBytes
    // (which needs 64 buffers of 2048 bytes) was accepted.
    test("fix 7: drainMs / idleTimeoutMs / stallTimeoutMs past their maxima and a pool smaller than one connection are RangeErrors", async () => {
      const cases: { opts: Parameters<typeof serve>[0]; mentions: string[] }[] = [
        { opts: { drainMs: 3_600_001 }, mentions: ["drainMs", "3600000"] },
        { opts: { idleTimeoutMs: 86_400_001 }, mentions: ["idleTimeoutMs", "86400000"] },
        { opts: { stallTimeoutMs: 86_400_001 }, mentions: ["stallTimeoutMs", "86400000"] },
        { opts: { bufferCount: 16 }, mentions: ["bufferCount", "maxPendingBytes"] },
      ];
      for (const { opts, mentions } of cases) {
        const e = serveError({ backend, port: 0, ...opts });
        expect(e).toBeInstanceOf(RangeError);
        for (const m of mentions) expect(e.message).toContain(m);
      }
      // The edges themselves are accepted.
      for (const opts of [{ drainMs: 3_600_000 }, { idleTimeoutMs: 86_400_000 }, { stallTimeoutMs: 86_400_000 }, { bufferCount: 64 }]) {
        await stopServer(startServer(backend, opts));
      }
    });

    // Fix 8. Before: a connection the io_uring loop accepted after stop() began was closed and
    // counted as connRejected (as if maxConnections had been reached). To land connections in that
    // window, the loop is kept busy with traffic on 3 connections and pinned to one CPU, this (JS)
    // thread is pinned to the same CPU for the moment of stop(), and blocking connect(2)s are made
    // right after stop() returns: the busy loop thread rarely runs before the burst is in. (Measured
    // on the 2-CPU VM: 9–10 of 10 rounds put connections in the window; without the pinning and the
    // extra traffic, 1–5 of 10.) epoll closes its listener at once and accepts nothing after stop(),
    // so there the test checks only the accounting.
    test("fix 8: connections arriving during stop are not counted as connRejected; every accepted one is accounted for", async () => {
      const rounds = backend === "uring" ? 6 : 3;
      const pinCpu = CPUS.at(-1) ?? 0;
      let inWindow = 0;
      const notes: string[] = [];
      for (let round = 0; round < rounds; round++) {
        const s = startServer(backend, { maxPendingBytes: 4 * KiB, cpus: [pinCpu] });
        const holder = await holdUnsentEcho(s);
        const busy = [busyTraffic(s.port), busyTraffic(s.port), busyTraffic(s.port)];
        let burst: ReturnType<typeof connectBurst>;
        let stopping: Promise<void>;
        pinThisThread(pinCpu);
        try {
          const base = s.stats().bytesIn;
          await statsReach(() => s.stats(), (st) => st.bytesIn >= base + 16 * MiB, `round ${round}: busy traffic flowing`);
          stopping = s.stop({ drainMs: 2_000 });
          burst = connectBurst(s.port, 200);
        } finally {
          unpinThisThread();
        }
        for (const b of busy) b.stop();
        closeRaw(burst.fds);
        holder.sock.destroy();
        await withTimeout(stopping, 15_000, () => `round ${round}: stop; ${fmtStats(s.stats())}`);
        await withTimeout(Promise.all(busy.map((b) => b.closed)), 5_000, "busy clients closed");
        const st = s.stats();
        notes.push(`${burst.connected}${burst.failed ? "+refused" : ""}/${st.connRefusedStopping}`);
        if (st.connRefusedStopping > 0) inWindow++;
        expect(st.connRejected).toBe(0);
        expect(st.connOpen).toBe(0);
        expect(st.connAccepted).toBe(closedTotal(st));
        expect(st.connAccepted).toBeGreaterThanOrEqual(4); // holder + 3 busy
      }
      console.log(
        `[hardening] fix 8 [${backend}] rounds with connections accepted during stop: ${inWindow}/${rounds} (connected/connRefusedStopping per round: ${notes.join(", ")})`,
      );
    });

    // Fix 9. Before: TCP_NODELAY was set per accepted fd (epoll, io_uring on ordinary fds) and not
    // at all on io_uring direct descriptors; the listener never had it. Now it is set on every
    // listening socket before listen(), and accepted sockets inherit it.
    test("fix 9: TCP_NODELAY is set on the listening sockets and on accepted connections", async () => {
      const s = startServer(backend, { threads: 2 });
      const c = await connectTracked(s.port);
      expect(await echoOn(c.sock, "nodelay")).toBe("nodelay");
      await statsReach(() => s.stats(), (st) => st.connOpen === 1, "1 connection open");
      const listeners = fdsOfSockets(socketInodes(s.port, "0A"));
      expect(listeners).toHaveLength(2);
      for (const fd of listeners) expect({ listener: fd, nodelay: tcpNoDelay(fd) }).toEqual({ listener: fd, nodelay: 1 });
      const accepted = fdsOfSockets(socketInodes(s.port, "01"));
      if (s.features.includes("fixed_files")) {
        expect(accepted).toHaveLength(0); // a direct descriptor: no fd to ask; it inherits the listener's
      } else {
        expect(accepted).toHaveLength(1);
        expect(tcpNoDelay(accepted[0]!)).toBe(1);
      }
      c.sock.end();
      await withTimeout(c.closed, 5_000, "client closed");
      await stopServer(s);

      if (backend === "uring") {
        // A small maxConnections lets the loop use direct descriptors (fixed files) where
        // RLIMIT_NOFILE allows: their only source of TCP_NODELAY is the listener.
        const f = startServer(backend, { maxConnections: 64 });
        const fl = fdsOfSockets(socketInodes(f.port, "0A"));
        expect(fl).toHaveLength(1);
        expect(tcpNoDelay(fl[0]!)).toBe(1);
        const fc = await connectTracked(f.port);
        expect(await echoOn(fc.sock, "direct")).toBe("direct");
        fc.sock.end();
        await withTimeout(fc.closed, 5_000, "client closed");
        await stopServer(f);
      }
    });
  });
}
