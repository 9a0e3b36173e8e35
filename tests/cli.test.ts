// cli.test.ts — the CLI as a child process: one banner line on start, echo through it, SIGINT and
// SIGTERM stop it gracefully (exit 0, a final `bunring stopped:` line whose stats match the traffic),
// usage errors exit 2 with one stderr line naming the flag and nothing started, --help exits 0, a
// port in use fails cleanly, and the package.json scripts run it.
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import net from "node:net";
import { bannerOf, BUN, exitOf, REPO, runCli, type CliRun } from "./helpers/cli.ts";
import { echoStream, openConn } from "./helpers/echo.ts";
import { BACKENDS, backendAvailable } from "./helpers/server.ts";
import { withTimeout } from "./helpers/wait.ts";

setDefaultTimeout(60_000);

const running: CliRun[] = [];
function cli(args: string[], opts?: Parameters<typeof runCli>[1]): CliRun {
  const r = runCli(args, opts);
  running.push(r);
  return r;
}
afterEach(() => {
  for (const r of running.splice(0)) if (r.proc.exitCode === null && !r.proc.killed) r.proc.kill("SIGKILL");
});

/** key=value pairs of the `bunring stopped:` line. */
function statsOf(line: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of line.matchAll(/(\w+)=(\d+)/g)) out[m[1]!] = Number(m[2]);
  return out;
}

function hasIPv6Loopback(): boolean {
  try {
    return readFileSync("/proc/net/if_inet6", "utf8").includes("00000000000000000000000000000001");
  } catch {
    return false;
  }
}

describe.each([...BACKENDS])("CLI --backend %s", (backend) => {
  const it = backendAvailable(backend) ? test : test.skip;

  it("prints one banner line, echoes, and on SIGINT stops with exit 0 and a `bunring stopped:` line", async () => {
    const run = cli(["--backend", backend, "--port", "0"]);
    const b = await bannerOf(run);
    expect(b.backend).toBe(backend);
    expect(b.host).toBe("127.0.0.1");
    expect(b.port).toBeGreaterThan(0);
    await echoStream({ port: b.port, bytes: 1 << 20, seed: 1 });
    await echoStream({ port: b.port, bytes: 12345, seed: 2, halfClose: true });
    expect(run.lines.length).toBe(1); // only the banner so far
    run.proc.kill("SIGINT");
    const r = await exitOf(run);
    expect({ code: r.code, signal: r.signal, stderr: r.stderr }).toEqual({ code: 0, signal: null, stderr: "" });
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines.length).toBe(2);
    expect(lines[0]).toBe(b.line);
    expect(lines[1]).toStartWith("bunring stopped:");
    const st = statsOf(lines[1]!);
    expect(st.bytesIn).toBe((1 << 20) + 12345);
    expect(st.bytesOut).toBe((1 << 20) + 12345);
    expect(st.accepted).toBe(2);
    expect(st.errors).toBe(0);
  });

  it("SIGINT the moment the banner appears still stops gracefully (10 times)", async () => {
    // The banner is the readiness signal: a supervisor may signal as soon as it reads it, so the
    // handlers must already be installed (else the default action kills the process).
    const outcomes: string[] = [];
    for (let i = 0; i < 10; i++) {
      const run = cli(["--backend", backend, "--port", "0"]);
      await bannerOf(run);
      run.proc.kill(i % 2 ? "SIGTERM" : "SIGINT");
      const r = await exitOf(run);
      outcomes.push(r.signal ? `killed by ${r.signal}` : `exit ${r.code}${r.stdout.includes("bunring stopped:") ? "" : " without stopped line"}`);
    }
    expect(outcomes).toEqual(Array(10).fill("exit 0"));
  });

  it("SIGTERM with a client connected: closes it, exits 0 promptly with the stopped line", async () => {
    const run = cli(["--backend", backend, "--port", "0", "--threads", "2"]);
    const b = await bannerOf(run);
    const c = await openConn(b.port);
    c.sock.write("ping");
    const t0 = performance.now();
    // make sure the server has the connection before signalling
    await withTimeout(
      new Promise<void>((res) => {
        const check = () => (c.received() >= 4 ? res() : setTimeout(check, 5));
        check();
      }),
      5_000,
      "echo of ping",
    );
    run.proc.kill("SIGTERM");
    const r = await exitOf(run);
    expect(r.code).toBe(0);
    expect(performance.now() - t0).toBeLessThan(4_000); // nothing in flight: no drain wait
    const last = r.stdout.trimEnd().split("\n").at(-1)!;
    expect(last).toStartWith("bunring stopped:");
    expect(last).toContain("SIGTERM");
    expect(statsOf(last).closedStop).toBe(1);
    await withTimeout(c.closed, 5_000, "client closed by the stopping server");
  });

  it("refuses a port in use: non-zero exit, message names the port, no banner", async () => {
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(0, "127.0.0.1", r));
    const port = (holder.address() as net.AddressInfo).port;
    try {
      const r = await exitOf(cli(["--backend", backend, "--port", String(port)]));
      expect(r.code).not.toBe(0);
      expect(r.stdout).toBe("");
      expect(r.stderr).toContain(String(port));
      expect(r.stderr).toMatch(/in use/i);
    } finally {
      holder.close();
    }
  });
});

