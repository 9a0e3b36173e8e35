/**
 * Shared pieces of the reliability / fault-injection suite (tests/reliability/*.test.ts):
 * scale knobs (CI by default, long with BUNRING_SOAK=1, each overridable by its own env variable),
 * a seeded PRNG, verifying clients (pipelined random-size messages checked byte for byte and by
 * sha256; request/response round trips), /proc readings (CPU time, fds, RSS of any process), child
 * processes, and one place that prints the measured figures.
 *
 * Nothing here sleeps to synchronise: waits are on conditions (events, stats) with deadlines.
 */
import { spawnSync } from "node:child_process";
import { createHash, randomBytes, type Hash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import net from "node:net";
import { BACKENDS, backendAvailable, type Backend } from "../helpers/server.ts";
import { waitFor, withTimeout } from "../helpers/wait.ts";

export { BACKENDS, backendAvailable, type Backend };

/** BUNRING_SOAK=1: the long versions (minutes); default: the short CI versions. */
export const SOAK = process.env.BUNRING_SOAK === "1";

/**
 * A scale parameter: `ci` by default, `soak` with BUNRING_SOAK=1, and `BUNRING_REL_<NAME>` overrides
 * both (e.g. BUNRING_REL_INTEGRITY_CONNS=50).
 */
export function knob(name: string, ci: number, soak: number): number {
  const raw = process.env[`BUNRING_REL_${name}`];
  if (raw === undefined || raw === "") return SOAK ? soak : ci;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`BUNRING_REL_${name}=${raw} is not a non-negative number`);
  return Math.trunc(n);
}

/** Per-test timeout: generous in CI (a hang fails with a message, not a stuck runner), longer in soak. */
export function testTimeout(ciMs: number, soakMs = ciMs * 10): number {
  return SOAK ? soakMs : ciMs;
}

/** Prints one measured figure, in a form easy to grep out of a test run: `[reliability] ...`. */
export function report(scenario: string, backend: string, text: string): void {
  console.log(`[reliability] ${scenario} [${backend}${SOAK ? ", soak" : ""}] ${text}`);
}

export const MiB = 1 << 20;
export const KiB = 1 << 10;

/** xorshift32 in [0, 1): deterministic, so a failing seed's traffic can be replayed. */
export function rng(seed: number): () => number {
  let x = (Math.imul(seed + 1, 0x9e3779b1) ^ 0x5bd1e995) >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

/** Log-uniform size in [1, max]: as many 1–10 B messages as 100 KiB–256 KiB ones; both ends occur. */
export function logUniformSize(random: () => number, max: number): number {
  const u = random();
  if (u < 0.01) return 1;
  if (u > 0.99) return max;
  return Math.min(max, Math.max(1, Math.floor(Math.exp(random() * Math.log(max + 1)))));
}

/** Connects and resolves once connected (rejects on error or after timeoutMs). */
export function connect(port: number, host = "127.0.0.1", timeoutMs = 10_000): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect to ${host}:${port} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    s.once("connect", () => {
      clearTimeout(timer);
      s.removeListener("error", onError);
      resolve(s);
    });
    const onError = (e: Error) => {
      clearTimeout(timer);
      reject(e);
    };
    s.once("error", onError);
  });
}

/** Resolves when the socket has closed (immediately if it already has). */
export function closed(s: net.Socket): Promise<void> {
  if (s.destroyed && s.closed) return Promise.resolve();
  return new Promise((r) => s.once("close", () => r()));
}

// ---------------------------------------------------------------------------------------------
// Pipelined random-size traffic, verified twice: byte for byte against the queue of messages in
// flight (so a failure says where), and by a running sha256 of everything sent vs received.

/** Random content all messages are cut from (at random offsets): no per-message generation cost. */
let poolBytes: Buffer | undefined;
export function randomPool(): Buffer {
  poolBytes ??= randomBytes(8 * MiB);
  return poolBytes;
}

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
      reject(new Error(`pipelined client: ${why} ${state()}`));
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
export class RoundTripper {
  trips = 0;
  private sock!: net.Socket;
  private stopped = false;
  private got = 0;
  private error: Error | undefined;
  private done!: Promise<void>;
  private readonly msg: Buffer;

  private constructor(readonly id: number, size: number) {
    this.msg = Buffer.alloc(size);
    for (let i = 0; i < size; i++) this.msg[i] = (id * 31 + i) & 0xff;
  }

  static async open(port: number, id: number, size = 1024, host = "127.0.0.1"): Promise<RoundTripper> {
    const rt = new RoundTripper(id, size);
    rt.sock = await connect(port, host);
    rt.done = new Promise<void>((resolve) => rt.sock.once("close", () => resolve()));
    const parts: Buffer[] = [];
    rt.sock.on("error", (e) => (rt.error ??= e));
    rt.sock.on("data", (b: Buffer) => {
      parts.push(b);
      rt.got += b.length;
      if (rt.got < rt.msg.length) return;
      const echo = Buffer.concat(parts);
      parts.length = 0;
      if (rt.got > rt.msg.length || !echo.equals(rt.msg)) {
        rt.error ??= new Error(`round tripper ${id}: wrong echo after ${rt.trips} trips`);
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

// ---------------------------------------------------------------------------------------------
// /proc readings.

let clkTck: number | undefined;
/** USER_HZ (clock ticks per second of /proc/<pid>/stat times). */
export function clockTicks(): number {
  if (clkTck === undefined) {
    const r = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" });
    const n = Number(r.stdout?.trim());
    clkTck = Number.isInteger(n) && n > 0 ? n : 100;
  }
  return clkTck;
}

/** utime + stime of a process, in seconds. */
export function cpuSeconds(pid: number | "self"): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / clockTicks();
}

/** Open fds of a process. */
export function fdCount(pid: number | "self" = "self"): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

// ---------------------------------------------------------------------------------------------
// Ports and children.

/** A port nothing listens on right now (bound then released by the kernel's ephemeral choice). */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, host, () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** Resolves true if a TCP connect to host:port is refused (nothing listening), false if accepted. */
export function refused(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host });
    s.once("connect", () => {
      s.destroy();
      resolve(false);
    });
    s.once("error", (e: NodeJS.ErrnoException) => resolve(e.code === "ECONNREFUSED"));
  });
}

/** Sends `text` and resolves with the echo (exactly text.length bytes), or rejects by a deadline. */
export async function echoOnce(port: number, text: string, host = "127.0.0.1", timeoutMs = 5_000): Promise<string> {
  const s = await connect(port, host, timeoutMs);
  try {
    const want = Buffer.byteLength(text);
    const got = await withTimeout(
      new Promise<string>((resolve, reject) => {
        const parts: Buffer[] = [];
        let n = 0;
        s.on("data", (b: Buffer) => {
          parts.push(b);
          n += b.length;
          if (n >= want) resolve(Buffer.concat(parts).toString());
        });
        s.once("error", reject);
        s.once("end", () => reject(new Error(`EOF after ${n}/${want} echoed bytes`)));
        s.write(text);
      }),
      timeoutMs,
      `echo of ${JSON.stringify(text.slice(0, 40))} on port ${port}`,
    );
    return got;
  } finally {
    s.destroy();
  }
}

/** Waits until a predicate over the server's stats holds; the failure message shows the stats. */
export function statsReach<S>(stats: () => S, ok: (s: S) => boolean, what: string, timeoutMs = 15_000): Promise<true> {
  return waitFor(() => ok(stats()) || undefined, () => `${what}; stats: ${JSON.stringify(stats())}`, {
    timeoutMs,
    intervalMs: 5,
  }) as Promise<true>;
}

export { waitFor, withTimeout };
