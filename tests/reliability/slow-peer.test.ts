// slow-peer.test.ts — reliability scenario 2: a peer that sends a lot and never reads, next to many
// healthy request/response connections.
//   * The healthy connections' round-trip rate is measured over equal windows: baseline before the
//     bad peer, with it (paused by the server), and baseline again after it has read everything.
//     Totals over whole windows, and the baseline is the mean of the two around the hog window, so
//     drift (CPU frequency, GC) cancels. The test asserts no starvation (every healthy connection
//     keeps completing round trips while the hog is stuck) and prints the ratio; the ratio (>= 80 %)
//     is judged only with BUNRING_SOAK=1, on a machine given to the run: in CI another process may
//     share the 2 cores, and a busy machine must not fail the suite.
//   * Server memory stays bounded while the hog is stuck: sampled throughout, buffersInUse ×
//     bufferSize never exceeds what the per-connection limit allows (about 2 × maxPendingBytes for
//     the hog plus a receive batch, and a couple of buffers per healthy connection), far below the pool.
//   * stats.pausedNow >= 1 the whole time the hog does not read.
//   * When the hog finally reads, it gets back every byte it sent (sha256).
// CI: 16 MiB hog, 50 healthy connections, 2 s windows; BUNRING_SOAK=1: 64 MiB, 200, 6 s.
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { availableParallelism } from "node:os";
import { RoundTripper } from "../helpers/clients.ts";
import { report } from "../helpers/report.ts";
import { KiB, knob, MiB, SOAK, testTimeout } from "../helpers/scale.ts";
import { BACKENDS, backendAvailable, fmtStats, startServer, statsReach, stopAll, type Backend, type Server } from "../helpers/server.ts";
import { connect } from "../helpers/sockets.ts";
import { withTimeout } from "../helpers/wait.ts";

afterEach(stopAll);
setDefaultTimeout(testTimeout(30_000, 300_000)); // tests without their own limit

const HOG_BYTES = knob("BUNRING_REL_HOG_BYTES", 16 * MiB, 64 * MiB);
const GOOD = knob("BUNRING_REL_GOOD_CONNS", 50, 200);
const WINDOW_MS = knob("BUNRING_REL_WINDOW_MS", 2_000, 6_000);
const MIN_RATIO = 0.8;

/**
 * On a 2-core box the scheduler sometimes puts the test's JS thread and the server's loop on the
 * same core, which halves the echo rate for seconds at a time, independently of anything the test
 * does (measured: 50k vs 120k round trips/s, flipping at random). Rate comparisons pin them apart:
 * the loop to the last CPU (serve's cpus option) and this process's main thread to CPU 0
 * (taskset on the main thread only), restoring the thread's mask afterwards. The server starts
 * first: serve() checks its cpus against the calling thread's affinity, which the pin narrows to CPU 0.
 */
const CAN_PIN = availableParallelism() >= 2 && Bun.which("taskset") !== null;

function pinMainThread(): (() => void) | undefined {
  if (!CAN_PIN) return undefined;
  const pid = String(process.pid);
  const before = spawnSync("taskset", ["-p", pid], { encoding: "utf8" });
  const mask = /affinity mask:\s*([0-9a-f]+)/.exec(before.stdout ?? "")?.[1];
  if (!mask || spawnSync("taskset", ["-p", "-c", "0", pid]).status !== 0) return undefined;
  return () => void spawnSync("taskset", ["-p", mask, pid]);
}

/** Counts round trips over a window of `ms`, calling `sample` every few ms meanwhile. */
async function measureWindow(rts: RoundTripper[], ms: number, sample?: () => void): Promise<{ trips: number; perConn: number[]; ms: number }> {
  const before = rts.map((r) => r.trips);
  const t0 = performance.now();
  // Not synchronisation: the window's length is the measurement. Sampling keeps it honest.
  while (performance.now() - t0 < ms) {
    sample?.();
    await new Promise((r) => setTimeout(r, 20));
  }
  const elapsed = performance.now() - t0;
  const perConn = rts.map((r, i) => r.trips - before[i]!);
  return { trips: perConn.reduce((a, b) => a + b, 0), perConn, ms: elapsed };
}

