// listen.ts — listen(): Bun.listen's handler API on bunring's loops (issue #10, handler mode). The C
// loops accept, read and write on their own threads; each hands its events to this thread through its
// channel (src/channel.ts), and the handlers run here, one socket object per connection
// (src/socket.ts). The doorbell (called only when JS said it sleeps) brings a loop's events here;
// commands the handlers queue are published at the end of each batch, or by the end of the tick for
// writes made outside event processing (after an await, from a timer). socket.timeout() deadlines are
// checked by one coarse sweep per server, running only while some socket has one.
import { JS_EVENT, JS_RX_BYTES, STAT_NAMES, startHandlerNative, type NativeError, type NativeHandlerServer } from "../ffi/server.ts";
import { openChannel, type Channel } from "./channel.ts";
import { OPTION_TABLE } from "./option-table.ts";
import { resolveOptions, type Backend, type ServeOptions } from "./options.ts";
import { probe, stopControl, toError, type ServerStats } from "./server.ts";
import { addressFrom, HandlerSocket, type Socket, type SocketContext } from "./socket.ts";

export type { Socket, ReadyState, WriteData } from "./socket.ts";

export type BinaryType = "buffer" | "uint8array" | "arraybuffer";

export interface BinaryTypes {
  buffer: Buffer;
  uint8array: Uint8Array;
  arraybuffer: ArrayBuffer;
}

/** The handlers, as Bun.listen's `socket` option. All optional. */
export interface SocketHandler<Data = undefined, BT extends BinaryType = "buffer"> {
  open?(socket: Socket<Data>): void | Promise<void>;
  /** Bytes from the peer: the handler's to keep, except with zeroCopy (valid only during the call). */
  data?(socket: Socket<Data>, data: BinaryTypes[BT]): void | Promise<void>;
  /** After a write() that took less than it was given: there is room again. */
  drain?(socket: Socket<Data>): void | Promise<void>;
  /** The peer sent FIN. Unless allowHalfOpen, the socket is ended right after. */
  end?(socket: Socket<Data>): void | Promise<void>;
  /** Exactly once per opened connection; `error` when the connection failed (reset, or closed as a stalled peer). */
  close?(socket: Socket<Data>, error?: Error): void | Promise<void>;
  /** A handler threw (or its promise rejected); the connection is then terminated. */
  error?(socket: Socket<Data>, error: Error): void | Promise<void>;
  /**
   * Once per socket.timeout(seconds), when that many seconds passed since the call (at most about
   * 0.5 s later: see Socket.timeout). The socket stays open unless the handler ends it.
   */
  timeout?(socket: Socket<Data>): void | Promise<void>;
  /** As Bun.listen spells it; the top-level binaryType option is the same thing. */
  binaryType?: BT;
}

export interface ListenOptions<Data = undefined, BT extends BinaryType = "buffer"> extends Omit<ServeOptions, "backend"> {
  /**
   * "uring" (the default), "epoll", or "auto": io_uring when the kernel allows it, else epoll.
   */
  backend?: "epoll" | "auto" | "uring";
  /** Alias of `host`, as Bun.listen spells it. */
  hostname?: string;
  /** Keep the connection writable after the peer's FIN (else it is ended right after end()). Default false. */
  allowHalfOpen?: boolean;
  /** What data() receives: "buffer" (default), "uint8array" or "arraybuffer". */
  binaryType?: BT;
  /** Bytes a connection may have written and not yet handed to the kernel before write() takes less. Default 65536. */
  highWaterMark?: number;
  /** data() gets a view into the receive area, valid only during the call (no copy; "arraybuffer" still copies). Default false. */
  zeroCopy?: boolean;
  /** The initial `socket.data` of every connection. */
  data?: Data;
  socket: SocketHandler<Data, BT>;
}

