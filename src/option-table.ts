// option-table.ts — every server option written once: its name in serve(), its CLI flag, its kind,
// its default, its help text and the C config field it fills. Integer ranges are not typed here: they
// come from the native library (bunring.h's limits, exported by bunring_limit_entry), which checks the
// same numbers. The rules that tie options together are listed at the bottom. The CLI parser, --help,
// serve() validation and the README's option table (bun run docs:options) are all made from this file.

export type Backend = "uring" | "epoll";

export type OptionKind =
  | { type: "integer"; cField: string; powerOfTwo?: boolean; zeroMeans?: string }
  | { type: "boolean" }
  | { type: "backend" }
  | { type: "host" }
  | { type: "cpus" };

export interface OptionSpec {
  /** The serve()/listen() option. */
  name: string;
  /** The CLI flag (long form). */
  flag: string;
  /** What the flag's value looks like in --help ("N", "ADDR"); none for a boolean. */
  valueName?: string;
  kind: OptionKind;
  /** Default; undefined for cpus (no pinning). */
  default: number | string | boolean | undefined;
  /** One line for --help and the README. */
  help: string;
}

export const OPTION_TABLE = [
  {
    name: "backend",
    flag: "--backend",
    valueName: "uring|epoll|auto",
    kind: { type: "backend" },
    default: "uring",
    help: "event loop; auto = io_uring when the kernel allows it, else epoll (and says why)",
  },
  {
    name: "host",
    flag: "--host",
    valueName: "ADDR",
    kind: { type: "host" },
    default: "127.0.0.1",
    help: "IPv4 or IPv6 address to listen on, or localhost",
  },
  {
    name: "port",
    flag: "--port",
    valueName: "N",
    kind: { type: "integer", cField: "port", zeroMeans: "any free port" },
    default: 6379,
    help: "TCP port",
  },
  {
    name: "threads",
    flag: "--threads",
    valueName: "N",
    kind: { type: "integer", cField: "threads" },
    default: 1,
    help: "event loops, one native thread and one SO_REUSEPORT socket each",
  },
  {
    name: "reusePort",
    flag: "--reuse-port",
    kind: { type: "boolean" },
    default: false,
    help: "bind with SO_REUSEPORT so several servers (Workers, processes) share the port; the kernel spreads new connections over them",
  },
  {
    name: "cpus",
    flag: "--cpu",
    valueName: "LIST",
    kind: { type: "cpus" },
    default: undefined,
    help: "pin loop i to the i-th CPU of LIST, e.g. 0 or 0,1 or 0-3",
  },
  {
    name: "bufferSize",
    flag: "--buffer-size",
    valueName: "N",
    kind: { type: "integer", cField: "buffer_size" },
    default: 2048,
    help: "bytes per receive buffer",
  },
  {
    name: "bufferCount",
    flag: "--buffers",
    valueName: "N",
    kind: { type: "integer", cField: "buffer_count", powerOfTwo: true },
    default: 4096,
    help: "receive buffers per loop (the pool, allocated once at start)",
  },
  {
    name: "maxConnections",
    flag: "--max-connections",
    valueName: "N",
    kind: { type: "integer", cField: "max_connections" },
    default: 65536,
    help: "connections open at once across all loops; more are closed at once and counted",
  },
  {
    name: "maxPendingBytes",
    flag: "--max-pending",
    valueName: "N",
    kind: { type: "integer", cField: "max_pending_bytes" },
    default: 65536,
    help: "unsent bytes one connection may hold before receiving from it pauses",
  },
  {
    name: "backlog",
    flag: "--backlog",
    valueName: "N",
    kind: { type: "integer", cField: "backlog" },
    default: 4096,
    help: "listen backlog",
  },
  {
    name: "drainMs",
    flag: "--drain-ms",
    valueName: "N",
    kind: { type: "integer", cField: "drain_ms" },
    default: 5000,
    help: "on stop, how long in-flight echoes may finish before connections close",
  },
  {
    name: "idleTimeoutMs",
    flag: "--idle-timeout",
    valueName: "N",
    kind: { type: "integer", cField: "idle_timeout_ms", zeroMeans: "never" },
    default: 0,
    help: "close connections that moved no byte for N ms",
  },
  {
    name: "stallTimeoutMs",
    flag: "--stall-timeout-ms",
    valueName: "N",
    kind: { type: "integer", cField: "stall_timeout_ms", zeroMeans: "no limit" },
    default: 10_000,
    help: "while the buffer pool is short, a paused peer that has read nothing for N ms is closed (docs/design.md)",
  },
  {
    name: "sqpoll",
    flag: "--sqpoll",
    kind: { type: "boolean" },
    default: false,
    help: "io_uring: a kernel submission-polling thread",
  },
] as const satisfies readonly OptionSpec[];

export type OptionName = (typeof OPTION_TABLE)[number]["name"];
export type IntegerOptionName = Extract<(typeof OPTION_TABLE)[number], { kind: { type: "integer" } }>["name"];

/** The spec of one option. */
export function optionSpec(name: OptionName): OptionSpec {
  return OPTION_TABLE.find((o) => o.name === name)!;
}

/** The resolved values the rules look at. */
export interface RuleInput {
  backend: Backend | "auto";
  threads: number;
  maxConnections: number;
  bufferSize: number;
  bufferCount: number;
  maxPendingBytes: number;
  sqpoll: boolean;
}

/**
 * What ties options together. Each rule names the options it involves and returns undefined when
 * the configuration satisfies it, else the reason, given a label for each option (API name or flag).
 * The C side checks the same rules (c-shim/server.c check_config).
 */
export const OPTION_RULES: readonly {
  options: readonly OptionName[];
  /** The rule in words, for the README. */
  text: string;
  check(o: RuleInput, label: (name: OptionName) => string): string | undefined;
}[] = [
  {
    options: ["maxConnections", "threads"],
    text: "`maxConnections` ≥ `threads`",
    check: (o, label) =>
      o.maxConnections >= o.threads
        ? undefined
        : `${label("maxConnections")} (${o.maxConnections}) must be at least ${label("threads")} (${o.threads})`,
  },
  {
    options: ["bufferCount", "maxPendingBytes", "bufferSize"],
    text: "the pool holds what one connection may: `bufferCount` ≥ max(4, 2 × ⌈`maxPendingBytes` / `bufferSize`⌉)",
    check: (o, label) => {
      // A connection pauses at maxPendingBytes or at twice the buffers those bytes fill (small
      // receives take a whole buffer each): the pool must hold that much (c-shim/conn.c).
      const perConn = Math.max(4, 2 * Math.ceil(o.maxPendingBytes / o.bufferSize));
      return o.bufferCount >= perConn
        ? undefined
        : `${label("bufferCount")} (${o.bufferCount}) must be at least ${perConn}: with ${label("maxPendingBytes")} ${o.maxPendingBytes} and ${label("bufferSize")} ${o.bufferSize} one connection may hold ${perConn} buffers (raise ${label("bufferCount")} or lower ${label("maxPendingBytes")})`;
    },
  },
  {
    options: ["sqpoll", "backend"],
    text: "`sqpoll` needs backend `uring` or `auto`",
    check: (o, label) =>
      o.sqpoll && o.backend === "epoll" ? `${label("sqpoll")} needs ${label("backend")} "uring" (or "auto"), got "epoll"` : undefined,
  },
];
