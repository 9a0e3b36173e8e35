// options.test.ts — every check on serve() options lives here (the CLI's flags, which go through the
// same table, are tested in tests/reliability/input.test.ts; the user_data layout in userdata.test.ts).
//   * Tables, per backend: for every option, values of the wrong kind (strings, null, booleans,
//     bigints, arrays, objects, Number objects, functions, symbols, Dates) → TypeError; values out
//     of range (NaN, ±Infinity, fractions, negatives, just past either end, 2^32…) → RangeError;
//     every message names the option, and where it matters the value and what is allowed. Also the
//     options object itself, unknown keys (a typo), null for backend/host/sqpoll (not "the
//     default"), and the rules that tie options together (maxConnections >= threads; the buffer pool
//     holds what one connection may; sqpoll needs io_uring). Rejected options start nothing: no fd,
//     no thread, nothing listening. Decided: -0 counts as 0 (port -0 is an ephemeral port).
//   * Properties (fast-check), per backend: any value of any single option is accepted as exactly
//     itself when the documented range (tests/helpers/oracle.ts) allows it, else rejected with the
//     right class naming it (and the value); random whole option sets are accepted only when every
//     value and rule holds, else the error names an option that is bad; serve() on random small
//     configs starts a working server with exactly those settings or throws naming a bad option and
//     leaves nothing; valid settings (buffer sizes, counts, threads) always start a working server.
//   * The extremes of each range start a working server; the defaults are as documented.
// Scale: BUNRING_REL_PROP_RUNS, BUNRING_REL_SERVE_RUNS, BUNRING_VALID_RUNS (BUNRING_SOAK=1: more runs).
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import fc from "fast-check";
import { DEFAULTS, serve, type ServeOptions } from "../src/index.ts";
import { resolveOptions } from "../src/options.ts";
import { echoOnce } from "./helpers/clients.ts";
import {
  ALL_OPTIONS,
  badOptions,
  errorClassFor,
  INT_OPTIONS,
  KNOWN_BAD_HOSTS,
  KNOWN_GOOD_HOSTS,
  MAX_CPUS,
  minBufferCount,
  ONLINE,
  RANGES,
  validInt,
  type IntOption,
  type Option,
} from "./helpers/oracle.ts";
import { expectFdsBackTo, fdCount, listFds, threadCount } from "./helpers/proc.ts";
import { report } from "./helpers/report.ts";
import { knob, testTimeout } from "./helpers/scale.ts";
import { BACKENDS, backendAvailable, startServer, stopAll, URING_OK } from "./helpers/server.ts";
import { freePort, refused } from "./helpers/sockets.ts";

setDefaultTimeout(testTimeout(60_000, 600_000));
afterEach(stopAll);

const PROP_RUNS = knob("BUNRING_REL_PROP_RUNS", 500, 5_000);
const SERVE_RUNS = knob("BUNRING_REL_SERVE_RUNS", 100, 1_000);
const VALID_RUNS = knob("BUNRING_VALID_RUNS", 15, 150);

type ErrorClass = typeof TypeError | typeof RangeError;

/** A value as a person would write it (bigints with n, strings quoted, symbols and functions named). */
function show(v: unknown): string {
  if (typeof v === "bigint") return `${v}n`;
  if (typeof v === "number") return Object.is(v, -0) ? "-0" : String(v);
  if (typeof v === "symbol" || typeof v === "function") return String(v);
  if (Array.isArray(v) && v.length > 8) return `[${v.length} × ${show(v[0])}]`;
  if (v instanceof Number) return `new Number(${v.valueOf()})`;
  if (v instanceof Date) return `new Date(${v.getTime()})`;
  try {
    return JSON.stringify(v, (_k, x: unknown) => (typeof x === "bigint" ? `${x}n` : x)) ?? String(v);
  } catch {
    return String(v);
  }
}

function attempt<T>(fn: () => T): { ok: true; value: T } | { ok: false; error: unknown } {
  try {
    return { ok: true, value: fn() };
  } catch (error) {
    return { ok: false, error };
  }
}

