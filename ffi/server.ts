// server.ts — the bun:ffi binding of the product library (c-shim/bunring.h) for src/: its symbols,
// struct offsets and config limits as the library itself describes them (through ffi/loader.ts),
// starting a native server from a plain config object, reading its counters through one mapping of
// the stats block, stopping/freeing it, probing the kernel, and user_data encode/decode through the C
// functions. No other module of src/ touches pointers.
import { CString, FFIType, JSCallback, toArrayBuffer, type Pointer } from "bun:ffi";
import { cStringAt, openLibrary } from "./loader.ts";
import { BUILD_HINT, locateLibrary } from "./locate.ts";

export { libraryPath } from "./locate.ts";

/** The ABI version this binding speaks (BUNRING_ABI_VERSION). */
export const ABI_VERSION = 4;
/** BUNRING_MAX_CPUS: entries in bunring_config.cpus. */
export const MAX_CPUS = 256;
/** BUNRING_STATS_STRIDE: counters per loop block. */
const STATS_STRIDE = 64;

const BACKEND_CODES = { uring: 0, epoll: 1 } as const;
const CONFIG_FLAGS = { sqpoll: 1 << 0, noDefer: 1 << 1, forceNoUring: 1 << 2, handler: 1 << 4, reusePort: 1 << 5 } as const;

/** enum bunring_stat, in order (checked against bunring_stat_name at load). */
export const STAT_NAMES = [
  "connAccepted",
  "connOpen",
  "connClosedEof",
  "connClosedReset",
  "connClosedStop",
  "connClosedIdle",
  "connRejected",
  "acceptErrors",
  "bytesIn",
  "bytesOut",
  "bytesDiscarded",
  "recvCompletions",
  "sendCompletions",
  "shortSends",
  "sendEagain",
  "enobufs",
  "pauses",
  "pausedNow",
  "recvRearms",
  "acceptRearms",
  "staleCompletions",
  "loopIterations",
  "waitCalls",
  "allocsAfterStart",
  "buffersTotal",
  "buffersInUse",
  "errors",
  "connClosedStalled",
  "connRefusedStopping",
  "buffersPaused",
  "pressureEvents",
  "jsEvents",
  "jsCommands",
  "jsDoorbells",
  "jsWakeups",
  "jsDirectSends",
  "jsDirectBytes",
  "jsDirectShort",
  "jsDirectEagain",
] as const;
export type StatName = (typeof STAT_NAMES)[number];

