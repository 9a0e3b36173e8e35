/**
 * Echo clients for the tests: stream a deterministic per-connection byte pattern to an echo server
 * and verify every byte that comes back, at its exact offset, as it arrives (no buffering of the
 * whole stream). Failures say which connection, at what offset, what was expected and what came.
 */
import net from "node:net";

/** Length of the repeating pattern block: prime, so it never lines up with power-of-two buffers. */
export const PATTERN_LEN = 65_521;

/** A per-seed pseudo-random block, stored twice in a row so any window up to PATTERN_LEN is contiguous. */
export class Pattern {
  readonly block: Buffer;
  constructor(readonly seed: number) {
    const one = Buffer.allocUnsafe(PATTERN_LEN);
    // xorshift32; seed 0 would be a fixed point, so mix it first.
    let x = (Math.imul(seed + 1, 0x9e3779b1) ^ 0x5bd1e995) >>> 0 || 1;
    for (let i = 0; i < PATTERN_LEN; i++) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      one[i] = x & 0xff;
    }
    this.block = Buffer.concat([one, one]);
  }

  /** Bytes [offset, offset + n) of the infinite stream; n <= PATTERN_LEN. A view, do not modify. */
  window(offset: number, n: number): Buffer {
    if (n > PATTERN_LEN) throw new RangeError(`window of ${n} > ${PATTERN_LEN}`);
    const start = offset % PATTERN_LEN;
    return this.block.subarray(start, start + n);
  }

  /** The whole stream prefix [0, n) as one buffer (for small messages). */
  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let off = 0; off < n; off += PATTERN_LEN) {
      this.window(off, Math.min(PATTERN_LEN, n - off)).copy(out, off);
    }
    return out;
  }

  /**
   * Checks `chunk` against the stream at `offset`. Returns null when it matches, else a description
   * of the first differing byte.
   */
  verify(chunk: Uint8Array, offset: number): string | null {
    for (let done = 0; done < chunk.length; ) {
      const n = Math.min(PATTERN_LEN - ((offset + done) % PATTERN_LEN), chunk.length - done);
      const got = chunk.subarray(done, done + n);
      const want = this.window(offset + done, n);
      if (Buffer.compare(got, want) !== 0) {
        let i = 0;
        while (i < n && got[i] === want[i]) i++;
        const at = offset + done + i;
        const hex = (b: Uint8Array) => Buffer.from(b.subarray(i, i + 16)).toString("hex");
        return `byte ${at}: expected 0x${want[i]!.toString(16)} got 0x${got[i]!.toString(16)} (expected ${hex(want)}…, got ${hex(got)}…)`;
      }
      done += n;
    }
    return null;
  }
}

export interface EchoOptions {
  port: number;
  host?: string;
  /** Total bytes to stream. */
  bytes: number;
  /** Pattern seed; give every concurrent connection its own so cross-talk would show. */
  seed?: number;
  /** Bytes per write() (default 64 KiB). */
  chunkSize?: number;
  /**
   * true: shut down the write side right after the last byte is written and expect every byte back
   * followed by the server's EOF. false (default): end only after every byte came back.
   */
  halfClose?: boolean;
  /** Whole-exchange deadline (default 60 s). */
  timeoutMs?: number;
  /** Called on every received chunk with the running total (progress hooks for tests). */
  onProgress?: (received: number) => void;
}

export interface EchoResult {
  sent: number;
  received: number;
  /** The server closed its side (we saw EOF). */
  eof: boolean;
  ms: number;
}

export class EchoError extends Error {
  override name = "EchoError";
}

