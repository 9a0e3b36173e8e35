// summary.ts — turns individual runs into cells (workload × target × connections × length ×
// pipeline): req/s median, min and max; medians of the latency percentiles, of server CPU per
// request and of the client's and server's CPU shares; peak RSS; errors summed; the machine's load
// average at the cell's start and end and the other processes that competed; and the ratios of req/s
// and CPU per request to the baseline target's cell of the same workload.
import type { Competitor } from "./procfs.ts";

/** echo, js-echo (echo traffic to JS handlers), or one of the request/response workloads (resp-get, resp-set). */
export type RunWorkload = "echo" | "js-echo" | "resp-get" | "resp-set";
export type Family = "echo" | "resp" | "js-echo";

/** The family whose baseline a workload's ratios use (resp-get and resp-set: resp). */
export function familyOf(w: RunWorkload): Family {
  return w === "resp-get" || w === "resp-set" ? "resp" : w;
}

/** Order of the workloads in tables and charts. */
export const WORKLOAD_ORDER: readonly RunWorkload[] = ["echo", "js-echo", "resp-get", "resp-set"];

/** One run: one fresh server, one load. reqPerSec counts verified replies per second. */
export interface RunSample {
  workload: RunWorkload;
  target: string;
  connections: number;
  /** echo: message bytes; resp: value bytes. */
  length: number;
  /** Requests in flight per connection. */
  pipeline: number;
  rep: number;
  /** null: the run failed (server did not start, load could not run); see failure. */
  reqPerSec: number | null;
  serverCpuUsPerReq: number | null;
  /** The load generator's CPU over the interval, as % of one core (is the client the bottleneck?). */
  clientCpuPct: number | null;
  /** The server process's CPU over the interval, as % of one core. */
  serverCpuPct: number | null;
  latencyUs: Latency | null;
  serverRssMiB: number | null;
  /** How late the CPU samples were taken after the interval edges (µs): the CPU figures' timing error. */
  edgeSkewUs: number | null;
  /** 1-minute load average just before the server started and just after the load ended. */
  loadAvg: { start: number | null; end: number | null };
  /** Other processes that used > 10 % of a core during the load. */
  competitors: Competitor[];
  errors: number;
  failure: string | null;
  note: string | null;
}

export interface Latency {
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

export interface Cell {
  workload: RunWorkload;
  target: string;
  connections: number;
  length: number;
  pipeline: number;
  reps: number;
  reqPerSec: { median: number; min: number; max: number } | null;
  serverCpuUsPerReq: number | null;
  latencyUs: Latency | null;
  serverRssMiB: number | null;
  clientCpuPct: number | null;
  serverCpuPct: number | null;
  /** Load average before the cell's first run and after its last. */
  loadAvg: { start: number | null; end: number | null };
  /** Other processes that competed in any of its runs (highest share per process). */
  competitors: Competitor[];
  errors: number;
  failedRuns: number;
  /** This cell over the baseline's cell: req/s medians, and CPU per request. */
  vsBaseline: { baseline: string; reqPerSec: number | null; serverCpuPerReq: number | null };
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function medianOrNull(values: (number | null)[]): number | null {
  const present = values.filter((v): v is number => v !== null);
  return present.length > 0 ? median(present) : null;
}

/** baselines: target per family ("echo", "resp", "js-echo"). Samples are in run order. */
export function summarize(samples: RunSample[], targetOrder: string[], baselines: Partial<Record<Family, string>>): Cell[] {
  const key = (w: string, t: string, c: number, l: number, p: number) => `${w}\u0000${t}\u0000${c}\u0000${l}\u0000${p}`;
  const groups = new Map<string, RunSample[]>();
  for (const s of samples) {
    const k = key(s.workload, s.target, s.connections, s.length, s.pipeline);
    groups.set(k, [...(groups.get(k) ?? []), s]);
  }
  const cells: Cell[] = [];
  for (const runs of groups.values()) {
    const first = runs[0]!;
    const ok = runs.filter((r) => r.reqPerSec !== null);
    const rates = ok.map((r) => r.reqPerSec!);
    const lat = ok.map((r) => r.latencyUs).filter((l): l is Latency => l !== null);
    const rss = ok.map((r) => r.serverRssMiB).filter((v): v is number => v !== null);
    const competitors = new Map<number, Competitor>();
    for (const c of runs.flatMap((r) => r.competitors)) {
      if ((competitors.get(c.pid)?.cpuPct ?? -1) < c.cpuPct) competitors.set(c.pid, c);
    }
    cells.push({
      workload: first.workload,
      target: first.target,
      connections: first.connections,
      length: first.length,
      pipeline: first.pipeline,
      reps: runs.length,
      reqPerSec: rates.length > 0 ? { median: median(rates), min: Math.min(...rates), max: Math.max(...rates) } : null,
      serverCpuUsPerReq: medianOrNull(ok.map((r) => r.serverCpuUsPerReq)),
      latencyUs:
        lat.length > 0
          ? {
              p50: median(lat.map((l) => l.p50)),
              p90: median(lat.map((l) => l.p90)),
              p99: median(lat.map((l) => l.p99)),
              p999: median(lat.map((l) => l.p999)),
              max: median(lat.map((l) => l.max)),
            }
          : null,
      serverRssMiB: rss.length > 0 ? Math.max(...rss) : null,
      clientCpuPct: medianOrNull(ok.map((r) => r.clientCpuPct)),
      serverCpuPct: medianOrNull(ok.map((r) => r.serverCpuPct)),
      loadAvg: { start: first.loadAvg.start, end: runs[runs.length - 1]!.loadAvg.end },
      competitors: [...competitors.values()].sort((a, b) => b.cpuPct - a.cpuPct),
      errors: runs.reduce((n, r) => n + r.errors, 0),
      failedRuns: runs.length - ok.length,
      vsBaseline: { baseline: baselines[familyOf(first.workload)] ?? "", reqPerSec: null, serverCpuPerReq: null },
    });
  }
  const byKey = new Map(cells.map((c) => [key(c.workload, c.target, c.connections, c.length, c.pipeline), c]));
  for (const c of cells) {
    const base = byKey.get(key(c.workload, c.vsBaseline.baseline, c.connections, c.length, c.pipeline));
    const ratio = (a: number | null | undefined, b: number | null | undefined) => (a != null && b != null && b > 0 ? a / b : null);
    c.vsBaseline.reqPerSec = ratio(c.reqPerSec?.median, base?.reqPerSec?.median);
    c.vsBaseline.serverCpuPerReq = ratio(c.serverCpuUsPerReq, base?.serverCpuUsPerReq);
  }
  const order = (t: string) => {
    const i = targetOrder.indexOf(t);
    return i < 0 ? targetOrder.length : i;
  };
  const wOrder = (w: RunWorkload) => WORKLOAD_ORDER.indexOf(w);
  return cells.sort(
    (a, b) =>
      wOrder(a.workload) - wOrder(b.workload) ||
      a.length - b.length ||
      a.pipeline - b.pipeline ||
      a.connections - b.connections ||
      order(a.target) - order(b.target),
  );
}
