// options.test.ts — serve() option checking: a table of bad options (each must throw TypeError for a
// value of the wrong kind or RangeError for a value out of range, with a message naming the option,
// the value and what is allowed, and must start nothing), property tests over every numeric option
// (any non-integer or out-of-range number is rejected; in-range values start a server), and defaults.
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import fc from "fast-check";
import { DEFAULTS, serve } from "../src/index.ts";
import { echoSmall } from "./helpers/echo.ts";
import { countThreads, expectFdsBackTo, listFds } from "./helpers/fds.ts";
import { startServer, stopAll, URING_OK, type ServeOptions } from "./helpers/server.ts";

setDefaultTimeout(60_000);
afterEach(stopAll);

type ErrorClass = typeof TypeError | typeof RangeError;

interface BadCase {
  /** Option whose name the message must contain. */
  option: string;
  /** What is passed to serve(). */
  opts: unknown;
  cls: ErrorClass;
  /** Extra text the message must contain (the value as shown, or the allowed range). */
  mentions?: (string | RegExp)[];
}

const cpus = navigator.hardwareConcurrency;

/** Bad values per option, with the class they must throw. */
const BAD: BadCase[] = [
  // port: integer 0..65535
  ...[-1, 65536, 70000, 1.5, NaN, Infinity, -Infinity].map((v) => ({
    option: "port",
    opts: { port: v },
    cls: RangeError,
    mentions: [String(v), "65535"],
  })),
  ...["80", null, true, 80n, {}, [80]].map((v) => ({ option: "port", opts: { port: v }, cls: TypeError })),
  // threads: 1..64
  ...[0, -1, 65, 1000, 2.5, NaN].map((v) => ({ option: "threads", opts: { threads: v }, cls: RangeError, mentions: [String(v), "64"] })),
  { option: "threads", opts: { threads: "2" }, cls: TypeError },
  // bufferSize: 512..1048576
  ...[0, 511, 1048577, 2 ** 32, 2048.5, -2048].map((v) => ({
    option: "bufferSize",
    opts: { bufferSize: v },
    cls: RangeError,
    mentions: [String(v), "512", "1048576"],
  })),
  { option: "bufferSize", opts: { bufferSize: "2048" }, cls: TypeError },
  // bufferCount: power of two 16..32768
  ...[0, 8, 15, 100, 1000, 4095, 32769, 65536, 16.5, -16].map((v) => ({
    option: "bufferCount",
    opts: { bufferCount: v },
    cls: RangeError,
    mentions: [String(v), /power of (two|2)/i],
  })),
  { option: "bufferCount", opts: { bufferCount: [4096] }, cls: TypeError },
  // maxConnections: positive integer
  ...[0, -1, 1.5, NaN, 2 ** 32].map((v) => ({
    option: "maxConnections",
    opts: { maxConnections: v },
    cls: RangeError,
    mentions: [String(v)],
  })),
  { option: "maxConnections", opts: { maxConnections: "10" }, cls: TypeError },
  // maxPendingBytes: positive integer (fits in 32 bits)
  ...[0, -1, 1.5, NaN, 2 ** 32].map((v) => ({
    option: "maxPendingBytes",
    opts: { maxPendingBytes: v },
    cls: RangeError,
    mentions: [String(v)],
  })),
  { option: "maxPendingBytes", opts: { maxPendingBytes: "64k" }, cls: TypeError },
  // backlog: positive integer
  ...[0, -5, 1.5, NaN, 2 ** 32].map((v) => ({ option: "backlog", opts: { backlog: v }, cls: RangeError, mentions: [String(v)] })),
  { option: "backlog", opts: { backlog: "128" }, cls: TypeError },
  // drainMs, idleTimeoutMs: non-negative integers (fit in 32 bits)
  ...[-1, 0.5, NaN, Infinity, 2 ** 32].map((v) => ({ option: "drainMs", opts: { drainMs: v }, cls: RangeError, mentions: [String(v)] })),
  { option: "drainMs", opts: { drainMs: "5s" }, cls: TypeError },
  ...[-1, 0.5, NaN, Infinity, 2 ** 32].map((v) => ({
    option: "idleTimeoutMs",
    opts: { idleTimeoutMs: v },
    cls: RangeError,
    mentions: [String(v)],
  })),
  { option: "idleTimeoutMs", opts: { idleTimeoutMs: false }, cls: TypeError },
  // backend
  { option: "backend", opts: { backend: "io_uring" }, cls: RangeError, mentions: ["io_uring", "uring", "epoll", "auto"] },
  { option: "backend", opts: { backend: "" }, cls: RangeError, mentions: ["epoll"] },
  { option: "backend", opts: { backend: "URING" }, cls: RangeError },
  { option: "backend", opts: { backend: 0 }, cls: TypeError },
  // host
  { option: "host", opts: { host: 127001 }, cls: TypeError },
  { option: "host", opts: { host: "not a host" }, cls: RangeError, mentions: ["not a host"] },
  { option: "host", opts: { host: "256.1.1.1" }, cls: RangeError, mentions: ["256.1.1.1"] },
  { option: "host", opts: { host: "" }, cls: RangeError },
  { option: "host", opts: { host: "example.com" }, cls: RangeError, mentions: ["example.com"] },
  // cpus
  { option: "cpus", opts: { cpus: 0 }, cls: TypeError },
  { option: "cpus", opts: { cpus: "0,1" }, cls: TypeError },
  { option: "cpus", opts: { cpus: [-1] }, cls: RangeError, mentions: ["-1"] },
  { option: "cpus", opts: { cpus: [0.5] }, cls: RangeError, mentions: ["0.5"] },
  { option: "cpus", opts: { cpus: [cpus + 100] }, cls: RangeError, mentions: [String(cpus + 100)] },
  { option: "cpus", opts: { cpus: ["0"] }, cls: TypeError },
  // sqpoll
  { option: "sqpoll", opts: { sqpoll: "yes" }, cls: TypeError },
  { option: "sqpoll", opts: { sqpoll: 1 }, cls: TypeError },
  // combinations
  { option: "maxConnections", opts: { threads: 4, maxConnections: 2 }, cls: RangeError, mentions: ["threads"] },
  { option: "sqpoll", opts: { backend: "epoll", sqpoll: true }, cls: RangeError, mentions: ["epoll"] },
];

