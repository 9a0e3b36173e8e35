// bench.test.ts — `bun run bench` end to end on a tiny matrix: it starts each target as its own
// server process, runs the load generator against it, and writes the JSON document (in the shape
// the README promises), the Markdown table and the SVG chart; bad flags exit 2 with one line.
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
  target: string;
  connections: number;
  length: number;
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
    expect({ code: r.code, stderr: r.stderr.split("\n").filter((l) => l.startsWith("bench:") && !l.includes("wrote")) })
      .toEqual({ code: 0, stderr: [] });
    const doc = JSON.parse(readFileSync(out, "utf8"));
    expect(doc.command).toStartWith("bun run bench -- --targets");
    expect(doc.machine.cores).toBeGreaterThan(0);
    const runs = doc.runs as RunEntry[];
    expect(runs.map((e) => `${e.target}@${e.connections}`).sort()).toEqual(
      targets.flatMap((t) => [`${t}@1`, `${t}@8`]).sort(),
    );
    for (const e of runs) {
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

describe("bench usage errors exit 2 with one line naming the flag", () => {
  const cases: [string, string[]][] = [
    ["--reps", ["--reps", "0"]],
    ["--connections", ["--connections", "1,x"]],
    ["--targets", ["--targets", "nginx"]],
    ["--client-io", ["--client-io", "kqueue"]],
    ["--duration", ["--duration", "-2"]],
    ["--bogus", ["--bogus"]],
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
