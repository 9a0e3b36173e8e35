// report.ts — the bench's outputs: the JSON document (machine, command, settings, one entry per cell,
// the raw runs, and warnings about other load on the machine) and the Markdown printed at the end and
// written beside the JSON: one table per workload (echo, js-echo, resp-get, resp-set), each figure
// next to the client's and the server's CPU share and the load average at the cell's start and end.
import type { MachineInfo } from "./procfs.ts";
import { WORKLOAD_ORDER, type Cell, type RunSample, type RunWorkload } from "./summary.ts";

export interface RunSettings {
  workloads: string[];
  durationS: number;
  warmupS: number;
  reps: number;
  lengths: number[];
  /** Connection counts per workload family. */
  connections: Record<string, number[]>;
  /** resp: requests in flight per connection; echo always runs 1. */
  pipelines: number[];
  keySpace: number;
  valueSize: number;
  serverCpu: number | null;
  clientCpus: number[];
  clientThreads: number;
  /** What the load generator's traffic ran on ("io_uring", "epoll"). */
  clientIo: string;
  pinning: string;
  /** Baseline target per workload family. */
  baselines: Record<string, string>;
}

export interface BenchDocument {
  machine: MachineInfo;
  command: string;
  settings: RunSettings;
  targets: { name: string; workload: string; command: string; skipped: string | null }[];
  runs: ReturnType<typeof cellJson>[];
  samples: RunSample[];
  /** Other load on the machine that may have skewed the figures. */
  warnings: string[];
}

function cellJson(c: Cell) {
  return {
    workload: c.workload,
    target: c.target,
    connections: c.connections,
    length: c.length,
    pipeline: c.pipeline,
    reqPerSec: c.reqPerSec,
    serverCpuUsPerReq: c.serverCpuUsPerReq,
    latencyUs: c.latencyUs,
    serverRssMiB: c.serverRssMiB,
    errors: c.errors,
    reps: c.reps,
    failedRuns: c.failedRuns,
    clientCpuPct: c.clientCpuPct,
    serverCpuPct: c.serverCpuPct,
    loadAvg: c.loadAvg,
    competitors: c.competitors,
    vsBaseline: c.vsBaseline,
  };
}

/** A cell's label in warnings. */
export function cellLabel(c: { workload: RunWorkload; target: string; connections: number; length: number; pipeline: number }): string {
  return c.workload === "echo" || c.workload === "js-echo"
    ? `${c.target} ${c.workload} c=${c.connections} len=${c.length}`
    : `${c.target} ${c.workload} c=${c.connections} P=${c.pipeline}`;
}

/**
 * Warnings about load the bench does not explain: another process over 10 % of a core during a
 * cell's runs, or a load average above what the bench's own busy threads (the server's loop and the
 * load generator's threads) account for.
 */
export function loadWarnings(cells: Cell[], busyThreads: number): string[] {
  const out: string[] = [];
  for (const c of cells) {
    for (const p of c.competitors) {
      out.push(`${cellLabel(c)}: another process competed: pid ${p.pid} (${p.comm}) used ${p.cpuPct.toFixed(0)}% of a core`);
    }
    const worst = Math.max(c.loadAvg.start ?? 0, c.loadAvg.end ?? 0);
    if (worst > busyThreads + 1) {
      out.push(`${cellLabel(c)}: load average ${worst.toFixed(2)} is above the ~${busyThreads} the bench's own threads explain`);
    }
  }
  const LIMIT = 30;
  return out.length > LIMIT ? [...out.slice(0, LIMIT), `... and ${out.length - LIMIT} more (see the JSON)`] : out;
}

export function benchDocument(
  machine: MachineInfo,
  command: string,
  settings: RunSettings,
  targets: BenchDocument["targets"],
  cells: Cell[],
  samples: RunSample[],
  warnings: string[],
): BenchDocument {
  return { machine, command, settings, targets, runs: cells.map(cellJson), samples, warnings };
}

const group = (n: number) => Math.round(n).toLocaleString("en-US");
const fixed = (n: number | null | undefined, digits: number) => (n == null ? "–" : n.toFixed(digits));
const latency = (n: number | undefined) => (n === undefined ? "–" : n >= 100 ? n.toFixed(0) : n.toFixed(1));
const ratio = (n: number | null) => (n === null ? "–" : `${n.toFixed(2)}×`);
const pct = (n: number | null) => (n === null ? "–" : `${n.toFixed(0)}%`);
const load = (l: Cell["loadAvg"]) => `${fixed(l.start, 2)}→${fixed(l.end, 2)}`;

const TITLES: Record<RunWorkload, string> = {
  echo: "echo",
  "js-echo": "js-echo (echo traffic; one handler module, examples/js-echo.ts's echoHandler, on bunring's listen() and on Bun.listen)",
  "resp-get": "resp-get (RESP2 GET of keys SET before the run; bulk replies verified)",
  "resp-set": "resp-set (RESP2 SET; +OK verified)",
};

