// churn.test.ts — reliability scenario 3: connection churn leaves nothing behind. Many
// connect / echo / close cycles (a worker pool keeps a fixed number in flight), alternately closed
// with FIN (end) and with RST (resetAndDestroy). Afterwards: nothing open, every accept matched by
// exactly one close of the right kind (EOF for FIN, reset for RST), no buffer held, no allocation
// after start, the process's fds back to their count before the cycles (and before the server once
// stopped), and RSS flat within a generous bound (the whole test process, JS heap included, after GC).
// CI: 10,000 cycles; BUNRING_SOAK=1: 100,000.
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { fdCount, rssMiB } from "../helpers/proc.ts";
import { rng } from "../helpers/prng.ts";
import { report } from "../helpers/report.ts";
import { knob, testTimeout } from "../helpers/scale.ts";
import { BACKENDS, backendAvailable, fmtStats, startServer, statsReach, stopAll, stopServer } from "../helpers/server.ts";
import { connect } from "../helpers/sockets.ts";
import { waitFor, withTimeout } from "../helpers/wait.ts";

afterEach(stopAll);
setDefaultTimeout(testTimeout(30_000, 300_000)); // tests without their own limit

const CYCLES = knob("BUNRING_REL_CHURN_CYCLES", 10_000, 100_000);
const CONCURRENCY = knob("BUNRING_REL_CHURN_CONCURRENCY", 32, 64);
/** RSS growth allowed between the end of the warm-up and the end (whole test process, after GC). */
const RSS_BOUND_MIB = knob("BUNRING_REL_CHURN_RSS_MIB", 48, 64);

/** One cycle: connect, echo a random message (checked), close with FIN or RST. */
async function cycle(port: number, i: number, rst: boolean): Promise<void> {
  const random = rng(i);
  const size = 1 + Math.floor(random() * 4096);
  const msg = Buffer.alloc(size, i & 0xff);
  if (size >= 4) msg.writeUInt32LE(i >>> 0, size - 4); // the cycle number, so cross-talk would show
  const { sock, closed } = await connect(port);
  const parts: Buffer[] = [];
  let got = 0;
  await withTimeout(
    new Promise<void>((resolve, reject) => {
      sock.on("data", (b: Buffer) => {
        parts.push(b);
        got += b.length;
        if (got >= size) resolve();
      });
      sock.once("error", reject);
      sock.once("end", () => reject(new Error(`cycle ${i}: EOF after ${got}/${size} bytes`)));
      sock.write(msg);
    }),
    10_000,
    `cycle ${i}: echo of ${size} bytes (got ${got})`,
  );
  const echo = Buffer.concat(parts);
  if (!echo.equals(msg)) throw new Error(`cycle ${i}: echo differs (${echo.length} bytes back for ${size})`);
  if (rst) sock.resetAndDestroy();
  else sock.end(); // the server answers our FIN with its own once everything is echoed
  const end = await withTimeout(closed, 10_000, `cycle ${i}: close (${rst ? "RST" : "FIN"})`);
  if (!rst && (end.error || !end.eof)) throw new Error(`cycle ${i}: FIN close ended with ${end.how}, not the server's EOF`);
}

/** Runs cycles [from, to) with `concurrency` workers. */
async function runCycles(port: number, from: number, to: number, concurrency: number): Promise<void> {
  let next = from;
  const worker = async () => {
    while (next < to) {
      const i = next++;
      await cycle(port, i, i % 2 === 1);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

describe.each([...BACKENDS])("reliability: churn [%s]", (backend) => {
  const it = backendAvailable(backend) ? test : test.skip;

  it(
    `${CYCLES} connect/echo/close cycles, half FIN and half RST: nothing open, closes == accepts, no buffer, fds and RSS back`,
    async () => {
      const fdsBeforeServer = fdCount();
      const s = startServer(backend);
      const stats = () => s.stats();
      const fdsBefore = fdCount();
      const warm = Math.min(CYCLES, Math.max(1_000, Math.floor(CYCLES / 10)));
      const t0 = performance.now();
      await runCycles(s.port, 0, warm, CONCURRENCY);
      await statsReach(stats, (st) => st.connOpen === 0, "warm-up connections closed");
      const rss0 = rssMiB();
      const samples: number[] = [rss0];
      const step = Math.max(1, Math.ceil((CYCLES - warm) / 5));
      for (let from = warm; from < CYCLES; from += step) {
        await runCycles(s.port, from, Math.min(CYCLES, from + step), CONCURRENCY);
        samples.push(rssMiB());
      }
      const secs = (performance.now() - t0) / 1000;
      await statsReach(stats, (st) => st.connOpen === 0 && st.connAccepted === CYCLES, "every connection accepted and closed");
      const st = stats();
      const rstCount = Math.floor(CYCLES / 2);
      const finCount = CYCLES - rstCount;
      expect({
        connAccepted: st.connAccepted,
        connOpen: st.connOpen,
        closedTotal: st.connClosedEof + st.connClosedReset,
        connClosedStop: st.connClosedStop,
        connClosedIdle: st.connClosedIdle,
        connRejected: st.connRejected,
        buffersInUse: st.buffersInUse,
        pausedNow: st.pausedNow,
        allocsAfterStart: st.allocsAfterStart,
        errors: st.errors,
        balanced: st.bytesIn === st.bytesOut,
      }).toEqual({
        connAccepted: CYCLES,
        connOpen: 0,
        closedTotal: CYCLES,
        connClosedStop: 0,
        connClosedIdle: 0,
        connRejected: 0,
        buffersInUse: 0,
        pausedNow: 0,
        allocsAfterStart: 0,
        errors: 0,
        balanced: true,
      });
      // Each close is counted as what it was: FIN → EOF, RST → reset.
      expect({ eof: st.connClosedEof, reset: st.connClosedReset }).toEqual({ eof: finCount, reset: rstCount });

      await waitFor(() => fdCount() <= fdsBefore, () => `fds back to ${fdsBefore} (now ${fdCount()}); stats ${fmtStats(stats())}`, {
        timeoutMs: 10_000,
      });
      const growth = samples.at(-1)! - rss0;
      report(
        "churn",
        backend,
        `${CYCLES} cycles (${finCount} FIN, ${rstCount} RST, ${CONCURRENCY} at a time) in ${secs.toFixed(1)} s = ` +
          `${(CYCLES / secs).toFixed(0)} cycles/s; eof ${st.connClosedEof} reset ${st.connClosedReset}; fds back to ${fdsBefore}; ` +
          `RSS after GC ${samples.map((m) => m.toFixed(0)).join(" → ")} MiB (growth ${growth.toFixed(1)} MiB, bound ${RSS_BOUND_MIB})`,
      );
      expect(growth).toBeLessThan(RSS_BOUND_MIB);

      await stopServer(s);
      await waitFor(() => fdCount() <= fdsBeforeServer, () => `fds back to ${fdsBeforeServer} after stop (now ${fdCount()})`, {
        timeoutMs: 10_000,
      });
    },
    testTimeout(90_000, 900_000),
  );
});
