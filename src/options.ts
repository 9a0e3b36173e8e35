// options.ts — checks every serve() option against src/option-table.ts before anything starts and
// turns them into the complete native config. Each message names the option (or, from the CLI, the
// flag), the value it got and what is allowed: TypeError for the wrong kind of value, RangeError for a
// value out of range or a combination the rules forbid.
import { hostFamily, MAX_CPUS, nativeLimit, type NativeConfig } from "../ffi/server.ts";
import { allowedCpus, formatCpuList } from "./cpus.ts";
import {
  OPTION_RULES,
  OPTION_TABLE,
  optionSpec,
  type Backend,
  type IntegerOptionName,
  type OptionName,
  type OptionSpec,
} from "./option-table.ts";

export type { Backend } from "./option-table.ts";

export interface ServeOptions {
  /** "uring" (default), "epoll", or "auto": io_uring when the kernel allows it, else epoll. */
  backend?: Backend | "auto";
  /** IPv4 or IPv6 address to listen on, or "localhost". Default "127.0.0.1". */
  host?: string;
  /** TCP port; 0 picks a free one. Default 6379. */
  port?: number;
  /** Event loops, each on its own thread with its own SO_REUSEPORT socket. Default 1. */
  threads?: number;
  /**
   * Bind with SO_REUSEPORT so several servers (Bun Workers, processes of the same user) share the
   * port; the kernel spreads new connections over them. Without it a port someone holds is refused.
   * With port 0 this server gets a free port of its own: start the others on its `port`. Default false.
   */
  reusePort?: boolean;
  /** Pin loop i to cpus[i % cpus.length]. Default: no pinning. */
  cpus?: readonly number[];
  /** Bytes per receive buffer. Default 2048. */
  bufferSize?: number;
  /** Receive buffers per loop (a power of two). Default 4096. */
  bufferCount?: number;
  /** Connections open at once across all loops; more are closed at once and counted. Default 65536. */
  maxConnections?: number;
  /** Unsent bytes one connection may hold before receiving from it pauses. Default 65536. */
  maxPendingBytes?: number;
  /** listen(2) backlog. Default 4096. */
  backlog?: number;
  /** How long stop() lets in-flight echoes finish before closing. Default 5000 ms. */
  drainMs?: number;
  /** Close connections that moved no byte for this long; 0 = never. Default 0. */
  idleTimeoutMs?: number;
  /** While the buffer pool is short, close a paused peer that has not read for this long. Default 10000. */
  stallTimeoutMs?: number;
  /** io_uring: use a kernel submission-polling thread (SQPOLL). Default false. */
  sqpoll?: boolean;
}

export interface ResolvedOptions {
  backend: Backend | "auto";
  host: string;
  config: Omit<NativeConfig, "backend">;
}

/** The defaults, from the table. */
export const DEFAULTS = Object.freeze(
  Object.fromEntries(OPTION_TABLE.filter((o) => o.default !== undefined).map((o) => [o.name, o.default])),
) as Readonly<{ [K in Exclude<OptionName, "cpus">]: Extract<(typeof OPTION_TABLE)[number], { name: K }>["default"] }>;

const OPTION_NAMES: readonly string[] = OPTION_TABLE.map((o) => o.name);

/** How an option is called in messages: the API name, or a CLI flag. */
export type Labels = Partial<Record<OptionName, string>>;

function show(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "bigint") return `${value}n`;
  if (Array.isArray(value)) return `[${value.map(show).join(", ")}]`;
  if (typeof value === "object" && value !== null) return "an object";
  return String(value);
}

type IntegerRange = { min: number; max: number; powerOfTwo?: boolean };

function integerRange(spec: OptionSpec): IntegerRange {
  if (spec.kind.type !== "integer") throw new Error(`bunring: ${spec.name} is not an integer option`);
  const { min, max } = nativeLimit(spec.kind.cField);
  return { min, max, ...(spec.kind.powerOfTwo ? { powerOfTwo: true } : {}) };
}

function describeRange(range: IntegerRange): string {
  return range.powerOfTwo ? `a power of two from ${range.min} to ${range.max}` : `an integer from ${range.min} to ${range.max}`;
}

function describeCpus(): string {
  return `CPU numbers this process may run on (${formatCpuList(allowedCpus())})`;
}

/** What an integer option accepts, in words ("an integer from 0 to 65535"); for cpus, one entry. */
export function allowedValues(name: IntegerOptionName | "cpus"): string {
  return name === "cpus" ? describeCpus() : describeRange(integerRange(optionSpec(name)));
}

function checkInteger(label: string, value: unknown, range: IntegerRange): number {
  const allowed = describeRange(range);
  if (typeof value !== "number") {
    throw new TypeError(`bunring: ${label} must be ${allowed}, got ${show(value)} (${typeof value})`);
  }
  if (!Number.isInteger(value) || value < range.min || value > range.max) {
    throw new RangeError(`bunring: ${label} must be ${allowed}, got ${show(value)}`);
  }
  if (range.powerOfTwo && (value & (value - 1)) !== 0) {
    throw new RangeError(`bunring: ${label} must be ${allowed}, got ${value}`);
  }
  return value;
}

