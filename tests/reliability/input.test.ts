// input.test.ts — reliability scenario 6: bad input everywhere a person can type.
//   * CLI: every flag with malformed, out-of-range, empty, missing and oddly written values, unknown
//     flags and positional arguments → exit 2, exactly one line on stderr naming the flag (or the
//     stray argument), nothing on stdout, nothing listening. Valid edge forms (port 0, ::1, [::1],
//     localhost) start, echo on that address and stop on SIGINT.
//   * API: serve() with wrong kinds of values (strings, null, booleans, bigints, arrays, objects,
//     functions, symbols) → TypeError naming the option; numbers out of range (NaN, ±Infinity, 1e9,
//     fractions, negatives) → RangeError naming it; nothing listening, no fd left behind.
//     Decided: -0 counts as 0 (Number.isInteger(-0) and -0 >= 0), so port -0 is an ephemeral port.
//   * fast-check: arbitrary values for each option are accepted (and then exactly the value, within
//     the documented range) or rejected with a TypeError/RangeError naming that option — never
//     anything else; whole random option sets are rejected naming an option that is actually bad;
//     serve() on random small configs either starts a working server with those settings or throws
//     naming a bad option and leaves nothing behind; the CLI on random flag values exits 2 naming
//     the flag or starts; user_data encode/decode round-trips for all in-range fields and is a
//     bijection on 64-bit values.
//   * Privileged port as a non-root user (setpriv to nobody): --port 80 fails with a clear
//     permission message (exit 1: not a usage error), while --port 0 as nobody works.
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import fc from "fast-check";
import { availableParallelism } from "node:os";
import { userData } from "../../ffi/index.ts";
import { serve, type ServeOptions } from "../../src/index.ts";
import { resolveOptions } from "../../src/options.ts";
import { bannerOf, BUN, CLI, exitOf, runCli } from "../helpers/cli.ts";
import { stopAll } from "../helpers/server.ts";
import { BACKENDS, backendAvailable, echoOnce, fdCount, freePort, knob, refused, report, testTimeout } from "./lib.ts";

afterEach(stopAll);
setDefaultTimeout(testTimeout(30_000, 300_000)); // tests without their own limit

const ONLINE = availableParallelism();
const PROP_RUNS = knob("PROP_RUNS", 300, 5_000);
const SERVE_RUNS = knob("SERVE_RUNS", 100, 1_000);
const CLI_RUNS = knob("CLI_RUNS", 40, 300);

// ---------------------------------------------------------------------------------------------
// The documented ranges (src/options.ts ServeOptions docs and README), written out independently as
// the oracle the properties check against.

const RANGES = {
  port: [0, 65535],
  threads: [1, 64],
  bufferSize: [512, 1 << 20],
  bufferCount: [16, 32768],
  maxConnections: [1, 1_000_000],
  maxPendingBytes: [1024, 1 << 30],
  backlog: [1, 65535],
  drainMs: [0, 3_600_000],
  idleTimeoutMs: [0, 86_400_000],
} as const;
type IntOption = keyof typeof RANGES;
const INT_OPTIONS = Object.keys(RANGES) as IntOption[];
const ALL_OPTIONS = [...INT_OPTIONS, "backend", "host", "cpus", "sqpoll"] as const;
type Option = (typeof ALL_OPTIONS)[number];

function validInt(opt: IntOption, v: unknown): boolean {
  const [lo, hi] = RANGES[opt];
  if (typeof v !== "number" || !Number.isInteger(v) || v < lo || v > hi) return false;
  return opt !== "bufferCount" || (v & (v - 1)) === 0;
}

/** Whether a single option value is valid on its own (cross-option rules aside). */
function validValue(opt: Option, v: unknown): boolean {
  if (v === undefined) return true;
  switch (opt) {
    case "backend":
      return v === "uring" || v === "epoll" || v === "auto";
    case "sqpoll":
      return typeof v === "boolean";
    case "cpus":
      return Array.isArray(v) && v.length <= 256 && v.every((c) => typeof c === "number" && Number.isInteger(c) && c >= 0 && c < ONLINE);
    case "host":
      return typeof v === "string" && KNOWN_GOOD_HOSTS.has(v);
    default:
      return validInt(opt, v);
  }
}

