// listen-direct.test.ts — handler mode's low-load shortcut (design.md, "The low-load shortcut"): with
// one connection doing request/response, the loop sleeps when JS answers, so write() sends the reply
// itself (jsDirectSends) instead of waking the loop. Both backends: every reply byte-exact and in
// order across round trips of random sizes (some larger than the socket takes at once, so part goes
// through the loop behind what was sent directly), replies made of several writes, strings, and the
// totals stats() reports (bytesOut counts what the JS thread sent too).
import { beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { echoHandler, type EchoState } from "../examples/js-echo.ts";
import { listen, type Listener, type ListenOptions } from "../src/index.ts";
import { rng } from "./helpers/prng.ts";
import { testTimeout } from "./helpers/scale.ts";
import { BACKENDS, backendAvailable, type Backend, stopListenersAfterEach } from "./helpers/server.ts";
import { connect } from "./helpers/sockets.ts";
import { waitFor, withTimeout } from "./helpers/wait.ts";

setDefaultTimeout(testTimeout(60_000, 600_000));

const live = stopListenersAfterEach();

/** One connection; sends each request whole and waits for exactly `replyOf(request)` before the next. */
async function roundTrips(port: number, requests: Buffer[], replyOf: (req: Buffer) => Buffer): Promise<void> {
  const c = await connect(port);
  let parts: Buffer[] = [];
  let got = 0;
  let want = 0;
  let wake: (() => void) | null = null;
  c.sock.on("data", (b: Buffer) => {
    parts.push(b);
    got += b.length;
    if (got >= want && wake) wake();
  });
  try {
    for (let i = 0; i < requests.length; i++) {
      const expected = replyOf(requests[i]!);
      want = expected.length;
      const whole = new Promise<void>((resolve) => (wake = resolve));
      c.sock.write(requests[i]!);
      if (got < want) await withTimeout(whole, 10_000, () => `reply ${i} (${want} bytes): got ${got}`);
      const reply = Buffer.concat(parts);
      expect(reply.length).toBe(expected.length); // nothing extra, nothing missing
      expect(reply.equals(expected)).toBe(true);
      parts = [];
      got = 0;
    }
  } finally {
    c.sock.destroy();
  }
}

function requestsOf(seed: number, count: number, maxBytes: number): Buffer[] {
  const random = rng(seed);
  return Array.from({ length: count }, (_, i) => {
    const n = 1 + Math.floor(random() * maxBytes);
    const b = Buffer.alloc(n);
    for (let k = 0; k < n; k++) b[k] = (i * 131 + k * 7 + seed) & 0xff;
    return b;
  });
}

for (const backend of BACKENDS) {
  describe.skipIf(!backendAvailable(backend))(`listen() [${backend}] low-load shortcut`, () => {
    let b: Backend;
    beforeAll(() => {
      b = backend;
    });
    function start<D>(opts: Omit<ListenOptions<D>, "port" | "backend">): Listener {
      const l = listen<D>({ port: 0, hostname: "127.0.0.1", backend: b, ...opts } as ListenOptions<D>);
      live.add(l);
      return l;
    }

    test("echo at one connection: replies go out from the JS thread, byte-exact, in order; stats count them", async () => {
      const l = start<EchoState>({ allowHalfOpen: true, socket: echoHandler });
      // Mostly small replies, some larger than a loopback socket takes at once.
      const requests = [...requestsOf(11, 300, 2048), ...requestsOf(12, 20, 4 << 20)];
      await roundTrips(l.port, requests, (r) => r);
      const total = requests.reduce((n, r) => n + r.length, 0);
      await waitFor(() => l.stats().bytesOut === total || undefined, () => `bytesOut ${l.stats().bytesOut} of ${total}`);
      const s = l.stats();
      expect(s.bytesIn).toBe(total);
      expect(s.jsDirectSends).toBeGreaterThan(0);
      expect(s.jsDirectBytes).toBeGreaterThan(0);
      expect(s.jsDirectBytes).toBeLessThanOrEqual(total);
      console.log(
        `[direct] ${backend}: ${requests.length} round trips, ${s.jsDirectSends} sends from the JS thread ` +
          `(${s.jsDirectBytes} of ${total} bytes), ${s.jsWakeups} loop wakeups, ${s.jsDirectShort} short, ${s.jsDirectEagain} full`,
      );
    });

    test("a reply in several writes (bytes and strings) arrives whole and in order", async () => {
      // Requests are ASCII; the reply maps every "e" to "é" (two UTF-8 bytes). Each chunk received
      // is answered in two writes, the first half as bytes and the rest as a string, so the reply
      // bytes do not depend on how the request was cut into chunks.
      const mapped = (ascii: Uint8Array) => String.fromCharCode(...ascii).replaceAll("e", "é");
      const l = start<undefined>({
        socket: {
          data(s, bytes) {
            const half = bytes.length >> 1;
            s.write(Buffer.from(mapped(bytes.subarray(0, half))));
            s.write(mapped(bytes.subarray(half)));
          },
        },
      });
      const random = rng(21);
      const requests = Array.from({ length: 150 }, () =>
        Buffer.from(Array.from({ length: 1 + Math.floor(random() * 3000) }, () => 0x61 + Math.floor(random() * 26))),
      );
      await roundTrips(l.port, requests, (r) => Buffer.from(mapped(r)));
      expect(l.stats().jsDirectSends).toBeGreaterThan(0);
    });

    test("a write after an await, to a connection the peer has closed, returns -1 or a count and never reaches another connection", async () => {
      const sockets: { write(d: string): number }[] = [];
      const l = start<undefined>({
        socket: {
          open(s) {
            sockets.push(s);
          },
          data(s, bytes) {
            s.write(bytes);
          },
        },
      });
      const first = await connect(l.port);
      await waitFor(() => sockets.length === 1 || undefined, "first OPEN");
      first.sock.destroy();
      await withTimeout(first.closed, 5000, "first close");
      // A new connection may take the first one's slot (and its fd number).
      const second = await connect(l.port);
      await waitFor(() => sockets.length === 2 || undefined, "second OPEN");
      const gotOnSecond: Buffer[] = [];
      second.sock.on("data", (d: Buffer) => gotOnSecond.push(d));
      await waitFor(() => l.stats().connClosedEof + l.stats().connClosedReset >= 1 || undefined, "first connection closed on the server");
      const n = sockets[0]!.write("stale");
      expect(n === -1 || n === 0 || n === 5).toBe(true);
      // The second connection still works and got nothing of the stale write.
      const probe = Buffer.from("ping");
      second.sock.write(probe);
      await waitFor(() => Buffer.concat(gotOnSecond).length >= probe.length || undefined, "echo on the second connection");
      expect(Buffer.concat(gotOnSecond).equals(probe)).toBe(true);
      second.sock.destroy();
    });
  });
}