(hasIPv6Loopback() ? test : test.skip)("IPv6 host: banner shows [::1]:port and it echoes", async () => {
  const run = cli(["--backend", "epoll", "--host", "::1", "--port", "0"]);
  const b = await bannerOf(run);
  expect(b.host).toBe("[::1]");
  expect(b.line).toContain(`[::1]:${b.port}`);
  await echoStream({ port: b.port, host: "::1", bytes: 100_000 });
  run.proc.kill("SIGINT");
  expect((await exitOf(run)).code).toBe(0);
});

test("--help prints usage listing every flag and exits 0", async () => {
  for (const flag of ["--help", "-h"]) {
    const r = await exitOf(cli([flag]));
    expect(r.code).toBe(0);
    for (const f of [
      "--backend",
      "--host",
      "--port",
      "--threads",
      "--cpu",
      "--buffer-size",
      "--buffers",
      "--max-connections",
      "--max-pending",
      "--drain-ms",
      "--idle-timeout",
      "--sqpoll",
      "--help",
    ]) {
      expect(r.stdout).toContain(f);
    }
    expect(r.stdout).not.toContain("listening");
  }
});

/** Bad command lines: the flag the first stderr line must name, and extra text it must contain. */
const BAD_FLAGS: { args: string[]; flag: string; mentions?: string[] }[] = [
  { args: ["--backend", "foo"], flag: "--backend", mentions: ["uring", "epoll"] },
  { args: ["--port", "abc"], flag: "--port" },
  { args: ["--port", "70000"], flag: "--port", mentions: ["65535"] },
  { args: ["--port=-1"], flag: "--port" },
  { args: ["--port", "1.5"], flag: "--port" },
  { args: ["--threads", "0"], flag: "--threads", mentions: ["64"] },
  { args: ["--threads", "65"], flag: "--threads", mentions: ["64"] },
  { args: ["--buffer-size", "100"], flag: "--buffer-size", mentions: ["512"] },
  { args: ["--buffers", "100"], flag: "--buffers", mentions: ["power of two"] },
  { args: ["--buffers", "8"], flag: "--buffers" },
  { args: ["--max-connections", "0"], flag: "--max-connections" },
  { args: ["--max-pending", "0"], flag: "--max-pending" },
  { args: ["--backlog", "0"], flag: "--backlog" },
  { args: ["--drain-ms", "soon"], flag: "--drain-ms" },
  { args: ["--idle-timeout", "x"], flag: "--idle-timeout" },
  { args: ["--cpu", "0,x"], flag: "--cpu" },
  { args: ["--cpu", "9999"], flag: "--cpu" },
  { args: ["--host", "not-an-ip"], flag: "--host" },
  { args: ["--bogus"], flag: "--bogus" },
  { args: ["--port"], flag: "--port" },
  { args: ["--backend", "epoll", "--sqpoll"], flag: "--sqpoll" },
];

describe("usage errors", () => {
  test.each(BAD_FLAGS.map((c) => [c.args.join(" "), c] as const))("%s → exit 2 naming the flag, nothing started", async (_n, c) => {
    const r = await exitOf(cli(["--port", "0", ...c.args]));
    expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 2, stdout: "" });
    const first = r.stderr.split("\n")[0]!;
    expect(first).toContain(c.flag);
    for (const m of c.mentions ?? []) expect(first).toContain(m);
  });

  test("a usage error is exactly one line on stderr", async () => {
    const r = await exitOf(cli(["--threads", "0"]));
    expect(r.code).toBe(2);
    const lines = r.stderr.trimEnd().split("\n");
    expect(lines).toEqual([lines[0]!]); // the contract: ONE line naming the flag and what is allowed
  });

  test("a positional argument is a usage error", async () => {
    const r = await exitOf(cli(["--port", "0", "extra"]));
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain("extra");
  });
});

describe("package.json scripts", () => {
  const pkg = JSON.parse(readFileSync(`${REPO}/package.json`, "utf8")) as { scripts: Record<string, string> };

  test('"uring" and "epoll" run the CLI with that backend', () => {
    expect(pkg.scripts.uring).toContain("src/cli.ts --backend uring");
    expect(pkg.scripts.epoll).toContain("src/cli.ts --backend epoll");
  });

  test("`bun run epoll -- --port 0` starts, echoes, and stops on Ctrl-C (SIGINT to the process group)", async () => {
    const child = spawn(BUN, ["run", "epoll", "--port", "0"], { cwd: REPO, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((res) => child.on("exit", (code) => res(code)));
    try {
      const line = await withTimeout(
        new Promise<string>((res, rej) => {
          const check = () => {
            const i = out.indexOf("\n");
            if (i >= 0) res(out.slice(0, i));
            else if (child.exitCode !== null) rej(new Error(`exited ${child.exitCode}: ${err}`));
            else setTimeout(check, 10);
          };
          check();
        }),
        30_000,
        "banner from `bun run epoll`",
      );
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(line);
      expect(m).not.toBeNull();
      await echoStream({ port: Number(m![1]), bytes: 50_000 });
      process.kill(-child.pid!, "SIGINT"); // what a terminal's Ctrl-C does
      const code = await withTimeout(exited, 15_000, "`bun run epoll` exit after SIGINT");
      expect(code).toBe(0);
      expect(out).toContain("bunring stopped:");
    } finally {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        // already gone
      }
    }
  });
});
