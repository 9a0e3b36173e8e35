// listen-timeout.test.ts — socket.timeout(seconds) and the timeout(socket) handler of listen()
// (issue #10), on both backends with real loopback sockets, and the same handler on Bun.listen for
// what the two agree on. Bun.listen's semantics (its socket.zig and uSockets' sweep): the handler runs
// once, `seconds` after the call; reading and writing do not postpone it, calling timeout() again
// does; 0 clears it; the socket is left open. listen() checks deadlines with one sweep per server
// every TIMEOUT_SWEEP_MS while some socket has one: never before the deadline, at most a sweep after.
// Every wait is on a condition or a handler call, with a deadline; the only pacing is the client's
// traffic while a deadline runs.
import { beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import net from "node:net";
import { listen, type Listener, type ListenOptions, type Socket, type SocketHandler } from "../src/index.ts";
import { TIMEOUT_SWEEP_MS, timeoutSweepState } from "../src/listen.ts";
import { testTimeout } from "./helpers/scale.ts";
import { BACKENDS, backendAvailable, type Backend, stopListenersAfterEach } from "./helpers/server.ts";
import { endOf, type ConnEnd } from "./helpers/sockets.ts";
import { waitFor, withTimeout } from "./helpers/wait.ts";

setDefaultTimeout(testTimeout(60_000, 600_000));

/** Slack for a loaded machine on top of the sweep's own granularity, in ms. */
const SLACK_MS = 1_500;

const live = stopListenersAfterEach();

let backendUnderTest: Backend = "epoll";

function start<D>(opts: Omit<ListenOptions<D>, "port"> & { port?: number }): Listener {
  const l = listen<D>({ port: 0, hostname: "127.0.0.1", backend: backendUnderTest, ...opts } as ListenOptions<D>);
  live.add(l);
  return l;
}

/** A client that keeps every byte as text and knows how its connection ended. */
interface Client {
  sock: net.Socket;
  text(): string;
  /** Resolves once the text received so far contains `s` (bounded). */
  saw(s: string, what: string, ms?: number): Promise<void>;
  closed: Promise<ConnEnd>;
}

async function client(port: number): Promise<Client> {
  const sock = net.connect({ port, host: "127.0.0.1" });
  let text = "";
  sock.on("data", (b: Buffer) => {
    text += b.toString();
  });
  const closed = endOf(sock);
  await withTimeout(new Promise<void>((r) => sock.once("connect", () => r())), 10_000, "connect");
  return {
    sock,
    text: () => text,
    saw: async (s, what, ms = 10_000) => {
      await waitFor(() => text.includes(s), () => `${what} (received ${JSON.stringify(text.slice(-200))})`, { timeoutMs: ms });
    },
    closed,
  };
}

/** What the test server remembers about each connection (socket.data). */
interface Conn {
  name: string;
  /** performance.now() of each timeout() call with seconds > 0 made by a command, and its seconds. */
  armed: { at: number; seconds: number }[];
  /** performance.now() of each timeout handler call, and the readyState then. */
  fired: { at: number; readyState: number }[];
  /** performance.now() of each data event. */
  dataAt: number[];
  /** "idle N": every data event calls timeout(N) again. */
  idle: number;
}

interface Harness {
  listener: Listener;
  /** Socket by the name its client gave ("name X"). */
  sockets: Map<string, Socket<Conn>>;
  /** Resolves when the named socket's timeout handler has run `n` times (bounded). */
  fired(name: string, n?: number, ms?: number): Promise<Conn>;
  /** A connection that said its name and got "hi NAME". */
  open(name: string): Promise<Client>;
}

/**
 * A listen() server speaking lines: "name X" (reply "hi X"), "arm N" (timeout(N), reply "armed N"),
 * "idle N" (timeout(N) now and on every later data event, reply "armed N"); anything else is echoed.
 * The timeout handler records the call, writes "timeout" and runs `onTimeout`.
 */
function harness(extra: Partial<SocketHandler<Conn>> & { onTimeout?(s: Socket<Conn>): unknown } = {}): Harness {
  const sockets = new Map<string, Socket<Conn>>();
  const { onTimeout, ...handlers } = extra;
  const listener = start<Conn>({
    socket: {
      open(s) {
        s.data = { name: "?", armed: [], fired: [], dataAt: [], idle: 0 };
      },
      data(s, chunk) {
        const c = s.data;
        c.dataAt.push(performance.now());
        if (c.idle > 0) s.timeout(c.idle);
        for (const line of chunk.toString().split("\n")) {
          if (line === "") continue;
          const [cmd, arg] = line.split(" ");
          if (cmd === "name") {
            c.name = arg!;
            sockets.set(arg!, s);
            s.write(`hi ${arg}\n`);
          } else if (cmd === "arm" || cmd === "idle") {
            const seconds = Number(arg);
            if (cmd === "idle") c.idle = seconds;
            s.timeout(seconds);
            if (seconds > 0) c.armed.push({ at: performance.now(), seconds });
            s.write(`armed ${arg}\n`);
          } else {
            s.write(`${line}\n`);
          }
        }
      },
      timeout(s) {
        s.data.fired.push({ at: performance.now(), readyState: s.readyState });
        s.write("timeout\n");
        return onTimeout?.(s) as void;
      },
      ...handlers,
    },
  });
  return {
    listener,
    sockets,
    fired: (name, n = 1, ms = 10_000) =>
      waitFor(
        () => {
          const c = sockets.get(name)?.data;
          return c && c.fired.length >= n ? c : undefined;
        },
        () => `${name}'s timeout handler called ${n} time(s) (${JSON.stringify(sockets.get(name)?.data.fired)})`,
        { timeoutMs: ms },
      ),
    async open(name) {
      const c = await client(listener.port);
      c.sock.write(`name ${name}\n`);
      await c.saw(`hi ${name}\n`, `${name} named`);
      return c;
    },
  };
}

/** Sends a command and waits for its reply. */
async function arm(c: Client, cmd: string): Promise<void> {
  c.sock.write(`${cmd}\n`);
  await c.saw(`armed ${cmd.split(" ")[1]}\n`, `reply to ${cmd}`);
}

/** The timeout handler ran at least `seconds` after the call, and at most a sweep (plus slack) later. */
function expectOnTime(conn: Conn, fired = 0, armed = conn.armed.length - 1): void {
  const { at, seconds } = conn.armed[armed]!;
  const late = conn.fired[fired]!.at - at;
  expect(late).toBeGreaterThanOrEqual(seconds * 1000);
  expect(late).toBeLessThan(seconds * 1000 + TIMEOUT_SWEEP_MS + SLACK_MS);
}

for (const backend of BACKENDS) {
describe.skipIf(!backendAvailable(backend))(`socket.timeout() [${backend}]`, () => {
beforeAll(() => {
  backendUnderTest = backend;
});

test("the handler runs once, not before the set time and within a sweep of it; the socket stays open", async () => {
  let b: Socket<Conn> | undefined;
  const h = harness({
    onTimeout(s) {
      // A's deadline passed: give B one of 1 s. Once B's handler ran, A's would have run again too
      // if it repeated.
      if (s.data.name === "A") {
        b = h.sockets.get("B");
        b!.timeout(1);
        b!.data.armed.push({ at: performance.now(), seconds: 1 });
      }
    },
  });
  const A = await h.open("A");
  const B = await h.open("B");
  await arm(A, "arm 1");
  const a = await h.fired("A");
  expectOnTime(a);
  expect(a.fired[0]!.readyState).toBe(1);
  await A.saw("timeout\n", "A told of its timeout");
  await h.fired("B");
  expectOnTime(b!.data);
  expect(a.fired.length).toBe(1);
  expect(b!.data.fired.length).toBe(1);
  // Nothing closed them: both still echo.
  A.sock.write("still here\n");
  B.sock.write("me too\n");
  await A.saw("still here\n", "A's echo after its timeout");
  await B.saw("me too\n", "B's echo after its timeout");
  expect(A.sock.destroyed || B.sock.destroyed).toBe(false);
  // No deadline left: the sweep's list empties and its timer goes away.
  await waitFor(() => !timeoutSweepState(h.listener).running, () => `the sweep stopped: ${JSON.stringify(timeoutSweepState(h.listener))}`);
  expect(timeoutSweepState(h.listener).watched).toBe(0);
  A.sock.destroy();
  B.sock.destroy();
});

test("timeout(0) clears it; a socket that closes before its deadline is not called; timeout() on a closed socket does nothing", async () => {
  const closed = new Set<string>();
  const h = harness({
    close(s) {
      closed.add(s.data.name);
    },
  });
  const C = await h.open("C");
  const D = await h.open("D");
  const E = await h.open("E");
  await arm(C, "arm 1");
  await arm(C, "arm 0");
  await arm(D, "arm 1");
  D.sock.destroy();
  await waitFor(() => closed.has("D"), "D's close handler");
  const d = h.sockets.get("D")!;
  expect(d.readyState).toBe(-1);
  d.timeout(1); // closed: ignored, not an error
  // E's deadline comes a second after C's and D's first ones: the sweep that runs E's handler saw
  // theirs pass at least a sweep earlier.
  await arm(E, "arm 2");
  await h.fired("E");
  expectOnTime(h.sockets.get("E")!.data);
  expect(h.sockets.get("C")!.data.fired).toEqual([]);
  expect(d.data.fired).toEqual([]);
  expect(C.text()).not.toContain("timeout");
  C.sock.destroy();
  E.sock.destroy();
});

test("reading and writing do not postpone it (as on Bun.listen); calling timeout() again does (an idle timeout)", async () => {
  const h = harness();
  const F = await h.open("F");
  const G = await h.open("G");
  // Both send a line every 100 ms, echoed. F armed once: its handler runs while the traffic goes on.
  // G re-arms on every data event: its handler runs only a second after its last line. G is armed
  // first: the sweep that runs F's handler would have run G's too, had its deadline not moved.
  await arm(G, "idle 1");
  await arm(F, "arm 1");
  const pingF = setInterval(() => F.sock.write("f\n"), 100);
  const pingG = setInterval(() => G.sock.write("g\n"), 100);
  let f: Conn;
  try {
    f = await h.fired("F");
  } finally {
    clearInterval(pingF);
  }
  expectOnTime(f);
  const fArmed = f.armed[0]!.at;
  const during = f.dataAt.filter((t) => t > fArmed && t < f.fired[0]!.at).length;
  expect(during).toBeGreaterThanOrEqual(5); // it was busy all along
  // G kept sending through F's timeout and has not timed out; now it stops.
  const g = h.sockets.get("G")!.data;
  expect(g.fired).toEqual([]);
  clearInterval(pingG);
  await h.fired("G");
  const lastData = g.dataAt.at(-1)!;
  expect(g.fired[0]!.at - lastData).toBeGreaterThanOrEqual(1000);
  expect(g.fired[0]!.at - lastData).toBeLessThan(1000 + TIMEOUT_SWEEP_MS + SLACK_MS);
  F.sock.destroy();
  G.sock.destroy();
});

test("the handler can end() the socket: the peer gets the last bytes and EOF, close(s) without an error", async () => {
  let closeError: Error | undefined | null = null;
  const h = harness({
    onTimeout(s) {
      s.end("bye\n");
    },
    close(_s, err) {
      closeError = err;
    },
  });
  const c = await h.open("H");
  await arm(c, "arm 1");
  const end = await withTimeout(c.closed, 10_000, "the server's FIN after the timeout");
  expect(end.how).toBe("EOF");
  expect(c.text()).toBe("hi H\narmed 1\ntimeout\nbye\n");
  expectOnTime(h.sockets.get("H")!.data);
  await waitFor(() => closeError !== null, "close handler");
  expect(closeError).toBeUndefined();
});

test("a throwing or rejecting timeout handler reaches error(s, err), and only that connection closes", async () => {
  const errors: [string, string][] = [];
  const closes: string[] = [];
  const h = harness({
    onTimeout(s) {
      if (s.data.name === "throws") throw new Error("sync timeout failure");
      if (s.data.name === "rejects") return Promise.reject(new Error("async timeout failure"));
    },
    error(s, err) {
      errors.push([s.data.name, err.message]);
    },
    close(s) {
      closes.push(s.data.name);
    },
  });
  const t = await h.open("throws");
  const r = await h.open("rejects");
  const k = await h.open("keeps");
  await arm(t, "arm 1");
  await arm(r, "arm 1");
  await arm(k, "arm 1");
  await withTimeout(Promise.all([t.closed, r.closed]), 10_000, "the failing connections to close");
  await waitFor(() => errors.length === 2 && closes.length === 2, () => `errors ${JSON.stringify(errors)}, closes ${JSON.stringify(closes)}`);
  expect(errors.sort()).toEqual([
    ["rejects", "async timeout failure"],
    ["throws", "sync timeout failure"],
  ]);
  expect(closes.sort()).toEqual(["rejects", "throws"]);
  await h.fired("keeps");
  k.sock.write("alive\n");
  await k.saw("alive\n", "the connection whose handler did not fail still echoes");
  k.sock.destroy();
});

test("the argument is converted as Bun converts it: none throws, negative throws, fractions truncate", async () => {
  const results: Record<string, unknown> = {};
  let s0: Socket | undefined;
  const l = start<undefined>({
    socket: {
      open(s) {
        s0 = s;
        const state = () => timeoutSweepState(l).watched;
        const threw = (f: () => void) => {
          try {
            f();
            return "ok";
          } catch (e) {
            return (e as Error).constructor.name;
          }
        };
        results.none = threw(() => (s.timeout as () => void)());
        results.negative = threw(() => s.timeout(-1));
        results.half = threw(() => s.timeout(0.5)); // 0: none
        results.watchedAfterHalf = state();
        results.string = threw(() => s.timeout("3" as unknown as number));
        results.watchedAfterString = state();
        results.undefined = threw(() => s.timeout(undefined as unknown as number)); // NaN → 0: clears
      },
      timeout() {},
    },
  });
  const c = await client(l.port);
  await waitFor(() => s0 !== undefined, "open");
  expect(results).toEqual({
    none: "TypeError",
    negative: "RangeError",
    half: "ok",
    watchedAfterHalf: 0,
    string: "ok",
    watchedAfterString: 1,
    undefined: "ok",
  });
  expect((s0 as unknown as { deadline: number }).deadline).toBe(-1); // cleared, dropped at the next sweep
  await waitFor(() => !timeoutSweepState(l).running, "the sweep to stop with nothing to watch");
  c.sock.destroy();
});

test("timers: none without deadlines, one per server however often sockets re-arm, unref'd, gone after stop()", async () => {
  // A server with a timeout handler whose sockets never call timeout(): no timer, under traffic.
  const h = harness();
  const quiet = await Promise.all(["q1", "q2", "q3"].map((n) => h.open(n)));
  for (let i = 0; i < 100; i++) {
    for (const c of quiet) c.sock.write(`m${i}\n`);
    await Promise.all(quiet.map((c) => c.saw(`m${i}\n`, `echo ${i}`)));
  }
  expect(timeoutSweepState(h.listener)).toEqual({ running: false, refed: false, starts: 0, watched: 0 });
  // Sockets that call timeout(30) on every data event: one timer, created once, not keeping the
  // process alive.
  const busy = await Promise.all(["b1", "b2", "b3"].map((n) => h.open(n)));
  for (const c of busy) await arm(c, "idle 30");
  for (let i = 0; i < 100; i++) {
    for (const c of busy) c.sock.write(`n${i}\n`);
    await Promise.all(busy.map((c) => c.saw(`n${i}\n`, `echo ${i}`)));
  }
  expect(timeoutSweepState(h.listener)).toEqual({ running: true, refed: false, starts: 1, watched: 3 });
  // A server without a timeout handler ignores timeout(): no timer.
  const plain = start<undefined>({ socket: { open(s) {
    s.timeout(1);
  } } });
  const p = await client(plain.port);
  await waitFor(() => plain.stats().connOpen === 1, "the plain server's connection");
  p.sock.write("x");
  expect(timeoutSweepState(plain)).toEqual({ running: false, refed: false, starts: 0, watched: 0 });
  live.delete(h.listener);
  await h.listener.stop(true);
  expect(timeoutSweepState(h.listener).running).toBe(false);
  p.sock.destroy();
});
});
}

// The same handler on Bun.listen and on listen(): timeout(1) at open, a line every 100 ms echoed.
// What both do: the handler runs although data flows, once; the socket is not closed by it and
// still echoes. (Bun.listen sweeps every 4 s: its handler may run up to 4 s after the call, or
// sooner than 1 s.)
function parityHandler(log: string[]): SocketHandler<undefined> {
  return {
    open(s) {
      s.timeout(1);
    },
    data(s, d) {
      s.write(d);
    },
    timeout(s) {
      log.push("timeout");
      s.write("T\n");
    },
    close() {
      log.push("close");
    },
  };
}

async function parityScript(port: number, log: string[]): Promise<void> {
  const c = await client(port);
  const ping = setInterval(() => c.sock.write("x\n"), 100);
  try {
    await c.saw("T\n", "the timeout handler's T", 4_000 + 4_000);
  } finally {
    clearInterval(ping);
  }
  expect(c.text()).toContain("x\n");
  c.sock.write("after\n");
  await c.saw("after\n", "echo after the timeout");
  expect(c.sock.destroyed).toBe(false);
  expect(log).toEqual(["timeout"]);
  c.sock.end();
  await withTimeout(c.closed, 10_000, "close");
  await waitFor(() => log.length === 2, () => `close handler: ${JSON.stringify(log)}`);
  expect(log).toEqual(["timeout", "close"]);
}

describe("socket.timeout() parity with Bun.listen", () => {
  test("Bun.listen: the handler runs although data flows, once, and leaves the socket open", async () => {
    const log: string[] = [];
    const bun = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: parityHandler(log) as Parameters<typeof Bun.listen>[0]["socket"] });
    try {
      await parityScript(bun.port, log);
    } finally {
      bun.stop(true);
    }
  });
  for (const backend of BACKENDS) {
    test.skipIf(!backendAvailable(backend))(`listen() [${backend}]: the same`, async () => {
      backendUnderTest = backend;
      const log: string[] = [];
      const l = start<undefined>({ socket: parityHandler(log) });
      await parityScript(l.port, log);
      // Once: its deadline is gone.
      await waitFor(() => timeoutSweepState(l).watched === 0, "the sweep to drop the socket");
    });
  }
});
