// channel.ts — the JS side of one loop's handler channel (protocol: c-shim/bunring.h, "Handler mode"):
// reading event records and freeing their rx bytes, writing WRITE records into the tx area (never
// wrapping a record: a short end of the area is skipped) and control records, publishing them, and
// the sleeping handshake on both sides. It knows records and rings, not sockets or handlers.
//
// Indices and byte offsets are free-running u32 (kept as numbers in 0..2^32-1 with `>>> 0`); the
// shared control words are an Int32Array, so values go in with `| 0` and come out with `>>> 0`.
import { JS_MAX_RECORD_BYTES, JS_RECORDS, JS_TX_BYTES, type NativeChannel } from "../ffi/server.ts";

const RECORD_MASK = JS_RECORDS - 1;
const TX_MASK = JS_TX_BYTES - 1;
/** Below this much contiguous room before the end of tx, a write skips to the start of the area. */
const MIN_CONTIGUOUS = 4096;
/**
 * The low-load shortcut (sendDirect) is taken only while handling a batch of at most this many events,
 * and for at most this many sends per batch (writes made later, after an await or from a timer, draw
 * on what the last batch left): a sleeping loop alone does not mean low load (on one core the loop
 * sleeps while JS handles a batch of hundreds), and under load the ring's batching wins.
 */
const DIRECT_MAX_BATCH = 4;

/** Called for each event record, in order: type (JS_EVENT), slot, generation, offset, len. */
export type EventVisitor = (type: number, slot: number, gen: number, offset: number, len: number) => void;

export interface Channel {
  /** The loop's receive area: DATA bytes live at rx[offset & (JS_RX_BYTES - 1)] until the batch is freed. */
  readonly rx: Uint8Array;
  /**
   * Visits every event published so far, then frees them (evHead) and their rx bytes (rxHead).
   * Returns how many were visited. Views into rx are valid only until this returns.
   */
  consume(visit: EventVisitor): number;
  /** Says JS sleeps, then looks again: true when asleep (the loop rings the doorbell), false when events came. */
  sleep(): boolean;
  /** Queues a control command (END, TERMINATE, WANT_DRAIN, PAUSE, RESUME); never refused (held in JS while the ring is full). */
  command(type: number, slot: number, gen: number): void;
  /** Copies up to `max` bytes of `bytes` into tx as WRITE records; returns how many it took (less when tx or the ring is full). */
  writeBytes(slot: number, gen: number, bytes: Uint8Array, max: number): number;
  /** UTF-8 encodes `text` straight into tx, up to `max` bytes (whole characters only); returns bytes taken and characters consumed. */
  writeString(slot: number, gen: number, text: string, max: number): { bytes: number; chars: number };
  /**
   * The low-load shortcut: in a small batch (DIRECT_MAX_BATCH), when the loop sleeps (and no control
   * command is held back), sends `bytes`
   * on the connection from this thread with one send(2) instead of a WRITE that would wake the loop.
   * The caller makes sure nothing it wrote to that connection is unsent. Returns the bytes sent; 0
   * means none: hand them over with writeBytes (the loop is awake, the socket is full, or the
   * connection is gone and its CLOSE is on the way).
   */
  sendDirect(slot: number, gen: number, bytes: Uint8Array): number;
  /** Whether sendDirect may send now (so that a caller prepares bytes for it only then). */
  canSendDirect(): boolean;
  /** Makes queued commands visible to the loop and wakes it if it sleeps. */
  publish(): void;
  /** Commands written but not yet published, or held because the ring was full. */
  readonly unpublished: boolean;
  /** Control commands held back because the command ring was full (publish() retries them). */
  readonly held: number;
}

const encoder = new TextEncoder();

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

