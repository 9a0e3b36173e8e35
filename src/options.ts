// options.ts — checks every serve() option before anything starts and turns them into the complete
// native config. Each message names the option (or, from the CLI, the flag), the value it got and what
// is allowed: TypeError for the wrong kind of value, RangeError for a value out of range.
import { isIPv4, isIPv6 } from "node:net";
import { availableParallelism } from "node:os";
import { MAX_CPUS, MAX_THREADS, type NativeConfig } from "../ffi/index.ts";

export type Backend = "uring" | "epoll";

export interface ServeOptions {
  /** "uring" (default), "epoll", or "auto": io_uring when the kernel allows it, else epoll. */
  backend?: Backend | "auto";
  /** IPv4 or IPv6 address to listen on, or "localhost". Default "127.0.0.1". */
  host?: string;
  /** TCP port; 0 picks a free one. Default 6379. */
  port?: number;
  /** Event loops, each on its own thread with its own SO_REUSEPORT socket. Default 1. */
  threads?: number;
  /** Pin loop i to cpus[i % cpus.length]. Default: no pinning. */
  cpus?: readonly number[];
  /** Bytes per receive buffer. Default 2048. */
  bufferSize?: number;
  /** Receive buffers per loop (a power of two). Default 4096. */
  bufferCount?: number;
  /** Connections open at once across all loops; more are closed at once and counted. Default 65536. */
  maxConnections?: number;
  /** Unechoed bytes one connection may hold before receiving from it pauses. Default 65536. */
  maxPendingBytes?: number;
  /** listen(2) backlog. Default 4096. */
  backlog?: number;
  /** How long stop() lets in-flight echoes finish before closing. Default 5000 ms. */
  drainMs?: number;
  /** Close connections that moved no byte for this long; 0 = never. Default 0. */
  idleTimeoutMs?: number;
  /** io_uring: use a kernel submission-polling thread (SQPOLL). Default false. */
  sqpoll?: boolean;
}

export interface ResolvedOptions {
  backend: Backend | "auto";
  host: string;
  config: Omit<NativeConfig, "backend">;
}

export const DEFAULTS = {
  backend: "uring",
  host: "127.0.0.1",
  port: 6379,
  threads: 1,
  bufferSize: 2048,
  bufferCount: 4096,
  maxConnections: 65536,
  maxPendingBytes: 65536,
  backlog: 4096,
  drainMs: 5000,
  idleTimeoutMs: 0,
  sqpoll: false,
} as const;

type IntegerRange = { min: number; max: number; powerOfTwo?: boolean };

/** Integer options: allowed range, and whether the value must be a power of two. */
const INTEGER_RANGES = {
  port: { min: 0, max: 65535 },
  threads: { min: 1, max: MAX_THREADS },
  bufferSize: { min: 512, max: 1 << 20 },
  bufferCount: { min: 16, max: 32768, powerOfTwo: true },
  maxConnections: { min: 1, max: 1_000_000 },
  maxPendingBytes: { min: 1024, max: 1 << 30 },
  backlog: { min: 1, max: 65535 },
  drainMs: { min: 0, max: 3_600_000 },
  idleTimeoutMs: { min: 0, max: 86_400_000 },
} as const satisfies Record<string, IntegerRange>;

export type IntegerOption = keyof typeof INTEGER_RANGES;
const OPTION_NAMES = [...Object.keys(INTEGER_RANGES), "backend", "host", "cpus", "sqpoll"] as const;

/** How an option is called in messages: the API name, or a CLI flag. */
export type Labels = Partial<Record<keyof ServeOptions, string>>;

function show(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "bigint") return `${value}n`;
  if (Array.isArray(value)) return `[${value.map(show).join(", ")}]`;
  if (typeof value === "object" && value !== null) return "an object";
  return String(value);
}

function describeRange(range: IntegerRange): string {
  return range.powerOfTwo ? `a power of two from ${range.min} to ${range.max}` : `an integer from ${range.min} to ${range.max}`;
}

