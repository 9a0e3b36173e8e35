// loadgen.test.ts — the benchmark's load generator is itself a measuring instrument: it must find no
// error against a correct echo server (both bunring backends), count only verified round trips, and
// count a corrupted echo as a mismatch and a cut-off echo as a short read rather than a success.
// Every case runs with the client's io_uring traffic loop and with its epoll one.
import { afterAll, describe, expect, it, setDefaultTimeout } from "bun:test";
import { runLoadgen, type LoadgenIo } from "../ffi/loadgen.ts";
import { probeNative } from "../ffi/server.ts";
import { serve } from "../src/index.ts";

setDefaultTimeout(30_000);

const base = { host: "127.0.0.1", threads: 1, warmupMs: 100, durationMs: 500, connectTimeoutMs: 5_000, cpus: [] };

const IOS: LoadgenIo[] = ["uring", "epoll"];
const uringUsable = probeNative().features.includes("multishot_recv");
const expectedIo = (io: LoadgenIo) => (io === "uring" && uringUsable ? "io_uring" : "epoll");

/** Sizes that take one buffer per echo, and ones that take many (and run the client's pool dry). */
const SHAPES = [
  { connections: 16, length: 1024 },
  { connections: 4, length: 1 << 20 },
];

describe.each(IOS)("loadgen (client I/O %s)", (io) => {
  describe.each(["uring", "epoll"] as const)("against bunring %s", (backend) => {
    for (const shape of SHAPES) {
      it(`${shape.connections} × ${shape.length} B: verified round trips, zero errors, the server echoed exactly those bytes`, async () => {
        const server = serve({ backend, port: 0 });
        try {
          const r = await runLoadgen({ ...base, io, port: server.port, ...shape });
          expect(r.status).toBe(0);
          expect(r.io).toBe(expectedIo(io));
          expect({ connectErrors: r.connectErrors, mismatches: r.mismatches, shortReads: r.shortReads, ioErrors: r.ioErrors })
            .toEqual({ connectErrors: 0, mismatches: 0, shortReads: 0, ioErrors: 0 });
          expect(r.responses).toBeGreaterThan(0);
          expect(r.responses).toBeLessThanOrEqual(r.responsesTotal);
          expect(r.bytesVerified).toBe(r.responsesTotal * shape.length);
          expect(r.responsesPerSec).toBeCloseTo(r.responses / r.elapsedS, 0);
        } finally {
          await server.stop({ drainMs: 0 });
        }
        const st = server.stats();
        expect(st.bytesIn).toBe(st.bytesOut);
        expect(st.connAccepted).toBe(shape.connections);
      });
    }
  });

  describe("against misbehaving servers", () => {
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
    // Echoes the first 100 bytes of a connection, then closes it: every echo is cut short.
    const cutoff = Bun.listen<{ echoed: number }>({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open(socket) {
          socket.data = { echoed: 0 };
        },
        data(socket, data) {
          const take = Math.min(100 - socket.data.echoed, data.length);
          if (take > 0) socket.write(data.subarray(0, take));
          socket.data.echoed += take;
          if (socket.data.echoed >= 100) socket.end();
        },
      },
    });
    afterAll(() => {
      corrupt.stop(true);
      cutoff.stop(true);
    });

    it("a corrupted echo counts as a mismatch, never as a round trip", async () => {
      const r = await runLoadgen({ ...base, io, port: corrupt.port, connections: 4, length: 256 });
      expect(r.io).toBe(expectedIo(io));
      expect(r.mismatches).toBe(4); // each connection's first echo, which closes it
      expect(r.responsesTotal).toBe(0);
    });

    it("an echo cut off by the server's close counts as a short read", async () => {
      const r = await runLoadgen({ ...base, io, port: cutoff.port, connections: 4, length: 256 });
      expect(r.io).toBe(expectedIo(io));
      expect({ shortReads: r.shortReads, mismatches: r.mismatches, responsesTotal: r.responsesTotal })
        .toEqual({ shortReads: 4, mismatches: 0, responsesTotal: 0 });
      expect(r.bytesVerified).toBe(4 * 100);
    });
  });
});
