// stats.test.ts — the counters agree with what the test did: every documented field is present and a
// number; once quiet, bytesIn == bytesOut == bytes sent, connAccepted == connections made, closes are
// attributed to the right cause, gauges return to zero, and nothing is allocated after start. Checked
// for fixed scenarios and by property over random sets of connections and message sizes.
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import fc from "fast-check";
import { echoStream } from "./helpers/clients.ts";
import { BACKENDS, backendAvailable, expectQuiet, fmtStats, startServer, stopAll } from "./helpers/server.ts";
import { connect } from "./helpers/sockets.ts";
import { waitFor } from "./helpers/wait.ts";

setDefaultTimeout(120_000);
afterEach(stopAll);

const FIELDS = [
  "connAccepted",
  "connOpen",
  "connClosedEof",
  "connClosedReset",
  "connClosedStop",
  "connClosedIdle",
  "connRejected",
  "acceptErrors",
  "bytesIn",
  "bytesOut",
  "bytesDiscarded",
  "recvCompletions",
  "sendCompletions",
  "shortSends",
  "sendEagain",
  "enobufs",
  "pauses",
  "pausedNow",
  "recvRearms",
  "acceptRearms",
  "staleCompletions",
  "loopIterations",
  "waitCalls",
  "allocsAfterStart",
  "buffersTotal",
  "buffersInUse",
  "errors",
] as const;

describe.each([...BACKENDS])("%s stats", (backend) => {
  const it = backendAvailable(backend) ? test : test.skip;

  it("a fresh server reports every field as a number, all zero but the gauges of its buffers", () => {
    const s = startServer(backend, { threads: 2, bufferCount: 128 });
    const st = s.stats();
    // every documented field; fields added later (a superset) are fine but must be counters too
    const keys = Object.keys(st);
    expect(FIELDS.filter((f) => !keys.includes(f))).toEqual([]);
    const all = st as unknown as Record<string, unknown>;
    for (const k of keys) {
      expect({ [k]: typeof all[k] }).toEqual({ [k]: "number" });
      expect({ [k]: Number.isInteger(all[k]) && (all[k] as number) >= 0 }).toEqual({ [k]: true });
      if (!(FIELDS as readonly string[]).includes(k)) expect({ [k]: all[k] }).toEqual({ [k]: 0 });
    }
    expect(st.buffersTotal).toBe(256);
    for (const f of FIELDS) {
      if (f === "buffersTotal" || f === "loopIterations" || f === "waitCalls") continue;
      expect({ [f]: st[f] }).toEqual({ [f]: 0 });
    }
  });

  it("counters match a known mix of connections exactly", async () => {
    const s = startServer(backend, { threads: 2 });
    const sizes = [0, 1, 100, 2047, 2048, 2049, 65_535, 65_536, 65_537, 1_000_003];
    await Promise.all(sizes.map((n, i) => echoStream({ port: s.port, bytes: n, seed: i, halfClose: i % 2 === 0 })));
    const total = sizes.reduce((a, b) => a + b, 0);
    const st = await expectQuiet(s, { bytes: total, conns: sizes.length });
    expect(st.connClosedEof).toBe(sizes.length);
    expect(st.connClosedReset + st.connClosedStop + st.connClosedIdle + st.connRejected).toBe(0);
    expect(st.acceptErrors).toBe(0);
    // every non-empty connection needed at least one receive and one send
    const nonEmpty = sizes.filter((n) => n > 0).length;
    expect(st.recvCompletions).toBeGreaterThanOrEqual(nonEmpty);
    expect(st.sendCompletions).toBeGreaterThanOrEqual(nonEmpty);
    expect(st.loopIterations).toBeGreaterThan(0);
    expect(st.waitCalls).toBeGreaterThan(0);
    await s.stop({ drainMs: 0 });
    // final stats: same numbers, nothing closed by stop (nothing was open)
    const fin = s.stats();
    expect(fin.bytesIn).toBe(total);
    expect(fin.bytesOut).toBe(total);
    expect(fin.connClosedStop).toBe(0);
    expect(fin.allocsAfterStart).toBe(0);
  });

  it("connOpen follows open connections up and down", async () => {
    const s = startServer(backend);
    const conns = await Promise.all(Array.from({ length: 25 }, () => connect(s.port)));
    await waitFor(() => s.stats().connOpen === 25, () => `connOpen 25: ${fmtStats(s.stats())}`);
    expect(s.stats().connAccepted).toBe(25);
    for (const c of conns.slice(0, 10)) c.sock.end();
    await waitFor(() => s.stats().connOpen === 15, () => `connOpen 15: ${fmtStats(s.stats())}`);
    expect(s.stats().connClosedEof).toBe(10);
    for (const c of conns.slice(10)) c.sock.end();
    await expectQuiet(s, { bytes: 0, conns: 25 });
  });

  it("property: for any set of connections and sizes, counters equal what was sent", async () => {
    const s = startServer(backend, { bufferSize: 512, bufferCount: 256 });
    let bytes = 0;
    let conns = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 300_000 }), { minLength: 1, maxLength: 12 }),
        fc.boolean(),
        async (sizes, halfClose) => {
          await Promise.all(
            sizes.map((n, i) =>
              echoStream({ port: s.port, bytes: n, seed: conns + i, halfClose, chunkSize: 1 + (n % 40_000), timeoutMs: 15_000 }),
            ),
          );
          bytes += sizes.reduce((a, b) => a + b, 0);
          conns += sizes.length;
          await waitFor(
            () => {
              const st = s.stats();
              return st.connOpen === 0 && st.connAccepted === conns && st.bytesOut === bytes;
            },
            () => `quiet at ${conns} conns / ${bytes} bytes: ${fmtStats(s.stats())}`,
          );
          const st = s.stats();
          return st.bytesIn === bytes && st.bytesOut === bytes && st.connClosedEof === conns && st.allocsAfterStart === 0;
        },
      ),
      { numRuns: 25 },
    );
    await expectQuiet(s, { bytes, conns });
  });
});
