// client.test.ts — `bun run client` as a user runs it: rust_echo_bench's flags and output lines
// against a real bunring server (with each of the load generator's loops), one JSON object with
// --json, exit 1 when the run saw errors, and usage errors that exit 2 with one line naming the flag.
// Request/response workloads: --request/--expect with backslash escapes and @FILE, the RESP presets
// with --pipeline against bench/servers/resp-bun-listen.ts, and their usage errors.
import { afterAll, beforeAll, describe, expect, it, setDefaultTimeout } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePort } from "../bench/targets.ts";
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
    ["--expect", ["--request", "PING\\r\\n"]],
    ["--request", ["--expect", "+PONG\\r\\n"]],
    ["--protocol", ["--protocol", "resp-get", "--request", "x", "--expect", "y"]],
    ["--length", ["--protocol", "resp-get", "--length", "64"]],
    ["--length", ["--request", "x", "--expect", "y", "--length", "64"]],
    ["--protocol", ["--protocol", "memcached"]],
    ["--key-space", ["--key-space", "10"]],
    ["--value-size", ["--protocol", "resp-ping", "--value-size", "10"]],
    ["--key-space", ["--protocol", "resp-get", "--key-space", "0"]],
    ["--pipeline", ["--pipeline", "0"]],
    ["--pipeline", ["--pipeline", "2000"]],
    ["--request", ["--request", "bad\\q", "--expect", "y"]],
    ["--request", ["--request", "@/nonexistent/request.bin", "--expect", "y"]],
    ["--cpu", ["--cpu", "9999"]],
    ["--cpu", ["--cpu", "1-x"]],
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

describe("request/response workloads", () => {
  // A responder that answers "+PONG\r\n" to every 6 bytes it receives ("PING\r\n").
  const pong = Bun.listen<{ pending: number }>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(socket) {
        socket.data = { pending: 0 };
      },
      data(socket, data) {
        socket.data.pending += data.length;
        const n = Math.floor(socket.data.pending / 6);
        socket.data.pending -= n * 6;
        if (n > 0) socket.write("+PONG\r\n".repeat(n));
      },
      error() {},
    },
  });
  const dir = mkdtempSync(join(tmpdir(), "bunring-client-"));
  let resp: { proc: ReturnType<typeof Bun.spawn>; port: number } | undefined;
  beforeAll(async () => {
    const port = await freePort();
    const proc = Bun.spawn({
      cmd: [process.execPath, resolve(REPO, "bench/servers/resp-bun-listen.ts"), "--port", String(port)],
      stdout: "pipe",
      stderr: "inherit",
    });
    const reader = (proc.stdout as ReadableStream<Uint8Array>).getReader();
    await reader.read(); // its "listening" line
    reader.releaseLock();
    resp = { proc, port };
  });
  afterAll(async () => {
    pong.stop(true);
    rmSync(dir, { recursive: true, force: true });
    resp?.proc.kill();
    await resp?.proc.exited;
  });
  const run = ["--number", "4", "--duration", "0.3", "--warmup", "0", "--json"];
  const parse = (r: { code: number | null; stdout: string; stderr: string }) => {
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
    return JSON.parse(r.stdout);
  };

  it("--request/--expect with escapes (\\r \\n \\xHH): every reply verified, workload custom", async () => {
    const out = parse(await client(["--address", `127.0.0.1:${pong.port}`, ...run, "--request", "\\x50ING\\r\\n", "--expect", "+PONG\\r\\n"]));
    expect(out).toMatchObject({ workload: "custom", pipeline: 1, requestBytes: 6, replyBytes: 7, length: null });
    expect(out.errors.total).toBe(0);
    expect(out.responses).toBeGreaterThan(0);
    expect(out.bytesVerified).toBeGreaterThanOrEqual(out.responses * 7);
  });

  it("@FILE reads the request and the reply raw, with --pipeline 8", async () => {
    writeFileSync(join(dir, "req"), "PING\r\n");
    writeFileSync(join(dir, "rep"), "+PONG\r\n");
    const out = parse(
      await client(["--address", `127.0.0.1:${pong.port}`, ...run, "--pipeline", "8", "--request", `@${join(dir, "req")}`, "--expect", `@${join(dir, "rep")}`]),
    );
    expect(out).toMatchObject({ workload: "custom", pipeline: 8, requestBytes: 6, replyBytes: 7 });
    expect(out.errors.total).toBe(0);
    expect(out.responses).toBeGreaterThan(0);
  });

  it("a reply that differs from --expect is an error: exit 1, counted as mismatches", async () => {
    const r = await client(["--address", `127.0.0.1:${pong.port}`, ...run, "--request", "PING\\r\\n", "--expect", "+PANG\\r\\n"]);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout).errors.mismatches).toBe(4);
  });

  for (const protocol of ["resp-ping", "resp-get", "resp-set"]) {
    it(`--protocol ${protocol} --pipeline 16: zero errors, text output in rust_echo_bench's shape`, async () => {
      const args = ["--address", `127.0.0.1:${resp!.port}`, "--number", "4", "--duration", "0.3", "--warmup", "0", "--protocol", protocol, "--pipeline", "16"];
      const keys = protocol === "resp-ping" ? [] : ["--key-space", "50", "--value-size", "20"];
      const r = await client([...args, ...keys]);
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
      expect(r.stdout).toMatch(/^Speed: \d+ request\/sec, \d+ response\/sec$/m);
      expect(r.stdout).toMatch(new RegExp(`^4 clients, running ${protocol} \\(\\d+-byte requests, \\d+-byte replies.*\\), pipeline 16, 0.3 sec\\.$`, "m"));
      expect(r.stdout).toMatch(/^Errors: 0 /m);
      const json = parse(await client([...args, ...keys, "--json"]));
      expect(json).toMatchObject({ workload: protocol, pipeline: 16, keySpace: protocol === "resp-ping" ? null : 50 });
      expect(json.errors.total).toBe(0);
      if (protocol === "resp-get") expect(json.replyBytes).toBe("$20\r\n".length + 20 + 2);
      if (protocol === "resp-set") expect(json.replyBytes).toBe(5);
    });
  }
});
