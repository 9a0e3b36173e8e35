// socket.ts — the Socket listen() hands to handlers: one per connection, shaped like Bun.listen's
// socket (write/end/terminate/shutdown/pause/resume/flush, data, readyState, remoteAddress...), turning
// calls into commands on its loop's channel (src/channel.ts).
//
// A class rather than the project's usual object-of-closures: a server may hold tens of thousands of
// these, and a class keeps one copy of the ten methods on the prototype instead of ten closures per
// connection; the fields the dispatcher (src/listen.ts) updates are plain properties. Per connection
// it is this one object: the peer's address is kept as a number (IPv4) and spelled out only when
// remoteAddress is read.
import { JS_ADDRESS_BYTES, JS_COMMAND, JS_OPTION } from "../ffi/server.ts";
import type { Channel } from "./channel.ts";

/**
 * Bun.listen's socket.readyState: 1 while open, -1 once ended, terminated or closed (Bun's other
 * values, -2 shut down, 0 closed and 2, do not occur here).
 */
export type ReadyState = -2 | -1 | 0 | 1 | 2;

/** What a socket needs from its loop: the channel, the loop's sent[] counters and the write limit. */
export interface SocketContext {
  readonly channel: Channel;
  /** sent[slot]: bytes the loop handed to the kernel for the slot's current connection. */
  readonly sent: Uint32Array;
  /** Bytes a connection may have written but not yet handed to the kernel before write() takes less. */
  readonly highWaterMark: number;
  /** Called after a command was queued: makes sure it gets published (now or at the end of the tick). */
  touched(): void;
  /**
   * Called when socket.timeout() gives a socket a deadline while it is not on its server's list of
   * sockets with one (its deadline was 0): the server's sweep (src/listen.ts) watches it from then
   * on. A server without a timeout handler ignores it (and never sweeps).
   */
  watchTimeout(socket: HandlerSocket<unknown>): void;
  /** write() calls that took less than they were given (the handler then waits for drain). */
  writesRefused: number;
  /** Sockets their handlers paused (pause() without resume(), not closed). */
  pausedNow: number;
  /** After resume(): delivers what was held while paused (data, then the peer's end), soon. */
  releaseHeld(socket: HandlerSocket<unknown>): void;
  /** Sets a JS_OPTION on a connection from this thread: 0 or a negative errno (-ESTALE: gone). */
  setOption(slot: number, gen: number, option: number, value: number): number;
  /** A connection's local address into `out` (JS_ADDRESS_BYTES): 0 or a negative errno. */
  localAddress(slot: number, gen: number, out: Uint8Array): number;
}

/** Data write() accepts. */
export type WriteData = string | ArrayBufferView | ArrayBuffer;

