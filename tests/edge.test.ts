// edge.test.ts — configurations and traffic at the edges: maxPendingBytes below the buffer size,
// 1 MiB buffers, the smallest buffer pool with many connections, connection churn through a small
// connection table (slot reuse and generations), resets mixed into busy traffic, and a fast-check
// property that fuzzes the server configuration together with the traffic (sizes, chunking,
// half-close, resets) and checks every byte and every counter. The fd limit (EMFILE) is tested in
// tests/reliability/limits.test.ts; long connect/close churn in tests/reliability/churn.test.ts.
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import fc from "fast-check";
import { echoMany, echoOnce, echoStream } from "./helpers/clients.ts";
import { minBufferCount } from "./helpers/oracle.ts";
import { Pattern } from "./helpers/prng.ts";
import { knob, MiB, testTimeout } from "./helpers/scale.ts";
import { BACKENDS, backendAvailable, expectQuiet, fmtStats, startServer, stopAll } from "./helpers/server.ts";
import { connect } from "./helpers/sockets.ts";
import { waitFor } from "./helpers/wait.ts";

setDefaultTimeout(testTimeout(120_000, 1_200_000));
afterEach(stopAll);

const FUZZ_RUNS = knob("BUNRING_FUZZ_RUNS", 12, 100);
const SCARCE_ROUNDS = knob("BUNRING_SCARCE_ROUNDS", 25, 300);

/** Opens a connection, streams some bytes, waits for some echo, then resets it (RST). */
async function resetAfterSome(port: number, seed: number, bytes: number): Promise<void> {
  const c = await connect(port);
  const p = new Pattern(seed);
  c.sock.write(p.bytes(bytes));
  await waitFor(() => c.received() > 0, `reset client ${seed} got echo`, { timeoutMs: 10_000 });
  c.sock.resetAndDestroy();
  await c.closed;
}

