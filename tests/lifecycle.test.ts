// lifecycle.test.ts — starting and stopping servers: ephemeral ports, stop() under load and with
// in-flight echoes (drain), stop/start cycles without fd or thread leaks, several servers in one
// process, threads: 2, port in use (nothing left half-started), hosts (localhost, IPv6), idle
// timeout, maxConnections, backend "auto" and the io_uring-unavailable path, sqpoll.
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { readFileSync } from "node:fs";
import net from "node:net";
import { probe, serve } from "../src/index.ts";
import { echoSmall, echoStream, floodWrites, openConn, Pattern, PATTERN_LEN } from "./helpers/echo.ts";
import { countThreads, expectFdsBackTo, fdDiff, listFds } from "./helpers/fds.ts";
import {
  BACKENDS,
  backendAvailable,
  expectQuiet,
  fmtStats,
  startServer,
  stopAll,
  stopServer,
  URING_OK,
  type Server,
} from "./helpers/server.ts";
import { envInt, waitFor, withTimeout } from "./helpers/wait.ts";

const MiB = 1 << 20;
const CYCLES = envInt("BUNRING_CYCLES", 50);

setDefaultTimeout(60_000);
afterEach(stopAll);

/** Connecting to a port nobody listens on is refused. */
function expectRefused(port: number, host = "127.0.0.1"): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host });
    s.on("connect", () => {
      s.destroy();
      reject(new Error(`port ${port} still accepts connections`));
    });
    s.on("error", (e: NodeJS.ErrnoException) => (e.code === "ECONNREFUSED" ? resolve() : reject(e)));
  });
}

/** Waits until the port refuses connections (the strict, immediate check is the restart test). */
async function eventuallyRefused(port: number): Promise<void> {
  await waitFor(
    () => expectRefused(port).then(() => true, () => false),
    `port ${port} refuses connections after stop()`,
    { timeoutMs: 3_000, intervalMs: 20 },
  );
}

/** LISTEN sockets on a port, from /proc/net/tcp{,6}. */
function listenersOn(port: number): number {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  let n = 0;
  for (const f of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    for (const line of readFileSync(f, "utf8").split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 3 && cols[1]!.endsWith(`:${hex}`) && cols[3] === "0A") n++;
    }
  }
  return n;
}

function hasIPv6Loopback(): boolean {
  try {
    return readFileSync("/proc/net/if_inet6", "utf8").includes("00000000000000000000000000000001");
  } catch {
    return false;
  }
}

