// integrity.test.ts — reliability scenario 1: integrity under load. Many connections each keep
// several random-size messages (1 B..256 KiB, log-uniform) in flight; every echoed byte is compared
// with what was sent at its exact offset and by a running sha256 per connection; once quiet, the
// server's counters balance exactly: bytesIn == bytesOut == bytes sent, every connection accepted
// and closed by EOF, no buffer held, no allocation after start, no error.
// CI: 200 connections × 5 s (+ a scarce-pool, 2-loop variant); BUNRING_SOAK=1: 500 × 20 s.
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { pipelinedRun } from "../helpers/clients.ts";
import { report } from "../helpers/report.ts";
import { knob, MiB, testTimeout } from "../helpers/scale.ts";
import { BACKENDS, backendAvailable, fmtStats, startServer, statsReach, stopAll, type ServeOptions } from "../helpers/server.ts";

afterEach(stopAll);
setDefaultTimeout(testTimeout(30_000, 300_000)); // tests without their own limit

const CONNS = knob("BUNRING_REL_INTEGRITY_CONNS", 200, 500);
const DURATION_MS = knob("BUNRING_REL_INTEGRITY_MS", 5_000, 20_000);
const SCARCE_CONNS = knob("BUNRING_REL_INTEGRITY_SCARCE_CONNS", 100, 300);
const SCARCE_MS = knob("BUNRING_REL_INTEGRITY_SCARCE_MS", 2_000, 10_000);

interface Variant {
  name: string;
  conns: number;
  ms: number;
  opts: ServeOptions;
}

const VARIANTS: Variant[] = [
  { name: "default configuration", conns: CONNS, ms: DURATION_MS, opts: {} },
  // 64 buffers of 2 KiB per loop for hundreds of connections: receives run out of buffers all the
  // time (ENOBUFS / starved connections), across two loops sharing the port.
  { name: "scarce pool (64 × 2 KiB buffers per loop), 2 loops", conns: SCARCE_CONNS, ms: SCARCE_MS, opts: { bufferCount: 64, threads: 2 } },
];

describe.each([...BACKENDS])("reliability: integrity under load [%s]", (backend) => {
  const it = backendAvailable(backend) ? test : test.skip;

  for (const v of VARIANTS) {
    it(
      `${v.name}: ${v.conns} connections × ${v.ms / 1000} s of pipelined 1 B..256 KiB messages, every byte back in order, stats balance`,
      async () => {
        const s = startServer(backend, v.opts);
        const { total, messages, wallS: wall } = await pipelinedRun(s.port, v.conns, v.ms, () => fmtStats(s.stats()));
        await statsReach(
          () => s.stats(),
          (st) => st.connOpen === 0 && st.connAccepted === v.conns && st.buffersInUse === 0,
          "every connection closed, no buffer held",
        );
        const st = s.stats();
        expect({
          bytesIn: st.bytesIn,
          bytesOut: st.bytesOut,
          bytesDiscarded: st.bytesDiscarded,
          connAccepted: st.connAccepted,
          connClosedEof: st.connClosedEof,
          connClosedReset: st.connClosedReset,
          connRejected: st.connRejected,
          pausedNow: st.pausedNow,
          buffersInUse: st.buffersInUse,
          allocsAfterStart: st.allocsAfterStart,
          errors: st.errors,
        }).toEqual({
          bytesIn: total,
          bytesOut: total,
          bytesDiscarded: 0,
          connAccepted: v.conns,
          connClosedEof: v.conns,
          connClosedReset: 0,
          connRejected: 0,
          pausedNow: 0,
          buffersInUse: 0,
          allocsAfterStart: 0,
          errors: 0,
        });
        report(
          "integrity",
          backend,
          `${v.name}: ${v.conns} conns, ${messages} messages, ${(total / MiB).toFixed(0)} MiB each way verified ` +
            `(byte-exact + sha256) in ${wall.toFixed(1)} s = ${((2 * total) / MiB / wall).toFixed(0)} MiB/s through the server; ` +
            `pauses ${st.pauses}, enobufs ${st.enobufs}, shortSends ${st.shortSends}`,
        );
      },
      testTimeout(v.ms + 60_000, v.ms + 300_000),
    );
  }
});