/** The socket given to listen()'s handlers. */
export interface Socket<Data = undefined> {
  /**
   * Queues bytes for the peer (a string is sent as UTF-8; byteOffset/byteLength select part of a
   * buffer, or for a string a range of UTF-16 units). Returns how many bytes it took: less than
   * given when this connection already has highWaterMark bytes not yet handed to the kernel or the
   * loop's send area is full, and then drain(socket) is called once there is room again; -1 once
   * the socket is closing or closed.
   */
  write(data: WriteData, byteOffset?: number, byteLength?: number): number;
  /**
   * Writes `data` if given, all of it (what write() would not take yet is kept and written as room
   * returns, with no drain() for it), then ends: FIN once every byte is out. From then on, as on
   * Bun.listen, no data, end, drain or timeout handler runs for this socket, only close(): when the
   * peer has closed too, or drainMs after our FIN. Returns the bytes of `data` (0 without), or -1
   * once the socket is closing or closed, or after shutdown().
   */
  end(data?: WriteData, byteOffset?: number, byteLength?: number): number;
  /** Closes now with a reset (RST); bytes not yet sent are lost. */
  terminate(): void;
  /**
   * FIN once every written byte is out; data still comes, and the peer's FIN then closes the socket
   * (close(), no end()), as on Bun.listen. (halfClose is accepted for Bun.listen's signature.)
   */
  shutdown(halfClose?: boolean): void;
  /**
   * Stops data events until resume(), as on Bun.listen: the loop stops reading (TCP backpressure
   * reaches the peer), and bytes it had read before it heard of the pause are held and delivered
   * after resume(), in order (the peer's end too, after them).
   */
  pause(): void;
  /** Reads again after pause(); what was held is delivered first (in a microtask, not inside this call). */
  resume(): void;
  /**
   * Calls the `timeout(socket)` handler once, `seconds` after this call, as Bun.listen's
   * socket.timeout() does: the time counts from the call, not from the last byte (reading or writing
   * does not postpone it; calling timeout() again, e.g. from data(), sets a new deadline from now);
   * 0 clears it; the socket is left open (the handler may end() it). `seconds` is converted like
   * Bun's (ToInt32: 1.9 is 1, 0.5 is 0); negative throws. Granularity: one sweep per server every
   * 500 ms while some socket has a deadline, so the handler runs at the first sweep at or after the
   * deadline: never before `seconds`, at most about 0.5 s after (Bun.listen: 4 s ticks, and may run
   * up to 4 s early). No effect on a closed socket, or without a timeout handler.
   */
  timeout(seconds: number): void;
  /** Publishes this loop's queued commands now and wakes the loop (write() does this by the end of the tick anyway). */
  flush(): void;
  /** Handler state, free for the handlers to set. */
  data: Data;
  readonly readyState: ReadyState;
  /** Bytes write() and end() accepted on this connection. */
  readonly bytesWritten: number;
  /** The peer's address: "127.0.0.1", "::1", "::ffff:10.0.0.1"... */
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly remoteFamily: "IPv4" | "IPv6";
  /** The address the peer connected to (asked of the kernel when first read; "" if already closed). */
  readonly localAddress: string;
  readonly localPort: number;
  readonly localFamily: "IPv4" | "IPv6";
  /** TCP_NODELAY (on by default: the listener sets it). true if it was set, false on a closed socket. */
  setNoDelay(noDelay?: boolean): boolean;
  /**
   * SO_KEEPALIVE; with initialDelay (ms) > 0 also TCP_KEEPIDLE = initialDelay / 1000 s and 10 probes
   * 1 s apart, as Bun sets them. true if it was set, false on a closed socket.
   */
  setKeepAlive(enable?: boolean, initialDelay?: number): boolean;
  /** Accepted for Bun.listen's API, and do nothing: the listener, not its sockets, keeps the process alive. */
  ref(): void;
  unref(): void;
}

const OPEN = 0;
const CLOSING = 1;
const CLOSED = 2;
const READY_STATES: readonly ReadyState[] = [1, -1, -1];

function checkRange(what: string, value: unknown, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`bunring: socket.write ${what} must be an integer from 0 to ${max}, got ${String(value)}`);
  }
  return value;
}

/** Bytes of a BufferSource, narrowed by byteOffset/byteLength (checked against its size). */
function bytesOf(data: ArrayBufferView | ArrayBuffer, byteOffset?: number, byteLength?: number): Uint8Array {
  let bytes: Uint8Array;
  if (data instanceof Uint8Array) bytes = data;
  else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  else if ((data as unknown) instanceof ArrayBuffer || (data as unknown) instanceof SharedArrayBuffer) bytes = new Uint8Array(data);
  else throw new TypeError(`bunring: socket.write takes a string, an ArrayBufferView or an ArrayBuffer, got ${typeof data}`);
  if (byteOffset === undefined && byteLength === undefined) return bytes;
  const start = byteOffset === undefined ? 0 : checkRange("byteOffset", byteOffset, bytes.length);
  const length = byteLength === undefined ? bytes.length - start : checkRange("byteLength", byteLength, bytes.length - start);
  return bytes.subarray(start, start + length);
}

function textOf(data: string, offset?: number, length?: number): string {
  if (offset === undefined && length === undefined) return data;
  const start = offset === undefined ? 0 : checkRange("byteOffset", offset, data.length);
  const n = length === undefined ? data.length - start : checkRange("byteLength", length, data.length - start);
  return data.slice(start, start + n);
}

/** Strings up to this many UTF-8 bytes are encoded into one reused buffer to try the shortcut. */
const SMALL_TEXT_BYTES = 16384;
const smallText = new Uint8Array(SMALL_TEXT_BYTES);
const encoder = new TextEncoder();

/** `text` as UTF-8 in the reused buffer (valid until the next call), or null when it does not fit. */
function encodeSmall(text: string): Uint8Array | null {
  if (text.length > SMALL_TEXT_BYTES) return null;
  const r = encoder.encodeInto(text, smallText);
  return r.read === text.length ? smallText.subarray(0, r.written) : null;
}

/** Dotted IPv4 text of a u32 (first byte most significant); the last one is reused. */
let lastIPv4 = -1;
let lastIPv4Text = "";
function ipv4Text(a: number): string {
  if (a !== lastIPv4) {
    lastIPv4 = a;
    lastIPv4Text = `${a >>> 24}.${(a >>> 16) & 0xff}.${(a >>> 8) & 0xff}.${a & 0xff}`;
  }
  return lastIPv4Text;
}

