// faults.test.ts — reliability scenario 5: faults.
//   * Clients killed with SIGKILL mid-stream (child bun processes streaming to the server, some
//     reading, some not, killed at a random point): every connection is closed and counted, nothing
//     stays open or held, and the server keeps serving (byte-exact) — over several rounds.
//   * stop({ drainMs: 500 }) under full load (100 connections streaming, some not reading): resolves
//     within drainMs + a margin, nothing open or held afterwards, closes == accepts (some by stop),
//     the port is free, fds back, and what each client got before the close is a byte-exact prefix
//     of what it sent.
//   * SIGINT / SIGTERM to the CLI under load: exit 0 within drain + margin, final line
//     `bunring stopped: <signal>; accepted=N open=0 ...` with closes == accepts.
//   * io_uring unavailable (BUNRING_DISABLE_URING=1; runs whether or not this machine has io_uring):
//     probe() says so, backend "uring" throws an Error suggesting epoll (and starts nothing), "auto"
//     falls back to epoll and says why (API and CLI banner), epoll is unaffected.
// This is the home of stop() under load and of the io_uring-unavailable path; stop() in quieter
// situations (drain of queued echo, idle connections, restarts) is in tests/lifecycle.test.ts.
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { probe, serve } from "../../src/index.ts";
import { bannerOf, BUN, exitOf, killIfRunning, runCli, stoppedStats } from "../helpers/cli.ts";
import { echoOnce, pipelinedClient, streamer } from "../helpers/clients.ts";
import { expectFdsBackTo, fdCount, listFds } from "../helpers/proc.ts";
import { rng } from "../helpers/prng.ts";
import { report } from "../helpers/report.ts";
import { KiB, knob, MiB, testTimeout } from "../helpers/scale.ts";
import { BACKENDS, backendAvailable, fmtStats, startServer, statsReach, stopAll, stopServer } from "../helpers/server.ts";
import { freePort, refused } from "../helpers/sockets.ts";
import { waitFor, withTimeout } from "../helpers/wait.ts";

afterEach(stopAll);
setDefaultTimeout(testTimeout(30_000, 300_000)); // tests without their own limit

const KILL_ROUNDS = knob("BUNRING_REL_KILL_ROUNDS", 3, 20);
const KILL_CHILDREN = knob("BUNRING_REL_KILL_CHILDREN", 3, 4);
const KILL_CONNS = knob("BUNRING_REL_KILL_CONNS", 8, 16); // per child
const STOP_CONNS = knob("BUNRING_REL_STOP_CONNS", 100, 500);
const CLI_CONNS = knob("BUNRING_REL_CLI_CONNS", 50, 200);
const DRAIN_MS = 500;
/** How long past drainMs a stop may take: the loops notice within a few ms; generous for a 2-core box. */
const STOP_MARGIN_MS = 1_000;

/** A child bun process opening `conns` connections that stream random data; half never read. */
function streamingChild(port: number, conns: number, seed: number) {
  const script = `
    const net = require("node:net");
    const chunk = require("node:crypto").randomBytes(64 * 1024);
    let open = 0;
    for (let i = 0; i < ${conns}; i++) {
      const c = net.connect(${port}, "127.0.0.1", () => {
        if (++open === ${conns}) console.log("connected");
        const pump = () => { while (c.write(chunk)); };
        c.on("drain", pump);
        pump();
      });
      c.on("error", () => {});
      if (i % 2 === 0) c.on("data", () => {}); else c.pause(); // half read their echo, half never do
    }
    setInterval(() => {}, 1 << 30);`;
  const proc = Bun.spawn([BUN, "-e", script], { stdout: "pipe", stderr: "pipe", env: { ...process.env, SEED: String(seed) } });
  const connected = (async () => {
    const dec = new TextDecoder();
    let out = "";
    for await (const chunk of proc.stdout as ReadableStream<Uint8Array>) {
      out += dec.decode(chunk);
      if (out.includes("connected")) return;
    }
    throw new Error(`streaming child exited before connecting: ${await new Response(proc.stderr).text()}`);
  })();
  return { proc, connected };
}

