// parser.ts — a streaming parser for what Redis clients send: RESP2 requests (an array of bulk
// strings, `*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) and inline commands (`GET k\r\n`, split as redis-server's
// sdssplitargs splits them: quotes, escapes). Bytes go in with push() in pieces of any size; next()
// hands out each complete command in order.
//
// Linear in the bytes received, however they are cut: the parser keeps a cursor and its progress
// through the command it is in (the arguments so far, the bulk length it read, how far it searched
// for a line end), so nothing is scanned twice; the unconsumed bytes are moved only when the buffer
// is full and at most half of it would be in use afterwards (each byte is moved at most once on
// average). A bulk string of BIG_ARG bytes or more goes straight into its own array of the announced
// length, filled from the pieces as they come (as redis-server does for big arguments): a 512 MiB
// value is copied once.
//
// Limits and error words are redis-server's: a bulk string is at most 512 MiB (proto-max-bulk-len),
// an array at most 1024 * 1024 elements, an inline request or a length line without its end at most
// 64 KiB. A protocol error is thrown as a ProtocolError whose message is redis-server's ("Protocol
// error: invalid bulk length"); the commands before it were handed out first; after it the parser
// takes nothing more (redis-server replies "-ERR <message>" and closes the connection).

/** redis-server's proto-max-bulk-len default: the longest bulk string a request may carry. */
export const PROTO_MAX_BULK_LEN = 512 * 1024 * 1024;
/** redis-server's PROTO_INLINE_MAX_SIZE: an inline request, or a length line, without its end. */
export const PROTO_INLINE_MAX_SIZE = 64 * 1024;
/** The most elements a request array may announce (redis-server 6's limit). */
export const PROTO_MAX_MULTIBULK_LEN = 1024 * 1024;
/** Bulk strings at least this long are read into their own array (redis-server's PROTO_MBULK_BIG_ARG). */
export const BIG_ARG = 32 * 1024;

const INITIAL_BYTES = 4096;
/** Once empty, a buffer that grew past this is replaced by a small one (a burst does not pin memory). */
const IDLE_MAX_BYTES = 64 * 1024;

const CR = 13;
const LF = 10;
const STAR = 42;
const DOLLAR = 36;

const COMMAND = 0; // at the start of a command
const BULK_HEADER = 1; // in an array, before the next `$len` line
const BODY = 2; // in a bulk string shorter than BIG_ARG: waiting for len + 2 bytes in the buffer
const BIG_BODY = 3; // in a bulk string of BIG_ARG bytes or more: filling its own array

/** A request that breaks the protocol; the message is redis-server's (reply "-ERR " + message). */
export class ProtocolError extends Error {
  override name = "ProtocolError";
}

/**
 * Parses the digits of [from, to) as redis-server's string2ll does: an optional "-", then no leading
 * zero (except "0" itself), nothing else. null when it is not such a number or has more than 15
 * digits (every length this parser accepts has far fewer).
 */
function parseLength(buf: Uint8Array, from: number, to: number): number | null {
  let i = from;
  const negative = i < to && buf[i] === 45;
  if (negative) i++;
  if (i >= to || to - i > 15) return null;
  if (buf[i] === 48) return to - i === 1 && !negative ? 0 : null;
  let n = 0;
  for (; i < to; i++) {
    const d = buf[i]! - 48;
    if (d < 0 || d > 9) return null;
    n = n * 10 + d;
  }
  return negative ? -n : n;
}

/** C's isspace: space, \t, \n, \v, \f, \r. */
function isSpace(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13);
}

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

/**
 * Splits an inline request line [from, to) into arguments as redis-server's sdssplitargs does:
 * separated by white space; "double quotes" with \n \r \t \b \a \xHH and \<any> escapes; 'single
 * quotes' with \' only; a closing quote must be followed by white space or the end. The line ends at
 * its first NUL byte (sdssplitargs reads a C string). null for unbalanced quotes.
 */
