// bench.test.ts — `bun run bench` end to end on a tiny matrix: it starts each target as its own
// server process, runs the load generator against it, and writes the JSON document (in the shape
// the README promises), the Markdown table and the SVG chart; bad flags exit 2 with one line.
// A tiny --workload resp run (the handler-mode targets resp-bunring-uring and resp-bunring-epoll, i.e.
// examples/resp-server.ts on bunring's listen(), its handler on Bun.listen as resp-bun-listen, and
// resp-redis-server when installed) writes the same documents with a workload and pipeline per entry,
// one table per workload, and the machine's load.
// A tiny --workload echo,js-echo run: the js-echo targets (one handler module on bunring's listen()
// and on Bun.listen) in one rotation with a C echo target, ratios against js-echo-bun-listen.
// Speed is not asserted here: that is what the benchmark itself reports.
import { afterAll, describe, expect, it, setDefaultTimeout } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { BUILTIN_NAMES, BUILTIN_WORKLOAD, builtinTargets, freePort, startServer } from "../bench/targets.ts";
import { exitOf, REPO, runCli } from "./helpers/cli.ts";

setDefaultTimeout(120_000);

const BENCH = resolve(REPO, "bench", "run.ts");
const bench = (args: string[], ms: number) => exitOf(runCli([], { cmd: [process.execPath, BENCH, ...args] }), ms);
const dir = mkdtempSync(join(tmpdir(), "bunring-bench-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface RunEntry {
  workload: string;
  target: string;
  connections: number;
  length: number;
  pipeline: number;
  clientCpuPct: number | null;
  serverCpuPct: number | null;
  loadAvg: { start: number | null; end: number | null };
  competitors: { pid: number; comm: string; cpuPct: number }[];
  vsBaseline: { baseline: string; reqPerSec: number | null };
  reqPerSec: { median: number; min: number; max: number };
  serverCpuUsPerReq: number | null;
  latencyUs: { p50: number; p90: number; p99: number; p999: number; max: number };
  serverRssMiB: number | null;
  errors: number;
}

describe("bun run bench on a tiny matrix", () => {
  const out = join(dir, "tiny.json");
  const targets = ["bunring-uring", "bunring-epoll", "bun-listen"];
  const result = bench(
    ["--targets", targets.join(","), "--connections", "1,8", "--length", "512", "--reps", "2", "--duration", "0.3", "--warmup", "0", "--out", out],
    100_000,
  );

  it("exits 0 and writes JSON with one entry per target × connections, every one measured without errors", async () => {
    const r = await result;
    expect({ code: r.code, stderr: r.stderr.split("\n").filter((l) => l.startsWith("bench:") && !l.includes("wrote") && !l.startsWith("bench: warning:")) })
      .toEqual({ code: 0, stderr: [] });
    const doc = JSON.parse(readFileSync(out, "utf8"));
    expect(doc.command).toStartWith("bun run bench -- --targets");
    expect(doc.machine.cores).toBeGreaterThan(0);
    const runs = doc.runs as RunEntry[];
    expect(runs.map((e) => `${e.target}@${e.connections}`).sort()).toEqual(
      targets.flatMap((t) => [`${t}@1`, `${t}@8`]).sort(),
    );
    for (const e of runs) {
      expect(e.workload).toBe("echo");
      expect(e.pipeline).toBe(1);
      expect(e.vsBaseline.baseline).toBe("bun-listen");
      expect(e.length).toBe(512);
      expect(e.errors).toBe(0);
      expect(e.reqPerSec.min).toBeGreaterThan(0);
      expect(e.reqPerSec.min).toBeLessThanOrEqual(e.reqPerSec.median);
      expect(e.reqPerSec.median).toBeLessThanOrEqual(e.reqPerSec.max);
      expect(e.latencyUs.p50).toBeLessThanOrEqual(e.latencyUs.p99);
      expect(e.latencyUs.p99).toBeLessThanOrEqual(e.latencyUs.max);
      expect(e.serverRssMiB).toBeGreaterThan(0);
      expect(e.serverCpuUsPerReq).toBeGreaterThan(0);
    }
  });

  it("writes the Markdown table and the SVG chart beside it", async () => {
    await result;
    const md = readFileSync(join(dir, "tiny.md"), "utf8");
    for (const t of targets) expect(md).toMatch(new RegExp(`^\\| ${t} \\| 8 \\| 512 \\|`, "m"));
    const svg = readFileSync(join(dir, "tiny.svg"), "utf8");
    expect(svg).toStartWith("<svg");
    for (const t of targets) expect(svg).toContain(t);
  });
});

describe("the RESP targets", () => {
  const handlerTargets = ["resp-bunring-uring", "resp-bunring-epoll", "resp-bun-listen"];

  it("are built in, speak resp, and the handler-mode ones run examples/resp-server.ts (bun run resp) on each backend", () => {
    for (const t of [...handlerTargets, "resp-redis-server"]) {
      expect(BUILTIN_NAMES as readonly string[]).toContain(t);
      expect(BUILTIN_WORKLOAD[t as (typeof BUILTIN_NAMES)[number]]).toBe("resp");
    }
    const all = builtinTargets();
    for (const backend of ["uring", "epoll"]) {
      const t = all.find((x) => x.name === `resp-bunring-${backend}`)!;
      expect({ workload: t.workload, display: t.display, unavailable: t.unavailable }).toEqual({
        workload: "resp",
        display: `bun run resp -- --port PORT --backend ${backend}`,
        unavailable: null,
      });
      const argv = t.argv(6390, null);
      expect(argv[1]).toBe(resolve(REPO, "examples/resp-server.ts"));
      expect(argv.slice(2).join(" ")).toBe(`--host 127.0.0.1 --port 6390 --backend ${backend}`);
    }
  });

  it("resp-bun-listen runs examples/resp-server.ts's handler module on Bun.listen, not a RESP server of its own", () => {
    const source = readFileSync(resolve(REPO, "bench/servers/resp-bun-listen.ts"), "utf8");
    expect(source).toMatch(/import \{ respHandler[^}]*\} from "\.\.\/\.\.\/examples\/resp-server\.ts"/);
    expect(source).toContain("Bun.listen<RespConnection>({ hostname, port, allowHalfOpen: true, socket: respHandler })");
    expect(source).not.toMatch(/parseCommand|new Map/);
  });

  it("each handler-mode target starts as the bench starts it and puts the same bytes on the wire (the example's commands, inline PING, its errors)", async () => {
    // SET, GET, ECHO, an unknown command and an inline PING, then FIN: answered in order, then the server ends.
    const script = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n*1\r\n$3\r\nFOO\r\nPING\r\n";
    const all = builtinTargets();
    const replies = await Promise.all(
      handlerTargets.map(async (name) => {
        const server = await startServer(all.find((t) => t.name === name)!, await freePort(), { serverCpu: null, pinning: "none", listenTimeoutMs: 20_000 });
        try {
          return await new Promise<string>((done, fail) => {
            let got = "";
            const socket = connect({ host: "127.0.0.1", port: server.port }, () => socket.end(script));
            socket.setTimeout(10_000, () => socket.destroy(new Error(`${name}: no end of reply within 10 s (got ${JSON.stringify(got)})`)));
            socket.on("data", (chunk: Buffer) => (got += chunk.toString("latin1")));
            socket.on("error", fail);
            socket.on("close", () => done(got));
          });
        } finally {
          await server.stop();
        }
      }),
    );
    expect(replies[0]).toStartWith("+OK\r\n$1\r\nv\r\n$2\r\nhi\r\n-ERR unknown command 'FOO'");
    expect(replies[0]).toEndWith("\r\n+PONG\r\n");
    expect(replies).toEqual(handlerTargets.map(() => replies[0]!));
  });
});