describe.each([...BACKENDS])("reliability: faults [%s]", (backend) => {
  const it = backendAvailable(backend) ? test : test.skip;

  it(
    `${KILL_ROUNDS} rounds of ${KILL_CHILDREN} clients × ${KILL_CONNS} connections SIGKILLed mid-stream: all closed and counted, server healthy`,
    async () => {
      const fdsBefore = fdCount();
      const s = startServer(backend);
      const stats = () => s.stats();
      const random = rng(42);
      let accepted = 0;
      const kills: string[] = [];
      for (let round = 0; round < KILL_ROUNDS; round++) {
        const kids = Array.from({ length: KILL_CHILDREN }, (_, k) => streamingChild(s.port, KILL_CONNS, round * 100 + k));
        try {
          await withTimeout(Promise.all(kids.map((k) => k.connected)), 20_000, `round ${round}: children connected`);
          accepted += KILL_CHILDREN * KILL_CONNS;
          await statsReach(stats, (st) => st.connAccepted === accepted && st.connOpen === KILL_CHILDREN * KILL_CONNS, `round ${round}: all open`);
          // Kill at a random point of the stream: after 1..16 MiB more have come in.
          const in0 = stats().bytesIn;
          const more = Math.floor((1 + random() * 15) * MiB);
          await statsReach(stats, (st) => st.bytesIn >= in0 + more, `round ${round}: ${more} more bytes streamed in`, 30_000);
          const st0 = stats();
          kills.push(`${((st0.bytesIn - in0) / MiB).toFixed(0)} MiB in, ${st0.pausedNow} paused`);
        } finally {
          for (const k of kids) k.proc.kill("SIGKILL");
        }
        const codes = await Promise.all(kids.map((k) => k.proc.exited));
        expect(kids.map((k) => k.proc.signalCode)).toEqual(kids.map(() => "SIGKILL"));
        expect(codes.length).toBe(KILL_CHILDREN);
        await statsReach(
          stats,
          (st) => st.connOpen === 0 && st.buffersInUse === 0 && st.pausedNow === 0,
          `round ${round}: every killed client's connection closed, no buffer held`,
        );
        const st = stats();
        expect(st.connClosedEof + st.connClosedReset).toBe(accepted);
        // Still serving, byte-exact.
        const r = await pipelinedClient({ port: s.port, seed: round + 1, durationMs: 200 });
        expect(r.recvDigest).toBe(r.sentDigest);
        accepted += 1;
        await statsReach(stats, (x) => x.connOpen === 0 && x.connAccepted === accepted, `round ${round}: check connection closed`);
      }
      const st = stats();
      expect({
        closed: st.connClosedEof + st.connClosedReset,
        stop: st.connClosedStop,
        errors: st.errors,
        allocs: st.allocsAfterStart,
        buffers: st.buffersInUse,
      }).toEqual({ closed: accepted, stop: 0, errors: 0, allocs: 0, buffers: 0 });
      await stopServer(s);
      await waitFor(() => fdCount() <= fdsBefore, () => `fds back to ${fdsBefore} (now ${fdCount()})`);
      report(
        "SIGKILLed clients",
        backend,
        `${KILL_ROUNDS} rounds × ${KILL_CHILDREN * KILL_CONNS} connections killed mid-stream (${kills.join("; ")}): ` +
          `closedEof ${st.connClosedEof}, closedReset ${st.connClosedReset} of ${accepted} accepted; 0 open, 0 buffers held, still echoing`,
      );
    },
    testTimeout(90_000, 600_000),
  );

  it(
    `stop({ drainMs: ${DRAIN_MS} }) under load (${STOP_CONNS} connections streaming, 10 % never reading) resolves within drainMs + ${STOP_MARGIN_MS} ms and leaves nothing`,
    async () => {
      const fdsBefore = fdCount();
      const s = startServer(backend);
      const stats = () => s.stats();
      const clients = Array.from({ length: STOP_CONNS }, (_, i) => streamer(s.port, i, i % 10 !== 0));
      await withTimeout(Promise.all(clients.map((c) => c.connected)), 20_000, "clients connected");
      await statsReach(stats, (st) => st.connOpen === STOP_CONNS, "all accepted");
      const out0 = stats().bytesOut;
      await statsReach(stats, (st) => st.bytesOut > out0 + 32 * MiB && st.pausedNow >= 1, "echo flowing and the non-readers paused");

      const t0 = performance.now();
      await withTimeout(s.stop({ drainMs: DRAIN_MS }), DRAIN_MS + 10_000, `stop under load; stats ${fmtStats(stats())}`);
      const stopMs = performance.now() - t0;
      const st = s.stats();
      expect(s.stopped).toBe(true);
      expect({
        open: st.connOpen,
        accepted: st.connAccepted,
        // A non-reader may also be closed as stalled: with the pool exhausted (a busy machine) the
        // stall grace is short, and that close is counted too.
        closes: st.connClosedEof + st.connClosedReset + st.connClosedStop + st.connClosedIdle + st.connClosedStalled,
        buffersInUse: st.buffersInUse,
        pausedNow: st.pausedNow,
      }).toEqual({ open: 0, accepted: STOP_CONNS, closes: STOP_CONNS, buffersInUse: 0, pausedNow: 0 });
      expect(st.connClosedStop).toBeGreaterThan(0); // the non-readers' echo could not drain: stop closed them
      expect({ errors: st.errors, allocs: st.allocsAfterStart }).toEqual({ errors: 0, allocs: 0 });
      expect(stopMs).toBeLessThan(DRAIN_MS + STOP_MARGIN_MS);
      // Connections that could not finish (the non-readers) had the whole drain first.
      expect(stopMs).toBeGreaterThanOrEqual(DRAIN_MS);

      // Every client sees its connection end; what came back is a byte-exact prefix of what it sent.
      await withTimeout(Promise.all(clients.map((c) => c.done)), 10_000, "every client sees its connection close");
      const states = clients.map((c) => c.state());
      expect(states.filter((x) => x.mismatch).map((x) => x.mismatch)).toEqual([]);
      expect(await refused(s.port)).toBe(true);
      await waitFor(() => fdCount() <= fdsBefore, () => `fds back to ${fdsBefore} (now ${fdCount()})`);
      const ends = new Map<string, number>();
      for (const x of states) {
        const k = x.error ?? (x.eof ? "EOF" : "close");
        ends.set(k, (ends.get(k) ?? 0) + 1);
      }
      report(
        "stop under load",
        backend,
        `stop({ drainMs: ${DRAIN_MS} }) with ${STOP_CONNS} streaming connections resolved in ${stopMs.toFixed(0)} ms; ` +
          `closedStop ${st.connClosedStop}, closedEof ${st.connClosedEof}, closedReset ${st.connClosedReset}, bytesDiscarded ${st.bytesDiscarded}; ` +
          `clients saw ${[...ends].map(([k, n]) => `${k} ×${n}`).join(", ")}; port free, fds back`,
      );
    },
    testTimeout(60_000, 180_000),
  );

  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    it(
      `${signal} to the CLI under load (${CLI_CONNS} connections streaming): exit 0 within drain + margin, final 'bunring stopped:' line balances`,
      async () => {
        const run = runCli(["--backend", backend, "--port", "0", "--drain-ms", String(DRAIN_MS)]);
        try {
          const { port } = await bannerOf(run);
          const clients = Array.from({ length: CLI_CONNS }, (_, i) => streamer(port, 1000 + i, i % 10 !== 0));
          await withTimeout(Promise.all(clients.map((c) => c.connected)), 20_000, "clients connected");
          await waitFor(
            () => clients.filter((c, i) => i % 10 !== 0 && c.state().received > 256 * KiB).length === clients.length - Math.ceil(clients.length / 10),
            "every reading client got echo",
            { timeoutMs: 20_000 },
          );
          const t0 = performance.now();
          run.proc.kill(signal);
          const r = await exitOf(run, DRAIN_MS + 15_000);
          const exitMs = performance.now() - t0;
          await withTimeout(Promise.all(clients.map((c) => c.done)), 10_000, "every client sees its connection close");
          expect(r.code).toBe(0);
          expect(r.stderr).toBe("");
          const last = r.stdout.trimEnd().split("\n").at(-1)!;
          expect(last).toStartWith("bunring stopped:");
          expect(last).toMatch(new RegExp(`^bunring stopped: ${signal}; accepted=${CLI_CONNS} open=0 `));
          const f = stoppedStats(last);
          expect(f.closedEof! + f.closedReset! + f.closedStop! + f.closedIdle!).toBe(CLI_CONNS);
          expect({ errors: f.errors, allocs: f.allocsAfterStart }).toEqual({ errors: 0, allocs: 0 });
          expect(clients.map((c) => c.state().mismatch).filter(Boolean)).toEqual([]);
          expect(exitMs).toBeLessThan(DRAIN_MS + 3_000);
          expect(await refused(port)).toBe(true);
          report("CLI signal", backend, `${signal} with ${CLI_CONNS} streaming connections: exit 0 after ${exitMs.toFixed(0)} ms (--drain-ms ${DRAIN_MS}); ${last}`);
        } finally {
          killIfRunning(run);
        }
      },
      testTimeout(60_000, 120_000),
    );
  }
});