/**
 * An address in OPEN's layout (JS_ADDRESS_BYTES: u16 LE family, 2 IPv4 or 10 IPv6; u16 LE port; 16
 * address bytes) at bytes[at]: an IPv4 address as a u32 (spelled out only when read), an IPv6 one as
 * text. The port is the u16 at at + 2.
 */
export function addressFrom(bytes: Uint8Array, at: number): number | string {
  const family = bytes[at]! | (bytes[at + 1]! << 8);
  if (family !== 10) return ((bytes[at + 4]! << 24) | (bytes[at + 5]! << 16) | (bytes[at + 6]! << 8) | bytes[at + 7]!) >>> 0;
  const a = bytes.subarray(at + 4, at + 20);
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((a[i]! << 8) | a[i + 1]!);
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) return `::ffff:${a[12]}.${a[13]}.${a[14]}.${a[15]}`;
  // RFC 5952: the longest run (>= 2) of zero groups becomes "::".
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(":");
  return best < 0 ? hex(groups) : `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLen))}`;
}

/** Bun's conversion of timeout()'s argument (ToInt32 of ToNumber). */
function toInt32(value: unknown): number {
  return Number(value) | 0;
}

/**
 * The socket's yes/no state, bits of one field: a server holds tens of thousands of sockets, and
 * every field counts (JSC keeps a few in the object itself and moves the rest out: one field past
 * that, a `local` added on 2026-12-01, raised the JS echo's peak RSS at 10,000 connections by 7 MiB).
 */
const DRAIN_REQUESTED = 1; // a WANT_DRAIN is queued and its DRAIN has not come yet
const PAUSED = 2; // the handler paused it
const LOOP_PAUSED = 4; // the loop has a PAUSE of ours in effect: from pause() until what was held has been delivered after resume()
const HELD_END = 8; // the peer's end came while paused (or behind held data): delivered after them
const TERMINATED = 16; // terminate() was called here: the close that follows is ours, not an error
const CLOSE_NOTIFIED = 32; // close(socket) has been called (exactly once)
const WRITE_SHUT = 64; // shutdown() or end() was called: write() takes nothing more

export class HandlerSocket<Data = undefined> implements Socket<Data> {
  data: Data;
  /** 0 open, 1 closing (we ended), 2 closed (closed, or terminated by us). */
  state = OPEN;
  /** The bits above. */
  private bits = 0;
  /** Bytes this connection wrote, as a free-running u32 (compared with sent[slot]). */
  written = 0;
  bytesWritten = 0;
  /** DATA chunks that came while paused (or behind such chunks), oldest first; null when none. */
  held: unknown[] | null = null;
  /** end(data)'s bytes write() could not take yet: more goes on every DRAIN, then END. */
  endRest: Uint8Array | null = null;
  /** The local address once read: IPv4 as a u32 or IPv6 text, and the port. */
  private local: { address: number | string; port: number } | undefined = undefined;
  /**
   * performance.now() at which the timeout handler is due, and then on the server's list of sockets
   * with a deadline (see SocketContext.watchTimeout; unless the server has no timeout handler); 0:
   * none, and not on that list; -1: none, but still on it (the next sweep drops it).
   */
  deadline = 0;

  constructor(
    readonly ctx: SocketContext,
    readonly slot: number,
    readonly gen: number,
    /** The peer's IPv4 address as a u32, or its IPv6 address as text. */
    private readonly peer: number | string,
    readonly remotePort: number,
    data: Data,
  ) {
    this.data = data;
  }

  private flag(bit: number, on: boolean): void {
    this.bits = on ? this.bits | bit : this.bits & ~bit;
  }
  get drainRequested(): boolean {
    return (this.bits & DRAIN_REQUESTED) !== 0;
  }
  set drainRequested(on: boolean) {
    this.flag(DRAIN_REQUESTED, on);
  }
  get paused(): boolean {
    return (this.bits & PAUSED) !== 0;
  }
  set paused(on: boolean) {
    this.flag(PAUSED, on);
  }
  get loopPaused(): boolean {
    return (this.bits & LOOP_PAUSED) !== 0;
  }
  set loopPaused(on: boolean) {
    this.flag(LOOP_PAUSED, on);
  }
  get heldEnd(): boolean {
    return (this.bits & HELD_END) !== 0;
  }
  set heldEnd(on: boolean) {
    this.flag(HELD_END, on);
  }
  get terminated(): boolean {
    return (this.bits & TERMINATED) !== 0;
  }
  set terminated(on: boolean) {
    this.flag(TERMINATED, on);
  }
  get closeNotified(): boolean {
    return (this.bits & CLOSE_NOTIFIED) !== 0;
  }
  set closeNotified(on: boolean) {
    this.flag(CLOSE_NOTIFIED, on);
  }
  get writeShut(): boolean {
    return (this.bits & WRITE_SHUT) !== 0;
  }
  set writeShut(on: boolean) {
    this.flag(WRITE_SHUT, on);
  }

