// echo.test.ts — data path on both backends with real loopback sockets: small echoes, many
// connections streaming megabytes with byte-exact checks (scarce buffers force ENOBUFS/starvation),
// thousands of concurrent connections, half-close, a reader that stops reading (pause/resume), and
// peers that reset mid-stream. Every scenario ends by checking the counters against what was sent.
// Also a self-check of the Pattern the streaming clients verify against.
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import net from "node:net";
import { echoMany, echoOnce, echoStream } from "./helpers/clients.ts";
import { Pattern, PATTERN_LEN } from "./helpers/prng.ts";
import { knob, MiB, testTimeout } from "./helpers/scale.ts";
import { BACKENDS, backendAvailable, expectQuiet, fmtStats, startServer, stopAll } from "./helpers/server.ts";
import { connect } from "./helpers/sockets.ts";
import { waitFor, withTimeout } from "./helpers/wait.ts";

// Scale knobs: defaults keep the suite short; BUNRING_SOAK=1 (or the explicit knobs) make it longer.
const STREAM_CONNS = knob("BUNRING_STREAM_CONNS", 100);
const STREAM_BYTES = knob("BUNRING_STREAM_BYTES", 8 * MiB, 64 * MiB);
const SCARCE_BYTES = knob("BUNRING_SCARCE_BYTES", 2 * MiB, 16 * MiB);
const MANY_CONNS = knob("BUNRING_MANY_CONNS", 2000, 8000);

// bunfig.toml's [test] timeout is not applied by bun 1.4.5 (tests died at 5 s): set it here.
setDefaultTimeout(testTimeout(120_000, 600_000));
afterEach(stopAll);

