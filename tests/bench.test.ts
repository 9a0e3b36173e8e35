// bench.test.ts — `bun run bench` end to end on a tiny matrix: it starts each target as its own
// server process, runs the load generator against it, and writes the JSON document (in the shape
// the README promises), the Markdown table and the SVG chart; bad flags exit 2 with one line.
// A tiny --workload resp run (resp-bun-listen, and resp-redis-server when installed) writes the same
// documents with a workload and pipeline per entry, one table per workload, and the machine's load.
// A tiny --workload echo,js-echo run: the js-echo targets (one handler module on bunring's listen()
// and on Bun.listen) in one rotation with a C echo target, ratios against js-echo-bun-listen.
// Speed is not asserted here: that is what the benchmark itself reports.
import { afterAll, describe, expect, it, setDefaultTimeout } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
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

describe("bun run bench --workload resp on a tiny matrix", () => {
  const out = join(dir, "resp.json");
  const redis = Bun.which("redis-server") !== null;
  const targets = ["resp-bun-listen", ...(redis ? ["resp-redis-server"] : [])];
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
    const keys = runs.map((e) => `${e.workload}/${e.target}@${e.connections}/P${e.pipeline}`).sort();
    const want = ["resp-get", "resp-set"].flatMap((w) => targets.flatMap((t) => [1, 4].flatMap((c) => [1, 4].map((p) => `${w}/${t}@${c}/P${p}`))));
    expect(keys).toEqual(want.sort());
    for (const e of runs) {
      expect(e.errors).toBe(0);
      expect(e.reqPerSec.min).toBeGreaterThan(0);
      expect(e.vsBaseline.baseline).toBe("resp-bun-listen");
      if (e.target === "resp-bun-listen") expect(e.vsBaseline.reqPerSec).toBe(1);
      expect(e.clientCpuPct).toBeGreaterThan(0);
      expect(e.serverCpuPct).toBeGreaterThan(0);
      expect(e.loadAvg.start).toBeGreaterThanOrEqual(0);
      expect(e.loadAvg.end).toBeGreaterThanOrEqual(0);
      expect(Array.isArray(e.competitors)).toBe(true);
    }
    const md = readFileSync(join(dir, "resp.md"), "utf8");
    expect(md).toMatch(/^## resp-get /m);
    expect(md).toMatch(/^## resp-set /m);
    expect(md).toMatch(/^\| resp-bun-listen \| 4 \| 4 \|/m);
    const svg = readFileSync(join(dir, "resp.svg"), "utf8");
    expect(svg).toContain("resp-get throughput");
    expect(svg).toContain("resp-set throughput");
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
