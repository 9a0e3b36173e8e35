// input.test.ts — reliability scenario 6: bad input everywhere a person can type, for the CLI. This
// file is the home of every test of the CLI's flag values; serve()'s options (the same option table,
// called by their API names) are checked in tests/options.test.ts, the CLI's run-time behaviour
// (banner, signals, --help, port in use, package scripts) in tests/cli.test.ts.
//   * Every flag with malformed, out-of-range, empty, missing and oddly written values, combinations
//     the rules forbid, unknown flags and positional arguments → exit 2, exactly one line on stderr
//     naming the flag (or the stray argument) and where it matters what is allowed, nothing on
//     stdout, nothing listening. Valid edge forms (port 0, ::1, [::1], localhost, 0:0:0:0:0:0:0:1)
//     start, echo on that address and stop on SIGINT.
//   * fast-check: the CLI on random values for random flags exits 2 naming the flag, or starts,
//     echoes and stops cleanly.
//   * Privileged port as a non-root user (setpriv to nobody): --port 80 fails with a clear
//     permission message (exit 1: not a usage error), while --port 0 as nobody works.
// Scale: BUNRING_REL_CLI_RUNS (40 random command lines per backend; 300 with BUNRING_SOAK=1).
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import fc from "fast-check";
import { spawnSync } from "node:child_process";
import { bannerOf, BUN, CLI, exitOf, killIfRunning, runCli } from "../helpers/cli.ts";
import { echoOnce } from "../helpers/clients.ts";
import { KNOWN_BAD_HOSTS, KNOWN_GOOD_HOSTS, ONLINE } from "../helpers/oracle.ts";
import { report } from "../helpers/report.ts";
import { knob, testTimeout } from "../helpers/scale.ts";
import { BACKENDS, backendAvailable, stopAll } from "../helpers/server.ts";
import { freePort, refused } from "../helpers/sockets.ts";

afterEach(stopAll);
setDefaultTimeout(testTimeout(30_000, 300_000)); // tests without their own limit

const CLI_RUNS = knob("BUNRING_REL_CLI_RUNS", 40, 300);

// ---------------------------------------------------------------------------------------------
// CLI table.

interface CliCase {
  args: string[];
  /** What the one stderr line must name. */
  names: string;
  /** Extra text the line must contain (what is allowed). */
  mentions?: string[];
}