const KNOWN_GOOD_HOSTS = new Set(["127.0.0.1", "::1", "[::1]", "localhost", "0:0:0:0:0:0:0:1", "127.1.2.3"]);
const KNOWN_BAD_HOSTS = [
  "",
  " ",
  "not-an-ip",
  "999.1.1.1",
  "256.0.0.1",
  "1.2.3",
  "1.2.3.4.5",
  "127.0.0.1 ",
  " 127.0.0.1",
  "[::1",
  "::1]",
  "[[::1]]",
  "::1%lo",
  "fe80::1%eth0",
  "localhost:80",
  "127.0.0.1:80",
  "LOCALHOST.",
  "example.com",
  "::g",
  "1::2::3",
  "0x7f.1",
  "١٢٧.٠.٠.١",
];

/** Options that are bad in `o`: each value on its own, then the cross-option rules (maxConnections >=
 * threads; sqpoll needs uring/auto) when the values involved are valid on their own. */
function badOptions(o: Record<string, unknown>, options: readonly Option[] = ALL_OPTIONS): Option[] {
  const bad = options.filter((k) => !validValue(k, o[k]));
  const threads = o.threads ?? 1;
  const maxConns = o.maxConnections ?? 65536;
  if (validValue("threads", threads) && validValue("maxConnections", maxConns) && (maxConns as number) < (threads as number)) {
    bad.push("maxConnections", "threads");
  }
  if (o.sqpoll === true && o.backend === "epoll") bad.push("sqpoll", "backend");
  return bad;
}