describe.each([...BACKENDS])("%s edges", (backend) => {
  const it = backendAvailable(backend) ? test : test.skip;

  it("maxPendingBytes (1024) far below bufferSize (64 KiB): streams still complete byte-exact", async () => {
    const s = startServer(backend, { bufferSize: 65_536, bufferCount: 64, maxPendingBytes: 1024 });
    await echoMany(8, { port: s.port, bytes: 4 * MiB, timeoutMs: 60_000 });
    await expectQuiet(s, { bytes: 32 * MiB, conns: 8 });
  });

  it("1 MiB buffers: streams complete byte-exact", async () => {
    const s = startServer(backend, { bufferSize: 1 << 20, bufferCount: 16, maxPendingBytes: 4 * MiB });
    await echoMany(6, { port: s.port, bytes: 8 * MiB, timeoutMs: 60_000 });
    await expectQuiet(s, { bytes: 48 * MiB, conns: 6 });
  });

  it(`the smallest pool (16 buffers of 512 B) shared by 64 streaming connections, ${SCARCE_ROUNDS} rounds`, async () => {
    // Buffers run out constantly: connections hit ENOBUFS and must be re-armed once buffers return.
    // A lost wake-up shows as streams that stop with every buffer free (buffersInUse 0).
    // The race is timing-dependent (about 1 round in 30 stalled on uring when found), hence rounds.
    for (let round = 0; round < SCARCE_ROUNDS; round++) {
      const s = startServer(backend, { bufferSize: 512, bufferCount: 16, maxPendingBytes: 2048 });
      try {
        await echoMany(64, { port: s.port, bytes: 256 * 1024, seedBase: round * 64, timeoutMs: 10_000 });
      } catch (e) {
        throw new Error(`round ${round}: ${(e as Error).message}\nserver stats: ${fmtStats(s.stats())}`);
      }
      const st = await expectQuiet(s, { bytes: 64 * 256 * 1024, conns: 64 });
      expect(st.buffersTotal).toBe(16);
      await s.stop({ drainMs: 0 });
    }
  });

  it("connection churn: 3000 short connections in waves reuse slots cleanly", async () => {
    const s = startServer(backend, { maxConnections: 256 });
    let conns = 0;
    for (let wave = 0; wave < 30; wave++) {
      await echoMany(100, { port: s.port, bytes: 300 + wave, seedBase: wave * 100, timeoutMs: 20_000 });
      conns += 100;
    }
    const total = Array.from({ length: 30 }, (_, w) => 100 * (300 + w)).reduce((a, b) => a + b, 0);
    const st = await expectQuiet(s, { bytes: total, conns });
    expect(st.connRejected).toBe(0);
  });

  it("resets mixed into busy traffic: healthy streams unaffected, every reset counted", async () => {
    const s = startServer(backend, { threads: 2, bufferCount: 128 });
    const healthy = echoMany(20, { port: s.port, bytes: 2 * MiB, seedBase: 100, timeoutMs: 60_000 });
    const resets = Array.from({ length: 20 }, (_, i) => resetAfterSome(s.port, 1000 + i, 200_000));
    await Promise.all([healthy, ...resets]);
    await waitFor(
      () => s.stats().connOpen === 0 && s.stats().connClosedReset === 20,
      () => `20 resets counted and all closed: ${fmtStats(s.stats())}`,
    );
    const st = s.stats();
    expect(st.connClosedEof).toBe(20);
    expect(st.connAccepted).toBe(40);
    expect(st.buffersInUse).toBe(0);
    expect(st.errors).toBe(0);
    expect(st.allocsAfterStart).toBe(0);
    expect(await echoOnce(s.port, "after the storm")).toBe("after the storm");
  });

  it(`fuzz: random configuration × random traffic (${FUZZ_RUNS} runs): every byte and counter right`, async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          threads: fc.integer({ min: 1, max: 3 }),
          bufferSize: fc.constantFrom(512, 1000, 2048, 4096, 65_536),
          bufferCount: fc.constantFrom(16, 32, 64, 256, 4096),
          maxPendingBytes: fc.constantFrom(1024, 4096, 65_536, 1 << 20),
        })
        // The pool must hold what one connection may hold (serve() refuses anything else).
        .filter((c) => c.bufferCount >= minBufferCount(c.bufferSize, c.maxPendingBytes)),
        fc.array(
          fc.record({
            bytes: fc.integer({ min: 0, max: 2 * MiB }),
            chunk: fc.integer({ min: 1, max: 65_521 }),
            halfClose: fc.boolean(),
            reset: fc.boolean(),
          }),
          { minLength: 1, maxLength: 24 },
        ),
        async (cfg, traffic) => {
          const s = startServer(backend, cfg);
          try {
            let bytes = 0;
            let resets = 0;
            await Promise.all(
              traffic.map((t, i) => {
                if (t.reset && t.bytes > 0) {
                  resets++;
                  return resetAfterSome(s.port, i, Math.min(t.bytes, 100_000));
                }
                bytes += t.bytes;
                // tiny writes only for small streams: at most ~4000 writes per connection keeps runs short
                const chunkSize = Math.max(t.chunk, Math.ceil(t.bytes / 4000));
                return echoStream({ port: s.port, bytes: t.bytes, seed: i, chunkSize, halfClose: t.halfClose, timeoutMs: 30_000 });
              }),
            );
            const conns = traffic.length;
            await waitFor(
              () => s.stats().connOpen === 0 && s.stats().connAccepted === conns,
              () => `quiet after ${conns} connections: ${fmtStats(s.stats())}`,
            );
            const st = s.stats();
            const why = `cfg ${JSON.stringify(cfg)}: ${fmtStats(st)}`;
            if (st.connClosedReset !== resets) throw new Error(`connClosedReset ${st.connClosedReset} != ${resets}; ${why}`);
            if (st.connClosedEof !== conns - resets) throw new Error(`connClosedEof ${st.connClosedEof} != ${conns - resets}; ${why}`);
            if (resets === 0 && (st.bytesIn !== bytes || st.bytesOut !== bytes)) throw new Error(`bytes ${bytes} sent; ${why}`);
            if (st.bytesOut > st.bytesIn) throw new Error(`bytesOut > bytesIn; ${why}`);
            if (st.buffersInUse !== 0 || st.pausedNow !== 0 || st.errors !== 0 || st.allocsAfterStart !== 0) throw new Error(why);
            return true;
          } finally {
            await s.stop({ drainMs: 0 });
          }
        },
      ),
      { numRuns: FUZZ_RUNS },
    );
  });
});