export function splitInline(buf: Uint8Array, from: number, to: number): Uint8Array[] | null {
  const nul = buf.subarray(from, to).indexOf(0);
  const end = nul < 0 ? to : from + nul;
  const args: Uint8Array[] = [];
  let p = from;
  for (;;) {
    while (p < end && isSpace(buf[p]!)) p++;
    if (p >= end) return args;
    const cur: number[] = [];
    let inDouble = false;
    let inSingle = false;
    for (let done = false; !done; ) {
      const c = p < end ? buf[p]! : 0;
      if (inDouble) {
        if (p >= end) return null;
        if (c === 92 && p + 3 < end && buf[p + 1] === 120 && hexValue(buf[p + 2]!) >= 0 && hexValue(buf[p + 3]!) >= 0) {
          cur.push(hexValue(buf[p + 2]!) * 16 + hexValue(buf[p + 3]!));
          p += 3;
        } else if (c === 92 && p + 1 < end) {
          p++;
          const e = buf[p]!;
          cur.push(e === 110 ? 10 : e === 114 ? 13 : e === 116 ? 9 : e === 98 ? 8 : e === 97 ? 7 : e);
        } else if (c === 34) {
          if (p + 1 < end && !isSpace(buf[p + 1]!)) return null;
          done = true;
        } else {
          cur.push(c);
        }
      } else if (inSingle) {
        if (p >= end) return null;
        if (c === 92 && p + 1 < end && buf[p + 1] === 39) {
          p++;
          cur.push(39);
        } else if (c === 39) {
          if (p + 1 < end && !isSpace(buf[p + 1]!)) return null;
          done = true;
        } else {
          cur.push(c);
        }
      } else if (p >= end || c === 32 || c === 10 || c === 13 || c === 9) {
        done = true;
      } else if (c === 34) {
        inDouble = true;
      } else if (c === 39) {
        inSingle = true;
      } else {
        cur.push(c);
      }
      if (p < end) p++;
    }
    args.push(Uint8Array.from(cur));
  }
}

/** One connection's request parser. Every argument it hands out is its own copy, the caller's to keep. */
export class RespParser {
  private buf = new Uint8Array(INITIAL_BYTES);
  /** The unconsumed bytes are buf[start, end). */
  private start = 0;
  private end = 0;
  /** Bytes after `start` already searched for the current line's end without finding it. */
  private searched = 0;
  private phase = COMMAND;
  /** Arguments of the current array still to come, and those read so far. */
  private argsLeft = 0;
  private args: Uint8Array[] = [];
  /** The current bulk string's length, and (BIG_BODY) its array and how much of it is filled. */
  private bulkLen = 0;
  private big: Uint8Array | null = null;
  private bigFilled = 0;
  private failed: ProtocolError | null = null;

  /** Work done so far, for checking it stays linear: bytes copied (in, moved, into big arrays). */
  bytesCopied = 0;
  /** Work done so far: bytes examined while looking for line ends. */
  bytesSearched = 0;

  /** Bytes received and not yet handed out as part of a command. */
  get buffered(): number {
    return this.end - this.start + (this.big ? this.bigFilled : 0) + this.args.reduce((n, a) => n + a.length, 0);
  }

  /** Whether a protocol error ended parsing (next() throws it again). */
  get broken(): boolean {
    return this.failed !== null;
  }

  /** Takes the next piece of the stream. The parser copies what it keeps: `chunk` may be reused after. */
  push(chunk: Uint8Array): void {
    if (this.failed || chunk.length === 0) return;
    let data = chunk;
    if (this.big && this.start === this.end) {
      // Inside a big bulk string with nothing buffered ahead of it: straight into its array.
      const take = Math.min(this.bulkLen - this.bigFilled, data.length);
      if (take > 0) {
        this.big.set(take === data.length ? data : data.subarray(0, take), this.bigFilled);
        this.bigFilled += take;
        this.bytesCopied += take;
        data = data.subarray(take);
        if (data.length === 0) return;
      }
    }
    this.append(data);
  }

  private append(data: Uint8Array): void {
    const n = data.length;
    if (this.start === this.end) {
      this.start = this.end = 0;
      if (this.buf.length > IDLE_MAX_BYTES && n <= INITIAL_BYTES) this.buf = new Uint8Array(INITIAL_BYTES);
    }
    if (this.end + n > this.buf.length) {
      const live = this.end - this.start;
      if (live + n <= this.buf.length >>> 1) {
        this.buf.copyWithin(0, this.start, this.end);
      } else {
        const grown = new Uint8Array(Math.max(this.buf.length * 2, live + n));
        grown.set(this.buf.subarray(this.start, this.end));
        this.buf = grown;
      }
      this.bytesCopied += live;
      this.start = 0;
      this.end = live;
    }
    this.buf.set(data, this.end);
    this.end += n;
    this.bytesCopied += n;
  }

  /**
   * The next complete command (its arguments, at least one), or null until more bytes come. Throws
   * a ProtocolError when the stream breaks the protocol (and from then on).
   */
  next(): Uint8Array[] | null {
    if (this.failed) throw this.failed;
    try {
      return this.step();
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      this.failed = e;
      this.buf = new Uint8Array(0);
      this.start = this.end = 0;
      this.args = [];
      this.big = null;
      throw e;
    }
  }