export interface Listener {
  readonly port: number;
  /** The address listened on (the host literal). */
  readonly hostname: string;
  readonly backend: Backend;
  readonly threads: number;
  /** True once stop() has finished. */
  readonly stopped: boolean;
  /** Live counters summed over the loops (the final values once stopped). */
  stats(): ListenStats;
  /**
   * Stops accepting; open connections get up to drainMs (default: the drainMs option) to finish
   * what was written, then close (close() is called for each); then frees everything. As on
   * Bun.listen, `true` (closeActive) closes them now (drainMs 0), and `false` only stops accepting:
   * the connections are served until they close, then everything is freed (a later stop() with
   * `true` or `{ drainMs }` closes them as usual).
   */
  stop(options?: { drainMs?: number } | boolean): Promise<void>;
  /** Resolves once stop() has finished. */
  readonly closed: Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export const LISTEN_DEFAULTS = Object.freeze({ highWaterMark: 65536, allowHalfOpen: false, binaryType: "buffer", zeroCopy: false });
const HIGH_WATER_MARK_MIN = 1024;
const HIGH_WATER_MARK_MAX = 16 << 20;
const BINARY_TYPES: readonly string[] = ["buffer", "uint8array", "arraybuffer"];
const HANDLER_NAMES = ["open", "data", "drain", "end", "close", "error", "timeout"] as const;
const LISTEN_ONLY = ["hostname", "allowHalfOpen", "binaryType", "highWaterMark", "zeroCopy", "data", "socket"] as const;
/** Event batches handled per loop before yielding to the event loop (then it comes back at once). */
const BATCHES_PER_TURN = 8;
/** How often a server looks for socket.timeout() deadlines that passed, while some socket has one. */
export const TIMEOUT_SWEEP_MS = 500;
const RX_MASK = JS_RX_BYTES - 1;

type Handlers = { [K in (typeof HANDLER_NAMES)[number]]?: (socket: HandlerSocket<unknown>, arg?: unknown) => unknown };

function show(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "function") return "a function";
  if (typeof value === "object" && value !== null) return Array.isArray(value) ? "an array" : "an object";
  return String(value);
}

function checkBoolean(name: string, value: unknown, dflt: boolean): boolean {
  if (value === undefined) return dflt;
  if (typeof value !== "boolean") throw new TypeError(`bunring: listen() ${name} must be true or false, got ${show(value)}`);
  return value;
}

function checkHighWaterMark(value: unknown): number {
  if (value === undefined) return LISTEN_DEFAULTS.highWaterMark;
  const allowed = `an integer from ${HIGH_WATER_MARK_MIN} to ${HIGH_WATER_MARK_MAX}`;
  if (typeof value !== "number") throw new TypeError(`bunring: listen() highWaterMark must be ${allowed}, got ${show(value)} (${typeof value})`);
  if (!Number.isInteger(value) || value < HIGH_WATER_MARK_MIN || value > HIGH_WATER_MARK_MAX) {
    throw new RangeError(`bunring: listen() highWaterMark must be ${allowed}, got ${show(value)}`);
  }
  return value;
}

function checkBinaryType(name: string, value: unknown): BinaryType | undefined {
  if (value === undefined) return undefined;
  if (typeof value === "string" && BINARY_TYPES.includes(value)) return value as BinaryType;
  const Kind = typeof value === "string" ? RangeError : TypeError;
  throw new Kind(`bunring: listen() ${name} must be "buffer", "uint8array" or "arraybuffer", got ${show(value)}`);
}

function checkHandlers(value: unknown): { handlers: Handlers; binaryType: BinaryType | undefined } {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new TypeError(`bunring: listen() socket must be an object of handlers (${HANDLER_NAMES.join(", ")}), got ${show(value)}`);
  }
  const o = value as Record<string, unknown>;
  const handlers: Handlers = {};
  for (const key of Object.keys(o)) {
    if (key === "binaryType") continue;
    if (!(HANDLER_NAMES as readonly string[]).includes(key)) {
      throw new TypeError(`bunring: listen() socket.${key} is not a handler listen() knows; handlers: ${HANDLER_NAMES.join(", ")}, and binaryType`);
    }
  }
  for (const name of HANDLER_NAMES) {
    const fn = o[name];
    if (fn === undefined) continue;
    if (typeof fn !== "function") throw new TypeError(`bunring: listen() socket.${name} must be a function, got ${show(fn)}`);
    handlers[name] = fn as Handlers[typeof name];
  }
  return { handlers, binaryType: checkBinaryType("socket.binaryType", o.binaryType) };
}

