// loadgen.test.ts — the benchmark's load generator is itself a measuring instrument: it must find no
// error against a correct echo server (both bunring backends), count only verified round trips, and
// count a corrupted echo as a mismatch rather than a success.
import { afterAll, describe, expect, it, setDefaultTimeout } from "bun:test";
import { runLoadgen } from "../ffi/loadgen.ts";
import { serve } from "../src/index.ts";

setDefaultTimeout(30_000);

const base = { host: "127.0.0.1", threads: 1, warmupMs: 100, durationMs: 500, connectTimeoutMs: 5_000, cpus: [] };

describe.each(["uring", "epoll"] as const)("loadgen against bunring %s", (backend) => {
  it("completes verified round trips with zero errors, and the server echoed exactly those bytes", async () => {
    const server = serve({ backend, port: 0 });
    try {
      const r = await runLoadgen({ ...base, port: server.port, connections: 16, length: 1024 });
      expect(r.status).toBe(0);
      expect({ connectErrors: r.connectErrors, mismatches: r.mismatches, shortReads: r.shortReads, ioErrors: r.ioErrors })
        .toEqual({ connectErrors: 0, mismatches: 0, shortReads: 0, ioErrors: 0 });
      expect(r.responses).toBeGreaterThan(0);
      expect(r.responses).toBeLessThanOrEqual(r.responsesTotal);
      expect(r.bytesVerified).toBe(r.responsesTotal * 1024);
      expect(r.responsesPerSec).toBeCloseTo(r.responses / r.elapsedS, 0);
    } finally {
      await server.stop({ drainMs: 0 });
    }
    const st = server.stats();
    expect(st.bytesIn).toBe(st.bytesOut);
    expect(st.connAccepted).toBe(16);
  });
});

describe("loadgen against a corrupting echo server", () => {
  // Flips one byte of every echo: the load generator must count mismatches, never verified bytes.
  const corrupt = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      data(socket, data) {
        const copy = Buffer.from(data);
        copy[copy.length - 1] = copy[copy.length - 1]! ^ 0xff;
        socket.write(copy);
      },
    },
  });
  afterAll(() => corrupt.stop(true));

  it("reports mismatches and no verified round trips", async () => {
    const r = await runLoadgen({ ...base, port: corrupt.port, connections: 4, length: 256 });
    expect(r.mismatches).toBeGreaterThan(0);
    expect(r.responses).toBe(0);
  });
});