describe.each([...BACKENDS])("%s echo", (backend) => {
  const it = backendAvailable(backend) ? test : test.skip;

  it("echoes a small message exactly and counts it", async () => {
    const s = startServer(backend);
    expect(s.backend).toBe(backend);
    expect(await echoOnce(s.port, "hello, bunring\n")).toBe("hello, bunring\n");
    const one = await echoOnce(s.port, Buffer.from([0]));
    expect([...one]).toEqual([0]);
    await expectQuiet(s, { bytes: 16, conns: 2 });
  });

  it("echoes binary data of every byte value and odd sizes", async () => {
    const s = startServer(backend, { bufferSize: 512 });
    const all = Buffer.alloc(256 * 7);
    for (let i = 0; i < all.length; i++) all[i] = i & 0xff;
    const got = await echoOnce(s.port, all);
    expect(Buffer.compare(got, all)).toBe(0);
    // sizes around the buffer size: 511, 512, 513, 1023, 1024, 1025 bytes
    let total = all.length;
    for (const n of [511, 512, 513, 1023, 1024, 1025]) {
      const r = await echoStream({ port: s.port, bytes: n, seed: n });
      expect(r.received).toBe(n);
      total += n;
    }
    await expectQuiet(s, { bytes: total, conns: 7 });
  });

  it(`${STREAM_CONNS} concurrent connections each stream ${STREAM_BYTES / MiB} MiB byte-exact`, async () => {
    const s = startServer(backend);
    const results = await echoMany(STREAM_CONNS, { port: s.port, bytes: STREAM_BYTES, timeoutMs: 90_000 });
    expect(results.every((r) => r.received === STREAM_BYTES && r.eof)).toBe(true);
    const st = await expectQuiet(s, { bytes: STREAM_CONNS * STREAM_BYTES, conns: STREAM_CONNS });
    expect(st.connClosedEof).toBe(STREAM_CONNS);
    expect(st.recvCompletions).toBeGreaterThan(0);
    expect(st.sendCompletions).toBeGreaterThan(0);
    expect(st.buffersTotal).toBe(4096); // the default pool
  });

  it(`scarce buffers (bufferCount 64): ${STREAM_CONNS} × ${SCARCE_BYTES / MiB} MiB still byte-exact`, async () => {
    const s = startServer(backend, { bufferCount: 64 });
    await echoMany(STREAM_CONNS, { port: s.port, bytes: SCARCE_BYTES, seedBase: 5000, timeoutMs: 90_000 });
    const st = await expectQuiet(s, { bytes: STREAM_CONNS * SCARCE_BYTES, conns: STREAM_CONNS });
    expect(st.buffersTotal).toBe(64);
    if (backend === "uring") {
      // 100 busy connections cannot all hold buffers out of 64: the kernel must run out of provided
      // buffers at some point, which io_uring reports as ENOBUFS.
      expect(st.enobufs).toBeGreaterThan(0);
    }
  });

  it(`${MANY_CONNS} concurrent connections all echo`, async () => {
    const s = startServer(backend);
    const bytes = 4096;
    await echoMany(MANY_CONNS, { port: s.port, bytes, seedBase: 10_000, timeoutMs: 60_000 });
    const st = await expectQuiet(s, { bytes: MANY_CONNS * bytes, conns: MANY_CONNS });
    expect(st.connRejected).toBe(0);
    expect(st.acceptErrors).toBe(0);
  });

  it(`${MANY_CONNS} connections open at the same time, then all echo`, async () => {
    const s = startServer(backend);
    const conns = await Promise.all(Array.from({ length: MANY_CONNS }, () => connect(s.port)));
    await waitFor(
      () => s.stats().connOpen === MANY_CONNS,
      () => `connOpen == ${MANY_CONNS}: ${fmtStats(s.stats())}`,
      { timeoutMs: 20_000 },
    );
    // every one of them is live: each sends 100 bytes and gets them back
    for (const c of conns) c.sock.write(Buffer.alloc(100, 7));
    await waitFor(
      () => conns.every((c) => c.received() === 100),
      () => `all ${MANY_CONNS} connections got 100 bytes back (${conns.filter((c) => c.received() === 100).length} did)`,
      { timeoutMs: 20_000 },
    );
    for (const c of conns) c.sock.end();
    await Promise.all(conns.map((c) => c.closed));
    const st = await expectQuiet(s, { bytes: MANY_CONNS * 100, conns: MANY_CONNS });
    expect(st.connClosedEof).toBe(MANY_CONNS);
  });

  it("half-close: the client shuts down writing after 1 MiB and still receives every byte, then EOF", async () => {
    const s = startServer(backend);
    const r = await echoStream({ port: s.port, bytes: MiB, halfClose: true, seed: 77 });
    expect(r).toMatchObject({ sent: MiB, received: MiB, eof: true });
    // many at once, mixed sizes
    const sizes = [0, 1, 2047, 2048, 2049, 65_536, 300_001, MiB + 3];
    await Promise.all(sizes.map((n, i) => echoStream({ port: s.port, bytes: n, halfClose: true, seed: 100 + i })));
    const total = MiB + sizes.reduce((a, b) => a + b, 0);
    const st = await expectQuiet(s, { bytes: total, conns: 1 + sizes.length });
    expect(st.connClosedEof).toBe(1 + sizes.length);
  });

  it("a client that stops reading makes the server pause; everything arrives once it reads again", async () => {
    const maxPendingBytes = 65_536;
    const s = startServer(backend, { maxPendingBytes });
    const pattern = new Pattern(4242);
    const sock = net.connect({ port: s.port, host: "127.0.0.1" });
    await new Promise<void>((res, rej) => {
      sock.once("connect", res);
      sock.once("error", rej);
    });
    sock.pause(); // stop reading: the echo backs up into the server
    let sent = 0;
    let writing = true;
    const limit = 256 * MiB;
    const pump = () => {
      while (writing && sent < limit) {
        const n = Math.min(PATTERN_LEN - (sent % PATTERN_LEN), 65_536);
        const ok = sock.write(pattern.window(sent, n));
        sent += n;
        if (!ok) {
          sock.once("drain", pump);
          return;
        }
      }
    };
    pump();
    await waitFor(
      () => s.stats().pausedNow === 1,
      () => `server paused the connection (sent ${sent}): ${fmtStats(s.stats())}`,
      { timeoutMs: 20_000 },
    );
    const paused = s.stats();
    expect(paused.pauses).toBeGreaterThanOrEqual(1);
    // while paused, the connection holds a bounded amount of memory
    expect(paused.buffersInUse).toBeLessThan(paused.buffersTotal);
    if (backend === "epoll") expect(paused.sendEagain + paused.shortSends).toBeGreaterThan(0);
    writing = false;
    sock.removeAllListeners("drain");
    // resume: read and verify everything, then half-close once all writes are flushed
    let received = 0;
    let mismatch: string | null = null;
    const done = new Promise<void>((resolve, reject) => {
      sock.on("data", (c: Buffer) => {
        mismatch ??= pattern.verify(c, received);
        received += c.length;
        if (received > sent) reject(new Error(`received ${received} > sent ${sent}`));
      });
      sock.on("end", () => resolve());
      sock.on("error", reject);
    });
    sock.end(); // queued after the pending writes
    sock.resume();
    await withTimeout(done, 30_000, `echo of ${sent} bytes after resuming (received ${received})`);
    expect(mismatch).toBeNull();
    expect(received).toBe(sent);
    sock.destroy();
    const st = await expectQuiet(s, { bytes: sent, conns: 1 });
    expect(st.pausedNow).toBe(0);
  });

  it("a peer reset mid-stream is counted and the server stays healthy", async () => {
    const s = startServer(backend);
    // a healthy stream running across the resets
    const healthy = echoStream({ port: s.port, bytes: 4 * MiB, seed: 9 });
    const resets = 5;
    for (let i = 0; i < resets; i++) {
      const c = await connect(s.port);
      const pattern = new Pattern(i);
      c.sock.write(pattern.window(0, 60_000));
      c.sock.write(pattern.window(60_000, 60_000));
      await waitFor(() => c.received() > 0, `reset client ${i} got some echo back`);
      c.sock.on("error", () => undefined);
      c.sock.resetAndDestroy();
      await c.closed;
    }
    await waitFor(
      () => s.stats().connClosedReset === resets,
      () => `connClosedReset == ${resets}: ${fmtStats(s.stats())}`,
    );
    await healthy;
    // after the resets a new client still echoes
    const r = await echoStream({ port: s.port, bytes: 256 * 1024, seed: 10 });
    expect(r.received).toBe(256 * 1024);
    await waitFor(() => s.stats().connOpen === 0, () => `connOpen 0: ${fmtStats(s.stats())}`);
    const st = s.stats();
    expect(st.connAccepted).toBe(resets + 2);
    expect(st.connClosedReset).toBe(resets);
    expect(st.connClosedEof).toBe(2);
    expect(st.errors).toBe(0);
    expect(st.allocsAfterStart).toBe(0);
    expect(st.buffersInUse).toBe(0);
  });

  it("a reset while the server has unsent echo queued (reader stopped) is counted", async () => {
    const s = startServer(backend);
    const c = await connect(s.port);
    c.sock.pause();
    const pattern = new Pattern(3);
    for (let off = 0; off < 8 * MiB; off += 60_000) c.sock.write(pattern.window(off, 60_000));
    await waitFor(() => s.stats().pausedNow === 1, () => `paused: ${fmtStats(s.stats())}`, { timeoutMs: 20_000 });
    c.sock.on("error", () => undefined);
    c.sock.resetAndDestroy();
    await waitFor(() => s.stats().connOpen === 0, () => `connOpen 0 after reset: ${fmtStats(s.stats())}`);
    const st = s.stats();
    expect(st.connClosedReset).toBe(1);
    expect(st.buffersInUse).toBe(0);
    expect(st.pausedNow).toBe(0);
    expect(st.errors).toBe(0);
    expect(await echoOnce(s.port, "still here")).toBe("still here");
  });
});

// The Pattern the streaming clients verify against, checked near its wrap point, so a helper bug
// can't hide a server bug.
test("helper: pattern windows wrap seamlessly", () => {
  const p = new Pattern(12);
  const a = p.bytes(PATTERN_LEN + 100);
  expect(Buffer.compare(a.subarray(PATTERN_LEN), a.subarray(0, 100))).toBe(0);
  expect(p.verify(a.subarray(PATTERN_LEN - 50), PATTERN_LEN - 50)).toBeNull();
  const bad = Buffer.from(a.subarray(10, 20));
  bad[3] = bad[3]! ^ 1;
  expect(p.verify(bad, 10)).toMatch(/^byte 13:/);
});