  get readyState(): ReadyState {
    return READY_STATES[this.state]!;
  }

  get remoteAddress(): string {
    return typeof this.peer === "number" ? ipv4Text(this.peer) : this.peer;
  }

  get remoteFamily(): "IPv4" | "IPv6" {
    return typeof this.peer === "number" ? "IPv4" : "IPv6";
  }

  private localOnce(): { address: number | string; port: number } | undefined {
    if (this.local === undefined && this.state !== CLOSED) {
      const out = new Uint8Array(JS_ADDRESS_BYTES);
      if (this.ctx.localAddress(this.slot, this.gen, out) === 0) this.local = { address: addressFrom(out, 0), port: out[2]! | (out[3]! << 8) };
    }
    return this.local;
  }

  get localAddress(): string {
    const a = this.localOnce()?.address;
    return a === undefined ? "" : typeof a === "number" ? ipv4Text(a) : a;
  }

  get localPort(): number {
    return this.localOnce()?.port ?? 0;
  }

  get localFamily(): "IPv4" | "IPv6" {
    return typeof this.localOnce()?.address === "string" ? "IPv6" : "IPv4";
  }

  setNoDelay(noDelay = true): boolean {
    return this.state !== CLOSED && this.ctx.setOption(this.slot, this.gen, JS_OPTION.noDelay, noDelay ? 1 : 0) === 0;
  }

  setKeepAlive(enable = false, initialDelay = 0): boolean {
    if (this.state === CLOSED || this.ctx.setOption(this.slot, this.gen, JS_OPTION.keepAlive, enable ? 1 : 0) !== 0) return false;
    const seconds = Math.floor(Number(initialDelay) / 1000);
    if (!enable || !(seconds > 0)) return true; // 0: leave the delay as it is (Bun's rule)
    return this.ctx.setOption(this.slot, this.gen, JS_OPTION.keepIdle, Math.min(seconds, 0x7fff)) === 0;
  }

  ref(): void {}

  unref(): void {}

  /** Bytes written but not yet handed to the kernel (in tx, in the command ring or in the loop's queue). */
  queued(): number {
    return (this.written - Atomics.load(this.ctx.sent, this.slot)) >>> 0;
  }

  write(data: WriteData, byteOffset?: number, byteLength?: number): number {
    if (this.state !== OPEN || this.writeShut) return -1;
    return this.writeNow(data, byteOffset, byteLength);
  }

  /** write() without the state check (end() uses it for its bytes after the socket is closing). */
  private writeNow(data: WriteData, byteOffset?: number, byteLength?: number): number {
    const queued = this.queued();
    const allowance = this.ctx.highWaterMark - queued;
    let taken: number;
    let all: boolean;
    let bytes: Uint8Array | null;
    let text = "";
    if (typeof data === "string") {
      text = textOf(data, byteOffset, byteLength);
      if (text.length === 0) return 0;
      // Encoded apart only for the shortcut; otherwise straight into tx (writeString), one pass.
      bytes = queued === 0 && this.ctx.channel.canSendDirect() ? encodeSmall(text) : null;
    } else {
      bytes = bytesOf(data, byteOffset, byteLength);
      if (bytes.length === 0) return 0;
    }
    // The low-load shortcut: nothing of ours is unsent, so the loop has nothing queued for this
    // connection and the bytes may go out from here (Channel.sendDirect says whether the loop sleeps).
    let direct = 0;
    if (queued === 0 && bytes !== null && bytes.length <= allowance) {
      direct = this.ctx.channel.sendDirect(this.slot, this.gen, bytes);
      if (direct === bytes.length) {
        this.bytesWritten += direct;
        return direct;
      }
    }
    if (bytes === null) {
      const r = allowance > 0 ? this.ctx.channel.writeString(this.slot, this.gen, text, allowance) : { bytes: 0, chars: 0 };
      taken = r.bytes;
      all = r.chars === text.length;
    } else {
      const rest = direct > 0 ? bytes.subarray(direct) : bytes;
      const room = allowance - direct;
      taken = room > 0 ? this.ctx.channel.writeBytes(this.slot, this.gen, rest, room) : 0;
      all = taken === rest.length;
    }
    this.bytesWritten += direct;
    if (taken > 0) {
      this.written = (this.written + taken) >>> 0;
      this.bytesWritten += taken;
      this.ctx.touched();
    }
    if (!all) {
      this.ctx.writesRefused++;
      this.wantDrain();
    }
    return direct + taken;
  }

