// cli.test.ts — the CLI's run-time behaviour as a child process: one banner line on start, echo
// through it, SIGINT and SIGTERM stop it gracefully (exit 0, a final `bunring stopped:` line whose
// stats match the traffic), --help lists every flag and exits 0, a port in use fails cleanly, IPv6,
// and the package.json scripts run it. Bad flag values (usage errors: exit 2, one stderr line naming
// the flag, nothing started) are all in tests/reliability/input.test.ts; the CLI under load and
// with io_uring unavailable in tests/reliability/faults.test.ts, under a low fd limit in limits.test.ts.
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import net from "node:net";
import { bannerOf, BUN, exitOf, killIfRunning, REPO, runCli, stoppedStats, type CliRun } from "./helpers/cli.ts";
import { echoStream } from "./helpers/clients.ts";
import { hasIPv6Loopback } from "./helpers/proc.ts";
import { BACKENDS, backendAvailable } from "./helpers/server.ts";
import { connect } from "./helpers/sockets.ts";
import { waitFor, withTimeout } from "./helpers/wait.ts";

setDefaultTimeout(60_000);

const running: CliRun[] = [];
function cli(args: string[], opts?: Parameters<typeof runCli>[1]): CliRun {
  const r = runCli(args, opts);
  running.push(r);
  return r;
}
afterEach(() => {
  for (const r of running.splice(0)) killIfRunning(r);
});

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
    const st = stoppedStats(lines[1]!);
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
    const c = await connect(b.port);
    c.sock.write("ping");
    const t0 = performance.now();
    // make sure the server has the connection before signalling
    await waitFor(() => c.received() >= 4, () => `echo of ping (${c.received()} of 4 bytes back)`, { timeoutMs: 5_000 });
    run.proc.kill("SIGTERM");
    const r = await exitOf(run);
    expect(r.code).toBe(0);
    expect(performance.now() - t0).toBeLessThan(4_000); // nothing in flight: no drain wait
    const last = r.stdout.trimEnd().split("\n").at(-1)!;
    expect(last).toStartWith("bunring stopped:");
    expect(last).toContain("SIGTERM");
    expect(stoppedStats(last).closedStop).toBe(1);
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
      "--reuse-port",
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
      await waitFor(
        () => {
          if (child.exitCode !== null && !out.includes("\n")) throw new Error(`\`bun run epoll\` exited ${child.exitCode}: ${err}`);
          return out.includes("\n");
        },
        () => `banner from \`bun run epoll\` (stdout so far ${JSON.stringify(out)}, stderr ${JSON.stringify(err)})`,
        { timeoutMs: 30_000, intervalMs: 10 },
      );
      const line = out.slice(0, out.indexOf("\n"));
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