/** Everything listen() checks before anything starts. */
function resolveListenOptions(options: unknown) {
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new TypeError(`bunring: listen() options must be an object with at least socket: { ...handlers }, got ${show(options)}`);
  }
  const o = { ...(options as Record<string, unknown>) };
  const allowed = [...OPTION_TABLE.map((spec) => spec.name as string), ...LISTEN_ONLY];
  for (const key of Object.keys(o)) {
    if (!allowed.includes(key)) throw new TypeError(`bunring: listen() has no option ${show(key)}; options: ${allowed.join(", ")}`);
  }
  const own: Record<string, unknown> = {};
  for (const key of LISTEN_ONLY) {
    own[key] = o[key];
    delete o[key];
  }
  if (!("socket" in options)) throw new TypeError("bunring: listen() needs socket: { open, data, drain, end, close, error } (each optional)");
  const labels: { host?: string } = {};
  if (own.hostname !== undefined) {
    if (o.host !== undefined && o.host !== own.hostname) {
      throw new RangeError(`bunring: listen() host (${show(o.host)}) and hostname (${show(own.hostname)}) are the same option; give one`);
    }
    o.host = own.hostname;
    labels.host = "hostname";
  }
  const wanted = o.backend ?? "uring";
  const { backend, host, config } = resolveOptions({ ...o, backend: wanted }, labels);
  const { handlers, binaryType: handlerBinaryType } = checkHandlers(own.socket);
  const binaryType = checkBinaryType("binaryType", own.binaryType);
  if (binaryType && handlerBinaryType && binaryType !== handlerBinaryType) {
    throw new RangeError(`bunring: listen() binaryType (${show(binaryType)}) and socket.binaryType (${show(handlerBinaryType)}) disagree; give one`);
  }
  const resolved = {
    host,
    config: { ...config, sqpoll: false },
    handlers,
    binaryType: binaryType ?? handlerBinaryType ?? (LISTEN_DEFAULTS.binaryType as BinaryType),
    allowHalfOpen: checkBoolean("allowHalfOpen", own.allowHalfOpen, LISTEN_DEFAULTS.allowHalfOpen),
    zeroCopy: checkBoolean("zeroCopy", own.zeroCopy, LISTEN_DEFAULTS.zeroCopy),
    highWaterMark: checkHighWaterMark(own.highWaterMark),
    data: own.data,
  };
  return { ...resolved, backend: backend === "auto" ? (probe().uring ? "uring" : "epoll") : backend } as const;
}

/** The close counter a CLOSE event names, as an Error when it is a failure (else undefined). */
function closeError(reason: number): Error | undefined {
  const name = STAT_NAMES[reason];
  if (name === "connClosedReset") return Object.assign(new Error("bunring: connection reset by peer"), { code: "ECONNRESET" });
  if (name === "connClosedStalled") {
    return Object.assign(new Error("bunring: connection closed: the peer stopped reading while the server ran short of buffers"), {
      code: "ETIMEDOUT",
    });
  }
  return undefined;
}

/**
 * serve()'s counters, and three the JS thread keeps: event batches it handled (jsEvents / jsBatches is
 * the batch size), write() calls that took less than they were given, and sockets their handlers
 * have paused now (pausedNow counts only the loops' own pauses).
 */
export type ListenStats = ServerStats & { jsBatches: number; jsWritesRefused: number; jsPausedNow: number };

interface LoopContext extends SocketContext {
  readonly index: number;
  /** Event batches handled (consume() calls that found events). */
  batches: number;
  /** Socket by slot, for the slot's current connection. */
  readonly sockets: (HandlerSocket<unknown> | undefined)[];
  /** A turn is scheduled (setImmediate) because events were left when the last turn ended. */
  scheduled: boolean;
  /** Runs the scheduled turn (made once per loop, not per turn). */
  again: () => void;
}

/** For tests: a listener's socket.timeout() sweep. Not part of the package's API. */
export interface TimeoutSweepState {
  /** The sweep's interval exists now. */
  readonly running: boolean;
  /** That interval keeps the process alive (it never should). */
  readonly refed: boolean;
  /** Times the interval was created since listen(). */
  readonly starts: number;
  /** Sockets on the sweep's list. */
  readonly watched: number;
}
const sweepStates = new WeakMap<Listener, () => TimeoutSweepState>();

/** For tests: the state of `listener`'s timeout sweep. */
export function timeoutSweepState(listener: Listener): TimeoutSweepState {
  const state = sweepStates.get(listener);
  if (!state) throw new TypeError("bunring: not a listener listen() returned");
  return state();
}