function cliCases(backend: string): CliCase[] {
  const c = (names: string, ...args: string[]): CliCase => ({ args, names });
  const m = (k: CliCase, ...mentions: string[]): CliCase => ({ ...k, mentions });
  return [
    // --port
    c("--port", "--port", "-1"),
    c("--port", "--port=-1"),
    m(c("--port", "--port", "65536"), "65535"),
    m(c("--port", "--port", "70000"), "65535"),
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
    m(c("--threads", "--threads", "0"), "64"),
    m(c("--threads", "--threads", "65"), "64"),
    c("--threads", "--threads=-1"),
    c("--threads", "--threads", "two"),
    c("--max-connections", "--threads", "4", "--max-connections", "2"),
    // --buffers / --buffer-size
    m(c("--buffers", "--buffers", "1000"), "power of two"),
    m(c("--buffers", "--buffers", "100"), "power of two"),
    m(c("--buffers", "--buffers", "32"), "--max-pending", "--buffer-size", "64"), // valid alone; the pool rule needs 64
    m(c("--buffers", "--buffer-size", "512", "--max-pending", "1048576", "--buffers", "2048"), "4096"),
    c("--buffers", "--buffers", "8"),
    c("--buffers", "--buffers", "65536"),
    c("--buffers", "--buffers", "0"),
    m(c("--buffer-size", "--buffer-size", "100"), "512"),
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
    c("--cpu", "--cpu", "0,x"),
    c("--cpu", "--cpu", "9999"),
    // the rest of the integer flags
    c("--max-connections", "--max-connections", "0"),
    c("--max-connections", "--max-connections", "1000001"),
    c("--max-pending", "--max-pending", "0"),
    c("--max-pending", "--max-pending", "10"),
    c("--max-pending", "--max-pending", "1073741825"),
    c("--backlog", "--backlog", "0"),
    c("--backlog", "--backlog", "65536"),
    c("--drain-ms", "--drain-ms", "-5"),
    c("--drain-ms", "--drain-ms=-5"),
    c("--drain-ms", "--drain-ms", "1e3"),
    c("--drain-ms", "--drain-ms", "3600001"),
    c("--drain-ms", "--drain-ms", "soon"),
    c("--idle-timeout", "--idle-timeout", "x"),
    c("--idle-timeout", "--idle-timeout", "86400001"),
    c("--stall-timeout-ms", "--stall-timeout-ms", "-1"),
    c("--stall-timeout-ms", "--stall-timeout-ms", "x"),
    c("--stall-timeout-ms", "--stall-timeout-ms", "86400001"),
    // --backend, --sqpoll
    m(c("--backend", "--backend", "nope"), "uring", "epoll"),
    m(c("--backend", "--backend", "foo"), "uring", "epoll"),
    c("--backend", "--backend", ""),
    c("--backend", "--backend", "URING"),
    c("--sqpoll", "--sqpoll=yes"),
    ...(backend === "epoll" ? [c("--sqpoll", "--sqpoll")] : []),
    // unknown flags, positional arguments
    c("--nope", "--nope"),
    c("--bogus", "--bogus"),
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
  for (const t of k.mentions ?? []) expect({ where, line: lines[0] }).toEqual({ where, line: expect.stringContaining(t) });
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

describe.each([...BACKENDS])("reliability: bad input on the command line [%s]", (backend) => {
  const it = backendAvailable(backend) ? test : test.skip;

  // One test per case, so a failure names the exact command line.
  for (const k of cliCases(backend)) {
    it(`CLI ${k.args.map((a) => JSON.stringify(a)).join(" ")} → exit 2, one stderr line naming ${k.names}${k.mentions ? ` (and ${k.mentions.join(", ")})` : ""}, nothing listening`, async () => {
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
        killIfRunning(run);
      }
    });
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed.length) throw failed[0]!.reason;
  });

  it(
    `property: the CLI on a random value for a random flag exits 2 naming the flag, or starts and stops cleanly (${CLI_RUNS} runs)`,
    async () => {
      const flags = [
        "--port",
        "--threads",
        "--buffer-size",
        "--buffers",
        "--max-connections",
        "--max-pending",
        "--backlog",
        "--drain-ms",
        "--idle-timeout",
        "--stall-timeout-ms",
        "--cpu",
        "--host",
        "--backend",
      ];
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
          // A small pool that the pool rule allows (16 buffers hold a connection's worth at --max-pending 1024).
          const extra = [
            ...(flag === "--port" ? [] : ["--port", "0"]),
            ...(flag === "--buffers" ? ["--buffer-size", "512"] : ["--buffers", "16"]),
            ...(flag === "--max-pending" ? [] : ["--max-pending", "1024"]),
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
            killIfRunning(run);
          }
        }),
        { numRuns: CLI_RUNS },
      );
      report("bad input", backend, `CLI property: ${[...outcomes].map(([k, n]) => `${k} ×${n}`).join(", ")}`);
    },
    testTimeout(60_000, 600_000),
  );
});

// ---- privileged port as a non-root user ----

const unprivStart = Number((await Bun.file("/proc/sys/net/ipv4/ip_unprivileged_port_start").text().catch(() => "1024")).trim());
const root = process.getuid?.() === 0;
const setpriv = Bun.which("setpriv");
/** Whether user nobody can read the checkout at all (a private clone directory, mode 700, hides it). */
function nobodyCanRead(): boolean {
  if (!root || !setpriv) return false;
  const r = spawnSync(setpriv, ["--reuid=65534", "--regid=65534", "--clear-groups", "test", "-r", CLI]);
  return r.status === 0;
}
const skipWhy = !root
  ? "needs root to switch to user nobody (setpriv)"
  : !setpriv
    ? "setpriv (util-linux) not installed"
    : unprivStart <= 80
      ? `port 80 is not privileged here (net.ipv4.ip_unprivileged_port_start = ${unprivStart})`
      : !nobodyCanRead()
        ? `user nobody cannot read ${CLI} (the checkout's directory is private)`
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
      killIfRunning(run);
    }
  });
});