/** What an integer option accepts, in words ("an integer from 0 to 65535"); for cpus, one entry. */
export function allowedValues(key: IntegerOption | "cpus"): string {
  if (key === "cpus") return `CPU numbers from 0 to ${availableParallelism() - 1}`;
  return describeRange(INTEGER_RANGES[key]);
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
  if (isIPv4(bare) || (isIPv6(bare) && !bare.includes("%"))) return bare;
  throw new RangeError(
    `bunring: ${label} must be an IPv4 or IPv6 address (like 127.0.0.1, 0.0.0.0, ::1, ::) or "localhost", got ${show(value)}`,
  );
}

function checkCpus(label: string, value: unknown): number[] {
  const online = availableParallelism();
  if (!Array.isArray(value)) {
    throw new TypeError(`bunring: ${label} must be an array of CPU numbers from 0 to ${online - 1}, got ${show(value)}`);
  }
  if (value.length > MAX_CPUS) {
    throw new RangeError(`bunring: ${label} may list at most ${MAX_CPUS} CPUs, got ${value.length}`);
  }
  // Named as the list, not as label[i]: reads the same for the API's array and the CLI's "--cpu 0,1".
  return value.map((cpu, i) => checkInteger(`${label} (entry ${i + 1} of ${value.length})`, cpu, { min: 0, max: online - 1 }));
}

/** Validates serve() options; throws TypeError/RangeError naming the first bad one. */
export function resolveOptions(options: unknown, labels: Labels = {}): ResolvedOptions {
  if (options === undefined) options = {};
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new TypeError(`bunring: serve() options must be an object, got ${show(options)}`);
  }
  const o = options as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!(OPTION_NAMES as readonly string[]).includes(key)) {
      throw new TypeError(`bunring: unknown option ${show(key)}; allowed options: ${OPTION_NAMES.join(", ")}`);
    }
  }
  const label = (key: keyof ServeOptions) => labels[key] ?? key;
  const integer = (key: IntegerOption): number =>
    o[key] === undefined ? DEFAULTS[key] : checkInteger(label(key), o[key], INTEGER_RANGES[key]);

  const backend = o.backend === undefined ? DEFAULTS.backend : o.backend;
  if (backend !== "uring" && backend !== "epoll" && backend !== "auto") {
    throw new (typeof backend === "string" ? RangeError : TypeError)(
      `bunring: ${label("backend")} must be "uring", "epoll" or "auto", got ${show(backend)}`,
    );
  }
  const host = normalizeHost(label("host"), o.host === undefined ? DEFAULTS.host : o.host);
  const threads = integer("threads");
  const maxConnections = integer("maxConnections");
  if (maxConnections < threads) {
    throw new RangeError(`bunring: ${label("maxConnections")} (${maxConnections}) must be at least ${label("threads")} (${threads})`);
  }
  const sqpoll = o.sqpoll === undefined ? DEFAULTS.sqpoll : o.sqpoll;
  if (typeof sqpoll !== "boolean") {
    throw new TypeError(`bunring: ${label("sqpoll")} must be true or false, got ${show(sqpoll)}`);
  }
  if (sqpoll && backend === "epoll") {
    throw new RangeError(`bunring: ${label("sqpoll")} needs backend "uring" (or "auto"), got backend "epoll"`);
  }
  return {
    backend,
    host,
    config: {
      port: integer("port"),
      threads,
      bufferSize: integer("bufferSize"),
      bufferCount: integer("bufferCount"),
      maxConnections,
      maxPendingBytes: integer("maxPendingBytes"),
      backlog: integer("backlog"),
      drainMs: integer("drainMs"),
      idleTimeoutMs: integer("idleTimeoutMs"),
      cpus: o.cpus === undefined ? [] : checkCpus(label("cpus"), o.cpus),
      sqpoll,
    },
  };
}

/** Checks a stop() drain time. */
export function checkDrainMs(value: unknown): number {
  return checkInteger("stop({ drainMs })", value, INTEGER_RANGES.drainMs);
}
