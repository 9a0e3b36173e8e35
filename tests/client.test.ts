// client.test.ts — `bun run client` as a user runs it: rust_echo_bench's flags and output lines
// against a real bunring server (with each of the load generator's loops), one JSON object with
// --json, exit 1 when the run saw errors, and usage errors that exit 2 with one line naming the flag.
import { afterAll, describe, expect, it, setDefaultTimeout } from "bun:test";
import { resolve } from "node:path";
import { serve } from "../src/index.ts";
import { exitOf, REPO, runCli } from "./helpers/cli.ts";

setDefaultTimeout(30_000);

const CLIENT = resolve(REPO, "bench", "client.ts");
const client = (args: string[]) => exitOf(runCli([], { cmd: [process.execPath, CLIENT, ...args] }), 20_000);

const server = serve({ backend: "epoll", port: 0 });
afterAll(() => server.stop({ drainMs: 0 }));
const address = `127.0.0.1:${server.port}`;
const short = ["--number", "8", "--duration", "0.3", "--warmup", "0", "--length", "1024"];

describe.each(["uring", "epoll"])("client --io %s", (io) => {
  it("prints rust_echo_bench's Speed / Requests / Responses lines, with counts that agree", async () => {
    const r = await client(["--address", address, ...short, "--io", io]);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
    const speed = /^Speed: (\d+) request\/sec, (\d+) response\/sec$/m.exec(r.stdout);
    const requests = /^Requests: (\d+)$/m.exec(r.stdout);
    const responses = /^Responses: (\d+)$/m.exec(r.stdout);
    expect(speed && requests && responses).toBeTruthy();
    expect(Number(responses![1])).toBeGreaterThan(0);
    // Rates divide the counts by the measured interval, which the output also states.
    const measured = Number(/^Measured: ([\d.]+) s/m.exec(r.stdout)![1]);
    expect(Math.abs(Number(speed![2]) - Number(responses![1]) / measured)).toBeLessThanOrEqual(1);
    expect(r.stdout).toMatch(/^Errors: 0 /m);
    expect(r.stdout).toMatch(/client I\/O (io_uring|epoll)/);
    if (io === "epoll") expect(r.stdout).toMatch(/client I\/O epoll/);
  });

  it("--json prints one object with the counts, latency and which loop ran", async () => {
    const r = await client(["--address", address, ...short, "--io", io, "--json"]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines).toHaveLength(1);
    const out = JSON.parse(lines[0]!);
    expect(out).toMatchObject({ connections: 8, length: 1024, status: 0, connected: 8, connectErrors: 0 });
    expect(out.errors.total).toBe(0);
    expect(out.responses).toBeGreaterThan(0);
    expect(out.bytesVerified).toBeGreaterThanOrEqual(out.responses * 1024);
    expect(out.latencyUs.p50).toBeLessThanOrEqual(out.latencyUs.p99);
    expect(out.latencyUs.p99).toBeLessThanOrEqual(out.latencyUs.max);
    expect(["io_uring", "epoll"]).toContain(out.io);
  });
});

it("a run against a port nobody listens on reports connect errors and exits 1", async () => {
  const probe = serve({ backend: "epoll", port: 0 });
  const port = probe.port;
  await probe.stop({ drainMs: 0 });
  const r = await client(["--address", `127.0.0.1:${port}`, ...short, "--connect-timeout", "2"]);
  expect(r.code).toBe(1);
  expect(`${r.stdout}${r.stderr}`).toMatch(/connect|refused/i);
});

describe("usage errors exit 2 with one line naming the flag", () => {
  const cases: [string, string[]][] = [
    ["--number", ["--number", "0"]],
    ["--length", ["--length", "abc"]],
    ["--duration", ["--duration", "-1"]],
    ["--number", ["-n", "-5"]],
    ["--number", ["-n"]],
    ["--bogus", ["--bogus"]],
    ["--json", ["--json=1"]],
    ["--io", ["--io", "kqueue"]],
    ["--address", ["--address", "nowhere"]],
    ["--threads", ["--number", "2", "--threads", "3"]],
  ];
  for (const [flag, args] of cases) {
    it(`${args.join(" ")}`, async () => {
      const r = await client(args);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe("");
      const lines = r.stderr.trimEnd().split("\n");
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(flag);
    });
  }
});