function table(doc: BenchDocument, cells: Cell[], workload: RunWorkload): string[] {
  const s = doc.settings;
  const base = cells[0]?.vsBaseline.baseline ?? "";
  const echo = workload === "echo" || workload === "js-echo";
  const lines = [
    `## ${TITLES[workload]}`,
    "",
    echo
      ? `Ratios are against ${base}.`
      : `${s.keySpace} keys, ${s.valueSize}-byte values; P = requests in flight per connection. Ratios are against ${base}.`,
    "",
    `| target | conns | ${echo ? "bytes" : "P"} | req/s | min–max | vs ${base} | server CPU µs/req | vs ${base} | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | RSS MiB | client CPU | server CPU | load avg | errors |`,
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
  ];
  let clientBound = false;
  for (const c of cells) {
    const r = c.reqPerSec;
    // The load generator used (nearly) all of its CPU: this req/s is a floor set by the client.
    const saturated = c.clientCpuPct !== null && c.clientCpuPct >= 90 * Math.min(s.clientThreads, c.connections);
    clientBound ||= saturated;
    const errors = c.failedRuns > 0 ? `${c.errors} (${c.failedRuns} run${c.failedRuns === 1 ? "" : "s"} failed)` : String(c.errors);
    lines.push(
      `| ${c.target} | ${c.connections} | ${echo ? c.length : c.pipeline} | ` +
        `${r ? `${group(r.median)}${saturated ? " †" : ""}` : "–"} | ${r ? `${group(r.min)}–${group(r.max)}` : "–"} | ` +
        `${ratio(c.vsBaseline.reqPerSec)} | ${fixed(c.serverCpuUsPerReq, 2)} | ${ratio(c.vsBaseline.serverCpuPerReq)} | ` +
        `${latency(c.latencyUs?.p50)} | ${latency(c.latencyUs?.p90)} | ${latency(c.latencyUs?.p99)} | ` +
        `${latency(c.latencyUs?.p999)} | ${latency(c.latencyUs?.max)} | ${fixed(c.serverRssMiB, 1)} | ` +
        `${pct(c.clientCpuPct)} | ${pct(c.serverCpuPct)} | ${load(c.loadAvg)}${c.competitors.length > 0 ? " ⚠" : ""} | ${errors} |`,
    );
  }
  if (clientBound) {
    lines.push(
      "",
      "† the load generator was at ≥ 90% of its CPU: the server may be faster than this req/s shows; " +
        "compare server CPU µs/req there.",
    );
  }
  if (cells.some((c) => c.competitors.length > 0)) lines.push("", "⚠ another process used > 10% of a core during this cell (see Warnings).");
  return lines;
}

export function markdown(doc: BenchDocument, cells: Cell[]): string {
  const m = doc.machine;
  const s = doc.settings;
  const pin =
    s.serverCpu === null
      ? "servers and client unpinned (one CPU only)"
      : `each server pinned to CPU ${s.serverCpu} (${s.pinning}), the load generator on CPU ${s.clientCpus.join(",")} ` +
        `(${s.clientThreads} thread${s.clientThreads === 1 ? "" : "s"}, ${s.clientIo})`;
  const skipped = doc.targets.filter((t) => t.skipped);
  const lines = [
    "# bunring benchmark",
    "",
    `Machine: ${m.cpuModel}, ${m.cores} cores, Linux ${m.kernel}, Bun ${m.bun}${m.node ? `, Node ${m.node}` : ""}; ${m.date}`,
    "",
    `Command: \`${doc.command}\``,
    "",
    `Each run starts a fresh server process; ${pin}. ${s.durationS} s measured after ${s.warmupS} s of warm-up, ` +
      `${s.reps} repetition${s.reps === 1 ? "" : "s"} per cell with the targets interleaved. req/s = verified replies per second ` +
      `(median, min–max); server CPU µs/req = user+system time of the whole server process during the measured interval ` +
      `per reply; latency = per request, its send to its whole reply, median over runs of each percentile; RSS = peak (VmHWM); ` +
      `client CPU / server CPU = load generator / server process time as % of one core (client near 100% × threads ` +
      `means the client, not the server, was the limit); load avg = 1-minute load average before the cell's first run → ` +
      `after its last.`,
  ];
  for (const workload of WORKLOAD_ORDER) {
    const these = cells.filter((c) => c.workload === workload);
    if (these.length > 0) lines.push("", ...table(doc, these, workload));
  }
  if (skipped.length > 0) {
    lines.push("", ...skipped.map((t) => `Not run: ${t.name}: ${t.skipped}`));
  }
  const failures = doc.samples.filter((x) => x.failure);
  if (failures.length > 0) {
    lines.push(
      "",
      "Failed runs:",
      ...failures.map((x) => `- ${x.target} ${x.workload} c=${x.connections} len=${x.length} P=${x.pipeline} rep ${x.rep + 1}: ${x.failure}`),
    );
  }
  if (doc.warnings.length > 0) lines.push("", "Warnings (other load on the machine):", ...doc.warnings.map((w) => `- ${w}`));
  return `${lines.join("\n")}\n`;
}
