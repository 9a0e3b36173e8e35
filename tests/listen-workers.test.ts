// listen-workers.test.ts — handlers on more cores (issue #10): examples/js-echo-workers.ts runs the JS
// echo on 2 Bun Workers, each with its own listen() server (one loop) on one port with reusePort. On
// both backends: 64 connections at once are spread by the kernel over both Workers (each Worker's
// counters, posted back to this thread, show it served some, and together they add up to exactly
// what the clients did), every connection echoes its random payload byte-exact, and stopping the
// Workers resolves once each has awaited server.stop() and exited (no thread, no listener left). The
// example as a command stops on SIGTERM and its process exits. Without reusePort, a second server on
// a port someone holds is refused (serve() and listen()) with an error that says so. reusePort is
// checked like every boolean option, and the CLI's --reuse-port lets two servers share a port.
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { startEchoWorkers, type EchoWorker } from "../examples/js-echo-workers.ts";
import { listen, serve, type Listener, type Server, type ServerStats } from "../src/index.ts";
import { bannerOf, BUN, exitOf, killIfRunning, REPO, runCli } from "./helpers/cli.ts";
import { echoStream } from "./helpers/clients.ts";
import { listenersOn } from "./helpers/proc.ts";
import { logUniformSize, rng } from "./helpers/prng.ts";
import { KiB, testTimeout } from "./helpers/scale.ts";
import { BACKENDS, backendAvailable } from "./helpers/server.ts";
import { refused } from "./helpers/sockets.ts";
import { waitFor, withTimeout } from "./helpers/wait.ts";

setDefaultTimeout(testTimeout(20_000, 120_000));

const EXAMPLE = resolve(REPO, "examples", "js-echo-workers.ts");
const CONNECTIONS = 64;

let workers: EchoWorker[] = [];
const servers: (Server | Listener)[] = [];
afterEach(async () => {
  await Promise.all([...workers.map((w) => w.stop().catch(() => undefined)), ...servers.map((s) => s.stop().catch(() => undefined))]);
  workers = [];
  servers.length = 0;
});

/**
 * This process's threads named "Worker": Bun names each Worker's thread so, and the loop threads a
 * Worker's listen() starts inherit the name (as may, for a moment, a helper thread a Worker starts
 * before it names itself). JSC's JIT and heap threads, which Workers also start, have names of their
 * own and linger about 10 s after the Workers end, then exit by themselves: not counted.
 */
function workerThreads(): number {
  let n = 0;
  for (const task of readdirSync("/proc/self/task")) {
    try {
      if (readFileSync(`/proc/self/task/${task}/comm`, "utf8").trim() === "Worker") n++;
    } catch {
      // the thread ended meanwhile
    }
  }
  return n;
}

const sum = (all: ServerStats[], key: keyof ServerStats) => all.reduce((n, s) => n + s[key], 0);

