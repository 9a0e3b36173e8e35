/**
 * The documented option ranges, host forms and cross-option rules (README's option table and
 * c-shim/bunring.h), written out here independently of src/ as the oracle the option tests check
 * serve() and the CLI against: tests/options.test.ts (serve()), tests/reliability/input.test.ts (flags),
 * and any test that generates random configurations (tests/edge.test.ts).
 */
import { availableParallelism } from "node:os";

/** CPUs online: valid CPU numbers are 0..ONLINE-1 (the test machine does not restrict affinity). */
export const ONLINE = availableParallelism();

/** Integer options: [min, max], inclusive. bufferCount must also be a power of two. */
export const RANGES = {
  port: [0, 65535],
  threads: [1, 64],
  bufferSize: [512, 1 << 20],
  bufferCount: [16, 32768],
  maxConnections: [1, 1_000_000],
  maxPendingBytes: [1024, 1 << 30],
  backlog: [1, 65535],
  drainMs: [0, 3_600_000],
  idleTimeoutMs: [0, 86_400_000],
  stallTimeoutMs: [0, 86_400_000],
} as const;
export type IntOption = keyof typeof RANGES;
export const INT_OPTIONS = Object.keys(RANGES) as IntOption[];
export const ALL_OPTIONS = [...INT_OPTIONS, "backend", "host", "cpus", "sqpoll"] as const;
export type Option = (typeof ALL_OPTIONS)[number];

/** At most this many CPUs in a cpus list. */
export const MAX_CPUS = 256;

export const KNOWN_GOOD_HOSTS = new Set(["127.0.0.1", "::1", "[::1]", "localhost", "0:0:0:0:0:0:0:1", "127.1.2.3"]);
export const KNOWN_BAD_HOSTS = [
  "",
  " ",
  "not-an-ip",
  "not a host",
  "999.1.1.1",
  "256.0.0.1",
  "256.1.1.1",
  "1.2.3",
  "1.2.3.4.5",
  "127.0.0.1 ",
  " 127.0.0.1",
  "[::1",
  "::1]",
  "[[::1]]",
  "::1%lo",
  "fe80::1%eth0",
  "localhost:80",
  "127.0.0.1:80",
  "LOCALHOST.",
  "example.com",
  "::g",
  "1::2::3",
  "0x7f.1",
  "١٢٧.٠.٠.١",
  "127.0.0.1\u0000evil", // the library sees a C string: it must never see only the part before the NUL
];

export function validInt(opt: IntOption, v: unknown): v is number {
  const [lo, hi] = RANGES[opt];
  if (typeof v !== "number" || !Number.isInteger(v) || v < lo || v > hi) return false;
  return opt !== "bufferCount" || (v & (v - 1)) === 0;
}

/** Whether a single option value is valid on its own (cross-option rules aside); undefined = the default. */
export function validValue(opt: Option, v: unknown): boolean {
  if (v === undefined) return true;
  switch (opt) {
    case "backend":
      return v === "uring" || v === "epoll" || v === "auto";
    case "sqpoll":
      return typeof v === "boolean";
    case "cpus":
      return (
        Array.isArray(v) && v.length <= MAX_CPUS && v.every((c) => typeof c === "number" && Number.isInteger(c) && c >= 0 && c < ONLINE)
      );
    case "host":
      return typeof v === "string" && KNOWN_GOOD_HOSTS.has(v);
    default:
      return validInt(opt, v);
  }
}

/**
 * The error class a bad value of one option must throw: RangeError for a value of the right kind out
 * of range (a number for integers and CPU entries, a string for backend and host, a too-long cpus
 * list), TypeError for a value of the wrong kind. Undefined for a valid value.
 */
export function errorClassFor(opt: Option, v: unknown): typeof TypeError | typeof RangeError | undefined {
  if (validValue(opt, v)) return undefined;
  switch (opt) {
    case "backend":
    case "host":
      return typeof v === "string" ? RangeError : TypeError;
    case "sqpoll":
      return TypeError;
    case "cpus": {
      if (!Array.isArray(v)) return TypeError;
      if (v.length > MAX_CPUS) return RangeError;
      for (let i = 0; i < v.length; i++) {
        if (!(i in v)) return TypeError; // a hole
        const c: unknown = v[i];
        if (typeof c !== "number") return TypeError;
        if (!Number.isInteger(c) || c < 0 || c >= ONLINE) return RangeError;
      }
      return undefined;
    }
    default:
      return typeof v === "number" ? RangeError : TypeError;
  }
}

/**
 * The smallest bufferCount allowed with these settings: the pool holds what one connection may hold
 * at its pause limit (maxPendingBytes, or twice the buffers those bytes fill, and at least 4).
 */
export function minBufferCount(bufferSize: number, maxPendingBytes: number): number {
  return Math.max(4, 2 * Math.ceil(maxPendingBytes / bufferSize));
}

/** Defaults the cross-option rules fall back on. */
const RULE_DEFAULTS = { threads: 1, maxConnections: 65536, bufferSize: 2048, bufferCount: 4096, maxPendingBytes: 65536 };

/**
 * Options that are bad in `o`: each value on its own, then the cross-option rules when the values
 * involved are valid on their own: maxConnections >= threads; bufferCount >= minBufferCount(bufferSize,
 * maxPendingBytes); sqpoll needs backend uring or auto.
 */
export function badOptions(o: Record<string, unknown>, options: readonly Option[] = ALL_OPTIONS): Option[] {
  const bad = options.filter((k) => !validValue(k, o[k]));
  const val = (k: keyof typeof RULE_DEFAULTS) => (o[k] ?? RULE_DEFAULTS[k]) as number;
  const ok = (...ks: (keyof typeof RULE_DEFAULTS)[]) => ks.every((k) => validValue(k, val(k)));
  if (ok("threads", "maxConnections") && val("maxConnections") < val("threads")) bad.push("maxConnections", "threads");
  if (ok("bufferCount", "bufferSize", "maxPendingBytes") && val("bufferCount") < minBufferCount(val("bufferSize"), val("maxPendingBytes"))) {
    bad.push("bufferCount", "maxPendingBytes", "bufferSize");
  }
  if (o.sqpoll === true && o.backend === "epoll") bad.push("sqpoll", "backend");
  return bad;
}