describe.each([...BACKENDS])("reliability: a peer that never reads [%s]", (backend) => {
  const it = backendAvailable(backend) ? test : test.skip;

  it(
    `one peer sends ${HOG_BYTES / MiB} MiB and never reads while ${GOOD} others echo: they keep ≥ ${MIN_RATIO * 100} % of their rate, memory stays bounded, then it gets every byte`,
    async () => {
      await slowPeerScenario(backend, CAN_PIN ? [availableParallelism() - 1] : []);
    },
    testTimeout(60_000, 300_000),
  );
});

interface Trial {
  ratio: number;
  line: string;
}

async function slowPeerScenario(backend: Backend, cpus: number[]): Promise<void> {
  const bufferSize = 2048;
  const maxPendingBytes = 64 * KiB;
  const s = startServer(backend, { bufferSize, maxPendingBytes, cpus });
  const unpin = cpus.length > 0 ? pinMainThread() : undefined;
  try {
    await scenarioOn(s, bufferSize, maxPendingBytes);
  } finally {
    unpin?.();
  }
}

async function scenarioOn(s: Server, bufferSize: number, maxPendingBytes: number): Promise<void> {
  const backend = s.backend;
  const stats = () => s.stats();
  const rts = await Promise.all(Array.from({ length: GOOD }, (_, i) => RoundTripper.open(s.port, i, 1024)));
  await statsReach(stats, (st) => st.connOpen === GOOD, `${GOOD} healthy connections open`);
  await measureWindow(rts, Math.min(500, WINDOW_MS)); // warm-up, not counted

  // A rate comparison on a shared 2-core box can be unlucky once; a hog that really slows the others
  // down fails every trial. So: up to two trials (each with its own hog), the best must reach MIN_RATIO.
  const trials: Trial[] = [];
  for (let t = 0; t < 2 && !trials.some((x) => x.ratio >= MIN_RATIO); t++) {
    trials.push(await trial(s, rts, t, bufferSize, maxPendingBytes));
  }
  for (const [i, t] of trials.entries()) report("slow peer", backend, `trial ${i + 1}: ${t.line}`);
  if (SOAK) expect(Math.max(...trials.map((t) => t.ratio))).toBeGreaterThanOrEqual(MIN_RATIO);

  for (const r of rts) expect(r.failure()).toBeUndefined();
  await Promise.all(rts.map((r) => r.stop()));
  await statsReach(stats, (st) => st.connOpen === 0 && st.buffersInUse === 0, "all closed");
  const st = stats();
  expect({ in: st.bytesIn, out: st.bytesOut, pausedNow: st.pausedNow, errors: st.errors, allocs: st.allocsAfterStart }).toEqual({
    in: st.bytesOut,
    out: st.bytesIn,
    pausedNow: 0,
    errors: 0,
    allocs: 0,
  });
}

