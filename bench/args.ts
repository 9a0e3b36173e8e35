// args.ts — `bun run bench` flags: strict parsing, validation whose messages name the flag, the value
// and the allowed range (UsageError → exit 2), and the presets (--quick, --large) resolved into one
// plain settings object for run.ts: which workloads (echo, resp, js-echo), which targets speak each, the
// baseline of each workload, and the matrix (connections, lengths or pipeline depths, repetitions).
import { LOADGEN_LIMITS, type LoadgenIo } from "../ffi/loadgen.ts";
import { integerFlag, parseFlags, secondsFlag, UsageError } from "../src/flags.ts";
import { BUILTIN_NAMES, BUILTIN_WORKLOAD, parseTargetFlag, WORKLOAD_FAMILIES, type ExternalTarget, type WorkloadFamily } from "./targets.ts";
import { checkRespSizes, RESP_DEFAULTS, RESP_LIMITS } from "./workloads.ts";

export { UsageError };

export const USAGE = `Usage: bun run bench -- [options]

Runs every target server against the load generator: per workload, targets × connections × lengths
(echo) or pipeline depths (resp), targets interleaved (A B C D A B C D ...), each run on a fresh
server process pinned to CPU 0 with the client on the other CPUs. Prints one Markdown table per
workload; writes JSON, Markdown and SVG (one chart per workload).

Workloads:
  echo     the echo servers; each message comes back verified byte for byte (pipeline 1)
  resp     RESP2 servers, each run twice: resp-get (GETs of keys SET before the run, bulk replies
           verified) and resp-set (SETs, +OK verified), at every --pipeline depth: one handler
           module (examples/resp-server.ts's respHandler) on bunring's listen() (uring, epoll) and
           on Bun.listen, and a real redis-server when installed
  js-echo  echo traffic (as echo) served by one JS handler module (examples/js-echo.ts's
           echoHandler) on bunring's listen() (uring, epoll) and on Bun.listen; run together with
           echo, the two workloads' targets are interleaved in one rotation

Options:
  --workload LIST         echo (default), resp, js-echo, or a list such as echo,js-echo
  --quick                 connections 1,256 (echo, js-echo) and 1,50 (resp); 2 s runs, 0.5 s warm-up, 2 repetitions
  --large                 also 10000 connections
  --connections LIST      e.g. 1,256 (each 1..${LOADGEN_LIMITS.maxConnections}; default 1,256,512,1024 for echo,
                          1,50,256,1024 for resp; echo's for js-echo)
  --length LIST           echo message bytes, e.g. 1024 (default) or 64,1024 (each 1..${LOADGEN_LIMITS.maxLength})
  --pipeline LIST         resp: requests in flight per connection, e.g. 1,16 (default; each 1..${LOADGEN_LIMITS.maxPipeline})
  --key-space N           resp: keys, 1..${RESP_LIMITS.maxKeySpace} (default ${RESP_DEFAULTS.keySpace})
  --value-size N          resp: value bytes, 1..${RESP_LIMITS.maxValueSize} (default ${RESP_DEFAULTS.valueSize})
  --reps N                repetitions per cell, 1..100 (default 3)
  --duration S            measured seconds per run, 0.1..3600 (default 5)
  --warmup S              warm-up seconds per run, 0..60 (default 1)
  --client-threads N      load generator threads (default: one per client CPU)
  --client-io uring|epoll load generator I/O (default uring: one system call per batch of round
                          trips; epoll where the kernel refuses io_uring)
  --targets LIST          only these targets, e.g. bunring-uring,bun-listen (default: all)
  --target NAME=CMD@PORT  add an external server: CMD is run with sh -c 'exec CMD' (so the server
                          is the measured process) and must listen on 127.0.0.1:PORT (PORT is also
                          in its environment); an echo server unless --target-workload says; repeatable
  --target-workload NAME=resp   the external target NAME's workload (echo|resp|js-echo); repeatable
  --target-connections NAME=LIST  run target NAME (built-in or --target) only at these connection
                          counts, e.g. liburing-echo=1,256,512 for a server that cannot take 1024;
                          the others run at theirs (--connections or the defaults); repeatable
  --baseline LIST         ratios are relative to these targets, one per workload: workload=NAME
                          pairs (e.g. echo=bun-listen,resp=resp-redis-server) or a bare NAME for
                          its own workload (defaults: echo bun-listen, resp resp-bun-listen,
                          js-echo js-echo-bun-listen, else the first target of the workload)
  --out FILE              JSON results (default bench/results/latest.json); FILE.md and FILE.svg beside it
  -h, --help              show this help

Built-in targets: ${BUILTIN_NAMES.join(", ")}
`;