/** Accepts IPv4/IPv6 literals ("[::1]" too) and "localhost"; returns the literal to bind. */
export function normalizeHost(label: string, value: unknown): string {
  if (typeof value !== "string") {
    throw new TypeError(`bunring: ${label} must be an IPv4 or IPv6 address or "localhost", got ${show(value)}`);
  }
  const bare = value.startsWith("[") && value.endsWith("]") ? value.slice(1, -1) : value;
  if (bare === "localhost") return "127.0.0.1";
  // The library's own parser (inet_pton), not node:net's, which costs about 3 MiB of memory to load.
  if (hostFamily(bare) !== 0) return bare;
  throw new RangeError(
    `bunring: ${label} must be an IPv4 or IPv6 address (like 127.0.0.1, 0.0.0.0, ::1, ::) or "localhost", got ${show(value)}`,
  );
}

function checkCpus(label: string, value: unknown): number[] {
  if (!Array.isArray(value)) {
    throw new TypeError(`bunring: ${label} must be an array of ${describeCpus()}, got ${show(value)}`);
  }
  if (value.length > MAX_CPUS) {
    throw new RangeError(`bunring: ${label} may list at most ${MAX_CPUS} CPUs, got ${value.length}`);
  }
  const allowed = new Set(allowedCpus());
  const cpus: number[] = [];
  // Named as the list, not as label[i]: reads the same for the API's array and the CLI's "--cpu 0,1".
  for (let i = 0; i < value.length; i++) {
    const entry = `${label} (entry ${i + 1} of ${value.length})`;
    if (!(i in value)) throw new TypeError(`bunring: ${entry} is missing (a sparse array); list ${describeCpus()}`);
    const cpu = value[i] as unknown;
    if (typeof cpu !== "number" || !Number.isInteger(cpu) || !allowed.has(cpu)) {
      const Kind = typeof cpu === "number" ? RangeError : TypeError;
      throw new Kind(`bunring: ${entry} must be one of the ${describeCpus()}, got ${show(cpu)}`);
    }
    cpus.push(cpu);
  }
  return cpus;
}

function checkBackend(label: string, value: unknown): Backend | "auto" {
  if (value === "uring" || value === "epoll" || value === "auto") return value;
  throw new (typeof value === "string" ? RangeError : TypeError)(`bunring: ${label} must be "uring", "epoll" or "auto", got ${show(value)}`);
}

function checkBoolean(label: string, value: unknown): boolean {
  if (typeof value !== "boolean") throw new TypeError(`bunring: ${label} must be true or false, got ${show(value)}`);
  return value;
}

/** One option's value checked by its kind (the default when undefined). */
function checkOption(spec: OptionSpec, label: string, value: unknown): unknown {
  if (value === undefined) return spec.default;
  switch (spec.kind.type) {
    case "integer":
      return checkInteger(label, value, integerRange(spec));
    case "boolean":
      return checkBoolean(label, value);
    case "backend":
      return checkBackend(label, value);
    case "host":
      return normalizeHost(label, value);
    case "cpus":
      return checkCpus(label, value);
  }
}

/** Validates serve() options; throws TypeError/RangeError naming the first bad one. */
export function resolveOptions(options: unknown, labels: Labels = {}): ResolvedOptions {
  if (options === undefined) options = {};
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new TypeError(`bunring: serve() options must be an object, got ${show(options)}`);
  }
  const o = options as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!OPTION_NAMES.includes(key)) {
      throw new TypeError(`bunring: unknown option ${show(key)}; allowed options: ${OPTION_NAMES.join(", ")}`);
    }
  }
  const label = (name: OptionName) => labels[name] ?? name;
  const v: Record<string, unknown> = {};
  for (const spec of OPTION_TABLE) v[spec.name] = checkOption(spec, label(spec.name), o[spec.name]);
  const r = v as {
    backend: Backend | "auto";
    host: string;
    cpus: number[] | undefined;
    reusePort: boolean;
    sqpoll: boolean;
  } & Record<IntegerOptionName, number>;
  for (const rule of OPTION_RULES) {
    const reason = rule.check(r, label);
    if (reason !== undefined) throw new RangeError(`bunring: ${reason}`);
  }
  return {
    backend: r.backend,
    host: r.host,
    config: {
      port: r.port,
      threads: r.threads,
      bufferSize: r.bufferSize,
      bufferCount: r.bufferCount,
      maxConnections: r.maxConnections,
      maxPendingBytes: r.maxPendingBytes,
      backlog: r.backlog,
      drainMs: r.drainMs,
      idleTimeoutMs: r.idleTimeoutMs,
      stallTimeoutMs: r.stallTimeoutMs,
      cpus: r.cpus ?? [],
      reusePort: r.reusePort,
      sqpoll: r.sqpoll,
    },
  };
}

/** Checks a stop() drain time. */
export function checkDrainMs(value: unknown): number {
  return checkInteger("stop({ drainMs })", value, integerRange(optionSpec("drainMs")));
}
