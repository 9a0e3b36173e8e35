// reply.ts — RESP2 replies as bytes: simple strings, errors, integers, bulk strings (binary), nil and
// array headers, gathered into one growing buffer so a batch of pipelined replies leaves as one
// write. Bulk values of BY_REFERENCE bytes or more are not copied: take() hands them on as their own
// pieces, in order (the store never changes a value in place, so the reference stays valid).
// Strings are written as latin1, one byte per character: keys and arguments decoded as latin1 come
// back byte for byte (an error quoting an argument repeats exactly what the client sent).

/** Bulk values this long or longer are passed by reference instead of copied into the batch. */
export const BY_REFERENCE = 16 * 1024;

const CRLF = "\r\n";

export class ReplyBuffer {
  private buf = Buffer.allocUnsafe(16 * 1024);
  private len = 0;
  private parts: Uint8Array[] = [];
  private partBytes = 0;

  /** Bytes gathered and not yet taken. */
  get size(): number {
    return this.len + this.partBytes;
  }

  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(grown, 0, 0, this.len);
    this.buf = grown;
  }

  private text(s: string): void {
    this.room(s.length);
    this.len += this.buf.write(s, this.len, "latin1");
  }

  private bytes(b: Uint8Array): void {
    if (b.length >= BY_REFERENCE) {
      this.cut();
      this.parts.push(b);
      this.partBytes += b.length;
      return;
    }
    this.room(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  /** Moves the gathered small replies into a piece of their own (a copy: the buffer is reused). */
  private cut(): void {
    if (this.len === 0) return;
    this.parts.push(new Uint8Array(this.buf.subarray(0, this.len))); // a copy (Buffer's slice() is a view)
    this.partBytes += this.len;
    this.len = 0;
  }

  /** `+OK`. */
  simple(s: string): void {
    this.text(`+${s}${CRLF}`);
  }

  /**
   * An error; `message` starts with its code ("ERR ...", "WRONGPASS ..."). Line breaks in it become
   * spaces, as redis-server does (a reply must stay one line).
   */
  error(message: string): void {
    this.text(`-${message.replace(/[\r\n]/g, " ")}${CRLF}`);
  }

  integer(n: number | bigint): void {
    this.text(`:${n}${CRLF}`);
  }

  /** A bulk string, or nil ($-1) for null. */
  bulk(value: Uint8Array | null): void {
    if (value === null) {
      this.text(`$-1${CRLF}`);
      return;
    }
    this.text(`$${value.length}${CRLF}`);
    this.bytes(value);
    this.text(CRLF);
  }

  /** A bulk string from a latin1 string. */
  bulkText(s: string): void {
    this.text(`$${s.length}${CRLF}${s}${CRLF}`);
  }

  /** The header of an array of `n` elements (the elements follow). */
  array(n: number): void {
    this.text(`*${n}${CRLF}`);
  }

  /** Everything gathered, in order, as pieces that are the caller's to keep; the buffer starts over. */
  take(): Uint8Array[] {
    this.cut();
    const parts = this.parts;
    this.parts = [];
    this.partBytes = 0;
    return parts;
  }
}