/** Baseline window, hog stuck + window, hog reads everything back, baseline window. */
async function trial(
  s: Server,
  rts: RoundTripper[],
  seed: number,
  bufferSize: number,
  maxPendingBytes: number,
): Promise<Trial> {
  const stats = () => s.stats();
  const phases: string[] = [];
  let tPhase = performance.now();
  const phase = (name: string) => {
    phases.push(`${name} ${((performance.now() - tPhase) / 1000).toFixed(1)} s`);
    tPhase = performance.now();
  };
  const base1 = await measureWindow(rts, WINDOW_MS);
  phase("baseline");

  // The hog: writes its payload as fast as the kernel takes it and never reads (a paused socket:
  // Bun stops reading from the kernel, so the server's sends to it fill the kernel buffers and the
  // server pauses it at maxPendingBytes).
  const payload = randomBytes(HOG_BYTES);
  payload.writeUInt32LE(seed, 0);
  const { sock: hog } = await connect(s.port);
  hog.pause();
  const hogErrors: Error[] = [];
  hog.on("error", (e) => hogErrors.push(e));
  let written = 0;
  const pump = () => {
    while (written < HOG_BYTES && !hog.destroyed) {
      const n = Math.min(64 * KiB, HOG_BYTES - written);
      const ok = hog.write(payload.subarray(written, written + n));
      written += n;
      if (!ok) return void hog.once("drain", pump);
    }
  };
  pump();
  // The kernel takes megabytes on loopback before the hog is really stuck (its receive buffer and
  // the server's send buffer fill up): until then the server pauses and resumes it a few times.
  // Stuck = paused, and no new pause for 200 ms (the healthy 1 KiB round trips never pause).
  let lastPauses = -1;
  let stableSince = 0;
  await statsReach(
    stats,
    (st) => {
      const now = performance.now();
      if (st.pausedNow < 1 || st.pauses !== lastPauses) {
        lastPauses = st.pauses;
        stableSince = now;
        return false;
      }
      return now - stableSince >= 200;
    },
    "the hog is paused by the server and stays paused (pauses counter still for 200 ms)",
  );
  phase("hog stuck");

  let peakBuffers = 0;
  let minPaused = Infinity;
  let maxOpen = 0;
  const sample = () => {
    const st = stats();
    peakBuffers = Math.max(peakBuffers, st.buffersInUse);
    minPaused = Math.min(minPaused, st.pausedNow);
    maxOpen = Math.max(maxOpen, st.connOpen);
  };
  const withHog = await measureWindow(rts, WINDOW_MS, sample);
  sample();
  const stuckAt = stats();
  const hogGotBeforeReading = hog.bytesRead;
  phase("with hog");

  // Now the hog reads: every byte it sent comes back, in order.
  const hash = createHash("sha256");
  let got = 0;
  const all = new Promise<void>((resolve) =>
    hog.on("data", (b: Buffer) => {
      hash.update(b);
      got += b.length;
      if (got >= HOG_BYTES) resolve();
    }),
  );
  hog.resume();
  await withTimeout(all, testTimeout(60_000), `hog receives ${HOG_BYTES} bytes (got ${got}); stats ${fmtStats(stats())}`);
  expect(got).toBe(HOG_BYTES);
  expect(hash.digest("hex")).toBe(createHash("sha256").update(payload).digest("hex"));
  expect(hogErrors).toEqual([]);
  await statsReach(stats, (st) => st.pausedNow === 0, "nothing paused once the hog reads");
  hog.end();
  await statsReach(stats, (st) => st.connOpen === GOOD, "the hog's connection closed after its FIN");
  phase("hog reads back");

  const base2 = await measureWindow(rts, WINDOW_MS);
  phase("baseline again");

  // Memory: the hog holds what its limit allows (about 2 × maxPendingBytes in buffers of small
  // receives, plus a batch of receives completed as the pause took effect); healthy connections
  // hold at most a couple of buffers each (one 1 KiB message in flight); nothing near the pool.
  const pool = stuckAt.buffersTotal;
  const bound = Math.ceil((2 * maxPendingBytes) / bufferSize) + 64 + 2 * GOOD;
  expect(minPaused).toBeGreaterThanOrEqual(1);
  expect(peakBuffers).toBeLessThanOrEqual(bound);
  expect(peakBuffers * bufferSize).toBeLessThanOrEqual(maxPendingBytes * maxOpen); // ≤ maxPendingBytes per connection on average
  expect(peakBuffers).toBeLessThan(pool / 4);

  // No starvation: every healthy connection made progress while the hog was stuck.
  const slowest = Math.min(...withHog.perConn);
  expect(slowest).toBeGreaterThan(0);

  const rate = (w: { trips: number; ms: number }) => (w.trips / w.ms) * 1000;
  const ratio = rate(withHog) / ((rate(base1) + rate(base2)) / 2);
  const line =
    `${GOOD} healthy conns: ${rate(base1).toFixed(0)} / ${rate(withHog).toFixed(0)} / ${rate(base2).toFixed(0)} round trips/s ` +
    `(before / with the stuck hog / after, ${WINDOW_MS / 1000} s windows) → ${(ratio * 100).toFixed(0)} % of baseline; ` +
    `slowest healthy conn ${slowest} trips in the hog window; hog paused the whole window (had received ${hogGotBeforeReading} B of its echo); ` +
    `peak ${peakBuffers} buffers in use (${((peakBuffers * bufferSize) / KiB).toFixed(0)} KiB) of ${pool} (${((pool * bufferSize) / MiB).toFixed(0)} MiB pool); ` +
    `phases: ${phases.join(", ")}`;
  return { ratio, line };
}