export interface BenchSettings {
  workloads: WorkloadFamily[];
  /** Connection counts per workload. */
  connections: Record<WorkloadFamily, number[]>;
  lengths: number[];
  pipelines: number[];
  keySpace: number;
  valueSize: number;
  reps: number;
  durationMs: number;
  warmupMs: number;
  clientThreads: number | null;
  clientIo: LoadgenIo;
  /** The targets to run, in order (each speaks one workload). */
  selected: string[];
  external: ExternalTarget[];
  /** Connection counts of single targets (--target-connections), in place of their workload's. */
  targetConnections: Record<string, number[]>;
  /** Baseline target per workload run. */
  baselines: Partial<Record<WorkloadFamily, string>>;
  out: string;
}

function integerList(flag: string, raw: string, min: number, max: number): number[] {
  const values = raw.split(",").map((part) => integerFlag(flag, part.trim(), min, max));
  return [...new Set(values)].sort((a, b) => a - b);
}


function workloadList(raw: string): WorkloadFamily[] {
  const out: WorkloadFamily[] = [];
  for (const part of raw.split(",").map((p) => p.trim())) {
    if (!(WORKLOAD_FAMILIES as readonly string[]).includes(part)) {
      throw new UsageError(`--workload must be a list of ${WORKLOAD_FAMILIES.join(", ")}, got ${JSON.stringify(raw)}`);
    }
    if (!out.includes(part as WorkloadFamily)) out.push(part as WorkloadFamily);
  }
  return out;
}