const symbols = {
  bunring_abi_version: { args: [], returns: FFIType.u32 },
  bunring_layout_entry: { args: [FFIType.u32, FFIType.ptr], returns: FFIType.ptr },
  bunring_limit_entry: { args: [FFIType.u32, FFIType.ptr], returns: FFIType.ptr },
  bunring_stat_count: { args: [], returns: FFIType.u32 },
  bunring_stat_name: { args: [FFIType.u32], returns: FFIType.ptr },
  bunring_feature_name: { args: [FFIType.u32], returns: FFIType.ptr },
  bunring_probe: { args: [FFIType.ptr, FFIType.ptr, FFIType.u32], returns: FFIType.u32 },
  bunring_host_family: { args: [FFIType.ptr], returns: FFIType.u32 },
  bunring_server_start: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr], returns: FFIType.ptr },
  bunring_server_port: { args: [FFIType.ptr], returns: FFIType.u32 },
  bunring_server_features: { args: [FFIType.ptr], returns: FFIType.u32 },
  bunring_server_threads: { args: [FFIType.ptr], returns: FFIType.u32 },
  bunring_server_stats: { args: [FFIType.ptr], returns: FFIType.ptr },
  bunring_server_start_handler: { args: [FFIType.ptr, FFIType.ptr, FFIType.function, FFIType.ptr], returns: FFIType.ptr },
  bunring_js_channel_of: { args: [FFIType.ptr, FFIType.u32], returns: FFIType.ptr },
  bunring_js_sent_of: { args: [FFIType.ptr, FFIType.u32], returns: FFIType.ptr },
  bunring_js_wake: { args: [FFIType.ptr, FFIType.u32], returns: FFIType.void },
  bunring_js_send: {
    args: [FFIType.ptr, FFIType.u32, FFIType.u32, FFIType.u32, FFIType.ptr, FFIType.u32],
    returns: FFIType.i32,
  },
  bunring_js_set_option: {
    args: [FFIType.ptr, FFIType.u32, FFIType.u32, FFIType.u32, FFIType.u32, FFIType.u32],
    returns: FFIType.i32,
  },
  bunring_js_local_address: { args: [FFIType.ptr, FFIType.u32, FFIType.u32, FFIType.u32, FFIType.ptr], returns: FFIType.i32 },
  bunring_server_stop: { args: [FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
  bunring_server_close_listener: { args: [FFIType.ptr], returns: FFIType.i32 },
  bunring_server_done: { args: [FFIType.ptr], returns: FFIType.u32 },
  bunring_server_free: { args: [FFIType.ptr], returns: FFIType.void },
  bunring_ud_encode: { args: [FFIType.u32, FFIType.u32, FFIType.u32, FFIType.u32], returns: FFIType.u64 },
  bunring_ud_decode_op: { args: [FFIType.u64], returns: FFIType.u32 },
  bunring_ud_decode_bid: { args: [FFIType.u64], returns: FFIType.u32 },
  bunring_ud_decode_slot: { args: [FFIType.u64], returns: FFIType.u32 },
  bunring_ud_decode_gen: { args: [FFIType.u64], returns: FFIType.u32 },
} as const;

/** BUNRING_JS_RECORDS, BUNRING_JS_RX_BYTES and BUNRING_JS_TX_BYTES: records per ring and the bytes of a handler channel's two areas. */
export const JS_RECORDS = 4096;
export const JS_RX_BYTES = 512 << 10;
export const JS_TX_BYTES = 1 << 20;
/** BUNRING_JS_MAX_RECORD_BYTES: bytes one DATA or WRITE record carries at most. */
export const JS_MAX_RECORD_BYTES = 65536;
export const JS_EVENT = { open: 1, data: 2, end: 3, drain: 4, close: 5 } as const;
export const JS_COMMAND = { write: 1, end: 2, terminate: 3, wantDrain: 4, pause: 5, resume: 6 } as const;
/** enum bunring_js_option: what bunring_js_set_option sets. */
export const JS_OPTION = { noDelay: 1, keepAlive: 2, keepIdle: 3 } as const;
/** BUNRING_JS_PEER_ADDRESS_BYTES: an address as OPEN and bunring_js_local_address give it. */
export const JS_ADDRESS_BYTES = 20;

/** Inclusive range of a config field, as the library checks it. */
export interface Limit {
  min: number;
  max: number;
}

function open() {
  const path = locateLibrary();
  const lib = openLibrary({
    name: "libbunring.so",
    path,
    symbols,
    abiSymbol: "bunring_abi_version",
    abiVersion: ABI_VERSION,
    layoutSymbol: "bunring_layout_entry",
    rebuildHint: BUILD_HINT,
  });
  const s = lib.symbols;
  const config = lib.struct("bunring_config", {
    backend: "u32",
    port: "u32",
    threads: "u32",
    bufferSize: "u32",
    bufferCount: "u32",
    maxConnections: "u32",
    maxPendingBytes: "u32",
    backlog: "u32",
    drainMs: "u32",
    idleTimeoutMs: "u32",
    stallTimeoutMs: "u32",
    flags: "u32",
    cpuCount: "u32",
    cpus: { bytes: 4 * MAX_CPUS },
  });
  const error = lib.struct("bunring_error", { code: "i32", message: { bytes: 252 } });
  const record = lib.struct("bunring_js_record", { typeGen: "u32", slot: "u32", offset: "u32", len: "u32" });
  const channel = lib.struct("bunring_js_channel", {
    evTail: "u32",
    rxTail: "u32",
    cmdHead: "u32",
    txHead: "u32",
    cSleeping: "u32",
    cWantsRoom: "u32",
    loopPad: { bytes: 40 },
    evHead: "u32",
    rxHead: "u32",
    cmdTail: "u32",
    txTail: "u32",
    jsSleeping: "u32",
    jsPad: { bytes: 44 },
    events: { bytes: JS_RECORDS * 16 },
    commands: { bytes: JS_RECORDS * 16 },
    rx: { bytes: JS_RX_BYTES },
    tx: { bytes: JS_TX_BYTES },
  });
  const names = Array.from({ length: s.bunring_stat_count() }, (_, i) => String(new CString(s.bunring_stat_name(i)!)));
  if (names.join() !== STAT_NAMES.join()) {
    throw new Error(`bunring: ${path} reports stats [${names.join(", ")}], ffi/server.ts expects [${STAT_NAMES.join(", ")}]; ${BUILD_HINT}`);
  }
  const featureNames: string[] = [];
  for (let bit = 0; ; bit++) {
    const p = s.bunring_feature_name(bit);
    if (!p) break;
    featureNames.push(String(new CString(p)));
  }
  const limits = new Map<string, Limit>();
  const out = new Uint32Array(2);
  for (let i = 0; ; i++) {
    const p = s.bunring_limit_entry(i, out);
    if (!p) break;
    limits.set(String(new CString(p)), { min: out[0]!, max: out[1]! });
  }
  return { symbols: s, config, error, record, channel, featureNames, limits };
}

let loaded: ReturnType<typeof open> | undefined;

/** The loaded library (opened on first use, so importing bunring never fails by itself). */
function native(): ReturnType<typeof open> {
  loaded ??= open();
  return loaded;
}

/** The range the library allows for a config field, by its C name ("buffer_size"). */
export function nativeLimit(cField: string): Limit {
  const limit = native().limits.get(cField);
  if (!limit) throw new Error(`bunring: the native library exports no limit for config field ${cField}; ${BUILD_HINT}`);
  return limit;
}

export type NativeStats = Record<StatName, number>;

export interface NativeConfig {
  backend: keyof typeof BACKEND_CODES;
  port: number;
  threads: number;
  bufferSize: number;
  bufferCount: number;
  maxConnections: number;
  maxPendingBytes: number;
  backlog: number;
  drainMs: number;
  idleTimeoutMs: number;
  stallTimeoutMs: number;
  cpus: readonly number[];
  sqpoll: boolean;
  /** SO_REUSEPORT on every loop's socket, no "port is free" check: servers share the port. */
  reusePort?: boolean;
  /** Handler mode: bytes go to JS through a channel per loop (startHandlerNative). */
  handler?: boolean;
  /** Testing aids: skip DEFER_TASKRUN, or act as if io_uring were unavailable. */
  noDefer?: boolean;
  forceNoUring?: boolean;
}

/** An error reported by the shim: negative errno and its message. */
export interface NativeError {
  code: number;
  message: string;
}

export interface NativeServer {
  port: number;
  threads: number;
  features: string[];
  readStats(): NativeStats;
  /** Asks the loops to stop (again with a shorter drain: closer deadline); returns at once. */
  stop(drainMs: number): void;
  /** Stops accepting and keeps serving: the loops end once their last connection has closed. */
  closeListener(): void;
  /** True once every loop thread has finished. */
  done(): boolean;
  /** Joins the threads and frees the server; the stats mapping is invalid afterwards. */
  free(): void;
}

function encodeConfig(cfg: NativeConfig): Uint8Array {
  const { config: at } = native();
  const bytes = new Uint8Array(at.size);
  const view = new DataView(bytes.buffer);
  const u32 = (offset: number, value: number) => view.setUint32(offset, value, true);
  u32(at.backend, BACKEND_CODES[cfg.backend]);
  u32(at.port, cfg.port);
  u32(at.threads, cfg.threads);
  u32(at.bufferSize, cfg.bufferSize);
  u32(at.bufferCount, cfg.bufferCount);
  u32(at.maxConnections, cfg.maxConnections);
  u32(at.maxPendingBytes, cfg.maxPendingBytes);
  u32(at.backlog, cfg.backlog);
  u32(at.drainMs, cfg.drainMs);
  u32(at.idleTimeoutMs, cfg.idleTimeoutMs);
  u32(at.stallTimeoutMs, cfg.stallTimeoutMs);
  let flags = 0;
  if (cfg.sqpoll) flags |= CONFIG_FLAGS.sqpoll;
  if (cfg.noDefer) flags |= CONFIG_FLAGS.noDefer;
  if (cfg.forceNoUring) flags |= CONFIG_FLAGS.forceNoUring;
  if (cfg.handler) flags |= CONFIG_FLAGS.handler;
  if (cfg.reusePort) flags |= CONFIG_FLAGS.reusePort;
  u32(at.flags, flags);
  const cpus = cfg.cpus.slice(0, MAX_CPUS);
  u32(at.cpuCount, cpus.length);
  cpus.forEach((cpu, i) => view.setInt32(at.cpus + 4 * i, cpu, true));
  return bytes;
}

function newErrorBuffer(): Uint8Array {
  return new Uint8Array(native().error.size);
}

function readError(bytes: Uint8Array): NativeError {
  const { error: at } = native();
  return {
    code: new DataView(bytes.buffer).getInt32(at.code, true),
    message: cStringAt(bytes, at.message, bytes.length - at.message),
  };
}

function cString(s: string): Uint8Array {
  return new TextEncoder().encode(s + "\0");
}

function featureList(bits: number): string[] {
  return native().featureNames.filter((_, bit) => (bits & (1 << bit)) !== 0);
}

/**
 * Sums each counter over the loops' blocks. Each counter is read with one 64-bit load
 * (BigUint64Array): the loop thread stores whole 64-bit values, so a read never mixes the halves of
 * two different values.
 */
export function sumStats(words: BigUint64Array, threads: number): NativeStats {
  const out = {} as NativeStats;
  for (let i = 0; i < STAT_NAMES.length; i++) {
    let sum = 0n;
    for (let t = 0; t < threads; t++) sum += words[t * STATS_STRIDE + i]!;
    out[STAT_NAMES[i]!] = Number(sum);
  }
  return out;
}

/**
 * The totals users read: what the JS thread sent itself (handler mode's low-load shortcut) went out
 * too. The loops' own counters leave it out (each counter has one writer), so it is added here.
 */
function withDirectSends(s: NativeStats): NativeStats {
  s.bytesOut += s.jsDirectBytes;
  s.sendCompletions += s.jsDirectSends;
  s.shortSends += s.jsDirectShort;
  s.sendEagain += s.jsDirectEagain;
  return s;
}

/** Starts a native server; throws the shim's NativeError (not an Error) on failure. */
export function startNative(cfg: NativeConfig, host: string): NativeServer {
  const lib = native().symbols;
  const err = newErrorBuffer();
  const handle = lib.bunring_server_start(encodeConfig(cfg), cString(host), err);
  if (!handle) throw readError(err);
  return wrapNative(handle as Pointer);
}

/** One loop's handler channel, mapped once: its control words, record rings and byte areas. */
export interface NativeChannel {
  /** The control words (ev_tail, rx_tail, ... js_sleeping) as u32s, for Atomics. */
  words: Int32Array;
  /** Index into `words` of each control word. */
  at: { evTail: number; rxTail: number; cmdHead: number; txHead: number; cSleeping: number; cWantsRoom: number; evHead: number; rxHead: number; cmdTail: number; txTail: number; jsSleeping: number };
  /** Event and command records, 4 u32 each: typeGen, slot, offset, len. */
  events: Uint32Array;
  commands: Uint32Array;
  rx: Uint8Array;
  tx: Uint8Array;
  /** Bytes each connection slot has handed to the kernel (reset when the slot opens). */
  sent: Uint32Array;
  /** Wakes the loop (eventfd write): call only when words[at.cSleeping] is 1. */
  wake(): void;
  /**
   * The low-load shortcut (bunring_js_send): sends `bytes` (not empty) on connection (slot, gen) from
   * this thread. Only when nothing this connection wrote is unsent. Returns the bytes the socket
   * took (0 when it is full), or a negative errno (-ESTALE: the connection is gone).
   */
  send(slot: number, gen: number, bytes: Uint8Array): number;
  /** Sets a JS_OPTION on connection (slot, gen) from this thread (bunring_js_set_option): 0 or a negative errno. */
  setOption(slot: number, gen: number, option: number, value: number): number;
  /** Its local address into `out` (JS_ADDRESS_BYTES, OPEN's layout; bunring_js_local_address): 0 or a negative errno. */
  localAddress(slot: number, gen: number, out: Uint8Array): number;
}

export interface NativeHandlerServer extends NativeServer {
  channels: NativeChannel[];
}

/**
 * Starts a server in handler mode; `doorbell(loop)` runs on the JS thread when loop `loop` published
 * events while JS slept. Throws the shim's NativeError on failure. The callback stays alive until
 * free().
 */
export function startHandlerNative(cfg: NativeConfig, host: string, doorbell: (loop: number) => void): NativeHandlerServer {
  const n = native();
  const lib = n.symbols;
  const err = newErrorBuffer();
  const callback = new JSCallback(doorbell, { args: [FFIType.u32], returns: FFIType.void, threadsafe: true });
  const handle = lib.bunring_server_start_handler(encodeConfig({ ...cfg, handler: true }), cString(host), callback, err);
  if (!handle) {
    callback.close();
    throw readError(err);
  }
  const server = wrapNative(handle as Pointer, () => callback.close());
  const c = n.channel;
  const channels = Array.from({ length: server.threads }, (_, loop): NativeChannel => {
    const base = lib.bunring_js_channel_of(handle as Pointer, loop) as Pointer;
    const buf = toArrayBuffer(base, 0, c.size);
    const sentPtr = lib.bunring_js_sent_of(handle as Pointer, loop) as Pointer;
    return {
      words: new Int32Array(buf, 0, c.events / 4),
      at: {
        evTail: c.evTail / 4,
        rxTail: c.rxTail / 4,
        cmdHead: c.cmdHead / 4,
        txHead: c.txHead / 4,
        cSleeping: c.cSleeping / 4,
        cWantsRoom: c.cWantsRoom / 4,
        evHead: c.evHead / 4,
        rxHead: c.rxHead / 4,
        cmdTail: c.cmdTail / 4,
        txTail: c.txTail / 4,
        jsSleeping: c.jsSleeping / 4,
      },
      events: new Uint32Array(buf, c.events, JS_RECORDS * 4),
      commands: new Uint32Array(buf, c.commands, JS_RECORDS * 4),
      rx: new Uint8Array(buf, c.rx, JS_RX_BYTES),
      tx: new Uint8Array(buf, c.tx, JS_TX_BYTES),
      sent: new Uint32Array(toArrayBuffer(sentPtr, 0, cfg.maxConnections * 4)),
      wake: () => lib.bunring_js_wake(handle as Pointer, loop),
      send: (slot, gen, bytes) => lib.bunring_js_send(handle as Pointer, loop, slot, gen, bytes, bytes.length) as number,
      setOption: (slot, gen, option, value) => lib.bunring_js_set_option(handle as Pointer, loop, slot, gen, option, value) as number,
      localAddress: (slot, gen, out) => lib.bunring_js_local_address(handle as Pointer, loop, slot, gen, out) as number,
    };
  });
  return { ...server, channels };
}

function wrapNative(handle: Pointer, onFree?: () => void): NativeServer {
  const lib = native().symbols;
  const threads = lib.bunring_server_threads(handle);
  // One mapping of the counters for the server's life: threads blocks of STATS_STRIDE u64 values.
  const statsPtr = lib.bunring_server_stats(handle) as Pointer;
  const words = new BigUint64Array(toArrayBuffer(statsPtr, 0, threads * STATS_STRIDE * 8));
  let freed = false;
  return {
    port: lib.bunring_server_port(handle),
    threads,
    features: featureList(lib.bunring_server_features(handle)),
    readStats: () => withDirectSends(sumStats(words, threads)),
    stop(drainMs) {
      if (!freed && lib.bunring_server_stop(handle, drainMs) !== 0) {
        throw new RangeError(`bunring: drainMs ${drainMs} is outside what the native library allows`);
      }
    },
    closeListener() {
      if (!freed) lib.bunring_server_close_listener(handle);
    },
    done() {
      return freed || lib.bunring_server_done(handle) === 1;
    },
    free() {
      if (freed) return;
      freed = true;
      lib.bunring_server_free(handle);
      onFree?.();
    },
  };
}

export interface ProbeResult {
  kernel: string;
  features: string[];
  error?: NativeError;
}

/**
 * 4 or 6 when `host` is an IPv4 or IPv6 literal as the library parses it when it binds, else 0 (a
 * string with a NUL in it is never one).
 */
export function hostFamily(host: string): 0 | 4 | 6 {
  if (host.includes("\0")) return 0;
  const family = native().symbols.bunring_host_family(cString(host));
  return family === 4 || family === 6 ? family : 0;
}

/** What the running kernel's io_uring supports. */
export function probeNative(): ProbeResult {
  const lib = native().symbols;
  const err = newErrorBuffer();
  const release = new Uint8Array(128);
  const bits = lib.bunring_probe(err, release, release.length);
  const kernel = cStringAt(release, 0, release.length);
  const error = readError(err);
  return { kernel, features: featureList(bits), ...(error.code !== 0 ? { error } : {}) };
}

export interface UserData {
  op: number;
  bid: number;
  slot: number;
  gen: number;
}

/** user_data encode/decode through the shim's own functions (layout in c-shim/bunring.h). */
export const userData = {
  encode(op: number, bid: number, slot: number, gen: number): bigint {
    return BigInt(native().symbols.bunring_ud_encode(op, bid, slot, gen));
  },
  decode(ud: bigint): UserData {
    const s = native().symbols;
    return {
      op: s.bunring_ud_decode_op(ud),
      bid: s.bunring_ud_decode_bid(ud),
      slot: s.bunring_ud_decode_slot(ud),
      gen: s.bunring_ud_decode_gen(ud),
    };
  },
  limits: { op: 0xff, bid: 0xffff, slot: (1 << 20) - 1, gen: (1 << 20) - 1 },
} as const;