for (const backend of BACKENDS) {
  describe.skipIf(!backendAvailable(backend))(`listen() on 2 Workers sharing a port [${backend}]`, () => {
    test(`the kernel spreads ${CONNECTIONS} connections over both Workers; every echo is byte-exact; both stop and exit`, async () => {
      const threads0 = workerThreads();
      workers = await startEchoWorkers({ workers: 2, port: 0, backend });
      expect(workerThreads()).toBeGreaterThanOrEqual(threads0 + 4); // 2 Workers, and each one's loop thread
      const port = workers[0]!.port;
      expect(workers.map((w) => [w.port, w.backend])).toEqual([
        [port, backend],
        [port, backend],
      ]);
      expect(listenersOn(port)).toBe(2); // one SO_REUSEPORT socket per Worker

      // All at once, each with its own seed: a random size (1 B .. 256 KiB, log-uniform) of its own
      // byte stream, half of them half-closed right after the last byte.
      const sizes = Array.from({ length: CONNECTIONS }, (_, i) => logUniformSize(rng(1000 + i), 256 * KiB));
      const results = await Promise.all(
        sizes.map((bytes, i) => echoStream({ port, bytes, seed: 1000 + i, halfClose: i % 2 === 0, timeoutMs: 15_000 })),
      );
      const total = sizes.reduce((a, b) => a + b, 0);
      expect(results.every((r, i) => r.received === sizes[i] && r.eof)).toBe(true);

      // Each Worker's counters, posted back: both served some, and together exactly what was sent.
      let stats: ServerStats[] = [];
      await waitFor(
        async () => {
          stats = await Promise.all(workers.map((w) => w.stats()));
          return sum(stats, "connAccepted") === CONNECTIONS && sum(stats, "connOpen") === 0 && sum(stats, "bytesOut") === total;
        },
        () => {
          const seen = stats.map((s) => ({ accepted: s.connAccepted, open: s.connOpen, bytesOut: s.bytesOut }));
          return `both Workers quiet after ${CONNECTIONS} connections and ${total} bytes: ${JSON.stringify(seen)}`;
        },
      );
      const accepted = stats.map((s) => s.connAccepted);
      expect({ accepted, bothServed: accepted.every((n) => n > 0) }).toEqual({ accepted, bothServed: true });
      expect({
        connAccepted: sum(stats, "connAccepted"),
        connClosedEof: sum(stats, "connClosedEof"),
        bytesIn: sum(stats, "bytesIn"),
        bytesOut: sum(stats, "bytesOut"),
        connRejected: sum(stats, "connRejected"),
        connClosedReset: sum(stats, "connClosedReset"),
        errors: sum(stats, "errors"),
      }).toEqual({
        connAccepted: CONNECTIONS,
        connClosedEof: CONNECTIONS,
        bytesIn: total,
        bytesOut: total,
        connRejected: 0,
        connClosedReset: 0,
        errors: 0,
      });

      // Stop: each Worker awaits server.stop(), answers with its final counters and exits.
      const finals = await withTimeout(Promise.all(workers.map((w) => w.stop())), 10_000, "both Workers to stop and exit");
      workers = [];
      expect(finals.map((s) => s.connAccepted)).toEqual(accepted);
      expect(await refused(port)).toBe(true);
      expect(listenersOn(port)).toBe(0);
      // The Workers have exited (stop() resolved on their close event) and their loops were joined.
      await waitFor(() => workerThreads() <= threads0, () => `Worker threads back to ${threads0} (now ${workerThreads()})`, { timeoutMs: 3_000 });
    });

    test("the example as a command: prints the port, echoes, and SIGTERM stops both Workers and the process", async () => {
      const run = runCli([], { cmd: [BUN, EXAMPLE, "--port", "0", "--backend", backend] });
      try {
        const banner = await withTimeout(run.banner, 10_000, "js-echo-workers banner");
        const m = /^js-echo-workers \(bunring listen, (\w+), 2 workers\) listening on 127\.0\.0\.1:(\d+)$/.exec(banner);
        expect(m?.[1]).toBe(backend);
        const port = Number(m![2]);
        expect(listenersOn(port)).toBe(2);
        const r = await echoStream({ port, bytes: 64 * KiB, seed: 5, halfClose: true, timeoutMs: 10_000 });
        expect(r.received).toBe(64 * KiB);
        run.proc.kill("SIGTERM");
        const done = await exitOf(run, 10_000);
        expect({ code: done.code, stderr: done.stderr }).toEqual({ code: 0, stderr: "" });
        expect(done.stdout).toMatch(/stopped; connections accepted per worker: \d+, \d+\n$/);
        expect(await refused(port)).toBe(true);
      } finally {
        killIfRunning(run);
      }
    });

    test("without reusePort a second server on a held port is refused, serve() and listen(), with an error that says why", async () => {
      const holder = listen({ hostname: "127.0.0.1", port: 0, backend, socket: {} });
      servers.push(holder);
      const port = holder.port;
      const attempts: [string, () => Server | Listener][] = [
        ["serve()", () => serve({ backend, port })],
        ["serve({ threads: 2 })", () => serve({ backend, port, threads: 2 })],
        ["listen()", () => listen({ backend, port, socket: {} })],
        ["listen({ threads: 2 })", () => listen({ backend, port, threads: 2, socket: {} })],
        // reusePort on the newcomer only: the holder did not agree to share
        ["serve({ reusePort: true })", () => serve({ backend, port, reusePort: true })],
        ["listen({ reusePort: true })", () => listen({ backend, port, reusePort: true, socket: {} })],
      ];
      for (const [what, attempt] of attempts) {
        let error: (Error & { code?: string }) | undefined;
        try {
          servers.push(attempt());
        } catch (e) {
          error = e as Error;
        }
        expect({ what, code: error?.code }).toEqual({ what, code: "EADDRINUSE" });
        expect(error!.message).toContain(`port ${port} on 127.0.0.1 is already in use`);
        expect(error!.message).toContain("reusePort");
      }
      // Workers (reusePort) cannot join it either: the example rejects with the error, and no Worker is left.
      const threads0 = workerThreads();
      const joined = await startEchoWorkers({ workers: 2, port, backend }).then(
        (ws) => ((workers = ws), "started"),
        (e: Error & { code?: string }) => `${e.code}: ${e.message}`,
      );
      expect(joined).toMatch(/^EADDRINUSE: .*already in use by a socket that does not share it/);
      await waitFor(() => workerThreads() <= threads0, () => `Worker threads back to ${threads0} (now ${workerThreads()})`, { timeoutMs: 3_000 });
      // A holder that shares (reusePort) still refuses a newcomer that does not.
      const sharing = serve({ backend, port: 0, reusePort: true });
      servers.push(sharing);
      expect(() => serve({ backend, port: sharing.port })).toThrow(/already in use/);
      expect(() => listen({ backend, port: sharing.port, socket: {} })).toThrow(/already in use/);
      expect(listenersOn(port)).toBe(1);
      expect(listenersOn(sharing.port)).toBe(1);
    });
  });
}

