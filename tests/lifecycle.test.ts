// lifecycle.test.ts — starting and stopping servers: ephemeral ports, stop() with in-flight echoes
// (drain) and without (no wait), restarting on the same port, stop/start cycles without fd or thread
// leaks, several servers in one process, threads: 2, port in use (nothing left half-started), hosts
// (localhost, IPv6), backend "auto", probe() and io_uring features, sqpoll. Elsewhere: stop() under
// full load and io_uring unavailable in tests/reliability/faults.test.ts; idle timeout and
// maxConnections in tests/reliability/limits.test.ts; option checking in tests/options.test.ts.
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import net from "node:net";
import { probe, serve } from "../src/index.ts";
import { echoOnce, echoStream } from "./helpers/clients.ts";
import { expectFdsBackTo, fdDiff, hasIPv6Loopback, listenersOn, listFds, threadCount } from "./helpers/proc.ts";
import { Pattern } from "./helpers/prng.ts";
import { knob, MiB } from "./helpers/scale.ts";
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
import { connect, refused } from "./helpers/sockets.ts";
import { waitFor, withTimeout } from "./helpers/wait.ts";

const CYCLES = knob("BUNRING_CYCLES", 50);

setDefaultTimeout(60_000);
afterEach(stopAll);

/** Waits until the port refuses connections (the strict, immediate check is the restart test). */
async function eventuallyRefused(port: number): Promise<void> {
  await waitFor(() => refused(port), `port ${port} refuses connections after stop()`, { timeoutMs: 3_000, intervalMs: 20 });
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
    expect(await echoOnce(a.port, "a")).toBe("a");
    expect(await echoOnce(b.port, "b")).toBe("b");
  });

  it("stop() lets in-flight echoes finish: queued echo reaches the client byte-exact, then EOF", async () => {
    // Large limits so the server reads all 12 MiB while the client is not reading (loopback socket
    // buffers absorb ~4.5 MiB of echo): at stop() the server holds echo it has not sent yet, and
    // nothing unread sits in its receive queue.
    const s = startServer(backend, { bufferSize: 16_384, bufferCount: 8192, maxPendingBytes: 48 * MiB });
    const total = 12 * MiB;
    const pattern = new Pattern(56);
    const c = await connect(s.port);
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
    const c = await connect(s.port);
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
      expect(await echoOnce(port, `r${i}`)).toBe(`r${i}`);
      await s.stop({ drainMs: 0 });
      expect(await refused(port)).toBe(true);
    }
  });

  it("stop() of an idle server, or one with idle connections, does not wait for drainMs", async () => {
    const idle = startServer(backend, { drainMs: 5_000 });
    let t0 = performance.now();
    await stopServer(idle, 5_000);
    expect(performance.now() - t0).toBeLessThan(1_500);

    const s = startServer(backend, { drainMs: 5_000 });
    const conns = await Promise.all(Array.from({ length: 10 }, () => connect(s.port)));
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
    await echoOnce(s.port, "xyz");
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
      expect(await echoOnce(port, "scoped")).toBe("scoped");
    }
    await eventuallyRefused(port);
  });

  it(`${CYCLES} stop/start cycles leak no fd and no thread`, async () => {
    // warm up: first use loads the library and may open lasting fds
    const w = serve({ backend, port: 0 });
    await echoOnce(w.port, "warm");
    await w.stop({ drainMs: 0 });
    const fdsBefore = listFds();
    const threadsBefore = threadCount();
    for (let i = 0; i < CYCLES; i++) {
      const s = serve({ backend, port: 0, threads: (i % 2) + 1, bufferCount: 64 });
      expect(await echoOnce(s.port, `cycle ${i}`)).toBe(`cycle ${i}`);
      if (i % 5 === 0) await connect(s.port); // leave a connection open: stop must close it
      await s.stop({ drainMs: i % 3 === 0 ? 0 : 50 });
    }
    await expectFdsBackTo(fdsBefore);
    expect(fdDiff(fdsBefore, listFds())).toBe("added [] removed []");
    await waitFor(
      () => threadCount() <= threadsBefore,
      () => `thread count back to ${threadsBefore} (now ${threadCount()})`,
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
    expect(await echoOnce(b.port, "b lives")).toBe("b lives");
  });

  it("threads: 2 runs two loops, connections spread over their listeners, all echo", async () => {
    const before = threadCount();
    const s = startServer(backend, { threads: 2 });
    expect(s.threads).toBe(2);
    expect(threadCount() - before).toBeGreaterThanOrEqual(2);
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
      await echoOnce(a.port, "warm");
      const fdsBefore = listFds();
      const threadsBefore = threadCount();
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
      expect(threadCount()).toBeLessThanOrEqual(threadsBefore);
      // the first server is untouched
      expect(await echoOnce(a.port, "still a")).toBe("still a");
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
    expect(await echoOnce(s.port, "lh", "127.0.0.1")).toBe("lh");
  });

  (hasIPv6Loopback() ? it : test.skip)('host "::1" (IPv6) echoes', async () => {
    const s = startServer(backend, { host: "::1", threads: 2 });
    expect(s.host).toBe("::1");
    const r = await echoStream({ port: s.port, host: "::1", bytes: 2 * MiB, seed: 6 });
    expect(r.received).toBe(2 * MiB);
    await expectQuiet(s, { bytes: 2 * MiB, conns: 1 });
  });

});

describe("backend selection", () => {
  test('backend "auto" picks io_uring when available, epoll otherwise', async () => {
    const s = startServer("uring", { backend: "auto" });
    expect(s.backend).toBe(URING_OK ? "uring" : "epoll");
    expect(await echoOnce(s.port, "auto")).toBe("auto");
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
