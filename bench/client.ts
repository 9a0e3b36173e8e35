// client.ts — `bun run client`: the benchmark client, rust_echo_bench's CLI and output on top of the
// load generator (bench/loadgen/, bound by ffi/loadgen.ts), for echo (the default), a custom
// request/reply, or the RESP2 presets (bench/workloads.ts), with optional pipelining. Benchmark
// equipment, not part of the package: it lives in bench/ with the rest of it. Parses and validates
// every flag (usage errors exit 2), prepares the workload (resp-get SETs its keys), runs the load on
// native threads while showing progress on stderr, then prints rust_echo_bench's lines (or --json).
// Exit status: 0 clean run, 1 a run with errors (connect, mismatch, short read, extra bytes, I/O) or
// a failed run.
import { isIPv4, isIPv6 } from "node:net";
import { cpus as osCpus } from "node:os";
import { parseCpuList } from "../src/cpus.ts";
import { integerFlag, parseFlags, secondsFlag, UsageError } from "../src/flags.ts";
import { LOADGEN_LIMITS, runLoadgen, type LoadgenOptions, type LoadgenProgress, type LoadgenResult } from "../ffi/loadgen.ts";
import {
  bytesArg,
  checkRespSizes,
  customWorkload,
  RESP_DEFAULTS,
  RESP_LIMITS,
  RESP_PRESETS,
  respWorkload,
  type RespPreset,
  type Workload,
} from "./workloads.ts";

const DEFAULTS = { address: "127.0.0.1:6379", number: 50, duration: 10, length: 512, threads: 1, warmup: 1, connectTimeout: 10, pipeline: 1 };

const USAGE = `Usage: bun run client -- [options]

Benchmark client. By default rust_echo_bench's workload: N connections each write a message, read
it back, verify it byte for byte, and repeat. --request/--expect or --protocol send other requests
and verify each reply byte for byte; --pipeline keeps several requests in flight per connection.
Only replies completed inside the measured interval count.

Options:
  -a, --address ADDR        server as IPv4:port, [IPv6]:port or localhost:port (default ${DEFAULTS.address})
  -n, --number N            connections, 1..${LOADGEN_LIMITS.maxConnections} (default ${DEFAULTS.number})
  -d, --duration S          measured seconds, 0.01..${LOADGEN_LIMITS.maxDurationMs / 1000} (default ${DEFAULTS.duration})
  -l, --length N            message bytes, 1..${LOADGEN_LIMITS.maxLength} (default ${DEFAULTS.length})
  -t, --threads N           client threads, 1..${LOADGEN_LIMITS.maxThreads} and at most --number (default ${DEFAULTS.threads})
      --cpu LIST            pin client thread i to the i-th CPU of LIST, e.g. 1 or 1,2 or 1-3
      --warmup S            seconds of traffic before measuring, 0..${LOADGEN_LIMITS.maxWarmupMs / 1000} (default ${DEFAULTS.warmup})
      --connect-timeout S   connect phase limit, 0.01..${LOADGEN_LIMITS.maxConnectTimeoutMs / 1000} (default ${DEFAULTS.connectTimeout})
      --pipeline N          requests in flight per connection, 1..${LOADGEN_LIMITS.maxPipeline} (default ${DEFAULTS.pipeline})
      --request STR         send STR instead of echo messages (escapes \\r \\n \\t \\\\ \\xHH; @FILE: the file's bytes)
      --expect STR          the reply every --request must get, byte for byte (same syntax)
      --protocol P          a RESP2 preset: resp-ping (PING, +PONG), resp-get (SETs its keys first, then
                            GETs them: bulk reply), resp-set (SET, +OK)
      --key-space N         resp-get/resp-set: keys key:000000.., 1..${RESP_LIMITS.maxKeySpace} (default ${RESP_DEFAULTS.keySpace})
      --value-size N        resp-get/resp-set: value bytes, 1..${RESP_LIMITS.maxValueSize} (default ${RESP_DEFAULTS.valueSize})
      --server-pid PID      also report that process's CPU time per request
      --io uring|epoll      client I/O: io_uring (default; epoll where the kernel refuses it) or epoll
      --json                print one JSON object instead of text
  -h, --help                show this help
`;


