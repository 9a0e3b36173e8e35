// args.ts — `bun run bench` flags: strict parsing, validation whose messages name the flag, the value
// and the allowed range (UsageError → exit 2), and the presets (--quick, --large) resolved into one
// plain settings object for run.ts.
import { LOADGEN_LIMITS, type LoadgenIo } from "../ffi/loadgen.ts";
import { parseFlags, UsageError } from "../src/flags.ts";
import { BUILTIN_NAMES, parseTargetFlag, type ExternalTarget } from "./targets.ts";

export { UsageError };

export const USAGE = `Usage: bun run bench -- [options]

Runs every target echo server against the shim's load generator: targets × connections × lengths,
targets interleaved (A B C D A B C D ...), each run on a fresh server process pinned to CPU 0 with
the client on the other CPUs. Prints a Markdown table; writes JSON, Markdown and SVG.

Options:
  --quick                 connections 1,256; 2 s runs, 0.5 s warm-up, 2 repetitions
  --large                 also 10000 connections
  --connections LIST      e.g. 1,256,512,1024 (default; each 1..${LOADGEN_LIMITS.maxConnections})
  --length LIST           message bytes, e.g. 1024 (default) or 64,1024 (each 1..${LOADGEN_LIMITS.maxLength})
  --reps N                repetitions per cell, 1..100 (default 3)
  --duration S            measured seconds per run, 0.1..3600 (default 5)
  --warmup S              warm-up seconds per run, 0..60 (default 1)
  --client-threads N      load generator threads (default: one per client CPU)
  --client-io uring|epoll load generator I/O (default uring: one system call per batch of round
                          trips; epoll where the kernel refuses io_uring)
  --targets LIST          only these targets, e.g. bunring-uring,bun-listen (default: all)
  --target NAME=CMD@PORT  add an external echo server: CMD is run with sh -c 'exec CMD' (so the
                          server is the measured process) and must listen on 127.0.0.1:PORT
                          (PORT is also in its environment); repeatable
  --baseline NAME         ratios are relative to this target (default bun-listen)
  --out FILE              JSON results (default bench/results/latest.json); FILE.md and FILE.svg beside it
  -h, --help              show this help

Built-in targets: ${BUILTIN_NAMES.join(", ")}
`;

export interface BenchSettings {
  connections: number[];
  lengths: number[];
  reps: number;
  durationMs: number;
  warmupMs: number;
  clientThreads: number | null;
  clientIo: LoadgenIo;
  only: string[] | null;
  external: ExternalTarget[];
  baseline: string;
  out: string;
}

function integer(flag: string, raw: string, min: number, max: number): number {
  const value = /^\d+$/.test(raw.trim()) ? Number(raw.trim()) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new UsageError(`${flag} must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

function integerList(flag: string, raw: string, min: number, max: number): number[] {
  const values = raw.split(",").map((part) => integer(flag, part, min, max));
  return [...new Set(values)].sort((a, b) => a - b);
}

function secondsMs(flag: string, raw: string, minS: number, maxS: number): number {
  const value = /^\d+(\.\d+)?$/.test(raw) ? Number(raw) : Number.NaN;
  if (!(value >= minS && value <= maxS)) {
    throw new UsageError(`${flag} must be a number of seconds from ${minS} to ${maxS}, got ${JSON.stringify(raw)}`);
  }
  return Math.round(value * 1000);
}

export function parseBenchArgs(argv: string[]): BenchSettings {
  const { values, positionals } = parseFlags(argv, {
    quick: { type: "boolean" },
    large: { type: "boolean" },
    connections: { type: "string" },
    length: { type: "string" },
    reps: { type: "string" },
    duration: { type: "string" },
    warmup: { type: "string" },
    "client-threads": { type: "string" },
    "client-io": { type: "string" },
    targets: { type: "string" },
    target: { type: "string", multiple: true },
    baseline: { type: "string" },
    out: { type: "string" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const quick = values.quick ?? false;
  const connections =
    values.connections === undefined
      ? quick
        ? [1, 256]
        : [1, 256, 512, 1024]
      : integerList("--connections", values.connections, 1, LOADGEN_LIMITS.maxConnections);
  if (values.large && !connections.includes(10_000)) connections.push(10_000);
  const external = (values.target ?? []).map((raw) => parseTargetFlag(raw, UsageError));
  const names = [...BUILTIN_NAMES, ...external.map((t) => t.name)];
  for (const [i, t] of external.entries()) {
    if ((BUILTIN_NAMES as readonly string[]).includes(t.name) || external.findIndex((u) => u.name === t.name) !== i) {
      throw new UsageError(`--target name ${JSON.stringify(t.name)} is already used; names must be unique and not ${BUILTIN_NAMES.join(", ")}`);
    }
  }
  const only = values.targets === undefined ? null : values.targets.split(",").map((n) => n.trim());
  for (const name of only ?? []) {
    if (!names.includes(name)) throw new UsageError(`--targets: unknown target ${JSON.stringify(name)}; known: ${names.join(", ")}`);
  }
  const selected = only ?? names;
  const baseline = values.baseline ?? (selected.includes("bun-listen") ? "bun-listen" : selected[0]!);
  if (!selected.includes(baseline)) {
    throw new UsageError(`--baseline ${JSON.stringify(baseline)} is not among the targets being run: ${selected.join(", ")}`);
  }
  const clientIo = values["client-io"] ?? "uring";
  if (clientIo !== "uring" && clientIo !== "epoll") {
    throw new UsageError(`--client-io must be uring or epoll, got ${JSON.stringify(clientIo)}`);
  }
  return {
    connections,
    lengths: values.length === undefined ? [1024] : integerList("--length", values.length, 1, LOADGEN_LIMITS.maxLength),
    reps: values.reps === undefined ? (quick ? 2 : 3) : integer("--reps", values.reps, 1, 100),
    durationMs: values.duration === undefined ? (quick ? 2000 : 5000) : secondsMs("--duration", values.duration, 0.1, 3600),
    warmupMs: values.warmup === undefined ? (quick ? 500 : 1000) : secondsMs("--warmup", values.warmup, 0, 60),
    clientThreads:
      values["client-threads"] === undefined ? null : integer("--client-threads", values["client-threads"], 1, LOADGEN_LIMITS.maxThreads),
    clientIo,
    only,
    external,
    baseline,
    out: values.out ?? "bench/results/latest.json",
  };
}