export function parseBenchArgs(argv: string[]): BenchSettings {
  const { values, positionals } = parseFlags(argv, {
    workload: { type: "string" },
    quick: { type: "boolean" },
    large: { type: "boolean" },
    connections: { type: "string" },
    length: { type: "string" },
    pipeline: { type: "string" },
    "key-space": { type: "string" },
    "value-size": { type: "string" },
    reps: { type: "string" },
    duration: { type: "string" },
    warmup: { type: "string" },
    "client-threads": { type: "string" },
    "client-io": { type: "string" },
    targets: { type: "string" },
    target: { type: "string", multiple: true },
    "target-workload": { type: "string", multiple: true },
    "target-connections": { type: "string", multiple: true },
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
  const workloads = values.workload === undefined ? (["echo"] as WorkloadFamily[]) : workloadList(values.workload);
  const explicit = values.connections === undefined ? null : integerList("--connections", values.connections, 1, LOADGEN_LIMITS.maxConnections);
  const connectionsFor = (defaults: number[], quickDefaults: number[]) => {
    const list = [...(explicit ?? (quick ? quickDefaults : defaults))];
    if (values.large && !list.includes(10_000)) list.push(10_000);
    return list;
  };
  const connections = {
    echo: connectionsFor([1, 256, 512, 1024], [1, 256]),
    resp: connectionsFor([1, 50, 256, 1024], [1, 50]),
    "js-echo": connectionsFor([1, 256, 512, 1024], [1, 256]),
  };

  const external = (values.target ?? []).map((raw) => parseTargetFlag(raw, UsageError));
  for (const [i, t] of external.entries()) {
    if ((BUILTIN_NAMES as readonly string[]).includes(t.name) || external.findIndex((u) => u.name === t.name) !== i) {
      throw new UsageError(`--target name ${JSON.stringify(t.name)} is already used; names must be unique and not ${BUILTIN_NAMES.join(", ")}`);
    }
  }
  for (const raw of values["target-workload"] ?? []) {
    const m = /^([^=]+)=(.*)$/.exec(raw);
    const t = m ? external.find((e) => e.name === m[1]) : undefined;
    if (!m || !t) {
      throw new UsageError(`--target-workload must be NAME=WORKLOAD for a NAME given with --target, got ${JSON.stringify(raw)}`);
    }
    if (!(WORKLOAD_FAMILIES as readonly string[]).includes(m[2]!)) {
      throw new UsageError(`--target-workload ${m[1]}: the workload must be one of ${WORKLOAD_FAMILIES.join(", ")}, got ${JSON.stringify(m[2])}`);
    }
    t.workload = m[2] as WorkloadFamily;
  }
  const workloadOf = new Map<string, WorkloadFamily>([
    ...BUILTIN_NAMES.map((n) => [n, BUILTIN_WORKLOAD[n]] as const),
    ...external.map((t) => [t.name, t.workload] as const),
  ]);
  const names = [...workloadOf.keys()];
  const only = values.targets === undefined ? null : values.targets.split(",").map((n) => n.trim());
  for (const name of only ?? []) {
    if (!workloadOf.has(name)) throw new UsageError(`--targets: unknown target ${JSON.stringify(name)}; known: ${names.join(", ")}`);
    const w = workloadOf.get(name)!;
    if (!workloads.includes(w)) throw new UsageError(`--targets: ${name} is a ${w} target; add --workload ${w} (workloads run: ${workloads.join(", ")})`);
  }
  const selected = (only ?? names).filter((n) => workloads.includes(workloadOf.get(n)!));
  for (const w of workloads) {
    if (!selected.some((n) => workloadOf.get(n) === w)) throw new UsageError(`--workload ${w}: no ${w} target is selected (see --targets)`);
  }

  const targetConnections: Record<string, number[]> = {};
  for (const raw of values["target-connections"] ?? []) {
    const m = /^([^=]+)=(.+)$/.exec(raw);
    if (!m || !selected.includes(m[1]!)) {
      throw new UsageError(`--target-connections must be NAME=LIST for a target being run (${selected.join(", ")}), got ${JSON.stringify(raw)}`);
    }
    targetConnections[m[1]!] = integerList(`--target-connections ${m[1]}`, m[2]!, 1, LOADGEN_LIMITS.maxConnections);
  }

  const baselines: Partial<Record<WorkloadFamily, string>> = {};
  for (const part of values.baseline === undefined ? [] : values.baseline.split(",").map((p) => p.trim())) {
    const m = /^([^=]+)=(.+)$/.exec(part);
    const name = m ? m[2]! : part;
    const w = m ? m[1]! : workloadOf.get(name);
    if (w === undefined || !(WORKLOAD_FAMILIES as readonly string[]).includes(w)) {
      throw new UsageError(`--baseline must be workload=NAME pairs (workloads: ${WORKLOAD_FAMILIES.join(", ")}) or target names, got ${JSON.stringify(part)}`);
    }
    if (!selected.includes(name) || workloadOf.get(name) !== w) {
      const among = selected.filter((n) => workloadOf.get(n) === w);
      throw new UsageError(`--baseline ${JSON.stringify(part)}: ${JSON.stringify(name)} is not among the ${w} targets being run: ${among.join(", ") || "none"}`);
    }
    baselines[w as WorkloadFamily] = name;
  }
  const defaultBaseline: Record<WorkloadFamily, string> = { echo: "bun-listen", resp: "resp-bun-listen", "js-echo": "js-echo-bun-listen" };
  for (const w of workloads) {
    const among = selected.filter((n) => workloadOf.get(n) === w);
    baselines[w] ??= among.includes(defaultBaseline[w]) ? defaultBaseline[w] : among[0]!;
  }
  const clientIo = values["client-io"] ?? "uring";
  if (clientIo !== "uring" && clientIo !== "epoll") {
    throw new UsageError(`--client-io must be uring or epoll, got ${JSON.stringify(clientIo)}`);
  }
  const keySpace = values["key-space"] === undefined ? RESP_DEFAULTS.keySpace : integerFlag("--key-space", values["key-space"], 1, RESP_LIMITS.maxKeySpace);
  const valueSize = values["value-size"] === undefined ? RESP_DEFAULTS.valueSize : integerFlag("--value-size", values["value-size"], 1, RESP_LIMITS.maxValueSize);
  checkRespSizes("--key-space × --value-size", keySpace, valueSize);
  const pipelines = values.pipeline === undefined ? [1, 16] : integerList("--pipeline", values.pipeline, 1, LOADGEN_LIMITS.maxPipeline);
  const respCounts = [...connections.resp, ...Object.entries(targetConnections).filter(([n]) => workloadOf.get(n) === "resp").flatMap(([, c]) => c)];
  const most = Math.max(...(workloads.includes("resp") ? respCounts : [1]));
  if (workloads.includes("resp") && most * Math.max(...pipelines) > LOADGEN_LIMITS.maxSlots) {
    throw new UsageError(`--pipeline ${Math.max(...pipelines)} × ${most} connections is more than ${LOADGEN_LIMITS.maxSlots} requests in flight`);
  }
  return {
    workloads,
    connections,
    lengths: values.length === undefined ? [1024] : integerList("--length", values.length, 1, LOADGEN_LIMITS.maxLength),
    pipelines,
    keySpace,
    valueSize,
    reps: values.reps === undefined ? (quick ? 2 : 3) : integerFlag("--reps", values.reps, 1, 100),
    durationMs: values.duration === undefined ? (quick ? 2000 : 5000) : secondsFlag("--duration", values.duration, 0.1, 3600),
    warmupMs: values.warmup === undefined ? (quick ? 500 : 1000) : secondsFlag("--warmup", values.warmup, 0, 60),
    clientThreads:
      values["client-threads"] === undefined ? null : integerFlag("--client-threads", values["client-threads"], 1, LOADGEN_LIMITS.maxThreads),
    clientIo,
    selected,
    external,
    targetConnections,
    baselines,
    out: values.out ?? "bench/results/latest.json",
  };
}