/** The thrown value must be a TypeError or RangeError whose message names `name`. */
function expectNamed(e: unknown, name: string, cls?: typeof TypeError | typeof RangeError): void {
  if (!(e instanceof TypeError || e instanceof RangeError)) {
    throw new Error(`expected a TypeError/RangeError naming ${name}, got ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
  }
  if (cls) expect(e).toBeInstanceOf(cls);
  expect(e.message).toContain(name);
}

function attempt<T>(fn: () => T): { ok: true; value: T } | { ok: false; error: unknown } {
  try {
    return { ok: true, value: fn() };
  } catch (error) {
    return { ok: false, error };
  }
}

// ---------------------------------------------------------------------------------------------
// CLI table.

interface CliCase {
  args: string[];
  /** What the one stderr line must name. */
  names: string;
}

function cliCases(backend: string): CliCase[] {
  const c = (names: string, ...args: string[]): CliCase => ({ args, names });
  return [
    // --port
    c("--port", "--port", "-1"),
    c("--port", "--port=-1"),
    c("--port", "--port", "65536"),
    c("--port", "--port", "abc"),
    c("--port", "--port", "1.5"),
    c("--port", "--port", ""),
    c("--port", "--port="),
    c("--port", "--port"),
    c("--port", "--port", "0x10"),
    c("--port", "--port", "1e3"),
    c("--port", "--port", "+5"),
    c("--port", "--port", " 5"),
    c("--port", "--port", "5 "),
    c("--port", "--port", "99999999999999999999"),
    c("--port", "--port", "８０"),
    c("--port", "--port", "Infinity"),
    // --threads
    c("--threads", "--threads", "0"),
    c("--threads", "--threads", "65"),
    c("--threads", "--threads=-1"),
    c("--threads", "--threads", "two"),
    c("--max-connections", "--threads", "4", "--max-connections", "2"),
    // --buffers / --buffer-size
    c("--buffers", "--buffers", "1000"),
    c("--buffers", "--buffers", "8"),
    c("--buffers", "--buffers", "65536"),
    c("--buffers", "--buffers", "0"),
    c("--buffer-size", "--buffer-size", "100"),
    c("--buffer-size", "--buffer-size", "511"),
    c("--buffer-size", "--buffer-size", "1048577"),
    c("--buffer-size", "--buffer-size", "2k"),
    // --host
    ...["not-an-ip", "999.1.1.1", "", "1.2.3", "::1%lo", "[::1", "localhost:80", "127.0.0.1 ", "example.com"].map((h) => c("--host", "--host", h)),
    c("--host", "--host"),
    // --cpu
    c("--cpu", "--cpu", "99"),
    c("--cpu", "--cpu", "a"),
    c("--cpu", "--cpu", "0,"),
    c("--cpu", "--cpu", ","),
    c("--cpu", "--cpu", ""),
    c("--cpu", "--cpu=-1"),
    c("--cpu", "--cpu", `0,${ONLINE + 50}`),
    c("--cpu", "--cpu", "1.5"),
    // the rest of the integer flags
    c("--max-connections", "--max-connections", "0"),
    c("--max-connections", "--max-connections", "1000001"),
    c("--max-pending", "--max-pending", "10"),
    c("--max-pending", "--max-pending", "1073741825"),
    c("--backlog", "--backlog", "0"),
    c("--backlog", "--backlog", "65536"),
    c("--drain-ms", "--drain-ms", "-5"),
    c("--drain-ms", "--drain-ms=-5"),
    c("--drain-ms", "--drain-ms", "1e3"),
    c("--drain-ms", "--drain-ms", "3600001"),
    c("--idle-timeout", "--idle-timeout", "x"),
    c("--idle-timeout", "--idle-timeout", "86400001"),
    // --backend, --sqpoll
    c("--backend", "--backend", "nope"),
    c("--backend", "--backend", ""),
    c("--backend", "--backend", "URING"),
    c("--sqpoll", "--sqpoll=yes"),
    ...(backend === "epoll" ? [c("--sqpoll", "--sqpoll")] : []),
    // unknown flags, positional arguments
    c("--nope", "--nope"),
    c("-x", "-x"),
    c("--Port", "--Port", "0"),
    c("foo", "foo"),
    c("extra", "--port", "0", "extra"),
  ];
}

/** Runs the CLI with a usage error and checks exit 2, one stderr line naming `names`, nothing else. */
async function expectUsageError(backend: string, k: CliCase): Promise<string> {
  // The backend flag comes first so the case's own flags win; a fixed free port shows nothing listened.
  const port = await freePort();
  const hasPort = k.args.some((a) => a.startsWith("--port") || a === "--Port");
  const args = [...(k.args[0] === "--backend" ? [] : ["--backend", backend]), ...(hasPort ? [] : ["--port", String(port)]), ...k.args];
  const r = await exitOf(runCli(args), 15_000);
  const where = `bun src/cli.ts ${args.map((a) => JSON.stringify(a)).join(" ")}`;
  expect({ where, code: r.code, stdout: r.stdout }).toEqual({ where, code: 2, stdout: "" });
  expect(r.stderr.endsWith("\n")).toBe(true);
  const lines = r.stderr.slice(0, -1).split("\n");
  expect({ where, lines: lines.length }).toEqual({ where, lines: 1 }); // exactly one line
  expect(lines[0]!).toContain(k.names);
  if (!hasPort) expect(await refused(port)).toBe(true);
  return lines[0]!;
}

/** Runs `fn` over items with at most `n` at once. */
async function pool<T, R>(items: T[], n: number, fn: (t: T) => Promise<R>): Promise<PromiseSettledResult<R>[]> {
  const out: PromiseSettledResult<R>[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!).then(
          (value) => ({ status: "fulfilled", value }) as const,
          (reason) => ({ status: "rejected", reason }) as const,
        );
      }
    }),
  );
  return out;
}

describe.each([...BACKENDS])("reliability: bad input [%s]", (backend) => {
  const it = backendAvailable(backend) ? test : test.skip;

  // One test per case, so a failure names the exact command line.
  for (const k of cliCases(backend)) {
    it(`CLI ${k.args.map((a) => JSON.stringify(a)).join(" ")} → exit 2, one stderr line naming ${k.names}, nothing listening`, async () => {
      await expectUsageError(backend, k);
    });
  }

  it("CLI: valid edge forms start and echo on that address (--port 0, --host ::1, [::1], localhost, 0:0:0:0:0:0:0:1)", async () => {
    const forms: { host: string; connect: string }[] = [
      { host: "127.0.0.1", connect: "127.0.0.1" },
      { host: "::1", connect: "::1" },
      { host: "[::1]", connect: "::1" },
      { host: "localhost", connect: "127.0.0.1" },
      { host: "0:0:0:0:0:0:0:1", connect: "::1" },
    ];
    const results = await pool(forms, 3, async (f) => {
      const run = runCli(["--backend", backend, "--port", "0", "--host", f.host]);
      try {
        const b = await bannerOf(run);
        expect(b.port).toBeGreaterThan(0); // port 0 = an ephemeral port, not port 0
        expect(await echoOnce(b.port, `via ${f.host}`, f.connect)).toBe(`via ${f.host}`);
        run.proc.kill("SIGINT");
        const r = await exitOf(run);
        expect(r.code).toBe(0);
        return b.line;
      } finally {
        if (run.proc.exitCode === null && run.proc.signalCode === null) run.proc.kill("SIGKILL");
      }
    });
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed.length) throw failed[0]!.reason;
  });

  // ---- API table ----

  const badKinds: [string, unknown][] = [
    ["a string", "80"],
    ["an empty string", ""],
    ["null", null],
    ["true", true],
    ["a bigint", 80n],
    ["an array", [80]],
    ["an object", { value: 80 }],
    ["a Number object", new Number(80)],
    ["a function", () => 80],
    ["a symbol", Symbol("80")],
    ["a Date", new Date(0)],
  ];
  const badNumbers = (opt: IntOption): number[] => {
    const [lo, hi] = RANGES[opt];
    return [NaN, Infinity, -Infinity, 1e9 * (hi > 1e9 ? 10 : 1), lo - 1, hi + 1, lo + 0.5, -1, Number.MAX_SAFE_INTEGER + 2, Number.EPSILON, 2 ** 32 + lo];
  };

  for (const opt of INT_OPTIONS) {
    it(`serve({ ${opt} }) with wrong kinds → TypeError, out-of-range numbers → RangeError, naming ${opt}; nothing left behind`, async () => {
      const port = await freePort();
      const fds0 = fdCount();
      for (const [what, v] of badKinds) {
        const r = attempt(() => serve({ backend, host: "127.0.0.1", port: opt === "port" ? 0 : port, [opt]: v } as ServeOptions));
        if (r.ok) {
          await r.value.stop({ drainMs: 0 });
          throw new Error(`serve({ ${opt}: ${what} }) started a server`);
        }
        expectNamed(r.error, opt, TypeError);
      }
      for (const v of badNumbers(opt)) {
        if (opt === "bufferCount" || validInt(opt, v)) continue;
        const r = attempt(() => serve({ backend, host: "127.0.0.1", port: opt === "port" ? 0 : port, [opt]: v } as ServeOptions));
        if (r.ok) {
          await r.value.stop({ drainMs: 0 });
          throw new Error(`serve({ ${opt}: ${v} }) started a server`);
        }
        expectNamed(r.error, opt, RangeError);
      }
      if (opt === "bufferCount") {
        for (const v of [1000, 0, 8, 15, 17, 4095, 65536, 16.5, NaN]) {
          const r = attempt(() => serve({ backend, port, bufferCount: v }));
          if (r.ok) await r.value.stop({ drainMs: 0 });
          expect(r.ok).toBe(false);
          if (!r.ok) expectNamed(r.error, "bufferCount", RangeError);
        }
      }
      expect(await refused(port)).toBe(true);
      expect(fdCount()).toBeLessThanOrEqual(fds0); // nothing left open (an earlier test's socket may close meanwhile)
    });
  }

  it("serve(): backend, host, cpus, sqpoll, the options object itself and unknown keys → TypeError/RangeError naming them", async () => {
    const port = await freePort();
    const fds0 = fdCount();
    const cases: [string, unknown, typeof TypeError | typeof RangeError][] = [
      ["backend", { backend: "io_uring" }, RangeError],
      ["backend", { backend: "" }, RangeError],
      ["backend", { backend: "EPOLL" }, RangeError],
      ["backend", { backend: 1 }, TypeError],
      ["backend", { backend: ["epoll"] }, TypeError],
      ...KNOWN_BAD_HOSTS.map((h) => ["host", { host: h }, RangeError] as [string, unknown, typeof RangeError]),
      ["host", { host: 2130706433 }, TypeError],
      ["host", { host: ["127.0.0.1"] }, TypeError],
      ["cpus", { cpus: 0 }, TypeError],
      ["cpus", { cpus: "0" }, TypeError],
      ["cpus", { cpus: null }, TypeError],
      ["cpus", { cpus: { 0: 0, length: 1 } }, TypeError],
      ["cpus", { cpus: [ONLINE] }, RangeError],
      ["cpus", { cpus: [-1] }, RangeError],
      ["cpus", { cpus: [0.5] }, RangeError],
      ["cpus", { cpus: [NaN] }, RangeError],
      ["cpus", { cpus: ["0"] }, TypeError],
      ["cpus", { cpus: [0n] }, TypeError],
      ["cpus", { cpus: new Array(257).fill(0) }, RangeError],
      ["sqpoll", { sqpoll: "true" }, TypeError],
      ["sqpoll", { sqpoll: 1 }, TypeError],
      ["sqpoll", { backend: "epoll", sqpoll: true }, RangeError],
      ["maxConnections", { threads: 4, maxConnections: 3 }, RangeError],
      ["prot", { prot: 80 }, TypeError], // a typo is an unknown option, named
      ["options", null, TypeError],
      ["options", "port=80", TypeError],
      ["options", [], TypeError],
      ["options", 80, TypeError],
    ];
    // Every case is tried; the failures are listed together.
    const wrong: string[] = [];
    for (const [name, opts, cls] of cases) {
      const full =
        opts !== null && typeof opts === "object" && !Array.isArray(opts)
          ? { backend, host: "127.0.0.1", port, ...(opts as object) }
          : opts;
      const shown = `serve(${String(JSON.stringify(full, (_k, v) => (typeof v === "bigint" ? `${v}n` : v)))})`;
      const r = attempt(() => serve(full as ServeOptions));
      if (r.ok) {
        await r.value.stop({ drainMs: 0 });
        wrong.push(`${shown} started a server (backend ${r.value.backend}) instead of throwing a ${cls.name} naming ${name}`);
        continue;
      }
      const e = r.error;
      if (!(e instanceof cls) || !(e as Error).message.includes(name)) {
        wrong.push(`${shown} threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}; expected a ${cls.name} naming ${name}`);
      }
    }
    expect(wrong).toEqual([]);
    expect(await refused(port)).toBe(true);
    expect(fdCount()).toBeLessThanOrEqual(fds0); // nothing left open (an earlier test's socket may close meanwhile)
  });

  // null is a value of the wrong kind like any other: port: null is a TypeError, so backend: null,
  // host: null and sqpoll: null must be too, not silently "the default" (which for backend means
  // io_uring: serve({ backend: null }) starts a uring server).
  it("serve(): null for backend, host or sqpoll → TypeError naming it (as for every numeric option), not the default", async () => {
    const port = await freePort();
    const wrong: string[] = [];
    for (const name of ["backend", "host", "sqpoll", "port", "threads", "cpus"] as const) {
      const r = attempt(() => serve({ backend, host: "127.0.0.1", port, [name]: null } as unknown as ServeOptions));
      if (r.ok) {
        wrong.push(`serve({ ${name}: null }) started a ${r.value.backend} server on ${r.value.host}`);
        await r.value.stop({ drainMs: 0 });
      } else if (!(r.error instanceof TypeError) || !r.error.message.includes(name)) {
        wrong.push(`serve({ ${name}: null }) threw ${String(r.error)}`);
      }
    }
    expect(wrong).toEqual([]);
    expect(await refused(port)).toBe(true);
  });

  it("serve(): -0 counts as 0 (port -0 = ephemeral, drainMs -0 = no drain); undefined means the default", async () => {
    const s = serve({ backend, host: "127.0.0.1", port: -0, drainMs: -0, idleTimeoutMs: undefined, threads: undefined });
    try {
      expect(s.port).toBeGreaterThan(0);
      expect(s.threads).toBe(1);
      expect(await echoOnce(s.port, "minus zero")).toBe("minus zero");
    } finally {
      await s.stop();
    }
  });

  // ---- properties ----

  /** Values around an option's edges plus anything at all. */
  const valuesFor = (opt: Option): fc.Arbitrary<unknown> => {
    const common = [fc.anything(), fc.double(), fc.integer(), fc.bigInt(), fc.string()];
    if (opt in RANGES) {
      const [lo, hi] = RANGES[opt as IntOption];
      return fc.oneof(
        fc.integer({ min: lo - 3, max: lo + 3 }),
        fc.integer({ min: hi - 3, max: hi + 3 }),
        fc.integer({ min: lo, max: hi }),
        fc.constantFrom(-0, 0.5, NaN, Infinity, -Infinity, 2 ** 31, 2 ** 32, 2 ** 53),
        fc.integer({ min: 0, max: 15 }).map((b) => 2 ** b * 16), // powers of two (bufferCount)
        ...common,
      );
    }
    // null for backend/host/sqpoll has its own test below (it is taken as "use the default")
    if (opt === "host") return fc.oneof(fc.constantFrom(...KNOWN_GOOD_HOSTS, ...KNOWN_BAD_HOSTS), ...common).filter((v) => v !== null);
    if (opt === "backend") return fc.oneof(fc.constantFrom("uring", "epoll", "auto", "URING", "", " epoll"), ...common).filter((v) => v !== null);
    if (opt === "cpus") return fc.oneof(fc.array(fc.integer({ min: -2, max: ONLINE + 2 }), { maxLength: 4 }), fc.array(fc.anything(), { maxLength: 3 }), ...common);
    return fc.oneof(fc.boolean(), ...common).filter((v) => v !== null); // sqpoll
  };

  it(`property: any value of any single option is accepted as exactly itself within the documented range, or rejected naming it (${PROP_RUNS} runs per option)`, () => {
    for (const opt of ALL_OPTIONS) {
      fc.assert(
        fc.property(valuesFor(opt), (v) => {
          const base = opt === "sqpoll" ? { backend } : { backend: backend === "uring" ? "uring" : "epoll" };
          const r = attempt(() => resolveOptions({ ...base, [opt]: v }));
          const valid = validValue(opt, v) && !(opt === "sqpoll" && v === true && backend === "epoll");
          if (r.ok) {
            // accepted: it must have been valid, and the config carries it unchanged (-0 as 0)
            if (!valid && opt !== "host") throw new Error(`${opt}=${String(v)} was accepted`);
            if (opt in RANGES && v !== undefined) expect((r.value.config as Record<string, unknown>)[opt] === v).toBe(true); // -0 === 0
            if (opt === "host") expect(typeof r.value.host).toBe("string");
            if (opt === "cpus" && v !== undefined) expect(r.value.config.cpus).toEqual(v as number[]);
          } else {
            if (valid && v !== undefined) throw new Error(`${opt}=${String(v)} was rejected: ${String(r.error)}`);
            expectNamed(r.error, opt);
          }
        }),
        { numRuns: PROP_RUNS },
      );
    }
  });

  it(`property: a random set of options is accepted only if every value is valid, else the error names an option that is bad (${PROP_RUNS} runs)`, () => {
    const record = fc.record(
      Object.fromEntries(ALL_OPTIONS.map((o) => [o, fc.oneof(fc.constant(undefined), valuesFor(o))])) as Record<Option, fc.Arbitrary<unknown>>,
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(record, (opts) => {
        const r = attempt(() => resolveOptions(opts));
        const o = opts as Record<string, unknown>;
        const bad = badOptions(o);
        if (r.ok) {
          expect(bad).toEqual([]);
        } else {
          if (bad.length === 0 && KNOWN_GOOD_HOSTS.has(String(o.host ?? "127.0.0.1"))) {
            throw new Error(`valid options rejected: ${String(r.error)}`);
          }
          if (!(r.error instanceof TypeError || r.error instanceof RangeError)) throw r.error;
          const named = ALL_OPTIONS.filter((n) => (r.error as Error).message.includes(n));
          if (bad.length > 0) expect(named.some((n) => bad.includes(n))).toBe(true);
        }
      }),
      { numRuns: PROP_RUNS },
    );
  });

  it(
    `property: serve() on random small configs starts a working server with those settings, or throws naming a bad option and leaves nothing (${SERVE_RUNS} runs)`,
    async () => {
      const fds0 = fdCount();
      let started = 0;
      let rejected = 0;
      const small = (opt: IntOption, lo: number, hi: number) => fc.oneof({ weight: 4, arbitrary: fc.integer({ min: lo, max: hi }) }, { weight: 1, arbitrary: valuesFor(opt) });
      const cfg = fc.record(
        {
          port: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: valuesFor("port").filter((v) => !validInt("port", v) || v === 0) }),
          threads: small("threads", 1, 3),
          bufferSize: small("bufferSize", 512, 8192),
          bufferCount: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(16, 64, 256) }, { weight: 1, arbitrary: valuesFor("bufferCount") }),
          maxConnections: small("maxConnections", 1, 64),
          maxPendingBytes: small("maxPendingBytes", 1024, 1 << 20),
          backlog: small("backlog", 1, 128),
          drainMs: small("drainMs", 0, 50),
          idleTimeoutMs: small("idleTimeoutMs", 0, 60_000),
        },
        { requiredKeys: [] },
      );
      await fc.assert(
        fc.asyncProperty(cfg, async (c) => {
          const o = c as Record<string, unknown>;
          const bad = badOptions(o, INT_OPTIONS);
          const threads = (o.threads as number | undefined) ?? 1;
          // never allocate big pools: skip valid configs over 64 MiB of buffers
          fc.pre(bad.length > 0 || threads * ((o.bufferSize as number | undefined) ?? 2048) * ((o.bufferCount as number | undefined) ?? 4096) <= 64 << 20);
          const r = attempt(() => serve({ backend, host: "127.0.0.1", ...(c as ServeOptions) }));
          if (!r.ok) {
            rejected++;
            if (bad.length === 0) throw new Error(`valid config ${JSON.stringify(c)} rejected: ${String(r.error)}`);
            expectNamed(r.error, (r.error as Error).message.match(/bunring: (\w+)/)?.[1] ?? "?");
            const named = INT_OPTIONS.filter((n) => (r.error as Error).message.includes(n));
            expect(named.some((n) => bad.includes(n))).toBe(true);
            return;
          }
          const s = r.value;
          try {
            started++;
            expect(bad).toEqual([]);
            expect(s.backend).toBe(backend);
            expect(s.threads).toBe(threads);
            expect(s.port).toBeGreaterThan(0);
            expect(await echoOnce(s.port, "property")).toBe("property");
          } finally {
            await s.stop({ drainMs: 0 });
          }
        }),
        { numRuns: SERVE_RUNS },
      );
      expect(fdCount()).toBeLessThanOrEqual(fds0); // nothing left open (an earlier test's socket may close meanwhile)
      report("bad input", backend, `serve() property: ${started} random configs started and echoed, ${rejected} rejected naming a bad option`);
    },
    testTimeout(60_000, 600_000),
  );

  it(
    `property: the CLI on a random value for a random flag exits 2 naming the flag, or starts and stops cleanly (${CLI_RUNS} runs)`,
    async () => {
      const flags = ["--port", "--threads", "--buffer-size", "--buffers", "--max-connections", "--max-pending", "--backlog", "--drain-ms", "--idle-timeout", "--cpu", "--host", "--backend"];
      const value = fc.oneof(
        fc.string({ maxLength: 12 }),
        fc.integer({ min: -100, max: 2_000_000 }).map(String),
        fc.double().map(String),
        fc.constantFrom("", "0", "1", "16", "512", "65535", "65536", "-0", "1e3", "0x1f", "١", "0,1", "::1", "[::1]", "localhost", "auto"),
      );
      const outcomes = new Map<string, number>();
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...flags), value, async (flag, v) => {
          // Keep what may start small and on loopback: no fixed port (ephemeral only), no pool over a few MiB,
          // never a wildcard or foreign address.
          if (flag === "--port" && /^\d+$/.test(v) && Number(v) > 0 && Number(v) <= 65535) v = "0";
          // An idle timeout of a few ms would (rightly) close the echo's connection before its first
          // byte arrives on a busy machine; the limits suite covers short timeouts.
          if (flag === "--idle-timeout" && /^\d+$/.test(v) && Number(v) > 0 && Number(v) < 10_000) v = "10000";
          if (flag === "--host" && !KNOWN_GOOD_HOSTS.has(v) && (/^[\d.]+$/.test(v) || v.includes(":"))) fc.pre(KNOWN_BAD_HOSTS.includes(v));
          const extra = [
            ...(flag === "--port" ? [] : ["--port", "0"]),
            ...(flag === "--buffers" ? ["--buffer-size", "512"] : ["--buffers", "16"]),
            ...(flag === "--backend" ? [] : ["--backend", backend]),
          ];
          const run = runCli([...extra, `${flag}=${v}`]);
          try {
            const r = await Promise.race([run.exited, run.banner.then(() => "banner" as const)]);
            if (r === "banner") {
              const b = await bannerOf(run);
              expect(await echoOnce(b.port, "cli property", b.host.replace(/^\[|\]$/g, ""))).toBe("cli property");
              run.proc.kill("SIGINT");
              expect((await exitOf(run)).code).toBe(0);
              outcomes.set("started", (outcomes.get("started") ?? 0) + 1);
              return;
            }
            const where = `${flag}=${JSON.stringify(v)}`;
            expect({ where, code: r.code }).toEqual({ where, code: 2 });
            const lines = r.stderr.trimEnd().split("\n");
            expect({ where, lines: lines.length }).toEqual({ where, lines: 1 });
            expect(lines[0]).toContain(flag);
            outcomes.set("exit 2", (outcomes.get("exit 2") ?? 0) + 1);
          } finally {
            if (run.proc.exitCode === null && run.proc.signalCode === null) run.proc.kill("SIGKILL");
          }
        }),
        { numRuns: CLI_RUNS },
      );
      report("bad input", backend, `CLI property: ${[...outcomes].map(([k, n]) => `${k} ×${n}`).join(", ")}`);
    },
    testTimeout(60_000, 600_000),
  );
});

describe("reliability: user_data encode/decode", () => {
  const L = userData.limits;
  test(`every in-range (op, bid, slot, gen) round-trips (${PROP_RUNS * 10} runs), and decode∘encode is the identity on 64-bit values`, () => {
    expect(L).toEqual({ op: 255, bid: 65535, slot: 2 ** 20 - 1, gen: 2 ** 20 - 1 });
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: L.op }),
        fc.integer({ min: 0, max: L.bid }),
        fc.integer({ min: 0, max: L.slot }),
        fc.integer({ min: 0, max: L.gen }),
        (op, bid, slot, gen) => {
          const ud = userData.encode(op, bid, slot, gen);
          expect(ud >= 0n && ud < 1n << 64n).toBe(true);
          expect(userData.decode(ud)).toEqual({ op, bid, slot, gen });
        },
      ),
      { numRuns: PROP_RUNS * 10 },
    );
    // 8 + 16 + 20 + 20 = 64 bits: every 64-bit value is some tuple, and encoding it gives it back.
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (ud) => {
        const d = userData.decode(ud);
        expect(userData.encode(d.op, d.bid, d.slot, d.gen)).toBe(ud);
      }),
      { numRuns: PROP_RUNS * 10 },
    );
  });
});

// ---- privileged port as a non-root user ----

const unprivStart = Number((await Bun.file("/proc/sys/net/ipv4/ip_unprivileged_port_start").text().catch(() => "1024")).trim());
const root = process.getuid?.() === 0;
const setpriv = Bun.which("setpriv");
const skipWhy = !root
  ? "needs root to switch to user nobody (setpriv)"
  : !setpriv
    ? "setpriv (util-linux) not installed"
    : unprivStart <= 80
      ? `port 80 is not privileged here (net.ipv4.ip_unprivileged_port_start = ${unprivStart})`
      : "";
if (skipWhy) console.warn(`[reliability] privileged port test skipped: ${skipWhy}`);

describe.each([...BACKENDS])("reliability: privileged port as user nobody [%s]", (backend) => {
  const it = skipWhy || !backendAvailable(backend) ? test.skip : test;
  const asNobody = (args: string[]) =>
    runCli([], { cmd: [setpriv!, "--reuid=65534", "--regid=65534", "--clear-groups", BUN, CLI, ...args], env: { HOME: "/tmp" } });

  it("--port 80 as nobody: exit 1 (not a usage error), one line naming the port and the permission; --port 0 as nobody works", async () => {
    const port80Free = await refused(80);
    const r = await exitOf(asNobody(["--backend", backend, "--port", "80"]), 15_000);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    const lines = r.stderr.trimEnd().split("\n");
    expect(lines.length).toBe(1);
    expect(lines[0]).toMatch(/permission/i);
    expect(lines[0]).toContain("80");
    expect(lines[0]).toMatch(/1024/);
    if (port80Free) expect(await refused(80)).toBe(true);
    report("privileged port", backend, `as nobody: exit ${r.code}: ${lines[0]}`);

    // The failure is the port, not the user: nobody can run the server on an ephemeral port.
    const run = asNobody(["--backend", backend, "--port", "0"]);
    try {
      const b = await bannerOf(run);
      expect(await echoOnce(b.port, "nobody")).toBe("nobody");
      run.proc.kill("SIGINT");
      expect((await exitOf(run)).code).toBe(0);
    } finally {
      if (run.proc.exitCode === null && run.proc.signalCode === null) run.proc.kill("SIGKILL");
    }
  });
});
