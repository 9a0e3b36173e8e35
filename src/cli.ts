// cli.ts — `bun run uring` / `bun run epoll` / `bun run serve`: parse flags (strict), validate them
// before anything starts (usage errors exit 2), start the server, print one banner line, and on
// SIGINT/SIGTERM stop gracefully, print the final stats and exit 0.
import { parseCpuList } from "./cpus.ts";
import { integerFlag, parseFlags, UsageError } from "./flags.ts";
import { probe, serve, type Server, type ServerStats } from "./index.ts";
import { OPTION_TABLE, type OptionName } from "./option-table.ts";
import { allowedValues, resolveOptions, type Labels, type ServeOptions } from "./options.ts";

function usage(): string {
  const rows = OPTION_TABLE.map((o) => {
    const left = `  ${o.flag}${"valueName" in o ? ` ${o.valueName}` : ""}`;
    const zero = o.kind.type === "integer" && "zeroMeans" in o.kind ? `, 0 = ${o.kind.zeroMeans}` : "";
    const dflt = o.default === undefined || o.default === false ? "" : ` (default ${o.default}${zero})`;
    return `${left.padEnd(30)}${o.help}${dflt}`;
  });
  return `Usage: bun src/cli.ts [options]    (bun run uring | bun run epoll | bun run serve -- [options])

A TCP echo server on io_uring or epoll.

Options:
${rows.join("\n")}
${"  -h, --help".padEnd(30)}show this help
`;
}

/** Flag name for each API option, so validation messages name what the user typed. */
const FLAGS: Labels = Object.fromEntries(OPTION_TABLE.map((o) => [o.name, o.flag]));

/** parseArgs' spec: every table flag, plus --help. */
const PARSE_OPTIONS = Object.fromEntries([
  ...OPTION_TABLE.map((o) => [o.flag.slice(2), { type: o.kind.type === "boolean" ? "boolean" : "string" }] as const),
  ["help", { type: "boolean", short: "h" }] as const,
]) as Record<string, { type: "string" | "boolean"; short?: string }>;

function usageFail(message: string): never {
  process.stderr.write(`bunring: ${message.replace(/^bunring: /, "")} (see --help)\n`);
  process.exit(2);
}

/** A whole number as typed; its range is resolveOptions' to check (with the same words). */
function integerOption(name: OptionName, flag: string, raw: string): number {
  const allowed = allowedValues(name as Parameters<typeof allowedValues>[0]);
  return integerFlag(flag, raw, 0, Number.MAX_SAFE_INTEGER, allowed);
}

/** "0,1" or "0-3": the shape is checked here, each CPU by resolveOptions like every other option. */
function cpuListFlag(flag: string, raw: string): number[] {
  const cpus = parseCpuList(raw);
  if (!cpus) throw new UsageError(`${flag} must be a list such as 0,1 or 0-3 of ${allowedValues("cpus")}, got ${JSON.stringify(raw)}`);
  return cpus;
}

function parse(argv: string[]): ServeOptions {
  const { values, positionals } = parseFlags(argv, PARSE_OPTIONS);
  if (values.help) {
    process.stdout.write(usage());
    process.exit(0);
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const opts: Record<string, unknown> = {};
  for (const o of OPTION_TABLE) {
    const raw = values[o.flag.slice(2)];
    if (raw === undefined) continue;
    if (typeof raw === "boolean") opts[o.name] = raw;
    else if (o.kind.type === "integer") opts[o.name] = integerOption(o.name, o.flag, raw as string);
    else if (o.kind.type === "cpus") opts[o.name] = cpuListFlag(o.flag, raw as string);
    else opts[o.name] = raw;
  }
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
    `closedStalled=${s.connClosedStalled}`,
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
    if (stopping) {
      // A second signal during the drain: close every connection now.
      process.stderr.write(`bunring: ${signal} again: closing every connection now\n`);
      void server.stop({ drainMs: 0 });
      return;
    }
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
