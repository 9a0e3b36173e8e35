// report.ts — the bench's outputs: the JSON document (machine, command, settings, one entry per cell,
// and the raw runs) and the Markdown table printed at the end and written beside the JSON.
import type { MachineInfo } from "./procfs.ts";
import type { Cell, RunSample } from "./summary.ts";

export interface RunSettings {
  durationS: number;
  warmupS: number;
  reps: number;
  lengths: number[];
  connections: number[];
  serverCpu: number | null;
  clientCpus: number[];
  clientThreads: number;
  /** What the load generator's traffic ran on ("io_uring", "epoll"). */
  clientIo: string;
  pinning: string;
  baseline: string;
}

export interface BenchDocument {
  machine: MachineInfo;
  command: string;
  settings: RunSettings;
  targets: { name: string; command: string; skipped: string | null }[];
  runs: ReturnType<typeof cellJson>[];
  samples: RunSample[];
}

function cellJson(c: Cell) {
  return {
    target: c.target,
    connections: c.connections,
    length: c.length,
    reqPerSec: c.reqPerSec,
    serverCpuUsPerReq: c.serverCpuUsPerReq,
    latencyUs: c.latencyUs,
    serverRssMiB: c.serverRssMiB,
    errors: c.errors,
    reps: c.reps,
    failedRuns: c.failedRuns,
    clientCpuPct: c.clientCpuPct,
    vsBaseline: c.vsBaseline,
  };
}

export function benchDocument(
  machine: MachineInfo,
  command: string,
  settings: RunSettings,
  targets: BenchDocument["targets"],
  cells: Cell[],
  samples: RunSample[],
): BenchDocument {
  return { machine, command, settings, targets, runs: cells.map(cellJson), samples };
}

const group = (n: number) => Math.round(n).toLocaleString("en-US");
const fixed = (n: number | null | undefined, digits: number) => (n == null ? "–" : n.toFixed(digits));
const latency = (n: number | undefined) => (n === undefined ? "–" : n >= 100 ? n.toFixed(0) : n.toFixed(1));
const ratio = (n: number | null) => (n === null ? "–" : `${n.toFixed(2)}×`);

export function markdown(doc: BenchDocument, cells: Cell[]): string {
  const m = doc.machine;
  const s = doc.settings;
  const base = s.baseline;
  const pin =
    s.serverCpu === null
      ? "servers and client unpinned (one CPU only)"
      : `each server pinned to CPU ${s.serverCpu} (${s.pinning}), the load generator on CPU ${s.clientCpus.join(",")} ` +
        `(${s.clientThreads} thread${s.clientThreads === 1 ? "" : "s"}, ${s.clientIo})`;
  const skipped = doc.targets.filter((t) => t.skipped);
  const lines = [
    "# bunring echo benchmark",
    "",
    `Machine: ${m.cpuModel}, ${m.cores} cores, Linux ${m.kernel}, Bun ${m.bun}${m.node ? `, Node ${m.node}` : ""}; ${m.date}`,
    "",
    `Command: \`${doc.command}\``,
    "",
    `Each run starts a fresh server process; ${pin}. ${s.durationS} s measured after ${s.warmupS} s of warm-up, ` +
      `${s.reps} repetition${s.reps === 1 ? "" : "s"} per cell with the targets interleaved. req/s = verified round trips per second ` +
      `(median, min–max); server CPU = user+system time of the whole server process during the measured interval ` +
      `per round trip; latency = median over runs of each percentile; RSS = peak (VmHWM); client CPU = load ` +
      `generator time as % of one core (near 100% × threads means the client, not the server, was the limit). ` +
      `Ratios are against ${base}.`,
    "",
    `| target | conns | bytes | req/s | min–max | vs ${base} | server CPU µs/req | vs ${base} | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | RSS MiB | client CPU | errors |`,
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
  ];
  let clientBound = false;
  for (const c of cells) {
    const r = c.reqPerSec;
    // The load generator used (nearly) all of its CPU: this req/s is a floor set by the client.
    const saturated = c.clientCpuPct !== null && c.clientCpuPct >= 90 * Math.min(s.clientThreads, c.connections);
    clientBound ||= saturated;
    const errors = c.failedRuns > 0 ? `${c.errors} (${c.failedRuns} run${c.failedRuns === 1 ? "" : "s"} failed)` : String(c.errors);
    lines.push(
      `| ${c.target} | ${c.connections} | ${c.length} | ${r ? `${group(r.median)}${saturated ? " †" : ""}` : "–"} | ${r ? `${group(r.min)}–${group(r.max)}` : "–"} | ` +
        `${ratio(c.vsBaseline.reqPerSec)} | ${fixed(c.serverCpuUsPerReq, 2)} | ${ratio(c.vsBaseline.serverCpuPerReq)} | ` +
        `${latency(c.latencyUs?.p50)} | ${latency(c.latencyUs?.p90)} | ${latency(c.latencyUs?.p99)} | ` +
        `${latency(c.latencyUs?.p999)} | ${latency(c.latencyUs?.max)} | ${fixed(c.serverRssMiB, 1)} | ` +
        `${c.clientCpuPct === null ? "–" : `${c.clientCpuPct.toFixed(0)}%`} | ${errors} |`,
    );
  }
  if (clientBound) {
    lines.push(
      "",
      "† the load generator was at ≥ 90% of its CPU: the server may be faster than this req/s shows; " +
        "compare server CPU µs/req there.",
    );
  }
  if (skipped.length > 0) {
    lines.push("", ...skipped.map((t) => `Not run: ${t.name}: ${t.skipped}`));
  }
  const failures = doc.samples.filter((x) => x.failure);
  if (failures.length > 0) {
    lines.push("", "Failed runs:", ...failures.map((x) => `- ${x.target} c=${x.connections} len=${x.length} rep ${x.rep + 1}: ${x.failure}`));
  }
  return `${lines.join("\n")}\n`;
}