function caught(fn: () => unknown): unknown {
  try {
    const r = fn() as { stop?: (o: { drainMs: number }) => Promise<void> } | undefined;
    // It started (a bug): stop it so the rest of the suite is unaffected.
    void r?.stop?.({ drainMs: 0 });
    return undefined;
  } catch (e) {
    return e;
  }
}

const label = (c: BadCase) => {
  const show = (v: unknown): string =>
    typeof v === "bigint" ? `${v}n` : typeof v === "number" ? String(v) : JSON.stringify(v) ?? String(v);
  return `${c.option}: ${Object.entries(c.opts as object).map(([k, v]) => `${k}=${show(v)}`).join(" ")}`;
};

describe("bad options", () => {
  test.each(BAD.map((c) => [label(c), c] as const))("%s", (_name, c) => {
    const e = caught(() => serve({ port: 0, ...(c.opts as ServeOptions) }));
    expect(e).toBeInstanceOf(c.cls);
    const msg = (e as Error).message;
    expect(msg).toContain(c.option);
    for (const m of c.mentions ?? []) {
      if (typeof m === "string") expect(msg).toContain(m);
      else expect(msg).toMatch(m);
    }
  });

  test("options that are not an object are a TypeError", () => {
    for (const v of [5, "uring", true, null, [1, 2]]) {
      const e = caught(() => serve(v as unknown as ServeOptions));
      expect(e).toBeInstanceOf(TypeError);
    }
  });

  test("an unknown option (a typo) is a TypeError naming it", () => {
    const e = caught(() => serve({ prot: 0 } as unknown as ServeOptions));
    expect(e).toBeInstanceOf(TypeError);
    expect((e as Error).message).toContain("prot");
  });

  test("rejected options start nothing: no fd, no thread left behind", async () => {
    // warm up once (library load)
    const w = serve({ port: 0, backend: "epoll" });
    await w.stop({ drainMs: 0 });
    const fds = listFds();
    const threads = countThreads();
    for (const c of BAD) caught(() => serve({ port: 0, ...(c.opts as ServeOptions) }));
    await expectFdsBackTo(fds);
    expect(countThreads()).toBeLessThanOrEqual(threads);
  });
});

/** Numeric options, their documented bounds (null: only "a positive/non-negative integer" is promised). */
const NUMERIC: { option: keyof ServeOptions; min: number; max: number | null; pow2?: boolean }[] = [
  { option: "port", min: 0, max: 65535 },
  { option: "threads", min: 1, max: 64 },
  { option: "bufferSize", min: 512, max: 1_048_576 },
  { option: "bufferCount", min: 16, max: 32_768, pow2: true },
  { option: "maxConnections", min: 1, max: null },
  { option: "maxPendingBytes", min: 1, max: null },
  { option: "backlog", min: 1, max: null },
  { option: "drainMs", min: 0, max: null },
  { option: "idleTimeoutMs", min: 0, max: null },
];