  end(data?: WriteData, byteOffset?: number, byteLength?: number): number {
    if (this.state !== OPEN) return data === undefined ? 0 : -1;
    // Bad data throws here, before anything changed.
    const bytes = data === undefined || this.writeShut ? null : typeof data === "string" ? encoder.encode(textOf(data, byteOffset, byteLength)) : bytesOf(data, byteOffset, byteLength);
    // From here on, as on Bun.listen, the handlers hear nothing more of this socket but close().
    this.state = CLOSING;
    if (this.writeShut) return data === undefined ? 0 : -1; // after shutdown(): the FIN is on its way
    this.writeShut = true;
    if (bytes === null) {
      this.command(JS_COMMAND.end);
      return 0;
    }
    const n = this.writeNow(bytes);
    if (n === bytes.length) {
      this.command(JS_COMMAND.end);
      return n;
    }
    // The rest waits here (a copy: the caller may reuse its buffer) for the DRAIN writeNow asked for.
    this.endRest = bytes.slice(n);
    return bytes.length;
  }

  /** On DRAIN after end(data) took less than all: more of the rest, and END once it is all written. */
  continueEnd(): void {
    const rest = this.endRest;
    if (rest === null || this.state === CLOSED) {
      this.endRest = null;
      return;
    }
    const n = this.writeNow(rest);
    if (n < rest.length) {
      this.endRest = rest.subarray(n); // writeNow asked for the next DRAIN
      return;
    }
    this.endRest = null;
    this.command(JS_COMMAND.end);
  }

  shutdown(_halfClose?: boolean): void {
    if (this.state !== OPEN || this.writeShut) return;
    this.writeShut = true; // still open for reading, as on Bun.listen (readyState stays 1)
    this.command(JS_COMMAND.end);
  }

  terminate(): void {
    if (this.state === CLOSED) return;
    this.state = CLOSED;
    this.terminated = true;
    this.command(JS_COMMAND.terminate);
  }

  pause(): void {
    if (this.state === CLOSED || this.paused) return;
    this.paused = true;
    this.ctx.pausedNow++;
    if (this.loopPaused) return; // still in effect: what was held is being delivered
    this.loopPaused = true;
    this.command(JS_COMMAND.pause);
  }

  resume(): void {
    if (this.state === CLOSED || !this.paused) return;
    this.paused = false;
    this.ctx.pausedNow--;
    if (this.held !== null || this.heldEnd) this.ctx.releaseHeld(this); // resumes the loop once delivered
    else this.resumeLoop();
  }

  /** Lets the loop read again (after resume(), once nothing is held). */
  resumeLoop(): void {
    if (!this.loopPaused || this.state === CLOSED) return;
    this.loopPaused = false;
    this.command(JS_COMMAND.resume);
  }

  timeout(seconds: number): void {
    if (this.state === CLOSED) return;
    // As Bun's: no argument is an error, undefined is not (it converts to 0).
    if (arguments.length === 0) throw new TypeError("bunring: socket.timeout(seconds) expects 1 argument, got 0");
    const t = toInt32(seconds);
    if (t < 0) throw new RangeError(`bunring: socket.timeout(seconds) takes 0 (none) or a positive number of seconds, got ${String(seconds)}`);
    if (t === 0) {
      if (this.deadline > 0) this.deadline = -1;
      return;
    }
    const watched = this.deadline !== 0;
    // A clock read (no system call); the sweep compares it with its own.
    this.deadline = performance.now() + t * 1000;
    if (!watched) this.ctx.watchTimeout(this);
  }

  flush(): void {
    this.ctx.channel.publish();
  }

  /** Asks the loop for a DRAIN event once this connection has nothing left to send (once per wait). */
  wantDrain(): void {
    if (this.drainRequested || this.state === CLOSED) return;
    this.drainRequested = true;
    this.command(JS_COMMAND.wantDrain);
  }

  private command(type: number): void {
    this.ctx.channel.command(type, this.slot, this.gen);
    this.ctx.touched();
  }
}