/** "1", "1,2", "1-3", "0,2-3" (src/cpus.ts parses it): CPU numbers this machine has. */
export function cpuListFlag(flag: string, raw: string): number[] {
  const cpus = parseCpuList(raw);
  if (!cpus) throw new UsageError(`${flag} must be a list of CPU numbers like 1 or 1,2 or 1-3, got ${JSON.stringify(raw)}`);
  const last = osCpus().length - 1;
  const bad = cpus.find((cpu) => cpu > last);
  if (bad !== undefined) throw new UsageError(`${flag}: CPU ${bad} does not exist; this machine has CPUs 0 to ${last}`);
  if (cpus.length > LOADGEN_LIMITS.maxCpus) throw new UsageError(`${flag} lists ${cpus.length} CPUs, at most ${LOADGEN_LIMITS.maxCpus}`);
  return cpus;
}

/** IPv4:port, [IPv6]:port or localhost:port. */
export function parseAddress(flag: string, raw: string): { host: string; port: number } {
  const bad = () =>
    new UsageError(`${flag} must be IPv4:port, [IPv6]:port or localhost:port with a port from 1 to 65535, got ${JSON.stringify(raw)}`);
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(raw) ?? /^([^:[\]]+):(\d+)$/.exec(raw);
  if (!m) throw bad();
  const host = m[1] === "localhost" ? "127.0.0.1" : m[1]!;
  const bracketed = raw.startsWith("[");
  if (bracketed ? !isIPv6(host) : !isIPv4(host)) throw bad();
  const port = Number(m[2]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad();
  return { host, port };
}

interface ClientArgs {
  load: LoadgenOptions;
  workload: Workload;
  address: string;
  json: boolean;
}

/** The workload the flags ask for; the conflicting combinations are usage errors. */
function workloadOf(values: Record<string, string | boolean | undefined>): Workload {
  const given = (name: string) => values[name] !== undefined;
  const protocol = values.protocol as string | undefined;
  if (protocol !== undefined) {
    if (!(RESP_PRESETS as readonly string[]).includes(protocol)) {
      throw new UsageError(`--protocol must be one of ${RESP_PRESETS.join(", ")}, got ${JSON.stringify(protocol)}`);
    }
    for (const flag of ["request", "expect", "length"]) {
      if (given(flag)) throw new UsageError(`--${flag} cannot be combined with --protocol (the preset sets the bytes)`);
    }
  } else {
    for (const flag of ["key-space", "value-size"]) {
      if (given(flag)) throw new UsageError(`--${flag} needs --protocol resp-get or resp-set`);
    }
  }
  if (protocol !== undefined) {
    const preset = protocol as RespPreset;
    if (preset === "resp-ping") {
      for (const flag of ["key-space", "value-size"]) {
        if (given(flag)) throw new UsageError(`--${flag} needs --protocol resp-get or resp-set, not resp-ping`);
      }
      return respWorkload(preset);
    }
    const keySpace = integerFlag("--key-space", (values["key-space"] as string | undefined) ?? String(RESP_DEFAULTS.keySpace), 1, RESP_LIMITS.maxKeySpace);
    const valueSize = integerFlag("--value-size", (values["value-size"] as string | undefined) ?? String(RESP_DEFAULTS.valueSize), 1, RESP_LIMITS.maxValueSize);
    checkRespSizes("--key-space × --value-size", keySpace, valueSize);
    return respWorkload(preset, keySpace, valueSize);
  }
  if (given("request") !== given("expect")) {
    throw new UsageError(given("request") ? "--request needs --expect (the reply to verify)" : "--expect needs --request");
  }
  if (given("request")) {
    if (given("length")) throw new UsageError("--length cannot be combined with --request (the request sets the bytes)");
    return customWorkload(bytesArg("--request", values.request as string), bytesArg("--expect", values.expect as string));
  }
  return { name: "echo" };
}

function parse(argv: string[]): ClientArgs {
  const { values, positionals } = parseFlags(argv, {
    address: { type: "string", short: "a" },
    number: { type: "string", short: "n" },
    duration: { type: "string", short: "d" },
    length: { type: "string", short: "l" },
    threads: { type: "string", short: "t" },
    cpu: { type: "string" },
    warmup: { type: "string" },
    "connect-timeout": { type: "string" },
    "server-pid": { type: "string" },
    io: { type: "string" },
    pipeline: { type: "string" },
    request: { type: "string" },
    expect: { type: "string" },
    protocol: { type: "string" },
    "key-space": { type: "string" },
    "value-size": { type: "string" },
    json: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const address = values.address ?? DEFAULTS.address;
  const { host, port } = parseAddress("--address", address);
  const connections = integerFlag("--number", values.number ?? String(DEFAULTS.number), 1, LOADGEN_LIMITS.maxConnections);
  const threads = integerFlag("--threads", values.threads ?? String(DEFAULTS.threads), 1, LOADGEN_LIMITS.maxThreads);
  if (threads > connections) {
    throw new UsageError(`--threads ${threads} is more than --number ${connections}: each thread needs a connection`);
  }
  const io = values.io ?? "uring";
  if (io !== "uring" && io !== "epoll") throw new UsageError(`--io must be uring or epoll, got ${JSON.stringify(io)}`);
  const pipeline = integerFlag("--pipeline", values.pipeline ?? String(DEFAULTS.pipeline), 1, LOADGEN_LIMITS.maxPipeline);
  if (pipeline * connections > LOADGEN_LIMITS.maxSlots) {
    throw new UsageError(`--pipeline ${pipeline} × --number ${connections} is more than ${LOADGEN_LIMITS.maxSlots} requests in flight`);
  }
  const workload = workloadOf(values);
  return {
    address,
    json: values.json ?? false,
    workload,
    load: {
      host,
      port,
      connections,
      threads,
      pipeline,
      table: workload.table,
      length: workload.table ? 0 : integerFlag("--length", values.length ?? String(DEFAULTS.length), 1, LOADGEN_LIMITS.maxLength),
      durationMs: secondsFlag("--duration", values.duration ?? String(DEFAULTS.duration), 0.01, LOADGEN_LIMITS.maxDurationMs / 1000),
      warmupMs: secondsFlag("--warmup", values.warmup ?? String(DEFAULTS.warmup), 0, LOADGEN_LIMITS.maxWarmupMs / 1000),
      connectTimeoutMs: secondsFlag(
        "--connect-timeout",
        values["connect-timeout"] ?? String(DEFAULTS.connectTimeout),
        0.01,
        LOADGEN_LIMITS.maxConnectTimeoutMs / 1000,
      ),
      cpus: values.cpu === undefined ? [] : cpuListFlag("--cpu", values.cpu),
      serverPid: values["server-pid"] === undefined ? undefined : integerFlag("--server-pid", values["server-pid"], 1, 2 ** 31 - 1),
      io,
    },
  };
}

const int = (n: number) => Math.round(n).toString();
const us = (n: number) => (n >= 1000 ? n.toFixed(0) : n.toFixed(1));

function errorCount(r: LoadgenResult): number {
  return r.connectErrors + r.mismatches + r.shortReads + r.extras + r.ioErrors;
}

/** rust_echo_bench's "running 512 bytes", or what the workload sends instead. */
function running(args: ClientArgs): string {
  const { load, workload } = args;
  const what = workload.table
    ? `${workload.name} (${workload.table.requestLen}-byte requests, ${workload.table.replyLen}-byte replies` +
      `${workload.keySpace ? `, ${workload.keySpace} keys` : ""})`
    : `${load.length} bytes`;
  return `${what}${(load.pipeline ?? 1) > 1 ? `, pipeline ${load.pipeline}` : ""}`;
}

function progressLine(p: LoadgenProgress): string {
  const phase =
    p.phase === "measuring"
      ? `measuring ${p.measuredS.toFixed(1)}/${p.durationS} s, ${int(p.measuredS > 0 ? p.responses / p.measuredS : 0)} resp/s`
      : p.phase;
  return `  ${phase}; connections ${p.connections}, connect errors ${p.connectErrors}, errors ${p.errors}`;
}

function text(args: ClientArgs, r: LoadgenResult): string {
  const { load } = args;
  const lines = [
    `Benchmarking: ${args.address}`,
    `${load.connections} clients, running ${running(args)}, ${load.durationMs / 1000} sec.`,
    "",
    `Speed: ${int(r.requestsPerSec)} request/sec, ${int(r.responsesPerSec)} response/sec`,
    `Requests: ${r.requests}`,
    `Responses: ${r.responses}`,
    `Latency (µs): p50 ${us(r.latencyUs.p50)}, p90 ${us(r.latencyUs.p90)}, p99 ${us(r.latencyUs.p99)}, ` +
      `p99.9 ${us(r.latencyUs.p999)}, max ${us(r.latencyUs.max)}`,
    `Bytes verified: ${r.bytesVerified}`,
    `Connect errors: ${r.connectErrors}`,
    `Errors: ${r.mismatches + r.shortReads + r.extras + r.ioErrors} (mismatches ${r.mismatches}, short reads ${r.shortReads}, ` +
      `extra bytes ${r.extras}, I/O errors ${r.ioErrors})`,
    `Measured: ${r.elapsedS.toFixed(3)} s after ${load.warmupMs / 1000} s warm-up; ${r.connections} connected in ` +
      `${(r.connectS * 1000).toFixed(1)} ms, client I/O ${r.io}` +
      (r.clientCpuUs === null ? "" : `; client CPU ${((r.clientCpuUs / 1e6 / r.elapsedS) * 100).toFixed(0)}% of one core`),
  ];
  if (r.serverCpuUs !== null && r.responses > 0) {
    lines.push(`Server CPU: ${(r.serverCpuUs / r.responses).toFixed(2)} µs/request (${((r.serverCpuUs / 1e6 / r.elapsedS) * 100).toFixed(0)}% of one core)`);
  }
  if (r.message) lines.push(`Note: ${r.message}`);
  return `${lines.join("\n")}\n`;
}

function json(args: ClientArgs, r: LoadgenResult): string {
  const { load, workload } = args;
  return `${JSON.stringify({
    address: args.address,
    workload: workload.name,
    pipeline: load.pipeline ?? 1,
    connections: load.connections,
    length: workload.table ? null : load.length,
    requestBytes: workload.table ? workload.table.requestLen : load.length,
    replyBytes: workload.table ? workload.table.replyLen : load.length,
    keySpace: workload.keySpace ?? null,
    valueSize: workload.valueSize ?? null,
    threads: load.threads,
    durationS: load.durationMs / 1000,
    warmupS: load.warmupMs / 1000,
    status: r.status,
    message: r.message,
    elapsedS: r.elapsedS,
    requests: r.requests,
    responses: r.responses,
    requestsPerSec: r.requestsPerSec,
    responsesPerSec: r.responsesPerSec,
    latencyUs: r.latencyUs,
    bytesVerified: r.bytesVerified,
    connected: r.connections,
    connectErrors: r.connectErrors,
    errors: { total: errorCount(r), mismatches: r.mismatches, shortReads: r.shortReads, extras: r.extras, io: r.ioErrors },
    clientCpuUs: r.clientCpuUs,
    io: r.io,
    serverCpuUsPerReq: r.serverCpuUs !== null && r.responses > 0 ? r.serverCpuUs / r.responses : null,
  })}\n`;
}

async function main(): Promise<void> {
  let args: ClientArgs;
  try {
    args = parse(process.argv.slice(2));
  } catch (e) {
    if (e instanceof UsageError || e instanceof TypeError) {
      process.stderr.write(`client: ${e.message} (see --help)\n`);
      process.exit(2);
    }
    throw e;
  }
  const abort = new AbortController();
  process.on("SIGINT", () => abort.abort());
  process.on("SIGTERM", () => abort.abort());
  const live = process.stderr.isTTY === true;
  if (args.workload.prepare) {
    try {
      if (live) process.stderr.write(`  preparing ${args.workload.name}`);
      await args.workload.prepare(args.load.host, args.load.port);
    } catch (e) {
      process.stderr.write(`${live ? "\r\x1b[K" : ""}client: preparing ${args.workload.name}: ${(e as Error).message}\n`);
      process.exit(1);
    }
  }
  let result: LoadgenResult;
  try {
    result = await runLoadgen(args.load, {
      signal: abort.signal,
      pollMs: 200,
      onProgress: live ? (p) => process.stderr.write(`\r${progressLine(p)}\x1b[K`) : undefined,
    });
  } catch (e) {
    process.stderr.write(`${live ? "\r\x1b[K" : ""}client: ${(e as Error).message}\n`);
    process.exit(1);
  }
  if (live) process.stderr.write("\r\x1b[K");
  process.stdout.write(args.json ? json(args, result) : text(args, result));
  process.exit(result.status === 0 && errorCount(result) === 0 ? 0 : 1);
}

await main();