test("reusePort must be true or false (serve() and listen()); port 0 is a port of one's own; --reuse-port lets two CLI servers share a port", async () => {
  for (const bad of ["yes", 1, null] as unknown[]) {
    expect(() => serve({ backend: "epoll", port: 0, reusePort: bad as boolean })).toThrow(TypeError);
    expect(() => serve({ backend: "epoll", port: 0, reusePort: bad as boolean })).toThrow(/reusePort must be true or false/);
    expect(() => listen({ backend: "epoll", port: 0, reusePort: bad as boolean, socket: {} })).toThrow(/reusePort must be true or false/);
  }
  // Port 0 with reusePort: the kernel picks a port nobody holds, so each server gets its own.
  const a = serve({ backend: "epoll", port: 0, reusePort: true });
  const b = serve({ backend: "epoll", port: 0, reusePort: true, threads: 2 });
  servers.push(a, b);
  expect(a.port).not.toBe(b.port);
  expect([listenersOn(a.port), listenersOn(b.port)]).toEqual([1, 2]);
  const first = runCli(["--backend", "epoll", "--port", "0", "--reuse-port"]);
  let second: ReturnType<typeof runCli> | undefined;
  try {
    const { port } = await bannerOf(first);
    second = runCli(["--backend", "epoll", "--port", String(port), "--reuse-port"]);
    expect((await bannerOf(second)).port).toBe(port);
    expect(listenersOn(port)).toBe(2);
    const without = await exitOf(runCli(["--backend", "epoll", "--port", String(port)]));
    expect(without.code).toBe(1);
    expect(without.stderr).toContain(`port ${port} on 127.0.0.1 is already in use`);
    first.proc.kill("SIGINT");
    second.proc.kill("SIGINT");
    expect([(await exitOf(first)).code, (await exitOf(second)).code]).toEqual([0, 0]);
    expect(await refused(port)).toBe(true);
  } finally {
    killIfRunning(first);
    if (second) killIfRunning(second);
  }
});
