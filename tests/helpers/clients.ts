/**
 * Echo clients that verify what comes back, for every test that sends traffic:
 *   - echoOnce: one message, exactly it back, then a clean close (the everyday "does it still echo").
 *   - echoStream / echoMany: a deterministic per-seed Pattern stream checked byte for byte at its
 *     exact offset as it arrives (no buffering of the whole stream), optionally half-closed.
 *   - pipelinedClient: random-size messages kept in flight, checked byte for byte and by sha256;
 *     pipelinedRun: many of them at once, every one checked.
 *   - RoundTripper: request/response round trips back to back, counted, for rate measurements.
 *   - streamer: streams until the connection ends, reading or never reading, checks the prefix.
 * Failures say which connection (seed), at what offset, what was expected and what came.
 */
import { createHash, type Hash } from "node:crypto";
import net from "node:net";
import { logUniformSize, Pattern, PATTERN_LEN, randomPool, rng } from "./prng.ts";
import { KiB } from "./scale.ts";
import { connect, endOf } from "./sockets.ts";
import { withTimeout } from "./wait.ts";

export class EchoError extends Error {
  override name = "EchoError";
}

/**
 * Sends `data` on a new connection, reads until that many bytes came back, half-closes and waits for
 * the server's close; resolves with every byte received (so an extra byte shows in the comparison),
 * as a string if `data` was one. Rejects on an error, an early close or after `timeoutMs`.
 */