describe("bun run bench --workload resp on a tiny matrix", () => {
  const out = join(dir, "resp.json");
  const redis = Bun.which("redis-server") !== null;
  const targets = ["resp-bunring-uring", "resp-bunring-epoll", "resp-bun-listen", ...(redis ? ["resp-redis-server"] : [])];
  const result = bench(
    ["--workload", "resp", "--targets", targets.join(","), "--connections", "1,4", "--pipeline", "1,4", "--reps", "1", "--duration", "0.3", "--warmup", "0", "--key-space", "20", "--out", out],
    100_000,
  );

  it(`exits 0; one entry per workload × target × connections × pipeline, zero errors (${redis ? "with" : "without: not installed,"} redis-server)`, async () => {
    const r = await result;
    expect({ code: r.code, stderr: r.stderr.split("\n").filter((l) => l.startsWith("bench:") && !l.includes("wrote") && !l.startsWith("bench: warning:")) })
      .toEqual({ code: 0, stderr: [] });
    const doc = JSON.parse(readFileSync(out, "utf8"));
    expect(doc.settings).toMatchObject({ workloads: ["resp"], pipelines: [1, 4], keySpace: 20, baselines: { resp: "resp-bun-listen" } });
    expect(doc.targets.map((t: { name: string; workload: string }) => `${t.name}:${t.workload}`)).toEqual(targets.map((t) => `${t}:resp`));
    expect(Array.isArray(doc.warnings)).toBe(true);
    const runs = doc.runs as RunEntry[];
    // Interleaved: within each workload × pipeline × connections cell, every target in turn.
    expect(doc.samples.map((x: { workload: string; target: string; connections: number; pipeline: number }) => `${x.workload}/${x.target}@${x.connections}/P${x.pipeline}`)).toEqual(
      ["resp-get", "resp-set"].flatMap((w) => [1, 4].flatMap((p) => [1, 4].flatMap((c) => targets.map((t) => `${w}/${t}@${c}/P${p}`)))),
    );
    const keys = runs.map((e) => `${e.workload}/${e.target}@${e.connections}/P${e.pipeline}`).sort();
    const want = ["resp-get", "resp-set"].flatMap((w) => targets.flatMap((t) => [1, 4].flatMap((c) => [1, 4].map((p) => `${w}/${t}@${c}/P${p}`))));
    expect(keys).toEqual(want.sort());
    for (const e of runs) {
      expect(e.errors).toBe(0);
      expect(e.reqPerSec.min).toBeGreaterThan(0);
      expect(e.vsBaseline.baseline).toBe("resp-bun-listen");
      if (e.target === "resp-bun-listen") expect(e.vsBaseline.reqPerSec).toBe(1);
      else expect(e.vsBaseline.reqPerSec).toBeGreaterThan(0);
      expect(e.serverCpuUsPerReq).toBeGreaterThan(0);
      expect(e.clientCpuPct).toBeGreaterThan(0);
      expect(e.serverCpuPct).toBeGreaterThan(0);
      expect(e.loadAvg.start).toBeGreaterThanOrEqual(0);
      expect(e.loadAvg.end).toBeGreaterThanOrEqual(0);
      expect(Array.isArray(e.competitors)).toBe(true);
    }
    const md = readFileSync(join(dir, "resp.md"), "utf8");
    expect(md).toMatch(/^## resp-get /m);
    expect(md).toMatch(/^## resp-set /m);
    for (const t of targets) expect(md).toMatch(new RegExp(`^\\| ${t} \\| 4 \\| 4 \\|`, "m"));
    const svg = readFileSync(join(dir, "resp.svg"), "utf8");
    expect(svg).toContain("resp-get throughput");
    expect(svg).toContain("resp-set throughput");
    for (const t of targets) expect(svg).toContain(t);
  });
});

describe("bun run bench --workload echo,js-echo on a tiny matrix", () => {
  // One handler module (examples/js-echo.ts) on bunring's listen() (both backends) and on Bun.listen,
  // in one rotation with a C echo target.
  const out = join(dir, "js-echo.json");
  const jsTargets = ["js-echo-bunring-uring", "js-echo-bunring-epoll", "js-echo-bun-listen"];
  const targets = ["bunring-uring", ...jsTargets];
  const result = bench(
    ["--workload", "echo,js-echo", "--targets", targets.join(","), "--connections", "1,4", "--reps", "1", "--duration", "0.3", "--warmup", "0", "--out", out],
    100_000,
  );

  it("exits 0; js-echo entries per target × connections against js-echo-bun-listen, interleaved with echo, zero errors", async () => {
    const r = await result;
    expect({ code: r.code, stderr: r.stderr.split("\n").filter((l) => l.startsWith("bench:") && !l.includes("wrote") && !l.startsWith("bench: warning:")) })
      .toEqual({ code: 0, stderr: [] });
    const doc = JSON.parse(readFileSync(out, "utf8"));
    expect(doc.settings).toMatchObject({
      workloads: ["echo", "js-echo"],
      connections: { echo: [1, 4], "js-echo": [1, 4] },
      baselines: { echo: "bunring-uring", "js-echo": "js-echo-bun-listen" },
    });
    expect(doc.targets.map((t: { name: string; workload: string }) => `${t.name}:${t.workload}`)).toEqual([
      "bunring-uring:echo",
      ...jsTargets.map((t) => `${t}:js-echo`),
    ]);
    // One rotation: every target at 1 connection before any at 4.
    expect(doc.samples.map((x: { target: string; connections: number }) => `${x.target}@${x.connections}`)).toEqual(
      [1, 4].flatMap((c) => targets.map((t) => `${t}@${c}`)),
    );
    const runs = doc.runs as RunEntry[];
    const js = runs.filter((e) => e.workload === "js-echo");
    expect(js.map((e) => `${e.target}@${e.connections}`).sort()).toEqual(jsTargets.flatMap((t) => [`${t}@1`, `${t}@4`]).sort());
    expect(runs.filter((e) => e.workload === "echo").map((e) => `${e.target}@${e.connections}`)).toEqual(["bunring-uring@1", "bunring-uring@4"]);
    for (const e of js) {
      expect(e.length).toBe(1024);
      expect(e.pipeline).toBe(1);
      expect(e.errors).toBe(0);
      expect(e.reqPerSec.min).toBeGreaterThan(0);
      expect(e.serverCpuUsPerReq).toBeGreaterThan(0);
      expect(e.vsBaseline.baseline).toBe("js-echo-bun-listen");
      if (e.target === "js-echo-bun-listen") expect(e.vsBaseline.reqPerSec).toBe(1);
      else expect(e.vsBaseline.reqPerSec).toBeGreaterThan(0);
      expect(e.clientCpuPct).toBeGreaterThan(0);
      expect(e.serverCpuPct).toBeGreaterThan(0);
    }
    const md = readFileSync(join(dir, "js-echo.md"), "utf8");
    expect(md).toMatch(/^## echo$/m);
    expect(md).toMatch(/^## js-echo /m);
    for (const t of jsTargets) expect(md).toMatch(new RegExp(`^\\| ${t} \\| 4 \\| 1024 \\|`, "m"));
    const svg = readFileSync(join(dir, "js-echo.svg"), "utf8");
    expect(svg).toContain("JS handler echo (js-echo) throughput");
  });
});

describe("bench usage errors exit 2 with one line naming the flag", () => {
  const cases: [string, string[]][] = [
    ["--reps", ["--reps", "0"]],
    ["--connections", ["--connections", "1,x"]],
    ["--targets", ["--targets", "nginx"]],
    ["--client-io", ["--client-io", "kqueue"]],
    ["--duration", ["--duration", "-2"]],
    ["--bogus", ["--bogus"]],
    ["--workload", ["--workload", "memcached"]],
    ["--pipeline", ["--workload", "resp", "--pipeline", "0"]],
    ["--target-workload", ["--target-workload", "nope=resp"]],
    ["--target-workload", ["--target", "x=true@9", "--target-workload", "x=http"]],
    ["--targets", ["--targets", "resp-redis-server"]],
    ["--baseline", ["--workload", "resp", "--baseline", "resp=bun-listen"]],
    ["--workload", ["--workload", "resp", "--targets", "bun-listen"]],
    ["--target-connections", ["--target-connections", "nope=1"]],
    ["--target-connections", ["--target-connections", "bun-listen=0"]],
  ];
  for (const [flag, args] of cases) {
    it(args.join(" "), async () => {
      const r = await bench(args, 15_000);
      expect(r.code).toBe(2);
      const lines = r.stderr.trimEnd().split("\n");
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(flag);
    });
  }
});

describe("bun run bench --target-connections with an external --target", () => {
  // An external echo server (the bench's Bun.listen echo, started through --target as any other
  // program would be) and a built-in, each with connection counts of its own.
  const out = join(dir, "peers.json");
  const result = (async () => {
    const port = await freePort();
    const cmd = `${process.execPath} ${resolve(REPO, "bench/servers/bun-listen.ts")} --port ${port}`;
    return bench(
      ["--targets", "bunring-epoll,ext", "--target", `ext=${cmd}@${port}`, "--connections", "1,4",
        "--target-connections", "ext=1", "--target-connections", "bunring-epoll=4,8",
        "--reps", "1", "--duration", "0.2", "--warmup", "0", "--out", out],
      60_000,
    );
  })();

  it("runs each target only at its own counts, in one rotation; the external server is the measured, pinned process", async () => {
    const r = await result;
    expect({ code: r.code, stderr: r.stderr.split("\n").filter((l) => l.startsWith("bench:") && !l.includes("wrote") && !l.startsWith("bench: warning:")) })
      .toEqual({ code: 0, stderr: [] });
    const doc = JSON.parse(readFileSync(out, "utf8"));
    expect(doc.samples.map((x: { target: string; connections: number }) => `${x.target}@${x.connections}`)).toEqual(
      ["ext@1", "bunring-epoll@4", "bunring-epoll@8"],
    );
    const ext = (doc.samples as { target: string; note: string | null; serverCpuUsPerReq: number | null; errors: number }[]).find((x) => x.target === "ext")!;
    expect(ext.note).toBeNull(); // not "measured pid ... is 'sh'/'taskset'"
    expect(ext.serverCpuUsPerReq).toBeGreaterThan(0);
    expect(ext.errors).toBe(0);
    if (Bun.which("taskset") && doc.settings.serverCpu !== null) expect(doc.settings.pinning).toBe("taskset");
  });
});
