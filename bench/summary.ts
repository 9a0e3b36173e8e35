// summary.ts — turns individual runs into cells (target × connections × length): req/s median, min and
// max; medians of the latency percentiles and of server CPU per request; peak RSS; errors summed;
// and the ratios of req/s and CPU per request to the baseline target's cell.

/** One run: one fresh server, one load. reqPerSec counts verified round trips per second. */
export interface RunSample {
  target: string;
  connections: number;
  length: number;
  rep: number;
  /** null: the run failed (server did not start, load could not run); see failure. */
  reqPerSec: number | null;
  serverCpuUsPerReq: number | null;
  /** The load generator's CPU over the interval, as % of one core (is the client the bottleneck?). */
  clientCpuPct: number | null;
  latencyUs: Latency | null;
  serverRssMiB: number | null;
  /** How late the CPU samples were taken after the interval edges (µs): the CPU figures' timing error. */
  edgeSkewUs: number | null;
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
  target: string;
  connections: number;
  length: number;
  reps: number;
  reqPerSec: { median: number; min: number; max: number } | null;
  serverCpuUsPerReq: number | null;
  latencyUs: Latency | null;
  serverRssMiB: number | null;
  clientCpuPct: number | null;
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

export function summarize(samples: RunSample[], targetOrder: string[], baseline: string): Cell[] {
  const key = (t: string, c: number, l: number) => `${t}\u0000${c}\u0000${l}`;
  const groups = new Map<string, RunSample[]>();
  for (const s of samples) {
    const k = key(s.target, s.connections, s.length);
    groups.set(k, [...(groups.get(k) ?? []), s]);
  }
  const cells: Cell[] = [];
  for (const runs of groups.values()) {
    const first = runs[0]!;
    const ok = runs.filter((r) => r.reqPerSec !== null);
    const rates = ok.map((r) => r.reqPerSec!);
    const lat = ok.map((r) => r.latencyUs).filter((l): l is Latency => l !== null);
    const rss = ok.map((r) => r.serverRssMiB).filter((v): v is number => v !== null);
    cells.push({
      target: first.target,
      connections: first.connections,
      length: first.length,
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
      errors: runs.reduce((n, r) => n + r.errors, 0),
      failedRuns: runs.length - ok.length,
      vsBaseline: { baseline, reqPerSec: null, serverCpuPerReq: null },
    });
  }
  const byKey = new Map(cells.map((c) => [key(c.target, c.connections, c.length), c]));
  for (const c of cells) {
    const base = byKey.get(key(baseline, c.connections, c.length));
    const ratio = (a: number | null | undefined, b: number | null | undefined) => (a != null && b != null && b > 0 ? a / b : null);
    c.vsBaseline.reqPerSec = ratio(c.reqPerSec?.median, base?.reqPerSec?.median);
    c.vsBaseline.serverCpuPerReq = ratio(c.serverCpuUsPerReq, base?.serverCpuUsPerReq);
  }
  const order = (t: string) => {
    const i = targetOrder.indexOf(t);
    return i < 0 ? targetOrder.length : i;
  };
  return cells.sort((a, b) => a.length - b.length || a.connections - b.connections || order(a.target) - order(b.target));
}