export function openChannel(native: NativeChannel): Channel {
  const { words, at, events, commands, rx, tx } = native;
  // Local copies of what JS owns (it is their only writer) and the last seen loop-owned values.
  let evHead = words[at.evHead]! >>> 0;
  let cmdTail = words[at.cmdTail]! >>> 0;
  let txTail = words[at.txTail]! >>> 0;
  let publishedCmdTail = cmdTail;
  let cmdHeadSeen = Atomics.load(words, at.cmdHead) >>> 0;
  let txHeadSeen = Atomics.load(words, at.txHead) >>> 0;
  // Control commands that found the ring full, as [type, slot, gen] triples, oldest first.
  // Sends the shortcut may still make in the batch being handled (0 outside a small batch).
  let directBudget = 0;
  const held: number[] = [];
  // Where the room reserve() returned starts (a free-running tx offset): set by each reserve() call,
  // so that a write allocates nothing.
  let reservedAt = 0;

  function directOpen(): boolean {
    return directBudget > 0 && held.length === 0 && Atomics.load(words, at.cSleeping) === 1;
  }

  function ringHasRoom(): boolean {
    if (((cmdTail - cmdHeadSeen) >>> 0) < JS_RECORDS) return true;
    cmdHeadSeen = Atomics.load(words, at.cmdHead) >>> 0;
    return ((cmdTail - cmdHeadSeen) >>> 0) < JS_RECORDS;
  }

  function putRecord(type: number, slot: number, gen: number, offset: number, len: number): void {
    const i = (cmdTail & RECORD_MASK) * 4;
    commands[i] = (type | (gen << 8)) >>> 0;
    commands[i + 1] = slot;
    commands[i + 2] = offset;
    commands[i + 3] = len;
    cmdTail = (cmdTail + 1) >>> 0;
  }

  function moveHeld(): void {
    let k = 0;
    while (k < held.length && ringHasRoom()) {
      putRecord(held[k]!, held[k + 1]!, held[k + 2]!, 0, 0);
      k += 3;
    }
    if (k > 0) held.splice(0, k);
  }

  /**
   * Contiguous tx room for up to `want` bytes (at most one record's worth), starting at reservedAt;
   * 0 when tx is full. Skips the short end of the area when the request does not fit before it: the
   * loop frees the skipped bytes along with the next WRITE record.
   */
  function reserve(want: number): number {
    let free = JS_TX_BYTES - ((txTail - txHeadSeen) >>> 0);
    if (free < want) {
      txHeadSeen = Atomics.load(words, at.txHead) >>> 0;
      free = JS_TX_BYTES - ((txTail - txHeadSeen) >>> 0);
    }
    let toEnd = JS_TX_BYTES - (txTail & TX_MASK);
    if (toEnd < want && toEnd < MIN_CONTIGUOUS && free > toEnd) {
      txTail = (txTail + toEnd) >>> 0;
      free -= toEnd;
      toEnd = JS_TX_BYTES;
    }
    reservedAt = txTail;
    return Math.min(free, toEnd, JS_MAX_RECORD_BYTES, want);
  }

  return {
    rx,

    consume(visit) {
      const tail = Atomics.load(words, at.evTail) >>> 0;
      if (tail === evHead) return 0;
      directBudget = ((tail - evHead) >>> 0) <= DIRECT_MAX_BATCH ? DIRECT_MAX_BATCH : 0;
      let rxEnd = -1;
      let n = 0;
      while (evHead !== tail) {
        const i = (evHead & RECORD_MASK) * 4;
        const typeGen = events[i]!;
        const slot = events[i + 1]!;
        const offset = events[i + 2]!;
        const len = events[i + 3]!;
        evHead = (evHead + 1) >>> 0;
        const type = typeGen & 0xff;
        if (type === 1 /* OPEN */ || type === 2 /* DATA */) rxEnd = (offset + len) >>> 0;
        n++;
        visit(type, slot, typeGen >>> 8, offset, len);
      }
      if (rxEnd !== -1) Atomics.store(words, at.rxHead, rxEnd | 0);
      Atomics.store(words, at.evHead, evHead | 0);
      // A loop asleep with connections waiting for this room would not notice it otherwise.
      if (Atomics.load(words, at.cSleeping) === 1 && Atomics.load(words, at.cWantsRoom) === 1) native.wake();
      return n;
    },

    sleep() {
      Atomics.store(words, at.jsSleeping, 1);
      if (Atomics.load(words, at.evTail) >>> 0 === evHead) return true;
      Atomics.store(words, at.jsSleeping, 0);
      return false;
    },

    command(type, slot, gen) {
      if (held.length === 0 && ringHasRoom()) putRecord(type, slot, gen, 0, 0);
      else held.push(type, slot, gen);
    },

    writeBytes(slot, gen, bytes, max) {
      // Held control commands go first: a WRITE may not overtake them.
      if (held.length > 0) return 0;
      const total = Math.min(bytes.length, max);
      let done = 0;
      while (done < total && ringHasRoom()) {
        const room = reserve(total - done);
        if (room === 0) break;
        const offset = reservedAt;
        // Whole (the usual case): no view to make.
        tx.set(room === bytes.length ? bytes : bytes.subarray(done, done + room), offset & TX_MASK);
        putRecord(1 /* WRITE */, slot, gen, offset, room);
        txTail = (txTail + room) >>> 0;
        done += room;
      }
      return done;
    },

    writeString(slot, gen, text, max) {
      if (held.length > 0) return { bytes: 0, chars: 0 };
      let bytes = 0;
      let chars = 0;
      while (chars < text.length && bytes < max && ringHasRoom()) {
        // At most 3 bytes per UTF-16 unit (a surrogate pair: 4 bytes for 2 units).
        const room = reserve(Math.min(max - bytes, (text.length - chars) * 3));
        if (room === 0) break;
        const offset = reservedAt;
        // A window of at most `room` units (each takes at least one byte), not cut inside a pair.
        let end = Math.min(text.length, chars + room);
        if (end < text.length && isHighSurrogate(text.charCodeAt(end - 1))) end--;
        const part = chars === 0 && end === text.length ? text : text.slice(chars, end);
        const at0 = offset & TX_MASK;
        const r = encoder.encodeInto(part, tx.subarray(at0, at0 + room));
        if (r.written === 0) break; // the next character needs more room than there is
        putRecord(1 /* WRITE */, slot, gen, offset, r.written);
        txTail = (txTail + r.written) >>> 0;
        bytes += r.written;
        chars += r.read;
      }
      return { bytes, chars };
    },

    canSendDirect: directOpen,

    sendDirect(slot, gen, bytes) {
      if (!directOpen()) return 0;
      directBudget--;
      const n = native.send(slot, gen, bytes);
      return n > 0 ? n : 0;
    },

    publish() {
      if (held.length > 0) moveHeld();
      if (cmdTail === publishedCmdTail) return;
      // tx bytes and records were written before this store (sequentially consistent): the loop
      // sees them once it sees the tail.
      Atomics.store(words, at.txTail, txTail | 0);
      Atomics.store(words, at.cmdTail, cmdTail | 0);
      publishedCmdTail = cmdTail;
      if (Atomics.load(words, at.cSleeping) === 1) native.wake();
    },

    get unpublished() {
      return cmdTail !== publishedCmdTail || held.length > 0;
    },

    get held() {
      return held.length / 3;
    },
  };
}