export function echoOnce(port: number, data: string, host?: string, timeoutMs?: number): Promise<string>;
export function echoOnce(port: number, data: Uint8Array, host?: string, timeoutMs?: number): Promise<Buffer>;
export async function echoOnce(port: number, data: string | Uint8Array, host = "127.0.0.1", timeoutMs = 10_000): Promise<string | Buffer> {
  const payload = typeof data === "string" ? Buffer.from(data) : Buffer.from(data);
  const c = await connect(port, host, timeoutMs);
  const parts: Buffer[] = [];
  let got = 0;
  c.sock.on("data", (b: Buffer) => {
    parts.push(b);
    got += b.length;
    if (got >= payload.length) c.sock.end();
  });
  if (payload.length === 0) c.sock.end();
  else c.sock.write(payload);
  const what = () => `echo of ${payload.length} bytes (${JSON.stringify(payload.subarray(0, 40).toString())}) on ${host}:${port}: got ${got}`;
  const end = await withTimeout(c.closed, timeoutMs, what).catch((e: unknown) => {
    c.sock.destroy();
    throw e;
  });
  if (end.error) throw new EchoError(`${what()}, then socket error ${end.how}`);
  if (got < payload.length) throw new EchoError(`${what()}, then the connection ended (${end.how})`);
  const out = Buffer.concat(parts);
  return typeof data === "string" ? out.toString() : out;
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

/** Streams `bytes` of Pattern through one connection and verifies the echo byte for byte. */
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
    const state = () => `[conn seed=${seed} ${host}:${o.port} sent=${sent}/${o.bytes} received=${received} eof=${eof}]`;
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
export async function echoMany(count: number, o: Omit<EchoOptions, "seed"> & { seedBase?: number }): Promise<EchoResult[]> {
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

// ---------------------------------------------------------------------------------------------
// Pipelined random-size traffic, verified twice: byte for byte against the queue of messages in
// flight (so a failure says where), and by a running sha256 of everything sent vs received.

export interface PipelinedOptions {
  port: number;
  host?: string;
  seed: number;
  /** Stop starting new messages after this long. */
  durationMs: number;
  /** Largest message (default 256 KiB). */
  maxSize?: number;
  /** Messages in flight at once: each connection picks its own depth in 1..maxDepth (default 8). */
  maxDepth?: number;
  /** Whole-connection deadline (default durationMs + 60 s). */
  timeoutMs?: number;
}

export interface PipelinedResult {
  seed: number;
  depth: number;
  messages: number;
  sent: number;
  received: number;
  sentDigest: string;
  recvDigest: string;
}

/**
 * One connection: keeps `depth` messages of random size in flight (written back to back without
 * waiting for their echo), starting a new one each time one comes back, until durationMs; then
 * half-closes and waits for the server's EOF. Every received byte is compared with the oldest
 * message not yet fully echoed; a difference, an extra byte, an early EOF or an error rejects with
 * the connection's seed and offsets.
 */
export function pipelinedClient(o: PipelinedOptions): Promise<PipelinedResult> {
  const host = o.host ?? "127.0.0.1";
  const maxSize = o.maxSize ?? 256 * KiB;
  const random = rng(o.seed);
  const depth = 1 + Math.floor(random() * (o.maxDepth ?? 8));
  const pool = randomPool();
  const sentHash: Hash = createHash("sha256");
  const recvHash: Hash = createHash("sha256");
  const inFlight: Buffer[] = []; // messages written, not yet fully echoed; head partially by headDone
  let headDone = 0;
  let sent = 0;
  let received = 0;
  let messages = 0;
  let ended = false;
  const t0 = performance.now();
  return new Promise<PipelinedResult>((resolve, reject) => {
    const sock = net.connect({ port: o.port, host });
    let failed = false;
    const state = () =>
      `[seed ${o.seed} depth ${depth} sent ${sent} received ${received} messages ${messages} in flight ${inFlight.length}]`;
    const fail = (why: string) => {
      if (failed) return;
      failed = true;
      clearTimeout(timer);
      sock.destroy();
      reject(new EchoError(`pipelined client: ${why} ${state()}`));
    };
    const timer = setTimeout(() => fail("timed out"), o.timeoutMs ?? o.durationMs + 60_000);
    const fill = () => {
      while (!failed && !ended && inFlight.length < depth) {
        if (performance.now() - t0 >= o.durationMs) {
          if (inFlight.length === 0) {
            ended = true;
            sock.end();
          }
          return;
        }
        const size = logUniformSize(random, maxSize);
        const off = Math.floor(random() * (pool.length - size));
        const msg = pool.subarray(off, off + size);
        inFlight.push(msg);
        sentHash.update(msg);
        sent += size;
        messages++;
        sock.write(msg); // bounded by depth: no unbounded user-space queue
      }
    };
    sock.on("connect", fill);
    sock.on("data", (chunk: Buffer) => {
      if (failed) return;
      recvHash.update(chunk);
      let at = 0;
      while (at < chunk.length) {
        const head = inFlight[0];
        if (!head) return fail(`${chunk.length - at} bytes echoed that were never sent`);
        const n = Math.min(head.length - headDone, chunk.length - at);
        if (Buffer.compare(chunk.subarray(at, at + n), head.subarray(headDone, headDone + n)) !== 0) {
          let i = 0;
          while (chunk[at + i] === head[headDone + i]) i++;
          return fail(`echo differs at stream offset ${received + at + i} (message ${messages - inFlight.length}, byte ${headDone + i})`);
        }
        at += n;
        headDone += n;
        if (headDone === head.length) {
          inFlight.shift();
          headDone = 0;
        }
      }
      received += chunk.length;
      fill();
    });
    sock.on("end", () => {
      if (received !== sent || !ended) fail("server EOF before every byte came back");
    });
    sock.on("error", (e) => fail(`socket error: ${e.message}`));
    sock.on("close", () => {
      if (failed) return;
      clearTimeout(timer);
      if (received !== sent || !ended) return fail("closed before every byte came back");
      resolve({
        seed: o.seed,
        depth,
        messages,
        sent,
        received,
        sentDigest: sentHash.digest("hex"),
        recvDigest: recvHash.digest("hex"),
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Request/response round trips, counted so rates can be measured over windows.

/**
 * A connection doing request/response echoes back to back (one `size`-byte message in flight) until
 * stopped, checking each echo and counting completed round trips.
 */
/** What pipelinedRun measured: every connection's result, the bytes each way, messages, seconds. */
export interface PipelinedRun {
  results: PipelinedResult[];
  total: number;
  messages: number;
  wallS: number;
}

/**
 * `conns` pipelined clients at once (seeds 7919 × (i + 1)), each for durationMs. Rejects when any
 * connection failed (saying how many, the first failure and `serverState()`) or when what one
 * received differs from what it sent (length or sha256).
 */
export async function pipelinedRun(port: number, conns: number, durationMs: number, serverState: () => string): Promise<PipelinedRun> {
  const t0 = performance.now();
  const settled = await Promise.allSettled(
    Array.from({ length: conns }, (_, i) => pipelinedClient({ port, seed: 7919 * (i + 1), durationMs })),
  );
  const wallS = (performance.now() - t0) / 1000;
  const failures = settled.filter((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failures.length > 0) {
    throw new Error(`${failures.length}/${conns} connections failed; first: ${(failures[0]!.reason as Error).message}\nserver: ${serverState()}`);
  }
  const results = settled.map((r) => (r as PromiseFulfilledResult<PipelinedResult>).value);
  let total = 0;
  let messages = 0;
  for (const r of results) {
    if (r.received !== r.sent || r.recvDigest !== r.sentDigest) {
      throw new Error(`seed ${r.seed}: sent ${r.sent} bytes (sha256 ${r.sentDigest}), received ${r.received} (sha256 ${r.recvDigest})`);
    }
    total += r.sent;
    messages += r.messages;
  }
  return { results, total, messages, wallS };
}

export class RoundTripper {
  trips = 0;
  private sock!: net.Socket;
  private stopped = false;
  private got = 0;
  private error: Error | undefined;
  private done!: Promise<unknown>;
  private readonly msg: Buffer;

  private constructor(
    readonly id: number,
    size: number,
  ) {
    this.msg = Buffer.alloc(size);
    for (let i = 0; i < size; i++) this.msg[i] = (id * 31 + i) & 0xff;
  }

  static async open(port: number, id: number, size = 1024, host = "127.0.0.1"): Promise<RoundTripper> {
    const rt = new RoundTripper(id, size);
    const c = await connect(port, host);
    rt.sock = c.sock;
    rt.done = c.closed;
    const parts: Buffer[] = [];
    rt.sock.on("error", (e) => (rt.error ??= e));
    rt.sock.on("data", (b: Buffer) => {
      parts.push(b);
      rt.got += b.length;
      if (rt.got < rt.msg.length) return;
      const echo = Buffer.concat(parts);
      parts.length = 0;
      if (rt.got > rt.msg.length || !echo.equals(rt.msg)) {
        rt.error ??= new EchoError(`round tripper ${id}: wrong echo after ${rt.trips} trips`);
        rt.sock.destroy();
        return;
      }
      rt.got = 0;
      rt.trips++;
      if (!rt.stopped) rt.sock.write(rt.msg);
      else rt.sock.end();
    });
    rt.sock.write(rt.msg);
    return rt;
  }

  /** Stops after the round trip in flight and closes; rejects if anything went wrong. */
  async stop(): Promise<void> {
    this.stopped = true; // one round trip is always in flight (unless the socket died): its echo ends it
    await withTimeout(this.done, 10_000, `round tripper ${this.id} closes after its last echo`);
    if (this.error) throw this.error;
  }

  failure(): Error | undefined {
    return this.error;
  }
}

/**
 * A client that streams pool bytes (from a seeded offset) until the connection ends, and checks that
 * whatever comes back is a byte-exact prefix of what it sent. `reading: false` never reads (a peer
 * that does not read, for the tests of stop() under load).
 */
export function streamer(port: number, seed: number, reading: boolean) {
  const pool = randomPool();
  const start = Math.floor(rng(seed)() * (pool.length / 2));
  const span = pool.length - start;
  let sent = 0;
  let received = 0;
  let mismatch: string | undefined;
  let eof = false;
  let error: string | undefined;
  const sock = net.connect({ port, host: "127.0.0.1" });
  const done = endOf(sock);
  const connected = new Promise<void>((resolve, reject) => {
    sock.once("connect", () => resolve());
    void done.then(() => reject(new Error(`streamer ${seed}: closed before it connected (${error ?? "?"})`)));
  });
  connected.catch(() => undefined); // awaited by the test; a late rejection after connect is moot
  sock.on("error", (e: NodeJS.ErrnoException) => (error ??= e.code ?? e.message));
  sock.on("end", () => (eof = true));
  const pump = () => {
    while (!sock.destroyed && sock.writable) {
      const at = sent % span;
      const n = Math.min(16 * KiB, span - at);
      sent += n;
      if (!sock.write(pool.subarray(start + at, start + at + n))) return void sock.once("drain", pump);
    }
  };
  sock.once("connect", pump);
  if (reading) {
    sock.on("data", (b: Buffer) => {
      if (received + b.length > sent) mismatch ??= `seed ${seed}: got ${received + b.length} bytes back, sent only ${sent}`;
      for (let off = 0; off < b.length && !mismatch; ) {
        const at = (received + off) % span;
        const n = Math.min(b.length - off, span - at);
        if (Buffer.compare(b.subarray(off, off + n), pool.subarray(start + at, start + at + n)) !== 0) {
          mismatch = `seed ${seed}: echo differs within bytes ${received + off}..${received + off + n}`;
        }
        off += n;
      }
      received += b.length;
    });
  } else {
    sock.pause();
  }
  return { sock, connected, done, state: () => ({ sent, received, mismatch, eof, error }) };
}