/** The thrown value must be a TypeError or RangeError (`cls` if given) whose message names `name`. */
function expectNamed(e: unknown, name: string, cls?: ErrorClass): void {
  if (!(e instanceof TypeError || e instanceof RangeError)) {
    throw new Error(`expected a TypeError/RangeError naming ${name}, got ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
  }
  if (cls) expect(e).toBeInstanceOf(cls);
  expect(e.message).toContain(name);
}

// ---------------------------------------------------------------------------------------------
// The table of bad options.

interface BadCase {
  /** What the message must name: an option, or "options" for the options argument itself. */
  option: string;
  /** An object is merged over the base options; anything else is passed as the options. */
  opts: unknown;
  cls: ErrorClass;
  /** Extra text the message must contain (the value as shown, or the allowed range). */
  mentions?: (string | RegExp)[];
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const label = (c: BadCase) =>
  isPlainObject(c.opts)
    ? Object.entries(c.opts)
        .map(([k, v]) => `${k}: ${show(v)}`)
        .join(", ")
    : show(c.opts);

const WRONG_KINDS: [string, unknown][] = [
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

/** Numbers out of an integer option's range (or not integers). */
function outOfRange(opt: IntOption): number[] {
  const [lo, hi] = RANGES[opt];
  const values = [NaN, Infinity, -Infinity, 1e9 * (hi > 1e9 ? 10 : 1), lo - 1, hi + 1, lo + 0.5, -1, Number.MAX_SAFE_INTEGER + 2, Number.EPSILON, 2 ** 32 + lo];
  if (opt === "bufferCount") values.push(1000, 0, 8, 15, 17, 100, 4095, 65536, 16.5);
  return values.filter((v) => !validInt(opt, v));
}

/** What each integer option's message must show as its allowed range. */
const RANGE_TEXT: Partial<Record<IntOption, (string | RegExp)[]>> = {
  port: ["65535"],
  threads: ["64"],
  bufferSize: ["512", "1048576"],
  bufferCount: [/power of (two|2)/i],
};

const BAD: BadCase[] = [
  // every integer option: wrong kinds, then out-of-range numbers (the message shows the value)
  ...INT_OPTIONS.flatMap((option): BadCase[] => [
    ...WRONG_KINDS.map(([, v]) => ({ option, opts: { [option]: v }, cls: TypeError })),
    ...outOfRange(option).map((v) => ({ option, opts: { [option]: v }, cls: RangeError, mentions: [String(v), ...(RANGE_TEXT[option] ?? [])] })),
  ]),
  // backend
  { option: "backend", opts: { backend: "io_uring" }, cls: RangeError, mentions: ["io_uring", "uring", "epoll", "auto"] },
  { option: "backend", opts: { backend: "" }, cls: RangeError, mentions: ["epoll"] },
  { option: "backend", opts: { backend: "URING" }, cls: RangeError },
  { option: "backend", opts: { backend: "EPOLL" }, cls: RangeError },
  { option: "backend", opts: { backend: 0 }, cls: TypeError },
  { option: "backend", opts: { backend: 1 }, cls: TypeError },
  { option: "backend", opts: { backend: ["epoll"] }, cls: TypeError },
  // host
  // The message quotes the value as JSON (so a NUL or a space at the end shows).
  ...KNOWN_BAD_HOSTS.map((h): BadCase => ({ option: "host", opts: { host: h }, cls: RangeError, ...(h.trim() ? { mentions: [JSON.stringify(h)] } : {}) })),
  { option: "host", opts: { host: 127001 }, cls: TypeError },
  { option: "host", opts: { host: 2130706433 }, cls: TypeError },
  { option: "host", opts: { host: ["127.0.0.1"] }, cls: TypeError },
  // cpus
  { option: "cpus", opts: { cpus: 0 }, cls: TypeError },
  { option: "cpus", opts: { cpus: "0" }, cls: TypeError },
  { option: "cpus", opts: { cpus: "0,1" }, cls: TypeError },
  { option: "cpus", opts: { cpus: null }, cls: TypeError },
  { option: "cpus", opts: { cpus: { 0: 0, length: 1 } }, cls: TypeError },
  { option: "cpus", opts: { cpus: [ONLINE] }, cls: RangeError, mentions: [String(ONLINE)] },
  { option: "cpus", opts: { cpus: [ONLINE + 100] }, cls: RangeError, mentions: [String(ONLINE + 100)] },
  { option: "cpus", opts: { cpus: [-1] }, cls: RangeError, mentions: ["-1"] },
  { option: "cpus", opts: { cpus: [0.5] }, cls: RangeError, mentions: ["0.5"] },
  { option: "cpus", opts: { cpus: [NaN] }, cls: RangeError },
  { option: "cpus", opts: { cpus: ["0"] }, cls: TypeError },
  { option: "cpus", opts: { cpus: [0n] }, cls: TypeError },
  { option: "cpus", opts: { cpus: new Array(MAX_CPUS + 1).fill(0) }, cls: RangeError },
  // sqpoll
  { option: "sqpoll", opts: { sqpoll: "yes" }, cls: TypeError },
  { option: "sqpoll", opts: { sqpoll: "true" }, cls: TypeError },
  { option: "sqpoll", opts: { sqpoll: 1 }, cls: TypeError },
  // the rules that tie options together
  { option: "maxConnections", opts: { threads: 4, maxConnections: 2 }, cls: RangeError, mentions: ["threads"] },
  { option: "maxConnections", opts: { threads: 4, maxConnections: 3 }, cls: RangeError, mentions: ["threads"] },
  { option: "sqpoll", opts: { backend: "epoll", sqpoll: true }, cls: RangeError, mentions: ["epoll"] },
  {
    option: "bufferCount",
    opts: { bufferCount: 32 },
    cls: RangeError,
    mentions: ["maxPendingBytes", "bufferSize", String(minBufferCount(2048, 65536))],
  },
  {
    option: "bufferCount",
    opts: { bufferSize: 512, maxPendingBytes: 1 << 20, bufferCount: 2048 },
    cls: RangeError,
    mentions: ["maxPendingBytes", String(minBufferCount(512, 1 << 20))],
  },
  // the options argument itself, and unknown keys
  ...[5, 80, "uring", "port=80", true, null, [], [1, 2]].map((v): BadCase => ({ option: "options", opts: v, cls: TypeError })),
  { option: "prot", opts: { prot: 0 }, cls: TypeError },
  { option: "prot", opts: { prot: 80 }, cls: TypeError },
];

/** The cases grouped by what they name, in table order, duplicates (same label) dropped. */
const BY_OPTION = new Map<string, BadCase[]>();
{
  const seen = new Set<string>();
  for (const c of BAD) {
    const key = `${c.option} ${label(c)}`;
    if (seen.has(key)) continue;
    seen.add(key);
    BY_OPTION.set(c.option, [...(BY_OPTION.get(c.option) ?? []), c]);
  }
}

/** serve() with a case's options over `base`; a server that starts (a bug) is stopped at once. */
async function tryCase(c: BadCase, base: ServeOptions): Promise<{ error: unknown; started?: string }> {
  const full = isPlainObject(c.opts) ? { ...base, ...c.opts } : c.opts;
  const r = attempt(() => serve(full as ServeOptions));
  if (!r.ok) return { error: r.error };
  await r.value.stop({ drainMs: 0 });
  return { error: undefined, started: `started a ${r.value.backend} server` };
}

/** What is wrong with how a case was rejected, or undefined. */
function whatIsWrong(c: BadCase, error: unknown): string | undefined {
  if (!(error instanceof c.cls)) return `threw ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}; expected a ${c.cls.name}`;
  const msg = (error as Error).message;
  const missing = [c.option, ...(c.mentions ?? [])].filter((m) => (typeof m === "string" ? !msg.includes(m) : !m.test(msg)));
  return missing.length ? `${c.cls.name} "${msg}" does not mention ${missing.map(String).join(", ")}` : undefined;
}

describe.each([...BACKENDS])("serve() option checking [%s]", (backend) => {
  const it = backendAvailable(backend) ? test : test.skip;
  const base: ServeOptions = { backend, host: "127.0.0.1", port: 0 };

  for (const [option, cases] of BY_OPTION) {
    const classes = [...new Set(cases.map((c) => c.cls.name))].join(" / ");
    it(`${option}: ${cases.length} bad values → ${classes} naming ${option === "options" ? "the options" : option}`, async () => {
      const wrong: string[] = [];
      for (const c of cases) {
        const r = await tryCase(c, base);
        const why = r.started ?? whatIsWrong(c, r.error);
        if (why) wrong.push(`serve(${label(c)}) ${why}`);
      }
      expect(wrong).toEqual([]);
    });
  }

  it("rejected options start nothing: no fd, no thread, nothing listening", async () => {
    const warm = serve({ ...base }); // first use loads the library
    await warm.stop({ drainMs: 0 });
    const port = await freePort();
    const fds = listFds();
    const threads = threadCount();
    const started: string[] = [];
    for (const cases of BY_OPTION.values()) {
      for (const c of cases) {
        const r = await tryCase(c, { ...base, port });
        if (r.started) started.push(`serve(${label(c)}) ${r.started}`);
      }
    }
    expect(started).toEqual([]);
    expect(await refused(port)).toBe(true);
    await expectFdsBackTo(fds);
    expect(threadCount()).toBeLessThanOrEqual(threads);
  });

  // null is a value of the wrong kind like any other: port: null is a TypeError, so backend: null,
  // host: null and sqpoll: null must be too, not silently "the default" (which for backend means
  // io_uring: serve({ backend: null }) would start a uring server).
  it("null for backend, host or sqpoll → TypeError naming it (as for every numeric option), not the default", async () => {
    const port = await freePort();
    const wrong: string[] = [];
    for (const name of ["backend", "host", "sqpoll", "port", "threads", "cpus"] as const) {
      const r = attempt(() => serve({ ...base, port, [name]: null } as unknown as ServeOptions));
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

  it("-0 counts as 0 (port -0 = ephemeral, drainMs -0 = no drain); undefined means the default", async () => {
    const s = startServer(backend, { port: -0, drainMs: -0, idleTimeoutMs: undefined, threads: undefined });
    expect(s.port).toBeGreaterThan(0);
    expect(s.threads).toBe(1);
    expect(await echoOnce(s.port, "minus zero")).toBe("minus zero");
  });

  // ---- properties ----

  /** Values around an option's edges, far outside them, of other kinds, and anything at all. */
  const valuesFor = (opt: Option): fc.Arbitrary<unknown> => {
    const common = [fc.anything(), fc.double(), fc.integer(), fc.bigInt(), fc.string()];
    if (opt in RANGES) {
      const [lo, hi] = RANGES[opt as IntOption];
      return fc.oneof(
        fc.integer({ min: lo - 3, max: lo + 3 }),
        fc.integer({ min: hi - 3, max: hi + 3 }),
        fc.integer({ min: lo, max: hi }),
        fc.integer({ min: -(2 ** 31), max: lo - 1 }),
        fc.integer({ min: hi + 1, max: 2 ** 40 }),
        fc.double().filter((x) => !Number.isInteger(x)),
        fc.constantFrom(-0, 0.5, -0.5, 1e-300, NaN, Infinity, -Infinity, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2),
        fc.integer({ min: 0, max: 15 }).map((b) => 2 ** b * 16), // powers of two (bufferCount)
        fc.integer().map(String),
        fc.boolean(),
        fc.constant(null),
        fc.array(fc.integer(), { maxLength: 2 }),
        ...common,
      );
    }
    // null for backend/host/sqpoll has its own test above
    if (opt === "host") return fc.oneof(fc.constantFrom(...KNOWN_GOOD_HOSTS, ...KNOWN_BAD_HOSTS), ...common).filter((v) => v !== null);
    if (opt === "backend") return fc.oneof(fc.constantFrom("uring", "epoll", "auto", "URING", "", " epoll"), ...common).filter((v) => v !== null);
    if (opt === "cpus") {
      return fc.oneof(fc.array(fc.integer({ min: -2, max: ONLINE + 2 }), { maxLength: 4 }), fc.array(fc.anything(), { maxLength: 3 }), ...common);
    }
    return fc.oneof(fc.boolean(), ...common).filter((v) => v !== null); // sqpoll
  };

  it(`property: any value of any single option is accepted as exactly itself when documented as valid, else rejected by class naming it (${PROP_RUNS} runs per option)`, () => {
    for (const opt of ALL_OPTIONS) {
      fc.assert(
        fc.property(valuesFor(opt), (v) => {
          const o = { backend, [opt]: v } as Record<string, unknown>;
          const r = attempt(() => resolveOptions(o));
          const bad = badOptions(o);
          const ownClass = errorClassFor(opt, v);
          if (r.ok) {
            // accepted: nothing may be bad (a host the oracle does not list may be a valid literal),
            // and the config carries the value unchanged (-0 as 0)
            const unexpected = bad.filter((b) => !(b === "host" && typeof v === "string"));
            if (unexpected.length) throw new Error(`${opt}=${show(v)} was accepted though ${unexpected.join(", ")} is bad`);
            if (opt in RANGES && v !== undefined) expect((r.value.config as Record<string, unknown>)[opt] === v).toBe(true);
            if (opt === "host") expect(typeof r.value.host).toBe("string");
            if (opt === "cpus" && v !== undefined) expect(r.value.config.cpus).toEqual(v as number[]);
            return;
          }
          if (bad.length === 0) throw new Error(`${opt}=${show(v)} was rejected: ${String(r.error)}`);
          if (ownClass) {
            // bad on its own: the right class, naming the option (and, for numbers, the value)
            expectNamed(r.error, opt, ownClass);
            if (opt in RANGES && typeof v === "number") expect((r.error as Error).message).toContain(String(v));
          } else {
            // valid on its own, but a rule is broken: the message names an option of that rule
            expectNamed(r.error, opt);
            expect(bad).toContain(opt);
          }
        }),
        { numRuns: PROP_RUNS },
      );
    }
  });

  it(`property: a random set of options is accepted only if every value and rule holds, else the error names an option that is bad (${PROP_RUNS} runs)`, () => {
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
          expect(bad.filter((b) => !(b === "host" && typeof o.host === "string"))).toEqual([]);
        } else {
          if (bad.length === 0) throw new Error(`valid options rejected: ${String(r.error)}`);
          if (!(r.error instanceof TypeError || r.error instanceof RangeError)) throw r.error;
          const named = ALL_OPTIONS.filter((n) => (r.error as Error).message.includes(n));
          expect(named.some((n) => bad.includes(n))).toBe(true);
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
      const small = (opt: IntOption, lo: number, hi: number) =>
        fc.oneof({ weight: 4, arbitrary: fc.integer({ min: lo, max: hi }) }, { weight: 1, arbitrary: valuesFor(opt) });
      const cfg = fc.record(
        {
          port: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: valuesFor("port").filter((v) => !validInt("port", v) || v === 0) }),
          threads: small("threads", 1, 4),
          bufferSize: small("bufferSize", 512, 8192),
          bufferCount: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(16, 64, 256, 1024, 4096) }, { weight: 1, arbitrary: valuesFor("bufferCount") }),
          maxConnections: small("maxConnections", 1, 64),
          maxPendingBytes: fc.oneof(
            { weight: 3, arbitrary: fc.integer({ min: 1024, max: 8192 }) },
            { weight: 1, arbitrary: fc.integer({ min: 1024, max: 1 << 20 }) },
            { weight: 1, arbitrary: valuesFor("maxPendingBytes") },
          ),
          backlog: small("backlog", 1, 128),
          drainMs: small("drainMs", 0, 50),
          idleTimeoutMs: small("idleTimeoutMs", 0, 60_000),
          stallTimeoutMs: small("stallTimeoutMs", 0, 60_000),
        },
        { requiredKeys: [] },
      );
      await fc.assert(
        fc.asyncProperty(cfg, async (c) => {
          const o = c as Record<string, unknown>;
          const bad = badOptions(o, INT_OPTIONS);
          const threads = (o.threads as number | undefined) ?? 1;
          const bufferCount = (o.bufferCount as number | undefined) ?? 4096;
          // never allocate big pools: skip valid configs over 64 MiB of buffers
          fc.pre(bad.length > 0 || threads * ((o.bufferSize as number | undefined) ?? 2048) * bufferCount <= 64 << 20);
          const r = attempt(() => serve({ backend, host: "127.0.0.1", ...(c as ServeOptions) }));
          if (!r.ok) {
            rejected++;
            if (bad.length === 0) throw new Error(`valid config ${show(c)} rejected: ${String(r.error)}`);
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
            expect(s.stats().buffersTotal).toBe(bufferCount * threads);
            expect(await echoOnce(s.port, "property")).toBe("property");
          } finally {
            await s.stop({ drainMs: 0 });
          }
        }),
        { numRuns: SERVE_RUNS },
      );
      expect(started).toBeGreaterThan(0); // the property did start servers, not only reject configs
      expect(fdCount()).toBeLessThanOrEqual(fds0); // nothing left open (an earlier test's socket may close meanwhile)
      report("bad input", backend, `serve() property: ${started} random configs started and echoed, ${rejected} rejected naming a bad option`);
    },
    testTimeout(60_000, 600_000),
  );
});

describe("valid settings", () => {
  test(`property: valid threads, bufferSize, bufferCount, maxPendingBytes, backlog always start a working server (${VALID_RUNS} runs)`, async () => {
    const backend = URING_OK ? "uring" : "epoll";
    await fc.assert(
      fc.asyncProperty(
        fc
          .record({
            threads: fc.integer({ min: 1, max: 4 }),
            bufferSize: fc.integer({ min: 512, max: 65_536 }),
            maxPendingBytes: fc.integer({ min: 1024, max: 4 * 1024 * 1024 }),
            /** bufferCount: the smallest power of two the pool rule allows, times 2^extra. */
            extra: fc.integer({ min: 0, max: 3 }),
            backlog: fc.integer({ min: 1, max: 4096 }),
            backend: fc.constantFrom(backend, "epoll" as const),
          })
          .map(({ extra, ...o }) => {
            const need = Math.max(16, 2 ** Math.ceil(Math.log2(minBufferCount(o.bufferSize, o.maxPendingBytes))));
            return { ...o, bufferCount: Math.min(32_768, need * 2 ** extra) };
          })
          .filter((o) => o.bufferCount >= minBufferCount(o.bufferSize, o.maxPendingBytes) && o.threads * o.bufferSize * o.bufferCount <= 64 << 20),
        async (o) => {
          const s = startServer(o.backend, o);
          try {
            const msg = `bs=${o.bufferSize} bc=${o.bufferCount}`;
            expect(await echoOnce(s.port, msg)).toBe(msg);
            expect(s.threads).toBe(o.threads);
            expect(s.stats().buffersTotal).toBe(o.bufferCount * o.threads);
          } finally {
            await s.stop({ drainMs: 0 });
          }
        },
      ),
      { numRuns: VALID_RUNS },
    );
  });

  test("the extremes of each range start a working server", async () => {
    const extremes: ServeOptions[] = [
      { threads: 1 },
      { threads: 64, maxConnections: 64, bufferCount: 16, maxPendingBytes: 1024 },
      { bufferSize: 512 },
      { bufferSize: 1_048_576, bufferCount: 16 },
      { bufferCount: 16, maxPendingBytes: 1024 },
      { bufferCount: 32_768, bufferSize: 512 },
      { maxConnections: 1 },
      { maxPendingBytes: 1024 },
      { backlog: 1 },
      { backlog: 65_535 },
      { drainMs: 0 },
      { drainMs: 3_600_000 },
      { idleTimeoutMs: 0 },
      { idleTimeoutMs: 86_400_000 },
      { stallTimeoutMs: 0 },
      { stallTimeoutMs: 86_400_000 },
    ];
    for (const o of extremes) {
      const s = startServer("epoll", o);
      expect({ o, echo: await echoOnce(s.port, "edge") }).toEqual({ o, echo: "edge" });
      await s.stop({ drainMs: 0 });
    }
  });

  test("defaults are as documented", () => {
    expect(DEFAULTS).toMatchObject({
      backend: "uring",
      host: "127.0.0.1",
      port: 6379,
      threads: 1,
      bufferSize: 2048,
      bufferCount: 4096,
      maxConnections: 65536,
      maxPendingBytes: 65536,
      backlog: 4096,
      drainMs: 5000,
      idleTimeoutMs: 0,
      stallTimeoutMs: 10_000,
      sqpoll: false,
    });
    const s = startServer(URING_OK ? "uring" : "epoll", { backend: undefined, host: undefined });
    expect(s.host).toBe("127.0.0.1");
    expect(s.threads).toBe(1);
    expect(s.stats().buffersTotal).toBe(4096);
  });
});
