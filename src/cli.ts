// cli.ts — `bun run uring` / `bun run epoll` / `bun run serve`: parse flags (strict), validate them
// before anything starts (usage errors exit 2), start the server, print one banner line, and on
// SIGINT/SIGTERM stop gracefully, print the final stats and exit 0.
import { parseFlags, UsageError } from "./flags.ts";
import { probe, serve, type Server, type ServerStats } from "./index.ts";
import { allowedValues, DEFAULTS, resolveOptions, type IntegerOption, type Labels, type ServeOptions } from "./options.ts";

const USAGE = `Usage: bun src/cli.ts [options]    (bun run uring | bun run epoll | bun run serve -- [options])

A TCP echo server on io_uring or epoll.

Options:
  --backend uring|epoll|auto  event loop (default ${DEFAULTS.backend}; auto = io_uring if usable, else epoll)
  --host ADDR                 IPv4/IPv6 address or localhost (default ${DEFAULTS.host})
  --port N                    TCP port, 0 = any free port (default ${DEFAULTS.port})
  --threads N                 event loops, one thread each (default ${DEFAULTS.threads})
  --cpu LIST                  pin loop i to the i-th CPU of LIST, e.g. 0 or 0,1
  --buffer-size N             bytes per receive buffer (default ${DEFAULTS.bufferSize})
  --buffers N                 receive buffers per loop, a power of two (default ${DEFAULTS.bufferCount})
  --max-connections N         open connections at most (default ${DEFAULTS.maxConnections})
  --max-pending N             unechoed bytes per connection before it pauses (default ${DEFAULTS.maxPendingBytes})
  --backlog N                 listen backlog (default ${DEFAULTS.backlog})
  --drain-ms N                on stop, time for in-flight echoes to finish (default ${DEFAULTS.drainMs})
  --idle-timeout N            close connections idle N ms, 0 = never (default ${DEFAULTS.idleTimeoutMs})
  --sqpoll                    io_uring: kernel submission polling thread
  -h, --help                  show this help
`;

/** Flag name for each API option, so validation messages name what the user typed. */
const FLAGS: Labels = {
  backend: "--backend",
  host: "--host",
  port: "--port",
  threads: "--threads",
  cpus: "--cpu",
  bufferSize: "--buffer-size",
  bufferCount: "--buffers",
  maxConnections: "--max-connections",
  maxPendingBytes: "--max-pending",
  backlog: "--backlog",
  drainMs: "--drain-ms",
  idleTimeoutMs: "--idle-timeout",
  sqpoll: "--sqpoll",
};

function usageFail(message: string): never {
  process.stderr.write(`bunring: ${message.replace(/^bunring: /, "")} (see --help)\n`);
  process.exit(2);
}

/** A whole number as typed: digits only, and small enough to be exact (else the message shows 1e+23). */
function integerFlag(key: IntegerOption, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(Number(raw))) {
    throw new UsageError(`${FLAGS[key]} must be ${allowedValues(key)}, got ${JSON.stringify(raw)}`);
  }
  return Number(raw);
}

/** Digits only per entry; the range is resolveOptions' to check, like every other option's. */
function cpuListFlag(raw: string | undefined): number[] | undefined {
  if (raw === undefined) return undefined;
  return raw.split(",").map((entry) => {
    const cpu = entry.trim();
    if (!/^\d+$/.test(cpu) || !Number.isSafeInteger(Number(cpu))) {
      throw new UsageError(`${FLAGS.cpus} must be a comma-separated list of ${allowedValues("cpus")}, got ${JSON.stringify(raw)}`);
    }
    return Number(cpu);
  });
}

const PARSE_OPTIONS = {
  backend: { type: "string" },
  host: { type: "string" },
  port: { type: "string" },
  threads: { type: "string" },
  cpu: { type: "string" },
  "buffer-size": { type: "string" },
  buffers: { type: "string" },
  "max-connections": { type: "string" },
  "max-pending": { type: "string" },
  backlog: { type: "string" },
  "drain-ms": { type: "string" },
  "idle-timeout": { type: "string" },
  sqpoll: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

function parse(argv: string[]): ServeOptions {
  const { values, positionals } = parseFlags(argv, PARSE_OPTIONS);
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const opts: Record<string, unknown> = {};
  const put = (key: keyof ServeOptions, value: unknown) => {
    if (value !== undefined) opts[key] = value;
  };
  put("backend", values.backend);
  put("host", values.host);
  put("port", integerFlag("port", values.port));
  put("threads", integerFlag("threads", values.threads));
  put("cpus", cpuListFlag(values.cpu));
  put("bufferSize", integerFlag("bufferSize", values["buffer-size"]));
  put("bufferCount", integerFlag("bufferCount", values.buffers));
  put("maxConnections", integerFlag("maxConnections", values["max-connections"]));
  put("maxPendingBytes", integerFlag("maxPendingBytes", values["max-pending"]));
  put("backlog", integerFlag("backlog", values.backlog));
  put("drainMs", integerFlag("drainMs", values["drain-ms"]));
  put("idleTimeoutMs", integerFlag("idleTimeoutMs", values["idle-timeout"]));
  put("sqpoll", values.sqpoll);
  resolveOptions(opts, FLAGS); // every check, with flag names, before anything starts
  return opts as ServeOptions;
}

function statsLine(s: ServerStats): string {
  return [
    `accepted=${s.connAccepted}`,
    `open=${s.connOpen}`,
    `closedEof=${s.connClosedEof}`,
    `closedReset=${s.connClosedReset}`,
    `closedStop=${s.connClosedStop}`,
    `closedIdle=${s.connClosedIdle}`,
    `rejected=${s.connRejected}`,
    `bytesIn=${s.bytesIn}`,
    `bytesOut=${s.bytesOut}`,
    `shortSends=${s.shortSends}`,
    `enobufs=${s.enobufs}`,
    `pauses=${s.pauses}`,
    `allocsAfterStart=${s.allocsAfterStart}`,
    `errors=${s.errors}`,
  ].join(" ");
}

function main(): void {
  let options: ServeOptions;
  try {
    options = parse(process.argv.slice(2));
  } catch (e) {
    if (e instanceof UsageError || e instanceof TypeError || e instanceof RangeError) usageFail(e.message);
    throw e;
  }
  let server: Server;
  try {
    server = serve(options);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(1);
  }
  // Handlers first, banner second: a supervisor may signal as soon as it reads the banner.
  // The loops run on native threads; the timer keeps Bun's event loop (and the process) alive.
  const keepAlive = setInterval(() => {}, 1 << 30);
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    await server.stop();
    clearInterval(keepAlive);
    process.stdout.write(`bunring stopped: ${signal}; ${statsLine(server.stats())}\n`);
    process.exit(0);
  };
  process.on("SIGINT", () => void shutdown("SIGINT"));
  process.on("SIGTERM", () => void shutdown("SIGTERM"));

  const address = server.host.includes(":") ? `[${server.host}]:${server.port}` : `${server.host}:${server.port}`;
  const details = [
    `kernel ${probeKernel()}`,
    `${server.threads} thread${server.threads === 1 ? "" : "s"}`,
    server.backend === "uring" ? `ring: ${server.features.join(", ")}` : "edge-triggered",
  ];
  if (server.fallbackReason) details.push(`io_uring unavailable, fell back to epoll: ${server.fallbackReason}`);
  process.stdout.write(`bunring ${server.backend} listening on ${address} (${details.join("; ")})\n`);
}

function probeKernel(): string {
  try {
    return probe().kernel;
  } catch {
    return "unknown";
  }
}

main();