/** Streams `bytes` of pattern through one connection and verifies the echo byte for byte. */
export function echoStream(o: EchoOptions): Promise<EchoResult> {
  const host = o.host ?? "127.0.0.1";
  const seed = o.seed ?? 0;
  const chunkSize = Math.min(o.chunkSize ?? 65_536, PATTERN_LEN);
  const pattern = new Pattern(seed);
  const t0 = performance.now();
  return new Promise<EchoResult>((resolve, reject) => {
    let sent = 0;
    let received = 0;
    let eof = false;
    let failed = false;
    let writeDone = false;
    const sock = net.connect({ port: o.port, host });
    const state = () =>
      `[conn seed=${seed} ${host}:${o.port} sent=${sent}/${o.bytes} received=${received} eof=${eof}]`;
    const fail = (msg: string) => {
      if (failed) return;
      failed = true;
      clearTimeout(timer);
      sock.destroy();
      reject(new EchoError(`${msg} ${state()}`));
    };
    const timer = setTimeout(() => fail(`echo timed out after ${o.timeoutMs ?? 60_000} ms`), o.timeoutMs ?? 60_000);

    const pump = () => {
      while (sent < o.bytes && !failed) {
        const n = Math.min(chunkSize, o.bytes - sent, PATTERN_LEN - (sent % PATTERN_LEN));
        const chunk = pattern.window(sent, n);
        sent += n;
        if (!sock.write(chunk)) {
          sock.once("drain", pump);
          return;
        }
      }
      if (!writeDone && sent >= o.bytes) {
        writeDone = true;
        // half-close now; otherwise end once everything came back (already true for 0 bytes)
        if (o.halfClose || received === o.bytes) sock.end();
      }
    };

    sock.on("connect", pump);
    sock.on("data", (chunk: Buffer) => {
      if (failed) return;
      if (received + chunk.length > o.bytes) {
        fail(`server sent ${received + chunk.length - o.bytes} bytes more than were sent`);
        return;
      }
      const bad = pattern.verify(chunk, received);
      if (bad) {
        fail(`echo mismatch at ${bad}`);
        return;
      }
      received += chunk.length;
      o.onProgress?.(received);
      if (received === o.bytes && !o.halfClose) sock.end();
    });
    sock.on("end", () => {
      eof = true;
      if (received < o.bytes) fail(`server closed (EOF) before echoing everything`);
    });
    sock.on("error", (err) => fail(`socket error ${(err as NodeJS.ErrnoException).code ?? ""} ${err.message}`));
    sock.on("close", () => {
      if (failed) return;
      clearTimeout(timer);
      if (received !== o.bytes) {
        fail(`connection closed before echoing everything`);
        return;
      }
      if (!eof) {
        fail(`connection closed without the server's EOF`);
        return;
      }
      resolve({ sent, received, eof, ms: performance.now() - t0 });
    });
  });
}

/** Runs `count` echoStream calls at once with seeds base..base+count-1; rejects on the first failure. */
export async function echoMany(
  count: number,
  o: Omit<EchoOptions, "seed"> & { seedBase?: number },
): Promise<EchoResult[]> {
  const base = o.seedBase ?? 0;
  const all: Promise<EchoResult>[] = [];
  for (let i = 0; i < count; i++) all.push(echoStream({ ...o, seed: base + i }));
  // Let every connection finish (or fail) so none outlive the test, then report the first failure.
  const settled = await Promise.allSettled(all);
  const failures = settled.filter((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failures.length > 0) {
    const first = failures[0]!.reason as Error;
    throw new EchoError(`${failures.length}/${count} connections failed; first: ${first.message}`);
  }
  return settled.map((s) => (s as PromiseFulfilledResult<EchoResult>).value);
}

/** Sends a small message and resolves with exactly that many echoed bytes (then closes cleanly). */
export async function echoSmall(port: number, data: Buffer | string, host = "127.0.0.1"): Promise<Buffer> {
  const payload = typeof data === "string" ? Buffer.from(data) : data;
  return new Promise<Buffer>((resolve, reject) => {
    const parts: Buffer[] = [];
    let got = 0;
    const sock = net.connect({ port, host }, () => sock.write(payload));
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new EchoError(`small echo timed out: got ${got}/${payload.length} bytes from ${host}:${port}`));
    }, 10_000);
    sock.on("data", (c: Buffer) => {
      parts.push(c);
      got += c.length;
      if (got >= payload.length) sock.end();
    });
    sock.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.on("close", () => {
      clearTimeout(timer);
      resolve(Buffer.concat(parts));
    });
  });
}

/** A connected client socket with a promise for its close and a counter of bytes received. */
export interface OpenConn {
  sock: net.Socket;
  received: () => number;
  closed: Promise<{ hadError: boolean; error?: Error; eof: boolean }>;
}

/** Opens a connection and resolves once it is connected. Received data is counted and dropped. */
export function openConn(port: number, host = "127.0.0.1", timeoutMs = 10_000): Promise<OpenConn> {
  return new Promise<OpenConn>((resolve, reject) => {
    let received = 0;
    let eof = false;
    let error: Error | undefined;
    const sock = net.connect({ port, host });
    const closed = new Promise<{ hadError: boolean; error?: Error; eof: boolean }>((res) => {
      sock.on("close", (hadError) => res({ hadError, error, eof }));
    });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new EchoError(`connect to ${host}:${port} timed out`));
    }, timeoutMs);
    sock.on("data", (c: Buffer) => {
      received += c.length;
    });
    sock.on("end", () => {
      eof = true;
    });
    sock.on("error", (e) => {
      error = e;
      clearTimeout(timer);
      reject(e);
    });
    sock.on("connect", () => {
      clearTimeout(timer);
      resolve({ sock, received: () => received, closed });
    });
  });
}

/** Writes to `sock` as fast as it drains until `stop()` is called or the socket dies. */
export function floodWrites(sock: net.Socket, chunk: Buffer): { stop: () => void; written: () => number } {
  let stopped = false;
  let written = 0;
  const pump = () => {
    while (!stopped && !sock.destroyed && sock.writable) {
      written += chunk.length;
      if (!sock.write(chunk)) {
        sock.once("drain", pump);
        return;
      }
    }
  };
  sock.on("error", () => {
    stopped = true;
  });
  pump();
  return {
    stop: () => {
      stopped = true;
    },
    written: () => written,
  };
}