describe.each([...BACKENDS])("%s lifecycle", (backend) => {
  const it = backendAvailable(backend) ? test : test.skip;

  it("port 0 picks an ephemeral port; two such servers get different ports", async () => {
    const a = startServer(backend, { port: 0 });
    const b = startServer(backend, { port: 0 });
    expect(a.port).toBeGreaterThan(0);
    expect(a.port).toBeLessThan(65536);
    expect(b.port).toBeGreaterThan(0);
    expect(a.port).not.toBe(b.port);
    expect(a.host).toBe("127.0.0.1");
    expect(a.threads).toBe(1);
    expect((await echoSmall(a.port, "a")).toString()).toBe("a");
    expect((await echoSmall(b.port, "b")).toString()).toBe("b");
  });

  it("stop() while clients are sending: resolves, closes every connection, counts them as stopped", async () => {
    const s = startServer(backend);
    const n = 20;
    const conns = await Promise.all(Array.from({ length: n }, () => openConn(s.port)));
    const chunk = new Pattern(1).window(0, 32 * 1024);
    const floods = conns.map((c) => {
      c.sock.on("error", () => undefined);
      return floodWrites(c.sock, chunk);
    });
    await waitFor(
      () => s.stats().bytesIn > 8 * MiB && conns.every((c) => c.received() > 0),
      () => `traffic flowing on all ${n} connections: ${fmtStats(s.stats())}`,
      { timeoutMs: 20_000 },
    );
    const t0 = performance.now();
    await withTimeout(s.stop({ drainMs: 200 }), 5_000, "stop({ drainMs: 200 }) under load");
    const took = performance.now() - t0;
    expect(took).toBeLessThan(3_000);
    const ends = await withTimeout(Promise.all(conns.map((c) => c.closed)), 5_000, "all clients see their connection end");
    floods.forEach((f) => f.stop());
    expect(ends.length).toBe(n);
    const st = s.stats();
    expect(st.connOpen).toBe(0);
    expect(st.connClosedStop).toBeGreaterThan(0);
    expect(st.connClosedStop + st.connClosedReset + st.connClosedEof).toBe(n);
    expect(st.connAccepted).toBe(n);
    expect(st.buffersInUse).toBe(0);
    expect(st.pausedNow).toBe(0);
    expect(st.allocsAfterStart).toBe(0);
    expect(st.errors).toBe(0);
    await expectRefused(s.port);
  });

  it("stop() lets in-flight echoes finish: queued echo reaches the client byte-exact, then EOF", async () => {
    // Large limits so the server reads all 12 MiB while the client is not reading (loopback socket
    // buffers absorb ~4.5 MiB of echo): at stop() the server holds echo it has not sent yet, and
    // nothing unread sits in its receive queue.
    const s = startServer(backend, { bufferSize: 16_384, bufferCount: 8192, maxPendingBytes: 48 * MiB });
    const total = 12 * MiB;
    const pattern = new Pattern(56);
    const c = await openConn(s.port);
    c.sock.pause();
    for (let off = 0; off < total; off += 32_768) c.sock.write(pattern.window(off, 32_768));
    await waitFor(
      () => s.stats().bytesIn === total && s.stats().bytesOut < total - MiB,
      () => `server read all ${total} bytes with echo still queued: ${fmtStats(s.stats())}`,
      { timeoutMs: 20_000 },
    );
    const stopping = s.stop({ drainMs: 10_000 });
    let received = 0;
    let mismatch: string | null = null;
    c.sock.removeAllListeners("data");
    c.sock.on("data", (b: Buffer) => {
      mismatch ??= pattern.verify(b, received);
      received += b.length;
    });
    c.sock.on("error", () => undefined);
    c.sock.resume();
    const t0 = performance.now();
    await withTimeout(stopping, 12_000, "stop with a drain in progress");
    const end = await withTimeout(c.closed, 5_000, "client connection closed after the drain");
    expect(performance.now() - t0).toBeLessThan(8_000); // ends when the queue is empty, not at drainMs
    expect(mismatch).toBeNull();
    expect({ received, eof: end.eof, error: end.error?.message }).toEqual({ received: total, eof: true, error: undefined });
    const st = s.stats();
    expect(st.bytesOut).toBe(total);
    expect(st.connClosedStop).toBe(1);
    expect(st.connOpen).toBe(0);
    expect(st.errors).toBe(0);
  });

  it("stop() while the client is still sending: echo the server counted as sent reaches the client", async () => {
    // The client keeps data in flight towards the server (which stops reading at stop()). Every byte
    // the server echoed (bytesOut) must still arrive: closing a socket with unread input sends RST,
    // which discards whatever echo is still in the send queue.
    const s = startServer(backend);
    const pattern = new Pattern(55);
    const c = await openConn(s.port);
    c.sock.pause(); // the echo backs up in the server
    for (let sent = 0; sent < 16 * MiB; sent += 32_768) c.sock.write(pattern.window(sent, 32_768));
    await waitFor(
      () => s.stats().pausedNow === 1,
      () => `connection paused with echo queued: ${fmtStats(s.stats())}`,
      { timeoutMs: 20_000 },
    );
    const stopping = s.stop({ drainMs: 10_000 });
    let received = 0;
    let mismatch: string | null = null;
    c.sock.removeAllListeners("data");
    c.sock.on("data", (b: Buffer) => {
      mismatch ??= pattern.verify(b, received);
      received += b.length;
    });
    c.sock.on("error", () => undefined);
    c.sock.resume();
    await withTimeout(stopping, 12_000, "stop with a drain in progress");
    const end = await withTimeout(c.closed, 5_000, "client connection closed after the drain");
    const st = s.stats();
    expect(mismatch).toBeNull();
    expect(st.bytesOut).toBe(st.bytesIn);
    expect({ received, error: end.error?.message }).toEqual({ received: st.bytesOut, error: undefined });
    expect(st.connClosedStop + st.connClosedEof).toBe(1); // a lingering close may end on the peer's EOF
    expect(st.connOpen).toBe(0);
    expect(st.errors).toBe(0);
  });

  it("stop() releases the port: serving again on the same port right away works", async () => {
    let port = 0;
    for (let i = 0; i < 10; i++) {
      let s: Server;
      try {
        s = serve({ backend, port, threads: (i % 2) + 1 });
      } catch (e) {
        throw new Error(`restart ${i} on port ${port} right after stop() resolved: ${(e as Error).message}`);
      }
      port = s.port;
      expect((await echoSmall(port, `r${i}`)).toString()).toBe(`r${i}`);
      await s.stop({ drainMs: 0 });
      await expectRefused(port);
    }
  });

  it("stop() of an idle server, or one with idle connections, does not wait for drainMs", async () => {
    const idle = startServer(backend, { drainMs: 5_000 });
    let t0 = performance.now();
    await stopServer(idle, 5_000);
    expect(performance.now() - t0).toBeLessThan(1_500);

    const s = startServer(backend, { drainMs: 5_000 });
    const conns = await Promise.all(Array.from({ length: 10 }, () => openConn(s.port)));
    await waitFor(() => s.stats().connOpen === 10, () => `10 open: ${fmtStats(s.stats())}`);
    t0 = performance.now();
    await s.stop(); // default drain (5 s): nothing is in flight
    expect(performance.now() - t0).toBeLessThan(1_500);
    await withTimeout(Promise.all(conns.map((c) => c.closed)), 5_000, "idle clients closed by stop");
    expect(s.stats().connClosedStop).toBe(10);
    expect(s.stats().connOpen).toBe(0);
  });

  it("stop() is idempotent, keeps the final stats readable, and validates drainMs", async () => {
    const s = startServer(backend);
    await echoSmall(s.port, "xyz");
    await waitFor(() => s.stats().connOpen === 0, "connection closed");
    await expect((async () => s.stop({ drainMs: -1 }))()).rejects.toThrow(RangeError);
    await expect((async () => s.stop({ drainMs: 1.5 }))()).rejects.toThrow(/drainMs/);
    const p1 = s.stop({ drainMs: 0 });
    const p2 = s.stop({ drainMs: 0 });
    await Promise.all([p1, p2]);
    await s.stop(); // after it finished
    const st = s.stats();
    expect(st.bytesIn).toBe(3);
    expect(st.bytesOut).toBe(3);
    expect(st.connAccepted).toBe(1);
    expect(s.stats()).toEqual(st);
    await eventuallyRefused(s.port);
  });

  it("await using stops the server at the end of the scope", async () => {
    let port = 0;
    {
      await using s = serve({ backend, port: 0 });
      port = s.port;
      expect((await echoSmall(port, "scoped")).toString()).toBe("scoped");
    }
    await eventuallyRefused(port);
  });

  it(`${CYCLES} stop/start cycles leak no fd and no thread`, async () => {
    // warm up: first use loads the library and may open lasting fds
    const w = serve({ backend, port: 0 });
    await echoSmall(w.port, "warm");
    await w.stop({ drainMs: 0 });
    const fdsBefore = listFds();
    const threadsBefore = countThreads();
    for (let i = 0; i < CYCLES; i++) {
      const s = serve({ backend, port: 0, threads: (i % 2) + 1, bufferCount: 64 });
      expect((await echoSmall(s.port, `cycle ${i}`)).toString()).toBe(`cycle ${i}`);
      if (i % 5 === 0) await openConn(s.port); // leave a connection open: stop must close it
      await s.stop({ drainMs: i % 3 === 0 ? 0 : 50 });
    }
    await expectFdsBackTo(fdsBefore);
    expect(fdDiff(fdsBefore, listFds())).toBe("added [] removed []");
    await waitFor(
      () => countThreads() <= threadsBefore,
      () => `thread count back to ${threadsBefore} (now ${countThreads()})`,
    );
  });

  it("two servers in one process echo independently", async () => {
    const a = startServer(backend);
    const b = startServer(backend, { threads: 2 });
    await Promise.all([
      echoStream({ port: a.port, bytes: 3 * MiB, seed: 1 }),
      echoStream({ port: b.port, bytes: 5 * MiB, seed: 2 }),
      echoStream({ port: b.port, bytes: MiB, seed: 3 }),
    ]);
    await expectQuiet(a, { bytes: 3 * MiB, conns: 1 });
    await expectQuiet(b, { bytes: 6 * MiB, conns: 2 });
    await stopServer(a);
    // b keeps working after a stopped
    expect((await echoSmall(b.port, "b lives")).toString()).toBe("b lives");
  });

  it("threads: 2 runs two loops, connections spread over their listeners, all echo", async () => {
    const before = countThreads();
    const s = startServer(backend, { threads: 2 });
    expect(s.threads).toBe(2);
    expect(countThreads() - before).toBeGreaterThanOrEqual(2);
    // one SO_REUSEPORT listener per loop: the kernel spreads connections over them
    expect(listenersOn(s.port)).toBe(2);
    const n = 64;
    await Promise.all(Array.from({ length: n }, (_, i) => echoStream({ port: s.port, bytes: 256 * 1024, seed: i })));
    const st = await expectQuiet(s, { bytes: n * 256 * 1024, conns: n });
    expect(st.buffersTotal).toBe(2 * 4096);
  });

  it("threads: 2 pinned with cpus [0, 1] echoes", async () => {
    const s = startServer(backend, { threads: 2, cpus: [0, 1] });
    await Promise.all(Array.from({ length: 8 }, (_, i) => echoStream({ port: s.port, bytes: 64 * 1024, seed: i })));
    await expectQuiet(s, { bytes: 8 * 64 * 1024, conns: 8 });
  });

  for (const threads of [1, 2]) {
    it(`port in use (threads: ${threads}): serve() throws Error naming the port, nothing half-started`, async () => {
      const a = startServer(backend);
      await echoSmall(a.port, "warm");
      const fdsBefore = listFds();
      const threadsBefore = countThreads();
      let err: unknown;
      try {
        const b = serve({ backend, port: a.port, threads });
        await b.stop({ drainMs: 0 });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(Error);
      expect(err).not.toBeInstanceOf(TypeError);
      expect(err).not.toBeInstanceOf(RangeError);
      const msg = (err as Error).message;
      expect(msg).toContain(String(a.port));
      expect(msg).toMatch(/in use/i);
      expect((err as { code?: string }).code).toBe("EADDRINUSE");
      await expectFdsBackTo(fdsBefore);
      expect(countThreads()).toBeLessThanOrEqual(threadsBefore);
      // the first server is untouched
      expect((await echoSmall(a.port, "still a")).toString()).toBe("still a");
      expect(listenersOn(a.port)).toBe(1);
    });
  }

  it("port held by another (non-bunring) listener: serve() throws Error", async () => {
    const other = net.createServer();
    await new Promise<void>((r) => other.listen(0, "127.0.0.1", r));
    const port = (other.address() as net.AddressInfo).port;
    const fdsBefore = listFds();
    try {
      expect(() => serve({ backend, port })).toThrow(new RegExp(`${port}.*in use|in use.*${port}`, "i"));
      expect(() => serve({ backend, port, threads: 2 })).toThrow(/in use/i);
      await expectFdsBackTo(fdsBefore);
    } finally {
      other.close();
    }
  });

  it('host "localhost" listens on loopback', async () => {
    const s = startServer(backend, { host: "localhost" });
    expect((await echoSmall(s.port, "lh", "127.0.0.1")).toString()).toBe("lh");
  });

  (hasIPv6Loopback() ? it : test.skip)('host "::1" (IPv6) echoes', async () => {
    const s = startServer(backend, { host: "::1", threads: 2 });
    expect(s.host).toBe("::1");
    const r = await echoStream({ port: s.port, host: "::1", bytes: 2 * MiB, seed: 6 });
    expect(r.received).toBe(2 * MiB);
    await expectQuiet(s, { bytes: 2 * MiB, conns: 1 });
  });

  it("idleTimeoutMs closes idle connections (counted) but not busy ones", async () => {
    const s = startServer(backend, { idleTimeoutMs: 300 });
    const idle = await openConn(s.port);
    const busy = await openConn(s.port);
    const t0 = performance.now();
    // the busy connection sends a byte every 50 ms while we wait for the idle one to be closed
    const ticker = setInterval(() => busy.sock.write("x"), 50);
    try {
      const end = await withTimeout(idle.closed, 5_000, "idle connection closed by the idle timeout");
      expect(end.hadError || end.eof).toBe(true);
      expect(performance.now() - t0).toBeGreaterThanOrEqual(250);
      // keep the busy one going for a while longer than the timeout
      const r0 = busy.received();
      await waitFor(() => busy.received() >= r0 + 10, "busy connection keeps echoing", { timeoutMs: 5_000 });
      expect(busy.sock.destroyed).toBe(false);
    } finally {
      clearInterval(ticker);
    }
    await waitFor(() => s.stats().connClosedIdle === 1, () => `connClosedIdle 1: ${fmtStats(s.stats())}`);
    busy.sock.end();
    await busy.closed;
    await waitFor(() => s.stats().connOpen === 0, () => `all closed: ${fmtStats(s.stats())}`, { timeoutMs: 5_000 });
    expect(s.stats().connClosedIdle).toBe(1);
    expect(s.stats().connClosedEof).toBe(1);
  });

  it("maxConnections: connections beyond the limit are closed at once and counted; later ones are served", async () => {
    const s = startServer(backend, { maxConnections: 4 });
    const held = await Promise.all(Array.from({ length: 4 }, () => openConn(s.port)));
    await waitFor(() => s.stats().connOpen === 4, () => `4 open: ${fmtStats(s.stats())}`);
    const extra = await openConn(s.port).catch(() => undefined); // may be reset before connect resolves
    if (extra) {
      extra.sock.on("error", () => undefined);
      await withTimeout(extra.closed, 5_000, "connection over the limit closed");
    }
    await waitFor(() => s.stats().connRejected === 1, () => `connRejected 1: ${fmtStats(s.stats())}`);
    expect(s.stats().connOpen).toBe(4);
    for (const c of held) c.sock.end();
    await Promise.all(held.map((c) => c.closed));
    await waitFor(() => s.stats().connOpen === 0, () => `closed: ${fmtStats(s.stats())}`);
    expect((await echoSmall(s.port, "room again")).toString()).toBe("room again");
  });
});

describe("backend selection", () => {
  test('backend "auto" picks io_uring when available, epoll otherwise', async () => {
    const s = startServer("uring", { backend: "auto" });
    expect(s.backend).toBe(URING_OK ? "uring" : "epoll");
    expect((await echoSmall(s.port, "auto")).toString()).toBe("auto");
  });

  test("default backend is uring", async () => {
    if (!URING_OK) return;
    const s = serve({ port: 0 });
    try {
      expect(s.backend).toBe("uring");
    } finally {
      await s.stop({ drainMs: 0 });
    }
  });

  test("io_uring unavailable (BUNRING_DISABLE_URING=1): auto falls back to epoll, uring throws Error", async () => {
    const saved = process.env.BUNRING_DISABLE_URING;
    process.env.BUNRING_DISABLE_URING = "1";
    try {
      expect(probe().uring).toBe(false);
      expect(probe().reason).toBeString();
      const fdsBefore = listFds();
      let err: unknown;
      try {
        serve({ backend: "uring", port: 0 });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(Error);
      expect(err).not.toBeInstanceOf(TypeError);
      expect((err as Error).message).toMatch(/io_uring/);
      expect((err as Error).message).toMatch(/epoll/);
      await expectFdsBackTo(fdsBefore);
      const s = startServer("epoll", { backend: "auto" });
      expect(s.backend).toBe("epoll");
      expect((await echoSmall(s.port, "fallback")).toString()).toBe("fallback");
    } finally {
      if (saved === undefined) delete process.env.BUNRING_DISABLE_URING;
      else process.env.BUNRING_DISABLE_URING = saved;
    }
  });

  test("probe() reports the kernel, io_uring usability and features", () => {
    const p = probe();
    expect(p.kernel).toMatch(/^\d+\.\d+/);
    expect(typeof p.uring).toBe("boolean");
    expect(Array.isArray(p.features)).toBe(true);
    if (p.uring) {
      expect(p.features).toContain("multishot_recv");
      expect(p.reason).toBeUndefined();
    } else {
      expect(p.reason).toBeString();
    }
  });

  (URING_OK ? test : test.skip)("uring server reports its io_uring features; epoll reports none", async () => {
    const u = startServer("uring");
    const e = startServer("epoll");
    expect(u.features.length).toBeGreaterThan(0);
    expect(u.features).toContain("multishot_recv");
    expect(u.features).toContain("buf_ring");
    for (const f of u.features) expect(probe().features).toContain(f);
    expect(e.features).toEqual([]);
  });

  (URING_OK ? test : test.skip)("sqpoll: true starts a uring server that echoes", async () => {
    let s: Server;
    try {
      s = startServer("uring", { sqpoll: true });
    } catch (e) {
      // SQPOLL may need privileges: then the error must say so, as an Error (not a bad option)
      expect(e).toBeInstanceOf(Error);
      expect(e).not.toBeInstanceOf(RangeError);
      console.warn(`sqpoll unavailable here: ${(e as Error).message}`);
      return;
    }
    expect(s.features).toContain("sqpoll");
    const r = await echoStream({ port: s.port, bytes: 4 * MiB, seed: 8 });
    expect(r.received).toBe(4 * MiB);
    await expectQuiet(s, { bytes: 4 * MiB, conns: 1 });
  });
});

// Exercise the pattern window helper near its wrap point so a helper bug can't hide a server bug.
test("helper: pattern windows wrap seamlessly", () => {
  const p = new Pattern(12);
  const a = p.bytes(PATTERN_LEN + 100);
  expect(Buffer.compare(a.subarray(PATTERN_LEN), a.subarray(0, 100))).toBe(0);
  expect(p.verify(a.subarray(PATTERN_LEN - 50), PATTERN_LEN - 50)).toBeNull();
  const bad = Buffer.from(a.subarray(10, 20));
  bad[3] = bad[3]! ^ 1;
  expect(p.verify(bad, 10)).toMatch(/^byte 13:/);
});