/**
 * Starts a server that runs Bun.listen-style handlers: it is listening when this returns. The C loops
 * do the socket I/O on their own threads (epoll backend: the default here, and the only one for now);
 * the handlers run on this thread. Throws TypeError/RangeError for a bad option, Error for backend
 * "uring" and when the socket cannot be set up (with .code such as "EADDRINUSE").
 */
export function listen<Data = undefined, BT extends BinaryType = "buffer">(options: ListenOptions<Data, BT>): Listener {
  const o = resolveListenOptions(options);
  const { handlers, allowHalfOpen, zeroCopy, binaryType } = o;
  const initialData = o.data;
  let loops: LoopContext[] = [];
  let freed = false;
  let dispatching = 0;
  let flushQueued = false;
  let retryTimer: ReturnType<typeof setTimeout> | undefined;

  /** Publishes every loop's queued commands; retries soon if some are held back by a full ring. */
  const flushAll = () => {
    flushQueued = false;
    if (freed) return;
    let held = false;
    for (const ctx of loops) {
      if (ctx.channel.unpublished) ctx.channel.publish();
      if (ctx.channel.held > 0) held = true;
    }
    if (held && !retryTimer) {
      retryTimer = setTimeout(() => {
        retryTimer = undefined;
        flushAll();
      }, 1);
    }
  };
  const touched = () => {
    if (dispatching === 0 && !flushQueued) {
      flushQueued = true;
      queueMicrotask(flushAll);
    }
  };

  const report = (s: HandlerSocket<unknown>, err: unknown) => {
    // error() takes an Error; a thrown non-Error value rides along as its cause.
    const error = err instanceof Error ? err : new Error(String(err), { cause: err });
    if (!handlers.error) {
      console.error("bunring: a listen() handler threw:", error);
      return;
    }
    try {
      const r = handlers.error.call(s, s, error);
      if (r instanceof Promise) r.catch((e2: unknown) => console.error("bunring: the error handler failed:", e2, "handling:", error));
    } catch (e2) {
      console.error("bunring: the error handler threw:", e2, "handling:", error);
    }
  };
  /** A handler failed: error(socket, err), then the connection is terminated (close still follows). */
  const fail = (s: HandlerSocket<unknown>, err: unknown) => {
    report(s, err);
    s.terminate();
    touched();
  };
  /** Runs a handler; a throw or a rejected promise goes to fail(). */
  const call = (fn: Handlers[keyof Handlers], s: HandlerSocket<unknown>, arg?: unknown) => {
    if (!fn) return;
    try {
      // `this` is the socket, as Bun.listen calls its handlers.
      const r = arg === undefined ? fn.call(s, s) : fn.call(s, s, arg);
      if (r instanceof Promise) r.catch((e: unknown) => fail(s, e));
    } catch (e) {
      fail(s, e);
    }
  };

  /** A DATA event's bytes as data() gets them; `owned`: a copy even with zeroCopy (to hold it). */
  const chunkOf = (rx: Uint8Array, at: number, len: number, owned: boolean): unknown => {
    const view = zeroCopy && !owned;
    // The default first, and without a view of rx on the way (one object less per event).
    if (binaryType === "buffer" && !view) return Buffer.copyBytesFrom(rx, at, len);
    if (binaryType === "arraybuffer") return rx.slice(at, at + len).buffer;
    if (view) return binaryType === "buffer" ? Buffer.from(rx.buffer, rx.byteOffset + at, len) : rx.subarray(at, at + len);
    return rx.slice(at, at + len);
  };

  /** The peer's FIN reaches the handler: end(), then, unless allowHalfOpen, our end. */
  const deliverEnd = (s: HandlerSocket<unknown>) => {
    call(handlers.end, s);
    if (!allowHalfOpen) s.end();
  };

  const notifyClose = (s: HandlerSocket<unknown>, error: Error | undefined) => {
    if (s.closeNotified) return;
    s.closeNotified = true;
    s.state = 2;
    // What a paused handler had not taken goes with the connection, as unread bytes do on Bun.listen.
    s.held = null;
    s.heldEnd = false;
    s.endRest = null;
    if (s.paused) {
      s.paused = false;
      s.ctx.pausedNow--;
    }
    if (!handlers.close) return;
    try {
      const r = error === undefined ? handlers.close.call(s, s) : handlers.close.call(s, s, error);
      if (r instanceof Promise) r.catch((e: unknown) => report(s, e));
    } catch (e) {
      report(s, e);
    }
  };

  // socket.timeout(): the sockets that have a deadline (or had one since the last sweep), in the
  // order they got one, and one unref'd interval per server that exists only while this list is not
  // empty. Setting a deadline is a clock read and a store: no timer is created per socket or per
  // request, so a handler may call timeout() on every data event.
  const timed: HandlerSocket<unknown>[] = [];
  let sweepTimer: ReturnType<typeof setInterval> | undefined;
  let sweepStarts = 0;
  const stopSweep = () => {
    if (sweepTimer) clearInterval(sweepTimer);
    sweepTimer = undefined;
  };
  /** Calls the timeout handler of every socket whose deadline passed; drops those left without one. */
  const sweep = () => {
    if (freed) {
      stopSweep();
      return;
    }
    const now = performance.now();
    let kept = 0;
    dispatching++;
    try {
      // A handler may give other sockets deadlines: they are appended, and visited in this loop too.
      for (let i = 0; i < timed.length; i++) {
        const s = timed[i]!;
        if (s.state === 0 && s.deadline > 0 && s.deadline <= now) {
          s.deadline = -1; // once; the handler may call timeout() again
          call(handlers.timeout, s);
        }
        if (s.state === 0 && s.deadline > 0) timed[kept++] = s;
        else s.deadline = 0;
      }
    } finally {
      timed.length = kept;
      dispatching--;
    }
    flushAll();
    if (timed.length === 0) stopSweep();
  };
  /**
   * After resume(): what came while paused, in order, unless the handler pauses again meanwhile;
   * only then may the loop read again (else a handler that pauses for every chunk would let it read
   * on while JS holds more and more).
   */
  const deliverHeld = (s: HandlerSocket<unknown>) => {
    if (freed) return;
    dispatching++;
    try {
      while (s.held !== null && s.held.length > 0 && !s.paused && s.state === 0) call(handlers.data, s, s.held.shift());
      if (s.held !== null && s.held.length === 0 && !s.paused) s.held = null;
      if (s.held === null && s.heldEnd && !s.paused && s.state === 0) {
        s.heldEnd = false;
        deliverEnd(s);
      }
      if (s.held === null && !s.heldEnd && !s.paused) s.resumeLoop();
    } finally {
      dispatching--;
    }
    flushAll();
  };
  const releaseHeld = (s: HandlerSocket<unknown>) => queueMicrotask(() => deliverHeld(s));

  const watchTimeout = (s: HandlerSocket<unknown>) => {
    if (!handlers.timeout || freed) return;
    timed.push(s);
    if (sweepTimer) return;
    sweepTimer = setInterval(sweep, TIMEOUT_SWEEP_MS);
    sweepTimer.unref(); // the listener's own keepAlive decides whether the process stays
    sweepStarts++;
  };

  const dispatcher = (ctx: LoopContext) => {
    const { sockets, channel } = ctx;
    return (type: number, slot: number, gen: number, offset: number, len: number) => {
      if (type === JS_EVENT.open) {
        const stale = sockets[slot];
        if (stale) notifyClose(stale, undefined); // not expected: the loop publishes a slot's CLOSE before its next OPEN
        const at = offset & RX_MASK;
        const rx = channel.rx;
        const s = new HandlerSocket<unknown>(ctx, slot, gen, addressFrom(rx, at), rx[at + 2]! | (rx[at + 3]! << 8), initialData);
        sockets[slot] = s;
        call(handlers.open, s);
        return;
      }
      const s = sockets[slot];
      if (!s || s.gen !== gen) return;
      switch (type) {
        case JS_EVENT.data:
          // After terminate() the connection is gone for the handlers; its CLOSE is on the way.
          if (s.state !== 0 || !handlers.data) return; // after end(): nothing but close()
          // Paused: the loop stops reading once it takes the PAUSE; what it read before is held.
          if (s.paused || s.held !== null) (s.held ??= []).push(chunkOf(channel.rx, offset & RX_MASK, len, true));
          else call(handlers.data, s, chunkOf(channel.rx, offset & RX_MASK, len, false));
          return;
        case JS_EVENT.end:
          // After end(), or after shutdown() (both sides are done: close() follows), no end(), as on Bun.listen.
          if (s.state !== 0 || s.writeShut) return;
          if (s.paused || s.held !== null) s.heldEnd = true;
          else deliverEnd(s);
          return;
        case JS_EVENT.drain:
          s.drainRequested = false;
          if (s.endRest !== null) s.continueEnd();
          else if (s.state === 0 && !s.writeShut) call(handlers.drain, s); // else write() could only return -1
          return;
        case JS_EVENT.close:
          sockets[slot] = undefined;
          notifyClose(s, s.terminated ? undefined : closeError(len));
          return;
      }
    };
  };

  /**
   * A turn on loop i: handle its events batch by batch, publishing commands after each, until it has
   * none left (then JS says it sleeps, and the loop's doorbell brings the next ones) or the turn's
   * batches are used up (then another turn is scheduled at once, so the event loop gets a say).
   */
  const turn = (i: number) => {
    const ctx = loops[i];
    if (freed || !ctx) return;
    dispatching++;
    try {
      for (let b = 0; b < BATCHES_PER_TURN; b++) {
        const n = ctx.channel.consume(visitors[i]!);
        if (n > 0) ctx.batches++;
        flushAll();
        if (n === 0 && ctx.channel.sleep()) return;
      }
    } finally {
      dispatching--;
    }
    if (!ctx.scheduled) {
      ctx.scheduled = true;
      setImmediate(ctx.again);
    }
  };

  let native: NativeHandlerServer;
  try {
    native = startHandlerNative({ ...o.config, backend: o.backend }, o.host, (loop) => turn(loop));
  } catch (e) {
    const ne = e as NativeError;
    if (typeof ne.code !== "number") throw e;
    throw toError(ne, o.backend, o.host, o.config.port);
  }
  loops = native.channels.map(
    (nc, index): LoopContext => ({
      index,
      channel: openChannel(nc),
      sent: nc.sent,
      highWaterMark: o.highWaterMark,
      touched,
      watchTimeout,
      writesRefused: 0,
      pausedNow: 0,
      releaseHeld,
      setOption: nc.setOption,
      localAddress: nc.localAddress,
      batches: 0,
      sockets: [],
      scheduled: false,
      again: () => {
        loops[index]!.scheduled = false;
        turn(index);
      },
    }),
  );
  const visitors = loops.map(dispatcher);
  // Events may already wait (connections queued before start); each turn ends by sleeping.
  for (let i = 0; i < loops.length; i++) turn(i);

  // The loops run on native threads: this timer keeps the process alive while listening.
  const keepAlive = setInterval(() => {}, 1 << 30);
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));

  const control = stopControl(native, o.config.drainMs, {
    beforeFree() {
      // The loops are gone: deliver what they published last (their CLOSEs), then close whatever a
      // full event ring kept from us.
      dispatching++;
      try {
        for (let i = 0; i < loops.length; i++) while (loops[i]!.channel.consume(visitors[i]!) > 0);
        for (const ctx of loops) {
          for (const s of ctx.sockets) if (s) notifyClose(s, undefined);
          ctx.sockets.length = 0;
        }
      } finally {
        dispatching--;
        freed = true;
      }
    },
    afterFree() {
      clearInterval(keepAlive);
      stopSweep();
      timed.length = 0;
      if (retryTimer) clearTimeout(retryTimer);
      resolveClosed();
    },
  });
  const stop = (options?: { drainMs?: number } | boolean): Promise<void> => {
    if (options === true) return control.stop({ drainMs: 0 });
    if (options === false) return control.stopAccepting();
    if (options === undefined) return control.stop();
    return control.stop(options);
  };
  const listener: Listener = {
    port: native.port,
    hostname: o.host,
    backend: o.backend,
    threads: native.threads,
    get stopped() {
      return control.stopped();
    },
    stats: () => {
      let jsBatches = 0;
      let jsWritesRefused = 0;
      let jsPausedNow = 0;
      for (const l of loops) {
        jsBatches += l.batches;
        jsWritesRefused += l.writesRefused;
        jsPausedNow += l.pausedNow;
      }
      return { ...control.stats(), jsBatches, jsWritesRefused, jsPausedNow };
    },
    stop,
    closed,
    [Symbol.asyncDispose]: () => stop(),
  };
  sweepStates.set(listener, () => ({ running: sweepTimer !== undefined, refed: sweepTimer?.hasRef() ?? false, starts: sweepStarts, watched: timed.length }));
  return listener;
}
