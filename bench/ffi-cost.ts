// ffi-cost.ts — what controlling a native server from TS costs: serve() until listening, stop() until
// the loop threads are joined, and one stats() read. Reports medians (and p90) over many rounds.
//   bun run bench:ffi [-- --rounds 200]
import { parseArgs } from "node:util";
import { serve, type Backend } from "../src/index.ts";

const { values } = parseArgs({ options: { rounds: { type: "string", default: "100" } }, strict: true });
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 100_000) {
  console.error(`--rounds must be an integer from 1 to 100000, got ${JSON.stringify(values.rounds)}`);
  process.exit(2);
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

function summary(samples: number[]): { median: number; p90: number } {
  const s = [...samples].sort((a, b) => a - b);
  return { median: quantile(s, 0.5), p90: quantile(s, 0.9) };
}

function fmt(ms: number): string {
  return ms < 0.01 ? `${(ms * 1000).toFixed(2)} µs` : `${ms.toFixed(3)} ms`;
}

for (const backend of ["uring", "epoll"] as Backend[]) {
  const start: number[] = [];
  const stop: number[] = [];
  const stats: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    const server = serve({ backend, port: 0 });
    const t1 = performance.now();
    const reads = 1000;
    const t2 = performance.now();
    for (let k = 0; k < reads; k++) server.stats();
    const t3 = performance.now();
    await server.stop({ drainMs: 0 });
    const t4 = performance.now();
    start.push(t1 - t0);
    stats.push((t3 - t2) / reads);
    stop.push(t4 - t3);
  }
  const a = summary(start);
  const b = summary(stop);
  const c = summary(stats);
  console.log(
    `${backend.padEnd(5)}  start→listening median ${fmt(a.median)} (p90 ${fmt(a.p90)})   ` +
      `stop→joined median ${fmt(b.median)} (p90 ${fmt(b.p90)})   stats() median ${fmt(c.median)} (p90 ${fmt(c.p90)})   [${rounds} rounds]`,
  );
}
