// loadgen.test.ts — the benchmark's load generator is itself a measuring instrument: it must find no
// error against a correct echo server (both bunring backends), count only verified round trips, and
// count a corrupted echo as a mismatch and a cut-off echo as a short read rather than a success. The
// same for request/response workloads (a custom request and reply, the RESP presets against
// bench/servers/resp-bun-listen.ts and a real redis-server when installed): a wrong reply byte is a
// mismatch, a byte with no request outstanding is extra, half a reply then EOF a short read; and
// pipelining keeps that many requests in flight. Every case runs with the client's io_uring traffic
// loop and with its epoll one.
import { afterAll, describe, expect, it, setDefaultTimeout } from "bun:test";
import { resolve } from "node:path";
import { runLoadgen, type LoadgenIo } from "../ffi/loadgen.ts";
import { freePort } from "../bench/targets.ts";
import { respWorkload } from "../bench/workloads.ts";
import { REPO } from "./helpers/cli.ts";
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

// ---- request/response workloads and pipelining ----

const enc = new TextEncoder();

/**
 * A fixed-size request/reply responder: for every `request.length` bytes received it answers `reply`,
 * or, by mode, a reply with its last byte flipped ("wrong"), the reply plus one byte ("extra"), half
 * the first reply and then a close ("short"), or nothing until `batch` requests are waiting and then
 * all their replies at once ("batch": only a client with `batch` requests in flight gets answers).
 */
function responder(request: Uint8Array, reply: Uint8Array, mode: "ok" | "wrong" | "extra" | "short" | "batch", batch = 1) {
  const answer = (n: number): Uint8Array => {
    const one = new Uint8Array(mode === "extra" ? reply.length + 1 : reply.length);
    one.set(reply);
    if (mode === "wrong") one[one.length - 1]! ^= 0xff;
    if (mode === "extra") one[one.length - 1] = 0x58;
    const out = new Uint8Array(one.length * n);
    for (let i = 0; i < n; i++) out.set(one, i * one.length);
    return out;
  };
  return Bun.listen<{ pending: number; queue: Uint8Array[] }>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(socket) {
        socket.data = { pending: 0, queue: [] };
      },
      data(socket, data) {
        socket.data.pending += data.length;
        const n = Math.floor(socket.data.pending / request.length);
        if (mode === "batch" && n < batch) return;
        socket.data.pending -= n * request.length;
        if (n === 0) return;
        if (mode === "short") {
          socket.write(reply.subarray(0, reply.length >> 1));
          socket.end();
          return;
        }
        const out = answer(n);
        const queue = socket.data.queue;
        if (queue.length > 0) queue.push(out);
        else {
          const w = socket.write(out);
          if (w >= 0 && w < out.length) queue.push(out.subarray(w));
        }
      },
      drain(socket) {
        const queue = socket.data.queue;
        while (queue.length > 0) {
          const w = socket.write(queue[0]!);
          if (w < 0) return;
          if (w < queue[0]!.length) {
            queue[0] = queue[0]!.subarray(w);
            return;
          }
          queue.shift();
        }
      },
      error() {},
    },
  });
}

const PING = enc.encode("*1\r\n$4\r\nPING\r\n");
const PONG = enc.encode("+PONG\r\n");
const pingTable = { requests: PING, requestLen: PING.length, replies: PONG, replyLen: PONG.length };