const nonInteger = fc.oneof(
  fc.double({ noNaN: false }).filter((x) => !Number.isInteger(x)),
  fc.constantFrom(NaN, Infinity, -Infinity, 0.5, -0.5, 1e-300, 2 ** 53 + 0.5),
);

describe("option properties (fast-check)", () => {
  for (const n of NUMERIC) {
    test(`${n.option}: every non-integer number is a RangeError naming ${n.option}`, () => {
      fc.assert(
        fc.property(nonInteger, (v) => {
          const e = caught(() => serve({ port: 0, [n.option]: v }));
          return e instanceof RangeError && e.message.includes(n.option);
        }),
        { numRuns: 200 },
      );
    });

    test(`${n.option}: every integer below ${n.min}${n.max === null ? "" : ` or above ${n.max}`} is a RangeError`, () => {
      const out =
        n.max === null
          ? fc.integer({ min: -(2 ** 31), max: n.min - 1 })
          : fc.oneof(fc.integer({ min: -(2 ** 31), max: n.min - 1 }), fc.integer({ min: n.max + 1, max: 2 ** 40 }));
      fc.assert(
        fc.property(out, (v) => {
          const e = caught(() => serve({ port: 0, [n.option]: v }));
          return e instanceof RangeError && e.message.includes(n.option) && e.message.includes(String(v));
        }),
        { numRuns: 200 },
      );
    });

    test(`${n.option}: numbers as strings, booleans, bigints are a TypeError`, () => {
      fc.assert(
        fc.property(
          fc.oneof(fc.integer().map(String), fc.boolean(), fc.bigInt(), fc.constant(null), fc.array(fc.integer(), { maxLength: 2 })),
          (v) => {
            if (n.option === "port" && v === null) return true;
            const e = caught(() => serve({ port: 0, [n.option]: v }));
            return e instanceof TypeError && e.message.includes(n.option);
          },
        ),
        { numRuns: 100 },
      );
    });
  }

  test("bufferCount: every non-power-of-two in 16..32768 is a RangeError", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 16, max: 32768 }).filter((v) => (v & (v - 1)) !== 0),
        (v) => {
          const e = caught(() => serve({ port: 0, bufferCount: v }));
          return e instanceof RangeError && e.message.includes("bufferCount");
        },
      ),
      { numRuns: 300 },
    );
  });

  test("valid values start a working server (threads, bufferSize, bufferCount, maxPendingBytes, backlog)", async () => {
    const backend = URING_OK ? "uring" : "epoll";
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          threads: fc.integer({ min: 1, max: 4 }),
          bufferSize: fc.integer({ min: 512, max: 65_536 }),
          bufferCount: fc.integer({ min: 4, max: 10 }).map((e) => 2 ** e),
          maxPendingBytes: fc.integer({ min: 65_536, max: 4 * 1024 * 1024 }),
          backlog: fc.integer({ min: 1, max: 4096 }),
          backend: fc.constantFrom(backend, "epoll" as const),
        }),
        async (o) => {
          const s = startServer(o.backend, o);
          try {
            const msg = `bs=${o.bufferSize} bc=${o.bufferCount}`;
            const got = await echoSmall(s.port, msg);
            return got.toString() === msg && s.threads === o.threads && s.stats().buffersTotal === o.bufferCount * o.threads;
          } finally {
            await s.stop({ drainMs: 0 });
          }
        },
      ),
      { numRuns: 15 },
    );
  });

  test("the extremes of each range are accepted", async () => {
    const extremes: ServeOptions[] = [
      { threads: 1 },
      { threads: 64, maxConnections: 64, bufferCount: 16 },
      { bufferSize: 512 },
      { bufferSize: 1_048_576, bufferCount: 16 },
      { bufferCount: 16 },
      { bufferCount: 32_768, bufferSize: 512 },
      { maxConnections: 1 },
      { drainMs: 0 },
      { idleTimeoutMs: 0 },
      { backlog: 1 },
    ];
    for (const o of extremes) {
      const s = startServer("epoll", o);
      expect((await echoSmall(s.port, "edge")).toString()).toBe("edge");
      await s.stop({ drainMs: 0 });
    }
  });
});

test("defaults are as documented", async () => {
  expect(DEFAULTS).toMatchObject({
    backend: "uring",
    host: "127.0.0.1",
    port: 6379,
    threads: 1,
    bufferSize: 2048,
    bufferCount: 4096,
    maxConnections: 65536,
    maxPendingBytes: 65536,
    drainMs: 5000,
    idleTimeoutMs: 0,
  });
  const s = startServer(URING_OK ? "uring" : "epoll", { backend: undefined, host: undefined });
  expect(s.host).toBe("127.0.0.1");
  expect(s.threads).toBe(1);
  expect(s.stats().buffersTotal).toBe(4096);
});