// Not per available backend: this simulates io_uring being unavailable, so it runs on every machine.
describe("reliability: io_uring unavailable (BUNRING_DISABLE_URING=1)", () => {
  const env = { BUNRING_DISABLE_URING: "1" };
  /** Runs `fn` with BUNRING_DISABLE_URING=1 in this process's environment too (for serve() and probe()). */
  async function withUringDisabled(fn: () => Promise<void>): Promise<void> {
    const saved = process.env.BUNRING_DISABLE_URING;
    process.env.BUNRING_DISABLE_URING = "1";
    try {
      await fn();
    } finally {
      if (saved === undefined) delete process.env.BUNRING_DISABLE_URING;
      else process.env.BUNRING_DISABLE_URING = saved;
    }
  }

  test('backend "uring": an Error suggesting epoll, nothing started; "auto" falls back to epoll and says why (API and CLI)', () =>
    withUringDisabled(async () => {
      const p = probe();
      expect(p.uring).toBe(false);
      expect(p.reason).toBeString();

      // Asked for uring explicitly: a plain Error (not a usage error) that suggests epoll; nothing started.
      const port = await freePort();
      const fds0 = listFds();
      let err: unknown;
      try {
        serve({ backend: "uring", port, host: "127.0.0.1" });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(Error);
      expect(err).not.toBeInstanceOf(TypeError);
      expect(err).not.toBeInstanceOf(RangeError);
      expect((err as Error).message).toMatch(/io_uring/);
      expect((err as Error).message).toMatch(/epoll/);
      expect(await refused(port)).toBe(true);
      await expectFdsBackTo(fds0); // nothing left open

      // "auto": falls back to epoll, says why, and serves.
      const s = serve({ backend: "auto", port: 0, host: "127.0.0.1" });
      try {
        expect(s.backend).toBe("epoll");
        expect(s.fallbackReason).toMatch(/BUNRING_DISABLE_URING|disabled|unavailable/);
        expect(s.features).toEqual([]);
        expect(await echoOnce(s.port, "fell back")).toBe("fell back");
      } finally {
        await s.stop({ drainMs: 0 });
      }

      // CLI --backend auto: a banner saying it fell back; serves; stops on SIGINT.
      const run = runCli(["--backend", "auto", "--port", "0"], { env });
      try {
        const b = await bannerOf(run);
        expect(b.backend).toBe("epoll");
        expect(b.details).toMatch(/fell back to epoll/);
        expect(await echoOnce(b.port, "cli fell back")).toBe("cli fell back");
        run.proc.kill("SIGINT");
        const r = await exitOf(run);
        expect(r.code).toBe(0);
        report("io_uring unavailable", "uring", `CLI --backend auto banner: ${b.line}`);
      } finally {
        killIfRunning(run);
      }

      // CLI --backend uring: not a usage error (exit 1, not 2), one line suggesting epoll, no banner.
      const r = await exitOf(runCli(["--backend", "uring", "--port", "0"], { env }));
      expect(r.code).toBe(1);
      expect(r.stdout).toBe("");
      const lines = r.stderr.trimEnd().split("\n");
      expect(lines.length).toBe(1);
      expect(lines[0]).toMatch(/epoll/);
      report("io_uring unavailable", "uring", `serve({backend:"uring"}) throws: ${(err as Error).message}; CLI --backend uring exits 1: ${lines[0]}`);
    }));

  test('backend "epoll" is unaffected (API and CLI)', () =>
    withUringDisabled(async () => {
      const s = serve({ backend: "epoll", port: 0, host: "127.0.0.1" });
      try {
        expect(s.backend).toBe("epoll");
        expect(s.fallbackReason).toBeUndefined();
        expect(await echoOnce(s.port, "unaffected")).toBe("unaffected");
      } finally {
        await s.stop({ drainMs: 0 });
      }
      const run = runCli(["--backend", "epoll", "--port", "0"], { env });
      try {
        const b = await bannerOf(run);
        expect(b.backend).toBe("epoll");
        expect(b.details).not.toMatch(/fell back/);
        expect(await echoOnce(b.port, "cli unaffected")).toBe("cli unaffected");
        run.proc.kill("SIGINT");
        expect((await exitOf(run)).code).toBe(0);
      } finally {
        killIfRunning(run);
      }
    }));
});