describe.each(IOS)("request/response workloads (client I/O %s)", (io) => {
  const servers = {
    ok: responder(PING, PONG, "ok"),
    wrong: responder(PING, PONG, "wrong"),
    extra: responder(PING, PONG, "extra"),
    short: responder(PING, PONG, "short"),
    batch: responder(PING, PONG, "batch", 16),
  };
  afterAll(() => {
    for (const s of Object.values(servers)) s.stop(true);
  });
  const errorsOf = (r: Awaited<ReturnType<typeof runLoadgen>>) => ({
    connectErrors: r.connectErrors,
    mismatches: r.mismatches,
    shortReads: r.shortReads,
    extras: r.extras,
    ioErrors: r.ioErrors,
  });
  const none = { connectErrors: 0, mismatches: 0, shortReads: 0, extras: 0, ioErrors: 0 };

  for (const pipeline of [1, 16]) {
    it(`a custom request/reply, pipeline ${pipeline}: every reply verified, zero errors`, async () => {
      const r = await runLoadgen({ ...base, io, port: servers.ok.port, connections: 8, length: 0, pipeline, table: pingTable });
      expect(r.status).toBe(0);
      expect(r.io).toBe(expectedIo(io));
      expect(errorsOf(r)).toEqual(none);
      expect(r.responses).toBeGreaterThan(0);
      expect(r.bytesVerified).toBe(r.responsesTotal * PONG.length);
      expect(r.latencyUs.p50).toBeLessThanOrEqual(r.latencyUs.max);
    });
  }

  it("16 in flight: a server that answers only once 16 requests are waiting still gets them all answered", async () => {
    const r = await runLoadgen({ ...base, io, port: servers.batch.port, connections: 4, length: 0, pipeline: 16, table: pingTable });
    expect(errorsOf(r)).toEqual(none);
    expect(r.responses).toBeGreaterThan(0);
    expect(r.responsesTotal % 16).toBe(0); // whole batches only: the window was always full
  });

  it("8 in flight against that server: nothing is answered (the window really is the limit)", async () => {
    const r = await runLoadgen({ ...base, io, port: servers.batch.port, connections: 2, length: 0, pipeline: 8, table: pingTable, durationMs: 200 });
    expect(r.responsesTotal).toBe(0);
  });

  it("a wrong reply byte counts as a mismatch", async () => {
    const r = await runLoadgen({ ...base, io, port: servers.wrong.port, connections: 4, length: 0, pipeline: 4, table: pingTable });
    expect(r.mismatches).toBe(4); // each connection's first reply, which closes it
    expect(r.responsesTotal).toBe(0);
  });

  it("a byte after the reply, with no request outstanding, counts as extra", async () => {
    const r = await runLoadgen({ ...base, io, port: servers.extra.port, connections: 4, length: 0, pipeline: 1, table: pingTable });
    expect(r.extras + r.mismatches).toBe(4);
    expect(r.extras).toBeGreaterThan(0);
    expect(r.responsesTotal).toBe(4); // the reply itself was right
  });

  it("half a reply and then EOF counts as a short read", async () => {
    const r = await runLoadgen({ ...base, io, port: servers.short.port, connections: 4, length: 0, pipeline: 1, table: pingTable });
    expect({ shortReads: r.shortReads, mismatches: r.mismatches, responsesTotal: r.responsesTotal }).toEqual({
      shortReads: 4,
      mismatches: 0,
      responsesTotal: 0,
    });
    expect(r.bytesVerified).toBe(4 * (PONG.length >> 1));
  });

  it("16 in flight against bunring's echo server (both backends): verified, zero errors, every byte echoed", async () => {
    for (const backend of ["uring", "epoll"] as const) {
      const server = serve({ backend, port: 0 });
      try {
        const r = await runLoadgen({ ...base, io, port: server.port, connections: 8, length: 512, pipeline: 16 });
        expect(r.status).toBe(0);
        expect(errorsOf(r)).toEqual(none);
        expect(r.responses).toBeGreaterThan(0);
        expect(r.bytesVerified).toBe(r.responsesTotal * 512);
      } finally {
        await server.stop({ drainMs: 0 });
      }
      const st = server.stats();
      expect(st.bytesIn).toBe(st.bytesOut);
    }
  });

  describe("RESP presets", () => {
    const redis = Bun.which("redis-server");
    const servers: { name: string; start: (port: number) => string[] }[] = [
      { name: "resp-bun-listen", start: (port) => [process.execPath, resolve(REPO, "bench/servers/resp-bun-listen.ts"), "--port", String(port)] },
    ];
    if (redis) {
      servers.push({
        name: "redis-server",
        start: (port) => [redis, "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      });
    }
    for (const s of servers) {
      it(`${s.name}: resp-get (keys SET first), resp-set and resp-ping at pipeline 16, zero errors`, async () => {
        const { proc, port } = await startRespServer(s.start);
        try {
          for (const name of ["resp-get", "resp-set", "resp-ping"] as const) {
            const w = respWorkload(name, 100, 16);
            await w.prepare?.("127.0.0.1", port);
            const r = await runLoadgen({ ...base, io, port, connections: 8, length: 0, pipeline: 16, table: w.table, durationMs: 300 });
            expect({ name, status: r.status, ...errorsOf(r) }).toEqual({ name, status: 0, ...none });
            expect(r.responses).toBeGreaterThan(0);
            expect(r.bytesVerified).toBe(r.responsesTotal * w.table!.replyLen);
          }
        } finally {
          proc.kill();
          await proc.exited;
        }
      });
    }
    if (!redis) it.skip("redis-server: not installed (apt-get install redis-server), so only resp-bun-listen runs", () => {});
  });
});

/** Starts a RESP server on a free port and waits until it answers PING. */
async function startRespServer(argv: (port: number) => string[]) {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const proc = Bun.spawn({ cmd: argv(port), stdout: "ignore", stderr: "pipe" });
    const deadline = performance.now() + 10_000;
    while (performance.now() < deadline && proc.exitCode === null) {
      try {
        const w = respWorkload("resp-ping");
        const r = await runLoadgen({ ...base, io: "epoll", port, connections: 1, length: 0, table: w.table, warmupMs: 0, durationMs: 20, connectTimeoutMs: 200 });
        if (r.responsesTotal > 0) return { proc, port };
      } catch {
        // not listening yet
      }
      await Bun.sleep(50);
    }
    proc.kill();
    await proc.exited;
    if (attempt === 2) throw new Error(`${argv(port).join(" ")} did not answer PING`);
  }
}