  /**
   * Index of the first `byte` in the current line (at or after `start`), or -1 when it has not come
   * yet; throws `tooBig` once more than PROTO_INLINE_MAX_SIZE bytes wait without it. Searches only
   * bytes it has not searched before.
   */
  private lineEnd(byte: number, tooBig: string): number {
    const from = this.start + this.searched;
    // A loop, not subarray().indexOf(): lines are short, and a view per line cost more than the search.
    const { buf, end } = this;
    let at = -1;
    for (let i = from; i < end; i++) {
      if (buf[i] === byte) {
        at = i - from;
        break;
      }
    }
    if (at < 0) {
      this.bytesSearched += this.end - from;
      this.searched = this.end - this.start;
      if (this.end - this.start > PROTO_INLINE_MAX_SIZE) throw new ProtocolError(`Protocol error: ${tooBig}`);
      return -1;
    }
    this.bytesSearched += at + 1;
    this.searched = from + at - this.start;
    return from + at;
  }

  /** Consumes the current line through `to` (exclusive). */
  private consume(to: number): void {
    this.start = to;
    this.searched = 0;
  }

  /** Adds a finished argument; the command when it was the last one. */
  private addArg(arg: Uint8Array): Uint8Array[] | null {
    this.args.push(arg);
    if (--this.argsLeft > 0) {
      this.phase = BULK_HEADER;
      return null;
    }
    const args = this.args;
    this.args = [];
    this.phase = COMMAND;
    return args;
  }

  private step(): Uint8Array[] | null {
    const { buf } = this; // parsing never grows or moves the buffer (only push does)
    for (;;) {
      switch (this.phase) {
        case COMMAND: {
          if (this.start === this.end) return null;
          if (buf[this.start] === STAR) {
            // `*<count>\r\n`: redis-server looks for the \r, then counts on the byte after it.
            const cr = this.lineEnd(CR, "too big mbulk count string");
            if (cr < 0 || cr + 2 > this.end) return null;
            const count = parseLength(buf, this.start + 1, cr);
            if (count === null || count > PROTO_MAX_MULTIBULK_LEN) throw new ProtocolError("Protocol error: invalid multibulk length");
            this.consume(cr + 2);
            if (count <= 0) continue; // `*0`, `*-1`: nothing to run
            this.argsLeft = count;
            this.phase = BULK_HEADER;
            continue;
          }
          const lf = this.lineEnd(LF, "too big inline request");
          if (lf < 0) return null;
          const stop = lf > this.start && buf[lf - 1] === CR ? lf - 1 : lf;
          const args = splitInline(buf, this.start, stop);
          this.consume(lf + 1);
          if (args === null) throw new ProtocolError("Protocol error: unbalanced quotes in request");
          if (args.length === 0) continue; // an empty line
          return args;
        }
        case BULK_HEADER: {
          const cr = this.lineEnd(CR, "too big bulk count string");
          if (cr < 0 || cr + 2 > this.end) return null;
          if (buf[this.start] !== DOLLAR) {
            throw new ProtocolError(`Protocol error: expected '$', got '${String.fromCharCode(buf[this.start]!)}'`);
          }
          const len = parseLength(buf, this.start + 1, cr);
          if (len === null || len < 0 || len > PROTO_MAX_BULK_LEN) throw new ProtocolError("Protocol error: invalid bulk length");
          this.consume(cr + 2);
          this.bulkLen = len;
          if (len >= BIG_ARG) {
            this.big = new Uint8Array(len);
            this.bigFilled = 0;
            this.phase = BIG_BODY;
          } else {
            this.phase = BODY;
          }
          continue;
        }
        case BODY: {
          // The body and the two bytes after it (redis-server skips them without looking).
          if (this.end - this.start < this.bulkLen + 2) return null;
          const arg = buf.slice(this.start, this.start + this.bulkLen);
          this.consume(this.start + this.bulkLen + 2);
          const args = this.addArg(arg);
          if (args) return args;
          continue;
        }
        case BIG_BODY: {
          const big = this.big!;
          if (this.bigFilled < this.bulkLen) {
            const take = Math.min(this.bulkLen - this.bigFilled, this.end - this.start);
            big.set(buf.subarray(this.start, this.start + take), this.bigFilled);
            this.bigFilled += take;
            this.bytesCopied += take;
            this.start += take;
            if (this.bigFilled < this.bulkLen) return null;
          }
          if (this.end - this.start < 2) return null;
          this.consume(this.start + 2);
          this.big = null;
          const args = this.addArg(big);
          if (args) return args;
          continue;
        }
      }
    }
  }
}

/** Parses a whole input at once: its commands, and the protocol error that ended it if any. */
export function parseAll(input: Uint8Array): { commands: Uint8Array[][]; error: ProtocolError | null } {
  const parser = new RespParser();
  parser.push(input);
  const commands: Uint8Array[][] = [];
  try {
    for (let c = parser.next(); c; c = parser.next()) commands.push(c);
  } catch (e) {
    if (e instanceof ProtocolError) return { commands, error: e };
    throw e;
  }
  return { commands, error: null };
}
